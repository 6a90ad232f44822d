"""The ruff engines, against the real ruff binary: what a user sees in the editor."""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
from pathlib import Path

import pytest

from lsp_dbcode.analysis.model import AnalysisError, Pos, Span
from lsp_dbcode.analysis.ruff import RuffEngine, RuffServerEngine, make_ruff_engine

from .conftest import apply_edits, check_twice, run_ruff_cli

ONLY_F = {"pyproject.toml": '[tool.ruff.lint]\nselect = ["F"]\n'}


# -- diagnostics ------------------------------------------------------------------------------


async def test_unused_import_is_reported_with_a_fix_that_removes_it(any_engine: RuffEngine) -> None:
    text = "import os\nimport sys\n\nprint(sys.argv)\n"
    diagnostics = await check_twice(any_engine, text, "app/main.py", ONLY_F)

    assert [d.code for d in diagnostics] == ["F401"]
    (unused,) = diagnostics
    assert unused.span == Span(Pos(0, 7), Pos(0, 9))
    assert unused.message == "`os` imported but unused"
    assert unused.source == "ruff"
    assert unused.severity == "warning"
    assert unused.code_url == "https://docs.astral.sh/ruff/rules/unused-import"
    assert unused.tags == ("unnecessary",)
    assert unused.noqa_line == 0
    assert unused.fix is not None
    assert unused.fix.applicability == "safe"
    assert unused.fix.title == "Remove unused import: `os`"
    assert apply_edits(text, unused.fix.edits) == "import sys\n\nprint(sys.argv)\n"


async def test_columns_count_code_points_not_utf16_units(any_engine: RuffEngine) -> None:
    text = 's = "😀😀"; import os\n'
    diagnostics = await check_twice(any_engine, text, "m.py", ONLY_F)
    (unused,) = [d for d in diagnostics if d.code == "F401"]
    assert unused.span == Span(Pos(0, 17), Pos(0, 19))  # UTF-16 would say 19..21
    assert text[17:19] == "os"
    assert unused.fix is not None
    fixed = apply_edits(text, unused.fix.edits)
    assert "import os" not in fixed and fixed.startswith('s = "😀😀"')


async def test_severity_tags_and_syntax_errors(any_engine: RuffEngine) -> None:
    configs = {"ruff.toml": 'target-version = "py311"\n[lint]\nselect = ["F", "UP"]\n'}
    text = "from typing import List\n\n\ndef f(x: List[int]) -> int:\n    return undefined\n"
    by_code = {d.code: d for d in await check_twice(any_engine, text, "m.py", configs)}
    assert by_code["F821"].severity == "error"  # undefined name: as ruff's own server
    assert by_code["UP006"].severity == "warning"
    assert by_code["UP006"].tags == ("deprecated",)
    assert by_code["UP035"].tags == ("deprecated",)

    broken = await check_twice(any_engine, "def f(:\n    pass\n", "m.py", configs)
    assert broken and all(d.code == "invalid-syntax" for d in broken)
    assert all(d.severity == "error" and d.code_url is None for d in broken)
    assert broken[0].span.start == Pos(0, 6)


# -- settings resolution ----------------------------------------------------------------------

NESTED_CONFIGS = {
    "pyproject.toml": '[project]\nname = "demo"\n\n[tool.ruff.lint]\nselect = ["F401"]\n',
    "pkg/ruff.toml": '[lint]\nselect = ["F841"]\n',
    "plain/pyproject.toml": '[project]\nname = "not-ruff"\n',
    "ext/.ruff.toml": 'extend = "../pyproject.toml"\n[lint]\nextend-select = ["F841"]\n',
}
UNUSED_BOTH = "import os\n\n\ndef f():\n    x = 1\n"


