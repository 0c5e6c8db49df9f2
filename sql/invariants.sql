-- Invariants (SPEC.md section 6): a rule over a group of rows, declared
-- once, checked at commit for every group a transaction touched.  The
-- concurrency guarantee (no write skew at any isolation level) is proven by
-- test/specs/invariants-write-skew-*.spec; this file shows the behaviour a
-- single session sees.

-- Doctors on call: every shift needs at least one doctor on duty.
CREATE TABLE on_call (doctor text PRIMARY KEY, shift_id int, on_duty boolean NOT NULL);
INSERT INTO on_call VALUES ('alice', 1, true), ('bob', 1, true), ('carol', 2, true);

-- The check is one SELECT returning one boolean for the group $1.  It runs
-- with search_path = pg_catalog, pg_temp, so it names tables with their
-- schema; so does watch, which maps each watched table to its group
-- columns.  Every existing group is checked now.
SELECT idem.enforce_invariant('doctor_on_call',
  $$SELECT count(*) >= 1 FROM public.on_call WHERE shift_id = $1 AND on_duty$$,
  '{"public.on_call": ["shift_id"]}',
  message => 'Every shift needs a doctor on call.');
SELECT name, "check", watch, owner, valid, message FROM idem.invariants;

-- The trigger shared by all invariants on the table, and the TRUNCATE guard.
SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
 WHERE tgrelid = 'on_call'::regclass ORDER BY tgname;

-- Taking one of two doctors off is fine; taking the last one off is not.
UPDATE on_call SET on_duty = false WHERE doctor = 'alice';
UPDATE on_call SET on_duty = false WHERE doctor = 'bob';
-- The error carries SQLSTATE ID030 and, like a constraint violation, the
-- invariant's name as CONSTRAINT_NAME and the table whose row named the group.
DO $$
DECLARE
  state text; cname text; tname text; sname text;
BEGIN
  UPDATE on_call SET on_duty = false WHERE doctor = 'bob';
  PERFORM idem.check_invariants();
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, cname = CONSTRAINT_NAME,
                          tname = TABLE_NAME, sname = SCHEMA_NAME;
  RAISE NOTICE 'sqlstate %, constraint %, table %.%', state, cname, sname, tname;
END $$;

-- In a transaction the check runs at COMMIT, which fails and rolls back:
-- in between, the group may be broken (a deferred check).
BEGIN;
UPDATE on_call SET on_duty = false WHERE doctor = 'bob';
INSERT INTO on_call VALUES ('dave', 1, false);
SELECT count(*) AS on_duty_in_shift_1 FROM on_call WHERE shift_id = 1 AND on_duty;
COMMIT;
SELECT doctor, shift_id, on_duty FROM on_call ORDER BY doctor;

-- Breaking it for a moment and repairing it before COMMIT is fine.
BEGIN;
UPDATE on_call SET on_duty = false WHERE doctor = 'bob';
UPDATE on_call SET on_duty = true WHERE doctor = 'alice';
COMMIT;

-- UPDATE checks the old group and the new one: moving carol, shift 2's
-- only doctor, to shift 1 empties shift 2.
UPDATE on_call SET shift_id = 1 WHERE doctor = 'carol';

-- DELETE checks the old group.
DELETE FROM on_call WHERE doctor = 'carol';

-- INSERT checks the new group: a new shift with nobody on duty.
INSERT INTO on_call VALUES ('erin', 3, false);

-- MERGE and COPY fire the same triggers.
MERGE INTO on_call t
USING (VALUES ('alice', false)) AS s(doctor, on_duty) ON t.doctor = s.doctor
WHEN MATCHED THEN UPDATE SET on_duty = s.on_duty;
COPY on_call FROM stdin;
frank	4	f
\.
COPY on_call FROM stdin;
frank	4	t
\.

-- So does a write through a view.
CREATE VIEW shift_2 AS SELECT * FROM on_call WHERE shift_id = 2;
UPDATE shift_2 SET on_duty = false;
DROP VIEW shift_2;

-- A NULL group value is a group like any other ($1 is NULL, so shift_id = $1
-- matches nothing and the check is false).
INSERT INTO on_call VALUES ('gina', NULL, true);

-- idem.check_invariants() checks now, without waiting for COMMIT.
BEGIN;
UPDATE on_call SET on_duty = false WHERE shift_id = 2;
SELECT idem.check_invariants();
ROLLBACK;

-- A group touched in a subtransaction that rolled back is still checked at
-- COMMIT (harmless: it was put back as it was); a failed
-- check_invariants() inside a savepoint can be caught and repaired.
BEGIN;
SAVEPOINT s;
UPDATE on_call SET on_duty = false WHERE shift_id = 2;
ROLLBACK TO s;
DO $$
BEGIN
  UPDATE on_call SET on_duty = false WHERE doctor = 'alice';
  PERFORM idem.check_invariants();
EXCEPTION WHEN SQLSTATE 'ID030' THEN
  RAISE NOTICE 'caught: %', SQLERRM;
END $$;
COMMIT;
SELECT doctor, shift_id, on_duty FROM on_call ORDER BY doctor;

