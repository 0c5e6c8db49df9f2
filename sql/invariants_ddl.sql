-- Invariants, privileges and schema changes (SPEC.md section 6): only the
-- owner of the watched tables declares; the check runs with the declaring
-- role's rights and a pinned search_path; a DROP or ALTER never leaves a
-- broken invariant behind; partitions are watched with their parent.

-- Privileges.  The table's owner declares; another role may not (42501),
-- even with EXECUTE on the functions.
CREATE ROLE regress_inv_owner;
CREATE ROLE regress_inv_other;
CREATE ROLE regress_inv_app;
GRANT USAGE ON SCHEMA idem TO regress_inv_owner, regress_inv_other;
GRANT EXECUTE ON FUNCTION idem.enforce_invariant(text, text, jsonb, text, boolean),
                          idem.unenforce_invariant(text)
   TO regress_inv_owner, regress_inv_other;
CREATE SCHEMA regress_inv AUTHORIZATION regress_inv_owner;
SET ROLE regress_inv_owner;
CREATE TABLE regress_inv.on_call (doctor text PRIMARY KEY, shift_id int NOT NULL, on_duty boolean NOT NULL);
INSERT INTO regress_inv.on_call VALUES ('alice', 1, true), ('bob', 1, true);
-- The application may set on_duty, finding rows by doctor, but may read
-- neither shift_id nor on_duty.
GRANT USAGE ON SCHEMA regress_inv TO regress_inv_app, regress_inv_other;
GRANT SELECT (doctor), UPDATE (on_duty) ON regress_inv.on_call TO regress_inv_app;
SET ROLE regress_inv_other;
SELECT idem.enforce_invariant('doctor_on_call',
  $$SELECT count(*) >= 1 FROM regress_inv.on_call WHERE shift_id = $1 AND on_duty$$,
  '{"regress_inv.on_call": ["shift_id"]}');
SET ROLE regress_inv_owner;
SELECT idem.enforce_invariant('doctor_on_call',
  $$SELECT count(*) >= 1 FROM regress_inv.on_call WHERE shift_id = $1 AND on_duty$$,
  '{"regress_inv.on_call": ["shift_id"]}');
RESET ROLE;
SELECT name, owner FROM idem.invariants;
-- Another role may not drop it either.
SET ROLE regress_inv_other;
SELECT idem.unenforce_invariant('doctor_on_call');
-- The application's writes are checked with the owner's rights (it could
-- not read the table itself) ...
SET ROLE regress_inv_app;
UPDATE regress_inv.on_call SET on_duty = false WHERE doctor = 'alice';
-- ... and with search_path = pg_catalog, pg_temp: an operator planted in the
-- application's search_path (an "=" that is always true would make any
-- shift look staffed) is never used.
RESET ROLE;
CREATE SCHEMA regress_inv_trap AUTHORIZATION regress_inv_app;
SET ROLE regress_inv_app;
CREATE FUNCTION regress_inv_trap.always(int, int) RETURNS boolean LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR regress_inv_trap.= (LEFTARG = int, RIGHTARG = int, FUNCTION = regress_inv_trap.always);
SET search_path = regress_inv_trap, pg_catalog;
UPDATE regress_inv.on_call SET on_duty = false WHERE doctor = 'bob';
RESET search_path;
RESET ROLE;
SELECT doctor, on_duty FROM regress_inv.on_call ORDER BY doctor;
DROP SCHEMA regress_inv_trap CASCADE;

