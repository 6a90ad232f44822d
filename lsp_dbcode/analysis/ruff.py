"""Ruff behind a small async interface: text + path + configs -> diagnostics, fixes, formatting.

Two engines, one API (:class:`RuffEngine`):

- :class:`RuffEngine` runs one ``ruff`` subprocess per call (``ruff check --stdin-filename ...
  --output-format json -``, ``ruff format ... -``).
- :class:`RuffServerEngine` answers :meth:`~RuffEngine.check` from one long-lived ``ruff server``
  child driven over LSP stdio (didOpen/didChange; the child publishes the diagnostics of each
  version), which is several times faster per check (see ``benchmarks/ruff_engines.py``);
  fixes, formatting and :meth:`~RuffEngine.check_tree` stay on subprocesses. It sends the child
  only what changed since the text it sent last (one ranged change), and keeps the child's
  diagnostics as LSP JSON (:class:`~.model.Findings`) so that a language server can relay them
  without converting them. For a language server's latency it can also start a check without
  waiting (:meth:`~RuffServerEngine.lint_soon`: a callback, no task) and send an editor's change
  before the server has applied it (:meth:`~RuffServerEngine.send_ahead`).

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
import functools
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Self

from ..text.positions import Encoding, LineIndex, PositionError
from ._configtree import (
    ConfigTree,
    ConfigTrees,
    check_configs,
    check_relpath,
    is_python_path,
    ruff_env,
    write_tree,
)
from ._lsp_stdio import ChildProcess, LspStdioClient
from .model import (
    AnalysisError,
    Diagnostic,
    Findings,
    Fix,
    Pos,
    Severity,
    Span,
    Tag,
    TextChange,
    TextEditCP,
)

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
PATHS_OK_MAX = 4096
TREES_OF_CONFIGS_MAX = 64

# How :meth:`RuffServerEngine.lint_soon` reports: (findings, None) or (None, the error).
LintCallback = Callable[["Findings | None", "AnalysisError | None"], None]


def _find_ruff() -> str:
    import ruff  # the ruff package's locator, not this module

    return str(ruff.find_ruff_bin())


def diagnostic_severity(code: str | None) -> Severity:
    """The severity of a ruff finding by its rule code (as ruff's own language server)."""
    return "error" if code is None or code in ERROR_CODES else "warning"


def diagnostic_tags(code: str | None) -> tuple[Tag, ...]:
    """The tags of a ruff finding by its rule code (code that does nothing; deprecated)."""
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
        severity=diagnostic_severity(code),
        message=entry.get("message") or "",
        source="ruff",
        code=code,
        code_url=entry.get("url") or None,
        tags=diagnostic_tags(code),
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
        severity=diagnostic_severity(code),
        message=message,
        source="ruff",
        code=code,
        code_url=description.get("href") or None,
        tags=diagnostic_tags(code),
        fix=fix,
        noqa_line=int(noqa_edit["range"]["start"]["line"]) if noqa_edit else None,
    )


