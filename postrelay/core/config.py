"""The one TOML config file: loading, `${ENV_VAR}` interpolation and validation.

Every problem is reported at once, one line each naming the file and the key (`c.toml: sources.lob.secrets:
...`, see `postrelay.core.config_errors`), so a bad deploy fails at start, not at 3 a.m. Unknown tables, keys and
`where` fields are errors too.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from postrelay.core.config_checks import check_redis_urls, interpolate, reference_problems
from postrelay.core.config_errors import ConfigError, KeyProblem, format_validation, located
from postrelay.core.config_mailings import MailingsConfig, TriggerConfig, link_table, trigger_problems
from postrelay.core.config_sources import (
    GenericSource,
    LobSource,
    PostalyticsSource,
    PostGridSource,
    SignedSource,
    SourcesConfig,
    Strict,
    duration,
)
from postrelay.core.durations import DELAY_FORMS, TooLong, parse_delay
from postrelay.core.events import ALL_TYPES, filter_field_error
from postrelay.core.linkconfig import LinksConfig
from postrelay.core.redaction import secret_values
from postrelay.core.ui_config import UiConfig

__all__ = ["Config", "ConfigError", "GenericSource", "LobSource", "PostGridSource", "PostalyticsSource",
           "SignedSource", "SourcesConfig", "check_redis_urls", "interpolate",
           "load_config", "load_runtime_config", "parse_config"]

CONFIG_ENV = "POSTRELAY_CONFIG"
KNOWN_SOURCES = ("postgrid", "lob", "postalytics", "generic")
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
_Strict, _duration = Strict, duration  # the names config tables here have always used


class NamedToken(Strict):
    """`[[server.tokens]]`: a named API token with a role: `read` (look) or `operate` (also replay, pause, cancel,
    mint links, send mail). `[server] api_token` is an `operate` token named `api_token`."""

    name: str = Field(min_length=1, max_length=64)
    token: str = Field(min_length=16)
    role: Literal["read", "operate"] = "read"


class ServerConfig(Strict):
    """`[server]`: where to listen, which Redis, the read-API token and ingest limits."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    redis_url: str | None = None
    # Single-shard Redis for the ingest stream, RQ, deliveries, follow-ups, DLQ, stats and heartbeats; default
    # redis_url. Required (and not a cluster) when redis_url is a Redis Cluster, which then holds only mailpieces.
    queue_url: str | None = None
    api_token: str | None = None
    tokens: list[NamedToken] = Field(default_factory=list)
    data_dir: str = ".postrelay"
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # 431 above: the request line plus headers (bytes), and the number of header fields; checked before auth.
    max_header_bytes: int = Field(default=DEFAULT_MAX_HEADER_BYTES, ge=4096, le=1024 * 1024)
    max_headers: int = Field(default=100, ge=16, le=10_000)
    body_timeout: float = 10.0
    dedupe_window: float = 8 * 86400
    timeline_retention: float = 400 * 86400
    redis_timeout: float = Field(default=2.0, gt=0)  # 0 would time every command out: a fake outage
    retry_after: int = Field(default=30, ge=0)
    appendfsync: Literal["everysec", "always", "no"] = "everysec"
    # /readyz, /metrics and `postrelay status`: a worker is alive while its heartbeat is younger than this.
    worker_stale_after: float = 60.0
    # /readyz when no worker ever registered a heartbeat: ready (False) or 503 (True).
    require_worker: bool = False
    # serve / worker / run log format (`--log-format` and $POSTRELAY_LOG_FORMAT win).
    log_format: Literal["json", "text"] = "json"

    _dur = field_validator("body_timeout", "dedupe_window", "timeline_retention", "redis_timeout",
                           "worker_stale_after", mode="before")(duration)

    @property
    def queue_redis_url(self) -> str | None:
        """The queue Redis: `queue_url`, else `redis_url`."""
        return self.queue_url or self.redis_url

    @property
    def split_stores(self) -> bool:
        """True when mailpieces (`redis_url`) live on another Redis than the queue (`queue_url`)."""
        return bool(self.queue_url) and self.queue_url != self.redis_url

    @model_validator(mode="after")
    def _redis_pair(self) -> ServerConfig:
        check_redis_urls(self.queue_url, self.redis_url)
        return self

    @model_validator(mode="after")
    def _distinct_tokens(self) -> ServerConfig:
        """One role per secret and one secret per name: the first match would win silently (a read token equal
        to api_token took away its operate role) and the logs could not tell two same-named tokens apart."""
        seen: dict[str, str] = {}
        names: dict[str, str] = {}
        for i, t in enumerate(self.tokens):
            if t.token in seen or t.token == self.api_token:
                raise ValueError(f"server.tokens[{i}].token: the same token as "
                                 f"{seen.get(t.token, 'server.api_token')}; each token needs its own secret")
            if t.name in names:
                raise ValueError(f"server.tokens[{i}].name: {t.name!r} is also {names[t.name]}'s name")
            seen[t.token], names[t.name] = f"server.tokens[{i}]", f"server.tokens[{i}]"
        return self

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if not v.strip() or any(c.isspace() or not c.isprintable() for c in v):
            # "" would listen on every interface; a NUL was 'unexpected TypeError' at bind
            raise ValueError("expected an address or host name such as 127.0.0.1 or 0.0.0.0 (not empty, no spaces)")
        return v

    @field_validator("api_token")
    @classmethod
    def _token_length(cls, v: str | None) -> str | None:
        if v is not None and len(v) < 16:
            raise ValueError("api_token must be at least 16 characters")
        return v


