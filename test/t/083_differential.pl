# Differential test of the writes pg_idem makes without the executor.
#
# reserve(), complete(), release(), checkpoint() (src/keys.c) and emit()
# (src/outbox_emit.c) write idem.keys and idem.outbox with the table AM
# instead of a planned statement.  The rule they must keep:
#
#   a write that does not go through the executor gives exactly what the
#   equivalent SQL statement gives, or it does not run.
#
# So every C path is run in one database of a twin pair, and the SQL
# statement it stands for (written out by hand below, with the same values)
# in the other, and the two databases are compared after each call:
#   - the SQLSTATE of the call (none when it succeeds);
#   - the rows of the table, every column including ones a user added.
#     Values that legitimately differ between the twins (tokens, ids,
#     timestamps, xids) are compared by shape: a token is "new" (larger than
#     before) or "same", a timestamp "kept", "advanced" or "renewed",
#     locked_until and expires_at by their distance from updated_at
#     (exactly the lease and the ttl), created_at and xid of an event by
#     equality with the calling transaction's now() and
#     pg_current_xact_id();
#   - the triggers that fired (a trigger function that logs into a side
#     table);
#   - what logical decoding shows (test_decoding, volatile values masked).
#
# Cases, each in a fresh pair of databases so that they are independent:
#   - pristine tables: every path gives what its statement gives;
#   - idem.keys altered (an added column, a CHECK constraint, triggers, row
#     level security, a changed default, a deferrable unique constraint, a
#     NOT NULL put on a nullable column): every key function refuses with
#     0A000, changes nothing, fires nothing and writes nothing to the WAL;
#   - idem.keys in a publication: with REPLICA IDENTITY NOTHING the UPDATE
#     paths fail with 55000 like UPDATE, with FULL they log the old row like
#     UPDATE; a unique expression index added by the user is checked like
#     the statement checks it;
#   - idem.outbox altered in the same ways: emit() gives what its INSERT
#     gives, run as the table's owner;
#   - a session that has already used the functions while another session
#     alters the table (DROP + ADD of a column, ALTER COLUMN ... TYPE), with
#     its next call in a new transaction and in a transaction that began
#     before the ALTER: no crash, no write into a dropped column or with a
#     stale type; the call works on the new shape or is refused as above.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;
use IdemReliability;

# BackgroundPsql notes every query and its output into the TAP stream; the
# harness prints that stream, and this test sends a few thousand queries.
{
	no warnings 'redefine';
	*PostgreSQL::Test::BackgroundPsql::note = sub { };
}

my $node = reliability_node('differential',
	'wal_level = logical',
	'max_replication_slots = 8',
	'max_wal_senders = 4',
	# a crash in one case (the point of the stale-cache cases on a broken
	# build) must not take the following cases down with it
	'restart_after_crash = on',
	'idem.maintenance_interval = 0');

# Every pair of databases is a copy of this template: the extension, a side
# table the test triggers log into, and the trigger function.  The function
# logs each firing with the row minus its volatile columns; on idem.outbox a
# BEFORE ROW firing also changes the row, so that the INSERT's row visibly
# went through it.
$node->safe_psql('postgres', q{
CREATE ROLE r_outbox_owner NOLOGIN;
CREATE DATABASE idem_tmpl;
});
$node->safe_psql('idem_tmpl', q{
CREATE EXTENSION pg_idem;
CREATE TABLE public.fired (
  seq     bigserial PRIMARY KEY,
  tg      text NOT NULL,
  tg_when text NOT NULL,
  lvl     text NOT NULL,
  op      text NOT NULL,
  tbl     text NOT NULL,
  rec     jsonb
);
CREATE FUNCTION public.log_fire() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r jsonb;
BEGIN
  IF TG_LEVEL = 'ROW' THEN
    r := to_jsonb(NEW) - ARRAY['id', 'created_at', 'xid', 'token', 'locked_until',
                                'updated_at', 'expires_at'];
  END IF;
  INSERT INTO public.fired (tg, tg_when, lvl, op, tbl, rec)
  VALUES (TG_NAME, TG_WHEN, TG_LEVEL, TG_OP, TG_TABLE_NAME, r);
  IF TG_LEVEL = 'ROW' AND TG_WHEN = 'BEFORE' THEN
    -- idem.outbox's row triggers fire on its leaves (outbox_0 .. outbox_7)
    IF TG_TABLE_NAME ~ '^outbox(_[0-9]+)?$' THEN
      NEW.headers := coalesce(NEW.headers, '{}') || '{"stamped": true}';
    END IF;
    RETURN NEW;
  END IF;
  RETURN NULL;
END $$;
});

# idem.keys.lease (the holder's lease length, since 0.2.0) is written by
# reserve() and checkpoint(); the statements below write it too when the
# table has it.
my $has_lease = $node->safe_psql('idem_tmpl', q{
SELECT count(*) FROM pg_attribute
 WHERE attrelid = 'idem.keys'::regclass AND attname = 'lease' AND NOT attisdropped}) eq '1';

sub lease_col { return $has_lease ? ', lease' : '' }
sub lease_val { return $has_lease ? ", interval '$_[0]'" : '' }
sub lease_set { return $has_lease ? ", lease = interval '$_[0]'" : '' }

# idem.keys.first_token (the token a key's life began with, since 0.2.0)
# is written when a key is acquired new or afresh, with the token just
# taken: currval() after the nextval() of the token column, which comes
# first in both the INSERT's select list and the UPDATE's (attribute
# order) target list.
my $has_first_token = $node->safe_psql('idem_tmpl', q{
SELECT count(*) FROM pg_attribute
 WHERE attrelid = 'idem.keys'::regclass AND attname = 'first_token' AND NOT attisdropped}) eq '1';

sub first_token_col { return $has_first_token ? ', first_token' : '' }
sub first_token_val { return $has_first_token ? ", currval('idem.key_token_seq')" : '' }
sub first_token_set { return $has_first_token ? ", first_token = currval('idem.key_token_seq')" : '' }

# ----------------------------------------------------------------------
# Sessions
# ----------------------------------------------------------------------

# A psql session that survives errors and reports SQLSTATEs.
sub session
{
	my ($db) = @_;
	my $s = $node->background_psql($db, on_error_stop => 0);
	$s->query('\set VERBOSITY verbose');
	$s->{stderr} = '';
	return $s;
}

