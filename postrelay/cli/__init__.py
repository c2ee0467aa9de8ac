"""The `postrelay` command: a `click` group whose whole tree is written out below, in `TREE`.

    postrelay run | serve | worker            long-running processes            (postrelay.cli.service)
    postrelay check-config [FILE]             validate every key, destination, rule (postrelay.cli.validate)
    postrelay status | dlq list|replay | destinations [pause|resume NAME] | backfill  (postrelay.cli.ops)
    postrelay followups list|cancel                                              (postrelay.cli.followups)
    postrelay mailings list|show                                                 (postrelay.cli.mailings)
    postrelay reindex [--rebuild] | demo [--pieces N]  the console's indexes, its demo data (postrelay.cli.console)
    postrelay links mint --csv FILE                                              (postrelay.cli.links)
    postrelay migrate                         stored mailpieces to the compact layout (postrelay.cli.migrate)

This package is the top layer: it may import `receiver` and `workers`; nothing below imports it. `main()` maps
every user error and unreachable service to one line on stderr and a documented exit code, never a traceback:
0 ok, 1 failed (a part of `run` died, a backfill failed, nothing to cancel), 2 config or usage error, 3 Redis
unreachable, 4 cannot listen (port taken), 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from postrelay.cli import console, followups, links, mailings, migrate, ops, service, validate
from postrelay.cli.common import (
    CONFIG_ERROR,
    FAILED,
    INTERRUPTED,
    OK,
    REDIS_UNREACHABLE,
    Target,
    Unreachable,
)
from postrelay.core.config import ConfigError

DEBUG_ENV = "POSTRELAY_DEBUG"


class _Ordered(click.Group):
    """Lists its commands in the order of `TREE`, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_Ordered, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="postrelay", prog_name="postrelay")
def cli() -> None:
    """Mail-event webhook receiver and status relay."""


TREE: list[click.Command] = [
    service.run,
    service.serve,
    service.worker,
    validate.check_config,
    ops.status,
    ops.dlq,  # list, replay
    ops.destinations,  # pause NAME, resume NAME
    followups.followups,  # list, cancel ID
    mailings.mailings,  # list, show ID
    ops.backfill,
    console.reindex,
    console.demo,
    links.links,  # mint --csv FILE
    migrate.migrate,
]
for command in TREE:
    cli.add_command(command)


def _redis_failure(exc: Exception) -> str:
    import redis

    if isinstance(exc, redis.AuthenticationError):
        return f"cannot use {Target.describe()}: authentication failed ({exc})"
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.exceptions.RedisClusterException):
        return f"cannot reach {Target.describe()}: {exc}"
    return f"{Target.describe()} answered an error: {exc}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command and return its exit code (see the module docstring)."""
    import redis

    from postrelay.core.logs import env_level

    try:
        logging.basicConfig(level=env_level("WARNING"))
        result = cli.main(args=argv, prog_name="postrelay", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        return INTERRUPTED
    except ConfigError as exc:
        for line in exc.lines:
            print(f"config error: {line}", file=sys.stderr)
        return CONFIG_ERROR
    except Unreachable as exc:
        print(f"postrelay: {exc}", file=sys.stderr)
        return REDIS_UNREACHABLE
    except (redis.RedisError, redis.exceptions.RedisClusterException) as exc:
        print(f"postrelay: {_redis_failure(exc)}", file=sys.stderr)
        return REDIS_UNREACHABLE
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:  # `postrelay status --json | head`: the reader left; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK
    except Exception as exc:
        code = getattr(exc, "exit_code", None)
        if isinstance(code, int):  # CannotListen, RunError: their message is the one line
            print(f"postrelay: {exc}", file=sys.stderr)
            return code
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"postrelay: unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 to see where)", file=sys.stderr)
        return FAILED
    return int(result or 0)
