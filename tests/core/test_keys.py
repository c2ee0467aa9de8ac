"""Redis key builders (`postrelay.core.keys`): the ones parsed back agree with the ones built."""

from __future__ import annotations

from postrelay.core import keys


def test_a_piece_key_parses_back_to_its_piece():
    for source, piece_id in (("lob", "ltr_1"), ("generic", "a:b:c"), ("postgrid", "x}y")):
        assert keys.piece_of(keys.piece(source, piece_id)) == (source, piece_id)
        assert keys.piece_of(keys.piece_events(source, piece_id).encode(), keys.PIECE_EVENTS_SUFFIX) == (
            source, piece_id)
    assert keys.piece_keys("lob", "p") == [keys.piece("lob", "p"), keys.piece_timeline("lob", "p"),
                                           keys.piece_events("lob", "p"), keys.piece_types("lob", "p")]
    assert keys.piece_of(keys.piece_events("lob", "p")) is None  # not the piece hash
    assert keys.piece_of(keys.piece("lob", "p"), keys.PIECE_EVENTS_SUFFIX) is None
    for other in ("pr:piece:{lob}", keys.index_state("lob", "p"), keys.INDEX_ALL, "pr:piece:{lob:}"):
        assert keys.piece_of(other) is None, other
