"""The one way to run postrelay's Lua scripts: `postrelay/core/lua/<name>.lua`, read once, called by name.

Each file starts with a header naming every slot it uses (`-- KEYS[1] = …`, `-- ARGV[1] = …`, `-- returns …`);
a line `--! include <file>.lua` pastes a shared fragment (e.g. `_pop_head.lua`) in its place.

    from postrelay.core.scripts import lua
    lua("delivery_advance")(r, keys=[seq], args=[event_id])          # a client or a pipeline
    lua("ingest_enqueue").register(async_redis)                        # redis-py's (async) Script object
    lua("timeline_apply", **APPLY_CONSTANTS).many(r, calls)            # a batch in one (cluster) pipeline

Constants computed in Python (rank tables, type codes, the chunk size, key prefixes) are put in at load time:
a script (or a fragment it includes) writes a placeholder `{{NAME}}` where a Lua value goes, its header says
what each stands for (`-- const NAME = …`), and the caller passes `NAME=value`. A value becomes the Lua literal
of it (`literal`: str, int, float, bool, lists and dicts of those, as tables), so the script text, and its
SHA1, is fixed by the values: one load per name and values, no extra argument per call. A placeholder left
without a value, or a value no placeholder takes, is an error when the script is loaded. The module that owns
a script keeps its constants next to the code that calls it (e.g. `postrelay.core.timeline.APPLY_CONSTANTS`).

A call is EVALSHA with a fallback to loading the script (a restarted Redis has forgotten it); in a pipeline,
redis-py loads missing scripts before executing it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

_INCLUDE = re.compile(r"^--! include (\S+\.lua)\s*$", re.MULTILINE)
_SLOT = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
_PLACEHOLDER = re.compile(r"\{\{([A-Z][A-Z0-9_]*)\}\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYWORDS = frozenset(("and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if", "in",
                       "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while"))

Call = tuple[Sequence[Any], Sequence[Any]]  # (keys, args) of one script call


def _read(filename: str) -> str:
    return resources.files("postrelay.core.lua").joinpath(filename).read_text(encoding="utf-8")


def literal(value: Any) -> str:
    """`value` as a Lua literal: strings quoted, dicts as `{k=v}` tables (`['k']=v` where k is no name), lists
    and tuples as sequences, in their order."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return repr(value)
    if isinstance(value, str):
        return "'" + "".join(c if c.isprintable() and c not in "\\'" else "".join(f"\\{b:03d}" for b in c.encode())
                             for c in value) + "'"
    if isinstance(value, Mapping):
        items = (f"{k}={literal(v)}" if isinstance(k, str) and _NAME.match(k) and k not in _KEYWORDS
                 else f"[{literal(k)}]={literal(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list | tuple):
        return "{" + ", ".join(literal(v) for v in value) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


class Lua:
    """One script: its source (includes resolved, constants put in), its SHA1 and the slots its header declares."""

    def __init__(self, name: str, constants: Mapping[str, str] | None = None) -> None:
        self.name = name
        text = _INCLUDE.sub(lambda m: _read(m.group(1)), _read(f"{name}.lua"))
        given = dict(constants or {})
        wanted = set(_PLACEHOLDER.findall(text))
        if wanted != set(given):
            raise ValueError(f"Lua script {name}: no value for {sorted(wanted - set(given))}, "
                             f"no placeholder for {sorted(set(given) - wanted)}")
        self.source = _PLACEHOLDER.sub(lambda m: given[m.group(1)], text)
        self._script = Script(None, self.source.encode())  # type: ignore[arg-type]  # always called with a client
        self.sha = self._script.sha

    def __call__(self, client: Any, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        """Run on `client` (a Redis client or pipeline; with a pipeline the result comes from `execute()`)."""
        return self._script(keys=list(keys), args=list(args), client=client)

    def register(self, client: Any) -> Any:
        """redis-py's Script for `client` (needed for asyncio clients and cluster pipelines)."""
        return client.register_script(self.source)

    def many(self, client: Any, calls: Sequence[Call]) -> list[Any]:
        """Run every call, in order, in one pipeline of `client` (sync); their answers in that order.

        On a Redis Cluster, one cluster pipeline of EVALSHA calls (each on its own keys' slot): a node without
        the script (new node, failover, restart) answers NOSCRIPT without running anything, so the script is
        loaded on every primary and just those calls run again, in their order.
        """
        if not isinstance(client, RedisCluster):
            pipe = client.pipeline(transaction=False)
            for k, a in calls:
                self(pipe, keys=k, args=a)
            return list(pipe.execute())
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(3):
            pipe = client.pipeline()
            for i in todo:
                k, a = calls[i]
                pipe.execute_command("EVALSHA", self.sha, len(k), *k, *a)
            answers = pipe.execute(raise_on_error=False)
            missing = []
            for i, answer in zip(todo, answers, strict=True):
                if isinstance(answer, NoScriptError) and attempt < 2:
                    missing.append(i)
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    results[i] = answer
            if not missing:
                return results
            client.script_load(self.source)  # on every primary
            todo = missing
        raise AssertionError("unreachable")  # pragma: no cover

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


def lua(name: str, **constants: Any) -> Lua:
    """The script `postrelay/core/lua/<name>.lua` with `constants` put in, read and hashed once per process."""
    return _load(name, tuple(sorted((k, literal(v)) for k, v in constants.items())))


@functools.cache
def _load(name: str, constants: tuple[tuple[str, str], ...]) -> Lua:
    return Lua(name, dict(constants))


def names() -> list[str]:
    """Every script (fragments, which have no header of their own, are the files starting with `_`)."""
    return sorted(p.name[:-4] for p in resources.files("postrelay.core.lua").iterdir()
                  if p.name.endswith(".lua") and not p.name.startswith("_"))
