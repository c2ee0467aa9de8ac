"""The request path's fast helpers give the answers of the code they replace.

- `parse_json` (orjson) against the standard-library path it falls back to (`_parse_json_std`);
- `Deadlines` (one loop timer for all body reads) against `asyncio.timeout`;
- the direct log line (`log_fields` → `LineHandler.emit_fields`) against the `LogRecord` path;
- the visit event from its template (`unbound_visit_json`) against `visit_json` and the `CanonicalEvent` model.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postrelay.core.events import CanonicalEvent, EventType
from postrelay.core.logs import LineHandler, dumps_line, log_fields, setup_logging
from postrelay.core.redaction import Redactor
from postrelay.core.stores.links import TOKEN_RE, Link, unbound_visit_json, visit_json
from postrelay.receiver.body import Deadlines, receive_body
from postrelay.receiver.errors import HTTPError
from postrelay.receiver.providers.base import _may_hold_big_integer, _parse_json_std, parse_json

# --- parse_json ----------------------------------------------------------------------------------------------


def _outcome(fn: Any, body: bytes) -> tuple[str, Any]:
    try:
        value = fn(body)
    except HTTPError as exc:
        return ("error", (exc.status, exc.code, exc.detail))
    return ("ok", json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr) + repr(_types(value)))


def _types(value: Any) -> Any:
    """The Python types inside `value` (an int parsed as a float must show)."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


EDGE_BODIES = [
    b"", b"  ", b"\xef\xbb\xbf{}", b"\xef\xbb\xbf", b"NaN", b'{"a": Infinity}', b'{"a": -Infinity}', b"1e400",
    b'{"a": 1e400}', b"12345678901234567890", b"-1234567890123456789", b"[123456789012345678]",
    b'{"a": 18446744073709551615}', b'{"a": 18446744073709551616}', b'{"a": -9223372036854775808}',
    b'{"a": -9223372036854775809}', b'{"a":\n -99999999999999999999}', b'{"a": "99999999999999999999"}',
    b'{"ref:12345678901234567890": 1}', b'{"a": 1.23456789012345678901234}', b'{"a": 1e0000000000000000001}',
    b'"\\ud800"', b'"\\udc00"', b'"\\ud83d\\udc8c"', b'{"a": 1, "a": 2}', b'{"a": "\x01"}', b"[" * 64 + b"]" * 64,
    b"[" * 65 + b"]" * 65, b"[" * 2000 + b"]" * 2000, b'{"id": ' + b"9" * 5000 + b"}", b"\xff", b"{} {}",
    '{"id": 1}'.encode("utf-16"), b"[1,]", b"-0", b"-0.0", b"0.1", b"1E5", b"true", b"null", b'"\\u0000"',
    b'{"\\u00e9": "\xc3\xa9"}',
]


@pytest.mark.parametrize("body", EDGE_BODIES)
def test_parse_json_matches_the_standard_path_on_edge_cases(body: bytes) -> None:
    assert _outcome(parse_json, body) == _outcome(_parse_json_std, body)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**25), max_value=10**25)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.booleans())
def test_parse_json_matches_the_standard_path(value: Any, compact: bool) -> None:
    body = json.dumps(value, separators=(",", ":") if compact else None, ensure_ascii=False).encode()
    assert _outcome(parse_json, body) == _outcome(_parse_json_std, body)


@pytest.mark.parametrize(("body", "expected"), [
    (b"[1, 1234567890123456789]", True), (b'{"a":-1234567890123456789}', True), (b"1234567890123456789", True),
    (b'{"a": "1234567890123456789"}', False), (b'{"a": 123456789012345678}', False),
    (b'{"a": 0.1234567890123456789}', False), (b'{"a": "x", "b": "1234567890123456789", "c": 1}', False),
])
def test_big_integer_gate(body: bytes, expected: bool) -> None:
    assert _may_hold_big_integer(body) is expected


