"""`postrelay backfill` against local servers that page like PostGrid's and Lob's events list APIs."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis

from postrelay import cli
from postrelay.core import keys
from postrelay.core.config import LobSource, PostGridSource
from postrelay.core.durations import parse_when
from postrelay.core.redis_url import async_client
from postrelay.core.version import USER_AGENT
from postrelay.receiver.backfill import BackfillError, Progress, backfill, retry_after
from postrelay.receiver.ingest import IngestQueue
from tests.support import payloads
from tests.support.http_server import LocalHTTPServer, Recorded, Reply

PG_KEY = "test_sk_postgrid_backfill_0123456789"
LOB_KEY = "test_lob_backfill_key_0123456789"
NEWEST = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def pg_events(n: int = 40) -> list[dict[str, Any]]:
    """`n` PostGrid events, newest first, one a day from 2026-11-20 back (ids event_0 .. event_{n-1});
    every 7th is a `campaign.updated` (ignored: no tracking)."""
    out = []
    for i in range(n):
        created = iso(NEWEST - timedelta(days=i))
        if i % 7 == 6:
            out.append(payloads.postgrid_event("campaign.updated", {"id": f"campaign_{i}"}, event_id=f"event_{i}",
                                               created_at=created))
        else:
            out.append(payloads.postgrid_status_update("letter", "printing", event_id=f"event_{i}",
                                                       created_at=created, order_id=f"letter_bf_{i}"))
    return out


class FakePostGrid:
    """GET /print-mail/v1/events?limit&skip with X-API-Key, like PostGrid (limit capped at `max_limit`)."""

    def __init__(self, events: list[dict[str, Any]], throttle: dict[int, int] | None = None, max_limit: int = 100,
                 status: int | None = None) -> None:
        self.events = events
        self.throttle = dict(throttle or {})
        self.max_limit = max_limit
        self.status = status

    def __call__(self, req: Recorded) -> Reply:
        if req.path != "/print-mail/v1/events":
            return Reply(404, {"error": {"type": "not_found"}})
        if req.headers.get("x-api-key") != PG_KEY:
            return Reply(401, {"error": {"type": "invalid_api_key_error", "message": "Invalid API key"}})
        if self.status:
            return Reply(self.status, {"error": {"type": "server_error"}})
        limit = min(int(req.query.get("limit", ["10"])[0]), self.max_limit)
        skip = int(req.query.get("skip", ["0"])[0])
        if self.throttle.get(skip):
            self.throttle[skip] -= 1
            return Reply(429, {"error": {"type": "rate_limit"}}, {"Retry-After": "0"})
        return Reply(200, {"object": "list", "limit": limit, "skip": skip, "totalCount": len(self.events),
                           "data": self.events[skip:skip + limit]})


def lob_events(n: int = 25) -> list[dict[str, Any]]:
    """`n` Lob in_transit events, newest first, one every 12 h from 2026-11-20 back."""
    out = []
    for i in range(n):
        when = iso(NEWEST - timedelta(hours=12 * i))
        body = payloads.lob_mailpiece("letter", f"ltr_bf_{i}",
                                      tracking_events=[payloads.lob_tracking_event("In Transit", when)])
        out.append(payloads.lob_event("letter.in_transit", body, event_id=f"evt_bf_{i}", date_created=when))
    return out


class FakeLob:
    """GET /v1/events?limit[&after=cursor] with Basic auth (key as user name); `next_url` on the real API's host."""

    def __init__(self, events: list[dict[str, Any]], throttle_first: int = 0) -> None:
        self.events = events
        self.throttle_first = throttle_first

    def __call__(self, req: Recorded) -> Reply:
        if req.path != "/v1/events":
            return Reply(404, {"error": {"message": "not found", "status_code": 404}})
        expected = "Basic " + base64.b64encode(f"{LOB_KEY}:".encode()).decode()
        if req.headers.get("authorization") != expected:
            return Reply(401, {"error": {"message": "Your API key is not valid.", "status_code": 401}})
        if self.throttle_first:
            self.throttle_first -= 1
            return Reply(503, {"error": {"message": "try again", "status_code": 503}})
        limit = int(req.query.get("limit", ["10"])[0])
        after = req.query.get("after", [None])[0]
        start = int(base64.urlsafe_b64decode(after).decode()) if after else 0
        data = self.events[start:start + limit]
        nxt = None
        if start + limit < len(self.events):
            cursor = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            nxt = "https://api.lob.com/v1/events?" + urlencode({"limit": limit, "after": cursor})
        return Reply(200, {"object": "list", "data": data, "count": len(data), "next_url": nxt, "previous_url": None})


