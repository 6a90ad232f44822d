"""The ``dbcode`` command (SPEC.md, Command line).

Exit codes: 0 done; 1 error (one line on stderr, nothing written); 3 conflict (stale --base).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from . import __version__

# The store (psycopg) is imported by _import_store(), not here: `dbcode serve` over stdio is a
# relay (server/relay.py) that must start fast and small, without psycopg, pygls or asyncio.
if TYPE_CHECKING:
    from .store import (
        Change,
        Conflict,
        InvalidInput,
        NotFound,
        Store,
        StoreError,
        resolve_dsn,
        validate,
    )
    from .store.model import Changeset
    from .uris import changeset_json


def _import_store() -> None:
    global Change, Conflict, InvalidInput, NotFound, Store, StoreError, resolve_dsn, validate
    global Changeset, changeset_json
    from .store import (
        Change,
        Conflict,
        InvalidInput,
        NotFound,
        Store,
        StoreError,
        resolve_dsn,
        validate,
    )
    from .store.model import Changeset
    from .uris import changeset_json


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFLICT = 3
IMPORT_BATCH_FILES = 2000


class CliError(Exception):
    """An error to show as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def default_agent(explicit: str | None = None) -> str:
    """--agent, else DBCODE_AGENT, else user@host."""
    if explicit:
        return explicit
    env = os.environ.get("DBCODE_AGENT")
    if env:
        return env
    try:
        user = getpass.getuser()
    except Exception:
        user = "user"
    return f"{user}@{socket.gethostname()}"


class Progress:
    """A one-line progress bar on stderr, drawn only on a terminal."""

    def __init__(self, label: str, total: int, stream: TextIO = sys.stderr) -> None:
        self.label = label
        self.total = max(total, 1)
        self.stream = stream
        self.enabled = stream.isatty()
        self._last = 0.0

    def update(self, done: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        width = 30
        filled = int(width * done / self.total)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total}")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.update(self.total, force=True)
            self.stream.write("\n")
            self.stream.flush()


# -- commands -------------------------------------------------------------------------------


async def cmd_ls(store: Store, args: argparse.Namespace) -> int:
    files = await store.list_files(args.workspace, args.prefix or "")
    out = sys.stdout
    for f in files:
        when = f.updated_at.strftime("%Y-%m-%d %H:%M:%S")
        out.write(f"{f.revision:>5}  {f.size:>9}  {f.updated_by:<20}  {when}  {f.path}\n")
    return EXIT_OK


async def cmd_workspaces(store: Store, args: argparse.Namespace) -> int:
    for w in await store.workspaces():
        sys.stdout.write(f"{w.name}\t{w.files} files\tseq {w.head_seq}\n")
    return EXIT_OK


async def cmd_cat(store: Store, args: argparse.Namespace) -> int:
    f = await store.read(args.workspace, args.path, args.rev)
    sys.stdout.buffer.write(f.text.encode("utf-8"))
    sys.stdout.flush()
    return EXIT_OK


async def cmd_write(store: Store, args: argparse.Namespace) -> int:
    validate.check_workspace(args.workspace)
    validate.check_path(args.path)
    data = sys.stdin.buffer.read()
    text = validate.decode_content(data, f"stdin for {args.path}", store.content_bytes_max)
    from .analysis import AnalysisError, RuffEngine, is_python_path
    from .check import check_text, format_for_commit

    async with RuffEngine() as ruff:
        if is_python_path(args.path):
            try:
                configs = await store.config_files(args.workspace)
            except NotFound:
                configs = {}
            text = await format_for_commit(ruff, configs, args.path, text)
        res = await store.write(
            args.workspace,
            args.path,
            text,
            agent=args.agent,
            base=args.base,
            message=args.message,
        )
        rev = res.revisions[args.path]
        sys.stdout.write(f"{args.workspace}/{args.path}: revision {rev} (seq {res.seq})\n")
        sys.stdout.flush()
        try:
            problems = await check_text(store, ruff, args.workspace, args.path, text)
        except AnalysisError as exc:
            sys.stderr.write(f"{args.path}: not checked: {exc}\n")
            return EXIT_OK
    _report_problems(args.path, rev, text, problems)
    return EXIT_OK


def _problem_line(path: str, d: Any) -> str:
    code = f"{d.code} " if d.code else ""
    return f"{path}:{d.span.start.line + 1}:{d.span.start.col + 1}: {code}{d.message}"


