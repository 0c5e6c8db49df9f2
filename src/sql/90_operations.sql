
-- 90_operations.sql: maintenance, privileges for application roles, and the
-- final privilege sweep.  This fragment runs last, after every capability's
-- objects exist.

-- pg_dump keeps the grants (idem.grants, 15_privileges.sql), registered
-- last as ALTER EXTENSION ... UPDATE from 0.1 registers them.
SELECT pg_catalog.pg_extension_config_dump('idem.grants', '');

CREATE FUNCTION idem.maintain()
RETURNS TABLE (task text, rows bigint)
AS 'MODULE_PATHNAME', 'idem_maintain'
LANGUAGE C VOLATILE PARALLEL UNSAFE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION idem.maintain() IS
'Delete expired idempotency keys and finished outbox events in bounded batches; one row per task with the rows deleted';

-- idem.grant_usage(role, scopes, topics): what an application role needs, and
-- nothing more.  It runs with the caller's rights (only an owner of the idem
-- objects can grant on them and write idem.grants) and takes the role as
-- regrole, so the name was resolved and is quoted again with %I: odd names
-- cannot inject anything.  Not granted to PUBLIC either (see the sweep
-- below).
--
-- scopes and topics are LIKE patterns (src/privileges.c); NULL is every
-- scope or topic (0.1's meaning), an empty array none.  A call states the
-- role's whole grant: it replaces what an earlier call gave the same role.
CREATE FUNCTION idem.grant_usage(role regrole, scopes text[] DEFAULT NULL,
                                 topics text[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- The application-facing functions: keys, outbox, consumers, and the
    -- early invariant check.  Not purge,
    -- maintain, enforce_version, unenforce_version, grant_usage or
    -- revoke_usage.
    app_functions CONSTANT name[] := ARRAY[
        'reserve', 'complete', 'release', 'checkpoint', 'forget', 'fingerprint',
        'emit', 'subscribe', 'unsubscribe', 'next_batch', 'finish_batch',
        'check_invariants'];
    app_views CONSTANT name[] := ARRAY['key_stats', 'consumer_lag'];
    grantee name;
    fn regprocedure;
    obj name;
    found_names name[] := '{}';
    kind text;
    patterns text[];
    pattern text;
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

    -- Every pattern is checked before anything is granted.
    FOREACH kind IN ARRAY ARRAY['scope', 'topic'] LOOP
        patterns := CASE kind WHEN 'scope' THEN scopes ELSE topics END;
        CONTINUE WHEN patterns IS NULL;
        IF pg_catalog.array_ndims(patterns) OPERATOR(pg_catalog.>) 1 THEN
            RAISE EXCEPTION '% patterns must be a one-dimensional array', kind
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = pg_catalog.format('The array given has %s dimensions.',
                                                 pg_catalog.array_ndims(patterns));
        END IF;
        FOREACH pattern IN ARRAY patterns LOOP
            IF pattern IS NULL THEN
                RAISE EXCEPTION '% patterns must not contain null', kind
                    USING ERRCODE = 'null_value_not_allowed',
                          HINT = pg_catalog.format('Pass NULL instead of the array to grant every %s, or an empty array for none.', kind);
            END IF;
            -- A name is at most 255 bytes; a pattern matching it, with every
            -- character escaped, at most twice that.
            IF pg_catalog.octet_length(pattern) OPERATOR(pg_catalog.>) 510 THEN
                RAISE EXCEPTION '% pattern is too long', kind
                    USING ERRCODE = 'string_data_right_truncation',
                          DETAIL = pg_catalog.format('The pattern is %s bytes long; the limit is 510 bytes (a %s is at most 255).',
                                                     pg_catalog.octet_length(pattern), kind);
            END IF;
            -- LIKE's one syntax error: an escape character (the backslash,
            -- chr(92)) with nothing to escape, i.e. an odd number of them at
            -- the end.
            IF (pg_catalog.octet_length(pattern) OPERATOR(pg_catalog.-)
                pg_catalog.octet_length(pg_catalog.rtrim(pattern, pg_catalog.chr(92))))
               OPERATOR(pg_catalog.%) 2 OPERATOR(pg_catalog.=) 1 THEN
                RAISE EXCEPTION '% pattern "%" ends with an escape character', kind, pattern
                    USING ERRCODE = 'invalid_escape_sequence',
                          HINT = 'Patterns use LIKE syntax: % matches any text, _ one character, and a backslash makes the next character literal (two backslashes for a backslash).';
            END IF;
            IF kind OPERATOR(pg_catalog.=) 'topic' AND pattern OPERATOR(pg_catalog.=) '' THEN
                RAISE EXCEPTION 'topic pattern must not be empty'
                    USING ERRCODE = 'invalid_parameter_value',
                          DETAIL = 'A topic is 1 to 255 bytes long: the empty pattern matches none.';
            END IF;
        END LOOP;
    END LOOP;

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

    -- What it may use: this call's patterns, stored 1-based, replacing the
    -- role's earlier ones.  Rows of dropped roles go (their OID could be
    -- given to a new role).
    INSERT INTO idem.grants AS g (role, scopes, topics)
    VALUES (grant_usage.role,
            CASE WHEN grant_usage.scopes IS NOT NULL
                 THEN ARRAY(SELECT pg_catalog.unnest(grant_usage.scopes)) END,
            CASE WHEN grant_usage.topics IS NOT NULL
                 THEN ARRAY(SELECT pg_catalog.unnest(grant_usage.topics)) END)
    ON CONFLICT ON CONSTRAINT grants_pkey DO UPDATE
       SET scopes = EXCLUDED.scopes, topics = EXCLUDED.topics,
           granted_at = pg_catalog.now();
    DELETE FROM idem.grants g
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles r
                        WHERE r.oid OPERATOR(pg_catalog.=) g.role);
