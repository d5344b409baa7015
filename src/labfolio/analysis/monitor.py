"""Live vigilance: rules and detectors fed incrementally, each alert reported once.

``LiveMonitor`` is what the run's background writer feeds with batches of points; ``detect_all``
runs the same detectors over finished series. Which detectors watch a key is decided from its
name when the key is first seen:

=====================================  ===========================================================
key looks like                          detectors
=====================================  ===========================================================
any key                                 nan (critical for losses, grad norm and lr)
a loss (loss, nll, bpb, perplexity)     divergence; plateau if it is an evaluation metric
grad norm (grad_norm, gradnorm)         grad_spike / divergence
an accuracy (acc, f1, auc, top1, ...)   collapse; plateau if it is an evaluation metric
an evaluation metric (val/, test/,      overfitting, paired with the training metric of the same
eval/, val_ ...) with a train twin      name (train/<m>, train_<m>, or <m>)
lr, learning_rate                       schedule mismatch (needs a schedule in the config)
eff_rank, effective_rank, erank         representation collapse (width from the config or argument)
stream_similarity                       stream collapse
=====================================  ===========================================================

Rules run on every key they match, judged every 16 points of that key and at ``finish()``. A
rule alert is dropped when a detector has already reported a NaN, a divergence, a grad spike or
a stream collapse on the same key (its message says more), and a rule with ``live=False`` is
judged only by ``finish()``.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from labfolio.analysis._online import RingBuffer, as_series_arrays
from labfolio.analysis.alerts import Alert, AlertKind
from labfolio.analysis.detectors import (
    CollapseDetector,
    Detector,
    DetectorOptions,
    NanDetector,
    OverfittingDetector,
    PlateauDetector,
    RepresentationCollapseDetector,
    StreamCollapseDetector,
)
from labfolio.analysis.diff import flatten_config
from labfolio.analysis.divergence import GradNormDetector, LossDivergenceDetector
from labfolio.analysis.rules import Health, Rule, RuleResult, RuleTracker, builtin_rules, rule_alert
from labfolio.analysis.schedule import ScheduleMismatchDetector, schedule_from_config
from labfolio.analysis.stats import metric_direction, metric_tokens

__all__ = ["LiveMonitor", "detect_all", "classify_key", "width_from_config"]

_LOSS_TOKENS = frozenset("loss losses nll bpb bpc perplexity ppl".split())
_ACCURACY_TOKENS = frozenset(
    "acc accuracy top f1 auc auroc auprc map miou iou dice bleu rouge precision recall".split()
)
# Detector alerts that say what a rule on the same key would say, with more evidence: the NaN-loss
# and grad-norm rules of the general pack, the stream-similarity rule of the mHC pack.
_SUPERSEDING_KINDS = frozenset({AlertKind.NAN.value, AlertKind.DIVERGENCE.value, AlertKind.GRAD_SPIKE.value,
                                AlertKind.STREAM_COLLAPSE.value})
_MODIFIERS = frozenset("avg mean ema smooth smoothed total epoch step running macro micro weighted".split())
_EVAL_PREFIXES = ("val", "valid", "validation", "test", "eval", "evaluation", "dev")
_TRAIN_PREFIXES = ("train", "training")
_WIDTH_KEYS = ("width", "embed_dim", "d_model", "hidden_size", "hidden_dim", "n_embd", "dim", "model_dim")
_GRAD_NORM = re.compile(r"grad(?:ient)?[_\-/ ]?norm", re.I)


def _names(tokens: list[str], kinds: frozenset[str]) -> bool:
    """Whether the key's last token is one of `kinds`, or its last but a modifier ('loss_avg').

    'loss_scale' (AMP's loss scaling factor) is deliberately not a loss.
    """
    if not tokens:
        return False
    if tokens[-1] in kinds:
        return True
    return len(tokens) >= 2 and tokens[-2] in kinds and tokens[-1] in _MODIFIERS


def _split_prefix(key: str, prefixes: tuple[str, ...]) -> str | None:
    """The metric name without its split prefix ('val/loss' -> 'loss'), or None if it has none."""
    lowered = key.lower()
    for prefix in prefixes:
        for separator in ("/", "_", "-", "."):
            if lowered.startswith(prefix + separator) and len(key) > len(prefix) + 1:
                return key[len(prefix) + 1:]
    return None


def classify_key(key: str) -> frozenset[str]:
    """The roles a metric key plays: loss, accuracy, grad_norm, lr, eval, train, eff_rank, stream."""
    roles = set()
    tokens = metric_tokens(key)
    parts = [p.lower() for p in re.split(r"[/.]", key)]
    last = parts[-1] if parts else ""
    if "stream_similarity" in key.lower() or "stream_sim" in key.lower():
        roles.add("stream")
    elif any(t in key.lower() for t in ("eff_rank", "effective_rank", "erank")):
        roles.add("eff_rank")
    elif _GRAD_NORM.search(key):
        roles.add("grad_norm")
    elif any(p in ("lr", "learning_rate") for p in parts) or last.startswith(("lr_", "lr-", "learning_rate_")):
        roles.add("lr")
    elif _names(tokens, _LOSS_TOKENS):
        roles.add("loss")
    elif _names(tokens, _ACCURACY_TOKENS):
        roles.add("accuracy")
    if _split_prefix(key, _EVAL_PREFIXES) is not None:
        roles.add("eval")
    elif _split_prefix(key, _TRAIN_PREFIXES) is not None:
        roles.add("train")
    return frozenset(roles)


def width_from_config(config: Mapping[str, Any] | None) -> float | None:
    """The model width (d_model, embed_dim, width, hidden_size, n_embd ...) named in `config`."""
    if not config:
        return None
    best: tuple[int, float] | None = None
    for key, value in flatten_config(config).items():
        parts = key.lower().split(".")
        if parts[-1] in _WIDTH_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            if best is None or len(parts) < best[0]:
                best = (len(parts), float(value))
    return best[1] if best else None


def _train_twins(eval_key: str) -> tuple[str, ...]:
    stem = _split_prefix(eval_key, _EVAL_PREFIXES)
    if stem is None:
        return ()
    return (f"train/{stem}", f"train_{stem}", f"train.{stem}", f"training/{stem}", stem)


class LiveMonitor:
    """Rules and detectors over a run's metrics, fed incrementally; each alert is reported once.

    ``feed(key, steps, values)`` returns the alerts that batch produced (usually none) and costs
    O(len(batch)) amortised: statistics are refreshed from fixed-size windows, never by re-reading
    history. ``finish()`` flushes what can only be judged at the end (pending divergences,
    end-of-run schedule checks, ``live=False`` rules). Safe to call from a background thread.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        rules: Iterable[Rule] | None = None,
        *,
        options: DetectorOptions | None = None,
        total_steps: float | None = None,
        eff_rank_dim: float | None = None,
        detectors: bool = True,
    ) -> None:
        """`rules` default to the built-in packs (pass ``()`` for none); `total_steps` is the run's
        planned optimizer steps when known (else the config's); `eff_rank_dim` the width effective
        rank is judged against (else the config's width)."""
        self.config = dict(config or {})
        self.rules = tuple(builtin_rules() if rules is None else rules)
        self.options = options or DetectorOptions()
        self._with_detectors = detectors
        self._schedule = schedule_from_config(self.config, total_steps)
        self._dim = eff_rank_dim if eff_rank_dim is not None else width_from_config(self.config)
        self._detectors: dict[str, list[Detector]] = {}
        self._overfitting: list[OverfittingDetector] = []
        self._trackers: dict[str, list[RuleTracker]] = {}
        self._alerts: list[Alert] = []
        self._seen: set[tuple[str, str, str]] = set()
        self._rule_alerted: set[tuple[str, str]] = set()
        self._detector_keys: set[str] = set()
        # recent points of every loss/accuracy key, to hand to an overfitting detector created
        # after its training twin started logging
        self._recent: dict[str, RingBuffer] = {}
        self._unjudged: dict[str, int] = {}  # points fed per key since its rules were last judged
        self._finished = False
        self._lock = threading.Lock()

    @property
    def alerts(self) -> tuple[Alert, ...]:
        """Every alert reported so far, in the order reported."""
        with self._lock:
            return tuple(self._alerts)

    def feed(self, key: str, steps: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray) -> list[Alert]:
        """Take one batch of points of `key`; return the alerts it produced (each reported once)."""
        key = str(key)
        step_array, value_array = as_series_arrays(steps, values, key)
        if value_array.size == 0:
            return []
        with self._lock:
            if key not in self._detectors:
                self._register(key)
            produced: list[Alert] = []
            for detector in self._detectors[key]:
                if not detector.done:
                    produced.extend(detector.update(step_array, value_array))
            for overfitting in self._overfitting:
                if key in overfitting.train_keys and (overfitting.train_key in (None, key)):
                    produced.extend(overfitting.update_train(key, step_array, value_array))
            if key in self._recent:
                self._recent[key].extend(step_array, value_array)
            new = self._keep_new(produced, from_detectors=True)
            trackers = self._trackers[key]
            if trackers:
                for tracker in trackers:
                    tracker.update(step_array, value_array)
                # judging a rule costs the same for 1 point as for many: do it every 16 points
                self._unjudged[key] = self._unjudged.get(key, 0) + value_array.size
                if self._unjudged[key] >= 16:
                    self._unjudged[key] = 0
                    for tracker in trackers:
                        if tracker.rule.live:
                            new.extend(self._rule_alerts(tracker))
            return new

    def finish(self, complete: bool = True) -> list[Alert]:
        """Judge what needs the whole run; returns the alerts this produced. Idempotent.

        `complete=False` for a run that stopped early or is still going: checks that need its end
        (an LR schedule that never decayed) are skipped."""
        with self._lock:
            if self._finished:
                return []
            self._finished = True
            produced: list[Alert] = []
            for detectors in self._detectors.values():
                for detector in detectors:
                    if not detector.done:
                        produced.extend(detector.finish(complete))
            new = self._keep_new(produced, from_detectors=True)
            for trackers in self._trackers.values():
                for tracker in trackers:
                    new.extend(self._rule_alerts(tracker))
            return new

    def rule_results(self) -> list[RuleResult]:
        """Every rule's current result on every key it matched (NO_DATA rows for unmatched rules)."""
        with self._lock:
            results = [tracker.result() for trackers in self._trackers.values() for tracker in trackers]
            matched = {result.rule.metric for result in results}
            results.extend(RuleResult(rule, rule.metric, Health.NO_DATA, None, None, 0)
                           for rule in self.rules if rule.metric not in matched)
            return results

    def _register(self, key: str) -> None:
        if classify_key(key) & {"loss", "accuracy"}:
            self._recent[key] = RingBuffer(256)
        self._trackers[key] = [RuleTracker(rule, key) for rule in self.rules if rule.matches(key)]
        self._detectors[key] = self._make_detectors(key) if self._with_detectors else []

    def _make_detectors(self, key: str) -> list[Detector]:
        o = self.options
        roles = classify_key(key)
        critical = bool(roles & {"loss", "grad_norm", "lr"})
        made: list[Detector] = [NanDetector(key, o, critical)]
        direction = metric_direction(key)
        if "loss" in roles:
            made.append(LossDivergenceDetector(key, o, per_step="eval" not in roles))
        if "grad_norm" in roles:
            made.append(GradNormDetector(key, o))
        if "accuracy" in roles and "train" not in roles:
            # per-batch training accuracy is too noisy to call a collapse; its loss diverges too
            made.append(CollapseDetector(key, o))
        if "eval" in roles and direction is not None and not roles & {"eff_rank", "stream"}:
            made.append(PlateauDetector(key, o, direction))
            twins = _train_twins(key)
            if twins:
                overfitting = OverfittingDetector(key, twins, o, direction)
                made.append(overfitting)
                self._overfitting.append(overfitting)
                twin = next((t for t in twins if t in self._recent), None)
                if twin is not None:
                    ring = self._recent[twin]
                    overfitting.update_train(twin, ring.steps(), ring.values())
        if "lr" in roles and self._schedule is not None:
            made.append(ScheduleMismatchDetector(key, o, self._schedule))
        if "eff_rank" in roles:
            made.append(RepresentationCollapseDetector(key, o, self._dim))
        if "stream" in roles:
            made.append(StreamCollapseDetector(key, o))
        return made

    def _keep_new(self, alerts: list[Alert], from_detectors: bool) -> list[Alert]:
        new = []
        for alert in alerts:
            if alert.identity in self._seen:
                continue
            self._seen.add(alert.identity)
            if from_detectors and alert.kind in _SUPERSEDING_KINDS:
                self._detector_keys.add(alert.metric)
            self._alerts.append(alert)
            new.append(alert)
        return new

    def _rule_alerts(self, tracker: RuleTracker) -> list[Alert]:
        marker = (tracker.rule.metric, tracker.key)
        if marker in self._rule_alerted or tracker.key in self._detector_keys:
            return []
        alert = rule_alert(tracker.result())
        if alert is None:
            return []
        self._rule_alerted.add(marker)
        self._alerts.append(alert)
        return [alert]


