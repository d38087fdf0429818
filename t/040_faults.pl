# 040_faults.pl: the fault run.  10,000 payments are tracked against the
# scripted mock channel, each class of them with its own script (pending
# then paid, failed or closed; 5xx bursts, 429 with Retry-After, timeouts
# and garbage bodies before the answer; pending until the schedule runs
# out; errors for ever), while the worker is SIGKILLed every second for
# 20 s, the server is restarted with -m immediate twice and the channel is
# down for 30 s.  Once everything has settled: every payment has the
# status its script leads to (or is still pending because its script never
# ends), exactly one event per status change, no expiry after an error,
# never two requests for one payment in flight at once, and the worker
# still runs.  2,000 refunds of those payments go through the same faults
# on the same state machine: none lost, none doubled.  The counts are
# printed with diag.
#
# t/041_faults_tls.pl runs this file again over HTTPS (PAYSYNC_FAULTS_TLS
# set): nginx with a certificate of a CA made here, trusted by the
# channel's ca_cert, in front of the mock (down, it answers 502), with
# fewer payments and shorter faults (10 s of SIGKILLs, 15 s of outage).
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use IO::Socket::INET;
use IPC::Run;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $started_at = time;

# Over HTTPS (t/041_faults_tls.pl), a shorter run.
my $TLS = $ENV{PAYSYNC_FAULTS_TLS} ? 1 : 0;

# Payments per class; seconds of SIGKILLs; seconds the channel is down and
# when in them the second immediate restart comes; seconds the first
# checks are spread over.
my $PER_CLASS = $TLS ? 300 : 1000;
my $KILL_SECONDS = $TLS ? 10 : 20;
my $OUTAGE_SECONDS = $TLS ? 15 : 30;
my $RESTART_IN_OUTAGE = $TLS ? 6 : 12;
my $SPREAD_SECONDS = $TLS ? 20 : 40;

# The classes: name (the payment ids' prefix), the mock script (see
# t/mock/README.md) and the status it must end in, 'pending' for a script
# that never lets paysync conclude.  Every payment has the schedule
# {Ns,1s,2s}: its third "pending" answer expires it, so a script that
# finishes never gives more than two.  Whatever the faults do to a script
# (an answer lost with a killed worker, errors while the channel is down),
# paysync sees a subsequence of it with errors in between, so each class
# has one possible end.  T1200 answers 1.2 s late, past the 1 s request
# timeout (a timeout error, or "pending" if it slips through); the mock
# stops counting such a request as in flight once paysync has hung up
# (see "abandoned" in t/mock/README.md), so a retry is no overlap.
my @CLASSES = (
	[ 'pendpaid', 'P,S',                'succeeded' ],
	[ 'pendfail', 'P,P,F',              'failed' ],
	[ 'burst',    'E500,E503,E502,S',   'succeeded' ],
	[ 'retry',    'R1,R2,S',            'succeeded' ],
	[ 'timeout',  'T1200,P,S',          'succeeded' ],
	[ 'garbage',  'J,M,U,S',            'succeeded' ],
	[ 'mixed',    'E502,P,R1,J,C',      'closed' ],
	[ 'expire',   'P',                  'expired' ],
	[ 'errtail',  'P,P,E503',           'pending' ],
	[ 'garbtail', 'P,J',                'pending' ],
);

# Refunds per class (as many as payments per class), and their classes as
# above: two refunds of each payment of the class pendpaid, their scripts in their refund ids (the
# last segment of the refund's path).
my $REFUNDS_PER_CLASS = $PER_CLASS;
my @REFUND_CLASSES = (
	[ 'rpaid', 'P,E503,S', 'succeeded' ],
	[ 'rfail', 'R1,J,P,F', 'failed' ],
);

# The channel's own word for each final status the scripts lead to.
my %CHANNEL_WORD = (succeeded => 'PAID', failed => 'FAILED',
	closed => 'CLOSED', expired => 'WAIT');

# ---------------------------------------------------------------- the mock

# One log for both runs of the mock: the second run continues the attempt
# counts from it (--resume), and its lines are every request received.
my $mock_name = $TLS ? 'mock_040_faults_tls' : 'mock_040_faults';
my $mock_log = "$PostgreSQL::Test::Utils::tmp_check/$mock_name.log";
my $mock_stderr = "$PostgreSQL::Test::Utils::tmp_check/$mock_name.stderr";

