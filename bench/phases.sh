# bench/phases.sh: the 0.3 scale and politeness phases of bench/run, sourced
# by it (issue 11): zero-latency (nginx, paysync.workers 1 and 2), wide
# (max_inflight 2048 against the 50 ms mock), rate (max_rps), outage
# (503 for 60 s, with and without the circuit breaker), channels (10,000
# channels defined) and bigtable (10 million payments not yet due).
#
# Needs from bench/run: TOP, TMP, BINDIR, PGDATA, PSQL (array), MOCK_URL,
# STATUS_MAP, say, fail.  Each phase prints its detail lines and adds one or
# more lines to SUMMARY; a phase whose paysync feature is not in this build
# yet (the option or setting is refused) says so and is skipped.  A figure
# below its target is reported as "MISSED", which does not change the exit
# status; behaviour the contract forbids (a payment asked twice at once,
# more requests than max_rps in a second, errors counted that no request
# caused) is a PROBLEM line and makes the exit status 3.

SUMMARY=()
PHASE_PROBLEMS=0
NGINX_DIRS=()
CRASH_LINES_DONE=0

phase_problem() {
	printf 'PROBLEM: %s\n' "$*"
	PHASE_PROBLEMS=$((PHASE_PROBLEMS + 1))
}

summary() {
	SUMMARY+=("$(printf '%-30s %s' "$1" "$2")")
}

# "ok" or "MISSED" for a figure against a target: meets VALUE OP TARGET
meets() {
	awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
		if (v == "" || v == "n/a") { print "n/a"; exit }
		ok = (op == ">=") ? (v + 0 >= t + 0) : (v + 0 <= t + 0)
		print ok ? "ok" : "MISSED" }'
}

sql() {
	"${PSQL[@]}" -Atc "$1"
}

