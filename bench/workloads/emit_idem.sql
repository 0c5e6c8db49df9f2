-- outbox / emit one event in its own transaction: pg_idem.
-- Compare with emit_raw.sql (the INSERT it replaces), emit_raw_notify.sql
-- (the INSERT plus the NOTIFY that emit also sends) and emit_pgq.sql.
\set n random(1, 9000000000000000000)
\set amount random(1, 100000)
SELECT idem.emit('orders', jsonb_build_object('order_id', :n::bigint, 'amount', :amount::int),
                 'o' || :n::text);
