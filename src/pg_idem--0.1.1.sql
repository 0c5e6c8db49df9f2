/* pg_idem 0.1.1 install script, frozen: released scripts are never edited */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_idem" to load this file. \quit

-- The control file creates schema idem.  Application roles reach its objects
-- only through the functions that idem.grant_usage() grants; nothing here is
-- granted to PUBLIC.
REVOKE ALL ON SCHEMA idem FROM PUBLIC;

-- 10_fingerprint.sql: request fingerprints

CREATE FUNCTION idem.fingerprint(request jsonb)
RETURNS bytea
AS 'MODULE_PATHNAME', 'idem_fingerprint'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION idem.fingerprint(jsonb) IS
'SHA-256 of the canonical text of a request, as stored with an idempotency key';

-- 20_keys.sql: idempotency keys (SPEC.md section 1)
--
-- One row per (scope, key).  Rows are written only by the functions below;
-- application roles never touch the table directly.

-- What reserve() tells its caller (SPEC.md section 1).
CREATE TYPE idem.outcome AS ENUM ('acquired', 'replay', 'in_progress');

COMMENT ON TYPE idem.outcome IS
'Outcome of idem.reserve(): acquired (do the work), replay (return the stored response), in_progress (retry later)';

-- The answer of reserve().
CREATE TYPE idem.reservation AS (
  outcome        idem.outcome,
  token          bigint,
  response       jsonb,
  status         integer,
  recovery_point text,
  checkpoint     jsonb,
  locked_until   timestamptz,
  expires_at     timestamptz
);

COMMENT ON TYPE idem.reservation IS
'Result of idem.reserve(): the outcome and, depending on it, the token, the stored response or the live lease';

-- The stored state of a key.  "Expired" is not a state: a row whose
-- expires_at has passed behaves as absent, whatever its state, until
-- purge() deletes it.
CREATE TYPE idem.key_state AS ENUM ('in_progress', 'completed', 'released');

COMMENT ON TYPE idem.key_state IS
'Stored state of an idempotency key: in_progress (held under a lease), completed (response stored), released (given up by its holder)';

-- Fencing tokens come from one sequence, so committed reservations never
-- share a token: not with another key, and not with the same key after it
-- expired, was purged and was reserved again.  (Like any sequence value, a
-- token taken by a transaction that never committed may come back after a
-- crash; it never belonged to a durable reservation.)
CREATE SEQUENCE idem.key_token_seq AS bigint;

COMMENT ON SEQUENCE idem.key_token_seq IS
'Source of fencing tokens: every acquisition of an idempotency key takes the next value';

-- Keys and scopes are opaque byte strings, hence COLLATE "C": equality is
-- byte equality and the primary key compares with memcmp, not strcoll.
CREATE TABLE idem.keys (
  scope          text COLLATE pg_catalog."C" NOT NULL,
  key            text COLLATE pg_catalog."C" NOT NULL,
  state          idem.key_state NOT NULL,
  token          bigint NOT NULL DEFAULT pg_catalog.nextval('idem.key_token_seq'::pg_catalog.regclass),
  fingerprint    bytea,                 -- idem.fingerprint(request); NULL for a NULL request
  locked_until   timestamptz,           -- lease end while in_progress, else NULL
  ttl            interval NOT NULL,     -- of the reservation that holds or held the key
  response       jsonb,
  status         integer,
  recovery_point text,
  checkpoint     jsonb,
  created_at     timestamptz NOT NULL,  -- first reserve (of this life of the key)
  updated_at     timestamptz NOT NULL,  -- last change
  expires_at     timestamptz NOT NULL,  -- locked_until + ttl while held, else change time + ttl
  CONSTRAINT keys_pkey PRIMARY KEY (scope, key)
);

-- purge() deletes rows past expires_at in bounded batches.
CREATE INDEX keys_expires_at_idx ON idem.keys (expires_at);

COMMENT ON TABLE idem.keys IS
'Idempotency keys: one row per (scope, key); written only through idem.reserve() and its sibling functions';

SELECT pg_catalog.pg_extension_config_dump('idem.keys', '');
SELECT pg_catalog.pg_extension_config_dump('idem.key_token_seq', '');

REVOKE ALL ON TABLE idem.keys FROM PUBLIC;
REVOKE ALL ON SEQUENCE idem.key_token_seq FROM PUBLIC;