now_us() {
	date +%s%6N
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---- the cluster ----

# The server log is checked for crashed processes at the end of the run; a
# restart's own shutdown logs the worker's exit code 1, so the lines before
# each restart are checked here and the log then starts afresh.  pg_net's
# worker exiting on an error (the tls phase runs it, and counts those) is
# not paysync's crash; one killed by a signal still counts, as it makes the
# postmaster restart every process.
check_log_for_crashes() {
	[ -f "$TMP/server.log" ] || return 0
	grep -E 'terminated by signal|PANIC|exited with exit code [^0]' "$TMP/server.log" |
		grep -vE 'background worker "pg_net[^"]*" \(PID [0-9]+\) exited with exit code' >>"$TMP/crashes.phases" || true
}

pg_restart() {
	check_log_for_crashes
	runuser -u postgres -- "$BINDIR/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null ||
		fail "the cluster did not stop"
	mv "$TMP/server.log" "$TMP/server.log.$(now_us)"
	runuser -u postgres -- "$BINDIR/pg_ctl" -D "$PGDATA" -l "$TMP/server.log" -w -t 60 start >/dev/null ||
		fail "the cluster did not start again"
}

# Pids of the paysync worker processes of this cluster (one line each).
worker_pids() {
	sql "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE 'paysync worker%' ORDER BY pid"
}

# Waits until at least n workers show in pg_stat_activity (30 s).
wait_workers() {
	local n=$1 have=0
	for _ in $(seq 150); do
		have=$(worker_pids | wc -l)
		[ "$have" -ge "$n" ] && return 0
		sleep 0.2
	done
	fail "only $have of $n paysync workers came up within 30 s"
}

# Voluntary context switches (each a sleep the process woke from), summed
# over the given pids.
wakeups() {
	local pid sum=0 n
	for pid in "$@"; do
		n=$(awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || n=
		[ -n "$n" ] || { echo "gone"; return; }
		sum=$((sum + n))
	done
	echo "$sum"
}

# utime + stime, in clock ticks, summed over the given pids.
cpu_ticks() {
	local pid line sum=0
	local -a f
	for pid in "$@"; do
		read -r line 2>/dev/null <"/proc/$pid/stat" || { echo "gone"; return; }
		read -ra f <<<"${line##*) }"
		sum=$((sum + f[11] + f[12]))
	done
	echo "$sum"
}

# ---- nginx: a real, fast fixed-answer server, run as user postgres ----

# nginx_conf DIR PORT MODE: MODE paid answers {"status":"PAID"}, down 503.
nginx_conf() {
	local dir=$1 port=$2 mode=$3 answer
	if [ "$mode" = paid ]; then
		answer="return 200 '{\"status\":\"PAID\"}';"
	else
		answer="return 503 '{\"error\":\"down\"}';"
	fi
	cat >"$dir/nginx.conf.new" <<EOF
# written by bench/phases.sh
worker_processes 1;
worker_rlimit_nofile 16384;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
	log_format bench '\$msec \$status \$uri';
	access_log $dir/access.log bench buffer=256k flush=1s;
	client_body_temp_path $dir/tmp_body;
	proxy_temp_path $dir/tmp_proxy;
	fastcgi_temp_path $dir/tmp_fastcgi;
	uwsgi_temp_path $dir/tmp_uwsgi;
	scgi_temp_path $dir/tmp_scgi;
	keepalive_requests 10000000;
	keepalive_timeout 300s;
	server {
		listen 127.0.0.1:$port;
		default_type application/json;
		location / { $answer }
	}
}
EOF
	chown postgres: "$dir/nginx.conf.new"
	mv "$dir/nginx.conf.new" "$dir/nginx.conf"
}

# nginx_start NAME MODE: starts an nginx in $TMP/nginx-NAME; sets NGINX_URL.
nginx_start() {
	local name=$1 mode=$2 dir=$TMP/nginx-$1 port
	command -v nginx >/dev/null || {
		say "installing nginx-light (Debian)..."
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null ||
			fail "cannot install nginx-light"
	}
	mkdir -p "$dir"
	chown postgres: "$dir"
	port=$(free_port)
	nginx_conf "$dir" "$port" "$mode"
	echo "$port" >"$dir/port"
	runuser -u postgres -- nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>"$dir/start.err" ||
		{ cat "$dir/start.err" >&2; fail "nginx did not start"; }
	NGINX_DIRS+=("$dir")
	for _ in $(seq 50); do
		curl -s -o /dev/null "http://127.0.0.1:$port/ping" && break
		sleep 0.1
	done
	NGINX_URL="http://127.0.0.1:$port"
}

# nginx_mode NAME MODE: switches the answer (graceful reload) and waits
# until the new answer is served.
nginx_mode() {
	local dir=$TMP/nginx-$1 mode=$2 port want code
	port=$(cat "$dir/port")
	nginx_conf "$dir" "$port" "$mode"
	kill -HUP "$(cat "$dir/nginx.pid")"
	[ "$mode" = paid ] && want=200 || want=503
	for _ in $(seq 100); do
		code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/_mode")
		[ "$code" = "$want" ] && return 0
		sleep 0.02
	done
	fail "nginx did not switch to $mode"
}

# Makes nginx write out its buffered access log.
nginx_flush() {
	kill -USR1 "$(cat "$TMP/nginx-$1/nginx.pid")"
	sleep 0.5
}

# Called by bench/run's cleanup: stops the nginx instances by their pid.
phases_cleanup() {
	local dir pid
	for dir in "${NGINX_DIRS[@]}"; do
		pid=$(cat "$dir/nginx.pid" 2>/dev/null) || continue
		kill -TERM "$pid" 2>/dev/null || true
	done
}

# ---- one measured batch ----

# measure_batch PREFIX N CHANNEL_EXPR SCHEDULE_EXPR TIMEOUT_S
# Tracks payments PREFIX1..PREFIXN in one transaction (channel and schedule
# are SQL expressions of g, the number), waits until none is pending, and
# sets MB_RATE (checks/s from the track commit to the last event commit),
# MB_CPU_US (worker CPU per check, all workers), MB_WAKEUPS (the workers'
# voluntary context switches per check: how often they slept), MB_SECS,
# MB_DONE (payments final) and MB_TRACK_S (time the track statement took).
# A batch that is not done by the timeout sets MB_RATE from what was done
# so far.  First 20 warm-up payments (PREFIXw1..) on the same channels, so
# the workers are polling.
measure_batch() {
	local prefix=$1 n=$2 chan=$3 sched=$4 timeout_s=$5
	local pids c0 c1 w0 w1 t0 xid left deadline row first_commit last_commit track_commit events ticks
	"${PSQL[@]}" -Atc "SELECT count(*) FROM generate_series(1, 20) g,
		LATERAL paysync.track('${prefix}w' || g, $chan, schedule => '{1ms}')" >/dev/null
	for _ in $(seq 300); do
		left=$(sql "SELECT count(*) FROM paysync.payments WHERE payment_id LIKE '${prefix}w%' AND status = 'pending'")
		[ "$left" = 0 ] && break
		sleep 0.1
	done
	[ "$left" = 0 ] || fail "the warm-up payments '${prefix}w*' were not checked within 30 s"
	mapfile -t pids < <(worker_pids)
	c0=$(cpu_ticks "${pids[@]}")
	w0=$(wakeups "${pids[@]}")
	t0=$(now_us)
	xid=$("${PSQL[@]}" -At <<EOF | tail -n 1
BEGIN;
SELECT count(*) FROM generate_series(1, $n) g,
	LATERAL paysync.track('$prefix' || g, $chan, schedule => $sched);
SELECT pg_current_xact_id();
COMMIT;
EOF
	) || fail "tracking '$prefix*' failed"
	MB_TRACK_S=$(awk -v a="$t0" -v b="$(now_us)" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
	deadline=$(($(date +%s) + timeout_s))
	while :; do
		left=$(sql "SELECT count(*) FROM paysync.payments WHERE payment_id LIKE '${prefix}%' AND payment_id NOT LIKE '${prefix}w%' AND status = 'pending'")
		[ "$left" = 0 ] && break
		[ "$(date +%s)" -ge "$deadline" ] && break
		sleep 0.2
	done
	c1=$(cpu_ticks "${pids[@]}")
	w1=$(wakeups "${pids[@]}")
	row=$(sql "SELECT count(*),
			(extract(epoch FROM min(pg_xact_commit_timestamp(e.xmin))) * 1e6)::bigint,
			(extract(epoch FROM max(pg_xact_commit_timestamp(e.xmin))) * 1e6)::bigint,
			(extract(epoch FROM pg_xact_commit_timestamp('$xid'::text::xid)) * 1e6)::bigint
		FROM paysync.events e
		WHERE e.payment_id LIKE '${prefix}%' AND e.payment_id NOT LIKE '${prefix}w%'")
	IFS='|' read -r events first_commit last_commit track_commit <<<"$row"
	MB_DONE=$events
	if [ "$left" != 0 ]; then
		say "  NOT DONE: $left of $n still pending after ${timeout_s} s; the rate below is of what was done"
		last_commit=$(now_us)
	fi
	if [ "$c0" = gone ] || [ "$c1" = gone ] || [ "$w0" = gone ] || [ "$w1" = gone ]; then
		phase_problem "a paysync worker exited during '$prefix*' (pids ${pids[*]})"
		MB_CPU_US=n/a
		MB_WAKEUPS=n/a
	else
		ticks=$(getconf CLK_TCK)
		MB_CPU_US=$(awk -v a="$c0" -v b="$c1" -v t="$ticks" -v n="$events" \
			'BEGIN { if (n > 0) printf "%.1f", (b - a) / t / n * 1e6; else print "n/a" }')
		MB_WAKEUPS=$(awk -v a="$w0" -v b="$w1" -v n="$events" \
			'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "n/a" }')
	fi
	if [ -z "$track_commit" ] || [ -z "$last_commit" ]; then
		MB_RATE=n/a
		MB_SECS=n/a
	else
		MB_SECS=$(awk -v a="$track_commit" -v b="$last_commit" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
		MB_RATE=$(awk -v a="$track_commit" -v b="$last_commit" -v n="$events" \
			'BEGIN { if (b > a) printf "%.0f", n / ((b - a) / 1e6); else print "n/a" }')
	fi
	MB_FIRST_MS=$(awk -v a="$track_commit" -v b="$first_commit" 'BEGIN { printf "%.0f", (b - a) / 1e3 }')
	say "  $n tracked in $MB_TRACK_S s; $events events, the first ${MB_FIRST_MS} ms and the last $MB_SECS s after the track commit:" \
		"$MB_RATE checks/s end to end; worker CPU $MB_CPU_US us/check, $MB_WAKEUPS wakeups/check (${#pids[@]} worker(s): ${pids[*]})"
}

# nginx_requests NAME PREFIX: "requests distinct_ids" for PREFIX* (warm-up
# payments excluded) in the nginx access log, optionally of one status.
nginx_requests() {
	local name=$1 prefix=$2 status=${3:-}
	nginx_flush "$name"
	awk -v p="$prefix" -v pw="${prefix}w" -v s="$status" '
		s != "" && $2 != s { next }
		{ k = split($3, seg, "/"); id = seg[k] }
		index(id, p) == 1 && index(id, pw) != 1 { n++; if (!(id in seen)) { seen[id] = 1; d++ } }
		END { printf "%d %d\n", n, d }' "$TMP/nginx-$name/access.log"
}

# The 'fast' channel on the zero-latency nginx (started on first use).
ensure_fast_channel() {
	[ -n "${FAST_URL:-}" ] && return 0
	nginx_start fast paid
	FAST_URL=$NGINX_URL
	sql "SELECT paysync.create_channel('fast', 'http_json', '$FAST_URL', '{\"status_map\": $STATUS_MAP}')" >/dev/null ||
		fail "cannot create channel fast"
}

# zero_run PREFIX LABEL: one zero-latency batch on 'fast' and its check of
# the requests nginx saw.
zero_run() {
	local prefix=$1 label=$2 req distinct
	measure_batch "$prefix" "$ZERO_N" "'fast'" "'{1ms}'" 300
	read -r req distinct < <(nginx_requests fast "$prefix")
	if [ "$req" != "$ZERO_N" ] || [ "$distinct" != "$ZERO_N" ]; then
		phase_problem "$label: nginx saw $req requests for $distinct of the $ZERO_N payments (expected one each)"
	fi
}

# ---- phase: zero-latency ----

phase_zero() {
	local r1 cpu1 r2 cpu2 workers_ok
	ZERO_N=${ZERO_N:-20000}
	ensure_fast_channel
	say "phase zero-latency: $ZERO_N payments against nginx ($FAST_URL, fixed PAID answer), paysync.workers 1 and 2..."
	if sql "SHOW paysync.workers" >/dev/null 2>&1; then
		workers_ok=1
		[ "$(sql "SHOW paysync.workers")" = 1 ] || { sql "ALTER SYSTEM SET paysync.workers = 1" >/dev/null; pg_restart; }
	else
		workers_ok=0
	fi
	wait_workers 1
	say " workers = 1:"
	zero_run z1- "zero-latency workers=1"
	r1=$MB_RATE cpu1=$MB_CPU_US
	summary "zero-latency, workers=1" "$r1 checks/s ($(meets "$r1" '>=' 20000) vs >= 20000), $cpu1 us/check ($(meets "$cpu1" '<=' 40) vs <= 40)"
	if [ "$workers_ok" = 0 ]; then
		say " workers = 2: SKIPPED: SHOW paysync.workers fails, the setting is not in this build yet"
		summary "zero-latency, workers=2" "skipped: paysync.workers is not in this build"
		return 0
	fi
	sql "ALTER SYSTEM SET paysync.workers = 2" >/dev/null
	pg_restart
	wait_workers 2
	say " workers = 2:"
	zero_run z2- "zero-latency workers=2"
	r2=$MB_RATE cpu2=$MB_CPU_US
	summary "zero-latency, workers=2" "$r2 checks/s ($(meets "$r2" '>=' 20000) vs >= 20000), $cpu2 us/check ($(meets "$cpu2" '<=' 40) vs <= 40)"
	sql "ALTER SYSTEM RESET paysync.workers" >/dev/null
	pg_restart
	wait_workers 1
}

# ---- phase: wide ----

# Samples RssAnon and the open fds of the workers every 100 ms into FILE
# until FILE.stop exists (no forks: it shares two cores with what it
# measures).  Lines: "<max RssAnon kB> <max fds>".
sample_workers() {
	local out=$1 pid k v _ rss=0 fds=0 n
	local -a pids fdlist
	mapfile -t pids < <(worker_pids)
	while [ ! -e "$out.stop" ]; do
		for pid in "${pids[@]}"; do
			[ -r "/proc/$pid/status" ] || continue
			while read -r k v _; do
				if [ "$k" = RssAnon: ] && [ "$v" -gt "$rss" ]; then
					rss=$v
				fi
			done 2>/dev/null <"/proc/$pid/status"
			fdlist=(/proc/"$pid"/fd/*)
			n=${#fdlist[@]}
			[ "$n" -gt "$fds" ] && fds=$n
		done
		echo "$rss $fds" >"$out"
		sleep 0.1
	done
}

phase_wide() {
	local n=${WIDE_N:-40000} context pid limit rss fds sampler stats mif span rate first last req distinct
	say "phase wide: $n payments against the ${LATENCY_MS} ms mock with paysync.max_inflight = 2048..."
	context=$(sql "SELECT context FROM pg_settings WHERE name = 'paysync.max_inflight'")
	sql "ALTER SYSTEM SET paysync.max_inflight = 2048" >/dev/null
	if [ "$context" = sighup ]; then
		sql "SELECT pg_reload_conf()" >/dev/null
		sleep 1
	else
		say "  paysync.max_inflight has context '$context': restarting the cluster"
		pg_restart
	fi
	wait_workers 1
	curl -s -X POST "$MOCK_URL/_reset" >/dev/null
	: >"$TMP/wide.sample"
	rm -f "$TMP/wide.sample.stop"
	sample_workers "$TMP/wide.sample" &
	sampler=$!
	measure_batch wd- "$n" "'mock'" "'{1ms}'" 120
	touch "$TMP/wide.sample.stop"
	wait "$sampler" 2>/dev/null || true
	read -r rss fds <"$TMP/wide.sample" || true
	rss=${rss:-0} fds=${fds:-0}
	pid=$(worker_pids | head -n 1)
	limit=$(awk '/^Max open files/ { print $4 " soft, " $5 " hard" }' "/proc/$pid/limits")
	stats=$(curl -s "$MOCK_URL/_stats")
	mif=$(sed -n 's/.*"max_in_flight":\([0-9]*\).*/\1/p' <<<"$stats")
	read -r req distinct first last < <(awk '$3 ~ /^wd-[0-9]/ {
			n++; if (!($3 in s)) { s[$3] = 1; d++ }
			if (!f || $1 < f) f = $1; if ($1 > l) l = $1 }
		END { printf "%d %d %.0f %.0f\n", n, d, f, l }' "$TMP/mock.log")
	span=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
	rate=$(awk -v a="$first" -v b="$last" -v n="$distinct" 'BEGIN { if (b > a) printf "%.0f", n / ((b - a) / 1e6); else print "n/a" }')
	say "  mock: $req requests for $distinct payments, first->last request $span s = $rate checks/s; mock max in flight $mif"
	say "  worker peak RssAnon (sampled every 100 ms) $((rss / 1024)) MB; peak open fds $fds (limit $limit)"
	if [ "$req" != "$n" ] || [ "$distinct" != "$n" ]; then
		phase_problem "wide: the mock saw $req requests for $distinct of the $n payments (expected one each)"
	fi
	if [ -n "$mif" ] && [ "$mif" -gt 2048 ]; then
		phase_problem "wide: the mock saw $mif requests in flight at once, above paysync.max_inflight (2048)"
	fi
	summary "wide, max_inflight 2048" "$rate checks/s at the mock ($(meets "$rate" '>=' 15000) vs >= 15000), $MB_RATE end to end"
	summary "wide, worker memory, files" "peak RssAnon $((rss / 1024)) MB ($(meets "$((rss / 1024))" '<=' 64) vs <= 64), peak fds $fds (limit $limit)"
	sql "ALTER SYSTEM RESET paysync.max_inflight" >/dev/null
	if [ "$context" = sighup ]; then
		sql "SELECT pg_reload_conf()" >/dev/null
		sleep 1
	else
		pg_restart
	fi
}

# ---- phase: rate ----

phase_rate() {
	local n=${RATE_N:-5000} err out
	say "phase rate: a channel with max_rps 500, $n due payments against the mock..."
	if ! err=$(sql "SELECT paysync.create_channel('rated', 'http_json', '$MOCK_URL',
			'{\"status_map\": $STATUS_MAP, \"max_rps\": 500}')" 2>&1 >/dev/null); then
		say "  SKIPPED: the max_rps option is refused: $(head -n 1 <<<"$err")"
		summary "rate, max_rps 500" "skipped: max_rps is not in this build"
		return 0
	fi
	measure_batch rt- "$n" "'rated'" "'{1ms}'" $((n / 400 + 60))
	# every request to the channel counts for the window (warm-up too);
	# the average is over the batch's own requests, first to last
	out=$(awk '$3 ~ /^rt-/ { print $1, ($3 ~ /^rt-[0-9]/) }' "$TMP/mock.log" | sort -n | awk '
		{ t[NR] = $1; if ($2) { m++; if (!mf) mf = $1; ml = $1; s = int($1 / 1e6); if (!(s in c)) order[++ns] = s; c[s]++ } }
		END {
			if (m == 0) { print "0 0 n/a -"; exit }
			i = 1; max = 0
			for (j = 1; j <= NR; j++) {
				while (t[j] - t[i] >= 1e6) i++
				if (j - i + 1 > max) max = j - i + 1
			}
			avg = (ml > mf) ? sprintf("%.0f", (m - 1) / ((ml - mf) / 1e6)) : "n/a"
			line = ""
			for (k = 1; k <= ns; k++) line = line (k > 1 ? "," : "") c[order[k]]
			printf "%d %d %s %s\n", m, max, avg, line
		}')
	local req max avg per_second
	read -r req max avg per_second <<<"$out"
	say "  mock: $req requests; per whole second: $per_second"
	say "  max in any 1-second window $max, average $avg/s (first to last request)"
	if [ "$max" -gt 500 ]; then
		phase_problem "rate: $max requests in one 1-second window at a channel with max_rps 500"
	fi
	summary "rate, max_rps 500" "max $max in any 1 s ($(meets "$max" '<=' 500) vs <= 500), average $avg/s ($(meets "$avg" '>=' 475) vs >= 475)"
}

# ---- phase: outage ----

# outage_run CHANNEL PREFIX LABEL SHORT: nginx 'down' answers 503 for 60 s while
# OUTAGE_N payments of CHANNEL fall due, evenly over those 60 s (from 15 s
# after the track transaction starts, so the tracking itself is done by
# then), then PAID.
outage_run() {
	local chan=$1 prefix=$2 label=$3 short=$4 n=$OUTAGE_N margin=15 win=$OUTAGE_S
	local start_us end_us t_track left deadline recovered last_commit req distinct bad over snapshot state
	nginx_mode down down
	say " $label: tracking $n payments due from +${margin} s over ${win} s..."
	start_us=$("${PSQL[@]}" -At <<EOF | tail -n 1
BEGIN;
SELECT count(*) FROM generate_series(1, $n) g,
	LATERAL paysync.track('$prefix' || g, '$chan',
		schedule => ARRAY[make_interval(secs => $margin + (g - 1) * $win.0 / $n)]);
SELECT (extract(epoch FROM now()) * 1e6)::bigint;
COMMIT;
EOF
	) || fail "tracking '$prefix*' failed"
	t_track=$(awk -v a="$start_us" -v b="$(now_us)" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
	awk -v a="$t_track" -v m="$margin" 'BEGIN { exit !(a > m) }' &&
		say "  the track transaction took $t_track s, more than the ${margin} s margin: the first payments were due at its commit"
	end_us=$((start_us + (margin + win) * 1000000))
	# mid-outage: the channel's state, when paysync.stats has it
	sleep $(awk -v e="$end_us" -v n="$(now_us)" -v w="$win" 'BEGIN { d = (e - n) / 1e6 - w / 2; print (d > 0 ? d : 0) }')
	state=$(sql "SELECT state || coalesce(' since ' || paused_since, '') FROM paysync.stats WHERE channel = '$chan'" 2>/dev/null) ||
		state="(paysync.stats has no state column in this build)"
	say "  $((win / 2)) s before the end of the outage the channel's state: $state"
	# just before recovery: every payment's error count
	sleep $(awk -v e="$end_us" -v n="$(now_us)" 'BEGIN { d = (e - n) / 1e6 - 0.3; print (d > 0 ? d : 0) }')
	snapshot=$TMP/outage-$chan.errors
	sql "SELECT payment_id, errors FROM paysync.payments WHERE payment_id LIKE '${prefix}%' AND errors > 0" >"$snapshot"
	sleep $(awk -v e="$end_us" -v n="$(now_us)" 'BEGIN { d = (e - n) / 1e6; print (d > 0 ? d : 0) }')
	nginx_mode down paid
	recovered=$(now_us)
	deadline=$(($(date +%s) + 300))
	while :; do
		left=$(sql "SELECT count(*) FROM paysync.payments WHERE payment_id LIKE '${prefix}%' AND status = 'pending'")
		[ "$left" = 0 ] && break
		[ "$(date +%s)" -ge "$deadline" ] && break
		sleep 0.5
	done
	last_commit=$(sql "SELECT (extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) * 1e6)::bigint
		FROM paysync.events WHERE payment_id LIKE '${prefix}%'")
	read -r req distinct < <(nginx_requests down "$prefix" 503)
	# errors counted that no request caused: errors > 503 answers it got
	nginx_flush down
	read -r bad over < <(awk -v p="$prefix" '
		FILENAME == ARGV[1] { if ($2 == 503) { k = split($3, seg, "/"); if (index(seg[k], p) == 1) got[seg[k]]++ } next }
		{ split($0, f, "|"); if (f[2] > got[f[1]] + 0) { bad++; if (f[2] - got[f[1]] > over) over = f[2] - got[f[1]] } }
		END { printf "%d %d\n", bad, over }' "$TMP/nginx-down/access.log" "$snapshot")
	say "  during the outage: $req requests (503) for $distinct payments, $(awk -v r="$req" -v w="$win" 'BEGIN { printf "%.0f", r / w }')/s;" \
		"$(wc -l <"$snapshot") payments had errors counted at its end"
	if [ "$bad" -gt 0 ]; then
		phase_problem "outage ($label): $bad payments had more errors counted than 503 answers they got (by up to $over)"
	fi
	if [ "$left" = 0 ]; then
		local after
		after=$(awk -v a="$recovered" -v b="$last_commit" 'BEGIN { printf "%.1f", (b - a) / 1e6 }')
		say "  after recovery every payment was final in $after s"
		summary "outage, $short" "$req requests in the $win s outage; all final $after s after recovery ($(meets "$after" '<=' 120) vs <= 120 s)"
	else
		say "  after recovery $left payments were still pending after 300 s"
		summary "outage, $short" "$req requests in the $win s outage; $left still pending 300 s after recovery (MISSED vs <= 120 s)"
	fi
}

phase_outage() {
	local err breaker=1
	OUTAGE_N=${OUTAGE_N:-100000}
	OUTAGE_S=${OUTAGE_S:-60}
	say "phase outage: $OUTAGE_N payments due over $OUTAGE_S s while the channel answers 503 for $OUTAGE_S s, then PAID..."
	nginx_start down down
	local down_url=$NGINX_URL
	if ! "${PSQL[@]}" -Atc "BEGIN; SELECT paysync.create_channel('probe_breaker', 'http_json', '$down_url',
			'{\"status_map\": $STATUS_MAP, \"pause_after_errors\": 20}'); ROLLBACK;" >/dev/null 2>&1; then
		breaker=0
	fi
	sql "SELECT paysync.create_channel('down_breaker', 'http_json', '$down_url', '{\"status_map\": $STATUS_MAP}')" >/dev/null ||
		fail "cannot create channel down_breaker"
	if [ "$breaker" = 1 ]; then
		outage_run down_breaker ob- "with the breaker (pause_after_errors 20, the default)" "breaker"
	else
		say " the pause_after_errors option is refused: no breaker in this build; the default run shows paysync without it"
		outage_run down_breaker ob- "default options (no breaker in this build)" "no breaker in build"
	fi
	if ! err=$(sql "SELECT paysync.create_channel('down_nobreaker', 'http_json', '$down_url',
			'{\"status_map\": $STATUS_MAP, \"pause_after_errors\": 0}')" 2>&1 >/dev/null); then
		say " pause_after_errors 0: SKIPPED: the option is refused: $(head -n 1 <<<"$err")"
		summary "outage, pause_after_errors 0" "skipped: pause_after_errors is not in this build"
		return 0
	fi
	outage_run down_nobreaker on- "pause_after_errors 0 (no breaker)" "pause_after_errors 0"
}

# ---- phase: channels ----

phase_channels() {
	local n=${CHANNELS_N:-10000} pay=${CHANNELS_PAYMENTS:-20000} alone one spread t0 t1
	ensure_fast_channel
	say "phase channels: $pay payments on one channel alone, then with $n channels defined: all on one, then spread over all..."
	sql "SELECT paysync.create_channel('ch1', 'http_json', '$FAST_URL', '{\"status_map\": $STATUS_MAP}')" >/dev/null ||
		fail "cannot create channel ch1"
	say " one channel alone (the others of the run defined, $(sql "SELECT count(*) FROM paysync.channels") in all):"
	measure_batch ca- "$pay" "'ch1'" "'{1ms}'" 120
	alone=$MB_RATE
	t0=$(now_us)
	sql "INSERT INTO paysync.channels (name, driver, base_url, options)
		SELECT 'ch' || g, 'http_json', '$FAST_URL', '{\"status_map\": $STATUS_MAP}'
		FROM generate_series(2, $n) g" >/dev/null || fail "cannot insert $n channels"
	t1=$(now_us)
	say " $((n - 1)) more channels inserted in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e6 }') s ($(sql "SELECT count(*) FROM paysync.channels") in all)"
	say " all $pay on one of them:"
	measure_batch c1- "$pay" "'ch1'" "'{1ms}'" 120
	one=$MB_RATE
	say " spread over all $n, $((pay / n)) per channel:"
	measure_batch cs- "$pay" "'ch' || ((g - 1) % $n + 1)" "'{1ms}'" 120
	spread=$MB_RATE
	summary "channels, alone" "$alone checks/s"
	summary "channels, $n, all on one" "$one checks/s = $(awk -v a="$one" -v b="$alone" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }') of alone ($(meets "$(awk -v a="$one" -v b="$alone" 'BEGIN { if (b > 0) printf "%.3f", a / b }')" '>=' 0.9) vs >= 90%)"
	summary "channels, $n, spread" "$spread checks/s = $(awk -v a="$spread" -v b="$alone" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }') of alone ($(meets "$(awk -v a="$spread" -v b="$alone" 'BEGIN { if (b > 0) printf "%.3f", a / b }')" '>=' 0.9) vs >= 90%)"
}

# ---- phase: bigtable ----

phase_bigtable() {
	local n=${BIG_N:-10000000} batch=100000 from to t0 t1 tv base after sig plan
	ZERO_N=${ZERO_N:-20000}
	ensure_fast_channel
	say "phase bigtable: zero-latency ($ZERO_N payments, workers 1) before and after loading $n payments not yet due on the same channel..."
	wait_workers 1
	say " before the load ($(sql "SELECT count(*) FROM paysync.payments") payments in the table):"
	zero_run zb0- "bigtable baseline"
	base=$MB_RATE
	t0=$(now_us)
	for ((from = 1; from <= n; from += batch)); do
		to=$((from + batch - 1))
		[ "$to" -gt "$n" ] && to=$n
		sql "SELECT count(*) FROM generate_series($from, $to) g,
			LATERAL paysync.track('big-' || g, 'fast', schedule => '{1 day}')" >/dev/null ||
			fail "loading the big table failed at $from"
		if [ $((to % 1000000)) = 0 ]; then
			say "  $to tracked, $(awk -v a="$t0" -v b="$(now_us)" 'BEGIN { printf "%.0f", (b - a) / 1e6 }') s"
		fi
	done
	t1=$(now_us)
	say "  loaded $n with track() in batches of $batch in $(awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.0f s (%.0f track/s)", (b - a) / 1e6, n / ((b - a) / 1e6) }')"
	t0=$(now_us)
	sql "VACUUM (ANALYZE) paysync.payments" >/dev/null
	tv=$(awk -v a="$t0" -v b="$(now_us)" 'BEGIN { printf "%.0f", (b - a) / 1e6 }')
	say "  VACUUM (ANALYZE) paysync.payments took $tv s"
	say "  sizes: $(sql "SELECT format('table %s, its indexes %s (%s), total with TOAST %s',
		pg_size_pretty(pg_relation_size('paysync.payments')),
		pg_size_pretty(pg_indexes_size('paysync.payments')),
		(SELECT string_agg(indexrelid::regclass || ' ' || pg_size_pretty(pg_relation_size(indexrelid)), ', ')
		 FROM pg_index WHERE indrelid = 'paysync.payments'::regclass),
		pg_size_pretty(pg_total_relation_size('paysync.payments')))")"
	say " after the load:"
	zero_run zb1- "bigtable loaded"
	after=$MB_RATE
	# the claim's plan: auto_explain of the statement inside _claim()
	sig=$(sql "SELECT pg_get_function_identity_arguments('paysync._claim'::regproc)" 2>/dev/null) || sig=
	if [ "$sig" = "max_rows integer, default_claim_ms integer, channel_names text[], channel_claim_ms integer[], channel_free_slots integer[]" ]; then
		plan=$("${PSQL[@]}" 2>&1 <<'EOF'
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_level = notice;
SET client_min_messages = notice;
BEGIN;
SELECT count(*) FROM paysync._claim(200, 15000, '{}', '{}', '{}');
ROLLBACK;
EOF
		)
		say "  plan of the claim (auto_explain, the WITH listed statement of paysync._claim):"
		awk '/NOTICE/ { on = 0 } /Query Text: WITH listed/ { on = 1 }
			on && /\(cost=|Index Cond|Filter:|CTE [a-z]/ { print "    " $0 }' <<<"$plan"
		if grep -q 'Index Scan using payments_next_check_idx' <<<"$plan"; then
			summary "bigtable, claim plan" "index scan on payments_next_check_idx: yes"
		else
			summary "bigtable, claim plan" "NO index scan on payments (see the plan above)"
		fi
	else
		say "  the claim is paysync._claim($sig) in this build: its EXPLAIN needs arguments this script does not know; skipped"
		summary "bigtable, claim plan" "skipped: _claim has a new signature"
	fi
	summary "bigtable, $n not due" "$after checks/s = $(awk -v a="$after" -v b="$base" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "n/a" }') of $base empty ($(meets "$(awk -v a="$after" -v b="$base" 'BEGIN { if (b > 0) printf "%.3f", a / b }')" '>=' 0.9) vs >= 90%)"
}

# ---- phase: refunds ----

# Payments alone, then as many refunds due at once beside as many payments,
# on the one 'fast' channel (nginx, fixed PAID answer): the refunds go
# through the same claim, checks and recording.  Target: checks/s of the
# mixed batch within 10% of payments alone; worker CPU per check quoted.
phase_refunds() {
	local n=${REFUNDS_N:-20000} r1 cpu1 pids c0 c1 t0 xid left deadline row track_commit last_commit events rate cpu ticks req distinct ratio
	ensure_fast_channel
	wait_workers 1
	say "phase refunds: $n payments alone, then $n refunds due at once beside $n payments, on 'fast' ($FAST_URL)..."
	say " payments alone:"
	measure_batch rfp- "$n" "'fast'" "'{1ms}'" 300
	r1=$MB_RATE cpu1=$MB_CPU_US
	# the refunds' payments, not due for an hour: only the refunds are
	sql "SELECT count(paysync.track('rfo-' || g, 'fast', schedule => '{1h}')) FROM generate_series(1, $n) g" >/dev/null ||
		fail "tracking the refunds' payments failed"
	say " refunds beside payments:"
	mapfile -t pids < <(worker_pids)
	c0=$(cpu_ticks "${pids[@]}")
	t0=$(now_us)
	xid=$("${PSQL[@]}" -At <<EOF | tail -n 1
BEGIN;
SELECT count(*) FROM generate_series(1, $n) g,
	LATERAL paysync.track('rfm-' || g, 'fast', schedule => '{1ms}');
SELECT count(*) FROM generate_series(1, $n) g,
	LATERAL paysync.track_refund('rfr-' || g, 'rfo-' || g, schedule => '{1ms}');
SELECT pg_current_xact_id();
COMMIT;
EOF
	) || fail "tracking 'rfm-*' and 'rfr-*' failed"
	deadline=$(($(date +%s) + 300))
	while :; do
		left=$(sql "SELECT (SELECT count(*) FROM paysync.payments WHERE payment_id LIKE 'rfm-%' AND status = 'pending')
			+ (SELECT count(*) FROM paysync.refunds WHERE refund_id LIKE 'rfr-%' AND status = 'pending')")
		[ "$left" = 0 ] && break
		[ "$(date +%s)" -ge "$deadline" ] && break
		sleep 0.2
	done
	c1=$(cpu_ticks "${pids[@]}")
	row=$(sql "SELECT count(*),
			(extract(epoch FROM max(pg_xact_commit_timestamp(e.xmin))) * 1e6)::bigint,
			(extract(epoch FROM pg_xact_commit_timestamp('$xid'::text::xid)) * 1e6)::bigint
		FROM paysync.events e
		WHERE (e.refund_id IS NULL AND e.payment_id LIKE 'rfm-%') OR e.refund_id LIKE 'rfr-%'")
	IFS='|' read -r events last_commit track_commit <<<"$row"
	[ "$left" = 0 ] || { say "  NOT DONE: $left still pending after 300 s"; last_commit=$(now_us); }
	rate=$(awk -v a="$track_commit" -v b="$last_commit" -v n="$events" \
		'BEGIN { if (b > a) printf "%.0f", n / ((b - a) / 1e6); else print "n/a" }')
	ticks=$(getconf CLK_TCK)
	if [ "$c0" = gone ] || [ "$c1" = gone ]; then
		phase_problem "a paysync worker exited during the refund batch"
		cpu=n/a
	else
		cpu=$(awk -v a="$c0" -v b="$c1" -v t="$ticks" -v n="$events" \
			'BEGIN { if (n > 0) printf "%.1f", (b - a) / t / n * 1e6; else print "n/a" }')
	fi
	say "  $events events ($n payments, $n refunds): $rate checks/s end to end; worker CPU $cpu us/check"
	read -r req distinct < <(nginx_requests fast rfr-)
	if [ "$req" != "$n" ] || [ "$distinct" != "$n" ]; then
		phase_problem "refunds: nginx saw $req requests for $distinct of the $n refunds (expected one each)"
	fi
	if [ "$events" != "$((2 * n))" ]; then
		phase_problem "refunds: $events events for $n payments and $n refunds (expected $((2 * n)))"
	fi
	ratio=$(awk -v a="$rate" -v b="$r1" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
	summary "refunds beside payments" "$rate checks/s vs $r1 payments alone: ratio $ratio ($(meets "$ratio" '>=' 0.9) vs >= 0.90), $cpu us/check vs $cpu1"
}
