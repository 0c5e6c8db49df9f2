-- keys / one request handled in atomic mode: baseline in plain SQL.
-- What a team writes by hand against its own keys table (same columns as
-- idem.keys): claim with INSERT ... ON CONFLICT DO NOTHING RETURNING (a
-- concurrent claimer waits for this transaction, like pg_idem's atomic
-- mode); if the key existed, read the stored answer and the fingerprint to
-- compare (replay); else business insert, then store the response with a
-- token-checked UPDATE.  Same round trips as keys_idem.sql plus the replay
-- read.  Variables: -D retry_pct=N -D existing=N
\set r random(1, 100)
\if :r <= :retry_pct
\set kn random(1, :existing)
\else
\set kn random(1000000001, 9000000000000000000)
\endif
\set amount :kn % 100000 + 1
\set token 0
BEGIN;
INSERT INTO bench.sql_keys (scope, key, fingerprint, state, token, locked_until,
                            ttl, created_at, updated_at)
VALUES ('', 'k' || :kn::text,
        sha256(convert_to(jsonb_build_object('amount', :amount::int)::text, 'UTF8')),
        'in_progress', 1, now() + interval '30 seconds', interval '24 hours', now(), now())
ON CONFLICT DO NOTHING
RETURNING token \aset
\if :token = 0
SELECT state, locked_until, expires_at, response, status,
       fingerprint = sha256(convert_to(jsonb_build_object('amount', :amount::int)::text, 'UTF8')) AS same_request
  FROM bench.sql_keys
 WHERE scope = '' AND key = 'k' || :kn::text;
\else
INSERT INTO bench.payments (key, amount) VALUES ('k' || :kn::text, :amount::int)
RETURNING id AS payment_id \gset
UPDATE bench.sql_keys
   SET state = 'completed', response = jsonb_build_object('payment_id', :payment_id::bigint),
       status = 201, locked_until = NULL, updated_at = now(), expires_at = now() + ttl
 WHERE scope = '' AND key = 'k' || :kn::text AND token = :token::bigint;
\endif
COMMIT;
