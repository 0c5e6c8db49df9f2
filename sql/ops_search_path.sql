-- The search_path attack (SPEC.md sections 0 and 4).  An application role
-- plants look-alikes of what pg_idem's queries use -- operators, functions,
-- tables -- in a schema it puts ahead of pg_catalog in its search_path, and
-- in pg_temp, then calls every function; so does a superuser whose session
-- carries the same search_path.  Every look-alike records in a tripwire
-- table when it runs and returns a lie.  pg_idem pins search_path in every
-- function that runs a query and qualifies every name and operator, so the
-- tripwire stays empty and every answer stays right.

CREATE ROLE regress_idem_attacker;
SELECT idem.grant_usage('regress_idem_attacker');
CREATE SCHEMA regress_attack AUTHORIZATION regress_idem_attacker;
-- A guarded table the attacker may write.
CREATE TABLE regress_attack_accounts (id int PRIMARY KEY, balance int NOT NULL, version int);
SELECT idem.enforce_version('regress_attack_accounts');
GRANT SELECT, INSERT, UPDATE ON regress_attack_accounts TO regress_idem_attacker;
-- As every role could before PostgreSQL 15, the attacker may create in public.
GRANT CREATE ON SCHEMA public TO regress_idem_attacker;

SET ROLE regress_idem_attacker;
CREATE TABLE regress_attack.tripwire (what text);
CREATE FUNCTION regress_attack.trip(what text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress_attack.tripwire VALUES (what);
    RETURN true;
END
$$;

-- Hostile comparison operators (always true) and arithmetic for the types
-- pg_idem compares.
DO $$
DECLARE
    t text;
    op text;
    n int := 0;
BEGIN
    FOREACH t IN ARRAY ARRAY['text', 'bigint', 'integer', 'timestamptz', 'bytea',
                             'jsonb', 'xid8', 'name', 'oid', 'tid', 'boolean', 'idem.key_state']
    LOOP
        FOREACH op IN ARRAY ARRAY['=', '<>', '<', '<=', '>', '>=']
        LOOP
            n := n + 1;
            EXECUTE format('CREATE FUNCTION regress_attack.op%s(%s, %s) RETURNS boolean '
                           'LANGUAGE sql AS %L', n, t, t,
                           format('SELECT regress_attack.trip(%L)', op || ' ' || t));
            EXECUTE format('CREATE OPERATOR regress_attack.%s (LEFTARG = %s, RIGHTARG = %s, '
                           'FUNCTION = regress_attack.op%s)', op, t, t, n);
        END LOOP;
    END LOOP;
END
$$;
CREATE FUNCTION regress_attack.ts_plus(timestamptz, interval) RETURNS timestamptz
LANGUAGE sql AS $$ SELECT regress_attack.trip('timestamptz + interval'); SELECT '2000-01-01'::timestamptz $$;
CREATE OPERATOR regress_attack.+ (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = regress_attack.ts_plus);
CREATE FUNCTION regress_attack.ts_minus(timestamptz, timestamptz) RETURNS interval
LANGUAGE sql AS $$ SELECT regress_attack.trip('timestamptz - timestamptz'); SELECT interval '0' $$;
CREATE OPERATOR regress_attack.- (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = regress_attack.ts_minus);
CREATE FUNCTION regress_attack.text_cat(text, text) RETURNS text
LANGUAGE sql AS $$ SELECT regress_attack.trip('text || text'); SELECT 'x' $$;
CREATE OPERATOR regress_attack.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_attack.text_cat);

