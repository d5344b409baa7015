"""What the pages' scripts fetch: downsampled series, seed bands, live state, artifact files.

Live updates are polling: a page asks ``/data/live`` every couple of seconds for the state and
point count of the runs it shows, and refetches a chart only when its run moved on. That works
through any proxy and costs one indexed query per poll.
"""

from __future__ import annotations

import mimetypes
from typing import Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from sqlalchemy import select

from ..errors import ConfigError
from ..store import schema as t
from .auth import AuthRequired, can_read
from .downsample import DEFAULT_POINTS
from .pages import artifact_file
from .series import series_payload, variant_bands

__all__ = ["router"]

router = APIRouter()


@router.get("/data/series", dependencies=[Depends(can_read)], tags=["data"])
def series(request: Request, run: list[str] = Query(..., description="Run id (repeat for an overlay)."),
           key: str = Query(..., min_length=1, max_length=256, description="Metric key."),
           x: str = Query("step", pattern="^(step|time|epoch)$", description="x axis: step, time or epoch."),
           xmin: Optional[float] = Query(None, description="Left edge of the zoomed view."),
           xmax: Optional[float] = Query(None, description="Right edge of the zoomed view."),
           points: int = Query(DEFAULT_POINTS, ge=10, le=20_000, description="Points per series at most."),
           encoding: str = Query("list", pattern="^(list|b64)$",
                                 description="list: JSON numbers (null for NaN); b64: base64 float64 arrays.")):
    """One metric of one or many runs, min/max-downsampled to ``points`` (re-bucketed inside a zoom)."""
    if len(run) > 500:
        raise ConfigError("at most 500 runs per overlay")
    return JSONResponse(series_payload(request.app.state.store, run, key, x=x, x_min=xmin, x_max=xmax,
                                       points=points, encoding=encoding))


@router.get("/data/bands", dependencies=[Depends(can_read)], tags=["data"])
def bands(request: Request, experiment: str = Query(..., description="Experiment name."),
          key: str = Query(..., min_length=1, max_length=256, description="Metric key.")):
    """Mean line and mean ± std band over seeds, per variant of an experiment."""
    store = request.app.state.store
    runs = store.list_runs(experiment=experiment, with_summary=False)
    # Variants in the experiment's own order (baseline first as it was declared), runs oldest first.
    order = next((row["variants"] for row in store.experiments() if row["name"] == experiment), [])
    groups: dict[str, list[str]] = {v: [] for v in order}
    for r in reversed(runs):
        if not r.is_evaluation:
            groups.setdefault(r.variant, []).append(r.run_id)
    groups = {v: ids for v, ids in groups.items() if ids}
    return JSONResponse(variant_bands(store, groups, key))


@router.get("/data/live", dependencies=[Depends(can_read)], tags=["data"])
def live(request: Request, run: list[str] = Query(..., description="Run id (repeat for more).")):
    """State, last step and point count of runs: what a page polls to know when to redraw."""
    store = request.app.state.store
    with store.engine.connect() as conn:
        rows = conn.execute(select(t.runs.c.run_id, t.runs.c.state, t.runs.c.last_step, t.runs.c.point_count,
                                   t.runs.c.heartbeat_at, t.runs.c.status)
                            .where(t.runs.c.run_id.in_(run[:500]))).all()
    return JSONResponse({"runs": {r.run_id: {"state": r.state, "last_step": r.last_step, "point_count": r.point_count,
                                             "heartbeat_at": r.heartbeat_at, "status": r.status} for r in rows}})


@router.get("/runs/{run_id}/artifacts/{index}", dependencies=[Depends(can_read)], tags=["data"])
def artifact(request: Request, run_id: str, index: int):
    """An artifact file of a run (copied artifacts only, and only from inside the artifact folder)."""
    found = artifact_file(request.app.state.store, run_id, index)
    if found is None:
        return JSONResponse({"detail": f"run {run_id} has no servable artifact {index} (references and files "
                                       "outside the artifact folder are never served)"}, status_code=404)
    path, name, kind = found
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if kind in ("git_diff", "source", "packages") or media.startswith("text/"):
        media = "text/plain; charset=utf-8"  # shown as text, never run as HTML
    if media == "image/svg+xml":
        media = "text/plain; charset=utf-8"  # SVG can carry script: never serve it as an image
    return FileResponse(path, media_type=media, headers={"X-Content-Type-Options": "nosniff",
                                                          "Content-Security-Policy": "sandbox"})


@router.post("/login", include_in_schema=False)
async def login(request: Request):
    from urllib.parse import parse_qs

    from .app import TOKEN_COOKIE

    # A plain urlencoded form: parsed here rather than pulling in a multipart library for one field.
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    next = (form.get("next") or ["/runs"])[0]
    access = request.app.state.access
    safe_next = next if next.startswith("/") and not next.startswith("//") else "/runs"
    if access.checker is not None and access.checker.check(token) is None:
        raise AuthRequired("the token was not accepted (unknown or revoked)", status_code=403)
    response = RedirectResponse(safe_next, status_code=303)
    response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", max_age=30 * 24 * 3600)
    return response
