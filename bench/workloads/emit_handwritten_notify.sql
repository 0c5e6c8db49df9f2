-- outbox / emit one event: the hand-written INSERT plus a NOTIFY in the same
-- transaction (reference).  What an emit that notifies on every commit pays
-- -- pg_idem 0.2.0 without preload did -- since PostgreSQL commits notifying
-- transactions one at a time.  Compared with emit_handwritten.sql in the
-- "emit cost" section.
\set n random(1, 9000000000000000000)
\set amount random(1, 100000)
WITH e AS (
  INSERT INTO bench.handwritten_outbox (topic, key, payload)
  VALUES ('orders', 'o' || :n::text, jsonb_build_object('order_id', :n::bigint, 'amount', :amount::int))
  RETURNING id
)
SELECT id, pg_notify('idem_outbox', 'orders') FROM e;
