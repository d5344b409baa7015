"""Importing hand-written notebooks: all four shapes, broken inputs, no duplicates, nothing lost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from labfolio.notebook import import_notes, write_vault
from labfolio.notebook.mdtext import find_tables, split_frontmatter
from labfolio.store import open_store

from .conftest import FIXTURES

ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.md")) + ["vault"]


def dump(store) -> dict:
    """Everything an import can write, in a comparable form."""
    experiments = {e["name"]: (e["previous"], tuple(e["variants"]), e["baseline"], tuple(sorted(e["tags"])))
                   for e in store.experiments()}
    runs = {}
    for run in store.list_runs():
        runs[run.run_id] = (run.experiment, run.variant, run.seed, run.state, run.status, run.status_reason,
                            run.evaluates, tuple(run.tags), run.started_at, run.ended_at, repr(run.config),
                            repr(run.provenance), tuple((k, repr(e.value)) for k, e in run.summary.items()))
    notes = {("project", ""): store.note_fields("project", "")}
    for name, (_, variants, _, _) in experiments.items():
        notes[("experiment", name)] = store.note_fields("experiment", name)
        for variant in variants:
            notes[("variant", f"{name}/{variant}")] = store.note_fields("variant", f"{name}/{variant}")
    for run_id in runs:
        notes[("run", run_id)] = store.note_fields("run", run_id)
    return {"experiments": experiments, "runs": runs, "notes": {k: v for k, v in notes.items() if v}}


def vault_text(vault: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(vault.rglob("*.md")))


def human_content(text: str) -> tuple[list[str], list[str]]:
    """(numbers, prose lines and table cells) a reader of the file would not want to lose."""
    _, body, _ = split_frontmatter(text)
    lines = body.split("\n")
    cells = [c for t in find_tables(lines) for row in (t.header, *t.rows) for c in row if c.strip() not in ("", "--")]
    table_lines = {i for t in find_tables(lines) for i in range(t.first_line, t.last_line + 1)}
    prose = []
    for index, line in enumerate(lines):
        stripped = line.strip()
        if (index in table_lines or not stripped or stripped.startswith(("#", "```", "<!--"))
                or re.fullmatch(r"[-*+]?\s*(\[\[[^\]]+\]\]\s*)+", stripped)
                or re.search(r"\]\(\s*\.?/?experiments/", stripped)
                or re.fullmatch(r"\**[\w ]+\**:?\s*\**", stripped)):  # a bare label: '**Datetime**', 'Results:'
            continue
        prose.append(re.sub(r"^([-*+]\s+)", "", stripped))
    numbers = re.findall(r"\d+(?:\.\d+)?", body)
    return numbers, prose + cells


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_notes_after_an_import_reproduce_every_number_and_sentence(name, fixtures_copy, tmp_path):
    store = open_store()
    import_notes(store, f"notes/{name}")
    vault = tmp_path / "vault"
    write_vault(store, vault, plots=False, root=tmp_path)
    written = vault_text(vault)
    sources = [fixtures_copy / name] if name != "vault" else sorted((fixtures_copy / name).rglob("*.md"))
    for source in sources:
        numbers, prose = human_content(source.read_text(encoding="utf-8"))
        missing_numbers = [n for n in numbers if n not in written]
        missing_prose = [p for p in prose if p not in written]
        assert not missing_numbers, f"{source.name}: numbers lost: {missing_numbers}"
        assert not missing_prose, f"{source.name}: text lost: {missing_prose}"


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_import_then_render_then_import_leaves_the_store_unchanged(name, fixtures_copy, tmp_path):
    store = open_store()
    import_notes(store, f"notes/{name}")
    imported = dump(store)
    vault = tmp_path / "vault"
    write_vault(store, vault, plots=False, root=tmp_path)
    import_notes(store, vault)
    assert dump(store) == imported
    import_notes(store, f"notes/{name}")  # and the original again: no duplicates, no changes
    assert dump(store) == imported


def test_the_whole_fixture_folder_imports_in_one_go_and_twice_is_once(fixtures_copy):
    store = open_store()
    first = import_notes(store, "notes")
    assert len(first.files) == len(list((fixtures_copy).rglob("*.md")))
    before = dump(store)
    second = import_notes(store, "notes")
    assert dump(store) == before
    assert second.runs_created == [] and len(second.runs_updated) == len(first.runs_created)


def test_a_chronological_log_becomes_experiments_with_lineage_variants_runs_and_statuses(fixtures_copy):
    store = open_store()
    report = import_notes(store, "notes/log_basic.md")
    experiments = {e["name"]: e for e in store.experiments()}
    assert set(experiments) == {"gated_tinyimg_002", "gated_tinyimg_003"}
    assert experiments["gated_tinyimg_003"]["previous"] == "gated_tinyimg_002"
    assert experiments["gated_tinyimg_003"]["variants"] == ["baseline", "gated_tinyimg_gated"]
    assert experiments["gated_tinyimg_003"]["baseline"] == "baseline"
    run = store.get_run("gated_tinyimg_003-gated_tinyimg_gated-imported-1")
    assert "imported" in run.tags and run.provenance["imported_from"] == "notes/log_basic.md"
    assert run.provenance["line"] == 33
    assert run.summary_values() == {"test/acc": 0.7189, "test/knn_acc": 0.6602, "test/loss": 1.1876,
                                    "test/silhouette": 0.0797}
    assert run.point_count == 0  # summary values only, no series
    assert (run.status, run.status_reason) == ("partially_invalid", "eval used the EMA weights for one variant only")
    assert store.get_run("gated_tinyimg_002-baseline-imported-1").status == "valid"
    notes = store.note_fields("experiment", "gated_tinyimg_003")
    assert notes["hypothesis"] == "- Warmup removes the early loss spike; gated variant pulls ahead after epoch 50"
    assert notes["difference"] == "- scheduler: step -> cosine (warmup 5)\n- epochs: 120 -> 200"
    assert "2026-03-02" not in notes["summary"]  # the datetime went to the runs, the bullets stayed
    assert any("empty template entry" in w for w in report.warnings)


def test_messy_headings_html_and_emoji_are_read(fixtures_copy):
    store = open_store()
    report = import_notes(store, "notes/log_messy.md")
    notes = store.note_fields("experiment", "gate_sweep_012")
    assert notes["hypothesis"].startswith("A gate initialised at 0.5")
    assert "## Side notes" in notes["difference"]  # an unknown section stays in the section above it
    assert notes["observations"] == "* gate05 ahead by ~1 point, seeds agree"
    assert "Seed 2 of gate05 is still running." in notes["results_notes"]
    assert "A stray paragraph between entries" in notes["status_notes"]
    runs = {r.run_id: r for r in store.list_runs(experiment="gate_sweep_012")}
    assert {(r.variant, r.seed) for r in runs.values()} == {("baseline", 0), ("baseline", 1), ("baseline", 2),
                                                           ("gate05", 0), ("gate05", 1), ("gate05", 2)}
    assert runs["gate_sweep_012-gate05-imported-3"].summary_values() == {"val/acc": "TBD", "val/loss": "TBD"}
    assert runs["gate_sweep_012-baseline-imported-1"].summary_values()["val/acc"] == 0.801
    assert {r.variant for r in store.list_runs(experiment="gate_sweep_011")} == {"baseline", "gated"}
    assert all(r.status == "invalid" for r in store.list_runs(experiment="gate_sweep_011"))
    assert any(kept.excerpt == "## Side notes" and kept.line == 28 for _, kept in report.kept)


def test_broken_tables_and_unknown_sections_never_abort_and_are_kept_with_line_numbers(fixtures_copy, tmp_path):
    store = open_store()
    report = import_notes(store, "notes/log_broken.md")
    assert any("line 17: malformed table" in w for w in report.warnings)
    assert any("empty results table" in w for w in report.warnings)
    notes = store.note_fields("experiment", "broken_table_001")
    assert "| 0.51 | 1.9 | 7 | extra cells |" in notes["results_notes"]  # kept verbatim
    assert {r.variant for r in store.list_runs(experiment="broken_table_001")} == {"ok"}
    assert store.get_run("broken_table_001-ok-imported-1").summary_values() == {"test/acc": 0.55, "test/loss": 1.7}
    assert "wide" in {e["name"]: e for e in store.experiments()}["broken_table_001"]["variants"]
    no_path = store.note_fields("experiment", "log_broken_001")
    assert "## not a heading: inside a code fence" in no_path["results_notes"]
    assert "Text under an unknown heading." in no_path["results_notes"]
    text = report.format()
    assert "notes/log_broken.md:17:" in text and "Kept verbatim:" in text


def test_master_log_rows_become_runs_with_every_cell_kept(fixtures_copy):
    store = open_store()
    report = import_notes(store, "notes/master_log.md")
    run = store.get_run("seqenc_H256L4_20260403_101500")
    assert run.experiment == "seqenc_H256L4" and run.variant == "H256 L4" and run.machine == "gpu-a"
    assert dict(run.provenance["cells"])["Aux losses"] == "None"
    assert dict(run.provenance["cells"])["Eff. rank"] == "**14 / 64** (22%)"
    assert run.summary_values()["SST-2"] == "84.1%" and run.summary_values()["steps_per_s"] == 3.4
    assert store.note_fields("run", run.run_id) == {"conclusion": "Best L4 so far."}
    evals = [r for r in store.list_runs() if r.is_evaluation]
    assert {r.evaluates for r in evals} == {"seqenc_H256L4_20260403_101500", "seqenc_H256L2_20260401_090000"}
    probe = next(r for r in evals if r.variant == "H256 L4")
    assert probe.experiment == "seqenc_H256L4" and probe.config == {"eval_type": "linear probe", "tasks": "SST-2, RTE"}
    assert {e["name"]: e["previous"] for e in store.experiments()} == {"seqenc_H256L2": None,
                                                                      "seqenc_H256L4": "seqenc_H256L2"}
    decisions = "".join(store.note_fields("project", "").values())
    assert "**Root cause:** L2 saturates its effective rank at 12/64." in decisions
    assert any("Delta" in kept.reason for _, kept in report.kept)


def test_study_versions_become_variants_with_config_ranges_and_current(fixtures_copy):
    store = open_store()
    report = import_notes(store, "notes/study.md")
    experiment = store.experiments()[0]
    assert experiment["name"] == "gate_lr" and experiment["variants"] == ["v1", "v2", "v3a"]
    v2 = store.get_run("gate_lr-v2-imported")
    assert v2.config == {"gate_lr_mult": 0.1, "gate_init": -0.5, "warmup_epochs": 5}
    assert v2.summary_values() == {"val/acc": "0.43-0.77", "val/loss": 0.88, "gate_mean": 0.55}
    assert "(was 1.0)" in store.note_fields("variant", "gate_lr/v2")["config_notes"]
    assert "current" in store.get_run("gate_lr-v3a-imported").tags
    assert "current" not in v2.tags
    assert report.rules == 2
    from labfolio.analysis import parse_metrics_table

    rules = parse_metrics_table(store.note_fields("experiment", "gate_lr")["rules"]).rules
    assert [(r.metric, r.good, r.bad) for r in rules] == [("grad_norm", "< 5", "> 50"), ("gate_mean", "0.3-0.7", "1.0")]


def test_a_messy_study_keeps_unreadable_rule_rows_and_undated_versions(fixtures_copy):
    store = open_store()
    report = import_notes(store, "notes/study_messy.md")
    name = store.experiments()[0]["name"]
    assert store.experiments()[0]["variants"] == ["v1", "v2"]
    assert store.get_run(f"{name}-v2-imported").config == {"dropout": 0.3}
    assert store.get_run(f"{name}-v1-imported").started_at is not None  # 'Date: 03.03.2026'
    assert any("weird" in w and "kept verbatim" in w for w in report.warnings)


def test_an_experiment_note_gives_variants_tags_and_dataview_fields(fixtures_copy):
    store = open_store()
    import_notes(store, "notes/vault")
    experiment = {e["name"]: e for e in store.experiments()}["mhc_vit_004"]
    assert experiment["variants"] == ["residual", "mhc4"] and set(experiment["tags"]) == {"vit", "mhc"}
    fields = store.note_fields("experiment", "mhc_vit_004")
    assert fields["dv.convergence"] == "faster by ~10%" and fields["dv.stability"] == "no spikes"
    assert "Also tried mhc2 informally" in fields["variants_notes"]
    assert "stream count default of 1" in fields["findings"]
    assert store.note_fields("variant", "mhc_vit_004/mhc4")["notes"].startswith("Uses 4 streams")
    assert "Overall, stream mixing matters more" in store.note_fields("project", "")["page:Index"]


def test_a_tracked_run_is_never_changed_by_an_import(fixtures_copy):
    import labfolio

    run = labfolio.init(experiment="seqenc_H256L4", variant="H256 L4", run_id="seqenc_H256L4_20260403_101500",
                        config={"lr": 1e-3})
    run.log({"loss": 1.0}, step=0)
    run.finish()
    store = open_store()
    report = import_notes(store, "notes/master_log.md")
    assert report.runs_skipped == ["seqenc_H256L4_20260403_101500"]
    tracked = store.get_run("seqenc_H256L4_20260403_101500")
    assert "imported" not in tracked.tags and tracked.config == {"lr": 1e-3}


def test_a_missing_path_is_a_clear_error():
    from labfolio.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        import_notes(open_store(), "no/such/notes")


def test_importing_a_vault_labfolio_wrote_from_tracked_runs_changes_nothing(study_store, tmp_path):
    vault = tmp_path / "vault"
    write_vault(study_store, vault, plots=False, root=tmp_path)
    before = dump(study_store)
    report = import_notes(study_store, vault)
    assert dump(study_store) == before
    assert report.runs_created == [] and all("written by labfolio" in shape for _, shape in report.files)


def test_undecodable_bytes_and_an_empty_file_do_not_abort_a_folder_import(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "latin1.md").write_bytes("# Experiment: caf\xe9\n\n## Hypothesis\nna\xefve\n".encode("latin-1"))
    (folder / "empty.md").write_bytes(b"")
    (folder / "log.md").write_text((FIXTURES / "log_basic.md").read_text(encoding="utf-8"), encoding="utf-8")
    store = open_store()
    report = import_notes(store, "odd")
    assert any("not valid UTF-8" in w for w in report.warnings)
    assert len(report.files) == 3 and len(report.runs_created) == 4
    assert "caf" in "".join(e["name"] for e in store.experiments())
