"""The tree-sitter language registry, read from ``grammars/<language>/`` (one folder each).

Each folder holds ``language.toml`` (grammar module, function, file extensions; see
``grammars/README.md``) and the query files ``tags.scm`` (symbols) and ``folds.scm`` (folding).
Adding a language is adding a folder and installing its grammar wheel; nothing here changes.

Where ``grammars/`` is: inside the installed package (``lsp_dbcode/grammars``, when packaged) or
at the root of a source checkout (``<repo>/grammars``), in that order.
"""

from __future__ import annotations

import functools
import importlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import tree_sitter

from .model import AnalysisError

QueryKind = Literal["tags", "folds"]

_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def grammars_dir() -> Path:
    """The folder holding one sub-folder per language."""
    for candidate in (_PACKAGE_DIR / "grammars", _PACKAGE_DIR.parent / "grammars"):
        if any(candidate.glob("*/language.toml")):
            return candidate
    raise AnalysisError(f"no grammars/ folder found next to {_PACKAGE_DIR}")


@dataclass(frozen=True)
class LanguageSpec:
    """One language of the registry."""

    name: str
    module: str
    function: str
    extensions: tuple[str, ...]
    filenames: tuple[str, ...]
    language_ids: tuple[str, ...]
    folder: Path
    queries_from: str | None = None


def _strings(doc: Mapping[str, object], key: str, where: Path) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AnalysisError(f"{where}: `{key}` must be a list of strings")
    return tuple(value)


def _load_spec(folder: Path) -> LanguageSpec:
    where = folder / "language.toml"
    try:
        doc = tomllib.loads(where.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AnalysisError(f"{where}: {exc}") from exc
    module, function = doc.get("module"), doc.get("function", "language")
    queries_from = doc.get("queries_from")
    if not isinstance(module, str) or not isinstance(function, str):
        raise AnalysisError(f"{where}: `module` and `function` must be strings")
    if queries_from is not None and not isinstance(queries_from, str):
        raise AnalysisError(f"{where}: `queries_from` must be a string")
    extensions = tuple(ext.lower() for ext in _strings(doc, "extensions", where))
    if not all(ext.startswith(".") for ext in extensions):
        raise AnalysisError(f"{where}: extensions start with a dot")
    return LanguageSpec(
        name=folder.name,
        module=module,
        function=function,
        extensions=extensions,
        filenames=_strings(doc, "filenames", where),
        language_ids=_strings(doc, "language_ids", where),
        folder=folder,
        queries_from=queries_from,
    )


@functools.cache
def registry() -> Mapping[str, LanguageSpec]:
    """Every language of ``grammars/``, by name. Read once."""
    specs = {
        folder.name: _load_spec(folder)
        for folder in sorted(grammars_dir().iterdir())
        if (folder / "language.toml").is_file()
    }
    owner: dict[str, str] = {}
    for spec in specs.values():
        for key in (*spec.extensions, *(f"name:{n}" for n in spec.filenames)):
            if key in owner:
                raise AnalysisError(f"{key} belongs to both {owner[key]} and {spec.name}")
            owner[key] = spec.name
        if spec.queries_from is not None and spec.queries_from not in specs:
            raise AnalysisError(f"{spec.name}: queries_from names unknown {spec.queries_from}")
    return specs


@functools.cache
def _by_suffix() -> tuple[Mapping[str, str], Mapping[str, str]]:
    extensions: dict[str, str] = {}
    filenames: dict[str, str] = {}
    for spec in registry().values():
        extensions.update(dict.fromkeys(spec.extensions, spec.name))
        filenames.update(dict.fromkeys(spec.filenames, spec.name))
    return extensions, filenames


def language_names() -> tuple[str, ...]:
    """The names of all languages, sorted."""
    return tuple(sorted(registry()))


def language_for_path(path: str) -> str | None:
    """The language of a workspace path by its file name / extension, or None."""
    extensions, filenames = _by_suffix()
    name = PurePosixPath(path).name
    if name in filenames:
        return filenames[name]
    lowered = name.lower()
    # The longest matching ending wins (".d.ts" style endings would beat ".ts"); a leading dot
    # alone (".ts") is a hidden file's name, not an extension.
    for i in range(1, len(lowered)):
        if lowered[i] == "." and lowered[i:] in extensions:
            return extensions[lowered[i:]]
    return None


def language_for_id(language_id: str) -> str | None:
    """The language for an LSP ``languageId`` (``"typescriptreact"`` -> ``"tsx"``), or None."""
    for spec in registry().values():
        if language_id in spec.language_ids or language_id == spec.name:
            return spec.name
    return None


def spec(name: str) -> LanguageSpec:
    """The spec of language ``name``; AnalysisError if unknown."""
    try:
        return registry()[name]
    except KeyError:
        raise AnalysisError(f"unknown language {name!r}") from None


@functools.cache
def ts_language(name: str) -> tree_sitter.Language:
    """The tree-sitter Language for ``name`` (its grammar wheel imported on first use)."""
    language = spec(name)
    try:
        module = importlib.import_module(language.module)
        pointer = getattr(module, language.function)()
    except (ImportError, AttributeError) as exc:
        raise AnalysisError(
            f"grammar for {name} is not installed ({language.module}.{language.function}): {exc}"
        ) from exc
    return tree_sitter.Language(pointer)


def query_path(name: str, kind: QueryKind) -> Path | None:
    """The ``<kind>.scm`` file for language ``name`` (or its ``queries_from``), or None."""
    language = spec(name)
    path = language.folder / f"{kind}.scm"
    if path.is_file():
        return path
    if language.queries_from is not None:
        return query_path(language.queries_from, kind)
    return None


@functools.cache
def query(name: str, kind: QueryKind) -> tree_sitter.Query | None:
    """The compiled query ``<kind>.scm`` of language ``name``, or None if it has none."""
    path = query_path(name, kind)
    if path is None:
        return None
    try:
        return tree_sitter.Query(ts_language(name), path.read_text(encoding="utf-8"))
    except tree_sitter.QueryError as exc:
        raise AnalysisError(f"{path}: {exc}") from exc
