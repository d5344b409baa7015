"""Human edits survive regeneration and flow back to the store; regeneration is idempotent."""

from __future__ import annotations

import os

import pytest

from labfolio.notebook import sync_vault, write_vault

from .conftest import add_run, read_vault, T0

LOG = "Experiment Log.md"
MASTER = "Master Experiment Log.md"
NOTE = "experiments/vit_001/experiment.md"
VARIANT = "experiments/vit_001/variants/mhc.md"


@pytest.fixture
def vault(study_store, tmp_path, monkeypatch):
    monkeypatch.delenv("LABFOLIO_UI_BASE_URL", raising=False)
    path = tmp_path / "vault"
    write_vault(study_store, path, plots=False, root=tmp_path)
    return path


def _regen(store, vault, **kwargs):
    return write_vault(store, vault, plots=False, root=vault.parent, **kwargs)


def _replace(path, old, new, count=1):
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def test_regenerating_an_unchanged_store_gives_identical_bytes_and_writes_nothing(study_store, vault):
    before = read_vault(vault)
    mtimes = {p: os.stat(vault / p).st_mtime_ns for p in before}
    report = _regen(study_store, vault)
    assert report.written == [] and report.plots_drawn == []
    assert read_vault(vault) == before
    assert {p: os.stat(vault / p).st_mtime_ns for p in before} == mtimes


def test_two_fresh_vaults_of_the_same_store_are_byte_identical(study_store, vault, tmp_path):
    other = tmp_path / "other"
    write_vault(study_store, other, plots=False, root=tmp_path)
    first = {k: v for k, v in read_vault(vault).items() if not k.startswith(".labfolio/")}
    second = {k: v for k, v in read_vault(other).items() if not k.startswith(".labfolio/")}
    assert first == second


def test_only_notes_whose_content_changed_are_rewritten(study_store, vault):
    add_run(study_store, "vit_002_baseline_s3", experiment="vit_002", variant="baseline", seed=3,
            config={"lr": 0.05}, start=T0 + 95_000, acc=0.72)
    report = _regen(study_store, vault)
    assert "experiments/vit_002/variants/baseline.md" in report.written
    assert MASTER in report.written and LOG in report.written
    assert not any(path.startswith("experiments/vit_001/") for path in report.written)


def test_an_edited_hypothesis_survives_regeneration_and_reaches_the_store(study_store, vault):
    _replace(vault / NOTE, "## Hypothesis\n\nmHC with 4 streams beats the residual at equal steps\n",
             "## Hypothesis\n\nmHC beats the residual, *but only* with warmup.\n\nA second paragraph.\n")
    report = _regen(study_store, vault)
    expected = "mHC beats the residual, *but only* with warmup.\n\nA second paragraph."
    assert study_store.note_fields("experiment", "vit_001")["hypothesis"] == expected
    assert report.sync.fields_updated == [("experiment", "vit_001", "hypothesis")]
    assert expected in (vault / NOTE).read_text(encoding="utf-8")
    assert expected in (vault / LOG).read_text(encoding="utf-8")  # the log shows the same field
    assert _regen(study_store, vault).written == []


def test_human_text_under_a_generated_block_and_unknown_sections_are_kept_in_place(study_store, vault):
    _replace(vault / LOG, "<!-- labfolio:end diff -->\n", "<!-- labfolio:end diff -->\n\nOnly the lr was meant "
             "to change; epochs crept in.\n\n## Side notes\n\nThe GPU was shared that week.\n")
    _regen(study_store, vault)
    fields = study_store.note_fields("experiment", "vit_002")
    assert fields["difference"] == ("Only the lr was meant to change; epochs crept in.\n\n## Side notes\n\n"
                                    "The GPU was shared that week.")
    text = (vault / LOG).read_text(encoding="utf-8")
    assert text.index("epochs crept in") < text.index("## Side notes") < text.index("## Results:", text.index(
        "epochs crept in"))


def test_an_edit_inside_a_generated_block_is_replaced_by_the_store_value(study_store, vault):
    _replace(vault / VARIANT, "| `vit_001_mhc_s0` | 0 |", "| `vit_001_mhc_s0` | 99 |")
    _regen(study_store, vault)
    assert "| `vit_001_mhc_s0` | 0 |" in (vault / VARIANT).read_text(encoding="utf-8")


def test_a_status_line_under_run_status_overrides_every_run_of_the_experiment(study_store, vault):
    _replace(vault / LOG, "<!-- labfolio:end status -->\n", "<!-- labfolio:end status -->\n\n- ❌ Invalid (eval on "
             "the training split)\n")
    report = sync_vault(study_store, vault)
    runs = study_store.list_runs(experiment="vit_002")  # the newest entry comes first in the log
    assert len(runs) == 4 and all(r.status == "invalid" and r.status_reason == "eval on the training split" for r in runs)
    assert len(report.statuses) == len(runs)
    _regen(study_store, vault)
    assert "❌ Invalid (discard for comparison): eval on the training split" in (vault / LOG).read_text("utf-8")


def test_master_log_status_and_conclusion_cells_can_be_edited_in_place(study_store, vault):
    text = (vault / MASTER).read_text(encoding="utf-8")
    row = next(line for line in text.split("\n") if line.startswith("| 2026-01-01 | `vit_001_baseline_s1`"))
    cells = row.split(" | ")
    cells[-2] = "❌ Invalid (wrong data split)"
    cells[-1] = "Do not compare. |"
    (vault / MASTER).write_text(text.replace(row, " | ".join(cells)), encoding="utf-8")
    _regen(study_store, vault)
    run = study_store.get_run("vit_001_baseline_s1")
    assert (run.status, run.status_reason) == ("invalid", "wrong data split")
    assert study_store.note_fields("run", "vit_001_baseline_s1") == {"conclusion": "Do not compare."}
    assert "| ❌ Invalid (discard for comparison) | Do not compare. |" in (vault / MASTER).read_text("utf-8")


