# test/t/IdemReliability.pm — helpers for pg_idem's reliability tests
# (test/t/08x_*.pl): crashing a server under load and waiting until it may
# restart, running pgbench in the background, and reading the server log by
# SQLSTATE.
#
# The pgbench workloads live in test/reliability/ so that a reader can run
# them by hand; reliability_file() finds them both under `make test` (which
# copies test/t elsewhere and exports IDEM_ROOT) and under `make installcheck`.
package IdemReliability;

use strict;
use warnings;
use Cwd qw(abs_path);
use Exporter 'import';
use File::Basename qw(dirname);
use IPC::Run;
use Time::HiRes qw(usleep time);
use Test::More;
use PostgreSQL::Test::Utils;
use IdemTest;

our @EXPORT = qw(reliability_node reliability_file reliability_conf crash_restart_settled
  pgbench_start pgbench_finish pgbench_run log_offset log_entries
  log_signal_deaths sqlstate_counts amcheck_idem);

# postgresql.conf lines every reliability node gets: the server log names
# each error's SQLSTATE (so tests can tell documented errors from anything
# else), and statements are not logged (Cluster.pm turns on
# log_statement = all, which under pgbench writes gigabytes).
sub reliability_conf
{
	return (
		"log_line_prefix = '%m [%p] <%e> %q%a '",
		"log_statement = none",
		"log_min_messages = warning",
		"log_min_error_statement = error");
}

# IdemTest::idem_node with the reliability settings.  Development aid: when
# IDEM_RELIABILITY_MODEL names a SQL file, the extension is dropped and that
# file is loaded into a fresh schema idem instead (a model of SPEC.md, to
# debug a harness before the C implementation exists).
sub reliability_node
{
	my ($name, @conf) = @_;
	my $node = idem_node($name, reliability_conf(), @conf);
	if (my $model = $ENV{IDEM_RELIABILITY_MODEL})
	{
		$node->safe_psql('postgres',
			"DROP EXTENSION pg_idem CASCADE; DROP SCHEMA IF EXISTS idem CASCADE; CREATE SCHEMA idem;\n"
			  . slurp_file($model));
	}
	return $node;
}

# Absolute path of a file under test/reliability/.
sub reliability_file
{
	my ($name) = @_;
	my @roots;
	push @roots, "$ENV{IDEM_ROOT}/test/reliability" if $ENV{IDEM_ROOT};
	push @roots, dirname(abs_path(__FILE__)) . '/../reliability';
	push @roots, 'test/reliability';
	for my $r (@roots)
	{
		return abs_path("$r/$name") if -f "$r/$name";
	}
	die "test/reliability/$name not found (set IDEM_ROOT)";
}

# Is a process gone for good, or a zombie that holds no resources any more?
sub _proc_state
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/stat") or return undef;
	my $stat = <$fh>;
	close($fh);
	return undef unless defined $stat;
	return ($stat =~ /\) (\S) /) ? $1 : undef;
}

# PIDs (other than zombies) whose working directory is the data directory:
# every postgres process chdir()s there, so these are the children a killed
# postmaster leaves behind until they notice its death.
sub _orphans
{
	my ($datadir) = @_;
	my $real = abs_path($datadir);
	my @pids;
	opendir(my $dh, '/proc') or return ();
	for my $pid (grep { /^\d+$/ } readdir($dh))
	{
		my $cwd = readlink("/proc/$pid/cwd");
		next unless defined $cwd && $cwd eq $real;
		my $state = _proc_state($pid);
		push @pids, $pid if defined $state && $state ne 'Z';
	}
	closedir($dh);
	return @pids;
}

# SIGKILL the postmaster at this very moment, wait until it has been reaped
# and until every backend it leaves behind has exited (an orphaned backend
# still holds the shared memory segment, and a new postmaster refuses to
# start while it does), then start the server again: crash recovery runs.
# This is IdemTest::crash_and_restart plus the wait for orphans, which a
# crash under load needs ($orphan_waits counts the crashes that left some).
# Returns the seconds the restart took.
our $orphan_waits = 0;

sub crash_restart_settled
{
	my ($node) = @_;
	my $pidfile = $node->data_dir . '/postmaster.pid';
	open(my $fh, '<', $pidfile) or die "no $pidfile: $!";
	my $pid = <$fh>;
	close($fh);
	chomp($pid);
	my $t0 = time;
	$node->kill9;
	wait_pid_gone($pid, 120)
	  or die "postmaster $pid did not exit after SIGKILL";
	my $deadline = time + 120;
	$orphan_waits++ if _orphans($node->data_dir);
	while (my @left = _orphans($node->data_dir))
	{
		die "backends @left outlived their postmaster for 120s"
		  if time > $deadline;
		usleep(50_000);
	}
	for my $try (1 .. 5)
	{
		return time - $t0 if $node->start(fail_ok => 1);
		diag("restart attempt $try failed, retrying");
		sleep(1);
	}
	BAIL_OUT('server did not restart after a crash');
}

