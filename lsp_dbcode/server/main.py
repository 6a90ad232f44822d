"""`dbcode serve`: transports. stdio (one session: ``--standalone``; by default a relay to a
shared ``--unix`` server, see relay.py), or unix socket / TCP / WebSocket (many sessions in one
process: one pygls server object per connection, all on one event loop, sharing one Shared:
the store, the watchers, the caches)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pygls.exceptions import JsonRpcException
from pygls.io_ import StdinAsyncReader, StdoutWriter

from ..store import Store, StoreError, redact, resolve_dsn
from .options import ServeOptions
from .relay import (
    DEFAULT_IDLE_EXIT_S,
    PREAMBLE_MAX,
    READY,
    RelayError,
    ServerPaths,
    answer,
    hold_server_lock,
    parse_preamble,
    preamble_brings_fds,
)
from .routes import create_server
from .shared import Shared
from .wire import (
    FramingError,
    open_read_pipe,
    open_socket,
    read_stream,
    read_websocket,
    start_tcp_server,
)

log = logging.getLogger("lsp_dbcode.server")

# The shared pool of a server process: its idle minimum (one connection taken from two leaves
# one idle, so the pool need not grow for every lone query) and its bound.
POOL_SIZE_MIN = 2
POOL_SIZE_MAX = 20
# The cyclic garbage collector: a collection of the oldest generation walks every tracked
# object and stops the event loop meanwhile: 110 to 220 ms measured in a server with 100
# sessions (docs/benchmarks.md). Objects that exist when the server is up (modules, types,
# converters: half of that heap) are frozen out of it, and the young generation is collected
# every GC_YOUNG_THRESHOLD allocations instead of 700, so that the many objects that live for
# one changeset (futures, timers, JSON) die young instead of being promoted, which is what
# brings on full collections.
GC_YOUNG_THRESHOLD = 20_000
PREAMBLE_TIMEOUT_S = 10.0
UNIX_BACKLOG = 1024
WS_MESSAGE_BYTES_MAX = 64 * 2**20
EXPECTED_ERROR_CODES = frozenset({-32602, -32601, 404, 409})


def _setup_logging(options: ServeOptions) -> None:
    handler: logging.Handler
    if options.log_file:
        handler = logging.FileHandler(options.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(getattr(logging, options.log_level.upper(), logging.INFO))
    # pygls logs every message body at INFO: far too costly on every keystroke.
    logging.getLogger("pygls").setLevel(logging.WARNING)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # ... and every error answered on purpose (a 404, a 409, bad params) as an ERROR traceback.
    logging.getLogger("pygls.protocol.json_rpc").addFilter(_expected_errors)


def _expected_errors(record: logging.LogRecord) -> bool:
    """Keep pygls' error records, except for errors we answer on purpose."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (isinstance(exc, JsonRpcException) and exc.code in EXPECTED_ERROR_CODES)


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise StoreError(f"invalid address {value!r}: use HOST:PORT")
    return host or "127.0.0.1", int(port)


_held_locks: list[int] = []  # file descriptors of locks held for the process' life


