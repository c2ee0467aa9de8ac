"""A worker SIGKILLed between the provider's answer and the local record: still one piece, found again.

Real processes: `postrelay serve` and `postrelay worker`. The provider stand-in stores the piece, stops the
worker (SIGSTOP, then waits until every one of its threads is stopped) before writing its answer, writes the
whole answer into the worker's socket, and only then is the worker SIGKILLed: the piece exists at the
provider, the answer was sent, postrelay never recorded it. A new worker claims the mailing again once the
lease expired and must adopt that piece, not mail another.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from postrelay.core import keys
from postrelay.core.stores import mailings as store
from tests.mailings.conftest import TRIGGER_TOKEN, mailing_config
from tests.mailings.test_triggers import HUBSPOT_TRIGGER, hubspot_workflow
from tests.receiver.harness import API_TOKEN
from tests.support.http_server import Reply
from tests.support.processes import ReceiverProcess, WorkerProcess, stop_group, wait_for, write_config
from tests.support.providers import LobStandIn, PostGridStandIn, StandIn


def _stop_then_kill(stand_in: StandIn, worker: WorkerProcess, killed: threading.Event) -> None:
    """`before_answer`: SIGSTOP the worker, and SIGKILL it once this answer is fully written."""
    answered = stand_in.server.answered
    pid = worker.pid
    assert pid is not None
    stop_group(pid)  # every thread stopped before the answer is written

    def kill_after_answer() -> None:
        wait_for(lambda: stand_in.server.answered > answered, 10, 0.005)
        os.killpg(pid, signal.SIGKILL)
        killed.set()

    threading.Thread(target=kill_after_answer, daemon=True).start()


@pytest.mark.parametrize(("provider", "search_works"), [("pg", True), ("lob", True), ("lob", False)])
def test_worker_killed_after_the_provider_answered_leaves_one_piece_found_again(
        redis_url: str, tmp_path: Path, postgrid: PostGridStandIn, lob: LobStandIn, provider: str,
        search_works: bool) -> None:
    stand_in: StandIn = postgrid if provider == "pg" else lob
    trigger = {**HUBSPOT_TRIGGER, "provider": provider}
    # a loaded CI machine must not turn a loopback call into a timeout: with 3 s (four test processes, load 6) the
    # first call once timed out before the stand-in answered and the retry found the piece before the kill; the
    # lease (9 s, longer than an attempt may take) is what the recovery waits for after the kill
    data: dict[str, Any] = mailing_config(redis_url, postgrid.url, lob.url, {
        "triggers": [trigger], "delivery": {"timeout": "8s", "lease": "9s"}})
    config = write_config(tmp_path / "postrelay.toml", data)
    receiver = ReceiverProcess(config, tmp_path / "receiver.log").start()
    worker = WorkerProcess(config, tmp_path / "worker.log")
    killed = threading.Event()
    stand_in.before_answer = lambda piece: None if killed.is_set() else _stop_then_kill(stand_in, worker, killed)
    if not search_works:  # the provider's list endpoint finds nothing: only its Idempotency-Key protects us
        original = stand_in.handle
        stand_in.server.handler = lambda req: (original(req) if req.method == "POST" else
                                               Reply(200, {"object": "list", "data": [], "count": 0}))
    worker.start()
    try:
        resp = httpx.post(f"{receiver.url}/v1/triggers/hubspot-winback", json=hubspot_workflow(),
                          headers={"Authorization": f"Bearer {TRIGGER_TOKEN}"}, timeout=10)
        assert resp.status_code == 202, resp.text
        mid = resp.json()["mailing_id"]
        assert killed.wait(30), f"the worker never created the piece: {worker.log()[-2000:]}"
        assert len(stand_in.pieces) == 1
        view = httpx.get(f"{receiver.url}/v1/mailings/{mid}", headers={"Authorization": f"Bearer {API_TOKEN}"}).json()
        assert view["status"] == "queued" and view["piece_id"] is None  # the answer never made it into Redis
        worker.proc = None  # already SIGKILLed by the stand-in
        started = time.monotonic()
        worker.start()

        def created() -> bool:
            got = httpx.get(f"{receiver.url}/v1/mailings/{mid}", headers={"Authorization": f"Bearer {API_TOKEN}"})
            return got.json()["status"] == "created"

        assert wait_for(created, 60, 0.1), f"not recovered: {worker.log()[-3000:]}"
        recovery = time.monotonic() - started
    finally:
        worker.terminate()
        receiver.terminate()
    final = store.get(redis.Redis.from_url(redis_url), mid)
    assert final is not None
    assert final["piece_id"] == stand_in.pieces[0]["id"]
    assert final["attempts"] >= 2  # 2 unless the machine was so loaded that a call timed out
    assert len(stand_in.pieces) == 1 and stand_in.violations == []
    posts = [r for r in stand_in.requests if r.method == "POST"]
    assert {r.headers["idempotency-key"] for r in posts} == {mid}
    # with search the new worker finds the piece and posts nothing; without, it posts again (more than once only if
    # a loaded machine timed a call out) and the same Idempotency-Key makes the provider answer with the same piece
    assert len(posts) == 1 if search_works else len(posts) >= 2
    print(f"sigkill {provider} search={search_works}: pieces={len(stand_in.pieces)} posts={len(posts)} "
          f"recovered in {recovery:.1f} s")


def test_worker_killed_between_minting_the_link_and_creating_the_piece_leaves_one_link(
        redis_url: str, tmp_path: Path, postgrid: PostGridStandIn, lob: LobStandIn) -> None:
    """The link is minted and recorded with the mailing; the worker dies while its create call is in flight
    (before the provider made anything). The next worker prints the same link on the one piece it creates."""
    from tests.receiver.links_support import LINKS

    trigger = {**HUBSPOT_TRIGGER, "link": {"target_url": "https://shop.example.com/winback/{objectId}"}}
    data: dict[str, Any] = mailing_config(redis_url, postgrid.url, lob.url, {
        "triggers": [trigger], "links": LINKS, "delivery": {"timeout": "8s", "lease": "9s"}})
    config = write_config(tmp_path / "postrelay.toml", data)
    receiver = ReceiverProcess(config, tmp_path / "receiver.log").start()
    worker = WorkerProcess(config, tmp_path / "worker.log")
    killed = threading.Event()
    original = postgrid.handle

    def kill_on_first_create(req: Any) -> Reply:
        if req.method == "POST" and not killed.is_set():
            assert worker.pid is not None
            os.killpg(worker.pid, signal.SIGKILL)  # minted and recorded; the piece was never created
            killed.set()
            return Reply(503, {"error": {"message": "gone"}})
        return original(req)

    postgrid.server.handler = kill_on_first_create
    client = redis.Redis.from_url(redis_url)
    worker.start()
    try:
        resp = httpx.post(f"{receiver.url}/v1/triggers/hubspot-winback", json=hubspot_workflow(),
                          headers={"Authorization": f"Bearer {TRIGGER_TOKEN}"}, timeout=10)
        assert resp.status_code == 202, resp.text
        mid = resp.json()["mailing_id"]
        assert killed.wait(30), f"the worker never tried to create the piece: {worker.log()[-2000:]}"
        minted = store.get(client, mid)
        assert minted is not None and minted["status"] == "queued" and minted["link"] is not None
        assert postgrid.pieces == []
        worker.proc = None
        worker.start()
        assert wait_for(lambda: (store.get(client, mid) or {}).get("status") == "created", 30, 0.1), \
            worker.log()[-3000:]
    finally:
        worker.terminate()
        receiver.terminate()
    final = store.get(client, mid)
    assert final is not None and final["link"] == minted["link"]
    [piece] = postgrid.pieces
    assert piece["mergeVariables"]["purl"] == minted["link"]["url"] and final["piece_id"] == piece["id"]
    head, _, tail = keys.link("\0").partition("\0")
    tokens = [k for k in client.scan_iter(match=head + "*") if k.decode().endswith(tail)]
    assert tokens == [keys.link(minted["link"]["token"]).encode()]  # one link, bound to the one piece
    record = json.loads(client.get(tokens[0]))
    assert (record["piece_source"], record["piece_id"], record["mailing"]) == ("postgrid", piece["id"], mid)
