"""Ruff behind a small async interface: text + path + configs -> diagnostics, fixes, formatting.

Two engines, one API (:class:`RuffEngine`):

- :class:`RuffEngine` runs one ``ruff`` subprocess per call (``ruff check --stdin-filename ...
  --output-format json -``, ``ruff format ... -``).
- :class:`RuffServerEngine` answers :meth:`~RuffEngine.check` from one long-lived ``ruff server``
  child driven over LSP stdio (didOpen/didChange + pulled ``textDocument/diagnostic``), which is
  several times faster per check (see ``benchmarks/ruff_engines.py``); fixes, formatting and
  :meth:`~RuffEngine.check_tree` stay on subprocesses.

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

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from ._configtree import (
    ConfigTree,
    ConfigTrees,
    check_configs,
    check_relpath,
    is_python_path,
    ruff_env,
    write_tree,
)
from ._lsp_stdio import LspStdioClient
from .model import AnalysisError, Diagnostic, Fix, Pos, Severity, Span, Tag, TextEditCP

__all__ = [
    "DEPRECATED_CODES",
    "ERROR_CODES",
    "UNNECESSARY_CODES",
    "AnalysisError",
    "RuffEngine",
    "RuffServerEngine",
    "is_python_path",
    "make_ruff_engine",
]

log = logging.getLogger(__name__)

SYNTAX_CODE = "invalid-syntax"
# Rules whose range is code that does nothing (editors grey it out).
UNNECESSARY_CODES = frozenset(
    {"F401", "F841", "F842", "RUF059", "RUF100", "ARG001", "ARG002", "ARG003", "ARG004", "ARG005"}
)
# Rules whose range uses something deprecated (editors strike it through).
DEPRECATED_CODES = frozenset({"UP005", "UP006", "UP019", "UP023", "UP026", "UP035"})
# Rules reported as errors, as ruff's own language server does.
ERROR_CODES = frozenset({SYNTAX_CODE, "F821", "E902"})

FILE_BYTES_MAX = 2 * 1024 * 1024
TREE_BYTES_MAX = 256 * 1024 * 1024
STDERR_LINES_KEPT = 20


def _find_ruff() -> str:
    import ruff  # the ruff package's locator, not this module

    return str(ruff.find_ruff_bin())


def _severity(code: str | None) -> Severity:
    return "error" if code is None or code in ERROR_CODES else "warning"


def _tags(code: str | None) -> tuple[Tag, ...]:
    if code in UNNECESSARY_CODES:
        return ("unnecessary",)
    if code in DEPRECATED_CODES:
        return ("deprecated",)
    return ()


def _cli_pos(loc: Mapping[str, Any]) -> Pos:
    """ruff JSON location (1-based row, 1-based code point column) -> 0-based Pos."""
    return Pos(int(loc["row"]) - 1, int(loc["column"]) - 1)


def diagnostic_from_cli(entry: Mapping[str, Any]) -> Diagnostic:
    """One entry of ``ruff check --output-format json`` as a Diagnostic."""
    code = entry.get("code") or SYNTAX_CODE
    fix: Fix | None = None
    raw_fix = entry.get("fix")
    if raw_fix and raw_fix.get("edits") and raw_fix.get("applicability") != "display-only":
        edits = tuple(
            TextEditCP(
                Span(_cli_pos(e["location"]), _cli_pos(e["end_location"])), e.get("content") or ""
            )
            for e in raw_fix["edits"]
        )
        title = raw_fix.get("message") or entry.get("name") or code
        fix = Fix(title, edits, str(raw_fix.get("applicability") or "unsafe"))
    noqa_row = entry.get("noqa_row")
    return Diagnostic(
        span=Span(_cli_pos(entry["location"]), _cli_pos(entry["end_location"])),
        severity=_severity(code),
        message=entry.get("message") or "",
        source="ruff",
        code=code,
        code_url=entry.get("url") or None,
        tags=_tags(code),
        fix=fix,
        noqa_line=None if noqa_row is None else int(noqa_row) - 1,
    )


def _lsp_span(rng: Mapping[str, Any]) -> Span:
    s, e = rng["start"], rng["end"]
    return Span(Pos(int(s["line"]), int(s["character"])), Pos(int(e["line"]), int(e["character"])))


def diagnostic_from_server(item: Mapping[str, Any]) -> Diagnostic:
    """One item of ``ruff server``'s pulled diagnostics (utf-32 positions) as a Diagnostic.

    Made to equal :func:`diagnostic_from_cli` for the same finding: the ``help:`` suffix the
    server appends to messages is dropped; ``is_preferred`` tells a safe fix from an unsafe one.
    """
    code = str(item.get("code") or SYNTAX_CODE)
    data = item.get("data") or {}
    message = str(item.get("message") or "")
    cut = message.find("\n\nhelp: ")
    if cut >= 0:
        message = message[:cut]
    fix: Fix | None = None
    edits = data.get("edits") or []
    if edits:
        fix = Fix(
            str(data.get("title") or code),
            tuple(TextEditCP(_lsp_span(e["range"]), e.get("newText") or "") for e in edits),
            "safe" if data.get("is_preferred") else "unsafe",
        )
    noqa_edit = data.get("noqa_edit")
    description = item.get("codeDescription") or {}
    return Diagnostic(
        span=_lsp_span(item["range"]),
        severity=_severity(code),
        message=message,
        source="ruff",
        code=code,
        code_url=description.get("href") or None,
        tags=_tags(code),
        fix=fix,
        noqa_line=int(noqa_edit["range"]["start"]["line"]) if noqa_edit else None,
    )


_SNIPPET_LINE = re.compile(r"^\d*\s*\|")


def _sorted(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Both engines return diagnostics in this order: by position, then code."""
    return sorted(diagnostics, key=lambda d: (d.span.start, d.span.end, d.code or "", d.message))


