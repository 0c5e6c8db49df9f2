# Adversarial review of the outbox ring (issue 14): inputs under which
# the ring's id walk (fetch_window in src/outbox.c) lost events or did
# not finish, while 0.1.1's single primary-key walk was fine.
#
# 1. Sparse ids.  fetch_window walks a window run by run (65536 ids per
#    run); ids need not be dense (setval(), a sequence INCREMENT, ids given
#    with OVERRIDING SYSTEM VALUE), and a window that holds an event below
#    a gap and one above it walked every empty run of the gap, one index
#    scan each, without CHECK_FOR_INTERRUPTS between them: a gap of 2^40
#    ids made next_batch run for hours, uncancellable, holding the
#    consumer's row lock.  Counted here without timing: the number of
#    index scans of the leaves' indexes in next_batch's transaction
#    (pg_stat_get_xact_numscans), for a gap of 4000 runs.
# 2. Negative ids.  The table accepts ids from -65535 on (partition key
#    0), as 0.1's table did; fetch_window clamped its cursor at -1, so a
#    committed event with a negative id was never delivered, and the
#    window closed over it for good.
# 3. Ids at the top of bigint: the run arithmetic must not overflow.
# 4. Retention with no consumer (SPEC.md section 3: events are kept for
#    idem.outbox_retention).  Trimming only truncated a leaf all of whose
#    events were past the retention, so the leaf of the current run kept
#    expired events for as long as any younger event sat beside them --
#    under a trickle of events, for the whole run (65536 events: years).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;

my $node = idem_node('ring_review');

sub q1 { my ($sql) = @_; return $node->safe_psql('postgres', $sql); }

my $leaf_scans = q{
SELECT sum(pg_stat_get_xact_numscans(x.indexrelid))
  FROM pg_inherits i JOIN pg_index x ON x.indrelid = i.inhrelid
 WHERE i.inhparent = 'idem.outbox'::regclass};

# --- 1. a window across a gap of 4000 runs
q1(q{SELECT idem.subscribe('sparse')});
q1(q{SELECT idem.emit('sparse', '{"n": 1}')});
q1(q{SELECT setval('idem.outbox_id_seq', 4000 * 65536::bigint)});
q1(q{SELECT idem.emit('sparse', '{"n": 2}')});
my $out = q1(qq{
BEGIN;
SELECT string_agg(payload->>'n', ',' ORDER BY id) FROM idem.next_batch('sparse');
$leaf_scans;
COMMIT;});
my ($got, $scans) = split /\n/, $out;
is($got, '1,2', 'sparse ids: both events of the window are delivered');
cmp_ok($scans, '<', 200,
	"sparse ids: the walk does not scan every empty run of the gap ($scans index scans)");
q1(q{SELECT idem.finish_batch('sparse', b) FROM (SELECT DISTINCT batch_id b FROM idem.next_batch('sparse')) s});
q1(q{SELECT idem.unsubscribe('sparse')});

# --- 2. negative ids
q1(q{SELECT idem.subscribe('negative')});
q1(q{INSERT INTO idem.outbox (id, topic, payload) OVERRIDING SYSTEM VALUE
     VALUES (-65535, 'neg', '{"n": 1}'), (-5, 'neg', '{"n": 2}'), (0, 'neg', '{"n": 3}')});
q1(q{SELECT idem.emit('neg', '{"n": 4}')});
is(q1(q{SELECT string_agg(id::text, ',' ORDER BY id) FROM idem.next_batch('negative')}),
	q1(q{SELECT string_agg(id::text, ',' ORDER BY id) FROM idem.outbox WHERE topic = 'neg'}),
	'negative ids: every committed event is delivered, in id order');
is(q1(q{SELECT count(*) FROM idem.next_batch('negative')}), '4',
	'negative ids: the open batch is returned again whole');
q1(q{SELECT idem.finish_batch('negative', b) FROM (SELECT DISTINCT batch_id b FROM idem.next_batch('negative')) s});
is(q1(q{SELECT count(*) FROM idem.next_batch('negative')}), '0',
	'negative ids: nothing is delivered twice');
q1(q{SELECT idem.unsubscribe('negative')});

# --- 3. the top of bigint
q1(q{SELECT idem.subscribe('top')});
q1(q{SELECT setval('idem.outbox_id_seq', 9223372036854775000)});
q1(q{SELECT idem.emit('top', '{"n": 1}')});
q1(q{SELECT idem.emit('top', '{"n": 2}')});
is(q1(q{SELECT string_agg(payload->>'n', ',' ORDER BY id) FROM idem.next_batch('top')}),
	'1,2', 'ids at the top of bigint are delivered');

q1(q{SELECT idem.unsubscribe('top')});

# --- 4. retention with no consumer, in the leaf of the current run
q1(q{TRUNCATE idem.outbox});
q1(q{SELECT count(idem.emit('expired', '{}')) FROM generate_series(1, 3)});
q1(q{UPDATE idem.outbox SET created_at = now() - interval '30 days'});
q1(q{SELECT idem.emit('young', '{}')});
q1(q{SELECT idem.trim_outbox(1000)});
is(q1(q{SELECT string_agg(DISTINCT topic, ',') FROM idem.outbox}), 'young',
	'no consumer: events past the retention go, the young one stays');

$node->stop;
done_testing();
