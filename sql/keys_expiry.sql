-- Idempotency keys: expiry, forget, purge and the key_stats view.
--
-- Expiry is decided with the wall clock (clock_timestamp()), not with the
-- transaction's start time.  An expired key behaves as absent in every
-- state, whether or not purge() has deleted its row yet.
\pset null '(null)'
-- purge() counts every expired row in the database: start from nothing.
TRUNCATE idem.keys;

------------------------------------------------------------------------------
-- A completed key expires ttl after completion; then it is reserved afresh,
-- even with another request, and its token still grows.
------------------------------------------------------------------------------
SELECT outcome, token AS first_token FROM idem.reserve('refund-1', '{"amount": 10}', ttl => '300ms') \gset
SELECT idem.complete('refund-1', :first_token, '{"refund": 1}', 201);
SELECT outcome, response FROM idem.reserve('refund-1', '{"amount": 10}');
SELECT pg_sleep(0.35);
SELECT outcome, token > :first_token AS larger_token, response, recovery_point
FROM idem.reserve('refund-1', '{"amount": 20}');
SELECT state, ttl FROM idem.keys WHERE key = 'refund-1';

------------------------------------------------------------------------------
-- A held key expires at lease end + ttl.  After that its holder no longer
-- holds it (ID003, even with the right token) and a new request may have it.
------------------------------------------------------------------------------
SELECT token AS abandoned_token FROM idem.reserve('abandoned', '{"a": 1}', lease => '100ms', ttl => '100ms') \gset
SELECT idem.checkpoint('abandoned', :abandoned_token, 'step-1', lease => '100ms');
SELECT pg_sleep(0.25);
SELECT idem.complete('abandoned', :abandoned_token, '{}');
\echo SQLSTATE :SQLSTATE
SELECT outcome, recovery_point FROM idem.reserve('abandoned', '{"a": 2}');

-- Released keys expire ttl after the release.
SELECT token AS released_token FROM idem.reserve('released', ttl => '50ms') \gset
SELECT idem.release('released', :released_token);
SELECT expires_at - updated_at AS expires_after_release FROM idem.keys WHERE key = 'released';

------------------------------------------------------------------------------
-- Expiry uses the wall clock: inside a transaction that started long ago,
-- now() is stale but the key still expires on time.
------------------------------------------------------------------------------
SELECT token AS wall_token FROM idem.reserve('wall-clock', ttl => '100ms', lease => '1ms') \gset
BEGIN;
SELECT now() AS tx_start \gset
SELECT pg_sleep(0.15);
SELECT now() = :'tx_start'::timestamptz AS now_is_stale,
       outcome, token > :wall_token AS larger_token
FROM idem.reserve('wall-clock', '{"new": true}');
COMMIT;

------------------------------------------------------------------------------
-- key_stats: per scope and state, live keys, expired ones awaiting purge,
-- and the age of the oldest live in-progress key.
------------------------------------------------------------------------------
SELECT outcome FROM idem.reserve('s-1', scope => 'stats');
SELECT outcome FROM idem.reserve('s-2', scope => 'stats');
SELECT token AS s3 FROM idem.reserve('s-3', scope => 'stats') \gset
SELECT idem.complete('s-3', :s3, '{}', 200, scope => 'stats');
SELECT token AS s4 FROM idem.reserve('s-4', scope => 'stats', lease => '1ms', ttl => '1ms') \gset
SELECT outcome FROM idem.reserve('s-5', scope => 'stats', lease => '1ms', ttl => '1ms');
SELECT pg_sleep(0.01);
SELECT scope, state, keys, expired,
       oldest_in_progress_age > '0' AS has_age, oldest_in_progress_age < '1 minute' AS is_recent
FROM idem.key_stats WHERE scope = 'stats' ORDER BY state;

------------------------------------------------------------------------------
-- purge(max_rows) deletes expired keys, at most max_rows per call, and
-- returns how many.  Live keys are never touched.
------------------------------------------------------------------------------
SELECT count(*) FILTER (WHERE expires_at <= clock_timestamp()) AS expired,
       count(*) FILTER (WHERE expires_at > clock_timestamp()) AS live
FROM idem.keys;
SELECT idem.purge(2) AS first_batch;
SELECT idem.purge() AS second_batch;
SELECT idem.purge() AS nothing_left;
SELECT count(*) AS live_keys_kept FROM idem.keys;
SELECT scope, state, keys, expired FROM idem.key_stats WHERE scope = 'stats' ORDER BY state;

-- A purged key is absent: its old holder gets ID003.
SELECT idem.complete('s-4', :s4, '{}', scope => 'stats');
\echo SQLSTATE :SQLSTATE

------------------------------------------------------------------------------
-- forget(key, scope) deletes a key in any state; true when it was there
-- (and had not expired).
------------------------------------------------------------------------------
SELECT token AS f1 FROM idem.reserve('forget-me', '{"x": 1}') \gset
SELECT idem.forget('forget-me') AS forgotten, idem.forget('forget-me') AS again;
-- its holder no longer holds it
SELECT idem.complete('forget-me', :f1, '{}');
\echo SQLSTATE :SQLSTATE
-- and the key is new again, for any request
SELECT outcome, token > :f1 AS larger_token FROM idem.reserve('forget-me', '{"x": 2}');
-- scopes are kept apart
SELECT idem.forget('forget-me', scope => 'elsewhere') AS in_other_scope;
-- an expired key counts as absent, but its row goes all the same
SELECT outcome FROM idem.reserve('expired-forget', ttl => '1ms', lease => '1ms');
SELECT pg_sleep(0.01);
SELECT idem.forget('expired-forget') AS was_alive;
SELECT count(*) AS rows_left FROM idem.keys WHERE key = 'expired-forget';
