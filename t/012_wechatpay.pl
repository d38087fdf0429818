# 012_wechatpay.pl: driver "wechatpay" (WeChat Pay API v3).
#
# Unit level, through the drivers' test interface (paysync_test_request and
# paysync_test_interpret, src/driver_test.c), which runs the driver as the
# worker does: the request signature (checked with openssl dgst -verify, an
# independent implementation), the request as built (URL, headers, body),
# and the verification of answers with canned headers (good, bad signature,
# wrong key, tampered body, stale or future timestamp, missing headers,
# another platform serial).  Then create_channel's checks of the
# options, and end to end through the worker against t/mock/mock_wechatpay,
# which verifies the merchant's request signatures and signs its answers
# with the platform key: every trade_state, ORDER_NOT_EXIST, the amount
# check, close on expiry (closed, paid meanwhile, close failing), and each
# answer that fails verification staying an error, never a status.
# Keys are made here with openssl; the private keys reach the server only
# through pg_read_file(), so no statement text holds them, and the server
# log is checked for them at the end.
#
# Refunds (0.4): GET /v3/refund/domestic/refunds/{out_refund_no} signed as
# the payment query, every refund status, amount.refund, RESOURCE_NOT_EXISTS,
# another refund, forged answers; the same against mock_wechatpay (which
# verifies the request and signs its answers); REFUND.* callbacks verified
# and decrypted, forged ones refused with SQLSTATE 28000.
use strict;
use warnings;

use FindBin;
use IPC::Run;
use lib $FindBin::Bin;
use MIME::Base64 qw(encode_base64);
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $MCHID = '1900009191';
my $MERCHANT_SERIAL = '3775B6A45ACD588826D15E583A95F5DD2B0A1B2C';
my $PLATFORM_SERIAL = '5157F09EFDC096DE15EBE81A47057A7232F1B8E1';
# A WeChat Pay public key ID (public-key mode, merchants since late 2024).
my $PUB_KEY_ID = 'PUB_KEY_ID_0114232134912410000000000000';

my $dir = PostgreSQL::Test::Utils::tempdir();

# ---------------------------------------------------------------- keys

for my $name (qw(merchant platform other short next))
{
	make_rsa_key($dir, $name, $name eq 'short' ? 1024 : 2048);
}
# the platform key as WeChat Pay hands it out: in a certificate
run_openssl([ 'req', '-x509', '-new', '-key', "$dir/platform.key",
	'-subj', '/CN=Tenpay.com Root CA mock', '-days', '2', '-out', "$dir/platform.crt" ]);

# next: the WeChat Pay public key of $PUB_KEY_ID, which replaces the
# platform certificate in the rotation below.

# SQL that reads a file on the server: keys never appear in statement text.
sub file_sql
{
	my ($name) = @_;
	return "pg_read_file('$dir/$name')";
}

# ---------------------------------------------------------------- mock

# The mock's log lines for a payment id: [us, method, path, id, status].
sub mock_lines
{
	my ($mock, $id) = @_;
	return () unless -e $mock->{log};
	open my $fh, '<', $mock->{log} or die $!;
	my @lines = grep { $_->[3] eq $id } map { chomp; [ split / / ] } <$fh>;
	close $fh;
	return @lines;
}

# mock_wechatpay verifies requests with the merchant's public key and signs
# its answers with the platform key.
my $mock = start_mock_program(
	'mock_wechatpay',
	'--mchid', $MCHID,
	'--merchant-serial', $MERCHANT_SERIAL,
	'--merchant-public-key', "$dir/merchant.pub",
	'--platform-private-key', "$dir/platform.key",
	'--platform-serial', $PLATFORM_SERIAL,
	'--amount', '100');
# Every statement and debug message is logged, so a key that leaked into
# either would show in the check at the end.
my $node = new_paysync_node('wechatpay',
	conf => "log_statement = 'all'\nlog_min_messages = debug1\n");

# Options of a channel (SQL jsonb): the merchant's and the platform's keys
# read from files; %o replaces or adds options (SQL values, undef: left out).
sub options_sql
{
	my (%o) = @_;
	my %v = (
		mchid => lit($MCHID),
		merchant_serial_no => lit($MERCHANT_SERIAL),
		merchant_private_key => file_sql('merchant.key'),
		platform_public_key => file_sql('platform.pub'),
		%o);
	return 'jsonb_build_object('
	  . join(', ', map { lit($_) . ", $v{$_}" } grep { defined $v{$_} } sort keys %v) . ')';
}

create_test_functions($node);

# The request the driver builds for payment id and kind (query or close) on
# a channel with base_url base: ("METHOD URL", {header name => value}, body).
sub built_request
{
	my ($base, $id, $kind) = @_;
	my $r = test_fields(test_request($node, driver => 'wechatpay', options => options_sql(),
		base_url => $base, payment_id => $id, kind => $kind));
	my %h = map { /^([^:]+): (.*)$/ ? ($1, $2) : () } @{ $r->{header} };
	return ("$r->{method} $r->{url}", \%h, $r->{body} // '');
}

# ---------------------------------------------------------------- unit: request signature

# Splits an Authorization value into its fields; undef if the form is wrong.
sub auth_fields
{
	my ($header) = @_;
	return undef
	  unless $header =~ /^WECHATPAY2-SHA256-RSA2048 ((?:\w+="[^"]*",?)+)$/;
	my %f = $1 =~ /(\w+)="([^"]*)"/g;
	return \%f;
}

