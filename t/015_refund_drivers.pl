# 015_refund_drivers.pl: the refund queries of the four real-channel
# drivers end to end: refunds tracked with paysync.track_refund(), checked
# by the worker against each channel's mock (t/mock/mock_stripe,
# mock_wechatpay, mock_alipay, mock_paypal, which check credentials and
# signatures as the channels do and sign their answers where the channel
# does) to each end the contract gives them: succeeded, failed, cancelled,
# closed, the amount mismatch (failed, last_error naming both amounts), a
# refund the channel does not know (an error, never an end) and one that
# stays pending until its schedule runs out (expired).  Then refund
# callbacks through paysync.receive(): Stripe refund events and WeChat Pay
# REFUND.* callbacks verified and applied, Alipay trade notifications and
# PayPal webhooks naming a refund making it checked at once, and forged
# ones refused with SQLSTATE 28000, nothing changed.
#
# The unit-level tests of each driver's refund query (every status, the
# request as built, forged answers) are in t/011_stripe.pl to
# t/014_paypal.pl.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use FindBin;
use lib $FindBin::Bin;
use IPC::Run;
use JSON::PP;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $dir = PostgreSQL::Test::Utils::tempdir();
my $json = JSON::PP->new->canonical;

my $STRIPE_KEY = 'sk_test_REFUNDSe2e';
my $WHSEC = 'whsec_REFUNDSe2e';
my $MCHID = '1900009191';
my $MERCHANT_SERIAL = '3775B6A45ACD588826D15E583A95F5DD2B0A1B2C';
my $PLATFORM_SERIAL = '5157F09EFDC096DE15EBE81A47057A7232F1B8E1';
my $API_V3_KEY = 'Rf4vT8wK2mN6pR0sU3xY7bD1fH5jL9cE';
my $APP_ID = '2021000000000002';
my $CLIENT_ID = 'AYrefunds-e2e';
my $CLIENT_SECRET = 'EKrefunds-e2e-secret';

make_rsa_key($dir, $_) for qw(merchant platform app ali other);
spew_file("$dir/api_v3_key", $API_V3_KEY);

# SQL that reads a file on the server: no statement text holds a key.
sub file_sql
{
	my ($name) = @_;
	return "pg_read_file('$dir/$name')";
}

# ---------------------------------------------------------------- mocks and channels

my $stripe = start_mock_program('mock_stripe', '--secret-key', $STRIPE_KEY);
my $wechat = start_mock_program('mock_wechatpay', '--mchid', $MCHID,
	'--merchant-serial', $MERCHANT_SERIAL, '--merchant-public-key', "$dir/merchant.pub",
	'--platform-private-key', "$dir/platform.key", '--platform-serial', $PLATFORM_SERIAL,
	'--amount', '100');
my $alipay = start_mock_program('mock_alipay', '--app-id', $APP_ID,
	'--app-public-key', "$dir/app.pub", '--alipay-private-key', "$dir/ali.key");
my $paypal = start_mock_program('mock_paypal', '--client-id', $CLIENT_ID,
	'--client-secret', $CLIENT_SECRET);
END
{
	for my $m ($stripe, $wechat, $alipay, $paypal)
	{
		eval { stop_mock($m) } if $m && $m->{handle};
	}
}

my $node = new_paysync_node('refund_drivers');
sql($node, <<"EOF");
SELECT paysync.create_channel('st', 'stripe', 'http://127.0.0.1:$stripe->{port}',
	jsonb_build_object('secret_key', '$STRIPE_KEY', 'webhook_secret', '$WHSEC'));
SELECT paysync.create_channel('wx', 'wechatpay', 'http://127.0.0.1:$wechat->{port}',
	jsonb_build_object('mchid', '$MCHID', 'merchant_serial_no', '$MERCHANT_SERIAL',
		'merchant_private_key', @{[file_sql('merchant.key')]},
		'platform_public_key', @{[file_sql('platform.pub')]},
		'api_v3_key', @{[file_sql('api_v3_key')]}));
SELECT paysync.create_channel('ali', 'alipay', 'http://127.0.0.1:$alipay->{port}/gateway.do',
	jsonb_build_object('app_id', '$APP_ID', 'app_private_key', @{[file_sql('app.key')]},
		'alipay_public_key', @{[file_sql('ali.pub')]}));
