-- pg_idem 0.1.0 -> 0.1.1
\echo Use "ALTER EXTENSION pg_idem UPDATE TO '0.1.1'" to load this file. \quit

-- emit() now writes idem.outbox directly from C and runs no SQL
-- (src/outbox_emit.c), so it no longer needs definer rights or a pinned
-- search_path; each cost a GUC save and restore on every event.
ALTER FUNCTION idem.emit(text, jsonb, text, jsonb) SECURITY INVOKER;
ALTER FUNCTION idem.emit(text, jsonb, text, jsonb) RESET search_path;

-- emit() notifies channel idem_outbox only while some session listens
-- (src/outbox_notify.c); the library does that, the comment says so.
COMMENT ON FUNCTION idem.emit(text, jsonb, text, jsonb) IS
'Write an event in the current transaction and notify channel idem_outbox on commit (while some session listens); returns the event id';

-- The sweep every script ends with (nothing is granted to PUBLIC).
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA idem FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA idem FROM PUBLIC;
