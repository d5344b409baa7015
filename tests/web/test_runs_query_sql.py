"""The runs-table query on both databases: JSON config paths and summary values sort and filter
the same on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pytest

from labfolio.store import open_store
from labfolio.web.runs_query import RunsQuery, query_runs
from seed import append_points, start_run


@pytest.fixture
def mixed_store(store_url):
    store = open_store(store_url)
    configs = [{"lr": 0.1, "model": {"width": 256}, "amp": True, "name": "b"},
               {"lr": 0.001, "model": {"width": 64}, "amp": False, "name": "a"},
               {"lr": "auto", "model": {"width": 128}, "amp": True, "name": "c"},
               {"model": {}, "name": "d"}]
    for i, config in enumerate(configs):
        start_run(store, f"r{i}", experiment="mix", seed=i, config=config, state="finished")
    for i, final in ((0, 0.3), (1, 0.9), (2, 0.6)):
        append_points(store, f"r{i}", "test/acc", np.arange(5), np.linspace(0.1, final, 5))
    store.write_batch(__import__("labfolio.store", fromlist=["Batch"]).Batch(
        run_id="r2", events=[{"type": "summary", "values": {"test/acc": 0.95}}]))  # an explicit override wins
    yield store
    store.close()


def _ids(store, **kw):
    return [r["run_id"] for r in query_runs(store, RunsQuery(**kw))["runs"]]


def test_sort_by_a_nested_numeric_config_key_puts_missing_values_last(mixed_store):
    assert _ids(mixed_store, sort="config.model.width") == ["r1", "r2", "r0", "r3"]
    assert _ids(mixed_store, sort="-config.model.width") == ["r0", "r2", "r1", "r3"]


def test_sort_by_a_summary_metric_uses_the_override_and_puts_missing_last(mixed_store):
    assert _ids(mixed_store, sort="-summary.test/acc") == ["r2", "r1", "r0", "r3"]
    assert _ids(mixed_store, sort="summary.test/acc") == ["r0", "r1", "r2", "r3"]


def test_filters_compare_numbers_as_numbers_and_text_as_text(mixed_store):
    assert sorted(_ids(mixed_store, filters=["config.lr>=0.01"])) == ["r0"]  # 'auto' is not a number
    assert _ids(mixed_store, filters=["config.lr=auto"]) == ["r2"]
    assert sorted(_ids(mixed_store, filters=["config.amp=true"])) == ["r0", "r2"]
    assert sorted(_ids(mixed_store, filters=["summary.test/acc>0.5"])) == ["r1", "r2"]
    assert _ids(mixed_store, filters=["config.name~c"]) == ["r2"]


def test_extra_columns_carry_config_and_summary_values(mixed_store):
    page = query_runs(mixed_store, RunsQuery(sort="seed", columns=["config.model.width", "summary.test/acc"]))
    assert [r["config"]["model.width"] for r in page["runs"]] == [256, 64, 128, None]
    assert [r["summary"]["test/acc"] for r in page["runs"]] == [0.3, 0.9, 0.95, None]


def test_a_run_imported_with_nan_in_its_config_keeps_config_sorting_working(mixed_store):
    from labfolio.store import Batch

    mixed_store.write_batch(Batch(run_id="imported", events=[{
        "type": "start", "run_id": "imported", "experiment": "mix", "seed": 9, "state": "finished",
        "config": {"lr": float("nan"), "model": {"width": 32}}}]))
    assert _ids(mixed_store, sort="config.model.width") == ["imported", "r1", "r2", "r0", "r3"]
    assert "imported" not in _ids(mixed_store, filters=["config.lr>=0.0001"])
