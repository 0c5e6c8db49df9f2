-- outbox / drain: the fastest hand-written relay, for reference.
-- One statement deletes the 1000 oldest events and returns them.  It is
-- at-most-once (a relay that dies after COMMIT and before publishing loses
-- the batch), so it is not equivalent; it shows the floor of SQL cost.
-- `id = ANY (ARRAY(subquery))` rather than `id IN (subquery)`: the IN form
-- is planned as a hash semi join over a sequential scan of the whole table.
DELETE FROM bench.raw_outbox
 WHERE id = ANY (ARRAY(SELECT id FROM bench.raw_outbox ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED))
RETURNING id, topic, key, payload, headers, created_at;
