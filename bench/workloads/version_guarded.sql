-- versions / UPDATE on a table guarded by idem.version_guard (pg_idem).
-- `version = version` assigns the version column the value the client read
-- (here: the stored one, which a client that just read the row would send),
-- without a separate read round trip that would dilute the comparison.  The
-- statement is identical on the three tables; only the trigger differs:
--   bench.acct_plain    no trigger
--   bench.acct_guarded  idem.version_guard (C), strict mode: bumps to version + 1
--   bench.acct_plpgsql  bench.pl_version_guard (PL/pgSQL): bumps to version + 1
\set id random(1, 100000)
\set delta random(-100, 100)
UPDATE bench.acct_guarded SET balance = balance + :delta::int, version = version WHERE id = :id::int;