def serve(options: ServeOptions) -> int:
    _setup_logging(options)
    try:
        if options.unix:
            # Held until the process exits (never closed): relays see a server alive
            # (starting, serving or exiting) by this lock, never by a pid that may be stale.
            _held_locks.append(hold_server_lock(ServerPaths(Path(options.unix))))
        dsn = resolve_dsn(options.database_url)
        return asyncio.run(_serve(dsn, options))
    except (StoreError, RelayError) as exc:
        sys.stderr.write(f"dbcode: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


def _tune_gc() -> None:
    """See GC_YOUNG_THRESHOLD."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


async def _serve(dsn: str, options: ServeOptions) -> int:
    store = Store(
        dsn, min_size=POOL_SIZE_MIN, max_size=POOL_SIZE_MAX, application_name="dbcode serve"
    )
    await store.open()
    app = Shared(store)
    _tune_gc()
    log.info("dbcode serve: database %s", redact(dsn))
    try:
        if options.tcp:
            host, port = _host_port(options.tcp)
            server = await start_tcp_server(
                lambda r, w: run_stream_session(app, options.agent, r, w), host, port
            )
            addrs = ", ".join(str(s.getsockname()) for s in server.sockets)
            sys.stderr.write(f"dbcode: serving LSP over TCP on {addrs}\n")
            sys.stderr.flush()
            async with server:
                await server.serve_forever()
        elif options.ws:
            from websockets.asyncio.server import serve as ws_serve

            host, port = _host_port(options.ws)
            async with ws_serve(
                lambda ws: run_ws_session(app, options.agent, ws),
                host,
                port,
                max_size=WS_MESSAGE_BYTES_MAX,
            ) as wss:
                addrs = ", ".join(str(s.getsockname()) for s in wss.sockets)
                sys.stderr.write(f"dbcode: serving LSP over WebSocket on {addrs}\n")
                sys.stderr.flush()
                await wss.serve_forever()
        elif options.unix:
            await _serve_unix(app, options)
        else:
            reader = await _stdin_reader()
            # SPEC precedence: --agent, else DBCODE_AGENT, else initializationOptions.agent.
            # Only for stdio: a TCP/WebSocket server serves many agents, each naming itself
            # (a relay's sessions on a unix socket bring theirs in the preamble).
            forced = options.agent_flag or os.environ.get("DBCODE_AGENT")
            await _run_session(
                app, options.agent, reader, StdoutWriter(sys.stdout.buffer), forced_agent=forced
            )
    finally:
        await app.close()
        await store.close()
    return 0


async def _stdin_reader() -> Any:
    """stdin as an asyncio stream when it is a pipe or socket (no thread per read); a
    thread-backed reader otherwise (a file, /dev/null), which epoll cannot watch."""
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        reader, _ = await open_read_pipe(sys.stdin.buffer)
        return reader
    return StdinAsyncReader(sys.stdin.buffer)


async def run_stream_session(
    app: Shared,
    agent: str,
    reader: Any,
    writer: asyncio.StreamWriter,
    forced_agent: str | None = None,
) -> None:
    try:
        await _run_session(app, agent, reader, writer, forced_agent=forced_agent)
    finally:
        writer.close()


async def _serve_unix(app: Shared, options: ServeOptions) -> None:
    """Sessions of stdio relays on a unix socket (relay.py): each connection starts with the
    relay's preamble (its agents), answered with our pid, then LSP. Exits after ``--idle-exit``
    seconds without a connection (0: never), and on SIGTERM / SIGINT; removes its socket."""
    assert options.unix is not None
    path = Path(options.unix)
    idle = options.idle_exit_s
    idle_s = DEFAULT_IDLE_EXIT_S if idle is None else float(idle)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    active = 0
    idle_since = time.monotonic()
    tasks: set[asyncio.Task[Any]] = set()

    async def connection(conn: socket.socket) -> None:
        nonlocal active, idle_since
        active += 1
        fds: list[int] = []
        try:
            try:
                line, rest, fds = await asyncio.wait_for(_recv_preamble(conn), PREAMBLE_TIMEOUT_S)
                forced, default = parse_preamble(line)
                if rest:
                    raise ValueError("bytes after the relay preamble before the answer")
                if preamble_brings_fds(line) != (len(fds) == 2):
                    raise ValueError("the preamble and the file descriptors it came with differ")
            except (ValueError, TimeoutError, OSError) as e:
                log.warning("unix socket: connection refused: %s", e)
                return
            if stop.is_set():  # exiting: no answer, so that the relay retries elsewhere
                return
            await loop.sock_sendall(conn, answer(os.getpid()))
            if fds:
                fd_in, fd_out = fds
                fds = []
                await _run_handed_over(app, default, forced, conn, fd_in, fd_out)
            else:
                reader, writer = await open_socket(conn)
                await run_stream_session(app, default, reader, writer, forced_agent=forced)
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()
            active -= 1
            idle_since = time.monotonic()
            log.info("relay connection closed (%d left)", active)

    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # stale: we hold the server lock, nobody else serves it
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.fspath(path))
        listener.listen(UNIX_BACKLOG)
    except OSError as exc:
        listener.close()
        raise StoreError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    listener.setblocking(False)

    async def accept_loop() -> None:
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            task = loop.create_task(connection(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    acceptor = loop.create_task(accept_loop())
    os.chmod(path, 0o600)
    inode = os.lstat(path).st_ino

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s: exiting", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    with contextlib.suppress(OSError):  # a starting relay that died meanwhile: no reader
        sys.stderr.write(f"{READY} {path} (pid {os.getpid()})\n")
        sys.stderr.flush()
    if options.spawned and options.log_file:
        # Our stderr was the starting relay's pipe, for the line above or a start-up error;
        # from now on it is our log.
        fd = os.open(options.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    log.info("serving LSP over unix socket %s (idle exit after %g s)", path, idle_s)

    async def watch_idle() -> None:
        while True:
            await asyncio.sleep(min(1.0, idle_s / 4))
            if active == 0 and time.monotonic() - idle_since >= idle_s:
                log.info("no session for %g s: exiting", idle_s)
                stop.set()
                return

    watcher = loop.create_task(watch_idle()) if idle_s > 0 else None
    try:
        await stop.wait()
    finally:
        # The socket file goes first (if it is still ours): a relay arriving now starts a new
        # server instead of connecting to one that is closing; a connection that raced in
        # is closed before the answer to its preamble, and its relay retries.
        with contextlib.suppress(OSError):
            if os.lstat(path).st_ino == inode:
                os.unlink(path)
        acceptor.cancel()
        listener.close()
        if watcher is not None:
            watcher.cancel()
        # Signalled with sessions open: end them (their tasks, subscriptions) while the
        # store is still there.
        for t in list(tasks):
            t.cancel()
        if tasks:
            await asyncio.wait(list(tasks), timeout=10)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _recv_preamble(conn: socket.socket) -> tuple[bytes, bytes, list[int]]:
    """The relay's preamble line and the file descriptors that came with it (close-on-exec).
    Read with recvmsg: a plain read would drop the descriptors."""
    loop = asyncio.get_running_loop()
    buf, fds = b"", []
    try:
        while b"\n" not in buf:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(conn.fileno(), _wake, ready)
            try:
                await ready
            finally:
                loop.remove_reader(conn.fileno())
            try:
                data, got, _, _ = socket.recv_fds(conn, PREAMBLE_MAX, 2)
            except BlockingIOError:
                continue
            for fd in got:
                # They arrive inheritable (Python 3.11's recv_fds ignores its flags, so
                # MSG_CMSG_CLOEXEC cannot be asked for). A child holding an editor's pipe
                # would keep that editor from seeing its session end.
                os.set_inheritable(fd, False)
            fds += got
            if not data:
                raise ConnectionError("the relay closed before its preamble")
            buf += data
            if len(buf) > PREAMBLE_MAX or len(fds) > 2:
                raise ValueError("not a dbcode relay preamble (too long)")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    line, _, rest = buf.partition(b"\n")
    return line, rest, fds


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _run_handed_over(
    app: Shared, default: str, forced: str | None, conn: socket.socket, fd_in: int, fd_out: int
) -> None:
    """A session on the editor's own pipes, handed over by its relay: we read its stdin and
    write its stdout directly. The relay's socket stays open for the session's life: its
    closing (the relay killed) ends the session; our closing it tells the relay we are done."""
    loop = asyncio.get_running_loop()
    try:
        reader, rtransport = await open_read_pipe(os.fdopen(fd_in, "rb", buffering=0))
    except BaseException:
        os.close(fd_out)
        raise
    try:
        wtransport, wprotocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, os.fdopen(fd_out, "wb", buffering=0)
        )
    except BaseException:
        rtransport.close()
        raise
    writer = asyncio.StreamWriter(wtransport, wprotocol, None, loop)
    session = asyncio.current_task()

    def relay_readable() -> None:
        try:
            data = conn.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data and session is not None:  # the relay is gone: so is its editor
            loop.remove_reader(conn.fileno())
            session.cancel()

    loop.add_reader(conn.fileno(), relay_readable)
    try:
        await run_stream_session(app, default, reader, writer, forced_agent=forced)
    except asyncio.CancelledError:
        log.info("a relay went away: its session ended")
    finally:
        loop.remove_reader(conn.fileno())
        rtransport.close()
        wtransport.close()


async def _run_session(
    app: Shared, agent: str, reader: Any, writer: Any, forced_agent: str | None = None
) -> None:
    ls = create_server(app, agent, forced_agent)
    session = ls.session
    peer = writer.get_extra_info("peername") if hasattr(writer, "get_extra_info") else None
    if isinstance(peer, tuple) and session.peer == "?":  # for the audit and the limiter
        session.transport, session.peer = "tcp", f"{peer[0]}:{peer[1]}"
    app.sessions.add(session)
    stop = threading.Event()
    ls.protocol.set_writer(writer)
    task = asyncio.current_task()

    def on_exit() -> None:
        stop.set()
        session.client.closed = True
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.call_soon(task.cancel)

    session.on_exit = on_exit
    log.info("session opened (%d in this process)", len(app.sessions))
    try:
        await read_stream(reader, ls.protocol, stop)
    except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
        pass
    except FramingError as exc:
        log.error("closing a session: %s", exc)
    finally:
        ls.protocol.close_requests()
        await session.close()
        app.sessions.discard(session)
        log.info("session closed (%d left)", len(app.sessions))


async def run_ws_session(app: Shared, agent: str, websocket: Any) -> None:
    ls = create_server(app, agent)
    session = ls.session
    remote = getattr(websocket, "remote_address", None)
    if isinstance(remote, tuple) and session.peer == "?":
        session.transport, session.peer = "ws", f"{remote[0]}:{remote[1]}"
    app.sessions.add(session)
    stop = threading.Event()
    task = asyncio.current_task()

    def on_exit() -> None:
        stop.set()
        session.client.closed = True
        if task is not None:
            asyncio.get_running_loop().call_soon(task.cancel)

    session.on_exit = on_exit
    try:
        await read_websocket(websocket, ls.protocol, stop)
    except asyncio.CancelledError:
        pass
    finally:
        ls.protocol.close_requests()
        await session.close()
        app.sessions.discard(session)