# A free TCP port on 127.0.0.1 below the ephemeral range, so that while the
# mock is down no outgoing connection of paysync's takes it.
sub free_port
{
	for (1 .. 200)
	{
		my $port = 20000 + int(rand(12000));
		my $sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
			LocalPort => $port, Proto => 'tcp', Listen => 1, ReuseAddr => 1);
		next unless $sock;
		close $sock;
		return $port;
	}
	die 'no free port found';
}

# Starts mock_channel on $port with a 30 ms latency, continuing the attempt
# counts of the log; tries again for up to 15 s if the port is still taken.
# Returns a hash like start_mock's.
sub start_fault_mock
{
	my ($port) = @_;
	my $deadline = time + 15;
	my $bin = "$FindBin::Bin/mock/mock_channel";
	die 'mock channel not built: run make -C t/mock' unless -x $bin;
	while (1)
	{
		my $out = '';
		my $handle = IPC::Run::start(
			[ $bin, '--port', $port, '--log', $mock_log, '--resume',
				'--latency-ms', '30' ],
			'>', \$out, '2>>', $mock_stderr);
		while ($out !~ /port=\d+/ && $handle->pumpable && time < $deadline)
		{
			$handle->pump_nb;
			usleep(10_000);
		}
		return { handle => $handle, port => $port, log => $mock_log }
		  if $out =~ /port=(\d+)/;
		$handle->kill_kill;
		die "mock channel did not start on port $port: see $mock_stderr"
		  if time >= $deadline;
		usleep(200_000);
	}
}

# nginx serving TLS in front of the mock on $mock_port (a CA and a
# certificate for 127.0.0.1 made here); returns the channel's base_url.
my $tls_dir;
sub start_tls_front
{
	my ($mock_port) = @_;
	$tls_dir = PostgreSQL::Test::Utils::tempdir;
	my $d = $tls_dir;
	make_rsa_key($d, $_) for qw(ca server);
	run_openssl([ 'req', '-x509', '-new', '-key', "$d/ca.key", '-days', '2',
		'-subj', '/CN=paysync faults CA', '-out', "$d/ca.crt" ]);
	run_openssl([ 'req', '-new', '-key', "$d/server.key", '-subj', '/CN=127.0.0.1',
		'-out', "$d/server.csr" ]);
	spew_file("$d/server.ext", "subjectAltName = IP:127.0.0.1\n");
	run_openssl([ 'x509', '-req', '-in', "$d/server.csr", '-CA', "$d/ca.crt", '-CAkey',
		"$d/ca.key", '-set_serial', '1', '-days', '2', '-extfile', "$d/server.ext",
		'-out', "$d/server.crt" ]);
	my $port = free_port();
	start_nginx($d, "	access_log off;
	keepalive_requests 1000000;
	server {
		listen 127.0.0.1:$port ssl http2;
		ssl_certificate $d/server.crt;
		ssl_certificate_key $d/server.key;
		location / { proxy_pass http://127.0.0.1:$mock_port; }
	}
");
	return "https://127.0.0.1:$port";
}

# --------------------------------------------------------------- database

my $port = free_port();
my $mock = start_fault_mock($port);
# log_min_messages = warning: the server log keeps ERRORs too ('log' ranks
# above 'error' there), so that a worker that errors out says why.
my $node = new_paysync_node('faults',
	conf => "paysync.request_timeout = '1s'\nlog_min_messages = warning\n");
# Without the circuit breaker (t/060_politeness.pl tests it): after the
# outage its probes take the oldest due payments, which the nudges below
# make those whose scripts answer 5xx; two such probes in a row stretch the
# pause to 60 s, past this test's settling window.
if ($TLS)
{
	my $url = start_tls_front($port);
	$node->safe_psql('postgres',
		"SELECT paysync.create_channel('mock', 'http_json', '$url', jsonb_build_object("
		  . q{'path', '/pay/{payment_id}', 'status_map', '} . STATUS_MAP . q{'::jsonb, }
		  . "'pause_after_errors', 0, 'ca_cert', pg_read_file('$tls_dir/ca.crt')))");
}
else
{
	create_mock_channel($node, 'mock', $mock, '{"pause_after_errors": 0}');
}

# Runs query; its output, or undef if it failed (the server may be down or
# restarting at any moment of the fault phase).
sub try_sql
{
	my ($query) = @_;
	my ($ret, $out) = $node->psql('postgres', $query);
	return $ret == 0 ? $out : undef;
}

# The worker's pid, or undef while there is none (or no server).
sub worker_pid
{
	my $pid = try_sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'paysync worker'});
	return (defined $pid && $pid =~ /^(\d+)$/) ? $1 : undef;
}

