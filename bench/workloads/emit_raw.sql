-- outbox / emit one event: baseline.
-- The raw INSERT into a table with the same columns as idem.outbox
-- (identity id, created_at and the writing xid filled by defaults).
\set n random(1, 9000000000000000000)
\set amount random(1, 100000)
INSERT INTO bench.raw_outbox (topic, key, payload)
VALUES ('orders', 'o' || :n::text, jsonb_build_object('order_id', :n::bigint, 'amount', :amount::int))
RETURNING id;
