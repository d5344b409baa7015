"""Proposed run status: derived from state and alerts, overridden by a human."""

from __future__ import annotations

import pytest

from labfolio.analysis import AnalysisInputError, Alert, RunStatus, propose_status


def alert(kind: str, severity: str, metric: str = "train/loss", step: int = 1200) -> Alert:
    return Alert(kind, metric, step, severity, f"{kind} evidence", 1.0)


def test_labels_are_the_notebook_strings():
    assert RunStatus.VALID.label() == "✅ Valid"
    assert RunStatus.PARTIALLY_INVALID.label("LR schedule mismatch") == (
        "⚠️ Partially invalid (LR schedule mismatch)")
    assert RunStatus.INVALID.label("anything") == "❌ Invalid (discard for comparison)"


@pytest.mark.parametrize(
    ("text", "status", "reason"),
    [
        ("✅ Valid", RunStatus.VALID, None),
        ("⚠️ Partially invalid (eval used the EMA weights for one variant only)", RunStatus.PARTIALLY_INVALID,
         "eval used the EMA weights for one variant only"),
        ("❌ Invalid (discard for comparison)", RunStatus.INVALID, None),
        ("partially_invalid", RunStatus.PARTIALLY_INVALID, None),
        ("Invalid: NaN loss at step 40", RunStatus.INVALID, "NaN loss at step 40"),
        ("⚠ Partially Invalid - killed early", RunStatus.PARTIALLY_INVALID, "killed early"),
    ],
)
def test_labels_as_people_write_them_are_read_back(text, status, reason):
    assert RunStatus.parse_label(text) == (status, reason)


def test_unreadable_label_says_what_to_write():
    with pytest.raises(AnalysisInputError, match="'✅ Valid'"):
        RunStatus.parse_label("looks fine to me")


def test_a_clean_finished_run_is_valid():
    proposal = propose_status("finished", [alert("plateau", "info", "val/acc")])
    assert (proposal.status, proposal.reason, proposal.label) == (RunStatus.VALID, None, "✅ Valid")


def test_crash_nan_and_divergence_make_a_run_invalid_with_the_reason():
    assert propose_status("crashed", []).summary == "❌ Invalid (discard for comparison): run crashed"
    nan = propose_status("finished", [alert("nan", "critical", step=812)])
    assert nan.status is RunStatus.INVALID and nan.reason == "train/loss is NaN/Inf at step 812"
    diverged = propose_status("finished", [alert("divergence", "critical"),
                                           alert("schedule_mismatch", "warning", "lr")])
    assert diverged.reason == "train/loss diverged at step 1200"
    assert [a.kind for a in diverged.evidence] == ["divergence"]


def test_schedule_mismatch_and_collapse_make_a_run_partially_invalid():
    proposal = propose_status("finished", [alert("schedule_mismatch", "warning", "lr", 0),
                                           alert("collapse", "warning", "test/acc", 12)])
    assert proposal.label == ("⚠️ Partially invalid (LR schedule mismatch on lr at step 0; "
                              "test/acc collapsed at step 12)")


def test_findings_about_the_model_leave_the_status_alone():
    findings = [alert(kind, severity) for kind, severity in [
        ("plateau", "info"), ("overfitting", "info"), ("grad_spike", "warning"), ("recovery", "info"),
        ("representation_collapse", "warning"), ("stream_collapse", "warning"), ("rule", "warning")]]
    assert propose_status("finished", findings).status is RunStatus.VALID


def test_a_killed_run_is_partially_invalid():
    assert propose_status("killed", []).label == "⚠️ Partially invalid (killed before finishing)"


def test_human_override_wins_over_everything():
    proposal = propose_status("crashed", [alert("divergence", "critical")], override="valid",
                              override_reason="crash was after the final eval")
    assert (proposal.status, proposal.overridden, proposal.reason) == (
        RunStatus.VALID, True, "crash was after the final eval")
    assert propose_status("finished", [], override=RunStatus.INVALID).status is RunStatus.INVALID
    with pytest.raises(AnalysisInputError, match="valid, partially_invalid, invalid"):
        propose_status("finished", [], override="great")


def test_long_reason_lists_are_cut_after_three():
    alerts = [alert("collapse", "warning", f"acc{i}", i) for i in range(5)]
    assert propose_status("finished", alerts).reason.endswith("; and 2 more")


def test_alert_round_trips_through_a_dict_even_with_nan():
    original = Alert("nan", "train/loss", 812, "critical", "NaN", float("nan"))
    data = original.to_dict()
    assert data["value"] == "NaN"
    restored = Alert.from_dict(data)
    assert (restored.kind, restored.step, restored.severity) == ("nan", 812, "critical")
    with pytest.raises(AnalysisInputError, match="severity"):
        Alert("nan", "x", 0, "fatal", "m")
