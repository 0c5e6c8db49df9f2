# Hostile input: a generated corpus of bad arguments to every public function
# and view of pg_idem — NULL in every position, empty, over-long and 1 MB
# strings, multibyte strings around the 255-byte limit, invalid UTF-8 (both
# where the server refuses it before the call and, in a SQL_ASCII database,
# where it reaches the call), huge and deeply nested jsonb, zero, negative
# and enormous intervals and integers, names with quotes, semicolons and
# backslashes, unknown tables and columns, dropped, renamed and retyped
# version columns, the trigger function misused, privilege and search_path
# attacks.  For every call:
#   - it ends in an allowed SQLSTATE (SPEC.md's, or a standard one the
#     README documents) or in a correct result, checked by a query;
#   - a call that fails changes no row of any idem or test table, no
#     trigger, no privilege (compared by ctid/xmin snapshot before and after);
# and the postmaster never restarts (pg_postmaster_start_time and the log).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IdemTest;
use IdemReliability;

my $node = reliability_node('hostile',
	'idem.maintenance_interval = 0',    # nothing may change data behind our back
	'max_stack_depth = 2MB');

# ----------------------------------------------------------------------
# Values, by kind.  Each is [name, SQL expression, allowed answers]; the
# allowed answers of a value depend on the kind of parameter it is given to
# (see expect()).  'OK' means a correct result; the input-error values
# ('input' => codes) never reach the function: the server refuses them while
# evaluating the argument, which is the documented behaviour.
# ----------------------------------------------------------------------
my %text_values = (
	null => 'NULL::text',
	empty => q{''},
	space => q{' '},
	b255 => q{repeat('k', 255)},
	b256 => q{repeat('k', 256)},
	mb255 => q{repeat('é', 127) || 'k'},        # 128 characters, 255 bytes
	mb256 => q{repeat('é', 128)},               # 128 characters, 256 bytes
	euro85 => q{repeat('€', 85)},               # 85 characters, 255 bytes
	euro86 => q{repeat('€', 86)},               # 86 characters, 258 bytes
	mb1 => q{repeat('x', 1048576)},             # 1 MB
	quotes => q{'a''b"c;d\e--f/*g*/%s%n'},
	inject => q{'x''); DROP TABLE victim; --'},
	backslashes => q{E'\\\\\\\\x\\\\'},
	controls => q{E'\t\n\r\x01\x7f'},
	emoji => q{'🔑🗝'},
	nul => q{E'a\\x00b'},                        # refused: 22021 before the call
	bad_utf8 => q{convert_from('\xc328'::bytea, 'UTF8')},    # refused: 22021
	bad_utf8_2 => q{convert_from('\xeda080'::bytea, 'UTF8')},    # surrogate
);
my @text_order = qw(null empty space b255 b256 mb255 mb256 euro85 euro86 mb1
  quotes inject backslashes controls emoji nul bad_utf8 bad_utf8_2);
my %text_input_error = (nul => ['22021'], bad_utf8 => ['22021'], bad_utf8_2 => ['22021']);
my %text_long = map { $_ => 1 } qw(b256 mb256 euro86 mb1);

# Allowed answers for a text value given to a parameter of a kind.
sub expect_text
{
	my ($kind, $v) = @_;
	return $text_input_error{$v} if $text_input_error{$v};
	if ($kind eq 'key')    # SPEC 1: 1..255 bytes, NULL 22004, too long 22001
	{
		return ['22004'] if $v eq 'null';
		return [ '22023', '22001' ] if $v eq 'empty';
		return ['22001'] if $text_long{$v};
		return ['OK'];
	}
	if ($kind eq 'scope')    # the same, but may be empty
	{
		return ['22004'] if $v eq 'null';
		return ['22001'] if $text_long{$v};
		return ['OK'];
	}
	if ($kind eq 'name')     # SPEC 3: topic/consumer 22023 when empty or oversized
	{
		return [ '22004', '22023' ] if $v eq 'null';
		return ['22023'] if $v eq 'empty' || $text_long{$v};
		return ['OK'];
	}
	if ($kind eq 'lookup')    # a consumer name that is looked up, not created
	{
		return [ '22004', '22023' ] if $v eq 'null';
		return [ '22023', 'ID020' ] if $v eq 'empty' || $text_long{$v};
		return ['OK'];
	}
	if ($kind eq 'free')    # recovery point, event key: SPEC sets no limit
	{
		return [ 'OK', '22004', '22023' ] if $v eq 'null';
		return [ 'OK', '22023' ] if $v eq 'empty';
		return [ 'OK', '22001', '22023', '54000' ] if $text_long{$v};
		return ['OK'];
	}
	if ($kind eq 'freenull')    # the same, NULL is the documented default
	{
		return ['OK'] if $v eq 'null';
		return expect_text('free', $v);
	}
	if ($kind eq 'mode')
	{
		return [ '22004', '22023' ] if $v eq 'null';
		return ['22023'];
	}
	die "kind $kind";
}

my %json_values = (
	null => 'NULL::jsonb',
	json_null => q{'null'::jsonb},
	empty_object => q{'{}'::jsonb},
	empty_array => q{'[]'::jsonb},
	string => q{'"s"'::jsonb},
	number => q{'-0.000e-10'::jsonb},
	bignum => q{('1' || repeat('0', 1000))::jsonb},
	unicode => q{'{"é": "\u00e9\ud83d\udd11", "": ""}'::jsonb},
	quotes => q{jsonb_build_object('a''b;--\\', 'x''); DROP TABLE victim; --')},
	deep1k => q{(repeat('[', 1000) || repeat(']', 1000))::jsonb},
	deep10k => q{(repeat('{"a":', 10000) || '1' || repeat('}', 10000))::jsonb},
	deep100k => q{(repeat('[', 100000) || repeat(']', 100000))::jsonb},
	# Deeper than the parser allows under the default max_stack_depth:
	# parsed once with a larger limit and stored (see deep_store below), so
	# the functions meet a value no client could send them directly.
	stored_deep_array => q{(SELECT j FROM deep_store WHERE n = 40000)},
	stored_deep_object => q{(SELECT j FROM deep_store WHERE n = 30000)},
	wide => q{(SELECT jsonb_object_agg('k' || g, g) FROM generate_series(1, 100000) AS g)},
	long => q{jsonb_build_object('s', repeat('x', 10485760))},
	nul_escape => q{'"\u0000"'::jsonb},    # refused: 22P05 before the call
	invalid => q!'{"a":'::jsonb!,           # refused: 22P02 before the call
);
my @json_order = qw(null json_null empty_object empty_array string number bignum
  unicode quotes deep1k deep10k deep100k stored_deep_array stored_deep_object
  wide long nul_escape invalid);

sub expect_json
{
	my ($kind, $v) = @_;
	return ['22P05'] if $v eq 'nul_escape';
	return ['22P02'] if $v eq 'invalid';
	# Nesting deeper than max_stack_depth allows is refused by the jsonb
	# parser itself (54001); what the parser accepts must then work.
	my @deep = ($v =~ /^deep(10|100)k$|^stored_deep/) ? ('54001') : ();
	if ($v eq 'null')
	{
		return ['OK'] if $kind eq 'nullable' || $kind eq 'headers';
		return [ '22004', '22023', '23502' ] if $kind eq 'required';
		return [ 'OK', '22004', '22023' ];    # response: SPEC silent
	}
	# Headers that are not an object: SPEC is silent.
	return [ 'OK', '22023', @deep ]
	  if $kind eq 'headers'
	  && $v =~ /^(json_null|empty_array|string|number|bignum|deep1k|deep100k|stored_deep_array)$/;
	return [ 'OK', @deep ];
}

my %interval_values = (
	null => 'NULL::interval',
	zero => q{'0'::interval},
	minus => q{'-1 second'::interval},
	very_negative => q{'-178000000 years'::interval},
	enormous => q{'178000000 years'::interval},
	max_days => q{'2147483647 days'::interval},
	tiny => q{'1 microsecond'::interval},
	month_minus_31 => q{'1 mon -31 days'::interval},
	minus_month_31 => q{'-1 mon 31 days'::interval},
	day_minus_24h => q{'1 day -24 hours'::interval},
	out_of_range => q{'1e300 seconds'::interval},    # refused before the call
	infinity => q{'infinity'::interval},             # PostgreSQL 15 has none
);
my @interval_order = qw(null zero minus very_negative enormous max_days tiny
  month_minus_31 minus_month_31 day_minus_24h out_of_range infinity);

sub expect_interval
{
	my ($v) = @_;
	return ['OK'] if $v eq 'null' || $v eq 'tiny';
	return ['22023'] if $v =~ /^(zero|minus|very_negative|day_minus_24h)$/;
	# Beyond the timestamp range: refused or clamped, never wrapped around.
	return [ 'OK', '22008', '22023' ] if $v eq 'enormous' || $v eq 'max_days';
	# Mixed signs: positive or not depending on how months are counted.
	return [ 'OK', '22023' ] if $v =~ /month/;
	return [ '22008', '22015', '22007' ];    # input errors
}

my %int_values = (
	null => 'NULL::integer',
	zero => '0',
	minus => '-1',
	min => '(-2147483647 - 1)',
	max => '2147483647',
	one => '1',
);
my @int_order = qw(null zero minus min max one);

my %bigint_values = (
	null => 'NULL::bigint',
	zero => '0::bigint',
	minus => '-1::bigint',
	min => '(-9223372036854775807 - 1)',
	max => '9223372036854775807',
);
my @bigint_order = qw(null zero minus min max);

