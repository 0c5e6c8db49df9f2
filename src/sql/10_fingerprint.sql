
-- 10_fingerprint.sql: request fingerprints

CREATE FUNCTION idem.fingerprint(request jsonb)
RETURNS bytea
AS 'MODULE_PATHNAME', 'idem_fingerprint'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION idem.fingerprint(jsonb) IS
'SHA-256 of the canonical text of a request, as stored with an idempotency key';
