"""labfolio's web dashboard and team server (``labfolio ui``, ``labfolio server``).

Needs the ``ui`` extra (FastAPI, Jinja2, uvicorn, plotly, markdown-it-py, nh3); nothing here is
imported by the SDK, so training code never pays for it.
"""

from __future__ import annotations

__all__ = ["create_app", "WebSettings", "serve"]


def __getattr__(name):
    if name in ("create_app", "WebSettings"):
        from . import app

        return getattr(app, name)
    if name == "serve":
        from .serve import serve

        return serve
    raise AttributeError(name)