def write_config(tmp_path: Path, redis_url: str, api_base: str) -> Path:
    path = tmp_path / "postrelay.toml"
    path.write_text(f"""
[server]
redis_url = "{redis_url}"

[sources.postgrid]
secrets = ["pg_secret_current_4f9a1c2e7b0d93a1c"]
api_key = "{PG_KEY}"
api_base = "{api_base}"

[sources.lob]
secrets = ["lob_secret_current_1b2c3d4e5f"]
api_key = "{LOB_KEY}"
api_base = "{api_base}"
""", encoding="utf-8")
    return path


def queued_ids(r: redis.Redis) -> list[str]:
    return [json.loads(fields[b"e"])["source_event_id"] for _, fields in r.xrange(keys.INGEST_STREAM)]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_postgrid_backfill_queues_each_event_once_and_stops_at_since(redis_client, redis_url, tmp_path, capsys):
    fake = FakePostGrid(pg_events(40), throttle={10: 1})
    with LocalHTTPServer(fake) as api:
        cfg = write_config(tmp_path, redis_url, api.url)
        code, out, err = run_cli(capsys, "backfill", "postgrid", "--since", "2026-11-01", "--page-size", "10",
                                 "--config", str(cfg), "--json")
        assert code == 0, err
        counts = json.loads(out)
        # in range: event_0 (Nov 20) .. event_19 (Nov 1); of those event_6 and event_13 are campaign events
        assert counts["accepted"] == 18 and counts["ignored"] == 2 and counts["duplicates"] == 0
        assert counts["pages"] == 3 and counts["stopped_early"] is True  # page 3 reaches October: stop
        assert counts["out_of_range"] == 10 and counts["seen"] == 30 and counts["total"] == 40
        assert counts["retries"] == 1  # the 429 on the second page
        skips = [r.query["skip"][0] for r in api.requests]
        assert skips == ["0", "10", "10", "20"]  # the 429 was retried; skip=30 never asked for
        assert all(r.headers["x-api-key"] == PG_KEY for r in api.requests)
        assert {r.headers["user-agent"] for r in api.requests} == {USER_AGENT}  # postrelay/<version>
        expected = {f"event_{i}" for i in range(20) if i % 7 != 6}
        ids = queued_ids(redis_client)
        assert len(ids) == 18 and set(ids) == expected
        assert "backfill postgrid [" in err and "accepted=18" in err  # the progress line

        # a second run finds everything already there
        code, out, err = run_cli(capsys, "backfill", "postgrid", "--since", "2026-11-01", "--page-size", "10",
                                 "--config", str(cfg))
        assert code == 0, err
        assert "0 queued, 18 duplicate(s)" in out
        assert len(queued_ids(redis_client)) == 18


