-- pg_idem 0.1.1 -> 0.2.0
\echo Use "ALTER EXTENSION pg_idem UPDATE TO '0.2.0'" to load this file. \quit

-- checkpoint() without a lease renews by the holder's own lease length,
-- stored per key.  A key held under 0.1.1 was given its lease at its last
-- reserve or checkpoint, which also set updated_at: its length is exactly
-- locked_until - updated_at.
ALTER TABLE idem.keys ADD COLUMN lease interval;
UPDATE idem.keys SET lease = locked_until - updated_at WHERE locked_until IS NOT NULL;
COMMENT ON FUNCTION idem.checkpoint(text, bigint, text, jsonb, text, interval) IS
'Record the progress of a held idempotency key for a successor, and renew its lease by the lease given, else by the holder''s own lease length';

-- The sweep every script ends with (nothing is granted to PUBLIC).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA idem FROM PUBLIC;
