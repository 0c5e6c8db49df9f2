-- pg_idem 0.1.1 -> 0.2.0
\echo Use "ALTER EXTENSION pg_idem UPDATE TO '0.2.0'" to load this file. \quit

-- checkpoint() without a lease renews by the holder's own lease length,
-- stored per key.  A key held under 0.1.1 was given its lease at its last
-- reserve or checkpoint, which also set updated_at: its length is exactly
-- locked_until - updated_at.
ALTER TABLE idem.keys ADD COLUMN lease interval;
UPDATE idem.keys SET lease = locked_until - updated_at WHERE locked_until IS NOT NULL;

-- A token passed with the wrong key gets its own message (keys.c,
-- raise_not_held): the token that began the key's life tells a token issued
-- before it (another key's) from a holder's that was taken over.  Unknown
-- for keys reserved under 0.1.1, which keep the takeover message.
ALTER TABLE idem.keys ADD COLUMN first_token bigint;
COMMENT ON FUNCTION idem.checkpoint(text, bigint, text, jsonb, text, interval) IS
'Record the progress of a held idempotency key for a successor, and renew its lease by the lease given, else by the holder''s own lease length';

-- >>> the outbox ring (0.2): idem.outbox becomes a partitioned table of 8
-- >>> leaves, emptied by TRUNCATE (src/sql/40_outbox.sql; keep the two in
-- >>> step).  The 0.1 table and its identity sequence are set aside, the new
-- >>> table is created as the install script creates it, the rows are copied
-- >>> with their ids, xids and timestamps, the identity continues where it
-- >>> was, and the old table goes at the end of this script (the view
-- >>> idem.consumer_lag, replaced below, still refers to it until then).
-- A publication that lists the 0.1 table (Debezium, logical replication)
-- would lose it without a word when the table is dropped below: from then
-- on no event would reach its subscribers.  Refuse, and say how to carry
-- the publication over to the ring.  A publication of all tables or of
-- the schema takes the ring in by itself, but under the leaves' names
-- unless it publishes via the partition root: warn.
DO $pub$
DECLARE
    pubs text;
BEGIN
    SELECT pg_catalog.string_agg(pg_catalog.format('"%s"', p.pubname), ', ' ORDER BY p.pubname)
      INTO pubs
      FROM pg_catalog.pg_publication_rel r
      JOIN pg_catalog.pg_publication p ON p.oid OPERATOR(pg_catalog.=) r.prpubid
     WHERE r.prrelid OPERATOR(pg_catalog.=) 'idem.outbox'::pg_catalog.regclass;
    IF pubs IS NOT NULL THEN
        RAISE EXCEPTION 'idem.outbox is listed by publication %', pubs
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'pg_idem 0.2 replaces idem.outbox by a partitioned table; the publication would silently stop publishing events.',
                  HINT = 'Run ALTER PUBLICATION ... DROP TABLE idem.outbox, update the extension, then ALTER PUBLICATION ... ADD TABLE idem.outbox and SET (publish_via_partition_root = true); see docs/outbox-storage.md.';
    END IF;
    -- (publications of a schema exist from PostgreSQL 15 on)
    EXECUTE pg_catalog.format(
        'SELECT pg_catalog.string_agg(pg_catalog.format(''"%%s"'', p.pubname), '', '' ORDER BY p.pubname)
           FROM pg_catalog.pg_publication p
          WHERE NOT p.pubviaroot AND (p.puballtables %s)',
        CASE WHEN pg_catalog.current_setting('server_version_num')::integer >= 150000 THEN
            'OR EXISTS (SELECT FROM pg_catalog.pg_publication_namespace n
                         WHERE n.pnpubid OPERATOR(pg_catalog.=) p.oid
                           AND n.pnnspid OPERATOR(pg_catalog.=) ''idem''::pg_catalog.regnamespace)'
        ELSE '' END)
      INTO pubs;
    IF pubs IS NOT NULL THEN
        RAISE WARNING 'publication % will publish the outbox''s events under the names of its partitions', pubs
            USING DETAIL = 'pg_idem 0.2 stores idem.outbox in partitions idem.outbox_0 to idem.outbox_7.',
                  HINT = 'Set publish_via_partition_root = true on the publication if its subscribers expect idem.outbox.';
    END IF;
END
$pub$;

