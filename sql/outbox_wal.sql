-- idem.outbox_wal: whether idem.emit() also, or only, writes each event as a
-- transactional logical decoding message (docs/outbox-wal.md).  What the
-- messages contain, and how rollbacks, savepoints and two-phase commit
-- treat them, is tested against real decoders in test/t/061_outbox_wal.pl;
-- this file checks the setting itself.
LOAD 'pg_idem';

-- Off by default: emit() writes a row of idem.outbox, as before.
SHOW idem.outbox_wal;
SELECT name, setting, enumvals, boot_val, context, vartype
  FROM pg_settings WHERE name = 'idem.outbox_wal';

-- Three values only.  A boolean is refused: "on" would not say whether the
-- row is kept, and a consumer of the table would lose events if it were not.
SET idem.outbox_wal = on;
SET idem.outbox_wal = true;
SET idem.outbox_wal = 1;
SET idem.outbox_wal = '';
SET idem.outbox_wal = 'wal';
SET idem.outbox_wal = 'only,also';
-- ONLY is a reserved word in SQL: the value must be quoted ('only').
SET idem.outbox_wal = only;
-- A refused SET leaves the setting as it was.
SHOW idem.outbox_wal;

-- Per role and per database, a bad value is refused when it is stored.
CREATE ROLE regress_outbox_wal;
ALTER ROLE regress_outbox_wal SET idem.outbox_wal = 'sometimes';
ALTER DATABASE contrib_regression SET idem.outbox_wal = 'yes';
SELECT count(*) FROM pg_db_role_setting s
  WHERE s.setrole = 'regress_outbox_wal'::regrole
     OR EXISTS (SELECT FROM unnest(s.setconfig) c WHERE c LIKE 'idem.outbox_wal%');
DROP ROLE regress_outbox_wal;

-- off is always accepted (whatever wal_level), also per transaction, and
-- emit() then returns the id of the row it wrote.
BEGIN;
SET LOCAL idem.outbox_wal = 'OFF';
SHOW idem.outbox_wal;
SELECT idem.emit('wal.regress', '{"n": 1}') AS id \gset
SELECT topic, payload FROM idem.outbox WHERE id = :id;
ROLLBACK;
SHOW idem.outbox_wal;
