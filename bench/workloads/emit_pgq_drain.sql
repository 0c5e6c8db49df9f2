-- outbox / emit one event into PgQ's queue bench_drain (the queue the
-- drain scripts read): emit_pgq.sql's call, for the held-snapshot section
-- where emitters and a consumer run at the same time.
\set n random(1, 9000000000000000000)
\set amount random(1, 100000)
SELECT pgq.insert_event('bench_drain', 'orders',
                        jsonb_build_object('order_id', :n::bigint, 'amount', :amount::int)::text);
