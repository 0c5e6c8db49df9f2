-- outbox / drain: PgQ.  The ticker cut a tick every 1000 events while the
-- queue was filled (run.sh), so each batch holds about 1000 events, the
-- same batch size as the others.  next_batch / get_batch_events (all rows
-- travel to the client) / finish_batch.  Run with -c 1 -t N.
SELECT coalesce(pgq.next_batch('bench_drain', 'bench'), 0) AS batch_id \gset
\if :batch_id > 0
SELECT ev_id, ev_type, ev_data, ev_time FROM pgq.get_batch_events(:batch_id::bigint);
SELECT pgq.finish_batch(:batch_id::bigint);
\endif
