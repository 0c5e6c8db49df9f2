-- Idempotency keys: application roles act only through the functions.
--
-- A role granted EXECUTE on the key functions and a scope (idem.grant_usage()
-- does both) reserves and completes keys without any privilege on idem.keys
-- itself, and cannot bypass them.
\pset null '(null)'
CREATE ROLE regress_idem_keys_app;
GRANT USAGE ON SCHEMA idem TO regress_idem_keys_app;
GRANT EXECUTE ON FUNCTION idem.reserve(text, jsonb, text, interval, interval),
                          idem.complete(text, bigint, jsonb, integer, text)
  TO regress_idem_keys_app;

-- EXECUTE alone is not enough (since 0.2): the role has no scope.
SET ROLE regress_idem_keys_app;
SELECT outcome FROM idem.reserve('priv-1', '{"amount": 1}');
\echo SQLSTATE :SQLSTATE
RESET ROLE;
-- idem.grant_usage() gives it the default scope ('') and every function an
-- application needs; forget is taken back again, for the checks below.
SELECT idem.grant_usage('regress_idem_keys_app', scopes => ARRAY['']);
REVOKE EXECUTE ON FUNCTION idem.forget(text, text) FROM regress_idem_keys_app;

SET ROLE regress_idem_keys_app;
SELECT outcome FROM idem.reserve('priv-1', '{"amount": 1}');
SELECT idem.complete('priv-1', 0, '{}');
\echo SQLSTATE :SQLSTATE
-- the role cannot read or write the table directly ...
SELECT count(*) FROM idem.keys;
\echo SQLSTATE :SQLSTATE
UPDATE idem.keys SET state = 'completed';
\echo SQLSTATE :SQLSTATE
-- ... nor call what it was not granted
SELECT idem.purge();
\echo SQLSTATE :SQLSTATE
SELECT idem.forget('priv-1');
\echo SQLSTATE :SQLSTATE
RESET ROLE;
SELECT token AS priv_token FROM idem.keys WHERE key = 'priv-1' \gset
SET ROLE regress_idem_keys_app;
SELECT idem.complete('priv-1', :priv_token, '{"paid": true}', 201);
SELECT outcome, response, status FROM idem.reserve('priv-1', '{"amount": 1}');

------------------------------------------------------------------------------
-- The caller's search_path cannot redirect the functions: a temporary
-- table named keys, first on the caller's search_path, is ignored.
-- (reserve, complete, release and checkpoint reach idem.keys by OID and run
-- no SQL; forget and purge run schema-qualified SQL with a pinned path.)
------------------------------------------------------------------------------
CREATE TEMP TABLE keys (scope text, key text, state text, token bigint);
SET search_path = pg_temp, public;
SELECT outcome FROM idem.reserve('priv-2');
SELECT count(*) AS rows_in_temp_keys FROM pg_temp.keys;
RESET search_path;
RESET ROLE;
SELECT key, state FROM idem.keys WHERE key IN ('priv-1', 'priv-2') ORDER BY key;

SELECT idem.revoke_usage('regress_idem_keys_app');
DROP OWNED BY regress_idem_keys_app;
DROP ROLE regress_idem_keys_app;
