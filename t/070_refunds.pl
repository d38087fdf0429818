# 070_refunds.pl: refunds end to end with http_json against the generic
# mock: track_refund -> worker -> answer -> recorded -> refund event and
# NOTIFY on paysync_refunds.  Every status, the unknown refund (404: an
# error, never an end), the refunded amount checked, one payment with
# three refunds reaching three ends, a report racing a poll, and the
# payment listeners (events_since(), LISTEN paysync) seeing no refund.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use Time::HiRes qw(usleep);

my $mock = start_mock();
my $slow_mock = start_mock(latency_ms => 1500);

my $node = new_paysync_node('refunds');
# the refund's path names both ids; the mock reads its script from the last
create_mock_channel($node, 'mock', $mock,
	'{"refund_path": "/pay/{payment_id}/refund/{refund_id}",'
	  . ' "amount_field": "amount", "currency_field": "currency"}');
create_mock_channel($node, 'slow', $slow_mock, '{"timeout_ms": 5000}');

# A listener of both notify channels, from the start.
my $listener = $node->background_psql('postgres');
$listener->set_query_timer_restart;
$listener->query_safe('LISTEN paysync; LISTEN paysync_refunds;');
my @notifications;    # [notify channel, payload]

sub pull_notifications
{
	my $out = $listener->query_safe('SELECT 1');
	while ($out =~
		/^Asynchronous notification "([^"]+)" with payload "(.*)" received from server process with PID \d+\.\r?$/mg
	  )
	{
		push @notifications, [ $1, JSON::PP->new->decode($2) ];
	}
}

sub refund_row
{
	my ($refund_id, $columns) = @_;
	return sql($node,
		"SELECT $columns FROM paysync.refunds WHERE refund_id = " . lit($refund_id));
}

sub wait_refund
{
	my ($refund_id, $status, $what) = @_;
	return wait_for_sql($node,
		'SELECT status FROM paysync.refunds WHERE refund_id = ' . lit($refund_id),
		$status, $what || "refund $refund_id becomes $status");
}

# The events of a refund: "previous>status|channel_status|source|payment_id".
sub refund_events
{
	my ($refund_id) = @_;
	return sql($node,
		"SELECT string_agg(previous || '>' || status || '|' || coalesce(channel_status, '')"
		  . " || '|' || source || '|' || payment_id, ',' ORDER BY event_id)"
		  . ' FROM paysync.events WHERE refund_id = ' . lit($refund_id));
}

# ---------------------------------------------------------------- statuses

sql($node, q{SELECT paysync.track('P-1', 'mock', 100000, 'CNY', '{1h}')});
my %ends = (
	'R-S~P,S' => [ 'succeeded', 'PAID' ],
	'R-F~F' => [ 'failed', 'FAILED' ],
	'R-X~X' => [ 'cancelled', 'CANCELLED' ],
	'R-C~C' => [ 'closed', 'CLOSED' ],);
for my $r (sort keys %ends)
{
	sql($node, 'SELECT paysync.track_refund(' . lit($r) . q{, 'P-1', 100, schedule => '{1s,1s,1s}')});
}
for my $r (sort keys %ends)
{
	my ($status, $word) = @{ $ends{$r} };
	wait_refund($r, $status);
	is(refund_events($r), "pending>$status|$word|poll|P-1", "$r: one event, source poll");
}
is(refund_row('R-S~P,S', 'step || \'/\' || attempts || \'/\' || errors'),
	'2/2/0', 'a pending answer moved the refund on its schedule');
# the request went to refund_path with both ids
my @asked = grep { $_->[2] eq 'R-S~P,S' } mock_log($mock);
is(scalar @asked, 2, 'the refund was asked twice');
is(sql($node, q{SELECT status FROM paysync.payments WHERE payment_id = 'P-1'}),
	'pending', 'the payment is not touched by its refunds');

# ---------------------------------------------------------------- unknown refund
# 404: an error answer, never an end; the schedule ends it as expired once
# the channel answers "pending"
sql($node, q{SELECT paysync.track_refund('R-N~N,N,P', 'P-1', 100, schedule => '{1s}')});
wait_for_sql($node,
	q{SELECT errors >= 1 AND status = 'pending' FROM paysync.refunds WHERE refund_id = 'R-N~N,N,P'},
	't', 'an unknown refund is an error answer and stays pending');
like(refund_row('R-N~N,N,P', 'last_error'), qr/knows no refund "R-N~N,N,P" \(HTTP 404\)/,
	'last_error names the unknown refund');
wait_refund('R-N~N,N,P', 'expired', 'the schedule ends it as expired, not the errors');
is(refund_events('R-N~N,N,P'), 'pending>expired|WAIT|expiry|P-1', 'its one event is the expiry');

# ---------------------------------------------------------------- amounts
sql($node, q{SELECT paysync.track_refund('R-A-ok~A300', 'P-1', 300, 'CNY', '{1s}')});
sql($node, q{SELECT paysync.track_refund('R-A-bad~A250', 'P-1', 300, 'CNY', '{1s}')});
wait_refund('R-A-ok~A300', 'succeeded', 'the refunded amount as tracked: succeeded');
wait_refund('R-A-bad~A250', 'failed', 'another refunded amount: failed');
is(refund_row('R-A-bad~A250', 'last_error'),
	'amount mismatch: expected 300 CNY, channel reports 250 CNY',
	'last_error names both amounts');

