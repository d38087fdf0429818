# 001_answers.pl: what the worker does with each kind of answer a channel can
# give: statuses, HTTP errors, bad bodies, timeouts, oversized bodies; the
# backoff after errors; schedules and expires_at; the NOTIFY payloads and
# events_since(); the http_json options (POST body, URL encoding,
# status_field, secret headers); the per-channel and global in-flight caps.
#
# Most payments are tracked at once and checked side by side, with a
# sampler watching the rows in between, so the file runs in well under a
# minute.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use JSON::PP;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# The secret is only ever spelled out here and in the mock's command line;
# SQL builds it as 'sk_test_' || upper('secret') so that no statement text
# (which log_statement = all logs) carries it.
my $SECRET = 'sk_test_SECRET';
my $SECRET_SQL = q{'sk_test_' || upper('secret')};

my $mock = start_mock();
my $auth_mock = start_mock(require_header => ["Authorization: Bearer $SECRET"]);
my $slow_mock = start_mock(latency_ms => 300);

# Every message level is logged, so that a secret logged at any level shows.
my $node = new_paysync_node('answers', conf => "log_min_messages = debug5\n");

# ---------------------------------------------------------------- helpers

sub reset_mock
{
	my ($m) = @_;
	my $out = `curl -s -X POST http://127.0.0.1:$m->{port}/_reset`;
	die "mock reset failed: $out" unless $out =~ /"ok":true/;
}

# Arrival times (seconds) of the requests the mock logged for a payment.
sub arrivals
{
	my ($m, $logged_id) = @_;
	return map { $_->[0] / 1e6 } grep { $_->[2] eq $logged_id } mock_log($m);
}

sub set_and_reload
{
	my ($name, $value, $shown) = @_;
	sql($node, "ALTER SYSTEM SET $name = " . lit($value));
	$node->reload;
	# New sessions see the value once the postmaster has reloaded, and by
	# then it has signalled the worker too.
	$node->poll_query_until('postgres', "SHOW $name", $shown)
	  or die "$name did not become $shown";
}

# Sightings of the secret in pg_stat_activity.query, sampled all along.
my $activity_samples = 0;
my $activity_secret_sightings = 0;

# ---------------------------------------------------------------- listener

# A session listening on both notify channels; psql prints each
# notification after the next query it runs.
my $listener = $node->background_psql('postgres');
$listener->set_query_timer_restart;
$listener->query_safe('LISTEN paysync; LISTEN paysync_alt;');
my @notifications;    # [notify channel, payload text]

sub pull_notifications
{
	my $out = $listener->query_safe('SELECT 1');
	while ($out =~
		/^Asynchronous notification "([^"]+)" with payload "(.*)" received from server process with PID \d+\.\r?$/mg
	  )
	{
		push @notifications, [ $1, $2 ];
	}
}

# Decoded payloads on one notify channel (undef for a payload not JSON).
sub payloads_on
{
	my ($channel) = @_;
	return map {
		my $p = $_->[1];
		my $d = eval { JSON::PP->new->decode($p) };
		$d;
	} grep { $_->[0] eq $channel } @notifications;
}

# Pulls notifications until cond is true (at most 30 s).
sub notifications_until
{
	my ($cond) = @_;
	my $deadline = time + 30;
	while (1)
	{
		pull_notifications();
		return 1 if $cond->();
		return 0 if time > $deadline;
		usleep(100_000);
	}
}

# ---------------------------------------------------------------- channels

# Lowered before anything is tracked; 30 kB bodies pass, 200 kB and 2 MB
# (below and above the 1 MB default) do not.
set_and_reload('paysync.max_response_size', '64kB', '64kB');

create_mock_channel($node, 'mock', $mock);
create_mock_channel($node, 'mock_nf', $mock, '{"not_found": "failed"}');
create_mock_channel($node, 'mock_post', $mock,
	q{{"method": "POST", "path": "/query", "body": "{\"payment_id\": \"{payment_id}\"}"}});
create_mock_channel($node, 'mock_sf', $mock, '{"status_field": "data.trade_state"}');
create_mock_channel($node, 'mock_sf_bad', $mock, '{"status_field": "data.nope"}');
create_mock_channel($node, 'noauth', $auth_mock);
sql($node, qq{SELECT paysync.create_channel('auth', 'http_json', 'http://127.0.0.1:$auth_mock->{port}',
	jsonb_build_object('path', '/pay/{payment_id}',
		'status_map', '@{[STATUS_MAP]}'::jsonb,
		'headers', jsonb_build_object('Authorization', 'Bearer ' || $SECRET_SQL)))});
