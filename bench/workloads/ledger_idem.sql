-- invariants / one ledger entry (-10..10) INSERTed for a random account of 100,000 into bench.ledger_idem: idem.enforce_invariant (pg_idem; correct at every isolation level).
-- The statement is identical on the three ledger tables (bench/sql/setup.sql);
-- only what checks "an account's balance (sum of amount) stays >= 0" differs.
-- Accounts are many, so two transactions rarely touch the same one.
\set account random(1, 100000)
\set amount random(-10, 10)
INSERT INTO bench.ledger_idem (account, amount) VALUES (:account::int, :amount::int);