# Start pgbench against $node in the background.  %opt: clients, jobs,
# duration (-T) or transactions (-t), files (list of "path@weight"), defines
# (hash for -D), extra (list of more arguments), db.  Returns a handle for
# pgbench_finish.
sub pgbench_start
{
	my ($node, %opt) = @_;
	my @cmd = (
		'pgbench', '-n',
		'-h', $node->host, '-p', $node->port,
		'-c', $opt{clients} // 4,
		'-j', $opt{jobs} // 2);
	push @cmd, '-T', $opt{duration} if defined $opt{duration};
	push @cmd, '-t', $opt{transactions} if defined $opt{transactions};
	push @cmd, map { ('-f', $_) } @{ $opt{files} };
	for my $k (sort keys %{ $opt{defines} // {} })
	{
		push @cmd, '-D', "$k=$opt{defines}{$k}";
	}
	push @cmd, @{ $opt{extra} // [] };
	push @cmd, $opt{db} // 'postgres';
	my %run = (cmd => \@cmd, out => '', err => '');
	$run{h} = IPC::Run::start(\@cmd, '<', \undef, '>', \$run{out}, '2>',
		\$run{err});
	return \%run;
}

# Wait for a pgbench started by pgbench_start (at most $timeout_s seconds,
# then kill it) and parse its summary.  Returns a hash: processed, failed,
# retried, aborted (clients), status, out, err, errors (the error lines).
sub pgbench_finish
{
	my ($run, $timeout_s) = @_;
	$timeout_s //= 180;
	my $deadline = time + $timeout_s;
	while ($run->{h}->pumpable && time < $deadline)
	{
		$run->{h}->pump_nb;
		usleep(20_000);
	}
	if ($run->{h}->pumpable)
	{
		diag("pgbench still running after ${timeout_s}s: killed");
		$run->{h}->kill_kill;
	}
	eval { $run->{h}->finish; };
	my %r = (
		status => $run->{h}->full_result(0) >> 8,
		out => $run->{out},
		err => $run->{err});
	($r{processed}) =
	  $run->{out} =~ /number of transactions actually processed: (\d+)/;
	($r{failed}) = $run->{out} =~ /number of failed transactions: (\d+)/;
	($r{retried}) = $run->{out} =~ /number of transactions retried: (\d+)/;
	$r{$_} //= 0 for qw(processed failed retried);
	$r{errors} = [ grep { /error|abort|fatal/i } split /\n/, $run->{err} ];
	$r{aborted} = scalar grep { /client \d+ aborted/ } split /\n/,
	  $run->{err};
	return \%r;
}

# pgbench_start + pgbench_finish.
sub pgbench_run
{
	my ($node, %opt) = @_;
	return pgbench_finish(pgbench_start($node, %opt), $opt{timeout});
}

# The current size of the server log, to read only what follows.
sub log_offset
{
	my ($node) = @_;
	return -s $node->logfile // 0;
}

# Entries of level WARNING and above written to the server log after
# $offset: a list of { level, sqlstate, message, line }.  Needs the
# log_line_prefix of reliability_conf.
sub log_entries
{
	my ($node, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset // 0);
	my @e;
	for my $line (split /\n/, $log)
	{
		next
		  unless $line =~
		  /\[\d+\] <(\w{5})> .*?\b(WARNING|ERROR|FATAL|PANIC):\s+(.*)$/;
		push @e, { sqlstate => $1, level => $2, message => $3, line => $line };
	}
	return @e;
}

# Lines where the postmaster reports a child that died of a signal (a
# backend crash): the one thing none of these tests may ever provoke.
sub log_signal_deaths
{
	my ($node, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset // 0);
	return grep { /terminated by signal|was terminated by exception|PANIC:/ }
	  split /\n/, $log;
}

# Physical integrity after stress: contrib's amcheck over every table of
# schema idem and the given workload tables, their TOAST tables and all
# their indexes.  pg_idem's C code writes idem.keys, idem.outbox and their
# indexes through the table and index AMs directly (no planned INSERT or
# UPDATE), so a wrong index hint or a missed index entry would surface here
# and nowhere else: a lookup through the index just finds nothing.
#   tables  btree indexes
#   ------  -------------
#   verify_heapam(t): every row it returns is a corruption (line pointers,
#     tuple headers, xmin/xmax against the clog, TOAST pointers).
#   bt_index_parent_check(i, heapallindexed => true): the tree's structure
#     (order within and across pages, parent/child links) and that every
#     live heap tuple has its index entry.  It takes a ShareLock, which a
#     standby cannot grant, so on a node in recovery bt_index_check(i,
#     heapallindexed => true) is used (no cross-level checks).
# Each check runs in its own psql, so one relation's error (amcheck raises
# XX002 on a corrupt index) is reported against it and the others are still
# checked.  Emits one assertion per relation ("$label: <relation> ...") and
# one that the core tables and every workload table were covered.
# %opt: tables (workload tables, by name), label.  On a primary the amcheck
# extension is created if missing; a standby must have it replicated.
sub amcheck_idem
{
	my ($node, $db, %opt) = @_;
	my @tables = @{ $opt{tables} // [] };
	my $label = $opt{label} // 'amcheck';
	my $t0 = time;
	my $standby =
	  $node->safe_psql($db, 'SELECT pg_catalog.pg_is_in_recovery()') eq 't';
	$node->safe_psql($db, 'CREATE EXTENSION IF NOT EXISTS amcheck')
	  unless $standby;
	my $amschema = $node->safe_psql($db,
		q{SELECT extnamespace::regnamespace FROM pg_catalog.pg_extension WHERE extname = 'amcheck'});
	die "$label: extension amcheck is not installed in database $db"
	  if $amschema eq '';

	my $given = join(', ', map { "'" . ($_ =~ s/'/''/gr) . "'" } @tables);
	my $list = $node->safe_psql(
		$db, qq{
		WITH base AS (
		    SELECT c.oid FROM pg_catalog.pg_class c
		     WHERE c.relnamespace = 'idem'::regnamespace AND c.relkind IN ('r', 'm')
		    UNION
		    SELECT t::regclass::oid FROM unnest(ARRAY[$given]::text[]) AS t
		), heaps AS (
		    SELECT b.oid, b.oid::regclass::text AS label FROM base b
		    UNION ALL
		    SELECT c.reltoastrelid, 'toast of ' || c.oid::regclass
		      FROM pg_catalog.pg_class c JOIN base b ON b.oid = c.oid
		     WHERE c.reltoastrelid <> 0
		)
		SELECT 'heap', h.oid, h.label FROM heaps h
		UNION ALL
		SELECT am.amname, i.indexrelid,
		       CASE WHEN h.label LIKE 'toast of %' THEN h.label || ': index'
		            ELSE i.indexrelid::regclass::text END
		  FROM pg_catalog.pg_index i
		  JOIN heaps h ON h.oid = i.indrelid
		  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
		  JOIN pg_catalog.pg_am am ON am.oid = ic.relam
		 ORDER BY 3});

	my %checked;
	for my $line (split /\n/, $list)
	{
		my ($kind, $oid, $rel) = split /\|/, $line, 3;
		my ($sql, $how);
		if ($kind eq 'heap')
		{
			$sql = qq{SELECT format('block %s, offset %s, attribute %s: %s', blkno, offnum, attnum, msg)
			            FROM $amschema.verify_heapam(${oid}::regclass)};
			$how = 'verify_heapam finds no corruption';
		}
		elsif ($kind eq 'btree')
		{
			my $fn = $standby ? 'bt_index_check' : 'bt_index_parent_check';
			$sql = "SELECT $amschema.$fn(${oid}::regclass, heapallindexed => true)";
			$how = "$fn with heapallindexed finds no corruption";
		}
		else
		{
			# amcheck in PostgreSQL 15 checks btree only; say so rather
			# than pass silently.
			note("$label: $rel is a $kind index, which amcheck cannot check");
			next;
		}
		my ($ret, $out, $err) = $node->psql($db, $sql);
		my @problems = grep { /\S/ } split /\n/, $out;
		push @problems, "psql exited with $ret: $err" if $ret != 0;
		ok(!@problems, "$label: $rel: $how")
		  or diag("$label: $rel:\n" . join("\n", @problems));
		$checked{$rel} = 1;
	}
	note(sprintf('%s: %d relations checked in %.1f s', $label, scalar(keys %checked), time - $t0));
	# idem.outbox is partitioned: its rows and indexes are in its leaves
	my @missing = grep { !$checked{$_} }
	  ('idem.keys', (map { "idem.outbox_$_" } 0 .. 7), @tables);
	is(join(' ', @missing), '',
		"$label: amcheck covered idem.keys, the leaves of idem.outbox and the workload tables");
	return;
}

# "SQLSTATE level" => count over a list of log entries, for diagnostics.
sub sqlstate_counts
{
	my (@entries) = @_;
	my %c;
	$c{"$_->{sqlstate} $_->{level}"}++ for @entries;
	return \%c;
}

1;
