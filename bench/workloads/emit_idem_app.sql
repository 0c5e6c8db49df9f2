-- outbox / emit one event in its own transaction: pg_idem, called by an
-- application role.
-- role: bench_app
-- emit_idem.sql as bench_app, which idem.grant_usage() restricted to three
-- topic patterns (bench/run.sh): the per-call topic check is in the time.
-- Compare with emit_idem.sql (the owner, who is not checked).
\set n random(1, 9000000000000000000)
\set amount random(1, 100000)
SELECT idem.emit('orders', jsonb_build_object('order_id', :n::bigint, 'amount', :amount::int),
                 'o' || :n::text);
