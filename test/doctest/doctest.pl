#!/usr/bin/env perl
# test/doctest/doctest.pl — the doc test: docs that cannot rot.
#
# Runs every ```sql block of README.md and docs/*.md against a running server
# (PGHOST, PGPORT, PGUSER as for psql; the user must be a superuser) and
# checks that every public name is documented exactly once.  TAP output, one
# test per block and one per name.
#
# The conventions it enforces (README.md and docs/testing.md say the same):
#   - Each file gets a fresh database in which a superuser already ran
#     CREATE EXTENSION pg_idem; its ```sql blocks run in the order printed,
#     in ONE session: psql -X -q -v ON_ERROR_STOP=1.
#   - A ```text block directly after a ```sql block (only blank lines between)
#     is that block's expected output, exactly as psql -X -q prints it,
#     compared after stripping trailing whitespace (and psql's
#     "psql:file:line: " prefix of messages read from a file).
#   - "```sql error": the block must fail (its output must contain an ERROR
#     line); a ```text block after it is compared like any other.
#   - "```sql norun": not run (syntax templates, second-session steps);
#     reported as a skipped test, and listed.
#   - Every public function (every function of schema idem except trigger
#     and event-trigger functions, which pg_idem installs itself; the
#     contract names one trigger function, idem.version_guard, and it counts
#     as public) is documented by exactly one heading "#... idem.<name>(" in
#     docs/*.md; every idem.* setting of pg_settings by exactly one heading
#     "#... idem.<setting>" (no parenthesis); every SQLSTATE the C and SQL
#     code raises (errcode(ERRCODE_...) in src/*.c, USING ERRCODE in
#     src/sql/*.sql, the ID0nn codes defined in src/*.h) by exactly one
#     table row "| CODE |" in docs/errors.md.  A heading or row that names
#     something that does not exist fails too (the docs rotted).
#   - Every relative link to a page that exists reaches a heading that exists
#     (links to pages not on this branch are listed, not failed).
#   - META.json is a valid PGXN META (spec 1.0.0) whose version equals the
#     control file's default_version and the Makefile's EXTVERSION.
#
# Options (the self-test uses them to point the checks at fixtures):
#   --root DIR       the source tree (default: two levels above this file)
#   --docs DIR       where the definitions are looked for (default ROOT/docs)
#   --no-examples / --no-defs / --no-meta   skip a part
#   FILE...          the markdown files to run (default README.md, docs/*.md)

use strict;
use warnings;
use File::Basename qw(dirname basename);
use File::Spec;
use File::Temp qw(tempfile);
use Getopt::Long;
use JSON::PP;
use Test::More;

my $root = File::Spec->rel2abs(dirname(__FILE__) . '/../..');
my ($docs_dir, $no_examples, $no_defs, $no_meta);
GetOptions(
	'root=s'      => \$root,
	'docs=s'      => \$docs_dir,
	'no-examples' => \$no_examples,
	'no-defs'     => \$no_defs,
	'no-meta'     => \$no_meta) or die "usage: $0 [options] [FILE...]\n";
$docs_dir //= "$root/docs";

my @files = @ARGV;
if (!@files)
{
	@files = ("$root/README.md", sort glob("$root/docs/*.md"));
}

my @norun;    # "file:line" of every norun block, listed at the end

run_examples($_) for ($no_examples ? () : @files);
check_links($_)   for ($no_examples ? () : @files);
check_definitions() unless $no_defs;
check_meta()        unless $no_meta;

diag(scalar(@norun) . " norun block(s): " . join(', ', @norun)) if @norun;
done_testing();

# --- running the examples -------------------------------------------------

