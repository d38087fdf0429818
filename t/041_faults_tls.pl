# 041_faults_tls.pl: the fault run of t/040_faults.pl once more over HTTPS
# (nginx with a throwaway CA's certificate in front of the mock, trusted
# through the channel's ca_cert), shorter: 3,000 payments, 10 s of worker
# SIGKILLs, a 15 s outage.  See t/040_faults.pl for what it checks.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;
# loaded here, at compile time, so that their INIT blocks run
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

BEGIN { $ENV{PAYSYNC_FAULTS_TLS} = 1; }
do "$FindBin::Bin/040_faults.pl";
die $@ if $@;
