"""The SDK: init, log, config, summary, artifacts, lifecycle, bad input and failing stores."""

from __future__ import annotations

import argparse
import enum
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import labfolio
from labfolio.errors import ConfigError, MetricKeyError, MetricValueError, NoActiveRunError
from labfolio.store import open_store


def test_module_level_calls_before_init_say_to_call_init_first():
    with pytest.raises(NoActiveRunError, match=r"call labfolio\.init\(\) first"):
        labfolio.log({"x": 1})
    with pytest.raises(NoActiveRunError, match=r"init\(\) first"):
        labfolio.config["lr"]
    with pytest.raises(NoActiveRunError):
        labfolio.summary["x"] = 1
    with pytest.raises(NoActiveRunError):
        labfolio.finish()


def test_run_id_follows_the_default_template_and_is_unique():
    first = labfolio.init(experiment="cifar10_004", variant="mhc", seed=3)
    first.finish()
    second = labfolio.init(experiment="cifar10_004", variant="mhc", seed=3)
    second.finish()
    assert re.fullmatch(r"cifar10_004_mhc_s3_\d{8}_\d{6}(_2)?", first.id)
    assert first.id != second.id


def test_run_id_template_is_configurable():
    run = labfolio.init(experiment="e", seed=None, run_id_template="{experiment}-{date}")
    run.finish()
    assert re.fullmatch(r"e-\d{8}", run.id)


class Color(enum.Enum):
    RED = "red"


@dataclass
class Inner:
    width: int = 64
    path: Path = Path("/data/x")


@dataclass
class TrainConfig:
    lr: float = 1e-3
    inner: Inner = field(default_factory=Inner)
    color: Color = Color.RED
    scale: np.float32 = np.float32(0.5)


def test_config_from_dataclasses_namespaces_and_dicts_is_stored_faithfully():
    with labfolio.init(experiment="e", config=TrainConfig()) as run:
        assert run.config.inner == {"width": 64, "path": "/data/x"}
        assert run.config["color"] == "red"
    stored = open_store().get_run(run.id).config
    assert stored == {"lr": 1e-3, "inner": {"width": 64, "path": "/data/x"}, "color": "red", "scale": 0.5}
    with labfolio.init(experiment="e", config=argparse.Namespace(a=1, b=[1, 2])) as run2:
        pass
    assert open_store().get_run(run2.id).config == {"a": 1, "b": [1, 2]}


def test_unusual_config_values_are_stored_as_repr_with_one_warning():
    class Opaque:
        def __repr__(self):
            return "Opaque()"

    with pytest.warns(UserWarning, match="repr") as caught:
        run = labfolio.init(config={"thing": Opaque(), "other": Opaque()})
    assert len([w for w in caught if "repr" in str(w.message)]) == 1
    run.finish()
    assert open_store().get_run(run.id).config == {"thing": "Opaque()", "other": "Opaque()"}


def test_config_updates_are_recorded_with_history():
    with labfolio.init(config={"lr": 0.1}) as run:
        run.config.update({"epochs": 5})
        run.config.batch_size = 128
        labfolio.config["warmup"] = 2
    record = open_store().get_run(run.id)
    assert record.config == {"lr": 0.1, "epochs": 5, "batch_size": 128, "warmup": 2}
    assert [h["update"] for h in record.config_history] == [{"epochs": 5}, {"batch_size": 128}, {"warmup": 2}]


def test_steps_default_to_previous_plus_one():
    with labfolio.init() as run:
        run.log({"a": 1.0})
        run.log({"a": 2.0})
        run.log({"a": 3.0}, step=10)
        run.log({"a": 4.0})
    assert open_store().history(run.id)["a"].steps.tolist() == [0, 1, 10, 11]


def test_a_step_going_backwards_warns_once_and_keeps_the_points():
    with labfolio.init() as run:
        run.log({"a": 1.0}, step=5)
        with pytest.warns(RuntimeWarning, match="step went backwards") as caught:
            run.log({"a": 2.0}, step=3)
            run.log({"a": 3.0}, step=1)
        assert len(caught) == 1
    assert open_store().history(run.id)["a"].values.tolist() == [3.0, 2.0, 1.0]  # step order


def test_values_that_are_not_numbers_raise_naming_the_key():
    with labfolio.init() as run:
        with pytest.raises(MetricValueError, match="'note'.*str"):
            run.log({"ok": 1.0, "note": "hello"})
        with pytest.raises(MetricValueError, match="'missing'"):
            run.log({"missing": None})
        with pytest.raises(MetricValueError, match="'vec'.*3 elements"):
            run.log({"vec": np.zeros(3)})
        run.log({"ok": 2.0})
    assert open_store().history(run.id)["ok"].values.tolist() == [2.0]


