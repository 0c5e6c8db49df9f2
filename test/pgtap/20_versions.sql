-- Version-checked updates: the contract (SPEC.md section 2).
BEGIN;
SELECT plan(54);

-- Signatures.
SELECT has_function('idem', 'version_guard', ARRAY[]::name[], 'idem.version_guard() exists');
SELECT function_returns('idem', 'version_guard', ARRAY[]::name[], 'trigger',
                        'idem.version_guard() returns trigger');
SELECT function_lang_is('idem', 'version_guard', ARRAY[]::name[], 'c',
                        'idem.version_guard() is written in C');
SELECT function_returns('idem', 'enforce_version', ARRAY['regclass', 'name', 'text'], 'void',
                        'idem.enforce_version(regclass, name, text) returns void');
SELECT function_lang_is('idem', 'enforce_version', ARRAY['regclass', 'name', 'text'], 'c',
                        'idem.enforce_version is written in C');
SELECT function_returns('idem', 'unenforce_version', ARRAY['regclass'], 'void',
                        'idem.unenforce_version(regclass) returns void');
SELECT function_lang_is('idem', 'unenforce_version', ARRAY['regclass'], 'c',
                        'idem.unenforce_version is written in C');
SELECT is(pg_get_function_arguments('idem.enforce_version(regclass, name, text)'::regprocedure),
          'tbl regclass, version_column name DEFAULT ''version''::name, mode text DEFAULT ''strict''::text',
          'enforce_version argument names and defaults');
SELECT is(pg_get_function_arguments('idem.unenforce_version(regclass)'::regprocedure),
          'tbl regclass', 'unenforce_version argument name');

-- Attributes: volatile, not strict (NULL arguments raise 22004), not
-- security definer (the caller's privileges apply), search_path pinned
-- where SQL runs, parallel unsafe where DDL runs.
SELECT volatility_is('idem', 'enforce_version', ARRAY['regclass', 'name', 'text'], 'volatile',
                     'enforce_version is VOLATILE');
SELECT volatility_is('idem', 'unenforce_version', ARRAY['regclass'], 'volatile',
                     'unenforce_version is VOLATILE');
SELECT volatility_is('idem', 'version_guard', ARRAY[]::name[], 'volatile',
                     'version_guard is VOLATILE');
SELECT isnt_strict('idem', 'enforce_version', ARRAY['regclass', 'name', 'text'],
                   'enforce_version is not STRICT');
SELECT isnt_strict('idem', 'unenforce_version', ARRAY['regclass'],
                   'unenforce_version is not STRICT');
SELECT isnt_definer('idem', 'enforce_version', ARRAY['regclass', 'name', 'text'],
                    'enforce_version runs with the caller''s privileges');
SELECT isnt_definer('idem', 'unenforce_version', ARRAY['regclass'],
                    'unenforce_version runs with the caller''s privileges');
SELECT isnt_definer('idem', 'version_guard', ARRAY[]::name[],
                    'version_guard is not SECURITY DEFINER');
SELECT is((SELECT proconfig FROM pg_proc WHERE oid = 'idem.enforce_version(regclass, name, text)'::regprocedure),
          ARRAY['search_path=pg_catalog, pg_temp'], 'enforce_version pins search_path');
SELECT is((SELECT proconfig FROM pg_proc WHERE oid = 'idem.unenforce_version(regclass)'::regprocedure),
          ARRAY['search_path=pg_catalog, pg_temp'], 'unenforce_version pins search_path');
SELECT is((SELECT proparallel FROM pg_proc WHERE oid = 'idem.enforce_version(regclass, name, text)'::regprocedure),
          'u', 'enforce_version is PARALLEL UNSAFE');
SELECT is((SELECT proparallel FROM pg_proc WHERE oid = 'idem.unenforce_version(regclass)'::regprocedure),
          'u', 'unenforce_version is PARALLEL UNSAFE');

-- Privileges: nothing is executable by PUBLIC (a NULL proacl would mean
-- the default, EXECUTE for PUBLIC).
SELECT ok(p.proacl IS NOT NULL AND NOT EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0),
          format('PUBLIC cannot execute %s', p.oid::regprocedure))
  FROM pg_proc p
  WHERE p.oid IN ('idem.version_guard()'::regprocedure,
                  'idem.enforce_version(regclass, name, text)'::regprocedure,
                  'idem.unenforce_version(regclass)'::regprocedure)
  ORDER BY p.oid::regprocedure::text;

-- Every function is documented.
SELECT ok(obj_description(p.oid, 'pg_proc') IS NOT NULL,
          format('%s has a comment', p.oid::regprocedure))
  FROM pg_proc p
  WHERE p.oid IN ('idem.version_guard()'::regprocedure,
                  'idem.enforce_version(regclass, name, text)'::regprocedure,
                  'idem.unenforce_version(regclass)'::regprocedure)
  ORDER BY p.oid::regprocedure::text;

