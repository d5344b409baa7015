"""Where a project's store, journals, artifacts and notebook live.

Resolution order for the store: an explicit ``store=`` argument, then ``LABFOLIO_STORE`` (a URL),
then ``LABFOLIO_SERVER`` (a team server's http:// URL; its token in ``LABFOLIO_TOKEN``), then
``LABFOLIO_DIR`` (a folder), then ``.labfolio/`` at the project root (the git root, else the
current folder). A folder means the embedded SQLite store ``<folder>/labfolio.db``. Recipe
checkpoints go to the store's home too, unless ``LABFOLIO_CHECKPOINT_DIR`` names a shared folder.

Journals and artifacts are always local files, even when the store is a PostgreSQL server: the
journal is what makes logging crash-safe and independent of the network.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

__all__ = ["StoreLocation", "find_project_root", "resolve_store", "fallback_journal_dir", "cache_dir"]

SQLITE_FILENAME = "labfolio.db"
CHECKPOINT_DIR_ENV = "LABFOLIO_CHECKPOINT_DIR"
_URL_SCHEMES = ("sqlite", "postgresql", "postgres", "http", "https")


@dataclass(frozen=True)
class StoreLocation:
    url: str  # SQLAlchemy URL of the store
    home: Path  # local folder for journals and artifacts

    @property
    def journal_dir(self) -> Path:
        return self.home / "journal"

    @property
    def artifact_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def checkpoint_dir(self) -> Path:
        """Where resumable recipes keep one checkpoint per run (``<run id>.pt``): ``$LABFOLIO_CHECKPOINT_DIR``
        (a folder every machine of a cluster sees, for runs resumed on another node), else the store's home."""
        shared = os.environ.get(CHECKPOINT_DIR_ENV)
        return Path(shared).expanduser() if shared else self.home / "checkpoints"

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @property
    def sqlite_database(self) -> str:
        """The database file of a SQLite URL ('' for another store; ':memory:' for no file)."""
        return self.url.split("///", 1)[-1] if self.is_sqlite and "///" in self.url else ""

    @property
    def is_http(self) -> bool:
        """A team server (``labfolio server``) rather than a database."""
        return self.url.startswith(("http://", "https://"))

    def describe(self) -> str:
        """The URL with any password hidden, for messages."""
        return redact_url(self.url)


def find_project_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` holding ``.git`` or ``.labfolio``, else ``start``."""
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists() or (folder / ".labfolio").is_dir():
            return folder
    return here


def redact_url(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else f"{scheme}://{user}@{host}"


def _normalise_url(url: str) -> str:
    # psycopg 3 is the driver we ship in the `postgres` extra; plain postgresql:// would make
    # SQLAlchemy look for psycopg2, which users rarely have.
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def _sqlite_url(folder: Path) -> str:
    return f"sqlite:///{folder / SQLITE_FILENAME}"


def resolve_store(store: str | os.PathLike | None = None, *, home: str | os.PathLike | None = None,
                  cwd: str | os.PathLike | None = None) -> StoreLocation:
    """Decide where the store and the local files live. See the module docstring for the order."""
    env_store = os.environ.get("LABFOLIO_STORE") or None
    env_dir = os.environ.get("LABFOLIO_DIR") or None
    default_home = Path(home or env_dir or find_project_root(cwd) / ".labfolio").expanduser()
    target = store if store is not None else env_store
    if target is None and os.environ.get("LABFOLIO_SERVER"):
        target = os.environ["LABFOLIO_SERVER"].rstrip("/")
    if target is None:
        return StoreLocation(_sqlite_url(default_home.resolve()), default_home.resolve())
    target = str(target)
    if "://" in target:
        scheme = target.split("://", 1)[0].split("+", 1)[0]
        if scheme not in _URL_SCHEMES:
            raise ConfigError(
                f"unsupported store URL scheme {scheme!r} in {redact_url(target)!r}: use a folder "
                "path, sqlite:///path/to/labfolio.db, postgresql+psycopg://user@host/db or a team "
                "server's http://host:port"
            )
        url = _normalise_url(target)
        if url.startswith("sqlite:///") and home is None and env_dir is None:
            db_path = Path(url[len("sqlite:///"):])
            return StoreLocation(url, db_path.parent.resolve())
        return StoreLocation(url, default_home.resolve())
    folder = Path(target).expanduser()
    if folder.suffix == ".db":
        return StoreLocation(f"sqlite:///{folder.resolve()}", folder.parent.resolve())
    return StoreLocation(_sqlite_url(folder.resolve()), folder.resolve())


def _user_cache() -> Path:
    """$XDG_CACHE_HOME/labfolio, else ~/.cache/labfolio."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")) / "labfolio"


def cache_dir(*parts: str) -> Path:
    """labfolio's cache folder (made if missing): $LABFOLIO_CACHE_DIR, else $XDG_CACHE_HOME/labfolio."""
    base = Path(os.environ["LABFOLIO_CACHE_DIR"]).expanduser() if os.environ.get("LABFOLIO_CACHE_DIR") else _user_cache()
    folder = base.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fallback_journal_dir() -> Path:
    """Where journals go when the store's own folder cannot be written (e.g. read-only)."""
    candidate = _user_cache() / "journal"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        return candidate
    except OSError:
        return Path(tempfile.gettempdir()) / "labfolio-journal"
