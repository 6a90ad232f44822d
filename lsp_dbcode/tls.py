"""TLS for ``dbcode serve --tcp/--ws --tls-cert FILE --tls-key FILE`` and for the clients that
connect to it (``tls://`` / ``wss://``): standard library ``ssl`` only, imported when used (the
relay and the fast CLI must not load OpenSSL when they do not need it).

Errors are :class:`TLSError`, one line naming the file and what is wrong with it (never its
content)."""

from __future__ import annotations

import os
import ssl

# A client that connects and never finishes the TLS handshake is dropped after this long, so
# that a flood of them holds nothing for long (the server keeps answering everyone else).
TLS_HANDSHAKE_TIMEOUT_S = 10.0
CA_ENV = "DBCODE_TLS_CA"  # the clients' CA file (PEM) when none is given


class TLSError(Exception):
    """A certificate, key or CA file that cannot be used: one line."""


def _readable(path: str, what: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise TLSError(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None


def _no_password() -> bytes:
    raise TLSError("encrypted")


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The server's context for this certificate (chain) and private key, both PEM."""
    _readable(cert, "certificate")
    _readable(key, "key")
    try:  # the certificate alone first: a bad one is then named as such
        ssl.create_default_context(cafile=cert)
    except ssl.SSLError:
        raise TLSError(f"the TLS certificate {cert} is not a PEM certificate") from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key, password=_no_password)
    except TLSError:
        raise TLSError(
            f"the TLS key {key} is encrypted: give an unencrypted key (readable by you only)"
        ) from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSError(f"the TLS key {key} does not match the certificate {cert}") from None
        raise TLSError(f"the TLS key {key} is not a PEM private key") from None
    return ctx


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    """A client's context: verifies the server's certificate and name against ``cafile`` (else
    ``$DBCODE_TLS_CA``, else the system's trusted CAs)."""
    cafile = cafile or os.environ.get(CA_ENV) or None
    if cafile:
        _readable(cafile, "CA file")
    try:
        return ssl.create_default_context(cafile=cafile)
    except ssl.SSLError:
        raise TLSError(f"the TLS CA file {cafile} is not a PEM certificate") from None


def split_url(value: str, schemes: dict[str, bool]) -> tuple[bool, str]:
    """``(tls, rest)`` of ``SCHEME://rest`` for the schemes given (scheme -> TLS or not);
    a value without a scheme is plain."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return False, value
    if scheme.lower() not in schemes:
        known = ", ".join(f"{s}://" for s in schemes)
        raise ValueError(f"unknown scheme in {value!r}: use {known}")
    return schemes[scheme.lower()], rest
