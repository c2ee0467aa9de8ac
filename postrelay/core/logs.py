"""Process logging: one JSON object per line (or plain text), with every configured secret redacted
(`postrelay.core.redaction`).

`setup_logging(fmt, secrets)` installs one stderr handler on the root logger. Each line carries `ts`,
`level`, `logger`, `msg` and whatever the call passed in `extra=` (`event_id`, `mailpiece_id`, `source`,
`destination`, `outcome`, `status`, `duration_ms`, ...). Redaction runs on the finished line, so a secret is
removed wherever it appears: the message, an extra field, an exception text or a URL.

Hot lines (one per webhook request) go through `log_fields(logger, level, msg, fields)`: when postrelay's JSON
handler is the only one on the logger's way, the line is built straight from the fields (no `LogRecord`, no
caller lookup), serialized with orjson, redacted and written with one `write(2)` on the handler's file
descriptor, under the handler's lock: a few µs. Nothing is buffered in the process, so a crash cannot lose a
line that was logged (one system call per line is the price; it is ~1 µs). With any other handler installed
(pytest's capture, an embedding application's) it is an ordinary `logger.log(...)` call with `extra=fields`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

import orjson

from postrelay.core.config import Config
from postrelay.core.config_errors import ConfigError
from postrelay.core.redaction import Redactor, clean, secret_values, url_secrets

LOG_MIN_SECRET = 6  # shorter values are not redacted from log lines (they would mangle unrelated text)
LOG_FORMAT_ENV = "POSTRELAY_LOG_FORMAT"
LOG_LEVEL_ENV = "POSTRELAY_LOG_LEVEL"
# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_HANDLER_NAME = "postrelay"


def config_secrets(config: Config) -> list[str]:
    """Every secret value in the config: source secrets/tokens/API keys, the read-API token, the Redis
    password and each destination setting whose name looks secret (`api_key`, `token`, `auth_token`, ...)."""
    found: list[str] = []
    sources = config.sources
    for name in ("postgrid", "lob", "generic"):
        src = getattr(sources, name)
        if src is not None:
            found.extend(src.secrets)
            found.append(getattr(src, "api_key", None) or "")
    if sources.postalytics is not None:
        found.extend(sources.postalytics.all_tokens)
    found.append(config.server.api_token or "")
    found.extend(t.token for t in config.server.tokens)
    for url in (config.server.redis_url or "", config.server.queue_url or ""):
        found.extend(url_secrets(url))
    for dest in config.destinations.values():
        found.extend(secret_values(dest.settings, headers=False))
    return clean(found, LOG_MIN_SECRET)


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call passed with `extra=`."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


_JSON_KEYS = _STANDARD | {"ts", "level", "logger", "msg", "exc"}
# The fallback encoder (orjson refuses integers past 64 bits and unpaired surrogates); one for every line.
_ENCODE = json.JSONEncoder(default=str, ensure_ascii=False).encode
# orjson's indented output puts every structural space where `json.dumps` puts ", " and ": ", and its only
# raw newlines are structural (a newline inside a string is escaped): dropping each newline with the indent
# after it gives json.dumps's one-line layout (tests and log pipelines grep for `"msg": "request"`).
_ORJSON_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2
_INDENTS = (b"\n      ", b"\n    ", b"\n  ", b"\n")  # nesting up to 3 levels below the line object
_TOO_DEEP = b"\n        "


def dumps_line(line: dict[str, Any]) -> str:
    """One log object as JSON text laid out like `json.dumps(line, ensure_ascii=False, default=str)`, rendered
    with orjson (the standard encoder for what orjson refuses and for deeper nesting)."""
    try:
        raw = orjson.dumps(line, default=str, option=_ORJSON_OPTS)
    except (TypeError, orjson.JSONEncodeError):  # integers past 64 bits, unpaired surrogates, non-str keys
        return _ENCODE(line)
    if _TOO_DEEP in raw:
        return _ENCODE(line)
    raw = raw.replace(b",\n", b", \n")
    for indent in _INDENTS:
        raw = raw.replace(indent, b"")
    return raw.decode()


class _Timestamps:
    """`2024-05-06T15:00:00.123Z` for an epoch time; the part up to the second is computed once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...extras, "exc"}` on one line."""

    def __init__(self) -> None:
        super().__init__()
        self.timestamp = _Timestamps()
        self._heads: dict[tuple[int, str, str], str] = {}

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object, no newlines inside."""
        line: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _JSON_KEYS})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return dumps_line(line)

    def format_fields(self, levelno: int, name: str, msg: str, fields: dict[str, Any], created: float) -> str:
        """The line `format` makes for a record of `msg` with `extra=fields` (and no exception)."""
        if not fields or not _JSON_KEYS.isdisjoint(fields):
            line: dict[str, Any] = {"ts": self.timestamp(created), "level": _level_name(levelno), "logger": name,
                                    "msg": msg}
            line.update((k, v) for k, v in fields.items() if k not in _JSON_KEYS)
            return dumps_line(line)
        head = self._heads.get((levelno, name, msg))
        if head is None:
            head = _ENCODE({"level": _level_name(levelno), "logger": name, "msg": msg})[1:-1]
            if len(self._heads) < 256:  # (level, logger, message) of the hot lines: a handful
                self._heads[(levelno, name, msg)] = head
        # '{"ts": "…", "level": …, "msg": "…", ' + the fields' object without its opening brace
        return f'{{"ts": "{self.timestamp(created)}", {head}, {dumps_line(fields)[1:]}'


_LEVEL_NAMES: dict[int, str] = {}


def _level_name(levelno: int) -> str:
    name = _LEVEL_NAMES.get(levelno)
    if name is None:
        name = _LEVEL_NAMES[levelno] = logging.getLevelName(levelno).lower()
    return name


class TextFormatter(logging.Formatter):
    """`ts level logger: msg key=value ...` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The classic line plus the extras as key=value."""
        text = super().format(record)
        fields = extras(record)
        if fields:
            head, sep, tail = text.partition("\n")
            kv = " ".join(f"{k}={json.dumps(v, default=str, ensure_ascii=False) if not isinstance(v, str) else v}"
                          for k, v in fields.items())
            text = f"{head} {kv}{sep}{tail}"
        return text


class RedactingFormatter(logging.Formatter):
    """Formats with `inner`, then redacts the finished text."""

    def __init__(self, inner: logging.Formatter, redactor: Redactor) -> None:
        super().__init__()
        self.inner = inner
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        """The redacted line."""
        return self.redactor(self.inner.format(record))


class LineHandler(logging.StreamHandler[TextIO]):
    """The stream handler `setup_logging` installs; `emit_fields` is the direct path of `log_fields`."""

    def __init__(self, stream: TextIO, inner: logging.Formatter, redactor: Redactor) -> None:
        super().__init__(stream)
        self.setFormatter(RedactingFormatter(inner, redactor))
        self.json = inner if isinstance(inner, JsonFormatter) else None
        self.redactor = redactor
        self._fd: int | None = None
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._errors = getattr(stream, "errors", None) or "strict"
        try:
            if stream in (sys.stderr, sys.stdout) or stream is sys.__stderr__ or stream is sys.__stdout__:
                self._fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None

    def emit_fields(self, levelno: int, name: str, msg: str, fields: dict[str, Any]) -> None:
        """Write the line a record of `msg` with `extra=fields` would give, without making the record."""
        assert self.json is not None
        try:
            text = self.json.format_fields(levelno, name, msg, fields, time.time())
            if self.redactor.active:
                text = self.redactor(text)
            data = text + self.terminator
            with self.lock:  # type: ignore[union-attr]
                if self._fd is not None:
                    self.stream.flush()  # whatever others wrote through the same stream goes first
                    raw = data.encode(self._encoding, self._errors)
                    while raw:
                        raw = raw[os.write(self._fd, raw):]
                else:
                    self.stream.write(data)
                    self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(logging.makeLogRecord({"name": name, "levelno": levelno, "msg": msg}))


def log_fields(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> None:
    """`logger.log(level, msg, extra=fields)`, through the direct path when postrelay's JSON handler is the
    only handler the record would reach (see the module docstring)."""
    if logger.disabled or not logger.isEnabledFor(level):
        return
    handler = _direct_handler(logger, level)
    if handler is None:
        logger.log(level, msg, extra=fields, stacklevel=2)
    else:
        handler.emit_fields(level, logger.name, msg, fields)


def _direct_handler(logger: logging.Logger, level: int) -> LineHandler | None:
    """postrelay's JSON handler if it is the only handler (and there are no filters) on the logger's way."""
    found: LineHandler | None = None
    current: Any = logger
    while current is not None:
        if current.filters:
            return None
        for h in current.handlers:
            if found is not None or not isinstance(h, LineHandler) or h.json is None or h.filters:
                return None
            found = h
        if not current.propagate:
            break
        current = current.parent
    if found is None or level < found.level:
        return None
    return found


def resolve_format(cli_value: str | None, config_value: str | None) -> str:
    """`--log-format`, else $POSTRELAY_LOG_FORMAT, else `[server] log_format`, else json."""
    env = os.environ.get(LOG_FORMAT_ENV)
    value = cli_value or env or config_value or "json"
    if value not in {"json", "text"}:
        if env and not cli_value:  # --log-format and [server] log_format are checked where they are parsed
            raise ConfigError(f"${LOG_FORMAT_ENV}: expected 'json' or 'text', not {value!r}")
        raise ValueError(f"log format must be json or text, not {value!r}")
    return value


def env_level(default: str = "INFO") -> int:
    """`$POSTRELAY_LOG_LEVEL` (any case: `debug` too) as a logging level, else `default`; ConfigError names the
    variable (logging's own `Unknown level: 'debug'` was a traceback from every command)."""
    raw = os.environ.get(LOG_LEVEL_ENV, "").strip() or default
    level = int(raw) if raw.isdigit() else logging.getLevelName(raw.upper())
    if not isinstance(level, int):
        raise ConfigError(f"${LOG_LEVEL_ENV}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL, not {raw!r}")
    return level


def setup_logging(fmt: str = "json", secrets: Iterable[str] = (), level: str | int | None = None,
                  stream: TextIO | None = None) -> logging.Handler:
    """Route every logger to one redacting stderr handler (replacing a previous call's); returns it."""
    root = logging.getLogger()
    for h in list(root.handlers):
        console = isinstance(h, logging.StreamHandler) and h.stream in (sys.stderr, sys.stdout)
        if h.get_name() == _HANDLER_NAME or console:  # ours from an earlier call, or basicConfig's
            root.removeHandler(h)
    inner: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler = LineHandler(stream or sys.stderr, inner, Redactor(secrets, min_len=LOG_MIN_SECRET))
    handler.set_name(_HANDLER_NAME)
    root.addHandler(handler)
    root.setLevel(level or env_level())
    for noisy in ("httpx", "httpcore"):  # one line per outbound request, URL included: too much at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def setup_from_config(config: Config, cli_value: str | None = None) -> str:
    """`setup_logging` with the format resolved and the config's secrets redacted; returns the format."""
    fmt = resolve_format(cli_value, config.server.log_format)
    setup_logging(fmt, config_secrets(config))
    return fmt
