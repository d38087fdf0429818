# 021_worker_waits.pl: where the worker cannot work it waits quietly (one
# LOG line, the same process, a look every few seconds) and then carries on:
# an extension older than the library, a read-only database, a database that
# does not exist (or is dropped under it).  Also: a notify channel NOTIFY
# would refuse is refused as a setting, a huge response header is reported
# as such, and worker_status().last_error is never cut inside a character.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use IO::Socket::INET;
use POSIX ();
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $mock = start_mock();

# The pid of the paysync worker, or '' if none runs.
sub worker_pid
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'paysync worker'");
}

# What pg_stat_activity shows the worker doing.
sub worker_activity
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT query FROM pg_stat_activity WHERE backend_type = 'paysync worker'");
}

# The server log written since byte offset $from.
sub log_since
{
	my ($node, $from) = @_;
	return substr(slurp_file($node->logfile), $from);
}

# How many times $re matches in $text.
sub count_of
{
	my ($text, $re) = @_;
	my $n = () = $text =~ /$re/g;
	return $n;
}

# Waits up to 30 s until the log since $from matches $re.
sub wait_for_log
{
	my ($node, $re, $from, $what) = @_;
	for (1 .. 300)
	{
		return ok(1, $what) if log_since($node, $from) =~ $re;
		usleep(100_000);
	}
	return ok(0, $what);
}

# The worker keeps its pid for $seconds (it waits, it does not restart).
sub same_worker_for
{
	my ($node, $seconds, $what) = @_;
	my $pid = worker_pid($node);
	sleep $seconds;
	my $now = worker_pid($node);
	ok($pid =~ /^\d+$/ && $now eq $pid, $what) or diag("pid $pid, then $now");
	return $pid;
}

# --- an extension older than the library: wait, then ALTER EXTENSION UPDATE --
my $node = new_paysync_node('waits', no_extension => 1);
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', 'CREATE EXTENSION paysync');
my $from = -s $node->logfile;
$node->safe_psql('postgres', q{CREATE EXTENSION paysync VERSION '0.1'});
create_mock_channel($node, 'mock', $mock);
$node->safe_psql('postgres', q{SELECT paysync.track('old_schema', 'mock', schedule => '{1s}')});
wait_for_log($node,
	qr/paysync worker is waiting: extension paysync is version 0\.1 in database "postgres", this library needs \d+\.\d+/,
	$from, 'an older extension: the worker says it waits');
like(log_since($node, $from), qr/HINT:  Run ALTER EXTENSION paysync UPDATE in database "postgres"\./,
	'and says what to run');
same_worker_for($node, 6, 'it waits without restarting');
my $log = log_since($node, $from);
is(count_of($log, qr/extension paysync is version 0\.1/), 1, 'it says so once');
is(count_of($log, qr/ERROR|FATAL|exited with exit code/), 0,
	'no ERROR, FATAL or restart while it waits');
is(mock_requests($mock, 'old_schema'), 0, 'no payment is checked against the old schema');
is($node->safe_psql('other', 'SELECT state FROM paysync.worker_status()'),
	'waiting for extension', 'worker_status says waiting for extension');
is(worker_activity($node), 'paysync: waiting for ALTER EXTENSION paysync UPDATE',
	'pg_stat_activity says what it waits for');
$node->safe_psql('postgres', 'ALTER EXTENSION paysync UPDATE');
wait_payment_status($node, 'old_schema', 'succeeded');

# --- a read-only database: wait, then carry on -------------------------------
$from = -s $node->logfile;
my $pid = worker_pid($node);
$node->safe_psql('postgres', 'ALTER SYSTEM SET default_transaction_read_only = on');
$node->reload;
wait_for_log($node, qr/paysync worker is waiting: transactions in database "postgres" are read-only/,
	$from, 'read-only: the worker says it waits');
$node->safe_psql('postgres', q{
	SET default_transaction_read_only = off;
	SELECT paysync.track('read_only', 'mock', schedule => '{1s}')});
same_worker_for($node, 6, 'read-only: it waits without restarting');
is(worker_pid($node), $pid, 'the same worker as before read-only');
$log = log_since($node, $from);
is(count_of($log, qr/read-only/), 1, 'it says so once');
is(count_of($log, qr/ERROR|FATAL|exited with exit code/), 0,
	'no ERROR, FATAL or restart while read-only');
is(mock_requests($mock, 'read_only'), 0, 'a due payment is not checked while read-only');
is(status_of($node, 'read_only'), 'pending', 'it stays pending');
is($node->safe_psql('postgres', 'SELECT state FROM paysync.worker_status()'),
	'idle', 'worker_status says idle while read-only');
