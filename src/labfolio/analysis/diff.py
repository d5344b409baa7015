"""Config diffs: what changed between two runs, a variant and its baseline, an experiment and its previous.

"Difference from the previous experiment" used to be prose typed from memory, and changes got
confounded (one flag varied together with the batch size). Here it is computed:

- configs are flattened to dotted keys (``optimizer.lr``) and compared leaf by leaf;
- each change is added / removed / changed, rendered human-first: ``scheduler: whd → cosine``;
- keys that never matter (seeds, output paths, run names, W&B settings) are ignored by glob
  rules, and still listed separately so nothing is hidden;
- more than one real change is a confound, and ``ConfigDiff.confound_warning`` says so.

Numbers compare by value (``100 == 100.0``), tuples equal lists, NaN equals NaN.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from labfolio.analysis.runs import RunView

__all__ = [
    "MISSING",
    "VARIES",
    "DEFAULT_IGNORE",
    "VARYING_BY_DESIGN",
    "Change",
    "ConfigDiff",
    "flatten_config",
    "configs_unchanging",
    "shared_config",
    "is_ignored",
    "diff_configs",
    "diff_runs",
    "diff_variants",
    "diff_experiments",
    "inconsistent_variant_keys",
    "format_config_value",
]


class _Marker:
    """A named placeholder value that prints as its name (and is never equal to a config value)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


MISSING = _Marker("(unset)")  # the key is absent on that side
VARIES = _Marker("(varies)")  # the runs being summarised disagree on this key

# Glob patterns, matched case-insensitively against the full dotted key and each of its parts.
# Keys that differ between the runs of one variant by design (seeds, output paths, names): a
# note's "varies between runs" list leaves them out, and lists every other varying key.
VARYING_BY_DESIGN: tuple[str, ...] = (
    "seed", "*_seed", "seeds",
    "*dir", "*path", "output*",
    "wandb*", "run_name", "*_run_name", "run_id", "exp_name", "experiment_name",
)
DEFAULT_IGNORE: tuple[str, ...] = (
    *VARYING_BY_DESIGN,
    "checkpoint_every", "resume",  # when a run saves and which run it continues: not what it computes
    "profile_steps", "profile_start",  # which steps it times and profiles: not what it computes
    # how fast it runs (compilation, CUDA graphs, CPU threads, augmenting many batches at once)
    # and how often it logs: the same arithmetic up to rounding, so not a second change
    "compile", "compile_mode", "compile_unit", "cuda_graph_step", "threads", "augment_chunk",
    "log_every", "diag_every", "eval_batch_size",
)

_MAX_VALUE_WIDTH = 60  # longer values are cut, so one changed list cannot swamp a diff line


# Types that are never mappings: checked by identity first, since an isinstance() test against
# the Mapping ABC costs more than the rest of flattening a leaf
_LEAF_TYPES = frozenset({str, int, float, bool, type(None), list, tuple})


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys; an empty mapping stays a leaf (``{}``)."""
    flat: dict[str, Any] = {}
    _flatten_into(flat, config, prefix)
    return flat


def _flatten_into(flat: dict[str, Any], config: Mapping[str, Any], prefix: str) -> None:
    for key, value in config.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        kind = type(value)
        if (kind is dict or (kind not in _LEAF_TYPES and isinstance(value, Mapping))) and value:
            _flatten_into(flat, value, path)
        else:
            flat[path] = value


# While ``configs_unchanging()`` is active: id(config) -> (config, its flat form), and
# tuple of ids -> (configs, their shared config). The configs are kept referenced so an id is
# never reused for another object while its entry lives.
_MEMO: ContextVar[dict | None] = ContextVar("labfolio_config_memo", default=None)


@contextmanager
def configs_unchanging():
    """Within this block configs are promised not to change, so each one is flattened once and
    each group's shared config computed once (a notebook asks for the same ones many times)."""
    if _MEMO.get() is not None:
        yield
        return
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _flat(config: Mapping[str, Any], memo: dict | None) -> dict[str, Any]:
    """flatten_config(config), shared rather than copied: for callers that only read it."""
    if memo is None:
        return flatten_config(config)
    entry = memo.get(id(config))
    if entry is None or entry[0] is not config:
        entry = memo[id(config)] = (config, flatten_config(config))
    return entry[1]


def is_ignored(key: str, ignore: Iterable[str] = DEFAULT_IGNORE) -> bool:
    """True when the dotted `key` or any of its parts matches one of the `ignore` globs."""
    return _is_ignored(key, tuple(ignore))