@pytest.mark.parametrize(
    ("path", "codes"),
    [
        ("pkg/sub/x.py", ["F841"]),  # nearest config: pkg/ruff.toml
        ("pkg/x.py", ["F841"]),
        ("other/y.py", ["F401"]),  # root pyproject.toml
        ("y.py", ["F401"]),
        ("plain/z.py", ["F401"]),  # a pyproject.toml without [tool.ruff] is skipped
        ("ext/w.py", ["F401", "F841"]),  # extend = "../pyproject.toml" + extend-select
    ],
)
async def test_nearest_config_wins_as_on_disk(
    any_engine: RuffEngine, path: str, codes: list[str]
) -> None:
    diagnostics = await check_twice(any_engine, UNUSED_BOTH, path, NESTED_CONFIGS)
    assert [d.code for d in diagnostics] == codes


async def test_config_changes_take_effect(any_engine: RuffEngine) -> None:
    text = UNUSED_BOTH
    first = {"ruff.toml": '[lint]\nselect = ["F401"]\n'}
    second = {"ruff.toml": '[lint]\nselect = ["F841"]\n'}
    assert [d.code for d in await check_twice(any_engine, text, "a.py", first)] == ["F401"]
    assert [d.code for d in await check_twice(any_engine, text, "a.py", second)] == ["F841"]
    assert [d.code for d in await check_twice(any_engine, text, "a.py", first)] == ["F401"]


async def test_file_excluded_by_config_gets_nothing(any_engine: RuffEngine) -> None:
    configs = {"pyproject.toml": '[tool.ruff]\nextend-exclude = ["generated"]\n'}
    text = "import os\n"
    assert await check_twice(any_engine, text, "generated/models.py", configs) == []
    assert await any_engine.fix_all(text, "generated/models.py", configs) == text
    assert [d.code for d in await check_twice(any_engine, text, "src/m.py", configs)] == ["F401"]


async def test_config_flags_for_the_cli_do_not_break_checks(ruff_engine: RuffEngine) -> None:
    configs = {"ruff.toml": 'fix = true\nfix-only = true\noutput-format = "grouped"\n'}
    diagnostics = await ruff_engine.check("import os\n", "m.py", configs)
    assert [d.code for d in diagnostics] == ["F401"]


async def test_workspace_layout_decides_first_party_imports(ruff_engine: RuffEngine) -> None:
    configs = {"ruff.toml": '[lint]\nselect = ["I"]\n'}
    text = "import mypkg\nimport os\nimport requests\n\nprint(mypkg, os, requests)\n"
    unknown = await ruff_engine.organize_imports(text, "app/main.py", configs, layout=())
    assert unknown.startswith("import os\n\nimport mypkg\nimport requests\n\n")
    layout = frozenset({"app/main.py", "mypkg/__init__.py", "mypkg/core.py", "README.md"})
    known = await ruff_engine.organize_imports(text, "app/main.py", configs, layout=layout)
    assert known.startswith("import os\n\nimport requests\n\nimport mypkg\n\n")
    # The layout stays until a new one is given; an empty one removes the placeholders again.
    assert await ruff_engine.organize_imports(text, "app/main.py", configs) == known
    assert await ruff_engine.organize_imports(text, "app/main.py", configs, layout=()) == unknown


async def test_layout_reaches_both_engines(any_engine: RuffEngine) -> None:
    configs = {"ruff.toml": '[lint]\nselect = ["I"]\n'}
    text = "import os\n\nimport requests\n\nimport mypkg\n\nprint(mypkg, os, requests)\n"
    layout = frozenset({"mypkg/__init__.py", "app/main.py"})
    for _ in range(2):  # the server engine: first through the CLI, then the server
        assert await any_engine.check(text, "app/main.py", configs, layout=layout) == []
    for _ in range(2):
        unknown = await any_engine.check(text, "app/main.py", configs, layout=())
        assert [d.code for d in unknown] == ["I001"]


# -- fixes and formatting equal the ruff CLI --------------------------------------------------

FIXABLE = (
    "import sys\nimport os\nfrom typing import List\n\n\n"
    "def f(x: List[int]) -> bool:\n    return x == None\n"
)
FIX_CONFIGS = {
    "pyproject.toml": (
        '[tool.ruff]\ntarget-version = "py311"\n[tool.ruff.lint]\nselect = ["F", "E", "I", "UP"]\n'
    ),
    "unsafe/ruff.toml": (
        'target-version = "py311"\nunsafe-fixes = true\n[lint]\nselect = ["F", "E", "I", "UP"]\n'
    ),
}


