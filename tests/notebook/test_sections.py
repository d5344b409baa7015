"""Reading and writing sections: markers, human text, headings with typos, tables, frontmatter."""

from __future__ import annotations

import pytest

from labfolio.notebook.experiment_log import ENTRY_LAYOUT, variant_from_heading
from labfolio.notebook.experiment_note import LAYOUT as EXPERIMENT_LAYOUT
from labfolio.notebook.mdtext import (dump_frontmatter, find_tables, match_heading, parse_datetime, parse_number,
                                      split_frontmatter)
from labfolio.notebook.parse import detect_shape
from labfolio.notebook.sections import dataview_fields, parse_note, render_note


def test_human_text_round_trips_through_a_rendered_note():
    human = {"note": "Intro with <span>html</span> 🎉", "hypothesis": "Line one.\n\n## My own heading\n\nMore text.",
             "setup": "", "variants_notes": "", "results_discussion": "```\n## fenced, not a heading\n```",
             "findings": "- convergence:: yes", "rules": "| Metric | Good Value | Bad Value |\n| --- | --- | --- |"}
    blocks = {"header": ["generated"], "setup": ["```yaml", "lr: 0.1", "```"], "variants": ["- a"],
              "results": ["| x |", "| --- |", "| 1 |"], "rules_table": ["none"]}
    text = render_note({"type": "experiment"}, "Experiment: x", EXPERIMENT_LAYOUT, human, blocks)
    parsed = parse_note(text, EXPERIMENT_LAYOUT)
    assert parsed.human == human
    assert parsed.title == "Experiment: x"
    assert parsed.blocks["setup"] == "```yaml\nlr: 0.1\n```"
    assert parsed.frontmatter == {"type": "experiment"}


def test_text_written_above_a_generated_block_is_kept_with_the_section():
    text = "## Results:\n\nmy note above\n<!-- labfolio:begin results -->\n| a |\n<!-- labfolio:end results -->\nbelow\n"
    parsed = parse_note(text, ENTRY_LAYOUT, expect_title=False)
    assert parsed.human["results_notes"] == "my note above\nbelow"
    assert parsed.blocks["results"] == "| a |"


def test_a_block_without_its_end_marker_stops_at_the_next_section_with_a_warning():
    text = "## Results:\n<!-- labfolio:begin results -->\n| a |\n## Conclusion:\nkeep me\n"
    parsed = parse_note(text, ENTRY_LAYOUT, expect_title=False)
    assert parsed.human["conclusion"] == "keep me"
    assert parsed.warnings and "no end marker" in parsed.warnings[0]


@pytest.mark.parametrize("heading,expected", [
    ("Experiemnt summary", "summary"), ("Hypothesys", "hypothesis"), ("**Results:**", "results_notes"),
    ("Observations / Interpretation 🎉", "observations"), ("<b>Next steps</b>", "next_steps"),
    ("Run status:", "status_notes"), ("Differences from previous experiment", "difference"),
    ("Random thoughts", None), ("", None)])
def test_headings_with_typos_colons_html_and_emoji_are_recognised(heading, expected):
    assert match_heading(heading, ENTRY_LAYOUT.aliases) == expected


@pytest.mark.parametrize("text,expected", [
    ("Baseline", ("baseline", True)), ("Baseline: regular", ("regular", True)),
    ("Variant gated_tinyimg_gated", ("gated_tinyimg_gated", False)), ("Varient gate05 ✨", ("gate05", False)),
    ("**mhc**:", ("mhc", False))])
def test_result_subheadings_name_the_variant(text, expected):
    assert variant_from_heading(text) == expected


def test_tables_without_separator_with_escaped_bars_and_short_rows_are_read():
    lines = ["| a | b \\| c | d |", "| 1 | 2 |", "", "| x |", "|---|", "| 9 |"]
    first, second = find_tables(lines)
    assert first.header == ("a", "b \\| c", "d") and not first.has_separator
    assert first.rows == (("1", "2", ""),)
    assert second.rows == (("9",),) and second.has_separator


def test_numbers_and_dates_are_read_as_people_write_them():
    assert parse_number("**0.801**") == 0.801 and parse_number("`1e-3`") == 0.001
    assert parse_number("84.1%") is None and parse_number("TBD") is None
    assert parse_datetime("**Datetime** 2026-03-02_09-14-55") == 1772442895.0
    assert parse_datetime("Date: 03.03.2026") == parse_datetime("2026-03-03")
    assert parse_datetime("no date") is None


def test_frontmatter_round_trips_and_bad_yaml_is_ignored():
    data = {"type": "variant", "tags": ["a", "b c"], "baseline": False, "runs": 3, "note": "yes: no"}
    front, body, lines = split_frontmatter(dump_frontmatter(data) + "# T\n")
    assert front == data and body == "# T\n" and lines == 7
    assert split_frontmatter("---\n: : :\n---\nbody")[0] == {}


def test_dataview_fields_are_read_with_bold_keys_and_bullets():
    assert dataview_fields("- convergence:: Yes\n**Issues**:: kNN lags\nnot a field: x") == {
        "convergence": "Yes", "issues": "kNN lags"}


@pytest.mark.parametrize("text,shape", [
    ("# --- Experiment Path ---\n## Hypothesis:\n", "log"),
    ("# Experiment: x\n## Hypothesis\n## Variants\n", "experiment"),
    ("| Date | Run ID | Machine |\n|---|---|---|\n| 1 | r | m |\n", "master"),
    ("# Study\n## v1\n```\na: 1\n```\n## Key findings\n", "study"),
    ("just prose\n", "page"),
    ("---\ntype: variant\n---\n# Variant: a (b)\n", "variant")])
def test_the_shape_of_a_file_is_recognised(text, shape):
    assert detect_shape(text, "notes/file.md") == shape