ALTER TABLE idem.outbox RENAME TO outbox_0_1;
ALTER SEQUENCE idem.outbox_id_seq RENAME TO outbox_0_1_id_seq;
ALTER TABLE idem.outbox_0_1 RENAME CONSTRAINT outbox_pkey TO outbox_0_1_pkey;
ALTER INDEX idem.outbox_xid_id_idx RENAME TO outbox_0_1_xid_id_idx;

-- Storage that does not bloat (0.2): a ring of segments, PgQ's rotated
-- tables without a ticker.  idem.outbox is partitioned by
-- (id / 65536) % 8: run r of 65536 consecutive ids lives in leaf
-- idem.outbox_<r % 8>, and the ring holds 8 runs (524288 ids) before a
-- leaf receives its second lap.  Trimming empties a whole leaf with
-- TRUNCATE once every consumer has finished every event in it (see
-- idem_outbox_trim() in src/outbox.c): a new, empty file, whatever old
-- snapshot some session holds -- a DELETE would leave dead rows that
-- nothing can reclaim until that snapshot ends.  65536 ids per run keeps
-- the truncations (each a catalog update and a relcache invalidation that
-- every emitting backend processes once) to one per 65536 events, and 8
-- leaves keep a relay's per-window index passes few; a consumer lagging by
-- more than the ring leaves two laps in a leaf, and only then are rows
-- deleted one by one.  docs/outbox-storage.md has the whole story.
--
-- A partitioned table keyed by an expression cannot have a primary key, so
-- each leaf has its own; ids are unique anyway (one identity sequence, and
-- an id belongs to exactly one leaf).  emit() computes the leaf from the id
-- it drew and writes there directly, exactly where the INSERT's tuple
-- routing puts the row (src/outbox_emit.c).
CREATE TABLE idem.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    topic       text NOT NULL,
    key         text,
    payload     jsonb NOT NULL,
    headers     jsonb,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    xid         xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id()
) PARTITION BY LIST (((id OPERATOR(pg_catalog./) 65536) OPERATOR(pg_catalog.%) 8));

-- Batches walk each leaf's primary key in id order; carrying the xid lets
-- them skip the entries of other windows without visiting the table.
CREATE TABLE idem.outbox_0 PARTITION OF idem.outbox (
    CONSTRAINT outbox_0_pkey PRIMARY KEY (id) INCLUDE (xid)) FOR VALUES IN (0);
CREATE TABLE idem.outbox_1 PARTITION OF idem.outbox (
    CONSTRAINT outbox_1_pkey PRIMARY KEY (id) INCLUDE (xid)) FOR VALUES IN (1);
CREATE TABLE idem.outbox_2 PARTITION OF idem.outbox (
    CONSTRAINT outbox_2_pkey PRIMARY KEY (id) INCLUDE (xid)) FOR VALUES IN (2);
CREATE TABLE idem.outbox_3 PARTITION OF idem.outbox (
    CONSTRAINT outbox_3_pkey PRIMARY KEY (id) INCLUDE (xid)) FOR VALUES IN (3);
CREATE TABLE idem.outbox_4 PARTITION OF idem.outbox (
    CONSTRAINT outbox_4_pkey PRIMARY KEY (id) INCLUDE (xid)) FOR VALUES IN (4);
CREATE TABLE idem.outbox_5 PARTITION OF idem.outbox (
    CONSTRAINT outbox_5_pkey PRIMARY KEY (id) INCLUDE (xid)) FOR VALUES IN (5);
CREATE TABLE idem.outbox_6 PARTITION OF idem.outbox (
    CONSTRAINT outbox_6_pkey PRIMARY KEY (id) INCLUDE (xid)) FOR VALUES IN (6);
CREATE TABLE idem.outbox_7 PARTITION OF idem.outbox (
    CONSTRAINT outbox_7_pkey PRIMARY KEY (id) INCLUDE (xid)) FOR VALUES IN (7);

-- A window's transactions are found here (by xid range and by the xids
-- that were running), and trimming probes it: range scans, never of the
-- whole table.  Created on the parent, so every leaf has it.
CREATE INDEX outbox_xid_id_idx ON idem.outbox (xid, id);

