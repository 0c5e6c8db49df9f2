#!/usr/bin/env bash
# bench/run.sh — what `make bench` runs.
#
# Installs what is missing (PgQ included), builds and installs pg_idem,
# starts a throwaway cluster (the `make test` machinery), and runs every
# workload in bench/workloads/ side by side with its baseline:
#
#   * interleaved rounds: A B C, C B A, A B C, ... so drift (table growth,
#     autovacuum, checkpoints, other load) hits every variant alike;
#   * pgbench -M prepared, 8 clients, 2 threads (64 for the contention case);
#   * per round the TPS pgbench reports; per transaction the latency from
#     pgbench --log; the table shows the median TPS over rounds, and the mean
#     and 99th percentile latency over every transaction of every round;
#   * two passes: fsync = on (durable commits: what production pays) and
#     fsync = off (CPU-bound: where the per-call cost of a function shows);
#   * one consumer draining committed events (events/s), and how cost grows
#     with the number of stored keys and retained events.
#
# Prints the report and writes it to bench/results/latest.md.
#
#   make bench                 full run (< 30 minutes)
#   make bench BENCH_QUICK=1   quick check (< 3 minutes): fsync off only, no reference rows,
#                              2 short rounds, smaller drain, no 10M keys, and
#                              neither the emit cost nor the held snapshot
#
# Knobs for development (environment): BENCH_ROUNDS, BENCH_DURATION (s),
# BENCH_PASSES ("on off"), BENCH_SECTIONS ("keys versions outbox
# privileges invariants drain simple scale emitcost hold"), BENCH_DRAIN_EVENTS,
# BENCH_SCALE_KEYS ("10000 1000000"), BENCH_PRIV_ROUNDS (rounds of the
# privileges section, default 10; 4 quick), BENCH_EMITCOST_ROUNDS (7),
# IDEM_BENCH_HOLD_MINUTES (10: the held-snapshot section runs 6 x that).
#
# Where the time goes:
#   BENCH_PROFILE="reserve_idem.sql reserve_raw.sql" make bench
# sets up the same cluster and data (fsync off), runs each named workload
# for BENCH_DURATION seconds (default 10) under `perf record -a -g` and
# writes the hottest functions of the server processes to
# bench/results/profile-<workload>.txt (perf.data kept beside it as .data,
# for `perf report -i`).
#
# Why prepared mode: real drivers (JDBC, pgx, psycopg 3, node-postgres with
# named statements) prepare hot statements, and it is the fair mode for
# both sides: the hand-written SQL keeps its plans just as pg_idem's C code
# keeps its SPI plans.  In simple mode every baseline statement is parsed and
# planned again while pg_idem's inner plans stay cached, which flatters
# pg_idem; the full run shows the main comparisons in simple mode as well,
# labelled as such.

source "$(dirname "${BASH_SOURCE[0]}")/../test/scripts/lib.sh"

BENCH_DIR="$IDEM_ROOT/bench"
WL="$BENCH_DIR/workloads"
RESULTS_DIR="$BENCH_DIR/results"
QUICK=${BENCH_QUICK:-0}
[ "$QUICK" = 0 ] && QUICK=

if [ -n "$QUICK" ]; then
	ROUNDS=${BENCH_ROUNDS:-2}
	DUR=${BENCH_DURATION:-2}
	PASSES=${BENCH_PASSES:-off}
	SECTIONS=${BENCH_SECTIONS:-keys versions outbox privileges invariants drain scale}
	DRAIN_EVENTS=${BENCH_DRAIN_EVENTS:-20000}
	DRAIN_ROUNDS=1
	SIDE_ROUNDS=1
	EXISTING_KEYS=20000
	SCALE_KEYS=${BENCH_SCALE_KEYS:-10000 1000000}
	SCALE_EVENTS=${BENCH_SCALE_EVENTS:-100000}
else
	ROUNDS=${BENCH_ROUNDS:-5}
	DUR=${BENCH_DURATION:-4}
	PASSES=${BENCH_PASSES:-on off}
	SECTIONS=${BENCH_SECTIONS:-keys versions outbox privileges invariants drain simple scale emitcost hold}
	DRAIN_EVENTS=${BENCH_DRAIN_EVENTS:-200000}
	DRAIN_ROUNDS=3
	SIDE_ROUNDS=3	# simple-protocol and scale sections
	SCALE_KEYS=${BENCH_SCALE_KEYS:-10000 1000000 10000000}
	SCALE_EVENTS=${BENCH_SCALE_EVENTS:-1000000}
fi
CLIENTS=8
THREADS=2
HOT_CLIENTS=64
EXISTING_KEYS=${EXISTING_KEYS:-100000}	# completed keys the 10% retries pick from
ACCOUNTS=100000		# rows in each version-checked table
STOCK_ITEMS=10000	# items (of 4 lots each) in each invariant-checked table
LEDGER_ACCOUNTS=100000	# accounts of each ledger table (one opening entry each)
WS_CLIENTS=32		# write-skew clients (workloads/writeskew.pl), on
WS_HOT=4		# ... this many hot shifts, spread WS_STRIDE apart over
WS_STRIDE=250		# ... the 1000 shifts of each on-call table

# idem_setup, in its three steps, so that the time budget starts once the
# machine lock is ours (another checkout may hold it for a while).
idem_install_deps "postgresql-$IDEM_PG_MAJOR-pgq3"
idem_lock
T0=$(date +%s)
idem_build_install
# Settings a production server would have rather than the test defaults:
# enough shared_buffers for the 10M-key table, no checkpoint in the middle
# of a round, and pg_idem's maintenance worker off so that cleanup happens
# where the report says (it is timed separately in the drain section).
idem_cluster_start \
	"fsync = on" \
	"shared_buffers = 2GB" \
	"max_wal_size = 4GB" \
	"checkpoint_timeout = 30min" \
	"idem.maintenance_interval = 0"
export PGDATABASE=bench

W="$IDEM_WORK/bench"
mkdir -p "$W" "$RESULTS_DIR"
chmod 777 "$W"
REPORT="$W/report.md"
: >"$REPORT"

psqlq() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
sql1() { psql -X -q -v ON_ERROR_STOP=1 -At -c "$1"; }
now_ns() { date +%s%N; }
say() { echo "$*" | tee -a "$REPORT"; }
# Progress lines carry the elapsed time, to keep the run inside its budget.
step() { echo "== [$(( $(date +%s) - T0 ))s] $*"; }

# ---------------------------------------------------------------------------
# Which capabilities are installed (they are developed in parallel): a
# workload whose pg_idem side is missing reports "not implemented".
# ---------------------------------------------------------------------------
has_fn() {
	[ "$(sql1 "SELECT to_regproc('$1') IS NOT NULL")" = t ]
}

# Fresh database: pg_idem, PgQ and the objects of bench/sql/setup.sql.
fresh_db() {
	psqlq -d postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
	psqlq -c "CREATE EXTENSION pg_idem" -c "CREATE EXTENSION pgq"
	sql1 "SELECT pgq.create_queue('bench_emit')" >/dev/null
	psqlq -f "$BENCH_DIR/sql/setup.sql"
	HAS_KEYS=; HAS_VERSIONS=; HAS_OUTBOX=; HAS_TRIM=
	has_fn idem.reserve && has_fn idem.complete && HAS_KEYS=1
	has_fn idem.enforce_version && HAS_VERSIONS=1
	has_fn idem.emit && has_fn idem.next_batch && has_fn idem.finish_batch && HAS_OUTBOX=1
	has_fn idem.trim_outbox && HAS_TRIM=1
	HAS_INVARIANTS=
	has_fn idem.enforce_invariant && HAS_INVARIANTS=1
	# The application role of the *_app workloads (their "-- role:" line):
	# what a service runs as, restricted to its scopes and topics where
	# pg_idem supports it (0.2), so that the privilege checks are timed.
	sql1 "DO \$\$ BEGIN CREATE ROLE bench_app; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$"
	if has_fn idem.revoke_usage; then
		sql1 "SELECT idem.grant_usage('bench_app',
		          scopes => ARRAY['', 'shop/%', 'tenant-_/%', 'billing'],
		          topics => ARRAY['orders', 'orders/%', 'billing_%'])" >/dev/null
	else
		sql1 "SELECT idem.grant_usage('bench_app')" >/dev/null
	fi
	return 0
}

# Data every pass needs: completed keys for the retry workload (through
# the real functions for pg_idem, INSERT ... SELECT for the baselines, which
# store the same values), and the accounts of the version-checked tables.
load_data() {
	local req="jsonb_build_object('amount', (g % 100000 + 1)::int)"
	local fp="sha256(convert_to(($req)::text, 'UTF8'))"
	if [ -n "$HAS_KEYS" ]; then
		sql1 "SELECT count(idem.complete('k' || g, (idem.reserve('k' || g, $req)).token,
		                                 jsonb_build_object('payment_id', g), 201))
		        FROM generate_series(1, $EXISTING_KEYS) g" >/dev/null
	fi
	local t
	for t in sql_keys pl_keys; do
		sql1 "INSERT INTO bench.$t (scope, key, fingerprint, state, token, response, status,
		                            ttl, created_at, updated_at, expires_at)
		      SELECT '', 'k' || g, $fp, 'completed', 1, jsonb_build_object('payment_id', g), 201,
		             interval '24 hours', now(), now(), now() + interval '24 hours'
		        FROM generate_series(1, $EXISTING_KEYS) g"
	done
	for t in acct_plain acct_guarded acct_plpgsql; do
		sql1 "INSERT INTO bench.$t SELECT g, 1000, 1 FROM generate_series(1, $ACCOUNTS) g"
	done
	[ -z "$HAS_VERSIONS" ] || sql1 "SELECT idem.enforce_version('bench.acct_guarded')" >/dev/null
	for t in stock_plain stock_plpgsql stock_plpgsql_lock stock_idem; do
		sql1 "INSERT INTO bench.$t SELECT i, l, 1000 FROM generate_series(1, $STOCK_ITEMS) i, generate_series(1, 4) l"
	done
	[ -z "$HAS_INVARIANTS" ] || sql1 "SELECT idem.enforce_invariant('bench_stock_range',
		'SELECT sum(qty) BETWEEN 0 AND 1000000000 FROM bench.stock_idem WHERE item = \$1',
		'{\"bench.stock_idem\": [\"item\"]}')" >/dev/null
	for t in ledger_plain ledger_plpgsql ledger_idem; do
		sql1 "INSERT INTO bench.$t SELECT g, 1000 FROM generate_series(1, $LEDGER_ACCOUNTS) g"
	done
	[ -z "$HAS_INVARIANTS" ] || sql1 "SELECT idem.enforce_invariant('bench_ledger_balance',
		'SELECT sum(amount) >= 0 FROM bench.ledger_idem WHERE account = \$1',
		'{\"bench.ledger_idem\": [\"account\"]}')" >/dev/null
	for t in oncall_idem oncall_ser oncall_none; do
		# two doctors on duty per shift, eight off
		sql1 "INSERT INTO bench.$t SELECT s, d, d <= 2 FROM generate_series(1, 1000) s, generate_series(1, 10) d"
	done
	[ -z "$HAS_INVARIANTS" ] || sql1 "SELECT idem.enforce_invariant('bench_oncall',
		'SELECT count(*) >= 1 FROM bench.oncall_idem WHERE shift = \$1 AND on_duty',
		'{\"bench.oncall_idem\": [\"shift\"]}')" >/dev/null
	psqlq -c "VACUUM ANALYZE" -c "CHECKPOINT"
}

