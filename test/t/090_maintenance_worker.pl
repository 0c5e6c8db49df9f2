# The maintenance worker (SPEC.md section 4): started by the postmaster when
# pg_idem is preloaded, visible in pg_stat_activity, purges expired keys every
# idem.maintenance_interval, rereads the interval on SIGHUP (0 = idle), waits
# quietly while the extension is missing, exits cleanly on SIGTERM, and comes
# back after a restart, a crash of its own, and a crash of the server.  A
# maintenance database that does not exist costs a log line, not a crash
# loop.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use IdemTest;

# debug1 shows the worker's per-run summary and the exit status the
# postmaster saw; restart_after_crash is off by default in TAP clusters.
my $node = idem_node('worker', 'idem.maintenance_interval = 1s',
	'restart_after_crash = on', 'log_min_messages = debug1');

my $is_worker = q{backend_type = 'pg_idem maintenance'};

sub wait_for_worker
{
	my ($what) = @_;
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE $is_worker"),
		$what);
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE $is_worker");
}

# $n keys in scope 'worker', completed, that expire after $ttl.
sub add_keys
{
	my ($prefix, $n, $ttl) = @_;
	$node->safe_psql(
		'postgres', qq{
		SELECT count(idem.complete(k, (idem.reserve(k, NULL, 'worker', NULL, '$ttl')).token,
		                           '{"ok": true}', 200, 'worker'))
		  FROM (SELECT '$prefix' || i AS k FROM generate_series(1, $n) AS i) AS s});
	return;
}

sub worker_keys
{
	return $node->safe_psql('postgres',
		q{SELECT count(*) FROM idem.keys WHERE scope = 'worker'});
}

sub wait_for_keys
{
	my ($n, $what) = @_;
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = $n FROM idem.keys WHERE scope = 'worker'"),
		$what);
	return;
}

sub set_interval
{
	my ($value) = @_;
	$node->append_conf('postgresql.conf',
		"idem.maintenance_interval = $value\n");
	$node->reload;
	return;
}

# How often a pattern occurs in the server log after an offset.
sub log_count
{
	my ($re, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset);
	my $n = () = $log =~ /$re/g;
	return $n;
}

# --- visible in pg_stat_activity ---------------------------------------

my $pid = wait_for_worker('the worker starts with the server');
is( $node->safe_psql(
		'postgres',
		"SELECT datname, application_name, backend_type
		   FROM pg_stat_activity WHERE $is_worker"),
	'postgres|pg_idem maintenance|pg_idem maintenance',
	'it is connected to idem.maintenance_database and named in pg_stat_activity'
);
ok( $node->log_contains(
		qr/pg_idem maintenance worker started in database "postgres"/),
	'its start is logged');

# --- purges expired keys on schedule -----------------------------------

# Keys that have not expired stay.
add_keys('live', 10, '1 hour');
add_keys('old', 50, '1 second');
is(worker_keys(), 60, 'keys were created');
wait_for_keys(10, 'the worker purged the expired keys on its own');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) FROM idem.keys WHERE scope = 'worker' AND key LIKE 'live%'}
	),
	10,
	'and only those');

# --- SIGHUP: the interval is reloaded; 0 means idle --------------------

my $offset = -s $node->logfile;
set_interval('0');
$offset = $node->wait_for_log(
	qr/idem\.maintenance_interval changed from 1 s to 0 s/, $offset);
# 2500 keys, all expired before the next run (creating them takes well
# under the 2 s waited): that run needs three batches of 1000 rows, and the
# worker keeps going until a batch comes back short.
add_keys('idle', 2500, '1 second');
sleep(2);
is(worker_keys(), 2510, 'with idem.maintenance_interval = 0 nothing is purged');

$offset = -s $node->logfile;
set_interval('1s');
$node->wait_for_log(qr/idem\.maintenance_interval changed from 0 s to 1 s/,
	$offset);
