"""`labfolio notes`, `notes sync` and `notes check` against a team server (LABFOLIO_SERVER): the vault
a teammate renders from the server equals the one rendered on the server's own store."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest import ServerProcess, free_port
from labfolio.store import open_store
from labfolio.store.tokens import create_token


def _embedding_png(path, shift):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 2))
    axes.scatter([0, 1, 2], [2 + shift, 0, 1])
    figure.savefig(path, dpi=40)
    plt.close(figure)


@pytest.fixture
def study_server(tmp_path, monkeypatch):
    import labfolio

    server_dir = tmp_path / "server"
    for variant, seed, shift in (("base", 0, 0.0), ("base", 1, 0.1), ("mhc", 0, -0.2), ("mhc", 1, -0.25)):
        run = labfolio.init("study", experiment="exp_v", variant=variant, seed=seed, store=str(server_dir),
                            config={"lr": 0.01, "connection": variant}, hypothesis="mhc lowers the loss")
        for step in range(20):
            run.log({"train/loss": 2.0 - 0.05 * step + shift}, step=step)
        run.log({"val/loss": 1.2 + shift}, step=19)
        png = tmp_path / f"test_embedding_{variant}{seed}.png"
        _embedding_png(png, shift)
        run.log_artifact(png, kind="image", name="test_embedding.png")
        run.finish()
    store = open_store(server_dir)
    token, _ = create_token(store, "teammate")
    store.close()
    proc = ServerProcess(["server", "--store", str(server_dir)], free_port(), log=tmp_path / "server.log").start()
    monkeypatch.setenv("LABFOLIO_CACHE_DIR", str(tmp_path / "client_cache"))
    yield proc, token, server_dir
    proc.stop()


def _env(tmp_path, url, token):
    return {"LABFOLIO_SERVER": url, "LABFOLIO_TOKEN": token, "LABFOLIO_DIR": str(tmp_path / "client"),
            "LABFOLIO_STORE": None}


def test_notes_over_the_server_render_what_the_servers_store_renders_and_sync_edits_back(study_server, tmp_path):
    from labfolio.cli import app

    proc, token, server_dir = study_server
    runner = CliRunner()
    env = _env(tmp_path, proc.url, token)
    vault = tmp_path / "vault"
    written = runner.invoke(app, ["notes", "--out", str(vault)], env=env)
    assert written.exit_code == 0, written.output
    note = vault / "experiments" / "exp_v" / "experiment.md"
    assert "mhc lowers the loss" in note.read_text()
    # the embedding plot read the artifact files through the server, checked against their sha256
    assert (vault / "experiments" / "exp_v" / "plots" / "embeddings.png").is_file()
    assert len(list((tmp_path / "client_cache" / "server-artifacts").glob("*.png"))) == 4

    # the same store, rendered on the server's own folder, gives the same vault byte for byte
    local = tmp_path / "local_vault"
    direct = runner.invoke(app, ["notes", "--out", str(local), "--store", str(server_dir)],
                           env={"LABFOLIO_SERVER": None, "LABFOLIO_DIR": str(tmp_path / "client")})
    assert direct.exit_code == 0, direct.output
    for path in sorted(p for p in local.rglob("*") if p.is_file() and ".labfolio" not in p.parts):
        assert (vault / path.relative_to(local)).read_bytes() == path.read_bytes(), path

    # a human section written in the teammate's vault goes back to the server's store
    text = note.read_text()
    note.write_text(text.replace("## Observations & Conclusions\n", "## Observations & Conclusions\n\nmhc wins on both seeds.\n", 1))
    synced = runner.invoke(app, ["notes", "sync", "--out", str(vault)], env=env)
    assert synced.exit_code == 0, synced.output
    store = open_store(server_dir)
    try:
        assert "mhc wins on both seeds." in "".join(store.note_fields("experiment", "exp_v").values())
    finally:
        store.close()
    checked = runner.invoke(app, ["notes", "check", "--out", str(vault)], env=env)
    assert checked.exit_code == 0, checked.output
    assert "matches a fresh render" in checked.output


def test_a_damaged_artifact_download_is_refused_not_plotted(study_server, tmp_path, monkeypatch):
    from labfolio.errors import StoreError
    from labfolio.settings import resolve_store
    from labfolio.store.http import HTTPStore

    proc, token, _ = study_server
    monkeypatch.setenv("LABFOLIO_SERVER", proc.url)
    store = HTTPStore(resolve_store(None), token)
    run = store.list_runs(experiment="exp_v")[0]
    artifact = next(a for a in store.artifacts(run.run_id) if a.name == "test_embedding.png")
    monkeypatch.setattr(HTTPStore, "_request_bytes", lambda self, method, path: b"not the file")
    with pytest.raises(StoreError, match="does not match its sha256"):
        store.artifact_file(artifact)
    assert not list((tmp_path / "client_cache" / "server-artifacts").glob("*.png"))
