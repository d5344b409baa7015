"""The local runner on `command:` specs: config delivery, resume, GPU pinning, CPU bounds, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import labfolio
from labfolio.runner import RunOptions, _slots, cpu_count, run_spec
from labfolio.spec import load_spec


def toy_spec(write_spec, body: str = "", seeds: str = "[0]", variants: str = "  a: {}\n  b: {lr: 0.2}\n",
             steps: int = 4):
    text = (f"experiment: toy\ncommand: python {{toy}}\nbase: {{steps: {steps}, lr: 0.1{body}}}\n"
            f"variants:\n{variants}seeds: {seeds}\n")
    return write_spec(text)


def run(path, **options):
    options.setdefault("gpus", [])
    options.setdefault("notebook", False)
    return run_spec(load_spec(path), RunOptions(**options))


def test_command_gets_the_config_as_a_json_file_and_as_flags_and_its_labels_from_env(write_spec):
    report = run(toy_spec(write_spec))
    assert report.ok and report.count("finished") == 2
    record = labfolio.open_store().get_run(next(t.run_id for t in report.tasks if t.planned.variant == "b"))
    assert (record.experiment, record.variant, record.seed) == ("toy", "b", 0)
    assert json.loads(record.summary["file_config"].value) == {"steps": 4, "lr": 0.2}
    assert record.config["flags"] == {"steps": "4", "lr": "0.2"}
    assert record.config["lr"] == 0.2  # $LABFOLIO_CONFIG is also merged into the run's config by init()
    assert len(labfolio.open_store().history(record.run_id)["train/loss"].steps) == 4


def test_each_run_records_its_wall_time_in_the_runner_and_the_part_outside_its_own_span(write_spec):
    report = run(toy_spec(write_spec))
    for task in report.tasks:
        record = labfolio.open_store().get_run(task.run_id)
        wall, outside = record.summary["runner/wall_s"].value, record.summary["runner/outside_run_s"].value
        span = record.ended_at - record.started_at
        assert wall == pytest.approx(task.ended_at - task.launched_at, abs=0.01)
        assert 0 < span <= wall and outside == pytest.approx(wall - span, abs=0.02)
        assert outside > 0.05  # a new Python process importing labfolio takes a while before init()


def test_resume_skips_finished_runs_and_reruns_when_the_config_changed(write_spec):
    path = toy_spec(write_spec)
    first = run(path)
    assert first.count("finished") == 2
    again = run(path)
    assert [t.state for t in again.tasks] == ["skipped", "skipped"]
    assert {t.run_id for t in again.tasks} == {t.run_id for t in first.tasks}
    assert len(labfolio.open_store().list_runs(experiment="toy")) == 2  # nothing was started
    path.write_text(path.read_text().replace("b: {lr: 0.2}", "b: {lr: 0.3}"))
    changed = run(path)
    states = {t.planned.variant: (t.state, t.reason) for t in changed.tasks}
    assert states["a"][0] == "skipped"
    assert states["b"][0] == "finished" and states["b"][1].startswith("config changed since toy_b_s0_")
    assert states["b"][1].endswith("(lr)")


def test_a_changed_config_names_three_keys_and_counts_the_rest(write_spec):
    path = toy_spec(write_spec, body=", w: 1, x: 2, y: 3, z: 4", variants="  a: {}\n")
    run(path)
    path.write_text(path.read_text().replace("a: {}", "a: {w: 5, x: 6, y: 7, z: 8, lr: 0.5}"))
    (task,) = run(path, dry_run=True).tasks
    assert task.reason.startswith("config changed since toy_a_s0_")
    assert task.reason.endswith(" and 2 more)")


def test_crashed_runs_are_skipped_until_retry_failed(write_spec):
    path = toy_spec(write_spec, variants="  a: {}\n  b: {fail_at: 2}\n")
    first = run(path)
    assert {t.planned.variant: t.state for t in first.tasks} == {"a": "finished", "b": "failed"}
    failed = next(t for t in first.tasks if t.planned.variant == "b")
    assert "deliberate failure at step 2" in failed.output_tail
    assert len(labfolio.open_store().history(failed.run_id)["train/loss"].steps) == 2  # its points are kept
    second = run(path)
    assert [t.state for t in second.tasks] == ["skipped", "skipped"]
    assert "--retry-failed" in second.tasks[1].reason
    third = run(path, retry_failed=True)
    assert [t.state for t in third.tasks] == ["skipped", "failed"]


def test_two_fake_gpus_get_one_run_each_and_are_never_shared(write_spec):
    path = toy_spec(write_spec, body=", sleep: 0.5", seeds="[0, 1]")
    report = run(path, gpus=["0", "1"])
    assert report.count("finished") == 4
    store = labfolio.open_store()
    spans = []
    for task in report.tasks:
        summary = store.get_run(task.run_id).summary
        assert summary["gpu"].value == task.slot
        spans.append((summary["gpu"].value, summary["started_wall"].value, summary["ended_wall"].value))
    assert {gpu for gpu, _, _ in spans} == {"0", "1"}
    for i, (gpu, start, end) in enumerate(spans):
        for other_gpu, other_start, other_end in spans[i + 1:]:
            if start < other_end and other_start < end:  # ran at the same time
                assert gpu != other_gpu
    assert all(store.get_run(t.run_id).summary["threads"].value == "" for t in report.tasks)


def test_cpu_parallelism_is_bounded_by_the_cores_and_splits_threads():
    warnings: list[str] = []
    slots, threads = _slots(RunOptions(gpus=[], parallel=cpu_count() + 5), 50, warnings)
    assert len(slots) == cpu_count() and threads == 1
    assert warnings and "CPU core(s)" in warnings[0]
    slots, threads = _slots(RunOptions(gpus=[], parallel=1), 50, [])
    assert len(slots) == 1 and threads == cpu_count()
    slots, _ = _slots(RunOptions(gpus=["3", "5", "7"], parallel=2), 50, [])
    assert slots == ["3", "5"]


def test_runs_per_gpu_shares_each_gpu_round_robin_and_caps_parallelism():
    slots, threads = _slots(RunOptions(gpus=["0"], runs_per_gpu=4), 50, [])
    assert slots == ["0", "0", "0", "0"] and threads is None
    slots, _ = _slots(RunOptions(gpus=["0", "1"], runs_per_gpu=2, parallel=2), 50, [])
    assert slots == ["0", "1"]  # two runs on two GPUs use both, not one GPU twice
    warnings: list[str] = []
    slots, _ = _slots(RunOptions(gpus=["0", "1"], runs_per_gpu=2, parallel=9), 50, warnings)
    assert slots == ["0", "1", "0", "1"]
    assert warnings and "--runs-per-gpu" in warnings[0]


def test_a_rerun_appends_to_the_run_log_and_keeps_the_earlier_output(write_spec):
    path = toy_spec(write_spec, variants="  a: {}\n")
    first = run(path)
    log_path = first.tasks[0].log_path
    before = log_path.read_text()
    second = run(path, rerun=True)
    assert second.tasks[0].log_path == log_path and second.tasks[0].run_id != first.tasks[0].run_id
    after = log_path.read_text()
    assert after.startswith(before) and after.count("==== labfolio run: a seed 0, started") == 2


def test_cpu_children_get_a_share_of_the_cores_as_threads(write_spec, monkeypatch):
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    report = run(toy_spec(write_spec), parallel=1)
    store = labfolio.open_store()
    assert {store.get_run(t.run_id).summary["threads"].value for t in report.tasks} == {str(cpu_count())}


def _runner(path, tmp_path, *args):
    env = {**os.environ, "LABFOLIO_PLAIN": "1"}
    return subprocess.Popen([sys.executable, "-m", "labfolio.cli", "run", str(path), "--gpus", "none",
                             "--no-notebook", *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for_points(experiment: str, variants: set[str], minimum: int, timeout: float = 60.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        store = labfolio.open_store(recover=False)
        seen = {r.variant: r.point_count for r in store.list_runs(experiment=experiment)}
        store.close()
        if set(seen) >= variants and all(seen[v] >= minimum for v in variants):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"runs did not log {minimum} points within {timeout} s: {seen}")


@pytest.mark.slow
def test_ctrl_c_marks_every_child_killed_and_keeps_its_points(write_spec, tmp_path):
    # 'stubborn' ignores SIGINT and SIGTERM: only the runner's last resort, SIGKILL, stops it,
    # and its points must still be drained from its journal.
    path = toy_spec(write_spec, body=", sleep: 0.02", steps=10000,
                    variants="  polite: {}\n  stubborn: {stubborn: true}\n")
    runner = _runner(path, tmp_path, "--kill-after", "1")
    seen = _wait_for_points("toy", {"polite", "stubborn"}, minimum=10)
    os.killpg(runner.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the foreground group
    output, _ = runner.communicate(timeout=60)
    assert runner.returncode == 130, output
    assert "Interrupted: stopping 2 run(s)" in output
    store = labfolio.open_store()
    runs = {r.variant: r for r in store.list_runs(experiment="toy")}
    assert {v: r.state for v, r in runs.items()} == {"polite": "killed", "stubborn": "killed"}, output
    assert runs["polite"].exit_reason.startswith("KeyboardInterrupt")  # it stopped itself on SIGINT
    assert "stopped by labfolio run" in runs["stubborn"].exit_reason
    for variant, record in runs.items():
        history = store.history(record.run_id)["train/loss"]
        assert len(history.steps) >= seen[variant] // 2  # two keys per step
        assert list(history.steps) == list(range(len(history.steps)))  # every step up to the kill


def test_cli_dry_run_prints_the_plan_and_starts_nothing(write_spec, tmp_path):
    from typer.testing import CliRunner

    from labfolio.cli import app

    path = toy_spec(write_spec)
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run", "--gpus", "none"])
    assert result.exit_code == 0, result.output
    assert "toy (command " in result.output and "2 run(s): 2 to run, 0 skipped" in result.output
    assert "Plan (dry run: nothing started)" in result.output and "--lr=0.2" in result.output
    assert labfolio.open_store().list_runs(experiment="toy") == []


def test_cli_reports_a_bad_spec_as_one_line(write_spec):
    from typer.testing import CliRunner

    from labfolio.cli import app

    path = write_spec("experiment: e\ncommand: python x.py\nvariants: {a: {}}\nseedz: [1]\n")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 1
    assert f"{path}:4: seedz: unknown spec key 'seedz' (did you mean 'seeds'?)" in " ".join(result.output.split())


def test_spec_rules_reach_the_childs_live_checks_and_alert_once(write_spec):
    path = write_spec("experiment: toy\ncommand: python {toy}\nbase: {steps: 40, lr: 0.1}\n"
                      "variants:\n  a: {}\n  b: {lr: 0.2}\nseeds: [0]\n"
                      "rules:\n  - {metric: score, good: '< 0.5', bad: '> 0.9', note: toy rule}\n")
    report = run(path)
    assert report.count("finished") == 2
    store = labfolio.open_store()
    for task in report.tasks:
        rule_alerts = [a for a in store.alerts(task.run_id) if a.kind == "rule" and a.metric == "score"]
        assert len(rule_alerts) == 1, rule_alerts
        assert "> 0.9" in rule_alerts[0].message


def test_bad_labfolio_rules_json_warns_and_keeps_the_project_rules(monkeypatch):
    from labfolio.live_rules import env_rules as _env_rules

    monkeypatch.setenv("LABFOLIO_RULES", "{not json")
    with pytest.warns(RuntimeWarning, match="ignoring \\$LABFOLIO_RULES"):
        assert _env_rules() == []
    monkeypatch.setenv("LABFOLIO_RULES", '[{"metric": "grad_norm", "bad": "> 50"}]')
    assert [(rule.metric, rule.bad) for rule in _env_rules()] == [("grad_norm", "> 50")]


def test_demo_without_torch_says_which_extra_to_install(monkeypatch):
    import importlib.util

    from typer.testing import CliRunner

    from labfolio.cli import app

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "torch" else real_find_spec(name, *a, **k))
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 1 and "pip install 'labfolio[kit]'" in result.output


def test_a_killed_run_that_left_a_checkpoint_is_resumed_and_one_without_is_rerun(write_spec):
    from labfolio.settings import resolve_store
    from labfolio.store import Batch

    path = toy_spec(write_spec)
    first = run(path)
    store = labfolio.open_store()
    ids = {t.planned.variant: t.run_id for t in first.tasks}
    for run_id in ids.values():
        store.write_batch(Batch(run_id=run_id, events=[{"type": "finish", "state": "killed"}]))
    checkpoint = resolve_store(None).checkpoint_dir / f"{ids['b']}.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"a recipe's checkpoint")
    plan = {t.planned.variant: t for t in run(path, dry_run=True).tasks}
    assert plan["a"].resume_run_id is None and plan["a"].reason == "rerun (killed earlier)"
    assert plan["b"].resume_run_id == plan["b"].run_id == ids["b"]
    assert plan["b"].reason == f"resume {ids['b']} from its checkpoint (killed at step 3)"
    # --rerun starts over even where a checkpoint is left
    assert all(t.resume_run_id is None for t in run(path, dry_run=True, rerun=True).tasks)


def test_checkpoint_resume_and_profile_keys_do_not_make_a_finished_run_look_changed(write_spec):
    # recorded, as a recipe records its defaults
    path = toy_spec(write_spec, body=", checkpoint_every: 0, profile_steps: 0")
    first = run(path)
    path.write_text(path.read_text().replace("checkpoint_every: 0, profile_steps: 0",
                                             "checkpoint_every: 5, profile_steps: 20"))
    again = run(path)
    assert [t.state for t in again.tasks] == ["skipped", "skipped"]
    assert {t.run_id for t in again.tasks} == {t.run_id for t in first.tasks}


def test_the_finished_line_gives_each_runs_speed_so_it_outlives_a_lost_store(write_spec, capsys):
    report = run(toy_spec(write_spec))
    out = capsys.readouterr().out
    for task in report.tasks:
        assert task.steps_per_s and task.steps_per_s > 0
        line = next(text for text in out.splitlines() if f"{task.label} finished in" in text)
        assert f" · {task.steps_per_s:.3g} steps/s · run {task.run_id}" in line


def test_the_specs_metrics_are_recorded_for_the_notes_and_follow_the_spec(write_spec):
    from labfolio.notebook.results import HEADLINE_METRICS_FIELD

    path = toy_spec(write_spec)
    text = path.read_text()
    path.write_text(text.replace("seeds:", "metrics: [train/loss, lr]\nseeds:"))
    run(path, dry_run=False)
    notes = labfolio.open_store().note_fields("experiment", "toy")
    assert notes[HEADLINE_METRICS_FIELD] == "train/loss\nlr"
    path.write_text(text)  # the list removed from the spec: the notes go back to their own choice
    run(path)
    assert labfolio.open_store().note_fields("experiment", "toy")[HEADLINE_METRICS_FIELD] == ""


def test_a_second_ctrl_c_during_the_notebook_refresh_skips_only_the_refresh(write_spec, tmp_path, monkeypatch):
    import labfolio.notebook

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(labfolio.notebook, "write_vault", interrupted)
    report = run(toy_spec(write_spec), notebook=True, notebook_dir=tmp_path / "notebook")
    assert report.ok and report.vault is None
    assert any("refresh was interrupted" in w and "labfolio notes" in w for w in report.warnings)
    runs = labfolio.open_store().list_runs(experiment="toy")
    assert sorted(r.state for r in runs) == ["finished", "finished"]


def test_the_shared_checkpoint_folder_reaches_every_child_so_a_ray_node_sees_it(monkeypatch):
    from labfolio.runner import child_env
    from labfolio.spec import parse_spec

    spec = parse_spec("experiment: toy\ncommand: python x.py\nvariants:\n  a: {}\nseeds: [0]\n")
    planned = spec.plan()[0]
    monkeypatch.delenv("LABFOLIO_CHECKPOINT_DIR", raising=False)
    assert "LABFOLIO_CHECKPOINT_DIR" not in child_env(spec, planned, gpu=None, threads=None, store=None)
    monkeypatch.setenv("LABFOLIO_CHECKPOINT_DIR", "/mnt/shared/ckpt")
    env = child_env(spec, planned, gpu=None, threads=None, store=None)
    assert env["LABFOLIO_CHECKPOINT_DIR"] == "/mnt/shared/ckpt"


def test_runs_that_share_a_device_record_the_steps_per_second_they_made_in_all(write_spec):
    # two runs of ~10 steps/s each on the CPU at once, for ~13 s: together about 20, which
    # neither run's own steps/s says
    path = toy_spec(write_spec, body=", sleep: 0.1", steps=130)
    report = run(path, parallel=2, poll_interval=0.2)
    assert report.ok
    if cpu_count() < 2:  # the runner never starts more runs than cores on CPU: nothing was shared
        assert report.shared_speed == []
        return
    (line,) = report.shared_speed
    assert line.startswith("the CPU: 2 runs at once made ")
    for task in report.tasks:
        summary = labfolio.open_store().get_run(task.run_id).summary
        assert summary["runner/runs_at_once"].value == 2
        assert 12.0 < summary["runner/steps_per_s_in_all"].value < 21.0


def test_runs_that_overlap_too_briefly_report_no_shared_speed(write_spec):
    # 2-second runs: their overlap is shorter than the stretch a shared speed needs
    report = run(toy_spec(write_spec, body=", sleep: 0.1", steps=20), parallel=2, poll_interval=0.2)
    assert report.ok and report.shared_speed == []
    for task in report.tasks:
        assert "runner/runs_at_once" not in labfolio.open_store().get_run(task.run_id).summary
