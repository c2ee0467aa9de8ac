"""`[mailings]`, `[[triggers]]` and `type = "lob"` destinations: bad configs fail at start, naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from postrelay.core.config import ConfigError, parse_config

PG = {"type": "postgrid", "api_key": "test_sk_0123456789"}
HOOK = {"type": "webhook", "url": "https://hooks.example.com/1"}
TRIGGER = {"name": "cart", "provider": "pg", "kind": "postcard", "token": "t" * 24, "idempotency_key": "{id}"}


def config(**over: Any) -> dict[str, Any]:
    return {"destinations": {"pg": PG, "hook": HOOK}, "triggers": [{**TRIGGER, **over}]}


def test_a_valid_trigger_flattens_its_mapping_and_parses_durations() -> None:
    c = parse_config(config(map={"to": {"name": "{a} {b}"}, "metadata.x": "{y}"}, cooldown="30 days"))
    [t] = c.triggers
    assert t.map == {"to.name": "{a} {b}", "metadata.x": "{y}"} and t.cooldown == 30 * 86400
    assert c.mailings.max_per_day == 1000


@pytest.mark.parametrize(("over", "needle"), [
    ({"provider": "hook"}, "triggers[0].provider: 'hook' is not a destination of type postgrid or lob; known: pg"),
    ({"provider": "nope"}, "triggers[0].provider: 'nope'"),
    ({"token": None}, "a trigger needs authentication"),
    ({"token": "short"}, "at least 16"),
    ({"idempotency_key": None}, "idempotency_key: required"),
    ({"kind": "self_mailer"}, "kind"),
    ({"name": "has space"}, "letters, digits"),
    ({"map": {"provider": "x"}}, "set by the trigger itself"),
    ({"cooldown": "soon"}, "cooldown"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_triggers_are_refused_naming_the_key(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(config(**over))
    assert needle in str(err.value)


def test_trigger_names_are_unique_and_secrets_may_replace_the_idempotency_key() -> None:
    with pytest.raises(ConfigError, match="used by an earlier trigger"):
        parse_config({"destinations": {"pg": PG}, "triggers": [TRIGGER, TRIGGER]})
    signed = {**TRIGGER, "token": None, "idempotency_key": None, "secrets": ["whsec_dGVzdA=="]}
    assert parse_config({"destinations": {"pg": PG}, "triggers": [signed]}).triggers[0].idempotency_key is None


def test_lob_destination_settings_are_validated() -> None:
    from postrelay.adapters.lob import LobAdapter

    ok = LobAdapter.Settings.model_validate({"api_key": "test_abc", "use_type": "operational"})
    assert ok.base_url == "https://api.lob.com"
    with pytest.raises(ValueError, match="use_type"):
        LobAdapter.Settings.model_validate({"api_key": "test_abc", "use_type": "spam"})
    with pytest.raises(ConfigError, match=r"mailings\.max_per_day"):
        parse_config({"mailings": {"max_per_day": -1}})