# ---------------------------------------------------------------------------
# Running pgbench and summarizing.
# ---------------------------------------------------------------------------
declare -A TPS MEAN P99 CPU STATUS NOTE

# CPU time (clock ticks) used so far by this cluster's server: the
# postmaster, its live children, and every child it has reaped (a backend's
# time is added to the postmaster's cutime/cstime when it exits).  Other
# processes on the machine do not count, so "server CPU per transaction" is
# the per-call cost with the noise of a shared machine mostly taken out.
server_ticks() {
	local pm c
	pm=$(head -n1 "$IDEM_WORK/data/postmaster.pid")
	{
		awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat"
		for c in $(pgrep -P "$pm"); do
			awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || true
		done
	} | awk '{s += $1} END {print s}'
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# One round of one variant: append its TPS and its per-transaction
# latencies (µs) to $W/<id>.tps / .lat, and the server CPU ticks and the
# number of transactions to $W/<id>.cpu.
#   run_round ID SCRIPT CLIENTS MODE [pgbench args...]
run_round() {
	local id=$1 script=$2 clients=$3 mode=$4
	shift 4
	local logdir="$W/log.$id"
	rm -rf "$logdir"; mkdir -p "$logdir"; chmod 777 "$logdir"
	local out="$W/$id.out" rc=0 t0 t1 role
	# a workload may run as another role: its "-- role: NAME" line
	role=$(sed -n 's/^-- role: \([a-z_]*\)$/\1/p' "$WL/$script")
	t0=$(server_ticks)
	cut -d' ' -f1 /proc/loadavg >>"$W/load.samples"
	PGOPTIONS="${role:+-c role=$role}" pgbench -n -M "$mode" -c "$clients" -j "$THREADS" -T "$DUR" \
		--log --log-prefix="$logdir/tx" -f "$WL/$script" "$@" >"$out" 2>&1 || rc=$?
	sleep 0.2	# let the backends exit and be reaped
	t1=$(server_ticks)
	local tps
	tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$out")
	if [ $rc -ne 0 ] || [ -z "$tps" ] || grep -q 'aborted' "$out"; then
		STATUS[$id]=error
		NOTE[$id]=$(grep -m1 -iE 'error|fatal' "$out" | cut -c1-160)
		echo "   $id: ERROR: ${NOTE[$id]}"
		rm -rf "$logdir"
		return 0
	fi
	echo "$tps" >>"$W/$id.tps"
	cat "$logdir"/tx.* | awk '{print $3}' >>"$W/$id.lat"
	rm -rf "$logdir"
	local ntx
	ntx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
	echo "$((t1 - t0)) $ntx" >>"$W/$id.cpu"
	printf '   %-28s %10.0f tps %8.1f µs server CPU/tx\n' "$id" "$tps" \
		"$(awk -v t=$((t1 - t0)) -v n="$ntx" -v u=$TICK_US 'BEGIN {print (n > 0) ? t * u / n : 0}')"
}

# Median TPS over rounds; mean and p99 latency (ms) over all transactions.
summarize() {
	local id=$1
	case "${STATUS[$id]:-}" in error | missing | skipped) return 0 ;; esac
	[ -s "$W/$id.tps" ] || { STATUS[$id]=error; return 0; }
	TPS[$id]=$(sort -g "$W/$id.tps" | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
	read -r MEAN[$id] P99[$id] < <(sort -n "$W/$id.lat" |
		awk '{a[NR]=$1; s+=$1} END {i=int(NR*0.99+0.999); if (i<1) i=1; printf "%.3f %.3f\n", s/NR/1000, a[i]/1000}')
	CPU[$id]=$(awk -v u=$TICK_US '{t += $1; n += $2} END {printf "%.1f", (n > 0) ? t * u / n : 0}' "$W/$id.cpu")
	STATUS[$id]=ok
	rm -f "$W/$id.lat"
}

# Interleaved rounds of a group of variants: A B C, C B A, A B C, ...
#   run_group PASS MODE CLIENTS "var=script" ... [-- pgbench args]
# A variant whose script is "-" is skipped (not implemented).
run_group() {
	local pass=$1 mode=$2 clients=$3
	shift 3
	local vars=() extra=() v
	while [ $# -gt 0 ]; do
		if [ "$1" = -- ]; then shift; extra=("$@"); break; fi
		vars+=("$1"); shift
	done
	local r order i id script
	for v in "${vars[@]}"; do
		id="$pass.${v%%=*}"
		rm -f "$W/$id.tps" "$W/$id.lat" "$W/$id.cpu"
		if [ "${v#*=}" = - ]; then STATUS[$id]=missing; fi
		if [ "${v#*=}" = skip ]; then STATUS[$id]=skipped; fi
	done
	for ((r = 1; r <= ROUNDS; r++)); do
		order=("${vars[@]}")
		if ((r % 2 == 0)); then
			order=()
			for ((i = ${#vars[@]} - 1; i >= 0; i--)); do order+=("${vars[$i]}"); done
		fi
		for v in "${order[@]}"; do
			id="$pass.${v%%=*}"; script=${v#*=}
			[ "$script" != - ] && [ "$script" != skip ] && [ "${STATUS[$id]:-}" != error ] || continue
			run_round "$id" "$script" "$clients" "$mode" "${extra[@]}"
		done
	done
	for v in "${vars[@]}"; do summarize "$pass.${v%%=*}"; done
	sql1 "CHECKPOINT"
}

# Median of a column of numbers.
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Paired ratio of two variants of one group: the median over rounds of
# (a's TPS / b's TPS in the same round).  The two ran next to each other
# in every round, so slow drifts of the machine (other load, autovacuum,
# table growth) cancel out better than in the ratio of the two medians.
# "1.04x", or "" when either side is missing.
ratio() {
	local a=$1 b=$2
	[ "${STATUS[$a]:-}" = ok ] && [ "${STATUS[$b]:-}" = ok ] || return 0
	paste "$W/$a.tps" "$W/$b.tps" | awk 'NF == 2 && $2 > 0 {print $1 / $2}' | median |
		awk '{printf "%.2fx", $1}'
}

# The same pairing for the server CPU per transaction: "+6%".
cpu_delta() {
	local a=$1 b=$2
	paste "$W/$a.cpu" "$W/$b.cpu" |
		awk 'NF == 4 && $2 > 0 && $4 > 0 && $3 > 0 {print ($1 / $2) / ($3 / $4)}' | median |
		awk '{printf "%+.0f%%", ($1 - 1) * 100}'
}

# Table row: | label | TPS | mean | p99 | comparison |
#   row ID LABEL [BASELINE_ID:NAME:TARGET ...]
# TARGET is a minimum TPS ratio ("0.9"), or "<=1.15": a maximum cost, the
# cost being the inverse of the paired TPS ratio (the CPU/tx difference is
# shown beside it).
TARGETS="$W/targets.tsv"
: >"$TARGETS"
row() {
	local id=$1 label=$2
	shift 2
	local cmp="" spec b name target r verdict
	for spec in "$@"; do
		b=${spec%%:*}; name=${spec#*:}; target=${name#*:}; name=${name%%:*}
		r=$(ratio "$id" "$b")
		[ -n "$r" ] || continue
		verdict=""
		if [[ "$target" == '<='* ]]; then
			r=$(awk -v r="${r%x}" 'BEGIN {printf "%.2fx", 1 / r}')
			if awk -v r="${r%x}" -v t="${target#<=}" 'BEGIN {exit !(r <= t + 0.0005)}'; then
				verdict=" (target cost ≤ ${target#<=}x: met)"
			else
				verdict=" (target cost ≤ ${target#<=}x: **missed**)"
			fi
			printf '%s\t%s\t%s\t%s\t%s\n' "${id%%.*}" "$label" "$name (cost)" "$r" "$target" >>"$TARGETS"
			cmp+="${cmp:+; }cost $r $name$(cpu_delta "$id" "$b" | sed 's/^./ (CPU\/tx &/; s/$/)/')$verdict"
			continue
		fi
		if [ -n "$target" ]; then
			if awk -v r="${r%x}" -v t="$target" 'BEGIN {exit !(r + 0.0005 >= t)}'; then
				verdict=" (target ≥ ${target}: met)"
			else
				verdict=" (target ≥ ${target}: **missed**)"
			fi
			[ "${id%%.*}" = simple ] ||
				printf '%s\t%s\t%s\t%s\t%s\n' "${id%%.*}" "$label" "$name" "$r" "$target" >>"$TARGETS"
		fi
		local cpud
		cpud=$(cpu_delta "$id" "$b")
		cmp+="${cmp:+; }$r $name${cpud:+ (CPU/tx $cpud)}$verdict"
	done
	case "${STATUS[$id]:-}" in
	ok)
		printf '| %s | %.0f | %.3f | %.3f | %s | %s |\n' "$label" "${TPS[$id]}" "${MEAN[$id]}" "${P99[$id]}" "${CPU[$id]}" "$cmp" ;;
	missing)
		printf '| %s | not implemented | | | | |\n' "$label" ;;
	error)
		printf '| %s | error | | | | %s |\n' "$label" "${NOTE[$id]:-}" ;;
	*)
		return 0 ;;
	esac | tee -a "$REPORT"
}

table_head() {
	say ""
	say "| workload | TPS (median) | mean ms | p99 ms | server CPU µs/tx | vs baseline |"
	say "|---|---:|---:|---:|---:|---|"
}

# ---------------------------------------------------------------------------
# Sections.
# ---------------------------------------------------------------------------
pick() { if [ -n "$1" ]; then echo "$2"; else echo -; fi; }
# Reference rows (not baselines) are left out of the quick check.
ref() { if [ -n "$QUICK" ]; then echo skip; else echo "$1"; fi; }

section_keys() {
	local p=$1 mode=$2
	local K; K=$HAS_KEYS
	step "[$p] keys: reserve of a new key"
	run_group "$p" "$mode" $CLIENTS "reserve_raw=reserve_raw.sql" \
		"reserve_pk=$(ref reserve_raw_pk.sql)" "reserve_idem=$(pick "$K" reserve_idem.sql)" \
		"reserve_app=$(pick "$K" reserve_idem_app.sql)"
	step "[$p] keys: reserve + business insert + complete, one transaction"
	run_group "$p" "$mode" $CLIENTS "txn_sql=keys_sql.sql" "txn_plpgsql=keys_plpgsql.sql" \
		"txn_idem=$(pick "$K" keys_idem.sql)" -- -D retry_pct=0 -D existing=$EXISTING_KEYS
	[ "$mode" = prepared ] || return 0
	step "[$p] keys: the same with 10% retries of completed keys (replays)"
	run_group "$p" "$mode" $CLIENTS "retry_sql=keys_sql.sql" "retry_plpgsql=keys_plpgsql.sql" \
		"retry_idem=$(pick "$K" keys_idem.sql)" -- -D retry_pct=10 -D existing=$EXISTING_KEYS
	step "[$p] keys: $HOT_CLIENTS clients, 100 hot keys"
	run_group "$p" "$mode" $HOT_CLIENTS "hot_sql=hot_sql.sql" "hot_plpgsql=hot_plpgsql.sql" \
		"hot_idem=$(pick "$K" hot_idem.sql)"
}

report_keys() {
	local p=$1
	row "$p.reserve_raw" "keys: reserve new key — raw INSERT ... ON CONFLICT DO NOTHING (baseline)"
	row "$p.reserve_pk" "keys: reserve new key — the same INSERT, primary key only (reference)"
	row "$p.reserve_idem" "keys: reserve new key — **idem.reserve**" "$p.reserve_raw:raw INSERT:0.9" \
		"$p.reserve_pk:PK-only INSERT:"
	row "$p.reserve_app" "keys: reserve new key — **idem.reserve** as an application role (scope patterns)" \
		"$p.reserve_idem:as the owner:" "$p.reserve_raw:raw INSERT:"
	row "$p.txn_sql" "keys: reserve + insert + complete — plain SQL (baseline)"
	row "$p.txn_plpgsql" "keys: reserve + insert + complete — PL/pgSQL pair (baseline)"
	row "$p.txn_idem" "keys: reserve + insert + complete — **pg_idem**" \
		"$p.txn_sql:plain SQL:1.0" "$p.txn_plpgsql:PL/pgSQL pair:1.2"
	row "$p.retry_sql" "keys: 10% replays — plain SQL (baseline)"
	row "$p.retry_plpgsql" "keys: 10% replays — PL/pgSQL pair (baseline)"
	row "$p.retry_idem" "keys: 10% replays — **pg_idem**" \
		"$p.retry_sql:plain SQL:" "$p.retry_plpgsql:PL/pgSQL pair:"
	row "$p.hot_sql" "keys: $HOT_CLIENTS clients on 100 hot keys — plain SQL (baseline)"
	row "$p.hot_plpgsql" "keys: $HOT_CLIENTS clients on 100 hot keys — PL/pgSQL pair (baseline)"
	row "$p.hot_idem" "keys: $HOT_CLIENTS clients on 100 hot keys — **pg_idem**" \
		"$p.hot_sql:plain SQL:" "$p.hot_plpgsql:PL/pgSQL pair:"
}

section_versions() {
	local p=$1 mode=$2
	step "[$p] versions: UPDATE of one row"
	run_group "$p" "$mode" $CLIENTS "upd_plain=version_plain.sql" "upd_plpgsql=version_plpgsql.sql" \
		"upd_guarded=$(pick "$HAS_VERSIONS" version_guarded.sql)"
}

report_versions() {
	local p=$1
	row "$p.upd_plain" "versions: UPDATE, no guard (baseline)"
	row "$p.upd_plpgsql" "versions: UPDATE, PL/pgSQL guard trigger (baseline)"
	row "$p.upd_guarded" "versions: UPDATE, **idem.version_guard**" \
		"$p.upd_plain:unguarded:0.97" "$p.upd_plpgsql:PL/pgSQL trigger:1.0"
}

section_invariants() {
	local p=$1 mode=$2
	step "[$p] invariants: UPDATE of one lot, the item's total checked at commit"
	run_group "$p" "$mode" $CLIENTS "inv_plain=invariant_plain.sql" "inv_plpgsql=invariant_plpgsql.sql" \
		"inv_plpgsql_lock=invariant_plpgsql_lock.sql" "inv_idem=$(pick "$HAS_INVARIANTS" invariant_idem.sql)"
	step "[$p] invariants: single-row INSERT into a ledger, the account's balance checked at commit"
	run_group "$p" "$mode" $CLIENTS "ins_plain=ledger_plain.sql" "ins_plpgsql=ledger_plpgsql.sql" \
		"ins_idem=$(pick "$HAS_INVARIANTS" ledger_idem.sql)"
	step "[$p] invariants: write skew, $WS_CLIENTS clients on $WS_HOT hot shifts"
	section_writeskew "$p"
}

# Contended write skew (workloads/writeskew.pl, not pgbench: see there).
# Interleaved rounds like run_group; per round the committed business
# transactions per second, the server CPU per committed transaction, and
# the rejected (ID030) requests and 40001 retries; after the rounds, the
# violations: shifts with nobody on duty now, plus reads of such a shift
# that business transactions recorded during the run.
declare -A WS_REJ WS_RETRY WS_VIOL
section_writeskew() {
	local p=$1 r v id t0 t1 out i order vars=()
	if [ -n "$HAS_INVARIANTS" ]; then vars+=(idem); else STATUS[$p.ws_idem]=missing; fi
	vars+=(ser none)
	for v in idem ser none; do rm -f "$W/$p.ws_$v.tps" "$W/$p.ws_$v.cpu" "$W/$p.ws_$v.counts"; done
	for ((r = 1; r <= ROUNDS; r++)); do
		order=("${vars[@]}")
		if ((r % 2 == 0)); then
			order=()
			for ((i = ${#vars[@]} - 1; i >= 0; i--)); do order+=("${vars[$i]}"); done
		fi
		for v in "${order[@]}"; do
			id="$p.ws_$v"
			[ "${STATUS[$id]:-}" != error ] || continue
			local variant=$v
			[ "$v" != ser ] || variant=serializable
			t0=$(server_ticks)
			cut -d' ' -f1 /proc/loadavg >>"$W/load.samples"
			if ! out=$(perl "$WL/writeskew.pl" "$variant" "oncall_$v" $WS_CLIENTS "$DUR" $WS_HOT $WS_STRIDE 2>&1); then
				STATUS[$id]=error
				NOTE[$id]=$(echo "$out" | grep -m1 . | cut -c1-160)
				echo "   $id: ERROR: ${NOTE[$id]}"
				continue
			fi
			sleep 0.2
			t1=$(server_ticks)
			local committed rejected retries secs
			read -r committed rejected retries secs <<<"$(echo "$out" | tail -n1)"
			awk -v c="$committed" -v s="$secs" 'BEGIN {print c / s}' >>"$W/$id.tps"
			echo "$((t1 - t0)) $committed" >>"$W/$id.cpu"
			echo "$rejected $retries $committed" >>"$W/$id.counts"
			printf '   %-28s %10.0f committed/s %6d rejected %6d retries %8.1f µs server CPU/committed tx\n' "$id" \
				"$(tail -n1 "$W/$id.tps")" "$rejected" "$retries" \
				"$(awk -v t=$((t1 - t0)) -v n="$committed" -v u=$TICK_US 'BEGIN {print (n > 0) ? t * u / n : 0}')"
		done
	done
	for v in idem ser none; do
		id="$p.ws_$v"
		[ -s "$W/$id.tps" ] || continue
		[ "${STATUS[$id]:-}" != error ] || continue
		TPS[$id]=$(median <"$W/$id.tps")
		CPU[$id]=$(awk -v u=$TICK_US '{t += $1; n += $2} END {printf "%.1f", (n > 0) ? t * u / n : 0}' "$W/$id.cpu")
		read -r WS_REJ[$id] WS_RETRY[$id] < <(awk '{a += $1; b += $2; c += $3} END {
			printf "%.1f%% %.2f\n", (a + c) ? 100 * a / (a + c) : 0, c ? b / c : 0}' "$W/$id.counts")
		WS_VIOL[$id]=$(sql1 "SELECT (SELECT count(*) FROM bench.oncall_empty_seen WHERE tbl = 'oncall_$v')
		                          + (SELECT count(*) FROM (SELECT shift FROM bench.oncall_$v GROUP BY shift
		                                                    HAVING count(*) FILTER (WHERE on_duty) < 1) x)")
		STATUS[$id]=ok
	done
}

# | label | committed/s | rejected | retries per commit | violations | CPU | vs baseline |
ws_row() {
	local id=$1 label=$2 base=${3:-} target=${4:-} cmp="" r verdict=""
	case "${STATUS[$id]:-}" in
	missing) say "| $label | not implemented | | | | | |"; return 0 ;;
	error) say "| $label | error | | | | | ${NOTE[$id]:-} |"; return 0 ;;
	ok) ;;
	*) return 0 ;;
	esac
	if [ -n "$base" ] && r=$(ratio "$id" "$base") && [ -n "$r" ]; then
		if [ -n "$target" ]; then
			if awk -v r="${r%x}" -v t="$target" 'BEGIN {exit !(r + 0.0005 >= t)}'; then
				verdict=" (target ≥ ${target}: met)"
			else
				verdict=" (target ≥ ${target}: **missed**)"
			fi
			[ "${WS_VIOL[$id]}" = 0 ] && [ "${WS_VIOL[$base]}" = 0 ] ||
				verdict=" (target ≥ ${target} at zero violations: **missed**, violations)"
			printf '%s\t%s\t%s\t%s\t%s\n' "${id%%.*}" "invariants: write skew, $WS_CLIENTS clients on $WS_HOT hot groups, committed/s (violations: ${WS_VIOL[$id]} vs ${WS_VIOL[$base]}) — $label" \
				"SERIALIZABLE + retries" "$r" "$target" >>"$TARGETS"
		fi
		local cpud; cpud=$(cpu_delta "$id" "$base")
		cmp="$r SERIALIZABLE + retries${cpud:+ (CPU/committed tx $cpud)}$verdict"
	fi
	printf '| %s | %.0f | %s | %s | %s | %s | %s |\n' "$label" "${TPS[$id]}" "${WS_REJ[$id]}" \
		"${WS_RETRY[$id]}" "${WS_VIOL[$id]}" "${CPU[$id]}" "$cmp" | tee -a "$REPORT"
}

report_invariants() {
	local p=$1
	row "$p.inv_plain" "invariants: UPDATE, no check (baseline)"
	row "$p.inv_plpgsql" "invariants: UPDATE, PL/pgSQL deferred trigger (baseline, wrong under concurrency)"
	row "$p.inv_plpgsql_lock" "invariants: UPDATE, PL/pgSQL deferred trigger + advisory lock (baseline, right at READ COMMITTED only)"
	row "$p.inv_idem" "invariants: UPDATE, **idem.enforce_invariant**" \
		"$p.inv_plain:unchecked:" "$p.inv_plpgsql:PL/pgSQL trigger:" "$p.inv_plpgsql_lock:PL/pgSQL trigger + lock:"
	row "$p.ins_plain" "invariants: single-row INSERT into a ledger, no check (baseline)"
	row "$p.ins_plpgsql" "invariants: single-row INSERT into a ledger, PL/pgSQL deferred trigger (baseline, racy)"
	row "$p.ins_idem" "invariants: single-row INSERT into a ledger, **idem.enforce_invariant**" \
		"$p.ins_plpgsql:PL/pgSQL trigger:<=1.15" "$p.ins_plain:unchecked:"
}

report_writeskew() {
	local p=$1
	[ -n "${STATUS[$p.ws_ser]:-}" ] || return 0
	say ""
	say "Contended write skew (bench/workloads/writeskew.pl): $WS_CLIENTS clients, $WS_HOT hot shifts of 10 doctors, each business transaction reads its shift and takes one doctor off (2 or more on duty) or puts one on; rule: at least one on duty. Committed business transactions per second, median of $ROUNDS interleaved round(s) of ${DUR}s; rejected = requests refused with ID030 (not retried); retries = 40001 retries per committed transaction; violations = shifts with nobody on duty at the end + business transactions that read such a shift during the run."
	say ""
	say "| write skew | committed/s | rejected | retries/commit | violations | server CPU µs/committed tx | vs baseline |"
	say "|---|---:|---:|---:|---:|---:|---|"
	ws_row "$p.ws_ser" "no invariant, SERIALIZABLE, retry on 40001 (baseline)"
	ws_row "$p.ws_none" "no invariant, READ COMMITTED (reference: unprotected)"
	ws_row "$p.ws_idem" "**idem.enforce_invariant**, READ COMMITTED" "$p.ws_ser" 2
}

# A relay listening on idem_outbox for the duration of one group: it
# consumes its notifications as a real relay would (psql reads them after
# each statement), so the notifying side pays for a live listener.
RELAY_PID=
relay_listen() {
	{ echo "LISTEN idem_outbox;"; while sleep 0.2; do echo "SELECT 1;"; done; } |
		psql -X -q -o /dev/null >/dev/null 2>&1 &
	RELAY_PID=$!
	local i
	for ((i = 0; i < 50; i++)); do
		[ "$(sql1 "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN idem_outbox%' OR query = 'SELECT 1;'")" -gt 0 ] && return 0
		sleep 0.1
	done
	echo "relay did not start listening" >&2
	return 1
}
relay_stop() {
	[ -n "$RELAY_PID" ] || return 0
	pkill -P "$RELAY_PID" 2>/dev/null || true
	kill "$RELAY_PID" 2>/dev/null || true
	wait "$RELAY_PID" 2>/dev/null || true
	RELAY_PID=
}

section_outbox() {
	local p=$1 mode=$2
	step "[$p] outbox: emit one event (no relay listening)"
	run_group "$p" "$mode" $CLIENTS "emit_raw=emit_raw.sql" "emit_notify=$(ref emit_raw_notify.sql)" \
		"emit_pgq=emit_pgq.sql" "emit_idem=$(pick "$HAS_OUTBOX" emit_idem.sql)" \
		"emit_app=$(pick "$HAS_OUTBOX" emit_idem_app.sql)"
	# emit notifies only while a session listens; with a relay listening,
	# it pays what the hand-written INSERT + NOTIFY pays.
	[ -n "$HAS_OUTBOX" ] || return 0
	step "[$p] outbox: emit one event, a relay listening on idem_outbox"
	relay_listen
	run_group "$p" "$mode" $CLIENTS "emit_notify_heard=emit_raw_notify.sql" \
		"emit_idem_heard=emit_idem.sql"
	relay_stop
}

report_outbox() {
	local p=$1
	row "$p.emit_raw" "outbox: emit — raw INSERT (baseline)"
	row "$p.emit_notify" "outbox: emit — raw INSERT + pg_notify (baseline)"
	row "$p.emit_pgq" "outbox: emit — PgQ pgq.insert_event" "$p.emit_raw:raw INSERT:"
	row "$p.emit_idem" "outbox: emit — **idem.emit**" \
		"$p.emit_raw:raw INSERT:0.9" "$p.emit_notify:INSERT + notify:" "$p.emit_pgq:PgQ:"
	row "$p.emit_app" "outbox: emit — **idem.emit** as an application role (topic patterns)" \
		"$p.emit_idem:as the owner:" "$p.emit_raw:raw INSERT:"
	row "$p.emit_notify_heard" "outbox: emit, relay listening — raw INSERT + pg_notify (baseline)" \
		"$p.emit_raw:raw INSERT:"
	row "$p.emit_idem_heard" "outbox: emit, relay listening — **idem.emit**" \
		"$p.emit_notify_heard:INSERT + notify:0.9" "$p.emit_raw:raw INSERT:"
}

# --- drain: one consumer, DRAIN_EVENTS committed events, batches of 1000 ---

# Fill the queue of one variant with DRAIN_EVENTS events, 100 per
# transaction (many writing transactions, as in production).  Not timed.
drain_fill() {
	local v=$1 n=$((DRAIN_EVENTS / 100))
	local ev="jsonb_build_object('order_id', i * 100 + g, 'amount', g)"
	case $v in
	idem)
		sql1 "SELECT idem.unsubscribe('bench_drain')" >/dev/null
		sql1 "SELECT idem.subscribe('bench_drain', ARRAY['orders'])" >/dev/null
		sql1 "DO \$\$ BEGIN FOR i IN 1..$n LOOP
		        PERFORM idem.emit('orders', $ev, 'o' || (i * 100 + g)) FROM generate_series(1, 100) g;
		        COMMIT; END LOOP; END \$\$" ;;
	skiplocked | delete_returning)
		sql1 "DO \$\$ BEGIN FOR i IN 1..$n LOOP
		        INSERT INTO bench.raw_outbox (topic, key, payload)
		        SELECT 'orders', 'o' || (i * 100 + g), $ev FROM generate_series(1, 100) g;
		        COMMIT; END LOOP; END \$\$" ;;
	pgq)
		# PgQ cuts batches at ticks: tick after every 1000 events (what its
		# ticker does with queue_ticker_max_count = 1000).
		sql1 "SELECT pgq.drop_queue('bench_drain', true) FROM pgq.queue WHERE queue_name = 'bench_drain'" >/dev/null
		sql1 "SELECT pgq.create_queue('bench_drain')" >/dev/null
		sql1 "SELECT pgq.set_queue_config('bench_drain', 'ticker_max_count', '1000'),
		             pgq.set_queue_config('bench_drain', 'ticker_max_lag', '1 hour'),
		             pgq.register_consumer('bench_drain', 'bench')" >/dev/null
		sql1 "DO \$\$ BEGIN FOR i IN 1..$n LOOP
		        PERFORM pgq.insert_event('bench_drain', 'orders', ($ev)::text) FROM generate_series(1, 100) g;
		        COMMIT;
		        IF i % 10 = 0 THEN PERFORM pgq.ticker('bench_drain'); COMMIT; END IF;
		        END LOOP; END \$\$" ;;
	esac
	sql1 "VACUUM ANALYZE" >/dev/null
}

# Events still waiting for the consumer after the drain (must be 0).
drain_left() {
	case $1 in
	idem) sql1 "SELECT count(*) FROM idem.next_batch('bench_drain', 1000000)" ;;
	skiplocked | delete_returning) sql1 "SELECT count(*) FROM bench.raw_outbox" ;;
	pgq) sql1 "SELECT count(*) FROM pgq.get_batch_events(pgq.next_batch('bench_drain', 'bench'))" 2>/dev/null || echo 0 ;;
	esac
}

