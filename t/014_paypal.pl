# 014_paypal.pl: the "paypal" driver, end to end through the worker against
# t/mock/mock_paypal, and its request building and answer reading unit by
# unit through the drivers' test interface (paysync_test_request and
# paysync_test_interpret, src/driver_test.c).
#
# End to end: pending then COMPLETED is succeeded, VOIDED cancelled, a
# declined capture failed, amounts checked; the access token is fetched once
# for many checks, renewed before it expires, fetched again after a 401
# (expired or revoked token) with the payment still completing; a bad client
# secret makes every check an error, never a status; the secret, its Basic
# encoding and the tokens never show in the server log or in last_error.
#
# Refunds (0.4): GET /v2/payments/refunds/{id} with the bearer token, every
# refund status, amounts, 404, another refund; the same against mock_paypal
# with a token it issued; refund webhooks naming the refund to check.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use MIME::Base64 qw(encode_base64);
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# The secrets are spelled out only here and on the mocks' command lines;
# SQL builds them from pieces so that no statement text (all are logged)
# carries them.
my $CLIENT_ID = 'AYpaysync-test-client_01';
my $SECRET = 'EKsecret_PAYPAL_mock_9f2c';
my $SECRET_SQL = q{'EKsecret_' || upper('paypal') || '_mock_9f2c'};
my $WRONG = 'EKwrong_PAYPAL_mock_77aa';
my $WRONG_SQL = q{'EKwrong_' || upper('paypal') || '_mock_77aa'};

# ---------------------------------------------------------------- mocks

# Starts t/mock/mock_paypal with extra arguments; returns port, log, handle.
sub start_paypal_mock
{
	my (@args) = @_;
	return start_mock_program('mock_paypal', '--client-id', $CLIENT_ID,
		'--client-secret', $SECRET, @args);
}

# The mock's log: [unix_us, method, path, payment_id, http_status, token].
sub paypal_log
{
	my ($mock) = @_;
	return () unless -e $mock->{log};
	open my $fh, '<', $mock->{log} or die $!;
	my @lines = map { chomp; [ split / / ] } <$fh>;
	close $fh;
	return @lines;
}

my $good = start_paypal_mock();    # a token for 9 hours
my $renew = start_paypal_mock('--token-ttl', '62');    # renewed after ~2 s
my $expire = start_paypal_mock('--token-ttl', '2', '--expires-in', '3600');
my $revoke = start_paypal_mock('--revoke-after', '3');
my $badcred = start_paypal_mock();

# Every message level and every statement is logged, so that a secret
# logged anywhere shows.
my $node = new_paysync_node('paypal',
	conf => "log_min_messages = debug5\nlog_statement = 'all'\n");

sub create_paypal_channel
{
	my ($name, $mock, $secret_sql) = @_;
	sql($node, "SELECT paysync.create_channel('$name', 'paypal', 'http://127.0.0.1:$mock->{port}',
		jsonb_build_object('client_id', '$CLIENT_ID', 'client_secret', $secret_sql))");
}

# ---------------------------------------------------------------- create_channel

# An invalid definition is refused, naming the option and never its value.
{
	my $base = "'http://127.0.0.1:$good->{port}'";
	my @bad = (
		[ "'{\"client_id\": \"$CLIENT_ID\"}'", qr/needs option "client_secret"/,
			'no client_secret' ],
		[ "jsonb_build_object('client_secret', $SECRET_SQL)", qr/needs option "client_id"/,
			'no client_id' ],
		[ "jsonb_build_object('client_id', '$CLIENT_ID', 'client_secret', 42)",
			qr/"client_secret".*must be a JSON string/s, 'a client_secret that is not a string' ],
		[ "jsonb_build_object('client_id', '$CLIENT_ID', 'client_secret', '')",
			qr/"client_secret".*is empty/s, 'an empty client_secret' ],
		[ "jsonb_build_object('client_id', '$CLIENT_ID', 'client_secret', $SECRET_SQL || chr(10))",
			qr/"client_secret".*control character/s, 'a client_secret with a line break' ],
		[ "jsonb_build_object('client_id', 'a:b', 'client_secret', $SECRET_SQL)",
			qr/"client_id".*":"/s, 'a client_id with a colon' ],
		[ "jsonb_build_object('client_id', '$CLIENT_ID', 'client_secret', $SECRET_SQL, 'close_on_expiry', true)",
			qr/close_on_expiry.*cannot close/s, 'close_on_expiry' ],
		[ "jsonb_build_object('client_id', '$CLIENT_ID', 'client_secret', $SECRET_SQL, 'webhook_id', 'x')",
			qr/unknown option "webhook_id"/, 'an unknown option' ],
	);
	for my $case (@bad)
	{
		my ($options, $re, $what) = @$case;
		my ($ret, $out, $err) = $node->psql('postgres',
			"\\set VERBOSITY verbose\nSELECT paysync.create_channel('bad', 'paypal', $base, $options)");
		isnt($ret, 0, "create_channel refuses $what");
		like($err, qr/ERROR:  22023: /, '... with SQLSTATE 22023');
		like($err, $re, "... saying which option");
		unlike($err, qr/\Q$SECRET\E/, '... never showing the secret');
	}
	is(sql($node, "SELECT count(*) FROM paysync.channels WHERE name = 'bad'"), '0',
		'no refused channel was created');
	my ($ret, $out, $err) = $node->psql('postgres',
		"SELECT paysync.create_channel('bad', 'paypal', 'ftp://127.0.0.1', jsonb_build_object('client_id', 'x', 'client_secret', 'y'))");
	like($err, qr/base_url/, 'a base_url that is not http(s) is refused');
}

