"""`postrelay check-config`: one line per mistake naming the file, the key and what is expected, every mistake at
once, never a secret's value — checked word for word, through the real command."""

from __future__ import annotations

from pathlib import Path

import pytest

from postrelay.adapters import ADAPTERS
from postrelay.core.config import Config, ServerConfig
from postrelay.core.events import ALL_TYPES, FILTER_FIELDS
from tests.cli.conftest import postrelay

SECRET_TOKEN = "pat-na1-top secret-4f9a1c2e7b0d"  # a HubSpot token with a space: invalid, and never printed
SECRET_HEADER = "hdr-secret-8d3e6a0f5c1b27e4d"
SECRET_PASSWORD = "redis-pw-secret-5c1b27e4d"
BASE = '[sources.lob]\nsecrets = ["lob_secret_current_1b2c3d4e5f"]\n'
SERVER_KEYS = ", ".join(ServerConfig.model_fields)
TYPES = ", ".join(sorted(ADAPTERS))
FIELDS = ", ".join(FILTER_FIELDS)
TABLES = ", ".join(Config.model_fields)  # every top-level table, as the message lists them
HOOK = '[destinations.crm]\ntype = "webhook"\nurl = "https://hooks.example.com/x"\n'

# (what the operator wrote, the one line check-config prints after "config error: FILE: ")
MISTAKES = {
    "unknown table": ("[delivry]\nmax_attempts = 3\n",
                      f"delivry: unknown table (did you mean 'delivery'?); known: {TABLES}"),
    "unknown key": ("[server]\nprot = 8001\n",
                    f"server.prot: unknown key (did you mean 'port'?); known: {SERVER_KEYS}"),
    "unknown where field": (HOOK + '[[routes]]\nto = ["crm"]\nwhere = { contry = "US" }\n',
                            f"routes[0].where: unknown filter field 'contry'; a filter may name: {FIELDS}"),
    "wrong type": ("[server]\nport = \"eighty\"\n",
                   "server.port: expected a valid integer, unable to parse string as an integer"),
    "bad duration": ("[delivery]\ntimeout = \"soon\"\n",
                     "delivery.timeout: cannot parse duration 'soon'; expected a duration such as '30s', '5m', '36h', "
                     "'8d' or '14 days' (a bare number is seconds)"),
    "duration too long": ("[server]\ndedupe_window = \"99999999999999d\"\n",
                          "server.dedupe_window: duration '99999999999999d' is longer than 100 years"),
    "infinite duration": ("[delivery]\nlease = inf\n", "delivery.lease: duration must be a finite number, not inf"),
    "follow-up delay too long": (HOOK + '[[followups]]\nname = "nudge"\nafter = "delivered"\n'
                                        'delay = "99999999999 business days"\ndo = "crm"\n',
                                 "followups[0].delay: delay '99999999999 business days' is longer than 10000 "
                                 "business days"),
    "bad follow-up delay": (HOOK + '[[followups]]\nname = "nudge"\nafter = "delivered"\ndelay = "2 bizness days"\n'
                                   'do = "crm"\n',
                            "followups[0].delay: cannot parse delay '2 bizness days'; expected '0', a duration such as "
                            "'36h' or '14 days', or 'N business days'"),
    "unknown destination in a route": (HOOK + '[[routes]]\nto = ["crn"]\n',
                                       "routes[0].to: unknown destination 'crn' (did you mean 'crm'?); known: crm"),
    "unknown event type": (HOOK + '[[routes]]\nevents = ["teleported"]\nto = ["crm"]\n',
                           f"routes[0].events: unknown event type(s) ['teleported']; known: {sorted(ALL_TYPES)}"),
    "unknown destination type": ('[destinations.crm]\ntype = "hubspt"\ntoken = "x"\n',
                                 f"destinations.crm.type: unknown destination type 'hubspt' (did you mean 'hubspot'?); "
                                 f"known: {TYPES}"),
    "bad destination token": (f'[destinations.hs]\ntype = "hubspot"\ntoken = "{SECRET_TOKEN}"\n',
                              "destinations.hs.token: must be printable ASCII without spaces"),
    "bad header value": (f'[destinations.wh]\ntype = "webhook"\nurl = "https://hooks.example.com/x"\n'
                         f'headers = {{ "X-Api-Key" = "{SECRET_HEADER}\\n" }}\n',
                         "destinations.wh.headers: header 'X-Api-Key': value must not contain CR, LF or NUL"),
    "missing required key": ("[sources.postgrid]\ntolerance = \"1h\"\n", "sources.postgrid.secrets: required"),
    "unset environment variable": ("[server]\napi_token = \"${PR_TEST_UNSET_TOKEN}\"\n",
                                   "server.api_token: environment variable ${PR_TEST_UNSET_TOKEN} is not set"),
    "not one of the choices": ("[server]\nlog_format = \"xml\"\n", "server.log_format: expected 'json' or 'text'"),
    "short token": ("[server]\napi_token = \"short-tok\"\n",
                    "server.api_token: api_token must be at least 16 characters"),
    "bad Redis Cluster URL": (f'[server]\nredis_url = "redis+cluster://:{SECRET_PASSWORD}@c1:x/"\n'
                              'queue_url = "redis://q:6379/0"\n',
                              "server.redis_url: Redis Cluster URL 'redis+cluster://c1:x/': port 'x' of 'c1' is not a "
                              "number"),
    "a read token equal to api_token": (f'[server]\napi_token = "{SECRET_HEADER}"\n[[server.tokens]]\nname = "viewer"\n'
                                        f'token = "{SECRET_HEADER}"\n',
                                        "server.tokens[0].token: the same token as server.api_token; each token "
                                        "needs its own secret"),
    "empty host": ('[server]\nhost = "${PR_TEST_UNSET_HOST:-}"\n',
                   "server.host: expected an address or host name such as 127.0.0.1 or 0.0.0.0 (not empty, no spaces)"),
    "zero Redis timeout": ("[server]\nredis_timeout = 0\n", "server.redis_timeout: expected greater than 0"),
    "zero lease": ("[delivery]\nlease = \"0s\"\n", "delivery.lease: expected greater than 0"),
    "not a Redis URL": ('[server]\nredis_url = "localhost:6379"\n',
                        "server.redis_url: not a Redis URL (no scheme); it starts with redis://, rediss://, "
                        "unix://, redis+sentinel:// or redis+cluster://"),
    "bad Redis port": (f'[server]\nqueue_url = "redis://:{SECRET_PASSWORD}@q:99999/0"\n',
                       "server.queue_url: redis:// URL: the port must be a number from 1 to 65535"),
    "bad Redis database": ('[server]\nredis_url = "redis://127.0.0.1:6379/redis"\n',
                           "server.redis_url: redis:// URL: the database must be a number (redis://host:6379/0)"),
    "unknown destination setting": (HOOK + "retries = 3\n",
                                    "destinations.crm.retries: unknown key; known: url, secret, headers, timeout"),
}