def test_numpy_and_torch_scalars_are_accepted():
    torch = pytest.importorskip("torch")
    with labfolio.init() as run:
        run.log({"np32": np.float32(0.25), "np0d": np.array(1.5), "t": torch.tensor(2.5),
                 "t_int": torch.tensor(3), "bool": True})
    history = open_store().history(run.id)
    assert {k: h.values.tolist() for k, h in history.items()} == {
        "np32": [0.25], "np0d": [1.5], "t": [2.5], "t_int": [3.0], "bool": [1.0]}


def test_keys_over_256_characters_are_refused_and_unicode_works():
    with labfolio.init() as run:
        with pytest.raises(MetricKeyError, match="limit is 256"):
            run.log({"k" * 257: 1.0})
        run.log({"精度/テスト": 0.5, "k" * 256: 1.0})
    assert "精度/テスト" in open_store().history(run.id)


def test_nan_is_stored_flagged_and_alerted_once():
    seen = []
    with labfolio.init(on_alert=seen.append) as run:
        for step, value in enumerate([1.0, float("nan"), float("nan"), 0.5]):
            run.log({"loss": value}, step=step)
    store = open_store()
    assert store.get_run(run.id).summary["loss"].nonfinite == 2
    alerts = store.alerts(run.id)
    assert [(a.kind, a.step) for a in alerts] == [("nan", 1)]
    assert len(seen) == 1 and seen[0]["metric"] == "loss"


def test_summary_tracks_last_min_max_best_and_overrides():
    with labfolio.init(batch_size=32, tokens_per_step=4096) as run:
        for step, (loss, acc) in enumerate([(3.0, 0.1), (1.0, 0.8), (2.0, 0.7)]):
            run.log({"train/loss": loss, "test/acc": acc}, step=step)
        assert run.summary["train/loss"] == 2.0
        run.summary["test/acc"] = 0.99
        assert run.summary["test/acc"] == 0.99
    record = open_store().get_run(run.id)
    loss = record.summary["train/loss"]
    assert (loss.last, loss.min, loss.max, loss.best) == (2.0, 1.0, 3.0, 1.0)
    assert record.summary["test/acc"].best == 0.8 and record.summary["test/acc"].value == 0.99
    assert set(record.throughput) == {"steps_per_s", "samples_per_s", "tokens_per_s"}
    assert record.throughput["samples_per_s"] == pytest.approx(record.throughput["steps_per_s"] * 32)


def test_artifacts_are_content_addressed_and_large_files_can_be_references(tmp_path):
    plot = tmp_path / "curve.png"
    plot.write_bytes(b"\x89PNG fake image bytes")
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(os.urandom(1000))
    with labfolio.init() as run:
        image = run.log_artifact(plot)
        copy_again = run.log_artifact(plot, name="again.png")
        ref = run.log_artifact(checkpoint, reference=True)
    assert image["kind"] == "image" and image["path"] == copy_again["path"]
    arts = {a.name: a for a in open_store().artifacts(run.id)}
    assert Path(arts["curve.png"].path).read_bytes() == plot.read_bytes()
    assert arts["model.pt"].is_reference and arts["model.pt"].path == str(checkpoint.resolve())
    assert arts["model.pt"].kind == "checkpoint" and arts["model.pt"].size == 1000
    with pytest.raises(ConfigError, match="no such file"):
        labfolio.init().log_artifact(tmp_path / "nope.png")


def test_provenance_and_entry_script_are_captured_at_init():
    with labfolio.init() as run:
        pass
    record = open_store().get_run(run.id)
    assert set(record.provenance) >= {"git", "machine", "python", "invocation", "env"}
    assert record.host
    kinds = {a.kind for a in open_store().artifacts(run.id)}
    assert "packages" in kinds


def test_machine_nickname_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LABFOLIO_MACHINE", "gpu-a")
    with labfolio.init() as run:
        pass
    record = open_store().get_run(run.id)
    assert record.machine == "gpu-a" and record.host and record.host != "gpu-a" or record.host


def test_an_exception_inside_the_context_marks_the_run_failed():
    with pytest.raises(ZeroDivisionError):
        with labfolio.init() as run:
            run.log({"a": 1.0})
            1 / 0
    record = open_store().get_run(run.id)
    assert record.state == "failed" and "ZeroDivisionError" in record.exit_reason
    assert record.point_count == 1