-- reserve, complete, release and checkpoint run no SQL: their C code reaches
-- idem.keys, its indexes, its sequence and its types by OID, and writes them
-- with no privilege check of its own, so EXECUTE on the function is the only
-- gate.  They therefore need neither SECURITY DEFINER (no privilege of the
-- owner is used) nor a pinned search_path (no name is ever looked up through
-- the caller's); either would cost every call for nothing (a pin about 7%: a
-- GUC set and reset, and a recomputed search path).  forget and purge run SQL:
-- they are SECURITY DEFINER and pin search_path.
CREATE FUNCTION idem.reserve(key text, request jsonb DEFAULT NULL, scope text DEFAULT '',
                             lease interval DEFAULT NULL, ttl interval DEFAULT NULL)
RETURNS idem.reservation
AS 'MODULE_PATHNAME', 'idem_reserve'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.reserve(text, jsonb, text, interval, interval) IS
'Claim an idempotency key: acquired (with a fencing token), replay (with the stored response) or in_progress (with the live lease)';

CREATE FUNCTION idem.complete(key text, token bigint, response jsonb, status integer DEFAULT NULL,
                              scope text DEFAULT '')
RETURNS void
AS 'MODULE_PATHNAME', 'idem_complete'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.complete(text, bigint, jsonb, integer, text) IS
'Store the response of a held idempotency key, so that retries replay it until the key expires';

CREATE FUNCTION idem.release(key text, token bigint, scope text DEFAULT '')
RETURNS void
AS 'MODULE_PATHNAME', 'idem_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.release(text, bigint, text) IS
'Give up a held idempotency key without a response; the next reserve takes it over with its recovery point';

