"""Run code written for the common ``wandb`` calls unchanged: ``import labfolio.compat.wandb as wandb``.

The mapping: ``project`` → project, ``group`` → experiment, ``job_type`` → variant, ``name`` →
run name, ``config["seed"]`` (if present) → seed, ``dir`` → the labfolio folder, ``mode`` as is
(``dryrun`` means offline). Everything lands in labfolio's store and notebook.

Covered: ``init``, ``log`` (wandb's step and commit rules; nested dicts become ``a.b`` keys),
``config``, ``summary``, ``run``, ``finish``, ``define_metric`` (``step_metric`` gives a metric
its own x-axis, e.g. the epoch), ``Table``, ``Image`` and ``Histogram`` (stored as artifacts when
logged), ``alert`` (a run alert), ``save`` and ``log_artifact``/``Artifact`` (files stored as
artifacts), ``watch`` (records nothing, and says so once) and ``login`` (nothing to log in to).
Any other wandb call raises ``UnsupportedWandbCall`` naming the call.
"""

from __future__ import annotations

import enum
import fnmatch
import glob as globbing
import json
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .. import _CurrentRunAttribute
from .. import run as _run_module
from ..config import to_config_dict
from ..errors import ConfigError, LabfolioError, NoActiveRunError

__all__ = ["init", "log", "finish", "config", "summary", "run", "Run", "define_metric", "alert",
           "AlertLevel", "watch", "unwatch", "save", "log_artifact", "login", "Settings", "Table",
           "Image", "Histogram", "Artifact", "DefinedMetric", "UnsupportedWandbCall", "SUPPORTED_CALLS"]

config = _CurrentRunAttribute("config")
summary = _CurrentRunAttribute("summary")

SUPPORTED_CALLS = ("init", "log", "finish", "config", "summary", "run", "define_metric", "alert",
                   "AlertLevel", "watch", "unwatch", "save", "log_artifact", "login", "Settings",
                   "Table", "Image", "Histogram", "Artifact")
_MODE_ALIASES = {"dryrun": "offline", "online": "online", "offline": "offline", "disabled": "disabled",
                 "run": "online", "shared": "online"}
_BACKWARDS_STEP = r".*step went backwards.*"


class UnsupportedWandbCall(LabfolioError, AttributeError):
    """A wandb call that labfolio.compat.wandb does not cover."""


def _unsupported(call: str) -> UnsupportedWandbCall:
    return UnsupportedWandbCall(
        f"{call} is not supported by labfolio.compat.wandb; it covers "
        f"{', '.join(SUPPORTED_CALLS)}. Use labfolio's own API for the rest (import labfolio).")


class AlertLevel(str, enum.Enum):
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"


_SEVERITY = {"INFO": "info", "WARN": "warning", "ERROR": "critical"}


class Settings:
    """``wandb.Settings(...)``: accepted so ``init(settings=...)`` works; labfolio ignores it."""

    def __init__(self, **settings: Any):
        self.__dict__.update(settings)


@dataclass(frozen=True)
class DefinedMetric:
    """What ``define_metric`` returns: the metric and the metric it is plotted against."""

    name: str
    step_metric: str | None = None
    summary: str | None = None
    goal: str | None = None


# ---------------------------------------------------------------------------------------------
# media: each becomes a file, stored as an artifact of the run at the step it was logged
class _Media:
    kind = "file"
    suffix = ".json"

    def write(self, path: Path) -> None:  # pragma: no cover - every medium overrides it
        raise NotImplementedError

    def meta(self) -> dict:
        return {}


