"""Follow-up actions: business-day timing, cancellation, "no event" rules, estimates, exactly-once."""

from __future__ import annotations

from datetime import UTC, datetime

from postrelay.core.stores import followups as fu_store
from postrelay.workers import followups
from postrelay.workers.followups import FollowupHandler, Scheduler
from tests.support.http_server import LocalHTTPServer, Reply
from tests.workers.conftest import dispatch, drain, event, push


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def config(url: str, *rules: dict) -> dict:
    return {
        "destinations": {"mailer": {"type": "sendgrid", "api_key": "SG.test-key-0123456789", "template_id": "d-1",
                                    "from_email": "hello@example.com", "base_url": url}},
        "followups": list(rules),
    }


ARRIVAL = {"name": "email-on-arrival", "after": "processed_for_delivery", "delay": "2 business days",
           "unless": ["returned_to_sender", "re_routed", "purl_completed"], "do": "mailer"}
SECOND_TOUCH = {"name": "second-touch", "after": "delivered", "unless": ["purl_opened"], "delay": "14 days",
                "do": "mailer"}


def run(rt, handler_rt=None) -> int:
    d = dispatch(rt, handlers=[FollowupHandler(handler_rt or rt)])
    assert d is not None
    fired = Scheduler(rt).run_once()
    drain(rt)
    return fired


def test_fires_two_business_days_after_pfd_skipping_thanksgiving(make_runtime, clock):
    with LocalHTTPServer(lambda r: Reply(202)) as sg:
        rt = make_runtime(config(sg.url, ARRIVAL))
        clock.now = _ts("2026-11-25T15:00:00+00:00")
        # Wednesday before Thanksgiving (Thu 26 Nov 2026): Fri 27 is day 1, Mon 30 is day 2
        push(rt, event("processed_for_delivery", occurred="2026-11-25T14:00:00+00:00"))
        assert run(rt) == 0
        [pending] = fu_store.pending(rt.redis)
        assert pending["due"] == "2026-11-30T14:00:00+00:00" and pending["estimated"] is False
        clock.now = _ts("2026-11-30T13:59:58+00:00")
        assert Scheduler(rt).run_once() == 0
        clock.now = _ts("2026-11-30T14:00:01+00:00")
        assert run(rt) == 1
        assert len(sg.requests) == 1
        data = sg.requests[0].json()["personalizations"][0]["dynamic_template_data"]
        assert data["followup"] == "email-on-arrival" and data["estimated"] is False and data["late"] is False
        clock.now += 86400
        assert run(rt) == 0 and len(sg.requests) == 1
        assert fu_store.pending(rt.redis) == []


def test_a_later_event_cancels(make_runtime, clock):
    with LocalHTTPServer() as sg:
        rt = make_runtime(config(sg.url, ARRIVAL))
        clock.now = _ts("2026-11-02T12:00:00+00:00")
        push(rt, event("processed_for_delivery", occurred="2026-11-02T10:00:00+00:00"))
        run(rt)
        assert len(fu_store.pending(rt.redis)) == 1
        push(rt, event("returned_to_sender", occurred="2026-11-03T10:00:00+00:00"))
        run(rt)
        assert fu_store.pending(rt.redis) == []
        clock.now += 30 * 86400
        push(rt, event("processed_for_delivery", sid="another-scan", occurred="2026-11-04T10:00:00+00:00"))
        assert run(rt) == 0  # a repeated trigger after the cancelling event does not schedule again
        assert sg.requests == []


def test_no_event_rule_fires_only_without_the_event(make_runtime, clock):
    with LocalHTTPServer() as sg:
        rt = make_runtime(config(sg.url, SECOND_TOUCH))
        clock.now = _ts("2026-11-02T12:00:00+00:00")
        push(rt, event("delivered", piece="never-opened", occurred="2026-11-02T10:00:00+00:00"),
             event("delivered", piece="opened-later", occurred="2026-11-02T10:00:00+00:00"),
             event("purl_opened", piece="opened-before", occurred="2026-11-01T10:00:00+00:00"),
             event("delivered", piece="opened-before", occurred="2026-11-02T10:00:00+00:00"))
        run(rt)
        assert sorted(p["mailpiece"] for p in fu_store.pending(rt.redis)) == ["never-opened", "opened-later"]
        push(rt, event("purl_opened", piece="opened-later", occurred="2026-11-10T10:00:00+00:00"))
        run(rt)
        clock.now = _ts("2026-11-16T10:00:01+00:00")
        assert run(rt) == 1
        assert len(sg.requests) == 1
        personal = sg.requests[0].json()["personalizations"][0]["dynamic_template_data"]
        assert personal["mailpiece"]["id"] == "never-opened"


def test_duplicate_triggers_schedule_and_fire_once(make_runtime, clock):
    with LocalHTTPServer() as sg:
        rt = make_runtime(config(sg.url, ARRIVAL))
        clock.now = _ts("2026-11-02T12:00:00+00:00")
        e = event("processed_for_delivery", occurred="2026-11-02T10:00:00+00:00")
        other_scan = event("processed_for_delivery", sid="second-provider-event", occurred="2026-11-02T11:00:00+00:00")
        push(rt, e, e, other_scan)
        run(rt)
        push(rt, e)
        run(rt)
        assert len(fu_store.pending(rt.redis)) == 1
        clock.now += 10 * 86400
        assert run(rt) == 1
        push(rt, other_scan)
        assert run(rt) == 0  # fired once: it never schedules again for this piece
        clock.now += 10 * 86400
        assert run(rt) == 0
        assert len(sg.requests) == 1


