# 011_stripe.pl: the stripe driver end to end against t/mock/mock_stripe,
# which checks the Bearer secret key the way Stripe does: option checks at
# create_channel (a bad key is an ERROR naming the option, never showing
# the key); PaymentIntent statuses (pending then succeeded with the tracked
# amount, requires_capture, canceled, not paid until the schedule runs out);
# amount and currency mismatches; ISK converted to ISO minor units; 429
# with Stripe-Should-Retry and Retry-After, 500, 404 (resource_missing),
# unknown statuses and bodies that are not JSON as errors, never statuses;
# a refused key (401) as an error; Stripe-Version and Stripe-Account sent;
# the secret key nowhere in the server log or in paysync's tables but
# paysync.channels.  Plus unit-level checks of the driver's reading of
# Stripe's answers through paysync_test_interpret() (src/driver_test.c).
#
# Stripe signs none of these answers, so there is no signature to test.
#
# Refunds (0.4): the refund query GET /v1/refunds/{id} through the test
# interface (every status, amounts, 404, another refund), the same built by
# the driver, answered by mock_stripe and read back, and refund events
# (refund.updated, refund.failed, charge.refund.updated) verified with
# webhook_secret or refused with SQLSTATE 28000.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Digest::SHA qw(hmac_sha256_hex);

# The keys are spelled out only here and on the mock's command line; SQL
# builds them with upper() so that no logged statement carries them.
sub random_hex
{
	return join '', map { sprintf '%02x', int(rand(256)) } 1 .. 12;
}
my $hex = random_hex();
my $SECRET = 'sk_test_' . uc($hex);
my $SECRET_SQL = "'sk_test_' || upper('$hex')";
my $wrong_hex = random_hex();
my $WRONG = 'sk_test_' . uc($wrong_hex) . 'QZQZ';
my $WRONG_SQL = "'sk_test_' || upper('$wrong_hex') || upper('qzqz')";

# ---------------------------------------------------------------- the mock

# The mock's log lines for a payment id, each a hash (us, method, path, id,
# v, acct, auth).
sub stripe_log
{
	my ($mock, $id) = @_;
	return () unless -e $mock->{log};
	open my $fh, '<', $mock->{log} or die $!;
	my @lines;
	while (<$fh>)
	{
		chomp;
		my ($us, $method, $path, $logged_id, @kv) = split / /;
		next unless $logged_id eq $id;
		my %line = (us => $us, method => $method, path => $path, id => $logged_id);
		%line = (%line, map { split /=/, $_, 2 } @kv);
		push @lines, \%line;
	}
	close $fh;
	return @lines;
}

# mock_stripe, checking the secret key.
my $mock = start_mock_program('mock_stripe', '--secret-key', $SECRET);

# The mock stops with the test, even one that dies half way.
END
{
	eval { stop_mock($mock) } if $mock && $mock->{handle};
}
my $base = "http://127.0.0.1:$mock->{port}";

# Every message level and every statement is logged, so that a key logged
# anywhere shows.
my $node = new_paysync_node('stripe',
	conf => "log_min_messages = debug5\nlog_statement = all\n");

# ---------------------------------------------------------------- helpers

# create_channel with options (SQL jsonb); returns (ok, stderr with SQLSTATE).
sub try_channel
{
	my ($name, $options) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT paysync.create_channel('$name', 'stripe', '$base', $options)");
	return ($ret == 0, $err);
}

# ---------------------------------------------------------------- options

