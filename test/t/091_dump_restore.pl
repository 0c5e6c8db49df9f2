# pg_dump / pg_restore round trip (SPEC.md section 4, README "Upgrading"):
# keys, the token counter, a version-guarded table with its trigger, outbox
# events, every consumer's position (with an open batch), the event counter
# and the grants made by idem.grant_usage() all survive, and everything keeps
# working: replay, fencing, version checks, delivery of old and new events.
#
# Two targets: another database of the same cluster, and a fresh cluster
# (the pg_dump way to change machines or major versions).  Outbox positions
# are transaction snapshots, so the fresh cluster must hand out larger
# transaction ids than the old one: it is given a higher xid epoch with
# pg_resetwal -e before the restore, as README "Upgrading" says.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;

my $src = idem_node('dump_src', 'idem.maintenance_interval = 0');

# A long-lived source has used many more transaction ids than a freshly
# restored cluster will have: burn some, so that without the epoch step
# below the new cluster's events would fall inside the consumers' old
# snapshots and never be delivered.
$src->safe_psql('postgres',
	q{DO $$ BEGIN FOR i IN 1..5000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$});
$src->safe_psql('postgres', 'CREATE ROLE regress_app');
$src->safe_psql('postgres', 'CREATE DATABASE app');
$src->safe_psql(
	'app', q{
CREATE EXTENSION pg_idem;
SELECT idem.grant_usage('regress_app');

-- Keys: a completed one, one held with a checkpoint, a released one.
SELECT idem.complete('pay-1', (idem.reserve('pay-1', '{"amount": 100}', 'shop')).token,
                     '{"charge": "ch_1"}', 201, 'shop');
SELECT idem.checkpoint('pay-2', (idem.reserve('pay-2', '{"amount": 5}', 'shop', '1 hour')).token,
                       'charged', '{"charge": "ch_2"}', 'shop', '1 hour');
SELECT idem.release('pay-3', (idem.reserve('pay-3', NULL, 'shop')).token, 'shop');

-- A version-guarded table.
CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL, version bigint);
SELECT idem.enforce_version('accounts');
INSERT INTO accounts (id, balance) VALUES (1, 100), (2, 200);
UPDATE accounts SET balance = 150, version = 1 WHERE id = 1;
GRANT SELECT, UPDATE ON accounts TO regress_app;

-- Outbox: 'audit' has finished everything; 'relay' has an open batch.
SELECT idem.subscribe('relay');
SELECT idem.subscribe('audit');
SELECT idem.emit('orders', '{"n": 1}', 'o-1', '{"trace": "t1"}');
SELECT idem.emit('orders', '{"n": 2}');
});
$src->safe_psql('app',
	q{SELECT idem.finish_batch('audit', (SELECT batch_id FROM idem.next_batch('audit') LIMIT 1))});
my $relay_batch = $src->safe_psql('app',
	q{SELECT DISTINCT batch_id FROM idem.next_batch('relay')});
$src->safe_psql('app', q{SELECT idem.emit('orders', '{"n": 3}')});
$src->safe_psql('app',
	q{SELECT idem.finish_batch('audit', (SELECT batch_id FROM idem.next_batch('audit') LIMIT 1))});

# Everything that must survive, as text.
my %state_sql = (
	keys => q{SELECT string_agg(k::text, E'\n' ORDER BY scope, key) FROM idem.keys k},
	outbox => q{SELECT string_agg(o::text, E'\n' ORDER BY id) FROM idem.outbox o},
	consumers => q{SELECT string_agg(c::text, E'\n' ORDER BY name) FROM idem.consumers c},
	accounts => q{SELECT string_agg(a::text, E'\n' ORDER BY id) FROM accounts a},
	trigger => q{SELECT string_agg(pg_get_triggerdef(t.oid), E'\n') FROM pg_trigger t
	              WHERE t.tgrelid = 'accounts'::regclass AND NOT t.tgisinternal},
	grants => q{SELECT string_agg(p.proname, ',' ORDER BY p.proname) FROM pg_proc p
	             WHERE p.pronamespace = 'idem'::regnamespace
	               AND has_function_privilege('regress_app', p.oid, 'EXECUTE')},
	counters => q{SELECT (SELECT last_value FROM idem.key_token_seq) || ' '
	                  || (SELECT last_value FROM idem.outbox_id_seq) || ' '
	                  || (SELECT last_value FROM idem.outbox_batch_seq)},);
my %before = map { $_ => $src->safe_psql('app', $state_sql{$_}) } keys %state_sql;
like($before{trigger}, qr/idem\.version_guard/, 'the source table is guarded');
like($before{consumers}, qr/relay/, 'the source has consumers');

my $dump = $src->basedir . '/app.dump';
$src->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $src->connstr('app') ],
	'pg_dump of a database using pg_idem');

