# 050_receive.pl: paysync.receive(), verified notifications.
#
# For each driver, notifications signed here as the channel signs them
# (openssl dgst for RSA, Digest::SHA for HMAC, t/mock/mock_seal for WeChat
# Pay's AEAD_AES_256_GCM resource): a good one is applied once (source
# notify), the same again is unchanged; a tampered body, a wrong key, an
# unknown serial, a stale timestamp, another app_id or mchid, a bad GCM tag,
# a truncated body are each an ERROR with SQLSTATE 28000 that changes
# nothing; an amount mismatch is failed; an unknown payment is unknown;
# paypal and channels without the notification options answer checking.
# Then a notification racing a poll and a report(): exactly one event.
# Keys reach the server only through pg_read_file(), and the server log is
# checked for the secrets at the end.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use Digest::SHA qw(hmac_sha256_hex);
use JSON::PP;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $MCHID = '1900009191';
my $PLATFORM_SERIAL = '5157F09EFDC096DE15EBE81A47057A7232F1B8E1';
my $API_V3_KEY = 'Zq4vT8wK2mN6pR0sU3xY7bD1fH5jL9cE';
my $APP_ID = '2021000123456789';
my $STRIPE_SECRET = 'whsec_testsecret0123456789abcdef';
my $HTTP_SECRET = 'hj-webhook-secret-0123456789';

my $dir = PostgreSQL::Test::Utils::tempdir();
make_rsa_key($dir, $_) for qw(merchant platform alipay app other);
spew_file("$dir/api_v3_key", $API_V3_KEY);
spew_file("$dir/stripe_secret", $STRIPE_SECRET);
spew_file("$dir/http_secret", $HTTP_SECRET);

# Errors are logged (with their statements), so a secret that leaked into
# one would show in the check at the end.
my $node = new_paysync_node('receive', conf => "log_min_messages = warning\n");
my $json = JSON::PP->new->canonical;

# SQL that reads a file on the server: keys never appear in statement text.
sub file_sql
{
	my ($name) = @_;
	return "pg_read_file('$dir/$name')";
}

# Nothing listens on port 9: polls of these channels fail, which is fine
# (payments are tracked with an hour-long schedule and never polled here).
my $base = 'http://127.0.0.1:9';
sql($node, qq{
SELECT paysync.create_channel('wx', 'wechatpay', '$base', jsonb_build_object(
	'mchid', '$MCHID', 'merchant_serial_no', 'ABC123',
	'merchant_private_key', @{[file_sql('merchant.key')]},
	'platform_public_key', @{[file_sql('platform.pub')]},
	'platform_serial', '$PLATFORM_SERIAL', 'api_v3_key', @{[file_sql('api_v3_key')]}));
SELECT paysync.create_channel('wx_nokey', 'wechatpay', '$base', jsonb_build_object(
	'mchid', '$MCHID', 'merchant_serial_no', 'ABC123',
	'merchant_private_key', @{[file_sql('merchant.key')]},
	'platform_public_key', @{[file_sql('platform.pub')]}));
SELECT paysync.create_channel('ali', 'alipay', '$base', jsonb_build_object(
	'app_id', '$APP_ID', 'app_private_key', @{[file_sql('app.key')]},
	'alipay_public_key', @{[file_sql('alipay.pub')]}));
SELECT paysync.create_channel('st', 'stripe', '$base', jsonb_build_object(
	'secret_key', 'sk_test_abc', 'webhook_secret', @{[file_sql('stripe_secret')]}));
SELECT paysync.create_channel('st_plain', 'stripe', '$base',
	'{"secret_key": "sk_test_abc"}');
SELECT paysync.create_channel('hj', 'http_json', '$base', jsonb_build_object(
	'status_map', '@{[STATUS_MAP]}'::jsonb, 'status_field', 'data.state',
	'webhook_secret', @{[file_sql('http_secret')]}, 'webhook_signature_header', 'X-Signature',
	'webhook_id_field', 'data.order'));
SELECT paysync.create_channel('hj_plain', 'http_json', '$base', jsonb_build_object(
	'status_map', '@{[STATUS_MAP]}'::jsonb, 'webhook_id_field', 'data.order'));
SELECT paysync.create_channel('pp', 'paypal', '$base',
	'{"client_id": "id", "client_secret": "secret"}');
});

