-- Strict mode judges a write by where its values come from (SPEC.md
-- section 2, new in 0.2).  A lost update needs a value the client computed
-- from a stale read.  An UPDATE every one of whose assignments is computed
-- from the row itself is an atomic read-modify-write: it cannot lose an
-- update, so it is accepted and the version is bumped once.  An UPDATE that
-- assigns a client value (a parameter, a constant, EXCLUDED, another
-- table's column) must prove the version it read: the version the client
-- read, or the next one; version + 1 proves nothing (ID011).
--
-- The guard reads this from the statement's plan, whatever the path: plain
-- UPDATE, UPDATE ... FROM, ON CONFLICT DO UPDATE, MERGE, views, partitions,
-- prepared statements (custom and generic plans), PL/pgSQL.

CREATE TABLE account (id int PRIMARY KEY, owner text, balance int NOT NULL,
                      tags text[], version int);
SELECT idem.enforce_version('account');
INSERT INTO account (id, owner, balance) VALUES (1, 'ann', 100), (2, 'bob', 100);

-- 1. Atomic read-modify-writes: accepted without a version, one bump each.
UPDATE account SET balance = balance + 1 WHERE id = 1 RETURNING balance, version;
-- Assigning the version from the row is a bump too: stored + 1, not + 2 ...
UPDATE account SET balance = balance + 1, version = version + 1 WHERE id = 1 RETURNING balance, version;
-- ... whatever the expression (it proves nothing, and needs not).
UPDATE account SET balance = balance + 1, version = version + 7 WHERE id = 1 RETURNING balance, version;
UPDATE account SET balance = balance + 1, version = version WHERE id = 1 RETURNING balance, version;
-- A parameter combined with the row is still computed from the row.
PREPARE withdraw(int, int) AS
  UPDATE account SET balance = greatest(balance - $1, 0) WHERE id = $2 RETURNING balance, version;
EXECUTE withdraw(50, 1);
EXECUTE withdraw(500, 1);
-- A value the client sends alongside the row's own still needs no version
-- when it is NULL: "no version supplied", which an atomic write needs not.
UPDATE account SET balance = balance + 10, version = NULL WHERE id = 1 RETURNING balance, version;
-- A version the client does send is still checked.
UPDATE account SET balance = balance + 1, version = 3 WHERE id = 1;
UPDATE account SET balance = balance + 1, version = 8 WHERE id = 1 RETURNING balance, version;

-- 2. Client values: the version read must be proven.
-- TypeORM's save(): version + 1 proves nothing.
UPDATE account SET owner = 'ann b.', version = version + 1 WHERE id = 1;
-- The same with a parameter, and with ActiveRecord's update_all.
PREPARE typeorm_save(text, int) AS
  UPDATE account SET owner = $1, version = version + 1 WHERE id IN ($2) RETURNING version;
EXECUTE typeorm_save('ann c.', 1);
UPDATE account SET owner = 'ann d.', version = COALESCE(version, 0) + 1 WHERE id = 1;
-- Not assigned, or NULL: ID011 as before.
UPDATE account SET owner = 'ann e.' WHERE id = 1;
UPDATE account SET owner = 'ann e.', version = NULL WHERE id = 1;
-- The version read: the expected-version form bumps it ...
SELECT balance, version FROM account WHERE id = 1;
UPDATE account SET owner = 'ann f.', version = 9 WHERE id = 1 RETURNING owner, version;
-- ... the next-version form keeps it (with its WHERE version = old) ...
UPDATE account SET owner = 'ann g.', version = 11 WHERE id = 1 AND version = 10 RETURNING owner, version;
-- ... a stale one is a conflict.
UPDATE account SET owner = 'ann h.', version = 10 WHERE id = 1;
-- A constant beside an atomic change is a client value too.
UPDATE account SET balance = balance + 1, owner = 'ann i.' WHERE id = 1;

-- 3. Which expressions are computed from the row.
-- COALESCE, CASE, GREATEST/LEAST and NULLIF write one of their candidates
-- as it is.  With the row's value or a constant fallback they are from the
-- row (Rails' increment!: COALESCE(col, 0) + 1 on both columns) ...
UPDATE account SET balance = COALESCE(balance, 0) + 1, version = COALESCE(version, 0) + 1
  WHERE id = 1 RETURNING balance, version;
UPDATE account SET owner = CASE WHEN balance > 0 THEN owner ELSE 'closed' END WHERE id = 1 RETURNING owner, version;
-- ... but one whose candidate is a client value may write that value as it
-- is (a PATCH: COALESCE($1, owner) writes $1 when it is given).
PREPARE patch(text) AS UPDATE account SET owner = COALESCE($1, owner) WHERE id = 1 RETURNING owner, version;
EXECUTE patch('ann j.');
-- A custom plan folds COALESCE(NULL, owner) to owner: nothing is sent, and
-- the write is from the row.  A generic plan cannot tell: a client value.
EXECUTE patch(NULL);
SET plan_cache_mode = force_generic_plan;
EXECUTE patch(NULL);
PREPARE patch_case(bool, text) AS
  UPDATE account SET owner = CASE WHEN $1 THEN $2 ELSE owner END WHERE id = 1 RETURNING owner, version;
EXECUTE patch_case(false, 'x');
-- Generic plans of atomic writes are still atomic.
EXECUTE withdraw(1, 1);
RESET plan_cache_mode;
-- An array element or a field of a composite is judged by the value
-- assigned into it, not by the row's array around it.
UPDATE account SET tags[1] = 'vip' WHERE id = 1;
UPDATE account SET tags = array_append(tags, 'vip') WHERE id = 1 RETURNING tags, version;
-- A value read by a subquery is a client value; combined with the row, it
-- is from the row.
UPDATE account SET balance = (SELECT balance FROM account WHERE id = 2) WHERE id = 1;
UPDATE account SET balance = balance + (SELECT count(*) FROM account) WHERE id = 1 RETURNING balance, version;
-- The server's clock and session are no client's values (TypeORM's
-- increment() sets its update-date column to CURRENT_TIMESTAMP) ...
ALTER TABLE account ADD COLUMN updated_at timestamptz, ADD COLUMN updated_by name;
UPDATE account SET balance = balance + 1, updated_at = CURRENT_TIMESTAMP, updated_by = current_user
  WHERE id = 1 RETURNING balance, version, updated_at = now() AS now;
UPDATE account SET balance = balance + 1, updated_at = now() + interval '1 day' WHERE id = 1 RETURNING balance, version;
-- ... but a timestamp the client sends is (Sequelize's increment() sends
-- its updatedAt as a literal), and so is any function without the row.
UPDATE account SET balance = balance + 2, version = version + 1, updated_at = '2026-01-01 00:00:00+00'
  WHERE id = 1;
UPDATE account SET balance = balance + 2, version = version + 1 WHERE id = 1 RETURNING balance, version;
UPDATE account SET balance = balance + 1, owner = md5(random()::text) WHERE id = 1;
UPDATE account SET balance = balance + 1, owner = upper(owner) WHERE id = 1 RETURNING owner, version;

-- 4. UPDATE ... FROM: another table's column is a client value; combined
-- with the row it is an atomic change.
CREATE TABLE deposits (id int, amount int, read_version int);
INSERT INTO deposits VALUES (1, 5, 0), (2, 7, 1);
UPDATE account a SET balance = a.balance + d.amount FROM deposits d WHERE d.id = a.id
  RETURNING a.id, a.balance, a.version;
UPDATE account a SET balance = d.amount FROM deposits d WHERE d.id = a.id;
UPDATE account a SET balance = d.amount, version = a.version + 1 FROM deposits d WHERE d.id = a.id;
UPDATE deposits d SET read_version = a.version FROM account a WHERE a.id = d.id;
UPDATE account a SET balance = d.amount, version = d.read_version FROM deposits d WHERE d.id = a.id
  RETURNING a.id, a.balance, a.version;
-- Another row of the same table is another table's row.
UPDATE account a SET balance = b.balance + 1 FROM account b WHERE a.id = 1 AND b.id = 2;

-- 5. INSERT ... ON CONFLICT DO UPDATE: EXCLUDED is the client's proposed
-- row; the existing row's columns are from the row.
SELECT id, balance, version FROM account WHERE id = 2;
INSERT INTO account (id, balance, version) VALUES (2, 1, 99)
  ON CONFLICT (id) DO UPDATE SET balance = account.balance + EXCLUDED.balance
  RETURNING id, balance, version;
INSERT INTO account (id, balance, version) VALUES (2, 50, 3)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version
  RETURNING id, balance, version;
INSERT INTO account (id, balance, version) VALUES (2, 60, 3)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version;
INSERT INTO account (id, balance) VALUES (2, 60)
  ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = account.version + 1;
-- An atomic upsert that sends a NULL version needs none.
INSERT INTO account (id, balance, version) VALUES (2, 1, NULL)
  ON CONFLICT (id) DO UPDATE SET balance = account.balance + EXCLUDED.balance, version = EXCLUDED.version
  RETURNING id, balance, version;

-- 6. MERGE: the source is a client value; the target's columns are the row.
MERGE INTO account a USING deposits d ON a.id = d.id
  WHEN MATCHED THEN UPDATE SET balance = a.balance + d.amount;
SELECT id, balance, version FROM account ORDER BY id;
MERGE INTO account a USING deposits d ON a.id = d.id
  WHEN MATCHED THEN UPDATE SET balance = d.amount, version = a.version + 1;
MERGE INTO account a USING (VALUES (1, 0, 24)) AS s(id, amount, v) ON a.id = s.id
  WHEN MATCHED THEN UPDATE SET balance = s.amount, version = s.v;
SELECT id, balance, version FROM account ORDER BY id;
-- Actions that assign the version differently: the guard cannot tell per
-- row which one ran.  The version read (row 1's) is checked; the next
-- version (row 2's version + 1) is refused, the conservative reading.
MERGE INTO account a USING (VALUES (1, 25), (2, NULL)) AS s(id, v) ON a.id = s.id
  WHEN MATCHED AND s.v IS NOT NULL THEN UPDATE SET owner = 'merged', version = s.v
  WHEN MATCHED THEN UPDATE SET owner = 'merged', version = a.version + 1;
MERGE INTO account a USING (VALUES (1, 25)) AS s(id, v) ON a.id = s.id
  WHEN MATCHED AND s.v IS NOT NULL THEN UPDATE SET owner = 'merged', version = s.v
  WHEN MATCHED THEN UPDATE SET owner = 'merged', version = a.version + 1;
SELECT id, owner, version FROM account ORDER BY id;

-- 7. Views: the view's columns are the base table's.
CREATE VIEW account_view AS SELECT version AS rev, balance AS amount, owner AS name, id FROM account;
UPDATE account_view SET amount = amount + 1 WHERE id = 2 RETURNING id, amount, rev;
UPDATE account_view SET name = 'bobby', rev = rev + 1 WHERE id = 2;
UPDATE account_view SET name = 'bobby', rev = 7 WHERE id = 2 RETURNING id, name, rev;
DROP VIEW account_view;

-- 8. PL/pgSQL: the function's statements are planned and classified like
-- any other, custom plans first, then generic ones.
CREATE FUNCTION deposit(p_id int, p_amount int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE v int;
BEGIN
  UPDATE account SET balance = balance + p_amount WHERE id = p_id RETURNING version INTO v;
  RETURN v;
END $$;
CREATE FUNCTION rename(p_id int, p_owner text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE v int;
BEGIN
  UPDATE account SET owner = p_owner, version = version + 1 WHERE id = p_id RETURNING version INTO v;
  RETURN v;
END $$;
SELECT deposit(2, 1) FROM generate_series(1, 7);
SELECT rename(2, 'robert');
-- An error caught inside the function leaves no stale classification: the
-- next statement is judged by its own plan.
CREATE FUNCTION rename_or_deposit(p_id int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  BEGIN
    PERFORM rename(p_id, 'robert');
  EXCEPTION WHEN sqlstate 'ID011' THEN
    RAISE NOTICE 'rename refused: %', SQLERRM;
  END;
  RETURN deposit(p_id, 1);
END $$;
SELECT rename_or_deposit(2);

-- 9. Nested statements: each is judged by its own plan.  A function in the
-- SET list that updates another row of the same table ...
CREATE FUNCTION touch_other(p_id int) RETURNS int LANGUAGE sql AS $$
  UPDATE account SET balance = balance + 1 WHERE id = p_id RETURNING 1 $$;
UPDATE account SET owner = 'ann k.' || touch_other(2) WHERE id = 1;
UPDATE account SET balance = balance + touch_other(2) WHERE id = 1 RETURNING id, balance, version;
-- ... a trigger that updates the same table ...
CREATE TABLE audit (id int, note text);
CREATE FUNCTION audit_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE account SET balance = balance + 1 WHERE id = 2;
  RETURN NEW;
END $$;
CREATE TRIGGER audit_bump BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION audit_bump();
SELECT version FROM account WHERE id = 2;
INSERT INTO audit VALUES (1, 'x');
SELECT version FROM account WHERE id = 2;
-- ... and two data-modifying statements on the same table in one query.
WITH w AS (UPDATE account SET balance = balance + 1 WHERE id = 1 RETURNING id)
UPDATE account SET owner = 'bob l.' WHERE id = 2;
-- Each ModifyTable node is judged by its own assignments: a client value
-- with its version in one, an atomic change without one in the other.
SELECT id, version FROM account ORDER BY id;
WITH w AS (UPDATE account SET owner = 'bob l.', version = 18 WHERE id = 2 RETURNING id, version)
UPDATE account SET balance = balance + 1 WHERE id = 1 RETURNING id, balance, version;
SELECT id, owner, balance, version FROM account ORDER BY id;

-- 10. Partitions store their columns in their own order; the statement's
-- classification follows each partition's numbering, and a row routed by
-- ON CONFLICT to a partition is judged in the root's numbering.
CREATE TABLE orders (region text NOT NULL, id int NOT NULL, version int, note text,
                     qty int NOT NULL DEFAULT 0, PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu');
CREATE TABLE orders_us (qty int NOT NULL DEFAULT 0, id int NOT NULL, note text, region text NOT NULL, version int);
ALTER TABLE orders ATTACH PARTITION orders_us FOR VALUES IN ('us');
SELECT idem.enforce_version('orders');
INSERT INTO orders (region, id, note) VALUES ('eu', 1, 'a'), ('us', 1, 'a');
UPDATE orders SET qty = qty + 1 RETURNING tableoid::regclass, region, qty, version;
UPDATE orders SET note = 'b', version = version + 1 WHERE region = 'us';
UPDATE orders SET note = 'b', version = 2 RETURNING tableoid::regclass, region, note, version;
UPDATE orders_us SET qty = qty + 1, version = version + 1 RETURNING qty, version;
INSERT INTO orders (region, id, qty) VALUES ('us', 1, 5)
  ON CONFLICT (region, id) DO UPDATE SET qty = orders.qty + EXCLUDED.qty
  RETURNING tableoid::regclass, qty, version;
INSERT INTO orders (region, id, note, version) VALUES ('us', 1, 'c', 5)
  ON CONFLICT (region, id) DO UPDATE SET note = EXCLUDED.note, version = EXCLUDED.version
  RETURNING tableoid::regclass, note, version;
INSERT INTO orders (region, id, note) VALUES ('us', 1, 'd')
  ON CONFLICT (region, id) DO UPDATE SET note = EXCLUDED.note, version = orders.version + 1;
INSERT INTO orders (region, id, note) VALUES ('us', 1, 'd')
  ON CONFLICT (region, id) DO UPDATE SET note = EXCLUDED.note;
MERGE INTO orders o USING (VALUES ('eu', 1, 3)) AS s(region, id, qty) ON o.region = s.region AND o.id = s.id
  WHEN MATCHED THEN UPDATE SET qty = o.qty + s.qty;
MERGE INTO orders o USING (VALUES ('eu', 1, 3)) AS s(region, id, qty) ON o.region = s.region AND o.id = s.id
  WHEN MATCHED THEN UPDATE SET qty = s.qty;
SELECT tableoid::regclass, region, id, note, qty, version FROM orders ORDER BY region;

-- 11. Auto mode is unchanged: an assigned version is checked as the
-- client's, whatever computed it; a blind write gets the next version.
SELECT idem.enforce_version('account', mode => 'auto');
UPDATE account SET owner = 'ann m.', version = version + 1 WHERE id = 1 RETURNING owner, version;
UPDATE account SET balance = balance + 1, version = version + 2 WHERE id = 1;
UPDATE account SET owner = 'ann n.' WHERE id = 1 RETURNING owner, version;

-- 12. INSERT is unchanged: a NULL version becomes 1, any other is kept.
SELECT idem.enforce_version('account');
INSERT INTO account (id, balance, version) VALUES (3, 0, NULL), (4, 0, 7) RETURNING id, version;

DROP TABLE account, deposits, audit, orders;
DROP FUNCTION deposit, rename, rename_or_deposit, touch_other, audit_bump;
