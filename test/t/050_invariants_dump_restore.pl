# Invariants survive pg_dump and restore (SPEC.md section 6): the catalog
# (idem.invariant, idem.invariant_watch) is dumped as extension
# configuration, with watched tables as names (regclass) and owners as role
# names (regrole), so a restore finds them under their new OIDs; the
# triggers on the watched tables are dumped with the tables.  After the
# restore every invariant is enforced as before: violations raise ID030,
# TRUNCATE is refused, partitions added later are guarded, and the checks
# run as the declaring role.
#
# Restored three ways: custom format into another database, plain SQL
# through psql (the order of COPY and CREATE TRIGGER differs), and
# pg_restore --create into a fresh cluster.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;

my $src = idem_node('inv_dump_src', 'idem.maintenance_interval = 0');
$src->safe_psql('postgres', 'CREATE ROLE regress_inv_owner');
$src->safe_psql('postgres', 'CREATE DATABASE app');
$src->safe_psql(
	'app', q{
CREATE EXTENSION pg_idem;
GRANT USAGE ON SCHEMA idem TO regress_inv_owner;
GRANT EXECUTE ON FUNCTION idem.enforce_invariant(text, text, jsonb, text, boolean) TO regress_inv_owner;
CREATE SCHEMA hospital AUTHORIZATION regress_inv_owner;
SET ROLE regress_inv_owner;

-- One table, declared by a non-superuser, with a hint.
CREATE TABLE hospital.on_call (doctor text PRIMARY KEY, shift_id int NOT NULL, on_duty boolean NOT NULL);
INSERT INTO hospital.on_call VALUES ('alice', 1, true), ('bob', 1, true), ('carol', 2, true);
SELECT idem.enforce_invariant('doctor_on_call',
  $$SELECT count(*) >= 1 FROM hospital.on_call WHERE shift_id = $1 AND on_duty$$,
  '{"hospital.on_call": ["shift_id"]}', 'Every shift needs a doctor on call.');

-- Two tables, odd names.
CREATE TABLE hospital."Orders" (id int PRIMARY KEY, total int NOT NULL);
CREATE TABLE hospital."order lines" ("order id" int NOT NULL, amount int NOT NULL);
INSERT INTO hospital."Orders" VALUES (1, 30);
INSERT INTO hospital."order lines" VALUES (1, 10), (1, 20);
SELECT idem.enforce_invariant('order total "matches"',
  $$SELECT o.total = (SELECT coalesce(sum(amount), 0) FROM hospital."order lines" WHERE "order id" = $1)
      FROM hospital."Orders" o WHERE o.id = $1$$,
  '{"hospital.\"Orders\"": ["id"], "hospital.\"order lines\"": ["order id"]}');

-- A partitioned table, declared with valid => false over data that
-- violates it.
CREATE TABLE hospital.budget (region text, amount int) PARTITION BY LIST (region);
CREATE TABLE hospital.budget_eu PARTITION OF hospital.budget FOR VALUES IN ('eu');
CREATE TABLE hospital.budget_us PARTITION OF hospital.budget FOR VALUES IN ('us');
INSERT INTO hospital.budget VALUES ('eu', 150), ('us', 50);
SELECT idem.enforce_invariant('region_cap',
  'SELECT coalesce(sum(amount), 0) <= 100 FROM hospital.budget WHERE region = $1',
  '{"hospital.budget": ["region"]}', valid => false);
});

my %state_sql = (
	invariants => q{SELECT string_agg(format('%s|%s|%s|%s|%s|%s', name, "check", watch, owner, valid, message),
	                                  E'\n' ORDER BY name) FROM idem.invariants},
	triggers => q{SELECT string_agg(tgrelid::regclass || ' ' || pg_get_triggerdef(oid), E'\n'
	                                ORDER BY tgrelid::regclass::text, tgname)
	                FROM pg_trigger WHERE tgname LIKE 'idem_invariant%' AND tgparentid = 0},
	cloned => q{SELECT string_agg(tgrelid::regclass::text, ',' ORDER BY tgrelid::regclass::text)
	              FROM pg_trigger WHERE tgname = 'idem_invariant' AND tgparentid <> 0},
	data => q{SELECT (SELECT string_agg(doctor || on_duty, ',' ORDER BY doctor) FROM hospital.on_call) || ' ' ||
	                 (SELECT string_agg(region || amount, ',' ORDER BY region) FROM hospital.budget)},);
my %before = map { $_ => $src->safe_psql('app', $state_sql{$_}) } keys %state_sql;
like($before{invariants}, qr/^doctor_on_call\|.*\|regress_inv_owner\|t\|Every shift/m,
	'the source has its invariants');