def _server_findings(items: list[dict[str, Any]]) -> Findings:
    """``ruff server``'s pulled diagnostics (code point positions) as Findings: sorted as
    :func:`_sorted`, kept as the server's own items (their messages cut as
    :func:`diagnostic_from_server` cuts them) for the language server to relay, the Diagnostic
    objects built only if someone asks for them."""
    entries: list[tuple[tuple[int, int, int, int, str, str], dict[str, Any]]] = []
    for item in items:
        code = str(item.get("code") or SYNTAX_CODE)
        message = str(item.get("message") or "")
        cut = message.find("\n\nhelp: ")
        if cut >= 0:
            message = message[:cut]
            item = {**item, "message": message}
        start, end = item["range"]["start"], item["range"]["end"]
        key = (start["line"], start["character"], end["line"], end["character"], code, message)
        entries.append((key, item))
    entries.sort(key=itemgetter(0))
    sorted_items = [item for _, item in entries]
    return Findings(
        make=lambda: [diagnostic_from_server(item) for item in sorted_items],
        server_items=sorted_items,
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
        self._paths_ok: set[str] = set()  # paths that passed the checks of _check_path

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
        return (await self.lint(text, path, configs, layout=layout)).diagnostics

    async def lint(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        *,
        layout: Iterable[str] | None = None,
        index: LineIndex | None = None,
        change: TextChange | None = None,
    ) -> Findings:
        """As :meth:`check`, as :class:`~.model.Findings`.

        Hints (optional) for the server engine, which then sends ruff only what changed:
        ``index``, a LineIndex of ``text``; ``change``, how ``text`` was made from an earlier
        text of ``path`` (best: the one of the previous check). Other engines ignore them.
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
        return Findings(_sorted(diagnostic_from_cli(entry) for entry in self._json(out, path)))

    def lint_soon(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        done: LintCallback,
        *,
        index: LineIndex | None = None,
        change: TextChange | None = None,
    ) -> bool:
        """Start a lint without a task of the caller's, when it can start at once (see
        :meth:`RuffServerEngine.lint_soon`); this engine never can: False, nothing done."""
        return False

    def send_ahead(
        self,
        path: str,
        configs: Mapping[str, str],
        old: LineIndex,
        span: tuple[int, int, int, int],
        new_text: str,
        encoding: Encoding,
    ) -> bool:
        """Hand an editor's change to the engine before it is applied (see
        :meth:`RuffServerEngine.send_ahead`); this engine has nothing to hand it to: False."""
        return False

    def adopt(self, text: str, path: str, configs: Mapping[str, str], index: LineIndex) -> None:
        """``text`` of ``path`` has known findings (see :meth:`RuffServerEngine.adopt`)."""

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

    def _check_path(self, path: str) -> None:
        self._check_open()
        if path in self._paths_ok:
            return
        check_relpath(path)
        if not is_python_path(path):
            raise AnalysisError(f"{path} is not a Python file (.py or .pyi)")
        if len(self._paths_ok) >= PATHS_OK_MAX:
            self._paths_ok.clear()
        self._paths_ok.add(path)

    def _check_size(self, text: str, path: str) -> None:
        """:meth:`_input`'s checks without encoding ``text`` unless its size is in doubt (UTF-8
        takes 1 to 4 bytes per code point)."""
        self._check_path(path)
        if len(text) * 4 > self.file_bytes_max:
            self._input(text, path)

    def _input(self, text: str, path: str) -> bytes:
        self._check_path(path)
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
    # The text the child has (the object last sent), None when unknown: then the next change
    # sends the whole text. ``sent_index``: its LineIndex, when the caller gave one.
    sent: str | None = None
    sent_index: LineIndex | None = None
    # Whether the child publishes diagnostics for this document after each change (None: not
    # known yet; False: it does not, e.g. a file the config excludes: then it is pulled).
    pushes: bool | None = None
    exchange: _Exchange | None = None  # the check in flight, if any


class _Exchange:
    """One check in flight with the child: the change that gives the child ``text`` has been
    sent as ``version``; it ends with the child's ``publishDiagnostics`` for that version (or
    the answer to a pull), the timeout, or the child's death: then ``done`` and the
    ``waiters`` are called with the findings or the error.

    One sent by :meth:`RuffServerEngine.send_ahead` has no ``text`` (nor ``done``) until the
    check of the new text adopts it; ``ahead`` is then the change that was sent (the old text,
    start, end, new text)."""

    __slots__ = (
        "ahead",
        "client",
        "doc",
        "done",
        "encoding",
        "finished",
        "index",
        "probe",
        "request",
        "text",
        "timer",
        "tree",
        "version",
        "waiters",
    )

    def __init__(
        self,
        client: LspStdioClient,
        tree: ConfigTree,
        doc: _Document,
        text: str | None,
        index: LineIndex | None,
        encoding: Encoding,
        done: LintCallback | None,
    ) -> None:
        self.ahead: tuple[str, int, int, str] | None = None
        self.client = client
        self.tree = tree
        self.doc = doc
        self.text = text
        self.index = index
        self.encoding = encoding
        self.done = done
        self.version = doc.version
        self.finished = False
        self.probe = False  # a pull after a change: does the child push for this document?
        self.request: int | None = None  # the pull's request id
        self.timer: asyncio.TimerHandle | None = None
        self.waiters: list[LintCallback] = []


_LONE_SURROGATE = "a lone surrogate (U+D800..U+DFFF), which ruff cannot read"


def _check_encodable(text: str) -> None:
    """Refuse text that cannot go to ``ruff server`` as UTF-8 JSON (it would exit)."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise AnalysisError(f"the text contains {_LONE_SURROGATE}") from None


