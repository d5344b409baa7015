"""The study's lineage under examples/: every spec is valid, each changes what its comment says,
and run with --smoke the notebook shows those changes as the diff from the previous experiment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")

from labfolio.analysis import diff_configs  # noqa: E402
from labfolio.analysis.diff import shared_config  # noqa: E402
from labfolio.spec import load_spec  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# in lineage order: each one's `previous` comes before it
ORDER = ["cifar10_001", "cifar10_002", "cifar10_003", "cifar10_004", "cifar100_001",
         "gpt_shakespeare_001", "gpt_shakespeare_002", "gpt_shakespeare_003", "gpt_shakespeare_004"]


def spec_diff(name: str, *, smoke: bool = False) -> list[str]:
    """What changed from the previous spec to this one, on the configs the runs will record."""
    spec = load_spec(EXAMPLES / f"{name}.yaml")
    previous = load_spec(EXAMPLES / f"{spec.previous}.yaml")
    configs = [shared_config([s.resolved(v, smoke=smoke) for v in s.variants]) for s in (previous, spec)]
    return sorted(change.render() for change in diff_configs(*configs).changes)


def test_every_example_is_listed_and_links_to_an_earlier_one():
    assert sorted(p.stem for p in EXAMPLES.glob("*.yaml")) == sorted(ORDER)
    seen: set[str] = set()
    for name in ORDER:
        spec = load_spec(EXAMPLES / f"{name}.yaml")
        assert spec.experiment == name
        assert spec.previous is None or spec.previous in seen, name
        seen.add(name)


def test_each_full_sized_example_changes_exactly_what_the_study_changed():
    assert spec_diff("cifar10_002") == ["wrap: (varies) → branch"]
    assert spec_diff("cifar10_003") == ["schedule: wsd → cosine"]
    assert spec_diff("cifar10_004") == ["schedule: cosine → cosine_warmup"]
    assert spec_diff("cifar100_001") == sorted(["dataset: cifar10 → cifar100", "epochs: 100 → 160", "streams: 1 → 4"])
    assert spec_diff("gpt_shakespeare_002") == sorted(["connection: (varies) → mhc", "dynamic: true → (varies)"])
    assert spec_diff("gpt_shakespeare_003") == sorted([  # 003 settles 002's question (dynamic) and sweeps the init
        "dynamic: (varies) → true", "sinkhorn_tau: 1.0 → (varies)", "hres_offdiag_init: -3.0 → (varies)"])
    assert spec_diff("gpt_shakespeare_004") == sorted([
        "sinkhorn_iters: 20 → (varies)", "sinkhorn_tau: (varies) → 0.1", "hres_offdiag_init: (varies) → -3.0"])


def _difference_section(log: str, experiment: str) -> list[str]:
    entries = log.split("# --- Experiment Path ---")
    [entry] = [e for e in entries if f"experiments/{experiment}/experiment" in e.split("\n## ", 1)[0]]
    section = re.search(r"## Difference between this and previous experiment:\n(.*?)\n## ", entry, re.S).group(1)
    return [line for line in section.splitlines() if line.startswith("- ")]


@pytest.mark.slow
def test_every_example_runs_with_smoke_and_the_notebook_shows_the_lineage_diffs(tmp_path):
    from labfolio.notebook import write_vault
    from labfolio.runner import RunOptions, run_spec
    from labfolio.store import open_store

    for name in ORDER:
        report = run_spec(load_spec(EXAMPLES / f"{name}.yaml"),
                          RunOptions(smoke=True, gpus=[], notebook=False))
        assert report.ok, (name, [(t.label, t.state, t.output_tail) for t in report.tasks])
        assert not [w for w in report.warnings if "previous" in w], (name, report.warnings)  # lineage in order
    vault = write_vault(open_store(), tmp_path / "notebook")
    log = (vault.out_dir / "Experiment Log.md").read_text()
    # the smoke preset sizes every run the same (digits, 3 epochs), so only the study's own changes remain
    assert _difference_section(log, "cifar10_003") == ["- schedule: wsd → cosine"]
    assert _difference_section(log, "cifar10_004") == ["- schedule: cosine → cosine_warmup"]
    assert "- wrap: (varies) → branch" in _difference_section(log, "cifar10_002")
    assert "- streams: 1 → 4" in _difference_section(log, "cifar100_001")
    assert "- sinkhorn_iters: 20 → (varies)" in _difference_section(log, "gpt_shakespeare_004")
    assert _difference_section(log, "cifar10_001") == ["- no previous experiment recorded"]
    note = (vault.out_dir / "experiments" / "cifar10_003" / "experiment.md").read_text()
    assert "Previous: [[experiments/cifar10_002/experiment|cifar10_002]]" in note


def test_every_spec_of_the_reference_study_is_valid_and_names_its_own_experiment():
    specs = sorted((EXAMPLES / "results" / "specs").rglob("*.yaml"))
    assert len(specs) >= 8
    for path in specs:
        spec = load_spec(path)  # raises SpecError with the file and line on a bad spec
        assert spec.variants and spec.seeds, path
        # a spec is named after its experiment, plus what sets this copy apart ("_60_epochs")
        assert path.stem == spec.experiment or path.stem.startswith(spec.experiment + "_"), path
