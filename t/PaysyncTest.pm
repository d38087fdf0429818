# PaysyncTest.pm: what the TAP tests share: a cluster with paysync
# preloaded, the mock channel on 127.0.0.1, and waiting helpers.
package PaysyncTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(basename);
use FindBin;
use IPC::Run;
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(start_mock stop_mock mock_requests mock_log mock_stats
  new_paysync_node create_mock_channel wait_for_sql status_of
  STATUS_MAP);

# The status words the mock answers with, mapped to paysync statuses.
use constant STATUS_MAP =>
  '{"WAIT":"pending","PAID":"succeeded","FAILED":"failed","CLOSED":"closed","CANCELLED":"cancelled"}';

my $mock_count = 0;

# Starts the mock channel; returns a hash with port, log and the handle.
# Options: latency_ms, require_header (list ref).
sub start_mock
{
	my (%opt) = @_;
	my $bin = "$FindBin::Bin/mock/mock_channel";
	die "mock channel not built: run make -C t/mock" unless -x $bin;
	$mock_count++;
	my $test = basename($0, '.pl');
	my $log = "$PostgreSQL::Test::Utils::tmp_check/mock_${test}_$mock_count.log";
	my @cmd = ($bin, '--port', '0', '--log', $log);
	push @cmd, '--latency-ms', $opt{latency_ms} if $opt{latency_ms};
	push @cmd, '--require-header', $_ for @{ $opt{require_header} || [] };
	my ($out, $err) = ('', '');
	my $handle = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err);
	my $deadline = time + 10;
	while ($out !~ /port=(\d+)/ && time < $deadline)
	{
		$handle->pump_nb;
		usleep(10_000);
	}
	die "mock channel did not start: $err" unless $out =~ /port=(\d+)/;
	return { handle => $handle, port => $1, log => $log };
}

sub stop_mock
{
	my ($mock) = @_;
	$mock->{handle}->signal('TERM');
	$mock->{handle}->finish;
}

# The mock's log lines: [arrival_us, method, payment_id, attempt, body].
sub mock_log
{
	my ($mock) = @_;
	return () unless -e $mock->{log};
	open my $fh, '<', $mock->{log} or die $!;
	my @lines = map { chomp; [ split / /, $_, 5 ] } <$fh>;
	close $fh;
	return @lines;
}

# How many requests the mock received for payment_id.
sub mock_requests
{
	my ($mock, $payment_id) = @_;
	return scalar grep { $_->[2] eq $payment_id } mock_log($mock);
}

# The mock's /_stats as a hash (requests, in_flight, max_in_flight).
sub mock_stats
{
	my ($mock) = @_;
	my $json = `curl -s http://127.0.0.1:$mock->{port}/_stats`;
	my %stats = $json =~ /"(\w+)":(\d+)/g;
	return \%stats;
}

# A started node with paysync preloaded and the extension created.
sub new_paysync_node
{
	my ($name, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => $opt{allows_streaming});
	$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'paysync'
paysync.request_timeout = '2s'
log_min_messages = 'log'
restart_after_crash = on
});
	$node->append_conf('postgresql.conf', $opt{conf}) if $opt{conf};
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION paysync')
	  unless $opt{no_extension};
	return $node;
}

# Creates an http_json channel on the mock; extra is JSON text merged into
# the options.
sub create_mock_channel
{
	my ($node, $name, $mock, $extra) = @_;
	$extra ||= '{}';
	my $options = qq{'{"path": "/pay/{payment_id}", "status_map": @{[STATUS_MAP]}}'::jsonb || '$extra'::jsonb};
	$node->safe_psql('postgres',
		"SELECT paysync.create_channel('$name', 'http_json', 'http://127.0.0.1:$mock->{port}', $options)");
}

# Waits until query returns expected; fails the test (with what it saw) if not.
sub wait_for_sql
{
	my ($node, $query, $expected, $what) = @_;
	my $ok = $node->poll_query_until('postgres', $query, $expected);
	ok($ok, $what);
	diag($node->safe_psql('postgres', $query)) unless $ok;
	return $ok;
}

# The status of a payment.
sub status_of
{
	my ($node, $payment_id) = @_;
	return $node->safe_psql('postgres',
		"SELECT status FROM paysync.payments WHERE payment_id = '$payment_id'");
}

1;
