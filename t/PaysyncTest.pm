# PaysyncTest.pm: what the TAP tests share: a cluster with paysync
# preloaded, the mock channels on 127.0.0.1, RSA keys, and waiting helpers.
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

our @EXPORT = qw(lit payment_row wait_payment_status
  start_mock start_mock_program stop_mock mock_requests
  mock_log mock_stats new_paysync_node create_mock_channel wait_for_sql
  status_of make_rsa_key spew_file STATUS_MAP);

# The status words the mock answers with, mapped to paysync statuses.
use constant STATUS_MAP =>
  '{"WAIT":"pending","PAID":"succeeded","FAILED":"failed","CLOSED":"closed","CANCELLED":"cancelled"}';

my $mock_count = 0;

# Runs the mock command @cmd (a t/mock program, "--port 0" among its
# arguments) and waits up to 10 s for its "port=N"; returns a hash with
# port, log and the handle.  Dies, naming the mock as $what, if it is not
# built or does not start.
sub run_mock_command
{
	my ($what, $log, @cmd) = @_;
	die "$what not built: run make -C t/mock" unless -x $cmd[0];
	my ($out, $err) = ('', '');
	my $handle = IPC::Run::start(\@cmd, '>', \$out, '2>', \$err);
	my $deadline = time + 10;
	while ($out !~ /port=(\d+)/ && time < $deadline)
	{
		$handle->pump_nb;
		usleep(10_000);
	}
	die "$what did not start: $err" unless $out =~ /port=(\d+)/;
	return { handle => $handle, port => $1, log => $log };
}

# Starts the mock channel; returns a hash with port, log and the handle.
# Options: latency_ms, require_header (list ref).
sub start_mock
{
	my (%opt) = @_;
	my $bin = "$FindBin::Bin/mock/mock_channel";
	$mock_count++;
	my $test = basename($0, '.pl');
	my $log = "$PostgreSQL::Test::Utils::tmp_check/mock_${test}_$mock_count.log";
	my @cmd = ($bin, '--port', '0', '--log', $log);
	push @cmd, '--latency-ms', $opt{latency_ms} if $opt{latency_ms};
	push @cmd, '--require-header', $_ for @{ $opt{require_header} || [] };
	return run_mock_command('mock channel', $log, @cmd);
}

# Starts the mock t/mock/$program on a free port of 127.0.0.1, logging to
# a file of its own in tmp_check, with more arguments @args; returns a hash
# with port, log and the handle, as start_mock does (stop it with
# stop_mock).
sub start_mock_program
{
	my ($program, @args) = @_;
	$mock_count++;
	my $test = basename($0, '.pl');
	my $log = "$PostgreSQL::Test::Utils::tmp_check/${program}_${test}_$mock_count.log";
	return run_mock_command($program, $log, "$FindBin::Bin/mock/$program",
		'--port', '0', '--log', $log, @args);
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

# Writes $data to the file $path (replacing it), byte for byte; the
# counterpart of slurp_file.
sub spew_file
{
	my ($path, $data) = @_;
	open my $fh, '>:raw', $path or die "$path: $!";
	print $fh $data;
	close $fh or die "$path: $!";
}

# Makes an RSA key pair with openssl: $dir/$name.key, the private key, and
# $dir/$name.pub, its public key, both PEM; $bits (default 2048) long.
# Returns the two paths; dies with openssl's message if it fails.
sub make_rsa_key
{
	my ($dir, $name, $bits) = @_;
	my ($key, $pub) = ("$dir/$name.key", "$dir/$name.pub");
	$bits //= 2048;
	for my $args (
		[ 'genpkey', '-algorithm', 'RSA', '-pkeyopt', "rsa_keygen_bits:$bits", '-out', $key ],
		[ 'pkey', '-in', $key, '-pubout', '-out', $pub ])
	{
		my ($out, $err) = ('', '');
		IPC::Run::run([ 'openssl', @$args ], '>', \$out, '2>', \$err)
		  or die "openssl @$args failed: $err";
	}
	return ($key, $pub);
}

# text as an SQL string literal.
sub lit
{
	my ($text) = @_;
	$text =~ s/'/''/g;
	return "'$text'";
}

# Columns of one payment, '|'-separated.
sub payment_row
{
	my ($node, $payment_id, $columns) = @_;
	return $node->safe_psql('postgres',
		"SELECT $columns FROM paysync.payments WHERE payment_id = " . lit($payment_id));
}

# Waits until a payment has status (a test of its own).
sub wait_payment_status
{
	my ($node, $payment_id, $status) = @_;
	return wait_for_sql($node,
		'SELECT status FROM paysync.payments WHERE payment_id = ' . lit($payment_id),
		$status, "$payment_id becomes $status");
}

1;