# Sleeps until the time t (no-op if past).
sub sleep_until
{
	my ($t) = @_;
	my $left = $t - time;
	usleep(int($left * 1e6)) if $left > 0;
}

# The classes as a table, to join payments with what they must become.
$node->safe_psql('postgres',
	"CREATE TABLE fault_class (name text PRIMARY KEY, script text NOT NULL, expected text NOT NULL);\n"
	  . 'INSERT INTO fault_class VALUES '
	  . join(', ', map { '(' . join(', ', map { lit($_) } @$_) . ')' } @CLASSES));

# The class of a payment: its id up to the first '_'.
my $CLASS_JOIN = q{JOIN fault_class c ON c.name = split_part(p.payment_id, '_', 1)};

$node->safe_psql('postgres',
	"CREATE TABLE fault_refund_class (name text PRIMARY KEY, script text NOT NULL, expected text NOT NULL);\n"
	  . 'INSERT INTO fault_refund_class VALUES '
	  . join(', ', map { '(' . join(', ', map { lit($_) } @$_) . ')' } @REFUND_CLASSES));
my $REFUND_CLASS_JOIN = q{JOIN fault_refund_class c ON c.name = split_part(r.refund_id, '_', 1)};

my $payment_count = $PER_CLASS * @CLASSES;
my $refund_count = $REFUNDS_PER_CLASS * @REFUND_CLASSES;
my $tracked_at = time;
# First checks spread over 40 s (20 s over TLS), so that every fault meets payments at
# every stage of their scripts.
$node->safe_psql('postgres', qq{
	SELECT count(paysync.track(c.name || '_' || g || '~' || c.script, 'mock',
		schedule => ('{' || (1 + g % $SPREAD_SECONDS) || 's,1s,2s}')::interval[]))
	FROM fault_class c, generate_series(1, $PER_CLASS) g});
is($node->safe_psql('postgres', 'SELECT count(*) FROM paysync.payments'),
	$payment_count, "$payment_count payments tracked");
$node->safe_psql('postgres', qq{
	SELECT count(paysync.track_refund(c.name || '_' || g || '~' || c.script,
		'pendpaid_' || g || '~P,S',
		schedule => ('{' || (1 + g % $SPREAD_SECONDS) || 's,1s,2s}')::interval[]))
	FROM fault_refund_class c, generate_series(1, $REFUNDS_PER_CLASS) g});
is($node->safe_psql('postgres', 'SELECT count(*) FROM paysync.refunds'),
	$refund_count, "$refund_count refunds tracked");

# ------------------------------------------------------------------ faults

# 1. SIGKILL the worker every second for 20 s; the postmaster restarts it
# (after resetting every backend: a killed backend is a crash).
my %worker_pids;
my $kills = 0;
my $kill_start = time;
for my $second (1 .. $KILL_SECONDS)
{
	sleep_until($kill_start + $second);
	my $deadline = time + 15;
	my $pid;
	usleep(50_000) until defined($pid = worker_pid()) || time > $deadline;
	next unless defined $pid;
	$worker_pids{$pid} = 1;
	$kills++ if kill 'KILL', $pid;
}
note sprintf('SIGKILLed the worker %d times in %.1f s', $kills, time - $kill_start);
is($kills, $KILL_SECONDS, "the worker was there to be SIGKILLed $KILL_SECONDS times");

# 2. An immediate restart, with the channel up.
$node->stop('immediate');
$node->start;

# 3. The channel down for 30 s, with the second immediate restart in the
# middle of it; then up again on the same port, its scripts going on.
my %stats_before = %{ mock_stats($mock) };
my $down_at = time;
stop_mock($mock);
sleep_until($down_at + $RESTART_IN_OUTAGE);
$node->stop('immediate');
$node->start;
sleep_until($down_at + $OUTAGE_SECONDS);
$mock = start_fault_mock($port);
note sprintf('the channel was down for %.1f s', time - $down_at);

