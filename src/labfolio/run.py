"""A run: its lifecycle, the nearly free ``log()``, and the background writer behind it.

``log()`` does three things in the caller's thread: pick the precompiled encoder for this set of
keys, check the values are plain numbers, and copy one record into the run's memory-mapped journal
(see ``journal.py``). Everything else (decoding, summaries, alerts, the database) happens in the
background drainer. GPU tensors are detached and handed to that thread, which reads them, so the
training loop never waits for the device.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from . import distributed
from .artifacts import store_bytes, store_file
from .config import Config, to_config_dict
from .drain import BackgroundDrainer
from .errors import ConfigError, JournalError, MetricKeyError, MetricValueError, NoActiveRunError
from .journal import JournalWriter, split_position
from .live_rules import live_monitor
from .settings import StoreLocation, fallback_journal_dir, resolve_store
from .store.schema import MAX_KEY_LENGTH

__all__ = ["Run", "DisabledRun", "init", "current_run", "DEFAULT_RUN_ID_TEMPLATE", "MODES"]

DEFAULT_RUN_ID_TEMPLATE = "{experiment}_{variant}_s{seed}_{YYYYMMDD_HHMMSS}"
MODES = ("online", "offline", "disabled")
FINAL_DRAIN_TIMEOUT_S = float(os.environ.get("LABFOLIO_FINISH_TIMEOUT", 30))

# Values of these types go straight into the journal; anything else takes the checked slow path.
_PLAIN_TYPES = frozenset({float, int, bool, np.float64, np.float32, np.float16, np.int64, np.int32,
                          np.int16, np.int8, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_})
_now = time.time

_current: "Run | DisabledRun | None" = None


def current_run() -> "Run | DisabledRun":
    if _current is None:
        raise NoActiveRunError("no active labfolio run: call labfolio.init() first")
    return _current


class Summary:
    """``run.summary``: computed last/min/max/best per metric, plus explicit overrides."""

    def __init__(self, run: "Run"):
        self._run = run
        self._overrides: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, values: Mapping[str, Any]) -> None:
        clean = {}
        for key, value in values.items():
            _check_key(key)
            clean[key] = _summary_value(key, value)
        self._overrides.update(clean)
        self._run._journal_event({"type": "summary", "values": clean})

    def __getitem__(self, key: str) -> Any:
        if key in self._overrides:
            return self._overrides[key]
        latest = self._run._latest_values()
        if key in latest:
            return latest[key]
        raise KeyError(f"{key!r} has not been logged or set in this run's summary")

    def get(self, key: str, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return key in self._overrides or key in self._run._latest_values()

    def as_dict(self) -> dict[str, Any]:
        return {**self._run._latest_values(), **self._overrides}

    def keys(self):
        return self.as_dict().keys()

    def items(self):
        return self.as_dict().items()

    def __repr__(self) -> str:
        return f"Summary({self.as_dict()!r})"


def _summary_value(key: str, value: Any) -> Any:
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        return float(_scalar_of(key, value))
    except MetricValueError:
        return to_config_dict({"v": value}, warn=False)["v"]


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not key:
        raise MetricKeyError(f"metric keys must be non-empty strings, got {key!r}")
    if len(key) > MAX_KEY_LENGTH:
        raise MetricKeyError(
            f"metric key {key[:40]!r}… is {len(key)} characters; the limit is {MAX_KEY_LENGTH}: "
            "use a shorter name"
        )


def _scalar_of(key: str, value: Any) -> float:
    """A CPU-side number for ``value``; raises MetricValueError naming the key if it is not one."""
    if type(value) in _PLAIN_TYPES or isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, np.ndarray) or hasattr(value, "numel"):
        size = value.size if isinstance(value, np.ndarray) else value.numel()
        if size != 1:
            raise MetricValueError(
                f"metric {key!r} got a {type(value).__name__} with {size} elements; log one "
                "number per key (e.g. .mean() or .item()), or log a histogram as an artifact"
            )
        return float(value.reshape(()) if isinstance(value, np.ndarray) else value.detach().reshape(()))
    if isinstance(value, (str, bytes)) or value is None:
        raise MetricValueError(
            f"metric {key!r} got {type(value).__name__} {value!r}: run.log() takes numbers; put text "
            "in run.config, run.summary or notes"
        )
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MetricValueError(f"metric {key!r} got a {type(value).__name__}, which is not a number") from None


def _is_device_tensor(value: Any) -> bool:
    device = getattr(value, "device", None)
    return device is not None and getattr(device, "type", "cpu") not in ("cpu", "meta") and hasattr(value, "detach")


class Run:
    """One execution of one variant with one seed. Create it with ``labfolio.init``."""

    def __init__(self, *, run_id: str, location: StoreLocation, mode: str, start_event: dict,
                 journal_folder: Path, config: dict, on_alert: Callable | None,
                 attachments: tuple = (), first_step: int = 0, system_metrics: bool = False,
                 first_segment: int = 0, rules=None, vigilance: bool = True,
                 logged_through: Mapping[str, int] | None = None):
        self.id = run_id
        self.name = start_event.get("name") or run_id
        self.project = start_event.get("project") or ""
        self.experiment = start_event.get("experiment") or ""
        self.variant = start_event.get("variant") or ""
        self.seed = start_event.get("seed")
        self.mode = mode
        self.location = location
        self.state = "running"
        self._on_alert = on_alert
        self._journal = JournalWriter(journal_folder, header_event=start_event, first_segment=first_segment)
        self.journal_folder = journal_folder
        self._encoders: dict[tuple, Any] = {}
        # the first step this run logs: 0, or the step after the stored ones for a resumed run
        self.first_step = first_step
        # a resumed run's last stored step per key, so that code replaying steps from a checkpoint
        # can skip what its killed attempt had logged (empty for a new run)
        self.logged_through: dict[str, int] = dict(logged_through or {})
        self._next_step = first_step
        self._last_step = first_step - 1
        self._warned_backwards = False
        self._warned_nonfinite: set[str] = set()
        self._deferred: deque = deque()
        self._latest: dict[str, float] = {}
        self._latest_lock = threading.Lock()
        self._alerts: list[dict] = []
        self._inspected_upto = -1  # journal position of the last point the live checks saw
        self._monitor = live_monitor(config, rules) if vigilance else None
        self.config = Config(config, self._on_config_update)
        self.summary = Summary(self)
        self._finished = False
        self._finish_lock = threading.Lock()
        for attachment in attachments:
            self._store_attachment(attachment)
        open_store = None if mode == "offline" else self._open_store
        self._drainer = BackgroundDrainer(run_id, journal_folder, open_store,
                                          inspect=self._inspect, before_read=self._resolve_deferred,
                                          memory_segments=self._journal.memory_segments)
        self._drainer.start()
        self._sampler = None
        if system_metrics:
            self._start_system_metrics(system_metrics)

    # -- the hot path ---------------------------------------------------------------------------
    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool | None = None) -> None:
        """Record ``data`` (metric name → number) at ``step`` (default: the previous step + 1)."""
        if step is None:
            step = self._next_step
        elif step < self._last_step:
            self._warn_backwards(step)
        keys = tuple(data)
        encoder = self._encoders.get(keys)
        if encoder is None:
            encoder = self._new_encoder(keys)
        values = tuple(data.values())
        if _PLAIN_TYPES.issuperset(map(type, values)):
            self._journal.append_points(encoder, step, _now(), values)
        else:
            self._log_checked(encoder, step, values)
        self._last_step = step
        self._next_step = step + 1

    def _new_encoder(self, keys: tuple) -> Any:
        if self._finished:
            raise NoActiveRunError(f"run {self.id} has finished; call labfolio.init() for a new run")
        for key in keys:
            _check_key(key)
        encoder = self._journal.define_shape(keys)
        self._encoders[keys] = encoder
        return encoder

    def _log_checked(self, encoder, step: int, values: tuple) -> None:
        if any(_is_device_tensor(v) for v in values):
            # Reading a GPU tensor waits for the device; hand it to the drainer instead.
            for key, value in zip(encoder.keys, values):
                if hasattr(value, "numel") and value.numel() != 1:
                    _scalar_of(key, value)  # raises with the key named
            held = tuple(v.detach().clone() if _is_device_tensor(v) else v for v in values)
            self._deferred.append((encoder, step, _now(), held))
            return
        numbers = tuple(_scalar_of(key, value) for key, value in zip(encoder.keys, values))
        self._journal.append_points(encoder, step, _now(), numbers)

    def _resolve_deferred(self) -> None:
        while self._deferred:
            encoder, step, when, held = self._deferred.popleft()
            numbers = tuple(_scalar_of(key, value) for key, value in zip(encoder.keys, held))
            self._journal.append_points(encoder, step, when, numbers)

    def _warn_backwards(self, step: int) -> None:
        if not self._warned_backwards:
            self._warned_backwards = True
            warnings.warn(
                f"labfolio run {self.id}: step went backwards ({self._last_step} → {step}). The "
                "points are kept at the steps you gave; if you restarted a counter, log a custom "
                "x-axis (e.g. 'epoch') as a metric instead. This warning is shown once.",
                RuntimeWarning, stacklevel=3,
            )

    # -- background inspection (runs in the drainer thread) -------------------------------------
    def _inspect(self, records) -> list[dict]:
        """Runs in the drainer: remember the latest values, then run the live checks.

        A batch whose write failed is read again on the next attempt, so only points past the
        last inspected journal position are fed: each point is checked exactly once."""
        if not records.point_count:
            return []
        names, codes, values, steps = records.key_names, records.codes, records.values, records.steps
        fresh = records.seqs > self._inspected_upto
        if not fresh.all():
            codes, values, steps = codes[fresh], values[fresh], steps[fresh]
            if not codes.size:
                return []
        self._inspected_upto = int(records.seqs[-1])
        reversed_codes = codes[::-1]
        distinct, first_from_end = np.unique(reversed_codes, return_index=True)
        last_index = len(codes) - 1 - first_from_end
        latest = {names[c]: float(values[i]) for c, i in zip(distinct.tolist(), last_index.tolist())}
        with self._latest_lock:
            self._latest.update(latest)
        if self._monitor is not None:
            new_events = self._monitor_events(names, codes, steps, values)
        else:
            new_events = self._nonfinite_events(names, codes, steps, values)
        for event in new_events:
            self._raise_alert(event)
        if self.mode == "offline" and new_events:
            # Offline, nothing is written to the store now: the journal is the record, so the
            # alerts go there too and `labfolio sync` brings them in with the points.
            for event in new_events:
                self._journal.append_event(event)
            return []
        return new_events

    def _monitor_events(self, names, codes, steps, values) -> list[dict]:
        """Feed each key's new points to the live monitor; its alerts become journal events."""
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
        alerts = []
        try:
            for chunk in np.split(order, bounds):
                alerts.extend(self._monitor.feed(names[int(codes[chunk[0]])], steps[chunk], values[chunk]))
        except Exception as exc:  # a bug in a check must never stop the writer, nor training
            self._disable_monitor(exc)
        return [self._alert_event(alert) for alert in alerts]

    def _disable_monitor(self, exc: Exception) -> None:
        self._monitor = None
        warnings.warn(f"labfolio run {self.id}: live checks stopped after an internal error ({exc!r}); "
                      "logging continues, and `labfolio check` runs the same checks afterwards.",
                      RuntimeWarning)

    @staticmethod
    def _alert_event(alert) -> dict:
        return {"type": "alert", **alert.to_dict(), "time": _now()}

    def _nonfinite_events(self, names, codes, steps, values) -> list[dict]:
        """With live checks off, NaN and Inf are still flagged, once per key."""
        new_events = []
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            bad_codes, first_bad = np.unique(codes[bad], return_index=True)
            for code, index in zip(bad_codes.tolist(), bad[first_bad].tolist()):
                key = names[code]
                if key in self._warned_nonfinite:
                    continue
                self._warned_nonfinite.add(key)
                value, step = float(values[index]), int(steps[index])
                new_events.append({"type": "alert", "kind": "nan", "metric": key, "step": step,
                                   "severity": "critical", "value": value, "time": _now(),
                                   "message": f"{key} is {value} at step {step} (stored as logged)"})
        return new_events

    def _raise_alert(self, event: dict) -> None:
        self._alerts.append(event)
        print(f"labfolio alert [{event['severity']}] {self.id}: {event['message']}", file=sys.stderr)
        if self._on_alert is not None:
            try:
                self._on_alert(event)
            except Exception as exc:  # a broken callback must not stop the writer
                warnings.warn(f"labfolio on_alert callback raised {exc!r}", RuntimeWarning)

    def _latest_values(self) -> dict[str, float]:
        self.flush(timeout=5.0)
        with self._latest_lock:
            return dict(self._latest)

    @property
    def alerts(self) -> list[dict]:
        return list(self._alerts)

    # -- everything else goes through the journal too --------------------------------------------
    def _journal_event(self, event: dict) -> None:
        if self._finished:
            raise NoActiveRunError(f"run {self.id} has finished; call labfolio.init() for a new run")
        event.setdefault("time", _now())
        self._journal.append_event(event)

    def _on_config_update(self, changes: dict) -> None:
        self._journal_event({"type": "config", "update": changes})

    def log_artifact(self, path: str | os.PathLike, kind: str | None = None, *, name: str | None = None,
                     reference: bool | None = None, step: int | None = None,
                     meta: dict | None = None) -> dict:
        """Store a file by content (``reference=True`` records path, size and hash instead)."""
        stored = store_file(self.location.artifact_dir, path, kind=kind, name=name, reference=reference)
        event = stored.as_event(self._last_step if step is None else step, _now(), meta)
        self._journal_event(event)
        return event

    def _store_attachment(self, attachment) -> None:
        try:
            stored = store_bytes(self.location.artifact_dir, attachment.data, name=attachment.name,
                                 kind=attachment.kind)
        except OSError as exc:
            warnings.warn(f"labfolio could not store {attachment.name} for run {self.id}: {exc}",
                          RuntimeWarning)
            return
        self._journal_event(stored.as_event(None, _now()))

    def alert(self, message: str, *, kind: str = "user", metric: str | None = None,
              step: int | None = None, severity: str = "warning", value: float | None = None) -> None:
        """Attach an alert of your own to the run (printed once, stored, sent to on_alert)."""
        event = {"type": "alert", "kind": kind, "metric": metric,
                 "step": self._last_step if step is None else step, "severity": severity,
                 "message": message, "value": value, "time": _now()}
        self._journal_event(event)
        self._raise_alert(event)

    # -- lifecycle -------------------------------------------------------------------------------
    def _open_store(self):
        from .store import open_store

        return open_store(self.location, recover=False)

    def _start_system_metrics(self, interval) -> None:
        from .sysmetrics import SystemMetricsSampler

        seconds = 10.0 if interval is True else float(interval)
        self._sampler = SystemMetricsSampler(self._log_system, interval=seconds)
        self._sampler.start()

    def _log_system(self, values: dict) -> None:
        # System samples keep their own step-free timeline: logged at the current step, they
        # would otherwise warn about steps going backwards.
        if not self._finished and values:
            numbers = {k: float(v) for k, v in values.items()}
            encoder = self._encoders.get(tuple(numbers)) or self._new_encoder(tuple(numbers))
            self._journal.append_points(encoder, max(self._last_step, 0), _now(), tuple(numbers.values()))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until the store has everything logged so far (True) or ``timeout`` passes."""
        if self._finished:
            return True
        return self._drainer.flush(timeout)

    def finish(self, status: str = "finished", *, exit_reason: str | None = None, quiet: bool = False) -> None:
        """End the run: record its final state, drain the journal, release it."""
        global _current
        with self._finish_lock:
            if self._finished:
                return
            if status not in ("finished", "failed", "crashed", "killed"):
                raise ConfigError(f"finish(status={status!r}): use finished, failed, crashed or killed")
            if self._sampler is not None:
                self._sampler.stop()
            self._resolve_deferred()
            self._finish_checks(complete=status == "finished")
            self._journal_event({"type": "finish", "state": status, "exit_reason": exit_reason})
            self._finished = True
            self.state = status
            if self.mode == "online":
                complete = self._drainer.stop(timeout=FINAL_DRAIN_TIMEOUT_S)
            else:  # offline: the journal is the record until `labfolio sync`
                self._drainer.stop(timeout=1.0)
                complete = False
            self._drainer.close()
            memory_only = self._journal.memory_segments and not complete
            self._journal.close(delete=complete)
            if _current is self:
                _current = None
        if self.mode == "offline" and not quiet:
            print(f"labfolio: run {self.id} was logged offline to {self.journal_folder}; "
                  "push it to the store with `labfolio sync`.", file=sys.stderr)
        if memory_only:
            warnings.warn(f"labfolio run {self.id}: the store and the journal disk both failed; points "
                          "that were held only in memory could not be saved.", RuntimeWarning)
        elif not complete and not quiet and self.mode == "online":
            print(f"labfolio: run {self.id} could not be fully written to the store "
                  f"({self._drainer.last_error}). Nothing is lost: the journal at "
                  f"{self.journal_folder} holds it; run `labfolio sync` when the store is back.",
                  file=sys.stderr)

    def history(self, keys=None, *, wide: bool = False, backend: str = "pandas"):
        """This run's points so far as a pandas (or ``backend="polars"``) DataFrame.

        Long form (key, step, value, time) by default; ``wide=True`` gives one column per key."""
        if self.mode == "offline":
            raise ConfigError(f"run {self.id} is offline: its points are in the journal at "
                              f"{self.journal_folder}; run `labfolio sync`, then read it with "
                              "labfolio.open_store().history_frame(run_id)")
        from .export import history_frame

        self.flush(timeout=FINAL_DRAIN_TIMEOUT_S)
        store = self._open_store()
        try:
            return history_frame(store, self.id, keys, wide=wide, backend=backend)
        finally:
            store.close()

    def _finish_checks(self, complete: bool) -> None:
        """What can only be judged over the whole run (pending divergences, the schedule, rules);
        `complete` is False for a run that stopped early, whose schedule was cut short."""
        if self._monitor is None:
            return
        if not self._drainer.failures:  # with the store failing, judge what was seen; never wait
            self._drainer.flush(timeout=FINAL_DRAIN_TIMEOUT_S if self.mode == "online" else 5.0)
        try:
            alerts = self._monitor.finish(complete)
        except Exception as exc:
            self._disable_monitor(exc)
            return
        for alert in alerts:
            event = self._alert_event(alert)
            self._journal_event(event)
            self._raise_alert(event)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish("killed", exit_reason="KeyboardInterrupt")
        else:
            self.finish("failed", exit_reason=f"{exc_type.__name__}: {exc}")

    def __repr__(self) -> str:
        return f"<labfolio.Run {self.id} ({self.state})>"


class DisabledRun:
    """What ``init`` returns in disabled mode or on a non-zero DDP rank: every call does nothing."""

    def __init__(self, run_id: str = "disabled", config: dict | None = None):
        self.id = self.name = run_id
        self.first_step = 0
        self.logged_through: dict[str, int] = {}
        self.mode = "disabled"
        self.state = "disabled"
        self.config = Config(dict(config or {}), lambda changes: None)
        self.summary: dict = {}
        self.alerts: list = []

    def log(self, data, step=None, commit=None) -> None:
        pass

    def log_artifact(self, *args, **kwargs) -> None:
        return None

    def alert(self, *args, **kwargs) -> None:
        pass

    def flush(self, timeout: float = 0.0) -> bool:
        return True

    def finish(self, status: str = "finished", **kwargs) -> None:
        global _current
        if _current is self:
            _current = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.finish()


# ---------------------------------------------------------------------------------------------
def _render_run_id(template: str, *, experiment, variant, seed, name, when: datetime) -> str:
    if seed is None:
        template = template.replace("_s{seed}", "").replace("s{seed}", "").replace("{seed}", "")
    fields = {
        "experiment": experiment or "run", "variant": variant or "main", "seed": seed, "name": name or "",
        "YYYYMMDD_HHMMSS": when.strftime("%Y%m%d_%H%M%S"), "timestamp": when.strftime("%Y%m%d_%H%M%S"),
        "date": when.strftime("%Y%m%d"), "host": socket.gethostname().split(".")[0],
    }
    try:
        rendered = template.format(**fields)
    except KeyError as exc:
        raise ConfigError(f"run id template {template!r} uses unknown field {exc}; known: {sorted(fields)}") from None
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in rendered).strip("_")
    return safe or "run"


def _journal_folder_for(location: StoreLocation, run_id: str, *, resume: bool,
                        taken: Callable[[str], bool]) -> tuple[Path, str]:
    """A fresh journal folder and a run id no other run has; falls back when the store's folder
    is unwritable. ``taken`` says whether the store already has a run with that id."""
    for base in (location.journal_dir, fallback_journal_dir()):
        try:
            base.mkdir(parents=True, exist_ok=True)
            candidate, n = run_id, 1
            while True:
                folder = base / candidate
                if resume:
                    folder.mkdir(exist_ok=True)
                    return folder, candidate
                if not taken(candidate):
                    try:
                        folder.mkdir()
                        return folder, candidate
                    except FileExistsError:
                        pass
                n += 1
                candidate = f"{run_id}_{n}"
        except OSError as exc:
            if base != location.journal_dir:
                raise
            warnings.warn(f"labfolio cannot write journals under {base} ({exc}); using "
                          f"{fallback_journal_dir()} instead", RuntimeWarning, stacklevel=4)
    raise JournalError("labfolio found no writable folder for the run journal; set LABFOLIO_DIR")


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None


def _load_env_config() -> dict:
    path = os.environ.get("LABFOLIO_CONFIG")
    if not path:
        return {}
    import json

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"LABFOLIO_CONFIG={path!r} could not be read as JSON: {exc}") from None


def init(project: str | None = None, experiment: str | None = None, variant: str | None = None,
         seed: int | None = None, config: Any = None, *, name: str | None = None,
         tags: list[str] | tuple[str, ...] | None = None, notes: str | None = None,
         hypothesis: str | None = None, previous: str | None = None, mode: str | None = None,
         store: str | os.PathLike | None = None, dir: str | os.PathLike | None = None,
         resume: bool | str | None = None, run_id: str | None = None, evaluates: str | None = None,
         batch_size: int | None = None, tokens_per_step: int | None = None,
         run_id_template: str | None = None, machine: str | None = None,
         system_metrics: bool | float = False, log_all_ranks: bool = False,
         on_alert: Callable[[dict], None] | None = None, rules=None,
         vigilance: bool = True) -> Run | DisabledRun:
    """Start a run and make it the current one. See the README for every argument."""
    global _current
    mode = (mode or os.environ.get("LABFOLIO_MODE") or "online").lower()
    if mode not in MODES:
        raise ConfigError(f"mode={mode!r}: use one of {', '.join(MODES)}")
    experiment = experiment or os.environ.get("LABFOLIO_EXPERIMENT") or None
    variant = variant or os.environ.get("LABFOLIO_VARIANT") or None
    seed = seed if seed is not None else _env_int("LABFOLIO_SEED")
    env_config = _load_env_config()
    config_dict = {**env_config, **to_config_dict(config)}
    rank = distributed.process_rank()
    if mode == "disabled" or (rank != 0 and not log_all_ranks):
        run = DisabledRun(config=config_dict)
        _current = run
        return run
    if _current is not None and isinstance(_current, Run) and not _current._finished:
        warnings.warn(f"labfolio.init() while run {_current.id} is active: finishing it first",
                      RuntimeWarning, stacklevel=2)
        _current.finish()
    location = resolve_store(store, home=dir)
    started = datetime.now()
    probe = _probe_store(location) if mode == "online" else None
    resume_run = None
    if resume and run_id:
        resume_run = _existing_run(probe, location, run_id, required=resume == "must")
    if run_id is None:
        template = run_id_template or os.environ.get("LABFOLIO_RUN_ID_TEMPLATE") or DEFAULT_RUN_ID_TEMPLATE
        run_id = _render_run_id(template, experiment=experiment, variant=variant, seed=seed, name=name,
                                when=started)
        if rank != 0:
            run_id = f"{run_id}_rank{rank}"
    try:
        folder, run_id = _journal_folder_for(
            location, run_id, resume=bool(resume_run),
            taken=lambda candidate: probe is not None and probe.run_journal_position(candidate) is not None)
    except (JournalError, OSError):
        folder = location.journal_dir / run_id  # unwritable: the journal keeps records in memory
    first_segment = 0
    if resume_run is not None and probe is not None:
        # The resumed run's new records must sort after everything the store already drained.
        first_segment = split_position(probe.run_journal_position(run_id) or 0)[0] + 1
    if probe is not None:
        probe.close()
    from .capture import capture_snapshot

    snapshot = capture_snapshot(machine_name=machine)
    provenance = snapshot.provenance
    machine_info = provenance.get("machine", {}) if isinstance(provenance, dict) else {}
    start_event = {
        "type": "start", "run_id": run_id, "store": location.url, "mode": mode,
        "project": project or os.environ.get("LABFOLIO_PROJECT") or "", "experiment": experiment or "",
        "variant": variant or "", "seed": seed, "name": name, "tags": list(tags or []),
        "notes": notes, "hypothesis": hypothesis, "previous": previous, "evaluates": evaluates,
        "config": config_dict, "provenance": provenance, "host": machine_info.get("hostname") or socket.gethostname(),
        "machine": machine_info.get("name") or machine or os.environ.get("LABFOLIO_MACHINE") or machine_info.get("hostname"),
        "batch_size": batch_size, "tokens_per_step": tokens_per_step, "started_at": time.time(),
    }
    first_step = 0
    logged_through: dict[str, int] = {}
    if resume_run is not None:
        first_step = (resume_run.last_step + 1) if resume_run.last_step is not None else 0
        logged_through = {key: entry.last_step for key, entry in resume_run.summary.items()
                          if entry.last_step is not None}
        config_dict = {**resume_run.config, **config_dict}
        start_event["config"] = config_dict
    run = Run(run_id=run_id, location=location, mode=mode, start_event=start_event,
              journal_folder=folder, config=config_dict, on_alert=on_alert,
              attachments=snapshot.attachments, first_step=first_step, system_metrics=system_metrics,
              first_segment=first_segment, rules=rules, vigilance=vigilance, logged_through=logged_through)
    _current = run
    _install_exit_hooks()
    return run


def _probe_store(location: StoreLocation):
    """The store if it can be opened now (for run-id uniqueness and resume), else None.

    A store that is down must not stop a run from starting: the journal takes the data."""
    from .errors import LabfolioError
    from .store import open_store

    try:
        return open_store(location)
    except (LabfolioError, OSError):
        return None


def _existing_run(store, location: StoreLocation, run_id: str, *, required: bool):
    from .errors import RunNotFoundError, StoreError

    try:
        if store is None:
            raise StoreError(f"the store at {location.describe()} cannot be opened")
        return store.get_run(run_id)
    except RunNotFoundError:
        if required:
            raise
        return None
    except StoreError as exc:
        if required:
            raise
        warnings.warn(f"labfolio could not read run {run_id} to resume it ({exc}); starting its "
                      "steps at 0", RuntimeWarning, stacklevel=3)
        return None


# -- process exit: finish on normal exit, mark failure on an uncaught exception ----------------
_hooks_installed = False
_previous_excepthook = sys.excepthook


def _excepthook(exc_type, exc, tb):
    run = _current
    if isinstance(run, Run) and not run._finished:
        state = "killed" if issubclass(exc_type, KeyboardInterrupt) else "failed"
        run.finish(state, exit_reason=f"{exc_type.__name__}: {exc}")
    _previous_excepthook(exc_type, exc, tb)


def _at_exit() -> None:
    run = _current
    if isinstance(run, Run) and not run._finished:
        run.finish()


def _on_sigterm(signum, frame):
    run = _current
    if isinstance(run, Run) and not run._finished:
        run.finish("killed", exit_reason="SIGTERM")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_exit_hooks() -> None:
    global _hooks_installed, _previous_excepthook
    if _hooks_installed:
        return
    _hooks_installed = True
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    atexit.register(_at_exit)
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):
            pass