def write(tmp_path: Path, text: str, name: str = "postrelay.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", list(MISTAKES))
def test_each_mistake_is_one_line_naming_file_key_and_what_is_expected(tmp_path: Path, kind: str) -> None:
    text, line = MISTAKES[kind]
    cfg = write(tmp_path, BASE + text)
    result = postrelay("check-config", str(cfg), secrets=[SECRET_TOKEN, SECRET_HEADER, SECRET_PASSWORD])
    assert result.code == 2
    assert result.lines == [f"config error: {cfg}: {line}"]
    assert result.out == ""


def test_every_mistake_is_reported_at_once(tmp_path: Path) -> None:
    # each mistake in its own table, so they can all stand in one file
    kinds = ["unknown table", "unknown key", "bad duration", "bad destination token", "bad header value",
             "missing required key", "not one of the choices"]
    server = "[server]\nprot = 8001\nlog_format = \"xml\"\n"
    text = (BASE + server + MISTAKES["unknown table"][0] + MISTAKES["bad duration"][0].replace("[delivery]\n", "[delivery]\n")
            + MISTAKES["bad destination token"][0] + MISTAKES["bad header value"][0] + MISTAKES["missing required key"][0])
    cfg = write(tmp_path, text)
    result = postrelay("check-config", "--config", str(cfg), secrets=[SECRET_TOKEN, SECRET_HEADER, SECRET_PASSWORD])
    assert result.code == 2
    assert sorted(result.lines) == sorted(f"config error: {cfg}: {MISTAKES[k][1]}" for k in kinds)


def test_a_valid_config_says_what_it_found(tmp_path: Path) -> None:
    cfg = write(tmp_path, BASE + HOOK + '[[routes]]\nto = ["crm"]\nwhere = { country = "US", "metadata.campaign" = "x" }\n')
    result = postrelay("check-config", str(cfg))
    assert (result.code, result.err) == (0, "")
    assert result.out == "ok: 1 source(s) ['lob'], 1 destination(s), 1 route(s), 0 follow-up rule(s)\n"


def test_file_problems_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert postrelay("check-config", str(missing)).lines == [f"config error: config file not found: {missing}"]
    broken = write(tmp_path, "[server\nport = 1\n", "broken.toml")
    result = postrelay("check-config", str(broken))
    assert result.code == 2
    assert result.lines == [f"config error: {broken}: invalid TOML: Expected ']' at the end of a table declaration "
                            f"(at line 1, column 8)"]
    result = postrelay("check-config")
    assert (result.code, result.lines) == (2, ["config error: no config file: pass --config FILE or set "
                                               "POSTRELAY_CONFIG"])


def test_toml_nested_too_deeply_is_one_config_error_line(tmp_path: Path) -> None:
    deep = write(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n", "deep.toml")
    result = postrelay("check-config", str(deep))
    assert (result.code, result.lines) == (2, [f"config error: {deep}: invalid TOML: arrays or inline tables "
                                               "nested too deeply"])


def test_a_byte_order_mark_is_not_a_toml_error(tmp_path: Path) -> None:
    cfg = tmp_path / "notepad.toml"
    cfg.write_bytes(b"\xef\xbb\xbf" + (BASE + "[server]\nport = 8001\n").encode())
    result = postrelay("check-config", str(cfg))
    assert (result.code, result.err) == (0, ""), result
    assert result.out.startswith("ok: 1 source(s) ['lob']")


def test_two_different_configs_are_a_usage_error(tmp_path: Path) -> None:
    good = write(tmp_path, BASE, "good.toml")
    broken = write(tmp_path, "[server\n", "broken.toml")
    result = postrelay("check-config", str(good), "--config", str(broken))
    assert (result.code, result.lines[-1]) == (2, f"Error: give the config once: FILE ({good}) or --config ({broken})")
    assert postrelay("check-config", str(good), "--config", str(good)).code == 0


def test_a_number_from_an_environment_variable_is_seconds(tmp_path: Path) -> None:
    """`${VAR}` always gives a string: "30" is 30 seconds, as the TOML number 30 is (it was 'cannot parse')."""
    cfg = write(tmp_path, BASE + '[server]\nbody_timeout = "${PR_TEST_UNSET_TIMEOUT:-30}"\n'
                                 '[delivery]\ntimeout = "7.5"\n')
    result = postrelay("check-config", str(cfg))
    assert (result.code, result.err) == (0, ""), result
