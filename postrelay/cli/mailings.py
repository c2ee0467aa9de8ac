"""`postrelay mailings list [--status S] [--provider P] [--trigger T] [--limit N] [--json]` and
`postrelay mailings show ID [--json]`.

The same store functions as `GET /v1/mailings` (`postrelay.core.stores.mailings`).
"""

from __future__ import annotations

import json
from typing import Any

import click

from postrelay.cli.common import FAILED, OK, config_option, json_option, operator_config
from postrelay.core.mailing import STATUSES


def table(rows: list[dict[str, Any]]) -> str:
    """One line per mailing: created time, id, status, provider/kind, piece id or reason, origin."""
    if not rows:
        return "no mailings"
    lines = []
    for r in rows:
        outcome = r["piece_id"] or r["reason"] or r["last_error"] or ""
        lines.append(f"{r['created_at']}  {r['mailing_id']}  {r['status']:<8} {r['provider']}/{r['kind']:<8} "
                     f"{outcome[:60]:<60}  {r['origin']}")
    return "\n".join(lines)


def detail(view: dict[str, Any]) -> str:
    """Every field of one mailing, the request (and a dry run's rendered provider request) last."""
    keys = ("mailing_id", "status", "provider", "provider_type", "kind", "piece_id", "stage", "reason", "http_status",
            "attempts", "next_attempt_at", "last_error", "dry_run", "origin", "trigger", "created_at", "updated_at")
    lines = [f"{k:<16}{view.get(k)}" for k in keys if view.get(k) not in (None, "")]
    if view.get("link"):
        lines.append(f"{'link':<16}{view['link']['url']}  (token {view['link']['token']})")
    for name in ("request", "rendered"):
        if view.get(name):
            lines.append(f"{name:<16}" + json.dumps(view[name], indent=2).replace("\n", "\n" + " " * 16))
    return "\n".join(lines)


def _client(config_path: str | None):
    from postrelay.core.redis_url import sync_client

    config = operator_config(config_path)
    return sync_client(config.server.queue_redis_url or "", 5.0)


@click.group("mailings", short_help="mailings (POST /v1/mailings, triggers, follow-ups): list, show")
def mailings() -> None:
    """Mailings and their outcomes: list, show."""


@mailings.command("list")
@config_option
@click.option("--status", type=click.Choice(STATUSES), default=None, help="only mailings with this status")
@click.option("--provider", metavar="NAME", default=None, help="only mailings through this destination")
@click.option("--trigger", metavar="NAME", default=None, help="only this trigger's mailings")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@json_option
def mailings_list(config: str | None, status: str | None, provider: str | None, trigger: str | None, limit: int,
                  as_json: bool) -> int:
    """The newest mailings first."""
    from postrelay.core.stores import mailings as store

    rows = store.listing(_client(config), status, trigger, limit, provider=provider)
    click.echo(json.dumps(rows, indent=2) if as_json else table(rows))
    return OK


@mailings.command("show")
@click.argument("mailing_id", metavar="ID")
@config_option
@json_option
def mailings_show(mailing_id: str, config: str | None, as_json: bool) -> int:
    """One mailing: status, provider piece id, reason, attempts, the request."""
    from postrelay.core.stores import mailings as store

    view = store.get(_client(config), mailing_id)
    if view is None:
        click.echo(f"no mailing {mailing_id!r}")
        return FAILED
    click.echo(json.dumps(view, indent=2) if as_json else detail(view))
    return OK
