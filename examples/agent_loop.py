"""An agent loop over lsp_dbcode.client: read, edit, check, write, react to others' changes.

    python examples/agent_loop.py WORKSPACE PATH [--wait SECONDS]

Removes unused imports from PATH (a Python file of WORKSPACE) the way an agent would: it reads
the file, edits the text, checks the edit before writing it, writes it with compare-and-swap on
the revision it read (re-reading on a conflict), and then prints the changesets others commit
until none comes for --wait seconds. The database: $DBCODE_DATABASE_URL, else the embedded one.
"""

from __future__ import annotations

import argparse
import asyncio

from lsp_dbcode.client import Conflict, connect


def without_unused_imports(text: str, unused: set[int]) -> str:
    """The text without the lines (1-based) that hold only an unused import."""
    lines = text.splitlines(keepends=True)
    return "".join(line for i, line in enumerate(lines, 1) if i not in unused)


async def main(workspace: str, path: str, wait_s: float) -> int:
    async with await connect(workspace, agent="import-janitor") as db:
        for _attempt in range(3):
            f = await db.read(path)
            found = await db.diagnostics(path)  # the current revision's findings
            unused = {x.line for x in found.findings if x.code == "F401"}
            if not unused:
                print(f"{path} r{f.revision}: nothing to do")
                break
            text = without_unused_imports(f.text, unused)
            check = await db.diagnostics(path, text)  # the edit, before it is written
            if check.errors:
                print(f"{path}: the edit would break it: {check.findings[0]}")
                return 1
            try:
                done = await db.write(path, text, base=f.revision)
            except Conflict as c:  # someone wrote first: read again and redo the edit
                print(f"{path}: conflict, now at r{c.current_revision}; retrying")
                continue
            left = len(done.check.findings) if done.check else 0
            print(f"{path}: r{done.revision} (seq {done.seq}), {left} finding(s) left")
            break
        async for cs in db.changes(timeout_s=wait_s):  # others' changes, as they commit
            print(f"seq {cs.seq} by {cs.agent}: " + ", ".join(c.path for c in cs.files))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workspace")
    p.add_argument("path")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for changes")
    a = p.parse_args()
    raise SystemExit(asyncio.run(main(a.workspace, a.path, a.wait)))
