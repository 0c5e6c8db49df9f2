# test/t/IdemOutboxChecker.pm — the seeded randomized checker of the
# transactional outbox (SPEC.md section 3), run by test/t/040_outbox_random.pl.
#
# One "iteration" is: a fresh cluster; a plan drawn from a seed (topics,
# emitters, consumers, relays, crash times); forked client processes that
# emit, relay, trim and subscribe concurrently, each appending what it saw to
# a log file; kill -9 of the postmaster at the planned moments; then, with
# every writer stopped, a final drain and the checks.  Everything the clients
# choose comes from the seed (srand in each child from a seed the plan
# drew); the interleavings do not, which is the point.
#
# Ground truth survives crashes and trimming because it is written in the
# same transaction as what it describes:
#   journal  (tag, xid, ids, topics): one row per emitting transaction, in
#            that transaction, listing the ids it kept (savepoints rolled
#            back are left out): "committed" = the row exists afterwards;
#   cjournal (name, start, post, retained, from_start, core): one row per
#            consumer, in its subscribe() transaction: the position
#            subscribe() gave it (read back from idem.consumers), the
#            snapshot and the retained event ids right after subscribe(),
#            and its core topics.
# The clients' logs say what every relay received and what became of each
# finish_batch() (committed, refused, or unknown because of a crash).
package IdemOutboxChecker;

use strict;
use warnings;
use DBI;
use DBD::Pg;
use POSIX ();
use Time::HiRes qw(time usleep);
use Exporter 'import';
use IdemReliability ();

our @EXPORT = qw(make_plan run_iteration);

# Topics t0..t5; emitters draw them with weights that differ per emitter,
# so some topics are rare for everybody and windows often hold nothing of a
# consumer's core topics (what makes next_batch() move to a new window on
# its locked path).
my @TOPICS = map { "t$_" } 0 .. 5;

sub pick { my ($list) = @_; return $list->[ int(rand(@$list)) ]; }
sub chance { my ($p) = @_; return rand() < $p; }
sub between { my ($lo, $hi) = @_; return $lo + rand($hi - $lo); }

# Weighted choice: $w is a hash of item => weight.
sub weighted
{
	my ($w) = @_;
	my $total = 0;
	$total += $w->{$_} for sort keys %$w;
	my $r = rand($total);
	for my $k (sort keys %$w)
	{
		return $k if ($r -= $w->{$k}) < 0;
	}
	return (sort keys %$w)[-1];
}

sub child_seed { return int(rand(2**31)); }

