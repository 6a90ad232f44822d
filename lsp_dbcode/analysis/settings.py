"""Workspace settings read from the workspace's own files, and which files are ruff configs."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import PurePosixPath

# The file names ruff reads its settings from, in its order of precedence within one folder.
CONFIG_NAMES = ("pyproject.toml", "ruff.toml", ".ruff.toml")


@dataclass(frozen=True)
class DbcodeSettings:
    """``[tool.dbcode]`` in the workspace's root ``pyproject.toml``."""

    format_on_commit: bool = False


@functools.lru_cache(maxsize=64)  # asked on every write: parse each pyproject.toml text once
def dbcode_settings(pyproject_text: str | None) -> DbcodeSettings:
    """Read ``[tool.dbcode]`` from a ``pyproject.toml`` text.

    Missing file, invalid TOML or a value of the wrong type give the defaults; never raises.
    """
    if not pyproject_text:
        return DbcodeSettings()
    try:
        doc = tomllib.loads(pyproject_text)
    except (tomllib.TOMLDecodeError, ValueError):
        return DbcodeSettings()
    tool = doc.get("tool")
    section = tool.get("dbcode") if isinstance(tool, dict) else None
    if not isinstance(section, dict):
        return DbcodeSettings()
    value = section.get("format-on-commit", section.get("format_on_commit"))
    return DbcodeSettings(format_on_commit=value if isinstance(value, bool) else False)


def is_config_path(path: str) -> bool:
    """True if ``path`` (workspace-relative, POSIX) names a file ruff reads settings from."""
    return PurePosixPath(path).name in CONFIG_NAMES
