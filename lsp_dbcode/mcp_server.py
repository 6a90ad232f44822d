"""``dbcode mcp``: the workspace over the Model Context Protocol (stdio), for agent runtimes
that speak MCP (Claude Code, Codex, Cursor, ...).

A thin layer over lsp_dbcode.client: every tool is one or two client calls to the shared
language server (one connection pool and one ruff for all the agents of the machine), and the
client's typed errors become MCP tool errors with the CLI's meaning (a conflict names the
current revision). The session to the language server is made on the first tool call and made
again after it is lost (a restarted server), never waited on without a bound.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Annotated, Any

from pydantic import Field

from .client import (
    CLAIM_TTL_S_DEFAULT,
    AccessDenied,
    BlameRun,
    Change,
    Changeset,
    Check,
    Claim,
    Claimed,
    Client,
    Conflict,
    ConnectionLost,
    NotFound,
    ServerError,
    Thread,
    connect,
)

WAIT_S_MAX = 300.0  # wait_for_changes: the longest one call waits for a first changeset
WAIT_S_DEFAULT = 30.0
WAIT_MORE_IDLE_S = 0.1  # wait_for_changes: after the first, the rest until this long idle
WAIT_CHANGESETS_MAX = 500  # wait_for_changes: changesets returned by one call
LOG_LIMIT_MAX = 1000  # log: changesets returned by one call
LIST_FILES_MAX = 10_000  # list_files: entries returned by one call

INSTRUCTIONS = """\
A codebase kept in PostgreSQL (lsp-dbcode), shared live with other agents and people.
Files live in named workspaces; every file has a revision that grows by one on each change,
and every change is a changeset with a workspace-wide sequence number (seq).
Work like this: read_file (note its revision) -> edit -> check (optional, before writing) ->
write_file with base_revision = the revision you read. If someone changed the file meanwhile
you get a conflict naming the current revision: read again, redo your edit, write again.
Every write and commit answers the new revision's problems (ruff lint, syntax errors):
fix what you broke. Use wait_for_changes to see what others commit.
Before a longer edit of a shared file, claim the lines you work on (exclusive: others' writes
there are refused) and release them when done; blame shows who changed a line and why;
comment, reply and resolve are review threads on lines, seen by people in their editors.
"""
Lines = Annotated[int, Field(description="First line, 1-based", ge=1)]

Workspace = Annotated[
    str | None,
    Field(description="Workspace name; default: the one dbcode mcp was started with"),
]


class DbcodeTools:
    """The tools' state: one client session to the language server, made on first use."""

    def __init__(
        self,
        workspace: str | None,
        agent: str,
        database_url: str | None,
        token: str | None = None,
        server: str | None = None,
        tls_ca: str | None = None,
    ) -> None:
        self.server = server  # --server URL: a dbcode serve --tcp/--ws (else the shared one)
        self.tls_ca = tls_ca
        self.workspace = workspace
        self.agent = agent
        self.database_url = database_url
        self._token = token  # --token / DBCODE_TOKEN (cli.py resolved it); never shown
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        async with self._lock:
            if self._client is not None and self._client._closed is not None:
                await self._client.close()
                self._client = None
            if self._client is None:
                where: dict[str, str] = {}
                if self.server:
                    scheme = self.server.partition("://")[0].lower()
                    where = {"ws" if scheme in ("ws", "wss") else "tcp": self.server}
                self._client = await connect(
                    self.workspace,
                    agent=self.agent,
                    database_url=self.database_url,
                    token=self._token or "",
                    tls_ca=self.tls_ca,
                    **where,  # type: ignore[arg-type]
                )
            return self._client

    def ws(self, workspace: str | None) -> str:
        ws = workspace or self.workspace
        if not ws:
            raise ToolFailure(
                "no workspace given: pass 'workspace' (list_workspaces shows them), or start "
                "'dbcode mcp --workspace NAME'"
            )
        return ws

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class ToolFailure(Exception):
    """An expected failure, shown to the model as the tool's error text."""


