"""The dashboard and team-server application: ``create_app(store, ...)`` builds the FastAPI app.

``labfolio ui`` serves it over a local store without auth; ``labfolio server`` turns on token auth
and the HTTP ingestion API. Pages are server-rendered (Jinja2) and every page has a JSON twin at
the same URL plus ``.json``. Charts are drawn by plotly.js, served from the installed ``plotly``
package (nothing is vendored or fetched from a CDN).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, LabfolioError, RunNotFoundError, StoreError, StoreUnavailableError

__all__ = ["create_app", "WebSettings", "TOKEN_COOKIE"]

TOKEN_COOKIE = "labfolio_token"
_HERE = Path(__file__).parent


def _require_web_extra():
    try:
        import fastapi  # noqa: F401
        import jinja2  # noqa: F401
        import markdown_it  # noqa: F401
        import nh3  # noqa: F401
    except ModuleNotFoundError as exc:
        raise ConfigError(f"the dashboard needs the `ui` extra ({exc.name} is missing): "
                          "pip install 'labfolio[ui]'") from None


@dataclass
class WebSettings:
    auth: bool = False  # require a token (writes always, reads unless public_read)
    public_read: bool = False
    ingest: bool = False  # serve the HTTP logging API (team server)
    root: Path | None = None  # project root: health rules from its pyproject.toml / rules.yaml
    poll_s: float = 2.0  # how often open pages ask whether a running run moved on
    max_batch_bytes: int = 512 << 20
    max_artifact_bytes: int = 1 << 30  # per uploaded artifact file; bigger ones are logged as references


def plotly_js_path() -> Path:
    try:
        import plotly
    except ModuleNotFoundError:
        raise ConfigError("the dashboard draws charts with plotly.js from the plotly package: "
                          "pip install 'labfolio[ui]'") from None
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ConfigError(f"plotly.min.js is missing from the installed plotly package ({path}); "
                          "reinstall it: pip install --force-reinstall plotly")
    return path


def create_app(store, settings: WebSettings | None = None):
    """The FastAPI app over an open SQL store."""
    _require_web_extra()
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
    from fastapi.staticfiles import StaticFiles
    from fastapi.templating import Jinja2Templates

    from ..store.sql import SQLStore
    from ..store.tokens import TokenChecker
    from . import routes_artifacts, routes_data, routes_edit, routes_ingest, routes_pages
    from .auth import Access, AuthRequired
    from .pages import ExperimentNotFound

    if not isinstance(store, SQLStore):
        raise ConfigError(f"the dashboard reads a SQL store (SQLite or PostgreSQL), not {store!r}: "
                          "pass --store with a folder, .db file or postgresql+psycopg:// URL")
    settings = settings or WebSettings()
    app = FastAPI(title="labfolio", version="1", description="labfolio dashboard, JSON twins and ingestion API",
                  docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.filters["fmt"] = _format_value
    templates.env.filters["when"] = _format_time
    templates.env.filters["urlq"] = _quote
    templates.env.globals["qs"] = _query_with
    app.state.store = store
    app.state.settings = settings
    app.state.templates = templates
    app.state.access = Access(settings, TokenChecker(store) if settings.auth else None)
    plotly_js = plotly_js_path()

    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly_script():
        return FileResponse(plotly_js, media_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/", include_in_schema=False)
    def home():
        return RedirectResponse("/runs", status_code=307)

    @app.exception_handler(AuthRequired)
    async def _auth_required(request: Request, exc: AuthRequired):
        wants_html = "text/html" in request.headers.get("accept", "") and not request.url.path.endswith(".json")
        if wants_html and request.method == "GET":
            from urllib.parse import quote

            return RedirectResponse(f"/login?next={quote(str(request.url.path), safe='/')}", status_code=303)
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code,
                            headers={"WWW-Authenticate": "Bearer"})

    # labfolio's own errors become pages (or JSON) with the status that fits; Starlette picks the
    # handler of the closest class in the exception's MRO, so the general ones come last harmlessly.
    for error_class, status in ((RunNotFoundError, 404), (ExperimentNotFound, 404),
                                (StoreUnavailableError, 503), (ConfigError, 400), (StoreError, 400),
                                (LabfolioError, 400)):
        async def _labfolio_error(request: Request, exc: LabfolioError, status: int = status):
            return _error(request, status, str(exc))

        app.add_exception_handler(error_class, _labfolio_error)

    def _error(request: Request, status: int, message: str):
        if request.url.path.endswith(".json") or request.url.path.startswith("/api/") \
                or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"detail": message}, status_code=status)
        return templates.TemplateResponse(request, "error.html", {"status": status, "message": message,
                                                                   "settings": settings}, status_code=status)

    app.include_router(routes_pages.router)
    app.include_router(routes_data.router)
    app.include_router(routes_edit.router)
    if settings.ingest:
        app.include_router(routes_ingest.router)
        app.include_router(routes_artifacts.router)
    return app


def _format_value(value) -> str:
    if value is None:
        return "--"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value != value:
            return "NaN"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}" if abs(value) < 1 else f"{value:.5g}"
        return f"{value:.3e}"
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, default=str)
    return str(value)


def _format_time(value) -> str:
    if value is None:
        return "--"
    from datetime import datetime

    return datetime.fromtimestamp(float(value)).strftime("%Y-%m-%d %H:%M:%S")


def _quote(value) -> str:
    from urllib.parse import quote

    return quote(str(value), safe="")


def _query_with(request, **changes) -> str:
    """The current query string with some parameters replaced (None removes one)."""
    from urllib.parse import urlencode

    items = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    items += [(k, v) for k, v in changes.items() if v is not None]
    return "?" + urlencode(items)