def _report_problems(path: str, rev: int, text: str, problems: list[Any], shown: int = 5) -> None:
    """Tell a CLI writer what an editor would show: the count and the first few."""
    if not problems:
        sys.stderr.write(f"{path} revision {rev}: no problems\n")
        return
    errors = sum(1 for d in problems if d.severity == "error")
    sys.stderr.write(
        f"{path} revision {rev}: {len(problems)} problem(s)"
        + (f", {errors} error(s)" if errors else "")
        + "\n"
    )
    for d in problems[:shown]:
        sys.stderr.write("  " + _problem_line(path, d) + "\n")
    if len(problems) > shown:
        sys.stderr.write(f"  ... and {len(problems) - shown} more (dbcode check)\n")


async def cmd_check(store: Store, args: argparse.Namespace) -> int:
    from .analysis import RuffEngine
    from .check import check_workspace

    async with RuffEngine() as ruff:
        report = await check_workspace(store, ruff, args.workspace)
    if args.json:
        out = []
        for path, found in report.items():
            for d in found:
                out.append(
                    {
                        "path": path,
                        "line": d.span.start.line + 1,
                        "column": d.span.start.col + 1,
                        "endLine": d.span.end.line + 1,
                        "endColumn": d.span.end.col + 1,
                        "severity": d.severity,
                        "source": d.source,
                        "code": d.code,
                        "message": d.message,
                        "url": d.code_url,
                    }
                )
        sys.stdout.write(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    else:
        for path, found in report.items():
            for d in found:
                sys.stdout.write(_problem_line(path, d) + "\n")
        sys.stderr.write(
            f"{report.workspace} at seq {report.seq}: {len(report.texts)} files, "
            f"{report.total} problem(s), {report.errors} error(s)\n"
        )
    for path, why in sorted(report.skipped.items()):
        sys.stderr.write(f"not checked: {path}: {why}\n")
    return EXIT_ERROR if report.errors else EXIT_OK


async def cmd_rm(store: Store, args: argparse.Namespace) -> int:
    await store._workspace_id(args.workspace)
    res = await store.commit(
        args.workspace,
        [Change.delete(args.path, args.base)],
        agent=args.agent,
        message=args.message,
    )
    sys.stdout.write(f"deleted {args.workspace}/{args.path} (seq {res.seq})\n")
    return EXIT_OK


async def cmd_mv(store: Store, args: argparse.Namespace) -> int:
    await store._workspace_id(args.workspace)
    res = await store.commit(
        args.workspace,
        [Change.rename(args.old, args.new, args.base)],
        agent=args.agent,
        message=args.message,
    )
    sys.stdout.write(f"renamed {args.old} -> {args.new} in {args.workspace} (seq {res.seq})\n")
    return EXIT_OK


def _print_changeset(cs: Changeset, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(changeset_json(cs), ensure_ascii=False) + "\n")
    else:
        when = cs.time.strftime("%Y-%m-%d %H:%M:%S")
        msg = f"  {cs.message}" if cs.message else ""
        sys.stdout.write(f"seq {cs.seq}  {when}  {cs.agent}{msg}\n")
        shown = cs.files[:20]
        for f in shown:
            extra = f" (from {f.old_path})" if f.old_path else ""
            sys.stdout.write(f"    {f.kind:<7} {f.path}{extra}  r{f.revision}\n")
        if len(cs.files) > len(shown):
            sys.stdout.write(f"    ... and {len(cs.files) - len(shown)} more files\n")
    sys.stdout.flush()


async def cmd_log(store: Store, args: argparse.Namespace) -> int:
    for cs in await store.log(args.workspace, args.path, limit=args.limit):
        _print_changeset(cs, args.json)
    return EXIT_OK


async def cmd_watch(store: Store, args: argparse.Namespace) -> int:
    validate.check_workspace(args.workspace)
    since = args.since if args.since is not None else await store.head(args.workspace)
    if since < 0:
        raise InvalidInput(f"invalid --since {since}: must be >= 0")
    if not args.json:
        sys.stderr.write(f"watching {args.workspace} after seq {since} (Ctrl-C to stop)\n")
    count = 0
    async for cs in store.subscribe(args.workspace, since):
        _print_changeset(cs, args.json)
        count += 1
        if args.count is not None and count >= args.count:
            break
    return EXIT_OK


async def cmd_import(store: Store, args: argparse.Namespace) -> int:
    from .fs import Skipped, read_for_import, walk_tree

    validate.check_workspace(args.workspace)
    root = Path(args.dir)
    if not root.is_dir():
        raise CliError(f"not a directory: {root}")
    t0 = time.monotonic()
    entries = list(walk_tree(root))
    skipped = Skipped()
    progress = Progress("importing", len(entries))

    def read() -> Iterator[tuple[str, str, bytes]]:
        """Files as they are read: the store streams them into its COPY meanwhile. (Reading
        with a pool of threads measured twice as slow: the GIL.)"""
        for i, (rel, entry) in enumerate(entries):
            got = read_for_import(rel, entry, skipped, store.content_bytes_max)
            progress.update(i + 1)
            if got is not None:
                yield rel, got[0], got[1]

    try:
        res = await store.import_files(
            args.workspace, read(), agent=args.agent, message=args.message or f"import {root}"
        )
    except InvalidInput as exc:
        if str(exc) != "nothing to import":
            raise
        raise CliError(f"nothing to import from {root}: no text files found") from None
    finally:
        progress.finish()
        for reason, paths in vars(skipped).items():
            if paths:
                names = ", ".join(paths[:5]) + (", ..." if len(paths) > 5 else "")
                sys.stderr.write(
                    f"skipped {len(paths)} {reason.replace('_', ' ')} file(s): {names}\n"
                )
    took = time.monotonic() - t0
    if res.seq is None:
        sys.stdout.write(
            f"{args.workspace}: nothing changed ({res.unchanged} files unchanged, {took:.2f}s)\n"
        )
    else:
        sys.stdout.write(
            f"{args.workspace}: imported {res.created} new, {res.updated} updated, "
            f"{res.unchanged} unchanged files as seq {res.seq} in {took:.2f}s"
            f" ({skipped.total()} skipped)\n"
        )
    return EXIT_OK


async def cmd_export(store: Store, args: argparse.Namespace) -> int:
    from .fs import ExportDir

    validate.check_workspace(args.workspace)
    target = ExportDir(Path(args.dir))
    head, files = await store.snapshot(args.workspace)
    progress = Progress("writing", len(files))
    for i, f in enumerate(files):
        target.write(f.path, f.text)
        progress.update(i + 1)
    progress.finish()
    sys.stderr.write(f"exported {len(files)} files of {args.workspace} at seq {head}\n")
    if not args.watch:
        return EXIT_OK
    sys.stderr.write(f"watching {args.workspace} for changes (Ctrl-C to stop)\n")
    async for cs in store.subscribe(args.workspace, head):
        for fc in cs.files:
            if fc.kind == "delete":
                target.remove(fc.path)
                continue
            text = (await store.read(args.workspace, fc.path, fc.revision)).text
            target.write(fc.path, text)
            if fc.kind == "rename" and fc.old_path:
                target.remove(fc.old_path)
        sys.stderr.write(f"seq {cs.seq}: {len(cs.files)} file(s) by {cs.agent}\n")
    return EXIT_OK


async def cmd_db(store: Store, args: argparse.Namespace) -> int:
    from .store import redact

    sys.stdout.write(redact(store.dsn) + "\n")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import relay

    if not relay.standalone_requested(args):
        return relay.run(args)  # stdio: attach to the shared server
    _import_store()
    from .server.main import serve

    return serve(args)


# -- plumbing -------------------------------------------------------------------------------

Handler = Callable[["Store", argparse.Namespace], Awaitable[int]]


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit code 1, like every other error."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see '{self.prog} --help')")


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {value!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="dbcode",
        description="A codebase in PostgreSQL, served over the Language Server Protocol.",
    )
    p.add_argument("--version", action="version", version=f"dbcode {__version__}")
    p.add_argument(
        "--database-url",
        help="PostgreSQL DSN (default: $DBCODE_DATABASE_URL, "
        "else the embedded server under $DBCODE_HOME)",
    )
    p.add_argument(
        "--agent", help="who authors the changes (default: $DBCODE_AGENT, else user@host)"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(name: str, handler: Any, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(handler=handler)
        return sp

    sp = add("serve", None, "run the language server (stdio by default)")
    group = sp.add_mutually_exclusive_group()
    group.add_argument("--tcp", metavar="HOST:PORT", help="listen for LSP sessions over TCP")
    group.add_argument("--ws", metavar="HOST:PORT", help="listen for LSP sessions over WebSocket")
    group.add_argument("--stdio", action="store_true", help="LSP over stdin/stdout (the default)")
    group.add_argument(
        "--unix",
        metavar="PATH",
        help="listen for LSP sessions of stdio relays on this unix socket (what stdio attaches to)",
    )
    sp.add_argument(
        "--standalone",
        action="store_true",
        help="stdio: run the session in this process instead of attaching to the shared server "
        "(also: DBCODE_SERVE_STANDALONE=1)",
    )
    sp.add_argument(
        "--idle-exit",
        metavar="SECONDS",
        type=_seconds,
        help="a shared server exits after this long without a session (default 60; 0: never)",
    )
    sp.add_argument("--spawned", action="store_true", help=argparse.SUPPRESS)
    sp.add_argument(
        "--log-file",
        help="write the server log here (stdio: the relay's own lines; a shared server logs "
        "next to its socket)",
    )
    sp.add_argument("--log-level", default="INFO")

    sp = add("import", cmd_import, "load a directory as one changeset (honours .gitignore)")
    sp.add_argument("dir")
    sp.add_argument("--workspace", "-w", required=True)
    sp.add_argument("--message", "-m")

    sp = add("export", cmd_export, "write the workspace out to a directory")
    sp.add_argument("workspace")
    sp.add_argument("dir")
    sp.add_argument("--watch", action="store_true", help="keep DIR in step with new changesets")

    sp = add("ls", cmd_ls, "list files with revision, size, last author")
    sp.add_argument("workspace")
    sp.add_argument("prefix", nargs="?")

    add("workspaces", cmd_workspaces, "list workspaces")

    sp = add("cat", cmd_cat, "print a file, or an old revision of it")
    sp.add_argument("workspace")
    sp.add_argument("path")
    sp.add_argument("--rev", type=int)

    sp = add("write", cmd_write, "store stdin as the file's new content")
    sp.add_argument("workspace")
    sp.add_argument("path")
    sp.add_argument("--base", type=int, help="the revision your text was based on (0 = new file)")
    sp.add_argument("--message", "-m")

    sp = add("rm", cmd_rm, "delete a file (one changeset)")
    sp.add_argument("workspace")
    sp.add_argument("path")
    sp.add_argument("--base", type=int)
    sp.add_argument("--message", "-m")

    sp = add("mv", cmd_mv, "rename a file (one changeset)")
    sp.add_argument("workspace")
    sp.add_argument("old")
    sp.add_argument("new")
    sp.add_argument("--base", type=int)
    sp.add_argument("--message", "-m")

    sp = add("log", cmd_log, "changesets, newest first")
    sp.add_argument("workspace")
    sp.add_argument("path", nargs="?")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--limit", "-n", type=int, default=50)

    sp = add("watch", cmd_watch, "stream changesets as they commit")
    sp.add_argument("workspace")
    sp.add_argument("--since", type=int, help="start after this seq (default: now)")
    sp.add_argument("--json", action="store_true", help="JSON lines")
    sp.add_argument("--count", type=int, help=argparse.SUPPRESS)

    sp = add("check", cmd_check, "lint every file of a workspace (exit 1 if any error)")
    sp.add_argument("workspace")
    sp.add_argument("--json", action="store_true")

    add("db", cmd_db, "print the DSN in use (starting the embedded server if needed)")
    return p


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    sys.stderr.write(f"dbcode: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


async def _run(handler: Handler, args: argparse.Namespace) -> int:
    dsn = resolve_dsn(args.database_url)
    async with Store(dsn, min_size=1, max_size=4) as store:
        return await handler(store, args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.agent_flag = args.agent
    args.agent = default_agent(args.agent)
    if args.command == "serve":
        return cmd_serve(args)
    _import_store()
    import asyncio

    try:
        return asyncio.run(_run(args.handler, args))
    except Conflict as exc:
        fail(f"{exc} (current revision {exc.current_revision}; re-read and retry)", EXIT_CONFLICT)
    except CliError as exc:
        fail(str(exc), exc.code)
    except NotFound as exc:
        fail(str(exc))
    except StoreError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            sys.stderr.write("\n")
        return 130
    except BrokenPipeError:
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