# Run SQL in a session: { out, state (undef when no error), err, lost }.
# lost: the session died (its backend crashed or was terminated).
sub run
{
	my ($s, $sql) = @_;
	my %r = (out => '', err => '', lost => 0);
	$s->{stderr} = '';
	my $ok = eval { $r{out} = $s->query($sql); 1; };
	$r{err} = $s->{stderr} // '';
	$s->{stderr} = '';
	if (!$ok)
	{
		$r{lost} = 1;
		$r{err} .= "\n(session lost: $@)";
		$r{state} = 'LOST';
		return \%r;
	}
	($r{state}) = $r{err} =~ /(?:ERROR|FATAL|PANIC):\s+([0-9A-Z]{5}):/;
	$r{state} = 'LOST'
	  if !defined $r{state} && $r{err} =~ /connection to server was lost|server closed the connection/;
	return \%r;
}

# Run SQL that must succeed; returns its output.
sub runq
{
	my ($s, $sql) = @_;
	my $r = run($s, $sql);
	die "query failed: $sql\n$r->{err}" if $r->{state} || $r->{err} =~ /ERROR/;
	return $r->{out};
}

sub close_session
{
	my ($s) = @_;
	eval { $s->quit; 1 } or eval { $s->{run}->kill_kill; 1 };
	return;
}

# ----------------------------------------------------------------------
# Twin databases: c runs the C function, s the SQL statement
# ----------------------------------------------------------------------

sub new_pair
{
	my ($name) = @_;
	my %pair = (name => $name);
	for my $side (qw(c s))
	{
		my $db = "${side}_$name";
		$node->safe_psql('postgres', "CREATE DATABASE $db TEMPLATE idem_tmpl");
		$node->safe_psql($db,
			"SELECT 1 FROM pg_create_logical_replication_slot('$db', 'test_decoding')");
		$pair{$side} = { db => $db, slot => $db, s => session($db), emitted => {} };
	}
	return \%pair;
}

# Reconnect both sides (after the server restarted, every session is gone).
sub reconnect_pair
{
	my ($pair) = @_;
	for my $side (qw(c s))
	{
		close_session($pair->{$side}{s});
		$pair->{$side}{s} = session($pair->{$side}{db});
	}
	return;
}

sub end_pair
{
	my ($pair) = @_;
	for my $side (qw(c s))
	{
		close_session($pair->{$side}{s});
		$node->safe_psql('postgres',
			"SELECT pg_drop_replication_slot('$pair->{$side}{slot}')");
	}
	return;
}

# Run the same SQL on both sides.
sub both
{
	my ($pair, $sql) = @_;
	runq($pair->{$_}{s}, $sql) for qw(c s);
	return;
}

# ----------------------------------------------------------------------
# What is compared
# ----------------------------------------------------------------------

# Decoded changes since the last call, one line each, with what
# legitimately differs between the twins masked: timestamps, tokens, event
# ids and xids, and the side table's sequence.  A lease restarted right
# after acquiring (keys.c restarts it when acquiring took over 10 ms, which
# a loaded machine can cause) is a second, identical-looking UPDATE of the
# row in the same transaction: consecutive identical masked UPDATE lines of
# idem.keys count once.
sub changes
{
	my ($x) = @_;
	my $out = runq($x->{s},
		"SELECT data FROM pg_logical_slot_get_changes('$x->{slot}', NULL, NULL, "
		  . "'include-xids', '0', 'skip-empty-xacts', '1')");
	my @lines;
	for my $l (split /\n/, $out)
	{
		$l =~ s/\[timestamp with time zone\]:'[^']*'/[timestamp with time zone]:<ts>/g;
		$l =~ s/\b(token|id|seq)\[(bigint|numeric)\]:\d+/$1\[$2\]:<n>/g;
		$l =~ s/\bxid\[(xid8|text)\]:('?)\d+\2/xid[$1]:<n>/g;
		next
		  if @lines
		  && $l eq $lines[-1]
		  && $l =~ /^table idem\.keys: UPDATE:/;
		push @lines, $l;
	}
	return join("\n", @lines);
}

sub drain
{
	my ($x) = @_;
	runq($x->{s},
		"SELECT count(*) FROM pg_logical_slot_get_changes('$x->{slot}', NULL, NULL)");
	return;
}

sub fired_mark
{
	my ($x) = @_;
	return runq($x->{s}, 'SELECT coalesce(max(seq), 0) FROM public.fired');
}

# Trigger firings logged after a mark.
sub fired_since
{
	my ($x, $mark) = @_;
	return runq($x->{s}, qq{
SELECT coalesce(string_agg(concat_ws(' ', f.tg, f.tg_when, f.lvl, f.op, f.tbl, f.rec::text),
                           E'\\n' ORDER BY f.seq), '')
  FROM public.fired f WHERE f.seq > $mark});
}

# A table exactly, physical row identity included: "changed nothing".
sub exact
{
	my ($x, $table) = @_;
	my $order = $table eq 'keys' ? 't.scope, t.key' : 't.id';
	return runq($x->{s}, qq{
SELECT coalesce(string_agg((to_jsonb(t) || jsonb_build_object('ctid', t.ctid::text,
                                                                'xmin', t.xmin::text))::text,
                           E'\\n' ORDER BY $order), '')
  FROM idem.$table t});
}

# token, created_at and updated_at (in microseconds) of each key.
sub keys_before
{
	my ($x) = @_;
	my %b;
	for my $l (split /\n/, runq($x->{s}, q{
SELECT k.key, k.token, (extract(epoch FROM k.created_at) * 1000000)::bigint,
       (extract(epoch FROM k.updated_at) * 1000000)::bigint
  FROM idem.keys k}))
	{
		my ($key, $token, $created, $updated) = split /\|/, $l, -1;
		$b{$key} = { token => $token, created => $created, updated => $updated };
	}
	return \%b;
}