# Time deleting what the drain left behind: pg_idem keeps finished events
# until maintenance trims them (idem.trim_outbox, which idem.maintain()
# calls), 10000 per transaction; the SKIP LOCKED loop deleted as it went;
# PgQ rotates its tables with TRUNCATE, which costs nothing per event.
drain_cleanup_ms() {
	case $1 in
	idem)
		[ -n "$HAS_TRIM" ] || { echo ""; return 0; }
		local t0 t1
		t0=$(now_ns)
		sql1 "DO \$\$ BEGIN FOR i IN 1..100000 LOOP
		        EXIT WHEN idem.trim_outbox(10000) = 0; COMMIT; END LOOP; END \$\$"
		t1=$(now_ns)
		echo $(((t1 - t0) / 1000000)) ;;
	*) echo 0 ;;
	esac
}

declare -A DRAIN_RATE DRAIN_CLEAN_RATE DRAIN_P99 DRAIN_NOTE
section_drain() {
	local p=$1 v r variants=(skiplocked delete_returning pgq idem)
	[ -z "$QUICK" ] || variants=(skiplocked pgq idem)
	local batches=$((DRAIN_EVENTS / 1000 + 2))
	step "[$p] outbox: one consumer drains $DRAIN_EVENTS events, batches of 1000"
	for v in "${variants[@]}"; do rm -f "$W/drain.$p.$v".*; done
	for ((r = 1; r <= DRAIN_ROUNDS; r++)); do
		for v in "${variants[@]}"; do
			[ "$v" != idem ] || [ -n "$HAS_OUTBOX" ] || continue
			[ -z "${DRAIN_NOTE[$p.$v]:-}" ] || continue
			drain_fill "$v"
			sql1 "CHECKPOINT"
			local logdir="$W/log.drain" out="$W/drain.out" t0 t1 rc=0 left ms clean
			rm -rf "$logdir"; mkdir -p "$logdir"; chmod 777 "$logdir"
			t0=$(now_ns)
			pgbench -n -M prepared -c 1 -j 1 -t "$batches" --log --log-prefix="$logdir/tx" \
				-f "$WL/drain_$v.sql" >"$out" 2>&1 || rc=$?
			t1=$(now_ns)
			if [ $rc -ne 0 ] || grep -q aborted "$out"; then
				DRAIN_NOTE[$p.$v]="error: $(grep -m1 -iE 'error|fatal' "$out" | cut -c1-160)"
				echo "   $v: ${DRAIN_NOTE[$p.$v]}"
				continue
			fi
			left=$(drain_left "$v")
			if [ "$left" != 0 ]; then
				DRAIN_NOTE[$p.$v]="$left events left after $batches batches"
				echo "   $v: ${DRAIN_NOTE[$p.$v]}"
				continue
			fi
			ms=$(((t1 - t0) / 1000000))
			clean=$(drain_cleanup_ms "$v")
			echo "$ms ${clean:--}" >>"$W/drain.$p.$v.ms"
			cat "$logdir"/tx.* | awk '{print $3}' >>"$W/drain.$p.$v.lat"
			printf '   %-18s %8d events/s%s\n' "$v" $((DRAIN_EVENTS * 1000 / (ms > 0 ? ms : 1))) \
				"${clean:+ (cleanup ${clean} ms)}"
		done
	done
	for v in "${variants[@]}"; do
		[ -s "$W/drain.$p.$v.ms" ] || continue
		DRAIN_RATE[$p.$v]=$(awk -v n="$DRAIN_EVENTS" '{print n * 1000 / $1}' "$W/drain.$p.$v.ms" | sort -g |
			awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
		if ! grep -q -- ' -$' "$W/drain.$p.$v.ms"; then
			DRAIN_CLEAN_RATE[$p.$v]=$(awk -v n="$DRAIN_EVENTS" '{print n * 1000 / ($1 + $2)}' "$W/drain.$p.$v.ms" | sort -g |
				awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
		fi
		DRAIN_P99[$p.$v]=$(sort -n "$W/drain.$p.$v.lat" | awk '{a[NR]=$1} END {i=int(NR*0.99+0.999); printf "%.2f", a[i]/1000}')
	done
	sql1 "SELECT pgq.drop_queue('bench_drain', true) FROM pgq.queue WHERE queue_name = 'bench_drain'" >/dev/null
	[ -z "$HAS_OUTBOX" ] || sql1 "SELECT idem.unsubscribe('bench_drain')" >/dev/null
}

drain_row() {
	local p=$1 v=$2 label=$3 target=${4:-} rate cmp="" r
	if [ -n "${DRAIN_NOTE[$p.$v]:-}" ]; then
		say "| $label | ${DRAIN_NOTE[$p.$v]} | | | |"
		return 0
	fi
	rate=${DRAIN_RATE[$p.$v]:-}
	if [ -z "$rate" ]; then
		[ "$v" != idem ] || say "| $label | not implemented | | | |"
		return 0
	fi
	if [ "$v" != skiplocked ] && [ -n "${DRAIN_RATE[$p.skiplocked]:-}" ]; then
		# paired by round, like ratio()
		r=$(paste "$W/drain.$p.$v.ms" "$W/drain.$p.skiplocked.ms" |
			awk '$1 > 0 {print $3 / $1}' | median | awk '{printf "%.2fx", $1}')
		cmp="$r SKIP LOCKED loop"
		if [ -n "$target" ]; then
			if awk -v r="${r%x}" -v t="$target" 'BEGIN {exit !(r + 0.0005 >= t)}'; then
				cmp+=" (target ≥ $target: met)"
			else
				cmp+=" (target ≥ $target: **missed**)"
			fi
			printf '%s\t%s\t%s\t%s\t%s\n' "$p" "outbox: drain $DRAIN_EVENTS events" "SKIP LOCKED loop" "$r" "$target" >>"$TARGETS"
		fi
	fi
	local clean=${DRAIN_CLEAN_RATE[$p.$v]:-}
	printf '| %s | %.0f | %s | %s | %s |\n' "$label" "$rate" \
		"$( [ -n "$clean" ] && printf '%.0f' "$clean" || echo "n/a")" "${DRAIN_P99[$p.$v]}" "$cmp" | tee -a "$REPORT"
}

report_drain() {
	local p=$1
	say ""
	say "One consumer drains $DRAIN_EVENTS committed events (written 100 per transaction) in batches of 1000, every row sent to the client; median of $DRAIN_ROUNDS round(s)."
	say ""
	say "| drain | events/s | events/s incl. cleanup | p99 ms per batch | vs baseline |"
	say "|---|---:|---:|---:|---|"
	drain_row "$p" skiplocked "SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1000 + DELETE loop (baseline)"
	drain_row "$p" delete_returning "DELETE ... RETURNING, one statement (at-most-once; reference)"
	drain_row "$p" pgq "PgQ next_batch / get_batch_events / finish_batch"
	drain_row "$p" idem "**idem.next_batch / finish_batch**" 1.5
}

# --- scale: cost as the stored state grows (fsync off) ---

section_scale() {
	local p=scale
	say ""
	say "### How cost grows with size (fsync = off, $CLIENTS clients, -M prepared, $ROUNDS rounds)"
	if [ -z "$HAS_KEYS" ]; then
		say ""; say "Keys: not implemented."
	else
		say ""
		say "Keys already stored in idem.keys (completed, written by INSERT ... SELECT from a row made by reserve + complete; the size is measured before the new reserves of the run add theirs):"
		say ""
		say "| keys stored | idem.keys size (table + indexes) | reserve new key TPS | mean ms | p99 ms | CPU µs/tx | replay of a stored key TPS | mean ms | p99 ms | CPU µs/tx |"
		say "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		sql1 "SELECT idem.complete('template', (idem.reserve('template', '{\"amount\": 1}')).token, '{\"payment_id\": 1}', 201)" >/dev/null
		# Every column of the template row, with the key replaced.
		local cols sel
		cols=$(sql1 "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
		             WHERE attrelid = 'idem.keys'::regclass AND attnum > 0 AND NOT attisdropped
		               AND attgenerated = '' AND attidentity = ''")
		sel=$(sql1 "SELECT string_agg(CASE WHEN attname = 'key' THEN '''k'' || g' ELSE 't.' || quote_ident(attname) END,
		                              ', ' ORDER BY attnum) FROM pg_attribute
		             WHERE attrelid = 'idem.keys'::regclass AND attnum > 0 AND NOT attisdropped
		               AND attgenerated = '' AND attidentity = ''")
		local have=0 n lo hi
		for n in $SCALE_KEYS; do
			lo=$((have + 1))
			while [ "$lo" -le "$n" ]; do
				hi=$((lo + 999999)); [ "$hi" -le "$n" ] || hi=$n
				sql1 "INSERT INTO idem.keys ($cols) SELECT $sel FROM idem.keys t, generate_series($lo, $hi) g
				      WHERE t.key = 'template'"
				lo=$((hi + 1))
			done
			have=$n
			step "[scale] $n keys stored, vacuum"
			psqlq -c "VACUUM ANALYZE idem.keys" -c "CHECKPOINT"
			local size
			size=$(sql1 "SELECT pg_size_pretty(pg_total_relation_size('idem.keys'))")
			step "[scale] $n keys stored ($size)"
			run_group "$p$n" prepared $CLIENTS "new=reserve_idem.sql" "replay=replay_idem.sql" -- -D existing="$n"
			# the new keys reserved by the run (in progress) go, so that the
			# next level starts from exactly its count
			sql1 "DELETE FROM idem.keys WHERE state <> 'completed'"
			if [ "${STATUS[$p$n.new]:-}" = ok ] && [ "${STATUS[$p$n.replay]:-}" = ok ]; then
				printf '| %s | %s | %.0f | %.3f | %.3f | %s | %.0f | %.3f | %.3f | %s |\n' "$n" "$size" \
					"${TPS[$p$n.new]}" "${MEAN[$p$n.new]}" "${P99[$p$n.new]}" "${CPU[$p$n.new]}" \
					"${TPS[$p$n.replay]}" "${MEAN[$p$n.replay]}" "${P99[$p$n.replay]}" "${CPU[$p$n.replay]}" | tee -a "$REPORT"
			else
				say "| $n | $size | error | | | | error | | | |"
			fi
		done
	fi

	if [ -z "$HAS_OUTBOX" ]; then
		say ""; say "Outbox: not implemented."
		return 0
	fi
	# A consumer that never finishes a batch keeps every event retained; the
	# measured consumer is caught up, then polls: a batch of 1000 new events,
	# and an empty poll (nothing new).
	say ""
	say "Outbox events retained (held by a consumer that never finishes; the measured consumer has caught up), one consumer, -c 1:"
	say ""
	say "| events retained | idem.outbox size | batch of 1000 new events (next_batch + finish_batch): mean ms | p99 ms | empty poll: mean ms | p99 ms |"
	say "|---:|---:|---:|---:|---:|---:|"
	sql1 "SELECT idem.unsubscribe('bench_drain'), idem.unsubscribe('bench_slow')" >/dev/null
	sql1 "SELECT idem.subscribe('bench_slow'), idem.subscribe('bench_drain')" >/dev/null
	local retained=0 level
	for level in 0 "$SCALE_EVENTS"; do
		if [ "$level" -gt 0 ]; then
			local i chunks=$((level / 100000))
			for ((i = 0; i < chunks; i++)); do
				sql1 "SELECT count(idem.emit('orders', jsonb_build_object('order_id', g), 'o' || g))
				        FROM generate_series(1, 100000) g" >/dev/null
			done
			# the measured consumer catches up (not timed)
			pgbench -n -M prepared -c 1 -j 1 -t $((level / 1000 + 2)) -f "$WL/drain_idem.sql" >/dev/null 2>&1 || true
			retained=$level
			psqlq -c "VACUUM ANALYZE" -c "CHECKPOINT"
		fi
		step "[scale] outbox, $level events retained"
		rm -f "$W/sbatch.lat" "$W/spoll.lat"
		local k logdir="$W/log.scale"
		for k in 1 2 3; do
			# 10 transactions of 1000 new events, then 10 batches of 1000
			sql1 "DO \$\$ BEGIN FOR i IN 1..10 LOOP
			        PERFORM idem.emit('orders', jsonb_build_object('order_id', g), 'o' || g)
			           FROM generate_series(1, 1000) g;
			        COMMIT; END LOOP; END \$\$"
			rm -rf "$logdir"; mkdir -p "$logdir"; chmod 777 "$logdir"
			pgbench -n -M prepared -c 1 -j 1 -t 10 --log --log-prefix="$logdir/tx" \
				-f "$WL/drain_idem.sql" >/dev/null 2>&1 || true
			cat "$logdir"/tx.* 2>/dev/null | awk '{print $3}' >>"$W/sbatch.lat"
		done
		rm -rf "$logdir"; mkdir -p "$logdir"; chmod 777 "$logdir"
		pgbench -n -M prepared -c 1 -j 1 -t 1000 --log --log-prefix="$logdir/tx" \
			-f "$WL/drain_idem.sql" >/dev/null 2>&1 || true
		cat "$logdir"/tx.* 2>/dev/null | awk '{print $3}' >>"$W/spoll.lat"
		local size bm bp pm pp
		size=$(sql1 "SELECT pg_size_pretty(pg_total_relation_size('idem.outbox'))")
		read -r bm bp < <(sort -n "$W/sbatch.lat" | awk '{a[NR]=$1; s+=$1} END {i=int(NR*0.99+0.999); if (NR) printf "%.3f %.3f\n", s/NR/1000, a[i]/1000; else print "- -"}')
		read -r pm pp < <(sort -n "$W/spoll.lat" | awk '{a[NR]=$1; s+=$1} END {i=int(NR*0.99+0.999); if (NR) printf "%.3f %.3f\n", s/NR/1000, a[i]/1000; else print "- -"}')
		say "| $retained | $size | $bm | $bp | $pm | $pp |"
	done
}

# --- emit cost (issue 14): idem.emit vs the hand-written INSERT, with and
# without preload, fsync on and off -------------------------------------------

# Restart the cluster with or without pg_idem preloaded (postgresql.conf is
# edited: ALTER SYSTEM would write an empty list as one empty file name).
set_preload() {
	local libs=''
	[ "$1" = on ] && libs=pg_idem
	idem_as_pg sed -i "s/^shared_preload_libraries = .*/shared_preload_libraries = '$libs'/" \
		"$IDEM_WORK/data/postgresql.conf"
	idem_as_pg pg_ctl -D "$IDEM_WORK/data" -l "$IDEM_WORK/server.log" -w -s restart 9>&- >/dev/null
	[ "$(sql1 "SHOW shared_preload_libraries" 2>/dev/null || psql -X -At -d postgres -c "SHOW shared_preload_libraries")" = "$libs" ] ||
		{ echo "restart with shared_preload_libraries = '$libs' failed" >&2; return 1; }
}

EMITCOST_ROUNDS=${BENCH_EMITCOST_ROUNDS:-$([ -n "$QUICK" ] && echo 3 || echo 7)}
section_emitcost() {
	local pre fs p saved=$ROUNDS
	ROUNDS=$EMITCOST_ROUNDS
	for pre in on off; do
		set_preload "$pre"
		for fs in on off; do
			p="ec_pre${pre}_fs$fs"
			set_fsync "$fs"
			fresh_db
			step "[emit cost] preload $pre, fsync $fs: idem.emit vs the hand-written INSERT, no relay listening"
			run_group "$p" prepared $CLIENTS "hand=emit_handwritten.sql" "emit=$(pick "$HAS_OUTBOX" emit_idem.sql)" \
				"notify=$(ref emit_handwritten_notify.sql)"
		done
	done
	set_preload on
	ROUNDS=$saved
}

report_emitcost() {
	local pre fs p target
	say ""
	say "## emit vs the hand-written INSERT (issue 14)"
	say ""
	say "\`bench.handwritten_outbox\` is the table a team writes by hand: \`id bigserial PRIMARY KEY, topic, key, payload jsonb, created_at\`, nothing else; \`emit_handwritten.sql\` inserts one event per transaction, \`emit_idem.sql\` calls \`idem.emit\`; the reference \`emit_handwritten_notify.sql\` adds a NOTIFY to the INSERT, which is what 0.2.0's emit paid on every commit without preload. No session listens. synchronous_commit = on; $CLIENTS clients, -M prepared, $EMITCOST_ROUNDS interleaved rounds of ${DUR}s; ratio = median over rounds of the paired TPS ratio. Without preload the library is loaded by each backend's first call, and the cluster is restarted between the two halves."
	table_head
	for pre in on off; do
		for fs in on off; do
			p="ec_pre${pre}_fs$fs"
			target=0.95; [ "$fs" = on ] && target=0.97
			row "$p.hand" "preload $pre, fsync $fs — hand-written INSERT (baseline)"
			row "$p.emit" "preload $pre, fsync $fs — **idem.emit**" "$p.hand:hand-written INSERT:$target"
			row "$p.notify" "preload $pre, fsync $fs — hand-written INSERT + NOTIFY on every commit (reference: 0.2.0's emit without preload)" \
				"$p.hand:hand-written INSERT:"
		done
	done
}

# --- held snapshot (issue 14): emit + drain for D minutes with and without a
# session holding an old snapshot, for pg_idem, SKIP LOCKED + DELETE and PgQ --

HOLD_MINUTES=${IDEM_BENCH_HOLD_MINUTES:-10}
# (seconds, for trying the section out: overrides the minutes)
HOLD_SECS=${IDEM_BENCH_HOLD_SECONDS:-$((HOLD_MINUTES * 60))}
HOLD_EMITTERS=4
# Events per second the emitters offer together (pgbench --rate), the same
# for every system and both runs: a relay that keeps up is the steady state
# of production, and an outbox whose relay cannot keep up grows whatever
# its storage.  On 2 cores, emitters running flat out take 4/5 of the CPU
# and leave the one relay behind, so the default is a rate each relay
# here sustains without a held snapshot.  0: as fast as they can.
HOLD_RATE=${IDEM_BENCH_HOLD_RATE:-10000}
# IDEM_BENCH_HOLD_SYSTEMS narrows the systems compared (idem skiplocked pgq).
HOLD_SYSTEMS=${IDEM_BENCH_HOLD_SYSTEMS:-idem skiplocked pgq}
declare -A HOLD_RES

# The relations that hold one system's events (table and partitions or
# rotated tables), as a SQL list of regclass.
hold_rels() {
	case $1 in
	idem) echo "SELECT 'idem.outbox'::regclass UNION SELECT relid FROM pg_partition_tree('idem.outbox')" ;;
	skiplocked) echo "SELECT 'bench.handwritten_outbox'::regclass" ;;
	pgq) echo "SELECT c.oid::regclass FROM pg_class c, pgq.queue q
	            WHERE q.queue_name = 'bench_drain' AND c.relkind = 'r'
	              AND c.relnamespace = 'pgq'::regnamespace
	              AND c.relname ~ ('^' || split_part(q.queue_data_pfx, '.', 2) || '(_[0-9]+)?$')" ;;
	esac
}

