"""`postrelay mailings list [--status S] [--trigger T] [--limit N] [--json]` and `postrelay mailings show ID`.

The same store functions as `GET /v1/mailings` (`postrelay.stores.mailings`); `table`/`detail` are the text views.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from postrelay.cli import COMMANDS
from postrelay.config import ConfigError, load_runtime_config
from postrelay.mailing import STATUSES
from postrelay.stores import mailings as store


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
    """Every field of one mailing, the request last."""
    keys = ("mailing_id", "status", "provider", "provider_type", "kind", "piece_id", "stage", "reason", "http_status",
            "attempts", "next_attempt_at", "last_error", "dry_run", "origin", "trigger", "created_at", "updated_at")
    lines = [f"{k:<16}{view.get(k)}" for k in keys if view.get(k) not in (None, "")]
    lines.append("request         " + json.dumps(view.get("request"), indent=2).replace("\n", "\n" + " " * 16))
    if view.get("rendered"):
        lines.append("rendered        " + json.dumps(view["rendered"], indent=2).replace("\n", "\n" + " " * 16))
    return "\n".join(lines)


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("id", nargs="?", help="mailing id (show)")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--trigger", metavar="NAME")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")


def _run(args: argparse.Namespace) -> int:
    from postrelay.redis_url import sync_client

    config = load_runtime_config(args.config)
    if not config.server.queue_redis_url:
        raise ConfigError("server.redis_url: required here (or set POSTRELAY_REDIS_URL to the running Redis)")
    client = sync_client(config.server.queue_redis_url, 5.0)
    if args.action == "show":
        if not args.id:
            print("mailings show needs the mailing id (see `postrelay mailings list`)")
            return 2
        view = store.get(client, args.id)
        if view is None:
            print(f"no mailing {args.id!r}")
            return 1
        print(json.dumps(view, indent=2) if args.json else detail(view))
        return 0
    rows = store.listing(client, args.status, args.trigger, max(1, args.limit))
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


COMMANDS.append(("mailings", "mailings (POST /v1/mailings, triggers, follow-ups): list, show", _configure, _run))
