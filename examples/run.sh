#!/usr/bin/env bash
# examples/run.sh: run every example service against a live cluster, as TAP.
#
#   PGHOST=... PGPORT=... PGUSER=<superuser> bash examples/run.sh [python node go java]
#
# Needs a running PostgreSQL 15 where pg_idem is installed (make install), a
# superuser in the libpq environment, and the tools of the examples
# (test/scripts/lib.sh installs them for `make test`): /usr/bin/python3 with
# python3-psycopg, node and npm, go with golang-github-jackc-pgx-v4-dev, a JDK
# with libpostgresql-jdbc-java, curl.
#
# It (re)creates database $IDEM_EXAMPLES_DB (default idem_examples), loads
# examples/schema.sql, starts the relay (examples/python/relay.py), then for
# each language builds its service into a private directory, starts it on a
# free port as role idem_example_app, drives it with curl and stops it:
#   first POST 201; same key and body: replay; a GET of the row; 404 for a
#   missing row; same key, other body: 422; the same key while the first
#   request holds it: 409 (the request holds it through the test-only header
#   Idem-Test-Delay-Ms, honoured because the service runs with
#   IDEM_EXAMPLES_TEST_DELAY=1); bad requests: 400; a failing transaction:
#   500 and the key released; a lost serialization race (40001): 503 and
#   the key released; the database refusing connections: 503; and
#   exactly one payment row per key.
# The relay is stopped after the first example and started again after the
# second.  At the end run.sh checks that it published every payment exactly
# once, woken by NOTIFY alone (its poll interval is longer than the run).
# Prints "ok N - ..." / "not ok N - ..." and "1..N"; exits 1 on a failure.

set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DB=${IDEM_EXAMPLES_DB:-idem_examples}
APP_ROLE=idem_example_app
PYTHON=${PYTHON:-/usr/bin/python3}   # Debian's python3-psycopg is for this one
JDBC_JAR=${JDBC_JAR:-/usr/share/java/postgresql.jar}
LANGS=${*:-python node go java}
WORK=$(mktemp -d /tmp/idem_examples.XXXXXX)
RUN_ID=$(date +%s)-$$
# go build needs a cache directory; without HOME it has none by default.
[ -n "${GOCACHE:-}" ] || [ -n "${HOME:-}" ] || export GOCACHE="$WORK/gocache"

n=0
failures=0
pids=()

# Leave the cluster as we found it: servers and relay stopped, the app role
# able to connect and to insert again.
cleanup() {
	local p
	for p in "${pids[@]}"; do stop_pid "$p"; done
	psql -X -q -d "$DB" -c "ALTER ROLE $APP_ROLE CONNECTION LIMIT -1" \
		-c "GRANT INSERT ON payments TO $APP_ROLE" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT

# stop_pid PID: SIGTERM, then wait at most 30 s (SIGKILL after).  Sets
# STOP_RC to the exit status, or to "still running after 30 s".  (Not in a
# $(...) subshell: only this shell can wait for its children.)
stop_pid() {
	kill "$1" 2>/dev/null
	if timeout 30 tail --pid="$1" -s 0.1 -f /dev/null; then
		wait "$1" 2>/dev/null
		STOP_RC=$?
	else
		kill -9 "$1" 2>/dev/null
		wait "$1" 2>/dev/null
		STOP_RC="still running after 30 s"
	fi
}

ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() {
	n=$((n + 1)); failures=$((failures + 1))
	echo "not ok $n - $1"
	shift
	local arg
	for arg in "$@"; do printf '%s\n' "$arg" | sed 's/^/#   /'; done
}

# Superuser SQL in the examples database; prints the single value.
admin_sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }

free_port() {
	local p=$1
	while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
	echo "$p"
}

