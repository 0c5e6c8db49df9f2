# A seeded randomized checker of the transactional outbox (SPEC.md section 3).
#
# Concurrent clients on one server: emitters (transactions of several
# events over a few topics, savepoints rolled back or released, whole
# rollbacks, late commits), relays (next_batch / finish_batch loops, some in
# transactions that emit follow-up events, dropped batches, re-subscribes
# with other filters, two relays for some consumers), consumers created
# mid-run (from_start or not, in a transaction held open while trimming
# runs, after a rolled-back attempt), a trimmer (trim_outbox and maintain in
# a loop, plus the maintenance worker), and kill -9 of the postmaster.
# Every emitting transaction journals its kept event ids in the same
# transaction, every consumer its starting position, so what committed is
# known after any crash.  Then, per consumer: (a) every owed committed
# event was delivered, (b) nothing else was, (c) no event is in two
# finished batches, (d) ids increase within a batch, an open batch comes
# back unchanged, (e) consumer_lag shows nothing pending after the final
# drain; and the server log shows no crash of a backend and no unexpected
# SQLSTATE.  IdemOutboxChecker.pm has the clients and the checks.
#
# Modes (the seed drives every choice; the interleavings vary anyway):
#   make test                       one iteration of ~40 s (the short mode)
#   IDEM_SEED=<n>                   replay that seed (printed as "seed: N")
#   IDEM_SOAK_SECONDS=<s>           iterations with seeds N, N+1, ... for s
#                                   seconds; each iteration is exactly the
#                                   short mode of its seed, so a failing one
#                                   replays with IDEM_SEED
#   IDEM_ITERATION_SECONDS=<s>      workload seconds per iteration (40)
#
# The soak, 30 minutes, on its own:
#   IDEM_SUITES=tap IDEM_TAP=040_outbox_random.pl IDEM_SOAK_SECONDS=1800 make test
# and a replay:
#   IDEM_SUITES=tap IDEM_TAP=040_outbox_random.pl IDEM_SEED=12345 make test
use strict;
use warnings;
use File::Path qw(rmtree);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use IdemTest;
use IdemReliability;
use IdemOutboxChecker;

my $iteration_s = $ENV{IDEM_ITERATION_SECONDS} // 40;
my $soak_s = $ENV{IDEM_SOAK_SECONDS} // 0;
my $first_seed = $ENV{IDEM_SEED} // (int(time * 1000) ^ ($$ << 12)) % 1_000_000_007;
my $started = time;

# SQLSTATEs the server may log (warnings included): the relays' documented
# refusals (a consumer not created yet, a batch another relay of the
# consumer finished), connections refused while the server recovers from a
# crash, and the maintenance worker told to exit by the final shutdown.
my %expected_sqlstate = map { $_ => 1 } qw(ID020 ID021 57P01 57P03);

sub replay_hint
{
	my ($seed) = @_;
	my $dur = $iteration_s == 40 ? '' : " IDEM_ITERATION_SECONDS=$iteration_s";
	return "seed: $seed (replay: IDEM_SUITES=tap IDEM_TAP=040_outbox_random.pl IDEM_SEED=$seed$dur make test)";
}