SELECT paysync.create_channel('pp', 'paypal', 'http://127.0.0.1:$paypal->{port}',
	jsonb_build_object('client_id', '$CLIENT_ID', 'client_secret', '$CLIENT_SECRET'));
EOF

# ---------------------------------------------------------------- helpers

# Columns of one refund, '|'-separated.
sub refund_row
{
	my ($id, $cols) = @_;
	return sql($node, "SELECT $cols FROM paysync.refunds WHERE refund_id = " . lit($id));
}

# Waits until cond holds for refund id.
sub wait_refund
{
	my ($id, $cond, $what) = @_;
	return wait_for_sql($node,
		"SELECT coalesce(bool_and($cond), false) FROM paysync.refunds WHERE refund_id = " . lit($id),
		't', $what);
}

# The events of a refund, "payment_id:previous>status|channel_status|source", ','-separated.
sub refund_events
{
	my ($id) = @_;
	return sql($node,
		"SELECT string_agg(payment_id || ':' || previous || '>' || status || '|' || coalesce(channel_status, '')"
		  . " || '|' || source, ',' ORDER BY event_id) FROM paysync.events WHERE refund_id = " . lit($id));
}

# Tracks payment pid on channel (amount in minor units, currency) and its
# refund rid (amount or undef) with schedule.
sub track_both
{
	my ($channel, $pid, $pamount, $currency, $rid, $ramount, $schedule) = @_;
	sql($node, "SELECT paysync.track(" . lit($pid) . ", '$channel', $pamount, '$currency', '{1h}')");
	sql($node, "SELECT (paysync.track_refund(" . lit($rid) . ', ' . lit($pid) . ', '
		  . (defined $ramount ? "$ramount, '$currency'" : 'NULL, NULL')
		  . ", '$schedule')).refund_id");
}

# paysync.receive() of a notification: "payment_id|status|outcome|reply_status|refund_id",
# or undef and the error (with its SQLSTATE).
sub receive
{
	my ($channel, $headers, $body) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n"
		  . "SELECT payment_id, status, outcome, reply_status, refund_id FROM paysync.receive('$channel', "
		  . lit($json->encode($headers)) . '::jsonb, ' . lit($body) . ')');
	return $ret == 0 ? ($out, '') : (undef, $err);
}

# What a refused notification about refund id must leave alone: that
# refund's row and the events.  (Not every refund's row: the ones the
# worker keeps retrying with errors change on their own.)
sub state_now
{
	my ($id) = @_;
	return sql($node, q{SELECT (SELECT status::text || updated_at || coalesce(next_check_at::text, '')
		|| attempts || errors || coalesce(last_error, '') FROM paysync.refunds WHERE refund_id = }
		  . lit($id) . q{), (SELECT count(*) FROM paysync.events)});
}

# Checks that a notification about refund id is refused with SQLSTATE
# 28000, nothing changed.
sub refused
{
	my ($what, $id, $channel, $headers, $body, $reason) = @_;
	my $before = state_now($id);
	my ($out, $err) = receive($channel, $headers, $body);
	ok(!defined $out, "$what: refused");
	like($err, qr/28000: notification for channel "$channel" refused.*$reason/s,
		"$what: SQLSTATE 28000 saying why");
	is(state_now($id), $before, "$what: nothing changed");
}

# ---------------------------------------------------------------- polls to each end

