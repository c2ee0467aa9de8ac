#!/usr/bin/env python3
"""Container health probe for postrelay: exit 0 when GET URL answers 2xx, else exit 1.

Standard library only, because python:3.11-slim has no curl or wget. Used by the Dockerfile
HEALTHCHECK (liveness, `/healthz`) and by docker-compose (readiness, `/readyz`).

    postrelay-healthcheck [URL]        # default: $POSTRELAY_HEALTHCHECK_URL or http://127.0.0.1:8000/healthz

Proxy variables (HTTP_PROXY, ...) are ignored on purpose: the probe always talks to the local process.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:8000/healthz"


def probe(url: str, timeout: float) -> tuple[bool, str]:
    """GET `url`; (True, status) on 2xx, (False, reason) on anything else."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def main(argv: list[str]) -> int:
    """Probe argv[1] (or the env/default URL) and return the process exit code."""
    url = argv[1] if len(argv) > 1 else os.environ.get("POSTRELAY_HEALTHCHECK_URL", DEFAULT_URL)
    timeout = float(os.environ.get("POSTRELAY_HEALTHCHECK_TIMEOUT", "3"))
    ok, detail = probe(url, timeout)
    if not ok:
        print(f"unhealthy: {url}: {detail}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
