# 002_worker.pl: the worker's life and the paths where money could be lost:
# rolled-back tracks, reports racing polls, SIGKILL and immediate restarts
# mid-flight, no transaction held while requests fly, settings reloads,
# waiting for the extension, run_once without the worker, standby/promotion.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mock = start_mock();
my $slow_mock = start_mock(latency_ms => 1500);

my $node = new_paysync_node('worker');
create_mock_channel($node, 'mock', $mock);
create_mock_channel($node, 'slow', $slow_mock, '{"timeout_ms": 5000}');

sub worker_pid
{
	my ($n) = @_;
	return $n->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'paysync worker'");
}

# Each payment in ids has exactly one event, and its status matches it.
sub one_event_each
{
	my ($n, $ids, $what) = @_;
	my $list = join(',', map { "'$_'" } @$ids);
	my $bad = $n->safe_psql('postgres', qq{
		SELECT count(*) FROM paysync.payments p
		WHERE p.payment_id IN ($list)
		  AND (SELECT count(*) FROM paysync.events e
			   WHERE e.payment_id = p.payment_id AND e.status = p.status) <> 1
		   OR p.payment_id IN ($list)
		  AND (SELECT count(*) FROM paysync.events e WHERE e.payment_id = p.payment_id) <> 1});
	is($bad, '0', "$what: exactly one event per payment");
}

ok(worker_pid($node) =~ /^\d+$/, 'worker shows in pg_stat_activity as paysync worker');

# --- a rolled-back track is never polled ------------------------------------
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT paysync.track('rolled_back', 'mock', schedule => '{1s}');
	ROLLBACK;
});
$node->safe_psql('postgres',
	q{SELECT paysync.track('committed_after', 'mock', schedule => '{2s}')});
wait_for_sql($node,
	q{SELECT status FROM paysync.payments WHERE payment_id = 'committed_after'},
	'succeeded', 'a committed track is checked');
is(mock_requests($mock, 'rolled_back'), 0, 'a rolled-back track is never polled');

# --- the commit wakes the worker ------------------------------------------------
# Nothing is due for an hour, so the worker sleeps; check_now must wake it at
# commit (its idle re-check is 10 s; each of these must arrive well before).
$node->safe_psql('postgres',
	q{SELECT paysync.track('woken_' || g, 'mock', schedule => '{1h}') FROM generate_series(1, 3) g});
for my $i (1 .. 3)
{
	sleep 1;
	my $start = time;
	$node->safe_psql('postgres', "SELECT paysync.check_now('woken_$i')");
	$node->poll_query_until('postgres',
		"SELECT status = 'succeeded' FROM paysync.payments WHERE payment_id = 'woken_$i'");
	cmp_ok(time - $start, '<', 5, "check_now woke the worker at commit ($i)");
}

# --- a report racing a poll: exactly one event -------------------------------
# The slow channel answers PAID after 1.5 s; the report lands while the
# request is in flight.
$node->safe_psql('postgres', q{
	SELECT paysync.track('race_same', 'slow', schedule => '{1s}');
	SELECT paysync.track('race_other', 'slow', schedule => '{1s}');
});
$node->poll_query_until('postgres',
	q{SELECT count(*) = 2 FROM paysync.payments WHERE payment_id LIKE 'race_%' AND claimed_until IS NOT NULL});
is($node->safe_psql('postgres', q{SELECT paysync.report('race_same', 'succeeded', 'CALLBACK')}),
	't', 'report while the poll is in flight takes effect');
is($node->safe_psql('postgres', q{SELECT paysync.report('race_other', 'failed', 'CALLBACK')}),
	't', 'report of another final status while the poll is in flight takes effect');
wait_for_sql($node,
	q{SELECT count(*) FROM paysync.payments WHERE payment_id LIKE 'race_%' AND claimed_until IS NULL},
	'2', 'the in-flight answers came back');
sleep 1;
is( $node->safe_psql('postgres',
		q{SELECT string_agg(payment_id || ':' || status || ':' || source, ',' ORDER BY payment_id) FROM paysync.events WHERE payment_id LIKE 'race_%'}),
	'race_other:failed:report,race_same:succeeded:report',
	'the poll answering after the report adds no event and changes nothing');
is(status_of($node, 'race_other'), 'failed', 'the poll did not overwrite the reported status');
is(mock_requests($slow_mock, 'race_same'), 1, 'the race payment was polled once');

# A poll that answers first, then the callback: the same status is a no-op,
# another final status is an error.
$node->safe_psql('postgres', q{SELECT paysync.track('poll_first', 'mock', schedule => '{1s}')});
wait_for_sql($node, q{SELECT status FROM paysync.payments WHERE payment_id = 'poll_first'},
	'succeeded', 'poll answered first');