my $S = '{0.2s,0.2s,0.2s,0.2s,0.2s,0.2s}';
my @cases = (
	# channel, payment, its amount, currency, refund, its amount, schedule
	[ 'st', 'pi_r1~S100000', 100000, 'USD', 're_1~P,S500', 500, $S ],
	[ 'st', 'pi_r2~S100000', 100000, 'USD', 're_2~A,F', 1000, $S ],
	[ 'st', 'pi_r3~S100000', 100000, 'USD', 're_3~X', undef, $S ],
	[ 'st', 'pi_r4~S100000', 100000, 'USD', 're_4~S700', 500, $S ],
	[ 'st', 'pi_r5~S100000', 100000, 'USD', 're_5', 500, '{0.2s}' ],
	[ 'st', 'pi_r6~S100000', 100000, 'USD', 're_6~P', 500, '{0.2s,0.2s}' ],
	[ 'wx', 'WP-1~S', 100, 'CNY', 'WR-1~P,S', 100, $S ],
	[ 'wx', 'WP-2~S', 100, 'CNY', 'WR-2~B', 100, $S ],
	[ 'wx', 'WP-3~S', 100, 'CNY', 'WR-3~C', 100, $S ],
	[ 'wx', 'WP-4~S', 100, 'CNY', 'WR-4~A', 100, $S ],
	[ 'wx', 'WP-5~S', 100, 'CNY', 'WR-5~O', 100, '{0.2s}' ],
	[ 'wx', 'WP-6~S', 100, 'CNY', 'WR-6~St', 100, '{0.2s}' ],
	[ 'ali', 'AP-1', 8888, 'CNY', 'AR-1~N,S', 1000, $S ],
	[ 'ali', 'AP-2', 8888, 'CNY', 'AR-2~A', 1000, $S ],
	[ 'ali', 'AP-3', 8888, 'CNY', 'AR-3~N', 1000, '{0.2s,0.2s}' ],
	[ 'ali', 'AP-4', 8888, 'CNY', 'AR-4~K', 1000, '{0.2s}' ],
	[ 'pp', 'OP-1~P', 1000, 'USD', 'RF-1~P,C', 1000, $S ],
	[ 'pp', 'OP-2~P', 1000, 'USD', 'RF-2~F', 1000, $S ],
	[ 'pp', 'OP-3~P', 1000, 'USD', 'RF-3~X', undef, $S ],
	[ 'pp', 'OP-4~P', 1000, 'USD', 'RF-4~N', 1000, '{0.2s}' ],
	[ 'pp', 'OP-5~P', 1000, 'USD', 'RF-5~C~2.00USD', 1000, $S ],
);
track_both(@$_) for @cases;

# stripe
wait_refund('re_1~P,S500', q{status = 'succeeded' AND channel_status = 'succeeded'},
	'stripe: pending, then succeeded with the tracked amount');
is(refund_events('re_1~P,S500'), 'pi_r1~S100000:pending>succeeded|succeeded|poll',
	'... one event, about the refund and its payment');
wait_refund('re_2~A,F', q{status = 'failed' AND channel_status = 'failed' AND last_error IS NULL},
	'stripe: requires_action, then failed');
wait_refund('re_3~X', q{status = 'cancelled' AND channel_status = 'canceled'}, 'stripe: canceled is cancelled');
wait_refund('re_4~S700', q{status = 'failed'}, 'stripe: another refunded amount: failed');
is(refund_row('re_4~S700', 'last_error'), 'amount mismatch: expected 500 USD, channel reports 700 USD',
	'... last_error naming both');
wait_refund('re_5', q{errors >= 2}, 'stripe: a refund Stripe does not know (404) is an error, retried');
like(refund_row('re_5', q{status || '|' || last_error}),
	qr/^pending\|Stripe has no such refund .*No such refund: 're_5'$/, '... never an end');
wait_refund('re_6~P', q{status = 'expired'}, 'stripe: pending until the schedule runs out: expired');
like(refund_events('re_6~P'), qr/^pi_r6~S100000:pending>expired\|pending\|\w+$/, '... one event');

# wechatpay
wait_refund('WR-1~P,S', q{status = 'succeeded' AND channel_status = 'SUCCESS'},
	'wechatpay: PROCESSING, then SUCCESS: succeeded, amount.refund checked');
is(refund_events('WR-1~P,S'), 'WP-1~S:pending>succeeded|SUCCESS|poll', '... one event');
wait_refund('WR-2~B', q{status = 'failed' AND channel_status = 'ABNORMAL'},
	'wechatpay: ABNORMAL is failed (a person must act)');
wait_refund('WR-3~C', q{status = 'closed' AND channel_status = 'CLOSED'}, 'wechatpay: CLOSED is closed');
wait_refund('WR-4~A', q{status = 'failed'}, 'wechatpay: another amount.refund: failed');
is(refund_row('WR-4~A', 'last_error'), 'amount mismatch: expected 100 CNY, channel reports 101 CNY',
	'... last_error naming both');