@functools.lru_cache(maxsize=65536)
def _is_ignored(key: str, ignore: tuple[str, ...]) -> bool:
    # the same few hundred keys are asked about for every experiment
    lowered = key.lower()
    parts = [lowered, *lowered.split(".")]
    return any(fnmatchcase(part, pattern.lower()) for pattern in ignore for part in parts)


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    kind = type(a)
    if kind is type(b):  # the common cases, decided as the general rules below would
        if kind is str or kind is bool:
            return a == b
        if kind is float:
            return a == b or (math.isnan(a) and math.isnan(b))
        if kind is int:
            return float(a) == float(b)
    if isinstance(a, _Marker) or isinstance(b, _Marker):
        return False
    a_num = isinstance(a, (int, float)) and not isinstance(a, bool)
    b_num = isinstance(b, (int, float)) and not isinstance(b, bool)
    if a_num and b_num:
        return float(a) == float(b) or (math.isnan(float(a)) and math.isnan(float(b)))
    if a_num != b_num or isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def format_config_value(value: Any) -> str:
    """A config value as a diff prints it: JSON-like (true/null), strings bare, long values cut."""
    if isinstance(value, _Marker):
        return value.text
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value if value else '""'
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(format_config_value(v) for v in value) + "]"
    elif isinstance(value, Mapping):
        text = "{" + ", ".join(f"{k}: {format_config_value(v)}" for k, v in value.items()) + "}"
    else:
        text = str(value)
    if len(text) > _MAX_VALUE_WIDTH:
        text = text[: _MAX_VALUE_WIDTH - 1] + "…"
    return text


@dataclass(frozen=True)
class Change:
    """One leaf that differs: `old` is MISSING for an added key, `new` is MISSING for a removed one."""

    key: str  # dotted path, e.g. "optimizer.lr"
    old: Any
    new: Any

    @property
    def kind(self) -> str:
        """'added', 'removed' or 'changed'."""
        if self.old is MISSING:
            return "added"
        if self.new is MISSING:
            return "removed"
        return "changed"

    def render(self) -> str:
        """'scheduler: whd → cosine' (added/removed show '(unset)' on the empty side)."""
        return f"{self.key}: {format_config_value(self.old)} → {format_config_value(self.new)}"


@dataclass(frozen=True)
class ConfigDiff:
    """The differences between two configs, split into the ones that matter and the ignored ones."""

    changes: tuple[Change, ...]  # differences that matter, in config order
    ignored: tuple[Change, ...] = ()  # differences on ignored keys (seeds, paths, ...)

    def __bool__(self) -> bool:
        return bool(self.changes)

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys that differ (ignored ones left out)."""
        return tuple(change.key for change in self.changes)

    def of_kind(self, kind: str) -> tuple[Change, ...]:
        """Only the 'added', 'removed' or 'changed' entries."""
        return tuple(change for change in self.changes if change.kind == kind)

    def render(self, separator: str = "; ", empty: str = "no config differences") -> str:
        """One line: 'scheduler: whd → cosine; epochs: 100 → 320'."""
        return separator.join(change.render() for change in self.changes) if self.changes else empty

    def render_lines(self, bullet: str = "- ") -> list[str]:
        """One Markdown bullet per change (empty list when nothing differs)."""
        return [f"{bullet}{change.render()}" for change in self.changes]

    @property
    def settings(self) -> tuple[tuple[Change, ...], ...]:
        """The changes grouped by setting: a key and the copies of it that changed the same way.

        Configs often record one setting twice, as a flag and inside the config it built
        (``connection`` and ``model.connection.connection``). A change to such a pair is one
        change; the copy is the key that ends with ``.<the other key>`` and moved between the
        same two values. ``encoder.dropout`` and ``decoder.dropout`` are two settings.
        """
        groups: list[list[Change]] = []
        for change in sorted(self.changes, key=lambda c: c.key.count(".")):
            for group in groups:
                head = group[0]
                if (change.key.endswith("." + head.key) and _same(change.old, head.old)
                        and _same(change.new, head.new)):
                    group.append(change)
                    break
            else:
                groups.append([change])
        order = {change.key: index for index, change in enumerate(self.changes)}
        return tuple(tuple(group) for group in sorted(groups, key=lambda g: order[g[0].key]))

    @property
    def confounded(self) -> bool:
        """More than one setting differs, so an effect cannot be pinned on one of them."""
        return len(self.settings) > 1

    @property
    def confound_warning(self) -> str | None:
        """A warning naming the keys when the diff is confounded, else None."""
        if not self.confounded:
            return None
        keys = [group[0].key for group in self.settings]
        return (
            f"confounded: {len(keys)} keys differ ({', '.join(keys)}); "
            "a difference in results cannot be attributed to any one of them"
        )


def diff_configs(
    old: Mapping[str, Any], new: Mapping[str, Any], *, ignore: Iterable[str] = DEFAULT_IGNORE
) -> ConfigDiff:
    """Leaf-by-leaf differences from `old` to `new` (nested mappings or already-flat dicts)."""
    ignore = tuple(ignore)
    flat_old, flat_new = flatten_config(old), flatten_config(new)
    keys = list(flat_old) + [key for key in flat_new if key not in flat_old]
    changes: list[Change] = []
    ignored: list[Change] = []
    for key in keys:
        a, b = flat_old.get(key, MISSING), flat_new.get(key, MISSING)
        if a is not MISSING and b is not MISSING and _same(a, b):
            continue
        (ignored if is_ignored(key, ignore) else changes).append(Change(key, a, b))
    return ConfigDiff(tuple(changes), tuple(ignored))


def diff_runs(old: RunView, new: RunView, *, ignore: Iterable[str] = DEFAULT_IGNORE) -> ConfigDiff:
    """Config differences from run `old` to run `new`."""
    return diff_configs(old.config, new.config, ignore=ignore)


def shared_config(configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Flat config common to all `configs`: a key on which they disagree (or that some lack) is VARIES."""
    if not configs:
        return {}
    memo = _MEMO.get()
    if memo is not None:
        configs = tuple(configs)
        key = tuple(map(id, configs))
        entry = memo.get(key)
        if entry is None or any(a is not b for a, b in zip(entry[0], configs)):
            entry = memo[key] = (configs, _shared(configs, memo))
        return dict(entry[1])
    return _shared(configs, None)