{
	my @refused = (
		[ 'no secret_key', q{'{}'}, qr/22023: channel "s1" needs option "secret_key"/, undef ],
		[ 'a publishable key', q{jsonb_build_object('secret_key', 'pk_test_' || upper('visiblekey1'))},
			qr/22023: invalid value for option "secret_key" of channel "s1".*DETAIL:  The key is a publishable key/s, 'VISIBLEKEY1' ],
		[ 'a key with white space', q{jsonb_build_object('secret_key', 'sk_test_' || upper('hiddenkey2') || chr(10))},
			qr/22023: invalid value for option "secret_key" of channel "s1".*DETAIL:  The key contains white space/s, 'HIDDENKEY2' ],
		[ 'a key of no known kind', q{jsonb_build_object('secret_key', 'xk_test_' || upper('hiddenkey3'))},
			qr/22023: invalid value for option "secret_key" of channel "s1".*DETAIL:  The key must start with sk_ or rk_/s, 'HIDDENKEY3' ],
		[ 'a key with odd characters', q{jsonb_build_object('secret_key', 'sk_test_' || upper('hiddenkey4') || '!')},
			qr/22023: invalid value for option "secret_key" of channel "s1".*DETAIL:  The key contains characters/s, 'HIDDENKEY4' ],
		[ 'a bare prefix', q{jsonb_build_object('secret_key', 'sk_')},
			qr/22023: invalid value for option "secret_key" of channel "s1".*DETAIL:  The key is incomplete/s, undef ],
		[ 'a key that is not a string', q{'{"secret_key": 42}'},
			qr/22023: invalid value for option "secret_key" of channel "s1".*DETAIL:  The value must be a JSON string/s, undef ],
		[ 'a bad api_version', qq{jsonb_build_object('secret_key', $SECRET_SQL, 'api_version', 'latest')},
			qr/22023: invalid value for option "api_version" of channel "s1"/, $SECRET ],
		[ 'a bad stripe_account', qq{jsonb_build_object('secret_key', $SECRET_SQL, 'stripe_account', 'bob')},
			qr/22023: invalid value for option "stripe_account" of channel "s1"/, $SECRET ],
		[ 'close_on_expiry', qq{jsonb_build_object('secret_key', $SECRET_SQL, 'close_on_expiry', true)},
			qr/22023: invalid value for option "close_on_expiry" of channel "s1".*DETAIL:  Driver stripe cannot close/s, $SECRET ],
		[ 'an unknown option', qq{jsonb_build_object('secret_key', $SECRET_SQL, 'publishable_key', 'pk_x')},
			qr/22023: unknown option "publishable_key" for channel "s1"/, $SECRET ],
	);
	for my $case (@refused)
	{
		my ($what, $options, $expected, $hidden) = @$case;
		my ($ok, $err) = try_channel('s1', $options);
		ok(!$ok, "create_channel refuses $what");
		like($err, $expected, "... with an error naming the option");
		unlike($err, qr/\Q$hidden\E/, '... never showing the key') if defined $hidden;
	}
	is(sql($node, "SELECT count(*) FROM paysync.channels WHERE name = 's1'"), '0',
		'no refused channel was created');

	my ($ok, $err) = try_channel('s_restricted',
		q{jsonb_build_object('secret_key', 'rk_test_' || upper('restricted5'))});
	ok($ok, 'a restricted key (rk_) is taken') or diag($err);
	sql($node, "DELETE FROM paysync.channels WHERE name = 's_restricted'");
}

# ---------------------------------------------------------------- answers, unit level

create_test_functions($node);

# What the driver makes of an answer (HTTP status, body, header lines), for
# a channel with a made-up key: paysync_test_interpret's "name=value" lines.
sub interpret
{
	my ($status, $body, $headers) = @_;
	return test_interpret($node, driver => 'stripe',
		options => q{'{"secret_key": "sk_test_UNIT"}'},
		status => $status, headers => $headers, body => $body);
}

# A PaymentIntent body; extra is JSON text of more members.
sub pi_body
{
	my ($status, $extra) = @_;
	$extra = defined $extra ? ", $extra" : '';
	return qq({"id": "pi_1", "object": "payment_intent", "amount": 1999,
		"last_payment_error": {"type": "card_error", "code": "card_declined", "message": "m", "status": "x"},
		"charges": {"data": [{"status": "failed", "amount_received": 5}]},
		"status": "$status"$extra});
}

