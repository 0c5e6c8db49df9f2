# test/t/IdemTest.pm — helpers shared by pg_idem's perl TAP tests.
package IdemTest;

use strict;
use warnings;
use Exporter 'import';
use Time::HiRes qw(usleep);
use Test::More;

our @EXPORT = qw(idem_node crash_and_restart wait_pid_gone);

# A fresh cluster with pg_idem preloaded and created in database postgres.
# Extra postgresql.conf lines may be passed.
sub idem_node
{
	my ($name, @conf) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf',
		join("\n", "shared_preload_libraries = 'pg_idem'", @conf) . "\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION pg_idem');
	return $node;
}

# Wait until a process no longer exists (a killed postmaster must be reaped
# before a new one may take its data directory).
sub wait_pid_gone
{
	my ($pid, $timeout_s) = @_;
	$timeout_s //= 60;
	for (1 .. $timeout_s * 20)
	{
		return 1 unless kill(0, $pid);
		usleep(50_000);
	}
	return 0;
}

# SIGKILL the postmaster (a crash, no shutdown checkpoint), wait until it and
# its children are gone, and start it again: the server runs crash recovery.
sub crash_and_restart
{
	my ($node) = @_;
	my $pidfile = $node->data_dir . '/postmaster.pid';
	open(my $fh, '<', $pidfile) or die "no $pidfile: $!";
	my $pid = <$fh>;
	close($fh);
	chomp($pid);
	$node->kill9;
	wait_pid_gone($pid) or die "postmaster $pid did not exit after SIGKILL";
	# Children notice the postmaster's death and exit on their own; the
	# shared memory check on restart waits for them.
	$node->start;
	return;
}

1;
