"""Receiver fixtures: `service` (the real app under uvicorn on loopback) and `make_service` (custom configs)."""

from tests.receiver.harness import make_service, service, shared_service

__all__ = ["make_service", "service", "shared_service"]
