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
