--
-- Transactional outbox: emit, subscribe, next_batch, finish_batch,
-- unsubscribe, and every error they raise (SPEC.md section 3).
--
-- Ids and batch ids start from 1 so that this file reads the same on every
-- run.
TRUNCATE idem.outbox, idem.consumers RESTART IDENTITY;
ALTER SEQUENCE idem.outbox_batch_seq RESTART;

-- Report an error as SQLSTATE and message, to show codes compactly.
CREATE FUNCTION pg_temp.err(sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE sql;
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- A consumer subscribes before the events it wants: by default it receives
-- the events of transactions that commit after subscribe().
SELECT idem.subscribe('billing');

-- emit() writes in the caller's transaction and returns the event id.
SELECT idem.emit('orders', '{"order": 1, "amount": 100}');
SELECT idem.emit('orders', '{"order": 2, "amount": 250}', key => 'customer-7',
                 headers => '{"trace_id": "abc"}');

-- A transaction that rolls back leaves no event.
BEGIN;
SELECT idem.emit('orders', '{"order": 3, "amount": 999}');
ROLLBACK;

-- The same for an emit inside a savepoint rolled back by the application.
BEGIN;
SAVEPOINT s;
SELECT idem.emit('orders', '{"order": 4}');
ROLLBACK TO SAVEPOINT s;
COMMIT;

SELECT id, topic, key, payload, headers, created_at IS NOT NULL AS has_created_at,
       xid IS NOT NULL AS has_xid
  FROM idem.outbox ORDER BY id;

-- next_batch() opens a batch: the committed events, in id order.
SELECT batch_id, id, topic, key, payload, headers FROM idem.next_batch('billing');

-- Until it is finished, the same batch comes back, with the same id and the
-- same rows (a relay that crashed re-reads what it had not finished), even
-- when later events have committed and whatever max_events says now.
SELECT idem.emit('orders', '{"order": 5}');
SELECT batch_id, id, payload FROM idem.next_batch('billing', 1);

-- finish_batch() closes it and returns how many events it held.
SELECT idem.finish_batch('billing', 1);

-- The next batch holds only what was not delivered yet.
SELECT batch_id, id, payload FROM idem.next_batch('billing');
SELECT idem.finish_batch('billing', 2);

-- Nothing new: no rows, and no batch is opened.  Such an idle poll writes
-- nothing at all (no transaction id, no WAL), so a relay may poll often.
BEGIN;
SELECT * FROM idem.next_batch('billing');
SELECT pg_current_xact_id_if_assigned() IS NULL AS wrote_nothing;
COMMIT;
SELECT batch_id FROM idem.consumers WHERE name = 'billing';

-- A batch is finished once: finishing it again is ID021.
SELECT idem.finish_batch('billing', 2);

-- Finishing another batch than the open one is ID021 too, and says which
-- batch is open.
SELECT idem.emit('orders', '{"order": 6}');
SELECT batch_id, id FROM idem.next_batch('billing');
SELECT idem.finish_batch('billing', 99);
SELECT idem.finish_batch('billing', 3);

-- An unknown consumer is ID020.
SELECT * FROM idem.next_batch('nobody');
SELECT idem.finish_batch('nobody', 1);

-- Consumer names are case-sensitive, like the keys of a map.
SELECT * FROM idem.next_batch('Billing');

-- Topic filters: a consumer of some topics sees only those.
SELECT idem.subscribe('shipping', ARRAY['orders', 'returns']);
SELECT idem.emit('payments', '{"payment": 1}');
SELECT idem.emit('returns', '{"return": 1}');
SELECT idem.emit('orders', '{"order": 7}');
SELECT batch_id, id, topic, payload FROM idem.next_batch('shipping');
SELECT idem.finish_batch('shipping', 4);
-- ... while a consumer of every topic (topics NULL) sees all three.
SELECT batch_id, id, topic FROM idem.next_batch('billing');
SELECT idem.finish_batch('billing', 5);

-- Subscribing again is not an error: it replaces the topic filter, keeps
-- the position, and ignores from_start (a relay may call subscribe() every
-- time it starts).
SELECT idem.subscribe('shipping', ARRAY['payments'], from_start => true);
SELECT name, topics FROM idem.consumers ORDER BY name;
SELECT idem.emit('payments', '{"payment": 2}');
SELECT idem.emit('orders', '{"order": 8}');
SELECT batch_id, id, topic, payload FROM idem.next_batch('shipping');
-- An open batch keeps the filter it was opened with: re-subscribing while
-- it is open changes the next batches, not this one.
SELECT idem.subscribe('shipping', ARRAY['orders']);
SELECT batch_id, id, topic, payload FROM idem.next_batch('shipping');
SELECT idem.finish_batch('shipping', 6);
-- A topic added by re-subscribing is delivered from the consumer's position
-- on: order 8 was in the window already walked, so it is not delivered.
SELECT idem.emit('orders', '{"order": 9}');
SELECT batch_id, id, topic, payload FROM idem.next_batch('shipping');
SELECT idem.finish_batch('shipping', 7);

-- from_start: a new consumer that receives every retained event first.
SELECT idem.subscribe('audit', from_start => true);
SELECT batch_id, count(*) AS events, min(id) AS first_id, max(id) AS last_id
  FROM idem.next_batch('audit') GROUP BY batch_id;
SELECT idem.finish_batch('audit', 8);
-- Without from_start, a new consumer starts now: nothing retained is
-- delivered.
SELECT idem.subscribe('late');
SELECT * FROM idem.next_batch('late');

-- unsubscribe() says whether the consumer existed.
SELECT idem.unsubscribe('late');
SELECT idem.unsubscribe('late');
SELECT * FROM idem.next_batch('late');

-- Bad input: NULLs raise 22004, empty or over-long names and a bad
-- max_events 22023; the full messages first, then the codes.
SELECT idem.emit(NULL, '{}');
SELECT idem.emit('orders', NULL);
SELECT idem.emit('', '{}');
SELECT idem.emit(repeat('t', 256), '{}');
SELECT idem.emit('orders', '{}', headers => '[1, 2]');
SELECT idem.subscribe('x', ARRAY[]::text[]);
SELECT idem.subscribe('x', ARRAY['orders', NULL]);
SELECT * FROM idem.next_batch('billing', 0);
SELECT idem.finish_batch('billing', NULL);

SELECT call, pg_temp.err(call) AS outcome FROM (VALUES
  ($$SELECT idem.emit(NULL, '{}')$$),
  ($$SELECT idem.emit('orders', NULL)$$),
  ($$SELECT idem.emit('', '{}')$$),
  ($$SELECT idem.emit(repeat('t', 255), '{}')$$),
  ($$SELECT idem.emit(repeat('t', 256), '{}')$$),
  ($$SELECT idem.emit(repeat(U&'\00E9', 128), '{}')$$),  -- 128 two-byte characters
  ($$SELECT idem.emit('orders', 'null')$$),
  ($$SELECT idem.emit('orders', '{}', headers => '"x"')$$),
  ($$SELECT idem.subscribe(NULL)$$),
  ($$SELECT idem.subscribe('')$$),
  ($$SELECT idem.subscribe(repeat('c', 256))$$),
  ($$SELECT idem.subscribe('x', ARRAY[]::text[])$$),
  ($$SELECT idem.subscribe('x', ARRAY['orders', NULL])$$),
  ($$SELECT idem.subscribe('x', ARRAY['orders', ''])$$),
  ($$SELECT idem.subscribe('x', ARRAY[['a'], ['b']])$$),
  ($$SELECT idem.subscribe('x', from_start => NULL)$$),
  ($$SELECT idem.unsubscribe(NULL)$$),
  ($$SELECT idem.unsubscribe('')$$),
  ($$SELECT * FROM idem.next_batch(NULL)$$),
  ($$SELECT * FROM idem.next_batch('')$$),
  ($$SELECT * FROM idem.next_batch('billing', NULL)$$),
  ($$SELECT * FROM idem.next_batch('billing', 0)$$),
  ($$SELECT * FROM idem.next_batch('billing', -5)$$),
  ($$SELECT * FROM idem.next_batch('nobody')$$),
  ($$SELECT idem.finish_batch(NULL, 1)$$),
  ($$SELECT idem.finish_batch('billing', NULL)$$),
  ($$SELECT idem.finish_batch('nobody', 1)$$),
  ($$SELECT idem.finish_batch('billing', 12345)$$),
  ($$SELECT idem.trim_outbox(NULL)$$),
  ($$SELECT idem.trim_outbox(0)$$)
) AS t(call);

-- None of the refused calls left anything behind.
SELECT name FROM idem.consumers ORDER BY name;
SELECT count(*) AS events_with_json_null FROM idem.outbox WHERE payload = 'null';

SELECT idem.unsubscribe(name) FROM idem.consumers ORDER BY name;
TRUNCATE idem.outbox RESTART IDENTITY;
