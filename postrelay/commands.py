"""Subcommands defined outside `postrelay.cli`: importing a module registers its commands."""

from postrelay import migrate_cli, ops_cli  # noqa: F401  (migrate; status, backfill)
from workers import followups_cli  # noqa: F401
