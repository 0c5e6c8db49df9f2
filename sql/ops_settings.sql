-- The idem.* settings (SPEC.md section 4): units, bounds, who may change them.
--
-- The settings exist once the library is loaded: at server start with
-- shared_preload_libraries, else at the first call of a pg_idem function in
-- the session.  LOAD makes this file the same either way, except for
-- idem.maintenance_database, which is fixed at server start (postmaster)
-- only when preloaded and is reloadable (sighup, inert: there is no worker)
-- otherwise: expected/ops_settings_1.out is the output without preload.
LOAD 'pg_idem';

-- Defaults, shown in their natural units.
SHOW idem.ttl;
SHOW idem.lease;
SHOW idem.outbox_retention;
SHOW idem.maintenance_interval;
SHOW idem.maintenance_database;

-- Every setting with its unit, bounds and context.
SELECT name, setting, unit, min_val, max_val, context, short_desc
  FROM pg_settings WHERE name LIKE 'idem.%' ORDER BY name;

-- Durations accept units; a bare number is in the setting's own unit.
SET idem.lease = '2s';
SHOW idem.lease;
SET idem.lease = 500;
SHOW idem.lease;
SET idem.ttl = '90min';
SHOW idem.ttl;
SET idem.ttl = '2 d';
SHOW idem.ttl;

-- A lease or ttl must be positive: zero and negative values are refused.
SET idem.lease = '0';
SET idem.lease = '-1s';
SET idem.ttl = 0;
SET idem.ttl = '-5min';
-- Too small to be a whole millisecond / second rounds to zero: refused too.
SET idem.lease = '0.1ms';
SET idem.ttl = '100ms';
-- Out of range (a lease is at most 24 days, a ttl about 68 years) and nonsense.
SET idem.lease = '25d';
SET idem.ttl = '25000d';
SET idem.lease = 'soon';
SET idem.ttl = '1 year';
-- A refused SET leaves the setting as it was.
SHOW idem.lease;
RESET idem.lease;
RESET idem.ttl;
SHOW idem.lease;

-- The worker's settings are server-wide: interval on reload, database at start.
SET idem.maintenance_interval = '5s';
SET idem.maintenance_database = 'other';

-- Retention decides what maintenance deletes: superusers only.
SET idem.outbox_retention = '1h';
SHOW idem.outbox_retention;
RESET idem.outbox_retention;
CREATE ROLE regress_idem_settings;
SET ROLE regress_idem_settings;
SET idem.outbox_retention = '1h';
-- Per-call defaults are any session's own business.
SET idem.lease = '10s';
SHOW idem.lease;
RESET ROLE;
RESET idem.lease;
DROP ROLE regress_idem_settings;

-- The idem prefix is reserved: a typo is an error, not a silent placeholder.
SET idem.leese = '10s';
SET idem.ttl_seconds = 5;
