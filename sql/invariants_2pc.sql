-- Invariants and two-phase commit (SPEC.md section 6): PREPARE TRANSACTION
-- checks like COMMIT, and the prepared transaction keeps the locks of the
-- groups it checked until COMMIT PREPARED, so the next check of those
-- groups sees its commit.  Needs max_prepared_transactions > 0 (make test
-- sets 10); with 0 every PREPARE fails, which expected/invariants_2pc_1.out
-- records.
CREATE TABLE on_call (doctor text PRIMARY KEY, shift_id int NOT NULL, on_duty boolean NOT NULL);
INSERT INTO on_call VALUES ('alice', 1, true), ('bob', 1, true), ('carol', 2, true);
SELECT idem.enforce_invariant('doctor_on_call',
  $$SELECT count(*) >= 1 FROM public.on_call WHERE shift_id = $1 AND on_duty$$,
  '{"public.on_call": ["shift_id"]}', 'Every shift needs a doctor on call.');

-- PREPARE TRANSACTION checks like COMMIT: nothing is prepared.
BEGIN;
UPDATE on_call SET on_duty = false WHERE shift_id = 2;
PREPARE TRANSACTION 'idem_inv_bad';
SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'idem_inv_bad';

-- A prepared transaction keeps the lock of the groups it checked until
-- COMMIT PREPARED: a later check of shift 1 waits for it (here, until
-- lock_timeout), a check of shift 2 does not.
BEGIN;
UPDATE on_call SET on_duty = false WHERE doctor = 'alice';
PREPARE TRANSACTION 'idem_inv_alice';
SET lock_timeout = '100ms';
UPDATE on_call SET on_duty = false WHERE doctor = 'bob';
UPDATE on_call SET doctor = 'carl' WHERE doctor = 'carol';
RESET lock_timeout;
SELECT objsubid, mode, granted FROM pg_locks
 WHERE locktype = 'advisory' AND objsubid IN (7472, 7474) ORDER BY objsubid;
COMMIT PREPARED 'idem_inv_alice';
-- Checked after alice's commit: bob is shift 1's last doctor on duty.
UPDATE on_call SET on_duty = false WHERE doctor = 'bob';
SELECT doctor, shift_id, on_duty FROM on_call ORDER BY doctor;

-- A transaction that touched more groups of one invariant than
-- max_locks_per_transaction locks the whole invariant instead of each
-- group (so a bulk load cannot fill the lock table); the invariant's other
-- commits, of any group, wait for it.
BEGIN;
INSERT INTO on_call SELECT 'bulk' || s, s, true
  FROM generate_series(100, 100 + current_setting('max_locks_per_transaction')::int) s;
PREPARE TRANSACTION 'idem_inv_bulk';
SELECT objsubid, mode, count(*) FROM pg_locks
 WHERE locktype = 'advisory' AND objsubid IN (7472, 7474) GROUP BY 1, 2 ORDER BY 1, 2;
SET lock_timeout = '100ms';
UPDATE on_call SET doctor = 'carla' WHERE doctor = 'carl';
RESET lock_timeout;
COMMIT PREPARED 'idem_inv_bulk';
UPDATE on_call SET doctor = 'carla' WHERE doctor = 'carl';

-- ROLLBACK PREPARED releases the locks as well.
BEGIN;
UPDATE on_call SET on_duty = true WHERE doctor = 'alice';
PREPARE TRANSACTION 'idem_inv_undone';
ROLLBACK PREPARED 'idem_inv_undone';
SET lock_timeout = '100ms';
UPDATE on_call SET on_duty = true WHERE doctor = 'alice';
RESET lock_timeout;

SELECT idem.unenforce_invariant('doctor_on_call');
DROP TABLE on_call;
