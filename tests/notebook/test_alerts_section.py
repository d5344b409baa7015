"""Every alert that fired in a variant's runs is in its note, with its evidence; none fired says so."""

from __future__ import annotations

from labfolio.notebook import write_vault
from labfolio.notebook.variant_note import MAX_ALERTS_SHOWN
from labfolio.store import Batch, open_store

from .conftest import T0, add_run


def _alerts_region(text: str) -> str:
    return text.split("<!-- labfolio:begin alerts -->")[1].split("<!-- labfolio:end alerts -->")[0]


def test_each_alert_of_a_variant_appears_in_its_note_with_step_check_and_evidence(tmp_path):
    store = open_store(tmp_path / "lf")
    for variant in ("base", "cand"):
        add_run(store, f"r_{variant}", experiment="e", variant=variant, seed=0,
                config={"lr": 0.1 if variant == "base" else 0.2}, start=T0)
    store.write_batch(Batch(run_id="r_cand", events=[
        {"type": "alert", "kind": "rule", "metric": "diag/stream_similarity", "step": 900, "severity": "warning",
         "message": "diag/stream_similarity = 0.985 (last) is bad (> 0.4) at step 900", "value": 0.985,
         "time": T0 + 900}]))
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    cand = _alerts_region((tmp_path / "vault/experiments/e/variants/cand.md").read_text(encoding="utf-8"))
    assert ("| `r_cand` | 900 | ⚠️ warning | rule `diag/stream_similarity` | "
            "diag/stream_similarity = 0.985 (last) is bad (> 0.4) at step 900 |") in cand
    base = _alerts_region((tmp_path / "vault/experiments/e/variants/base.md").read_text(encoding="utf-8"))
    assert "No alerts: no rule or detector fired in this run." in base


def test_a_note_lists_the_first_alerts_and_counts_the_rest(tmp_path):
    store = open_store(tmp_path / "lf")
    add_run(store, "r", experiment="e", variant="only", seed=0, config={}, start=T0)
    extra = 3
    store.write_batch(Batch(run_id="r", events=[
        {"type": "alert", "kind": "spike", "metric": "grad_norm", "step": step, "severity": "warning",
         "message": f"grad_norm spike at step {step}", "value": 9.0, "time": T0 + step}
        for step in range(MAX_ALERTS_SHOWN + extra)]))
    write_vault(store, tmp_path / "vault", plots=False, root=tmp_path)
    region = _alerts_region((tmp_path / "vault/experiments/e/variants/only.md").read_text(encoding="utf-8"))
    assert region.count("grad_norm spike at step") == MAX_ALERTS_SHOWN
    assert f"… and {extra} more: `labfolio check <run>`" in region
