from __future__ import annotations

import os
import sys
from pathlib import Path

# Without a GPU the mHC Triton kernels run in triton's interpreter. Triton reads this switch when
# it is first imported, and other test modules import it (through torch) long before the kernel
# tests do, so it is set here, before any test module loads. Checked without importing torch.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from pg_server import ExternalPostgres, PostgresServer, PostgresUnavailable  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def isolated_labfolio(tmp_path, monkeypatch):
    """Every test gets its own store folder and journal fallback, and no leftover current run."""
    monkeypatch.setenv("LABFOLIO_DIR", str(tmp_path / "lf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("LABFOLIO_STORE", "LABFOLIO_EXPERIMENT", "LABFOLIO_VARIANT", "LABFOLIO_SEED",
                 "LABFOLIO_CONFIG", "LABFOLIO_MODE", "RANK", "LOCAL_RANK", "WORLD_SIZE",
                 "SLURM_PROCID", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    yield
    import labfolio.run as run_module

    current = run_module._current
    if current is not None:
        try:
            current.finish(quiet=True) if isinstance(current, run_module.Run) else current.finish()
        except Exception:
            pass
        run_module._current = None


@pytest.fixture(scope="session")
def postgres_server():
    external = os.environ.get("LABFOLIO_TEST_POSTGRES_URL")
    try:
        server = ExternalPostgres(external) if external else PostgresServer().start()
    except PostgresUnavailable as exc:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request, tmp_path):
    """The same tests on the embedded SQLite store and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "lf")
    server = request.getfixturevalue("postgres_server")
    return server.create_database()
