"""Analysis: ruff and tree-sitter behind one small interface (no Postgres, no LSP here).

Text + workspace-relative path + config texts in; diagnostics, symbols, folds, fixes and
formatted text out. Positions are 0-based lines and 0-based code point columns (see ``model``).

- :mod:`.model` -- the values (Pos, Span, Diagnostic, Fix, Symbol, Fold, AnalysisError).
- :mod:`.ruff` -- :func:`make_ruff_engine`, :class:`RuffEngine`, :class:`RuffServerEngine`.
- :mod:`.syntax` -- :class:`SyntaxTree` (incremental tree-sitter: errors, symbols, folds).
- :mod:`.languages` -- the language registry read from ``grammars/``.
- :mod:`.settings` -- ``[tool.dbcode]`` settings and which paths are ruff configs.
"""

from .languages import language_for_id, language_for_path, language_names
from .model import (
    SYMBOL_KINDS,
    AnalysisError,
    Diagnostic,
    Fix,
    Fold,
    Pos,
    Span,
    Symbol,
    TextEditCP,
)
from .ruff import RuffEngine, RuffServerEngine, is_python_path, make_ruff_engine
from .settings import CONFIG_NAMES, DbcodeSettings, dbcode_settings, is_config_path
from .syntax import SyntaxTree

__all__ = [
    "CONFIG_NAMES",
    "SYMBOL_KINDS",
    "AnalysisError",
    "DbcodeSettings",
    "Diagnostic",
    "Fix",
    "Fold",
    "Pos",
    "RuffEngine",
    "RuffServerEngine",
    "Span",
    "Symbol",
    "SyntaxTree",
    "TextEditCP",
    "dbcode_settings",
    "is_config_path",
    "is_python_path",
    "language_for_id",
    "language_for_path",
    "language_names",
    "make_ruff_engine",
]
