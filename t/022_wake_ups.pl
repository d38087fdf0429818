# 022_wake_ups.pl: due work is checked on time whatever made it due.
#
# A payment tracked right after createdb and CREATE
# EXTENSION, on a server started before its database existed, is checked on
# its schedule like any other (issue 20, items 1 and 4).  The worker waits
# for its database and connects to it as soon as it exists, with no gap in
# which worker_status() says "not running".  In the same transaction as
# the first payments, a mix of answers that must hold back no due check of
# the same channel: a request that times out, a 429 with Retry-After, runs
# of 500s, answers that are not JSON, an unknown status, a 404 forever.
#
# Then (issue 20, item 2): check_now() on a payment already made due by
# hand, and a hand edit of next_check_at alone, wake a worker that sleeps
# towards a later due time; the worker started for the new database is
# restarted after it dies, like the one it replaced.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# How late after it is due a check may reach the channel.
my $margin_s = 0.3;

my $mock = start_mock();
my $node = new_paysync_node('fresh', no_extension => 1,
	conf => "paysync.database = 'shop'");

# The worker is up and waiting for its database, as on a fresh server.
ok($node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'paysync worker'}),
	'the worker runs before its database exists');

# Watches worker_status() from another session while the database appears:
# every state it shows, every 20 ms, until told to stop.
$node->safe_psql('postgres', 'CREATE EXTENSION paysync');
my $watch = $node->background_psql('postgres', on_error_stop => 1);
$watch->query_safe(q{CREATE TABLE seen (at timestamptz, state text)});
$watch->query_until(qr/watching/, q{
\echo watching
DO $$
BEGIN
	FOR i IN 1 .. 150 LOOP
		INSERT INTO seen SELECT clock_timestamp(), state FROM paysync.worker_status();
		COMMIT;
		PERFORM pg_sleep(0.02);
	END LOOP;
END $$;
});

$node->safe_psql('postgres', 'CREATE DATABASE shop');
$node->safe_psql('shop', 'CREATE EXTENSION paysync');
$node->safe_psql('shop',
	"SELECT paysync.create_channel('wallet', 'http_json', 'http://127.0.0.1:$mock->{port}', "
	  . qq{'{"path": "/pay/{payment_id}", "timeout_ms": 1000, "status_map": @{[STATUS_MAP]}}')});

# Thirteen payments in one transaction, due 0.3 s apart.
my %mix = (
	'slow~T3000,P,S' => 'a first request that times out',
	'limited~R2,S' => 'a 429 with Retry-After: 2',
	'broken1~E500,E500,S' => 'two 500s',
	'broken2~E503,S' => 'a 503',
	'garbled1~J,S' => 'an answer that is not JSON',
	'garbled2~J,J,S' => 'two answers that are not JSON',
	'weird~U,S' => 'a status the map does not know',
	'gone~N' => 'a 404 forever',
	map { ("fine$_~P,S" => 'not paid, then paid') } 1 .. 5);
$node->safe_psql('shop',
	'BEGIN; '
	  . join('', map { 'SELECT paysync.track(' . lit($_) . q{, 'wallet', schedule => '{0.3s,0.3s,0.3s}'); } } sort keys %mix)
	  . 'COMMIT;');
# A track() that rolls back wakes nobody and is never checked.
$node->safe_psql('shop',
	q{BEGIN; SELECT paysync.track('rolled-back', 'wallet', schedule => '{0.05s}'); ROLLBACK;});
# The payment that must be checked on time.
$node->safe_psql('shop', q{SELECT paysync.track('wake-m', 'wallet', schedule => '{0.05s}')});

ok($node->poll_query_until('shop',
		q{SELECT status FROM paysync.payments WHERE payment_id = 'wake-m'}, 'succeeded'),
	'wake-m is checked');

# When each payment was first asked about, in seconds since the epoch.
sub first_request_at
{
	my ($id) = @_;
	my @arrivals = map { $_->[0] / 1e6 } grep { $_->[2] eq $id } mock_log($mock);
	return $arrivals[0];
}

# When a payment was first due: created_at plus the first delay.
sub first_due_at
{
	my ($id) = @_;
	return $node->safe_psql('shop',
		'SELECT extract(epoch FROM created_at + schedule[1]) FROM paysync.payments WHERE payment_id = '
		  . lit($id));
}

my $late = first_request_at('wake-m') - first_due_at('wake-m');
cmp_ok($late, '<=', $margin_s,
	"wake-m reached the channel within $margin_s s of its due time");
