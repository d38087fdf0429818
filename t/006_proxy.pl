# 006_proxy.pl: a channel's proxy comes from its "proxy" option only.  The
# postmaster's environment names a proxy that does not exist (http_proxy and
# friends): a channel without the option still reaches the channel directly,
# and a channel with it goes through the proxy it names (a tiny forward
# proxy in this file, counting what it forwards).
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
use PaysyncTest;
use IO::Socket::INET;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $mock = start_mock();

# A forward proxy for plain http: reads "GET http://host:port/path HTTP/1.1"
# and its headers, asks the host itself (one request per connection), and
# relays the answer; appends one line per request to its log.
my $proxy_log = "$PostgreSQL::Test::Utils::tmp_check/proxy.log";
my $listener = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
	Listen => 16, ReuseAddr => 1) or die "proxy: $!";
my $proxy_port = $listener->sockport;
my $proxy_pid = fork();
die "fork: $!" unless defined $proxy_pid;
if ($proxy_pid == 0)
{
	$SIG{CHLD} = 'IGNORE';
	while (my $client = $listener->accept)
	{
		next if fork();
		my $line = <$client>;
		my @headers;
		while (my $h = <$client>)
		{
			last if $h =~ /^\r?\n$/;
			push @headers, $h unless $h =~ /^(proxy-connection|connection):/i;
		}
		if ($line && $line =~ m{^(\w+) http://([^/:]+):(\d+)(/\S*) (HTTP/1\.[01])})
		{
			my ($method, $host, $port, $path) = ($1, $2, $3, $4);
			open my $log, '>>', $proxy_log;
			print $log "$method $path\n";
			close $log;
			my $upstream = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port);
			if ($upstream)
			{
				print $upstream "$method $path HTTP/1.1\r\n", @headers,
				  "Connection: close\r\n\r\n";
				print $client $_ while <$upstream>;
			}
		}
		close $client;
		exit 0;
	}
	exit 0;
}
close $listener;

# The environment names proxies that refuse every connection.
$ENV{$_} = 'http://127.0.0.1:9' for qw(http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY);
delete $ENV{$_} for qw(no_proxy NO_PROXY);
my $node = new_paysync_node('proxy');
delete $ENV{$_} for qw(http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY);

create_mock_channel($node, 'direct', $mock);
create_mock_channel($node, 'proxied', $mock, qq({"proxy": "http://127.0.0.1:$proxy_port"}));

sql($node, q{SELECT paysync.track('direct_1~S', 'direct', schedule => '{1s}')});
sql($node, q{SELECT paysync.track('proxied_1~S', 'proxied', schedule => '{1s}')});
wait_payment_status($node, 'direct_1~S', 'succeeded');
wait_payment_status($node, 'proxied_1~S', 'succeeded');

my @forwarded = -e $proxy_log ? split(/\n/, slurp_file($proxy_log)) : ();
is(scalar(grep { m{/pay/proxied_1~S$} } @forwarded), 1,
	'the channel with a proxy option went through that proxy');
is(scalar(grep { /direct_1/ } @forwarded), 0,
	'the channel without one went direct, whatever the environment says');

# the option is checked: http, https and socks5h proxies only, with a host
for my $bad ('ftp://127.0.0.1:21', 'socks4://127.0.0.1:1080', 'http://', 'nonsense', '')
{
	my ($ret, $out, $err) = $node->psql('postgres',
		qq{SELECT paysync.create_channel('bad', 'http_json', 'http://127.0.0.1:9',
			'{"status_map": {"A": "succeeded"}, "proxy": "$bad"}')});
	like($err, qr/invalid value for option "proxy" of channel "bad"/, "proxy \"$bad\" is refused");
}
for my $good ('https://proxy.internal:3128', 'socks5h://127.0.0.1:1080', 'http://user:pw@127.0.0.1:3128')
{
	my ($ret, $out, $err) = $node->psql('postgres',
		qq{SELECT paysync.create_channel('good', 'http_json', 'http://127.0.0.1:9',
			'{"status_map": {"A": "succeeded"}, "proxy": "$good"}');
		   DELETE FROM paysync.channels WHERE name = 'good'});
	is($ret, 0, "proxy \"$good\" is taken");
	unlike($err, qr/pw/, '... and its password is never shown');
}

kill 'TERM', $proxy_pid;
waitpid($proxy_pid, 0);
$node->stop;
stop_mock($mock);
done_testing();
