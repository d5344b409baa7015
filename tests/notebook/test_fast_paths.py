"""Shortcuts taken for speed write exactly what the general code writes."""

import random
from datetime import datetime, timezone

from labfolio.notebook.mdtext import escape_cell, format_date, format_datetime
from labfolio.notebook.snapshot import config_lookup


def test_dates_match_strftime():
    rng = random.Random(5)
    stamps = [0.0, 1e9, 1.7e9 + 0.999, 253402300799.0, -1e10] + [rng.uniform(-3e10, 2.5e11) for _ in range(5000)]
    for ts in stamps:
        moment = datetime.fromtimestamp(ts, tz=timezone.utc)
        assert format_datetime(ts) == moment.strftime("%Y-%m-%d_%H-%M-%S")
        assert format_date(ts) == moment.strftime("%Y-%m-%d")
    assert format_date(None) == format_datetime(None) == "--"


def test_escape_cell_cases():
    assert escape_cell("plain") == "plain" and escape_cell(None) == "" and escape_cell(3) == "3"
    assert escape_cell("a|b") == "a\\|b" and escape_cell("a\\|b") == "a\\|b"
    assert escape_cell("a\n b |c") == "a<br>b \\|c"
    assert escape_cell("a\rb") == "a\rb"  # only \n turns into <br>


class _Mapping:
    """A Mapping that is not a dict."""

    def __init__(self, data):
        self._data = data

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __contains__(self, key):
        return key in self._data

    def keys(self):
        return self._data.keys()


from collections.abc import Mapping  # noqa: E402

Mapping.register(_Mapping)


def test_config_lookup_cases():
    config = {"model": {"name": "gpt", "d_model": 512}, "data": _Mapping({"name": "c4"}), "epochs": 0,
              "opt": {"name": {"deep": 1}}, "none": None, "arch": {"name": None}, "lst": [1, 2]}
    assert config_lookup(config, ("architecture", "model")) == "gpt"
    assert config_lookup(config, ("model.d_model",)) == 512
    assert config_lookup(config, ("data",)) == "c4"
    assert config_lookup(config, ("epochs",)) == 0
    assert config_lookup(config, ("opt", "epochs")) == 0  # a mapping 'name' does not count
    assert config_lookup(config, ("none", "lst")) == [1, 2]
    assert config_lookup(config, ("arch", "epochs")) is None  # {"name": None} answers None
    assert config_lookup(config, ("lst.x", "model.name.x", "missing")) is None
    assert config_lookup(_Mapping({"a": _Mapping({"b": 2})}), ("a.b",)) == 2


def _master_log_context(tmp_path, build):
    from labfolio.notebook.context import build_context
    from labfolio.notebook.results import ResultsCache
    from labfolio.notebook.snapshot import read_snapshot
    from labfolio.store import open_store

    store = open_store(tmp_path / "store", recover=False)
    build(store)
    return build_context(read_snapshot(store), ResultsCache(None))


def test_master_cells_without_parsing_match_parsing(tmp_path):
    from labfolio.notebook.master_log import render_master_log, run_table_cells
    from labfolio.notebook.sync import master_table_cells
    from labfolio.store import Batch

    from .conftest import T0, add_run, build_study_store

    def build(store):
        build_study_store(store)
        add_run(store, "odd_run", experiment="odd", variant="a", seed=0, config={"lr": 1}, start=T0 + 9000, acc=0.5)
        store.write_batch(Batch(events=[
            {"type": "note", "scope": "run", "owner": "odd_run", "field": "conclusion", "value": "  padded  "},
            {"type": "status", "run_id": "odd_run", "status": "invalid", "reason": "eval on train"}]))

    ctx = _master_log_context(tmp_path, build)
    content = render_master_log(ctx)
    fast = run_table_cells(ctx, content)
    assert fast is not None and fast == master_table_cells(content)
    assert fast[("odd_run", "conclusion")] == "padded"


def test_master_cells_fall_back_when_a_cell_or_human_text_needs_parsing(tmp_path):
    from labfolio.notebook.master_log import render_master_log, run_table_cells
    from labfolio.store import Batch

    from .conftest import build_study_store

    def with_bar(store):
        build_study_store(store)
        run_id = store.list_runs()[0].run_id
        store.write_batch(Batch(events=[{"type": "note", "scope": "run", "owner": run_id, "field": "conclusion",
                                         "value": "a | b\nsecond line"}]))

    ctx = _master_log_context(tmp_path / "bar", with_bar)
    assert run_table_cells(ctx, render_master_log(ctx)) is None

    def with_marker(store):
        build_study_store(store)
        store.write_batch(Batch(events=[{"type": "note", "scope": "project", "owner": "", "field": "decisions",
                                         "value": "<!-- labfolio:begin training -->\n| Run ID | Status |"}]))

    ctx = _master_log_context(tmp_path / "marker", with_marker)
    assert run_table_cells(ctx, render_master_log(ctx)) is None


def test_render_table_matches_escaping_every_cell():
    from enum import Enum

    from labfolio.notebook.mdtext import render_table

    class Named(str, Enum):
        A = "a"

    rng = random.Random(11)
    pieces = ["x", "a|b", "a\\|b", "line\nbreak", "", " pad ", None, 3, 0.5, Named.A, "`id`", "|", "\\"]
    for _ in range(3000):
        width = rng.randint(0, 5)
        header = [rng.choice(pieces) for _ in range(width)]
        rows = [[rng.choice(pieces) for _ in range(rng.randint(0, width))] for _ in range(rng.randint(0, 3))]
        expected = ["| " + " | ".join(escape_cell(h) for h in header) + " |",
                    "| " + " | ".join("---" for _ in header) + " |"]
        expected += ["| " + " | ".join(escape_cell(c) for c in list(row) + [""] * (width - len(row))) + " |"
                     for row in rows]
        assert render_table(header, rows) == expected


def test_json_text_matches_json_dumps():
    import json
    import math

    from labfolio.notebook.experiment_note import json_text

    class Odd:
        def __str__(self):
            return "odd"

    values = [0, -7, 10**30, 0.1, -0.0, 1e300, 5e-324, math.inf, -math.inf, math.nan, True, False, None, "a\"b",
              "ünï", [1, 2.5, None], {"k": [True]}, (1, 2), Odd()]
    for value in values:
        assert json_text(value) == json.dumps(value, default=str), value