# The row of a key in idem.keys, volatile columns by shape (see the
# header).  Only the key a call is about: another row a call wrongly
# changed shows in the decoded changes, and an earlier call's difference
# is not counted again.
sub keys_shape
{
	my ($x, $before, $key) = @_;
	my @rows;
	for my $l (split /\n/, runq($x->{s}, qq{
SELECT k.key,
       (to_jsonb(k) - ARRAY['token', 'locked_until', 'created_at', 'updated_at', 'expires_at'])::text,
       k.token,
       (extract(epoch FROM k.created_at) * 1000000)::bigint,
       (extract(epoch FROM k.updated_at) * 1000000)::bigint,
       coalesce((k.locked_until - k.updated_at)::text, 'none'),
       (k.expires_at - coalesce(k.locked_until, k.updated_at))::text
  FROM idem.keys k WHERE k.scope = '' AND k.key = '$key'}))
	{
		my ($key, $json, $token, $created, $updated, $lease, $life) = split /\|/, $l, -1;
		my $b = $before->{$key};
		my ($ts, $cs, $us);
		if (!$b)
		{
			$ts = $token ne '' ? 'set' : 'NULL';
			$us = 'set';
		}
		else
		{
			$ts = $token eq $b->{token} ? 'same' : $token > $b->{token} ? 'new' : "went back";
			$us = $updated == $b->{updated} ? 'kept' : $updated > $b->{updated} ? 'advanced' : 'went back';
		}
		# created_at: set by this call, or kept.  Not compared with
		# updated_at: a lease restarted right after acquiring (see changes())
		# moves updated_at on, and how often that happens depends on load.
		$cs = !$b ? 'set'
		  : $created == $b->{created} ? 'kept'
		  : $created > $b->{updated} ? 'renewed'
		  : 'other';
		push @rows, "$json token:$ts created_at:$cs updated_at:$us "
		  . "locked_until-updated_at:$lease expires_at-(locked_until|updated_at):$life";
	}
	return join("\n", @rows);
}

# The rows of idem.outbox after id $after (those a call wrote): each
# event by the call that wrote it (ids are matched with what the calls
# returned), the leaf of the ring it is stored in (emit() writes the leaf
# itself: it must be the one the INSERT's tuple routing chooses), created_at
# and xid as "now" and "own" when they equal the writing transaction's
# now() and xid.
sub outbox_shape
{
	my ($x, $after) = @_;
	my @rows;
	for my $l (split /\n/, runq($x->{s}, qq{
SELECT o.id, (to_jsonb(o) - ARRAY['id', 'created_at', 'xid'])::text, o.created_at::text, o.xid::text,
       o.tableoid::regclass::text
  FROM idem.outbox o WHERE o.id > $after ORDER BY o.id}))
	{
		my ($id, $json, $created, $xid, $leaf) = split /\|/, $l, -1;
		my $e = $x->{emitted}{$id};
		my $who = $e ? $e->{label} : 'an unknown call';
		my $cs = ($e && $created eq $e->{now}) ? 'now' : $created;
		my $xs = ($e && $xid eq $e->{xid}) ? 'own' : $xid;
		push @rows, "event of $who in $leaf: $json created_at:$cs xid:$xs";
	}
	return join("\n", @rows);
}

# Remember the "id|now|xid" lines an emit step returned.
sub note_emitted
{
	my ($x, $label, $out) = @_;
	my $i = 0;
	for my $l (split /\n/, $out)
	{
		next unless $l =~ /^(\d+)\|(.+)\|(\d+)$/;
		$i++;
		$x->{emitted}{$1} = { label => "$label#$i", now => $2, xid => $3 };
	}
	return;
}