-- enforce_version installs the trigger.
CREATE TABLE tap_doc (id int PRIMARY KEY, body text, version bigint);
SELECT lives_ok($$SELECT idem.enforce_version('tap_doc')$$, 'enforce_version succeeds');
SELECT has_trigger('public', 'tap_doc', 'idem_version_guard', 'the guard trigger is named idem_version_guard');
SELECT trigger_is('public', 'tap_doc', 'idem_version_guard', 'idem', 'version_guard',
                  'the guard calls idem.version_guard()');
SELECT ok((SELECT tgtype::int & 1 = 1 FROM pg_trigger WHERE tgrelid = 'tap_doc'::regclass), 'the guard is FOR EACH ROW');
SELECT ok((SELECT tgtype::int & 2 = 2 FROM pg_trigger WHERE tgrelid = 'tap_doc'::regclass), 'the guard fires BEFORE');
SELECT ok((SELECT tgtype::int & 4 = 4 FROM pg_trigger WHERE tgrelid = 'tap_doc'::regclass), 'the guard fires on INSERT');
SELECT ok((SELECT tgtype::int & 16 = 16 FROM pg_trigger WHERE tgrelid = 'tap_doc'::regclass), 'the guard fires on UPDATE');
SELECT ok((SELECT tgtype::int & (8 | 32 | 64) = 0 FROM pg_trigger WHERE tgrelid = 'tap_doc'::regclass),
          'the guard fires neither on DELETE nor TRUNCATE, and is not INSTEAD OF');
SELECT is((SELECT tgenabled FROM pg_trigger WHERE tgrelid = 'tap_doc'::regclass), 'O', 'the guard is enabled');
SELECT is((SELECT tgnargs::int FROM pg_trigger WHERE tgrelid = 'tap_doc'::regclass), 2, 'the guard has two arguments');
SELECT is((SELECT tgargs FROM pg_trigger WHERE tgrelid = 'tap_doc'::regclass),
          convert_to('version', 'UTF8') || '\x00'::bytea || convert_to('strict', 'UTF8') || '\x00'::bytea,
          'the arguments are the column and the mode: version, strict');
SELECT ok((SELECT tgqual IS NULL AND tgattr = ''::int2vector AND NOT tgisinternal
           FROM pg_trigger WHERE tgrelid = 'tap_doc'::regclass),
          'the guard has no WHEN clause, no column list and is not internal');

-- The rules, briefly (the regression suite has them all).
SELECT lives_ok($$INSERT INTO tap_doc VALUES (1, 'a', NULL)$$, 'insert');
SELECT is((SELECT version FROM tap_doc WHERE id = 1), 1::bigint, 'a NULL version is inserted as 1');
SELECT lives_ok($$UPDATE tap_doc SET body = 'b', version = 1 WHERE id = 1$$, 'update with the read version');
SELECT is((SELECT version FROM tap_doc WHERE id = 1), 2::bigint, 'the row is written with the next version');
SELECT throws_ok($$UPDATE tap_doc SET body = 'c', version = 1 WHERE id = 1$$, 'ID010',
                 'version conflict on table "tap_doc"', 'a stale version raises ID010');
SELECT throws_ok($$UPDATE tap_doc SET body = 'c' WHERE id = 1$$, 'ID011',
                 'version required to update table "tap_doc"', 'a blind write raises ID011 in strict mode');

-- Errors of enforce_version.
SELECT throws_ok($$SELECT idem.enforce_version('tap_doc', 'nope')$$, '42703', NULL, 'missing column: 42703');
SELECT throws_ok($$SELECT idem.enforce_version('tap_doc', 'body')$$, '42804', NULL, 'text column: 42804');
SELECT throws_ok($$SELECT idem.enforce_version('tap_doc', 'xmin')$$, '42P10', NULL, 'system column: 42P10');
SELECT throws_ok($$SELECT idem.enforce_version('tap_doc', 'version', 'optimistic')$$, '22023', NULL, 'unknown mode: 22023');
SELECT throws_ok($$SELECT idem.enforce_version(NULL)$$, '22004', NULL, 'NULL table: 22004');
CREATE VIEW tap_view AS SELECT * FROM tap_doc;
SELECT throws_ok($$SELECT idem.enforce_version('tap_view')$$, '42809', NULL, 'a view: 42809');

-- unenforce_version removes it.
SELECT lives_ok($$SELECT idem.unenforce_version('tap_doc')$$, 'unenforce_version succeeds');
SELECT hasnt_trigger('public', 'tap_doc', 'idem_version_guard', 'the guard is gone after unenforce_version');
SELECT lives_ok($$UPDATE tap_doc SET body = 'd' WHERE id = 1$$, 'an unguarded table takes blind writes again');

SELECT * FROM finish();
ROLLBACK;