my %topics_values = (
	null => 'NULL::text[]',
	empty => q{'{}'::text[]},
	null_elem => q{ARRAY[NULL]::text[]},
	empty_elem => q{ARRAY['']},
	long_elem => q{ARRAY[repeat('t', 256)]},
	mb1_elem => q{ARRAY[repeat('t', 1048576)]},
	many => q{(SELECT array_agg('t' || g) FROM generate_series(1, 10000) AS g)},
	two_dim => q{'{{a,b},{c,d}}'::text[]},
	odd_bounds => q{'[5:6]={x,y}'::text[]},
	duplicates => q{ARRAY['x', 'x']},
	quotes => q{ARRAY['a''b;--\\', '"']},
);
my @topics_order = qw(null empty null_elem empty_elem long_elem mb1_elem many
  two_dim odd_bounds duplicates quotes);

sub expect_topics
{
	my ($v) = @_;
	return ['OK'] if $v =~ /^(null|many|duplicates|quotes|odd_bounds)$/;
	return [ 'OK', '22023' ] if $v eq 'empty';
	return [ '22004', '22023' ] if $v eq 'null_elem';
	return [ 'OK', '22023', '2202E' ] if $v eq 'two_dim';
	return ['22023'];
}

$node->safe_psql('postgres', q{
	SET max_stack_depth = '7MB';
	CREATE TABLE deep_store (n int PRIMARY KEY, j jsonb);
	INSERT INTO deep_store VALUES
		(40000, (repeat('[', 40000) || repeat(']', 40000))::jsonb),
		(30000, (repeat('{"a":', 30000) || '1' || repeat('}', 30000))::jsonb);
});

# ----------------------------------------------------------------------
# The corpus.  A case: fn, desc, setup (statements; failures there are
# expected for invalid values), call (an expression; its text is kept in
# psql variable res), allow, check (statements, the last one a boolean
# query, run only when the call succeeded), cleanup.  {N} is the case
# number, used to keep keys, scopes and consumers of the cases apart.
# ----------------------------------------------------------------------
my @cases;

sub add_case
{
	my (%c) = @_;
	$c{setup} //= [];
	$c{check} = ['SELECT true'] unless $c{check} && @{ $c{check} };
	$c{cleanup} //= [];
	$c{db} //= 'postgres';
	push @cases, \%c;
	return;
}

