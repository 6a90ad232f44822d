"""The agents' CLI calls (issue 17) beside starting Python, ``git show`` and ``git ls-files``.

Run: ``python benchmarks/cli_agents.py [--dsn DSN] [--runs 21] [--files 200]``.

Creates the scratch database ``dbcode_cli_agents`` on the server of ``--dsn`` (dropped after),
imports a tree of ``--files`` small Python files into it and into a git repository, starts the
shared server by an untimed first call, then times, interleaved round by round (A B C ...
A B C ...; the order rotated each round so that no command always follows the same one), each
command as a whole process, wall clock, ``--runs`` rounds:

* anchors: ``python3 -c pass`` (the interpreter the CLI runs on, ``-S`` not given: the same
  site start as ``dbcode``), ``git show HEAD:PATH``, ``git ls-files``;
* ``dbcode cat WS PATH``, ``dbcode ls WS``, ``dbcode write WS PATH --base N`` (each write CAS
  on the revision the previous one made), ``dbcode log WS -n 20``, ``dbcode blame WS PATH``,
  ``dbcode comment WS PATH 3-4 TEXT`` (a new thread each run) and ``dbcode claim WS PATH 5-6``
  (a new claim each run, by an agent of its own so that no agent reaches its claim limit),
  ``dbcode check``-less: the fast path (through the shared server) and, for the before
  figures, ``DBCODE_CLI_DIRECT=1``.

Prints per command the median and the 10th/90th percentiles in ms, and the ratio of its median
to ``python3 -c pass``'s median from the same rounds. Targets (issue 17): cat and ls at most
4x and 80 ms, write at most 6x and 120 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scratch_db import drop, recreate  # benchmarks/scratch_db.py

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_NAME = "dbcode_cli_agents"
DBCODE = [sys.executable, "-m", "lsp_dbcode"]
WS = "bench"
PATH = "pkg/mod_7.py"


def run(argv: list[str], env: dict[str, str], stdin: bytes | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(
        argv, env=env, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{argv}: exit {proc.returncode}: {proc.stderr.decode()[-300:]}")
    return took


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", default=DEFAULT_DSN)
    p.add_argument("--runs", type=int, default=21)
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--no-direct", action="store_true", help="skip the direct path's figures")
    a = p.parse_args()

    dsn = recreate(a.dsn, DB_NAME)
    tmp = Path(tempfile.mkdtemp(prefix="dbx-bench-", dir="/tmp"))
    runtime = tmp / "run"
    runtime.mkdir()
    env = {
        **os.environ,
        "DBCODE_DATABASE_URL": dsn,
        "DBCODE_AGENT": "bench",
        "XDG_RUNTIME_DIR": str(runtime),  # a shared server of this run's own
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(tmp),
    }
    env.pop(DIRECT := "DBCODE_CLI_DIRECT", None)
    direct_env = {**env, DIRECT: "1"}
    tree = tmp / "tree"
    (tree / "pkg").mkdir(parents=True)
    for i in range(a.files):
        lines = [f'"""Module {i}."""', "", "import json", ""]
        lines += [f"def f{j}(x):\n    return json.dumps({{'v': x + {j}}})\n" for j in range(8)]
        (tree / "pkg" / f"mod_{i}.py").write_text("\n".join(lines))
    try:
        git = ["git", "-C", str(tree)]
        subprocess.run([*git, "init", "-q"], check=True, env=env)
        subprocess.run([*git, "add", "-A"], check=True, env=env)
        subprocess.run(
            [*git, "-c", "user.name=b", "-c", "user.email=b@x", "commit", "-qm", "x"],
            check=True,
            env=env,
        )
        subprocess.run([*DBCODE, "import", str(tree), "-w", WS], check=True, env=env)
        text = (tree / PATH).read_bytes()
        run([*DBCODE, "cat", WS, PATH], env)  # starts the shared server (untimed)
        revision = [1]

        def write(e: dict[str, str]) -> float:
            took = run(
                [*DBCODE, "write", WS, PATH, "--base", str(revision[0])],
                e,
                text + f"# {revision[0]}\n".encode(),
            )
            revision[0] += 1
            return took

        claims = [0]

        def claim(e: dict[str, str]) -> float:
            claims[0] += 1
            e = {**e, "DBCODE_AGENT": f"bench-{claims[0]}"}
            return run([*DBCODE, "claim", WS, PATH, "5-6", "--note", "bench"], e)

        commands: dict[str, object] = {
            "python3 -c pass": lambda: run([sys.executable, "-c", "pass"], env),
            "git show HEAD:PATH": lambda: run([*git, "show", f"HEAD:{PATH}"], env),
            "git ls-files": lambda: run([*git, "ls-files"], env),
            "dbcode cat": lambda: run([*DBCODE, "cat", WS, PATH], env),
            "dbcode ls": lambda: run([*DBCODE, "ls", WS], env),
            "dbcode write": lambda: write(env),
            "dbcode log -n 20": lambda: run([*DBCODE, "log", WS, "-n", "20"], env),
            "dbcode blame": lambda: run([*DBCODE, "blame", WS, PATH], env),
            "dbcode comment": lambda: run([*DBCODE, "comment", WS, PATH, "3-4", "why?"], env),
            "dbcode claim": lambda: claim(env),
        }
        if not a.no_direct:
            commands["direct: dbcode cat"] = lambda: run([*DBCODE, "cat", WS, PATH], direct_env)
            commands["direct: dbcode ls"] = lambda: run([*DBCODE, "ls", WS], direct_env)
            commands["direct: dbcode write"] = lambda: write(direct_env)
            commands["direct: dbcode blame"] = lambda: run([*DBCODE, "blame", WS, PATH], direct_env)
            commands["direct: dbcode comment"] = lambda: run(
                [*DBCODE, "comment", WS, PATH, "3-4", "why?"], direct_env
            )
            commands["direct: dbcode claim"] = lambda: claim(direct_env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        names = list(commands)
        for r in range(a.runs + 1):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                took = commands[name]()  # type: ignore[operator]
                if r > 0:  # round 0 warms up
                    times[name].append(took)
        anchor = statistics.median(times["python3 -c pass"])
        print(f"{a.runs} rounds, {a.files} files, interpreter {sys.executable}")
        print(f"{'command':<24} {'p50 ms':>8} {'p10 ms':>8} {'p90 ms':>8} {'x start':>8}")
        for name, ts in times.items():
            q = statistics.quantiles(ts, n=10)
            med = statistics.median(ts)
            print(
                f"{name:<24} {med * 1e3:8.1f} {q[0] * 1e3:8.1f} {q[-1] * 1e3:8.1f} "
                f"{med / anchor:8.2f}"
            )
    finally:
        from lsp_dbcode.server.relay import kill_servers

        if (runtime / "dbcode").is_dir():
            kill_servers(runtime / "dbcode")
        drop(a.dsn, DB_NAME)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
