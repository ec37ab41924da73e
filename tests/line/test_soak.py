"""The issue's "done when", scaled down: photos written by 4 writers while `winclip watch` (a subprocess) is
SIGKILLed at random moments and restarted and the broker is stopped for a while: every photo has exactly one
results row, one record row and one message id (copies only as QoS 1 allows), in order, and none was scored
partial. benchmarks/line_soak.py runs the full size (200 photos, 5 kills, 30 s)."""

from __future__ import annotations

import pytest

pytest.importorskip("paho.mqtt", reason="the line tests need the 'line' extra: pip install \"winclip-anomaly[line]\"")

from helpers.soak import first_copies, soak


@pytest.mark.slow
def test_every_photo_is_finished_exactly_once_across_kills_and_a_broker_outage(tmp_path):
    r = soak(tmp_path, photos=40, writers=4, kills=2, outage_s=3.0, kill_window_s=1.5, write_span_s=15.0, seed=1)
    print(r.table())
    assert len(r.written) == 40 and r.starts == 3
    assert sum(r.recovered) >= 1  # a kill left a photo half done, and the restart finished or redid it
    assert sorted(row["rel"] for row in r.result_rows) == sorted(r.written)  # one row each
    assert sorted(f for f, _ in r.record_rows) == sorted(r.written)  # one record row each
    assert all(r.written[f] == sha for f, sha in r.record_rows)  # the complete bytes were scored, never a partial
    ids = {m["message_id"] for m in r.messages}
    assert len(ids) == 40 and ids == set(r.finished_order)
    by_id: dict[str, set[str]] = {}
    for m in r.messages:
        by_id.setdefault(m["message_id"], set()).add(m["rel"])
    assert all(len(rels) == 1 for rels in by_id.values())  # a copy carries the same id as its original
    assert first_copies(r.messages) == r.finished_order  # in the order the photos were finished
    assert r.done_files == sorted(r.written) and r.left_in == [] and r.failed_files == []