class DeliveryConfig(Strict):
    """`[delivery]`: retries, timeouts, leases, circuit breaker and idempotency-marker retention."""

    max_attempts: int = Field(default=30, ge=1)
    max_age: float = 24 * 3600
    base_delay: float = 2.0
    max_delay: float = 3600.0
    timeout: float = Field(default=15.0, gt=0)  # per HTTP request; 15 s is what Standard Webhooks asks senders to wait
    lease: float = Field(default=60.0, gt=0)
    concurrency: int = Field(default=32, ge=1, le=512)
    per_destination_concurrency: int = Field(default=8, ge=1, le=512)
    circuit_threshold: int = Field(default=5, ge=1)
    circuit_cooldown: float = 30.0
    circuit_max_cooldown: float = 600.0
    done_retention: float = 30 * 86400

    _dur = field_validator("max_age", "base_delay", "max_delay", "timeout", "lease", "circuit_cooldown",
                           "circuit_max_cooldown", "done_retention", mode="before")(duration)



class DestinationConfig(BaseModel):
    """`[destinations.NAME]`: `type` selects the adapter, which validates the other keys itself."""

    model_config = ConfigDict(extra="allow")

    type: str
    rate_limit: str | None = None
    # batching (adapters with a batch API: hubspot, salesforce): deliveries per batch call, and how long the
    # first delivery of a batch may wait for others (`docs/deliveries.md`, "Batches")
    batch_size: int = Field(default=1, ge=1, le=1000)
    batch_linger: float = Field(default=1.0, ge=0, le=60)

    _linger = field_validator("batch_linger", mode="before")(duration)

    @property
    def settings(self) -> dict[str, Any]:
        """Adapter-specific keys."""
        return dict(self.model_extra or {})


def _check_where(where: dict[str, Any]) -> dict[str, Any]:
    """Every `where` key must be a field a filter can read (`postrelay.core.events.FILTER_FIELDS`): a typo such as
    `contry` would otherwise never match, silently."""
    for path in where:
        error = filter_field_error(path)
        if error:
            raise ValueError(error)
    return where


class RouteConfig(Strict):
    """`[[routes]]`: which events go to which destinations."""

    events: list[str] = Field(default_factory=lambda: ["*"])
    where: dict[str, Any] = Field(default_factory=dict)
    to: list[str] = Field(min_length=1)

    @field_validator("events")
    @classmethod
    def _known_events(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e != "*" and e not in ALL_TYPES]
        if bad:
            raise ValueError(f"unknown event type(s) {bad}; known: {sorted(ALL_TYPES)}")
        return v

    _where_fields = field_validator("where")(_check_where)


class FollowupConfig(Strict):
    """`[[followups]]`: a delivery-timed action."""

    name: str
    after: str
    delay: str = "0"
    calendar: Literal["US", "CA"] | None = None
    unless: list[str] = Field(default_factory=list)
    where: dict[str, Any] = Field(default_factory=dict)
    do: str
    # a tracking link on the piece, when `do` is a postgrid or lob destination (templates: the event's fields)
    link: dict[str, Any] = Field(default_factory=dict)

    _link = field_validator("link", mode="before")(lambda v: link_table(v))

    @field_validator("after")
    @classmethod
    def _after_known(cls, v: str) -> str:
        if v not in ALL_TYPES:
            raise ValueError(f"unknown event type {v!r}")
        return v

    @field_validator("unless")
    @classmethod
    def _unless_known(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e not in ALL_TYPES]
        if bad:
            raise ValueError(f"unknown event type(s) {bad}")
        return v

    _where_fields = field_validator("where")(_check_where)

    @field_validator("delay", mode="before")
    @classmethod
    def _delay_ok(cls, v: Any) -> str:
        try:
            parse_delay(v)
        except TooLong:
            raise
        except ValueError:
            raise ValueError(f"cannot parse delay {v!r}; expected {DELAY_FORMS}") from None
        return str(v)


