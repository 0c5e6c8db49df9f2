
-- 50_invariants.sql: commit-time invariants (src/invariants.c)
--
-- idem.invariant and idem.invariant_watch are the catalog: written only by
-- enforce_invariant() and unenforce_invariant() (as the extension's owner,
-- after checking that the caller owns the watched tables), read by the C
-- code directly.  Tables are kept as regclass, so pg_dump writes their names
-- and a restore finds them again under their new OIDs.  The triggers on the
-- watched tables are ordinary triggers, dumped with their tables.

CREATE TABLE idem.invariant (
    name    text PRIMARY KEY
            CONSTRAINT invariant_name_length
            CHECK (pg_catalog.octet_length(name) BETWEEN 1 AND 255),
    "check" text NOT NULL,
    message text,
    valid   boolean NOT NULL,
    owner   regrole NOT NULL
);

COMMENT ON TABLE idem.invariant IS
'Invariants declared with idem.enforce_invariant(): a check query per group of rows, run at commit';

CREATE TABLE idem.invariant_watch (
    invariant text NOT NULL,
    tbl       regclass NOT NULL,
    columns   name[] NOT NULL,
    PRIMARY KEY (invariant, tbl)
);

COMMENT ON TABLE idem.invariant_watch IS
'The tables each invariant watches, with the columns that name a group in them ($1..$n of the check)';

-- No foreign key to idem.invariant: the C code writes both tables together,
-- and a foreign key's internal triggers would be named by OID, which no two
-- installations share.

SELECT pg_catalog.pg_extension_config_dump('idem.invariant', '');
SELECT pg_catalog.pg_extension_config_dump('idem.invariant_watch', '');

CREATE VIEW idem.invariants AS
SELECT i.name,
       i."check",
       (SELECT pg_catalog.jsonb_object_agg(w.tbl::text, pg_catalog.to_jsonb(w.columns))
          FROM idem.invariant_watch w
         WHERE w.invariant OPERATOR(pg_catalog.=) i.name) AS watch,
       i.owner,
       i.valid,
       i.message
  FROM idem.invariant i;

COMMENT ON VIEW idem.invariants IS
'Declared invariants: name, check, watched tables with their group columns, the role the check runs as, whether existing data was validated, and the hint of a violation';

-- The trigger enforce_invariant() puts on every watched table: AFTER
-- INSERT OR UPDATE OR DELETE FOR EACH ROW (records the touched groups) and
-- BEFORE TRUNCATE FOR EACH STATEMENT (refuses).
CREATE FUNCTION idem.invariant_touch()
RETURNS trigger
AS 'MODULE_PATHNAME', 'idem_invariant_touch'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.invariant_touch() IS
'Trigger installed by idem.enforce_invariant: records the groups a transaction touches, for the check at commit, and refuses TRUNCATE';

-- enforce_invariant() and unenforce_invariant() run with the caller's
-- privileges (only the owner of the watched tables may declare), and write
-- the catalog as the extension's owner from C.
CREATE FUNCTION idem.enforce_invariant(name text, "check" text, watch jsonb,
                                       message text DEFAULT NULL,
                                       valid boolean DEFAULT true)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_enforce_invariant'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.enforce_invariant(text, text, jsonb, text, boolean) IS
'Declare (or declare again) an invariant: a SELECT returning one boolean for the group $1..$n, checked at commit for every group a transaction touched in the watched tables';

CREATE FUNCTION idem.unenforce_invariant(name text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'idem_unenforce_invariant'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.unenforce_invariant(text) IS
'Drop an invariant and the triggers no other invariant needs; false if there was none of that name';

CREATE FUNCTION idem.check_invariants()
RETURNS void
AS 'MODULE_PATHNAME', 'idem_check_invariants'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.check_invariants() IS
'Check now the groups this transaction touched (ID030 on a violation); COMMIT checks them again';

-- The event triggers that keep an invariant from outliving what it reads.
-- SECURITY DEFINER: any role's DDL fires them, and they read and write the
-- catalog.
CREATE FUNCTION idem.invariant_sql_drop()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'idem_invariant_sql_drop'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.invariant_sql_drop() IS
'Event trigger: drops (with a NOTICE) an invariant whose watched table, column or check dependency was dropped; refuses dropping its triggers';

CREATE FUNCTION idem.invariant_ddl_end()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'idem_invariant_ddl_end'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.invariant_ddl_end() IS
'Event trigger: refuses a change that would break an invariant''s check; guards new partitions of watched tables against TRUNCATE';

CREATE EVENT TRIGGER idem_invariant_sql_drop ON sql_drop
    EXECUTE FUNCTION idem.invariant_sql_drop();

CREATE EVENT TRIGGER idem_invariant_ddl_end ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'ALTER SCHEMA', 'ALTER VIEW',
                 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE',
                 'ALTER FUNCTION', 'ALTER PROCEDURE', 'ALTER ROUTINE',
                 'ALTER AGGREGATE', 'ALTER OPERATOR', 'ALTER TYPE',
                 'ALTER DOMAIN', 'ALTER COLLATION')
    EXECUTE FUNCTION idem.invariant_ddl_end();

-- Not SECURITY DEFINER: it resolves the names of the DROP with the caller's
-- search_path, as DROP does, and reads only the tables' own triggers.
CREATE FUNCTION idem.invariant_drop_start()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'idem_invariant_drop_start'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.invariant_drop_start() IS
'Event trigger: refuses DROP TABLE of a partition of a watched table while it has rows (the groups they leave would not be checked)';

CREATE EVENT TRIGGER idem_invariant_drop_start ON ddl_command_start
    WHEN TAG IN ('DROP TABLE')
    EXECUTE FUNCTION idem.invariant_drop_start();

REVOKE ALL ON TABLE idem.invariant FROM PUBLIC;
REVOKE ALL ON TABLE idem.invariant_watch FROM PUBLIC;
REVOKE ALL ON TABLE idem.invariants FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.invariant_touch() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.enforce_invariant(text, text, jsonb, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.unenforce_invariant(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.check_invariants() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.invariant_sql_drop() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.invariant_ddl_end() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.invariant_drop_start() FROM PUBLIC;
