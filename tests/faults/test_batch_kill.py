"""A real SIGKILL of `postrelay worker` between a batch's answer and its done markers: no second activity.

The HubSpot stand-in, on receiving the notes `batch/create`, takes the scripting commands away from the
worker's Redis user (ACL) before it answers: the worker can still store the memo steps (HSET), but its
done-marker scripts are refused, so it is stuck exactly between the answer and the done markers. It is
SIGKILLed there, the ACL is restored, and a fresh worker finishes the batch from its records.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import redis

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent, Mailpiece, Recipient
from postrelay.core.stores import deliveries
from tests.faults.conftest import Report, emit
from tests.support.http_server import LocalHTTPServer, Recorded, Reply
from tests.support.hubspot_standin import HubSpotStandIn
from tests.support.processes import WorkerProcess, wait_for, write_config
from tests.support.redis_server import RedisServer

N = 20


def test_worker_sigkilled_between_batch_answer_and_done_markers_creates_no_second_note(tmp_path: Path) -> None:
    server = RedisServer().start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("ACL", "SETUSER", "admin", "on", ">admin-pass-0123", "~*", "&*", "+@all")
        admin = redis.Redis(host="127.0.0.1", port=server.port, username="admin", password="admin-pass-0123")
        standin = HubSpotStandIn()
        answer = standin._answer

        def stuck_after_answer(req: Recorded) -> Reply:
            if req.path.endswith("/notes/batch/create"):
                admin.execute_command("ACL", "SETUSER", "default", "-@scripting")  # done markers are scripts
            return answer(req)

        standin._answer = stuck_after_answer  # type: ignore[method-assign]
        with LocalHTTPServer(standin) as hubspot:
            evs = _events(N)
            standin.add_contacts([e.recipient.email or "" for e in evs])
            for e in evs:
                admin.xadd(keys.INGEST_STREAM, {"e": e.model_dump_json()})
            config = write_config(tmp_path / "c.toml", {
                "server": {"redis_url": server.url},
                "delivery": {"lease": "2s"},
                "destinations": {"crm": {"type": "hubspot", "token": "pat-na1-0000", "base_url": hubspot.url,
                                         "batch_size": N, "batch_linger": "1s"}},
                "routes": [{"events": ["*"], "to": ["crm"]}]})
            dkeys = [deliveries.delivery_key("crm", e.id) for e in evs]
            first = WorkerProcess(config, tmp_path / "w1.log").start()
            try:
                assert wait_for(lambda: all(admin.exists(keys.delivery_memo(k)) for k in dkeys), 30), first.log()[-3000:]
            finally:
                first.kill()  # SIGKILL: between the notes' answer (memos stored) and the done markers
            assert sum(admin.exists(keys.delivery_done(k)) for k in dkeys) == 0
            assert standin.notes == {e.id: 1 for e in evs}
            admin.execute_command("ACL", "SETUSER", "default", "+@all")
            second = WorkerProcess(config, tmp_path / "w2.log").start()
            try:
                assert wait_for(lambda: all(admin.exists(keys.delivery_done(k)) for k in dkeys), 30), second.log()[-3000:]
            finally:
                second.terminate()
        duplicated = sum(standin.notes.values()) - len(standin.notes)
        emit(Report("batch_sigkill_between_answer_and_done_markers", sent=N, accepted=N,
                    lost=N - len(standin.notes), duplicated=duplicated,
                    extra={"notes_batch_calls": standin.calls["POST /crm/v3/objects/notes/batch/create"]}))
        assert standin.notes == {e.id: 1 for e in evs}  # no second activity for any event
        assert standin.calls["POST /crm/v3/objects/notes/batch/create"] == 1
    finally:
        server.stop(kill=True)


def _events(n: int) -> list[CanonicalEvent]:
    now = datetime.now(UTC)
    return [CanonicalEvent.build(source="lob", source_event_id=f"k_{i}", type="mailed", occurred_at=now,
                                 mailpiece=Mailpiece(id=f"ltr_k{i}", kind="letter"),
                                 recipient=Recipient(name="K", email=f"k{i}@example.com")) for i in range(n)]
