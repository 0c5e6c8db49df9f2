-- Operations contract (SPEC.md section 4): maintain(), grant_usage(), the
-- views, the settings, and the privilege model of every object.
BEGIN;
SELECT plan(68);

-- idem.maintain()
SELECT has_function('idem', 'maintain', ARRAY[]::text[], 'idem.maintain() exists');
SELECT function_returns('idem', 'maintain', ARRAY[]::text[], 'setof record',
                        'idem.maintain() returns a set of rows');
SELECT is((SELECT pg_get_function_result('idem.maintain()'::regprocedure)),
          'TABLE(task text, rows bigint)', 'idem.maintain() returns TABLE (task text, rows bigint)');
SELECT volatility_is('idem', 'maintain', ARRAY[]::text[], 'volatile', 'idem.maintain() is VOLATILE');
SELECT is_definer('idem', 'maintain', ARRAY[]::text[], 'idem.maintain() is SECURITY DEFINER');
SELECT results_eq('SELECT task FROM idem.maintain() ORDER BY task',
                  ARRAY['expired_keys', 'outbox_events'],
                  'idem.maintain() reports one row per task');

-- idem.grant_usage(regrole, text[], text[]) (0.2: scope and topic patterns)
SELECT has_function('idem', 'grant_usage', ARRAY['regrole', 'text[]', 'text[]'],
                    'idem.grant_usage(regrole, text[], text[]) exists');
SELECT hasnt_function('idem', 'grant_usage', ARRAY['regrole'],
                      'the 0.1 idem.grant_usage(regrole) is gone (the new one has defaults)');
SELECT is(pg_get_function_arguments('idem.grant_usage(regrole,text[],text[])'::regprocedure),
          'role regrole, scopes text[] DEFAULT NULL::text[], topics text[] DEFAULT NULL::text[]',
          'idem.grant_usage(role, scopes DEFAULT NULL, topics DEFAULT NULL)');
SELECT function_returns('idem', 'grant_usage', ARRAY['regrole', 'text[]', 'text[]'], 'void',
                        'idem.grant_usage() returns void');
SELECT isnt_definer('idem', 'grant_usage', ARRAY['regrole', 'text[]', 'text[]'],
                    'idem.grant_usage() runs with its caller''s rights');
SELECT isnt_strict('idem', 'grant_usage', ARRAY['regrole', 'text[]', 'text[]'],
                   'idem.grant_usage() is not STRICT (a NULL role is an error)');
SELECT throws_ok('SELECT idem.grant_usage(NULL)', '22004', 'role must not be null',
                 'idem.grant_usage(NULL) raises 22004');
SELECT has_function('idem', 'revoke_usage', ARRAY['regrole'], 'idem.revoke_usage(regrole) exists');
SELECT function_returns('idem', 'revoke_usage', ARRAY['regrole'], 'boolean',
                        'idem.revoke_usage() returns boolean');
SELECT isnt_definer('idem', 'revoke_usage', ARRAY['regrole'],
                    'idem.revoke_usage() runs with its caller''s rights');

-- idem.grants: what each role may use
SELECT has_table('idem', 'grants', 'table idem.grants exists');
SELECT columns_are('idem', 'grants', ARRAY['role', 'scopes', 'topics', 'granted_at'],
                   'idem.grants: role, scope patterns, topic patterns, when');
SELECT col_type_is('idem', 'grants', 'role', 'regrole',
                   'idem.grants.role is a regrole (pg_dump writes it by name)');
SELECT col_is_pk('idem', 'grants', 'role', 'one row per role');
SELECT has_trigger('idem', 'grants', 'grants_changed',
                   'a change of idem.grants invalidates the cached rights');
SELECT col_type_is('idem', 'consumers', 'owner', 'regrole', 'a consumer has an owner role');

-- Views
SELECT has_view('idem', 'key_stats', 'view idem.key_stats exists');
SELECT has_view('idem', 'consumer_lag', 'view idem.consumer_lag exists');
SELECT columns_are('idem', 'key_stats',
                   ARRAY['scope', 'state', 'keys', 'expired', 'oldest_in_progress_age'],
                   'idem.key_stats: per scope and state, counts and the oldest in-progress age');
