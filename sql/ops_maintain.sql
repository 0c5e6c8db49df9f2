-- idem.maintain() (SPEC.md section 4): deletes expired keys and finished
-- outbox events in bounded batches, and says how many of each.

-- Nothing to do: one row per task, zero rows deleted.
SELECT * FROM idem.maintain();

-- Keys: completed keys past expires_at go; live and held keys stay.
SELECT idem.complete('mnt-short', (idem.reserve('mnt-short', NULL, 'mnt', NULL, '1 millisecond')).token,
                     '{"ok": true}', 200, 'mnt');
SELECT idem.complete('mnt-long', (idem.reserve('mnt-long', NULL, 'mnt', NULL, '1 hour')).token,
                     '{"ok": true}', 200, 'mnt');
SELECT outcome FROM idem.reserve('mnt-held', NULL, 'mnt');
SELECT pg_sleep(0.01);
SELECT * FROM idem.maintain();
SELECT key, state FROM idem.keys WHERE scope = 'mnt' ORDER BY key;

-- Batches of 1000 rows: 2500 expired keys take three batches of one call.
INSERT INTO idem.keys (scope, key, state, ttl, created_at, updated_at, expires_at)
SELECT 'mnt-bulk', 'k' || i, 'completed', '1 second', now() - interval '1 hour',
       now() - interval '1 hour', now() - interval '1 minute'
  FROM generate_series(1, 2500) AS i;
SELECT * FROM idem.maintain() WHERE task = 'expired_keys';

-- One call stops after 100 batches per task (100,000 rows), so the caller's
-- transaction stays short; the next call goes on.

INSERT INTO idem.keys (scope, key, state, ttl, created_at, updated_at, expires_at)
SELECT 'mnt-bulk', 'k' || i, 'completed', '1 second', now() - interval '1 hour',
       now() - interval '1 hour', now() - interval '1 minute'
  FROM generate_series(1, 100500) AS i;
SELECT * FROM idem.maintain() WHERE task = 'expired_keys';
SELECT * FROM idem.maintain() WHERE task = 'expired_keys';
SELECT count(*) FROM idem.keys WHERE scope = 'mnt-bulk';

-- Outbox, with a consumer: an event goes once the consumer has finished it;
-- delivered-but-unfinished and undelivered events stay.
-- (Trimming empties whole leaves of the ring: these events get a run of
-- ids, and so a leaf, of their own, and the last one the next run.)
SELECT setval('idem.outbox_id_seq', 2 * 65536) > 0 AS run_2;
SELECT idem.subscribe('mnt-relay', ARRAY['mnt']);
SELECT idem.emit('mnt', '{"n": 1}') > 0 AS emitted;
SELECT idem.emit('mnt', '{"n": 2}') > 0 AS emitted;
SELECT batch_id AS mnt_batch, count(*) OVER () AS events
  FROM idem.next_batch('mnt-relay') LIMIT 1 \gset
SELECT :events AS events_in_batch;
SELECT * FROM idem.maintain() WHERE task = 'outbox_events';
SELECT idem.finish_batch('mnt-relay', :mnt_batch);
SELECT setval('idem.outbox_id_seq', 3 * 65536) > 0 AS run_3;
SELECT idem.emit('mnt', '{"n": 3}') > 0 AS emitted;
SELECT * FROM idem.maintain() WHERE task = 'outbox_events';
SELECT payload FROM idem.outbox WHERE topic = 'mnt' ORDER BY id;
SELECT idem.unsubscribe('mnt-relay');

-- Without consumers, events are kept for idem.outbox_retention.
SELECT * FROM idem.maintain() WHERE task = 'outbox_events';
SELECT count(*) FROM idem.outbox WHERE topic = 'mnt';
SET idem.outbox_retention = '1s';
UPDATE idem.outbox SET created_at = created_at - interval '1 minute' WHERE topic = 'mnt';
SELECT * FROM idem.maintain() WHERE task = 'outbox_events';
SELECT count(*) FROM idem.outbox WHERE topic = 'mnt';
RESET idem.outbox_retention;

-- The function itself: volatile, SECURITY DEFINER with a pinned search_path,
-- not granted to PUBLIC.
SELECT p.provolatile, p.prosecdef, p.proconfig,
       (SELECT count(*) FROM aclexplode(p.proacl) AS a WHERE a.grantee = 0) AS public_grants
  FROM pg_proc p WHERE p.oid = 'idem.maintain()'::regprocedure;
