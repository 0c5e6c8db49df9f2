#!/usr/bin/env perl
# test/doctest/selftest.pl — the doc test must be able to fail.
#
# Runs doctest.pl on the fixtures in test/doctest/fixtures/ and asserts that
# it reports each planted fault as a failure (and that it passes a page whose
# examples are right): a broken example, output that differs from the one
# shown, an error block that succeeds, an unterminated statement, a link to
# a heading that does not exist, a function and a setting documented twice,
# names documented that do not exist, names and an error code not
# documented, and a META.json whose version is not the extension's.  Needs the same server as doctest.pl (PGHOST, PGPORT, PGUSER).

use strict;
use warnings;
use File::Basename qw(dirname);
use File::Spec;
use Test::More;

my $here     = File::Spec->rel2abs(dirname(__FILE__));
my $fixtures = "$here/fixtures";

# Run doctest.pl with the given arguments; its TAP output and exit status.
sub doctest
{
	my (@args) = @_;
	my $pid = open(my $fh, '-|') // die "fork: $!";
	if (!$pid)
	{
		open(STDERR, '>&', \*STDOUT) or die "dup: $!";
		exec($^X, "$here/doctest.pl", @args) or die "exec: $!";
	}
	local $/;
	my $out = <$fh> // '';
	close $fh;
	return ($out, $? >> 8);
}

my ($out, $rc);

# A page whose examples are right passes.
($out, $rc) = doctest('--no-defs', '--no-meta', "$fixtures/good.md");
is($rc, 0, 'good.md: passes') or diag($out);
is(() = $out =~ /^ok \d+ /mg, 4, 'good.md: three blocks and its links, each a passing test');

# A table never created fails its block, and the session stops there.
($out, $rc) = doctest('--no-defs', '--no-meta', "$fixtures/broken.md");
isnt($rc, 0, 'broken.md: fails');
like($out, qr/^not ok \d+ - \S*broken\.md:7 sql: failed$/m, 'broken.md: the INSERT into a missing table fails');
like($out, qr/relation "payments" does not exist/, 'broken.md: the error is shown');
like($out, qr/^not ok \d+ - \S*broken\.md:13 sql: not run, the session stopped at \S*broken\.md:7$/m,
	'broken.md: the block after it is reported as not run');

# Wrong output, an error block that succeeds, an unterminated statement.
($out, $rc) = doctest('--no-defs', '--no-meta', "$fixtures/wrong-output.md");
isnt($rc, 0, 'wrong-output.md: fails');
like($out, qr/^not ok \d+ - \S*wrong-output\.md:3 sql: output differs/m, 'wrong-output.md: output differs');
like($out, qr/^# --- got\n#  outcome\s+\| has_token\n# -+\+-+\n#  acquired \| t$/m,
	'wrong-output.md: the output got is shown');
like($out, qr/^not ok \d+ - \S*wrong-output\.md:16 sql error: expected to fail, but it succeeded$/m,
	'wrong-output.md: an error block that succeeds fails');
like($out, qr/^ok \d+ # skip \S*wrong-output\.md:22 sql norun/m, 'wrong-output.md: a norun block is skipped');
like($out, qr/^# 1 norun block\(s\): \S*wrong-output\.md:22$/m, 'wrong-output.md: and listed');
like($out, qr/^not ok \d+ - \S*wrong-output\.md:28 sql: the block does not end with a semicolon$/m,
	'wrong-output.md: an unterminated statement fails');

like($out, qr/^not ok \d+ - \S*wrong-output\.md: every link reaches an existing heading$/m,
	'wrong-output.md: a link to a heading that does not exist fails');
like($out, qr/^# bad: #nowhere$/m, 'wrong-output.md: only the bad link is named');

# Definitions: twice, never, and names that do not exist.
($out, $rc) = doctest('--no-examples', '--no-meta', '--docs', "$fixtures/defs");
isnt($rc, 0, 'defs: fails');
like($out, qr/^not ok \d+ - function idem\.reserve\(\) documented exactly once \(keys\.md:3, keys\.md:5\)$/m,
	'defs: a function documented twice');
like($out, qr/^not ok \d+ - function idem\.emit\(\) documented exactly once \(no heading/m,
	'defs: a function not documented (a heading inside a code block does not count)');
like($out, qr/^not ok \d+ - heading for idem\.no_such_function\(\) at keys\.md:7: no such function$/m,
	'defs: a function documented that does not exist');
like($out, qr/^not ok \d+ - setting idem\.ttl documented exactly once \(keys\.md:9, keys\.md:11\)$/m,
	'defs: a setting documented twice');
like($out, qr/^not ok \d+ - setting idem\.lease documented exactly once \(no heading/m,
	'defs: a setting not documented');
like($out, qr/^not ok \d+ - heading for idem\.no_such_setting at keys\.md:13: no such setting/m,
	'defs: a setting documented that does not exist');
like($out, qr/^not ok \d+ - SQLSTATE ID001 \(raised at [^)]*\) documented exactly once \(errors\.md:5, errors\.md:6\)$/m,
	'defs: an error code documented twice');
like($out, qr/^not ok \d+ - SQLSTATE ID030 \(raised at invariants\.c:\d+\) documented exactly once \(no row/m,
	'defs: an error code not documented');
like($out, qr/^not ok \d+ - SQLSTATE 42501 \(raised at privileges\.c:\d+\) documented exactly once/m,
	'defs: a standard SQLSTATE the C code raises is required too');

# META.json whose version is not the extension's.
($out, $rc) = doctest('--no-examples', '--no-defs', '--root', "$fixtures/meta-bad");
isnt($rc, 0, 'meta-bad: fails');
like($out, qr/^not ok \d+ - META\.json version equals the control file's default_version$/m,
	'meta-bad: version differs from default_version');
like($out, qr/^not ok \d+ - the Makefile's EXTVERSION equals default_version$/m,
	'meta-bad: EXTVERSION differs');
like($out, qr/^not ok \d+ - provides\.pg_idem\.file exists$/m, 'meta-bad: a provided file that does not exist');

done_testing();
