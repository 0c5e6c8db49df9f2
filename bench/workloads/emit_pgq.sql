-- outbox / emit one event: PgQ (postgresql-15-pgq3), the peer that does the
-- same job.  pgq.insert_event(queue, type, data) is what PgQ producers call.
\set n random(1, 9000000000000000000)
\set amount random(1, 100000)
SELECT pgq.insert_event('bench_emit', 'orders',
                        jsonb_build_object('order_id', :n::bigint, 'amount', :amount::int)::text);