-- Schema changes.  A change that breaks the check is refused (2BP01) ...
ALTER TABLE regress_inv.on_call RENAME TO rota;
ALTER TABLE regress_inv.on_call RENAME COLUMN on_duty TO duty;
ALTER TABLE regress_inv.on_call RENAME COLUMN shift_id TO shift;
ALTER SCHEMA regress_inv RENAME TO regress_inv2;
CREATE SCHEMA regress_inv_other_schema;
ALTER TABLE regress_inv.on_call SET SCHEMA regress_inv_other_schema;
ALTER TABLE regress_inv.on_call ALTER COLUMN shift_id TYPE point USING point(shift_id, 0);
-- ... one it survives is not: a wider group column is checked as before.
ALTER TABLE regress_inv.on_call ALTER COLUMN shift_id TYPE bigint;
UPDATE regress_inv.on_call SET on_duty = false WHERE doctor = 'bob';
-- Even in the transaction that changed the type after touching the group.
BEGIN;
UPDATE regress_inv.on_call SET on_duty = false WHERE doctor = 'bob';
ALTER TABLE regress_inv.on_call ALTER COLUMN shift_id TYPE numeric;
COMMIT;
-- The invariant's triggers cannot be dropped on their own (2BP01).
DROP TRIGGER idem_invariant ON regress_inv.on_call;
DROP TRIGGER idem_invariant_truncate ON regress_inv.on_call;
-- Dropping a column the check does not use changes nothing.
ALTER TABLE regress_inv.on_call ADD COLUMN note text;
ALTER TABLE regress_inv.on_call DROP COLUMN note;
SELECT count(*) FROM idem.invariants;
-- Dropping what the check needs drops the invariant with a NOTICE, as
-- DROP ... CASCADE drops a view, and its triggers with it.
ALTER TABLE regress_inv.on_call DROP COLUMN on_duty;
SELECT count(*) FROM idem.invariants;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'regress_inv.on_call'::regclass;

-- An invariant over two tables goes when either table goes; the other table
-- loses its triggers.
CREATE TABLE orders (id int PRIMARY KEY, total int NOT NULL);
CREATE TABLE order_lines (order_id int, amount int NOT NULL);
SELECT idem.enforce_invariant('order_total',
  $$SELECT o.total = (SELECT coalesce(sum(amount), 0) FROM public.order_lines WHERE order_id = $1)
      FROM public.orders o WHERE o.id = $1$$,
  '{"public.orders": ["id"], "public.order_lines": ["order_id"]}');
DROP TABLE order_lines;
SELECT count(*) FROM idem.invariants;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'orders'::regclass;
-- So does one whose check calls a function that is dropped.
CREATE FUNCTION public.positive(int) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 > 0';
SELECT idem.enforce_invariant('positive_total',
  'SELECT public.positive(total) FROM public.orders WHERE id = $1', '{"public.orders": ["id"]}');
DROP FUNCTION public.positive(int);
SELECT count(*) FROM idem.invariants;

-- A table read with its inheritance children reads the children too: they
-- must be watched.
CREATE TABLE stock (item int, qty int);
CREATE TABLE stock_2024 () INHERITS (stock);
SELECT idem.enforce_invariant('no_negative_stock',
  'SELECT coalesce(sum(qty), 0) >= 0 FROM public.stock WHERE item = $1', '{"public.stock": ["item"]}');
SELECT idem.enforce_invariant('no_negative_stock',
  'SELECT coalesce(sum(qty), 0) >= 0 FROM public.stock WHERE item = $1',
  '{"public.stock": ["item"], "public.stock_2024": ["item"]}');
INSERT INTO stock_2024 VALUES (1, -1);
-- A new child would be read unwatched: refused.
CREATE TABLE stock_2025 () INHERITS (stock);
SELECT idem.unenforce_invariant('no_negative_stock');
DROP TABLE stock CASCADE;

-- A partitioned table is watched with its partitions: the row trigger is
-- cloned to each, present and future, and each gets the TRUNCATE guard.
CREATE TABLE budget (region text, item int, amount int) PARTITION BY LIST (region);
CREATE TABLE budget_eu PARTITION OF budget FOR VALUES IN ('eu');
CREATE TABLE budget_us PARTITION OF budget FOR VALUES IN ('us');
SELECT idem.enforce_invariant('region_cap',
  'SELECT coalesce(sum(amount), 0) <= 100 FROM public.budget WHERE region = $1',
  '{"public.budget": ["region"]}');
