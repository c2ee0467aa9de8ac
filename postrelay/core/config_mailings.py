"""`[mailings]` and `[[triggers]]`: the config of trigger-based sending (docs/mailings.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from postrelay.core.durations import parse_seconds
from postrelay.core.mailing import MAILER_TYPES

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class MailingsConfig(BaseModel):
    """`[mailings]`: guards for every mailing (API, triggers, follow-ups)."""

    model_config = ConfigDict(extra="forbid")

    # pieces created per UTC day across all workers; 0 = no limit
    max_per_day: int = Field(default=1000, ge=0)
    # how long mailing records (and so their idempotency keys) are kept
    retention: float = 90 * 86400

    _dur = field_validator("retention", mode="before")(lambda v: parse_seconds(v))


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"to": {"name": "…"}}` (TOML dotted keys) -> `{"to.name": "…"}`; quoted `"to.name"` keys stay as they are."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, dict):
            out |= flatten(item, path)
        else:
            out[path] = item
    return out


LINK_FIELDS = ("target_url", "campaign_id", "ref", "expires_at", "utm", "query", "goal_url")


def link_table(value: Any) -> dict[str, Any]:
    """A `link` table of templates (the fields of `POST /v1/links` but `mailpiece`), flattened to dotted keys
    (`utm.source`); ValueError when `target_url` is missing or a field is unknown."""
    if not isinstance(value, dict):
        raise ValueError("link: a table such as { target_url = \"https://shop.example.com/c/{id}\" }")
    flat = flatten(value)
    unknown = sorted({k.split(".")[0] for k in flat} - set(LINK_FIELDS))
    if unknown:
        raise ValueError(f"link.{unknown[0]}: unknown; fields: {', '.join(LINK_FIELDS)}")
    if flat and "target_url" not in flat:
        raise ValueError("link.target_url: required")
    return flat


class TriggerConfig(BaseModel):
    """`[[triggers]]`: `POST /v1/triggers/{name}` turns an inbound JSON request into a mailing."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    provider: str
    kind: Literal["postcard", "letter"]
    token: str | None = Field(default=None, min_length=16)
    tokens: list[str] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)  # Standard Webhooks `whsec_…` secrets
    tolerance: float = 300.0
    map: dict[str, Any] = Field(default_factory=dict)
    where: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    cooldown: float = 0.0
    cooldown_key: str | None = None
    dry_run: bool = False
    max_per_day: int = Field(default=0, ge=0)
    link: dict[str, Any] = Field(default_factory=dict)  # a tracking link: templates like `map`'s

    _link = field_validator("link", mode="before")(lambda v: link_table(v))
    _dur = field_validator("tolerance", "cooldown", mode="before")(lambda v: parse_seconds(v))

    @field_validator("map", "where", mode="before")
    @classmethod
    def _flat(cls, v: Any) -> Any:
        return flatten(v) if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _auth(self) -> TriggerConfig:
        if not set(self.name) <= _NAME_CHARS:
            raise ValueError("name: use letters, digits, '_' and '-' only")
        if not (self.all_tokens or self.secrets):
            raise ValueError("set `token` (or `tokens`) or Standard Webhooks `secrets`: a trigger needs authentication")
        if any(len(t) < 16 for t in self.all_tokens):
            raise ValueError("a token must be at least 16 characters")
        if not self.idempotency_key and not self.secrets:
            raise ValueError("idempotency_key: required (a template such as \"{id}\") unless the trigger is signed "
                             "with Standard Webhooks, whose webhook-id is the default")
        bad = [k for k in self.map if k.split(".")[0] in ("provider", "kind")]
        if bad:
            raise ValueError(f"map: {bad[0]!r} is set by the trigger itself")
        return self

    @property
    def all_tokens(self) -> list[str]:
        """Every accepted per-trigger token."""
        return ([self.token] if self.token else []) + list(self.tokens)


def trigger_problems(triggers: list[TriggerConfig], destinations: dict[str, Any], followups: Sequence[Any] = (),
                     links_enabled: bool = True) -> list[str]:
    """Trigger names are unique and each `provider` is a postgrid or lob destination; a `link` (on a trigger
    or a follow-up) needs `[links]` and, on a follow-up, a postgrid or lob `do`. One line per problem."""
    out: list[str] = []
    seen: set[str] = set()
    mailers = sorted(n for n, d in destinations.items() if d.type in MAILER_TYPES)
    for i, trigger in enumerate(triggers):
        if trigger.name in seen:
            out.append(f"triggers[{i}].name: {trigger.name!r} is used by an earlier trigger; names must be unique")
        seen.add(trigger.name)
        if trigger.provider not in mailers:
            out.append(f"triggers[{i}].provider: {trigger.provider!r} is not a destination of type "
                       f"{' or '.join(MAILER_TYPES)}; known: {', '.join(mailers) or 'none'}")
        if (trigger.link or any(k.startswith("link.") for k in trigger.map)) and not links_enabled:
            out.append(f"triggers[{i}].link: tracking links need [links] base_url and allowed_hosts")
    for i, rule in enumerate(followups):
        if not rule.link:
            continue
        if not links_enabled:
            out.append(f"followups[{i}].link: tracking links need [links] base_url and allowed_hosts")
        if rule.do in destinations and rule.do not in mailers:
            out.append(f"followups[{i}].link: only a follow-up whose `do` is a postgrid or lob destination "
                       "creates a piece to print a link on")
    return out