wait_refund('WR-5~O', q{errors >= 2}, 'wechatpay: RESOURCE_NOT_EXISTS is an error, retried');
like(refund_row('WR-5~O', q{status || '|' || last_error}), qr/^pending\|WeChat Pay has no such refund/,
	'... never an end');
wait_refund('WR-6~St', q{errors >= 2}, 'wechatpay: a tampered answer is an error');
like(refund_row('WR-6~St', q{status || '|' || last_error}), qr/^pending\|.*does not verify/,
	'... never a status');

# alipay
wait_refund('AR-1~N,S', q{status = 'succeeded' AND channel_status = 'REFUND_SUCCESS'},
	'alipay: no refund_status yet, then REFUND_SUCCESS: succeeded');
is(refund_events('AR-1~N,S'), 'AP-1:pending>succeeded|REFUND_SUCCESS|poll', '... one event');
wait_refund('AR-2~A', q{status = 'failed'}, 'alipay: another refund_amount: failed');
is(refund_row('AR-2~A', 'last_error'), 'amount mismatch: expected 1000 CNY, channel reports 100 CNY',
	'... last_error naming both');
wait_refund('AR-3~N', q{status = 'expired'},
	'alipay: no refund_status until the schedule runs out: expired, never failed');
wait_refund('AR-4~K', q{errors >= 2}, 'alipay: an answer signed by another key is an error');
like(refund_row('AR-4~K', q{status || '|' || last_error}), qr/^pending\|.*signature does not verify/,
	'... never a status');

# paypal
wait_refund('RF-1~P,C', q{status = 'succeeded' AND channel_status = 'COMPLETED'},
	'paypal: PENDING, then COMPLETED: succeeded');
is(refund_events('RF-1~P,C'), 'OP-1~P:pending>succeeded|COMPLETED|poll', '... one event');
wait_refund('RF-2~F', q{status = 'failed' AND channel_status = 'FAILED'}, 'paypal: FAILED is failed');
wait_refund('RF-3~X', q{status = 'cancelled' AND channel_status = 'CANCELLED'}, 'paypal: CANCELLED is cancelled');
wait_refund('RF-4~N', q{errors >= 2}, 'paypal: a refund PayPal does not know (404) is an error');
like(refund_row('RF-4~N', q{status || '|' || last_error}), qr/^pending\|HTTP 404 from PayPal \(RESOURCE_NOT_FOUND\): no such refund$/,
	'... never an end');
wait_refund('RF-5~C~2.00USD', q{status = 'failed'}, 'paypal: another amount: failed');
is(refund_row('RF-5~C~2.00USD', 'last_error'), 'amount mismatch: expected 1000 USD, channel reports 200 USD',
	'... last_error naming both');

is(sql($node, q{SELECT count(*) FROM paysync.events WHERE refund_id IS NOT NULL}),
	(scalar grep { $_->[4] !~ /^(?:re_5|WR-5~O|WR-6~St|AR-4~K|RF-4~N)$/ } @cases),
	'one event for each refund that ended, none for the errors');

# ---------------------------------------------------------------- callbacks

# Refunds checked once (pending), their next check an hour away.
my @waiting = (
	[ 'st', 'pi_c1~S100000', 100000, 'USD', 're_c1~P', 500 ],
	[ 'st', 'pi_c2~S100000', 100000, 'USD', 're_c2~P', 500 ],
	[ 'wx', 'WP-c1~S', 100, 'CNY', 'WR-c1~P', 100 ],
	[ 'wx', 'WP-c2~S', 100, 'CNY', 'WR-c2~P', 100 ],
	[ 'wx', 'WP-c3~S', 100, 'CNY', 'WR-c3~P', 100 ],
	[ 'wx', 'WP-c4~S', 100, 'CNY', 'WR-c4~P', 100 ],
	[ 'ali', 'AP-c1', 8888, 'CNY', 'AR-c1~N,S', 1000 ],
	[ 'ali', 'AP-c2', 8888, 'CNY', 'AR-c2~N,S', 1000 ],
	[ 'pp', 'OP-c1~P', 1000, 'USD', 'RF-c1~P,C', 1000 ],
);
track_both(@$_, '{0.1s,1h,1h}') for @waiting;
wait_refund($_->[4], q{attempts >= 1 AND status = 'pending' AND next_check_at > now() + interval '30 min'},
	"$_->[4]: checked once, pending, the next check an hour away") for @waiting;