-- Look-alike functions with the exact signatures of pg_catalog's.
CREATE FUNCTION regress_attack.now() RETURNS timestamptz
LANGUAGE sql AS $$ SELECT regress_attack.trip('now()'); SELECT '2000-01-01'::timestamptz $$;
CREATE FUNCTION regress_attack.clock_timestamp() RETURNS timestamptz
LANGUAGE sql AS $$ SELECT regress_attack.trip('clock_timestamp()'); SELECT '2000-01-01'::timestamptz $$;
CREATE FUNCTION regress_attack.statement_timestamp() RETURNS timestamptz
LANGUAGE sql AS $$ SELECT regress_attack.trip('statement_timestamp()'); SELECT '2000-01-01'::timestamptz $$;
CREATE FUNCTION regress_attack.nextval(regclass) RETURNS bigint
LANGUAGE sql AS $$ SELECT regress_attack.trip('nextval()'); SELECT 1::bigint $$;
CREATE FUNCTION regress_attack.pg_current_xact_id() RETURNS xid8
LANGUAGE sql AS $$ SELECT regress_attack.trip('pg_current_xact_id()'); SELECT '1'::xid8 $$;
CREATE FUNCTION regress_attack.pg_current_snapshot() RETURNS pg_snapshot
LANGUAGE sql AS $$ SELECT regress_attack.trip('pg_current_snapshot()'); SELECT '1:1:'::pg_snapshot $$;
CREATE FUNCTION regress_attack.pg_notify(text, text) RETURNS void
LANGUAGE sql AS $$ SELECT regress_attack.trip('pg_notify()'); $$;
CREATE FUNCTION regress_attack.sha256(bytea) RETURNS bytea
LANGUAGE sql AS $$ SELECT regress_attack.trip('sha256()'); SELECT '\x00'::bytea $$;
CREATE FUNCTION regress_attack.quote_ident(text) RETURNS text
LANGUAGE sql AS $$ SELECT regress_attack.trip('quote_ident()'); SELECT 'x' $$;

-- The classic: a hostile "=" in public.
CREATE FUNCTION public.regress_evil_eq(text, text) RETURNS boolean
LANGUAGE sql AS $$ SELECT regress_attack.trip('public.= text') $$;
CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.regress_evil_eq);
CREATE FUNCTION public.regress_evil_eq(bigint, bigint) RETURNS boolean
LANGUAGE sql AS $$ SELECT regress_attack.trip('public.= bigint') $$;
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.regress_evil_eq);

-- Shadowing tables, in the attacker's schema and in pg_temp.
CREATE TABLE regress_attack.keys (scope text, key text);
CREATE TABLE regress_attack.outbox (id bigint);
CREATE TABLE regress_attack.consumers (name text);
CREATE TEMP TABLE keys (scope text, key text);
CREATE TEMP TABLE outbox (id bigint);
CREATE TEMP TABLE consumers (name text);

-- public and the attacker's schema go first, ahead of pg_catalog.
SET search_path = public, regress_attack, pg_catalog;

-- The traps are armed: an unqualified query is fooled.
SELECT 'a' = 'b' AS a_equals_b, 1::bigint = 2::bigint AS one_equals_two, now() AS now_is;
SELECT what FROM regress_attack.tripwire ORDER BY what;
TRUNCATE regress_attack.tripwire;

