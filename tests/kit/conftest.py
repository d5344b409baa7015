import pytest

try:
    import torch
except ImportError:  # the kit's test modules skip themselves without torch
    torch = None


@pytest.fixture(autouse=True)
def _single_thread():
    # the kit's CPU comparisons are bitwise or close to it: one thread keeps the reduction order
    # fixed, and test workers on a small machine do not fight over its cores
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture()
def store_dir(tmp_path, monkeypatch):
    """A fresh store folder for the recipes' runs, with no labfolio variable leaking in."""
    folder = tmp_path / "store"
    monkeypatch.setenv("LABFOLIO_DIR", str(folder))
    for name in ("LABFOLIO_STORE", "LABFOLIO_CONFIG", "LABFOLIO_SEED", "LABFOLIO_MODE",
                 "LABFOLIO_EXPERIMENT", "LABFOLIO_VARIANT"):
        monkeypatch.delenv(name, raising=False)
    return folder


def stored_run(store_dir, run_id):
    """(record, metric histories, artifacts) of one run in `store_dir`."""
    import labfolio

    store = labfolio.open_store(str(store_dir))
    try:
        return store.get_run(run_id), store.history(run_id), store.artifacts(run_id)
    finally:
        store.close()
