"""``dbcode import`` of a 10,000-file tree beside ``git init && git add -A && git commit``.

Run: ``python benchmarks/import_vs_git.py [--dsn DSN] [--files 10000] [--repeats 3]``.

Generates a realistic tree in a temporary directory: nested folders, source-like text files of
200 B - 8 KB (Python, TypeScript, C, Go, Rust, Markdown, JSON, YAML, ...), a root .gitignore and
a nested one with ignored files behind them (build/, node_modules/, __pycache__/, *.log, dist/),
and a few binaries (which dbcode skips and reports; git stores them). Then, in one run and
interleaved, ``--repeats`` times each:

* ``dbcode import TREE --workspace W`` (the real CLI, a fresh workspace each time), with
  ``DBCODE_DATABASE_URL`` pointing at the scratch database ``dbcode_import`` on the server of
  ``--dsn`` (created before, schema migrated by an untimed ``dbcode workspaces``, dropped after);
* ``git init -q && git add -A && git commit -q -m x`` of the tree (a fresh repository each
  time, ``GIT_DIR`` beside the tree and the tree as work tree; no user or system git config;
  automatic gc off, as the commit would otherwise start one in the background that loads the
  next runs). The three commands are timed one by one and summed.

Dirty pages are flushed (``sync``) before every timed run, untimed, so that no run pays for
the writes of the generator or of the run before. Prints the median seconds and the ratio.

Unless ``--no-embedded``, it also times the embedded path once (``DBCODE_DATABASE_URL`` unset,
``DBCODE_HOME`` in a temporary directory): the first import includes initdb and starting
pgserver's PostgreSQL, a second one (fresh workspace) runs against the then running server.
The embedded server is stopped and its directory removed. With ``--profile``, one more import
runs under cProfile and the top functions are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pstats
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from scratch_db import drop, recreate  # benchmarks/scratch_db.py

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
IMPORT_DB = "dbcode_import"
DEFAULT_DBCODE = str(Path(sys.executable).with_name("dbcode"))

WORDS = (
    "alpha beta cache client config core data engine event handler index item kernel layer "
    "loader manager model node parser plugin queue reader record render request router "
    "schema server session store stream task token util value view worker writer"
).split()
TOP_DIRS = ("src", "lib", "tests", "docs", "web", "services", "tools", "pkg", "internal")
EXTENSIONS = (
    (".py", 30),
    (".ts", 12),
    (".js", 8),
    (".go", 8),
    (".rs", 6),
    (".c", 5),
    (".h", 4),
    (".md", 8),
    (".json", 6),
    (".yaml", 5),
    (".toml", 2),
    (".css", 3),
    (".html", 2),
    (".txt", 1),
)


# -- the tree --------------------------------------------------------------------------------


_IDENTS: list[str] = []


def _ident(rng: random.Random) -> str:
    """One of 2,000 identifiers made of 1-3 words (a fixed pool: cheap to draw)."""
    if not _IDENTS:
        pool = random.Random(1)
        _IDENTS.extend("_".join(pool.sample(WORDS, pool.randint(1, 3))) for _ in range(2000))
    return _IDENTS[int(rng.random() * len(_IDENTS))]


def _chunk(ext: str, rng: random.Random, i: int) -> str:
    """One source-like block of the file's language."""
    a, b = _ident(rng), _ident(rng)
    n = int(rng.random() * 1000)
    if ext == ".py":
        return (
            f"def {a}_{i}(items: list[int], limit: int = {n}) -> int:\n"
            f'    """Return the {b} of the items below limit."""\n'
            "    total = 0\n"
            "    for item in items:\n"
            "        if item < limit:\n"
            f"            total += item * {2 + n % 8}\n"
            "    return total\n\n\n"
        )
    if ext in (".ts", ".js"):
        typ = ": number" if ext == ".ts" else ""
        return (
            f"export function {a}{i}(items{'' if not typ else ': number[]'}, limit{typ} = {n}) "
            "{\n"
            "  let total = 0;\n"
            "  for (const item of items) {\n"
            f"    if (item < limit) total += item * {2 + n % 8}; // {b}\n"
            "  }\n"
            "  return total;\n"
            "}\n\n"
        )
    if ext == ".go":
        return (
            f"// {a.title().replace('_', '')}{i} returns the {b} of items below limit.\n"
            f"func {a.title().replace('_', '')}{i}(items []int) int {{\n"
            "\ttotal := 0\n"
            "\tfor _, item := range items {\n"
            f"\t\tif item < {n} {{\n\t\t\ttotal += item\n\t\t}}\n"
            "\t}\n\treturn total\n}\n\n"
        )
    if ext == ".rs":
        return (
            f"/// The {b} of items below the limit.\n"
            f"pub fn {a}_{i}(items: &[u32]) -> u32 {{\n"
            f"    items.iter().filter(|x| **x < {n}).sum()\n"
            "}\n\n"
        )
    if ext in (".c", ".h"):
        if ext == ".h":
            return f"int {a}_{i}(const int *items, size_t len); /* {b} */\n"
        return (
            f"int {a}_{i}(const int *items, size_t len) {{\n"
            "    int total = 0;\n"
            f"    for (size_t k = 0; k < len; k++) if (items[k] < {n}) total += items[k];\n"
            f"    return total; /* {b} */\n"
            "}\n\n"
        )
    if ext == ".md":
        return (
            f"## {a.replace('_', ' ').title()} {i}\n\n"
            f"The {a.replace('_', ' ')} keeps its {b.replace('_', ' ')} in memory and flushes "
            f"it every {n} ms. See `{b}` for the details.\n\n"
        )
    if ext == ".json":
        return f'  "{a}_{i}": {{"{b}": {n}, "enabled": {str(n % 2 == 0).lower()}}},\n'
    if ext == ".yaml":
        return f"{a}_{i}:\n  {b}: {n}\n  enabled: {str(n % 2 == 0).lower()}\n"
    if ext == ".toml":
        return f"[{a}_{i}]\n{b} = {n}\n"
    if ext == ".css":
        return f".{a.replace('_', '-')}-{i} {{\n  margin: {n % 40}px;\n  color: #{n:03x};\n}}\n"
    if ext == ".html":
        return f'<section id="{a}-{i}">\n  <p>{b.replace("_", " ")} {n}</p>\n</section>\n'
    return f"{a} {b} {n}\n"


