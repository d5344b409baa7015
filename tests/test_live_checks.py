"""Live vigilance in the SDK: rules and detectors run in the background writer while training."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

import labfolio
from labfolio.store import open_store
from labfolio.store.sql import SQLStore


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _exploding_grad_norms(n: int = 400, spike_at: int = 300) -> np.ndarray:
    rng = np.random.default_rng(0)
    norms = 3.0 + rng.random(n)
    norms[spike_at:] = 950.0  # the study's "grad norm goes to about 950" after values under 7
    return norms


def test_a_grad_norm_explosion_is_alerted_while_the_run_is_still_training(capsys):
    seen = []
    run = labfolio.init(experiment="live", variant="a", on_alert=seen.append)
    for step, value in enumerate(_exploding_grad_norms()):
        run.log({"grad_norm": float(value), "train/loss": 1.0 / (1 + step)}, step=step)
    # the callback fires from the background writer before finish(), so a script can stop early
    assert _wait_for(lambda: any(e["metric"] == "grad_norm" for e in seen)), seen
    assert run.state == "running"
    run.finish()
    grad_alerts = [a for a in open_store().alerts(run.id) if a.metric == "grad_norm"]
    assert grad_alerts and grad_alerts[0].kind in ("grad_spike", "divergence")
    assert grad_alerts[0].step == 300
    assert "950" in grad_alerts[0].message  # the message quotes the evidence
    printed = capsys.readouterr().err
    assert printed.count(f"labfolio alert [{grad_alerts[0].severity}] {run.id}: {grad_alerts[0].message}") == 1


def test_an_lr_that_never_decays_is_reported_as_a_schedule_mismatch_at_finish():
    config = {"schedule": "cosine", "lr": 1e-3, "total_steps": 200}
    with labfolio.init(experiment="live", variant="sched", config=config) as run:
        for step in range(200):
            run.log({"lr": 1e-3, "train/loss": 2.0 - step / 200}, step=step)
    kinds = {a.kind for a in open_store().alerts(run.id)}
    assert "schedule_mismatch" in kinds, kinds


def test_a_run_killed_before_its_lr_could_decay_is_not_told_it_never_decreased():
    # the length in steps is unknown (epochs only), so only a whole run can show a missing decay
    config = {"schedule": "cosine_warmup", "lr": 3e-3, "epochs": 3}
    with pytest.raises(KeyboardInterrupt):
        with labfolio.init(experiment="live", variant="killed", config=config) as run:
            for step in range(10):
                run.log({"lr": 3e-3 * min(1.0, (step + 1) / 3), "train/loss": 2.0}, step=step)
            raise KeyboardInterrupt
    assert run.state == "killed"
    assert [a.kind for a in open_store().alerts(run.id)] == []
    with labfolio.init(experiment="live", variant="finished", config=config) as run:
        for step in range(10):
            run.log({"lr": 3e-3 * min(1.0, (step + 1) / 3), "train/loss": 2.0}, step=step)
    assert "schedule_mismatch" in {a.kind for a in open_store().alerts(run.id)}


def test_a_healthy_run_raises_no_alert():
    rng = np.random.default_rng(1)
    with labfolio.init(experiment="live", variant="ok", config={"schedule": "constant", "lr": 0.1}) as run:
        for step in range(500):
            loss = 2.0 * np.exp(-step / 100) + 0.05 * rng.random()
            run.log({"train/loss": float(loss), "grad_norm": float(1 + 0.2 * rng.random()), "lr": 0.1},
                    step=step)
    assert open_store().alerts(run.id) == []


def test_vigilance_off_still_flags_nan_once():
    with labfolio.init(vigilance=False) as run:
        for step, value in enumerate([1.0, float("nan"), float("nan")]):
            run.log({"loss": value}, step=step)
    assert [(a.kind, a.step) for a in open_store().alerts(run.id)] == [("nan", 1)]


def test_a_failing_check_warns_once_and_never_stops_logging(monkeypatch):
    from labfolio.analysis import LiveMonitor

    def broken(self, key, steps, values):
        raise ZeroDivisionError("a bug in a detector")

    monkeypatch.setattr(LiveMonitor, "feed", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with labfolio.init() as run:
            for step in range(100):
                run.log({"train/loss": 1.0}, step=step)
                if step == 50:
                    run.flush()
    stopped = [w for w in caught if "live checks stopped" in str(w.message)]
    assert len(stopped) == 1
    assert open_store().get_run(run.id).point_count == 100


def test_an_alert_found_during_a_failed_write_reaches_the_store_on_the_retry(monkeypatch):
    real_write = SQLStore.write_batch
    failures = {"left": 1}

    def flaky_write(self, batch):
        if failures["left"] and any(e.get("type") == "alert" for e in batch.events):
            failures["left"] -= 1
            raise OSError("disk I/O error")
        return real_write(self, batch)

    monkeypatch.setattr(SQLStore, "write_batch", flaky_write)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with labfolio.init() as run:
            for step, value in enumerate([1.0, 0.9, float("inf"), 0.8]):
                run.log({"train/loss": value}, step=step)
    assert failures["left"] == 0  # the write carrying the alert did fail once
    alerts = open_store().alerts(run.id)
    assert [(a.kind, a.metric, a.step) for a in alerts] == [("nan", "train/loss", 2)]
    assert open_store().get_run(run.id).point_count == 4


def test_project_rules_from_rules_yaml_drive_the_live_checks(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    (project / ".labfolio").mkdir(parents=True)
    (project / ".labfolio" / "rules.yaml").write_text(
        "rules:\n  - metric: gate_mean\n    good: 0.3-0.7\n    bad: '>= 0.95'\n", encoding="utf-8")
    monkeypatch.chdir(project)
    with labfolio.init(dir=project / ".labfolio") as run:
        for step in range(64):
            run.log({"gate_mean": 0.99}, step=step)
    alerts = open_store(project / ".labfolio").alerts(run.id)
    assert any(a.kind == "rule" and a.metric == "gate_mean" for a in alerts), alerts


@pytest.mark.parametrize("rules", [()])
def test_explicit_empty_rules_turn_rule_alerts_off(rules, tmp_path, monkeypatch):
    with labfolio.init(rules=rules) as run:
        for step in range(64):
            run.log({"stream_similarity": 0.9}, step=step)  # bad by the built-in mHC pack
    assert not [a for a in open_store().alerts(run.id) if a.kind == "rule"]


def test_an_offline_runs_alerts_reach_the_store_with_its_points_on_sync():
    from labfolio.drain import sync_journals
    from labfolio.settings import resolve_store

    with labfolio.init(mode="offline", experiment="live", variant="off") as run:
        for step, value in enumerate(_exploding_grad_norms()):
            run.log({"grad_norm": float(value)}, step=step)
    assert open_store().list_runs() == []  # nothing is written while offline
    location = resolve_store()
    sync_journals(open_store(location, recover=False), location)
    alerts = [a for a in open_store().alerts(run.id) if a.metric == "grad_norm"]
    assert alerts and alerts[0].step == 300
    assert open_store().get_run(run.id).point_count == 400


def test_a_broken_rules_file_warns_and_the_run_keeps_the_built_in_rules(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    (project / ".labfolio").mkdir(parents=True)
    (project / ".labfolio" / "rules.yaml").write_text("rules: [unclosed\n", encoding="utf-8")
    monkeypatch.chdir(project)
    with pytest.warns(RuntimeWarning, match="built-in rules"):
        run = labfolio.init(dir=project / ".labfolio")
    for step in range(64):
        run.log({"stream_similarity": 0.9}, step=step)
    run.finish()
    assert any(a.kind == "rule" for a in open_store(project / ".labfolio").alerts(run.id))
