"""Schema and versioned migrations.

Migrations are applied in one transaction under a transaction-scoped advisory lock, so several
processes starting at once serialise: the first applies, the others wait and then find nothing
to do. Never edit a published step; append a new one.
"""

from __future__ import annotations

import psycopg

# A fixed key for pg_advisory_xact_lock: "dbcode" as a number.
MIGRATION_LOCK_KEY = 0x6462636F6465

_V1 = r"""
CREATE TABLE dbcode_workspace (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    head_seq    bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per changeset. seq is gap-free and assigned under the workspace row lock, which is
-- held until COMMIT: so changesets become visible in seq order, and "seq > last" never skips.
CREATE TABLE dbcode_changeset (
    workspace_id bigint NOT NULL REFERENCES dbcode_workspace (id),
    seq          bigint NOT NULL,
    agent        text NOT NULL,
    message      text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, seq)
);

-- Current state of every path ever used: its latest revision, and whether that is a deletion.
CREATE TABLE dbcode_file (
    workspace_id bigint NOT NULL REFERENCES dbcode_workspace (id),
    path         text NOT NULL,
    revision     integer NOT NULL,
    deleted      boolean NOT NULL,
    PRIMARY KEY (workspace_id, path)
);

-- Every revision of every file. kind 'moved' marks the old path of a rename (content NULL);
-- the new path's row has kind 'rename' and old_path.
CREATE TABLE dbcode_revision (
    workspace_id bigint NOT NULL,
    path         text NOT NULL,
    revision     integer NOT NULL,
    seq          bigint NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('create', 'update', 'delete', 'rename', 'moved')),
    old_path     text,
    content      text,
    size         integer NOT NULL DEFAULT 0,
    sha          text,
    PRIMARY KEY (workspace_id, path, revision),
    FOREIGN KEY (workspace_id, seq) REFERENCES dbcode_changeset (workspace_id, seq)
);
CREATE INDEX dbcode_revision_seq ON dbcode_revision (workspace_id, seq);

-- The atomic changeset. p_changes: [{"op": "write"|"delete"|"rename", "path": str,
-- "text": str (write), "new_path": str (rename), "base": int|null}]. Returns
-- {"seq": n, "revisions": {path: revision}}. Errors: SQLSTATE DB409 (conflict, DETAIL
-- {"path", "current"}), DB404 (missing file), DB400 (bad request).
CREATE FUNCTION dbcode_commit(p_workspace text, p_agent text, p_message text, p_changes jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    ws        bigint;
    s         bigint;
    ch        jsonb;
    op        text;
    p         text;
    np        text;
    base      integer;
    cur_rev   integer;
    cur_del   boolean;
    cur       integer;
    dst_rev   integer;
    dst_del   boolean;
    src_text  text;
    all_paths text[];
    r_path    text[] := '{}';
    r_rev     integer[] := '{}';
    r_kind    text[] := '{}';
    r_old     text[] := '{}';
    r_content text[] := '{}';
    revs      jsonb := '{}';
BEGIN
    IF jsonb_typeof(p_changes) <> 'array' OR jsonb_array_length(p_changes) = 0 THEN
        RAISE EXCEPTION 'a changeset needs at least one change' USING ERRCODE = 'DB400';
    END IF;
    SELECT id INTO ws FROM dbcode_workspace WHERE name = p_workspace;
    IF ws IS NULL THEN
        INSERT INTO dbcode_workspace (name) VALUES (p_workspace) ON CONFLICT (name) DO NOTHING;
        SELECT id INTO ws FROM dbcode_workspace WHERE name = p_workspace;
    END IF;

    SELECT array_agg(x ORDER BY x) INTO all_paths FROM (
        SELECT c ->> 'path' AS x FROM jsonb_array_elements(p_changes) c
        UNION ALL
        SELECT c ->> 'new_path' FROM jsonb_array_elements(p_changes) c WHERE c ? 'new_path'
    ) q;
    IF (SELECT count(DISTINCT x) FROM unnest(all_paths) x) <> cardinality(all_paths) THEN
        RAISE EXCEPTION 'a path appears more than once in one changeset' USING ERRCODE = 'DB400';
    END IF;

    -- Make a row for every touched path, then lock them all in path order (no deadlocks).
    INSERT INTO dbcode_file (workspace_id, path, revision, deleted)
        SELECT ws, x, 0, true FROM unnest(all_paths) x ORDER BY x
        ON CONFLICT DO NOTHING;
    PERFORM 1 FROM dbcode_file WHERE workspace_id = ws AND path = ANY (all_paths)
        ORDER BY path FOR UPDATE;

    FOR ch IN SELECT value FROM jsonb_array_elements(p_changes) LOOP
        op := ch ->> 'op';
        p := ch ->> 'path';
        base := (ch ->> 'base')::integer;
        SELECT revision, deleted INTO cur_rev, cur_del
            FROM dbcode_file WHERE workspace_id = ws AND path = p;
        cur := CASE WHEN cur_del THEN 0 ELSE cur_rev END;
        IF base IS NOT NULL AND base <> cur THEN
            RAISE EXCEPTION 'conflict on %', p USING ERRCODE = 'DB409',
                DETAIL = jsonb_build_object('path', p, 'current', cur)::text;
        END IF;
        IF op = 'write' THEN
            r_path := r_path || p;
            r_rev := r_rev || (cur_rev + 1);
            r_kind := r_kind || (CASE WHEN cur_del THEN 'create' ELSE 'update' END);
            r_old := r_old || NULL::text;
            r_content := r_content || (ch ->> 'text');
            revs := revs || jsonb_build_object(p, cur_rev + 1);
        ELSIF op = 'delete' THEN
            IF cur_del THEN
                RAISE EXCEPTION 'no such file: %', p USING ERRCODE = 'DB404',
                    DETAIL = jsonb_build_object('path', p)::text;
            END IF;
            r_path := r_path || p;
            r_rev := r_rev || (cur_rev + 1);
            r_kind := r_kind || 'delete'::text;
            r_old := r_old || NULL::text;
            r_content := r_content || NULL::text;
            revs := revs || jsonb_build_object(p, cur_rev + 1);
        ELSIF op = 'rename' THEN
            np := ch ->> 'new_path';
            IF cur_del THEN
                RAISE EXCEPTION 'no such file: %', p USING ERRCODE = 'DB404',
                    DETAIL = jsonb_build_object('path', p)::text;
            END IF;
            SELECT revision, deleted INTO dst_rev, dst_del
                FROM dbcode_file WHERE workspace_id = ws AND path = np;
            IF NOT dst_del THEN
                RAISE EXCEPTION 'rename target exists: %', np USING ERRCODE = 'DB409',
                    DETAIL = jsonb_build_object('path', np, 'current', dst_rev)::text;
            END IF;
            SELECT content INTO src_text FROM dbcode_revision
                WHERE workspace_id = ws AND path = p AND revision = cur_rev;
            r_path := r_path || p || np;
            r_rev := r_rev || (cur_rev + 1) || (dst_rev + 1);
            r_kind := r_kind || 'moved'::text || 'rename'::text;
            r_old := r_old || np || p;
            r_content := r_content || NULL::text || src_text;
            revs := revs || jsonb_build_object(p, cur_rev + 1, np, dst_rev + 1);
        ELSE
            RAISE EXCEPTION 'unknown change op %', op USING ERRCODE = 'DB400';
        END IF;
    END LOOP;

    -- Last: take the workspace row lock and the next seq. Held until COMMIT.
    UPDATE dbcode_workspace SET head_seq = head_seq + 1 WHERE id = ws RETURNING head_seq INTO s;
    INSERT INTO dbcode_changeset (workspace_id, seq, agent, message)
        VALUES (ws, s, p_agent, p_message);
    INSERT INTO dbcode_revision (workspace_id, path, revision, seq, kind, old_path, content,
                                 size, sha)
        SELECT ws, t.path, t.rev, s, t.kind, t.old, t.content,
               coalesce(octet_length(t.content), 0), md5(t.content)
        FROM unnest(r_path, r_rev, r_kind, r_old, r_content) AS t (path, rev, kind, old, content);
    UPDATE dbcode_file f SET revision = t.rev, deleted = t.content IS NULL
        FROM unnest(r_path, r_rev, r_content) AS t (path, rev, content)
        WHERE f.workspace_id = ws AND f.path = t.path;
    PERFORM pg_notify('dbcode', p_workspace || ' ' || s);
    RETURN jsonb_build_object('seq', s, 'revisions', revs);
END
$fn$;
"""