create_paypal_channel('pp', $good, $SECRET_SQL);
create_paypal_channel('pp_renew', $renew, $SECRET_SQL);
create_paypal_channel('pp_expire', $expire, $SECRET_SQL);
create_paypal_channel('pp_revoke', $revoke, $SECRET_SQL);
create_paypal_channel('pp_bad', $badcred, $WRONG_SQL);
is(sql($node, "SELECT count(*) FROM paysync.channels WHERE driver = 'paypal'"), '5',
	'five paypal channels created');

# ---------------------------------------------------------------- tracking

my $S1 = '{1s,1s,1s,1s,1s,1s,1s,1s,1s,1s}';
# [payment_id, channel, amount_minor, currency, schedule]
my @tracked = (
	[ 'ps~C,A,P', 'pp', 1000, 'USD', $S1 ],
	[ 'pr~R,H,P~25.50EUR', 'pp', 2550, 'EUR', $S1 ],
	[ 'sv~S,P', 'pp', undef, undef, $S1 ],
	[ 'v~C,V', 'pp', 1000, 'USD', $S1 ],
	[ 'd~A,D', 'pp', 1000, 'USD', $S1 ],
	[ 'f~F', 'pp', undef, undef, $S1 ],
	[ 'rf~B', 'pp', 1000, 'USD', $S1 ],
	[ 'mm~C,P~12.00USD', 'pp', 1000, 'USD', $S1 ],
	[ 'mc~P~10.00EUR', 'pp', 1000, 'USD', $S1 ],
	[ 'jp~P~1500JPY', 'pp', 1500, 'JPY', $S1 ],
	[ 'e5~E503,P', 'pp', 1000, 'USD', $S1 ],
	[ 'nf~N', 'pp', undef, undef, '{1s,1s}' ],
	[ 'u~U', 'pp', undef, undef, $S1 ],
	[ 'z~Z', 'pp', undef, undef, $S1 ],
	[ 'j~J', 'pp', undef, undef, $S1 ],
	[ 'renew~C,C,C,C,C,C,P', 'pp_renew', 1000, 'USD', $S1 ],
	[ 'exp~C,C,C,C,P', 'pp_expire', 1000, 'USD', $S1 ],
	[ 'rv~C,A,C,A,C,P', 'pp_revoke', 1000, 'USD', $S1 ],
	[ 'rv2~C,C,C,P', 'pp_revoke', 1000, 'USD', $S1 ],
	[ 'bad~P', 'pp_bad', 1000, 'USD', $S1 ],
);
sql($node, join ";\n", map {
	my ($id, $channel, $amount, $currency, $schedule) = @$_;
	"SELECT 1 FROM paysync.track(" . lit($id) . ", '$channel', "
	  . (defined $amount ? $amount : 'NULL') . ', '
	  . (defined $currency ? lit($currency) : 'NULL')
	  . ", schedule => '$schedule')"
} @tracked);

# ---------------------------------------------------------------- statuses

wait_payment_status($node, 'ps~C,A,P', 'succeeded');
is(payment_row($node, 'ps~C,A,P', 'channel_status'), 'COMPLETED', '... channel_status COMPLETED');
is(events_of($node, 'ps~C,A,P'), 'pending>succeeded|COMPLETED|poll|pp',
	'... one event, pending to succeeded');
is(scalar(grep { $_->[3] eq 'ps~C,A,P' && $_->[4] eq '200' } paypal_log($good)), 3,
	'... after three answers (CREATED, APPROVED, COMPLETED)');

wait_payment_status($node, 'pr~R,H,P~25.50EUR', 'succeeded');
is(payment_row($node, 'pr~R,H,P~25.50EUR', 'step'), '3',
	'PAYER_ACTION_REQUIRED and a PENDING capture were pending, then succeeded');
wait_payment_status($node, 'sv~S,P', 'succeeded');

wait_payment_status($node, 'v~C,V', 'cancelled');
is(payment_row($node, 'v~C,V', 'channel_status'), 'VOIDED', '... channel_status VOIDED');

wait_payment_status($node, 'd~A,D', 'failed');
is(payment_row($node, 'd~A,D', 'channel_status'), 'COMPLETED/DECLINED',
	'a declined capture of a COMPLETED order is failed');
wait_payment_status($node, 'f~F', 'failed');
is(payment_row($node, 'f~F', 'channel_status'), 'COMPLETED/FAILED', '... and so is a FAILED capture');

wait_payment_status($node, 'rf~B', 'succeeded');
is(payment_row($node, 'rf~B', 'channel_status'), 'COMPLETED/REFUNDED',
	'a capture refunded since is still a payment that succeeded');

wait_payment_status($node, 'mm~C,P~12.00USD', 'failed');
like(payment_row($node, 'mm~C,P~12.00USD', 'last_error'),
	qr/^amount mismatch: expected 1000 USD, channel reports 1200 USD$/,
	'... amount mismatch: failed, last_error says so');
is(sql($node, "SELECT status FROM paysync.events WHERE payment_id = 'mm~C,P~12.00USD'"), 'failed',
	'... and the event says failed');
wait_payment_status($node, 'mc~P~10.00EUR', 'failed');
like(payment_row($node, 'mc~P~10.00EUR', 'last_error'), qr/expected 1000 USD, channel reports 1000 EUR/,
	'a currency mismatch is failed too');
wait_payment_status($node, 'jp~P~1500JPY', 'succeeded');