diag(sprintf('wake-m: first request %.3f s after it was due', $late));

# Every payment of the mix reached the channel on time the first time,
# whatever the others' answers.
for my $id (sort keys %mix)
{
	my $first = first_request_at($id);
	ok(defined $first, "$id ($mix{$id}) reached the channel");
	cmp_ok(($first // 1e12) - first_due_at($id), '<=', $margin_s,
		"$id ($mix{$id}): first request within $margin_s s of its due time");
}

# The good payments' second check came on time after their first answer:
# nothing in the mix (the slow request, the 429, the 500s) held it back.
ok($node->poll_query_until('shop',
		q{SELECT count(*) FROM paysync.payments WHERE payment_id LIKE 'fine%' AND status = 'succeeded'},
		'5'),
	'the good payments are paid');
for my $n (1 .. 5)
{
	my $id = "fine$n~P,S";
	my @arrivals = map { $_->[0] / 1e6 } grep { $_->[2] eq $id } mock_log($mock);
	cmp_ok($arrivals[1] - $arrivals[0], '<=', 0.3 + $margin_s,
		"$id: second check within $margin_s s of its due time");
}

is(mock_requests($mock, 'rolled-back'), 0, 'the rolled-back payment is never checked');

# worker_status() never said "not running" while the database appeared.
$watch->quit;
is($node->safe_psql('postgres',
		q{SELECT string_agg(DISTINCT state, ',') FROM seen WHERE state = 'not running'}),
	'', 'worker_status() never said "not running" while the database appeared');

# --- a payment made due by hand, then check_now() -----------------------------
# The worker sleeps towards the next due time it knows (an hour ahead, or
# its 10 s safety net); what a commit makes due sooner must wake it.

# Seconds from a statement's commit until the channel was first asked about
# $id, the statement run in database shop.
sub asked_after
{
	my ($id, $statement) = @_;
	my $before = mock_requests($mock, $id);
	my $committed = $node->safe_psql('shop',
		"$statement; SELECT extract(epoch FROM clock_timestamp())");
	$committed = (split /\n/, $committed)[-1];
	my $deadline = time + 8;
	usleep(20_000) while mock_requests($mock, $id) == $before && time < $deadline;
	my @arrivals = map { $_->[0] / 1e6 } grep { $_->[2] eq $id } mock_log($mock);
	return @arrivals > $before ? $arrivals[$before] - $committed : 99;
}

$node->safe_psql('shop', q{
	SELECT paysync.track(p, 'wallet', schedule => '{1h}')
	FROM unnest(ARRAY['by-hand~P', 'hand-then-check-now~P']) p});
# the worker has claimed and found nothing due before the hour
sleep 1;
# made due by hand with triggers off (as a replication tool would write it):
# nothing wakes the worker until check_now()
$node->safe_psql('shop', q{
	SET session_replication_role = replica;
	UPDATE paysync.payments SET next_check_at = now() WHERE payment_id = 'hand-then-check-now~P'});
sleep 1;
is(mock_requests($mock, 'hand-then-check-now~P'), 0,
	'a payment made due with triggers off is not noticed at once');
my $waited = asked_after('hand-then-check-now~P',
	q{SELECT paysync.check_now('hand-then-check-now~P')});
cmp_ok($waited, '<=', 1, 'check_now() on a payment made due by hand wakes the worker');
diag(sprintf('made due by hand, then check_now(): asked %.3f s after the commit', $waited));

$waited = asked_after('by-hand~P',
	q{UPDATE paysync.payments SET next_check_at = now() WHERE payment_id = 'by-hand~P'});
cmp_ok($waited, '<=', 1, 'an UPDATE that makes a payment due sooner wakes the worker');
diag(sprintf('made due by hand: asked %.3f s after the commit', $waited));

# --- the worker started for the new database is restarted after it dies -------
my $pid = $node->safe_psql('postgres',
	q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'paysync worker'});
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok($node->poll_query_until('postgres',
		qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'paysync worker' AND pid <> $pid}),
	'the worker is restarted after it was terminated');
$node->safe_psql('shop', q{SELECT paysync.track('after-restart', 'wallet', schedule => '{0.05s}')});
ok($node->poll_query_until('shop',
		q{SELECT status FROM paysync.payments WHERE payment_id = 'after-restart'}, 'succeeded'),
	'and checks payments again');

$node->stop;
stop_mock($mock);
done_testing();
