#!/usr/bin/env bash
# test/scripts/demo.sh — what `make demo` runs.
#
# Installs what is missing, builds and installs pg_idem, starts a throwaway
# cluster and plays test/demo/*.sql in file-name order through psql, echoing
# each statement and its result, so a reader sees every capability working.
# Errors are part of the story (a refused retry, a refused stale write), so
# they are shown rather than stopping the demo.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

idem_setup
idem_cluster_start
cd "$IDEM_ROOT"

psql -X -q -c "CREATE DATABASE idem_demo"
export PGDATABASE=idem_demo
for f in test/demo/*.sql; do
	echo
	echo "################ $(basename "$f" .sql)"
	psql -X -a -v VERBOSITY=default -f "$f" 2>&1
done
echo
echo "Demo finished; the throwaway cluster is being stopped."
