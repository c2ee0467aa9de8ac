"""Subcommands defined outside `postrelay.cli`: importing a module registers its commands."""

from workers import followups_cli  # noqa: F401
