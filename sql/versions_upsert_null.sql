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
