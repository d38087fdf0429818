# 010_crypto.pl: unit tests of src/crypto.c (t/unit/crypto_test prints TAP).
use strict;
use warnings;

use FindBin;

my $program = "$FindBin::Bin/unit/crypto_test";
die "$program is not built (make unit)" unless -x $program;
exec $program or die "cannot run $program: $!";