INSERT INTO budget VALUES ('eu', 1, 60), ('us', 1, 60);
INSERT INTO budget_eu VALUES ('eu', 2, 60);
-- A row moving to another partition is checked in its new group.
UPDATE budget SET region = 'us' WHERE region = 'eu';
TRUNCATE budget_eu;
CREATE TABLE budget_asia PARTITION OF budget FOR VALUES IN ('asia');
CREATE TABLE budget_af (region text, item int, amount int);
ALTER TABLE budget ATTACH PARTITION budget_af FOR VALUES IN ('af');
INSERT INTO budget VALUES ('af', 1, 101);
-- What moves or rewrites rows without firing row triggers is refused:
-- DETACH, ATTACH of a table with rows, ALTER COLUMN ... TYPE ... USING.
ALTER TABLE budget DETACH PARTITION budget_af;
CREATE TABLE budget_sa (region text, item int, amount int);
INSERT INTO budget_sa VALUES ('sa', 1, 1000);
ALTER TABLE budget ATTACH PARTITION budget_sa FOR VALUES IN ('sa');
DROP TABLE budget_sa;
ALTER TABLE budget ALTER COLUMN amount TYPE bigint USING amount * 10;
TRUNCATE budget_asia;
TRUNCATE budget_af;
SELECT tgrelid::regclass AS tbl, tgname, tgparentid <> 0 AS cloned
  FROM pg_trigger WHERE tgname LIKE 'idem_invariant%' ORDER BY 1, 2;
-- DROP TABLE of a partition: refused while it has rows (they would leave
-- their groups unchecked), also among other tables and by a qualified
-- name; a role that does not own it gets PostgreSQL's own refusal; an
-- empty partition goes, and so does one whose rows this transaction
-- deleted (the DELETE has their groups checked at commit).
DROP TABLE budget_us;
DROP TABLE budget_asia, public.budget_us;
SET ROLE regress_inv_other;
DROP TABLE budget_asia;
RESET ROLE;
DROP TABLE budget_asia, budget_af;
BEGIN;
DELETE FROM budget_us;
DROP TABLE budget_us;
ROLLBACK;
SELECT count(*) AS us_rows FROM budget_us;
-- A partition dropped together with the watched table: the invariant goes.
CREATE TABLE quota (g int, v int) PARTITION BY LIST (g);
CREATE TABLE quota_1 PARTITION OF quota FOR VALUES IN (1);
SELECT idem.enforce_invariant('quota_cap',
  'SELECT coalesce(sum(v), 0) <= 10 FROM public.quota WHERE g = $1', '{"public.quota": ["g"]}');
INSERT INTO quota VALUES (1, 5);
DROP TABLE quota_1, quota;
SELECT count(*) AS quota_invariants FROM idem.invariants WHERE name = 'quota_cap';
-- A partition watched on its own keeps its own triggers when its parent's
-- invariant goes.
SELECT idem.enforce_invariant('eu_items',
  'SELECT count(*) <= 10 FROM public.budget_eu WHERE item = $1', '{"public.budget_eu": ["item"]}');
SELECT idem.unenforce_invariant('region_cap');
SELECT tgrelid::regclass AS tbl, tgname, tgparentid <> 0 AS cloned
  FROM pg_trigger WHERE tgname LIKE 'idem_invariant%' ORDER BY 1, 2;
TRUNCATE budget_us;
SELECT idem.unenforce_invariant('eu_items');

-- Clean up.
SELECT idem.unenforce_invariant(name) FROM idem.invariants;
DROP TABLE budget, orders;
DROP SCHEMA regress_inv, regress_inv_other_schema CASCADE;
REVOKE ALL ON SCHEMA idem FROM regress_inv_owner, regress_inv_other;
REVOKE ALL ON FUNCTION idem.enforce_invariant(text, text, jsonb, text, boolean),
                       idem.unenforce_invariant(text)
  FROM regress_inv_owner, regress_inv_other;
-- enforce_invariant granted EXECUTE on the touch trigger to the tables' owner
-- (partitions clone it); DROP OWNED takes it back, as for any grant.
DROP OWNED BY regress_inv_owner;
DROP ROLE regress_inv_owner, regress_inv_other, regress_inv_app;
