# emit()'s wake-up without shared_preload_libraries (src/outbox_notify.c,
# "Without preload"): the library attaches its shared state after startup,
# so an emitter commits without a NOTIFY while nobody listens -- and the
# listeners the LISTEN hook cannot see (a LISTEN run before the library was
# loaded in its backend, a connection that only listens) must still never
# sleep beside an event that committed without notifying them.
#
# As in 031_outbox_notify.pl, synchronous replication to a standby that
# never comes holds an emitter's commit after its pre-commit decision and
# before its event is visible, which is exactly where a wake-up can be lost.
# Whether an emitter decided to notify is read from pg_locks: PostgreSQL
# commits a notifying transaction under an exclusive lock on database 0,
# object 0 of pg_database, which the held emitter keeps while it waits.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('notify_no_preload');
$node->init;
$node->append_conf('postgresql.conf', join("\n",
	'wal_level = replica', 'max_wal_senders = 2',
	"synchronous_standby_names = 'nobody'",
	'synchronous_commit = local') . "\n");
$node->start;

my ($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION pg_idem');
is($ret, 0, 'CREATE EXTENSION without preload') or diag($err);
like($err, qr/NOTICE:  pg_idem is not in shared_preload_libraries\n.*\nHINT:  Add pg_idem to shared_preload_libraries/s,
	'CREATE EXTENSION says that pg_idem is not preloaded, what that costs and how to preload');

# The first emit of a session that attached the shared state says nothing:
# it costs what it costs preloaded (only a session that could not attach,
# and so notifies on every commit, is told).
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT idem.emit('first', '{}') > 0; SELECT idem.emit('first', '{}') > 0;});
is($ret, 0, 'emit without preload') or diag($err);
unlike($err, qr/NOTICE:  pg_idem is not in shared_preload_libraries/,
	'an attached session emits without the NOTICE');

$node->safe_psql('postgres', q{SELECT idem.subscribe('relay')});

# A session that does not print the NOTICE (query_safe dies on stderr).
sub session
{
	my $s = $node->background_psql('postgres');
	$s->query_safe('SET client_min_messages = warning');
	return $s;
}

sub pid_of
{
	my ($session) = @_;
	return $session->query_safe('SELECT pg_backend_pid()');
}

# Start an emitter whose commit is held after its decision; return it.
sub held_emitter
{
	my ($topic) = @_;
	my $e = session();
	my $pid = pid_of($e);
	$e->query_safe('SET synchronous_commit = on');
	$e->query_safe('BEGIN');
	$e->query_safe(qq{SELECT idem.emit('$topic', '{}')});
	$e->query_until(qr/committing/, qq{\\echo committing\nCOMMIT;\n});
	ok( $node->poll_query_until(
			'postgres', qq{SELECT wait_event = 'SyncRep' FROM pg_stat_activity WHERE pid = $pid}),
		"emitter of '$topic' is held in its commit");
	return ($e, $pid);
}

# Did this held emitter decide to notify?
sub notifies
{
	my ($pid) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) > 0 FROM pg_locks
		 WHERE pid = $pid AND locktype = 'object' AND database = 0
		   AND classid = 'pg_database'::regclass AND objid = 0
		   AND mode = 'AccessExclusiveLock' AND granted}) eq 't';
}

sub release
{
	my (@pids) = @_;
	$node->safe_psql('postgres', "SELECT pg_cancel_backend($_)") for @pids;
	return;
}

sub notified
{
	my ($output, $topic, $pid) = @_;
	return $output =~
	  /Asynchronous notification "idem_outbox" with payload "\Q$topic\E" received from server process with PID $pid\./;
}

sub all_gone
{
	my (@pids) = @_;
	my $list = join(', ', @pids);
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid IN ($list)");
}

# A relay's read of the outbox, in a session that may block.
sub start_read
{
	my ($relay) = @_;
	$relay->query_until(qr/reading/,
		qq{\\echo reading\nSELECT count(*) FROM idem.next_batch('relay');\n});
	return;
}

