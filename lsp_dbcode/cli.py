"""The ``dbcode`` command (SPEC.md, Command line): arguments and dispatch.

Exit codes: 0 done; 1 error (one line on stderr, nothing written); 3 conflict (stale --base);
4 refused by another agent's exclusive claim (the message names its holder and note).

This module stays light (no psycopg, pygls or asyncio): ``dbcode serve`` over stdio is a relay
(server/relay.py) that must start fast and small. The commands that use the store are in
commands.py, imported only when one of them runs.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from . import __version__

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFLICT = 3
EXIT_CLAIMED = 4


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


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import relay
    from .server.options import ServeOptions

    options = ServeOptions.from_args(args)
    if bool(options.tls_cert) != bool(options.tls_key):
        fail("--tls-cert and --tls-key go together: give both")
    if options.tls_cert and not (options.tcp or options.ws):
        fail("--tls-cert and --tls-key are for --tcp and --ws")
    if not relay.standalone_requested(options):
        return relay.run(options)  # stdio: attach to the shared server
    from .server.main import serve

    return serve(options)


# -- plumbing -------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit code 1, like every other error."""

    def error(self, message: str) -> NoReturn:
        fail(f"{_hide_tokens(message)} (see '{self.prog} --help')")


TOKEN_ENV = "DBCODE_TOKEN"
TOKEN_HELP = (
    "the agent's token (default: $DBCODE_TOKEN, preferred: a command line is visible to "
    "every user of the machine in ps)"
)


def _hide_tokens(message: str, argv: Sequence[str] | None = None) -> str:
    """A usage error never repeats a token given on the command line."""
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        value = None
        if arg == "--token" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--token="):
            value = arg.partition("=")[2]
        if value:
            message = message.replace(value, "***")
    return message


def resolve_token(explicit: str | None = None) -> str | None:
    """--token, else DBCODE_TOKEN, else None (an empty value is none)."""
    return (explicit or os.environ.get(TOKEN_ENV) or "").strip() or None


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {value!r}")
    return seconds


def _lines(value: str) -> tuple[int, int]:
    """LINE or LINE-LINE, 1-based."""
    first, sep, last = value.partition("-")
    try:
        a = int(first)
        b = int(last) if sep else a
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid lines {value!r}: use LINE or FIRST-LAST (1-based)"
        ) from None
    if not 1 <= a <= b:
        raise argparse.ArgumentTypeError(
            f"invalid lines {value!r}: lines are 1-based and FIRST <= LAST"
        )
    return a, b


def _positive_id(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"invalid id {value!r}: a positive number")
    return n


# The global options that take a value (the command is the first word after them).
_GLOBAL_VALUED = ("--database-url", "--agent", "--token", "--server", "--tls-ca")
_GLOBAL_OPTIONS = (*_GLOBAL_VALUED, "--version", "--help")


