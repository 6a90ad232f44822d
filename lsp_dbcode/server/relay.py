"""`dbcode serve` over stdio: a thin relay to one shared server process.

Every stdio session of a user on one database (same code version, same settings) attaches to one
``dbcode serve --unix SOCKET`` process, which serves each connection as a session of its own, as
``--tcp`` does: one connection pool, one LISTEN connection, one ``ruff server`` child and one fetch
per changeset for all of them. The relay copies bytes stdin -> socket and socket -> stdout until
either side closes. If no server listens, the relay starts one (detached: new session, stdin from
/dev/null, output to its log), under an exclusive ``flock`` so that relays starting together start
one server.

Files, in ``$XDG_RUNTIME_DIR/dbcode`` (else ``/tmp/dbcode-<uid>``; 0700, owned by the user), per
server key K (a hash: see :func:`server_key`; never the DSN itself):

* ``K.sock``: the server's socket;
* ``K.lock``: held by a relay while it checks for / starts the server;
* ``K.pid``: the server's pid, ``flock``-ed by the server for as long as it runs (so "is a server
  alive?" never trusts a stale pid);
* ``K.log``: the server's log.

The wire: the relay sends one preamble line, ``{"dbcode-relay": 1, "agent": FORCED | null,
"defaultAgent": DEFAULT}`` (and ``"token"``: the session's token, ``--token`` or
``DBCODE_TOKEN``, when there is one: only ever over this socket of the user's 0700 directory,
never in the server's command line, environment, key, files or log); the server answers one
line, ``{"dbcode-relay": 1, "pid": PID}``. A connection that closes before that answer (a
server exiting after being idle) is retried: nothing of the session has been sent yet. Then,
when the relay's stdin and stdout are pipes (as editors start language servers), the preamble
carried them (``"fds": true``, SCM_RIGHTS): the server reads and writes the editor's pipes
itself — no relay hop on any message — and the relay only waits for the socket to close (the
session's end; or, the other way round, the relay killed: the server ends the session).
Otherwise (a terminal, a file, a socket) the relay copies the LSP bytes both ways over the
socket.

This module imports only the standard library (and platformdirs for the embedded server's home):
a relay must start fast and stay small. The server side imports its helpers too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .. import __version__
from .options import ServeOptions

MAGIC = "dbcode-relay"
PROTOCOL = 1
READY = "dbcode: serving LSP over unix socket"
DEFAULT_IDLE_EXIT_S = 60.0
START_TIMEOUT_S = 60.0  # a first start of the embedded PostgreSQL included
ATTACH_TIMEOUT_S = 30.0  # connect + the server's answer to the preamble
EOF_GRACE_S = 30.0  # stdin closed: how long the server may take to end the session
PREAMBLE_MAX = 4096
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes with the terminating NUL
LOG_ROTATE_BYTES = 8 * 2**20
AGENT_MAX = 200
TOKEN_BYTES_MAX = 1024  # a token is about 60; a longer value is refused before it is sent
STANDALONE_ENV = "DBCODE_SERVE_STANDALONE"
TOKEN_ENV = "DBCODE_TOKEN"
# Environment variables that do not change what a server does (the agent and the token come in
# the preamble: one shared server serves every agent of the user).
KEY_EXCLUDED_ENV = frozenset(
    {
        "DBCODE_AGENT",
        "DBCODE_DATABASE_URL",
        "DBCODE_HOME",
        STANDALONE_ENV,
        TOKEN_ENV,
        "DBCODE_SERVER",  # the CLI's and mcp's remote server: a client's setting
        "DBCODE_TLS_CA",  # ... and its CA file
    }
)
# Never handed to the shared server's environment (one process for many agents).
SERVER_EXCLUDED_ENV = frozenset({"DBCODE_AGENT", STANDALONE_ENV, TOKEN_ENV})
PACKAGE_DIR = Path(__file__).resolve().parent.parent
CODE_SUFFIXES = (".py", ".scm", ".toml")


class RelayError(Exception):
    """An error to show as one line (already starting with ``dbcode:`` or not)."""


# -- what to attach to ----------------------------------------------------------------------


def standalone_requested(options: ServeOptions) -> bool:
    """True when ``dbcode serve`` must run the session in-process (``--standalone``, or
    ``DBCODE_SERVE_STANDALONE=1``) or is a network/unix server itself."""
    if options.tcp or options.ws or options.unix or options.standalone:
        return True
    return os.environ.get(STANDALONE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def embedded_home(env: Mapping[str, str]) -> Path:
    """The embedded server's home, as store/dsn.py ``dbcode_home`` resolves it (without
    importing psycopg)."""
    home = env.get("DBCODE_HOME")
    if home:
        return Path(home).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("dbcode"))


def code_fingerprint(package_dir: Path = PACKAGE_DIR) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every source file of the package: an editable install changes
    code without changing the version, and a relay must never attach to older code."""
    found: list[tuple[str, int, int]] = []
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(CODE_SUFFIXES):
                path = os.path.join(root, name)
                with contextlib.suppress(OSError):
                    st = os.stat(path)
                    found.append((os.path.relpath(path, package_dir), st.st_size, st.st_mtime_ns))
    return found


