#!/usr/bin/env bash
# test/scripts/installcheck-pgtap.sh — the pgTAP part of `make installcheck`.
#
# Runs the pgTAP suites given as arguments (test/pgtap/*.sql) with pg_prove
# against the server that PGHOST, PGPORT and PGUSER name, like pg_regress
# does, in a scratch database ($PGTAP_DB, default pg_idem_pgtap) created
# from template0 with pgtap and pg_idem, and dropped again when every suite
# passed (kept after a failure, to look at).  The suites need a superuser,
# as pg_regress does.
#
# pgTAP is an extension of its own: when the server does not have it (or
# pg_prove is missing), the suites are skipped with a message saying what to
# install, and installcheck still passes on regress and isolation.

set -euo pipefail

db=${PGTAP_DB:-pg_idem_pgtap}
[ $# -gt 0 ] || { echo "no pgTAP suites to run"; exit 0; }
echo "+++ pgTAP install-check (pg_prove, database $db) +++"

if ! command -v pg_prove >/dev/null 2>&1; then
	echo "pgTAP suites skipped: pg_prove is not installed (Debian: libtap-parser-sourcehandler-pgtap-perl; or cpan TAP::Parser::SourceHandler::pgTAP)"
	exit 0
fi
# The maintenance connection goes to database postgres, as pg_regress's does.
psql_admin() {
	psql -X -q -A -t -v ON_ERROR_STOP=1 -d postgres "$@"
}
have=$(psql_admin -c "SELECT count(*) FROM pg_catalog.pg_available_extensions WHERE name = 'pgtap'")
if [ "$have" != 1 ]; then
	echo "pgTAP suites skipped: the server has no pgtap extension (Debian: postgresql-15-pgtap; or https://pgtap.org)"
	exit 0
fi

PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" psql_admin \
	-c "DROP DATABASE IF EXISTS \"$db\"" -c "CREATE DATABASE \"$db\" TEMPLATE template0"
psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c "CREATE EXTENSION pgtap" -c "CREATE EXTENSION pg_idem"

rc=0
pg_prove -d "$db" "$@" || rc=$?
if [ "$rc" -eq 0 ]; then
	PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" psql_admin -c "DROP DATABASE \"$db\""
else
	echo "pgTAP suites failed; database \"$db\" is kept for a look"
fi
exit "$rc"
