# Storage that does not bloat (issue 14): under a held xmin the outbox's
# size stays bounded by what consumers have not finished, while emit and
# a relay go on -- and a DELETE-based queue beside it does not.
#
# A session holds a REPEATABLE READ snapshot open (on another table) for
# the whole run: no dead row anywhere can be pruned or vacuumed meanwhile.
# Two emitters (pgbench, 40 transactions a second in all) write 100
# events per transaction into idem.outbox
# and the same rows into ctrl, the hand-written queue table; now and then
# an emitter moves the ids on to the next run of the ring (65536 ids per
# leaf and run, src/sql/40_outbox.sql), standing for the traffic that would
# fill a run, so that the run turns through every leaf several times in a
# short test.  A relay (pgbench) reads and finishes batches in a
# transaction it keeps open across next_batch, a pause and finish_batch --
# the way relays that process a batch in one transaction work -- and
# consumes ctrl the classic way (SKIP LOCKED + DELETE).  The test itself
# trims in a loop (idem.trim_outbox, as the background worker would).
#
# Checked: trimming empties leaves while the relay runs (it is never
# locked out for good: next_batch lets go of the leaves when it returns);
# the outbox's peak size is a fraction of what was emitted, and after the
# drain, with the snapshot still held, it is back to empty files, while
# ctrl keeps every dead row.  On pg_idem 0.1.1 (DELETE-based trimming) the
# outbox grows like ctrl and the size checks fail.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use IdemTest;
use IdemReliability;

my $node = idem_node('ring_bloat', 'max_connections = 40');
my $dir = PostgreSQL::Test::Utils::tempdir();

$node->safe_psql('postgres', q{
CREATE TABLE held (x int);
INSERT INTO held VALUES (1);
CREATE TABLE ctrl (id bigserial PRIMARY KEY, topic text NOT NULL, payload jsonb NOT NULL,
                   created_at timestamptz NOT NULL DEFAULT now());
SELECT idem.subscribe('relay');
});

# The old snapshot: held until the end of the test.
my $holder = $node->background_psql('postgres');
my $holder_pid = $holder->query_safe('SELECT pg_backend_pid()');
$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$holder->query_safe('SELECT count(*) FROM held');
my $holder_xmin = $node->safe_psql('postgres',
	"SELECT backend_xmin FROM pg_stat_activity WHERE pid = $holder_pid");
ok($holder_xmin ne '', "a session holds snapshot xmin $holder_xmin");

my $emit_script = "$dir/emit.pgbench";
PostgreSQL::Test::Utils::append_to_file($emit_script, q{\set jump random(1, 25)
BEGIN;
SELECT count(idem.emit('ring', jsonb_build_object('pad', repeat('x', 150)))) FROM generate_series(1, 100);
INSERT INTO ctrl (topic, payload) SELECT 'ring', jsonb_build_object('pad', repeat('x', 150)) FROM generate_series(1, 100);
COMMIT;
SELECT setval('idem.outbox_id_seq', (s.last_value / 65536 + 1) * 65536) FROM idem.outbox_id_seq s WHERE :jump = 1;
});
my $relay_script = "$dir/relay.pgbench";
PostgreSQL::Test::Utils::append_to_file($relay_script, q{BEGIN;
SELECT count(*) FROM idem.next_batch('relay', 500);
SELECT pg_sleep(0.002);
SELECT idem.finish_batch('relay', c.batch_id) FROM idem.consumers c
 WHERE c.name = 'relay' AND c.batch_id IS NOT NULL;
COMMIT;
DELETE FROM ctrl WHERE id IN (SELECT id FROM ctrl ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED);
});

my $size_sql = q{
SELECT (SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits
         WHERE inhparent = 'idem.outbox'::regclass),
       pg_total_relation_size('ctrl')};

# 40 transactions (4000 events) a second in all, which the relay keeps up
# with: the outbox is then bounded by the few runs not finished yet.
my $emitters = pgbench_start($node, clients => 2, jobs => 2, transactions => 200,
	files => [$emit_script], extra => ['-R', '40']);
my $relay = pgbench_start($node, clients => 1, jobs => 1, duration => 300,
	files => [$relay_script]);

my ($calls, $truncating_calls, $trimmed, $peak) = (0, 0, 0, 0);
while ($emitters->{h}->pumpable)
{
	$emitters->{h}->pump_nb;
	my $n = $node->safe_psql('postgres', 'SELECT idem.trim_outbox(10000)');
	$calls++;
	if ($n > 0) { $truncating_calls++; $trimmed += $n; }
	my ($outbox_size) = split /\|/, $node->safe_psql('postgres', $size_sql);
	$peak = $outbox_size if $outbox_size > $peak;
	usleep(20_000);
}
my $e = pgbench_finish($emitters, 10);
is($e->{processed}, 400, 'the emitters committed all their transactions');
$relay->{h}->kill_kill;

cmp_ok($truncating_calls, '>=', 3,
	"trimming removed events while the relay ran ($trimmed events in $truncating_calls of $calls calls)");

# Drain what is left, the same way, then trim with the snapshot still held.
for (1 .. 1000)
{
	my $b = $node->safe_psql('postgres',
		q{SELECT max(batch_id) FROM idem.next_batch('relay', 5000)});
	last if $b eq '';
	$node->safe_psql('postgres', "SELECT idem.finish_batch('relay', $b)");
}
$node->safe_psql('postgres', 'DELETE FROM ctrl');
is($node->safe_psql('postgres', q{SELECT pending FROM idem.consumer_lag WHERE consumer = 'relay'}),
	'0', 'the relay finished every event');
for (1 .. 10)
{
	last if $node->safe_psql('postgres', 'SELECT idem.trim_outbox(10000)') == 0;
}
is($node->safe_psql('postgres', 'SELECT count(*) FROM idem.outbox'), '0',
	'with every event finished, trimming empties the outbox under the held snapshot');

my ($outbox_end, $ctrl_end) = split /\|/, $node->safe_psql('postgres', $size_sql);
my $volume = $node->safe_psql('postgres',
	q{SELECT pg_size_pretty(pg_total_relation_size('ctrl'))});
note(sprintf('outbox: peak %d kB, after the drain %d kB; ctrl (DELETE-based) after the drain %d kB',
	$peak / 1024, $outbox_end / 1024, $ctrl_end / 1024));
cmp_ok($outbox_end, '<=', 8 * 3 * 8192 * 2,
	'after the drain the leaves are empty files again (at most a few pages each)');
cmp_ok($ctrl_end, '>=', 10 * $outbox_end,
	'the DELETE-based queue keeps its dead rows under the held snapshot');
cmp_ok($peak * 3, '<', $ctrl_end,
	'the outbox never held more than a third of what the DELETE-based queue kept');
is($node->safe_psql('postgres',
		"SELECT backend_xmin FROM pg_stat_activity WHERE pid = $holder_pid"),
	$holder_xmin, 'the snapshot was held throughout');

$holder->query_safe('COMMIT');
$holder->quit;
$node->stop;
done_testing();
