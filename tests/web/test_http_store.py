"""Choosing the team server as the store, and the HTTP store's behaviour when it is away."""

from __future__ import annotations

import pytest

from conftest import free_port
from labfolio.errors import ConfigError, StoreError, StoreUnavailableError
from labfolio.settings import resolve_store
from labfolio.store import open_store
from labfolio.store.http import HTTPStore, run_from_json, run_to_json


def test_labfolio_server_env_picks_the_http_store_and_keeps_journals_local(monkeypatch, tmp_path):
    monkeypatch.setenv("LABFOLIO_SERVER", "http://tracker:8765/")
    location = resolve_store()
    assert location.is_http and location.url == "http://tracker:8765"
    assert location.journal_dir == (tmp_path / "lf" / "journal").resolve()  # LABFOLIO_DIR from the fixture
    monkeypatch.setenv("LABFOLIO_STORE", str(tmp_path / "explicit"))
    assert not resolve_store().is_http  # an explicit store URL still wins


def test_an_unreachable_server_is_a_retryable_error(tmp_path):
    with pytest.raises(StoreUnavailableError, match="cannot reach the labfolio server"):
        open_store(f"http://127.0.0.1:{free_port()}")


def test_a_non_http_server_url_says_what_to_write(monkeypatch):
    monkeypatch.setenv("LABFOLIO_SERVER", "ftp://tracker")
    with pytest.raises(ConfigError, match="http://host:port"):
        resolve_store()


def test_run_records_survive_the_json_round_trip(seeded_store):
    run = seeded_store.get_run("exp_a_mhc_s0")
    back = run_from_json(__import__("json").loads(__import__("json").dumps(run_to_json(run))))
    assert back == run


def test_a_refused_token_is_a_store_error_that_names_the_fix(seeded_store):
    from conftest import ServerProcess

    port = free_port()
    server = ServerProcess(["server", "--store", str(seeded_store.location.home)], port).start()
    try:
        store = HTTPStore(resolve_store(server.url), token="lf_wrong")
        with pytest.raises(StoreError, match="labfolio token create"):
            store.run_journal_position("exp_a_mhc_s0")
        store.close()
    finally:
        server.stop()
