"""The team server's HTTP logging API, used by ``labfolio.store.http.HTTPStore``.

A POSTed batch is applied with the server store's own ``write_batch``, in one transaction, with
the journal-position check that makes a retried batch (a response lost when the server
restarted) a no-op instead of a duplicate.
"""

from __future__ import annotations

import json
from typing import Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from ..errors import RunNotFoundError
from ..store.http import API_PREFIX, _json_number, run_to_json
from ..store.migrate import HEAD_REVISION
from ..store.wire import BATCH_CONTENT_TYPE, BatchFormatError, decode_batch, decode_json_batch
from .auth import can_read, can_write

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["ingestion"])


@router.get("/health")
def health(request: Request):
    """Liveness and the server's schema revision (no token needed)."""
    return {"ok": True, "schema": HEAD_REVISION, "auth": request.app.state.settings.auth}


@router.post("/batches", dependencies=[Depends(can_write)],
             openapi_extra={"requestBody": {"required": True, "content": {
                 BATCH_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}},
                 "application/json": {"schema": {"type": "object"}}}}})
async def post_batch(request: Request):
    """Apply one batch (binary ``application/x-labfolio-batch`` or JSON) in one transaction."""
    limit = request.app.state.settings.max_batch_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return JSONResponse({"detail": f"batch of {declared} bytes is over the server's {limit}-byte limit; "
                                       "send smaller batches"}, status_code=413)
    body = await request.body()
    if len(body) > limit:
        return JSONResponse({"detail": f"batch over the server's {limit}-byte limit"}, status_code=413)
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    try:
        if content_type == BATCH_CONTENT_TYPE:
            batch = decode_batch(body)
        elif content_type in ("application/json", ""):
            try:
                header = json.loads(body or b"null")
            except ValueError as exc:
                raise BatchFormatError(f"body is not JSON: {exc}") from None
            batch = decode_json_batch(header)
        else:
            return JSONResponse({"detail": f"send {BATCH_CONTENT_TYPE} or application/json, not {content_type!r}"},
                                status_code=415)
    except BatchFormatError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    store = request.app.state.store
    from starlette.concurrency import run_in_threadpool

    result = await run_in_threadpool(store.write_batch, batch)
    return {"applied": result.applied, "points": result.points, "journal_pos": result.journal_pos}


@router.get("/runs", dependencies=[Depends(can_read)])
def list_runs(request: Request, experiment: Optional[str] = Query(None, description="Experiment name."),
              variant: Optional[str] = Query(None, description="Variant name."),
              state: Optional[str] = Query(None, description="Run state."),
              tag: Optional[str] = Query(None, description="Only runs with this tag."),
              project: Optional[str] = Query(None, description="Project name."),
              search: Optional[str] = Query(None, max_length=200, description="Substring of id, name, experiment or variant."),
              limit: int = Query(100, ge=1, le=10_000, description="How many runs, newest first."),
              offset: int = Query(0, ge=0, description="Runs to skip (with limit: paging).")):
    """Run records, newest first."""
    runs = request.app.state.store.list_runs(experiment=experiment, variant=variant, state=state, tag=tag,
                                             project=project, search=search, limit=limit, offset=offset)
    return JSONResponse({"runs": [run_to_json(r) for r in runs]})


@router.get("/runs/{run_id}", dependencies=[Depends(can_read)])
def get_run(request: Request, run_id: str,
            prefix: bool = Query(False, description="Accept a unique prefix of the run id (as the CLI does).")):
    """One run record: exactly ``run_id`` (what resume needs), or with ``prefix`` the run it uniquely starts."""
    store = request.app.state.store
    try:
        run = store.get_run(run_id)
    except RunNotFoundError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    if run.run_id != run_id and not prefix:  # the SQL store accepts a unique prefix; the SDK asks for exact ids
        return JSONResponse({"detail": f"no run {run_id!r}"}, status_code=404)
    return JSONResponse(run_to_json(run))


@router.get("/runs/{run_id}/alerts", dependencies=[Depends(can_read)])
def run_alerts(request: Request, run_id: str):
    """A run's alerts, in the order they were raised."""
    return {"alerts": [{**alert.__dict__, "value": _json_number(alert.value)}
                       for alert in request.app.state.store.alerts(run_id)]}


@router.get("/runs/{run_id}/artifacts", dependencies=[Depends(can_read)])
def run_artifacts(request: Request, run_id: str):
    """A run's artifact rows, oldest first; ``url`` is where a copied one's file is served."""
    from urllib.parse import quote

    out = []
    for index, item in enumerate(request.app.state.store.artifacts(run_id)):
        row = dict(item.__dict__)
        row["url"] = None if item.is_reference else f"/runs/{quote(run_id, safe='')}/artifacts/{index}"
        if not item.is_reference:
            row["path"] = None  # a path on the server's disk means nothing to a client
        out.append(row)
    return {"artifacts": out}


@router.get("/runs/{run_id}/history", dependencies=[Depends(can_read)])
def run_history(request: Request, run_id: str,
                key: Optional[list[str]] = Query(None, description="Only these metric keys (repeatable).")):
    """A run's full metric series, in step order: per key, the steps (int64), values and times
    (float64) as base64 of their little-endian bytes, so that every value, NaN included, comes
    back exactly. The charts' downsampled series are under /data/series."""
    from ..store.wire import encode_history

    try:
        history = request.app.state.store.history(run_id, key)
    except RunNotFoundError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    return {"run_id": run_id, "series": encode_history(history)}


@router.get("/experiments", dependencies=[Depends(can_read)])
def experiments(request: Request, project: Optional[str] = Query(None, description="Project name.")):
    """Experiments, oldest first, with their variants, baseline, previous experiment and tags."""
    return {"experiments": request.app.state.store.experiments(project)}


@router.get("/notes/{scope}", dependencies=[Depends(can_read)])
def note_fields(request: Request, scope: str,
                owner: Optional[str] = Query(None, description="Only this owner's fields (an experiment, "
                                                               "experiment/variant or run id).")):
    """The human note fields of one scope (project, experiment, variant or run), per owner:
    what ``labfolio notes`` merges into the vault it renders."""
    store = request.app.state.store
    fields = store.note_fields_for_scope(scope) if owner is None else {owner: store.note_fields(scope, owner)}
    return {"scope": scope, "fields": fields}


@router.get("/runs/{run_id}/journal-position", dependencies=[Depends(can_read)])
def journal_position(request: Request, run_id: str):
    """How far the server has drained a run's journal (null: no such run yet)."""
    return {"run_id": run_id, "journal_pos": request.app.state.store.run_journal_position(run_id)}


@router.get("/stale-runs", dependencies=[Depends(can_read)])
def stale_runs(request: Request, older_than_s: float = Query(900.0, ge=0, le=1e9,
                                                             description="Heartbeat older than this, in seconds.")):
    """Runs still marked running whose heartbeat stopped."""
    return {"runs": request.app.state.store.stale_running_runs(older_than_s)}
