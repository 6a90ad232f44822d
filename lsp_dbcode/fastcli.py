"""The CLI's fast path: ``cat``, ``ls``, ``write``, ``log``, ``watch`` and ``check`` as
requests to the shared language server (server/relay.py), importing only the standard library.

An agent calls these hundreds of times a task; importing psycopg alone costs more than starting
Python, so instead of opening the database itself the command attaches to the ``dbcode serve
--unix`` process that stdio sessions share (starting it when none runs, exactly as the relay
does: same key, lock and start), speaks LSP to it over the socket with the same core as
lsp_dbcode.client (rpc.py, framing.py), prints what commands.py would print, and exits.

:func:`run` answers None when the fast path cannot be used, and cli.py then takes the direct
path (commands.py): ``DBCODE_CLI_DIRECT=1``; no unix sockets; a socket directory that cannot be
used (not ours, path too long); and arguments whose error the direct path words (a revision,
limit or seq out of range), so that messages stay exactly the same.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import socket
import sys
from collections import deque
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from .cli import EXIT_CLAIMED, EXIT_ERROR, EXIT_OK, fail, fail_conflict, interrupted, stdout_gone
from .framing import FrameSplitter, FramingError
from .rpc import (
    REQUEST_TIMEOUT_S,
    Conflict,
    ConnectionLost,
    ServerError,
    error_from,
    initialize_params,
    make_uri,
    notification,
    request,
    response,
)

CLAIMED_CODE = 423  # the server's JSON-RPC error for a change inside an exclusive claim
FAST_COMMANDS = frozenset({"cat", "ls", "write", "log", "watch", "check"})
DIRECT_ENV = "DBCODE_CLI_DIRECT"
# As store/store.py (a test holds them equal; importing it would import psycopg).
LOG_LIMIT_DEFAULT = 50
LOG_LIMIT_MAX = 10_000
RECV_BYTES = 256 * 1024
NOTIFICATIONS_MAX = 10_000  # buffered while waiting for an answer (watch reads them after)


class Conn:
    """A blocking LSP session over the shared server's socket."""

    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self.splitter = FrameSplitter()
        self.splitter.feed(leftover)
        self.next_id = 1
        self.init_id = 0  # the pipelined initialize's id
        self.notifications: deque[dict[str, Any]] = deque(maxlen=NOTIFICATIONS_MAX)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionLost(f"the shared language server went away ({exc})") from None

    def message(self, timeout_s: float | None) -> dict[str, Any]:
        """The next message, waiting at most ``timeout_s`` (None: forever)."""
        while True:
            try:
                body = self.splitter.next_body()
            except FramingError as exc:
                raise ConnectionLost(f"the shared language server sent garbage: {exc}") from None
            if body is not None:
                msg = json.loads(body)
                if isinstance(msg, dict):
                    return msg
                continue
            self.sock.settimeout(timeout_s)
            try:
                data = self.sock.recv(RECV_BYTES)
            except TimeoutError:
                raise ConnectionLost(
                    f"the shared language server did not answer within {timeout_s:g} s"
                ) from None
            except OSError as exc:
                raise ConnectionLost(f"the shared language server went away ({exc})") from None
            if not data:
                raise ConnectionLost("the shared language server closed the connection")
            self.splitter.feed(data)

    def start(self, method: str, params: Any) -> int:
        msg_id = self.next_id
        self.next_id += 1
        self.send(request(msg_id, method, params))
        return msg_id

    def wait(self, msg_id: int, timeout_s: float = REQUEST_TIMEOUT_S) -> Any:
        while True:
            msg = self.message(timeout_s)
            if "method" in msg:
                if "id" in msg:  # a request of the server's: we open no documents
                    self.send(response(msg["id"], None))
                else:
                    self.notifications.append(msg)
                continue
            if msg.get("id") != msg_id:
                continue
            if "error" in msg:
                raise error_from(msg["error"])
            return msg.get("result")

    def call(self, method: str, params: Any, timeout_s: float = REQUEST_TIMEOUT_S) -> Any:
        return self.wait(self.start(method, params), timeout_s)

    def notices(self, method: str) -> Iterator[dict[str, Any]]:
        """Notifications of ``method``, as they come, forever."""
        while True:
            while self.notifications:
                msg = self.notifications.popleft()
                if msg.get("method") == method:
                    yield msg.get("params") or {}
            msg = self.message(None)
            if "method" in msg and "id" not in msg:
                self.notifications.append(msg)
            elif "id" in msg and "method" in msg:
                self.send(response(msg["id"], None))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def open_session(args: argparse.Namespace) -> Conn | None:
    """An initialized session with the shared server; None when it cannot be used here."""
    if os.environ.get(DIRECT_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    from .cli import token_of

    if token_of(args):  # until the shared server's session carries the token: direct path
        return None
    from .attach import RelayError, shared_relay, unix_sockets_usable

    if not unix_sockets_usable():
        return None
    try:
        relay = shared_relay(args.database_url, args.agent)
    except RelayError:
        return None  # the socket directory cannot be used: the direct path
    try:
        attached = relay.attach()
    except RelayError as exc:  # e.g. the database is unreachable: the server's own message
        msg = str(exc)
        fail(msg.removeprefix("dbcode: "))
    conn = Conn(attached.sock, attached.leftover)
    # Pipelined: the server handles them in order, so no round trip is spent on initialize.
    init = conn.start("initialize", initialize_params(args.agent))
    conn.send(notification("initialized", {}))
    conn.init_id = init
    return conn


def _initialized(conn: Conn) -> None:
    conn.wait(conn.init_id)


# -- the commands (output exactly as commands.py) -------------------------------------------


def _when(iso: str) -> str:
    from datetime import datetime

    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")


def cmd_ls(conn: Conn, args: argparse.Namespace) -> int:
    _initialized(conn)
    files = conn.call("dbcode/listFiles", {"workspace": args.workspace, "prefix": args.prefix})
    out = []
    for f in files:
        out.append(
            f"{f['revision']:>5}  {f['size']:>9}  {f['updatedBy']:<20}  "
            f"{_when(f['updatedAt'])}  {f['path']}\n"
        )
    sys.stdout.write("".join(out))
    return EXIT_OK


def cmd_cat(conn: Conn, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"uri": make_uri(args.workspace, args.path)}
    if args.rev is not None:
        params["revision"] = args.rev
    _initialized(conn)
    got = conn.call("dbcode/readFile", params)
    sys.stdout.buffer.write(got["text"].encode("utf-8"))
    sys.stdout.flush()
    return EXIT_OK


def cmd_write(conn: Conn, args: argparse.Namespace) -> int:
    from .store import validate

    validate.check_workspace(args.workspace)
    validate.check_path(args.path)
    data = sys.stdin.buffer.read()
    text = validate.decode_content(data, f"stdin for {args.path}", validate.content_bytes_max())
    uri = make_uri(args.workspace, args.path)
    _initialized(conn)
    res = conn.call(
        "dbcode/commit",
        {
            "workspace": args.workspace,
            "message": args.message,
            "changes": [{"uri": uri, "text": text, "baseRevision": args.base}],
        },
    )
    rev = res["revisions"][uri]
    for c in res.get("warnings") or []:  # others' non-exclusive claims: as the direct path says
        note = f": {c['note']}" if c.get("note") else ""
        until = datetime.fromisoformat(c["expiresAt"]).strftime("%H:%M:%S %Z")
        where = args.path if "range" not in c else f"{args.path} (a range of it)"
        sys.stderr.write(
            f"warning: {where} is claimed by {c['agent']}{note} (claim {c['id']}, until {until})\n"
        )
    sys.stdout.write(f"{args.workspace}/{args.path}: revision {rev} (seq {res['seq']})\n")
    sys.stdout.flush()
    found = conn.call("dbcode/check", {"uri": uri, "revision": rev})
    if found.get("notChecked"):
        sys.stderr.write(f"{args.path}: not checked: {found['notChecked']}\n")
        return EXIT_OK
    _report_problems(args.path, rev, found["diagnostics"])
    return EXIT_OK


def _problem_line(d: dict[str, Any]) -> str:
    code = f"{d['code']} " if d.get("code") else ""
    return f"{d['path']}:{d['line']}:{d['column']}: {code}{d['message']}"


def _report_problems(path: str, rev: int, problems: list[dict[str, Any]], shown: int = 5) -> None:
    """As commands._report_problems."""
    if not problems:
        sys.stderr.write(f"{path} revision {rev}: no problems\n")
        return
    errors = sum(1 for d in problems if d["severity"] == "error")
    sys.stderr.write(
        f"{path} revision {rev}: {len(problems)} problem(s)"
        + (f", {errors} error(s)" if errors else "")
        + "\n"
    )
    for d in problems[:shown]:
        sys.stderr.write("  " + _problem_line(d) + "\n")
    if len(problems) > shown:
        sys.stderr.write(f"  ... and {len(problems) - shown} more (dbcode check)\n")


def cmd_check(conn: Conn, args: argparse.Namespace) -> int:
    _initialized(conn)
    report = conn.call("dbcode/check", {"workspace": args.workspace})
    found = report["diagnostics"]
    if args.json:
        sys.stdout.write(json.dumps(found, ensure_ascii=False, indent=1) + "\n")
    else:
        for d in found:
            sys.stdout.write(_problem_line(d) + "\n")
        errors = sum(1 for d in found if d["severity"] == "error")
        sys.stderr.write(
            f"{report['workspace']} at seq {report['seq']}: {report['files']} files, "
            f"{len(found)} problem(s), {errors} error(s)\n"
        )
    for path, why in sorted(report["skipped"].items()):
        sys.stderr.write(f"not checked: {path}: {why}\n")
    return EXIT_ERROR if any(d["severity"] == "error" for d in found) else EXIT_OK


def _changeset_json(workspace: str, cs: dict[str, Any]) -> dict[str, Any]:
    """dbcode/log's changeset as changeset_json (uris.py) gives it: with the files' URIs."""
    files = []
    for f in cs["files"]:
        item = {
            "path": f["path"],
            "uri": make_uri(workspace, f["path"]),
            "revision": f["revision"],
            "kind": f["kind"],
        }
        if f.get("oldPath") is not None:
            item["oldPath"] = f["oldPath"]
            item["oldUri"] = make_uri(workspace, f["oldPath"])
        files.append(item)
    return {
        "workspace": cs.get("workspace", workspace),
        "seq": cs["seq"],
        "agent": cs["agent"],
        "message": cs["message"],
        "time": cs["time"],
        "files": files,
        "meta": cs.get("meta"),
    }


def _print_changeset(cs: dict[str, Any], as_json: bool) -> None:
    """As commands._print_changeset."""
    if as_json:
        sys.stdout.write(json.dumps(cs, ensure_ascii=False) + "\n")
    else:
        msg = f"  {cs['message']}" if cs["message"] else ""
        lines = [f"seq {cs['seq']}  {_when(cs['time'])}  {cs['agent']}{msg}\n"]
        if cs.get("meta"):
            lines.append(f"    meta {json.dumps(cs['meta'], ensure_ascii=False)}\n")
        shown = cs["files"][:20]
        for f in shown:
            extra = f" (from {f['oldPath']})" if f.get("oldPath") else ""
            lines.append(f"    {f['kind']:<7} {f['path']}{extra}  r{f['revision']}\n")
        if len(cs["files"]) > len(shown):
            lines.append(f"    ... and {len(cs['files']) - len(shown)} more files\n")
        sys.stdout.write("".join(lines))
    sys.stdout.flush()


def cmd_log(conn: Conn, args: argparse.Namespace) -> int:
    limit = LOG_LIMIT_DEFAULT if args.limit is None else args.limit
    params: dict[str, Any] = {"workspace": args.workspace, "path": args.path}
    params["limit"] = limit + 1 if args.limit is None else limit  # one more: is there more?
    if args.before is not None:
        params["beforeSeq"] = args.before
    _initialized(conn)
    found = conn.call("dbcode/log", params)
    more = len(found) > limit
    found = found[:limit]
    for cs in found:
        _print_changeset(_changeset_json(args.workspace, cs), args.json)
    if more and args.limit is None:
        rest = ["dbcode", "log", args.workspace] + ([args.path] if args.path else [])
        rest += ["--json"] if args.json else []
        rest += ["--before", str(found[-1]["seq"])]
        sys.stderr.write(
            f"dbcode: showing the newest {limit} changesets; older ones: {shlex.join(rest)}"
            f" (or --limit up to {LOG_LIMIT_MAX})\n"
        )
    return EXIT_OK


def cmd_watch(conn: Conn, args: argparse.Namespace) -> int:
    from .store import validate

    validate.check_workspace(args.workspace)
    _initialized(conn)
    got = conn.call("dbcode/subscribe", {"workspace": args.workspace, "sinceSeq": args.since})
    since = args.since if args.since is not None else got["seq"]
    if not args.json:
        sys.stderr.write(f"watching {args.workspace} after seq {since} (Ctrl-C to stop)\n")
    count = 0
    for cs in conn.notices("dbcode/didCommit"):
        if cs.get("workspace") != args.workspace:
            continue
        _print_changeset(cs, args.json)
        count += 1
        if args.count is not None and count >= args.count:
            break
    return EXIT_OK


HANDLERS = {
    "ls": cmd_ls,
    "cat": cmd_cat,
    "write": cmd_write,
    "log": cmd_log,
    "watch": cmd_watch,
    "check": cmd_check,
}


def _direct_words_it(args: argparse.Namespace) -> bool:
    """Arguments out of range: the direct path's checks word the error (exactly as now); and
    history's arguments (``cat --at``, ``write --meta``), which the direct path serves."""
    if getattr(args, "meta", None) is not None:
        return True
    if args.command == "cat":
        return (args.rev is not None and args.rev < 1) or args.at is not None
    if args.command == "log":
        limit_bad = args.limit is not None and not 1 <= args.limit <= LOG_LIMIT_MAX
        return limit_bad or (args.before is not None and args.before < 1)
    if args.command == "watch":
        return args.since is not None and args.since < 0
    if args.command == "write":
        return args.base is not None and args.base < 0
    return False


def run(args: argparse.Namespace) -> int | None:
    """Run ``args.command`` through the shared server; None: take the direct path."""
    if args.command not in FAST_COMMANDS or _direct_words_it(args):
        return None
    try:
        conn = open_session(args)
        if conn is None:
            return None
        try:
            return HANDLERS[args.command](conn, args)
        finally:
            conn.close()
    except Conflict as exc:
        fail_conflict(exc.message, exc.current_revision)
    except ServerError as exc:  # 423: a change inside another agent's exclusive claim
        fail(exc.message, EXIT_CLAIMED if exc.code == CLAIMED_CODE else EXIT_ERROR)
    except ConnectionLost as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        return interrupted()
    except BrokenPipeError:
        return stdout_gone()
    except Exception as exc:  # InvalidInput of store/validate.py (standard library only)
        from .store.errors import StoreError

        if isinstance(exc, StoreError):
            fail(str(exc))
        raise
