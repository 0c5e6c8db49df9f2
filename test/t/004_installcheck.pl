# test/t/004_installcheck.pl — `make installcheck` against a server the user
# runs, as docs/installcheck.md tells them to: one cluster without
# shared_preload_libraries (the default install) and one with it.  pg_idem is
# only `make install`ed (as make test did) and the environment names the
# server (PGHOST, PGPORT, PGUSER), nothing else.
#
# What it catches: a regress file or pgTAP suite that depends on preload
# (ops_settings without LOAD and its alternate output; the context of
# idem.maintenance_database in pgTAP), and a broken installcheck recipe
# (pgTAP not run, PGXS's PROVE_FLAGS).  To keep make test short it runs
# regress and pgTAP only (ISOLATION=): the isolation specs run in make test's
# own cluster, and were checked by hand against a server without preload.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $root = $ENV{IDEM_ROOT} or plan skip_all => 'IDEM_ROOT is not set (run through make test)';

# make installcheck writes results/ and diffs next to the sources: run it in
# a copy this (unprivileged) user owns.
my $copy = PostgreSQL::Test::Utils::tempdir('installcheck');
for my $path (qw(Makefile pg_idem.control sql expected src test))
{
	system('cp', '-r', "$root/$path", "$copy/") == 0 or die "cp $path: $?";
}

for my $preload (0, 1)
{
	my $what = $preload ? 'with preload' : 'without preload';
	my $node = PostgreSQL::Test::Cluster->new($preload ? 'preloaded' : 'plain');
	$node->init;
	$node->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_idem'\n")
	  if $preload;
	$node->start;

	is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'),
		$preload ? 'pg_idem' : '', "cluster $what");

	my ($stdout, $stderr);
	local $ENV{PGHOST} = $node->host;
	local $ENV{PGPORT} = $node->port;
	local $ENV{PGUSER} = scalar getpwuid($<);
	delete local $ENV{PGDATABASE};
	my $ok = IPC::Run::run(
		[ 'make', '-s', '-C', $copy, 'installcheck', 'ISOLATION=' ],
		'>', \$stdout, '2>', \$stderr);
	ok($ok, "make installcheck $what exits 0")
	  or diag("stdout:\n$stdout\nstderr:\n$stderr\n"
		  . (-f "$copy/regression.diffs" ? slurp_file("$copy/regression.diffs") : ''));

	# Both parts ran and passed, every file of them.
	my $nregress = () = glob("$root/sql/*.sql");
	like($stdout, qr/All $nregress tests passed/, "pg_regress: all $nregress files passed $what");
	my $npgtap = () = glob("$root/test/pgtap/*.sql");
	like($stdout, qr/Files=$npgtap, Tests=\d+/, "pgTAP: $npgtap suites ran $what");
	like($stdout, qr/^Result: PASS$/m, "pgTAP: all passed $what");
	like($stdout, qr/perl TAP tests \(test\/t\) not run: make installcheck PERL_TAP=1/,
		"perl TAP tests are left out unless asked for");
	# The scratch database is dropped after a pass.
	is($node->safe_psql('postgres',
			"SELECT count(*) FROM pg_database WHERE datname = 'pg_idem_pgtap'"),
		'0', "pgTAP's scratch database is dropped $what");

	$node->stop;
	unlink "$copy/regression.diffs";
}

done_testing();
