-- Transactional outbox contract (SPEC.md section 3): the table exactly as
-- specified, the function signatures, volatility, security and privileges,
-- the consumer table and view, and the error codes.
BEGIN;
SELECT plan(113);

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
-- (0.2) The table is a ring of 8 leaves partitioned by (id / 65536) % 8; a
-- table partitioned by an expression cannot have a primary key of its own,
-- so each leaf has one on id (an id belongs to exactly one leaf).
SELECT is(pg_get_partkeydef('idem.outbox'::regclass), 'LIST ((((id / 65536) % (8)::bigint)))',
          'idem.outbox is partitioned by (id / 65536) % 8');
SELECT is((SELECT string_agg(pg_get_expr(c.relpartbound, c.oid), ', ' ORDER BY c.relname)
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'idem.outbox'::regclass),
          'FOR VALUES IN (''0''), FOR VALUES IN (''1''), FOR VALUES IN (''2''), FOR VALUES IN (''3''), '
          'FOR VALUES IN (''4''), FOR VALUES IN (''5''), FOR VALUES IN (''6''), FOR VALUES IN (''7'')',
          'the leaves take the values 0 to 7');
SELECT is((SELECT count(*)::int FROM pg_inherits i
             JOIN pg_constraint k ON k.conrelid = i.inhrelid AND k.contype = 'p'
            WHERE i.inhparent = 'idem.outbox'::regclass
              AND pg_get_constraintdef(k.oid) = 'PRIMARY KEY (id) INCLUDE (xid)'), 8,
          'outbox.id is the primary key of every leaf');
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
SELECT is(pg_get_indexdef('idem.outbox_0_pkey'::regclass),
          'CREATE UNIQUE INDEX outbox_0_pkey ON idem.outbox_0 USING btree (id) INCLUDE (xid)',
          'batches walk the leaves'' primary keys, which carry the xid');
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
                         'open_batch_id', 'last_finished_at', 'owner'],
                   'consumer_lag columns');
SELECT col_type_is('idem', 'consumer_lag', 'pending', 'bigint', 'consumer_lag.pending is bigint');
SELECT col_type_is('idem', 'consumer_lag', 'oldest_pending_age', 'interval',
                   'consumer_lag.oldest_pending_age is an interval');

-- pg_dump keeps the events, the positions and both counters.
SELECT ok((SELECT extconfig FROM pg_extension WHERE extname = 'pg_idem') @>
          ARRAY['idem.outbox_0'::regclass, 'idem.outbox_1'::regclass, 'idem.outbox_2'::regclass,
                'idem.outbox_3'::regclass, 'idem.outbox_4'::regclass, 'idem.outbox_5'::regclass,
                'idem.outbox_6'::regclass, 'idem.outbox_7'::regclass, 'idem.outbox_id_seq'::regclass,
                'idem.consumers'::regclass, 'idem.outbox_batch_seq'::regclass]::oid[],
          'outbox tables and sequences are registered with pg_extension_config_dump');

-- Nothing outbox-related is reachable by PUBLIC.
SELECT is((SELECT count(*)::int FROM pg_class c, aclexplode(c.relacl) a
            WHERE (c.oid IN ('idem.outbox'::regclass, 'idem.consumers'::regclass,
                            'idem.consumer_lag'::regclass, 'idem.outbox_batch_seq'::regclass,
                            'idem.outbox_id_seq'::regclass)
                   OR c.oid IN (SELECT inhrelid FROM pg_inherits
                                 WHERE inhparent = 'idem.outbox'::regclass))
              AND a.grantee = 0), 0,
          'no privilege on the outbox tables, view or sequences is granted to PUBLIC');
SELECT is((SELECT count(*)::int FROM pg_class
            WHERE oid IN ('idem.outbox'::regclass, 'idem.consumers'::regclass,
                          'idem.consumer_lag'::regclass)
              AND relacl IS NULL), 0,
          'the outbox tables and view have explicit ACLs (not the defaults)');

