"""Health rules: range syntax, evaluation, built-in packs, project files, the Markdown table."""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from labfolio.analysis import (
    GENERAL_RULES,
    MHC_RULES,
    Health,
    RangeSyntaxError,
    Rule,
    RulesFileError,
    builtin_rules,
    evaluate_rule,
    evaluate_rules,
    format_metrics_table,
    load_project_rules,
    merge_rules,
    parse_metrics_table,
    parse_range,
)
from labfolio.analysis.rules import RuleTracker, rule_alert


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        ("< 0.2", [0.1, -5], [0.2, 0.3]),
        ("<= 5", [5, 4.9], [5.01]),
        ("> 0.4", [0.41, math.inf], [0.4, 0.1]),
        (">= 1.0", [1.0, 2], [0.999]),
        ("≥ 1.0", [1.0], [0.5]),
        ("0.3-0.7", [0.3, 0.5, 0.7], [0.29, 0.71]),
        ("0.3–0.7", [0.3, 0.7], [0.8]),
        ("0.3 to 0.7", [0.5], [0.8]),
        ("-0.5-0.5", [-0.5, 0.0], [-0.6]),
        ("1.0 or 0.25", [0.96, 1.04, 0.251, 0.249], [0.9, 0.26, 0.5]),
        ("1.0", [1.0, 0.95], [0.94, 1.06]),
        ("NaN", [math.nan], [0.0, math.inf]),
        ("Inf", [math.inf, -math.inf], [1e300]),
        ("< 1e-6", [5e-7], [2e-6]),
        ("1e-6-1e-3", [1e-4], [1e-2]),
        ("  >   0.4 ", [0.5], [0.3]),
    ],
)
def test_range_contains_what_the_text_says(text, inside, outside):
    parsed = parse_range(text)
    assert all(parsed.contains(v) for v in inside)
    assert not any(parsed.contains(v) for v in outside)


def test_relative_range_compares_with_the_median():
    parsed = parse_range("> 10x median")
    assert parsed.relative
    assert parsed.contains(947, median=6.5) and not parsed.contains(50, median=6.5)
    assert not parsed.contains(947, median=None)


@pytest.mark.parametrize(
    ("text", "hint"),
    [("foo", "not a comparison"), ("0.7-0.3", "write '0.3-0.7'"), ("", "empty"),
     ("> 10x mean", "only the median"), ("1.0 or", "a stray 'or'")],
)
def test_bad_range_says_what_is_expected(text, hint):
    with pytest.raises(RangeSyntaxError, match="Write one of|write '0.3-0.7'") as error:
        parse_range(text)
    assert hint in str(error.value)


def test_rule_judges_good_watch_and_bad_with_the_value():
    rule = Rule("stream_similarity", good="< 0.2", bad="> 0.4")
    steps = np.arange(3)
    assert evaluate_rule(rule, steps, [0.5, 0.3, 0.1]).health is Health.GOOD
    watch = evaluate_rule(rule, steps, [0.1, 0.1, 0.3])
    assert (watch.health, watch.value) == (Health.WATCH, 0.3)
    assert watch.message == "stream_similarity = 0.3 (last) is watch (good < 0.2, bad > 0.4)"
    bad = evaluate_rule(rule, steps, [0.1, 0.1, 0.45], "mhc/stream_similarity")
    assert bad.message == "mhc/stream_similarity = 0.45 (last) is bad (> 0.4)"


def test_bad_wins_when_ranges_overlap_and_a_missing_good_range_means_not_bad():
    assert Rule("x", good="< 1", bad="> 0.5").judge(0.7) is Health.BAD
    assert Rule("x", bad="> 0.5").judge(0.2) is Health.GOOD
    assert Rule("x", good="< 0.5").judge(0.7) is Health.WATCH


def test_nan_or_inf_is_bad_unless_the_good_range_names_it():
    assert Rule("x", good="< 1").judge(math.nan) is Health.BAD
    assert Rule("x", good="< 1", bad="> 5").judge(math.inf) is Health.BAD
    assert Rule("x", good="NaN").judge(math.nan) is Health.GOOD


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("last", 4.0), ("mean_last_N", 3.5), ("mean_last_3", 4.0), ("min", 1.0), ("max", 5.0)],
)
def test_aggregations(aggregation, expected):
    rule = Rule("m", good="< 100", aggregation=aggregation, last_n=2)
    assert evaluate_rule(rule, np.arange(5), [1.0, 2.0, 5.0, 3.0, 4.0]).value == expected


def test_min_and_max_turn_nan_when_any_point_is_nan():
    rule = Rule("train/loss", bad="NaN", aggregation="max")
    result = evaluate_rule(rule, np.arange(4), [2.0, math.nan, 1.0, 0.9])
    assert result.health is Health.BAD and math.isnan(result.value)


