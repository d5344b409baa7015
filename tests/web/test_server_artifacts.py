"""Artifact files reach the team server: uploaded by content before the row that names them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import warnings

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import ServerProcess, free_port
from labfolio.settings import resolve_store
from labfolio.store import open_store
from labfolio.store.batch import Batch
from labfolio.store.http import HTTPStore
from labfolio.store.tokens import create_token
from labfolio.web.app import WebSettings, create_app

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8

CLIENT = textwrap.dedent("""
    import sys, labfolio
    run = labfolio.init(project="team", experiment="art_exp", variant="v", seed=0)
    run.log({"loss": 1.0}, step=0)
    run.log_artifact(sys.argv[1], kind="image")
    run.log_artifact(sys.argv[2], reference=True)
    assert run.flush(timeout=60)
    run.finish()
    print("RUN_ID", run.id)
""")


@pytest.fixture
def ingest(tmp_path):
    store = open_store(tmp_path / "server")
    token, _ = create_token(store, "tester")
    client = TestClient(create_app(store, WebSettings(auth=True, ingest=True, max_artifact_bytes=4096)))
    return store, client, {"Authorization": f"Bearer {token}"}


@pytest.mark.slow
def test_sdk_artifacts_reach_the_server_and_the_run_page_links_them_while_references_stay_paths(tmp_path):
    server_dir = tmp_path / "server"
    token, _ = create_token(open_store(server_dir), "lab")
    server = ServerProcess(["server", "--store", str(server_dir)], free_port(), log=tmp_path / "server.log").start()
    image, checkpoint = tmp_path / "curve.png", tmp_path / "model.ckpt"
    image.write_bytes(PNG)
    checkpoint.write_bytes(b"weights" * 100)
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABFOLIO_")}
    env.update({"LABFOLIO_SERVER": server.url, "LABFOLIO_TOKEN": token, "LABFOLIO_DIR": str(tmp_path / "gpu-a"),
                "XDG_CACHE_HOME": str(tmp_path / "cache")})
    try:
        out = subprocess.run([sys.executable, str(script), str(image), str(checkpoint)], env=env,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        run_id = out.stdout.split("RUN_ID")[1].strip()
        auth = {"Authorization": f"Bearer {token}"}
        page = httpx.get(f"{server.url}/runs/{run_id}.json", headers=auth).json()
        by_name = {a["name"]: a for a in page["artifacts"]}
        assert by_name["curve.png"]["url"] is not None
        served = httpx.get(server.url + by_name["curve.png"]["url"], headers=auth)
        assert served.status_code == 200 and served.content == PNG
        html = httpx.get(f"{server.url}/runs/{run_id}", headers={**auth, "accept": "text/html"}).text
        assert f'<img src="{by_name["curve.png"]["url"]}"' in html  # drawn inline on the run page
        ckpt = by_name["model.ckpt"]
        assert ckpt["is_reference"] and ckpt["url"] is None and ckpt["path"] == str(checkpoint.resolve())
    finally:
        server.stop()
    stored = {a.name: a for a in open_store(server_dir).artifacts(run_id)}
    assert open(stored["curve.png"].path, "rb").read() == PNG  # in the server's own artifact folder
    assert str(stored["curve.png"].path).startswith(str(server_dir))
    assert not any(p.name.startswith(hashlib.sha256(b"weights" * 100).hexdigest())
                   for p in (server_dir / "artifacts").rglob("*"))  # a reference's bytes never travel


@pytest.mark.slow
def test_an_artifact_whose_file_is_gone_warns_once_and_its_row_still_arrives(tmp_path):
    server_dir = tmp_path / "server"
    token, _ = create_token(open_store(server_dir), "lab")
    server = ServerProcess(["server", "--store", str(server_dir)], free_port()).start()
    try:
        client = HTTPStore(resolve_store(server.url), token=token)
        sha = "ab" * 32
        event = {"type": "artifact", "name": "lost.png", "kind": "image", "sha256": sha, "size": 3,
                 "path": f"ab/{sha}.png", "is_reference": False}
        start = {"type": "start", "run_id": "r1", "experiment": "e"}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            client.write_batch(Batch(run_id="r1", events=[start, event]))
            client.write_batch(Batch(run_id="r1", events=[dict(event, name="lost-again.png")]))
        messages = [str(w.message) for w in caught if "without its file" in str(w.message)]
        assert len(messages) == 1 and "lost.png" in messages[0]
    finally:
        server.stop()
    assert [a.name for a in open_store(server_dir).artifacts("r1")] == ["lost.png", "lost-again.png"]


def test_artifact_upload_needs_a_token_checks_the_hash_and_size_and_is_idempotent(ingest):
    store, client, headers = ingest
    data = b"hello artifact"
    sha = hashlib.sha256(data).hexdigest()
    url = f"/api/v1/artifacts/{sha}?suffix=.txt"
    assert client.put(url, content=data).status_code == 401
    assert client.head(url, headers=headers).status_code == 404
    wrong = client.put(f"/api/v1/artifacts/{'0' * 64}?suffix=.txt", content=data, headers=headers)
    assert wrong.status_code == 400 and "hash to" in wrong.json()["detail"]
    first = client.put(url, content=data, headers=headers)
    again = client.put(url, content=data, headers=headers)
    assert (first.status_code, first.json()["stored"], again.json()["stored"]) == (200, True, False)
    assert client.head(url, headers=headers).status_code == 200
    assert (store.location.artifact_dir / sha[:2] / f"{sha}.txt").read_bytes() == data
    big = b"x" * 5000
    too_big = client.put(f"/api/v1/artifacts/{hashlib.sha256(big).hexdigest()}", content=big, headers=headers)
    assert too_big.status_code == 413 and "reference=True" in too_big.json()["detail"]
    leftovers = [p for p in store.location.artifact_dir.rglob("*") if p.is_file() and p.name.startswith(".incoming")]
    assert leftovers == []  # refused uploads leave nothing behind


@pytest.mark.parametrize("address", [
    "../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "AB" * 32, "ab" * 31, "%2e%2e" + "a" * 62,
])
def test_artifact_upload_addresses_cannot_name_a_path(ingest, address):
    store, client, headers = ingest
    response = client.put(f"/api/v1/artifacts/{address}", content=b"x", headers=headers)
    assert response.status_code in (404, 405, 422)
    assert not any(store.location.home.parent.rglob("passwd"))


@pytest.mark.parametrize("suffix", ["/../../../x", ".png/../../x", "..\\..\\x", ".a\x00b"])
def test_artifact_upload_suffixes_cannot_name_a_path(ingest, suffix):
    _, client, headers = ingest
    data = b"x"
    response = client.put(f"/api/v1/artifacts/{hashlib.sha256(data).hexdigest()}", params={"suffix": suffix},
                          content=data, headers=headers)
    assert response.status_code in (400, 422)


@pytest.mark.parametrize("path", ["../../etc/passwd", "/etc/passwd", "ab/" + "ab" * 32 + "/../../x"])
def test_copied_artifact_rows_must_name_their_content_address(ingest, path):
    _, client, headers = ingest
    body = {"events": [{"type": "start", "run_id": "r1"},
                       {"type": "artifact", "run_id": "r1", "name": "x", "sha256": "ab" * 32, "path": path,
                        "is_reference": False}]}
    response = client.post("/api/v1/batches", json=body, headers=headers)
    assert response.status_code == 400 and "content address" in response.json()["detail"]
