# 061_many_channel_stats.pl: paysync.stats covers every channel, not only
# the first few counted: 300 channels (0.2 kept counters for 64), one
# payment each, and every one of them shows its check in checks_1m and its
# final status in succeeded_1h.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $channels = 300;
my $mock = start_mock();
my $node = new_paysync_node('many_stats');

# one http_json channel on the mock per "sub-merchant", and one payment on
# each that the mock answers PAID at the first check
my $options = qq{'{"path": "/pay/{payment_id}", "status_map": @{[STATUS_MAP]}}'::jsonb};
sql($node, qq{
	SELECT paysync.create_channel('sub_' || g, 'http_json',
								  'http://127.0.0.1:$mock->{port}', $options)
	FROM generate_series(1, $channels) g});
sql($node, qq{
	SELECT paysync.track('pay_' || g || '~S', 'sub_' || g, schedule => '{1s}')
	FROM generate_series(1, $channels) g});

wait_for_sql($node,
	q{SELECT count(*) FROM paysync.payments WHERE status = 'succeeded'},
	$channels, "the worker checks the $channels payments");
is(scalar(mock_log($mock)), $channels, 'with one request each');

is(sql($node, q{
	SELECT count(*) FROM paysync.stats
	WHERE channel LIKE 'sub\_%' AND checks_1m = 1 AND errors_1m = 0
	  AND latency_p50_ms IS NOT NULL AND succeeded_1h = 1}),
	$channels, "paysync.stats shows the check and the success of each of the $channels channels");
is(sql($node, q{
	SELECT string_agg(channel, ', ' ORDER BY channel) FROM paysync.stats
	WHERE channel LIKE 'sub\_%' AND checks_1m IS DISTINCT FROM 1}),
	'', 'no channel is missing its check');
is(sql($node, q{SELECT count(*) FROM paysync._channel_counters()}),
	$channels, 'shared memory holds counters for exactly the channels counted');

# one row for the one worker, which ran all along
is(sql($node, q{SELECT count(*), min(state) FROM paysync.worker_status()}),
	'1|idle', 'worker_status has one row, for the idle worker');

unlike(slurp_file($node->logfile), qr/keeps no counters/,
	'no channel went without counters');

$node->stop;
stop_mock($mock);
done_testing();
