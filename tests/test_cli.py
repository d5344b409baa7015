"""CLI: exact output for known input, friendly errors, and help for every command."""

from __future__ import annotations

import json

import pytest
from typer.core import TyperGroup, TyperOption
from typer.main import get_command
from typer.testing import CliRunner

from labfolio.cli import app
from labfolio.store import Batch, open_store

runner = CliRunner()


def _seed_store():
    store = open_store()
    for run_id, variant, state in (("exp_base_s0", "base", "finished"), ("exp_mhc_s0", "mhc", "crashed")):
        store.write_batch(Batch(run_id=run_id, events=[
            {"type": "start", "run_id": run_id, "experiment": "exp", "variant": variant, "seed": 0,
             "config": {"lr": 0.1, "model": {"width": 64}}, "tags": ["study"], "started_at": 1_700_000_000.0},
            {"type": "finish", "state": state, "time": 1_700_000_090.0},
        ], keys=["loss", "loss"], steps=[0, 9], values=[2.0, 0.5], times=[1_700_000_000.0, 1_700_000_090.0],
            seqs=[1, 2]))
    return store


def test_runs_prints_a_filtered_table(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    _seed_store()
    result = runner.invoke(app, ["runs", "--variant", "mhc"])
    assert result.exit_code == 0, result.output
    lines = [line.rstrip() for line in result.output.splitlines()]
    assert lines[0].startswith("1 run(s) in sqlite:///")
    header = next(line for line in lines if "Run" in line and "Experiment" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == [
        "Run", "Experiment", "Variant", "Seed", "State", "Steps", "Started", "Duration"]
    row = next(line for line in lines if "exp_mhc_s0" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[:6] == ["exp_mhc_s0", "exp", "mhc", "0", "crashed", "9"]
    assert cells[7] == "1m30s"
    assert "exp_base_s0" not in result.output


def test_runs_json_is_machine_readable():
    _seed_store()
    result = runner.invoke(app, ["runs", "--json", "--status", "finished"])
    data = json.loads(result.output)
    assert [(r["run_id"], r["state"], r["summary"]["loss"]) for r in data] == [("exp_base_s0", "finished", 0.5)]


def test_runs_on_an_empty_store_says_so():
    result = runner.invoke(app, ["runs"])
    assert result.exit_code == 0
    assert result.output.startswith("No runs in sqlite:///")


def test_show_prints_config_summary_and_state(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    _seed_store()
    result = runner.invoke(app, ["show", "exp_mhc"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "exp_mhc_s0  exp / mhc  seed 0  [crashed]"
    assert "model.width" in result.output and "No alerts." in result.output
    summary_row = next(line for line in result.output.splitlines() if line.startswith("│ loss"))
    assert [c.strip() for c in summary_row.strip("│ ").split("│")] == ["loss", "0.5", "0.5", "2", "0.5", "2"]


def test_unknown_run_is_a_friendly_one_line_error():
    _seed_store()
    result = runner.invoke(app, ["show", "nope"])
    assert result.exit_code == 1
    assert "Error: no run 'nope'" in result.output
    assert "Traceback" not in result.output


def test_export_writes_csv(tmp_path):
    _seed_store()
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["export", "exp_base_s0", "--format", "csv", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"Wrote 2 points of exp_base_s0 to {out}"
    assert out.read_text().splitlines() == [
        "run_id,key,step,value,time", "exp_base_s0,loss,0,2.0,1700000000.0", "exp_base_s0,loss,9,0.5,1700000090.0"]


def test_export_rejects_an_unknown_format():
    _seed_store()
    result = runner.invoke(app, ["export", "exp_base_s0", "--format", "xlsx"])
    assert result.exit_code == 1 and "unknown export format 'xlsx'" in result.output


def test_sync_reports_what_it_drained():
    import labfolio

    run = labfolio.init(mode="offline")
    run.log({"a": 1.0})
    run.finish(quiet=True)
    result = runner.invoke(app, ["sync"])
    assert result.exit_code == 0, result.output
    assert f"synced {run.id}" in result.output
    assert result.output.strip().splitlines()[-1].startswith("1 journal(s), 1 point(s) written to")


def test_every_command_and_option_has_help_text():
    command = get_command(app)
    assert isinstance(command, TyperGroup)
    for name, sub in command.commands.items():
        assert sub.help and sub.help.strip(), f"command {name} has no help"
        for param in sub.params:
            if isinstance(param, TyperOption):
                assert param.help, f"option {param.name} of {name} has no help"
            else:
                assert getattr(param, "help", None), f"argument {param.name} of {name} has no help"


@pytest.mark.parametrize("command", ["runs", "show", "export", "sync", "snapshot"])
def test_help_runs_for_every_command(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_every_command_is_documented_in_the_readme():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    commands = get_command(app).commands
    missing = [name for name in commands if f"`labfolio {name}" not in readme]
    assert not missing, f"README's command table lacks: {missing}"


def test_python_dash_m_labfolio_is_the_labfolio_command():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "labfolio", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "notes" in out.stdout and "run" in out.stdout
