-- test/reliability/storm-schema.sql — the duplicate storm's application
-- (test/t/081_duplicate_storm.pl, storm-*.pgbench).
--
-- 64 clients send requests for the same 100 keys 's1'..'s100' again and
-- again.  The effect of a request is a row in effects; it has no unique
-- constraint on purpose, so a key that acted twice shows up as two rows
-- instead of being hidden behind a unique violation.

CREATE TABLE effects (
	k    integer NOT NULL,
	mode text NOT NULL
);

-- Every answer reserve gave, in the caller's transaction: a request that
-- committed left exactly one row here (a retried serialization failure
-- left none).
CREATE TABLE calls (
	k       integer NOT NULL,
	mode    text NOT NULL,
	outcome idem.outcome NOT NULL
);

-- Check a reservation against the contract (a violation raises XR001, which
-- the test looks for), log it, and return 1 when the caller must act.
CREATE FUNCTION storm_outcome(r idem.reservation, k integer, mode text)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
	IF r.outcome IS NULL
	   OR (r.outcome = 'acquired' AND (r.token IS NULL OR r.response IS NOT NULL))
	   OR (r.outcome = 'replay' AND (r.response IS DISTINCT FROM jsonb_build_object('k', k)
	                                 OR r.status IS DISTINCT FROM 201 OR r.token IS NOT NULL))
	   OR (r.outcome = 'in_progress' AND (r.locked_until IS NULL OR r.token IS NOT NULL)) THEN
		RAISE EXCEPTION USING ERRCODE = 'XR001',
			MESSAGE = format('key s%s (%s): reservation %s breaks the contract', k, mode, r);
	END IF;
	INSERT INTO calls VALUES (k, mode, r.outcome);
	RETURN (r.outcome = 'acquired')::integer;
END
$$;