# A relay that listened before loading pg_idem, in a transaction of this
# isolation level ('' for none); returns it and its pid.
sub listening_relay
{
	my ($level) = @_;
	my $r = session();
	my $pid = pid_of($r);
	$r->query_safe('LISTEN idem_outbox');
	$r->query_safe($level eq 'READ COMMITTED' ? 'BEGIN' : "BEGIN ISOLATION LEVEL $level")
	  if $level ne '';
	return ($r, $pid);
}

# Is this session's statement waiting for these held emitters?
sub waits_for
{
	my ($pid, @held_pids) = @_;
	my $list = join(', ', @held_pids);
	return $node->poll_query_until('postgres',
		qq{SELECT pg_blocking_pids($pid) && ARRAY[$list]});
}

sub finish_relay_batch
{
	my ($s) = @_;
	$s->query_safe(q{SELECT idem.finish_batch('relay', (SELECT max(batch_id) FROM idem.next_batch('relay')))});
	return;
}

# Drain what the first emits left.
my $setup = session();
finish_relay_batch($setup) if $setup->query_safe(q{SELECT count(*) FROM idem.next_batch('relay')}) > 0;

#
# 1. Nobody listens: emitters commit without notifying -- three at once.
#    A relay that runs LISTEN in a backend that has not loaded pg_idem yet
#    (the hook that sees LISTEN is not there) then reads: its next_batch
#    waits for all three, and returns their events.
#
my @held = map { [ held_emitter("quiet$_") ] } 1 .. 3;
ok(!notifies($_->[1]), "nobody listens: emitter $_->[1] commits without notifying")
  for @held;

my $relay = session();
my $relay_pid = pid_of($relay);
$relay->query_safe('LISTEN idem_outbox');
start_read($relay);
my $pids = join(', ', map { $_->[1] } @held);
ok( $node->poll_query_until('postgres',
		qq{SELECT pg_blocking_pids($relay_pid) && ARRAY[$pids]}),
	'next_batch of a relay that listened before loading pg_idem waits for the silent commits');
release(map { $_->[1] } @held);
like($relay->query_safe('SELECT 1'), qr/^3\n1$/m,
	'and then returns the three events it was not notified of');
finish_relay_batch($relay);
$_->[0]->quit for @held;

# That relay is now registered by PostgreSQL as a listener: emitters
# notify, and it is woken.
my ($e, $e_pid) = held_emitter('heard');
ok(notifies($e_pid), 'while a relay listens, an emitter notifies');
release($e_pid);
$e->quit;
ok(notified($relay->query_safe('SELECT 1'), 'heard', $e_pid), 'and the relay is woken');
finish_relay_batch($relay);
$relay->quit;
ok(all_gone($relay_pid, $e_pid, map { $_->[1] } @held), 'the sessions have exited');

#
# 2. A connection that only listens (it never calls a pg_idem function)
#    while another one reads, as relays with a dedicated listening
#    connection do.  Emitters that decided before it listened are waited
#    for by the reader; emitters deciding after notify it.
#
@held = map { [ held_emitter("early$_") ] } 1 .. 2;
ok(!notifies($_->[1]), 'nobody listens yet: silent') for @held;
my $listener = $node->background_psql('postgres');
my $listener_pid = pid_of($listener);
$listener->query_safe('LISTEN idem_outbox');
my $reader = session();
my $reader_pid = pid_of($reader);
# loaded in an earlier transaction: only PostgreSQL's list of listeners
# tells this reader that the other connection listens
$reader->query_safe(q{SELECT length(idem.fingerprint('{}'))});
start_read($reader);
$pids = join(', ', map { $_->[1] } @held);
ok( $node->poll_query_until('postgres',
		qq{SELECT pg_blocking_pids($reader_pid) && ARRAY[$pids]}),
	'a reader waits for the silent commits once another connection listens');
