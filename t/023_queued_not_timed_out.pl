# 023_queued_not_timed_out.pl: a check waiting for a connection is queued,
# not timed out (0.4, src/http.c: each endpoint has a window of requests
# handed to libcurl, 16 when cold, one more per answer; a request past it
# waits in paysync's own queue, where its timeout does not run, for at most
# its claim's allowance).
# - A burst of 48 payments to each of three cold channels (plain HTTP,
#   HTTPS with HTTP/1.1, HTTPS with HTTP/2; nginx with a throwaway CA's
#   certificate in front of the mock) whose every answer takes L = 1 s,
#   with a request timeout of 1.5 s: at most 16 of a channel's requests
#   reach the mock before its first answer, the others only after it, at
#   least 0.9 L after their claim (so from their claim to their answer at
#   least 1.9 L, past the timeout), and yet every payment succeeds on its
#   first attempt with no error.
# - A channel whose answers never come in time (timeout 2.5 s): the
#   requests that wait past their allowance (the claim's 7.5 s less the
#   timeout and the 1 s for recording: 4 s) fail with "no connection to
#   the channel became free within N ms", never reach the channel, and
#   never become a status.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $L_MS = 1000;			# every answer of the mock takes this long
my $TIMEOUT_MS = 1500;		# the channels' request timeout: L < it < 2 L
my $N = 48;					# payments per channel: 16 + 32
my $WINDOW = 16;			# RAMP_INITIAL in src/http.c

my $dir = PostgreSQL::Test::Utils::tempdir;

# ---------------------------------------------------------------- CA and nginx

make_rsa_key($dir, 'ca');
run_openssl([ 'req', '-x509', '-new', '-key', "$dir/ca.key", '-sha256', '-days', '2',
	'-subj', '/CN=paysync test queue ca', '-out', "$dir/ca.crt" ]);
make_rsa_key($dir, 'server');
run_openssl([ 'req', '-new', '-key', "$dir/server.key", '-subj', '/CN=server',
	'-out', "$dir/server.csr" ]);
spew_file("$dir/server.ext",
	"subjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\nbasicConstraints = CA:FALSE\n");
run_openssl([ 'x509', '-req', '-in', "$dir/server.csr", '-CA', "$dir/ca.crt",
	'-CAkey', "$dir/ca.key", '-set_serial', int(rand(1 << 30)), '-sha256', '-days', '2',
	'-extfile', "$dir/server.ext", '-out', "$dir/server.crt" ]);

my $slow = start_mock(latency_ms => $L_MS);
# answers nothing in time: every request waits here past any timeout
my $stuck = start_mock(latency_ms => 20000);
END
{
	for my $m ($slow, $stuck)
	{
		eval { stop_mock($m) } if $m && $m->{handle};
	}
}

my $ngx = "$dir/nginx";
mkdir $ngx;
my %port = map { $_ => PostgreSQL::Test::Cluster::get_free_port() } qw(h1 h2);
my $conf = "	access_log off;
	keepalive_requests 100000;
	keepalive_timeout 300s;
";
for my $name (qw(h1 h2))
{
	my $h2 = $name eq 'h2' ? ' http2' : '';
	$conf .= "	server {
		listen 127.0.0.1:$port{$name} ssl$h2;
		ssl_certificate $dir/server.crt;
		ssl_certificate_key $dir/server.key;
		location / { proxy_pass http://127.0.0.1:$slow->{port}; }
	}\n";
}
start_nginx($ngx, $conf);
# nginx is up when it answers (a control endpoint: not logged, not delayed)
for (1 .. 100)
{
	last if `curl -s -o /dev/null -w '%{http_code}' --cacert $dir/ca.crt https://127.0.0.1:$port{h2}/_stats` eq '200';
	select(undef, undef, undef, 0.1);
}

# ---------------------------------------------------------------- the node

my $node = new_paysync_node('queue');
# When each claim was made (the trigger's clock), and each payment's first
# error, whatever later retries write over it.
sql($node, q{
CREATE TABLE claims (payment_id text, at timestamptz);
CREATE TABLE first_errors (payment_id text PRIMARY KEY, last_error text, status text,
	at timestamptz);
CREATE FUNCTION note_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF NEW.claimed_until IS NOT NULL AND NEW.claimed_until IS DISTINCT FROM OLD.claimed_until THEN
		INSERT INTO public.claims VALUES (NEW.payment_id, clock_timestamp());
	END IF;
	IF NEW.errors > OLD.errors THEN
		INSERT INTO public.first_errors
		VALUES (NEW.payment_id, NEW.last_error, NEW.status, clock_timestamp())
		ON CONFLICT DO NOTHING;
	END IF;
	RETURN NULL;
END $$;
CREATE TRIGGER note_claim AFTER UPDATE ON paysync.payments
	FOR EACH ROW EXECUTE FUNCTION note_claim();
});