# Split a markdown file into its ```sql blocks, each with the expected output
# of the ```text block that directly follows it (if any).
sub parse_blocks
{
	my ($path) = @_;
	open(my $fh, '<', $path) or die "$path: $!";
	my @lines = <$fh>;
	close $fh;
	chomp @lines;

	my @blocks;
	my $i = 0;
	while ($i < @lines)
	{
		my $line = $lines[$i];
		if ($line =~ /^```(\S*)\s*(.*?)\s*$/ && $1 ne '')
		{
			my ($lang, $mod) = ($1, $2);
			my $start = $i + 1;    # 1-based line of the fence
			my @body;
			$i++;
			while ($i < @lines && $lines[$i] !~ /^```\s*$/)
			{
				push @body, $lines[$i++];
			}
			die "$path:$start: unterminated code block\n" if $i >= @lines;
			$i++;
			next unless $lang eq 'sql';
			my $block = { line => $start, mod => $mod, sql => \@body };

			# the expected output: a ```text block after blank lines only
			my $j = $i;
			$j++ while $j < @lines && $lines[$j] =~ /^\s*$/;
			if ($j < @lines && $lines[$j] =~ /^```text\s*$/)
			{
				my @out;
				$j++;
				while ($j < @lines && $lines[$j] !~ /^```\s*$/)
				{
					push @out, $lines[$j++];
				}
				$block->{expected} = \@out;
				$block->{expected_line} = $j;
				$i = $j + 1;
			}
			push @blocks, $block;
			next;
		}
		elsif ($line =~ /^```/)
		{
			# an unlabelled fence: skip to its end
			$i++;
			$i++ while $i < @lines && $lines[$i] !~ /^```\s*$/;
		}
		$i++;
	}
	return @blocks;
}

