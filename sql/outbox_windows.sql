--
-- Transactional outbox: windows larger than max_events, events emitted by
-- the consumer's own transaction, consumer_lag, and trimming.
--
TRUNCATE idem.outbox, idem.consumers RESTART IDENTITY;
ALTER SEQUENCE idem.outbox_batch_seq RESTART;

SELECT idem.subscribe('relay');

-- 25 events in one transaction and 5 in five more: one window of 30 events
-- that max_events = 10 splits into three batches, each in id order, each
-- re-read identically until finished, and never overlapping.
SELECT count(idem.emit('bulk', jsonb_build_object('n', g))) FROM generate_series(1, 25) g;
SELECT idem.emit('single', jsonb_build_object('n', 25 + 1));
SELECT idem.emit('single', jsonb_build_object('n', 25 + 2));
SELECT idem.emit('single', jsonb_build_object('n', 25 + 3));
SELECT idem.emit('single', jsonb_build_object('n', 25 + 4));
SELECT idem.emit('single', jsonb_build_object('n', 25 + 5));

CREATE TEMP TABLE delivered (batch_id bigint, id bigint);

SELECT batch_id, count(*), min(id), max(id) FROM idem.next_batch('relay', 10) GROUP BY 1;
-- The re-read returns the same ten rows, in id order.
SELECT array_agg(id) = array_agg(id ORDER BY id) AS in_id_order, count(*)
  FROM idem.next_batch('relay', 10);
INSERT INTO delivered SELECT batch_id, id FROM idem.next_batch('relay', 10);
SELECT idem.finish_batch('relay', 1);

-- An event committed while the window is being walked waits for the next
-- window: the current window is fixed.
SELECT idem.emit('single', '{"n": 31}');
INSERT INTO delivered SELECT batch_id, id FROM idem.next_batch('relay', 10);
SELECT idem.finish_batch('relay', 2);
INSERT INTO delivered SELECT batch_id, id FROM idem.next_batch('relay', 10);
SELECT idem.finish_batch('relay', 3);
INSERT INTO delivered SELECT batch_id, id FROM idem.next_batch('relay', 10);
SELECT idem.finish_batch('relay', 4);
SELECT * FROM idem.next_batch('relay', 10);

SELECT batch_id, count(*), min(id), max(id) FROM delivered GROUP BY 1 ORDER BY 1;
-- Every event exactly once.
SELECT count(*) AS delivered, count(DISTINCT id) AS distinct_events,
       (SELECT count(*) FROM idem.outbox) AS emitted
  FROM delivered;

-- A relay that emits follow-up events in the same transaction in which it
-- reads and finishes a batch: those events are not part of its own batch
-- (they are not committed yet), and arrive in a later one.
SELECT idem.emit('order.placed', '{"order": 100}');
BEGIN;
SELECT batch_id, id, topic FROM idem.next_batch('relay');
SELECT idem.emit('invoice.requested', '{"order": 100}');
SELECT idem.finish_batch('relay', 5);
SELECT batch_id, id, topic FROM idem.next_batch('relay');
COMMIT;
SELECT batch_id, id, topic FROM idem.next_batch('relay');
SELECT idem.finish_batch('relay', 6);

-- consumer_lag: per consumer, the committed events it has not finished (an
-- open batch counts) and the age of the oldest.
SELECT idem.subscribe('slow', from_start => true);
SELECT idem.emit('single', '{"n": 32}');
SELECT consumer, topics, pending, oldest_pending_age > interval '0' AS waiting,
       open_batch_id, last_finished_at IS NOT NULL AS finished_before
  FROM idem.consumer_lag ORDER BY consumer;
SELECT count(*) FROM idem.next_batch('slow', 20);
SELECT consumer, pending, open_batch_id FROM idem.consumer_lag ORDER BY consumer;
SELECT idem.finish_batch('slow', 7);
SELECT consumer, pending, open_batch_id FROM idem.consumer_lag ORDER BY consumer;

-- Trimming removes the events every consumer has finished, a whole leaf
-- of the ring at a time (TRUNCATE; docs/outbox-storage.md).  All these
-- events are in leaf idem.outbox_0.  'slow' is in the middle of its window
-- (14 events left), and 'relay' has not read the latest event: both hold
-- the leaf back (sql/outbox_storage.sql shows leaves emptied one by one).
SELECT count(*) AS events FROM idem.outbox;
SELECT idem.trim_outbox(1000);
SELECT count(*) AS events, min(id) AS oldest FROM idem.outbox;
-- still held back by 'relay' (max_rows only bounds row-by-row deletes)
INSERT INTO delivered SELECT batch_id, id FROM idem.next_batch('slow', 100);
SELECT idem.finish_batch('slow', 8);
SELECT idem.trim_outbox(5);
SELECT idem.trim_outbox(5);
SELECT count(*) AS events, min(id) AS oldest FROM idem.outbox;
SELECT count(*) FROM idem.next_batch('relay');
SELECT idem.finish_batch('relay', 9);
SELECT idem.trim_outbox(1000);
SELECT count(*) AS events FROM idem.outbox;

-- With no consumer at all, events are kept for idem.outbox_retention
-- (7 days by default) and then trimmed: a leaf once all its events are
-- that old, else the expired events one by one (max_rows at a time).
SELECT idem.unsubscribe('relay'), idem.unsubscribe('slow');
SHOW idem.outbox_retention;
SELECT count(idem.emit('unread', jsonb_build_object('n', g))) FROM generate_series(1, 6) g;
SELECT idem.trim_outbox(1000);
UPDATE idem.outbox SET created_at = now() - interval '8 days'
 WHERE id IN (SELECT id FROM idem.outbox ORDER BY id LIMIT 4);
SELECT idem.trim_outbox(3);
SELECT idem.trim_outbox(1000);
SELECT count(*) AS events FROM idem.outbox;
SET idem.outbox_retention = '1s';
UPDATE idem.outbox SET created_at = now() - interval '2s';
SELECT idem.trim_outbox(1000);
RESET idem.outbox_retention;

-- A consumer position restored from a dump of another cluster is ahead of
-- this server's transaction counter: read here it would call every new
-- event finished.  next_batch refuses it (55000) and trimming pauses.
SELECT idem.subscribe('restored');
UPDATE idem.consumers SET snapshot = '900000000000:900000000000:' WHERE name = 'restored';
SELECT idem.emit('single', '{"n": 40}');
\set VERBOSITY terse
SELECT * FROM idem.next_batch('restored');
SELECT idem.trim_outbox(1000);
\set VERBOSITY default
SELECT count(*) AS events_kept FROM idem.outbox;
-- The remedy (README, "Backups"): re-create the consumer.
SELECT idem.unsubscribe('restored');
SELECT idem.subscribe('restored', from_start => true);
SELECT id, payload FROM idem.next_batch('restored');
SELECT idem.unsubscribe('restored');

TRUNCATE idem.outbox RESTART IDENTITY;