# req METHOD PATH [curl args...]: sets STATUS, BODY and HEADERS (a file).
req() {
	local method=$1 path=$2
	shift 2
	HEADERS="$WORK/headers"
	STATUS=$(curl -sS -o "$WORK/body" -D "$HEADERS" -w '%{http_code}' --max-time 30 \
		-X "$method" "$@" "http://127.0.0.1:$PORT$path" 2>"$WORK/curl.err")
	BODY=$(cat "$WORK/body" 2>/dev/null)
	[ -n "$STATUS" ] || STATUS=000
}

# header NAME: the value of a response header of the last req, or "".
header() { tr -d '\r' <"$HEADERS" | sed -n "s/^$1: *//Ip" | head -n 1; }

# same_json A B: equal but for spaces (each language spaces its error
# bodies its own way; payment bodies are PostgreSQL's jsonb text in all).
same_json() { [ "${1// /}" = "${2// /}" ]; }

# expect DESCRIPTION STATUS [BODY]: compare the last response.
expect() {
	local desc=$1 status=$2 body=${3-}
	if [ "$STATUS" = "$status" ] && { [ $# -lt 3 ] || same_json "$BODY" "$body"; }; then
		ok "$desc"
	else
		not_ok "$desc" "expected status $status${3+ and body $body}" "got status $STATUS and body $BODY"
	fi
}

# expect_unavailable DESC: the last response is 503, "database_unavailable",
# with a Retry-After header (what a client retries later).
expect_unavailable() {
	if [ "$STATUS" = 503 ] && same_json "$BODY" '{"error": "database_unavailable"}' &&
		[ -n "$(header Retry-After)" ]; then
		ok "$1"
	else
		not_ok "$1" "got $STATUS $BODY"
	fi
}

# wait_for CONDITION-COMMAND...: poll a command for up to 30 s (a bound for
# a hung example, not a timing assertion).
wait_for() {
	local i
	for i in $(seq 300); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}

# Build one example into $WORK; prints the command that starts it.
build() {
	case $1 in
	python)
		echo "$PYTHON $HERE/python/server.py"
		;;
	node)
		# A private copy, so that node_modules never lands in the source tree.
		mkdir -p "$WORK/node"
		cp "$HERE/node/package.json" "$HERE/node/package-lock.json" "$HERE/node/server.js" "$WORK/node/"
		(cd "$WORK/node" && npm ci --no-audit --no-fund --loglevel=error) >&2 || return 1
		echo "node $WORK/node/server.js"
		;;
	go)
		# GOPATH mode on Debian's packaged sources (golang-github-jackc-pgx-v4-dev):
		# no module download, no network.
		(cd "$HERE/go" && GOPATH=/usr/share/gocode GO111MODULE=off GOPROXY=off GOFLAGS= \
			go build -o "$WORK/go-server" .) >&2 || return 1
		echo "$WORK/go-server"
		;;
	java)
		javac -d "$WORK/java" -cp "$JDBC_JAR" "$HERE/java/PaymentsServer.java" >&2 || return 1
		echo "java -cp $WORK/java:$JDBC_JAR PaymentsServer"
		;;
	esac
}

# The key is held (reserved, not yet completed) in the database.
key_in_progress() {
	[ "$(admin_sql "SELECT state FROM idem.keys WHERE scope = 'payments' AND key = '$1'")" = in_progress ]
}

# Any HTTP answer will do: what it answers is for the tests that follow.
server_answers() {
	[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/payments/0")" != 000 ]
}

