"""A typed, async Python client for agent harnesses, over the real language server.

It speaks LSP to ``dbcode serve``: by default to the shared server of this user and database
(started if none runs, exactly as the stdio relay does: server/relay.py), or to a
``dbcode serve --tcp HOST:PORT`` / ``--ws HOST:PORT`` server. Every call is one ``dbcode/*``
request; errors are typed (:class:`Conflict` carries the current revision).

An agent loop — read, edit, check, write, and react to others' changes::

    import asyncio
    from lsp_dbcode.client import Conflict, connect

    async def main() -> None:
        async with await connect("demo", agent="fixer") as db:
            f = await db.read("app.py")
            text = f.text.replace("import os\\n", "")
            found = await db.diagnostics("app.py", text)      # before it is written
            if found.errors:
                return
            try:
                done = await db.write("app.py", text, base=f.revision)
            except Conflict as c:                               # someone wrote first
                print("app.py is now at revision", c.current_revision)
                return
            print("revision", done.revision, [str(x) for x in done.check.findings])
            async for cs in db.changes(since=done.seq, timeout_s=30):
                print(cs.seq, cs.agent, [ch.path for ch in cs.files])

    asyncio.run(main())

Imports only the standard library (and the package's own standard-library modules).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any

from .answers import (
    BlameRun,
    Change,
    Changeset,
    Check,
    Claim,
    Comment,
    Commented,
    Committed,
    FileChange,
    FileEntry,
    FileText,
    Finding,
    Presence,
    Thread,
    WorkspaceCheck,
    Written,
)
from .framing import MESSAGE_BYTES_MAX, FrameSplitter, FramingError
from .rpc import (
    CONNECT_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    AccessDenied,
    Claimed,
    ClientError,
    Conflict,
    ConnectionLost,
    Denied,
    InvalidInput,
    NotFound,
    ServerError,
    Unavailable,
    error_from,
    initialize_params,
    make_uri,
    notification,
    request,
    response,
)

__all__ = [
    "AccessDenied",
    "BlameRun",
    "Change",
    "Changeset",
    "Check",
    "Claim",
    "Claimed",
    "Client",
    "ClientError",
    "Comment",
    "Commented",
    "Committed",
    "Conflict",
    "ConnectOptions",
    "ConnectionLost",
    "Denied",
    "FileChange",
    "FileEntry",
    "FileText",
    "Finding",
    "InvalidInput",
    "NotFound",
    "Presence",
    "ServerError",
    "Thread",
    "Unavailable",
    "WorkspaceCheck",
    "Written",
    "connect",
]

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 256 * 1024
CLAIM_TTL_S_DEFAULT = 300.0  # as store/coordination.py (a test holds them equal)
CHANGES_QUEUE_MAX = 1000  # changesets buffered per changes() iterator before it catches up
WAIT_S_MAX = 3600.0  # the longest a changes() iterator may be asked to wait for one changeset


class _StreamTransport:
    """LSP framing over an asyncio stream (the shared server's unix socket, TCP)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.splitter = FrameSplitter()

    def send(self, framed: bytes) -> None:
        self.writer.write(framed)

    async def drain(self) -> None:
        await self.writer.drain()

    async def read_body(self) -> bytes | None:
        """The next message body; None when the server closed the connection."""
        while (body := self.splitter.next_body()) is None:
            data = await self.reader.read(READ_CHUNK_BYTES)
            if not data:
                return None
            self.splitter.feed(data)
        return body

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class _WebSocketTransport:
    """One JSON-RPC message per WebSocket frame, no headers (``dbcode serve --ws``)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.writer = asyncio.get_running_loop().create_task(self._write())
        self.writer.add_done_callback(_log_failure)

    async def _write(self) -> None:
        while True:
            body = await self.queue.get()
            try:
                await self.ws.send(body.decode("utf-8"))
            finally:
                self.queue.task_done()

    def send(self, framed: bytes) -> None:
        self.queue.put_nowait(framed.partition(b"\r\n\r\n")[2])

    async def drain(self) -> None:
        if self.writer.done():
            raise ConnectionLost("the WebSocket is closed")
        await self.queue.join()

    async def read_body(self) -> bytes | None:
        from websockets.exceptions import ConnectionClosed

        try:
            data = await self.ws.recv(decode=False)
        except ConnectionClosed:
            return None
        return data if isinstance(data, bytes) else str(data).encode()

    async def aclose(self) -> None:
        self.writer.cancel()
        with contextlib.suppress(BaseException):
            await self.writer
        await self.ws.close()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        if not isinstance(exc, (OSError, ConnectionLost)):
            log.warning("client WebSocket writer ended: %r", exc)


_Transport = _StreamTransport | _WebSocketTransport


class Client:
    """One LSP session. Make it with :func:`connect`; use it as an async context manager
    (or call :meth:`close`). ``workspace``: the default workspace of every call (each call
    also takes ``workspace=``)."""

    def __init__(
        self,
        transport: _Transport,
        workspace: str | None = None,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.workspace = workspace
        self.request_timeout_s = request_timeout_s
        self.agent: str | None = None
        self.options: ConnectOptions | None = None  # what connect() was given
        self._transport = transport
        self._next_id = 1
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._subscribers: dict[str, list[asyncio.Queue[dict[str, Any] | None]]] = {}
        self._closed: BaseException | None = None
        self._read_task = asyncio.get_running_loop().create_task(self._read_loop())
        self._read_task.add_done_callback(self._read_done)

    # -- plumbing ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while (body := await self._transport.read_body()) is not None:
            self._dispatch(json.loads(body))
        raise ConnectionLost("the language server closed the connection")

    def _read_done(self, task: asyncio.Task[None]) -> None:
        exc: BaseException
        if task.cancelled():
            exc = ConnectionLost("the connection was closed")
        else:
            got = task.exception()
            if isinstance(got, ConnectionLost):
                exc = got
            elif isinstance(got, (FramingError, ValueError)):
                exc = ConnectionLost(f"the language server sent a malformed message: {got}")
            else:
                exc = ConnectionLost(f"the connection failed: {got}")
                if got is not None and not isinstance(got, OSError):
                    log.error("client reader failed", exc_info=got)
        self._closed = exc
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()
        for queues in self._subscribers.values():
            for q in queues:
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(None)

    def _dispatch(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            return
        method = msg.get("method")
        if method is None:  # an answer
            fut = self._pending.pop(msg.get("id"), None)  # type: ignore[arg-type]
            if fut is None or fut.done():
                return
            if "error" in msg:
                fut.set_exception(error_from(msg["error"]))
            else:
                fut.set_result(msg.get("result"))
        elif "id" in msg:  # a request of the server's: we open no documents, so no edits
            self._transport.send(response(msg["id"], None))
        elif method == "dbcode/didCommit":
            params = msg.get("params") or {}
            for q in self._subscribers.get(str(params.get("workspace")), []):
                try:
                    q.put_nowait(params)
                except asyncio.QueueFull:  # the iterator catches up from its last seq
                    pass

    async def call(self, method: str, params: Any, timeout_s: float | None = None) -> Any:
        """One request; its result, or a typed :class:`ServerError`. Bounded by
        ``timeout_s`` (default ``request_timeout_s``): ConnectionLost after it."""
        if self._closed is not None:
            raise ConnectionLost(str(self._closed))
        msg_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        self._transport.send(request(msg_id, method, params))
        try:
            await self._transport.drain()
        except OSError as exc:
            self._pending.pop(msg_id, None)
            raise ConnectionLost(f"the connection failed: {exc}") from None
        limit = self.request_timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(fut, limit)
        except TimeoutError:
            self._pending.pop(msg_id, None)
            raise ConnectionLost(
                f"no answer to {method} within {limit:g} s (is the server alive?)"
            ) from None

    def _ws(self, workspace: str | None) -> str:
        ws = workspace or self.workspace
        if not ws:
            raise ValueError("no workspace: give workspace= here or to connect()")
        return ws

    async def _initialize(
        self, agent: str | None, mode: str, timeout_s: float, token: str | None = None
    ) -> None:
        await self.call("initialize", initialize_params(agent, mode, token), timeout_s)
        self._transport.send(notification("initialized", {}))
        got = await self.call("dbcode/configure", {}, timeout_s)
        self.agent = got.get("agent") if isinstance(got, dict) else agent

    async def close(self) -> None:
        """End the session (shutdown, exit) and close the connection. Idempotent."""
        if self._closed is None:
            with contextlib.suppress(ClientError, OSError):
                await self.call("shutdown", None, 5.0)
                self._transport.send(notification("exit", None))
                await self._transport.drain()
        self._read_task.cancel()
        with contextlib.suppress(BaseException):
            await self._read_task
        with contextlib.suppress(OSError):
            await self._transport.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- files ------------------------------------------------------------------------------

    async def workspaces(self) -> list[dict[str, Any]]:
        """Every workspace: ``[{name, uri, files, seq}]``."""
        return list(await self.call("dbcode/workspaces", {}))

    async def ls(self, prefix: str = "", *, workspace: str | None = None) -> list[FileEntry]:
        """The files of the workspace (under ``prefix``), with revision, size, last author."""
        got = await self.call(
            "dbcode/listFiles", {"workspace": self._ws(workspace), "prefix": prefix or None}
        )
        return [FileEntry.from_json(d) for d in got]

    async def read(
        self,
        path: str,
        revision: int | None = None,
        *,
        at: int | None = None,
        workspace: str | None = None,
    ) -> FileText:
        """A file's current text, or its text at ``revision``, or — time travel — as it was
        right after changeset ``at`` (a seq; ``dbcode://WS@SEQ/PATH``). NotFound if there is
        none; InvalidInput for a seq beyond the head."""
        ws = self._ws(workspace)
        if at is not None and revision is not None:
            raise ValueError("give revision or at, not both")
        params: dict[str, Any] = {"uri": make_uri(ws, path, at)}
        if revision is not None:
            params["revision"] = revision
        got = await self.call("dbcode/readFile", params)
        return FileText(ws, path, got["text"], got["revision"], at)

    async def write(
        self,
        path: str,
        text: str,
        base: int | None = None,
        *,
        workspace: str | None = None,
        check: bool = True,
    ) -> Written:
        """Store ``text`` as the file's new content, in one changeset.

        ``base``: the revision the text was made from — the write commits only if the file
        is still at it (0: it must not exist), else :class:`Conflict` with the current
        revision and nothing written. None: no check. With ``check`` (default) the result
        carries the new revision's findings (ruff, syntax)."""
        ws = self._ws(workspace)
        uri = make_uri(ws, path)
        params: dict[str, Any] = {"uri": uri, "text": text}
        if base is not None:
            params["baseRevision"] = base
        got = await self.call("dbcode/writeFile", params)
        rev = got["revision"]
        found = await self._check_revision(uri, rev) if check else None
        return Written(path, rev, got["seq"], found)

    async def delete(
        self, path: str, base: int | None = None, *, workspace: str | None = None
    ) -> Committed:
        """Delete a file (one changeset; CAS on ``base`` as :meth:`write`)."""
        return await self.commit([Change(path, None, base)], workspace=workspace, check=False)

    async def commit(
        self,
        changes: Iterable[Change] | Mapping[str, str | None],
        message: str | None = None,
        *,
        workspace: str | None = None,
        check: bool = True,
    ) -> Committed:
        """One atomic changeset of several files: all commit or none does. ``changes``: a
        list of :class:`Change` (text None deletes; ``base`` as in :meth:`write`), or a
        mapping path -> text (no base checks). A stale base raises :class:`Conflict` naming
        that file, and nothing is written."""
        ws = self._ws(workspace)
        items = (
            [Change(p, t) for p, t in changes.items()]
            if isinstance(changes, Mapping)
            else list(changes)
        )
        params = {
            "workspace": ws,
            "message": message,
            "changes": [
                {"uri": make_uri(ws, c.path), "text": c.text, "baseRevision": c.base} for c in items
            ],
        }
        got = await self.call("dbcode/commit", params)
        by_uri = {make_uri(ws, c.path): c.path for c in items}
        revisions = {by_uri[u]: r for u, r in got["revisions"].items() if u in by_uri}
        checks: dict[str, Check] = {}
        if check:
            for c in items:
                if c.text is not None and c.path in revisions:
                    checks[c.path] = await self._check_revision(
                        make_uri(ws, c.path), revisions[c.path]
                    )
        return Committed(got["seq"], revisions, checks)

    # -- history ----------------------------------------------------------------------------

    async def log(
        self,
        path: str | None = None,
        *,
        limit: int | None = None,
        before: int | None = None,
        workspace: str | None = None,
    ) -> list[Changeset]:
        """Changesets, newest first (of one file with ``path``); ``before``: older than that
        seq (the next page)."""
        ws = self._ws(workspace)
        params: dict[str, Any] = {"workspace": ws, "path": path}
        if limit is not None:
            params["limit"] = limit
        if before is not None:
            params["beforeSeq"] = before
        got = await self.call("dbcode/log", params)
        return [Changeset.from_json(d, ws) for d in got]

    async def blame(
        self,
        path: str,
        rev: int | None = None,
        *,
        at: int | None = None,
        workspace: str | None = None,
    ) -> list[BlameRun]:
        """For every line of the file (its current revision, ``rev``, or as it was after
        changeset ``at``), the changeset that last changed it: runs of lines, 1-based and
        inclusive, in order (renames followed)."""
        ws = self._ws(workspace)
        if at is not None and rev is not None:
            raise ValueError("give rev or at, not both")
        params: dict[str, Any] = {"uri": make_uri(ws, path, at)}
        if rev is not None:
            params["revision"] = rev
        return [BlameRun.from_json(d) for d in await self.call("dbcode/blame", params)]

    async def changes(
        self,
        since: int | None = None,
        *,
        workspace: str | None = None,
        timeout_s: float | None = None,
    ) -> AsyncGenerator[Changeset, None]:
        """Every changeset committed after ``since`` (default: from now), once each and in
        seq order — the ones committed before this call first (catch-up), then as they
        commit. Ends after ``timeout_s`` seconds without a new changeset (None: never), or
        raises ConnectionLost when the server goes away.

        ``dbcode/subscribe`` replaces an earlier subscription of this session to the same
        workspace: iterate one ``changes()`` per workspace at a time."""
        ws = self._ws(workspace)
        if timeout_s is not None and not 0 <= timeout_s <= WAIT_S_MAX:
            raise ValueError(f"timeout_s must be between 0 and {WAIT_S_MAX:g}")
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(CHANGES_QUEUE_MAX)
        self._subscribers.setdefault(ws, []).append(queue)
        try:
            got = await self.call("dbcode/subscribe", {"workspace": ws, "sinceSeq": since})
            last = got["seq"] if since is None else since
            while True:
                if queue.full():  # we fell behind: catch up from the last seq we gave
                    while not queue.empty():
                        queue.get_nowait()
                    await self.call("dbcode/subscribe", {"workspace": ws, "sinceSeq": last})
                try:
                    item = await asyncio.wait_for(queue.get(), timeout_s)
                except TimeoutError:
                    return
                if item is None:
                    raise ConnectionLost(str(self._closed or "the connection was closed"))
                if item["seq"] <= last:
                    continue  # a catch-up after falling behind repeats some
                last = item["seq"]
                yield Changeset.from_json(item, ws)
        finally:
            self._subscribers[ws].remove(queue)
            if not self._subscribers[ws]:
                del self._subscribers[ws]
                if self._closed is None:
                    with contextlib.suppress(ClientError):
                        await self.call("dbcode/unsubscribe", {"workspace": ws}, 5.0)

    # -- coordination and review -----------------------------------------------------------

    async def claim(
        self,
        path: str,
        lines: tuple[int, int] | None = None,
        *,
        note: str = "",
        exclusive: bool = False,
        ttl_s: float = CLAIM_TTL_S_DEFAULT,
        renew: int | None = None,
        detached: bool = False,
        workspace: str | None = None,
    ) -> Claim:
        """Say "I am working here" on the file, or on ``lines`` (1-based, inclusive) of its
        current revision, for ``ttl_s`` seconds (the database's clock). ``exclusive``: other
        agents' commits that touch it are refused (:class:`Claimed`, naming you and your
        note); else they go through with a warning. ``renew``: the id of a claim of yours to
        extend. The claim ends with this session (``detached``: it does not; it lasts until
        released or expired, like a CLI claim). :class:`Claimed` when another agent's
        exclusive claim overlaps it."""
        params: dict[str, Any] = {
            "uri": make_uri(self._ws(workspace), path),
            "note": note,
            "exclusive": exclusive,
            "ttlSeconds": ttl_s,
            "detached": detached,
        }
        if lines is not None:
            params["lines"] = list(lines)
        if renew is not None:
            params["id"] = renew
        return Claim.from_json(await self.call("dbcode/claim", params))

    async def release(self, claim_id: int, *, workspace: str | None = None) -> None:
        """Release a claim of yours (NotFound if it is gone; refused if another agent's)."""
        await self.call("dbcode/release", {"workspace": self._ws(workspace), "id": claim_id})

    async def claims(self, path: str | None = None, *, workspace: str | None = None) -> list[Claim]:
        """The live claims (of one file with ``path``), at the lines they cover now."""
        got = await self.call("dbcode/claims", {"workspace": self._ws(workspace), "path": path})
        return [Claim.from_json(d) for d in got]

    async def presence(
        self, path: str | None = None, *, workspace: str | None = None
    ) -> list[Presence]:
        """Who has which file open (in an editor or a session), across every server process."""
        got = await self.call("dbcode/presence", {"workspace": self._ws(workspace), "path": path})
        return [Presence.from_json(d) for d in got]

    async def comment(
        self,
        path: str,
        lines: tuple[int, int],
        text: str,
        *,
        kind: str = "note",
        replacement: str | None = None,
        revision: int | None = None,
        workspace: str | None = None,
    ) -> Commented:
        """Open a review thread on ``lines`` (1-based, inclusive) of the file's current
        revision (or ``revision``). ``kind``: note | suggestion (with ``replacement``, the
        text proposed for those lines) | blocking. The thread follows its code through later
        changesets."""
        params: dict[str, Any] = {
            "uri": make_uri(self._ws(workspace), path),
            "lines": list(lines),
            "text": text,
            "kind": kind,
            "replacement": replacement,
        }
        if revision is not None:
            params["revision"] = revision
        got = await self.call("dbcode/comment", params)
        return Commented(got["thread"], got["id"])

    async def reply(self, thread: int, text: str, *, workspace: str | None = None) -> int:
        """Reply to a thread; the new comment's id."""
        got = await self.call(
            "dbcode/reply", {"workspace": self._ws(workspace), "thread": thread, "text": text}
        )
        return int(got["id"])

    async def resolve(
        self, thread: int, *, reopen: bool = False, workspace: str | None = None
    ) -> bool:
        """Resolve a thread (``reopen``: open it again). False if it already was."""
        got = await self.call(
            "dbcode/resolve",
            {"workspace": self._ws(workspace), "thread": thread, "resolved": not reopen},
        )
        return bool(got.get("changed", True)) if isinstance(got, dict) else True

    async def comments(
        self, path: str | None = None, *, state: str = "open", workspace: str | None = None
    ) -> list[Thread]:
        """Review threads (of one file with ``path``) where their code is now; ``state``:
        open | resolved | all."""
        got = await self.call(
            "dbcode/comments", {"workspace": self._ws(workspace), "path": path, "state": state}
        )
        return [Thread.from_json(d) for d in got]

    # -- findings ---------------------------------------------------------------------------

    async def diagnostics(
        self,
        path: str,
        text: str | None = None,
        *,
        revision: int | None = None,
        workspace: str | None = None,
    ) -> Check:
        """Findings (ruff for Python, tree-sitter syntax errors for 15 languages) of
        ``text`` as if it were the file at ``path`` — before it is written — or, without
        ``text``, of the file's current revision (or ``revision``). The workspace's own ruff
        settings apply."""
        params: dict[str, Any] = {"uri": make_uri(self._ws(workspace), path)}
        if text is not None:
            params["text"] = text
        if revision is not None:
            params["revision"] = revision
        return Check.from_json(await self.call("dbcode/check", params))

    async def check_workspace(self, *, workspace: str | None = None) -> WorkspaceCheck:
        """Findings of every file of the workspace at its current seq."""
        got = await self.call("dbcode/check", {"workspace": self._ws(workspace)})
        return WorkspaceCheck.from_json(got)

    async def _check_revision(self, uri: str, revision: int) -> Check:
        return Check.from_json(await self.call("dbcode/check", {"uri": uri, "revision": revision}))


@dataclass(frozen=True)
class ConnectOptions:
    """What :func:`connect` was given (a client's ``options``). Its repr never shows the
    token."""

    workspace: str | None = None
    agent: str | None = None
    mode: str = "save"
    database_url: str | None = None
    tcp: str | None = None
    ws: str | None = None
    unix: str | None = None
    tls_ca: str | None = None
    token: str | None = field(default=None, repr=False)
    timeout_s: float = CONNECT_TIMEOUT_S
    request_timeout_s: float = REQUEST_TIMEOUT_S

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.name != "token"
        )
        return f"ConnectOptions({shown}, token={'***' if self.token else None})"


def _tls_context(tls_ca: str | None) -> ssl.SSLContext:
    from .tls import TLSError, client_context

    try:
        return client_context(tls_ca)
    except TLSError as exc:
        raise ConnectionLost(str(exc)) from None


async def _open(options: ConnectOptions) -> _Transport:
    timeout_s = options.timeout_s
    if options.tcp is not None:
        tls, address = _split(options.tcp, {"tcp": False, "tls": True})
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        context = _tls_context(options.tls_ca) if tls else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, int(port), ssl=context, server_hostname=host if tls else None
                ),
                timeout_s,
            )
        except ssl.SSLError as exc:
            raise _tls_failure(address, exc) from None
        except TimeoutError:
            raise ConnectionLost(f"no connection with {address} within {timeout_s:g} s") from None
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {address}: {exc.strerror or exc}") from None
        return _StreamTransport(reader, writer)
    if options.ws is not None:
        from websockets.asyncio.client import connect as ws_connect
        from websockets.exceptions import InvalidHandshake

        tls, _ = _split(options.ws, {"ws": False, "wss": True})
        url = options.ws if "://" in options.ws else f"ws://{options.ws}"
        headers = {"Authorization": f"Bearer {options.token}"} if options.token else None
        try:
            socket_ws = await asyncio.wait_for(
                ws_connect(
                    url,
                    max_size=MESSAGE_BYTES_MAX,
                    ssl=_tls_context(options.tls_ca) if tls else None,
                    additional_headers=headers,
                ),
                timeout_s,
            )
        except ssl.SSLError as exc:
            raise _tls_failure(url, exc) from None
        except TimeoutError:
            raise ConnectionLost(f"no WebSocket opened with {url} within {timeout_s:g} s") from None
        except (OSError, EOFError, InvalidHandshake) as exc:
            raise ConnectionLost(f"cannot open a WebSocket with {url}: {exc}") from None
        return _WebSocketTransport(socket_ws)
    from .attach import RelayError, attach_shared, attach_unix

    try:
        if options.unix is not None:
            attached = await asyncio.to_thread(attach_unix, options.unix, options.agent, timeout_s)
        else:
            attached = await asyncio.to_thread(
                attach_shared, options.database_url, options.agent, None, timeout_s
            )
    except RelayError as exc:
        raise ConnectionLost(str(exc).removeprefix("dbcode: ")) from None
    attached.sock.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=attached.sock)
    if attached.leftover:
        reader.feed_data(attached.leftover)
    return _StreamTransport(reader, writer)