# ------------------------------------------------------------------ settle

# Wait (at most 100 s) until every payment whose script finishes is final
# and every payment whose script ends in errors has met them.  A payment
# that met errors while the channel was down may sit in a backoff of 16 s
# or more, and its script's own errors double it again; so every 2 s the
# payments in a backoff of that kind (errors >= 3, due more than 3 s from
# now) are nudged with check_now(), as an operator would after an outage.
# check_now() leaves a payment with a request in flight alone, and a
# payment with no next check at all is never nudged (such a one would be a
# lost payment, and fails the test).  The nudge locks the payments in
# payment_id order, then the refunds in refund_id order, as the worker's
# recording does, so that the two never deadlock.
my $unsettled_sql = qq{
	SELECT (SELECT count(*) FROM paysync.payments p $CLASS_JOIN
			WHERE (c.expected <> 'pending' AND p.status = 'pending')
			   OR (c.expected = 'pending' AND p.errors = 0))
		 + (SELECT count(*) FROM paysync.refunds r WHERE r.status = 'pending')};
my $nudge_sql = qq{
	SELECT (SELECT count(*) FROM (
		SELECT p.payment_id
		FROM paysync.payments p $CLASS_JOIN
		WHERE c.expected <> 'pending' AND p.status = 'pending' AND p.errors >= 3
		  AND p.next_check_at > now() + interval '3 s'
		ORDER BY p.payment_id) n,
	LATERAL paysync.check_now(n.payment_id))
	+ (SELECT count(*) FROM (
		SELECT r.refund_id FROM paysync.refunds r
		WHERE r.status = 'pending' AND r.errors >= 3
		  AND r.next_check_at > now() + interval '3 s'
		ORDER BY r.refund_id) n,
	LATERAL paysync.check_refund_now(n.refund_id))};
my $settle_start = time;
my $settle_deadline = $settle_start + 100;
my ($unsettled, $nudged, $next_nudge) = (undef, 0, 0);
while (time < $settle_deadline)
{
	$unsettled = try_sql($unsettled_sql);
	last if defined $unsettled && $unsettled eq '0';
	if (time >= $next_nudge)
	{
		my $n = try_sql($nudge_sql);
		$nudged += $n if defined $n && $n =~ /^\d+$/;
		$next_nudge = time + 2;
	}
	usleep(250_000);
}
is($unsettled, '0', 'every payment settled (final, or pending after its script\'s errors)');
note sprintf('settled %.1f s after the channel came back; %d nudges with check_now()',
	time - $settle_start, $nudged);

# --------------------------------------------------------------- the rules

# Statuses by class, printed.
my $by_class = $node->safe_psql('postgres', qq{
	SELECT c.name, c.script, c.expected, p.status, count(*)
	FROM paysync.payments p $CLASS_JOIN
	GROUP BY 1, 2, 3, 4 ORDER BY 1, 4});
diag "class|script|expected|status|payments\n$by_class";

my ($final, $pending) = split /\|/, $node->safe_psql('postgres',
	q{SELECT count(*) FILTER (WHERE status <> 'pending'), count(*) FILTER (WHERE status = 'pending')
	  FROM paysync.payments});
diag "final payments: $final, pending payments: $pending";

# Every payment is final or pending because its script never finishes.
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM paysync.payments p $CLASS_JOIN
	WHERE p.status = 'pending' AND c.expected <> 'pending'}),
	'0', 'no payment whose script finishes is still pending');

# Each payment ends as its script says, with the channel's word for it.
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM paysync.payments p $CLASS_JOIN
	WHERE p.status::text <> c.expected}),
	'0', 'every payment has the status its script leads to');
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM paysync.payments p $CLASS_JOIN
	WHERE p.status <> 'pending' AND p.channel_status IS DISTINCT FROM
		CASE p.status::text } . join(' ', map { "WHEN '$_' THEN '$CHANNEL_WORD{$_}'" } sort keys %CHANNEL_WORD) . q{ END}),
	'0', "every final payment keeps the channel's word for its status");

