"""``labfolio ui``, ``labfolio server`` and ``labfolio token``: the dashboard and the team server.

Mounted by the main CLI with ``cli_web.register(app)``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Optional

import typer

from .cli_common import friendly_errors

__all__ = ["register", "token_app", "ui_command", "server_command"]

_STORE_HELP = "Store folder, .db file or database URL (default: .labfolio/ at the project root)."
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

token_app = typer.Typer(name="token", help="Create, list and revoke the team server's API tokens.",
                        no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _open_sql(store: Optional[str]):
    from .errors import ConfigError
    from .settings import resolve_store
    from .store import open_store

    location = resolve_store(store) if store else _local_location()
    if location.is_http:
        raise ConfigError(f"{location.describe()} is a team server; the dashboard and tokens need the database "
                          "itself: pass --store with a folder, .db file or postgresql+psycopg:// URL")
    return open_store(location)


def _local_location():
    """The store without LABFOLIO_SERVER: a server process must never point at itself."""
    import os

    from .settings import resolve_store

    saved = os.environ.pop("LABFOLIO_SERVER", None)
    try:
        return resolve_store(None)
    finally:
        if saved is not None:
            os.environ["LABFOLIO_SERVER"] = saved


def _root() -> Path:
    from .settings import find_project_root

    return find_project_root()


@friendly_errors
def ui_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8765, "--port", "-p", help="Port to listen on."),
    store: Optional[str] = typer.Option(None, "--store", "-s", envvar="LABFOLIO_STORE", help=_STORE_HELP),
    auth: bool = typer.Option(False, "--auth/--no-auth", help="Require a token (as `labfolio server` does)."),
    public_read: bool = typer.Option(False, "--public-read", help="With --auth: let anyone read, tokens only for edits."),
):
    """Open the web dashboard: runs, experiments, run pages, compare; live curves; edits of notes and statuses."""
    from .web.app import WebSettings, create_app
    from .web.serve import serve

    opened = _open_sql(store)
    if host not in _LOOPBACK and not auth:
        typer.echo(f"warning: serving {host} without --auth: anyone who can reach it can read and edit", err=True)
    app = create_app(opened, WebSettings(auth=auth, public_read=public_read, root=_root()))
    typer.echo(f"labfolio dashboard on http://{host}:{port}/runs (store {opened.location.describe()})")
    serve(app, host, port)


@friendly_errors
def server_command(
    store: Optional[str] = typer.Option(None, "--store", "-s", envvar="LABFOLIO_STORE",
                                        help="The team's store, usually postgresql+psycopg://user@host/db."),
    host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on (all interfaces by default)."),
    port: int = typer.Option(8765, "--port", "-p", help="Port to listen on."),
    public_read: bool = typer.Option(False, "--public-read", help="Let anyone read pages and data; writes still need a token."),
    max_artifact_mb: int = typer.Option(1024, "--max-artifact-mb", min=1,
                                        help="Largest artifact file a client may upload, in MiB."),
):
    """Run the team server: the dashboard plus the HTTP logging API, with token auth."""
    from .store.tokens import list_tokens
    from .web.app import WebSettings, create_app
    from .web.serve import serve

    opened = _open_sql(store)
    if not list_tokens(opened):
        typer.echo("warning: no tokens yet, so nothing can log here: make one with "
                   f"`labfolio token create --name NAME --store {opened.location.describe()}`", err=True)
    app = create_app(opened, WebSettings(auth=True, public_read=public_read, ingest=True, root=_root(),
                                         max_artifact_bytes=max_artifact_mb << 20))
    typer.echo(f"labfolio server on http://{host}:{port} (store {opened.location.describe()}); clients set "
               f"LABFOLIO_SERVER=http://<this host>:{port} and LABFOLIO_TOKEN")
    serve(app, host, port)


@token_app.command("create")
@friendly_errors
def token_create(
    name: str = typer.Option(..., "--name", "-n", help="Who or what uses the token, e.g. gpu-a or alice."),
    store: Optional[str] = typer.Option(None, "--store", "-s", envvar="LABFOLIO_STORE", help=_STORE_HELP),
):
    """Make a token; it is printed once and only its hash is kept."""
    from .store.tokens import create_token

    token, info = create_token(_open_sql(store), name)
    typer.echo(token)
    typer.echo(f"token {info.id} ({info.name}) created; it is shown only now. Clients set LABFOLIO_TOKEN={info.prefix}…",
               err=True)


@token_app.command("list")
@friendly_errors
def token_list(
    store: Optional[str] = typer.Option(None, "--store", "-s", envvar="LABFOLIO_STORE", help=_STORE_HELP),
    all_tokens: bool = typer.Option(False, "--all", help="Include revoked tokens."),
):
    """List tokens (id, name, prefix, created, last used); never the secrets."""
    from .store.tokens import list_tokens

    def when(value):
        return "--" if value is None else datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M")

    tokens = list_tokens(_open_sql(store), include_revoked=all_tokens)
    if not tokens:
        typer.echo("no tokens; make one with `labfolio token create --name NAME`")
        return
    typer.echo(f"{'id':>4}  {'name':<20} {'prefix':<12} {'created':<16} {'last used':<16} state")
    for t in tokens:
        typer.echo(f"{t.id:>4}  {t.name:<20} {t.prefix + '…':<12} {when(t.created_at):<16} "
                   f"{when(t.last_used_at):<16} {'active' if t.active else 'revoked ' + when(t.revoked_at)}")


@token_app.command("revoke")
@friendly_errors
def token_revoke(
    which: str = typer.Argument(..., help="The token's id, name or shown prefix (see `labfolio token list`)."),
    store: Optional[str] = typer.Option(None, "--store", "-s", envvar="LABFOLIO_STORE", help=_STORE_HELP),
):
    """Revoke a token: clients using it are refused within seconds."""
    from .store.tokens import revoke_token

    for info in revoke_token(_open_sql(store), which):
        typer.echo(f"revoked token {info.id} ({info.name})")


def register(app: typer.Typer) -> None:
    app.command("ui")(ui_command)
    app.command("server")(server_command)
    app.add_typer(token_app, name="token")
