# The extension survives a server restart and a crash: the library loads at
# startup from shared_preload_libraries and its functions keep working.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;

my $node = idem_node('restart');
my $fp = $node->safe_psql('postgres', q{SELECT encode(idem.fingerprint('{"a":1}'), 'hex')});
is(length($fp), 64, 'fingerprint is 32 bytes of hex');

is($node->safe_psql('postgres', 'SHOW idem.lease'), '30s', 'idem.lease is defined at startup');

$node->restart;
is($node->safe_psql('postgres', q{SELECT encode(idem.fingerprint('{"a":1}'), 'hex')}),
	$fp, 'same fingerprint after a clean restart');

# SIGKILL the postmaster: crash recovery must bring the extension back.
crash_and_restart($node);
is($node->safe_psql('postgres', q{SELECT encode(idem.fingerprint('{"a":1}'), 'hex')}),
	$fp, 'same fingerprint after crash recovery');

my ($ret, $out, $err) = $node->psql('postgres', q{SET idem.no_such_setting = 1});
isnt($ret, 0, 'the idem prefix is reserved: unknown idem.* settings are refused');
like($err, qr/invalid configuration parameter name|unrecognized configuration parameter/,
	'with a clear message');

$node->stop;
done_testing();