# Tracks a payment that the worker leaves alone for an hour.
sub track
{
	my ($id, $channel, $amount, $currency) = @_;
	sql($node, "SELECT paysync.track('$id', '$channel', "
		  . (defined $amount ? $amount : 'NULL') . ', '
		  . (defined $currency ? "'$currency'" : 'NULL') . ", '{1h}')");
}

# receive()'s row, '|'-separated, without its last column refund_id (0.4:
# NULL for a payment's notification, the refund's id for a refund's).
sub receive
{
	my ($channel, $headers, $body) = @_;
	return sql($node, "SELECT payment_id, status, outcome, reply_status, reply_body"
		  . " FROM paysync.receive('$channel', "
		  . lit($json->encode($headers)) . '::jsonb, ' . lit($body) . ')');
}

# Everything a refused notification must leave alone.  Not pi_4: made due
# by a "checking" answer on a channel that cannot be reached, the worker
# retries it with backoff on its own, changing its row at any moment.
sub state_now
{
	return sql($node, q{SELECT (SELECT string_agg(payment_id || status || updated_at
		|| coalesce(next_check_at::text, '') || coalesce(last_error, ''), ',' ORDER BY payment_id)
		FROM paysync.payments WHERE payment_id <> 'pi_4'), (SELECT count(*) FROM paysync.events)});
}

# Checks that a notification is refused with SQLSTATE 28000, changing
# nothing, and that the message says $reason.
sub refused
{
	my ($what, $channel, $headers, $body, $reason) = @_;
	my $before = state_now();
	my ($stdout, $stderr) = ('', '');
	$node->psql('postgres', "\\set VERBOSITY verbose\nSELECT * FROM paysync.receive('$channel', "
		  . lit($json->encode($headers)) . '::jsonb, ' . lit($body) . ')',
		stdout => \$stdout, stderr => \$stderr);
	like($stderr, qr/ERROR:  28000: notification for channel "$channel" refused/, "$what: SQLSTATE 28000");
	like($stderr, $reason, "$what: the detail says why") if $reason;
	is(state_now(), $before, "$what: nothing changed");
}

# ---------------------------------------------------------------- wechatpay

my $seal_count = 0;

