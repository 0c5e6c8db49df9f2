-- test/reliability/payments-schema.sql — the crash loop's application
-- (test/t/080_crash_loop.pl, payment-*.pgbench).
--
-- A payment service: each request carries an idempotency key 'p<N>'; its
-- account and amount are derived from N, so every retry of a key sends the
-- same request.  The service reserves the key, inserts the payment, moves the
-- account's balance with a version-checked update, emits an event and
-- completes the key.

CREATE TABLE accounts (
	id      integer PRIMARY KEY,
	balance bigint NOT NULL DEFAULT 0,
	version bigint
);
SELECT idem.enforce_version('accounts');
INSERT INTO accounts (id) SELECT g FROM generate_series(1, 20) AS g;

CREATE TABLE payments (
	key     text UNIQUE NOT NULL,
	account integer NOT NULL,
	amount  bigint NOT NULL
);

-- Counters for the closing diagnostics.  Sequences are not transactional,
-- so they count calls whose transaction rolled back or crashed too (and may
-- jump ahead by a few dozen on each crash): the diagnostics say "about".
CREATE SEQUENCE n_acquired;
CREATE SEQUENCE n_replay;
CREATE SEQUENCE n_in_progress;
CREATE SEQUENCE n_takeover;
CREATE SEQUENCE n_conflict;

-- Check one reservation against the contract (an assertion inside the
-- workload: a violation raises XR001, which the test looks for in the server
-- log) and return 1 when the caller must do the work, else 0.
CREATE FUNCTION payment_outcome(r idem.reservation, k text)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
	IF r.outcome = 'acquired' THEN
		IF r.token IS NULL OR r.response IS NOT NULL THEN
			RAISE EXCEPTION USING ERRCODE = 'XR001',
				MESSAGE = format('acquired %s with token %s, response %s', k, r.token, r.response);
		END IF;
		IF r.recovery_point IS NOT NULL THEN
			-- A takeover: the earlier holder's checkpoint comes back, and the
			-- fencing token has grown past the one it saved.
			IF r.recovery_point <> 'reserved'
			   OR r.checkpoint ->> 'key' IS DISTINCT FROM k
			   OR (r.checkpoint ->> 'token')::bigint >= r.token THEN
				RAISE EXCEPTION USING ERRCODE = 'XR001',
					MESSAGE = format('takeover of %s: token %s, recovery point %s, checkpoint %s',
									 k, r.token, r.recovery_point, r.checkpoint);
			END IF;
			PERFORM nextval('n_takeover');
		END IF;
		PERFORM nextval('n_acquired');
		RETURN 1;
	ELSIF r.outcome = 'replay' THEN
		IF r.response IS DISTINCT FROM jsonb_build_object('key', k, 'ok', true)
		   OR r.status IS DISTINCT FROM 200 OR r.token IS NOT NULL THEN
			RAISE EXCEPTION USING ERRCODE = 'XR001',
				MESSAGE = format('replay of %s: response %s, status %s, token %s',
								 k, r.response, r.status, r.token);
		END IF;
		PERFORM nextval('n_replay');
		RETURN 0;
	ELSIF r.outcome = 'in_progress' THEN
		IF r.locked_until IS NULL OR r.token IS NOT NULL OR r.response IS NOT NULL THEN
			RAISE EXCEPTION USING ERRCODE = 'XR001',
				MESSAGE = format('in_progress %s: locked_until %s, token %s',
								 k, r.locked_until, r.token);
		END IF;
		PERFORM nextval('n_in_progress');
		RETURN 0;
	END IF;
	RAISE EXCEPTION USING ERRCODE = 'XR001', MESSAGE = format('outcome %s for %s', r.outcome, k);
END
$$;

-- Two consumers: "relay" is driven by the test through the crashes; "audit"
-- never reads, so maintenance may not delete any event and the test can
-- compare the outbox with the payments at the end.
SELECT idem.subscribe('relay', ARRAY['payment']);
SELECT idem.subscribe('audit', ARRAY['payment']);
