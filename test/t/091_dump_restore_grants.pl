# pg_dump / pg_restore keeps least privilege (SPEC.md section 4, 0.2): the
# grants of idem.grant_usage() with their scope and topic patterns
# (idem.grants, registered with pg_extension_config_dump) and the owners of
# the consumers survive, by role name, and the restored database refuses
# what the source refused and allows what it allowed.
#
# Two targets, as in 091_dump_restore.pl: another database of the same
# cluster, and a fresh cluster in which the same roles have other OIDs (a
# grant kept by OID would then name another role, or none).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;

my @roles = qw(svc_a svc_b svc_group svc_member);
my $make_roles = q{
	CREATE ROLE svc_a;
	CREATE ROLE svc_b;
	CREATE ROLE svc_group;
	CREATE ROLE svc_member IN ROLE svc_group;
};

my $src = idem_node('grants_src', 'idem.maintenance_interval = 0');
# Burn transaction ids, so that the fresh cluster needs (and gets) a higher
# xid epoch for the restored consumer positions, as README "Upgrading" says.
$src->safe_psql('postgres',
	q{DO $$ BEGIN FOR i IN 1..2000 LOOP PERFORM pg_current_xact_id(); COMMIT; END LOOP; END $$});
$src->safe_psql('postgres', $make_roles);
$src->safe_psql('postgres', 'CREATE DATABASE app');
$src->safe_psql(
	'app', q{
CREATE EXTENSION pg_idem;
SELECT idem.grant_usage('svc_a', scopes => ARRAY['billing', 'billing/%'],
                        topics => ARRAY['billing', 'billing.%']);
SELECT idem.grant_usage('svc_b', scopes => ARRAY['shipping'], topics => ARRAY['shipping']);
SELECT idem.grant_usage('svc_group', scopes => '{}', topics => ARRAY['team']);

SET ROLE svc_a;
SELECT idem.complete('pay-1', (idem.reserve('pay-1', '{"amount": 100}', 'billing')).token,
                     '{"charge": "ch_1"}', 201, 'billing');
SELECT idem.subscribe('billing-relay', ARRAY['billing']);
SELECT idem.emit('billing', '{"n": 1}');
SET ROLE svc_group;
SELECT idem.subscribe('team-relay', ARRAY['team']);
RESET ROLE;
-- a consumer from before 0.2 (no owner)
SELECT idem.subscribe('legacy-relay', ARRAY['shipping']);
UPDATE idem.consumers SET owner = NULL WHERE name = 'legacy-relay';
});

# What must survive, as text: by role name, never by OID.
my %state_sql = (
	grants => q{SELECT string_agg(role::text || ' ' || coalesce(scopes::text, 'all') || ' '
	                              || coalesce(topics::text, 'all'), E'\n' ORDER BY role::text)
	              FROM idem.grants},
	owners => q{SELECT string_agg(name || ' ' || coalesce(owner::text, 'none'), E'\n' ORDER BY name)
	              FROM idem.consumers},
	execute => q{SELECT string_agg(r || ':' || p.proname, ',' ORDER BY r, p.proname)
	               FROM unnest(ARRAY['svc_a', 'svc_b', 'svc_group', 'svc_member']) r, pg_proc p
	              WHERE p.pronamespace = 'idem'::regnamespace
	                AND has_function_privilege(r, p.oid, 'EXECUTE')},);
my %before = map { $_ => $src->safe_psql('app', $state_sql{$_}) } keys %state_sql;
like($before{grants}, qr/^svc_a \{billing,billing\/%\} \{billing,billing\.%\}$/m,
	'the source has the patterns of svc_a');
like($before{owners}, qr/^billing-relay svc_a$/m, 'the source has a consumer owned by svc_a');

my $dump = $src->basedir . '/app.dump';
$src->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $src->connstr('app') ],
	'pg_dump of a database with grants');

