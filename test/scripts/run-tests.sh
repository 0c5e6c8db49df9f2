#!/usr/bin/env bash
# test/scripts/run-tests.sh — what `make test` runs.
#
# Installs what is missing, builds and installs pg_idem, starts a throwaway
# cluster, and runs every suite against it:
#   regress    sql/ + expected/            (pg_regress)
#   isolation  test/specs/ + test/expected/ (pg_isolation_regress)
#   pgtap      test/pgtap/*.sql            (pg_prove)
#   tap        test/t/*.pl                 (prove, PostgreSQL::Test::Cluster)
#   doctest    README.md + docs/*.md       (test/doctest/: every SQL example,
#              every public name documented once, META.json; and a self-test
#              proving the checker fails on broken fixtures)
#   clients    test/clients/               (real ORMs and drivers, TAP output)
#   examples   examples/run.sh             (the HTTP services of examples/, driven by curl)
# and ends with the line "N passed, N failed", counting individual tests.
# A failing suite prints its diff or its failing assertions.
#
# IDEM_SUITES="regress isolation" runs a subset of the suites;
# IDEM_TAP="031_outbox_notify.pl" a subset of the perl TAP scripts.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITES=${IDEM_SUITES:-regress isolation pgtap tap doctest clients examples}
passed=0
failed=0
broken=()
suite_total=0
last_bad=0

extra_pkgs=()
case " $SUITES " in *" clients "*) read -r -a extra_pkgs <<<"$(idem_client_pkgs | tr '\n' ' ')" ;; esac
idem_setup "${extra_pkgs[@]}"
case " $SUITES " in *" clients "*) idem_client_npm ;; esac
idem_cluster_start
cd "$IDEM_ROOT"
LOGS="$IDEM_WORK/logs"
mkdir -p "$LOGS"

# Count pg_regress / pg_isolation_regress result lines in a log.
count_regress() {
	local log=$1 ok bad
	ok=$(grep -cE '\.\.\. ok' "$log" || true)
	bad=$(grep -cE '\.\.\. (FAILED|failed)' "$log" || true)
	passed=$((passed + ok)); failed=$((failed + bad))
	suite_total=$((ok + bad)); last_bad=$bad
}

# Count top-level TAP results in verbose prove output.  A script that died
# or planned more tests than it ran still counts as one failure.
count_tap() {
	local log=$1 ok bad
	ok=$(grep -cE '^(\S+\.(pl|sql) \.+ )?ok [0-9]+' "$log" || true)
	bad=$(grep -cE '^(\S+\.(pl|sql) \.+ )?not ok [0-9]+' "$log" || true)
	# (the ok pattern cannot match "not ok": nothing to subtract)
	if grep -q '^Result: FAIL' "$log" && [ "$bad" -eq 0 ]; then bad=1; fi
	passed=$((passed + ok)); failed=$((failed + bad))
	suite_total=$((ok + bad)); last_bad=$bad
}

# A runner that exited non-zero without reporting a failed test (pg_regress
# aborting on a missing expected file, a prove bail-out) or that ran no test
# at all still counts as a failure: a suite can never pass by not running.
check_runner() {
	local suite=$1 rc=$2
	if [ "$suite_total" -eq 0 ]; then
		broken+=("$suite: ran no test")
	elif [ "$rc" -ne 0 ] && [ "$last_bad" -eq 0 ]; then
		broken+=("$suite: runner exited with status $rc without a failed test")
	fi
}

run_regress() {
	[ -n "$(ls sql/*.sql 2>/dev/null)" ] || return 0
	echo "== regress (pg_regress)"
	rm -f regression.diffs
	local rc=0
	make -s installcheck PG_CONFIG="$PG_CONFIG" ISOLATION= TAP_TESTS= 2>&1 | tee "$LOGS/regress.log" || rc=$?
	[ ! -s regression.diffs ] || head -n 400 regression.diffs
	count_regress "$LOGS/regress.log"
	check_runner regress "$rc"
}

