-- Transactional outbox contract (SPEC.md section 3): the table exactly as
-- specified, the function signatures, volatility, security and privileges,
-- the consumer table and view, and the error codes.
BEGIN;
SELECT plan(105);

-- idem.outbox: id bigint identity primary key, topic text not null, key text,
-- payload jsonb not null, headers jsonb, created_at timestamptz not null,
-- xid xid8 not null (writing transaction).
SELECT has_table('idem', 'outbox', 'table idem.outbox exists');
SELECT columns_are('idem', 'outbox',
                   ARRAY['id', 'topic', 'key', 'payload', 'headers', 'created_at', 'xid'],
                   'idem.outbox has exactly the specified columns');
SELECT col_type_is('idem', 'outbox', 'id', 'bigint', 'outbox.id is bigint');
SELECT col_type_is('idem', 'outbox', 'topic', 'text', 'outbox.topic is text');
SELECT col_type_is('idem', 'outbox', 'key', 'text', 'outbox.key is text');
SELECT col_type_is('idem', 'outbox', 'payload', 'jsonb', 'outbox.payload is jsonb');
SELECT col_type_is('idem', 'outbox', 'headers', 'jsonb', 'outbox.headers is jsonb');
SELECT col_type_is('idem', 'outbox', 'created_at', 'timestamp with time zone',
                   'outbox.created_at is timestamptz');
SELECT col_type_is('idem', 'outbox', 'xid', 'xid8', 'outbox.xid is xid8');
SELECT col_is_pk('idem', 'outbox', 'id', 'outbox.id is the primary key');
SELECT is((SELECT attidentity::text FROM pg_attribute
            WHERE attrelid = 'idem.outbox'::regclass AND attname = 'id'),
          'a', 'outbox.id is an identity column (GENERATED ALWAYS)');
SELECT col_not_null('idem', 'outbox', 'topic', 'outbox.topic is not null');
SELECT col_is_null('idem', 'outbox', 'key', 'outbox.key is nullable');
SELECT col_not_null('idem', 'outbox', 'payload', 'outbox.payload is not null');
SELECT col_is_null('idem', 'outbox', 'headers', 'outbox.headers is nullable');
SELECT col_not_null('idem', 'outbox', 'created_at', 'outbox.created_at is not null');
SELECT col_not_null('idem', 'outbox', 'xid', 'outbox.xid is not null');
SELECT col_default_is('idem', 'outbox', 'created_at', 'now()',
                      'outbox.created_at defaults to now()');
SELECT col_default_is('idem', 'outbox', 'xid', 'pg_current_xact_id()',
                      'outbox.xid defaults to the writing transaction''s top-level xid8');
SELECT is(pg_get_indexdef('idem.outbox_pkey'::regclass),
          'CREATE UNIQUE INDEX outbox_pkey ON idem.outbox USING btree (id) INCLUDE (xid)',
          'batches walk the primary key, which carries the xid');
SELECT has_index('idem', 'outbox', 'outbox_xid_id_idx', ARRAY['xid', 'id'],
                 'windows and trimming walk an index on (xid, id)');

-- The consumer table and the lag view.
SELECT has_table('idem', 'consumers', 'table idem.consumers exists');
SELECT col_is_pk('idem', 'consumers', 'name', 'consumers.name is the primary key');
SELECT col_type_is('idem', 'consumers', 'topics', 'text[]', 'consumers.topics is text[]');
SELECT col_type_is('idem', 'consumers', 'snapshot', 'pg_snapshot',
                   'a consumer''s position is a pg_snapshot');
SELECT has_sequence('idem', 'outbox_batch_seq', 'batch ids come from a sequence');
SELECT has_view('idem', 'consumer_lag', 'view idem.consumer_lag exists');
SELECT columns_are('idem', 'consumer_lag',
                   ARRAY['consumer', 'topics', 'pending', 'oldest_pending_age',
                         'open_batch_id', 'last_finished_at'],
                   'consumer_lag columns');
SELECT col_type_is('idem', 'consumer_lag', 'pending', 'bigint', 'consumer_lag.pending is bigint');
SELECT col_type_is('idem', 'consumer_lag', 'oldest_pending_age', 'interval',
                   'consumer_lag.oldest_pending_age is an interval');

-- pg_dump keeps the events, the positions and both counters.
SELECT ok((SELECT extconfig FROM pg_extension WHERE extname = 'pg_idem') @>
          ARRAY['idem.outbox'::regclass, 'idem.outbox_id_seq'::regclass,
                'idem.consumers'::regclass, 'idem.outbox_batch_seq'::regclass]::oid[],
          'outbox tables and sequences are registered with pg_extension_config_dump');

-- Nothing outbox-related is reachable by PUBLIC.
SELECT is((SELECT count(*)::int FROM pg_class c, aclexplode(c.relacl) a
            WHERE c.oid IN ('idem.outbox'::regclass, 'idem.consumers'::regclass,
                            'idem.consumer_lag'::regclass, 'idem.outbox_batch_seq'::regclass,
                            'idem.outbox_id_seq'::regclass)
              AND a.grantee = 0), 0,
          'no privilege on the outbox tables, view or sequences is granted to PUBLIC');