@pytest.mark.parametrize("path", ["pkg/m.py", "unsafe/m.py"])
async def test_fix_all_equals_ruff_check_fix(
    ruff_engine: RuffEngine, tmp_path: Path, path: str
) -> None:
    fixed = await ruff_engine.fix_all(FIXABLE, path, FIX_CONFIGS)
    assert fixed == run_ruff_cli(["check", "--fix"], FIXABLE, path, FIX_CONFIGS, tmp_path)
    assert "import sys" not in fixed and "list[int]" in fixed
    assert ("x is None" in fixed) == path.startswith("unsafe/")  # E711's fix is unsafe


async def test_organize_imports_equals_ruff_select_i_fix(
    ruff_engine: RuffEngine, tmp_path: Path
) -> None:
    organized = await ruff_engine.organize_imports(FIXABLE, "pkg/m.py", FIX_CONFIGS)
    cli = run_ruff_cli(
        ["check", "--select", "I", "--fix"], FIXABLE, "pkg/m.py", FIX_CONFIGS, tmp_path
    )
    assert organized == cli
    assert organized.startswith("import os\nimport sys\nfrom typing import List\n")
    assert "x == None" in organized  # nothing but imports changed


async def test_format_equals_ruff_format(ruff_engine: RuffEngine, tmp_path: Path) -> None:
    configs = {"ruff.toml": 'line-length = 40\n[format]\nquote-style = "single"\n'}
    text = 'x = {"a":1,"b":[1,2,3],"c":"a long string value here"}\ndef f( a,b ):\n  return a\n'
    formatted = await ruff_engine.format(text, "m.py", configs)
    assert formatted == run_ruff_cli(["format"], text, "m.py", configs, tmp_path)
    assert "'a long string value here'" in formatted  # the config was used


@pytest.mark.parametrize("line_range", [(1, 2), Span(Pos(1, 0), Pos(1, 9))])
async def test_range_formatting_changes_only_lines_in_range(
    ruff_engine: RuffEngine, line_range: tuple[int, int] | Span
) -> None:
    text = "a  =  1\nb  =  2\nc  =  3\n"
    formatted = await ruff_engine.format(text, "m.py", {}, line_range)
    assert formatted == "a  =  1\nb = 2\nc  =  3\n"


# -- failures: a clear AnalysisError, never a hang --------------------------------------------


async def test_unparsable_text_cannot_be_formatted(ruff_engine: RuffEngine) -> None:
    with pytest.raises(AnalysisError, match=r"Failed to parse m\.py:2:1") as error:
        await ruff_engine.format("x = (\n", "m.py", {})
    assert "\n" not in str(error.value)


async def test_broken_config_is_an_error_naming_the_file(any_engine: RuffEngine) -> None:
    with pytest.raises(AnalysisError, match=r"pkg/ruff\.toml.*TOML parse error") as error:
        await any_engine.check("x = 1\n", "pkg/m.py", {"pkg/ruff.toml": "[lint\n"})
    message = str(error.value)
    assert "\n" not in message and "/tmp" not in message and "dbcode-ruff" not in message
    with pytest.raises(AnalysisError, match="Unknown rule selector"):
        await any_engine.check("x = 1\n", "m.py", {"ruff.toml": '[lint]\nselect = ["NOPE1"]\n'})


async def test_file_too_big_is_refused_fast() -> None:
    async with RuffEngine(file_bytes_max=1024) as engine:
        started = time.monotonic()
        with pytest.raises(AnalysisError, match="too big"):
            await engine.check("x = 1\n" * 1000, "m.py", {})
        with pytest.raises(AnalysisError, match="too big"):
            await engine.format("x = 1\n" * 1000, "m.py", {})
        assert time.monotonic() - started < 1


