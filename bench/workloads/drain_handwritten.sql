-- outbox / drain: the SKIP LOCKED + DELETE relay of the hand-written outbox
-- (bench.handwritten_outbox), as run beside concurrent emitters in the
-- held-snapshot section.  One statement deletes up to 1000 of the oldest
-- events and returns them (every row travels to the client); the relay
-- publishes them and only then commits, so a crash before the commit
-- leaves them in the table (at least once).  Safe with concurrent
-- emitters: it deletes exactly the rows it returns.  last_id: the id of
-- the last row returned, 0 when none (run.sh's idle sleep reads it).
\set last_id 0
BEGIN;
DELETE FROM bench.handwritten_outbox
 WHERE id IN (SELECT id FROM bench.handwritten_outbox
               ORDER BY id
               LIMIT 1000
                 FOR UPDATE SKIP LOCKED)
RETURNING id AS last_id, topic, key, payload, created_at \aset
COMMIT;
