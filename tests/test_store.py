"""The store contract, run identically on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sqlalchemy import text

import labfolio
from labfolio.errors import RunNotFoundError, SchemaTooNewError
from labfolio.settings import resolve_store
from labfolio.store import Batch, open_store
from labfolio.store.migrate import HEAD_REVISION, current_revision, ensure_schema
from labfolio.store.sql import SQLStore


def _start(run_id="r1", **extra):
    return {"type": "start", "run_id": run_id, "experiment": "exp", "variant": "base", "seed": 0,
            "config": {"lr": 0.1}, **extra}


def _points(keys, steps, values, seq0=100):
    return dict(keys=list(keys), steps=list(steps), values=list(values),
                times=[1000.0 + s for s in steps], seqs=[seq0 + i for i in range(len(keys))])


def test_batch_creates_run_points_and_summary(store_url):
    store = open_store(store_url)
    store.write_batch(Batch(run_id="r1", events=[_start()],
                            **_points(["loss", "loss", "acc"], [0, 1, 1], [2.0, 1.0, 0.5])))
    run = store.get_run("r1")
    assert (run.experiment, run.variant, run.seed, run.state) == ("exp", "base", 0, "running")
    assert run.config == {"lr": 0.1}
    assert run.summary["loss"].last == 1.0 and run.summary["loss"].min == 1.0 and run.summary["loss"].max == 2.0
    assert run.summary["loss"].best == 1.0  # loss: lower is better
    assert run.summary["acc"].best == 0.5
    history = store.history("r1")
    assert history["loss"].steps.tolist() == [0, 1]
    assert history["loss"].values.tolist() == [2.0, 1.0]


def test_summary_merges_across_batches(store_url):
    store = open_store(store_url)
    store.write_batch(Batch(run_id="r1", events=[_start()], **_points(["acc"] * 3, [0, 1, 2], [0.1, 0.9, 0.5])))
    store.write_batch(Batch(run_id="r1", **_points(["acc"] * 2, [3, 4], [0.3, 0.4], seq0=200)))
    entry = store.get_run("r1").summary["acc"]
    assert (entry.last, entry.min, entry.max, entry.count, entry.last_step) == (0.4, 0.1, 0.9, 5, 4)


def test_nan_and_inf_are_stored_as_logged_and_counted(store_url):
    store = open_store(store_url)
    store.write_batch(Batch(run_id="r1", events=[_start()],
                            **_points(["loss"] * 4, [0, 1, 2, 3], [1.0, float("nan"), float("inf"), 0.5])))
    values = store.history("r1")["loss"].values
    assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == math.inf and values[3] == 0.5
    entry = store.get_run("r1").summary["loss"]
    assert entry.nonfinite == 2
    assert (entry.min, entry.max) == (0.5, 1.0)  # non-finite values do not poison min/max


def test_stale_journal_position_makes_a_batch_a_no_op(store_url):
    store = open_store(store_url)
    store.write_batch(Batch(run_id="r1", events=[_start()], journal_from=0, journal_to=50,
                            **_points(["x"], [0], [1.0])))
    again = store.write_batch(Batch(run_id="r1", journal_from=0, journal_to=50, **_points(["x"], [0], [1.0])))
    assert not again.applied and again.journal_pos == 50
    assert store.get_run("r1").point_count == 1


def test_unicode_keys_round_trip(store_url):
    store = open_store(store_url)
    store.write_batch(Batch(run_id="r1", events=[_start()], **_points(["損失/訓練", "α_β"], [0, 0], [1.5, 2.5])))
    assert set(store.history("r1")) == {"損失/訓練", "α_β"}


def test_list_runs_filters_by_fields_and_tags(store_url):
    store = open_store(store_url)
    store.write_batch(Batch(run_id="a", events=[_start("a", tags=["x"])]))
    store.write_batch(Batch(run_id="b", events=[_start("b", variant="mhc", tags=["y"])]))
    store.write_batch(Batch(run_id="b", events=[{"type": "finish", "state": "finished"}]))
    assert {r.run_id for r in store.list_runs()} == {"a", "b"}
    assert [r.run_id for r in store.list_runs(variant="mhc")] == ["b"]
    assert [r.run_id for r in store.list_runs(state="running")] == ["a"]
    assert [r.run_id for r in store.list_runs(tag="x")] == ["a"]
    assert [e["name"] for e in store.experiments()] == ["exp"]
    assert store.experiments()[0]["baseline"] == "base"


def test_events_update_config_summary_alerts_notes_and_status(store_url):
    store = open_store(store_url)
    store.write_batch(Batch(run_id="r1", events=[
        _start(hypothesis="mHC helps"),
        {"type": "config", "update": {"epochs": 3}},
        {"type": "summary", "values": {"test/acc": 0.91}},
        {"type": "alert", "kind": "nan", "metric": "loss", "step": 3, "severity": "critical",
         "message": "loss is nan", "value": float("nan")},
        {"type": "status", "status": "invalid", "reason": "eval bug"},
    ]))
    run = store.get_run("r1")
    assert run.config == {"lr": 0.1, "epochs": 3}
    assert run.config_history[0]["update"] == {"epochs": 3}
    assert run.summary["test/acc"].value == 0.91
    assert (run.status, run.status_reason) == ("invalid", "eval bug")
    assert [a.message for a in store.alerts("r1")] == ["loss is nan"]
    assert store.note_fields("experiment", "exp") == {"hypothesis": "mHC helps"}


def test_bulk_reads_return_what_the_per_run_reads_return(store_url, tmp_path):
    store = open_store(store_url)
    artifact = tmp_path / "plot.png"
    artifact.write_bytes(b"\x89PNG not really")
    for index, run_id in enumerate(["r1", "r2", "r3"]):
        events = [_start(run_id, hypothesis=f"h{index}")]
        events += [{"type": "alert", "kind": "rule", "metric": "loss", "step": s, "severity": "warning",
                    "message": f"{run_id} alert {s}"} for s in range(index)]
        store.write_batch(Batch(run_id=run_id, events=events))
    with labfolio.init(store=store_url, run_id="r4", experiment="exp2") as run:
        run.log_artifact(artifact)
    run_ids = ["r1", "r2", "r3", "r4", "missing"]
    bulk_alerts = store.alerts_for_runs(run_ids)
    assert {k: v for k, v in bulk_alerts.items() if v} == {r: store.alerts(r) for r in ("r2", "r3")}
    assert [a.message for a in bulk_alerts["r3"]] == ["r3 alert 0", "r3 alert 1"]
    assert store.alerts_for_runs(None) == bulk_alerts
    bulk_artifacts = store.artifacts_for_runs(run_ids)
    assert bulk_artifacts["r4"] == store.artifacts("r4")
    assert any(a.name == "plot.png" for a in bulk_artifacts["r4"])
    assert store.note_fields_for_scope("experiment")["exp"] == store.note_fields("experiment", "exp")


def test_unknown_run_error_names_the_run_and_suggests_a_command(store_url):
    store = open_store(store_url)
    with pytest.raises(RunNotFoundError, match=r"no run 'missing'.*labfolio runs"):
        store.get_run("missing")


def test_run_prefix_resolves_to_the_unique_match(store_url):
    store = open_store(store_url)
    store.write_batch(Batch(run_id="exp_base_s0_20260101_000000", events=[_start("exp_base_s0_20260101_000000")]))
    assert store.get_run("exp_base_s0").run_id == "exp_base_s0_20260101_000000"


def test_an_older_store_is_migrated_on_open(store_url):
    location = resolve_store(store_url)
    store = SQLStore.__new__(SQLStore)  # create the old schema by hand, as an old labfolio did
    from labfolio.store.sql import _make_engine

    engine = _make_engine(location.url)
    ensure_schema(engine, where="test", target="0001_initial")
    assert current_revision(engine) == "0001_initial"
    engine.dispose()
    del store
    opened = open_store(store_url)
    assert opened.revision_before_open == "0001_initial"
    assert current_revision(opened.engine) == HEAD_REVISION
    opened.write_batch(Batch(run_id="r1", events=[_start(), {"type": "alert", "kind": "k", "message": "m"}]))
    assert len(opened.alerts("r1")) == 1


def test_a_store_from_a_newer_labfolio_is_refused_with_advice(store_url):
    store = open_store(store_url)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    store.close()
    with pytest.raises(SchemaTooNewError, match="newer labfolio.*pip install -U labfolio"):
        open_store(store_url)


def test_history_as_dataframe_and_exports(store_url, tmp_path):
    from labfolio.export import export_run, history_frame

    store = open_store(store_url)
    store.write_batch(Batch(run_id="r1", events=[_start()], **_points(["a", "b", "a"], [0, 0, 1], [1.0, 2.0, 3.0])))
    frame = history_frame(store, "r1")
    assert sorted(frame.columns) == ["key", "step", "time", "value"] and len(frame) == 3
    wide = history_frame(store, "r1", wide=True)
    assert wide.loc[1, "a"] == 3.0
    csv_path = export_run(store, "r1", tmp_path / "r1.csv")
    assert csv_path.read_text().splitlines()[0] == "run_id,key,step,value,time"
    import pandas as pd

    parquet = pd.read_parquet(export_run(store, "r1", tmp_path / "r1.parquet"))
    assert np.allclose(sorted(parquet["value"]), [1.0, 2.0, 3.0])


def test_sdk_logs_into_either_store(store_url):
    with labfolio.init(experiment="e", variant="v", seed=1, store=store_url, config={"n": 1}) as run:
        for step in range(100):
            run.log({"loss": 1 / (step + 1)}, step=step)
    store = open_store(store_url)
    record = store.get_run(run.id)
    assert record.state == "finished" and record.point_count == 100
    assert record.summary["loss"].last == pytest.approx(0.01)


def test_every_chunk_written_gets_its_envelope(store_url):
    from labfolio.store import schema as t
    from labfolio.store.envelope import envelope_indices

    store = open_store(store_url)
    values = np.sin(np.arange(1000) / 30.0)
    values[500] = 9.0
    store.write_batch(Batch(run_id="r1", events=[_start()], **_points(["loss"] * 1000, range(1000), values)))
    with store.engine.connect() as conn:
        row = conn.execute(_select_envelopes(t)).one()
    keep = envelope_indices(values)
    assert (row.points, row.count) == (1000, len(keep))
    assert np.frombuffer(row.values, dtype="<f8").tolist() == values[keep].tolist()
    assert np.frombuffer(row.steps, dtype="<i8").tolist() == keep.tolist()
    assert 9.0 in np.frombuffer(row.values, dtype="<f8")


def _select_envelopes(t):
    from sqlalchemy import select

    return select(t.metric_envelopes).order_by(t.metric_envelopes.c.run_pk, t.metric_envelopes.c.first_seq)


def test_migrating_to_envelopes_gives_existing_chunks_theirs(store_url):
    from sqlalchemy import insert

    from labfolio.store import schema as t
    from labfolio.store.envelope import envelope_rows
    from labfolio.store.sql import _make_engine

    engine = _make_engine(resolve_store(store_url).url)
    ensure_schema(engine, where="test", target="0003_api_tokens")  # a store from before envelopes
    rng = np.random.default_rng(0)
    chunks = []
    for run_pk in (1, 2):
        for first_seq in range(0, 3000, 1000):
            steps = np.arange(first_seq, first_seq + 1000, dtype="<i8")
            chunks.append({"run_pk": run_pk, "key_id": 1, "first_seq": first_seq, "first_step": int(steps[0]),
                           "last_step": int(steps[-1]), "count": 1000, "steps": steps.tobytes(),
                           "values": rng.normal(size=1000).astype("<f8").tobytes(),
                           "times": (steps * 0.5).astype("<f8").tobytes()})
    with engine.begin() as conn:
        conn.execute(insert(t.metric_chunks), chunks)
    engine.dispose()
    opened = open_store(store_url)
    assert opened.revision_before_open == "0003_api_tokens"
    assert current_revision(opened.engine) == HEAD_REVISION
    with opened.engine.connect() as conn:
        got = [dict(r._mapping) for r in conn.execute(_select_envelopes(t))]
    assert [{k: bytes(v) if isinstance(v, (bytes, memoryview)) else v for k, v in r.items()} for r in got] == \
        envelope_rows(chunks)


def test_non_finite_config_values_are_stored_as_strings_whatever_wrote_them(store_url):
    store = open_store(store_url)
    config = {"lr": float("nan"), "clip": [float("inf"), 1.0], "opt": {"eps": float("-inf"), "betas": (0.9, 0.99)}}
    store.write_batch(Batch(run_id="imported", events=[_start("imported", config=config)]))
    store.write_batch(Batch(run_id="imported", events=[{"type": "config", "update": {"wd": float("nan")}}]))
    run = store.get_run("imported")
    assert run.config == {"lr": "nan", "clip": ["inf", 1.0], "opt": {"eps": "-inf", "betas": [0.9, 0.99]},
                          "wd": "nan"}
    assert run.config_history[-1]["update"] == {"wd": "nan"}
    with store.engine.connect() as conn:  # valid JSON to the database itself, not only to Python
        raw = conn.execute(text("SELECT config FROM runs WHERE run_id = 'imported'")).scalar()
        if store.dialect == "postgresql":
            assert conn.execute(text("SELECT CAST(config AS jsonb) ->> 'lr' FROM runs "
                                     "WHERE run_id = 'imported'")).scalar() == "nan"
    assert "NaN" not in raw and "Infinity" not in raw


def test_a_finishing_run_merges_its_small_chunks_and_every_read_returns_the_same_points(store_url):
    from sqlalchemy import func, select

    from labfolio.store import schema as t
    from labfolio.store.compact import TARGET_POINTS
    from labfolio.web.series import read_series

    store = open_store(store_url)
    rng = np.random.default_rng(0)
    values = rng.normal(size=(1500, 2))
    values[1234, 0] = math.nan
    values[777, 0] = 50.0  # a spike
    store.write_batch(Batch(run_id="r1", events=[_start()]))
    position = 0
    for step in range(1500):  # one drain per logged step, as a live run's drainer leaves them
        store.write_batch(Batch(run_id="r1", events=[], **_points(["loss", "acc"], [step, step], values[step],
                                                                   seq0=position)))
        position += 2
    other = open_store(store_url)
    before = other.history("r1")
    charts_before = read_series(other, ["r1"], "loss", envelope=False)

    def rows(table):
        with store.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar()

    assert rows(t.metric_chunks) == rows(t.metric_envelopes) == 3000
    store.write_batch(Batch(run_id="r1", events=[{"type": "finish", "state": "finished"}]))
    # 1,500 points per key in chunks of at most TARGET_POINTS, each with its envelope
    assert rows(t.metric_chunks) == rows(t.metric_envelopes) == 2 * math.ceil(1500 / TARGET_POINTS)
    after = other.history("r1")
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key].steps, before[key].steps)
        np.testing.assert_array_equal(after[key].values, before[key].values)  # the NaN included
        np.testing.assert_array_equal(after[key].times, before[key].times)
    charts_after = read_series(other, ["r1"], "loss", envelope=False)
    np.testing.assert_array_equal(charts_after["r1"][1], charts_before["r1"][1])
    envelope = read_series(other, ["r1"], "loss", envelope=True)["r1"][1]
    assert len(envelope) < 1500 / 8  # the merged chunks' envelopes are small again
    assert np.nanmax(envelope) == np.nanmax(values[:, 0]) and np.isnan(envelope).any()  # spikes and gaps survive
    assert store.compact_points("r1") == 0  # already compact: nothing written
    assert store.get_run("r1").state == "finished"


def test_a_run_marked_crashed_merges_its_chunks_and_a_run_still_running_keeps_them(store_url):
    from sqlalchemy import func, select

    from labfolio.store import schema as t

    store = open_store(store_url)
    for run_id in ("died", "alive"):
        store.write_batch(Batch(run_id=run_id, events=[_start()]))
        for step in range(40):
            store.write_batch(Batch(run_id=run_id, events=[], **_points(["loss"], [step], [float(step)], seq0=step)))

    def chunks(run_id):
        with store.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(t.metric_chunks).join(
                t.runs, t.runs.c.pk == t.metric_chunks.c.run_pk).where(t.runs.c.run_id == run_id)).scalar()

    # what `labfolio sync` writes for a run whose process died
    store.write_batch(Batch(run_id="died", events=[{"type": "state", "state": "crashed",
                                                    "exit_reason": "no heartbeat for more than 120 s"}]))
    store.write_batch(Batch(run_id="alive", events=[{"type": "state", "state": "running"}]))
    assert (chunks("died"), chunks("alive")) == (1, 40)
    history = store.history("died")["loss"]
    assert history.steps.tolist() == list(range(40)) and history.values.tolist() == [float(s) for s in range(40)]
    assert store.get_run("died").state == "crashed"