# Events emitted but not yet consumed.
hold_backlog() {
	case $1 in
	idem) sql1 "SELECT pending FROM idem.consumer_lag WHERE consumer = 'bench_drain'" ;;
	skiplocked) sql1 "SELECT count(*) FROM bench.handwritten_outbox" ;;
	pgq)
		# events after the last tick are not counted by pending_events: tick first
		sql1 "SELECT pgq.ticker('bench_drain')" >/dev/null
		sql1 "SELECT coalesce(pending_events, 0) FROM pgq.get_consumer_info('bench_drain', 'bench')" ;;
	esac
}

# What runs beside the relay in production: pg_idem's maintenance (the
# worker calls idem.maintain(); here every second), PgQ's ticker and pgqd's
# maintenance (rotation, retry, vacuum of its own tables); the hand-written
# outbox relies on autovacuum alone.
hold_maintenance_loop() {
	local sys=$1 i=0 f a
	while :; do
		case $sys in
		idem) sql1 "SELECT count(*) FROM idem.maintain()" >/dev/null 2>&1 || true ;;
		pgq)
			sql1 "SELECT pgq.ticker()" >/dev/null 2>&1 || true
			if ((i % 5 == 0)); then
				sql1 "SELECT func_name || ' ' || coalesce(func_arg, '') FROM pgq.maint_operations()" 2>/dev/null |
					while read -r f a; do
						if [ "$f" = vacuum ]; then
							sql1 "VACUUM $a" >/dev/null 2>&1 || true
						else
							sql1 "SELECT $f(${a:+'$a'})" >/dev/null 2>&1 || true
						fi
					done
			fi ;;
		*) ;;
		esac
		i=$((i + 1))
		sleep "$([ "$sys" = pgq ] && echo 0.2 || echo 1)"
	done
}

