-- keys / one request handled in atomic mode: pg_idem.
-- BEGIN; reserve; if acquired: business insert + complete; COMMIT.
-- A retried request (retry_pct percent of transactions, keys 1..existing
-- completed beforehand) is answered from reserve alone: outcome replay.
-- Compare with keys_sql.sql (plain SQL) and keys_plpgsql.sql (PL/pgSQL pair).
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
  FROM idem.reserve('k' || :kn::text, jsonb_build_object('amount', :amount::int)) \gset
\if :acquired
INSERT INTO bench.payments (key, amount) VALUES ('k' || :kn::text, :amount::int)
RETURNING id AS payment_id \gset
SELECT idem.complete('k' || :kn::text, :token::bigint,
                     jsonb_build_object('payment_id', :payment_id::bigint), 201);
\endif
COMMIT;