-- Now every application function, through every outcome and error.  (The
-- test's own comparisons are qualified too, or they would trip the wire.)
SELECT outcome, token OPERATOR(pg_catalog.>) 0 AS has_token, response,
       expires_at OPERATOR(pg_catalog.>) pg_catalog.now() AS expires_later
  FROM idem.reserve('sp-1', '{"amount": 100}', 'sp');
SELECT token AS sp_token FROM idem.reserve('sp-2', '{"a": 1}', 'sp') \gset
SELECT idem.checkpoint('sp-2', :sp_token, 'charged', '{"charge": "ch_1"}', 'sp');
SELECT idem.complete('sp-2', :sp_token, '{"id": 7}', 201, 'sp');
SELECT outcome, response, status FROM idem.reserve('sp-2', '{"a": 1}', 'sp');
SELECT outcome, locked_until OPERATOR(pg_catalog.>) pg_catalog.now() AS leased FROM idem.reserve('sp-1', '{"amount": 100}', 'sp');
SELECT * FROM idem.reserve('sp-2', '{"a": 2}', 'sp');
SELECT idem.complete('sp-2', 0, '{}', NULL, 'sp');
SELECT idem.complete('sp-none', 1, '{}', NULL, 'sp');
SELECT token AS sp_token FROM idem.reserve('sp-3', NULL, 'sp') \gset
SELECT idem.checkpoint('sp-3', :sp_token, 'step-1', '{"n": 1}', 'sp');
SELECT idem.release('sp-3', :sp_token, 'sp');
SELECT outcome, recovery_point, checkpoint FROM idem.reserve('sp-3', NULL, 'sp');
SELECT idem.forget('sp-1', 'sp'), idem.forget('sp-nothing', 'sp');
SELECT idem.fingerprint('{"b": 1, "a": 2}') OPERATOR(pg_catalog.=) idem.fingerprint('{"a": 2, "b": 1}') AS same;
SELECT scope, state, keys, expired FROM idem.key_stats WHERE scope OPERATOR(pg_catalog.=) 'sp' ORDER BY state;

SELECT idem.subscribe('sp-relay', ARRAY['sp']);
SELECT idem.emit('sp', '{"n": 1}', 'k1', '{"h": 1}') OPERATOR(pg_catalog.>) 0 AS emitted;
SELECT idem.emit('sp', '{"n": 2}') OPERATOR(pg_catalog.>) 0 AS emitted;
SELECT batch_id AS sp_batch FROM idem.next_batch('sp-relay') LIMIT 1 \gset
SELECT topic, key, payload, headers FROM idem.next_batch('sp-relay', 10);
SELECT consumer, pending FROM idem.consumer_lag WHERE consumer OPERATOR(pg_catalog.=) 'sp-relay';
\set VERBOSITY terse
SELECT idem.finish_batch('sp-relay', 0);
\set VERBOSITY default
SELECT idem.finish_batch('sp-relay', :sp_batch);
SELECT count(*) FROM idem.next_batch('sp-relay');
SELECT idem.finish_batch('sp-relay', 0);
SELECT * FROM idem.next_batch('sp-nobody');
SELECT idem.unsubscribe('sp-relay'), idem.unsubscribe('sp-relay');

-- The version guard fires for the attacker too.
INSERT INTO public.regress_attack_accounts VALUES (1, 100, NULL) RETURNING *;
UPDATE public.regress_attack_accounts SET balance = 90, version = 1 WHERE id OPERATOR(pg_catalog.=) 1 RETURNING *;
UPDATE public.regress_attack_accounts SET balance = 80, version = 1 WHERE id OPERATOR(pg_catalog.=) 1;
UPDATE public.regress_attack_accounts SET balance = 80 WHERE id OPERATOR(pg_catalog.=) 1;

-- And the owner's functions, called by a superuser whose session carries
-- the attacker's search_path (the dangerous case: they would run the
-- look-alikes with superuser rights).
RESET ROLE;
SHOW search_path;
SELECT idem.purge(10);
SELECT * FROM idem.maintain();
SELECT idem.trim_outbox(10);
SELECT idem.unenforce_version('public.regress_attack_accounts');
SELECT idem.enforce_version('public.regress_attack_accounts', 'version', 'auto');
UPDATE public.regress_attack_accounts SET balance = 70 WHERE id OPERATOR(pg_catalog.=) 1 RETURNING *;
SELECT idem.grant_usage('regress_idem_attacker');

-- Not one look-alike ran.
SELECT what FROM regress_attack.tripwire ORDER BY what;

RESET search_path;
SET client_min_messages = warning;
DROP TABLE regress_attack_accounts;
DROP SCHEMA regress_attack CASCADE;
DROP OWNED BY regress_idem_attacker;
DROP ROLE regress_idem_attacker;
RESET client_min_messages;
