"""The CLI engine: one ``ruff`` subprocess per call (``ruff check --stdin-filename ...
--output-format json -``, ``ruff format ... -``); the server engine runs it for fixes,
formatting and workspace checks."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, Self

from ...text.positions import Encoding, LineIndex
from .._configtree import (
    ConfigTree,
    ConfigTrees,
    check_configs,
    check_relpath,
    is_python_path,
    ruff_env,
    write_tree,
)
from ..model import (
    AnalysisError,
    Diagnostic,
    Findings,
    Span,
    TextChange,
)
from .rules import (
    _sorted,
    diagnostic_from_cli,
)

log = logging.getLogger(__name__)

FILE_BYTES_MAX = 2 * 1024 * 1024
TREE_BYTES_MAX = 256 * 1024 * 1024
STDERR_LINES_KEPT = 20
PATHS_OK_MAX = 4096
TREES_OF_CONFIGS_MAX = 64

# How :meth:`RuffEngine.lint` reports: (findings, None) or (None, the error).
LintCallback = Callable[["Findings | None", "AnalysisError | None"], None]


def settle(
    future: asyncio.Future[Findings], found: Findings | None, error: AnalysisError | None
) -> None:
    """A :data:`LintCallback` that ends ``future`` (unless it is done: cancelled)."""
    if not future.done():
        if error is not None:
            future.set_exception(error)
        else:
            assert found is not None
            future.set_result(found)


_SNIPPET_LINE = re.compile(r"^\d*\s*\|")


def _find_ruff() -> str:
    import ruff  # the ruff package's locator, not this module

    return str(ruff.find_ruff_bin())


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
        self._lints: set[asyncio.Task[None]] = set()  # lint() runs in tasks of the engine's

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
        return (await self.findings(text, path, configs, layout=layout)).diagnostics

    def lint(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        done: LintCallback,
        *,
        layout: Iterable[str] | None = None,
        index: LineIndex | None = None,
        change: TextChange | None = None,
    ) -> asyncio.Task[None] | None:
        """THE engine's one primitive: lint ``text`` (the Python file ``path``) and call
        ``done(findings, None)`` or ``done(None, error)`` (an AnalysisError) when it ends, never
        before this returns; every other way into ruff's diagnostics (:meth:`findings`,
        :meth:`check`, the language server's Analyzer) goes through it.

        Returns None when the lint started at once without a task (:class:`RuffServerEngine`:
        the child has the change before this returns, and ``done`` runs in the callback that
        reads its answer), else the engine's task that runs it (cancel it to stop the run;
        ``done`` then gets an error). Raises AnalysisError, doing nothing, for text ruff must
        not get (too big, a bad path, a closed engine).

        ``layout`` (optional): the workspace's file paths; ruff's isort looks at which modules
        exist to tell first-party from third-party imports. Pass the same immutable collection
        (e.g. a frozenset) while it is unchanged: it is then not compared again. Hints for the
        server engine, which then sends ruff only what changed: ``index``, a LineIndex of
        ``text``; ``change``, how ``text`` was made from an earlier text of ``path`` (best: the
        one of the previous lint). This engine ignores them and runs one ``ruff check``.
        """
        data = self._input(text, path)
        return self._in_task(self._lint_cli(data, path, configs, layout), done)

    async def findings(
        self,
        text: str,
        path: str,
        configs: Mapping[str, str],
        *,
        layout: Iterable[str] | None = None,
        index: LineIndex | None = None,
        change: TextChange | None = None,
    ) -> Findings:
        """:meth:`lint`, awaited. Cancelling it cancels the run (a ``ruff`` process is
        killed)."""
        future: asyncio.Future[Findings] = asyncio.get_running_loop().create_future()
        task = self.lint(
            text, path, configs, functools.partial(settle, future), layout=layout,
            index=index, change=change,
        )  # fmt: skip
        try:
            return await future
        except asyncio.CancelledError:
            if task is not None:
                task.cancel()
                await asyncio.wait({task})
            raise

    def _in_task(
        self, run: Coroutine[Any, Any, Findings], done: LintCallback
    ) -> asyncio.Task[None]:
        """``run`` in a task of the engine's, its end given to ``done``."""

        async def lint() -> None:
            try:
                found = await run
            except AnalysisError as exc:
                done(None, exc)
            except asyncio.CancelledError:
                done(None, AnalysisError("the lint was cancelled"))
                raise
            except Exception as exc:
                log.exception("ruff lint failed")
                done(None, AnalysisError(f"ruff lint failed: {exc!r}"))
            else:
                done(found, None)

        task = asyncio.get_running_loop().create_task(lint())
        self._lints.add(task)
        task.add_done_callback(self._lints.discard)
        return task

    async def _lint_cli(
        self,
        data: bytes,
        path: str,
        configs: Mapping[str, str],
        layout: Iterable[str] | None = None,
    ) -> Findings:
        """One ``ruff check`` of ``data`` (the text, encoded and checked by :meth:`_input`)."""
        async with self._trees.use(configs, layout) as tree:
            out = await self._run(
                ["check", *self._check_flags(), *self._stdin_flags(tree, path)],
                data,
                tree,
                what=f"ruff check on {path}",
                ok_codes=(0, 1),
            )
        return Findings(_sorted(diagnostic_from_cli(entry) for entry in self._json(out, path)))

    def send_ahead(
        self,
        path: str,
        configs: Mapping[str, str],
        old: LineIndex,
        span: tuple[int, int, int, int],
        new_text: str,
        encoding: Encoding,
    ) -> bool:
        """A hint, not a lint: hand an editor's change to the engine before it is applied (see
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
        for task in list(self._lints):
            task.cancel()
        if self._lints:
            await asyncio.wait(self._lints)
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