END;
$fn$;

COMMENT ON FUNCTION idem.grant_usage(regrole, text[], text[]) IS
'Grant a role what an application needs (schema usage, the key, outbox and consumer functions, the monitoring views), on the scopes and topics matching the LIKE patterns given (NULL: all)';

-- idem.revoke_usage(role): take back what grant_usage() gave.  The role may
-- keep access through a role it is a member of, as with GRANT.
CREATE FUNCTION idem.revoke_usage(role regrole)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    app_functions CONSTANT name[] := ARRAY[
        'reserve', 'complete', 'release', 'checkpoint', 'forget', 'fingerprint',
        'emit', 'subscribe', 'unsubscribe', 'next_batch', 'finish_batch',
        'check_invariants'];
    app_views CONSTANT name[] := ARRAY['key_stats', 'consumer_lag'];
    grantee name;
    fn regprocedure;
    obj name;
    had boolean;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'role must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT r.rolname INTO grantee FROM pg_catalog.pg_roles r
     WHERE r.oid OPERATOR(pg_catalog.=) role;
    IF grantee IS NULL THEN
        RAISE EXCEPTION 'role with OID % does not exist', role::oid
            USING ERRCODE = 'undefined_object';
    END IF;

    DELETE FROM idem.grants g WHERE g.role OPERATOR(pg_catalog.=) revoke_usage.role;
    had := FOUND;
    FOR fn IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
         WHERE p.pronamespace OPERATOR(pg_catalog.=) 'idem'::regnamespace
           AND p.proname OPERATOR(pg_catalog.=) ANY (app_functions)
         ORDER BY p.oid
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %I', fn, grantee);
    END LOOP;
    FOREACH obj IN ARRAY app_views LOOP
        EXECUTE pg_catalog.format('REVOKE SELECT ON TABLE idem.%I FROM %I', obj, grantee);
    END LOOP;
    EXECUTE pg_catalog.format('REVOKE USAGE ON SCHEMA idem FROM %I', grantee);
    RETURN had;
END;
$fn$;

COMMENT ON FUNCTION idem.revoke_usage(regrole) IS
'Take back what idem.grant_usage() gave a role: its scopes and topics, the functions, the views and the schema; true when it had a grant';

REVOKE ALL ON FUNCTION idem.maintain() FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.grant_usage(regrole, text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION idem.revoke_usage(regrole) FROM PUBLIC;

-- The final sweep: nothing in schema idem is usable by PUBLIC, not even the
-- schema (SPEC.md section 4: EXECUTE is not granted to PUBLIC; a role gets
-- what it needs from idem.grant_usage()).  Functions get EXECUTE for PUBLIC
-- by default when created, so every fragment revokes its own, and this
-- catches anything a fragment forgot.  Upgrade scripts repeat these lines.
-- A role's first call without a grant fails with PostgreSQL's own
-- "permission denied for schema idem"; the library adds a HINT naming
-- idem.grant_usage() to it where it is loaded (src/privileges.c).
REVOKE ALL ON SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA idem FROM PUBLIC;
