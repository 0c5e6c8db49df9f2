-- Invariants: the contract (SPEC.md section 6).
BEGIN;
SELECT plan(34);

-- Signatures.
SELECT is(pg_get_function_arguments('idem.enforce_invariant(text, text, jsonb, text, boolean)'::regprocedure),
          'name text, "check" text, watch jsonb, message text DEFAULT NULL::text, valid boolean DEFAULT true',
          'enforce_invariant(name, "check", watch, message DEFAULT NULL, valid DEFAULT true)');
SELECT function_returns('idem', 'enforce_invariant', ARRAY['text', 'text', 'jsonb', 'text', 'boolean'], 'void',
                        'enforce_invariant returns void');
SELECT is(pg_get_function_arguments('idem.unenforce_invariant(text)'::regprocedure), 'name text',
          'unenforce_invariant(name)');
SELECT function_returns('idem', 'unenforce_invariant', ARRAY['text'], 'boolean',
                        'unenforce_invariant returns boolean');
SELECT function_returns('idem', 'check_invariants', ARRAY[]::name[], 'void',
                        'check_invariants() returns void');
SELECT function_returns('idem', 'invariant_touch', ARRAY[]::name[], 'trigger',
                        'invariant_touch() is a trigger function');
SELECT function_lang_is('idem', 'enforce_invariant', ARRAY['text', 'text', 'jsonb', 'text', 'boolean'], 'c',
                        'enforce_invariant is written in C');
SELECT function_lang_is('idem', 'invariant_touch', ARRAY[]::name[], 'c',
                        'the trigger is written in C');

-- Attributes: volatile, not strict (NULLs raise 22004), run with the
-- caller's rights (the event triggers excepted), search_path pinned.
SELECT volatility_is('idem', 'enforce_invariant', ARRAY['text', 'text', 'jsonb', 'text', 'boolean'], 'volatile',
                     'enforce_invariant is VOLATILE');
SELECT volatility_is('idem', 'check_invariants', ARRAY[]::name[], 'volatile',
                     'check_invariants is VOLATILE');
SELECT isnt_strict('idem', 'enforce_invariant', ARRAY['text', 'text', 'jsonb', 'text', 'boolean'],
                   'enforce_invariant is not STRICT');
SELECT isnt_strict('idem', 'unenforce_invariant', ARRAY['text'], 'unenforce_invariant is not STRICT');
SELECT isnt_definer('idem', 'enforce_invariant', ARRAY['text', 'text', 'jsonb', 'text', 'boolean'],
                    'enforce_invariant runs with the caller''s rights (only table owners declare)');
SELECT isnt_definer('idem', 'unenforce_invariant', ARRAY['text'],
                    'unenforce_invariant runs with the caller''s rights');
SELECT is_definer('idem', 'invariant_sql_drop', ARRAY[]::name[],
                  'the sql_drop event trigger is SECURITY DEFINER (any role''s DROP fires it)');
SELECT is_definer('idem', 'invariant_ddl_end', ARRAY[]::name[],
                  'the ddl_command_end event trigger is SECURITY DEFINER');
SELECT is((SELECT proconfig FROM pg_proc WHERE oid = 'idem.enforce_invariant(text, text, jsonb, text, boolean)'::regprocedure),
          ARRAY['search_path=pg_catalog, pg_temp'], 'enforce_invariant pins search_path');
SELECT is((SELECT proconfig FROM pg_proc WHERE oid = 'idem.check_invariants()'::regprocedure),
          ARRAY['search_path=pg_catalog, pg_temp'], 'check_invariants pins search_path');

-- Nothing is executable by PUBLIC; everything is documented.
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
     WHERE p.pronamespace = 'idem'::regnamespace AND a.grantee = 0
       AND (p.proname LIKE '%invariant%') $$,
    'PUBLIC cannot execute any invariant function');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'idem'::regnamespace AND p.proname LIKE '%invariant%'
       AND obj_description(p.oid, 'pg_proc') IS NULL $$,
    'every invariant function has a comment');

-- The catalog, kept by pg_dump, and the view.
SELECT has_table('idem', 'invariant', 'table idem.invariant exists');
SELECT has_table('idem', 'invariant_watch', 'table idem.invariant_watch exists');
SELECT ok((SELECT 'idem.invariant'::regclass = ANY (extconfig) AND 'idem.invariant_watch'::regclass = ANY (extconfig)
             FROM pg_extension WHERE extname = 'pg_idem'),
          'pg_dump keeps the invariants (pg_extension_config_dump)');
SELECT col_type_is('idem', 'invariant_watch', 'tbl', 'regclass',
                   'watched tables are kept as regclass, so a restore finds them by name');
SELECT col_type_is('idem', 'invariant', 'owner', 'regrole', 'the declaring role is kept as regrole');
SELECT has_view('idem', 'invariants', 'view idem.invariants exists');
SELECT columns_are('idem', 'invariants', ARRAY['name', 'check', 'watch', 'owner', 'valid', 'message'],
                   'idem.invariants: name, check, watched tables and columns, owner, valid, message');

-- The event triggers.
SELECT is((SELECT array_agg(evtname::text || ' ' || evtevent::text ORDER BY evtname) FROM pg_event_trigger
            WHERE evtfoid::regproc::text LIKE 'idem.%'),
          ARRAY['idem_invariant_ddl_end ddl_command_end', 'idem_invariant_drop_start ddl_command_start',
                'idem_invariant_sql_drop sql_drop'],
          'three event triggers keep invariants whole');
SELECT is((SELECT evttags FROM pg_event_trigger WHERE evtname = 'idem_invariant_drop_start'),
          ARRAY['DROP TABLE'], 'the ddl_command_start trigger looks at DROP TABLE only');
SELECT ok((SELECT evttags @> ARRAY['ALTER TABLE', 'CREATE TABLE', 'ALTER SCHEMA'] FROM pg_event_trigger
            WHERE evtname = 'idem_invariant_ddl_end'),
          'the ddl_command_end trigger watches ALTER TABLE, CREATE TABLE and ALTER SCHEMA');

-- Behaviour in one transaction (the regression files and isolation specs
-- test the rest).
CREATE TABLE tap_on_call (doctor text PRIMARY KEY, shift_id int NOT NULL, on_duty boolean NOT NULL);
INSERT INTO tap_on_call VALUES ('alice', 1, true);
SELECT lives_ok($$SELECT idem.enforce_invariant('tap_on_call',
                    'SELECT count(*) >= 1 FROM public.tap_on_call WHERE shift_id = $1 AND on_duty',
                    '{"public.tap_on_call": ["shift_id"]}')$$,
                'enforce_invariant accepts a valid declaration');
SELECT throws_ok($$UPDATE tap_on_call SET on_duty = false; SELECT idem.check_invariants()$$,
                 'ID030', 'invariant "tap_on_call" is violated',
                 'a violated invariant raises ID030');
SELECT throws_ok($$SELECT idem.enforce_invariant('tap_bad', 'SELECT 1', '{"public.tap_on_call": ["shift_id"]}')$$,
                 '42804', NULL, 'a check that does not return boolean raises 42804');
SELECT throws_ok('TRUNCATE tap_on_call', '0A000', NULL, 'TRUNCATE of a watched table raises 0A000');

SELECT * FROM finish();
ROLLBACK;
