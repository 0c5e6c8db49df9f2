-- The errors a newcomer meets in the first hour say what to do (issue 16):
-- a role without idem.grant_usage(), a table owner without the grants a
-- version guard needs, and a token passed with the wrong key.
\pset null '(null)'

-- A helper that runs a statement and shows its error with the numbers of
-- fencing tokens masked (they depend on every earlier test of the run).
CREATE FUNCTION fh_try(stmt text) RETURNS TABLE (sqlstate text, message text, detail text, hint text)
LANGUAGE plpgsql AS $fn$
DECLARE
    st text; msg text; det text; hnt text;
BEGIN
    EXECUTE stmt;
    RETURN QUERY SELECT '00000', 'ok', NULL::text, NULL::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
                            det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    RETURN QUERY SELECT st, regexp_replace(msg, '(token|Token) [0-9]+', '\1 N', 'g'),
                        regexp_replace(det, '(token|Token) [0-9]+', '\1 N', 'g'), hnt;
END;
$fn$;
GRANT EXECUTE ON FUNCTION fh_try(text) TO PUBLIC;

------------------------------------------------------------------------------
-- 1. A role without a grant.  Nothing of pg_idem is granted to PUBLIC
-- (SPEC.md section 4), so PostgreSQL refuses its first call itself: 42501
-- "permission denied for schema idem".  The library, when loaded in the
-- backend (preloaded, as recommended), adds a HINT with the statement that
-- fixes it, naming the current user (quoted as regrole input needs), from
-- its emit_log_hook (src/privileges.c).  Loaded here explicitly, so that
-- this file gets the HINT with or without preload (make installcheck).
LOAD 'pg_idem';
CREATE ROLE regress_fh_app;
CREATE ROLE "regress_fh Quoted Role";
SELECT idem.grant_usage('regress_fh_app');
SET ROLE regress_fh_app;
SELECT token AS fh_token FROM idem.reserve('fh-1', NULL, 'fh') \gset
SELECT idem.subscribe('fh-relay', ARRAY['fh']);
SELECT idem.emit('fh', '{"n": 1}') > 0 AS emitted;
RESET ROLE;

SET ROLE "regress_fh Quoted Role";
SELECT * FROM idem.reserve('fh-2', NULL, 'fh');
\echo SQLSTATE :SQLSTATE
SELECT idem.emit('fh', '{"n": 2}');
SELECT * FROM idem.next_batch('fh-relay');
SELECT idem.fingerprint('{"a": 1}');
-- The tables, the views and the owner's functions: the same refusal.
SELECT count(*) FROM idem.keys;
SELECT idem.purge();
RESET ROLE;
-- A plain role name is quoted only as a literal.
SELECT idem.revoke_usage('regress_fh_app');
SET ROLE regress_fh_app;
SELECT * FROM idem.reserve('fh-2', NULL, 'fh');
RESET ROLE;
SELECT idem.grant_usage('regress_fh_app');

-- A role given USAGE on the schema by hand but not the functions gets
-- PostgreSQL's "permission denied for function reserve": the HINT says
-- which function it means (PostgreSQL names a function without its
-- schema).  The owner's functions, which grant_usage() does not give, get
-- no HINT.
GRANT USAGE ON SCHEMA idem TO "regress_fh Quoted Role";
SET ROLE "regress_fh Quoted Role";
SELECT * FROM idem.reserve('fh-2', NULL, 'fh');
SELECT idem.finish_batch('fh-relay', 1);
SELECT idem.purge();
RESET ROLE;
-- Given EXECUTE by hand as well, but no grant: pg_idem's own check refuses
-- it before it looks at anything (defence in depth).
GRANT EXECUTE ON FUNCTION idem.reserve(text, jsonb, text, interval, interval),
                          idem.forget(text, text) TO "regress_fh Quoted Role";
SET ROLE "regress_fh Quoted Role";
SELECT * FROM idem.reserve('fh-2', NULL, 'fh');
SELECT idem.forget('fh-1', 'fh');
RESET ROLE;
REVOKE USAGE ON SCHEMA idem FROM "regress_fh Quoted Role";
REVOKE EXECUTE ON FUNCTION idem.reserve(text, jsonb, text, interval, interval),
                           idem.forget(text, text) FROM "regress_fh Quoted Role";

-- An error caught by PL/pgSQL is never reported, so it has no HINT.
SET ROLE "regress_fh Quoted Role";
SELECT * FROM fh_try($$SELECT idem.forget('fh-1', 'fh')$$);
RESET ROLE;

-- Inside a SECURITY DEFINER function the refused user is the function's
-- owner, not the session's: no HINT rather than a wrong one.
CREATE FUNCTION fh_definer() RETURNS bigint LANGUAGE sql SECURITY DEFINER
  AS $$ SELECT token FROM idem.reserve('fh-3', NULL, 'fh') $$;
ALTER FUNCTION fh_definer() OWNER TO "regress_fh Quoted Role";
SELECT fh_definer();
DROP FUNCTION fh_definer();

-- Nothing changed: the key is held by the same token, the consumer and the
-- event are there, no second consumer.
SELECT key, state, token = :fh_token AS same_token FROM idem.keys WHERE scope = 'fh';
SELECT name, topics, owner::regrole FROM idem.consumers WHERE name LIKE 'fh-%';
SELECT count(*) AS events FROM idem.outbox WHERE topic = 'fh';

-- Run as the HINT says, the same call works.
SELECT idem.grant_usage('"regress_fh Quoted Role"', scopes => ARRAY['fh']);
SET ROLE "regress_fh Quoted Role";
SELECT outcome FROM idem.reserve('fh-2', NULL, 'fh');
RESET ROLE;

