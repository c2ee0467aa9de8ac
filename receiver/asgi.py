"""ASGI entry point for uvicorn with several worker processes: `uvicorn --factory postrelay.receiver.asgi:make_app`.

The config path comes from `POSTRELAY_CONFIG`; `POSTRELAY_REDIS_URL` and `POSTRELAY_QUEUE_URL` override
`[server] redis_url` and `queue_url`.
"""

from __future__ import annotations

from starlette.applications import Starlette

from postrelay.core.config import load_runtime_config
from postrelay.core.logs import setup_from_config
from postrelay.receiver.app import create_app


def make_app() -> Starlette:
    """Build the app from the environment (logs: `$POSTRELAY_LOG_FORMAT`, else `[server] log_format`)."""
    config = load_runtime_config()
    setup_from_config(config)
    return create_app(config)
