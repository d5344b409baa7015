"""Regeneration skips notes whose inputs did not change, and never one whose inputs did.

Each input a note is rendered from is changed in turn; after the regeneration every note must be
byte-identical to a vault rendered from scratch, and the notes that input shows up in must have
been rewritten. A regeneration with no change renders no experiment or variant note at all.
"""

from __future__ import annotations

import json

import pytest

from labfolio.notebook import render, write_vault
from labfolio.notebook.fingerprint import FRAGMENTS_FILE
from labfolio.notebook.state import STATE_DIR
from labfolio.store import Batch

from .conftest import add_run, read_vault, T0

LOG = "Experiment Log.md"
MASTER = "Master Experiment Log.md"
NOTE_1 = "experiments/vit_001/experiment.md"
NOTE_2 = "experiments/vit_002/experiment.md"
MHC_1 = "experiments/vit_001/variants/mhc.md"
BASE_1 = "experiments/vit_001/variants/baseline.md"
BASE_2 = "experiments/vit_002/variants/baseline.md"


def _notes(vault) -> dict[str, bytes]:
    return {path: data for path, data in read_vault(vault).items() if not path.startswith(f"{STATE_DIR}/")}


def _cold(store, root, **kwargs) -> dict[str, bytes]:
    """The notes of a vault written from scratch (no state, no caches)."""
    fresh = root / f"cold-{len(list(root.glob('cold-*')))}"
    write_vault(store, fresh, root=root, **{"plots": False, **kwargs})
    return _notes(fresh)


@pytest.fixture
def vault(study_store, tmp_path, monkeypatch):
    monkeypatch.delenv("LABFOLIO_UI_BASE_URL", raising=False)
    path = tmp_path / "vault"
    write_vault(study_store, path, plots=False, root=tmp_path)
    return path


@pytest.fixture
def render_calls(monkeypatch):
    """How many experiment and variant notes were rendered (the real renderers still run)."""
    calls = {"experiment": 0, "variant": 0}
    real_experiment, real_variant = render.render_experiment_note, render.render_variant_note

    def experiment_note(ctx, exp):
        calls["experiment"] += 1
        return real_experiment(ctx, exp)

    def variant_note(ctx, exp, variant):
        calls["variant"] += 1
        return real_variant(ctx, exp, variant)

    monkeypatch.setattr(render, "render_experiment_note", experiment_note)
    monkeypatch.setattr(render, "render_variant_note", variant_note)
    return calls


def _event(store, run_id=None, **event):
    store.write_batch(Batch(run_id=run_id, events=[event]))


def _new_run(store, root):
    add_run(store, "vit_001_mhc_s3", experiment="vit_001", variant="mhc", seed=3,
            config={"model": {"name": "vit", "n_layer": 4, "d_model": 128}, "lr": 0.1, "epochs": 3,
                    "data": "cifar10", "streams": 4, "seed": 3}, start=T0 + 1300, acc=0.731)


def _new_summary(store, root):
    _event(store, "vit_001_mhc_s1", type="summary", values={"test/acc": 0.61})


def _new_status(store, root):
    _event(store, "vit_001_baseline_s0", type="status", status="invalid", reason="wrong split")


def _new_alert(store, root):
    _event(store, "vit_001_mhc_s1", type="alert", kind="nan", metric="train/loss", step=12, severity="critical",
           message="NaN loss at step 12", value=None, time=T0 + 1112)


def _new_hypothesis(store, root):
    _event(store, type="note", scope="experiment", owner="vit_001", field="hypothesis", value="Streams help.")


def _new_variant_note(store, root):
    _event(store, type="note", scope="variant", owner="vit_001/mhc", field="notes", value="Gate noise off.")


def _new_run_conclusion(store, root):
    _event(store, type="note", scope="run", owner="vit_001_baseline_s1", field="conclusion", value="Solid.")


