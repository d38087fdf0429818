# 060_politeness.pl: a channel's circuit breaker and its request rate.
#
# Breaker: pause_after_errors error answers in a row pause the channel; then
# one probe at a time, the pause doubling from 1 s; payments waiting meanwhile
# get no error; a good answer resumes it; one LOG line for each change;
# paysync.stats shows state and paused_since.  Without a breaker
# (pause_after_errors 0) the errors go on at each payment's own pace.
# Rate: never more than max_rps requests arrive at the channel in any
# 1-second window, with both workers sharing the limit; a 429 halves it.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $mock = start_mock();
my $node = new_paysync_node('politeness', conf => "paysync.workers = 2\n");

# The arrival times (µs) of the requests whose payment id matches $re.
sub arrivals
{
	my ($re) = @_;
	return sort { $a <=> $b } map { $_->[0] } grep { $_->[2] =~ $re } mock_log($mock);
}

# How many requests arrived whose payment id matches $re.
sub n_arrivals
{
	my ($re) = @_;
	my @t = arrivals($re);
	return scalar(@t);
}

# The most arrivals in any 1-second window.
sub busiest_second
{
	my @t = @_;
	my ($best, $j) = (0, 0);
	for my $i (0 .. $#t)
	{
		$j++ while $j < @t && $t[$j] < $t[$i] + 1_000_000;
		$best = $j - $i if $j - $i > $best;
	}
	return $best;
}

# Server log lines matching $re, from $offset on.
sub log_lines
{
	my ($re, $offset) = @_;
	my $log = slurp_file($node->logfile, $offset // 0);
	return scalar(() = $log =~ /$re/g);
}

is(sql($node, 'SELECT count(*) FROM paysync.worker_status() WHERE pid IS NOT NULL'), '2',
	'two workers run');

# --- breaker ----------------------------------------------------------------
my $log_offset = -s $node->logfile;
create_mock_channel($node, 'brk', $mock, '{"pause_after_errors": 3, "max_inflight": 1}');
sql($node, q{SELECT paysync.track('b' || i || '~E503', 'brk', schedule => '{1s}')
			 FROM generate_series(1, 5) i});
wait_for_sql($node, q{SELECT state FROM paysync.stats WHERE channel = 'brk'}, 'paused',
	'three error answers in a row pause the channel');
is(n_arrivals(qr/^b/), 3, 'the pause came right after the third error answer');
is(sql($node, q{SELECT paused_since IS NOT NULL AND paused_since > now() - interval '1 min'
				FROM paysync.stats WHERE channel = 'brk'}), 't', 'stats show since when');

# three probes: 1 s, 2 s, then 4 s apart
my $deadline = time + 30;
usleep(100_000) while time < $deadline && n_arrivals(qr/^b/) < 6;
my @b = arrivals(qr/^b/);
is(scalar(@b), 6, 'paused, the channel got three probes in about 7 s');
my @gaps = map { ($b[$_] - $b[ $_ - 1 ]) / 1e6 } 3 .. 5;
ok($gaps[0] >= 0.95 && $gaps[0] < 2.5, "the first probe came 1 s after the pause ($gaps[0] s)");
ok($gaps[1] >= 1.95 && $gaps[1] < 3.5, "the second 2 s after the first ($gaps[1] s)");
ok($gaps[2] >= 3.95 && $gaps[2] < 6, "the third 4 s after the second ($gaps[2] s)");
# (the last answer is recorded a moment after its request arrived)
$node->poll_query_until('postgres',
	q{SELECT sum(errors) >= } . scalar(@b) . q{ FROM paysync.payments WHERE payment_id LIKE 'b%'});
is(sql($node, q{SELECT sum(errors) FROM paysync.payments WHERE payment_id LIKE 'b%'}),
	scalar(@b), 'each error counted belongs to a request: none for the pause');

# a payment that waits through the pause, then answers the probe well
sql($node, q{SELECT paysync.track('ok1~S', 'brk', schedule => '{1h}')});
sql($node, q{SELECT paysync.report(payment_id, 'cancelled') FROM paysync.payments
			 WHERE payment_id LIKE 'b%'});
sql($node, q{SELECT paysync.check_now('ok1~S')});
usleep(500_000);
is(sql($node, q{SELECT status FROM paysync.payments WHERE payment_id = 'ok1~S'}), 'pending',
	'a payment due during the pause waits');
wait_for_sql($node, q{SELECT status FROM paysync.payments WHERE payment_id = 'ok1~S'},
	'succeeded', 'the next probe asks about it');
is(sql($node, q{SELECT errors = 0 AND last_error IS NULL FROM paysync.payments
				WHERE payment_id = 'ok1~S'}), 't',
	'no error counted for its wait (last_error would keep one)');
is(n_arrivals(qr/^ok1/), 1, 'one request for it');
my @probe = arrivals(qr/^ok1/);
ok(($probe[0] - $b[5]) / 1e6 >= 7.9, 'the probe after the third failed one came 8 s later');
wait_for_sql($node, q{SELECT state FROM paysync.stats WHERE channel = 'brk'}, 'active',
	'a good answer resumes the channel');
is(sql($node, q{SELECT paused_since IS NULL FROM paysync.stats WHERE channel = 'brk'}), 't',
	'no paused_since once active');
is(log_lines(qr/paysync paused channel "brk" after 3 error answers in a row/, $log_offset), 1,
	'one LOG line for the pause');
is(log_lines(qr/paysync resumed channel "brk"/, $log_offset), 1, 'one LOG line for the resume');

# erroring: pending payments whose last 10 or more answers were errors
sql($node, q{SELECT paysync.track('e1~P', 'brk', schedule => '{1h}')});
sql($node, q{UPDATE paysync.payments SET errors = 10 WHERE payment_id = 'e1~P'});
is(sql($node, q{SELECT erroring FROM paysync.stats WHERE channel = 'brk'}), '1',
	'stats count the erroring payments');

# A paused channel with no limits of its own (max_inflight, max_rps): its
# payments are not claimed during the pause, they keep their place in due
# order; only the probes take one each.
create_mock_channel($node, 'brk2', $mock, '{"pause_after_errors": 2}');
sql($node, q{SELECT paysync.track('x' || i || '~E503', 'brk2', schedule => '{1s}')
			 FROM generate_series(1, 2) i});
wait_for_sql($node, q{SELECT state FROM paysync.stats WHERE channel = 'brk2'}, 'paused',
	'a channel without limits pauses too');
sql($node, q{SELECT paysync.track('q' || i || '~E503', 'brk2', schedule => '{1ms}')
			 FROM generate_series(1, 10) i});
usleep(2_000_000);
my $unclaimed = sql($node, q{SELECT count(*) FROM paysync.payments
							 WHERE payment_id LIKE 'q%' AND attempts = 0});
ok($unclaimed >= 6,
	"its due payments stay unclaimed during the pause, but for the probes ($unclaimed of 10 unclaimed)");
sql($node, q{SELECT paysync.report(payment_id, 'cancelled') FROM paysync.payments
			 WHERE channel = 'brk2' AND status = 'pending'});

# without a breaker the errors go on at each payment's pace
create_mock_channel($node, 'nobrk', $mock, '{"pause_after_errors": 0, "max_inflight": 1}');
sql($node, q{SELECT paysync.track('n' || i || '~E503', 'nobrk', schedule => '{1s}')
			 FROM generate_series(1, 3) i});
sleep 7;
ok(n_arrivals(qr/^n/) >= 7, 'pause_after_errors 0: no pause (' . n_arrivals(qr/^n/) . ' requests in 7 s)');
is(sql($node, q{SELECT state FROM paysync.stats WHERE channel = 'nobrk'}), 'active',
	'and the channel stays active');
is(log_lines(qr/paysync paused channel "nobrk"/, $log_offset), 0, 'no LOG line of a pause');
sql($node, q{SELECT paysync.report(payment_id, 'cancelled') FROM paysync.payments
			 WHERE payment_id LIKE 'n%' AND status = 'pending'});

# --- rate ---------------------------------------------------------------------
create_mock_channel($node, 'rate', $mock, '{"max_rps": 20}');
sql($node, q{SELECT paysync.track('r' || i || '~S', 'rate', schedule => '{1s}')
			 FROM generate_series(1, 100) i});
wait_for_sql($node, q{SELECT count(*) FROM paysync.payments
					 WHERE payment_id LIKE 'r%' AND status = 'succeeded'}, '100',
	'all 100 payments of a channel with max_rps 20 are checked');
my @r = arrivals(qr/^r/);
is(scalar(@r), 100, 'one request each');
my $busiest = busiest_second(@r);
ok($busiest <= 20, "never more than 20 requests in a second, both workers together (most: $busiest)");
my $rate = 99 / (($r[-1] - $r[0]) / 1e6);
ok($rate >= 15, sprintf('and not much fewer: %.1f requests a second', $rate));
is(sql($node, q{SELECT count(*) FROM paysync.payments
				WHERE payment_id LIKE 'r%' AND (errors > 0 OR last_error IS NOT NULL)}), '0',
	'waiting for the rate counts no error (last_error would keep one)');

# a 429 halves the rate for a while
create_mock_channel($node, 'slow', $mock, '{"max_rps": 20}');
sql($node, q{SELECT paysync.track('s0~E429,S', 'slow', schedule => '{1s}')});
$deadline = time + 30;
usleep(100_000) while time < $deadline && !n_arrivals(qr/^s0/);
sql($node, q{SELECT paysync.track('s' || i || '~S', 'slow', schedule => '{1s}')
			 FROM generate_series(1, 40) i});
wait_for_sql($node, q{SELECT count(*) FROM paysync.payments
					 WHERE payment_id ~ '^s[0-9]+~S$' AND status = 'succeeded'}, '40',
	'the payments after a 429 are checked');
$busiest = busiest_second(arrivals(qr/^s[0-9]+~S$/));
ok($busiest <= 10, "after a 429, at most half of max_rps in a second (most: $busiest)");

stop_mock($mock);
done_testing();
