-- keys / one request handled in atomic mode: baseline as a PL/pgSQL pair.
-- bench.pl_reserve / bench.pl_complete (bench/sql/setup.sql) implement the
-- same outcomes as idem.reserve / idem.complete in straightforward PL/pgSQL.
-- The script is keys_idem.sql with the function names changed.
-- Variables: -D retry_pct=N -D existing=N
\set r random(1, 100)
\if :r <= :retry_pct
\set kn random(1, :existing)
\else
\set kn random(1000000001, 9000000000000000000)
\endif
\set amount :kn % 100000 + 1
BEGIN;
SELECT (outcome = 'acquired')::int AS acquired, coalesce(token, 0) AS token, response, status
  FROM bench.pl_reserve('k' || :kn::text, jsonb_build_object('amount', :amount::int)) \gset
\if :acquired
INSERT INTO bench.payments (key, amount) VALUES ('k' || :kn::text, :amount::int)
RETURNING id AS payment_id \gset
SELECT bench.pl_complete('k' || :kn::text, :token::bigint,
                         jsonb_build_object('payment_id', :payment_id::bigint), 201);
\endif
COMMIT;
