"""Ops fixtures: the real receiver under uvicorn (`make_service`) and a worker runtime on the same Redis."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.receiver.harness import make_service
from tests.workers.conftest import clock, make_runtime

__all__ = ["clock", "make_runtime", "make_service"]


class Scrape:
    """A parsed /metrics answer: `scrape.value("name", label=value)`."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; KeyError naming what exists when it is missing."""
        key = (name, frozenset(labels.items()))
        if key not in self.samples:
            near = sorted(str(dict(k[1])) for k in self.samples if k[0] == name)
            raise KeyError(f"{name}{labels} not exported; have: {near}")
        return self.samples[key]

    def has(self, name: str, **labels: str) -> bool:
        """Whether the sample exists."""
        return (name, frozenset(labels.items())) in self.samples


def merge_config(*parts: dict[str, Any]) -> dict[str, Any]:
    """Shallow-merge config sections (later parts win per top-level key, dict sections merged)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = {**out[key], **value}
            else:
                out[key] = value
    return out
