"""Config errors as an operator reads them: one line each, `[FILE: ]KEY.PATH: what is wrong; what is expected`.

A validation error becomes one line per problem (pydantic's multi-line dump never reaches the operator),
unknown keys and tables list the known ones (with a "did you mean" for a near miss), and no line ever carries
the value of a secret-bearing key: every such value found in the document (`postrelay.core.redaction.
secret_values`) is replaced by `[REDACTED]`.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from postrelay.core.redaction import redact

_PATH_PREFIX = re.compile(r"^[A-Za-z_][\w.\[\]-]*: ")


class ConfigError(Exception):
    """The config file is missing, unparseable or invalid: one line per problem, each naming its key."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.lines = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.lines))


class KeyProblem(ValueError):
    """A validator's error about `subkey` below the validated field (e.g. one `where` key)."""

    def __init__(self, subkey: str, message: str) -> None:
        self.subkey = subkey
        super().__init__(message)


def key_path(loc: Iterable[str | int]) -> str:
    """`("routes", 0, "to")` → `routes[0].to`."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """` (did you mean 'delivery'?)` for a near miss, else ``."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unwrap(annotation: Any) -> Any:
    """The model (or container) inside `X | None`."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return inner[0] if len(inner) == 1 else annotation
    return annotation


def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model that holds the last element of `loc` (to list the keys it knows)."""
    current: Any = model
    for part in loc[:-1]:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (dict, list):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unknown_key(model: type[BaseModel], loc: Sequence[str | int], top: bool) -> str:
    holder = _model_at(model, loc)
    name = str(loc[-1])
    what = "unknown table" if top and len(loc) == 1 else "unknown key"
    if holder is None:
        return f"{what}{did_you_mean(name, [])}"
    known = [f for f in holder.model_fields if not f.startswith("_")]
    return f"{what}{did_you_mean(name, known)}; known: {', '.join(known)}"


def _message(model: type[BaseModel], err: Any, top: bool) -> tuple[list[str | int], str]:
    loc: list[str | int] = list(err["loc"])
    kind = err["type"]
    exc = (err.get("ctx") or {}).get("error")
    if isinstance(exc, KeyProblem):
        return [*loc, exc.subkey], str(exc)
    if kind == "extra_forbidden":
        return loc, _unknown_key(model, loc, top)
    if kind == "missing":
        return loc, "required"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return loc, msg.replace("Input should be ", "expected ", 1)


def format_validation(err: ValidationError, model: type[BaseModel], prefix: Sequence[str | int] = ()) -> list[str]:
    """One `key.path: message` line per problem of a pydantic error raised validating `model`."""
    lines: list[str] = []
    for e in err.errors(include_url=False, include_input=False):
        loc, msg = _message(model, e, top=not prefix)
        for part in msg.split("\n"):
            path = key_path([*prefix, *loc])
            line = part if _PATH_PREFIX.match(part) or not path else f"{path}: {part}"  # a message may name its key
            if line not in lines:
                lines.append(line)
    return lines


def located(lines: Iterable[str], file: str | None, secrets: Iterable[str] = ()) -> list[str]:
    """Each line prefixed with the file (when known) and redacted."""
    secrets = list(secrets)
    return [redact(f"{file}: {line}" if file else line, secrets) for line in lines]