# A channel sending a header whose value the mock's answer repeats (its
# unknown status word WEIRD), as a channel echoing the request would.
create_mock_channel($node, 'echo', $mock, '{"headers": {"X-Api-Key": "WEIRD"}}');
create_mock_channel($node, 'capped', $slow_mock, '{"max_inflight": 5}');
create_mock_channel($node, 'uncapped', $slow_mock);

# A header value that is refused must not be echoed in the error.
{
	my ($ret, $out, $err) = $node->psql('postgres',
		qq{SELECT paysync.create_channel('bad_header', 'http_json', 'http://127.0.0.1:1',
			jsonb_build_object('status_map', '@{[STATUS_MAP]}'::jsonb,
				'headers', jsonb_build_object('Authorization', 'Bearer ' || $SECRET_SQL || chr(10))))});
	isnt($ret, 0, 'a header value with a line break is refused');
	like($err, qr/Authorization/, '... the error names the header');
	unlike($err, qr/\Q$SECRET\E/, '... but never shows its value');
}

# ---------------------------------------------------------------- tracking

my $POST_ID = q{po"st\1~S};        # JSON-escaped in the POST body
my $URL_ID = 'a b/c~S';            # URL-encoded in the path

# [payment_id, channel, schedule, expires_at (SQL) or undef]
my @tracked = (
	# 1. answer kinds
	[ 'k_ps~P,S', 'mock', '{1s,2s,3s}' ],
	[ 'k_f~F', 'mock', '{1s}' ],
	[ 'k_c~C', 'mock', '{1s}' ],
	[ 'k_x~X', 'mock', '{1s}' ],
	[ 'k_500~E500,E500,S', 'mock', '{1s,1s}' ],
	[ 'k_429~R3,S', 'mock', '{1s,1s}' ],
	[ 'k_404~N', 'mock', '{1s,1s}' ],
	[ 'k_nf~N', 'mock_nf', '{1s}' ],
	[ 'k_j~J', 'mock', '{1s}' ],
	[ 'k_m~M', 'mock', '{1s}' ],
	[ 'k_u~U', 'mock', '{1s}' ],
	[ 'k_t~T3000,T3000,S', 'mock', '{1s,1s}' ],
	[ 'k_big~B2000000', 'mock', '{1s}' ],
	[ 'k_mid~B200000', 'mock', '{1s}' ],
	[ 'k_small~B30000', 'mock', '{1s}' ],
	# 2. backoff
	[ 'bo~E503', 'mock', '{1s}' ],
	# 3. schedule and expiry
	[ 'exp_a~P', 'mock', '{1s,1s}' ],
	[ 'exp_b~P', 'mock', '{1s,1s}', q{now() + interval '4.5s'} ],
	[ 'exp_c~P', 'mock', '{1s,30s}', q{now() + interval '2.5s'} ],
	# 4. errors never expire
	[ 'noexp~E500', 'mock', '{1s}', q{now() + interval '2s'} ],
	# 7. http_json options
	[ $POST_ID, 'mock_post', '{1s}' ],
	[ $URL_ID, 'mock', '{1s}' ],
	[ 'sf~P,S', 'mock_sf', '{1s,1s}' ],
	[ 'sf_bad~S', 'mock_sf_bad', '{1s}' ],
	[ 'auth~P,S', 'auth', '{1s,1s}' ],
	[ 'auth_j~J', 'auth', '{1s}' ],
	[ 'noauth~S', 'noauth', '{1s}' ],
	[ '.', 'mock', '{1s}' ],
	[ '..', 'mock', '{1s}' ],
	[ 'echo~U', 'echo', '{1s}' ],
	# 5. reported, never polled (30 s away)
	[ 'rep_1', 'mock', '{30s}' ],
	[ 'rep_2', 'mock', '{30s}' ],);

sql($node, join("\n",
		'BEGIN;',
		(map {
			my ($id, $channel, $schedule, $expires) = @$_;
			"SELECT 1 FROM paysync.track(" . lit($id) . ", '$channel', schedule => '$schedule'"
			  . (defined $expires ? ", expires_at => $expires" : '') . ');'
		} @tracked),
		'COMMIT;'));
my $tracked_at = time;

# Callback reports: source 'report', with and without a channel status.
is(sql($node, q{SELECT paysync.report('rep_1', 'succeeded', 'CB_OK')}), 't', 'report rep_1 succeeded');
is(sql($node, q{SELECT paysync.report('rep_2', 'failed')}), 't', 'report rep_2 failed');

# ---------------------------------------------------------------- sampler

# Watches some rows every 50 ms while they move, keeping every state seen:
# states that last about a second cannot be caught reliably otherwise.
my @sampled = ('bo~E503', 'k_500~E500,E500,S', 'k_429~R3,S',
	'k_t~T3000,T3000,S', 'k_ps~P,S', 'k_404~N', 'exp_b~P', 'exp_c~P');
my %samples;    # payment_id => [ {status, step, ...}, ... ]
my $sampler = $node->background_psql('postgres');
$sampler->set_query_timer_restart;
my $sample_sql = q{
SELECT payment_id, status, step, attempts, errors,
       coalesce(extract(epoch FROM next_check_at - last_checked_at)::text, ''),
       coalesce((next_check_at <= expires_at)::text, ''),
       coalesce((next_check_at = expires_at)::text, ''),
       coalesce(channel_status, ''),
       coalesce(replace(last_error, E'\n', ' '), '')
FROM paysync.payments WHERE payment_id IN (} . join(', ', map { lit($_) } @sampled) . ')';
my $activity_sql =
  "SELECT count(*) FROM pg_stat_activity WHERE strpos(query, $SECRET_SQL) > 0";

sub sample_once
{
	foreach my $line (split /\n/, $sampler->query_safe($sample_sql))
	{
		my @f = split /\|/, $line, 10;
		next unless @f == 10;
		my %s;
		@s{qw(status step attempts errors gap le_expires eq_expires channel_status last_error)}
		  = @f[ 1 .. 9 ];
		push @{ $samples{ $f[0] } }, \%s;
	}
	$activity_samples++;
	$activity_secret_sightings += $sampler->query_safe($activity_sql);
}

sub last_sample
{
	my ($id) = @_;
	my $list = $samples{$id} || [];
	return @$list ? $list->[-1] : {};
}

{
	my $deadline = time + 90;
	while (time < $deadline)
	{
		sample_once();
		last
		  if (last_sample('bo~E503')->{errors} // 0) >= 4
		  && (last_sample('k_500~E500,E500,S')->{status} // '') eq 'succeeded'
		  && (last_sample('k_429~R3,S')->{status} // '') eq 'succeeded'
		  && (last_sample('k_t~T3000,T3000,S')->{status} // '') eq 'succeeded'
		  && (last_sample('k_ps~P,S')->{status} // '') eq 'succeeded'
		  && (last_sample('k_404~N')->{status} // '') eq 'expired'
		  && (last_sample('exp_b~P')->{status} // '') eq 'expired'
		  && (last_sample('exp_c~P')->{status} // '') eq 'expired';
		usleep(50_000);
	}
	note sprintf('sampling took %.1f s, %d samples',
		time - $tracked_at, scalar @{ $samples{'bo~E503'} || [] });
}

# True if list is not empty and cond holds for each element.
sub all_of
{
	my ($cond, @list) = @_;
	return 0 unless @list;
	foreach (@list)
	{
		return 0 unless $cond->($_);
	}
	return 1;
}

# Samples of id matching cond.
sub samples_where
{
	my ($id, $cond) = @_;
	return grep { $cond->($_) } @{ $samples{$id} || [] };
}

# ================================================================ 1. answers

# P then S: step counts both answers, attempts both requests.
wait_payment_status($node, 'k_ps~P,S', 'succeeded');
is(payment_row($node, 'k_ps~P,S', 'status, channel_status, step, attempts, errors, next_check_at IS NULL, finalized_at IS NOT NULL'),
	'succeeded|PAID|2|2|0|t|t',
	'P,S: succeeded with channel_status PAID, step 2, attempts 2, errors 0, no next check');
is(mock_requests($mock, 'k_ps~P,S'), 2, 'P,S: two requests');
{
	# after the first (pending) answer the next check is schedule[2] = 2 s away
	my @after_p = samples_where('k_ps~P,S',
		sub { $_[0]{status} eq 'pending' && $_[0]{step} == 1 && $_[0]{attempts} == 1 });
	ok(@after_p, 'P,S: the state after the pending answer was seen');
	ok( all_of(
			sub { abs($_[0]{gap} - 2) < 0.001 && $_[0]{channel_status} eq 'WAIT' },
			@after_p),
		'P,S: after WAIT, step 1 and the next check due schedule[2] = 2 s later')
	  or diag explain \@after_p;
}
is(events_of($node, 'k_ps~P,S'), 'pending>succeeded|PAID|poll|mock', 'P,S: one event, source poll');

my %final_kind = ('k_f~F' => 'failed|FAILED', 'k_c~C' => 'closed|CLOSED',
	'k_x~X' => 'cancelled|CANCELLED');
foreach my $id (sort keys %final_kind)
{
	my ($status, $word) = split /\|/, $final_kind{$id};
	wait_payment_status($node, $id, $status);
	is(payment_row($node, $id, 'channel_status, step, attempts, errors'), "$word|1|1|0",
		"$id: channel_status $word after one answer");
	is(events_of($node, $id), "pending>$status|$word|poll|mock", "$id: one event, source poll");
}

# HTTP 500: an error, not an answer.
{
	my $id = 'k_500~E500,E500,S';
	my @after_two = samples_where($id, sub { $_[0]{errors} == 2 && $_[0]{attempts} == 2 });
	ok(@after_two, 'E500: the state after two errors was seen');
	ok( all_of(
			sub {
				$_[0]{status} eq 'pending' && $_[0]{step} == 0
				  && $_[0]{last_error} =~ /HTTP 500/
				  && $_[0]{channel_status} eq '';
			},
			@after_two),
		'E500: errors 2 after two 500s, step 0, still pending, last_error mentions HTTP 500')
	  or diag explain \@after_two;
	ok(!grep({ $_->{errors} > 0 && $_->{status} ne 'pending' } @{ $samples{$id} }),
		'E500: no status change while erroring');
	wait_payment_status($node, $id, 'succeeded');
	is(payment_row($node, $id, 'errors, step, attempts, channel_status'), '0|1|3|PAID',
		'E500: the good answer resets errors to 0; step counts only it');
}

# 429 with Retry-After: 3 beats the 1 s backoff.
{
	my $id = 'k_429~R3,S';
	my @after = samples_where($id,
		sub { $_[0]{errors} == 1 && $_[0]{attempts} == 1 && $_[0]{status} eq 'pending' });
	ok(@after, '429: the state after the 429 was seen');
	ok(all_of(sub { $_[0]{gap} >= 2.999 && $_[0]{gap} <= 3.5 }, @after),
		'429: next_check_at is Retry-After (3 s) after last_checked_at, not the 1 s backoff')
	  or diag explain \@after;
	like($after[0]{last_error} // '', qr/429/, '429: last_error mentions HTTP 429');
	wait_payment_status($node, $id, 'succeeded');
	my @t = arrivals($mock, $id);
	ok(@t == 2 && $t[1] - $t[0] >= 2.95,
		'429: the retry reached the channel at least 3 s after the 429')
	  or diag explain \@t;
}

# 404 with the default not_found = pending: a "not paid yet" answer.
{
	my $id = 'k_404~N';
	my @after_one = samples_where($id,
		sub { $_[0]{step} == 1 && $_[0]{attempts} == 1 });
	ok( all_of(
			sub {
				$_[0]{status} eq 'pending' && $_[0]{errors} == 0
				  && $_[0]{channel_status} eq 'HTTP 404';
			},
			@after_one),
		'404: counts as a pending answer: step 1, errors 0, channel_status HTTP 404')
	  or diag explain \@after_one;
	wait_payment_status($node, $id, 'expired');
	is(payment_row($node, $id, 'step, errors, channel_status'), '2|0|HTTP 404',
		'404: the schedule of two checks used up by 404 answers');
	is(events_of($node, $id), 'pending>expired|HTTP 404|expiry|mock', '404: expired, source expiry');
}

wait_payment_status($node, 'k_nf~N', 'failed');
is(payment_row($node, 'k_nf~N', 'channel_status, errors'), 'HTTP 404|0',
	'404 on a channel with not_found = failed: failed, channel_status HTTP 404');

# J, M, U: errors that never change the status (a {1s} schedule would
# expire at the first pending answer).
my %bad_body = (
	'k_j~J' => qr/JSON/i,
	'k_m~M' => qr/"status"|missing/i,
	'k_u~U' => qr/WEIRD/);
foreach my $id (sort keys %bad_body)
{
	wait_true($node, $id, 'errors >= 2', "$id: two errors recorded");
	my ($status, $step, $cs, $err) = split /\|/,
	  payment_row($node, $id, "status, step, coalesce(channel_status, '<null>'), last_error"), 4;
	is("$status|$step|$cs", 'pending|0|<null>', "$id: still pending, step 0, no channel status");
	like($err, $bad_body{$id}, "$id: last_error says what was wrong");
}

# Slower than the 2 s request timeout: an error, then retried.
{
	my $id = 'k_t~T3000,T3000,S';
	my @timed_out = samples_where($id, sub { $_[0]{errors} == 1 });
	ok( all_of(
			sub {
				$_[0]{status} eq 'pending' && $_[0]{last_error} =~ /timeout/i
				  && $_[0]{step} == 0;
			},
			@timed_out),
		'T3000: a request slower than the timeout is an error "timeout", still pending')
	  or diag explain \@timed_out;
	wait_payment_status($node, $id, 'succeeded');
	is(payment_row($node, $id, 'errors, step, attempts'), '0|1|3', 'T3000: retried until answered');
	is(mock_requests($mock, $id), 3, 'T3000: three requests reached the channel');
}

# Bodies larger than paysync.max_response_size (64kB after the reload).
foreach my $id ('k_big~B2000000', 'k_mid~B200000')
{
	wait_true($node, $id, 'errors >= 1', "$id: an error recorded");
	my ($status, $err) = split /\|/, payment_row($node, $id, 'status, last_error'), 2;
	is($status, 'pending', "$id: still pending");
	like($err, qr/max_response_size|too (large|big)|larger|size/i,
		"$id: last_error mentions the size");
}
wait_payment_status($node, 'k_small~B30000', 'succeeded');

# ================================================================ 2. backoff

{
	my $id = 'bo~E503';
	foreach my $k (1 .. 3)
	{
		my $base = 2**($k - 1);
		# no check in flight (attempts = errors): next_check_at is the retry
		my @seen = samples_where($id,
			sub { $_[0]{errors} == $k && $_[0]{attempts} == $k });
		ok( all_of(
				sub {
					$_[0]{gap} >= 0.8 * $base - 0.001
					  && $_[0]{gap} <= 1.2 * $base + 0.001;
				},
				@seen),
			"backoff: after $k errors the next check is $base s +-20% later")
		  or diag explain \@seen;
	}
	my @t = arrivals($mock, $id);
	ok(@t >= 4
		  && $t[1] - $t[0] >= 0.75
		  && $t[2] - $t[1] >= 1.55
		  && $t[3] - $t[2] >= 3.15,
		'backoff: the retries reached the channel no earlier than the backoff allows')
	  or diag explain [ map { $t[$_] - $t[ $_ - 1 ] } 1 .. $#t ];
	is(payment_row($node, $id, 'status, step'), 'pending|0', 'backoff: still pending, step 0');
}

# ================================================================ 3. schedule and expiry

{
	my $id = 'exp_a~P';
	wait_payment_status($node, $id, 'expired');
	is(mock_requests($mock, $id), 2, 'schedule {1s,1s}, always pending: exactly 2 requests');
	is(payment_row($node, $id, 'step, channel_status, next_check_at IS NULL'), '2|WAIT|t',
		'schedule used up: expired with the last channel status');
	is(events_of($node, $id), 'pending>expired|WAIT|expiry|mock', 'expired: one event, source expiry');
}

{
	my $id = 'exp_b~P';
	wait_payment_status($node, $id, 'expired');
	my $n = mock_requests($mock, $id);
	cmp_ok($n, '>', 2,
		'expires_at beyond the schedule: the last delay repeats (more than 2 requests)');
	is(payment_row($node, $id, q{finalized_at >= expires_at AND finalized_at < expires_at + interval '2s'}),
		't', 'expires_at: expired once expires_at has come, not before');
	is(events_of($node, $id), 'pending>expired|WAIT|expiry|mock', 'expires_at: source expiry');
	my @idle = samples_where($id,
		sub { $_[0]{status} eq 'pending' && $_[0]{attempts} == $_[0]{step} && $_[0]{step} > 0 });
	ok(all_of(sub { $_[0]{le_expires} eq 'true' }, @idle),
		'expires_at: next_check_at never later than expires_at')
	  or diag explain \@idle;
}

{
	my $id = 'exp_c~P';
	my @after_one = samples_where($id,
		sub { $_[0]{status} eq 'pending' && $_[0]{step} == 1 && $_[0]{attempts} == 1 });
	ok(all_of(sub { $_[0]{eq_expires} eq 'true' }, @after_one),
		'schedule {1s,30s}, expires_at in 2.5 s: the next check is due at expires_at, not 30 s later')
	  or diag explain \@after_one;
	wait_payment_status($node, $id, 'expired');
	is(payment_row($node, $id, q{finalized_at < expires_at + interval '3s'}), 't',
		'... and the payment expired right after expires_at');
	is(mock_requests($mock, $id), 2, '... after 2 requests');
}

# ================================================================ 4. errors never expire

{
	my $id = 'noexp~E500';
	wait_true($node, $id, 'errors >= 3 AND now() > expires_at',
		'E500 forever: three errors, expires_at passed');
	is(payment_row($node, $id, 'status, step, next_check_at IS NOT NULL'), 'pending|0|t',
		'errors never expire a payment: still pending past expires_at');
	is(events_of($node, $id), '', 'errors never expire a payment: no event');
}

# ================================================================ 7. http_json options

wait_payment_status($node, $POST_ID, 'succeeded');
{
	my @lines = grep { $_->[2] eq $POST_ID } mock_log($mock);
	my $escaped = $POST_ID =~ s/(["\\])/\\$1/gr;
	is(scalar @lines, 1, 'POST: one request, the mock found the id in the JSON body');
	is($lines[0][1] // '', 'POST', 'POST: method POST');
	is($lines[0][4] // '', qq({"payment_id":_"$escaped"}),
		'POST: the body template with the id JSON-escaped');
}

wait_payment_status($node, $URL_ID, 'succeeded');
is(mock_requests($mock, 'a_b/c~S'), 1,
	'an id with a space and a slash is URL-encoded into one path segment');
is(scalar(grep { $_->[2] eq 'c~S' } mock_log($mock)), 0, '... never split at the slash');

# "." and ".." are payment ids like any other: the request asks for them,
# not for the path libcurl would make of a dot segment ("/pay/.." is "/").
for my $dots ('.', '..')
{
	wait_payment_status($node, $dots, 'succeeded');
	is(mock_requests($mock, $dots), 1, "the payment id \"$dots\" reaches the channel as the last path segment");
}

# Channel text kept in last_error never shows a configured header value.
wait_true($node, 'echo~U', 'errors >= 1', 'an unknown status on the channel with a header');
like(payment_row($node, 'echo~U', 'last_error'), qr/unknown channel status "\[redacted\]"/,
	'... last_error has the header value the channel repeated redacted');
unlike(payment_row($node, 'echo~U', 'last_error'), qr/WEIRD/, '... and never the value itself');

wait_payment_status($node, 'sf~P,S', 'succeeded');
is(payment_row($node, 'sf~P,S', 'channel_status, step'), 'PAID|2',
	'status_field data.trade_state: the status is read there');
wait_true($node, 'sf_bad~S', 'errors >= 1', 'status_field data.nope: an error');
like(payment_row($node, 'sf_bad~S', 'last_error'), qr/data\.nope/,
	'status_field data.nope: last_error names the missing field');
is(status_of($node, 'sf_bad~S'), 'pending', 'status_field data.nope: still pending');

# headers
wait_true($node, 'noauth~S', 'errors >= 1', 'without the header the channel refuses');
like(payment_row($node, 'noauth~S', 'last_error'), qr/401/, '... with HTTP 401');
wait_payment_status($node, 'auth~P,S', 'succeeded');
is(payment_row($node, 'auth~P,S', 'errors, step, attempts'), '0|2|2',
	'with the channel header Authorization every check succeeds');
is(mock_requests($auth_mock, 'auth~P,S'), 2, '... two requests reached the channel');
wait_true($node, 'auth_j~J', 'errors >= 1', 'an error on the channel with the secret header');

# ================================================================ 5. NOTIFY

# Five payments ended by one recording statement: run_once() in the
# transaction that tracks them, so no worker sees them pending.
is(sql($node, q{BEGIN;
	SELECT count(paysync.track('ord' || i || '~S', 'mock')) FROM generate_series(1, 5) i \\g /dev/null
	SELECT count(paysync.check_now('ord' || i || '~S')) FROM generate_series(1, 5) i \\g /dev/null
	SELECT paysync.run_once(10);
	COMMIT;}), '5', 'five payments checked and recorded in one statement');

my @events = map { [ split /\|/, $_, 7 ] } split /\n/, sql($node, 
	q{SELECT event_id, payment_id, channel, status, previous, coalesce(channel_status, '<null>'), source
	  FROM paysync.events ORDER BY event_id});
{
	my %want = map { $_->[0] => 1 } @events;
	notifications_until(
		sub {
			my %got = map { (($_ || {})->{event_id} // '') => 1 } payloads_on('paysync');
			!grep { !$got{$_} } keys %want;
		});

	my @payloads = payloads_on('paysync');
	is(scalar(grep { !defined $_ } @payloads), 0, 'NOTIFY: every payload is JSON');
	@payloads = grep { defined } @payloads;
	is(scalar @payloads, scalar @events, 'NOTIFY: one notification per event');
	my @bad;
	foreach my $e (@events)
	{
		my ($event_id, $pid, $channel, $status, $previous, $cs, $source) = @$e;
		my @mine = grep { ($_->{event_id} // '') eq $event_id } @payloads;
		my $p = $mine[0] || {};
		my $ok = @mine == 1
		  && join(',', sort keys %$p) eq
		  'channel,channel_status,event_id,payment_id,previous,source,status'
		  && $p->{payment_id} eq $pid
		  && $p->{channel} eq $channel
		  && $p->{status} eq $status
		  && $p->{previous} eq $previous
		  && ($p->{channel_status} // '<null>') eq $cs
		  && $p->{source} eq $source;
		push @bad, { event => $e, notifications => \@mine } unless $ok;
	}
	ok(@events >= 15 && !@bad,
		'NOTIFY: each event arrived once with exactly the contract keys and its values')
	  or diag explain \@bad;

	my %by_id = map { $_->{payment_id} => $_ } @payloads;
	is_deeply(
		[ map { my $p = $by_id{$_} || {}; join('|', map { $p->{$_} // '<null>' }
					qw(status previous channel_status source)) }
			('k_ps~P,S', 'exp_a~P', 'rep_1', 'rep_2', $POST_ID) ],
		[
			'succeeded|pending|PAID|poll', 'expired|pending|WAIT|expiry',
			'succeeded|pending|CB_OK|report', 'failed|pending|<null>|report',
			'succeeded|pending|PAID|poll'
		],
		'NOTIFY: payloads of a poll, an expiry, reports (channel_status null) and an id needing JSON escapes'
	);
	ok(!grep({ $_->{payment_id} =~ /^(k_j|k_m|k_u|bo|noexp)~/ } @payloads),
		'NOTIFY: nothing for payments whose checks only failed');
	my ($rep_1_raw) = grep { $_->[1] =~ /"rep_1"/ } @notifications;
	like($rep_1_raw->[1] // '', qr/"event_id"\s*:\s*\d+\s*[,}]/,
		'NOTIFY: event_id is a JSON number');
	my @arrival = map { $_->{event_id} } @payloads;
	ok(!grep({ $arrival[$_] <= $arrival[ $_ - 1 ] } 1 .. $#arrival),
		'NOTIFY: notifications arrive in event_id order, also those of one statement');
}

# ================================================================ 6. events_since

{
	my $ids = sub { join(',', map { (split /\|/)[0] } split /\n/, $_[0]) };
	my $since = sub {
		my ($after, $max) = @_;
		$ids->(sql($node, "SELECT event_id, payment_id FROM paysync.events_since($after"
			  . (defined $max ? ", $max" : '') . ')'));
	};
	my @all = map { $_->[0] } @events;
	my $all = join(',', @all);
	is($since->(0), $all, 'events_since(0): every event, in event_id order');
	ok(!grep({ $all[$_] <= $all[ $_ - 1 ] } 1 .. $#all), 'event ids increase');
	my $k = $all[2];
	is($since->($k), join(',', @all[ 3 .. $#all ]), 'events_since(k): only the later events');
	is($since->(0, 3), join(',', @all[ 0 .. 2 ]), 'events_since(0, 3): the first 3');
	is($since->($k, 2), join(',', @all[ 3 .. 4 ]), 'events_since(k, 2): the next 2');
	is($since->($all[-1]), '', 'events_since(last): nothing');
	is(sql($node, q{SELECT count(*) FROM paysync.payments p
			 WHERE (SELECT count(*) FROM paysync.events e WHERE e.payment_id = p.payment_id)
			       <> CASE WHEN p.status = 'pending' THEN 0 ELSE 1 END
			    OR p.status <> 'pending' AND NOT EXISTS (SELECT 1 FROM paysync.events e
					WHERE e.payment_id = p.payment_id AND e.status = p.status)}),
		'0', 'each final payment has exactly one event, with its status; pending ones none');
}

# ================================================================ 8. max_inflight

foreach my $case ([ 'capped', 'cap', 5 ], [ 'uncapped', 'glob', 8 ])
{
	my ($channel, $prefix, $cap) = @$case;
	set_and_reload('paysync.max_inflight', '8', '8') if $channel eq 'uncapped';
	reset_mock($slow_mock);
	sql($node, join("\n", 'BEGIN;',
			(map { "SELECT 1 FROM paysync.track('${prefix}_$_~S', '$channel', schedule => '{1s}');" }
				1 .. 40),
			'COMMIT;'));
	wait_for_sql($node,
		"SELECT count(*) FROM paysync.payments WHERE channel = '$channel' AND status = 'succeeded'",
		'40', "$channel: 40 due payments all succeed");
	my $stats = mock_stats($slow_mock);
	my $what = $channel eq 'capped'
	  ? 'channel option max_inflight 5' : 'paysync.max_inflight = 8';
	cmp_ok($stats->{max_in_flight} // 99, '<=', $cap, "$what: at most $cap requests in flight");
	cmp_ok($stats->{max_in_flight} // 0, '>', 1, "$what: requests still run concurrently");
	is($stats->{requests}, 40, "$what: each payment checked once");
}

# ================================================================ 5b. notify_channel

set_and_reload('paysync.notify_channel', 'paysync_alt', 'paysync_alt');
sql($node, q{SELECT 1 FROM paysync.track('alt~S', 'mock', schedule => '{1s}')});
wait_payment_status($node, 'alt~S', 'succeeded');
notifications_until(sub { grep { $_->[1] =~ /alt~S/ } @notifications });
is_deeply([ map { $_->[0] } grep { $_->[1] =~ /"alt~S"/ } @notifications ],
	['paysync_alt'],
	'after notify_channel changes (reload), events arrive on the new channel only');

# ================================================================ secrets

# sampled once more now that everything ran
sample_once();
is($activity_secret_sightings, 0,
	"the secret never showed in pg_stat_activity.query ($activity_samples samples)");
is(sql($node, "SELECT count(*) FROM paysync.payments WHERE strpos(coalesce(last_error, ''), $SECRET_SQL) > 0"),
	'0', 'the secret never appears in paysync.payments.last_error');
my $server_log = slurp_file($node->logfile);
ok(length($server_log) > 0 && index($server_log, $SECRET) < 0,
	'the secret never appears in the server log');

# ================================================================ what must not have happened

# Everything above took many seconds after these were done or erroring.
is(mock_requests($mock, 'exp_a~P'), 2, 'an expired payment is never checked again');
is(sql($node, q{SELECT string_agg(payment_id || ':' || status || ':' || (errors >= 3)::text, ',' ORDER BY payment_id)
		 FROM paysync.payments WHERE payment_id IN ('k_j~J', 'k_m~M', 'k_u~U', 'noexp~E500', 'bo~E503')}),
	'bo~E503:pending:true,k_j~J:pending:true,k_m~M:pending:true,k_u~U:pending:true,noexp~E500:pending:true',
	'payments that only ever got errors are still pending, errors still growing');
is(sql($node, q{SELECT count(*) FROM paysync.events WHERE payment_id IN ('k_j~J', 'k_m~M', 'k_u~U', 'noexp~E500', 'bo~E503')}),
	'0', '... with no event');

$listener->quit;
$sampler->quit;
$node->stop;
stop_mock($_) for ($mock, $auth_mock, $slow_mock);

done_testing();
