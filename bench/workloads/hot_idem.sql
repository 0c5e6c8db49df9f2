-- keys / contention: 64 clients hammering 100 hot keys (idem variant).
-- Same transaction as keys_idem.sql, but every client picks one of 100 keys, and
-- the key name carries the current second, so each hot key is claimed once
-- a second and every other request for it in that second waits for the
-- claimer (atomic mode) and then replays its answer: a retry storm.
\set kn random(1, 100)
\set amount :kn % 100000 + 1
BEGIN;
SELECT (outcome = 'acquired')::int AS acquired, coalesce(token, 0) AS token, response, status
  FROM idem.reserve('h' || :kn::text || '-' || extract(epoch FROM now())::bigint::text, jsonb_build_object('amount', :amount::int)) \gset
\if :acquired
INSERT INTO bench.payments (key, amount) VALUES ('h' || :kn::text || '-' || extract(epoch FROM now())::bigint::text, :amount::int)
RETURNING id AS payment_id \gset
SELECT idem.complete('h' || :kn::text || '-' || extract(epoch FROM now())::bigint::text, :token::bigint,
                     jsonb_build_object('payment_id', :payment_id::bigint), 201);
\endif
COMMIT;
