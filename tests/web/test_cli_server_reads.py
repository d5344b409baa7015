"""`labfolio runs`, `show`, `check`, `compare` and `diff` read from the team server when LABFOLIO_SERVER is set."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import ServerProcess, free_port
from seed import append_points, finish_run, start_run
from labfolio.store import open_store
from labfolio.store.batch import Batch
from labfolio.store.tokens import create_token


@pytest.fixture
def server(tmp_path):
    server_dir = tmp_path / "server"
    store = open_store(server_dir)
    token, _ = create_token(store, "reader")
    start_run(store, "exp_a_base_s0_20260101_000000", experiment="exp_a", variant="base", tags=["sweep"])
    append_points(store, "exp_a_base_s0_20260101_000000", "loss", [0, 1, 2], [3.0, 2.0, 1.5])
    store.write_batch(Batch(run_id="exp_a_base_s0_20260101_000000", events=[
        {"type": "alert", "kind": "divergence", "metric": "loss", "step": 2, "message": "loss rose",
         "value": float("nan")}]))
    finish_run(store, "exp_a_base_s0_20260101_000000")
    start_run(store, "exp_b_mhc_s1_20260102_000000", experiment="exp_b", variant="mhc", seed=1)
    store.close()
    proc = ServerProcess(["server", "--store", str(server_dir)], free_port(), log=tmp_path / "server.log").start()
    yield proc, token
    proc.stop()


def _env(tmp_path, url, token):
    return {"LABFOLIO_SERVER": url, "LABFOLIO_TOKEN": token, "LABFOLIO_DIR": str(tmp_path / "client"),
            "LABFOLIO_STORE": None}


def test_runs_and_show_read_the_server_with_the_token(server, tmp_path):
    from labfolio.cli import app

    proc, token = server
    runner = CliRunner()
    env = _env(tmp_path, proc.url, token)
    listed = runner.invoke(app, ["runs", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [r["run_id"] for r in json.loads(listed.stdout)] == ["exp_b_mhc_s1_20260102_000000",
                                                                "exp_a_base_s0_20260101_000000"]
    tagged = runner.invoke(app, ["runs", "--json", "--tag", "sweep"], env=env)
    assert [r["run_id"] for r in json.loads(tagged.stdout)] == ["exp_a_base_s0_20260101_000000"]
    table = runner.invoke(app, ["runs"], env=env)
    assert table.exit_code == 0 and f"2 run(s) in {proc.url}" in table.output
    shown = runner.invoke(app, ["show", "exp_a_base", "--json"], env=env)  # a unique prefix, as locally
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.stdout)
    assert data["run_id"] == "exp_a_base_s0_20260101_000000" and data["summary"]["loss"]["last"] == 1.5
    assert [a["kind"] for a in data["alerts"]] == ["divergence"]
    assert runner.invoke(app, ["show", "exp_a_base"], env=env).exit_code == 0


def test_reads_without_a_valid_token_and_unknown_runs_say_what_to_do(server, tmp_path):
    from labfolio.cli import app

    proc, token = server
    runner = CliRunner()
    refused = runner.invoke(app, ["runs"], env=_env(tmp_path, proc.url, "lf_wrong"))
    assert refused.exit_code == 1 and "labfolio token create" in refused.output
    missing = runner.invoke(app, ["show", "nope"], env=_env(tmp_path, proc.url, token))
    assert missing.exit_code == 1 and "no run 'nope'" in missing.output and "labfolio runs" in missing.output


def test_a_history_read_over_the_server_is_bit_for_bit_the_stored_one(server, tmp_path, monkeypatch):
    from labfolio.store.http import HTTPStore
    from labfolio.settings import resolve_store

    proc, token = server
    for name, value in _env(tmp_path, proc.url, token).items():
        monkeypatch.setenv(name, value) if value is not None else monkeypatch.delenv(name, raising=False)
    remote = HTTPStore(resolve_store(None))
    local = open_store(tmp_path / "server")
    run_id = "exp_a_base_s0_20260101_000000"
    expected, got = local.history(run_id), remote.history(run_id)
    assert got.keys() == expected.keys() == {"loss"}
    for key in expected:
        for column in ("steps", "values", "times"):
            assert getattr(got[key], column).dtype == getattr(expected[key], column).dtype
            assert getattr(got[key], column).tobytes() == getattr(expected[key], column).tobytes()
    assert remote.history(run_id, ["nothing"]) == {}
    assert [e["name"] for e in remote.experiments()] == ["exp_a", "exp_b"]
    with pytest.raises(Exception, match="no run 'nope'.*labfolio runs"):
        remote.history("nope")


def test_check_compare_and_diff_read_the_server(server, tmp_path):
    from labfolio.cli import app

    proc, token = server
    runner = CliRunner()
    env = _env(tmp_path, proc.url, token)
    checked = runner.invoke(app, ["check", "exp_a_base_s0_20260101_000000"], env=env)
    assert checked.exit_code == 0, checked.output
    assert "divergence" in checked.output and "loss rose" in checked.output
    compared = runner.invoke(app, ["compare", "exp_a"], env=env)
    assert compared.exit_code == 0, compared.output
    assert "base" in compared.output and "loss" in compared.output
    diffed = runner.invoke(app, ["diff", "exp_a", "exp_b"], env=env)
    assert diffed.exit_code == 0, diffed.output


def test_export_reads_the_server_and_what_it_does_not_serve_names_what_to_use_instead(server, tmp_path,
                                                                                     monkeypatch):
    from labfolio.cli import app
    from labfolio.settings import resolve_store
    from labfolio.store.http import HTTPStore, NotOnServerError

    proc, token = server
    runner = CliRunner()
    env = _env(tmp_path, proc.url, token)
    exported = runner.invoke(app, ["export", "exp_a_base_s0_20260101_000000", "-o", str(tmp_path / "out.csv")],
                             env=env)
    assert exported.exit_code == 0, exported.output
    rows = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 4 and "loss" in rows[1] and "1.5" in rows[-1]
    monkeypatch.setenv("LABFOLIO_SERVER", proc.url)
    with pytest.raises(NotOnServerError) as refused:
        HTTPStore(resolve_store(None), token).compact_points()
    assert "is not available through the labfolio server" in str(refused.value)
    assert "--store" in str(refused.value) and f"{proc.url}/runs" in str(refused.value)