def command_of(argv: Sequence[str]) -> str | None:
    """The command an argv names, read without building the parser; None when it is not
    plainly one (help, an unknown word, an option this cannot place): then the whole parser
    is built and says what argparse always said."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            i += 1
            continue
        if arg.startswith("-"):
            # A global option with a value, also abbreviated as argparse allows.
            matches = [o for o in _GLOBAL_OPTIONS if o.startswith(arg)] if len(arg) > 2 else []
            if len(matches) != 1 or matches[0] not in _GLOBAL_VALUED:
                return None
            i += 2
            continue
        return arg if arg in COMMANDS else None
    return None


class _Unused:
    """Stands in for the parsers of the commands not named (see build_parser's ``only``)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self


COMMANDS = (
    "serve",
    "import",
    "export",
    "ls",
    "cat",
    "write",
    "rm",
    "mv",
    "blame",
    "compact",
    "log",
    "watch",
    "check",
    "mcp",
    "workspaces",
    "db",
    "comment",
    "reply",
    "resolve",
    "comments",
    "claim",
    "release",
    "claims",
    "who",
    "agent",
    "audit",
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser. ``only``: build that command's parser alone (an agent's
    call pays for one of the 26, not all: argparse's per-parser cost is most of a fast call's
    own time); its messages are the same, since they come from that parser."""
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
    p.add_argument("--token", help=TOKEN_HELP)
    p.add_argument(
        "--server",
        metavar="URL",
        help="cat, ls, write, log, watch, check and mcp: use this dbcode serve --tcp "
        "(tcp://HOST:PORT; tls://HOST:PORT with --tls-cert; mcp also ws:// and wss://) instead "
        "of the shared local server (default: $DBCODE_SERVER)",
    )
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="the CA file (PEM) that signed a tls:// or wss:// server's certificate "
        "(default: $DBCODE_TLS_CA, else the system's)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        assert name in COMMANDS, name
        if only is not None and name != only:
            return _Unused()  # type: ignore[return-value]
        sp = sub.add_parser(name, help=help_, description=help_)
        # Also after the command (a misplaced --token must never come back in an error).
        sp.add_argument("--token", default=argparse.SUPPRESS, help=TOKEN_HELP)
        return sp

    sp = add("serve", "run the language server (stdio by default)")
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
    sp.add_argument(
        "--tls-cert", metavar="FILE", help="--tcp / --ws over TLS: the certificate (chain), PEM"
    )
    sp.add_argument("--tls-key", metavar="FILE", help="--tcp / --ws over TLS: its key, PEM")

    sp = add("import", "load a directory as one changeset (honours .gitignore)")
    sp.add_argument("dir")
    sp.add_argument("--workspace", "-w", required=True)
    sp.add_argument("--message", "-m")

    sp = add("export", "write the workspace out to a directory")
    sp.add_argument("workspace")
    sp.add_argument("dir")
    sp.add_argument("--watch", action="store_true", help="keep DIR in step with new changesets")

    sp = add("ls", "list files with revision, size, last author")
    sp.add_argument("workspace")
    sp.add_argument("prefix", nargs="?")

    add("workspaces", "list workspaces")

    sp = add("cat", "print a file, or an old revision of it")
    sp.add_argument("workspace")
    sp.add_argument("path")
    group = sp.add_mutually_exclusive_group()
    group.add_argument("--rev", type=int, help="this revision of the file")
    group.add_argument(
        "--at", type=int, metavar="SEQ", help="the file as it was right after changeset SEQ"
    )

    meta_help = "a small JSON object kept with the changeset (conversation, task, prompt, ...)"
    sp = add("write", "store stdin as the file's new content")
    sp.add_argument("workspace")
    sp.add_argument("path")
    sp.add_argument("--base", type=int, help="the revision your text was based on (0 = new file)")
    sp.add_argument("--message", "-m")
    sp.add_argument("--meta", metavar="JSON", help=meta_help)

    sp = add("rm", "delete a file (one changeset)")
    sp.add_argument("workspace")
    sp.add_argument("path")
    sp.add_argument("--base", type=int)
    sp.add_argument("--message", "-m")
    sp.add_argument("--meta", metavar="JSON", help=meta_help)

    sp = add("mv", "rename a file (one changeset)")
    sp.add_argument("workspace")
    sp.add_argument("old")
    sp.add_argument("new")
    sp.add_argument("--base", type=int)
    sp.add_argument("--message", "-m")
    sp.add_argument("--meta", metavar="JSON", help=meta_help)

    sp = add("blame", "who last changed each line of a file, in which changeset (follows renames)")
    sp.add_argument("workspace")
    sp.add_argument("path")
    sp.add_argument("--rev", type=int, help="blame this revision (default: the current one)")
    sp.add_argument("--json", action="store_true", help="JSON lines, one object per run of lines")

    sp = add(
        "compact",
        "store old revisions as deltas (converts a history written before schema v4; "
        "commits go on meanwhile)",
    )
    sp.add_argument("workspace", nargs="?", help="only this workspace (default: all)")

    sp = add("log", "changesets, newest first")
    sp.add_argument("workspace")
    sp.add_argument("path", nargs="?")
    sp.add_argument("--json", action="store_true")
    sp.add_argument(
        "--limit", "-n", type=int, help="at most N changesets (default 50, at most 10000)"
    )
    sp.add_argument(
        "--before", type=int, metavar="SEQ", help="only changesets older than SEQ (the next page)"
    )

    sp = add("watch", "stream changesets as they commit")
    sp.add_argument("workspace")
    sp.add_argument("--since", type=int, help="start after this seq (default: now)")
    sp.add_argument("--json", action="store_true", help="JSON lines")
    sp.add_argument("--count", type=int, help=argparse.SUPPRESS)

    sp = add("check", "lint every file of a workspace (exit 1 if any error)")
    sp.add_argument("workspace")
    sp.add_argument("--json", action="store_true")

    add("db", "print the DSN in use (starting the embedded server if needed)")

    sp = add("mcp", "serve the workspaces over the Model Context Protocol (stdio), for agents")
    sp.add_argument("--workspace", "-w", help="the default workspace of every tool")
    sp.add_argument(
        "--server",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="a dbcode serve --tcp/--ws to use: tcp://, tls://, ws:// or wss://HOST:PORT "
        "(default: $DBCODE_SERVER, else the shared local server)",
    )
    sp.add_argument("--tls-ca", metavar="FILE", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    sp = add("comment", "open a review thread on lines of a file")
    sp.add_argument("workspace")
    sp.add_argument("path")
    sp.add_argument("lines", type=_lines, metavar="LINE[-LINE]", help="1-based, inclusive")
    sp.add_argument("text")
    sp.add_argument("--kind", choices=["note", "suggestion", "blocking"], default=None)
    sp.add_argument(
        "--suggest",
        metavar="FILE|-",
        help="the replacement text for the lines (a suggestion), from FILE or stdin",
    )
    sp.add_argument("--rev", type=int, help="the revision the lines refer to (default: current)")

    sp = add("reply", "reply to a review thread")
    sp.add_argument("workspace")
    sp.add_argument("thread", type=_positive_id)
    sp.add_argument("text")

    sp = add("resolve", "resolve a review thread (or reopen it)")
    sp.add_argument("workspace")
    sp.add_argument("thread", type=_positive_id)
    sp.add_argument("--reopen", action="store_true")

    sp = add("comments", "review threads, where they are now")
    sp.add_argument("workspace")
    sp.add_argument("path", nargs="?")
    sp.add_argument("--all", action="store_true", help="resolved threads too")
    sp.add_argument("--json", action="store_true")

    sp = add("claim", "claim a file or lines of it (prints the claim id)")
    sp.add_argument("workspace")
    sp.add_argument("path")
    sp.add_argument("lines", type=_lines, nargs="?", metavar="LINE[-LINE]")
    sp.add_argument("--note", default="")
    sp.add_argument(
        "--exclusive", action="store_true", help="refuse other agents' commits that touch it"
    )
    sp.add_argument("--ttl", type=_seconds, default=300.0, help="seconds (default 300)")
    sp.add_argument("--id", type=_positive_id, help="renew this claim of yours")

    sp = add("release", "release a claim")
    sp.add_argument("workspace")
    sp.add_argument("id", type=_positive_id)

    sp = add("claims", "live claims")
    sp.add_argument("workspace")
    sp.add_argument("path", nargs="?")
    sp.add_argument("--json", action="store_true")

    sp = add("who", "who has which file open, across all server processes")
    sp.add_argument("workspace")
    sp.add_argument("path", nargs="?")
    sp.add_argument("--json", action="store_true")

    grant_help = "WS[/PREFIX]=read|write|admin (WS * for every workspace); repeatable"
    sp = add("agent", "manage agents, their tokens and grants (admins; the first agent: anyone)")
    agent_sub = sp.add_subparsers(
        dest="agent_command", required=True, metavar="ACTION", parser_class=_Parser
    )
    ap = agent_sub.add_parser("add", help="create an agent and print its token (once)")
    ap.add_argument("name")
    ap.add_argument("--grant", action="append", default=[], metavar="GRANT", help=grant_help)
    ap.add_argument("--admin", action="store_true", help="admin of everything (grant *=admin)")
    ap = agent_sub.add_parser("grant", help="give an agent more grants")
    ap.add_argument("name")
    ap.add_argument("grants", nargs="+", metavar="GRANT", help=grant_help)
    ap = agent_sub.add_parser("revoke", help="take grants away")
    ap.add_argument("name")
    ap.add_argument("grants", nargs="+", metavar="WS[/PREFIX]")
    ap = agent_sub.add_parser("ls", help="list agents and their grants")
    ap.add_argument("--json", action="store_true")
    ap = agent_sub.add_parser("rm", help="remove an agent (its token stops working)")
    ap.add_argument("name")
    ap = agent_sub.add_parser("rotate", help="a new token for an agent (the old one stops working)")
    ap.add_argument("name")

    sp = add("audit", "refused attempts in a workspace, and failed authentications (admins)")
    sp.add_argument("workspace")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--limit", "-n", type=int, default=100, help="at most N entries")
    return p


def token_of(args: argparse.Namespace) -> str | None:
    """The token main() resolved once (--token, else $DBCODE_TOKEN: resolve_token)."""
    token = getattr(args, "token", None)
    return token if token is not None else resolve_token()


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    sys.stderr.write(f"dbcode: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def fail_conflict(message: str, current_revision: int | None) -> NoReturn:
    """A stale --base: exit 3, naming the current revision (both paths, fast and direct)."""
    fail(f"{message} (current revision {current_revision}; re-read and retry)", EXIT_CONFLICT)


def interrupted() -> int:
    """Ctrl-C: a clean line end and the shell's code for SIGINT."""
    with contextlib.suppress(Exception):
        sys.stderr.write("\n")
    return 130


def stdout_gone() -> int:
    """The reader of our output went away (``| head``): not an error."""
    with contextlib.suppress(Exception):
        sys.stdout = open(os.devnull, "w")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=command_of(words))
    args = parser.parse_args(words)
    args.agent_flag = args.agent
    args.agent = default_agent(args.agent)
    args.token = resolve_token(args.token)  # resolved once: every path reads args.token
    args.server = args.server or os.environ.get("DBCODE_SERVER") or None
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "mcp":
        from .mcp_server import run

        return run(args)
    from . import fastcli

    code = fastcli.run(args)  # through the shared server, when it can be used
    if code is not None:
        return code
    from . import commands

    return commands.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
