/* The install script of the current version (src/pg_idem--$(EXTVERSION).sql), assembled by the Makefile from src/sql/ */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_idem" to load this file. \quit

-- The control file creates schema idem.  Application roles reach its objects
-- only through the functions, for the scopes and topics idem.grant_usage()
-- grants; PUBLIC gets USAGE on the schema and EXECUTE on those functions,
-- which check the grant themselves, at the very end (90_operations.sql).
REVOKE ALL ON SCHEMA idem FROM PUBLIC;