def _new_rules(store, root):
    (root / ".labfolio").mkdir(exist_ok=True)
    (root / ".labfolio" / "rules.yaml").write_text('rules:\n  - {metric: test/acc, good: "> 0.72", bad: "< 0.6"}\n')


def _changed_previous_config(store, root):
    # vit_002's diff against vit_001 is computed from vit_001's configs.
    add_run(store, "vit_001_baseline_s9", experiment="vit_001", variant="baseline", seed=9,
            config={"model": {"name": "vit", "n_layer": 8, "d_model": 128}, "lr": 0.1, "epochs": 3,
                    "data": "cifar10", "streams": 1, "seed": 9}, start=T0 + 400, acc=0.70)


def _new_follower(store, root):
    # vit_002's note gains a "Next" link.
    _event(store, type="experiment", name="vit_003", previous="vit_002", variants=["baseline"], baseline="baseline")


def _evaluation_elsewhere(store, root):
    # An evaluation filed under vit_002 that evaluates a vit_001 run shows in vit_001's variant note.
    add_run(store, "vit_002_eval_of_001", experiment="vit_002", variant="baseline", seed=None,
            config={"eval_type": "knn"}, start=T0 + 92_000, steps=2, evaluates="vit_001_mhc_s0",
            extra_summary={"test/knn_acc": 0.64})


def _renamed_variant_baseline(store, root):
    _event(store, type="experiment", name="vit_001", variants=["baseline", "mhc"], baseline="mhc")


