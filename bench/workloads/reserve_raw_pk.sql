-- keys / reserve of a new key: reference row.
-- reserve_raw.sql into a table with the primary key alone (no index on
-- expires_at, so no way to purge expired keys in bounded batches): what the
-- expiry index costs an INSERT.
\set kn random(1000000001, 9000000000000000000)
\set amount :kn % 100000 + 1
INSERT INTO bench.pk_only_keys (scope, key, fingerprint, state, token, locked_until,
                            ttl, created_at, updated_at)
VALUES ('', 'k' || :kn::text,
        sha256(convert_to(jsonb_build_object('amount', :amount::int)::text, 'UTF8')),
        'in_progress', 1, now() + interval '30 seconds', interval '24 hours', now(), now())
ON CONFLICT DO NOTHING
RETURNING token;
