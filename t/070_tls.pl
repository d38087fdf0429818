# 070_tls.pl: HTTPS as channels speak it (0.4).  A throwaway CA and
# certificates made here with openssl, nginx (run as this user, with its own
# prefix in the test's directory) serving TLS in front of the mock channels
# or answering itself:
# - create_channel checks ca_cert, client_cert and client_key (a PEM that
#   does not parse, one without the other, a key that is not the
#   certificate's: ERRORs naming the option, never showing the key);
# - every driver (http_json, stripe, wechatpay, alipay, paypal) checks a
#   payment end to end over HTTPS trusting its ca_cert;
# - each failure class (untrusted, expired, wrong host name, no client
#   certificate, plain HTTP on a TLS port) is an error naming the TLS
#   problem, never a status, and counts for the circuit breaker;
# - mutual TLS: refused without the client certificate, answered with it;
# - HTTP/2: 2,000 checks over at most 4 connections (nginx's $connection);
# - the channel's CA is parsed once by the worker for 256 new connections
#   (nginx closing each after one request), which resume TLS sessions;
# - the system store (SSL_CERT_FILE here) is read again on a reload;
# - client_key nowhere in the server log or paysync's tables but
#   paysync.channels.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $dir = PostgreSQL::Test::Utils::tempdir;

# ---------------------------------------------------------------- certificates

# A CA: $dir/$name.key and a self-signed $dir/$name.crt.
sub make_ca
{
	my ($name) = @_;
	make_rsa_key($dir, $name);
	run_openssl([ 'req', '-x509', '-new', '-key', "$dir/$name.key", '-sha256', '-days', '2',
		'-subj', "/CN=paysync test $name", '-out', "$dir/$name.crt" ]);
}

# A certificate $dir/$name.crt for key $dir/$name.key, issued by CA $ca,
# naming $san (subjectAltName), valid for $days days (negative: expired).
sub make_cert
{
	my ($name, $ca, $san, $days, $usage) = @_;
	make_rsa_key($dir, $name);
	run_openssl([ 'req', '-new', '-key', "$dir/$name.key", '-subj', "/CN=$name",
		'-out', "$dir/$name.csr" ]);
	spew_file("$dir/$name.ext",
		"subjectAltName = $san\nextendedKeyUsage = $usage\nbasicConstraints = CA:FALSE\n");
	run_openssl([ 'x509', '-req', '-in', "$dir/$name.csr", '-CA', "$dir/$ca.crt",
		'-CAkey', "$dir/$ca.key", '-set_serial', int(rand(1 << 30)), '-sha256',
		'-days', $days, '-extfile', "$dir/$name.ext", '-out', "$dir/$name.crt" ]);
}

make_ca('ca');
make_ca('other_ca');
make_ca('client_ca');
make_cert('server', 'ca', 'IP:127.0.0.1, DNS:localhost', 2, 'serverAuth');
make_cert('expired', 'ca', 'IP:127.0.0.1', -1, 'serverAuth');
make_cert('wronghost', 'ca', 'DNS:pay.example.com', 2, 'serverAuth');
make_cert('stranger', 'other_ca', 'IP:127.0.0.1', 2, 'serverAuth');
make_cert('client', 'client_ca', 'DNS:paysync-client', 2, 'clientAuth');
make_rsa_key($dir, 'other_client');

# The private keys' bodies, to look for in logs and tables.
my @key_lines = grep { length > 40 && !/-----/ } split /\n/, slurp_file("$dir/client.key");

# ---------------------------------------------------------------- mocks and nginx

my $STRIPE_KEY = 'sk_test_' . join '', map { ('A' .. 'Z')[ rand 26 ] } 1 .. 20;
my $MCHID = '1900009191';
my $MERCHANT_SERIAL = '3775B6A45ACD588826D15E583A95F5DD2B0A1B2C';
my $PLATFORM_SERIAL = '5157F09EFDC096DE15EBE81A47057A7232F1B8E1';
my $APP_ID = '2021000000000001';
my $CLIENT_ID = 'AYpaysync-tls-client';
my $PAYPAL_SECRET = 'EKsecret_TLS_mock_4d1e';
make_rsa_key($dir, $_) for qw(merchant platform app ali);