# v2: group commit. One changeset's work moves into dbcode_apply (no NOTIFY); dbcode_commit
# keeps its signature and behaviour. dbcode_commit_many applies a batch of changesets of one
# workspace in one transaction: every file row of the batch is locked first (path order, as
# dbcode_commit does: no deadlock between the two), then each changeset runs in its own
# subtransaction (BEGIN ... EXCEPTION), so one that conflicts fails alone and leaves no seq
# behind; the others get consecutive seqs under one workspace row lock and share one WAL flush
# and one NOTIFY (the last seq: the hub reads everything after what it has).
_V2 = r"""
CREATE FUNCTION dbcode_workspace_id(p_workspace text) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    ws bigint;
BEGIN
    SELECT id INTO ws FROM dbcode_workspace WHERE name = p_workspace;
    IF ws IS NULL THEN
        INSERT INTO dbcode_workspace (name) VALUES (p_workspace) ON CONFLICT (name) DO NOTHING;
        SELECT id INTO ws FROM dbcode_workspace WHERE name = p_workspace;
    END IF;
    RETURN ws;
END
$fn$;

-- Make a row for every path, then lock them all in path order.
CREATE FUNCTION dbcode_lock_paths(ws bigint, all_paths text[]) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO dbcode_file (workspace_id, path, revision, deleted)
        SELECT ws, x, 0, true FROM unnest(all_paths) x ORDER BY x
        ON CONFLICT DO NOTHING;
    PERFORM 1 FROM dbcode_file WHERE workspace_id = ws AND path = ANY (all_paths)
        ORDER BY path FOR UPDATE;
END
$fn$;

CREATE FUNCTION dbcode_changeset_paths(p_changes jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM (
        SELECT c ->> 'path' AS x FROM jsonb_array_elements(p_changes) c
        UNION ALL
        SELECT c ->> 'new_path' FROM jsonb_array_elements(p_changes) c WHERE c ? 'new_path'
    ) q
$fn$;

-- One changeset, its paths already locked. Returns {"seq", "revisions"}; raises DB4xx.
CREATE FUNCTION dbcode_apply(ws bigint, p_agent text, p_message text, p_changes jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    s         bigint;
    ch        jsonb;
    op        text;
    p         text;
    np        text;
    base      integer;
    cur_rev   integer;
    cur_del   boolean;
    cur       integer;
    dst_rev   integer;
    dst_del   boolean;
    src_text  text;
    all_paths text[];
    r_path    text[] := '{}';
    r_rev     integer[] := '{}';
    r_kind    text[] := '{}';
    r_old     text[] := '{}';
    r_content text[] := '{}';
    revs      jsonb := '{}';
    txt       text;
    knd       text;
BEGIN
    IF jsonb_typeof(p_changes) IS DISTINCT FROM 'array' OR jsonb_array_length(p_changes) = 0 THEN
        RAISE EXCEPTION 'a changeset needs at least one change' USING ERRCODE = 'DB400';
    END IF;
    -- Fast path, the common case: one file written. Same effects as the general path below,
    -- in fewer statements (no arrays, no unnest).
    IF jsonb_array_length(p_changes) = 1 AND p_changes -> 0 ->> 'op' = 'write' THEN
        ch := p_changes -> 0;
        p := ch ->> 'path';
        txt := ch ->> 'text';
        base := (ch ->> 'base')::integer;
        IF p IS NULL OR txt IS NULL THEN
            RAISE EXCEPTION 'a write needs a path and a text' USING ERRCODE = 'DB400';
        END IF;
        SELECT revision, deleted INTO cur_rev, cur_del
            FROM dbcode_file WHERE workspace_id = ws AND path = p FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO dbcode_file (workspace_id, path, revision, deleted)
                VALUES (ws, p, 0, true) ON CONFLICT DO NOTHING;
            SELECT revision, deleted INTO cur_rev, cur_del
                FROM dbcode_file WHERE workspace_id = ws AND path = p FOR UPDATE;
        END IF;
        cur := CASE WHEN cur_del THEN 0 ELSE cur_rev END;
        IF base IS NOT NULL AND base <> cur THEN
            RAISE EXCEPTION 'conflict on %', p USING ERRCODE = 'DB409',
                DETAIL = jsonb_build_object('path', p, 'current', cur)::text;
        END IF;
        knd := CASE WHEN cur_del THEN 'create' ELSE 'update' END;
        UPDATE dbcode_workspace SET head_seq = head_seq + 1 WHERE id = ws
            RETURNING head_seq INTO s;
        INSERT INTO dbcode_changeset (workspace_id, seq, agent, message)
            VALUES (ws, s, p_agent, p_message);
        INSERT INTO dbcode_revision (workspace_id, path, revision, seq, kind, content, size, sha)
            VALUES (ws, p, cur_rev + 1, s, knd, txt, octet_length(txt), md5(txt));
        UPDATE dbcode_file SET revision = cur_rev + 1, deleted = false
            WHERE workspace_id = ws AND path = p;
        RETURN jsonb_build_object('seq', s, 'revisions', jsonb_build_object(p, cur_rev + 1),
            'time', now(),
            'files', jsonb_build_array(jsonb_build_array(p, cur_rev + 1, knd, NULL)));
    END IF;
    all_paths := dbcode_changeset_paths(p_changes);
    IF (SELECT count(DISTINCT x) FROM unnest(all_paths) x) <> cardinality(all_paths) THEN
        RAISE EXCEPTION 'a path appears more than once in one changeset' USING ERRCODE = 'DB400';
    END IF;
    PERFORM dbcode_lock_paths(ws, all_paths);

    FOR ch IN SELECT value FROM jsonb_array_elements(p_changes) LOOP
        op := ch ->> 'op';
        p := ch ->> 'path';
        base := (ch ->> 'base')::integer;
        SELECT revision, deleted INTO cur_rev, cur_del
            FROM dbcode_file WHERE workspace_id = ws AND path = p;
        cur := CASE WHEN cur_del THEN 0 ELSE cur_rev END;
        IF base IS NOT NULL AND base <> cur THEN
            RAISE EXCEPTION 'conflict on %', p USING ERRCODE = 'DB409',
                DETAIL = jsonb_build_object('path', p, 'current', cur)::text;
        END IF;
        IF op = 'write' THEN
            r_path := r_path || p;
            r_rev := r_rev || (cur_rev + 1);
            r_kind := r_kind || (CASE WHEN cur_del THEN 'create' ELSE 'update' END);
            r_old := r_old || NULL::text;
            r_content := r_content || (ch ->> 'text');
            revs := revs || jsonb_build_object(p, cur_rev + 1);
        ELSIF op = 'delete' THEN
            IF cur_del THEN
                RAISE EXCEPTION 'no such file: %', p USING ERRCODE = 'DB404',
                    DETAIL = jsonb_build_object('path', p)::text;
            END IF;
            r_path := r_path || p;
            r_rev := r_rev || (cur_rev + 1);
            r_kind := r_kind || 'delete'::text;
            r_old := r_old || NULL::text;
            r_content := r_content || NULL::text;
            revs := revs || jsonb_build_object(p, cur_rev + 1);
        ELSIF op = 'rename' THEN
            np := ch ->> 'new_path';
            IF cur_del THEN
                RAISE EXCEPTION 'no such file: %', p USING ERRCODE = 'DB404',
                    DETAIL = jsonb_build_object('path', p)::text;
            END IF;
            SELECT revision, deleted INTO dst_rev, dst_del
                FROM dbcode_file WHERE workspace_id = ws AND path = np;
            IF NOT dst_del THEN
                RAISE EXCEPTION 'rename target exists: %', np USING ERRCODE = 'DB409',
                    DETAIL = jsonb_build_object('path', np, 'current', dst_rev)::text;
            END IF;
            SELECT content INTO src_text FROM dbcode_revision
                WHERE workspace_id = ws AND path = p AND revision = cur_rev;
            r_path := r_path || p || np;
            r_rev := r_rev || (cur_rev + 1) || (dst_rev + 1);
            r_kind := r_kind || 'moved'::text || 'rename'::text;
            r_old := r_old || np || p;
            r_content := r_content || NULL::text || src_text;
            revs := revs || jsonb_build_object(p, cur_rev + 1, np, dst_rev + 1);
        ELSE
            RAISE EXCEPTION 'unknown change op %', op USING ERRCODE = 'DB400';
        END IF;
    END LOOP;

    -- Last: take the workspace row lock and the next seq. Held until COMMIT.
    UPDATE dbcode_workspace SET head_seq = head_seq + 1 WHERE id = ws RETURNING head_seq INTO s;
    INSERT INTO dbcode_changeset (workspace_id, seq, agent, message)
        VALUES (ws, s, p_agent, p_message);
    INSERT INTO dbcode_revision (workspace_id, path, revision, seq, kind, old_path, content,
                                 size, sha)
        SELECT ws, t.path, t.rev, s, t.kind, t.old, t.content,
               coalesce(octet_length(t.content), 0), md5(t.content)
        FROM unnest(r_path, r_rev, r_kind, r_old, r_content) AS t (path, rev, kind, old, content);
    UPDATE dbcode_file f SET revision = t.rev, deleted = t.content IS NULL
        FROM unnest(r_path, r_rev, r_content) AS t (path, rev, content)
        WHERE f.workspace_id = ws AND f.path = t.path;
    -- The changeset as subscribers see it: the committing process feeds its own hub from it.
    RETURN jsonb_build_object('seq', s, 'revisions', revs, 'time', now(), 'files', (
        SELECT jsonb_agg(jsonb_build_array(t.path, t.rev, t.kind, t.old) ORDER BY t.path)
        FROM unnest(r_path, r_rev, r_kind, r_old) AS t (path, rev, kind, old)
        WHERE t.kind <> 'moved'));
END
$fn$;

CREATE OR REPLACE FUNCTION dbcode_commit(p_workspace text, p_agent text, p_message text,
                                         p_changes jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    result jsonb;
BEGIN
    result := dbcode_apply(dbcode_workspace_id(p_workspace), p_agent, p_message, p_changes);
    PERFORM pg_notify('dbcode', p_workspace || ' ' || (result ->> 'seq'));
    RETURN result;
END
$fn$;

-- p_batch: [{"agent", "message", "changes"}]. Returns one entry per changeset, in order:
-- {"seq", "revisions"} or {"error": SQLSTATE, "message", "detail"}.
CREATE FUNCTION dbcode_commit_many(p_workspace text, p_batch jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    ws      bigint := dbcode_workspace_id(p_workspace);
    item    jsonb;
    result  jsonb;
    results jsonb := '[]';
    last    bigint;
    e_state text;
    e_msg   text;
    e_det   text;
BEGIN
    -- Every path of the batch, locked before any workspace row lock (as dbcode_commit does).
    PERFORM dbcode_lock_paths(ws, (
        SELECT coalesce(array_agg(DISTINCT x), '{}') FROM jsonb_array_elements(p_batch) b,
            unnest(dbcode_changeset_paths(CASE WHEN jsonb_typeof(b -> 'changes') = 'array'
                                               THEN b -> 'changes' ELSE '[]' END)) x
         WHERE x IS NOT NULL));
    FOR item IN SELECT value FROM jsonb_array_elements(p_batch) LOOP
        BEGIN
            result := dbcode_apply(ws, item ->> 'agent', item ->> 'message', item -> 'changes');
            last := (result ->> 'seq')::bigint;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT,
                e_det = PG_EXCEPTION_DETAIL;
            result := jsonb_build_object('error', e_state, 'message', e_msg, 'detail', e_det);
        END;
        results := results || jsonb_build_array(result);
    END LOOP;
    IF last IS NOT NULL THEN
        PERFORM pg_notify('dbcode', p_workspace || ' ' || last);
    END IF;
    RETURN results;
END
$fn$;
"""

