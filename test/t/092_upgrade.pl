# ALTER EXTENSION pg_idem UPDATE: every released version, updated to the
# current one, must end with exactly the objects a fresh CREATE EXTENSION
# makes (definitions, attributes, privileges, comments, membership), and
# must keep its data working: keys replay, consumers resume where they
# were, emit() writes on.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;

my $node = idem_node('upgrade');
my $current = $node->safe_psql('postgres',
	q{SELECT default_version FROM pg_available_extensions WHERE name = 'pg_idem'});
my @released = split /\n/, $node->safe_psql('postgres',
	qq{SELECT version FROM pg_available_extension_versions
	   WHERE name = 'pg_idem' AND version <> '$current' ORDER BY string_to_array(version, '.')::int[]});
ok(scalar(@released) >= 1, "released versions to upgrade from: @released");

# Everything pg_idem defines, described by name (never by OID), so that two
# databases can be compared.
my $describe = q{
SELECT kind || ' | ' || name || ' | ' || def FROM (
  SELECT 'function' AS kind, p.oid::regprocedure::text AS name,
         pg_get_functiondef(p.oid) || ' secdef=' || p.prosecdef ||
         ' config=' || coalesce(p.proconfig::text, '-') || ' acl=' || coalesce(p.proacl::text, '-') ||
         ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-') AS def
    FROM pg_proc p WHERE p.pronamespace = 'idem'::regnamespace
  UNION ALL
  SELECT 'relation', c.relname,
         c.relkind::text || ' acl=' || coalesce(c.relacl::text, '-') ||
         ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-') || ' columns=' ||
         coalesce((SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ||
                                     CASE WHEN a.attnotnull THEN ' not null' ELSE '' END ||
                                     coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') ||
                                     coalesce(' identity ' || nullif(a.attidentity::text, ''), '') ||
                                     coalesce(' -- ' || col_description(c.oid, a.attnum), ''),
                                     ', ' ORDER BY a.attnum)
                     FROM pg_attribute a
                     LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '-')
    FROM pg_class c WHERE c.relnamespace = 'idem'::regnamespace
  UNION ALL
  SELECT 'index', c.relname, pg_get_indexdef(c.oid)
    FROM pg_class c WHERE c.relnamespace = 'idem'::regnamespace AND c.relkind = 'i'
  UNION ALL
  SELECT 'view', c.relname, pg_get_viewdef(c.oid)
    FROM pg_class c WHERE c.relnamespace = 'idem'::regnamespace AND c.relkind = 'v'
  UNION ALL
  SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'idem'::regnamespace
  UNION ALL
  SELECT 'type', t.typname, t.typtype::text ||
         coalesce(' ' || (SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder)
                            FROM pg_enum WHERE enumtypid = t.oid), '')
    FROM pg_type t WHERE t.typnamespace = 'idem'::regnamespace
  UNION ALL
  SELECT 'trigger', tgrelid::regclass::text || '.' || tgname, pg_get_triggerdef(oid)
    FROM pg_trigger WHERE tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'idem'::regnamespace)
  UNION ALL
  SELECT 'member', pg_describe_object(classid, objid, objsubid), deptype::text
    FROM pg_depend
   WHERE refclassid = 'pg_extension'::regclass
     AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_idem')
  UNION ALL
  SELECT 'schema', n.nspname, 'acl=' || coalesce(n.nspacl::text, '-')
    FROM pg_namespace n WHERE n.nspname = 'idem'
  UNION ALL
  SELECT 'dumped config', e.extconfig::regclass[]::text, e.extcondition::text
    FROM pg_extension e WHERE e.extname = 'pg_idem'
) x ORDER BY 1;
};

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION pg_idem');
my $want = $node->safe_psql('fresh', $describe);
like($want, qr/^function \| idem\.emit\(/m, 'the description covers the functions');

foreach my $from (@released)
{
	my $db = 'from_' . ($from =~ s/\./_/gr);
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION pg_idem VERSION '$from'");

	# Data written under the old version.
	$node->safe_psql($db, q{
		SELECT idem.subscribe('relay');
		SELECT token FROM idem.reserve('pay-1', '{"amount": 100}');
		SELECT idem.complete('pay-1', 1, '{"paid": true}', 201);
		SELECT idem.reserve('job-1', lease => '10 minutes');
		SELECT idem.emit('orders', '{"n": 1}');
		SELECT count(*) FROM idem.next_batch('relay');
	});

	$node->safe_psql($db, 'ALTER EXTENSION pg_idem UPDATE');
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'pg_idem'}),
		$current, "$from updates to $current");
	my $got = $node->safe_psql($db, $describe);
	is($got, $want, "$from updated to $current has exactly the objects of a fresh $current");

	# The data keeps working.
	is($node->safe_psql($db,
			q{SELECT outcome || ' ' || response::text FROM idem.reserve('pay-1', '{"amount": 100}')}),
		'replay {"paid": true}', "$from: a key completed before the update replays");
	# A key held before the update keeps its own lease length (0.2.0):
	# checkpoint() renews it by the 10 minutes it was reserved with, not by
	# idem.lease.
	is($node->safe_psql($db, q{
			SELECT FROM idem.checkpoint('job-1', (SELECT token FROM idem.keys WHERE key = 'job-1'), 'step-1');
			SELECT (locked_until - updated_at)::text FROM idem.keys WHERE key = 'job-1'}),
		'00:10:00', "$from: a key held before the update renews by its own lease");
	$node->safe_psql($db, q{SELECT idem.emit('orders', '{"n": 2}')});
	is($node->safe_psql($db, q{
			SELECT string_agg(payload->>'n', ',' ORDER BY id) FROM idem.next_batch('relay')}),
		'1', "$from: the batch opened before the update is read again");
	$node->safe_psql($db, q{
		SELECT idem.finish_batch('relay', (SELECT batch_id FROM idem.next_batch('relay') LIMIT 1))});
	is($node->safe_psql($db, q{
			SELECT string_agg(payload->>'n', ',' ORDER BY id) FROM idem.next_batch('relay')}),
		'2', "$from: the event emitted after the update comes next");
}

$node->stop;
done_testing();
