"""``dbcode serve --tcp/--ws --tls-cert --tls-key``: real server processes, a self-signed
certificate made in the test, real clients (lsp_dbcode.client, raw sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lsp_dbcode.client import ConnectionLost, connect
from lsp_dbcode.server import relay
from lsp_dbcode.server.wire import WS_HEADER_BYTES_MAX
from lsp_dbcode.store import Store
from lsp_dbcode.tls import TLS_HANDSHAKE_TIMEOUT_S
from tests.conftest import Cli
from tests.server.netserver import SERVE, Cert, NetServer, make_cert, start_server

STUCK_CLIENTS = 20  # connections that never finish their handshake, held open meanwhile
BAD_HANDSHAKES = 30


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return make_cert(tmp_path_factory.mktemp("tls"))


def _start_tls(database_url: str, kind: str, cert: Cert, log: Path) -> NetServer:
    return start_server(
        database_url, f"--{kind}", log, "--tls-cert", str(cert.cert), "--tls-key", str(cert.key)
    )


@pytest.fixture(params=["tcp", "ws"])
def tls_server(
    request: pytest.FixtureRequest, database_url: str, cert: Cert, tmp_path: Path
) -> Iterator[tuple[str, NetServer]]:
    server = _start_tls(database_url, request.param, cert, tmp_path / "server.log")
    yield request.param, server
    server.stop()


def _url(kind: str, port: int, tls: bool = True) -> dict[str, str]:
    if kind == "tcp":
        return {"tcp": f"{'tls' if tls else 'tcp'}://127.0.0.1:{port}"}
    return {"ws": f"{'wss' if tls else 'ws'}://127.0.0.1:{port}"}


async def _read_over_tls(kind: str, server: NetServer, cert: Cert, workspace: str) -> str:
    async with await connect(
        workspace, agent="tls-agent", tls_ca=str(cert.cert), **_url(kind, server.port)
    ) as db:
        return (await db.read("hello.py")).text


async def test_lsp_over_tls_initialize_read_and_write(
    tls_server: tuple[str, NetServer], cert: Cert, store: Store, workspace: str
) -> None:
    kind, server = tls_server
    await store.write(workspace, "hello.py", "print('hi')\n", agent="seed")
    async with await connect(
        workspace, agent="tls-agent", tls_ca=str(cert.cert), **_url(kind, server.port)
    ) as db:
        assert (await db.read("hello.py")).text == "print('hi')\n"
        done = await db.write("hello.py", "print('bye')\n", base=1)
        assert done.revision == 2 and (await db.log())[0].agent == "tls-agent"
    assert (await store.read(workspace, "hello.py")).text == "print('bye')\n"
    expected = "tls-tcp" if kind == "tcp" else "wss"
    assert f"{expected} session opened from 127.0.0.1:" in server.log_text()


async def test_plain_or_untrusting_clients_fail_cleanly_and_the_server_survives(
    tls_server: tuple[str, NetServer],
    cert: Cert,
    store: Store,
    workspace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kind, server = tls_server
    await store.write(workspace, "hello.py", "x = 1\n", agent="seed")
    with pytest.raises(ConnectionLost):  # plain LSP / plain WebSocket against TLS
        await connect(workspace, agent="plain", timeout_s=30, **_url(kind, server.port, False))
    monkeypatch.delenv("DBCODE_TLS_CA", raising=False)
    with pytest.raises(ConnectionLost) as err:  # the self-signed certificate is not trusted
        await connect(workspace, agent="noca", timeout_s=30, **_url(kind, server.port))
    assert "certificate verify failed" in str(err.value)
    monkeypatch.setenv("DBCODE_TLS_CA", str(cert.cert))  # the CA from the environment
    async with await connect(workspace, agent="env-ca", **_url(kind, server.port)) as db:
        assert (await db.read("hello.py")).text == "x = 1\n"
    assert server.alive()


def _raw(port: int, data: bytes | None) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    if data:
        with contextlib.suppress(OSError):
            s.sendall(data)
    return s


def _tls_raw(port: int, request: bytes) -> bytes:
    """A TLS connection that sends ``request`` and reads until the server closes."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            with contextlib.suppress(OSError):
                t.sendall(request)
            with contextlib.suppress(OSError):
                while chunk := t.recv(65536):
                    out += chunk
    return out


