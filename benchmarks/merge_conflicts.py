"""Conflict rate of our 3-way merge on realistic concurrent edits, beside ``git merge-file`` on
the same three texts in the same run (issue 19).

Run: ``python benchmarks/merge_conflicts.py [--seed 1] [--cases 40]``.

Three-way cases are made from real Python code: modules of the standard library of the
running interpreter, chosen by ``--seed``. For each module and edit kind, two sides edit the
same base (the module as it is):

* ``append_fn``: both add a function at the end;
* ``add_import``: both add an import before the module's first import;
* ``two_fns``: the two sides add a statement to two different functions;
* ``rename_local``: one side renames a local variable throughout one function while the other
  adds a statement to another function;
* ``same_typo``: the base has a misspelled name in one line; both fix it, and each also adds a
  statement to a different function;
* ``same_line``: both change the value of the same one-line assignment or return, differently
  (a true overlap: both tools must conflict). Values whose characters all survive in a new
  value (``line`` -> ``f_line_3()``) are skipped: rule 4 counts characters, and there both
  sides only inserted around them;
* ``same_spot`` (beyond the issue's six): both add a statement at the same place of the same
  function (whole lines inserted at one line boundary);
* ``same_column`` (beyond the issue's six, the typing of issue 19): both insert a different
  first argument ``name, `` at the same column, in the same call.

Both tools merge the same (base, ours, theirs) texts: ``merge3(base, ours, theirs)`` (save
mode, conflict blocks) and ``git merge-file -p ours base theirs``. Printed per kind: cases,
cases with conflicts for each tool, the share of clean results that parse (``ast.parse``), and
cases where text was lost: an identifier one side introduced that its result holds fewer times
than that side does (conflict blocks hold both sides, so they count). Also the median time per
merge of ours in-process; git's includes starting a process, so it is shown, not compared.

``--before REV`` also runs ``lsp_dbcode/text/merge.py`` as it was at git revision REV (e.g.
``main``) on the same cases, for its conflicts and time per merge beside ours (a hot path: every
rebase of an edited buffer runs a merge), and times both, interleaved, on a heavy case: a
5,000-line file (170 KB) where one side changed a word on every 50th line and rewrote 80
lines, the other changed a word on every 50th line in between.

Targets: no conflict where the sides change no overlapping characters (every kind but
``same_line``), a conflict on every ``same_line`` case, no text lost, and no fewer clean
results that parse than git's.
"""

from __future__ import annotations

import argparse
import ast
import io
import random
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import tokenize
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsp_dbcode.text.merge import merge3

KINDS = (
    "append_fn",
    "add_import",
    "two_fns",
    "rename_local",
    "same_typo",
    "same_line",
    "same_spot",
    "same_column",
)
OVERLAPPING = {"same_line"}
SOURCE_BYTES_MAX = 200_000  # skip huge modules (git and we both handle them; they slow the run)


@dataclass
class Case:
    kind: str
    module: str
    base: str
    ours: str
    theirs: str
    introduced: dict[str, list[str]]  # side -> identifiers that side introduced


@dataclass
class Outcome:
    conflicted: bool
    parses: bool
    lost: bool


def stdlib_modules() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for path in sorted(root.glob("*.py")) + sorted(root.glob("*/*.py")):
        parts = set(path.relative_to(root).parts)
        if parts & {"test", "tests", "idle_test", "site-packages", "lib2to3"}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
            if len(text) > SOURCE_BYTES_MAX or "\r" in text:
                continue
            ast.parse(text)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        found.append(path)
    return found


def functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Functions and methods (not nested in other functions), with a body of 2+ lines."""
    out = []
    for node in tree.body:
        for sub in [node, *(node.body if isinstance(node, ast.ClassDef) else [])]:
            if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                body = sub.body
                if body[0].lineno > sub.lineno and (body[-1].end_lineno or 0) > body[0].lineno:
                    out.append(sub)
    return out


def add_statement(lines: list[str], fn: ast.FunctionDef | ast.AsyncFunctionDef, stmt: str) -> None:
    """Insert ``stmt`` as the function's last statement (lines: keepends, 0-based)."""
    last = fn.body[-1]
    first_line = lines[fn.body[0].lineno - 1]
    indent = first_line[: len(first_line) - len(first_line.lstrip())]
    at = last.end_lineno or last.lineno
    lines.insert(at, f"{indent}{stmt}\n")


