"""Exports: one-row-per-run frames, multi-run CSV/Parquet/JSON files, pandas or polars, the CLI."""

from __future__ import annotations

import csv
import json
import math

import pytest
import typer
from typer.testing import CliRunner

from . import require

pd = require("pandas")
pl = require("polars")
require("pyarrow")

import labfolio  # noqa: E402
from labfolio.cli_import import export_command  # noqa: E402
from labfolio.errors import ConfigError  # noqa: E402
from labfolio.export import export_runs, histories_frame, history_frame, runs_frame  # noqa: E402

runner = CliRunner()


def _seed_store():
    """Three finished runs: two variants of e1 (one logs a NaN), one run of e2."""
    specs = [("e1", "base", 0, {"optim": {"lr": 0.1}, "sched": "cosine"}, [2.0, 1.0, 0.5]),
             ("e1", "mhc", 0, {"optim": {"lr": 0.05}, "sched": 3}, [2.0, float("nan"), 0.25]),
             ("e2", "base", 1, {"optim": {"lr": 0.1}}, [3.0])]
    ids = []
    for experiment, variant, seed, config, losses in specs:
        with labfolio.init(experiment=experiment, variant=variant, seed=seed, config=config) as run:
            for step, loss in enumerate(losses):
                run.log({"train/loss": loss}, step=step * 10)
            run.summary["test/acc"] = 0.5 + 0.1 * len(ids)
        ids.append(run.id)
    return ids


def test_runs_frame_has_one_row_per_run_with_config_and_summary_columns():
    base, mhc, other = _seed_store()
    store = labfolio.open_store()
    frame = store.runs_frame(experiment="e1").set_index("run_id")
    assert sorted(frame.index) == sorted([base, mhc])
    assert frame.loc[base, "config.optim.lr"] == 0.1 and frame.loc[mhc, "config.optim.lr"] == 0.05
    assert frame.loc[base, "summary.train/loss"] == 0.5 and frame.loc[mhc, "summary.train/loss"] == 0.25
    assert frame.loc[mhc, "summary.test/acc"] == pytest.approx(0.6)
    assert frame.loc[base, "variant"] == "base" and frame.loc[base, "state"] == "finished"
    # a config key that is text in one run and a number in another becomes text in both
    assert frame.loc[base, "config.sched"] == "cosine" and frame.loc[mhc, "config.sched"] == "3"
    stats = runs_frame(store, [base], summary_stats=("value", "min", "count"))
    assert stats.loc[0, "summary.train/loss.min"] == 0.5 and stats.loc[0, "summary.train/loss.count"] == 3


def test_polars_frames_hold_the_same_values_as_pandas():
    base, mhc, _ = _seed_store()
    store = labfolio.open_store()
    frame = store.runs_frame(experiment="e1", backend="polars")
    assert isinstance(frame, pl.DataFrame) and frame.height == 2
    by_run = dict(zip(frame["run_id"].to_list(), frame["summary.train/loss"].to_list()))
    assert by_run == {base: 0.5, mhc: 0.25}
    long = store.history_frame(mhc, backend="polars")
    assert long.columns == ["key", "step", "value", "time"] and long["step"].to_list() == [0, 10, 20]
    assert math.isnan(long["value"][1])
    wide = history_frame(store, base, wide=True, backend="polars")
    assert wide.columns == ["step", "train/loss"] and wide["train/loss"].to_list() == [2.0, 1.0, 0.5]
    many = histories_frame(store, experiment="e1", backend="polars")
    assert sorted(set(many["run_id"].to_list())) == sorted([base, mhc]) and many.height == 6
    with pytest.raises(ConfigError, match="unknown frame backend 'arrow'"):
        history_frame(store, base, backend="arrow")


def test_an_experiment_exports_to_csv_parquet_and_json(tmp_path):
    base, mhc, _ = _seed_store()
    store = labfolio.open_store()
    result = export_runs(store, tmp_path / "e1.csv", experiment="e1")
    assert (result.runs, result.points) == (2, 6)
    rows = list(csv.DictReader(open(tmp_path / "e1.csv")))
    assert {r["run_id"] for r in rows} == {base, mhc} and len(rows) == 6
    assert [float(r["value"]) for r in rows if r["run_id"] == base] == [2.0, 1.0, 0.5]
    parquet = pd.read_parquet(export_runs(store, tmp_path / "e1.parquet", experiment="e1").path)
    assert list(parquet.columns) == ["run_id", "key", "step", "value", "time"] and len(parquet) == 6
    documents = json.loads(export_runs(store, tmp_path / "e1.json", experiment="e1").path.read_text())
    by_id = {d["run_id"]: d for d in documents}
    assert by_id[mhc]["config"] == {"optim": {"lr": 0.05}, "sched": 3}
    assert by_id[mhc]["history"]["train/loss"]["values"] == [2.0, None, 0.25]  # NaN is null in JSON
    assert by_id[mhc]["summary"]["test/acc"]["value"] == pytest.approx(0.6)


