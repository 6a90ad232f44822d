"""Identity and access in the store: agents, tokens, grants, audit, and PostgreSQL's own
enforcement (roles + row-level security), on a database of each test's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from lsp_dbcode.store import Change, InvalidInput, NotFound, Store, StoreError
from lsp_dbcode.store.access import Forbidden, Unauthenticated, parse_grant, run_as
from tests.conftest import _server_url, _with_dbname, drop_database_and_roles

WS = "proj"


@pytest.fixture
async def astore(fresh_database_url: str) -> AsyncIterator[Store]:
    async with Store(fresh_database_url, max_size=10) as s:
        yield s


async def _seed(store: Store) -> None:
    """Files in src/ and docs/, a thread with a comment on each, a claim on each, presence."""
    await store.commit(
        WS,
        [
            Change.write("src/a.py", "a = 1\n"),
            Change.write("docs/d.md", "# doc\n"),
        ],
        agent="seed",
        message="first",
    )
    await store.write(WS, "docs/d.md", "# doc 2\n", agent="seed", message="docs only secret")
    for path in ("src/a.py", "docs/d.md"):
        await store.comment(WS, path, f"note on {path}", agent="seed", lines=(1, 1))
        await store.claim(WS, path, agent="seed", note="mine")
    session = await store.open_session("seed")
    await store.set_presence(session, WS, "docs/d.md", present=True)
    await store.set_presence(session, WS, "src/a.py", present=True)


async def test_open_until_the_first_agent(astore: Store) -> None:
    assert await astore.access.enforced() is False
    assert await astore.access.authenticate(None) is None  # open: no token needed
    with pytest.raises(InvalidInput, match="first agent must be an admin"):
        await astore.access.add_agent("alice", [parse_grant(f"{WS}=write")])
    assert await astore.access.enforced() is False
    admin, token = await astore.access.add_agent("root", [], admin=True)
    assert await astore.access.enforced() is True
    assert token.startswith(f"dbc_{admin.id}_") and len(token) > 40
    got = await astore.access.authenticate(token)
    assert got is not None and got.name == "root" and got.superadmin
    # Only a keyed hash is stored: the token is nowhere in the database.
    rows = await astore._fetchall("SELECT token_hash::text FROM dbcode_agent")
    assert token.encode().hex() not in rows[0][0] and token not in rows[0][0]


async def test_tokens_refused(astore: Store) -> None:
    _, token = await astore.access.add_agent("root", [], admin=True)
    for bad in (
        None,
        "",
        "nonsense",
        token[:-1] + ("Q" if token[-1] != "Q" else "R"),
        f"dbc_999_{token.split('_', 2)[2]}",
        "dbc_1_" + "A" * 1_000_000,
    ):
        with pytest.raises(Unauthenticated, match=r"^authentication required"):
            await astore.access.authenticate(bad)


async def test_only_admins_manage_agents(astore: Store) -> None:
    root, _ = await astore.access.add_agent("root", [], admin=True)
    dev, dev_token = await astore.access.add_agent("dev", [parse_grant(f"{WS}/src=write")], by=root)
    assert [g.spec() for g in dev.grants] == [f"{WS}/src/=write"]
    dev_agent = await astore.access.authenticate(dev_token)
    for attempt in (
        astore.access.add_agent("x", [], by=dev_agent),
        astore.access.grant("dev", [parse_grant(f"{WS}=admin")], by=dev_agent),
        astore.access.rotate("root", by=dev_agent),
        astore.access.remove("root", by=dev_agent),
        astore.access.agents(by=dev_agent),
        astore.access.add_agent("y", [], by=None),
    ):
        with pytest.raises(Forbidden, match=r"^forbidden: agent"):
            await attempt
    with pytest.raises(InvalidInput, match="exists already"):
        await astore.access.add_agent("dev", [], by=root)
    with pytest.raises(InvalidInput, match="no admin"):
        await astore.access.remove("root", by=root)
    with pytest.raises(NotFound):
        await astore.access.rotate("nobody", by=root)
    assert [a.name for a in await astore.access.agents(by=root)] == ["dev", "root"]


async def test_rotate_revoke_remove(astore: Store) -> None:
    root, _ = await astore.access.add_agent("root", [], admin=True)
    _, old = await astore.access.add_agent("dev", [parse_grant(f"{WS}=write")], by=root)
    assert (await astore.access.authenticate(old)) is not None
    new = await astore.access.rotate("dev", by=root)
    with pytest.raises(Unauthenticated):
        await astore.access.authenticate(old)
    dev = await astore.access.authenticate(new)
    assert dev is not None and dev.can_write(WS, "x.py")
    await astore.access.revoke("dev", [WS], by=root)
    dev = await astore.access.authenticate(new)
    assert dev is not None and not dev.can_read(WS, "x.py")
    await astore.access.remove("dev", by=root)
    with pytest.raises(Unauthenticated):
        await astore.access.authenticate(new)


async def test_audit_is_admins_only(astore: Store) -> None:
    root, _ = await astore.access.add_agent("root", [], admin=True)
    _, t = await astore.access.add_agent("dev", [parse_grant(f"{WS}=write")], by=root)
    dev = await astore.access.authenticate(t)
    await astore.access.record(
        agent="dev", action="write", workspace=WS, path="x.py", transport="tcp", peer="1.2.3.4"
    )
    await astore.access.record(agent=None, action="authenticate", reason="bad token")
    entries = await astore.access.audit(WS, by=root)
    assert [(e.agent, e.action, e.path, e.transport) for e in entries] == [
        (None, "authenticate", None, "?"),
        ("dev", "write", "x.py", "tcp"),
    ]
    with pytest.raises(Forbidden):
        await astore.access.audit(WS, by=dev)


async def test_commit_as_agent_stays_inside_its_grants(astore: Store) -> None:
    await _seed(astore)
    root, _ = await astore.access.add_agent("root", [], admin=True)
    _, t = await astore.access.add_agent("dev", [parse_grant(f"{WS}/src=write")], by=root)
    dev = await astore.access.authenticate(t)
    head = await astore.head(WS)
    with run_as(dev):
        # Even without the server's checks, PostgreSQL refuses the write to docs/ and the
        # whole changeset with it.
        with pytest.raises(StoreError, match="forbidden"):
            await astore.commit(
                WS,
                [Change.write("src/a.py", "a = 2\n"), Change.write("docs/d.md", "x\n")],
                agent="dev",
            )
        result = await astore.write(WS, "src/b.py", "b = 1\n", agent="dev")
        assert [f.path for f in await astore.list_files(WS)] == ["src/a.py", "src/b.py"]
        assert {c.message for c in await astore.log(WS)} == {"first", None}
    assert result.seq == head + 1
    assert (await astore.read(WS, "src/a.py")).text == "a = 1\n"


TABLES = (
    "dbcode_workspace",
    "dbcode_file",
    "dbcode_revision",
    "dbcode_changeset",
    "dbcode_thread",
    "dbcode_comment",
    "dbcode_review_event",
    "dbcode_review_head",
    "dbcode_claim",
    "dbcode_presence",
    "dbcode_audit",
)


async def _check_direct_sql(url: str, store: Store) -> None:
    """SQL run directly as an agent's role sees and changes only what its grants allow."""
    await _seed(store)
    root, _ = await store.access.add_agent("root", [], admin=True)
    dev, _ = await store.access.add_agent("dev", [parse_grant(f"{WS}/src=write")], by=root)
    reader, _ = await store.access.add_agent("reader", [parse_grant(f"{WS}/src=read")], by=root)
    await store.access.record(agent="x", action="write", workspace=WS, path="docs/d.md")
    other = f"other-{uuid.uuid4().hex[:6]}"
    await store.write(other, "src/z.py", "z\n", agent="seed")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        owner_counts = {}
        for t in TABLES:
            cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t)))
            owner_counts[t] = (await cur.fetchone())[0]  # type: ignore[index]
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(dev.role)))
        # Naming another agent (root) as the actor gains nothing: only the batch role's is read.
        await conn.execute("SELECT set_config('dbcode.actor', %s, false)", (root.role,))
        seen = {}
        for t in TABLES:
            cur = await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t)))
            seen[t] = (await cur.fetchone())[0]  # type: ignore[index]
        # Paths: only src/ of WS (no docs/, nothing of the other workspace).
        for t in (
            "dbcode_file",
            "dbcode_revision",
            "dbcode_thread",
            "dbcode_claim",
            "dbcode_presence",
        ):
            cur = await conn.execute(
                sql.SQL("SELECT DISTINCT path FROM {}").format(sql.Identifier(t))
            )
            assert [r[0] for r in await cur.fetchall()] == ["src/a.py"], t
            assert seen[t] < owner_counts[t], t
        cur = await conn.execute("SELECT name FROM dbcode_workspace")
        assert [r[0] for r in await cur.fetchall()] == [WS]
        cur = await conn.execute("SELECT message FROM dbcode_changeset")
        assert [r[0] for r in await cur.fetchall()] == ["first"]  # not "docs only secret"
        cur = await conn.execute("SELECT body FROM dbcode_comment")
        assert [r[0] for r in await cur.fetchall()] == ["note on src/a.py"]
        assert seen["dbcode_review_event"] == 1
        assert seen["dbcode_audit"] == 0  # not an admin of WS
        # The access tables are not its to read at all.
        for t in ("dbcode_agent", "dbcode_grant", "dbcode_access"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(t)))
        # Writes outside its grants: refused, or touching no row.
        refused = [
            "INSERT INTO dbcode_file (workspace_id, path, revision, deleted)"
            " SELECT id, 'docs/new.md', 0, true FROM dbcode_workspace",
            "SELECT dbcode_write('proj', 'dev', NULL, 'docs/d.md', NULL, 'hacked')",
            "SELECT dbcode_write('proj', 'root', NULL, 'src/a.py', NULL, 'as someone else')",
            f"SELECT dbcode_write('{other}', 'dev', NULL, 'src/z.py', NULL, 'other ws')",
            "INSERT INTO dbcode_audit (action) VALUES ('forged')",
            "UPDATE dbcode_agent SET name = 'x'",
        ]
        for stmt in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(stmt)
        untouched = [
            "UPDATE dbcode_file SET revision = 99 WHERE path = 'docs/d.md'",
            "DELETE FROM dbcode_revision WHERE path = 'docs/d.md'",
            "UPDATE dbcode_revision SET content = 'x' WHERE path = 'docs/d.md'",
            "DELETE FROM dbcode_claim WHERE path = 'docs/d.md'",
            "UPDATE dbcode_thread SET state = 'resolved' WHERE path = 'docs/d.md'",
            "DELETE FROM dbcode_comment WHERE body LIKE '%docs%'",
            "DELETE FROM dbcode_presence WHERE path = 'docs/d.md'",
            "DELETE FROM dbcode_changeset",
            "DELETE FROM dbcode_audit",
        ]
        for stmt in untouched:
            try:
                cur = await conn.execute(stmt)
                assert cur.rowcount == 0, stmt
            except psycopg.errors.InsufficientPrivilege:
                pass
        # Inside its grants it works: a write of src/ as itself.
        await conn.execute("SELECT dbcode_write('proj', 'dev', NULL, 'src/a.py', NULL, 'ok')")
        # A read-only agent cannot write even src/.
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(reader.role)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute(
                "SELECT dbcode_write('proj', 'reader', NULL, 'src/a.py', NULL, 'ro')"
            )
        await conn.execute("RESET ROLE")
        cur = await conn.execute(
            "SELECT count(*) FROM dbcode_file f JOIN dbcode_workspace w ON w.id = f.workspace_id"
            " WHERE w.name = 'proj'"
        )
        assert (await cur.fetchone())[0] == 2  # type: ignore[index]
    assert (await store.read(WS, "docs/d.md")).text == "# doc 2\n"
    assert (await store.read(WS, "src/a.py")).text == "ok"