# --- Deadlines -----------------------------------------------------------------------------------------------


def _receiver(chunks: list[tuple[float, dict[str, Any]]]) -> Any:
    items = list(chunks)

    async def receive() -> dict[str, Any]:
        delay, message = items.pop(0)
        await asyncio.sleep(delay)
        return message

    return receive


def _body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.request", "body": data, "more_body": more}


def test_deadlines_expire_slow_reads_only() -> None:
    async def main() -> list[Any]:
        deadlines = Deadlines(0.2)

        async def read(delays: list[float]) -> Any:
            chunks = [(d, _body(b"x", more=i < len(delays) - 1)) for i, d in enumerate(delays)]
            try:
                return await receive_body(_receiver(chunks), None, 100, deadlines)
            except HTTPError as exc:
                return exc.status

        tasks = [read([0.0]), read([0.05, 0.05]), read([0.5]), read([0.1, 0.3]), read([0.01] * 5)]
        started = asyncio.get_running_loop().time()
        out = await asyncio.gather(*tasks)
        # a later read, after the timer rearmed for nobody: still limited
        out.append(await read([0.4]))
        out.append(asyncio.get_running_loop().time() - started)
        return out

    *results, elapsed = asyncio.run(main())
    assert results == [b"x", b"xx", 408, 408, b"xxxxx", 408]
    assert elapsed < 0.2 + 0.2 + 0.3  # each slow read ended at its deadline, not at its last chunk


def test_deadlines_and_asyncio_timeout_give_the_same_answers() -> None:
    async def main(timeout: Any) -> list[Any]:
        results = []
        for chunks, limit in [
            ([(0, _body(b"a" * 10))], 10), ([(0, _body(b"a" * 11))], 10),
            ([(0, _body(b"a" * 6, True)), (0, _body(b"a" * 6))], 10),
            ([(0, _body(b"ab", True)), (0, {"type": "http.disconnect"})], 10),
            ([(0, _body(b"ab", True)), (0.3, _body(b"c"))], 10),
        ]:
            try:
                results.append(await receive_body(_receiver(chunks), None, limit, timeout))
            except HTTPError as exc:
                results.append((exc.status, exc.code, exc.detail))
            except Exception as exc:
                results.append(type(exc).__name__)
        return results

    assert asyncio.run(main(Deadlines(0.1))) == asyncio.run(main(0.1))


def test_an_outer_cancellation_is_not_a_timeout() -> None:
    async def main() -> str:
        task = asyncio.ensure_future(receive_body(_receiver([(5, _body(b"x"))]), None, 10, Deadlines(10)))
        await asyncio.sleep(0.05)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "not cancelled"

    assert asyncio.run(main()) == "cancelled"


# --- the direct log line -------------------------------------------------------------------------------------

FIELDS = {"method": "POST", "path": "/webhooks/postgrid", "route": "/webhooks/postgrid", "status": 200,
          "duration_ms": 1.25, "source": "postgrid", "accepted": 1, "duplicates": 0, "ignored": 0,
          "event_ids": ["mev_0123"], "mailpiece_ids": ["letter_é \"quoted\" \\ secret-value-123456"]}


@pytest.fixture
def only_our_handler(restore_logging: Any) -> Any:
    """Root with postrelay's handler alone (pytest's capture handlers removed for the test)."""
    root = logging.getLogger()
    saved = list(root.handlers)
    for h in saved:
        root.removeHandler(h)
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved:
        root.addHandler(h)


def _strip_ts(line: str) -> dict[str, Any]:
    data = json.loads(line)
    assert data.pop("ts").endswith("Z")
    return data