class Table(_Media):
    """``wandb.Table``: rows and named columns, stored as JSON ``{"columns", "data"}``."""

    kind = "table"
    suffix = ".table.json"

    def __init__(self, columns=None, data=None, rows=None, dataframe=None, **ignored: Any):
        if dataframe is not None:
            columns = [str(c) for c in dataframe.columns]
            data = dataframe.values.tolist()
        data = data if data is not None else rows
        self.data: list[list] = [list(row) for row in (data or [])]
        width = len(self.data[0]) if self.data else 0
        self.columns: list[str] = list(columns) if columns is not None else [f"col{i}" for i in range(width)]
        for row in self.data:
            self._check_width(row)

    def _check_width(self, row) -> None:
        if len(row) != len(self.columns):
            raise ConfigError(f"wandb.Table row {row!r} has {len(row)} values for {len(self.columns)} "
                              f"columns {self.columns}")

    def add_data(self, *row: Any) -> None:
        self._check_width(row)
        self.data.append(list(row))

    def add_column(self, name: str, data) -> None:
        data = list(data)
        if self.data and len(data) != len(self.data):
            raise ConfigError(f"wandb.Table.add_column({name!r}) got {len(data)} values for {len(self.data)} rows")
        self.columns.append(name)
        self.data = [[*row, value] for row, value in zip(self.data, data)] if self.data else [[v] for v in data]

    def get_column(self, name: str) -> list:
        index = self.columns.index(name)
        return [row[index] for row in self.data]

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"columns": self.columns, "data": self.data}, default=_jsonable))

    def meta(self) -> dict:
        return {"columns": self.columns, "rows": len(self.data)}


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, _Media):
        return f"<{type(value).__name__}>"
    return str(value)


class Image(_Media):
    """``wandb.Image``: a file path, a PIL image, a matplotlib figure, or an HxW / HxWxC / CxHxW
    array or tensor. Stored as PNG (a path is stored as the file it names)."""

    kind = "image"
    suffix = ".png"

    def __init__(self, data_or_path, mode: str | None = None, caption: str | None = None,
                 normalize: bool = True, **ignored: Any):
        self.caption = caption
        self._path: Path | None = None
        self._pil = self._figure = self._array = None
        if isinstance(data_or_path, (str, os.PathLike)):
            self._path = Path(data_or_path)
            if not self._path.is_file():
                raise ConfigError(f"wandb.Image({str(data_or_path)!r}): no such file")
            self.suffix = self._path.suffix or ".png"
        elif hasattr(data_or_path, "savefig"):
            self._figure = data_or_path
        elif type(data_or_path).__module__.startswith("PIL."):
            self._pil = data_or_path.convert(mode) if mode else data_or_path
        else:
            self._array = _image_array(data_or_path, normalize)

    def write(self, path: Path) -> None:
        if self._path is not None:
            path.write_bytes(self._path.read_bytes())
        elif self._figure is not None:
            self._figure.savefig(path, format="png")
        elif self._pil is not None:
            self._pil.save(path, format="PNG")
        else:
            _write_png(self._array, path)

    def meta(self) -> dict:
        return {"caption": self.caption} if self.caption else {}


def _image_array(data, normalize: bool) -> np.ndarray:
    """An HxW or HxWxC uint8 array from an array or tensor (read without importing torch)."""
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    array = np.asarray(data)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # CxHxW -> HxWxC
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ConfigError(f"wandb.Image got an array of shape {tuple(np.shape(data))}; pass HxW, HxWxC "
                          "or CxHxW with 1, 3 or 4 channels")
    if array.dtype != np.uint8:
        array = array.astype(np.float64)
        if normalize:
            if array.size and array.min() < 0:
                array = (array + 1.0) / 2.0  # [-1, 1] -> [0, 1]
            if array.size and array.max() <= 1.0:
                array = array * 255.0  # [0, 1] -> [0, 255]
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
    return array


def _write_png(array: np.ndarray, path: Path) -> None:
    try:
        from PIL import Image as PILImage
    except ModuleNotFoundError:
        import matplotlib.image  # a core dependency: PNG without pillow

        matplotlib.image.imsave(path, array, cmap="gray" if array.ndim == 2 else None)
        return
    PILImage.fromarray(array).save(path, format="PNG")