CREATE FUNCTION idem.checkpoint(key text, token bigint, recovery_point text, state jsonb DEFAULT NULL,
                                scope text DEFAULT '', lease interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_checkpoint'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.checkpoint(text, bigint, text, jsonb, text, interval) IS
'Record the progress of a held idempotency key for a successor, and renew its lease';

CREATE FUNCTION idem.forget(key text, scope text DEFAULT '')
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_forget'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.forget(text, text) IS
'Delete an idempotency key in any state; true when it existed and had not expired';

CREATE FUNCTION idem.purge(max_rows integer DEFAULT 10000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_purge'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.purge(integer) IS
'Delete up to max_rows expired idempotency keys and return how many were deleted';

REVOKE ALL ON FUNCTION idem.reserve(text, jsonb, text, interval, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.complete(text, bigint, jsonb, integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.release(text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.checkpoint(text, bigint, text, jsonb, text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.forget(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.purge(integer) FROM PUBLIC;

-- Monitoring: per scope and stored state, the live keys, the expired ones
-- waiting for purge(), and how long the oldest live in-progress key has
-- been held.  Measured at the start of the query (statement_timestamp()),
-- not of the transaction, like the functions' wall clock.
CREATE VIEW idem.key_stats AS
SELECT k.scope,
       k.state,
       pg_catalog.count(*) FILTER (WHERE k.expires_at OPERATOR(pg_catalog.>) pg_catalog.statement_timestamp()) AS keys,
       pg_catalog.count(*) FILTER (WHERE k.expires_at OPERATOR(pg_catalog.<=) pg_catalog.statement_timestamp()) AS expired,
       pg_catalog.statement_timestamp() OPERATOR(pg_catalog.-) pg_catalog.min(k.created_at)
         FILTER (WHERE k.state OPERATOR(pg_catalog.=) 'in_progress'::idem.key_state
                 AND k.expires_at OPERATOR(pg_catalog.>) pg_catalog.statement_timestamp()) AS oldest_in_progress_age
FROM idem.keys AS k
GROUP BY k.scope, k.state;

COMMENT ON VIEW idem.key_stats IS
'Idempotency keys per scope and state: live keys, expired keys awaiting purge, age of the oldest live in-progress key';

REVOKE ALL ON TABLE idem.key_stats FROM PUBLIC;

-- 30_versions.sql: version-checked updates (src/version_guard.c)
--
-- idem.version_guard() is the row trigger; enforce_version() and
-- unenforce_version() install and remove it.  They run with the caller's
-- privileges (not SECURITY DEFINER): only a table's owner may change its
-- guard, and CREATE TRIGGER checks the caller's EXECUTE on version_guard().

CREATE FUNCTION idem.version_guard()
RETURNS trigger
AS 'MODULE_PATHNAME', 'idem_version_guard'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION idem.version_guard() IS
'Row trigger installed by idem.enforce_version: bumps the version of a row that was read at its current version, refuses stale (ID010) and, in strict mode, blind (ID011) updates';

CREATE FUNCTION idem.enforce_version(tbl regclass,
                                     version_column name DEFAULT 'version',
                                     mode text DEFAULT 'strict')
RETURNS void
AS 'MODULE_PATHNAME', 'idem_enforce_version'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.enforce_version(regclass, name, text) IS
'Install (or reconfigure) the version guard trigger idem_version_guard on a table the caller owns; mode is strict or auto';

CREATE FUNCTION idem.unenforce_version(tbl regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_unenforce_version'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.unenforce_version(regclass) IS
'Remove the version guard installed by idem.enforce_version from a table the caller owns (a NOTICE if it has none)';

REVOKE ALL ON FUNCTION idem.version_guard() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.enforce_version(regclass, name, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.unenforce_version(regclass) FROM PUBLIC;

-- 40_outbox.sql: the transactional outbox (SPEC.md section 3)
--
-- An event is a row of idem.outbox written by idem.emit() in the caller's
-- transaction, so it exists if and only if that transaction commits.  Each
-- event records its writing transaction (xid, the top-level xid8).  Consumers
-- (idem.consumers) read events by transaction visibility, the way PgQ does:
-- a consumer remembers the snapshot up to which it has finished
-- (`snapshot`); its next window is (snapshot, a newer snapshot), i.e. the
-- events whose transaction is visible in the newer snapshot and was not
-- visible in the older one.  A transaction that commits late is therefore
-- never skipped, whatever its event ids.  A window larger than max_events is
-- walked in id order with an id cursor across successive batches.  See
-- src/outbox.c for the algorithm and README.md for the guarantees.

CREATE TABLE idem.outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    topic       text NOT NULL,
    key         text,
    payload     jsonb NOT NULL,
    headers     jsonb,
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    xid         xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    -- Batches walk the primary key in id order; carrying the xid lets them
    -- skip the entries of other windows without visiting the table.
    CONSTRAINT outbox_pkey PRIMARY KEY (id) INCLUDE (xid)
);

-- A window's transactions are found here (by xid range and by the xids
-- that were running), and trimming walks it from the oldest xid: range
-- scans, never of the whole table.
CREATE INDEX outbox_xid_id_idx ON idem.outbox (xid, id);

COMMENT ON TABLE idem.outbox IS
'Events written by idem.emit(), each with its writing transaction; read through idem.next_batch()';
COMMENT ON COLUMN idem.outbox.xid IS
'Top-level transaction that wrote the event: delivery follows its commit visibility, never the id order';

CREATE TABLE idem.consumers (
    name              text PRIMARY KEY,
    topics            text[],                -- NULL: every topic
    -- Every event whose xid is visible in this snapshot is finished (or was
    -- emitted before the consumer subscribed).
    snapshot          pg_snapshot NOT NULL,
    -- The window (snapshot, window_snapshot) being walked, NULL between
    -- windows: its events have ids up to window_last_id, and those up to
    -- window_done_id are finished.
    window_snapshot   pg_snapshot,
    window_done_id    bigint,
    window_last_id    bigint,
    -- The open batch: the window's events after window_done_id up to
    -- batch_last_id, among batch_topics.  NULL when none.
    batch_id          bigint,
    batch_last_id     bigint,
    batch_topics      text[],
    batch_ends_window boolean,
    batch_events      integer,               -- size of the open or last batch
    batch_opened_at   timestamptz,
    subscribed_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
    finished_at       timestamptz,           -- last finish_batch()
    CHECK ((window_snapshot IS NULL) = (window_done_id IS NULL)
           AND (window_snapshot IS NULL) = (window_last_id IS NULL)),
    CHECK ((batch_id IS NULL) = (batch_last_id IS NULL)),
    CHECK (batch_id IS NULL OR window_snapshot IS NOT NULL)
);

COMMENT ON TABLE idem.consumers IS
'Outbox consumers: topic filter, finished snapshot, window cursor and open batch; written only by the outbox functions';

-- Batch ids are unique across consumers and incarnations of a consumer, so a
-- stale relay can never finish somebody else's batch.
CREATE SEQUENCE idem.outbox_batch_seq AS bigint;

-- pg_dump keeps the events, the consumers' positions and both counters.
SELECT pg_catalog.pg_extension_config_dump('idem.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('idem.consumers', '');
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_batch_seq', '');

REVOKE ALL ON TABLE idem.outbox FROM PUBLIC;
REVOKE ALL ON SEQUENCE idem.outbox_id_seq FROM PUBLIC;
REVOKE ALL ON TABLE idem.consumers FROM PUBLIC;
REVOKE ALL ON SEQUENCE idem.outbox_batch_seq FROM PUBLIC;

CREATE FUNCTION idem.emit(topic text, payload jsonb, key text DEFAULT NULL,
                          headers jsonb DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_emit'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
-- Not SECURITY DEFINER and no pinned search_path: emit() runs no SQL and
-- looks nothing up through search_path (src/outbox_emit.c writes the row
-- directly, by OID), so EXECUTE is its only gate.

COMMENT ON FUNCTION idem.emit(text, jsonb, text, jsonb) IS
'Write an event in the current transaction and notify channel idem_outbox on commit (while some session listens); returns the event id';

CREATE FUNCTION idem.subscribe(consumer text, topics text[] DEFAULT NULL,
                               from_start boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_subscribe'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.subscribe(text, text[], boolean) IS
'Create a consumer of the given topics (all when NULL) from now or from the oldest retained event, or change an existing consumer''s topics';

CREATE FUNCTION idem.unsubscribe(consumer text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_unsubscribe'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.unsubscribe(text) IS
'Drop a consumer and its position; returns whether it existed';

CREATE FUNCTION idem.next_batch(consumer text, max_events integer DEFAULT 1000)
RETURNS TABLE (batch_id bigint, id bigint, topic text, key text, payload jsonb,
               headers jsonb, created_at timestamptz)
AS 'MODULE_PATHNAME', 'idem_next_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER ROWS 1000
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.next_batch(text, integer) IS
'Return the consumer''s open batch again, or open a new one of at most max_events committed events in commit-visibility order';

CREATE FUNCTION idem.finish_batch(consumer text, batch_id bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_finish_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.finish_batch(text, bigint) IS
'Close the consumer''s open batch so that its events are never returned again; returns how many events it held';

CREATE FUNCTION idem.trim_outbox(max_rows integer DEFAULT 10000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_trim_outbox'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.trim_outbox(integer) IS
'Delete up to max_rows events every consumer has finished (with no consumer, older than idem.outbox_retention); idem.maintain() does this';

REVOKE ALL ON FUNCTION idem.emit(text, jsonb, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.subscribe(text, text[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.unsubscribe(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.next_batch(text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.finish_batch(text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.trim_outbox(integer) FROM PUBLIC;

-- Per consumer: the committed events of its topics it has not finished yet
-- (the open batch counts as pending) and how long the oldest has waited.
-- Unfinished events are those of transactions that started at or after the
-- consumer's snapshot (an xid range, bounded above by the current snapshot so
-- that the planner sees a narrow range) or were running then (its xip list):
-- two index scans, however much finished history is retained.
CREATE VIEW idem.consumer_lag AS
SELECT c.name AS consumer,
       c.topics,
       p.pending,
       pg_catalog.now() OPERATOR(pg_catalog.-) p.oldest AS oldest_pending_age,
       c.batch_id AS open_batch_id,
       c.finished_at AS last_finished_at
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
                           AND e.id OPERATOR(pg_catalog.<=) c.window_done_id, false)) p;

COMMENT ON VIEW idem.consumer_lag IS
'Per consumer: committed events not finished yet and the age of the oldest of them';

REVOKE ALL ON TABLE idem.consumer_lag FROM PUBLIC;

-- 90_operations.sql: maintenance, privileges for application roles, and the
-- final privilege sweep.  This fragment runs last, after every capability's
-- objects exist.

CREATE FUNCTION idem.maintain()
RETURNS TABLE (task text, rows bigint)
AS 'MODULE_PATHNAME', 'idem_maintain'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.maintain() IS
'Delete expired idempotency keys and finished outbox events in bounded batches; one row per task with the rows deleted';

-- idem.grant_usage(role): what an application role needs, and nothing more.
-- It runs with the caller's rights (only an owner of the idem objects can
-- grant on them) and takes the role as regrole, so the name was resolved and
-- is quoted again with %I: odd names cannot inject anything.  Not granted to
-- PUBLIC either (see the sweep below).
CREATE FUNCTION idem.grant_usage(role regrole)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- The application-facing functions: keys, outbox, consumers.  Not purge,
    -- maintain, enforce_version, unenforce_version or grant_usage itself.
    app_functions CONSTANT name[] := ARRAY[
        'reserve', 'complete', 'release', 'checkpoint', 'forget', 'fingerprint',
        'emit', 'subscribe', 'unsubscribe', 'next_batch', 'finish_batch'];
    app_views CONSTANT name[] := ARRAY['key_stats', 'consumer_lag'];
    grantee name;
    fn regprocedure;
    obj name;
    found_names name[] := '{}';
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
END;
$fn$;

COMMENT ON FUNCTION idem.grant_usage(regrole) IS
'Grant a role what an application needs: schema usage, the key, outbox and consumer functions, and the monitoring views';

REVOKE ALL ON FUNCTION idem.maintain() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.grant_usage(regrole) FROM PUBLIC;

-- The final sweep: nothing in schema idem is usable by PUBLIC.  Functions get
-- EXECUTE for PUBLIC by default when created, so every fragment revokes its
-- own, and this catches anything a fragment forgot.  Upgrade scripts repeat
-- these three lines.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA idem FROM PUBLIC;