my %mock = (
	http_json => start_mock(),
	stripe => start_mock_program('mock_stripe', '--secret-key', $STRIPE_KEY),
	wechatpay => start_mock_program('mock_wechatpay', '--mchid', $MCHID,
		'--merchant-serial', $MERCHANT_SERIAL, '--merchant-public-key', "$dir/merchant.pub",
		'--platform-private-key', "$dir/platform.key", '--platform-serial', $PLATFORM_SERIAL,
		'--amount', '100'),
	alipay => start_mock_program('mock_alipay', '--app-id', $APP_ID,
		'--app-public-key', "$dir/app.pub", '--alipay-private-key', "$dir/ali.key"),
	paypal => start_mock_program('mock_paypal', '--client-id', $CLIENT_ID,
		'--client-secret', $PAYPAL_SECRET),
);
END
{
	for my $m (values %mock)
	{
		eval { stop_mock($m) } if $m && $m->{handle};
	}
}

my $ngx = "$dir/nginx";
mkdir $ngx;
my %port = map { $_ => PostgreSQL::Test::Cluster::get_free_port() }
  qw(http_json stripe wechatpay alipay paypal expired wronghost stranger mtls h2 h1 s_server plain);

# A TLS server block: $name's port, certificate $cert, then @lines.
sub server_block
{
	my ($name, $cert, $http2, @lines) = @_;
	my $h2 = $http2 ? ' http2' : '';
	return "	server {
		listen 127.0.0.1:$port{$name} ssl$h2;
		ssl_certificate $dir/$cert.crt;
		ssl_certificate_key $dir/$cert.key;
		default_type application/json;
		" . join("\n\t\t", @lines) . "
	}\n";
}
my $paid = q{location / { return 200 '{"status":"PAID"}'; }};
my $conf = "	log_format tls '\$server_port \$connection \$connection_requests \$server_protocol \$ssl_session_reused \$status \$request_uri';
	access_log $ngx/access.log tls;
	keepalive_requests 100000;
	keepalive_timeout 300s;
	ssl_session_cache shared:tls:1m;
";
$conf .= server_block($_, 'server', 1,
	"location / { proxy_pass http://127.0.0.1:$mock{$_}{port}; }")
  for qw(http_json stripe wechatpay alipay paypal);
$conf .= server_block('expired', 'expired', 1, $paid);
$conf .= server_block('wronghost', 'wronghost', 1, $paid);
$conf .= server_block('stranger', 'stranger', 1, $paid);
$conf .= server_block('mtls', 'server', 1, "ssl_client_certificate $dir/client_ca.crt;",
	'ssl_verify_client on;', $paid);
$conf .= server_block('h2', 'server', 1, $paid);
# HTTP/1.1 only, one request per connection: every check a new handshake
$conf .= server_block('h1', 'server', 0, 'keepalive_requests 1;', $paid);
# plain HTTP (nginx answers a TLS hello with a 400 in plain HTTP)
$conf .= "	server { listen 127.0.0.1:$port{plain}; $paid }\n";
start_nginx($ngx, $conf);
# openssl's own server, refusing a handshake without a client certificate
# (nginx completes it and answers 400)
my $s_server = IPC::Run::start(
	[ 'openssl', 's_server', '-accept', "127.0.0.1:$port{s_server}", '-cert', "$dir/server.crt",
	  '-key', "$dir/server.key", '-CAfile', "$dir/client_ca.crt", '-Verify', '1', '-www', '-quiet' ],
	'<', \undef, '>', '/dev/null', '2>', '/dev/null');
END
{
	eval { $s_server->kill_kill } if $s_server;
}

# nginx is up when its ports answer
for (1 .. 100)
{
	last if `curl -s -o /dev/null -w '%{http_code}' --cacert $dir/ca.crt https://127.0.0.1:$port{h2}/x` eq '200';
	select(undef, undef, undef, 0.1);
}