SELECT columns_are('idem', 'consumer_lag',
                   ARRAY['consumer', 'topics', 'pending', 'oldest_pending_age',
                         'open_batch_id', 'last_finished_at', 'owner'],
                   'idem.consumer_lag: per consumer, pending events, the age of the oldest, the owner');
SELECT set_eq($$
    SELECT c.relname::text FROM pg_class c
     WHERE c.relnamespace = 'idem'::regnamespace AND c.relkind = 'v'
       AND c.reloptions @> ARRAY['security_barrier=true'] $$,
    ARRAY['key_stats', 'consumer_lag'],
    'both views are security barriers (they show a role only its own scopes and consumers)');

-- Settings
SELECT throws_ok('SET LOCAL idem.lease = ''0''', '22023', NULL, 'idem.lease = 0 is refused');
SELECT throws_ok('SET LOCAL idem.ttl = ''0''', '22023', NULL, 'idem.ttl = 0 is refused');
SELECT lives_ok('SET LOCAL idem.lease = ''2s''', 'idem.lease = 2s is accepted');
SELECT is(current_setting('idem.lease'), '2s', 'and shown with its unit');
SELECT is((SELECT array_agg(name::text ORDER BY name) FROM pg_settings WHERE name LIKE 'idem.%'),
          ARRAY['idem.lease', 'idem.maintenance_database', 'idem.maintenance_interval',
                'idem.outbox_notify', 'idem.outbox_retention', 'idem.outbox_wal', 'idem.ttl'],
          'the idem.* settings exist');
-- idem.maintenance_database is fixed at server start only when the library
-- is preloaded (there is a worker); loaded on first use it is reloadable and
-- inert (src/pg_idem.c), so that make installcheck passes on either server.
SELECT is((SELECT array_agg(context ORDER BY name) FROM pg_settings WHERE name LIKE 'idem.%'),
          ARRAY['user',
                CASE WHEN current_setting('shared_preload_libraries') ~ '(^|[\s,"])pg_idem($|[\s,"])'
                     THEN 'postmaster' ELSE 'sighup' END,
                'sighup', 'user', 'superuser', 'user', 'user'],
          'contexts: lease, ttl, notify and outbox_wal per session, retention superuser, interval on reload, database at start when preloaded');

-- The privilege model of every object in schema idem.
-- Nothing is granted to PUBLIC (SPEC.md section 4): no EXECUTE, no USAGE on
-- the schema; idem.grant_usage() grants what an application role needs.
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
     WHERE p.pronamespace = 'idem'::regnamespace AND a.grantee = 0 $$,
    'no function in schema idem is executable by PUBLIC');
SELECT is_empty($$
    SELECT c.relname::text FROM pg_class c
     CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
     WHERE c.relnamespace = 'idem'::regnamespace AND a.grantee = 0 $$,
    'no table, view or sequence in schema idem grants anything to PUBLIC');
SELECT is_empty($$
    SELECT n.nspname::text FROM pg_namespace n
     CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
     WHERE n.nspname = 'idem' AND a.grantee = 0 $$,
    'PUBLIC has no USAGE on schema idem');
-- Functions that run SQL pin search_path.  The exceptions run no SQL at all
-- (their C code reaches tables, indexes and types by OID), so nothing in
-- them is looked up by name; sql/ops_search_path.sql attacks them anyway.
-- A new function missing from this list must pin search_path.
-- invariant_drop_start resolves the names of a DROP TABLE with the
-- caller's search_path on purpose, as DROP itself does, and runs no SQL.
SELECT set_eq($$
    SELECT p.proname::text FROM pg_proc p
     WHERE p.pronamespace = 'idem'::regnamespace
       AND NOT coalesce(p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false) $$,
    ARRAY['fingerprint', 'version_guard', 'reserve', 'complete', 'release', 'checkpoint', 'emit',
          'invariant_touch', 'grants_changed', 'invariant_drop_start'],
    'every function pins search_path = pg_catalog, pg_temp, except those that run no SQL');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'idem'::regnamespace
       AND p.proconfig IS NOT NULL
       AND NOT p.proconfig @> ARRAY['search_path=pg_catalog, pg_temp'] $$,
    'no function sets anything else, or another search_path');
