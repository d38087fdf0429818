# bench/tls_phase.sh: the tls phase of bench/run (issue 18), sourced by it
# after bench/phases.sh (whose measure_batch, summary, meets, pg_restart,
# wait_workers, worker_pids, now_us and free_port it uses).
#
# One zero-latency nginx answering {"status":"PAID"} three ways: plain
# HTTP, HTTPS HTTP/1.1 and HTTPS HTTP/2 (a certificate of a CA made here,
# given to each channel as ca_cert).  For each: a cold batch of 256
# payments right after a restart (no connection open, no CA loaded) at
# paysync.request_timeout = 5s, counting timeouts; then a warm batch of
# TLS_N (default 20000), reporting checks/s, worker CPU per check and the
# connections nginx saw ($connection).  The warm batches run TLS_ROUNDS
# times (default 5), in the reverse order every other round; the best and
# the median of each are reported, and the targets judged on the medians:
# on a shared 2-core machine one batch can lose a third of its speed to
# whatever else runs, and a best round can be luck.  Then pg_net over
# the same three servers (tls_pg_net), when it is installed in
# PG_CONFIG's PostgreSQL.

# tls_nginx_conf DIR PLAIN H1 H2: the three servers.
tls_nginx_conf() {
	local dir=$1 plain=$2 h1=$3 h2=$4
	cat >"$dir/nginx.conf" <<EOF
# written by bench/tls_phase.sh
worker_processes 1;
worker_rlimit_nofile 16384;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
	log_format tls '\$server_port \$connection \$server_protocol \$status \$uri';
	access_log $dir/access.log tls buffer=256k flush=1s;
	client_body_temp_path $dir/tmp_body;
	proxy_temp_path $dir/tmp_proxy;
	fastcgi_temp_path $dir/tmp_fastcgi;
	uwsgi_temp_path $dir/tmp_uwsgi;
	scgi_temp_path $dir/tmp_scgi;
	keepalive_requests 10000000;
	keepalive_timeout 300s;
	default_type application/json;
	ssl_certificate $dir/server.crt;
	ssl_certificate_key $dir/server.key;
	ssl_session_cache shared:bench:10m;
	server { listen 127.0.0.1:$plain; location / { return 200 '{"status":"PAID"}'; } }
	server { listen 127.0.0.1:$h1 ssl; location / { return 200 '{"status":"PAID"}'; } }
	server { listen 127.0.0.1:$h2 ssl http2; location / { return 200 '{"status":"PAID"}'; } }
}
EOF
	chown -R postgres: "$dir"
}

# tls_connections PORT PREFIX: distinct connections nginx saw for PREFIX*
# (warm-up payments excluded) on PORT, and the protocols, "conns proto".
tls_connections() {
	local port=$1 prefix=$2
	kill -USR1 "$(cat "$TMP/nginx-tls/nginx.pid")"
	sleep 1.2
	awk -v port="$port" -v p="/$prefix" -v pw="/${prefix}w" '
		$1 == port && index($5, p) == 1 && index($5, pw) != 1 {
			if (!($2 in c)) { c[$2] = 1; n++ } proto[$3] = 1 }
		END { s = ""; for (k in proto) s = s (s ? "+" : "") k; printf "%d %s\n", n, (s ? s : "none") }' \
		"$TMP/nginx-tls/access.log"
}

# tls_better NEW OLD OP: whether NEW (a figure or n/a) replaces OLD (a
# figure, n/a or empty) as the best so far, OP '>' or '<' saying which way.
tls_better() {
	[ "$1" = n/a ] && [ -n "$2" ] && return 1
	[ -z "$2" ] || [ "$2" = n/a ] && return 0
	awk -v a="$1" -v b="$2" -v op="$3" 'BEGIN { exit !(op == ">" ? a + 0 > b + 0 : a + 0 < b + 0) }'
}

# tls_ratio A B [DIGITS]: A / B with DIGITS decimals (default 2), n/a if
# B is not positive.
tls_ratio() {
	awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b + 0 > 0 && a != "n/a") printf "%.*f\n", d, a / b; else print "n/a" }'
}

