# 020_operations.pl: paysync 0.2 operations on a live cluster: pg_cron
# (Debian's postgresql-15-cron) running paysync jobs for real, the stats view
# against a known workload, and worker_status() in each state.
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
my $slow_mock = start_mock(latency_ms => 300);

my $node = new_paysync_node('ops', conf => qq{
shared_preload_libraries = 'paysync,pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 16
paysync.enabled = off
});
create_mock_channel($node, 'mock', $mock);
create_mock_channel($node, 'statsch', $slow_mock);

sub state_of
{
	return $node->safe_psql('postgres', 'SELECT state FROM paysync.worker_status()');
}

# --- worker_status: disabled --------------------------------------------------
wait_for_sql($node, 'SELECT state FROM paysync.worker_status()', 'disabled',
	'worker_status says disabled with paysync.enabled = off');
like($node->safe_psql('postgres', 'SELECT pid FROM paysync.worker_status()'),
	qr/^\d+$/, 'and gives the worker pid');
is($node->safe_psql('postgres',
		q{SELECT query FROM pg_stat_activity WHERE backend_type = 'paysync worker'}),
	'paysync: disabled (paysync.enabled = off)',
	'pg_stat_activity says what the worker waits for');

# --- stats: pending, due and lag come from the payments -----------------------
$node->safe_psql('postgres', q{
	SELECT paysync.track('lag_' || g, 'statsch', schedule => '{1h}') FROM generate_series(1, 3) g;
	UPDATE paysync.payments SET next_check_at = now() - interval '5 minutes'
	WHERE payment_id = 'lag_1'});
is($node->safe_psql('postgres',
		q{SELECT pending, due, oldest_due_lag >= interval '5 minutes' FROM paysync.stats WHERE channel = 'statsch'}),
	'3|1|t', 'stats: pending, due and oldest_due_lag');
$node->safe_psql('postgres', q{DELETE FROM paysync.payments WHERE payment_id LIKE 'lag_%'});

# --- pg_cron: schedule_maintenance registers one job and updates it -----------
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron');
my $job1 = $node->safe_psql('postgres', q{SELECT paysync.schedule_maintenance('17 3 * * *', '30 days')});
my $job2 = $node->safe_psql('postgres', q{SELECT paysync.schedule_maintenance('0 4 * * *', '60 days')});
like($job1, qr/^\d+$/, 'schedule_maintenance returns a job id');
is($job2, $job1, 'calling it again updates the same job');
is($node->safe_psql('postgres',
		q{SELECT count(*) || '|' || min(schedule) || '|' || min(command) FROM cron.job WHERE jobname = 'paysync-prune'}),
	q{1|0 4 * * *|SELECT paysync.prune('60 days'::interval)},
	'exactly one paysync-prune job, with the new schedule and keep');
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT paysync.schedule_maintenance('every day', '1 day')});
like($err, qr/invalid cron schedule "every day"/, 'a bad cron schedule is an error naming it');

# --- pg_cron runs paysync jobs for real: the sweep (run_once) and prune -------
# With the worker disabled, a pg_cron job calling run_once() every minute is
# what checks payments (the no-worker mode); prune runs every minute too.
$node->safe_psql('postgres', q{
	SELECT paysync.report(p.payment_id, 'succeeded')
	FROM paysync.track('old_final', 'mock', schedule => '{1h}') p;
	SELECT cron.schedule('paysync-sweep', '* * * * *', 'SELECT paysync.run_once()');
	SELECT paysync.schedule_maintenance('* * * * *', '0 seconds');
	SELECT paysync.track('cron_1', 'mock', schedule => '{1s}')});
wait_for_sql($node, q{SELECT status FROM paysync.payments WHERE payment_id = 'cron_1'},
	'succeeded', 'pg_cron ran paysync.run_once() and it checked the payment');
is(mock_requests($mock, 'cron_1'), 1, 'the payment was checked once');
wait_for_sql($node, q{SELECT count(*) FROM paysync.payments WHERE payment_id = 'old_final'},
	'0', 'pg_cron ran paysync.prune() and it removed the final payment');