def test_events_received_by_webhook_are_duplicates(make_service, redis_client, redis_url, tmp_path, capsys):
    events = pg_events(12)
    svc = make_service()
    webhook = svc.post_postgrid(events[3])  # the same event object, delivered by webhook first
    assert webhook.json() == {"accepted": 1, "duplicates": 0, "ignored": 0}
    with LocalHTTPServer(FakePostGrid(events)) as api:
        cfg = write_config(tmp_path, redis_url, api.url)
        code, out, _ = run_cli(capsys, "backfill", "postgrid", "--since", "2026-11-10", "--until", "2026-11-20",
                               "--config", str(cfg), "--json", "--no-progress")
    assert code == 0
    counts = json.loads(out)
    # [Nov 10, Nov 20): event_1 .. event_10; event_6 ignored; event_3 already received
    assert counts["accepted"] == 8 and counts["duplicates"] == 1 and counts["ignored"] == 1
    assert counts["out_of_range"] == 2  # event_0 (Nov 20, the exclusive end) and event_11 (Nov 9)
    ids = queued_ids(redis_client)
    assert ids.count("event_3") == 1 and len(ids) == 9


def test_lob_backfill_follows_cursors_with_basic_auth(redis_client, redis_url, tmp_path, capsys):
    with LocalHTTPServer(FakeLob(lob_events(25), throttle_first=1)) as api:
        cfg = write_config(tmp_path, redis_url, api.url)
        code, out, err = run_cli(capsys, "backfill", "lob", "--since", "2026-11-15T00:00:00Z", "--page-size", "4",
                                 "--config", str(cfg), "--json")
        assert code == 0, err
        counts = json.loads(out)
        # Nov 20 10:00 back every 12 h: 11 events are at or after Nov 15 00:00 (the last: Nov 15 10:00)
        assert counts["accepted"] == 11 and counts["duplicates"] == 0 and counts["retries"] == 1
        assert counts["pages"] == 3 and counts["stopped_early"] is True
        assert len(api.requests) == 4  # one 503, then three pages; the next_url host (api.lob.com) is never used
        assert [r.query.get("after") is None for r in api.requests] == [True, True, False, False]
        assert sorted(queued_ids(redis_client)) == sorted(f"evt_bf_{i}" for i in range(11))
        assert "backfill lob [" in err

        code, out, _ = run_cli(capsys, "backfill", "lob", "--since", "2026-11-15T00:00:00Z", "--config", str(cfg),
                               "--json", "--no-progress")
        assert code == 0
        again = json.loads(out)
        assert again["accepted"] == 0 and again["duplicates"] == 11
        assert len(queued_ids(redis_client)) == 11


def test_bad_api_key_stops_with_a_clear_error(redis_url, tmp_path, capsys):
    with LocalHTTPServer(FakePostGrid(pg_events(3))) as api:
        cfg = write_config(tmp_path, redis_url, api.url)
        cfg.write_text(cfg.read_text().replace(PG_KEY, "wrong_key_0123456789"))
        code, _, err = run_cli(capsys, "backfill", "postgrid", "--since", "3d", "--config", str(cfg), "--no-progress")
    assert code == 1
    assert "HTTP 401" in err and "api_key" in err and "wrong_key" not in err


def test_missing_api_key_is_a_config_error(redis_url, tmp_path, capsys):
    cfg = write_config(tmp_path, redis_url, "http://127.0.0.1:9")
    cfg.write_text(cfg.read_text().replace(f'api_key = "{LOB_KEY}"\n', ""))
    code, _, err = run_cli(capsys, "backfill", "lob", "--since", "2026-11-01", "--config", str(cfg))
    assert code == 2 and "sources.lob.api_key" in err



@pytest.mark.parametrize(("args", "line"), [
    (["--since", "2h", "--until", "3h"], "backfill: --until 3h is not after --since 2h: no event can be in that range"),
    (["--since", "2h", "--page-size", "0"], "Error: Invalid value for '--page-size': 0 is not in the range x>=1."),
    (["--since", "2h", "--max-pages", "0"], "Error: Invalid value for '--max-pages': 0 is not in the range x>=1."),
])
def test_an_empty_range_or_page_is_refused_before_any_request(redis_url, tmp_path, capsys, args, line):
    cfg = write_config(tmp_path, redis_url, "http://127.0.0.1:9")  # nothing listens: a request would fail slowly
    code, _, err = run_cli(capsys, "backfill", "postgrid", "--config", str(cfg), "--no-progress", *args)
    assert (code, err.splitlines()[-1]) == (2, line)