class Histogram(_Media):
    """``wandb.Histogram``: bin edges and counts, from values or from ``np.histogram`` output."""

    kind = "histogram"
    suffix = ".histogram.json"

    def __init__(self, sequence=None, np_histogram=None, num_bins: int = 64):
        if np_histogram is not None:
            counts, edges = np_histogram
        elif sequence is not None:
            values = sequence.detach().cpu().numpy() if hasattr(sequence, "detach") else sequence
            counts, edges = np.histogram(np.asarray(values, dtype=np.float64).ravel(), bins=num_bins)
        else:
            raise ConfigError("wandb.Histogram needs a sequence of values or np_histogram=(counts, edges)")
        self.counts = np.asarray(counts).tolist()
        self.bins = np.asarray(edges).tolist()
        if len(self.bins) != len(self.counts) + 1:
            raise ConfigError(f"wandb.Histogram: {len(self.bins)} bin edges for {len(self.counts)} counts; "
                              "edges must number counts + 1")

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"bins": self.bins, "counts": self.counts}))

    def meta(self) -> dict:
        return {"bins": len(self.counts)}


class Artifact:
    """``wandb.Artifact``: named files of a type, stored as run artifacts when logged."""

    def __init__(self, name: str, type: str, description: str | None = None,
                 metadata: dict | None = None, **ignored: Any):
        self.name, self.type, self.description = name, type, description
        self.metadata = dict(metadata or {})
        self.files: list[tuple[Path, str]] = []
        self._scratch: tempfile.TemporaryDirectory | None = None

    def add_file(self, local_path: str | os.PathLike, name: str | None = None, **ignored: Any):
        path = Path(local_path)
        if not path.is_file():
            raise ConfigError(f"Artifact.add_file({str(local_path)!r}): no such file")
        self.files.append((path, name or path.name))
        return path

    def add_dir(self, local_path: str | os.PathLike, name: str | None = None, **ignored: Any) -> None:
        root = Path(local_path)
        if not root.is_dir():
            raise ConfigError(f"Artifact.add_dir({str(local_path)!r}): no such folder")
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = path.relative_to(root).as_posix()
            self.files.append((path, f"{name}/{relative}" if name else relative))

    def new_file(self, name: str, mode: str = "w", encoding: str | None = None):
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="labfolio-artifact-")
        path = Path(self._scratch.name) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        self.files.append((path, name))
        return open(path, mode, encoding=encoding)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise _unsupported(f"wandb.Artifact.{name}")


