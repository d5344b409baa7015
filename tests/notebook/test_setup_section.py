"""The setup section and the config diffs describe the runs that answer the question: a rerun of
every seed at a new length, or killed attempts, must not read as mislabelled runs or as a change
from the previous experiment."""

from __future__ import annotations

from labfolio.notebook import write_vault
from labfolio.store import open_store

from .conftest import T0, add_run

BASE = {"lr": 0.1, "epochs": 40, "schedule": "cosine", "connection": "residual"}


def _note(tmp_path, store, experiment: str) -> str:
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    return (tmp_path / "vault" / "experiments" / experiment / "experiment.md").read_text(encoding="utf-8")


def _lineage(store, *, rerun_state: str = "finished") -> None:
    for seed in range(2):
        for variant in ("regular", "mhc"):
            add_run(store, f"a_{variant}_s{seed}", experiment="exp_a", variant=variant, seed=seed,
                    config={**BASE, "epochs": 200, "connection": "mhc" if variant == "mhc" else "residual",
                            "seed": seed}, start=T0 + seed, acc=0.8)
        # the first attempt of exp_b at 40 epochs, then every seed again at 200 epochs
        add_run(store, f"b_regular_short_s{seed}", experiment="exp_b", variant="regular", seed=seed,
                config={**BASE, "schedule": "cosine_warmup", "seed": seed}, start=T0 + 100 + seed,
                acc=0.7, previous="exp_a")
        add_run(store, f"b_mhc_short_s{seed}", experiment="exp_b", variant="mhc", seed=seed,
                config={**BASE, "schedule": "cosine_warmup", "connection": "mhc", "seed": seed},
                start=T0 + 100 + seed, acc=0.7, state="killed", previous="exp_a")
        add_run(store, f"b_regular_s{seed}", experiment="exp_b", variant="regular", seed=seed,
                config={**BASE, "epochs": 200, "schedule": "cosine_warmup", "seed": seed},
                start=T0 + 1000 + seed, acc=0.82, previous="exp_a")
        add_run(store, f"b_mhc_s{seed}", experiment="exp_b", variant="mhc", seed=seed,
                config={**BASE, "epochs": 200, "schedule": "cosine_warmup", "connection": "mhc", "seed": seed},
                start=T0 + 1000 + seed, acc=0.81, state=rerun_state, previous="exp_a")


def test_a_rerun_of_every_seed_at_a_new_length_is_not_reported_as_mislabelled(tmp_path):
    store = open_store()
    _lineage(store)
    note = _note(tmp_path, store, "exp_b")
    assert "mislabelled" not in note
    assert "epochs: 200" in note  # the shared config is the counted runs' config
    assert "4 runs, those the results count" in note and "the other 4" in note
    log = (tmp_path / "vault" / "Experiment Log.md").read_text(encoding="utf-8")
    diff = log[log.index("exp_b"):]
    diff = diff[diff.index("<!-- labfolio:begin diff -->"):diff.index("<!-- labfolio:end diff -->")]
    # the diff from the previous experiment is its one change, not "epochs: 200 -> (varies)"
    assert "- schedule: cosine → cosine_warmup" in diff
    assert "epochs" not in diff and "confounded" not in diff


def test_a_variant_whose_runs_were_all_killed_is_described_by_its_newest_runs(tmp_path):
    store = open_store()
    _lineage(store, rerun_state="killed")
    note = _note(tmp_path, store, "exp_b")
    # mhc's newest attempts (200 epochs) stand for it, so its config still shows, without a warning
    assert "mislabelled" not in note
    assert '`connection` — regular: "residual"; mhc: "mhc"' in note
    assert "epochs: 200" in note


def test_runs_of_one_variant_that_count_and_disagree_are_still_flagged(tmp_path):
    store = open_store()
    _lineage(store)
    add_run(store, "b_mhc_s2", experiment="exp_b", variant="mhc", seed=2,
            config={**BASE, "epochs": 200, "schedule": "cosine", "connection": "mhc", "seed": 2},
            start=T0 + 2000, acc=0.81, previous="exp_a")
    note = _note(tmp_path, store, "exp_b")
    assert "runs labelled `mhc` disagree on schedule" in note


def test_keys_empty_in_every_run_are_named_on_one_line_not_listed_in_the_block(tmp_path):
    store = open_store()
    for seed in range(2):
        add_run(store, f"r_s{seed}", experiment="exp_e", variant="regular", seed=seed,
                config={**BASE, "seed": seed, "resume": "", "data_dir": "", "note": "" if seed else "first"},
                start=T0 + seed, acc=0.8)
    note = _note(tmp_path, store, "exp_e")
    setup = note[note.index("<!-- labfolio:begin setup -->"):note.index("<!-- labfolio:end setup -->")]
    assert 'resume: ""' not in setup and 'data_dir: ""' not in setup
    assert 'Empty ("") in all 2 runs: `resume`, `data_dir`.' in setup
    assert "`note`" in setup and "Empty" not in setup.split("Varies between runs")[1]  # empty in one run only: it varies
    assert "lr: 0.1" in setup
    variant = (tmp_path / "vault" / "experiments" / "exp_e" / "variants" / "regular.md").read_text(encoding="utf-8")
    assert 'resume: ""' in variant  # the variant note's resolved config keeps every key


def test_an_experiment_is_dated_by_the_runs_it_counts_and_names_its_first_attempt(tmp_path):
    store = open_store()
    _lineage(store)  # exp_b: a first attempt at T0 + 100 s, every seed again at T0 + 1000 s
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    log = (tmp_path / "vault" / "Experiment Log.md").read_text(encoding="utf-8")
    dates = [line for line in log.splitlines() if line.startswith("**Datetime**")]
    # newest first: exp_b, dated by its reruns, then exp_a, whose runs all count
    assert dates == ["**Datetime** 2026-01-01_10-16-40 (the counted runs; the first attempt started "
                     "2026-01-01_10-01-40)", "**Datetime** 2026-01-01_10-00-00"]
