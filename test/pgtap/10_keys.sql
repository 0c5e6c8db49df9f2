-- Idempotency keys: the contract of SPEC.md section 1 as catalog facts --
-- types, signatures with their defaults, volatility, strictness, security,
-- search_path pinning and privileges of every object.
BEGIN;
SELECT plan(71);

------------------------------------------------------------------------------
-- Types
------------------------------------------------------------------------------
SELECT has_enum('idem', 'outcome', 'idem.outcome exists');
SELECT enum_has_labels('idem', 'outcome', ARRAY['acquired', 'replay', 'in_progress'],
                       'idem.outcome has the labels of SPEC.md, in order');
SELECT has_enum('idem', 'key_state', 'idem.key_state exists');
SELECT enum_has_labels('idem', 'key_state', ARRAY['in_progress', 'completed', 'released'],
                       'idem.key_state has in_progress, completed, released');

SELECT has_composite('idem', 'reservation', 'idem.reservation exists');
SELECT results_eq(
  $$ SELECT attname::text COLLATE "default", format_type(atttypid, atttypmod)
     FROM pg_attribute WHERE attrelid = 'idem.reservation'::regclass AND attnum > 0 AND NOT attisdropped
     ORDER BY attnum $$,
  $$ VALUES ('outcome', 'idem.outcome'), ('token', 'bigint'), ('response', 'jsonb'),
            ('status', 'integer'), ('recovery_point', 'text'), ('checkpoint', 'jsonb'),
            ('locked_until', 'timestamp with time zone'), ('expires_at', 'timestamp with time zone') $$,
  'idem.reservation has the attributes of SPEC.md, in order, with their types');

------------------------------------------------------------------------------
-- Table, sequence, view
------------------------------------------------------------------------------
SELECT has_table('idem', 'keys', 'idem.keys exists');
SELECT col_is_pk('idem', 'keys', ARRAY['scope', 'key'], 'idem.keys is keyed by (scope, key)');
SELECT results_eq(
  $$ SELECT attname::text COLLATE "default", format_type(atttypid, atttypmod), attnotnull
     FROM pg_attribute WHERE attrelid = 'idem.keys'::regclass AND attnum > 0 AND NOT attisdropped
     ORDER BY attnum $$,
  $$ VALUES ('scope', 'text', true), ('key', 'text', true), ('state', 'idem.key_state', true),
            ('token', 'bigint', true), ('fingerprint', 'bytea', false),
            ('locked_until', 'timestamp with time zone', false), ('ttl', 'interval', true),
            ('response', 'jsonb', false), ('status', 'integer', false),
            ('recovery_point', 'text', false), ('checkpoint', 'jsonb', false),
            ('created_at', 'timestamp with time zone', true),
            ('updated_at', 'timestamp with time zone', true),
            ('expires_at', 'timestamp with time zone', true), ('lease', 'interval', false),
            ('first_token', 'bigint', false) $$,
  'idem.keys has the columns the C code writes');
SELECT results_eq(
  $$ SELECT attname::text COLLATE "default", collname::text COLLATE "default" FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
     WHERE attrelid = 'idem.keys'::regclass AND attname IN ('scope', 'key') ORDER BY attnum $$,
  $$ VALUES ('scope', 'C'), ('key', 'C') $$,
  'scope and key compare as bytes (COLLATE "C")');
SELECT has_index('idem', 'keys', 'keys_expires_at_idx', 'expires_at',
                 'idem.keys is indexed on expires_at, for purge');
SELECT has_sequence('idem', 'key_token_seq', 'fencing tokens come from idem.key_token_seq');
SELECT ok((SELECT extconfig @> ARRAY['idem.keys'::regclass::oid, 'idem.key_token_seq'::regclass::oid]
           FROM pg_extension WHERE extname = 'pg_idem'),
          'pg_dump keeps the keys and the token sequence (pg_extension_config_dump)');
SELECT has_view('idem', 'key_stats', 'idem.key_stats exists');
SELECT results_eq(
  $$ SELECT attname::text COLLATE "default", format_type(atttypid, atttypmod)
     FROM pg_attribute WHERE attrelid = 'idem.key_stats'::regclass AND attnum > 0 ORDER BY attnum $$,
  $$ VALUES ('scope', 'text'), ('state', 'idem.key_state'), ('keys', 'bigint'),
            ('expired', 'bigint'), ('oldest_in_progress_age', 'interval') $$,
  'idem.key_stats: per scope and state, counts and the oldest in-progress age');