# v3: the commonest changeset, one file written, in one function with plain parameters: no
# JSON to build and parse around the text, no nested calls (measured: 0.30 -> 0.23 ms of
# execution per commit). Same effects, locks (file row, then workspace row), errors and result
# as dbcode_commit with one write.
_V3 = r"""
CREATE FUNCTION dbcode_write(p_workspace text, p_agent text, p_message text,
                             p_path text, p_base integer, p_text text)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    ws      bigint;
    s       bigint;
    cur_rev integer;
    cur_del boolean;
    knd     text;
BEGIN
    SELECT id INTO ws FROM dbcode_workspace WHERE name = p_workspace;
    IF ws IS NULL THEN
        ws := dbcode_workspace_id(p_workspace);
    END IF;
    SELECT revision, deleted INTO cur_rev, cur_del
        FROM dbcode_file WHERE workspace_id = ws AND path = p_path FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO dbcode_file (workspace_id, path, revision, deleted)
            VALUES (ws, p_path, 0, true) ON CONFLICT DO NOTHING;
        SELECT revision, deleted INTO cur_rev, cur_del
            FROM dbcode_file WHERE workspace_id = ws AND path = p_path FOR UPDATE;
    END IF;
    IF p_base IS NOT NULL AND p_base <> (CASE WHEN cur_del THEN 0 ELSE cur_rev END) THEN
        RAISE EXCEPTION 'conflict on %', p_path USING ERRCODE = 'DB409',
            DETAIL = jsonb_build_object('path', p_path,
                                        'current', CASE WHEN cur_del THEN 0 ELSE cur_rev END)::text;
    END IF;
    knd := CASE WHEN cur_del THEN 'create' ELSE 'update' END;
    UPDATE dbcode_workspace SET head_seq = head_seq + 1 WHERE id = ws RETURNING head_seq INTO s;
    INSERT INTO dbcode_changeset (workspace_id, seq, agent, message)
        VALUES (ws, s, p_agent, p_message);
    INSERT INTO dbcode_revision (workspace_id, path, revision, seq, kind, content, size, sha)
        VALUES (ws, p_path, cur_rev + 1, s, knd, p_text, octet_length(p_text), md5(p_text));
    UPDATE dbcode_file SET revision = cur_rev + 1, deleted = false
        WHERE workspace_id = ws AND path = p_path;
    PERFORM pg_notify('dbcode', p_workspace || ' ' || s);
    RETURN jsonb_build_object('seq', s, 'revisions', jsonb_build_object(p_path, cur_rev + 1),
        'time', now(),
        'files', jsonb_build_array(jsonb_build_array(p_path, cur_rev + 1, knd, NULL)));
END
$fn$;
"""