# ---------------------------------------------------------------------------------------------
class Run:
    """The handle ``wandb.init`` returns; ``wandb.run`` is the active one (None before init)."""

    def __init__(self, inner):
        self._inner = inner
        # wandb's history row counter; a resumed labfolio run continues after its last step.
        self._step = int(getattr(inner, "_next_step", 0) or 0)
        self._step_of: dict[str, str] = {}  # metric -> the metric it is plotted against
        self._step_globs: list[tuple[str, str]] = []
        self._step_values: dict[str, float] = {}
        self._saved: list[tuple[str, str | None, str]] = []  # glob, base path, policy
        self._saved_digests: dict[str, str] = {}
        self._warned: set[str] = set()

    id = property(lambda self: self._inner.id)
    name = property(lambda self: self._inner.name)
    config = property(lambda self: self._inner.config)
    summary = property(lambda self: self._inner.summary)
    project = property(lambda self: getattr(self._inner, "project", ""))
    group = property(lambda self: getattr(self._inner, "experiment", ""))
    job_type = property(lambda self: getattr(self._inner, "variant", ""))
    step = property(lambda self: self._step)
    entity = property(lambda self: "")
    url = property(lambda self: None)  # labfolio runs live in the local store, not at a URL

    @property
    def dir(self) -> str:
        location = getattr(self._inner, "location", None)
        return str(location.home) if location is not None else tempfile.gettempdir()

    @property
    def _disabled(self) -> bool:
        return getattr(self._inner, "mode", "") == "disabled"

    # -- log ------------------------------------------------------------------------------------
    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
        """wandb's rules: without ``step`` each call is a new step unless ``commit=False``; with
        ``step`` the data goes to that step and the next call stays there unless ``commit=True``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"wandb.log() takes a dict of name -> value, not {type(data).__name__}")
        if step is not None:
            target = int(step)
            self._step = max(self._step, target)
            commit = bool(commit)
        else:
            target = self._step
            commit = True if commit is None else commit
        numbers: dict[str, Any] = {}
        media: dict[str, Any] = {}
        for key, value in _flatten(data).items():
            if value is None:
                continue
            if isinstance(value, _Media) or (isinstance(value, (list, tuple)) and value
                                             and all(isinstance(v, _Media) for v in value)):
                media[key] = value
            elif isinstance(value, str):
                self._keep_text(key, value)
            else:
                numbers[key] = value
        self._remember_x_axes(numbers)
        for key, value in media.items():
            self._log_media(key, value, self._x_of(key, target))
        self._log_numbers(numbers, target)
        if commit:
            self._step = max(self._step, target) + 1

    def _remember_x_axes(self, numbers: dict) -> None:
        x_axes = {*self._step_of.values(), *(metric for _, metric in self._step_globs)}
        for key in x_axes.intersection(numbers):
            try:
                self._step_values[key] = float(numbers[key])
            except (TypeError, ValueError):
                pass  # Run.log names the bad value

    def _log_numbers(self, numbers: dict, target: int) -> None:
        if not (self._step_of or self._step_globs):
            if numbers:
                self._inner.log(numbers, step=target)
            return
        by_step: dict[int, dict] = {}
        for key, value in numbers.items():
            by_step.setdefault(self._x_of(key, target), {})[key] = value
        default = by_step.pop(target, None)
        # Metrics with their own x-axis land at that axis' value, ahead of or behind the global
        # step: steps jump by design here, which labfolio would otherwise warn about.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_BACKWARDS_STEP)
            for x, group in sorted(by_step.items()):
                self._inner.log(group, step=x)
            if default:  # last, so the run's latest step is the global one
                self._inner.log(default, step=target)

    def _x_of(self, key: str, target: int) -> int:
        metric = self._step_of.get(key)
        if metric is None:
            metric = next((m for pattern, m in self._step_globs if fnmatch.fnmatchcase(key, pattern)), None)
        if metric is None or metric == key:
            return target
        x = self._step_values.get(metric)
        if x is None or not float(x).is_integer():
            if x is not None and f"x:{metric}" not in self._warned:
                self._warned.add(f"x:{metric}")
                warnings.warn(f"wandb.define_metric: {metric}={x} is not a whole number, and labfolio "
                              f"steps are integers; metrics plotted against {metric} are logged at "
                              "the run's step instead", RuntimeWarning, stacklevel=4)
            return target
        return int(x)

    def _keep_text(self, key: str, value: str) -> None:
        if f"text:{key}" not in self._warned:
            self._warned.add(f"text:{key}")
            print(f"labfolio: wandb.log got text for {key!r}; metrics are numbers, so it is kept as "
                  "the run's summary value", file=sys.stderr)
        self._inner.summary[key] = value

    def _log_media(self, key: str, value, step: int) -> None:
        if self._disabled:
            return
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        with tempfile.TemporaryDirectory(prefix="labfolio-media-") as scratch:
            for index, medium in enumerate(items):
                name = f"{key}_{index}" if len(items) > 1 else key
                path = Path(scratch) / f"{_file_safe(name)}{medium.suffix}"
                try:
                    medium.write(path)
                    self._inner.log_artifact(path, kind=medium.kind, name=f"{name}{medium.suffix}",
                                             step=step, meta={"key": key, **medium.meta()})
                except (OSError, ValueError) as exc:  # a tracker problem must not stop training
                    warnings.warn(f"labfolio could not store {key!r} ({type(medium).__name__}): {exc}",
                                  RuntimeWarning, stacklevel=4)

    # -- the rest of the run API ------------------------------------------------------------------
    def define_metric(self, name: str, step_metric: str | None = None, step_sync: bool | None = None,
                      hidden: bool | None = None, summary: str | None = None, goal: str | None = None,
                      overwrite: bool | None = None, **ignored: Any) -> DefinedMetric:
        """Plot ``name`` (a key, or a glob such as ``"val/*"``) against ``step_metric``: its points
        are stored at that metric's latest value instead of the global step. ``summary`` and
        ``goal`` are accepted; labfolio keeps last/min/max of every metric and picks the best one
        from the metric's name."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"define_metric needs a metric name, got {name!r}")
        if step_metric:
            if "*" in name:
                self._step_globs = [(p, m) for p, m in self._step_globs if p != name] + [(name, step_metric)]
            else:
                self._step_of[name] = step_metric
        return DefinedMetric(name, step_metric, summary, goal)

    def alert(self, title: str, text: str = "", level: str | AlertLevel | None = None,
              wait_duration: Any = None) -> None:
        level_name = (level.value if isinstance(level, AlertLevel) else str(level or "INFO")).upper()
        if level_name not in _SEVERITY:
            raise ConfigError(f"wandb.alert level {level!r}: use AlertLevel.INFO, WARN or ERROR")
        self._inner.alert(f"{title}: {text}" if text else title, kind="user", severity=_SEVERITY[level_name])

    def watch(self, models=None, criterion=None, log: str | None = "gradients", log_freq: int = 1000,
              idx: int | None = None, log_graph: bool = False) -> None:
        if "watch" not in self._warned:
            self._warned.add("watch")
            warnings.warn("wandb.watch() records nothing under labfolio: it does not hook into the "
                          "model. Log what you need yourself, e.g. wandb.log({'grad_norm': norm}).",
                          UserWarning, stacklevel=3)

    def unwatch(self, models=None) -> None:
        pass

    def save(self, glob_str: str | os.PathLike, base_path: str | os.PathLike | None = None,
             policy: str = "live") -> list[str]:
        """Store the files matching ``glob_str`` as artifacts now; with policy "live" or "end",
        files that appear or change before ``finish`` are stored again then."""
        if policy not in ("live", "now", "end"):
            raise ConfigError(f"wandb.save policy {policy!r}: use 'live', 'now' or 'end'")
        pattern = os.fspath(glob_str)
        stored = self._store_matches(pattern, base_path)
        if policy != "now":
            self._saved.append((pattern, None if base_path is None else os.fspath(base_path), policy))
        elif not stored:
            warnings.warn(f"wandb.save({pattern!r}) matched no file", RuntimeWarning, stacklevel=2)
        return stored

    def _store_matches(self, pattern: str, base_path: str | None) -> list[str]:
        if self._disabled:
            return []
        stored = []
        for match in sorted(globbing.glob(pattern, recursive=True)):
            path = Path(match)
            if not path.is_file():
                continue
            digest = _sha256(path)
            if self._saved_digests.get(str(path.resolve())) == digest:
                continue  # stored already, unchanged
            name = os.path.relpath(path, base_path) if base_path else path.name
            self._inner.log_artifact(path, kind=None, name=name, meta={"saved_by": "wandb.save"})
            self._saved_digests[str(path.resolve())] = digest
            stored.append(str(path))
        return stored

    def _store_changed_saves(self) -> None:
        for pattern, base_path, _ in self._saved:
            self._store_matches(pattern, base_path)

    def log_artifact(self, artifact_or_path, name: str | None = None, type: str | None = None,
                     aliases=None, tags=None, **ignored: Any):
        if isinstance(artifact_or_path, Artifact):
            artifact = artifact_or_path
            for path, file_name in artifact.files:
                self._inner.log_artifact(path, kind=artifact.type, name=f"{artifact.name}/{file_name}",
                                         meta={"artifact": artifact.name, "aliases": list(aliases or []),
                                               "description": artifact.description,
                                               "metadata": to_config_dict(artifact.metadata, warn=False)})
            return artifact
        path = Path(artifact_or_path)
        self._inner.log_artifact(path, kind=type, name=name or path.name)
        return None

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        global _active
        if not self._disabled:
            self._store_changed_saves()
        self._inner.finish("finished" if not exit_code else "failed",
                           **({"exit_reason": f"exit code {exit_code}"} if exit_code else {}))
        if _active is self:
            _active = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        global _active
        if not self._disabled and exc_type is None:
            self._store_changed_saves()
        self._inner.__exit__(exc_type, exc, tb)
        if _active is self:
            _active = None

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise _unsupported(f"wandb.Run.{name}")