wait_payment_status($node, 'e5~E503,P', 'succeeded');
is(payment_row($node, 'e5~E503,P', 'errors || \'|\' || last_error'), '0|HTTP 503 from the channel',
	'a 503 was an error, then the next answer counted');

wait_payment_status($node, 'nf~N', 'expired');
is(payment_row($node, 'nf~N', 'channel_status'), 'RESOURCE_NOT_FOUND',
	'an order PayPal does not know is not paid: expired when the schedule ends');

# Answers the driver cannot map are errors, never statuses.
for my $case ([ 'u~U', qr/unknown PayPal order status "WEIRD"/ ],
	[ 'z~Z', qr/intent AUTHORIZE/ ],
	[ 'j~J', qr/not a JSON object/ ])
{
	my ($id, $re) = @$case;
	wait_for_sql($node,
		"SELECT errors >= 2 FROM paysync.payments WHERE payment_id = " . lit($id),
		't', "$id: errors");
	is(payment_row($node, $id, 'status || \'|\' || coalesce(channel_status, \'-\')'), 'pending|-',
		"... $id stays pending with no channel status");
	like(payment_row($node, $id, 'last_error'), $re, "... $id: last_error says why");
	is(sql($node, "SELECT count(*) FROM paysync.events WHERE payment_id = " . lit($id)), '0',
		"... $id: no event");
}

# ---------------------------------------------------------------- tokens

# One token served every check of channel pp.
{
	my $s = mock_stats($good);
	is($s->{token_requests}, 1, 'pp: one token request for all its checks');
	is($s->{tokens_issued}, 1, '... one token issued');
	is($s->{unauthorized}, 0, '... no order request refused');
	cmp_ok($s->{orders_requests}, '>=', 20, "... for $s->{orders_requests} order requests");
	my @log = paypal_log($good);
	is($log[0][2], '/v1/oauth2/token', '... and it came first');
}

# A token is renewed before it expires: no request is ever refused.
wait_payment_status($node, 'renew~C,C,C,C,C,C,P', 'succeeded');
{
	my $s = mock_stats($renew);
	cmp_ok($s->{tokens_issued}, '>=', 2, "pp_renew: the token was renewed ($s->{tokens_issued} issued)");
	is($s->{unauthorized}, 0, '... before it expired: no request refused');
	is(payment_row($node, 'renew~C,C,C,C,C,C,P', 'errors'), '0', '... and no error');
}