wait_for_keys(10, 'back at 1s, the worker purges again');
ok($node->log_contains(qr/pg_idem maintenance: deleted 2500 expired keys/, $offset),
	'all 2500 in one run of three batches');
is($node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE $is_worker"),
	$pid, 'the same worker process lived through both reloads');

# --- the extension missing: logged once, then checked at every run -----

$offset = -s $node->logfile;
$node->safe_psql('postgres', 'DROP EXTENSION pg_idem');
$node->wait_for_log(
	qr/extension "pg_idem" is not installed in database "postgres"/, $offset);
sleep(2);
is(log_count(qr/extension "pg_idem" is not installed/, $offset),
	1, 'a missing extension is logged once, not at every run');
is($node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE $is_worker"),
	$pid, 'and the worker waits instead of exiting');
$node->safe_psql('postgres', 'CREATE EXTENSION pg_idem');
$node->wait_for_log(qr/extension "pg_idem" found in database "postgres", maintenance resumes/,
	$offset);
add_keys('again', 20, '1 second');
wait_for_keys(0, 'once the extension is back, maintenance resumes');

# --- SIGTERM: a clean exit ---------------------------------------------

$offset = -s $node->logfile;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
$node->wait_for_log(qr/pg_idem maintenance worker shutting down/, $offset);
ok(wait_pid_gone($pid, 30), 'SIGTERM stops the worker');
ok( $node->poll_query_until(
		'postgres', "SELECT count(*) = 0 FROM pg_stat_activity WHERE $is_worker"),
	'it leaves pg_stat_activity');
ok( eval {
		$node->wait_for_log(
			qr/background worker "pg_idem maintenance" \(PID $pid\) exited with exit code 0/,
			$offset);
		1;
	},
	'with exit status 0: a stop, which the postmaster does not retry');
ok(!$node->log_contains(qr/terminating connection because of crash|server process .* was terminated/, $offset),
	'and the server did not restart');

# --- back after a restart, a crash of its own, a crash of the server ---

$node->restart;
$pid = wait_for_worker('after a server restart the worker is back');

$offset = -s $node->logfile;
kill 'KILL', $pid;
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
my $new_pid = wait_for_worker('after SIGKILL of the worker (a crash), the postmaster reinitializes and starts it again');
isnt($new_pid, $pid, 'as a new process');
add_keys('crash', 30, '1 second');
wait_for_keys(0, 'and it purges again');

crash_and_restart($node);
wait_for_worker('after a crash of the whole server the worker is back');
add_keys('crash2', 30, '1 second');
wait_for_keys(0, 'and it purges again');

$node->stop;

# --- a maintenance database that does not exist ------------------------

my $nodb = PostgreSQL::Test::Cluster->new('nodb');
$nodb->init;
$nodb->append_conf(
	'postgresql.conf', q{
shared_preload_libraries = 'pg_idem'
idem.maintenance_database = 'no_such_db'
idem.maintenance_interval = 1s
});
$nodb->start;
$nodb->wait_for_log(qr/FATAL:  database "no_such_db" does not exist/);
sleep(3);
my $fatals = () = slurp_file($nodb->logfile) =~ /database "no_such_db" does not exist/g;
is($fatals, 1, 'a missing maintenance database is retried once a minute, not in a loop');
is($nodb->safe_psql('postgres', 'SELECT 1'), '1', 'and the server runs normally');
ok(!$nodb->log_contains(qr/all server processes terminated/),
	'without crash restarts');
$nodb->stop;

# An empty idem.maintenance_database is refused: the server warns and keeps
# the default.
$nodb->append_conf('postgresql.conf', "idem.maintenance_database = ''\n");
$nodb->start;
ok( $nodb->log_contains(
		qr/invalid value for parameter "idem\.maintenance_database": ""/),
	'an empty idem.maintenance_database is refused');
is($nodb->safe_psql('postgres', 'SHOW idem.maintenance_database'),
	'postgres', 'and the default is kept');
$nodb->stop;

done_testing();
