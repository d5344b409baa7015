from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labfolio import journal as jr
from labfolio.journal import JournalReader, JournalWriter, journal_is_orphaned

keys_strategy = st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=6, unique=True)
finite_or_not = st.floats(allow_nan=True, allow_infinity=True, width=64)
step_strategy = st.integers(min_value=-(2**62), max_value=2**62)


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_journal_encoding_round_trips_points_and_events(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("j") / "run"
    writer = JournalWriter(folder)
    expected_points = []
    expected_events = []
    for _ in range(data.draw(st.integers(1, 8))):
        keys = tuple(data.draw(keys_strategy))
        encoder = writer.define_shape(keys)
        for _ in range(data.draw(st.integers(0, 5))):
            step = data.draw(step_strategy)
            when = data.draw(st.floats(0, 4e9))
            values = [data.draw(finite_or_not) for _ in keys]
            writer.append_points(encoder, step, when, values)
            expected_points.extend((k, step, v, when) for k, v in zip(keys, values))
        if data.draw(st.booleans()):
            event = {"type": "summary", "values": {data.draw(st.text(max_size=10)): data.draw(st.integers())}}
            writer.append_event(event)
            expected_events.append(event)
    records = JournalReader(folder).read()
    got = list(zip(records.keys, records.steps.tolist(), records.values.tolist(), records.times.tolist()))
    assert len(got) == len(expected_points)
    for (k1, s1, v1, t1), (k2, s2, v2, t2) in zip(got, expected_points):
        assert (k1, s1, t1) == (k2, s2, t2) and _same_float(v1, v2)
    assert records.events == expected_events
    writer.close()


def test_reader_resumes_from_a_position_and_replays_shapes(tmp_path):
    writer = JournalWriter(tmp_path / "run")
    enc = writer.define_shape(("a", "b"))
    writer.append_points(enc, 0, 1.0, (1.0, 2.0))
    first = JournalReader(tmp_path / "run").read()
    writer.append_points(enc, 1, 2.0, (3.0, 4.0))
    fresh_reader = JournalReader(tmp_path / "run")  # as after a restart: no shapes known yet
    rest = fresh_reader.read(first.end)
    assert rest.keys == ["a", "b"] and rest.values.tolist() == [3.0, 4.0] and rest.steps.tolist() == [1, 1]
    writer.close()


def test_segments_roll_over_without_losing_records(tmp_path, monkeypatch):
    monkeypatch.setattr(jr, "SEGMENT_BYTES", 4096)
    writer = JournalWriter(tmp_path / "run")
    enc = writer.define_shape(("loss",))
    for step in range(1000):
        writer.append_points(enc, step, float(step), (step * 0.5,))
    assert writer.segment > 5
    records = JournalReader(tmp_path / "run").read()
    assert records.steps.tolist() == list(range(1000))
    assert records.values.tolist() == [s * 0.5 for s in range(1000)]
    writer.close()


def test_a_record_without_its_length_is_not_read(tmp_path):
    """A writer killed mid-copy leaves a record whose length was never set: it is invisible."""
    writer = JournalWriter(tmp_path / "run")
    enc = writer.define_shape(("x",))
    writer.append_points(enc, 0, 0.0, (1.0,))
    off = writer.offset
    enc.packer.pack_into(writer._mm, off, 0, jr.TAG_POINTS, enc.shape_id, 1, 1.0, 2.0)  # no length
    assert JournalReader(tmp_path / "run").read().values.tolist() == [1.0]
    writer.close()


def test_a_journal_is_orphaned_only_after_its_writer_closes(tmp_path):
    writer = JournalWriter(tmp_path / "run")
    assert not journal_is_orphaned(tmp_path / "run")
    writer.close()
    assert journal_is_orphaned(tmp_path / "run")


def test_two_writers_cannot_share_a_journal(tmp_path):
    writer = JournalWriter(tmp_path / "run")
    from labfolio.errors import JournalError

    with pytest.raises(JournalError, match="in use by another live process"):
        JournalWriter(tmp_path / "run")
    writer.close()


def test_a_journal_stays_readable_after_its_first_segments_are_drained_and_deleted(tmp_path, monkeypatch):
    """Points name their keys by shape id; every segment repeats the shapes, so recovery (a fresh
    reader) can start at the oldest segment left."""
    monkeypatch.setattr(jr, "SEGMENT_BYTES", 4096)
    writer = JournalWriter(tmp_path / "run")
    loss, pair = writer.define_shape(("loss",)), writer.define_shape(("a", "b"))
    for step in range(300):
        writer.append_points(loss, step, 0.0, (1.0,))
        writer.append_points(pair, step, 0.0, (2.0, 3.0))
    live = JournalReader(tmp_path / "run")
    drained = live.read(max_points=400)
    live.delete_segments_before(drained.end)
    assert not (tmp_path / "run" / "seg-000000.lfj").exists()
    rest = JournalReader(tmp_path / "run").read(drained.end)
    assert drained.point_count + rest.point_count == 900
    assert rest.steps.tolist()[-3:] == [299, 299, 299]
    writer.close()


def test_a_segment_created_but_not_yet_stamped_reads_as_the_end(tmp_path):
    writer = JournalWriter(tmp_path / "run")
    enc = writer.define_shape(("x",))
    writer.append_points(enc, 0, 0.0, (1.0,))
    jr.LENGTH.pack_into(writer._mm, writer.offset, jr.NEXT_SEGMENT)  # as a writer moving on does
    (tmp_path / "run" / "seg-000001.lfj").write_bytes(bytes(4096))  # sized, header not yet written
    assert JournalReader(tmp_path / "run").read().values.tolist() == [1.0]
    writer.close()


def test_a_copy_of_a_live_journal_is_a_prefix_cut_at_its_first_gap(tmp_path):
    """Bytes are copied front to back while the writer appends: a record can be missing (read before
    it was written) with later ones present. The copy keeps what came before the gap, only."""
    writer = JournalWriter(tmp_path / "run")
    enc = writer.define_shape(("x",))
    writer.append_points(enc, 0, 0.0, (1.0,))
    off = writer.offset
    enc.packer.pack_into(writer._mm, off + enc.size, enc.size, jr.TAG_POINTS, enc.shape_id, 2, 0.0, 3.0)
    (tmp_path / "run" / "seg-000001.lfj").write_bytes((tmp_path / "run" / "seg-000000.lfj").read_bytes())
    assert jr.copy_journal(tmp_path / "run", tmp_path / "copy") == 1
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["seg-000000.lfj"]
    data = (tmp_path / "copy" / "seg-000000.lfj").read_bytes()
    assert not any(data[off:]) and len(data) == jr.SEGMENT_BYTES
    assert JournalReader(tmp_path / "copy").read().values.tolist() == [1.0]
    writer.close()


def test_a_copy_follows_the_writer_into_its_next_segment(tmp_path, monkeypatch):
    monkeypatch.setattr(jr, "SEGMENT_BYTES", 4096)
    writer = JournalWriter(tmp_path / "run")
    enc = writer.define_shape(("x",))
    for step in range(250):
        writer.append_points(enc, step, 0.0, (float(step),))
    assert writer.segment >= 2
    assert jr.copy_journal(tmp_path / "run", tmp_path / "copy") == writer.segment + 1
    assert JournalReader(tmp_path / "copy").read().steps.tolist() == list(range(250))
    writer.close()
