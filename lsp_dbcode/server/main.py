"""`dbcode serve`: transports. stdio (one session), or TCP / WebSocket (many sessions in one
process: one pygls server object per connection, all on one event loop, sharing one App)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import stat
import sys
import threading
from typing import Any

from pygls.exceptions import JsonRpcException
from pygls.io_ import StdinAsyncReader, StdoutWriter, run_async, run_websocket

from ..store import Store, StoreError, redact, resolve_dsn
from .app import App
from .features import create_server

log = logging.getLogger("lsp_dbcode.server")

POOL_SIZE_MAX = 20
EXPECTED_ERROR_CODES = frozenset({-32602, -32601, 404, 409})


def _setup_logging(args: argparse.Namespace) -> None:
    handler: logging.Handler
    if getattr(args, "log_file", None):
        handler = logging.FileHandler(args.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(getattr(logging, str(getattr(args, "log_level", "INFO")).upper(), logging.INFO))
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


def serve(args: argparse.Namespace) -> int:
    _setup_logging(args)
    try:
        dsn = resolve_dsn(args.database_url)
        return asyncio.run(_serve(dsn, args))
    except StoreError as exc:
        sys.stderr.write(f"dbcode: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


async def _serve(dsn: str, args: argparse.Namespace) -> int:
    store = Store(dsn, min_size=1, max_size=POOL_SIZE_MAX)
    await store.open()
    app = App(store)
    log.info("dbcode serve: database %s", redact(dsn))
    try:
        if args.tcp:
            host, port = _host_port(args.tcp)
            server = await asyncio.start_server(
                lambda r, w: run_stream_session(app, args.agent, r, w), host, port
            )
            addrs = ", ".join(str(s.getsockname()) for s in server.sockets)
            sys.stderr.write(f"dbcode: serving LSP over TCP on {addrs}\n")
            sys.stderr.flush()
            async with server:
                await server.serve_forever()
        elif args.ws:
            from websockets.asyncio.server import serve as ws_serve

            host, port = _host_port(args.ws)
            async with ws_serve(
                lambda ws: run_ws_session(app, args.agent, ws), host, port, max_size=64 * 2**20
            ) as wss:
                addrs = ", ".join(str(s.getsockname()) for s in wss.sockets)
                sys.stderr.write(f"dbcode: serving LSP over WebSocket on {addrs}\n")
                sys.stderr.flush()
                await wss.serve_forever()
        else:
            reader = await _stdin_reader()
            # SPEC precedence: --agent, else DBCODE_AGENT, else initializationOptions.agent.
            # Only for stdio: a TCP/WebSocket server serves many agents, each naming itself.
            app.forced_agent = getattr(args, "agent_flag", None) or os.environ.get("DBCODE_AGENT")
            await _run_session(app, args.agent, reader, StdoutWriter(sys.stdout.buffer))
    finally:
        await app.close()
        await store.close()
    return 0


async def _stdin_reader() -> Any:
    """stdin as an asyncio stream when it is a pipe or socket (no thread per read); a
    thread-backed reader otherwise (a file, /dev/null), which epoll cannot watch."""
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        reader = asyncio.StreamReader(limit=2**26)
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer
        )
        return reader
    return StdinAsyncReader(sys.stdin.buffer)


async def run_stream_session(
    app: App, agent: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        await _run_session(app, agent, reader, writer)
    finally:
        writer.close()


async def _run_session(app: App, agent: str, reader: Any, writer: Any) -> None:
    ls = create_server(app, agent)
    session = ls.session
    app.sessions.add(session)
    stop = threading.Event()
    ls.protocol.set_writer(writer)
    task = asyncio.current_task()

    def on_exit() -> None:
        stop.set()
        session.closed = True
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.call_soon(task.cancel)

    ls.on_exit = on_exit
    log.info("session opened (%d in this process)", len(app.sessions))
    try:
        await run_async(stop_event=stop, reader=reader, protocol=ls.protocol, logger=log)
    except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        await session.close()
        app.sessions.discard(session)
        log.info("session closed (%d left)", len(app.sessions))


async def run_ws_session(app: App, agent: str, websocket: Any) -> None:
    ls = create_server(app, agent)
    session = ls.session
    app.sessions.add(session)
    stop = threading.Event()
    task = asyncio.current_task()

    def on_exit() -> None:
        stop.set()
        session.closed = True
        if task is not None:
            asyncio.get_running_loop().call_soon(task.cancel)

    ls.on_exit = on_exit
    try:
        await run_websocket(websocket=websocket, stop_event=stop, protocol=ls.protocol, logger=log)
    except asyncio.CancelledError:
        pass
    finally:
        await session.close()
        app.sessions.discard(session)
