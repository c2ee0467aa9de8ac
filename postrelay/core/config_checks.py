"""Config rules that look past one key: cross-references, the Redis URL pair, `${ENV}` interpolation.

They work on raw documents as well as on validated models, so `check-config` reports them together with
every other problem.
"""

from __future__ import annotations

import os
import re
from typing import Any

from postrelay.core.config_errors import ConfigError, did_you_mean

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _tables(data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = data.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def reference_problems(data: dict[str, Any]) -> list[str]:
    """Names that must resolve: route `to` and follow-up `do` destinations, unique follow-up names, name
    syntax. Works on a raw document too (skipping what has the wrong type), so these are reported together
    with every other problem."""
    dests = data.get("destinations")
    names = list(dests) if isinstance(dests, dict) else []
    out = [f"destinations.{n}: names may use letters, digits, '_' and '-' only" for n in names if not _NAME.match(n)]
    for i, route in enumerate(_tables(data, "routes")):
        targets = route.get("to")
        for name in targets if isinstance(targets, list) else []:
            if name not in names:
                out.append(f"routes[{i}].to: unknown destination {name!r}{did_you_mean(str(name), names)}; "
                           f"known: {', '.join(names) or 'none'}")
    seen: set[str] = set()
    for i, rule in enumerate(_tables(data, "followups")):
        name, do = rule.get("name"), rule.get("do")
        if isinstance(do, str) and do not in names:
            out.append(f"followups[{i}].do: unknown destination {do!r}{did_you_mean(do, names)}; "
                       f"known: {', '.join(names) or 'none'}")
        if isinstance(name, str):
            if not _NAME.match(name):
                out.append(f"followups[{i}].name: use letters, digits, '_' and '-' only")
            elif name in seen:
                out.append(f"followups[{i}].name: {name!r} is used by an earlier rule; names must be unique")
            seen.add(name)
    return out


def check_redis_urls(queue_url: str | None, redis_url: str | None) -> None:
    """A cluster `redis_url` needs a single-shard `queue_url` (`[server]`'s two URLs); ValueError names the key.

    RQ does not support Redis Cluster, and the dispatcher's ack transaction and the ingest script must stay on
    one shard: only the mailpiece store (`redis_url`) may be a cluster.
    """
    from postrelay.core.redis_url import check_url, is_cluster_url, parse_cluster_url

    for key, url in (("redis_url", redis_url), ("queue_url", queue_url)):
        if url and not is_cluster_url(url):
            try:
                check_url(url)
            except ValueError as exc:
                raise ValueError(f"server.{key}: {exc}") from None
    if is_cluster_url(queue_url):
        raise ValueError("server.queue_url: must be a single Redis (redis://, rediss://, unix:// or "
                         "redis+sentinel://), not a Redis Cluster: RQ and the dispatcher's transaction need one shard")
    if is_cluster_url(redis_url):
        try:
            parse_cluster_url(redis_url or "")
        except ValueError as exc:
            raise ValueError(f"server.redis_url: {exc}") from None
        if not queue_url:
            raise ValueError("server.queue_url: required when server.redis_url is a Redis Cluster "
                             "(the cluster holds mailpieces; the ingest stream, RQ and deliveries need a single "
                             "Redis: set queue_url = \"redis://…\" or POSTRELAY_QUEUE_URL)")


def interpolate(value: Any, path: str = "", problems: list[str] | None = None) -> Any:
    """Replace `${VAR}` (or `${VAR:-default}`) in every string; a missing variable names its key (raised, or
    appended to `problems` with the variable replaced by nothing)."""
    if isinstance(value, str):
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            message = f"{path or '<root>'}: environment variable ${{{name}}} is not set"
            if problems is None:
                raise ConfigError(message)
            problems.append(message)
            return ""
        return _INTERPOLATION.sub(repl, value)
    if isinstance(value, dict):
        return {k: interpolate(v, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value
