-- keys / contention: 64 clients hammering 100 hot keys (sql variant).
-- Same transaction as keys_sql.sql, but every client picks one of 100 keys, and
-- the key name carries the current second, so each hot key is claimed once
-- a second and every other request for it in that second waits for the
-- claimer (atomic mode) and then replays its answer: a retry storm.
\set kn random(1, 100)
\set amount :kn % 100000 + 1
\set token 0
BEGIN;
INSERT INTO bench.sql_keys (scope, key, fingerprint, state, token, locked_until,
                            ttl, created_at, updated_at)
VALUES ('', 'h' || :kn::text || '-' || extract(epoch FROM now())::bigint::text,
        sha256(convert_to(jsonb_build_object('amount', :amount::int)::text, 'UTF8')),
        'in_progress', 1, now() + interval '30 seconds', interval '24 hours', now(), now())
ON CONFLICT DO NOTHING
RETURNING token \aset
\if :token = 0
SELECT state, locked_until, expires_at, response, status,
       fingerprint = sha256(convert_to(jsonb_build_object('amount', :amount::int)::text, 'UTF8')) AS same_request
  FROM bench.sql_keys
 WHERE scope = '' AND key = 'h' || :kn::text || '-' || extract(epoch FROM now())::bigint::text;
\else
INSERT INTO bench.payments (key, amount) VALUES ('h' || :kn::text || '-' || extract(epoch FROM now())::bigint::text, :amount::int)
RETURNING id AS payment_id \gset
UPDATE bench.sql_keys
   SET state = 'completed', response = jsonb_build_object('payment_id', :payment_id::bigint),
       status = 201, locked_until = NULL, updated_at = now(), expires_at = now() + ttl
 WHERE scope = '' AND key = 'h' || :kn::text || '-' || extract(epoch FROM now())::bigint::text AND token = :token::bigint;
\endif
COMMIT;