# tls_median LIST: the median of the figures in LIST (n/a ignored).
tls_median() {
	printf '%s\n' $1 | grep -v '^n/a$' | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# tls_cold CHANNEL PREFIX: restarts the cluster (no connection, no CA
# loaded), tracks 256 payments due at once, waits until none is pending
# (60 s); sets COLD_TIMEOUTS, COLD_ERRORS, COLD_SECS.
tls_cold() {
	local chan=$1 prefix=$2 t0 left row
	pg_restart
	wait_workers 1
	t0=$(now_us)
	sql "SELECT count(*) FROM generate_series(1, 256) g,
		LATERAL paysync.track('$prefix' || g, '$chan', schedule => '{1ms,1h}')" >/dev/null
	for _ in $(seq 600); do
		left=$(sql "SELECT count(*) FROM paysync.payments WHERE payment_id LIKE '$prefix%' AND status = 'pending' AND errors = 0")
		[ "$left" = 0 ] && break
		sleep 0.1
	done
	COLD_SECS=$(awk -v a="$t0" -v b="$(now_us)" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
	row=$(sql "SELECT count(*) FILTER (WHERE last_error LIKE 'timeout%'), count(*) FILTER (WHERE errors > 0 OR status = 'pending')
		FROM paysync.payments WHERE payment_id LIKE '$prefix%'")
	IFS='|' read -r COLD_TIMEOUTS COLD_ERRORS <<<"$row"
}

phase_tls() {
	local dir=$TMP/nginx-tls plain h1 h2 name url port conns proto cpu_delta
	local -A RATE CPU WAKE ALL_RATES ALL_CPUS MED_RATE MED_CPU RATIO MED_RATIO CONNS PROTO CT CE CS PORT_OF
	local round order
	TLS_N=${TLS_N:-20000}
	TLS_ROUNDS=${TLS_ROUNDS:-5}
	mkdir -p "$dir"
	openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dir/ca.key" -out "$dir/ca.crt" \
		-days 2 -subj "/CN=paysync bench CA" 2>/dev/null || fail "openssl: no CA"
	openssl req -newkey rsa:2048 -nodes -keyout "$dir/server.key" -out "$dir/server.csr" \
		-subj "/CN=127.0.0.1" 2>/dev/null || fail "openssl: no server key"
	printf 'subjectAltName = IP:127.0.0.1\n' >"$dir/server.ext"
	openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial 1 \
		-days 2 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null || fail "openssl: no server certificate"
	plain=$(free_port) h1=$(free_port) h2=$(free_port)
	tls_nginx_conf "$dir" "$plain" "$h1" "$h2"
	runuser -u postgres -- nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>"$dir/start.err" ||
		{ cat "$dir/start.err" >&2; fail "nginx (tls) did not start"; }
	NGINX_DIRS+=("$dir")
	for _ in $(seq 50); do
		curl -s -o /dev/null --cacert "$dir/ca.crt" "https://127.0.0.1:$h2/ping" && break
		sleep 0.1
	done
	"${PSQL[@]}" -v ca="$(cat "$dir/ca.crt")" >/dev/null <<SQL || fail "cannot create the tls channels"
SELECT paysync.create_channel('tls_plain', 'http_json', 'http://127.0.0.1:$plain', '{"status_map": $STATUS_MAP}');
SELECT paysync.create_channel('tls_h1', 'http_json', 'https://127.0.0.1:$h1',
	jsonb_build_object('status_map', '$STATUS_MAP'::jsonb, 'ca_cert', :'ca'));
SELECT paysync.create_channel('tls_h2', 'http_json', 'https://127.0.0.1:$h2',
	jsonb_build_object('status_map', '$STATUS_MAP'::jsonb, 'ca_cert', :'ca'));
SQL
	sql "ALTER SYSTEM SET paysync.request_timeout = '5s'" >/dev/null
	say "phase tls: zero-latency nginx, plain HTTP (:$plain), HTTPS HTTP/1.1 (:$h1), HTTPS HTTP/2 (:$h2), CA from ca_cert; paysync.max_inflight $(sql 'SHOW paysync.max_inflight'), request_timeout 5s"
	for name in plain h1 h2; do
		case $name in plain) port=$plain ;; h1) port=$h1 ;; h2) port=$h2 ;; esac
		PORT_OF[$name]=$port
		say " tls_$name, cold (after a restart): 256 payments due at once..."
		tls_cold "tls_$name" "c$name-"
		CT[$name]=$COLD_TIMEOUTS CE[$name]=$COLD_ERRORS CS[$name]=$COLD_SECS
		read -r conns proto < <(tls_connections "$port" "c$name-")
		say "  all answered in $COLD_SECS s; $COLD_TIMEOUTS timeouts, $COLD_ERRORS errors; $conns connections ($proto)"
	done
	# warm: TLS_ROUNDS rounds, the order reversed each round (a later batch
	# meets bigger tables and autovacuum), the best and the median of each
	# kept
	for round in $(seq "$TLS_ROUNDS"); do
		order="plain h1 h2"
		[ $((round % 2)) = 0 ] && order="h2 h1 plain"
		for name in $order; do
			say " tls_$name, warm, round $round: $TLS_N payments..."
			measure_batch "w$name$round-" "$TLS_N" "'tls_$name'" "'{1ms}'" 300
			read -r conns proto < <(tls_connections "${PORT_OF[$name]}" "w$name$round-")
			say "  $conns connections ($proto) for $TLS_N checks"
			ALL_RATES[$name]+=" $MB_RATE" ALL_CPUS[$name]+=" $MB_CPU_US"
			tls_better "$MB_RATE" "${RATE[$name]:-}" '>' && RATE[$name]=$MB_RATE
			tls_better "$MB_CPU_US" "${CPU[$name]:-}" '<' && CPU[$name]=$MB_CPU_US WAKE[$name]=$MB_WAKEUPS
			if [ -z "${CONNS[$name]:-}" ] || [ "$conns" -gt "${CONNS[$name]}" ]; then
				CONNS[$name]=$conns
			fi
			PROTO[$name]=$proto
		done
	done
	sql "ALTER SYSTEM RESET paysync.request_timeout" >/dev/null
	pg_restart
	wait_workers 1
	for name in plain h1 h2; do
		MED_RATE[$name]=$(tls_median "${ALL_RATES[$name]}")
		MED_CPU[$name]=$(tls_median "${ALL_CPUS[$name]}")
	done
	for name in h1 h2; do
		RATIO[$name]=$(tls_ratio "${RATE[$name]}" "${RATE[plain]}")
		MED_RATIO[$name]=$(tls_ratio "${MED_RATE[$name]}" "${MED_RATE[plain]}")
	done
	say ""
	printf '%-24s%-16s%-20s%s\n' "" "plain HTTP" "HTTPS HTTP/1.1" "HTTPS HTTP/2"
	say "warm: the best and the median of $TLS_ROUNDS rounds for each (checks/s and CPU separately; wakeups: the lowest-CPU round's); connections: the most in a round"
	printf '%-24s%-16s%-20s%s\n' "warm checks/s, best" "${RATE[plain]}" "${RATE[h1]} (${RATIO[h1]}x)" "${RATE[h2]} (${RATIO[h2]}x)"
	printf '%-24s%-16s%-20s%s\n' "  median" "${MED_RATE[plain]}" "${MED_RATE[h1]} (${MED_RATIO[h1]}x)" "${MED_RATE[h2]} (${MED_RATIO[h2]}x)"
	printf '%-24s%-16s%-20s%s\n' "worker CPU/check (us)" "${CPU[plain]}" "${CPU[h1]}" "${CPU[h2]}"
	printf '%-24s%-16s%-20s%s\n' "  median" "${MED_CPU[plain]}" "${MED_CPU[h1]}" "${MED_CPU[h2]}"
	printf '%-24s%-16s%-20s%s\n' "  wakeups/check" "${WAKE[plain]}" "${WAKE[h1]}" "${WAKE[h2]}"
	printf '%-24s%-16s%-20s%s\n' "connections ($TLS_N)" "${CONNS[plain]}" "${CONNS[h1]} (${PROTO[h1]})" "${CONNS[h2]} (${PROTO[h2]})"
	printf '%-24s%-16s%-20s%s\n' "cold 256: timeouts" "${CT[plain]}" "${CT[h1]}" "${CT[h2]}"
	printf '%-24s%-16s%-20s%s\n' "cold 256: all answered" "${CS[plain]} s" "${CS[h1]} s" "${CS[h2]} s"
	# the targets are judged on the medians: a best round can be luck
	for name in h1 h2; do
		cpu_delta=$(awk -v a="${MED_CPU[$name]}" -v b="${MED_CPU[plain]}" 'BEGIN { printf "%+.1f", a - b }')
		summary "tls $name warm vs plain" "median ${MED_RATIO[$name]}x ($(meets "$(tls_ratio "${MED_RATE[$name]}" "${MED_RATE[plain]}" 3)" '>=' 0.9) vs >= 0.9x; best ${RATIO[$name]}x), CPU median $cpu_delta us/check vs plain ($(meets "$cpu_delta" '<=' 20) vs <= +20)"
		summary "tls $name cold 256" "${CT[$name]} timeouts ($(meets "${CT[$name]}" '<=' 0) vs 0)"
	done
	summary "tls h1 connections" "${CONNS[h1]} for $TLS_N checks ($(meets "${CONNS[h1]}" '<=' "$(sql 'SHOW paysync.max_inflight')") vs <= max_inflight)"
	summary "tls h2 connections" "${CONNS[h2]} for $TLS_N checks ($(meets "${CONNS[h2]}" '<=' 4) vs <= 4)"
	tls_pg_net "$plain" "$h1" "$h2"
}

