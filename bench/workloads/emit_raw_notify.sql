-- outbox / emit one event: baseline with the wake-up included.
-- idem.emit also notifies channel idem_outbox on commit; a team that wants
-- its relay woken up writes the INSERT and the NOTIFY in one statement.
\set n random(1, 9000000000000000000)
\set amount random(1, 100000)
WITH e AS (
  INSERT INTO bench.raw_outbox (topic, key, payload)
  VALUES ('orders', 'o' || :n::text, jsonb_build_object('order_id', :n::bigint, 'amount', :amount::int))
  RETURNING id, topic)
SELECT id, pg_notify('idem_outbox', topic) FROM e;
