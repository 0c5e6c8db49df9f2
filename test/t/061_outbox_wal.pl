# The outbox's WAL path (src/outbox_wal.c, docs/outbox-wal.md): under
# idem.outbox_wal = 'also' or 'only', emit() writes each event as a
# transactional logical decoding message with prefix pg_idem.outbox.  An
# event must reach a logical decoding client if and only if its
# transaction commits -- through rollbacks, savepoints and two-phase
# commit -- read by test_decoding (with and without two_phase) and by a
# pgoutput client (pg_recvlogical, parsing the protocol's 'M' messages).
#
# Also: 'only' is refused while a table consumer reads the topic, even one
# being subscribed concurrently; and 'also'/'only' are refused unless
# wal_level = logical.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

my $node = PostgreSQL::Test::Cluster->new('outbox_wal');
# UTF8: the content must carry non-ASCII text as the payload has it.
$node->init(allows_streaming => 'logical', extra => [ '--encoding=UTF8', '--locale=C' ]);
$node->append_conf('postgresql.conf', join("\n",
	"shared_preload_libraries = 'pg_idem'",
	'max_prepared_transactions = 4',
	'idem.maintenance_interval = 0') . "\n");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pg_idem');

my $prefix = 'pg_idem.outbox';

# Slots first: a slot decodes only what is written after its creation.
# td: test_decoding, a prepared transaction decoded at COMMIT PREPARED;
# td2pc: test_decoding with two_phase, decoded at PREPARE; po: pgoutput,
# read by pg_recvlogical; po2pc: pgoutput with two_phase (protocol 3).  The publication is empty: pgoutput sends
# messages whatever the publication, and no table change is wanted.
$node->safe_psql('postgres', q{
SELECT pg_create_logical_replication_slot('td', 'test_decoding');
SELECT pg_create_logical_replication_slot('td2pc', 'test_decoding', false, true);
SELECT pg_create_logical_replication_slot('po', 'pgoutput');
SELECT pg_create_logical_replication_slot('po2pc', 'pgoutput', false, true);
CREATE PUBLICATION idem_pub;
});

#
# 1. The workload: one transaction per case, the event's key naming it.
#
sub emit_sql
{
	my ($key, $topic) = @_;
	$topic //= 't';
	return qq{SELECT idem.emit('$topic', '{"case": "$key", "n": [1, "\\u00e9"]}', '$key', '{"trace": "$key"}')};
}

my %id;			# key => id emit() returned
sub emit_in
{
	my ($mode, $key, $end) = @_;
	my $id = $node->safe_psql('postgres', qq{
BEGIN;
SET LOCAL idem.outbox_wal = '$mode';
@{[emit_sql($key)]};
$end;
});
	$id{$key} = $id;
	return $id;
}

emit_in('off', 'off-commit', 'COMMIT');
emit_in('also', 'also-commit', 'COMMIT');
emit_in('also', 'also-rollback', 'ROLLBACK');
emit_in('only', 'only-commit', 'COMMIT');
emit_in('only', 'only-rollback', 'ROLLBACK');

# Savepoints: a rolled-back subtransaction takes its event with it, a
# released one keeps it, and a whole rollback takes everything.
@id{qw(sp-before sp-rolled-back sp-released sp-nested-released)} =
  split /\n/, $node->safe_psql('postgres', qq{
BEGIN;
SET LOCAL idem.outbox_wal = 'only';
@{[emit_sql('sp-before')]};
SAVEPOINT a;
@{[emit_sql('sp-rolled-back')]};
ROLLBACK TO SAVEPOINT a;
SAVEPOINT b;
@{[emit_sql('sp-released')]};
SAVEPOINT c;
@{[emit_sql('sp-nested-released')]};
RELEASE SAVEPOINT c;
RELEASE SAVEPOINT b;
COMMIT;
});
$node->safe_psql('postgres', qq{
BEGIN;
SET LOCAL idem.outbox_wal = 'also';
SAVEPOINT a;
@{[emit_sql('sp-released-then-rollback')]};
RELEASE SAVEPOINT a;
ROLLBACK;
});