# All checks of one example.
run_example() {
	local lang=$1 k="$lang-$RUN_ID" cmd pid b1 id missing bg
	local body='{"amount_cents": 500, "currency": "EUR"}'
	local same='{"currency":"EUR","amount_cents":500}'   # the same JSON, written differently
	local other='{"amount_cents": 501, "currency": "EUR"}'
	local failed_before=$failures

	PORT=$(free_port 18080)
	if cmd=$(build "$lang" 2>"$WORK/$lang.build"); then
		ok "$lang: builds"
	else
		not_ok "$lang: builds" "$(tail -n 20 "$WORK/$lang.build")"
		cmd=false
	fi
	env PGDATABASE="$DB" PGUSER="$APP_ROLE" PORT="$PORT" IDEM_EXAMPLES_TEST_DELAY=1 \
		$cmd >"$WORK/$lang.log" 2>&1 &
	pid=$!
	pids+=("$pid")
	if wait_for server_answers; then
		ok "$lang: server starts and answers"
	else
		not_ok "$lang: server starts and answers" "$(tail -n 20 "$WORK/$lang.log")"
	fi

	# First request: the payment is made and its response stored.
	req POST /payments -H "Idempotency-Key: $k-a" -d "$body"
	b1=$BODY
	id=$(sed -n 's/^{"id": \([0-9]*\),.*/\1/p' <<<"$b1")
	if [ "$STATUS" = 201 ] && [ -n "$id" ] && [ -z "$(header Idempotent-Replayed)" ] &&
		[[ $b1 == *'"currency": "EUR"'* && $b1 == *'"amount_cents": 500'* ]]; then
		ok "$lang: first POST answers 201 with the payment"
	else
		not_ok "$lang: first POST answers 201 with the payment" "got $STATUS $BODY"
	fi

	# A retry: the stored response, not a second payment.
	req POST /payments -H "Idempotency-Key: $k-a" -d "$same"
	if [ "$STATUS" = 201 ] && [ "$BODY" = "$b1" ] && [ "$(header Idempotent-Replayed)" = true ]; then
		ok "$lang: same key and body again replays the stored response"
	else
		not_ok "$lang: same key and body again replays the stored response" \
			"expected 201 $b1 with Idempotent-Replayed: true" \
			"got $STATUS $BODY (Idempotent-Replayed: $(header Idempotent-Replayed))"
	fi

	req GET "/payments/$id"
	expect "$lang: GET of the payment returns the row" 200 "$b1"

	missing=$(admin_sql "SELECT coalesce(max(id), 0) + 1000000 FROM payments")
	req GET "/payments/$missing"
	expect "$lang: GET of a missing row is 404" 404 '{"error": "not_found"}'
	req GET /payments/abc
	expect "$lang: GET of a malformed id is 404" 404 '{"error": "not_found"}'

	req POST /payments -H "Idempotency-Key: $k-a" -d "$other"
	expect "$lang: same key with another body is 422" 422 '{"error": "idempotency_key_mismatch"}'

	# In progress: the first request holds the key for 3 s (test-only header).
	curl -sS -o "$WORK/bg.body" -w '%{http_code}' --max-time 30 -X POST \
		-H "Idempotency-Key: $k-b" -H 'Idem-Test-Delay-Ms: 3000' -d "$body" \
		"http://127.0.0.1:$PORT/payments" >"$WORK/bg.status" 2>&1 &
	bg=$!
	wait_for key_in_progress "$k-b"
	req POST /payments -H "Idempotency-Key: $k-b" -d "$body"
	if [ "$STATUS" = 409 ] && same_json "$BODY" '{"error": "request_in_progress"}' &&
		[[ $(header Retry-After) =~ ^[1-9][0-9]*$ ]]; then
		ok "$lang: same key while the first request is in progress is 409 with Retry-After"
	else
		not_ok "$lang: same key while the first request is in progress is 409 with Retry-After" \
			"got $STATUS $BODY (Retry-After: $(header Retry-After))"
	fi
	req POST /payments -H "Idempotency-Key: $k-b" -d "$other"
	expect "$lang: another body while in progress is 422" 422 '{"error": "idempotency_key_mismatch"}'
	wait "$bg"
	req POST /payments -H "Idempotency-Key: $k-b" -d "$body"
	if [ "$(cat "$WORK/bg.status")" = 201 ] && [ "$STATUS" = 201 ] &&
		[ "$BODY" = "$(cat "$WORK/bg.body")" ] && [ "$(header Idempotent-Replayed)" = true ]; then
		ok "$lang: the held request completes with 201, then replays"
	else
		not_ok "$lang: the held request completes with 201, then replays" \
			"first: $(cat "$WORK/bg.status") $(cat "$WORK/bg.body")" "retry: $STATUS $BODY"
	fi

	# Bad requests are refused before the key is reserved.
	req POST /payments -d "$body"
	expect "$lang: no Idempotency-Key is 400" 400 '{"error": "missing_idempotency_key"}'
	req POST /payments -H "Idempotency-Key: $k-c" -d '{"amount_cents": "lots"}'
	expect "$lang: an invalid body is 400" 400 '{"error": "invalid_request"}'
	req POST /payments -H "Idempotency-Key: $k-c" -d "$body"
	expect "$lang: a key first sent with an invalid body is still free" 201

	# A failing transaction (the role lost INSERT): 500, and the key is
	# released, so the retry after the fix is made at once (not a 409).
	admin_sql "REVOKE INSERT ON payments FROM $APP_ROLE"
	req POST /payments -H "Idempotency-Key: $k-d" -d "$body"
	expect "$lang: a failing transaction is 500" 500 '{"error": "internal_error"}'
	admin_sql "GRANT INSERT ON payments TO $APP_ROLE"
	req POST /payments -H "Idempotency-Key: $k-d" -d "$body"
	expect "$lang: after a 500 the key was released: the retry is 201" 201

	# The payment's transaction loses a serialization race (40001; here a
	# trigger raises it, as a SERIALIZABLE conflict would): 503 with
	# Retry-After, and the key is released, so the client's retry is made.
	admin_sql "CREATE OR REPLACE FUNCTION public.example_lose_race() RETURNS trigger
	             LANGUAGE plpgsql AS \$\$BEGIN
	               RAISE EXCEPTION 'could not serialize access (simulated)'
	                     USING ERRCODE = 'serialization_failure';
	             END\$\$;
	           SET client_min_messages = warning;
	           DROP TRIGGER IF EXISTS example_lose_race ON payments;
	           CREATE TRIGGER example_lose_race BEFORE INSERT ON payments
	             FOR EACH ROW EXECUTE FUNCTION public.example_lose_race()" >/dev/null
	req POST /payments -H "Idempotency-Key: $k-f" -d "$body"
	expect_unavailable "$lang: a transaction that lost a serialization race (40001) is 503 with Retry-After"
	admin_sql "DROP TRIGGER example_lose_race ON payments" >/dev/null
	req POST /payments -H "Idempotency-Key: $k-f" -d "$body"
	expect "$lang: after a 40001 the key was released: the retry is 201" 201

	# The database refuses connections (53300, too many connections for the
	# role) and the service's open connections are gone: 503.
	admin_sql "ALTER ROLE $APP_ROLE CONNECTION LIMIT 0" >/dev/null
	admin_sql "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity
	           WHERE application_name = 'idem-example-$lang'" >/dev/null
	req POST /payments -H "Idempotency-Key: $k-e" -d "$body"
	expect_unavailable "$lang: POST while the database refuses connections is 503 with Retry-After"
	req GET "/payments/$id"
	expect "$lang: GET while the database refuses connections is 503" 503 '{"error": "database_unavailable"}'
	admin_sql "ALTER ROLE $APP_ROLE CONNECTION LIMIT -1" >/dev/null
	req POST /payments -H "Idempotency-Key: $k-e" -d "$body"
	expect "$lang: the service recovers when the database does" 201

	# No key paid twice, none lost: one row for each of the six keys.
	local counts
	counts=$(admin_sql "SELECT string_agg(idempotency_key || '=' || c, ' ' ORDER BY idempotency_key)
	                      FROM (SELECT idempotency_key, count(*) AS c FROM payments
	                             WHERE idempotency_key LIKE '$k-%' GROUP BY 1) s")
	local want="$k-a=1 $k-b=1 $k-c=1 $k-d=1 $k-e=1 $k-f=1"
	if [ "$counts" = "$want" ]; then
		ok "$lang: exactly one payment row per key"
	else
		not_ok "$lang: exactly one payment row per key" "expected $want" "got $counts"
	fi

	stop_pid "$pid"
	# 143: killed by the SIGTERM (a JVM's status); 0: a clean exit.
	if [ "$STOP_RC" = 0 ] || [ "$STOP_RC" = 143 ]; then
		ok "$lang: server stops on SIGTERM"
	else
		not_ok "$lang: server stops on SIGTERM" "exit status $STOP_RC"
	fi
	if [ "$failures" -gt "$failed_before" ]; then
		echo "# $lang server log (tail):"
		tail -n 30 "$WORK/$lang.log" | sed 's/^/#   /'
	fi
}

relay_caught_up() {
	[ "$(wc -l <"$WORK/relay.out")" -ge "$(admin_sql "SELECT count(*) FROM payments")" ]
}

# --- set up the database
{
	psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" \
		-c "CREATE DATABASE $DB" &&
		psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "CREATE EXTENSION pg_idem" -f "$HERE/schema.sql" &&
		psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -c "ALTER ROLE $APP_ROLE CONNECTION LIMIT -1"
} >"$WORK/setup.log" 2>&1
if [ $? -eq 0 ]; then
	ok "database $DB created with examples/schema.sql"
else
	not_ok "database $DB created with examples/schema.sql" "$(cat "$WORK/setup.log")"
fi

# --- the relay: its poll interval outlasts the run, so only NOTIFY wakes it
relay_start() {
	PGDATABASE="$DB" PGUSER="$APP_ROLE" "$PYTHON" "$HERE/python/relay.py" --poll 3600 \
		>>"$WORK/relay.out" 2>"$WORK/relay.err" &
	relay=$!
	pids+=("$relay")
	if wait_for grep -q listening "$WORK/relay.err"; then
		ok "relay $1"
	else
		not_ok "relay $1" "$(cat "$WORK/relay.err")"
	fi
}

relay_stop() {
	# Bounded, so that a relay deaf to SIGTERM fails the test instead of
	# hanging the run.
	stop_pid "$relay"
	if [ "$STOP_RC" = 0 ]; then
		ok "relay stops on SIGTERM ($1)"
	else
		not_ok "relay stops on SIGTERM ($1)" "exit status $STOP_RC"
	fi
}

relay_start "subscribes and listens"

# The relay is down while the second example runs, and comes back after
# it: the events emitted meanwhile wait for it (re-subscribing keeps the
# consumer's position), and the later examples' events wake it by NOTIFY.
i=0
for lang in $LANGS; do
	run_example "$lang"
	i=$((i + 1))
	case $i in
	1)
		wait_for relay_caught_up
		relay_stop "after the first example"
		;;
	2) relay_start "restarts and resumes" ;;
	esac
done
[ "$i" -ge 2 ] || relay_start "restarts and resumes"

# --- the relay published each payment once, in a JSON line per event
wait_for relay_caught_up
published=$(sed -n 's/.*"payload": {"id": \([0-9]*\),.*/\1/p' "$WORK/relay.out" | sort -n | tr '\n' ' ')
made=$(admin_sql "SELECT string_agg(id::text, ' ' ORDER BY id) || ' ' FROM payments")
if [ -n "$made" ] && [ "$published" = "$made" ]; then
	ok "relay published every payment exactly once, across its restart"
else
	not_ok "relay published every payment exactly once, across its restart" \
		"payments:  $made" "published: $published" "$(tail -n 5 "$WORK/relay.err")"
fi
relay_stop "at the end"

echo "1..$n"
[ "$failures" -eq 0 ]
