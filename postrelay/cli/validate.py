"""The whole-config check behind `check-config`, `run`, `serve` and `worker`: every key, every destination built
against its adapter, every route and follow-up rule resolved; all problems at once, one line each."""

from __future__ import annotations

from typing import Any

import click

from postrelay.cli.common import OK, config_option
from postrelay.core.config import Config, ConfigError, apply_env, check_document, read_document
from postrelay.core.config_errors import located
from postrelay.core.redaction import secret_values


def destination_problems(doc: dict[str, Any]) -> list[str]:
    """Each raw `[destinations.NAME]` table checked by its adapter, and its `rate_limit` parsed."""
    from postrelay.adapters import check_destination
    from postrelay.workers.ratelimit import parse_rate

    tables = doc.get("destinations")
    out: list[str] = []
    for name, table in (tables.items() if isinstance(tables, dict) else []):
        out += check_destination(str(name), table)
        rate = table.get("rate_limit") if isinstance(table, dict) else None
        if isinstance(rate, str):
            try:
                parse_rate(rate)
            except ValueError as exc:
                out.append(f"destinations.{name}.rate_limit: {exc}")
    return out


def validated(path: str | None) -> Config:
    """The config at `path` (else `$POSTRELAY_CONFIG`) with the environment's Redis URLs applied, or a
    ConfigError carrying every problem as `FILE: key.path: message`."""
    name, data = read_document(path)
    config, doc, problems = check_document(data, more=[destination_problems])
    if problems or config is None:
        raise ConfigError(located(problems, name, secret_values(doc)))
    return apply_env(config)


@click.command("check-config", short_help="validate a config file: every error, one line each")
@click.argument("file", required=False, metavar="[FILE]")
@config_option
def check_config(file: str | None, config: str | None) -> int:
    """Validate a config file (or --config / $POSTRELAY_CONFIG): every key, destination and rule; prints every
    problem, one line each."""
    if file and config and file != config:  # which one would be checked? (FILE silently won)
        raise click.UsageError(f"give the config once: FILE ({file}) or --config ({config})")
    cfg = validated(file or config)
    sources = [s for s in ("postgrid", "lob", "postalytics", "generic") if getattr(cfg.sources, s)]
    click.echo(f"ok: {len(sources)} source(s) {sources}, {len(cfg.destinations)} destination(s), "
               f"{len(cfg.routes)} route(s), {len(cfg.followups)} follow-up rule(s)")
    return OK