# Run SQL as a role; returns (stdout, stderr) and never dies.
sub as_role
{
	my ($node, $db, $role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql($db, "SET ROLE $role; $sql");
	return ($out, $err);
}

# One restored copy: the same grants, and the same answers.
sub check_restored
{
	my ($node, $db, $where) = @_;

	for my $what (sort keys %state_sql)
	{
		is($node->safe_psql($db, $state_sql{$what}), $before{$what}, "$where: $what intact");
	}

	my ($out, $err) = as_role($node, $db, 'svc_a',
		q{SELECT outcome || ' ' || response::text FROM idem.reserve('pay-1', '{"amount": 100}', 'billing')});
	is($out, 'replay {"charge": "ch_1"}', "$where: svc_a replays its key") or diag($err);
	($out, $err) = as_role($node, $db, 'svc_a',
		q{SELECT string_agg(payload->>'n', ',') FROM idem.next_batch('billing-relay')});
	is($out, '1', "$where: svc_a reads its consumer") or diag($err);

	($out, $err) = as_role($node, $db, 'svc_b',
		q{SELECT outcome FROM idem.reserve('pay-1', '{"amount": 100}', 'billing')});
	like($err, qr/permission denied for idempotency scope "billing"/,
		"$where: svc_b may not replay billing's key");
	($out, $err) = as_role($node, $db, 'svc_b', q{SELECT idem.forget('pay-1', 'billing')});
	like($err, qr/permission denied for idempotency scope "billing"/,
		"$where: nor forget it");
	($out, $err) = as_role($node, $db, 'svc_b', q{SELECT idem.emit('billing', '{}')});
	like($err, qr/permission denied for outbox topic "billing"/, "$where: nor emit to billing");
	($out, $err) = as_role($node, $db, 'svc_b', q{SELECT count(*) FROM idem.next_batch('billing-relay')});
	like($err, qr/permission denied for outbox consumer "billing-relay"/,
		"$where: nor read billing's consumer");
	($out, $err) = as_role($node, $db, 'svc_b', q{SELECT idem.unsubscribe('billing-relay')});
	like($err, qr/permission denied for outbox consumer "billing-relay"/,
		"$where: nor unsubscribe it");
	($out, $err) = as_role($node, $db, 'svc_b', q{SELECT count(*) FROM idem.next_batch('legacy-relay')});
	is($out, '0', "$where: svc_b may use the consumer that has no owner") or diag($err);

	($out, $err) = as_role($node, $db, 'svc_member', q{SELECT count(*) FROM idem.next_batch('team-relay')});
	is($out, '0', "$where: a member of svc_group reads the group's consumer") or diag($err);
	($out, $err) = as_role($node, $db, 'svc_member', q{SELECT outcome FROM idem.reserve('t-1', NULL, '')});
	like($err, qr/permission denied for idempotency scope ""/,
		"$where: the group's empty scope list grants no scope");
	return;
}

# 1. Into another database of the same cluster.
$src->safe_psql('postgres', 'CREATE DATABASE app_copy');
$src->command_ok([ 'pg_restore', '--exit-on-error', '-d', $src->connstr('app_copy'), $dump ],
	'pg_restore into another database');
check_restored($src, 'app_copy', 'same cluster');

# 2. Into a fresh cluster whose roles get other OIDs (roles made first, in
# another order, after others), with a higher xid epoch.
my $epoch = $src->safe_psql('app', 'SELECT (pg_current_xact_id()::text::bigint >> 32) + 1');
my $dst = PostgreSQL::Test::Cluster->new('grants_dst');
$dst->init;
$dst->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_idem'\n");
command_ok([ 'pg_resetwal', '-e', $epoch, $dst->data_dir ],
	'the fresh cluster gets a higher xid epoch');
$dst->start;
$dst->safe_psql('postgres', q{
	CREATE ROLE unrelated_1; CREATE ROLE unrelated_2; CREATE ROLE unrelated_3;
	CREATE ROLE svc_group; CREATE ROLE svc_member IN ROLE svc_group;
	CREATE ROLE svc_b; CREATE ROLE svc_a;
});
my $oids = q{SELECT string_agg(r || '=' || r::regrole::oid, ',' ORDER BY r)
               FROM unnest(ARRAY['svc_a', 'svc_b', 'svc_group', 'svc_member']) r};
my $src_oids = $src->safe_psql('postgres', $oids);
my %src_oid = map { split /=/ } split /,/, $src_oids;
my %dst_oid = map { split /=/ } split /,/, $dst->safe_psql('postgres', $oids);
ok(!grep({ $src_oid{$_} == $dst_oid{$_} } @roles),
	'every role has another OID in the fresh cluster');
$dst->command_ok(
	[ 'pg_restore', '--exit-on-error', '--create', '-d', $dst->connstr('postgres'), $dump ],
	'pg_restore --create into a fresh cluster');
check_restored($dst, 'app', 'fresh cluster');

$src->stop;
$dst->stop;
done_testing();
