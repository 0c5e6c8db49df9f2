# Adversarial review of the outbox ring (issue 14), upgrade path: a
# publication that lists idem.outbox (how Debezium and logical
# replication read a 0.1 outbox) must not silently stop publishing
# events when ALTER EXTENSION pg_idem UPDATE replaces the table by the
# ring.  The 0.1.1 -> 0.2.0 script renames the old table away and drops
# it; the publication's membership goes with it (a dependency that is
# dropped without a word), and from then on no event reaches the
# publication's subscribers.  So the update refuses while a publication
# lists the 0.1 table, and says how to carry the publication over; done
# that way, the publication publishes idem.outbox again.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;

my $node = idem_node('upgrade_publication', 'wal_level = logical');
my $published = q{
SELECT count(*) FROM pg_publication_tables
 WHERE pubname = 'cdc' AND schemaname = 'idem' AND tablename = 'outbox'};

$node->safe_psql('postgres', q{
DROP EXTENSION pg_idem;
CREATE EXTENSION pg_idem VERSION '0.1.1';
CREATE PUBLICATION cdc FOR TABLE idem.outbox;
SELECT idem.emit('orders', '{"n": 1}');});
is($node->safe_psql('postgres', $published), '1', '0.1.1: the publication lists idem.outbox');

my ($rc, $out, $err) = $node->psql('postgres', 'ALTER EXTENSION pg_idem UPDATE');
is($node->safe_psql('postgres', $published), '1',
	'after ALTER EXTENSION UPDATE the publication still publishes idem.outbox');
like($err, qr/publication "cdc"/, 'the refusal names the publication');

# The way the HINT gives: take the table out, update, put the ring in.
$node->safe_psql('postgres', q{
ALTER PUBLICATION cdc DROP TABLE idem.outbox;
ALTER EXTENSION pg_idem UPDATE;
ALTER PUBLICATION cdc ADD TABLE idem.outbox;
ALTER PUBLICATION cdc SET (publish_via_partition_root = true);});
is($node->safe_psql('postgres', q{SELECT extversion <> '0.1.1' FROM pg_extension WHERE extname = 'pg_idem'}),
	't', 'the update goes through once the publication no longer lists the 0.1 table');
is($node->safe_psql('postgres', $published), '1',
	'the ring is published as idem.outbox');

$node->stop;
done_testing();
