"""`postrelay migrate`: pieces stored in the first layout move to the compact one, interrupted and resumed,
while events keep arriving; the read API answers the same JSON before, during and after."""

from __future__ import annotations

import json

import redis
from starlette.responses import JSONResponse

from postrelay import cli
from postrelay.core import keys
from postrelay.core.events import CanonicalEvent
from postrelay.core.stores import migrate as mig
from postrelay.core.timeline import TimelineWriter, load_piece, seen_types
from postrelay.core.timeline_legacy import LegacyTimelineWriter
from tests.support.corpus import corpus
from tests.workers.conftest import event


def api(r: redis.Redis, pieces) -> dict:
    return {p: JSONResponse(load_piece(r, *p)).body for p in pieces}


def layouts(r: redis.Redis, pieces) -> tuple[int, int]:
    """(pieces in the first layout, pieces in the compact one)."""
    legacy = sum(1 for p in pieces if r.exists(keys.piece_events(*p)))
    return legacy, len(pieces) - legacy


def test_migration_interrupted_resumed_while_events_arrive(redis_client):
    events = corpus()
    pieces = sorted({e.piece_key for e in events})
    LegacyTimelineWriter(redis_client, 86400).apply_many(events)
    redis_client.hset(keys.piece(*pieces[0]), "ix_s", "delivered")  # another feature's field in the piece hash
    before = api(redis_client, pieces)
    ttl_before = {p: redis_client.ttl(keys.piece(*p)) for p in pieces}

    seen: list[int] = []
    first = mig.migrate(redis_client, progress=lambda done, total: seen.append(done), stop=lambda: len(seen) > 6)
    assert first["total"] == len(pieces) and 0 < first["migrated"] < len(pieces) and first["left"] > 0
    assert layouts(redis_client, pieces) == (first["left"], first["migrated"])
    assert api(redis_client, pieces) == before  # readers accept both layouts in between
    assert redis_client.hget(mig.STATUS, "finished") is None

    # events keep arriving: for a piece still in the first layout (the writer moves it) and for a moved one
    legacy_piece = next(p for p in pieces if redis_client.exists(keys.piece_events(*p)))
    moved_piece = next(p for p in pieces if not redis_client.exists(keys.piece_events(*p)))
    writer = TimelineWriter(redis_client, 86400)
    stale = [e for e in events if e.piece_key == legacy_piece][-1]
    assert writer.apply_many([stale])[0].stage is not None  # a duplicate for a first-layout piece: moved, unchanged
    assert not redis_client.exists(keys.piece_events(*legacy_piece))
    assert api(redis_client, [legacy_piece]) == {legacy_piece: before[legacy_piece]}
    template = next(e for e in events if e.piece_key == moved_piece)
    visit = CanonicalEvent.build(source=template.source, source_event_id="late-visit", type="purl_opened",
                                 occurred_at=template.occurred_at, mailpiece=template.mailpiece)
    [applied] = writer.apply_many([visit])
    assert applied.piece_attrs.get("recipient.name") == template.recipient.name  # filters read the piece
    assert visit.id in [e["id"] for e in load_piece(redis_client, *moved_piece)["events"]]
    before[moved_piece] = api(redis_client, [moved_piece])[moved_piece]

    second = mig.migrate(redis_client)
    assert second["left"] == 0 and second["migrated"] == first["left"] - 1
    assert layouts(redis_client, pieces) == (0, len(pieces))
    assert len(redis_client.keys("pr:piece:*")) == len(pieces)  # one hash per piece
    assert api(redis_client, pieces) == before
    assert redis_client.hget(keys.piece(*pieces[0]), "ix_s") == b"delivered"
    for p in pieces:
        assert redis_client.object("encoding", keys.piece(*p)) == b"listpack"
        assert ttl_before[p] - 5 <= redis_client.ttl(keys.piece(*p)) <= ttl_before[p]
    expected_types = {p: {e.type.value for e in [*events, visit] if e.piece_key == p} for p in pieces}
    assert seen_types(redis_client, pieces) == expected_types
    assert redis_client.hget(mig.STATUS, "finished") is not None
    assert mig.migrate(redis_client)["migrated"] == 0  # nothing left: a third run changes nothing


def test_a_piece_that_changes_while_it_is_read_is_read_again(redis_client, monkeypatch):
    legacy = LegacyTimelineWriter(redis_client, 0)
    legacy.apply_many([event("mailed", occurred="2026-11-20T10:00:00+00:00")])
    convert, calls = mig.convert, []

    def racing(*args):
        calls.append(1)
        if len(calls) == 1:  # another worker applies an event between the read and the move
            legacy.apply_many([event("delivered", occurred="2026-11-22T10:00:00+00:00")])
        return convert(*args)

    monkeypatch.setattr(mig, "convert", racing)
    assert mig.migrate_piece(redis_client, "lob", "ltr_1") == 1
    assert len(calls) == 2
    piece = load_piece(redis_client, "lob", "ltr_1")
    assert [e["type"] for e in piece["events"]] == ["mailed", "delivered"] and piece["stage"] == "delivered"
    assert redis_client.ttl(keys.piece("lob", "ltr_1")) == -1  # no retention: none added


def test_migrate_command_shows_progress_and_reports(redis_client, redis_url, tmp_path, capsys):
    LegacyTimelineWriter(redis_client, 3600).apply_many([event("mailed", piece=f"ltr_{i}") for i in range(30)])
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[server]\nredis_url = "{redis_url}"\n', encoding="utf-8")
    assert cli.main(["migrate", "--config", str(cfg)]) == 0
    out = capsys.readouterr()
    assert "migrate [------------------------] 0/30 pieces" in out.err
    assert "migrate [########################] 30/30 pieces" in out.err
    assert out.out.strip() == "migrate: 30 mailpiece(s) moved to the compact layout, 0 left in the first layout"
    assert cli.main(["migrate", "--config", str(cfg), "--json", "--no-progress"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == {"migrated": 0, "total": 0, "left": 0} and out.err == ""


def test_migrate_command_without_redis_says_so_in_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nredis_url = "redis://127.0.0.1:1/0"\nredis_timeout = "1s"\n', encoding="utf-8")
    assert cli.main(["migrate", "--config", str(cfg), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("postrelay: cannot reach Redis") and err.count("\n") == 1 and "Traceback" not in err
