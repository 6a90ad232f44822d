"""The ``dbcode`` commands that use the store (the CLI's arguments are in cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from .cli import (
    EXIT_CLAIMED,
    EXIT_ERROR,
    EXIT_OK,
    CliError,
    Progress,
    fail,
    fail_conflict,
    interrupted,
    stdout_gone,
    token_of,
)
from .store import (
    Change,
    Claim,
    Claimed,
    Conflict,
    InvalidInput,
    Store,
    StoreError,
    resolve_dsn,
    validate,
)
from .store.access import Agent, Forbidden, Unauthenticated, parse_grant, run_as
from .store.model import Changeset
from .store.store import LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX
from .uris import blame_json, changeset_json


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


def _meta(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--meta JSON``: a JSON object (checked before anything is written)."""
    raw = getattr(args, "meta", None)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise CliError(f"invalid --meta: not JSON ({exc})") from None
    validate.check_meta(meta)
    return dict(meta)


async def cmd_cat(store: Store, args: argparse.Namespace) -> int:
    if args.at is not None:
        f = await store.read_at(args.workspace, args.path, args.at)
    else:
        f = await store.read(args.workspace, args.path, args.rev)
    sys.stdout.buffer.write(f.text.encode("utf-8"))
    sys.stdout.flush()
    return EXIT_OK


async def cmd_write(store: Store, args: argparse.Namespace) -> int:
    validate.check_workspace(args.workspace)
    validate.check_path(args.path)
    meta = _meta(args)
    data = sys.stdin.buffer.read()
    text = validate.decode_content(data, f"stdin for {args.path}", store.content_bytes_max)
    from .analysis import AnalysisError, RuffEngine
    from .check import check_text
    from .commit import CommitPipeline, Write, standalone_formatter

    async with RuffEngine() as ruff:
        pipeline = CommitPipeline(store, standalone_formatter(store, ruff))
        done = await pipeline.commit(
            args.workspace,
            [Write(args.path, text, args.base)],
            agent=args.agent,
            message=args.message,
            meta=meta,
        )
        text = done.texts[args.path]
        rev = done.revisions[args.path]
        sys.stdout.write(f"{args.workspace}/{args.path}: revision {rev} (seq {done.seq})\n")
        sys.stdout.flush()
        _report_warnings(done.warnings)
        await _move_threads(store, args.workspace, [args.path])
        try:
            problems = await check_text(store, ruff, args.workspace, args.path, text)
        except AnalysisError as exc:
            sys.stderr.write(f"{args.path}: not checked: {exc}\n")
            return EXIT_OK
    _report_problems(args.path, rev, text, problems)
    return EXIT_OK


def _claim_where(c: Claim) -> str:
    if c.whole:
        return c.path
    if c.lines is not None:
        first, last = c.lines
        return f"{c.path}:{first}" + (f"-{last}" if last != first else "")
    return f"{c.path}[{c.start}:{c.end}]"


def _report_warnings(warnings: tuple[Claim, ...]) -> None:
    """A changeset touched other agents' non-exclusive claims: say so (it is committed)."""
    for c in warnings:
        note = f": {c.note}" if c.note else ""
        sys.stderr.write(
            f"warning: {_claim_where(c)} is claimed by {c.agent}{note}"
            f" (claim {c.id}, until {c.expires_at:%H:%M:%S %Z})\n"
        )


async def _move_threads(store: Store, workspace: str, paths: list[str]) -> None:
    """Move the review threads of what we committed now (their outdated events follow the
    changeset); a failure here is not the commit's."""
    try:
        await store.move_threads(workspace, paths)
    except StoreError as exc:
        sys.stderr.write(f"review threads not moved yet: {exc}\n")


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
    from .check import check_workspace, finding_json

    async with RuffEngine() as ruff:
        report = await check_workspace(store, ruff, args.workspace)
    if args.json:
        out = [finding_json(path, d) for path, found in report.items() for d in found]
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
    meta = _meta(args)
    await store._workspace_id(args.workspace)
    res = await store.commit(
        args.workspace,
        [Change.delete(args.path, args.base)],
        agent=args.agent,
        message=args.message,
        meta=meta,
    )
    sys.stdout.write(f"deleted {args.workspace}/{args.path} (seq {res.seq})\n")
    _report_warnings(res.warnings)
    await _move_threads(store, args.workspace, [args.path])
    return EXIT_OK