def _one_line(stderr: bytes, tree_dir: Path | None) -> str:
    """ruff's error output as one line, with private paths made workspace-relative."""
    text = stderr.decode("utf-8", "replace")
    if tree_dir is not None:
        text = text.replace(str(tree_dir) + os.sep, "").replace(str(tree_dir), ".")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not _SNIPPET_LINE.match(line) and line != "ruff failed"]
    parts = [line.removeprefix("error:").removeprefix("Cause:").strip() for line in lines]
    message = ": ".join(part for part in parts if part and not part.startswith("^"))
    return message[:500] or "no error message"


class RuffEngine:
    """Ruff through one subprocess per call. Use as ``async with RuffEngine() as ruff:``."""

    def __init__(
        self,
        *,
        ruff_bin: str | None = None,
        timeout_s: float = 10.0,
        tree_timeout_s: float = 300.0,
        file_bytes_max: int = FILE_BYTES_MAX,
        tree_bytes_max: int = TREE_BYTES_MAX,
        max_concurrent: int = 4,
        trees_max: int = 16,
    ) -> None:
        assert timeout_s > 0 and tree_timeout_s > 0 and max_concurrent >= 1
        self.ruff_bin = ruff_bin or _find_ruff()
        self.timeout_s = timeout_s
        self.tree_timeout_s = tree_timeout_s
        self.file_bytes_max = file_bytes_max
        self.tree_bytes_max = tree_bytes_max
        self._slots = asyncio.Semaphore(max_concurrent)
        self._trees = ConfigTrees(trees_max=trees_max, on_evict=self._tree_evicted)
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- public API ------------------------------------------------------------------------

    async def check(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        *,
        layout: Iterable[str] | None = None,
    ) -> list[Diagnostic]:
        """Ruff's diagnostics for the Python file ``path`` whose content is ``text``.

        ``layout`` (optional): the workspace's file paths; ruff's isort looks at which modules
        exist to tell first-party from third-party imports. Pass the same immutable collection
        (e.g. a frozenset) while it is unchanged: it is then not compared again.
        """
        data = self._input(text, path)
        async with self._trees.use(configs, layout) as tree:
            out = await self._run(
                ["check", *self._check_flags(), *self._stdin_flags(tree, path)],
                data,
                tree,
                what=f"ruff check on {path}",
                ok_codes=(0, 1),
            )
        return _sorted(diagnostic_from_cli(entry) for entry in self._json(out, path))

    async def fix_all(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        *,
        layout: Iterable[str] | None = None,
    ) -> str:
        """The text after every fix ruff would apply (``ruff check --fix``, the config's rules)."""
        return await self._fix(text, path, configs, layout, [], "fix-all")

    async def organize_imports(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        *,
        layout: Iterable[str] | None = None,
    ) -> str:
        """The text with imports organised: only isort's fixes (I001, I002), as ruff's server."""
        return await self._fix(text, path, configs, layout, ["--select", "I"], "organize-imports")

    async def format(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        line_range: tuple[int, int] | Span | None = None,
    ) -> str:
        """``ruff format`` of ``text``; a text that does not parse raises AnalysisError.

        ``line_range``: ``(start_line, end_line)``, 0-based, END EXCLUSIVE (lines ``start`` up to
        ``end - 1``), or a code point :class:`Span`. Ruff widens it to whole logical lines; text
        outside it is left as is.
        """
        data = self._input(text, path)
        extra: list[str] = []
        if line_range is not None:
            extra.append(f"--range={_range_arg(line_range)}")
        async with self._trees.use(configs) as tree:
            out = await self._run(
                ["format", "--no-cache", *extra, *self._stdin_flags(tree, path)],
                data,
                tree,
                what=f"ruff format on {path}",
                ok_codes=(0,),
            )
        return out.decode("utf-8", "surrogateescape")

    async def check_tree(
        self, files: Mapping[str, str], configs: Mapping[str, str]
    ) -> dict[str, list[Diagnostic]]:
        """Lint many Python files in one ``ruff check`` run (for ``dbcode check``).

        Every ``.py``/``.pyi`` file of ``files`` gets an entry (an empty list when clean), except
        files above ``file_bytes_max``, which are left out. Files the configs exclude are not
        linted, as with ``ruff check .`` on disk. Bounded by ``tree_timeout_s``.
        """
        self._check_open()
        kept_configs = check_configs(configs)
        written: dict[str, str] = {}
        total = 0
        for path, text in files.items():
            check_relpath(path)
            if not is_python_path(path) or path in kept_configs:
                continue
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > self.file_bytes_max:
                log.info("check_tree: %s skipped, %d bytes > %d", path, size, self.file_bytes_max)
                continue
            total += size
            if total > self.tree_bytes_max:
                raise AnalysisError(
                    f"files to check exceed {self.tree_bytes_max // (1024 * 1024)} MiB"
                )
            written[path] = text
        run_dir = self._trees.root / f"run-{uuid.uuid4().hex[:12]}"
        try:
            await asyncio.to_thread(write_tree, run_dir, {**kept_configs, **written})
            out = await self._run(
                ["check", *self._check_flags(), "--force-exclude", "."],
                b"",
                None,
                cwd=run_dir,
                what=f"ruff check on {len(written)} files",
                ok_codes=(0, 1),
                timeout_s=self.tree_timeout_s,
            )
            results: dict[str, list[Diagnostic]] = {path: [] for path in written}
            for entry in self._json(out, "the files"):
                try:
                    rel = Path(entry["filename"]).relative_to(run_dir).as_posix()
                except (KeyError, ValueError):
                    continue
                results.setdefault(rel, []).append(diagnostic_from_cli(entry))
            return {path: _sorted(diagnostics) for path, diagnostics in results.items()}
        finally:
            await asyncio.to_thread(shutil.rmtree, run_dir, True)

    async def close(self) -> None:
        """End every run's resources and remove the private folders. Idempotent."""
        self._closed = True
        await self._trees.close()

    # -- internals -------------------------------------------------------------------------

    def _tree_evicted(self, tree: ConfigTree) -> None:
        """Called (synchronously) when a config tree leaves the cache."""

    def _check_open(self) -> None:
        if self._closed:
            raise AnalysisError("the ruff engine is closed")

    def _input(self, text: str, path: str) -> bytes:
        self._check_open()
        check_relpath(path)
        if not is_python_path(path):
            raise AnalysisError(f"{path} is not a Python file (.py or .pyi)")
        data = text.encode("utf-8", "surrogatepass")
        if len(data) > self.file_bytes_max:
            raise AnalysisError(
                f"{path} is too big for ruff here: {len(data)} bytes, limit {self.file_bytes_max}"
            )
        return data

    @staticmethod
    def _check_flags() -> list[str]:
        # A config may say fix = true, fix-only or another output format: the CLI flags win.
        return ["--output-format", "json", "--no-fix", "--no-fix-only", "--no-cache"]

    @staticmethod
    def _stdin_flags(tree: ConfigTree, path: str) -> list[str]:
        return ["--force-exclude", "--stdin-filename", str(tree.file(path)), "-"]

    async def _fix(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        layout: Iterable[str] | None,
        extra: list[str],
        what: str,
    ) -> str:
        data = self._input(text, path)
        async with self._trees.use(configs, layout) as tree:
            out = await self._run(
                ["check", "--fix-only", "--no-cache", *extra, *self._stdin_flags(tree, path)],
                data,
                tree,
                what=f"ruff {what} on {path}",
                ok_codes=(0,),
            )
        return out.decode("utf-8", "surrogateescape")

    @staticmethod
    def _json(out: bytes, where: str) -> list[dict[str, Any]]:
        try:
            entries = json.loads(out or b"[]")
        except ValueError as exc:
            raise AnalysisError(f"ruff printed something that is not JSON for {where}") from exc
        if not isinstance(entries, list):
            raise AnalysisError(f"ruff printed unexpected JSON for {where}")
        return entries

    async def _run(
        self,
        args: list[str],
        stdin: bytes,
        tree: ConfigTree | None,
        *,
        what: str,
        ok_codes: tuple[int, ...],
        cwd: Path | None = None,
        timeout_s: float | None = None,
    ) -> bytes:
        """Run ruff with ``args``; return its stdout or raise AnalysisError. Bounded in time."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        workdir = cwd or (tree.dir if tree is not None else self._trees.root)
        async with self._slots:
            try:
                proc = await asyncio.create_subprocess_exec(
                    self.ruff_bin,
                    *args,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    cwd=workdir,
                    env=ruff_env(self._trees.xdg_dir),
                )
            except OSError as exc:
                raise AnalysisError(f"cannot start ruff ({self.ruff_bin}): {exc}") from exc
            try:
                async with asyncio.timeout(timeout_s):
                    out, err = await proc.communicate(stdin)
            except TimeoutError:
                raise AnalysisError(f"{what} timed out after {timeout_s:g} s") from None
            finally:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        if proc.returncode not in ok_codes:
            detail = _one_line(err, workdir)
            raise AnalysisError(f"{what} failed (exit {proc.returncode}): {detail}")
        return out


def _range_arg(line_range: tuple[int, int] | Span) -> str:
    """Our 0-based range as ruff's ``--range`` (1-based lines and code point columns)."""
    if isinstance(line_range, Span):
        s, e = line_range.start, line_range.end
        if (e.line, e.col) < (s.line, s.col) or s.line < 0 or s.col < 0:
            raise AnalysisError(f"invalid range {line_range}")
        return f"{s.line + 1}:{s.col + 1}-{e.line + 1}:{e.col + 1}"
    start, end = line_range
    if start < 0 or end < start:
        raise AnalysisError(f"invalid line range {line_range}")
    return f"{start + 1}:1-{max(end, start + 1) + 1}:1"


