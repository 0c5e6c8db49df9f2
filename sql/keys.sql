-- Idempotency keys (SPEC.md section 1): the life of a key and every outcome
-- of idem.reserve().  Errors show their SQLSTATE through psql's :SQLSTATE.
--
-- Tokens come from one sequence; restart it so this file's tokens read 1, 2, ...
ALTER SEQUENCE idem.key_token_seq RESTART;
\pset null '(null)'

-- Timestamps differ on every run, so reservations are shown through this
-- helper: the lease as live/ended, the expiry as later/passed.
CREATE FUNCTION show(r idem.reservation)
RETURNS TABLE (outcome idem.outcome, token bigint, response jsonb, status integer,
               recovery_point text, checkpoint jsonb, lease text, expires text)
LANGUAGE sql VOLATILE AS $$
  SELECT r.outcome, r.token, r.response, r.status, r.recovery_point, r.checkpoint,
         CASE WHEN r.locked_until IS NULL THEN NULL
              WHEN r.locked_until > clock_timestamp() THEN 'live' ELSE 'ended' END,
         CASE WHEN r.expires_at IS NULL THEN NULL
              WHEN r.expires_at > clock_timestamp() THEN 'later' ELSE 'passed' END
$$;

------------------------------------------------------------------------------
-- A new key: acquired, with a fencing token and a lease.
------------------------------------------------------------------------------
SELECT * FROM show(idem.reserve('order-1', '{"amount": 100, "currency": "EUR"}'));

-- The lease defaults to idem.lease (30s); while the key is held, expires_at
-- is the lease end + ttl (idem.ttl, 24h), so an abandoned key is purged too.
SELECT state, token, locked_until - created_at AS lease, ttl,
       expires_at - locked_until AS expires_after_lease
FROM idem.keys WHERE key = 'order-1';

------------------------------------------------------------------------------
-- A retry while the first holder works: in_progress, with the live lease.
-- It changes nothing: no token, no new lease.
------------------------------------------------------------------------------
SELECT locked_until AS lease_before FROM idem.keys WHERE key = 'order-1' \gset
SELECT * FROM show(idem.reserve('order-1', '{"amount": 100, "currency": "EUR"}'));
SELECT r.locked_until = :'lease_before'::timestamptz AS same_lease_reported,
       k.locked_until = :'lease_before'::timestamptz AS lease_unchanged, k.token
FROM idem.reserve('order-1', '{"currency":"EUR","amount":100}') AS r, idem.keys AS k
WHERE k.key = 'order-1';

-- (Key order and spacing do not make a different request: see the query
-- above, which used '{"currency":"EUR","amount":100}'.)

------------------------------------------------------------------------------
-- The same key with a different request: ID001, in every state.
------------------------------------------------------------------------------
SELECT * FROM idem.reserve('order-1', '{"amount": 999, "currency": "EUR"}');
\echo SQLSTATE :SQLSTATE
-- a NULL request matches only a NULL request
SELECT * FROM idem.reserve('order-1');
\echo SQLSTATE :SQLSTATE

------------------------------------------------------------------------------
-- The holder completes: the response and status are stored.
------------------------------------------------------------------------------
SELECT idem.complete('order-1', 1, '{"payment_id": 7, "state": "captured"}', 201);

-- A retry now replays them, and does nothing else.
SELECT * FROM show(idem.reserve('order-1', '{"amount": 100, "currency": "EUR"}'));

-- The key expires ttl after completion; lease and recovery state are gone.
SELECT state, token, locked_until, recovery_point, checkpoint,
       expires_at - updated_at AS expires_after_completion
FROM idem.keys WHERE key = 'order-1';

-- A different request is still refused after completion.
SELECT * FROM idem.reserve('order-1', '{"amount": 999, "currency": "EUR"}');
\echo SQLSTATE :SQLSTATE

