"""Tree-sitter results as an editor shows them: syntax errors, outline, folding ranges."""

from __future__ import annotations

import pytest

from lsp_dbcode.analysis.languages import (
    grammars_dir,
    language_for_id,
    language_for_path,
    language_names,
    query,
)
from lsp_dbcode.analysis.model import SYMBOL_KINDS, AnalysisError, Fold, Pos, Span, Symbol
from lsp_dbcode.analysis.syntax import SyntaxTree

# -- the registry -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("pkg/sub/mod.py", "python"),
        ("stubs/x.pyi", "python"),
        ("web/app.js", "javascript"),
        ("web/app.mjs", "javascript"),
        ("web/app.cjs", "javascript"),
        ("web/App.jsx", "javascript"),
        ("src/a.ts", "typescript"),
        ("src/a.mts", "typescript"),
        ("src/a.cts", "typescript"),
        ("src/types.d.ts", "typescript"),
        ("src/App.tsx", "tsx"),
        ("src/main.rs", "rust"),
        ("cmd/main.go", "go"),
        ("lib/x.c", "c"),
        ("lib/x.h", "c"),
        ("lib/x.cc", "cpp"),
        ("lib/x.cpp", "cpp"),
        ("lib/x.cxx", "cpp"),
        ("lib/x.hpp", "cpp"),
        ("lib/x.hh", "cpp"),
        ("lib/x.hxx", "cpp"),
        ("Main.java", "java"),
        ("package.json", "json"),
        ("pyproject.toml", "toml"),
        ("Cargo.lock", "toml"),
        (".github/workflows/ci.yml", "yaml"),
        ("config.yaml", "yaml"),
        ("run.sh", "bash"),
        ("run.bash", "bash"),
        ("index.htm", "html"),
        ("index.html", "html"),
        ("style.css", "css"),
        ("README.PY", "python"),
        ("README.md", None),
        ("Makefile", None),
        (".ts", None),
    ],
)
def test_language_for_path(path: str, language: str | None) -> None:
    assert language_for_path(path) == language


def test_every_language_folder_loads_and_its_queries_compile() -> None:
    assert grammars_dir().name == "grammars"
    names = language_names()
    assert {"python", "javascript", "typescript", "tsx", "rust", "go", "c", "cpp", "java"} <= set(
        names
    )
    assert {"json", "toml", "yaml", "bash", "html", "css"} <= set(names)
    for name in names:
        assert query(name, "folds") is not None, name
        assert query(name, "tags") is not None, name
        tree = SyntaxTree(name, "")
        assert tree.errors() == [] and tree.symbols() == [] and tree.folds() == []
    assert language_for_id("typescriptreact") == "tsx"
    assert language_for_id("shellscript") == "bash"
    assert language_for_id("cobol") is None


def test_unknown_language_and_oversized_text_are_refused() -> None:
    with pytest.raises(AnalysisError, match="unknown language"):
        SyntaxTree("cobol", "")
    with pytest.raises(AnalysisError, match="too big"):
        SyntaxTree("python", "x = 1\n" * 100, text_bytes_max=100)
    tree = SyntaxTree("python", "x = 1\n", text_bytes_max=100)
    with pytest.raises(AnalysisError, match="too big"):
        tree.apply_edit(0, 0, "y" * 200)
    with pytest.raises(ValueError, match="outside"):
        tree.apply_edit(3, 99, "")
    assert tree.text == "x = 1\n"  # a refused edit changes nothing


# -- syntax errors ----------------------------------------------------------------------------


def _col(line: str, needle: str) -> int:
    """Code point column of ``needle`` in ``line`` (str.index counts code points)."""
    return line.index(needle)