# A function signature: list of [name, kind, default expression].  For each
# parameter and each hostile value of its kind, one case with every other
# argument valid.
sub sweep
{
	my (%f) = @_;
	my @params = @{ $f{params} };
	for my $i (0 .. $#params)
	{
		my ($pname, $kind) = @{ $params[$i] };
		my @values;
		if ($kind =~ /^(key|scope|name|lookup|free|freenull|mode)$/)
		{
			@values = map { [ $_, $text_values{$_}, expect_text($kind, $_) ] } @text_order;
		}
		elsif ($kind =~ /^json:(\w+)$/)
		{
			my $jk = $1;
			@values = map { [ $_, $json_values{$_}, expect_json($jk, $_) ] } @json_order;
		}
		elsif ($kind eq 'interval')
		{
			@values = map { [ $_, $interval_values{$_}, expect_interval($_) ] } @interval_order;
		}
		elsif ($kind =~ /^int:(\w+)$/)
		{
			my $ik = $1;
			@values = map { [ $_, $int_values{$_}, $f{int_expect}->($ik, $_) ] } @int_order;
		}
		elsif ($kind =~ /^bigint:(\w+)$/)
		{
			my $bk = $1;
			@values = map { [ $_, $bigint_values{$_}, $f{bigint_expect}->($bk, $_) ] } @bigint_order;
			push @values, [ 'other', "$params[$i][2] + 1", $f{bigint_expect}->($bk, 'other') ];
		}
		elsif ($kind eq 'topics')
		{
			@values = map { [ $_, $topics_values{$_}, expect_topics($_) ] } @topics_order;
		}
		elsif ($kind eq 'bool')
		{
			@values = ([ 'null', 'NULL::boolean', [ 'OK', '22004', '22023' ] ],
				[ 'true', 'true', ['OK'] ]);
		}
		else { die "kind $kind" }

		for my $val (@values)
		{
			my ($vname, $expr, $allow) = @$val;
			my %arg = map { $_->[0] => $_->[2] } @params;
			$arg{$pname} = $expr;
			my $subst = sub {
				my ($s) = @_;
				$s =~ s/\{(\w+)\}/exists $arg{$1} ? $arg{$1} : "{$1}"/ge;
				return $s;
			};
			my $argl = join(', ', map { $arg{ $_->[0] } } @params);
			add_case(
				fn => $f{fn},
				desc => "$pname=$vname",
				setup => [ map { $subst->($_) } @{ $f{setup} // [] } ],
				call => $subst->($f{call}->($argl)),
				allow => $allow,
				check => [ map { $subst->($_) } @{ $f{check} // [] } ],
				cleanup => [ map { $subst->($_) } @{ $f{cleanup} // [] } ]);
		}
	}
	return;
}

my $held = q{SELECT (idem.reserve({key}, NULL, {scope})).token AS tok \gset};

sweep(
	fn => 'reserve',
	params => [
		[ 'key', 'key', q{'h{N}'} ],
		[ 'request', 'json:nullable', q{'{"i": {N}}'::jsonb} ],
		[ 'scope', 'scope', q{'sc{N}'} ],
		[ 'lease', 'interval', 'NULL::interval' ],
		[ 'ttl', 'interval', 'NULL::interval' ]
	],
	call => sub { "(idem.reserve($_[0])).outcome" },
	check => [
		q{SELECT :'res' = 'acquired'
		     AND (SELECT r.outcome IN ('in_progress', 'acquired')
		            FROM idem.reserve({key}, {request}, {scope}) AS r)}
	]);

my $token_expect = sub {
	my ($k, $v) = @_;
	return ['22004'] if $v eq 'null';
	return ['ID002'];    # the key is held, with another token
};
sweep(
	fn => 'complete',
	params => [
		[ 'key', 'key', q{'h{N}'} ],
		[ 'token', 'bigint:token', ':tok' ],
		[ 'response', 'json:response', q{'{"ok": {N}}'::jsonb} ],
		[ 'status', 'int:status', '201' ],
		[ 'scope', 'scope', q{'sc{N}'} ]
	],
	bigint_expect => $token_expect,
	int_expect => sub { ['OK'] },
	setup => [ '\set tok 1', $held ],
	call => sub { "idem.complete($_[0]) IS NULL" },
	check => [
		q{SELECT r.outcome = 'replay' AND r.response IS NOT DISTINCT FROM {response}
		     AND r.status IS NOT DISTINCT FROM {status}
		    FROM idem.reserve({key}, NULL, {scope}) AS r}
	]);

sweep(
	fn => 'release',
	params => [
		[ 'key', 'key', q{'h{N}'} ],
		[ 'token', 'bigint:token', ':tok' ],
		[ 'scope', 'scope', q{'sc{N}'} ]
	],
	bigint_expect => $token_expect,
	setup => [ '\set tok 1', $held ],
	call => sub { "idem.release($_[0]) IS NULL" },
	check => [
		q{SELECT r.outcome = 'acquired' AND r.token > :tok
		    FROM idem.reserve({key}, NULL, {scope}) AS r}
	]);

sweep(
	fn => 'checkpoint',
	params => [
		[ 'key', 'key', q{'h{N}'} ],
		[ 'token', 'bigint:token', ':tok' ],
		[ 'recovery_point', 'free', q{'step {N}'} ],
		[ 'state', 'json:nullable', q{'{"s": {N}}'::jsonb} ],
		[ 'scope', 'scope', q{'sc{N}'} ],
		[ 'lease', 'interval', 'NULL::interval' ]
	],
	bigint_expect => $token_expect,
	setup => [ '\set tok 1', $held ],
	call => sub { "idem.checkpoint($_[0]) IS NULL" },
	# Released, the key is taken over and hands back exactly what was saved.
	check => [
		q{SELECT idem.release({key}, :tok, {scope})},
		q{SELECT r.outcome = 'acquired' AND r.token > :tok
		     AND r.recovery_point IS NOT DISTINCT FROM {recovery_point}
		     AND r.checkpoint IS NOT DISTINCT FROM {state}
		    FROM idem.reserve({key}, NULL, {scope}) AS r}
	]);

sweep(
	fn => 'forget',
	params => [ [ 'key', 'key', q{'h{N}'} ], [ 'scope', 'scope', q{'sc{N}'} ] ],
	setup => [$held],
	call => sub { "idem.forget($_[0])" },
	check => [
		q{SELECT :'res' = 'true'
		     AND (SELECT r.outcome = 'acquired' AND r.recovery_point IS NULL
		            FROM idem.reserve({key}, NULL, {scope}) AS r)}
	]);

my $max_rows_expect = sub {
	my ($k, $v) = @_;
	return [ 'OK', '22004', '22023' ] if $v eq 'null';
	return [ 'OK', '22023' ] if $v =~ /^(zero|minus|min)$/;
	return ['OK'];
};
sweep(
	fn => 'purge',
	params => [ [ 'max_rows', 'int:max_rows', '10' ] ],
	int_expect => $max_rows_expect,
	call => sub { "idem.purge($_[0])" },
	check => [q{SELECT :'res' = '<NULL>' OR :'res'::bigint >= 0}]);

sweep(
	fn => 'trim_outbox',
	params => [ [ 'max_rows', 'int:max_rows', '10' ] ],
	int_expect => $max_rows_expect,
	call => sub { "idem.trim_outbox($_[0])" },
	check => [q{SELECT :'res' = '<NULL>' OR :'res'::bigint >= 0}]);

# fingerprint is STRICT (NULL in, NULL out: documented in the README).
sweep(
	fn => 'fingerprint',
	params => [ [ 'request', 'json:nullable', q{'{}'::jsonb} ] ],
	call => sub { "encode(idem.fingerprint($_[0]), 'hex')" },
	check => [q{SELECT length(:'res') = 64 OR ({request} IS NULL AND :'res' = '<NULL>')}]);

sweep(
	fn => 'emit',
	params => [
		[ 'topic', 'name', q{'t{N}'} ],
		[ 'payload', 'json:required', q{'{"e": {N}}'::jsonb} ],
		[ 'key', 'freenull', 'NULL::text' ],
		[ 'headers', 'json:headers', 'NULL::jsonb' ]
	],
	call => sub { "idem.emit($_[0])" },
	check => [
		q{SELECT count(*) = 1 FROM idem.outbox AS o
		   WHERE o.id = :'res'::bigint AND o.topic = {topic} AND o.payload = {payload}
		     AND o.key IS NOT DISTINCT FROM {key} AND o.headers IS NOT DISTINCT FROM {headers}}
	]);

sweep(
	fn => 'subscribe',
	params => [
		[ 'consumer', 'name', q{'c{N}'} ],
		[ 'topics', 'topics', 'NULL::text[]' ],
		[ 'from_start', 'bool', 'false' ]
	],
	call => sub { "idem.subscribe($_[0]) IS NULL" },
	check => [q{SELECT count(*) >= 0 FROM idem.next_batch({consumer}, 1)}],
	cleanup => [q{SELECT idem.unsubscribe({consumer})}]);

sweep(
	fn => 'unsubscribe',
	params => [ [ 'consumer', 'lookup', q{'c{N}'} ] ],
	setup => [q{SELECT idem.subscribe({consumer})}],
	call => sub { "idem.unsubscribe($_[0])" },
	check => [q{SELECT :'res' = 'true'}]);

my $emit3 = q{SELECT idem.emit('nb{N}', jsonb_build_object('n', g)) FROM generate_series(1, 3) AS g};
sweep(
	fn => 'next_batch',
	params => [ [ 'consumer', 'lookup', q{'c{N}'} ], [ 'max_events', 'int:max_events', '10' ] ],
	int_expect => sub {
		my ($k, $v) = @_;
		return [ '22004', '22023' ] if $v eq 'null';
		return [ 'OK', '22023' ] if $v eq 'zero';
		return ['22023'] if $v =~ /^(minus|min)$/;
		return ['OK'];
	},
	setup => [ q{SELECT idem.subscribe({consumer}, ARRAY['nb{N}'])}, $emit3 ],
	call => sub { "(SELECT count(*) FROM idem.next_batch($_[0]))" },
	check => [q{SELECT :'res'::bigint = least(3, greatest({max_events}, 0))}],
	cleanup => [q{SELECT idem.unsubscribe({consumer})}]);

sweep(
	fn => 'finish_batch',
	params => [ [ 'consumer', 'lookup', q{'c{N}'} ], [ 'batch_id', 'bigint:batch', ':bid' ] ],
	bigint_expect => sub {
		my ($k, $v) = @_;
		return [ '22004', '22023', 'ID021' ] if $v eq 'null';
		return ['ID021'];
	},
	setup => [
		'\set bid 0',
		q{SELECT idem.subscribe({consumer}, ARRAY['nb{N}'])}, $emit3,
		q{SELECT batch_id AS bid FROM idem.next_batch({consumer}) LIMIT 1 \gset}
	],
	call => sub { "idem.finish_batch($_[0])" },
	check => [
		q{SELECT NOT EXISTS (SELECT FROM idem.next_batch({consumer}))}
	],
	cleanup => [q{SELECT idem.unsubscribe({consumer})}]);

# Unknown keys and consumers, and keys in the wrong state (SPEC 1, 3, 5).
add_case(fn => 'complete', desc => 'unknown key', allow => ['ID003'],
	call => q{idem.complete('never {N}', 1, '{}') IS NULL});
add_case(fn => 'release', desc => 'unknown key', allow => ['ID003'],
	call => q{idem.release('never {N}', 1) IS NULL});
add_case(fn => 'checkpoint', desc => 'unknown key', allow => ['ID003'],
	call => q{idem.checkpoint('never {N}', 1, 'x') IS NULL});
add_case(fn => 'complete', desc => 'completed key', allow => [ 'ID003', 'ID002' ],
	setup => [ q{SELECT (idem.reserve('done {N}')).token AS tok \gset},
		q{SELECT idem.complete('done {N}', :tok, '{}')} ],
	call => q{idem.complete('done {N}', :tok, '{"again": true}') IS NULL});
add_case(fn => 'release', desc => 'completed key', allow => [ 'ID003', 'ID002' ],
	setup => [ q{SELECT (idem.reserve('done {N}')).token AS tok \gset},
		q{SELECT idem.complete('done {N}', :tok, '{}')} ],
	call => q{idem.release('done {N}', :tok) IS NULL});
add_case(fn => 'complete', desc => 'other scope', allow => ['ID003'],
	setup => [q{SELECT (idem.reserve('k {N}', NULL, 'a')).token AS tok \gset}],
	call => q{idem.complete('k {N}', :tok, '{}', NULL, 'b') IS NULL});
for my $state ('in_progress', 'completed', 'released')
{
	my @setup = (q{SELECT (idem.reserve('m {N}', '{"a": 1}')).token AS tok \gset});
	push @setup, q{SELECT idem.complete('m {N}', :tok, '{}')} if $state eq 'completed';
	push @setup, q{SELECT idem.release('m {N}', :tok)} if $state eq 'released';
	add_case(fn => 'reserve', desc => "other request, $state", allow => ['ID001'],
		setup => \@setup, call => q{(idem.reserve('m {N}', '{"a": 2}')).outcome});
	add_case(fn => 'reserve', desc => "NULL request after a request, $state", allow => ['ID001'],
		setup => \@setup, call => q{(idem.reserve('m {N}', NULL)).outcome});
}
add_case(fn => 'forget', desc => 'unknown key', allow => ['OK'],
	call => q{idem.forget('never {N}')}, check => [q{SELECT :'res' = 'false'}]);
add_case(fn => 'next_batch', desc => 'unknown consumer', allow => ['ID020'],
	call => q{(SELECT count(*) FROM idem.next_batch('nobody {N}'))});
add_case(fn => 'finish_batch', desc => 'unknown consumer', allow => ['ID020'],
	call => q{idem.finish_batch('nobody {N}', 1)});
add_case(fn => 'finish_batch', desc => 'no open batch', allow => ['ID021'],
	setup => [q{SELECT idem.subscribe('c {N}')}],
	call => q{idem.finish_batch('c {N}', 1)});
add_case(fn => 'finish_batch', desc => "another consumer's batch", allow => ['ID021'],
	setup => [ q{SELECT idem.subscribe('a {N}', ARRAY['x {N}'])},
		q{SELECT idem.subscribe('b {N}', ARRAY['x {N}'])},
		q{SELECT idem.emit('x {N}', '{}')},
		q{SELECT batch_id AS bid FROM idem.next_batch('a {N}') LIMIT 1 \gset},
		q{SELECT count(*) FROM idem.next_batch('b {N}')} ],
	call => q{idem.finish_batch('b {N}', :bid)});
add_case(fn => 'finish_batch', desc => 'batch finished twice', allow => ['ID021'],
	setup => [ q{SELECT idem.subscribe('a {N}', ARRAY['x {N}'])},
		q{SELECT idem.emit('x {N}', '{}')},
		q{SELECT batch_id AS bid FROM idem.next_batch('a {N}') LIMIT 1 \gset},
		q{SELECT idem.finish_batch('a {N}', :bid)} ],
	call => q{idem.finish_batch('a {N}', :bid)});
add_case(fn => 'unsubscribe', desc => 'unknown consumer', allow => [ 'OK', 'ID020' ],
	call => q{idem.unsubscribe('nobody {N}')}, check => [q{SELECT :'res' = 'false'}]);

# Named-argument calls with a NULL for a defaulted parameter.
add_case(fn => 'reserve', desc => 'scope => NULL by name', allow => ['22004'],
	call => q{(idem.reserve('n {N}', scope => NULL)).outcome});
add_case(fn => 'complete', desc => 'scope => NULL by name', allow => ['22004'],
	call => q{idem.complete('n {N}', 1, '{}', scope => NULL) IS NULL});

# ----------------------------------------------------------------------
# Version-checked updates: unknown and odd relations and columns, every
# column type, dropped/renamed/retyped version columns, double enforcement,
# and the trigger function used in ways enforce_version never would.
# ----------------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE TABLE victim (x int);
	CREATE TABLE vt_plain (id int PRIMARY KEY, payload text, version bigint,
	                       v4 integer, v2 smallint, vnum numeric, vtext text,
	                       "Version" bigint, "ver;sion""' " bigint);
	CREATE VIEW vt_view AS SELECT * FROM vt_plain;
	CREATE SEQUENCE vt_seq;
	CREATE INDEX vt_idx ON vt_plain (payload);
	CREATE MATERIALIZED VIEW vt_mat AS SELECT 1 AS version;
	CREATE TABLE "we'ird;tbl\" (id int PRIMARY KEY, payload text, "ver;sion\" bigint);
	CREATE TABLE vt_parted (id int, payload text, version bigint) PARTITION BY RANGE (id);
	CREATE TABLE vt_parted_1 PARTITION OF vt_parted FOR VALUES FROM (-10) TO (1000);
	CREATE TABLE vt_gen (id int, payload text, version bigint GENERATED ALWAYS AS (id) STORED);
	CREATE TABLE vt_ident (id int, payload text, version bigint GENERATED ALWAYS AS IDENTITY);
	CREATE TABLE vt_nocols ();
});

# After a successful enforce_version, the guard must behave as SPEC 2 says:
# INSERT with NULL version gives 1, a blind UPDATE is refused (strict) or
# bumps once (auto), an UPDATE assigning the stored version bumps it once, a
# stale one is refused.  Runs in a subtransaction-free way: each probe is its
# own statement, the check a boolean over what they left in vprobe.
$node->safe_psql('postgres', q{
	CREATE TABLE vprobe (n serial, what text, state text);
	CREATE FUNCTION guard_works(tbl regclass, col name, mode text) RETURNS boolean
	LANGUAGE plpgsql AS $$
	DECLARE v bigint; ok boolean := true; st text;
	BEGIN
		EXECUTE format('INSERT INTO %s (id, payload) VALUES (-1, ''probe'') RETURNING %I', tbl, col) INTO v;
		ok := ok AND v = 1;
		BEGIN
			EXECUTE format('UPDATE %s SET payload = ''blind'' WHERE id = -1 RETURNING %I', tbl, col) INTO v;
			ok := ok AND mode = 'auto' AND v = 2;
		EXCEPTION WHEN SQLSTATE 'ID011' THEN
			ok := ok AND mode = 'strict';
		END;
		EXECUTE format('SELECT %I FROM %s WHERE id = -1', col, tbl) INTO v;
		EXECUTE format('UPDATE %s SET payload = ''read'', %I = %s WHERE id = -1 RETURNING %I', tbl, col, v, col) INTO st;
		ok := ok AND st::bigint = v + 1;
		BEGIN
			EXECUTE format('UPDATE %s SET payload = ''stale'', %I = %s WHERE id = -1', tbl, col, v - 1);
			ok := false;
		EXCEPTION WHEN SQLSTATE 'ID010' THEN
			NULL;
		END;
		EXECUTE format('DELETE FROM %s WHERE id = -1', tbl);
		RETURN ok;
	END $$;
});

my @relations = (
	[ 'plain table', q{'vt_plain'::regclass}, ['OK'], 'vt_plain' ],
	[ 'quoted table name', q{'"we''ird;tbl\"'::regclass}, [], q{"we'ird;tbl\"} ],
	[ 'partitioned table', q{'vt_parted'::regclass}, [ 'OK', '0A000', '42809' ], 'vt_parted' ],
	[ 'temporary table', q{'pg_temp.vt_temp'::regclass}, ['OK'], 'vt_temp',
		'CREATE TEMP TABLE vt_temp (id int, payload text, version bigint)' ],
	[ 'NULL', 'NULL::regclass', [ '22004', '22023' ] ],
	[ 'OID 0', '0::regclass', [ '42P01', '22023' ] ],
	[ 'dangling OID', '4294967295::oid::regclass', [ '42P01', '22023' ] ],
	[ 'unknown name', q{'no_such_table'::regclass}, ['42P01'] ],
	[ 'name with a quote', q{'no''such'::regclass}, [ '42P01', '42602' ] ],
	[ 'view', q{'vt_view'::regclass}, [ '42809', '22023' ] ],
	[ 'sequence', q{'vt_seq'::regclass}, [ '42809', '42703', '22023' ] ],
	[ 'index', q{'vt_idx'::regclass}, [ '42809', '42703', '22023' ] ],
	[ 'materialized view', q{'vt_mat'::regclass}, [ '42809', '22023' ] ],
	[ 'system catalog', q{'pg_class'::regclass}, [ '42501', '42703', '42809', '22023' ] ],
	[ 'the outbox itself', q{'idem.outbox'::regclass}, [ '42703', '42501', '22023', '42809' ] ],
	[ 'table without columns', q{'vt_nocols'::regclass}, ['42703'] ],
);
for my $r (@relations)
{
	my ($desc, $expr, $allow, $plain, $setup) = @$r;
	my $col = $desc eq 'quoted table name' ? q{'ver;sion\'} : q{'version'};
	$allow = ['OK'] unless @$allow;
	add_case(
		fn => 'enforce_version', desc => "tbl=$desc",
		setup => [ $setup // () ],
		call => "idem.enforce_version($expr, $col) IS NULL",
		allow => $allow,
		check => [ defined $plain ? "SELECT guard_works($expr, $col, 'strict')" : 'SELECT true' ],
		cleanup => [ defined $plain ? "SELECT idem.unenforce_version($expr)" : () ]);
}
my @columns = (
	[ 'version', ['OK'] ],
	[ 'v4', ['OK'] ],                     # integer
	[ 'Version', ['OK'] ],                # needs quoting
	[ q{ver;sion"' }, ['OK'] ],           # needs quoting, hostile characters
	[ 'v2', [ '42804', '22023' ] ],       # smallint
	[ 'vnum', [ '42804', '22023' ] ],
	[ 'vtext', [ '42804', '22023' ] ],
	[ 'payload', [ '42804', '22023' ] ],
	[ 'id', ['OK'] ],                     # an integer, if an odd choice
	[ 'nope', ['42703'] ],
	[ 'VERSION', ['42703'] ],
	[ 'xmin', [ '42P10', '42703', '42804', '22023', '0A000' ] ],
	[ 'ctid', [ '42P10', '42703', '42804', '22023', '0A000' ] ],
	[ 'tableoid', [ '42P10', '42703', '42804', '22023', '0A000' ] ],
	[ '', [ '42703', '22023', '22004' ] ],
	[ 'x' x 100, ['42703'] ],             # truncated to 63 bytes, still unknown
);
for my $c (@columns)
{
	my ($col, $allow) = @$c;
	(my $lit = $col) =~ s/'/''/g;
	add_case(
		fn => 'enforce_version', desc => "version_column=" . ($col eq '' ? "''" : substr($col, 0, 20)),
		call => "idem.enforce_version('vt_plain', '$lit') IS NULL",
		allow => $allow,
		check => [ $col eq 'id' ? 'SELECT true' : "SELECT guard_works('vt_plain', '$lit', 'strict')" ],
		cleanup => [q{SELECT idem.unenforce_version('vt_plain')}]);
}
add_case(fn => 'enforce_version', desc => 'version_column=NULL', allow => [ '22004', '22023' ],
	call => q{idem.enforce_version('vt_plain', NULL) IS NULL},
	cleanup => [q{SELECT idem.unenforce_version('vt_plain')}]);
add_case(fn => 'enforce_version', desc => 'generated version column',
	allow => [ 'OK', '42P10', '22023', '42804', '55000', '42P17', '0A000' ],
	call => q{idem.enforce_version('vt_gen') IS NULL},
	cleanup => [q{SELECT idem.unenforce_version('vt_gen')}]);
add_case(fn => 'enforce_version', desc => 'identity version column',
	allow => [ 'OK', '42P10', '22023', '42804', '55000', '0A000' ],
	call => q{idem.enforce_version('vt_ident') IS NULL},
	cleanup => [q{SELECT idem.unenforce_version('vt_ident')}]);
for my $v (@text_order)
{
	add_case(fn => 'enforce_version', desc => "mode=$v", allow => expect_text('mode', $v),
		call => "idem.enforce_version('vt_plain', 'version', $text_values{$v}) IS NULL",
		cleanup => [q{SELECT idem.unenforce_version('vt_plain')}]);
}
for my $m ('STRICT', 'Auto', ' strict')
{
	add_case(fn => 'enforce_version', desc => "mode='$m'", allow => [ '22023', 'OK' ],
		call => "idem.enforce_version('vt_plain', 'version', '$m') IS NULL",
		check => [ "SELECT guard_works('vt_plain', 'version', lower(trim('$m')))" ],
		cleanup => [q{SELECT idem.unenforce_version('vt_plain')}]);
}
# Enforced twice: refused, or the second call wins; never two guards that
# bump twice.
add_case(fn => 'enforce_version', desc => 'twice, strict then auto', allow => [ 'OK', '42710', '55000' ],
	setup => [q{SELECT idem.enforce_version('vt_plain')}],
	call => q{idem.enforce_version('vt_plain', 'version', 'auto') IS NULL},
	check => [q{SELECT guard_works('vt_plain', 'version', 'auto')}],
	cleanup => [q{SELECT idem.unenforce_version('vt_plain')}]);
add_case(fn => 'enforce_version', desc => 'twice, other column', allow => [ 'OK', '42710', '55000' ],
	setup => [q{SELECT idem.enforce_version('vt_plain')}],
	call => q{idem.enforce_version('vt_plain', 'v4') IS NULL},
	check => [q{SELECT guard_works('vt_plain', 'v4', 'strict')}],
	cleanup => [q{SELECT idem.unenforce_version('vt_plain')}]);
add_case(fn => 'unenforce_version', desc => 'table without a guard', allow => [ 'OK', '42704', '55000' ],
	call => q{idem.unenforce_version('vt_plain') IS NULL});
add_case(fn => 'unenforce_version', desc => 'NULL', allow => [ 'OK', '22004', '22023' ],
	call => q{idem.unenforce_version(NULL) IS NULL});
add_case(fn => 'unenforce_version', desc => 'OID 0', allow => [ 'OK', '42P01', '22023' ],
	call => q{idem.unenforce_version(0) IS NULL});
add_case(fn => 'unenforce_version', desc => 'view', allow => [ 'OK', '42809', '42704', '22023' ],
	call => q{idem.unenforce_version('vt_view') IS NULL});
add_case(fn => 'unenforce_version', desc => 'quoted table name', allow => ['OK'],
	setup => [q{SELECT idem.enforce_version('"we''ird;tbl\"', 'ver;sion\')}],
	call => q{idem.unenforce_version('"we''ird;tbl\"') IS NULL},
	check => [q{SELECT NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = '"we''ird;tbl\"'::regclass AND NOT tgisinternal)}]);

# Schema changes under an installed guard.  Each scenario builds its own
# table; the DML that follows must end in a clear error or correct
# behaviour — and a strict guard must never let a blind write through
# silently while a version column exists.
my $n_alter = 0;
sub alter_case
{
	my (%a) = @_;
	$n_alter++;
	my $t = "va_$n_alter";
	add_case(
		fn => 'version_guard',
		desc => $a{desc},
		setup => [
			"CREATE TABLE $t (id int PRIMARY KEY, payload text, version bigint)",
			"SELECT idem.enforce_version('$t')",
			"INSERT INTO $t (id, payload) VALUES (1, 'a')",
			map { s/\{T\}/$t/gr } @{ $a{alter} }
		],
		dml => ($a{dml} =~ s/\{T\}/$t/gr),
		allow => $a{allow},
		check => [ map { s/\{T\}/$t/gr } @{ $a{check} // ['SELECT true'] } ]);
	return;
}
alter_case(desc => 'version column dropped, blind update',
	alter => ['ALTER TABLE {T} DROP COLUMN version'],
	dml => q{UPDATE {T} SET payload = 'b'},
	allow => [ 'OK', '42703', '55000', '22023', 'ID011' ]);
alter_case(desc => 'version column dropped, insert',
	alter => ['ALTER TABLE {T} DROP COLUMN version'],
	dml => q{INSERT INTO {T} (id, payload) VALUES (2, 'b')},
	allow => [ 'OK', '42703', '55000', '22023' ]);
alter_case(desc => 'version column dropped and added again, blind update',
	alter => [ 'ALTER TABLE {T} DROP COLUMN version', 'ALTER TABLE {T} ADD COLUMN version bigint' ],
	dml => q{UPDATE {T} SET payload = 'b'},
	allow => [ 'ID011', '42703', '55000', '22023' ]);
alter_case(desc => 'version column dropped and added again, versioned update',
	alter => [ 'ALTER TABLE {T} DROP COLUMN version', 'ALTER TABLE {T} ADD COLUMN version bigint',
		'ALTER TABLE {T} DISABLE TRIGGER USER', 'UPDATE {T} SET version = 7',
		'ALTER TABLE {T} ENABLE TRIGGER USER' ],
	dml => q{UPDATE {T} SET payload = 'b', version = 7},
	allow => [ 'OK', '42703', '55000', '22023' ],
	check => [q{SELECT version = 8 FROM {T}}]);
alter_case(desc => 'version column renamed, blind update',
	alter => ['ALTER TABLE {T} RENAME COLUMN version TO v2'],
	dml => q{UPDATE {T} SET payload = 'b'},
	allow => [ 'ID011', '42703', '55000', '22023' ]);
alter_case(desc => 'version column renamed, versioned update',
	alter => ['ALTER TABLE {T} RENAME COLUMN version TO v2'],
	dml => q{UPDATE {T} SET payload = 'b', v2 = 1},
	allow => [ 'OK', '42703', '55000', '22023' ],
	check => [q{SELECT v2 = 2 FROM {T}}]);
alter_case(desc => 'another column renamed to version',
	alter => [ 'ALTER TABLE {T} RENAME COLUMN version TO v2',
		'ALTER TABLE {T} ADD COLUMN vv bigint', 'ALTER TABLE {T} RENAME COLUMN vv TO version' ],
	dml => q{UPDATE {T} SET payload = 'b'},
	allow => [ 'ID011', '42703', '55000', '22023' ]);
for my $type ('numeric', 'text', 'smallint', 'integer', 'double precision', 'bigint[]')
{
	my $ok = $type eq 'integer' ? ['OK'] : [];
	my $using = $type eq 'bigint[]' ? 'ARRAY[version]' : "version::$type";
	alter_case(desc => "version column retyped to $type, versioned update",
		alter => ["ALTER TABLE {T} ALTER COLUMN version TYPE $type USING $using"],
		# Every value from the row (0.2: an atomic write, which needs no
		# version), so that the assignment type-checks for every type and
		# the guard itself must meet the retyped column.
		dml => "UPDATE {T} SET payload = payload || 'b', version = version",
		allow => [ @$ok, '42804', '22023', '55000', '42703' ],
		check => [ $type eq 'integer' ? q{SELECT version = 2 FROM {T}} : 'SELECT true' ]);
	alter_case(desc => "version column retyped to $type, insert",
		alter => ["ALTER TABLE {T} ALTER COLUMN version TYPE $type USING $using"],
		dml => q{INSERT INTO {T} (id, payload) VALUES (2, 'b')},
		allow => [ @$ok, '42804', '22023', '55000', '42703' ],
		check => [ $type eq 'integer' ? q{SELECT version = 1 FROM {T} WHERE id = 2} : 'SELECT true' ]);
}
alter_case(desc => 'version at bigint max, versioned update',
	alter => [ 'ALTER TABLE {T} DISABLE TRIGGER USER',
		'UPDATE {T} SET version = 9223372036854775807', 'ALTER TABLE {T} ENABLE TRIGGER USER' ],
	dml => q{UPDATE {T} SET payload = 'b', version = 9223372036854775807},
	allow => [ '22003', 'ID010' ]);
alter_case(desc => 'version NULL in a stored row, versioned update',
	alter => [ 'ALTER TABLE {T} DISABLE TRIGGER USER',
		'UPDATE {T} SET version = NULL', 'ALTER TABLE {T} ENABLE TRIGGER USER' ],
	dml => q{UPDATE {T} SET payload = 'b', version = NULL},
	allow => [ 'OK', 'ID010', 'ID011', '22004', '23502' ]);
alter_case(desc => 'assigned version NULL',
	alter => [],
	dml => q{UPDATE {T} SET payload = 'b', version = NULL},
	allow => [ 'ID010', 'ID011', '22004', '23502' ]);
alter_case(desc => 'table rewritten by VACUUM FULL and CLUSTER, versioned update',
	alter => [ 'VACUUM FULL {T}', 'CLUSTER {T} USING {T}_pkey' ],
	dml => q{UPDATE {T} SET payload = 'b', version = 1},
	allow => ['OK'],
	check => [q{SELECT version = 2 FROM {T}}]);

# The trigger function attached by hand, in ways enforce_version never does.
my $n_trig = 0;
sub trigger_case
{
	my ($desc, $trigger, $dml, $allow) = @_;
	$n_trig++;
	my $t = "vg_$n_trig";
	add_case(
		fn => 'version_guard',
		desc => $desc,
		setup => [
			"CREATE TABLE $t (id int PRIMARY KEY, payload text, version bigint)",
			"INSERT INTO $t VALUES (1, 'a', 1)",
			"CREATE VIEW ${t}_v AS SELECT * FROM $t",
			($trigger =~ s/\{T\}/$t/gr)
		],
		($dml =~ /^(UPDATE|INSERT|DELETE)/ ? 'dml' : $dml =~ /^TRUNCATE/ ? 'stmt' : 'call')
		  => ($dml =~ s/\{T\}/$t/gr),
		allow => $allow);
	return;
}
my @trig_err = ('39P01', '0A000', '22023', '42703', '42804', '55000', '2F000', '09000', '39000');
trigger_case('called as a function', 'SELECT 1', q{idem.version_guard() IS NULL}, [ '39P01', '0A000' ]);
trigger_case('statement-level trigger',
	'CREATE TRIGGER g BEFORE UPDATE ON {T} FOR EACH STATEMENT EXECUTE FUNCTION idem.version_guard()',
	q{UPDATE {T} SET payload = 'b'}, \@trig_err);
trigger_case('AFTER row trigger',
	q{CREATE TRIGGER g AFTER UPDATE ON {T} FOR EACH ROW EXECUTE FUNCTION idem.version_guard('version', 'strict')},
	q{UPDATE {T} SET payload = 'b'}, [ 'OK', 'ID011', @trig_err ]);
trigger_case('BEFORE DELETE row trigger',
	q{CREATE TRIGGER g BEFORE DELETE ON {T} FOR EACH ROW EXECUTE FUNCTION idem.version_guard('version', 'strict')},
	q{DELETE FROM {T}}, [ 'OK', @trig_err ]);
trigger_case('BEFORE TRUNCATE trigger',
	q{CREATE TRIGGER g BEFORE TRUNCATE ON {T} FOR EACH STATEMENT EXECUTE FUNCTION idem.version_guard()},
	q{TRUNCATE {T}}, [ 'OK', @trig_err ]);
trigger_case('no arguments',
	'CREATE TRIGGER g BEFORE UPDATE ON {T} FOR EACH ROW EXECUTE FUNCTION idem.version_guard()',
	q{UPDATE {T} SET payload = 'b'}, [ 'OK', 'ID011', @trig_err ]);
trigger_case('unknown column argument',
	q{CREATE TRIGGER g BEFORE UPDATE ON {T} FOR EACH ROW EXECUTE FUNCTION idem.version_guard('nope', 'strict')},
	q{UPDATE {T} SET payload = 'b'}, \@trig_err);
trigger_case('text column argument',
	q{CREATE TRIGGER g BEFORE UPDATE ON {T} FOR EACH ROW EXECUTE FUNCTION idem.version_guard('payload', 'strict')},
	q{UPDATE {T} SET payload = 'b'}, \@trig_err);
trigger_case('bogus mode argument',
	q{CREATE TRIGGER g BEFORE UPDATE ON {T} FOR EACH ROW EXECUTE FUNCTION idem.version_guard('version', 'bogus')},
	q{UPDATE {T} SET payload = 'b'}, \@trig_err);
trigger_case('too many arguments',
	q{CREATE TRIGGER g BEFORE UPDATE ON {T} FOR EACH ROW EXECUTE FUNCTION idem.version_guard('version', 'strict', 'x', 'y', 'z')},
	q{UPDATE {T} SET payload = 'b', version = 1}, [ 'OK', @trig_err ]);
trigger_case('empty column argument',
	q{CREATE TRIGGER g BEFORE INSERT ON {T} FOR EACH ROW EXECUTE FUNCTION idem.version_guard('', '')},
	q{INSERT INTO {T} VALUES (2, 'b')}, \@trig_err);
trigger_case('INSTEAD OF trigger on a view',
	q{CREATE TRIGGER g INSTEAD OF UPDATE ON {T}_v FOR EACH ROW EXECUTE FUNCTION idem.version_guard('version', 'strict')},
	q{UPDATE {T}_v SET payload = 'b', version = 1}, [ 'OK', @trig_err ]);

# ----------------------------------------------------------------------
# Roles and privileges (SPEC 4), and a search_path attack.
# ----------------------------------------------------------------------
$node->safe_psql('postgres', q{
	CREATE ROLE hostile_app;
	CREATE ROLE "we'ird;role\";
	CREATE ROLE hostile_nobody;
	GRANT ALL ON SCHEMA public TO hostile_app, hostile_nobody;
	CREATE TABLE app_owned (id int PRIMARY KEY, payload text, version bigint);
	ALTER TABLE app_owned OWNER TO hostile_app;
	CREATE SCHEMA evil;
	CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2000-01-01'::timestamptz $$;
	CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS $$ SELECT '2000-01-01'::timestamptz $$;
	CREATE FUNCTION evil.texteq(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
	CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.texteq);
	CREATE FUNCTION evil.nextval(regclass) RETURNS bigint LANGUAGE sql AS $$ SELECT 1::bigint $$;
	GRANT USAGE ON SCHEMA evil TO PUBLIC;
});
# Nothing in schema idem is granted to PUBLIC (SPEC.md section 4), not even
# the schema; a grant never adds to that.
my $no_public = q{SELECT NOT EXISTS (SELECT FROM pg_proc AS p, aclexplode(p.proacl) AS a
                   WHERE p.pronamespace = 'idem'::regnamespace AND a.grantee = 0)
                  AND NOT has_schema_privilege('public', 'idem', 'USAGE')};
for my $r ([ 'hostile_app', q{'hostile_app'::regrole}, ['OK'] ],
	[ 'quoted role name', q{'"we''ird;role\"'::regrole}, ['OK'] ],
	[ 'NULL', 'NULL::regrole', [ '22004', '22023' ] ],
	[ 'OID 0 (PUBLIC)', '0::regrole', [ '22023', '42704' ] ],
	[ 'dangling OID', '4294967295::oid::regrole', [ '22023', '42704' ] ],
	[ 'unknown name', q{'no_such_role'::regrole}, ['42704'] ])
{
	my ($desc, $expr, $allow) = @$r;
	add_case(fn => 'grant_usage', desc => "role=$desc", allow => $allow,
		call => "idem.grant_usage($expr) IS NULL",
		check => [
			qq{SELECT has_function_privilege($expr, 'idem.reserve(text, jsonb, text, interval, interval)', 'EXECUTE')
			      AND has_function_privilege($expr, 'idem.next_batch(text, integer)', 'EXECUTE')
			      AND NOT has_function_privilege($expr, 'idem.purge(integer)', 'EXECUTE')
			      AND NOT has_function_privilege($expr, 'idem.maintain()', 'EXECUTE')
			      AND NOT has_function_privilege($expr, 'idem.enforce_version(regclass, name, text)', 'EXECUTE')
			      AND ($no_public)}
		]);
}

# As an application role (granted by grant_usage above, or not at all).
sub as_role
{
	my ($role, $desc, $call, $allow, @check) = @_;
	add_case(fn => 'privileges', desc => "$role: $desc", allow => $allow,
		pre_call => ["SET ROLE $role"],
		($call =~ /^(INSERT|UPDATE|DELETE)/ ? 'dml' : 'call') => $call,
		check => \@check, after_call => ['RESET ROLE']);
	return;
}
as_role('hostile_app', 'reserve', q{(idem.reserve('app {N}')).outcome}, ['OK'], q{SELECT :'res' = 'acquired'});
as_role('hostile_app', 'emit', q{idem.emit('app', '{}')}, ['OK']);
as_role('hostile_app', 'views', q{(SELECT count(*) FROM idem.key_stats) + (SELECT count(*) FROM idem.consumer_lag)}, ['OK']);
as_role('hostile_app', 'purge', q{idem.purge()}, ['42501']);
as_role('hostile_app', 'trim_outbox', q{idem.trim_outbox()}, ['42501']);
as_role('hostile_app', 'maintain', q{(SELECT count(*) FROM idem.maintain())}, ['42501']);
as_role('hostile_app', 'enforce_version on its own table', q{idem.enforce_version('app_owned') IS NULL}, ['42501']);
as_role('hostile_app', 'grant_usage to another role', q{idem.grant_usage('hostile_nobody') IS NULL}, ['42501']);
as_role('hostile_app', 'INSERT INTO idem.keys',
	q{INSERT INTO idem.keys (scope, key, state, ttl, created_at, updated_at, expires_at) VALUES ('', 'x', 'completed', '1 day', now(), now(), now())},
	['42501']);
as_role('hostile_app', 'UPDATE idem.keys', q{UPDATE idem.keys SET response = '{}'}, ['42501']);
as_role('hostile_app', 'DELETE FROM idem.outbox', q{DELETE FROM idem.outbox}, ['42501']);
as_role('hostile_app', 'UPDATE idem.consumers', q{UPDATE idem.consumers SET topics = NULL}, ['42501']);
as_role('hostile_app', 'token sequence', q{nextval('idem.key_token_seq')}, ['42501']);
as_role('hostile_nobody', 'reserve without grant_usage', q{(idem.reserve('nobody {N}')).outcome}, ['42501']);
as_role('hostile_nobody', 'emit without grant_usage', q{idem.emit('x', '{}')}, ['42501']);
as_role('hostile_nobody', 'next_batch without grant_usage', q{(SELECT count(*) FROM idem.next_batch('x'))}, ['42501']);

# grant_usage()'s scope and topic patterns (0.2): a refused call changes no
# grant (idem.grants is in the snapshot); an accepted one stores the
# patterns verbatim.  chr(92) is a backslash, LIKE's escape character.  The
# last case gives hostile_app every scope and topic back.
my $app_grant = q{(SELECT ROW(g.scopes, g.topics) FROM idem.grants AS g
                    WHERE g.role = 'hostile_app'::regrole)};
for my $p (
	[ 'NULL scope pattern', q{scopes => ARRAY['a', NULL]}, ['22004'] ],
	[ 'NULL topic pattern', q{topics => ARRAY[NULL]::text[]}, ['22004'] ],
	[ 'two-dimensional patterns', q{scopes => ARRAY[['a'], ['b']]}, ['22023'] ],
	[ '511-byte pattern', q{scopes => ARRAY[repeat('x', 511)]}, ['22001'] ],
	[ '1 MB pattern', q{topics => ARRAY[repeat('x', 1048576)]}, ['22001'] ],
	[ 'pattern ending with an escape', q{scopes => ARRAY['x' || chr(92)]}, ['22025'] ],
	[ 'pattern ending with three escapes', q{topics => ARRAY['x' || repeat(chr(92), 3)]}, ['22025'] ],
	[ 'empty topic pattern', q{topics => ARRAY['']}, ['22023'] ],
	[ 'empty arrays', q{scopes => '{}', topics => '{}'}, ['OK'],
		q{ROW('{}'::text[], '{}'::text[])} ],
	[ 'quotes, semicolons, wildcards and an escaped backslash',
		q{scopes => ARRAY[$$a'; DROP TABLE app_owned; --$$, '%' || chr(92) || '_"', repeat(chr(92), 2)],
		  topics => ARRAY['_']},
		['OK'],
		q{ROW(ARRAY[$$a'; DROP TABLE app_owned; --$$, '%' || chr(92) || '_"', repeat(chr(92), 2)],
		      ARRAY['_'])} ],
	[ '510-byte pattern', q{scopes => ARRAY[repeat('x', 510)]}, ['OK'],
		q{ROW(ARRAY[repeat('x', 510)], NULL::text[])} ],
	[ '1 MB scope pattern', q{scopes => ARRAY[repeat('x', 1048576)]}, ['22001'] ],
	# 171 three-byte characters are 513 bytes: the limit counts bytes.
	[ '171 three-byte characters', q{scopes => ARRAY[repeat(convert_from('\xe282ac'::bytea, 'UTF8'), 171)]}, ['22001'] ],
	[ 'NULL among 10000 patterns',
		q{topics => array_append(ARRAY(SELECT 't' || g FROM generate_series(1, 10000) AS g), NULL)},
		['22004'] ],
	[ 'array with a lower bound of 0', q{scopes => '[0:1]={a,b}'::text[]}, ['OK'],
		q{ROW(ARRAY['a', 'b'], NULL::text[])} ],
	[ 'only a NULL element', q{scopes => ARRAY[NULL]::text[]}, ['22004'] ],
	[ 'empty scope pattern (the default scope)', q{scopes => ARRAY['']}, ['OK'],
		q{ROW(ARRAY[''], NULL::text[])} ],
	[ 'three-dimensional topics', q{topics => '{{{a}}}'::text[]}, ['22023'] ])
{
	my ($desc, $args, $allow, $want) = @$p;
	add_case(fn => 'grant_usage', desc => "patterns: $desc", allow => $allow,
		call => "idem.grant_usage('hostile_app', $args) IS NULL",
		check => [ defined $want ? "SELECT $app_grant IS NOT DISTINCT FROM $want" : 'SELECT true' ]);
}

# Patterns with a role that is not one: the role is refused before any
# pattern is looked at, and no row of idem.grants appears.
for my $r ([ 'NULL', 'NULL::regrole', [ '22004', '22023' ] ],
	[ 'OID 0 (PUBLIC)', '0::regrole', [ '22023', '42704' ] ],
	[ 'dangling OID', '4294967295::oid::regrole', [ '22023', '42704' ] ],
	[ 'unknown name', q{'no_such_role'::regrole}, ['42704'] ])
{
	my ($desc, $expr, $allow) = @$r;
	add_case(fn => 'grant_usage', desc => "patterns with role=$desc", allow => $allow,
		call => "idem.grant_usage($expr, scopes => ARRAY['a%'], topics => ARRAY[NULL]::text[]) IS NULL");
}

# A huge grant works, and the patterns mean what LIKE means: 100000 scope
# patterns, the last one the only match; '_' and '%' are wildcards, and a
# backslash makes the next character literal.
add_case(fn => 'grant_usage', desc => 'patterns: 100000 scope patterns, LIKE metacharacters in topics',
	allow => ['OK'],
	call => q{idem.grant_usage('hostile_app',
	            scopes => ARRAY(SELECT 'huge/' || g FROM generate_series(1, 100000) AS g),
	            topics => ARRAY['a_c', 'p%' || chr(92) || '%', chr(92) || '_x']) IS NULL},
	check => [ q{SELECT cardinality(g.scopes) = 100000 AND g.topics[2] = 'p%' || chr(92) || '%'
	               FROM idem.grants AS g WHERE g.role = 'hostile_app'::regrole} ]);
as_role('hostile_app', 'reserve in the last of 100000 scopes',
	q{(idem.reserve('huge {N}', NULL, 'huge/100000')).outcome}, ['OK'], q{SELECT :'res' = 'acquired'});
as_role('hostile_app', 'reserve in a scope no pattern matches',
	q{(idem.reserve('huge {N}', NULL, 'huge/100001')).outcome}, ['42501']);
as_role('hostile_app', "emit: '_' is one character", q{idem.emit('abc', '{}')}, ['OK']);
as_role('hostile_app', "emit: '_' is not zero characters", q{idem.emit('ac', '{}')}, ['42501']);
as_role('hostile_app', "emit: escaped '%' is literal", q{idem.emit('p-anything%', '{}')}, ['OK']);
as_role('hostile_app', "emit: escaped '%' matches nothing else", q{idem.emit('p-anything', '{}')}, ['42501']);
as_role('hostile_app', "emit: escaped '_' is literal", q{idem.emit('_x', '{}')}, ['OK']);
as_role('hostile_app', "emit: escaped '_' is not a wildcard", q{idem.emit('ax', '{}')}, ['42501']);

# revoke_usage(role) with roles that are not one, a role without a grant
# (false, nothing changes), and from an application role (refused).
for my $r ([ 'NULL', 'NULL::regrole', [ '22004', '22023' ] ],
	[ 'OID 0 (PUBLIC)', '0::regrole', [ '22023', '42704' ] ],
	[ 'dangling OID', '4294967295::oid::regrole', [ '22023', '42704' ] ],
	[ 'unknown name', q{'no_such_role'::regrole}, ['42704'] ],
	[ 'a role without a grant', q{'hostile_nobody'::regrole}, ['OK'] ])
{
	my ($desc, $expr, $allow) = @$r;
	add_case(fn => 'revoke_usage', desc => "role=$desc", allow => $allow,
		call => "idem.revoke_usage($expr)",
		check => [ q{SELECT :'res' = 'false' AND (SELECT count(*) FROM idem.grants) = 2} ]);
}
as_role('hostile_app', 'revoke_usage of another role', q{idem.revoke_usage('"we''ird;role\"')}, ['42501']);
add_case(fn => 'revoke_usage', desc => 'role=quoted role name', allow => ['OK'],
	call => q{idem.revoke_usage('"we''ird;role\"')},
	check => [ q{SELECT :'res' = 'true' AND NOT EXISTS (SELECT FROM idem.grants AS g
	                                                  WHERE g.role::text LIKE '%ird;role%')} ]);

# Last: hostile_app gets every scope and topic back.
add_case(fn => 'grant_usage', desc => 'patterns: no patterns: every scope and topic',
	allow => ['OK'], call => "idem.grant_usage('hostile_app', scopes => NULL) IS NULL",
	check => [ "SELECT $app_grant IS NOT DISTINCT FROM ROW(NULL::text[], NULL::text[])" ]);

# A caller's search_path puts look-alike now(), clock_timestamp(),
# nextval() and a text = that is always true ahead of pg_catalog: pinned
# functions must not see them.  If they did, the new key would replay
# another key's response, or expire in 2000.
add_case(fn => 'search_path', desc => 'evil now(), =, nextval() ahead of pg_catalog', allow => ['OK'],
	setup => [ q{SELECT (idem.reserve('sp other {N}')).token AS tok \gset},
		q{SELECT idem.complete('sp other {N}', :tok, '{"other": true}')} ],
	pre_call => ['SET search_path = evil, pg_catalog, public'],
	call => q{(idem.reserve('sp mine {N}')).outcome},
	after_call => ['RESET search_path'],
	check => [
		q{SELECT :'res' = 'acquired'
		     AND (SELECT r.token <> 1 AND r.locked_until > now() FROM idem.reserve('sp third {N}') AS r)}
	]);
add_case(fn => 'search_path', desc => 'evil search_path, emit and next_batch', allow => ['OK'],
	setup => [q{SELECT idem.subscribe('sp {N}', ARRAY['sp {N}'])}],
	pre_call => ['SET search_path = evil, pg_catalog, public'],
	call => q{idem.emit('sp {N}', '{"a": 1}')},
	after_call => ['RESET search_path'],
	check => [q{SELECT count(*) = 1 FROM idem.next_batch('sp {N}') WHERE id = :'res'::bigint}],
	cleanup => [q{SELECT idem.unsubscribe('sp {N}')}]);

# Views and maintenance under the junk the corpus left behind.
add_case(fn => 'views', desc => 'key_stats after the corpus', allow => ['OK'],
	call => q{(SELECT count(*) FROM idem.key_stats)});
add_case(fn => 'views', desc => 'consumer_lag after the corpus', allow => ['OK'],
	call => q{(SELECT count(*) FROM idem.consumer_lag)});
add_case(fn => 'maintain', desc => 'after the corpus', allow => ['OK'],
	call => q{(SELECT count(*) FROM idem.maintain())});

# ----------------------------------------------------------------------
# Run the corpus through one psql session: every call is its own top-level
# statement (autocommit), as an application would send it.
# ----------------------------------------------------------------------
my $snap_fn = q{
	CREATE FUNCTION hostile_snap() RETURNS text LANGUAGE plpgsql AS $$
	DECLARE r record; acc text := ''; part text;
	BEGIN
		-- Every row version of every table in idem and public: an INSERT,
		-- UPDATE or DELETE changes the set of (ctid, xmin).  No detoasting,
		-- so 10 MB values cost nothing here.
		FOR r IN SELECT c.oid::regclass AS t FROM pg_class AS c
		          WHERE c.relnamespace IN ('idem'::regnamespace, 'public'::regnamespace)
		            AND c.relkind IN ('r', 'm') ORDER BY c.oid LOOP
			EXECUTE format('SELECT count(*) || '':'' || coalesce(md5(string_agg(ctid::text || xmin::text, '','' ORDER BY ctid)), '''') FROM %s', r.t) INTO part;
			acc := acc || r.t::text || '=' || part || ';';
		END LOOP;
		SELECT acc || coalesce(md5(string_agg(concat_ws('/', oid, tgrelid, tgname, tgenabled, tgargs, tgtype), ',' ORDER BY oid)), '')
		  INTO acc FROM pg_trigger WHERE NOT tgisinternal;
		SELECT acc || coalesce(md5(string_agg(concat_ws('/', oid, proacl), ',' ORDER BY oid)), '')
		  INTO acc FROM pg_proc WHERE pronamespace = 'idem'::regnamespace;
		SELECT acc || coalesce(md5(string_agg(concat_ws('/', oid, relacl), ',' ORDER BY oid)), '')
		  INTO acc FROM pg_class WHERE relnamespace = 'idem'::regnamespace;
		SELECT acc || coalesce(md5(string_agg(concat_ws('/', oid, nspacl), ',')), '')
		  INTO acc FROM pg_namespace WHERE nspname = 'idem';
		RETURN acc;
	END $$;
};
$node->safe_psql('postgres', $snap_fn);

# SQL_ASCII: the server takes any byte, so invalid UTF-8 reaches the calls.
$node->safe_psql('postgres',
	q{CREATE DATABASE hostile_ascii ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
$node->safe_psql('hostile_ascii', "CREATE EXTENSION pg_idem; CREATE TABLE victim (x int); $snap_fn");
my %bytes = (
	lone_continuation => q{'\x80'},
	truncated => q{'\xc3'},
	surrogate => q{'\xeda080'},
	overlong => q{'\xc0af'},
	ff => q{'\xfffe'},
	latin1 => q{'\x636166e9'},
);
for my $b (sort keys %bytes)
{
	my $v = "convert_from($bytes{$b}::bytea, 'SQL_ASCII')";
	my $k = "($v || ' {N}')";
	add_case(db => 'hostile_ascii', fn => 'reserve', desc => "SQL_ASCII key $b", allow => ['OK'],
		call => "(idem.reserve($k, jsonb_build_object('v', $v), $v)).outcome",
		check => [
			"SELECT (idem.reserve($k, jsonb_build_object('v', $v), $v)).outcome = 'in_progress'"
		]);
	add_case(db => 'hostile_ascii', fn => 'complete', desc => "SQL_ASCII key $b", allow => ['OK'],
		setup => ["SELECT (idem.reserve($k)).token AS tok \\gset"],
		call => "idem.complete($k, :tok, jsonb_build_object('v', $v)) IS NULL",
		check => [
			"SELECT r.outcome = 'replay' AND r.response = jsonb_build_object('v', $v) FROM idem.reserve($k) AS r"
		]);
	add_case(db => 'hostile_ascii', fn => 'emit', desc => "SQL_ASCII topic $b", allow => ['OK'],
		setup => ["SELECT idem.subscribe($k)"],
		call => "idem.emit($k, jsonb_build_object('v', $v), $v, jsonb_build_object($v, $v))",
		check => ["SELECT count(*) = 1 FROM idem.next_batch($k) WHERE topic = $k AND key = $v"]);
	add_case(db => 'hostile_ascii', fn => 'fingerprint', desc => "SQL_ASCII $b", allow => ['OK'],
		call => "encode(idem.fingerprint(jsonb_build_object($v, $v)), 'hex')",
		check => ["SELECT length(:'res') = 64"]);
}
add_case(db => 'hostile_ascii', fn => 'reserve', desc => 'SQL_ASCII 255 bytes of high bytes', allow => ['OK'],
	call => q{(idem.reserve(convert_from(decode(repeat('e9', 255), 'hex'), 'SQL_ASCII'), NULL, 's{N}')).outcome});
add_case(db => 'hostile_ascii', fn => 'reserve', desc => 'SQL_ASCII 256 bytes of high bytes', allow => ['22001'],
	call => q{(idem.reserve(convert_from(decode(repeat('e9', 256), 'hex'), 'SQL_ASCII'), NULL, 's{N}')).outcome});

# ----------------------------------------------------------------------
# Generate the psql scripts and run them.
# ----------------------------------------------------------------------
# One statement of a script, terminated; psql meta-commands as they are.
sub stmt_line
{
	my ($x) = @_;
	return "$x\n" if $x =~ /^\\/ || $x =~ /(;|\\\w+)\s*$/;
	return "$x;\n";
}

# A setup statement whose failure is noted (expected for invalid values).
sub noted
{
	my ($n, $x) = @_;
	my $s = stmt_line($x);
	$s .= "\\if :ERROR\n\\echo '\@\@P $n' :LAST_ERROR_SQLSTATE :LAST_ERROR_MESSAGE\n\\endif\n"
	  unless $x =~ /^\\/;
	return $s;
}

my $id = 0;
my %script;
for my $c (@cases)
{
	$c->{id} = ++$id;
	my $n = $id;
	my $fill = sub { my ($s) = @_; $s =~ s/\{N\}/$n/g; return $s; };
	my $s = "\n-- case $n: $c->{fn} $c->{desc}\n";
	$s .= noted($n, $fill->($_)) for @{ $c->{setup} };
	$s .= "\\unset res\nSELECT hostile_snap() AS snap \\gset\n";
	$s .= noted($n, $fill->($_)) for @{ $c->{pre_call} // [] };
	if ($c->{dml})
	{
		$s .= "WITH u AS (" . $fill->($c->{dml}) . " RETURNING 1) SELECT count(*) AS res FROM u \\gset\n";
	}
	elsif ($c->{stmt})
	{
		$s .= stmt_line($fill->($c->{stmt}));
	}
	else
	{
		$s .= "SELECT coalesce((" . $fill->($c->{call}) . ")::text, '<NULL>') AS res \\gset\n";
	}
	$s .= "\\set callstate :SQLSTATE\n";
	$s .= "\\if :ERROR\n\\echo '\@\@M $n' :LAST_ERROR_MESSAGE\n\\endif\n";
	$s .= stmt_line($fill->($_)) for @{ $c->{after_call} // [] };
	$s .= "\\echo '\@\@R $n' :callstate\n";
	# A failed call: compare snapshots.  A successful one: check it.
	$s .= "SELECT :'callstate' <> '00000' AS failed \\gset\n\\if :failed\n";
	$s .= "SELECT hostile_snap() = :'snap' AS same \\gset\n\\echo '\@\@S $n' :same\n";
	$s .= "\\else\n";
	my @check = @{ $c->{check} };
	for my $i (0 .. $#check)
	{
		my $x = $fill->($check[$i]);
		if ($i == $#check)
		{
			$s .= "SELECT coalesce(($x), false) AS chk \\gset\n\\echo '\@\@C $n' :chk\n";
		}
		else
		{
			$s .= stmt_line($x);
		}
	}
	$s .= "\\endif\n";
	$s .= stmt_line($fill->($_)) for @{ $c->{cleanup} };
	$script{ $c->{db} } .= $s;
}

# The snapshot must see a one-row change, or comparing it proves nothing.
my $snap1 = $node->safe_psql('postgres', 'SELECT hostile_snap()');
$node->safe_psql('postgres', 'INSERT INTO victim VALUES (1)');
my $snap2 = $node->safe_psql('postgres', 'SELECT hostile_snap()');
$node->safe_psql('postgres', 'UPDATE victim SET x = 1');
my $snap3 = $node->safe_psql('postgres', 'SELECT hostile_snap()');
$node->safe_psql('postgres', 'DELETE FROM victim');
ok($snap1 ne $snap2 && $snap2 ne $snap3,
	'the data snapshot sees a row inserted, and updated to the same value');

my $start_time = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
my $logstart = log_offset($node);
my %result;
my %message;
my %same;
my %chk;
my %setup_note;
for my $db (sort keys %script)
{
	my $head = "\\set QUIET on\nSET client_min_messages = error;\nSET statement_timeout = '120s';\n";
	my ($stdout, $stderr) = ('', '');
	$node->psql($db, $head . $script{$db},
		stdout => \$stdout, stderr => \$stderr, on_error_stop => 0,
		timeout => 900);
	for my $line (split /\n/, $stdout)
	{
		if ($line =~ /^\@\@R (\d+) (\S+)/) { $result{$1} = $2; }
		elsif ($line =~ /^\@\@M (\d+) (.*)$/) { $message{$1} = $2; }
		elsif ($line =~ /^\@\@S (\d+) (\S+)/) { $same{$1} = $2; }
		elsif ($line =~ /^\@\@C (\d+) (\S+)/) { $chk{$1} = $2; }
		elsif ($line =~ /^\@\@P (\d+) (.*)$/) { $setup_note{$1} .= "$2; "; }
	}
}

# ----------------------------------------------------------------------
# Judge every case.
# ----------------------------------------------------------------------
my (@wrong_code, @wrong_result, @changed, @lost);
my %by_code;
for my $c (@cases)
{
	my $n = $c->{id};
	my $what = "#$n $c->{fn}($c->{desc})";
	my $code = $result{$n};
	if (!defined $code)
	{
		push @lost, $what;
		next;
	}
	my $got = $code eq '00000' ? 'OK' : $code;
	$by_code{$got}++;
	my %allow = map { $_ => 1 } @{ $c->{allow} };
	if (!$allow{$got})
	{
		push @wrong_code,
		  "$what: got $got"
		  . ($message{$n} ? " ($message{$n})" : '')
		  . ", allowed " . join('/', @{ $c->{allow} })
		  . ($setup_note{$n} ? " [setup: $setup_note{$n}]" : '');
		next;
	}
	if ($got eq 'OK')
	{
		push @wrong_result, "$what: result check failed"
		  . ($setup_note{$n} ? " [setup: $setup_note{$n}]" : '')
		  unless ($chk{$n} // 'missing') eq 't';
	}
	else
	{
		push @changed, "$what: a failed call ($got) changed data"
		  unless ($same{$n} // '') eq 't';
	}
}

my $end_time = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
is($end_time, $start_time, 'the postmaster never restarted');
my @deaths = log_signal_deaths($node, $logstart);
is(scalar(@deaths), 0, 'no backend died of a signal') or diag(join("\n", @deaths));
my @internal = grep { $_->{sqlstate} =~ /^XX/ && $_->{level} =~ /ERROR|FATAL|PANIC/ } log_entries($node, $logstart);
is(scalar(@internal), 0, 'no internal error (XX000 and kin) was raised')
  or diag(join("\n", map { $_->{line} } @internal));
is(scalar(@lost), 0, 'every case ran (the session survived the corpus)')
  or diag(join("\n", @lost[ 0 .. ($#lost < 20 ? $#lost : 19) ]));
is(scalar(@wrong_code), 0, 'every call ended in an allowed SQLSTATE or a result')
  or diag(join("\n", @wrong_code));
is(scalar(@wrong_result), 0, 'every call that succeeded gave the correct result')
  or diag(join("\n", @wrong_result));
is(scalar(@changed), 0, 'no failed call changed any data')
  or diag(join("\n", @changed));

if ($ENV{RELIABILITY_VERBOSE})
{
	note("#$_ setup: $setup_note{$_}") for sort { $a <=> $b } keys %setup_note;
	note("#$_->{id} $_->{fn}($_->{desc}): " . ($result{ $_->{id} } // '?') . ' ' . ($message{ $_->{id} } // ''))
	  for @cases;
}

my %by_fn;
$by_fn{ $_->{fn} }++ for @cases;
diag(sprintf('hostile input: %d bad inputs tried (%s); answers: %s; %d s',
		scalar(@cases),
		join(', ', map { "$_ $by_fn{$_}" } sort keys %by_fn),
		join(', ', map { "$_ x$by_code{$_}" } sort keys %by_code), time - $^T));

$node->stop;
done_testing();
