-- Invariants: a rule over a group of rows that no two concurrent
-- transactions can jointly break.
--
-- Write skew: Alice and Bob are on call tonight; at least one of them must
-- be.  Both ask, at the same moment, to be taken off call.  Each request
-- checks the rule (two on call: fine) and takes its own doctor off.  Each
-- is right on its own, together they leave nobody on call -- and no row
-- lock stops them, because they write different rows.
--
-- The two requests run here in two other sessions (through dblink), so
-- that both transactions are open at the same time.

CREATE EXTENSION IF NOT EXISTS dblink;
CREATE TABLE on_call (doctor text PRIMARY KEY, shift_id int NOT NULL, on_duty boolean NOT NULL);
INSERT INTO on_call VALUES ('alice', 1, true), ('bob', 1, true), ('carol', 2, true);

SELECT format('dbname=%s host=%s port=%s', current_database(),
              split_part(current_setting('unix_socket_directories'), ',', 1),
              current_setting('port')) AS here \gset
SELECT dblink_connect('alice', :'here');
SELECT dblink_connect('bob', :'here');

-- Without pg_idem: both requests check, both write, both commit.
SELECT dblink_exec('alice', 'BEGIN');
SELECT dblink_exec('bob', 'BEGIN');
SELECT * FROM dblink('alice', 'SELECT count(*) FROM on_call WHERE shift_id = 1 AND on_duty') AS t(on_call bigint);
SELECT * FROM dblink('bob', 'SELECT count(*) FROM on_call WHERE shift_id = 1 AND on_duty') AS t(on_call bigint);
SELECT dblink_exec('alice', 'UPDATE on_call SET on_duty = false WHERE doctor = ''alice''');
SELECT dblink_exec('bob', 'UPDATE on_call SET on_duty = false WHERE doctor = ''bob''');
SELECT dblink_exec('alice', 'COMMIT');
SELECT dblink_exec('bob', 'COMMIT');
-- Nobody is on call for shift 1.
SELECT * FROM on_call ORDER BY doctor;
UPDATE on_call SET on_duty = true;

-- With pg_idem: declare the rule once.  The check is a SELECT returning one
-- boolean for the group $1; watch says which table's writes touch which
-- group (here: the shift_id of every row written).
SELECT idem.enforce_invariant('doctor_on_call',
  $$SELECT count(*) >= 1 FROM public.on_call WHERE shift_id = $1 AND on_duty$$,
  '{"public.on_call": ["shift_id"]}',
  message => 'Every shift needs a doctor on call.');
SELECT * FROM idem.invariants;

-- The same two requests.  Whichever commits second is checked against the
-- first one's commit, and refused (ID030, HTTP 409).
SELECT dblink_exec('alice', 'BEGIN');
SELECT dblink_exec('bob', 'BEGIN');
SELECT * FROM dblink('alice', 'SELECT count(*) FROM on_call WHERE shift_id = 1 AND on_duty') AS t(on_call bigint);
SELECT * FROM dblink('bob', 'SELECT count(*) FROM on_call WHERE shift_id = 1 AND on_duty') AS t(on_call bigint);
SELECT dblink_exec('alice', 'UPDATE on_call SET on_duty = false WHERE doctor = ''alice''');
SELECT dblink_exec('bob', 'UPDATE on_call SET on_duty = false WHERE doctor = ''bob''');
SELECT dblink_exec('alice', 'COMMIT');
SELECT dblink_exec('bob', 'COMMIT');
SELECT dblink_exec('bob', 'ROLLBACK');
-- Bob is still on call.
SELECT * FROM on_call ORDER BY doctor;

-- The same holds at REPEATABLE READ, where Bob's own snapshot would still
-- show Alice on call: the check reads the latest committed data, after
-- taking the lock of the shift.
UPDATE on_call SET on_duty = true WHERE doctor = 'alice';
SELECT dblink_exec('alice', 'BEGIN ISOLATION LEVEL REPEATABLE READ');
SELECT dblink_exec('bob', 'BEGIN ISOLATION LEVEL REPEATABLE READ');
SELECT * FROM dblink('bob', 'SELECT count(*) FROM on_call WHERE shift_id = 1 AND on_duty') AS t(on_call bigint);
SELECT dblink_exec('alice', 'UPDATE on_call SET on_duty = false WHERE doctor = ''alice''');
SELECT dblink_exec('alice', 'COMMIT');
SELECT dblink_exec('bob', 'UPDATE on_call SET on_duty = false WHERE doctor = ''bob''');
SELECT dblink_exec('bob', 'COMMIT');
SELECT dblink_exec('bob', 'ROLLBACK');

-- A ledger whose balance never goes negative: the balance of an account is
-- the sum of its entries, written as rows (no row is updated, so no row lock
-- orders two withdrawals).  Two concurrent withdrawals of 80 from 100 each
-- see 100; the second to commit is checked against the first and refused.
CREATE TABLE ledger (account int NOT NULL, amount numeric NOT NULL);
INSERT INTO ledger VALUES (7, 100);
SELECT idem.enforce_invariant('balance_not_negative',
  $$SELECT coalesce(sum(amount), 0) >= 0 FROM public.ledger WHERE account = $1$$,
  '{"public.ledger": ["account"]}',
  'The account cannot go below zero.');
SELECT dblink_exec('alice', 'BEGIN');
SELECT dblink_exec('alice', 'INSERT INTO public.ledger VALUES (7, -80)');
SELECT dblink_exec('bob', 'BEGIN');
SELECT dblink_exec('bob', 'INSERT INTO public.ledger VALUES (7, -80)');
SELECT dblink_exec('alice', 'COMMIT');
SELECT dblink_exec('bob', 'COMMIT');
SELECT dblink_exec('bob', 'ROLLBACK');
SELECT account, sum(amount) AS balance FROM ledger GROUP BY account;

-- A rule over two tables: an order's total is the sum of its lines.  $1 is
-- orders.id in one table and order_lines.order_id in the other.
CREATE TABLE orders (id int PRIMARY KEY, total numeric NOT NULL);
CREATE TABLE order_lines (order_id int NOT NULL, line int NOT NULL, amount numeric NOT NULL);
SELECT idem.enforce_invariant('order_total',
  $$SELECT coalesce((SELECT total FROM public.orders WHERE id = $1), 0)
         = (SELECT coalesce(sum(amount), 0) FROM public.order_lines WHERE order_id = $1)$$,
  '{"public.orders": ["id"], "public.order_lines": ["order_id"]}',
  'Change the order total with its lines, in one transaction.');
-- Inside a transaction the rule may be broken for a while; COMMIT checks it.
BEGIN;
INSERT INTO orders VALUES (1, 30);
INSERT INTO order_lines VALUES (1, 1, 10), (1, 2, 20);
COMMIT;
-- A line added alone is refused at commit.
INSERT INTO order_lines VALUES (1, 3, 5);

-- TRUNCATE would empty groups without a check: refused.
TRUNCATE order_lines;

-- A change that would break a check is refused; dropping what a check
-- needs drops the invariant, with a NOTICE.
ALTER TABLE on_call RENAME COLUMN on_duty TO available;
ALTER TABLE on_call DROP COLUMN on_duty;
SELECT name FROM idem.invariants;

SELECT dblink_disconnect('alice');
SELECT dblink_disconnect('bob');
