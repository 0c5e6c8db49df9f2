-- pg_idem 0.1.1 -> 0.2.0
\echo Use "ALTER EXTENSION pg_idem UPDATE TO '0.2.0'" to load this file. \quit

-- The sweep every script ends with (nothing is granted to PUBLIC).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA idem FROM PUBLIC;