# Check one restored copy: same state, and every capability still works.
sub check_restored
{
	my ($node, $db, $where) = @_;

	for my $what (sort keys %state_sql)
	{
		is($node->safe_psql($db, $state_sql{$what}),
			$before{$what}, "$where: $what intact");
	}

	# Keys: replay, the held key stays held, tokens keep growing.
	is( $node->safe_psql(
			$db,
			q{SELECT outcome || ' ' || response::text || ' ' || status
			    FROM idem.reserve('pay-1', '{"amount": 100}', 'shop')}),
		'replay {"charge": "ch_1"} 201',
		"$where: a completed key replays");
	is( $node->safe_psql(
			$db, q{SELECT outcome FROM idem.reserve('pay-2', '{"amount": 5}', 'shop')}),
		'in_progress', "$where: a held key is still held");
	is( $node->safe_psql(
			$db,
			q{SELECT outcome FROM idem.reserve('pay-3', NULL, 'shop')}),
		'acquired', "$where: a released key is taken over");
	ok( $node->safe_psql(
			$db,
			q{SELECT (idem.reserve('new-1', NULL, 'shop')).token > max(token)
			    FROM idem.keys WHERE key <> 'new-1'}) eq 't',
		"$where: new tokens are larger than every restored one");

	# Versions: the trigger still refuses stale and blind writes.
	my ($ret, $out, $err) = $node->psql($db,
		'UPDATE accounts SET balance = 1, version = 1 WHERE id = 1');
	like($err, qr/version conflict/, "$where: a stale update is refused");
	($ret, $out, $err) =
	  $node->psql($db, 'UPDATE accounts SET balance = 1 WHERE id = 1');
	like($err, qr/version required/, "$where: a blind update is refused");
	is( $node->safe_psql(
			$db,
			'UPDATE accounts SET balance = 1, version = 2 WHERE id = 1 RETURNING version'),
		'3', "$where: a current update bumps the version");

	# Outbox: relay gets its open batch again, then the event it had not
	# seen, then a new one; audit only the new one.
	is( $node->safe_psql(
			$db,
			q{SELECT DISTINCT batch_id || ':' || count(*) OVER () FROM idem.next_batch('relay')}),
		"$relay_batch:2",
		"$where: the open batch comes back with its id and events");
	$node->safe_psql($db, "SELECT idem.finish_batch('relay', $relay_batch)");
	my $new_id = $node->safe_psql($db,
		q{SELECT idem.emit('orders', '{"n": 4}')});
	ok( $node->safe_psql($db, "SELECT $new_id > max(id) FROM idem.outbox WHERE id <> $new_id")
		  eq 't',
		"$where: new event ids are larger than every restored one");
	my @relay;
	for (1 .. 3)
	{
		my $b = $node->safe_psql($db,
			q{SELECT string_agg(payload->>'n', ',' ORDER BY id) || '|' || min(batch_id)
			    FROM idem.next_batch('relay')});
		last if $b eq '' || $b eq '|';
		my ($events, $batch) = split /\|/, $b;
		push @relay, $events;
		$node->safe_psql($db, "SELECT idem.finish_batch('relay', $batch)");
	}
	is(join(',', @relay), '3,4',
		"$where: relay then gets the event it had not seen and the new one");
	my $audit = $node->safe_psql($db,
		q{SELECT string_agg(payload->>'n', ',' ORDER BY id) FROM idem.next_batch('audit')});
	is($audit, '4', "$where: audit gets only the new event");

	# Grants: the application role still works through the functions.
	is( $node->safe_psql(
			$db,
			q{SET ROLE regress_app; SELECT outcome FROM idem.reserve('pay-1', '{"amount": 100}', 'shop')}),
		'replay', "$where: the application role's grants came along");
	return;
}

# 1. Into another database of the same cluster.
$src->safe_psql('postgres', 'CREATE DATABASE app_copy');
$src->command_ok(
	[ 'pg_restore', '--exit-on-error', '-d', $src->connstr('app_copy'), $dump ],
	'pg_restore into another database');
check_restored($src, 'app_copy', 'same cluster');

# 2. Into a fresh cluster, whose xid epoch is set above the source's.
my $epoch = $src->safe_psql('app', 'SELECT (pg_current_xact_id()::text::bigint >> 32) + 1');
my $dst = PostgreSQL::Test::Cluster->new('dump_dst');
$dst->init;
$dst->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_idem'\n");
command_ok([ 'pg_resetwal', '-e', $epoch, $dst->data_dir ],
	'the fresh cluster gets a higher xid epoch');
$dst->start;
$dst->safe_psql('postgres', 'CREATE ROLE regress_app');
$dst->command_ok(
	[ 'pg_restore', '--exit-on-error', '--create', '-d', $dst->connstr('postgres'), $dump ],
	'pg_restore --create into a fresh cluster');
check_restored($dst, 'app', 'fresh cluster');

$src->stop;
$dst->stop;
done_testing();
