"""What every command shares: exit codes, the `--config` option, and finding the config and Redis.

Operator commands (`status`, `dlq`, `destinations`, `followups`, `backfill`) find their config in `--config`,
else `$POSTRELAY_CONFIG`, else the one a running `postrelay run` recorded under `./.postrelay/`; and their Redis
in `$POSTRELAY_REDIS_URL`, else `[server] redis_url`, else the embedded Redis recorded under `[server]
data_dir` (`.postrelay/embedded.json`). `TARGET` names what was tried, for the one-line "cannot reach" error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from postrelay.core.config import CONFIG_ENV, REDIS_URL_ENV, Config, ConfigError, load_runtime_config

if TYPE_CHECKING:
    from postrelay.workers.runtime import Runtime

# Exit codes (README "Commands"): public contracts.
OK, FAILED, CONFIG_ERROR, REDIS_UNREACHABLE, PORT_IN_USE, INTERRUPTED = 0, 1, 2, 3, 4, 130
DEFAULT_DATA_DIR = ".postrelay"


class Unreachable(Exception):
    """No Redis to reach, or it did not answer: the message names what was tried."""


class Target:
    """The Redis an operator command is about to use, and where its address came from."""

    url: str | None = None
    origin: str = ""

    @classmethod
    def describe(cls) -> str:
        """`redis://127.0.0.1:6379/0 (from [server] redis_url in c.toml)`, password masked."""
        from postrelay.core.redaction import mask_url

        if not cls.url:
            return "Redis"
        return f"Redis at {mask_url(cls.url)} ({cls.origin})"


def config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--config FILE`."""
    return click.option("--config", "config", metavar="FILE", default=None,
                        help=f"TOML config (default: ${CONFIG_ENV})")(f)


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--json`."""
    return click.option("--json", "as_json", is_flag=True, help="machine-readable output")(f)


def aim(config: Config, path: str | None) -> bool:
    """Note (in `Target`) which Redis `config` points at and why; False when it names none."""
    name = path or os.environ.get(CONFIG_ENV) or "the config"
    if os.environ.get(REDIS_URL_ENV):
        Target.url, Target.origin = config.server.queue_redis_url, f"from ${REDIS_URL_ENV}"
    elif config.server.redis_url:
        Target.url, Target.origin = config.server.queue_redis_url, f"from [server] redis_url in {name}"
    else:
        return False
    return True


def operator_config(path: str | None) -> Config:
    """The config for an operator command, with its Redis resolved (see the module docstring)."""
    from postrelay.core import embedded

    if not path and not os.environ.get(CONFIG_ENV):
        record = embedded.read_record(DEFAULT_DATA_DIR)
        if record and isinstance(record.get("config"), str):
            path = str(record["config"])
    config = load_runtime_config(path)
    if aim(config, path):
        return config
    name = path or os.environ.get(CONFIG_ENV) or "the config"
    record = embedded.read_record(config.server.data_dir)
    where = embedded.record_path(config.server.data_dir)
    if record is None:
        raise Unreachable(f"no Redis to reach: {name} sets no [server] redis_url, ${REDIS_URL_ENV} is not set, "
                          f"and no embedded Redis is recorded in {where} (is `postrelay run` running here?)")
    config.server.redis_url = str(record["redis_url"])
    Target.url, Target.origin = config.server.queue_redis_url, f"the embedded Redis recorded in {where}"
    return config


def runtime(path: str | None) -> Runtime:
    """A worker runtime (Redis clients, destinations) for an operator command: with a read timeout, so a Redis
    that accepts the connection and never answers (a TLS URL to a plain port, a black hole) is exit 3, not a hang."""
    from postrelay.workers.runtime import from_config

    config = operator_config(path)
    return from_config(config, timeout=max(5.0, config.server.redis_timeout))


def require_redis_url(config: Config, path: str | None, command: str) -> None:
    """`serve` and `worker` need a configured Redis (only `run` starts an embedded one)."""
    if not aim(config, path):
        raise ConfigError(f"server.redis_url: required for `{command}` (set it or ${REDIS_URL_ENV}; "
                          f"`postrelay run` starts an embedded Redis instead)")
