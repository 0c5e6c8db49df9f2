# Crash loop: a payment service runs under pgbench while the postmaster is
# killed with SIGKILL at random moments, again and again; a relay keeps
# draining the outbox through the crashes.  Afterwards nothing is lost and
# nothing is doubled:
#   - each key has at most one payment, and a key is completed (replays)
#     exactly when its payment committed;
#   - every balance is the sum of its payments, every version counts them;
#   - every committed payment has exactly one outbox event, and no event
#     exists without its payment;
#   - the relay delivered every event at least once, and no event in two
#     finished batches; an open batch read again is the same batch;
#   - no key stays in_progress past its lease;
#   - no backend crashed and no undocumented error was raised on the way;
#   - amcheck finds every heap and btree of idem and the workload intact.
#
# RELIABILITY_ROUNDS (default 12) sets the number of crashes for a soak run;
# RELIABILITY_SEED replays a run's random moments.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use POSIX ();
use Time::HiRes qw(usleep time);
use IdemTest;
use IdemReliability;

my $rounds = $ENV{RELIABILITY_ROUNDS} // 12;
my $seed = $ENV{RELIABILITY_SEED} // int(rand(2**31));
my $keys = 4000 * ($rounds + 1);    # large enough that new keys keep coming
my $lease_s = 3;
srand($seed);
my $t0 = time;
sub phase { note(sprintf('%5.1fs %s', time - $t0, $_[0])); }
note("crash loop: $rounds crashes, seed $seed, $keys keys");

my $node = reliability_node('crash',
	'max_connections = 40',
	'idem.maintenance_interval = 1');
$node->safe_psql('postgres',
	PostgreSQL::Test::Utils::slurp_file(reliability_file('payments-schema.sql')));

my @scripts = (
	reliability_file('payment-atomic.pgbench') . '@3',
	reliability_file('payment-lease.pgbench') . '@1');
my $logstart = 0;

# ----------------------------------------------------------------------
# The relay: a separate process (it must outlive every crash, as a real
# relay does) that loops next_batch -> record -> finish_batch and writes
# what it saw to a journal outside the database:
#   R <batch_id> <id>:<key> ...   a batch as next_batch returned it
#   F <batch_id>                  finish_batch returned successfully
#   E <batch_id> <error>          finish_batch failed (the crash hit it)
#   D <batch_id>                  the relay "crashed" itself before finishing
#                                 (one batch in ten): it must get it again
# On a stop file it drains the outbox and exits.
# ----------------------------------------------------------------------
my $journal = $node->basedir . '/relay.journal';
my $stopfile = $node->basedir . '/relay.stop';

# One statement through psql; returns (ok, stdout, stderr).
sub relay_psql
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	my $ok = eval {
		IPC::Run::run(
			[
				'psql', '-X', '-q', '-A', '-t', '-F', ' ',
				'-v', 'ON_ERROR_STOP=1',
				'-h', $node->host, '-p', $node->port,
				'-d', 'postgres', '-c', $sql
			],
			'<', \undef, '>', \$out, '2>', \$err,
			IPC::Run::timeout(60));
	};
	return ($ok ? 1 : 0, $out, $err);
}

sub relay_main
{
	open(my $j, '>>', $journal) or die "$journal: $!";
	$j->autoflush(1);
	local $ENV{PGCONNECT_TIMEOUT} = 5;
	local $ENV{PGAPPNAME} = 'relay';
	my ($empty, $draining, $deadline) = (0, 0, 0);
	while (1)
	{
		if (!$draining && -e $stopfile)
		{
			($draining, $deadline) = (1, time + 90);
		}
		# Drained: several empty answers in a row once the load has stopped.
		last if $draining && ($empty >= 5 || time > $deadline);
		my ($ok, $out, $err) = relay_psql(
			q{SELECT batch_id, id, key FROM idem.next_batch('relay', 100)});
		if (!$ok)
		{
			usleep(100_000);
			next;
		}
		my @rows = map { [ split / / ] } grep { /\S/ } split /\n/, $out;
		if (!@rows)
		{
			$empty++;
			usleep($draining ? 200_000 : 50_000);
			next;
		}
		$empty = 0;
		my $batch = $rows[0][0];
		print $j "R $batch " . join(' ', map { "$_->[1]:$_->[2]" } @rows) . "\n";
		if (!$draining && rand() < 0.1)
		{
			print $j "D $batch\n";
			next;
		}
		($ok, $out, $err) = relay_psql("SELECT idem.finish_batch('relay', $batch)");
		if ($ok)
		{
			print $j "F $batch\n";
		}
		else
		{
			$err =~ s/\s+/ /g;
			print $j "E $batch $err\n";
		}
	}
	close($j);
	return;
}

