"""`labfolio run a.yaml b.yaml`: several specs from one pool, in lineage order, one notebook refresh."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import labfolio
from labfolio.errors import ConfigError
from labfolio.runner import RunOptions
from labfolio.runner_pool import lineage_order, run_specs
from labfolio.spec import load_spec, parse_spec


def _spec(write_spec, name, previous=None, variants="  a: {}\n  b: {lr: 0.2}\n"):
    text = (f"experiment: {name}\n" + (f"previous: {previous}\n" if previous else "")
            + "command: python {toy}\nbase: {steps: 4, lr: 0.1}\nmetrics: [score]\n"
            + f"variants:\n{variants}seeds: [0]\n")
    return write_spec(text, name=f"{name}.yaml")


def test_specs_run_after_the_spec_their_previous_names_and_unrelated_ones_keep_their_place():
    def spec(name, previous=None):
        return parse_spec(f"experiment: {name}\n" + (f"previous: {previous}\n" if previous else "")
                          + "command: python x.py\nvariants:\n  a: {}\nseeds: [0]\n")

    ordered = lineage_order([spec("e004", "e003"), spec("gpt"), spec("e003", "e002")])
    assert [s.experiment for s in ordered] == ["gpt", "e003", "e004"]
    with pytest.raises(ConfigError, match="more than one spec"):
        lineage_order([spec("e003"), spec("e003")])


def test_two_specs_share_one_pool_in_lineage_order_and_the_notebook_is_written_once(write_spec, tmp_path,
                                                                                   monkeypatch):
    import labfolio.notebook

    writes = []
    real = labfolio.notebook.write_vault

    def counted(*args, **kwargs):
        writes.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(labfolio.notebook, "write_vault", counted)
    later = load_spec(_spec(write_spec, "toy_002", previous="toy_001"))
    first = load_spec(_spec(write_spec, "toy_001"))
    reports = run_specs([later, first], RunOptions(gpus=[], parallel=1, notebook_dir=tmp_path / "notebook"))
    assert [r.spec.experiment for r in reports] == ["toy_001", "toy_002"]
    assert all(r.ok for r in reports)
    assert not any("is not in the store" in w for r in reports for w in r.warnings)  # its previous ran first
    assert [t.label for r in reports for t in r.tasks] == ["toy_001/a/s0", "toy_001/b/s0", "toy_002/a/s0",
                                                           "toy_002/b/s0"]
    store = labfolio.open_store()
    runs = sorted(store.list_runs(), key=lambda r: r.started_at)
    assert [(r.experiment, r.variant) for r in runs] == [("toy_001", "a"), ("toy_001", "b"), ("toy_002", "a"),
                                                         ("toy_002", "b")]  # one slot: strictly in that order
    assert len(writes) == 1
    for report in reports:
        assert report.comparison and report.note_path.name == "experiment.md"
        assert report.note_path.parent.name == report.spec.experiment and report.note_path.is_file()


def test_the_cli_takes_several_specs_and_a_second_call_skips_what_finished(write_spec, tmp_path):
    from labfolio.cli import app

    paths = [str(_spec(write_spec, "toy_001")), str(_spec(write_spec, "gpt_toy", variants="  r: {}\n"))]
    runner = CliRunner()
    result = runner.invoke(app, ["run", *paths, "--gpus", "none", "-j", "2", "--no-notebook"])
    assert result.exit_code == 0, result.output
    assert "toy_001: 2 finished" in result.output and "gpt_toy: 1 finished" in result.output
    assert "gpt_toy/r/s0" in result.output
    again = runner.invoke(app, ["run", *paths, "--gpus", "none", "--no-notebook", "--dry-run"])
    assert again.exit_code == 0, again.output
    assert again.output.count("skipped: finished earlier") == 3


def test_a_live_table_over_specs_with_other_headline_metrics_names_each_cells_metric():
    import io

    from rich.console import Console

    from labfolio.runner import Task
    from labfolio.runner_display import LiveDisplay

    spec = parse_spec("experiment: mixed\ncommand: [python, train.py]\nvariants: {a: {}}\nseeds: [0]\n")
    console = Console(file=io.StringIO(), width=200, color_system=None)
    display = LiveDisplay(spec, RunOptions(), console)
    tasks = []
    for experiment, metric, value in (("vit", "test/acc", 0.8215), ("gpt", "val/bpb", 2.207)):
        task = Task(planned=spec.plan()[0], state="running", last_step=10, key_value=value, key_metric=metric,
                    prefix=f"{experiment}/")
        tasks.append(task)
    display._tasks = tasks  # what live() hands it
    console.print(display._render())
    text = console.file.getvalue()
    assert "key metric" in text and "test/acc 0.8215" in text and "val/bpb 2.207" in text
    # one headline metric: the column is named after it and the cells hold bare values
    tasks[1].key_metric = "test/acc"
    display._tasks = tasks
    console.file = io.StringIO()
    console.print(display._render())
    assert "test/acc 0.8215" not in console.file.getvalue()
