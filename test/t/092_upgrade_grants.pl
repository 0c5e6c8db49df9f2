# ALTER EXTENSION pg_idem UPDATE from every released version keeps the
# grants of 0.1 working (SPEC.md section 4, "Least privilege (0.2)"): a role
# that could use pg_idem before keeps every scope and topic, whether it was
# given idem.grant_usage() or EXECUTE by hand, directly or through a group;
# consumers created before have no owner, so every such role may still use
# them, until one re-subscribes a consumer and so takes it.
#
# Before the update, the new library runs the old SQL definitions: nothing
# is checked there, as in 0.1.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;

my $node = idem_node('upgrade_grants', 'idem.maintenance_interval = 0');
my $current = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'pg_idem'});
my @released = split /\n/, $node->safe_psql('postgres',
	qq{SELECT version FROM pg_available_extension_versions
	   WHERE name = 'pg_idem' AND version <> '$current' ORDER BY string_to_array(version, '.')::int[]});
ok(scalar(@released) >= 1, "released versions to upgrade from: @released");

# Roles are cluster-wide: made once.
$node->safe_psql('postgres', q{
	CREATE ROLE svc_a;
	CREATE ROLE svc_b;
	CREATE ROLE svc_manual;
	CREATE ROLE svc_group;
	CREATE ROLE svc_member IN ROLE svc_group;
});

# Run SQL as a role; returns (stdout, stderr) and never dies.
sub as_role
{
	my ($db, $role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql($db, "SET ROLE $role; $sql");
	return ($out, $err);
}

foreach my $from (@released)
{
	my $db = 'grants_' . ($from =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION pg_idem VERSION '$from'");

	# 0.1: usage for two services and a group, EXECUTE on reserve by hand
	# for another role; a consumer subscribed by svc_a, with an event.
	$node->safe_psql($db, q{
		SELECT idem.grant_usage('svc_a');
		SELECT idem.grant_usage('svc_b');
		SELECT idem.grant_usage('svc_group');
		GRANT USAGE ON SCHEMA idem TO svc_manual;
		GRANT EXECUTE ON FUNCTION idem.reserve(text, jsonb, text, interval, interval) TO svc_manual;
		SET ROLE svc_a;
		SELECT idem.subscribe('a-relay', ARRAY['billing']);
		SELECT idem.complete('pay-1', (idem.reserve('pay-1', '{"n": 1}', 'billing')).token,
		                     '{"paid": true}', 201, 'billing');
		SELECT idem.emit('billing', '{"n": 1}');
	});

	# The new library on the old definitions: 0.1's behaviour, all allowed.
	my ($out, $err) = as_role($db, 'svc_b',
		q{SELECT outcome FROM idem.reserve('pay-1', '{"n": 1}', 'billing')});
	is($out, 'replay', "$from, before the update: any role with usage replays any scope");
	($out, $err) = as_role($db, 'svc_b', q{SELECT count(*) FROM idem.next_batch('a-relay')});
	is($out, '1', "$from, before the update: any role with usage reads any consumer") or diag($err);

	$node->safe_psql($db, 'ALTER EXTENSION pg_idem UPDATE');
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'pg_idem'}),
		$current, "$from updates to $current");

	# Every role that held EXECUTE on an application function has every
	# scope and topic; the owner and PUBLIC get no row.
	is( $node->safe_psql(
			$db,
			q{SELECT string_agg(role::text || ' ' || coalesce(scopes::text, 'all') || ' '
			                    || coalesce(topics::text, 'all'), ', ' ORDER BY role::text)
			    FROM idem.grants}),
		'svc_a all all, svc_b all all, svc_group all all, svc_manual all all',
		"$from: the 0.1 grantees keep every scope and topic");
	is($node->safe_psql($db, q{SELECT coalesce(owner::text, 'none') FROM idem.consumers WHERE name = 'a-relay'}),
		'none', "$from: a consumer from before the update has no owner");

	# The grants keep working.
	($out, $err) = as_role($db, 'svc_a',
		q{SELECT outcome FROM idem.reserve('pay-2', NULL, 'any/scope')});
	is($out, 'acquired', "$from: svc_a reserves in any scope") or diag($err);
	($out, $err) = as_role($db, 'svc_a', q{SELECT idem.emit('any.topic', '{}') > 0});
	is($out, 't', "$from: svc_a emits to any topic") or diag($err);
	($out, $err) = as_role($db, 'svc_manual',
		q{SELECT outcome FROM idem.reserve('pay-3', NULL, 'manual')});
	is($out, 'acquired', "$from: EXECUTE granted by hand in 0.1 keeps working") or diag($err);
	($out, $err) = as_role($db, 'svc_member',
		q{SELECT outcome FROM idem.reserve('pay-4', NULL, 'team')});
	is($out, 'acquired', "$from: a member of a 0.1 grantee keeps working") or diag($err);
	($out, $err) = as_role($db, 'svc_a',
		q{SELECT string_agg(payload->>'n', ',') FROM idem.next_batch('a-relay')});
	is($out, '1', "$from: svc_a reads its consumer (no owner yet)") or diag($err);
	($out, $err) = as_role($db, 'svc_b', q{SELECT count(*) FROM idem.next_batch('a-relay')});
	is($out, '1', "$from: ... and so may every role with a grant, as in 0.1") or diag($err);

	# svc_a re-subscribes at its next start: the consumer is now its own.
	($out, $err) = as_role($db, 'svc_a', q{SELECT idem.subscribe('a-relay', ARRAY['billing'])});
	is($err, '', "$from: svc_a re-subscribes its consumer");
	is($node->safe_psql($db, q{SELECT owner::text FROM idem.consumers WHERE name = 'a-relay'}),
		'svc_a', "$from: re-subscribing takes a consumer that had no owner");
	($out, $err) = as_role($db, 'svc_b', q{SELECT count(*) FROM idem.next_batch('a-relay')});
	like($err, qr/permission denied for outbox consumer "a-relay"/,
		"$from: then another role may no longer read it");
	($out, $err) = as_role($db, 'svc_b', q{SELECT idem.unsubscribe('a-relay')});
	like($err, qr/permission denied for outbox consumer "a-relay"/,
		"$from: nor unsubscribe it");

	# Narrowing a 0.1 grant works like any 0.2 grant.
	$node->safe_psql($db,
		q{SELECT idem.grant_usage('svc_b', scopes => ARRAY['shipping'], topics => ARRAY['shipping'])});
	($out, $err) = as_role($db, 'svc_b',
		q{SELECT outcome FROM idem.reserve('pay-1', '{"n": 1}', 'billing')});
	like($err, qr/permission denied for idempotency scope "billing"/,
		"$from: a narrowed grant refuses the scopes it no longer has");
	($out, $err) = as_role($db, 'svc_b', q{SELECT scope FROM idem.key_stats});
	is($out, '', "$from: and key_stats shows none of them");
}

$node->stop;
done_testing();
