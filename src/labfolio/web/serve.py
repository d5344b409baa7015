"""Running the app with uvicorn, for ``labfolio ui`` and ``labfolio server``."""

from __future__ import annotations

from ..errors import ConfigError

__all__ = ["serve"]


def serve(app, host: str, port: int, *, log_level: str = "warning") -> None:
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise ConfigError("the dashboard runs on uvicorn: pip install 'labfolio[ui]'") from None
    # One worker process: the store connection pool and the token cache live in this process.
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_keep_alive=30)
