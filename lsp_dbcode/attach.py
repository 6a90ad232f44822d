"""Attach to the shared ``dbcode serve --unix`` server as a client of our own (not as a stdio
relay): the same key, files, lock and start as server/relay.py, but our stdin and stdout stay
ours (an MCP server or a CLI call reads and writes them itself). Standard library only.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from .server.options import ServeOptions
from .server.relay import (
    START_TIMEOUT_S,
    Attached,
    Relay,
    RelayError,
    ServerPaths,
    preamble,
    relay_for,
)

__all__ = [
    "Attached",
    "RelayError",
    "attach_shared",
    "attach_unix",
    "shared_relay",
    "unix_sockets_usable",
]


def unix_sockets_usable() -> bool:
    return hasattr(socket, "AF_UNIX") and hasattr(os, "fork")


def shared_relay(
    database_url: str | None, agent: str | None, env: Mapping[str, str] | None = None
) -> Relay:
    """The relay that finds (or starts) the shared server for this database and environment.
    ``agent`` authors the session's changes (None: the server's default, as for a relay
    without --agent)."""
    env = dict(os.environ if env is None else env)
    env.pop("DBCODE_AGENT", None)  # the agent goes in the preamble, never in the key
    env.pop("DBCODE_TOKEN", None)  # a client's token goes in its initializationOptions
    options = ServeOptions(
        database_url=database_url, agent_flag=agent, agent=agent or "dbcode-client"
    )
    relay = relay_for(options, env)
    relay.hand_over = False
    relay.hello = preamble(agent, agent or "dbcode-client", fds=False)
    return relay


def attach_shared(
    database_url: str | None,
    agent: str | None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> Attached:
    """A connected socket to the shared server (started if none runs), past the preamble:
    LSP from here on. RelayError (one line) when it cannot be had."""
    return shared_relay(database_url, agent, env).attach(timeout_s)


def attach_unix(path: str, agent: str | None, timeout_s: float = START_TIMEOUT_S) -> Attached:
    """A connected socket to the ``dbcode serve --unix PATH`` at ``path`` (never started:
    it is someone's own server), past the preamble."""
    relay = Relay(
        ServerPaths(Path(path)), preamble(agent, agent or "dbcode-client"), [], {}, os.getcwd()
    )
    got = relay._try_attach(time.monotonic() + timeout_s)
    if got is None:
        raise RelayError(f"no dbcode server listens on {path}")
    return got
