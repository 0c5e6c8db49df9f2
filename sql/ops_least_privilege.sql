-- Least privilege (SPEC.md section 4, 0.2): scopes, topics and consumers
-- belong to roles.  Two services share one database: billing (role
-- regress_lp_a) and shipping (regress_lp_b).  Each may use only the keys of
-- its scopes, emit to and read only its topics, and use only its consumers;
-- every refusal is 42501 and changes nothing.
\pset null '(null)'
CREATE ROLE regress_lp_a;
CREATE ROLE regress_lp_b;
SELECT idem.grant_usage('regress_lp_a', scopes => ARRAY['billing', 'billing/%'],
                        topics => ARRAY['billing', 'billing.%']);
SELECT idem.grant_usage('regress_lp_b', scopes => ARRAY['shipping'], topics => ARRAY['shipping']);
SELECT role, scopes, topics FROM idem.grants WHERE role::text LIKE 'regress_lp%' ORDER BY role::text;

------------------------------------------------------------------------------
-- Billing works in its own scopes and topics.
------------------------------------------------------------------------------
SET ROLE regress_lp_a;
SELECT (idem.reserve('charge-1', '{"amount": 100}', 'billing')).token AS charge1_token \gset
SELECT idem.complete('charge-1', :charge1_token, '{"charge": "ch_1"}', 201, 'billing');
-- charge-2 stays held, with a recovery point
SELECT (idem.reserve('charge-2', '{"amount": 5}', 'billing/eu', '1 hour')).token AS charge2_token \gset
SELECT idem.checkpoint('charge-2', :charge2_token, 'card_charged', '{"charge": "ch_2"}', 'billing/eu');
SELECT idem.subscribe('billing-relay', ARRAY['billing']);
SELECT idem.emit('billing', '{"n": 1}') > 0 AS emitted;
SELECT batch_id AS billing_batch, payload FROM idem.next_batch('billing-relay') \gset
\echo :payload
SELECT scope, state, keys FROM idem.key_stats ORDER BY scope, state;
SELECT consumer, topics, pending, owner FROM idem.consumer_lag;
RESET ROLE;

------------------------------------------------------------------------------
-- Shipping tries every function on billing's scopes, topics and consumer.
------------------------------------------------------------------------------
SET ROLE regress_lp_b;
-- Replaying billing's key would read its stored response.
SELECT * FROM idem.reserve('charge-1', '{"amount": 100}', 'billing');
-- A new key in billing's scope.
SELECT * FROM idem.reserve('charge-3', NULL, 'billing/us');
-- The holder's functions, even with the right token.
SELECT idem.complete('charge-2', :charge2_token, '{"forged": true}', 200, 'billing/eu');
SELECT idem.release('charge-2', :charge2_token, 'billing/eu');
SELECT idem.checkpoint('charge-2', :charge2_token, 'forged', NULL, 'billing/eu');
-- Forgetting billing's completed key would let the request charge twice.
SELECT idem.forget('charge-1', 'billing');
-- Billing's topics.
SELECT idem.emit('billing', '{"forged": true}');
SELECT idem.emit('billing.refunds', '{"forged": true}');
-- Billing's consumer: read, finish, re-subscribe, unsubscribe.
SELECT * FROM idem.next_batch('billing-relay');
SELECT idem.finish_batch('billing-relay', :billing_batch);
SELECT idem.subscribe('billing-relay', ARRAY['shipping']);
SELECT idem.unsubscribe('billing-relay');
-- Nor can a consumer of its own read billing's topics.
SELECT idem.subscribe('shipping-spy', ARRAY['shipping', 'billing']);
SELECT idem.subscribe('shipping-spy');
-- The views show it only its own scope and consumers: nothing yet.
SELECT scope, state, keys FROM idem.key_stats ORDER BY scope, state;
SELECT consumer FROM idem.consumer_lag;
-- What it may do, it does.
SELECT outcome FROM idem.reserve('parcel-1', NULL, 'shipping');
SELECT idem.subscribe('shipping-relay', ARRAY['shipping']);
SELECT scope, state, keys FROM idem.key_stats ORDER BY scope, state;
SELECT consumer, topics, owner FROM idem.consumer_lag;
RESET ROLE;

-- Nothing changed: billing's keys, events and consumer are as they were.
SELECT scope, key, state, response, recovery_point FROM idem.keys
 WHERE scope LIKE 'billing%' ORDER BY scope, key;
