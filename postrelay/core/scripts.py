"""The one way to run postrelay's Lua scripts: `postrelay/core/lua/<name>.lua`, read once, called by name.

Each file starts with a header naming every slot it uses (`-- KEYS[1] = …`, `-- ARGV[1] = …`, `-- returns …`);
a line `--! include <file>.lua` pastes a shared fragment (e.g. `pop_head.lua`) in its place.

    from postrelay.core.scripts import lua
    lua("delivery_advance")(r, keys=[seq], args=[event_id])          # a client or a pipeline
    lua("ingest_enqueue").register(async_redis)                        # redis-py's (async) Script object

A call is EVALSHA with a fallback to loading the script (a restarted Redis has forgotten it); in a pipeline,
redis-py loads missing scripts before executing it. (`postrelay/core/timeline.py` still holds its own script,
`_APPLY`, inline: other work edits it concurrently; it moves here next.)
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.commands.core import Script

_INCLUDE = re.compile(r"^--! include (\S+\.lua)\s*$", re.MULTILINE)
_SLOT = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")


def _read(filename: str) -> str:
    return resources.files("postrelay.core.lua").joinpath(filename).read_text(encoding="utf-8")


class Lua:
    """One script: its source (includes resolved), its SHA1 and the slots its header declares."""

    def __init__(self, name: str) -> None:
        self.name = name
        text = _read(f"{name}.lua")
        self.source = _INCLUDE.sub(lambda m: _read(m.group(1)), text)
        self._script = Script(None, self.source.encode())  # type: ignore[arg-type]  # always called with a client
        self.sha = self._script.sha

    def __call__(self, client: Any, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run on `client` (a Redis client or pipeline; with a pipeline the result comes from `execute()`)."""
        return self._script(keys=list(keys), args=list(args), client=client)

    def register(self, client: Any) -> Any:
        """redis-py's Script for `client` (needed for asyncio clients and cluster pipelines)."""
        return client.register_script(self.source)

    def header(self) -> dict[str, set[int]]:
        """KEYS/ARGV slot numbers named in the header comment (for the tests that check every used slot is named)."""
        lines = []
        for line in self.source.splitlines():
            if not line.startswith("--"):
                break
            lines.append(line)
        return _slots("\n".join(lines))

    def used(self) -> dict[str, set[int]]:
        """KEYS/ARGV slot numbers the code uses (ARGV[a + 1] style offsets are not counted)."""
        body = "\n".join(line for line in self.source.splitlines() if not line.lstrip().startswith("--"))
        return _slots(body)


def _slots(text: str) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {"KEYS": set(), "ARGV": set()}
    for kind, n in _SLOT.findall(text):
        out[kind].add(int(n))
    return out


@functools.cache
def lua(name: str) -> Lua:
    """The script `postrelay/core/lua/<name>.lua`, read and hashed once per process."""
    return Lua(name)


def names() -> list[str]:
    """Every script (fragments, which have no header of their own, are the files starting with `_`)."""
    return sorted(p.name[:-4] for p in resources.files("postrelay.core.lua").iterdir()
                  if p.name.endswith(".lua") and not p.name.startswith("_"))