def test_canadian_piece_is_estimated_from_mailed(make_runtime, clock):
    with LocalHTTPServer() as sg:
        rt = make_runtime(config(sg.url, ARRIVAL))
        clock.now = _ts("2026-06-26T12:00:00+00:00")
        # mailed Fri 26 Jun 2026; CA transit 4 business days skips Canada Day (Wed 1 Jul): Jun 29, 30, Jul 2, 3
        push(rt, event("mailed", piece="ca-1", country="CA", occurred="2026-06-26T09:00:00+00:00"))
        run(rt)
        [pending] = fu_store.pending(rt.redis)
        # then the rule's own 2 business days: Mon 6, Tue 7 Jul
        assert pending["estimated"] is True and pending["due"] == "2026-07-07T09:00:00+00:00"
        clock.now = _ts("2026-07-07T09:00:05+00:00")
        assert run(rt) == 1
        data = sg.requests[0].json()["personalizations"][0]["dynamic_template_data"]
        assert data["estimated"] is True


def test_us_piece_is_not_estimated_from_mailed(make_runtime, clock):
    with LocalHTTPServer() as sg:
        rt = make_runtime(config(sg.url, ARRIVAL))
        push(rt, event("mailed", piece="us-1", country="US"))
        run(rt)
        assert fu_store.pending(rt.redis) == []


def test_overdue_at_start_fires_once_marked_late(make_runtime, clock):
    with LocalHTTPServer() as sg:
        rt = make_runtime(config(sg.url, ARRIVAL))
        clock.now = _ts("2026-11-02T12:00:00+00:00")
        push(rt, event("processed_for_delivery", occurred="2026-11-02T10:00:00+00:00"))
        run(rt)
        clock.now = _ts("2026-11-09T12:00:00+00:00")  # everything was down for a week
        fresh = make_runtime(config(sg.url, ARRIVAL))  # a new process's runtime
        assert Scheduler(fresh).run_once() == 1
        assert Scheduler(fresh).run_once() == 0
        drain(fresh)
        data = sg.requests[0].json()["personalizations"][0]["dynamic_template_data"]
        assert data["late"] is True and len(sg.requests) == 1


def test_where_filter_and_cancel_command(make_runtime, clock):
    with LocalHTTPServer() as sg:
        rule = {**ARRIVAL, "where": {"metadata.segment": "vip"}}
        rt = make_runtime(config(sg.url, rule))
        clock.now = _ts("2026-11-20T12:00:00+00:00")
        push(rt, event("processed_for_delivery", piece="vip", metadata={"segment": "vip"}),
             event("processed_for_delivery", piece="regular", metadata={"segment": "std"}))
        run(rt)
        [pending] = fu_store.pending(rt.redis, mailpiece="vip")
        assert fu_store.pending(rt.redis, mailpiece="regular") == []
        assert fu_store.cancel(rt.redis, pending["id"]) is True
        assert fu_store.cancel(rt.redis, pending["id"]) is False
        clock.now += 30 * 86400
        assert run(rt) == 0 and sg.requests == []


def test_failed_action_goes_through_retries(make_runtime, clock):
    from postrelay.core.stores import dlq
    from tests.support.http_server import Reply

    with LocalHTTPServer(lambda r: Reply(400, {"errors": [{"message": "bad template"}]})) as sg:
        rt = make_runtime(config(sg.url, ARRIVAL))
        push(rt, event("processed_for_delivery"))
        run(rt)
        clock.now = _ts("2026-12-31T00:00:00+00:00")
        assert run(rt) == 1
        [entry] = dlq.entries(rt.redis)
        assert entry["destination"] == "mailer" and entry["extra"]["followup"] == "email-on-arrival"
        assert "SG.test-key-0123456789" not in str(entry)


def test_due_time_uses_rule_calendar(make_runtime):
    rule = {**ARRIVAL, "calendar": "CA"}
    rt = make_runtime(config("http://127.0.0.1:9", rule))
    e = event("processed_for_delivery", occurred="2026-10-09T10:00:00+00:00")  # Fri before CA Thanksgiving
    due = followups.due_time(rt.config.followups[0], e, e.occurred_at)
    assert due == datetime(2026, 10, 14, 10, tzinfo=UTC)  # Mon 12 Oct is a holiday in Canada only


def test_the_scheduler_sleeps_until_the_next_follow_up_is_due(make_runtime, clock):
    with LocalHTTPServer(lambda r: Reply(202)) as sg:
        rt = make_runtime(config(sg.url, ARRIVAL))
        sched = Scheduler(rt)
        assert sched.tick() == 1.0  # nothing pending: poll again in a second
        clock.now = _ts("2026-11-25T15:00:00+00:00")
        push(rt, event("processed_for_delivery", occurred="2026-11-25T14:00:00+00:00"))
        dispatch(rt, handlers=[FollowupHandler(rt)])
        clock.now = _ts("2026-11-30T13:59:59.75+00:00")
        assert 0.2 < sched.tick() <= 0.25  # due at 14:00:00: wake up right then, not up to 1 s later
        clock.now = _ts("2026-11-30T14:00:00.01+00:00")
        assert sched.tick() == 1.0  # fired; nothing else pending
        drain(rt)
        assert len(sg.requests) == 1