@pytest.mark.parametrize(
    ("language", "text", "line", "needle", "width", "message"),
    [
        ("python", 'print("😀" 1)\n', 0, "1)", 1, "Syntax error: unexpected `1` in argument list"),
        ("python", 'x = {"😀": 1 2}\n', 0, "2}", 1, "Syntax error: unexpected `2` in dictionary"),
        (
            "javascript",
            'const s = "😀"; let x = ;\n',
            0,
            "= ;",
            1,
            "Syntax error: unexpected `=` in lexical declaration",
        ),
        (
            "typescript",
            'const s: string = "😀"; let n: number = ;\n',
            0,
            "= ;",
            1,
            "Syntax error: unexpected `=` in lexical declaration",
        ),
        (
            "typescript",
            'let a = ["😀", 1 2];\n',
            0,
            "2]",
            1,
            "Syntax error: unexpected `2` in array",
        ),
        (
            "rust",
            'fn main() {\n    let s = "😀"; let x = 1\n}\n',
            1,
            "\n",
            0,
            "Syntax error: missing `;` in let declaration",
        ),
        (
            "go",
            'package main\n\nfunc main() {\n\ts := "😀"; x := \n}\n',
            3,
            " \n",
            0,
            "Syntax error: missing identifier in expression list",
        ),
        ("json", '{"😀": 1,, "b": 2}\n', 0, ",,", 1, "Syntax error: unexpected `,` in object"),
        ("json", '{"😀": [1 2]}\n', 0, "1 ", 1, "Syntax error: unexpected `1` in array"),
        (
            "c",
            'int main() {\n  char *s = "😀"; int x = 1\n  return x;\n}\n',
            1,
            "\n",
            0,
            "Syntax error: missing `;` in declaration",
        ),
    ],
)
def test_syntax_errors_at_code_point_positions(
    language: str, text: str, line: int, needle: str, width: int, message: str
) -> None:
    line_text = text.split("\n")[line] + "\n"
    col = _col(line_text, needle)
    assert "😀" in line_text[:col]  # an emoji (2 UTF-16 units, 4 bytes) precedes the error
    (error,) = SyntaxTree(language, text).errors()
    assert error.span == Span(Pos(line, col), Pos(line, col + width))
    assert error.message == message
    assert (error.source, error.severity, error.code) == ("syntax", "error", None)


def test_an_error_spanning_lines_is_shown_on_its_first_line() -> None:
    text = "x = 1\ny = (1, 2\nz = 3\n"
    (error,) = SyntaxTree("python", text).errors()
    assert error.span == Span(Pos(1, 0), Pos(1, 9))
    assert error.message == "Syntax error: unexpected `y = (1, 2`"


def test_error_count_is_capped_and_valid_code_has_none() -> None:
    assert SyntaxTree("python", "def f():\n    return 1\n").errors() == []
    broken = "".join(f"f{n}(1 2)\n" for n in range(300))
    tree = SyntaxTree("python", broken)
    assert len(tree.errors()) == 100
    assert len(tree.errors(limit=7)) == 7


# -- symbols ----------------------------------------------------------------------------------

Outline = tuple[str, str, tuple[int, int, int, int], tuple[int, int], tuple["Outline", ...]]


def outline(symbols: list[Symbol] | tuple[Symbol, ...]) -> list[tuple[object, ...]]:
    """(kind, name, (start line, col, end line, col), (name line, col), children)."""
    return [
        (
            s.kind,
            s.name,
            (s.span.start.line, s.span.start.col, s.span.end.line, s.span.end.col),
            (s.selection_span.start.line, s.selection_span.start.col),
            outline(s.children),
        )
        for s in symbols
    ]


def test_python_symbols_nest_methods_in_classes() -> None:
    text = (
        "import os\n"
        "LIMIT = 3\n"
        "name = 'x'\n"
        "\n"
        "@dataclass\n"
        "class Café:\n"
        "    size: int = 0\n"
        "\n"
        "    def grow(self, by):  # 😀\n"
        "        def helper():\n"
        "            pass\n"
        "        return by\n"
        "\n"
        "\n"
        "async def main():\n"
        "    pass\n"
    )
    assert outline(SyntaxTree("python", text).symbols()) == [
        ("constant", "LIMIT", (1, 0, 1, 9), (1, 0), []),
        ("variable", "name", (2, 0, 2, 10), (2, 0), []),
        (
            "class",
            "Café",
            (4, 0, 11, 17),
            (5, 6),
            [
                ("field", "size", (6, 4, 6, 17), (6, 4), []),
                (
                    "method",
                    "grow",
                    (8, 4, 11, 17),
                    (8, 8),
                    [("function", "helper", (9, 8, 10, 16), (9, 12), [])],
                ),
            ],
        ),
        ("function", "main", (14, 0, 15, 8), (14, 10), []),
    ]