SELECT set_eq($$
    SELECT p.proname::text FROM pg_proc p
     WHERE p.pronamespace = 'idem'::regnamespace AND p.prosecdef $$,
    ARRAY['purge', 'trim_outbox', 'maintain', 'invariant_sql_drop', 'invariant_ddl_end'],
    'exactly the owner''s functions that write idem tables through SQL are SECURITY DEFINER (those of application roles check their caller)');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'idem'::regnamespace
       AND obj_description(p.oid, 'pg_proc') IS NULL $$,
    'every function has a COMMENT');
SELECT is_empty($$
    SELECT c.relname::text FROM pg_class c
     WHERE c.relnamespace = 'idem'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p', 'i')
       AND NOT EXISTS (SELECT FROM pg_depend d
                        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                          AND d.deptype IN ('e', 'a', 'i', 'n')) $$,
    'every relation in schema idem belongs to the extension (or to one of its objects)');
SELECT set_eq($$
    SELECT unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'pg_idem' $$,
    ARRAY['idem.keys', 'idem.key_token_seq', 'idem.outbox_0', 'idem.outbox_1', 'idem.outbox_2',
          'idem.outbox_3', 'idem.outbox_4', 'idem.outbox_5', 'idem.outbox_6', 'idem.outbox_7',
          'idem.outbox_id_seq',
          'idem.consumers', 'idem.outbox_batch_seq', 'idem.invariant', 'idem.invariant_watch',
          'idem.grants'],
    'every table and counter holding user data is kept by pg_dump');

-- Versioned install script; upgrades go through ALTER EXTENSION ... UPDATE.
SELECT is((SELECT extversion FROM pg_extension WHERE extname = 'pg_idem'),
          (SELECT default_version FROM pg_available_extensions WHERE name = 'pg_idem'),
          'the installed version is the default version');
SELECT lives_ok('ALTER EXTENSION pg_idem UPDATE',
                'ALTER EXTENSION pg_idem UPDATE works (a no-op while 0.1.0 is the only version)');

-- What grant_usage() gives, and what it does not.
CREATE ROLE regress_tap_app;
CREATE ROLE regress_tap_none;
SELECT idem.grant_usage('regress_tap_app');
SELECT set_eq($$
    SELECT p.proname::text FROM pg_proc p
     WHERE p.pronamespace = 'idem'::regnamespace
       AND has_function_privilege('regress_tap_app', p.oid, 'EXECUTE') $$,
    ARRAY['reserve', 'complete', 'release', 'checkpoint', 'forget', 'fingerprint',
          'emit', 'subscribe', 'unsubscribe', 'next_batch', 'finish_batch', 'check_invariants'],
    'grant_usage: EXECUTE on the key, outbox and consumer functions, nothing else');
SELECT set_eq($$
    SELECT c.relname::text FROM pg_class c
     WHERE c.relnamespace = 'idem'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p')
       AND has_table_privilege('regress_tap_app', c.oid, 'SELECT') $$,
    ARRAY['key_stats', 'consumer_lag'],
    'grant_usage: SELECT on the two views, no table or sequence');
SELECT is_empty($$
    SELECT c.relname::text FROM pg_class c
     WHERE c.relnamespace = 'idem'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p')
       AND (has_table_privilege('regress_tap_app', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
            OR (c.relkind = 'S' AND has_sequence_privilege('regress_tap_app', c.oid, 'USAGE, UPDATE'))) $$,
    'grant_usage: no write privilege on anything');
SELECT ok(has_schema_privilege('regress_tap_app', 'idem', 'USAGE')
          AND NOT has_schema_privilege('regress_tap_app', 'idem', 'CREATE'),
          'grant_usage: USAGE on schema idem, not CREATE');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_proc p
     WHERE p.pronamespace = 'idem'::regnamespace
       AND has_function_privilege('regress_tap_none', p.oid, 'EXECUTE') $$,
    'a role not given usage can execute nothing');
SET LOCAL ROLE regress_tap_none;
SELECT throws_ok($$SELECT idem.reserve('tap-ops-none')$$, '42501',
                 'permission denied for schema idem',
                 'and its first call is refused by PostgreSQL (the HINT is sql/ops_first_hour.sql''s)');
RESET ROLE;