my ($late, $late_pid) = held_emitter('late');
ok(notifies($late_pid), 'an emitter deciding after the LISTEN notifies the listen-only connection');
release(map { $_->[1] } @held);
like($reader->query_safe('SELECT 1'), qr/^2\n1$/m, 'the reader then returns the two events');
finish_relay_batch($reader);
release($late_pid);
$late->quit;
ok(notified($listener->query_safe('SELECT 1'), 'late', $late_pid),
	'and the listen-only connection, which never loaded pg_idem, is woken');
finish_relay_batch($reader);
$_->[0]->quit for @held;
$listener->quit;
ok(all_gone($listener_pid, $late_pid, map { $_->[1] } @held), 'the listener has exited');

# Nobody listens any more: silent again, and the reader does not wait.
($e, $e_pid) = held_emitter('alone');
ok(!notifies($e_pid), 'once every listener has exited, emitters are silent again');
is($reader->query_safe(q{SELECT count(*) FROM idem.next_batch('relay')}), '0',
	'a polling reader does not wait for silent commits while nobody listens');
release($e_pid);
$e->quit;
finish_relay_batch($reader);
$reader->quit;
ok(all_gone($e_pid, $reader_pid), 'the sessions have exited');

#
# 3. LISTEN earlier in the very transaction that loads pg_idem: not yet
#    registered, and the hook did not see it.  next_batch in that
#    transaction waits for the silent commits and counts its backend until
#    the transaction ends; after the commit PostgreSQL's list has it.
#
@held = ([ held_emitter('before') ]);
$relay = session();
$relay_pid = pid_of($relay);
$relay->query_safe('BEGIN');
$relay->query_safe('LISTEN idem_outbox');
start_read($relay);
ok( $node->poll_query_until('postgres',
		qq{SELECT pg_blocking_pids($relay_pid) && ARRAY[$held[0][1]]}),
	'next_batch in the transaction of an earlier LISTEN waits for the silent commit');
release($held[0][1]);
like($relay->query_safe('SELECT 1'), qr/^1\n1$/m, 'and returns its event');
($e, $e_pid) = held_emitter('during');
ok(notifies($e_pid), 'while that transaction is open, emitters notify');
$relay->query_safe('COMMIT');
release($e_pid);
$e->quit;
ok(notified($relay->query_safe('SELECT 1'), 'during', $e_pid),
	'and the relay is woken once its LISTEN has committed');
($e, $e_pid) = held_emitter('after');
ok(notifies($e_pid), 'after the commit, PostgreSQL lists the relay: emitters notify');
release($e_pid);
$e->quit;
ok(notified($relay->query_safe('SELECT 1'), 'after', $e_pid), 'and it is woken');
$relay->quit;
$held[0][0]->quit;
ok(all_gone($relay_pid, $e_pid, $held[0][1]), 'the sessions of part 3 have exited');
# Drain what part 3 left (its relay did not finish its batches).
finish_relay_batch($setup)
  while $setup->query_safe(q{SELECT count(*) FROM idem.next_batch('relay')}) > 0;