{
	my $paid = q{"amount_received": 1999, "currency": "usd"};
	is(interpret(200, pi_body('succeeded', $paid)),
		"status=succeeded\nchannel_status=succeeded\npaid_amount=1999\npaid_currency=USD",
		'succeeded: the paid amount and upper-cased currency');
	is(interpret(200, pi_body('canceled')), "status=cancelled\nchannel_status=canceled",
		'canceled is cancelled');
	for my $s (qw(requires_payment_method requires_confirmation requires_action processing
		requires_capture requires_source requires_source_action))
	{
		is(interpret(200, pi_body($s)), "status=pending\nchannel_status=$s", "$s is pending");
	}
	like(interpret(200, pi_body('unheard_of')), qr/^error=unknown PaymentIntent status "unheard_of"/,
		'an unknown status is an error');
	like(interpret(200, pi_body('succeeded')), qr/^error=the succeeded PaymentIntent has no amount_received/,
		'succeeded without amount_received is an error');
	like(interpret(200, pi_body('succeeded', q{"amount_received": 1999})),
		qr/^error=the succeeded PaymentIntent has no currency/, '... and without currency');
	like(interpret(200, pi_body('succeeded', q{"amount_received": "1999", "currency": "usd"})),
		qr/^error=.*not a whole number/, '... and with the amount as a string');
	like(interpret(200, pi_body('succeeded', q{"amount_received": -5, "currency": "usd"})),
		qr/^error=.*not a whole number/, '... and with a negative amount');
	like(interpret(200, pi_body('succeeded', q{"amount_received": 19.99, "currency": "usd"})),
		qr/^error=.*not a whole number/, '... and with a fraction');
	like(interpret(200, pi_body('succeeded', q{"amount_received": 1999, "currency": "dollars"})),
		qr/^error=.*not an ISO 4217 code/, '... and with a currency that is no code');
	is(interpret(200, pi_body('succeeded', q{"amount_received": 50000, "currency": "isk"})),
		"status=succeeded\nchannel_status=succeeded\npaid_amount=500\npaid_currency=ISK",
		'ISK: Stripe\'s hundredths become whole kronur');
	like(interpret(200, pi_body('succeeded', q{"amount_received": 50050, "currency": "isk"})),
		qr/^error=.*no ISO 4217 equivalent/, '... and fractional kronur are an error');
	is(interpret(200, pi_body('succeeded', q{"amount_received": 500, "currency": "mga"})),
		"status=succeeded\nchannel_status=succeeded\npaid_amount=50000\npaid_currency=MGA",
		'MGA: Stripe\'s whole ariary become hundredths');
	is(interpret(200, pi_body('succeeded', q{"amount_received": 500, "currency": "jpy"})),
		"status=succeeded\nchannel_status=succeeded\npaid_amount=500\npaid_currency=JPY",
		'JPY: zero-decimal, as in ISO');
	like(interpret(200, q({"object": "payment_intent", "status": "processing", "status": "succeeded"})),
		qr/^error=.*twice/, 'a field given twice is an error');
	like(interpret(200, q({"object": "charge", "status": "succeeded"})),
		qr/^error=Stripe's answer is not a PaymentIntent/, 'an answer that is no PaymentIntent is an error');
	like(interpret(200, q({"object": "payment_intent", "last_payment_error": {"status": "succeeded"}})),
		qr/^error=the PaymentIntent has no status/, 'a PaymentIntent without status is an error');
	like(interpret(200, q({"object": "payment_intent", "status": null})),
		qr/^error=the PaymentIntent has no status/, '... and with a null status');
	like(interpret(200, '<html>ok</html>'), qr/^error=.*not a JSON object/, 'HTML is an error');
	like(interpret(200, '["succeeded"]'), qr/^error=.*not a JSON object/, 'an array is an error');
	like(interpret(0, 'Timeout was reached'), qr/^error=Timeout was reached$/m,
		'a transport error is an error');
	# the test interface escapes values to keep each on its line (here a
	# request body, which is sent as it is); test_fields() undoes that
	my $escaped = test_request($node, driver => 'http_json',
		options => lit(q({"status_map": {"A": "succeeded"}, "method": "POST", "body": "two\nlines, a \\\\ and a \u0001"})) . '::jsonb',
		base_url => 'http://127.0.0.1/', payment_id => 'p1');
	like($escaped, qr/^body=two\\nlines, a \\\\ and a \\x01$/m,
		'paysync_test_request escapes line breaks, backslashes and control characters');
	is(test_fields($escaped)->{body}, "two\nlines, a \\ and a \x01", '... and test_fields() undoes it');
	# channel text kept in an error is made printable first
	is(interpret(0, "two\nlines, a \\ and a \x01"), 'error=two?lines, a \\\\ and a ?',
		'a transport error message is kept printable');

	my $r = interpret(401,
		q({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****************WXYZ"}}),
		"Request-Id: req_ABC123\r\n");
	like($r, qr/^error=Stripe refused the secret key: HTTP 401 invalid_request_error \[req_ABC123\]\ncredentials_rejected=true$/,
		'401: an error, credentials rejected, with the request id');
	unlike($r, qr/WXYZ|sk_/, '... and Stripe\'s message quoting the key is left out');
	$r = interpret(403,
		q({"error": {"type": "invalid_request_error", "message": "The provided key 'rk_test_***WXYZ' does not have the required permissions"}}));
	like($r, qr/^error=Stripe refused access.*HTTP 403/, '403: an error');
	unlike($r, qr/WXYZ|rk_/, '... without Stripe\'s message quoting the key');
	$r = interpret(404,
		q({"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "intent", "message": "No such payment_intent: 'pi_x'"}}),
		"Stripe-Should-Retry: false\r\nRequest-Id: req_N1\r\n");
	is($r, q{error=Stripe has no such PaymentIntent (wrong id, or key of another mode/account): HTTP 404 resource_missing, Stripe-Should-Retry false [req_N1]: No such payment_intent: 'pi_x'},
		'404 resource_missing: an error (never "not paid") saying what Stripe said');
	$r = interpret(429,
		q({"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests"}}),
		"Stripe-Should-Retry: true\r\nRetry-After: 7\r\n");
	like($r, qr/^error=Stripe rate limit: HTTP 429 rate_limit: Too many requests\nretry_after=7$/,
		'429: an error keeping Retry-After');
	like(interpret(500, q({"error": {"type": "api_error", "message": "Sorry"}})),
		qr/^error=Stripe server error: HTTP 500 api_error: Sorry$/m, '500: an error');
	like(interpret(502, '<html>bad gateway</html>'),
		qr/^error=Stripe server error: HTTP 502 \(not a Stripe error body\)/, '502 HTML: an error');
	$r = interpret(400,
		q({"error": {"type": "invalid_request_error", "message": "Key sk_live_abc is not allowed"}}));
	like($r, qr/^error=unexpected answer from Stripe: HTTP 400 invalid_request_error$/m,
		'400: an error');
	unlike($r, qr/sk_live/, '... leaving out a message that mentions a key');
	$r = interpret(400,
		'{"error": {"type": "invalid_request_error", "message": "' . ("\xc3\xa9" x 300) . '"}}');
	my ($msg) = $r =~ /\Aerror=(.*)\z/;
	my $copy = $msg;
	ok(defined $msg && length($msg) <= 199 && utf8::decode($copy),
		'a long message is clipped to fit last_error');
	$r = interpret(200, pi_body("\xc3\xa9" x 100));
	($msg) = $r =~ /\Aerror=unknown PaymentIntent status "(.*)"\z/;
	$copy = $msg;
	ok(defined $msg && length($msg) <= 64 && utf8::decode($copy),
		'a long unknown status is clipped on a whole character');

	# channel text kept in last_error: printable, whole characters only
	$r = interpret(400,
		q({"error": {"type": "invalid_request_error", "message": "bad\u0001\u001b[31mred\u007f\u0085\u202eend"}}));
	like($r, qr/: bad\?\?\[31mred\?\?\?end$/,
		'control, C1 and bidi characters of a message become "?"');
	$r = interpret(400,
		'{"error": {"type": "invalid_request_error", "message": "' . ('x' x 99) . "\xc3\xa9" . 'tail"}}');
	like($r, qr/: x{99}$/,
		'a two-byte character across the 100-byte limit of a message is left out whole');

	# amounts beyond int64 are errors, never another amount
	is(interpret(200, pi_body('succeeded', q{"amount_received": 9223372036854775807, "currency": "usd"})),
		"status=succeeded\nchannel_status=succeeded\npaid_amount=9223372036854775807\npaid_currency=USD",
		'the largest int64 amount is read as it is');
	like(interpret(200, pi_body('succeeded', q{"amount_received": 9223372036854775808, "currency": "usd"})),
		qr/^error=.*"9223372036854775808" is not a whole number within range/,
		'an amount_received beyond int64 is an error');
	like(interpret(200, pi_body('succeeded', q{"amount_received": 92233720368547759, "currency": "mga"})),
		qr/^error=.*no ISO 4217 equivalent/, 'an MGA amount that overflows in ISO minor units is an error');
}

# ---------------------------------------------------------------- end to end

sql($node, "SELECT paysync.create_channel('stripe', 'stripe', '$base',
	jsonb_build_object('secret_key', $SECRET_SQL, 'api_version', '2024-06-20'))");
sql($node, "SELECT paysync.create_channel('stripe_conn', 'stripe', '$base/v1/',
	jsonb_build_object('secret_key', $SECRET_SQL, 'stripe_account', 'acct_1TESTconn'))");
sql($node, "SELECT paysync.create_channel('stripe_wrong', 'stripe', '$base',
	jsonb_build_object('secret_key', $WRONG_SQL))");

# [payment_id, channel, amount, currency, schedule]
my @tracked = (
	[ 'pi_paid~M,A,P,S1000', 'stripe', 1000, 'USD', '{1s,1s,1s,1s,1s,1s}' ],
	[ 'pi_capture~K,S2500eur', 'stripe', 2500, 'EUR', '{0.3s,0.3s,0.3s}' ],
	[ 'pi_cancel~P,X', 'stripe', 1000, 'USD', '{0.3s,0.3s,0.3s}' ],
	[ 'pi_over~S1500', 'stripe', 1000, 'USD', '{0.3s}' ],
	[ 'pi_cur~S1000eur', 'stripe', 1000, 'USD', '{0.3s}' ],
	[ 'pi_noamount~S777', 'stripe', undef, undef, '{0.3s}' ],
	[ 'pi_isk~S50000isk', 'stripe', 500, 'ISK', '{0.3s}' ],
	[ 'pi_429~R,S', 'stripe', 1000, 'USD', '{0.3s,0.3s}' ],
	[ 'pi_ra~R3,S', 'stripe', 1000, 'USD', '{0.3s,0.3s}' ],
	[ 'pi_500~E,E,S', 'stripe', 1000, 'USD', '{0.3s,0.3s}' ],
	[ 'pi_missing', 'stripe', 1000, 'USD', '{0.2s}' ],
	[ 'pi_odd~U', 'stripe', 1000, 'USD', '{0.2s}' ],
	[ 'pi_html~J', 'stripe', 1000, 'USD', '{0.2s}' ],
	[ 'pi_expire~M', 'stripe', 1000, 'USD', '{0.2s,0.2s}' ],
	[ 'pi_acct~S', 'stripe_conn', 1000, 'USD', '{0.3s}' ],
	[ 'pi_wrong~S', 'stripe_wrong', 1000, 'USD', '{0.2s}' ],
	[ 'pi_refunded~P,G', 'stripe', 1000, 'USD', '{0.3s,0.3s,0.3s}' ],
	[ 'pi_disputed~Q', 'stripe', 1000, 'USD', '{0.3s}' ],
	[ 'pi_later~S,G,Q', 'stripe', 1000, 'USD', '{0.3s,0.3s,0.3s}' ],
);
sql($node, join ";\n", map {
	my ($id, $channel, $amount, $currency, $schedule) = @$_;
	"SELECT (paysync.track(" . lit($id) . ", '$channel', "
	  . ($amount // 'NULL') . ', ' . ($currency ? lit($currency) : 'NULL')
	  . ", '$schedule')).payment_id"
} @tracked);

# pending (with Stripe's words) then succeeded with the tracked amount
wait_true($node, 'pi_paid~M,A,P,S1000', q{status = 'pending' AND channel_status = 'requires_action'},
	'pi_paid: pending while Stripe says requires_action');
wait_true($node, 'pi_paid~M,A,P,S1000', q{status = 'succeeded'}, 'pi_paid: then succeeded');
is(payment_row($node, 'pi_paid~M,A,P,S1000', 'channel_status, step, errors, last_error IS NULL'),
	'succeeded|4|0|t', '... after three pending answers, with no error');
is(events_of($node, 'pi_paid~M,A,P,S1000'), 'pending>succeeded|succeeded|poll|stripe', '... one event');
my @paid_log = stripe_log($mock, 'pi_paid~M,A,P,S1000');
is(scalar @paid_log, 4, '... four requests');
is(scalar(grep { $_->{method} eq 'GET' && $_->{path} eq '/v1/payment_intents/pi_paid~M,A,P,S1000'
	&& $_->{auth} eq 'ok' && $_->{v} eq '2024-06-20' && $_->{acct} eq '-' } @paid_log),
	4, '... each a GET of the PaymentIntent with the Bearer key and Stripe-Version');

wait_true($node, 'pi_capture~K,S2500eur', q{status = 'succeeded' AND channel_status = 'succeeded'},
	'requires_capture is pending, then succeeded in EUR');
wait_true($node, 'pi_cancel~P,X', q{status = 'cancelled' AND channel_status = 'canceled'},
	'canceled becomes cancelled');
wait_true($node, 'pi_over~S1500', q{status = 'failed'}, 'a larger amount received: failed');
is(payment_row($node, 'pi_over~S1500', 'last_error'),
	'amount mismatch: expected 1000 USD, channel reports 1500 USD', '... saying why');
wait_true($node, 'pi_cur~S1000eur', q{status = 'failed'}, 'another currency: failed');
is(payment_row($node, 'pi_cur~S1000eur', 'last_error'),
	'amount mismatch: expected 1000 USD, channel reports 1000 EUR', '... saying why');
wait_true($node, 'pi_noamount~S777', q{status = 'succeeded'}, 'no tracked amount: succeeded');
wait_true($node, 'pi_isk~S50000isk', q{status = 'succeeded' AND last_error IS NULL},
	'ISK 500 tracked, Stripe reports 50000 hundredths: succeeded');

# refunded or disputed after success: Stripe leaves the PaymentIntent
# succeeded, and so does paysync (a final status never changes)
wait_true($node, 'pi_refunded~P,G', q{status = 'succeeded' AND errors = 0 AND last_error IS NULL},
	'a PaymentIntent whose charge was refunded after success: succeeded, amount checked');
wait_true($node, 'pi_disputed~Q', q{status = 'succeeded' AND errors = 0},
	'... and one whose charge is disputed: succeeded');
wait_true($node, 'pi_later~S,G,Q', q{status = 'succeeded'}, 'succeeded, refunded and disputed later');
sleep(1);
is(scalar(stripe_log($mock, 'pi_later~S,G,Q')), 1,
	'... asked once: a refund or dispute afterwards changes nothing in paysync');
is(events_of($node, 'pi_later~S,G,Q'), 'pending>succeeded|succeeded|poll|stripe', '... one event');

wait_true($node, 'pi_429~R,S', q{status = 'succeeded'}, '429 then succeeded');
like(payment_row($node, 'pi_429~R,S', 'last_error'), qr/^Stripe rate limit: HTTP 429 rate_limit/,
	'... the 429 was recorded as an error');
is(scalar(stripe_log($mock, 'pi_429~R,S')), 2, '... and retried once');

wait_true($node, 'pi_ra~R3,S', q{status = 'succeeded'}, '429 with Retry-After 3 then succeeded');
{
	my @l = stripe_log($mock, 'pi_ra~R3,S');
	my $gap = @l == 2 ? ($l[1]{us} - $l[0]{us}) / 1e6 : 0;
	ok($gap >= 2.8, "... retried after Stripe's Retry-After (${gap}s)");
}

wait_true($node, 'pi_500~E,E,S', q{status = 'succeeded'}, '500 twice then succeeded');
like(payment_row($node, 'pi_500~E,E,S', 'last_error'), qr/^Stripe server error: HTTP 500 api_error/,
	'... the 500 was recorded as an error');

wait_true($node, 'pi_missing', q{errors >= 2}, 'an id Stripe does not know (404) is an error, retried');
is(payment_row($node, 'pi_missing', 'status, step'), 'pending|0',
	'... never a status: pending, no step taken, not expired though its schedule is one check');
like(payment_row($node, 'pi_missing', 'last_error'),
	qr/^Stripe has no such PaymentIntent .*HTTP 404 resource_missing, Stripe-Should-Retry false \[req_\w+\]: No such payment_intent: 'pi_missing'$/,
	'... last_error says what Stripe said');

wait_true($node, 'pi_odd~U', q{errors >= 1}, 'an unknown PaymentIntent status is an error');
is(payment_row($node, 'pi_odd~U', 'status, step, last_error'),
	'pending|0|unknown PaymentIntent status "unheard_of"', '... never a status');
wait_true($node, 'pi_html~J', q{errors >= 1 AND last_error LIKE '%not a JSON object%'},
	'an answer that is not JSON is an error');

wait_true($node, 'pi_expire~M', q{status = 'expired'},
	'requires_payment_method until the schedule runs out: expired');

wait_true($node, 'pi_acct~S', q{status = 'succeeded'}, 'a connected account\'s PaymentIntent succeeded');
{
	my @l = stripe_log($mock, 'pi_acct~S');
	ok(@l >= 1 && $l[0]{acct} eq 'acct_1TESTconn' && $l[0]{v} eq '-'
		  && $l[0]{path} eq '/v1/payment_intents/pi_acct~S',
		'... asked with Stripe-Account, no Stripe-Version, base_url\'s /v1/ not doubled');
}

wait_true($node, 'pi_wrong~S', q{errors >= 1}, 'a key Stripe refuses (401) is an error');
is(payment_row($node, 'pi_wrong~S', 'status'), 'pending', '... never a status');
like(payment_row($node, 'pi_wrong~S', 'last_error'),
	qr/^Stripe refused the secret key: HTTP 401 invalid_request_error/, '... saying the key was refused');
unlike(payment_row($node, 'pi_wrong~S', 'last_error'), qr/QZQZ|sk_|\*\*\*/,
	'... without Stripe\'s message that quotes the (redacted) key');
ok((grep { $_->{auth} eq 'wrong' } stripe_log($mock, 'pi_wrong~S')) >= 1,
	'... the mock saw the wrong key');

# ---------------------------------------------------------------- refunds

# A Refund body; extra is JSON text of more members.
sub refund_body
{
	my ($id, $status, $extra) = @_;
	$extra = defined $extra ? ", $extra" : '';
	return qq({"id": "$id", "object": "refund", "charge": "ch_1", "payment_intent": "pi_1",
		"metadata": {"status": "succeeded"}, "status": "$status"$extra});
}

# What the driver makes of an answer to the refund query about refund_id.
sub interpret_refund
{
	my ($refund_id, $status, $body, $headers) = @_;
	return test_interpret($node, driver => 'stripe',
		options => q{'{"secret_key": "sk_test_UNIT"}'}, kind => 'refund',
		status => $status, headers => $headers, body => $body, payment_id => $refund_id);
}

{
	my $r = test_fields(test_request($node, driver => 'stripe',
		options => q{'{"secret_key": "sk_test_UNIT", "api_version": "2024-06-20"}'},
		base_url => 'http://127.0.0.1:1/v1/', payment_id => 'pi_1', refund_id => 're_1/x y',
		kind => 'refund'));
	is("$r->{method} $r->{url}", 'GET http://127.0.0.1:1/v1/refunds/re_1%2Fx%20y',
		'refund query: GET /v1/refunds/{refund_id}, the id URL-encoded, /v1 not doubled');
	is_deeply($r->{header},
		[ 'Accept: application/json', 'Authorization: Bearer sk_test_UNIT', 'Stripe-Version: 2024-06-20' ],
		'... authenticated as the payment query');
	ok(!defined $r->{body}, '... with no body');

	my $amount = q{"amount": 500, "currency": "usd"};
	is(interpret_refund('re_1', 200, refund_body('re_1', 'succeeded', $amount)),
		"status=succeeded\nchannel_status=succeeded\npaid_amount=500\npaid_currency=USD",
		'refund succeeded: succeeded, with the refunded amount');
	is(interpret_refund('re_1', 200, refund_body('re_1', 'failed', $amount)),
		"status=failed\nchannel_status=failed\npaid_amount=500\npaid_currency=USD",
		'refund failed: failed');
	is(interpret_refund('re_1', 200, refund_body('re_1', 'canceled')),
		"status=cancelled\nchannel_status=canceled", 'refund canceled: cancelled');
	is(interpret_refund('re_1', 200, refund_body('re_1', 'pending', $amount)),
		"status=pending\nchannel_status=pending\npaid_amount=500\npaid_currency=USD",
		'refund pending: pending');
	is(interpret_refund('re_1', 200, refund_body('re_1', 'requires_action')),
		"status=pending\nchannel_status=requires_action", 'refund requires_action: pending');
	is(interpret_refund('re_1', 200, refund_body('re_1', 'succeeded', q{"amount": 50000, "currency": "isk"})),
		"status=succeeded\nchannel_status=succeeded\npaid_amount=500\npaid_currency=ISK",
		'... ISK converted to ISO minor units as for payments');
	is(interpret_refund('re_1', 200, refund_body('re_1', 'succeeded', q{"amount": 1500, "currency": "eur"})),
		"status=succeeded\nchannel_status=succeeded\npaid_amount=1500\npaid_currency=EUR",
		'another amount and currency are carried as they are, for the amount check');
	like(interpret_refund('re_1', 200, refund_body('re_1', 'succeeded')),
		qr/^error=the succeeded refund has no amount$/, 'succeeded without an amount: an error');
	like(interpret_refund('re_1', 200, refund_body('re_1', 'succeeded', q{"amount": "500", "currency": "usd"})),
		qr/^error=the refund's amount "500" is not a whole number/, '... and with the amount as a string');
	like(interpret_refund('re_1', 200, refund_body('re_1', 'reversed')),
		qr/^error=unknown refund status "reversed"$/, 'an unknown refund status: an error');
	like(interpret_refund('re_1', 200, refund_body('re_2', 'succeeded', $amount)),
		qr/^error=Stripe's answer is about refund "re_2", not the refund asked about$/,
		'an answer about another refund: an error');
	like(interpret_refund('re_1', 200, q({"id": "re_1", "object": "refund"})),
		qr/^error=the refund has no status$/, 'a refund without status: an error');
	like(interpret_refund('re_1', 200, pi_body('succeeded', q{"amount_received": 1999, "currency": "usd"})),
		qr/^error=Stripe's answer is not a refund/, 'a PaymentIntent in answer to a refund query: an error');
	like(interpret_refund('re_1', 200, q({"id": "re_1", "object": "refund", "status": "pending", "status": "succeeded"})),
		qr/^error=.*twice/, 'a field given twice: an error');
	is(interpret_refund('re_nope', 404,
			q({"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "id", "message": "No such refund: 're_nope'"}}),
			"Request-Id: req_R1\r\n"),
		q{error=Stripe has no such refund (wrong id, or key of another mode/account): HTTP 404 resource_missing [req_R1]: No such refund: 're_nope'},
		'404: an error (an unknown refund never ends one)');
	like(interpret_refund('re_1', 401,
			q({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****WXYZ"}})),
		qr/^error=Stripe refused the secret key: HTTP 401 invalid_request_error\ncredentials_rejected=true$/,
		'401: an error without the key');

	# against the mock, which checks the key as Stripe does
	my %want = (
		're_m1~S750' => "status=succeeded\nchannel_status=succeeded\npaid_amount=750\npaid_currency=USD",
		're_m2~P' => "status=pending\nchannel_status=pending\npaid_amount=1000\npaid_currency=USD",
		're_m3~A' => "status=pending\nchannel_status=requires_action\npaid_amount=1000\npaid_currency=USD",
		're_m4~F' => "status=failed\nchannel_status=failed\npaid_amount=1000\npaid_currency=USD",
		're_m5~X' => "status=cancelled\nchannel_status=canceled\npaid_amount=1000\npaid_currency=USD",
		're_m6~S1000eur' => "status=succeeded\nchannel_status=succeeded\npaid_amount=1000\npaid_currency=EUR",
	);
	for my $id (sort keys %want)
	{
		my ($status, $headers, $body) = send_request(test_fields(test_request($node,
			driver => 'stripe', options => "jsonb_build_object('secret_key', $SECRET_SQL)",
			base_url => $base, payment_id => 'pi_1', refund_id => $id, kind => 'refund')));
		is(interpret_refund($id, $status, $body, $headers), $want{$id},
			"mock_stripe: refund $id as the driver built it and read it");
	}
	my %refused = (
		're_m7~U' => qr/^error=unknown refund status "unheard_of"$/,
		're_m8~W' => qr/^error=Stripe's answer is about refund "re_3MockAnotherRefund"/,
		're_m9' => qr/^error=Stripe has no such refund .*HTTP 404 resource_missing, Stripe-Should-Retry false \[req_\w+\]: No such refund: 're_m9'$/,
		're_m10~E' => qr/^error=Stripe server error: HTTP 500/,
	);
	for my $id (sort keys %refused)
	{
		my ($status, $headers, $body) = send_request(test_fields(test_request($node,
			driver => 'stripe', options => "jsonb_build_object('secret_key', $SECRET_SQL)",
			base_url => $base, payment_id => 'pi_1', refund_id => $id, kind => 'refund')));
		like(interpret_refund($id, $status, $body, $headers), $refused{$id},
			"mock_stripe: refund $id is an error");
	}
	my ($status, $headers, $body) = send_request(test_fields(test_request($node,
		driver => 'stripe', options => "jsonb_build_object('secret_key', $WRONG_SQL)",
		base_url => $base, payment_id => 'pi_1', refund_id => 're_m1~S', kind => 'refund')));
	# (its body, which quotes the key's end, is not passed through SQL)
	is($status, 401, 'mock_stripe: a wrong key is refused for refunds too');
	like($body, qr/Invalid API Key provided/, '... as Stripe refuses it');
}

# Refund events, verified with webhook_secret as payment events are.
{
	my $whsec = 'whsec_UNITrefund';
	my $opts = qq{'{"secret_key": "sk_test_UNIT", "webhook_secret": "$whsec"}'};
	my $event = sub {
		my ($type, $object) = @_;
		return qq({"id": "evt_r1", "object": "event", "type": "$type", "data": {"object": $object}});
	};
	my $signed = sub {
		my ($body, %o) = @_;
		my $t = $o{t} // time;
		my $sig = hmac_sha256_hex("$t.$body", $o{secret} // $whsec);
		return "Stripe-Signature: t=$t,v1=$sig";
	};
	my $amount = q{"amount": 500, "currency": "usd"};
	for my $case (
		[ 'refund.updated', 'succeeded', "status=succeeded\nchannel_status=succeeded\npaid_amount=500\npaid_currency=USD" ],
		[ 'refund.failed', 'failed', "status=failed\nchannel_status=failed\npaid_amount=500\npaid_currency=USD" ],
		[ 'charge.refund.updated', 'canceled', "status=cancelled\nchannel_status=canceled\npaid_amount=500\npaid_currency=USD" ],
		[ 'refund.updated', 'requires_action', "status=pending\nchannel_status=requires_action\npaid_amount=500\npaid_currency=USD" ])
	{
		my ($type, $word, $want) = @$case;
		my $body = $event->($type, refund_body('re_n1', $word, $amount));
		my ($text, $err) = test_notification($node, driver => 'stripe', options => $opts,
			headers => $signed->($body), body => $body);
		is($text, "verified=true\npayment_id=pi_1\nrefund_id=re_n1\n$want\nreply_status=200",
			"$type ($word), signed: verified, about refund re_n1 of pi_1") or diag($err);
	}
	my $body = $event->('refund.updated', refund_body('re_n1', 'succeeded', $amount));
	for my $forged (
		[ 'no Stripe-Signature', undef, qr/no Stripe-Signature header/ ],
		[ 'another secret', $signed->($body, secret => 'whsec_other'), qr/no v1 signature/ ],
		[ 'a stale signature', $signed->($body, t => time - 1000), qr/off the clock/ ])
	{
		my ($what, $headers, $expected) = @$forged;
		my ($text, $err) = test_notification($node, driver => 'stripe', options => $opts,
			headers => $headers, body => $body);
		ok(!defined $text, "a refund event with $what is refused");
		like($err, qr/28000: notification for channel "test" refused.*DETAIL:  .*$expected/s,
			'... with SQLSTATE 28000 saying why');
	}
	my $tampered = $body =~ s/re_n1/re_n2/r;
	my ($text, $err) = test_notification($node, driver => 'stripe', options => $opts,
		headers => $signed->($body), body => $tampered);
	like($err, qr/28000: .*no v1 signature/s, 'a tampered refund event (another refund id) is refused');
	my $odd = $event->('refund.updated', refund_body('re_n1', 'reversed', $amount));
	($text, $err) = test_notification($node, driver => 'stripe', options => $opts,
		headers => $signed->($odd), body => $odd);
	like($err, qr/28000: .*unknown refund status "reversed"/s, 'a signed refund event with an unknown status is refused');
	($text, $err) = test_notification($node, driver => 'stripe',
		options => q{'{"secret_key": "sk_test_UNIT"}'}, body => $body);
	is($text, "verified=false\nrefund_id=re_n1\nreply_status=200",
		'without webhook_secret: unverified, the refund to check at once');
	my $created = $event->('refund.created', refund_body('re_n1', 'succeeded', $amount));
	($text, $err) = test_notification($node, driver => 'stripe', options => $opts,
		headers => $signed->($created), body => $created);
	is($text, "verified=true\nreply_status=200", 'refund.created (not among the events read): about nothing');
}

# ---------------------------------------------------------------- secrets

is(sql($node, q{SELECT count(*) FROM paysync.payments
	WHERE last_error ~ '(sk|rk)_' OR channel_status ~ '(sk|rk)_'}), '0',
	'no key in payments');
is(sql($node, q{SELECT count(*) FROM paysync.events WHERE channel_status ~ '(sk|rk)_'}), '0',
	'no key in events');

$node->stop;
my $log = slurp_file($node->logfile);
unlike($log, qr/\Q$SECRET\E/i, 'the secret key is nowhere in the server log');
unlike($log, qr/\Q$WRONG\E/i, 'nor the refused one');
unlike($log, qr/QZQZ/, 'nor its end, which Stripe\'s 401 message shows');
unlike($log, qr/VISIBLEKEY1|HIDDENKEY[234]/, 'nor the keys refused at create_channel');

done_testing();