is($node->safe_psql('postgres', q{
	SELECT count(*) > 0 FROM cron.job_run_details d JOIN cron.job j USING (jobid)
	WHERE j.jobname = 'paysync-sweep' AND d.status = 'succeeded'}),
	't', 'cron.job_run_details records the sweep as succeeded');
$node->safe_psql('postgres', q{
	SELECT cron.unschedule('paysync-sweep');
	SELECT cron.unschedule('paysync-prune')});

# --- stats against a known workload, through the worker ----------------------
$node->safe_psql('postgres', q{ALTER SYSTEM SET paysync.enabled = on; SELECT pg_reload_conf()});
wait_for_sql($node, 'SELECT state FROM paysync.worker_status()', 'idle',
	'worker_status says idle once enabled with nothing to do');
$node->safe_psql('postgres', q{
	SELECT paysync.track('ok_' || g, 'statsch', schedule => '{1s}') FROM generate_series(1, 20) g;
	SELECT paysync.track('err_' || g || '~E500,S', 'statsch', schedule => '{1s}') FROM generate_series(1, 5) g;
	SELECT paysync.track('fail_' || g || '~F', 'statsch', schedule => '{1s}') FROM generate_series(1, 2) g;
	SELECT paysync.track('exp_' || g || '~P', 'statsch', schedule => '{1s}') FROM generate_series(1, 3) g});

# while the 300 ms requests are in flight
my ($saw_running, $saw_in_flight) = (0, 0);
for (1 .. 200)
{
	my $row = $node->safe_psql('postgres', q{
		SELECT w.state || '|' || s.in_flight FROM paysync.worker_status() w, paysync.stats s
		WHERE s.channel = 'statsch'});
	my ($state, $in_flight) = split /\|/, $row;
	$saw_running ||= $state eq 'running';
	$saw_in_flight ||= $in_flight > 0;
	last if $saw_running && $saw_in_flight;
	usleep(20_000);
}
ok($saw_running, 'worker_status says running while requests are in flight');
ok($saw_in_flight, 'stats shows requests in flight');

wait_for_sql($node,
	q{SELECT count(*) FROM paysync.payments WHERE channel = 'statsch' AND status <> 'pending'},
	'30', 'the workload completed');
wait_for_sql($node,
	q{SELECT pending || '|' || due || '|' || in_flight || '|' || checks_1m || '|' || errors_1m
		|| '|' || succeeded_1h || '|' || failed_1h || '|' || expired_1h
	  FROM paysync.stats WHERE channel = 'statsch'},
	'0|0|0|35|5|25|2|3',
	'stats counts: 35 checks (30 + 5 retries), 5 errors, 25 succeeded, 2 failed, 3 expired');
my $latency = $node->safe_psql('postgres',
	q{SELECT latency_p50_ms || '|' || latency_p99_ms FROM paysync.stats WHERE channel = 'statsch'});
my ($p50, $p99) = split /\|/, $latency;
ok($p50 >= 200 && $p50 <= 600, "latency p50 $p50 ms is plausible for a 300 ms channel");
ok($p99 >= $p50 && $p99 <= 1200, "latency p99 $p99 ms is plausible");
like($node->safe_psql('postgres', 'SELECT last_error FROM paysync.worker_status()'),
	qr/^channel statsch: HTTP 500/, 'worker_status shows the last error met');
wait_for_sql($node, 'SELECT state FROM paysync.worker_status()', 'idle',
	'and idle again afterwards');
$node->stop;

# --- worker_status: waiting for extension ------------------------------------
my $fresh = new_paysync_node('ops_fresh', no_extension => 1);
$fresh->safe_psql('postgres', 'CREATE DATABASE other');
$fresh->safe_psql('other', 'CREATE EXTENSION paysync');
ok($fresh->poll_query_until('other', q{SELECT state FROM paysync.worker_status()},
		'waiting for extension'),
	'worker_status (asked from another database) says waiting for extension');
$fresh->stop;

stop_mock($mock);
stop_mock($slow_mock);
done_testing();