------------------------------------------------------------------------------
-- Functions: signatures exactly as SPEC.md writes them (names and defaults)
------------------------------------------------------------------------------
SELECT results_eq(
  $$ SELECT p.proname::text COLLATE "default", pg_get_function_arguments(p.oid), pg_get_function_result(p.oid)
     FROM pg_proc p WHERE p.pronamespace = 'idem'::regnamespace
       AND p.proname IN ('reserve', 'complete', 'release', 'checkpoint', 'forget', 'purge', 'fingerprint')
     ORDER BY 1 $$,
  $$ VALUES
     ('checkpoint', 'key text, token bigint, recovery_point text, state jsonb DEFAULT NULL::jsonb, scope text DEFAULT ''''::text, lease interval DEFAULT NULL::interval', 'void'),
     ('complete', 'key text, token bigint, response jsonb, status integer DEFAULT NULL::integer, scope text DEFAULT ''''::text', 'void'),
     ('fingerprint', 'request jsonb', 'bytea'),
     ('forget', 'key text, scope text DEFAULT ''''::text', 'boolean'),
     ('purge', 'max_rows integer DEFAULT 10000', 'bigint'),
     ('release', 'key text, token bigint, scope text DEFAULT ''''::text', 'void'),
     ('reserve', 'key text, request jsonb DEFAULT NULL::jsonb, scope text DEFAULT ''''::text, lease interval DEFAULT NULL::interval, ttl interval DEFAULT NULL::interval', 'idem.reservation') $$,
  'every key function has the signature, argument names and defaults of SPEC.md');

SELECT function_returns('idem', 'reserve', ARRAY['text', 'jsonb', 'text', 'interval', 'interval'], 'idem.reservation', 'reserve returns idem.reservation');
SELECT function_returns('idem', 'complete', ARRAY['text', 'bigint', 'jsonb', 'integer', 'text'], 'void', 'complete returns void');
SELECT function_returns('idem', 'release', ARRAY['text', 'bigint', 'text'], 'void', 'release returns void');
SELECT function_returns('idem', 'checkpoint', ARRAY['text', 'bigint', 'text', 'jsonb', 'text', 'interval'], 'void', 'checkpoint returns void');
SELECT function_returns('idem', 'forget', ARRAY['text', 'text'], 'boolean', 'forget returns boolean');
SELECT function_returns('idem', 'purge', ARRAY['integer'], 'bigint', 'purge returns bigint');

-- Volatility, strictness, parallel safety, language.  NULL key, scope and
-- token raise 22004, so none of these is STRICT.
SELECT volatility_is('idem', 'reserve', ARRAY['text', 'jsonb', 'text', 'interval', 'interval'], 'volatile', 'reserve is VOLATILE');
SELECT volatility_is('idem', 'complete', ARRAY['text', 'bigint', 'jsonb', 'integer', 'text'], 'volatile', 'complete is VOLATILE');
SELECT volatility_is('idem', 'release', ARRAY['text', 'bigint', 'text'], 'volatile', 'release is VOLATILE');
SELECT volatility_is('idem', 'checkpoint', ARRAY['text', 'bigint', 'text', 'jsonb', 'text', 'interval'], 'volatile', 'checkpoint is VOLATILE');
SELECT volatility_is('idem', 'forget', ARRAY['text', 'text'], 'volatile', 'forget is VOLATILE');
SELECT volatility_is('idem', 'purge', ARRAY['integer'], 'volatile', 'purge is VOLATILE');
SELECT isnt_strict('idem', 'reserve', ARRAY['text', 'jsonb', 'text', 'interval', 'interval'], 'reserve is not STRICT');
SELECT isnt_strict('idem', 'complete', ARRAY['text', 'bigint', 'jsonb', 'integer', 'text'], 'complete is not STRICT');
SELECT isnt_strict('idem', 'release', ARRAY['text', 'bigint', 'text'], 'release is not STRICT');
SELECT isnt_strict('idem', 'checkpoint', ARRAY['text', 'bigint', 'text', 'jsonb', 'text', 'interval'], 'checkpoint is not STRICT');
SELECT isnt_strict('idem', 'forget', ARRAY['text', 'text'], 'forget is not STRICT');
SELECT isnt_strict('idem', 'purge', ARRAY['integer'], 'purge is not STRICT');
SELECT results_eq(
  $$ SELECT p.proname::text COLLATE "default", p.proparallel::text, l.lanname::text COLLATE "default"
     FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
     WHERE p.pronamespace = 'idem'::regnamespace
       AND p.proname IN ('reserve', 'complete', 'release', 'checkpoint', 'forget', 'purge')
     ORDER BY 1 $$,
  $$ VALUES ('checkpoint', 'u', 'c'), ('complete', 'u', 'c'), ('forget', 'u', 'c'),
            ('purge', 'u', 'c'), ('release', 'u', 'c'), ('reserve', 'u', 'c') $$,
  'the key functions are written in C and PARALLEL UNSAFE (they write)');
SELECT is((SELECT count(*)::int FROM pg_proc
           WHERE pronamespace = 'idem'::regnamespace
             AND proname IN ('reserve', 'complete', 'release', 'checkpoint', 'forget', 'purge')
             AND obj_description(oid, 'pg_proc') IS NOT NULL),
          6, 'every key function has a COMMENT');

------------------------------------------------------------------------------
-- Security: application roles act only through the functions.  The four
-- hot-path functions write idem.keys from C by OID with no privilege check,
-- so they need no SECURITY DEFINER; purge runs SQL and is.  forget runs SQL
-- too, but it checks that its caller may use the scope (0.2): it runs as its
-- caller and switches to the table's owner for its DELETE.
------------------------------------------------------------------------------
SELECT isnt_definer('idem', 'reserve', ARRAY['text', 'jsonb', 'text', 'interval', 'interval'], 'reserve is not SECURITY DEFINER (runs no SQL)');
SELECT isnt_definer('idem', 'complete', ARRAY['text', 'bigint', 'jsonb', 'integer', 'text'], 'complete is not SECURITY DEFINER (runs no SQL)');
SELECT isnt_definer('idem', 'release', ARRAY['text', 'bigint', 'text'], 'release is not SECURITY DEFINER (runs no SQL)');
SELECT isnt_definer('idem', 'checkpoint', ARRAY['text', 'bigint', 'text', 'jsonb', 'text', 'interval'], 'checkpoint is not SECURITY DEFINER (runs no SQL)');
SELECT isnt_definer('idem', 'forget', ARRAY['text', 'text'], 'forget is not SECURITY DEFINER (it checks its caller''s scopes)');
SELECT is_definer('idem', 'purge', ARRAY['integer'], 'purge is SECURITY DEFINER');

-- forget and purge run SQL, so they pin search_path.  reserve, complete,
-- release and checkpoint run no SQL and look nothing up by name (the table,
-- its indexes, sequence and types are reached by OID), so a pin would guard
-- nothing and cost every call a GUC set and reset: they have no proconfig.
SELECT results_eq(
  $$ SELECT p.proname::text COLLATE "default", coalesce(array_to_string(p.proconfig, ';'), '(none)') COLLATE "default"
     FROM pg_proc p WHERE p.pronamespace = 'idem'::regnamespace
       AND p.proname IN ('reserve', 'complete', 'release', 'checkpoint', 'forget', 'purge')
     ORDER BY 1 $$,
  $$ VALUES ('checkpoint', '(none)'), ('complete', '(none)'),
            ('forget', 'search_path=pg_catalog, pg_temp'),
            ('purge', 'search_path=pg_catalog, pg_temp'),
            ('release', '(none)'), ('reserve', '(none)') $$,
  'functions that run SQL pin search_path = pg_catalog, pg_temp; the others look nothing up by name');

-- Nothing is granted to PUBLIC (idem.grant_usage() grants what a role needs).
SELECT ok(NOT has_function_privilege('public', 'idem.reserve(text, jsonb, text, interval, interval)', 'EXECUTE'), 'PUBLIC cannot execute reserve');
SELECT ok(NOT has_function_privilege('public', 'idem.complete(text, bigint, jsonb, integer, text)', 'EXECUTE'), 'PUBLIC cannot execute complete');
SELECT ok(NOT has_function_privilege('public', 'idem.release(text, bigint, text)', 'EXECUTE'), 'PUBLIC cannot execute release');
SELECT ok(NOT has_function_privilege('public', 'idem.checkpoint(text, bigint, text, jsonb, text, interval)', 'EXECUTE'), 'PUBLIC cannot execute checkpoint');
SELECT ok(NOT has_function_privilege('public', 'idem.forget(text, text)', 'EXECUTE'), 'PUBLIC cannot execute forget');
SELECT ok(NOT has_function_privilege('public', 'idem.purge(integer)', 'EXECUTE'), 'PUBLIC cannot execute purge');
SELECT ok(NOT has_table_privilege('public', 'idem.keys', 'SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER'),
          'PUBLIC has no privilege on idem.keys');
SELECT ok(NOT has_table_privilege('public', 'idem.key_stats', 'SELECT'), 'PUBLIC cannot read idem.key_stats');
SELECT ok(NOT has_sequence_privilege('public', 'idem.key_token_seq', 'USAGE,SELECT,UPDATE'),
          'PUBLIC has no privilege on idem.key_token_seq');
SELECT is((SELECT count(*)::int FROM pg_proc p, aclexplode(p.proacl) a
           WHERE p.pronamespace = 'idem'::regnamespace
             AND p.proname IN ('reserve', 'complete', 'release', 'checkpoint', 'forget', 'purge')
             AND a.grantee = 0),
          0, 'no key function has an ACL entry for PUBLIC');
SELECT is((SELECT count(*)::int FROM pg_proc p
           WHERE p.pronamespace = 'idem'::regnamespace
             AND p.proname IN ('reserve', 'complete', 'release', 'checkpoint', 'forget', 'purge')
             AND p.proacl IS NULL),
          0, 'no key function has the default ACL (which grants EXECUTE to PUBLIC)');

-- A fresh role can do nothing with keys until it is granted something.
CREATE ROLE idem_pgtap_nobody;
SET LOCAL ROLE idem_pgtap_nobody;
SELECT throws_ok($$SELECT idem.reserve('pgtap-nobody')$$, '42501', 'permission denied for schema idem',
                 'a role without grants cannot reserve: PostgreSQL refuses it the schema');
RESET ROLE;
SELECT ok(NOT has_table_privilege('idem_pgtap_nobody', 'idem.keys', 'SELECT'),
          'a role without grants cannot read idem.keys');

------------------------------------------------------------------------------
-- Behaviour the contract promises, checked once here as well.
------------------------------------------------------------------------------
SELECT is((idem.reserve('pgtap-1')).outcome, 'acquired'::idem.outcome, 'a new key is acquired');
SELECT is((idem.reserve('pgtap-1')).outcome, 'in_progress'::idem.outcome, 'a held key is in_progress');
SELECT throws_ok($$ SELECT idem.reserve('pgtap-1', '{"other": 1}') $$, 'ID001', NULL,
                 'a different request raises ID001');
SELECT lives_ok($$ SELECT idem.complete('pgtap-1', (SELECT token FROM idem.keys WHERE key = 'pgtap-1'), '{"ok": 1}', 200) $$,
                'the holder completes');
SELECT is((idem.reserve('pgtap-1')).response, '{"ok": 1}'::jsonb, 'a completed key replays its response');
SELECT throws_ok($$ SELECT idem.complete('pgtap-1', 0, '{}') $$, 'ID002', NULL, 'another token raises ID002');
SELECT throws_ok($$ SELECT idem.complete('pgtap-nowhere', 1, '{}') $$, 'ID003', NULL, 'an unknown key raises ID003');
SELECT throws_ok($$ SELECT idem.reserve(NULL) $$, '22004', NULL, 'a NULL key raises 22004');
SELECT throws_ok($$ SELECT idem.reserve('k', NULL, NULL) $$, '22004', NULL, 'a NULL scope raises 22004');
SELECT throws_ok($$ SELECT idem.complete('k', NULL, '{}') $$, '22004', NULL, 'a NULL token raises 22004');
SELECT throws_ok($$ SELECT idem.reserve(repeat('k', 256)) $$, '22001', NULL, 'a 256-byte key raises 22001');
SELECT throws_ok($$ SELECT idem.reserve('k', NULL, repeat('s', 256)) $$, '22001', NULL, 'a 256-byte scope raises 22001');
SELECT throws_ok($$ SELECT idem.reserve('') $$, '22023', NULL, 'an empty key raises 22023');
SELECT throws_ok($$ SELECT idem.reserve('k', lease => '0') $$, '22023', NULL, 'a zero lease raises 22023');
SELECT throws_ok($$ SELECT idem.reserve('k', ttl => '-1 s') $$, '22023', NULL, 'a negative ttl raises 22023');

SELECT * FROM finish();
ROLLBACK;
