"""The experiment note's tables: what each metrics-to-watch cell shows, and a results table that
does not change with the cache's state."""

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


def test_the_results_table_is_the_same_whether_its_results_were_computed_or_read_from_the_cache(tmp_path):
    # the cache is written with sorted keys: "mhc" then "regular", against the store's order
    store = open_store()
    for seed in range(2):
        for offset, variant in enumerate(("regular", "mhc")):
            add_run(store, f"{variant}_s{seed}", experiment="e", variant=variant, seed=seed,
                    config={"lr": 0.1, "connection": variant, "seed": seed}, start=T0 + 10 * offset + seed,
                    acc=0.7 + 0.01 * offset)
    vault = tmp_path / "vault"
    note = vault / "experiments" / "e" / "experiment.md"
    write_vault(store, vault, plots=False, root=tmp_path)
    first = note.read_text(encoding="utf-8")

    def table(text):
        return [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| regular")
                or line.startswith("| mhc")]

    assert table(first) == ["regular (baseline)", "mhc"]
    # a human edit makes the note render again, from the cached results
    note.write_text(first.replace("## Observations & Conclusions\n", "## Observations & Conclusions\n\nmhc looks better.\n"),
                    encoding="utf-8")
    write_vault(store, vault, plots=False, root=tmp_path)
    second = note.read_text(encoding="utf-8")
    assert "mhc looks better." in second
    assert table(second) == table(first)


def test_the_results_tables_show_the_metrics_the_spec_named_in_its_order_and_only_those_logged(tmp_path):
    from labfolio.notebook.results import HEADLINE_METRICS_FIELD
    from labfolio.store import Batch

    store = open_store()
    for seed in range(2):
        add_run(store, f"base_s{seed}", experiment="e", variant="baseline", seed=seed,
                config={"lr": 0.1, "seed": seed}, start=T0 + seed, acc=0.7,
                extra_summary={"test/loss": 0.9, "speed/ms_per_step": 12.5})
    vault = tmp_path / "vault"
    note = vault / "experiments" / "e" / "experiment.md"
    variant_note = vault / "experiments" / "e" / "variants" / "baseline.md"

    def header(path, first_cell):
        return next(line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith(first_cell))

    write_vault(store, vault, plots=False, root=tmp_path)
    # without a spec's list: the evaluation metrics, alphabetically, never the bookkeeping
    assert header(note, "| Variant |") == "| Variant | Runs | test/acc | test/loss |"
    store.write_batch(Batch(events=[{"type": "note", "scope": "experiment", "owner": "e",
                                     "field": HEADLINE_METRICS_FIELD,
                                     "value": "speed/ms_per_step\nval/never_logged\ntest/acc"}]))
    write_vault(store, vault, plots=False, root=tmp_path)
    assert header(note, "| Variant |") == "| Variant | Runs | speed/ms_per_step | test/acc |"
    assert header(variant_note, "| Run |").endswith("| speed/ms_per_step | test/acc |")


def test_the_master_logs_architecture_cell_names_a_vits_patch_size(tmp_path):
    store = open_store()
    for patch in (4, 2):
        add_run(store, f"p{patch}_s0", experiment="e", variant=f"patch_{patch}", seed=0,
                config={"connection": "residual", "depth": 6, "width": 192, "streams": 1, "patch_size": patch,
                        "seed": 0}, start=T0 + patch, acc=0.7)
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    log = (tmp_path / "vault" / "Master Experiment Log.md").read_text(encoding="utf-8")
    assert "| residual L6 H192 P4 S1 |" in log and "| residual L6 H192 P2 S1 |" in log