# Every 10 s, the size (heap + indexes + TOAST) of the system's event
# tables, one line per sample: the peak shows whether the size stayed flat
# during the run, which the size at the end alone would not.
hold_size_sampler() {
	local sys=$1 out=$2
	: >"$out"
	while :; do
		sql1 "SELECT sum(pg_total_relation_size(r)) FROM ($(hold_rels "$sys")) t(r)" >>"$out" 2>/dev/null || true
		sleep 10
	done
}

# The relay's script for this section: the drain script, then a 10 ms sleep
# when the batch was empty (each drain script leaves batch_id or last_id 0
# then), so that an idle relay does not spin on a core the emitters need.
hold_idle_script() {
	local f="$W/hold.$1"
	{ cat "$WL/$1"
	  case $1 in
	  drain_handwritten.sql) echo '\if :last_id = 0' ;;
	  *) echo '\if :batch_id = 0' ;;
	  esac
	  echo '\sleep 10 ms'
	  echo '\endif'
	} >"$f"
	echo "$f"
}

hold_prepare() {
	case $1 in
	idem) sql1 "SELECT idem.subscribe('bench_drain', ARRAY['orders'])" >/dev/null ;;
	pgq)
		sql1 "SELECT pgq.create_queue('bench_drain')" >/dev/null
		# batches of about 1000 events as in the drain section; rotation
		# every minute instead of PgQ's default 2 hours, so that it can
		# show within the run
		sql1 "SELECT pgq.set_queue_config('bench_drain', 'ticker_max_count', '1000'),
		             pgq.set_queue_config('bench_drain', 'ticker_max_lag', '1 second'),
		             pgq.set_queue_config('bench_drain', 'rotation_period', '1 minute'),
		             pgq.register_consumer('bench_drain', 'bench')" >/dev/null ;;
	*) ;;
	esac
}

