# test/scripts/lib.sh — shared by `make test`, `make demo` and `make bench`.
#
# Installs what is missing, builds and installs the extension, and runs a
# throwaway PostgreSQL cluster as an unprivileged OS user on a private socket
# directory and port.  The cluster is stopped and removed on every exit path.
#
# Source it, then call: idem_setup (deps + build + install), idem_cluster_start.
# After start: PGHOST, PGPORT, PGUSER, PGDATABASE are exported, and
# IDEM_WORK is the cluster's private directory.

set -euo pipefail

IDEM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IDEM_PG_MAJOR=${IDEM_PG_MAJOR:-15}
IDEM_PG_USER=${IDEM_PG_USER:-postgres}
IDEM_LOCK=${IDEM_LOCK:-/tmp/pg_idem-harness.lock}

# Run a command as root: directly when we are root, else through sudo.
idem_as_root() {
	if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Run a command as the unprivileged cluster owner.  PostgreSQL refuses to
# run as root, so as root we drop to $IDEM_PG_USER; as any other user we
# already are unprivileged.
idem_as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u "$IDEM_PG_USER" -- env PATH="$PATH" "$@"
	else
		"$@"
	fi
}

# Install the Debian packages the build and the suites need, only when one
# of them is missing (so a second run does not touch apt at all).
idem_install_deps() {
	local pkgs=(
		make gcc
		"postgresql-$IDEM_PG_MAJOR"
		"postgresql-server-dev-$IDEM_PG_MAJOR"
		"postgresql-$IDEM_PG_MAJOR-pgtap"
		libtap-parser-sourcehandler-pgtap-perl
		libipc-run-perl
		libdbd-pg-perl
		# examples/ (run by the suite "examples"): a driver per language,
		# each from Debian, and curl to drive the services.
		python3-psycopg
		golang-go golang-github-jackc-pgx-v4-dev
		libpostgresql-jdbc-java
		curl
		"$@"
	)
	local missing=() p
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	# A JDK and Node.js may come from elsewhere than Debian's packages (a
	# NodeSource nodejs bundles npm and conflicts with Debian's npm): ask
	# for the Debian packages only when the command is missing.
	command -v javac >/dev/null || missing+=(default-jdk-headless)
	command -v node >/dev/null || missing+=(nodejs)
	command -v npm >/dev/null || missing+=(npm)
	if [ ${#missing[@]} -gt 0 ]; then
		echo "== installing: ${missing[*]}"
		idem_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		idem_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends "${missing[@]}" >/dev/null
	fi
	export PG_CONFIG="/usr/lib/postgresql/$IDEM_PG_MAJOR/bin/pg_config"
	PGBIN=$("$PG_CONFIG" --bindir)
	export PGBIN
	export PATH="$PGBIN:$PATH"
}

# The clients suite runs real ORMs and drivers, from Debian where Debian 12
# has them (psycopg 3.1, SQLAlchemy 1.4 on psycopg2, ActiveRecord 6.1 on
# ruby-pg, PgJDBC 42.5, Spring JDBC 4.3) and from npm for Node (pg,
# Sequelize, TypeORM: versions pinned by test/clients/node/package-lock.json).
# A machine that already has node (TypeORM 1.x needs 20.19 or later) and a
# JDK keeps them; otherwise Debian's are installed.
idem_client_pkgs() {
	echo python3 python3-psycopg python3-psycopg2 python3-sqlalchemy \
		ruby ruby-activerecord ruby-pg libpostgresql-jdbc-java libspring-jdbc-java
	command -v node >/dev/null 2>&1 || echo nodejs
	command -v npm >/dev/null 2>&1 || echo npm
	command -v java >/dev/null 2>&1 || echo openjdk-17-jdk-headless
}

# Install the npm packages of the clients suite into test/clients/node, from
# the committed lock file, only when the lock file changed since the last
# install.
idem_client_npm() {
	local dir="$IDEM_ROOT/test/clients/node" sum
	sum=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
	if [ "$(cat "$dir/node_modules/.idem-lock-sum" 2>/dev/null)" != "$sum" ]; then
		echo "== installing npm packages of the clients suite (npm ci)"
		# A failed install must not stop the other suites: the Node client
		# tests then fail on the missing modules, and are counted.
		if (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
			echo "$sum" >"$dir/node_modules/.idem-lock-sum"
		else
			echo "== npm ci failed: the Node client tests will fail" >&2
		fi
	fi
}

# Take the harness lock: installing the extension and running suites against
# it must not interleave with another checkout doing the same on this machine.
idem_lock() {
	exec 9>"$IDEM_LOCK"
	chmod 666 "$IDEM_LOCK" 2>/dev/null || true
	flock 9
}

# Build warning-free and install into the PostgreSQL named by pg_config.
idem_build_install() {
	echo "== building pg_idem"
	make -C "$IDEM_ROOT" -s PG_CONFIG="$PG_CONFIG" COPT=-Werror >/dev/null
	idem_as_root make -C "$IDEM_ROOT" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

idem_setup() {
	idem_install_deps "$@"
	idem_lock
	idem_build_install
}

# Find a TCP port nobody listens on, starting from $1.
idem_free_port() {
	local p=$1
	while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
	echo "$p"
}

# Start a throwaway cluster.  Extra postgresql.conf lines may be passed as
# arguments.
idem_cluster_start() {
	IDEM_WORK=$(mktemp -d /tmp/pg_idem.XXXXXX)
	chmod 755 "$IDEM_WORK"
	[ "$(id -u)" -ne 0 ] || chown "$IDEM_PG_USER" "$IDEM_WORK"
	export IDEM_WORK
	trap idem_cluster_stop EXIT
	trap 'exit 130' INT TERM

	PGPORT=$(idem_free_port "${IDEM_PORT:-54329}")
	export PGHOST="$IDEM_WORK" PGPORT PGUSER="$IDEM_PG_USER" PGDATABASE=postgres

	idem_as_pg initdb -D "$IDEM_WORK/data" -U "$IDEM_PG_USER" --auth=trust \
		--no-sync --encoding=UTF8 --locale=C >"$IDEM_WORK/initdb.log" 2>&1 ||
		{ cat "$IDEM_WORK/initdb.log"; return 1; }
	{
		echo "port = $PGPORT"
		echo "listen_addresses = '127.0.0.1'"
		echo "unix_socket_directories = '$IDEM_WORK'"
		echo "shared_preload_libraries = 'pg_idem'"
		echo "max_connections = 200"
		echo "max_prepared_transactions = 10"
		echo "fsync = off"
		echo "log_min_messages = warning"
		local line
		for line in "$@"; do echo "$line"; done
	} >>"$IDEM_WORK/data/postgresql.conf"
	# 9>&-: the server must not inherit the harness lock, or a server left
	# behind by a killed run would hold it forever.
	idem_as_pg pg_ctl -D "$IDEM_WORK/data" -l "$IDEM_WORK/server.log" -w -s start 9>&- ||
		{ cat "$IDEM_WORK/server.log"; return 1; }
	echo "== throwaway cluster on port $PGPORT, socket $IDEM_WORK"
}

# Stop the cluster and remove its directory; safe to call twice.
idem_cluster_stop() {
	local rc=$?
	if [ -n "${IDEM_WORK:-}" ] && [ -d "$IDEM_WORK" ]; then
		if [ -f "$IDEM_WORK/data/postmaster.pid" ]; then
			idem_as_pg pg_ctl -D "$IDEM_WORK/data" -m immediate -w -s stop >/dev/null 2>&1 || true
		fi
		rm -rf "$IDEM_WORK"
	fi
	IDEM_WORK=
	return $rc
}
