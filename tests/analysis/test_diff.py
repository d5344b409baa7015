"""Config diffs: nested, human-first, confounds named, ignorable keys set aside."""

from __future__ import annotations

import math

import pytest

from labfolio.analysis import (
    RunView,
    diff_configs,
    diff_experiments,
    diff_runs,
    diff_variants,
    inconsistent_variant_keys,
)
from labfolio.analysis.diff import MISSING, VARIES, flatten_config, is_ignored, shared_config


def test_nested_diff_reports_added_removed_and_changed_with_old_and_new():
    old = {"optim": {"lr": 0.1, "scheduler": "whd", "dropout": 0.1}, "epochs": 100}
    new = {"optim": {"lr": 0.1, "scheduler": "cosine", "warmup_epochs": 5}, "epochs": 320}
    diff = diff_configs(old, new)
    assert [(c.key, c.kind) for c in diff.changes] == [
        ("optim.scheduler", "changed"), ("optim.dropout", "removed"), ("epochs", "changed"),
        ("optim.warmup_epochs", "added")]
    assert diff.of_kind("removed")[0].old == 0.1 and diff.of_kind("removed")[0].new is MISSING


def test_render_is_human_first():
    diff = diff_configs({"scheduler": "whd", "epochs": 100}, {"scheduler": "cosine", "epochs": 320})
    assert diff.render() == "scheduler: whd → cosine; epochs: 100 → 320"
    assert diff.render_lines() == ["- scheduler: whd → cosine", "- epochs: 100 → 320"]
    added = diff_configs({}, {"warmup": 5, "amp": True, "tags": ["a", "b"], "note": None})
    assert added.render() == ("warmup: (unset) → 5; amp: (unset) → true; tags: (unset) → [a, b]; "
                              "note: (unset) → null")


def test_identical_configs_have_no_diff_and_say_so():
    diff = diff_configs({"a": {"b": 1}}, {"a": {"b": 1}})
    assert not diff and diff.render() == "no config differences" and diff.confound_warning is None


def test_numbers_compare_by_value_but_booleans_are_not_numbers():
    assert not diff_configs({"epochs": 100, "lr": 1e-3, "shape": (3, 4), "x": math.nan},
                            {"epochs": 100.0, "lr": 0.001, "shape": [3, 4], "x": math.nan})
    assert diff_configs({"flag": True}, {"flag": 1}).keys == ("flag",)
    assert diff_configs({"n": 0}, {"n": False}).keys == ("n",)


def test_seeds_paths_and_run_names_are_ignored_but_still_listed():
    old = {"seed": 0, "output_dir": "/a", "data": {"path": "/x"}, "wandb_project": "p", "run_name": "r1", "lr": 1}
    new = {"seed": 1, "output_dir": "/b", "data": {"path": "/y"}, "wandb_project": "q", "run_name": "r2", "lr": 2}
    diff = diff_configs(old, new)
    assert diff.keys == ("lr",)
    assert [c.key for c in diff.ignored] == ["seed", "output_dir", "data.path", "wandb_project", "run_name"]


def test_when_a_run_checkpoints_and_which_steps_it_profiles_are_not_config_changes():
    old = {"lr": 1, "checkpoint_every": 0, "profile_steps": 0, "profile_start": 100}
    new = {"lr": 1, "checkpoint_every": 10, "profile_steps": 50, "profile_start": 200}
    assert diff_configs(old, new).keys == ()


def test_how_fast_a_run_goes_and_how_often_it_logs_are_not_a_second_change():
    # the 100-epoch rerun of a lineage step also replayed its step as one CUDA graph
    diff = diff_configs({"epochs": 60, "compile_mode": "reduce-overhead", "cuda_graph_step": False, "log_every": 10},
                        {"epochs": 100, "compile_mode": "default", "cuda_graph_step": True, "log_every": 50})
    assert diff.keys == ("epochs",) and not diff.confounded
    assert {change.key for change in diff.ignored} == {"compile_mode", "cuda_graph_step", "log_every"}


def test_ignore_rules_are_case_insensitive_globs_on_any_part_of_the_key():
    assert is_ignored("trainer.logging.WANDB.entity")
    assert is_ignored("model.init_seed")
    assert not is_ignored("model.width")
    diff = diff_configs({"model": {"width": 1, "cache": "x"}}, {"model": {"width": 2, "cache": "y"}}, ignore=["cache"])
    assert diff.keys == ("model.width",)