is($node->safe_psql('postgres', q{SELECT paysync.report('poll_first', 'succeeded')}),
	'f', 'the late callback with the same status changes nothing');
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT paysync.report('poll_first', 'failed')});
like($err, qr/already succeeded/, 'the late callback with another status is an error');
one_event_each($node, ['poll_first'], 'poll then report');

# --- no transaction is open while requests are in flight ---------------------
# 12 checks, fewer than a cold channel's window (16), so all go out at once;
# sampled only while all 12 are at the mock: no answer is back yet, so the
# worker has nothing to record and any transaction of its would be held
# across the requests.  (With more, the first answers are recorded, in a
# short transaction, while the later requests are in flight: that is right.)
$node->safe_psql('postgres', q{
	SELECT paysync.track('flight_' || g, 'slow', schedule => '{1s}') FROM generate_series(1, 12) g});
$node->poll_query_until('postgres',
	q{SELECT count(*) > 0 FROM paysync.payments WHERE payment_id LIKE 'flight_%' AND claimed_until IS NOT NULL});
my $seen_open = 0;
my $samples = 0;
for (1 .. 40)
{
	my $in_flight = mock_stats($slow_mock)->{in_flight};
	last if $in_flight == 0 && $samples > 0;
	if ($in_flight == 12)
	{
		my $open = $node->safe_psql('postgres',
			q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'paysync worker' AND xact_start IS NOT NULL});
		# counted only if all 12 were still out after the look
		if (mock_stats($slow_mock)->{in_flight} == 12)
		{
			$samples++;
			$seen_open += $open;
		}
	}
	usleep(50_000);
}
cmp_ok($samples, '>', 0, 'sampled the worker while requests were in flight');
is($seen_open, 0, 'the worker holds no transaction while requests are in flight');
wait_for_sql($node,
	q{SELECT count(*) FROM paysync.payments WHERE payment_id LIKE 'flight_%' AND status = 'succeeded'},
	'12', 'the in-flight batch completed');

# --- SIGKILL mid-flight, then an immediate shutdown mid-flight ---------------
for my $how ('sigkill', 'immediate')
{
	my @ids = map { "${how}_$_" } 1 .. 20;
	$node->safe_psql('postgres',
		"SELECT paysync.track('${how}_' || g, 'slow', schedule => '{1s}') FROM generate_series(1, 20) g");
	# wait until the requests are at the channel, then cut them off
	my $deadline = time + 30;
	usleep(50_000) while mock_requests($slow_mock, "${how}_1") == 0 && time < $deadline;
	if ($how eq 'sigkill')
	{
		my $pid = worker_pid($node);
		kill 'KILL', $pid;
	}
	else
	{
		$node->stop('immediate');
		$node->start;
	}
	wait_for_sql($node,
		"SELECT count(*) FROM paysync.payments WHERE payment_id LIKE '${how}_%' AND status = 'succeeded'",
		'20', "$how: every payment cut off mid-flight completes after its claim lapses");
	one_event_each($node, \@ids, $how);
	cmp_ok($node->safe_psql('postgres',
			"SELECT min(attempts) FROM paysync.payments WHERE payment_id LIKE '${how}_%'"),
		'>=', 1, "$how: attempts recorded");
}

# --- a hostile answer (JSON nested past the parser's stack limit) ------------
# is an error answer for that payment; the worker goes on.
my $pid_before = worker_pid($node);
$node->safe_psql('postgres', q{SELECT paysync.track('deep~D400000,S', 'mock', schedule => '{1s}')});
wait_for_sql($node, q{SELECT status FROM paysync.payments WHERE payment_id = 'deep~D400000,S'},
	'succeeded', 'after the hostile answer the payment is checked again and completes');
like($node->safe_psql('postgres', q{SELECT last_error FROM paysync.payments WHERE payment_id = 'deep~D400000,S'}),
	qr/could not be read: stack depth limit exceeded/, 'the hostile answer was an error, never a status');
is(worker_pid($node), $pid_before, 'the worker did not die on it');

# --- pg_terminate_backend: the worker comes back -----------------------------
my $old_pid = worker_pid($node);
$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_pid)");
$node->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'paysync worker' AND pid <> $old_pid");
$node->safe_psql('postgres', q{SELECT paysync.track('after_terminate', 'mock', schedule => '{1s}')});
wait_for_sql($node, q{SELECT status FROM paysync.payments WHERE payment_id = 'after_terminate'},
	'succeeded', 'the restarted worker carries on after pg_terminate_backend');

