
-- 90_operations.sql: maintenance, privileges for application roles, and the
-- final privilege sweep.  This fragment runs last, after every capability's
-- objects exist.

CREATE FUNCTION idem.maintain()
RETURNS TABLE (task text, rows bigint)
AS 'MODULE_PATHNAME', 'idem_maintain'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.maintain() IS
'Delete expired idempotency keys and finished outbox events in bounded batches; one row per task with the rows deleted';

-- idem.grant_usage(role): what an application role needs, and nothing more.
-- It runs with the caller's rights (only an owner of the idem objects can
-- grant on them) and takes the role as regrole, so the name was resolved and
-- is quoted again with %I: odd names cannot inject anything.  Not granted to
-- PUBLIC either (see the sweep below).
CREATE FUNCTION idem.grant_usage(role regrole)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- The application-facing functions: keys, outbox, consumers.  Not purge,
    -- maintain, enforce_version, unenforce_version or grant_usage itself.
    app_functions CONSTANT name[] := ARRAY[
        'reserve', 'complete', 'release', 'checkpoint', 'forget', 'fingerprint',
        'emit', 'subscribe', 'unsubscribe', 'next_batch', 'finish_batch'];
    app_views CONSTANT name[] := ARRAY['key_stats', 'consumer_lag'];
    grantee name;
    fn regprocedure;
    obj name;
    found_names name[] := '{}';
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT r.rolname INTO grantee FROM pg_catalog.pg_roles r
     WHERE r.oid OPERATOR(pg_catalog.=) role;
    IF grantee IS NULL THEN
        -- A regrole held across a DROP ROLE.
        RAISE EXCEPTION 'role with OID % does not exist', role::oid
            USING ERRCODE = 'undefined_object';
    END IF;

    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA idem TO %I', grantee);

    -- Every overload of each name, by signature.
    FOR fn, obj IN
        SELECT p.oid::regprocedure, p.proname FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'idem'::regnamespace
           AND p.proname OPERATOR(pg_catalog.=) ANY (app_functions)
         ORDER BY p.oid
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', fn, grantee);
        found_names := found_names OPERATOR(pg_catalog.||) obj;
    END LOOP;
    FOREACH obj IN ARRAY app_functions LOOP
        IF NOT obj OPERATOR(pg_catalog.=) ANY (found_names) THEN
            RAISE EXCEPTION 'pg_idem: function idem.%() is missing', obj
                USING ERRCODE = 'internal_error';
        END IF;
    END LOOP;

    FOREACH obj IN ARRAY app_views LOOP
        EXECUTE pg_catalog.format('GRANT SELECT ON TABLE idem.%I TO %I', obj, grantee);
    END LOOP;
END;
$fn$;

COMMENT ON FUNCTION idem.grant_usage(regrole) IS
'Grant a role what an application needs: schema usage, the key, outbox and consumer functions, and the monitoring views';

REVOKE ALL ON FUNCTION idem.maintain() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.grant_usage(regrole) FROM PUBLIC;

-- The final sweep: nothing in schema idem is usable by PUBLIC.  Functions get
-- EXECUTE for PUBLIC by default when created, so every fragment revokes its
-- own, and this catches anything a fragment forgot.  Upgrade scripts repeat
-- these three lines.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA idem FROM PUBLIC;
