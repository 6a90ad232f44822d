"""The ``dbcode/*`` requests (SPEC: Language server). Params arrive as plain JSON and are
checked here by hand (a clear JSON-RPC error for each bad one); results are plain JSON."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ...store import InvalidInput, validate
from ...store.store import LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX
from ...text.edits import content_hash
from ...uris import changeset_json, make_uri, parse_uri
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
    text is then known to be based on that revision."""
    workspace, path = parse_uri(uri)
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


async def write_file(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/writeFile")
    return await session.commits.write_file(
        _str(p, "uri"), _str(p, "text"), _int(p, "baseRevision", optional=True)
    )


async def commit(session: Session, params: Any) -> Any:
    p = _obj(params, "dbcode/commit")
    workspace = _workspace(p)
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
    return await session.commits.commit(workspace, _str(p, "message", optional=True), checked)


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
                store, client, workspace, comment_head if since_comment is None else since_comment
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
    if agent is not None:
        session.identity.agent = agent
    if mode is not None:
        session.identity.mode = mode  # type: ignore[assignment]
    return {"agent": session.identity.agent, "mode": session.identity.mode}