def _tls_failure(where: str, exc: ssl.SSLError) -> ConnectionLost:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectionLost(
            f"TLS with {where} failed: certificate verify failed: {exc.verify_message} (the "
            "CA file that signed the server's certificate: tls_ca= or DBCODE_TLS_CA)"
        )
    return ConnectionLost(f"TLS with {where} failed: {exc.reason or exc}")


def _split(value: str, schemes: dict[str, bool]) -> tuple[bool, str]:
    from .tls import split_url

    try:
        return split_url(value, schemes)
    except ValueError as exc:
        raise ConnectionLost(str(exc)) from None


async def connect(
    workspace: str | None = None,
    *,
    agent: str | None = None,
    mode: str = "save",
    database_url: str | None = None,
    tcp: str | None = None,
    ws: str | None = None,
    unix: str | None = None,
    token: str | None = None,
    tls_ca: str | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
) -> Client:
    """A session with the language server, initialized.

    Default: the shared server of this user for ``database_url`` (else
    ``$DBCODE_DATABASE_URL``, else the embedded PostgreSQL), started if none runs — one
    connection pool and one ruff for every agent of the machine. Or a server of your own:
    ``tcp="HOST:PORT"`` (``dbcode serve --tcp``; ``"tls://HOST:PORT"`` for one with
    ``--tls-cert``), ``ws="ws://HOST:PORT"`` (``--ws``; ``"wss://..."`` over TLS; needs the
    ``websockets`` package, a dependency of lsp-dbcode) or ``unix=PATH`` (``dbcode serve
    --unix PATH``). ``agent`` authors the changes (default: ``$DBCODE_AGENT``, else
    user@host). ``token``: the agent's token (default ``$DBCODE_TOKEN``), sent as
    ``initializationOptions.token`` (and, over WebSocket, as ``Authorization: Bearer``).
    ``tls_ca``: the CA file (PEM) that signed the server's certificate (default
    ``$DBCODE_TLS_CA``, else the system's trusted CAs).
    """
    if agent is None:
        from .cli import default_agent

        agent = default_agent(None)
    if token is None:
        token = os.environ.get("DBCODE_TOKEN", "").strip() or None
    options = ConnectOptions(
        workspace, agent, mode, database_url, tcp, ws, unix, tls_ca, token, timeout_s,
        request_timeout_s,
    )  # fmt: skip
    transport = await _open(options)
    client = Client(transport, workspace, request_timeout_s)
    client.options = options
    try:
        await client._initialize(agent, mode, timeout_s, token)
    except BaseException:
        await client.close()
        raise
    return client
