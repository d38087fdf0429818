# 030_examples.pl: the order-service listeners in examples/ (C with libpq,
# JavaScript with node-postgres, Python with psycopg 3) against a live
# cluster.  Each must apply
# every event exactly once: events from before it started; a gap in the
# event_ids with notifications arriving for events its catch-up already
# applied; a COMMIT whose answer is lost although it took effect; events
# committed while it is locked out across a fast restart; events around an
# immediate stop.  It must exit with status 0 on SIGTERM and, run again,
# apply only what is new; the shop's own tables must match paysync's.
# The examples with a webhook endpoint (JavaScript, Python) must pass a
# signed notification to paysync.receive() and answer as it says, refuse a
# forged one with 401, and keep doing so across a server restart, the
# listener applying the notifications' events like any other.
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
use Digest::SHA qw(hmac_sha256_hex);

my $top = "$FindBin::Bin/..";
my $mock = start_mock();











# The whole scenario for one example.
sub exercise
{
	my ($name, $cmd) = @_;
	local $ENV{PAYSYNC_CATCH_UP_SECONDS} = 60;
	# Streaming allowed: synchronous_standby_names works only with WAL senders.
	my $node = new_paysync_node("example_$name", allows_streaming => 1);
	create_mock_channel($node, 'wallet', $mock);
	# The order service's role: its own schema, and events_since.
	$node->safe_psql('postgres', q{
		CREATE ROLE order_service LOGIN;
		CREATE SCHEMA shop AUTHORIZATION order_service;
		GRANT EXECUTE ON FUNCTION paysync.events_since(bigint, integer) TO order_service;
		GRANT EXECUTE ON FUNCTION paysync.refund_events_since(bigint, integer) TO order_service;
	});
	my $uri = sprintf('postgresql:///postgres?host=%s&port=%d&user=order_service',
		$node->host, $node->port);

	# Events from before the listener started: the first catch-up.
	track($node, "${name}_early_", 5, '{200ms}');
	wait_final($node, "${name}_early_", 5, "$name: 5 payments finished before the listener starts");
	my $l = start_listener($cmd, $uri);
	wait_applied($node, [$l], "$name: the listener catches up with the events from before it started");

	# A gap, then notifications of events the catch-up already applied.
	# While the shop's table is locked the listener is stuck applying the
	# first event after the gap (a rolled-back report used up an event_id);
	# five more commit meanwhile.  Once unlocked, its catch-up applies them
	# and their queued notifications must be skipped.
	$node->safe_psql('postgres', qq{
		SELECT paysync.track('${name}_gap', 'wallet', schedule => '{1h}');
		SELECT paysync.track('${name}_burst_' || g, 'wallet', schedule => '{1h}')
		FROM generate_series(1, 5) g;});
	my $lock = $node->background_psql('postgres');
	$lock->query_safe('BEGIN; LOCK TABLE shop.applied_events IN EXCLUSIVE MODE');
	$node->safe_psql('postgres', qq{
		BEGIN;
		SELECT paysync.report('${name}_gap', 'succeeded');
		ROLLBACK;
		SELECT paysync.report('${name}_gap', 'failed');
		SELECT paysync.report('${name}_burst_1', 'succeeded');
		SELECT paysync.report('${name}_burst_2', 'failed');
		SELECT paysync.report('${name}_burst_3', 'closed');
		SELECT paysync.report('${name}_burst_4', 'cancelled');
		SELECT paysync.report('${name}_burst_5', 'succeeded');});
	ok(wait_stderr($l, qr/event \d+ after \d+: catching up/),
		"$name: at a gap in event_ids it catches up");
	my $deadline = time + 10;
	my $waiting;
	do
	{
		usleep(50_000);
		$waiting = $node->safe_psql('postgres', q{
			SELECT count(*) FROM pg_locks WHERE NOT granted
			AND relation = 'shop.applied_events'::regclass});
	} while (!$waiting && time < $deadline);
	ok($waiting, "$name: it is applying the first event after the gap");
	$lock->query_safe('COMMIT');
	$lock->quit;
	wait_applied($node, [$l], "$name: it applies the events after the gap");

	# A COMMIT whose answer is lost although it took effect: the listener's
	# commit waits for a synchronous standby that does not exist (it is
	# already durable locally) and its session is terminated.  After the
	# reconnect it must find out that the event was applied, and report it
	# once.  Everyone else commits with synchronous_commit = local.
	my $old_pid = $node->safe_psql('postgres', q{
		ALTER SYSTEM SET synchronous_commit = 'local';
		ALTER SYSTEM SET synchronous_standby_names = 'nobody';
		ALTER ROLE order_service SET synchronous_commit = 'on';
		SELECT pg_reload_conf();
		SELECT pid FROM pg_stat_activity WHERE usename = 'order_service';});
	$old_pid = (split /\n/, $old_pid)[-1];
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($old_pid)");
	wait_for_sql($node, qq{
		SELECT count(*) FROM pg_stat_activity
		WHERE usename = 'order_service' AND pid <> $old_pid AND state = 'idle'
		  AND query LIKE '%events_since%'},
		'1', "$name: the listener reconnects");
	$node->safe_psql('postgres', qq{
		SELECT paysync.track('${name}_doubt', 'wallet', schedule => '{1h}');
		SELECT paysync.report('${name}_doubt', 'succeeded');});
	wait_for_sql($node, q{
		SELECT count(*) FROM pg_stat_activity
		WHERE usename = 'order_service' AND wait_event = 'SyncRep'},
		'1', "$name: its COMMIT waits for the standby");
	$node->safe_psql('postgres', q{
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE usename = 'order_service';
		ALTER SYSTEM RESET synchronous_commit;
		ALTER SYSTEM RESET synchronous_standby_names;
		ALTER ROLE order_service RESET synchronous_commit;
		SELECT pg_reload_conf();});
	wait_applied($node, [$l], "$name: after the reconnect it reports the event whose COMMIT was in doubt");
	ok(wait_stderr($l, qr/event \d+, whose COMMIT was in doubt: applied/),
		"$name: it looked the event up in its own table");

	# Events while it listens.
	track($node, "${name}_live_", 20, '{200ms}', sub { (qw(S F C X))[ $_[0] % 4 ] });
	wait_final($node, "${name}_live_", 20, "$name: 20 payments finished while it listens");
	wait_applied($node, [$l], "$name: it applies the 20 events it is notified of");

	# Refunds while it listens: their events come on paysync_refunds and
	# from refund_events_since(), each applied once as a refund, never as
	# a payment's event.
	$node->safe_psql('postgres', qq{
		SELECT count(paysync.track_refund('${name}_refund_' || i || '~' || (ARRAY['S','F','X','P,S'])[i],
			'${name}_live_' || i || '~' || (ARRAY['F','C','X','S'])[i], schedule => '{200ms,200ms}'))
		FROM generate_series(1, 4) i});
	wait_for_sql($node, qq{SELECT count(*) FROM paysync.refunds
		WHERE refund_id LIKE '${name}_refund_%' AND status <> 'pending'},
		'4', "$name: 4 refunds finished while it listens");
	my $deadline = time + 20;
	usleep(100_000) while refund_lines($l) < 4 && time < $deadline;
	is_deeply([ refund_lines($l) ], [ refund_event_lines($node) ],
		"$name: it applies the 4 refund events, in order, as refunds");

	# A fast restart, with the listener locked out while payments finish:
	# their notifications reach nobody, only the catch-up finds them.  The
	# "across" payments answer pending 1 to 10 times, 300 ms apart, so they
	# finish before, during and after the restart.
	$node->safe_psql('postgres', 'ALTER ROLE order_service NOLOGIN');
	my $steps = '{' . join(',', ('300ms') x 12) . '}';
	track($node, "${name}_across_", 10, $steps, sub { join(',', ('P') x $_[0]) . ',S' });
	$node->restart;
	track($node, "${name}_after_", 20, '{200ms}');
	my $before = () = applied_lines($l);
	wait_final($node, "${name}_across_", 10, "$name: the payments tracked before the restart finish");
	wait_final($node, "${name}_after_", 20, "$name: 20 payments tracked after the restart finish");
	usleep(300_000);
	my $locked_out = () = applied_lines($l);
	is($locked_out, $before, "$name: locked out, the listener applied nothing");
	my @events = event_lines($node);
	cmp_ok(scalar(@events), '>', $locked_out,
		"$name: events committed while it was locked out");
	$node->safe_psql('postgres', 'ALTER ROLE order_service LOGIN');
	wait_applied($node, [$l], "$name: after the restart it catches up with what it missed");

	# An immediate stop (crash) with payments finishing around it (after the
	# crash recovery the event_id sequence may skip ahead).
	track($node, "${name}_crash_", 10, $steps, sub { join(',', ('P') x $_[0]) . ',S' });
	usleep(700_000);
	$node->stop('immediate');
	$node->start;
	track($node, "${name}_postcrash_", 10, '{200ms}');
	wait_final($node, "${name}_crash_", 10, "$name: the payments tracked before the crash finish");
	wait_final($node, "${name}_postcrash_", 10, "$name: 10 payments tracked after the crash finish");
	wait_applied($node, [$l], "$name: after the immediate stop it catches up");

	my @lines = applied_lines($l);
	is_deeply([ grep { !/^applied \d+ \S+ \S+$/ && !/^refund \d+ \S+ \S+ \S+$/ } split /\n/, $l->{out} ], [],
		"$name: it prints nothing on stdout but applied and refund lines");
	my %seen;
	my @twice = grep { $seen{ (split / /)[1] }++ } @lines;
	is_deeply(\@twice, [], "$name: no event applied twice");
	is_deeply([ sort @lines ], [ sort(event_lines($node)) ],
		"$name: the applied events are exactly paysync.events");
	ok(stop_listener($l), "$name: SIGTERM stops the listener with exit status 0");
	note("$name listener's stderr:\n$l->{err}");

	# Run again: its applied-state is in the database, so it applies only
	# what is new, although it catches up from its last event on connect.
	my $last = $node->safe_psql('postgres', 'SELECT max(event_id) FROM paysync.events');
	my $again = start_listener($cmd, $uri);
	track($node, "${name}_resume_", 3, '{200ms}');
	wait_final($node, "${name}_resume_", 3, "$name: 3 more payments finish");
	wait_applied($node, [ $l, $again ], "$name: the listener run again applies them");
	is_deeply([ applied_lines($again) ], [ event_lines($node, "event_id > $last") ],
		"$name: run again, it applies only the new events, in order");
	ok(stop_listener($again), "$name: SIGTERM stops it again");
	note("$name listener's stderr, run again:\n$again->{err}");

	# The shop's own state matches paysync's.
	is( $node->safe_psql('postgres', q{
			SELECT count(*) FROM (SELECT * FROM paysync.events WHERE refund_id IS NULL) e
			FULL JOIN shop.applied_events a USING (event_id)
			WHERE e.event_id IS NULL OR a.event_id IS NULL
			   OR a.payment_id <> e.payment_id OR a.status <> e.status::text}),
		'0', "$name: shop.applied_events holds exactly the events");
	is( $node->safe_psql('postgres', q{
			SELECT count(*) FROM
			  (SELECT payment_id, status::text FROM paysync.payments WHERE status <> 'pending') p
			FULL JOIN shop.order_payments o USING (payment_id)
			WHERE p.payment_id IS NULL OR o.payment_id IS NULL OR o.status <> p.status}),
		'0', "$name: shop.order_payments has each payment's final status");
	is($node->safe_psql('postgres', 'SELECT count(*) FROM paysync.events WHERE refund_id IS NULL'),
		'85', "$name: 85 payment events in all");
	is( $node->safe_psql('postgres', q{
			SELECT count(*) FROM (SELECT * FROM paysync.events WHERE refund_id IS NOT NULL) e
			FULL JOIN shop.applied_refund_events a USING (event_id)
			WHERE e.event_id IS NULL OR a.event_id IS NULL
			   OR a.refund_id <> e.refund_id OR a.status <> e.status::text}),
		'0', "$name: shop.applied_refund_events holds exactly the refund events");
	$node->stop;
}

