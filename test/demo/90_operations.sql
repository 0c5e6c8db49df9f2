-- Operations: settings, maintenance, monitoring and the privilege model.

-- The settings, with their units and who may change them.
SELECT name, setting, unit, context FROM pg_settings WHERE name LIKE 'idem.%' ORDER BY name;
-- A lease must be positive.
SET idem.lease = '0';
SET idem.lease = '2min';
SHOW idem.lease;
RESET idem.lease;

-- With pg_idem preloaded, the maintenance worker runs in the database named
-- by idem.maintenance_database.
SELECT backend_type, datname, application_name FROM pg_stat_activity
 WHERE backend_type = 'pg_idem maintenance';

-- Expired keys wait for maintenance; idem.key_stats shows them.
SELECT idem.complete('demo-ops-1',
                     (idem.reserve('demo-ops-1', NULL, 'demo-ops', NULL, '1 millisecond')).token,
                     '{"ok": true}', 200, 'demo-ops');
SELECT pg_sleep(0.01);
SELECT scope, state, keys, expired FROM idem.key_stats WHERE scope = 'demo-ops';

-- idem.maintain() deletes them (and finished outbox events), in short batches.
SELECT * FROM idem.maintain();
SELECT scope, state, keys, expired FROM idem.key_stats WHERE scope = 'demo-ops';

-- idem.consumer_lag: what each consumer has not finished yet.
SELECT idem.subscribe('demo-ops-relay', ARRAY['demo-ops']);
SELECT idem.emit('demo-ops', '{"n": 1}') > 0 AS emitted;
SELECT consumer, pending, oldest_pending_age IS NOT NULL AS has_age
  FROM idem.consumer_lag WHERE consumer = 'demo-ops-relay';
SELECT idem.unsubscribe('demo-ops-relay');

-- An application role gets the functions and views, never the tables, and
-- only the scopes and topics granted to it.
CREATE ROLE demo_ops_app;
SELECT idem.grant_usage('demo_ops_app', scopes => ARRAY['demo-ops', 'demo-ops/%'],
                        topics => ARRAY['demo-ops']);
SET ROLE demo_ops_app;
SELECT outcome FROM idem.reserve('demo-ops-2', NULL, 'demo-ops');
SELECT outcome FROM idem.reserve('demo-ops-3', NULL, 'billing');
SELECT idem.emit('billing', '{}');
SELECT scope, state, keys FROM idem.key_stats;
DELETE FROM idem.keys;
SELECT * FROM idem.maintain();
RESET ROLE;
SELECT idem.revoke_usage('demo_ops_app');
DROP OWNED BY demo_ops_app;
DROP ROLE demo_ops_app;