def test_evaluation_runs_point_at_the_run_they_score():
    with labfolio.init(experiment="e", variant="v") as trained:
        trained.log({"loss": 1.0})
    with labfolio.init(experiment="e", variant="v", evaluates=trained.id) as evaluation:
        evaluation.log({"eval/acc": 0.9})
    record = open_store().get_run(evaluation.id)
    assert record.evaluates == trained.id and record.is_evaluation


def test_non_zero_ranks_are_no_ops_unless_asked(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    run = labfolio.init(experiment="ddp")
    assert isinstance(run, labfolio.DisabledRun)
    run.log({"a": 1.0})
    run.finish()
    loud = labfolio.init(experiment="ddp", log_all_ranks=True)
    loud.finish()
    assert loud.id.endswith("_rank1")
    assert [r.run_id for r in open_store().list_runs()] == [loud.id]


def test_disabled_mode_writes_nothing(tmp_path):
    run = labfolio.init(mode="disabled", config={"a": 1})
    run.log({"x": 1.0})
    assert run.config.a == 1
    run.finish()
    assert not (tmp_path / "lf").exists()


def test_offline_runs_wait_in_the_journal_until_sync():
    run = labfolio.init(mode="offline", experiment="off")
    for step in range(50):
        run.log({"a": float(step)}, step=step)
    run.finish(quiet=True)
    assert open_store().list_runs() == []  # opening the store does not push offline runs
    from labfolio.drain import sync_journals
    from labfolio.settings import resolve_store

    location = resolve_store()
    report = sync_journals(open_store(location, recover=False), location)
    assert report.drained_runs == [run.id] and report.points == 50
    assert open_store().get_run(run.id).state == "finished"


def test_an_unwritable_store_warns_once_keeps_logging_and_sync_recovers(tmp_path, monkeypatch):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the store folder should be")
    bad_url = f"sqlite:///{blocker}/sub/labfolio.db"
    monkeypatch.setenv("LABFOLIO_FINISH_TIMEOUT", "1")
    import labfolio.run as run_module

    monkeypatch.setattr(run_module, "FINAL_DRAIN_TIMEOUT_S", 1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = labfolio.init(store=bad_url, dir=tmp_path / "home")
        for step in range(200):
            run.log({"loss": 1.0 / (step + 1)}, step=step)
        run.flush(timeout=0.5)
        run.flush(timeout=0.5)
        run.finish(quiet=True)
    store_warnings = [w for w in caught if "cannot write run" in str(w.message)]
    assert len(store_warnings) == 1
    assert "labfolio sync" in str(store_warnings[0].message)
    assert run.journal_folder.exists()
    blocker.unlink()  # the store comes back
    from labfolio.drain import sync_journals
    from labfolio.settings import resolve_store

    location = resolve_store(bad_url, home=tmp_path / "home")
    report = sync_journals(open_store(location, recover=False), location)
    assert report.points == 200
    record = open_store(location).get_run(run.id)
    assert record.state == "finished" and record.point_count == 200


def _run_script(tmp_path, body: str):
    import subprocess
    import sys
    import textwrap

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                          env=os.environ.copy(), timeout=120)


def test_a_script_that_exits_without_finish_is_recorded_finished(tmp_path):
    out = _run_script(tmp_path, """
        import labfolio
        run = labfolio.init(experiment="exit")
        run.log({"a": 1.0})
        print(run.id)
    """)
    assert out.returncode == 0, out.stderr
    assert open_store().get_run(out.stdout.strip()).state == "finished"


def test_an_uncaught_exception_marks_the_run_failed_with_the_reason(tmp_path):
    out = _run_script(tmp_path, """
        import labfolio
        run = labfolio.init(experiment="boom")
        print(run.id, flush=True)
        run.log({"a": 1.0})
        raise RuntimeError("diverged at step 12")
    """)
    assert out.returncode == 1 and "diverged at step 12" in out.stderr  # the traceback still shows
    record = open_store().get_run(out.stdout.strip())
    assert record.state == "failed" and record.exit_reason == "RuntimeError: diverged at step 12"
    assert record.point_count == 1


def test_an_offline_finish_says_only_where_the_run_waits(capsys):
    with labfolio.init(mode="offline", experiment="off") as run:
        run.log({"a": 1.0}, step=0)
    printed = capsys.readouterr().err
    assert f"run {run.id} was logged offline to" in printed and "labfolio sync" in printed
    assert "could not be fully written" not in printed
