# Without shared_preload_libraries (the pg_cron setup the README describes),
# the library is loaded on first use by an ordinary backend.  Loading it must
# not kill that backend, its settings must work, and the functions must run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('no_preload');
$node->init;
$node->start;

my ($ret, $out, $err) = $node->psql('postgres', 'CREATE EXTENSION pg_idem');
is($ret, 0, 'CREATE EXTENSION works without preload') or diag($err);

# A fresh session: the library is not loaded until a C function is called.
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT length(idem.fingerprint('{"a":1}')); SHOW idem.lease; SHOW idem.maintenance_database});
is($ret, 0, 'loading the library in a backend does not fail') or diag($err);
like($out, qr/^32\n30s\npostgres$/, 'the library loads and defines its settings');

# A setting made before the library is loaded applies once it is.
($ret, $out, $err) = $node->psql('postgres',
	q{SET idem.lease = '5s'; SELECT length(idem.fingerprint('{}')); SHOW idem.lease});
is($ret, 0, 'a placeholder setting is accepted') or diag($err);
like($out, qr/5s$/, 'and keeps its value after the library loads');

# The library must not have registered or started a maintenance worker.
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE '%idem%'}),
	'0', 'no background worker without preload');

# Without preload there is no shared state to tell whether anyone listens,
# so every emitting transaction notifies.
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN idem_outbox');
my $emitter_pid = $node->safe_psql('postgres',
	q{SELECT pg_backend_pid() FROM (SELECT idem.emit('orders', '{}')) e});
like($listener->query_safe('SELECT 1'),
	qr/Asynchronous notification "idem_outbox" with payload "orders" received from server process with PID $emitter_pid\./,
	'emit() notifies a listener');
$listener->quit;

is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server is still up');

$node->stop;
done_testing();
