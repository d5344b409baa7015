"""Bring TensorBoard event files into the store: ``labfolio import tensorboard DIR``.

Event files are read with TensorBoard's own ``EventAccumulator``. One run per event folder,
except for the folders a single ``SummaryWriter`` spreads one run over, which fold into the run
of the nearest event folder above them:

- ``add_scalars("grp", {"a": ..})`` writes tag ``grp`` into ``<run>/grp_a/``: imported as ``grp/a``;
- ``add_hparams(hparams, metrics)`` writes into ``<run>/<timestamp>/``: the hparams become the
  run's config and the metric values its summary;
- any other nested folder ``<run>/sub/`` contributes its tags as ``sub/<tag>``.

Scalars (legacy ``simple_value`` and TF2 scalar tensors) become metric series, hparams the
config, text summaries the run's notes. Images, histograms, audio and other plugins are counted
and skipped. The run id is derived from the event file names, so importing the same folder
again (even after moving it) finds the run and writes nothing.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import ConfigError
from .importing import (ImportedRun, Series, already_imported, finite_time, open_target_store,
                        stable_run_id, write_imported_run)

__all__ = ["import_tensorboard", "find_event_runs", "EventRun", "EVENT_FILE_MARKER"]

EVENT_FILE_MARKER = "tfevents"
_INSTALL_HINT = "reading TensorBoard event files needs tensorboard: pip install 'labfolio[tensorboard]'"
# hparams plugin session status -> labfolio run state (anything else: the run finished)
_SESSION_STATES = {2: "failed"}  # STATUS_FAILURE


@dataclass
class EventRun:
    """One run to import: its own event folder and the nested folders that fold into it."""

    folder: Path
    nested: list[Path] = field(default_factory=list)

    @property
    def folders(self) -> list[Path]:
        return [self.folder, *self.nested]

    def event_files(self) -> list[Path]:
        return sorted(p for folder in self.folders for p in _event_files_in(folder))


def _event_files_in(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.is_file() and EVENT_FILE_MARKER in p.name]


def find_event_runs(logdir: str | os.PathLike) -> list[EventRun]:
    """The runs under ``logdir``: event folders, with nested event folders folded into the
    nearest event folder above them."""
    root = Path(logdir).expanduser()
    if not root.exists():
        raise ConfigError(f"{root} does not exist: pass the folder TensorBoard was pointed at (--logdir)")
    if root.is_file():
        root = root.parent  # an event file names its folder
    folders = sorted({Path(dirpath) for dirpath, _, files in os.walk(root)
                      if any(EVENT_FILE_MARKER in name for name in files)},
                     key=lambda p: (len(p.parts), str(p)))
    runs: dict[Path, EventRun] = {}
    for folder in folders:
        owner = next((parent for parent in folder.parents if parent in runs), None)
        if owner is None:
            runs[folder] = EventRun(folder)
        else:
            runs[owner].nested.append(folder)
    if not runs:
        raise ConfigError(f"no TensorBoard event files (events.out.tfevents.*) under {root}")
    return list(runs.values())


def _load_tensorboard():
    try:
        from tensorboard.backend.event_processing import event_accumulator
        from tensorboard.plugins.hparams import metadata as hparams_metadata
        from tensorboard.util import tensor_util
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{_INSTALL_HINT} ({exc.name} is missing)") from None
    return event_accumulator, hparams_metadata, tensor_util


def _accumulator(event_accumulator, folder: Path):
    guidance = {event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0,  # 0: keep every point
                event_accumulator.IMAGES: 1, event_accumulator.AUDIO: 1,
                event_accumulator.HISTOGRAMS: 1, event_accumulator.COMPRESSED_HISTOGRAMS: 1}
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance=guidance)
    acc.Reload()
    return acc


def _hparam_value(value):
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        # TensorBoard keeps every number as a double; 32 reads better than 32.0 in a config.
        return int(number) if number.is_integer() and abs(number) < 2 ** 53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "string_value":
        return value.string_value
    return None


@dataclass
class _Collected:
    series: dict[str, Series] = field(default_factory=lambda: defaultdict(Series))
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    texts: list[tuple[str, int, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_time: float | None = None
    last_time: float | None = None
    state: str = "finished"

    def saw_time(self, when: float | None) -> None:
        when = finite_time(when)
        if when is None:
            return
        self.first_time = when if self.first_time is None else min(self.first_time, when)
        self.last_time = when if self.last_time is None else max(self.last_time, when)


def _as_logged(value: float) -> float:
    """The shortest decimal that a float32 ``simple_value`` holds: 0.9, not 0.8999999761581421.

    Event files keep legacy scalars as float32; the number a script passed is the shortest
    decimal that rounds to that float32, so that is the value worth storing.
    """
    return float(str(np.float32(value)))


def _key_for(tag: str, relative: str) -> str:
    """The metric key of ``tag`` found in nested folder ``relative`` ("" for the run's own)."""
    if not relative:
        return tag
    leaf = relative.rsplit("/", 1)[-1]
    if leaf.startswith(f"{tag}_") and len(leaf) > len(tag) + 1:
        head = relative[: -len(leaf)]
        return f"{head}{tag}/{leaf[len(tag) + 1:]}"  # add_scalars("grp", {"a": ..}) -> grp/a
    return f"{relative}/{tag}"


def _read_hparams(acc, hparams_metadata, collected: _Collected) -> bool:
    try:
        content = acc.PluginTagToContent("hparams")
    except KeyError:
        return False
    found = False
    for tag, blob in content.items():
        if tag.endswith("session_start_info"):
            info = hparams_metadata.parse_session_start_info_plugin_data(blob)
            collected.config.update({name: _hparam_value(v) for name, v in info.hparams.items()})
            collected.saw_time(info.start_time_secs)
            found = True
        elif tag.endswith("session_end_info"):
            info = hparams_metadata.parse_session_end_info_plugin_data(blob)
            collected.state = _SESSION_STATES.get(int(info.status), collected.state)
            collected.saw_time(info.end_time_secs)
    return found


def _read_folder(folder: Path, relative: str, modules, collected: _Collected) -> None:
    event_accumulator, hparams_metadata, tensor_util = modules
    acc = _accumulator(event_accumulator, folder)
    holds_hparams = _read_hparams(acc, hparams_metadata, collected)
    tags = acc.Tags()
    for tag in tags.get("scalars", []):
        events = acc.Scalars(tag)
        if holds_hparams and relative:
            # add_hparams' own folder: its scalars are the metric values of the hparams table.
            collected.summary[tag] = _as_logged(events[-1].value)
            continue
        points = collected.series[_key_for(tag, relative)]
        for event in events:
            points.add(event.step, _as_logged(event.value), event.wall_time)
            collected.saw_time(event.wall_time)
    for tag in tags.get("tensors", []):
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        events = acc.Tensors(tag)
        if plugin == "scalars":
            points = collected.series[_key_for(tag, relative)]
            for event in events:
                points.add(event.step, float(tensor_util.make_ndarray(event.tensor_proto).reshape(())),
                           event.wall_time)
                collected.saw_time(event.wall_time)
        elif plugin == "text":
            name = tag[: -len("/text_summary")] if tag.endswith("/text_summary") else tag
            name = f"{relative}/{name}" if relative else name
            for event in events:
                cells = tensor_util.make_ndarray(event.tensor_proto).reshape(-1)
                text = "\n".join(c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                                 for c in cells)
                collected.texts.append((name, int(event.step), text))
                collected.saw_time(event.wall_time)
        else:
            collected.skipped[f"{plugin or 'tensor'} tags"] += 1
    for kind in ("images", "audio", "histograms"):
        if tags.get(kind):
            collected.skipped[f"{kind} tags"] += len(tags[kind])


def _notes_from(texts: list[tuple[str, int, str]]) -> str | None:
    if not texts:
        return None
    return "\n\n".join(f"**{tag}** (step {step}): {text}" for tag, step, text in
                       sorted(texts, key=lambda t: (t[0], t[1])))


def _host_from(event_file: Path) -> str | None:
    """The writer's host name from ``events.out.tfevents.<time>.<host>[.<pid>.<n>][.v2]``."""
    name = event_file.name
    marker = f"{EVENT_FILE_MARKER}."
    if marker not in name:
        return None
    parts = name.split(marker, 1)[1].split(".")[1:]  # drop the timestamp
    if parts and parts[-1] == "v2":
        parts = parts[:-1]
    if len(parts) >= 3 and parts[-1].isdigit() and parts[-2].isdigit():
        parts = parts[:-2]
    return ".".join(parts) or None


def _relative(path: Path, base: Path) -> str:
    rel = path.relative_to(base).as_posix()
    return "" if rel == "." else rel


def import_tensorboard(logdir: str | os.PathLike, store=None, *, project: str | None = None,
                       experiment: str | None = None, variant: str | None = None,
                       tags: Iterable[str] = ()) -> list[ImportedRun]:
    """Import every run under ``logdir`` into ``store`` (an open store, a folder, a URL, or None
    for the project's store). Runs already imported are left alone.

    Defaults: the experiment is ``logdir``'s folder name, the variant and the run name are the
    run folder's path below ``logdir``.
    """
    root = Path(logdir).expanduser().resolve()
    runs = find_event_runs(root)
    base = root if root.is_dir() else root.parent
    modules = _load_tensorboard()
    target = open_target_store(store)
    results = []
    for event_run in runs:
        files = event_run.event_files()
        relative = _relative(event_run.folder, base)
        # Event file names carry the writer's start time, host and pid: unique and stable.
        identity = "\n".join(sorted(f"{_relative(f.parent, event_run.folder)}/{f.name}" for f in files))
        run_id = stable_run_id("tb", relative or base.name, identity)
        if already_imported(target, run_id):
            results.append(ImportedRun(run_id, str(event_run.folder), imported=False))
            continue
        collected = _Collected()
        for folder in event_run.folders:
            _read_folder(folder, _relative(folder, event_run.folder), modules, collected)
        seed = collected.config.get("seed")
        host = next((h for h in map(_host_from, files) if h), None)
        start = {
            "project": project or "", "experiment": experiment or base.name,
            "variant": variant if variant is not None else relative.replace("/", "_"),
            "name": relative or base.name, "seed": seed if isinstance(seed, int) else None,
            "tags": list(tags), "notes": _notes_from(collected.texts), "config": collected.config,
            "host": host, "machine": host, "started_at": collected.first_time,
            "provenance": {
                "machine": {"hostname": host} if host else {},
                "external": {"tracker": "tensorboard", "source": str(event_run.folder),
                             "event_files": [str(f.relative_to(event_run.folder)) for f in files]},
            },
        }
        series = {key: points for key, points in collected.series.items() if points.steps}
        written, points = write_imported_run(
            target, run_id=run_id, start=start, series=series, summary=collected.summary,
            state=collected.state, ended_at=collected.last_time)
        results.append(ImportedRun(run_id, str(event_run.folder), imported=written, points=points,
                                   skipped=dict(collected.skipped)))
    return results