{
	my $path = "/v3/pay/transactions/out-trade-no/T20261126001?mchid=$MCHID";
	my (undef, $h) = built_request('http://127.0.0.1:1', 'T20261126001', 'query');
	my $f = auth_fields($h->{Authorization} // '');
	ok($f, 'the Authorization header has the WECHATPAY2-SHA256-RSA2048 form');
	is_deeply(
		[
			$f->{mchid}, ($f->{nonce_str} // '') =~ /^[0-9A-F]{32}$/ ? 'a nonce' : $f->{nonce_str},
			($f->{timestamp} // '') =~ /^[0-9]{10}$/ ? 'a timestamp' : $f->{timestamp},
			$f->{serial_no}
		],
		[ $MCHID, 'a nonce', 'a timestamp', $MERCHANT_SERIAL ],
		'... with mchid, nonce_str, timestamp and serial_no');
	my $message = "GET\n$path\n$f->{timestamp}\n$f->{nonce_str}\n\n";
	ok(openssl_verifies("$dir/merchant.pub", $message, $f->{signature}),
		'a GET signature verifies with openssl dgst -verify and the merchant public key');
	ok(!openssl_verifies("$dir/merchant.pub", "POST" . substr($message, 3), $f->{signature}),
		'... and not for another message');
	ok(!openssl_verifies("$dir/other.pub", $message, $f->{signature}),
		'... nor with another public key');

	my $body = qq{{"mchid":"$MCHID"}};
	(undef, $h) = built_request('http://127.0.0.1:1', 'T1', 'close');
	$f = auth_fields($h->{Authorization} // '');
	ok( openssl_verifies(
			"$dir/merchant.pub",
			"POST\n/v3/pay/transactions/out-trade-no/T1/close\n$f->{timestamp}\n$f->{nonce_str}\n$body\n",
			$f->{signature}),
		'a POST signature (body included) verifies with openssl');
}

{
	my $before = time;
	my ($first, $h, $body) = built_request('http://127.0.0.1:1/proxy/', 'T 1/x~N', 'query');
	is($first,
		"GET http://127.0.0.1:1/proxy/v3/pay/transactions/out-trade-no/T%201%2Fx~N?mchid=$MCHID",
		'the query goes to /v3/pay/transactions/out-trade-no/{id}?mchid= (id URL-encoded)');
	is($h->{Accept}, 'application/json', '... with Accept: application/json');
	is($body, '', '... and no body');
	my $f = auth_fields($h->{Authorization} // '');
	ok($f && $f->{nonce_str} =~ /^[0-9A-F]{32}$/, '... a fresh 32-digit nonce');
	ok($f && abs($f->{timestamp} - $before) < 30, '... the current timestamp');
	ok( $f && openssl_verifies("$dir/merchant.pub",
			"GET\n/proxy/v3/pay/transactions/out-trade-no/T%201%2Fx~N?mchid=$MCHID\n"
			  . "$f->{timestamp}\n$f->{nonce_str}\n\n", $f->{signature}),
		'... signed over the path as sent (base_url path included), verified by openssl');
	my (undef, $h2) = built_request('http://127.0.0.1:1/proxy/', 'T 1/x~N', 'query');
	isnt(auth_fields($h2->{Authorization})->{nonce_str}, $f->{nonce_str},
		'each request has its own nonce');

	($first, $h, $body) = built_request('http://127.0.0.1:1', 'T2', 'close');
	is($first, 'POST http://127.0.0.1:1/v3/pay/transactions/out-trade-no/T2/close',
		'the close goes to POST .../out-trade-no/{id}/close');
	is($body, qq{{"mchid":"$MCHID"}}, '... with body {"mchid": ...}');
	is($h->{'Content-Type'}, 'application/json', '... as application/json');
	$f = auth_fields($h->{Authorization} // '');
	ok( $f && openssl_verifies("$dir/merchant.pub",
			"POST\n/v3/pay/transactions/out-trade-no/T2/close\n$f->{timestamp}\n$f->{nonce_str}\n$body\n",
			$f->{signature}),
		'... signed with the body, verified by openssl');
}

# ---------------------------------------------------------------- unit: answer verification

# Headers of an answer signed by key over (timestamp, nonce, signed_body).
sub answer_headers
{
	my (%o) = @_;
	my $ts = $o{timestamp} // int(time);
	my $nonce = $o{nonce} // 'c5ac7061fccab6bf3e254dcf98995b8c';
	my $sig = $o{signature}
	  // openssl_sign("$dir/" . ($o{key} // 'platform.key'), "$ts\n$nonce\n$o{signed_body}\n");
	my %h = (
		'Wechatpay-Timestamp' => $ts,
		'Wechatpay-Nonce' => $nonce,
		'Wechatpay-Signature' => $sig,
		'Wechatpay-Serial' => $o{serial} // $PLATFORM_SERIAL,
		'Wechatpay-Signature-Type' => $o{type} // 'WECHATPAY2-SHA256-RSA2048');
	delete $h{$_} for @{ $o{drop} || [] };
	return join("\n", map { "$_: $h{$_}" } sort keys %h);
}

# What the driver makes of an answer with these headers and body, for a
# channel whose platform key is the file pub (default platform.pub) and
# platform_serial serial (default none): the error, or the status when the
# answer verifies.  kind and status: the request's kind and the answer's
# HTTP status (query and 200 by default).
sub verify_answer
{
	my ($headers, $body, %o) = @_;
	my $r = test_fields(test_interpret($node, driver => 'wechatpay',
		options => options_sql(
			platform_public_key => $o{keys} // file_sql($o{pub} // 'platform.pub'),
			platform_serial => defined $o{serial} ? lit($o{serial}) : undef),
		kind => $o{kind} // 'query', status => $o{status} // 200,
		headers => $headers, body => $body));
	return $r->{error} // $r->{status};
}

{
	my $body = qq{{"mchid":"$MCHID","trade_state":"SUCCESS","trade_state_desc":"支付成功","amount":{"total":100,"currency":"CNY"}}};
	my $now = int(time);
	my $good = answer_headers(signed_body => $body, timestamp => $now);

	is(verify_answer($good, $body), 'succeeded', 'a signed answer verifies');
	is(verify_answer($good, $body, pub => 'platform.crt'), 'succeeded',
		'... also with the platform certificate as platform_public_key');
	is(verify_answer($good, $body, serial => $PLATFORM_SERIAL), 'succeeded',
		'... and with platform_serial set to its Wechatpay-Serial');
	like(verify_answer($good, $body, serial => 'PUB_KEY_ID_0000000001'),
		qr/not platform_serial/, 'another Wechatpay-Serial than platform_serial is refused');
	like(verify_answer($good, $body, pub => 'other.pub'),
		qr/does not verify with platform_public_key/, 'a signature by another key is refused (wrong key)');
	like(
		verify_answer(
			answer_headers(signed_body => $body, key => 'other.key', timestamp => $now), $body),
		qr/does not verify/, 'an answer signed with the wrong private key is refused');
	(my $tampered = $body) =~ s/"total":100/"total":1/;
	like(verify_answer($good, $tampered), qr/does not verify/, 'a tampered body is refused');
	like(verify_answer($good, "$body "), qr/does not verify/, '... even by one trailing space');
	like(
		verify_answer(
			answer_headers(signed_body => $body, signature => 'WECHATPAY/SIGNTEST/' . ('A' x 40)),
			$body),
		qr/does not verify.*signature test/, 'a WeChat Pay signature test probe is refused');
	like(
		verify_answer(
			answer_headers(signed_body => $body, signature => encode_base64('x' x 256, '')), $body),
		qr/does not verify/, 'a bad signature is refused');
	like(
		verify_answer(
			answer_headers(signed_body => $body, timestamp => $now - 600), $body),
		qr/Timestamp is -60\d s off/, 'a correctly signed answer ten minutes old is refused (stale)');
	like(
		verify_answer(
			answer_headers(signed_body => $body, timestamp => $now + 400), $body),
		qr/Timestamp is (?:400|39\d) s off/, '... as is one from the future');
	is( verify_answer(
			answer_headers(signed_body => $body, timestamp => $now - 290), $body),
		'succeeded', '... but 290 s is within the five minutes');
	for my $h (qw(Wechatpay-Timestamp Wechatpay-Nonce Wechatpay-Signature))
	{
		like(verify_answer(answer_headers(signed_body => $body, drop => [$h]), $body),
			qr/not signed \(no $h header\)/, "an answer without $h is refused");
	}
	like(
		verify_answer(answer_headers(signed_body => $body, drop => ['Wechatpay-Serial']),
			$body, serial => $PLATFORM_SERIAL),
		qr/no Wechatpay-Serial/, 'no Wechatpay-Serial with platform_serial set is refused');
	like(
		verify_answer(answer_headers(signed_body => $body, type => 'WECHATPAY2-SM2-WITH-SM3'),
			$body),
		qr/signed with WECHATPAY2-SM2-WITH-SM3/, 'another signature type is refused');
	is( verify_answer(answer_headers(signed_body => '', timestamp => $now), '',
			kind => 'close', status => 204),
		'closed', 'an empty body (204) verifies over "timestamp\\nnonce\\n\\n"');

	# platform_public_key an object of serial to key: each answer verified
	# with the key its Wechatpay-Serial names (a rotation, public-key mode)
	my $keys = "jsonb_build_object('$PLATFORM_SERIAL', " . file_sql('platform.crt')
	  . ", '$PUB_KEY_ID', " . file_sql('next.pub') . ')';
	my $by_next = answer_headers(signed_body => $body, timestamp => $now, key => 'next.key',
		serial => $PUB_KEY_ID);
	is(verify_answer($good, $body, keys => $keys), 'succeeded',
		'keys by serial: an answer by the platform certificate verifies with the key of its serial');
	is(verify_answer($by_next, $body, keys => $keys), 'succeeded',
		'... one by the WeChat Pay public key (PUB_KEY_ID_...) with that key');
	is(verify_answer($by_next, $body, keys => "jsonb_build_object('$PUB_KEY_ID', "
			  . file_sql('next.pub') . ')'), 'succeeded',
		'... also with the public key alone (public-key mode)');
	is(verify_answer(answer_headers(signed_body => $body, timestamp => $now, key => 'next.key',
				serial => lc $PUB_KEY_ID), $body, keys => $keys), 'succeeded',
		'... the serial compared without regard to case');
	like(
		verify_answer(
			answer_headers(signed_body => $body, timestamp => $now, serial => $PUB_KEY_ID),
			$body, keys => $keys),
		qr/does not verify/, 'an answer by one key naming the serial of another does not verify');
	like(
		verify_answer(
			answer_headers(signed_body => $body, timestamp => $now, serial => 'PUB_KEY_ID_0999'),
			$body, keys => $keys),
		qr/signed by platform key PUB_KEY_ID_0999, which platform_public_key does not name/,
		'a serial not configured is an error naming it');
	like(
		verify_answer(answer_headers(signed_body => $body, drop => ['Wechatpay-Serial']),
			$body, keys => $keys),
		qr/no Wechatpay-Serial/, 'no Wechatpay-Serial with keys by serial is refused');
	like(verify_answer(answer_headers(signed_body => $body, drop => ['Wechatpay-Signature']),
			$body, keys => $keys),
		qr/not signed \(no Wechatpay-Signature header\)/, 'an unsigned answer is refused as unsigned');
}

# Error answers WeChat Pay may leave unsigned, and close answers.
{
	my $now = int(time);
	my $notexist = '{"code":"ORDER_NOT_EXIST","message":"订单不存在"}';
	my $signed = sub { answer_headers(signed_body => $_[0], timestamp => $now) };
	my $r = sub {
		my ($kind, $status, $headers, $body) = @_;
		return test_interpret($node, driver => 'wechatpay', options => options_sql(),
			kind => $kind, status => $status, headers => $headers, body => $body);
	};
	is($r->('query', 404, $signed->($notexist), $notexist),
		"status=pending\nchannel_status=ORDER_NOT_EXIST", 'query: a signed ORDER_NOT_EXIST is pending');
	is($r->('query', 404, undef, $notexist), "status=pending\nchannel_status=ORDER_NOT_EXIST",
		'query: an unsigned ORDER_NOT_EXIST is pending too (nothing is paid)');
	like($r->('query', 404, undef, '{"code":"NOT_FOUND","message":"x"}'),
		qr/^error=.*not signed/, 'query: another unsigned 404 is an error');
	like($r->('query', 500, undef, '{"code":"SYSTEM_ERROR","message":"x"}'),
		qr/^error=HTTP 500/,
		'query: an unsigned 500 SYSTEM_ERROR is an error (retried)');

	is($r->('close', 404, $signed->($notexist), $notexist),
		"status=expired\nchannel_status=ORDER_NOT_EXIST",
		'close: a signed ORDER_NOT_EXIST is expired (no such trade, nothing to close)');
	is($r->('close', 404, undef, $notexist), "status=pending\nretry_after=60",
		'close: an unsigned ORDER_NOT_EXIST is pending, a signed query a minute later settles it');
	my $paid = '{"code":"ORDERPAID","message":"订单已支付"}';
	is($r->('close', 400, $signed->($paid), $paid), "status=succeeded\nchannel_status=ORDERPAID",
		'close: a signed ORDERPAID is succeeded');
	is($r->('close', 400, undef, $paid), "status=pending\nretry_after=60",
		'close: an unsigned ORDERPAID is pending, never final');
	is($r->('close', 204, answer_headers(signed_body => '', timestamp => $now, key => 'other.key'), ''),
		"status=pending\nretry_after=60", 'close: a 204 that does not verify is pending, never final');
	my $paying = '{"code":"USERPAYING","message":"用户支付中，需要输入密码"}';
	is($r->('close', 202, $signed->($paying), $paying),
		"status=pending\nchannel_status=USERPAYING\nretry_after=5",
		'close: 202 USERPAYING (the buyer is paying) is pending, queried again in 5 s');
	is($r->('close', 202, undef, $paying), "status=pending\nretry_after=5",
		'close: ... signed or not (nothing final comes of it; an unsigned word is not kept)');
	like($r->('close', 202, undef, '{}'), qr/^error=unexpected HTTP 202 .*204 expected/,
		'close: another 202 is an error');
	like($r->('close', 500, undef, '{"code":"SYSTEM_ERROR","message":"x"}'),
		qr/^error=HTTP 500/,
		'close: 500 SYSTEM_ERROR is an error (the close is retried)');
}

# ---------------------------------------------------------------- create_channel

my $base = "http://127.0.0.1:$mock->{port}";

sub create_channel
{
	my ($name, %o) = @_;
	return $node->psql('postgres',
		"SELECT paysync.create_channel('$name', 'wechatpay', '$base', " . options_sql(%o) . ')');
}

{
	my $merchant_key = slurp_file("$dir/merchant.key");
	my ($key_line) = grep { length($_) > 40 && !/-----/ } split /\n/, $merchant_key;
	my @bad = (
		[ 'a key that does not parse', merchant_private_key => lit('-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----'), qr/invalid value for option "merchant_private_key"/ ],
		[ 'a public key as the private key', merchant_private_key => file_sql('merchant.pub'), qr/invalid value for option "merchant_private_key".*is a public key or certificate, not a private key/s ],
		[ 'a certificate as the private key', merchant_private_key => file_sql('platform.crt'), qr/invalid value for option "merchant_private_key".*is a public key or certificate, not a private key/s ],
		[ 'a 1024-bit key', merchant_private_key => file_sql('short.key'), qr/invalid value for option "merchant_private_key".*1024 bits/s ],
		[ 'a platform key that does not parse', platform_public_key => lit('garbage'), qr/invalid value for option "platform_public_key"/ ],
		[ 'a private key as the platform key', platform_public_key => file_sql('platform.key'), qr/invalid value for option "platform_public_key"/ ],
		[ 'no merchant_private_key', merchant_private_key => undef, qr/needs option "merchant_private_key"/ ],
		[ 'no platform_public_key', platform_public_key => undef, qr/needs option "platform_public_key"/ ],
		[ 'no mchid', mchid => undef, qr/needs option "mchid"/ ],
		[ 'a mchid with a quote', mchid => lit('19"00'), qr/invalid value for option "mchid"/ ],
		[ 'no merchant_serial_no', merchant_serial_no => undef, qr/needs option "merchant_serial_no"/ ],
		[ 'a bad platform_serial', platform_serial => lit('a b'), qr/invalid value for option "platform_serial"/ ],
		[ 'an unknown option', appid => lit('wx1'), qr/unknown option "appid"/ ],
		[ 'a bad serial in platform_public_key', platform_public_key => "jsonb_build_object('a b', " . file_sql('platform.pub') . ')', qr/invalid serial "a b" in option "platform_public_key"/ ],
		[ 'a key of a serial that does not parse', platform_public_key => "jsonb_build_object('$PUB_KEY_ID', 'garbage')", qr/invalid value for option "platform_public_key".*The key of "\Q$PUB_KEY_ID\E" does not load/s ],
		[ 'a key of a serial that is not a string', platform_public_key => "jsonb_build_object('$PUB_KEY_ID', 1)", qr/invalid value for option "platform_public_key".*must be a JSON string/s ],
		[ 'an empty object of keys', platform_public_key => q{'{}'::jsonb}, qr/invalid value for option "platform_public_key".*names no key/s ],
		[ 'an array of keys', platform_public_key => "jsonb_build_array(" . file_sql('platform.pub') . ')', qr/invalid value for option "platform_public_key".*object of serial to key/s ],
		[ 'platform_serial with keys by serial', platform_public_key => "jsonb_build_object('$PUB_KEY_ID', " . file_sql('next.pub') . ')', qr/option "platform_serial" .*goes with one platform_public_key only/s, platform_serial => lit($PUB_KEY_ID) ],
	);
	for my $case (@bad)
	{
		my ($what, $key, $value, $re, @more) = @$case;
		my ($ret, $out, $err) = create_channel('wx_bad', $key => $value, @more);
		isnt($ret, 0, "create_channel refuses $what");
		like($err, $re, "... the ERROR names the option ($what)");
		like($err, qr/channel "wx_bad"/, "... and the channel ($what)");
		unlike($err, qr/\Q$key_line\E|not a key|garbage/, "... and shows no key material ($what)");
	}
	my ($ret, $out, $err) = $node->psql('postgres',
		"SELECT paysync.create_channel('wx_bad', 'wechatpay', '$base?x=1', " . options_sql() . ')');
	like($err, qr/no query or fragment/, 'a base_url with a query is refused (it would not be signed)');
	($ret, $out, $err) = $node->psql('postgres',
		"SELECT paysync.create_channel('wx_bad', 'wechatpay', '$base', "
		  . options_sql() . " || '{\"close_on_expiry\": \"yes\"}')");
	like($err, qr/close_on_expiry/, 'close_on_expiry must be a boolean');
	is(sql($node, q{SELECT count(*) FROM paysync.channels WHERE name = 'wx_bad'}), '0',
		'no refused channel was created');
}

# ---------------------------------------------------------------- end to end

is((create_channel('wx', platform_serial => lit($PLATFORM_SERIAL)))[0], 0,
	'channel wx created (close_on_expiry by default)');
is((create_channel('wx_cert', platform_public_key => file_sql('platform.crt')))[0], 0,
	'channel wx_cert created with the platform certificate');
is((create_channel('wx_keep', close_on_expiry => 'false'))[0], 0,
	'channel wx_keep created with close_on_expiry false');
is((create_channel('wx_badkey', merchant_private_key => file_sql('other.key')))[0], 0,
	'channel wx_badkey created with a key the channel does not know');

# [id, channel, schedule, amount_minor, currency]; a one-delay schedule is
# used up by the first NOTPAY, so the exp_ ones are closed (or expired) then
my @tracked = (
	[ 'pay~N,N,S', 'wx', '{1s,1s,1s,1s,1s}' , 100, 'CNY' ],
	[ 'pay_cert~U,S', 'wx_cert', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'notexist~O,N,S', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'refund~R', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'failed~F', 'wx', '{1s,1s,1s,1s,1s}' ],
	[ 'closed~C', 'wx', '{1s,1s,1s,1s,1s}' ],
	[ 'revoked~V', 'wx', '{1s,1s,1s,1s,1s}' ],
	[ 'mismatch~A', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'replayed~W', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'currency~Y', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'huge~H', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'v_bytes~Sb', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'err500~E500,S', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'unknown~Q', 'wx', '{1s,1s,1s,1s,1s}' ],
	[ 'exp_close~N,X', 'wx', '{1s}' ],
	[ 'exp_paid~N,P', 'wx', '{1s}' ],
	[ 'exp_paid_amount~N,P,S', 'wx', '{1s}', 100, 'CNY' ],
	[ 'exp_paid_more~N,P,A', 'wx', '{1s}', 100, 'CNY' ],
	[ 'exp_closed~N,D', 'wx', '{1s}' ],
	[ 'exp_retry~N,E503,X', 'wx', '{1s}' ],
	[ 'exp_badsig~N,Xt', 'wx', '{1s}' ],
	[ 'exp_keep~N', 'wx_keep', '{1s}' ],
	[ 'exp_notexist~N,Z', 'wx', '{1s}' ],
	[ 'exp_userpaying~N,B,S', 'wx', '{1s}', 100, 'CNY' ],
	[ 'unsigned_notexist~Oh,N,S', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'v_tampered~St', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'v_wrongkey~Sk', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'v_garbage~Sg', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'v_stale~Sz', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'v_noheaders~Sh', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'v_serial~Sw', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'v_notexist~Ot,Ot,S', 'wx', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
	[ 'v_notfound~E404t', 'wx', '{1s,1s,1s,1s,1s}' ],
	[ 'v_paid~N,Pk', 'wx', '{1s}' ],
	[ 'badkey~S', 'wx_badkey', '{1s,1s,1s,1s,1s}', 100, 'CNY' ],
);
sql($node, join(";\n",
	map {
		my ($id, $ch, $sched, $amount, $cur) = @$_;
		"SELECT paysync.track(" . lit($id) . ", '$ch', "
		  . ($amount ? "$amount, '$cur'" : 'NULL, NULL')
		  . ", schedule => '$sched')"
	} @tracked));

sub wait_row
{
	my ($id, $cols, $expected, $what) = @_;
	return wait_for_sql($node,
		"SELECT $cols FROM paysync.payments WHERE payment_id = " . lit($id),
		$expected, $what);
}

wait_row('pay~N,N,S', 'status, channel_status', 'succeeded|SUCCESS',
	'NOTPAY, NOTPAY, SUCCESS -> succeeded');
is(events_of($node, 'pay~N,N,S'), 'pending>succeeded|SUCCESS|poll|wx', '... one event, source poll');
is(scalar(grep { $_->[4] eq '200' } mock_lines($mock, 'pay~N,N,S')), 3,
	'... three queries, each accepted by the mock\'s signature check');
wait_row('pay_cert~U,S', 'status', 'succeeded',
	'USERPAYING then SUCCESS -> succeeded (platform key given as a certificate)');
wait_row('notexist~O,N,S', 'status, step', 'succeeded|3',
	'ORDER_NOT_EXIST (HTTP 404) is pending, then NOTPAY, then SUCCESS');
wait_row('refund~R', 'status, channel_status', 'succeeded|REFUND', 'REFUND -> succeeded');
wait_row('failed~F', 'status, channel_status', 'failed|PAYERROR', 'PAYERROR -> failed');
wait_row('closed~C', 'status, channel_status', 'closed|CLOSED', 'CLOSED -> closed');
is(events_of($node, 'closed~C'), 'pending>closed|CLOSED|poll|wx', '... source poll');
wait_row('revoked~V', 'status, channel_status', 'cancelled|REVOKED', 'REVOKED -> cancelled');
wait_row('mismatch~A', 'status, last_error',
	'failed|amount mismatch: expected 100 CNY, channel reports 101 CNY',
	'SUCCESS with another amount.total -> failed, amount mismatch');
is(events_of($node, 'mismatch~A'), 'pending>failed|SUCCESS|poll|wx', '... with its event');
wait_row('replayed~W', q{status || '|' || (errors >= 2) || '|' || last_error},
	'pending|true|the answer is about out_trade_no "T-ANOTHER-TRADE", not the payment asked about',
	'a genuine signed SUCCESS of another trade (replayed) is an error, never a status');
is(events_of($node, 'replayed~W'), '', '... and no event');
wait_row('currency~Y', 'status, last_error',
	'failed|amount mismatch: expected 100 CNY, channel reports 100 USD',
	'SUCCESS in another currency -> failed');
wait_row('huge~H', q{status || '|' || (errors >= 1) || '|' || last_error},
	'pending|true|the answer\'s amount.total "99999999999999999999" is not a whole number of minor units within range',
	'an amount.total beyond int64 is an error, never another amount');
wait_row('v_bytes~Sb', q{status || '|' || (errors >= 1) || '|' || last_error},
	'pending|true|the answer is signed with ???RSA??, not WECHATPAY2-SHA256-RSA2048',
	'a header of invalid UTF-8, a control character and a cut character reaches last_error as "?"s');
wait_row('err500~E500,S', 'status, errors, attempts', 'succeeded|0|2',
	'HTTP 500 is an error, retried, then succeeded');
wait_row('unknown~Q', q{status || '|' || (errors >= 1) || '|' || last_error},
	'pending|true|unknown trade_state "BRAND_NEW"', 'an unknown trade_state is an error');

# close on expiry
wait_row('exp_close~N,X', 'status, channel_status', 'closed|CLOSED',
	'schedule used up: the trade is closed at the channel -> closed');
is(events_of($node, 'exp_close~N,X'), 'pending>closed|CLOSED|expiry|wx', '... event source expiry');
is( join(',', map { "$_->[1] $_->[4]" } mock_lines($mock, 'exp_close~N,X')),
	'GET 200,POST 204', '... one query, then one close (POST .../close, 204)');
like((mock_lines($mock, 'exp_close~N,X'))[1][2], qr{/out-trade-no/exp_close~N%2CX/close$},
	'... to the close endpoint of that order');
wait_row('exp_paid~N,P', 'status, channel_status', 'succeeded|ORDERPAID',
	'paid meanwhile (close answers ORDERPAID) -> succeeded');
wait_row('exp_paid_amount~N,P,S', 'status, channel_status', 'succeeded|SUCCESS',
	'paid meanwhile with an amount tracked: queried again, then succeeded');
is(join(',', map { "$_->[1] $_->[4]" } mock_lines($mock, 'exp_paid_amount~N,P,S')),
	'GET 200,POST 400,GET 200', '... query, close (ORDERPAID), query');
wait_row('exp_paid_more~N,P,A', 'status, last_error',
	'failed|amount mismatch: expected 100 CNY, channel reports 101 CNY',
	'paid meanwhile, but another amount -> failed (the amount is checked)');
wait_row('exp_closed~N,D', 'status, channel_status', 'closed|ORDER_CLOSED',
	'closed already (close answers ORDER_CLOSED) -> closed');
wait_row('exp_retry~N,E503,X', 'status, errors', 'closed|0',
	'a failed close (HTTP 503) is retried as an error, then closed');
is(scalar(grep { $_->[1] eq 'POST' } mock_lines($mock, 'exp_retry~N,E503,X')), 2,
	'... two close requests');
wait_row('exp_keep~N', 'status', 'expired', 'close_on_expiry false: expired');
is(events_of($node, 'exp_keep~N'), 'pending>expired|NOTPAY|expiry|wx_keep', '... source expiry');
is(scalar(grep { $_->[1] eq 'POST' } mock_lines($mock, 'exp_keep~N')), 0,
	'... and no close request');

# a close answered "no such trade": expired, nothing to close
wait_row('exp_notexist~N,Z', 'status, channel_status, errors', 'expired|ORDER_NOT_EXIST|0',
	'the close answers ORDER_NOT_EXIST: expired, with that channel_status');
is(events_of($node, 'exp_notexist~N,Z'), 'pending>expired|ORDER_NOT_EXIST|expiry|wx', '... source expiry');
is(join(',', map { "$_->[1] $_->[4]" } mock_lines($mock, 'exp_notexist~N,Z')),
	'GET 200,POST 404', '... after one query and one close, nothing retried');

# the buyer is paying when the close comes: query again in 5 s
wait_row('exp_userpaying~N,B,S', 'status, channel_status, errors', 'succeeded|SUCCESS|0',
	'the close answers 202 USERPAYING, the query then says SUCCESS: succeeded');
{
	my @l = mock_lines($mock, 'exp_userpaying~N,B,S');
	is(join(',', map { "$_->[1] $_->[4]" } @l), 'GET 200,POST 202,GET 200',
		'... query, close (202), query');
	cmp_ok(($l[2][0] - $l[1][0]) / 1e6, '>=', 4.9, '... the query 5 s after the 202');
}

# an unsigned ORDER_NOT_EXIST is pending, not an error
wait_row('unsigned_notexist~Oh,N,S', 'status, step, errors', 'succeeded|3|0',
	'an unsigned ORDER_NOT_EXIST (404) is pending, no error; then NOTPAY, SUCCESS');

# a close answer that would end the payment but does not verify: pending,
# a signed query settles it a minute later (never final unverified)
for my $id ('v_paid~N,Pk', 'exp_badsig~N,Xt')
{
	wait_true($node, $id, 'NOT closing AND last_checked_at IS NOT NULL AND attempts = 2',
		"$id: the unverifiable close is answered");
	is(payment_row($node, $id, q{status || '|' || coalesce(channel_status, '') || '|' || errors}),
		'pending|NOTPAY|0', "$id: pending, the unverified word not kept, no error");
	ok(payment_row($node, $id, q{next_check_at - now() > interval '30 s'}) eq 't',
		"$id: the signed query is due about a minute later");
	is(events_of($node, $id), '', "$id: no event");
}

# answers that fail verification: errors, never a status
my @unverified = (
	[ 'v_tampered~St', qr/does not verify with platform_public_key/, 'tampered body' ],
	[ 'v_wrongkey~Sk', qr/does not verify with platform_public_key/, 'signed with the wrong key' ],
	[ 'v_garbage~Sg', qr/does not verify.*signature test/, 'a garbage signature' ],
	[ 'v_stale~Sz', qr/Timestamp is -60\d s off/, 'a stale timestamp (10 minutes)' ],
	[ 'v_noheaders~Sh', qr/not signed \(no Wechatpay-Timestamp header\)/, 'no signature headers' ],
	[ 'v_serial~Sw', qr/not platform_serial/, 'another Wechatpay-Serial' ],
	[ 'v_notfound~E404t', qr/unexpected HTTP 404 .*PARAM_ERROR|does not verify/, 'a tampered 404 that is not ORDER_NOT_EXIST' ],
	[ 'badkey~S', qr/HTTP 401 from the channel: SIGN_ERROR: it refused the request signature/,
		'a request signed with a key the channel does not know (401 SIGN_ERROR)' ],
);
for my $case (@unverified)
{
	my ($id, $re, $what) = @$case;
	wait_row($id, 'errors >= 2', 't', "$what: retried as an error");
	my ($status, $error) = split /\|/, sql($node, 
		'SELECT status, last_error FROM paysync.payments WHERE payment_id = ' . lit($id)), 2;
	is($status, 'pending', "$what: never a status");
	like($error, $re, "$what: last_error says why");
	is(events_of($node, $id), '', "$what: no event");
}
ok( (grep { $_->[4] eq '200' } mock_lines($mock, 'v_tampered~St')),
	'the tampered answers were 200s from the mock (refused by the driver, not the mock)');
ok(!(grep { $_->[4] ne '401' } mock_lines($mock, 'badkey~S')),
	'the mock refused every request signed with the unknown key');
wait_row('v_notexist~Ot,Ot,S', 'status, step, errors', 'succeeded|3|0',
	'an ORDER_NOT_EXIST that does not verify is pending (nothing paid), no error, never final');

# ---------------------------------------------------------------- key rotation

# A second mock that signs its first 6 answers with the platform
# certificate's key and every later one with a WeChat Pay public key
# ($PUB_KEY_ID): the move to public-key mode, mid-run.
my $rot = start_mock_program(
	'mock_wechatpay',
	'--mchid', $MCHID,
	'--merchant-serial', $MERCHANT_SERIAL,
	'--merchant-public-key', "$dir/merchant.pub",
	'--platform-private-key', "$dir/platform.key",
	'--platform-serial', $PLATFORM_SERIAL,
	'--next-platform-private-key', "$dir/next.key",
	'--next-platform-serial', $PUB_KEY_ID,
	'--switch-after', '6',
	'--amount', '100');
my $rot_base = "http://127.0.0.1:$rot->{port}";
sub create_rot_channel
{
	my ($name, $keys) = @_;
	return $node->psql('postgres',
		"SELECT paysync.create_channel('$name', 'wechatpay', '$rot_base', "
		  . options_sql(platform_public_key => $keys) . ')');
}
my $both = "jsonb_build_object('$PLATFORM_SERIAL', " . file_sql('platform.crt')
  . ", '$PUB_KEY_ID', " . file_sql('next.pub') . ')';
is((create_rot_channel('wx_rot', $both))[0], 0,
	'channel wx_rot created with keys by serial: the certificate and the public key');
is((create_rot_channel('wx_rot_old', "jsonb_build_object('$PLATFORM_SERIAL', "
			. file_sql('platform.crt') . ')'))[0], 0,
	'channel wx_rot_old created with the certificate only');
is((create_rot_channel('wx_rot_single', file_sql('platform.pub')))[0], 0,
	'channel wx_rot_single created with one key, no serial');
# six answers by the certificate, then the rest by the public key
sql($node, join(";
", map {
	"SELECT paysync.track('$_~N,N,N,N,N,N,S', 'wx_rot', 100, 'CNY', '{1s,1s,1s,1s,1s,1s,1s,1s}')"
} qw(rot1 rot2)));
for my $id ('rot1~N,N,N,N,N,N,S', 'rot2~N,N,N,N,N,N,S')
{
	wait_row($id, 'status, step, errors, last_error IS NULL', 'succeeded|7|0|t',
		"$id: seven answers across the switch of keys, not a single error");
}
is(scalar(grep { $_->[4] eq '200' } map { mock_lines($rot, $_) } 'rot1~N,N,N,N,N,N,S',
		'rot2~N,N,N,N,N,N,S'), 14, '... fourteen answers: the last eight by the public key');
sql($node, "SELECT paysync.track('old~S', 'wx_rot_old', 100, 'CNY')");
sql($node, "SELECT paysync.track('single~S', 'wx_rot_single', 100, 'CNY')");
wait_row('old~S', q{status || '|' || (errors >= 1) || '|' || last_error},
	"pending|true|the answer is signed by platform key $PUB_KEY_ID, which platform_public_key does not name",
	'after the switch, keys by serial without the new one: an error naming its serial, never a status');
wait_row('single~S', q{status || '|' || (errors >= 1) || '|' || last_error},
	'pending|true|the answer\'s Wechatpay-Signature does not verify with platform_public_key',
	'... one old key: does not verify');
stop_mock($rot);

# ---------------------------------------------------------------- refunds

{
	my $now = int(time);
	my $signed = sub { answer_headers(signed_body => $_[0], timestamp => $now) };
	my $refund = sub {
		my ($status, %o) = @_;
		return qq({"refund_id":"50000000382019052709732678859","out_refund_no":"$o{id}",)
		  . qq("transaction_id":"1217752501201407033233368018","out_trade_no":"T1","channel":"ORIGINAL",)
		  . qq("status":"$status","create_time":"2026-11-26T10:34:56+08:00",)
		  . qq("amount":{"total":200,"refund":$o{refund},"payer_total":200,"payer_refund":$o{refund},"currency":"CNY"}});
	};
	my $r = sub {
		my ($id, $status, $headers, $body) = @_;
		return test_interpret($node, driver => 'wechatpay', options => options_sql(),
			kind => 'refund', status => $status, headers => $headers, body => $body,
			payment_id => $id);
	};

	# the request: signed as the payment query, no mchid for a direct merchant
	my $req = test_fields(test_request($node, driver => 'wechatpay', options => options_sql(),
		base_url => 'http://127.0.0.1:1/proxy/', payment_id => 'T1', refund_id => 'R 1/x~S',
		kind => 'refund'));
	is("$req->{method} $req->{url}",
		'GET http://127.0.0.1:1/proxy/v3/refund/domestic/refunds/R%201%2Fx~S',
		'refund query: GET /v3/refund/domestic/refunds/{out_refund_no}, URL-encoded, no mchid');
	my %h = map { /^([^:]+): (.*)$/ ? ($1, $2) : () } @{ $req->{header} };
	my $f = auth_fields($h{Authorization} // '');
	ok( $f && openssl_verifies("$dir/merchant.pub",
			"GET\n/proxy/v3/refund/domestic/refunds/R%201%2Fx~S\n$f->{timestamp}\n$f->{nonce_str}\n\n",
			$f->{signature}),
		'... signed over the path as sent, verified by openssl with the merchant public key');
	is(join(',', $f->{mchid} // '', $f->{serial_no} // ''), "$MCHID,$MERCHANT_SERIAL",
		'... with mchid and the merchant serial');

	for my $case ([ 'SUCCESS', 'succeeded' ], [ 'ABNORMAL', 'failed' ], [ 'CLOSED', 'closed' ],
		[ 'PROCESSING', 'pending' ])
	{
		my ($word, $status) = @$case;
		my $body = $refund->($word, id => 'R1', refund => 100);
		is($r->('R1', 200, $signed->($body), $body),
			"status=$status\nchannel_status=$word\npaid_amount=100\npaid_currency=CNY",
			"refund $word, signed: $status, amount.refund the refunded amount");
	}
	my $body = $refund->('SUCCESS', id => 'R1', refund => 150);
	is($r->('R1', 200, $signed->($body), $body),
		"status=succeeded\nchannel_status=SUCCESS\npaid_amount=150\npaid_currency=CNY",
		'another amount.refund is carried as it is, for the amount check');
	$body = $refund->('REFUNDING', id => 'R1', refund => 100);
	like($r->('R1', 200, $signed->($body), $body), qr/^error=unknown refund status "REFUNDING"$/,
		'an unknown refund status: an error');
	$body = $refund->('SUCCESS', id => 'R2', refund => 100);
	like($r->('R1', 200, $signed->($body), $body),
		qr/^error=the answer is about out_refund_no "R2", not the refund asked about$/,
		'a signed answer about another refund: an error');
	$body = $refund->('SUCCESS', id => 'R1', refund => '"100"');
	like($r->('R1', 200, $signed->($body), $body), qr/^error=the answer's amount.refund "100" is not a whole number/,
		'amount.refund as a string: an error');
	$body = $refund->('SUCCESS', id => 'R1', refund => 100);
	like($r->('R1', 200, answer_headers(signed_body => $body, key => 'other.key', timestamp => $now), $body),
		qr/^error=.*does not verify with platform_public_key/, 'a refund answer signed with another key: an error');
	like($r->('R1', 200, answer_headers(signed_body => $body, drop => ['Wechatpay-Signature']), $body),
		qr/^error=the answer is not signed/, 'an unsigned refund answer: an error');
	(my $tampered = $body) =~ s/"status":"SUCCESS"/"status":"CLOSED"/;
	like($r->('R1', 200, $signed->($body), $tampered), qr/^error=.*does not verify/,
		'a tampered refund answer: an error');
	my $missing = '{"code":"RESOURCE_NOT_EXISTS","message":"退款单不存在"}';
	is($r->('R1', 404, $signed->($missing), $missing),
		'error=WeChat Pay has no such refund (HTTP 404 RESOURCE_NOT_EXISTS)',
		'404 RESOURCE_NOT_EXISTS, signed: an error (never an end)');
	is($r->('R1', 404, undef, $missing),
		'error=WeChat Pay has no such refund (HTTP 404 RESOURCE_NOT_EXISTS)', '... unsigned alike');
	like($r->('R1', 401, undef, '{"code":"SIGN_ERROR","message":"x"}'),
		qr/^error=HTTP 401 from the channel: SIGN_ERROR/, '401 SIGN_ERROR: an error');

	# against the mock, which verifies the request and signs its answers
	my %want = (
		'M1~S' => "status=succeeded\nchannel_status=SUCCESS\npaid_amount=100\npaid_currency=CNY",
		'M2~P' => "status=pending\nchannel_status=PROCESSING\npaid_amount=100\npaid_currency=CNY",
		'M3~B' => "status=failed\nchannel_status=ABNORMAL\npaid_amount=100\npaid_currency=CNY",
		'M4~C' => "status=closed\nchannel_status=CLOSED\npaid_amount=100\npaid_currency=CNY",
		'M5~A' => "status=succeeded\nchannel_status=SUCCESS\npaid_amount=101\npaid_currency=CNY",
	);
	my %bad = (
		'M6~Q' => qr/^error=unknown refund status "BRAND_NEW"$/,
		'M7~W' => qr/^error=the answer is about out_refund_no "R-ANOTHER-REFUND"/,
		'M8~O' => qr/^error=WeChat Pay has no such refund/,
		'M9~St' => qr/^error=.*does not verify/,
		'M10~Sk' => qr/^error=.*does not verify/,
		'M11~Sh' => qr/^error=the answer is not signed/,
		'M12~Sz' => qr/^error=.*off the clock/,
		'M13~E500' => qr/^error=HTTP 500 from the channel$/,
	);
	for my $id (sort(keys %want), sort(keys %bad))
	{
		my ($status, $headers, $answer) = send_request(test_fields(test_request($node,
			driver => 'wechatpay', options => options_sql(), base_url => "http://127.0.0.1:$mock->{port}",
			payment_id => 'T1', refund_id => $id, kind => 'refund')));
		my $got = $r->($id, $status, $headers, $answer);
		if ($want{$id})
		{
			is($got, $want{$id}, "mock_wechatpay: refund $id as the driver built and read it");
		}
		else
		{
			like($got, $bad{$id}, "mock_wechatpay: refund $id is an error");
		}
	}
	my @lines = mock_lines($mock, 'M1~S');
	is(join(' ', map { "$_->[1] $_->[2] $_->[4]" } @lines), 'GET /v3/refund/domestic/refunds/M1~S 200',
		'... the mock verified the request signature (a bad one is answered 401)');
	my $bad_req = test_fields(test_request($node, driver => 'wechatpay',
		options => options_sql(merchant_private_key => file_sql('other.key')),
		base_url => "http://127.0.0.1:$mock->{port}", payment_id => 'T1', refund_id => 'M1~S',
		kind => 'refund'));
	my ($status) = send_request($bad_req);
	is($status, 401, 'mock_wechatpay: a refund query signed with another key is answered 401');
}

# Refund callbacks: REFUND.SUCCESS / ABNORMAL / CLOSED, signed and sealed
# as payment callbacks, the resource saying refund_status.
{
	my $api_v3_key = 'a' x 16 . 'B' x 16;
	my $opts = options_sql(api_v3_key => lit($api_v3_key));
	my $n = 0;
	my $callback = sub {
		my (%o) = @_;
		my $resource = qq({"mchid":"$MCHID","out_trade_no":"T1","transaction_id":"42000","out_refund_no":"$o{id}",)
		  . qq("refund_id":"5000","refund_status":"$o{status}","success_time":"2026-11-26T10:35:56+08:00",)
		  . qq("user_received_account":"x","amount":{"total":200,"refund":$o{refund},"payer_total":200,"payer_refund":$o{refund}}});
		my $nonce = sprintf('r%011d', ++$n);
		my ($ciphertext, $err) = ('', '');
		IPC::Run::run([ "$FindBin::Bin/mock/mock_seal", $o{key} // $api_v3_key, $nonce, 'refund' ],
			'<', \$resource, '>', \$ciphertext, '2>', \$err)
		  or die "mock_seal: $err";
		chomp $ciphertext;
		my $body = qq({"id":"EV-R$n","create_time":"2026-11-26T10:36:00+08:00","resource_type":"encrypt-resource",)
		  . qq("event_type":"$o{event}","summary":"退款成功","resource":{"original_type":"refund",)
		  . qq("algorithm":"AEAD_AES_256_GCM","ciphertext":"$ciphertext","associated_data":"refund","nonce":"$nonce"}});
		my $headers = answer_headers(signed_body => $body, timestamp => $o{time} // int(time),
			key => $o{signer} // 'platform.key');
		return ($headers, $body);
	};
	for my $case ([ 'REFUND.SUCCESS', 'SUCCESS', 'succeeded' ], [ 'REFUND.ABNORMAL', 'ABNORMAL', 'failed' ],
		[ 'REFUND.CLOSED', 'CLOSED', 'closed' ])
	{
		my ($event, $word, $status) = @$case;
		my ($headers, $body) = $callback->(id => 'R7', status => $word, event => $event, refund => 100);
		my ($text, $err) = test_notification($node, driver => 'wechatpay', options => $opts,
			headers => $headers, body => $body);
		is($text, "verified=true\npayment_id=T1\nrefund_id=R7\nstatus=$status\nchannel_status=$word\n"
			  . "paid_amount=100\npaid_currency=\nreply_status=204",
			"$event: verified, refund R7 of T1 $status with its amount") or diag($err);
	}
	for my $forged (
		[ 'signed with another key', [ signer => 'other.key' ], qr/does not verify/ ],
		[ 'sealed with another key', [ key => 'c' x 32 ], qr/does not decrypt with api_v3_key/ ],
		[ 'ten minutes old', [ time => int(time) - 600 ], qr/off the clock/ ],
		[ 'with an unknown refund_status', [ status => 'REFUNDING' ], qr/unknown refund status "REFUNDING"/ ])
	{
		my ($what, $args, $expected) = @$forged;
		my ($headers, $body) = $callback->(id => 'R7', status => 'SUCCESS', event => 'REFUND.SUCCESS',
			refund => 100, @$args);
		my ($text, $err) = test_notification($node, driver => 'wechatpay', options => $opts,
			headers => $headers, body => $body);
		ok(!defined $text, "a refund callback $what is refused");
		like($err, qr/28000: notification for channel "test" refused.*DETAIL:  .*$expected/s,
			'... with SQLSTATE 28000 saying why');
	}
	my ($headers, $body) = $callback->(id => 'R7', status => 'SUCCESS', event => 'REFUND.SUCCESS', refund => 100);
	(my $tampered = $body) =~ s/EV-R/EV-X/;
	my ($text, $err) = test_notification($node, driver => 'wechatpay', options => $opts,
		headers => $headers, body => $tampered);
	like($err, qr/28000: .*does not verify/s, 'a tampered refund callback is refused');
}

# ---------------------------------------------------------------- secrets

$node->stop;
my $log = slurp_file($node->logfile);
my $leaks = 0;
for my $key (qw(merchant other))
{
	for my $line (grep { length($_) > 40 && !/-----/ } split /\n/, slurp_file("$dir/$key.key"))
	{
		$leaks++ if index($log, $line) >= 0;
	}
}
is($leaks, 0, 'no line of a private key is in the server log');

stop_mock($mock);

done_testing();