async def test_direct_sql_per_role(astore: Store, fresh_database_url: str) -> None:
    await _check_direct_sql(fresh_database_url, astore)


def _is_superuser(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        return bool(row and row[0])


async def test_direct_sql_with_a_createrole_owner() -> None:
    """A managed PostgreSQL's owner: CREATEROLE, not superuser, owning its database."""
    server = _server_url()
    if not _is_superuser(server):
        pytest.skip("needs a superuser to make the owner role")
    owner = f"dbc_owner_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    name = f"dbcode_acl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                sql.Identifier(owner), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner)
            )
        )
    try:
        params = psycopg.conninfo.conninfo_to_dict(_with_dbname(server, name))
        params.update(user=owner, password=password)
        url = psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
        async with Store(url, max_size=5) as store:
            await _check_direct_sql(url, store)
    finally:
        drop_database_and_roles(server, name)
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(owner)))


async def test_group_commit_of_several_agents(astore: Store) -> None:
    """Changesets of several agents share one batch; each runs as its own role in it, so the
    one outside its grants fails alone."""
    await _seed(astore)
    root, _ = await astore.access.add_agent("root", [], admin=True)
    dev, _ = await astore.access.add_agent("dev", [parse_grant(f"{WS}/src=write")], by=root)
    doc, _ = await astore.access.add_agent("doc", [parse_grant(f"{WS}/docs=write")], by=root)
    batches = astore.batches

    async def write(agent: Any, path: str) -> Any:
        with run_as(agent):
            return await astore.write(WS, path, f"by {agent.name}\n", agent=agent.name)

    got = await asyncio.gather(
        write(dev, "src/x.py"),
        write(doc, "docs/y.md"),
        write(dev, "docs/z.md"),
        write(doc, "docs/w.md"),
        write(dev, "src/v.py"),
        return_exceptions=True,
    )
    assert astore.batches - batches < 5  # some went together
    assert isinstance(got[2], StoreError) and "forbidden" in str(got[2])
    assert [isinstance(g, StoreError) for g in got] == [False, False, True, False, False]
    files = {f.path: f.updated_by for f in await astore.list_files(WS)}
    assert files["src/x.py"] == "dev" and files["docs/y.md"] == "doc" and "docs/z.md" not in files
