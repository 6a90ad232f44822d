"""``dbcode serve``'s options, typed: read once from the command line, then passed on.

Light on purpose (argparse and dataclasses only): the stdio relay imports it, and must start
fast and small."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

DEFAULT_AGENT = "lsp-client"


@dataclass(frozen=True, slots=True)
class ServeOptions:
    agent: str = DEFAULT_AGENT  # the agent of a session whose client names none
    agent_flag: str | None = None  # --agent given explicitly: wins over the client's (stdio)
    database_url: str | None = None  # --database-url (else DBCODE_DATABASE_URL, else embedded)
    tcp: str | None = None  # HOST:PORT
    ws: str | None = None  # HOST:PORT
    unix: str | None = None  # the shared server's socket (what stdio relays attach to)
    standalone: bool = False  # stdio: the session in this process, no shared server
    idle_exit_s: float | None = None  # a shared server exits after this long without a session
    spawned: bool = False  # started by a relay: stderr becomes the log once listening
    log_file: str | None = None
    log_level: str = "INFO"
    tls_cert: str | None = None  # --tcp / --ws over TLS: the certificate (chain), PEM
    tls_key: str | None = None  # ... and its private key, PEM
    # A stdio session's token (--token, else DBCODE_TOKEN): the relay passes it to the shared
    # server in its preamble; a --standalone session keeps it. Never in a repr.
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ServeOptions:
        """From the parsed command line (``dbcode serve``; a namespace may lack what another
        command does not define)."""
        values = vars(args)
        return cls(
            agent=values.get("agent") or DEFAULT_AGENT,
            agent_flag=values.get("agent_flag"),
            database_url=values.get("database_url"),
            tcp=values.get("tcp"),
            ws=values.get("ws"),
            unix=values.get("unix"),
            standalone=bool(values.get("standalone")),
            idle_exit_s=values.get("idle_exit"),
            spawned=bool(values.get("spawned")),
            log_file=values.get("log_file"),
            log_level=str(values.get("log_level") or "INFO"),
            tls_cert=values.get("tls_cert"),
            tls_key=values.get("tls_key"),
            token=values.get("token") or None,
        )