@pytest.mark.parametrize("engine_class", [RuffEngine, RuffServerEngine])
async def test_a_run_over_its_time_limit_is_stopped(engine_class: type[RuffEngine]) -> None:
    big = "x = 1\n" * 20_000
    async with engine_class() as engine:
        await check_twice(engine, "x = 1\n", "m.py", {})
        engine.timeout_s = 0.001
        started = time.monotonic()
        with pytest.raises(AnalysisError, match=r"timed out|did not answer"):
            await engine.check(big, "m.py", {})
        assert time.monotonic() - started < 5
        engine.timeout_s = 10
        assert await check_twice(engine, big, "m.py", {}) == []  # and it recovers


def _ruff_children() -> list[int]:
    """Ids of live (not zombie) ``ruff`` processes whose parent is this test process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            name = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        if name == "ruff" and int(fields[1]) == os.getpid() and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
async def test_a_cancelled_check_kills_its_ruff_and_the_engine_goes_on() -> None:
    big = "import os\n" + "x = 1\n" * 100_000
    async with RuffEngine() as engine:
        task = asyncio.create_task(engine.check(big, "m.py", ONLY_F))
        for _ in range(5000):  # until ruff runs (bounded: about 5 s)
            if _ruff_children():
                break
            await asyncio.sleep(0.001)
        assert _ruff_children()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _ruff_children() == []
        assert [d.code for d in await engine.check("import os\n", "m.py", ONLY_F)] == ["F401"]


async def test_a_cancelled_server_check_leaves_the_server_usable() -> None:
    big = "import os\n" + "x = 1\n" * 100_000
    async with RuffServerEngine() as engine:
        await check_twice(engine, "x = 1\n", "m.py", ONLY_F)
        task = asyncio.create_task(engine.check(big, "m.py", ONLY_F))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [d.code for d in await engine.check("import os\n", "m.py", ONLY_F)] == ["F401"]
        assert engine.restarts == 0


async def test_missing_ruff_binary_is_an_analysis_error(tmp_path: Path) -> None:
    async with RuffEngine(ruff_bin=str(tmp_path / "no-ruff")) as engine:
        with pytest.raises(AnalysisError, match="cannot start ruff"):
            await engine.check("x = 1\n", "m.py", {})


@pytest.mark.parametrize(
    ("path", "configs", "match"),
    [
        ("../m.py", {}, "invalid workspace path"),
        ("/abs/m.py", {}, "invalid workspace path"),
        ("notes.txt", {}, "not a Python file"),
        ("m.py", {"ruff.toml": 'extend = "/etc/ruff.toml"\n'}, "inside the workspace"),
        ("m.py", {"a/ruff.toml": 'extend = "../../x.toml"\n'}, "inside the workspace"),
        ("m.py", {"pyproject.toml": '[tool.ruff]\nextend = "~/r.toml"\n'}, "inside the workspace"),
    ],
)
async def test_bad_paths_and_configs_are_refused(
    ruff_engine: RuffEngine, path: str, configs: dict[str, str], match: str
) -> None:
    with pytest.raises(AnalysisError, match=match):
        await ruff_engine.check("x = 1\n", path, configs)


# -- many files at once -----------------------------------------------------------------------


async def test_check_tree_lints_nested_folders_with_their_configs(ruff_engine: RuffEngine) -> None:
    files = {
        "pkg/sub/x.py": UNUSED_BOTH,
        "pkg/x.py": "import json\n",
        "other/y.py": UNUSED_BOTH,
        "plain/deep/er/z.py": UNUSED_BOTH,
        "clean.py": "print('hello')\n",
        "README.md": "# not python\n",
    }
    results = await ruff_engine.check_tree(files, NESTED_CONFIGS)
    assert sorted(results) == [
        "clean.py",
        "other/y.py",
        "pkg/sub/x.py",
        "pkg/x.py",
        "plain/deep/er/z.py",
    ]
    assert [d.code for d in results["pkg/sub/x.py"]] == ["F841"]
    assert [d.code for d in results["pkg/x.py"]] == []
    assert [d.code for d in results["other/y.py"]] == ["F401"]
    assert results["clean.py"] == []
    for path in results:  # the same diagnostics as one file at a time
        assert results[path] == await ruff_engine.check(files[path], path, NESTED_CONFIGS)


async def test_check_tree_skips_files_over_the_limit() -> None:
    async with RuffEngine(file_bytes_max=100) as engine:
        results = await engine.check_tree({"big.py": "x = 1\n" * 100, "ok.py": "import os\n"}, {})
    assert list(results) == ["ok.py"]


# -- the ruff server engine -------------------------------------------------------------------

RICH = (
    "import os, sys  # noqa: E401\n"
    "from typing import List\n"
    'MESSAGE = """😀 ünïcode\n'
    '{}"""\n\n\n'
    "def f(x: List[int] = []) -> None:\n"
    "    y = 1\n"
    "    if x == None:\n"
    '        print("😀", undefined, sys)\n'
)


