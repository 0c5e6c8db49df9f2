-- Version-checked updates (SPEC.md section 2): the rules of idem.version_guard().
--
-- A client reads a row with its version, then writes it back assigning the
-- version it read.  The guard writes the row with the next version, or
-- refuses the write when the row changed in between (ID010).  An UPDATE that
-- does not assign the version is refused in strict mode (ID011) and given the
-- next version in auto mode.  After each error, :LAST_ERROR_SQLSTATE shows
-- its SQLSTATE.

CREATE TABLE acct (id int PRIMARY KEY, owner text, balance int NOT NULL, version int NOT NULL);
SELECT idem.enforce_version('acct');

-- INSERT: a NULL (or omitted) version becomes 1.
INSERT INTO acct (id, owner, balance) VALUES (1, 'ann', 100) RETURNING *;
INSERT INTO acct VALUES (2, 'bob', 50, NULL) RETURNING *;
-- A non-NULL version is kept as given, 0 and negative numbers included
-- (ORMs such as Hibernate start at 0; a restored dump keeps its versions).
INSERT INTO acct VALUES (3, 'cy', 10, 0), (4, 'di', 10, 41), (5, 'ed', 10, -7) RETURNING *;
-- COPY runs the same INSERT rule.
COPY acct (id, owner, balance) FROM stdin;
6	fay	60
\.
COPY acct FROM stdin;
7	gus	70	12
\.
SELECT id, version FROM acct WHERE id IN (6, 7) ORDER BY id;

-- UPDATE, expected-version form: assign the version the row was read at.
-- The row is written with the next version; RETURNING shows it (an ETag).
UPDATE acct SET balance = 90, version = 1 WHERE id = 1 RETURNING *;
-- The same write again is stale: the row moved on to version 2.
UPDATE acct SET balance = 80, version = 1 WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
-- Any version other than the stored one or the next one is a conflict too.
UPDATE acct SET balance = 80, version = 7 WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
UPDATE acct SET balance = 80, version = 4 WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
UPDATE acct SET balance = 80, version = 0 WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
-- The refused writes changed nothing.
SELECT * FROM acct WHERE id = 1;

-- UPDATE, next-version form of ORMs: assign stored + 1 and guard with
-- WHERE version = old.  The assigned version is kept.
UPDATE acct SET balance = 85, version = 3 WHERE id = 1 AND version = 2 RETURNING *;
-- A stale ORM write matches no row: the ORM reports its own conflict.
UPDATE acct SET balance = 0, version = 3 WHERE id = 1 AND version = 2 RETURNING *;
-- An UPDATE that computes every value from the row itself is an atomic
-- read-modify-write (0.2, see versions_provenance): the version it assigns
-- from the row proves nothing and needs not; the row gets the next version,
-- once.
UPDATE acct SET balance = balance + 1, version = version WHERE id = 1 RETURNING version;
UPDATE acct SET balance = balance + 1, version = version + 1 WHERE id = 1 RETURNING version;
BEGIN;
UPDATE acct SET balance = balance + 1, version = version + 2 WHERE id = 1 RETURNING version;
ROLLBACK;

-- Within one transaction each write must carry the version the previous
-- one returned.
BEGIN;
UPDATE acct SET owner = 'bobby', version = 1 WHERE id = 2 RETURNING version;
UPDATE acct SET owner = 'robert', version = 1 WHERE id = 2;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- Strict mode (the default): an UPDATE that does not assign the version is
-- a blind write and is refused.
UPDATE acct SET balance = 0 WHERE id = 2;
\echo :LAST_ERROR_SQLSTATE
-- Assigning NULL means "no version supplied" and is refused the same way.
UPDATE acct SET balance = 0, version = NULL WHERE id = 2;
\echo :LAST_ERROR_SQLSTATE
UPDATE acct SET balance = 0, version = DEFAULT WHERE id = 2;
\echo :LAST_ERROR_SQLSTATE
-- The decision is per statement: it is the SET list that counts, not the
-- values (SET version = version assigns it).  An UPDATE matching no row
-- never reaches the guard.
UPDATE acct SET balance = 0 WHERE id = 999;
-- Multi-column assignment counts as assigning.
UPDATE acct SET (balance, version) = (SELECT 49, 1) WHERE id = 2 RETURNING *;

-- Auto mode: enforcing again replaces the configuration.  A blind write now
-- gets the next version; an assigned version is still checked.
SELECT idem.enforce_version('acct', mode => 'auto');
UPDATE acct SET balance = 48 WHERE id = 2 RETURNING *;
UPDATE acct SET balance = 47, version = NULL WHERE id = 2 RETURNING *;
UPDATE acct SET balance = 46, version = 1 WHERE id = 2;
\echo :LAST_ERROR_SQLSTATE
UPDATE acct SET balance = 46, version = 4 WHERE id = 2 RETURNING *;
UPDATE acct SET balance = 45, version = 6 WHERE id = 2 AND version = 5 RETURNING *;
SELECT idem.enforce_version('acct');

