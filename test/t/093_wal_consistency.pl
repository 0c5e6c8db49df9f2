# WAL consistency: everything pg_idem writes replays on a standby into the
# very pages the primary has.
#
# pg_idem writes idem.keys, idem.outbox and their indexes through the table
# and index AMs from C, bypassing the executor's INSERT/UPDATE; a page change
# made without its WAL record (or with a wrong one) would leave a standby, or
# a server after crash recovery, with different pages than the primary had.
# With wal_consistency_checking = 'all' the primary attaches a full image of
# every page to every record, and the standby's startup process compares the
# page it replayed with that image: a difference is a FATAL "inconsistent
# page found", which stops the standby.
#
# A primary (wal_consistency_checking = 'all', compressed images) streams to
# a standby that replays everything since before CREATE EXTENSION, while the
# payment workload of the crash loop (reserve/complete/checkpoint in atomic
# and lease mode, version-checked updates, emit), a relay (next_batch,
# finish_batch), a churn of short-lived keys (release, forget, completion
# with a 1 s ttl) and maintenance (purge, trim_outbox, maintain, CHECKPOINT)
# run for a few seconds; then VACUUM FREEZE.  Afterwards:
#   - the standby replayed all of it, is still running, and logged no
#     "inconsistent page", FATAL or PANIC;
#   - every table of idem and of the workload has the same contents on both;
#   - amcheck finds every heap and btree intact on both (bt_index_check on
#     the standby, where bt_index_parent_check's ShareLock is not available).
#
# WAL_CONSISTENCY_SECONDS (default 12) sets how long the workload runs.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);
use IdemReliability;

my $duration = $ENV{WAL_CONSISTENCY_SECONDS} // 12;
my $t0 = time;
sub phase { note(sprintf('%5.1fs %s', time - $t0, $_[0])); }

my $primary = PostgreSQL::Test::Cluster->new('wal_primary');
$primary->init(allows_streaming => 1);
$primary->append_conf(
	'postgresql.conf',
	join("\n",
		"shared_preload_libraries = 'pg_idem'",
		reliability_conf(),
		# The backend type names the startup process in the standby's log.
		"log_line_prefix = '%m [%p] <%e> [%b] %q%a '",
		"wal_consistency_checking = 'all'",
		# Every record carries page images: compress them (and replay the
		# decompression path too).
		'wal_compression = lz4',
		'max_connections = 40',
		# Maintenance is called by the workload instead of the worker, so
		# that nothing writes once the workload has stopped and the two
		# nodes can be compared at rest.
		'idem.maintenance_interval = 0')
	  . "\n");
$primary->start;
$primary->safe_psql('postgres',
	q{SELECT pg_create_physical_replication_slot('standby')});

# The standby starts from a backup taken before the extension exists, so it
# replays CREATE EXTENSION and everything after it.
$primary->backup('before_extension');
my $standby = PostgreSQL::Test::Cluster->new('wal_standby');
$standby->init_from_backup($primary, 'before_extension', has_streaming => 1);
$standby->append_conf(
	'postgresql.conf', join("\n",
		"primary_slot_name = 'standby'",
		# Keep the primary's VACUUM from removing rows a standby query still
		# reads: a recovery conflict would cancel the comparison.
		'hot_standby_feedback = on',
		# The startup process's exit and the postmaster's reaction are LOG.
		'log_min_messages = log')
	  . "\n");
$standby->start;
my $standby_log_start = log_offset($standby);

$primary->safe_psql('postgres', 'CREATE EXTENSION pg_idem');
$primary->safe_psql('postgres',
	slurp_file(reliability_file('payments-schema.sql')));
# payments-schema subscribes a consumer that never reads ("audit") so that
# the crash loop can count events; here events must be trimmed once the
# relay has finished them.
$primary->safe_psql('postgres', q{
	SELECT idem.unsubscribe('audit');
	CREATE TABLE maint_log (task text NOT NULL, n bigint NOT NULL);
});
my $primary_log_start = log_offset($primary);

# ----------------------------------------------------------------------
# The workload: four pgbench runs side by side.
# ----------------------------------------------------------------------
my $dir = $PostgreSQL::Test::Utils::tmp_check;

my $relay = "$dir/wal_relay.pgbench";
PostgreSQL::Test::Utils::append_to_file($relay, <<'EOS');
SELECT coalesce(max(batch_id), 0) AS b FROM idem.next_batch('relay', 50) \gset
\if :b
SELECT idem.finish_batch('relay', :b);
\else
\sleep 5 ms
\endif
EOS