async def cmd_mv(store: Store, args: argparse.Namespace) -> int:
    meta = _meta(args)
    await store._workspace_id(args.workspace)
    res = await store.commit(
        args.workspace,
        [Change.rename(args.old, args.new, args.base)],
        agent=args.agent,
        message=args.message,
        meta=meta,
    )
    sys.stdout.write(f"renamed {args.old} -> {args.new} in {args.workspace} (seq {res.seq})\n")
    _report_warnings(res.warnings)
    await _move_threads(store, args.workspace, [args.old])
    return EXIT_OK


def _print_changeset(cs: Changeset, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(changeset_json(cs), ensure_ascii=False) + "\n")
    else:
        when = cs.time.strftime("%Y-%m-%d %H:%M:%S")
        msg = f"  {cs.message}" if cs.message else ""
        sys.stdout.write(f"seq {cs.seq}  {when}  {cs.agent}{msg}\n")
        if cs.meta:
            sys.stdout.write(f"    meta {json.dumps(cs.meta, ensure_ascii=False)}\n")
        shown = cs.files[:20]
        for f in shown:
            extra = f" (from {f.old_path})" if f.old_path else ""
            sys.stdout.write(f"    {f.kind:<7} {f.path}{extra}  r{f.revision}\n")
        if len(cs.files) > len(shown):
            sys.stdout.write(f"    ... and {len(cs.files) - len(shown)} more files\n")
    sys.stdout.flush()


async def cmd_log(store: Store, args: argparse.Namespace) -> int:
    limit = LOG_LIMIT_DEFAULT if args.limit is None else args.limit
    page = await store.log_page(args.workspace, args.path, limit=limit, before_seq=args.before)
    for cs in page.changesets:
        _print_changeset(cs, args.json)
    if page.more and args.limit is None:
        # Never in stdout (a script reading --json must get only changesets there).
        rest = ["dbcode", "log", args.workspace] + ([args.path] if args.path else [])
        rest += ["--json"] if args.json else []
        rest += ["--before", str(page.changesets[-1].seq)]
        sys.stderr.write(
            f"dbcode: showing the newest {limit} changesets; older ones: {shlex.join(rest)}"
            f" (or --limit up to {LOG_LIMIT_MAX})\n"
        )
    return EXIT_OK


async def cmd_blame(store: Store, args: argparse.Namespace) -> int:
    f = await store.read(args.workspace, args.path, args.rev)
    runs = await store.blame(args.workspace, args.path, f.revision)
    out = sys.stdout
    if args.json:
        for r in runs:
            out.write(json.dumps(blame_json(r, line_base=1), ensure_ascii=False) + "\n")
        out.flush()
        return EXIT_OK
    # str.splitlines also splits at \r and other separators; blame counts "\n" like git.
    lines = f.text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    width = len(str(len(lines)))
    for r in runs:
        when = r.time.strftime("%Y-%m-%d %H:%M:%S")
        where = f" {r.path}" if r.path != args.path else ""
        for n in range(r.start_line, r.end_line + 1):
            text = lines[n] if n < len(lines) else ""
            out.write(
                f"{r.seq:>6} r{r.revision:<4} {r.agent[:16]:<16} {when}{where} "
                f"{n + 1:>{width}}) {text}\n"
            )
    out.flush()
    return EXIT_OK


async def cmd_compact(store: Store, args: argparse.Namespace) -> int:
    progress = Progress("compacting", 1)

    def step(done: int, total: int) -> None:
        progress.total = max(total, 1)
        progress.update(done)

    t0 = time.monotonic()
    res = await store.compact(args.workspace, progress=step)
    progress.finish()
    sys.stdout.write(
        f"compacted {res.revisions} revision(s) of {res.paths} file(s): "
        f"{res.text_bytes} bytes of full text now stored in {res.stored_bytes} "
        f"in {time.monotonic() - t0:.1f}s\n"
    )
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
    _report_warnings(res.warnings)
    if res.seq is not None and res.updated:
        try:  # reading the open threads moves them onto the imported revisions
            await store.threads(args.workspace)
        except StoreError as exc:
            sys.stderr.write(f"review threads not moved yet: {exc}\n")
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