# A WeChat Pay payment notification for $id: the transaction sealed with
# $o{key} (default api_v3_key), the body signed by $o{signer} (default the
# platform key) at $o{time} (default now).  Returns (headers, body).
sub wx_notification
{
	my ($id, %o) = @_;
	my $transaction = $json->encode({
		mchid => $o{mchid} // $MCHID, appid => 'wxd678efh567hg6787',
		out_trade_no => $id, transaction_id => '4200000001' . $seal_count,
		trade_type => 'JSAPI', trade_state => $o{state} // 'SUCCESS',
		trade_state_desc => 'ok', success_time => '2026-11-30T12:00:00+08:00',
		amount => { total => $o{total} // 100, payer_total => $o{total} // 100,
			currency => 'CNY', payer_currency => 'CNY' } });
	my $nonce = sprintf('n%011d', ++$seal_count);
	my ($ciphertext, $err) = ('', '');
	IPC::Run::run([ "$FindBin::Bin/mock/mock_seal", $o{key} // $API_V3_KEY, $nonce,
		'transaction' ], '<', \$transaction, '>', \$ciphertext, '2>', \$err)
	  or die "mock_seal: $err";
	chomp $ciphertext;
	$ciphertext = $o{mangle_ciphertext}->($ciphertext) if $o{mangle_ciphertext};
	my $body = $json->encode({
		id => "EV-$seal_count", create_time => '2026-11-30T12:00:01+08:00',
		resource_type => 'encrypt-resource',
		event_type => $o{event_type} // 'TRANSACTION.SUCCESS', summary => 'ok',
		resource => { original_type => 'transaction', algorithm => 'AEAD_AES_256_GCM',
			ciphertext => $ciphertext, associated_data => 'transaction', nonce => $nonce } });
	my $stamp = $o{time} // time;
	my $header_nonce = "HN$seal_count";
	my $signature = openssl_sign("$dir/" . ($o{signer} // 'platform') . '.key',
		"$stamp\n$header_nonce\n$body\n");
	# names as Node and most servers hand them over: lower case
	return ({ 'wechatpay-timestamp' => "$stamp", 'wechatpay-nonce' => $header_nonce,
		'wechatpay-signature' => $signature, 'wechatpay-serial' => $o{serial} // $PLATFORM_SERIAL,
		'wechatpay-signature-type' => 'WECHATPAY2-SHA256-RSA2048',
		'content-type' => 'application/json' }, $body);
}

track('wx1', 'wx', 100, 'CNY');
my ($h, $b) = wx_notification('wx1');
is(receive('wx', $h, $b), 'wx1|succeeded|applied|204|', 'wechatpay: a good notification is applied');
is(events_of($node, 'wx1'), 'pending>succeeded|SUCCESS|notify|wx', 'wechatpay: one event, source notify');
is(receive('wx', $h, $b), 'wx1|succeeded|unchanged|204|', 'wechatpay: the same again is unchanged');
is(events_of($node, 'wx1'), 'pending>succeeded|SUCCESS|notify|wx', 'wechatpay: still one event');

track('wx2', 'wx', 100, 'CNY');
($h, $b) = wx_notification('wx2');
refused('wechatpay tampered body', 'wx', $h, $b =~ s/EV-/EV-X/r, qr/does not verify/);
refused('wechatpay truncated body', 'wx', $h, substr($b, 0, -1), qr/does not verify/);
refused('wechatpay signature missing', 'wx', { %$h, 'wechatpay-signature' => '' }, $b, qr/not signed/);
refused('wechatpay wrong key', 'wx', (wx_notification('wx2', signer => 'other')), qr/does not verify/);
refused('wechatpay unknown serial', 'wx', (wx_notification('wx2', serial => 'FFFF0000')),
	qr/platform_serial/);
refused('wechatpay stale timestamp', 'wx', (wx_notification('wx2', time => time - 400)),
	qr/off the clock/);
refused('wechatpay future timestamp', 'wx', (wx_notification('wx2', time => time + 400)),
	qr/off the clock/);
refused('wechatpay other mchid', 'wx', (wx_notification('wx2', mchid => '1900000001')),
	qr/merchant 1900000001/);
refused('wechatpay resource sealed with another key', 'wx',
	(wx_notification('wx2', key => 'x' x 32)), qr/does not decrypt/);
refused('wechatpay bad GCM tag', 'wx',
	(wx_notification('wx2', mangle_ciphertext => sub {
		my $c = shift; substr($c, -6, 1) = substr($c, -6, 1) eq 'A' ? 'B' : 'A'; $c })),
	qr/does not decrypt/);
refused('wechatpay headers twice', 'wx', { %$h, 'Wechatpay-Nonce' => 'x' }, $b, qr/twice/);
is(status_of($node, 'wx2'), 'pending', 'wechatpay: after all that, wx2 is still pending');

# still pending at the channel: unchanged, still due as before
($h, $b) = wx_notification('wx2', state => 'NOTPAY');
is(receive('wx', $h, $b), 'wx2|pending|unchanged|204|', 'wechatpay: NOTPAY is unchanged');
($h, $b) = wx_notification('wx2', total => 99);
is(receive('wx', $h, $b), 'wx2|failed|applied|204|', 'wechatpay: an amount mismatch is failed');
like(payment_row($node, 'wx2', 'last_error'), qr/amount mismatch: expected 100 CNY, channel reports 99 CNY/,
	'wechatpay: last_error says why');
($h, $b) = wx_notification('nosuch');
is(receive('wx', $h, $b), 'nosuch||unknown|204|', 'wechatpay: an unknown payment is unknown');
track('st_other', 'st', 100, 'CNY');
($h, $b) = wx_notification('st_other');
is(receive('wx', $h, $b), 'st_other||unknown|204|',
	"wechatpay: a payment of another channel is unknown to this one");
# a REFUND.* callback is a refund's (0.4): one whose resource names no
# refund (here a transaction) is refused as a transaction without
# out_trade_no is
($h, $b) = wx_notification('wx2', event_type => 'REFUND.SUCCESS');
refused('wechatpay refund event naming no refund', 'wx', $h, $b, qr/the notification's refund has no out_refund_no/);
track('wx3', 'wx_nokey', 100, 'CNY');
($h, $b) = wx_notification('wx3');
is(receive('wx_nokey', $h, $b), '||checking|204|', 'wechatpay without api_v3_key: checking');

# ---------------------------------------------------------------- alipay

# Form-encodes a value as Alipay's servers do (space as "+").
sub form_escape
{
	my ($text) = @_;
	$text =~ s/([^A-Za-z0-9\-_.~ ])/sprintf('%%%02X', ord($1))/ge;
	$text =~ tr/ /+/;
	return $text;
}

# An Alipay asynchronous notification for $id, signed by $o{signer}
# (default Alipay's key).  Returns (headers, body).
sub ali_notification
{
	my ($id, %o) = @_;
	my %p = (
		app_id => $o{app_id} // $APP_ID, auth_app_id => $APP_ID, charset => 'utf-8',
		notify_type => 'trade_status_sync', notify_id => 'ac05099524730693a8b330c5ecf72da9786',
		notify_time => '2026-11-30 12:00:02', gmt_create => '2026-11-30 11:59:00',
		gmt_payment => '2026-11-30 12:00:00', out_trade_no => $id,
		trade_no => '2026113022001', trade_status => $o{status} // 'TRADE_SUCCESS',
		total_amount => $o{amount} // '1.00', receipt_amount => '1.00',
		subject => 'Order 1 & more+', buyer_logon_id => '159****5620',
		seller_id => '2088101106499364', version => '1.0', fund_bill_list => '',
		sign_type => 'RSA2');
	my $content = join('&', map { "$_=$p{$_}" } grep { $_ ne 'sign_type' } sort keys %p);
	$p{sign} = openssl_sign("$dir/" . ($o{signer} // 'alipay') . '.key', $content);
	my $body = join('&', map { "$_=" . form_escape($p{$_}) } sort keys %p);
	return ({ 'Content-Type' => 'application/x-www-form-urlencoded; charset=utf-8' }, $body);
}

track('ali1', 'ali', 100, 'CNY');
($h, $b) = ali_notification('ali1');
is(receive('ali', $h, $b), 'ali1|succeeded|applied|200|success', 'alipay: a good notification is applied');
is(receive('ali', $h, $b), 'ali1|succeeded|unchanged|200|success', 'alipay: the same again is unchanged');
is(events_of($node, 'ali1'), 'pending>succeeded|TRADE_SUCCESS|notify|ali', 'alipay: one event');

track('ali2', 'ali', 100, 'CNY');
($h, $b) = ali_notification('ali2');
refused('alipay tampered body', 'ali', $h, $b =~ s/total_amount=1.00/total_amount=9.00/r,
	qr/does not verify/);
refused('alipay truncated body', 'ali', $h, substr($b, 0, -10));
refused('alipay wrong key', 'ali', (ali_notification('ali2', signer => 'other')), qr/does not verify/);
refused('alipay app key instead of Alipay key', 'ali', (ali_notification('ali2', signer => 'app')),
	qr/does not verify/);
refused('alipay other app_id', 'ali', (ali_notification('ali2', app_id => '2021000999999999')),
	qr/app_id 2021000999999999/);
refused('alipay no sign', 'ali', $h, $b =~ s/&sign=[^&]*//r, qr/not signed/);
refused('alipay not a form', 'ali', $h, '{"json": true}');
refused('alipay parameter twice', 'ali', $h, "$b&trade_status=TRADE_CLOSED", qr/twice/);
($h, $b) = ali_notification('ali2', status => 'WAIT_BUYER_PAY');
is(receive('ali', $h, $b), 'ali2|pending|unchanged|200|success', 'alipay: WAIT_BUYER_PAY is unchanged');
($h, $b) = ali_notification('ali2', amount => '0.99');
is(receive('ali', $h, $b), 'ali2|failed|applied|200|success', 'alipay: an amount mismatch is failed');
track('ali3', 'ali', 100, 'CNY');
($h, $b) = ali_notification('ali3', status => 'TRADE_CLOSED');
is(receive('ali', $h, $b), 'ali3|closed|applied|200|success', 'alipay: TRADE_CLOSED is closed');
($h, $b) = ali_notification('nosuch');
is(receive('ali', $h, $b), 'nosuch||unknown|200|success', 'alipay: an unknown payment is unknown');

# ---------------------------------------------------------------- stripe

# A Stripe event about PaymentIntent $id, signed with $o{secret} (default
# webhook_secret) at $o{time}.  Returns (headers, body).
sub st_notification
{
	my ($id, %o) = @_;
	my $status = $o{status} // 'succeeded';
	my $body = $json->encode({
		id => 'evt_1', object => 'event', api_version => '2024-06-20',
		type => $o{type} // "payment_intent.$status", livemode => JSON::PP::false,
		data => { object => { id => $id, object => 'payment_intent', status => $status,
			amount => 100, amount_received => $o{amount} // ($status eq 'succeeded' ? 100 : 0),
			currency => 'cny' } } });
	my $t = $o{time} // time;
	my $v1 = hmac_sha256_hex("$t.$body", $o{secret} // $STRIPE_SECRET);
	return ({ 'Stripe-Signature' => "t=$t,v1=" . ('0' x 64) . ",v1=$v1,v0=" . ('1' x 64) }, $body);
}

track('pi_1', 'st', 100, 'CNY');
($h, $b) = st_notification('pi_1');
is(receive('st', $h, $b), 'pi_1|succeeded|applied|200|', 'stripe: a good event (second v1) is applied');
is(receive('st', $h, $b), 'pi_1|succeeded|unchanged|200|', 'stripe: the same again is unchanged');
is(events_of($node, 'pi_1'), 'pending>succeeded|succeeded|notify|st', 'stripe: one event');
track('pi_2', 'st', 100, 'CNY');
($h, $b) = st_notification('pi_2');
refused('stripe tampered body', 'st', $h, $b =~ s/evt_1/evt_2/r, qr/no v1 signature/);
refused('stripe truncated body', 'st', $h, substr($b, 0, -1), qr/no v1 signature/);
refused('stripe wrong secret', 'st', (st_notification('pi_2', secret => 'whsec_other')),
	qr/no v1 signature/);
refused('stripe stale timestamp', 'st', (st_notification('pi_2', time => time - 400)),
	qr/off the clock/);
refused('stripe no header', 'st', {}, $b, qr/no Stripe-Signature/);
refused('stripe only v0', 'st', { 'Stripe-Signature' => 't=' . time . ',v0=' . ('1' x 64) }, $b,
	qr/no v1/);
($h, $b) = st_notification('pi_2', status => 'processing');
is(receive('st', $h, $b), 'pi_2|pending|unchanged|200|', 'stripe: processing is unchanged');
($h, $b) = st_notification('pi_2', status => 'requires_payment_method', type => 'payment_intent.payment_failed');
is(receive('st', $h, $b), 'pi_2|pending|unchanged|200|',
	'stripe: payment_failed (requires_payment_method, as a query says) is unchanged');
($h, $b) = st_notification('pi_2', amount => 50);
is(receive('st', $h, $b), 'pi_2|failed|applied|200|', 'stripe: an amount mismatch is failed');
track('pi_3', 'st', 100, 'CNY');
($h, $b) = st_notification('pi_3', status => 'canceled');
is(receive('st', $h, $b), 'pi_3|cancelled|applied|200|', 'stripe: canceled is cancelled');
($h, $b) = st_notification('pi_x', type => 'charge.succeeded');
is(receive('st', $h, $b), '||unknown|200|', 'stripe: another event type is about no payment');
track('pi_4', 'st_plain', 100, 'CNY');
($h, $b) = st_notification('pi_4');
is(receive('st_plain', $h, $b), 'pi_4|pending|checking|200|', 'stripe without webhook_secret: checking');
ok(sql($node, q{SELECT next_check_at <= now() FROM paysync.payments WHERE payment_id = 'pi_4'}) eq 't'
	  || sql($node, q{SELECT attempts > 0 FROM paysync.payments WHERE payment_id = 'pi_4'}) eq 't',
	'stripe without webhook_secret: the payment is due at once');

# ---------------------------------------------------------------- http_json

sub hj_notification
{
	my ($id, %o) = @_;
	my $body = $json->encode({ data => { order => $id, state => $o{state} // 'PAID' } });
	return ({ 'x-signature' => hmac_sha256_hex($body, $o{secret} // $HTTP_SECRET) }, $body);
}
track('hj1', 'hj');
($h, $b) = hj_notification('hj1');
is(receive('hj', $h, $b), 'hj1|succeeded|applied|200|', 'http_json: a good notification is applied');
is(receive('hj', $h, $b), 'hj1|succeeded|unchanged|200|', 'http_json: the same again is unchanged');
track('hj2', 'hj');
($h, $b) = hj_notification('hj2');
refused('http_json tampered body', 'hj', $h, $b =~ s/PAID/FAILED/r, qr/does not verify/);
refused('http_json wrong secret', 'hj', (hj_notification('hj2', secret => 'another-secret-0123')),
	qr/does not verify/);
refused('http_json no signature', 'hj', {}, $b, qr/no X-Signature/);
($h, $b) = hj_notification('hj2', state => 'WAIT');
is(receive('hj', $h, $b), 'hj2|pending|unchanged|200|', 'http_json: WAIT is unchanged');
track('hj3', 'hj_plain');
($h, $b) = hj_notification('hj3');
is(receive('hj_plain', $h, $b), 'hj3|pending|checking|200|', 'http_json without webhook_secret: checking');

# ---------------------------------------------------------------- paypal

track('5O190127TN364715T', 'pp', 100, 'USD');
my $pp_body = $json->encode({ id => 'WH-1', event_type => 'CHECKOUT.ORDER.APPROVED',
	resource_type => 'checkout-order', resource => { id => '5O190127TN364715T', status => 'COMPLETED' } });
is(receive('pp', {}, $pp_body), '5O190127TN364715T|pending|checking|200|',
	'paypal: an order event is never believed, the order is checked');
is(events_of($node, '5O190127TN364715T'), '', 'paypal: no event');
$pp_body = $json->encode({ id => 'WH-2', event_type => 'PAYMENT.CAPTURE.COMPLETED',
	resource_type => 'capture', resource => { id => '42311647XV020574X',
		supplementary_data => { related_ids => { order_id => 'ORDER_UNKNOWN' } } } });
is(receive('pp', {}, $pp_body), 'ORDER_UNKNOWN||unknown|200|', 'paypal: a capture names its order');

# ---------------------------------------------------------------- races

# A notification and a poll answer, a notification and a report(): the
# second waits for the first's events lock and finds the payment final.
track('race1', 'wx', 100, 'CNY');
my $attempts = sql($node, q{SELECT attempts FROM paysync.payments WHERE payment_id = 'race1'});
my $poll = $node->background_psql('postgres');
$poll->query_safe(qq{BEGIN; SELECT * FROM paysync._record_answers(ARRAY[ROW('race1', $attempts,
	'succeeded', 'SUCCESS', NULL, NULL, 100, 'CNY', false, false, NULL)::paysync._answer])});
($h, $b) = wx_notification('race1');
my $callback = $node->background_psql('postgres', on_error_stop => 0);
$callback->query_until(qr/sent/, "\\echo sent\nSELECT payment_id, status, outcome, reply_status, reply_body FROM paysync.receive('wx', "
	  . lit($json->encode($h)) . '::jsonb, ' . lit($b) . ");\n");
wait_for_sql($node, q{SELECT count(*) FROM pg_stat_activity
	WHERE wait_event_type = 'Lock' AND query LIKE '%paysync.receive%'}, '1',
	'race: the notification waits for the poll');
$poll->query_safe('COMMIT');
is($callback->query_safe('SELECT 1'), "race1|succeeded|unchanged|204|\n1",
	'race: the notification after the poll is unchanged');
is(events_of($node, 'race1'), 'pending>succeeded|SUCCESS|poll|wx', 'race: one event, the poll\'s');

track('race2', 'wx', 100, 'CNY');
($h, $b) = wx_notification('race2');
$poll->query_safe("BEGIN; SELECT * FROM paysync.receive('wx', "
	  . lit($json->encode($h)) . '::jsonb, ' . lit($b) . ')');
$callback->query_until(qr/sent/, "\\echo sent\nSELECT paysync.report('race2', 'failed');\n");
wait_for_sql($node, q{SELECT count(*) FROM pg_stat_activity
	WHERE wait_event_type = 'Lock' AND query LIKE '%paysync.report%'}, '1',
	'race: the report waits for the notification');
$poll->query_safe('COMMIT');
$callback->query('SELECT 1');
like($callback->{stderr}, qr/already succeeded, it cannot become failed/,
	'race: the report after the notification finds it final');
is(events_of($node, 'race2'), 'pending>succeeded|SUCCESS|notify|wx', 'race: one event, the notification\'s');
$poll->quit;
$callback->quit;

# ---------------------------------------------------------------- options

# The new options are checked by create_channel, never showing a secret.
sub create_fails
{
	my ($what, $sql, $message) = @_;
	my ($stdout, $stderr) = ('', '');
	$node->psql('postgres', $sql, stdout => \$stdout, stderr => \$stderr);
	like($stderr, $message, "options: $what");
	return $stderr;
}
my $err = create_fails('api_v3_key of another length', qq{
SELECT paysync.create_channel('wx_bad', 'wechatpay', '$base', jsonb_build_object(
	'mchid', '$MCHID', 'merchant_serial_no', 'ABC123',
	'merchant_private_key', @{[file_sql('merchant.key')]},
	'platform_public_key', @{[file_sql('platform.pub')]}, 'api_v3_key', 'short-secret-key'))},
	qr/invalid value for option "api_v3_key".*16 bytes; an APIv3 key has 32/s);
unlike($err, qr/short-secret-key/, 'options: the api_v3_key is not in the error');
$err = create_fails('a stripe webhook_secret without whsec_', qq{
SELECT paysync.create_channel('st_bad', 'stripe', '$base',
	'{"secret_key": "sk_test_abc", "webhook_secret": "not-a-whsec-secret"}')},
	qr/invalid value for option "webhook_secret"/);
unlike($err, qr/not-a-whsec-secret/, 'options: the webhook_secret is not in the error');
create_fails('http_json webhook_secret without webhook_signature_header', qq{
SELECT paysync.create_channel('hj_bad', 'http_json', '$base', jsonb_build_object(
	'status_map', '@{[STATUS_MAP]}'::jsonb, 'webhook_secret', 'a-long-enough-secret',
	'webhook_id_field', 'id'))},
	qr/needs option "webhook_signature_header"/);
create_fails('http_json webhook_secret without webhook_id_field', qq{
SELECT paysync.create_channel('hj_bad', 'http_json', '$base', jsonb_build_object(
	'status_map', '@{[STATUS_MAP]}'::jsonb, 'webhook_secret', 'a-long-enough-secret',
	'webhook_signature_header', 'X-Sig'))},
	qr/needs option "webhook_id_field"/);
create_fails('paypal takes no webhook options', qq{
SELECT paysync.create_channel('pp_bad', 'paypal', '$base',
	'{"client_id": "id", "client_secret": "secret", "webhook_secret": "x"}')},
	qr/unknown option "webhook_secret"/);
my ($out, $stderr_unknown) = ('', '');
$node->psql('postgres', "\\set VERBOSITY verbose\nSELECT * FROM paysync.receive('nochannel', '{}', '')",
	stdout => \$out, stderr => \$stderr_unknown);
like($stderr_unknown, qr/ERROR:  42704: unknown channel "nochannel"/, 'receive: an unknown channel is 42704');
my $stderr_null = '';
$node->psql('postgres', "\\set VERBOSITY verbose\nSELECT * FROM paysync.receive('st', '{}', NULL)",
	stdout => \$out, stderr => \$stderr_null);
like($stderr_null, qr/ERROR:  28000: .*\n.*no body/, 'receive: a null body is refused with 28000');

# ---------------------------------------------------------------- secrets

my $log = slurp_file($node->logfile);
for my $secret ($API_V3_KEY, $STRIPE_SECRET, $HTTP_SECRET)
{
	unlike($log, qr/\Q$secret\E/, 'no secret in the server log');
}
like($log, qr/notification for channel "wx" refused/, 'the refusals are in the log');

done_testing();