def pick_two(rng: random.Random, fns: list) -> tuple:
    a, b = sorted(rng.sample(range(len(fns)), 2))
    return fns[a], fns[b]


def locals_of(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = {a.arg for a in [*fn.args.args, *fn.args.kwonlyargs, *fn.args.posonlyargs]}
    names = {
        n.id
        for n in ast.walk(fn)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store) and len(n.id) > 1
    }
    nested = any(
        isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda)
        for n in ast.walk(fn)
        if n is not fn
    )
    return [] if nested else sorted(names - args)


def rename_in(text: str, fn: ast.FunctionDef | ast.AsyncFunctionDef, old: str, new: str) -> str:
    """Rename the NAME tokens ``old`` inside the function's lines (not attributes)."""
    lines = text.splitlines(keepends=True)
    start, end = fn.lineno, fn.end_lineno or fn.lineno
    prev = None
    edits = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if (
            tok.type == tokenize.NAME
            and tok.string == old
            and start <= tok.start[0] <= end
            and not (prev is not None and prev.string == ".")
        ):
            edits.append(tok.start)
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            prev = tok
    for line, col in reversed(edits):
        row = lines[line - 1]
        lines[line - 1] = row[:col] + new + row[col + len(old) :]
    return "".join(lines)


def make_case(kind: str, module: str, base: str, rng: random.Random, k: int) -> Case | None:
    tree = ast.parse(base)
    lines = base.splitlines(keepends=True)
    fns = functions(tree)
    o_id, t_id = f"ours_{kind}_{k}", f"theirs_{kind}_{k}"
    ours_lines, theirs_lines = list(lines), list(lines)
    if kind == "append_fn":
        tail = "" if base.endswith("\n") else "\n"
        ours = base + tail + f"\n\ndef {o_id}():\n    return {k}\n"
        theirs = base + tail + f"\n\ndef {t_id}():\n    return {k + 1}\n"
        return Case(kind, module, base, ours, theirs, {"ours": [o_id], "theirs": [t_id]})
    if kind == "add_import":
        imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        if not imports:
            return None
        at = imports[0].lineno - 1
        ours_lines.insert(at, f"import json as {o_id}\n")
        theirs_lines.insert(at, f"import os as {t_id}\n")
    elif kind == "same_spot":
        if not fns:
            return None
        fn = rng.choice(fns)
        add_statement(ours_lines, fn, f"{o_id} = {k}")
        add_statement(theirs_lines, fn, f"{t_id} = {k}")
    elif kind in ("two_fns", "same_typo"):
        if len(fns) < 2:
            return None
        f1, f2 = pick_two(rng, fns)
        # The later function first: inserting lines shifts only what comes after.
        add_statement(theirs_lines, f2, f"{t_id} = {k}")
        add_statement(ours_lines, f1, f"{o_id} = {k}")
        if kind == "same_typo":
            words = [
                (n.lineno, n.col_offset, n.id)
                for n in ast.walk(tree)
                if isinstance(n, ast.Name) and len(n.id) >= 5 and n.id.isidentifier()
            ]
            if not words:
                return None
            line, col, name = rng.choice(words)
            typo = name[0] + name[2] + name[1] + name[3:]
            if typo == name:
                return None
            row = lines[line - 1]
            if row[col : col + len(name)] != name:
                return None
            bad = row[:col] + typo + row[col + len(name) :]
            base_lines = list(lines)
            base_lines[line - 1] = bad
            base = "".join(base_lines)
            # Both sides fix it (their own inserted lines are elsewhere: same line index
            # unless the insertion came before it).
            for side in (ours_lines, theirs_lines):
                idx = next(i for i, r in enumerate(side) if r == row and i >= line - 1)
                side[idx] = row
    elif kind == "rename_local":
        if len(fns) < 2:
            return None
        f1, f2 = pick_two(rng, fns)
        if rng.random() < 0.5:
            renamed, other = f1, f2
        else:
            renamed, other = f2, f1
        names = locals_of(renamed)
        if not names:
            return None
        old = rng.choice(names)
        ours = rename_in(base, renamed, old, f"{old}_{o_id}")
        add_statement(theirs_lines, other, f"{t_id} = {k}")
        theirs = "".join(theirs_lines)
        return Case(kind, module, base, ours, theirs, {"ours": [f"{old}_{o_id}"], "theirs": [t_id]})
    elif kind == "same_column":
        calls = [
            n
            for fn in fns
            for n in ast.walk(fn)
            if isinstance(n, ast.Call)
            and n.args
            and not isinstance(n.args[0], ast.Starred)
            and n.args[0].lineno == n.lineno
        ]
        if not calls:
            return None
        call = rng.choice(calls)
        row = lines[call.lineno - 1]
        # col_offset counts UTF-8 bytes: map it to characters.
        at = len(row.encode("utf-8")[: call.args[0].col_offset].decode("utf-8"))
        ours_lines[call.lineno - 1] = row[:at] + f"{o_id}, " + row[at:]
        theirs_lines[call.lineno - 1] = row[:at] + f"{t_id}, " + row[at:]
    elif kind == "same_line":
        simple = [
            n
            for fn in fns
            for n in ast.walk(fn)
            if isinstance(n, ast.Assign | ast.Return)
            and n.value is not None
            and n.lineno == n.end_lineno
            and n.value.end_col_offset is not None
        ]
        if not simple:
            return None
        node = rng.choice(simple)
        assert node.value is not None and node.value.end_col_offset is not None
        row = lines[node.lineno - 1]
        a, b = node.value.col_offset, node.value.end_col_offset
        value = row[a:b]
        if _subsequence(value, f"{o_id}()") or _subsequence(value, f"{t_id}()"):
            return None  # "line" -> "f_line()" only inserts around it: no overlap by rule 4
        ours_lines[node.lineno - 1] = row[:a] + f"{o_id}()" + row[b:]
        theirs_lines[node.lineno - 1] = row[:a] + f"{t_id}()" + row[b:]
    ours, theirs = "".join(ours_lines), "".join(theirs_lines)
    return Case(kind, module, base, ours, theirs, {"ours": [o_id], "theirs": [t_id]})


