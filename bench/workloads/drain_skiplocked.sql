-- outbox / drain: baseline, the hand-written relay loop.
-- BEGIN; lock and read the 1000 oldest events (all rows travel to the
-- client); publish them (outside the database); DELETE them; COMMIT.
-- The client would delete with `WHERE id = ANY($ids)`; pgbench cannot pass
-- an array it read, so the script deletes the same rows by their id range
-- (first_id..last_id, computed in the same query).  With one consumer the
-- range holds exactly the locked rows, and a range delete is cheaper than
-- 1000 key probes, so this favours the baseline.  Run with -c 1 -t N.
\set last_id 0
BEGIN;
SELECT e.*, min(e.id) OVER () AS first_id, max(e.id) OVER () AS last_id
  FROM (SELECT id, topic, key, payload, headers, created_at
          FROM bench.raw_outbox
         ORDER BY id
         LIMIT 1000
           FOR UPDATE SKIP LOCKED) e \aset
\if :last_id > 0
DELETE FROM bench.raw_outbox WHERE id BETWEEN :first_id::bigint AND :last_id::bigint;
\endif
COMMIT;