COMMENT ON TABLE idem.outbox IS
'Events written by idem.emit(), each with its writing transaction; read through idem.next_batch()';
COMMENT ON COLUMN idem.outbox.xid IS
'Top-level transaction that wrote the event: delivery follows its commit visibility, never the id order';
COMMENT ON TABLE idem.outbox_0 IS
'Segment 0 of the outbox ring: the events whose id / 65536 % 8 = 0; emptied by TRUNCATE once every consumer has finished them';
COMMENT ON TABLE idem.outbox_1 IS
'Segment 1 of the outbox ring: the events whose id / 65536 % 8 = 1; emptied by TRUNCATE once every consumer has finished them';
COMMENT ON TABLE idem.outbox_2 IS
'Segment 2 of the outbox ring: the events whose id / 65536 % 8 = 2; emptied by TRUNCATE once every consumer has finished them';
COMMENT ON TABLE idem.outbox_3 IS
'Segment 3 of the outbox ring: the events whose id / 65536 % 8 = 3; emptied by TRUNCATE once every consumer has finished them';
COMMENT ON TABLE idem.outbox_4 IS
'Segment 4 of the outbox ring: the events whose id / 65536 % 8 = 4; emptied by TRUNCATE once every consumer has finished them';
COMMENT ON TABLE idem.outbox_5 IS
'Segment 5 of the outbox ring: the events whose id / 65536 % 8 = 5; emptied by TRUNCATE once every consumer has finished them';
COMMENT ON TABLE idem.outbox_6 IS
'Segment 6 of the outbox ring: the events whose id / 65536 % 8 = 6; emptied by TRUNCATE once every consumer has finished them';
COMMENT ON TABLE idem.outbox_7 IS
'Segment 7 of the outbox ring: the events whose id / 65536 % 8 = 7; emptied by TRUNCATE once every consumer has finished them';


INSERT INTO idem.outbox (id, topic, key, payload, headers, created_at, xid)
OVERRIDING SYSTEM VALUE
SELECT o.id, o.topic, o.key, o.payload, o.headers, o.created_at, o.xid
  FROM idem.outbox_0_1 o;
SELECT pg_catalog.setval('idem.outbox_id_seq', s.last_value, s.is_called)
  FROM idem.outbox_0_1_id_seq s;

-- pg_dump keeps the rows (in the leaves) and the identity's position.
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_0', '');
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_1', '');
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_2', '');
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_3', '');
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_4', '');
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_5', '');
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_6', '');
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_7', '');
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_id_seq', '');

REVOKE ALL ON TABLE idem.outbox FROM PUBLIC;
REVOKE ALL ON TABLE idem.outbox_0 FROM PUBLIC;
REVOKE ALL ON TABLE idem.outbox_1 FROM PUBLIC;
REVOKE ALL ON TABLE idem.outbox_2 FROM PUBLIC;
REVOKE ALL ON TABLE idem.outbox_3 FROM PUBLIC;
REVOKE ALL ON TABLE idem.outbox_4 FROM PUBLIC;
REVOKE ALL ON TABLE idem.outbox_5 FROM PUBLIC;
REVOKE ALL ON TABLE idem.outbox_6 FROM PUBLIC;
REVOKE ALL ON TABLE idem.outbox_7 FROM PUBLIC;
REVOKE ALL ON SEQUENCE idem.outbox_id_seq FROM PUBLIC;
COMMENT ON FUNCTION idem.trim_outbox(integer) IS
'Remove the events every consumer has finished (with no consumer, older than idem.outbox_retention): whole leaves of the ring by TRUNCATE, and up to max_rows events one by one in a leaf holding two laps; idem.maintain() does this';
-- <<< the outbox ring

-- >>> invariants (SPEC.md section 6): the objects of src/sql/50_invariants.sql,
-- >>> copied verbatim; keep the two in step.

-- 50_invariants.sql: commit-time invariants (src/invariants.c)
--
-- idem.invariant and idem.invariant_watch are the catalog: written only by
-- enforce_invariant() and unenforce_invariant() (as the extension's owner,
-- after checking that the caller owns the watched tables), read by the C
-- code directly.  Tables are kept as regclass, so pg_dump writes their names
-- and a restore finds them again under their new OIDs.  The triggers on the
-- watched tables are ordinary triggers, dumped with their tables.

CREATE TABLE idem.invariant (
    name    text PRIMARY KEY
            CONSTRAINT invariant_name_length
            CHECK (pg_catalog.octet_length(name) BETWEEN 1 AND 255),
    "check" text NOT NULL,
    message text,
    valid   boolean NOT NULL,
    owner   regrole NOT NULL
);