def _subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(char in it for char in short)


def judge(case: Case, text: str, conflicted: bool) -> Outcome:
    parses = False
    if not conflicted:
        try:
            ast.parse(text)
            parses = True
        except SyntaxError:
            pass
    lost = False
    for side, names in case.introduced.items():
        side_text = case.ours if side == "ours" else case.theirs
        for name in names:
            pattern = re.compile(rf"\b{re.escape(name)}\b")
            if len(pattern.findall(text)) < len(pattern.findall(side_text)):
                lost = True
    return Outcome(conflicted, parses, lost)


def run_git(case: Case, tmp: Path) -> tuple[Outcome, float]:
    for name in ("ours", "base", "theirs"):
        (tmp / name).write_text(getattr(case, name), encoding="utf-8")
    started = time.perf_counter()
    proc = subprocess.run(
        [
            "git",
            "merge-file",
            "-p",
            "-L",
            "mine",
            "-L",
            "base",
            "-L",
            "theirs",
            str(tmp / "ours"),
            str(tmp / "base"),
            str(tmp / "theirs"),
        ],
        capture_output=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode < 0 or proc.returncode > 127:
        raise RuntimeError(f"git merge-file failed: {proc.stderr.decode()}")
    text = proc.stdout.decode("utf-8")
    return judge(case, text, proc.returncode > 0), elapsed


def run_ours(case: Case, merge: Callable[..., Any] = merge3) -> tuple[Outcome, float]:
    started = time.perf_counter()
    result = merge(case.base, case.ours, case.theirs)
    elapsed = time.perf_counter() - started
    return judge(case, result.text, not result.clean), elapsed


def load_merge_at(rev: str) -> Callable[..., Any]:
    """merge3 of lsp_dbcode/text/merge.py at git revision ``rev``, as a module of its own."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(
        ["git", "-C", str(root), "show", f"{rev}:lsp_dbcode/text/merge.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType(f"merge_at_{rev}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"merge.py@{rev}", "exec"), module.__dict__)
    return module.merge3  # type: ignore[no-any-return]


HEAVY_RUNS = 7


def heavy(before: Callable[..., Any], rev: str) -> None:
    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "x", "y", "(", ")", "=", " + "]
    lines = [" ".join(rng.choice(words) for _ in range(10)) + "\n" for _ in range(5000)]
    base = "".join(lines)
    ours, theirs = list(lines), list(lines)
    for i in range(0, 5000, 50):
        ours[i] = ours[i].replace("alpha", "ALPHA")
    for i in range(25, 5000, 50):
        theirs[i] = theirs[i].replace("beta", "BETA x")
    ours[100:180] = ["".join(rng.choice("abcdef \n") for _ in range(60)) + "\n" for _ in range(80)]
    texts = (base, "".join(ours), "".join(theirs))
    times: dict[str, list[float]] = {"ours": [], "before": []}
    for _ in range(HEAVY_RUNS):
        for name, merge in (("ours", merge3), ("before", before)):
            started = time.perf_counter()
            merge(*texts)
            times[name].append(time.perf_counter() - started)
    ours_ms = statistics.median(times["ours"]) * 1e3
    before_ms = statistics.median(times["before"]) * 1e3
    print(
        f"heavy case ({len(base)} chars, {HEAVY_RUNS} interleaved runs): ours {ours_ms:.1f} ms, "
        f"merge.py at {rev} {before_ms:.1f} ms (ours / before: {ours_ms / before_ms:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=40, help="cases per edit kind")
    parser.add_argument("--before", help="git revision whose merge.py to run beside ours")
    args = parser.parse_args()
    before = load_merge_at(args.before) if args.before else None
    before_times: list[float] = []
    before_stats: dict[str, list[int]] = {}  # kind -> [conflicts, clean that parse, lost]
    rng = random.Random(args.seed)
    modules = stdlib_modules()
    print(
        f"python {sys.version.split()[0]}, {len(modules)} stdlib modules, seed {args.seed}, "
        f"{args.cases} cases per kind",
        flush=True,
    )
    header = (
        f"{'kind':<13} {'cases':>5}  {'conflicts ours':>14} {'git':>4}  "
        f"{'clean parse ours':>16} {'git':>9}  {'lost ours':>9} {'git':>4}"
    )
    print(header)
    ours_times: list[float] = []
    git_times: list[float] = []
    totals: dict[str, list[int]] = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="merge-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for kind in KINDS:
            outcomes: list[tuple[Outcome, Outcome]] = []
            attempts = 0
            while len(outcomes) < args.cases and attempts < args.cases * 20:
                attempts += 1
                path = rng.choice(modules)
                case = make_case(kind, path.name, path.read_text(encoding="utf-8"), rng, attempts)
                if case is None or case.ours == case.theirs:
                    continue
                mine, t_ours = run_ours(case)
                git, t_git = run_git(case, tmp)
                if before is not None:
                    old, t_old = run_ours(case, before)
                    before_times.append(t_old)
                    stats = before_stats.setdefault(kind, [0, 0, 0])
                    stats[0] += old.conflicted
                    stats[1] += old.parses
                    stats[2] += old.lost
                ours_times.append(t_ours)
                git_times.append(t_git)
                outcomes.append((mine, git))
            n = len(outcomes)

            def count(
                pick: Callable[[tuple[Outcome, Outcome]], bool],
                outcomes: list[tuple[Outcome, Outcome]] = outcomes,
            ) -> int:
                return sum(1 for o in outcomes if pick(o))

            c_ours, c_git = count(lambda o: o[0].conflicted), count(lambda o: o[1].conflicted)
            p_ours, p_git = count(lambda o: o[0].parses), count(lambda o: o[1].parses)
            l_ours, l_git = count(lambda o: o[0].lost), count(lambda o: o[1].lost)
            share_o = f"{p_ours}/{n - c_ours}" if n - c_ours else "-"
            share_g = f"{p_git}/{n - c_git}" if n - c_git else "-"
            print(
                f"{kind:<13} {n:>5}  {c_ours:>14} {c_git:>4}  {share_o:>16} {share_g:>9}  "
                f"{l_ours:>9} {l_git:>4}",
                flush=True,
            )
            totals[kind] = [n, c_ours, c_git, p_ours, p_git, l_ours, l_git]
            want_conflicts = n if kind in OVERLAPPING else 0
            ok &= c_ours == want_conflicts and l_ours == 0 and p_ours >= p_git
    print(
        f"median time per merge: ours {statistics.median(ours_times) * 1e3:.2f} ms in-process; "
        f"git merge-file {statistics.median(git_times) * 1e3:.2f} ms including its process start"
    )
    if before is not None:
        print(
            f"merge.py at {args.before}, per kind (conflicts / clean that parse / lost): "
            + ", ".join(f"{k} {'/'.join(map(str, before_stats.get(k, [0, 0, 0])))}" for k in KINDS)
            + f"; median time per merge {statistics.median(before_times) * 1e3:.2f} ms "
            f"(ours / before: "
            f"{statistics.median(ours_times) / statistics.median(before_times):.2f})"
        )
    if before is not None:
        heavy(before, args.before)
    print("targets met" if ok else "TARGETS MISSED")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
