# paysync: PGXS build of the extension, its tests and the mock channel.

EXTENSION = paysync
MODULE_big = paysync
OBJS = \
	src/paysync.o \
	src/worker.o \
	src/checker.o \
	src/checker_channels.o \
	src/checker_slots.o \
	src/checker_queue.o \
	src/token.o \
	src/http.o \
	src/storage.o \
	src/channel.o \
	src/driver.o \
	src/json_fields.o \
	src/http_util.o \
	src/driver_http_json.o \
	src/driver_stripe.o \
	src/driver_wechatpay.o \
	src/driver_alipay.o \
	src/driver_paypal.o \
	src/driver_test.o \
	src/crypto.o \
	src/tls.o \
	src/stats.o \
	src/politeness.o \
	src/functions.o \
	src/notify.o

DATA = sql/paysync--0.1.sql sql/paysync--0.1--0.2.sql sql/paysync--0.2--0.3.sql \
	sql/paysync--0.3--0.4.sql

REGRESS = surface errors privileges operations upgrade upgrade_refunds state_machine refunds
REGRESS_OPTS = --temp-instance=tmp_check_regress --temp-config=expected/regress.conf
TAP_TESTS = 1

PG_CONFIG ?= pg_config
# Warnings are shown, never fatal here: a packager's newer compiler may find
# new ones.  CI makes them errors (make PG_CFLAGS=-Werror, see .ci/run).
PG_CPPFLAGS = -Wall -Wextra -Wno-unused-parameter -I$(srcdir)/src
SHLIB_LINK = -lcurl -lssl -lcrypto
EXTRA_CLEAN = tmp_check_regress t/unit/crypto_test

# No LLVM bitcode: JIT inlining of this code is not worth a clang dependency.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# Out-of-tree builds (make -f SRCDIR/Makefile VPATH=SRCDIR, as Debian's
# pg_buildext does in build-15/): the objects go to src/ under the build
# directory, which must exist first.
ifdef VPATH
$(shell mkdir -p src)
endif

# The mock channels used by the TAP tests and the benchmark.
.PHONY: mock unit
mock:
	$(MAKE) -C t/mock

# Unit tests of the parts that need no server.
unit: t/unit/crypto_test

t/unit/crypto_test: t/unit/crypto_test.c src/crypto.c src/crypto.h
	$(CC) -Wall -Wextra $(PG_CFLAGS) -O2 -o $@ t/unit/crypto_test.c src/crypto.c -lcrypto

installcheck: mock unit
