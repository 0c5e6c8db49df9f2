-- The outbox's storage (0.2): a ring of 8 leaves, idem.outbox_0 .. _7,
-- partitioned by (id / 65536) % 8.  Trimming empties a leaf with TRUNCATE
-- once every consumer has finished every event in it, and deletes rows
-- only in a leaf that holds two laps of the ring.  The ids are moved on
-- with setval() to stand for the traffic that fills a run.
TRUNCATE idem.outbox, idem.consumers RESTART IDENTITY;
ALTER SEQUENCE idem.outbox_batch_seq RESTART;

-- Where events go: run r of 65536 ids is in leaf r % 8, whether emit()
-- writes the row or an INSERT routes it.
SELECT idem.subscribe('relay');
SELECT idem.emit('st', '{"n": 1}');
SELECT setval('idem.outbox_id_seq', 65535);
SELECT idem.emit('st', '{"n": 2}');
INSERT INTO idem.outbox (topic, payload) VALUES ('st', '{"n": 3}');
SELECT setval('idem.outbox_id_seq', 2 * 65536 + 99);
SELECT idem.emit('st', '{"n": 4}');
SELECT tableoid::regclass AS leaf, id, payload FROM idem.outbox ORDER BY id;

-- A batch walks the runs in id order, leaf after leaf.
SELECT id, payload FROM idem.next_batch('relay');
SELECT idem.finish_batch('relay', 1);

-- Leaves 0 and 1 hold only finished events: they are truncated whole.
-- Leaf 2 also holds event 5, not finished yet: it stays whole.
SELECT idem.emit('st', '{"n": 5}');
SELECT idem.trim_outbox(1000);
SELECT tableoid::regclass AS leaf, id FROM idem.outbox ORDER BY id;
SELECT pg_relation_size('idem.outbox_0') AS leaf_0_bytes;

-- A leaf this session is reading (an open cursor) is left alone: TRUNCATE
-- would refuse it.
SELECT id, payload FROM idem.next_batch('relay');
SELECT idem.finish_batch('relay', 2);
BEGIN;
DECLARE reading CURSOR FOR SELECT id FROM idem.outbox_2;
FETCH 1 FROM reading;
SELECT idem.trim_outbox(1000);
CLOSE reading;
SELECT idem.trim_outbox(1000);
COMMIT;
SELECT count(*) AS events FROM idem.outbox;

-- An event this transaction emitted is never trimmed with its leaf, even
-- by the transaction itself: its consumers have not seen it commit.
BEGIN;
SELECT setval('idem.outbox_id_seq', 4 * 65536) > 0 AS run_4;
SELECT idem.emit('st', '{"n": 6}') > 0 AS emitted;
SELECT idem.trim_outbox(1000);
COMMIT;
SELECT id, payload FROM idem.next_batch('relay');
SELECT idem.finish_batch('relay', 3);
SELECT idem.trim_outbox(1000);

-- Two laps in a leaf: the ring went round while a consumer lagged.
-- Leaf 0 holds event 7 of run 16 and, a lap later, events 8..10 (run 24),
-- all finished, and events 11..13 of run 24, which 'slow' has not
-- finished: the leaf cannot be truncated, so its finished events are
-- deleted row by row, at most max_rows a call.
SELECT idem.subscribe('slow');
SELECT setval('idem.outbox_id_seq', 16 * 65536) > 0 AS run_16;
SELECT idem.emit('st', '{"n": 7}') > 0 AS emitted;
SELECT setval('idem.outbox_id_seq', 24 * 65536) > 0 AS run_24;
SELECT count(idem.emit('st', jsonb_build_object('n', g))) FROM generate_series(8, 10) g;
SELECT count(*) FROM idem.next_batch('slow');
SELECT idem.finish_batch('slow', 4);
SELECT count(idem.emit('st', jsonb_build_object('n', g))) FROM generate_series(11, 13) g;
SELECT count(*) FROM idem.next_batch('relay');
SELECT idem.finish_batch('relay', 5);
SELECT idem.trim_outbox(3);
SELECT idem.trim_outbox(3);
SELECT idem.trim_outbox(3);
SELECT tableoid::regclass AS leaf, id / 65536 AS run, payload FROM idem.outbox ORDER BY id;
-- once 'slow' is done, the leaf is truncated
SELECT count(*) FROM idem.next_batch('slow');
SELECT idem.finish_batch('slow', 6);
SELECT idem.trim_outbox(1000);
SELECT count(*) AS events FROM idem.outbox;
SELECT idem.unsubscribe('slow'), idem.unsubscribe('relay');

-- Without consumers, a leaf goes once all its events are older than
-- idem.outbox_retention.
SET idem.outbox_retention = '1h';
SELECT setval('idem.outbox_id_seq', 32 * 65536) > 0 AS run_32;
SELECT count(idem.emit('old', jsonb_build_object('n', g))) FROM generate_series(1, 3) g;
SELECT setval('idem.outbox_id_seq', 33 * 65536) > 0 AS run_33;
SELECT idem.emit('new', '{"n": 4}') > 0 AS emitted;
UPDATE idem.outbox SET created_at = now() - interval '2 hours' WHERE topic = 'old';
SELECT idem.trim_outbox(1000);
SELECT tableoid::regclass AS leaf, topic, payload FROM idem.outbox ORDER BY id;
RESET idem.outbox_retention;

-- A user's foreign key onto a leaf: PostgreSQL refuses to TRUNCATE it, and a
-- row DELETE would fail on the referenced event.  That leaf is not trimmed
-- (a WARNING says why) and trimming goes on with the others, instead of
-- failing, and with it every task of idem.maintain().
SELECT idem.subscribe('fk');
SELECT idem.emit('fk', '{"n": 5}') AS fk_id \gset
SELECT format('idem.outbox_%s', (:fk_id / 65536) % 8) AS fk_leaf \gset
CREATE TABLE public.event_refs (event_id bigint REFERENCES :fk_leaf (id));
INSERT INTO public.event_refs VALUES (:fk_id);
SELECT count(*) FROM idem.next_batch('fk');
SELECT idem.finish_batch('fk', (SELECT max(batch_id) FROM idem.next_batch('fk')));
SELECT idem.trim_outbox(1000);
SELECT topic, payload FROM idem.outbox ORDER BY id;
DROP TABLE public.event_refs;
SELECT idem.trim_outbox(1000);
SELECT count(*) AS events FROM idem.outbox;
SELECT idem.unsubscribe('fk');

TRUNCATE idem.outbox RESTART IDENTITY;
ALTER SEQUENCE idem.outbox_batch_seq RESTART;
