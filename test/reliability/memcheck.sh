#!/usr/bin/env bash
# test/reliability/memcheck.sh — run pg_idem's regression suites against a
# server running under valgrind memcheck, and report every memory error.
#
#   bash test/reliability/memcheck.sh            # regress + isolation
#   MEMCHECK_SUITES="regress" bash test/reliability/memcheck.sh
#   MEMCHECK_REGRESS="keys versions" MEMCHECK_ISOLATION="outbox-trim" bash ...
#
# Not part of `make test` (a server under valgrind runs 20-50 times slower:
# count 15-30 minutes on 2 cores).  It needs no harness lock and leaves the
# system's PostgreSQL alone: it copies the server's binaries and share
# directory into a private prefix (PostgreSQL finds its share and lib
# directories relative to its own executable), builds a copy of this tree
# with -O0 -g (so that stacks name our lines) and installs it there with
# DESTDIR, starts a throwaway cluster whose postmaster is `valgrind
# postgres` (every backend and worker is a fork of it, so all of them run
# under memcheck), runs pg_regress and pg_isolation_regress against it, stops
# it, and summarizes the valgrind logs:
#   - errors whose stack or origin passes through pg_idem.so  (ours.txt)
#   - other errors: the server's own noise (theirs.txt; valgrind.supp
#     suppresses the known ones)
# and exits non-zero on any error or failed test.  Everything stays in
# $MEMCHECK_OUT (default /tmp/pg_idem-memcheck).
#
# What it can and cannot see.  Debian's server is not built with
# USE_VALGRIND, so palloc chunks are invisible to memcheck: it catches
# uninitialised values (from fresh memory-context blocks and the stack)
# reaching a branch, a syscall or WAL; reads and writes outside malloc'd
# blocks (large allocations are their own block); stack overruns; and wild
# pointers -- not an overrun into the next chunk of the same block, nor a use
# after pfree.  For those, build PostgreSQL from source with
# -DUSE_VALGRIND (and --enable-cassert for MEMORY_CONTEXT_CHECKING and
# CLOBBER_FREED_MEMORY) and run this script with PG_CONFIG pointing at it.

source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

SUITES=${MEMCHECK_SUITES:-regress isolation}
OUT=${MEMCHECK_OUT:-/tmp/pg_idem-memcheck}
SUPP="$IDEM_ROOT/test/reliability/valgrind.supp"

idem_install_deps valgrind
PRIV="$OUT/prefix"
TREE="$OUT/tree"
rm -rf "$OUT"
mkdir -p "$OUT" "$PRIV" "$TREE"
chmod 777 "$OUT"

echo "== private copy of the server in $PRIV"
bindir=$("$PG_CONFIG" --bindir)
sharedir=$("$PG_CONFIG" --sharedir)
pkglibdir=$("$PG_CONFIG" --pkglibdir)
for d in "$(dirname "$bindir")" "$sharedir" "$pkglibdir"; do
	mkdir -p "$PRIV$(dirname "$d")"
	cp -a "$d" "$PRIV$(dirname "$d")/"
done
PRIVBIN="$PRIV$bindir"

echo "== building pg_idem with -O0 -g in $TREE"
(cd "$IDEM_ROOT" && tar --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=results --exclude=output_iso --exclude=tmp_check -cf - .) | (cd "$TREE" && tar -xf -)
make -C "$TREE" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null
make -C "$TREE" -s PG_CONFIG="$PG_CONFIG" COPT="-Werror -O0 -g" >/dev/null
make -C "$TREE" -s PG_CONFIG="$PG_CONFIG" DESTDIR="$PRIV" install >/dev/null
[ "$(id -u)" -ne 0 ] || chown -R "$IDEM_PG_USER" "$TREE"

# The cluster, as idem_cluster_start makes it, but started through a
# wrapper that runs the postmaster under valgrind.
IDEM_WORK=$(mktemp -d /tmp/pg_idem.XXXXXX)
chmod 755 "$IDEM_WORK"
[ "$(id -u)" -ne 0 ] || chown "$IDEM_PG_USER" "$IDEM_WORK"
export IDEM_WORK
trap idem_cluster_stop EXIT
trap 'exit 130' INT TERM
PGPORT=$(idem_free_port "${IDEM_PORT:-54339}")
export PGHOST="$IDEM_WORK" PGPORT PGUSER="$IDEM_PG_USER" PGDATABASE=postgres

cat >"$IDEM_WORK/postgres-valgrind" <<EOF
#!/bin/sh
exec valgrind --quiet --tool=memcheck --leak-check=no --track-origins=yes \\
	--read-var-info=no --num-callers=40 --trace-children=no \\
	--suppressions=$SUPP --gen-suppressions=all \\
	--error-markers=VALGRINDERROR-BEGIN,VALGRINDERROR-END \\
	--log-file=$OUT/valgrind.%p.log \\
	$PRIVBIN/postgres "\$@"