def test_start_step_skips_the_warmup_and_no_points_is_no_data():
    rule = Rule("gate_value", good="0.3-0.7", bad=">= 1.0", start_step=100)
    assert evaluate_rule(rule, [0, 50, 150], [1.5, 1.2, 0.5]).health is Health.GOOD
    empty = evaluate_rule(rule, [0, 50], [1.5, 1.2])
    assert empty.health is Health.NO_DATA and empty.message == "gate_value: no data at or after step 100"


def test_unknown_aggregation_and_empty_rule_are_refused():
    with pytest.raises(RulesFileError, match="mean_last_N"):
        Rule("x", good="< 1", aggregation="median")
    with pytest.raises(RulesFileError, match="neither a good nor a bad range"):
        Rule("x")


def test_rule_matches_exact_keys_suffixes_and_globs():
    assert Rule("stream_similarity", bad="> 0.4").matches("mhc/layer3/stream_similarity")
    assert not Rule("stream_similarity", bad="> 0.4").matches("stream_similarity_max")
    assert Rule("*loss", bad="NaN").matches("val_loss") and Rule("*loss", bad="NaN").matches("train/loss")
    assert not Rule("*loss", bad="NaN").matches("loss_scale")


def test_grad_norm_explosion_rule_is_relative_to_its_own_history():
    rule = next(r for r in GENERAL_RULES if r.metric == "*grad_norm")
    calm = 5 + np.random.default_rng(0).random(200)
    assert evaluate_rule(rule, np.arange(200), calm).health is Health.GOOD
    exploded = evaluate_rule(rule, np.arange(201), [*calm, 947.0], "grad_norm")
    assert exploded.health is Health.BAD
    assert exploded.message.startswith("grad_norm = 947 (max), median 5.5")


def test_grad_norm_rule_ignores_the_large_gradients_of_the_first_steps():
    rule = next(r for r in GENERAL_RULES if r.metric == "*grad_norm")
    steps = np.arange(0, 1000, 10)
    values = np.full(steps.size, 0.9)
    values[0] = 16.0  # step 0: the init's gradient, ~18x the later median, in every transformer
    assert evaluate_rule(rule, steps, values, "grad_norm").health is Health.GOOD
    values[50] = 16.0  # the same spike at step 500 is an explosion
    assert evaluate_rule(rule, steps, values, "grad_norm").health is Health.BAD


def test_builtin_packs_hold_the_issue_values():
    table = {r.metric: (r.good, r.bad) for r in MHC_RULES}
    assert table == {
        "stream_similarity": ("< 0.2", "> 0.4"),
        "gate_value": ("0.3-0.7", ">= 1.0"),
        "sinkhorn_col_err_raw": ("< 1e-6", "> 0.01"),
        "H_res_diag_mean": ("0.4-0.8", "1.0 or 0.25"),
        "val/bpb": ("< 1.0", "> 1.2"),
    }
    assert [r.metric for r in builtin_rules(["general"])] == ["*loss", "*grad_norm"]
    with pytest.raises(RulesFileError, match="built-in packs: general, mhc"):
        builtin_rules(["nope"])


def test_evaluate_rules_gives_every_rule_a_row():
    series = {"train/loss": ([0, 1], [2.0, 1.5]), "mhc/stream_similarity": ([0, 1], [0.1, 0.5])}
    results = evaluate_rules(builtin_rules(), series)
    by_rule = {(r.rule.metric, r.metric): r.health for r in results}
    assert by_rule[("*loss", "train/loss")] is Health.GOOD
    assert by_rule[("stream_similarity", "mhc/stream_similarity")] is Health.BAD
    assert by_rule[("gate_value", "gate_value")] is Health.NO_DATA


def test_tracker_fed_in_batches_agrees_with_evaluating_the_whole_series():
    rng = np.random.default_rng(1)
    values = np.abs(rng.normal(5, 1, 500))
    values[420] = 80.0
    steps = np.arange(500.0)
    for rule in [*GENERAL_RULES, Rule("g", good="< 6", aggregation="mean_last_N", last_n=7, start_step=30),
                 Rule("g", bad="> 7", aggregation="min")]:
        tracker = RuleTracker(rule, "grad_norm")
        for start in range(0, 500, 37):
            tracker.update(steps[start:start + 37], values[start:start + 37])
        live, post_hoc = tracker.result(), evaluate_rule(rule, steps, values, "grad_norm")
        assert live.health is post_hoc.health
        assert live.value == pytest.approx(post_hoc.value)


def test_bad_result_becomes_a_warning_alert_quoting_the_note():
    rule = Rule("gate_value", good="0.3-0.7", bad=">= 1.0", note="a saturated gate no longer gates")
    alert = rule_alert(evaluate_rule(rule, [10, 20], [0.5, 1.02]))
    assert (alert.kind, alert.severity, alert.step) == ("rule", "warning", 20)
    assert alert.message == ("gate_value = 1.02 (last) is bad (>= 1.0) at step 20 — a saturated gate no longer gates")
    assert rule_alert(evaluate_rule(rule, [10], [0.5])) is None


