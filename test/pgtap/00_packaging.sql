-- Packaging contract (SPEC.md section 0).
BEGIN;
SELECT plan(8);

SELECT has_extension('pg_idem', 'the extension is installed');
SELECT has_schema('idem', 'CREATE EXTENSION creates schema idem');
SELECT is((SELECT extrelocatable FROM pg_extension WHERE extname = 'pg_idem'), false,
          'the extension is not relocatable');
SELECT is((SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
           WHERE extname = 'pg_idem'), 'idem', 'the extension lives in schema idem');

SELECT function_returns('idem', 'fingerprint', ARRAY['jsonb'], 'bytea',
                        'idem.fingerprint(jsonb) returns bytea');
SELECT volatility_is('idem', 'fingerprint', ARRAY['jsonb'], 'immutable',
                     'idem.fingerprint is IMMUTABLE');
SELECT is_strict('idem', 'fingerprint', ARRAY['jsonb'], 'idem.fingerprint is STRICT');
SELECT is(idem.fingerprint('{"a":1}'), sha256('{"a": 1}'::bytea),
          'fingerprint is the SHA-256 of the canonical text');

SELECT * FROM finish();
ROLLBACK;
