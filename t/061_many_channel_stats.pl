# 061_many_channel_stats.pl: paysync.stats covers every channel, not only
# the first few counted: 300 channels (0.2 kept counters for 64), one
# payment each, and every one of them shows its check in checks_1m and its
# final status in succeeded_1h.  Past the 16,384 channels shared memory
# holds counters for, the channels beyond get none, with one WARNING, and
# their payments are checked all the same.
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

# --- more channels than the table holds ----------------------------------------
# run_once() in one session checks one payment on each of 16,390 channels:
# the first 16,384 counted get counters, the 6 others none.
my $table_size = 16384;
my $beyond = 6;
my $full = new_paysync_node('full_stats', conf => "paysync.enabled = off\n");
sql($full, qq{
	SELECT paysync.create_channel('sub_' || g, 'http_json',
								  'http://127.0.0.1:$mock->{port}', $options)
	FROM generate_series(1, $table_size + $beyond) g});
sql($full, qq{
	SELECT paysync.track('full_' || g || '~S', 'sub_' || g, schedule => '{1s}')
	FROM generate_series(1, $table_size + $beyond) g});
sleep 2;
my ($rc, $checked, $stderr) = $full->psql('postgres',
	'SELECT paysync.run_once(' . ($table_size + $beyond) . ')');
is($checked, $table_size + $beyond, 'run_once checks every payment, on every channel');
is(sql($full, q{SELECT count(*) FROM paysync.payments WHERE status = 'succeeded'}),
	$table_size + $beyond, 'and records every answer');
my @warnings = $stderr =~ /WARNING:  paysync keeps no counters for channel "sub_\d+"/g;
is(scalar(@warnings), 1, 'one WARNING says a channel gets no counters, once per process');
like($stderr, qr/DETAIL:  paysync keeps counters for at most $table_size channels/,
	'... and why');
is(sql($full, q{SELECT count(*) FROM paysync.stats WHERE checks_1m = 1}),
	$table_size, "$table_size channels show their check in paysync.stats");
is(sql($full, q{SELECT count(*) FROM paysync.stats WHERE checks_1m = 0 AND pending = 0}),
	$beyond, 'the others show none (and no error)');
$full->stop;

stop_mock($mock);
done_testing();
