"""Lint, format and structure through the real server (ruff binary, tree-sitter grammars)."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lsprotocol import types
from ruff.__main__ import find_ruff_bin

from lsp_dbcode.store import Store
from lsp_dbcode.uris import make_uri
from tests.server.editor import Editor, wait_until
from tests.server.test_sync import db_eventually

RUFF = find_ruff_bin()


@pytest.fixture
async def editor(database_url: str) -> AsyncIterator[Editor]:
    ed = await Editor.start(database_url, "linter")
    yield ed
    await ed.stop()


def ruff_cli(args: list[str], text: str, cwd: Path, filename: str) -> str:
    """What the ruff CLI itself makes of ``text`` (the reference)."""
    out = subprocess.run(
        [RUFF, *args, "--no-cache", "--stdin-filename", str(cwd / filename), "-"],
        input=text.encode(),
        capture_output=True,
        cwd=cwd,
        env={"XDG_CONFIG_HOME": str(cwd / ".xdg"), "PATH": "/usr/bin:/bin"},
    )
    return out.stdout.decode()


def ruff_diags(ed: Editor, uri: str) -> list[types.Diagnostic]:
    return ed.diagnostics(uri, "ruff")


async def apply(ed: Editor, edit: types.WorkspaceEdit) -> None:
    ed._apply_edit(types.ApplyWorkspaceEditParams(edit=edit))


async def code_actions(
    ed: Editor, uri: str, rng: types.Range, only: list[str] | None = None
) -> list[types.CodeAction]:
    res = await ed.client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri),
            range=rng,
            context=types.CodeActionContext(diagnostics=[], only=only),  # type: ignore[arg-type]
        )
    )
    return [a for a in res or [] if isinstance(a, types.CodeAction)]


async def test_unused_import_diagnostic_quickfix_fixall_organize(
    editor: Editor, store: Store, workspace: str, tmp_path: Path
) -> None:
    await store.write(workspace, "pkg/app.py", "def f():\n    return 1\n", agent="seed")
    uri = make_uri(workspace, "pkg/app.py")
    buf = await editor.open(uri)
    await wait_until(lambda: uri in editor.client.diagnostics, what="first diagnostics")
    assert ruff_diags(editor, uri) == []
    editor.edit(uri, (0, 0), (0, 0), "import os\n")  # typing an unused import
    diags = await wait_until(
        lambda: [d for d in ruff_diags(editor, uri) if d.code == "F401"], what="F401"
    )
    (f401,) = diags
    assert f401.range == types.Range(types.Position(0, 7), types.Position(0, 9))
    assert f401.code_description and "unused-import" in f401.code_description.href
    assert list(f401.tags or []) == [types.DiagnosticTag.Unnecessary]
    actions = await code_actions(editor, uri, f401.range)
    fix = next(
        a
        for a in actions
        if a.title.startswith("Ruff (F401)") and "noqa" not in a.title and "Disable" not in a.title
    )
    noqa = next(a for a in actions if a.title == "Ruff (F401): Disable for this line")
    await apply(editor, noqa.edit)  # type: ignore[arg-type]
    assert buf.text.splitlines()[0] == "import os  # noqa: F401"
    editor.edit(uri, (0, 9), (0, len("import os  # noqa: F401")), "")
    await wait_until(lambda: [d for d in ruff_diags(editor, uri) if d.code == "F401"])
    actions = await code_actions(editor, uri, f401.range)
    fix = next(a for a in actions if a.title.startswith("Ruff (F401)") and "Disable" not in a.title)
    await apply(editor, fix.edit)  # type: ignore[arg-type]
    assert buf.text == "def f():\n    return 1\n"
    await wait_until(lambda: not ruff_diags(editor, uri), what="diagnostic cleared")

    messy = "import sys\nimport os\nimport json\n\n\ndef g():\n    return os.sep, sys.argv\n"
    (tmp_path / "pkg").mkdir()
    whole = types.Range(types.Position(0, 0), types.Position(0, 0))
    for name, kind, reference in (
        ("fixall.py", "source.fixAll.ruff", ["check", "--fix"]),
        ("organize.py", "source.organizeImports.ruff", ["check", "--select", "I", "--fix"]),
    ):
        await store.write(workspace, f"pkg/{name}", messy, agent="seed")
        u = make_uri(workspace, f"pkg/{name}")
        b = await editor.open(u)
        (action,) = await code_actions(editor, u, whole, [kind])
        await apply(editor, action.edit)  # type: ignore[arg-type]
        assert b.text == ruff_cli(reference, messy, tmp_path, f"pkg/{name}")
        assert b.text != messy


async def test_ruff_toml_in_subfolder_and_changes_by_others(
    editor: Editor, store: Store, workspace: str
) -> None:
    src = "import os\nx = 1 ;\n"
    await store.write(workspace, "a/sub/m.py", src, agent="seed")
    await store.write(workspace, "b/m.py", src, agent="seed")
    uri_a, uri_b = make_uri(workspace, "a/sub/m.py"), make_uri(workspace, "b/m.py")
    await editor.open(uri_a)
    await editor.open(uri_b)

    def codes(uri: str) -> set[str]:
        return {str(d.code) for d in ruff_diags(editor, uri)}

    await wait_until(lambda: "F401" in codes(uri_a) and "F401" in codes(uri_b))
    assert "E703" not in codes(uri_a)
    # Another agent stores a config in a/: it re-lints the open buffer under a/ only.
    await store.write(workspace, "a/ruff.toml", '[lint]\nselect = ["E7"]\n', agent="other-agent")
    await wait_until(lambda: codes(uri_a) == {"E703"}, what="a/ruff.toml applied")
    assert "F401" in codes(uri_b)
    await store.write(
        workspace, "a/ruff.toml", '[lint]\nselect = ["F"]\nignore = ["F401"]\n', agent="other"
    )
    await wait_until(lambda: codes(uri_a) == set(), what="a/ruff.toml changed again")
    assert "F401" in codes(uri_b)


async def test_formatting_equals_ruff_format_and_range(
    editor: Editor, store: Store, workspace: str, tmp_path: Path
) -> None:
    text = "x = {  'a':1 }\ny=[1,\n2]\n\n\n\ndef  f( a ):\n  return a\n"
    await store.write(workspace, "fmt.py", text, agent="seed")
    uri = make_uri(workspace, "fmt.py")
    buf = await editor.open(uri)
    edits = await editor.client.text_document_formatting_async(
        types.DocumentFormattingParams(
            text_document=types.TextDocumentIdentifier(uri),
            options=types.FormattingOptions(tab_size=4, insert_spaces=True),
        )
    )
    assert edits
    await apply(
        editor,
        types.WorkspaceEdit(
            document_changes=[
                types.TextDocumentEdit(
                    text_document=types.OptionalVersionedTextDocumentIdentifier(
                        uri=uri, version=buf.version
                    ),
                    edits=list(edits),
                )
            ]
        ),
    )
    assert buf.text == ruff_cli(["format"], text, tmp_path, "fmt.py")
    # Range formatting touches only the range.
    editor.edit(uri, (0, 0), (len(buf.text.splitlines()), 0), text)
    edits = await editor.client.text_document_range_formatting_async(
        types.DocumentRangeFormattingParams(
            text_document=types.TextDocumentIdentifier(uri),
            range=types.Range(types.Position(6, 0), types.Position(7, 10)),
            options=types.FormattingOptions(tab_size=4, insert_spaces=True),
        )
    )
    assert edits and all(e.range.start.line >= 6 for e in edits)
    before = buf.text.splitlines()
    await apply(
        editor,
        types.WorkspaceEdit(
            document_changes=[
                types.TextDocumentEdit(
                    text_document=types.OptionalVersionedTextDocumentIdentifier(
                        uri=uri, version=buf.version
                    ),
                    edits=list(edits),
                )
            ]
        ),
    )
    after = buf.text.splitlines()
    assert after[:3] == before[:3]  # the untouched lines above the range
    assert "def f(a):" in after and "    return a" in after


SYNTAX_CASES = [
    ("bad.js", "function f( {\n  return 1;\n}\n", 0),
    ("bad.ts", "let x: number = ;\n", 0),
    ("bad.rs", "fn main() {\n    let x = ;\n}\n", 1),
    ("bad.go", "package main\n\nfunc main( {\n}\n", 2),
    ("bad.json", '{\n  "a": 1,\n  "b": \n}\n', 2),
    ("bad.c", "int main() {\n  return 0\n}\n", 1),
]


async def test_syntax_errors_in_several_languages(
    editor: Editor, store: Store, workspace: str
) -> None:
    for path, text, line in SYNTAX_CASES:
        await store.write(workspace, path, text, agent="seed")
        uri = make_uri(workspace, path)
        await editor.open(uri, language_id=path.rsplit(".", 1)[1])
        diags = await wait_until(lambda u=uri: editor.diagnostics(u, "syntax"), what=path)
        assert diags[0].severity == types.DiagnosticSeverity.Error
        assert diags[0].message.startswith("Syntax error"), diags[0].message
        assert line - 1 <= diags[0].range.start.line <= line + 1, (path, diags[0])
    # Fixing the text clears the error, incrementally.
    uri = make_uri(workspace, "bad.json")
    editor.edit(uri, (2, 7), (2, 7), "2")
    await wait_until(lambda: not editor.diagnostics(uri, "syntax"), what="json fixed")


SYMBOL_CASES = [
    (
        "s.py",
        "class A:\n    def m(self):\n        pass\n\n\ndef top():\n    pass\n",
        {"A": 5, "top": 12},
        "m",
    ),
    (
        "s.ts",
        "class Shape {\n  area(): number { return 1; }\n}\nfunction draw() {}\n",
        {"Shape": 5, "draw": 12},
        "area",
    ),
    (
        "s.rs",
        "struct P { x: i32 }\nimpl P {\n    fn new() -> P { P { x: 1 } }\n}\nfn run() {}\n",
        {"P": 23, "run": 12},
        None,
    ),
    (
        "s.go",
        "package m\n\ntype T struct{}\n\nfunc (t T) M() {}\n\nfunc F() {}\n",
        {"T": 23, "F": 12},
        None,
    ),
]


async def test_document_symbols(editor: Editor, store: Store, workspace: str) -> None:
    for path, text, expected, child in SYMBOL_CASES:
        await store.write(workspace, path, text, agent="seed")
        uri = make_uri(workspace, path)
        await editor.open(uri)
        symbols = await editor.client.text_document_document_symbol_async(
            types.DocumentSymbolParams(text_document=types.TextDocumentIdentifier(uri))
        )
        by_name = {s.name: s for s in symbols or [] if isinstance(s, types.DocumentSymbol)}
        for name, kind in expected.items():
            assert name in by_name, (path, list(by_name))
            sym = by_name[name]
            assert sym.kind == kind, (path, name, sym.kind)
            line = text.splitlines()[sym.selection_range.start.line]
            start, end = sym.selection_range.start.character, sym.selection_range.end.character
            assert line[start:end] == name
        if child:
            parent = next(s for s in by_name.values() if s.children)
            assert [c.name for c in parent.children or []] == [child]
        folds = await editor.client.text_document_folding_range_async(
            types.FoldingRangeParams(text_document=types.TextDocumentIdentifier(uri))
        )
        assert folds is not None


async def test_format_on_commit(database_url: str, store: Store, workspace: str) -> None:
    await store.write(
        workspace, "pyproject.toml", "[tool.dbcode]\nformat-on-commit = true\n", agent="seed"
    )
    await store.write(workspace, "f.py", "x = 1\n", agent="seed")
    uri = make_uri(workspace, "f.py")
    writer = await Editor.start(database_url, "writer")
    other = await Editor.start(database_url, "other")
    try:
        wbuf = await writer.open(uri)
        obuf = await other.open(uri)
        writer.edit(uri, (1, 0), (1, 0), "y = {  'a':1 }\n")
        writer.save(uri)
        expected = 'x = 1\ny = {"a": 1}\n'
        await db_eventually(database_url, workspace, "f.py", expected)
        await wait_until(lambda: wbuf.text == expected, what="writer gets the formatting")
        await wait_until(lambda: obuf.text == expected, what="other gets a normal push")
        # Unparsable text is stored as written, with its diagnostic.
        writer.edit(uri, (0, 0), (0, 0), "def (:\n")
        writer.save(uri)
        await db_eventually(database_url, workspace, "f.py", "def (:\n" + expected)
        await wait_until(
            lambda: any(
                d.severity == types.DiagnosticSeverity.Error
                for d in writer.diagnostics(uri, "ruff")
            ),
            what="syntax error diagnostic",
        )
    finally:
        await writer.stop()
        await other.stop()


async def test_workspace_diagnostic(editor: Editor, store: Store, workspace: str) -> None:
    await store.write(workspace, "ok.py", "x = 1\n", agent="seed")
    await store.write(workspace, "bad.py", "import os\n", agent="seed")
    await store.write(workspace, "broken.json", "{", agent="seed")
    await editor.open(make_uri(workspace, "ok.py"))
    report = await editor.client.workspace_diagnostic_async(
        types.WorkspaceDiagnosticParams(previous_result_ids=[])
    )
    by_uri = {i.uri: i for i in report.items}
    assert [d.code for d in by_uri[make_uri(workspace, "bad.py")].items] == ["F401"]
    assert by_uri[make_uri(workspace, "broken.json")].items[0].source == "syntax"
    assert make_uri(workspace, "ok.py") not in by_uri