def tool_message(exc: Exception) -> str:
    """The CLI's meaning, as one line for the model."""
    if isinstance(exc, Conflict):
        cur = exc.current_revision
        now = f"current revision {cur}" if cur is not None else "the file does not exist now"
        return f"{exc.message} ({now}; read the file again, redo your edit, write with that base)"
    if isinstance(exc, Claimed):
        return f"claimed: {exc.message}"
    if isinstance(exc, AccessDenied):
        return f"denied: {exc.message}"
    if isinstance(exc, NotFound):
        return f"not found: {exc.message}"
    if isinstance(exc, ConnectionLost):
        return f"the dbcode language server is unavailable: {exc} (try again)"
    if isinstance(exc, ServerError):
        return exc.message
    return str(exc)


def _check_json(check: Check | None) -> dict[str, Any] | None:
    if check is None:
        return None
    return {
        "revision": check.revision,
        "errors": check.errors,
        "problems": [f.to_json() for f in check.findings],
        "notChecked": check.not_checked,
    }


def _changeset_json(cs: Changeset) -> dict[str, Any]:
    return {
        "seq": cs.seq,
        "agent": cs.agent,
        "message": cs.message,
        "time": cs.time,
        "files": [
            {"path": f.path, "revision": f.revision, "kind": f.kind}
            | ({"oldPath": f.old_path} if f.old_path else {})
            for f in cs.files
        ],
    }


def _claim_json(c: Claim) -> dict[str, Any]:
    return {
        "claim_id": c.id,
        "agent": c.agent,
        "path": c.path,
        "start_line": c.lines[0] if c.lines else None,
        "end_line": c.lines[1] if c.lines else None,
        "exclusive": c.exclusive,
        "note": c.note,
        "expires_at": c.expires_at,
    }


def _thread_json(t: Thread) -> dict[str, Any]:
    return {
        "thread": t.id,
        "path": t.path,
        "start_line": t.lines[0] if t.lines else None,
        "end_line": t.lines[1] if t.lines else None,
        "kind": t.kind,
        "state": t.state,
        "outdated": t.outdated,
        "replacement": t.replacement,
        "comments": [{"agent": c.agent, "text": c.text, "time": c.time} for c in t.comments],
    }


def _blame_json(r: BlameRun) -> dict[str, Any]:
    return {
        "start_line": r.start_line,
        "end_line": r.end_line,
        "seq": r.seq,
        "revision": r.revision,
        "path": r.path,
        "agent": r.agent,
        "time": r.time,
        "message": r.message,
        "meta": r.meta,
    }


def _lines(start_line: int | None, end_line: int | None) -> tuple[int, int] | None:
    if start_line is None:
        if end_line is not None:
            raise ToolFailure("give start_line with end_line")
        return None
    return start_line, start_line if end_line is None else end_line


