# ListenerTest.pm: what the tests of the example order-service listeners
# share (t/030_examples.pl, t/031_notify_pressure.pl): running a listener,
# reading what it applied, and waiting for it.
package ListenerTest;

use strict;
use warnings;

use Exporter 'import';
use IPC::Run;
use Test::More;
use Time::HiRes qw(time usleep);

use PaysyncTest;

our @EXPORT = qw(run_cmd start_listener pump_listener applied_lines wait_stderr
  event_lines wait_applied wait_final track stop_listener);

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

# paysync.events as the lines a listener prints; where is an SQL condition.
sub event_lines
{
	my ($node, $where) = @_;
	$where ||= 'true';
	return split /\n/, $node->safe_psql('postgres', qq{
		SELECT 'applied ' || event_id || ' ' || payment_id || ' ' || status
		FROM paysync.events WHERE $where ORDER BY event_id});
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

1;