# --- paysync.enabled off (SIGHUP): no requests; run_once still works ---------
$node->safe_psql('postgres', q{ALTER SYSTEM SET paysync.enabled = off; SELECT pg_reload_conf()});
sleep 1;
$node->safe_psql('postgres', q{SELECT paysync.track('while_disabled', 'mock', schedule => '{1s}')});
sleep 3;
is(mock_requests($mock, 'while_disabled'), 0, 'paysync.enabled = off: the worker sends nothing');
is($node->safe_psql('postgres', 'SELECT paysync.run_once()'), '1',
	'run_once checks the due payment with the worker disabled');
is(status_of($node, 'while_disabled'), 'succeeded', 'run_once recorded the answer');
$node->safe_psql('postgres', q{ALTER SYSTEM SET paysync.enabled = on; SELECT pg_reload_conf()});
$node->safe_psql('postgres', q{SELECT paysync.track('after_enable', 'mock', schedule => '{1s}')});
wait_for_sql($node, q{SELECT status FROM paysync.payments WHERE payment_id = 'after_enable'},
	'succeeded', 'SIGHUP reload turned the worker back on');

# --- a disabled channel is not polled ---------------------------------------
$node->safe_psql('postgres', q{UPDATE paysync.channels SET enabled = false WHERE name = 'slow'});
$node->safe_psql('postgres', q{
	SELECT paysync.track('disabled_channel', 'slow', schedule => '{1s}');
	SELECT paysync.track('enabled_channel', 'mock', schedule => '{2s}')});
wait_for_sql($node, q{SELECT status FROM paysync.payments WHERE payment_id = 'enabled_channel'},
	'succeeded', 'the enabled channel is polled');
is(mock_requests($slow_mock, 'disabled_channel'), 0, 'a disabled channel is not polled');

$node->stop;

# --- without the preload: run_once does the job ------------------------------
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION paysync');
create_mock_channel($plain, 'mock', $mock);
$plain->safe_psql('postgres', q{
	SELECT paysync.track('plain_' || g, 'mock', schedule => '{1s}') FROM generate_series(1, 5) g;
	SELECT paysync.track('plain_later', 'mock', schedule => '{1h}')});
sleep 2;
is($plain->safe_psql('postgres', 'SELECT paysync.run_once()'), '5',
	'without the preload run_once checks the 5 due payments');
is($plain->safe_psql('postgres', q{SELECT count(*) FROM paysync.events WHERE payment_id LIKE 'plain_%'}),
	'5', 'and records one event each');
is($plain->safe_psql('postgres', 'SELECT paysync.run_once()'), '0',
	'a second run_once finds nothing due');
is(status_of($plain, 'plain_later'), 'pending', 'a payment not yet due is left alone');
$plain->stop;

# --- the worker waits for CREATE EXTENSION, quietly --------------------------
my $fresh = new_paysync_node('fresh', no_extension => 1);
$fresh->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'paysync worker'});
my $waiting_pid = worker_pid($fresh);
sleep 6;
is(worker_pid($fresh), $waiting_pid, 'the worker waits for the extension without restarting');
my $log = slurp_file($fresh->logfile);
my $told = () = $log =~ /waiting for CREATE EXTENSION paysync/g;
is($told, 1, 'it says once that it is waiting');
$fresh->safe_psql('postgres', 'CREATE EXTENSION paysync');
create_mock_channel($fresh, 'mock', $mock);
$fresh->safe_psql('postgres', q{SELECT paysync.track('fresh_1', 'mock', schedule => '{1s}')});
wait_for_sql($fresh, q{SELECT status FROM paysync.payments WHERE payment_id = 'fresh_1'},
	'succeeded', 'once the extension exists the worker checks payments');
$fresh->stop;

# --- a standby does nothing; after promotion it carries on -------------------
my $primary = new_paysync_node('primary', allows_streaming => 1,
	conf => 'paysync.enabled = off');
create_mock_channel($primary, 'mock', $mock);
$primary->backup('bk');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'bk', has_streaming => 1);
$standby->append_conf('postgresql.conf', 'paysync.enabled = on');
$standby->start;
$primary->safe_psql('postgres', q{SELECT paysync.track('standby_1', 'mock', schedule => '{1s}')});
$primary->wait_for_catchup($standby);
sleep 4;
is(mock_requests($mock, 'standby_1'), 0, 'a standby sends no requests');
$primary->stop;
$standby->promote;
wait_for_sql($standby, q{SELECT status FROM paysync.payments WHERE payment_id = 'standby_1'},
	'succeeded', 'after promotion the worker carries on');
$standby->stop;

stop_mock($mock);
stop_mock($slow_mock);
done_testing();
