-- A NULL version is "no version supplied" on every path, upserts included
-- (SPEC.md section 2).  INSERT ... ON CONFLICT DO UPDATE SET version =
-- EXCLUDED.version reads the proposed row after the BEFORE INSERT trigger
-- turned its NULL into 1; the guard still judges it as sending no version.
\set VERBOSITY default
CREATE TABLE account (id int PRIMARY KEY, balance int NOT NULL, version int);
SELECT idem.enforce_version('account');
INSERT INTO account VALUES (1, 100, NULL), (2, 200, NULL);
UPDATE account SET balance = 250, version = 1 WHERE id = 2;   -- now at 2
SELECT * FROM account ORDER BY id;

-- Strict: the blind upsert is refused (ID011), on a row at version 1 ...
INSERT INTO account VALUES (1, 0, NULL)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version;
-- ... and on a newer row: ID011 too, not a version conflict.
INSERT INTO account VALUES (2, 0, NULL)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version;
SELECT * FROM account ORDER BY id;

-- An upsert that sends the version it read works as before.
INSERT INTO account VALUES (2, 300, 2)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version;
-- and so does one that sends version 1 for a row at version 1.
INSERT INTO account VALUES (1, 150, 1)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version;
-- A new row with a NULL version, no conflict: version 1.
INSERT INTO account VALUES (3, 30, NULL)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version;
SELECT * FROM account ORDER BY id;

-- A MERGE that inserts one source row with a NULL version and updates
-- another with the version it read (1) is not an upsert of that row.
MERGE INTO account a
USING (VALUES (4, 40, NULL::int), (3, 35, 1)) AS s(id, balance, version) ON a.id = s.id
WHEN MATCHED THEN UPDATE SET balance = s.balance, version = s.version
WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.balance, s.version);
SELECT * FROM account ORDER BY id;

-- Auto mode: the blind upsert bumps the version.
SELECT idem.enforce_version('account', mode => 'auto');
INSERT INTO account VALUES (1, 0, NULL)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version;
SELECT * FROM account WHERE id = 1;
DROP TABLE account;

-- Cases found in review: the detection follows the plan (SET version =
-- EXCLUDED.version) and the statement's own target, not the value 1.
-- F1: a versioned upsert whose INSERT part leaves version NULL (column not
-- named) and whose DO UPDATE sends the version the client read (1).  The row
-- is at version 2: SPEC says ID010.  The guard takes the assigned 1 for the
-- NULL-turned-1 of the proposed row and judges "no version".
CREATE TABLE acc (id int PRIMARY KEY, balance int NOT NULL, version int);
SELECT idem.enforce_version('acc', mode => 'auto');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'acc'::regclass;
INSERT INTO acc VALUES (1, 100, NULL);
UPDATE acc SET balance = 150, version = 1 WHERE id = 1;     -- another writer: now version 2
-- '--- F1 control: plain UPDATE with the stale version 1 (expect ID010)'
UPDATE acc SET balance = 0, version = 1 WHERE id = 1;
-- '--- F1: upsert with the same stale version 1 (expect ID010)'
INSERT INTO acc (id, balance) VALUES (1, 0)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = 1;
SELECT * FROM acc;      -- lost update if balance = 0
SELECT idem.enforce_version('acc', mode => 'strict');
-- '--- F1 strict: (expect ID010, not ID011)'
INSERT INTO acc (id, balance) VALUES (1, 7)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = 1;

-- F2: the same upsert of hole 5 (EXCLUDED.version, NULL sent) on a table with
-- an ordinary audit trigger that runs SQL: the command counter moved between
-- BEFORE INSERT and BEFORE UPDATE, the NullInsert record no longer matches.
CREATE TABLE acc2 (id int PRIMARY KEY, balance int NOT NULL, version int);
SELECT idem.enforce_version('acc2');
CREATE TABLE audit (op text);
CREATE FUNCTION audit_fn() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO audit VALUES (TG_OP); RETURN NEW; END$$;
CREATE TRIGGER zz_audit BEFORE INSERT OR UPDATE ON acc2 FOR EACH ROW EXECUTE FUNCTION audit_fn();
INSERT INTO acc2 VALUES (1, 100, NULL);
-- '--- F2: blind upsert, NULL version, strict (expect ID011)'
INSERT INTO acc2 VALUES (1, 0, NULL)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version;
SELECT * FROM acc2;

-- F3: same_unique_key compares bytes (datumIsEqual), the arbiter compares
-- with the opclass: numeric 1.0 = 1.00.
CREATE TABLE acc3 (id numeric PRIMARY KEY, balance int NOT NULL, version int);
SELECT idem.enforce_version('acc3');
INSERT INTO acc3 VALUES (1.0, 100, NULL);
-- '--- F3: blind upsert, NULL version, key 1.00 vs 1.0, strict (expect ID011)'
INSERT INTO acc3 VALUES (1.00, 0, NULL)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version;
SELECT * FROM acc3;

-- F4: an expression unique index makes "same key" true for every row: a
-- MERGE that inserts a new row (NULL version) then updates another with a
-- stale version is judged "no version"; in auto mode that is a lost update.
CREATE TABLE u (id int PRIMARY KEY, email text NOT NULL, version int);
CREATE UNIQUE INDEX u_email ON u (lower(email));
SELECT idem.enforce_version('u', mode => 'auto');
INSERT INTO u VALUES (1, 'a@x', NULL);
UPDATE u SET email = 'a@y', version = 1 WHERE id = 1;        -- now version 2
-- '--- F4: MERGE insert id 2 (NULL) + update id 1 with stale version 1 (expect ID010)'
MERGE INTO u USING (VALUES (2, 'b@x', NULL::int), (1, 'stale@x', 1)) AS s(id, email, version)
  ON u.id = s.id
  WHEN MATCHED THEN UPDATE SET email = s.email, version = s.version
  WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.email, s.version);
SELECT * FROM u ORDER BY id;
DROP TABLE acc, acc2, acc3, u, audit; DROP FUNCTION audit_fn();