# Exactly one event per status change.
my %events = map { split /=/ } split /\n/, $node->safe_psql('postgres', q{
	WITH ev AS (
		SELECT payment_id, count(*) AS n, min(status::text) AS lo, max(status::text) AS hi
		FROM paysync.events WHERE refund_id IS NULL GROUP BY payment_id)
	SELECT 'total=' || (SELECT count(*) FROM paysync.events WHERE refund_id IS NULL)
	UNION ALL SELECT 'several=' || count(*) FROM ev WHERE n > 1
	UNION ALL SELECT 'final_not_one=' || count(*)
		FROM paysync.payments p LEFT JOIN ev USING (payment_id)
		WHERE p.status <> 'pending' AND coalesce(ev.n, 0) <> 1
	UNION ALL SELECT 'pending_with_event=' || count(*)
		FROM paysync.payments p JOIN ev USING (payment_id) WHERE p.status = 'pending'
	UNION ALL SELECT 'status_differs=' || count(*)
		FROM paysync.payments p JOIN ev USING (payment_id)
		WHERE ev.lo <> p.status::text OR ev.hi <> p.status::text
	UNION ALL SELECT 'wrong_source=' || count(*)
		FROM paysync.events e JOIN paysync.payments p USING (payment_id)
		WHERE e.refund_id IS NULL AND (e.previous <> 'pending'
		   OR e.source <> CASE WHEN p.status = 'expired' THEN 'expiry' ELSE 'poll' END)
	UNION ALL SELECT 'orphan=' || count(*)
		FROM ev WHERE NOT EXISTS (SELECT 1 FROM paysync.payments p WHERE p.payment_id = ev.payment_id)});
diag join(', ', map { "$_ $events{$_}" } sort keys %events);
is($events{total}, $final, 'as many events as final payments');
is($events{several}, '0', 'no payment has more than one event');
is($events{final_not_one}, '0', 'every final payment has exactly one event');
is($events{pending_with_event}, '0', 'no pending payment has an event');
is($events{status_differs}, '0', "every event's status is its payment's status");
is($events{wrong_source}, '0', 'every event is pending -> status, source poll or expiry');
is($events{orphan}, '0', 'no event for a payment that is not tracked');

# The refunds: each ends as its script says, with exactly one event, its
# own; none lost, none doubled.
my $refunds_by_class = $node->safe_psql('postgres', qq{
	SELECT c.name, c.script, c.expected, r.status, count(*)
	FROM paysync.refunds r $REFUND_CLASS_JOIN
	GROUP BY 1, 2, 3, 4 ORDER BY 1, 4});
diag "refund class|script|expected|status|refunds\n$refunds_by_class";
is($node->safe_psql('postgres', qq{
	SELECT count(*) FROM paysync.refunds r $REFUND_CLASS_JOIN
	WHERE r.status::text <> c.expected
	   OR r.channel_status IS DISTINCT FROM
		CASE r.status::text } . join(' ', map { "WHEN '$_' THEN '$CHANNEL_WORD{$_}'" } sort keys %CHANNEL_WORD) . q{ END}),
	'0', 'every refund has the status its script leads to, with the channel\'s word');
my %refund_events = map { split /=/ } split /\n/, $node->safe_psql('postgres', q{
	WITH ev AS (
		SELECT refund_id, count(*) AS n, min(status::text) AS lo, max(status::text) AS hi,
			   min(payment_id) AS payment_id, min(source) AS source
		FROM paysync.events WHERE refund_id IS NOT NULL GROUP BY refund_id)
	SELECT 'total=' || (SELECT count(*) FROM ev)
	UNION ALL SELECT 'not_one=' || count(*)
		FROM paysync.refunds r LEFT JOIN ev USING (refund_id)
		WHERE coalesce(ev.n, 0) <> 1
	UNION ALL SELECT 'differs=' || count(*)
		FROM paysync.refunds r JOIN ev USING (refund_id)
		WHERE ev.lo <> r.status::text OR ev.hi <> r.status::text
		   OR ev.payment_id <> r.payment_id OR ev.source <> 'poll'});
diag join(', ', map { "refund events $_ $refund_events{$_}" } sort keys %refund_events);
is($refund_events{total}, $refund_count, 'one event per refund');
is($refund_events{not_one}, '0', 'no refund lost (without its event) or doubled');
is($refund_events{differs}, '0', "every refund event is its refund's change, source poll");

