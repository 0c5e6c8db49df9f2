# Duplicate storm: 64 concurrent clients send the same 100 keys again and
# again, in atomic mode (at every isolation level) and in lease mode.
# Exactly 100 effects happen; every other call replays or reports
# in_progress; no deadlock, no error but the documented 40001 of REPEATABLE
# READ / SERIALIZABLE (which the client retries).  Afterwards amcheck finds
# every heap and btree intact.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use IdemTest;
use IdemReliability;

my $clients = 64;
my $per_client = $ENV{STORM_TRANSACTIONS} // 100;

my $node = reliability_node('storm',
	'max_connections = 100',
	'max_pred_locks_per_transaction = 256',
	'deadlock_timeout = 100ms');
$node->safe_psql('postgres',
	slurp_file(reliability_file('storm-schema.sql')));
my $logstart = log_offset($node);

my $t0 = time;
my $r = pgbench_run(
	$node,
	clients => $clients,
	jobs => 2,
	transactions => $per_client,
	files => [
		reliability_file('storm-atomic.pgbench') . '@3',
		reliability_file('storm-lease.pgbench') . '@1'
	],
	extra => [ '--max-tries=100', '--random-seed=' . int(rand(2**31)) ],
	timeout => 300);
my $elapsed = time - $t0;
my $requests = $clients * $per_client;

is($r->{status}, 0, 'pgbench ran clean') or diag($r->{err});
is($r->{processed}, $requests, "all $requests requests were answered");
is($r->{failed}, 0, 'no request failed (after retries of the documented 40001)');
is($r->{aborted}, 0, 'no client was aborted by an error');

sub q1 { return $node->safe_psql('postgres', $_[0]); }

is(q1('SELECT count(*) FROM effects'), '100', 'exactly 100 effects');
is(q1('SELECT count(DISTINCT k) FROM effects'), '100', 'one per key');
is(q1(q{SELECT count(*) FROM calls}), $requests,
	'every answered request logged exactly one reserve answer');
is(q1(q{SELECT count(*) FROM calls WHERE outcome = 'acquired'}),
	'100', 'exactly 100 calls acquired; every other call replayed or reported in_progress');
is( q1(
		q{SELECT count(*) FROM (SELECT k, mode FROM calls WHERE outcome = 'acquired'
		                        EXCEPT SELECT k, mode FROM effects) AS x}
	),
	'0',
	'each effect was made by the call that acquired its key');

# After the storm every key is completed: a reserve of any of them replays
# its response (checked by storm_outcome), in a transaction rolled back.
is( q1(
		q{BEGIN;
		  SELECT count(*) FILTER (WHERE storm_outcome(r, k, 'check') = 0 AND r.outcome = 'replay')
		    FROM generate_series(1, 100) AS k,
		         LATERAL idem.reserve('s' || k, jsonb_build_object('k', k)) AS r;
		  ROLLBACK;}
	),
	'100',
	'afterwards all 100 keys replay their stored response');

# The server log: deadlocks are retried by pgbench too, so look for them
# here; any error but 40001 is a failure.
my @entries = log_entries($node, $logstart);
my @deadlocks = grep { $_->{sqlstate} eq '40P01' || $_->{message} =~ /deadlock/ } @entries;
is(scalar(@deadlocks), 0, 'no deadlock') or diag(join("\n", map { $_->{line} } @deadlocks[0..4]));
my @bad = grep { $_->{level} ne 'WARNING' && $_->{sqlstate} ne '40001' } @entries;
is(scalar(@bad), 0, 'no error other than the documented 40001')
  or diag(join("\n", map { $_->{line} } @bad[ 0 .. ($#bad < 20 ? $#bad : 19) ]));
my @deaths = log_signal_deaths($node, $logstart);
is(scalar(@deaths), 0, 'no backend died of a signal');

my %by = map { split /\|/ } split /\n/,
  q1(q{SELECT outcome, count(*) FROM calls GROUP BY outcome});
my $modes = q1(
	q{SELECT string_agg(format('%s %s/%s/%s', mode, a, r, i), ', ' ORDER BY mode)
	    FROM (SELECT mode, count(*) FILTER (WHERE outcome = 'acquired') a,
	                 count(*) FILTER (WHERE outcome = 'replay') r,
	                 count(*) FILTER (WHERE outcome = 'in_progress') i
	            FROM calls GROUP BY mode) AS m});
my $serialization = grep { $_->{sqlstate} eq '40001' } @entries;
diag(sprintf(
		'duplicate storm: %d clients, %d requests over 100 keys in %.1f s: '
		  . '%d acquired, %d replays, %d in_progress (duplicates answered without acting: %d); '
		  . '%d serialization failures retried; by mode acquired/replay/in_progress: %s; test %d s',
		$clients, $requests, $elapsed, $by{acquired} // 0, $by{replay} // 0,
		$by{in_progress} // 0, ($by{replay} // 0) + ($by{in_progress} // 0),
		$serialization, $modes, time - $^T));

# 64 clients inserting, locking and updating the same 100 idem.keys rows
# (speculative insertions, HOT and non-HOT updates) must leave the heap and
# its btrees physically sound.
amcheck_idem($node, 'postgres',
	tables => [qw(effects calls)],
	label => 'amcheck after the storm');

$node->stop;
done_testing();
