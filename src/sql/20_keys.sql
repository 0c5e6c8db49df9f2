
-- 20_keys.sql: idempotency keys (SPEC.md section 1)
--
-- One row per (scope, key).  Rows are written only by the functions below;
-- application roles never touch the table directly.

-- What reserve() tells its caller (SPEC.md section 1).
CREATE TYPE idem.outcome AS ENUM ('acquired', 'replay', 'in_progress');

COMMENT ON TYPE idem.outcome IS
'Outcome of idem.reserve(): acquired (do the work), replay (return the stored response), in_progress (retry later)';

-- The answer of reserve().
CREATE TYPE idem.reservation AS (
  outcome        idem.outcome,
  token          bigint,
  response       jsonb,
  status         integer,
  recovery_point text,
  checkpoint     jsonb,
  locked_until   timestamptz,
  expires_at     timestamptz
);

COMMENT ON TYPE idem.reservation IS
'Result of idem.reserve(): the outcome and, depending on it, the token, the stored response or the live lease';

-- The stored state of a key.  "Expired" is not a state: a row whose
-- expires_at has passed behaves as absent, whatever its state, until
-- purge() deletes it.
CREATE TYPE idem.key_state AS ENUM ('in_progress', 'completed', 'released');

COMMENT ON TYPE idem.key_state IS
'Stored state of an idempotency key: in_progress (held under a lease), completed (response stored), released (given up by its holder)';

-- Fencing tokens come from one sequence, so committed reservations never
-- share a token: not with another key, and not with the same key after it
-- expired, was purged and was reserved again.  (Like any sequence value, a
-- token taken by a transaction that never committed may come back after a
-- crash; it never belonged to a durable reservation.)
CREATE SEQUENCE idem.key_token_seq AS bigint;

COMMENT ON SEQUENCE idem.key_token_seq IS
'Source of fencing tokens: every acquisition of an idempotency key takes the next value';

-- Keys and scopes are opaque byte strings, hence COLLATE "C": equality is
-- byte equality and the primary key compares with memcmp, not strcoll.
CREATE TABLE idem.keys (
  scope          text COLLATE pg_catalog."C" NOT NULL,
  key            text COLLATE pg_catalog."C" NOT NULL,
  state          idem.key_state NOT NULL,
  token          bigint NOT NULL DEFAULT pg_catalog.nextval('idem.key_token_seq'::pg_catalog.regclass),
  fingerprint    bytea,                 -- idem.fingerprint(request); NULL for a NULL request
  locked_until   timestamptz,           -- lease end while in_progress, else NULL
  ttl            interval NOT NULL,     -- of the reservation that holds or held the key
  response       jsonb,
  status         integer,
  recovery_point text,
  checkpoint     jsonb,
  created_at     timestamptz NOT NULL,  -- first reserve (of this life of the key)
  updated_at     timestamptz NOT NULL,  -- last change
  expires_at     timestamptz NOT NULL,  -- locked_until + ttl while held, else change time + ttl
  lease          interval,              -- the holder's lease length: checkpoint() renews by it
  first_token    bigint,                -- token of the reserve that began this life of the key (0.2; NULL in rows from 0.1)
  CONSTRAINT keys_pkey PRIMARY KEY (scope, key)
);

-- purge() deletes rows past expires_at in bounded batches.
CREATE INDEX keys_expires_at_idx ON idem.keys (expires_at);

COMMENT ON TABLE idem.keys IS
'Idempotency keys: one row per (scope, key); written only through idem.reserve() and its sibling functions';

SELECT pg_catalog.pg_extension_config_dump('idem.keys', '');
SELECT pg_catalog.pg_extension_config_dump('idem.key_token_seq', '');

REVOKE ALL ON TABLE idem.keys FROM PUBLIC;
REVOKE ALL ON SEQUENCE idem.key_token_seq FROM PUBLIC;

-- reserve, complete, release and checkpoint run no SQL: their C code reaches
-- idem.keys, its indexes, its sequence and its types by OID, and writes them
-- with no privilege check of its own, so EXECUTE on the function is the only
-- gate.  They therefore need neither SECURITY DEFINER (no privilege of the
-- owner is used) nor a pinned search_path (no name is ever looked up through
-- the caller's); either would cost every call for nothing (a pin about 7%: a
-- GUC set and reset, and a recomputed search path).  forget and purge run SQL
-- and pin search_path.  purge is the owner's and SECURITY DEFINER; forget is
-- called by application roles and is not: each of these functions first
-- checks that the current user may use the key's scope (src/privileges.c),
-- and under SECURITY DEFINER the current user would be the owner.  forget
-- runs its DELETE as the owner of idem.keys itself.
CREATE FUNCTION idem.reserve(key text, request jsonb DEFAULT NULL, scope text DEFAULT '',
                             lease interval DEFAULT NULL, ttl interval DEFAULT NULL)
