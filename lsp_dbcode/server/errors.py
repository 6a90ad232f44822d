"""Our errors as JSON-RPC errors: a clear message naming the thing and the fix, and for a
conflict the data a client needs to recover (SPEC: 409 with uri and currentRevision; 423 with
uri and the claim for a change refused by another agent's exclusive claim)."""

from __future__ import annotations

import logging

from pygls.exceptions import JsonRpcException, JsonRpcInternalError, JsonRpcInvalidParams

from ..store import Claimed, Conflict, DatabaseUnavailable, InvalidInput, NotFound, StoreError
from ..store.access import Forbidden, Unauthenticated
from ..uris import make_uri
from .coordination import claim_json

log = logging.getLogger(__name__)

CODE_CONFLICT = 409
CODE_NOT_FOUND = 404
CODE_UNAVAILABLE = 503
CODE_UNAUTHENTICATED = 401  # no token, or not (or no longer) a valid one
CODE_FORBIDDEN = 403  # the agent may not: the message names workspace and path
CODE_CLAIMED = 423  # a change inside another agent's exclusive claim (SPEC: data {uri, claim})


def rpc_error(exc: Exception) -> JsonRpcException:
    """Our errors as JSON-RPC errors with a clear message (and data for conflicts)."""
    if isinstance(exc, JsonRpcException):
        return exc
    if isinstance(exc, Conflict):
        return JsonRpcException(
            code=CODE_CONFLICT,
            message=str(exc),
            data={
                "uri": make_uri(exc.workspace, exc.path),
                "currentRevision": exc.current_revision,
            },
        )
    if isinstance(exc, Claimed):
        return JsonRpcException(
            code=CODE_CLAIMED,
            message=str(exc),
            data={"uri": make_uri(exc.workspace, exc.path), "claim": claim_json(exc.claim)},
        )
    if isinstance(exc, Unauthenticated):
        return JsonRpcException(code=CODE_UNAUTHENTICATED, message=str(exc))
    if isinstance(exc, Forbidden):
        return JsonRpcException(
            code=CODE_FORBIDDEN,
            message=str(exc),
            data={"workspace": exc.workspace, "path": exc.path},
        )
    if isinstance(exc, NotFound):
        return JsonRpcException(code=CODE_NOT_FOUND, message=str(exc))
    if isinstance(exc, DatabaseUnavailable):
        return JsonRpcException(code=CODE_UNAVAILABLE, message=str(exc))
    if isinstance(exc, (InvalidInput, ValueError, TypeError, KeyError)):
        return JsonRpcInvalidParams(
            message=str(exc) if not isinstance(exc, KeyError) else f"missing parameter {exc}"
        )
    if isinstance(exc, StoreError):
        return JsonRpcInternalError(message=str(exc))
    log.exception("unexpected error", exc_info=exc)
    return JsonRpcInternalError(message=f"internal error: {type(exc).__name__}; see the server log")
