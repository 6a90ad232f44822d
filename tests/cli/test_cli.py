"""The `dbcode` command, run as a real subprocess against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lsp_dbcode import fastcli
from lsp_dbcode.server.relay import live_servers
from lsp_dbcode.store import Change, Store
from lsp_dbcode.store.store import LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX
from tests.conftest import Cli


def head(cli: Cli, ws: str) -> int:
    out = cli("log", ws, "--json", "-n", "1")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[0])["seq"]


def test_write_cat_ls_log_rm_mv(cli: Cli, workspace: str) -> None:
    r = cli("write", workspace, "src/app.py", "--base", "0", "-m", "first", input="x = 1\n")
    assert r.returncode == 0, r.stderr
    assert "revision 1" in r.stdout
    assert cli("cat", workspace, "src/app.py").stdout == "x = 1\n"
    assert cli("write", workspace, "src/app.py", "--base", "1", input="x = 2\n").returncode == 0
    assert cli("cat", workspace, "src/app.py", "--rev", "1").stdout == "x = 1\n"
    ls = cli("ls", workspace).stdout.split()
    assert ls[0] == "2" and ls[1] == "6" and ls[2] == "test-agent" and ls[-1] == "src/app.py"
    assert cli("mv", workspace, "src/app.py", "src/main.py").returncode == 0
    assert cli("cat", workspace, "src/main.py").stdout == "x = 2\n"
    assert cli("rm", workspace, "src/main.py").returncode == 0
    log = [json.loads(x) for x in cli("log", workspace, "--json").stdout.splitlines()]
    assert [e["seq"] for e in log] == [4, 3, 2, 1]
    assert log[0]["files"][0]["kind"] == "delete"
    assert log[1]["files"][0] == {
        "path": "src/main.py",
        "uri": f"dbcode://{workspace}/src/main.py",
        "revision": 1,
        "kind": "rename",
        "oldPath": "src/app.py",
        "oldUri": f"dbcode://{workspace}/src/app.py",
    }
    assert log[3]["message"] == "first" and log[3]["agent"] == "test-agent"
    assert "seq 1" in cli("log", workspace, "src/app.py").stdout


def test_stale_base_exits_3_and_names_current(cli: Cli, workspace: str) -> None:
    cli("write", workspace, "a.txt", input="one")
    cli("write", workspace, "a.txt", input="two")
    r = cli("write", workspace, "a.txt", "--base", "1", input="three")
    assert r.returncode == 3
    assert "revision 2" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert cli("cat", workspace, "a.txt").stdout == "two"


BAD_CASES = [
    (["write", "bad name", "a.txt"], "hi", "invalid workspace name"),
    (["write", ".hidden", "a.txt"], "hi", "invalid workspace name"),
    (["write", "x" * 65, "a.txt"], "hi", "invalid workspace name"),
    (["write", "{ws}"], "hi", "required: path"),
    (["write", "{ws}", "../escape.txt"], "hi", "'..' segments"),
    (["write", "{ws}", "a/../../b"], "hi", "'..' segments"),
    (["write", "{ws}", "/etc/passwd"], "hi", "must be relative"),
    (["write", "{ws}", "a\x01b"], "hi", "control character"),
    (["write", "{ws}", "tab\there"], "hi", "control character"),
    (["write", "{ws}", "bad.txt"], b"\xff\xfe invalid", "not valid UTF-8"),
    (["write", "{ws}", "bin.dat"], b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
    (["cat", "{ws}", "missing.txt"], None, "no such file"),
    (["cat", "no-such-ws", "a.txt"], None, "unknown workspace"),
    (["ls", "no-such-ws"], None, "unknown workspace"),
    (["rm", "{ws}", "missing.txt"], None, "no such file"),
    (["mv", "{ws}", "missing.txt", "b.txt"], None, "no such file"),
    (["mv", "{ws}", "seed.txt", "../x"], None, "'..' segments"),
    (["cat", "{ws}", "seed.txt", "--rev", "9"], None, "has no revision 9"),
    (["log", "no-such-ws"], None, "unknown workspace"),
    (["write", "{ws}", "seed.txt", "--meta", "{not json"], "new", "invalid --meta: not JSON"),
    (["write", "{ws}", "seed.txt", "--meta", "[1, 2]"], "new", "a JSON object is needed"),
    (["write", "{ws}", "m.txt", "--meta", '{"p": "' + "x" * 5000 + '"}'], "new", "meta too large"),
    (["rm", "{ws}", "seed.txt", "--meta", "3"], None, "a JSON object is needed"),
    (["mv", "{ws}", "seed.txt", "b.txt", "--meta", "nope"], None, "invalid --meta"),
    (["cat", "{ws}", "seed.txt", "--at", "99"], None, "beyond the head"),
    (["cat", "{ws}", "seed.txt", "--at", "-1"], None, "invalid seq -1"),
    (["cat", "{ws}", "other.txt", "--at", "1"], None, "did not exist at seq 1"),
    (["cat", "{ws}", "seed.txt", "--at", "1", "--rev", "1"], None, "not allowed with"),
    (["blame", "{ws}", "seed.txt", "--rev", "9"], None, "has no revision 9"),
    (["blame", "{ws}", "missing.txt"], None, "no such file"),
    (["blame", "no-such-ws", "a.txt"], None, "unknown workspace"),
]


@pytest.mark.parametrize(("argv", "stdin", "expected"), BAD_CASES)
def test_bad_input_one_line_exit_1_nothing_written(
    cli: Cli, workspace: str, argv: list[str], stdin: str | bytes | None, expected: str
) -> None:
    cli("write", workspace, "seed.txt", input="seed")
    before = head(cli, workspace)
    r = cli(*[a.replace("{ws}", workspace) for a in argv], input=stdin)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dbcode: "), r.stderr
    assert expected in lines[0]
    assert "Traceback" not in r.stderr
    assert head(cli, workspace) == before
    assert [ln.split()[-1] for ln in cli("ls", workspace).stdout.splitlines()] == ["seed.txt"]


def test_oversize_content_refused(cli: Cli, workspace: str) -> None:
    cli("write", workspace, "seed.txt", input="seed")
    r = cli("write", workspace, "big.txt", input="x" * 2000, env={"DBCODE_MAX_FILE_BYTES": "1000"})
    assert r.returncode == 1 and "over the limit of 1000 bytes" in r.stderr
    assert head(cli, workspace) == 1


def test_unreachable_database_names_dsn_without_password(cli: Cli) -> None:
    url = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/nodb"
    r = cli("ls", "ws", env={"DBCODE_DATABASE_URL": url})
    assert r.returncode == 1
    assert "127.0.0.1" in r.stderr and "port=1" in r.stderr and "alice" in r.stderr
    assert "s3cr3t-pw" not in r.stderr and "s3cr3t-pw" not in r.stdout
    assert len(r.stderr.strip().splitlines()) == 1


def _make_tree(root: Path, n: int) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "build").mkdir()
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (root / ".gitignore").write_text("build/\n*.log\n")
    (root / "src" / ".gitignore").write_text("secret.txt\n!keep.log\n")
    for i in range(n):
        (root / "src" / "pkg" / f"m{i}.py").write_text(f"VALUE = {i}\n")
    (root / "README.md").write_text("# hello ✓\n")
    (root / "build" / "out.txt").write_text("ignored")
    (root / "debug.log").write_text("ignored")
    (root / "src" / "keep.log").write_text("kept by negation")
    (root / "src" / "secret.txt").write_text("ignored")
    (root / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (root / "latin1.txt").write_bytes(b"caf\xe9")


def test_import_honours_gitignore_and_reports_binaries(
    cli: Cli, workspace: str, tmp_path: Path
) -> None:
    src = tmp_path / "tree"
    _make_tree(src, 50)
    r = cli("import", str(src), "--workspace", workspace)
    assert r.returncode == 0, r.stderr
    assert "logo.png" in r.stderr and "binary" in r.stderr
    assert "latin1.txt" in r.stderr
    paths = [ln.split()[-1] for ln in cli("ls", workspace).stdout.splitlines()]
    assert sorted(paths) == sorted(
        [".gitignore", "README.md", "src/.gitignore", "src/keep.log"]
        + [f"src/pkg/m{i}.py" for i in range(50)]
    )
    log = [json.loads(x) for x in cli("log", workspace, "--json").stdout.splitlines()]
    assert len(log) == 1 and len(log[0]["files"]) == 54  # one changeset
    assert cli("cat", workspace, "README.md").stdout == "# hello ✓\n"
    again = cli("import", str(src), "--workspace", workspace)
    assert "nothing changed" in again.stdout
    assert head(cli, workspace) == 1


def test_export_and_watch_stay_in_step_and_inside(cli: Cli, workspace: str, tmp_path: Path) -> None:
    cli("write", workspace, "a/one.txt", input="1")
    cli("write", workspace, "two.txt", input="2")
    out = tmp_path / "out"
    r = cli("export", workspace, str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "a" / "one.txt").read_text() == "1" and (out / "two.txt").read_text() == "2"

    watch_dir = tmp_path / "watched"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lsp_dbcode", "export", workspace, str(watch_dir), "--watch"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: (watch_dir / "two.txt").exists())
        cli("write", workspace, "two.txt", input="2b")
        cli("write", workspace, "deep/new/file.txt", input="new")
        cli("mv", workspace, "a/one.txt", "b/one.txt")
        cli("rm", workspace, "deep/new/file.txt")
        cli("write", workspace, "last.txt", input="last")
        _wait_for(lambda: (watch_dir / "last.txt").exists())
        assert (watch_dir / "two.txt").read_text() == "2b"
        assert (watch_dir / "b" / "one.txt").read_text() == "1"
        assert not (watch_dir / "a" / "one.txt").exists()
        assert not (watch_dir / "deep").exists()
        files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
        outside = [f for f in files if not f.startswith(("out/", "watched/", "home/"))]
        assert outside == []
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(10)


def test_watch_json_lines_since(cli: Cli, workspace: str) -> None:
    for i in range(3):
        cli("write", workspace, f"f{i}.txt", input=str(i))
    r = cli("watch", workspace, "--since", "1", "--json", "--count", "2")
    assert r.returncode == 0, r.stderr
    events = [json.loads(x) for x in r.stdout.splitlines()]
    assert [e["seq"] for e in events] == [2, 3]
    assert events[0]["files"][0]["uri"] == f"dbcode://{workspace}/f1.txt"


def test_db_prints_dsn(cli: Cli) -> None:
    r = cli("db")
    assert r.returncode == 0 and "dbname=" in r.stdout


def _wait_for(cond: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_write_reports_problems_and_check_lints_workspace(cli: Cli, workspace: str) -> None:
    r = cli("write", workspace, "pkg/m.py", input="import os\n\nx = 1\n")
    assert r.returncode == 0
    assert "pkg/m.py revision 1: 1 problem(s)" in r.stderr
    assert "pkg/m.py:1:8: F401" in r.stderr
    r = cli("write", workspace, "pkg/ok.py", input="x = 1\n")
    assert "no problems" in r.stderr
    cli("write", workspace, "data.json", input='{"a": 1}')
    r = cli("check", workspace)
    assert r.returncode == 0, r.stderr  # warnings only
    assert r.stdout.splitlines() == ["pkg/m.py:1:8: F401 `os` imported but unused"]
    cli("write", workspace, "broken.json", input='{"a": ')
    r = cli("check", workspace, "--json")
    assert r.returncode == 1  # a syntax error is an error
    found = json.loads(r.stdout)
    assert {(p["path"], p["severity"], p["source"]) for p in found} == {
        ("pkg/m.py", "warning", "ruff"),
        ("broken.json", "error", "syntax"),
    }
    # A ruff.toml stored in the workspace is honoured.
    cli("write", workspace, "pkg/ruff.toml", input='[lint]\nignore = ["F401"]\n')
    r = cli("check", workspace, "--json")
    assert [p["path"] for p in json.loads(r.stdout)] == ["broken.json"]


def test_write_formats_on_commit_when_asked(cli: Cli, workspace: str) -> None:
    cli("write", workspace, "pyproject.toml", input="[tool.dbcode]\nformat-on-commit = true\n")
    cli("write", workspace, "f.py", input="x = {  'a':1 }\n")
    assert cli("cat", workspace, "f.py").stdout == 'x = {"a": 1}\n'
    r = cli("write", workspace, "g.py", input="def (:\n")
    assert r.returncode == 0 and "error(s)" in r.stderr and "invalid-syntax" in r.stderr
    assert cli("cat", workspace, "g.py").stdout == "def (:\n"  # stored as written


def test_meta_blame_cat_at_and_compact(cli: Cli, workspace: str) -> None:
    body = "".join(f"line {i}\n" for i in range(6))
    meta = {"conversation": "conv-7", "task": "issue 16"}
    r = cli("write", workspace, "a.txt", "--meta", json.dumps(meta), "-m", "first", input=body)
    assert r.returncode == 0, r.stderr
    changed = body.replace("line 2\n", "line two\n")
    r = cli("write", workspace, "a.txt", input=changed, env={"DBCODE_AGENT": "bob"})
    assert r.returncode == 0, r.stderr
    assert cli("mv", workspace, "a.txt", "b.txt", "--meta", '{"why": "rename"}').returncode == 0
    log = [json.loads(x) for x in cli("log", workspace, "--json").stdout.splitlines()]
    assert [e["meta"] for e in log] == [{"why": "rename"}, None, meta]
    assert '"conversation": "conv-7"' in cli("log", workspace).stdout
    # Blame follows the rename: bob's line, the rest from the first write.
    r = cli("blame", workspace, "b.txt", "--json")
    assert r.returncode == 0, r.stderr
    runs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["startLine"], x["endLine"], x["seq"], x["agent"]) for x in runs] == [
        (1, 2, 1, "test-agent"),
        (3, 3, 2, "bob"),
        (4, 6, 1, "test-agent"),
    ]
    assert runs[0]["meta"] == meta and runs[0]["message"] == "first"
    assert runs[0]["path"] == "a.txt" and runs[0]["revision"] == 1
    text = cli("blame", workspace, "b.txt").stdout.splitlines()
    assert len(text) == 6 and "bob" in text[2] and text[2].endswith("3) line two")
    old = [
        json.loads(x)
        for x in cli("blame", workspace, "a.txt", "--rev", "1", "--json").stdout.splitlines()
    ]
    assert [(x["startLine"], x["endLine"], x["seq"]) for x in old] == [(1, 6, 1)]
    # Time travel.
    assert cli("cat", workspace, "a.txt", "--at", "1").stdout == body
    assert cli("cat", workspace, "b.txt", "--at", "3").stdout == changed
    r = cli("cat", workspace, "a.txt", "--at", "3")
    assert r.returncode == 1 and "renamed away at seq 3" in r.stderr
    # Nothing left to convert: the writes compacted what they superseded.
    r = cli("compact", workspace)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("compacted 0 revision(s)")
    assert cli("cat", workspace, "a.txt", "--rev", "1").stdout == body


def test_compact_converts_a_whole_history(cli: Cli, workspace: str) -> None:
    """Revisions written with compaction off (as before schema v4) become deltas with
    `dbcode compact`, and every revision still reads back exactly."""
    texts = [
        "".join(
            f"row {i:4} of a file big enough to compact {j if i == j else ''}\n" for i in range(150)
        )
        for j in range(12)
    ]
    off = {"DBCODE_HISTORY_COMPACT": "0"}
    for t in texts:
        assert cli("write", workspace, "h.txt", input=t, env=off).returncode == 0
    r = cli("compact", workspace)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("compacted 11 revision(s) of 1 file(s)"), r.stdout
    for rev, t in enumerate(texts, start=1):
        assert cli("cat", workspace, "h.txt", "--rev", str(rev)).stdout == t
    assert cli("compact", workspace).stdout.startswith("compacted 0 revision(s)")


async def test_log_pages_and_says_when_the_default_limit_cut_it(
    cli: Cli, store: Store, workspace: str
) -> None:
    """Issue 13.2: `log --json` cut by the default limit says so on stderr (never in the JSON on
    stdout), with the command that gets the rest; `--before SEQ` pages through all of it."""
    for i in range(LOG_LIMIT_DEFAULT + 5):
        await store.commit(workspace, [Change.write(f"f{i % 3}.txt", f"v{i}", None)], agent="a")
    total = LOG_LIMIT_DEFAULT + 5

    first = cli("log", workspace, "--json")
    assert first.returncode == 0, first.stderr
    seqs = [json.loads(line)["seq"] for line in first.stdout.splitlines()]
    assert seqs == list(range(total, total - LOG_LIMIT_DEFAULT, -1))
    hint = first.stderr.strip()
    assert len(hint.splitlines()) == 1
    rest_cmd = f"dbcode log {workspace} --json --before {seqs[-1]}"
    assert rest_cmd in hint

    rest = cli("log", workspace, "--json", "--before", str(seqs[-1]))
    assert rest.returncode == 0 and rest.stderr == ""
    assert [json.loads(x)["seq"] for x in rest.stdout.splitlines()] == [5, 4, 3, 2, 1]

    # An explicit limit is what the caller asked for: no hint; a path's log pages the same way.
    assert cli("log", workspace, "--json", "-n", "3").stderr == ""
    by_path = cli("log", workspace, "f0.txt", "--before", "10")
    assert by_path.returncode == 0 and by_path.stderr == ""
    shown = [ln.split()[1] for ln in by_path.stdout.splitlines() if ln.startswith("seq ")]
    assert shown == ["7", "4", "1"]  # f0.txt was written by seqs 1, 4, 7, 10, ...
    assert cli("log", workspace, "--before", "0").returncode == 1


def test_each_path_is_the_one_taken(cli: Cli, workspace: str, shared_servers: Path) -> None:
    """The fast commands go through the shared server unless DBCODE_CLI_DIRECT=1 (and then
    no server is started); the others always go direct."""
    r = cli("write", workspace, "a.txt", input="a")
    assert r.returncode == 0, r.stderr
    assert cli("cat", workspace, "a.txt").stdout == "a"
    servers = live_servers(shared_servers) if shared_servers.is_dir() else []
    assert len(servers) == (1 if cli.path == "shared" else 0)  # type: ignore[attr-defined]


def test_fast_path_constants_are_the_stores() -> None:
    assert (fastcli.LOG_LIMIT_DEFAULT, fastcli.LOG_LIMIT_MAX) == (LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX)


FAST_PROBES = {
    # command: (extra arguments, stdin, what stdout starts with: a regular expression)
    "cat": ([], None, "a"),
    "write": ([], "b", r"{ws}/a\.txt: revision 2 \(seq 2\)\n"),
    "blame": (["--json"], None, r'\{"startLine": 1, "endLine": 1, "seq": 1,'),
    "comment": (["1", "why?"], None, r"thread \d+ \(comment \d+\)\n"),
    "claim": (["--note", "mine"], None, r"\d+\n"),
    "claims": ([], None, r"\["),  # none: the probe's line is all
    "comments": ([], None, r"\["),
}


@pytest.mark.parametrize("command", sorted(FAST_PROBES))
def test_fast_path_imports_only_the_standard_library(
    cli: Cli, workspace: str, command: str
) -> None:
    """`write` validates its input with store/validate.py: importing it must not import
    psycopg (store/__init__ loads its names lazily)."""
    cli("write", workspace, "a.txt", input="a")
    extra, stdin, expected = FAST_PROBES[command]
    argv = ["dbcode", command, workspace, "a.txt", *extra]
    probe = (
        f"import sys, runpy; sys.argv = {argv!r}\n"
        "try:\n    runpy.run_module('lsp_dbcode', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "bad = sorted(m for m in ('psycopg', 'pygls', 'lsprotocol', 'asyncio', 'mcp') "
        "if m in sys.modules)\n"
        "print(bad)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=cli.env,
        timeout=120,
        input=stdin,
    )
    assert re.match(expected.replace("{ws}", workspace), r.stdout), (r.stdout, r.stderr)
    loaded = r.stdout.rpartition("[")[2]
    if cli.path == "shared":  # type: ignore[attr-defined]
        assert loaded == "]\n"
    else:
        assert "psycopg" in loaded


def _outcome(parser: Any, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[Any, ...]:
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        out = capsys.readouterr()
        return ("exit", exc.code, out.out, out.err)
    return ("ok", sorted(vars(args).items()))


def test_parser_of_one_command_says_what_the_whole_parser_says(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A call builds only its command's parser (cli.command_of): its help, its usage errors
    and what it parses are the whole parser's, for every command; anything else gets the
    whole parser."""
    from lsp_dbcode import cli

    whole = cli.build_parser()
    for command in cli.COMMANDS:
        for argv in (
            [command, "--help"],
            [command, "--bogus"],
            ["--agent", "a", command, "--bogus", "--token", "secret-x"],
            [command],
        ):
            assert cli.command_of(argv) == command
            one = cli.build_parser(only=command)
            assert _outcome(one, argv, capsys) == _outcome(whole, argv, capsys), argv
    assert cli.command_of(["--database-url", "x", "--age", "bob", "cat", "w", "f"]) == "cat"
    assert cli.command_of(["--database-url=x", "ls"]) == "ls"
    assert cli.command_of(["--a", "b", "ls"]) == "ls"  # argparse takes --a for --agent
    assert cli.build_parser(only="ls").parse_args(["--a", "b", "ls", "w"]).agent == "b"
    for argv in ([], ["--help"], ["nope"], ["-x", "ls"], ["--t", "b", "ls"], ["--version"]):
        assert cli.command_of(argv) is None, argv
