"""Lint a whole workspace, or one new revision, at its current state in the database.

Used by `dbcode check`, by `dbcode write` (feedback on stderr) and by the server's
`workspace/diagnostic`. Sits above store and analysis; knows nothing of LSP.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from .analysis import (
    AnalysisError,
    Diagnostic,
    RuffEngine,
    SyntaxTree,
    dbcode_settings,
    is_config_path,
    is_python_path,
    language_for_path,
)
from .store import Store
from .text.positions import LineIndex

log = logging.getLogger(__name__)


async def format_for_commit(
    ruff: RuffEngine, configs: Mapping[str, str], path: str, text: str
) -> str:
    """The text to store: ruff-formatted when the workspace's root pyproject.toml says
    ``[tool.dbcode] format-on-commit = true`` and the text parses; else as written."""
    if not is_python_path(path):
        return text
    if not dbcode_settings(configs.get("pyproject.toml")).format_on_commit:
        return text
    try:
        return await ruff.format(text, path, configs)
    except AnalysisError as exc:
        log.info("format on commit: %s stored as written: %s", path, exc)
        return text


@dataclass
class WorkspaceReport:
    workspace: str
    seq: int
    texts: dict[str, str]
    problems: dict[str, list[Diagnostic]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why not analysed

    def items(self) -> list[tuple[str, list[Diagnostic]]]:
        return sorted(self.problems.items())

    def index(self, path: str) -> LineIndex:
        return LineIndex(self.texts[path])

    @property
    def errors(self) -> int:
        return sum(1 for ds in self.problems.values() for d in ds if d.severity == "error")

    @property
    def total(self) -> int:
        return sum(len(ds) for ds in self.problems.values())


def syntax_problems(path: str, text: str) -> list[Diagnostic] | None:
    """Tree-sitter syntax errors of a non-Python file (None: language not supported)."""
    language = language_for_path(path)
    if language is None:
        return None
    return SyntaxTree(language, text).errors()


async def check_workspace(store: Store, ruff: RuffEngine, workspace: str) -> WorkspaceReport:
    seq, files = await store.snapshot(workspace)
    texts = {f.path: f.text for f in files}
    report = WorkspaceReport(workspace, seq, texts)
    configs = {p: t for p, t in texts.items() if is_config_path(p)}
    python = {p: t for p, t in texts.items() if is_python_path(p)}
    if python:
        found = await ruff.check_tree(python, configs)
        report.problems.update({p: ds for p, ds in found.items() if ds})
    for path, text in texts.items():
        if is_python_path(path):
            continue
        try:
            errors = syntax_problems(path, text)
        except AnalysisError as exc:
            report.skipped[path] = str(exc)
            continue
        if errors:
            report.problems[path] = errors
    return report


def finding_json(path: str, d: Diagnostic) -> dict[str, object]:
    """One finding as `dbcode check --json` prints it and `dbcode/check` answers it: lines and
    columns 1-based, columns in code points (ruff's own convention)."""
    return {
        "path": path,
        "line": d.span.start.line + 1,
        "column": d.span.start.col + 1,
        "endLine": d.span.end.line + 1,
        "endColumn": d.span.end.col + 1,
        "severity": d.severity,
        "source": d.source,
        "code": d.code,
        "message": d.message,
        "url": d.code_url,
    }


async def check_text(
    store: Store, ruff: RuffEngine, workspace: str, path: str, text: str
) -> list[Diagnostic]:
    """Problems of one file's text, with the workspace's ruff config."""
    if is_python_path(path):
        return await ruff.check(text, path, await store.config_files(workspace))
    return syntax_problems(path, text) or []
