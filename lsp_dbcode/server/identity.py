"""Who a session is: the agent its commits name, and when they are made (SPEC: mode)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..store.access import Agent

Mode = Literal["save", "live"]


@dataclass(slots=True)
class Identity:
    """Changed by ``dbcode/configure``; the session's helpers read it when they need it."""

    agent: str = "lsp-client"
    mode: Mode = "save"
    # The token's agent on an enforced database (None: open): its grants are checked before
    # every write, and ``agent`` is its name (the caller cannot choose another).
    account: Agent | None = None
