
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
    -- The role that subscribed it (0.2); only it and its members may use the
    -- consumer.  NULL for a consumer from before 0.2: any role with a grant.
    owner             regrole,
    CHECK ((window_snapshot IS NULL) = (window_done_id IS NULL)
           AND (window_snapshot IS NULL) = (window_last_id IS NULL)),
    CHECK ((batch_id IS NULL) = (batch_last_id IS NULL)),
    CHECK (batch_id IS NULL OR window_snapshot IS NOT NULL)
);

COMMENT ON TABLE idem.consumers IS
'Outbox consumers: topic filter, finished snapshot, window cursor and open batch; written only by the outbox functions';
COMMENT ON COLUMN idem.consumers.owner IS
'Role that subscribed the consumer: only it and its members may read, finish, re-subscribe or unsubscribe it (NULL: created before 0.2, any role with a grant)';

-- Batch ids are unique across consumers and incarnations of a consumer, so a
-- stale relay can never finish somebody else's batch.
CREATE SEQUENCE idem.outbox_batch_seq AS bigint;

-- pg_dump keeps the events, the consumers' positions and both counters.
-- (The leaves hold the rows; a partitioned table has none of its own.  The
-- order is the one the 0.1.1 -> 0.2.0 upgrade leaves, which replaces the
-- 0.1 table and its sequence.)
SELECT pg_catalog.pg_extension_config_dump('idem.consumers', '');
SELECT pg_catalog.pg_extension_config_dump('idem.outbox_batch_seq', '');
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
REVOKE ALL ON TABLE idem.consumers FROM PUBLIC;
REVOKE ALL ON SEQUENCE idem.outbox_batch_seq FROM PUBLIC;

CREATE FUNCTION idem.emit(topic text, payload jsonb, key text DEFAULT NULL,
                          headers jsonb DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_emit'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
-- Not SECURITY DEFINER and no pinned search_path: emit() runs no SQL and
-- looks nothing up through search_path (src/outbox_emit.c writes the row
-- directly, by OID), so EXECUTE and the caller's grant of the topic
-- (src/privileges.c) are its only gates.
--
-- The consumer functions are not SECURITY DEFINER either: they check the
-- current user (a consumer belongs to the role that subscribed it, and it
-- may read only the topics granted to it), which under SECURITY DEFINER
-- would be the owner; they run their SQL as the owner of idem.consumers.

COMMENT ON FUNCTION idem.emit(text, jsonb, text, jsonb) IS
'Write an event in the current transaction and notify channel idem_outbox on commit (while some session listens); returns the event id';

CREATE FUNCTION idem.subscribe(consumer text, topics text[] DEFAULT NULL,
                               from_start boolean DEFAULT false)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_subscribe'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.subscribe(text, text[], boolean) IS
'Create a consumer of the given topics (all when NULL) from now or from the oldest retained event, or change an existing consumer''s topics';

CREATE FUNCTION idem.unsubscribe(consumer text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_unsubscribe'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.unsubscribe(text) IS
'Drop a consumer and its position; returns whether it existed';

CREATE FUNCTION idem.next_batch(consumer text, max_events integer DEFAULT 1000)
RETURNS TABLE (batch_id bigint, id bigint, topic text, key text, payload jsonb,
               headers jsonb, created_at timestamptz)
AS 'MODULE_PATHNAME', 'idem_next_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1000
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.next_batch(text, integer) IS
'Return the consumer''s open batch again, or open a new one of at most max_events committed events in commit-visibility order';

CREATE FUNCTION idem.finish_batch(consumer text, batch_id bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_finish_batch'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.finish_batch(text, bigint) IS
'Close the consumer''s open batch so that its events are never returned again; returns how many events it held';

CREATE FUNCTION idem.trim_outbox(max_rows integer DEFAULT 10000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_trim_outbox'
LANGUAGE C VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.trim_outbox(integer) IS
'Remove the events every consumer has finished (with no consumer, older than idem.outbox_retention): whole leaves of the ring by TRUNCATE, and up to max_rows events one by one in a leaf holding two laps; idem.maintain() does this';

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
--
-- A role sees only the consumers it may use (src/privileges.c; the same rule
-- in SQL): those of roles whose privileges it has, and those from before 0.2
-- (no owner) if it has a grant; the owner of pg_idem (and a superuser) sees
-- every consumer.  The filter is on idem.consumers alone, so it applies
-- before the pending events are counted, and the view is a security
-- barrier.
CREATE VIEW idem.consumer_lag WITH (security_barrier) AS
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

REVOKE ALL ON TABLE idem.consumer_lag FROM PUBLIC;
