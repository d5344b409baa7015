"""The team server: HTTP ingestion, the SDK logging through it, tokens, outages and restarts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import ServerProcess, free_port
from labfolio.store import open_store
from labfolio.store.batch import Batch
from labfolio.store.tokens import create_token
from labfolio.store.wire import BATCH_CONTENT_TYPE, decode_batch, encode_batch
from labfolio.web.app import WebSettings, create_app

CLIENT = textwrap.dedent("""
    import os, sys, time, labfolio
    steps, pause_every, pause_s, wait_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    run = labfolio.init(project="team", experiment="shared_exp", variant=os.environ["VARIANT"], seed=0,
                        config={"lr": 0.01})
    for step in range(steps):
        run.log({"loss": 1.0 / (step + 1), "acc": step / steps, "lr": 0.01}, step=step)
        if pause_every and step % pause_every == 0:
            time.sleep(pause_s)
    deadline = time.time() + wait_s  # how long to wait for the store before finishing anyway
    while not run.flush(timeout=5) and time.time() < deadline:
        pass
    run.finish()
    print("RUN_ID", run.id)
""")


def test_wire_format_round_trips_a_batch_exactly():
    batch = Batch(run_id="r1", events=[{"type": "summary", "values": {"acc": 0.5}}], keys=["a", "b", "a"],
                  steps=[0, 0, 1], values=[1.5, float("nan"), float("inf")], times=[1.0, 1.0, 2.0], seqs=[7, 8, 9],
                  journal_from=7, journal_to=10, heartbeat=123.0)
    back = decode_batch(encode_batch(batch))
    assert (back.run_id, back.events, back.journal_from, back.journal_to, back.heartbeat) == \
        ("r1", batch.events, 7, 10, 123.0)
    assert [back.key_names[c] for c in back.codes] == ["a", "b", "a"]
    assert back.steps.tolist() == [0, 0, 1] and back.seqs.tolist() == [7, 8, 9]
    assert back.values[0] == 1.5 and np.isnan(back.values[1]) and np.isinf(back.values[2])


@pytest.fixture
def ingest(tmp_path):
    store = open_store(tmp_path / "server")
    token, _ = create_token(store, "tester")
    client = TestClient(create_app(store, WebSettings(auth=True, ingest=True)))
    return store, client, {"Authorization": f"Bearer {token}"}


def test_ingestion_applies_a_batch_once_even_when_it_is_sent_twice(ingest):
    store, client, headers = ingest
    start = Batch(run_id="r1", events=[{"type": "start", "run_id": "r1", "experiment": "e", "variant": "v"}],
                  journal_from=0, journal_to=0)
    assert client.post("/api/v1/batches", content=encode_batch(start), headers={
        **headers, "content-type": BATCH_CONTENT_TYPE}).json()["applied"]
    points = Batch(run_id="r1", keys=["loss"] * 3, steps=[0, 1, 2], values=[3.0, 2.0, 1.0], times=[0, 1, 2],
                   seqs=[0, 1, 2], journal_from=0, journal_to=3)
    body = encode_batch(points)
    first = client.post("/api/v1/batches", content=body, headers={**headers, "content-type": BATCH_CONTENT_TYPE})
    again = client.post("/api/v1/batches", content=body, headers={**headers, "content-type": BATCH_CONTENT_TYPE})
    assert first.json() == {"applied": True, "points": 3, "journal_pos": 3}
    assert again.json() == {"applied": False, "points": 0, "journal_pos": 3}  # a retry after a lost response
    assert store.history("r1")["loss"].values.tolist() == [3.0, 2.0, 1.0]
    as_json = client.post("/api/v1/batches", json={"run_id": "r1", "keys": ["loss"], "steps": [3], "values": [0.5],
                                                    "times": [3.0], "seqs": [3], "journal_from": 3, "journal_to": 4},
                          headers=headers)
    assert as_json.json()["applied"] and store.get_run("r1").point_count == 4


@pytest.mark.parametrize("body, message", [
    (b"nope", "magic"),
    (b"LFB1\xff\xff\x00\x00{}", "truncated"),
    (b'LFB1\x02\x00\x00\x00{}', "n must be"),
])
def test_malformed_batches_are_rejected_with_a_reason(ingest, body, message):
    _, client, headers = ingest
    response = client.post("/api/v1/batches", content=body, headers={**headers, "content-type": BATCH_CONTENT_TYPE})
    assert response.status_code == 400 and message in response.json()["detail"]


def test_unknown_events_and_bad_key_codes_are_rejected(ingest):
    _, client, headers = ingest
    bad_event = client.post("/api/v1/batches", json={"events": [{"type": "drop_tables"}]}, headers=headers)
    assert bad_event.status_code == 400 and "unknown event type" in bad_event.json()["detail"]
    batch = Batch(run_id="r1", key_names=["a"], codes=[5], steps=[0], values=[1.0], times=[0.0], seqs=[0])
    response = client.post("/api/v1/batches", content=encode_batch(batch),
                           headers={**headers, "content-type": BATCH_CONTENT_TYPE})
    assert response.status_code == 400 and "key code" in response.json()["detail"]


def test_non_finite_config_values_arrive_as_strings(ingest):
    store, client, headers = ingest
    body = json.dumps({"events": [{"type": "start", "run_id": "nan_cfg", "config": {"lr": float("nan"),
                                                                                 "clip": [float("inf")]}}]})
    response = client.post("/api/v1/batches", content=body, headers={**headers, "content-type": "application/json"})
    assert response.status_code == 200
    assert store.get_run("nan_cfg").config == {"lr": "nan", "clip": ["inf"]}


def test_ingestion_needs_a_token(ingest):
    _, client, _ = ingest
    body = encode_batch(Batch(events=[{"type": "experiment", "name": "x"}]))
    assert client.post("/api/v1/batches", content=body, headers={"content-type": BATCH_CONTENT_TYPE}).status_code == 401
    assert client.post("/api/v1/batches", content=body, headers={
        "content-type": BATCH_CONTENT_TYPE, "Authorization": "Bearer lf_nottoken"}).status_code == 403
    assert client.get("/api/v1/health").json()["ok"]  # health stays open for probes


def test_token_commands_create_list_and_revoke(tmp_path):
    from labfolio.cli import app

    runner = CliRunner()
    where = str(tmp_path / "store")
    created = runner.invoke(app, ["token", "create", "--name", "gpu-a", "--store", where])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[0]
    assert token.startswith("lf_") and len(token) > 40
    listed = runner.invoke(app, ["token", "list", "--store", where])
    assert "gpu-a" in listed.output and token not in listed.output and token[:10] in listed.output
    revoked = runner.invoke(app, ["token", "revoke", "gpu-a", "--store", where])
    assert revoked.exit_code == 0 and "revoked token 1 (gpu-a)" in revoked.output
    assert "no tokens" in runner.invoke(app, ["token", "list", "--store", where]).output
    missing = runner.invoke(app, ["token", "revoke", "gpu-a", "--store", where])
    assert missing.exit_code == 1 and "labfolio token list" in missing.output


def _client_env(tmp_path, server_url, token, variant, machine):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABFOLIO_")}
    env.update({"LABFOLIO_SERVER": server_url, "LABFOLIO_TOKEN": token, "LABFOLIO_DIR": str(tmp_path / machine),
                "LABFOLIO_MACHINE": machine, "VARIANT": variant, "XDG_CACHE_HOME": str(tmp_path / f"cache-{machine}")})
    return env


def _run_client(tmp_path, env, steps, pause_every=0, pause_s=0.0, wait=True, wait_s=90.0):
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    proc = subprocess.Popen([sys.executable, str(script), str(steps), str(pause_every), str(pause_s), str(wait_s)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        return out, err
    return proc


def _check_points(store, run_id, steps):
    history = store.history(run_id)
    for key in ("loss", "acc", "lr"):
        assert history[key].steps.tolist() == list(range(steps)), f"{key}: points lost or duplicated"
    assert store.get_run(run_id).point_count == 3 * steps


@pytest.mark.slow
def test_two_machines_log_one_experiment_through_the_server(tmp_path):
    server_dir = tmp_path / "server"
    token, _ = create_token(open_store(server_dir), "lab")
    server = ServerProcess(["server", "--store", str(server_dir)], free_port(), log=tmp_path / "server.log").start()
    try:
        a = _run_client(tmp_path, _client_env(tmp_path, server.url, token, "baseline", "gpu-a"), 2000, wait=False)
        b = _run_client(tmp_path, _client_env(tmp_path, server.url, token, "mhc", "gpu-b"), 2000, wait=False)
        outs = [p.communicate(timeout=180) for p in (a, b)]
        assert a.returncode == 0 and b.returncode == 0, [o[1] for o in outs]
        import httpx

        runs = httpx.get(f"{server.url}/runs.json", params={"experiment": "shared_exp"},
                         headers={"Authorization": f"Bearer {token}"}).json()["runs"]
        assert sorted((r["variant"], r["machine"]) for r in runs) == [("baseline", "gpu-a"), ("mhc", "gpu-b")]
    finally:
        server.stop()
    store = open_store(server_dir)
    for r in runs:
        _check_points(store, r["run_id"], 2000)
        assert store.get_run(r["run_id"]).state == "finished"


@pytest.mark.slow
def test_an_unreachable_server_spools_to_the_journal_and_sync_uploads_later(tmp_path):
    server_dir = tmp_path / "server"
    token, _ = create_token(open_store(server_dir), "lab")
    port = free_port()
    env = _client_env(tmp_path, f"http://127.0.0.1:{port}", token, "baseline", "gpu-a")
    out, err = _run_client(tmp_path, env, 500, wait_s=1.0)
    run_id = out.split("RUN_ID")[1].strip()
    assert err.count("cannot write run") <= 1  # one warning, not one per batch
    assert "labfolio sync" in err
    server = ServerProcess(["server", "--store", str(server_dir)], port).start()
    try:
        synced = subprocess.run([sys.executable, "-m", "labfolio.cli", "sync"], env=env, capture_output=True,
                                text=True, timeout=120)
        assert synced.returncode == 0, synced.stderr
        assert f"synced {run_id}" in synced.stdout
    finally:
        server.stop()
    _check_points(open_store(server_dir), run_id, 500)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_server_restart_midway_loses_no_point_in_postgresql(tmp_path, postgres_server):
    url = postgres_server.create_database()
    token, _ = create_token(open_store(url), "lab")
    port = free_port()
    server = ServerProcess(["server", "--store", url], port, log=tmp_path / "server.log").start()
    steps = 6000
    client = _run_client(tmp_path, _client_env(tmp_path, server.url, token, "baseline", "gpu-a"), steps,
                         pause_every=100, pause_s=0.1, wait=False)  # about 6 s of training
    try:
        time.sleep(2.0)
        server.stop()  # the server goes away mid-run...
        time.sleep(1.5)
        server.start()  # ...and comes back on the same port
        out, err = client.communicate(timeout=180)
        assert client.returncode == 0, err
    finally:
        server.stop()
        if client.poll() is None:
            client.kill()
    assert "caught up after" in err  # the client did see the outage, and recovered by itself
    run_id = out.split("RUN_ID")[1].strip()
    store = open_store(url)
    _check_points(store, run_id, steps)
    assert store.get_run(run_id).state == "finished"
    assert json.loads(json.dumps(store.get_run(run_id).config)) == {"lr": 0.01}
