# 004_isolation.pl: one bad thing costs only its own payments.  Channel rows
# written past the validating trigger, whatever option of whatever type they
# hold, give only their own payments an error answer while a healthy
# channel's payments are checked on time; an answer that cannot be recorded
# does not lose the rest of its batch; the worker never exits over either.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $mock = start_mock();
my $node = new_paysync_node('isolation');
create_mock_channel($node, 'healthy', $mock);

sub worker_pid
{
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'paysync worker'");
}

my $pid = worker_pid();
like($pid, qr/^\d+$/, 'the worker runs');

# --- channel rows that skipped validation -----------------------------------
# Each is written with the validating trigger off, as a careless migration or
# a restore of a hand-edited dump would.
my $base = "http://127.0.0.1:$mock->{port}";
my $map = STATUS_MAP;
my %broken = (
	timeout_text => qq({"status_map": $map, "path": "/pay/{payment_id}", "timeout_ms": "abc"}),
	timeout_huge => qq({"status_map": $map, "path": "/pay/{payment_id}", "timeout_ms": 99999999999}),
	timeout_float => qq({"status_map": $map, "path": "/pay/{payment_id}", "timeout_ms": 1.5}),
	inflight_neg => qq({"status_map": $map, "path": "/pay/{payment_id}", "max_inflight": -5}),
	inflight_obj => qq({"status_map": $map, "path": "/pay/{payment_id}", "max_inflight": {"a": 1}}),
	schedule_num => qq({"status_map": $map, "path": "/pay/{payment_id}", "schedule": 5}),
	schedule_bad => qq({"status_map": $map, "path": "/pay/{payment_id}", "schedule": ["soon"]}),
	map_number => qq({"status_map": 7, "path": "/pay/{payment_id}"}),
	map_missing => qq({"path": "/pay/{payment_id}"}),
	headers_array => qq({"status_map": $map, "path": "/pay/{payment_id}", "headers": [1, 2]}),
	close_string => qq({"status_map": $map, "path": "/pay/{payment_id}", "close_on_expiry": "yes"}),
	unknown_option => qq({"status_map": $map, "path": "/pay/{payment_id}", "frobnicate": true}),
	options_array => qq([1, 2, 3]),
	options_scalar => qq("just a string"),
);
my $inserts = join("\n", map {
	"INSERT INTO paysync.channels (name, driver, base_url, options) VALUES ('$_', 'http_json', '$base', " . lit($broken{$_}) . ");"
} sort keys %broken);
$node->safe_psql('postgres', qq{
	ALTER TABLE paysync.channels DISABLE TRIGGER channels_validate;
	$inserts
	INSERT INTO paysync.channels (name, driver, base_url, options)
	VALUES ('no_driver', 'soap', '$base', '{}');
	ALTER TABLE paysync.channels ENABLE TRIGGER channels_validate;
});
my @broken = ((sort keys %broken), 'no_driver');
is($node->safe_psql('postgres', 'SELECT count(*) FROM paysync.channels'), scalar(@broken) + 1,
	'the broken rows are in the table');

# Their payments are inserted as track() would (track() itself reads the
# channel's schedule and refuses a broken one).
$node->safe_psql('postgres', join("\n", map {
	"INSERT INTO paysync.payments (payment_id, channel, schedule, next_check_at) VALUES ('b_$_~S', '$_', '{1s}', now());"
} @broken));
$node->safe_psql('postgres',
	q{SELECT paysync.track('h_' || g || '~S', 'healthy', schedule => '{1s}') FROM generate_series(1, 5) g});

wait_for_sql($node,
	q{SELECT count(*) FROM paysync.payments WHERE channel = 'healthy' AND status = 'succeeded'},
	'5', "the healthy channel's payments are checked");
wait_for_sql($node,
	q{SELECT count(*) FROM paysync.payments WHERE channel <> 'healthy' AND errors >= 1},
	scalar(@broken), "every broken channel's payment got an error answer");
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM paysync.payments
	WHERE channel <> 'healthy' AND (status <> 'pending' OR last_error NOT LIKE 'channel "%" is misconfigured%')}),
	'0', 'each says its channel is misconfigured, and none is final');
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM paysync.payments
	WHERE channel <> 'healthy' AND last_error NOT LIKE '%' || channel || '%'}),
	'0', 'the error names the channel');
is(scalar(grep { $_->[2] =~ /^b_/ } mock_log($mock)), 0,
	'no request was sent for a broken channel');
is(worker_pid(), $pid, 'the worker did not exit');

# and a payment tracked now on the healthy channel is checked at once
$node->safe_psql('postgres', q{SELECT paysync.track('h_late~S', 'healthy', schedule => '{1s}')});
wait_payment_status($node, 'h_late~S', 'succeeded', 'a later payment of the healthy channel');

# --- an answer that cannot be recorded -------------------------------------
# A trigger of the shop's refuses every write to one payment: its batch
# fails, is retried answer by answer, and only that payment is left out.
$node->safe_psql('postgres', q{
	DELETE FROM paysync.payments WHERE channel <> 'healthy';
	CREATE FUNCTION public.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.payment_id LIKE 'poison%' AND NEW.attempts = OLD.attempts THEN
			RAISE EXCEPTION 'the shop refuses payment %', NEW.payment_id;
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER refuse_poison BEFORE UPDATE ON paysync.payments
		FOR EACH ROW EXECUTE FUNCTION public.refuse_poison();
	ALTER SYSTEM SET paysync.enabled = off;
	SELECT pg_reload_conf();
});
sleep 1;
$node->safe_psql('postgres', q{
	SELECT paysync.track('batch_' || g || '~S', 'healthy', schedule => '{1s}') FROM generate_series(1, 20) g;
	SELECT paysync.track('poison~S', 'healthy', schedule => '{1s}');
});
sleep 2;
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres', q{ALTER SYSTEM SET paysync.enabled = on; SELECT pg_reload_conf();});
wait_for_sql($node,
	q{SELECT count(*) FROM paysync.payments WHERE payment_id LIKE 'batch_%' AND status = 'succeeded'},
	'20', 'the rest of the batch is recorded');
is(status_of($node, 'poison~S'), 'pending', 'the payment that cannot be recorded stays pending');
is($node->safe_psql('postgres',
	q{SELECT count(*) FROM paysync.events WHERE payment_id LIKE 'batch_%'}), '20',
	'one event each');
ok($node->wait_for_log(qr/could not record a batch of \d+ answers/, $log_offset),
	'the failed batch is logged');
ok($node->wait_for_log(qr/could not record the answer for payment "poison~S"/, $log_offset),
	'the answer that could not be recorded is logged, naming its payment');
is(worker_pid(), $pid, 'the worker did not exit');

# once the shop's trigger lets it through, the payment finishes
$node->safe_psql('postgres', q{DROP TRIGGER refuse_poison ON paysync.payments});
wait_payment_status($node, 'poison~S', 'succeeded', 'the poisoned payment, once recordable');
is(worker_pid(), $pid, 'the worker is still the same process');

$node->stop;
stop_mock($mock);
done_testing();
