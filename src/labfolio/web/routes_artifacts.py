"""The team server's artifact upload: the files behind the artifact rows that clients log.

A client (``HTTPStore``) asks ``HEAD /api/v1/artifacts/<sha256>`` and, if the server lacks the
content, ``PUT``s the bytes before it sends the batch whose artifact event names them, so a row
never reaches the server ahead of its file. The server computes where the bytes go from the hash
and the suffix alone (both validated), so no request can name a path, and keeps them only if they
hash to the address they were sent under. Content already stored is not written again: uploads
are idempotent and safe to retry.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path as PathParam, Query, Request
from fastapi.responses import JSONResponse, Response

from ..artifacts import BlobMismatchError, BlobTooLargeError, IncomingBlob, blob_path, contained_file, is_suffix
from ..store.http import API_PREFIX
from .auth import can_read, can_write

__all__ = ["router"]

router = APIRouter(prefix=API_PREFIX, tags=["ingestion"])

_SHA = PathParam(..., pattern="^[0-9a-f]{64}$", description="SHA-256 of the content, lowercase hex.")
_SUFFIX = Query("", max_length=33, description="File suffix as logged, e.g. .png (may be empty).")


def _bad_suffix(suffix: str) -> JSONResponse | None:
    if is_suffix(suffix):
        return None
    return JSONResponse({"detail": f"suffix {suffix!r} must be empty or a dot and up to 32 characters without "
                                   "path separators"}, status_code=400)


@router.head("/artifacts/{sha256}", dependencies=[Depends(can_read)])
def has_artifact(request: Request, sha256: str = _SHA, suffix: str = _SUFFIX):
    """200 when the server holds this content, 404 when it should be uploaded."""
    bad = _bad_suffix(suffix)
    if bad is not None:
        return bad
    found = contained_file(request.app.state.store.location.artifact_dir, blob_path(sha256, suffix))
    return Response(status_code=200 if found is not None else 404)


@router.put("/artifacts/{sha256}", dependencies=[Depends(can_write)],
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def put_artifact(request: Request, sha256: str = _SHA, suffix: str = _SUFFIX):
    """Store the body under its content address (checked against ``sha256``; a repeat is a no-op)."""
    bad = _bad_suffix(suffix)
    if bad is not None:
        return bad
    limit = request.app.state.settings.max_artifact_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return JSONResponse({"detail": f"artifact of {declared} bytes is over the server's {limit}-byte limit; "
                                       "log it with reference=True, or start the server with a larger "
                                       "--max-artifact-mb"}, status_code=413)
    try:
        with IncomingBlob(request.app.state.store.location.artifact_dir, sha256, suffix, limit) as blob:
            async for chunk in request.stream():
                blob.write(chunk)
            relative, stored = blob.commit()
    except BlobTooLargeError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=413)
    except BlobMismatchError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=400)
    return {"sha256": sha256, "path": relative, "size": blob.size, "stored": stored}