COMMENT ON TABLE idem.invariant IS
'Invariants declared with idem.enforce_invariant(): a check query per group of rows, run at commit';

CREATE TABLE idem.invariant_watch (
    invariant text NOT NULL,
    tbl       regclass NOT NULL,
    columns   name[] NOT NULL,
    PRIMARY KEY (invariant, tbl)
);

COMMENT ON TABLE idem.invariant_watch IS
'The tables each invariant watches, with the columns that name a group in them ($1..$n of the check)';

-- No foreign key to idem.invariant: the C code writes both tables together,
-- and a foreign key's internal triggers would be named by OID, which no two
-- installations share.

SELECT pg_catalog.pg_extension_config_dump('idem.invariant', '');
SELECT pg_catalog.pg_extension_config_dump('idem.invariant_watch', '');

CREATE VIEW idem.invariants AS
SELECT i.name,
       i."check",
       (SELECT pg_catalog.jsonb_object_agg(w.tbl::text, pg_catalog.to_jsonb(w.columns))
          FROM idem.invariant_watch w
         WHERE w.invariant OPERATOR(pg_catalog.=) i.name) AS watch,
       i.owner,
       i.valid,
       i.message
  FROM idem.invariant i;

COMMENT ON VIEW idem.invariants IS
'Declared invariants: name, check, watched tables with their group columns, the role the check runs as, whether existing data was validated, and the hint of a violation';

-- The trigger enforce_invariant() puts on every watched table: AFTER
-- INSERT OR UPDATE OR DELETE FOR EACH ROW (records the touched groups) and
-- BEFORE TRUNCATE FOR EACH STATEMENT (refuses).
CREATE FUNCTION idem.invariant_touch()
RETURNS trigger
AS 'MODULE_PATHNAME', 'idem_invariant_touch'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.invariant_touch() IS
'Trigger installed by idem.enforce_invariant: records the groups a transaction touches, for the check at commit, and refuses TRUNCATE';

-- enforce_invariant() and unenforce_invariant() run with the caller's
-- privileges (only the owner of the watched tables may declare), and write
-- the catalog as the extension's owner from C.
CREATE FUNCTION idem.enforce_invariant(name text, "check" text, watch jsonb,
                                       message text DEFAULT NULL,
                                       valid boolean DEFAULT true)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_enforce_invariant'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.enforce_invariant(text, text, jsonb, text, boolean) IS
'Declare (or declare again) an invariant: a SELECT returning one boolean for the group $1..$n, checked at commit for every group a transaction touched in the watched tables';

CREATE FUNCTION idem.unenforce_invariant(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_unenforce_invariant'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.unenforce_invariant(text) IS
'Drop an invariant and the triggers no other invariant needs; false if there was none of that name';

CREATE FUNCTION idem.check_invariants()
RETURNS void
AS 'MODULE_PATHNAME', 'idem_check_invariants'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.check_invariants() IS
'Check now the groups this transaction touched (ID030 on a violation); COMMIT checks them again';

-- The event triggers that keep an invariant from outliving what it reads.
-- SECURITY DEFINER: any role's DDL fires them, and they read and write the
-- catalog.
CREATE FUNCTION idem.invariant_sql_drop()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'idem_invariant_sql_drop'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.invariant_sql_drop() IS
'Event trigger: drops (with a NOTICE) an invariant whose watched table, column or check dependency was dropped; refuses dropping its triggers';

CREATE FUNCTION idem.invariant_ddl_end()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'idem_invariant_ddl_end'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.invariant_ddl_end() IS
'Event trigger: refuses a change that would break an invariant''s check; guards new partitions of watched tables against TRUNCATE';

CREATE EVENT TRIGGER idem_invariant_sql_drop ON sql_drop
    EXECUTE FUNCTION idem.invariant_sql_drop();

CREATE EVENT TRIGGER idem_invariant_ddl_end ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'ALTER SCHEMA', 'ALTER VIEW',
                 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE',
                 'ALTER FUNCTION', 'ALTER PROCEDURE', 'ALTER ROUTINE',
                 'ALTER AGGREGATE', 'ALTER OPERATOR', 'ALTER TYPE',
                 'ALTER DOMAIN', 'ALTER COLLATION')
    EXECUTE FUNCTION idem.invariant_ddl_end();

