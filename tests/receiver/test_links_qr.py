"""QR images of a link decode (with a real decoder, zxing-cpp) to the link's URL, at every size, margin and
error-correction level; bad parameters are a clear 400."""

from __future__ import annotations

import io

import cairosvg
import pytest
import zxingcpp
from PIL import Image

from tests.receiver.harness import Service, assert_error
from tests.receiver.links_support import links_service, mint

__all__ = ["links_service"]


def decode_png(data: bytes) -> list[str]:
    image = Image.open(io.BytesIO(data)).convert("L")
    return [r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode]


@pytest.mark.parametrize("params", ["", "?size=3&margin=2&error=L", "?size=12&margin=8&error=h", "?error=Q"])
def test_png_decodes_to_the_link_url(links_service: Service, params: str) -> None:
    made = mint(links_service)
    resp = links_service.http.get(f"/v1/links/{made['token']}/qr.png{params}")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert decode_png(resp.content) == [made["url"]]


@pytest.mark.parametrize("params", ["", "?size=6&margin=4&error=M", "?size=2&margin=1&error=H"])
def test_svg_decodes_to_the_link_url(links_service: Service, params: str) -> None:
    made = mint(links_service)
    resp = links_service.http.get(f"/v1/links/{made['token']}/qr.svg{params}")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("image/svg+xml")
    assert resp.text.lstrip().startswith("<svg")
    png = cairosvg.svg2png(bytestring=resp.content, output_width=400, background_color="white")
    assert decode_png(png) == [made["url"]]


def test_size_margin_and_error_level_change_the_image(links_service: Service) -> None:
    token = mint(links_service)["token"]

    def dims(params: str) -> tuple[int, int]:
        image = Image.open(io.BytesIO(links_service.http.get(f"/v1/links/{token}/qr.png{params}").content))
        return image.size

    small, big = dims("?size=2&margin=0&error=L"), dims("?size=4&margin=0&error=L")
    assert big[0] == 2 * small[0]
    assert dims("?size=2&margin=4&error=L")[0] == small[0] + 16
    assert dims("?size=2&margin=0&error=H")[0] > small[0]  # more correction: a larger version


@pytest.mark.parametrize("params", ["?size=0", "?size=41", "?size=big", "?margin=-1", "?margin=17", "?error=X"])
def test_bad_parameters(links_service: Service, params: str) -> None:
    token = mint(links_service)["token"]
    assert_error(links_service.http.get(f"/v1/links/{token}/qr.png{params}"), 400, "invalid_parameter")


def test_unknown_link_and_kind(links_service: Service) -> None:
    assert_error(links_service.http.get("/v1/links/AAAAAAAAAAAAAAAAAAAAAA/qr.png"), 404, "link_not_found")
    token = mint(links_service)["token"]
    assert_error(links_service.http.get(f"/v1/links/{token}/qr.gif"), 404, "not_found")