async def test_server_engine_equals_subprocess_engine() -> None:
    configs = {"pyproject.toml": '[tool.ruff.lint]\nextend-select = ["B", "E711"]\n'}
    async with RuffEngine() as cli, RuffServerEngine() as server:
        for path in ("a.py", "pkg/b.py"):
            expected = await cli.check(RICH, path, configs)
            assert len(expected) >= 8
            assert await server.check(RICH, path, configs) == expected  # via the CLI
            assert await server.check(RICH, path, configs) == expected  # via the server
            assert server._client is not None and server._client.alive


async def test_server_engine_restarts_a_dead_child() -> None:
    async with RuffServerEngine() as engine:
        await check_twice(engine, "import os\n", "m.py", ONLY_F)
        assert engine._proc is not None
        engine._proc.kill()
        await engine._proc.wait()
        await asyncio.sleep(0.05)
        diagnostics = await engine.check("import os\nimport re\n", "m.py", ONLY_F)
        assert [d.code for d in diagnostics] == ["F401", "F401"]
        assert engine.restarts == 1


async def test_server_engine_keeps_few_documents_open_and_stays_correct() -> None:
    async with RuffServerEngine(open_documents_max=2) as engine:
        for round_ in range(2):
            for n in range(5):
                text = f"import os\n{'x = 1' * round_}\n"
                assert [d.code for d in await check_twice(engine, text, f"m{n}.py", ONLY_F)] == [
                    "F401"
                ]
        assert len(engine._docs) <= 2


async def test_server_engine_sends_crowded_documents_to_the_cli() -> None:
    text = "".join(f"import mod{n}\n" for n in range(30))
    async with RuffServerEngine(cli_from_diagnostics=10) as engine, RuffEngine() as cli:
        expected = await cli.check(text, "m.py", ONLY_F)
        assert len(expected) == 30
        for _ in range(3):
            assert await engine.check(text, "m.py", ONLY_F) == expected
        assert engine._client is None  # never needed the server for this document


async def test_make_ruff_engine_picks_the_server_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert type(make_ruff_engine()) is RuffServerEngine
    assert type(make_ruff_engine(engine="subprocess")) is RuffEngine
    monkeypatch.setenv("DBCODE_RUFF_ENGINE", "subprocess")
    assert type(make_ruff_engine(timeout_s=3)) is RuffEngine
    with pytest.raises(ValueError, match="unknown ruff engine"):
        make_ruff_engine(engine="magic")


async def test_closed_engine_refuses_work(ruff_engine: RuffEngine) -> None:
    await ruff_engine.check("x = 1\n", "m.py", {})
    root = ruff_engine._trees.root
    await ruff_engine.close()
    assert not root.exists()  # private folders are gone
    with pytest.raises(AnalysisError, match="closed"):
        await ruff_engine.check("x = 1\n", "m.py", {})


async def test_private_folders_of_dead_processes_are_swept() -> None:
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    stale = Path(tempfile.mkdtemp(prefix="dbcode-ruff-"))
    (stale / "owner.pid").write_text(str(dead.pid))
    (stale / "t-x").mkdir()
    async with RuffEngine() as engine:
        await engine.check("x = 1\n", "m.py", {})
        assert not stale.exists()
        assert engine._trees.root.exists()  # its own is kept


async def test_an_engine_dropped_without_close_removes_its_folders() -> None:
    engine = RuffEngine()
    await engine.check("x = 1\n", "m.py", {})
    root = engine._trees.root
    assert root.exists()
    del engine
    gc.collect()
    assert not root.exists()
