-- outbox / emit one event: the hand-written outbox of issue 14.
-- The table a team writes by hand (bench.handwritten_outbox: id bigserial
-- PRIMARY KEY, topic, key, payload jsonb, created_at -- one index, nothing
-- else) and the INSERT its application sends.  Compared with emit_idem.sql
-- in the "emit cost" section, with and without preload, fsync on and off.
\set n random(1, 9000000000000000000)
\set amount random(1, 100000)
INSERT INTO bench.handwritten_outbox (topic, key, payload)
VALUES ('orders', 'o' || :n::text, jsonb_build_object('order_id', :n::bigint, 'amount', :amount::int))
RETURNING id;
