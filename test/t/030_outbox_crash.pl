# The outbox across a crash: kill -9 the server while several writers commit
# a business row and its event in one transaction and a relay delivers
# batches.  After restart and a final drain:
#   - every committed business row's event was delivered (at least once),
#   - no event was delivered twice in finished batches,
#   - no event exists without its business row (nor the reverse),
#   - a batch left open by the crash comes back with the same id and rows;
#   - amcheck finds every heap and btree intact.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);
use IdemTest;
use IdemReliability qw(amcheck_idem);

my $node = idem_node('outbox_crash');
$node->safe_psql('postgres', q{
	CREATE TABLE orders (id bigserial PRIMARY KEY, event_id bigint NOT NULL UNIQUE,
	                     amount integer NOT NULL);
	CREATE TABLE delivered (batch_id bigint NOT NULL, event_id bigint NOT NULL);
	SELECT idem.subscribe('relay');
	SELECT idem.subscribe('auditor');
});

# A writer: the event and the business row in one transaction, two statements.
my $writer = "$PostgreSQL::Test::Utils::tmp_check/outbox_writer.sql";
PostgreSQL::Test::Utils::append_to_file($writer, <<'EOS');
\set amount random(1, 1000)
BEGIN;
SELECT idem.emit('orders', jsonb_build_object('amount', :amount)) AS ev \gset
INSERT INTO orders (event_id, amount) VALUES (:ev, :amount);
COMMIT;
EOS

# The relay: open a batch (committed on its own, as a relay does before it
# publishes), then record it and finish it in one transaction.
my $relay = "$PostgreSQL::Test::Utils::tmp_check/outbox_relay.sql";
PostgreSQL::Test::Utils::append_to_file($relay, <<'EOS');
SELECT coalesce(max(batch_id), 0) AS b FROM idem.next_batch('relay', 50) \gset
\if :b
BEGIN;
INSERT INTO delivered (batch_id, event_id) SELECT batch_id, id FROM idem.next_batch('relay', 50);
SELECT idem.finish_batch('relay', :b);
COMMIT;
\else
\sleep 2 ms
\endif
EOS

sub pgbench
{
	my ($script, $clients) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[
			'pgbench', '-n', '-c', $clients, '-j', $clients, '-T', '60',
			'-f', $script, '-h', $node->host, '-p', $node->port, 'postgres'
		],
		'>', \$out, '2>', \$err,
		IPC::Run::timeout(180));
	return $h;
}

my @writers = (pgbench($writer, 4));
my $relayer = pgbench($relay, 1);

# Let them work, then wait until the relay has delivered something and the
# auditor holds an open batch, so the crash hits both in mid-flight.
my $deadline = time() + 30;
usleep(100_000)
  until time() > $deadline
  || $node->safe_psql('postgres', 'SELECT count(*) >= 200 FROM delivered') eq 't';
my $open_before = $node->safe_psql('postgres',
	q{SELECT string_agg(batch_id || ':' || id, ',' ORDER BY id) FROM idem.next_batch('auditor', 100)});
isnt($open_before, '', 'the auditor holds an open batch before the crash');
usleep(300_000);

crash_and_restart($node);
$_->finish for (@writers, $relayer);    # they lost their connections and stopped

my $delivered_before = $node->safe_psql('postgres', 'SELECT count(*) FROM delivered');
cmp_ok($delivered_before, '>', 0, 'the relay delivered events before the crash');
my $orders = $node->safe_psql('postgres', 'SELECT count(*) FROM orders');
cmp_ok($orders, '>=', $delivered_before, 'no more events were delivered than business rows committed');
note("committed orders: $orders; delivered before the crash: $delivered_before");

is($node->safe_psql('postgres',
		q{SELECT string_agg(batch_id || ':' || id, ',' ORDER BY id) FROM idem.next_batch('auditor', 100)}),
	$open_before, 'after the crash, the open batch comes back with the same id and rows');

# Drain what is left, the way the relay does.
$node->safe_psql('postgres', q{
	DO $$
	DECLARE b bigint;
	BEGIN
	  LOOP
	    SELECT max(batch_id) INTO b FROM idem.next_batch('relay', 50);
	    EXIT WHEN b IS NULL;
	    INSERT INTO delivered (batch_id, event_id)
	      SELECT batch_id, id FROM idem.next_batch('relay', 50);
	    PERFORM idem.finish_batch('relay', b);
	  END LOOP;
	END $$;
});

is($node->safe_psql('postgres', 'SELECT count(*) FROM delivered'),
	$orders, 'committed business rows == delivered events');
is($node->safe_psql('postgres',
		'SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT FROM delivered d WHERE d.event_id = o.event_id)'),
	'0', 'every committed event was delivered');
is($node->safe_psql('postgres', 'SELECT count(*) - count(DISTINCT event_id) FROM delivered'),
	'0', 'no event was delivered twice in finished batches');
is($node->safe_psql('postgres', 'SELECT count(*) FROM idem.outbox'),
	$orders, 'no event exists without its business row');
is($node->safe_psql('postgres',
		'SELECT count(*) FROM delivered d WHERE NOT EXISTS (SELECT FROM orders o WHERE o.event_id = d.event_id)'),
	'0', 'no event of an uncommitted transaction was delivered');
is($node->safe_psql('postgres', q{SELECT count(*) FROM idem.next_batch('relay')}),
	'0', 'nothing is left to deliver');

# emit inserts outbox rows and their index entries from C; after the crash
# and the drain the heaps and btrees must be physically sound.
amcheck_idem($node, 'postgres',
	tables => [qw(orders delivered)],
	label => 'amcheck after the outbox crash');

$node->stop;
done_testing();
