"""Edits from the pages: hypothesis, conclusion, next steps and status overrides.

They go through ``store.write_batch`` as the same ``note`` and ``status`` events that ``labfolio
notes`` reads back from the vault, into the same fields, so the next ``labfolio notes`` writes
what was typed here into the Markdown (and an edit in the Markdown shows here).
"""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..errors import ConfigError
from ..store.batch import Batch
from .auth import can_write
from .pages import HUMAN_FIELDS, RUN_FIELDS, STATUSES, ExperimentNotFound

__all__ = ["router", "note_events"]

router = APIRouter()


class FieldEdit(BaseModel):
    field: str = Field(..., description="hypothesis, conclusion or next_steps (runs: conclusion).")
    value: str = Field("", max_length=200_000, description="Markdown text.")


class StatusEdit(BaseModel):
    status: Optional[str] = Field(None, description="valid, partially_invalid, invalid, or null to clear.")
    reason: Optional[str] = Field(None, max_length=2000, description="Why (shown in the notebook).")


def note_events(store, scope: str, owner: str, field: str, value: str) -> list[dict]:
    """The note event for one field plus the Dataview fields (``key:: value`` lines) derived from
    all of the owner's notes, exactly as the vault sync derives them."""
    from ..notebook.sections import dataview_fields, normalize_human

    value = normalize_human(value)
    events = [{"type": "note", "scope": scope, "owner": owner, "field": field, "value": value}]
    current = dict(store.note_fields(scope, owner))
    merged = {**current, field: value}
    wanted: dict[str, str] = {}
    for name, text in sorted(merged.items()):
        if not name.startswith("dv."):
            for dv_key, dv_value in dataview_fields(text).items():
                wanted[f"dv.{dv_key}"] = dv_value
    for name in sorted(set(wanted) | {n for n in current if n.startswith("dv.")}):
        if current.get(name, "") != wanted.get(name, ""):
            events.append({"type": "note", "scope": scope, "owner": owner, "field": name,
                           "value": wanted.get(name, "")})
    return events


def _experiment_runs(store, name: str) -> list[str]:
    if name not in {row["name"] for row in store.experiments()}:
        raise ExperimentNotFound(f"no experiment {name!r} in the store; see /experiments")
    return [r.run_id for r in store.list_runs(experiment=name, with_summary=False)]


def _check_status(edit: StatusEdit) -> None:
    if edit.status not in (None, *STATUSES):
        raise ConfigError(f"status must be one of {', '.join(STATUSES)} or null, not {edit.status!r}")


@router.post("/experiments/{name:path}/fields", dependencies=[Depends(can_write)], tags=["edits"])
def edit_experiment_field(request: Request, name: str, edit: FieldEdit):
    """Set an experiment's hypothesis, conclusion or next steps (Markdown)."""
    store = request.app.state.store
    if edit.field not in HUMAN_FIELDS:
        raise ConfigError(f"field must be one of {', '.join(HUMAN_FIELDS)}, not {edit.field!r}")
    _experiment_runs(store, name)
    store.write_batch(Batch(events=note_events(store, "experiment", name, edit.field, edit.value)))
    return JSONResponse({"experiment": name, "field": edit.field,
                         "value": store.note_fields("experiment", name).get(edit.field, "")})


@router.post("/experiments/{name:path}/status", dependencies=[Depends(can_write)], tags=["edits"])
def edit_experiment_status(request: Request, name: str, edit: StatusEdit):
    """Override the status of every run of an experiment (null clears the override)."""
    _check_status(edit)
    store = request.app.state.store
    run_ids = _experiment_runs(store, name)
    from ..notebook.sync import status_events_for

    if run_ids:
        store.write_batch(Batch(events=status_events_for(run_ids, edit.status, edit.reason or None)))
    return JSONResponse({"experiment": name, "status": edit.status, "reason": edit.reason, "runs": len(run_ids)})


@router.post("/runs/{run_id}/status", dependencies=[Depends(can_write)], tags=["edits"])
def edit_run_status(request: Request, run_id: str, edit: StatusEdit):
    """Override one run's status (null clears the override)."""
    _check_status(edit)
    store = request.app.state.store
    run = store.get_run(run_id)
    from ..notebook.sync import status_events_for

    store.write_batch(Batch(events=status_events_for([run.run_id], edit.status, edit.reason or None)))
    return JSONResponse({"run_id": run.run_id, "status": edit.status, "reason": edit.reason})


@router.post("/runs/{run_id}/fields", dependencies=[Depends(can_write)], tags=["edits"])
def edit_run_field(request: Request, run_id: str, edit: FieldEdit):
    """Set a run's conclusion (the master log's Conclusion cell)."""
    store = request.app.state.store
    if edit.field not in RUN_FIELDS:
        raise ConfigError(f"field must be one of {', '.join(RUN_FIELDS)}, not {edit.field!r}")
    run = store.get_run(run_id)
    store.write_batch(Batch(events=note_events(store, "run", run.run_id, edit.field, edit.value)))
    return JSONResponse({"run_id": run.run_id, "field": edit.field,
                         "value": store.note_fields("run", run.run_id).get(edit.field, "")})
