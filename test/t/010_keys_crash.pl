# Idempotency keys survive crashes the way SPEC.md section 1 promises.
#
# Atomic mode: a backend killed with SIGKILL while it holds a key inside its
# transaction (reserve, business write, complete, not yet committed) leaves
# no trace after crash recovery -- neither the key nor the business row --
# so the retry acquires the key and does the work once.
#
# Lease mode: a key reserved and checkpointed in transactions of their own
# is durable.  After a crash of the whole server it is still held, and its
# holder can go on; once its lease ends, the next reserve takes it over with
# a larger token and the last checkpoint, and the old token is refused
# (ID002).  Afterwards amcheck finds idem.keys and its btrees intact.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use IdemTest;
use IdemReliability qw(amcheck_idem);

# Let the postmaster reinitialize after a backend crash, as in production
# (the test framework turns that off by default).
my $node = idem_node('keys_crash', 'restart_after_crash = on');
$SIG{PIPE} = 'IGNORE';		# psql sessions die with the crashed backend
$node->safe_psql('postgres', 'CREATE TABLE payments (key text PRIMARY KEY, amount integer)');

#
# Atomic mode: SIGKILL the backend in the middle of its transaction.
#
my $holder = $node->background_psql('postgres');
my $pid = $holder->query_safe('SELECT pg_backend_pid()');
$holder->query_safe('BEGIN');
my $token = $holder->query_safe(
	q{SELECT token FROM idem.reserve('pay-1', '{"amount": 100}')});
$holder->query_safe(q{INSERT INTO payments VALUES ('pay-1', 100)});
$holder->query_safe(
	qq{SELECT idem.complete('pay-1', $token, '{"payment": "pay-1"}', 201)});
is($token, '1', 'the holder acquired pay-1 in its transaction');

# A retry meanwhile waits for the holder's transaction: reserve is blocked.
my $retry = $node->background_psql('postgres');
$retry->query_until(qr/started/, q{
\echo started
SELECT outcome FROM idem.reserve('pay-1', '{"amount": 100}');
});
ok( $node->poll_query_until(
		'postgres', qq{SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND $pid = ANY (pg_blocking_pids(pid))}),
	'a concurrent retry waits for the holder');

# The holder dies before committing; the postmaster restarts every backend
# and runs crash recovery.
my $log_offset = -s $node->logfile;
kill 'KILL', $pid;
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
$node->wait_for_log(qr/database system is ready to accept connections/, $log_offset);
eval { $holder->quit; };
eval { $retry->quit; };
ok($node->poll_query_until('postgres', 'SELECT true'), 'the server is back after the crash');

is($node->safe_psql('postgres', q{SELECT count(*) FROM idem.keys WHERE key = 'pay-1'}),
	'0', 'the killed transaction left no key behind');
is($node->safe_psql('postgres', q{SELECT count(*) FROM payments}),
	'0', 'nor its business row');
# (Its token may be handed out again: like any sequence value of a
# transaction that never committed, it was not made durable, and it never
# belonged to a durable reservation.)
my $new_token = $node->safe_psql('postgres',
	q{SELECT token FROM idem.reserve('pay-1', '{"amount": 100}') WHERE outcome = 'acquired' AND recovery_point IS NULL});
ok($new_token ne '', 'the retry acquires the key afresh');
$node->safe_psql('postgres', qq{
	BEGIN;
	INSERT INTO payments VALUES ('pay-1', 100);
	SELECT idem.complete('pay-1', $new_token, '{"payment": "pay-1"}', 201);
	COMMIT;
});
is( $node->safe_psql(
		'postgres',
		q{SELECT outcome || ' ' || response::text || ' ' || (SELECT count(*) FROM payments)
		  FROM idem.reserve('pay-1', '{"amount": 100}')}),
	'replay {"payment": "pay-1"} 1',
	'the retry does the work exactly once, and the next retry replays it');

#
# Lease mode: reserve and checkpoint commit on their own; the server crashes.
#
my $lease_token = $node->safe_psql('postgres',
	q{SELECT token FROM idem.reserve('export-1', '{"export": 1}', lease => '3s')});
$node->safe_psql('postgres',
	qq{SELECT idem.checkpoint('export-1', $lease_token, 'rows-1-500', '{"last_id": 500}', lease => '3s')});

crash_and_restart($node);

is( $node->safe_psql(
		'postgres',
		q{SELECT state || ' ' || recovery_point || ' ' || (checkpoint ->> 'last_id')
		  FROM idem.keys WHERE key = 'export-1'}),
	'in_progress rows-1-500 500',
	'the reservation and its checkpoint survive crash recovery');

# The worker, outside the database, did not crash: it goes on and records
# its progress with its token (renewing its lease).  Meanwhile a retry is
# told to wait.
$node->safe_psql('postgres',
	qq{SELECT idem.checkpoint('export-1', $lease_token, 'rows-501-800', '{"last_id": 800}', lease => '1s')});
is($node->safe_psql('postgres', q{SELECT outcome FROM idem.reserve('export-1', '{"export": 1}')}),
	'in_progress', 'the holder keeps the key across the crash; a retry gets in_progress');

# Then the worker dies too.
ok( $node->poll_query_until(
		'postgres',
		q{SELECT locked_until <= clock_timestamp() FROM idem.keys WHERE key = 'export-1'}),
	'the lease ends');

is( $node->safe_psql(
		'postgres',
		qq{SELECT outcome || ' ' || (token > $lease_token) || ' ' || recovery_point || ' ' || (checkpoint ->> 'last_id')
		   FROM idem.reserve('export-1', '{"export": 1}')}),
	'acquired true rows-501-800 800',
	'after the lease the key is taken over with a larger token and the last checkpoint');

my ($ret, $stdout, $stderr) = $node->psql('postgres',
	qq{SELECT idem.complete('export-1', $lease_token, '{"rows": 500}', 200)},
	extra_params => [ '-v', 'VERBOSITY=verbose' ]);
isnt($ret, 0, 'the holder that was taken over cannot complete');
like($stderr, qr/ID002/, 'it gets ID002 (stale token)');

# After both crashes and the takeover, idem.keys and its btrees (written by
# reserve through the AMs, then by crash recovery) are physically sound.
amcheck_idem($node, 'postgres',
	tables => [qw(payments)],
	label => 'amcheck after the key crashes');

#
# The backend caches where idem.keys and its types are; dropping and
# creating the extension in the same session must not confuse it.
#
is( $node->safe_psql(
		'postgres', q{
	SELECT outcome FROM idem.reserve('recreate-1');
	DROP EXTENSION pg_idem;
	CREATE EXTENSION pg_idem;
	SELECT outcome || ' ' || token FROM idem.reserve('recreate-1');
	SELECT idem.complete('recreate-1', 1, '{"again": true}', 200);
	SELECT outcome || ' ' || response::text FROM idem.reserve('recreate-1');
}),
	"acquired\nacquired 1\n\nreplay {\"again\": true}",
	'a session that recreates the extension keeps working');

$node->stop;
done_testing();