# ---------------------------------------------------------------- one payment, three refunds
sql($node, q{
	SELECT paysync.track('P-3', 'mock', 1000, 'CNY', '{1h}');
	SELECT paysync.track_refund('R-3a~P,S', 'P-3', 400, schedule => '{1s,1s}');
	SELECT paysync.track_refund('R-3b~F', 'P-3', 400, schedule => '{1s}');
	SELECT paysync.track_refund('R-3c~P,X', 'P-3', 200, schedule => '{1s,1s}');
});
wait_refund('R-3a~P,S', 'succeeded');
wait_refund('R-3b~F', 'failed');
wait_refund('R-3c~P,X', 'cancelled');
is(sql($node, q{
	SELECT string_agg(r.refund_id || ':' || (SELECT count(*) FROM paysync.events e
											WHERE e.refund_id = r.refund_id), ',' ORDER BY r.refund_id)
	FROM paysync.refunds r WHERE r.payment_id = 'P-3'}),
	'R-3a~P,S:1,R-3b~F:1,R-3c~P,X:1', 'three refunds of one payment, three ends, one event each');
# the failed one no longer counts: 400 more fit
is(sql($node, q{SELECT status FROM paysync.track_refund('R-3d~S', 'P-3', 400, schedule => '{1h}')}),
	'pending', 'a failed refund leaves its amount refundable again');
my ($rc, $out, $err) = $node->psql('postgres',
	q{SELECT paysync.track_refund('R-3e', 'P-3', 201, schedule => '{1h}')});
like($err, qr/refund "R-3e" of 201 would refund more than payment "P-3" of 1000/, 'over-refund refused');

# ---------------------------------------------------------------- a report racing a poll
# The slow channel answers after 1.5 s; the report lands while the request
# is in flight: exactly one event, the report's.
sql($node, q{
	SELECT paysync.track('P-race', 'slow', 500, 'CNY', '{1h}');
	SELECT paysync.track_refund('R-race~S', 'P-race', 500, schedule => '{1s}');
});
wait_for_sql($node,
	q{SELECT claimed_until IS NOT NULL FROM paysync.refunds WHERE refund_id = 'R-race~S'},
	't', 'the racing refund is claimed');
for (1 .. 100)
{
	last if mock_requests($slow_mock, 'R-race~S') > 0;
	usleep(100_000);
}
is(sql($node, q{SELECT paysync.report_refund('R-race~S', 'succeeded', 'WEBHOOK')}),
	't', 'the report lands while the poll is in flight');
sleep 3;
is(refund_events('R-race~S'), 'pending>succeeded|WEBHOOK|report|P-race',
	'a report racing a poll: exactly one event, the report\'s');

# ---------------------------------------------------------------- listeners
# a payment's own change, for comparison
sql($node, q{SELECT paysync.report('P-3', 'succeeded')});
my $refund_events = sql($node, 'SELECT count(*) FROM paysync.refund_events_since(0)');
my $expected_refund_events = sql($node, 'SELECT count(*) FROM paysync.events WHERE refund_id IS NOT NULL');
cmp_ok($refund_events, '>=', 10, 'refund_events_since() returns the refund events');
is($refund_events, $expected_refund_events, 'refund_events_since() returns them all');
is(sql($node, 'SELECT count(*) FROM paysync.refund_events_since(0) WHERE refund_id IS NULL'),
	'0', 'refund_events_since() returns no payment event');
is(sql($node, 'SELECT string_agg(payment_id, \',\') FROM paysync.events_since(0)'),
	'P-3', 'events_since() returns the payment events only');

my $deadline = time + 30;
while (time < $deadline)
{
	pull_notifications();
	last
	  if (grep { $_->[0] eq 'paysync_refunds' } @notifications) >= $refund_events
	  && (grep { $_->[0] eq 'paysync' } @notifications) >= 1;
	sleep 1;
}
my @on_payments = grep { $_->[0] eq 'paysync' } @notifications;
my @on_refunds = grep { $_->[0] eq 'paysync_refunds' } @notifications;
is(scalar @on_refunds, $refund_events, 'every refund event is sent on paysync_refunds');
is(scalar @on_payments, 1, 'LISTEN paysync sees the payment\'s event only');
is($on_payments[0][1]{payment_id}, 'P-3', 'the payment event on paysync');
ok(!exists $on_payments[0][1]{refund_id}, 'a payment payload has no refund_id (as in 0.3)');
is(scalar(grep { !defined $_->[1]{refund_id} } @on_refunds), 0,
	'every payload on paysync_refunds names its refund');
my ($race) = grep { $_->[1]{refund_id} eq 'R-race~S' } @on_refunds;
is_deeply(
	[ sort keys %{ $race->[1] } ],
	[ sort qw(event_id payment_id channel status previous channel_status source refund_id) ],
	'a refund payload is the payment payload plus refund_id');
is($race->[1]{payment_id} . '|' . $race->[1]{status} . '|' . $race->[1]{source},
	'P-race|succeeded|report', 'the refund payload says what happened');

# ---------------------------------------------------------------- stats
is(sql($node, q{SELECT refunds_pending || '/' || refunds_due FROM paysync.stats WHERE channel = 'mock'}),
	'1/0', 'stats: refunds pending and due');

$listener->quit;
$node->stop;
stop_mock($mock);
stop_mock($slow_mock);
done_testing();