# --- the library function: retries, Retry-After, unreadable items ------------------------------------------------

def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _backfill_pg(redis_url: str, api_url: str, sleeps: list[float], **kw: Any):
    client = async_client(redis_url, 2.0)

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    try:
        settings = PostGridSource(secrets=["x" * 20], api_key=PG_KEY, api_base=api_url)
        return await backfill("postgrid", settings, IngestQueue(client, 86400), datetime(2026, 11, 1, tzinfo=UTC),
                              sleep=sleep, **kw)
    finally:
        await client.aclose()


def test_retry_after_is_honoured_and_retries_are_bounded(redis_url):
    throttled = {"n": 0}

    def handler(req: Recorded) -> Reply:
        throttled["n"] += 1
        if throttled["n"] == 1:
            return Reply(429, {"error": "slow down"}, {"Retry-After": "7"})
        if throttled["n"] == 2:
            return Reply(502, b"bad gateway")
        return FakePostGrid(pg_events(5))(req)

    sleeps: list[float] = []
    with LocalHTTPServer(handler) as api:
        counts = _run(_backfill_pg(redis_url, api.url, sleeps))
    assert counts.accepted == 5 and counts.retries == 2
    assert sleeps[0] == 7.0 and 0.5 <= sleeps[1] <= 2.0  # Retry-After, then backoff

    sleeps = []
    with LocalHTTPServer(FakePostGrid(pg_events(5), status=500)) as api, pytest.raises(BackfillError) as err:
        _run(_backfill_pg(redis_url, api.url, sleeps))
    assert "gave up after 6 attempts" in str(err.value) and len(sleeps) == 5 and max(sleeps) <= 60


def test_unreadable_items_are_counted_not_fatal_and_short_pages_end_paging(redis_url):
    events = pg_events(4)
    events.insert(1, {"type": "letter.updated", "createdAt": iso(NEWEST), "data": {"id": "letter_x"}})  # no id
    events.insert(2, "not an object")

    def handler(req: Recorded) -> Reply:  # no totalCount: paging ends on a short page
        skip = int(req.query["skip"][0])
        limit = int(req.query["limit"][0])
        return Reply(200, {"object": "list", "limit": limit, "skip": skip, "data": events[skip:skip + limit]})

    with LocalHTTPServer(handler) as api:
        counts = _run(_backfill_pg(redis_url, api.url, [], page_size=4))
        assert [r.query["skip"][0] for r in api.requests] == ["0", "4"]
    assert counts.invalid == 2 and counts.accepted == 4 and counts.total is None


def test_progress_line_and_helpers():
    import io

    from postrelay.receiver.backfill import Counts

    buf = io.StringIO()
    p = Progress("backfill postgrid", stream=buf, interval=0)
    p.update(Counts(pages=2, seen=20, accepted=15, duplicates=3, ignored=2, total=40))
    p.update(Counts(pages=4, seen=40, accepted=30, duplicates=6, ignored=4, total=40), final=True)
    first, last = buf.getvalue().splitlines()
    assert first.startswith("backfill postgrid [############------------] 20/40 pages=2 seen=20 accepted=15")
    assert "40/40" in last and "duplicates=6" in last
    assert retry_after("12", now=0) == 12 and retry_after("100000") == 300 and retry_after("soon") is None
    assert retry_after("Thu, 01 Jan 1970 00:00:30 GMT", now=0) == 30
    assert parse_when("2026-11-01") == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_when("36h", now=200000).timestamp() == 200000 - 36 * 3600
    with pytest.raises(ValueError):
        parse_when("last tuesday")
    assert LobSource(secrets=["x"]).api_base == "https://api.lob.com"