my $CA = "pg_read_file('$dir/ca.crt')";
my $OPTS = q{'path', '/pay/{payment_id}', 'status_map', '} . STATUS_MAP
  . qq{'::jsonb, 'timeout_ms', $TIMEOUT_MS, 'pause_after_errors', 0};
my %url = (
	plain => "http://127.0.0.1:$slow->{port}",
	h1 => "https://127.0.0.1:$port{h1}",
	h2 => "https://127.0.0.1:$port{h2}");
for my $name (sort keys %url)
{
	my $tls = $name eq 'plain' ? '' : ", 'ca_cert', $CA";
	sql($node, "SELECT paysync.create_channel('$name', 'http_json', '$url{$name}', jsonb_build_object($OPTS$tls))");
}

# ---------------------------------------------------------------- queued, not timed out

# All due at once, in one transaction: claimed together, to cold channels.
sql($node, "SELECT count(paysync.track(c || '-' || g, c, schedule => '{10ms,1h}'))
	FROM unnest('{plain,h1,h2}'::text[]) c, generate_series(1, $N) g");
wait_for_sql($node,
	q{SELECT count(*) FROM paysync.payments WHERE status = 'succeeded' OR errors > 0},
	3 * $N, 'every payment of the burst answered');

my %claimed = map { split /\|/ } split /\n/,
  sql($node, q{SELECT payment_id, (extract(epoch FROM min(at)) * 1000000)::bigint FROM claims GROUP BY 1});
my @log = mock_log($slow);
for my $name (sort keys %url)
{
	is(sql($node, "SELECT count(*) FROM paysync.payments WHERE channel = '$name' AND status = 'succeeded' AND errors = 0 AND attempts = 1 AND last_error IS NULL"),
		$N, "$name: all $N payments succeeded on their first attempt, no error (no timeout)");
	is(sql($node, "SELECT string_agg(DISTINCT last_error, '; ') FROM first_errors WHERE payment_id LIKE '$name-%'"),
		'', "$name: no error at any time");

	# the mock's arrivals of this channel's requests, in order
	my @arrivals = sort { $a->[0] <=> $b->[0] } grep { $_->[2] =~ /^$name-\d+$/ } @log;
	is(scalar(@arrivals), $N, "$name: one request per payment reached the channel");
	next unless @arrivals;
	my $first = $arrivals[0][0];
	my $early = grep { $_->[0] < $first + 0.9 * $L_MS * 1000 } @arrivals;
	cmp_ok($early, '<=', $WINDOW,
		"$name: at most $WINDOW requests reached the channel before its first answer ($early)");
	# a request that came at least 0.9 L after its claim was answered 1.9 L
	# after it: it waited, and its timeout did not run meanwhile
	my $waited = grep {
		defined $claimed{ $_->[2] } && $_->[0] - $claimed{ $_->[2] } >= 0.9 * $L_MS * 1000
	} @arrivals;
	cmp_ok($waited, '>=', $N - $WINDOW,
		"$name: at least " . ($N - $WINDOW) . " requests waited for the window, their answers past the timeout after their claim ($waited)");
}

# ---------------------------------------------------------------- past the allowance

# Timeout 2.5 s, claims of 7.5 s: each may wait 4 s for the window.  The
# first 16 time out at 2.5 s, the next 16 at 5 s; the last 16 would be
# sent at 5 s, so they fail at 4 s without being sent.
sql($node, "SELECT paysync.create_channel('stuck', 'http_json', 'http://127.0.0.1:$stuck->{port}', jsonb_build_object('path', '/pay/{payment_id}', 'status_map', '"
	  . STATUS_MAP . "'::jsonb, 'timeout_ms', 2500, 'pause_after_errors', 0))");
sql($node, "SELECT count(paysync.track('stuck-' || g, 'stuck', schedule => '{10ms,1h}')) FROM generate_series(1, $N) g");
wait_for_sql($node, q{SELECT count(*) FROM first_errors WHERE payment_id LIKE 'stuck-%'},
	$N, 'past the allowance: every payment has had an error');
my %first_error = map { split /\|/, $_, 2 }
  split /\n/, sql($node, q{SELECT payment_id, last_error FROM first_errors WHERE payment_id LIKE 'stuck-%'});
my @unsent = grep { $first_error{$_} =~ /^no connection to the channel became free within \d+ ms/ } keys %first_error;
my @timeouts = grep { $first_error{$_} =~ /^timeout after 2500 ms/ } keys %first_error;
cmp_ok(scalar(@unsent), '>=', 1,
	'past the allowance: requests that waited too long are "no connection ... became free" errors (' . scalar(@unsent) . ')');
note("for example: $first_error{$unsent[0]}") if @unsent;
is(scalar(@unsent) + scalar(@timeouts), $N, 'past the allowance: every other request timed out')
  or diag(join "\n", map { "$_: $first_error{$_}" } sort keys %first_error);
# (retried a second later, they may reach it since)
my %failed_at = map { split /\|/ } split /\n/,
  sql($node, q{SELECT payment_id, (extract(epoch FROM at) * 1000000)::bigint FROM first_errors});
my %unsent = map { $_ => 1 } @unsent;
my @reached = grep { $unsent{ $_->[2] } && $_->[0] < $failed_at{ $_->[2] } } mock_log($stuck);
is(scalar(@reached), 0, 'past the allowance: those requests never reached the channel');
is(sql($node, q{SELECT string_agg(DISTINCT status, ',') FROM first_errors WHERE payment_id LIKE 'stuck-%'}),
	'pending', 'past the allowance: no status set');
is(sql($node, q{SELECT count(*) FROM paysync.payments WHERE channel = 'stuck' AND status <> 'pending'}),
	'0', 'past the allowance: every payment still pending');

$node->stop;
done_testing();