-- A stored NULL version (a row written before the table was enforced)
-- counts as 0: the client that read NULL sends 0 and the row gets version 1.
ALTER TABLE acct ALTER COLUMN version DROP NOT NULL;
ALTER TABLE acct DISABLE TRIGGER idem_version_guard;
INSERT INTO acct VALUES (8, 'hal', 80, NULL);
ALTER TABLE acct ENABLE TRIGGER idem_version_guard;
UPDATE acct SET balance = 81, version = NULL WHERE id = 8;
\echo :LAST_ERROR_SQLSTATE
UPDATE acct SET balance = 81, version = 3 WHERE id = 8;
\echo :LAST_ERROR_SQLSTATE
UPDATE acct SET balance = 81, version = 0 WHERE id = 8 RETURNING *;
ALTER TABLE acct DISABLE TRIGGER idem_version_guard;
UPDATE acct SET version = NULL WHERE id = 8;
ALTER TABLE acct ENABLE TRIGGER idem_version_guard;
UPDATE acct SET balance = 82, version = 1 WHERE id = 8 AND version IS NULL RETURNING *;
DELETE FROM acct WHERE id = 8;
ALTER TABLE acct ALTER COLUMN version SET NOT NULL;

-- The error fields that drivers expose (SQLSTATE, schema, table, column).
CREATE FUNCTION pg_temp.error_fields(stmt text) RETURNS TABLE (field text, value text)
LANGUAGE plpgsql AS $$
DECLARE
  st text; msg text; det text; hnt text; sch text; tbl text; col text;
BEGIN
  EXECUTE stmt;
  RETURN QUERY SELECT 'no error', NULL::text;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
    det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT,
    sch = SCHEMA_NAME, tbl = TABLE_NAME, col = COLUMN_NAME;
  RETURN QUERY VALUES ('sqlstate', st), ('message', msg), ('detail', det),
    ('hint', hnt), ('schema', sch), ('table', tbl), ('column', col);
END $$;
SELECT * FROM pg_temp.error_fields('UPDATE acct SET balance = 1, version = 1 WHERE id = 1');
SELECT * FROM pg_temp.error_fields('UPDATE acct SET balance = 1 WHERE id = 1');

-- INSERT ... ON CONFLICT DO UPDATE: EXCLUDED.version is the version the
-- client read, checked against the row that is in the way.
SELECT id, version FROM acct WHERE id = 3;
INSERT INTO acct VALUES (3, 'cy', 11, 0)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version
  RETURNING *;
INSERT INTO acct VALUES (3, 'cy', 12, 0)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version;
\echo :LAST_ERROR_SQLSTATE
-- The next-version form works as an upsert too.
INSERT INTO acct VALUES (3, 'cy', 12, 2)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version
  WHERE acct.version = 1
  RETURNING *;
-- Not assigning the version in DO UPDATE is a blind write (strict: refused).
INSERT INTO acct VALUES (3, 'cy', 13, 2)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance;
\echo :LAST_ERROR_SQLSTATE
-- Without a conflict the row is inserted as given (NULL -> 1).
INSERT INTO acct VALUES (9, 'ida', 90, NULL)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version
  RETURNING *;

-- UPDATE ... FROM: each row is checked against its own version.
CREATE TABLE acct_changes (id int, balance int, read_version int);
INSERT INTO acct_changes VALUES (1, 1000, 5), (2, 2000, 6), (3, 3000, 2);
WITH u AS (
  UPDATE acct a SET balance = c.balance, version = c.read_version
    FROM acct_changes c WHERE c.id = a.id
    RETURNING a.id, a.balance, a.version)
SELECT * FROM u ORDER BY id;
-- One stale row refuses the whole statement.
UPDATE acct_changes c SET balance = c.balance + 1, read_version = a.version
  FROM acct a WHERE a.id = c.id AND c.id <> 2;
UPDATE acct_changes SET read_version = 1 WHERE id = 2;
UPDATE acct a SET balance = c.balance, version = c.read_version
  FROM acct_changes c WHERE c.id = a.id;
\echo :LAST_ERROR_SQLSTATE
SELECT id, balance, version FROM acct WHERE id IN (1, 2, 3) ORDER BY id;
-- Not assigning it from FROM is a blind write.
UPDATE acct a SET balance = c.balance FROM acct_changes c WHERE c.id = a.id;
\echo :LAST_ERROR_SQLSTATE