section_hold() {
	local sys hold secs=$HOLD_SECS emit_script drain_script
	local holder mloop sampler epid dpid out_e out_d emitted backlog size dead peak
	for sys in $HOLD_SYSTEMS; do
		[ "$sys" != idem ] || [ -n "$HAS_OUTBOX" ] || continue
		case $sys in
		idem) emit_script=emit_idem.sql; drain_script=drain_idem.sql ;;
		skiplocked) emit_script=emit_handwritten.sql; drain_script=drain_handwritten.sql ;;
		pgq) emit_script=emit_pgq_drain.sql; drain_script=drain_pgq.sql ;;
		esac
		for hold in no yes; do
			fresh_db
			hold_prepare "$sys"
			psqlq -c "VACUUM ANALYZE" -c "CHECKPOINT"
			step "[hold] $sys, snapshot held: $hold, $HOLD_MINUTES min, $HOLD_EMITTERS emitters + 1 relay"
			holder=
			if [ "$hold" = yes ]; then
				# a report that opened its snapshot and went idle in transaction
				# (the sleep's pid is kept: bash waits for the whole pipeline)
				{ echo "BEGIN ISOLATION LEVEL REPEATABLE READ;"
				  echo "SELECT count(*) FROM bench.report_source;"
				  sleep $((secs + 600)) &
				  echo $! >"$W/holder.sleep"
				  wait; } | psql -X -q -o /dev/null >/dev/null 2>&1 &
				holder=$!
				local i
				for ((i = 0; i < 50; i++)); do
					[ "$(sql1 "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND backend_xmin IS NOT NULL")" -gt 0 ] && break
					sleep 0.1
				done
			fi
			hold_maintenance_loop "$sys" >/dev/null 2>&1 &
			mloop=$!
			hold_size_sampler "$sys" "$W/hold.$sys.$hold.sizes" >/dev/null 2>&1 &
			sampler=$!
			out_e="$W/hold.$sys.$hold.emit"; out_d="$W/hold.$sys.$hold.drain"
			cut -d' ' -f1 /proc/loadavg >>"$W/load.samples"
			PGOPTIONS="-c client_min_messages=warning" pgbench -n -M prepared -c $HOLD_EMITTERS -j 2 -T "$secs" \
				$([ "$HOLD_RATE" -gt 0 ] && echo "-R $HOLD_RATE") -f "$WL/$emit_script" >"$out_e" 2>&1 &
			epid=$!
			# the relay sleeps 10 ms after an empty batch, as a relay that
			# waits for a wake-up or polls would (hold_idle_script)
			PGOPTIONS="-c client_min_messages=warning" pgbench -n -M prepared -c 1 -j 1 -T "$secs" \
				-f "$(hold_idle_script "$drain_script")" >"$out_d" 2>&1 &
			dpid=$!
			wait $epid || true
			wait $dpid || true
			kill "$mloop" "$sampler" 2>/dev/null || true
			wait "$mloop" "$sampler" 2>/dev/null || true
			sleep 2	# let the statistics of the last transactions arrive
			emitted=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out_e")
			backlog=$(hold_backlog "$sys")
			read -r size dead < <(sql1 "SELECT sum(pg_total_relation_size(r)), sum(coalesce(s.n_dead_tup, 0))
			                              FROM ($(hold_rels "$sys")) t(r)
			                              LEFT JOIN pg_stat_all_tables s ON s.relid = t.r" | tr '|' ' ')
			if [ -n "$holder" ]; then
				kill "$(cat "$W/holder.sleep")" 2>/dev/null || true
				kill "$holder" 2>/dev/null || true
				wait "$holder" 2>/dev/null || true
				sql1 "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE state = 'idle in transaction'" >/dev/null
			fi
			if [ -z "$emitted" ] || [ -z "$backlog" ] || grep -q aborted "$out_e" "$out_d"; then
				HOLD_RES[$sys.$hold]="error: $(grep -h -m1 -iE 'error|fatal' "$out_e" "$out_d" | head -n1 | cut -c1-160)"
				echo "   ${HOLD_RES[$sys.$hold]}"
				continue
			fi
			peak=$( (cat "$W/hold.$sys.$hold.sizes"; echo "$size") | grep -E '^[0-9]+$' | sort -n | tail -n1)
			HOLD_RES[$sys.$hold]="$emitted $backlog $size $dead $peak"
			printf '   %-10s hold=%-3s emitted %8d/s drained %8d/s backlog %8d size %s (peak %s) dead %s\n' "$sys" "$hold" \
				$((emitted / secs)) $(((emitted - backlog) / secs)) "$backlog" \
				"$(numfmt --to=iec "$size" 2>/dev/null || echo "$size")" \
				"$(numfmt --to=iec "$peak" 2>/dev/null || echo "$peak")" "$dead"
		done
	done
}

