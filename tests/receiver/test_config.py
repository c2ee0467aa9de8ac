"""The config file as an operator writes it: `${ENV}` interpolation and errors that name the offending key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from postrelay.core.config import ConfigError, load_config, parse_config

LOB = {"secrets": ["lob_secret_current_1b2c3d4e5f"]}
TOML = """
[server]
redis_url = "${TEST_PR_REDIS_URL:-redis://127.0.0.1:6379/0}"
api_token = "${TEST_PR_API_TOKEN}"
max_body_bytes = 65536

[sources.postgrid]
secrets = ["${TEST_PR_PG_SECRET}", "${TEST_PR_PG_SECRET_OLD}"]

[sources.lob]
secrets = ["${TEST_PR_LOB_SECRET}"]
tolerance = "10m"

[sources.postalytics]
token = "${TEST_PR_PA_TOKEN}"

[sources.generic]
secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[destinations.crm]
type = "webhook"
url = "https://hooks.example.com/${TEST_PR_HOOK_PATH}"

[[routes]]
events = ["processed_for_delivery", "returned_to_sender"]
to = ["crm"]
"""
ENV = {
    "TEST_PR_API_TOKEN": "read-api-token-0123456789abcdef",
    "TEST_PR_PG_SECRET": "pg_secret_current_4f9a1c2e7b0d93a1c",
    "TEST_PR_PG_SECRET_OLD": "pg_secret_previous_8d3e6a0f5c1b27e4d",
    "TEST_PR_LOB_SECRET": "lob_secret_current_1b2c3d4e5f",
    "TEST_PR_PA_TOKEN": "pa_tok_current_7Hq2LmX9vR4sT1wZ",
    "TEST_PR_HOOK_PATH": "catch/123/abc",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TEST_PR_REDIS_URL", raising=False)
    return monkeypatch


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "postrelay.toml"
    path.write_text(TOML, encoding="utf-8")
    return path


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return str(info.value)


# --- interpolation --------------------------------------------------------------------------------------


def test_env_interpolation_in_a_real_file(env: pytest.MonkeyPatch, config_file: Path) -> None:
    config = load_config(config_file)
    assert config.server.api_token == ENV["TEST_PR_API_TOKEN"]
    assert config.server.redis_url == "redis://127.0.0.1:6379/0"  # the ${VAR:-default}
    assert config.sources.postgrid.secrets == [ENV["TEST_PR_PG_SECRET"], ENV["TEST_PR_PG_SECRET_OLD"]]
    assert config.sources.lob.secrets == [ENV["TEST_PR_LOB_SECRET"]]
    assert config.sources.lob.tolerance == 600
    assert config.sources.postalytics.all_tokens == [ENV["TEST_PR_PA_TOKEN"]]
    assert config.destinations["crm"].settings["url"] == "https://hooks.example.com/catch/123/abc"
    assert config.server.max_body_bytes == 65536


def test_set_variable_beats_its_default(env: pytest.MonkeyPatch, config_file: Path) -> None:
    env.setenv("TEST_PR_REDIS_URL", "redis://10.0.0.5:6380/2")
    assert load_config(config_file).server.redis_url == "redis://10.0.0.5:6380/2"


def test_config_path_from_environment(env: pytest.MonkeyPatch, config_file: Path) -> None:
    env.setenv("POSTRELAY_CONFIG", str(config_file))
    assert load_config().sources.lob is not None


def test_interpolated_values_are_not_interpolated_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PR_ODD_SECRET", "abc${HOME}def-0123456789")
    config = parse_config({"sources": {"lob": {"secrets": ["${TEST_PR_ODD_SECRET}"]}}})
    assert config.sources.lob.secrets == ["abc${HOME}def-0123456789"]


def test_missing_env_var_names_the_key_and_the_variable(env: pytest.MonkeyPatch, config_file: Path) -> None:
    env.delenv("TEST_PR_LOB_SECRET")
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    message = str(info.value)
    assert "sources.lob.secrets[0]" in message
    assert "TEST_PR_LOB_SECRET" in message


def test_missing_env_var_in_a_table_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_PR_NOT_SET", raising=False)
    message = error_of({"server": {"api_token": "${TEST_PR_NOT_SET}"}})
    assert message.startswith("server.api_token:")
    assert "TEST_PR_NOT_SET" in message


def test_empty_env_var_makes_an_empty_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PR_EMPTY", "")
    message = error_of({"sources": {"lob": {"secrets": ["${TEST_PR_EMPTY}"]}}})
    assert message.startswith("sources.lob.secrets:")
    assert "empty" in message


# --- invalid values name their key -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"sources": {"lob": {"secrets": []}}}, "sources.lob.secrets"),
        ({"sources": {"lob": {"secrets": "one-secret-not-a-list"}}}, "sources.lob.secrets"),
        ({"sources": {"lob": {}}}, "sources.lob.secrets"),
        ({"sources": {"generic": {"secrets": [""]}}}, "sources.generic.secrets"),
        ({"sources": {"lob": {**LOB, "tolerance": "5 parsecs"}}}, "sources.lob.tolerance"),
        ({"sources": {"postgrid": {"secrets": ["x" * 20], "tolerance": -5}}}, "sources.postgrid.tolerance"),
        ({"sources": {"postgird": LOB}}, "sources.postgird"),
        ({"sources": {"lob": {**LOB, "secret": "typo"}}}, "sources.lob.secret"),
        ({"sources": {"postalytics": {"token": "short"}}}, "sources.postalytics"),
        ({"sources": {"postalytics": {}}}, "sources.postalytics"),
        ({"server": {"api_token": "short"}}, "server.api_token"),
        ({"server": {"max_body_bytes": 10}}, "server.max_body_bytes"),
        ({"server": {"port": "eighty"}}, "server.port"),
        ({"server": {"body_timeout": "soon"}}, "server.body_timeout"),
    ],
)
def test_invalid_value_names_the_key(data: dict, key: str) -> None:
    message = error_of(data)
    assert message.startswith(f"{key}:"), message


def test_route_to_unknown_destination() -> None:
    message = error_of({
        "destinations": {"crm": {"type": "webhook", "url": "https://hooks.example.com/x"}},
        "routes": [{"events": ["mailed"], "to": ["crm"]}, {"events": ["delivered"], "to": ["crm", "hubspto"]}],
    })
    assert "routes[1].to" in message
    assert "'hubspto'" in message


def test_route_with_unknown_event_type() -> None:
    message = error_of({
        "destinations": {"crm": {"type": "webhook", "url": "https://hooks.example.com/x"}},
        "routes": [{"events": ["processed_for_delivery", "teleported"], "to": ["crm"]}],
    })
    assert re.match(r"routes(\[0\]|\.0)\.events:", message), message
    assert "teleported" in message
    assert "processed_for_delivery" in message  # the known types are listed


def test_route_with_no_destination() -> None:
    message = error_of({"destinations": {"crm": {"type": "webhook"}}, "routes": [{"to": []}]})
    assert re.match(r"routes(\[0\]|\.0)\.to:", message), message


def test_followup_after_unknown_event_type() -> None:
    message = error_of({"destinations": {"crm": {"type": "webhook"}},
                        "followups": [{"name": "nudge", "after": "delivred", "do": "crm"}]})
    assert re.match(r"followups(\[0\]|\.0)\.after:", message), message
    assert "delivred" in message


def test_wildcard_route_and_defaults_are_valid() -> None:
    config = parse_config({"destinations": {"crm": {"type": "webhook", "url": "https://hooks.example.com/x"}},
                           "routes": [{"to": ["crm"]}], "sources": {"postgrid": {"secrets": ["x" * 24]}, "lob": LOB}})
    assert config.routes[0].events == ["*"]
    assert config.sources.postgrid.tolerance == 8 * 3600  # PostGrid retries up to ~7 h later
    assert config.sources.lob.tolerance == 300
    assert config.sources.generic is None


# --- the file itself ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[server\nport = 1", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "broken.toml" in str(info.value)
    assert "invalid TOML" in str(info.value)


def test_no_config_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSTRELAY_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="POSTRELAY_CONFIG"):
        load_config()
