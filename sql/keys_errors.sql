-- Idempotency keys: bad input gets a clear error with the right SQLSTATE
-- (SPEC.md section 1), never a crash or a silent NULL.
--
--   NULL key, scope, token or recovery point   22004 null_value_not_allowed
--   key or scope longer than 255 bytes         22001 string_data_right_truncation
--   empty key                                  22023 invalid_parameter_value
--   lease, ttl or max_rows not positive        22023 invalid_parameter_value
\pset null '(null)'

------------------------------------------------------------------------------
-- Keys and scopes.
------------------------------------------------------------------------------
-- NULL key: the functions are not STRICT, so this is an error, not NULL.
SELECT * FROM idem.reserve(NULL);
\echo SQLSTATE :SQLSTATE
-- empty key: a key is 1..255 bytes.  Not "too long", so not 22001.
SELECT * FROM idem.reserve('');
\echo SQLSTATE :SQLSTATE
-- 255 bytes is the longest key
SELECT outcome, token IS NOT NULL AS has_token FROM idem.reserve(repeat('k', 255));
SELECT * FROM idem.reserve(repeat('k', 256));
\echo SQLSTATE :SQLSTATE
-- lengths count bytes, not characters: 128 two-byte characters are 256 bytes
SELECT length(repeat('é', 128)) AS characters, octet_length(repeat('é', 128)) AS bytes;
SELECT * FROM idem.reserve(repeat('é', 128));
\echo SQLSTATE :SQLSTATE
SELECT outcome FROM idem.reserve(repeat('é', 127) || 'x');

-- NULL scope (the default scope is '')
SELECT * FROM idem.reserve('k', NULL, NULL);
\echo SQLSTATE :SQLSTATE
SELECT outcome FROM idem.reserve('k', NULL, '');
SELECT outcome FROM idem.reserve('k', NULL, repeat('s', 255));
SELECT * FROM idem.reserve('k', NULL, repeat('s', 256));
\echo SQLSTATE :SQLSTATE

-- The same rules hold in every function that takes a key and a scope.
SELECT idem.complete(NULL, 1, '{}');
\echo SQLSTATE :SQLSTATE
SELECT idem.complete('', 1, '{}');
\echo SQLSTATE :SQLSTATE
SELECT idem.complete(repeat('k', 256), 1, '{}');
\echo SQLSTATE :SQLSTATE
SELECT idem.complete('k', 1, '{}', 200, NULL);
\echo SQLSTATE :SQLSTATE
SELECT idem.release(NULL, 1);
\echo SQLSTATE :SQLSTATE
SELECT idem.release('k', 1, repeat('s', 256));
\echo SQLSTATE :SQLSTATE
SELECT idem.checkpoint('', 1, 'step');
\echo SQLSTATE :SQLSTATE
SELECT idem.checkpoint('k', 1, 'step', NULL, NULL);
\echo SQLSTATE :SQLSTATE
SELECT idem.forget(NULL);
\echo SQLSTATE :SQLSTATE
SELECT idem.forget('');
\echo SQLSTATE :SQLSTATE
SELECT idem.forget('k', NULL);
\echo SQLSTATE :SQLSTATE
SELECT idem.forget(repeat('k', 256));
\echo SQLSTATE :SQLSTATE

------------------------------------------------------------------------------
-- Tokens and recovery points.
------------------------------------------------------------------------------
SELECT idem.complete('k', NULL, '{}');
\echo SQLSTATE :SQLSTATE
SELECT idem.release('k', NULL);
\echo SQLSTATE :SQLSTATE
SELECT idem.checkpoint('k', NULL, 'step');
\echo SQLSTATE :SQLSTATE
-- a NULL recovery point would silently erase the last one: refused
SELECT idem.checkpoint('k', 1, NULL);
\echo SQLSTATE :SQLSTATE

------------------------------------------------------------------------------
-- Leases and ttls must be positive.  NULL means the setting.
------------------------------------------------------------------------------
SELECT * FROM idem.reserve('lease-0', lease => '0');
\echo SQLSTATE :SQLSTATE
SELECT * FROM idem.reserve('lease-neg', lease => '-1 second');
\echo SQLSTATE :SQLSTATE
-- judged as a whole: one day less 25 hours is negative
SELECT * FROM idem.reserve('lease-mixed', lease => '1 day -25 hours');
\echo SQLSTATE :SQLSTATE
SELECT * FROM idem.reserve('ttl-0', ttl => '0');
\echo SQLSTATE :SQLSTATE
SELECT * FROM idem.reserve('ttl-neg', ttl => '-1 day');
\echo SQLSTATE :SQLSTATE
SELECT idem.checkpoint('k', 1, 'step', lease => '-5 min');
\echo SQLSTATE :SQLSTATE
SELECT outcome FROM idem.reserve('lease-null', lease => NULL, ttl => NULL);
-- a ttl too long for timestamptz
SELECT * FROM idem.reserve('ttl-huge', ttl => '300000 years');
\echo SQLSTATE :SQLSTATE

------------------------------------------------------------------------------
-- purge(max_rows)
------------------------------------------------------------------------------
SELECT idem.purge(0);
\echo SQLSTATE :SQLSTATE
SELECT idem.purge(-1);
\echo SQLSTATE :SQLSTATE
SELECT idem.purge(NULL);
\echo SQLSTATE :SQLSTATE

------------------------------------------------------------------------------
-- Wrong types do not reach the functions at all.
------------------------------------------------------------------------------
SELECT idem.complete('k', 'not a token', '{}');
\echo SQLSTATE :SQLSTATE
SELECT * FROM idem.reserve('k', 'not json');
\echo SQLSTATE :SQLSTATE

------------------------------------------------------------------------------
-- A read-only transaction (or a standby) cannot reserve, change or delete keys.
------------------------------------------------------------------------------
BEGIN READ ONLY;
SELECT * FROM idem.reserve('read-only');
\echo SQLSTATE :SQLSTATE
ROLLBACK;
BEGIN READ ONLY;
SELECT idem.complete('k', 1, '{}');
\echo SQLSTATE :SQLSTATE
ROLLBACK;
BEGIN READ ONLY;
SELECT idem.forget('k');
\echo SQLSTATE :SQLSTATE
ROLLBACK;
BEGIN READ ONLY;
SELECT idem.purge();
\echo SQLSTATE :SQLSTATE
ROLLBACK;

-- None of the refused calls left a row behind.
SELECT key FROM idem.keys
WHERE key IN ('lease-0', 'lease-neg', 'lease-mixed', 'ttl-0', 'ttl-neg', 'ttl-huge', 'read-only');