def test_direct_line_equals_the_record_line(only_our_handler: Any) -> None:
    buf = io.StringIO()
    handler = setup_logging("json", ["secret-value-123456"], level="INFO", stream=buf)
    assert isinstance(handler, LineHandler)
    log = logging.getLogger("postrelay.http")
    log_fields(log, logging.INFO, "request", dict(FIELDS))  # direct
    log.info("request", extra=dict(FIELDS))  # the LogRecord path
    direct, record = buf.getvalue().splitlines()
    assert "secret-value-123456" not in direct and "[REDACTED]" in direct
    assert direct[direct.index('"level"'):] == record[record.index('"level"'):]
    assert _strip_ts(direct) == _strip_ts(record)
    assert '"msg": "request"' in direct  # json.dumps's layout, which log pipelines (and tests) grep for


def test_direct_line_goes_to_the_file_descriptor(only_our_handler: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "err.log"
    with path.open("w", encoding="utf-8") as f:
        monkeypatch.setattr(sys, "stderr", f)
        setup_logging("json", [], level="INFO")
        log = logging.getLogger("postrelay.http")
        log.warning("before")
        log_fields(log, logging.INFO, "request", dict(FIELDS))
        log.warning("after")
        log_fields(log, logging.DEBUG, "request", dict(FIELDS))  # below the level: nothing
        f.flush()
        lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["msg"] for x in lines] == ["before", "request", "after"]
    assert json.loads(lines[1])["mailpiece_ids"] == FIELDS["mailpiece_ids"]


def test_other_handlers_get_an_ordinary_record(restore_logging: Any) -> None:
    buf = io.StringIO()
    setup_logging("json", [], level="INFO", stream=buf)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger("postrelay").addHandler(keep)
    try:
        log_fields(logging.getLogger("postrelay.http"), logging.INFO, "request", dict(FIELDS))
    finally:
        logging.getLogger("postrelay").removeHandler(keep)
    assert len(records) == 1 and records[0].getMessage() == "request" and records[0].status == 200
    assert '"msg": "request"' in buf.getvalue()


def test_text_format_takes_the_record_path(only_our_handler: Any) -> None:
    buf = io.StringIO()
    setup_logging("text", [], level="INFO", stream=buf)
    log_fields(logging.getLogger("postrelay.http"), logging.INFO, "request", dict(FIELDS))
    assert "request method=POST" in buf.getvalue()


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [1, 2], "c": {}, "d": [], "e": {"f": [None, True, 1.5, "x"]}},
    {"nested": {"a": {"b": {"c": {"d": 1}}}}}, {"big": 10**30}, {1: "int key"}, {"s": "\ud800"},
    {"s": "line\nbreak \t \u2028 \x7f é", "t": ("tu", "ple")}, {"o": object.__new__(Redactor)},
])
def test_dumps_line_is_json_dumps(value: dict[str, Any]) -> None:
    expected = json.dumps(value, ensure_ascii=False, default=str)
    if "o" in value:  # default=str of an object: same kind of text, the address differs per call
        assert dumps_line(value).startswith('{"o": "<postrelay.core.redaction.Redactor object at 0x')
    else:
        assert dumps_line(value) == expected


# --- unbound_visit_json ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(token=st.from_regex(TOKEN_RE, fullmatch=True), etype=st.sampled_from([EventType.PURL_OPENED,
                                                                             EventType.PURL_COMPLETED]),
       moment=st.datetimes(timezones=st.just(datetime.UTC)), suffix=st.from_regex(r"[0-9a-f]{16}", fullmatch=True))
def test_the_visit_template_is_visit_json(token: str, etype: EventType, moment: Any, suffix: str) -> None:
    visit_id = f"{token}.{'goal' if etype is EventType.PURL_COMPLETED else 'open'}.{suffix}"
    fast = unbound_visit_json(token, etype, moment, visit_id)
    slow = visit_json(Link(token=token, target=""), etype, moment, visit_id)
    assert (fast.id, fast.json) == (slow.id, slow.json)
    event = CanonicalEvent.model_validate_json(fast.json)
    assert (event.id, event.mailpiece.id, event.metadata["postrelay_link"]) == (fast.id, token, token)