class EstimatesConfig(Strict):
    """`[followup_estimates]`: timing delivery-based follow-ups for pieces that never get scans.

    A piece is scan-less when its country is not in `scan_countries` or its source is in
    `scanless_sources`; its `in_transit` … `delivered` triggers are then estimated as `mailed` + transit.
    `transit` keys are `COUNTRY/mailing_class`, `COUNTRY` or `*` (most specific wins).
    """

    scan_countries: list[str] = Field(default_factory=lambda: ["US"])
    scanless_sources: list[str] = Field(default_factory=list)
    transit: dict[str, str] = Field(default_factory=lambda: {"CA": "4 business days", "US": "3 business days",
                                                             "*": "6 business days"})

    @field_validator("transit")
    @classmethod
    def _delays(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            try:
                parse_delay(value)
            except TooLong as exc:
                raise KeyProblem(key, str(exc)) from None
            except ValueError:
                raise KeyProblem(key, f"cannot parse transit time {value!r}; expected {DELAY_FORMS}") from None
        return v


class Config(BaseModel):
    """The whole config file."""

    model_config = ConfigDict(extra="forbid")

    server: ServerConfig = Field(default_factory=ServerConfig)
    sources: SourcesConfig = Field(default_factory=SourcesConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    destinations: dict[str, DestinationConfig] = Field(default_factory=dict)
    routes: list[RouteConfig] = Field(default_factory=list)
    followups: list[FollowupConfig] = Field(default_factory=list)
    followup_estimates: EstimatesConfig = Field(default_factory=EstimatesConfig)
    mailings: MailingsConfig = Field(default_factory=MailingsConfig)
    triggers: list[TriggerConfig] = Field(default_factory=list)
    ui: UiConfig = Field(default_factory=UiConfig)
    links: LinksConfig = Field(default_factory=LinksConfig)

    @model_validator(mode="after")
    def _references(self) -> Config:
        problems = reference_problems(self.model_dump(include={"destinations", "routes", "followups"}))
        problems += trigger_problems(self.triggers, self.destinations, self.followups, self.links.enabled)
        if problems:
            raise ValueError("\n".join(problems))
        return self


def check_document(data: dict[str, Any], more: Iterable[Callable[[dict[str, Any]], list[str]]] = ()
                   ) -> tuple[Config | None, dict[str, Any], list[str]]:
    """Validate a parsed TOML document: (the config or None, the interpolated document, every problem as
    `key.path: message`, unredacted). `more` are further checks of the interpolated document (the CLI's
    adapter settings). A key whose `${VAR}` is not set reports only that."""
    env_problems: list[str] = []
    doc = interpolate(data, problems=env_problems)
    unset = {line.partition(":")[0] for line in env_problems}
    found = reference_problems(doc)
    try:
        config: Config | None = Config.model_validate(doc)
    except ValidationError as err:
        config = None
        found = format_validation(err, Config) + found
    for check in more:
        found += check(doc)
    problems = list(env_problems)
    for line in found:
        key = line.partition(":")[0]
        related = (u for u in unset if key == u or key.startswith((u + ".", u + "[")) or u.startswith((key + ".", key + "[")))
        if line not in problems and next(related, None) is None:
            problems.append(line)
    return config, doc, problems


def parse_config(data: dict[str, Any], file: str | None = None) -> Config:
    """Validate an already-parsed TOML document; ConfigError carries every problem, one line each."""
    config, doc, problems = check_document(data)
    if problems or config is None:
        raise ConfigError(located(problems, file, secret_values(doc)))
    return config


def read_document(path: str | os.PathLike[str] | None = None) -> tuple[str, dict[str, Any]]:
    """(the file name, the parsed TOML) of `path`, else `$POSTRELAY_CONFIG`; ConfigError names the file."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no config file: pass --config FILE or set {CONFIG_ENV}")
    p = Path(path)
    try:
        # utf-8-sig: a byte-order mark (Windows editors write one) is not a TOML error
        return str(p), tomllib.loads(p.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{p}: invalid TOML: {err}") from None
    except RecursionError:  # tomllib recurses per nesting level of arrays and inline tables
        raise ConfigError(f"{p}: invalid TOML: arrays or inline tables nested too deeply") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:  # a directory, no permission, ...
        raise ConfigError(f"cannot read config file {p}: {err.strerror or type(err).__name__}") from None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate the config from `path`, else `$POSTRELAY_CONFIG`; raises ConfigError."""
    name, data = read_document(path)
    return parse_config(data, name)


REDIS_URL_ENV = "POSTRELAY_REDIS_URL"
QUEUE_URL_ENV = "POSTRELAY_QUEUE_URL"


def load_runtime_config(path: str | os.PathLike[str] | None = None) -> Config:
    """`load_config`, then `apply_env`."""
    return apply_env(load_config(path))


def apply_env(config: Config) -> Config:
    """`POSTRELAY_REDIS_URL` (set by `postrelay run` for its embedded Redis) and `POSTRELAY_QUEUE_URL` win over
    `[server] redis_url` and `queue_url`; the pair is checked again."""
    if os.environ.get(REDIS_URL_ENV):
        config.server.redis_url = os.environ[REDIS_URL_ENV]
    if os.environ.get(QUEUE_URL_ENV):
        config.server.queue_url = os.environ[QUEUE_URL_ENV]
    try:
        check_redis_urls(config.server.queue_url, config.server.redis_url)
    except ValueError as exc:
        raise ConfigError(f"{exc} (with ${REDIS_URL_ENV} / ${QUEUE_URL_ENV} from the environment)") from None
    return config