# -- review and coordination ----------------------------------------------------------------


async def cmd_comment(store: Store, args: argparse.Namespace) -> int:
    replacement = None
    kind = args.kind or ("suggestion" if args.suggest is not None else "note")
    if args.suggest is not None:
        if kind != "suggestion":
            raise CliError(f"--suggest makes a suggestion, not a {kind}")
        if args.suggest == "-":
            data = sys.stdin.buffer.read()
        else:
            try:
                data = Path(args.suggest).read_bytes()
            except OSError as exc:
                raise CliError(f"cannot read --suggest {args.suggest}: {exc.strerror}") from None
        replacement = validate.decode_content(data, "suggestion", store.content_bytes_max)
    elif kind == "suggestion":
        raise CliError("a suggestion needs its replacement: --suggest FILE (or - for stdin)")
    made = await store.comment(
        args.workspace,
        args.path,
        args.text,
        agent=args.agent,
        lines=args.lines,
        revision=args.rev,
        kind=kind,
        replacement=replacement,
    )
    sys.stdout.write(f"thread {made.thread} (comment {made.id})\n")
    return EXIT_OK


async def cmd_reply(store: Store, args: argparse.Namespace) -> int:
    cid = await store.reply(args.workspace, args.thread, args.text, agent=args.agent)
    sys.stdout.write(f"comment {cid} on thread {args.thread}\n")
    return EXIT_OK


async def cmd_resolve(store: Store, args: argparse.Namespace) -> int:
    changed = await store.resolve(
        args.workspace, args.thread, agent=args.agent, resolved=not args.reopen
    )
    state = "reopened" if args.reopen else "resolved"
    sys.stdout.write(f"thread {args.thread} {state}" + ("" if changed else " already") + "\n")
    return EXIT_OK


async def cmd_comments(store: Store, args: argparse.Namespace) -> int:
    from .store.review import thread_json

    threads = await store.threads(args.workspace, args.path, "all" if args.all else "open")
    out = sys.stdout
    for t in threads:
        if args.json:
            out.write(json.dumps(thread_json(t), ensure_ascii=False) + "\n")
            continue
        if t.lines is None:
            where = f"{t.path} (deleted)"
        else:
            first, last = t.lines
            where = f"{t.path}:{first}" + (f"-{last}" if last != first else "")
        flags = " outdated" if t.outdated else ""
        out.write(f"#{t.id}  {where}  {t.kind}  {t.state}{flags}  (revision {t.revision})\n")
        for c in t.comments:
            when = c.time.strftime("%Y-%m-%d %H:%M")
            body = c.text.replace("\n", "\n      ")
            out.write(f"    {c.agent}  {when}: {body}\n")
        if t.replacement is not None:
            shown = t.replacement.rstrip("\n").replace("\n", "\n    | ")
            out.write(f"    suggests:\n    | {shown}\n")
    if not args.json:
        sys.stderr.write(f"{len(threads)} thread(s)\n")
    return EXIT_OK


async def cmd_claim(store: Store, args: argparse.Namespace) -> int:
    made = await store.claim(
        args.workspace,
        args.path,
        agent=args.agent,
        lines=args.lines,
        note=args.note,
        exclusive=args.exclusive,
        ttl_s=args.ttl,
        claim_id=args.id,
    )
    sys.stdout.write(f"{made.id}\n")
    kind = "exclusive claim" if made.exclusive else "claim"
    sys.stderr.write(
        f"{kind} {made.id} on {_claim_where(made)} until"
        f" {made.expires_at:%Y-%m-%d %H:%M:%S %Z} (release: dbcode release"
        f" {args.workspace} {made.id})\n"
    )
    return EXIT_OK


async def cmd_release(store: Store, args: argparse.Namespace) -> int:
    await store.release(args.workspace, args.id, agent=args.agent)
    sys.stdout.write(f"released claim {args.id}\n")
    return EXIT_OK


