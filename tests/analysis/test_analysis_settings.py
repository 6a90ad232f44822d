"""``[tool.dbcode]`` settings and ruff config paths."""

from __future__ import annotations

import pytest

from lsp_dbcode.analysis.settings import (
    CONFIG_NAMES,
    DbcodeSettings,
    dbcode_settings,
    is_config_path,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[tool.dbcode]\nformat-on-commit = true\n", True),
        ("[tool.dbcode]\nformat-on-commit = false\n", False),
        ('[project]\nname = "x"\n', False),
        ("[tool.dbcode]\nformat-on-commit = 'yes'\n", False),  # wrong type: the default
        ("[tool.dbcode\nformat-on-commit = true\n", False),  # invalid TOML: the default
        ("tool = 3\n", False),
        ("", False),
        (None, False),
    ],
)
def test_format_on_commit(text: str | None, expected: bool) -> None:
    assert dbcode_settings(text) == DbcodeSettings(format_on_commit=expected)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("pyproject.toml", True),
        ("ruff.toml", True),
        (".ruff.toml", True),
        ("pkg/sub/ruff.toml", True),
        ("pkg/pyproject.toml", True),
        ("pkg/ruff.toml.bak", False),
        ("setup.cfg", False),
        ("myruff.toml", False),
    ],
)
def test_is_config_path(path: str, expected: bool) -> None:
    assert is_config_path(path) is expected
    assert CONFIG_NAMES == ("pyproject.toml", "ruff.toml", ".ruff.toml")
