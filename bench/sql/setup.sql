-- bench/sql/setup.sql — every table and function the benchmark workloads use,
-- created fresh before each pass (fsync on, fsync off, scale).
--
-- The baselines are written the way a competent team would write them
-- without pg_idem: same columns as the pg_idem tables they stand in for, the
-- same indexes (a primary key and nothing else), plain SQL where plain SQL
-- does the job, and PL/pgSQL written straightforwardly (no deliberate waste,
-- no tricks).  pg_idem-side objects are created only when the capability is
-- installed (the capabilities are developed in parallel).

\set ON_ERROR_STOP on
SET client_min_messages = warning;

DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;

------------------------------------------------------------------------------
-- Business table written by the "reserve + business insert + complete"
-- workloads, shared by every variant (they run one after another, never at
-- the same time, so sharing it keeps the business write identical).
------------------------------------------------------------------------------
CREATE TABLE bench.payments (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	key        text NOT NULL,
	amount     integer NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);

------------------------------------------------------------------------------
-- Idempotency keys without pg_idem.
--
-- bench.sql_keys is the table behind the hand-written SQL baselines
-- (workloads/reserve_raw*.sql, keys_sql.sql, hot_sql.sql); bench.pl_keys the
-- one behind the PL/pgSQL function pair.  Both have the columns SPEC.md
-- section 1 needs (the same information idem.keys keeps): fingerprint of the
-- first request, state, fencing token, lease end, stored response and status,
-- recovery point and checkpoint, the ttl to apply at completion, timestamps.
------------------------------------------------------------------------------
CREATE TABLE bench.sql_keys (
	scope          text COLLATE "C" NOT NULL,
	key            text COLLATE "C" NOT NULL,
	fingerprint    bytea,
	state          text NOT NULL,
	token          bigint NOT NULL,
	locked_until   timestamptz,
	response       jsonb,
	status         integer,
	recovery_point text,
	checkpoint     jsonb,
	ttl            interval NOT NULL,
	created_at     timestamptz NOT NULL,
	updated_at     timestamptz NOT NULL,
	expires_at     timestamptz,
	PRIMARY KEY (scope, key)
);
-- Expired keys must be purged in bounded batches (SPEC.md: purge(max_rows)),
-- which needs an index on the expiry time: idem.keys has one, and so does
-- any keys table built for the same job.
CREATE INDEX ON bench.sql_keys (expires_at);
CREATE TABLE bench.pl_keys (LIKE bench.sql_keys INCLUDING ALL);
-- For reference only: the same table with its primary key alone (no purge
-- support), to show what the expiry index costs an INSERT.
CREATE TABLE bench.pk_only_keys (LIKE bench.sql_keys INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE bench.pk_only_keys ADD PRIMARY KEY (scope, key);

-- What the PL/pgSQL reserve returns: the same fields as idem.reservation.
CREATE TYPE bench.pl_reservation AS (
	outcome        text,
	token          bigint,
	response       jsonb,
	status         integer,
	recovery_point text,
	checkpoint     jsonb,
	locked_until   timestamptz,
	expires_at     timestamptz
);

-- A straightforward PL/pgSQL reserve with the semantics of SPEC.md section 1:
-- claim a new key with INSERT ... ON CONFLICT DO NOTHING (a concurrent
-- claimer of the same key waits for our transaction, as in atomic mode);
-- otherwise read the row and decide: fingerprint mismatch, replay,
-- in_progress, or takeover of an expired/released/lapsed key (the only path
-- that locks, through a token-checked UPDATE).
CREATE FUNCTION bench.pl_reserve(p_key text, p_request jsonb DEFAULT NULL,
								 p_scope text DEFAULT '',
								 p_lease interval DEFAULT '30 seconds',
								 p_ttl interval DEFAULT '24 hours')
RETURNS bench.pl_reservation
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
	fp  bytea := sha256(convert_to(p_request::text, 'UTF8'));
	k   bench.pl_keys;
	res bench.pl_reservation;
BEGIN
	IF p_key IS NULL OR p_scope IS NULL THEN
		RAISE EXCEPTION 'key and scope must not be null' USING ERRCODE = '22004';
	END IF;
	IF octet_length(p_key) NOT BETWEEN 1 AND 255 OR octet_length(p_scope) > 255 THEN
		RAISE EXCEPTION 'key or scope too long' USING ERRCODE = '22001';
	END IF;
	IF p_lease <= interval '0' OR p_ttl <= interval '0' THEN
		RAISE EXCEPTION 'lease and ttl must be positive' USING ERRCODE = '22023';
	END IF;

	INSERT INTO bench.pl_keys (scope, key, fingerprint, state, token,
							   locked_until, ttl, created_at, updated_at)
	VALUES (p_scope, p_key, fp, 'in_progress', 1,
			now() + p_lease, p_ttl, now(), now())
	ON CONFLICT DO NOTHING
	RETURNING * INTO k;
	IF FOUND THEN
		res.outcome := 'acquired';
		res.token := k.token;
		res.locked_until := k.locked_until;
		RETURN res;
	END IF;

	SELECT * INTO k FROM bench.pl_keys WHERE scope = p_scope AND key = p_key;

	IF k.state = 'completed' AND k.expires_at > now() THEN
		IF k.fingerprint IS DISTINCT FROM fp THEN
			RAISE EXCEPTION 'idempotency key "%" was already used with a different request', p_key
				USING ERRCODE = 'ID001';
		END IF;
		res.outcome := 'replay';
		res.response := k.response;
		res.status := k.status;
		res.expires_at := k.expires_at;
		RETURN res;
	END IF;
	IF k.state = 'in_progress' THEN
		IF k.fingerprint IS DISTINCT FROM fp THEN
			RAISE EXCEPTION 'idempotency key "%" was already used with a different request', p_key
				USING ERRCODE = 'ID001';
		END IF;
		IF k.locked_until > now() THEN
			res.outcome := 'in_progress';
			res.locked_until := k.locked_until;
			RETURN res;
		END IF;
	END IF;

	-- Takeover: expired completion, released key or lapsed lease.
	UPDATE bench.pl_keys
	   SET fingerprint = CASE WHEN state = 'completed' THEN fp ELSE fingerprint END,
		   recovery_point = CASE WHEN state = 'completed' THEN NULL ELSE recovery_point END,
		   checkpoint = CASE WHEN state = 'completed' THEN NULL ELSE checkpoint END,
		   state = 'in_progress', token = token + 1,
		   locked_until = now() + p_lease, ttl = p_ttl, updated_at = now(),
		   response = NULL, status = NULL, expires_at = NULL
	 WHERE scope = p_scope AND key = p_key AND token = k.token
	RETURNING * INTO k;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'concurrent takeover of key "%"', p_key USING ERRCODE = '40001';
	END IF;
	res.outcome := 'acquired';
	res.token := k.token;
	res.recovery_point := k.recovery_point;
	res.checkpoint := k.checkpoint;
	res.locked_until := k.locked_until;
	RETURN res;
END
$$;

-- The matching PL/pgSQL complete: store the response if the token still
-- holds the key; otherwise say why not (stale token or unknown key).
CREATE FUNCTION bench.pl_complete(p_key text, p_token bigint, p_response jsonb,
								  p_status integer DEFAULT NULL,
								  p_scope text DEFAULT '')
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
	IF p_key IS NULL OR p_scope IS NULL OR p_token IS NULL THEN
		RAISE EXCEPTION 'key, scope and token must not be null' USING ERRCODE = '22004';
	END IF;
	UPDATE bench.pl_keys
	   SET state = 'completed', response = p_response, status = p_status,
		   locked_until = NULL, updated_at = now(), expires_at = now() + ttl
	 WHERE scope = p_scope AND key = p_key AND token = p_token
	   AND state = 'in_progress';
	IF NOT FOUND THEN
		IF EXISTS (SELECT 1 FROM bench.pl_keys
					WHERE scope = p_scope AND key = p_key AND state = 'in_progress') THEN
			RAISE EXCEPTION 'token % no longer holds key "%"', p_token, p_key
				USING ERRCODE = 'ID002';
		END IF;
		RAISE EXCEPTION 'key "%" is not held', p_key USING ERRCODE = 'ID003';
	END IF;
END
$$;

------------------------------------------------------------------------------
-- Version-checked updates.  Three identical tables: no trigger, the pg_idem
-- C trigger (installed below when available), and a PL/pgSQL trigger with
-- the same rules.  A PL/pgSQL trigger cannot see which columns the UPDATE
-- assigned (tg_updatedcols is C-only), so the closest honest equivalent
-- compares NEW.version with OLD.version: equal means "the client sent the
-- version it read" (bump), OLD + 1 is the ORM form (keep), anything else is a
-- conflict.  It cannot tell a blind write from a correct one, i.e. it
-- behaves like pg_idem's 'auto' mode.
------------------------------------------------------------------------------
CREATE TABLE bench.acct_plain (
	id      integer PRIMARY KEY,
	balance bigint NOT NULL,
	version bigint NOT NULL
);
CREATE TABLE bench.acct_guarded (LIKE bench.acct_plain INCLUDING ALL);
CREATE TABLE bench.acct_plpgsql (LIKE bench.acct_plain INCLUDING ALL);

CREATE FUNCTION bench.pl_version_guard() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		IF NEW.version IS NULL THEN
			NEW.version := 1;
		END IF;
		RETURN NEW;
	END IF;
	IF NEW.version = OLD.version THEN
		NEW.version := OLD.version + 1;
	ELSIF NEW.version IS DISTINCT FROM OLD.version + 1 THEN
		RAISE EXCEPTION 'version conflict on %', TG_TABLE_NAME
			USING ERRCODE = 'ID010',
				  DETAIL = format('Expected version %s, current version %s.', NEW.version, OLD.version);
	END IF;
	RETURN NEW;
END
$$;
CREATE TRIGGER version_guard BEFORE INSERT OR UPDATE ON bench.acct_plpgsql
	FOR EACH ROW EXECUTE FUNCTION bench.pl_version_guard();

------------------------------------------------------------------------------
-- Invariants.  Four identical tables of stock lots, 10,000 items of 4 lots
-- each; the rule: an item's total stock stays between 0 and 10^9 (it always
-- does here: the benchmark measures the cost of checking, not of failing).
--   stock_plain         no check
--   stock_plpgsql       a PL/pgSQL constraint trigger, DEFERRABLE INITIALLY
--                       DEFERRED, checking the item's sum at commit: what
--                       is usually written, and wrong under concurrency (write
--                       skew: test/specs/invariants-write-skew-baseline.spec)
--   stock_plpgsql_lock  the same trigger taking pg_advisory_xact_lock(item)
--                       before its query: correct at READ COMMITTED (each
--                       query's snapshot follows the lock), not at
--                       REPEATABLE READ or above
--   stock_idem          idem.enforce_invariant (installed by run.sh when
--                       available): correct at every level
-- The sum is served by the primary key (item, lot) on every table.
------------------------------------------------------------------------------
CREATE TABLE bench.stock_plain (
	item integer NOT NULL,
	lot  integer NOT NULL,
	qty  bigint NOT NULL,
	PRIMARY KEY (item, lot)
);
CREATE TABLE bench.stock_plpgsql (LIKE bench.stock_plain INCLUDING ALL);
CREATE TABLE bench.stock_plpgsql_lock (LIKE bench.stock_plain INCLUDING ALL);
CREATE TABLE bench.stock_idem (LIKE bench.stock_plain INCLUDING ALL);

CREATE FUNCTION bench.pl_stock_check() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
	IF NOT (SELECT sum(qty) BETWEEN 0 AND 1000000000 FROM bench.stock_plpgsql
	         WHERE item = NEW.item) THEN
		RAISE EXCEPTION 'stock of item % out of range', NEW.item USING ERRCODE = 'ID030';
	END IF;
	RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER stock_check AFTER INSERT OR UPDATE ON bench.stock_plpgsql
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bench.pl_stock_check();

CREATE FUNCTION bench.pl_stock_check_locked() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
	PERFORM pg_advisory_xact_lock(NEW.item);
	IF NOT (SELECT sum(qty) BETWEEN 0 AND 1000000000 FROM bench.stock_plpgsql_lock
	         WHERE item = NEW.item) THEN
		RAISE EXCEPTION 'stock of item % out of range', NEW.item USING ERRCODE = 'ID030';
	END IF;
	RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER stock_check AFTER INSERT OR UPDATE ON bench.stock_plpgsql_lock
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bench.pl_stock_check_locked();

------------------------------------------------------------------------------
-- Invariants on INSERT: an append-only ledger, three identical tables; the
-- rule: an account's balance (the sum of its entries) stays >= 0.  Each
-- account starts with one entry of 1000 and gets entries of -10..10, so the
-- rule always holds (the cost of checking, not of failing).  The sum is an
-- index scan on (account).
--   ledger_plain    no check
--   ledger_plpgsql  a PL/pgSQL constraint trigger, AFTER INSERT FOR EACH ROW,
--                   DEFERRABLE INITIALLY DEFERRED, summing the account at
--                   commit: what is usually written (racy: two withdrawals
--                   can both pass)
--   ledger_idem     idem.enforce_invariant with the same query (installed by
--                   run.sh when available)
------------------------------------------------------------------------------
CREATE TABLE bench.ledger_plain (
	account integer NOT NULL,
	amount  bigint NOT NULL
);
CREATE INDEX ON bench.ledger_plain (account);
CREATE TABLE bench.ledger_plpgsql (LIKE bench.ledger_plain INCLUDING ALL);
CREATE TABLE bench.ledger_idem (LIKE bench.ledger_plain INCLUDING ALL);

CREATE FUNCTION bench.pl_ledger_check() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
	IF NOT (SELECT sum(amount) >= 0 FROM bench.ledger_plpgsql WHERE account = NEW.account) THEN
		RAISE EXCEPTION 'balance of account % would be negative', NEW.account USING ERRCODE = 'ID030';
	END IF;
	RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER ledger_check AFTER INSERT ON bench.ledger_plpgsql
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bench.pl_ledger_check();

------------------------------------------------------------------------------
-- Invariants under contention (workloads/writeskew.pl): on-call doctors, 1000
-- shifts of 10 doctors, of which a few hot shifts get every request; the
-- rule: every shift has at least one doctor on duty.  Same table three times:
--   oncall_idem  idem.enforce_invariant, clients at READ COMMITTED
--   oncall_ser   no check; every transaction SERIALIZABLE, retried on 40001
--   oncall_none  no check, READ COMMITTED (reference: write skew happens)
-- The primary key (shift, doctor) serves the per-shift read, so SSI takes
-- page-level predicate locks, not a relation lock.
-- oncall_empty_seen: a business transaction that reads a shift with nobody on
-- duty (a committed violation) records it here.
------------------------------------------------------------------------------
CREATE TABLE bench.oncall_idem (
	shift   integer NOT NULL,
	doctor  integer NOT NULL,
	on_duty boolean NOT NULL,
	PRIMARY KEY (shift, doctor)
);
CREATE TABLE bench.oncall_ser (LIKE bench.oncall_idem INCLUDING ALL);
CREATE TABLE bench.oncall_none (LIKE bench.oncall_idem INCLUDING ALL);
CREATE TABLE bench.oncall_empty_seen (
	tbl     text NOT NULL,
	shift   integer NOT NULL,
	seen_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

------------------------------------------------------------------------------
-- Outbox without pg_idem: a table with the same columns as idem.outbox
-- (identity id, topic, key, payload, headers, created_at, writing xid).
------------------------------------------------------------------------------
CREATE TABLE bench.raw_outbox (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	topic      text NOT NULL,
	key        text,
	payload    jsonb NOT NULL,
	headers    jsonb,
	created_at timestamptz NOT NULL DEFAULT now(),
	xid        xid8 NOT NULL DEFAULT pg_current_xact_id()
);

------------------------------------------------------------------------------
-- The outbox a team writes by hand (issue 14): exactly these columns and
-- one index, the primary key.  emit_handwritten.sql inserts into it,
-- drain_handwritten.sql drains it with SKIP LOCKED + DELETE.
------------------------------------------------------------------------------
CREATE TABLE bench.handwritten_outbox (
	id         bigserial PRIMARY KEY,
	topic      text,
	key        text,
	payload    jsonb,
	created_at timestamptz DEFAULT now()
);

-- What a session holding an old snapshot reads (the held-snapshot section):
-- any other table.
CREATE TABLE bench.report_source (id integer PRIMARY KEY);
INSERT INTO bench.report_source VALUES (1);