# stripe: refund events, signed with webhook_secret
{
	my $event = sub {
		my ($id, $type, $status) = @_;
		return $json->encode({ id => 'evt_1', object => 'event', type => $type,
			data => { object => { id => $id, object => 'refund', amount => 500, currency => 'usd',
				payment_intent => 'pi_c1~S100000', status => $status } } });
	};
	my $body = $event->('re_c1~P', 'refund.updated', 'succeeded');
	my $t = time;
	my $headers = { 'stripe-signature' => "t=$t,v1=" . hmac_sha256_hex("$t.$body", $WHSEC) };
	my ($out) = receive('st', $headers, $body);
	is($out, 'pi_c1~S100000|succeeded|applied|200|re_c1~P', 'stripe: a signed refund.updated is applied');
	is(refund_events('re_c1~P'), 'pi_c1~S100000:pending>succeeded|succeeded|notify', '... one event, source notify');
	($out) = receive('st', $headers, $body);
	is($out, 'pi_c1~S100000|succeeded|unchanged|200|re_c1~P', '... the same again is unchanged');

	$body = $event->('re_c2~P', 'refund.failed', 'failed');
	refused('stripe: a refund.failed signed with another secret', 're_c2~P', 'st',
		{ 'stripe-signature' => "t=$t,v1=" . hmac_sha256_hex("$t.$body", 'whsec_other') }, $body,
		qr/no v1 signature/);
	refused('stripe: an unsigned refund.failed', 're_c2~P', 'st', {}, $body, qr/no Stripe-Signature/);
	is(refund_row('re_c2~P', 'status'), 'pending', '... the refund stays pending');
	($out) = receive('st', { 'stripe-signature' => "t=$t,v1=" . hmac_sha256_hex("$t.$body", $WHSEC) }, $body);
	is($out, 'pi_c2~S100000|failed|applied|200|re_c2~P', 'stripe: the genuine refund.failed is applied');
}

