-- keys / scale: reserve of a key that is already completed (a retry):
-- pg_idem answers replay with the stored response.  Keys k1..k:existing are
-- completed with request {"amount": 1} before the run (run.sh).
-- Variables: -D existing=N
\set kn random(1, :existing)
SELECT outcome, response, status
  FROM idem.reserve('k' || :kn::text, '{"amount": 1}'::jsonb);
