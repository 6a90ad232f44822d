"""The local filesystem side of import and export: walking with .gitignore, safe writes.

Export never writes outside its target directory: every path is validated, every parent
is created without following symlinks, and files are written to a temporary name and
renamed into place.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from .store import validate
from .store.errors import InvalidInput

ALWAYS_SKIPPED_DIRS = frozenset({".git"})


@dataclass
class Skipped:
    """What an import left out, and why (shown to the user)."""

    binary: list[str] = field(default_factory=list)
    too_large: list[str] = field(default_factory=list)
    not_utf8: list[str] = field(default_factory=list)
    bad_path: list[str] = field(default_factory=list)
    special: list[str] = field(default_factory=list)  # symlinks, sockets, ...

    def total(self) -> int:
        return sum(len(v) for v in vars(self).values())


def _load_ignore(directory: Path) -> pathspec.GitIgnoreSpec | None:
    gi = directory / ".gitignore"
    try:
        lines = gi.read_text(encoding="utf-8", errors="replace").splitlines()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _ignored(specs: list[tuple[str, pathspec.GitIgnoreSpec]], rel: str, is_dir: bool) -> bool:
    """Git semantics: the deepest .gitignore with a matching rule decides."""
    verdict = False
    for base, spec in specs:
        sub = rel[len(base) :] if base else rel
        if is_dir:
            sub += "/"
        res = spec.check_file(sub)
        if res.include is not None:
            verdict = bool(res.include)
    return verdict


def walk_tree(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Yield (relative POSIX path, directory entry) of files under ``root``, honouring
    .gitignore files at every level, skipping .git; symlinks and special files are yielded
    too (the caller reports them)."""
    root_spec = _load_ignore(root)
    stack: list[tuple[str, str, list[tuple[str, pathspec.GitIgnoreSpec]]]] = [
        (os.fspath(root), "", [("", root_spec)] if root_spec else [])
    ]
    while stack:
        directory, rel_dir, specs = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            rel = f"{rel_dir}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                if entry.name in ALWAYS_SKIPPED_DIRS or (specs and _ignored(specs, rel, True)):
                    continue
                sub_spec = _load_ignore(Path(entry.path))
                sub_specs = [*specs, (rel + "/", sub_spec)] if sub_spec else specs
                stack.append((entry.path, rel + "/", sub_specs))
            elif not (specs and _ignored(specs, rel, False)):
                yield rel, entry


def read_for_import(
    rel: str, entry: os.DirEntry[str], skipped: Skipped, limit: int
) -> tuple[str, bytes] | None:
    """The file's text and its bytes, or None after recording why it is skipped."""
    try:
        validate.check_path(rel)
    except InvalidInput:
        skipped.bad_path.append(rel)
        return None
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        skipped.special.append(rel)
        return None
    if not stat.S_ISREG(st.st_mode):
        skipped.special.append(rel)
        return None
    if st.st_size > limit:
        skipped.too_large.append(rel)
        return None
    try:
        with open(entry.path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError:
        skipped.special.append(rel)
        return None
    if len(data) > limit:  # grew since the stat
        skipped.too_large.append(rel)
        return None
    if validate.looks_binary(data):
        skipped.binary.append(rel)
        return None
    try:
        return data.decode("utf-8"), data
    except UnicodeDecodeError:
        skipped.not_utf8.append(rel)
        return None


class ExportDir:
    """A target directory that files are written into, never out of."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()

    def _target(self, path: str) -> Path:
        validate.check_path(path)
        target = self.root.joinpath(*path.split("/"))
        # Refuse to go through symlinks that could lead outside the root.
        cur = self.root
        for part in path.split("/")[:-1]:
            cur = cur / part
            if cur.is_symlink():
                raise InvalidInput(f"refusing to write {path}: {cur} is a symlink")
        if target.is_symlink():
            raise InvalidInput(f"refusing to write {path}: it is a symlink in the target")
        if os.path.commonpath([self.root, target.parent.resolve()]) != str(self.root):
            raise InvalidInput(f"refusing to write {path}: outside {self.root}")
        return target

    def write(self, path: str, text: str) -> None:
        target = self._target(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.dbcode-tmp")
        tmp.write_bytes(text.encode("utf-8"))
        os.replace(tmp, target)

    def remove(self, path: str) -> None:
        target = self._target(path)
        try:
            target.unlink()
        except FileNotFoundError:
            return
        # Remove now-empty parent folders, never the root itself.
        parent = target.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