def test_project_rules_merge_pyproject_and_yaml_field_by_field(tmp_path):
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "x"
        [tool.labfolio.rules]
        disable = ["val/bpb"]
        [tool.labfolio.rules.grad_norm]
        good = "< 5"
        bad = "> 50"
        aggregation = "max"
        [tool.labfolio.rules.stream_similarity]
        bad = "> 0.5"
    """))
    (tmp_path / ".labfolio").mkdir()
    (tmp_path / ".labfolio" / "rules.yaml").write_text(textwrap.dedent("""
        grad_norm:
          note: Spikes precede divergence
        rules:
          - {metric: val/acc, good: "> 0.9", start_step: 1000}
    """))
    rules = {rule.metric: rule for rule in load_project_rules(tmp_path)}
    assert "val/bpb" not in rules
    assert (rules["stream_similarity"].good, rules["stream_similarity"].bad) == ("< 0.2", "> 0.5")
    assert rules["stream_similarity"].note.startswith("streams becoming copies")
    grad = rules["grad_norm"]
    assert (grad.good, grad.bad, grad.aggregation, grad.note) == ("< 5", "> 50", "max", "Spikes precede divergence")
    assert rules["val/acc"].start_step == 1000


def test_project_rules_choose_packs(tmp_path):
    (tmp_path / ".labfolio").mkdir()
    (tmp_path / ".labfolio" / "rules.yaml").write_text("packs: [general]\n")
    assert [r.metric for r in load_project_rules(tmp_path)] == ["*loss", "*grad_norm"]
    assert len(load_project_rules(tmp_path / "elsewhere")) == len(builtin_rules())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("grad_norm: {god: '< 5'}\n", "unknown field 'god' (did you mean 'good'?)"),
        ("grad_norm: {bad: 'lots'}\n", "rule 'grad_norm': cannot read the range 'lots'"),
        ("packs: [mhcc]\n", "unknown rule pack 'mhcc'"),
        ("grad_norm: '> 5'\n", "must be a table of rule fields"),
        ("rules: [{good: '< 1'}]\n", "rules[0] must be a table with a 'metric'"),
        ("grad_norm: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_project_rules_say_which_file_and_rule(tmp_path, content, message):
    (tmp_path / ".labfolio").mkdir()
    (tmp_path / ".labfolio" / "rules.yaml").write_text(content)
    with pytest.raises(RulesFileError) as error:
        load_project_rules(tmp_path)
    assert message in str(error.value) and "rules.yaml" in str(error.value)


def test_merge_rules_replaces_by_metric_and_appends_new_ones():
    merged = merge_rules(MHC_RULES, [Rule("gate_value", bad="> 2"), Rule("new", bad="> 1")])
    assert [r.metric for r in merged][-1] == "new"
    assert next(r for r in merged if r.metric == "gate_value").bad == "> 2"


def test_metrics_table_is_read_tolerantly():
    text = textwrap.dedent("""
        Some prose before the table.

        | **Metric** |  Good Value | Bad Value|Notes |
        |---|:---:|---|---|
        | `grad_norm` | **< 5** | > 50 (spikes) | Spikes precede divergence |
        |gate_mean|0.3–0.7|1.0|Saturating to 1.0 is bad|
        | `*loss` | | NaN | |
        | stream_similarity | stable | > 0.4 | not a range |
        |  | < 1 | > 2 | no metric |

        | Metric | Good | Bad |
        | --- | --- | --- |
        | H_res_diag_mean | 0.4-0.8 | 1.0 or 0.25 |
    """)
    table = parse_metrics_table(text)
    assert [(r.metric, r.good, r.bad, r.note) for r in table.rules] == [
        ("grad_norm", "< 5", "> 50", "Spikes precede divergence"),
        ("gate_mean", "0.3–0.7", "1.0", "Saturating to 1.0 is bad"),
        ("*loss", None, "NaN", ""),
        ("H_res_diag_mean", "0.4-0.8", "1.0 or 0.25", ""),
    ]
    assert [row.line.split("|")[1].strip() for row in table.unparsed] == ["stream_similarity", ""]
    assert "cannot read the range 'stable'" in table.unparsed[0].reason


def test_metrics_table_round_trips_through_format_and_parse():
    rules = [Rule("grad_norm", good="< 5", bad="> 50", note="a | b"), Rule("*loss", bad="NaN"),
             Rule("gate_value", good="0.3–0.7", bad=">= 1.0")]
    text = format_metrics_table(rules)
    assert text.splitlines()[:3] == ["| Metric | Good Value | Bad Value | Notes |", "| --- | --- | --- | --- |",
                                     "| grad_norm | < 5 | > 50 | a \\| b |"]
    parsed = parse_metrics_table(text)
    assert [(r.metric, r.good, r.bad, r.note) for r in parsed.rules] == [
        (r.metric, r.good, r.bad, r.note) for r in rules]
    assert parsed.unparsed == ()
