"""Provider trouble: address errors fail with the reason, 429/5xx/timeouts retry, and no case mails twice;
daily caps hold under concurrent workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis

from postrelay.core.stores import mailings as store
from postrelay.workers.mailings import Creator
from postrelay.workers.runtime import Runtime
from tests.mailings.conftest import Env, mailing
from tests.support.http_server import Reply
from tests.support.providers import address_error


@pytest.mark.parametrize("provider", ["pg", "lob"])
def test_address_error_fails_with_the_providers_reason_and_is_not_retried(env: Env, provider: str) -> None:
    stand_in = env.postgrid if provider == "pg" else env.lob
    stand_in.script.append(address_error("lob" if provider == "lob" else "postgrid"))
    mid = env.post_mailing(mailing(provider)).json()["mailing_id"]
    env.work()
    view = env.get_mailing(mid).json()
    assert view["status"] == "failed"
    assert view["http_status"] in (400, 422)
    assert ("invalid_address" in view["reason"]) and ("could not be verified" in view["reason"]
                                                      or "not a deliverable address" in view["reason"])
    env.clock.advance(3600)
    env.work()
    assert stand_in.creates == 1 and stand_in.pieces == []
    assert env.due() == []
    assert store.used_today(env.redis, env.clock()) == 0  # the cap slot was given back


@pytest.mark.parametrize("provider", ["pg", "lob"])
def test_429_is_retried_no_sooner_than_retry_after(env: Env, provider: str) -> None:
    stand_in = env.postgrid if provider == "pg" else env.lob
    stand_in.script.append(Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "30"}))
    mid = env.post_mailing(mailing(provider)).json()["mailing_id"]
    env.work()
    view = env.get_mailing(mid).json()
    assert view["status"] == "queued" and view["http_status"] == 429 and "slow down" in view["last_error"]
    [(due_id, due)] = env.due()
    assert due_id == mid and due >= env.clock() + 30
    env.clock.advance(29)
    assert env.work() == 0 and stand_in.creates == 1
    env.clock.advance(2)
    env.work()
    view = env.get_mailing(mid).json()
    assert view["status"] == "created" and view["attempts"] == 2
    assert len(stand_in.pieces) == 1 and stand_in.violations == []


def test_5xx_is_retried_and_a_retry_after_an_unknown_outcome_looks_for_the_piece_first(env: Env) -> None:
    env.lob.script += [Reply(500, {"error": {"message": "internal"}}), Reply(503, {"error": {"message": "busy"}})]
    mid = env.post_mailing(mailing("lob", "letter")).json()["mailing_id"]
    for _ in range(3):
        env.work()
        env.clock.advance(5)
    view = env.get_mailing(mid).json()
    assert view["status"] == "created" and view["attempts"] == 3
    lookups = [r for r in env.lob.requests if r.method == "GET"]
    assert len(lookups) == 2 and lookups[0].query["metadata[postrelay_mailing]"] == [mid]
    assert len(env.lob.pieces) == 1 and env.lob.violations == []


def test_timeout_after_the_provider_created_the_piece_adopts_that_piece(env: Env) -> None:
    """The provider made the piece but its answer came too late: the next attempt finds it, no second piece."""
    slow = threading.Event()
    env.postgrid.before_answer = lambda piece: None if slow.is_set() else (slow.set(), time.sleep(1.5))
    mid = env.post_mailing(mailing()).json()["mailing_id"]
    env.work()
    view = env.get_mailing(mid).json()
    assert view["status"] == "queued" and "timeout" in view["last_error"]
    env.clock.advance(5)
    env.work()
    view = env.get_mailing(mid).json()
    assert view["status"] == "created" and view["piece_id"] == env.postgrid.pieces[0]["id"]
    assert len(env.postgrid.pieces) == 1 and env.postgrid.creates == 1
    search = [r for r in env.postgrid.requests if r.method == "GET"]
    assert search and search[0].query["search"] == [f'"{mid}"']


def test_retries_end_in_failed_after_max_attempts(make_env: Callable[..., Env]) -> None:
    env = make_env({"delivery": {"max_attempts": 2}})
    env.postgrid.script += [Reply(502, {}), Reply(502, {})]
    mid = env.post_mailing(mailing()).json()["mailing_id"]
    env.work()
    env.clock.advance(5)
    env.work()
    view = env.get_mailing(mid).json()
    assert view["status"] == "failed" and "gave up after 2 attempts" in view["reason"]
    assert env.due() == [] and env.postgrid.pieces == []


def test_daily_cap_holds_across_concurrent_workers(make_env: Callable[..., Env], redis_url: str) -> None:
    env = make_env({"mailings": {"max_per_day": 5}})
    ids = [env.post_mailing(mailing("lob"), key=f"cap-{i}").json()["mailing_id"] for i in range(20)]
    workers = [Runtime(config=env.svc.config, redis=redis.Redis.from_url(redis_url), clock=env.clock) for _ in range(4)]
    start = threading.Barrier(len(workers))

    def run(rt: Runtime) -> None:
        start.wait()
        Creator(rt, batch=1).run_once()

    threads = [threading.Thread(target=run, args=(rt,)) for rt in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    views = [env.get_mailing(mid).json() for mid in ids]
    assert sum(v["status"] == "created" for v in views) == 5
    failed = [v for v in views if v["status"] == "failed"]
    assert len(failed) == 15 and all("max_per_day reached (5 pieces per UTC day)" in v["reason"] for v in failed)
    assert len(env.lob.pieces) == 5 and env.lob.creates == 5
    assert store.used_today(env.redis, env.clock()) == 5
    for rt in workers:
        rt.close()


def test_a_refused_piece_does_not_use_up_the_cap(make_env: Callable[..., Env]) -> None:
    env = make_env({"mailings": {"max_per_day": 1}})
    env.postgrid.script.append(address_error("postgrid"))
    bad = env.post_mailing(mailing(), key="bad").json()["mailing_id"]
    env.work()
    good = env.post_mailing(mailing(), key="good").json()["mailing_id"]
    env.work()
    assert env.get_mailing(bad).json()["status"] == "failed"
    assert env.get_mailing(good).json()["status"] == "created"
