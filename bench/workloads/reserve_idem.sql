-- keys / reserve of a new key: pg_idem.
-- One statement in its own transaction: claim a key nobody used before.
-- Compare with reserve_raw.sql (the INSERT it replaces).
\set kn random(1000000001, 9000000000000000000)
\set amount :kn % 100000 + 1
SELECT outcome, token
  FROM idem.reserve('k' || :kn::text, jsonb_build_object('amount', :amount::int));