# psql's output normalized for comparison: no "psql:file:line: " prefix, no
# trailing whitespace, no leading or trailing blank lines.
sub normalize
{
	my @l = map { my $x = $_; $x =~ s/^psql:[^:]*:\d+: //; $x =~ s/\s+$//; $x } @_;
	shift @l while @l && $l[0] eq '';
	pop @l   while @l && $l[-1] eq '';
	return join("\n", @l);
}

sub psql_admin
{
	my ($sql, $db) = @_;
	my @cmd = ('psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
		'-d', $db // 'postgres', '-c', $sql);
	my $out = run_capture(@cmd);
	die "psql failed: $sql\n$out->{text}" if $out->{rc} != 0;
	return $out->{text};
}

# Run a command with stderr merged into stdout (psql flushes stdout before
# it writes a message, so the two keep their order).
sub run_capture
{
	my (@cmd) = @_;
	my $pid = open(my $fh, '-|') // die "fork: $!";
	if (!$pid)
	{
		open(STDERR, '>&', \*STDOUT) or die "dup: $!";
		exec(@cmd) or die "exec $cmd[0]: $!";
	}
	local $/;
	my $text = <$fh> // '';
	close $fh;
	return { rc => $? >> 8, text => $text };
}

sub run_examples
{
	my ($path) = @_;
	my $name = File::Spec->abs2rel($path, $root);
	$name = basename($path) if $name =~ m{^\.\./};
	my @blocks = parse_blocks($path);
	return unless @blocks;

	(my $db = lc("doctest_$name")) =~ s/[^a-z0-9]+/_/g;
	my $roles_before = psql_admin("SELECT string_agg(rolname, ',') FROM pg_roles");
	my %had_role = map { $_ => 1 } split /,/, ($roles_before =~ s/\s+$//r);

	psql_admin("DROP DATABASE IF EXISTS $db");
	psql_admin("CREATE DATABASE $db");
	my $c = run_capture('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $db,
		'-c', 'CREATE EXTENSION pg_idem');
	die "CREATE EXTENSION pg_idem in $db failed:\n$c->{text}" if $c->{rc};

	# One script, one session; markers around each block tell the outputs apart.
	my ($sfh, $script) = tempfile('doctest_XXXX', SUFFIX => '.sql', TMPDIR => 1, UNLINK => 1);
	for my $n (0 .. $#blocks)
	{
		my $b = $blocks[$n];
		next if $b->{mod} eq 'norun';
		print $sfh "\\set ON_ERROR_STOP 0\n" if $b->{mod} eq 'error';
		print $sfh "\\echo '\@\@DOCTEST-BEGIN $n\@\@'\n";
		print $sfh "$_\n" for @{ $b->{sql} };
		print $sfh "\\echo '\@\@DOCTEST-END $n\@\@'\n";
		print $sfh "\\set ON_ERROR_STOP 1\n" if $b->{mod} eq 'error';
	}
	close $sfh;
	my $run = run_capture('psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $db, '-f', $script);

	my (%out, %ended, $cur);
	for my $l (split /\n/, $run->{text})
	{
		if ($l =~ /^\@\@DOCTEST-BEGIN (\d+)\@\@$/) { $cur = $1; $out{$cur} = []; next; }
		if ($l =~ /^\@\@DOCTEST-END (\d+)\@\@$/)   { $ended{$1} = 1; undef $cur; next; }
		push @{ $out{$cur} }, $l if defined $cur;
	}

	my $stopped;
	for my $n (0 .. $#blocks)
	{
		my $b     = $blocks[$n];
		my $label = "$name:$b->{line} sql" . ($b->{mod} ne '' ? " $b->{mod}" : '');
		if ($b->{mod} eq 'norun')
		{
			push @norun, "$name:$b->{line}";
		  SKIP: { skip("$label: not run (norun)", 1); }
			next;
		}
		if ($b->{mod} ne '' && $b->{mod} ne 'error')
		{
			fail("$label: unknown block modifier \"$b->{mod}\" (sql, sql error or sql norun)");
			next;
		}
		if (!exists $out{$n})
		{
			fail("$label: not run, the session stopped at " . ($stopped // "an earlier block"));
			next;
		}
		my @got = @{ $out{$n} };
		my $last = (grep { /\S/ && !/^\s*--/ } @{ $b->{sql} })[-1] // '';
		if ($last !~ /;\s*(--.*)?$/ && $last !~ /^\s*\\/ && $last !~ /\\g\w*(\s+\S+)?\s*$/)
		{
			fail("$label: the block does not end with a semicolon");
			next;
		}
		my $errored = grep { /^(psql:[^:]*:\d+: )?(ERROR|FATAL):/ } @got;
		if ($b->{mod} eq 'error' && !$errored)
		{
			fail("$label: expected to fail, but it succeeded");
			diag(normalize(@got));
			next;
		}
		if (!$ended{$n})
		{
			$stopped //= "$name:$b->{line}";
			fail("$label: failed");
			diag(normalize(@got));
			next;
		}
		if ($b->{expected})
		{
			my ($g, $e) = (normalize(@got), normalize(@{ $b->{expected} }));
			if ($g eq $e) { pass("$label: output as shown"); }
			else
			{
				fail("$label: output differs from the ```text block");
				diag("--- shown\n$e\n--- got\n$g");
			}
			next;
		}
		pass("$label: ran");
	}

	# Leave nothing behind: the database, and the roles the examples created.
	psql_admin("DROP DATABASE IF EXISTS $db WITH (FORCE)");
	my $roles_after = psql_admin("SELECT string_agg(rolname, ',') FROM pg_roles");
	for my $r (grep { !$had_role{$_} } split /,/, ($roles_after =~ s/\s+$//r))
	{
		psql_admin(qq{DROP ROLE IF EXISTS "$r"});
	}
}

# --- links ----------------------------------------------------------------

# GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to -.
sub slug
{
	my ($h) = @_;
	$h = lc($h);
	$h =~ s/^\s+|\s+$//g;
	$h =~ s/[^\w\- ]//g;
	$h =~ s/ /-/g;
	return $h;
}

sub anchors_of
{
	my ($path) = @_;
	my (%a, $in_code);
	open(my $fh, '<', $path) or return {};
	while (my $l = <$fh>)
	{
		if ($l =~ /^```/) { $in_code = !$in_code; next; }
		$a{ slug($1) } = 1 if !$in_code && $l =~ /^#+\s+(.*)$/;
	}
	close $fh;
	return \%a;
}

# Every relative link of a page whose target exists must reach an anchor
# that exists.  A target page that does not exist is listed, not failed:
# pages written on other branches are linked before they are merged.
sub check_links
{
	my ($path) = @_;
	my $name = File::Spec->abs2rel($path, $root);
	$name = basename($path) if $name =~ m{^\.\./};
	my $text = do { local $/; open(my $fh, '<', $path) or die "$path: $!"; <$fh> };
	$text =~ s/^```.*?^```//msg;    # links inside code blocks are code
	my (@bad, @absent);
	while ($text =~ /\]\(([^)\s]+)\)/g)
	{
		my $link = $1;
		next if $link =~ m{^[a-z]+:};
		my ($file, $frag) = split /#/, $link, 2;
		my $target = $file eq '' ? $path : File::Spec->rel2abs($file, dirname($path));
		if (!-e $target) { push @absent, $link; next; }
		push @bad, $link if defined $frag && $target =~ /\.md$/ && !anchors_of($target)->{$frag};
	}
	ok(!@bad, "$name: every link reaches an existing heading") or diag("bad: @bad");
	diag("$name links pages not on this branch: " . join(', ', sort { $a cmp $b } keys %{ { map { $_ => 1 } @absent } }))
	  if @absent;
}

# --- documented exactly once ---------------------------------------------

# Headings and error-table rows of the docs, outside code blocks.
sub doc_definitions
{
	my (%heading, %row);
	for my $path (sort glob("$docs_dir/*.md"))
	{
		my $name = basename($path);
		open(my $fh, '<', $path) or die "$path: $!";
		my $in_code = 0;
		while (my $l = <$fh>)
		{
			if ($l =~ /^```/) { $in_code = !$in_code; next; }
			next if $in_code;
			if ($l =~ /^#+\s+`?idem\.([a-z_0-9]+)(\()?/)
			{
				my $kind = defined $2 ? 'function' : 'setting';
				push @{ $heading{$kind}{$1} }, "$name:$.";
			}
			if ($name eq 'errors.md' && $l =~ /^\|\s*`?([0-9A-Z]{5})`?\s*\|/)
			{
				push @{ $row{$1} }, "$name:$.";
			}
		}
		close $fh;
	}
	return (\%heading, \%row);
}

# Every SQLSTATE the extension's code raises.
sub raised_sqlstates
{
	my $pg_config = $ENV{PG_CONFIG} // 'pg_config';
	my $sharedir  = `$pg_config --sharedir`;
	chomp $sharedir;
	my (%code_of);
	open(my $ec, '<', "$sharedir/errcodes.txt") or die "$sharedir/errcodes.txt: $!";
	while (<$ec>)
	{
		next unless /^([0-9A-Z]{5})\s+([EWS])\s+(ERRCODE_\w+)(?:\s+(\w+))?/;
		$code_of{$3} = $1;
		# PL/pgSQL's condition names are those of the errors (type E) only
		$code_of{$4} //= $1 if defined $4 && $2 eq 'E';
	}
	close $ec;
	for my $h (glob("$root/src/*.h"))
	{
		open(my $fh, '<', $h) or die "$h: $!";
		while (<$fh>)
		{
			$code_of{$1} = join('', $2, $3, $4, $5, $6)
			  if /#define\s+(ERRCODE_\w+)\s+MAKE_SQLSTATE\('(.)',\s*'(.)',\s*'(.)',\s*'(.)',\s*'(.)'\)/;
		}
		close $fh;
	}

	my %raised;    # code -> first place raising it
	for my $c (glob("$root/src/*.c"))
	{
		open(my $fh, '<', $c) or die "$c: $!";
		while (<$fh>)
		{
			while (/errcode\((ERRCODE_\w+)\)/g)
			{
				my $code = $code_of{$1} // die "$c:$.: unknown $1\n";
				$raised{$code} //= basename($c) . ":$.";
			}
		}
		close $fh;
	}
	for my $s (glob("$root/src/sql/*.sql"))
	{
		open(my $fh, '<', $s) or die "$s: $!";
		while (<$fh>)
		{
			while (/ERRCODE\s*=\s*'([^']+)'/g)
			{
				my $code = $1 =~ /^[0-9A-Z]{5}$/ ? $1 : ($code_of{$1} // die "$s:$.: unknown condition $1\n");
				$raised{$code} //= basename($s) . ":$.";
			}
		}
		close $fh;
	}
	return \%raised;
}

sub check_definitions
{
	my ($heading, $row) = doc_definitions();

	# The names come from a fresh database with the extension created.
	my $db = 'doctest_definitions';
	psql_admin("DROP DATABASE IF EXISTS $db");
	psql_admin("CREATE DATABASE $db");
	psql_admin('CREATE EXTENSION pg_idem', $db);

	my %functions = map { $_ => 1 } split /\n/, psql_admin(q{
		SELECT DISTINCT p.proname FROM pg_proc p
		 WHERE p.pronamespace = 'idem'::regnamespace
		   AND (p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
		        OR p.proname = 'version_guard')}, $db);
	my %all_functions = map { $_ => 1 } split /\n/, psql_admin(q{
		SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'idem'::regnamespace}, $db);
	my %settings = map { s/^idem\.//r => 1 } split /\n/, psql_admin(q{
		LOAD 'pg_idem'; SELECT name FROM pg_settings WHERE name LIKE 'idem.%'}, $db);
	my %objects = map { $_ => 1 } split /\n/, psql_admin(q{
		SELECT relname FROM pg_class WHERE relnamespace = 'idem'::regnamespace
		UNION SELECT typname FROM pg_type WHERE typnamespace = 'idem'::regnamespace}, $db);

	for my $f (sort keys %functions)
	{
		my @at = @{ $heading->{function}{$f} // [] };
		is(scalar(@at), 1, "function idem.$f() documented exactly once"
			  . (@at ? " (" . join(', ', @at) . ")" : " (no heading naming idem.$f( in docs/)"));
	}
	for my $f (sort keys %{ $heading->{function} })
	{
		next if $functions{$f};
		fail("heading for idem.$f() at " . join(', ', @{ $heading->{function}{$f} })
			  . ($all_functions{$f} ? ": an internal trigger function, not documented by a heading"
				                    : ": no such function"));
	}
	for my $s (sort keys %settings)
	{
		my @at = @{ $heading->{setting}{$s} // [] };
		is(scalar(@at), 1, "setting idem.$s documented exactly once"
			  . (@at ? " (" . join(', ', @at) . ")" : " (no heading naming idem.$s in docs/)"));
	}
	for my $s (sort keys %{ $heading->{setting} })
	{
		next if $settings{$s} || $objects{$s};
		fail("heading for idem.$s at " . join(', ', @{ $heading->{setting}{$s} })
			  . ": no such setting, table, view or type");
	}

	psql_admin("DROP DATABASE $db");

	my $raised = raised_sqlstates();
	for my $code (sort keys %$raised)
	{
		my @at = @{ $row->{$code} // [] };
		is(scalar(@at), 1, "SQLSTATE $code (raised at $raised->{$code}) documented exactly once"
			  . (@at ? " (" . join(', ', @at) . ")" : " (no row \"| $code |\" in docs/errors.md)"));
	}
	for my $code (sort keys %$row)
	{
		next if $raised->{$code};
		# Codes PostgreSQL raises on pg_idem's behalf (a read-only transaction,
		# an aclcheck) may be documented too, but only once.
		ok(@{ $row->{$code} } == 1, "SQLSTATE $code (raised by PostgreSQL for pg_idem) documented at most once ("
			  . join(', ', @{ $row->{$code} }) . ")");
	}
}

# --- META.json -----------------------------------------------------------

sub check_meta
{
	my $text = do { local $/; open(my $fh, '<', "$root/META.json") or die "META.json: $!"; <$fh> };
	my $meta = eval { JSON::PP->new->decode($text) };
	ok($meta, 'META.json is valid JSON') or return diag($@);

	for my $k (qw(name abstract version maintainer license provides meta-spec))
	{
		ok(defined $meta->{$k}, "META.json has \"$k\"");
	}
	is($meta->{'meta-spec'}{version}, '1.0.0', 'META.json follows META spec 1.0.0');
	my $p = $meta->{provides}{pg_idem} // {};
	ok(defined $p->{file} && -f "$root/$p->{file}", 'provides.pg_idem.file exists');
	ok(defined $p->{docfile} && -f "$root/$p->{docfile}", 'provides.pg_idem.docfile exists');
	like($meta->{prereqs}{runtime}{requires}{PostgreSQL} // '', qr/^15\./,
		'prereqs: PostgreSQL 15');

	my $control = do { local $/; open(my $fh, '<', "$root/pg_idem.control") or die $!; <$fh> };
	my $makefile = do { local $/; open(my $fh, '<', "$root/Makefile") or die $!; <$fh> };
	my ($default) = $control =~ /^default_version\s*=\s*'([^']+)'/m;
	my ($extver)  = $makefile =~ /^EXTVERSION\s*=\s*(\S+)/m;
	is($meta->{version}, $default, "META.json version equals the control file's default_version");
	is($p->{version}, $default, 'provides.pg_idem.version equals default_version');
	is($extver, $default, "the Makefile's EXTVERSION equals default_version");
}
