"""Process logging: one JSON object per line (or plain text), with every configured secret redacted.

`setup_logging(fmt, secrets)` installs one stderr handler on the root logger. Each line carries `ts`,
`level`, `logger`, `msg` and whatever the call passed in `extra=` (`event_id`, `mailpiece_id`, `source`,
`destination`, `outcome`, `status`, `duration_ms`, ...). Redaction runs on the finished line, so a secret is
removed wherever it appears: the message, an extra field, an exception text or a URL.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from postrelay.config import Config

REDACTED = "[REDACTED]"
LOG_FORMAT_ENV = "POSTRELAY_LOG_FORMAT"
LOG_LEVEL_ENV = "POSTRELAY_LOG_LEVEL"
# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_SECRET_KEY = re.compile(r"(secret|token|key|password|passwd|auth|credential|sid)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"^[a-z+]+://(?:[^:@/]*):([^@/]+)@", re.IGNORECASE)
_MIN_SECRET = 6
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
    for url in (config.server.redis_url or "", config.server.queue_url or ""):
        m = _URL_PASSWORD.match(url)
        if m:
            found.append(m.group(1))
    for dest in config.destinations.values():
        found.extend(_secret_values(dest.settings))
    return _clean(found)


def _secret_values(value: Any, key: str = "") -> list[str]:
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _secret_values(v, str(k))]
    if isinstance(value, list):
        return [s for v in value for s in _secret_values(v, key)]
    if isinstance(value, str) and _SECRET_KEY.search(key):
        return [value]
    return []


def _clean(values: Iterable[str]) -> list[str]:
    out: set[str] = set()
    for v in values:
        if v and len(v) >= _MIN_SECRET:
            out.add(v)
            if v.startswith("whsec_") and len(v) > len("whsec_") + _MIN_SECRET:
                out.add(v[len("whsec_"):])
    return sorted(out, key=len, reverse=True)  # longest first: a secret containing another is removed whole


class Redactor:
    """Replaces each secret (as written, and as it appears inside a JSON string) with `[REDACTED]`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        variants: set[str] = set()
        for s in _clean(secrets):
            variants.add(s)
            variants.add(json.dumps(s)[1:-1])
            variants.add(json.dumps(s, ensure_ascii=False)[1:-1])
        ordered = sorted((v for v in variants if v), key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        """`text` with every secret replaced."""
        return self._pattern.sub(REDACTED, text) if self._pattern else text


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call passed with `extra=`."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


_JSON_KEYS = _STANDARD | {"ts", "level", "logger", "msg", "exc"}
# One encoder for every line (json.dumps with options builds a new one per call); it runs once per request.
_ENCODE = json.JSONEncoder(default=str, ensure_ascii=False).encode


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...extras, "exc"}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object, no newlines inside."""
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _JSON_KEYS})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return _ENCODE(line)


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


def resolve_format(cli_value: str | None, config_value: str | None) -> str:
    """`--log-format`, else $POSTRELAY_LOG_FORMAT, else `[server] log_format`, else json."""
    value = cli_value or os.environ.get(LOG_FORMAT_ENV) or config_value or "json"
    if value not in {"json", "text"}:
        raise ValueError(f"log format must be json or text, not {value!r}")
    return value


def setup_logging(fmt: str = "json", secrets: Iterable[str] = (), level: str | int | None = None,
                  stream: TextIO | None = None) -> logging.Handler:
    """Route every logger to one redacting stderr handler (replacing a previous call's); returns it."""
    root = logging.getLogger()
    for h in list(root.handlers):
        console = isinstance(h, logging.StreamHandler) and h.stream in (sys.stderr, sys.stdout)
        if h.get_name() == _HANDLER_NAME or console:  # ours from an earlier call, or basicConfig's
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    inner: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler.setFormatter(RedactingFormatter(inner, Redactor(secrets)))
    root.addHandler(handler)
    root.setLevel(level or os.environ.get(LOG_LEVEL_ENV, "INFO"))
    for noisy in ("httpx", "httpcore"):  # one line per outbound request, URL included: too much at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def setup_from_config(config: Config, cli_value: str | None = None) -> str:
    """`setup_logging` with the format resolved and the config's secrets redacted; returns the format."""
    fmt = resolve_format(cli_value, config.server.log_format)
    setup_logging(fmt, config_secrets(config))
    return fmt


def redact_path(path: str) -> str:
    """A request path safe to log: the Postalytics token segment is replaced."""
    prefix = "/webhooks/postalytics/"
    if path.startswith(prefix) and len(path) > len(prefix):
        return prefix + REDACTED
    return path