async def cmd_claims(store: Store, args: argparse.Namespace) -> int:
    from .store.coordination import claim_json

    for c in await store.claims(args.workspace, args.path):
        if args.json:
            sys.stdout.write(json.dumps(claim_json(c), ensure_ascii=False) + "\n")
            continue
        kind = "exclusive" if c.exclusive else "shared"
        note = f"  {c.note}" if c.note else ""
        sys.stdout.write(
            f"{c.id:>5}  {c.agent:<20}  {kind:<9}  until {c.expires_at:%H:%M:%S}"
            f"  {_claim_where(c)}{note}\n"
        )
    return EXIT_OK


async def cmd_who(store: Store, args: argparse.Namespace) -> int:
    from .uris import make_uri

    for p in await store.presence(args.workspace, args.path):
        if args.json:
            row = {
                "agent": p.agent,
                "path": p.path,
                "uri": make_uri(args.workspace, p.path),
                "mode": p.mode,
                "since": p.since.isoformat(),
            }
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            since = p.since.strftime("%Y-%m-%d %H:%M:%S")
            sys.stdout.write(f"{p.agent:<20}  {p.mode or '-':<5}  since {since}  {p.path}\n")
    return EXIT_OK


async def cmd_agent(store: Store, args: argparse.Namespace) -> int:
    """dbcode agent add|grant|revoke|ls|rm|rotate (the token on stdout, once; never logged)."""
    access, by, what = store.access, args.auth_agent, args.agent_command
    if what == "add":
        grants = [parse_grant(g) for g in args.grant]
        agent, token = await access.add_agent(args.name, grants, admin=args.admin, by=by)
        sys.stderr.write(f"agent {agent.name}: {_grants_text(agent)}; its token (shown once):\n")
        sys.stdout.write(token + "\n")
    elif what == "grant":
        agent = await access.grant(args.name, [parse_grant(g) for g in args.grants], by=by)
        sys.stdout.write(f"{agent.name}: {_grants_text(agent)}\n")
    elif what == "revoke":
        agent = await access.revoke(args.name, args.grants, by=by)
        sys.stdout.write(f"{agent.name}: {_grants_text(agent)}\n")
    elif what == "rm":
        await access.remove(args.name, by=by)
        sys.stdout.write(f"agent {args.name} removed\n")
    elif what == "rotate":
        token = await access.rotate(args.name, by=by)
        sys.stderr.write(f"agent {args.name}: new token (shown once; the old one is revoked):\n")
        sys.stdout.write(token + "\n")
    else:  # ls
        agents = await access.agents(by=by)
        if args.json:
            for a in agents:
                sys.stdout.write(json.dumps(a.as_json()) + "\n")
        else:
            for a in agents:
                sys.stdout.write(f"{a.name:<20}  {_grants_text(a)}\n")
    sys.stdout.flush()
    return EXIT_OK


def _grants_text(agent: Agent) -> str:
    return " ".join(g.spec() for g in agent.grants) or "(no grants)"


async def cmd_audit(store: Store, args: argparse.Namespace) -> int:
    entries = await store.access.audit(args.workspace, by=args.auth_agent, limit=args.limit)
    for e in entries:
        if args.json:
            sys.stdout.write(json.dumps(e.as_json()) + "\n")
        else:
            where = f"{e.workspace}/{e.path}" if e.path else (e.workspace or "-")
            sys.stdout.write(
                f"{e.at:%Y-%m-%d %H:%M:%S}  {e.agent or '(unknown)':<16}  {e.action:<14}"
                f"  {where}  {e.transport} {e.peer}  {e.reason}\n"
            )
    return EXIT_OK


async def cmd_db(store: Store, args: argparse.Namespace) -> int:
    from .store import redact

    sys.stdout.write(redact(store.dsn) + "\n")
    return EXIT_OK


Handler = Callable[[Store, argparse.Namespace], Awaitable[int]]