SELECT is((SELECT count(*)::int FROM pg_class
            WHERE oid IN ('idem.outbox'::regclass, 'idem.consumers'::regclass,
                          'idem.consumer_lag'::regclass)
              AND relacl IS NULL), 0,
          'the outbox tables and view have explicit ACLs (not the defaults)');

-- The functions: signature (with defaults), result, volatility, strictness,
-- security definer with a pinned search_path, parallel safety, privileges.
CREATE TEMP TABLE expected_fn (sig regprocedure, args text, result text);
INSERT INTO expected_fn VALUES
  ('idem.emit(text,jsonb,text,jsonb)',
   'topic text, payload jsonb, key text DEFAULT NULL::text, headers jsonb DEFAULT NULL::jsonb',
   'bigint'),
  ('idem.subscribe(text,text[],boolean)',
   'consumer text, topics text[] DEFAULT NULL::text[], from_start boolean DEFAULT false',
   'void'),
  ('idem.unsubscribe(text)', 'consumer text', 'boolean'),
  ('idem.next_batch(text,integer)',
   'consumer text, max_events integer DEFAULT 1000',
   'TABLE(batch_id bigint, id bigint, topic text, key text, payload jsonb, headers jsonb, created_at timestamp with time zone)'),
  ('idem.finish_batch(text,bigint)', 'consumer text, batch_id bigint', 'bigint'),
  ('idem.trim_outbox(integer)', 'max_rows integer DEFAULT 10000', 'bigint');

SELECT is(pg_get_function_arguments(sig), args, sig::text || ' arguments and defaults')
  FROM expected_fn ORDER BY sig::text;
SELECT is(pg_get_function_result(sig), result, sig::text || ' result')
  FROM expected_fn ORDER BY sig::text;
SELECT is(p.provolatile::text, 'v', sig::text || ' is VOLATILE')
  FROM expected_fn e JOIN pg_proc p ON p.oid = e.sig ORDER BY sig::text;
SELECT is(p.proisstrict, false, sig::text || ' is not STRICT (NULL arguments raise 22004)')
  FROM expected_fn e JOIN pg_proc p ON p.oid = e.sig ORDER BY sig::text;
SELECT is(p.prosecdef, true, sig::text || ' is SECURITY DEFINER')
  FROM expected_fn e JOIN pg_proc p ON p.oid = e.sig ORDER BY sig::text;
SELECT is(p.proconfig, ARRAY['search_path=pg_catalog, pg_temp'],
          sig::text || ' pins search_path')
  FROM expected_fn e JOIN pg_proc p ON p.oid = e.sig ORDER BY sig::text;
SELECT is(p.proparallel::text, 'u', sig::text || ' is PARALLEL UNSAFE (it writes)')
  FROM expected_fn e JOIN pg_proc p ON p.oid = e.sig ORDER BY sig::text;
SELECT is(p.prolang, (SELECT oid FROM pg_language WHERE lanname = 'c'),
          sig::text || ' is written in C')
  FROM expected_fn e JOIN pg_proc p ON p.oid = e.sig ORDER BY sig::text;
SELECT ok(p.proacl IS NOT NULL AND NOT EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0),
          sig::text || ' is not executable by PUBLIC')
  FROM expected_fn e JOIN pg_proc p ON p.oid = e.sig ORDER BY sig::text;
SELECT isnt(obj_description(sig, 'pg_proc'), NULL, sig::text || ' has a comment')
  FROM expected_fn ORDER BY sig::text;

-- Error codes.
SELECT throws_ok($$SELECT * FROM idem.next_batch('pgtap-nobody')$$, 'ID020',
                 'outbox consumer "pgtap-nobody" does not exist',
                 'next_batch of an unknown consumer raises ID020');
SELECT throws_ok($$SELECT idem.finish_batch('pgtap-nobody', 1)$$, 'ID020', NULL,
                 'finish_batch of an unknown consumer raises ID020');
SELECT lives_ok($$SELECT idem.subscribe('pgtap-relay')$$, 'subscribe');
SELECT throws_ok($$SELECT idem.finish_batch('pgtap-relay', 1)$$, 'ID021', NULL,
                 'finish_batch with no open batch raises ID021');
SELECT lives_ok($$SELECT idem.emit('pgtap', '{}')$$, 'emit');
SELECT throws_ok($$SELECT idem.emit(NULL, '{}')$$, '22004', NULL, 'NULL topic raises 22004');
SELECT throws_ok($$SELECT idem.emit('pgtap', NULL)$$, '22004', NULL, 'NULL payload raises 22004');
SELECT throws_ok($$SELECT idem.emit('', '{}')$$, '22023', NULL, 'empty topic raises 22023');
SELECT throws_ok($$SELECT idem.emit(repeat('t', 256), '{}')$$, '22023', NULL,
                 'a 256-byte topic raises 22023');
SELECT throws_ok($$SELECT idem.subscribe(repeat('c', 256))$$, '22023', NULL,
                 'a 256-byte consumer name raises 22023');
SELECT throws_ok($$SELECT idem.subscribe(NULL)$$, '22004', NULL, 'NULL consumer raises 22004');
SELECT throws_ok($$SELECT * FROM idem.next_batch('pgtap-relay', 0)$$, '22023', NULL,
                 'max_events < 1 raises 22023');

SELECT * FROM finish();
ROLLBACK;