CHANGES = {
    "a new run": (_new_run, {MHC_1, NOTE_1, LOG, MASTER}),
    "a summary value": (_new_summary, {MHC_1, NOTE_1, LOG, MASTER}),
    "a run status": (_new_status, {BASE_1, NOTE_1, LOG, MASTER}),
    "an alert": (_new_alert, {MHC_1, MASTER}),
    "an experiment note field": (_new_hypothesis, {NOTE_1, LOG}),
    "a variant note field": (_new_variant_note, {MHC_1}),
    "a run note": (_new_run_conclusion, {MASTER}),
    "the project rules": (_new_rules, {NOTE_1, NOTE_2}),
    "the previous experiment's configs": (_changed_previous_config, {NOTE_1, BASE_1, LOG}),
    "a new follower in the lineage": (_new_follower, {NOTE_2, LOG, MASTER}),
    "an evaluation of this experiment's run filed elsewhere": (_evaluation_elsewhere, {MHC_1, BASE_2, MASTER}),
    "the baseline variant": (_renamed_variant_baseline, {NOTE_1, MHC_1, BASE_1, LOG, MASTER}),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_each_kind_of_input_change_rewrites_its_notes_identical_to_a_cold_render(study_store, vault, tmp_path,
                                                                                   change):
    apply, affected = CHANGES[change]
    apply(study_store, tmp_path)
    report = write_vault(study_store, vault, plots=False, root=tmp_path)
    assert affected <= set(report.written), f"{change}: {sorted(affected - set(report.written))} not rewritten"
    assert _notes(vault) == _cold(study_store, tmp_path)
    again = write_vault(study_store, vault, plots=False, root=tmp_path)
    assert again.written == [], f"{change}: a second regeneration still wrote {again.written}"


def test_a_changed_base_url_rewrites_the_links_identical_to_a_cold_render(study_store, vault, tmp_path):
    report = write_vault(study_store, vault, plots=False, root=tmp_path, base_url="https://ui.example/lab")
    assert {MHC_1, BASE_1, BASE_2, MASTER} <= set(report.written)
    assert _notes(vault) == _cold(study_store, tmp_path, base_url="https://ui.example/lab")


def test_a_no_change_regeneration_renders_no_experiment_or_variant_note_and_writes_nothing(
        study_store, vault, tmp_path, render_calls):
    before = read_vault(vault)
    report = write_vault(study_store, vault, plots=False, root=tmp_path)
    assert report.written == [] and report.files_written == 0
    assert render_calls == {"experiment": 0, "variant": 0}
    assert read_vault(vault) == before  # the state, results cache and fragments too


def test_one_new_run_renders_only_the_notes_of_its_experiment_and_its_followers(study_store, vault, tmp_path,
                                                                                render_calls):
    _new_run(study_store, tmp_path)
    write_vault(study_store, vault, plots=False, root=tmp_path)
    # vit_001 (one note, two variants) and vit_002, whose diff is computed from vit_001's runs.
    assert render_calls == {"experiment": 2, "variant": 3}


def test_a_hand_edit_in_a_generated_section_of_a_kept_note_is_undone(study_store, vault, tmp_path):
    path = vault / MHC_1
    text = path.read_text(encoding="utf-8")
    assert "0.7250" in text
    path.write_text(text.replace("0.7250", "0.9999", 1), encoding="utf-8")
    report = write_vault(study_store, vault, plots=False, root=tmp_path)
    assert MHC_1 in report.written
    assert _notes(vault) == _cold(study_store, tmp_path)


def test_a_generated_section_edited_then_synced_alone_is_still_undone(study_store, vault, tmp_path):
    from labfolio.notebook import sync_vault

    path = vault / MHC_1
    path.write_text(path.read_text(encoding="utf-8").replace("0.7250", "0.9999", 1), encoding="utf-8")
    sync_vault(study_store, vault)  # records the edited file's hash as seen
    report = write_vault(study_store, vault, plots=False, root=tmp_path)
    assert MHC_1 in report.written
    assert _notes(vault) == _cold(study_store, tmp_path)


def test_a_deleted_note_is_written_again(study_store, vault, tmp_path):
    (vault / NOTE_2).unlink()
    report = write_vault(study_store, vault, plots=False, root=tmp_path)
    assert report.written == [NOTE_2]
    assert _notes(vault) == _cold(study_store, tmp_path)


def test_without_sync_a_kept_note_is_still_checked_against_the_file(study_store, vault, tmp_path):
    path = vault / BASE_1
    path.write_text(path.read_text(encoding="utf-8") + "\nstray line\n", encoding="utf-8")
    report = write_vault(study_store, vault, plots=False, root=tmp_path, sync=False)
    assert report.written == [BASE_1]
    assert _notes(vault) == _cold(study_store, tmp_path)


def test_new_code_re_renders_every_note(study_store, vault, tmp_path, render_calls, monkeypatch):
    from labfolio.notebook import fingerprint

    monkeypatch.setattr(fingerprint, "code_fingerprint", lambda: "another labfolio")
    write_vault(study_store, vault, plots=False, root=tmp_path)
    assert render_calls == {"experiment": 2, "variant": 3}


def test_planned_plots_re_render_the_notes_that_embed_them(study_store, vault, tmp_path):
    report = write_vault(study_store, vault, plots=True, root=tmp_path)
    assert report.plots_drawn and {NOTE_1, NOTE_2} <= set(report.written)
    assert _notes(vault) == _cold(study_store, tmp_path, plots=True)


def test_a_lost_or_corrupt_fragment_cache_gives_the_same_vault(study_store, vault, tmp_path):
    before = _notes(vault)
    (vault / STATE_DIR / FRAGMENTS_FILE).write_text("{not json", encoding="utf-8")
    report = write_vault(study_store, vault, plots=False, root=tmp_path)
    assert report.written == [] and _notes(vault) == before
    assert json.loads((vault / STATE_DIR / FRAGMENTS_FILE).read_text(encoding="utf-8"))["version"] == 1


def test_fragments_of_an_unchanged_experiment_are_not_recomputed(study_store, vault, tmp_path, monkeypatch):
    from labfolio.notebook import experiment_log

    entries = []
    real = experiment_log.render_entry
    monkeypatch.setattr(experiment_log, "render_entry", lambda ctx, exp: entries.append(exp.name) or real(ctx, exp))
    _new_hypothesis(study_store, tmp_path)
    write_vault(study_store, vault, plots=False, root=tmp_path)
    assert entries == ["vit_001"]
