-- keys / reserve of a new key: pg_idem, called by an application role.
-- role: bench_app
-- reserve_idem.sql as bench_app, which idem.grant_usage() restricted to
-- four scope patterns (bench/run.sh): the per-call scope check is in the
-- time.  Compare with reserve_idem.sql (the owner, who is not checked).
\set kn random(1000000001, 9000000000000000000)
\set amount :kn % 100000 + 1
SELECT outcome, token
  FROM idem.reserve('k' || :kn::text, jsonb_build_object('amount', :amount::int));