# Two-phase commit.  (A transaction that emitted with idem.outbox_notify on
# cannot be prepared: outbox_notify.c.)
$id{'2pc-commit'} = $node->safe_psql('postgres', qq{
BEGIN;
SET LOCAL idem.outbox_wal = 'also';
SET LOCAL idem.outbox_notify = off;
@{[emit_sql('2pc-commit')]};
PREPARE TRANSACTION 'g_commit';
});
$id{'2pc-rollback'} = $node->safe_psql('postgres', qq{
BEGIN;
SET LOCAL idem.outbox_wal = 'only';
@{[emit_sql('2pc-rollback')]};
PREPARE TRANSACTION 'g_rollback';
});
$node->safe_psql('postgres', "COMMIT PREPARED 'g_commit'");
$node->safe_psql('postgres', "ROLLBACK PREPARED 'g_rollback'");

# The setting per role: a role's default applies to its sessions.
$node->safe_psql('postgres', q{
CREATE ROLE wal_app LOGIN;
SELECT idem.grant_usage('wal_app');
ALTER ROLE wal_app SET idem.outbox_wal = 'also';
});
$id{'role-also'} = $node->safe_psql('postgres',
	"SHOW idem.outbox_wal; " . emit_sql('role-also'),
	extra_params => [ '-U', 'wal_app' ]);
($id{'role-also'}) = $id{'role-also'} =~ /^also\n(\d+)$/
  or BAIL_OUT("role default not applied: $id{'role-also'}");

my @committed = ('also-commit', 'only-commit', 'sp-before', 'sp-released',
	'sp-nested-released', '2pc-commit', 'role-also');
my @absent = ('off-commit', 'also-rollback', 'only-rollback',
	'sp-rolled-back', 'sp-released-then-rollback', '2pc-rollback');

# Rows: 'also' and 'off' store one, 'only' none; ids never collide.
is( $node->safe_psql('postgres', q{SELECT string_agg(key, ',' ORDER BY id) FROM idem.outbox}),
	'off-commit,also-commit,2pc-commit,role-also',
	'idem.outbox holds the committed events of off and also, none of only');
ok($id{'only-commit'} > $id{'also-commit'} && $id{'sp-before'} > $id{'only-commit'},
	'only returns ids from the outbox sequence, after the earlier ones');

# A message's content: the event as next_batch() would return it, plus xid.
sub check_content
{
	my ($what, $content, $xid) = @_;
	my $ev = eval { decode_json($content) };
	ok($ev, "$what: the content is JSON") or return;
	like($content, qr/^\{/, "$what: the content starts with '{' (Debezium's decoder requires it)");
	my $key = $ev->{key};
	is($ev->{id}, $id{$key}, "$what ($key): id is what emit() returned");
	is($ev->{topic}, 't', "$what ($key): topic");
	is_deeply($ev->{payload}, { case => $key, n => [ 1, "\x{e9}" ] }, "$what ($key): payload");
	is_deeply($ev->{headers}, { trace => $key }, "$what ($key): headers");
	like($ev->{created_at}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d(:\d\d)?$/,
		"$what ($key): created_at is an ISO 8601 timestamp");
	is($ev->{xid}, $xid, "$what ($key): xid is the writing transaction's") if defined $xid;
	return $key;
}

#
# 2. test_decoding without two_phase: committed events only, each inside
#    its transaction, transactional, with our prefix.  (skip-empty-xacts
#    off: test_decoding's message callback does not count a message as a
#    change, so with it on, a transaction whose only change is a message
#    is printed without its BEGIN and COMMIT.)
#
my $changes = $node->safe_psql('postgres', q{
SELECT data FROM pg_logical_slot_get_changes('td', NULL, NULL,
	'include-xids', '1', 'skip-empty-xacts', '0')});
my (@seen, $xact);
for my $line (split /\n/, $changes)
{
	if ($line =~ /^BEGIN (\d+)$/) { $xact = $1; next; }
	if ($line =~ /^COMMIT (\d+)$/) { is($1, $xact, 'test_decoding: COMMIT closes its BEGIN'); undef $xact; next; }
	next unless $line =~ /^message:/;
	ok($line =~ /^message: transactional: (\d) prefix: ([^,]*), sz: (\d+) content:(.*)$/s,
		'test_decoding: a message line') or next;
	my ($tx, $pfx, $sz, $content) = ($1, $2, $3, $4);
	is($tx, 1, 'test_decoding: the message is transactional');
	is($pfx, $prefix, 'test_decoding: prefix');
	# (psql's output is bytes, so length() counts bytes)
	is($sz, length($content), 'test_decoding: sz is the content length');
	ok(defined $xact, 'test_decoding: the message is inside a transaction');
	push @seen, check_content('test_decoding', $content, $xact);
}
is_deeply(\@seen, \@committed,
	'test_decoding: exactly the committed events, in commit order');

#
# 3. test_decoding with two_phase: a prepared transaction's event is decoded
#    at PREPARE TRANSACTION, then its COMMIT PREPARED or ROLLBACK PREPARED
#    says whether it exists: a two-phase client must wait for the decision.
#
$changes = $node->safe_psql('postgres', q{
SELECT data FROM pg_logical_slot_get_changes('td2pc', NULL, NULL, 'skip-empty-xacts', '0')});
my @lines = split /\n/, $changes;
my ($pos_msg, $pos_prep, $pos_end);
for my $gid ('g_commit', 'g_rollback')
{
	my $key = $gid eq 'g_commit' ? '2pc-commit' : '2pc-rollback';
	my $end = $gid eq 'g_commit' ? 'COMMIT PREPARED' : 'ROLLBACK PREPARED';
	($pos_msg) = grep { $lines[$_] =~ /"key": "\Q$key\E"/ } 0 .. $#lines;
	($pos_prep) = grep { $lines[$_] =~ /^PREPARE TRANSACTION '\Q$gid\E'/ } 0 .. $#lines;
	($pos_end) = grep { $lines[$_] =~ /^\Q$end\E '\Q$gid\E'/ } 0 .. $#lines;
	ok(defined $pos_msg && defined $pos_prep && defined $pos_end
		  && $pos_msg < $pos_prep && $pos_prep < $pos_end,
		"two_phase: $key is decoded before PREPARE TRANSACTION '$gid', and $end follows")
	  or diag($changes);
}
my @seen2pc = map { /"key": "([^"]+)"/ ? $1 : () } grep { /^message:/ } @lines;
is_deeply(\@seen2pc, [ @committed[0 .. 4], '2pc-commit', '2pc-rollback', 'role-also' ],
	'two_phase: committed events plus the prepared ones, each once');

