# 031_notify_pressure.pl: a listening session that sits in a transaction
# holds PostgreSQL's notification queue (its tail moves only as fast as the
# slowest listener, and a session in a transaction reads nothing); once
# the queue is full every NOTIFY fails at commit.  Above
# paysync.notify_queue_limit paysync commits events without their NOTIFY:
# payments keep finishing, the worker logs a WARNING naming the likely
# holder, worker_status() counts the skipped notifications, a report()
# caller gets no WARNING, and the example listeners (C, JavaScript) still
# apply every event exactly once through their timer catch-up.  Once the
# stuck transaction ends, notifications are sent again.
#
# The queue is 8 GB, far too big to fill in a test; its usage moves in
# pages of 8 kB (about 1e-6 of it), so the limit is set below one page and
# a few large notifications behind the stuck session make the pressure.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use ListenerTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time usleep);

my $top = "$FindBin::Bin/..";
my $mock = start_mock();
my $limit = '0.0000001';









# The paysync notifications psql printed in a session's output.
sub notifications_in
{
	my ($output) = @_;
	return scalar(() = $output =~ /Asynchronous notification "paysync"/g);
}


# The whole scenario for one example listener.
sub exercise
{
	my ($name, $cmd) = @_;
	local $ENV{PAYSYNC_CATCH_UP_SECONDS} = 2;
	# log_min_messages = log (PaysyncTest's) would hide WARNINGs: LOG ranks
	# above ERROR in the server log.
	my $node = new_paysync_node("pressure_$name",
		conf => "paysync.notify_queue_limit = $limit\nlog_min_messages = warning\n");
	create_mock_channel($node, 'wallet', $mock);
	$node->safe_psql('postgres', q{
		CREATE ROLE order_service LOGIN;
		CREATE SCHEMA shop AUTHORIZATION order_service;
		GRANT EXECUTE ON FUNCTION paysync.events_since(bigint, integer) TO order_service;
	});
	my $uri = sprintf('postgresql:///postgres?host=%s&port=%d&user=order_service',
		$node->host, $node->port);
	my $l = start_listener($cmd, $uri);

	# A witness: a session that listens and, idle between statements, reads.
	my $witness = $node->background_psql('postgres');
	$witness->query_safe('LISTEN paysync');

	# Before any pressure, every event is notified.
	track($node, "${name}_before_", 3, '{200ms}');
	wait_final($node, "${name}_before_", 3, "$name: 3 payments finish");
	wait_applied($node, [$l], "$name: the listener applies them");
	is(notifications_in($witness->query_safe('SELECT 1')), 3,
		"$name: with the queue free, each event is notified");

	# A listener that sits in a transaction, and notifications behind it.
	my $stuck = $node->background_psql('postgres');
	$stuck->query_safe(q{SET application_name = 'stuck_listener'; LISTEN paysync;
		BEGIN; SELECT 1;});
	# (distinct payloads: a transaction sends identical ones only once)
	$node->safe_psql('postgres',
		q{SELECT pg_notify('filler', g || repeat('x', 7000)) FROM generate_series(1, 4) g});
	cmp_ok($node->safe_psql('postgres', 'SELECT pg_notification_queue_usage()'),
		'>', $limit, "$name: the stuck listener holds the queue above the limit");

	# Payments keep finishing; their events are committed without NOTIFY.
	my $log_offset = -s $node->logfile;
	track($node, "${name}_held_", 10, '{200ms}');
	wait_final($node, "${name}_held_", 10,
		"$name: 10 payments finish while the queue is held");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM paysync.events WHERE payment_id LIKE '${name}_held_%'"),
		'10', "$name: their events are committed");
	is(notifications_in($witness->query_safe('SELECT 1')), 0,
		"$name: no notification is sent for them");
	wait_applied($node, [$l],
		"$name: the listener applies them all the same (its timer catch-up)");
	is( $node->safe_psql('postgres', qq{
			SELECT notifications_skipped >= 10 AND notify_queue_usage > $limit
			FROM paysync.worker_status()}),
		't', "$name: worker_status() shows the skipped notifications and the queue usage");
	ok( $node->wait_for_log(
			qr/WARNING:  paysync skipped \d+ notifications: the notification queue usage \S+ is above paysync.notify_queue_limit \(1e-07\)/,
			$log_offset),
		"$name: the worker logs a WARNING");
	like(
		slurp_file($node->logfile, $log_offset),
		qr/Oldest open transactions of client sessions: pid \d+ \(application_name "stuck_listener", idle in transaction, transaction started [^)]+\)/,
		"$name: it names the stuck listener");

	# A report() commits its event too, and its caller gets no WARNING.
	my $skipped = $node->safe_psql('postgres',
		'SELECT notifications_skipped FROM paysync.worker_status()');
	$node->safe_psql('postgres',
		"SELECT paysync.track('${name}_reported', 'wallet', schedule => '{1h}')");
	my ($rc, $out, $err) = $node->psql('postgres',
		"SELECT paysync.report('${name}_reported', 'succeeded')");
	is("$rc|$out|$err", '0|t|', "$name: report() succeeds without a WARNING");
	is( $node->safe_psql('postgres',
			'SELECT notifications_skipped FROM paysync.worker_status()'),
		$skipped + 1, "$name: its notification is counted as skipped");
	wait_applied($node, [$l], "$name: the listener applies the reported event");
	is(notifications_in($witness->query_safe('SELECT 1')), 0,
		"$name: no notification is sent for it");

	# The stuck transaction ends: its session reads the queue, the queue
	# frees up, and notifications are sent again.
	$log_offset = -s $node->logfile;
	$stuck->query_safe('COMMIT');
	wait_for_sql($node, "SELECT pg_notification_queue_usage() <= $limit", 't',
		"$name: once the stuck transaction ends the queue frees up");
	track($node, "${name}_after_", 3, '{200ms}');
	wait_final($node, "${name}_after_", 3, "$name: 3 more payments finish");
	wait_applied($node, [$l], "$name: the listener applies them");
	is(notifications_in($witness->query_safe('SELECT 1')), 3,
		"$name: their notifications are sent again");
	ok($node->wait_for_log(qr/LOG:  paysync notifications are sent again/, $log_offset),
		"$name: the worker says so in the log");

	my @lines = applied_lines($l);
	my %seen;
	my @twice = grep { $seen{ (split / /)[1] }++ } @lines;
	is_deeply(\@twice, [], "$name: no event applied twice");
	is_deeply([ sort @lines ], [ sort(event_lines($node)) ],
		"$name: the applied events are exactly paysync.events");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM paysync.events'),
		'17', "$name: 17 events in all");
	ok(stop_listener($l), "$name: SIGTERM stops the listener");
	note("$name listener's stderr:\n$l->{err}");
	$witness->quit;
	$stuck->quit;
	$node->stop;
}

# --- every example listener: C (libpq), JavaScript (node-postgres), Python
# (psycopg 3)
exercise(@$_) for example_listeners($top);

stop_mock($mock);
done_testing();
