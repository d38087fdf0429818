# bench/tls_phase.sh: the tls phase of bench/run (issue 18), sourced by it
# after bench/phases.sh (whose measure_batch, summary, meets, pg_restart,
# wait_workers, worker_pids and cpu_ticks it uses).
#
# One zero-latency nginx answering {"status":"PAID"} three ways: plain
# HTTP, HTTPS HTTP/1.1 and HTTPS HTTP/2 (a certificate of a CA made here,
# given to each channel as ca_cert).  For each: a cold batch of 256
# payments right after a restart (no connection open, no CA loaded) at
# paysync.request_timeout = 5s, counting timeouts; then a warm batch of
# TLS_N (default 20000), reporting checks/s, worker CPU per check and the
# connections nginx saw ($connection).  The warm batches run TLS_ROUNDS
# times (default 3), in the reverse order every other round, and the best
# of each is reported: on a shared 2-core machine one batch can lose half
# its speed to whatever else runs.  pg_net over the same target: only
# when Debian has a package for it (it has none for PostgreSQL 15 on
# Debian 12: the phase says so).

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
	local dir=$TMP/nginx-tls plain h1 h2 name url port conns proto ratio_h1 ratio_h2 cpu_plain
	local -A RATE CPU CONNS PROTO CT CE CS PORT_OF
	local round order
	TLS_N=${TLS_N:-20000}
	TLS_ROUNDS=${TLS_ROUNDS:-3}
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
	# meets bigger tables and autovacuum), the best round of each kept
	for round in $(seq "$TLS_ROUNDS"); do
		order="plain h1 h2"
		[ $((round % 2)) = 0 ] && order="h2 h1 plain"
		for name in $order; do
			say " tls_$name, warm, round $round: $TLS_N payments..."
			measure_batch "w$name$round-" "$TLS_N" "'tls_$name'" "'{1ms}'" 300
			read -r conns proto < <(tls_connections "${PORT_OF[$name]}" "w$name$round-")
			say "  $conns connections ($proto) for $TLS_N checks"
			tls_better "$MB_RATE" "${RATE[$name]:-}" '>' && RATE[$name]=$MB_RATE
			tls_better "$MB_CPU_US" "${CPU[$name]:-}" '<' && CPU[$name]=$MB_CPU_US
			if [ -z "${CONNS[$name]:-}" ] || [ "$conns" -gt "${CONNS[$name]}" ]; then
				CONNS[$name]=$conns
			fi
			PROTO[$name]=$proto
		done
	done
	sql "ALTER SYSTEM RESET paysync.request_timeout" >/dev/null
	pg_restart
	wait_workers 1
	ratio_h1=$(awk -v a="${RATE[h1]}" -v b="${RATE[plain]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
	ratio_h2=$(awk -v a="${RATE[h2]}" -v b="${RATE[plain]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
	cpu_plain=${CPU[plain]}
	say ""
	printf '%-24s%-16s%-20s%s\n' "" "plain HTTP" "HTTPS HTTP/1.1" "HTTPS HTTP/2"
	say "warm: the best of $TLS_ROUNDS rounds for each (checks/s and CPU separately); connections: the most in a round"
	printf '%-24s%-16s%-20s%s\n' "warm checks/s" "${RATE[plain]}" "${RATE[h1]} (${ratio_h1}x)" "${RATE[h2]} (${ratio_h2}x)"
	printf '%-24s%-16s%-20s%s\n' "worker CPU/check (us)" "${CPU[plain]}" "${CPU[h1]}" "${CPU[h2]}"
	printf '%-24s%-16s%-20s%s\n' "connections ($TLS_N)" "${CONNS[plain]}" "${CONNS[h1]} (${PROTO[h1]})" "${CONNS[h2]} (${PROTO[h2]})"
	printf '%-24s%-16s%-20s%s\n' "cold 256: timeouts" "${CT[plain]}" "${CT[h1]}" "${CT[h2]}"
	printf '%-24s%-16s%-20s%s\n' "cold 256: all answered" "${CS[plain]} s" "${CS[h1]} s" "${CS[h2]} s"
	for name in h1 h2; do
		summary "tls $name warm vs plain" "$(awk -v a="${RATE[$name]}" -v b="${RATE[plain]}" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')x ($(meets "$(awk -v a="${RATE[$name]}" -v b="${RATE[plain]}" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }')" '>=' 0.9) vs >= 0.9x), CPU $(awk -v a="${CPU[$name]}" -v b="$cpu_plain" 'BEGIN { printf "%+.1f", a - b }') us/check vs plain ($(meets "$(awk -v a="${CPU[$name]}" -v b="$cpu_plain" 'BEGIN { printf "%.1f", a - b }')" '<=' 20) vs <= +20)"
		summary "tls $name cold 256" "${CT[$name]} timeouts ($(meets "${CT[$name]}" '<=' 0) vs 0)"
	done
	summary "tls h1 connections" "${CONNS[h1]} for $TLS_N checks ($(meets "${CONNS[h1]}" '<=' "$(sql 'SHOW paysync.max_inflight')") vs <= max_inflight)"
	summary "tls h2 connections" "${CONNS[h2]} for $TLS_N checks ($(meets "${CONNS[h2]}" '<=' 4) vs <= 4)"
	if apt-cache policy postgresql-15-pg-net 2>/dev/null | grep -q 'Candidate: [0-9]'; then
		summary "tls pg_net" "a Debian package exists (postgresql-15-pg-net) but this phase does not install it yet"
	else
		summary "tls pg_net" "not quoted: no Debian package for PostgreSQL 15 (apt-cache policy postgresql-15-pg-net: none)"
	fi
}