# Short-lived keys in their own scope, through every transition that the
# payments do not take: a checkpoint, then release, forget or completion
# with a 1 s ttl (so purge finds expired keys all along).
my $churn = "$dir/wal_churn.pgbench";
PostgreSQL::Test::Utils::append_to_file($churn, <<'EOS');
\set k random(1, 1000000000)
\set pick random(1, 3)
SELECT r.outcome = 'acquired' AS acq, coalesce(r.token, 0) AS tok
  FROM idem.reserve('c' || :k, '{"churn": true}', scope => 'churn', lease => '5s', ttl => '1s') AS r \gset
\if :acq
SELECT idem.checkpoint('c' || :k, :tok, 'half', '{"done": 1}', scope => 'churn', lease => '5s');
\if :pick = 1
SELECT idem.release('c' || :k, :tok, scope => 'churn');
\elif :pick = 2
SELECT idem.forget('c' || :k, scope => 'churn');
\else
SELECT idem.complete('c' || :k, :tok, '{"ok": true}', 200, scope => 'churn');
\endif
\endif
EOS

# Maintenance, with what it deleted logged (to show it did), and now and
# then a checkpoint, after which every page's first change carries a full
# image that replay must restore rather than redo.
my $maint = "$dir/wal_maint.pgbench";
PostgreSQL::Test::Utils::append_to_file($maint, <<'EOS');
INSERT INTO maint_log SELECT 'purge', idem.purge(200);
INSERT INTO maint_log SELECT 'trim_outbox', idem.trim_outbox(200);
INSERT INTO maint_log SELECT 'maintain ' || task, rows FROM idem.maintain();
\set c random(1, 10)
\if :c = 1
CHECKPOINT;
\endif
\sleep 200 ms
EOS

phase('workload');
my %runs = (
	payments => pgbench_start(
		$primary,
		clients => 4,
		jobs => 1,
		duration => $duration,
		files => [
			reliability_file('payment-atomic.pgbench') . '@3',
			reliability_file('payment-lease.pgbench') . '@1'
		],
		defines => { keys => 8000 },    # few enough that keys replay too
		extra => [ '--random-seed', int(rand(2**31)) ]),
	relay =>
	  pgbench_start($primary, clients => 1, jobs => 1, duration => $duration, files => [$relay]),
	churn =>
	  pgbench_start($primary, clients => 1, jobs => 1, duration => $duration, files => [$churn]),
	maintenance =>
	  pgbench_start($primary, clients => 1, jobs => 1, duration => $duration, files => [$maint]));
for my $name (sort keys %runs)
{
	my $r = pgbench_finish($runs{$name}, $duration + 120);
	cmp_ok($r->{processed}, '>', 0, "the $name workload ran")
	  or diag($r->{err});
}
phase('workload stopped');

# Drain the relay so that trim has something left to do, then let
# maintenance and VACUUM FREEZE write their records (prune, freeze,
# visibility map, btree deletion) while no one else writes.
$primary->safe_psql('postgres', q{
	DO $$
	DECLARE b bigint;
	BEGIN
	  LOOP
	    SELECT max(batch_id) INTO b FROM idem.next_batch('relay', 500);
	    EXIT WHEN b IS NULL;
	    PERFORM idem.finish_batch('relay', b);
	  END LOOP;
	END $$;
	INSERT INTO maint_log SELECT 'trim_outbox', idem.trim_outbox();
	INSERT INTO maint_log SELECT 'purge', idem.purge();
});
$primary->safe_psql('postgres', 'VACUUM (FREEZE) idem.keys, idem.outbox, idem.consumers, accounts, payments');
phase('vacuumed');

my ($purged, $trimmed) = split /\|/, $primary->safe_psql('postgres',
	q{SELECT coalesce(sum(n) FILTER (WHERE task LIKE '%purge%' OR task LIKE '%keys%'), 0),
	         coalesce(sum(n) FILTER (WHERE task LIKE '%trim%' OR task LIKE '%outbox%'), 0)
	    FROM maint_log});
cmp_ok($purged, '>', 0, 'purge deleted expired keys during the workload');
cmp_ok($trimmed, '>', 0, 'trim deleted finished events during the workload');

# The primary first: this also creates extension amcheck, which the standby
# then replays (it cannot create it itself).
amcheck_idem($primary, 'postgres',
	tables => [qw(accounts payments maint_log)],
	label => 'amcheck on the primary');

