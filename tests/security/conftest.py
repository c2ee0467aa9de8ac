"""Security suite fixtures: the real receiver under uvicorn (see tests/receiver/harness.py)."""

from tests.receiver.harness import make_service, service, shared_service

__all__ = ["make_service", "service", "shared_service"]
