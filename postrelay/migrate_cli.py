"""`postrelay migrate`: move every mailpiece to the compact layout (`postrelay.stores.migrate`), with a progress bar."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from postrelay.cli import COMMANDS
from postrelay.config import ConfigError, load_runtime_config


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


def run(config_path: str | None, progress: bool = True, as_json: bool = False) -> int:
    """Migrate the pieces of the configured mailpiece store; 0 when none is left in the first layout."""
    from postrelay.redis_url import sync_client
    from postrelay.stores.migrate import migrate

    config = load_runtime_config(config_path)
    if not config.server.redis_url:
        raise ConfigError("server.redis_url: required for migrate (the mailpiece store to migrate)")
    pieces = sync_client(config.server.redis_url, max(5.0, config.server.redis_timeout))
    try:
        counts = migrate(pieces, Bar() if progress else None)
    finally:
        pieces.close()
    if as_json:
        print(json.dumps(counts))
    else:
        print(f"migrate: {counts['migrated']} mailpiece(s) moved to the compact layout, {counts['left']} left "
              f"in the first layout{' (run it again)' if counts['left'] else ''}")
    return 0 if not counts["left"] else 1


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the final counts as JSON")


def _run(args: argparse.Namespace) -> int:
    return run(args.config, progress=not args.no_progress, as_json=args.json)


COMMANDS.append(("migrate", "move stored mailpieces to the compact layout (resumable, safe while running)",
                 _configure, _run))
