"""Who may read and write through the web app.

Without auth (``labfolio ui`` on a local store) everything is open. With auth (``labfolio
server``) every write needs a token in the ``Authorization: Bearer`` header, and reads need one
too unless the server was started with ``--public-read``. A browser that signed in at ``/login``
carries its token in an HttpOnly cookie, which is accepted for reads only: a write must present
the header, which another site cannot make a browser send (so no cross-site request forgery).
"""

from __future__ import annotations

from fastapi import Request

__all__ = ["Access", "AuthRequired", "can_read", "can_write", "presented_token"]


class AuthRequired(Exception):
    def __init__(self, message: str, status_code: int = 401):
        super().__init__(message)
        self.status_code = status_code


def presented_token(request: Request, *, allow_cookie: bool) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    token = request.headers.get("x-labfolio-token")
    if token:
        return token.strip()
    if allow_cookie:
        from .app import TOKEN_COOKIE

        return request.cookies.get(TOKEN_COOKIE)
    return None


class Access:
    def __init__(self, settings, checker):
        self.settings = settings
        self.checker = checker

    def check(self, request: Request, *, write: bool) -> None:
        if not self.settings.auth:
            return
        if not write and self.settings.public_read:
            return
        token = presented_token(request, allow_cookie=not write)
        if token is None:
            what = "writes" if write else "reads"
            raise AuthRequired(f"this labfolio server needs a token for {what}: send 'Authorization: Bearer "
                               "<token>' (make one on the server with `labfolio token create --name NAME`)")
        if self.checker.check(token) is None:
            raise AuthRequired("the token was not accepted (unknown or revoked); make a new one with "
                               "`labfolio token create --name NAME`", status_code=403)


def can_read(request: Request) -> None:
    """FastAPI dependency for every read route."""
    request.app.state.access.check(request, write=False)


def can_write(request: Request) -> None:
    """FastAPI dependency for every write route (edits, ingestion)."""
    request.app.state.access.check(request, write=True)