def test_typescript_symbols() -> None:
    text = (
        "export interface Shape {\n"
        "  area(): number;\n"
        "}\n"
        "type Id = string;\n"
        "enum Color { Red, Green = 2 }\n"
        "export class Circle implements Shape {\n"
        "  private r = 1;\n"
        "  constructor(r: number) { this.r = r; }\n"
        "  area(): number {\n"
        "    return 3.14 * this.r ** 2;\n"
        "  }\n"
        "}\n"
        "export const PI = 3.14;\n"
        "const twice = (n: number) => n * 2;\n"
        "function main(): void {}\n"
        "namespace Geo { export function d() {} }\n"
    )
    assert outline(SyntaxTree("typescript", text).symbols()) == [
        (
            "interface",
            "Shape",
            (0, 7, 2, 1),
            (0, 17),
            [("method", "area", (1, 2, 1, 16), (1, 2), [])],
        ),
        ("type", "Id", (3, 0, 3, 17), (3, 5), []),
        (
            "enum",
            "Color",
            (4, 0, 4, 29),
            (4, 5),
            [
                ("enum_member", "Red", (4, 13, 4, 16), (4, 13), []),
                ("enum_member", "Green", (4, 18, 4, 27), (4, 18), []),
            ],
        ),
        (
            "class",
            "Circle",
            (5, 7, 11, 1),
            (5, 13),
            [
                ("field", "r", (6, 2, 6, 15), (6, 10), []),
                ("constructor", "constructor", (7, 2, 7, 40), (7, 2), []),
                ("method", "area", (8, 2, 10, 3), (8, 2), []),
            ],
        ),
        ("constant", "PI", (12, 13, 12, 22), (12, 13), []),
        ("function", "twice", (13, 6, 13, 34), (13, 6), []),
        ("function", "main", (14, 0, 14, 24), (14, 9), []),
        (
            "namespace",
            "Geo",
            (15, 0, 15, 40),
            (15, 10),
            [("function", "d", (15, 23, 15, 38), (15, 32), [])],
        ),
    ]


def test_rust_symbols_nest_methods_in_impls_and_traits() -> None:
    text = (
        "/// 😀 A point.\n"
        "pub struct Point {\n"
        "    x: f64,\n"
        "}\n"
        "pub trait Norm {\n"
        "    fn norm(&self) -> f64;\n"
        "}\n"
        "impl Norm for Point {\n"
        "    fn norm(&self) -> f64 { self.x }\n"
        "}\n"
        "impl Point {\n"
        "    pub fn new() -> Self { Point { x: 0.0 } }\n"
        "}\n"
        "enum E { A, B(i32) }\n"
        "const MAX: u32 = 3;\n"
        "fn main() {}\n"
        "mod tests {}\n"
    )
    assert outline(SyntaxTree("rust", text).symbols()) == [
        ("struct", "Point", (1, 0, 3, 1), (1, 11), [("field", "x", (2, 4, 2, 10), (2, 4), [])]),
        (
            "interface",
            "Norm",
            (4, 0, 6, 1),
            (4, 10),
            [("method", "norm", (5, 4, 5, 26), (5, 7), [])],
        ),
        (
            "object",
            "impl Norm for Point",
            (7, 0, 9, 1),
            (7, 14),
            [("method", "norm", (8, 4, 8, 36), (8, 7), [])],
        ),
        (
            "object",
            "impl Point",
            (10, 0, 12, 1),
            (10, 5),
            [("method", "new", (11, 4, 11, 45), (11, 11), [])],
        ),
        (
            "enum",
            "E",
            (13, 0, 13, 20),
            (13, 5),
            [
                ("enum_member", "A", (13, 9, 13, 10), (13, 9), []),
                ("enum_member", "B", (13, 12, 13, 18), (13, 12), []),
            ],
        ),
        ("constant", "MAX", (14, 0, 14, 19), (14, 6), []),
        ("function", "main", (15, 0, 15, 12), (15, 3), []),
        ("module", "tests", (16, 0, 16, 12), (16, 4), []),
    ]