is(worker_activity($node), 'paysync: read-only, waiting for writable transactions',
	'pg_stat_activity says it waits for writable transactions');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET default_transaction_read_only');
$node->reload;
wait_payment_status($node, 'read_only', 'succeeded');

# --- paysync.notify_channel: a name NOTIFY would refuse is refused ------------
my $long = 'n' x 70;
my ($rc, $out, $err) = $node->psql('postgres',
	"ALTER SYSTEM SET paysync.notify_channel = '$long'");
isnt($rc, 0, 'ALTER SYSTEM refuses a 70-byte notify channel');
like($err, qr/invalid value for parameter "paysync.notify_channel"/, 'as an invalid value');
like($err, qr/DETAIL:  The NOTIFY channel name is 70 bytes long; the longest allowed is 63 bytes\./,
	'saying how long it may be');
($rc, $out, $err) = $node->psql('postgres', q{ALTER SYSTEM SET paysync.notify_channel = ''});
like($err, qr/must not be empty/, 'ALTER SYSTEM refuses an empty notify channel');
($rc, $out, $err) = $node->psql('postgres', "SET paysync.notify_channel = '$long'");
isnt($rc, 0, 'SET refuses it too');
is($node->safe_psql('postgres', "ALTER SYSTEM SET paysync.notify_channel = '" . ('n' x 63) . "'"),
	'', 'a 63-byte name is accepted');
$node->safe_psql('postgres', 'ALTER SYSTEM RESET paysync.notify_channel');

# Written into the file behind PostgreSQL's back, the reload keeps the old name.
$from = -s $node->logfile;
$pid = worker_pid($node);
$node->append_conf('postgresql.conf', "paysync.notify_channel = '$long'");
$node->reload;
wait_for_log($node, qr/invalid value for parameter "paysync.notify_channel"/, $from,
	'a reload with a 70-byte name logs it as invalid');
is($node->safe_psql('postgres', 'SHOW paysync.notify_channel'), 'paysync',
	'and keeps the name it had');
$node->safe_psql('postgres', q{SELECT paysync.track('after_bad_name', 'mock', schedule => '{1s}')});
wait_payment_status($node, 'after_bad_name', 'succeeded');
is($node->safe_psql('postgres',
		q{SELECT count(*) FROM paysync.events WHERE payment_id = 'after_bad_name'}),
	'1', 'events are still written');
is(worker_pid($node), $pid, 'the worker kept running');
$node->stop;

# --- a database that does not exist: wait, then connect -----------------------
my $nodb = new_paysync_node('nodb', no_extension => 1,
	conf => "paysync.database = 'nosuch'");
$nodb->safe_psql('postgres', 'CREATE EXTENSION paysync');
wait_for_log($nodb, qr/paysync worker is waiting: database "nosuch" does not exist/, 0,
	'a missing database: the worker says it waits');
$nodb->poll_query_until('postgres',
	q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'paysync worker'});
same_worker_for($nodb, 7, 'it waits without restarting');
$log = slurp_file($nodb->logfile);
is(count_of($log, qr/waiting: database "nosuch" does not exist/), 1, 'it says so once');
cmp_ok(count_of($log, qr/FATAL:  database "nosuch" does not exist/), '<=', 1,
	'at most one FATAL (the first worker trying to connect)');
cmp_ok(count_of($log, qr/background worker "paysync worker" \(PID \d+\) exited/), '<=', 1,
	'at most one restart');
is($nodb->safe_psql('postgres', 'SELECT state FROM paysync.worker_status()'),
	'waiting for extension', 'worker_status says waiting for extension');
is(worker_activity($nodb), 'paysync: waiting for its database',
	'pg_stat_activity says it waits for its database');

