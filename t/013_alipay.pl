# 013_alipay.pl: the alipay driver, unit-level and end to end against
# t/mock/mock_alipay, which checks requests the way Alipay's gateway does
# (RSA2 signature with the application's public key, app_id, timestamp in
# Shanghai time) and signs its answers with "Alipay's" private key.
#
# Unit level (through the drivers' test interface, paysync_test_request and
# paysync_test_interpret, created here from the library, not in the install
# script): the request signature verifies with `openssl dgst -sha256
# -verify` over the string to sign rebuilt here; answers signed here with openssl verify, and bad
# signatures, a wrong key, a tampered body, a re-serialised body and a
# missing sign are errors.  (Alipay's answers carry no timestamp, so there
# is no stale timestamp to refuse.)
#
# create_channel: a key that does not parse is an ERROR naming the option
# and never showing the key.
#
# End to end: WAIT_BUYER_PAY then TRADE_SUCCESS, TRADE_FINISHED,
# TRADE_CLOSED, ACQ.TRADE_NOT_EXIST as pending; close on expiry (closed,
# source expiry; paid meanwhile -> succeeded; closed meanwhile -> closed; a
# failed close retried); close_on_expiry off -> expired; amount mismatch
# -> failed; every verification failure an error, never a status; keys
# nowhere in the server log or paysync's tables but paysync.channels.
#
# Refunds (0.4): alipay.trade.fastpay.refund.query signed as the payment
# query, REFUND_SUCCESS and the answer without refund_status, amounts,
# another refund, forged answers; the same against mock_alipay in key and
# certificate modes; trade notifications naming a refund (out_biz_no)
# checked, forged ones refused with SQLSTATE 28000.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use Digest::MD5 qw(md5_hex);
use JSON::PP;
use Math::BigInt;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $APP_ID = '2021000000000001';
my $tmp = PostgreSQL::Test::Utils::tempdir;

# ---------------------------------------------------------------- keys

# The bare base64 body of a PEM, as Alipay's console hands keys out.
sub bare
{
	my ($pem) = @_;
	return join '', grep { !/^-----/ } split /\n/, $pem;
}

# app: the merchant's application key; ali: "Alipay's" key; other*: keys
# nobody registered.
make_rsa_key($tmp, $_) for qw(app ali other other_ali);
# The application key as PKCS#1 ("BEGIN RSA PRIVATE KEY"), the form Alipay's
# key tool writes for every language but Java.
run_openssl([ 'pkey', '-in', "$tmp/app.key", '-traditional', '-out', "$tmp/app_pkcs1.key" ]);
# The keys, as the server reads them from the files (so that no statement
# text, which log_statement = all logs, carries them): name => [file, bare?]
my %KEY = (
	app_priv_pem => [ 'app.key', 0 ],
	app_priv_bare => [ 'app.key', 1 ],
	app_priv_pkcs1_pem => [ 'app_pkcs1.key', 0 ],
	app_priv_pkcs1_bare => [ 'app_pkcs1.key', 1 ],
	app_pub_pem => [ 'app.pub', 0 ],
	ali_pub_pem => [ 'ali.pub', 0 ],
	ali_pub_bare => [ 'ali.pub', 1 ],
	other_priv_pem => [ 'other.key', 0 ],
	other_ali_pub_pem => [ 'other_ali.pub', 0 ]);

# Lines from the middle of the application private key: they must show
# nowhere but in paysync.channels.
my @APP_KEY_LINES = (split /\n/, slurp_file("$tmp/app.key"))[ 3 .. 8 ];

# ---------------------------------------------------------------- the mock

# The Alipay methods the mock saw for a trade, in order.
sub methods_for
{
	my ($mock, $id) = @_;
	return () unless -e $mock->{log};
	(my $logged = $id) =~ s/ /_/g;
	my @methods;
	for my $line (split /\n/, slurp_file($mock->{log}))
	{
		my (undef, undef, undef, $lid, $method) = split / /, $line;
		push @methods, $method if defined $lid && $lid eq $logged;
	}
	return @methods;
}

# mock_alipay verifies requests with the app's public key and signs its
# answers with "Alipay's" private key.
my $mock = start_mock_program('mock_alipay', '--app-id', $APP_ID,
	'--app-public-key', "$tmp/app.pub", '--alipay-private-key', "$tmp/ali.key");
my $GATEWAY = "http://127.0.0.1:$mock->{port}/gateway.do";
my $node = new_paysync_node('alipay');

# ---------------------------------------------------------------- helpers

# Runs a statement expected to fail; returns its stderr (or undef if it worked).
sub sql_error
{
	my ($query) = @_;
	my ($out, $err) = ('', '');
	my $rc = $node->psql('postgres', "\\set VERBOSITY verbose\n$query", stdout => \$out, stderr => \$err);
	return $rc == 0 ? undef : $err;
}

# The keys live in a table so that no statement text carries them: a
# failing statement is logged, and would show a key spelled out in it.
sql($node, 'CREATE TABLE test_keys (name text PRIMARY KEY, value text NOT NULL)');
for my $name (sort keys %KEY)
{
	my ($file, $bare) = @{ $KEY{$name} };
	my $read = 'pg_read_file(' . lit("$tmp/$file") . ')';
	$read = "regexp_replace($read, '-----[A-Z ]+-----|\\s', '', 'g')" if $bare;
	sql($node, 'INSERT INTO test_keys SELECT ' . lit($name) . ", $read");
}
is(sql($node, "SELECT value FROM test_keys WHERE name = 'app_priv_bare'"),
	join('', grep { !/^-----/ } split /\n/, slurp_file("$tmp/app.key")),
	'the bare base64 form of a key is its PEM body');
sql($node, <<"EOF");
CREATE FUNCTION opts(app text, ali text) RETURNS jsonb LANGUAGE sql AS \$\$
  SELECT jsonb_strip_nulls(jsonb_build_object('app_id', '$APP_ID',
    'app_private_key', (SELECT value FROM test_keys WHERE name = app),
    'alipay_public_key', (SELECT value FROM test_keys WHERE name = ali)))
\$\$;
EOF
create_test_functions($node);

# ---------------------------------------------------------------- request signing

# Decodes a form-encoded piece.
sub form_decode
{
	my ($s) = @_;
	$s =~ tr/+/ /;
	$s =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge;
	return $s;
}