@dataclass(eq=False)
class _Document:
    uri: str
    version: int = 0  # 0: not open in the child
    generation: int = 0  # which child it was opened in
    found: int = 0  # diagnostics found by its last check
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RuffServerEngine(RuffEngine):
    """:meth:`check` through one long-lived ``ruff server`` child; the rest as :class:`RuffEngine`.

    Each config tree is a workspace folder of the child, so ruff resolves settings per file just as
    on disk. Documents are opened once and updated with full-text didChange; diagnostics are
    pulled. The child is started on first use and again after it dies or times out.

    Some checks go to the CLI instead:

    - the first check for a set of configs: ruff's CLI reports a broken config as an error, the
      server only logs it and falls back to defaults;
    - a document whose last check found ``cli_from_diagnostics`` or more diagnostics: the server
      costs about 55 us per diagnostic (the CLI about 10 us), so from roughly 250 diagnostics
      on, a fresh ``ruff check`` process is faster (see ``benchmarks/ruff_engines.py``). ``None``
      always uses the server.
    """

    def __init__(
        self,
        *,
        open_documents_max: int = 256,
        cli_from_diagnostics: int | None = 250,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        assert open_documents_max >= 1
        self.open_documents_max = open_documents_max
        self.cli_from_diagnostics = cli_from_diagnostics
        self._proc: asyncio.subprocess.Process | None = None
        self._client: LspStdioClient | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._start_lock = asyncio.Lock()
        self._folders: set[str] = set()  # tree keys registered in the current child
        self._docs: collections.OrderedDict[tuple[str, str], _Document] = collections.OrderedDict()
        self._validated: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation = 0  # counts children started
        self.restarts = 0  # children found dead and replaced

    async def check(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        *,
        layout: Iterable[str] | None = None,
    ) -> list[Diagnostic]:
        """As :meth:`RuffEngine.check`, answered by the ``ruff server`` child."""
        self._input(text, path)
        async with self._trees.use(configs, layout) as tree:
            doc = self._document(tree, path)
            limit = self.cli_from_diagnostics
            if tree.key not in self._validated or (limit is not None and doc.found >= limit):
                result = await super().check(text, path, configs)
                self._validated.add(tree.key)
            else:
                async with self._slots, doc.lock:
                    result = await self._check_with_server(tree, doc, text)
            doc.found = len(result)
            return result

    async def _check_with_server(
        self, tree: ConfigTree, doc: _Document, text: str
    ) -> list[Diagnostic]:
        client = await self._ensure_child()
        try:
            if tree.key not in self._folders:
                await client.notify(
                    "workspace/didChangeWorkspaceFolders",
                    {"event": {"added": [_folder(tree)], "removed": []}},
                )
                self._folders.add(tree.key)
            if doc.generation != self._generation:  # not open in this child (yet)
                doc.generation, doc.version = self._generation, 0
            doc.version += 1
            if doc.version == 1:
                item = {"uri": doc.uri, "languageId": "python", "version": 1, "text": text}
                await client.notify("textDocument/didOpen", {"textDocument": item})
            else:
                await client.notify(
                    "textDocument/didChange",
                    {
                        "textDocument": {"uri": doc.uri, "version": doc.version},
                        "contentChanges": [{"text": text}],
                    },
                )
            report = await client.request(
                "textDocument/diagnostic", {"textDocument": {"uri": doc.uri}}, self.timeout_s
            )
        except AnalysisError:
            async with self._start_lock:
                if self._client is client:  # timed out or failed: do not trust it any more
                    await self._stop_child(graceful=False)
            raise
        items = (report or {}).get("items") or []
        return _sorted(diagnostic_from_server(item) for item in items)

    def _document(self, tree: ConfigTree, path: str) -> _Document:
        """The document record for ``path`` in ``tree`` (LRU; the oldest idle ones are closed)."""
        key = (tree.key, path)
        doc = self._docs.pop(key, None)
        if doc is None:
            doc = _Document(uri=tree.file(path).as_uri())
        self._docs[key] = doc
        excess = len(self._docs) - self.open_documents_max
        for old_key, old in list(self._docs.items())[: max(excess, 0)]:
            if old.lock.locked():
                continue
            del self._docs[old_key]
            client = self._client
            if old.version and old.generation == self._generation and client and client.alive:
                self._spawn(
                    client.notify("textDocument/didClose", {"textDocument": {"uri": old.uri}})
                )
        return doc

    def _tree_evicted(self, tree: ConfigTree) -> None:
        self._validated.discard(tree.key)
        if tree.key in self._folders:
            self._folders.discard(tree.key)
            for key in [k for k in self._docs if k[0] == tree.key]:
                del self._docs[key]
            if self._client is not None and self._client.alive:
                self._spawn(
                    self._client.notify(
                        "workspace/didChangeWorkspaceFolders",
                        {"event": {"added": [], "removed": [_folder(tree)]}},
                    )
                )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Send a notification in the background (from synchronous code); errors are logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(_forget_task(self._tasks))

    async def _ensure_child(self) -> LspStdioClient:
        async with self._start_lock:
            if self._client is not None and self._client.alive:
                return self._client
            if self._client is not None:
                log.warning(
                    "ruff server died; restarting it (last output: %s)",
                    " | ".join(self._stderr_tail),
                )
                await self._stop_child(graceful=False)
                self.restarts += 1
            self._check_open()
            return await self._start_child()

    async def _start_child(self) -> LspStdioClient:
        cwd = self._trees.root / "server"
        cwd.mkdir(exist_ok=True)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.ruff_bin,
                "server",
                "--untrusted-workspace",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=ruff_env(self._trees.xdg_dir),
            )
        except OSError as exc:
            raise AnalysisError(f"cannot start ruff server ({self.ruff_bin}): {exc}") from exc
        self._proc = proc
        self._stderr_task = asyncio.get_running_loop().create_task(self._drain_stderr(proc))
        client = LspStdioClient(proc, name="ruff server", on_notification=self._on_notification)
        client.start()
        self._client = client
        self._generation += 1
        self._folders.clear()
        try:
            result = await client.request(
                "initialize",
                {
                    "processId": os.getpid(),
                    "clientInfo": {"name": "lsp-dbcode"},
                    "rootUri": None,
                    "workspaceFolders": None,
                    "capabilities": {
                        "general": {"positionEncodings": ["utf-32"]},
                        "workspace": {"workspaceFolders": True, "configuration": False},
                        "textDocument": {
                            "diagnostic": {"dynamicRegistration": False},
                            "synchronization": {"dynamicRegistration": False},
                        },
                    },
                    "initializationOptions": {
                        "settings": {"configurationPreference": "filesystemFirst"}
                    },
                },
                self.timeout_s,
            )
            encoding = ((result or {}).get("capabilities") or {}).get("positionEncoding")
            if encoding != "utf-32":
                raise AnalysisError(f"ruff server chose position encoding {encoding!r}, not utf-32")
            await client.notify("initialized", {})
        except BaseException:
            await self._stop_child(graceful=False)
            raise
        return client

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """Keep reading the child's log (a full pipe would block it); keep its last lines."""
        assert proc.stderr is not None
        pending = b""
        while chunk := await proc.stderr.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            pending = pending[-65536:]
            for line in lines:
                text = line.decode("utf-8", "replace").rstrip()
                self._stderr_tail.append(text)
                log.debug("ruff server: %s", text)

    def _on_notification(self, method: str, params: Any) -> None:
        if method in ("window/showMessage", "window/logMessage") and isinstance(params, dict):
            level = logging.WARNING if params.get("type") == 1 else logging.DEBUG
            log.log(level, "ruff server: %s", params.get("message"))

    async def _stop_child(self, *, graceful: bool = True) -> None:
        """End the child: LSP shutdown/exit if ``graceful`` (bounded), else kill it at once."""
        client, proc, stderr_task = self._client, self._proc, self._stderr_task
        self._client = self._proc = self._stderr_task = None
        self._folders.clear()
        if client is not None:
            if graceful and client.alive:
                with contextlib.suppress(AnalysisError):
                    await client.request("shutdown", None, min(self.timeout_s, 2.0))
                    await client.notify("exit", None)
            await client.close()
        if proc is not None:
            if graceful and proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await proc.wait()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if stderr_task is not None:
            stderr_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await stderr_task

    async def close(self) -> None:
        """Stop the child, then as :meth:`RuffEngine.close`."""
        self._closed = True
        async with self._start_lock:
            await self._stop_child()
        for task in list(self._tasks):
            task.cancel()
        await super().close()


def _forget_task(tasks: set[asyncio.Task[None]]) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("notification to ruff server failed: %s", task.exception())

    return done


def _folder(tree: ConfigTree) -> dict[str, str]:
    return {"uri": tree.dir.as_uri(), "name": tree.key}


def make_ruff_engine(*, engine: str | None = None, **options: Any) -> RuffEngine:
    """The ruff engine to use: ``"server"`` (default: fastest per check) or ``"subprocess"``.

    ``engine`` defaults to the ``DBCODE_RUFF_ENGINE`` environment variable, then ``"server"``.
    ``options`` go to the engine (``timeout_s``, ``file_bytes_max``, ``max_concurrent``, ...).
    """
    choice = engine or os.environ.get("DBCODE_RUFF_ENGINE") or "server"
    if choice == "server":
        return RuffServerEngine(**options)
    if choice == "subprocess":
        return RuffEngine(**options)
    raise ValueError(f"unknown ruff engine {choice!r} (expected 'server' or 'subprocess')")