HANDLERS: dict[str, Handler] = {
    "import": cmd_import,
    "export": cmd_export,
    "ls": cmd_ls,
    "workspaces": cmd_workspaces,
    "cat": cmd_cat,
    "write": cmd_write,
    "rm": cmd_rm,
    "mv": cmd_mv,
    "log": cmd_log,
    "blame": cmd_blame,
    "compact": cmd_compact,
    "watch": cmd_watch,
    "check": cmd_check,
    "db": cmd_db,
    "comment": cmd_comment,
    "reply": cmd_reply,
    "resolve": cmd_resolve,
    "comments": cmd_comments,
    "claim": cmd_claim,
    "release": cmd_release,
    "claims": cmd_claims,
    "who": cmd_who,
    "agent": cmd_agent,
    "audit": cmd_audit,
}

# What an agent needs for each command (access control): (level, the argument naming the
# path or None for "somewhere in the workspace", whole workspace?). Row-level security limits
# the rest (listings show only what the agent can read); these give the clear 403 first.
_READ, _WRITE, _ADMIN = 1, 2, 3
NEEDS: dict[str, list[tuple[int, str | None, bool]]] = {
    "cat": [(_READ, "path", False)],
    "blame": [(_READ, "path", False)],
    "write": [(_WRITE, "path", False)],
    "rm": [(_WRITE, "path", False)],
    "mv": [(_WRITE, "old", False), (_WRITE, "new", False)],
    "comment": [(_READ, "path", False)],
    "claim": [(_WRITE, "path", False)],
    "import": [(_WRITE, None, True)],
    "export": [(_READ, None, False)],
    "ls": [(_READ, None, False)],
    "log": [(_READ, "path", False)],
    "watch": [(_READ, None, False)],
    "check": [(_READ, None, False)],
    "comments": [(_READ, "path", False)],
    "claims": [(_READ, "path", False)],
    "who": [(_READ, "path", False)],
    "reply": [(_READ, None, False)],
    "resolve": [(_READ, None, False)],
    "release": [(_READ, None, False)],
    "compact": [(_ADMIN, None, True)],
}


def _check_access(agent: Agent, args: argparse.Namespace) -> None:
    workspace = getattr(args, "workspace", None)
    for level, attr, whole in NEEDS.get(args.command, []):
        if workspace is None:  # compact of every workspace
            if not agent.superadmin:
                raise Forbidden(agent.name, "administer", "*")
            continue
        path = getattr(args, attr, None) if attr else None
        agent.require(level, workspace, path or "", whole=whole)


async def _run(handler: Handler, args: argparse.Namespace) -> int:
    dsn = resolve_dsn(args.database_url)
    async with Store(dsn, min_size=1, max_size=4) as store:
        args.auth_agent = None
        if args.command == "db":
            return await handler(store, args)
        try:
            agent = await store.access.authenticate(token_of(args))
            if agent is not None:
                args.auth_agent = agent
                args.agent = agent.name  # the token's agent authors, whatever --agent says
                if args.command not in ("agent", "audit"):
                    _check_access(agent, args)
            with run_as(agent):
                return await handler(store, args)
        except (Unauthenticated, Forbidden) as exc:
            await _audit(store, args, exc)
            raise


async def _audit(store: Store, args: argparse.Namespace, exc: Exception) -> None:
    """Record a refusal (never the token)."""
    try:
        await store.access.record(
            agent=args.auth_agent.name if args.auth_agent else None,
            action=args.command,
            workspace=getattr(args, "workspace", None),
            path=exc.path or None if isinstance(exc, Forbidden) else None,
            transport="cli",
            peer=_who(),
            reason=str(exc).split(" (set DBCODE_TOKEN")[0],
        )
    except StoreError:
        pass


def _who() -> str:
    import getpass
    import socket

    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except Exception:
        return "?"


def run(args: argparse.Namespace) -> int:
    """Run the command ``args.command``; errors become one line on stderr and an exit code."""
    try:
        return asyncio.run(_run(HANDLERS[args.command], args))
    except Conflict as exc:
        fail_conflict(str(exc), exc.current_revision)
    except Claimed as exc:
        fail(str(exc), EXIT_CLAIMED)
    except CliError as exc:
        fail(str(exc), exc.code)
    except StoreError as exc:  # NotFound, InvalidInput, DatabaseUnavailable, ...
        fail(str(exc))
    except KeyboardInterrupt:
        return interrupted()
    except BrokenPipeError:
        return stdout_gone()
