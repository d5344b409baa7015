"""The metrics-to-watch table says which number each cell shows."""

from __future__ import annotations

from labfolio.notebook import write_vault
from labfolio.store import open_store

from .conftest import T0, add_run


def test_a_rule_cell_names_its_aggregation_and_how_many_runs_it_averages(tmp_path):
    store = open_store()
    for seed in range(2):
        add_run(store, f"base_s{seed}", experiment="e", variant="baseline", seed=seed,
                config={"lr": 0.1, "seed": seed}, start=T0 + seed, acc=0.7)
    add_run(store, "mhc_s0", experiment="e", variant="mhc", seed=0, config={"lr": 0.1, "seed": 0},
            start=T0 + 10, acc=0.7)
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    note = (tmp_path / "vault" / "experiments" / "e" / "experiment.md").read_text(encoding="utf-8")
    row = next(line for line in note.splitlines() if line.startswith("| train/loss (rule `*loss`)"))
    baseline, mhc = row.strip("|").split("|")[-2:]
    # the *loss rule judges each run's largest loss (a NaN anywhere), which is not its result
    assert "· max " in baseline and baseline.strip().endswith("(mean of 2 runs)")
    assert "· max " in mhc and "mean of" not in mhc