run_isolation() {
	[ -n "$(ls test/specs/*.spec 2>/dev/null)" ] || return 0
	echo "== isolation (pg_isolation_regress)"
	rm -f output_iso/regression.diffs
	local rc=0
	make -s installcheck PG_CONFIG="$PG_CONFIG" REGRESS= TAP_TESTS= 2>&1 | tee "$LOGS/isolation.log" || rc=$?
	[ ! -s output_iso/regression.diffs ] || head -n 400 output_iso/regression.diffs
	count_regress "$LOGS/isolation.log"
	check_runner isolation "$rc"
}

run_pgtap() {
	[ -n "$(ls test/pgtap/*.sql 2>/dev/null)" ] || return 0
	echo "== pgtap (pg_prove)"
	PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS idem_pgtap" -c "CREATE DATABASE idem_pgtap"
	psql -X -q -v ON_ERROR_STOP=1 -d idem_pgtap -c "CREATE EXTENSION pgtap" -c "CREATE EXTENSION pg_idem"
	local rc=0
	pg_prove -v -d idem_pgtap test/pgtap/*.sql >"$LOGS/pgtap.log" 2>&1 || rc=$?
	grep -vE '^\s*ok [0-9]+' "$LOGS/pgtap.log" || true
	count_tap "$LOGS/pgtap.log"
	check_runner pgtap "$rc"
}

tap_scripts() {
	if [ -n "${IDEM_TAP:-}" ]; then
		local f
		for f in $IDEM_TAP; do echo "t/$f"; done
	else
		echo t/*.pl
	fi
}

# Perl TAP tests start clusters of their own, so they run as the
# unprivileged user, from a copy it can read and write.
run_tap() {
	[ -n "$(ls test/t/*.pl 2>/dev/null)" ] || return 0
	echo "== tap (prove, PostgreSQL::Test::Cluster)"
	local tapdir="$IDEM_WORK/tap"
	mkdir -p "$tapdir"
	cp -r test/t "$tapdir/t"
	[ "$(id -u)" -ne 0 ] || chown -R "$IDEM_PG_USER" "$tapdir"
	local pgxs_perl
	pgxs_perl="$(dirname "$("$PG_CONFIG" --pgxs)")/../test/perl"
	local rc=0
	(cd "$tapdir" && idem_as_pg env TESTDIR="$tapdir" PATH="$PGBIN:$PATH" \
		PG_REGRESS="$(dirname "$("$PG_CONFIG" --pgxs)")/../test/regress/pg_regress" \
		IDEM_ROOT="$IDEM_ROOT" \
		prove -v -I "$pgxs_perl" -I t $(tap_scripts) 9>&-) >"$LOGS/tap.log" 2>&1 || rc=$?
	grep -vE '^\s*ok [0-9]+' "$LOGS/tap.log" || true
	if grep -q '^Result: FAIL' "$LOGS/tap.log"; then
		for f in "$tapdir"/tmp_check/log/regress_log_*; do
			[ -f "$f" ] && grep -q 'not ok' "$f" && { echo "--- $f (tail)"; tail -n 60 "$f"; }
		done
	fi
	count_tap "$LOGS/tap.log"
	check_runner tap "$rc"
}

# The doc test runs every example of README.md and docs/*.md against this
# cluster (a fresh database per file) and checks that every function,
# setting and error code is documented exactly once; the self-test runs it
# on broken fixtures and asserts that it reports them.
run_doctest() {
	[ -f test/doctest/doctest.pl ] || return 0
	echo "== doctest (README.md, docs/*.md)"
	local rc=0
	prove -v test/doctest/doctest.pl test/doctest/selftest.pl >"$LOGS/doctest.log" 2>&1 || rc=$?
	grep -vE '^\s*ok [0-9]+' "$LOGS/doctest.log" || true
	count_tap "$LOGS/doctest.log"
	check_runner doctest "$rc"
}

# The clients suite: each test under test/clients/ runs a real ORM or driver
# against tables guarded by idem.enforce_version(..., 'strict') and prints
# TAP.  Each runs a second time with IDEM_GUARD=off (the same tables without
# the guard) and must then fail: a client test that passes without the guard
# proves nothing.  That second run counts as one test per client.
client_tests() {
	local j=/usr/share/java
	local cp="$j/postgresql.jar:$j/spring3-jdbc.jar:$j/spring3-core.jar:$j/spring3-beans.jar"
	cp="$cp:$j/spring3-transaction.jar:$j/commons-logging.jar:."
	# name|directory|command ; Debian's python3, not one earlier in PATH
	echo "psycopg|test/clients|/usr/bin/python3 psycopg_driver.py"
	echo "sqlalchemy|test/clients|/usr/bin/python3 sqlalchemy_orm.py"
	echo "activerecord|test/clients|ruby activerecord_orm.rb"
	echo "node-pg|test/clients/node|node pg_driver.js"
	echo "sequelize|test/clients/node|node sequelize_orm.js"
	echo "typeorm|test/clients/node|node typeorm_orm.js"
	echo "pgjdbc|test/clients/java|java -cp $cp PgJdbcTest.java"
}

run_clients() {
	[ -d test/clients ] || return 0
	echo "== clients (ORMs and drivers)"
	PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS idem_clients" -c "CREATE DATABASE idem_clients"
	psql -X -q -v ON_ERROR_STOP=1 -d idem_clients -c "CREATE EXTENSION pg_idem"
	local log="$LOGS/clients.log" name dir cmd rc out n=0 failing start=$SECONDS
	: >"$log"
	while IFS='|' read -r name dir cmd; do
		out="$LOGS/clients-$name.log"
		rc=0
		(cd "$dir" && PGDATABASE=idem_clients IDEM_GUARD=on timeout 120 $cmd </dev/null) >"$out" 2>"$out.stderr" || rc=$?
		echo "# $name" >>"$log"
		cat "$out" >>"$log"
		# A test that died, or ended without its plan line, is a failure even
		# if every assertion it printed passed.
		if [ "$rc" -ne 0 ] && ! grep -q '^not ok' "$out" || ! grep -qE '^1\.\.[1-9]' "$out"; then
			echo "not ok - $name exited with status $rc (stderr below)" >>"$log"
			sed 's/^/# /' "$out.stderr" | tail -n 30 >>"$log"
		fi
		rc=0
		(cd "$dir" && PGDATABASE=idem_clients IDEM_GUARD=off timeout 120 $cmd </dev/null) >"$out.noguard" 2>&1 || rc=$?
		failing=$(grep -E '^not ok' "$out.noguard" | sed -E 's/^not ok ([0-9]+) - .*/\1/' | paste -sd, -)
		n=$((n + 1))
		if [ "$rc" -ne 0 ] && [ -n "$failing" ]; then
			echo "ok $n - $name fails without the guard (assertions $failing)" >>"$log"
		else
			echo "not ok $n - $name fails without the guard (it exited $rc, failing: ${failing:-none})" >>"$log"
		fi
	done < <(client_tests)
	# The non-SQL code blocks of docs/orms.md must be code these tests run.
	echo "# docs/orms.md quotes" >>"$log"
	rc=0
	/usr/bin/python3 test/clients/doc_quotes.py >"$LOGS/doc_quotes.log" 2>&1 || rc=$?
	cat "$LOGS/doc_quotes.log" >>"$log"
	if [ "$rc" -ne 0 ] && ! grep -q '^not ok' "$LOGS/doc_quotes.log"; then
		echo "not ok - doc_quotes.py exited with status $rc" >>"$log"
	fi
	grep -vE '^ok [0-9]+' "$log" || true
	grep -E '^ok [0-9]+ - .* without the guard' "$log" || true
	echo "== clients took $((SECONDS - start))s"
	count_tap "$log"
	# (a "not ok - name exited ..." line has no number: count it here)
	local died
	died=$(grep -c '^not ok - ' "$log" || true)
	failed=$((failed + died)); last_bad=$((last_bad + died)); suite_total=$((suite_total + died))
	check_runner clients 0
}

# The example services (Python, Node, Go, Java) and the relay, built and
# run against the throwaway cluster; examples/run.sh prints TAP.
run_examples() {
	[ -f examples/run.sh ] || return 0
	echo "== examples (examples/run.sh)"
	local rc=0
	bash examples/run.sh >"$LOGS/examples.log" 2>&1 || rc=$?
	grep -vE '^ok [0-9]+' "$LOGS/examples.log" || true
	count_tap "$LOGS/examples.log"
	check_runner examples "$rc"
}

for suite in $SUITES; do
	"run_$suite"
done

for b in "${broken[@]}"; do
	echo "suite $b: counted as a failure"
	failed=$((failed + 1))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