like($before{triggers}, qr/hospital\.budget_eu CREATE TRIGGER idem_invariant_truncate/,
	'the source partitions are guarded');

my $dump = $src->basedir . '/app.dump';
my $plain = $src->basedir . '/app.sql';
$src->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $src->connstr('app') ],
	'pg_dump -Fc of a database with invariants');
$src->command_ok([ 'pg_dump', '-f', $plain, '-d', $src->connstr('app') ],
	'pg_dump (plain SQL) of a database with invariants');

# Check one restored copy: the same catalog and triggers, and every
# invariant still enforced.
sub check_restored
{
	my ($node, $db, $where) = @_;

	for my $what (sort keys %state_sql)
	{
		is($node->safe_psql($db, $state_sql{$what}),
			$before{$what}, "$where: $what intact");
	}

	my ($ret, $out, $err) = $node->psql($db,
		q{UPDATE hospital.on_call SET on_duty = false WHERE shift_id = 2});
	like($err, qr/invariant "doctor_on_call" is violated.*\n.*\(shift_id\)=\(2\).*\n.*Every shift/,
		"$where: a violation raises ID030 with its hint");
	($ret, $out, $err) = $node->psql($db,
		q{INSERT INTO hospital."order lines" VALUES (1, 5)});
	like($err, qr/invariant "order total "matches"" is violated/,
		"$where: the two-table invariant is enforced");
	is($node->safe_psql($db, q{
			BEGIN;
			INSERT INTO hospital."order lines" VALUES (1, 5);
			UPDATE hospital."Orders" SET total = 35 WHERE id = 1;
			COMMIT;
			SELECT total FROM hospital."Orders"}),
		'35', "$where: a change that keeps it commits");
	($ret, $out, $err) = $node->psql($db, q{TRUNCATE hospital.budget_us});
	like($err, qr/cannot truncate table "budget_us"/, "$where: TRUNCATE of a partition is refused");
	($ret, $out, $err) = $node->psql($db, q{INSERT INTO hospital.budget VALUES ('us', 60)});
	like($err, qr/invariant "region_cap" is violated/,
		"$where: the partitioned table is enforced through its partitions");
	# valid => false came along: the violating group already there stays,
	# until it is touched.
	$node->safe_psql($db, q{INSERT INTO hospital.budget VALUES ('us', 10)});
	($ret, $out, $err) = $node->psql($db, q{UPDATE hospital.budget SET amount = amount WHERE region = 'eu'});
	like($err, qr/invariant "region_cap" is violated.*\n.*\(region\)=\(eu\)/,
		"$where: a group that was invalid before the dump is checked when touched");
	$node->safe_psql($db, q{CREATE TABLE hospital.budget_asia PARTITION OF hospital.budget FOR VALUES IN ('asia')});
	($ret, $out, $err) = $node->psql($db, q{TRUNCATE hospital.budget_asia});
	like($err, qr/cannot truncate table "budget_asia"/, "$where: a new partition is guarded");
	# The check runs as the declaring role: without its rights to the
	# table the check fails.
	$node->safe_psql($db, q{REVOKE SELECT ON hospital.on_call FROM regress_inv_owner});
	($ret, $out, $err) = $node->psql($db,
		q{UPDATE hospital.on_call SET on_duty = true WHERE doctor = 'carol'});
	like($err, qr/permission denied for table on_call/, "$where: the check runs as the declaring role");
	$node->safe_psql($db, q{GRANT SELECT ON hospital.on_call TO regress_inv_owner});
	return;
}

# 1. Custom format, into another database of the same cluster.
$src->safe_psql('postgres', 'CREATE DATABASE app_copy');
$src->command_ok(
	[ 'pg_restore', '--exit-on-error', '-d', $src->connstr('app_copy'), $dump ],
	'pg_restore into another database');
check_restored($src, 'app_copy', 'pg_restore');

# 2. Plain SQL through psql.
$src->safe_psql('postgres', 'CREATE DATABASE app_plain');
$src->command_ok(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $src->connstr('app_plain'), '-f', $plain ],
	'plain dump restored with psql');
check_restored($src, 'app_plain', 'psql');

# 3. A fresh cluster.
my $dst = PostgreSQL::Test::Cluster->new('inv_dump_dst');
$dst->init;
$dst->append_conf('postgresql.conf', "shared_preload_libraries = 'pg_idem'\n");
$dst->start;
$dst->safe_psql('postgres', 'CREATE ROLE regress_inv_owner');
$dst->command_ok(
	[ 'pg_restore', '--exit-on-error', '--create', '-d', $dst->connstr('postgres'), $dump ],
	'pg_restore --create into a fresh cluster');
check_restored($dst, 'app', 'fresh cluster');

$src->stop;
$dst->stop;
done_testing();
