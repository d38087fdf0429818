# ListenerTest.pm: what the tests of the example order-service listeners
# share (t/030_examples.pl, t/031_notify_pressure.pl): running a listener,
# reading what it applied, and waiting for it.
package ListenerTest;

use strict;
use warnings;

use Exporter 'import';
use File::Path qw(make_path);
use IPC::Run;
use Test::More;
use Time::HiRes qw(time usleep);

use PaysyncTest;

our @EXPORT = qw(run_cmd start_listener pump_listener applied_lines wait_stderr
  event_lines refund_lines refund_event_lines wait_applied wait_final track stop_listener example_listeners);

# Runs a command; returns its exit status and its output (stdout + stderr).
sub run_cmd
{
	my (@cmd) = @_;
	my $output = '';
	my $ok = eval { IPC::Run::run(\@cmd, '>', \$output, '2>&1') };
	return ($ok ? 0 : 1, $output . ($@ || ''));
}

# Starts a listener command with the connection URI appended.
sub start_listener
{
	my ($cmd, $uri) = @_;
	my $l = { out => '', err => '' };
	$l->{h} = IPC::Run::start([ @$cmd, $uri ], '>', \$l->{out}, '2>', \$l->{err});
	return $l;
}

# Collects what the listener wrote so far.
sub pump_listener
{
	my ($l) = @_;
	for (1 .. 5)
	{
		last unless $l->{h}->pumpable;
		$l->{h}->pump_nb;
	}
}

# The "applied <event_id> <payment_id> <status>" lines printed so far.
sub applied_lines
{
	my ($l) = @_;
	pump_listener($l);
	return grep { /^applied \d+ \S+ \S+$/ } split /\n/, $l->{out};
}

# Waits (up to 10 s) until the listener's stderr matches re.
sub wait_stderr
{
	my ($l, $re) = @_;
	my $deadline = time + 10;
	while ($l->{err} !~ $re && time < $deadline)
	{
		pump_listener($l);
		usleep(50_000);
	}
	return $l->{err} =~ $re;
}

# paysync.events of payments as the lines a listener prints; where is an
# SQL condition.
sub event_lines
{
	my ($node, $where) = @_;
	$where ||= 'true';
	return split /\n/, $node->safe_psql('postgres', qq{
		SELECT 'applied ' || event_id || ' ' || payment_id || ' ' || status
		FROM paysync.events WHERE refund_id IS NULL AND ($where) ORDER BY event_id});
}

# The "refund <event_id> <refund_id> <payment_id> <status>" lines printed so
# far.
sub refund_lines
{
	my ($l) = @_;
	pump_listener($l);
	return grep { /^refund \d+ \S+ \S+ \S+$/ } split /\n/, $l->{out};
}

# paysync.events of refunds as the lines a listener prints.
sub refund_event_lines
{
	my ($node) = @_;
	return split /\n/, $node->safe_psql('postgres', q{
		SELECT 'refund ' || event_id || ' ' || refund_id || ' ' || payment_id || ' ' || status
		FROM paysync.events WHERE refund_id IS NOT NULL ORDER BY event_id});
}

# Waits until the listeners together printed every line in paysync.events;
# fails with what is missing if not.  Up to 20 s: less than the 60 s
# catch-up timer the listeners are given here (PAYSYNC_CATCH_UP_SECONDS),
# so a listener that fails to catch up when it should cannot pass by
# catching up later.  (The timer itself is tested in 031_notify_pressure.)
sub wait_applied
{
	my ($node, $listeners, $what) = @_;
	my $deadline = time + 20;
	my %missing;
	while (1)
	{
		my %got = map { $_ => 1 } map { applied_lines($_) } @$listeners;
		%missing = map { $_ => 1 } grep { !$got{$_} } event_lines($node);
		last if !%missing || time > $deadline;
		last if grep { !$_->{stopped} && !$_->{h}->pumpable } @$listeners;
		usleep(100_000);
	}
	ok(!%missing, $what);
	diag("missing: " . join(', ', sort keys %missing) . "\nlistener stderr:\n"
		  . join('', map { $_->{err} } @$listeners))
	  if %missing;
}

# Waits until count payments whose id starts with prefix have their final
# status from the channel (none expired).
sub wait_final
{
	my ($node, $prefix, $count, $what) = @_;
	wait_for_sql($node, qq{
		SELECT count(*) FROM paysync.payments
		WHERE payment_id LIKE '${prefix}%' AND status NOT IN ('pending', 'expired')},
		$count, $what);
}

# Tracks payments prefix1..prefixN; script(i) gives each id's mock script.
sub track
{
	my ($node, $prefix, $n, $schedule, $script) = @_;
	my @values = map {
		my $id = "$prefix$_" . ($script ? '~' . $script->($_) : '');
		"paysync.track('$id', 'wallet', schedule => '$schedule')"
	} 1 .. $n;
	$node->safe_psql('postgres', 'SELECT ' . join(', ', map { "($_).status" } @values));
}

# Sends SIGTERM; true if the listener exited with status 0 within 10 s.
sub stop_listener
{
	my ($l) = @_;
	$l->{stopped} = 1;
	$l->{h}->signal('TERM');
	my $deadline = time + 10;
	while ($l->{h}->pumpable && time < $deadline)
	{
		$l->{h}->pump_nb;
		usleep(50_000);
	}
	if ($l->{h}->pumpable)
	{
		$l->{h}->kill_kill;
		return 0;
	}
	$l->{h}->finish;
	return $l->{h}->result(0) == 0;
}

# The example listeners that can run here, as [name, command] pairs: the C
# one built (a test of its own), the JavaScript one with its modules
# installed (npm ci, if not done already), the Python one if psycopg 3 is
# there; each that cannot run is a skipped test saying why.
sub example_listeners
{
	my ($top) = @_;
	my @listeners;

	my ($rc, $output) = run_cmd('make', '-s', '-C', "$top/examples/listener_c");
	is($rc, 0, 'the C example builds with -Wall -Wextra -Werror') or diag($output);
	push @listeners, [ 'c', ["$top/examples/listener_c/listener"] ] if $rc == 0;

  SKIP:
	{
		my ($no_node) = run_cmd('node', '--version');
		skip 'node is not installed: the JavaScript example is not tested', 1 if $no_node;
		my $dir = "$top/examples/listener_js";
		my $npm_rc = 0;
		if (!-e "$dir/node_modules/pg/package.json")
		{
			# npm needs a writable HOME and cache; the tests run as postgres.
			local $ENV{HOME} = "$PostgreSQL::Test::Utils::tmp_check/npm_home";
			local $ENV{npm_config_cache} = "$PostgreSQL::Test::Utils::tmp_check/npm_cache";
			make_path($ENV{HOME});
			($npm_rc, $output) = run_cmd('npm', 'ci', '--prefix', $dir,
				'--no-audit', '--no-fund', '--loglevel=error');
			is($npm_rc, 0, 'npm ci installs the JavaScript example\'s dependencies')
			  or diag($output);
		}
		push @listeners, [ 'js', [ 'node', "$dir/listener.js" ] ] if $npm_rc == 0;
	}

  SKIP:
	{
		my ($no_psycopg, $why) = run_cmd('python3', '-c', 'import psycopg');
		skip "python3 with psycopg 3 is not installed: the Python example is not tested ($why)", 1
		  if $no_psycopg;
		push @listeners, [ 'py', [ 'python3', "$top/examples/listener_py/listener.py" ] ];
	}
	return @listeners;
}

1;
