-- Version-checked updates on partitioned tables.  The guard is enforced on
-- the partitioned table; PostgreSQL clones it into every partition, present
-- and future.  Partitions may store their columns in another order (a
-- dropped column, a table attached with its own column order), so the
-- version column has another attribute number in each: the guard must look
-- it up per partition, and the executor maps the statement's updated
-- columns to each partition's numbering.

CREATE TABLE orders (region text NOT NULL, id int NOT NULL, version int, note text,
                     PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu');
-- orders_us swaps version and note: the parent's version (attnum 3) is its
-- note, the parent's note (attnum 4) is its version.  Reading the parent's
-- numbers in the partition would mistake one column for the other.
CREATE TABLE orders_us (region text NOT NULL, id int NOT NULL, note text, version int);
ALTER TABLE orders ATTACH PARTITION orders_us FOR VALUES IN ('us');
-- orders_asia has dropped columns in front: everything is shifted.
CREATE TABLE orders_asia (gone_1 int, region text NOT NULL, gone_2 text, note text, id int NOT NULL, version int);
ALTER TABLE orders_asia DROP COLUMN gone_1;
ALTER TABLE orders_asia DROP COLUMN gone_2;
ALTER TABLE orders ATTACH PARTITION orders_asia FOR VALUES IN ('asia');
SELECT attrelid::regclass AS rel, attname, attnum FROM pg_attribute
  WHERE attrelid IN ('orders'::regclass, 'orders_us'::regclass, 'orders_asia'::regclass)
    AND attname IN ('version', 'note')
  ORDER BY attrelid::regclass::text, attnum;

SELECT idem.enforce_version('orders');
SELECT tgrelid::regclass AS rel, tgparentid <> 0 AS cloned, pg_get_triggerdef(oid)
  FROM pg_trigger WHERE tgname = 'idem_version_guard' ORDER BY tgrelid::regclass::text;
-- A partition created later gets the guard too.
CREATE TABLE orders_other PARTITION OF orders DEFAULT;
SELECT tgrelid::regclass AS rel, tgparentid <> 0 AS cloned
  FROM pg_trigger WHERE tgname = 'idem_version_guard' ORDER BY tgrelid::regclass::text;

-- INSERT through the parent: NULL -> 1, whatever the partition's layout.
INSERT INTO orders VALUES ('eu', 1, NULL, 'a'), ('us', 1, NULL, 'a'), ('asia', 1, NULL, 'a'),
                          ('mars', 1, 5, 'a')
  RETURNING tableoid::regclass, *;

-- UPDATE through the parent, in each partition.
WITH u AS (UPDATE orders SET note = 'b', version = 1 WHERE id = 1 AND region <> 'mars'
           RETURNING tableoid::regclass, *)
SELECT * FROM u ORDER BY region;
-- Assigning only the note must be a blind write in every partition (in
-- orders_us the parent's note is the partition's version: a guard that
-- read the parent's numbers would take this for an assigned version).
UPDATE orders SET note = 'c' WHERE region = 'us';
\echo :LAST_ERROR_SQLSTATE
UPDATE orders SET note = 'c' WHERE region = 'asia';
\echo :LAST_ERROR_SQLSTATE
-- Assigning the version must be seen as assigned in every partition.
UPDATE orders SET version = 2 WHERE region = 'us' RETURNING tableoid::regclass, *;
UPDATE orders SET version = 2 WHERE region = 'asia' RETURNING tableoid::regclass, *;
UPDATE orders SET note = 'd', version = 2 WHERE region = 'us';
\echo :LAST_ERROR_SQLSTATE
-- Updating a partition directly works the same way.
UPDATE orders_us SET note = 'e', version = 3 RETURNING *;
UPDATE orders_asia SET note = 'e' ;
\echo :LAST_ERROR_SQLSTATE

-- INSERT ... ON CONFLICT DO UPDATE through the parent: the row is routed to
-- its partition, and the updated columns are mapped there.
INSERT INTO orders VALUES ('us', 1, 4, 'upsert')
  ON CONFLICT (region, id) DO UPDATE SET note = EXCLUDED.note, version = EXCLUDED.version
  RETURNING tableoid::regclass, *;
INSERT INTO orders VALUES ('us', 1, 4, 'stale upsert')
  ON CONFLICT (region, id) DO UPDATE SET note = EXCLUDED.note, version = EXCLUDED.version;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO orders VALUES ('us', 1, 5, 'blind upsert')
  ON CONFLICT (region, id) DO UPDATE SET note = EXCLUDED.note;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO orders VALUES ('asia', 1, 3, 'upsert')
  ON CONFLICT (region, id) DO UPDATE SET note = EXCLUDED.note, version = EXCLUDED.version
  RETURNING tableoid::regclass, *;
INSERT INTO orders VALUES ('asia', 1, 3, 'blind upsert')
  ON CONFLICT (region, id) DO UPDATE SET note = EXCLUDED.note;
\echo :LAST_ERROR_SQLSTATE

-- UPDATE ... FROM through the parent.
CREATE TABLE order_edits (region text, id int, note text, read_version int);
INSERT INTO order_edits VALUES ('eu', 1, 'from', 2), ('us', 1, 'from', 5), ('asia', 1, 'from', 4);
WITH u AS (
  UPDATE orders o SET note = e.note, version = e.read_version
    FROM order_edits e WHERE e.region = o.region AND e.id = o.id
    RETURNING o.tableoid::regclass, o.*)
SELECT * FROM u ORDER BY region;
-- One stale row (asia's) refuses the whole statement.
UPDATE order_edits SET read_version = read_version + 1 WHERE region <> 'asia';
UPDATE orders o SET note = e.note, version = e.read_version
  FROM order_edits e WHERE e.region = o.region AND e.id = o.id;
\echo :LAST_ERROR_SQLSTATE
DROP TABLE order_edits;

-- A row that moves to another partition: the UPDATE is checked in the old
-- partition, and the new version is kept by the INSERT into the new one.
UPDATE orders SET region = 'eu', id = 2, version = 6 WHERE region = 'us' RETURNING tableoid::regclass, *;
UPDATE orders SET region = 'asia', id = 2 WHERE region = 'eu' AND id = 2;
\echo :LAST_ERROR_SQLSTATE
UPDATE orders SET region = 'asia', id = 2, version = 7 WHERE region = 'eu' AND id = 2 RETURNING tableoid::regclass, *;

-- Through an auto-updatable view over the partitioned table.
CREATE VIEW orders_view AS SELECT note AS memo, version AS rev, region, id FROM orders;
UPDATE orders_view SET memo = 'view', rev = 8 WHERE region = 'asia' AND id = 2 RETURNING *;
UPDATE orders_view SET memo = 'view' WHERE region = 'asia' AND id = 2;
\echo :LAST_ERROR_SQLSTATE
DROP VIEW orders_view;

-- Auto mode on the parent applies to every partition.
SELECT idem.enforce_version('orders', mode => 'auto');
SELECT tgrelid::regclass AS rel, tgparentid <> 0 AS cloned, pg_get_triggerdef(oid)
  FROM pg_trigger WHERE tgname = 'idem_version_guard' ORDER BY tgrelid::regclass::text;
WITH u AS (UPDATE orders SET note = 'auto' RETURNING tableoid::regclass, *)
SELECT * FROM u ORDER BY region, id;

-- A partition's inherited guard is managed on the parent: enforcing the same
-- configuration on the partition is a no-op, another one or unenforcing it
-- is an error (42P16).
SELECT idem.enforce_version('orders_us', mode => 'auto');
SELECT idem.enforce_version('orders_us', mode => 'strict');
\echo :LAST_ERROR_SQLSTATE
SELECT idem.unenforce_version('orders_us');
\echo :LAST_ERROR_SQLSTATE

-- DETACH PARTITION drops the cloned guard: a detached table is unguarded
-- until it is enforced on its own.  Attaching a table that has a guard of
-- its own is refused by PostgreSQL (two triggers of the same name, 42710):
-- unenforce it first, and it gets a clone of the parent's.
ALTER TABLE orders DETACH PARTITION orders_other;
SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders_other'::regclass;
SELECT idem.enforce_version('orders_other', mode => 'auto');
ALTER TABLE orders ATTACH PARTITION orders_other DEFAULT;
\echo :LAST_ERROR_SQLSTATE
SELECT idem.unenforce_version('orders_other');
ALTER TABLE orders ATTACH PARTITION orders_other DEFAULT;
SELECT tgrelid::regclass AS rel, tgparentid <> 0 AS cloned
  FROM pg_trigger WHERE tgrelid = 'orders_other'::regclass;

-- Unenforcing the parent removes every clone.
SELECT idem.unenforce_version('orders');
SELECT count(*) FROM pg_trigger WHERE tgname = 'idem_version_guard';

-- A partition enforced on its own first: enforcing the parent replaces the
-- partition's guard with a clone of the parent's (with a NOTICE).
SELECT idem.enforce_version('orders_eu', mode => 'auto');
SELECT idem.enforce_version('orders');
SELECT tgrelid::regclass AS rel, tgparentid <> 0 AS cloned, pg_get_triggerdef(oid)
  FROM pg_trigger WHERE tgname = 'idem_version_guard' ORDER BY tgrelid::regclass::text;
UPDATE orders SET note = 'strict again' WHERE region = 'eu';
\echo :LAST_ERROR_SQLSTATE

-- Sub-partitions: the guard reaches the leaves, and names the table it was
-- enforced on.
CREATE TABLE orders_sa (region text NOT NULL, id int NOT NULL, version int, note text)
  PARTITION BY RANGE (id);
CREATE TABLE orders_sa_low PARTITION OF orders_sa FOR VALUES FROM (MINVALUE) TO (100);
ALTER TABLE orders ATTACH PARTITION orders_sa FOR VALUES IN ('sa');
INSERT INTO orders VALUES ('sa', 1, NULL, 'leaf') RETURNING tableoid::regclass, *;
UPDATE orders SET note = 'leaf 2', version = 1 WHERE region = 'sa' RETURNING tableoid::regclass, *;
UPDATE orders SET note = 'leaf 3' WHERE region = 'sa';
\echo :LAST_ERROR_SQLSTATE
SELECT idem.unenforce_version('orders_sa_low');
\echo :LAST_ERROR_SQLSTATE

DROP TABLE orders;
