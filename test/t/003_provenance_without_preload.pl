# Strict mode reads where an UPDATE's values come from out of the statement's
# plan, from an executor hook.  Without shared_preload_libraries the library
# is loaded by the first row the guard sees in a backend, after that
# statement's ExecutorStart: the hook missed it.  The guard then reads the
# top-level statement's plan (ActivePortal); a statement it cannot find
# there (one run inside a function) is judged as writing client values, and
# a next version is refused, the conservative reading.  Each psql call below
# is a fresh backend, so each first statement loads the library.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('provenance_no_preload');
$node->init;
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION pg_idem;
CREATE TABLE post (id int PRIMARY KEY, title text, balance int NOT NULL, version int);
SELECT idem.enforce_version('post');
INSERT INTO post (id, title, balance) VALUES (1, 'a', 100);
CREATE TABLE orders (region text, id int, qty int NOT NULL, version int,
                     PRIMARY KEY (region, id)) PARTITION BY LIST (region);
CREATE TABLE orders_us (version int, qty int NOT NULL, id int NOT NULL, region text NOT NULL);
ALTER TABLE orders ATTACH PARTITION orders_us FOR VALUES IN ('us');
SELECT idem.enforce_version('orders');
INSERT INTO orders (region, id, qty) VALUES ('us', 1, 0);
CREATE FUNCTION deposit(p_id int, p_amount int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE v int;
BEGIN
  UPDATE post SET balance = balance + p_amount WHERE id = p_id RETURNING version INTO v;
  RETURN v;
END $$;
CREATE FUNCTION retitle(p_id int, p_title text, p_read int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE v int;
BEGIN
  UPDATE post SET title = p_title, version = p_read + 1
    WHERE id = p_id AND version = p_read RETURNING version INTO v;
  RETURN v;
END $$;
});

# The library's settings exist only once it is loaded: they tell whether the
# statement between the two looks loaded it.
my $loaded = q{SELECT count(*) FROM pg_settings WHERE name = 'idem.ttl'};

sub version_of
{
	return $node->safe_psql('postgres', 'SELECT version FROM post WHERE id = 1');
}

# An atomic write as a backend's first guarded statement: the plan is read
# from the top-level portal, and the write is accepted without a version.
my ($ret, $out, $err) = $node->psql('postgres',
	"$loaded; UPDATE post SET balance = balance + 1 WHERE id = 1 RETURNING version; $loaded");
is($ret, 0, 'first statement, atomic write: accepted') or diag($err);
is($out, "0\n2\n1", 'the library was loaded by that UPDATE, which bumped the version');

# TypeORM's save() as the first statement: the portal's plan shows
# version + 1, which proves nothing.
($ret, $out, $err) = $node->psql('postgres',
	q{UPDATE post SET title = 'b', version = version + 1 WHERE id IN (1)});
isnt($ret, 0, 'first statement, TypeORM save(): refused');
like($err, qr/version required to update table "post".*assigned an expression of the row itself/s,
	'with the DETAIL of a version computed from the row');
is(version_of(), '2', 'and nothing was written');

# The next-version form of an ORM, as the first statement: the portal's plan
# shows a client value, which is kept.
($ret, $out, $err) = $node->psql('postgres',
	q{UPDATE post SET title = 'c', version = 3 WHERE id = 1 AND version = 2 RETURNING version});
is($ret, 0, 'first statement, next-version form: accepted') or diag($err);
is($out, '3', 'the next version is kept');

# A prepared statement's generic plan, executed first: EXECUTE runs it in a
# portal of its own, whose plan is read.
($ret, $out, $err) = $node->psql('postgres', q{
SET plan_cache_mode = force_generic_plan;
PREPARE dep(int) AS UPDATE post SET balance = greatest(balance - $1, 0) WHERE id = 1 RETURNING version;
EXECUTE dep(10)});
is($ret, 0, 'first statement, EXECUTE of a generic plan: accepted') or diag($err);
like($out, qr/^4$/m, 'and bumped the version');

# An ON CONFLICT routed to a partition whose columns are in another order:
# the plan names the partitioned table, found through the partition's
# ancestors, and read in its column numbers.
($ret, $out, $err) = $node->psql('postgres', q{
INSERT INTO orders (region, id, qty) VALUES ('us', 1, 5)
  ON CONFLICT (region, id) DO UPDATE SET qty = orders.qty + EXCLUDED.qty RETURNING qty, version});
is($ret, 0, 'first statement, atomic upsert routed to a partition: accepted') or diag($err);
is($out, '5|2', 'the quantity added, the version bumped');
($ret, $out, $err) = $node->psql('postgres', q{
INSERT INTO orders (region, id, qty) VALUES ('us', 1, 5)
  ON CONFLICT (region, id) DO UPDATE SET qty = EXCLUDED.qty, version = orders.version + 1});
like($err, qr/assigned an expression of the row itself/,
	'first statement, routed upsert with version + 1: refused');

# Inside a function the statement is not the portal's: nothing is known, so
# the atomic write is judged as writing client values and needs a version.
# The same call again in that backend is seen by the hook and accepted.
($ret, $out, $err) = $node->psql('postgres', q{SELECT deposit(1, 1)});
isnt($ret, 0, 'first statement inside a function, atomic write: refused (conservative)');
like($err, qr/loaded during this statement, could not see whether it computes its values from the row/,
	'with the DETAIL saying why');
like($err, qr/session_preload_libraries/, 'and the HINT naming the way out');
($ret, $out, $err) = $node->psql('postgres', q{
DO $$ BEGIN PERFORM deposit(1, 1); EXCEPTION WHEN sqlstate 'ID011' THEN NULL; END $$;
SELECT deposit(1, 1)});
is($ret, 0, 'the same call, after the library is loaded: accepted') or diag($err);
is($out, '5', 'and bumped the version');

# A next version sent from inside a function, unseen: it may be the row's
# own version + 1, so it is refused.
($ret, $out, $err) = $node->psql('postgres', q{SELECT retitle(1, 'd', 5)});
like($err, qr/assigned the next version \(6\), and pg_idem, loaded during this statement, could not see how/,
	'first statement inside a function, next version: refused (conservative)');
is(version_of(), '5', 'nothing was written');

# The documented way out: load the library at session start.
{
	local $ENV{PGOPTIONS} = '-c session_preload_libraries=pg_idem';
	($ret, $out, $err) = $node->psql('postgres', q{SELECT deposit(1, 1)});
	is($ret, 0, 'with session_preload_libraries, the first call is judged by its plan') or diag($err);
	is($out, '6', 'and bumped the version');
	($ret, $out, $err) = $node->psql('postgres', q{SELECT retitle(1, 'e', 6)});
	is($ret, 0, 'and the next version from a function is kept') or diag($err);
	is($out, '7', 'as the next-version form');
}

is($node->safe_psql('postgres', 'SELECT 1'), '1', 'the server is still up');

$node->stop;
done_testing();
