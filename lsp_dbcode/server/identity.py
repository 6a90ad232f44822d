"""Who a session is: the agent its commits name, and when they are made (SPEC: mode)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["save", "live"]


@dataclass(slots=True)
class Identity:
    """Changed by ``dbcode/configure``; the session's helpers read it when they need it."""

    agent: str = "lsp-client"
    mode: Mode = "save"
