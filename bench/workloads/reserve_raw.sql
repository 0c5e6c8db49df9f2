-- keys / reserve of a new key: baseline.
-- The raw claim a team writes without pg_idem: one INSERT ... ON CONFLICT DO
-- NOTHING RETURNING into a table with the same columns and indexes as
-- idem.keys (primary key, expires_at for purging), storing the same things
-- (request fingerprint, state, token, lease end, ttl).
\set kn random(1000000001, 9000000000000000000)
\set amount :kn % 100000 + 1
INSERT INTO bench.sql_keys (scope, key, fingerprint, state, token, locked_until,
                            ttl, created_at, updated_at)
VALUES ('', 'k' || :kn::text,
        sha256(convert_to(jsonb_build_object('amount', :amount::int)::text, 'UTF8')),
        'in_progress', 1, now() + interval '30 seconds', interval '24 hours', now(), now())
ON CONFLICT DO NOTHING
RETURNING token;