------------------------------------------------------------------------------
-- 2. A table's owner who is not a superuser.  Owning the table is what lets
-- it enforce versions (PostgreSQL's rule); the owner of pg_idem grants USAGE
-- on schema idem and the functions.  Without EXECUTE on enforce_version()
-- itself, PostgreSQL names the function (no HINT: grant_usage() does not
-- give it); with it but without the trigger function, one error names
-- exactly the grants still missing, before anything is locked or created.
CREATE ROLE regress_fh_owner;
GRANT USAGE ON SCHEMA idem TO regress_fh_owner;
CREATE TABLE fh_accounts (id int PRIMARY KEY, balance int NOT NULL, version int);
ALTER TABLE fh_accounts OWNER TO regress_fh_owner;
SET ROLE regress_fh_owner;
SELECT idem.enforce_version('fh_accounts');
RESET ROLE;
GRANT EXECUTE ON FUNCTION idem.enforce_version(regclass, name, text) TO regress_fh_owner;
SET ROLE regress_fh_owner;
SELECT idem.enforce_version('fh_accounts');
\echo SQLSTATE :SQLSTATE
RESET ROLE;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'fh_accounts'::regclass;
-- Only what is missing is named.
GRANT EXECUTE ON FUNCTION idem.unenforce_version(regclass) TO regress_fh_owner;
SET ROLE regress_fh_owner;
SELECT idem.enforce_version('fh_accounts');
RESET ROLE;
GRANT EXECUTE ON FUNCTION idem.version_guard() TO regress_fh_owner;
SET ROLE regress_fh_owner;
SELECT idem.enforce_version('fh_accounts');
INSERT INTO fh_accounts VALUES (1, 10, NULL) RETURNING *;
SELECT idem.unenforce_version('fh_accounts');
RESET ROLE;

-- Invariants need USAGE on schema idem and EXECUTE on the functions (the
-- triggers are created by pg_idem, which grants their function to the
-- owner).
CREATE ROLE regress_fh_inv;
GRANT USAGE ON SCHEMA idem TO regress_fh_inv;
CREATE SCHEMA fh_inv AUTHORIZATION regress_fh_inv;
SET ROLE regress_fh_inv;
CREATE TABLE fh_inv.ledger (account int NOT NULL, amount int NOT NULL);
SELECT idem.enforce_invariant('fh_non_negative',
  $$SELECT coalesce(sum(amount), 0) >= 0 FROM fh_inv.ledger WHERE account = $1$$,
  '{"fh_inv.ledger": ["account"]}');
RESET ROLE;
GRANT EXECUTE ON FUNCTION idem.enforce_invariant(text, text, jsonb, text, boolean),
                          idem.unenforce_invariant(text) TO regress_fh_inv;
SET ROLE regress_fh_inv;
SELECT idem.enforce_invariant('fh_non_negative',
  $$SELECT coalesce(sum(amount), 0) >= 0 FROM fh_inv.ledger WHERE account = $1$$,
  '{"fh_inv.ledger": ["account"]}');
INSERT INTO fh_inv.ledger VALUES (1, 5), (1, -3);
INSERT INTO fh_inv.ledger VALUES (1, -3);
SELECT idem.unenforce_invariant('fh_non_negative');
RESET ROLE;

------------------------------------------------------------------------------
-- 3. A token passed with the wrong key gets its own message, not the
-- takeover one (still ID002: the token is not the key's current holder).
SELECT token AS tok_a FROM idem.reserve('fh-a', NULL, 'fh-tokens') \gset
SELECT token AS tok_b FROM idem.reserve('fh-b', NULL, 'fh-tokens') \gset
-- b's token with key a: issued after a's reservation.
SELECT * FROM fh_try(format($$SELECT idem.complete('fh-a', %s, '{}', 200, 'fh-tokens')$$, :tok_b));
-- a's token with key b: issued before b was reserved.
SELECT * FROM fh_try(format($$SELECT idem.checkpoint('fh-b', %s, 'x', NULL, 'fh-tokens')$$, :tok_a));
SELECT * FROM fh_try(format($$SELECT idem.release('fh-b', %s, 'fh-tokens')$$, :tok_a));
-- A holder whose lease ended and whose key was taken over keeps the
-- takeover message.
SELECT token AS tok_c FROM idem.reserve('fh-c', NULL, 'fh-tokens', lease => '1 ms') \gset
SELECT pg_sleep(0.02);
SELECT outcome FROM idem.reserve('fh-c', NULL, 'fh-tokens');
SELECT * FROM fh_try(format($$SELECT idem.complete('fh-c', %s, '{}', 200, 'fh-tokens')$$, :tok_c));
-- Neither key changed.
SELECT key, state FROM idem.keys WHERE scope = 'fh-tokens' ORDER BY key;

-- Clean up.
SELECT idem.revoke_usage('regress_fh_app'), idem.revoke_usage('"regress_fh Quoted Role"');
SELECT idem.unsubscribe('fh-relay');
DELETE FROM idem.outbox WHERE topic = 'fh';
DROP TABLE fh_accounts;
DROP SCHEMA fh_inv CASCADE;
REVOKE ALL ON FUNCTION idem.enforce_version(regclass, name, text), idem.unenforce_version(regclass),
                       idem.version_guard(), idem.enforce_invariant(text, text, jsonb, text, boolean),
                       idem.unenforce_invariant(text), idem.invariant_touch()
  FROM regress_fh_owner, regress_fh_inv;
REVOKE USAGE ON SCHEMA idem FROM regress_fh_owner, regress_fh_inv;
DROP FUNCTION fh_try(text);
DROP ROLE regress_fh_app, "regress_fh Quoted Role", regress_fh_owner, regress_fh_inv;