SELECT topic, payload FROM idem.outbox WHERE topic LIKE 'billing%' ORDER BY id;
SELECT name, topics, owner, batch_id = :billing_batch AS batch_still_open
  FROM idem.consumers WHERE name LIKE 'billing%' OR name LIKE 'shipping%' ORDER BY name;
-- The owner of pg_idem sees every scope and consumer.
SELECT scope, state, keys FROM idem.key_stats
 WHERE scope IN ('billing', 'billing/eu', 'shipping') ORDER BY scope, state;
SELECT consumer, owner FROM idem.consumer_lag
 WHERE consumer IN ('billing-relay', 'shipping-relay') ORDER BY consumer;

-- Billing carries on.
SET ROLE regress_lp_a;
SELECT outcome, response, status FROM idem.reserve('charge-1', '{"amount": 100}', 'billing');
SELECT idem.finish_batch('billing-relay', :billing_batch);
RESET ROLE;

------------------------------------------------------------------------------
-- Patterns use LIKE syntax: % any text, _ one character, a backslash makes
-- the next character literal.  Topics likewise.
------------------------------------------------------------------------------
CREATE ROLE regress_lp_c;
SELECT idem.grant_usage('regress_lp_c',
                        scopes => ARRAY['t_x', '100\%', 'a\_b', 'pre%', 'back\\slash', ''],
                        topics => ARRAY['orders.%', 'audit']);
