"""`postrelay links mint --csv FILE`: a link per row, written back with the rows; bad rows refused up front."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import redis

from postrelay.cli import main
from postrelay.core import keys
from postrelay.core.stores import links as store


def _config(tmp_path: Path, redis_url: str, links: bool = True) -> str:
    path = tmp_path / "postrelay.toml"
    text = f'[server]\nredis_url = "{redis_url}"\n'
    if links:
        text += '[links]\nbase_url = "https://go.example.test"\nallowed_hosts = ["shop.example.com"]\n'
    path.write_text(text)
    return str(path)


def _csv(tmp_path: Path, rows: list[dict[str, str]]) -> str:
    path = tmp_path / "list.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def test_mints_every_row_and_writes_them_back(tmp_path, redis_url, capsys):
    rows = [{"name": f"Contact {i}", "ref": f"crm-{i}", "utm_source": "postcard", "target_url": ""}
            for i in range(2500)]
    rows[3]["target_url"] = "https://shop.example.com/special"
    out = tmp_path / "out.csv"
    code = main(["links", "mint", "--config", _config(tmp_path, redis_url), "--csv", _csv(tmp_path, rows),
                 "--out", str(out), "--target-url", "https://shop.example.com/spring", "--campaign-id", "spring"])
    assert code == 0
    assert "2500 link(s) minted" in capsys.readouterr().err
    written = list(csv.DictReader(out.open()))
    assert len(written) == 2500 and list(written[0]) == ["name", "ref", "utm_source", "target_url", "token", "url",
                                                          "qr_svg_url", "qr_png_url"]
    assert written[0]["url"] == f"https://go.example.test/t/{written[0]['token']}"
    assert len({w["token"] for w in written}) == 2500
    r = redis.Redis.from_url(redis_url)
    special = store.read(r, written[3]["token"])
    assert special.target == "https://shop.example.com/special?utm_source=postcard"
    first = store.read(r, written[0]["token"])
    assert first.target == "https://shop.example.com/spring?utm_source=postcard"
    assert first.campaign_id == "spring" and first.ref == "crm-0"
    r.close()


def test_a_bad_row_names_its_line_and_nothing_is_minted(tmp_path, redis_url, capsys):
    rows = [{"target_url": "https://shop.example.com/a", "ref": "1"},
            {"target_url": "https://evil.example/", "ref": "2"}]
    code = main(["links", "mint", "--config", _config(tmp_path, redis_url), "--csv", _csv(tmp_path, rows)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 3: target_url" in err[0] and "Traceback" not in err[0]
    r = redis.Redis.from_url(redis_url)
    assert list(r.scan_iter(match=keys.link("*"))) == []
    r.close()


def test_stdout_missing_file_and_unconfigured_links(tmp_path, redis_url, capsys, monkeypatch):
    config = _config(tmp_path, redis_url)
    monkeypatch.setattr("sys.stdin", io.StringIO("target_url\nhttps://shop.example.com/x\n"))
    assert main(["links", "mint", "--config", config, "--csv", "-", "--no-progress"]) == 0
    printed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(printed) == 1 and printed[0]["token"]
    assert main(["links", "mint", "--config", config, "--csv", str(tmp_path / "nope.csv")]) == 1
    assert "cannot read" in capsys.readouterr().err
    bare = tmp_path / "bare"
    bare.mkdir()
    code = main(["links", "mint", "--config", _config(bare, redis_url, links=False), "--csv", "-"])
    assert code == 2 and "[links] base_url" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_mints_nothing(tmp_path, redis_url, capsys):
    rows = [{"target_url": "https://shop.example.com/a", "ref": "1"}]
    out = tmp_path / "no-such-dir" / "out.csv"
    code = main(["links", "mint", "--config", _config(tmp_path, redis_url), "--csv", _csv(tmp_path, rows),
                 "--out", str(out), "--no-progress"])
    assert code == 1
    assert capsys.readouterr().err.splitlines() == [f"links mint: cannot write {out}: No such file or directory"]
    r = redis.Redis.from_url(redis_url)
    assert list(r.scan_iter(match=keys.link("*"))) == []  # no link minted whose token nobody got
    r.close()


def test_a_csv_that_is_not_utf8_is_one_line(tmp_path, redis_url, capsys):
    path = tmp_path / "latin1.csv"
    path.write_bytes("target_url,name\nhttps://shop.example.com/a,Zoë\n".encode("latin-1"))
    code = main(["links", "mint", "--config", _config(tmp_path, redis_url), "--csv", str(path), "--no-progress"])
    assert code == 1
    assert capsys.readouterr().err.splitlines() == [
        f'links mint: {path}: not UTF-8 text (invalid continuation byte); save it as UTF-8 ("CSV UTF-8")']
