"""Spec validation: every mistake is refused with the file, the YAML line and the fix."""

from __future__ import annotations

import pytest

from labfolio.spec import SpecError, load_spec, parse_spec, previous_warnings

RECIPE_SPEC = """\
experiment: vit_digits_002
previous: vit_digits_001
hypothesis: mHC around each branch beats mHC around the whole block
recipe: classify
base: {dataset: digits, epochs: 30, schedule: cosine_warmup}
variants:
  regular: {}
  mhc: {connection: mhc, streams: 4}
seeds: [0, 1]
"""


def error_of(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="s.yaml")
    return str(info.value)


def test_a_valid_recipe_spec_expands_to_variants_times_seeds():
    spec = parse_spec(RECIPE_SPEC, source="s.yaml")
    assert spec.baseline == "regular"
    planned = spec.plan()
    assert [(p.variant, p.seed) for p in planned] == [("regular", 0), ("mhc", 0), ("regular", 1), ("mhc", 1)]
    mhc = next(p for p in planned if p.variant == "mhc")
    assert mhc.overrides == {"dataset": "digits", "epochs": 30, "schedule": "cosine_warmup",
                             "connection": "mhc", "streams": 4}
    assert mhc.config["width"] == 192 and mhc.config["seed"] == 0  # recipe defaults filled in


def test_smoke_plan_runs_the_first_seed_with_the_recipe_preset():
    planned = parse_spec(RECIPE_SPEC, source="s.yaml").plan(smoke=True)
    assert [(p.variant, p.seed) for p in planned] == [("regular", 0), ("mhc", 0)]
    assert planned[1].config["epochs"] == 3 and planned[1].config["connection"] == "mhc"


def test_unknown_top_level_key_names_its_line_and_suggests_the_right_one():
    message = error_of(RECIPE_SPEC.replace("seeds:", "seedz:"))
    assert message.startswith("s.yaml:9: seedz: unknown spec key 'seedz' (did you mean 'seeds'?)")


def test_unknown_recipe_config_key_names_the_variant_line_and_suggests():
    message = error_of(RECIPE_SPEC.replace("mhc: {connection: mhc", "mhc: {conection: mhc"))
    assert message.startswith("s.yaml:8: variants.mhc.conection: classify has no config key 'conection' "
                              "(did you mean 'connection'?)")


def test_wrong_type_names_the_yaml_line_and_the_field():
    text = RECIPE_SPEC.replace("base: {dataset: digits, epochs: 30,", "base:\n  dataset: digits\n  epochs: thirty\n ")
    message = error_of(text)
    assert message.startswith("s.yaml:7: base.epochs: epochs must be int, got str 'thirty'"), message


def test_a_bad_choice_is_refused_with_the_choices():
    message = error_of(RECIPE_SPEC.replace("connection: mhc", "connection: mch"))
    assert "s.yaml:8: variants.mhc.connection" in message and "did you mean 'mhc'" in message


def test_a_variant_that_overrides_nothing_is_refused():
    message = error_of(RECIPE_SPEC.replace("  mhc: {connection: mhc, streams: 4}", "  mhc: {}"))
    assert message == ("s.yaml:8: variants.mhc: variant 'mhc' changes nothing against the baseline 'regular': "
                       "its config resolves to the same values (it overrides nothing); change a key or remove "
                       "the variant")


def test_a_variant_that_repeats_a_default_changes_nothing_either():
    message = error_of(RECIPE_SPEC.replace("{connection: mhc, streams: 4}", "{connection: residual}"))
    assert "variant 'mhc' changes nothing against the baseline 'regular'" in message
    assert "connection='residual' is already the value in base or the defaults" in message


def test_command_spec_variants_that_change_nothing_are_refused():
    text = "experiment: e\ncommand: python t.py\nbase: {lr: 0.1}\nvariants:\n  a: {}\n  b: {lr: 0.1}\n"
    assert "s.yaml:6: variants.b: variant 'b' changes nothing against the baseline 'a'" in error_of(text)


def test_unknown_baseline_and_recipe_get_suggestions():
    assert "baseline 'regulr' is not a variant (did you mean 'regular'?)" in error_of(
        RECIPE_SPEC + "baseline: regulr\n")
    assert "s.yaml:4: recipe: unknown recipe 'clasify' (did you mean 'classify'?)" in error_of(
        RECIPE_SPEC.replace("recipe: classify", "recipe: clasify"))


def test_spec_needs_exactly_one_of_recipe_and_command():
    assert "exactly one of recipe:" in error_of(RECIPE_SPEC + "command: python train.py\n")
    assert "exactly one of recipe:" in error_of(RECIPE_SPEC.replace("recipe: classify\n", ""))


def test_duplicate_keys_are_refused_instead_of_silently_dropped():
    assert error_of(RECIPE_SPEC + "seeds: [3]\n").startswith("s.yaml:10: duplicate key 'seeds'")


def test_runner_owned_keys_cannot_be_set_in_a_config():
    assert "'seed' is set by the runner" in error_of(RECIPE_SPEC.replace("epochs: 30", "seed: 3"))


