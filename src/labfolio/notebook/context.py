"""What every note writer needs besides the snapshot: statuses, cached results, links, plots."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ..store.records import RunRecord
from .mdtext import safe_name
from .results import ResultsCache, experiment_results, propose_run_status
from .snapshot import ExperimentInfo, Snapshot

__all__ = ["Context", "build_context", "EXPERIMENTS_DIR", "MASTER_LOG", "EXPERIMENT_LOG"]

EXPERIMENTS_DIR = "experiments"
MASTER_LOG = "Master Experiment Log.md"
EXPERIMENT_LOG = "Experiment Log.md"


@dataclass
class Context:
    snapshot: Snapshot
    proposals: dict[str, Any]  # run id -> analysis StatusProposal
    cache: ResultsCache
    rules: list = field(default_factory=list)  # project health rules (analysis Rule)
    plots: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # experiment -> [(caption, vault path)]
    fragments: Any = None  # a FragmentCache: pieces of the logs kept per experiment fingerprint
    ahead: Any = None  # an ExperimentsAhead: work done by the writer's process during a large write
    _fingerprints: Any = None
    _results: dict[str, dict] = field(default_factory=dict)
    _ahead_done: dict[str, dict | None] = field(default_factory=dict)
    _memo: dict[tuple, Any] = field(default_factory=dict)
    _evals: dict[tuple[str, str], list[RunRecord]] | None = None

    def memo(self, key: tuple, compute):
        """compute() once per key: config diffs are asked for by several notes of one experiment."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def config_views(self, exp: ExperimentInfo) -> list:
        """``results.config_views`` of `exp`, built once: its diffs against the previous
        experiment and the baseline, its mislabelling check and its follower's diff all take them."""
        from .results import config_views

        return self.memo(("config_views", exp.name), lambda: config_views(exp))

    def described_run_ids(self, exp: ExperimentInfo) -> frozenset[str]:
        """``results.described_run_ids`` of `exp`, built once (the plots of its note take them)."""
        from .results import described_run_ids

        return self.memo(("described_run_ids", exp.name), lambda: described_run_ids(exp))

    def variant_diffs(self, exp: ExperimentInfo) -> dict:
        from .results import variant_diffs

        return self.memo(("variant_diffs", exp.name), lambda: variant_diffs(exp, views=self.config_views))

    def followers(self, name: str) -> list[str]:
        """Names of the experiments whose previous experiment is `name`, in snapshot order."""
        def index() -> dict[str, list[str]]:
            found: dict[str, list[str]] = {}
            for exp in self.snapshot.experiments:
                found.setdefault(exp.previous, []).append(exp.name)
            return found

        return list(self.memo(("followers",), index).get(name, []))

    def evaluations_of(self, exp: ExperimentInfo, variant: str) -> list[RunRecord]:
        """Evaluation-only runs of a variant: those of its runs' checkpoints and those filed under it."""
        if self._evals is None:
            owner = {run.run_id: (run.experiment, run.variant) for run in self.snapshot.runs if not run.is_evaluation}
            self._evals = {}
            for run in self.snapshot.runs:
                if run.is_evaluation:
                    keys = {owner.get(run.evaluates or ""), (run.experiment, run.variant)} - {None}
                    for key in keys:
                        self._evals.setdefault(key, []).append(run)
        return self._evals.get((exp.name, variant), [])

    def fingerprint(self, exp: ExperimentInfo) -> str:
        """Hash of everything `exp`'s notes are rendered from (see ``fingerprint``); asked for
        after the plots are planned, since the notes embed them."""
        done = self._done_ahead(exp)
        if done is not None:
            return done["fingerprint"]
        if self._fingerprints is None:
            from .fingerprint import Fingerprints

            self._fingerprints = Fingerprints(self)
        return self._fingerprints.experiment(exp)

    def fragment(self, exp: ExperimentInfo | None, part: str, compute):
        """compute() for a piece of a log belonging to `exp`, reused from the fragment cache while
        the experiment's fingerprint is unchanged (always computed without a cache or experiment)."""
        if self.fragments is None or exp is None:
            return compute()
        done = self._done_ahead(exp)
        if done is not None and part in done["fragments"]:
            compute = lambda value=done["fragments"].pop(part): value  # rendered ahead
        return self.fragments.get(exp.name, self.fingerprint(exp), part, compute)

    def keep_results(self, exp: ExperimentInfo) -> None:
        """Mark `exp`'s cached results as in use even when no note needed them this time, so the
        results cache keeps them for the plots and for a vault rebuilt without fragments."""
        key = self.fragment(exp, "results_key", lambda: self.results_key(exp)[0])
        self.cache.get(key)

    def results_key(self, exp: ExperimentInfo):
        """``results_key`` of `exp`, computed once: both the results and keep_results need it."""
        from .results import results_key

        done = self._done_ahead(exp)
        if done is not None:
            return done["results_key"]
        return self.memo(("results_key", exp.name), lambda: results_key(exp, self.proposals))

    def results(self, exp: ExperimentInfo) -> dict:
        if exp.name not in self._results:
            self._done_ahead(exp)
        if exp.name not in self._results:
            self._results[exp.name] = experiment_results(exp, self.proposals, self.cache,
                                                         keyed=self.results_key(exp))
        return self._results[exp.name]

    def note_text(self, exp: ExperimentInfo, relpath: str, render) -> str:
        """render() for the note at `relpath`, or the text the writer's process rendered ahead."""
        done = self._done_ahead(exp)
        text = done["notes"].pop(relpath, None) if done is not None else None
        return render() if text is None else text

    def _done_ahead(self, exp: ExperimentInfo) -> dict | None:
        """What the writer's process did for `exp` (see ahead.py), taken when the renderer first
        reaches the experiment; its results are then kept (and cached) as if computed here, and
        its fingerprint and results key are the ones computed there."""
        if self.ahead is None:
            return None
        if exp.name not in self._ahead_done:
            done = self._ahead_done[exp.name] = self.ahead.take(exp)
            if done is not None and exp.name not in self._results:
                self._results[exp.name] = done["results"]
                self.cache.put(done["results_key"][0], done["results"])
        return self._ahead_done[exp.name]

    # -- paths (relative to the vault root, without .md, as wikilinks want them) --
    def experiment_note(self, exp: ExperimentInfo) -> str:
        return f"{EXPERIMENTS_DIR}/{exp.folder}/experiment"

    def variant_note(self, exp: ExperimentInfo, variant: str) -> str:
        return f"{EXPERIMENTS_DIR}/{exp.folder}/variants/{safe_name(variant)}"

    def experiment_link(self, name: str | None) -> str:
        """[[experiments/x/experiment|x]] for a known experiment, else the name in backticks."""
        if not name:
            return "--"
        exp = self.snapshot.by_name.get(name)
        return f"[[{self.experiment_note(exp)}|{name}]]" if exp is not None else f"`{name}`"

    def run_link(self, run: RunRecord, text: str = "run") -> str:
        """The link for a run, made from its id: the dashboard when configured, else its variant note."""
        base = self.snapshot.base_url
        if base:
            return f"[{text}]({base}/runs/{quote(run.run_id, safe='')})"
        exp = self.snapshot.by_name.get(run.experiment)
        if exp is None:
            return f"`{run.run_id}`"
        return f"[[{self.variant_note(exp, run.variant)}|{text}]]"

    def run_ref(self, run_id: str | None) -> str:
        """A run id as a link to that run when it is in the store, else as written."""
        if not run_id:
            return "--"
        run = self.snapshot.run_by_id.get(run_id)
        return self.run_link(run, run_id) if run is not None else f"`{run_id}`"


def build_context(snapshot: Snapshot, cache: ResultsCache, rules: list | None = None) -> Context:
    proposals = {run.run_id: propose_run_status(run, snapshot.alerts.get(run.run_id, ()))
                 for run in snapshot.runs}
    return Context(snapshot=snapshot, proposals=proposals, cache=cache, rules=list(rules or []))
