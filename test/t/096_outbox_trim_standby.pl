# Adversarial review of the outbox ring (issue 14): hot standby readers.
#
# Trimming decides whether a leaf can be truncated under the leaf's
# AccessExclusiveLock.  That lock is WAL-logged for hot standby, and the
# standby holds it until the trimming transaction's commit is replayed,
# even when the primary let go of it at once because the leaf still holds
# events some consumer is owed.  Taking it on every leaf at every round
# cancelled every standby query that had idem.outbox open (a dashboard
# reading idem.consumer_lag on a replica), or stalled replay behind it for
# max_standby_streaming_delay -- every minute, with nothing truncated.
#
# Here a standby session holds idem.outbox open in a transaction while
# the primary trims an outbox whose only events are not finished yet:
# nothing can be truncated, so the standby session must live on.  With
# max_standby_streaming_delay = 0 a conflicting lock cancels it as soon as
# the lock is replayed, so the check needs no timing: after the standby
# has replayed the trim, the session either still works or was cancelled.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;

my $primary = PostgreSQL::Test::Cluster->new('trim_standby_primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_idem'\n");
$primary->start;
$primary->safe_psql('postgres', 'CREATE EXTENSION pg_idem');
$primary->safe_psql('postgres', q{
SELECT idem.subscribe('slow');
SELECT idem.emit('orders', '{"n": 1}');});
$primary->backup('b');

my $standby = PostgreSQL::Test::Cluster->new('trim_standby_standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->append_conf('postgresql.conf', "max_standby_streaming_delay = 0\n");
$standby->start;
$primary->wait_for_catchup($standby);

my $reader = $standby->background_psql('postgres', on_error_stop => 0, timeout => 60);
$reader->query_safe(q{BEGIN ISOLATION LEVEL REPEATABLE READ});
is($reader->query_safe(q{SELECT count(*) FROM idem.outbox}), '1',
	'the standby session reads the outbox in an open transaction');

# Nothing is finished: no leaf can go.
is($primary->safe_psql('postgres', q{SELECT idem.trim_outbox(1000)}), '0',
	'the primary trims nothing');
$primary->wait_for_catchup($standby);

my ($out, $failed) = eval { $reader->query(q{SELECT count(*) FROM idem.outbox}) };
ok(!$@ && !$failed && defined $out && $out eq '1',
	'the standby session was not cancelled by a trim that truncated nothing')
  or diag('session: ' . ($@ || $reader->{stderr} || ''));
eval { $reader->quit };

# A leaf that can go still goes, and the standby follows.
$primary->safe_psql('postgres', q{
SELECT idem.finish_batch('slow', b) FROM (SELECT DISTINCT batch_id b FROM idem.next_batch('slow')) s;
SELECT setval('idem.outbox_id_seq', 65536);
SELECT idem.emit('orders', '{"n": 2}');});
is($primary->safe_psql('postgres', q{SELECT idem.trim_outbox(1000)}), '1',
	'a finished leaf is still truncated');
$primary->wait_for_catchup($standby);
is($standby->safe_psql('postgres', q{SELECT string_agg(payload->>'n', ',') FROM idem.outbox}), '2',
	'the standby sees the truncation');

$standby->stop;
$primary->stop;
done_testing();