# Errors never expire a payment: an expired one's last answer was a good
# "pending" (errors 0, step 3), and no payment whose script ends in errors
# is expired.
my ($expired, $expired_after_error, $expired_short, $errtail_expired) =
  split /\|/, $node->safe_psql('postgres', qq{
	SELECT count(*) FILTER (WHERE p.status = 'expired'),
		count(*) FILTER (WHERE p.status = 'expired' AND p.errors <> 0),
		count(*) FILTER (WHERE p.status = 'expired' AND p.step <> 3),
		count(*) FILTER (WHERE p.status = 'expired' AND c.expected = 'pending')
	FROM paysync.payments p $CLASS_JOIN});
diag "expired: $expired (after an error: $expired_after_error, "
  . "not after 3 pending answers: $expired_short, script ending in errors: $errtail_expired)";
is($expired_after_error, '0', 'no payment expired whose last answer was an error');
is($expired_short, '0', 'every expired payment had its three pending answers');
is($errtail_expired, '0', 'no payment whose script ends in errors expired');

# The mock's counts, over its two runs: every request is in the log, with
# its attempt number, so the action that answered it follows from the
# script (the Nth step, the last one once past the end).  /_stats of the
# first run misses the requests between its reading and the stop.
my %stats_after = %{ mock_stats($mock) };
my @log = mock_log($mock);
my %answered;
for my $line (@log)
{
	my ($id, $attempt) = @$line[ 2, 3 ];
	my @steps = split /,/, (split /~/, $id)[-1];
	$answered{ $steps[ ($attempt < @steps ? $attempt : @steps) - 1 ] }++;
}
my $attempts = $node->safe_psql('postgres', 'SELECT sum(attempts) FROM paysync.payments');
diag sprintf('mock: %d requests received (%d + %d by /_stats), answered with: %s; '
	  . 'paysync attempts (claims, including those the outage refused): %d',
	scalar(@log), $stats_before{requests}, $stats_after{requests},
	join(' ', map { "$_=$answered{$_}" } sort keys %answered), $attempts);

# Never two requests for one payment in flight at once.
my $max_per_id = $stats_before{max_in_flight_per_id} > $stats_after{max_in_flight_per_id}
  ? $stats_before{max_in_flight_per_id} : $stats_after{max_in_flight_per_id};
my $overlapping = $stats_before{overlapping} + $stats_after{overlapping};
my $abandoned = $stats_before{abandoned} + $stats_after{abandoned};
my @overlap_lines = grep { /in flight for id/ } split /\n/, slurp_file($mock_stderr);
diag "most requests in flight for one payment: $max_per_id; requests that overlapped another of theirs: $overlapping; "
  . "delayed answers whose client had hung up when the next request came: $abandoned";
diag 'overlaps (first 10): '
  . join('; ', @overlap_lines[ 0 .. ($#overlap_lines < 9 ? $#overlap_lines : 9) ])
  if @overlap_lines;
cmp_ok($max_per_id, '<=', 1, 'never two requests for one payment in flight at once');
is(scalar(@overlap_lines), 0, 'the mock reported no overlap on stderr either');

# The worker runs, and how often it started; it never stopped on an error
# of its own (a SIGKILL or an immediate stop ends it by a signal).
my $server_log = slurp_file($node->logfile);
my $starts = () = $server_log =~ /paysync worker started/g;
my @worker_errors = $server_log =~ /^(.*\bERROR: .*)$/mg;
my $error_exits = () = $server_log =~ /"paysync worker" \(PID \d+\) exited with exit code 1/g;
diag "worker: exited on an error $error_exits times; ERROR lines in the server log: " . scalar(@worker_errors)
  . join('', map { "\n  $_" } @worker_errors[ 0 .. ($#worker_errors < 4 ? $#worker_errors : 4) ]);
is($error_exits, 0, 'the worker never exited on an error');
diag sprintf('worker: %d SIGKILLs, %d pids seen, %d starts in the server log (%d restarts)',
	$kills, scalar(keys %worker_pids), $starts, $starts - 1);
wait_for_sql($node,
	q{SELECT state IN ('running', 'idle') FROM paysync.worker_status()},
	't', 'the worker is running at the end');

diag sprintf('wall time: %.1f s (%.1f s from tracking to the end)',
	time - $started_at, time - $tracked_at);

stop_mock($mock);
$node->stop;
done_testing();