def test_dataview_fields_are_stored_machine_readable(study_store, vault):
    _replace(vault / NOTE, "## Observations & Conclusions\n", "## Observations & Conclusions\n\n"
             "- convergence:: Yes, after warmup\n- **issues**:: kNN acc lags\n")
    sync_vault(study_store, vault)
    fields = study_store.note_fields("experiment", "vit_001")
    assert fields["findings"] == "- convergence:: Yes, after warmup\n- **issues**:: kNN acc lags"
    assert fields["dv.convergence"] == "Yes, after warmup" and fields["dv.issues"] == "kNN acc lags"


def test_decision_records_in_the_master_log_are_kept_and_stored(study_store, vault):
    record = ("## Switch to 4 streams (2026-01-03)\n\n**Decision:** every new run uses 4 streams.\n\n"
              "**Root cause:** 1 stream was a hidden default.")
    with open(vault / MASTER, "a", encoding="utf-8") as handle:
        handle.write("\n" + record + "\n")
    _regen(study_store, vault)
    assert study_store.note_fields("project", "")["decisions"] == record
    assert record in (vault / MASTER).read_text(encoding="utf-8")


def test_a_new_log_entry_for_an_unknown_experiment_creates_it_with_its_hypothesis(study_store, vault):
    entry = ("# --- Experiment Path ---\n\n[Experiment path](./experiments/vit_003)\n\n## Hypothesis:\n\n"
             "Warmup fixes the spike.\n\n# -------------------------\n\n")
    text = (vault / LOG).read_text(encoding="utf-8")
    first = text.index("# --- Experiment Path ---")
    (vault / LOG).write_text(text[:first] + entry + text[first:], encoding="utf-8")
    report = _regen(study_store, vault)
    assert report.sync.experiments_created == ["vit_003"]
    assert study_store.note_fields("experiment", "vit_003")["hypothesis"] == "Warmup fixes the spike."
    assert (vault / "experiments/vit_003/experiment.md").is_file()


def test_a_newer_store_value_is_not_overwritten_by_an_unedited_note(study_store, vault):
    from labfolio.store import Batch

    study_store.write_batch(Batch(events=[{"type": "note", "scope": "experiment", "owner": "vit_001",
                                           "field": "conclusion", "value": "Written in the dashboard."}]))
    _regen(study_store, vault)
    assert study_store.note_fields("experiment", "vit_001")["conclusion"] == "Written in the dashboard."
    assert "Written in the dashboard." in (vault / LOG).read_text(encoding="utf-8")


def test_the_same_field_edited_in_two_notes_keeps_one_and_warns(study_store, vault):
    _replace(vault / LOG, "mHC with 4 streams beats the residual at equal steps", "From the log.")
    _replace(vault / NOTE, "mHC with 4 streams beats the residual at equal steps", "From the note.")
    report = sync_vault(study_store, vault)
    assert any("edited in both" in w for w in report.warnings)
    assert study_store.note_fields("experiment", "vit_001")["hypothesis"] in ("From the log.", "From the note.")


def test_a_hand_written_note_in_the_way_is_moved_aside_not_overwritten(study_store, tmp_path):
    vault = tmp_path / "vault"
    vault.mkdir()
    (vault / LOG).write_text("# My own log\n\nprecious text\n", encoding="utf-8")
    report = write_vault(study_store, vault, plots=False, root=tmp_path)
    assert report.backups == ["Experiment Log (before labfolio).md"]
    assert (vault / "Experiment Log (before labfolio).md").read_text(encoding="utf-8") == "# My own log\n\nprecious text\n"
    assert "labfolio:begin" in (vault / LOG).read_text(encoding="utf-8")


def test_sync_of_an_unedited_vault_writes_nothing_to_the_store(study_store, vault):
    report = sync_vault(study_store, vault)
    assert not report.changed and report.files_read == []


def test_sync_without_state_takes_the_notes_text_when_it_differs_from_the_store(study_store, vault):
    (vault / ".labfolio" / "state.json").unlink()
    _replace(vault / VARIANT, "## Notes\n", "## Notes\n\nStreams were 4 for real this time.\n")
    report = sync_vault(study_store, vault)
    assert report.fields_updated == [("variant", "vit_001/mhc", "notes")]
    assert study_store.note_fields("variant", "vit_001/mhc")["notes"] == "Streams were 4 for real this time."


def test_frontmatter_keys_a_human_adds_survive_regeneration(study_store, vault):
    _replace(vault / NOTE, "type: experiment\n", "type: experiment\naliases: [ViT baseline study]\ncssclasses: wide\n")
    _regen(study_store, vault)
    text = (vault / NOTE).read_text(encoding="utf-8")
    assert 'aliases: ["ViT baseline study"]' in text and "cssclasses: wide" in text
    assert _regen(study_store, vault).written == []


def test_run_links_point_at_the_dashboard_when_one_is_configured(study_store, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.labfolio.ui]\nbase_url = "http://lab:8000/"\n', encoding="utf-8")
    (tmp_path / ".git").mkdir()
    vault = tmp_path / "vault"
    write_vault(study_store, vault, plots=False, root=tmp_path)
    master = (vault / MASTER).read_text(encoding="utf-8")
    assert "[run](http://lab:8000/runs/vit_001_mhc_s0)" in master
    monkeypatch.setenv("LABFOLIO_UI_BASE_URL", "https://ui.example")
    write_vault(study_store, vault, plots=False, root=tmp_path)
    assert "[run](https://ui.example/runs/vit_001_mhc_s0)" in (vault / MASTER).read_text(encoding="utf-8")
