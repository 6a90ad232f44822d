"""The ``dbcode/*`` requests (SPEC: Language server). Params arrive as plain JSON and are
checked here by hand (a clear JSON-RPC error for each bad one); results are plain JSON."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from ...analysis import AnalysisError
from ...check import check_text, check_workspace, finding_json
from ...store import InvalidInput, validate
from ...store.store import LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX
from ...text.edits import content_hash
from ...uris import blame_json, changeset_json, make_uri, parse_doc_uri
from ..auth import may, readable
from ..blame import target_of
from ..coordination import notify_comments, notify_presence
from ..session import Served, Subscription

if TYPE_CHECKING:
    from ..session import Session

AGENT_CHARS_MAX = 200


# -- parameter checking ----------------------------------------------------------------------


def _obj(params: Any, method: str) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InvalidInput(f"{method} takes an object of params")
    return params


def _str(p: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = p.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"parameter {key!r} must be a string")
    return value


def _int(p: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = p.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInput(f"parameter {key!r} must be a non-negative integer")
    return value


def _workspace(p: dict[str, Any]) -> str:
    return validate.check_workspace(_str(p, "workspace"))


def _meta(p: dict[str, Any]) -> dict[str, Any] | None:
    """``meta``: a small JSON object kept with the changeset (checked here, before anything is
    read or written; the commit pipeline checks it again for its other callers)."""
    return validate.check_meta(p.get("meta"))


# -- reading ---------------------------------------------------------------------------------


async def list_files(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/listFiles")
    workspace = _workspace(p)
    prefix = _str(p, "prefix", optional=True) or ""
    return [
        {
            "path": f.path,
            "uri": make_uri(workspace, f.path),
            "revision": f.revision,
            "size": f.size,
            "updatedBy": f.updated_by,
            "updatedAt": f.updated_at.isoformat(),
        }
        for f in await session.shared.store.list_files(workspace, prefix)
    ]


async def workspaces(session: Session, params: Any) -> Any:
    return [
        {"name": w.name, "uri": make_uri(w.name), "files": w.files, "seq": w.head_seq}
        for w in await session.shared.store.workspaces()
    ]


async def read_file(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/readFile")
    rev = _int(p, "revision", optional=True)
    if rev == 0:
        raise InvalidInput("revision must be >= 1")
    return await read(session, _str(p, "uri"), rev)


async def read(session: Session, uri: str, revision: int | None) -> dict[str, Any]:
    """A file's text (and revision). The current one served is remembered: a didOpen of that
    text is then known to be based on that revision. ``dbcode://WS@SEQ/PATH``: the file right
    after changeset SEQ, marked ``readOnly`` (every write to that URI is refused by
    ``uris.parse_uri``)."""
    at = parse_doc_uri(uri)
    may(session, 1, at.workspace, at.path)
    if at.seq is not None:
        if revision is not None:
            raise InvalidInput(f"{uri} names its revision by its seq: no 'revision' with it")
        old = await session.shared.store.read_at(at.workspace, at.path, at.seq)
        return {"text": old.text, "revision": old.revision, "readOnly": True}
    workspace, path = at.workspace, at.path
    f = await session.shared.store.read(workspace, path, revision)
    if revision is None:
        session.read_revisions[uri] = Served(f.revision, content_hash(f.text))
    session.shared.remember(workspace, path, f.revision, f.text)
    return {"text": f.text, "revision": f.revision}


async def log(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/log")
    limit = _int(p, "limit", optional=True) or LOG_LIMIT_DEFAULT
    if limit > LOG_LIMIT_MAX:
        raise InvalidInput(f"limit must be at most {LOG_LIMIT_MAX}")
    workspace, path = _workspace(p), _str(p, "path", optional=True)
    if path:
        may(session, 1, workspace, path)
    before_seq = _int(p, "beforeSeq", optional=True)  # paging: the changesets before this seq
    out = []
    for cs in await session.shared.store.log(workspace, path, limit=limit, before_seq=before_seq):
        item = changeset_json(cs)
        for f in item["files"]:
            f.pop("uri", None)
            f.pop("oldUri", None)
        out.append(item)
    return out


# -- writing ---------------------------------------------------------------------------------


async def check(session: Session, params: Any) -> Any:
    """Findings (ruff, tree-sitter syntax) as `dbcode check --json` gives them.

    ``{uri, text?, revision?}``: of one file — ``text`` before it is written, else the given or
    current revision — answered ``{uri, revision, diagnostics, notChecked}`` (``revision`` null
    for a text; ``notChecked`` the reason when the file could not be analysed). ``{workspace}``:
    of every file at the current seq, answered ``{workspace, seq, files, diagnostics, skipped:
    {path: why}}``.
    """
    p = _obj(params, "dbcode/check")
    shared = session.shared
    if p.get("uri") is None:
        workspace = _workspace(p)
        report = await check_workspace(shared.store, shared.analyzer.ruff, workspace)
        return {
            "workspace": workspace,
            "seq": report.seq,
            "files": len(report.texts),
            "diagnostics": [finding_json(f, d) for f, ds in report.items() for d in ds],
            "skipped": dict(sorted(report.skipped.items())),
        }
    uri = _str(p, "uri")
    at = parse_doc_uri(uri)  # a current or an @SEQ document: both can be checked
    workspace, path = at.workspace, at.path
    text = _str(p, "text", optional=True)
    revision = _int(p, "revision", optional=True)
    if text is not None:
        if revision is not None:
            raise InvalidInput("give 'text' or 'revision', not both")
        validate.check_text(text, path, shared.store.content_bytes_max)
    else:
        if revision == 0:
            raise InvalidInput("revision must be >= 1")
        got = await read(session, uri, revision)
        text, revision = got["text"], got["revision"]
    try:
        found = await check_text(shared.store, shared.analyzer.ruff, workspace, path, text)
    except AnalysisError as exc:
        return {"uri": uri, "revision": revision, "diagnostics": [], "notChecked": str(exc)}
    return {
        "uri": uri,
        "revision": revision,
        "diagnostics": [finding_json(path, d) for d in found],
        "notChecked": None,
    }


async def write_file(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/writeFile")
    return await session.commits.write_file(
        _str(p, "uri"), _str(p, "text"), _int(p, "baseRevision", optional=True), _meta(p)
    )


async def commit(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/commit")
    workspace = _workspace(p)
    meta = _meta(p)
    changes = p.get("changes")
    if not isinstance(changes, list) or not changes:
        raise InvalidInput("parameter 'changes' must be a non-empty list")
    checked = []
    for ch in changes:
        c = _obj(ch, "a change")
        if "text" in c and c["text"] is not None:
            _str(c, "text")
        checked.append(
            {
                "uri": _str(c, "uri"),
                "text": c.get("text"),
                "baseRevision": _int(c, "baseRevision", optional=True),
            }
        )
    return await session.commits.commit(workspace, _str(p, "message", optional=True), checked, meta)


# -- history ---------------------------------------------------------------------------------


async def blame(session: Session, params: Any) -> Any:
    """{uri, revision?} -> [{startLine, endLine, seq, revision, path, agent, time, message,
    meta}], lines 0-based inclusive (SPEC: History). Without a revision: the @seq of the URI,
    else the base of the buffer open in this session, else the current revision."""
    p = _obj(params, "dbcode/blame")
    uri = _str(p, "uri")
    rev = p.get("revision")
    if rev is not None and (not isinstance(rev, int) or isinstance(rev, bool) or rev < 1):
        raise InvalidInput("parameter 'revision' must be an integer >= 1")
    store = session.shared.store
    at = parse_doc_uri(uri)
    may(session, 1, at.workspace, at.path)
    target = await target_of(store, session.docs, uri, rev)
    runs = await store.blame(target.workspace, target.path, target.revision)
    return [blame_json(r, line_base=0) for r in runs]


# -- subscriptions ---------------------------------------------------------------------------


async def subscribe(session: Session, params: Any) -> Any:
    """Changesets (``dbcode/didCommit``) after ``sinceSeq``, review events
    (``dbcode/didComment``) after ``sinceCommentSeq`` (each by default: from now on), and
    ``dbcode/didChangePresence`` at every change of claims or presence. Subscribing again
    replaces the workspace's subscription."""
    p = _obj(params, "dbcode/subscribe")
    workspace = _workspace(p)
    since = _int(p, "sinceSeq", optional=True)
    since_comment = _int(p, "sinceCommentSeq", optional=True)
    store, client = session.shared.store, session.client
    head = await store.head(workspace)
    comment_head = await store.review_head(workspace)
    old = session.subscriptions.pop(workspace, None)
    if old:
        old.cancel()
    start = head if since is None else since
    run = session.tasks.run
    session.subscriptions[workspace] = Subscription(
        commits=run(_notify_commits(session, workspace, start)),
        comments=run(
            notify_comments(
                store,
                client,
                workspace,
                comment_head if since_comment is None else since_comment,
                filtered=session.account is not None,
            )
        ),
        presence=run(notify_presence(store, client, workspace)),
    )
    return {"seq": head, "commentSeq": comment_head}


