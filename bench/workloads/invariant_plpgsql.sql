-- invariants / one lot of one item changes by -1..1 on bench.stock_plpgsql:
-- a PL/pgSQL deferred constraint trigger checking the item's sum at commit (baseline; wrong under concurrency).
-- The statement is identical on the four stock tables (bench/sql/setup.sql);
-- only what checks "an item's total stock stays between 0 and 10^9" differs.
\set item random(1, 10000)
\set lot random(1, 4)
\set delta random(-1, 1)
UPDATE bench.stock_plpgsql SET qty = qty + :delta::int WHERE item = :item::int AND lot = :lot::int;
