-- outbox / drain: one consumer takes a batch of up to 1000 events (all rows
-- travel to the client) and finishes it: pg_idem.  Run with -c 1 -t N.
-- The events stay in idem.outbox until maintenance deletes them; run.sh
-- times that cleanup separately and reports drain + cleanup as well.
\set batch_id 0
SELECT batch_id, id, topic, key, payload, headers, created_at
  FROM idem.next_batch('bench_drain', 1000) \aset
\if :batch_id > 0
SELECT idem.finish_batch('bench_drain', :batch_id::bigint);
\endif