async def _notify_commits(session: Session, workspace: str, since: int) -> None:
    await asyncio.sleep(0)  # the subscribe response goes out first
    async for cs in session.shared.store.subscribe(workspace, since):
        if session.closed:
            return
        if session.account is not None:  # the hub reads as owner: only what it may read
            files = tuple(f for f in cs.files if readable(session, workspace, f.path))
            if not files:
                continue
            cs = dataclasses.replace(cs, files=files)
        session.client.notify("dbcode/didCommit", changeset_json(cs))


async def unsubscribe(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/unsubscribe")
    sub = session.subscriptions.pop(_workspace(p), None)
    if sub:
        sub.cancel()
    return None


# -- the session -----------------------------------------------------------------------------


async def configure(session: Session, params: Any) -> Any:
    """Change agent and/or mode of this session: {agent?, mode?}."""
    p = _obj(params, "dbcode/configure")
    agent = _str(p, "agent", optional=True)
    mode = _str(p, "mode", optional=True)
    if agent is not None and not 0 < len(agent) <= AGENT_CHARS_MAX:
        raise InvalidInput(f"agent must be 1-{AGENT_CHARS_MAX} characters")
    if mode is not None and mode not in ("save", "live"):
        raise InvalidInput("mode must be 'save' or 'live'")
    if agent is not None and session.account is not None and agent != session.account.name:
        raise InvalidInput(
            f"this session's agent is its token's ({session.account.name}): it cannot be changed"
        )
    if agent is not None:
        session.identity.agent = agent
    if mode is not None:
        session.identity.mode = mode  # type: ignore[assignment]
    if agent is not None or mode is not None:
        await session.coordination.identity_changed()
    return {"agent": session.identity.agent, "mode": session.identity.mode}
