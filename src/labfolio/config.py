"""Turning whatever a script calls its config into faithful JSON, and the ``run.config`` object.

A run's config is what the code ran, so it must survive the trip into the store without being
silently changed: paths stay paths (as strings), enums keep their value, dataclasses and argparse
namespaces become nested dicts, numpy scalars become numbers. Anything else is stored as its
``repr`` with one warning, so it is at least visible.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, Callable

import numpy as np

__all__ = ["to_config_dict", "to_config_value", "Config"]


def to_config_value(value: Any, on_repr: Callable[[str, Any], None] | None = None, path: str = "") -> Any:
    """A JSON-safe copy of one config value (recursively)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        inner = value.value
        return inner if isinstance(inner, (str, int, float, bool)) else value.name
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        # JSON has no NaN/Inf; keep them readable and reversible as strings.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, np.ndarray):
        if value.size <= 1000:
            return to_config_value(value.tolist(), on_repr, path)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_config_value(getattr(value, f.name), on_repr, f"{path}.{f.name}".lstrip("."))
                for f in dataclasses.fields(value)}
    elif isinstance(value, argparse.Namespace):
        return to_config_value(vars(value), on_repr, path)
    elif isinstance(value, Mapping):
        return {str(k): to_config_value(v, on_repr, f"{path}.{k}".lstrip(".")) for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        return [to_config_value(v, on_repr, f"{path}[{i}]") for i, v in enumerate(value)]
    elif isinstance(value, (set, frozenset)):
        items = [to_config_value(v, on_repr, path) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    elif isinstance(value, os.PathLike):
        return os.fspath(value)
    if on_repr is not None:
        on_repr(path, value)
    return repr(value)


def to_config_dict(config: Any, *, warn: bool = True) -> dict:
    """Normalise ``config`` (dict, dataclass, argparse Namespace, None) into a JSON-safe dict."""
    if config is None:
        return {}
    unusual: list[str] = []

    def remember(path: str, value: Any) -> None:
        unusual.append(f"{path or '<config>'} ({type(value).__name__})")

    result = to_config_value(config, remember)
    if not isinstance(result, dict):
        raise TypeError(
            f"config must be a dict, dataclass or argparse.Namespace, not {type(config).__name__}"
        )
    if unusual and warn:
        warnings.warn(
            "labfolio stored these config values as their repr(), since they have no faithful "
            f"JSON form: {', '.join(unusual[:10])}{' …' if len(unusual) > 10 else ''}",
            stacklevel=3,
        )
    return result


class Config:
    """``run.config``: attribute and item access over the run's config; updates are recorded.

    Nested dicts are returned as plain dicts; updating goes through ``update`` or item/attribute
    assignment, each of which is journaled as a config change with its time.
    """

    __slots__ = ("_data", "_on_update")

    def __init__(self, data: dict, on_update: Callable[[dict], None]):
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_on_update", on_update)

    def update(self, values: Any = None, allow_val_change: bool = True, **kwargs) -> None:
        changes = to_config_dict(values) if values is not None else {}
        changes.update(to_config_dict(kwargs))
        if not changes:
            return
        self._data.update(changes)
        self._on_update(changes)

    def __getattr__(self, name: str):
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}; known keys: {sorted(self._data)}") from None

    def __setattr__(self, name: str, value) -> None:
        self.update({name: value})

    def __getitem__(self, key: str):
        return self._data[key]

    def __setitem__(self, key: str, value) -> None:
        self.update({key: value})

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default=None):
        return self._data.get(key, default)

    def keys(self):
        return self._data.keys()

    def items(self):
        return self._data.items()

    def as_dict(self) -> dict:
        return json.loads(json.dumps(self._data))

    def __repr__(self) -> str:
        return f"Config({self._data!r})"
