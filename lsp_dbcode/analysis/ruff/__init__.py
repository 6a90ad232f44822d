"""Ruff behind a small async interface: text + path + configs -> diagnostics, fixes, formatting.

The package: :mod:`.rules` (severity and tags by rule, the parsers of ruff's outputs),
:mod:`.cli` (the CLI engine, :class:`RuffEngine`), :mod:`.server` (the ``ruff server`` engine,
:class:`RuffServerEngine`, and :func:`make_ruff_engine`).

Two engines, one API (:class:`RuffEngine`), and one primitive each implements:
:meth:`~RuffEngine.lint` ``(text, path, configs, done)`` starts a lint and calls
``done(findings, None)`` or ``done(None, error)`` when it ends (never before it returns).
:meth:`~RuffEngine.findings` and :meth:`~RuffEngine.check` await it; the language server's
Analyzer calls it directly.

- :class:`RuffEngine` runs one ``ruff`` subprocess per lint (``ruff check --stdin-filename ...
  --output-format json -``, in a task of the engine's), and per fix or format (``ruff format
  ... -``).
- :class:`RuffServerEngine` lints with one long-lived ``ruff server`` child driven over LSP
  stdio (didOpen/didChange; the child publishes the diagnostics of each version), which is
  several times faster per check (see ``benchmarks/ruff_engines.py``); fixes, formatting and
  :meth:`~RuffEngine.check_tree` stay on subprocesses. It sends the child only what changed
  since the text it sent last (one ranged change), and keeps the child's diagnostics as LSP
  JSON (:class:`~.model.Findings`) so that a language server can relay them without
  converting them. Its ``lint`` starts at once when it can (the child gets the change before
  it returns; ``done`` runs in the callback that reads the answer: no task, no loop turn),
  else in a task of the engine's. A hint, not a lint: :meth:`~RuffServerEngine.send_ahead`
  sends an editor's change before the server has applied it.

:func:`make_ruff_engine` picks the server engine unless told otherwise.

Settings: ``configs`` maps workspace-relative paths of the workspace's ``pyproject.toml`` /
``ruff.toml`` / ``.ruff.toml`` files to their text. They are written to a private folder tree (see
``_configtree``) and ruff is asked about ``<tree>/<path>``, so it resolves them exactly as on
disk: nearest folder wins, ``pyproject.toml`` without ``[tool.ruff]`` is skipped, relative
``extend`` works. Nothing above the tree and no user-level config is read. Files a config excludes
get no diagnostics and are left alone by fixes and formatting (``--force-exclude``).

Limits: every run is bounded by ``timeout_s`` and input by ``file_bytes_max``; at most
``max_concurrent`` ruff runs at once. Failures raise :class:`AnalysisError` with one line.

Severity (as ruff's own server): syntax errors (code ``"invalid-syntax"``), F821 undefined name and
E902 I/O error are errors, every other rule a warning -- the user's config decides which rules
matter, not us. Tags: see :data:`UNNECESSARY_CODES` and :data:`DEPRECATED_CODES`.
"""

from .._configtree import is_python_path
from ..model import AnalysisError
from .cli import LintCallback, RuffEngine, settle
from .rules import (
    DEPRECATED_CODES,
    ERROR_CODES,
    SYNTAX_CODE,
    UNNECESSARY_CODES,
    diagnostic_from_cli,
    diagnostic_from_server,
    diagnostic_severity,
    diagnostic_tags,
)
from .server import RuffServerEngine, make_ruff_engine

__all__ = [
    "DEPRECATED_CODES",
    "ERROR_CODES",
    "SYNTAX_CODE",
    "UNNECESSARY_CODES",
    "AnalysisError",
    "LintCallback",
    "RuffEngine",
    "RuffServerEngine",
    "diagnostic_from_cli",
    "diagnostic_from_server",
    "diagnostic_severity",
    "diagnostic_tags",
    "is_python_path",
    "make_ruff_engine",
    "settle",
]