SET LOCAL ROLE regress_tap_app;
SELECT lives_ok($$SELECT idem.reserve('tap-ops-1')$$, 'the application role reserves through the function');
SELECT throws_ok($$INSERT INTO idem.keys (scope, key, state, ttl, created_at, updated_at, expires_at)
                   VALUES ('', 'x', 'completed', '1 day', now(), now(), now())$$,
                 '42501', NULL, 'but cannot insert into idem.keys');
SELECT throws_ok('DELETE FROM idem.outbox', '42501', NULL, 'nor delete from idem.outbox');
SELECT throws_ok('SELECT * FROM idem.maintain()', '42501', NULL, 'nor run idem.maintain()');
RESET ROLE;

-- Least privilege (0.2): two services, each on its own scopes, topics and
-- consumers (sql/ops_least_privilege.sql tries every function).
CREATE ROLE regress_tap_a;
CREATE ROLE regress_tap_b;
SELECT idem.grant_usage('regress_tap_a', scopes => ARRAY['billing', 'billing/%'],
                        topics => ARRAY['billing%']);
SELECT idem.grant_usage('regress_tap_b', scopes => ARRAY['shipping'], topics => ARRAY['shipping']);
SELECT set_eq($$SELECT role::text || ' ' || coalesce(scopes::text, 'all') || ' ' || coalesce(topics::text, 'all')
                  FROM idem.grants WHERE role::text LIKE 'regress_tap_%'$$,
              ARRAY['regress_tap_app all all', 'regress_tap_a {billing,billing/%} {billing%}',
                    'regress_tap_b {shipping} {shipping}'],
              'grant_usage() writes one row per role; no patterns is every scope and topic');
SET LOCAL ROLE regress_tap_a;
SELECT lives_ok($$SELECT idem.reserve('charge-1', '{}', 'billing/eu')$$, 'a role reserves in a granted scope');
SELECT lives_ok($$SELECT idem.subscribe('tap-billing-relay', ARRAY['billing'])$$,
                'a role subscribes a consumer of granted topics');
SELECT lives_ok($$SELECT idem.emit('billing', '{}')$$, 'a role emits to a granted topic');
SET LOCAL ROLE regress_tap_b;
SELECT throws_ok($$SELECT idem.reserve('charge-1', '{}', 'billing/eu')$$, '42501',
                 'permission denied for idempotency scope "billing/eu"',
                 'another role may not reserve in that scope');
SELECT throws_ok($$SELECT idem.forget('charge-1', 'billing/eu')$$, '42501',
                 'permission denied for idempotency scope "billing/eu"',
                 'nor forget its keys');
SELECT throws_ok($$SELECT idem.emit('billing', '{}')$$, '42501',
                 'permission denied for outbox topic "billing"', 'nor emit to its topic');
SELECT throws_ok($$SELECT * FROM idem.next_batch('tap-billing-relay')$$, '42501',
                 'permission denied for outbox consumer "tap-billing-relay"', 'nor read its consumer');
SELECT throws_ok($$SELECT idem.unsubscribe('tap-billing-relay')$$, '42501',
                 'permission denied for outbox consumer "tap-billing-relay"', 'nor unsubscribe it');
SELECT is_empty($$SELECT FROM idem.key_stats WHERE scope = 'billing/eu'$$,
                'idem.key_stats does not show it the other role''s scope');
SELECT is_empty($$SELECT FROM idem.consumer_lag WHERE consumer = 'tap-billing-relay'$$,
                'idem.consumer_lag does not show it the other role''s consumer');
RESET ROLE;
SELECT is((SELECT owner::text FROM idem.consumer_lag WHERE consumer = 'tap-billing-relay'),
          'regress_tap_a', 'the owner of pg_idem sees every consumer, and who owns it');
SELECT ok(idem.revoke_usage('regress_tap_a'), 'revoke_usage() takes a grant back');
SELECT ok(NOT has_function_privilege('regress_tap_a', 'idem.reserve(text,jsonb,text,interval,interval)', 'EXECUTE')
          AND NOT has_schema_privilege('regress_tap_a', 'idem', 'USAGE')
          AND NOT has_table_privilege('regress_tap_a', 'idem.key_stats', 'SELECT')
          AND NOT EXISTS (SELECT FROM idem.grants WHERE role = 'regress_tap_a'::regrole),
          'with the functions, the schema, the views and the row of idem.grants');

SELECT * FROM finish();
ROLLBACK;