#
# 4. pgoutput through pg_recvlogical (messages on): the same events, as 'M'
#    messages between 'B' and 'C'.  With protocol 3 and two_phase, a
#    prepared transaction comes as 'b' (begin prepare) ... 'P' (prepare),
#    then 'K' (commit prepared) or 'r' (rollback prepared).
#
my $endpos = $node->safe_psql('postgres',
	q{SELECT lsn FROM pg_logical_slot_peek_binary_changes('po', NULL, NULL,
		'proto_version', '1', 'publication_names', 'idem_pub', 'messages', 'true')
	  ORDER BY lsn DESC LIMIT 1});
# something after endpos, so that the stream reaches it
$node->safe_psql('postgres', q{SELECT idem.emit('after', '{}')});

# Stream slot $slot to endpos with pg_recvlogical; returns the bytes, which
# are the protocol messages, each followed by a newline.
sub recvlogical
{
	my ($slot, @opts) = @_;
	my $outfile = $node->basedir . "/$slot.out";
	my ($stdout, $stderr);
	my $ok = IPC::Run::run(
		[
			'pg_recvlogical', '-d', $node->connstr('postgres'),
			'-S', $slot, '--start', '--no-loop', '-E', $endpos, '-f', $outfile,
			'-o', 'publication_names=idem_pub', '-o', 'messages=true',
			map { ('-o', $_) } @opts
		],
		'>', \$stdout, '2>', \$stderr,
		IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	ok($ok, "pg_recvlogical streamed slot $slot to endpos") or diag($stderr);
	return slurp_file($outfile);
}

# Parse the protocol messages; returns the events' keys in stream order,
# each prefixed with the transaction's fate as the stream tells it so far
# ('' inside B..C, 'prepared:' inside b..P).  $fates collects, per gid,
# 'commit' or 'rollback' from K and r.
sub parse_pgoutput
{
	my ($what, $raw, $fates) = @_;
	my (@keys, $in, $bad);
	my $p = 0;
	while ($p < length($raw))
	{
		my $type = substr($raw, $p, 1);
		my $len;
		my $gid = sub {
			my ($at) = @_;
			my $z = index($raw, "\0", $at);
			return (substr($raw, $at, $z - $at), $z + 1 - $p);
		};
		if ($type eq 'B') { $len = 1 + 8 + 8 + 4; $bad++ if $in; $in = 'B'; }
		elsif ($type eq 'C') { $len = 1 + 1 + 8 + 8 + 8; $bad++ unless ($in // '') eq 'B'; undef $in; }
		elsif ($type eq 'b') { (undef, $len) = $gid->($p + 1 + 8 + 8 + 8 + 4); $bad++ if $in; $in = 'b'; }
		elsif ($type eq 'P') { (undef, $len) = $gid->($p + 1 + 1 + 8 + 8 + 8 + 4); $bad++ unless ($in // '') eq 'b'; undef $in; }
		elsif ($type eq 'K' || $type eq 'r')
		{
			my $g;
			($g, $len) = $gid->($p + 1 + 1 + 8 + 8 + 8 + ($type eq 'r' ? 8 : 0) + 4);
			$fates->{$g} = $type eq 'K' ? 'commit' : 'rollback';
		}
		elsif ($type eq 'M')
		{
			my $flags = unpack('C', substr($raw, $p + 1, 1));
			my $z = index($raw, "\0", $p + 10);
			my $pfx = substr($raw, $p + 10, $z - $p - 10);
			my $clen = unpack('N', substr($raw, $z + 1, 4));
			my $content = substr($raw, $z + 5, $clen);
			$len = $z + 5 + $clen - $p;
			is($flags, 1, "$what: the message is flagged transactional");
			is($pfx, $prefix, "$what: prefix");
			ok($in, "$what: the message is inside a transaction");
			my $key = check_content($what, $content);
			push @keys, (($in // '') eq 'b' ? 'prepared:' : '') . ($key // '?');
		}
		else
		{
			fail(sprintf("$what: unexpected message type 0x%02x", ord($type)));
			last;
		}
		is(substr($raw, $p + $len, 1), "\n", "$what: '$type' message ends where its format says");
		$p += $len + 1;
	}
	ok(!$bad && !$in, "$what: transactions open and close in order");
	return @keys;
}

my @pgo = parse_pgoutput('pgoutput', recvlogical('po', 'proto_version=1'));
is_deeply(\@pgo, \@committed,
	'pgoutput: exactly the committed events, in commit order');

my %fates;
my @pgo2pc = parse_pgoutput('pgoutput two_phase',
	recvlogical('po2pc', 'proto_version=3', 'two_phase=on'), \%fates);
is_deeply(\@pgo2pc,
	[ @committed[0 .. 4], 'prepared:2pc-commit', 'prepared:2pc-rollback', 'role-also' ],
	'pgoutput two_phase: prepared events at PREPARE, the others at commit');
is_deeply(\%fates, { g_commit => 'commit', g_rollback => 'rollback' },
	'pgoutput two_phase: then COMMIT PREPARED and ROLLBACK PREPARED decide');

#
# 5. 'only' never hides an event from a table consumer.
#
$node->safe_psql('postgres', q{SELECT idem.subscribe('relay', ARRAY['orders'])});
my ($ret, $out, $err) = $node->psql('postgres', q{
SET idem.outbox_wal = 'only';
SELECT idem.emit('orders', '{}')});
like($err, qr/ERROR:  idem.outbox_wal = 'only' would hide this event from a consumer of topic "orders"/,
	'only: an event of a subscribed topic is refused');
is($node->safe_psql('postgres', q{SET idem.outbox_wal = 'only'; SELECT idem.emit('other', '{}') > 0}),
	't', 'only: a topic no consumer reads is written');
$node->safe_psql('postgres', q{SELECT idem.subscribe('all-topics')});
($ret, $out, $err) = $node->psql('postgres', q{
SET idem.outbox_wal = 'only';
SELECT idem.emit('other', '{}')});
like($err, qr/would hide this event from a consumer of topic "other"/,
	'only: a consumer of every topic refuses every topic');
$node->safe_psql('postgres', q{SELECT idem.unsubscribe('all-topics')});
is($node->safe_psql('postgres', q{
SET idem.outbox_wal = 'also';
SELECT idem.emit('orders', '{"for": "relay"}') > 0;
SELECT count(*) FROM idem.next_batch('relay') WHERE payload = '{"for": "relay"}'}),
	"t\n1", 'also: the table consumer gets the event');

# A consumer being subscribed (not yet committed): 'only' waits for it,
# then sees it and refuses.
my $sub = $node->background_psql('postgres');
$sub->query_safe(q{BEGIN; SELECT idem.subscribe('late', ARRAY['late'])});
my $emitter = $node->background_psql('postgres', on_error_stop => 0);
my $emitter_pid = $emitter->query_safe('SELECT pg_backend_pid()');
my $sub_pid = $sub->query_safe('SELECT pg_backend_pid()');
$emitter->query_until(qr/emitting/, qq{SET idem.outbox_wal = 'only';\n\\echo emitting\nSELECT idem.emit('late', '{}');\n});
ok( $node->poll_query_until('postgres',
		qq{SELECT $sub_pid = ANY (pg_blocking_pids($emitter_pid))}),
	'only: emit() waits for a subscribe() in progress');
$sub->query_safe('COMMIT');
$emitter->{stderr} = '';
$emitter->query('SELECT 1');
like($emitter->{stderr}, qr/would hide this event from a consumer of topic "late"/,
	'only: once that consumer committed, the event is refused');

# The other order: an 'only' emitter in progress holds a subscribe() back
# until it commits (the new consumer's start snapshot then counts the
# emitter's transaction as before its time: it is owed nothing).
$emitter->{stderr} = '';
$emitter->query_safe(q{BEGIN; SELECT idem.emit('later', '{}')});
$sub->query_until(qr/subscribing/, qq{\\echo subscribing\nSELECT idem.subscribe('later', ARRAY['later']);\n});
ok( $node->poll_query_until('postgres',
		qq{SELECT $emitter_pid = ANY (pg_blocking_pids($sub_pid))}),
	'only: subscribe() waits for an emitter in progress');
$emitter->query_safe('COMMIT');
$sub->query_safe('SELECT 1');
is($node->safe_psql('postgres', q{SELECT count(*) FROM idem.consumers WHERE name = 'later'}), '1',
	'only: the subscribe() completes once the emitter committed');
$sub->quit;
$emitter->quit;

# The WAL path is no way around topic grants.
$node->safe_psql('postgres', q{
CREATE ROLE wal_narrow LOGIN;
SELECT idem.grant_usage('wal_narrow', topics => ARRAY['allowed%']);
});
($ret, $out, $err) = $node->psql('postgres',
	q{SET idem.outbox_wal = 'only'; SELECT idem.emit('forbidden', '{}')},
	extra_params => [ '-U', 'wal_narrow' ]);
like($err, qr/ERROR:  permission denied for outbox topic "forbidden"/,
	'only: a topic not granted to the role is refused');
is($node->safe_psql('postgres',
		q{SET idem.outbox_wal = 'only'; SELECT idem.emit('allowed.1', '{}') > 0},
		extra_params => [ '-U', 'wal_narrow' ]),
	't', 'only: a granted topic is written by an application role');

#
# 6. wal_level below logical: the setting is refused; a configured value is
#    ignored with a warning, and events are stored in idem.outbox.
#
$node->safe_psql('postgres', q{
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots;
ALTER DATABASE postgres SET idem.outbox_wal = 'only';
});
$node->append_conf('postgresql.conf', "wal_level = replica\n");
$node->restart;
($ret, $out, $err) = $node->psql('postgres', q{SET idem.outbox_wal = 'also'});
like($err, qr/ERROR:  idem.outbox_wal requires wal_level = logical\nDETAIL:  wal_level is "replica"/,
	'wal_level replica: SET idem.outbox_wal = also is refused');
($ret, $out, $err) = $node->psql('postgres', q{ALTER ROLE wal_app SET idem.outbox_wal = 'only'});
like($err, qr/requires wal_level = logical/, 'wal_level replica: ALTER ROLE ... SET is refused');
($ret, $out, $err) = $node->psql('postgres', q{SHOW idem.outbox_wal; SELECT idem.emit('fallback', '{}') IS NOT NULL;
	SELECT count(*) FROM idem.outbox WHERE topic = 'fallback'});
is($out, "off\nt\n1", 'wal_level replica: a database default of only falls back to off, storing the event');
like($err, qr/WARNING:  idem.outbox_wal requires wal_level = logical/,
	'wal_level replica: ... with a warning to the session');

done_testing();