# UTF8, so that cutting inside a character would show below.
$nodb->safe_psql('postgres',
	q{CREATE DATABASE nosuch ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
$nodb->safe_psql('nosuch', 'CREATE EXTENSION paysync');
$nodb->safe_psql('nosuch',
	"SELECT paysync.create_channel('mock', 'http_json', 'http://127.0.0.1:$mock->{port}', "
	  . qq{'{"path": "/pay/{payment_id}", "status_map": @{[STATUS_MAP]}}')});
$nodb->safe_psql('nosuch', q{SELECT paysync.track('late_db', 'mock', schedule => '{1s}')});
ok($nodb->poll_query_until('nosuch',
		q{SELECT status FROM paysync.payments WHERE payment_id = 'late_db'}, 'succeeded'),
	'once the database exists the worker checks payments there');

# --- worker_status().last_error is cut on a character boundary ----------------
# A trigger makes the worker's recording fail with a long multibyte message
# (read as bytes: text cut inside a character would break text functions).
$nodb->safe_psql('nosuch', q{
	CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN RAISE EXCEPTION '%', repeat('é', 300); END $$;
	CREATE TRIGGER refuse BEFORE INSERT ON paysync.events
		FOR EACH ROW EXECUTE FUNCTION public.refuse();
	SELECT paysync.track('refused', 'mock', schedule => '{1s}');
});
ok($nodb->poll_query_until('nosuch',
		q{SELECT coalesce(substr(last_error::bytea, 1, 10) = convert_to('worker: é', 'UTF8'), false)
		  FROM paysync.worker_status()}),
	'the worker error is kept as last_error');
my $hex = $nodb->safe_psql('nosuch',
	q{SELECT encode(last_error::bytea, 'hex') FROM paysync.worker_status()});
my $bytes = pack('H*', $hex);
cmp_ok(length($bytes), '<=', 255, 'last_error is at most 255 bytes');
ok(utf8::decode(my $copy = $bytes), 'last_error is valid UTF-8 (not cut inside a character)');
$nodb->safe_psql('nosuch', 'DROP TRIGGER refuse ON paysync.events');
ok($nodb->poll_query_until('nosuch',
		q{SELECT status FROM paysync.payments WHERE payment_id = 'refused'}, 'succeeded'),
	'without the trigger the payment is recorded');

# --- a huge response header ---------------------------------------------------
# A tiny HTTP server: /pay/one_line answers with one 500 kB header line,
# /pay/many_lines with 100 header lines of 5 kB, anything else plainly.
sub start_header_server
{
	my $server = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => 0,
		Listen => 16,
		ReuseAddr => 1,
		Proto => 'tcp') or die "listen: $!";
	my $port = $server->sockport;
	my $child = fork // die "fork: $!";
	if ($child == 0)
	{
		$SIG{PIPE} = 'IGNORE';
		while (my $c = $server->accept)
		{
			my $request = '';
			while ($request !~ /\r\n\r\n/)
			{
				last unless sysread($c, $request, 4096, length $request);
			}
			my ($path) = $request =~ m{^\w+ (\S+)};
			$path //= '';
			my $extra = '';
			$extra = 'X-Pad: ' . ('a' x 500_000) . "\r\n" if $path =~ /one_line/;
			$extra = join('', map { "X-Pad-$_: " . ('a' x 5000) . "\r\n" } 1 .. 100)
			  if $path =~ /many_lines/;
			my $body = '{"status":"PAID"}';
			print $c "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			  . 'Content-Length: ' . length($body) . "\r\nConnection: close\r\n"
			  . "$extra\r\n$body";
			close $c;
		}
		POSIX::_exit(0);
	}
	close $server;
	return { pid => $child, port => $port };
}

my $headers = start_header_server();
$nodb->safe_psql('nosuch',
	"SELECT paysync.create_channel('headers', 'http_json', 'http://127.0.0.1:$headers->{port}', "
	  . qq{'{"path": "/pay/{payment_id}", "status_map": @{[STATUS_MAP]}}')});
$nodb->safe_psql('nosuch', q{
	SELECT paysync.track(p, 'headers', schedule => '{1s,1h}')
	FROM unnest(ARRAY['plain', 'one_line', 'many_lines']) p});
ok($nodb->poll_query_until('nosuch',
		q{SELECT status FROM paysync.payments WHERE payment_id = 'plain'}, 'succeeded'),
	'the header server answers plainly');
for my $id ('one_line', 'many_lines')
{
	ok($nodb->poll_query_until('nosuch',
			"SELECT last_error IS NOT NULL FROM paysync.payments WHERE payment_id = '$id'"),
		"$id: the check failed");
	like($nodb->safe_psql('nosuch',
			"SELECT last_error FROM paysync.payments WHERE payment_id = '$id'"),
		qr/^response header too large/, "$id: reported as a response header too large");
}
kill 'KILL', $headers->{pid};
waitpid($headers->{pid}, 0);

# --- the database dropped under the worker: it waits again ---------------------
$from = -s $nodb->logfile;
$nodb->safe_psql('postgres', 'DROP DATABASE nosuch WITH (FORCE)');
wait_for_log($nodb, qr/paysync worker is waiting: database "nosuch" does not exist/, $from,
	'a dropped database: the worker says it waits');
same_worker_for($nodb, 6, 'it waits without restarting');
is(count_of(log_since($nodb, $from), qr/FATAL:  database "nosuch" does not exist/), 1,
	'after one failed connection');
$nodb->stop;

stop_mock($mock);
done_testing();