-- Try a call as the current role: its outcome, or the refusal.
CREATE FUNCTION lp_try(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
    EXECUTE 'SELECT (' || call || ')::text' INTO r;
    RETURN coalesce(r, 'ok');
EXCEPTION WHEN insufficient_privilege THEN
    RETURN 'refused: ' || SQLERRM;
END $$;
SET ROLE regress_lp_c;
SELECT s AS scope, lp_try(format('(idem.reserve(%L, NULL, %L)).outcome', 'k-' || s, s)) AS reserve
  FROM unnest(ARRAY['t_x', 'tAx', 'tx', 't__x', '100%', '1000', 'a_b', 'aXb',
                    'pre', 'prefix', 'xpre', 'back\slash', 'backslash', '']) s;
SELECT t AS topic, lp_try(format('idem.emit(%L, %L) > 0', t, '{}')) AS emit
  FROM unnest(ARRAY['orders.eu', 'orders', 'audit', 'Audit', 'audit.x']) t;
RESET ROLE;

-- An empty array grants nothing of that kind: a relay that only reads.
SELECT idem.grant_usage('regress_lp_c', scopes => '{}', topics => ARRAY['audit']);
SET ROLE regress_lp_c;
SELECT outcome FROM idem.reserve('k-1', NULL, '');
SELECT idem.subscribe('audit-relay', ARRAY['audit']);
RESET ROLE;

------------------------------------------------------------------------------
-- Hostile input to grant_usage(): each is refused, and changes nothing.
------------------------------------------------------------------------------
SELECT idem.grant_usage('regress_lp_c', scopes => ARRAY['ok', NULL]);
SELECT idem.grant_usage('regress_lp_c', topics => ARRAY[NULL]::text[]);
SELECT idem.grant_usage('regress_lp_c', scopes => ARRAY[['a', 'b'], ['c', 'd']]);
SELECT idem.grant_usage('regress_lp_c', scopes => ARRAY[repeat('x', 511)]);
SELECT idem.grant_usage('regress_lp_c', scopes => ARRAY['ends-with-escape\']);
SELECT idem.grant_usage('regress_lp_c', scopes => ARRAY['three\\\']);
SELECT idem.grant_usage('regress_lp_c', topics => ARRAY['']);
SELECT idem.grant_usage(NULL, scopes => ARRAY['x']);
SELECT role, scopes, topics FROM idem.grants WHERE role = 'regress_lp_c'::regrole;
-- At the limits: a 510-byte pattern, an escaped backslash, a non-1 lower
-- bound (stored 1-based).
SELECT idem.grant_usage('regress_lp_c', scopes => ARRAY[repeat('x', 510), 'two\\'],
                        topics => '[0:1]={a,b}');
SELECT octet_length(scopes[1]) AS first_bytes, scopes[2], topics FROM idem.grants
 WHERE role = 'regress_lp_c'::regrole;

------------------------------------------------------------------------------
-- Grants to a group role serve its members; a consumer subscribed under the
-- group belongs to the group.
------------------------------------------------------------------------------
CREATE ROLE regress_lp_group;
CREATE ROLE regress_lp_member IN ROLE regress_lp_group;
CREATE ROLE regress_lp_noinherit NOINHERIT IN ROLE regress_lp_group;
SELECT idem.grant_usage('regress_lp_group', scopes => ARRAY['team/%'], topics => ARRAY['team']);
-- The two members hold EXECUTE of their own (by hand), so that what is
-- seen below is pg_idem's check, not PostgreSQL's EXECUTE check.
GRANT USAGE ON SCHEMA idem TO regress_lp_member, regress_lp_noinherit;
GRANT EXECUTE ON FUNCTION idem.reserve(text, jsonb, text, interval, interval),
                          idem.next_batch(text, integer)
   TO regress_lp_member, regress_lp_noinherit;
SET ROLE regress_lp_member;
SELECT outcome FROM idem.reserve('t-1', NULL, 'team/x');
SELECT idem.subscribe('member-relay', ARRAY['team']);
-- A member that does not inherit the group's privileges has none of them ...
SET ROLE regress_lp_noinherit;
SELECT outcome FROM idem.reserve('t-2', NULL, 'team/x');
-- ... until it becomes the group (SET ROLE): the rights checked are the
-- current role's.  A consumer subscribed so belongs to the group.
SET ROLE regress_lp_group;
SELECT outcome FROM idem.reserve('t-2', NULL, 'team/x');
SELECT idem.subscribe('team-relay', ARRAY['team']);
SET ROLE regress_lp_member;
SELECT count(*) FROM idem.next_batch('team-relay');
SELECT consumer, owner FROM idem.consumer_lag ORDER BY consumer;
-- member-relay belongs to the member alone: another member of the group
-- may not use it.
SET ROLE regress_lp_noinherit;
SELECT count(*) FROM idem.next_batch('member-relay');
-- Billing is not a member at all.
SET ROLE regress_lp_a;
SELECT count(*) FROM idem.next_batch('team-relay');
RESET ROLE;
-- Leaving the group takes its rights away at the next call.
REVOKE regress_lp_group FROM regress_lp_member;
SET ROLE regress_lp_member;
SELECT outcome FROM idem.reserve('t-3', NULL, 'team/x');
SELECT count(*) FROM idem.next_batch('team-relay');
RESET ROLE;

------------------------------------------------------------------------------
-- SECURITY DEFINER callers: inside such a function the current role is its
-- owner, and the owner's rights are checked, as PostgreSQL does.
------------------------------------------------------------------------------
CREATE FUNCTION lp_billing_forget(k text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER AS $$ SELECT idem.forget(k, 'billing') $$;
ALTER FUNCTION lp_billing_forget(text) OWNER TO regress_lp_a;
CREATE FUNCTION lp_shipping_forget(k text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER AS $$ SELECT idem.forget(k, 'billing') $$;
ALTER FUNCTION lp_shipping_forget(text) OWNER TO regress_lp_b;
CREATE FUNCTION lp_shipping_read() RETURNS bigint
LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM idem.next_batch('billing-relay') $$;
ALTER FUNCTION lp_shipping_read() OWNER TO regress_lp_b;
-- Billing's function, called by shipping, acts with billing's rights.
SET ROLE regress_lp_b;
SELECT lp_billing_forget('charge-0');
-- Shipping's functions, called by billing, act with shipping's rights.
SET ROLE regress_lp_a;
SELECT lp_shipping_forget('charge-1');
SELECT lp_shipping_read();
RESET ROLE;

------------------------------------------------------------------------------
-- A narrowed or revoked grant takes effect at the next call (other sessions:
-- test/specs/least_privilege_revoke.spec).
------------------------------------------------------------------------------
SET ROLE regress_lp_a;
SELECT outcome FROM idem.reserve('charge-4', NULL, 'billing/eu');
RESET ROLE;
SELECT idem.grant_usage('regress_lp_a', scopes => ARRAY['billing'], topics => ARRAY['billing.%']);
SET ROLE regress_lp_a;
SELECT outcome FROM idem.reserve('charge-5', NULL, 'billing/eu');
-- Its consumer reads topic billing, which it may no longer read.
SELECT count(*) FROM idem.next_batch('billing-relay');
RESET ROLE;
SELECT idem.revoke_usage('regress_lp_a');
SELECT idem.revoke_usage('regress_lp_a');
SET ROLE regress_lp_a;
SELECT outcome FROM idem.reserve('charge-6', NULL, 'billing');
-- EXECUTE granted by hand is not enough: the role has no grant.
RESET ROLE;
GRANT USAGE ON SCHEMA idem TO regress_lp_a;
GRANT EXECUTE ON FUNCTION idem.reserve(text, jsonb, text, interval, interval),
                          idem.next_batch(text, integer) TO regress_lp_a;
SET ROLE regress_lp_a;
SELECT outcome FROM idem.reserve('charge-6', NULL, 'billing');
SELECT count(*) FROM idem.next_batch('billing-relay');
RESET ROLE;

------------------------------------------------------------------------------
-- A consumer from before 0.2 has no owner: any role with a grant may use
-- it, and the first to re-subscribe it takes it.  An administrator
-- re-subscribing it does not.
------------------------------------------------------------------------------
SELECT idem.subscribe('legacy-relay', ARRAY['shipping']);
UPDATE idem.consumers SET owner = NULL WHERE name = 'legacy-relay';
SELECT idem.subscribe('legacy-relay', ARRAY['shipping']);
SELECT name, owner FROM idem.consumers WHERE name = 'legacy-relay';
SET ROLE regress_lp_a;		-- no grant any more
SELECT count(*) FROM idem.next_batch('legacy-relay');
SET ROLE regress_lp_b;
SELECT count(*) FROM idem.next_batch('legacy-relay');
SELECT idem.subscribe('legacy-relay', ARRAY['shipping']);
SELECT consumer, owner FROM idem.consumer_lag WHERE consumer = 'legacy-relay';
RESET ROLE;

------------------------------------------------------------------------------
-- Version guards follow PostgreSQL's rule: only the table's owner (or a
-- member of the owning role) installs or removes one, whatever EXECUTE it
-- holds.  grant_usage() does not grant enforce_version().
------------------------------------------------------------------------------
CREATE ROLE regress_lp_dba IN ROLE regress_lp_b;
GRANT USAGE ON SCHEMA idem TO regress_lp_a, regress_lp_dba;
GRANT EXECUTE ON FUNCTION idem.enforce_version(regclass, name, text),
                          idem.unenforce_version(regclass),
                          idem.version_guard() TO regress_lp_a, regress_lp_dba;
CREATE TABLE lp_parcels (id int PRIMARY KEY, version int);
ALTER TABLE lp_parcels OWNER TO regress_lp_b;
SET ROLE regress_lp_a;
SELECT idem.enforce_version('lp_parcels');
SET ROLE regress_lp_dba;
SELECT idem.enforce_version('lp_parcels');
SET ROLE regress_lp_a;
SELECT idem.unenforce_version('lp_parcels');
SET ROLE regress_lp_dba;
SELECT idem.unenforce_version('lp_parcels');
RESET ROLE;

-- Clean up.
SELECT idem.unsubscribe(c) FROM unnest(ARRAY['billing-relay', 'shipping-relay', 'member-relay',
                                             'team-relay', 'legacy-relay', 'audit-relay']) c;
DELETE FROM idem.keys
 WHERE scope IN ('billing', 'billing/eu', 'shipping', 'team/x', 't_x', 'tAx', '100%', 'a_b',
                 'pre', 'prefix', 'back\slash')
    OR (scope, key) = ('', 'k-');
DELETE FROM idem.outbox WHERE topic IN ('billing', 'orders.eu', 'audit');
DROP TABLE lp_parcels;
DROP FUNCTION lp_try(text), lp_billing_forget(text), lp_shipping_forget(text), lp_shipping_read();
SELECT idem.revoke_usage(r) FROM unnest(ARRAY['regress_lp_b', 'regress_lp_c', 'regress_lp_group']::regrole[]) r;
DROP OWNED BY regress_lp_a, regress_lp_b, regress_lp_c, regress_lp_group, regress_lp_member,
              regress_lp_noinherit, regress_lp_dba;
DROP ROLE regress_lp_a, regress_lp_b, regress_lp_c, regress_lp_group, regress_lp_member,
          regress_lp_noinherit, regress_lp_dba;
SELECT count(*) AS grants_left FROM idem.grants WHERE role::text LIKE 'regress_lp%';