my $relay_pid = fork();
die "fork: $!" unless defined $relay_pid;
if ($relay_pid == 0)
{
	# The child must not run the parent's END blocks (they would stop the
	# node and print a TAP summary).
	eval { relay_main(); };
	print STDERR "relay: $@" if $@;
	POSIX::_exit(0);
}

# ----------------------------------------------------------------------
# The crash loop.
# ----------------------------------------------------------------------
my %total = (requests => 0, aborted => 0, crashes => 0, restart_s => 0);
my @restart_times;
for my $round (1 .. $rounds + 1)
{
	my $last = $round > $rounds;
	my $last_offset = log_offset($node);
	my $bench = pgbench_start(
		$node,
		clients => 6,
		jobs => 2,
		duration => $last ? 3 : 120,
		files => \@scripts,
		defines => { keys => $keys },
		extra => [ '--random-seed', int(rand(2**31)) ]);
	if ($last)
	{
		my $r = pgbench_finish($bench, 120);
		# Clean, but for a lease-mode holder fenced off with ID002 if the
		# machine stalled it past its 3 s lease (documented, and counted).
		my @other = grep { $_->{sqlstate} ne 'ID002' && $_->{level} ne 'WARNING' }
		  log_entries($node, $last_offset);
		ok($r->{status} == 0 || ($r->{processed} > 0 && !@other),
			'the last round, without a crash, runs clean')
		  or diag($r->{err});
		$total{requests} += $r->{processed};
		$total{aborted} += $r->{aborted};
		last;
	}

	# Kill at a random moment of the load: 0.5 to 3.5 seconds in.
	usleep(int((0.5 + rand(3.0)) * 1_000_000));
	phase("round $round: crash");
	push @restart_times, crash_restart_settled($node);
	$total{crashes}++;
	my $r = pgbench_finish($bench, 60);
	$total{requests} += $r->{processed};
	$total{aborted} += $r->{aborted};
}

# Let the relay drain, then wait for it.
phase('load stopped; draining');
PostgreSQL::Test::Utils::append_to_file($stopfile, "stop\n");
waitpid($relay_pid, 0);
is($?, 0, 'the relay exited normally');
phase('relay drained');

# ----------------------------------------------------------------------
# Invariants.
# ----------------------------------------------------------------------
sub q1 { return $node->safe_psql('postgres', $_[0]); }

is(q1(q{SELECT count(*) - count(DISTINCT key) FROM payments}),
	'0', 'each key has at most one payment row');

is( q1(
		q{SELECT count(*) FROM accounts a
		   WHERE balance IS DISTINCT FROM
		         (SELECT coalesce(sum(amount), 0) FROM payments p WHERE p.account = a.id)}
	),
	'0',
	'every balance is the sum of its payments');

is( q1(
		q{SELECT count(*) FROM accounts a
		   WHERE version IS DISTINCT FROM
		         1 + (SELECT count(*) FROM payments p WHERE p.account = a.id)}
	),
	'0',
	'every account version is 1 + the number of its payments (one bump per committed update)'
);

# (Joins, not correlated subqueries: idem.outbox has no index on key.)
my $events_per_payment = q1(
	q{SELECT count(*) FILTER (WHERE o.n IS DISTINCT FROM 1),
	         count(*) FILTER (WHERE o.n = 1 AND o.payload <> jsonb_build_object(
	                              'key', p.key, 'account', p.account, 'amount', p.amount))
	    FROM payments p
	    LEFT JOIN (SELECT key, count(*) AS n, min(payload::text)::jsonb AS payload
	                 FROM idem.outbox WHERE topic = 'payment' GROUP BY key) AS o
	      ON o.key = p.key});