# ---------------------------------------------------------------------------
# The plan: every choice of the iteration that does not depend on timing.
# ---------------------------------------------------------------------------
sub make_plan
{
	my ($seed, $duration) = @_;
	srand($seed);
	my %plan = (seed => $seed, duration => $duration, topics => [@TOPICS]);

	# Emitters: 3 or 4, each with its own topic weights (a shuffled
	# 1/rank law), rollback and late-commit rates.
	my $nemit = 3 + int(rand(2));
	for my $i (0 .. $nemit - 1)
	{
		my @order = map { $_->[1] } sort { $a->[0] <=> $b->[0] }
		  map { [ rand(), $_ ] } @TOPICS;
		my %w;
		$w{ $order[$_] } = 1 / ($_ + 1)**1.5 for 0 .. $#order;
		push @{ $plan{emitters} },
		  {
			name => "e$i",
			weights => \%w,
			p_rollback => between(0.05, 0.2),
			p_late => between(0.03, 0.15),
			late_max => between(0.2, 1.5),
			p_savepoint => between(0.2, 0.5),
			p_bulk => between(0.01, 0.05),
			seed => child_seed(),
		  };
	}

	# Fast emitters: one statement per transaction (emit and journal), in
	# autocommit, a millisecond or a few apart: commits land everywhere,
	# also in the few microseconds between two snapshots of one
	# next_batch() call.
	for my $i (0 .. 1)
	{
		my %w;
		$w{$_} = rand() for @TOPICS;
		push @{ $plan{fast} },
		  { name => "f$i", weights => \%w, gap_us => between(1000, 4000), seed => child_seed() };
	}

	# Consumers: 6 or 7.  The first two exist before any event; the others
	# are created while the workload runs, some from_start, some in a
	# transaction held open for a while (trimming runs meanwhile), some
	# after a false start (a subscribe rolled back).
	my $ncons = 6 + int(rand(2));
	my @consumers;
	for my $i (0 .. $ncons - 1)
	{
		my @shuffled = map { $_->[1] } sort { $a->[0] <=> $b->[0] }
		  map { [ rand(), $_ ] } @TOPICS;
		my $ncore = 1 + int(rand(2));
		my @core = sort @shuffled[ 0 .. $ncore - 1 ];
		my @extra = sort @shuffled[ $ncore .. $#shuffled ];
		my $setup = $i < 2;
		my %c = (
			name => "c$i",
			core => \@core,
			extra => \@extra,
			setup => $setup ? 1 : 0,
			at => $setup ? 0 : between(0.05, 0.6) * $duration,
			from_start => $setup ? 0 : (chance(0.4) ? 1 : 0),
			hold => $setup ? 0 : (chance(0.6) ? between(0.5, 3) : 0),
			false_start => $setup ? 0 : (chance(0.2) ? 1 : 0),
			relays => chance(0.45) ? 2 : 1,
			p_resub => between(0.02, 0.25),
			p_flip => chance(0.5) ? between(0.05, 0.5) : 0,
			p_drop => between(0.05, 0.2),
			p_txn => between(0.05, 0.25),
			p_pause => between(0.002, 0.01),
			# small batches split windows (a window left open between
			# batches is what a re-subscribe can empty); a large one
			# keeps the consumer up with the emitters, so that trimming
			# has something to delete
			max_events => [ (map { pick([ 1, 2, 3, 5, 8, 20 ]) } 1 .. 2),
				pick([ 100, 500, 1000 ]) ],
		);
		$c{filter} = initial_filter(\%c);
		push @consumers, \%c;
	}

	# The shapes the known bugs need must be in every plan: a held
	# subscribe (trimming runs meanwhile), a from_start consumer created
	# mid-run, three consumers with two relays (one relay's finish_batch()
	# or re-subscribe moves the consumer while the other is inside
	# next_batch()), and two consumers that narrow their filter to their
	# core topics right after a full batch (its window likely still open),
	# with batches of one event now and then; one of them has two relays.
	my @mid = grep { !$_->{setup} } @consumers;
	$mid[0]{hold} = between(1, 3) unless $mid[0]{hold};
	$mid[1]{from_start} = 1 unless grep { $_->{from_start} } @mid;
	my @by_chance = map { $_->[1] } sort { $a->[0] <=> $b->[0] } map { [ rand(), $_ ] } @consumers;
	my @two = grep { $_->{relays} == 2 } @by_chance;
	for my $c (grep { $_->{relays} == 1 } @by_chance)
	{
		last if @two >= 3;
		$c->{relays} = 2;
		push @two, $c;
	}
	$_->{p_resub} = between(0.15, 0.3) for grep { $_->{p_resub} < 0.15 } @two[ 0 .. 1 ];
	my @flip = ($two[0], grep { $_->{relays} == 1 } @by_chance);
	for my $c (@flip[ 0 .. 1 ])
	{
		$c->{p_flip} = between(0.5, 1);
		$c->{max_events}[0] = 1;
	}
	$plan{consumers} = \@consumers;

	for my $c (@consumers)
	{
		for my $r (1 .. $c->{relays})
		{
			push @{ $plan{relays} },
			  { consumer => $c->{name}, index => $r, seed => child_seed() };
		}
	}
	# The trimmer also moves the event ids on now and then, by one to nine
	# runs of the outbox ring (65536 ids per run, 8 leaves): events then
	# spread over every leaf, leaves are emptied while others fill, and a
	# jump of 8 runs or more puts a second lap into a leaf.
	$plan{trimmer} = { seed => child_seed(), p_maintain => between(0.1, 0.4),
		p_jump => between(0.005, 0.05) };
	$plan{subscriber} = { seed => child_seed() };

	# Crashes: 0 to 2, at least 6 s apart, between 15% and 85% of the run.
	my $ncrash = weighted({ 0 => 0.2, 1 => 0.5, 2 => 0.3 });
	my @crash;
	for (1 .. $ncrash)
	{
		my $t = between(0.15, 0.85) * $duration;
		push @crash, $t unless grep { abs($_ - $t) < 6 } @crash;
	}
	$plan{crashes} = [ sort { $a <=> $b } @crash ];
	return \%plan;
}

# A topic filter for a consumer: its core topics plus some extras, or NULL
# (every topic) now and then.  The core topics are in every filter the
# consumer ever has, so "every committed event of a core topic" is owed
# whatever the re-subscribes did.
sub initial_filter
{
	my ($c) = @_;
	return undef if chance(0.12);
	return [ sort(@{ $c->{core} }, grep { chance(0.5) } @{ $c->{extra} }) ];
}

sub filter_text
{
	my ($f) = @_;
	return defined $f ? join(',', @$f) : 'NULL';
}

# ---------------------------------------------------------------------------
# Client side: connection handling and logging.
# ---------------------------------------------------------------------------

# A client: its DSN, log handle, stop files, and the live connection.
sub client_new
{
	my ($env, $name) = @_;
	open(my $log, '>>', "$env->{dir}/$name.log") or die "$name.log: $!";
	$log->autoflush(1);
	return { env => $env, name => $name, log => $log, dbh => undef, txn => 0 };
}

sub logline
{
	my ($cl, @f) = @_;
	print { $cl->{log} } join("\t", map { defined $_ ? $_ : '' } @f), "\n";
	return;
}

sub stopping
{
	my ($cl, $which) = @_;
	return -e "$cl->{env}{dir}/stop.$which";
}

# Connect, retrying while the server restarts (a crash makes every client
# reconnect).  Returns false if told to stop meanwhile.
sub ensure_connected
{
	my ($cl, $which) = @_;
	return 1 if $cl->{dbh};
	while (1)
	{
		return 0 if stopping($cl, $which) && $which ne 'never';
		my $dbh = DBI->connect($cl->{env}{dsn}, '', '',
			{ AutoCommit => 1, RaiseError => 0, PrintError => 0, PrintWarn => 0 });
		if ($dbh)
		{
			$cl->{dbh} = $dbh;
			return 1;
		}
		usleep(100_000);
	}
}

# Run a statement.  Returns (rows) on success, or (undef, sqlstate,
# message, lost): lost when the connection is gone (a crash), in which case
# the handle is dropped and the outcome of the statement is unknown.
sub run_sql
{
	my ($cl, $sql, @bind) = @_;
	my $dbh = $cl->{dbh};
	my $rows = $dbh->selectall_arrayref($sql, undef, @bind);
	return ($rows) if defined $rows;
	my ($state, $msg) = ($dbh->state, $dbh->errstr // '');
	my $lost = ($dbh->pg_ping <= 0) ? 1 : 0;
	if ($lost)
	{
		$cl->{dbh} = undef;
		logline($cl, 'L', $sql =~ s/\s+/ /gr);
	}
	$msg =~ s/\s+/ /g;
	return (undef, $state, $msg, $lost);
}

# An error nobody expects: logged for the parent, which fails the check.
sub unexpected
{
	my ($cl, $where, $state, $msg) = @_;
	logline($cl, 'E', $where, $state, $msg);
	return;
}

# In a transaction that failed: roll back (unless the connection is gone).
sub rollback
{
	my ($cl) = @_;
	return unless $cl->{dbh};
	my (undef, $state, $msg, $lost) = run_sql($cl, 'ROLLBACK');
	unexpected($cl, 'rollback', $state, $msg) if $state && !$lost;
	return;
}

# ---------------------------------------------------------------------------
# Emitters.
# ---------------------------------------------------------------------------

my $EMIT_SQL =
    q{SELECT idem.emit(u.t, jsonb_build_object('tag', $1::text, 'i', u.i)), u.t }
  . q{FROM unnest($2::text[]) WITH ORDINALITY AS u(t, i)};

# Emit events of the given topics in the current transaction: (ids, topics)
# or undef on error (already logged / connection lost).
sub emit_some
{
	my ($cl, $tag, $topics) = @_;
	my ($rows, $state, $msg, $lost) = run_sql($cl, $EMIT_SQL, $tag, $topics);
	unless ($rows)
	{
		unexpected($cl, 'emit', $state, $msg) unless $lost;
		return;
	}
	return ([ map { $_->[0] } @$rows ], [ map { $_->[1] } @$rows ]);
}

# Commit (or roll back) a transaction; returns 'c', 'r', 'u' (unknown: the
# connection went away during COMMIT) or 'e'.
sub finish_txn
{
	my ($cl, $commit) = @_;
	my ($rows, $state, $msg, $lost) = run_sql($cl, $commit ? 'COMMIT' : 'ROLLBACK');
	return $commit ? 'c' : 'r' if $rows;
	return 'u' if $lost;
	unexpected($cl, $commit ? 'commit' : 'rollback', $state, $msg);
	return 'e';
}

# One emitting transaction: several steps, each a few events at top level
# or inside a savepoint (nested now and then) that is released or rolled
# back; sometimes a bulk of one topic; sometimes held open a while before
# committing, so that its (small) ids commit after larger ones.  The journal
# row, written last, lists only the events that stay.
sub emitter_txn
{
	my ($cl, $e, $n) = @_;
	my $tag = "$e->{name}-$n";
	my (@ids, @topics);
	my $dropped = 0;
	my $ok = 1;
	my $sp = 0;

	my $begin = sub {
		my (undef, $state, $msg, $lost) = run_sql($cl, 'BEGIN');
		unexpected($cl, 'begin', $state, $msg) if $state && !$lost;
		return !$state;
	};
	return unless $begin->();

	# A level of savepoints: returns the ids and topics kept, or undef.
	my $steps;
	$steps = sub {
		my ($depth) = @_;
		my (@kid, @kt);
		for (1 .. 1 + int(rand($depth ? 2 : 4)))
		{
			if ($depth < 2 && chance($e->{p_savepoint}))
			{
				my $name = 's' . ++$sp;
				my (undef, $st, $m, $l) = run_sql($cl, "SAVEPOINT $name");
				if ($st) { unexpected($cl, 'savepoint', $st, $m) unless $l; return; }
				my $inner = $steps->($depth + 1);
				return unless $inner;
				if (chance(0.45))
				{
					(undef, $st, $m, $l) = run_sql($cl, "ROLLBACK TO SAVEPOINT $name");
					if ($st) { unexpected($cl, 'rollback to', $st, $m) unless $l; return; }
					$dropped += @{ $inner->[0] };
				}
				else
				{
					(undef, $st, $m, $l) = run_sql($cl, "RELEASE SAVEPOINT $name");
					if ($st) { unexpected($cl, 'release', $st, $m) unless $l; return; }
					push @kid, @{ $inner->[0] };
					push @kt, @{ $inner->[1] };
				}
			}
			else
			{
				my @want;
				if (chance($e->{p_bulk}))
				{
					my $t = weighted($e->{weights});
					@want = ($t) x (20 + int(rand(150)));
				}
				else
				{
					@want = map { weighted($e->{weights}) } 1 .. 1 + int(rand(3));
				}
				my ($i, $t) = emit_some($cl, $tag, \@want);
				return unless $i;
				push @kid, @$i;
				push @kt, @$t;
			}
		}
		return [ \@kid, \@kt ];
	};
	my $kept = $steps->(0);
	unless ($kept)
	{
		rollback($cl);
		logline($cl, 'T', $tag, 'e', 0, $dropped);
		return;
	}
	@ids = @{ $kept->[0] };
	@topics = @{ $kept->[1] };

	if (chance($e->{p_late}))
	{
		usleep(int(between(0.05, $e->{late_max}) * 1e6));
	}
	my (undef, $state, $msg, $lost) = run_sql($cl,
		'INSERT INTO journal (tag, ids, topics) VALUES ($1, $2::bigint[], $3::text[])',
		$tag, \@ids, \@topics);
	if ($state)
	{
		unexpected($cl, 'journal', $state, $msg) unless $lost;
		rollback($cl);
		logline($cl, 'T', $tag, $lost ? 'u' : 'e', scalar @ids, $dropped);
		return;
	}
	my $outcome = finish_txn($cl, !chance($e->{p_rollback}));
	logline($cl, 'T', $tag, $outcome, scalar @ids, $dropped);
	return;
}

my $FAST_SQL = q{
	INSERT INTO journal (tag, ids, topics)
	SELECT $1, array_agg(s.id ORDER BY s.i), array_agg(s.t ORDER BY s.i)
	  FROM (SELECT idem.emit(u.t, jsonb_build_object('tag', $1::text, 'i', u.i)) AS id, u.t, u.i
	          FROM unnest($2::text[]) WITH ORDINALITY AS u(t, i)) s};

sub run_fast_emitter
{
	my ($env, $e) = @_;
	srand($e->{seed});
	my $cl = client_new($env, $e->{name});
	my $n = 0;
	while (!stopping($cl, 'writers'))
	{
		next unless ensure_connected($cl, 'writers');
		my $tag = "$e->{name}-" . ++$n;
		my @want = map { weighted($e->{weights}) } 1 .. (chance(0.8) ? 1 : 2);
		my ($rows, $state, $msg, $lost) = run_sql($cl, $FAST_SQL, $tag, \@want);
		if ($rows) { logline($cl, 'T', $tag, 'c', scalar @want, 0); }
		elsif ($lost) { logline($cl, 'T', $tag, 'u', scalar @want, 0); }
		else { unexpected($cl, 'fast emit', $state, $msg); }
		usleep(int(rand($e->{gap_us})));
	}
	return;
}

sub run_emitter
{
	my ($env, $e) = @_;
	srand($e->{seed});
	my $cl = client_new($env, $e->{name});
	my $n = 0;
	while (!stopping($cl, 'writers'))
	{
		next unless ensure_connected($cl, 'writers');
		emitter_txn($cl, $e, ++$n);
		usleep(int(rand(3000))) if chance(0.5);
	}
	return;
}

# ---------------------------------------------------------------------------
# Relays.
# ---------------------------------------------------------------------------

my $NEXT_SQL = q{SELECT batch_id, id, topic, payload->>'tag' FROM idem.next_batch($1, $2)};

# Turn next_batch() rows into the fields of a B line.
sub batch_fields
{
	my ($rows) = @_;
	return (
		$rows->[0][0],
		join(',', map { $_->[1] } @$rows),
		join(',', map { $_->[2] } @$rows),
		join(',', map { $_->[3] // '' } @$rows));
}

# Re-subscribe; logs an S line.  Returns false if the connection is gone.
sub resubscribe
{
	my ($cl, $c, $f) = @_;
	my ($rows, $state, $msg, $lost) =
	  run_sql($cl, 'SELECT idem.subscribe($1, $2::text[])', $c->{name}, $f);
	logline($cl, 'S', $c->{name}, filter_text($f), $rows ? 'ok' : $lost ? 'u' : "e:$state");
	unexpected($cl, 'subscribe', $state, $msg) if $state && !$lost;
	return !$lost;
}

# A relay of one consumer: a loop of next_batch() / finish_batch(), in
# autocommit mostly, sometimes in a transaction that also emits follow-up
# events (and may roll back).  Now and then it re-subscribes with another
# filter (always including the core topics), drops a batch (asks again
# without finishing: it must get the same batch while it is the only
# relay), or pauses (windows grow).  A relay that "flips" narrows its
# filter to the core topics right after finishing a full batch (whose window
# likely goes on), asks for the next batch, and widens the filter again:
# the window's remaining events may then all be of dropped topics, and
# next_batch() moves to a new window on its locked path.
sub run_relay
{
	my ($env, $plan, $r) = @_;
	srand($r->{seed});
	my ($c) = grep { $_->{name} eq $r->{consumer} } @{ $plan->{consumers} };
	my $name = "relay-$c->{name}-$r->{index}";
	my $cl = client_new($env, $name);
	my $sole = $c->{relays} == 1 ? 1 : 0;
	my $exists = 0;    # seen the consumer once: re-subscribing is safe
	my $pending_drop;  # a batch this relay left unfinished on purpose
	my $narrow = 0;    # narrow the filter before the next call
	my $flipped = 0;   # the filter is narrowed: widen it after the call
	my $nfollow = 0;

	while (!stopping($cl, 'all'))
	{
		unless ($cl->{dbh})
		{
			$pending_drop = undef;
			$narrow = 0;
			next unless ensure_connected($cl, 'all');
		}
		if ($flipped)
		{
			# widen the filter again after the narrowed call
			$flipped = 0;
			next unless resubscribe($cl, $c, chance(0.5) ? undef : [ @{ $plan->{topics} } ]);
		}
		elsif ($narrow)
		{
			$narrow = 0;
			next unless resubscribe($cl, $c, [ @{ $c->{core} } ]);
			$flipped = 1;
		}
		else
		{
			usleep(int(between(0.2, 0.8) * 1e6)) if chance($c->{p_pause});
			if ($exists && chance($c->{p_resub}))
			{
				next unless resubscribe($cl, $c, initial_filter($c));
			}
		}

		my $max = pick($c->{max_events});
		my $ctx = ++$cl->{txn};
		if (!chance($c->{p_txn}))
		{
			# autocommit relay
			my ($rows, $state, $msg, $lost) = run_sql($cl, $NEXT_SQL, $c->{name}, $max);
			unless ($rows)
			{
				if ($state eq 'ID020' && !$exists) { usleep(20_000); }
				elsif (!$lost) { unexpected($cl, 'next_batch', $state, $msg); }
				next;
			}
			$exists = 1;
			if (defined $pending_drop)
			{
				logline($cl, 'D', $c->{name}, $pending_drop,
					@$rows ? $rows->[0][0] : '', $sole);
				$pending_drop = undef;
			}
			unless (@$rows)
			{
				usleep(int(rand(15_000)));
				next;
			}
			my ($bid, @f) = batch_fields($rows);
			logline($cl, 'B', $c->{name}, $bid, 'c', "a$ctx", @f);
			if (chance($c->{p_drop}))
			{
				if (chance(0.5))
				{
					# leave it unfinished; the next call must return it
					$pending_drop = $bid;
					next;
				}
				my ($again, $st2, $m2, $l2) =
				  run_sql($cl, $NEXT_SQL, $c->{name}, pick($c->{max_events}));
				unless ($again)
				{
					unexpected($cl, 'next_batch again', $st2, $m2) unless $l2;
					next;
				}
				logline($cl, 'D', $c->{name}, $bid, @$again ? $again->[0][0] : '', $sole);
				if (@$again)
				{
					my ($bid2, @f2) = batch_fields($again);
					logline($cl, 'B', $c->{name}, $bid2, 'c', "a$ctx", @f2);
					$bid = $bid2;
				}
				else
				{
					next;
				}
			}
			usleep(int(rand(5000))) if chance(0.3);
			my ($fin, $st3, $m3, $l3) =
			  run_sql($cl, 'SELECT idem.finish_batch($1, $2)', $c->{name}, $bid);
			if ($fin)
			{
				logline($cl, 'F', $c->{name}, $bid, 'ok', "a$ctx");
				$narrow = 1 if $fin->[0][0] == $max && chance($c->{p_flip});
			}
			elsif ($l3) { logline($cl, 'F', $c->{name}, $bid, 'u', "a$ctx"); }
			else
			{
				logline($cl, 'F', $c->{name}, $bid, "e:$st3", "a$ctx");
				# another relay of the same consumer may have finished it
				unexpected($cl, 'finish_batch', $st3, $m3)
				  unless $st3 eq 'ID021' && !$sole;
			}
			next;
		}

		# A relay transaction: next_batch (perhaps twice), finish, and
		# follow-up events emitted before or after, journaled; committed
		# or rolled back.  Its B and F lines are written once the outcome
		# is known.
		$pending_drop = undef;
		my (@blines, @flines, @ids, @topics);
		my $tag = "$name-" . ++$nfollow;
		my $failed = 0;
		my $step = sub {
			my ($sql, @bind) = @_;
			return if $failed;
			my ($rows, $state, $msg, $lost) = run_sql($cl, $sql, @bind);
			return $rows if $rows;
			$failed = $lost ? 'u' : 'e';
			unless ($lost || ($state eq 'ID020' && !$exists))
			{
				unexpected($cl, "txn: $sql", $state, $msg);
			}
			return;
		};
		my $follow = sub {
			my @want = map { pick($plan->{topics}) } 1 .. 1 + int(rand(2));
			my $rows = $step->($EMIT_SQL, $tag, \@want);
			return unless $rows;
			push @ids, map { $_->[0] } @$rows;
			push @topics, map { $_->[1] } @$rows;
		};
		$step->('BEGIN');
		my $emit_first = chance(0.5);
		$follow->() if $emit_first;
		my $rows = $step->($NEXT_SQL, $c->{name}, $max);
		$exists = 1 if $rows;
		my $bid;
		if ($rows && @$rows)
		{
			my ($b, @f) = batch_fields($rows);
			$bid = $b;
			push @blines, [ $c->{name}, $b, "x$ctx", @f ];
			if (chance($c->{p_drop}))
			{
				my $again = $step->($NEXT_SQL, $c->{name}, pick($c->{max_events}));
				if ($again)
				{
					my ($b2, @f2) = batch_fields($again);
					push @blines, [ $c->{name}, $b2, "x$ctx", @f2 ] if @$again;
					# in its own transaction the relay holds the row lock
					logline($cl, 'D', $c->{name}, $b, @$again ? $b2 : '', 1);
				}
			}
			push @flines, [ $c->{name}, $bid, "x$ctx" ]
			  if $step->('SELECT idem.finish_batch($1, $2)', $c->{name}, $bid);
		}
		$follow->() if !$emit_first && chance(0.7);
		$step->('INSERT INTO journal (tag, ids, topics) VALUES ($1, $2::bigint[], $3::text[])',
			$tag, \@ids, \@topics)
		  if @ids;
		my $outcome;
		if ($failed eq 'u') { $outcome = 'u'; }
		elsif ($failed) { rollback($cl); $outcome = 'r'; }
		else { $outcome = finish_txn($cl, !chance(0.15)); }
		$outcome = 'r' if $outcome eq 'e';
		logline($cl, 'B', $_->[0], $_->[1], $outcome, @$_[ 2 .. $#$_ ]) for @blines;
		logline($cl, 'F', $_->[0], $_->[1], $outcome eq 'c' ? 'ok' : $outcome, $_->[2])
		  for @flines;
		logline($cl, 'T', $tag, $outcome, scalar @ids, 0) if @ids;
		usleep(20_000) if $failed && !$exists;
	}
	return;
}

# ---------------------------------------------------------------------------
# Trimmer and subscriber.
# ---------------------------------------------------------------------------

# Trimming in a loop, by both entry points, concurrently with everything.
sub run_trimmer
{
	my ($env, $t) = @_;
	srand($t->{seed});
	my $cl = client_new($env, 'trimmer');
	while (!stopping($cl, 'all'))
	{
		next unless ensure_connected($cl, 'all');
		my ($sql, @bind) =
		  chance($t->{p_maintain})
		  ? (q{SELECT coalesce(sum(rows), 0)::bigint FROM idem.maintain()})
		  : (q{SELECT idem.trim_outbox($1)}, 1 + int(rand(3000)));
		my ($rows, $state, $msg, $lost) = run_sql($cl, $sql, @bind);
		if ($rows) { logline($cl, 'M', 'trimmed', $rows->[0][0]); }
		elsif (!$lost) { unexpected($cl, 'trim', $state, $msg); }
		if (chance($t->{p_jump} // 0))
		{
			# ahead of every id drawn meanwhile: a whole run or more
			($rows, $state, $msg, $lost) = run_sql($cl,
				q{SELECT setval('idem.outbox_id_seq',
				   (s.last_value / 65536 + $1) * 65536 + $2) FROM idem.outbox_id_seq s},
				1 + int(rand(9)), int(rand(65536)));
			unexpected($cl, 'jump', $state, $msg) if !$rows && !$lost;
		}
		usleep(int(rand(30_000)));
	}
	return;
}

# Create a consumer and journal its starting position in one transaction,
# optionally held open for $hold seconds before the commit.  Returns 'c',
# 'u' (crash: look at cjournal to know) or 'e'.
sub create_consumer
{
	my ($cl, $c, $hold, $commit) = @_;
	for my $stmt (
		[ 'BEGIN' ],
		[ 'SELECT idem.subscribe($1, $2::text[], $3)', $c->{name}, $c->{filter},
			$c->{from_start} ? 'true' : 'false' ],
		# the position subscribe() gave, and what was visible and retained
		# just after it: the same statement snapshot for both
		[ q{INSERT INTO cjournal (name, start, post, retained, from_start, core)
		    SELECT c.name, c.snapshot, pg_current_snapshot(),
		           coalesce((SELECT array_agg(o.id) FROM idem.outbox o), '{}'),
		           $2, $3::text[]
		      FROM idem.consumers c WHERE c.name = $1},
			$c->{name}, $c->{from_start} ? 'true' : 'false', $c->{core} ])
	{
		my ($rows, $state, $msg, $lost) = run_sql($cl, @$stmt);
		next if $rows;
		return 'u' if $lost;
		unexpected($cl, 'create consumer', $state, $msg);
		rollback($cl);
		return 'e';
	}
	usleep(int($hold * 1e6)) if $hold > 0;
	return finish_txn($cl, $commit);
}

# Does the consumer's journal row exist (its creation committed)?
sub consumer_journaled
{
	my ($cl, $name) = @_;
	my ($rows) = run_sql($cl, 'SELECT count(*) FROM cjournal WHERE name = $1', $name);
	return undef unless $rows;
	return $rows->[0][0] > 0;
}

# A snapshot taken now, as text: taken once a consumer's creation has
# committed, it tells the events committed before that from those after
# (to name, when an owed event is missing, which bug could have lost it).
sub now_snapshot
{
	my ($cl) = @_;
	while (1)
	{
		ensure_connected($cl, 'never');
		my ($rows) = run_sql($cl, 'SELECT pg_current_snapshot()::text');
		return $rows->[0][0] if $rows;
	}
}

# Creates the mid-run consumers at their planned times; after a crash it
# looks whether the creation committed and otherwise does it again.  When
# told to stop it creates what is left at once (no hold), so that every
# planned consumer exists at the end.
sub run_subscriber
{
	my ($env, $plan) = @_;
	srand($plan->{subscriber}{seed});
	my $cl = client_new($env, 'subscriber');
	my @pending_consumers = sort { $a->{at} <=> $b->{at} } grep { !$_->{setup} } @{ $plan->{consumers} };
	my $t0 = $env->{t0};
	for my $c (@pending_consumers)
	{
		my $false_start = $c->{false_start};
		while (1)
		{
			my $stop = stopping($cl, 'writers');
			while (!$stop && time < $t0 + $c->{at})
			{
				usleep(50_000);
				$stop = stopping($cl, 'writers');
			}
			ensure_connected($cl, 'never');
			if ($false_start && !$stop)
			{
				my $r = create_consumer($cl, $c, between(0.1, 0.5), 0);
				logline($cl, 'C', $c->{name}, "false:$r");
				$false_start = 0;
				next;
			}
			my $r = create_consumer($cl, $c, $stop ? 0 : $c->{hold}, 1);
			my $how = 'committed';
			if ($r eq 'u')
			{
				# the crash hit the creation: did it commit?
				my $j;
				while (!defined $j)
				{
					ensure_connected($cl, 'never');
					$j = consumer_journaled($cl, $c->{name});
				}
				$r = $j ? 'c' : 'lost';
				$how = 'after a crash';
			}
			logline($cl, 'C', $c->{name}, $r, $r eq 'c' ? now_snapshot($cl) : '', $how);
			last if $r eq 'c';
			usleep(100_000);
		}
	}
	return;
}

# ---------------------------------------------------------------------------
# The iteration: node, children, crashes, drain, checks.
# ---------------------------------------------------------------------------

sub spawn
{
	my ($code) = @_;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		# no END blocks, no destructors: PostgreSQL::Test::Cluster's END
		# would tear the node down from here
		eval { $code->(); 1 } or print STDERR "child died: $@";
		POSIX::_exit(0);
	}
	return $pid;
}

# Wait for children, at most $timeout_s seconds; returns the pids that had
# to be killed.
sub reap
{
	my ($pids, $timeout_s) = @_;
	my %left = map { $_ => 1 } @$pids;
	my $deadline = time + $timeout_s;
	while (%left && time < $deadline)
	{
		for my $p (keys %left)
		{
			delete $left{$p} if waitpid($p, POSIX::WNOHANG()) != 0;
		}
		usleep(50_000) if %left;
	}
	my @killed = sort keys %left;
	for my $p (@killed)
	{
		kill 'KILL', $p;
		waitpid($p, 0);
	}
	return @killed;
}


sub sleep_until
{
	my ($t) = @_;
	my $d = $t - time;
	usleep(int($d * 1e6)) if $d > 0;
	return;
}

sub touch
{
	my ($path) = @_;
	open(my $fh, '>', $path) or die "$path: $!";
	close($fh);
	return;
}

# Run one iteration of the plan against $node.  Returns a hash: checks (a
# list of [name, ok, details]), stats, and the log directory.
sub run_iteration
{
	my ($plan, $node, $dir) = @_;
	mkdir $dir or die "$dir: $!";
	my %env = (
		dir => $dir,
		dsn => 'dbi:Pg:dbname=postgres;host=' . $node->host . ';port=' . $node->port);

	$node->safe_psql('postgres', q{
		CREATE TABLE journal (tag text PRIMARY KEY,
		                      xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
		                      ids bigint[] NOT NULL, topics text[] NOT NULL);
		CREATE TABLE cjournal (name text PRIMARY KEY, start pg_snapshot NOT NULL,
		                       post pg_snapshot NOT NULL, retained bigint[] NOT NULL,
		                       from_start boolean NOT NULL, core text[] NOT NULL);
	});

	# the consumers that exist before any event
	my $parent = client_new(\%env, 'parent');
	ensure_connected($parent, 'never');
	for my $c (grep { $_->{setup} } @{ $plan->{consumers} })
	{
		my $r = create_consumer($parent, $c, 0, 1);
		die "setup consumer $c->{name}: $r" unless $r eq 'c';
		logline($parent, 'C', $c->{name}, $r, now_snapshot($parent), 'committed');
	}
	$parent->{dbh}->disconnect;
	$parent->{dbh} = undef;

	$env{t0} = time;
	my (@writers, @others);
	push @writers, spawn(sub { run_emitter(\%env, $_) }) for @{ $plan->{emitters} };
	push @writers, spawn(sub { run_fast_emitter(\%env, $_) }) for @{ $plan->{fast} };
	push @writers, spawn(sub { run_subscriber(\%env, $plan) });
	push @others, spawn(sub { run_relay(\%env, $plan, $_) }) for @{ $plan->{relays} };
	push @others, spawn(sub { run_trimmer(\%env, $plan->{trimmer}) });

	my @restart_s;
	for my $t (@{ $plan->{crashes} })
	{
		sleep_until($env{t0} + $t);
		push @restart_s, IdemReliability::crash_restart_settled($node);
	}
	sleep_until($env{t0} + $plan->{duration});
	touch("$dir/stop.writers");
	my @killed = reap(\@writers, 60);
	usleep(500_000);
	touch("$dir/stop.all");
	push @killed, reap(\@others, 60);
	my $workload_s = time - $env{t0};

	# Drain every consumer the way a relay does, with nothing else running.
	ensure_connected($parent, 'never');
	my $dbh = $parent->{dbh};
	my $names = $dbh->selectcol_arrayref('SELECT name FROM cjournal ORDER BY name');
	my $drain_batches = 0;
	for my $name (@$names)
	{
		while (1)
		{
			my $rows = $dbh->selectall_arrayref($NEXT_SQL, undef, $name, 1000);
			unless ($rows) { unexpected($parent, 'drain next_batch', $dbh->state, $dbh->errstr); last; }
			last unless @$rows;
			my ($bid, @f) = batch_fields($rows);
			logline($parent, 'B', $name, $bid, 'c', "drain", @f);
			my $fin = $dbh->selectall_arrayref('SELECT idem.finish_batch($1, $2)', undef, $name, $bid);
			unless ($fin) { unexpected($parent, 'drain finish_batch', $dbh->state, $dbh->errstr); last; }
			logline($parent, 'F', $name, $bid, 'ok', 'drain');
			$drain_batches++;
		}
	}
	my $lag = $dbh->selectall_arrayref(
		'SELECT consumer, pending, open_batch_id FROM idem.consumer_lag ORDER BY consumer');

	my $res = analyze($plan, $dir, $dbh, $lag);
	$res->{stats}{crashes} = scalar @restart_s;
	$res->{stats}{restart_s} = join(',', map { sprintf('%.1f', $_) } @restart_s);
	$res->{stats}{workload_s} = sprintf('%.1f', $workload_s);
	$res->{stats}{drain_batches} = $drain_batches;
	push @{ $res->{checks} }, [ 'every client stopped when told', !@killed,
		@killed ? "killed after 60s: @killed" : '' ];
	push @{ $res->{checks} }, [ 'connections were lost only by the crashes',
		!($res->{stats}{lost} && !@restart_s),
		"$res->{stats}{lost} lost connections without a crash" ];

	# With every consumer drained, trimming must be able to delete every
	# event: each was finished by every consumer.
	my $trimmed = 0;
	while (1)
	{
		my $n = $dbh->selectrow_array('SELECT idem.trim_outbox(100000)');
		last unless defined $n && $n > 0;
		$trimmed += $n;
	}
	my $left = $dbh->selectrow_array('SELECT count(*) FROM idem.outbox');
	$res->{stats}{last_id} = $dbh->selectrow_array('SELECT last_value FROM idem.outbox_id_seq');
	push @{ $res->{checks} }, [ '(g) after the drain, trimming empties the outbox',
		defined $left && $left == 0, "$left events left after trimming $trimmed" ];
	$dbh->disconnect;
	$res->{dir} = $dir;
	return $res;
}

# Read every client's log and the journals; run the checks.
sub analyze
{
	my ($plan, $dir, $dbh, $lag) = @_;
	my (@checks, %stats);
	my %cons = map { $_->{name} => $_ } @{ $plan->{consumers} };

	# committed events: id => [tag, topic, xid]
	my %ev;
	my $j = $dbh->selectall_arrayref('SELECT tag, xid::text, ids, topics FROM journal');
	for my $row (@$j)
	{
		my ($tag, $xid, $ids, $topics) = @$row;
		$ev{ $ids->[$_] } = [ $tag, $topics->[$_], $xid ] for 0 .. $#$ids;
		if ($tag =~ /^[ef]\d/) { $stats{txn_committed}++; $stats{events_committed} += @$ids; }
		else { $stats{relay_txn_committed}++; $stats{followups_committed} += @$ids; }
	}
	my %cj;
	for my $row (@{ $dbh->selectall_arrayref(
		'SELECT name, start::text, post::text, retained, from_start, core FROM cjournal') })
	{
		$cj{ $row->[0] } = { start => $row->[1], post => $row->[2],
			retained => { map { $_ => 1 } @{ $row->[3] } },
			from_start => $row->[4], core => { map { $_ => 1 } @{ $row->[5] } } };
	}

	# the logs
	my (%batch, @errors, @order_bad, @drop_bad, %filters, %cstat, %cj_seen);
	my @lines;
	opendir(my $dh, $dir) or die "$dir: $!";
	for my $f (sort grep { /\.log$/ } readdir($dh))
	{
		open(my $fh, '<', "$dir/$f") or die "$f: $!";
		while (my $l = <$fh>)
		{
			chomp $l;
			push @lines, [ $f, split(/\t/, $l, -1) ];
		}
	}
	closedir($dh);
	for my $c (values %cons)
	{
		$filters{ $c->{name} }{ filter_text($c->{filter}) } = 1;
	}
	for my $line (@lines)
	{
		my ($file, $kind, @f) = @$line;
		if ($kind eq 'B')
		{
			my ($c, $bid, $status, $ctx, $ids, $topics, $tags) = @f;
			my @ids = split /,/, $ids;
			my @topics = split /,/, $topics;
			my @tags = split /,/, $tags, -1;
			my $b = $batch{$c}{$bid} //= { ids => $ids, topics => \@topics, tags => \@tags,
				status => {}, fin => {} };
			$b->{status}{$status}++;
			$stats{observations}++;
			push @drop_bad, "$file: batch $bid of $c returned with ids [$ids], before [$b->{ids}]"
			  if $b->{ids} ne $ids;
			for my $i (1 .. $#ids)
			{
				push @order_bad, "$file: batch $bid of $c: ids [$ids] not strictly increasing"
				  if $ids[$i] <= $ids[ $i - 1 ];
			}
		}
		elsif ($kind eq 'F') { my ($c, $bid, $st) = @f; $batch{$c}{$bid}{fin}{$st}++; }
		elsif ($kind eq 'D')
		{
			my ($c, $b1, $b2, $sole) = @f;
			$stats{drops}++;
			push @drop_bad, "$file: $c dropped batch $b1 and then got " . ($b2 eq '' ? 'nothing' : "batch $b2")
			  if $sole && $b2 ne $b1;
		}
		elsif ($kind eq 'S') { $filters{ $f[0] }{ $f[1] } = 1; $stats{resubscribes}++; }
		elsif ($kind eq 'T')
		{
			my ($tag, $st, $n, $dropped) = @f;
			$stats{"txn_$st"}++ if $tag =~ /^[ef]\d/;
			$stats{events_dropped_by_savepoints} += $dropped if $st eq 'c';
		}
		elsif ($kind eq 'E') { push @errors, "$file: @f"; }
		elsif ($kind eq 'L') { $stats{lost}++; }
		elsif ($kind eq 'M') { $stats{trim_calls}++; $stats{trimmed} += $f[1]; }
		elsif ($kind eq 'C')
		{
			$cstat{ $f[0] }{ $f[1] }++;
			$cj_seen{ $f[0] } = [ $f[2], $f[3] ] if $f[1] eq 'c';
		}
	}
	$stats{lost} //= 0;

	push @checks, [ 'no client got an unexpected error', !@errors, join("\n", @errors[ 0 .. min(19, $#errors) ]) ];

	# every planned consumer exists
	my @absent = grep { !$cj{$_} } sort keys %cons;
	push @checks, [ 'every planned consumer was created', !@absent, "not created: @absent" ];

	# (d) and the open batch returned again unchanged
	push @checks, [ '(d) within a batch, ids strictly increase', !@order_bad,
		join("\n", @order_bad[ 0 .. min(9, $#order_bad) ]) ];
	push @checks, [ 'an open batch comes back with the same id and rows', !@drop_bad,
		join("\n", @drop_bad[ 0 .. min(9, $#drop_bad) ]) ];

	# (b): every delivered event is a committed one, of its journaled topic,
	# and of a topic the consumer subscribed to at some point
	my (@phantom, @offtopic);
	for my $c (sort keys %batch)
	{
		my $any = $filters{$c}{NULL};
		my %ok = map { $_ => 1 } map { split /,/ } keys %{ $filters{$c} };
		for my $bid (sort { $a <=> $b } keys %{ $batch{$c} })
		{
			my $b = $batch{$c}{$bid};
			next unless defined $b->{ids};
			my @ids = split /,/, $b->{ids};
			for my $k (0 .. $#ids)
			{
				my $e = $ev{ $ids[$k] };
				if (!$e || $e->[0] ne $b->{tags}[$k] || $e->[1] ne $b->{topics}[$k])
				{
					push @phantom, "$c batch $bid: event $ids[$k] ($b->{topics}[$k], tag $b->{tags}[$k]) "
					  . ($e ? "is journaled as ($e->[1], tag $e->[0])" : 'is in no committed journal row');
				}
				push @offtopic, "$c batch $bid: event $ids[$k] of topic $b->{topics}[$k]"
				  unless $any || $ok{ $b->{topics}[$k] };
			}
		}
	}
	push @checks, [ '(b) no delivered event of a rolled-back transaction or savepoint', !@phantom,
		scalar(@phantom) . " such events:\n" . join("\n", @phantom[ 0 .. min(9, $#phantom) ]) ];
	push @checks, [ 'no delivered event outside every filter the consumer had', !@offtopic,
		join("\n", @offtopic[ 0 .. min(9, $#offtopic) ]) ];

	# (c): finished batches of a consumer are disjoint.  A batch is finished
	# when a finish_batch() of it committed, or when a larger batch of the
	# same consumer was opened after its own opening committed (a consumer
	# has one open batch, closed only by finish_batch()).
	my @twice;
	for my $c (sort keys %batch)
	{
		my @bids = sort { $a <=> $b } grep { defined $batch{$c}{$_}{ids} } keys %{ $batch{$c} };
		my %in;
		for my $i (0 .. $#bids)
		{
			my $b = $batch{$c}{ $bids[$i] };
			my $fin = $b->{fin}{ok} || ($b->{status}{c} && $i < $#bids);
			next unless $fin;
			$stats{batches_finished}++;
			for my $id (split /,/, $b->{ids})
			{
				push @twice, "$c: event $id in finished batches $in{$id} and $bids[$i]"
				  if $in{$id};
				$in{$id} //= $bids[$i];
			}
		}
		$stats{batches} += @bids;
	}
	push @checks, [ '(c) no event in two finished batches of one consumer', !@twice,
		scalar(@twice) . " such events:\n" . join("\n", @twice[ 0 .. min(9, $#twice) ]) ];

	# (a): every owed event was delivered, in a batch whose opening committed
	# (or may have: a relay transaction cut by a crash).  Owed to a consumer:
	# the committed events of its core topics whose transaction its starting
	# position does not see; for from_start, only those retained just after
	# subscribe() or committed after that.
	my %delivered;
	for my $c (keys %batch)
	{
		for my $b (values %{ $batch{$c} })
		{
			next unless defined $b->{ids} && ($b->{status}{c} || $b->{status}{u});
			$delivered{$c}{$_} = 1 for split /,/, $b->{ids};
		}
	}
	my $owed = $dbh->selectall_arrayref(q{
		SELECT c.name, j.ids, j.topics, pg_visible_in_snapshot(j.xid, c.post)
		  FROM cjournal c JOIN journal j ON NOT pg_visible_in_snapshot(j.xid, c.start)});
	my (%missing, %nowed);
	for my $row (@$owed)
	{
		my ($c, $ids, $topics, $in_post) = @$row;
		my $cj = $cj{$c};
		for my $k (0 .. $#$ids)
		{
			next unless $cj->{core}{ $topics->[$k] };
			next if $cj->{from_start} && $in_post && !$cj->{retained}{ $ids->[$k] };
			$nowed{$c}++;
			push @{ $missing{$c} }, $ids->[$k] unless $delivered{$c}{ $ids->[$k] };
		}
	}
	# The missing events, told apart by when they committed: after the
	# consumer's creation had committed (only a delivery that skipped them
	# can lose them), or before, while subscribe() was not visible yet to
	# trimming (trimming could delete them), or, for a creation a crash
	# interrupted, before its recovery was seen.
	my (@lost_after, @lost_before);
	for my $c (sort keys %missing)
	{
		my @ids = sort { $a <=> $b } @{ $missing{$c} };
		my $present = $dbh->selectcol_arrayref(
			'SELECT id FROM idem.outbox WHERE id = ANY($1::bigint[])', undef, \@ids);
		my %present = map { $_ => 1 } @$present;
		my ($snap, $how) = @{ $cj_seen{$c} // [] };
		my %before;
		if ($snap)
		{
			my $b = $dbh->selectcol_arrayref(q{
				SELECT j.id FROM unnest($1::bigint[], $2::xid8[]) AS j(id, xid)
				 WHERE pg_visible_in_snapshot(j.xid, $3::pg_snapshot)},
				undef, \@ids, [ map { $ev{$_}[2] } @ids ], $snap);
			%before = map { $_ => 1 } @$b;
		}
		my $p = $cons{$c};
		my $desc = sprintf('%s (core %s, %s, created %s%s%s%s, %d relay(s), %d owed events)',
			$c, join(',', sort keys %{ $cj{$c}{core} }), $cj{$c}{from_start} ? 'from_start' : 'from now',
			$p->{setup} ? 'at setup' : sprintf('at %.1fs', $p->{at}),
			$p->{hold} ? sprintf(' held %.1fs', $p->{hold}) : '',
			$p->{false_start} ? ' after a false start' : '',
			$how && $how ne 'committed' ? " $how" : '',
			$p->{relays}, $nowed{$c});
		for my $when ([ \@lost_after, 0 ], [ \@lost_before, 1 ])
		{
			my ($out, $b) = @$when;
			my @these = grep { ($before{$_} ? 1 : 0) == $b } @ids;
			next unless @these;
			push @$out, sprintf('%s: %d never delivered, %d of them still in idem.outbox',
				$desc, scalar @these, scalar grep { $present{$_} } @these);
			for my $id (@these[ 0 .. min(4, $#these) ])
			{
				my $e = $ev{$id};
				push @$out, "    event $id topic $e->[1] tag $e->[0] xid $e->[2]"
				  . ($present{$id} ? ' (still in idem.outbox)' : ' (deleted)');
			}
		}
	}
	push @checks, [ '(a) every owed event committed after the consumer\'s creation committed was delivered',
		!@lost_after, join("\n", @lost_after) ];
	push @checks, [ '(a) every owed event committed while the consumer\'s subscribe() was in flight was delivered',
		!@lost_before, join("\n", @lost_before) ];
	$stats{owed} += $_ for values %nowed;

	# (e): nothing pending after the drain
	my @pending = map { "$_->[0]: pending $_->[1], open batch " . ($_->[2] // 'none') }
	  grep { $_->[1] != 0 || defined $_->[2] } @$lag;
	push @checks, [ '(e) after the drain, consumer_lag shows nothing pending', !@pending,
		join("\n", @pending) ];

	$stats{consumers} = scalar keys %cj;
	$stats{false_starts} = grep { $_->{'false:r'} } values %cstat;
	return { checks => \@checks, stats => \%stats };
}

sub min { return $_[0] < $_[1] ? $_[0] : $_[1]; }

1;