-- Not SECURITY DEFINER: it resolves the names of the DROP with the caller's
-- search_path, as DROP does, and reads only the tables' own triggers.
CREATE FUNCTION idem.invariant_drop_start()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'idem_invariant_drop_start'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.invariant_drop_start() IS
'Event trigger: refuses DROP TABLE of a partition of a watched table while it has rows (the groups they leave would not be checked)';

CREATE EVENT TRIGGER idem_invariant_drop_start ON ddl_command_start
    WHEN TAG IN ('DROP TABLE')
    EXECUTE FUNCTION idem.invariant_drop_start();

REVOKE ALL ON TABLE idem.invariant FROM PUBLIC;
REVOKE ALL ON TABLE idem.invariant_watch FROM PUBLIC;
REVOKE ALL ON TABLE idem.invariants FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.invariant_touch() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.enforce_invariant(text, text, jsonb, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.unenforce_invariant(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.check_invariants() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.invariant_sql_drop() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.invariant_ddl_end() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.invariant_drop_start() FROM PUBLIC;

-- <<< invariants
-- ==== least privilege (SPEC.md section 4, src/privileges.c) ====
-- Scopes, topics and consumers belong to roles.  Self-contained: everything
-- from here to the matching end line is this change.

-- What each role may use.  (As src/sql/15_privileges.sql.)
CREATE TABLE idem.grants (
    role       regrole PRIMARY KEY,
    scopes     text[] COLLATE pg_catalog."C",   -- LIKE patterns; NULL: every scope
    topics     text[] COLLATE pg_catalog."C",   -- LIKE patterns; NULL: every topic
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE idem.grants IS
'What each role may use: LIKE patterns of idempotency scopes and outbox topics (NULL: all); written by idem.grant_usage()';

SELECT pg_catalog.pg_extension_config_dump('idem.grants', '');

REVOKE ALL ON TABLE idem.grants FROM PUBLIC;

-- Writing rows sends no cache invalidation by itself; this trigger makes
-- every session drop the rights it cached (src/privileges.c) when the
-- writing transaction commits.  It runs no SQL.
CREATE FUNCTION idem.grants_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'idem_grants_changed'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.grants_changed() IS
'Statement trigger of idem.grants: makes every session drop its cached pg_idem rights when the grants change';

REVOKE ALL ON FUNCTION idem.grants_changed() FROM PUBLIC;

CREATE TRIGGER grants_changed
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON idem.grants
FOR EACH STATEMENT EXECUTE FUNCTION idem.grants_changed();

-- Consumers belong to the role that subscribed them.  Those created before
-- 0.2 get no owner: any role with a grant may use one, as before, and the
-- first such role to re-subscribe it takes it (src/outbox.c).
ALTER TABLE idem.consumers ADD COLUMN owner regrole;
COMMENT ON COLUMN idem.consumers.owner IS
'Role that subscribed the consumer: only it and its members may read, finish, re-subscribe or unsubscribe it (NULL: created before 0.2, any role with a grant)';

-- Grants made before 0.2 keep working: every role that holds EXECUTE on an
-- application function (through grant_usage() or by hand) keeps every scope
-- and every topic.  (Only rows are written here, no GRANT: privileges
-- granted by an extension script would count as the extension's initial
-- ones, which pg_dump leaves out.)
INSERT INTO idem.grants (role, scopes, topics)
SELECT DISTINCT CAST(a.grantee AS pg_catalog.regrole), NULL::text[], NULL::text[]
  FROM pg_catalog.pg_proc p
 CROSS JOIN LATERAL pg_catalog.aclexplode(p.proacl) a
 WHERE p.pronamespace OPERATOR(pg_catalog.=) 'idem'::pg_catalog.regnamespace
   AND p.proname OPERATOR(pg_catalog.=) ANY (ARRAY[
        'reserve', 'complete', 'release', 'checkpoint', 'forget', 'fingerprint',
        'emit', 'subscribe', 'unsubscribe', 'next_batch', 'finish_batch']::name[])
   AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'
   AND a.grantee OPERATOR(pg_catalog.<>) 0
   AND a.grantee OPERATOR(pg_catalog.<>) p.proowner;

-- The functions application roles call check the current user, so they run
-- as their caller (and switch to the tables' owner for their own SQL).
ALTER FUNCTION idem.forget(text, text) SECURITY INVOKER;
ALTER FUNCTION idem.subscribe(text, text[], boolean) SECURITY INVOKER;
ALTER FUNCTION idem.unsubscribe(text) SECURITY INVOKER;
ALTER FUNCTION idem.next_batch(text, integer) SECURITY INVOKER;
ALTER FUNCTION idem.finish_batch(text, bigint) SECURITY INVOKER;

-- The views show a role only its own scopes and consumers.
CREATE OR REPLACE VIEW idem.key_stats WITH (security_barrier) AS
SELECT k.scope,
       k.state,
       pg_catalog.count(*) FILTER (WHERE k.expires_at OPERATOR(pg_catalog.>) pg_catalog.statement_timestamp()) AS keys,
       pg_catalog.count(*) FILTER (WHERE k.expires_at OPERATOR(pg_catalog.<=) pg_catalog.statement_timestamp()) AS expired,
       pg_catalog.statement_timestamp() OPERATOR(pg_catalog.-) pg_catalog.min(k.created_at)
         FILTER (WHERE k.state OPERATOR(pg_catalog.=) 'in_progress'::idem.key_state
                 AND k.expires_at OPERATOR(pg_catalog.>) pg_catalog.statement_timestamp()) AS oldest_in_progress_age
FROM idem.keys AS k
GROUP BY k.scope, k.state
HAVING (SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c
         WHERE c.oid OPERATOR(pg_catalog.=) 'idem.grants'::pg_catalog.regclass)
    OR EXISTS (SELECT FROM idem.grants g
                WHERE pg_catalog.pg_has_role(CAST(g.role AS pg_catalog.oid), 'USAGE')
                  AND (g.scopes IS NULL OR k.scope OPERATOR(pg_catalog.~~) ANY (g.scopes)));

COMMENT ON VIEW idem.key_stats IS
'Idempotency keys per scope and state (the scopes the current role may use): live keys, expired keys awaiting purge, age of the oldest live in-progress key';

CREATE OR REPLACE VIEW idem.consumer_lag WITH (security_barrier) AS
SELECT c.name AS consumer,
       c.topics,
       p.pending,
       pg_catalog.now() OPERATOR(pg_catalog.-) p.oldest AS oldest_pending_age,
       c.batch_id AS open_batch_id,
       c.finished_at AS last_finished_at,
       c.owner
  FROM idem.consumers c
 CROSS JOIN LATERAL (
       SELECT pg_catalog.count(*) AS pending,
              pg_catalog.min(e.created_at) AS oldest
         FROM (SELECT o.id, o.xid, o.topic, o.created_at
                 FROM idem.outbox o
                WHERE o.xid OPERATOR(pg_catalog.>=) pg_catalog.pg_snapshot_xmax(c.snapshot)
                  AND o.xid OPERATOR(pg_catalog.<)
                      pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())
               UNION ALL
               SELECT o.id, o.xid, o.topic, o.created_at
                 FROM idem.outbox o
                WHERE o.xid OPERATOR(pg_catalog.=)
                      ANY (ARRAY(SELECT pg_catalog.pg_snapshot_xip(c.snapshot)))) e
        WHERE NOT pg_catalog.pg_visible_in_snapshot(e.xid, c.snapshot)
          AND (c.topics IS NULL OR e.topic OPERATOR(pg_catalog.=) ANY (c.topics))
          AND NOT COALESCE(c.window_snapshot IS NOT NULL
                           AND pg_catalog.pg_visible_in_snapshot(e.xid, c.window_snapshot)
                           AND e.id OPERATOR(pg_catalog.<=) c.window_done_id, false)) p
 WHERE (SELECT pg_catalog.pg_has_role(r.relowner, 'USAGE') FROM pg_catalog.pg_class r
         WHERE r.oid OPERATOR(pg_catalog.=) 'idem.grants'::pg_catalog.regclass)
    OR pg_catalog.pg_has_role(CAST(c.owner AS pg_catalog.oid), 'USAGE')
    OR (c.owner IS NULL
        AND EXISTS (SELECT FROM idem.grants g
                     WHERE pg_catalog.pg_has_role(CAST(g.role AS pg_catalog.oid), 'USAGE')));

COMMENT ON VIEW idem.consumer_lag IS
'Per consumer (those the current role may use): committed events not finished yet, the age of the oldest of them, and the owner';

-- grant_usage() takes scope and topic patterns; revoke_usage() is new.
DROP FUNCTION idem.grant_usage(regrole);

CREATE FUNCTION idem.grant_usage(role regrole, scopes text[] DEFAULT NULL,
                                 topics text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- The application-facing functions: keys, outbox, consumers, and the
    -- early invariant check.  Not purge,
    -- maintain, enforce_version, unenforce_version, grant_usage or
    -- revoke_usage.
    app_functions CONSTANT name[] := ARRAY[
        'reserve', 'complete', 'release', 'checkpoint', 'forget', 'fingerprint',
        'emit', 'subscribe', 'unsubscribe', 'next_batch', 'finish_batch',
        'check_invariants'];
    app_views CONSTANT name[] := ARRAY['key_stats', 'consumer_lag'];
    grantee name;
    fn regprocedure;
    obj name;
    found_names name[] := '{}';
    kind text;
    patterns text[];
    pattern text;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT r.rolname INTO grantee FROM pg_catalog.pg_roles r
     WHERE r.oid OPERATOR(pg_catalog.=) role;
    IF grantee IS NULL THEN
        -- A regrole held across a DROP ROLE.
        RAISE EXCEPTION 'role with OID % does not exist', role::oid
            USING ERRCODE = 'undefined_object';
    END IF;

    -- Every pattern is checked before anything is granted.
    FOREACH kind IN ARRAY ARRAY['scope', 'topic'] LOOP
        patterns := CASE kind WHEN 'scope' THEN scopes ELSE topics END;
        CONTINUE WHEN patterns IS NULL;
        IF pg_catalog.array_ndims(patterns) OPERATOR(pg_catalog.>) 1 THEN
            RAISE EXCEPTION '% patterns must be a one-dimensional array', kind
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = pg_catalog.format('The array given has %s dimensions.',
                                                 pg_catalog.array_ndims(patterns));
        END IF;
        FOREACH pattern IN ARRAY patterns LOOP
            IF pattern IS NULL THEN
                RAISE EXCEPTION '% patterns must not contain null', kind
                    USING ERRCODE = 'null_value_not_allowed',
                          HINT = pg_catalog.format('Pass NULL instead of the array to grant every %s, or an empty array for none.', kind);
            END IF;
            -- A name is at most 255 bytes; a pattern matching it, with every
            -- character escaped, at most twice that.
            IF pg_catalog.octet_length(pattern) OPERATOR(pg_catalog.>) 510 THEN
                RAISE EXCEPTION '% pattern is too long', kind
                    USING ERRCODE = 'string_data_right_truncation',
                          DETAIL = pg_catalog.format('The pattern is %s bytes long; the limit is 510 bytes (a %s is at most 255).',
                                                     pg_catalog.octet_length(pattern), kind);
            END IF;
            -- LIKE's one syntax error: an escape character (the backslash,
            -- chr(92)) with nothing to escape, i.e. an odd number of them at
            -- the end.
            IF (pg_catalog.octet_length(pattern) OPERATOR(pg_catalog.-)
                pg_catalog.octet_length(pg_catalog.rtrim(pattern, pg_catalog.chr(92))))
               OPERATOR(pg_catalog.%) 2 OPERATOR(pg_catalog.=) 1 THEN
                RAISE EXCEPTION '% pattern "%" ends with an escape character', kind, pattern
                    USING ERRCODE = 'invalid_escape_sequence',
                          HINT = 'Patterns use LIKE syntax: % matches any text, _ one character, and a backslash makes the next character literal (two backslashes for a backslash).';
            END IF;
            IF kind OPERATOR(pg_catalog.=) 'topic' AND pattern OPERATOR(pg_catalog.=) '' THEN
                RAISE EXCEPTION 'topic pattern must not be empty'
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = 'A topic is 1 to 255 bytes long: the empty pattern matches none.';
            END IF;
        END LOOP;
    END LOOP;

    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA idem TO %I', grantee);

    -- Every overload of each name, by signature.
    FOR fn, obj IN
        SELECT p.oid::regprocedure, p.proname FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'idem'::regnamespace
           AND p.proname OPERATOR(pg_catalog.=) ANY (app_functions)
         ORDER BY p.oid
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, grantee);
        found_names := found_names OPERATOR(pg_catalog.||) obj;
    END LOOP;
    FOREACH obj IN ARRAY app_functions LOOP
        IF NOT obj OPERATOR(pg_catalog.=) ANY (found_names) THEN
            RAISE EXCEPTION 'pg_idem: function idem.%() is missing', obj
                USING ERRCODE = 'internal_error';
        END IF;
    END LOOP;

    FOREACH obj IN ARRAY app_views LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON TABLE idem.%I TO %I', obj, grantee);
    END LOOP;

    -- What it may use: this call's patterns, stored 1-based, replacing the
    -- role's earlier ones.  Rows of dropped roles go (their OID could be
    -- given to a new role).
    INSERT INTO idem.grants AS g (role, scopes, topics)
    VALUES (grant_usage.role,
            CASE WHEN grant_usage.scopes IS NOT NULL
                 THEN ARRAY(SELECT pg_catalog.unnest(grant_usage.scopes)) END,
            CASE WHEN grant_usage.topics IS NOT NULL
                 THEN ARRAY(SELECT pg_catalog.unnest(grant_usage.topics)) END)
    ON CONFLICT ON CONSTRAINT grants_pkey DO UPDATE
       SET scopes = EXCLUDED.scopes, topics = EXCLUDED.topics,
           granted_at = pg_catalog.now();
    DELETE FROM idem.grants g
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r
                        WHERE r.oid OPERATOR(pg_catalog.=) g.role);
