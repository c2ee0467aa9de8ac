"""postrelay's version, and the `User-Agent` every outgoing request carries (`postrelay/<version>`)."""

from __future__ import annotations

from importlib import metadata


def version() -> str:
    """The installed package's version (`0+unknown` when run from a checkout that was never installed)."""
    try:
        return metadata.version("postrelay")
    except metadata.PackageNotFoundError:
        return "0+unknown"


USER_AGENT = f"postrelay/{version()}"
"""Sent on every request to a vendor (deliveries, backfills), so their logs and support can tell ours apart."""