is($events_per_payment, '0|0',
	'every committed payment has exactly one outbox event, with its payload');

is( q1(
		q{SELECT count(*) FROM idem.outbox o
		    LEFT JOIN payments p ON p.key = o.key
		   WHERE p.key IS NULL}
	),
	'0',
	'no event exists without its payment (a rolled-back or crashed emit left nothing)');

my $npay = q1('SELECT count(*) FROM payments');
my $nevents = q1(q{SELECT count(*) FROM idem.outbox WHERE topic = 'payment'});
cmp_ok($npay, '>', 0, 'payments were made');

# Keys: after the longest lease has passed, no key may answer in_progress;
# a key replays exactly when its payment exists, else it is acquired.  Done
# in a transaction that rolls back, so it changes nothing.
sleep($lease_s + 1);
phase('checking keys');
my $keycheck = q1(
	qq{BEGIN;
	   SELECT count(*) FILTER (WHERE (r).outcome = 'in_progress'),
	          count(*) FILTER (WHERE (r).outcome = 'replay' AND p.key IS NULL),
	          count(*) FILTER (WHERE (r).outcome = 'replay' AND p.key IS NOT NULL
	                             AND (r).response = jsonb_build_object('key', p.key, 'ok', true)),
	          count(*) FILTER (WHERE (r).outcome = 'acquired' AND p.key IS NOT NULL),
	          count(*) FILTER (WHERE (r).outcome = 'acquired' AND p.key IS NULL)
	     FROM generate_series(1, $keys) AS k
	     LEFT JOIN payments p ON p.key = 'p' || k
	    CROSS JOIN LATERAL (SELECT idem.reserve('p' || k,
	                 jsonb_build_object('account', 1 + k % 20, 'amount', 1 + k % 97)) AS r) AS x;
	   ROLLBACK;});
my ($k_inprog, $k_replay_nopay, $k_replay_ok, $k_acq_paid, $k_acq_free) =
  split /\|/, $keycheck;
is($k_inprog, 0, 'no key stays in_progress past its lease');
is($k_replay_nopay, 0, 'no key is completed without its payment');
is($k_replay_ok, $npay, 'every paid key replays its stored response');
is($k_acq_paid, 0, 'no paid key can be acquired again');

phase('keys checked');

# ----------------------------------------------------------------------
# The relay's journal.
# ----------------------------------------------------------------------
my (%batch_ids, %reads, %acked, %read_after_ack, @order, %errors);
my ($open, %attempted);
my ($reread_mismatch, $abandoned, $dropped) = (0, 0, 0);
my $unsorted = 0;
open(my $jh, '<', $journal) or die "$journal: $!";
while (my $line = <$jh>)
{
	chomp $line;
	if ($line =~ /^R (\d+) (.*)$/)
	{
		my ($bid, $list) = ($1, $2);
		my @ids = map { (split /:/)[0] } split / /, $list;
		$unsorted++ if join(',', @ids) ne join(',', sort { $a <=> $b } @ids);
		$read_after_ack{$bid}++ if $acked{$bid};
		# A new batch while one is open: the open one must have been closed
		# by a finish_batch whose answer the crash swallowed.
		$abandoned++ if defined $open && $open ne $bid && !$attempted{$open};
		$open = $bid;
		if (exists $batch_ids{$bid})
		{
			$reread_mismatch++ if $batch_ids{$bid} ne join(',', @ids);
		}
		else
		{
			$batch_ids{$bid} = join(',', @ids);
			push @order, $bid;
		}
		$reads{$bid}++;
	}
	elsif ($line =~ /^F (\d+)/) { $acked{$1} = $attempted{$1} = 1; undef $open; }
	elsif ($line =~ /^E (\d+) (.*)$/) { $errors{$1} = $2; $attempted{$1} = 1; }
	elsif ($line =~ /^D (\d+)/) { $dropped++; }
}
close($jh);

is($reread_mismatch, 0, 'an open batch read again holds the same events');
is($abandoned, 0, 'a batch the relay never finished is returned again (never skipped)');
is($unsorted, 0, 'within a batch events come in id order');
is(scalar(keys %read_after_ack), 0, 'a finished batch is never returned again');

