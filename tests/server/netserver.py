"""Helpers for tests of the network transports: a self-signed certificate made in the test
(with the ``openssl`` binary, else the ``cryptography`` package), and a real ``dbcode serve
--tcp/--ws`` process logging to a file."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SERVE = [sys.executable, "-m", "lsp_dbcode", "serve"]


@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path


def make_cert(directory: Path, name: str = "server") -> Cert:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    if shutil.which("openssl"):
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        return Cert(cert, key)
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        pytest.skip("neither the openssl binary nor the cryptography package is installed")
    pkey = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    built = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(pkey, hashes.SHA256())
    )
    cert.write_bytes(built.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pkey.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Cert(cert, key)


@dataclass
class NetServer:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def start_server(
    database_url: str, flag: str, log: Path, *extra: str, env: dict[str, str] | None = None
) -> NetServer:
    """``dbcode serve FLAG 127.0.0.1:0 EXTRA...``, its port once it listens."""
    server_env = {k: v for k, v in os.environ.items() if k not in ("DBCODE_AGENT", "DBCODE_TOKEN")}
    server_env["DBCODE_DATABASE_URL"] = database_url
    server_env.update(env or {})
    proc = subprocess.Popen(
        [*SERVE, flag, "127.0.0.1:0", "--log-file", str(log), *extra],
        env=server_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    lines = []
    for _ in range(200):
        line = proc.stderr.readline().decode()
        lines.append(line)
        m = re.search(r"serving LSP over [\w ]+ on \('127\.0\.0\.1', (\d+)\)", line)
        if m:
            return NetServer(proc, int(m.group(1)), log)
        if not line:
            break
    proc.wait(10)
    raise AssertionError(f"the server did not report its port: {''.join(lines)!r}")