# ----------------------------------------------------------------------
# One step: the C call on side c, the SQL statement on side s, compared.
#
# expect: 'same'   -- c gives what s gives;
#         'refuse' -- c fails with 0A000 (message matching msg) and changes
#                     nothing: table, triggers, WAL;
#         'either' -- 'refuse' if c failed with 0A000, else 'same'.
# table:     'keys' (key: the key the call is about) or 'outbox'.
# c, s:      the C call and the statement; a sub gets the key's token on
#            its side.
# c_session: run the C call in this session instead of side c's.
# after_c:   code run right after the C call (crash checks).
# Returns what side s gave, for sanity checks of the alteration.
# ----------------------------------------------------------------------
sub step
{
	my (%arg) = @_;
	my $pair = $arg{pair};
	my $table = $arg{table};
	my $label = "$pair->{name}: $arg{label}";
	my (%pre, %r, %post);

	for my $side (qw(c s))
	{
		my $x = $pair->{$side};
		$pre{$side}{mark} = fired_mark($x);
		$pre{$side}{exact} = exact($x, $table);
		$pre{$side}{before} = keys_before($x) if $table eq 'keys';
		$pre{$side}{last_id} = runq($x->{s}, 'SELECT coalesce(max(id), 0) FROM idem.outbox')
		  if $table eq 'outbox';
		$pre{$side}{token} = $table eq 'keys'
		  ? runq($x->{s}, "SELECT token FROM idem.keys WHERE scope = '' AND key = '$arg{key}'")
		  : undef;
		drain($x);
	}

	# The twin first: a crash of the C call must not cost us its result.
	my $s_sql = ref $arg{s} ? $arg{s}->($pre{s}{token}) : $arg{s};
	my $c_sql = ref $arg{c} ? $arg{c}->($pre{c}{token}) : $arg{c};
	$r{s} = run($pair->{s}{s}, $s_sql);
	$r{c} = run($arg{c_session} // $pair->{c}{s}, $c_sql);
	$arg{after_c}->($r{c}) if $arg{after_c};

	for my $side (qw(c s))
	{
		my $x = $pair->{$side};
		note_emitted($x, $arg{label}, $r{$side}{out}) if $table eq 'outbox';
		$post{$side}{changes} = changes($x);
		$post{$side}{fired} = fired_since($x, $pre{$side}{mark});
		$post{$side}{exact} = exact($x, $table);
		$post{$side}{rows} = $table eq 'keys'
		  ? keys_shape($x, $pre{$side}{before}, $arg{key})
		  : outbox_shape($x, $pre{$side}{last_id});
	}

	my $expect = $arg{expect};
	$expect = ($r{c}{state} // '') eq '0A000' ? 'refuse' : 'same'
	  if $expect eq 'either';

	if ($expect eq 'refuse')
	{
		is($r{c}{state} // 'none (it succeeded)', '0A000',
			"$label: refused with 0A000 (feature_not_supported)")
		  or diag("error output: $r{c}{err}");
		like($r{c}{err}, $arg{msg}, "$label: the error names what is not supported")
		  if $arg{msg};
		is($post{c}{exact}, $pre{c}{exact}, "$label: idem.$table unchanged");
		is($post{c}{fired}, '', "$label: no trigger fired");
		is($post{c}{changes}, '', "$label: nothing decoded from the WAL");
	}
	else
	{
		is($r{c}{state} // 'none', $r{s}{state} // 'none',
			"$label: same SQLSTATE as the SQL statement")
		  or diag("C call: $c_sql\n$r{c}{err}\nSQL statement: $s_sql\n$r{s}{err}");
		is($post{c}{rows}, $post{s}{rows},
			"$label: rows of idem.$table as after the SQL statement");
		is($post{c}{fired}, $post{s}{fired},
			"$label: the triggers the SQL statement fires");
		is($post{c}{changes}, $post{s}{changes},
			"$label: decoded changes as the SQL statement's");
	}
	return { state => $r{s}{state}, rows => $post{s}{rows},
		fired => $post{s}{fired}, changes => $post{s}{changes},
		c_state => $r{c}{state} };
}

# ----------------------------------------------------------------------
# The key paths
# ----------------------------------------------------------------------

# Keys every key case starts with, made through the C functions while the
# table is pristine: k_take released (with a recovery point), k_exp
# completed and then expired, k_comp, k_rel (with a recovery point),
# k_ckpt and k_other (recovery point rp1) held.
my $keys_prereq = q{
SELECT (idem.reserve('k_take', '{"req": "take"}', '', '5 minutes', '1 day')).outcome;
SELECT idem.checkpoint('k_take', (SELECT token FROM idem.keys WHERE key = 'k_take'),
                       'rp_take', '{"step": 1}', '', '5 minutes');
SELECT idem.release('k_take', (SELECT token FROM idem.keys WHERE key = 'k_take'));
SELECT (idem.reserve('k_exp', '{"req": "exp"}', '', '5 minutes', '1 day')).outcome;
SELECT idem.complete('k_exp', (SELECT token FROM idem.keys WHERE key = 'k_exp'), '{"old": true}', 200);
SELECT (idem.reserve('k_comp', '{"req": "comp"}', '', '5 minutes', '1 day')).outcome;
SELECT (idem.reserve('k_rel', '{"req": "rel"}', '', '5 minutes', '1 day')).outcome;
SELECT idem.checkpoint('k_rel', (SELECT token FROM idem.keys WHERE key = 'k_rel'),
                       'rp_rel', '{"s": 1}', '', '5 minutes');
SELECT (idem.reserve('k_ckpt', '{"req": "ckpt"}', '', '5 minutes', '1 day')).outcome;
SELECT (idem.reserve('k_other', '{"req": "other"}', '', '5 minutes', '1 day')).outcome;
SELECT idem.checkpoint('k_other', (SELECT token FROM idem.keys WHERE key = 'k_other'),
                       'rp1', NULL, '', '5 minutes');
-- expired (a second before its last change; waiting for it would be slower
-- and leave its shape depending on the time taken)
UPDATE idem.keys SET expires_at = updated_at - interval '1 second' WHERE key = 'k_exp';
};

# Each C path and the statement it stands for, with the same values.  The
# statements compute their time once (clock_timestamp(), as the C code
# reads the wall clock) and match the row the way the C code's
# compare-and-set does.
my @key_actions = (
	{
		label => 'reserve of a new key',
		key => 'k_new',
		c => q{SELECT (idem.reserve('k_new', NULL, '', '5 minutes', '1 day')).outcome},
		s => q{
INSERT INTO idem.keys AS k (scope, key, state, token, fingerprint, locked_until, ttl,
                            created_at, updated_at, expires_at} . lease_col() . first_token_col() . q{)
SELECT '', 'k_new', 'in_progress', nextval('idem.key_token_seq'), NULL,
       n.t + interval '5 minutes', interval '1 day', n.t, n.t,
       n.t + interval '5 minutes' + interval '1 day'} . lease_val('5 minutes') . first_token_val() . q{
  FROM (SELECT clock_timestamp() AS t) AS n
ON CONFLICT (scope, key) DO NOTHING},
	},
	{
		label => 'reserve taking over a released key',
		key => 'k_take',
		c => q{SELECT (idem.reserve('k_take', '{"req": "take"}', '', '6 minutes', '2 days')).outcome},
		s => sub {
			my ($tok) = @_;
			return qq{
UPDATE idem.keys AS k
   SET state = 'in_progress', token = nextval('idem.key_token_seq'),
       locked_until = n.t + interval '6 minutes', ttl = interval '2 days', updated_at = n.t,
       expires_at = n.t + interval '6 minutes' + interval '2 days'@{[ lease_set('6 minutes') ]}
  FROM (SELECT clock_timestamp() AS t) AS n
 WHERE k.scope = '' AND k.key = 'k_take' AND k.token = $tok AND k.expires_at > n.t
   AND (k.state = 'released' OR (k.state = 'in_progress' AND k.locked_until <= n.t))};
		},
	},
	{
		label => 'reserve of an expired key',
		key => 'k_exp',
		c => q{SELECT (idem.reserve('k_exp', '{"req": "exp2"}', '', '5 minutes', '1 day')).outcome},
		s => sub {
			my ($tok) = @_;
			return qq{
UPDATE idem.keys AS k
   SET state = 'in_progress', token = nextval('idem.key_token_seq'),
       fingerprint = idem.fingerprint('{"req": "exp2"}'),
       locked_until = n.t + interval '5 minutes', ttl = interval '1 day',
       response = NULL, status = NULL, recovery_point = NULL, checkpoint = NULL,
       created_at = n.t, updated_at = n.t,
       expires_at = n.t + interval '5 minutes' + interval '1 day'@{[ lease_set('5 minutes') ]}@{[ first_token_set() ]}
  FROM (SELECT clock_timestamp() AS t) AS n
 WHERE k.scope = '' AND k.key = 'k_exp' AND k.token = $tok AND k.expires_at <= n.t};
		},
	},
	{
		label => 'complete',
		key => 'k_comp',
		c => sub { "SELECT idem.complete('k_comp', $_[0], '{\"resp\": 1}', 201)" },
		s => sub {
			my ($tok) = @_;
			return qq{
UPDATE idem.keys AS k
   SET state = 'completed', response = '{"resp": 1}', status = 201, locked_until = NULL,
       recovery_point = NULL, checkpoint = NULL, updated_at = n.t, expires_at = n.t + k.ttl
  FROM (SELECT clock_timestamp() AS t) AS n
 WHERE k.scope = '' AND k.key = 'k_comp' AND k.token = $tok AND k.state = 'in_progress'
   AND k.expires_at > n.t};
		},
	},
	{
		label => 'release',
		key => 'k_rel',
		c => sub { "SELECT idem.release('k_rel', $_[0])" },
		s => sub {
			my ($tok) = @_;
			return qq{
UPDATE idem.keys AS k
   SET state = 'released', locked_until = NULL, updated_at = n.t, expires_at = n.t + k.ttl
  FROM (SELECT clock_timestamp() AS t) AS n
 WHERE k.scope = '' AND k.key = 'k_rel' AND k.token = $tok AND k.state = 'in_progress'
   AND k.expires_at > n.t};
		},
	},
	{
		label => 'checkpoint',
		key => 'k_ckpt',
		c => sub { "SELECT idem.checkpoint('k_ckpt', $_[0], 'RP1', '{\"s\": 2}', '', '7 minutes')" },
		s => sub {
			my ($tok) = @_;
			return qq{
UPDATE idem.keys AS k
   SET recovery_point = 'RP1', checkpoint = '{"s": 2}', locked_until = n.t + interval '7 minutes',
       updated_at = n.t, expires_at = n.t + interval '7 minutes' + k.ttl@{[ lease_set('7 minutes') ]}
  FROM (SELECT clock_timestamp() AS t) AS n
 WHERE k.scope = '' AND k.key = 'k_ckpt' AND k.token = $tok AND k.state = 'in_progress'
   AND k.expires_at > n.t};
		},
	},
);
my %key_action = map { $_->{label} => $_ } @key_actions;

# A new key with a request, for the stale-cache case where the fingerprint
# column moved (with a NULL request, nothing would be written to it).
$key_action{'reserve of a new key with a request'} = {
	label => 'reserve of a new key with a request',
	key => 'k_new',
	c => q{SELECT (idem.reserve('k_new', '{"req": "new"}', '', '5 minutes', '1 day')).outcome},
	s => q{
INSERT INTO idem.keys AS k (scope, key, state, token, fingerprint, locked_until, ttl,
                            created_at, updated_at, expires_at} . lease_col() . first_token_col() . q{)
SELECT '', 'k_new', 'in_progress', nextval('idem.key_token_seq'), idem.fingerprint('{"req": "new"}'),
       n.t + interval '5 minutes', interval '1 day', n.t, n.t,
       n.t + interval '5 minutes' + interval '1 day'} . lease_val('5 minutes') . first_token_val() . q{
  FROM (SELECT clock_timestamp() AS t) AS n
ON CONFLICT (scope, key) DO NOTHING},
};

# Run every key path on a pair; returns label => what the SQL side gave.
sub key_paths
{
	my ($pair, $expect, $msg) = @_;
	my %res;
	for my $act (@key_actions)
	{
		$res{ $act->{label} } = step(
			pair => $pair,
			table => 'keys',
			label => $act->{label},
			key => $act->{key},
			c => $act->{c},
			s => $act->{s},
			expect => $expect,
			msg => $msg);
	}
	return \%res;
}

# ----------------------------------------------------------------------
# The emit path: emit() and INSERT INTO idem.outbox (topic, key, payload,
# headers) VALUES (...) RETURNING id, each returning its transaction's
# now() and xid beside the id.  Each event is its own transaction; the last
# step writes two events with the same topic and key in one transaction.
# ----------------------------------------------------------------------
my @emits = (
	{ label => 'emit with key and headers', ev => [ [ q{'t.ok'}, q{'{"n": 1}'}, q{'k1'}, q{'{"h": "v"}'} ] ] },
	{ label => 'emit without key and headers', ev => [ [ q{'t.ok'}, q{'{"n": 2}'}, 'NULL', 'NULL' ] ] },
	{ label => 'emit of topic forbidden', ev => [ [ q{'forbidden'}, q{'{"n": 3}'}, q{'k3'}, 'NULL' ] ] },
	{ label => 'emit of key K1', ev => [ [ q{'t.ok'}, q{'{"n": 4}'}, q{'K1'}, 'NULL' ] ] },
	{
		label => 'two emits of one topic and key in one transaction',
		ev => [ [ q{'t.dup'}, q{'{"n": 5}'}, q{'d'}, 'NULL' ], [ q{'t.dup'}, q{'{"n": 6}'}, q{'d'}, 'NULL' ] ]
	},
	# The ring (idem.outbox is partitioned by (id / 65536) % 8): ids of the
	# next run go to leaf 1, of the run after the first lap back to leaf 0
	# and of the second lap's third run to leaf 3.
	{
		label => 'emit in leaf 1 (the next run of ids)',
		pre => q{SELECT setval('idem.outbox_id_seq', 65535) > 0 AS moved;},
		ev => [ [ q{'t.ok'}, q{'{"n": 7}'}, q{'k7'}, 'NULL' ] ]
	},
	{
		label => 'emits across two runs in one transaction (leaf 1, then 2)',
		pre => q{SELECT setval('idem.outbox_id_seq', 2 * 65536 - 2) > 0 AS moved;},
		ev => [ [ q{'t.ok'}, q{'{"n": 8}'}, q{'k8'}, 'NULL' ], [ q{'t.ok'}, q{'{"n": 9}'}, q{'k9'}, 'NULL' ] ]
	},
	{
		label => 'emit in leaf 0 of the second lap',
		pre => q{SELECT setval('idem.outbox_id_seq', 8 * 65536 + 5) > 0 AS moved;},
		ev => [ [ q{'t.ok'}, q{'{"n": 10}'}, q{'k10'}, 'NULL' ] ]
	},
	{
		label => 'emit in leaf 3 of the second lap',
		pre => q{SELECT setval('idem.outbox_id_seq', 11 * 65536 + 5) > 0 AS moved;},
		ev => [ [ q{'t.ok'}, q{'{"n": 11}'}, q{'k11'}, 'NULL' ] ]
	},
);

sub emit_sql
{
	my ($ev, $pre) = @_;
	return "BEGIN;\n" . ($pre // '')
	  . join('', map {
			"SELECT idem.emit($_->[0], $_->[1], $_->[2], $_->[3]), now(), pg_current_xact_id();\n"
		} @$ev)
	  . "COMMIT;";
}

sub insert_sql
{
	my ($ev, $role, $pre) = @_;
	return "BEGIN;\n" . ($pre // '')
	  . ($role ? "SET LOCAL ROLE $role;\n" : '')
	  . join('', map {
			"INSERT INTO idem.outbox (topic, key, payload, headers) VALUES ($_->[0], $_->[2], $_->[1], $_->[3])"
			  . " RETURNING id, now(), pg_current_xact_id();\n"
		} @$ev)
	  . "COMMIT;";
}

sub emit_paths
{
	my ($pair, %opt) = @_;
	my %res;
	for my $e (@emits)
	{
		$res{ $e->{label} } = step(
			pair => $pair,
			table => 'outbox',
			label => $e->{label},
			c => emit_sql($e->{ev}, $e->{pre}),
			s => insert_sql($e->{ev}, $opt{as_owner}, $e->{pre}),
			expect => 'same');
	}
	return \%res;
}

# ----------------------------------------------------------------------
# Pristine tables
# ----------------------------------------------------------------------
{
	my $pair = new_pair('pristine');
	both($pair, $keys_prereq);
	my $k = key_paths($pair, 'same');
	# the statements really did what they stand for (else "same" is cheap)
	is(join(',', map { $k->{ $_->{label} }{state} // 'ok' } @key_actions),
		'ok,ok,ok,ok,ok,ok', 'pristine: sanity: every SQL statement succeeded');
	like($k->{complete}{changes}, qr/^table idem\.keys: UPDATE: .*'completed'/m,
		'pristine: sanity: the SQL complete decodes as an UPDATE to completed');
	emit_paths($pair);
	end_pair($pair);
}

# ----------------------------------------------------------------------
# idem.keys altered: the key functions refuse, change nothing
# ----------------------------------------------------------------------
my @key_alterations = (
	{
		name => 'keys_extra_not_null_default',
		alter => q{ALTER TABLE idem.keys ADD COLUMN tenant text NOT NULL DEFAULT 'acme'},
		msg => qr/tenant/,
		sanity => sub {
			like($_[0]{'reserve of a new key'}{rows}, qr/"tenant": "acme"/,
				'keys_extra_not_null_default: sanity: the INSERT fills the default');
		},
	},
	{
		# A nullable column without default: the statement leaves it NULL,
		# as a direct write would, so working (identically) is allowed too.
		name => 'keys_extra_nullable',
		alter => q{ALTER TABLE idem.keys ADD COLUMN note text},
		expect => 'either',
	},
	{
		name => 'keys_check',
		alter => q{ALTER TABLE idem.keys ADD CONSTRAINT keys_status_ck CHECK (status IS DISTINCT FROM 201)},
		msg => qr/keys_status_ck/,
		sanity => sub {
			is($_[0]{complete}{state}, '23514', 'keys_check: sanity: the UPDATE violates the CHECK');
		},
	},
	{
		name => 'keys_trigger',
		alter => q{
CREATE TRIGGER keys_audit_row BEFORE INSERT OR UPDATE ON idem.keys
  FOR EACH ROW EXECUTE FUNCTION public.log_fire();
CREATE TRIGGER keys_audit_after AFTER INSERT OR UPDATE ON idem.keys
  FOR EACH ROW EXECUTE FUNCTION public.log_fire();
CREATE TRIGGER keys_audit_stmt BEFORE INSERT OR UPDATE ON idem.keys
  FOR EACH STATEMENT EXECUTE FUNCTION public.log_fire();},
		msg => qr/keys_audit_(row|after|stmt)/,
		sanity => sub {
			like($_[0]{release}{fired}, qr/keys_audit_row BEFORE ROW UPDATE/,
				'keys_trigger: sanity: the UPDATE fires the triggers');
		},
	},
	{
		name => 'keys_row_security',
		alter => q{ALTER TABLE idem.keys ENABLE ROW LEVEL SECURITY},
		msg => qr/row.level security|row security/i,
	},
	{
		name => 'keys_changed_default',
		alter => q{ALTER TABLE idem.keys ALTER COLUMN status SET DEFAULT 0},
		msg => qr/status/,
		sanity => sub {
			like($_[0]{'reserve of a new key'}{rows}, qr/"status": 0/,
				'keys_changed_default: sanity: the INSERT fills the default');
		},
	},
	{
		name => 'keys_deferrable_unique',
		alter => q{ALTER TABLE idem.keys ADD CONSTRAINT keys_token_uq UNIQUE (token) DEFERRABLE INITIALLY DEFERRED},
	},
	{
		name => 'keys_not_null',
		alter => q{ALTER TABLE idem.keys ALTER COLUMN fingerprint SET NOT NULL},
		msg => qr/fingerprint/,
		sanity => sub {
			is($_[0]{'reserve of a new key'}{state}, '23502',
				'keys_not_null: sanity: the INSERT of a NULL request violates NOT NULL');
		},
	},
);

for my $alt (@key_alterations)
{
	my $pair = new_pair($alt->{name});
	both($pair, $keys_prereq);
	both($pair, $alt->{alter});
	my $res = key_paths($pair, $alt->{expect} // 'refuse', $alt->{msg});
	$alt->{sanity}->($res) if $alt->{sanity};
	end_pair($pair);
}

# ----------------------------------------------------------------------
# idem.keys and idem.outbox published: replica identity
# ----------------------------------------------------------------------
{
	# NOTHING: an UPDATE of a table published for updates fails with 55000
	# (CheckCmdReplicaIdentity); an INSERT (a new key, an event) needs no
	# replica identity.
	my $pair = new_pair('replica_identity_nothing');
	both($pair, $keys_prereq);
	both($pair, q{
CREATE PUBLICATION idem_pub FOR TABLE idem.keys, idem.outbox;
ALTER TABLE idem.keys REPLICA IDENTITY NOTHING;
ALTER TABLE idem.outbox REPLICA IDENTITY NOTHING;});
	my $k = key_paths($pair, 'same');
	is(join(',', map { $k->{ $_->{label} }{state} // 'ok' } @key_actions),
		'ok,55000,55000,55000,55000,55000',
		'replica_identity_nothing: sanity: every UPDATE fails with 55000, the INSERT works');
	emit_paths($pair);
	end_pair($pair);

	# FULL: the UPDATE logs the whole old row.
	$pair = new_pair('replica_identity_full');
	both($pair, $keys_prereq);
	both($pair, q{
CREATE PUBLICATION idem_pub FOR TABLE idem.keys;
ALTER TABLE idem.keys REPLICA IDENTITY FULL;});
	$k = key_paths($pair, 'same');
	like($k->{complete}{changes}, qr/UPDATE: old-key: .*new-tuple:/,
		'replica_identity_full: sanity: the UPDATE decodes with the old row');
	end_pair($pair);
}

# ----------------------------------------------------------------------
# A unique expression index added to idem.keys: indexes need no exception,
# the index routine checks it as for the statement.
# ----------------------------------------------------------------------
{
	my $pair = new_pair('keys_unique_expression_index');
	both($pair, $keys_prereq);
	both($pair, q{CREATE UNIQUE INDEX keys_rp_lower_uq ON idem.keys (lower(recovery_point))});
	my $k = key_paths($pair, 'same');
	is($k->{checkpoint}{state}, '23505',
		'keys_unique_expression_index: sanity: the UPDATE to RP1 violates the index (rp1 exists)');
	end_pair($pair);
}

# ----------------------------------------------------------------------
# idem.outbox altered: emit() gives what the INSERT gives
# ----------------------------------------------------------------------
my @outbox_alterations = (
	{
		name => 'outbox_extra_not_null_default',
		alter => q{ALTER TABLE idem.outbox ADD COLUMN tenant text NOT NULL DEFAULT 'acme'},
		sanity => sub {
			like($_[0]{'emit with key and headers'}{rows}, qr/"tenant": "acme"/,
				'outbox_extra_not_null_default: sanity: the INSERT fills the default');
		},
	},
	{
		name => 'outbox_extra_nullable',
		alter => q{ALTER TABLE idem.outbox ADD COLUMN note text},
	},
	{
		name => 'outbox_check',
		alter => q{ALTER TABLE idem.outbox ADD CONSTRAINT outbox_topic_ck CHECK (topic <> 'forbidden')},
		sanity => sub {
			is($_[0]{'emit of topic forbidden'}{state}, '23514',
				'outbox_check: sanity: the INSERT violates the CHECK');
		},
	},
	{
		name => 'outbox_trigger',
		alter => q{
CREATE TRIGGER outbox_audit_row BEFORE INSERT ON idem.outbox
  FOR EACH ROW EXECUTE FUNCTION public.log_fire();
CREATE TRIGGER outbox_audit_after AFTER INSERT ON idem.outbox
  FOR EACH ROW EXECUTE FUNCTION public.log_fire();
CREATE TRIGGER outbox_audit_stmt BEFORE INSERT ON idem.outbox
  FOR EACH STATEMENT EXECUTE FUNCTION public.log_fire();
CREATE TRIGGER outbox_audit_stmt_after AFTER INSERT ON idem.outbox
  FOR EACH STATEMENT EXECUTE FUNCTION public.log_fire();},
		sanity => sub {
			like($_[0]{'emit with key and headers'}{rows}, qr/"stamped": true/,
				'outbox_trigger: sanity: the INSERT goes through the BEFORE ROW trigger');
		},
	},
	{
		# the owner (a superuser here) bypasses row security that is not forced
		name => 'outbox_row_security',
		alter => q{ALTER TABLE idem.outbox ENABLE ROW LEVEL SECURITY},
	},
	{
		# forced on an owner that is not a superuser: the INSERT, run as the
		# owner, is checked against the policy
		name => 'outbox_row_security_forced',
		alter => q{
GRANT USAGE ON SCHEMA idem TO r_outbox_owner;
ALTER TABLE idem.outbox OWNER TO r_outbox_owner;
ALTER TABLE idem.outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE idem.outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY outbox_ins ON idem.outbox FOR INSERT WITH CHECK (topic <> 'forbidden');
CREATE POLICY outbox_sel ON idem.outbox FOR SELECT USING (true);},
		as_owner => 'r_outbox_owner',
		sanity => sub {
			is($_[0]{'emit of topic forbidden'}{state}, '42501',
				'outbox_row_security_forced: sanity: the INSERT violates the policy');
		},
	},
	{
		name => 'outbox_changed_default',
		alter => q{ALTER TABLE idem.outbox ALTER COLUMN created_at SET DEFAULT '2001-02-03 04:05:06+00'},
		sanity => sub {
			like($_[0]{'emit with key and headers'}{rows}, qr/created_at:2001-02-0/,
				'outbox_changed_default: sanity: the INSERT fills the default');
		},
	},
	{
		name => 'outbox_deferrable_unique',
		# on one leaf (a partitioned table keyed by an expression cannot have
		# a unique constraint): its recheck trigger makes that leaf, and only
		# it, take the executor's path
		alter => q{ALTER TABLE idem.outbox_0 ADD CONSTRAINT outbox_topic_key_uq UNIQUE (topic, key) DEFERRABLE INITIALLY DEFERRED},
		sanity => sub {
			is($_[0]{'two emits of one topic and key in one transaction'}{state}, '23505',
				'outbox_deferrable_unique: sanity: the COMMIT fails the deferred check');
		},
	},
	{
		name => 'outbox_not_null',
		alter => q{ALTER TABLE idem.outbox ALTER COLUMN key SET NOT NULL},
		sanity => sub {
			is($_[0]{'emit without key and headers'}{state}, '23502',
				'outbox_not_null: sanity: the INSERT of a NULL key violates NOT NULL');
		},
	},
	{
		# a trigger on one leaf only: emits into other leaves stay direct
		name => 'outbox_leaf_trigger',
		alter => q{
CREATE TRIGGER leaf_audit_row BEFORE INSERT ON idem.outbox_1
  FOR EACH ROW EXECUTE FUNCTION public.log_fire();},
		sanity => sub {
			like($_[0]{'emit in leaf 1 (the next run of ids)'}{rows}, qr/"stamped": true/,
				'outbox_leaf_trigger: sanity: the INSERT into leaf 1 goes through its trigger');
			unlike($_[0]{'emit with key and headers'}{rows}, qr/"stamped": true/,
				'outbox_leaf_trigger: sanity: the INSERT into leaf 0 does not');
		},
	},
	{
		name => 'outbox_leaf_check',
		alter => q{ALTER TABLE idem.outbox_2 ADD CONSTRAINT leaf_small CHECK ((payload->>'n')::int < 9)},
		sanity => sub {
			is($_[0]{'emits across two runs in one transaction (leaf 1, then 2)'}{state}, '23514',
				'outbox_leaf_check: sanity: the INSERT into leaf 2 violates its CHECK');
		},
	},
	{
		name => 'outbox_leaf_detached',
		alter => q{ALTER TABLE idem.outbox DETACH PARTITION idem.outbox_1},
		sanity => sub {
			is($_[0]{'emit in leaf 1 (the next run of ids)'}{state}, '23514',
				'outbox_leaf_detached: sanity: no partition takes the row');
		},
	},
	{
		# a leaf replaced by a table with the columns in another order
		name => 'outbox_leaf_reordered',
		alter => q{
ALTER TABLE idem.outbox DETACH PARTITION idem.outbox_3;
ALTER TABLE idem.outbox_3 RENAME TO outbox_3_old;
CREATE TABLE idem.outbox_3 (xid xid8 NOT NULL, created_at timestamptz NOT NULL,
  headers jsonb, payload jsonb NOT NULL, key text, topic text NOT NULL, id bigint NOT NULL,
  PRIMARY KEY (id) INCLUDE (xid));
ALTER TABLE idem.outbox ATTACH PARTITION idem.outbox_3 FOR VALUES IN (3);},
		sanity => sub {
			like($_[0]{'emit in leaf 3 of the second lap'}{rows}, qr/in idem\.outbox_3: .*"n": 11/,
				'outbox_leaf_reordered: sanity: the INSERT writes the reordered leaf');
		},
	},
	{
		name => 'outbox_default_partition',
		alter => q{CREATE TABLE idem.outbox_rest PARTITION OF idem.outbox DEFAULT},
	},
	{
		name => 'outbox_unique_expression_index',
		alter => q{CREATE UNIQUE INDEX outbox_lower_key_uq ON idem.outbox_0 (lower(key))},
		sanity => sub {
			is($_[0]{'emit of key K1'}{state}, '23505',
				'outbox_unique_expression_index: sanity: the INSERT of K1 after k1 violates the index');
		},
	},
);

for my $alt (@outbox_alterations)
{
	my $pair = new_pair($alt->{name});
	both($pair, $alt->{alter});
	my $res = emit_paths($pair, as_owner => $alt->{as_owner});
	$alt->{sanity}->($res) if $alt->{sanity};
	end_pair($pair);
}

# ----------------------------------------------------------------------
# A concurrent ALTER TABLE seen by a session that already used the
# functions (a pooled connection).  Session A warms up (the column map is
# cached), session B alters the table in both twins, A calls again:
#   next -- in a new transaction;
#   open -- in a transaction A began before the ALTER committed, so the
#           invalidation arrives only when the call locks the table.  The
#           warm-up call has the same shape as the call (same functions and
#           argument types): parsing the call then finds everything in the
#           backend's caches, and no catalog look-up processes the
#           invalidation earlier.  This is a pooled connection running the
#           same statements over and over.
# The call must not crash the server and must not write a dropped column or
# a value of the column's old type: it works on the new shape (as the
# statement does) or is refused (key functions) -- emit() always gives
# what the INSERT gives.
# ----------------------------------------------------------------------
my @stale = (
	{
		name => 'keys_drop_add_response',
		table => 'keys',
		warm => sub { "SELECT idem.complete('k_other', $_[0], '{\"warm\": 1}', 200)" },
		warm_key => 'k_other',
		alter => q{ALTER TABLE idem.keys DROP COLUMN response, ADD COLUMN response jsonb},
		action => 'complete',
	},
	{
		name => 'keys_drop_add_fingerprint',
		table => 'keys',
		warm => sub { q{SELECT (idem.reserve('k_warm', '{"w": 1}', '', '5 minutes', '1 day')).outcome} },
		alter => q{ALTER TABLE idem.keys DROP COLUMN fingerprint, ADD COLUMN fingerprint bytea},
		action => 'reserve of a new key with a request',
	},
	{
		name => 'keys_status_type',
		table => 'keys',
		warm => sub { "SELECT idem.complete('k_other', $_[0], '{\"warm\": 1}', 200)" },
		warm_key => 'k_other',
		alter => q{ALTER TABLE idem.keys ALTER COLUMN status TYPE text},
		action => 'complete',
	},
	{
		name => 'keys_token_type',
		table => 'keys',
		warm => sub { q{SELECT (idem.reserve('k_warm', NULL, '', '5 minutes', '1 day')).outcome} },
		alter => q{ALTER TABLE idem.keys ALTER COLUMN token TYPE numeric},
		action => 'reserve of a new key',
	},
	{
		name => 'outbox_drop_add_headers',
		table => 'outbox',
		warm => sub { q{SELECT idem.emit('t.warm', '{"n": 0}', 'w', '{"h": "w"}'), now(), pg_current_xact_id()} },
		alter => q{ALTER TABLE idem.outbox DROP COLUMN headers, ADD COLUMN headers jsonb},
		action => 'emit with key and headers',
	},
	{
		name => 'outbox_payload_type',
		table => 'outbox',
		warm => sub { q{SELECT idem.emit('t.warm', '{"n": 0}', 'w', '{"h": "w"}'), now(), pg_current_xact_id()} },
		alter => q{ALTER TABLE idem.outbox ALTER COLUMN payload TYPE text USING payload::text},
		action => 'emit with key and headers',
	},
);
my %emit_by_label = map { $_->{label} => $_ } @emits;

for my $variant (qw(next open))
{
	for my $st (@stale)
	{
		my $name = "stale_${variant}_$st->{name}";
		my $pair = new_pair($name);
		both($pair, $keys_prereq) if $st->{table} eq 'keys';

		# Session A warms up on c; the twin s does the same call.
		my $sa = session($pair->{c}{db});
		for my $side (qw(c s))
		{
			my $s = $side eq 'c' ? $sa : $pair->{s}{s};
			my $tok = $st->{warm_key}
			  ? runq($s, "SELECT token FROM idem.keys WHERE key = '$st->{warm_key}'")
			  : undef;
			runq($s, $st->{warm}->($tok));
		}
		runq($sa, 'BEGIN') if $variant eq 'open';

		# A crash makes the postmaster end every backend and restart (it keeps
		# its pg_postmaster_start_time): a backend connected before the call
		# and still there after it shows there was none, and so does a log
		# without a backend killed by a signal.
		my $sentinel = session('postgres');
		my $sentinel_pid = runq($sentinel, 'SELECT pg_backend_pid()');
		my $logpos = log_offset($node);
		$node->safe_psql($pair->{$_}{db}, $st->{alter}) for qw(c s);

		my %args = (
			pair => $pair,
			table => $st->{table},
			label => "after $st->{alter}: $st->{action}",
			c_session => $sa,
			after_c => sub {
				my ($r) = @_;
				# back to a working server and fresh sessions for the checks
				$node->poll_query_until('postgres', 'SELECT true')
				  or die 'server did not come back';
				reconnect_pair($pair) if $r->{lost};
				is($node->safe_psql('postgres',
						"SELECT count(*) FROM pg_stat_activity WHERE pid = $sentinel_pid"),
					'1', "$name: the server did not restart (a backend from before the call is still there)");
				is(join("\n", log_signal_deaths($node, $logpos)), '',
					"$name: no backend died of a signal");
				ok(!$r->{lost}, "$name: the session survived the call");
			});
		if ($st->{table} eq 'keys')
		{
			my $act = $key_action{ $st->{action} };
			my $c = $act->{c};
			$args{key} = $act->{key};
			$args{c} = $variant eq 'open'
			  ? sub { (ref $c ? $c->(@_) : $c) . ";\nCOMMIT" }
			  : $c;
			$args{s} = $act->{s};
			$args{expect} = 'either';
		}
		else
		{
			my $e = $emit_by_label{ $st->{action} };
			my $c = emit_sql($e->{ev});
			# in the open variant the transaction is already begun
			$c =~ s/^BEGIN;\n// if $variant eq 'open';
			$args{c} = $c;
			$args{s} = insert_sql($e->{ev});
			$args{expect} = 'same';
		}
		step(%args);
		close_session($sa);
		close_session($sentinel);
		end_pair($pair);
	}
}

done_testing();
