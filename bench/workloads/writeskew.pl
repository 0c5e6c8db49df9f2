# invariants / contended write skew: many clients keep a few hot on-call shifts staffed (read the shift, take one doctor off or put one on); run by run.sh, not by pgbench.
#
#   perl writeskew.pl VARIANT TABLE CLIENTS SECONDS HOT_SHIFTS SHIFT_STRIDE
#
# The business transaction is the same for every variant: read how many
# doctors of one shift are on duty (and pick one of each kind at random);
# if two or more, take the picked on-duty doctor off, else put the picked
# off-duty doctor on (so the workload keeps going); COMMIT.  The rule is
# "every shift has at least one doctor on duty".  Two transactions that both
# read 2 and take different doctors off break it together (write skew).
#
# VARIANT
#   idem          READ COMMITTED, idem.enforce_invariant on TABLE: a COMMIT
#                 that gets ID030 is a rejected request (not retried)
#   serializable  no invariant, every transaction SERIALIZABLE, retried on
#                 40001 / 40P01 until it commits (the same request again)
#   none          READ COMMITTED, nothing checks the rule (reference: shows
#                 that the workload does produce write skew)
#
# pgbench cannot run the idem variant: pgbench 15 aborts a client on any
# error but 40001/40P01, and ID030 is the expected outcome of a rejected
# request.  So both sides run under this driver, with the same statements
# (server-side prepared by DBD::Pg), the same connections and the same
# client overhead.
#
# A transaction that reads 0 doctors on duty has seen a committed violation;
# it records it in bench.oncall_empty_seen (never written when the rule
# holds).  Prints one line: committed rejected retries seconds.
use strict;
use warnings;
use DBI;
use Time::HiRes qw(time);

my ($variant, $table, $clients, $seconds, $hot, $stride) = @ARGV;
die "usage: writeskew.pl VARIANT TABLE CLIENTS SECONDS HOT_SHIFTS SHIFT_STRIDE\n"
  unless defined $stride && $variant =~ /^(idem|serializable|none)$/ && $table =~ /^\w+$/;

pipe(my $rd, my $wr) or die "pipe: $!";
my @kids;
my $start = time() + 0.5;    # every client connected before the clock starts
for my $c (1 .. $clients)
{
	my $pid = fork() // die "fork: $!";
	if ($pid == 0)
	{
		close $rd;
		srand($$ ^ time());
		print {$wr} join(' ', client($start)), "\n";
		close $wr;
		exit 0;
	}
	push @kids, $pid;
}
close $wr;
my ($committed, $rejected, $retries) = (0, 0, 0);
while (my $line = <$rd>)
{
	my ($a, $b, $c) = split ' ', $line;
	$committed += $a;
	$rejected += $b;
	$retries += $c;
}
my $failed = 0;
for (@kids) { waitpid($_, 0); $failed++ if $? != 0; }
die "writeskew.pl: $failed client(s) failed\n" if $failed;
print "$committed $rejected $retries $seconds\n";

sub client
{
	my ($t0) = @_;
	my $dbh = DBI->connect('dbi:Pg:', undef, undef,
		{ AutoCommit => 0, RaiseError => 0, PrintError => 0, pg_server_prepare => 1 })
	  or die "connect: $DBI::errstr\n";
	if ($variant eq 'serializable')
	{
		# every transaction of the session, as a team would configure its pool
		$dbh->do('SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE')
		  or die $dbh->errstr;
		$dbh->commit;
	}
	my $read = $dbh->prepare(
		"SELECT count(*) FILTER (WHERE on_duty),
		        coalesce((array_agg(doctor ORDER BY random()) FILTER (WHERE on_duty))[1], 0),
		        coalesce((array_agg(doctor ORDER BY random()) FILTER (WHERE NOT on_duty))[1], 0)
		   FROM bench.$table WHERE shift = \$1");
	my $set = $dbh->prepare(
		"UPDATE bench.$table SET on_duty = \$1 WHERE shift = \$2 AND doctor = \$3");
	my $seen = $dbh->prepare("INSERT INTO bench.oncall_empty_seen (tbl, shift) VALUES (\$1, \$2)");
	my ($committed, $rejected, $retries) = (0, 0, 0);
	my $sleep = $t0 - time();
	select(undef, undef, undef, $sleep) if $sleep > 0;
	my $end = $t0 + $seconds;
	while (time() < $end)
	{
		# hot shifts spread over the key space, so that SSI's page-level
		# predicate locks on the primary key do not make different shifts
		# conflict (the choice that favours the SERIALIZABLE baseline)
		my $shift = 1 + $stride * int(rand($hot));
		while (1)
		{
			my $ok = $read->execute($shift);
			my ($n, $off, $on);
			($n, $off, $on) = $read->fetchrow_array if $ok;
			if ($ok)
			{
				$read->finish;
				if ($n >= 2)
				{
					$ok = $set->execute(0, $shift, $off);
				}
				else
				{
					$ok = $seen->execute($table, $shift) if $n == 0;
					$ok &&= $set->execute(1, $shift, $on);
				}
			}
			$ok &&= $dbh->commit;
			if ($ok)
			{
				$committed++;
				last;
			}
			my $state = $dbh->state;
			$dbh->rollback;
			if ($variant eq 'serializable' && ($state eq '40001' || $state eq '40P01'))
			{
				$retries++;
				last if time() >= $end;
				next;    # the same request again
			}
			if ($variant eq 'idem' && $state eq 'ID030')
			{
				$rejected++;    # the request is refused (HTTP 409), not retried
				last;
			}
			die "client: unexpected error $state: " . $dbh->errstr . "\n";
		}
	}
	$dbh->disconnect;
	return ($committed, $rejected, $retries);
}