# POSTs body to the listener's webhook endpoint for channel hooks with the
# X-Signature header signature; returns "<HTTP status> <body>".
sub post_webhook
{
	my ($port, $body, $signature) = @_;
	my $out = '';
	IPC::Run::run([ 'curl', '-s', '-m', '5', '-w', ' %{http_code}', '-H', "X-Signature: $signature",
		'-H', 'Content-Type: application/json', '--data-binary', '@-',
		"http://127.0.0.1:$port/webhook/hooks" ], '<', \$body, '>', \$out);
	my ($reply, $status) = $out =~ /^(.*) (\d+)$/s ? ($1, $2) : ('', 0);
	return "$status $reply";
}

# The webhook endpoint of an example: signed notifications applied (and
# their events applied by the listener), forged ones refused, across a
# restart.
sub exercise_webhook
{
	my ($name, $cmd) = @_;
	my $secret = 'example-webhook-secret-42';
	my $node = new_paysync_node("webhook_$name");
	create_mock_channel($node, 'hooks', $mock, qq{{"webhook_secret": "$secret",
		"webhook_signature_header": "X-Signature", "webhook_id_field": "payment_id"}});
	$node->safe_psql('postgres', q{
		CREATE ROLE order_service LOGIN;
		CREATE SCHEMA shop AUTHORIZATION order_service;
		GRANT EXECUTE ON FUNCTION paysync.events_since(bigint, integer) TO order_service;
		GRANT EXECUTE ON FUNCTION paysync.refund_events_since(bigint, integer) TO order_service;
		GRANT EXECUTE ON FUNCTION paysync.receive(text, jsonb, text) TO order_service;
		SELECT paysync.track('hook_' || g, 'hooks', schedule => '{1h}')
		FROM generate_series(1, 3) g;});
	my $uri = sprintf('postgresql:///postgres?host=%s&port=%d&user=order_service',
		$node->host, $node->port);
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $l;
	{
		local $ENV{PAYSYNC_WEBHOOK_PORT} = $port;
		$l = start_listener($cmd, $uri);
	}
	ok(wait_stderr($l, qr/webhook endpoint on 127\.0\.0\.1:$port/), "$name webhook: the endpoint listens");

	my $body = '{"payment_id": "hook_1", "status": "PAID"}';
	is(post_webhook($port, $body, hmac_sha256_hex($body, $secret)), '200 ',
		"$name webhook: a signed notification is answered as receive() says");
	is(status_of($node, 'hook_1'), 'succeeded', "$name webhook: and applied");
	is(post_webhook($port, $body, hmac_sha256_hex($body, $secret)), '200 ',
		"$name webhook: the same again is answered 200 too");
	my $forged = '{"payment_id": "hook_2", "status": "PAID"}';
	is(post_webhook($port, $forged, hmac_sha256_hex($body, $secret)), '401 ',
		"$name webhook: a forged notification is answered 401");
	is(status_of($node, 'hook_2'), 'pending', "$name webhook: and changes nothing");
	wait_applied($node, [$l], "$name webhook: the listener applies the notification's event");

	$node->restart;
	$body = '{"payment_id": "hook_2", "status": "FAILED"}';
	my $deadline = time + 15;
	my $reply;
	do
	{
		$reply = post_webhook($port, $body, hmac_sha256_hex($body, $secret));
		usleep(200_000) if $reply ne '200 ';
	} while ($reply ne '200 ' && time < $deadline);
	is($reply, '200 ', "$name webhook: after a restart notifications are applied again");
	is(status_of($node, 'hook_2'), 'failed', "$name webhook: hook_2 failed");
	wait_applied($node, [$l], "$name webhook: the listener applies it after the restart");
	is(scalar(() = applied_lines($l)), 2, "$name webhook: two events applied, once each");
	ok(stop_listener($l), "$name webhook: SIGTERM stops it with exit status 0");
	note("$name webhook listener's stderr:\n$l->{err}");
	$node->stop;
}

# --- every example listener: C (libpq), JavaScript (node-postgres), Python
# (psycopg 3); the last two have a webhook endpoint too
for my $example (example_listeners($top))
{
	exercise(@$example);
	exercise_webhook(@$example) unless $example->[0] eq 'c';
}

stop_mock($mock);
done_testing();