def source_file(ext: str, size: int, rng: random.Random) -> str:
    head = {".json": "{\n", ".py": '"""Generated module."""\n\n'}.get(ext, "")
    tail = '  "end": true\n}\n' if ext == ".json" else ""
    parts = [head]
    length = len(head) + len(tail)
    i = 0
    while length < size:
        c = _chunk(ext, rng, i)
        parts.append(c)
        length += len(c)
        i += 1
    text = "".join(parts)
    if ext != ".json" and len(text) > size:
        text = text[:size].rsplit("\n", 1)[0] + "\n"
    return text + tail


def generate_tree(root: Path, files: int, seed: int = 7) -> dict[str, int]:
    """Write the tree; returns counts of what it contains."""
    rng = random.Random(seed)
    exts = [e for e, _ in EXTENSIONS]
    weights = [w for _, w in EXTENSIONS]
    (root / ".gitignore").write_text(
        "# generated\nbuild/\nnode_modules/\n__pycache__/\n*.pyc\n*.log\n.env\n"
    )
    (root / "web").mkdir()
    (root / "web" / ".gitignore").write_text("dist/\n")
    written = 2
    total_bytes = 0
    dirs = [Path(d) for d in TOP_DIRS]
    seen: set[str] = set()
    while written < files:
        # Favour existing folders, so folders hold ~10-40 files, 1-5 levels deep.
        if rng.random() < 0.08 or not dirs:
            parent = rng.choice(dirs)
            depth = len(parent.parts)
            d = parent / _ident(rng) if depth < 5 else parent
            dirs.append(d)
        else:
            d = rng.choice(dirs)
        ext = rng.choices(exts, weights)[0]
        name = f"{_ident(rng)}{ext}"
        rel = str(d / name)
        if rel in seen:
            continue
        seen.add(rel)
        size = round(200 * (8192 / 200) ** rng.random())  # log-uniform 200 B - 8 KB
        text = source_file(ext, size, rng)
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        written += 1
        total_bytes += len(text.encode())
    ignored = 0
    for rel in [f"build/out/{i}.o.txt" for i in range(60)] + [
        f"node_modules/{_ident(rng)}/index{i}.js" for i in range(120)
    ]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(source_file(".js", 1000, rng))
        ignored += 1
    for i, d in enumerate(dirs[:40]):
        (root / d / "__pycache__").mkdir(parents=True, exist_ok=True)
        (root / d / "__pycache__" / f"m{i}.cpython-311.pyc").write_bytes(rng.randbytes(900))
        (root / d / f"run{i}.log").write_text("started\n" * 50)
        ignored += 2
    (root / "web" / "dist").mkdir(exist_ok=True)
    for i in range(20):
        (root / "web" / "dist" / f"bundle{i}.js").write_text(source_file(".js", 4000, rng))
        ignored += 1
    binaries = 0
    for i in range(12):
        d = root / rng.choice(dirs)
        d.mkdir(parents=True, exist_ok=True)
        data = b"\x89PNG\r\n\x1a\n\x00\x00" + rng.randbytes(rng.randint(1000, 60000))
        (d / f"image{i}.png").write_bytes(data)
        binaries += 1
    (root / "tools").mkdir(exist_ok=True)
    for i in range(4):
        (root / "tools" / f"helper{i}.so").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(4000))
        binaries += 1
    return {
        "text_files": written,
        "text_bytes": total_bytes,
        "folders": len({str(Path(s).parent) for s in seen}),
        "ignored": ignored,
        "binaries": binaries,
    }


