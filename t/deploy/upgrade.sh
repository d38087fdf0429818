#!/usr/bin/env bash
# t/deploy/upgrade.sh: upgrade in place from a source install of paysync 0.2
# to the Debian package of 0.4, as a shop would: 0.2 is built from the git
# tree at its release commit and installed with make install; a cluster
# with paysync preloaded gets data (final and pending payments, events);
# then apt-get install of the package, a restart (the worker waits quietly
# for the schema), ALTER EXTENSION paysync UPDATE, and the worker resumes
# checking without a restart.  Leaves the package installed.
#
# Run as root (apt-get), from .ci/run:
#   t/deploy/upgrade.sh TOP DEB
# TOP is the source tree (a git checkout with t/mock built), DEB the
# postgresql-15-paysync .deb file.
set -euo pipefail

top=$(cd "$1" && pwd)
deb=$(realpath "$2")
release_0_2=92a55e7
bindir=/usr/lib/postgresql/15/bin
port=54391

[ "$(id -u)" = 0 ] || { echo "upgrade.sh: run as root (apt-get install)" >&2; exit 1; }

work=$(mktemp -d /tmp/paysync-upgrade.XXXXXX)
data="$work/data"
mock_pid=
tests=0
failed=0

# Stops what this script started and removes its directory.
cleanup()
{
	[ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
	[ -f "$data/postmaster.pid" ] &&
		runuser -u postgres -- "$bindir/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# Prints a TAP line for a test named $1 whose result is the command $2...
check()
{
	local what=$1
	shift
	tests=$((tests + 1))
	if "$@"; then
		echo "ok $tests - $what"
	else
		echo "not ok $tests - $what"
		failed=$((failed + 1))
	fi
}

# Runs SQL in database postgres of the test cluster; prints the result.
sql()
{
	runuser -u postgres -- "$bindir/psql" -X -q -At -v ON_ERROR_STOP=1 \
		-h "$data" -p "$port" -d postgres -c "$1"
}

# True when query $1 returns $2 within $3 seconds (default 30).
wait_for()
{
	local deadline=$((SECONDS + ${3:-30}))
	while [ "$SECONDS" -lt "$deadline" ]; do
		[ "$(sql "$1" 2>/dev/null)" = "$2" ] && return 0
		sleep 0.2
	done
	echo "# waited for: $1 = $2; last: $(sql "$1" 2>&1)"
	return 1
}

# True when the server log matches the extended regex $1 within 30 s.
log_has()
{
	local deadline=$((SECONDS + 30))
	while [ "$SECONDS" -lt "$deadline" ]; do
		grep -Eq "$1" "$work/server.log" && return 0
		sleep 0.2
	done
	return 1
}

equals() { [ "$1" = "$2" ] || { echo "# got '$1', expected '$2'"; return 1; }; }

# --- paysync 0.2 from its source tree ---------------------------------------
if dpkg -s postgresql-15-paysync >/dev/null 2>&1; then
	apt-get purge -y -qq postgresql-15-paysync >/dev/null
fi
git -c safe.directory="*" -C "$top" cat-file -e "$release_0_2^{commit}" 2>/dev/null ||
	{ echo "upgrade.sh: needs the git history (commit $release_0_2, paysync 0.2)" >&2; exit 1; }
mkdir "$work/src-0.2"
git -c safe.directory="*" -C "$top" archive "$release_0_2" | tar -x -C "$work/src-0.2"
make -s -C "$work/src-0.2" PG_CONFIG="$bindir/pg_config" >/dev/null
make -s -C "$work/src-0.2" PG_CONFIG="$bindir/pg_config" install >/dev/null
check "0.2 installed from source" grep -q "default_version = '0.2'" \
	/usr/share/postgresql/15/extension/paysync.control

# --- a cluster with 0.2 and data --------------------------------------------
"$top/t/mock/mock_channel" --port 0 --log "$work/mock.log" >"$work/mock.out" 2>&1 &
mock_pid=$!
for _ in $(seq 50); do grep -q '^port=' "$work/mock.out" && break; sleep 0.1; done
mock_port=$(sed -n 's/^port=//p' "$work/mock.out")

chown postgres: "$work"
runuser -u postgres -- "$bindir/initdb" -D "$data" -A trust >/dev/null
cat >>"$data/postgresql.conf" <<EOF
port = $port
listen_addresses = ''
unix_socket_directories = '$data'
shared_preload_libraries = 'paysync'
paysync.request_timeout = '2s'
EOF
runuser -u postgres -- "$bindir/pg_ctl" -D "$data" -l "$work/server.log" -w start >/dev/null
sql "CREATE EXTENSION paysync" >/dev/null
check "CREATE EXTENSION installs 0.2" equals \
	"$(sql "SELECT extversion FROM pg_extension WHERE extname = 'paysync'")" 0.2
sql "SELECT paysync.create_channel('wallet', 'http_json', 'http://127.0.0.1:$mock_port',
	'{\"path\": \"/pay/{payment_id}\", \"status_map\": {\"WAIT\":\"pending\",\"PAID\":\"succeeded\",
	  \"FAILED\":\"failed\",\"CLOSED\":\"closed\",\"CANCELLED\":\"cancelled\"}}')" >/dev/null
sql "SELECT paysync.track('done_' || g || '~S', 'wallet', schedule => '{1s}'),
	        paysync.track('later_' || g || '~F', 'wallet', schedule => '{1h}')
	 FROM generate_series(1, 5) g" >/dev/null
check "0.2's worker checks the due payments" wait_for \
	"SELECT count(*) FROM paysync.payments WHERE status = 'succeeded'" 5
events_0_2=$(sql "SELECT string_agg(event_id || ':' || payment_id || ':' || status, ',' ORDER BY event_id) FROM paysync.events")

# --- the 0.4 package over it --------------------------------------------------
apt-get install -y -qq "$deb" >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; exit 1; }
check "the package is installed" equals \
	"$(dpkg-query -W -f '${Status}' postgresql-15-paysync)" "install ok installed"
check "its library replaced 0.2's" dpkg --verify postgresql-15-paysync
runuser -u postgres -- "$bindir/pg_ctl" -D "$data" -l "$work/server.log" -w restart >/dev/null
check "after the restart the 0.4 library waits for the schema, with a LOG line" log_has \
	'LOG:  paysync worker is waiting: extension paysync is version 0.2 in database "postgres", this library needs 0.4'
check "while waiting, pg_stat_activity says what it waits for" wait_for \
	"SELECT query FROM pg_stat_activity WHERE backend_type = 'paysync worker'" \
	"paysync: waiting for ALTER EXTENSION paysync UPDATE" 10
worker_before=$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'paysync worker'")
sql "SELECT paysync.check_now('later_' || g || '~F') FROM generate_series(1, 5) g" >/dev/null
sleep 6
check "while waiting it claims nothing" equals \
	"$(sql "SELECT count(*) FROM paysync.payments WHERE status = 'pending' AND claimed_until IS NULL")" 5

# --- ALTER EXTENSION paysync UPDATE: the worker resumes -----------------------
update_at=$SECONDS
sql "ALTER EXTENSION paysync UPDATE" >/dev/null
check "ALTER EXTENSION paysync UPDATE moves to 0.4" equals \
	"$(sql "SELECT extversion FROM pg_extension WHERE extname = 'paysync'")" 0.4
check "the worker resumes: the payments due meanwhile are checked" wait_for \
	"SELECT count(*) FROM paysync.payments WHERE payment_id LIKE 'later_%' AND status = 'failed'" 5
echo "# the worker resumed $((SECONDS - update_at)) s after ALTER EXTENSION"
sql "SELECT paysync.track('after_' || g || '~C', 'wallet', schedule => '{1s}') FROM generate_series(1, 5) g" >/dev/null
check "payments tracked after the update are checked" wait_for \
	"SELECT count(*) FROM paysync.payments WHERE payment_id LIKE 'after_%' AND status = 'closed'" 5
check "the same worker process, not restarted" equals \
	"$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = 'paysync worker'")" "$worker_before"
check "0.2's events are kept as they were" equals \
	"$(sql "SELECT string_agg(event_id || ':' || payment_id || ':' || status, ',' ORDER BY event_id) FROM paysync.events WHERE payment_id LIKE 'done_%'")" \
	"$events_0_2"
check "one event per payment, matching its status" equals \
	"$(sql "SELECT count(*) FROM paysync.payments p WHERE (SELECT count(*) FROM paysync.events e WHERE e.payment_id = p.payment_id AND e.status = p.status) <> 1 OR (SELECT count(*) FROM paysync.events e WHERE e.payment_id = p.payment_id) <> 1")" 0
check "each scripted payment was asked once" equals \
	"$(awk '{print $3}' "$work/mock.log" | sort | uniq -d | wc -l)" 0

echo "1..$tests"
if [ "$failed" -gt 0 ]; then
	echo "# $failed of $tests failed; server log:"
	tail -n 40 "$work/server.log"
	exit 1
fi