# v4: history that grows with the change, and changeset metadata. Instant on any size of
# history (two nullable columns, no rewrite, no index build): the conversion of existing full
# texts into deltas is not a schema step but the store's compaction (store/history.py), run in
# short per-path transactions by every process that commits and by ``dbcode compact``.
#
# dbcode_revision.delta: NULL for a full text or a deletion; else the revision as a delta
# against revision + 1 of the same path (JSON edits, store/history.py), ``content`` NULL.
# dbcode_revision.packed: an old full text (each K-th revision) zlib-compressed by the store
# (``content`` NULL; zlib packs source code about twice as tight as TOAST's pglz), stored as is
# (STORAGE EXTERNAL: no second compression). The current revision of a file is always plain
# ``content``, so reads of current texts, the feed, renames and imports are as before.
# Each commit's compaction leaves the superseded full text dead in the TOAST table: vacuum the
# TOAST table as soon as 1,000 chunks (~2 MB) are dead, not after 20% of it, so that the space
# is reused within autovacuum's naptime and the table grows with the deltas, not the texts.
# dbcode_changeset.meta: the changeset's metadata (a small JSON object, or NULL).
# dbcode_commit_many takes it per changeset ("meta"); the other commit functions are unchanged
# (a changeset with meta goes through dbcode_commit_many).
_V4 = r"""
ALTER TABLE dbcode_revision ADD COLUMN delta text, ADD COLUMN packed bytea;
ALTER TABLE dbcode_revision ALTER COLUMN packed SET STORAGE EXTERNAL;
ALTER TABLE dbcode_revision SET (toast.autovacuum_vacuum_scale_factor = 0,
                                 toast.autovacuum_vacuum_threshold = 1000);
ALTER TABLE dbcode_changeset ADD COLUMN meta jsonb;

CREATE OR REPLACE FUNCTION dbcode_commit_many(p_workspace text, p_batch jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    ws      bigint := dbcode_workspace_id(p_workspace);
    item    jsonb;
    result  jsonb;
    results jsonb := '[]';
    last    bigint;
    e_state text;
    e_msg   text;
    e_det   text;
BEGIN
    PERFORM dbcode_lock_paths(ws, (
        SELECT coalesce(array_agg(DISTINCT x), '{}') FROM jsonb_array_elements(p_batch) b,
            unnest(dbcode_changeset_paths(CASE WHEN jsonb_typeof(b -> 'changes') = 'array'
                                               THEN b -> 'changes' ELSE '[]' END)) x
         WHERE x IS NOT NULL));
    FOR item IN SELECT value FROM jsonb_array_elements(p_batch) LOOP
        BEGIN
            result := dbcode_apply(ws, item ->> 'agent', item ->> 'message', item -> 'changes');
            IF jsonb_typeof(item -> 'meta') = 'object' THEN
                UPDATE dbcode_changeset SET meta = item -> 'meta'
                    WHERE workspace_id = ws AND seq = (result ->> 'seq')::bigint;
            END IF;
            last := (result ->> 'seq')::bigint;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT,
                e_det = PG_EXCEPTION_DETAIL;
            result := jsonb_build_object('error', e_state, 'message', e_msg, 'detail', e_det);
        END;
        results := results || jsonb_build_array(result);
    END LOOP;
    IF last IS NOT NULL THEN
        PERFORM pg_notify('dbcode', p_workspace || ' ' || last);
    END IF;
    RETURN results;
END
$fn$;
"""

