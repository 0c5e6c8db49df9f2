
-- 15_privileges.sql: least privilege (SPEC.md section 4, src/privileges.c)
--
-- EXECUTE on the functions says whether a role may use pg_idem; idem.grants
-- says on what: one row per role, written by idem.grant_usage(), with the
-- LIKE patterns of the scopes whose keys it may use and of the topics it may
-- emit to and subscribe to (NULL: all).  A role's rights are the union of
-- the rows of the roles whose privileges it has (itself, and the roles it
-- inherits from).  Consumers belong to the role that subscribed them
-- (idem.consumers.owner, 40_outbox.sql).  This fragment comes before the
-- views, which show each role only what it may use.

-- The role's name is kept as regrole, so that pg_dump writes it by name and
-- a restore into another cluster (other role OIDs) finds the same role.
CREATE TABLE idem.grants (
    role       regrole PRIMARY KEY,
    scopes     text[] COLLATE pg_catalog."C",   -- LIKE patterns; NULL: every scope
    topics     text[] COLLATE pg_catalog."C",   -- LIKE patterns; NULL: every topic
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);

COMMENT ON TABLE idem.grants IS
'What each role may use: LIKE patterns of idempotency scopes and outbox topics (NULL: all); written by idem.grant_usage()';

-- pg_dump keeps its rows: registered in 90_operations.sql, after the other
-- capabilities' tables, so that pg_extension.extconfig lists the tables in
-- the same order in a fresh install and in a database updated from 0.1.

REVOKE ALL ON TABLE idem.grants FROM PUBLIC;

-- Writing rows sends no cache invalidation by itself; this trigger makes
-- every session drop the rights it cached (src/privileges.c) when the
-- writing transaction commits.  It runs no SQL.
CREATE FUNCTION idem.grants_changed()
RETURNS trigger
AS 'MODULE_PATHNAME', 'idem_grants_changed'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

COMMENT ON FUNCTION idem.grants_changed() IS
'Statement trigger of idem.grants: makes every session drop its cached pg_idem rights when the grants change';

REVOKE ALL ON FUNCTION idem.grants_changed() FROM PUBLIC;

CREATE TRIGGER grants_changed
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON idem.grants
FOR EACH STATEMENT EXECUTE FUNCTION idem.grants_changed();