# ----------------------------------------------------------------------
# Replay.  Wait for the standby to pass the primary's last WAL record, but
# stop waiting as soon as it can no longer answer (an inconsistent page
# stops it) rather than time out.
# ----------------------------------------------------------------------
my $target = $primary->lsn('insert');
my $replayed = 0;
my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
while (time < $deadline)
{
	my ($ret, $out) = $standby->psql('postgres',
		"SELECT pg_last_wal_replay_lsn() >= '$target'::pg_lsn");
	last if $ret != 0;
	if ($out eq 't')
	{
		$replayed = 1;
		last;
	}
	usleep(100_000);
}
ok($replayed, "the standby replayed the primary's WAL up to $target");
phase('standby caught up');

my ($ret, $out) = $standby->psql('postgres', 'SELECT pg_is_in_recovery()');
my $running = is("$ret $out", '0 t', 'the standby is still running, in recovery');

# The standby's log, from its start through all of the replay: a page that
# replayed differently from the primary's image stops the startup process
# with FATAL, and the postmaster shuts the standby down.
my $standby_log = slurp_file($standby->logfile, $standby_log_start);
my @inconsistent = grep { /inconsistent page/ } split /\n/, $standby_log;
is(scalar(@inconsistent), 0, 'the standby found no inconsistent page during replay')
  or diag(join("\n", @inconsistent[ 0 .. ($#inconsistent < 9 ? $#inconsistent : 9) ]));
my $fatal_re = qr/\b(FATAL|PANIC):|startup process .* (terminated|exited)|terminated by signal/;
my @fatal = grep { /$fatal_re/ } split /\n/, $standby_log;
is(scalar(@fatal), 0, 'no FATAL or PANIC on the standby, and its startup process never exited')
  or diag(join("\n", @fatal[ 0 .. ($#fatal < 9 ? $#fatal : 9) ]));

# ----------------------------------------------------------------------
# Same contents on both nodes: every table of idem and of the workload,
# each row in its text form, in a deterministic order.  (Only on a standby
# that still runs: a stopped one has failed above already.)
# ----------------------------------------------------------------------
if ($running)
{
	my $tables_sql = q{SELECT string_agg(c.oid::regclass::text, ' ' ORDER BY c.oid::regclass::text)
	  FROM pg_class c
	 WHERE c.relnamespace IN ('idem'::regnamespace, 'public'::regnamespace) AND c.relkind = 'r'};
	my $tables = $primary->safe_psql('postgres', $tables_sql);
	is($standby->safe_psql('postgres', $tables_sql), $tables,
		'the standby has the same tables as the primary');
	for my $t (split / /, $tables)
	{
		my $sql = qq{SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '-')
		               FROM $t AS t};
		my $p = $primary->safe_psql('postgres', $sql);
		is($standby->safe_psql('postgres', $sql), $p,
			"$t has the same contents on the standby (" . (split / /, $p)[0] . ' rows)');
	}

	amcheck_idem($standby, 'postgres',
		tables => [qw(accounts payments maint_log)],
		label => 'amcheck on the standby');

	# Nothing went wrong while the standby answered those queries either.
	my @late = grep { /$fatal_re/ } split /\n/,
	  slurp_file($standby->logfile, $standby_log_start + length($standby_log));
	is(scalar(@late), 0, 'no FATAL or PANIC on the standby during the checks')
	  or diag(join("\n", @late));
}

# On the primary: no crash, and no error but ID002 (a lease-mode payment
# whose 3 s lease ran out while the 2 cores were busy is fenced off).
my @deaths = log_signal_deaths($primary, $primary_log_start);
is(scalar(@deaths), 0, 'no backend of the primary died of a signal')
  or diag(join("\n", @deaths));
my @bad = grep { $_->{level} ne 'WARNING' && $_->{sqlstate} ne 'ID002' }
  log_entries($primary, $primary_log_start);
is(scalar(@bad), 0, 'no error on the primary but the documented ID002')
  or diag(join("\n", map { $_->{line} } @bad[ 0 .. ($#bad < 19 ? $#bad : 19) ]));

my $stats = $primary->safe_psql('postgres', q{
	SELECT format('%s payments, %s outbox rows left, %s keys, %s MB of WAL',
	              (SELECT count(*) FROM payments), (SELECT count(*) FROM idem.outbox),
	              (SELECT count(*) FROM idem.keys),
	              round(pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') / 1048576))});
diag(sprintf('wal consistency: %s; %d purged, %d trimmed; %d s', $stats, $purged, $trimmed, time - $^T));

# (A standby stopped by an inconsistent page has failed above already.)
$standby->stop('fast', fail_ok => 1);
$primary->stop;
done_testing();