------------------------------------------------------------------------------
-- The holder's functions on a key it no longer holds: ID003 (not held),
-- ID002 (another token).
------------------------------------------------------------------------------
SELECT idem.complete('order-1', 1, '{"again": true}', 200);
\echo SQLSTATE :SQLSTATE
SELECT idem.release('order-1', 1);
\echo SQLSTATE :SQLSTATE
SELECT idem.checkpoint('order-1', 1, 'too-late');
\echo SQLSTATE :SQLSTATE
-- an older token
SELECT idem.complete('order-1', 0, '{}', 200);
\echo SQLSTATE :SQLSTATE
-- a token this key never had (another key's, or a made-up one)
SELECT idem.complete('order-1', 12345, '{}', 200);
\echo SQLSTATE :SQLSTATE
-- a key that was never reserved
SELECT idem.complete('no-such-order', 1, '{}', 200);
\echo SQLSTATE :SQLSTATE

------------------------------------------------------------------------------
-- Scopes separate tenants: the same key is another key in another scope.
------------------------------------------------------------------------------
SELECT * FROM show(idem.reserve('order-1', '{"amount": 5}', scope => 'tenant-b'));
-- ... and the token is only good in its own scope
SELECT idem.complete('order-1', 2, '{}', 200);
\echo SQLSTATE :SQLSTATE
SELECT idem.complete('order-1', 2, '{"ok": true}', 200, scope => 'tenant-b');
SELECT * FROM show(idem.reserve('order-1', '{"amount": 5}', scope => 'tenant-b'));

------------------------------------------------------------------------------
-- A response without a body: NULL is stored and replayed as NULL.
------------------------------------------------------------------------------
SELECT * FROM show(idem.reserve('delete-7', '{"op": "delete", "id": 7}'));
SELECT idem.complete('delete-7', 3, NULL, 204);
SELECT * FROM show(idem.reserve('delete-7', '{"op": "delete", "id": 7}'));
-- and without a status either
SELECT * FROM show(idem.reserve('ping', NULL));
SELECT idem.complete('ping', 4, NULL);
SELECT * FROM show(idem.reserve('ping', NULL));

------------------------------------------------------------------------------
-- Atomic mode: reserve, the business write and complete in one transaction.
-- A rollback leaves no trace: the key is absent again.
------------------------------------------------------------------------------
CREATE TABLE payments (key text PRIMARY KEY, amount integer);
BEGIN;
SELECT * FROM show(idem.reserve('order-2', '{"amount": 30}'));
INSERT INTO payments VALUES ('order-2', 30);
SELECT idem.complete('order-2', 5, '{"payment": "order-2"}', 201);
ROLLBACK;
SELECT count(*) AS rows_left FROM idem.keys WHERE key = 'order-2';
-- so the retry does the work (a new token: tokens are never reused)
BEGIN;
SELECT * FROM show(idem.reserve('order-2', '{"amount": 30}'));
INSERT INTO payments VALUES ('order-2', 30);
SELECT idem.complete('order-2', 6, '{"payment": "order-2"}', 201);
COMMIT;
SELECT * FROM show(idem.reserve('order-2', '{"amount": 30}'));
SELECT * FROM payments;

-- Within one statement, the second reserve sees the first one's row.
SELECT (idem.reserve('twice')).outcome AS first, (idem.reserve('twice')).outcome AS second;
-- ... and complete sees the reserve made earlier in the same statement.
SELECT idem.complete('same-statement', (idem.reserve('same-statement')).token, '{"ok": 1}', 200);
SELECT * FROM show(idem.reserve('same-statement'));

------------------------------------------------------------------------------
-- Lease mode: reserve commits alone, the work happens outside, and
-- checkpoint records progress.  Leases are short here to keep the test fast.
------------------------------------------------------------------------------
SELECT * FROM show(idem.reserve('job-1', '{"export": 42}', lease => '500ms'));
SELECT idem.checkpoint('job-1', 9, 'rows-1-1000', '{"last_id": 1000}', lease => '500ms');
-- still held: a retry is told to wait
SELECT * FROM show(idem.reserve('job-1', '{"export": 42}'));
SELECT pg_sleep(0.55);
-- the lease ended: the next reserve takes over with a larger token and gets
-- the earlier holder's recovery point and state
SELECT * FROM show(idem.reserve('job-1', '{"export": 42}'));
-- the stale holder is fenced off: ID002 for complete, release and checkpoint
SELECT idem.complete('job-1', 9, '{"rows": 1000}', 200);
\echo SQLSTATE :SQLSTATE
SELECT idem.release('job-1', 9);
\echo SQLSTATE :SQLSTATE
SELECT idem.checkpoint('job-1', 9, 'rows-1001-2000');
\echo SQLSTATE :SQLSTATE
-- the successor finishes the work
SELECT idem.checkpoint('job-1', 10, 'rows-1001-2000', '{"last_id": 2000}');
SELECT idem.complete('job-1', 10, '{"rows": 2000}', 200);
SELECT * FROM show(idem.reserve('job-1', '{"export": 42}'));

-- A holder whose lease ended but whom nobody took over still holds the key:
-- its complete succeeds.
SELECT * FROM show(idem.reserve('job-2', '{"export": 43}', lease => '100ms'));
SELECT pg_sleep(0.15);
SELECT idem.complete('job-2', 11, '{"rows": 1}', 200);
SELECT * FROM show(idem.reserve('job-2', '{"export": 43}'));

-- checkpoint renews the lease, with its own lease argument (or idem.lease)
SELECT * FROM show(idem.reserve('job-3', '{"export": 44}', lease => '100ms'));
SELECT idem.checkpoint('job-3', 12, 'started', lease => '1h');
SELECT pg_sleep(0.15);
SELECT * FROM show(idem.reserve('job-3', '{"export": 44}'));
SELECT locked_until - updated_at AS renewed_lease, checkpoint FROM idem.keys WHERE key = 'job-3';

------------------------------------------------------------------------------
-- release: the holder gives up without a response.  The key keeps its
-- request fingerprint, recovery point and checkpoint; the next reserve takes
-- it over at once with a larger token.
------------------------------------------------------------------------------
SELECT * FROM show(idem.reserve('job-4', '{"export": 45}'));
SELECT idem.checkpoint('job-4', 13, 'halfway', '{"done": 50}');
SELECT idem.release('job-4', 13);
SELECT state, token, locked_until, recovery_point FROM idem.keys WHERE key = 'job-4';
-- released twice: ID003
SELECT idem.release('job-4', 13);
\echo SQLSTATE :SQLSTATE
-- the fingerprint still holds
SELECT * FROM idem.reserve('job-4', '{"export": 46}');
\echo SQLSTATE :SQLSTATE
SELECT * FROM show(idem.reserve('job-4', '{"export": 45}'));

------------------------------------------------------------------------------
-- Settings: idem.lease and idem.ttl are the defaults of reserve().
------------------------------------------------------------------------------
SET idem.lease = '5s';
SET idem.ttl = '1h';
SELECT outcome FROM idem.reserve('with-settings');
SELECT locked_until - created_at AS lease, ttl, expires_at - locked_until AS expires_after_lease
FROM idem.keys WHERE key = 'with-settings';
RESET idem.lease;
RESET idem.ttl;
-- explicit arguments win; any positive interval works
SELECT outcome FROM idem.reserve('with-arguments', lease => '2 minutes', ttl => '7 days');
SELECT locked_until - created_at AS lease, ttl, expires_at - locked_until AS expires_after_lease
FROM idem.keys WHERE key = 'with-arguments';

DROP TABLE payments;
DROP FUNCTION show(idem.reservation);
