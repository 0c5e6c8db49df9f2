-- outbox / drain: the fastest hand-written relay, for reference.
-- One statement deletes the 1000 oldest events and returns them.  It is
-- at-most-once (a relay that dies after COMMIT and before publishing loses
-- the batch), so it is not equivalent; it shows the floor of SQL cost.
DELETE FROM bench.raw_outbox
 WHERE id IN (SELECT id FROM bench.raw_outbox ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED)
RETURNING id, topic, key, payload, headers, created_at;