# The access log's lines for a port: [port, connection, requests, protocol,
# session reused, status, uri].
sub access_lines
{
	my ($name) = @_;
	kill 'USR1', do { my $p = slurp_file("$ngx/nginx.pid"); chomp $p; $p };
	select(undef, undef, undef, 0.3);
	return grep { $_->[0] == $port{$name} }
	  map { [ split / / ] } split /\n/, (slurp_file("$ngx/access.log") // '');
}

# ---------------------------------------------------------------- the node

# The system store: a file of the test's (SSL_CERT_FILE in the server's
# environment), first with a CA that issued none of the servers' certificates.
spew_file("$dir/system.pem", slurp_file("$dir/other_ca.crt"));
$ENV{SSL_CERT_FILE} = "$dir/system.pem";

# Every statement and debug1 message logged (a key logged anywhere shows),
# with the process type, to tell the worker's lines apart.
my $node = new_paysync_node('tls', conf => "log_min_messages = debug1
log_statement = 'all'
log_line_prefix = '%m [%p] %b '
paysync.request_timeout = '5s'
");

# create_channel; returns (exit code, stderr).
sub try_channel
{
	my ($name, $driver, $url, $options) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT paysync.create_channel('$name', '$driver', '$url', $options)");
	return ($ret, $err);
}

sub file_sql { return "pg_read_file('$dir/$_[0]')"; }

my $CA = file_sql('ca.crt');
my $CLIENT = "'client_cert', " . file_sql('client.crt') . ", 'client_key', " . file_sql('client.key');

# ---------------------------------------------------------------- create_channel

{
	my $url = "https://127.0.0.1:$port{h2}";
	my @refused = (
		[ q{jsonb_build_object('ca_cert', 'not a certificate')}, 'ca_cert', qr/no PEM certificate/,
		  'a ca_cert without a certificate' ],
		[ q{jsonb_build_object('ca_cert', '-----BEGIN CERTIFICATE-----' || chr(10) || 'bm90IGEgY2VydA==' || chr(10) || '-----END CERTIFICATE-----' || chr(10))},
		  'ca_cert', qr/does not parse/, 'a ca_cert whose PEM does not parse' ],
		[ "jsonb_build_object('ca_cert', " . file_sql('client.key') . ')', 'ca_cert', qr/no PEM certificate/,
		  'a private key as ca_cert' ],
		[ "jsonb_build_object('client_cert', " . file_sql('client.crt') . ')', 'client_cert',
		  qr/needs option "client_key"/, 'client_cert without client_key' ],
		[ "jsonb_build_object('client_key', " . file_sql('client.key') . ')', 'client_key',
		  qr/needs option "client_cert"/, 'client_key without client_cert' ],
		[ "jsonb_build_object('client_cert', " . file_sql('client.crt') . ", 'client_key', " . file_sql('other_client.key') . ')',
		  'client_key', qr/not the key of its client_cert/, 'a client_key that is not the certificate\'s' ],
		[ "jsonb_build_object('client_cert', " . file_sql('client.crt') . ", 'client_key', replace(" . file_sql('client.key') . ", 'A', 'B'))",
		  'client_key', qr/not an unencrypted PEM private key/, 'a client_key that does not parse' ],
		[ "jsonb_build_object('client_cert', " . file_sql('client.key') . ", 'client_key', " . file_sql('client.key') . ')',
		  'client_cert', qr/not a PEM certificate/, 'a key as client_cert' ],
		[ q{jsonb_build_object('ca_cert', 12)}, 'ca_cert', qr/must be a JSON string/, 'a ca_cert that is not text' ],
	);
	for my $r (@refused)
	{
		my ($options, $option, $why, $what) = @$r;
		my ($ret, $err) = try_channel('bad', 'http_json', $url, $options);
		isnt($ret, 0, "$what: refused");
		like($err, qr/22023/, "$what: SQLSTATE 22023");
		like($err, qr/"$option"/, "$what: the error names $option");
		like($err, $why, "$what: the error says why");
		unlike($err, qr/\Q$_\E/, "$what: the error shows no key") for $key_lines[1];
	}
	is($node->safe_psql('postgres', 'SELECT count(*) FROM paysync.channels'), '0',
		'no refused channel was created');
	like((try_channel('bad', 'http_json', $url, q{jsonb_build_object('verify', false)}))[1],
		qr/unknown option "verify"/, 'there is no option turning verification off');
}

# ---------------------------------------------------------------- every driver over HTTPS

my $STATUS_OPTS = q{'path', '/pay/{payment_id}', 'status_map', '} . STATUS_MAP . q{'::jsonb};
sub create
{
	my ($name, $driver, $url, $options) = @_;
	$node->safe_psql('postgres',
		"SELECT paysync.create_channel('$name', '$driver', '$url', $options)");
}
create('tls_json', 'http_json', "https://127.0.0.1:$port{http_json}",
	"jsonb_build_object($STATUS_OPTS, 'ca_cert', $CA)");
create('tls_stripe', 'stripe', "https://127.0.0.1:$port{stripe}",
	"jsonb_build_object('secret_key', 'sk_test_' || upper('" . lc(substr($STRIPE_KEY, 8)) . "'), 'ca_cert', $CA)");
create('tls_wechatpay', 'wechatpay', "https://127.0.0.1:$port{wechatpay}",
	"jsonb_build_object('mchid', '$MCHID', 'merchant_serial_no', '$MERCHANT_SERIAL', "
	  . "'merchant_private_key', " . file_sql('merchant.key') . ", 'platform_public_key', "
	  . file_sql('platform.pub') . ", 'platform_serial', '$PLATFORM_SERIAL', 'ca_cert', $CA)");
create('tls_alipay', 'alipay', "https://127.0.0.1:$port{alipay}/gateway.do",
	"jsonb_build_object('app_id', '$APP_ID', 'app_private_key', " . file_sql('app.key')
	  . ", 'alipay_public_key', " . file_sql('ali.pub') . ", 'ca_cert', $CA)");
create('tls_paypal', 'paypal', "https://127.0.0.1:$port{paypal}",
	"jsonb_build_object('client_id', '$CLIENT_ID', 'client_secret', 'EKsecret_' || upper('tls') || '_mock_4d1e', 'ca_cert', $CA)");

$node->safe_psql('postgres', q{
SELECT paysync.track('json~P,S', 'tls_json', schedule => '{200ms,200ms,200ms,1h}');
SELECT paysync.track('pi_tls~P,S1000', 'tls_stripe', 1000, 'USD', '{200ms,200ms,200ms,1h}');
SELECT paysync.track('wx_tls~N,S', 'tls_wechatpay', 100, 'CNY', '{200ms,200ms,200ms,1h}');
SELECT paysync.track('ali_tls~W,S', 'tls_alipay', 8888, 'CNY', '{200ms,200ms,200ms,1h}');
SELECT paysync.track('pp_tls~C,P', 'tls_paypal', 1000, 'USD', '{200ms,200ms,200ms,1h}');
});
for my $id ('json~P,S', 'pi_tls~P,S1000', 'wx_tls~N,S', 'ali_tls~W,S', 'pp_tls~C,P')
{
	wait_for_sql($node,
		"SELECT status || ' ' || attempts FROM paysync.payments WHERE payment_id = '$id'",
		'succeeded 2', "$id: pending, then succeeded over HTTPS");
}
for my $name (qw(http_json stripe wechatpay alipay paypal))
{
	my @lines = access_lines($name);
	ok(@lines >= 2 && !grep({ $_->[3] ne 'HTTP/2.0' } @lines),
		"$name: every request came over HTTPS, HTTP/2");
}

# ---------------------------------------------------------------- failures

# Each a channel whose checks must end in errors naming the problem.
my @failing = (
	[ 'untrusted_system', "https://127.0.0.1:$port{h2}", q{'{}'::jsonb},
	  qr/^TLS: the channel's certificate is not trusted/, 'no ca_cert: our CA is not in the system store' ],
	[ 'untrusted', "https://127.0.0.1:$port{stranger}", "jsonb_build_object('ca_cert', $CA)",
	  qr/^TLS: the channel's certificate is not trusted/, 'a certificate of another CA' ],
	[ 'expired', "https://127.0.0.1:$port{expired}", "jsonb_build_object('ca_cert', $CA)",
	  qr/^TLS: the channel's certificate has expired/, 'an expired certificate' ],
	[ 'wronghost', "https://127.0.0.1:$port{wronghost}", "jsonb_build_object('ca_cert', $CA)",
	  qr/^TLS: the channel's certificate does not name its host/, 'a certificate for another host' ],
	[ 'plain', "https://127.0.0.1:$port{plain}", "jsonb_build_object('ca_cert', $CA)",
	  qr/^TLS: the channel does not speak TLS on this port/, 'plain HTTP on the TLS port' ],
	[ 'no_client_cert', "https://127.0.0.1:$port{mtls}", "jsonb_build_object('ca_cert', $CA)",
	  qr/^unexpected HTTP 400/, 'nginx with ssl_verify_client: without the client certificate' ],
	[ 'client_refused', "https://127.0.0.1:$port{s_server}", "jsonb_build_object('ca_cert', $CA)",
	  qr/^TLS: the channel refused the client certificate/, 'a TLS server requiring a client certificate' ],
);
for my $f (@failing)
{
	my ($name, $url, $options) = @$f;
	create($name, 'http_json', $url,
		"$options || jsonb_build_object($STATUS_OPTS, 'pause_after_errors', 3)");
	$node->safe_psql('postgres',
		"SELECT paysync.track('$name-' || g, '$name', schedule => '{200ms,200ms,200ms,1h}') FROM generate_series(1, 4) g");
}
for my $f (@failing)
{
	my ($name, $url, $options, $error, $what) = @$f;
	wait_for_sql($node,
		"SELECT count(*) FROM paysync.payments WHERE channel = '$name' AND errors > 0", '4',
		"$what: every check an error");
	my $row = $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT status::text, ','), min(last_error) FROM paysync.payments WHERE channel = '$name'");
	my ($statuses, $last_error) = split /\|/, $row, 2;
	is($statuses, 'pending', "$what: no status set");
	like($last_error, $error, "$what: last_error names the problem") or diag($last_error);
	# (nginx's 400 is an answer over TLS, not a TLS failure)
	wait_for_sql($node, "SELECT state FROM paysync.stats WHERE channel = '$name'", 'paused',
		"$what: the errors count for the circuit breaker") unless $name eq 'no_client_cert';
}

# ---------------------------------------------------------------- mutual TLS

create('mtls', 'http_json', "https://127.0.0.1:$port{mtls}",
	"jsonb_build_object($STATUS_OPTS, 'ca_cert', $CA, $CLIENT)");
$node->safe_psql('postgres', q{SELECT paysync.track('mtls-1', 'mtls', schedule => '{10ms,1h}')});
wait_payment_status($node, 'mtls-1', 'succeeded',
	'a mutual-TLS channel with its client certificate is answered');
# a client certificate with the system store: trusted by nginx, ours is not
create('mtls_system', 'http_json', "https://127.0.0.1:$port{mtls}",
	"jsonb_build_object($STATUS_OPTS, $CLIENT)");
$node->safe_psql('postgres', q{SELECT paysync.track('mtls-2', 'mtls_system', schedule => '{10ms,1h}')});
wait_for_sql($node, q{SELECT last_error ~ '^TLS: the channel''s certificate is not trusted' FROM paysync.payments WHERE payment_id = 'mtls-2'},
	't', 'a client certificate without ca_cert: the server is checked against the system store');

# ---------------------------------------------------------------- HTTP/2

create('h2', 'http_json', "https://127.0.0.1:$port{h2}",
	"jsonb_build_object($STATUS_OPTS, 'ca_cert', $CA)");
$node->safe_psql('postgres',
	q{SELECT count(paysync.track('h2-' || g, 'h2', schedule => '{10ms,1h}')) FROM generate_series(1, 2000) g});
wait_for_sql($node, q{SELECT count(*) FROM paysync.payments WHERE channel = 'h2' AND status = 'succeeded'},
	'2000', 'HTTP/2: 2,000 checks answered');
{
	my @lines = access_lines('h2');
	my %conns = map { $_->[1] => 1 } grep { $_->[6] =~ m{^/pay/h2-} } @lines;
	my @h2 = grep { $_->[6] =~ m{^/pay/h2-} && $_->[3] eq 'HTTP/2.0' } @lines;
	is(scalar(@h2), 2000, 'HTTP/2: every check over HTTP/2');
	ok(keys(%conns) >= 1 && keys(%conns) <= 4,
		'HTTP/2: the 2,000 checks used at most 4 connections (' . scalar(keys %conns) . ')');
}

# ---------------------------------------------------------------- parsed once

# nginx closes each connection after one request: 256 checks, 256
# handshakes, one parse of the channel's CA by the worker.
my $log_offset = -s $node->logfile;
create('h1', 'http_json', "https://127.0.0.1:$port{h1}",
	"jsonb_build_object($STATUS_OPTS, 'ca_cert', $CA)");
$node->safe_psql('postgres',
	q{SELECT count(paysync.track('h1-' || g, 'h1', schedule => '{10ms,1h}')) FROM generate_series(1, 256) g});
wait_for_sql($node, q{SELECT count(*) FROM paysync.payments WHERE channel = 'h1' AND status = 'succeeded'},
	'256', 'HTTP/1.1, one request a connection: 256 checks answered');
{
	my @lines = grep { $_->[6] =~ m{^/pay/h1-} } access_lines('h1');
	my %conns = map { $_->[1] => 1 } @lines;
	is(scalar(keys %conns), 256, '256 connections, each with its handshake');
	my $resumed = grep { $_->[4] eq 'r' } @lines;
	cmp_ok($resumed, '>=', 200, "most handshakes resumed a TLS session ($resumed of 256)");
	my $log = substr(slurp_file($node->logfile), $log_offset);
	my @parses = $log =~ /paysync worker .*channel "h1": ca_cert loaded, 1 certificate/g;
	is(scalar(@parses), 1, 'the worker parsed the channel\'s CA once for 256 connections');
}

# ---------------------------------------------------------------- a changed row

# the row changes: its CA is loaded again (here another CA: now untrusted)
$log_offset = -s $node->logfile;
$node->safe_psql('postgres',
	"UPDATE paysync.channels SET options = options || jsonb_build_object('ca_cert', " . file_sql('other_ca.crt') . ") WHERE name = 'h1'");
$node->safe_psql('postgres', q{SELECT paysync.track('h1-after', 'h1', schedule => '{10ms,1h}')});
wait_for_sql($node, q{SELECT last_error ~ '^TLS: the channel''s certificate is not trusted' FROM paysync.payments WHERE payment_id = 'h1-after'},
	't', 'a changed ca_cert is loaded again: the old CA no longer trusted');
like(substr(slurp_file($node->logfile), $log_offset),
	qr/paysync worker .*channel "h1": ca_cert loaded/, 'the worker loaded the new ca_cert');

# ---------------------------------------------------------------- the system store

# the CA of the servers joins the system store: after a reload, a channel
# without ca_cert trusts it (untrusted_system was refused above)
spew_file("$dir/system.pem", slurp_file("$dir/other_ca.crt") . slurp_file("$dir/ca.crt"));
$log_offset = -s $node->logfile;
$node->reload;
create('system', 'http_json', "https://127.0.0.1:$port{h2}", "jsonb_build_object($STATUS_OPTS)");
$node->safe_psql('postgres', q{SELECT paysync.track('system-1', 'system', schedule => '{10ms,1h}')});
wait_payment_status($node, 'system-1', 'succeeded',
	'a CA added to the system store is trusted after a reload, without a restart');
like(substr(slurp_file($node->logfile), $log_offset),
	qr/paysync worker .*system trust store loaded: 2 certificates from \Q$dir\E\/system.pem/,
	'the worker read the system store again (SSL_CERT_FILE)');

# ---------------------------------------------------------------- secrets

{
	my $log = slurp_file($node->logfile);
	ok(!grep({ index($log, $_) >= 0 } @key_lines), 'client_key nowhere in the server log');
	my $dump = $node->safe_psql('postgres', q{
		SELECT string_agg(coalesce(last_error, ''), ' ') FROM paysync.payments
		UNION ALL SELECT string_agg(coalesce(last_error, ''), ' ') FROM paysync.worker_status()
		UNION ALL SELECT string_agg(t::text, ' ') FROM paysync.stats t
		UNION ALL SELECT string_agg(query, ' ') FROM pg_stat_activity});
	ok(!grep({ index($dump, $_) >= 0 } @key_lines),
		'client_key nowhere in payments, worker_status, stats or pg_stat_activity');
}

$node->stop;
done_testing();
