"""Golden files: every note type, written from a store with known content, byte for byte.

Regenerate after an intended change with ``LABFOLIO_UPDATE_GOLDEN=1 pytest tests/notebook/test_golden.py``
and review the diff like code.
"""

from __future__ import annotations

import os
import shutil

import pytest

from labfolio.notebook import import_notes, write_vault
from labfolio.store import open_store

from .conftest import FIXTURES, GOLDEN, build_study_store

UPDATE = os.environ.get("LABFOLIO_UPDATE_GOLDEN") == "1"

STUDY_NOTES = {
    "master_log.md": "Master Experiment Log.md",
    "experiment_log.md": "Experiment Log.md",
    "experiment_vit_001.md": "experiments/vit_001/experiment.md",
    "experiment_vit_002.md": "experiments/vit_002/experiment.md",
    "variant_vit_001_mhc.md": "experiments/vit_001/variants/mhc.md",
    "variant_vit_002_baseline.md": "experiments/vit_002/variants/baseline.md",
}
IMPORTED_NOTES = {
    ("log_basic.md", "log_basic_experiment_log.md"): "Experiment Log.md",
    ("log_basic.md", "log_basic_variant.md"): "experiments/gated_tinyimg_003/variants/gated_tinyimg_gated.md",
    ("master_log.md", "master_log_master_log.md"): "Master Experiment Log.md",
    ("study.md", "study_experiment.md"): "experiments/gate_lr/experiment.md",
    ("study.md", "study_variant_v2.md"): "experiments/gate_lr/variants/v2.md",
}


@pytest.fixture(scope="module")
def study_vault(tmp_path_factory):
    """The study store's vault, written once for every golden comparison of this module."""
    folder = tmp_path_factory.mktemp("golden-study")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("LABFOLIO_UI_BASE_URL", raising=False)
        store = open_store(folder / "lf")
        build_study_store(store)
        write_vault(store, folder / "vault", plots=True, root=folder)
    return folder / "vault"


@pytest.fixture(scope="module")
def imported_vaults(tmp_path_factory):
    """fixture name -> the vault written after importing it (each into a fresh store)."""
    folder = tmp_path_factory.mktemp("golden-imported")
    shutil.copytree(FIXTURES, folder / "notes")
    vaults = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("LABFOLIO_UI_BASE_URL", raising=False)
        patch.chdir(folder)  # so imports record 'notes/<file>' on every machine
        for fixture in sorted({fixture for fixture, _ in IMPORTED_NOTES}):
            store = open_store(folder / f"lf-{fixture}")
            import_notes(store, f"notes/{fixture}")
            write_vault(store, folder / f"vault-{fixture}", plots=False, root=folder)
            vaults[fixture] = folder / f"vault-{fixture}"
    return vaults


def _check(golden_name: str, text: str) -> None:
    path = GOLDEN / golden_name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"missing golden file {path}; create it with LABFOLIO_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{golden_name} differs from its golden file"


@pytest.mark.parametrize("golden_name", sorted(STUDY_NOTES))
def test_note_written_from_a_known_store_matches_its_golden_file(golden_name, study_vault):
    _check(f"study/{golden_name}", (study_vault / STUDY_NOTES[golden_name]).read_text(encoding="utf-8"))


@pytest.mark.parametrize("fixture,golden_name", sorted(IMPORTED_NOTES))
def test_note_written_after_an_import_matches_its_golden_file(fixture, golden_name, imported_vaults):
    text = (imported_vaults[fixture] / IMPORTED_NOTES[(fixture, golden_name)]).read_text(encoding="utf-8")
    _check(f"imported/{golden_name}", text)
