# PaysyncTest.pm: what the TAP tests share: a cluster with paysync
# preloaded, the mock channels on 127.0.0.1, nginx, RSA keys and openssl
# signatures, queries and waiting helpers, and the drivers' test interface
# (paysync_test_request and paysync_test_interpret, src/driver_test.c).
package PaysyncTest;

use strict;
use warnings;

use Exporter 'import';
use File::Basename qw(basename);
use FindBin;
use HTTP::Tiny;
use IPC::Run;
use MIME::Base64 qw(encode_base64 decode_base64);
use Time::HiRes qw(time usleep);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

our @EXPORT = qw(lit payment_row wait_payment_status
  start_mock start_mock_program stop_mock mock_requests
  mock_log mock_stats new_paysync_node create_mock_channel wait_for_sql
  status_of make_rsa_key spew_file STATUS_MAP
  sql wait_true events_of run_openssl openssl_sign openssl_verifies
  create_test_functions test_request test_interpret test_fields
  test_notification send_request start_nginx);

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

# A mock's /_stats counters as a hash: for mock_channel requests, in_flight,
# max_in_flight; for mock_paypal token_requests, tokens_issued,
# orders_requests, unauthorized.
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
log_min_messages = 'warning'
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

my @nginx_pid_files;

# Starts Debian's nginx (one worker process) with its pid, logs and
# temporary files in $dir, and $http, the lines of its http block (access
# log, keepalive, servers); waits up to 5 s for its pid file.  Dies with
# nginx's error log if it does not start.  It is stopped when the test
# ends.  1000 connections: room for 256 proxied requests (two each), and
# below the usual limit of 1024 open files, which nginx would warn of.
sub start_nginx
{
	my ($dir, $http) = @_;
	my $temp_paths = join '', map { "\t${_}_temp_path $dir/tmp_$_;\n" }
	  qw(client_body proxy fastcgi uwsgi scgi);
	spew_file("$dir/nginx.conf", "worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log info;
events { worker_connections 1000; }
http {
$temp_paths$http}
");
	system('nginx', '-p', $dir, '-c', "$dir/nginx.conf", '-e', "$dir/error.log") == 0
	  or die 'nginx did not start: ' . (slurp_file("$dir/error.log") // '');
	push @nginx_pid_files, "$dir/nginx.pid";
	for (1 .. 100)
	{
		last if -s "$dir/nginx.pid";
		usleep(50_000);
	}
}

END
{
	for my $pid_file (@nginx_pid_files)
	{
		next unless -e $pid_file;
		my $pid = slurp_file($pid_file);
		chomp $pid;
		kill 'TERM', $pid if $pid;
	}
}

# Runs openssl with the arguments in the list ref $args, $stdin (if given)
# on its standard input; returns its standard output, or dies with its
# message if it fails.
sub run_openssl
{
	my ($args, $stdin) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'openssl', @$args ], '<', \($stdin // ''), '>', \$out, '2>', \$err)
	  or die "openssl @$args failed: $err";
	return $out;
}

# Makes an RSA key pair with openssl: $dir/$name.key, the private key, and
# $dir/$name.pub, its public key, both PEM; $bits (default 2048) long.
# Returns the two paths; dies with openssl's message if it fails.
sub make_rsa_key
{
	my ($dir, $name, $bits) = @_;
	my ($key, $pub) = ("$dir/$name.key", "$dir/$name.pub");
	$bits //= 2048;
	run_openssl([ 'genpkey', '-algorithm', 'RSA', '-pkeyopt', "rsa_keygen_bits:$bits", '-out', $key ]);
	run_openssl([ 'pkey', '-in', $key, '-pubout', '-out', $pub ]);
	return ($key, $pub);
}

# The base64 SHA256withRSA signature of $text (bytes) by the private key in
# the PEM file $keyfile, made by openssl dgst: an implementation
# independent of paysync's.
sub openssl_sign
{
	my ($keyfile, $text) = @_;
	return encode_base64(run_openssl([ 'dgst', '-sha256', '-sign', $keyfile ], $text), '');
}

my $openssl_dir;

# True if openssl dgst -verify accepts $signature_b64 as a SHA256withRSA
# signature of $text (bytes) by the public key in the PEM file $pubfile.
sub openssl_verifies
{
	my ($pubfile, $text, $signature_b64) = @_;
	$openssl_dir //= PostgreSQL::Test::Utils::tempdir('openssl');
	spew_file("$openssl_dir/signature.bin", decode_base64($signature_b64 // ''));
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[
			'openssl', 'dgst', '-sha256', '-verify', $pubfile,
			'-signature', "$openssl_dir/signature.bin"
		],
		'<', \$text, '>', \$out, '2>', \$err);
	return $out =~ /Verified OK/ ? 1 : 0;
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

# The output of query in database postgres; dies if it fails.
sub sql
{
	my ($node, $query) = @_;
	return $node->safe_psql('postgres', $query);
}

# Waits until the SQL condition cond holds for a payment (a test of its
# own, named what).
sub wait_true
{
	my ($node, $payment_id, $cond, $what) = @_;
	return wait_for_sql($node,
		"SELECT coalesce(bool_and($cond), false) FROM paysync.payments WHERE payment_id = "
		  . lit($payment_id),
		't', $what);
}

# The events of a payment, oldest first, each as
# "previous>status|channel_status|source|channel" (channel_status empty
# when null), ','-separated; '' if there are none.
sub events_of
{
	my ($node, $payment_id) = @_;
	return sql($node,
		"SELECT string_agg(previous || '>' || status || '|' || coalesce(channel_status, '')"
		  . " || '|' || source || '|' || channel, ',' ORDER BY event_id)"
		  . ' FROM paysync.events WHERE payment_id = ' . lit($payment_id));
}

# ---------------------------------------------------------------- drivers

# Creates the drivers' test interface (src/driver_test.c, in the library
# but in no install script) in database postgres: paysync_test_request(),
# paysync_test_interpret() and paysync_test_notification().
sub create_test_functions
{
	my ($node) = @_;
	sql($node, q{
CREATE FUNCTION paysync_test_request(driver text, options jsonb, base_url text,
		payment_id text, kind text, token text, refund_id text DEFAULT NULL)
	RETURNS text AS '$libdir/paysync', 'paysync_test_request' LANGUAGE C;
CREATE FUNCTION paysync_test_interpret(driver text, options jsonb, kind text,
		http_status int, headers text, body text, payment_id text)
	RETURNS text AS '$libdir/paysync', 'paysync_test_interpret' LANGUAGE C;
CREATE FUNCTION paysync_test_notification(driver text, options jsonb,
		headers text, body text, now bigint DEFAULT NULL)
	RETURNS text AS '$libdir/paysync', 'paysync_test_notification' LANGUAGE C;
});
}

# $text as an SQL literal, or NULL if undefined.
sub lit_or_null
{
	my ($text) = @_;
	return defined $text ? lit($text) : 'NULL';
}

# The request a driver builds (paysync_test_request's text: "name=value"
# lines).  Options: driver, options (an SQL jsonb expression, so that keys
# can come from files), base_url, payment_id, kind (default query), token,
# refund_id (for kind refund).
sub test_request
{
	my ($node, %o) = @_;
	return sql($node,
		'SELECT paysync_test_request(' . join(', ',
			lit($o{driver}), $o{options}, lit($o{base_url}), lit_or_null($o{payment_id}),
			lit($o{kind} // 'query'), lit_or_null($o{token}),
			lit_or_null($o{refund_id})) . ')');
}

# What a driver's verify_notification makes of a notification
# (paysync_test_notification's text).  Options: driver, options (an SQL
# jsonb expression), headers ("Name: value" lines), body, now (Unix
# seconds; default the clock).  Returns (text, stderr): text is undef and
# stderr holds the SQLSTATE and message when the driver refused it.
sub test_notification
{
	my ($node, %o) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"\\set VERBOSITY verbose\nSELECT paysync_test_notification(" . join(', ',
			lit($o{driver}), $o{options}, lit_or_null($o{headers}), lit($o{body} // ''),
			defined $o{now} ? $o{now} : 'NULL') . ')');
	return ($ret == 0 ? $out : undef, $err);
}

# What a driver makes of an answer (paysync_test_interpret's text:
# "name=value" lines).  Options: driver, options (an SQL jsonb
# expression), kind (default query), status (the HTTP status, 0 for a
# transport error whose message is body; default 200), headers ("Name:
# value" lines), body, payment_id.
sub test_interpret
{
	my ($node, %o) = @_;
	return sql($node,
		'SELECT paysync_test_interpret(' . join(', ',
			lit($o{driver}), $o{options}, lit($o{kind} // 'query'), $o{status} // 200,
			lit_or_null($o{headers}), lit($o{body} // ''), lit_or_null($o{payment_id})) . ')');
}

# The fields of paysync_test_request's or paysync_test_interpret's text,
# unescaped, as a hash ref; header, which may repeat, is a list ref.
sub test_fields
{
	my ($text) = @_;
	my %fields = (header => []);
	for my $line (split /\n/, $text)
	{
		my ($name, $value) = split /=/, $line, 2;
		$value //= '';
		$value =~ s/\\(\\|n|r|x([0-9A-F]{2}))/
		  $1 eq '\\' ? '\\' : $1 eq 'n' ? "\n" : $1 eq 'r' ? "\r" : chr(hex($2))/ge;
		if ($name eq 'header')
		{
			push @{ $fields{header} }, $value;
		}
		else
		{
			$fields{$name} = $value;
		}
	}
	return \%fields;
}

# Sends a request a driver built (test_fields() of paysync_test_request's
# text) as the HTTP engine would, to a mock on 127.0.0.1; returns (HTTP
# status, the answer's headers as "Name: value" lines, body), ready for
# test_interpret().
sub send_request
{
	my ($r) = @_;
	my %headers = map { /^([^:]+):\s*(.*)$/ ? (lc $1, $2) : () } @{ $r->{header} };
	my $answer = HTTP::Tiny->new(timeout => 30)->request($r->{method}, $r->{url},
		{ headers => \%headers, defined $r->{body} ? (content => $r->{body}) : () });
	my $lines = join "\n",
	  map { my $v = $answer->{headers}{$_}; "$_: " . (ref $v ? $v->[0] : $v) }
	  sort keys %{ $answer->{headers} };
	return ($answer->{status}, $lines, $answer->{content} // '');
}

1;