def _flatten(data: Mapping, prefix: str = "") -> dict:
    # wandb shows a nested dict's values as "outer.inner" keys
    out: dict = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _file_safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:100] or "medium"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
_active: Run | None = None


def init(project: str | None = None, name: str | None = None, config: Any = None,
         group: str | None = None, job_type: str | None = None, tags=None, notes: str | None = None,
         dir: str | os.PathLike | None = None, mode: str | None = None, id: str | None = None,
         resume: bool | str | None = None, reinit: bool | None = None, entity: str | None = None,
         **ignored: Any) -> Run:
    """``wandb.init`` with labfolio underneath. Unknown wandb arguments are accepted and ignored."""
    global _active
    config_dict = to_config_dict(config)
    seed = config_dict.get("seed")
    labfolio_dir = None
    if dir is not None:
        labfolio_dir = os.path.join(os.fspath(dir), ".labfolio")
    inner = _run_module.init(
        project=project, experiment=group, variant=job_type, seed=seed if isinstance(seed, int) else None,
        config=config_dict, name=name, tags=tags, notes=notes, dir=labfolio_dir,
        mode=_MODE_ALIASES.get((mode or os.environ.get("WANDB_MODE") or "online").lower(), "online"),
        run_id=id, resume=resume,
    )
    _active = Run(inner)
    return _active