def build_server(tools: DbcodeTools) -> Any:
    """The MCP server with its tools (mcp 2's MCPServer)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from . import __version__

    server = MCPServer("dbcode", instructions=INSTRUCTIONS, version=__version__)

    async def run(coro: Any) -> Any:
        try:
            return await coro
        except (ToolFailure, ServerError, ConnectionLost, ValueError) as exc:
            raise ToolError(tool_message(exc)) from None

    @server.tool()
    async def list_workspaces() -> list[dict[str, Any]]:
        """List the workspaces (codebases) in the database, with their file count and head
        seq. Use it first when you do not know the workspace's name."""

        async def go() -> Any:
            return await (await tools.client()).workspaces()

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def list_files(
        prefix: Annotated[str, Field(description="Only paths starting with this")] = "",
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """List the files of a workspace (optionally under a path prefix) with each file's
        current revision, size in bytes and last author. Use it to find files before
        reading them."""

        async def go() -> Any:
            c = await tools.client()
            entries = await c.ls(prefix, workspace=tools.ws(workspace))
            return {
                "files": [
                    {
                        "path": e.path,
                        "revision": e.revision,
                        "size": e.size,
                        "updatedBy": e.updated_by,
                        "updatedAt": e.updated_at,
                    }
                    for e in entries[:LIST_FILES_MAX]
                ],
                "truncated": len(entries) > LIST_FILES_MAX,
            }

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def read_file(
        path: Annotated[str, Field(description="File path in the workspace, e.g. src/app.py")],
        revision: Annotated[
            int | None, Field(description="An older revision to read; default: current", ge=1)
        ] = None,
        at_seq: Annotated[
            int | None,
            Field(
                description="Time travel: the file as it was right after changeset at_seq "
                "(a seq from log); not with revision",
                ge=0,
            ),
        ] = None,
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Read a file's text and its revision. Keep the revision: pass it as base_revision
        when you write the file, so that you never overwrite someone else's change. With
        at_seq, read the file as it was at that point of the history (e.g. before a change
        that broke something), read-only."""

        async def go() -> Any:
            c = await tools.client()
            if at_seq is not None and revision is not None:
                raise ToolFailure("give revision or at_seq, not both")
            f = await c.read(path, revision, at=at_seq, workspace=tools.ws(workspace))
            out = {"path": f.path, "revision": f.revision, "text": f.text}
            return out | ({"at_seq": at_seq} if at_seq is not None else {})

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def write_file(
        path: Annotated[str, Field(description="File path in the workspace")],
        text: Annotated[str, Field(description="The file's whole new content")],
        base_revision: Annotated[
            int | None,
            Field(
                description="The revision your text is based on (from read_file); 0 for a "
                "new file. The write fails with a conflict if the file is no longer at it. "
                "Omit only to overwrite whatever is there.",
                ge=0,
            ),
        ],
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Write one file's whole content as one changeset (compare-and-swap on
        base_revision). Returns the new revision, the changeset's seq and the new revision's
        problems (ruff lint and syntax errors): fix the errors you introduced."""

        async def go() -> Any:
            c = await tools.client()
            done = await c.write(path, text, base_revision, workspace=tools.ws(workspace))
            return {
                "path": path,
                "revision": done.revision,
                "seq": done.seq,
                "check": _check_json(done.check),
            }

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def commit(
        changes: Annotated[
            list[dict[str, Any]],
            Field(
                description="The files: each {path, text, base_revision}; text null deletes "
                "the file; base_revision as in write_file (0: must not exist)"
            ),
        ],
        message: Annotated[str | None, Field(description="What and why")] = None,
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Commit several files as one atomic changeset: all are written or none is (a
        conflict on any file writes nothing and names it). Use it for a change that spans
        files (a rename of a function and its callers). Returns the seq, each file's new
        revision and the problems of each written file."""

        async def go() -> Any:
            items = []
            for ch in changes:
                if not isinstance(ch, dict) or not isinstance(ch.get("path"), str):
                    raise ToolFailure("each change needs a 'path' (and 'text', 'base_revision')")
                text, base = ch.get("text"), ch.get("base_revision")
                if text is not None and not isinstance(text, str):
                    raise ToolFailure(f"{ch['path']}: 'text' must be a string or null")
                if base is not None and (not isinstance(base, int) or base < 0):
                    raise ToolFailure(f"{ch['path']}: 'base_revision' must be an integer >= 0")
                items.append(Change(ch["path"], text, base))
            if not items:
                raise ToolFailure("'changes' is empty: nothing to commit")
            c = await tools.client()
            done = await c.commit(items, message, workspace=tools.ws(workspace))
            return {
                "seq": done.seq,
                "revisions": done.revisions,
                "checks": {p: _check_json(ch) for p, ch in done.checks.items()},
            }

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def log(
        path: Annotated[str | None, Field(description="Only changesets of this file")] = None,
        limit: Annotated[int, Field(description="At most this many", ge=1, le=LOG_LIMIT_MAX)] = 20,
        before_seq: Annotated[
            int | None, Field(description="Only changesets older than this seq (next page)")
        ] = None,
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """The history: changesets newest first, each with seq, agent, message, time and the
        files it changed. Use it to see who changed what, and the seq to wait from."""

        async def go() -> Any:
            c = await tools.client()
            found = await c.log(path, limit=limit, before=before_seq, workspace=tools.ws(workspace))
            return {"changesets": [_changeset_json(cs) for cs in found]}

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def check(
        path: Annotated[
            str | None, Field(description="A file; omit to check the whole workspace")
        ] = None,
        text: Annotated[
            str | None,
            Field(description="A text to check as if it were this file, before writing it"),
        ] = None,
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Problems (ruff lint for Python, syntax errors for 15 languages) of a file at its
        current revision, of a text you are about to write (give path and text: nothing is
        written), or of every file of the workspace (no path). The workspace's own ruff
        settings apply."""

        async def go() -> Any:
            c = await tools.client()
            ws = tools.ws(workspace)
            if path is None:
                if text is not None:
                    raise ToolFailure("give 'path' with 'text' (the file it would be)")
                report = await c.check_workspace(workspace=ws)
                return {
                    "seq": report.seq,
                    "files": report.files,
                    "errors": report.errors,
                    "problems": [f.to_json() for f in report.findings],
                    "notChecked": report.skipped,
                }
            return _check_json(await c.diagnostics(path, text, workspace=ws))

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def wait_for_changes(
        since_seq: Annotated[
            int, Field(description="Return changesets after this seq (from log or a write)", ge=0)
        ],
        timeout_s: Annotated[
            float,
            Field(description="Wait at most this long for a first changeset", ge=0, le=WAIT_S_MAX),
        ] = WAIT_S_DEFAULT,
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Changesets committed after since_seq, oldest first: at once if there are any,
        else waits (bounded by timeout_s) for the next one. Use it to react to other agents'
        work; call again with the returned last_seq to keep following."""

        async def go() -> Any:
            c = await tools.client()
            ws = tools.ws(workspace)
            got: list[Changeset] = []
            # The first one: bounded by timeout_s. Then what else is there already (the
            # catch-up comes at once), with a short idle bound.
            for idle_s in (timeout_s, WAIT_MORE_IDLE_S):
                after = got[-1].seq if got else since_seq
                it = c.changes(after, workspace=ws, timeout_s=idle_s)
                try:
                    async for cs in it:
                        got.append(cs)
                        if idle_s == timeout_s or len(got) >= WAIT_CHANGESETS_MAX:
                            break
                finally:
                    await it.aclose()
                if not got or len(got) >= WAIT_CHANGESETS_MAX:
                    break
            return {
                "changesets": [_changeset_json(cs) for cs in got],
                "last_seq": got[-1].seq if got else since_seq,
                "timed_out": not got,
                "truncated": len(got) >= WAIT_CHANGESETS_MAX,
            }

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def blame(
        path: Annotated[str, Field(description="File path in the workspace")],
        revision: Annotated[
            int | None, Field(description="Blame this revision; default: current", ge=1)
        ] = None,
        at_seq: Annotated[
            int | None, Field(description="Blame the file as it was after this seq", ge=0)
        ] = None,
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Who last changed each line of a file, and in which changeset: runs of lines
        (1-based, inclusive) with seq, revision, agent, time, message and meta (renames are
        followed). Use it to learn why a line is the way it is before changing it, or whom to
        ask (comment) about it."""

        async def go() -> Any:
            c = await tools.client()
            if at_seq is not None and revision is not None:
                raise ToolFailure("give revision or at_seq, not both")
            runs = await c.blame(path, revision, at=at_seq, workspace=tools.ws(workspace))
            return {"path": path, "runs": [_blame_json(r) for r in runs]}

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def claim(
        path: Annotated[str, Field(description="File path in the workspace")],
        start_line: Annotated[
            int | None,
            Field(description="First line (1-based); omit to claim the whole file", ge=1),
        ] = None,
        end_line: Annotated[
            int | None,
            Field(description="Last line (1-based, inclusive); default start_line", ge=1),
        ] = None,
        note: Annotated[str, Field(description="What you are doing there, for others")] = "",
        exclusive: Annotated[
            bool,
            Field(description="Refuse other agents' writes that touch it (else they only warn)"),
        ] = False,
        ttl_s: Annotated[
            float, Field(description="Seconds until it expires (renew before)", gt=0)
        ] = CLAIM_TTL_S_DEFAULT,
        renew_claim_id: Annotated[
            int | None, Field(description="Extend this claim of yours instead of a new one", ge=1)
        ] = None,
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Say "I am working here" on a file or on lines of it, for ttl_s seconds, so that
        other agents and people see it (and, if exclusive, cannot write there meanwhile). Use
        it before a longer edit of a file others work on; release it when done. Fails with a
        'claimed' error naming the holder and note if someone else's exclusive claim covers
        it. Claims end when this MCP server stops. Returns the claim_id."""

        async def go() -> Any:
            c = await tools.client()
            made = await c.claim(
                path,
                _lines(start_line, end_line),
                note=note,
                exclusive=exclusive,
                ttl_s=ttl_s,
                renew=renew_claim_id,
                workspace=tools.ws(workspace),
            )
            return _claim_json(made)

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def release(
        claim_id: Annotated[int, Field(description="The claim_id that claim returned", ge=1)],
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Release a claim of yours as soon as you are done, so that others may work there."""

        async def go() -> Any:
            await (await tools.client()).release(claim_id, workspace=tools.ws(workspace))
            return {"released": claim_id}

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def list_claims(
        path: Annotated[str | None, Field(description="Only claims on this file")] = None,
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """The live claims (who works where, exclusive or not, until when), at the lines they
        cover now. Use it before editing a file to avoid stepping on someone's work."""

        async def go() -> Any:
            found = await (await tools.client()).claims(path, workspace=tools.ws(workspace))
            return {"claims": [_claim_json(x) for x in found]}

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def comment(
        path: Annotated[str, Field(description="File path in the workspace")],
        start_line: Lines,
        text: Annotated[str, Field(description="The comment (markdown)")],
        end_line: Annotated[
            int | None,
            Field(description="Last line (1-based, inclusive); default start_line", ge=1),
        ] = None,
        kind: Annotated[
            str,
            Field(
                description="note; suggestion (give replacement: the new text of those lines); "
                "blocking (must be resolved)",
                pattern="^(note|suggestion|blocking)$",
            ),
        ] = "note",
        replacement: Annotated[
            str | None, Field(description="For a suggestion: the proposed text of the lines")
        ] = None,
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Open a review thread on lines of a file's current revision: a question, a note,
        a suggested replacement or a blocking objection. People see it in their editor at
        those lines, and it follows the code through later changes. Use it to ask the author
        (see blame) instead of silently rewriting their work. Returns the thread id."""

        async def go() -> Any:
            c = await tools.client()
            made = await c.comment(
                path,
                (start_line, start_line if end_line is None else end_line),
                text,
                kind=kind,
                replacement=replacement,
                workspace=tools.ws(workspace),
            )
            return {"thread": made.thread, "comment_id": made.id}

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def reply(
        thread: Annotated[int, Field(description="The thread id", ge=1)],
        text: Annotated[str, Field(description="Your reply")],
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Reply to a review thread (answer a question on your code, or say what you
        changed)."""

        async def go() -> Any:
            cid = await (await tools.client()).reply(thread, text, workspace=tools.ws(workspace))
            return {"thread": thread, "comment_id": cid}

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def resolve(
        thread: Annotated[int, Field(description="The thread id", ge=1)],
        reopen: Annotated[bool, Field(description="Reopen a resolved thread instead")] = False,
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Resolve a review thread once what it asked for is done (or reopen it). Returns
        changed=false if it already was."""

        async def go() -> Any:
            c = await tools.client()
            changed = await c.resolve(thread, reopen=reopen, workspace=tools.ws(workspace))
            return {"thread": thread, "state": "open" if reopen else "resolved", "changed": changed}

        return await run(go())  # type: ignore[no-any-return]

    @server.tool()
    async def list_comments(
        path: Annotated[str | None, Field(description="Only threads on this file")] = None,
        include_resolved: Annotated[bool, Field(description="Resolved threads too")] = False,
        workspace: Workspace = None,
    ) -> dict[str, Any]:
        """Review threads with their comments, at the lines their code is at now (outdated:
        the code was deleted). Use it to find what reviewers asked of a file before or after
        you change it."""

        async def go() -> Any:
            c = await tools.client()
            state = "all" if include_resolved else "open"
            found = await c.comments(path, state=state, workspace=tools.ws(workspace))
            return {"threads": [_thread_json(t) for t in found]}

        return await run(go())  # type: ignore[no-any-return]

    return server


def run(args: argparse.Namespace) -> int:
    """``dbcode mcp``: serve MCP on stdin/stdout until the client closes them."""
    try:
        import mcp.server.mcpserver  # noqa: F401
    except ImportError:
        from .cli import fail

        fail(
            "dbcode mcp needs the MCP SDK: pip install 'lsp-dbcode[mcp]' "
            "(or pip install 'mcp==2.3.0')"
        )
    tools = DbcodeTools(
        args.workspace,
        args.agent,
        args.database_url,
        getattr(args, "token", None),
        getattr(args, "server", None),
        getattr(args, "tls_ca", None),
    )
    server = build_server(tools)
    server.run("stdio")
    return 0