EOF
chmod 755 "$IDEM_WORK/postgres-valgrind"
[ "$(id -u)" -ne 0 ] || chown "$IDEM_PG_USER" "$IDEM_WORK/postgres-valgrind"

idem_as_pg initdb -D "$IDEM_WORK/data" -U "$IDEM_PG_USER" --auth=trust \
	--no-sync --encoding=UTF8 --locale=C >"$IDEM_WORK/initdb.log" 2>&1 ||
	{ cat "$IDEM_WORK/initdb.log"; exit 1; }
cat >>"$IDEM_WORK/data/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$IDEM_WORK'
shared_preload_libraries = 'pg_idem'
max_connections = 40
max_prepared_transactions = 10
fsync = off
log_min_messages = warning
# valgrind is slow: do not let timeouts turn slowness into failures
authentication_timeout = 10min
EOF
echo "== starting the server under valgrind (slow)"
idem_as_pg pg_ctl -D "$IDEM_WORK/data" -l "$IDEM_WORK/server.log" -p "$IDEM_WORK/postgres-valgrind" \
	-t 600 -w -s start || { cat "$IDEM_WORK/server.log"; exit 1; }

cd "$TREE"
pick_regress=()
pick_isolation=()
[ -z "${MEMCHECK_REGRESS:-}" ] || pick_regress=(REGRESS="$MEMCHECK_REGRESS")
[ -z "${MEMCHECK_ISOLATION:-}" ] || pick_isolation=(ISOLATION="$MEMCHECK_ISOLATION")
for suite in $SUITES; do
	case $suite in
	regress)
		echo "== regress under valgrind"
		make -s installcheck PG_CONFIG="$PG_CONFIG" ISOLATION= TAP_TESTS= \
			"${pick_regress[@]}" 2>&1 | tee "$OUT/regress.log" || true
		[ ! -s regression.diffs ] || cp regression.diffs "$OUT/regress.diffs"
		;;
	isolation)
		echo "== isolation under valgrind"
		PGISOLATIONTIMEOUT=1800 make -s installcheck PG_CONFIG="$PG_CONFIG" REGRESS= TAP_TESTS= \
			"${pick_isolation[@]}" 2>&1 | tee "$OUT/isolation.log" || true
		[ ! -s output_iso/regression.diffs ] || cp output_iso/regression.diffs "$OUT/isolation.diffs"
		;;
	*) echo "unknown suite $suite" >&2; exit 2 ;;
	esac
done

echo "== stopping the server"
idem_as_pg pg_ctl -D "$IDEM_WORK/data" -m fast -t 600 -w -s stop || true
cp "$IDEM_WORK/server.log" "$OUT/server.log" 2>/dev/null || true

# Summarize: one block per error between the markers.  Ours when a frame of
# the stack or of the origin is in pg_idem.so (by name when symbols are
# missing, by source file when they are not).
ours_files=$(cd "$TREE/src" && ls *.c *.h | sed 's/\./\\./' | paste -sd'|')
ours=0
theirs=0
: >"$OUT/ours.txt"
: >"$OUT/theirs.txt"
for f in "$OUT"/valgrind.*.log; do
	[ -f "$f" ] || continue
	while IFS= read -r -d $'\x1e' block; do
		[ -n "$block" ] || continue
		if grep -qE "pg_idem\.so|\((${ours_files}):[0-9]+\)" <<<"$block"; then
			ours=$((ours + 1))
			printf '%s\n---- (%s)\n' "$block" "$(basename "$f")" >>"$OUT/ours.txt"
		else
			theirs=$((theirs + 1))
			printf '%s\n---- (%s)\n' "$block" "$(basename "$f")" >>"$OUT/theirs.txt"
		fi
	done < <(awk '/VALGRINDERROR-BEGIN/{inb=1; b=""; next}
	              /VALGRINDERROR-END/{inb=0; printf "%s\x1e", b; next}
	              inb{b = b $0 "\n"}' "$f")
done
processes=$(ls "$OUT"/valgrind.*.log 2>/dev/null | wc -l)
fails=$(cat "$OUT"/regress.log "$OUT"/isolation.log 2>/dev/null | grep -cE '\.\.\. (FAILED|failed)' || true)
echo "== memcheck: $processes server processes; $ours error(s) through pg_idem.so ($OUT/ours.txt), $theirs elsewhere ($OUT/theirs.txt)"
if [ "${fails:-0}" -ne 0 ]; then
	# Not memory errors: specs with sub-second leases and timeouts can lose
	# their race under valgrind's slowness.  Read the diffs.
	echo "   ${fails} test(s) failed under valgrind: $OUT/regress.diffs, $OUT/isolation.diffs"
fi
[ "$ours" -eq 0 ] && [ "$theirs" -eq 0 ]
