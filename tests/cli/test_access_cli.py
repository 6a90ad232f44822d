"""`dbcode agent ...`, `dbcode audit`, and every other command on an enforced database (the
real command in subprocesses, a database of the test's own)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli

WS = "proj"


@pytest.fixture(params=["direct", "shared"])
def acli(request: pytest.FixtureRequest, fresh_database_url: str, tmp_path: Path) -> Cli:
    c = Cli(fresh_database_url, tmp_path / "home")
    if request.param == "direct":
        c.env["DBCODE_CLI_DIRECT"] = "1"
    return c


def _ok(proc: object) -> str:
    assert proc.returncode == 0, proc.stderr  # type: ignore[attr-defined]
    return proc.stdout  # type: ignore[attr-defined,no-any-return]


def _refused(proc: object, starts: str) -> str:
    """Exit 1, one line on stderr starting with ``starts`` (after "dbcode: ")."""
    assert proc.returncode == 1, (proc.stdout, proc.stderr)  # type: ignore[attr-defined]
    err = proc.stderr  # type: ignore[attr-defined]
    assert err.count("\n") == 1 and err.startswith("dbcode: " + starts), err
    return err  # type: ignore[no-any-return]


def test_access_from_the_command_line(acli: Cli) -> None:
    # The direct path is the CLI's own; the fast path reaches the shared server over its socket.
    transport = "cli" if acli.env.get("DBCODE_CLI_DIRECT") else "unix"
    # Open, as today.
    _ok(acli("write", WS, "docs/a.md", input="# a\n"))
    _ok(acli("write", WS, "src/m.py", input="x = 1\n"))
    _refused(acli("agent", "add", "dev", "--grant", f"{WS}/src=write"), "the first agent")
    first = acli("agent", "add", "root", "--admin")
    root = _ok(first).strip()
    assert root.startswith("dbc_") and root not in first.stderr
    as_root = {"DBCODE_TOKEN": root}
    assert "\n" not in root

    # Enforced: no token, a wrong one, a huge one.
    for env in (
        {},
        {"DBCODE_TOKEN": root[:-1] + ("Q" if root[-1] != "Q" else "R")},
        {"DBCODE_TOKEN": "dbc_1_" + "x" * 100_000},
    ):
        for args in (("ls", WS), ("cat", WS, "src/m.py"), ("log", WS)):
            _refused(acli(*args, env=env), "authentication required")
        _refused(acli("write", WS, "src/m.py", input="y\n", env=env), "authentication required")

    dev = _ok(acli("agent", "add", "dev", "--grant", f"{WS}/src=write", env=as_root)).strip()
    ro = _ok(acli("agent", "add", "ro", "--grant", f"{WS}=read", env=as_root)).strip()
    as_dev, as_ro = {"DBCODE_TOKEN": dev}, {"DBCODE_TOKEN": ro}

    # The author is the token's agent, whatever --agent says.
    _ok(acli("--agent", "mallory", "write", WS, "src/m.py", input="x = 2\n", env=as_dev))
    log = [json.loads(line) for line in _ok(acli("log", WS, "--json", env=as_root)).splitlines()]
    assert log[0]["agent"] == "dev"

    # Scoped to src/: cannot write docs/, nor see it.
    err = _refused(acli("write", WS, "docs/b.md", input="b\n", env=as_dev), "forbidden")
    assert err == f"dbcode: forbidden: agent dev may not write {WS}/docs/b.md\n"
    _refused(acli("cat", WS, "docs/a.md", env=as_dev), f"forbidden: agent dev may not read {WS}/")
    _refused(acli("cat", WS, "docs/b.md", env=as_root), "no such file")  # nothing written
    assert "docs/" not in _ok(acli("ls", WS, env=as_dev))
    assert "src/m.py" in _ok(acli("ls", WS, env=as_dev))
    dev_log = _ok(acli("log", WS, "--json", env=as_dev))
    assert "docs/a.md" not in dev_log and "src/m.py" in dev_log
    assert "docs/a.md" in _ok(acli("log", WS, "--json", env=as_root))
    # Read-only: cannot write.
    _refused(acli("write", WS, "src/m.py", input="z\n", env=as_ro), "forbidden: agent ro")
    assert _ok(acli("cat", WS, "docs/a.md", env=as_ro)) == "# a\n"

    # Management is for admins.
    _refused(acli("agent", "ls", env=as_dev), "forbidden: agent dev")
    _refused(acli("agent", "add", "x", "--admin", env=as_dev), "forbidden: agent dev")
    _refused(acli("audit", WS, env=as_dev), "forbidden: agent dev")
    listed = [json.loads(x) for x in _ok(acli("agent", "ls", "--json", env=as_root)).splitlines()]
    assert {a["name"]: a["grants"] for a in listed} == {
        "dev": [f"{WS}/src/=write"],
        "ro": [f"{WS}=read"],
        "root": ["*=admin"],
    }
    _ok(acli("agent", "grant", "dev", f"{WS}/docs=write", env=as_root))
    _ok(acli("write", WS, "docs/b.md", input="b\n", env=as_dev))
    _ok(acli("agent", "revoke", "dev", f"{WS}/docs", env=as_root))
    _refused(acli("write", WS, "docs/b.md", input="c\n", env=as_dev), "forbidden")

    # Rotation and removal.
    new_dev = _ok(acli("agent", "rotate", "dev", env=as_root)).strip()
    _refused(acli("ls", WS, env=as_dev), "authentication required")
    _ok(acli("ls", WS, env={"DBCODE_TOKEN": new_dev}))
    _ok(acli("agent", "rm", "ro", env=as_root))
    _refused(acli("ls", WS, env=as_ro), "authentication required")
    # --token works too (and wins over $DBCODE_TOKEN: the explicit one).
    _ok(acli("--token", new_dev, "ls", WS))
    _ok(acli("--token", new_dev, "ls", WS, env=as_ro))

    # The audit lists the refusals, never a token.
    audit = _ok(acli("audit", WS, "--json", env=as_root))
    entries = [json.loads(x) for x in audit.splitlines()]
    assert any(
        (e["agent"], e["workspace"], e["path"], e["transport"])
        == ("dev", WS, "docs/b.md", transport)
        and e["action"] in ("write", "dbcode/commit")  # the CLI's or the server's name
        and e["reason"] == f"forbidden: agent dev may not write {WS}/docs/b.md"
        for e in entries
    )
    assert any(e["agent"] is None and e["reason"].startswith("authentication") for e in entries)
    assert any(e["agent"] == "ro" and e["path"] == "src/m.py" for e in entries)
    for token in (root, dev, ro, new_dev):
        assert token not in audit
