# 062_workers.pl: paysync.workers = 2.  The workers split the due payments
# and never check one payment twice at once, even when one of them is
# killed hard mid-flight; together they stay within paysync.max_inflight
# and a channel's max_inflight, with run_once() beside them too;
# worker_status() has a row for each.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $mock = start_mock(latency_ms => 200);
my $capped_mock = start_mock(latency_ms => 200);
my $node = new_paysync_node('workers', conf => qq{
paysync.workers = 2
paysync.max_inflight = 16
});

my @status = split /\n/, sql($node,
	'SELECT worker, pid IS NOT NULL, state FROM paysync.worker_status() ORDER BY worker');
is(scalar(@status), 2, 'worker_status() has one row per worker');
like($status[0], qr/^1\|t\|/, 'worker 1 runs');
like($status[1], qr/^2\|t\|/, 'worker 2 runs');
is(sql($node, q{SELECT count(DISTINCT pid) FROM paysync.worker_status()}), '2',
	'two processes');

# --- shared caps ----------------------------------------------------------------
create_mock_channel($node, 'wide', $mock);
create_mock_channel($node, 'capped', $capped_mock, '{"max_inflight": 4}');
sql($node, q{SELECT paysync.track('w' || i || '~S', 'wide', schedule => '{1s}')
			 FROM generate_series(1, 400) i});
sql($node, q{SELECT paysync.track('c' || i || '~S', 'capped', schedule => '{1s}')
			 FROM generate_series(1, 60) i});
wait_for_sql($node, q{SELECT count(*) FROM paysync.payments WHERE status = 'succeeded'},
	'460', 'both channels\' payments are checked');
# Every answer takes 200 ms: requests that arrived within 190 ms of one
# another were all in flight at once.  (The mock's own high-water mark
# counts a request until its completion callback runs, which may come after
# the client has its answer and another worker has sent the next request.)
my @all = sort { $a->[0] <=> $b->[0] }
  map { [ $_->[0], $_->[2] =~ /^w/ ? 'wide' : 'capped' ] }
  (mock_log($mock), mock_log($capped_mock));
my $most_all = most_at_once(map { $_->[0] } @all);
my $most_capped = most_at_once(map { $_->[0] } grep { $_->[1] eq 'capped' } @all);
ok($most_all <= 16,
	"paysync.max_inflight 16 holds for both workers and channels together (most at once: $most_all)");
ok($most_all >= 12, 'and the workers do use it');
ok($most_capped <= 4, "a channel's max_inflight 4 holds for both workers together (most: $most_capped)");

# --- run_once() beside the workers ------------------------------------------------
# The workers take the capped channel's payments 4 at a time; run_once()
# claims others of them meanwhile, and its requests wait for the slots the
# workers hold: still no more than 4 at once.
sql($node, q{SELECT paysync.track('r' || i || '~S', 'capped', schedule => '{1ms}')
			 FROM generate_series(1, 40) i});
usleep(50_000);
my $by_hand = sql($node, 'SELECT paysync.run_once(10)');
ok($by_hand > 0, "run_once() checked payments beside the workers ($by_hand)");
wait_for_sql($node, q{SELECT count(*) FROM paysync.payments WHERE payment_id LIKE 'r%' AND status = 'succeeded'},
	'40', 'the workers check the rest');
my $most_run_once = most_at_once(map { $_->[0] } grep { $_->[2] =~ /^r/ } mock_log($capped_mock));
ok($most_run_once <= 4,
	"a channel's max_inflight 4 holds for run_once() and the workers together (most: $most_run_once)");

# --- one worker killed hard mid-flight ------------------------------------------
`curl -s -X POST http://127.0.0.1:$mock->{port}/_reset`;
sql($node, q{SELECT paysync.track('k' || i || '~S', 'wide', schedule => '{1s}')
			 FROM generate_series(1, 1000) i});
$node->poll_query_until('postgres',
	q{SELECT count(*) > 200 FROM paysync.payments WHERE payment_id LIKE 'k%' AND status = 'succeeded'})
  or die 'the checks never got going';
my $victim = sql($node, 'SELECT pid FROM paysync.worker_status() WHERE worker = 2');
ok(kill('KILL', $victim), "worker 2 (pid $victim) killed with SIGKILL");
wait_for_sql($node, q{SELECT count(*) FROM paysync.payments WHERE payment_id LIKE 'k%' AND status = 'succeeded'},
	'1000', 'every payment is checked in the end');
is(sql($node, q{SELECT count(*) FROM paysync.events WHERE payment_id LIKE 'k%'}), '1000',
	'one event per payment');
my $stats = mock_stats($mock);
is($stats->{max_in_flight_per_id}, 1, 'never two requests for one payment at once');
is($stats->{overlapping}, 0, 'no overlapping request');
$node->poll_query_until('postgres',
	q{SELECT count(DISTINCT pid) = 2 FROM paysync.worker_status() WHERE pid IS NOT NULL})
  or diag(sql($node, 'SELECT * FROM paysync.worker_status()'));
ok(sql($node, q{SELECT pid FROM paysync.worker_status() WHERE worker = 2}) ne $victim,
	'worker 2 runs again, as a new process');

stop_mock($mock);
stop_mock($capped_mock);
done_testing();

# The most requests that arrived within 190 ms of one another, given their
# arrival times in µs: every answer takes 200 ms, so they were all
# in flight at once.
sub most_at_once
{
	my @at = sort { $a <=> $b } @_;
	my $most = 0;
	for my $i (0 .. $#at)
	{
		my $n = 0;
		$n++ while $i + $n < @at && $at[ $i + $n ] < $at[$i] + 190_000;
		$most = $n if $n > $most;
	}
	return $most;
}
