"""Private folder trees that let ruff resolve a workspace's settings as it does on disk.

Ruff finds its settings by walking up from a file's path: the nearest folder with a
``pyproject.toml`` (with ``[tool.ruff]``), ``ruff.toml`` or ``.ruff.toml`` wins, and ``extend``
follows relative paths. Our workspaces live in the database, so for each distinct set of config
files we write those files (and nothing else with content) under a private temporary root::

    <root>/xdg/                 empty XDG_CONFIG_HOME: no user-level ruff config leaks in
    <root>/t-<hash>/            one tree per set of configs, named by its hash, immutable configs
    <root>/t-<hash>/pkg/ruff.toml

and ask ruff about ``<root>/t-<hash>/<path>``. Ruff also looks at the file system for a few
decisions (isort's first-party detection: does ``<src>/<module>`` exist; package roots: which
folders hold ``__init__.py``). The optional *layout* (the workspace's file paths) is mirrored
into the tree as folders and EMPTY ``.py``/``.pyi`` placeholders, so those decisions match too.

Trees are cached (least recently used first out, never while in use) and removed at close.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import tomllib
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .model import AnalysisError
from .settings import CONFIG_NAMES

log = logging.getLogger(__name__)

PATH_BYTES_MAX = 1024
PYTHON_SUFFIXES = (".py", ".pyi")


def check_relpath(path: str) -> PurePosixPath:
    """Validate a workspace-relative POSIX path (SPEC "File"); raise AnalysisError if bad."""
    bad = (
        not path
        or path.startswith("/")
        or len(path.encode("utf-8", "surrogatepass")) > PATH_BYTES_MAX
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path)
        or any(part in ("", ".", "..") for part in path.split("/"))
    )
    if bad:
        raise AnalysisError(f"invalid workspace path {path!r}")
    return PurePosixPath(path)


def is_python_path(path: str) -> bool:
    """True for the files ruff lints and formats here: ``.py`` and ``.pyi``."""
    return path.endswith(PYTHON_SUFFIXES)


def _extend_of(name: str, text: str) -> str | None:
    """The ``extend`` value of one config file, or None (also for invalid TOML: ruff reports)."""
    try:
        doc = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError):
        return None
    if name == "pyproject.toml":
        tool = doc.get("tool")
        ruff = tool.get("ruff") if isinstance(tool, dict) else None
        doc = ruff if isinstance(ruff, dict) else {}
    value = doc.get("extend")
    return value if isinstance(value, str) else None


def select_configs(configs: Mapping[str, str]) -> dict[str, str]:
    """The ruff config files of ``configs`` (paths validated); other files are ignored."""
    return {
        path: text for path, text in configs.items() if check_relpath(path).name in CONFIG_NAMES
    }


def check_configs(configs: Mapping[str, str]) -> dict[str, str]:
    """Keep the ruff config files of ``configs``; validate their paths and ``extend`` targets.

    ``extend`` may only name a file inside the workspace by a relative path: on the server an
    absolute path, ``~`` or ``$VAR`` would read files of the server's machine, not the workspace's.
    """
    kept = select_configs(configs)
    for path, text in kept.items():
        rel = PurePosixPath(path)
        extend = _extend_of(rel.name, text)
        if extend is not None:
            target = PurePosixPath(extend.replace("\\", "/"))
            escapes = False
            depth = len(rel.parent.parts)
            for part in target.parts:
                depth += -1 if part == ".." else 0 if part == "." else 1
                escapes = escapes or depth < 0
            if target.is_absolute() or extend.startswith("~") or "$" in extend or escapes:
                raise AnalysisError(
                    f"{path}: `extend = {extend!r}` must be a relative path inside the workspace"
                )
    return kept


def configs_key(configs: Mapping[str, str]) -> str:
    """A stable hash of a set of config files (paths and texts)."""
    digest = hashlib.sha256()
    for path in sorted(configs):
        for part in (path, configs[path]):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()[:20]


@dataclass(eq=False)
class ConfigTree:
    """One materialised set of configs. ``dir`` is its root; ruff sees workspace paths under it."""

    key: str
    dir: Path
    configs: Mapping[str, str]
    users: int = 0
    layout_source: object = None
    placeholders: frozenset[str] = frozenset()
    folders: frozenset[str] = frozenset()
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def file(self, path: str) -> Path:
        """Where ruff should believe the workspace file ``path`` is."""
        return self.dir.joinpath(*check_relpath(path).parts)


OWNER_FILE = "owner.pid"


def _sweep_stale_roots(prefix: str) -> None:
    """Remove roots left by processes of ours that died without closing their engine."""
    for old in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            pid = int((old / OWNER_FILE).read_text())
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except (OSError, ValueError):  # not ours, unreadable, or alive under another user
            continue


def make_root(prefix: str) -> Path:
    """Create a private temporary root, refusing one that ruff config files above would affect.

    The root records its owner's process id; roots of dead owners are swept here.
    """
    _sweep_stale_roots(prefix)
    root = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
    (root / OWNER_FILE).write_text(str(os.getpid()))
    for folder in root.parents:
        for name in CONFIG_NAMES:
            if (folder / name).is_file():
                shutil.rmtree(root, ignore_errors=True)
                raise AnalysisError(
                    f"temporary folder {root} lies under {folder / name}, which ruff would read; "
                    "set TMPDIR to a folder without ruff configs above it"
                )
    (root / "xdg").mkdir()
    return root


def write_tree(base: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` (validated relative paths) under ``base``. Blocking."""
    for path, text in files.items():
        target = base.joinpath(*check_relpath(path).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8", errors="surrogatepass", newline="")


class ConfigTrees:
    """The cache of :class:`ConfigTree` under one private root (see the module docstring)."""

    def __init__(
        self,
        *,
        trees_max: int = 16,
        on_evict: Callable[[ConfigTree], None] | None = None,
        prefix: str = "dbcode-ruff-",
    ) -> None:
        assert trees_max >= 1
        self._trees: dict[str, ConfigTree] = {}  # insertion order = least recently used first
        self._trees_max = trees_max
        self._on_evict = on_evict
        self._prefix = prefix
        self._root: Path | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._lock = asyncio.Lock()

    @property
    def root(self) -> Path:
        """The private root (created on first use)."""
        if self._root is None:
            self._root = make_root(self._prefix)
            # Also removed if the engine is dropped or the interpreter exits without close().
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._root, True)
        return self._root

    @property
    def xdg_dir(self) -> Path:
        """An empty folder to use as ``XDG_CONFIG_HOME`` for ruff."""
        return self.root / "xdg"

    def live(self) -> list[ConfigTree]:
        """The trees currently materialised."""
        return list(self._trees.values())

    @contextlib.asynccontextmanager
    async def use(
        self, configs: Mapping[str, str], layout: Iterable[str] | None = None
    ) -> AsyncIterator[ConfigTree]:
        """Materialise (or reuse) the tree for ``configs`` and keep it alive while in use.

        ``layout``: the workspace's file paths to mirror as folders and empty Python files;
        ``None`` leaves the tree's current layout as it is.
        """
        kept = select_configs(configs)
        key = configs_key(kept)
        async with self._lock:
            tree = self._trees.pop(key, None)
            if tree is None:
                check_configs(kept)  # once per set of configs: the tree's key vouches for it
                tree = ConfigTree(key=key, dir=self.root / f"t-{key}", configs=kept)
                await asyncio.to_thread(self._materialise, tree)
            self._trees[key] = tree
            tree.users += 1
            for old in self._evict():  # under the lock: a tree re-made with this key must wait
                await asyncio.to_thread(shutil.rmtree, old.dir, True)
        try:
            if layout is not None and layout is not tree.layout_source:
                async with tree.lock:
                    await asyncio.to_thread(self._sync_layout, tree, layout)
            yield tree
        finally:
            tree.users -= 1

    def _evict(self) -> list[ConfigTree]:
        evicted: list[ConfigTree] = []
        for key in list(self._trees):
            if len(self._trees) <= self._trees_max:
                break
            tree = self._trees[key]
            if tree.users == 0:
                del self._trees[key]
                evicted.append(tree)
                if self._on_evict is not None:
                    self._on_evict(tree)
        return evicted

    @staticmethod
    def _materialise(tree: ConfigTree) -> None:
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=tree.dir.parent))
        try:
            write_tree(staging, tree.configs)
            if tree.dir.exists():  # left over by an earlier engine run in this root
                shutil.rmtree(tree.dir)
            staging.rename(tree.dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    @staticmethod
    def _sync_layout(tree: ConfigTree, layout: Iterable[str]) -> None:
        source = layout
        placeholders: set[str] = set()
        folders: set[str] = set()
        for path in layout:
            try:
                rel = check_relpath(path)
            except AnalysisError:
                continue
            folders.update(str(parent) for parent in rel.parents if str(parent) != ".")
            if rel.suffix in PYTHON_SUFFIXES and str(rel) not in tree.configs:
                placeholders.add(str(rel))
        for path in sorted(tree.placeholders - placeholders):
            with contextlib.suppress(OSError):
                tree.dir.joinpath(path).unlink()
        config_folders = {
            str(parent) for path in tree.configs for parent in PurePosixPath(path).parents
        }
        for folder in sorted(tree.folders - folders - config_folders, key=len, reverse=True):
            with contextlib.suppress(OSError):
                tree.dir.joinpath(folder).rmdir()
        for folder in sorted(folders - tree.folders):
            tree.dir.joinpath(folder).mkdir(parents=True, exist_ok=True)
        for path in sorted(placeholders - tree.placeholders):
            target = tree.dir.joinpath(path)
            if target.is_dir():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
        tree.placeholders = frozenset(placeholders)
        tree.folders = frozenset(folders)
        tree.layout_source = source

    async def close(self) -> None:
        """Remove every tree and the root."""
        async with self._lock:
            trees, self._trees = list(self._trees.values()), {}
            root, self._root = self._root, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if self._on_evict is not None:
            for tree in trees:
                self._on_evict(tree)
        if root is not None:
            await asyncio.to_thread(shutil.rmtree, root, True)


def ruff_env(xdg_dir: Path) -> dict[str, str]:
    """The environment for ruff: no RUFF_* overrides, no user-level config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUFF_")}
    env["XDG_CONFIG_HOME"] = str(xdg_dir)
    env["NO_COLOR"] = "1"
    return env
