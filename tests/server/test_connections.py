"""What one more connection costs a server process: shared, not rebuilt."""

from __future__ import annotations

from lsp_dbcode.server.routes import create_server
from lsp_dbcode.server.shared import Shared
from lsp_dbcode.store import Store


async def test_connections_share_one_converter(database_url: str) -> None:
    # cattrs generates a type's (un)structure function once per converter: a converter per
    # connection generated InitializeParams' again for every session (~25 ms of CPU each).
    app = Shared(Store(database_url))
    one = create_server(app, "a")
    two = create_server(app, "b")
    assert one.protocol._converter is two.protocol._converter
    await app.close()


async def test_the_route_table_is_what_is_served(database_url: str) -> None:
    # One table: every standard method in it is registered with pygls (which advertises the
    # capabilities from it); the dbcode/* rows are ours alone (answered on the lean path).
    from lsp_dbcode.server.routes import ROUTES

    app = Shared(Store(database_url))
    server = create_server(app, "a")
    features = server.protocol.fm.features
    for method in ROUTES:
        assert (method in features) != method.startswith("dbcode/"), method
    assert server.protocol.routes is ROUTES
    await app.close()