# Every batch but the last was finished: either finish_batch said so, or the
# relay was handed a newer batch (which only happens once the open one is
# closed).  The drain finished the last one.
my $last_batch = $order[-1];
ok(!@order || $acked{$last_batch}, 'the drain finished the last batch');
my %seen_in;
my $twice = 0;
for my $bid (@order)
{
	for my $id (split /,/, $batch_ids{$bid})
	{
		$twice++ if exists $seen_in{$id};
		$seen_in{$id} = $bid;
	}
}
is($twice, 0, 'no event was delivered in two finished batches');

my @outbox_ids = split /\n/, q1(q{SELECT id FROM idem.outbox WHERE topic = 'payment' ORDER BY id});
my @missing = grep { !exists $seen_in{$_} } @outbox_ids;
is(scalar(@missing), 0, 'the relay delivered every committed event')
  or diag('missing: ' . join(' ', @missing[ 0 .. ($#missing < 20 ? $#missing : 19) ]));
my %in_outbox = map { $_ => 1 } @outbox_ids;
my @phantom = grep { !$in_outbox{$_} } keys %seen_in;
is(scalar(@phantom), 0, 'the relay delivered no event that did not commit');

# ----------------------------------------------------------------------
# The server log: no backend crash, no undocumented error.  Documented on
# the way: ID002 (a lease-mode holder slower than its 3 s lease is fenced
# off) and the connection errors of the crashes themselves.
# ----------------------------------------------------------------------
my @deaths = log_signal_deaths($node, $logstart);
is(scalar(@deaths), 0, 'no backend died of a signal') or diag(join("\n", @deaths[0..9]));
my @entries = log_entries($node, $logstart);
my %allowed = map { $_ => 1 } qw(ID002 57P01 57P02 57P03 08006 08P01 08003);
my @bad = grep { $_->{level} ne 'WARNING' && !$allowed{ $_->{sqlstate} } } @entries;
is(scalar(@bad), 0, 'no undocumented error (no duplicate payment, deadlock, assertion, internal error)')
  or diag(join("\n", map { $_->{line} } @bad[ 0 .. ($#bad < 20 ? $#bad : 19) ]));
my $fenced = grep { $_->{sqlstate} eq 'ID002' } @entries;

my $counters = q1(
	q{SELECT string_agg(s || '=' || (CASE WHEN is_called THEN last_value ELSE 0 END), ' ')
	    FROM (SELECT 'acquired' AS s, * FROM n_acquired UNION ALL
	          SELECT 'replay', * FROM n_replay UNION ALL
	          SELECT 'in_progress', * FROM n_in_progress UNION ALL
	          SELECT 'takeover', * FROM n_takeover UNION ALL
	          SELECT 'conflict', * FROM n_conflict) AS c});
my $redelivered = 0;
$redelivered += $reads{$_} - 1 for keys %reads;
my $unacked = grep { !$acked{$_} } @order;
my @sorted_rt = sort { $a <=> $b } @restart_times;
diag(sprintf(
		'crash loop: %d crashes (restart %.1f-%.1f s), %d requests completed by pgbench '
		  . '(%d clients cut off by crashes), outcomes about: %s; %d payments over %d keys; '
		  . '%d crashes left orphaned backends to wait for; %d events, %d batches, %d re-reads (%d after the relay dropped a batch), %d finished '
		  . 'without the relay hearing back; %d holders fenced off (ID002); seed %d; %d s',
		$total{crashes}, $sorted_rt[0] // 0, $sorted_rt[-1] // 0, $total{requests},
		$total{aborted}, $counters, $npay, $keys, $IdemReliability::orphan_waits, $nevents, scalar(@order),
		$redelivered, $dropped, $unacked, $fenced, $seed, time - $^T));
cmp_ok($total{crashes}, '>=', $rounds, "the server was crashed $rounds times");

# Crash recovery replayed every round's WAL into the heaps and btrees pg_idem
# writes through the AMs directly: they must be physically sound too.
amcheck_idem($node, 'postgres',
	tables => [qw(accounts payments)],
	label => 'amcheck after the crash loop');

$node->stop;
done_testing();
