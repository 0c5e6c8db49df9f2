# emit()'s wake-up: NOTIFY idem_outbox with the topic on commit, sent only
# while some session listens (src/outbox_notify.c).  Skipping the NOTIFY
# must never be observable: a relay that runs LISTEN and then reads must not
# sleep beside an event that committed without notifying it.
#
# The dangerous moment is an emitter that found nobody listening and is
# still committing when a relay's LISTEN arrives.  Synchronous replication
# to a standby that never comes holds a commit exactly there (after the
# pre-commit decision, before the transaction is visible), so the test can
# stop an emitter at that point and check that LISTEN waits for it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;

# (Synchronous replication needs WAL senders, which the framework's
# default configuration turns off.)
my $node = idem_node('outbox_notify',
	'wal_level = replica', 'max_wal_senders = 2',
	"synchronous_standby_names = 'nobody'",
	'synchronous_commit = local',
	'max_prepared_transactions = 2');

sub notified
{
	my ($output, $topic, $pid) = @_;
	return $output =~
	  /Asynchronous notification "idem_outbox" with payload "\Q$topic\E" received from server process with PID $pid\./;
}

#
# 1. A relay's LISTEN waits for an emitter that decided not to notify (and
#    a relay in another database, which its notification could never
#    reach, does not).  Run again at the end, once every listener has
#    exited: an emitter then decides not to notify again, so the listener
#    count went back to zero.
#
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION pg_idem');

sub listen_waits_for_silent_emitter
{
	my ($when, $topic) = @_;
	my $emitter = $node->background_psql('postgres');
	my $emitter_pid = $emitter->query_safe('SELECT pg_backend_pid()');
	$emitter->query_safe('SET synchronous_commit = on');
	$emitter->query_safe('BEGIN');
	$emitter->query_safe(qq{SELECT idem.emit('$topic', '{"n": 1}')});
	# Nobody listens: the commit goes ahead without a NOTIFY, and then
	# waits for the standby.
	$emitter->query_until(qr/committing/, qq{\\echo committing\nCOMMIT;\n});
	ok( $node->poll_query_until(
			'postgres', qq{SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = $emitter_pid}),
		"$when: the emitter is held in its commit");
	is($node->safe_psql('postgres', qq{SELECT count(*) FROM idem.outbox WHERE topic = '$topic'}),
		'0', "$when: its event is not visible yet");

	my $elsewhere = $node->background_psql('other');
	$elsewhere->query_safe('LISTEN idem_outbox');
	pass("$when: LISTEN in another database does not wait for it");

	my $relay = $node->background_psql('postgres');
	my $relay_pid = $relay->query_safe('SELECT pg_backend_pid()');
	$relay->query_until(qr/listening/, qq{\\echo listening\nLISTEN idem_outbox;\n});
	ok( $node->poll_query_until(
			'postgres', qq{SELECT $emitter_pid = ANY (pg_blocking_pids($relay_pid))}),
		"$when: LISTEN idem_outbox waits for the emitter that committed without notifying");

	# Release the emitter: its commit completes (with a warning about the
	# standby), and only then does the relay's LISTEN return.
	$node->safe_psql('postgres', "SELECT pg_cancel_backend($emitter_pid)");
	is($relay->query_safe(qq{SELECT count(*) FROM idem.outbox WHERE topic = '$topic'}),
		'1', "$when: after LISTEN returns, the relay sees the event it was not notified of");
	my $elsewhere_pid = $elsewhere->query_safe('SELECT pg_backend_pid()');
	$emitter->quit;
	$relay->quit;
	$elsewhere->quit;
	ok( $node->poll_query_until(
			'postgres', qq{SELECT count(*) = 0 FROM pg_stat_activity WHERE pid IN ($emitter_pid, $relay_pid, $elsewhere_pid)}),
		"$when: the sessions have exited");
	return;
}

listen_waits_for_silent_emitter('first', 'held');

#
# 2. The decision is taken at commit, not when emit() runs: an emitter whose
#    transaction began before anyone listened still notifies a relay that
#    listens by the time it commits.  Nobody listens when emit() runs.
#
my $emitter = $node->background_psql('postgres');
my $emitter_pid = $emitter->query_safe('SELECT pg_backend_pid()');
my $late = $node->background_psql('postgres');
$emitter->query_safe('BEGIN');
$emitter->query_safe(q{SELECT idem.emit('late', '{"n": 2}')});
$late->query_safe('LISTEN idem_outbox');
$emitter->query_safe('COMMIT');
ok(notified($late->query_safe('SELECT 1'), 'late', $emitter_pid),
	'a relay that listens before the commit is notified');