def test_seeds_must_be_distinct_integers_with_their_line():
    assert error_of(RECIPE_SPEC.replace("seeds: [0, 1]", "seeds: [0, one]")).startswith(
        "s.yaml:9: seeds.1: seeds must be integers")
    assert "seeds repeat" in error_of(RECIPE_SPEC.replace("seeds: [0, 1]", "seeds: [1, 1]"))


def test_invalid_yaml_and_empty_files_say_so(tmp_path):
    assert "not valid YAML" in error_of("experiment: [unclosed\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(SpecError, match="the file is empty"):
        load_spec(empty)
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(tmp_path / "missing.yaml")


def test_spec_rules_are_parsed_into_rules():
    spec = parse_spec(RECIPE_SPEC + "rules:\n  - {metric: grad_norm, good: '< 5', bad: '> 50'}\n", source="s.yaml")
    assert [rule.metric for rule in spec.rules] == ["grad_norm"]
    assert "s.yaml:10: rules: rules[0] must be a table with a 'metric'" in error_of(RECIPE_SPEC + "rules:\n  - {good: '< 5'}\n")


def test_missing_previous_is_a_warning_that_points_at_its_spec(tmp_path):
    (tmp_path / "vit_digits_001.yaml").write_text("experiment: vit_digits_001\n")
    path = tmp_path / "vit_digits_002.yaml"
    path.write_text(RECIPE_SPEC)
    spec = load_spec(path)
    [warning] = previous_warnings(spec, {"other"})
    assert warning.startswith("previous experiment 'vit_digits_001' is not in the store")
    assert warning.endswith(f"run it first: labfolio run {tmp_path / 'vit_digits_001.yaml'}")
    assert previous_warnings(spec, {"vit_digits_001"}) == []


def test_command_line_settings_change_base_keys_and_seeds_but_variants_keep_their_own():
    from labfolio.spec import parse_setting, with_settings

    spec = parse_spec(RECIPE_SPEC, source="s.yaml")
    settings = dict(parse_setting(t) for t in ("epochs=4", "lr=3e-3", "streams=2", "schedule=cosine"))
    assert settings == {"epochs": 4, "lr": 0.003, "streams": 2, "schedule": "cosine"}
    changed = with_settings(spec, settings, seeds=[7])
    planned = changed.plan()
    assert [(p.variant, p.seed) for p in planned] == [("regular", 7), ("mhc", 7)]
    assert {p.config["epochs"] for p in planned} == {4}
    assert next(p for p in planned if p.variant == "mhc").config["streams"] == 4  # the variant's own value
    assert spec.base["epochs"] == 30 and spec.seeds == [0, 1]  # the loaded spec is left as it was


def test_bad_command_line_settings_are_refused_with_the_flag_and_a_suggestion():
    from labfolio.spec import parse_setting, with_settings

    spec = parse_spec(RECIPE_SPEC, source="s.yaml")
    with pytest.raises(SpecError, match=r"--set epoch: .*did you mean 'epochs'"):
        with_settings(spec, {"epoch": 4})
    with pytest.raises(SpecError, match="epochs must be int"):
        with_settings(spec, {"epochs": "four"})
    with pytest.raises(SpecError, match="changes nothing"):
        with_settings(spec, {"connection": "mhc", "streams": 4})
    with pytest.raises(SpecError, match="expected key=value"):
        parse_setting("epochs")
    with pytest.raises(SpecError, match="distinct integers"):
        with_settings(spec, {}, seeds=[1, 1])


def test_smoke_warns_when_the_preset_makes_variants_identical_and_names_the_replaced_keys():
    from labfolio.spec import smoke_warnings

    spec = parse_spec(RECIPE_SPEC.replace("mhc: {connection: mhc, streams: 4}",
                                          "wide: {width: 384, heads: 6}\n  mhc: {connection: mhc, streams: 4}"),
                      source="s.yaml")
    (warning,) = smoke_warnings(spec)
    assert warning.startswith("with --smoke, variants regular, wide run the same config")
    assert "replaces heads, width" in warning
    # variants the preset leaves apart (connection) are not reported
    assert smoke_warnings(parse_spec(RECIPE_SPEC, source="s.yaml")) == []


def test_the_specs_smoke_values_win_over_the_recipes_smoke_preset():
    from labfolio.runner import child_argv

    spec = parse_spec(RECIPE_SPEC.replace("seeds: [0, 1]", "seeds: [0, 1]\nsmoke: {width: 48, heads: 4}"),
                      source="s.yaml")
    planned = spec.plan(smoke=True)
    assert all(p.config["width"] == 48 and p.config["heads"] == 4 for p in planned)
    assert planned[0].config["epochs"] == 3  # the rest of the preset still applies
    # the child gets them as flags after --smoke, which is what makes them win there too
    assert child_argv(spec, planned[0], smoke=True, python="py")[-3:] == ["--smoke", "--width=48", "--heads=4"]
    assert child_argv(spec, planned[0], smoke=False, python="py")[-1] != "--smoke"