-- The functions: signature (with defaults), result, volatility, strictness,
-- definer rights (trim_outbox only) and a pinned search_path (all but emit), parallel
-- safety, privileges.
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
-- emit() runs no SQL (it writes idem.outbox by OID from C): no definer
-- rights and no pinned search_path to pay for on every event.  The consumer
-- functions check that their caller owns the consumer (0.2), so they run as
-- their caller too, and switch to the table's owner for their SQL; only
-- trim_outbox, the owner's, is SECURITY DEFINER.
SELECT is(p.prosecdef, sig = 'idem.trim_outbox(integer)'::regprocedure,
          sig::text || CASE WHEN sig = 'idem.emit(text,jsonb,text,jsonb)'::regprocedure
                            THEN ' is not SECURITY DEFINER (runs no SQL)'
                            WHEN sig = 'idem.trim_outbox(integer)'::regprocedure
                            THEN ' is SECURITY DEFINER'
                            ELSE ' is not SECURITY DEFINER (it checks its caller)' END)
  FROM expected_fn e JOIN pg_proc p ON p.oid = e.sig ORDER BY sig::text;
SELECT is(p.proconfig,
          CASE WHEN sig = 'idem.emit(text,jsonb,text,jsonb)'::regprocedure THEN NULL
               ELSE ARRAY['search_path=pg_catalog, pg_temp'] END,
          sig::text || CASE WHEN sig = 'idem.emit(text,jsonb,text,jsonb)'::regprocedure
                            THEN ' sets nothing' ELSE ' pins search_path' END)
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

-- emit() writes the row an INSERT with the columns' defaults would write
-- (it writes idem.outbox directly from C, not through a statement).
CREATE TEMP TABLE emitted AS
  SELECT idem.emit('pgtap-row', '{"a": [1, 2]}', 'k-1', '{"h": "v"}') AS id;
SELECT results_eq(
  $$ SELECT o.id, o.topic, o.key, o.payload, o.headers, o.created_at, o.xid
       FROM idem.outbox o JOIN emitted e USING (id) $$,
  $$ SELECT e.id, 'pgtap-row'::text, 'k-1'::text, '{"a": [1, 2]}'::jsonb, '{"h": "v"}'::jsonb,
            now(), pg_current_xact_id() FROM emitted e $$,
  'emit writes id, topic, key, payload, headers, created_at = now() and xid = pg_current_xact_id()');
SELECT ok((SELECT id FROM emitted) < idem.emit('pgtap-row', 'null'), 'ids come from the identity sequence, increasing');
SELECT is((SELECT count(*) FROM idem.outbox WHERE topic = 'pgtap-row' AND key IS NULL AND headers IS NULL), 1::bigint,
          'key and headers default to NULL');

-- A payload stored out of line in another table (a TOAST pointer) is
-- copied, not referenced.
CREATE TEMP TABLE big_doc (doc jsonb);
INSERT INTO big_doc
  SELECT jsonb_build_object('blob', string_agg(md5(g::text), '')) FROM generate_series(1, 40000) g;
CREATE TEMP TABLE big_emitted AS SELECT idem.emit('pgtap-big', doc) AS id FROM big_doc;
TRUNCATE big_doc;
SELECT is((SELECT length(payload->>'blob') FROM idem.outbox WHERE id = (SELECT id FROM big_emitted)), 1280000,
          'a 1.3 MB payload read from another table is stored whole');

SELECT throws_ok($$SET LOCAL transaction_read_only = on; SELECT idem.emit('pgtap', '{}')$$, '25006',
                 'cannot execute idem.emit() in a read-only transaction',
                 'emit in a read-only transaction raises 25006');
SELECT throws_ok($$SELECT idem.emit('pgtap', '{}', NULL, '[1]')$$, '22023', 'headers must be a JSON object',
                 'headers that are not a JSON object raise 22023');

SELECT * FROM finish();
ROLLBACK;