# A token that expired at PayPal before its announced lifetime: 401, dropped,
# fetched again, and the payment still completes.
wait_payment_status($node, 'exp~C,C,C,C,P', 'succeeded');
{
	my $s = mock_stats($expire);
	cmp_ok($s->{unauthorized}, '>=', 1, "pp_expire: the expired token was refused ($s->{unauthorized} times)");
	cmp_ok($s->{tokens_issued}, '>=', 2, "... and a new one fetched ($s->{tokens_issued} issued)");
	my @log = paypal_log($expire);
	my ($refused) = grep { $log[$_][4] eq '401' } 0 .. $#log;
	ok(defined $refused
		  && grep({ $_->[2] eq '/v1/oauth2/token' && $_->[4] eq '200' } @log[ $refused + 1 .. $#log ]),
		'... the new token was fetched after the 401');
	is(sql($node, "SELECT string_agg(status::text, ',') FROM paysync.events WHERE payment_id = 'exp~C,C,C,C,P'"),
		'succeeded', '... the 401 made no event');
}

# A revoked token (after 3 requests each): 401, fetched again, completes.
wait_payment_status($node, 'rv~C,A,C,A,C,P', 'succeeded');
wait_payment_status($node, 'rv2~C,C,C,P', 'succeeded');
{
	my $s = mock_stats($revoke);
	cmp_ok($s->{unauthorized}, '>=', 1, "pp_revoke: revoked tokens were refused ($s->{unauthorized} times)");
	cmp_ok($s->{tokens_issued}, '>=', 3, "... and new ones fetched ($s->{tokens_issued} issued)");
	is($s->{tokens_issued}, $s->{token_requests}, '... every token request was answered with a token');
}

# ---------------------------------------------------------------- bad secret

wait_for_sql($node, "SELECT errors >= 2 FROM paysync.payments WHERE payment_id = 'bad~P'",
	't', 'pp_bad: the checks are errors');
is(status_of($node, 'bad~P'), 'pending', '... the payment stays pending');
like(payment_row($node, 'bad~P', 'last_error'),
	qr/^access token request failed: PayPal refused the client credentials \(HTTP 401, invalid_client\)/,
	'... last_error: the credentials were refused');
is(sql($node, "SELECT count(*) FROM paysync.events WHERE payment_id = 'bad~P'"), '0', '... no event');
{
	my $s = mock_stats($badcred);
	is($s->{tokens_issued}, 0, '... no token was issued');
	is($s->{orders_requests}, 0, '... and the order was never asked for without one');
	cmp_ok($s->{token_requests}, '>=', 2, '... the token was asked for again at each retry');
}

# The right secret, and the payment goes through.
sql($node, "UPDATE paysync.channels SET options = jsonb_set(options, '{client_secret}', to_jsonb($SECRET_SQL)) WHERE name = 'pp_bad'");
sql($node, "SELECT paysync.check_now('bad~P')");
wait_payment_status($node, 'bad~P', 'succeeded');
is(mock_stats($badcred)->{tokens_issued}, 1, '... with the token fetched once the secret is right');

# ---------------------------------------------------------------- secrets

{
	my @tokens = map { my $m = $_; map { $_->[5] } grep { defined $_->[5] } paypal_log($m) }
	  ($good, $renew, $expire, $revoke, $badcred);
	cmp_ok(scalar @tokens, '>=', 8, scalar(@tokens) . ' tokens were issued in all');
	my %secrets = (
		'the client secret' => $SECRET,
		'the wrong client secret' => $WRONG,
		'the Basic credentials' => encode_base64("$CLIENT_ID:$SECRET", ''),
		'the wrong Basic credentials' => encode_base64("$CLIENT_ID:$WRONG", ''),
		map { ("token $_" => $_) } @tokens);
	my $server_log = slurp_file($node->logfile);
	my $errors = sql($node, "SELECT string_agg(coalesce(last_error, '') || coalesce(channel_status, ''), ' ') FROM paysync.payments")
	  . sql($node, "SELECT string_agg(coalesce(channel_status, ''), ' ') FROM paysync.events");
	my @leaks = grep { index($server_log, $secrets{$_}) >= 0 || index($errors, $secrets{$_}) >= 0 }
	  sort keys %secrets;
	is_deeply(\@leaks, [], 'no secret or token in the server log, last_error or events');
	like($server_log, qr/EKsecret_/, '... (the log does hold the statements that built the secret)');
}

# ---------------------------------------------------------------- units

create_test_functions($node);

# Options of a channel for the units: no secret of the mocks'.
my $UNIT_OPTIONS = q{'{"client_id": "ID", "client_secret": "SEC"}'};

# What the driver makes of an order answer (HTTP status, body):
# paysync_test_interpret's "name=value" lines.  An error is one line unless
# the token is dropped (credentials_rejected=true follows), so the patterns
# below end in .*$ where the token must be kept.
sub interpret
{
	my ($status, $body) = @_;
	return test_interpret($node, driver => 'paypal', options => $UNIT_OPTIONS,
		status => $status, body => $body);
}

# What the driver makes of a token answer (HTTP status, body).
sub token
{
	my ($status, $body) = @_;
	return test_interpret($node, driver => 'paypal', options => $UNIT_OPTIONS,
		kind => 'token', status => $status, body => $body);
}

# An order body: status, and captures (each [status, value, currency]).
sub order
{
	my ($status, @captures) = @_;
	my $caps = join ',', map {
		my ($s, $v, $c) = @$_;
		qq({"id":"3C6","status":"$s","amount":{"currency_code":"$c","value":"$v"}})
	} @captures;
	my $payments = @captures ? qq(,"payments":{"captures":[$caps]}) : '';
	return qq({"id":"5O1","purchase_units":[{"reference_id":"default","amount":{"currency_code":"USD","value":"10.00"}$payments}],"status":"$status"});
}

# Order statuses.
is(interpret(200, order($_)), "status=pending\nchannel_status=$_", "$_ is pending")
  for qw(CREATED SAVED APPROVED PAYER_ACTION_REQUIRED);
is(interpret(200, order('VOIDED')), "status=cancelled\nchannel_status=VOIDED", 'VOIDED is cancelled');
like(interpret(200, order('PARTIALLY_COMPLETED')),
	qr/^error=unknown PayPal order status "PARTIALLY_COMPLETED".*$/,
	'an unknown order status is an error');
like(interpret(200, '{"id":"5O1"}'), qr/^error=the answer has no order status.*$/, 'no status is an error');
like(interpret(200, '{"status":null}'), qr/^error=the answer has no order status.*$/, 'a null status is an error');
like(interpret(200, '{"status":{"value":"COMPLETED"}}'), qr/^error=the answer has no order status.*$/,
	'a status that is an object is an error');

# Captures of a COMPLETED order.
is(interpret(200, order('COMPLETED', [ 'COMPLETED', '10.00', 'USD' ])),
	"status=succeeded\nchannel_status=COMPLETED\npaid_amount=1000\npaid_currency=USD",
	'COMPLETED with a completed capture: succeeded, with the amount');
is(interpret(200, order('COMPLETED', [ 'PENDING', '10.00', 'USD' ])),
	"status=pending\nchannel_status=COMPLETED/PENDING",
	'a PENDING capture is pending');
is(interpret(200, order('COMPLETED', [ 'DECLINED', '10.00', 'USD' ])),
	"status=failed\nchannel_status=COMPLETED/DECLINED",
	'a DECLINED capture is failed');
is(interpret(200, order('COMPLETED', [ 'FAILED', '10.00', 'USD' ])),
	"status=failed\nchannel_status=COMPLETED/FAILED",
	'a FAILED capture is failed');
is(interpret(200, order('COMPLETED', [ 'REFUNDED', '10.00', 'USD' ])),
	"status=succeeded\nchannel_status=COMPLETED/REFUNDED\npaid_amount=1000\npaid_currency=USD",
	'a REFUNDED capture was paid');
is(interpret(200, order('COMPLETED', [ 'PARTIALLY_REFUNDED', '7.5', 'USD' ])),
	"status=succeeded\nchannel_status=COMPLETED/PARTIALLY_REFUNDED\npaid_amount=750\npaid_currency=USD",
	'so was a PARTIALLY_REFUNDED one');
like(interpret(200, order('COMPLETED', [ 'REVERSED', '10.00', 'USD' ])),
	qr/^error=unknown PayPal capture status "REVERSED".*$/,
	'an unknown capture status is an error');
is(interpret(200, order('COMPLETED', [ 'COMPLETED', '1500', 'JPY' ])),
	"status=succeeded\nchannel_status=COMPLETED\npaid_amount=1500\npaid_currency=JPY",
	'JPY has no minor unit');
is(interpret(200, order('COMPLETED', [ 'COMPLETED', '1.234', 'KWD' ])),
	"status=succeeded\nchannel_status=COMPLETED\npaid_amount=1234\npaid_currency=KWD",
	'KWD has three digits');
like(interpret(200, order('COMPLETED', [ 'COMPLETED', '10.001', 'USD' ])),
	qr/^error=.*not a valid USD amount.*$/,
	'an amount with too many digits is an error');
like(interpret(200, order('COMPLETED', [ 'COMPLETED', '-1.00', 'USD' ])),
	qr/^error=.*not a valid USD amount.*$/,
	'a negative amount is an error');
# Amounts beyond int64 are errors, never another amount; zeros after the
# minor unit say nothing more, other digits there are refused.
like(interpret(200, order('COMPLETED', [ 'COMPLETED', '922337203685477589', 'USD' ])),
	qr/^error=.*"922337203685477589" is not a valid USD amount/,
	'an amount whose minor units overflow int64 is an error (it was read as 820)');
like(interpret(200, order('COMPLETED', [ 'COMPLETED', '99999999999999999999', 'JPY' ])),
	qr/^error=.*not a valid JPY amount/, 'an amount of more than int64 digits is an error');
is(interpret(200, order('COMPLETED', [ 'COMPLETED', '92233720368547758.07', 'USD' ])),
	"status=succeeded\nchannel_status=COMPLETED\npaid_amount=9223372036854775807\npaid_currency=USD", 'the largest int64 amount is read as it is');
is(interpret(200, order('COMPLETED', [ 'COMPLETED', '1000.00', 'JPY' ])), "status=succeeded\nchannel_status=COMPLETED\npaid_amount=1000\npaid_currency=JPY",
	'JPY "1000.00" is 1000 yen');
like(interpret(200, order('COMPLETED', [ 'COMPLETED', '1000.50', 'JPY' ])), qr/^error=.*"1000\.50" is not a valid JPY amount/,
	'JPY "1000.50" is refused: yen have no fraction');
is(interpret(200, order('COMPLETED', [ 'COMPLETED', '10.500', 'USD' ])), "status=succeeded\nchannel_status=COMPLETED\npaid_amount=1050\npaid_currency=USD",
	'a zero beyond the cents says nothing more');
like(interpret(200, order('COMPLETED', [ 'COMPLETED', '10.00', 'usd' ])), qr/^error=.*not an ISO 4217 code/,
	'a currency that is not an ISO code is an error');
like(interpret(200, order('COMPLETED')),
	qr/^error=order COMPLETED but the answer has no purchase_units\[0\]\.payments\.captures\[0\]\.status.*$/,
	'COMPLETED without a capture is an error');
like(interpret(200, '{"status":"COMPLETED","purchase_units":[{"payments":{"authorizations":[{"status":"CREATED"}]}}]}'),
	qr/^error=.*intent AUTHORIZE.*$/, 'COMPLETED with only an authorization is an error');
like(interpret(200, '{"status":"COMPLETED","purchase_units":[{"payments":{"captures":[{"status":"COMPLETED"}]}}]}'),
	qr/^error=the capture has no amount.*$/, 'a completed capture without an amount is an error');

# The first capture of the first purchase unit decides, wherever members
# are and whatever else carries a "status".
is(interpret(200,
		'{"links":[{"status":"VOIDED"}],"purchase_units":[{"status":"VOIDED","payments":{"captures":['
		  . '{"amount":{"value":"10.00","currency_code":"USD"},"status":"COMPLETED","status_details":{"status":"X"}},'
		  . '{"status":"DECLINED","amount":{"value":"99.00","currency_code":"EUR"}}]}},'
		  . '{"payments":{"captures":[{"status":"DECLINED"}]}}],"status":"COMPLETED"}'),
	"status=succeeded\nchannel_status=COMPLETED\npaid_amount=1000\npaid_currency=USD",
	'the first capture of the first unit decides');
is(interpret(200,
		'{"status":"COMPLETED","purchase_units":[{"payments":{"captures":['
		  . '{"status":"DECLINED","amount":{"value":"10.00","currency_code":"USD"}},'
		  . '{"status":"COMPLETED","amount":{"value":"10.00","currency_code":"USD"}}]}}]}'),
	"status=failed\nchannel_status=COMPLETED/DECLINED", '... not a later one');
like(interpret(200,
		'{"status":"COMPLETED","purchase_units":{"0":{"payments":{"captures":{"0":{"status":"COMPLETED",'
		  . '"amount":{"value":"10.00","currency_code":"USD"}}}}}}}'),
	qr/^error=order COMPLETED but the answer has no.*$/, 'an object with a member "0" is not an array');
is(interpret(200, "  \n" . order('COMPLETED', [ 'COMPLETED', '10.00', 'USD' ]) . "\n"),
	"status=succeeded\nchannel_status=COMPLETED\npaid_amount=1000\npaid_currency=USD",
	'blanks around the JSON are fine');

# HTTP statuses.
like(interpret(401, '{"name":"AUTHENTICATION_FAILURE","message":"Authentication failed"}'),
	qr/^error=HTTP 401 from PayPal \(AUTHENTICATION_FAILURE\).*\ncredentials_rejected=true$/,
	'401: an error that drops the token');
like(interpret(401, '{"error":"invalid_token","error_description":"Token signature verification failed"}'),
	qr/^error=HTTP 401 from PayPal \(invalid_token\).*\ncredentials_rejected=true$/, '... whatever its body');
like(interpret(401, 'Unauthorized'), qr/^error=HTTP 401 from PayPal \(no error name\).*\ncredentials_rejected=true$/,
	'... even when it is not JSON');
is(interpret(404, '{"name":"RESOURCE_NOT_FOUND","details":[{"issue":"INVALID_RESOURCE_ID"}]}'),
	"status=pending\nchannel_status=RESOURCE_NOT_FOUND", "404 RESOURCE_NOT_FOUND: PayPal has no such order, not paid");
like(interpret(404, '<html>Not Found</html>'), qr/^error=HTTP 404 from PayPal \(no error name\).*$/,
	'another 404 is an error');
like(interpret(403, '{"name":"NOT_AUTHORIZED"}'), qr/^error=unexpected HTTP 403 from PayPal \(NOT_AUTHORIZED\).*$/,
	'403 is an error that keeps the token');
like(interpret(400, '{"name":"INVALID_REQUEST <b>"}'), qr/^error=unexpected HTTP 400 from PayPal \(no error name\).*$/,
	'an error name that is not a plain word is not quoted');
like(interpret(201, order('CREATED')), qr/^error=unexpected HTTP 201.*$/, '201 is an error');
like(interpret($_, '{}'), qr/^error=HTTP $_ from the channel.*$/, "$_ is an error") for (429, 500, 503);
like(interpret(0, "Couldn't connect to server"), qr/^error=Couldn't connect.*$/, 'a transport error is an error');

# Bodies.
like(interpret(200, 'not json'), qr/^error=the answer is not a JSON object.*$/, 'not JSON');
like(interpret(200, '[' . order('COMPLETED', [ 'COMPLETED', '10.00', 'USD' ]) . ']'),
	qr/^error=the answer is not a JSON object.*$/, 'an array');
like(interpret(200, '{"status":"COMPLETED"'), qr/^error=the answer is not valid JSON.*$/, 'truncated JSON');
like(interpret(200, '{"status":"APPROVED"} x'), qr/^error=the answer is not valid JSON.*$/, 'trailing garbage');
like(interpret(200, '{"a":' . ('[' x 100000) . (']' x 100000) . ',"status":"APPROVED"}'),
	qr/^error=the answer nests deeper than 64 levels.*$/, 'a deeply nested answer');
is(interpret(200, '{"a":"[[[[' . ('[' x 100) . '","status":"APPROVED"}'), "status=pending\nchannel_status=APPROVED",
	'brackets inside strings are not nesting');

# Token answers.
is(token(200, '{"scope":"x","access_token":"A21AAbc-_.9","token_type":"Bearer","app_id":"APP-1","expires_in":32400,"nonce":"n"}'),
	"token=A21AAbc-_.9\nexpires_in=32400", 'a token answer gives the token and its lifetime');
is(token(200, '{"access_token":"A21AAx","expires_in":3600}'), "token=A21AAx\nexpires_in=3600", 'token_type may be left out');
like(token(401, '{"error":"invalid_client","error_description":"Client Authentication failed"}'),
	qr/^error=PayPal refused the client credentials \(HTTP 401, invalid_client\): check client_id and client_secret$/,
	'401 invalid_client: the credentials were refused');
like(token(400, '{"error":"unsupported_grant_type"}'),
	qr/^error=unexpected HTTP 400 from the PayPal token endpoint \(unsupported_grant_type\)/, '400 is an error');
like(token(503, ''), qr/^error=HTTP 503 from the PayPal token endpoint/, '503 is an error');
like(token(0, "Couldn't connect to server"), qr/^error=Couldn't connect/, 'a transport error is an error');
like(token(200, '{"expires_in":3600}'), qr/^error=the token answer has no access_token/, 'no access_token');
like(token(200, '{"access_token":42,"expires_in":3600}'), qr/^error=the token answer has no access_token/,
	'an access_token that is not a string');
like(token(200, '{"access_token":"","expires_in":3600}'), qr/^error=.*empty/, 'an empty access_token');
like(token(200, '{"access_token":"A21 AA","expires_in":3600}'), qr/^error=.*characters a header cannot carry/,
	'an access_token with a blank');
like(token(200, '{"access_token":"A21AA\r\nX-Evil: 1","expires_in":3600}'),
	qr/^error=.*characters a header cannot carry/, 'an access_token with a line break');
like(token(200, '{"access_token":"A21AA","token_type":"MAC","expires_in":3600}'), qr/^error=.*not Bearer/,
	'a token that is not a bearer token');
like(token(200, '{"access_token":"A21AA"}'), qr/^error=the token answer has no expires_in/, 'no expires_in');
like(token(200, '{"access_token":"A21AA","expires_in":"3600"}'), qr/^error=the token answer has no expires_in/,
	'an expires_in that is a string');
like(token(200, '{"access_token":"A21AA","expires_in":0}'), qr/^error=.*not a positive whole number/,
	'expires_in 0');
like(token(200, '{"access_token":"A21AA","expires_in":1.5}'), qr/^error=.*not a positive whole number/,
	'a fractional expires_in');
like(token(200, '{"access_token":"A21AA","expires_in":-60}'), qr/^error=.*not a positive whole number/,
	'a negative expires_in');
is(token(200, '{"access_token":"A21AA","expires_in":99999999999}'), "token=A21AA\nexpires_in=2147483647",
	'a huge expires_in is capped');
like(token(200, 'oops'), qr/^error=token answer: the answer is not a JSON object/, 'a token answer that is not JSON');

# Requests: Basic credentials checked against an independent base64
# (openssl base64), the bearer token, the URL-encoded order id.

# The request the driver builds (kind query or token) for a channel with
# options (SQL jsonb): paysync_test_request's "name=value" lines.
sub request
{
	my ($base_url, $options, $kind, $payment_id, $token) = @_;
	return test_request($node, driver => 'paypal', options => $options,
		base_url => $base_url, kind => $kind, payment_id => $payment_id, token => $token);
}

for my $case ([ 'AYshort', 'EKs' ],
	[ 'AZaB9_-long-client-id-' . ('x' x 60), 'EK-' . ('y' x 70) . '+/=' ],
	[ 'id', "s\x{e9}cr\x{e8}t" ])
{
	my ($id, $secret) = @$case;
	my $bytes = $secret;
	utf8::encode($bytes);
	my $want = run_openssl([ 'base64', '-A' ], "$id:$bytes");
	my $got = request('http://127.0.0.1:9/',
		"jsonb_build_object('client_id', " . lit($id) . ", 'client_secret', convert_from(decode('"
		  . unpack('H*', $bytes) . "', 'hex'), 'UTF8'))", 'token');
	like($got, qr/^header=Authorization: Basic \Q$want\E$/m,
		'Basic credentials for a ' . length($id . $secret) . '-character pair match openssl base64');
}

is( request('http://127.0.0.1:9/api/', $UNIT_OPTIONS, 'token') . "\n--\n"
	  . request('http://127.0.0.1:9/api/', $UNIT_OPTIONS, 'query', 'ord a/b~1,ä', 'A21AAtok'),
	"method=POST
url=http://127.0.0.1:9/api/v1/oauth2/token
header=Accept: application/json
header=Content-Type: application/x-www-form-urlencoded
header=Authorization: Basic " . encode_base64('ID:SEC', '') . "
body=grant_type=client_credentials
--
method=GET
url=http://127.0.0.1:9/api/v2/checkout/orders/ord%20a%2Fb~1%2C%C3%A4
header=Accept: application/json
header=Authorization: Bearer A21AAtok", 'the token request and the order query, as sent');

# ---------------------------------------------------------------- refunds

{
	my $refund = sub {
		my ($id, $status, $value, $currency) = @_;
		my $amount = defined $value ? qq(,"amount":{"currency_code":"$currency","value":"$value"}) : '';
		return qq({"id":"$id","status":"$status"$amount,"seller_payable_breakdown":{"gross_amount":{"currency_code":"USD","value":"99.99"}},)
		  . qq("links":[{"href":"https://api-m.paypal.com/v2/payments/captures/2GG","rel":"up","method":"GET"}]});
	};
	my $ri = sub {
		my ($id, $status, $body) = @_;
		return test_interpret($node, driver => 'paypal', options => $UNIT_OPTIONS, kind => 'refund',
			status => $status, body => $body, payment_id => $id);
	};
	is(test_request($node, driver => 'paypal', options => $UNIT_OPTIONS, base_url => 'http://127.0.0.1:9/api/',
			kind => 'refund', payment_id => 'ORD1', refund_id => '1JU0 8/9', token => 'A21AAtok'),
		"method=GET
url=http://127.0.0.1:9/api/v2/payments/refunds/1JU0%208%2F9
header=Accept: application/json
header=Authorization: Bearer A21AAtok", 'refund query: GET /v2/payments/refunds/{refund_id} with the bearer token');

	is($ri->('1JU', 200, $refund->('1JU', 'COMPLETED', '10.99', 'USD')),
		"status=succeeded\nchannel_status=COMPLETED\npaid_amount=1099\npaid_currency=USD",
		'refund COMPLETED: succeeded with its amount');
	is($ri->('1JU', 200, $refund->('1JU', 'PENDING', '10.99', 'USD')),
		"status=pending\nchannel_status=PENDING\npaid_amount=1099\npaid_currency=USD", 'refund PENDING: pending');
	is($ri->('1JU', 200, $refund->('1JU', 'FAILED', '10.99', 'USD')),
		"status=failed\nchannel_status=FAILED\npaid_amount=1099\npaid_currency=USD", 'refund FAILED: failed');
	is($ri->('1JU', 200, $refund->('1JU', 'CANCELLED')), "status=cancelled\nchannel_status=CANCELLED",
		'refund CANCELLED: cancelled');
	is($ri->('1JU', 200, $refund->('1JU', 'COMPLETED', '1000', 'JPY')),
		"status=succeeded\nchannel_status=COMPLETED\npaid_amount=1000\npaid_currency=JPY",
		'another amount and currency are carried as they are, for the amount check');
	like($ri->('1JU', 200, $refund->('1JU', 'COMPLETED')),
		qr/^error=the refund has no amount.value or amount.currency_code$/, 'COMPLETED without an amount: an error');
	like($ri->('1JU', 200, $refund->('1JU', 'REVERSED', '1.00', 'USD')),
		qr/^error=unknown PayPal refund status "REVERSED"$/, 'an unknown refund status: an error');
	like($ri->('1JU', 200, $refund->('2XY', 'COMPLETED', '1.00', 'USD')),
		qr/^error=PayPal's answer is about refund "2XY", not the refund asked about$/,
		'an answer about another refund: an error');
	like($ri->('1JU', 200, $refund->('1JU', 'COMPLETED', '1.00', 'usd')),
		qr/^error=the refund's currency_code "usd" is not an ISO 4217 code$/, 'a lower-case currency: an error');
	like($ri->('1JU', 404, '{"name":"RESOURCE_NOT_FOUND","details":[{"issue":"INVALID_RESOURCE_ID"}],"message":"x"}'),
		qr/^error=HTTP 404 from PayPal \(RESOURCE_NOT_FOUND\): no such refund$/,
		'404 RESOURCE_NOT_FOUND: an error (an unknown refund never ends one)');
	like($ri->('1JU', 401, '{"name":"AUTHENTICATION_FAILURE"}'),
		qr/^error=HTTP 401 from PayPal \(AUTHENTICATION_FAILURE\).*\ncredentials_rejected=true$/,
		'401: an error, the token dropped');
	like($ri->('1JU', 200, '<html/>'), qr/^error=.*not a JSON object/, 'not JSON: an error');

	# against the mock, with a token it issued
	my $tok = test_fields(test_request($node, driver => 'paypal',
		options => "jsonb_build_object('client_id', '$CLIENT_ID', 'client_secret', $SECRET_SQL)",
		base_url => "http://127.0.0.1:$good->{port}", kind => 'token'));
	my ($tstatus, $theaders, $tbody) = send_request($tok);
	my $token = test_fields(test_interpret($node, driver => 'paypal', options => $UNIT_OPTIONS,
		kind => 'token', status => $tstatus, body => $tbody))->{token};
	ok(defined $token && $token ne '', '(a token from mock_paypal)');
	my %want = (
		'RF1~C' => "status=succeeded\nchannel_status=COMPLETED\npaid_amount=1000\npaid_currency=USD",
		'RF2~P' => "status=pending\nchannel_status=PENDING\npaid_amount=1000\npaid_currency=USD",
		'RF3~F' => "status=failed\nchannel_status=FAILED\npaid_amount=1000\npaid_currency=USD",
		'RF4~X' => "status=cancelled\nchannel_status=CANCELLED\npaid_amount=1000\npaid_currency=USD",
		'RF5~C~12.34EUR' => "status=succeeded\nchannel_status=COMPLETED\npaid_amount=1234\npaid_currency=EUR",
	);
	my %bad = (
		'RF6~U' => qr/^error=unknown PayPal refund status "WEIRD"$/,
		'RF7~W' => qr/^error=PayPal's answer is about refund "1JU08902781691411"/,
		'RF8~N' => qr/^error=HTTP 404 from PayPal \(RESOURCE_NOT_FOUND\): no such refund$/,
		'RF9~E500' => qr/^error=HTTP 500 from the channel$/,
	);
	for my $id (sort(keys %want), sort(keys %bad))
	{
		my ($status, $headers, $body) = send_request(test_fields(test_request($node, driver => 'paypal',
			options => $UNIT_OPTIONS, base_url => "http://127.0.0.1:$good->{port}",
			kind => 'refund', payment_id => 'ORD1', refund_id => $id, token => $token)));
		my $got = $ri->($id, $status, $body);
		if ($want{$id})
		{
			is($got, $want{$id}, "mock_paypal: refund $id as the driver built and read it");
		}
		else
		{
			like($got, $bad{$id}, "mock_paypal: refund $id is an error");
		}
	}
	my ($status, $headers, $body) = send_request(test_fields(test_request($node, driver => 'paypal',
		options => $UNIT_OPTIONS, base_url => "http://127.0.0.1:$good->{port}",
		kind => 'refund', payment_id => 'ORD1', refund_id => 'RF1~C', token => 'A21AAnotissued')));
	like($ri->('RF1~C', $status, $body), qr/^error=HTTP 401 from PayPal \(AUTHENTICATION_FAILURE\).*\ncredentials_rejected=true$/,
		'mock_paypal: a token it did not issue is refused for refunds too');

	# webhooks: never believed; a refund resource names the refund to check
	my $hook = sub {
		my ($event, $type, $resource) = @_;
		return qq({"id":"WH-1","event_version":"1.0","event_type":"$event","resource_type":"$type","resource":$resource});
	};
	my ($text, $err) = test_notification($node, driver => 'paypal', options => $UNIT_OPTIONS,
		body => $hook->('PAYMENT.CAPTURE.REFUNDED', 'refund', $refund->('1JU', 'COMPLETED', '1.00', 'USD')));
	is($text, "verified=false\nrefund_id=1JU\nreply_status=200",
		'PAYMENT.CAPTURE.REFUNDED: unverified (checking), the refund resource.id names') or diag($err);
	($text, $err) = test_notification($node, driver => 'paypal', options => $UNIT_OPTIONS,
		body => $hook->('PAYMENT.CAPTURE.REVERSED', 'refund',
			'{"id":"1JV","status":"COMPLETED","supplementary_data":{"related_ids":{"order_id":"ORD7"}}}'));
	is($text, "verified=false\npayment_id=ORD7\nrefund_id=1JV\nreply_status=200",
		'... with the order too when its related ids name it');
	($text, $err) = test_notification($node, driver => 'paypal', options => $UNIT_OPTIONS,
		body => $hook->('PAYMENT.CAPTURE.COMPLETED', 'capture',
			'{"id":"3C6","status":"COMPLETED","supplementary_data":{"related_ids":{"order_id":"ORD7"}}}'));
	is($text, "verified=false\npayment_id=ORD7\nreply_status=200", '(a capture event names no refund)');
}

stop_mock($_) for ($good, $renew, $expire, $revoke, $badcred);
$node->stop;
done_testing();
