# Invariant storm: 64 concurrent clients, each request at a random isolation
# level, run three applications whose own checks write skew defeats
# (test/reliability/invariants-*.pgbench): doctors on call, a ledger that
# must not go negative (with now and then a fee charged to every account in
# one transaction, which locks the whole invariant), orders whose total
# must equal their lines.  After
# the storm every invariant holds for every group, and money is conserved;
# the requests ended only as committed, declined by the application, ID030
# or 40001; there was no deadlock, no other error, no crash.
#
# Before the storm the same doctors workload runs against a copy of the
# table that no invariant watches; how often it ends with a shift nobody
# covers is reported (not asserted: it depends on timing), to show that the
# storm does produce the races the invariants stop.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;
use IdemReliability;

my $clients = 64;
my $per_client = $ENV{STORM_TRANSACTIONS} // 40;

my $node = reliability_node('inv_storm',
	'max_connections = 160',
	'max_pred_locks_per_transaction = 256',
	'deadlock_timeout = 100ms');
$node->safe_psql('postgres', slurp_file(reliability_file('invariants-schema.sql')));

sub q1 { return $node->safe_psql('postgres', $_[0]); }

# The baseline: the doctors' application alone, on an unwatched table.
q1(q{CREATE TABLE on_call_plain (LIKE on_call INCLUDING ALL);
     INSERT INTO on_call_plain SELECT * FROM on_call});
my $plain_script = $node->basedir . '/doctors-plain.pgbench';
my $doctors = slurp_file(reliability_file('invariants-doctors.pgbench'));
(my $plain = $doctors) =~ s/\bon_call\b/on_call_plain/g;
$plain =~ s/'doctors'/'doctors-plain'/;
open(my $fh, '>', $plain_script) or die $!;
print $fh $plain;
close($fh);
my $r = pgbench_run($node, clients => $clients, jobs => 2, transactions => $per_client,
	files => [$plain_script], timeout => 300);
is($r->{status}, 0, 'the baseline ran') or diag($r->{err});
note('baseline without an invariant: '
	  . q1(q{SELECT count(*) FROM (SELECT shift_id FROM on_call_plain GROUP BY shift_id
	                             HAVING NOT bool_or(on_duty)) x})
	  . ' of 100 shifts left with nobody on call');

my $logstart = log_offset($node);
$r = pgbench_run(
	$node,
	clients => $clients,
	jobs => 2,
	transactions => $per_client,
	files => [
		reliability_file('invariants-doctors.pgbench') . '@30',
		reliability_file('invariants-ledger.pgbench') . '@30',
		reliability_file('invariants-ledger-fee.pgbench') . '@1',
		reliability_file('invariants-orders.pgbench') . '@30'
	],
	extra => [ '--random-seed=' . int(rand(2**31)) ],
	timeout => 600);
my $requests = $clients * $per_client;
is($r->{status}, 0, 'pgbench ran clean') or diag($r->{err});
is($r->{processed}, $requests, "all $requests requests were answered");

# Every invariant holds for every group.
is(q1(q{SELECT string_agg(shift_id::text, ',') FROM
          (SELECT shift_id FROM on_call GROUP BY shift_id HAVING NOT bool_or(on_duty)) x}),
	'', 'every shift has a doctor on call');
is(q1(q{SELECT string_agg(account || ':' || balance, ',') FROM
          (SELECT account, sum(amount) AS balance FROM ledger GROUP BY account) x WHERE balance < 0}),
	'', 'no account is overdrawn');
is(q1(q{SELECT sum(amount) FROM ledger}), '10000', 'transfers and fees conserved the money');
is(q1(q{SELECT string_agg(o.id || ':' || o.total || '<>' || coalesce(l.sum, 0), ',')
          FROM orders o LEFT JOIN (SELECT order_id, sum(amount) FROM order_lines GROUP BY order_id) l
            ON l.order_id = o.id
         WHERE o.total <> coalesce(l.sum, 0)}),
	'', 'every order total equals the sum of its lines');

# How the requests ended.
my $outcomes = q1(q{SELECT string_agg(app || ' ' || outcome || ' ' || n, E'\n' ORDER BY app, outcome)
                      FROM (SELECT app, outcome, count(*) AS n FROM storm_outcomes
                             WHERE app <> 'doctors-plain' GROUP BY 1, 2) x});
note("outcomes:\n$outcomes");
is(q1(q{SELECT count(*) FROM storm_outcomes WHERE app <> 'doctors-plain'}),
	$requests, 'every request recorded how it ended');
is(q1(q{SELECT string_agg(DISTINCT app || ' ' || outcome, ', ') FROM storm_outcomes
         WHERE outcome NOT IN ('committed', 'declined', 'ID030', '40001')}),
	'', 'requests ended only committed, declined, ID030 or 40001');
is(q1(q{SELECT count(DISTINCT app) FROM storm_outcomes
         WHERE outcome = 'committed' AND app <> 'doctors-plain'}),
	'4', 'every application (the fee included) committed requests');

# The server log: no deadlock (checks take their locks in one order), no
# error but the two documented ones, no crash.
my @entries = log_entries($node, $logstart);
my @deadlocks = grep { $_->{sqlstate} eq '40P01' || $_->{message} =~ /deadlock/ } @entries;
is(scalar(@deadlocks), 0, 'no deadlock')
  or diag(join("\n", map { $_->{line} } @deadlocks[ 0 .. ($#deadlocks < 4 ? $#deadlocks : 4) ]));
my @bad = grep { $_->{level} ne 'WARNING' && $_->{sqlstate} ne '40001' && $_->{sqlstate} ne 'ID030' }
  @entries;
is(scalar(@bad), 0, 'no error other than ID030 and 40001')
  or diag(join("\n", map { $_->{line} } @bad[ 0 .. ($#bad < 20 ? $#bad : 19) ]));
is(scalar(log_signal_deaths($node, $logstart)), 0, 'no backend crashed');

$node->stop;
done_testing();