async def test_stuck_and_bad_handshakes_leave_the_server_answering_others(
    tls_server: tuple[str, NetServer], cert: Cert, store: Store, workspace: str
) -> None:
    kind, server = tls_server
    await store.write(workspace, "hello.py", "ok\n", agent="seed")
    # Clients that connect and never start (or never finish) the TLS handshake, held open.
    stuck = [_raw(server.port, None) for _ in range(STUCK_CLIENTS)]
    stuck += [_raw(server.port, b"\x16\x03\x01\x02\x00") for _ in range(STUCK_CLIENTS)]
    try:
        # A flood of garbage instead of a handshake.
        for _ in range(BAD_HANDSHAKES):
            _raw(server.port, os.urandom(512)).close()
        if kind == "ws":
            huge = b"Bearer " + b"t" * 2**20
            for header in (b"Authorization: " + huge, b"Authorization: Bearer \x00\x01"):
                got = await asyncio.to_thread(
                    _tls_raw,
                    server.port,
                    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n" + header + b"\r\n\r\n",
                )
                assert not got.startswith(b"HTTP/1.1 101")
            many = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 1000) for i in range(20))
            got = await asyncio.to_thread(
                _tls_raw,
                server.port,
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                + many
                + b"\r\n",
            )
            assert len(many) > WS_HEADER_BYTES_MAX and got.startswith(b"HTTP/1.1 431")
        # ... meanwhile everyone else is served.
        assert await _read_over_tls(kind, server, cert, workspace) == "ok\n"
        # A 1 MB token: in initializationOptions it is only a big message (whether it is
        # accepted is the server's checks'); as a ws Bearer header it is refused with 431.
        huge_token = "t" * 2**20
        if kind == "tcp":
            async with await connect(
                workspace, token=huge_token, tls_ca=str(cert.cert), **_url(kind, server.port)
            ) as db:
                assert (await db.read("hello.py")).text == "ok\n"
        else:
            with pytest.raises(ConnectionLost) as err:
                await connect(
                    workspace, token=huge_token, tls_ca=str(cert.cert), **_url(kind, server.port)
                )
            assert "431" in str(err.value) and "tttt" not in str(err.value)
        # A client that never finishes its handshake is dropped (after the handshake timeout).
        s = stuck[0]
        s.settimeout(TLS_HANDSHAKE_TIMEOUT_S * 6)
        assert await asyncio.to_thread(s.recv, 1) == b""
    finally:
        for s in stuck:
            s.close()
    assert server.alive()
    assert await _read_over_tls(kind, server, cert, workspace) == "ok\n"


def test_bad_certificate_or_key_is_one_line_and_exit_1(
    cert: Cert, tmp_path: Path, database_url: str
) -> None:
    other = make_cert(tmp_path / "other", "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    missing = tmp_path / "missing.pem"
    env = {**os.environ, "DBCODE_DATABASE_URL": database_url}

    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SERVE, *args], env=env, capture_output=True, text=True, timeout=120)

    c, k = str(cert.cert), str(cert.key)
    cases = [
        (("--tcp", "127.0.0.1:0", "--tls-cert", str(missing), "--tls-key", k),
         f"dbcode: cannot read the TLS certificate {missing}: No such file or directory"),
        (("--ws", "127.0.0.1:0", "--tls-cert", c, "--tls-key", str(missing)),
         f"dbcode: cannot read the TLS key {missing}: No such file or directory"),
        (("--tcp", "127.0.0.1:0", "--tls-cert", c, "--tls-key", str(other.key)),
         f"dbcode: the TLS key {other.key} does not match the certificate {c}"),
        (("--tcp", "127.0.0.1:0", "--tls-cert", str(junk), "--tls-key", k),
         f"dbcode: the TLS certificate {junk} is not a PEM certificate"),
        (("--tcp", "127.0.0.1:0", "--tls-cert", c, "--tls-key", str(junk)),
         f"dbcode: the TLS key {junk} is not a PEM private key"),
        (("--tcp", "127.0.0.1:0", "--tls-cert", c),
         "dbcode: --tls-cert and --tls-key go together: give both"),
        (("--standalone", "--tls-cert", c, "--tls-key", k),
         "dbcode: --tls-cert and --tls-key are for --tcp and --ws"),
    ]  # fmt: skip
    for args, message in cases:
        r = serve(*args)
        assert (r.returncode, r.stderr) == (1, message + "\n"), args
        assert "PRIVATE KEY" not in r.stderr


def test_tls_is_not_loaded_by_the_cli_or_relay() -> None:
    probe = (
        "import sys; from lsp_dbcode import cli, fastcli; from lsp_dbcode.server import relay; "
        "print('ssl' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def test_fast_cli_reaches_a_tls_server_with_server_and_tls_ca(
    cli: Cli, cert: Cert, database_url: str, tmp_path: Path, workspace: str, shared_servers: Path
) -> None:
    server = _start_tls(database_url, "tcp", cert, tmp_path / "server.log")
    try:
        url = f"tls://127.0.0.1:{server.port}"
        ca = ["--tls-ca", str(cert.cert)]
        w = cli("--server", url, *ca, "write", workspace, "a.py", input="x = 1\n")
        assert (w.returncode, w.stdout) == (0, f"{workspace}/a.py: revision 1 (seq 1)\n")
        env = {"DBCODE_SERVER": url, "DBCODE_TLS_CA": str(cert.cert)}
        assert cli("cat", workspace, "a.py", env=env).stdout == "x = 1\n"
        assert "a.py" in cli("ls", workspace, env=env).stdout
        assert "tls-tcp session opened" in server.log_text()
        untrusted = cli("--server", url, "ls", workspace)
        plain = cli("--server", f"tcp://127.0.0.1:{server.port}", *ca, "ls", workspace)
        # blame goes through the server too; export needs the database itself.
        blame = cli("--server", url, *ca, "blame", workspace, "a.py")
        assert blame.returncode == 0 and "x = 1" in blame.stdout, blame.stderr
        direct_only = cli("--server", url, *ca, "export", workspace, str(tmp_path / "out"))
        bad_url = cli("--server", "http://127.0.0.1:1", "ls", workspace)
        for r in (untrusted, plain, direct_only, bad_url):
            assert r.returncode == 1 and r.stderr.startswith("dbcode: ")
            assert r.stderr.count("\n") == 1, r.stderr
        assert "certificate verify failed" in untrusted.stderr and "--tls-ca" in untrusted.stderr
        assert f"the server at 127.0.0.1:{server.port} closed the connection" in plain.stderr
        assert "--server: 'export'" in direct_only.stderr
        assert "tcp://HOST:PORT or tls://HOST:PORT" in bad_url.stderr
        assert server.alive()
        assert relay.live_servers(shared_servers) == []  # no shared server was started
    finally:
        server.stop()