report_hold() {
	local sys label secs=$HOLD_SECS e b s d pk e0 b0
	say ""
	say "## Emit + drain with a held snapshot (issue 14)"
	say ""
	say "$HOLD_EMITTERS emitters (one event per transaction, pgbench -M prepared) and one relay (batches of up to 1000) run for $((HOLD_SECS / 60)) min $((HOLD_SECS % 60)) s (IDEM_BENCH_HOLD_MINUTES, default 10), fsync = off, the emitters offering $([ "$HOLD_RATE" -gt 0 ] && echo "$HOLD_RATE events/s together (pgbench --rate; IDEM_BENCH_HOLD_RATE, 0 for as fast as they can)" || echo "as many events as they can (IDEM_BENCH_HOLD_RATE=0)"), the relay sleeping 10 ms after an empty batch, once with a session that ran \`BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT ... FROM another table\` and went idle in transaction for the whole run, once without it. Maintenance runs as it would in production: \`idem.maintain()\` every second for pg_idem; \`pgq.ticker()\` every 0.2 s and pgqd's maintenance operations every second for PgQ (rotation_period 1 minute); autovacuum for the SKIP LOCKED table. Size = heap + indexes (+ TOAST) of every table holding the system's events at the end, peak = the largest of that size sampled every 10 s; dead = their n_dead_tup; backlog = events emitted and not yet consumed at the end. One run per cell (not interleaved rounds)."
	say ""
	say "| system | snapshot held | emitted/s | drained/s | backlog | size | peak size | dead tuples | drained/s, held vs not |"
	say "|---|---|---:|---:|---:|---:|---:|---:|---|"
	for sys in idem skiplocked pgq; do
		case $sys in
		idem) label="**pg_idem** (emit / next_batch + finish_batch)" ;;
		skiplocked) label="hand-written table, SKIP LOCKED + DELETE" ;;
		pgq) label="PgQ (insert_event / next_batch)" ;;
		esac
		local hold cmp
		for hold in no yes; do
			case "${HOLD_RES[$sys.$hold]:-}" in
			"") continue ;;
			error*) say "| $label | $hold | ${HOLD_RES[$sys.$hold]} | | | | | | |"; continue ;;
			esac
			read -r e b s d pk <<<"${HOLD_RES[$sys.$hold]}"
			cmp=""
			if [ "$hold" = yes ] && [ -n "${HOLD_RES[$sys.no]:-}" ] && [[ "${HOLD_RES[$sys.no]}" != error* ]]; then
				read -r e0 b0 _ _ _ <<<"${HOLD_RES[$sys.no]}"
				cmp=$(awk -v a=$((e - b)) -v z=$((e0 - b0)) 'BEGIN {if (z > 0) printf "%.2fx", a / z}')
			fi
			say "| $label | $hold | $((e / secs)) | $(((e - b) / secs)) | $b | $(numfmt --to=iec --suffix=B "$s" 2>/dev/null || echo "$s") | $(numfmt --to=iec --suffix=B "$pk" 2>/dev/null || echo "$pk") | $d | $cmp |"
		done
	done
}

# ---------------------------------------------------------------------------
# Least privilege (issue 15): what the per-call scope and topic checks cost.
# reserve and emit as bench_app, which fresh_db granted with scope and topic
# patterns (the checked path: one cached answer per scope or topic, src/
# privileges.c), against the very same calls as the owner, a superuser whom
# the checks exempt (the unchecked path), paired round by round.  The target
# is a cost of at most 2%, so this section runs more rounds than the others
# and prints the paired cost with three decimals.
# ---------------------------------------------------------------------------
PRIV_ROUNDS=${BENCH_PRIV_ROUNDS:-$([ -n "$QUICK" ] && echo 4 || echo 10)}

