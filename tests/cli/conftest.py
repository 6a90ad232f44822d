"""The CLI's tests run on both of its paths: through the shared server (fastcli.py) and
direct to the database (commands.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lsp_dbcode.fastcli import DIRECT_ENV
from tests.conftest import Cli


@pytest.fixture(params=["shared", "direct"])
def cli(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Cli:
    runner = Cli(database_url, tmp_path / "home")
    runner.path = request.param  # type: ignore[attr-defined]
    if request.param == "direct":
        runner.env[DIRECT_ENV] = "1"
    else:
        runner.env.pop(DIRECT_ENV, None)
    return runner