# -- timing ----------------------------------------------------------------------------------


def timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, str]:
    """Run ``cmd``; its wall time, after flushing dirty pages (so no run pays for the last)."""
    os.sync()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return took, proc.stdout + proc.stderr


def git_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
        GIT_CEILING_DIRECTORIES=str(home.parent),
        # No automatic gc / maintenance: with 10,000 loose objects the commit would start one
        # in the background, which keeps writing into .git and loads the next runs.
        GIT_CONFIG_COUNT="2",
        GIT_CONFIG_KEY_0="gc.auto",
        GIT_CONFIG_VALUE_0="0",
        GIT_CONFIG_KEY_1="maintenance.auto",
        GIT_CONFIG_VALUE_1="false",
    )
    return env


def dbcode_env(home: Path, dsn: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBCODE_")}
    env.update(DBCODE_AGENT="bench", DBCODE_HOME=str(home))
    if dsn:
        env["DBCODE_DATABASE_URL"] = dsn
    return env


def stop_embedded(home: Path) -> None:
    """Stop the embedded PostgreSQL our imports started under ``home`` (fast shutdown)."""
    pidfile = home / "pgdata" / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def import_line(out: str) -> str:
    m = re.search(r"imported .*", out)
    return m.group(0) if m else out.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=DEFAULT_DSN, help="a database on the server to use")
    ap.add_argument("--files", type=int, default=10_000, help="text files in the tree")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dbcode", default=DEFAULT_DBCODE, help="the dbcode executable")
    ap.add_argument("--no-embedded", action="store_true", help="skip the embedded-server run")
    ap.add_argument("--profile", action="store_true", help="one more import under cProfile")
    ap.add_argument(
        "--tree",
        help="where to generate the tree (kept); if it already holds files, use them as they are",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dbcode-import-bench-"))
    tree = Path(args.tree).resolve() if args.tree else work / "tree"
    tree.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    home.mkdir()
    dsn = psycopg.conninfo.make_conninfo(args.dsn, dbname=IMPORT_DB)
    t_start = time.monotonic()
    embedded_home = work / "embedded"
    try:
        t0 = time.monotonic()
        if any(tree.iterdir()):
            print(f"tree: {tree} as it is", flush=True)
        else:
            info = generate_tree(tree, args.files)
            print(
                f"tree: {info['text_files']:,} text files ({info['text_bytes'] / 1e6:.1f} MB) in "
                f"{info['folders']:,} folders, {info['ignored']} ignored files, "
                f"{info['binaries']} binaries; generated in {time.monotonic() - t0:.1f} s",
                flush=True,
            )
        recreate(args.dsn, IMPORT_DB)
        env = dbcode_env(home, dsn)
        timed([args.dbcode, "workspaces"], env)  # migrate the schema, untimed
        gitenv = git_env(home)
        dbcode_s: list[float] = []
        git_s: list[float] = []
        for i in range(args.repeats):
            took, out = timed([args.dbcode, "import", str(tree), "--workspace", f"imp-{i}"], env)
            dbcode_s.append(took)
            print(f"  dbcode import #{i + 1}: {took:.2f} s  ({import_line(out)})", flush=True)
            os.sync()
            # A fresh repository outside the tree each time (deleting 10,000 objects between
            # runs would load the disk during the next run); the tree is its work tree.
            genv = dict(gitenv, GIT_DIR=str(work / f"git-{i}"), GIT_WORK_TREE=str(tree))
            phases = []
            for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "x"]):
                t0 = time.monotonic()
                proc = subprocess.run(["git", *cmd], env=genv, cwd=tree, capture_output=True)
                if proc.returncode != 0:
                    raise SystemExit(f"git {cmd[0]} failed: {proc.stderr.decode()}")
                phases.append(time.monotonic() - t0)
            git_s.append(sum(phases))
            print(
                f"  git init+add+commit #{i + 1}: {sum(phases):.2f} s  (init {phases[0]:.2f}, "
                f"add {phases[1]:.2f}, commit {phases[2]:.2f})",
                flush=True,
            )
        embedded: list[tuple[str, float, str]] = []
        if not args.no_embedded:
            embedded_home.mkdir()
            eenv = dbcode_env(embedded_home, None)
            for label, ws in (("first use (initdb + start)", "emb-1"), ("server running", "emb-2")):
                took, out = timed([args.dbcode, "import", str(tree), "--workspace", ws], eenv)
                embedded.append((label, took, import_line(out)))
                print(f"  embedded, {label}: {took:.2f} s  ({import_line(out)})", flush=True)
        if args.profile:
            prof = work / "import.prof"
            cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "lsp_dbcode"]
            took, _ = timed([*cmd, "import", str(tree), "--workspace", "imp-prof"], env)
            print(f"\ncProfile of one dbcode import ({took:.2f} s under the profiler):")
            stats = pstats.Stats(str(prof))
            stats.sort_stats("cumulative").print_stats(25)
            stats.sort_stats("tottime").print_stats(15)
    finally:
        stop_embedded(embedded_home)
        drop(args.dsn, IMPORT_DB)
        shutil.rmtree(work, ignore_errors=True)

    d, g = statistics.median(dbcode_s), statistics.median(git_s)
    pairs = [x / y for x, y in zip(dbcode_s, git_s, strict=True)]
    print()
    print("| tool | runs (s) | median s | ratio of medians to git |")
    print("|---|---|---:|---:|")
    host = psycopg.conninfo.conninfo_to_dict(dsn).get("host")
    runs = ", ".join(f"{x:.2f}" for x in dbcode_s)
    print(f"| dbcode import (PostgreSQL at {host}) | {runs} | {d:.2f} | {d / g:.2f} |")
    print(f"| git init + add -A + commit | {', '.join(f'{x:.2f}' for x in git_s)} | {g:.2f} | 1 |")
    for label, took, _ in embedded:
        print(f"| dbcode import, embedded, {label} | {took:.2f} | {took:.2f} | {took / g:.2f} |")
    print(
        f"\ndbcode/git run by run (each dbcode run next to its git run): "
        f"{', '.join(f'{x:.2f}' for x in pairs)}; median {statistics.median(pairs):.2f}"
    )
    print(f"\ntotal {time.monotonic() - t_start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
