"""Errors of the store layer.

    StoreError                 base of everything the store raises on purpose
    ├── InvalidInput           bad workspace name, path, content, arguments (nothing written)
    ├── NotFound               unknown workspace, file or revision
    ├── Conflict               compare-and-swap failed: carries the current revision
    ├── Claimed                another agent's exclusive claim refuses the change: carries it
    └── DatabaseUnavailable    cannot reach PostgreSQL (message names the DSN, never the password)

Exceptions are for the world's faults; assertions are for our bugs.
"""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base class of all deliberate store errors."""


class InvalidInput(StoreError):
    """The caller's input is invalid; nothing was written."""


class NotFound(StoreError):
    """A workspace, file or revision does not exist."""


class Conflict(StoreError):
    """A compare-and-swap write found the file at another revision.

    ``current_revision`` is 0 when the file does not exist (or was deleted).
    """

    def __init__(self, workspace: str, path: str, base_revision: int, current_revision: int):
        self.workspace = workspace
        self.path = path
        self.base_revision = base_revision
        self.current_revision = current_revision
        if current_revision == 0:
            now = "does not exist"
        else:
            now = f"is at revision {current_revision}"
        super().__init__(
            f"conflict: {workspace}/{path} {now}, not at base revision {base_revision}"
        )


class Claimed(StoreError):
    """Another agent's exclusive claim covers what the change touches (or the claim asked
    for). ``claim``: that claim (a ``model.Claim``)."""

    def __init__(self, workspace: str, path: str, claim: Any) -> None:
        self.workspace = workspace
        self.path = path
        self.claim = claim
        note = f": {claim.note}" if claim.note else ""
        where = "" if claim.whole else " (a range of it)"
        super().__init__(
            f"{workspace}/{path} is claimed exclusively by {claim.agent}{note}{where}"
            f" (claim {claim.id}, expires {claim.expires_at:%Y-%m-%d %H:%M:%S %Z}); "
            "wait for it to be released or expire, or ask its holder"
        )


class DatabaseUnavailable(StoreError):
    """PostgreSQL cannot be reached or used."""