def test_the_summary_says_how_far_runs_got_when_they_stopped_short_of_their_epochs(tmp_path):
    store = open_store()
    add_run(store, "whole", experiment="e", variant="a", seed=0, config={"epochs": 10}, start=T0, acc=0.7,
            extra_summary={"epoch": 10.0})
    add_run(store, "killed", experiment="e", variant="a", seed=1, config={"epochs": 10}, start=T0 + 1,
            state="killed", extra_summary={"epoch": 3.5})
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    log = (tmp_path / "vault" / "Experiment Log.md").read_text(encoding="utf-8")
    assert "- Epochs: 10 (reached 3.5)\n" in log
    master = (tmp_path / "vault" / "Master Experiment Log.md").read_text(encoding="utf-8")
    rows = {line.split("|")[2].strip(" `"): line for line in master.splitlines() if line.startswith("| 20")}
    assert "| 3.5 of 10 ep |" in rows["killed"] and "| 10 ep |" in rows["whole"]
    add_run(store, "whole_2", experiment="f", variant="a", seed=0, config={"epochs": 10}, start=T0 + 2, acc=0.7,
            extra_summary={"epoch": 10.0})
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    log = (tmp_path / "vault" / "Experiment Log.md").read_text(encoding="utf-8")
    assert log.count("- Epochs: 10\n") == 1  # f's runs went the whole way: nothing added


def test_the_summary_reports_the_runners_wall_time_and_what_lies_outside_the_runs(tmp_path):
    store = open_store()
    for seed, (wall, outside) in enumerate([(900.0, 25.0), (940.0, 29.0)]):
        add_run(store, f"r{seed}", experiment="e", variant="a", seed=seed, config={"lr": 0.1}, start=T0 + seed,
                acc=0.7, extra_summary={"runner/wall_s": wall, "runner/outside_run_s": outside})
    add_run(store, "by_hand", experiment="f", variant="a", seed=0, config={"lr": 0.1}, start=T0 + 5, acc=0.7)
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    log = (tmp_path / "vault" / "Experiment Log.md").read_text(encoding="utf-8")
    line = "- Runner: 15m20s wall per run, 27s of it outside the run (process start, imports, data, model build) (mean of 2)"
    assert line in log.splitlines()
    assert log.count("- Runner:") == 1  # f's run was not started by labfolio run
    note = (tmp_path / "vault" / "experiments" / "e" / "experiment.md").read_text(encoding="utf-8")
    assert "runner/wall_s" not in note  # bookkeeping, not a result column


def test_the_summary_describes_the_runs_that_count_when_every_seed_was_rerun_at_a_new_length(tmp_path):
    store = open_store()
    for seed in range(2):
        add_run(store, f"short_s{seed}", experiment="e", variant="a", seed=seed, config={"epochs": 60},
                start=T0 + seed, acc=0.80, extra_summary={"runner/wall_s": 600.0, "runner/outside_run_s": 50.0})
        add_run(store, f"long_s{seed}", experiment="e", variant="a", seed=seed, config={"epochs": 100},
                start=T0 + 100 + seed, acc=0.85, extra_summary={"runner/wall_s": 900.0, "runner/outside_run_s": 30.0})
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    log = (tmp_path / "vault" / "Experiment Log.md").read_text(encoding="utf-8")
    lines = log.splitlines()
    runs_line = next(line for line in lines if line.startswith("- Runs:"))
    assert runs_line == ("- Runs: 4 training (a ×4); 4 finished; described below: 2; the other 2 are earlier or "
                         "unfinished attempts of the same seeds (listed in the variant notes)")
    # the older 60-epoch attempts are neither in the epochs nor averaged into the runner's time
    assert "- Epochs: 100" in lines
    assert any(line.startswith("- Runner: 15m00s wall per run, 30s of it outside") and line.endswith("(mean of 2)")
               for line in lines)
    assert "2 superseded by a newer run of the same seed" in log
    note = (tmp_path / "vault" / "experiments" / "e" / "variants" / "a.md").read_text(encoding="utf-8")
    assert "Not counted in the results:\n\n- `short_s0`: superseded by a newer run of the same seed: run long_s0 " \
           "counts instead\n- `short_s1`: " in note


def test_a_variant_note_lists_a_runtime_setting_its_runs_differ_in_though_diffs_ignore_it(tmp_path):
    store = open_store()
    add_run(store, "graphs", experiment="e", variant="a", seed=0, config={"epochs": 10, "cuda_graph_step": False, "seed": 0},
            start=T0, acc=0.7)
    add_run(store, "graph_step", experiment="e", variant="a", seed=1, config={"epochs": 10, "cuda_graph_step": True, "seed": 1},
            start=T0 + 1, acc=0.7)
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    note = (tmp_path / "vault" / "experiments" / "e" / "variants" / "a.md").read_text(encoding="utf-8")
    assert "Differs between its runs:" in note and "- `cuda_graph_step` — " in note
    assert "- `seed`" not in note  # seeds differ by design