RETURNS idem.reservation
AS 'MODULE_PATHNAME', 'idem_reserve'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.reserve(text, jsonb, text, interval, interval) IS
'Claim an idempotency key: acquired (with a fencing token), replay (with the stored response) or in_progress (with the live lease)';

CREATE FUNCTION idem.complete(key text, token bigint, response jsonb, status integer DEFAULT NULL,
                              scope text DEFAULT '')
RETURNS void
AS 'MODULE_PATHNAME', 'idem_complete'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.complete(text, bigint, jsonb, integer, text) IS
'Store the response of a held idempotency key, so that retries replay it until the key expires';

CREATE FUNCTION idem.release(key text, token bigint, scope text DEFAULT '')
RETURNS void
AS 'MODULE_PATHNAME', 'idem_release'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.release(text, bigint, text) IS
'Give up a held idempotency key without a response; the next reserve takes it over with its recovery point';

CREATE FUNCTION idem.checkpoint(key text, token bigint, recovery_point text, state jsonb DEFAULT NULL,
                                scope text DEFAULT '', lease interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_checkpoint'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.checkpoint(text, bigint, text, jsonb, text, interval) IS
'Record the progress of a held idempotency key for a successor, and renew its lease by the lease given, else by the holder''s own lease length';

CREATE FUNCTION idem.forget(key text, scope text DEFAULT '')
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_forget'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.forget(text, text) IS
'Delete an idempotency key in any state; true when it existed and had not expired';

CREATE FUNCTION idem.purge(max_rows integer DEFAULT 10000)
RETURNS bigint
AS 'MODULE_PATHNAME', 'idem_purge'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.purge(integer) IS
'Delete up to max_rows expired idempotency keys and return how many were deleted';

REVOKE ALL ON FUNCTION idem.reserve(text, jsonb, text, interval, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.complete(text, bigint, jsonb, integer, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.release(text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.checkpoint(text, bigint, text, jsonb, text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.forget(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.purge(integer) FROM PUBLIC;

-- Monitoring: per scope and stored state, the live keys, the expired ones
-- waiting for purge(), and how long the oldest live in-progress key has
-- been held.  Measured at the start of the query (statement_timestamp()),
-- not of the transaction, like the functions' wall clock.
--
-- A role sees only the scopes it may use (src/privileges.c; the same rule
-- in SQL): those matching a pattern of a grant of a role whose privileges it
-- has; the owner of pg_idem (and a superuser) sees every scope.  The filter
-- applies to groups, not rows (a condition with a subquery stays in
-- HAVING), and the view is a security barrier, so that no condition or
-- function of the caller's query sees a row of another scope first.
CREATE VIEW idem.key_stats WITH (security_barrier) AS
SELECT k.scope,
       k.state,
       pg_catalog.count(*) FILTER (WHERE k.expires_at OPERATOR(pg_catalog.>) pg_catalog.statement_timestamp()) AS keys,
       pg_catalog.count(*) FILTER (WHERE k.expires_at OPERATOR(pg_catalog.<=) pg_catalog.statement_timestamp()) AS expired,
       pg_catalog.statement_timestamp() OPERATOR(pg_catalog.-) pg_catalog.min(k.created_at)
         FILTER (WHERE k.state OPERATOR(pg_catalog.=) 'in_progress'::idem.key_state
                 AND k.expires_at OPERATOR(pg_catalog.>) pg_catalog.statement_timestamp()) AS oldest_in_progress_age
FROM idem.keys AS k
GROUP BY k.scope, k.state
HAVING (SELECT pg_catalog.pg_has_role(c.relowner, 'USAGE') FROM pg_catalog.pg_class c
         WHERE c.oid OPERATOR(pg_catalog.=) 'idem.grants'::pg_catalog.regclass)
    OR EXISTS (SELECT FROM idem.grants g
                WHERE pg_catalog.pg_has_role(CAST(g.role AS pg_catalog.oid), 'USAGE')
                  AND (g.scopes IS NULL OR k.scope OPERATOR(pg_catalog.~~) ANY (g.scopes)));

COMMENT ON VIEW idem.key_stats IS
'Idempotency keys per scope and state (the scopes the current role may use): live keys, expired keys awaiting purge, age of the oldest live in-progress key';

REVOKE ALL ON TABLE idem.key_stats FROM PUBLIC;
