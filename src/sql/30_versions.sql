
-- 30_versions.sql: version-checked updates (src/version_guard.c)
--
-- idem.version_guard() is the row trigger; enforce_version() and
-- unenforce_version() install and remove it.  They run with the caller's
-- privileges (not SECURITY DEFINER): only a table's owner may change its
-- guard, and CREATE TRIGGER checks the caller's EXECUTE on version_guard().

CREATE FUNCTION idem.version_guard()
RETURNS trigger
AS 'MODULE_PATHNAME', 'idem_version_guard'
LANGUAGE C VOLATILE PARALLEL SAFE;

COMMENT ON FUNCTION idem.version_guard() IS
'Row trigger installed by idem.enforce_version: bumps the version of a row that was read at its current version, refuses stale (ID010) and, in strict mode, blind (ID011) updates';

CREATE FUNCTION idem.enforce_version(tbl regclass,
                                     version_column name DEFAULT 'version',
                                     mode text DEFAULT 'strict')
RETURNS void
AS 'MODULE_PATHNAME', 'idem_enforce_version'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.enforce_version(regclass, name, text) IS
'Install (or reconfigure) the version guard trigger idem_version_guard on a table the caller owns; mode is strict or auto';

CREATE FUNCTION idem.unenforce_version(tbl regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'idem_unenforce_version'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.unenforce_version(regclass) IS
'Remove the version guard installed by idem.enforce_version from a table the caller owns (a NOTICE if it has none)';

REVOKE ALL ON FUNCTION idem.version_guard() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.enforce_version(regclass, name, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.unenforce_version(regclass) FROM PUBLIC;
