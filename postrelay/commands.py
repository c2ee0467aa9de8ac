"""Subcommands defined outside `postrelay.cli`: importing a module registers its commands."""

from postrelay import cli_links, ops_cli  # noqa: F401  (links; status, backfill)
from workers import followups_cli  # noqa: F401