# pg_net_exits: how many times a pg_net worker has ended with an error or
# a signal in this cluster's logs so far.
pg_net_exits() {
	cat "$TMP"/server.log* |
		grep -cE 'background worker "pg_net[^"]*" \(PID [0-9]+\) (exited with exit code [1-9]|was terminated by signal)' || true
}

# pg_net_batch URL PREFIX N: N net.http_get to URL/PREFIXi at once, waited
# for until each has a response row or PGNET_LIMIT seconds have passed.
# Sets PN_RATE (answered per second, over the time it took or the limit),
# PN_OK (distinct requests answered 200), PN_FAILED (distinct requests
# with a timeout or error), PN_ERROR (the commonest error and how many),
# PN_DUPS (response rows beyond one a request) and PN_SECS.
pg_net_batch() {
	local url=$1 prefix=$2 n=$3 t0 first last row done_ok
	t0=$(now_us)
	row=$(sql "SELECT min(id), max(id) FROM (SELECT net.http_get('$url/$prefix' || g, timeout_milliseconds => 5000) AS id
		FROM generate_series(1, $n) g) r")
	IFS='|' read -r first last <<<"$row"
	for _ in $(seq $((PGNET_LIMIT * 5))); do
		done_ok=$(sql "SELECT count(DISTINCT id) FROM net._http_response WHERE id BETWEEN $first AND $last")
		[ "$done_ok" -ge "$n" ] && break
		sleep 0.2
	done
	PN_SECS=$(awk -v a="$t0" -v b="$(now_us)" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
	row=$(sql "SELECT count(DISTINCT id) FILTER (WHERE status_code = 200),
			count(DISTINCT id) FILTER (WHERE timed_out OR error_msg IS NOT NULL),
			count(*) - count(DISTINCT id)
		FROM net._http_response WHERE id BETWEEN $first AND $last")
	IFS='|' read -r PN_OK PN_FAILED PN_DUPS <<<"$row"
	PN_ERROR=$(sql "SELECT error || ' (' || count(*) || ')'
		FROM (SELECT coalesce(left(split_part(error_msg, '. ', 1), 60), 'timed out') AS error FROM net._http_response
			WHERE id BETWEEN $first AND $last AND (timed_out OR error_msg IS NOT NULL)) e
		GROUP BY error ORDER BY count(*) DESC LIMIT 1")
	PN_RATE=$(awk -v a="$PN_OK" -v s="$PN_SECS" 'BEGIN { printf "%.0f", (s > 0) ? a / s : 0 }')
	# what is still queued would run into the next batch
	sql "DELETE FROM net.http_request_queue" >/dev/null
	sleep 1
}

# tls_pg_net PLAIN H1 H2: pg_net, when installed in PG_CONFIG's
# PostgreSQL (Debian 12 has no package of it for PostgreSQL 15; bench/
# README.md says how it was built), over the same three servers at
# pg_net.batch_size 200 (its default) and 500, PGNET_N requests each
# (default 3000), PGNET_LIMIT seconds at most (default 60), timeout 5 s as
# paysync had.  pg_net has no option naming a CA: it trusts libcurl's CA
# file (curl-config --ca), so a user would add the CA to the system store.
# For this part the cluster runs in a mount namespace of its own (unshare
# -m) where that file is the system bundle plus the bench CA, bind-mounted
# over it: the machine's trust store is never changed.
tls_pg_net() {
	local plain=$1 h1=$2 h2=$3 dir=$TMP/nginx-tls ca_file batch name url exits0 exits conns proto
	local -A PN_LINE
	local -A PORT_OF=([plain]=$plain [h1]=$h1 [h2]=$h2)
	local -A URL_OF=([plain]="http://127.0.0.1:$plain" [h1]="https://127.0.0.1:$h1" [h2]="https://127.0.0.1:$h2")
	PGNET_N=${PGNET_N:-3000}
	PGNET_LIMIT=${PGNET_LIMIT:-60}
	if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/pg_net.control" ]; then
		summary "tls pg_net" "not quoted: pg_net is not installed in $PG_CONFIG's PostgreSQL (no Debian package for PostgreSQL 15; bench/README.md says how to build it)"
		return
	fi
	ca_file=$(curl-config --ca 2>/dev/null)
	if [ ! -f "$ca_file" ] || ! unshare -m true 2>/dev/null; then
		summary "tls pg_net" "not quoted: no libcurl CA file (curl-config --ca: '$ca_file') or no mount namespace (unshare -m)"
		return
	fi
	sql "ALTER SYSTEM SET shared_preload_libraries = 'paysync', 'pg_net'" >/dev/null
	check_log_for_crashes
	runuser -u postgres -- "$BINDIR/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null ||
		fail "the cluster did not stop"
	mv "$TMP/server.log" "$TMP/server.log.$(now_us)"
	cat "$ca_file" "$dir/ca.crt" >"$dir/system-and-bench-ca.pem"
	chmod 644 "$dir/system-and-bench-ca.pem"
	unshare -m sh -c 'mount --bind "$1" "$2" && exec runuser -u postgres -- "$3/pg_ctl" -D "$4" -l "$5" -w -t 60 start' \
		sh "$dir/system-and-bench-ca.pem" "$ca_file" "$BINDIR" "$PGDATA" "$TMP/server.log" >/dev/null ||
		fail "the cluster did not start with pg_net"
	sql "CREATE EXTENSION pg_net" >/dev/null
	say ""
	say "pg_net $(sql "SELECT extversion FROM pg_extension WHERE extname = 'pg_net'") over the same servers: $PGNET_N requests each, at most $PGNET_LIMIT s, timeout 5 s (libcurl's CA file: the system bundle and the bench CA, $(grep -c 'BEGIN CERTIFICATE' "$dir/system-and-bench-ca.pem") certificates)"
	local -a table=()
	for batch in 200 500; do
		sql "ALTER SYSTEM SET pg_net.batch_size = $batch" >/dev/null
		sql "SELECT pg_reload_conf()" >/dev/null
		sleep 1
		PN_LINE=()
		for name in plain h1 h2; do
			url=${URL_OF[$name]}
			exits0=$(pg_net_exits)
			pg_net_batch "$url" "pn$name$batch-" "$PGNET_N"
			exits=$(($(pg_net_exits) - exits0))
			read -r conns proto < <(tls_connections "${PORT_OF[$name]}" "pn$name$batch-")
			PN_LINE[$name]="$PN_RATE"
			[ "$PN_OK" -lt "$PGNET_N" ] && PN_LINE[$name]+=" ($PN_OK ok)"
			say "  batch_size $batch, $name: $PN_OK answered 200, $PN_FAILED failed${PN_ERROR:+ (the most: $PN_ERROR)}, $PN_DUPS duplicate responses in $PN_SECS s; $conns connections ($proto); $exits worker crashes"
			summary "tls pg_net $name batch $batch" "$PN_RATE requests/s ($PN_OK of $PGNET_N answered in $PN_SECS s, $PN_FAILED failed, $PN_DUPS duplicates, $exits worker crashes)"
		done
		table+=("$(printf '%-24s%-16s%-20s%s' "  batch_size $batch" "${PN_LINE[plain]}" "${PN_LINE[h1]}" "${PN_LINE[h2]}")")
	done
	printf '%-24s%-16s%-20s%s\n' "pg_net requests/s" "plain HTTP" "HTTPS HTTP/1.1" "HTTPS HTTP/2"
	printf '%s\n' "${table[@]}"
	{ grep -h ' pg_net [^ ]* worker \(ERROR\|FATAL\|PANIC\):' "$TMP"/server.log* || true; } |
		sed 's/.* worker \(ERROR\|FATAL\|PANIC\): *//' | sort | uniq -c | sort -rn | awk 'NR <= 3' |
		while read -r count message; do say "  pg_net worker error, $count times: $message"; done
	sql "DROP EXTENSION pg_net" >/dev/null
	sql "ALTER SYSTEM RESET pg_net.batch_size" >/dev/null
	sql "ALTER SYSTEM RESET shared_preload_libraries" >/dev/null
	pg_restart
	wait_workers 1
}
