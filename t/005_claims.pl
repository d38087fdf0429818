# 005_claims.pl: a claim covers its request until the answer is recorded.
# A check that waits before its request starts (here for an access token)
# must not start a request that could outlive its claim: once the claim
# lapsed the payment could be claimed again and asked about twice at once.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $CLIENT_ID = 'AYpaysync-claims';
my $SECRET = 'EKsecret_claims_mock';
my $LATENCY_MS = 7000;

# Every answer, the token's included, takes 7 s; a request may take 8 s.
# The claim lasts 8 s + 5 s: a query started after the 7 s token wait could
# run until 15 s, past the lapse at 13 s.
my $mock = start_mock_program('mock_paypal', '--client-id', $CLIENT_ID,
	'--client-secret', $SECRET, '--latency-ms', $LATENCY_MS);
my $node = new_paysync_node('claims');
sql($node, qq{SELECT paysync.create_channel('pp', 'paypal', 'http://127.0.0.1:$mock->{port}',
	jsonb_build_object('client_id', '$CLIENT_ID', 'client_secret', '$SECRET',
					   'timeout_ms', 8000))});
sql($node, q{SELECT paysync.track('claim_1~P', 'pp', schedule => '{1s}')});

ok($node->poll_query_until('postgres',
	q{SELECT status = 'succeeded' FROM paysync.payments WHERE payment_id = 'claim_1~P'}),
	'the payment is checked in the end');

# The mock's log: <unix_us> <METHOD> <path> <payment_id> <status> [token]
open my $fh, '<', $mock->{log} or die $!;
my @orders = map { (split / /)[0] } grep { m{ /v2/checkout/orders/} && / claim_1~P / } <$fh>;
close $fh;
my @overlaps = grep { $orders[$_] - $orders[ $_ - 1 ] < $LATENCY_MS * 1000 } 1 .. $#orders;
is(scalar(@overlaps), 0, 'never two requests about the payment in flight at once')
  or diag("order requests at (us): @orders");
is(scalar(@orders), 1, 'one request: the check that could not finish in its claim was not sent');
is(sql($node, q{SELECT errors || '|' || attempts FROM paysync.payments WHERE payment_id = 'claim_1~P'}),
	'0|2', 'no error counted for it; the second claim asked');

$node->stop;
stop_mock($mock);
done_testing();
