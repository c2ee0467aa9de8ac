"""Subcommands defined outside `postrelay.cli`: importing a module registers its commands."""

from postrelay import (
    console_cli,  # noqa: F401  (reindex, demo)
    ops_cli,  # noqa: F401  (status, backfill)
)
from workers import followups_cli  # noqa: F401
