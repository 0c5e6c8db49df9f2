-- Transactional outbox: an event is published if and only if its
-- transaction commits.
--
-- The dual-write problem: a shop writes an order to PostgreSQL, then
-- publishes "order placed" to a broker.  Crash between the two and the
-- broker never hears of a real order; publish first and roll back, and the
-- broker announces an order that does not exist.  With pg_idem the event is
-- a row written in the order's own transaction; a relay publishes it later.

CREATE TABLE demo_orders (id integer PRIMARY KEY, customer text NOT NULL,
                          amount numeric NOT NULL);

-- The relay (the process that publishes to the broker) subscribes once.
SELECT idem.subscribe('broker-relay', ARRAY['order.placed']);

-- The relay sleeps on LISTEN idem_outbox and wakes up when a transaction
-- that emitted events commits.  (psql shows notifications after a command.)
LISTEN idem_outbox;

-- Order 1: written, event emitted... then the card is declined and the
-- transaction rolls back.  The event goes with it.
BEGIN;
INSERT INTO demo_orders VALUES (1, 'alice', 30);
SELECT idem.emit('order.placed', '{"order": 1, "amount": 30}', key => 'alice') AS event_id;
ROLLBACK;

-- Order 2: committed, together with its event.  The notification arrives on
-- commit, not before.
BEGIN;
INSERT INTO demo_orders VALUES (2, 'bob', 45);
SELECT idem.emit('order.placed', '{"order": 2, "amount": 45}', key => 'bob',
                 headers => '{"trace_id": "4bf92f35"}') AS event_id;
COMMIT;

SELECT * FROM demo_orders;

-- The relay's loop, step 1: take a batch.  Only order 2 is there.
SELECT batch_id, id, topic, key, payload, headers FROM idem.next_batch('broker-relay');

-- Suppose the relay crashes while publishing.  When it comes back, it gets
-- the same batch again (same id, same events): nothing is lost.  The broker
-- may see order 2 twice, so consumers deduplicate by event id.
SELECT batch_id, id, key, payload FROM idem.next_batch('broker-relay');

-- (The relay keeps the batch id to finish it.)
SELECT max(batch_id) AS batch_id FROM idem.next_batch('broker-relay') \gset

-- Step 2: once the broker acknowledged, finish the batch.
SELECT idem.finish_batch('broker-relay', :batch_id) AS events_finished;

-- Nothing new: no rows.
SELECT batch_id, id FROM idem.next_batch('broker-relay');

-- How far behind is each consumer?
SELECT consumer, pending, oldest_pending_age FROM idem.consumer_lag;

UNLISTEN idem_outbox;
SELECT idem.unsubscribe('broker-relay');
DROP TABLE demo_orders;