def test_the_lineage_diff_shows_a_runtime_change_without_calling_it_a_confound(tmp_path):
    store = open_store()
    add_run(store, "old", experiment="e1", variant="a", seed=0,
            config={"epochs": 60, "cuda_graph_step": False, "seed": 0}, start=T0, acc=0.7)
    add_run(store, "new", experiment="e2", variant="a", seed=1, previous="e1",
            config={"epochs": 100, "cuda_graph_step": True, "seed": 1}, start=T0 + 100, acc=0.8)
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    log = (tmp_path / "vault" / "Experiment Log.md").read_text(encoding="utf-8")
    assert "- epochs: 60 → 100\n" in log
    assert "- not counted as a change (how it runs, not what it computes): cuda_graph_step: false → true\n" in log
    assert "confounded" not in log and "seed: 0 → 1" not in log


def test_the_summary_says_how_fast_runs_that_shared_a_device_went_together(tmp_path):
    store = open_store()
    for seed in range(2):
        add_run(store, f"r{seed}", experiment="e", variant="a", seed=seed, config={"lr": 0.1}, start=T0 + seed,
                acc=0.7, extra_summary={"runner/runs_at_once": 4, "runner/steps_per_s_in_all": 358.2})
    add_run(store, "alone", experiment="f", variant="a", seed=0, config={"lr": 0.1}, start=T0 + 5, acc=0.7)
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    log = (tmp_path / "vault" / "Experiment Log.md").read_text(encoding="utf-8")
    assert ("- Shared device: 4 runs at once made 358.2 steps/s in all (while they all trained, as `labfolio run` "
            "measured)") in log.splitlines()
    assert log.count("- Shared device:") == 1  # f's run shared nothing
    note = (tmp_path / "vault" / "experiments" / "e" / "experiment.md").read_text(encoding="utf-8")
    assert "steps_per_s_in_all" not in note.split("## Results")[1]  # bookkeeping, not a result column


def test_a_pilot_of_single_runs_says_insufficient_seeds_once_in_table_order_and_each_variant_note_keeps_its_deltas(tmp_path):
    store = open_store()
    names = ("strong", "timm", "light", "wide")
    for offset, variant in enumerate(names):
        add_run(store, f"{variant}_s0", experiment="pilot", variant=variant, seed=0,
                config={"lr": 0.1, "recipe": variant, "seed": 0}, start=T0 + offset, acc=0.6 + 0.05 * offset)
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    folder = tmp_path / "vault" / "experiments" / "pilot"
    note = (folder / "experiment.md").read_text(encoding="utf-8")
    verdicts = [line for line in note.splitlines() if "insufficient seeds" in line]
    assert len(verdicts) == 1, verdicts
    line = verdicts[0]
    assert line.startswith("- vs strong: **insufficient seeds** for 3 variants (baseline n=1;")
    # in the table's order, each with its delta of one metric
    assert line.index("timm (n=1) +0.05") < line.index("light (n=1) +0.10") < line.index("wide (n=1) +0.15")
    variant_note = (folder / "variants" / "light.md").read_text(encoding="utf-8")
    assert "- vs strong: **insufficient seeds** (n=1 vs baseline n=1;" in variant_note
    assert "deltas: " in variant_note


def test_two_variants_without_enough_seeds_keep_a_line_each(tmp_path):
    store = open_store()
    for offset, variant in enumerate(("v1", "v2", "v3")):
        add_run(store, f"{variant}_s0", experiment="e", variant=variant, seed=0,
                config={"lr": 0.1 * (offset + 1), "seed": 0}, start=T0 + offset, acc=0.6)
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    note = (tmp_path / "vault" / "experiments" / "e" / "experiment.md").read_text(encoding="utf-8")
    verdicts = [line for line in note.splitlines() if "insufficient seeds" in line]
    assert [line.split(":")[0] for line in verdicts] == ["- v2", "- v3"]
