#!/usr/bin/env bash
# bench/outbox_wal.sh — what idem.outbox_wal costs emit() (docs/outbox-wal.md, "Cost").
#
#   bash bench/outbox_wal.sh            about 2 minutes on 2 cores (after the harness lock)
#
# One throwaway cluster (test/scripts/lib.sh) with wal_level = logical and
# fsync off, so that the per-call CPU shows.  Two measures, each in rounds
# that interleave the three values (off also only, then only also off, ...):
#
#   cpu   the backend's own CPU time (utime + stime from /proc/self/stat,
#         clock ticks) for N emit() calls in one transaction, rolled back;
#         it moves much less than a throughput when other processes compete
#         for the cores.  Reported per call, median over rounds.
#   tps   pgbench, one emit() per transaction (2 clients, -M prepared),
#         the setting given through PGOPTIONS; median over rounds.
#
# Nothing reads the messages (no slot): this is the writer's cost.  What a
# decoder costs the server is the decoder's business.
source "$(dirname "${BASH_SOURCE[0]}")/../test/scripts/lib.sh"

ROUNDS=${ROUNDS:-5}
N=${N:-200000}
T=${T:-5}

idem_setup
idem_cluster_start "wal_level = logical" "fsync = off" "idem.maintenance_interval = 0"
psql -X -q -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION pg_idem'

cat >"$IDEM_WORK/emit.sql" <<'SQL'
\set n random(1, 9000000000000000000)
\set amount random(1, 100000)
SELECT idem.emit('orders', jsonb_build_object('order_id', :n::bigint, 'amount', :amount::int), 'o' || :n::text);
SQL

# Backend CPU ticks for N emits under idem.outbox_wal = $1.
cpu_ticks() {
	psql -X -q -At -v ON_ERROR_STOP=1 <<SQL
SELECT idem.emit('warm', '{}') IS NOT NULL AS warm \gset
SELECT split_part(pg_read_file('/proc/self/stat'), ' ', 14)::bigint
     + split_part(pg_read_file('/proc/self/stat'), ' ', 15)::bigint AS t0 \gset
BEGIN;
SET LOCAL idem.outbox_wal = '$1';
SELECT count(idem.emit('orders', jsonb_build_object('order_id', g, 'amount', g % 1000), 'o' || g))
  FROM generate_series(1, $N) g \gset
ROLLBACK;
SELECT split_part(pg_read_file('/proc/self/stat'), ' ', 14)::bigint
     + split_part(pg_read_file('/proc/self/stat'), ' ', 15)::bigint - :t0;
SQL
}

tps() {
	PGOPTIONS="-c idem.outbox_wal=$1" pgbench -n -M prepared -c 2 -j 2 -T "$T" \
		-f "$IDEM_WORK/emit.sql" 2>/dev/null | awk '/^tps/ {print $3}'
}

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

declare -A CPU TPS
modes=(off also only)
for r in $(seq 1 "$ROUNDS"); do
	order=("${modes[@]}")
	[ $((r % 2)) -eq 0 ] && order=(only also off)
	for m in "${order[@]}"; do
		CPU[$m]+="$(cpu_ticks "$m") "
		psql -X -q -c 'TRUNCATE idem.outbox' -c 'CHECKPOINT'
		TPS[$m]+="$(tps "$m") "
	done
	echo "round $r done"
done

hz=$(getconf CLK_TCK)
echo
echo "idem.outbox_wal cost, $(date -u +%Y-%m-%d), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| value | CPU per emit (us) | vs off | TPS, 1 emit per transaction | vs off |"
echo "|---|---|---|---|---|"
off_cpu=$(echo "${CPU[off]}" | tr ' ' '\n' | grep . | median)
off_tps=$(echo "${TPS[off]}" | tr ' ' '\n' | grep . | median)
for m in "${modes[@]}"; do
	c=$(echo "${CPU[$m]}" | tr ' ' '\n' | grep . | median)
	t=$(echo "${TPS[$m]}" | tr ' ' '\n' | grep . | median)
	awk -v m="$m" -v c="$c" -v oc="$off_cpu" -v t="$t" -v ot="$off_tps" -v hz="$hz" -v n="$N" \
		'BEGIN {printf "| %s | %.2f | %.2fx | %.0f | %.2fx |\n", m, c / hz / n * 1e6, c / oc, t, t / ot}'
done
