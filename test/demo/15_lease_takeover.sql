-- ============================================================================
-- Lease takeover: a worker that calls a slow external service holds the key
-- under a lease and saves recovery points as it goes.  It stops renewing (it
-- hangs, or its machine dies); a second worker takes the request over,
-- resumes from the last recovery point, and the first worker, when it comes
-- back, cannot overwrite the result: its token is fenced.
-- ============================================================================

-- 1. Worker A reserves the request in lease mode (its own transaction, so
--    it commits before A calls the service), with a short lease.
SELECT outcome, token AS token_a
  FROM idem.reserve('export-42', '{"report": "Q3"}', lease => '1 second') \gset
\echo worker A: :outcome, token :token_a

-- 2. A exports the first 5000 rows and saves a recovery point; this also
--    renews its lease for another second.
SELECT idem.checkpoint('export-42', :token_a, 'rows-exported', '{"last_row": 5000}');

-- 3. A stops renewing.  While its lease lasts, a retry is told to wait ...
SELECT outcome, locked_until > clock_timestamp() AS lease_live
  FROM idem.reserve('export-42', '{"report": "Q3"}');

-- ... and once it has ended, worker B takes the request over: a larger
--    token, and A's recovery point, so B resumes after row 5000 instead of
--    starting again.
SELECT pg_sleep(1.2);
SELECT outcome, token AS token_b, recovery_point, checkpoint
  FROM idem.reserve('export-42', '{"report": "Q3"}') \gset
SELECT :'outcome' AS outcome, :token_b > :token_a AS token_grew,
       :'recovery_point' AS recovery_point, :'checkpoint'::jsonb AS checkpoint;

-- 4. A comes back and tries to finish with its old token.  It is fenced
--    (SQLSTATE ID002): it must stop, and cannot overwrite B's work.
SELECT idem.complete('export-42', :token_a, '{"rows": 5000}', 200);
\echo SQLSTATE :SQLSTATE

-- 5. B finishes from row 5001 and completes with its own token.
SELECT idem.complete('export-42', :token_b, '{"rows": 9000}', 200);

-- A retry of the request now replays B's answer.
SELECT outcome, response, status FROM idem.reserve('export-42', '{"report": "Q3"}');