# wechatpay: REFUND.* callbacks, signed and sealed
{
	my $n = 0;
	my $callback = sub {
		my ($id, $event, $word, %o) = @_;
		my $resource = $json->encode({ mchid => $MCHID, out_trade_no => 'WP-x', transaction_id => '42000',
			out_refund_no => $id, refund_id => '5000', refund_status => $word,
			success_time => '2026-11-26T10:35:56+08:00', user_received_account => 'x',
			amount => { total => 100, refund => 100, payer_total => 100, payer_refund => 100 } });
		my $nonce = sprintf('e%011d', ++$n);
		my ($ciphertext, $err) = ('', '');
		IPC::Run::run([ "$FindBin::Bin/mock/mock_seal", $API_V3_KEY, $nonce, 'refund' ],
			'<', \$resource, '>', \$ciphertext, '2>', \$err)
		  or die "mock_seal: $err";
		chomp $ciphertext;
		my $body = $json->encode({ id => "EV-$n", create_time => '2026-11-26T10:36:00+08:00',
			resource_type => 'encrypt-resource', event_type => $event, summary => 'x',
			resource => { original_type => 'refund', algorithm => 'AEAD_AES_256_GCM',
				ciphertext => $ciphertext, associated_data => 'refund', nonce => $nonce } });
		my $ts = time;
		my $hn = "HN$n";
		return ({ 'wechatpay-timestamp' => "$ts", 'wechatpay-nonce' => $hn,
			'wechatpay-signature' => openssl_sign("$dir/" . ($o{signer} // 'platform') . '.key', "$ts\n$hn\n$body\n"),
			'wechatpay-serial' => $PLATFORM_SERIAL }, $body);
	};
	for my $case ([ 'WR-c1~P', 'REFUND.SUCCESS', 'SUCCESS', 'succeeded' ],
		[ 'WR-c2~P', 'REFUND.ABNORMAL', 'ABNORMAL', 'failed' ],
		[ 'WR-c3~P', 'REFUND.CLOSED', 'CLOSED', 'closed' ])
	{
		my ($id, $event, $word, $status) = @$case;
		(my $pid = $id) =~ s/WR/WP/;
		$pid =~ s/~P$/~S/;
		my ($out) = receive('wx', $callback->($id, $event, $word));
		is($out, "$pid|$status|applied|204|$id", "wechatpay: $event is applied: $status");
		is(refund_events($id), "$pid:pending>$status|$word|notify", '... one event, source notify');
	}
	refused('wechatpay: a REFUND.SUCCESS signed with another key', 'WR-c4~P', 'wx',
		$callback->('WR-c4~P', 'REFUND.SUCCESS', 'SUCCESS', signer => 'other'), qr/does not verify/);
	my ($h, $b) = $callback->('WR-c4~P', 'REFUND.SUCCESS', 'SUCCESS');
	refused('wechatpay: a tampered REFUND.SUCCESS', 'WR-c4~P', 'wx', $h, $b =~ s/EV-/EX-/r, qr/does not verify/);
	is(refund_row('WR-c4~P', 'status'), 'pending', '... the refund stays pending');
}

# alipay: the trade notification names the refund (out_biz_no): checked at once
{
	my $pct = sub { my ($v) = @_; $v =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge; $v };
	my $notification = sub {
		my ($pid, $rid, $key) = @_;
		my %p = (notify_type => 'trade_status_sync', notify_id => 'n1', notify_time => '2024-11-27 10:00:01',
			charset => 'utf-8', version => '1.0', app_id => $APP_ID, out_trade_no => $pid,
			trade_no => '2024', trade_status => 'TRADE_SUCCESS', total_amount => '88.88',
			refund_fee => '10.00', gmt_refund => '2024-11-27 10:00:00.123', out_biz_no => $rid);
		my $sign = openssl_sign($key, join '&', map { "$_=$p{$_}" } sort keys %p);
		return join('&', map { "$_=" . $pct->($p{$_}) } sort keys %p) . '&sign_type=RSA2&sign=' . $pct->($sign);
	};
	refused('alipay: a refund notification signed by another key', 'AR-c2~N,S', 'ali',
		{ 'content-type' => 'application/x-www-form-urlencoded' },
		$notification->('AP-c2', 'AR-c2~N,S', "$dir/other.key"), qr/sign does not verify/);
	is(refund_row('AR-c2~N,S', 'status'), 'pending', '... the refund stays pending, its check an hour away');
	my ($out) = receive('ali', { 'content-type' => 'application/x-www-form-urlencoded' },
		$notification->('AP-c1', 'AR-c1~N,S', "$dir/ali.key"));
	is($out, 'AP-c1|pending|checking|200|AR-c1~N,S',
		'alipay: a signed notification naming the refund: checking (not believed)');
	wait_refund('AR-c1~N,S', q{status = 'succeeded' AND channel_status = 'REFUND_SUCCESS'},
		'... the refund checked at once: succeeded');
	is(refund_events('AR-c1~N,S'), 'AP-c1:pending>succeeded|REFUND_SUCCESS|poll', '... one event, source poll');
}

# paypal: a webhook naming the refund, never believed: checked at once
{
	my $body = $json->encode({ id => 'WH-1', event_type => 'PAYMENT.CAPTURE.REFUNDED',
		resource_type => 'refund', resource => { id => 'RF-c1~P,C', status => 'COMPLETED',
			amount => { currency_code => 'USD', value => '10.00' } } });
	my ($out) = receive('pp', { 'paypal-transmission-id' => 'x' }, $body);
	is($out, 'OP-c1~P|pending|checking|200|RF-c1~P,C', 'paypal: a refund webhook: checking (not believed)');
	wait_refund('RF-c1~P,C', q{status = 'succeeded' AND channel_status = 'COMPLETED'},
		'... the refund checked at once: succeeded');
	is(refund_events('RF-c1~P,C'), 'OP-c1~P:pending>succeeded|COMPLETED|poll', '... one event, source poll');
}

$node->stop;
done_testing();
