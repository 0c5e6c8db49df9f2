-- checkpoint() renews a lease by the holder's own lease length (0.2.0):
-- the lease it reserved with, or the one it last gave to checkpoint().
-- It never falls back to the caller's idem.lease.
SET idem.lease = '30s';

-- A worker that reserved for 10 minutes keeps 10 minutes per checkpoint.
SELECT outcome, token AS t1 FROM idem.reserve('long-job', lease => '10 minutes') \gset
SELECT idem.checkpoint('long-job', :t1, 'step-1');
SELECT locked_until - updated_at AS renewed_by, lease
  FROM idem.keys WHERE key = 'long-job';

-- One that reserved for 1 second does not jump to idem.lease's 30 seconds.
SELECT token AS t2 FROM idem.reserve('short-job', lease => '1 second') \gset
SELECT idem.checkpoint('short-job', :t2, 'step-1');
SELECT locked_until - updated_at AS renewed_by FROM idem.keys WHERE key = 'short-job';

-- A lease given to checkpoint() becomes the holder's lease from then on.
SELECT idem.checkpoint('long-job', :t1, 'step-2', lease => '5 minutes');
SELECT idem.checkpoint('long-job', :t1, 'step-3');
SELECT locked_until - updated_at AS renewed_by, lease, recovery_point
  FROM idem.keys WHERE key = 'long-job';

-- A successor that takes the key over holds it by its own lease.
SELECT idem.release('long-job', :t1);
SELECT token AS t3 FROM idem.reserve('long-job', lease => '2 minutes') \gset
SELECT idem.checkpoint('long-job', :t3, 'step-4');
SELECT locked_until - updated_at AS renewed_by, lease FROM idem.keys WHERE key = 'long-job';

-- idem.lease set in the checkpointing session changes nothing.
SET idem.lease = '1h';
SELECT idem.checkpoint('long-job', :t3, 'step-5');
SELECT locked_until - updated_at AS renewed_by FROM idem.keys WHERE key = 'long-job';
RESET idem.lease;

SELECT idem.forget('long-job'), idem.forget('short-job');