# v5: review threads, claims, sessions and presence (SPEC.md, Review and Coordination).
#
# Threads are anchored to [start_off, end_off) of revision anchor_rev of their file, in code
# points. Commits never touch them: a reader moves them forward through the diffs of the later
# revisions (store/review.py, text/anchors.py) and stores the result under compare-and-swap on
# (anchor_rev, path), so whoever moves a thread first records its 'outdated' event, once.
# Review events have their own gap-free, commit-ordered counter per workspace
# (dbcode_review_head, same argument as changesets' seq) and NOTIFY on channel dbcode_review.
#
# Claims are few and short-lived, and must be enforced inside the committing transaction: a
# statement trigger on dbcode_revision checks every committed revision (dbcode_commit,
# dbcode_commit_many, dbcode_write and import alike) against the live claims of its path, refuses
# (DB423) a change by another agent inside an exclusive claim, records warnings for
# non-exclusive ones in the transaction-local setting dbcode.claim_warnings, and moves the
# claims' ranges with the change, so a claim's offsets always refer to the file's current
# revision. What a change touches is the stretch between the texts' common prefix and suffix;
# when that stretch spans a claim (changes above and below it), the claim is untouched if its
# text is still in the new text, and moves there. All of this runs only for a path that has
# live claims: for the others the trigger costs one index probe. A claim and a commit of its
# file serialise on the dbcode_file row lock.
#
# A session belongs to a holder (one per process); the holder is alive while its connection
# holds the advisory lock (HOLDER_LOCK_CLASS, holder id): PostgreSQL drops it when the process
# dies, even by SIGKILL, and with it every claim and presence row of its sessions.
_V5 = r"""
CREATE TABLE dbcode_thread (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES dbcode_workspace (id),
    path         text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('note', 'suggestion', 'blocking')),
    replacement  text,
    state        text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'resolved')),
    outdated     boolean NOT NULL DEFAULT false,
    anchor_rev   integer NOT NULL,
    start_off    integer NOT NULL,
    end_off      integer NOT NULL,
    created_rev  integer NOT NULL,
    agent        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (0 <= start_off AND start_off <= end_off)
);
CREATE INDEX dbcode_thread_file ON dbcode_thread (workspace_id, path, id);

CREATE TABLE dbcode_comment (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_id  bigint NOT NULL REFERENCES dbcode_thread (id),
    agent      text NOT NULL,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dbcode_comment_thread ON dbcode_comment (thread_id, id);

CREATE TABLE dbcode_review_head (
    workspace_id bigint PRIMARY KEY REFERENCES dbcode_workspace (id),
    head         bigint NOT NULL
);

CREATE TABLE dbcode_review_event (
    workspace_id bigint NOT NULL REFERENCES dbcode_workspace (id),
    rseq         bigint NOT NULL,
    thread_id    bigint NOT NULL REFERENCES dbcode_thread (id),
    event        text NOT NULL
                 CHECK (event IN ('created', 'replied', 'resolved', 'reopened', 'outdated')),
    comment_id   bigint REFERENCES dbcode_comment (id),
    agent        text NOT NULL,
    at_seq       bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, rseq)
);

-- Append one review event. Call it last in the transaction: the review head row lock it
-- takes is held until COMMIT (events become visible in rseq order, as changesets do in seq).
CREATE FUNCTION dbcode_review_event_add(ws bigint, p_thread bigint, p_event text,
                                        p_comment bigint, p_agent text)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    r bigint;
BEGIN
    INSERT INTO dbcode_review_head AS h (workspace_id, head) VALUES (ws, 1)
        ON CONFLICT (workspace_id) DO UPDATE SET head = h.head + 1
        RETURNING head INTO r;
    INSERT INTO dbcode_review_event (workspace_id, rseq, thread_id, event, comment_id, agent,
                                     at_seq)
        VALUES (ws, r, p_thread, p_event, p_comment, p_agent,
                (SELECT head_seq FROM dbcode_workspace WHERE id = ws));
    PERFORM pg_notify('dbcode_review',
                      (SELECT name FROM dbcode_workspace WHERE id = ws) || ' ' || r);
    RETURN r;
END
$fn$;

-- Open a thread with its first comment, in one call. p_open_max: the most open threads a file
-- may have (DB400 beyond: a bound against runaway agents, not an exact quota under races).
CREATE FUNCTION dbcode_thread_open(ws bigint, p_path text, p_kind text, p_replacement text,
                                   p_rev integer, p_start integer, p_end integer, p_agent text,
                                   p_body text, p_open_max integer)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    t bigint;
    c bigint;
BEGIN
    IF (SELECT count(*) FROM dbcode_thread WHERE workspace_id = ws AND path = p_path
          AND state = 'open') >= p_open_max THEN
        RAISE EXCEPTION '% has % open threads, the most a file may have; resolve some first',
            p_path, p_open_max USING ERRCODE = 'DB400';
    END IF;
    INSERT INTO dbcode_thread (workspace_id, path, kind, replacement, anchor_rev, start_off,
                               end_off, created_rev, agent)
        VALUES (ws, p_path, p_kind, p_replacement, p_rev, p_start, p_end, p_rev, p_agent)
        RETURNING id INTO t;
    INSERT INTO dbcode_comment (thread_id, agent, body) VALUES (t, p_agent, p_body)
        RETURNING id INTO c;
    PERFORM dbcode_review_event_add(ws, t, 'created', c, p_agent);
    RETURN jsonb_build_object('thread', t, 'comment', c);
END
$fn$;

-- Moves computed by a reader (store/review.py): p_moves [{id, from_rev, from_path, rev, path,
-- start, end, outdated}]. Each applies only if the thread is still where the reader found it;
-- a thread that becomes outdated by it gets its event (agent: who made the change).
CREATE FUNCTION dbcode_threads_move(ws bigint, p_moves jsonb) RETURNS integer
LANGUAGE plpgsql AS $fn$
DECLARE
    moved integer := 0;
    m     record;
BEGIN
    FOR m IN
        WITH u AS (
            UPDATE dbcode_thread t
               SET anchor_rev = x.rev, path = x.path, start_off = x.start, end_off = x."end",
                   outdated = t.outdated OR x.outdated
              FROM jsonb_to_recordset(p_moves) AS x (id bigint, from_rev integer,
                   from_path text, rev integer, path text, start integer, "end" integer,
                   outdated boolean, was_outdated boolean, agent text)
             WHERE t.id = x.id AND t.workspace_id = ws AND t.anchor_rev = x.from_rev
               AND t.path = x.from_path AND (x.rev <> x.from_rev OR x.path <> x.from_path)
            RETURNING t.id, x.outdated AND NOT x.was_outdated AS newly, x.agent
        )
        SELECT * FROM u ORDER BY id
    LOOP
        moved := moved + 1;
        IF m.newly THEN
            PERFORM dbcode_review_event_add(ws, m.id, 'outdated', NULL, m.agent);
        END IF;
    END LOOP;
    RETURN moved;
END
$fn$;

CREATE SEQUENCE dbcode_holder_seq;

CREATE TABLE dbcode_session (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    holder     bigint NOT NULL,
    agent      text NOT NULL,
    mode       text,
    started_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dbcode_session_holder ON dbcode_session (holder);

CREATE TABLE dbcode_claim (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id bigint NOT NULL REFERENCES dbcode_workspace (id),
    path         text NOT NULL,
    whole        boolean NOT NULL,
    start_off    integer NOT NULL DEFAULT 0,
    end_off      integer NOT NULL DEFAULT 0,
    revision     integer NOT NULL,
    agent        text NOT NULL,
    note         text NOT NULL DEFAULT '',
    exclusive    boolean NOT NULL,
    session_id   bigint REFERENCES dbcode_session (id) ON DELETE CASCADE,
    since        timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX dbcode_claim_file ON dbcode_claim (workspace_id, path);
CREATE INDEX dbcode_claim_agent ON dbcode_claim (workspace_id, agent);

CREATE TABLE dbcode_presence (
    session_id   bigint NOT NULL REFERENCES dbcode_session (id) ON DELETE CASCADE,
    workspace_id bigint NOT NULL REFERENCES dbcode_workspace (id),
    path         text NOT NULL,
    since        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, workspace_id, path)
);
CREATE INDEX dbcode_presence_file ON dbcode_presence (workspace_id, path);

-- Is the holder (a process) alive? Its connection holds the exclusive advisory lock
-- (1684234099 = 'dbcs', id); if a shared try-lock succeeds, nobody holds it. A NULL holder (a
-- claim made by the CLI, which outlives its process by design) counts as alive.
CREATE FUNCTION dbcode_holder_alive(p_holder bigint) RETURNS boolean
LANGUAGE sql VOLATILE AS $fn$
    SELECT p_holder IS NULL
        OR NOT pg_try_advisory_xact_lock_shared(1684234099, (p_holder % 2147483647)::integer)
$fn$;

CREATE FUNCTION dbcode_claim_live(c dbcode_claim) RETURNS boolean
LANGUAGE sql VOLATILE AS $fn$
    SELECT c.expires_at > now() AND (c.session_id IS NULL OR dbcode_holder_alive(
        (SELECT s.holder FROM dbcode_session s WHERE s.id = c.session_id)))
$fn$;

CREATE FUNCTION dbcode_claim_json(c dbcode_claim) RETURNS jsonb
LANGUAGE sql STABLE AS $fn$
    SELECT jsonb_build_object('id', c.id, 'agent', c.agent, 'path', c.path, 'note', c.note,
        'exclusive', c.exclusive, 'whole', c.whole, 'start', c.start_off, 'end', c.end_off,
        'revision', c.revision, 'since', c.since, 'expiresAt', c.expires_at)
$fn$;

-- Common prefix and suffix (in code points) of two texts, for a file that has live claims.
-- On bytes: chunks that double in size are compared from each end (bytea substrings are O(1)
-- to reach, text ones walk every character), then the last chunk is bisected; the ends are
-- moved back to character boundaries. O(length of the common parts).
CREATE FUNCTION dbcode_common_ends(a text, b text, OUT pre integer, OUT suf integer)
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    ba  bytea := convert_to(a, 'UTF8');
    bb  bytea := convert_to(b, 'UTF8');
    la  integer := length(ba);
    lb  integer := length(bb);
    lim integer := least(la, lb);
    lo  integer := 0;   -- bytes known equal
    k   integer := 64;
    hi  integer;
    mid integer;
BEGIN
    LOOP  -- prefix: gallop
        hi := least(lim, lo + k);
        EXIT WHEN hi = lo
            OR substring(ba FROM lo + 1 FOR hi - lo) <> substring(bb FROM lo + 1 FOR hi - lo);
        lo := hi;
        k := k * 2;
    END LOOP;
    WHILE hi - lo > 1 LOOP  -- the first difference is in (lo, hi]: bisect
        mid := (lo + hi) / 2;
        IF substring(ba FROM lo + 1 FOR mid - lo) = substring(bb FROM lo + 1 FOR mid - lo) THEN
            lo := mid;
        ELSE
            hi := mid;
        END IF;
    END LOOP;
    IF hi = lo + 1 AND hi <= lim AND get_byte(ba, lo) = get_byte(bb, lo) THEN
        lo := hi;
    END IF;
    WHILE lo > 0 AND lo < la AND (get_byte(ba, lo) & 192) = 128 LOOP
        lo := lo - 1;  -- not inside a character
    END LOOP;
    pre := length(convert_from(substring(ba FROM 1 FOR lo), 'UTF8'));
    lim := lim - lo;
    hi := 0;
    k := 64;
    mid := 0;
    -- suffix: bytes equal from the end, at most lim
    DECLARE
        s_lo integer := 0;
        s_hi integer;
    BEGIN
        LOOP
            s_hi := least(lim, s_lo + k);
            EXIT WHEN s_hi = s_lo
                OR substring(ba FROM la - s_hi + 1 FOR s_hi - s_lo)
                   <> substring(bb FROM lb - s_hi + 1 FOR s_hi - s_lo);
            s_lo := s_hi;
            k := k * 2;
        END LOOP;
        WHILE s_hi - s_lo > 1 LOOP
            mid := (s_lo + s_hi) / 2;
            IF substring(ba FROM la - mid + 1 FOR mid - s_lo)
               = substring(bb FROM lb - mid + 1 FOR mid - s_lo) THEN
                s_lo := mid;
            ELSE
                s_hi := mid;
            END IF;
        END LOOP;
        IF s_hi = s_lo + 1 AND s_hi <= lim
           AND get_byte(ba, la - s_hi) = get_byte(bb, lb - s_hi) THEN
            s_lo := s_hi;
        END IF;
        WHILE s_lo > 0 AND (get_byte(ba, la - s_lo) & 192) = 128 LOOP
            s_lo := s_lo - 1;
        END LOOP;
        suf := length(convert_from(substring(ba FROM la - s_lo + 1), 'UTF8'));
    END;
END
$fn$;

-- The offset (0-based, code points) of the occurrence of p_needle in p_text nearest to p_near,
-- or NULL; at most CLAIM_FIND_MAX (64) occurrences are looked at.
CREATE FUNCTION dbcode_find_near(p_text text, p_needle text, p_near integer) RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
    base integer := 0;
    pos  integer;
    best integer;
    n    integer := 0;
BEGIN
    LOOP
        pos := strpos(substr(p_text, base + 1), p_needle);
        EXIT WHEN pos = 0 OR n >= 64;
        n := n + 1;
        pos := base + pos - 1;
        IF best IS NULL OR abs(pos - p_near) < abs(best - p_near) THEN
            best := pos;
        END IF;
        EXIT WHEN pos > p_near;
        base := pos + 1;
    END LOOP;
    RETURN best;
END
$fn$;

-- The claims check of every committed revision (statement trigger, transition table).
CREATE FUNCTION dbcode_claims_on_commit() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    r        record;
    cl       dbcode_claim;
    who      text;
    old_text text;
    new_text text;
    old_len  integer;
    hs       integer;  -- the changed stretch: old text [hs, he) became [hs, hs + hl)
    he       integer;
    hl       integer;
    pre      integer;
    suf      integer;
    touched  boolean;
    found    integer;
    warn     jsonb;
    warns    jsonb;
BEGIN
    FOR r IN
        SELECT n.workspace_id, n.path, n.revision, n.seq, n.kind, n.old_path, n.content
          FROM dbcode_new_revisions n
         WHERE n.kind <> 'rename' AND EXISTS (
               SELECT 1 FROM dbcode_claim c WHERE c.workspace_id = n.workspace_id
                  AND c.path = n.path AND c.expires_at > now())
         ORDER BY n.path
    LOOP
        SELECT agent INTO who FROM dbcode_changeset
         WHERE workspace_id = r.workspace_id AND seq = r.seq;
        hs := 0; he := 2147483647; hl := 0;
        IF r.kind = 'update' THEN
            SELECT content INTO old_text FROM dbcode_revision
             WHERE workspace_id = r.workspace_id AND path = r.path
               AND revision = r.revision - 1;
            IF old_text IS NOT NULL THEN
                new_text := r.content;
                old_len := length(old_text);
                SELECT e.pre, e.suf INTO pre, suf FROM dbcode_common_ends(old_text, new_text) e;
                hs := pre;
                he := old_len - suf;
                hl := length(new_text) - suf - hs;
            END IF;
        END IF;
        warn := '[]';
        FOR cl IN
            SELECT * FROM dbcode_claim x
             WHERE x.workspace_id = r.workspace_id AND x.path = r.path
               AND dbcode_claim_live(x)
             ORDER BY x.id FOR UPDATE
        LOOP
            touched := cl.whole OR r.kind <> 'update'
                OR (hs < cl.end_off AND he > cl.start_off)
                OR (hs = he AND cl.start_off < hs AND hs < cl.end_off);
            found := NULL;
            IF touched AND r.kind = 'update' AND NOT cl.whole AND cl.end_off > cl.start_off THEN
                -- One stretch spans changes above and below the claim: it is untouched if its
                -- text is still there (the occurrence nearest to where it would be).
                found := dbcode_find_near(new_text,
                    substr(old_text, cl.start_off + 1, cl.end_off - cl.start_off),
                    cl.start_off + CASE WHEN hs < cl.start_off THEN hl - (he - hs) ELSE 0 END);
                touched := found IS NULL;
            END IF;
            IF touched AND cl.agent IS DISTINCT FROM who THEN
                IF cl.exclusive THEN
                    RAISE EXCEPTION 'claimed by %: %', cl.agent, cl.note USING ERRCODE = 'DB423',
                        DETAIL = jsonb_build_object('path', r.path,
                                                   'claim', dbcode_claim_json(cl))::text;
                END IF;
                warn := warn || jsonb_build_array(dbcode_claim_json(cl));
            END IF;
            IF found IS NOT NULL THEN
                UPDATE dbcode_claim SET start_off = found,
                    end_off = found + cl.end_off - cl.start_off, revision = r.revision
                 WHERE id = cl.id;
            ELSIF r.kind = 'update' AND NOT cl.whole THEN
                IF he <= cl.start_off THEN
                    UPDATE dbcode_claim SET start_off = start_off + hl - (he - hs),
                        end_off = end_off + hl - (he - hs), revision = r.revision
                     WHERE id = cl.id;
                ELSIF hs >= cl.end_off THEN
                    UPDATE dbcode_claim SET revision = r.revision WHERE id = cl.id;
                ELSE
                    UPDATE dbcode_claim
                       SET start_off = least(cl.start_off, hs),
                           end_off = CASE WHEN he >= cl.end_off THEN hs + hl
                                          ELSE cl.end_off + hl - (he - hs) END,
                           revision = r.revision
                     WHERE id = cl.id;
                END IF;
            ELSIF r.kind = 'moved' THEN
                UPDATE dbcode_claim SET path = r.old_path WHERE id = cl.id;
            ELSIF r.kind = 'delete' THEN
                DELETE FROM dbcode_claim WHERE id = cl.id;
            ELSE
                UPDATE dbcode_claim SET revision = r.revision WHERE id = cl.id;
            END IF;
        END LOOP;
        IF jsonb_array_length(warn) > 0 THEN
            warns := coalesce(nullif(current_setting('dbcode.claim_warnings', true), ''),
                              '{}')::jsonb;
            PERFORM set_config('dbcode.claim_warnings', (warns || jsonb_build_object(
                r.seq::text, coalesce(warns -> (r.seq::text), '[]') || warn))::text, true);
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER dbcode_claims_on_commit AFTER INSERT ON dbcode_revision
    REFERENCING NEW TABLE AS dbcode_new_revisions
    FOR EACH STATEMENT EXECUTE FUNCTION dbcode_claims_on_commit();

-- Make or renew (p_id) a claim. The file row lock serialises it with commits of the file and
-- with other claims on it: of two overlapping exclusive claims made at once, one waits for the
-- other and then sees it. p_rev: the revision the range was computed on (DB409 if the file
-- moved on meanwhile: the caller recomputes). Errors: DB404 (file, claim), DB423 (overlaps
-- another agent's exclusive claim), DB400 (too many claims).
CREATE FUNCTION dbcode_claim_make(p_workspace text, p_path text, p_rev integer,
                                  p_start integer, p_end integer, p_note text,
                                  p_exclusive boolean, p_ttl_s double precision, p_agent text,
                                  p_session bigint, p_id bigint, p_claims_max integer)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    ws      bigint;
    cur_rev integer;
    cur_del boolean;
    c       dbcode_claim;
    made    dbcode_claim;
    p_whole boolean := p_start IS NULL;
BEGIN
    SELECT id INTO ws FROM dbcode_workspace WHERE name = p_workspace;
    IF ws IS NULL THEN
        RAISE EXCEPTION 'unknown workspace %', p_workspace USING ERRCODE = 'DB404';
    END IF;
    SELECT revision, deleted INTO cur_rev, cur_del FROM dbcode_file
     WHERE workspace_id = ws AND path = p_path FOR UPDATE;
    IF NOT FOUND OR cur_del THEN
        RAISE EXCEPTION 'no such file % in workspace %', p_path, p_workspace
            USING ERRCODE = 'DB404';
    END IF;
    IF p_rev IS NOT NULL AND p_rev <> cur_rev THEN
        RAISE EXCEPTION 'file moved on' USING ERRCODE = 'DB409',
            DETAIL = jsonb_build_object('path', p_path, 'current', cur_rev)::text;
    END IF;
    DELETE FROM dbcode_claim WHERE workspace_id = ws AND path = p_path AND expires_at <= now()
        AND id IS DISTINCT FROM p_id;
    FOR c IN
        SELECT * FROM dbcode_claim x
         WHERE x.workspace_id = ws AND x.path = p_path AND x.exclusive
           AND x.agent <> p_agent AND x.id IS DISTINCT FROM p_id AND dbcode_claim_live(x)
           AND (p_whole OR x.whole OR (x.start_off < p_end AND p_start < x.end_off)
                OR (p_start = p_end AND x.start_off <= p_start AND p_start < x.end_off))
         ORDER BY x.id
         LIMIT 1
    LOOP
        RAISE EXCEPTION 'claimed by %: %', c.agent, c.note USING ERRCODE = 'DB423',
            DETAIL = jsonb_build_object('path', p_path, 'claim', dbcode_claim_json(c))::text;
    END LOOP;
    IF p_id IS NOT NULL THEN
        UPDATE dbcode_claim SET whole = p_start IS NULL,
               start_off = coalesce(p_start, 0), end_off = coalesce(p_end, 0),
               revision = cur_rev, note = p_note, exclusive = p_exclusive,
               expires_at = now() + make_interval(secs => p_ttl_s),
               session_id = coalesce(p_session, session_id)
         WHERE id = p_id AND workspace_id = ws AND path = p_path AND agent = p_agent
         RETURNING * INTO made;
        IF made.id IS NULL THEN
            RAISE EXCEPTION 'no claim % of % on % in workspace % (released or expired?)',
                p_id, p_agent, p_path, p_workspace USING ERRCODE = 'DB404';
        END IF;
    ELSE
        IF (SELECT count(*) FROM dbcode_claim x WHERE x.workspace_id = ws
              AND x.agent = p_agent AND x.expires_at > now()) >= p_claims_max THEN
            RAISE EXCEPTION '% holds % claims in %, the most an agent may hold; release some',
                p_agent, p_claims_max, p_workspace USING ERRCODE = 'DB400';
        END IF;
        INSERT INTO dbcode_claim (workspace_id, path, whole, start_off, end_off, revision, agent,
                                  note, exclusive, session_id, expires_at)
            VALUES (ws, p_path, p_whole, coalesce(p_start, 0), coalesce(p_end, 0), cur_rev,
                    p_agent, p_note, p_exclusive, p_session,
                    now() + make_interval(secs => p_ttl_s))
            RETURNING * INTO made;
    END IF;
    PERFORM pg_notify('dbcode_coord', p_workspace);
    RETURN dbcode_claim_json(made);
END
$fn$;
"""

