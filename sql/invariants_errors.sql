-- Invariants and hostile input (SPEC.md section 6): every bad argument, bad
-- check and misbehaving check gets a documented SQLSTATE, never a crash,
-- and leaves nothing half-installed.
\set VERBOSITY sqlstate
CREATE TABLE on_call (doctor text PRIMARY KEY, shift_id int, on_duty boolean NOT NULL);
INSERT INTO on_call VALUES ('alice', 1, true), ('bob', 1, true), ('carol', 2, true);

-- NULL arguments: 22004 (message may be NULL).
SELECT idem.enforce_invariant(NULL, 'SELECT true', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', NULL, '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT true', NULL);
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call": ["shift_id"]}', NULL, NULL);
SELECT idem.unenforce_invariant(NULL);

-- Names are 1..255 bytes of any text: empty 22023, too long 22001.
SELECT idem.enforce_invariant('', 'SELECT true', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant(repeat('x', 256), 'SELECT true', '{"public.on_call": ["shift_id"]}');
SELECT idem.unenforce_invariant(repeat('é', 128));
\set VERBOSITY default
-- Odd names are just names.
SELECT idem.enforce_invariant(E'it''s "quoted"; DROP TABLE on_call; --\n\t', 'SELECT true',
                              '{"public.on_call": ["shift_id"]}', valid => false);
SELECT idem.enforce_invariant(repeat('é', 127), 'SELECT $1 > 0', '{"public.on_call": ["shift_id"]}',
                              valid => false);
SELECT name, length(name), octet_length(name) FROM idem.invariants ORDER BY name;
UPDATE on_call SET shift_id = 0 WHERE doctor = 'carol';
SELECT idem.unenforce_invariant(E'it''s "quoted"; DROP TABLE on_call; --\n\t');
SELECT idem.unenforce_invariant(repeat('é', 127));
\set VERBOSITY sqlstate

-- watch: a JSON object of table -> column names (22023), naming existing
-- tables (42P01, 42602 for a malformed name) that the caller owns, with
-- their schema, once each; columns that exist (42703), user columns (42P10),
-- as many in every table (22023), of one type per $n (42804) with a hash
-- function (42883); at most 32 (54011).
SELECT idem.enforce_invariant('x', 'SELECT true', '[1]');
SELECT idem.enforce_invariant('x', 'SELECT true', '"public.on_call"');
SELECT idem.enforce_invariant('x', 'SELECT true', '{}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call": [1]}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call": [["shift_id"]]}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call": {"shift_id": 1}}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call": null}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.nope": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.\"on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call": ["shift_id"], "public.\"on_call\"": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call": ["nope"]}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call": ["\"shift_id\""]}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call": ["xmin"]}');
CREATE TABLE other (k text, p point);
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call": ["shift_id"], "public.other": []}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call": ["shift_id"], "public.other": ["k"]}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.other": ["p"]}');
SELECT idem.enforce_invariant('x', 'SELECT true',
  jsonb_build_object('public.on_call', (SELECT jsonb_agg('shift_id'::text) FROM generate_series(1, 33))));
-- Only tables (42809): not views, temporary tables or system catalogs.
CREATE VIEW on_call_view AS SELECT * FROM on_call;
CREATE TEMP TABLE scratch (k int);
SELECT idem.enforce_invariant('x', 'SELECT true', '{"public.on_call_view": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"pg_temp.scratch": ["k"]}');
SELECT idem.enforce_invariant('x', 'SELECT true', '{"pg_catalog.pg_class": ["relname"]}');

-- check: one SELECT (22023; a syntax error is 42601) returning one boolean
-- column (42804), reading only watched tables (22023), neither writing
-- nor locking rows (22023).  Errors point into the check's text.
SELECT idem.enforce_invariant('x', 'SELECT 1', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT true, false', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', '', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT true; SELECT true', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELEKT true', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT $2', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'DELETE FROM public.on_call', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'WITH d AS (DELETE FROM public.on_call RETURNING 1) SELECT true', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT true INTO public.stolen', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT true FROM public.on_call WHERE shift_id = $1 FOR UPDATE', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT EXISTS (SELECT FROM public.on_call FOR SHARE)', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'VACUUM', '{"public.on_call": ["shift_id"]}');
-- Reads of unwatched tables, directly, through a view, in a subquery, or of
-- a catalog; an unqualified name does not resolve (search_path is
-- pg_catalog, pg_temp).
SELECT idem.enforce_invariant('x', 'SELECT count(*) > 0 FROM public.other', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT $1 IN (SELECT 1 FROM public.other)', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT count(*) > 0 FROM public.on_call_view', '{"public.other": ["k"]}');
SELECT idem.enforce_invariant('x', 'SELECT count(*) > 0 FROM pg_class', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('x', 'SELECT count(*) > 0 FROM on_call', '{"public.on_call": ["shift_id"]}');
-- A view over watched tables is fine: the rewriter shows what it reads.
SELECT idem.enforce_invariant('through_view',
  'SELECT count(*) >= 1 FROM public.on_call_view WHERE shift_id = $1 AND on_duty',
  '{"public.on_call": ["shift_id"]}');
SELECT idem.unenforce_invariant('through_view');
-- Nothing half-installed after all those refusals.
SELECT count(*) AS invariants, (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'idem_invariant%') AS triggers
  FROM idem.invariant;

-- Checks that misbehave at commit.  A check's own error aborts the commit
-- with that error (CONTEXT names the invariant).
\set VERBOSITY default
SELECT idem.enforce_invariant('divides',
  $$SELECT 1 / (count(*) - 2) >= 0 FROM public.on_call WHERE shift_id = $1$$,
  '{"public.on_call": ["shift_id"]}', valid => false);
UPDATE on_call SET on_duty = true WHERE doctor = 'alice';
SELECT idem.unenforce_invariant('divides');
-- NULL is a violation.
SELECT idem.enforce_invariant('null_for_3',
  $$SELECT CASE WHEN $1 = 3 THEN NULL ELSE true END$$, '{"public.on_call": ["shift_id"]}');
INSERT INTO on_call VALUES ('dave', 3, true);
SELECT idem.unenforce_invariant('null_for_3');
-- More than one row: 21000; no row: a violation.
SELECT idem.enforce_invariant('one_row_per_doctor',
  $$SELECT on_duty FROM public.on_call WHERE shift_id = $1$$, '{"public.on_call": ["shift_id"]}',
  valid => false);
UPDATE on_call SET on_duty = true WHERE doctor = 'alice';
DELETE FROM on_call WHERE doctor = 'carol';
SELECT idem.unenforce_invariant('one_row_per_doctor');
-- A check that writes through a function fails: it runs read-only (25006).
CREATE TABLE audit (shift int);
CREATE FUNCTION public.audited(shift int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO public.audit VALUES (shift);
  RETURN true;
END $$;
SELECT idem.enforce_invariant('writes', 'SELECT public.audited($1)', '{"public.on_call": ["shift_id"]}');
SELECT idem.enforce_invariant('writes', 'SELECT public.audited($1)', '{"public.on_call": ["shift_id"]}',
                              valid => false);
UPDATE on_call SET on_duty = true WHERE doctor = 'alice';
SELECT count(*) AS audited FROM audit;
SELECT idem.unenforce_invariant('writes');
-- A check cannot re-enter the invariant machinery (55000), nor change role.
CREATE FUNCTION public.recurse(shift int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  PERFORM idem.check_invariants();
  RETURN true;
END $$;
SELECT idem.enforce_invariant('recursive', 'SELECT public.recurse($1)', '{"public.on_call": ["shift_id"]}');
CREATE FUNCTION public.redeclare(shift int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  PERFORM idem.unenforce_invariant('anything');
  RETURN true;
END $$;
SELECT idem.enforce_invariant('recursive', 'SELECT public.redeclare($1)', '{"public.on_call": ["shift_id"]}');
CREATE FUNCTION public.become(shift int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  SET ROLE NONE;
  RETURN true;
END $$;
SELECT idem.enforce_invariant('recursive', 'SELECT public.become($1)', '{"public.on_call": ["shift_id"]}');

-- Huge group values are cut in the DETAIL.
CREATE TABLE notes (k text, n int);
SELECT idem.enforce_invariant('positive_notes', 'SELECT sum(n) >= 0 FROM public.notes WHERE k = $1',
                              '{"public.notes": ["k"]}');
INSERT INTO notes VALUES (repeat('x', 1000000) || 'tail', -1);
INSERT INTO notes VALUES (repeat('é', 200), -1);
SELECT idem.unenforce_invariant('positive_notes');

-- Nothing left behind.
SELECT count(*) AS invariants, (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'idem_invariant%') AS triggers
  FROM idem.invariant;
DROP TABLE on_call, other, audit, notes CASCADE;
DROP FUNCTION public.audited(int), public.recurse(int), public.redeclare(int), public.become(int);