def test_more_than_one_changed_key_is_a_named_confound():
    diff = diff_configs({"amp": False, "batch_size": 128, "seed": 0},
                        {"amp": True, "batch_size": 256, "seed": 1})
    assert diff.confounded
    assert diff.confound_warning == ("confounded: 2 keys differ (amp, batch_size); a difference in results "
                                     "cannot be attributed to any one of them")
    assert not diff_configs({"amp": False}, {"amp": True}).confounded


def test_a_setting_recorded_twice_is_one_change_not_a_confound():
    old = {"connection": "residual", "model": {"connection": {"connection": "residual"}, "depth": 6}}
    new = {"connection": "mhc", "model": {"connection": {"connection": "mhc"}, "depth": 6}}
    diff = diff_configs(old, new)
    assert diff.keys == ("connection", "model.connection.connection")  # both still listed
    assert not diff.confounded and diff.confound_warning is None
    # a copy that moved differently, or a sibling key of the same name, is a second setting
    new["model"]["connection"]["connection"] = "hc"
    assert diff_configs(old, new).confounded
    two = diff_configs({"encoder": {"dropout": 0.1}, "decoder": {"dropout": 0.1}},
                       {"encoder": {"dropout": 0.2}, "decoder": {"dropout": 0.2}})
    assert two.confounded and "encoder.dropout, decoder.dropout" in two.confound_warning


def test_flatten_keeps_empty_tables_as_leaves():
    assert flatten_config({"a": {}, "b": {"c": {"d": 1}}}) == {"a": {}, "b.c.d": 1}


def _runs(variant: str, config: dict, seeds: int = 3, experiment: str = "exp") -> list[RunView]:
    return [RunView(f"{experiment}-{variant}-{s}", experiment, variant, s, config={**config, "seed": s})
            for s in range(seeds)]


def test_variant_diff_compares_what_the_seeds_share():
    runs = (_runs("regular", {"connection": "residual", "streams": 1, "lr": 1e-3})
            + _runs("mhc", {"connection": "mhc", "streams": 4, "lr": 1e-3}))
    diffs = diff_variants(runs, "regular")
    assert list(diffs) == ["mhc"]
    assert diffs["mhc"].render() == "connection: residual → mhc; streams: 1 → 4"
    with pytest.raises(KeyError, match="variants: regular, mhc"):
        diff_variants(runs, "baseline")


def test_experiment_diff_against_previous_shows_keys_that_started_to_vary():
    previous = _runs("a", {"scheduler": "whd", "epochs": 100, "batch_size": 128}, experiment="e1") + _runs(
        "b", {"scheduler": "whd", "epochs": 100, "batch_size": 128, "mhc": True}, experiment="e1")
    current = _runs("a", {"scheduler": "cosine", "epochs": 320, "batch_size": 128}, experiment="e2") + _runs(
        "b", {"scheduler": "cosine", "epochs": 320, "batch_size": 256, "mhc": True}, experiment="e2")
    diff = diff_experiments(previous, current)
    assert diff.render() == "scheduler: whd → cosine; epochs: 100 → 320; batch_size: 128 → (varies)"
    assert diff.confounded and "batch_size" in diff.confound_warning


def test_shared_config_marks_disagreement_and_absence_as_varies():
    shared = shared_config([{"a": 1, "b": 2}, {"a": 1, "b": 3}, {"a": 1.0}])
    assert shared == {"a": 1, "b": VARIES}


def test_mislabelled_run_shows_as_an_inconsistent_variant_key():
    runs = _runs("mhc", {"connection": "mhc", "gate_noise": True}) + [
        RunView("odd", "exp", "mhc", 9, config={"connection": "mhc", "gate_noise": False, "seed": 9})]
    assert inconsistent_variant_keys(runs) == {"mhc": ("gate_noise",)}
    assert inconsistent_variant_keys(_runs("ok", {"x": 1})) == {}


def test_run_diff_uses_the_runs_configs():
    a, b = RunView("a", "e", "v", config={"lr": 1}), RunView("b", "e", "v", config={"lr": 2})
    assert diff_runs(a, b).render() == "lr: 1 → 2"


def test_long_values_are_cut_so_a_diff_line_stays_readable():
    diff = diff_configs({"layers": list(range(40))}, {"layers": list(range(41))})
    text = diff.changes[0].render()
    assert text.count("…") == 2 and len(text) < 140