-- Through an auto-updatable view: the view's columns are renamed and
-- reordered; the rewriter maps them to the base table's, so the guard
-- still knows whether the version was assigned.
CREATE VIEW acct_view AS SELECT version AS rev, balance AS amount, id FROM acct WHERE id < 100;
SELECT idem.enforce_version('acct_view');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM acct_view WHERE id = 4;
UPDATE acct_view SET amount = 11, rev = 41 WHERE id = 4 RETURNING *;
UPDATE acct_view SET amount = 12, rev = 41 WHERE id = 4;
\echo :LAST_ERROR_SQLSTATE
UPDATE acct_view SET amount = 12 WHERE id = 4;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO acct_view (id, amount) VALUES (10, 100) RETURNING *;
-- A view that selects the version column's neighbour under its name does
-- not fool the guard: it is the base column that counts.
CREATE VIEW acct_tricky AS SELECT id, balance AS version, version AS real_version FROM acct;
UPDATE acct_tricky SET version = 5 WHERE id = 4;
\echo :LAST_ERROR_SQLSTATE
UPDATE acct_tricky SET version = 5, real_version = 42 WHERE id = 4 RETURNING *;
DROP VIEW acct_view, acct_tricky;

-- MERGE: WHEN MATCHED THEN UPDATE follows the same rules.
MERGE INTO acct a USING (VALUES (4, 13, 43)) AS s(id, balance, v) ON a.id = s.id
  WHEN MATCHED THEN UPDATE SET balance = s.balance, version = s.v;
SELECT id, balance, version FROM acct WHERE id = 4;
MERGE INTO acct a USING (VALUES (4, 14, 43)) AS s(id, balance, v) ON a.id = s.id
  WHEN MATCHED THEN UPDATE SET balance = s.balance, version = s.v;
\echo :LAST_ERROR_SQLSTATE
MERGE INTO acct a USING (VALUES (4, 14)) AS s(id, balance) ON a.id = s.id
  WHEN MATCHED THEN UPDATE SET balance = s.balance;
\echo :LAST_ERROR_SQLSTATE
-- A documented limit: the updated-column set is per statement, so in a
-- MERGE whose other UPDATE action assigns the version, an action that does
-- not is seen as assigning the stored version (a bump, not ID011).
MERGE INTO acct a USING (VALUES (4, 15, 44), (5, 15, NULL)) AS s(id, balance, v) ON a.id = s.id
  WHEN MATCHED AND s.v IS NOT NULL THEN UPDATE SET balance = s.balance, version = s.v
  WHEN MATCHED THEN UPDATE SET balance = s.balance;
SELECT id, balance, version FROM acct WHERE id IN (4, 5) ORDER BY id;

-- Overflow: a version never wraps around; the next version of the largest
-- integer is an error (22003), in every form that would need it.
INSERT INTO acct VALUES (11, 'max', 0, 2147483646);
UPDATE acct SET balance = 1, version = 2147483647 WHERE id = 11 AND version = 2147483646 RETURNING version;
UPDATE acct SET balance = 2, version = 2147483647 WHERE id = 11;
\echo :LAST_ERROR_SQLSTATE
SELECT idem.enforce_version('acct', mode => 'auto');
UPDATE acct SET balance = 2 WHERE id = 11;
\echo :LAST_ERROR_SQLSTATE
-- A stale client cannot slip in: -2147483648 is not "the next version".
UPDATE acct SET balance = 2, version = -2147483648 WHERE id = 11;
\echo :LAST_ERROR_SQLSTATE
-- The way out the hint names: widen the column.  The guard follows the new
-- type from the next statement on.
ALTER TABLE acct ALTER COLUMN version TYPE bigint;
UPDATE acct SET balance = 2, version = 2147483647 WHERE id = 11 RETURNING version;
-- bigint overflows the same way.
INSERT INTO acct VALUES (12, 'maxbig', 0, 9223372036854775806);
UPDATE acct SET balance = 1, version = 9223372036854775807 WHERE id = 12 AND version = 9223372036854775806 RETURNING version;
UPDATE acct SET balance = 3, version = 9223372036854775807 WHERE id = 12;
\echo :LAST_ERROR_SQLSTATE
UPDATE acct SET balance = 3 WHERE id = 12;
\echo :LAST_ERROR_SQLSTATE
-- A bigint version column follows the same rules.
UPDATE acct SET balance = 4, version = 3 WHERE id = 3 RETURNING id, version;
UPDATE acct SET balance = 4, version = 3 WHERE id = 3;
\echo :LAST_ERROR_SQLSTATE

-- DELETE needs no version.
DELETE FROM acct WHERE id IN (11, 12);
SELECT id, owner, balance, version FROM acct ORDER BY id;

DROP TABLE acct, acct_changes;
