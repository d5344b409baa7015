"""The pages: runs, experiments, one experiment, one run, compare, sign-in; each with a JSON twin.

A twin is registered before its page so ``/runs/x.json`` is never read as a run called
``x.json``.
"""

from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from . import pages
from .auth import can_read
from .runs_query import RunsQuery, facets, query_runs

__all__ = ["router"]

router = APIRouter()


def _render(request: Request, template: str, data: dict, **extra) -> HTMLResponse:
    state = request.app.state
    return state.templates.TemplateResponse(request, template, {
        "data": data, "settings": state.settings, "poll_ms": int(state.settings.poll_s * 1000), **extra})


def _json(data: dict) -> JSONResponse:
    return JSONResponse(data)


# -- runs --------------------------------------------------------------------------------------

def _runs_data(request: Request, experiment, variant, state, status, tag, q, sort, f, page, per_page, cols) -> dict:
    columns = [c.strip() for c in (cols or "").split(",") if c.strip()]
    query = RunsQuery(experiment=experiment or None, variant=variant or None, state=state or None,
                      status=status or None, tag=tag or None, q=q or None, sort=sort or "-created_at",
                      filters=[x for x in f if x.strip()], page=page, per_page=per_page, columns=columns)
    return query_runs(request.app.state.store, query)


_RUNS_PARAMS = dict(
    experiment=Query(None, description="Only runs of this experiment."),
    variant=Query(None, description="Only runs of this variant."),
    state=Query(None, description="running, finished, failed, crashed or killed."),
    status=Query(None, description="Human status override: valid, partially_invalid, invalid or none."),
    tag=Query(None, description="Only runs with this tag."),
    q=Query(None, description="Search in run id, name, experiment, variant, machine and tags."),
    sort=Query("-created_at", description="A column, config.<key> or summary.<metric>; '-' sorts descending."),
    page=Query(1, ge=1, le=1_000_000, description="Page number, from 1."),
    per_page=Query(50, ge=1, le=500, description="Runs per page."),
    cols=Query(None, description="Extra columns, comma-separated: config.<key>, summary.<metric>."),
)


@router.get("/runs.json", dependencies=[Depends(can_read)], tags=["pages"])
def runs_json(request: Request, experiment: Optional[str] = _RUNS_PARAMS["experiment"],
              variant: Optional[str] = _RUNS_PARAMS["variant"], state: Optional[str] = _RUNS_PARAMS["state"],
              status: Optional[str] = _RUNS_PARAMS["status"], tag: Optional[str] = _RUNS_PARAMS["tag"],
              q: Optional[str] = _RUNS_PARAMS["q"], sort: str = _RUNS_PARAMS["sort"],
              f: list[str] = Query([], description="Filters like config.lr>=0.001 or summary.test/acc>0.7."),
              page: int = _RUNS_PARAMS["page"], per_page: int = _RUNS_PARAMS["per_page"],
              cols: Optional[str] = _RUNS_PARAMS["cols"]):
    """The runs table: filtered, sorted and paginated in the database."""
    return _json(_runs_data(request, experiment, variant, state, status, tag, q, sort, f, page, per_page, cols))


@router.get("/runs", response_class=HTMLResponse, dependencies=[Depends(can_read)], include_in_schema=False)
def runs_html(request: Request, experiment: Optional[str] = None, variant: Optional[str] = None,
              state: Optional[str] = None, status: Optional[str] = None, tag: Optional[str] = None,
              q: Optional[str] = None, sort: str = "-created_at", f: list[str] = Query([]),
              page: int = Query(1, ge=1), per_page: int = Query(50, ge=1, le=500), cols: Optional[str] = None):
    data = _runs_data(request, experiment, variant, state, status, tag, q, sort, f, page, per_page, cols)
    return _render(request, "runs.html", data, facets=facets(request.app.state.store))


# -- experiments -------------------------------------------------------------------------------

@router.get("/experiments.json", dependencies=[Depends(can_read)], tags=["pages"])
def experiments_json(request: Request):
    """Every experiment with its variants, lineage and run counts by state."""
    return _json(pages.experiments_page(request.app.state.store))


@router.get("/experiments", response_class=HTMLResponse, dependencies=[Depends(can_read)], include_in_schema=False)
def experiments_html(request: Request):
    return _render(request, "experiments.html", pages.experiments_page(request.app.state.store))


@router.get("/experiments/{name:path}.json", dependencies=[Depends(can_read)], tags=["pages"])
def experiment_json(request: Request, name: str):
    """One experiment: note, variant comparison, rules, alerts, proposed status and lineage."""
    state = request.app.state
    return _json(pages.experiment_page(state.store, name, state.settings.root))


@router.get("/experiments/{name:path}", response_class=HTMLResponse, dependencies=[Depends(can_read)],
            include_in_schema=False)
def experiment_html(request: Request, name: str):
    state = request.app.state
    return _render(request, "experiment.html", pages.experiment_page(state.store, name, state.settings.root),
                   human_fields=pages.HUMAN_FIELDS, statuses=pages.STATUSES)


# -- one run -----------------------------------------------------------------------------------

@router.get("/runs/{run_id}.json", dependencies=[Depends(can_read)], tags=["pages"])
def run_json(request: Request, run_id: str):
    """One run: config (with overrides), provenance (secrets hidden), summary, alerts, artifacts."""
    return _json(pages.run_page(request.app.state.store, run_id))


@router.get("/runs/{run_id}", response_class=HTMLResponse, dependencies=[Depends(can_read)], include_in_schema=False)
def run_html(request: Request, run_id: str):
    return _render(request, "run.html", pages.run_page(request.app.state.store, run_id),
                   run_fields=pages.RUN_FIELDS, statuses=pages.STATUSES)


# -- compare -----------------------------------------------------------------------------------

def _run_list(run: list[str], runs: Optional[str]) -> list[str]:
    ids = [r for r in run if r]
    ids += [r.strip() for r in (runs or "").split(",") if r.strip()]
    return ids[:200]


@router.get("/compare.json", dependencies=[Depends(can_read)], tags=["pages"])
def compare_json(request: Request, run: list[str] = Query([], description="A run id (repeat for more)."),
                 runs: Optional[str] = Query(None, description="Run ids, comma-separated.")):
    """Any runs side by side: the config keys where they differ, and the metrics they share."""
    return _json(pages.compare_page(request.app.state.store, _run_list(run, runs)))


@router.get("/compare", response_class=HTMLResponse, dependencies=[Depends(can_read)], include_in_schema=False)
def compare_html(request: Request, run: list[str] = Query([]), runs: Optional[str] = None):
    return _render(request, "compare.html", pages.compare_page(request.app.state.store, _run_list(run, runs)))


# -- sign in -----------------------------------------------------------------------------------

@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_html(request: Request, next: str = "/runs"):
    safe_next = next if next.startswith("/") and not next.startswith("//") else "/runs"
    return _render(request, "login.html", {"next": safe_next})
