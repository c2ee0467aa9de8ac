"""`postrelay links mint --csv FILE [--out FILE]`: tracking links for a mailing list before it goes to print.

Every row is checked first (one line naming the row and the field, nothing minted); then the links are minted
in chunks of 1,000 with a progress bar on stderr, and the rows are written back with `token`, `url`,
`qr_svg_url` and `qr_png_url` appended (to `--out`, else stdout).
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

import click

from postrelay.cli.common import FAILED, OK, config_option, operator_config
from postrelay.core.config import ConfigError
from postrelay.core.linkconfig import LinksConfig
from postrelay.core.stores import links as store

OUTPUT_COLUMNS = ("token", "url", "qr_svg_url", "qr_png_url")
CHUNK = 1000


class CsvError(ValueError):
    """A row (or the file) cannot be minted; the message names the line and the field."""


def row_spec(row: dict[str, str], line: int, target_url: str | None = None,
             campaign_id: str | None = None) -> store.LinkSpec:
    """The link one CSV row asks for (empty cells are absent); CsvError names the line and the field."""
    def cell(name: str) -> str | None:
        value = (row.get(name) or "").strip()
        return value or None

    spec: dict[str, Any] = {"target_url": cell("target_url") or target_url, "campaign_id": cell("campaign_id")
                            or campaign_id, "ref": cell("ref"), "expires_at": cell("expires_at"),
                            "goal_url": cell("goal_url")}
    if spec["target_url"] is None:
        raise CsvError(f"line {line}: target_url: empty (add the column or pass --target-url)")
    if cell("mailpiece_id") or cell("mailpiece_source"):
        spec["mailpiece"] = {"source": cell("mailpiece_source") or "", "id": cell("mailpiece_id") or ""}
    utm = {key: cell(f"utm_{key}") for key in ("source", "medium", "campaign", "term", "content")}
    spec["utm"] = {k: v for k, v in utm.items() if v}
    try:
        return store.parse_spec({k: v for k, v in spec.items() if v is not None})
    except store.LinkError as exc:
        raise CsvError(f"line {line}: {exc}") from None


def read_rows(stream: IO[str]) -> tuple[list[str], list[dict[str, str]]]:
    """(column names, rows) of a CSV with a header row."""
    reader = csv.DictReader(stream)
    if not reader.fieldnames:
        raise CsvError("line 1: the file is empty (a header row is needed)")
    return list(reader.fieldnames), list(reader)


def check_rows(config: LinksConfig, rows: Sequence[dict[str, str]], now: float, *, target_url: str | None = None,
               campaign_id: str | None = None) -> list[store.LinkSpec]:
    """Every row's link, each checked as minting would (targets, expiry, …); CsvError names the first bad line."""
    specs = [row_spec(row, i + 2, target_url, campaign_id) for i, row in enumerate(rows)]
    for i, spec in enumerate(specs):
        try:
            store.prepare(config, spec, now)
        except store.LinkError as exc:
            raise CsvError(f"line {i + 2}: {exc}" if exc.field else str(exc)) from None
    return specs


def mint_specs(redis: Any, config: LinksConfig, specs: Sequence[store.LinkSpec], now: float,
               progress: Callable[[int], object] | None = None) -> list[dict[str, str]]:
    """Mint checked links in chunks of 1,000; the minted URLs, in order."""
    out: list[dict[str, str]] = []
    for start in range(0, len(specs), CHUNK):
        chunk = specs[start:start + CHUNK]
        out.extend(store.mint_many(redis, config, chunk, now, where=""))
        if progress is not None:
            progress(len(chunk))
    return out


def write_rows(stream: IO[str], columns: Iterable[str], rows: Sequence[dict[str, str]],
               minted: Sequence[dict[str, str]]) -> None:
    """The input rows with the link columns appended."""
    names = [c for c in columns if c not in OUTPUT_COLUMNS] + list(OUTPUT_COLUMNS)
    writer = csv.DictWriter(stream, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row, link in zip(rows, minted, strict=True):
        writer.writerow({**row, **link})


@click.group("links", short_help="tracking links: mint from a CSV")
def links() -> None:
    """Tracking links (docs/links.md)."""


@links.command("mint")
@config_option
@click.option("--csv", "csv_path", required=True, metavar="FILE",
              help="rows to mint links for, with a header row ('-': stdin): target_url, campaign_id, ref, "
                   "mailpiece_source, mailpiece_id, expires_at, goal_url, utm_*; other columns are kept")
@click.option("--out", metavar="FILE", default=None, help="write the rows with their links here (default: stdout)")
@click.option("--target-url", metavar="URL", default=None, help="target for rows without a target_url")
@click.option("--campaign-id", metavar="ID", default=None, help="campaign for rows without a campaign_id")
@click.option("--no-progress", is_flag=True, help="no progress bar on stderr")
def links_mint(config: str | None, csv_path: str, out: str | None, target_url: str | None, campaign_id: str | None,
               no_progress: bool) -> int:
    """Mint a link per CSV row: every row is checked first, then minted with a progress bar."""
    from postrelay.core.redis_url import sync_client

    cfg = operator_config(config)
    if not cfg.links.enabled:
        raise ConfigError("links: set [links] base_url and allowed_hosts to mint links")
    try:
        with click.open_file(csv_path, encoding="utf-8-sig") as stream:
            columns, rows = read_rows(stream)
    except OSError as exc:
        click.echo(f"links mint: cannot read {csv_path}: {exc.strerror or type(exc).__name__}", err=True)
        return FAILED
    except UnicodeDecodeError as exc:
        # no byte offset: the stream is decoded in chunks, so exc.start counts from the chunk, not the file
        click.echo(f"links mint: {csv_path}: not UTF-8 text ({exc.reason}); save it as UTF-8 (\"CSV UTF-8\")",
                   err=True)
        return FAILED
    except (CsvError, csv.Error) as exc:
        click.echo(f"links mint: {csv_path}: {exc}", err=True)
        return FAILED
    now = time.time()
    try:
        specs = check_rows(cfg.links, rows, now, target_url=target_url, campaign_id=campaign_id)
    except CsvError as exc:
        click.echo(f"links mint: {csv_path}: {exc}", err=True)
        return FAILED
    try:  # opened before minting: links minted for an output that cannot be written would be lost
        output = click.open_file(out or "-", "w", encoding="utf-8", lazy=False)
    except OSError as exc:
        click.echo(f"links mint: cannot write {out}: {exc.strerror or type(exc).__name__}", err=True)
        return FAILED
    with output as stream:
        redis = sync_client(cfg.server.queue_redis_url or "", cfg.server.redis_timeout)
        try:
            with click.progressbar(length=len(specs), label="minting links", file=sys.stderr,
                                   hidden=no_progress or not specs) as bar:
                minted = mint_specs(redis, cfg.links, specs, now, progress=bar.update)
        finally:
            redis.close()
        write_rows(stream, columns, rows, minted)
    click.echo(f"links mint: {len(minted)} link(s) minted", err=True)
    return OK
