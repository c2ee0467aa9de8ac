"""Registry hook for subcommands defined outside `postrelay.cli` (follow-ups, status, backfill).

Import modules here that append to `postrelay.cli.COMMANDS`.
"""
