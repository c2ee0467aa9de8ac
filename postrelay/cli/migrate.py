"""`postrelay migrate [--no-progress] [--json]`: move every mailpiece to the compact layout
(`postrelay.core.stores.migrate`), with a progress bar; finds its config and Redis as the operator commands do."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

import click

from postrelay.cli.common import FAILED, OK, config_option, json_option, operator_config


class Bar:
    """`migrate [########----------------] 1200/4000 pieces`: redrawn in place on a terminal, a line every few
    seconds otherwise (logs)."""

    def __init__(self, stream: TextIO | None = None, width: int = 24, interval: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width, self.interval, self._last = width, interval, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        final = done >= total
        if not self.tty and not final and now - self._last < self.interval:
            return
        self._last = now
        filled = self.width if not total else int(self.width * min(done, total) / total)
        line = f"migrate [{'#' * filled}{'-' * (self.width - filled)}] {done}/{total} pieces"
        self.stream.write(("\r" + line + ("\n" if final else "")) if self.tty else line + "\n")
        self.stream.flush()


@click.command("migrate", short_help="move stored mailpieces to the compact layout (resumable, safe while running)")
@config_option
@click.option("--no-progress", "no_progress", is_flag=True, help="no progress bar on stderr")
@json_option
def migrate(config: str | None, no_progress: bool, as_json: bool) -> int:
    """Move mailpieces stored before the compact layout to it; run it again to resume. Exit 0 when none is left."""
    from postrelay.core.redis_url import sync_client
    from postrelay.core.stores.migrate import migrate as run_migrate

    cfg = operator_config(config)
    pieces = sync_client(cfg.server.redis_url, max(5.0, cfg.server.redis_timeout))  # type: ignore[arg-type]
    try:
        counts = run_migrate(pieces, None if no_progress else Bar())
    finally:
        pieces.close()
    if as_json:
        click.echo(json.dumps(counts))
    else:
        click.echo(f"migrate: {counts['migrated']} mailpiece(s) moved to the compact layout, {counts['left']} left "
                   f"in the first layout{' (run it again)' if counts['left'] else ''}")
    return OK if not counts["left"] else FAILED