def _shared(configs: Sequence[Mapping[str, Any]], memo: dict | None) -> dict[str, Any]:
    flats = [_flat(config, memo) for config in configs]
    first_flat, rest = flats[0], flats[1:]
    keys: dict[str, None] = dict.fromkeys(first_flat)
    for flat in rest:
        keys.update(dict.fromkeys(flat))
    shared: dict[str, Any] = {}
    for key in keys:
        first = first_flat.get(key, MISSING)
        if first is MISSING:
            shared[key] = VARIES
            continue
        for flat in rest:
            other = flat.get(key, MISSING)
            if other is not first and not _same(first, other):
                shared[key] = VARIES
                break
        else:
            shared[key] = first
    return shared


def _by_variant(runs: Iterable[RunView]) -> dict[str, list[RunView]]:
    groups: dict[str, list[RunView]] = {}
    for run in runs:
        groups.setdefault(run.variant, []).append(run)
    return groups


def diff_variants(
    runs: Iterable[RunView], baseline: str, *, ignore: Iterable[str] = DEFAULT_IGNORE
) -> dict[str, ConfigDiff]:
    """For one experiment's runs: each variant's config against the baseline variant's.

    A variant's config is what its seeds share (see ``shared_config``), so the seed itself and
    anything that differs between seeds does not show up as a variant difference.
    """
    groups = _by_variant(runs)
    if baseline not in groups:
        known = ", ".join(groups) or "none"
        raise KeyError(f"baseline variant {baseline!r} has no runs; variants: {known}")
    base = shared_config([run.config for run in groups[baseline]])
    return {
        variant: diff_configs(base, shared_config([run.config for run in members]), ignore=ignore)
        for variant, members in groups.items()
        if variant != baseline
    }


def diff_experiments(
    previous: Iterable[RunView], current: Iterable[RunView], *, ignore: Iterable[str] = DEFAULT_IGNORE
) -> ConfigDiff:
    """What changed from the `previous` experiment to the `current` one.

    Each experiment is summarised by the config all its runs share; keys that vary between its
    variants show as '(varies)', so a key that was fixed before and now varies (or the reverse)
    is reported too.
    """
    previous_config = shared_config([run.config for run in previous])
    current_config = shared_config([run.config for run in current])
    return diff_configs(previous_config, current_config, ignore=ignore)


def inconsistent_variant_keys(
    runs: Iterable[RunView], *, ignore: Iterable[str] = DEFAULT_IGNORE
) -> dict[str, tuple[str, ...]]:
    """Per variant, the keys (ignored ones aside) on which its runs disagree.

    Seeds of one variant should differ only in ignorable keys; anything else means a run is
    labelled as a variant it did not run.
    """
    ignore = tuple(ignore)
    found = {}
    for variant, members in _by_variant(runs).items():
        shared = shared_config([run.config for run in members])
        keys = tuple(k for k, v in shared.items() if v is VARIES and not is_ignored(k, ignore))
        if keys:
            found[variant] = keys
    return found
