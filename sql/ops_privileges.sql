-- Privileges (SPEC.md section 4): application roles act on keys and events
-- only through the functions; nothing is granted to PUBLIC.

CREATE ROLE regress_idem_app;
CREATE ROLE regress_idem_nobody;

-- A role that was not given usage has nothing: not even the schema.
-- PostgreSQL refuses it; the library adds a HINT where it is loaded (LOAD:
-- the same output with or without preload, sql/ops_first_hour.sql).
LOAD 'pg_idem';
SET ROLE regress_idem_nobody;
SELECT idem.fingerprint('{}');
SELECT * FROM idem.reserve('priv-1');
SELECT * FROM idem.key_stats;
SELECT count(*) FROM idem.keys;
RESET ROLE;

-- idem.grant_usage() gives an application role what it needs.
SELECT idem.grant_usage('regress_idem_app');

SET ROLE regress_idem_app;
-- Keys, through the functions.
SELECT outcome, token IS NOT NULL AS has_token FROM idem.reserve('priv-1', '{"a": 1}', 'priv');
SELECT token AS priv_token FROM idem.reserve('priv-2', NULL, 'priv') \gset
SELECT idem.checkpoint('priv-2', :priv_token, 'step-1', '{"done": 1}', 'priv');
SELECT idem.complete('priv-2', :priv_token, '{"id": 42}', 201, 'priv');
SELECT outcome, response, status FROM idem.reserve('priv-2', NULL, 'priv');
SELECT token AS priv_token FROM idem.reserve('priv-3', NULL, 'priv') \gset
SELECT idem.release('priv-3', :priv_token, 'priv');
SELECT idem.forget('priv-1', 'priv');
SELECT length(idem.fingerprint('{"a": 1}')) AS fingerprint_bytes;
SELECT scope, state, keys FROM idem.key_stats WHERE scope = 'priv' ORDER BY state;
-- Outbox and consumers, through the functions.
SELECT idem.subscribe('priv-relay', ARRAY['priv']);
SELECT idem.emit('priv', '{"n": 1}') > 0 AS emitted;
SELECT batch_id AS priv_batch FROM idem.next_batch('priv-relay') LIMIT 1 \gset
SELECT consumer, pending FROM idem.consumer_lag WHERE consumer = 'priv-relay';
SELECT idem.finish_batch('priv-relay', :priv_batch);
SELECT idem.unsubscribe('priv-relay');

-- Never the tables directly: not to read, not to write.
SELECT count(*) FROM idem.keys;
INSERT INTO idem.keys (scope, key, state, ttl, created_at, updated_at, expires_at)
VALUES ('priv', 'forged', 'completed', '1 day', now(), now(), now() + interval '1 day');
UPDATE idem.keys SET response = '{"forged": true}' WHERE scope = 'priv';
DELETE FROM idem.keys WHERE scope = 'priv';
TRUNCATE idem.keys;
SELECT count(*) FROM idem.outbox;
INSERT INTO idem.outbox (topic, payload) VALUES ('priv', '{"forged": true}');
UPDATE idem.outbox SET payload = '{}';
DELETE FROM idem.outbox;
SELECT count(*) FROM idem.consumers;
UPDATE idem.consumers SET batch_id = NULL;
DELETE FROM idem.consumers;
SELECT nextval('idem.key_token_seq');

-- Nor the owner's functions.
SELECT idem.purge();
SELECT * FROM idem.maintain();
SELECT idem.trim_outbox();
SELECT idem.enforce_version('pg_class');
SELECT idem.unenforce_version('pg_class');
-- And it cannot hand its access on.
SELECT idem.grant_usage('regress_idem_nobody');
GRANT EXECUTE ON FUNCTION idem.fingerprint(jsonb) TO regress_idem_nobody;
RESET ROLE;

-- What the role holds, object by object.
SELECT p.oid::regprocedure AS function
  FROM pg_proc p
 WHERE p.pronamespace = 'idem'::regnamespace
   AND has_function_privilege('regress_idem_app', p.oid, 'EXECUTE')
 ORDER BY p.proname;
SELECT c.relname, c.relkind,
       has_table_privilege('regress_idem_app', c.oid, 'SELECT') AS sel,
       has_table_privilege('regress_idem_app', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE') AS write
  FROM pg_class c
 WHERE c.relnamespace = 'idem'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p')
 ORDER BY c.relname;
SELECT has_schema_privilege('regress_idem_app', 'idem', 'USAGE') AS usage,
       has_schema_privilege('regress_idem_app', 'idem', 'CREATE') AS create;

-- grant_usage: NULL and unknown roles are errors; odd names are quoted.
SELECT idem.grant_usage(NULL);
SELECT idem.grant_usage('regress_idem_no_such_role');
CREATE ROLE "regress_idem odd""; DROP ROLE regress_idem_app; --";
SELECT idem.grant_usage('"regress_idem odd""; DROP ROLE regress_idem_app; --"');
SELECT has_function_privilege('regress_idem odd"; DROP ROLE regress_idem_app; --',
                              'idem.reserve(text,jsonb,text,interval,interval)', 'EXECUTE') AS can_reserve,
       EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_idem_app') AS app_role_still_there;
-- Granting twice is harmless.
SELECT idem.grant_usage('regress_idem_app');

-- Version guards need no pg_idem privilege: a trigger's function is not
-- checked for EXECUTE when it fires.  regress_idem_nobody holds nothing in
-- schema idem, yet its writes are guarded, and it cannot lift the guard.
CREATE TABLE priv_accounts (id int PRIMARY KEY, balance int NOT NULL, version int);
SELECT idem.enforce_version('priv_accounts');
GRANT SELECT, INSERT, UPDATE ON priv_accounts TO regress_idem_nobody;
SET ROLE regress_idem_nobody;
INSERT INTO priv_accounts VALUES (1, 100, NULL) RETURNING *;
UPDATE priv_accounts SET balance = 50, version = 1 WHERE id = 1 RETURNING *;
UPDATE priv_accounts SET balance = 40, version = 1 WHERE id = 1;
UPDATE priv_accounts SET balance = 40 WHERE id = 1;
ALTER TABLE priv_accounts DISABLE TRIGGER ALL;
SELECT idem.unenforce_version('priv_accounts');
RESET ROLE;
SELECT * FROM priv_accounts;

-- Clean up: DROP OWNED BY takes back every grant.
DROP TABLE priv_accounts;
DROP OWNED BY regress_idem_app, regress_idem_nobody, "regress_idem odd""; DROP ROLE regress_idem_app; --";
DROP ROLE regress_idem_app;
DROP ROLE regress_idem_nobody;
DROP ROLE "regress_idem odd""; DROP ROLE regress_idem_app; --";