# v6: identity and access (store/access.py). Open until the first agent exists. Agents' tokens
# are kept as HMAC-SHA256 under a per-database secret in dbcode_access, a table agents' roles
# cannot read. Every product table gets row-level security; the policies call SECURITY DEFINER
# helpers keyed on dbcode_me() (current_user, an agent's role; or the agent the batch role
# acts for). The table owner bypasses RLS (not FORCEd): the server's shared reads (the hub)
# run as owner and are filtered per session in Python. Roles are made at `dbcode agent add`,
# not here: a database whose owner lacks CREATEROLE still migrates and stays open.
_V6 = r"""
CREATE TABLE dbcode_access (
    one         boolean PRIMARY KEY DEFAULT true CHECK (one),
    role_prefix text NOT NULL,
    secret      bytea,
    gen         bigint NOT NULL DEFAULT 0
);
INSERT INTO dbcode_access (role_prefix)
    VALUES ('dbc' || substr(md5(random()::text || clock_timestamp()::text), 1, 10) || '_');

CREATE TABLE dbcode_agent (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    role        text NOT NULL UNIQUE,
    token_hash  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    rotated_at  timestamptz
);

-- workspace '*': every workspace. prefix '': every path; else a folder prefix ending in '/'
-- or one exact path.
CREATE TABLE dbcode_grant (
    agent_id  bigint NOT NULL REFERENCES dbcode_agent (id) ON DELETE CASCADE,
    workspace text NOT NULL,
    prefix    text NOT NULL DEFAULT '',
    level     text NOT NULL CHECK (level IN ('read', 'write', 'admin')),
    PRIMARY KEY (agent_id, workspace, prefix)
);

-- Refused attempts. agent NULL: unknown (no or bad token).
CREATE TABLE dbcode_audit (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agent     text,
    action    text NOT NULL,
    workspace text,
    path      text,
    transport text NOT NULL DEFAULT '?',
    peer      text NOT NULL DEFAULT '?',
    reason    text NOT NULL DEFAULT '',
    at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dbcode_audit_ws ON dbcode_audit (workspace, id);

-- The level (0 none, 1 read, 2 write, 3 admin) the agent of role p_role has on a path of a
-- workspace (p_path NULL: its best level anywhere in the workspace). The policies pass
-- dbcode_me(): inside a SECURITY DEFINER function current_user is the definer.
-- Whose grants: p_user's (current_user, passed by dbcode_me); when that is the database's
-- batch role (<prefix>batch: only the owner can become it), the agent role named by the
-- transaction-local setting dbcode.actor (dbcode_commit_many sets it per changeset of a batch
-- of several agents: no role switch, so no statement is planned again). Between changesets
-- (dbcode.actor empty) the batch role acts as the owner: it locks the batch's file rows.
CREATE FUNCTION dbcode_actor(p_user name, p_actor text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER AS $fn$
BEGIN
    IF p_user = (SELECT role_prefix || 'batch' FROM dbcode_access) THEN
        RETURN coalesce(p_actor, '');
    END IF;
    RETURN p_user;
END
$fn$;

-- The role whose grants apply (SECURITY INVOKER, inlined: current_user is the caller's).
CREATE FUNCTION dbcode_me() RETURNS text LANGUAGE sql STABLE AS $fn$
    SELECT dbcode_actor(current_user, current_setting('dbcode.actor', true))
$fn$;

CREATE FUNCTION dbcode_acl(p_role text, p_ws text, p_path text) RETURNS integer
LANGUAGE plpgsql STABLE SECURITY DEFINER AS $fn$
BEGIN
    IF p_role = '' THEN  -- the batch role between changesets (locking the batch's rows)
        RETURN 3;
    END IF;
    RETURN (
        SELECT coalesce(max(CASE g.level WHEN 'read' THEN 1 WHEN 'write' THEN 2 ELSE 3 END), 0)
          FROM dbcode_agent a JOIN dbcode_grant g ON g.agent_id = a.id
         WHERE a.role = p_role
           AND (g.workspace = '*' OR g.workspace = p_ws)
           AND (p_path IS NULL OR g.prefix = '' OR g.prefix = p_path
                OR (right(g.prefix, 1) = '/' AND left(p_path, length(g.prefix)) = g.prefix)));
END
$fn$;

CREATE FUNCTION dbcode_acl_id(p_role text, p_ws bigint, p_path text) RETURNS integer
LANGUAGE plpgsql STABLE SECURITY DEFINER AS $fn$
BEGIN
    IF p_role = '' THEN  -- the batch role between changesets (locking the batch's rows)
        RETURN 3;
    END IF;
    RETURN (
        SELECT coalesce(max(CASE g.level WHEN 'read' THEN 1 WHEN 'write' THEN 2 ELSE 3 END), 0)
          FROM dbcode_agent a JOIN dbcode_grant g ON g.agent_id = a.id
          JOIN dbcode_workspace w ON w.id = p_ws
         WHERE a.role = p_role
           AND (g.workspace = '*' OR g.workspace = w.name)
           AND (p_path IS NULL OR g.prefix = '' OR g.prefix = p_path
                OR (right(g.prefix, 1) = '/' AND left(p_path, length(g.prefix)) = g.prefix)));
END
$fn$;

CREATE FUNCTION dbcode_acl_agent(p_role text) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER AS $fn$
BEGIN
    RETURN (SELECT name FROM dbcode_agent WHERE role = p_role);
END
$fn$;

-- plpgsql: their plans are cached per connection (an SQL function that cannot be inlined is
-- planned again in every statement). search_path pinned to this schema with pg_temp last: a
-- SECURITY DEFINER function must not find a caller's temporary table first.
DO $do$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['dbcode_actor(name, text)', 'dbcode_acl(text, text, text)',
                             'dbcode_acl_id(text, bigint, text)', 'dbcode_acl_agent(text)'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, current_schema());
    END LOOP;
END
$do$;
CREATE INDEX dbcode_agent_role ON dbcode_agent (role);

ALTER TABLE dbcode_workspace ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON dbcode_workspace FOR SELECT USING (dbcode_acl(dbcode_me(), name, NULL) >= 1);
CREATE POLICY u ON dbcode_workspace FOR UPDATE USING (dbcode_acl(dbcode_me(), name, NULL) >= 2);
CREATE POLICY i ON dbcode_workspace FOR INSERT
    WITH CHECK (dbcode_acl(dbcode_me(), name, NULL) >= 2);

ALTER TABLE dbcode_file ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON dbcode_file FOR SELECT
    USING (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 1);
CREATE POLICY i ON dbcode_file FOR INSERT
    WITH CHECK (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 2);
CREATE POLICY u ON dbcode_file FOR UPDATE
    USING (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 2);

ALTER TABLE dbcode_revision ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON dbcode_revision FOR SELECT
    USING (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 1);
CREATE POLICY i ON dbcode_revision FOR INSERT
    WITH CHECK (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 2);

-- A changeset is seen by who can read one of its paths (its message and agent with them).
ALTER TABLE dbcode_changeset ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON dbcode_changeset FOR SELECT USING (EXISTS (
    SELECT 1 FROM dbcode_revision r
     WHERE r.workspace_id = dbcode_changeset.workspace_id AND r.seq = dbcode_changeset.seq));
CREATE POLICY i ON dbcode_changeset FOR INSERT
    WITH CHECK (dbcode_acl_id(dbcode_me(), workspace_id, NULL) >= 2
                AND agent = dbcode_acl_agent(dbcode_me()));

CREATE POLICY u ON dbcode_changeset FOR UPDATE
    USING (agent = dbcode_acl_agent(dbcode_me()));

-- A batch of changesets of several agents runs as the batch role, each changeset with
-- dbcode.actor set to its agent's role (p_batch items' "role"): row-level security applies to
-- each changeset alone, with its agent's grants, and one refused fails alone. (Switching the
-- role itself per changeset makes PostgreSQL plan every statement again: measured 2x slower.)
CREATE OR REPLACE FUNCTION dbcode_commit_many(p_workspace text, p_batch jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $fn$
DECLARE
    ws      bigint := dbcode_workspace_id(p_workspace);
    item    jsonb;
    result  jsonb;
    results jsonb := '[]';
    last    bigint;
    e_state text;
    e_msg   text;
    e_det   text;
BEGIN
    PERFORM dbcode_lock_paths(ws, (
        SELECT coalesce(array_agg(DISTINCT x), '{}') FROM jsonb_array_elements(p_batch) b,
            unnest(dbcode_changeset_paths(CASE WHEN jsonb_typeof(b -> 'changes') = 'array'
                                               THEN b -> 'changes' ELSE '[]' END)) x
         WHERE x IS NOT NULL));
    FOR item IN SELECT value FROM jsonb_array_elements(p_batch) LOOP
        BEGIN
            IF item ? 'role' THEN
                PERFORM set_config('dbcode.actor', item ->> 'role', true);
            END IF;
            result := dbcode_apply(ws, item ->> 'agent', item ->> 'message', item -> 'changes');
            IF jsonb_typeof(item -> 'meta') = 'object' THEN
                UPDATE dbcode_changeset SET meta = item -> 'meta'
                    WHERE workspace_id = ws AND seq = (result ->> 'seq')::bigint;
            END IF;
            last := (result ->> 'seq')::bigint;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT,
                e_det = PG_EXCEPTION_DETAIL;
            result := jsonb_build_object('error', e_state, 'message', e_msg, 'detail', e_det);
        END;
        results := results || jsonb_build_array(result);
    END LOOP;
    IF last IS NOT NULL THEN
        PERFORM pg_notify('dbcode', p_workspace || ' ' || last);
    END IF;
    RETURN results;
END
$fn$;

ALTER TABLE dbcode_thread ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON dbcode_thread FOR SELECT
    USING (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 1);
CREATE POLICY i ON dbcode_thread FOR INSERT
    WITH CHECK (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 1);
CREATE POLICY u ON dbcode_thread FOR UPDATE
    USING (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 1);

ALTER TABLE dbcode_comment ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON dbcode_comment FOR SELECT
    USING (EXISTS (SELECT 1 FROM dbcode_thread t WHERE t.id = thread_id));
CREATE POLICY i ON dbcode_comment FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM dbcode_thread t WHERE t.id = thread_id));

ALTER TABLE dbcode_review_event ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON dbcode_review_event FOR SELECT
    USING (EXISTS (SELECT 1 FROM dbcode_thread t WHERE t.id = thread_id));
CREATE POLICY i ON dbcode_review_event FOR INSERT
    WITH CHECK (EXISTS (SELECT 1 FROM dbcode_thread t WHERE t.id = thread_id));

ALTER TABLE dbcode_review_head ENABLE ROW LEVEL SECURITY;
CREATE POLICY a ON dbcode_review_head FOR ALL
    USING (dbcode_acl_id(dbcode_me(), workspace_id, NULL) >= 1);

ALTER TABLE dbcode_session ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON dbcode_session FOR SELECT USING (true);
CREATE POLICY w ON dbcode_session FOR INSERT WITH CHECK (agent = dbcode_acl_agent(dbcode_me()));
CREATE POLICY u ON dbcode_session FOR UPDATE USING (agent = dbcode_acl_agent(dbcode_me()));
CREATE POLICY d ON dbcode_session FOR DELETE USING (agent = dbcode_acl_agent(dbcode_me()));

ALTER TABLE dbcode_claim ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON dbcode_claim FOR SELECT
    USING (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 1);
CREATE POLICY i ON dbcode_claim FOR INSERT
    WITH CHECK (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 2
                AND agent = dbcode_acl_agent(dbcode_me()));
CREATE POLICY u ON dbcode_claim FOR UPDATE
    USING (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 2);
CREATE POLICY d ON dbcode_claim FOR DELETE
    USING (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 2);

ALTER TABLE dbcode_presence ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON dbcode_presence FOR SELECT
    USING (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 1);
CREATE POLICY i ON dbcode_presence FOR INSERT
    WITH CHECK (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 1);
CREATE POLICY d ON dbcode_presence FOR DELETE
    USING (dbcode_acl_id(dbcode_me(), workspace_id, path) >= 1);

ALTER TABLE dbcode_audit ENABLE ROW LEVEL SECURITY;
CREATE POLICY r ON dbcode_audit FOR SELECT USING (dbcode_acl(dbcode_me(), workspace, NULL) >= 3);
"""

MIGRATIONS: list[tuple[int, str]] = [(1, _V1), (2, _V2), (3, _V3), (4, _V4), (5, _V5), (6, _V6)]
SCHEMA_VERSION = MIGRATIONS[-1][0]


async def migrate(conn: psycopg.AsyncConnection) -> int:
    """Bring the schema up to date. Returns the number of steps applied.

    Safe to call from many processes at once: an advisory lock serialises them.
    """
    applied = 0
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS dbcode_schema_version ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT coalesce(max(version), 0) FROM dbcode_schema_version")
        row = await cur.fetchone()
        current = int(row[0]) if row else 0
        for version, ddl in MIGRATIONS:
            if version <= current:
                continue
            await conn.execute(ddl.encode())
            await conn.execute(
                "INSERT INTO dbcode_schema_version (version) VALUES (%s)", (version,)
            )
            applied += 1
    return applied