def _hash(data: bytes) -> str:
    try:  # the builtin module: hashlib would load OpenSSL (3 MB more per relay)
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - every CPython build has it
        from hashlib import blake2b
    return blake2b(data, digest_size=12).hexdigest()


def server_key(dsn: str | None, env: Mapping[str, str], package_dir: Path = PACKAGE_DIR) -> str:
    """Which shared server a relay attaches to: a hash of the database (the DSN as given; the
    embedded server's home when there is none), the environment that changes the server's
    behaviour (``DBCODE_*`` but the agent, libpq's ``PG*``) and the code version (the package
    version, its location, the interpreter, size + mtime of every source file)."""
    database: Any = dsn if dsn else {"embedded": str(embedded_home(env))}
    settings = sorted(
        (k, v)
        for k, v in env.items()
        if (k.startswith("DBCODE_") and k not in KEY_EXCLUDED_ENV) or k.startswith("PG")
    )
    material = {
        "database": database,
        "env": settings,
        "version": __version__,
        "package": str(package_dir),
        "python": sys.executable,
        "code": code_fingerprint(package_dir),
    }
    return _hash(json.dumps(material, sort_keys=True).encode())


def runtime_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_RUNTIME_DIR/dbcode``, else ``/tmp/dbcode-<uid>``: created 0700 and checked to be
    a directory of ours that nobody else can enter."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isabs(xdg) and os.path.isdir(xdg):
        path = Path(xdg) / "dbcode"
    else:
        path = Path(f"/tmp/dbcode-{os.getuid()}")  # checked below: ours, 0700
    try:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        st = os.lstat(path)
    except OSError as exc:
        raise RelayError(f"cannot create the socket directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RelayError(f"refusing the socket directory {path}: not a directory")
    if st.st_uid != os.getuid():
        raise RelayError(f"refusing the socket directory {path}: owned by uid {st.st_uid}")
    if st.st_mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            raise RelayError(f"cannot make {path} private: {exc.strerror}") from None
    return path


class ServerPaths(NamedTuple):
    socket: Path

    @property
    def lock(self) -> Path:
        return self.socket.with_suffix(".lock")

    @property
    def pidfile(self) -> Path:
        return self.socket.with_suffix(".pid")

    @property
    def log(self) -> Path:
        return self.socket.with_suffix(".log")


def paths_for(key: str, env: Mapping[str, str] | None = None) -> ServerPaths:
    sock = runtime_dir(env) / f"{key}.sock"
    if len(os.fsencode(sock)) > SOCKET_PATH_MAX:
        raise RelayError(
            f"the socket path {sock} is too long for a unix socket: set XDG_RUNTIME_DIR to a "
            "shorter directory, or use 'dbcode serve --standalone'"
        )
    return ServerPaths(sock)


# -- locks ----------------------------------------------------------------------------------


def _open_lockfile(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        raise RelayError(f"cannot open {path}: {exc.strerror}") from None


def _flock_until(fd: int, deadline: float) -> bool:
    """flock(LOCK_EX) on ``fd``, polling until ``deadline``; False if it stayed taken."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


@contextlib.contextmanager
def _exclusive(path: Path, deadline: float) -> Iterator[None]:
    """flock(LOCK_EX) on path, waiting at most until deadline."""
    fd = _open_lockfile(path)
    try:
        if not _flock_until(fd, deadline):
            raise RelayError(
                f"another dbcode serve kept {path} locked for too long (starting a "
                "shared server?); try again, or use 'dbcode serve --standalone'"
            )
        yield
    finally:
        os.close(fd)


def hold_server_lock(paths: ServerPaths, wait_s: float = 2.0) -> int:
    """The server's lifetime lock on ``K.pid`` (with its pid written in): returns the fd, to be
    kept open as long as the process runs."""
    fd = _open_lockfile(paths.pidfile)
    if not _flock_until(fd, time.monotonic() + wait_s):
        os.close(fd)
        raise RelayError(
            f"a shared server for {paths.socket} is already running "
            f"(pid {_read_pid(paths.pidfile)})"
        )
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def server_pid(paths: ServerPaths) -> int | None:
    """The pid of the server holding ``K.pid``'s lock (alive: starting, serving or exiting),
    else None."""
    try:
        fd = os.open(paths.pidfile, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RelayError(f"cannot open {paths.pidfile}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(paths.pidfile) or -1
    else:
        return None
    finally:
        os.close(fd)


def live_servers(directory: Path) -> list[int]:
    """Pids of the shared servers alive in a socket directory (for tests and tools)."""
    pids = []
    for pidfile in sorted(directory.glob("*.pid")):
        pid = server_pid(ServerPaths(pidfile.with_suffix(".sock")))
        if pid is not None and pid > 0:
            pids.append(pid)
    return pids


# -- the preamble -----------------------------------------------------------------------------


def preamble(
    forced_agent: str | None,
    default_agent: str,
    *,
    fds: bool = False,
    token: str | None = None,
) -> bytes:
    msg: dict[str, Any] = {MAGIC: PROTOCOL, "agent": forced_agent, "defaultAgent": default_agent}
    if fds:
        msg["fds"] = True  # stdin and stdout come with this line (SCM_RIGHTS)
    if token:
        check_token(token)
        msg["token"] = token
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def check_token(token: str) -> None:
    """RelayError (naming no part of it) for a value that cannot be a token."""
    if len(token.encode("utf-8", "surrogatepass")) > TOKEN_BYTES_MAX:
        raise RelayError(
            f"the token is too long to be a dbcode token (over {TOKEN_BYTES_MAX} bytes)"
        )
    if not token.isprintable():
        raise RelayError("the token is not a dbcode token (control characters)")


def pipes_can_be_handed_over() -> bool:
    """True when our stdin and stdout are pipes (how editors start language servers): the
    server can then read and write them itself, and the relay steps out of the way."""
    try:
        return stat.S_ISFIFO(os.fstat(0).st_mode) and stat.S_ISFIFO(os.fstat(1).st_mode)
    except OSError:
        return False


def _agent_ok(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= AGENT_MAX


def parse_preamble(line: bytes) -> tuple[str | None, str]:
    """(forced agent or None, default agent) of a relay's first line; ValueError if it is not
    one. (Whether it brings file descriptors: :func:`preamble_brings_fds`.)"""
    try:
        msg = json.loads(line)
    except ValueError:
        raise ValueError("not a dbcode relay preamble (expected one JSON line)") from None
    if not isinstance(msg, dict) or msg.get(MAGIC) != PROTOCOL:
        raise ValueError(f"not a dbcode relay preamble (protocol {PROTOCOL})")
    forced, default = msg.get("agent"), msg.get("defaultAgent")
    if forced is not None and not _agent_ok(forced):
        raise ValueError("invalid 'agent' in the relay preamble")
    if not _agent_ok(default):
        raise ValueError("invalid 'defaultAgent' in the relay preamble")
    return forced, str(default)


def preamble_token(line: bytes) -> str | None:
    """The token a relay's preamble brings (None: none, or not a string of a token's size)."""
    try:
        token = json.loads(line).get("token")
    except (ValueError, AttributeError):
        return None
    if not isinstance(token, str) or not 0 < len(token) <= TOKEN_BYTES_MAX:
        return None
    return token


def preamble_brings_fds(line: bytes) -> bool:
    try:
        return json.loads(line).get("fds") is True
    except (ValueError, AttributeError):
        return False


def answer(pid: int) -> bytes:
    return json.dumps({MAGIC: PROTOCOL, "pid": pid}, separators=(",", ":")).encode() + b"\n"


# -- attaching --------------------------------------------------------------------------------


class Attached(NamedTuple):
    sock: socket.socket
    pid: int
    leftover: bytes  # LSP bytes that came with the server's answer


class Relay:
    def __init__(
        self,
        paths: ServerPaths,
        hello: bytes,
        server_argv: list[str],
        server_env: dict[str, str],
        cwd: str,
        *,
        hand_over: bool = False,
    ) -> None:
        self.paths = paths
        self.hello = hello
        self.hand_over = hand_over  # pass our stdin/stdout to the server (hello says so)
        self.server_argv = server_argv
        self.server_env = server_env
        self.cwd = cwd
        self.started: int | None = None  # pid of a server this relay started

    def attach(self, timeout: float = START_TIMEOUT_S) -> Attached:
        deadline = time.monotonic() + timeout
        while True:
            got = self._try_attach(deadline)
            if got is not None:
                return got
            with _exclusive(self.paths.lock, deadline + 10):
                got = self._try_attach(deadline)
                if got is not None:
                    return got
                alive = server_pid(self.paths)
                if alive is None:
                    with contextlib.suppress(FileNotFoundError):
                        if stat.S_ISSOCK(os.lstat(self.paths.socket).st_mode):
                            os.unlink(self.paths.socket)  # stale: nobody listens
                    self._start(deadline)
                    got = self._try_attach(deadline)
                    if got is not None:
                        return got
            # A server is starting (its relay died) or exiting (idle): wait for it.
            if time.monotonic() > deadline:
                who = f"a shared server (pid {alive})" if alive else "the shared server"
                raise RelayError(
                    f"{who} holds {self.paths.socket} but does not answer; see "
                    f"{self.paths.log}, or use 'dbcode serve --standalone'"
                )
            time.sleep(0.05)

    def _try_attach(self, deadline: float) -> Attached | None:
        """Connect and exchange the preamble; None if nobody listens or the server closed the
        connection before answering (it is exiting)."""
        limit = min(deadline, time.monotonic() + ATTACH_TIMEOUT_S)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            while True:
                sock.settimeout(max(0.05, limit - time.monotonic()))
                try:
                    sock.connect(os.fspath(self.paths.socket))
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    sock.close()
                    return None
                except BlockingIOError:  # the listen backlog is full: a busy server
                    if time.monotonic() > limit:
                        raise TimeoutError from None
                    time.sleep(0.02)
            if self.hand_over:
                socket.send_fds(sock, [self.hello], [0, 1])
            else:
                sock.sendall(self.hello)
            buf = b""
            while b"\n" not in buf:
                chunk = sock.recv(PREAMBLE_MAX)
                if not chunk:
                    sock.close()
                    return None
                buf += chunk
                if len(buf) > PREAMBLE_MAX:
                    raise RelayError(f"{self.paths.socket}: not a dbcode server")
            line, _, rest = buf.partition(b"\n")
            try:
                msg = json.loads(line)
                pid = int(msg["pid"]) if msg.get(MAGIC) == PROTOCOL else 0
            except (ValueError, KeyError, TypeError, AttributeError):
                pid = 0
            if pid <= 0:
                raise RelayError(f"{self.paths.socket}: not a dbcode server (or another version)")
            sock.settimeout(None)
            return Attached(sock, pid, rest)
        except (ConnectionResetError, BrokenPipeError):
            sock.close()
            return None
        except TimeoutError:
            sock.close()
            raise RelayError(
                f"the shared server at {self.paths.socket} did not answer within "
                f"{ATTACH_TIMEOUT_S:.0f} s; see {self.paths.log}"
            ) from None
        except OSError as exc:
            sock.close()
            raise RelayError(
                f"cannot connect to {self.paths.socket}: {exc.strerror or exc}"
            ) from None
        except BaseException:
            sock.close()
            raise

    def _start(self, deadline: float) -> None:
        """Start the server, detached, and wait until it listens or fails. Its stderr is a
        pipe to us until it is ready (it then points it at its log): a failure to start comes
        back as its one-line message."""
        log = self.paths.log
        with contextlib.suppress(OSError):
            if log.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(log, log.with_suffix(".log.old"))
        try:
            logfd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise RelayError(f"cannot open the server log {log}: {exc.strerror}") from None
        rfd, wfd = os.pipe()
        try:
            child = os.fork()
            if child == 0:  # pragma: no cover - the forked child
                self._exec_detached(logfd, wfd)
            os.close(wfd)
            wfd = -1
            os.waitpid(child, 0)
            self._wait_ready(rfd, deadline)
        finally:
            os.close(logfd)
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)

    def _exec_detached(self, logfd: int, wfd: int) -> None:  # pragma: no cover - child
        """In the forked child: a new session, fork again (so the server is nobody's child and
        outlives us), stdin /dev/null, stdout the log, stderr the pipe; exec."""
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.chdir(self.cwd)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(logfd, 1)
            os.dup2(wfd, 2)
            # Nothing else of our parent's (an editor's pipes, say) may live on in the server.
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            os.execve(self.server_argv[0], self.server_argv, self.server_env)
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                os.write(2, f"dbcode: cannot start the shared language server: {exc}\n".encode())
        finally:
            os._exit(127)

    def _wait_ready(self, rfd: int, deadline: float) -> None:
        lines: list[str] = []
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RelayError(
                    f"the shared language server did not start within {START_TIMEOUT_S:.0f} s; "
                    f"see {self.paths.log}, or use 'dbcode serve --standalone'"
                )
            ready, _, _ = select.select([rfd], [], [], left)
            if not ready:
                continue
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            for raw in done:
                line = raw.decode("utf-8", "replace").rstrip()
                if line.startswith(READY):
                    pid = line.rpartition("pid ")[2].rstrip(")")
                    self.started = int(pid) if pid.isdigit() else None
                    return
                if line:
                    lines.append(line)
        if buf.strip():
            lines.append(buf.decode("utf-8", "replace").strip())
        if any(line.startswith("dbcode: a shared server for") for line in lines):
            return  # another relay's server won the race: attach to it
        mine = [line for line in lines if line.startswith("dbcode: ")]
        if mine:
            raise RelayError(mine[-1])
        last = lines[-1] if lines else "no message"
        raise RelayError(
            f"dbcode: the shared language server exited while starting ({last}); "
            f"see {self.paths.log}"
        )


def pump(attached: Attached) -> int:
    """Copy stdin -> socket (a thread) and socket -> stdout until the server closes the
    session: after ``exit``, or when our stdin closed (we half-close the socket, the server
    ends the session and closes)."""
    sock = attached.sock
    done = threading.Event()

    def upstream() -> None:
        try:
            while data := os.read(0, 65536):
                sock.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        if not done.wait(EOF_GRACE_S):  # the server should have closed by now: stop waiting
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    threading.Thread(target=upstream, name="stdin", daemon=True).start()
    try:
        data = attached.leftover
        while True:
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]
            data = sock.recv(65536)
            if not data:
                break
    except OSError:  # stdout closed (the editor went away) or the socket broke
        pass
    finally:
        done.set()
        sock.close()
    return 0


def wait_handed_over(attached: Attached) -> int:
    """Our stdin and stdout are the server's now: wait until it ends the session (it closes
    the socket), or until we are killed (the server sees the socket close and ends it)."""
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)  # our copies: nothing of ours may read the editor's input any more
    os.dup2(null, 1)
    os.close(null)
    try:
        while attached.sock.recv(4096):
            pass
    except OSError:
        pass
    finally:
        attached.sock.close()
    return 0


# -- the command ------------------------------------------------------------------------------


def _log(options: ServeOptions, message: str) -> None:
    path = options.log_file
    if not path:
        return
    with contextlib.suppress(OSError), open(path, "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} relay[{os.getpid()}]: {message}\n")


def relay_for(options: ServeOptions, env: Mapping[str, str] | None = None) -> Relay:
    """The relay for ``dbcode serve`` with these options and this environment."""
    env = dict(os.environ if env is None else env)
    dsn = options.database_url or env.get("DBCODE_DATABASE_URL") or None
    paths = paths_for(server_key(dsn, env), env)
    forced = options.agent_flag or env.get("DBCODE_AGENT") or None
    server_env = {k: v for k, v in env.items() if k not in SERVER_EXCLUDED_ENV}
    if dsn:
        server_env["DBCODE_DATABASE_URL"] = dsn  # never on a command line
    else:
        server_env.pop("DBCODE_DATABASE_URL", None)
        server_env["DBCODE_HOME"] = str(embedded_home(env))
    idle = options.idle_exit_s
    idle_s = DEFAULT_IDLE_EXIT_S if idle is None else float(idle)
    argv = [
        sys.executable, "-m", "lsp_dbcode", "serve",
        "--unix", os.fspath(paths.socket),
        "--idle-exit", f"{idle_s:g}",
        "--log-file", os.fspath(paths.log),
        "--log-level", options.log_level,
        "--spawned",
    ]  # fmt: skip
    # The package's parent as cwd: `-m lsp_dbcode` then runs this very package (the one the
    # key was computed for), whatever the caller's cwd holds.
    hand_over = pipes_can_be_handed_over()
    token = (options.token or env.get(TOKEN_ENV) or "").strip() or None
    return Relay(
        paths,
        preamble(forced, options.agent, fds=hand_over, token=token),
        argv,
        server_env,
        os.fspath(PACKAGE_DIR.parent),
        hand_over=hand_over,
    )


def run(options: ServeOptions) -> int:
    """``dbcode serve`` over stdio, relayed to the shared server."""
    try:
        relay = relay_for(options)
        attached = relay.attach()
    except RelayError as exc:
        msg = str(exc)
        sys.stderr.write(msg if msg.startswith("dbcode: ") else f"dbcode: {msg}")
        sys.stderr.write("\n")
        sys.stderr.flush()
        _log(options, msg)
        return 1
    except KeyboardInterrupt:
        return 130
    started = " (started it)" if relay.started == attached.pid else ""
    _log(
        options,
        f"attached to shared server pid {attached.pid}{started}: socket {relay.paths.socket}, "
        f"log {relay.paths.log}",
    )
    try:
        return wait_handed_over(attached) if relay.hand_over else pump(attached)
    except KeyboardInterrupt:
        return 130


def kill_servers(directory: Path, timeout: float = 10.0) -> list[int]:
    """SIGTERM every shared server alive in a socket directory and wait (bounded) until their
    locks are free; SIGKILL the ones still there. Returns their pids. For tests and tools."""
    pids = live_servers(directory)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while live_servers(directory) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in live_servers(directory):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids
