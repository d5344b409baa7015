"""A store that lives behind a team server (``labfolio server``), reached over HTTP.

It offers what the SDK and ``labfolio sync`` need: ``write_batch`` (POSTed to the server, which
applies it to its SQL store in one transaction, after uploading the files of copied artifacts),
the journal position and record of a run (run-id uniqueness, resume, exactly-once draining) and
the stale-run sweep; and what ``labfolio runs``, ``show``, ``compare``, ``diff``, ``check``, ``export`` and
``notes`` read: run records, alerts, artifacts (and their files), experiments, full metric histories
and the human note fields. Batching, retry with backoff
and spooling to the local journal come from the drainer, which treats this store like any other:
a failed POST raises ``StoreUnavailableError``, the drainer warns once and keeps the points in the
journal, and ``labfolio sync`` uploads whatever is left later.

Only the standard library is used, so a training machine needs no extra to log to a server.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import socket
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, urlsplit

from ..artifacts import blob_path, contained_file, is_sha256, is_suffix

from ..errors import ConfigError, RunNotFoundError, StoreError, StoreUnavailableError
from ..settings import StoreLocation, cache_dir
from .batch import Batch, BatchResult
from .records import AlertRecord, ArtifactRecord, MetricHistory, RunRecord, SummaryEntry
from .wire import BATCH_CONTENT_TYPE, decode_history, encode_batch

__all__ = ["HTTPStore", "run_to_json", "run_from_json", "API_PREFIX", "NotOnServerError"]

API_PREFIX = "/api/v1"
_TIMEOUT_S = float(os.environ.get("LABFOLIO_HTTP_TIMEOUT", 30))


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'nan', 'inf': JSON has no spelling for them
    return value


def run_to_json(run: RunRecord) -> dict:
    """A run record as JSON-safe data (the inverse of ``run_from_json``)."""
    out = {name: getattr(run, name) for name in RunRecord.__dataclass_fields__ if name != "summary"}
    out["summary"] = {key: {"last": _json_number(e.last), "last_step": e.last_step, "min": _json_number(e.min),
                            "max": _json_number(e.max), "count": e.count, "nonfinite": e.nonfinite,
                            "override": e.override}
                      for key, e in run.summary.items()}
    return out


def _number_back(value):
    return float(value) if isinstance(value, str) and value in ("nan", "inf", "-inf") else value


def run_from_json(data: dict) -> RunRecord:
    summary = {key: SummaryEntry(key=key, last=_number_back(e.get("last")), last_step=e.get("last_step"),
                                 min=_number_back(e.get("min")), max=_number_back(e.get("max")),
                                 count=e.get("count", 0), nonfinite=e.get("nonfinite", 0),
                                 override=e.get("override"))
               for key, e in (data.get("summary") or {}).items()}
    fields = {name: data.get(name) for name in RunRecord.__dataclass_fields__ if name != "summary"}
    fields["tags"] = fields.get("tags") or []
    fields["config"] = fields.get("config") or {}
    fields["provenance"] = fields.get("provenance") or {}
    fields["config_history"] = fields.get("config_history") or []
    fields["point_count"] = fields.get("point_count") or 0
    return RunRecord(**fields, summary=summary)


class NotOnServerError(StoreError, AttributeError):
    """A store method the team server does not offer over HTTP (an AttributeError too, so that
    ``hasattr(store, ...)`` checks keep working)."""


class HTTPStore:
    """The store of a labfolio team server at ``location.url`` (http:// or https://)."""

    def __init__(self, location: StoreLocation, token: str | None = None, *, timeout: float = _TIMEOUT_S,
                 check: bool = True):
        self.location = location
        parts = urlsplit(location.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"LABFOLIO_SERVER={location.url!r} is not an http:// or https:// URL, "
                              "e.g. http://tracker:8765")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self.token = token if token is not None else (os.environ.get("LABFOLIO_TOKEN") or None)
        self.timeout = timeout
        self._local = threading.local()  # http.client connections are not thread-safe: one per thread
        self._all_connections: list[http.client.HTTPConnection] = []
        self._connections_lock = threading.Lock()
        self.server_info: dict = {}
        self._uploaded: set[str] = set()  # contents the server is known to hold (or to refuse)
        if check:
            self.server_info = self._request("GET", f"{API_PREFIX}/health", auth=False)

    def __repr__(self) -> str:
        return f"HTTPStore({self.location.describe()!r})"

    # -- transport -----------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
            with self._connections_lock:
                self._all_connections.append(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Close every thread's connection (the drainer's and the caller's)."""
        with self._connections_lock:
            connections, self._all_connections = self._all_connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def _send(self, method: str, path: str, body=None, headers: dict | None = None, *, auth: bool = True):
        """(status, payload bytes) of one request; transport failures raise StoreUnavailableError."""
        headers = {"Accept": "application/json", **(headers or {})}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        where = self.location.describe()
        for attempt in (0, 1):
            conn = self._connection()
            if hasattr(body, "seek"):
                body.seek(0)  # a file body is sent again from its start on the retry
            try:
                conn.request(method, self._base + path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                # A kept-alive connection the server closed (e.g. it restarted): one fresh try.
                self._drop_connection()
                if attempt:
                    raise StoreUnavailableError(f"the labfolio server at {where} dropped the connection: {exc}") from exc
            except (OSError, socket.timeout, http.client.HTTPException) as exc:
                self._drop_connection()
                raise StoreUnavailableError(f"cannot reach the labfolio server at {where}: {exc}") from exc
        if response.getheader("Connection", "").lower() == "close":
            self._drop_connection()
        return response.status, payload

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                 *, auth: bool = True, not_found: str | None = None):
        status, payload = self._send(method, path, body, {"Content-Type": content_type} if content_type else None,
                                     auth=auth)
        return self._answer(method, path, status, payload, not_found)

    def _request_bytes(self, method: str, path: str) -> bytes:
        """A request whose answer is a file, not JSON; errors are read as ``_request`` reads them."""
        status, payload = self._send(method, path)
        if status >= 400:
            self._answer(method, path, status, payload)
        return payload

    def _answer(self, method: str, path: str, status: int, payload: bytes, not_found: str | None = None):
        where = self.location.describe()
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            data = None
        detail = data.get("detail") if isinstance(data, dict) else None
        if status == 404 and not_found is not None:
            raise RunNotFoundError(not_found)
        if status in (401, 403):
            raise StoreError(f"the labfolio server at {where} refused the token ({detail or status}): set "
                             "LABFOLIO_TOKEN to a token made on the server with `labfolio token create`")
        if status >= 500 or status in (408, 429):
            raise StoreUnavailableError(f"the labfolio server at {where} answered {status}: {detail or payload[:200]!r}")
        if status >= 400:
            raise StoreError(f"the labfolio server at {where} rejected {method} {path} ({status}): {detail}")
        return data

    # -- artifact files ------------------------------------------------------------------------
    def _upload_artifacts(self, events: list[dict]) -> None:
        """Give the server the files of the batch's copied artifacts before the batch names them.

        A missing local file or a file the server refuses (too big, changed since it was hashed)
        is warned about once and its row still sent: the run page then lists it without a link,
        and the rest of the run is never held back. An unreachable server raises, and the drainer
        keeps the batch in the journal for the next try.
        """
        for ev in events:
            if ev.get("type") != "artifact" or ev.get("is_reference") or not ev.get("sha256"):
                continue
            sha, relative = str(ev["sha256"]), str(ev.get("path") or "")
            if sha in self._uploaded:
                continue
            suffix = Path(relative).suffix
            if not (is_sha256(sha) and is_suffix(suffix) and relative == blob_path(sha, suffix)):
                self._artifact_warning(ev, "its path is not a content address in the artifact folder")
                continue
            query = f"?suffix={quote(suffix, safe='')}"
            status, payload = self._send("HEAD", f"{API_PREFIX}/artifacts/{sha}{query}")
            if status == 200:
                self._uploaded.add(sha)
                continue
            if status != 404:
                self._answer("HEAD", f"{API_PREFIX}/artifacts/{sha}", status, payload)
            local = contained_file(self.location.artifact_dir, relative)
            if local is None:
                self._artifact_warning(ev, f"{self.location.artifact_dir / relative} is not on this machine")
                continue
            with open(local, "rb") as fh:
                status, payload = self._send("PUT", f"{API_PREFIX}/artifacts/{sha}{query}", fh, {
                    "Content-Type": "application/octet-stream", "Content-Length": str(local.stat().st_size)})
            if status in (400, 413):
                detail = (json.loads(payload or b"{}") or {}).get("detail") if payload else status
                self._artifact_warning(ev, f"the server refused it: {detail}")
                continue
            self._answer("PUT", f"{API_PREFIX}/artifacts/{sha}", status, payload)
            self._uploaded.add(sha)

    def _artifact_warning(self, ev: dict, why: str) -> None:
        self._uploaded.add(str(ev.get("sha256")))  # once per content, not once per retry
        warnings.warn(f"labfolio: artifact {ev.get('name')!r} is recorded on {self.location.describe()} without "
                      f"its file ({why}); the run page lists it without a link", RuntimeWarning, stacklevel=2)

    # -- what the SDK and sync need ------------------------------------------------------------
    def write_batch(self, batch: Batch) -> BatchResult:
        self._upload_artifacts(batch.events)
        data = self._request("POST", f"{API_PREFIX}/batches", encode_batch(batch), BATCH_CONTENT_TYPE)
        return BatchResult(bool(data["applied"]), int(data["points"]), data.get("journal_pos"))

    def run_journal_position(self, run_id: str) -> int | None:
        data = self._request("GET", f"{API_PREFIX}/runs/{quote(run_id, safe='')}/journal-position")
        return data.get("journal_pos")

    def get_run(self, run_id: str) -> RunRecord:
        """The run ``run_id``, or else the one run whose id starts with it (as the SQL store does)."""
        path = f"{API_PREFIX}/runs/{quote(run_id, safe='')}"
        try:
            data = self._request("GET", path, not_found=run_id)
        except RunNotFoundError:
            data = self._request("GET", path + "?prefix=true", not_found=(
                f"no run {run_id!r} on the labfolio server at {self.location.describe()} (list runs with "
                "`labfolio runs`)"))
        return run_from_json(data)

    def list_runs(self, *, limit: int | None = None, **filters) -> list[RunRecord]:
        query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in filters.items()
                         if v is not None and k != "with_summary")
        if limit is not None:
            query += f"&limit={int(limit)}"
        data = self._request("GET", f"{API_PREFIX}/runs?{query.lstrip('&')}")
        return [run_from_json(r) for r in data["runs"]]

    def alerts(self, run_id: str) -> list[AlertRecord]:
        data = self._request("GET", f"{API_PREFIX}/runs/{quote(run_id, safe='')}/alerts")
        return [AlertRecord(a["kind"], a.get("metric"), a.get("step"), a["severity"], a["message"],
                            _number_back(a.get("value")), a["created_at"]) for a in data["alerts"]]

    def artifacts(self, run_id: str) -> list[ArtifactRecord]:
        """Artifact rows; a copied artifact's ``path`` is the URL its file is served at."""
        data = self._request("GET", f"{API_PREFIX}/runs/{quote(run_id, safe='')}/artifacts")
        server = self.location.url.rstrip("/")
        return [ArtifactRecord(a["name"], a["kind"], a.get("sha256"), a.get("size"),
                               a["path"] if a["is_reference"] else server + a["url"], bool(a["is_reference"]),
                               a.get("step"), a["created_at"], a.get("meta") or {}) for a in data["artifacts"]]

    def history(self, run_id: str, keys: Iterable[str] | None = None) -> dict[str, MetricHistory]:
        """A run's full metric series, exactly as the server's store holds them."""
        query = "&".join(f"key={quote(str(key), safe='')}" for key in keys) if keys is not None else ""
        data = self._request("GET", f"{API_PREFIX}/runs/{quote(run_id, safe='')}/history" + (f"?{query}" if query else ""),
                             not_found=f"no run {run_id!r} on the labfolio server at {self.location.describe()}; "
                                       "list them with: labfolio runs")
        if keys is not None and not query:
            return {}
        return decode_history(data["series"])

    def experiments(self, project: str | None = None) -> list[dict]:
        query = f"?project={quote(project, safe='')}" if project is not None else ""
        return list(self._request("GET", f"{API_PREFIX}/experiments{query}")["experiments"])

    def note_fields_for_scope(self, scope: str) -> dict[str, dict[str, str]]:
        """Every owner's human note fields in one scope, as the server's store holds them."""
        data = self._request("GET", f"{API_PREFIX}/notes/{quote(scope, safe='')}")
        return {owner: dict(fields) for owner, fields in data["fields"].items()}

    def note_fields(self, scope: str, owner: str) -> dict[str, str]:
        data = self._request("GET", f"{API_PREFIX}/notes/{quote(scope, safe='')}?owner={quote(owner, safe='')}")
        return dict(data["fields"].get(owner, {}))

    def artifact_file(self, artifact: ArtifactRecord) -> Path:
        """A local copy of a copied artifact's file (its ``path`` is the server URL), downloaded once
        into the cache folder under its content hash and checked against it."""
        server = self.location.url.rstrip("/")
        if artifact.is_reference or not artifact.path.startswith(server):
            return Path(artifact.path)
        suffix = Path(artifact.name).suffix if is_suffix(Path(artifact.name).suffix) else ""
        folder = cache_dir("server-artifacts")
        target = folder / f"{artifact.sha256}{suffix}" if is_sha256(artifact.sha256 or "") else None
        if target is not None and target.is_file():
            return target
        payload = self._request_bytes("GET", artifact.path[len(server):])
        if target is None:
            target = folder / f"{hashlib.sha256(payload).hexdigest()}{suffix}"
        elif hashlib.sha256(payload).hexdigest() != artifact.sha256:
            raise StoreError(f"artifact {artifact.name!r} from {self.location.describe()} does not match its "
                             "sha256: the download was damaged or the server's copy changed; try again")
        partial = target.with_name(target.name + f".{os.getpid()}.part")
        partial.write_bytes(payload)
        partial.replace(target)
        return target

    def __getattr__(self, name: str):
        # The rest of the store interface (frames, bulk reads, compaction) is not served over
        # HTTP: say so, and what to use, rather than fail with a bare AttributeError.
        if name.startswith("_"):
            raise AttributeError(name)
        raise NotOnServerError(
            f"`{name}` is not available through the labfolio server at {self.location.describe()}: run this on "
            "the server against its database (--store with its postgresql+psycopg:// URL or folder, or unset "
            f"LABFOLIO_SERVER there), or open the dashboard at {self.location.url.rstrip('/')}/runs")

    def stale_running_runs(self, older_than_s: float) -> list[str]:
        data = self._request("GET", f"{API_PREFIX}/stale-runs?older_than_s={float(older_than_s)}")
        return list(data["runs"])
