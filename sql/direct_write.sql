-- The C write paths give exactly what the equivalent SQL statement gives,
-- or do not run (src/direct_write.c).  A table altered after CREATE
-- EXTENSION is written by the executor (emit) or refused (the key
-- functions, 0A000), and the cached shape follows ALTER TABLE at once.
\set VERBOSITY default

-- idem.outbox with an added NOT NULL DEFAULT column: emit() runs the INSERT,
-- so the default is filled as the INSERT would fill it.
ALTER TABLE idem.outbox ADD COLUMN source text NOT NULL DEFAULT 'app';
SELECT idem.emit('dw.topic', '{"n": 1}') > 0 AS emitted;
SELECT topic, payload, source FROM idem.outbox WHERE topic = 'dw.topic';

-- A CHECK constraint is checked (23514), and the failed emit leaves nothing.
ALTER TABLE idem.outbox ADD CONSTRAINT small_payload CHECK (pg_column_size(payload) < 100);
\set VERBOSITY terse
SELECT idem.emit('dw.topic', jsonb_build_object('big', repeat('x', 200)));
\set VERBOSITY default
SELECT count(*) FROM idem.outbox WHERE topic = 'dw.topic';
ALTER TABLE idem.outbox DROP CONSTRAINT small_payload;

-- A user trigger fires.
CREATE FUNCTION public.dw_seen() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'trigger saw topic %', NEW.topic; RETURN NEW; END $$;
CREATE TRIGGER dw_seen BEFORE INSERT ON idem.outbox
  FOR EACH ROW EXECUTE FUNCTION public.dw_seen();
SELECT idem.emit('dw.topic', '{"n": 2}') > 0 AS emitted;
DROP TRIGGER dw_seen ON idem.outbox;

-- Back to the extension's shape: the direct path again, same rows.
ALTER TABLE idem.outbox DROP COLUMN source;
SELECT idem.emit('dw.topic', '{"n": 3}') > 0 AS emitted;
SELECT topic, payload FROM idem.outbox WHERE topic = 'dw.topic' ORDER BY id;
DELETE FROM idem.outbox WHERE topic = 'dw.topic';

-- idem.keys with a trigger: the key functions refuse, naming it, and
-- change nothing.
SELECT token AS tok FROM idem.reserve('dw-key') \gset
CREATE TRIGGER dw_seen BEFORE UPDATE ON idem.keys
  FOR EACH ROW EXECUTE FUNCTION public.dw_seen();
SELECT idem.reserve('dw-other');
SELECT idem.complete('dw-key', :tok, '{"ok": true}');
SELECT state FROM idem.keys WHERE key IN ('dw-key', 'dw-other');
DROP TRIGGER dw_seen ON idem.keys;

-- An added column with a default, a CHECK constraint, row security and a
-- NOT NULL on a nullable column are refused too.
ALTER TABLE idem.keys ADD COLUMN note text NOT NULL DEFAULT 'x';
SELECT idem.reserve('dw-other');
ALTER TABLE idem.keys DROP COLUMN note;
ALTER TABLE idem.keys ADD CONSTRAINT short_keys CHECK (length(key) < 10);
SELECT idem.reserve('dw-other');
ALTER TABLE idem.keys DROP CONSTRAINT short_keys;
ALTER TABLE idem.keys ENABLE ROW LEVEL SECURITY;
SELECT idem.reserve('dw-other');
ALTER TABLE idem.keys DISABLE ROW LEVEL SECURITY;
BEGIN;
DELETE FROM idem.keys;
ALTER TABLE idem.keys ALTER COLUMN response SET NOT NULL;
SELECT idem.reserve('dw-other');
ROLLBACK;

-- A column dropped and added again is not one pg_idem created either; the
-- map is rebuilt from the table as it is, never from a stale cache.
ALTER TABLE idem.keys DROP COLUMN checkpoint;
SELECT idem.complete('dw-key', :tok, '{"ok": true}');
ALTER TABLE idem.keys ADD COLUMN checkpoint jsonb;
SELECT idem.complete('dw-key', :tok, '{"ok": true}');
SELECT state, response FROM idem.keys WHERE key = 'dw-key';

-- A published table without a replica identity: complete() is an UPDATE,
-- refused with 55000 exactly as the UPDATE is.
SELECT token AS tok2 FROM idem.reserve('dw-key2') \gset
ALTER TABLE idem.keys REPLICA IDENTITY NOTHING;
CREATE PUBLICATION dw_pub FOR TABLE idem.keys;
SELECT idem.complete('dw-key2', :tok2, '{"ok": true}');
UPDATE idem.keys SET status = 1 WHERE false;
DROP PUBLICATION dw_pub;
ALTER TABLE idem.keys REPLICA IDENTITY DEFAULT;
SELECT idem.complete('dw-key2', :tok2, '{"ok": true}');

SELECT idem.forget('dw-key'), idem.forget('dw-key2');
DROP FUNCTION public.dw_seen();

-- A BEFORE INSERT trigger on idem.outbox that drops the row: emit() gives
-- what INSERT ... RETURNING id gives, no event and no id (NULL).
CREATE FUNCTION public.dw_drop() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER dw_drop BEFORE INSERT ON idem.outbox
  FOR EACH ROW EXECUTE FUNCTION public.dw_drop();
SELECT idem.emit('dw.dropped', '{}') IS NULL AS no_id;
SELECT count(*) FROM idem.outbox WHERE topic = 'dw.dropped';
DROP TRIGGER dw_drop ON idem.outbox;
DROP FUNCTION public.dw_drop();

-- Another collation or a type modifier on a column of idem.keys: the
-- lookups and the index would disagree, or the value would be rounded
-- only by the statement.  Refused.
ALTER TABLE idem.keys ALTER COLUMN key TYPE text COLLATE "POSIX";
SELECT idem.reserve('dw-other');
ALTER TABLE idem.keys ALTER COLUMN key TYPE text COLLATE "C";
ALTER TABLE idem.keys ALTER COLUMN locked_until TYPE timestamptz(0);
SELECT idem.reserve('dw-other');
ALTER TABLE idem.keys ALTER COLUMN locked_until TYPE timestamptz;
SELECT outcome FROM idem.reserve('dw-other');
SELECT idem.forget('dw-other');