#
# 4. A relay that reads under REPEATABLE READ or SERIALIZABLE, whose
#    LISTEN ran before its backend loaded pg_idem: next_batch waits for the
#    silent commit, but its transaction's snapshot was taken before the
#    wait and cannot see the event.  The batch is empty -- and the relay
#    must still be woken: its own commit sends the notification the silent
#    emitter did not, and the next read returns the event.
#
for my $level ('REPEATABLE READ', 'SERIALIZABLE')
{
	my $tag = lc($level =~ s/ /_/r);
	@held = ([ held_emitter("unseen_$tag") ], [ held_emitter("unseen2_$tag") ]);
	ok(!notifies($_->[1]), "nobody listens: silent ($level)") for @held;
	($relay, $relay_pid) = listening_relay($level);
	start_read($relay);
	ok(waits_for($relay_pid, map { $_->[1] } @held),
		"a $level relay that listened before loading pg_idem waits for the silent commits");
	release(map { $_->[1] } @held);
	like($relay->query_safe('SELECT 1'), qr/^0\n1$/m,
		"its snapshot, older than the wait, cannot see their events ($level)");
	my $woken = $relay->query_safe('COMMIT; SELECT 1');
	ok(notified($woken, "unseen_$tag", $relay_pid) && notified($woken, "unseen2_$tag", $relay_pid),
		"its commit sends the notifications of both topics the emitters did not ($level)")
	  or diag($woken);
	is($relay->query_safe(q{SELECT count(*) FROM idem.next_batch('relay')}), '2',
		"and the read it wakes returns the two events ($level)");
	finish_relay_batch($relay);
	$relay->quit;
	$_->[0]->quit for @held;
	ok(all_gone($relay_pid, map { $_->[1] } @held), "the sessions have exited ($level)");

	# The same, but the silent emitter has ended (its published xid is
	# gone) before next_batch looks: the relay's snapshot, taken by an
	# earlier statement of its transaction, still has it running.
	my ($gone, $gone_pid) = held_emitter("ended_$tag");
	ok(!notifies($gone_pid), "nobody listens: silent (ended, $level)");
	($relay, $relay_pid) = listening_relay($level);
	$relay->query_safe('SELECT 1');
	release($gone_pid);
	$gone->quit;
	ok(all_gone($gone_pid), "the silent emitter has ended ($level)");
	is($relay->query_safe(q{SELECT count(*) FROM idem.next_batch('relay')}), '0',
		"a $level relay whose snapshot predates that commit reads nothing");
	$woken = $relay->query_safe('COMMIT; SELECT 1');
	ok(notified($woken, "ended_$tag", $relay_pid),
		"and its commit sends the notification the emitter did not ($level)")
	  or diag($woken);
	is($relay->query_safe(q{SELECT count(*) FROM idem.next_batch('relay')}), '1',
		"the read it wakes returns the event ($level)");
	finish_relay_batch($relay);
	$relay->quit;
	ok(all_gone($relay_pid), "the relay has exited ($level)");
}

# A read at this isolation level while an emitter of this topic is held
# silent: it waits for the commit and returns one event; its own commit
# sends no notification on the emitter's behalf.  Returns the relay and
# its pid, and the emitter's session and pid.
sub read_without_notifying_on_behalf
{
	my ($level, $topic) = @_;
	my ($e, $pid) = held_emitter($topic);
	my ($r, $rpid) = listening_relay($level);
	start_read($r);
	ok(waits_for($rpid, $pid), "a $level relay waits for the silent commit");
	release($pid);
	like($r->query_safe('SELECT 1'), qr/^1\n1$/m, "and returns one event ($level)");
	my $out = $r->query_safe('COMMIT; SELECT 1');
	ok(!notified($out, $topic, $rpid), "without a notification on behalf of '$topic' ($level)")
	  or diag($out);
	return ($r, $rpid, $e, $pid);
}

# A REPEATABLE READ read that returns events (one its snapshot sees) does
# not notify on anyone's behalf: its relay reads again anyway, with a newer
# snapshot, and gets the held emitter's event then.
session()->query_safe(q{SELECT idem.emit('visible', '{}')});
my ($rr, $rr_pid, $later, $later_pid) = read_without_notifying_on_behalf('REPEATABLE READ', 'later');
finish_relay_batch($rr);
is($rr->query_safe(q{SELECT count(*) FROM idem.next_batch('relay')}), '1',
	'the next read returns the event that snapshot could not see');
finish_relay_batch($rr);
$rr->quit;
$later->quit;
ok(all_gone($rr_pid, $later_pid), 'the sessions have exited');

# Under READ COMMITTED the read after the wait sees the event itself.
($relay, $relay_pid, my $rc_emitter) = read_without_notifying_on_behalf('READ COMMITTED', 'seen_rc');
finish_relay_batch($relay);
$relay->quit;
$rc_emitter->quit;
$setup->quit;

is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server is still up');
$node->stop;
done_testing();
