"""`postrelay followups list [--mailpiece ID] [--json]` and `postrelay followups cancel ID`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from postrelay.cli.common import CONFIG_ERROR, FAILED, OK, config_option, json_option, runtime

mailpiece_option = click.option("--mailpiece", metavar="ID", default=None, help="only this mailpiece's follow-ups")


@click.group("followups", short_help="pending follow-up actions: list, cancel")
@config_option
@mailpiece_option
@json_option
@click.pass_context
def followups(ctx: click.Context, config: str | None, mailpiece: str | None, as_json: bool) -> None:
    """Pending follow-up actions: list, cancel."""
    ctx.obj = {"config": config, "mailpiece": mailpiece, "json": as_json}


def _shared(ctx: click.Context, **given: Any) -> dict[str, Any]:
    """The group's options (`followups --json list`) merged with the subcommand's (`followups list --json`)."""
    shared = dict(ctx.obj or {})
    return {k: v or shared.get(k) for k, v in given.items()}


@followups.command("list")
@config_option
@mailpiece_option
@json_option
@click.pass_context
def followups_list(ctx: click.Context, config: str | None, mailpiece: str | None, as_json: bool) -> int:
    """Pending follow-ups and when each is due."""
    from postrelay.core.stores import followups as store

    opts = _shared(ctx, config=config, mailpiece=mailpiece, json=as_json)
    rows = store.pending(runtime(opts["config"]).redis, opts["mailpiece"])
    if opts["json"]:
        click.echo(json.dumps(rows, indent=2))
        return OK
    if not rows:
        click.echo("no pending follow-ups")
    now = datetime.now(UTC)
    for row in rows:
        left = (datetime.fromisoformat(row["due"]) - now).total_seconds()
        when = f"in {left / 3600:.1f} h" if left >= 0 else f"overdue {-left / 3600:.1f} h"
        flag = " (estimated)" if row["estimated"] else ""
        click.echo(f"{row['due']}  {when:<16} {row['id']}  -> {row['do']}{flag}")
    return OK


@followups.command("cancel")
@click.argument("fid", metavar="ID", required=False)
@config_option
@click.pass_context
def followups_cancel(ctx: click.Context, fid: str | None, config: str | None) -> int:
    """Cancel one pending follow-up (ID = <rule>|<source>|<mailpiece>, as `followups list` shows)."""
    from postrelay.core.stores import followups as store

    if not fid:
        click.echo("followups cancel needs the follow-up id (see `postrelay followups list`)")
        return CONFIG_ERROR
    if store.cancel(runtime(_shared(ctx, config=config)["config"]).redis, fid, by="cli"):
        click.echo(f"cancelled {fid}")
        return OK
    click.echo(f"no pending follow-up {fid!r}")
    return FAILED
