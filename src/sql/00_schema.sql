/* The install script of the current version (src/pg_idem--$(EXTVERSION).sql), assembled by the Makefile from src/sql/ */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION pg_idem" to load this file. \quit

-- The control file creates schema idem.  Application roles reach its objects
-- only through the functions, for the scopes and topics idem.grant_usage()
-- grants; nothing here is granted to PUBLIC, not even USAGE on the schema.
REVOKE ALL ON SCHEMA idem FROM PUBLIC;