my @failed_seeds;
my $iteration = 0;
while (1)
{
	my $seed = $first_seed + $iteration;
	my $t0 = time;
	note(replay_hint($seed));
	diag("seed: $seed") if $soak_s;
	my $plan = make_plan($seed, $iteration_s);
	note(sprintf('plan: %d emitters, consumers %s, crashes at %s s',
		scalar @{ $plan->{emitters} } + scalar @{ $plan->{fast} },
		join(' ', map {
			sprintf('%s[core %s%s%s%s%s]', $_->{name}, join(',', @{ $_->{core} }),
				$_->{setup} ? '' : sprintf(' at %.1fs', $_->{at}),
				$_->{from_start} ? ' from_start' : '',
				$_->{hold} ? sprintf(' held %.1fs', $_->{hold}) : '',
				$_->{relays} == 2 ? ' 2 relays' : '')
		} @{ $plan->{consumers} }),
		join(',', map { sprintf('%.1f', $_) } @{ $plan->{crashes} }) || 'none'));

	my $node = reliability_node("outbox_random_$seed", 'idem.maintenance_interval = 1s');
	my $dir = "$PostgreSQL::Test::Utils::tmp_check/outbox_random_$seed";
	my $res = run_iteration($plan, $node, $dir);
	$node->stop;

	# the server log: no backend died of a signal, no PANIC or failed
	# assertion, no SQLSTATE nobody expects (an internal XX000 above all)
	my @deaths = log_signal_deaths($node, 0);
	push @deaths, grep { /TRAP:|segfault/ } split /\n/, slurp_file($node->logfile);
	push @{ $res->{checks} }, [ 'no backend crashed (signal, PANIC, TRAP)', !@deaths,
		join("\n", @deaths[ 0 .. ($#deaths < 9 ? $#deaths : 9) ]) ];
	my @odd = grep { !$expected_sqlstate{ $_->{sqlstate} } } log_entries($node, 0);
	push @{ $res->{checks} }, [ 'the server logged no unexpected SQLSTATE', !@odd,
		join("\n", map { $_->{line} } @odd[ 0 .. ($#odd < 9 ? $#odd : 9) ]) ];
	my $counts = sqlstate_counts(log_entries($node, 0));

	my $all_ok = 1;
	for my $check (@{ $res->{checks} })
	{
		my ($name, $ok, $details) = @$check;
		$all_ok = 0 unless $ok;
		ok($ok, "seed $seed: $name")
		  or diag(replay_hint($seed) . "\n$details");
	}
	my $s = $res->{stats};
	my $summary = sprintf(
		'seed %d: %.0fs (workload %ss), %d crashes (restarts %ss); emitting transactions: %d committed, %d rolled back, %d unknown; '
		  . '%d events committed (%d dropped by savepoints), %d relay follow-up transactions; %d consumers, %d re-subscribes; '
		  . '%d batches (%d finished, %d observations, %d drops, %d in the final drain); %d owed deliveries; %d events trimmed in %d calls; '
		  . 'ids up to %d (run %d of the outbox ring); '
		  . 'server log: %s',
		$seed, time - $t0, $s->{workload_s}, $s->{crashes}, $s->{restart_s} || '-',
		$s->{txn_c} // 0, $s->{txn_r} // 0, $s->{txn_u} // 0,
		$s->{events_committed} // 0, $s->{events_dropped_by_savepoints} // 0,
		$s->{relay_txn_committed} // 0, $s->{consumers} // 0, $s->{resubscribes} // 0,
		$s->{batches} // 0, $s->{batches_finished} // 0, $s->{observations} // 0,
		$s->{drops} // 0, $s->{drain_batches} // 0, $s->{owed} // 0,
		$s->{trimmed} // 0, $s->{trim_calls} // 0,
		$s->{last_id} // 0, int(($s->{last_id} // 0) / 65536),
		join(', ', map { "$_: $counts->{$_}" } sort keys %$counts) || 'nothing');
	$all_ok ? note($summary) : diag($summary);
	cmp_ok($s->{txn_c} // 0, '>', 0, "seed $seed: the emitters committed transactions");

	if ($all_ok)
	{
		# keep what a failure needs, drop the rest (a soak runs many)
		rmtree($dir);
		$node->clean_node;
	}
	else
	{
		push @failed_seeds, $seed;
		diag("seed $seed: client logs in $dir, server log " . $node->logfile);
	}
	$iteration++;
	last unless $soak_s && time - $started + (time - $t0) < $soak_s;
}

diag('failing seeds: ' . join(' ', @failed_seeds)) if @failed_seeds;
note(sprintf('%d iteration(s) in %.0f s', $iteration, time - $started));
done_testing();
