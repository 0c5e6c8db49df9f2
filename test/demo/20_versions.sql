-- Version-checked updates: a lost update, refused.
--
-- Every row carries a version.  A client writes back the version it read;
-- the database writes the row with the next version, or refuses the write
-- if somebody else changed the row in between.

CREATE TABLE bank_account (id int PRIMARY KEY, owner text NOT NULL,
                           balance numeric NOT NULL, version int NOT NULL);
SELECT idem.enforce_version('bank_account');

-- A new row gets version 1.
INSERT INTO bank_account (id, owner, balance) VALUES (1, 'Ada', 100) RETURNING *;

-- Two tellers open Ada's account at the same moment.  Both see balance 100
-- at version 1.
SELECT balance, version FROM bank_account WHERE id = 1;

-- Teller A pays out 30: 100 - 30 = 70.  She writes the new balance and the
-- version she read.  The row is written with version 2.
UPDATE bank_account SET balance = 70, version = 1 WHERE id = 1 RETURNING balance, version;

-- Teller B pays in 50, computed from the 100 he read: 150.  Without the
-- guard this write would silently replace A's, and the 30 paid out would
-- vanish from the books (the classic lost update).  With the guard it is
-- refused: he read version 1, the row is at version 2 (ID010, HTTP 409).
UPDATE bank_account SET balance = 150, version = 1 WHERE id = 1 RETURNING balance, version;
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- B's application re-reads and retries with what it now sees.
SELECT balance, version FROM bank_account WHERE id = 1;
UPDATE bank_account SET balance = 120, version = 2 WHERE id = 1 RETURNING balance, version;

-- A write that does not say which version it read is a blind write: in
-- strict mode (the default) it is refused too (ID011, HTTP 428).
UPDATE bank_account SET balance = 0 WHERE id = 1;
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- ORMs set the next version themselves and guard with WHERE version = old.
-- The guard accepts that form as well; a stale ORM write matches no row.
UPDATE bank_account SET balance = 125, version = 4 WHERE id = 1 AND version = 3 RETURNING balance, version;
UPDATE bank_account SET balance = 999, version = 4 WHERE id = 1 AND version = 3 RETURNING balance, version;

-- The same check applies to upserts, UPDATE ... FROM, views and
-- partitioned tables.  An upsert carrying a stale version:
INSERT INTO bank_account VALUES (1, 'Ada', 0, 1)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version;
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- Strict mode judges a write by where its values come from.  An UPDATE
-- that computes every value from the row itself cannot lose an update
-- (PostgreSQL recomputes it on the latest row): no version needed.
UPDATE bank_account SET balance = balance + 5 WHERE id = 1 RETURNING balance, version;
-- But version = version + 1 next to a client value (TypeORM's save())
-- proves nothing about what the client read (ID011).
UPDATE bank_account SET owner = 'Ada L.', version = version + 1 WHERE id = 1;
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- In auto mode, writes that do not assign the version are allowed and get
-- the next version; writes that do are still checked.
SELECT idem.enforce_version('bank_account', mode => 'auto');
UPDATE bank_account SET owner = 'Ada Lovelace' WHERE id = 1 RETURNING *;

-- Nothing was lost: 100 - 30 + 50 + 5 + 5.
SELECT * FROM bank_account;