section_privileges() {
	local p=$1 mode=$2
	local ROUNDS=$PRIV_ROUNDS	# run_group reads it
	step "[$p] privileges: reserve of a new key, as the owner and as an application role with scope patterns"
	run_group "$p" "$mode" $CLIENTS "priv_reserve_owner=$(pick "$HAS_KEYS" reserve_idem.sql)" \
		"priv_reserve_app=$(pick "$HAS_KEYS" reserve_idem_app.sql)"
	step "[$p] privileges: emit, as the owner and as an application role with topic patterns"
	run_group "$p" "$mode" $CLIENTS "priv_emit_owner=$(pick "$HAS_OUTBOX" emit_idem.sql)" \
		"priv_emit_app=$(pick "$HAS_OUTBOX" emit_idem_app.sql)"
}

# Paired cost of a over b: the median over rounds of b's TPS / a's TPS in
# the same round, to three decimals ("1.013").
paired_cost() {
	local a=$1 b=$2
	[ "${STATUS[$a]:-}" = ok ] && [ "${STATUS[$b]:-}" = ok ] || return 0
	paste "$W/$a.tps" "$W/$b.tps" | awk 'NF == 2 && $1 > 0 {print $2 / $1}' | median |
		awk '{printf "%.3f", $1}'
}

report_privileges() {
	local p=$1 w app owner c verdict
	say ""
	say "Least privilege: the same call as an application role granted with patterns (checked) and as the owner (a superuser, not checked); $PRIV_ROUNDS interleaved rounds of ${DUR}s, cost = median over rounds of owner TPS / application-role TPS in the same round (target: at most 1.02)."
	say ""
	say "| pass | call | owner TPS | application role TPS | paired cost | CPU/tx | target ≤ 1.02 |"
	say "|---|---|---:|---:|---:|---:|---|"
	for w in reserve emit; do
		app="$p.priv_${w}_app"; owner="$p.priv_${w}_owner"
		c=$(paired_cost "$app" "$owner")
		[ -n "$c" ] || continue
		if awk -v c="$c" 'BEGIN {exit !(c <= 1.02 + 0.0005)}'; then verdict=met; else verdict="**missed**"; fi
		say "| $p | idem.$w | $(printf '%.0f' "${TPS[$owner]}") | $(printf '%.0f' "${TPS[$app]}") | ${c}x | $(cpu_delta "$app" "$owner") | $verdict |"
		printf '%s\t%s\t%s\t%s\t%s\n' "$p" "idem.$w as an application role with patterns" \
			"as the owner (cost)" "${c}x" "<=1.02" >>"$TARGETS"
	done
}

# ---------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
yn() { if [ -n "$1" ]; then echo yes; else echo no; fi; }
set_fsync() {
	psqlq -d postgres -c "ALTER SYSTEM SET fsync = $1" -c "SELECT pg_reload_conf()" >/dev/null
}

fresh_db
{
	echo "# pg_idem benchmark"
	echo ""
	echo "$(date -u '+%Y-%m-%d %H:%M UTC'); ${QUICK:+BENCH_QUICK=1 (quick check: fewer, shorter rounds); }commit $(git -C "$IDEM_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo ""
	echo "- machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(. /etc/os-release && echo "$PRETTY_NAME"), load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "- server: $(sql1 "SELECT version()" | cut -d, -f1); pgbench $(pgbench --version | awk '{print $3}'); PgQ $(sql1 "SELECT extversion FROM pg_extension WHERE extname = 'pgq'")"
	echo "- settings: $(sql1 "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings
		WHERE name IN ('shared_buffers', 'synchronous_commit', 'wal_level', 'max_wal_size', 'checkpoint_timeout',
		               'autovacuum', 'full_page_writes', 'wal_compression', 'jit')"), server on the same machine as pgbench, Unix socket"
	echo "- pg_idem capabilities present: keys=$(yn "$HAS_KEYS"), versions=$(yn "$HAS_VERSIONS"), outbox=$(yn "$HAS_OUTBOX"), trim_outbox=$(yn "$HAS_TRIM"), invariants=$(yn "$HAS_INVARIANTS")"
	echo "- method: pgbench -M prepared, $CLIENTS clients, $THREADS threads ($HOT_CLIENTS clients for hot keys), $ROUNDS interleaved rounds of ${DUR}s per variant (A B C, C B A, ...); TPS = median over rounds; latency mean and p99 over every transaction (pgbench --log); server CPU µs/tx = CPU time of this cluster's processes (backends, reaped children, walwriter, autovacuum...) over all rounds / transactions, less sensitive than TPS to other load on the machine (not immune: contention for cores and caches inflates it too); ratio = median over rounds of pg_idem TPS / baseline TPS in the same round (paired, so drift cancels), with the difference in server CPU per transaction paired the same way"
} | tee -a "$REPORT"

# Profile mode: perf over the named workloads, then stop.
if [ -n "${BENCH_PROFILE:-}" ]; then
	command -v perf >/dev/null || idem_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
	set_fsync off
	fresh_db
	load_data
	for script in $BENCH_PROFILE; do
		out="$RESULTS_DIR/profile-${script%.sql}.txt"
		echo "== perf: $script"
		data="$RESULTS_DIR/profile-${script%.sql}.data"
		perf record -q -e cpu-clock -a -g -o "$data" -- \
			pgbench -n -M prepared -c $CLIENTS -j $THREADS -T "${BENCH_DURATION:-10}" \
			-D retry_pct=0 -D existing=$EXISTING_KEYS -f "$WL/$script" >"$W/perf.pgbench" 2>&1 &
		# other clusters on this machine run postgres too: report only the
		# processes of this one (the postmaster's children during the run)
		sleep 2
		pids=$(pgrep -d, -P "$(head -n1 "$IDEM_WORK/data/postmaster.pid")")
		wait $! || true
		{
			echo "# $script: $(grep '^tps' "$W/perf.pgbench")"
			echo "# self time by function, this cluster's server processes"
			perf report -i "$data" --stdio --no-children --pid "$pids" --percentage relative \
				--sort dso,symbol -g none --percent-limit 0.7 2>/dev/null | grep -v -e '^#' -e '^$' || true
			echo "# inclusive time (children), this cluster's server processes"
			perf report -i "$data" --stdio --children --pid "$pids" --percentage relative \
				--sort symbol -g none --percent-limit 2 2>/dev/null | grep -v -e '^#' -e '^$' || true
		} >"$out"
		echo "$pids" >"${out%.txt}.pids"
		head -n 40 "$out"
	done
	exit 0
fi

for fs in $PASSES; do
	p="fsync_$fs"
	set_fsync "$fs"
	fresh_db
	load_data
	want keys && section_keys "$p" prepared
	want versions && section_versions "$p" prepared
	want outbox && section_outbox "$p" prepared
	want privileges && section_privileges "$p" prepared
	want invariants && section_invariants "$p" prepared
	# the drain starts from empty outbox tables
	want drain && { fresh_db; section_drain "$p"; }
	if [ "$fs" = on ]; then
		say ""; say "## fsync = on (durable commits)"
	else
		say ""; say "## fsync = off (CPU-bound: per-call cost shows)"
	fi
	if want keys || want versions || want outbox || want invariants; then
		table_head
		! want keys || report_keys "$p"
		! want versions || report_versions "$p"
		! want outbox || report_outbox "$p"
		! want invariants || report_invariants "$p"
	fi
	! want privileges || report_privileges "$p"
	! want invariants || report_writeskew "$p"
	! want drain || report_drain "$p"
done

set_fsync off
ROUNDS=$SIDE_ROUNDS
if want simple; then
	fresh_db
	load_data
	p=simple
	section_keys "$p" simple
	section_versions "$p" simple
	section_outbox "$p" simple
	say ""
	say "## Simple query protocol (fsync = off)"
	say ""
	say "The same workloads with pgbench -M simple ($ROUNDS rounds): every statement is parsed and planned on each call. The hand-written SQL pays that per statement; pg_idem's C functions keep their inner plans, so this mode flatters pg_idem and the prepared tables above are the fair comparison."
	table_head
	report_keys "$p"
	report_versions "$p"
	report_outbox "$p"
fi

if want scale; then
	fresh_db
	section_scale
fi

if want emitcost; then
	section_emitcost
	report_emitcost
fi

if want hold; then
	set_fsync off
	section_hold
	report_hold
fi

# Every ratio that has a target, in one place.
if [ -s "$TARGETS" ]; then
	say ""
	say "## Targets (issues 3, 4, 5, 15; -M prepared)"
	say ""
	say "| pass | pg_idem workload | baseline | ratio | target | |"
	say "|---|---|---|---:|---:|---|"
	while IFS=$'\t' read -r pass label base r target; do
		if [[ "$target" == '<='* ]]; then
			if awk -v r="${r%x}" -v t="${target#<=}" 'BEGIN {exit !(r <= t + 0.0005)}'; then v=met; else v="**missed**"; fi
			target="≤ ${target#<=}x (cost)"
		else
			if awk -v r="${r%x}" -v t="$target" 'BEGIN {exit !(r + 0.0005 >= t)}'; then v=met; else v="**missed**"; fi
			target="≥ $target"
		fi
		say "| $pass | $(echo "$label" | sed 's/\*\*//g') | $base | $r | $target | $v |"
	done <"$TARGETS"
fi

say ""
say "Total run time: $(( $(date +%s) - T0 )) s; load average at end $(cut -d' ' -f1-3 /proc/loadavg); mean 1-minute load average at the start of the rounds $(cat "$W/load.samples" 2>/dev/null | awk '{s += $1} END {if (NR) printf "%.1f", s / NR; else printf "n/a"}') (this machine has $(nproc) cores: above that, other processes competed with the benchmark)."
cp "$REPORT" "$RESULTS_DIR/latest.md"
cp "$REPORT" "$RESULTS_DIR/$(date -u +%Y%m%dT%H%M%SZ)${QUICK:+-quick}.md"
echo ""
echo "== report written to bench/results/latest.md"