def _feed_order(keys: Iterable[str]) -> list[str]:
    """Evaluation keys first within a slice: each evaluation then waits for its training twin to
    pass its step and is paired with exactly the training points logged up to it."""
    return sorted(keys, key=lambda k: (0 if "eval" in classify_key(k) else 1))


def detect_all(
    series: Mapping[str, tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]],
    config: Mapping[str, Any] | None = None,
    *,
    rules: Iterable[Rule] = (),
    options: DetectorOptions | None = None,
    total_steps: float | None = None,
    eff_rank_dim: float | None = None,
    chunks: int = 64,
    complete: bool = True,
) -> list[Alert]:
    """Every detector (and any `rules`) over whole series, as if fed live; alerts sorted by step.
    `complete=False` for series of a run that did not finish (see ``LiveMonitor.finish``).

    The series are replayed in `chunks` slices of the step axis, interleaving keys the way a
    live run would, so post-hoc and live alerts agree.
    """
    monitor = LiveMonitor(config, rules, options=options, total_steps=total_steps, eff_rank_dim=eff_rank_dim)
    arrays = {key: as_series_arrays(steps, values, key) for key, (steps, values) in series.items()}
    all_steps = np.concatenate([s for s, _ in arrays.values()]) if arrays else np.empty(0)
    finite_steps = all_steps[np.isfinite(all_steps)]
    if finite_steps.size:
        edges = np.unique(np.quantile(finite_steps, np.linspace(0, 1, chunks + 1)[1:-1]))
        order = _feed_order(arrays)
        bounds = [-math.inf, *edges.tolist(), math.inf]
        for low, high in zip(bounds[:-1], bounds[1:]):
            for key in order:
                steps, values = arrays[key]
                inside = (steps > low) & (steps <= high) if low > -math.inf else steps <= high
                if inside.any():
                    monitor.feed(key, steps[inside], values[inside])
    monitor.finish(complete)
    # stable sort: alerts at the same step keep the order they were raised in (a spike before
    # the divergence it turned into)
    return sorted(monitor.alerts, key=lambda a: math.inf if a.step is None else a.step)
