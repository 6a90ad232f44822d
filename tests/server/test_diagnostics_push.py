"""Pushed ruff diagnostics through the real server: relayed as JSON, they say what the ruff CLI
says about the buffer, in the session's position encoding, after any typing."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from lsprotocol import types

from lsp_dbcode.analysis import Diagnostic, RuffEngine
from lsp_dbcode.store import Store
from lsp_dbcode.text.positions import Encoding, LineIndex
from lsp_dbcode.uris import make_uri
from tests.server.editor import Editor, wait_until

TEXT = (
    "import os\n"
    's = "😀 中文 e\u0301"; import sys\r\n'
    "\n"
    "\n"
    "def f(a):\n"
    "    unused = '\U0001d54f\U0001d54f'\n"
    "    return a + undefined_name\n"
)


@pytest.fixture
async def cli_ruff() -> AsyncIterator[RuffEngine]:
    async with RuffEngine() as engine:
        yield engine


def expected_json(text: str, found: list[Diagnostic], encoding: Encoding) -> list[dict]:
    """What the server must publish for the CLI's diagnostics of ``text``."""
    index = LineIndex(text)

    def pos(line: int, col: int) -> dict[str, int]:
        ln, ch = index.position(index.line_start(line) + col, encoding)
        return {"line": ln, "character": ch}

    out = []
    for d in found:
        item: dict = {
            "range": {
                "start": pos(d.span.start.line, d.span.start.col),
                "end": pos(d.span.end.line, d.span.end.col),
            },
            "message": d.message,
            "severity": 1 if d.severity == "error" else 2,
            "code": d.code,
            "source": "ruff",
        }
        if d.code_url:
            item["codeDescription"] = {"href": d.code_url}
        if d.tags:
            item["tags"] = [1 if t == "unnecessary" else 2 for t in d.tags]
        out.append(item)
    return out


def published(ed: Editor, uri: str) -> list[dict]:
    """The editor's ruff diagnostics as LSP JSON (as they came over the wire)."""
    convert = ed.client.protocol._converter
    return [convert.unstructure(d) for d in ed.diagnostics(uri, "ruff")]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8", "utf-32"])
async def test_typing_gives_what_the_cli_says_in_the_session_encoding(
    database_url: str, store: Store, workspace: str, cli_ruff: RuffEngine, encoding: str
) -> None:
    await store.write(workspace, "pkg/m.py", TEXT, agent="seed")
    uri = make_uri(workspace, "pkg/m.py")
    ed = await Editor.start(database_url, "typist", encodings=[encoding])
    try:
        assert ed.encoding == encoding
        buf = await ed.open(uri)
        rng = random.Random(4)
        snippets = ["x", "😀", "\n", "\r\n", "import re\n", "中", "", "    y = 1\n", "\U0001d54f"]
        for n in range(40):
            index = LineIndex(buf.text)
            start = rng.randrange(len(buf.text) + 1)
            end = min(len(buf.text), start + rng.choice([0, 0, 1, 2]))
            # An editor never puts a position between "\r" and "\n".
            start -= index.is_inside_line_break(start)
            end += index.is_inside_line_break(end)
            ed.type_at_offset(uri, start, rng.choice(snippets), delete=end - start)
            if n % 10 == 9 or n == 39:
                found = await cli_ruff.check(buf.text, "pkg/m.py", {})
                want = expected_json(buf.text, found, ed.encoding)
                await wait_until(lambda w=want: published(ed, uri) == w, what=f"edit {n}")
        assert any(d["code"] == "F821" for d in published(ed, uri)) or "undefined" not in buf.text
    finally:
        await ed.stop()


async def test_a_push_client_may_still_pull(
    database_url: str, store: Store, workspace: str, cli_ruff: RuffEngine
) -> None:
    """Pushed as JSON only; a textDocument/diagnostic request gets the same as objects."""
    await store.write(workspace, "m.py", TEXT, agent="seed")
    uri = make_uri(workspace, "m.py")
    ed = await Editor.start(database_url, "puller")
    try:
        buf = await ed.open(uri)
        ed.type_at_offset(uri, 0, "import re\n")
        found = await cli_ruff.check(buf.text, "m.py", {})
        want = expected_json(buf.text, found, ed.encoding)
        await wait_until(lambda: published(ed, uri) == want, what="pushed")
        report = await ed.client.text_document_diagnostic_async(
            types.DocumentDiagnosticParams(text_document=types.TextDocumentIdentifier(uri))
        )
        convert = ed.client.protocol._converter
        assert [convert.unstructure(d) for d in report.items] == want
    finally:
        await ed.stop()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8"])
async def test_a_burst_of_typing_never_publishes_stale_diagnostics(
    database_url: str, store: Store, workspace: str, cli_ruff: RuffEngine, encoding: str
) -> None:
    """Edits sent faster than ruff answers (each one handed to ruff's child before the session
    applies it, when it can be): every publish describes exactly the text of the version it
    names, versions only grow, and the last publish is for the last edit."""
    await store.write(workspace, "burst.py", TEXT, agent="seed")
    uri = make_uri(workspace, "burst.py")
    ed = await Editor.start(database_url, "burst", encodings=[encoding])
    seen: list[tuple[int | None, list[dict]]] = []
    protocol = ed.client.protocol
    handle = protocol._handle_notification

    def spy(method: str, params: Any) -> Any:
        if method == types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS and params.uri == uri:
            diags = [protocol._converter.unstructure(d) for d in params.diagnostics]
            seen.append((params.version, [d for d in diags if d.get("source") == "ruff"]))
        return handle(method, params)

    protocol._handle_notification = spy  # type: ignore[method-assign]
    try:
        buf = await ed.open(uri)
        texts = {buf.version: buf.text}
        await wait_until(lambda: seen, what="the first publish")
        rng = random.Random(11)
        snippets = ["x", "undefined_name ", "😀", "\n", "import re\n", "中", "", "\U0001d54f"]
        for n in range(60):
            index = LineIndex(buf.text)
            start = rng.randrange(len(buf.text) + 1)
            end = min(len(buf.text), start + rng.choice([0, 0, 1]))
            start -= index.is_inside_line_break(start)
            end += index.is_inside_line_break(end)
            ed.type_at_offset(uri, start, rng.choice(snippets), delete=end - start)
            texts[buf.version] = buf.text
            if n % 5 == 4:  # let the server read some, and answer some, meanwhile
                await asyncio.sleep(0.002 * rng.randrange(4))
        last = buf.version
        await wait_until(lambda: seen[-1][0] == last, what="the publish of the last edit")
        versions = [v for v, _ in seen]
        assert None not in versions and versions == sorted(versions)  # type: ignore[type-var]
        for version, diags in seen:
            assert version is not None
            text = texts[version]
            found = await cli_ruff.check(text, "burst.py", {})
            assert diags == expected_json(text, found, ed.encoding), version
    finally:
        await ed.stop()