END;
$fn$;

COMMENT ON FUNCTION idem.grant_usage(regrole, text[], text[]) IS
'Grant a role what an application needs (schema usage, the key, outbox and consumer functions, the monitoring views), on the scopes and topics matching the LIKE patterns given (NULL: all)';

-- idem.revoke_usage(role): take back what grant_usage() gave.  The role may
-- keep access through a role it is a member of, as with GRANT.
CREATE FUNCTION idem.revoke_usage(role regrole)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    app_functions CONSTANT name[] := ARRAY[
        'reserve', 'complete', 'release', 'checkpoint', 'forget', 'fingerprint',
        'emit', 'subscribe', 'unsubscribe', 'next_batch', 'finish_batch',
        'check_invariants'];
    app_views CONSTANT name[] := ARRAY['key_stats', 'consumer_lag'];
    grantee name;
    fn regprocedure;
    obj name;
    had boolean;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT r.rolname INTO grantee FROM pg_catalog.pg_roles r
     WHERE r.oid OPERATOR(pg_catalog.=) role;
    IF grantee IS NULL THEN
        RAISE EXCEPTION 'role with OID % does not exist', role::oid
            USING ERRCODE = 'undefined_object';
    END IF;

    DELETE FROM idem.grants g WHERE g.role OPERATOR(pg_catalog.=) revoke_usage.role;
    had := FOUND;
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'idem'::regnamespace
           AND p.proname OPERATOR(pg_catalog.=) ANY (app_functions)
         ORDER BY p.oid
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %I', fn, grantee);
    END LOOP;
    FOREACH obj IN ARRAY app_views LOOP
        EXECUTE pg_catalog.format('REVOKE SELECT ON TABLE idem.%I FROM %I', obj, grantee);
    END LOOP;
    EXECUTE pg_catalog.format('REVOKE USAGE ON SCHEMA idem FROM %I', grantee);
    RETURN had;
END;
$fn$;

COMMENT ON FUNCTION idem.revoke_usage(regrole) IS
'Take back what idem.grant_usage() gave a role: its scopes and topics, the functions, the views and the schema; true when it had a grant';

REVOKE ALL ON FUNCTION idem.grant_usage(regrole, text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.revoke_usage(regrole) FROM PUBLIC;

-- ==== end of least privilege ====

-- The sweep every script ends with (nothing is granted to PUBLIC, not even
-- USAGE on the schema: SPEC.md section 4).
REVOKE ALL ON SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA idem FROM PUBLIC;

-- The 0.1 outbox, now copied into the ring and no longer referred to.
ALTER EXTENSION pg_idem DROP TABLE idem.outbox_0_1;
ALTER EXTENSION pg_idem DROP SEQUENCE idem.outbox_0_1_id_seq;
DROP TABLE idem.outbox_0_1;