def _change_holds(old: str, new: str, start: int, end: int, new_text: str) -> bool:
    """``new == old[:start] + new_text + old[end:]``, with one copy of ``old`` at most."""
    return (
        0 <= start <= end <= len(old)
        and len(new) == len(old) - (end - start) + len(new_text)
        and new.startswith(new_text, start)
        and new.startswith(old[:start])
        and new.endswith(old[end:])
    )


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix (binary search over slices: O(n) copying, in C)."""
    lo, hi = 0, min(len(a), len(b))  # a[:lo] == b[:lo]; the answer is in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a.startswith(b[lo:mid], lo):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the longest common suffix, at most ``limit``."""
    la, lb = len(a), len(b)
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a.startswith(b[lb - mid : lb - lo], la - mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def text_diff(old: str, new: str) -> tuple[int, int, str]:
    """One change ``(start, end, new_text)`` on ``old`` that gives ``new``: the span between
    their common prefix and suffix (``(n, n, "")`` when they are equal)."""
    prefix = _common_prefix(old, new)
    suffix = _common_suffix(old, new, min(len(old), len(new)) - prefix)
    return prefix, len(old) - suffix, new[prefix : len(new) - suffix]


def _codepoint_ranges(
    items: list[dict[str, Any]], index: LineIndex, encoding: Encoding
) -> list[dict[str, Any]]:
    """The child's diagnostics with their positions (``encoding`` units) in code points."""

    def pos(p: dict[str, Any]) -> dict[str, int]:
        line = int(p["line"])
        if line >= index.line_count:
            return p
        offset = index.offset(line, int(p["character"]), encoding, strict=False)
        return {"line": line, "character": offset - index.line_start(line)}

    def rng(r: dict[str, Any]) -> dict[str, Any]:
        return {"start": pos(r["start"]), "end": pos(r["end"])}

    out = []
    for item in items:
        item = {**item, "range": rng(item["range"])}
        data = item.get("data")
        if isinstance(data, dict):
            data = dict(data)
            if data.get("edits"):
                data["edits"] = [{**e, "range": rng(e["range"])} for e in data["edits"]]
            if data.get("noqa_edit"):
                data["noqa_edit"] = {**data["noqa_edit"], "range": rng(data["noqa_edit"]["range"])}
            item["data"] = data
        out.append(item)
    return out


class RuffServerEngine(RuffEngine):
    """:meth:`check` through one long-lived ``ruff server`` child; the rest as :class:`RuffEngine`.

    Each config tree is a workspace folder of the child, so ruff resolves settings per file just as
    on disk. Documents are opened once; each check sends one didChange with one ranged change
    from the text the child has (from the caller's ``change`` hint, checked, or else the span
    between the common prefix and suffix), in one write. The child is started on first use and
    again after it dies or times out.

    The child pushes: it is started as for a client without pull diagnostics, so that it lints
    each change at once on its main thread and publishes the result with the change's version
    (one message less each way than a pull, and no hop to a worker thread in ruff). An exchange
    ends with that publish, matched by document and version: a publish for another version is
    never taken. The first exchange of a document (its didOpen) also pulls, and the answer
    tells whether the child pushes for it at all: ruff publishes nothing for a file the config
    excludes, and such a document is pulled from then on, as is every document of a ruff that
    would stop pushing. Every exchange is bounded by ``timeout_s``: then the child is killed
    (and restarted by the next check), with a warning in the log.

    :meth:`lint_soon` starts an exchange without waiting and calls back when it ends (from the
    event loop's read callback of the child's stdout): no task, no loop turn between a caller's
    edit and the write to the child, nor between the child's answer and the caller's callback.

    Positions to and from the child are in the encoding it chooses among ``position_encodings``
    (``ruff server`` takes the first: utf-32, i.e. code points, needs no conversion).

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
        position_encodings: tuple[str, ...] = ("utf-32", "utf-16"),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        assert open_documents_max >= 1
        assert position_encodings and all(e in set(Encoding) for e in position_encodings)
        self.open_documents_max = open_documents_max
        self.cli_from_diagnostics = cli_from_diagnostics
        self.position_encodings = position_encodings
        self.child_encoding = Encoding.UTF32  # what the current child chose
        self._proc: ChildProcess | None = None
        self._client: LspStdioClient | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._start_lock = asyncio.Lock()
        self._folders: set[str] = set()  # tree keys registered in the current child
        self._docs: collections.OrderedDict[tuple[str, str], _Document] = collections.OrderedDict()
        self._validated: set[str] = set()
        # Notifications for the current child that go with the next exchange (see _document).
        self._queued: list[tuple[str, Any]] = []
        self._generation = 0  # counts children started
        self.restarts = 0  # children found dead and replaced
        # id(configs) -> (configs, its live tree): configs objects seen lately (see lint)
        self._tree_of: dict[int, tuple[Mapping[str, str], ConfigTree]] = {}
        # uri -> the exchange waiting for the child's publishDiagnostics of that document
        self._awaiting: dict[str, _Exchange] = {}
        self.sent_full = 0  # didOpen / whole-text didChange sent (for tests and benchmarks)
        self.sent_ranged = 0  # ranged didChange sent
        self.pushed = 0  # exchanges ended by the child's publish (the rest: by a pull)

    async def lint(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        *,
        layout: Iterable[str] | None = None,
        index: LineIndex | None = None,
        change: TextChange | None = None,
    ) -> Findings:
        """As :meth:`RuffEngine.lint`, answered by the ``ruff server`` child."""
        assert index is None or index.text is text, "index must be the LineIndex of text"
        self._check_size(text, path)
        known = self._tree_of.get(id(configs))
        if known is not None and known[0] is configs and layout is None:
            # The tree of these very configs is live (eviction forgets it): skip ConfigTrees.use
            # (which hashes the configs), but hold the tree the same way while in use.
            tree = known[1]
            tree.users += 1
            try:
                return await self._lint_in(tree, text, path, configs, index, change)
            finally:
                tree.users -= 1
        async with self._trees.use(configs, layout) as tree:
            if len(self._tree_of) >= TREES_OF_CONFIGS_MAX:
                self._tree_of.clear()
            self._tree_of[id(configs)] = (configs, tree)
            return await self._lint_in(tree, text, path, configs, index, change)

    def lint_soon(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        done: LintCallback,
        *,
        index: LineIndex | None = None,
        change: TextChange | None = None,
    ) -> bool:
        """Start :meth:`lint` of ``text`` without waiting, if it can start at once: the child
        runs, the tree of ``configs`` is live and was validated (:meth:`lint` has checked with
        these configs before), the document has no check in flight and is not one for the CLI.
        Then the messages to the child are written before this returns True, and
        ``done(findings, None)`` or ``done(None, error)`` (an AnalysisError) is called later,
        never before this returns. Otherwise it returns False and nothing is done. Raises
        AnalysisError, sending nothing, for text ruff must not get (too big, lone surrogate)."""
        assert index is None or index.text is text, "index must be the LineIndex of text"
        client = self._client
        known = self._tree_of.get(id(configs))
        if client is None or not client.alive or known is None or known[0] is not configs:
            return False
        tree = known[1]
        if tree.key not in self._validated:
            return False
        self._check_size(text, path)
        doc = self._document(tree, path)
        if self._adopt(doc, text, index, done):
            return True
        limit = self.cli_from_diagnostics
        if (
            doc.exchange is not None
            or doc.lock.locked()
            or (limit is not None and doc.found >= limit)
        ):
            return False
        self._start(client, tree, doc, text, index, change, done)
        return True

    def send_ahead(
        self,
        path: str,
        configs: Mapping[str, str],
        old: LineIndex,
        span: tuple[int, int, int, int],
        new_text: str,
        encoding: Encoding,
    ) -> bool:
        """Send the child an editor's change now, before the caller has applied it: the text
        ``old`` of ``path`` with the LSP range ``span`` (in ``encoding``) replaced by
        ``new_text``. The child lints while the caller applies the change; the
        :meth:`lint_soon` or :meth:`lint` of the resulting text then takes that result (having
        checked that the text is what was sent). True if sent; False, having sent nothing,
        unless it can go at once: as for :meth:`lint_soon`, and the child has exactly
        ``old.text`` and pushes for the document. Never raises."""
        client = self._client
        known = self._tree_of.get(id(configs))
        if client is None or not client.alive or known is None or known[0] is not configs:
            return False
        tree = known[1]
        doc = self._docs.get((tree.key, path))
        limit = self.cli_from_diagnostics
        if (
            doc is None
            or doc.sent is not old.text
            or not doc.pushes
            or doc.exchange is not None
            or doc.lock.locked()
            or doc.generation != self._generation
            or tree.key not in self._validated
            or (limit is not None and doc.found >= limit)
            or self._queued
        ):
            return False
        text = old.text
        try:
            start = old.offset(span[0], span[1], encoding)
            end = old.offset(span[2], span[3], encoding)
            _check_encodable(new_text)
        except (PositionError, AnalysisError):
            return False  # the caller finds out for itself
        if end < start or (start == end and not new_text):
            return False
        if (0 < start < len(text) and text[start - 1] == "\r" and text[start] == "\n") or (
            0 < end < len(text) and text[end - 1] == "\r" and text[end] == "\n"
        ):
            return False  # it splits a line break (_content_change widens such a change)
        child = self.child_encoding
        if child == encoding or text.isascii():  # the same positions (isascii: O(1))
            s_line, s_char, e_line, e_char = span
        else:
            s_line, s_char = old.position(start, child)
            e_line, e_char = old.position(end, child)
        change = {
            "range": {
                "start": {"line": s_line, "character": s_char},
                "end": {"line": e_line, "character": e_char},
            },
            "text": new_text,
        }
        params = {
            "textDocument": {"uri": doc.uri, "version": doc.version + 1},
            "contentChanges": [change],
        }
        client.send_now({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": params})
        doc.version += 1
        doc.sent = doc.sent_index = None  # unknown until the new text adopts the exchange
        self.sent_ranged += 1
        ex = _Exchange(client, tree, doc, None, None, child, None)
        ex.ahead = (text, start, end, new_text)
        doc.exchange = ex
        tree.users += 1
        self._awaiting[doc.uri] = ex
        ex.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._timed_out, ex)
        return True

    def adopt(self, text: str, path: str, configs: Mapping[str, str], index: LineIndex) -> None:
        """``text`` is the text of ``path`` now, and its findings are known to the caller: if
        :meth:`send_ahead` sent the change that makes it, the child's copy of the document is
        known again (the child's answer is not needed)."""
        known = self._tree_of.get(id(configs))
        if known is not None and known[0] is configs:
            doc = self._docs.get((known[1].key, path))
            if doc is not None:
                self._adopt(doc, text, index, None)

    def _adopt(
        self, doc: _Document, text: str, index: LineIndex | None, done: LintCallback | None
    ) -> bool:
        """Give the exchange sent ahead for ``doc`` its text, if the change made ``text``."""
        ex = doc.exchange
        if ex is None or ex.ahead is None or ex.text is not None or ex.finished:
            return False
        old, start, end, new_text = ex.ahead
        ex.ahead = None
        if not _change_holds(old, text, start, end, new_text):
            log.info("the change sent ahead did not make the text of %s", doc.uri)
            return False  # its answer is for another text: dropped
        ex.text, ex.index, ex.done = text, index, done
        doc.sent, doc.sent_index = text, index
        return True

    async def _lint_in(
        self,
        tree: ConfigTree,
        text: str,
        path: str,
        configs: Mapping[str, str],
        index: LineIndex | None,
        change: TextChange | None,
    ) -> Findings:
        doc = self._document(tree, path)
        limit = self.cli_from_diagnostics
        if tree.key not in self._validated or (limit is not None and doc.found >= limit):
            result = await super().lint(text, path, configs)
            self._validated.add(tree.key)
            doc.found = len(result)
            return result
        async with self._slots, doc.lock:
            return await self._check_with_server(tree, doc, text, index, change)

    async def _check_with_server(
        self,
        tree: ConfigTree,
        doc: _Document,
        text: str,
        index: LineIndex | None,
        change: TextChange | None,
    ) -> Findings:
        loop = asyncio.get_running_loop()
        if self._adopt(doc, text, index, None):  # sent ahead: its answer is this check's
            assert doc.exchange is not None
            adopted: asyncio.Future[Findings] = loop.create_future()
            doc.exchange.waiters.append(functools.partial(_settle, adopted))
            return await adopted
        while (running := doc.exchange) is not None:  # one started by lint_soon: let it end
            ended: asyncio.Future[None] = loop.create_future()
            running.waiters.append(functools.partial(_wake, ended))
            await ended
        client = self._client
        if client is None or not client.alive:
            client = await self._ensure_child()
        future: asyncio.Future[Findings] = loop.create_future()

        self._start(client, tree, doc, text, index, change, functools.partial(_settle, future))
        await client.drain()
        # Cancelled: the exchange goes on (bounded by its timer); the child's copy of the
        # document stays known, and the next check of the document waits for it to end.
        return await future

    def _start(
        self,
        client: LspStdioClient,
        tree: ConfigTree,
        doc: _Document,
        text: str,
        index: LineIndex | None,
        change: TextChange | None,
        done: LintCallback,
    ) -> None:
        """Send what gives the child ``text`` and ask for its diagnostics; ``done`` is called
        when they are in (never from here). Raises AnalysisError, having sent nothing, for a
        text the child cannot read or a dead child."""
        assert doc.exchange is None
        if doc.generation != self._generation:  # not open in this child (yet)
            doc.generation, doc.version, doc.sent, doc.sent_index = self._generation, 0, None, None
            doc.pushes = None
        sync = self._sync(doc, text, change)  # refuses a text the child cannot read
        if sync is None and doc.pushes:  # the child has it: an empty change still gets a push
            params = {"textDocument": {"uri": doc.uri, "version": doc.version + 1}}
            sync = "textDocument/didChange", {**params, "contentChanges": []}
        # Closes and folder removals go first, in order with what follows (a document or folder
        # closed, then opened again, must end up open).
        notes, self._queued = self._queued, []
        if tree.key not in self._folders:
            notes.append(
                (
                    "workspace/didChangeWorkspaceFolders",
                    {"event": {"added": [_folder(tree)], "removed": []}},
                )
            )
            self._folders.add(tree.key)
        if sync is not None:
            notes.append(sync)
            doc.version += 1
        ex = _Exchange(client, tree, doc, text, index, self.child_encoding, done)
        try:
            if doc.pushes:
                client.send_now(*({"jsonrpc": "2.0", "method": m, "params": p} for m, p in notes))
            else:  # pull; after a change with pushes unknown, a push may come first (probe)
                ex.probe = doc.pushes is None and sync is not None
                ex.request = client.send_request(
                    "textDocument/diagnostic",
                    {"textDocument": {"uri": doc.uri}},
                    lambda result, error: self._pulled(ex, result, error),
                    notifications=notes,
                )
        except AnalysisError:
            doc.sent = doc.sent_index = None
            raise
        # From here the child is taken to have ``text``; if the exchange fails, it is unknown.
        doc.sent, doc.sent_index = text, index
        doc.exchange = ex
        tree.users += 1
        if doc.pushes or ex.probe:
            self._awaiting[doc.uri] = ex
        ex.timer = asyncio.get_running_loop().call_later(self.timeout_s, self._timed_out, ex)

    def _on_publish(self, params: Any) -> None:
        """The child's diagnostics of one document: the end of the exchange waiting for
        exactly that version of it, if any (others are stale or unasked for: dropped)."""
        if not isinstance(params, dict):
            return
        ex = self._awaiting.get(params.get("uri"))  # type: ignore[arg-type]
        if ex is None or params.get("version") != ex.version:
            return
        ex.doc.pushes = True
        if ex.request is not None:  # the probe's pull is not needed any more (nor cancelled)
            ex.client.forget(ex.request, cancel=False)
        self.pushed += 1
        self._finish(ex, params.get("diagnostics") or [], None)

    def _pulled(self, ex: _Exchange, result: Any, error: AnalysisError | None) -> None:
        if ex.finished:
            return
        if error is not None:
            self._finish(ex, None, error)
            self._kill_child(ex.client)  # an error answer: do not trust the child any more
            return
        if ex.probe and ex.doc.pushes is None:
            ex.doc.pushes = False  # no publish came before the answer: it pulls from now on
            log.info("ruff server does not publish diagnostics for %s: pulling them", ex.doc.uri)
        self._finish(ex, (result or {}).get("items") or [], None)

    def _timed_out(self, ex: _Exchange) -> None:
        if ex.finished:
            return
        reason = f"ruff server did not answer within {self.timeout_s:g} s"
        log.warning("%s (checking %s); restarting it", reason, ex.doc.uri)
        self._finish(ex, None, AnalysisError(reason))
        self._kill_child(ex.client)

    def _on_dead(self, client: LspStdioClient, reason: str) -> None:
        """The child of ``client`` is gone: its pending exchanges fail."""
        for ex in [e for e in self._awaiting.values() if e.client is client]:
            self._finish(ex, None, AnalysisError(reason))

    def _kill_child(self, client: LspStdioClient) -> None:
        """Stop trusting ``client``'s child and kill it; the next check starts another."""
        client._fail(f"{client.name} was stopped")
        if client is self._client and self._proc is not None:
            self._proc.kill()

    def _finish(
        self, ex: _Exchange, items: list[dict[str, Any]] | None, error: AnalysisError | None
    ) -> None:
        if ex.finished:
            return
        ex.finished = True
        doc = ex.doc
        if doc.exchange is ex:
            doc.exchange = None
        if self._awaiting.get(doc.uri) is ex:
            del self._awaiting[doc.uri]
        callbacks = [c for c in (ex.done, *ex.waiters) if c is not None]
        if ex.text is None and error is None:  # sent ahead, never adopted: nobody asks
            error = AnalysisError("a change sent ahead was not adopted")
        found: Findings | None = None
        if error is None and callbacks:
            assert items is not None and ex.text is not None
            try:
                if items and ex.encoding != Encoding.UTF32 and not ex.text.isascii():
                    index = ex.index or LineIndex(ex.text)
                    items = _codepoint_ranges(items, index, ex.encoding)
                found = _server_findings(items)
            except (KeyError, TypeError, ValueError, PositionError) as exc:
                error = AnalysisError(f"ruff server sent unreadable diagnostics: {exc}")
            else:
                doc.found = len(found)
        if error is not None and ex.text is not None and doc.sent is ex.text:
            doc.sent = doc.sent_index = None
        for callback in callbacks:  # first: the caller publishes from here
            try:
                callback(found, error)
            except Exception:
                log.exception("a ruff result callback failed")
        if ex.timer is not None:
            ex.timer.cancel()
        ex.tree.users -= 1

    def _sync(
        self, doc: _Document, text: str, change: TextChange | None
    ) -> tuple[str, dict[str, Any]] | None:
        """The notification that gives the child ``text`` (None: it has it already)."""
        if doc.version == 0:
            _check_encodable(text)
            self.sent_full += 1
            item = {"uri": doc.uri, "languageId": "python", "version": 1, "text": text}
            return "textDocument/didOpen", {"textDocument": item}
        content = self._content_change(doc, text, change)
        if content is None:
            return None
        params = {
            "textDocument": {"uri": doc.uri, "version": doc.version + 1},
            "contentChanges": [content],
        }
        return "textDocument/didChange", params

    def _content_change(
        self, doc: _Document, text: str, change: TextChange | None
    ) -> dict[str, Any] | None:
        """One ``contentChanges`` entry turning the child's copy of the document into ``text``
        (None: no change)."""
        old = doc.sent
        if old is text:
            return None
        if old is None:
            _check_encodable(text)
            self.sent_full += 1
            return {"text": text}
        if change is not None and change.old.text is old:
            start, end, new_text = change.start, change.end, change.new_text
            old_index = change.old
            if not _change_holds(old, text, start, end, new_text):
                log.warning("ignoring a change hint that does not hold for %s", doc.uri)
                start, end, new_text = text_diff(old, text)
        else:
            start, end, new_text = text_diff(old, text)
            old_index = doc.sent_index if doc.sent_index is not None else LineIndex(old)
        # No position names the point between "\r" and "\n": take the break into the change.
        if 0 < start < len(old) and old[start - 1] == "\r" and old[start] == "\n":
            start -= 1
            new_text = "\r" + new_text
        if 0 < end < len(old) and old[end - 1] == "\r" and old[end] == "\n":
            end += 1
            new_text += "\n"
        if start == end and not new_text:
            return None
        _check_encodable(new_text)
        if start == 0 and end == len(old):
            self.sent_full += 1
            return {"text": text}
        encoding = self.child_encoding
        try:
            s_line, s_char = old_index.position(start, encoding, strict=True)
            e_line, e_char = old_index.position(end, encoding, strict=True)
        except PositionError as exc:  # cannot happen; the whole text is always right
            log.warning("sending the whole text of %s: %s", doc.uri, exc)
            self.sent_full += 1
            return {"text": text}
        self.sent_ranged += 1
        return {
            "range": {
                "start": {"line": s_line, "character": s_char},
                "end": {"line": e_line, "character": e_char},
            },
            "text": new_text,
        }

    def _document(self, tree: ConfigTree, path: str) -> _Document:
        """The document record for ``path`` in ``tree`` (LRU; the oldest idle ones are closed)."""
        key = (tree.key, path)
        doc = self._docs.pop(key, None)
        if doc is None:
            doc = _Document(uri=tree.file(path).as_uri())
        self._docs[key] = doc
        excess = len(self._docs) - self.open_documents_max
        if excess <= 0:
            return doc
        for old_key, old in list(self._docs.items())[:excess]:
            if old.lock.locked():
                continue
            del self._docs[old_key]
            if old.version and old.generation == self._generation:
                self._queued.append(("textDocument/didClose", {"textDocument": {"uri": old.uri}}))
        return doc

    def _tree_evicted(self, tree: ConfigTree) -> None:
        self._validated.discard(tree.key)
        for configs_id in [k for k, (_, t) in self._tree_of.items() if t is tree]:
            del self._tree_of[configs_id]
        if tree.key in self._folders:
            self._folders.discard(tree.key)
            for key in [k for k in self._docs if k[0] == tree.key]:
                del self._docs[key]
            self._queued.append(
                (
                    "workspace/didChangeWorkspaceFolders",
                    {"event": {"added": [], "removed": [_folder(tree)]}},
                )
            )

    async def _ensure_child(self) -> LspStdioClient:
        """The live child (started, or restarted if it died)."""
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
        client: LspStdioClient | None = None

        def on_dead(reason: str) -> None:
            if client is not None:
                self._on_dead(client, reason)

        try:
            client = await LspStdioClient.spawn(
                self.ruff_bin,
                "server",
                "--untrusted-workspace",
                cwd=cwd,
                env=ruff_env(self._trees.xdg_dir),
                name="ruff server",
                on_notification=self._on_notification,
                on_stderr=self._on_stderr,
                on_dead=on_dead,
            )
        except OSError as exc:
            raise AnalysisError(f"cannot start ruff server ({self.ruff_bin}): {exc}") from exc
        self._proc = client.process
        self._client = client
        self._generation += 1
        self._folders.clear()
        self._queued.clear()  # about the old child's documents and folders
        try:
            result = await client.request(
                "initialize",
                {
                    "processId": os.getpid(),
                    "clientInfo": {"name": "lsp-dbcode"},
                    "rootUri": None,
                    "workspaceFolders": None,
                    "capabilities": {
                        "general": {"positionEncodings": list(self.position_encodings)},
                        "workspace": {"workspaceFolders": True, "configuration": False},
                        # No "diagnostic" (pull) capability: the child publishes after each
                        # change (see the class docstring); it still answers pulls.
                        "textDocument": {
                            "publishDiagnostics": {"versionSupport": True},
                            "synchronization": {"dynamicRegistration": False},
                        },
                    },
                    "initializationOptions": {
                        "settings": {"configurationPreference": "filesystemFirst"}
                    },
                },
                self.timeout_s,
            )
            # No answer means LSP's default, utf-16.
            chosen = ((result or {}).get("capabilities") or {}).get("positionEncoding", "utf-16")
            if chosen not in set(Encoding):
                raise AnalysisError(f"ruff server chose an unknown position encoding {chosen!r}")
            self.child_encoding = Encoding(chosen)
            if self.child_encoding not in self.position_encodings:
                log.info("ruff server chose position encoding %s", chosen)
            await client.notify("initialized", {})
        except BaseException:
            await self._stop_child(graceful=False)
            raise
        return client

    def _on_stderr(self, line: str) -> None:
        """A line of the child's log (it is read as it comes: a full pipe would block it)."""
        self._stderr_tail.append(line)
        log.debug("ruff server: %s", line)

    def _on_notification(self, method: str, params: Any) -> None:
        if method == "textDocument/publishDiagnostics":
            self._on_publish(params)
        elif method in ("window/showMessage", "window/logMessage") and isinstance(params, dict):
            level = logging.WARNING if params.get("type") == 1 else logging.DEBUG
            log.log(level, "ruff server: %s", params.get("message"))

    async def _stop_child(self, *, graceful: bool = True) -> None:
        """End the child: LSP shutdown/exit if ``graceful`` (bounded), else kill it at once."""
        client, proc = self._client, self._proc
        self._client = self._proc = None
        self._folders.clear()
        if client is not None:
            if graceful and client.alive:
                with contextlib.suppress(AnalysisError):
                    await client.request("shutdown", None, min(self.timeout_s, 2.0))
                    await client.notify("exit", None)
            await client.close()  # fails what is still pending
        if proc is not None:
            if graceful and proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            proc.close()

    async def close(self) -> None:
        """Stop the child, then as :meth:`RuffEngine.close`."""
        self._closed = True
        async with self._start_lock:
            await self._stop_child()
        await super().close()


def _wake(future: asyncio.Future[None], *_result: object) -> None:
    if not future.done():
        future.set_result(None)


def _settle(
    future: asyncio.Future[Findings], found: Findings | None, error: AnalysisError | None
) -> None:
    if not future.done():
        if error is not None:
            future.set_exception(error)
        else:
            assert found is not None
            future.set_result(found)


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
