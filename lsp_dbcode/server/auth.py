"""Authentication and access checks of LSP sessions (SPEC: Identity and access).

On an enforced database a session's first message (``initialize``) is held until its token
(``initializationOptions.token``, else the transport's ``Session.transport_token``) is
verified; a refused one is answered 401 and so is every later request of the session. Every
request then re-checks the token (a one-row read of the access generation, the verified token
cached in-process), so a rotation, revocation or removal takes effect at the session's next
request, and runs as the token's agent (its PostgreSQL role: ``access.run_as``). Refusals are
recorded in the audit with the session's transport and peer. Failed authentications are
limited per peer.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Any

from pygls.exceptions import JsonRpcException

from ..store import StoreError
from ..store.access import Agent, Forbidden, Unauthenticated

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)

CODE_UNAUTHENTICATED = 401
CODE_FORBIDDEN = 403
# Failed authentications per peer within the window; beyond, refused without a database look.
AUTH_FAILURES_PER_PEER_MAX = 20
AUTH_FAILURE_WINDOW_S = 60.0
# Peers tracked by the limiter at once (the oldest are forgotten first).
AUTH_PEERS_TRACKED_MAX = 10_000
# Messages held while a session's token is checked (beyond: dropped, requests answered 401).
AUTH_HELD_MESSAGES_MAX = 1_000


class FailureLimiter:
    """Failed authentications per peer, in a sliding window (one per server process)."""

    def __init__(self) -> None:
        self._fails: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def _recent(self, peer: str) -> collections.deque[float]:
        q = self._fails.get(peer)
        if q is None:
            q = self._fails[peer] = collections.deque()
            while len(self._fails) > AUTH_PEERS_TRACKED_MAX:
                self._fails.popitem(last=False)
        now = time.monotonic()
        while q and now - q[0] > AUTH_FAILURE_WINDOW_S:
            q.popleft()
        return q

    def blocked(self, peer: str) -> bool:
        return len(self._recent(peer)) >= AUTH_FAILURES_PER_PEER_MAX

    def failed(self, peer: str) -> None:
        self._recent(peer).append(time.monotonic())


def peer_key(peer: str) -> str:
    """The peer for the limiter: its address without the port (a flood opens many), or on the
    unix socket its user (each process has a pid of its own)."""
    peer = peer or "?"
    if peer.startswith("pid ") and " uid " in peer:  # the unix socket: one user, many pids
        return "uid " + peer.rpartition(" uid ")[2]
    if peer.startswith("["):  # [v6]:port
        return peer.split("]")[0] + "]"
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() and host.count(":") == 0 else peer


def unauthenticated(exc: Exception) -> JsonRpcException:
    return JsonRpcException(code=CODE_UNAUTHENTICATED, message=str(exc))


async def authenticate(session: Session, token: Any) -> Agent | None:
    """Verify the session's token at its start. Returns its agent (None: an open database).
    Raises a 401 JsonRpcException (recorded in the audit, counted against the peer)."""
    access = session.shared.store.access
    limiter, key = session.shared.auth_limiter, peer_key(session.peer)
    if limiter.blocked(key):
        raise JsonRpcException(
            code=CODE_UNAUTHENTICATED,
            message="authentication required: too many failed attempts from this address; "
            f"wait up to {AUTH_FAILURE_WINDOW_S:.0f} s",
        )
    if token is not None and not isinstance(token, str):
        token = ""
    try:
        agent = await access.authenticate(token)
    except Unauthenticated as exc:
        limiter.failed(key)
        await record(session, None, "authenticate", None, None, str(exc).split(" (")[0])
        raise unauthenticated(exc) from None
    session.token = token
    set_agent(session, agent)
    return agent


async def recheck(session: Session) -> Agent | None:
    """Before each request: the session's token is still valid (and its grants current).
    An open database is known to be still open from the hub (it hears the first agent's
    NOTIFY): no query then."""
    if session.account is None:
        await session.shared.store.hub.start()
    try:
        agent = await session.shared.store.access.authenticate(session.token)
    except Unauthenticated as exc:
        name = session.account.name if session.account else None
        await record(session, name, "request", None, None, str(exc).split(" (")[0])
        raise unauthenticated(exc) from None
    set_agent(session, agent)
    return agent


def set_agent(session: Session, agent: Agent | None) -> None:
    session.account = agent
    session.identity.account = agent
    session.tasks.role = agent.role if agent is not None else None
    if agent is not None:
        session.identity.agent = agent.name  # the author is the token's agent


async def refused(session: Session, action: str, exc: Forbidden) -> None:
    await record(session, exc.agent, action, exc.workspace, exc.path or None, str(exc))


async def record(
    session: Session,
    agent: str | None,
    action: str,
    workspace: str | None,
    path: str | None,
    reason: str,
) -> None:
    try:
        await session.shared.store.access.record(
            agent=agent,
            action=action,
            workspace=workspace,
            path=path,
            transport=session.transport,
            peer=session.peer,
            reason=reason,
        )
    except StoreError as exc:
        log.warning("could not record a refusal in the audit: %s", exc)


def may(session: Session, level: int, workspace: str, path: str = "") -> None:
    """Forbidden (403) unless the session's agent has ``level`` (1 read, 2 write) on the path
    (nothing to check on an open database)."""
    if session.account is not None:
        session.account.require(level, workspace, path)


def readable(session: Session, workspace: str, path: str) -> bool:
    """May the session see this path? (What the process reads as owner and shares between
    sessions — the hub's changesets, review events, presence — is filtered with this.)"""
    return session.account is None or session.account.can_read(workspace, path)