def test_the_runs_table_exports_to_every_format(tmp_path):
    _seed_store()
    store = labfolio.open_store()
    export_runs(store, tmp_path / "runs.csv", table="runs")
    rows = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert len(rows) == 3 and {"config.optim.lr", "summary.train/loss", "summary.test/acc"} <= set(rows[0])
    parquet = pd.read_parquet(export_runs(store, tmp_path / "runs.parquet", table="runs").path)
    assert len(parquet) == 3 and parquet["config.sched"].dropna().tolist() == ["3", "cosine"]
    documents = json.loads(export_runs(store, tmp_path / "runs.json", table="runs").path.read_text())
    assert len(documents) == 3 and all("history" not in d for d in documents)


def test_the_export_command_takes_runs_or_filters(tmp_path):
    base, mhc, _ = _seed_store()
    app = typer.Typer()
    app.command("export")(export_command)
    app.command("other")(lambda: None)  # with two commands, "export" stays a named subcommand
    single = runner.invoke(app, ["export", base, "--format", "csv", "--out", str(tmp_path / "one.csv")])
    assert single.exit_code == 0, single.output
    assert single.output.strip() == f"Wrote 3 points of {base} to {tmp_path / 'one.csv'}"
    many = runner.invoke(app, ["export", "-e", "e1", "-o", str(tmp_path / "e1.json")])
    assert many.output.strip() == f"Wrote 6 points of 2 run(s) to {tmp_path / 'e1.json'}"
    table = runner.invoke(app, ["export", "--all", "--table", "runs", "-o", str(tmp_path / "all.parquet")])
    assert table.output.strip() == f"Wrote 3 run(s) to {tmp_path / 'all.parquet'}"
    nothing = runner.invoke(app, ["export"])
    assert nothing.exit_code == 1 and "nothing selected" in nothing.output
    unknown = runner.invoke(app, ["export", base, "--format", "xlsx"])
    assert unknown.exit_code == 1 and "unknown export format 'xlsx'" in unknown.output
    none = runner.invoke(app, ["export", "-e", "missing"])
    assert none.exit_code == 1 and "no runs match experiment='missing'" in " ".join(none.output.split())


def test_every_import_and_export_command_and_option_has_help_text():
    from typer.main import get_command

    import labfolio.cli  # noqa: F401  (mounts `import notes` on the import sub-app)
    from labfolio.cli_import import import_app

    app = typer.Typer()
    app.add_typer(import_app, name="import")
    app.command("export")(export_command)
    root = get_command(app)
    commands = {"export": root.commands["export"], **{f"import {name}": command for name, command
                                                      in root.commands["import"].commands.items()}}
    assert sorted(commands) == ["export", "import notes", "import tensorboard", "import wandb"]
    assert root.commands["import"].help
    for name, command in commands.items():
        assert command.help and command.help.strip(), f"{name} has no help"
        for param in command.params:
            assert getattr(param, "help", None), f"{param.name} of {name} has no help"
        result = runner.invoke(app, [*name.split(), "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_run_history_and_labfolio_open_return_frames_of_what_was_logged():
    with labfolio.init(experiment="e3", variant="a", config={"lr": 0.1}) as run:
        for step in range(3):
            run.log({"train/loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
        live = run.history(wide=True)  # readable while the run is still going
        assert live["train/loss"].tolist() == [1.0, 0.5, pytest.approx(1 / 3)]
        assert isinstance(run.history(["lr"], backend="polars"), pl.DataFrame)
    frame = labfolio.open().runs_frame(experiment="e3")
    assert frame.loc[0, "config.lr"] == 0.1 and frame.loc[0, "summary.train/loss"] == pytest.approx(1 / 3)
    assert "open" not in labfolio.__all__  # a star import must not shadow the builtin


def test_an_offline_run_says_to_sync_before_reading_its_history():
    with labfolio.init(experiment="e4", mode="offline") as run:
        run.log({"loss": 1.0}, step=0)
        with pytest.raises(ConfigError, match="labfolio sync"):
            run.history()
