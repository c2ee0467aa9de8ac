"""`postrelay followups list [--mailpiece ID]` and `postrelay followups cancel ID`."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from postrelay.cli import COMMANDS
from postrelay.config import load_runtime_config


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["list", "cancel"])
    p.add_argument("id", nargs="?", help="follow-up id to cancel (<rule>|<source>|<mailpiece>)")
    p.add_argument("--mailpiece", metavar="ID", help="only this mailpiece's follow-ups")
    p.add_argument("--json", action="store_true")


def _run(args: argparse.Namespace) -> int:
    from postrelay.stores import followups
    from workers.runtime import from_config

    r = from_config(load_runtime_config(args.config)).redis
    if args.action == "cancel":
        if not args.id:
            print("followups cancel needs the follow-up id (see `postrelay followups list`)")
            return 2
        if followups.cancel(r, args.id):
            print(f"cancelled {args.id}")
            return 0
        print(f"no pending follow-up {args.id!r}")
        return 1
    rows = followups.pending(r, args.mailpiece)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no pending follow-ups")
    now = datetime.now(UTC)
    for row in rows:
        due = datetime.fromisoformat(row["due"])
        left = (due - now).total_seconds()
        when = f"in {left / 3600:.1f} h" if left >= 0 else f"overdue {-left / 3600:.1f} h"
        flag = " (estimated)" if row["estimated"] else ""
        print(f"{row['due']}  {when:<16} {row['id']}  -> {row['do']}{flag}")
    return 0


COMMANDS.append(("followups", "pending follow-up actions: list, cancel", _configure, _run))