-- A statement touching many rows of few groups checks each group once:
-- the check below announces every run.
CREATE FUNCTION public.announce(shift int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  RAISE NOTICE 'checking shift %', shift;
  RETURN true;
END $$;
CREATE TABLE shifts (shift_id int, doctor int, on_duty boolean NOT NULL);
SELECT idem.enforce_invariant('announced',
  $$SELECT public.announce($1) AND bool_or(on_duty) FROM public.shifts WHERE shift_id = $1$$,
  '{"public.shifts": ["shift_id"]}');
-- 100000 rows, 3 groups: 3 checks.
INSERT INTO shifts SELECT i % 3, i, true FROM generate_series(1, 100000) i;
-- Each group is checked once per transaction, however many statements touched it.
BEGIN;
UPDATE shifts SET on_duty = false WHERE doctor = 1;
UPDATE shifts SET on_duty = false WHERE doctor = 4;
COMMIT;
SELECT idem.unenforce_invariant('announced');
DROP TABLE shifts;

-- An invariant over two tables: an order's total equals the sum of its
-- lines.  $1 is orders.id in one table, order_lines.order_id in the other.
CREATE TABLE orders (id int PRIMARY KEY, total numeric NOT NULL);
CREATE TABLE order_lines (order_id int NOT NULL, line int NOT NULL, amount numeric NOT NULL,
                          PRIMARY KEY (order_id, line));
SELECT idem.enforce_invariant('order_total',
  $$SELECT o.total = (SELECT coalesce(sum(l.amount), 0) FROM public.order_lines l WHERE l.order_id = $1)
      FROM public.orders o WHERE o.id = $1$$,
  '{"public.orders": ["id"], "public.order_lines": ["order_id"]}',
  'Update the order total with its lines.');
BEGIN;
INSERT INTO orders VALUES (1, 30);
INSERT INTO order_lines VALUES (1, 1, 10), (1, 2, 20);
COMMIT;
-- A line added without the total.
INSERT INTO order_lines VALUES (1, 3, 5);
-- The check returns no row for lines of an order that does not exist.
INSERT INTO order_lines VALUES (2, 1, 5);
-- Both together.
BEGIN;
INSERT INTO order_lines VALUES (1, 3, 5);
UPDATE orders SET total = total + 5 WHERE id = 1;
COMMIT;
SELECT * FROM orders;

-- Group columns of several columns, and a check with no group column at all
-- (the whole table is one group).
CREATE TABLE rota (ward text, day date, nurse text);
SELECT idem.enforce_invariant('two_nurses_per_ward_day',
  $$SELECT count(*) <= 2 FROM public.rota WHERE ward = $1 AND day = $2$$,
  '{"public.rota": ["ward", "day"]}');
INSERT INTO rota VALUES ('a', '2024-01-01', 'n1'), ('a', '2024-01-01', 'n2'), ('a', '2024-01-02', 'n3');
INSERT INTO rota VALUES ('a', '2024-01-01', 'n4');
SELECT idem.enforce_invariant('at_most_4_rota_rows',
  $$SELECT count(*) <= 4 FROM public.rota$$, '{"public.rota": []}');
INSERT INTO rota VALUES ('b', '2024-01-01', 'n5');
INSERT INTO rota VALUES ('b', '2024-01-02', 'n6');
SELECT idem.unenforce_invariant('at_most_4_rota_rows');

-- valid => false: the rows already there are not checked (like NOT VALID),
-- only the groups written from now on.  Without the invariant, shift 9
-- gets nobody on duty:
SELECT idem.unenforce_invariant('doctor_on_call');
INSERT INTO on_call VALUES ('hank', 9, false);
-- Declaring it checks every existing group and refuses ...
SELECT idem.enforce_invariant('doctor_on_call',
  $$SELECT count(*) >= 1 FROM public.on_call WHERE shift_id = $1 AND on_duty$$,
  '{"public.on_call": ["shift_id"]}');
-- ... unless valid => false.
SELECT idem.enforce_invariant('doctor_on_call',
  $$SELECT count(*) >= 1 FROM public.on_call WHERE shift_id = $1 AND on_duty$$,
  '{"public.on_call": ["shift_id"]}', valid => false);
SELECT name, valid FROM idem.invariants WHERE name = 'doctor_on_call';
-- Touching shift 9 is checked from now on.
UPDATE on_call SET doctor = 'henry' WHERE doctor = 'hank';
UPDATE on_call SET on_duty = true WHERE doctor = 'hank';
-- Declaring it again, valid => true, checks everything again.
SELECT idem.enforce_invariant('doctor_on_call',
  $$SELECT count(*) >= 1 FROM public.on_call WHERE shift_id = $1 AND on_duty$$,
  '{"public.on_call": ["shift_id"]}', 'Every shift needs a doctor on call.');
SELECT name, valid FROM idem.invariants WHERE name = 'doctor_on_call';

-- TRUNCATE of a watched table is refused: it fires no row trigger, so the
-- groups it empties could not be checked.
TRUNCATE on_call;
TRUNCATE orders, order_lines;

-- unenforce_invariant() removes the invariant and, once no invariant
-- watches a table, its triggers.  It returns false for an unknown name.
SELECT idem.unenforce_invariant('doctor_on_call');
SELECT idem.unenforce_invariant('doctor_on_call');
SELECT idem.unenforce_invariant('order_total');
SELECT idem.unenforce_invariant('two_nurses_per_ward_day');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgname LIKE 'idem_invariant%';
SELECT count(*) AS invariants_left FROM idem.invariants;
TRUNCATE on_call;
DROP TABLE on_call, orders, order_lines, rota;
DROP FUNCTION public.announce(int);