#
# 3. Once per topic per transaction, in first-emit order; a rolled-back
#    savepoint takes its topics with it, a released one keeps them.
#
$emitter->query_safe(q{
BEGIN;
SELECT idem.emit('b', '{}');
SAVEPOINT s1;
SELECT idem.emit('a', '{}');
SELECT idem.emit('gone', '{}');
ROLLBACK TO SAVEPOINT s1;
SAVEPOINT s2;
SELECT idem.emit('a', '{}');
RELEASE SAVEPOINT s2;
SELECT idem.emit('b', '{}');
COMMIT;
});
my $out = $late->query_safe('SELECT 1');
my @payloads = ($out =~ /with payload "([^"]*)"/g);
is_deeply(\@payloads, [ 'b', 'a' ],
	'one notification per topic, in order; none for the rolled-back savepoint');

# Many topics in one transaction (past the in-memory index's threshold).
$emitter->query_safe(q{
BEGIN;
SELECT count(idem.emit('t' || (g % 40), '{}')) FROM generate_series(1, 400) g;
SAVEPOINT s;
SELECT count(idem.emit('u' || g, '{}')) FROM generate_series(1, 30) g;
ROLLBACK TO SAVEPOINT s;
SELECT idem.emit('t7', '{}'), idem.emit('last', '{}');
COMMIT;
});
$out = $late->query_safe('SELECT 1');
@payloads = ($out =~ /with payload "([^"]*)"/g);
is_deeply(\@payloads, [ (map { 't' . ($_ % 40) } 1 .. 40), 'last' ],
	'forty topics emitted 400 times notify forty times, in order');

# A rolled-back transaction notifies nothing.
$emitter->query_safe(q{BEGIN; SELECT idem.emit('never', '{}'); ROLLBACK;});
$emitter->query_safe(q{SELECT idem.emit('after', '{}')});
$out = $late->query_safe('SELECT 1');
@payloads = ($out =~ /with payload "([^"]*)"/g);
is_deeply(\@payloads, ['after'], 'a rolled-back emit notifies nothing');

#
# 4. Two-phase commit: PostgreSQL cannot prepare a transaction that
#    notifies, and emit() says how to prepare one anyway.
#
my ($ret, $stdout, $stderr) = $node->psql('postgres', q{
BEGIN;
SELECT idem.emit('twophase', '{}');
PREPARE TRANSACTION 'p1';
}, extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($stderr, qr/0A000: cannot PREPARE a transaction that emitted outbox events with idem.outbox_notify on/,
	'PREPARE after emit() is refused with 0A000');
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_prepared_xacts}),
	'0', 'and nothing was prepared');
$node->safe_psql('postgres', q{
BEGIN;
SET LOCAL idem.outbox_notify = off;
SELECT idem.emit('twophase', '{}');
PREPARE TRANSACTION 'p2';
});
$node->safe_psql('postgres', q{COMMIT PREPARED 'p2'});
is($node->safe_psql('postgres', q{SELECT count(*) FROM idem.outbox WHERE topic = 'twophase'}),
	'1', 'with idem.outbox_notify off, the event commits through PREPARE');

#
# 5. Listeners that exit stop counting, and a new one is still woken.
#
my $late_pid = $late->query_safe('SELECT pg_backend_pid()');
$late->quit;
ok( $node->poll_query_until(
		'postgres', qq{SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $late_pid}),
	'the relay has exited');
my $fresh = $node->background_psql('postgres');
$fresh->query_safe('LISTEN idem_outbox');
$emitter->query_safe(q{SELECT idem.emit('fresh', '{}')});
ok(notified($fresh->query_safe('SELECT 1'), 'fresh', $emitter_pid),
	'a relay that listens after others left is notified');
my $fresh_pid = $fresh->query_safe('SELECT pg_backend_pid()');
$fresh->quit;
$emitter->quit;
ok( $node->poll_query_until(
		'postgres', qq{SELECT count(*) = 0 FROM pg_stat_activity WHERE pid IN ($fresh_pid, $emitter_pid)}),
	'every listener has exited');
listen_waits_for_silent_emitter('again', 'held again');

$node->stop;
done_testing();
