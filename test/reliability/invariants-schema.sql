-- test/reliability/invariants-schema.sql — the invariant storm's three
-- applications (test/t/051_invariants_storm.pl, invariants-*.pgbench).
--
-- Each application checks its rule itself, in its own snapshot, before it
-- writes -- the way applications do, and the way write skew defeats: two
-- requests both see the rule kept, both write, both commit.  The invariants
-- are the only thing that can stop the second one.
--
-- pgbench gives up on a client at the first error it cannot retry, and an
-- invariant's refusal (ID030) is such an error.  So every request runs its
-- transaction on a second connection (dblink) and records how it ended
-- (storm_outcomes); pgbench only sees the function return.

CREATE EXTENSION IF NOT EXISTS dblink;

-- 1. Doctors on call: 100 shifts of 3 doctors; each shift keeps at least
--    one doctor on duty.  A request takes its doctor off call if it sees
--    another doctor of the shift on duty.  Nobody comes back, so a shift
--    left without a doctor stays so, and the end state shows every race
--    that was lost.
CREATE TABLE on_call (shift_id int, doctor int, on_duty boolean NOT NULL,
                      PRIMARY KEY (shift_id, doctor));
INSERT INTO on_call SELECT s, d, true FROM generate_series(1, 100) s, generate_series(1, 3) d;

-- 2. A ledger: 100 accounts holding 100 each; no balance may go negative.
--    A request moves 1..60 from one account to another (touching two
--    groups at once, in either order) if it sees enough on the source;
--    half of the moves go to account 0, the bank's, which only receives,
--    so the accounts drain and an overdraft stays visible.  Now and then
--    the bank charges a fee of 1 to every account that looks able to pay,
--    in one transaction touching more groups than max_locks_per_transaction
--    (so it locks the whole invariant instead of each group).
CREATE TABLE ledger (account int NOT NULL, amount int NOT NULL);
CREATE INDEX ON ledger (account);
INSERT INTO ledger SELECT a, 100 FROM generate_series(1, 100) a;

-- 3. Orders: an order's total is the sum of its lines.  A request adds a
--    line and raises the total, half of the time from the total it read
--    (a lost update when another request raised it meanwhile).
CREATE TABLE orders (id int PRIMARY KEY, total int NOT NULL);
CREATE TABLE order_lines (order_id int NOT NULL, amount int NOT NULL);
CREATE INDEX ON order_lines (order_id);
INSERT INTO orders SELECT o, 0 FROM generate_series(1, 10) o;

-- The doctors' and the ledger's checks are slow (a millisecond's sleep):
-- an implementation that checked without serializing the checks of a group
-- would let two commits of one group pass each other's check, and the end
-- state would show it.
SELECT idem.enforce_invariant('doctor_on_call',
  $$SELECT pg_sleep(0.001) IS NOT NULL AND count(*) >= 1 FROM public.on_call WHERE shift_id = $1 AND on_duty$$,
  '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('no_overdraft',
  $$SELECT pg_sleep(0.001) IS NOT NULL AND coalesce(sum(amount), 0) >= 0 FROM public.ledger WHERE account = $1$$,
  '{"public.ledger": ["account"]}');
SELECT idem.enforce_invariant('order_total',
  $$SELECT coalesce((SELECT total FROM public.orders WHERE id = $1), 0)
         = (SELECT coalesce(sum(amount), 0) FROM public.order_lines WHERE order_id = $1)$$,
  '{"public.orders": ["id"], "public.order_lines": ["order_id"]}');

-- How every request ended: 'committed' or the SQLSTATE that stopped it.
CREATE TABLE storm_outcomes (app text NOT NULL, isolation int NOT NULL, outcome text NOT NULL);

-- Open this backend's second connection on first use.
CREATE FUNCTION storm_connect() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF NOT 'w' = ANY (coalesce(dblink_get_connections(), '{}')) THEN
    PERFORM dblink_connect('w', format('dbname=%s host=%s port=%s', current_database(),
                           split_part(current_setting('unix_socket_directories'), ',', 1),
                           current_setting('port')));
  END IF;
END $$;

-- Run one request's statements on the second connection as one transaction
-- at the given isolation level (1 READ COMMITTED, 2 REPEATABLE READ,
-- 3 SERIALIZABLE), and record how it ended.  The sleep between the
-- application's check and its write is where another request slips in.
CREATE FUNCTION storm_run(app text, iso int, check_sql text, write_sql text)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  ok boolean;
  outcome text := 'committed';
BEGIN
  PERFORM storm_connect();
  BEGIN
    PERFORM dblink_exec('w', 'BEGIN ISOLATION LEVEL ' ||
      (ARRAY['READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'])[iso]);
    SELECT r INTO ok FROM dblink('w', check_sql) AS t(r boolean);
    PERFORM pg_sleep(random() * 0.003);
    IF ok THEN
      PERFORM dblink_exec('w', write_sql);
    END IF;
    PERFORM dblink_exec('w', 'COMMIT');
    IF NOT ok THEN
      outcome := 'declined';
    END IF;
  EXCEPTION WHEN OTHERS THEN
    outcome := SQLSTATE;
    BEGIN
      PERFORM dblink_exec('w', 'ROLLBACK');
    EXCEPTION WHEN OTHERS THEN
      NULL;
    END;
  END;
  INSERT INTO storm_outcomes VALUES (app, iso, outcome);
  RETURN outcome;
END $$;