# The request the driver builds for id and kind: (url without query, params).
sub driver_request
{
	my ($id, $kind) = @_;
	my $req = test_fields(test_request($node, driver => 'alipay',
		options => q{opts('app_priv_bare', 'ali_pub_bare')}, base_url => $GATEWAY,
		payment_id => $id, kind => $kind));
	my ($url, $body) = ($req->{url}, $req->{body});
	my ($base, $query) = split /\?/, $url, 2;
	my %params;
	for my $pair (split(/&/, $query), split(/&/, $body))
	{
		my ($k, $v) = split /=/, $pair, 2;
		$k = form_decode($k);
		die "parameter $k given twice" if exists $params{$k};
		$params{$k} = form_decode($v // '');
	}
	return ($base, \%params, $body);
}

# True if openssl verifies the request's sign with the key in pubfile over
# the string to sign built here from Alipay's rules.
sub request_verifies
{
	my ($params, $pubfile) = @_;
	my $content = join '&', map { "$_=$params->{$_}" }
	  sort grep { $_ ne 'sign' && $params->{$_} ne '' } keys %$params;
	return openssl_verifies($pubfile, $content, $params->{sign});
}

{
	my $id = qq{T-1 "q" \\ /\xc3\xbc~W};    # a quote, a backslash, a space, a u-umlaut
	my ($base, $p, $body) = driver_request($id, 'query');
	is($base, $GATEWAY, 'the request goes to the gateway');
	is_deeply([ sort keys %$p ],
		[qw(app_id biz_content charset format method sign sign_type timestamp version)],
		'the request has the common parameters, biz_content and sign');
	is($p->{method}, 'alipay.trade.query', 'method alipay.trade.query');
	is(join(',', @$p{qw(app_id format charset sign_type version)}),
		"$APP_ID,JSON,utf-8,RSA2,1.0", 'app_id, format, charset, sign_type, version');
	like($body, qr/^biz_content=[^&]+$/, 'biz_content is the POST form body');
	# bytes in, bytes out: decoded without ->utf8, the id comes back as sent
	is(JSON::PP->new->decode($p->{biz_content})->{out_trade_no}, $id,
		'biz_content carries out_trade_no, JSON-escaped');
	like($p->{timestamp}, qr/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/, 'timestamp is yyyy-MM-dd HH:mm:ss');
	my @t = gmtime(time + 8 * 3600);
	my $shanghai = sprintf('%04d-%02d-%02d %02d:%02d', $t[5] + 1900, $t[4] + 1, $t[3], $t[2], $t[1]);
	my @t2 = gmtime(time + 8 * 3600 - 60);
	my $shanghai_before = sprintf('%04d-%02d-%02d %02d:%02d', $t2[5] + 1900, $t2[4] + 1, $t2[3], $t2[2], $t2[1]);
	ok(substr($p->{timestamp}, 0, 16) eq $shanghai || substr($p->{timestamp}, 0, 16) eq $shanghai_before,
		'timestamp is Asia/Shanghai time');
	ok(request_verifies($p, "$tmp/app.pub"),
		'openssl dgst -sha256 -verify accepts the request signature with the app public key');
	ok(!request_verifies($p, "$tmp/other.pub"), '... and refuses it with another public key');
	my %tampered = (%$p, biz_content => '{"out_trade_no":"someone-else"}');
	ok(!request_verifies(\%tampered, "$tmp/app.pub"), '... and refuses a changed biz_content');

	my (undef, $c) = driver_request('T-2', 'close');
	is($c->{method}, 'alipay.trade.close', 'CHECK_CLOSE sends alipay.trade.close');
	ok(request_verifies($c, "$tmp/app.pub"), 'the close request signature verifies with openssl');
}

# ---------------------------------------------------------------- answer verification

# A query response object with unusual spacing, an escaped slash, a nested
# array and object, and non-ASCII text: any re-serialisation changes it.
sub query_node
{
	my ($status, %o) = @_;
	my $amount = $o{amount} // '88.88';
	my $extra = $o{extra} // '';
	return qq({"code" : "10000",  "msg": "Success", "buyer_logon_id": "159****5620", )
	  . qq("note": "a\\/b \xe4\xbd\xa0\xe5\xa5\xbd", "fund_bill_list": [ {"amount": "$amount", "fund_channel": "ALIPAYACCOUNT"} ], )
	  . qq("out_trade_no": "u1", "total_amount": "$amount"$extra, "trade_status": "$status"});
}

sub error_node
{
	my ($code, $sub_code) = @_;
	return qq({"code": "$code", "msg": "Business Failed", "sub_code": "$sub_code", "sub_msg": "\xe4\xba\xa4\xe6\x98\x93", "out_trade_no": "u1"});
}

# A whole answer: node under name, signed with keyfile (default Alipay's);
# sent replaces the node text after signing; nosign leaves the sign out.
sub answer
{
	my ($name, $node_text, %o) = @_;
	my $sent = $o{sent} // $node_text;
	return qq({"$name": $sent}) if $o{nosign};
	my $sig = $o{sig} // openssl_sign($o{key} // "$tmp/ali.key", $node_text);
	return qq({"sign": "$sig", "$name": $sent}) if $o{sign_first};
	return qq({"$name": $sent, "sign": "$sig"});
}

# What the driver makes of an answer: paysync_test_interpret's "name=value"
# lines.
sub interpret
{
	my ($kind, $http, $body) = @_;
	return test_interpret($node, driver => 'alipay',
		options => q{opts('app_priv_pem', 'ali_pub_pem')},
		kind => $kind, status => $http, body => $body);
}

my $Q = 'alipay_trade_query_response';
my $CL = 'alipay_trade_close_response';
is(interpret('query', 200, answer($Q, query_node('WAIT_BUYER_PAY'))),
	"status=pending\nchannel_status=WAIT_BUYER_PAY",
	'a good signature verifies: WAIT_BUYER_PAY is pending');
is(interpret('query', 200, answer($Q, query_node('TRADE_SUCCESS'))),
	"status=succeeded\nchannel_status=TRADE_SUCCESS\npaid_amount=8888\npaid_currency=CNY",
	'TRADE_SUCCESS is succeeded, with 88.88 yuan as 8888 CNY');
is(interpret('query', 200, answer($Q, query_node('TRADE_FINISHED', amount => '0.01'))),
	"status=succeeded\nchannel_status=TRADE_FINISHED\npaid_amount=1\npaid_currency=CNY",
	'TRADE_FINISHED is succeeded');
is(interpret('query', 200, answer($Q, query_node('TRADE_CLOSED'))),
	"status=closed\nchannel_status=TRADE_CLOSED", 'TRADE_CLOSED is closed');
is(interpret('query', 200, answer($Q, error_node('40004', 'ACQ.TRADE_NOT_EXIST'))),
	"status=pending\nchannel_status=ACQ.TRADE_NOT_EXIST", 'ACQ.TRADE_NOT_EXIST is pending');
is(interpret('query', 200, answer($Q, query_node('TRADE_SUCCESS', amount => '12.34',
	extra => ', "trans_currency": "USD"'))),
	"status=succeeded\nchannel_status=TRADE_SUCCESS\npaid_amount=1234\npaid_currency=USD",
	'trans_currency gives the currency of total_amount');
is(interpret('query', 200, answer($Q, query_node('TRADE_SUCCESS'), sign_first => 1)),
	"status=succeeded\nchannel_status=TRADE_SUCCESS\npaid_amount=8888\npaid_currency=CNY",
	'the sign may come before the response');

# Alipay may sign a response with "/" and send it with "\/": verified with
# the slashes unescaped when the text as sent does not verify.
{
	my $signed = query_node('TRADE_SUCCESS', extra => ', "qr_url": "https://qr.alipay.com/bax0"');
	(my $sent = $signed) =~ s{/}{\\/}g;
	isnt($sent, $signed, '(the text sent has escaped slashes)');
	is(interpret('query', 200, answer($Q, $signed, sent => $sent)),
		"status=succeeded\nchannel_status=TRADE_SUCCESS\npaid_amount=8888\npaid_currency=CNY",
		'a response signed with "/" and sent with "\/" verifies');
	(my $changed = $sent) =~ s{bax0}{bax1};
	like(interpret('query', 200, answer($Q, $signed, sent => $changed)),
		qr/^error=.*signature does not verify/, '... but not once changed otherwise');
}

# An amount of a zero-decimal currency written with zero decimals.
is(interpret('query', 200, answer($Q, query_node('TRADE_SUCCESS', amount => '1000.00',
	extra => ', "trans_currency": "JPY"'))),
	"status=succeeded\nchannel_status=TRADE_SUCCESS\npaid_amount=1000\npaid_currency=JPY",
	'"1000.00" JPY is 1000 yen');
like(interpret('query', 200, answer($Q, query_node('TRADE_SUCCESS', amount => '1000.50',
	extra => ', "trans_currency": "JPY"'))),
	qr/^error=.*amount "1000\.50" is not a valid JPY amount/, '"1000.50" JPY is refused');

my $good_sig = openssl_sign("$tmp/ali.key", query_node('WAIT_BUYER_PAY'));
(my $flipped = $good_sig) =~ s/^(.)/$1 eq 'A' ? 'B' : 'A'/e;
like(interpret('query', 200, answer($Q, query_node('WAIT_BUYER_PAY'), sig => $flipped)),
	qr/^error=.*signature does not verify/, 'a bad signature is an error');
like(interpret('query', 200, answer($Q, query_node('WAIT_BUYER_PAY'), sig => 'not base64!')),
	qr/^error=.*signature does not verify/, 'a sign that is not base64 is an error');
like(interpret('query', 200, answer($Q, query_node('TRADE_SUCCESS'), key => "$tmp/other_ali.key")),
	qr/^error=.*signature does not verify/, 'a signature by another key is an error');
like(interpret('query', 200, answer($Q, query_node('WAIT_BUYER_PAY'), sent => query_node('TRADE_SUCCESS'))),
	qr/^error=.*signature does not verify/, 'a tampered body is an error');
my $compact = JSON::PP->new->canonical->encode(JSON::PP->new->decode(query_node('TRADE_SUCCESS')));
like(interpret('query', 200, answer($Q, query_node('TRADE_SUCCESS'), sent => $compact)),
	qr/^error=.*signature does not verify/, 'the same response re-serialised does not verify');
is(interpret('query', 200, answer($Q, $compact)),
	"status=succeeded\nchannel_status=TRADE_SUCCESS\npaid_amount=8888\npaid_currency=CNY",
	'... while compact text signed as sent does');
like(interpret('query', 200, answer($Q, query_node('TRADE_SUCCESS'), nosign => 1)),
	qr/^error=the Alipay answer is not signed/, 'a missing sign is an error');
like(interpret('query', 200, answer($Q, error_node('40002', 'isv.invalid-signature'), nosign => 1)),
	qr/^error=.*unsigned.*40002 \(isv\.invalid-signature\)/, 'an unsigned refusal is an error naming the code');
like(interpret('query', 200, answer($Q, error_node('40002', 'isv.invalid-signature'))),
	qr/^error=Alipay refused the query: code 40002 \(isv\.invalid-signature\)/, 'a signed refusal is an error');
like(interpret('query', 200, answer('error_response', error_node('40002', 'isv.invalid-method'))),
	qr/^error=Alipay refused the request/, 'error_response is an error');
{
	# three pieces of channel text of 64 bytes each make a message longer
	# than last_error holds: it is cut on a whole character of sub_msg
	my $long = qq({"code": "@{['4' x 64]}", "msg": "Business Failed", "sub_code": "ACQ.@{['X' x 60]}", "sub_msg": "@{["\xe4\xba\xa4" x 30]}", "out_trade_no": "u1"});
	my $r = interpret('query', 200, answer($Q, $long));
	like($r, qr/^error=Alipay refused the query: code 4{64} \(ACQ\.X{60}\): (?:\xe4\xba\xa4){11}/,
		'a refusal longer than last_error is cut in sub_msg');
	# psql hides a cut character, so the server checks the text itself
	my ($ret, $out, $err) = $node->psql('postgres',
		"SELECT octet_length(convert_from(textsend(paysync_test_interpret('alipay', opts('app_priv_pem', 'ali_pub_pem'), 'query', 200, NULL, "
		  . lit(answer($Q, $long)) . ", NULL)), 'UTF8'))");
	is($out, length('error=') + 197,
		'... before the character that would not fit whole: valid UTF-8, 197 bytes')
	  or diag($err);
}
like(interpret('query', 200, answer($Q, query_node('TRADE_WEIRD'))),
	qr/^error=unknown Alipay trade_status "TRADE_WEIRD"/, 'an unknown trade_status is an error');
like(interpret('query', 200, answer($Q, '{"code": "10000", "msg": "Success"}')),
	qr/^error=.*no trade_status/, 'a missing trade_status is an error');
like(interpret('query', 200, answer($Q, query_node('TRADE_SUCCESS', amount => '8.888'))),
	qr/^error=.*amount "8\.888" is not a valid CNY amount/, 'a total_amount that is not an amount is an error');
like(interpret('query', 200, answer($Q, query_node('TRADE_SUCCESS', extra => ', "trade_status": "TRADE_CLOSED"'))),
	qr/^error=.*ambiguous/, 'a field given twice is an error');
my $twice = answer($Q, query_node('WAIT_BUYER_PAY'));
$twice =~ s/^\{/{"$Q": {"trade_status": "TRADE_SUCCESS"}, /;
like(interpret('query', 200, $twice), qr/^error=.*ambiguous/, 'a response given twice is an error');
like(interpret('query', 200, 'this is not json'), qr/^error=.*not valid JSON/, 'not JSON is an error');
like(interpret('query', 200, '{"sign": "x"}'), qr/^error=.*has no alipay_trade_query_response/,
	'an answer without the response is an error');
like(interpret('query', 200, answer($CL, '{"code": "10000", "msg": "Success"}')),
	qr/^error=.*has no alipay_trade_query_response/, 'a close response to a query is an error');
like(interpret('query', 500, answer($Q, query_node('TRADE_SUCCESS'))), qr/^error=HTTP 500/,
	'HTTP 500 is an error');
like(interpret('query', 404, answer($Q, query_node('TRADE_SUCCESS'))), qr/^error=unexpected HTTP 404/,
	'HTTP 404 is an error');
like(interpret('query', 0, 'connection refused'), qr/^error=connection refused/, 'a transport error is an error');

is(interpret('close', 200, answer($CL, '{"code": "10000", "msg": "Success", "out_trade_no": "u1", "trade_no": "2024"}')),
	"status=closed\nchannel_status=TRADE_CLOSED", 'close: code 10000 is closed');
is(interpret('close', 200, answer($CL, error_node('40004', 'ACQ.TRADE_STATUS_ERROR'))),
	"status=pending\nchannel_status=ACQ.TRADE_STATUS_ERROR",
	'close: ACQ.TRADE_STATUS_ERROR (paid or closed meanwhile) is pending: the core queries it again');
is(interpret('close', 200, answer($CL, error_node('40004', 'ACQ.TRADE_NOT_EXIST'))),
	"status=expired\nchannel_status=ACQ.TRADE_NOT_EXIST",
	'close: ACQ.TRADE_NOT_EXIST (the trade never existed) is expired: nothing to close');
like(interpret('close', 200, answer($CL, error_node('40004', 'ACQ.TRADE_NOT_EXIST'), nosign => 1)),
	qr/^error=.*unsigned.*ACQ\.TRADE_NOT_EXIST/, 'close: an unsigned ACQ.TRADE_NOT_EXIST is an error, never a status');
like(interpret('close', 200, answer($CL, error_node('40004', 'ACQ.SYSTEM_ERROR'))),
	qr/^error=Alipay refused to close the trade: code 40004 \(ACQ\.SYSTEM_ERROR\)/,
	'close: ACQ.SYSTEM_ERROR is an error (the close is retried)');
like(interpret('close', 200, answer($CL, '{"code": "10000", "msg": "Success"}', key => "$tmp/other_ali.key")),
	qr/^error=.*signature does not verify/, 'close: a signature by another key is an error');
like(interpret('close', 200, answer($Q, query_node('TRADE_SUCCESS'))),
	qr/^error=the Alipay answer has no alipay_trade_close_response/,
	'close: an answer of another method (a query response) is an error, never a status');

# ---------------------------------------------------------------- create_channel

# Tries create_channel with options (a SQL jsonb expression); returns the error.
sub channel_error
{
	my ($options) = @_;
	return sql_error("SELECT paysync.create_channel('bad', 'alipay', " . lit($GATEWAY) . ", $options)");
}

sub refused_naming
{
	my ($options, $option, $what, $pattern) = @_;
	my $err = channel_error($options) // '';
	like($err, qr/22023/, "$what: SQLSTATE 22023");
	like($err, qr/"$option"/, "$what: the error names $option");
	like($err, $pattern, "$what: the error says why") if $pattern;
	unlike($err, qr/MII|PRIVATE KEY-----\n[A-Za-z0-9+\/]{20}/, "$what: the error shows no key");
}

refused_naming(q{opts('app_priv_pem', 'ali_pub_pem') - 'app_id'}, 'app_id', 'no app_id', qr/needs option/);
refused_naming(q{opts('app_priv_pem', 'ali_pub_pem') || '{"app_id": "20 21"}'}, 'app_id', 'a bad app_id');
refused_naming(q{opts('app_priv_pem', 'ali_pub_pem') - 'app_private_key'}, 'app_private_key',
	'no app_private_key', qr/needs option/);
refused_naming(q{opts('app_priv_pem', 'ali_pub_pem') || '{"app_private_key": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7notakey"}'},
	'app_private_key', 'an app_private_key that does not parse', qr/invalid value for option/);
refused_naming(q{opts('app_pub_pem', 'ali_pub_pem')}, 'app_private_key',
	'a public key as app_private_key', qr/is a public key or certificate, not a private key/);
refused_naming(q{opts('ali_pub_bare', 'ali_pub_pem')}, 'app_private_key',
	'a bare base64 public key as app_private_key', qr/is a public key or certificate, not a private key/);
refused_naming(q{opts('app_priv_pem', 'ali_pub_pem') - 'alipay_public_key'}, 'alipay_public_key',
	'no alipay_public_key', qr/needs option/);
refused_naming(q{opts('app_priv_pem', 'ali_pub_pem') || '{"alipay_public_key": "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnotakey"}'},
	'alipay_public_key', 'an alipay_public_key that does not parse', qr/invalid value for option/);
refused_naming(q{opts('app_priv_pem', 'app_pub_pem')}, 'alipay_public_key',
	'the app public key as alipay_public_key', qr/not Alipay's/);
like(channel_error(q{opts('app_priv_pem', 'ali_pub_pem') || '{"sign_type": "RSA"}'}) // '',
	qr/unknown option "sign_type"/, 'an unknown option is an ERROR');
is(sql($node, "SELECT count(*) FROM paysync.channels"), '0', 'no refused channel was created');

# ---------------------------------------------------------------- end to end

sub create_channel
{
	my ($name, $options) = @_;
	sql($node, "SELECT paysync.create_channel('$name', 'alipay', " . lit($GATEWAY) . ", $options)");
}

create_channel('alipay', q{opts('app_priv_bare', 'ali_pub_bare')});    # bare base64, as Alipay hands them out
create_channel('alipay_pem', q{opts('app_priv_pem', 'ali_pub_pem')});
create_channel('alipay_pkcs1', q{opts('app_priv_pkcs1_bare', 'ali_pub_bare')});    # Alipay's key tool, non-Java
create_channel('alipay_pkcs1_pem', q{opts('app_priv_pkcs1_pem', 'ali_pub_pem')});
create_channel('alipay_keep', q{opts('app_priv_pem', 'ali_pub_pem') || '{"close_on_expiry": false}'});
create_channel('alipay_wrong_app', q{opts('other_priv_pem', 'ali_pub_pem')});
create_channel('alipay_wrong_ali', q{opts('app_priv_pem', 'other_ali_pub_pem')});
pass('channels with bare base64 and PEM keys, PKCS#8 and PKCS#1, are created');

my $STEPS = q{'{100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms}'::interval[]};
my $ONCE = q{'{100ms}'::interval[]};

sub track
{
	my ($id, $channel, $schedule, $amount) = @_;
	my $amount_sql = defined $amount ? "$amount, 'CNY'" : 'NULL, NULL';
	sql($node, 'SELECT 1 FROM paysync.track(' . lit($id) . ", '$channel', $amount_sql, $schedule)");
}

track('p1~W,W,S', 'alipay', $STEPS, 8888);
track('p2~F', 'alipay_pem', $STEPS, 8888);
track('k1~S', 'alipay_pkcs1', $STEPS, 8888);
track('k2~S', 'alipay_pkcs1_pem', $STEPS, 8888);
track('p3~W,C', 'alipay', $STEPS);
track('p4~N', 'alipay', q{'{100ms,1h}'::interval[]});
track('x1~W:c', 'alipay', $ONCE);
track('x2~W:p', 'alipay', $ONCE, 8888);
track('x3~W:z', 'alipay', $ONCE);
track('x4~N:e,c', 'alipay', $ONCE);
track('x5~W', 'alipay_keep', $ONCE);
track('x6~N:n', 'alipay', $ONCE);
track('s1~L', 'alipay', $STEPS, 8888);
track('m1~A', 'alipay', $STEPS, 8888);
track('v1~T', 'alipay', $ONCE);
track('v2~K', 'alipay', $ONCE);
track('v3~U', 'alipay', $ONCE);
track('v4~X', 'alipay', $ONCE);
track('v5~E', 'alipay', $ONCE);
track('v6~S', 'alipay_wrong_app', $ONCE);
track('v7~S', 'alipay_wrong_ali', $ONCE);

# pending, then paid
wait_payment_status($node, 'p1~W,W,S', 'succeeded');
is(events_of($node, 'p1~W,W,S'), 'pending>succeeded|TRADE_SUCCESS|poll|alipay', 'WAIT_BUYER_PAY then TRADE_SUCCESS: one event, source poll');
is(payment_row($node, 'p1~W,W,S', 'step || \'|\' || errors'), '3|0', 'two pending answers, then the paid one, no errors');
is_deeply([ methods_for($mock, 'p1~W,W,S') ], [ ('alipay.trade.query') x 3 ], 'three queries');

wait_payment_status($node, 'p2~F', 'succeeded');
is(payment_row($node, 'p2~F', 'channel_status'), 'TRADE_FINISHED', 'TRADE_FINISHED is succeeded (PEM keys)');

for my $id ('k1~S', 'k2~S')
{
	wait_payment_status($node, $id, 'succeeded');
	is(payment_row($node, $id, 'errors'), '0', "$id: requests signed with a PKCS#1 key verify at the gateway");
}

wait_payment_status($node, 'p3~W,C', 'closed');
is(events_of($node, 'p3~W,C'), 'pending>closed|TRADE_CLOSED|poll|alipay', 'TRADE_CLOSED is closed, source poll');

wait_for_sql($node, "SELECT step FROM paysync.payments WHERE payment_id = 'p4~N'", '1',
	'ACQ.TRADE_NOT_EXIST is answered');
is(payment_row($node, 'p4~N', "status || '|' || coalesce(channel_status, '') || '|' || errors"),
	'pending|ACQ.TRADE_NOT_EXIST|0', 'ACQ.TRADE_NOT_EXIST is pending, not an error');

# close on expiry
wait_payment_status($node, 'x1~W:c', 'closed');
is(events_of($node, 'x1~W:c'), 'pending>closed|TRADE_CLOSED|expiry|alipay', 'closed at Alipay on expiry: source expiry');
is_deeply([ methods_for($mock, 'x1~W:c') ], [ 'alipay.trade.query', 'alipay.trade.close' ],
	'one query, then alipay.trade.close');

wait_payment_status($node, 'x2~W:p', 'succeeded');
is(events_of($node, 'x2~W:p'), 'pending>succeeded|TRADE_SUCCESS|poll|alipay', 'paid meanwhile: succeeded');
is_deeply([ methods_for($mock, 'x2~W:p') ],
	[ 'alipay.trade.query', 'alipay.trade.close', 'alipay.trade.query' ],
	'the refused close is followed by a query');
is(payment_row($node, 'x2~W:p', 'errors'), '0', 'the refused close was no error: the query said what happened');

wait_payment_status($node, 'x3~W:z', 'closed');
is(events_of($node, 'x3~W:z'), 'pending>closed|TRADE_CLOSED|poll|alipay',
	'closed by itself meanwhile: closed, as the query said (source poll)');

wait_payment_status($node, 'x4~N:e,c', 'closed');
is_deeply([ methods_for($mock, 'x4~N:e,c') ],
	[ 'alipay.trade.query', 'alipay.trade.close', 'alipay.trade.close' ], 'a failed close is retried');
like(payment_row($node, 'x4~N:e,c', 'last_error'), qr/ACQ\.SYSTEM_ERROR/, 'the failed close was an error');
is(events_of($node, 'x4~N:e,c'), 'pending>closed|TRADE_CLOSED|expiry|alipay', 'then closed, source expiry');

wait_payment_status($node, 'x6~N:n', 'expired');
is(events_of($node, 'x6~N:n'), 'pending>expired|ACQ.TRADE_NOT_EXIST|expiry|alipay',
	'a trade nobody opened: the close answers ACQ.TRADE_NOT_EXIST, the payment is expired (source expiry)');
is_deeply([ methods_for($mock, 'x6~N:n') ], [ 'alipay.trade.query', 'alipay.trade.close' ],
	'... after one query and one close, no retry');
is(payment_row($node, 'x6~N:n', 'errors'), '0', '... and no error');

wait_payment_status($node, 's1~L', 'succeeded');
is(payment_row($node, 's1~L', 'errors'), '0', 'an answer sent with "\/" for "/" verifies end to end');

wait_payment_status($node, 'x5~W', 'expired');
is_deeply([ methods_for($mock, 'x5~W') ], ['alipay.trade.query'], 'close_on_expiry false: expired, no close');

# amount mismatch
wait_payment_status($node, 'm1~A', 'failed');
is(payment_row($node, 'm1~A', 'last_error'), 'amount mismatch: expected 8888 CNY, channel reports 100 CNY',
	'a different total_amount is failed with "amount mismatch"');

# verification failures are errors, never statuses
my %why = (
	'v1~T' => qr/signature does not verify/,
	'v2~K' => qr/signature does not verify/,
	'v3~U' => qr/not signed/,
	'v4~X' => qr/unknown Alipay trade_status "TRADE_WEIRD"/,
	'v5~E' => qr/HTTP 500/,
	'v6~S' => qr/isv\.invalid-signature/,
	'v7~S' => qr/signature does not verify with alipay_public_key/);
for my $id (sort keys %why)
{
	wait_for_sql($node, 'SELECT errors >= 2 FROM paysync.payments WHERE payment_id = ' . lit($id),
		't', "$id: answered with errors, retried");
	is(payment_row($node, $id, 'status'), 'pending', "$id: still pending");
	is(events_of($node, $id), '', "$id: no event");
	like(payment_row($node, $id, 'last_error'), $why{$id}, "$id: last_error says why");
}

# ---------------------------------------------------------------- certificate mode

# Certificates made here with openssl: a root CA signed sha256WithRSA, an
# older root signed sha1WithRSA, an EC root standing in for Alipay's SM2
# root (which the root SN leaves out), and the application's and "Alipay's"
# certificates issued by the first root, with serials beyond 64 bits.
make_rsa_key($tmp, $_) for qw(root root1);
run_openssl([ 'req', '-x509', '-new', '-key', "$tmp/root.key", '-sha256', '-days', '2',
	'-set_serial', '0x2F1E3D4C5B6A79880123456789ABCDEF',
	'-subj', '/C=CN/O=Ant Financial/OU=Certification Authority/CN=Mock Root Class 2 R1',
	'-out', "$tmp/root.crt" ]);
run_openssl([ 'req', '-x509', '-new', '-key', "$tmp/root1.key", '-sha1', '-days', '2',
	'-set_serial', '7', '-subj', '/C=CN/O=Mock Old Root/CN=Mock Root Class 1',
	'-out', "$tmp/root1.crt" ]);
run_openssl([ 'ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', "$tmp/ec.key" ]);
run_openssl([ 'req', '-x509', '-new', '-key', "$tmp/ec.key", '-sha256', '-days', '2',
	'-subj', '/C=CN/O=Mock/CN=Mock EC Root', '-out', "$tmp/ec.crt" ]);
for my $who ([ 'app', '0x00E4B5F3A2C1D0998877665544332211', "/C=CN/O=Shop/OU=Alipay/CN=$APP_ID" ],
	[ 'ali', '0x1122334455667788990A', '/C=CN/O=Alipay.com Co Ltd/OU=Alipay/CN=Alipay Public Key' ])
{
	my ($name, $serial, $subject) = @$who;
	run_openssl([ 'req', '-new', '-key', "$tmp/$name.key", '-subj', $subject,
		'-out', "$tmp/$name.csr" ]);
	run_openssl([ 'x509', '-req', '-in', "$tmp/$name.csr", '-CA', "$tmp/root.crt",
		'-CAkey', "$tmp/root.key", '-set_serial', $serial, '-sha256', '-days', '2',
		'-out', "$tmp/${name}_cert.crt" ]);
}
spew_file("$tmp/root_chain.crt",
	join('', map { slurp_file("$tmp/$_.crt") } qw(root1 ec root)));

# Alipay's SN of a certificate, computed here from openssl's printout: MD5
# of the issuer DN as RFC 2253 writes it and the serial in decimal.
sub expected_sn
{
	my ($file) = @_;
	my $issuer = run_openssl([ 'x509', '-in', $file, '-noout', '-issuer', '-nameopt', 'RFC2253' ]);
	my $serial = run_openssl([ 'x509', '-in', $file, '-noout', '-serial' ]);
	$issuer =~ s/^issuer=\s*//;
	chomp $issuer;
	$serial =~ s/^serial=//;
	chomp $serial;
	return md5_hex($issuer . Math::BigInt->from_hex("0x$serial")->bstr);
}

# The signature algorithm of a certificate.
sub signature_algorithm
{
	my ($file) = @_;
	my $text = run_openssl([ 'x509', '-in', $file, '-noout', '-text' ]);
	return $text =~ /Signature Algorithm: (\S+)/ ? $1 : '';
}
my $APP_CERT_SN = expected_sn("$tmp/app_cert.crt");
my @rsa_roots = grep { signature_algorithm("$tmp/$_.crt") =~ /^sha(?:1|256)WithRSAEncryption$/ }
  qw(root1 ec root);
is("@rsa_roots", 'root1 root', '(the RSA roots are the sha1 and the sha256 one, not the EC one)');
my $ROOT_CERT_SN = join '_', map { expected_sn("$tmp/$_.crt") } @rsa_roots;
like($APP_CERT_SN, qr/^[0-9a-f]{32}$/, '(the expected app SN is 32 hex digits)');

for my $name (qw(app_cert ali_cert root_chain ec))
{
	sql($node, 'INSERT INTO test_keys SELECT ' . lit($name) . ', pg_read_file(' . lit("$tmp/$name.crt") . ')');
}
sql($node, <<"EOF");
CREATE FUNCTION cert_opts(app_cert text, ali_cert text, root text) RETURNS jsonb LANGUAGE sql AS \$\$
  SELECT jsonb_strip_nulls(jsonb_build_object('app_id', '$APP_ID',
    'app_private_key', (SELECT value FROM test_keys WHERE name = 'app_priv_pkcs1_bare'),
    'app_cert', (SELECT value FROM test_keys WHERE name = app_cert),
    'alipay_cert', (SELECT value FROM test_keys WHERE name = ali_cert),
    'alipay_root_cert', (SELECT value FROM test_keys WHERE name = root)))
\$\$;
EOF

my $certmock = start_mock_program('mock_alipay', '--app-id', $APP_ID,
	'--app-public-key', "$tmp/app.pub", '--alipay-private-key', "$tmp/ali.key",
	'--app-cert-sn', $APP_CERT_SN, '--alipay-root-cert-sn', $ROOT_CERT_SN);
my $CERT_GATEWAY = "http://127.0.0.1:$certmock->{port}/gateway.do";
{
	my $req = test_fields(test_request($node, driver => 'alipay',
		options => q{cert_opts('app_cert', 'ali_cert', 'root_chain')}, base_url => $CERT_GATEWAY,
		payment_id => 'C-1', kind => 'query'));
	my ($base, $query) = split /\?/, $req->{url}, 2;
	my %p;
	for my $pair (split(/&/, $query), split(/&/, $req->{body}))
	{
		my ($k, $v) = split /=/, $pair, 2;
		$p{ form_decode($k) } = form_decode($v // '');
	}
	is($p{app_cert_sn}, $APP_CERT_SN,
		'certificate mode: app_cert_sn is MD5(issuer DN + decimal serial), as computed here');
	is($p{alipay_root_cert_sn}, $ROOT_CERT_SN,
		'... alipay_root_cert_sn joins the SNs of the RSA roots with "_", the EC root left out');
	ok(request_verifies(\%p, "$tmp/app.pub"), '... and both are signed with the other parameters');
	is(test_interpret($node, driver => 'alipay',
			options => q{cert_opts('app_cert', 'ali_cert', 'root_chain')},
			kind => 'query', status => 200, body => answer($Q, query_node('WAIT_BUYER_PAY'))),
		"status=pending\nchannel_status=WAIT_BUYER_PAY", '... answers verify with the key of alipay_cert');
	like(test_interpret($node, driver => 'alipay',
			options => q{cert_opts('app_cert', 'ali_cert', 'root_chain')},
			kind => 'query', status => 200,
			body => answer($Q, query_node('WAIT_BUYER_PAY'), key => "$tmp/other_ali.key")),
		qr/^error=.*does not verify with alipay_cert/, '... and not with another key');
}
refused_naming(q{cert_opts('app_cert', 'ali_cert', NULL)}, 'alipay_root_cert',
	'certificate mode without alipay_root_cert', qr/needs option/);
refused_naming(q{cert_opts('app_cert', 'ali_cert', 'root_chain') || jsonb_build_object('alipay_public_key', (SELECT value FROM test_keys WHERE name = 'ali_pub_pem'))},
	'alipay_public_key', 'certificates and alipay_public_key together', qr/not both/);
refused_naming(q{cert_opts('ali_cert', 'ali_cert', 'root_chain')}, 'app_cert',
	'an app_cert that is not the certificate of app_private_key', qr/not the one of "app_private_key"/);
refused_naming(q{cert_opts('app_cert', 'ali_cert', 'ec')}, 'alipay_root_cert',
	'a root chain without an RSA certificate', qr/no certificate signed with RSA/);
refused_naming(q{cert_opts('app_cert', 'ali_cert', 'root_chain') || jsonb_build_object('app_cert', 'garbage')},
	'app_cert', 'an app_cert that is not a certificate', qr/not a PEM certificate/);
sql($node, "SELECT paysync.create_channel('alipay_cert', 'alipay', " . lit($CERT_GATEWAY)
	  . q{, cert_opts('app_cert', 'ali_cert', 'root_chain'))});
sql($node, "SELECT paysync.create_channel('alipay_cert_key_mode', 'alipay', " . lit($CERT_GATEWAY)
	  . q{, opts('app_priv_pem', 'ali_pub_pem'))});
track('cm1~W,S', 'alipay_cert', $STEPS, 8888);
track('cm2~S', 'alipay_cert_key_mode', $ONCE, 8888);
wait_payment_status($node, 'cm1~W,S', 'succeeded');
is(payment_row($node, 'cm1~W,S', 'errors'), '0',
	'certificate mode end to end: the gateway accepts the SNs, answers verify with alipay_cert');
wait_for_sql($node, q{SELECT errors >= 1 FROM paysync.payments WHERE payment_id = 'cm2~S'}, 't',
	'key mode against an application in certificate mode: an error');
like(payment_row($node, 'cm2~S', 'last_error'), qr/isv\.invalid-app-cert-sn/,
	'... the gateway wants app_cert_sn');
# ---------------------------------------------------------------- refunds

{
	my $RQ = 'alipay_trade_fastpay_refund_query_response';
	my $refund_node = sub {
		my ($status, %o) = @_;
		my $id = $o{id} // 'R-1';
		my $amount = $o{amount} // '10.00';
		return qq({"code": "10000", "msg": "Success"}) unless defined $status;
		return qq({"code" : "10000", "msg": "Success", "out_request_no": "$id", "out_trade_no": "T-1", )
		  . qq("refund_amount": "$amount", "refund_status": "$status", "total_amount": "88.88", "trade_no": "2024"});
	};
	my $ri = sub {
		my ($id, $body, %o) = @_;
		return test_interpret($node, driver => 'alipay',
			options => $o{options} // q{opts('app_priv_pem', 'ali_pub_pem')},
			kind => 'refund', status => $o{http} // 200, body => $body, payment_id => $id);
	};

	# the request: alipay.trade.fastpay.refund.query, signed as the payment query
	my $req = test_fields(test_request($node, driver => 'alipay',
		options => q{opts('app_priv_bare', 'ali_pub_bare')}, base_url => $GATEWAY,
		payment_id => qq{T-1 "q"}, refund_id => 'R-1/\\x', kind => 'refund'));
	my ($base, $query) = split /\?/, $req->{url}, 2;
	my %p;
	for my $pair (split(/&/, $query), split(/&/, $req->{body}))
	{
		my ($k, $v) = split /=/, $pair, 2;
		$p{ form_decode($k) } = form_decode($v // '');
	}
	is($p{method}, 'alipay.trade.fastpay.refund.query', 'refund query: alipay.trade.fastpay.refund.query');
	is_deeply(JSON::PP->new->decode($p{biz_content}), { out_trade_no => qq{T-1 "q"}, out_request_no => 'R-1/\\x' },
		'... biz_content: out_trade_no the payment, out_request_no the refund, JSON-escaped');
	ok(request_verifies(\%p, "$tmp/app.pub"), '... signed with the application key (openssl verifies)');
	ok(!request_verifies({ %p, biz_content => '{"out_trade_no":"T-1","out_request_no":"R-2"}' }, "$tmp/app.pub"),
		'... over biz_content');

	is($ri->('R-1', answer($RQ, $refund_node->('REFUND_SUCCESS'))),
		"status=succeeded\nchannel_status=REFUND_SUCCESS\npaid_amount=1000\npaid_currency=CNY",
		'REFUND_SUCCESS: succeeded, refund_amount 10.00 yuan as 1000 CNY');
	is($ri->('R-1', answer($RQ, $refund_node->('REFUND_SUCCESS', amount => '0.01'))),
		"status=succeeded\nchannel_status=REFUND_SUCCESS\npaid_amount=1\npaid_currency=CNY",
		'another refund_amount is carried as it is, for the amount check');
	is($ri->('R-1', answer($RQ, $refund_node->(undef))), 'status=pending',
		'a success answer without refund_status (not received, not yet, or failed): pending');
	like($ri->('R-1', answer($RQ, $refund_node->('REFUND_PROCESSING'))),
		qr/^error=unknown Alipay refund_status "REFUND_PROCESSING"$/, 'another refund_status: an error');
	like($ri->('R-1', answer($RQ, $refund_node->('REFUND_SUCCESS', id => 'R-2'))),
		qr/^error=the Alipay answer is about another out_request_no than the refund asked about$/,
		'a signed answer about another refund: an error');
	like($ri->('R-1', answer($RQ, $refund_node->('REFUND_SUCCESS', amount => '10.001'))),
		qr/^error=.*amount "10\.001" is not a valid CNY amount/, 'a refund_amount with three decimals: an error');
	like($ri->('R-1', answer($RQ, $refund_node->('REFUND_SUCCESS'), key => "$tmp/other_ali.key")),
		qr/^error=.*signature does not verify with alipay_public_key/, 'a refund answer signed by another key: an error');
	like($ri->('R-1', answer($RQ, $refund_node->(undef), sent => $refund_node->('REFUND_SUCCESS'))),
		qr/^error=.*signature does not verify/, 'a tampered refund answer: an error');
	like($ri->('R-1', answer($RQ, $refund_node->('REFUND_SUCCESS'), nosign => 1)),
		qr/^error=the Alipay answer is not signed$/, 'an unsigned refund answer: an error');
	like($ri->('R-1', answer($RQ, error_node('40004', 'ACQ.TRADE_NOT_EXIST'))),
		qr/^error=Alipay refused the refund query: code 40004 \(ACQ\.TRADE_NOT_EXIST\)/,
		'ACQ.TRADE_NOT_EXIST: an error (never an end)');
	like($ri->('R-1', answer($Q, query_node('TRADE_SUCCESS'))),
		qr/^error=the Alipay answer has no alipay_trade_fastpay_refund_query_response$/,
		'a trade query answer in place of a refund query answer: an error');

	# against the mock, which verifies requests and signs its answers
	my %want = (
		'M1~S' => "status=succeeded\nchannel_status=REFUND_SUCCESS\npaid_amount=1000\npaid_currency=CNY",
		'M2~N' => 'status=pending',
		'M3~A' => "status=succeeded\nchannel_status=REFUND_SUCCESS\npaid_amount=100\npaid_currency=CNY",
	);
	my %bad = (
		'M4~X' => qr/^error=unknown Alipay refund_status "REFUND_WEIRD"$/,
		'M5~O' => qr/^error=the Alipay answer is about another out_request_no/,
		'M6~T' => qr/^error=.*signature does not verify/,
		'M7~K' => qr/^error=.*signature does not verify/,
		'M8~U' => qr/^error=the Alipay answer is not signed$/,
		'M9~Q' => qr/^error=Alipay refused the refund query: code 40004 \(ACQ\.TRADE_NOT_EXIST\)/,
		'M10~E' => qr/^error=HTTP 500 from the channel$/,
	);
	for my $id (sort(keys %want), sort(keys %bad))
	{
		my ($status, $headers, $answer) = send_request(test_fields(test_request($node,
			driver => 'alipay', options => q{opts('app_priv_pem', 'ali_pub_pem')},
			base_url => $GATEWAY, payment_id => 'T-1', refund_id => $id, kind => 'refund')));
		my $got = $ri->($id, $answer, http => $status);
		if ($want{$id})
		{
			is($got, $want{$id}, "mock_alipay: refund $id as the driver built and read it");
		}
		else
		{
			like($got, $bad{$id}, "mock_alipay: refund $id is an error");
		}
	}
	my ($status, $headers, $answer) = send_request(test_fields(test_request($node,
		driver => 'alipay', options => q{opts('other_priv_pem', 'ali_pub_pem')},
		base_url => $GATEWAY, payment_id => 'T-1', refund_id => 'M1~S', kind => 'refund')));
	like($ri->('M1~S', $answer, http => $status),
		qr/^error=Alipay refused the refund query: code 40002 \(isv\.invalid-signature\)/,
		'mock_alipay: a refund query signed with another key is refused');

	# certificate mode: the refund query carries the SNs, answers verify with alipay_cert
	($status, $headers, $answer) = send_request(test_fields(test_request($node,
		driver => 'alipay', options => q{cert_opts('app_cert', 'ali_cert', 'root_chain')},
		base_url => $CERT_GATEWAY, payment_id => 'T-1', refund_id => 'C1~S', kind => 'refund')));
	is($ri->('C1~S', $answer, http => $status, options => q{cert_opts('app_cert', 'ali_cert', 'root_chain')}),
		"status=succeeded\nchannel_status=REFUND_SUCCESS\npaid_amount=1000\npaid_currency=CNY",
		'certificate mode: the refund query is accepted by the gateway and its answer verifies with alipay_cert');
	($status, $headers, $answer) = send_request(test_fields(test_request($node,
		driver => 'alipay', options => q{cert_opts('app_cert', 'ali_cert', 'root_chain')},
		base_url => $CERT_GATEWAY, payment_id => 'T-1', refund_id => 'C2~K', kind => 'refund')));
	like($ri->('C2~K', $answer, http => $status, options => q{cert_opts('app_cert', 'ali_cert', 'root_chain')}),
		qr/^error=.*signature does not verify with alipay_cert/, '... and one signed by another key does not');
}

# Notifications naming a refund (out_biz_no): verified, then not believed
# but checked (verified false, refund_id set).
{
	my $pct = sub { my ($v) = @_; $v =~ s/([^A-Za-z0-9\-_.~])/sprintf('%%%02X', ord $1)/ge; $v };
	my $notification = sub {
		my (%o) = @_;
		my %p = (notify_type => 'trade_status_sync', notify_id => 'ac05099524730693a8b330c5ecf72da9786',
			notify_time => '2024-11-26 15:45:58', charset => 'utf-8', version => '1.0',
			app_id => $APP_ID, out_trade_no => 'T-1', trade_no => '2024112622001404500000000001',
			trade_status => $o{trade_status} // 'TRADE_SUCCESS', total_amount => '88.88',
			gmt_refund => '2024-11-27 10:00:00.123', refund_fee => '10.00',
			defined $o{out_biz_no} ? (out_biz_no => $o{out_biz_no}) : ());
		my $content = join '&', map { "$_=$p{$_}" } sort keys %p;
		my $sign = openssl_sign($o{key} // "$tmp/ali.key", $content);
		$p{out_biz_no} = $o{forge_biz_no} if defined $o{forge_biz_no};
		return join('&', map { "$_=" . $pct->($p{$_}) } sort keys %p)
		  . '&sign_type=RSA2&sign=' . $pct->($sign);
	};
	my ($text, $err) = test_notification($node, driver => 'alipay',
		options => q{opts('app_priv_pem', 'ali_pub_pem')}, body => $notification->(out_biz_no => 'R-1'));
	is($text, "verified=false\npayment_id=T-1\nrefund_id=R-1\nreply_status=200",
		'a signed trade notification naming out_biz_no: unverified (checking), about refund R-1 of T-1')
	  or diag($err);
	($text, $err) = test_notification($node, driver => 'alipay',
		options => q{opts('app_priv_pem', 'ali_pub_pem')},
		body => $notification->(out_biz_no => 'R-1', trade_status => 'TRADE_CLOSED'));
	is($text, "verified=false\npayment_id=T-1\nrefund_id=R-1\nreply_status=200",
		'... also for a full refund (TRADE_CLOSED): the trade status is never read as the refund\'s');
	($text, $err) = test_notification($node, driver => 'alipay',
		options => q{opts('app_priv_pem', 'ali_pub_pem')}, body => $notification->());
	is($text, "verified=true\npayment_id=T-1\nstatus=succeeded\nchannel_status=TRADE_SUCCESS\npaid_amount=8888\npaid_currency=CNY\nreply_status=200",
		'(one without out_biz_no is the payment\'s notification, as before)');
	for my $forged (
		[ 'signed by another key', [ key => "$tmp/other_ali.key" ] ],
		[ 'naming another refund than it was signed for', [ forge_biz_no => 'R-2' ] ])
	{
		my ($what, $args) = @$forged;
		($text, $err) = test_notification($node, driver => 'alipay',
			options => q{opts('app_priv_pem', 'ali_pub_pem')},
			body => $notification->(out_biz_no => 'R-1', @$args));
		ok(!defined $text, "a refund notification $what is refused");
		like($err, qr/28000: notification for channel "test" refused.*sign does not verify/s,
			'... with SQLSTATE 28000');
	}
}

stop_mock($certmock);

# ---------------------------------------------------------------- secrets

sql($node, 'DROP TABLE test_keys CASCADE');

# True if text holds a line of the application private key.
sub has_key
{
	my ($text) = @_;
	return scalar grep { index($text, $_) >= 0 } @APP_KEY_LINES;
}
ok(!has_key(sql($node, "SELECT string_agg(coalesce(last_error, '') || ' ' || coalesce(channel_status, '') || ' ' || coalesce(metadata::text, ''), ' ') FROM paysync.payments")),
	'no key in paysync.payments');
ok(!has_key(sql($node, "SELECT string_agg(t::text, ' ') FROM paysync.events t")), 'no key in paysync.events');
ok(has_key(sql($node, "SELECT string_agg(options::text, ' ') FROM paysync.channels")),
	'(the key is in paysync.channels, so the search would find it)');
$node->stop;
ok(!has_key(slurp_file($node->logfile)), 'no key in the server log');

stop_mock($mock);
done_testing();