def test_go_symbols() -> None:
    text = (
        "package shapes\n"
        "\n"
        "const Pi = 3.14\n"
        "\n"
        "type Circle struct {\n"
        "\tR float64 // 😀\n"
        "}\n"
        "\n"
        "type Shape interface {\n"
        "\tArea() float64\n"
        "}\n"
        "\n"
        "type ID string\n"
        "\n"
        "func (c *Circle) Area() float64 {\n"
        "\treturn Pi * c.R * c.R\n"
        "}\n"
        "\n"
        "func New() *Circle { return &Circle{} }\n"
    )
    assert outline(SyntaxTree("go", text).symbols()) == [
        ("package", "shapes", (0, 0, 0, 14), (0, 8), []),
        ("constant", "Pi", (2, 6, 2, 15), (2, 6), []),
        ("struct", "Circle", (4, 5, 6, 1), (4, 5), [("field", "R", (5, 1, 5, 10), (5, 1), [])]),
        (
            "interface",
            "Shape",
            (8, 5, 10, 1),
            (8, 5),
            [("method", "Area", (9, 1, 9, 15), (9, 1), [])],
        ),
        ("type", "ID", (12, 5, 12, 14), (12, 5), []),
        ("method", "Area", (14, 0, 16, 1), (14, 17), []),
        ("function", "New", (18, 0, 18, 39), (18, 5), []),
    ]


@pytest.mark.parametrize(
    ("language", "text", "names"),
    [
        ("javascript", "class A {\n  m() {}\n}\nfunction f() {}\n", ["A", "m", "f"]),
        ("tsx", "const App = () => <div />;\nclass C {}\n", ["App", "C"]),
        ("c", "struct P { int x; };\nint main(void) { return 0; }\n", ["P", "x", "main"]),
        ("cpp", "namespace n {\nclass K {\n  void m();\n};\n}\n", ["n", "K", "m"]),
        ("java", "class A {\n  int f;\n  void m() {}\n}\n", ["A", "f", "m"]),
        ("bash", "NAME=x\ngreet() {\n  echo hi\n}\n", ["NAME", "greet"]),
        ("json", '{"a": {"b": [1]}, "c": null}\n', ["a", "b", "c"]),
        (
            "toml",
            '[tool.ruff]\nline-length = 100\n[project]\nname = "x"\n',
            ["tool.ruff", "line-length", "project", "name"],
        ),
        ("yaml", "jobs:\n  build:\n    runs-on: ubuntu\n", ["jobs", "build", "runs-on"]),
        ("css", "a.b { color: red }\n@media screen { p { x: y } }\n", ["a.b", "screen", "p"]),
        ("html", "<html><body><p>hi</p></body></html>\n", ["html", "body", "p"]),
    ],
)
def test_other_languages_have_an_outline(language: str, text: str, names: list[str]) -> None:
    def flat(symbols: tuple[Symbol, ...] | list[Symbol]) -> list[str]:
        return [n for s in symbols for n in (s.name, *flat(s.children))]

    symbols = SyntaxTree(language, text).symbols()
    assert flat(symbols) == names
    assert all(s.kind in SYMBOL_KINDS for s in symbols)


# -- folding ranges ---------------------------------------------------------------------------


def test_python_folds() -> None:
    text = (
        "import os\n"  # 0
        "import sys\n"  # 1
        "\n"  # 2
        "from x import (\n"  # 3
        "    y,\n"  # 4
        ")\n"  # 5
        "# one\n"  # 6
        "# two\n"  # 7
        "class A:\n"  # 8
        '    """Doc.\n'  # 9
        "\n"  # 10
        '    More."""\n'  # 11
        "\n"  # 12
        "    def m(self):\n"  # 13
        "        if self:\n"  # 14
        "            return {\n"  # 15
        "                'a': 1,\n"  # 16
        "            }\n"  # 17
        "        else:\n"  # 18
        "            pass\n"  # 19
    )
    assert SyntaxTree("python", text).folds() == [
        Fold(0, 5, "imports"),  # blank lines between imports do not split the block
        Fold(6, 7, "comment"),
        Fold(8, 19),
        Fold(9, 11),
        Fold(13, 19),
        Fold(14, 17),  # the `if` block only
        Fold(15, 16),
        Fold(18, 19),
    ]


def test_json_folds_keep_closing_brackets_visible() -> None:
    text = '{\n  "a": [\n    1,\n    2\n  ],\n  "b": {"c": 1}\n}\n'
    assert SyntaxTree("json", text).folds() == [Fold(0, 5), Fold(1, 3)]


def test_brace_language_folds() -> None:
    text = "function f(a) {\n  if (a) {\n    return 1;\n  }\n  return 2;\n}\n"
    assert SyntaxTree("javascript", text).folds() == [Fold(0, 4), Fold(1, 2)]
    rust = "fn main() {\n    let v = vec![\n        1,\n    ];\n}\n"
    assert SyntaxTree("rust", rust).folds() == [Fold(0, 3), Fold(1, 2)]