def _handle(call: str) -> Run:
    """The active run's handle; a run started with ``labfolio.init`` gets one on first use."""
    global _active
    try:
        current = _run_module.current_run()
    except NoActiveRunError:
        raise NoActiveRunError(f"wandb.{call}() before wandb.init(): call wandb.init() first") from None
    if _active is None or _active._inner is not current:
        _active = Run(current)
    return _active


def log(data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    _handle("log").log(data, step=step, commit=commit)


def define_metric(name: str, step_metric: str | None = None, **kwargs: Any) -> DefinedMetric:
    return _handle("define_metric").define_metric(name, step_metric, **kwargs)


def alert(title: str, text: str = "", level: str | AlertLevel | None = None, wait_duration: Any = None) -> None:
    _handle("alert").alert(title, text, level, wait_duration)


def watch(models=None, criterion=None, log: str | None = "gradients", log_freq: int = 1000,
          idx: int | None = None, log_graph: bool = False) -> None:
    _handle("watch").watch(models, criterion, log, log_freq, idx, log_graph)


def unwatch(models=None) -> None:
    pass


def save(glob_str: str | os.PathLike, base_path: str | os.PathLike | None = None, policy: str = "live") -> list[str]:
    return _handle("save").save(glob_str, base_path, policy)


def log_artifact(artifact_or_path, name: str | None = None, type: str | None = None, aliases=None, **kwargs: Any):
    return _handle("log_artifact").log_artifact(artifact_or_path, name, type, aliases, **kwargs)


def login(*args: Any, **kwargs: Any) -> bool:
    """Nothing to log in to: labfolio writes to a local (or your own) store."""
    return True


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    global _active
    if _active is not None:
        _active.finish(exit_code, quiet)
        _active = None


def __getattr__(name: str):
    if name == "run":  # wandb.run is None until init()
        return _active
    if name.startswith("__"):
        raise AttributeError(name)
    raise _unsupported(f"wandb.{name}")
