#!/usr/bin/env bash
# examples/demo.sh: paysync's main job in one minute, on a throwaway cluster.
#
#   sudo bash examples/demo.sh
#
# Installs what it needs (Debian packages), builds and installs paysync,
# starts a cluster with the worker and a local mock wallet on 127.0.0.1,
# tracks four payments in the orders' own transactions and shows each
# status change arriving over LISTEN, then catches up with events_since();
# and one refund going to its end, on LISTEN paysync_refunds and
# refund_events_since().
# Everything is removed at the end.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/.ci/deps.sh"

echo "== installing dependencies and building paysync"
paysync_install_deps
make -s -C "$top" >/dev/null
make -s -C "$top" install >/dev/null
make -s -C "$top/t/mock" >/dev/null

bindir=$(pg_config --bindir)
work=$(mktemp -d /tmp/paysync-demo.XXXXXX)
chown postgres: "$work"
mock_pid=
cleanup()
{
	[ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null
	runuser -u postgres -- "$bindir/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

echo "== starting a throwaway cluster with shared_preload_libraries = 'paysync'"
runuser -u postgres -- "$bindir/initdb" -D "$work/data" -A trust --no-sync >/dev/null
cat >>"$work/data/postgresql.conf" <<EOF
shared_preload_libraries = 'paysync'
listen_addresses = ''
unix_socket_directories = '$work'
port = 55433
EOF
runuser -u postgres -- "$bindir/pg_ctl" -D "$work/data" -l "$work/server.log" -w start >/dev/null

echo "== starting the mock wallet on 127.0.0.1"
"$top/t/mock/mock_channel" --port 0 --latency-ms 30 >"$work/mock.out" &
mock_pid=$!
for _ in $(seq 50); do grep -q '^port=' "$work/mock.out" && break; sleep 0.1; done
port=$(sed -n 's/^port=//p' "$work/mock.out")

cat <<'EOF'
== the order service: create a channel, track payments in the orders'
   transactions, LISTEN.  (The mock reads its script from the payment id:
   T1001~P,P,S answers "pending" twice, then "paid"; E500 is an HTTP 500.)
EOF
runuser -u postgres -- "$bindir/psql" -X -h "$work" -p 55433 -d postgres \
	-v port="$port" -v ON_ERROR_STOP=1 <<'EOF'
\pset footer off
CREATE EXTENSION paysync;
SELECT paysync.create_channel('demo_wallet', 'http_json', 'http://127.0.0.1:' || :'port',
  '{"path": "/v3/trades/{payment_id}",
    "refund_path": "/v3/refunds/{refund_id}",
    "status_field": "data.trade_state",
    "status_map": {"WAIT": "pending", "PAID": "succeeded", "FAILED": "failed",
                   "CLOSED": "closed", "CANCELLED": "cancelled"}}');
CREATE TABLE shop_orders (order_no text PRIMARY KEY, amount_minor bigint NOT NULL);

LISTEN paysync;
LISTEN paysync_refunds;

-- each order and its tracking commit together; a rolled-back order is never polled
BEGIN;
INSERT INTO shop_orders VALUES ('T1001~P,P,S', 1999);
SELECT payment_id, status FROM paysync.track('T1001~P,P,S', 'demo_wallet', 1999, 'CNY', schedule => '{1s,1s,1s}');
COMMIT;
BEGIN;
INSERT INTO shop_orders VALUES ('T1002~P,F', 500);
SELECT payment_id, status FROM paysync.track('T1002~P,F', 'demo_wallet', 500, 'CNY', schedule => '{1s,1s}');
COMMIT;
BEGIN;
INSERT INTO shop_orders VALUES ('T1003~E500,S', 4200);
SELECT payment_id, status FROM paysync.track('T1003~E500,S', 'demo_wallet', 4200, 'CNY', schedule => '{1s}');
COMMIT;
BEGIN;
INSERT INTO shop_orders VALUES ('T1004~P', 100);
SELECT payment_id, status FROM paysync.track('T1004~P', 'demo_wallet', 100, 'CNY', schedule => '{1s,1s}');
COMMIT;

-- the shop refunds part of T1003 at the channel, and tracks the refund in
-- the same transaction (RF1003~P,S: "processing" once, then refunded)
BEGIN;
SELECT refund_id, payment_id, status
FROM paysync.track_refund('RF1003~P,S', 'T1003~E500,S', 2000, schedule => '{1s,1s,1s}');
COMMIT;

\echo
\echo == waiting; psql prints each NOTIFY as it arrives
SELECT pg_sleep(1.2) AS "1 s";
SELECT pg_sleep(1.2) AS "2 s";
SELECT pg_sleep(1.2) AS "3 s";
SELECT pg_sleep(1.2) AS "4 s";

\echo
\echo == the payments now
SELECT payment_id, status, channel_status, step, attempts, errors, last_error
FROM paysync.payments ORDER BY payment_id;

\echo == a listener that was away catches up from its last event_id
SELECT event_id, payment_id, previous, status, channel_status, source
FROM paysync.events_since(0);

\echo == the refund, and the catch-up of a listener of refunds
SELECT refund_id, payment_id, status, channel_status, step, attempts
FROM paysync.refunds;
SELECT event_id, refund_id, payment_id, previous, status, source
FROM paysync.refund_events_since(0);
EOF
echo "== done; the cluster and the mock are removed"
