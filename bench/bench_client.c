/*
 * bench_client.c: the measuring side of bench/run.
 *
 * Runs the benchmark phases against a running cluster that has the paysync
 * extension, a channel "mock" (polled by the worker) and a disabled channel
 * "sweep", both pointing at the mock channel:
 *
 *   0. warm-up: a few payments, to be sure the worker is up and polling;
 *   1. throughput: N payments tracked in one transaction, all due ~1 s later;
 *   2. schedule lag at a steady rate (small transactions every 50 ms);
 *   3. NOTIFY latency, measured by a listener thread during phase 2;
 *   4. baseline: a one-at-a-time "cron sweep" on the disabled channel.
 *
 * Times are wall-clock microseconds (CLOCK_REALTIME) everywhere, so they can be
 * compared with the mock's log (gettimeofday-based) and with PostgreSQL's
 * timestamps (commit timestamps, next_check_at): all on the same machine.
 *
 * Hard failures (a query error, a timeout) exit 1. Results that show the
 * extension misbehaving (lost or duplicated notifications, repeated requests,
 * a worker restart, ...) are printed as PROBLEM lines after which the report
 * is still printed, and the exit status is 3.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <libpq-fe.h>

/* ---------- options ---------- */

static const char *opt_conninfo = "dbname=postgres user=postgres";
static const char *opt_mock_url;		/* http://127.0.0.1:PORT */
static const char *opt_mock_log;		/* the mock's --log file */
static int	opt_n = 20000;				/* phase 1 payments */
static int	opt_rate = 500;				/* phase 2 payments per second */
static int	opt_seconds = 10;			/* phase 2 duration */
static int	opt_tick_ms = 50;			/* phase 2 transaction interval */
static int	opt_sweep_n = 200;			/* phase 4 payments */
static int	opt_latency_ms = 50;		/* the mock's latency, for the report */

static int	problems;

/* ---------- small utilities ---------- */

static void
fatal(const char *fmt,...)
{
	va_list		ap;

	fflush(stdout);
	fprintf(stderr, "bench_client: FATAL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

/* A result that shows misbehaviour: reported, counted, the run goes on. */
static void
problem(const char *fmt,...)
{
	va_list		ap;

	problems++;
	printf("PROBLEM: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void
say(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
}

static void *
xcalloc(size_t n, size_t size)
{
	void	   *p = calloc(n ? n : 1, size);

	if (p == NULL)
		fatal("out of memory");
	return p;
}

/* Wall-clock time in microseconds since the epoch. */
static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
sleep_until_us(int64_t t)
{
	struct timespec ts;

	ts.tv_sec = t / 1000000;
	ts.tv_nsec = (t % 1000000) * 1000;
	while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void
sleep_ms(int ms)
{
	sleep_until_us(now_us() + (int64_t) ms * 1000);
}

static int
cmp_double(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return (x > y) - (x < y);
}

/* Percentiles by nearest rank over an array that gets sorted here. */
struct pct
{
	int			n;
	double		p50,
				p99,
				max;
};

static struct pct
percentiles(double *v, int n)
{
	struct pct	r = {n, 0, 0, 0};

	if (n == 0)
		return r;
	qsort(v, n, sizeof(double), cmp_double);
	r.p50 = v[(50 * (int64_t) n + 99) / 100 - 1];
	r.p99 = v[(99 * (int64_t) n + 99) / 100 - 1];
	r.max = v[n - 1];
	return r;
}

/* Milliseconds, formatted with as many decimals as are meaningful. */
static const char *
fmt_ms(double ms, char *buf, size_t len)
{
	if (ms < -9.95 || ms >= 100)
		snprintf(buf, len, "%.0f", ms);
	else if (ms < 0 || ms >= 10)
		snprintf(buf, len, "%.1f", ms);
	else
		snprintf(buf, len, "%.2f", ms);
	return buf;
}

static const char *
fmt_rate(double r, char *buf, size_t len)
{
	if (r >= 100)
		snprintf(buf, len, "%.0f", r);
	else
		snprintf(buf, len, "%.1f", r);
	return buf;
}

/* ---------- tiny JSON field readers (enough for flat, known payloads) ---------- */

/* Points just past `"key"` and the following colon, or NULL. */
static const char *
json_after_key(const char *json, const char *key)
{
	size_t		klen = strlen(key);
	const char *p = json;

	while ((p = strchr(p, '"')) != NULL)
	{
		if (strncmp(p + 1, key, klen) == 0 && p[1 + klen] == '"')
		{
			const char *q = p + 2 + klen;

			while (isspace((unsigned char) *q))
				q++;
			if (*q == ':')
			{
				q++;
				while (isspace((unsigned char) *q))
					q++;
				return q;
			}
		}
		p++;
	}
	return NULL;
}

static int
json_int(const char *json, const char *key, int64_t *out)
{
	const char *p = json_after_key(json, key);
	char	   *end;

	if (p == NULL)
		return 0;
	*out = strtoll(p, &end, 10);
	return end != p;
}

/*
 * Copies the string value of key into buf; returns 1 on success, 0 when the
 * key is missing, and 2 when the value is JSON null (buf gets "").
 */
static int
json_str(const char *json, const char *key, char *buf, size_t len)
{
	const char *p = json_after_key(json, key);
	size_t		i = 0;

	if (p == NULL)
		return 0;
	if (strncmp(p, "null", 4) == 0)
	{
		buf[0] = '\0';
		return 2;
	}
	if (*p != '"')
		return 0;
	for (p++; *p && *p != '"'; p++)
	{
		if (*p == '\\' && p[1])
			p++;
		if (i + 1 < len)
			buf[i++] = *p;
	}
	buf[i] = '\0';
	return *p == '"';
}

/* ---------- libpq helpers ---------- */

static PGconn *
db_connect(void)
{
	PGconn	   *c = PQconnectdb(opt_conninfo);

	if (PQstatus(c) != CONNECTION_OK)
		fatal("cannot connect (%s): %s", opt_conninfo, PQerrorMessage(c));
	return c;
}

static PGresult *
q(PGconn *c, const char *sql, int nparams, const char *const *params)
{
	PGresult   *r = PQexecParams(c, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType s = PQresultStatus(r);

	if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK)
		fatal("query failed: %s  query: %s", PQresultErrorMessage(r), sql);
	return r;
}

static int64_t
getint(PGresult *r, int row, int col)
{
	if (PQgetisnull(r, row, col))
		return 0;
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* First column of the first row as an integer (0 when NULL). */
static int64_t
q1(PGconn *c, const char *sql, int nparams, const char *const *params)
{
	PGresult   *r = q(c, sql, nparams, params);
	int64_t		v;

	if (PQntuples(r) < 1)
		fatal("query returned no row: %s", sql);
	v = getint(r, 0, 0);
	PQclear(r);
	return v;
}

/*
 * Waits until no payment whose id starts with prefix is pending; polls every
 * 200 ms (cheap next to the work measured). Returns the time it saw that.
 */
static int64_t
wait_none_pending(PGconn *c, const char *prefix, int timeout_s)
{
	char		pattern[64];
	const char *p[1] = {pattern};
	int64_t		deadline = now_us() + (int64_t) timeout_s * 1000000;
	int64_t		left = -1;

	snprintf(pattern, sizeof(pattern), "%s%%", prefix);
	for (;;)
	{
		left = q1(c, "SELECT count(*) FROM paysync.payments "
				  "WHERE payment_id LIKE $1 AND status = 'pending'", 1, p);
		if (left == 0)
			return now_us();
		if (now_us() > deadline)
			fatal("%" PRId64 " payments '%s*' still pending after %d s: the worker is not keeping up or not polling",
				  left, prefix, timeout_s);
		sleep_ms(200);
	}
}

/* ---------- the mock ---------- */

struct buf
{
	char	   *data;
	size_t		len,
				cap;
};

static size_t
buf_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct buf *b = userdata;
	size_t		n = size * nmemb;

	if (b->len + n + 1 > b->cap)
	{
		size_t		cap = (b->len + n + 1) * 2;
		char	   *d = realloc(b->data, cap);

		if (d == NULL)
			return 0;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* One request on handle h; the body lands in b (reset first). Returns HTTP code. */
static long
http_request(CURL *h, const char *method, const char *url, struct buf *b)
{
	long		code = 0;
	CURLcode	rc;

	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, url);
	if (strcmp(method, "POST") == 0)
	{
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
	}
	else
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, buf_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	rc = curl_easy_perform(h);
	if (rc != CURLE_OK)
		fatal("%s %s: %s", method, url, curl_easy_strerror(rc));
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	if (b->data == NULL)
		buf_write("", 0, 0, b);
	return code;
}

struct mock_stats
{
	int64_t		requests,
				in_flight,
				max_in_flight;
};

static struct mock_stats
mock_stats(void)
{
	CURL	   *h = curl_easy_init();
	struct buf	b = {0};
	char		url[512];
	struct mock_stats s = {-1, -1, -1};

	snprintf(url, sizeof(url), "%s/_stats", opt_mock_url);
	if (http_request(h, "GET", url, &b) == 200)
	{
		json_int(b.data, "requests", &s.requests);
		json_int(b.data, "in_flight", &s.in_flight);
		json_int(b.data, "max_in_flight", &s.max_in_flight);
	}
	curl_easy_cleanup(h);
	free(b.data);
	return s;
}

static void
mock_reset(void)
{
	CURL	   *h = curl_easy_init();
	struct buf	b = {0};
	char		url[512];
	long		code;

	snprintf(url, sizeof(url), "%s/_reset", opt_mock_url);
	code = http_request(h, "POST", url, &b);
	if (code != 200 && code != 204)
		problem("mock POST /_reset answered HTTP %ld", code);
	curl_easy_cleanup(h);
	free(b.data);
}

/*
 * What the mock log says about the payments "<prefix><i>", i = 1..n:
 * first[i] = arrival of the first request for it (0 if none), count[i] =
 * requests for it.
 */
struct arrivals
{
	int			n;
	int64_t    *first;
	int		   *count;
	int			distinct;		/* ids with at least one request */
	int64_t		total;			/* requests */
	int			repeated;		/* ids with more than one request */
	int64_t		min_first,
				max_first;		/* over ids, of the first arrivals */
	int64_t		max_any;		/* latest arrival of any request */
};

static void
arrivals_free(struct arrivals *a)
{
	free(a->first);
	free(a->count);
}

static struct arrivals
scan_mock_log(const char *prefix, int n)
{
	struct arrivals a = {0};
	FILE	   *f = fopen(opt_mock_log, "r");
	char		line[1024];
	size_t		plen = strlen(prefix);

	a.n = n;
	a.first = xcalloc(n + 1, sizeof(int64_t));
	a.count = xcalloc(n + 1, sizeof(int));
	if (f == NULL)
		fatal("cannot open mock log %s: %s", opt_mock_log, strerror(errno));
	while (fgets(line, sizeof(line), f))
	{
		char	   *p = line,
				   *end;
		int64_t		t;
		long		i;

		/* <unix_time_microseconds> <METHOD> <payment_id> <attempt_number> */
		t = strtoll(p, &end, 10);
		if (end == p || *end != ' ')
			continue;
		p = strchr(end + 1, ' ');	/* skip the method */
		if (p == NULL)
			continue;
		p++;
		if (strncmp(p, prefix, plen) != 0 || !isdigit((unsigned char) p[plen]))
			continue;
		i = strtol(p + plen, &end, 10);
		if ((*end != ' ' && *end != '\n' && *end != '\0') || i < 1 || i > n)
			continue;
		a.total++;
		if (t > a.max_any)
			a.max_any = t;
		if (a.count[i]++ == 0)
		{
			a.distinct++;
			a.first[i] = t;
		}
		else
		{
			if (a.count[i] == 2)
				a.repeated++;
			if (t < a.first[i])
				a.first[i] = t;
		}
	}
	fclose(f);
	for (int i = 1; i <= n; i++)
	{
		if (a.count[i] == 0)
			continue;
		if (a.min_first == 0 || a.first[i] < a.min_first)
			a.min_first = a.first[i];
		if (a.first[i] > a.max_first)
			a.max_first = a.first[i];
	}
	return a;
}

/*
 * The mock writes its log at arrival; give it a moment in case its writes
 * are buffered. Waits until every id has a line (or 5 s).
 */
static struct arrivals
read_arrivals(const char *prefix, int n)
{
	int64_t		deadline = now_us() + 5000000;

	for (;;)
	{
		struct arrivals a = scan_mock_log(prefix, n);

		if (a.distinct == n || now_us() > deadline)
		{
			if (a.distinct != n)
				problem("mock log has requests for only %d of the %d payments '%s*'",
						a.distinct, n, prefix);
			return a;
		}
		arrivals_free(&a);
		sleep_ms(100);
	}
}

/* ---------- the worker process ---------- */

static int
worker_pid(PGconn *c)
{
	PGresult   *r;
	int			pid;
	int64_t		deadline = now_us() + 15000000;

	/* right after start-up or a restart it may take a moment to show */
	for (;;)
	{
		r = q(c, "SELECT pid FROM pg_stat_activity "
			  "WHERE backend_type = 'paysync worker' ORDER BY backend_start", 0, NULL);
		if (PQntuples(r) > 0)
			break;
		PQclear(r);
		if (now_us() > deadline)
			fatal("no backend with backend_type 'paysync worker' in pg_stat_activity (waited 15 s)");
		sleep_ms(200);
	}
	if (PQntuples(r) > 1)
		problem("%d 'paysync worker' backends are running (expected one)", PQntuples(r));
	pid = (int) getint(r, 0, 0);
	PQclear(r);
	return pid;
}

/* utime + stime of pid, in seconds, from /proc/<pid>/stat. */
static double
proc_cpu_s(int pid)
{
	char		path[64],
				text[2048];
	FILE	   *f;
	size_t		len;
	char	   *p;
	unsigned long long utime,
				stime;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (f == NULL)
		fatal("cannot read %s: %s (did the worker exit?)", path, strerror(errno));
	len = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[len] = '\0';
	/* the command name may contain spaces: fields restart after the last ')' */
	p = strrchr(text, ')');
	if (p == NULL)
		fatal("cannot parse %s", path);
	/* after ")": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			   &utime, &stime) != 2)
		fatal("cannot parse %s", path);
	return (double) (utime + stime) / (double) sysconf(_SC_CLK_TCK);
}

/* A "VmXXX:" line of /proc/<pid>/status, in kB. */
static long
proc_status_kb(int pid, const char *field)
{
	char		path[64],
				line[256];
	FILE	   *f;
	long		kb = -1;
	size_t		flen = strlen(field);

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (f == NULL)
		fatal("cannot read %s: %s (did the worker exit?)", path, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, flen) == 0 && line[flen] == ':')
			kb = strtol(line + flen + 1, NULL, 10);
	fclose(f);
	return kb;
}

/* Open file descriptors of pid, and how many of them are sockets. */
static void
proc_fds(int pid, int *fds, int *sockets)
{
	char		path[64],
				target[128];
	DIR		   *d;
	struct dirent *e;

	*fds = *sockets = 0;
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	d = opendir(path);
	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL)
	{
		ssize_t		len;

		if (e->d_name[0] == '.')
			continue;
		(*fds)++;
		len = readlinkat(dirfd(d), e->d_name, target, sizeof(target) - 1);
		if (len > 0 && strncmp(target, "socket:", 7) == 0)
			(*sockets)++;
	}
	closedir(d);
}

/* ---------- the listener (phase 3) ---------- */

struct notif
{
	int64_t		event_id;
	int64_t		recv_us;
	int			keys_ok;		/* every contract key present */
	char		payment_id[64];
	char		channel[32];
	char		status[16];
	char		previous[16];
	char		source[16];
	char		channel_status[32];
};

static struct notif *notifs;
static int	n_notifs;			/* written by the listener thread only */
static int	n_notifs_pub;		/* published copy, read by main */
static int	listener_stop;
static int	n_bad_payload;
static char bad_payload_example[512];
static PGconn *listen_conn;

static void
record_notify(PGnotify *n, int64_t t)
{
	static int	cap;
	static const char *const keys[] = {"event_id", "payment_id", "channel", "status",
	"previous", "channel_status", "source"};
	struct notif *x;

	if (strcmp(n->relname, "paysync") != 0)
		return;
	if (n_notifs == cap)
	{
		cap = cap ? cap * 2 : 8192;
		notifs = realloc(notifs, cap * sizeof(struct notif));
		if (notifs == NULL)
			fatal("out of memory");
	}
	x = &notifs[n_notifs];
	memset(x, 0, sizeof(*x));
	x->recv_us = t;
	x->keys_ok = 1;
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
		if (json_after_key(n->extra, keys[k]) == NULL)
			x->keys_ok = 0;
	if (!json_int(n->extra, "event_id", &x->event_id) ||
		!json_str(n->extra, "payment_id", x->payment_id, sizeof(x->payment_id)))
		x->keys_ok = 0;
	json_str(n->extra, "channel", x->channel, sizeof(x->channel));
	json_str(n->extra, "status", x->status, sizeof(x->status));
	json_str(n->extra, "previous", x->previous, sizeof(x->previous));
	json_str(n->extra, "source", x->source, sizeof(x->source));
	json_str(n->extra, "channel_status", x->channel_status, sizeof(x->channel_status));
	if (!x->keys_ok && n_bad_payload++ == 0)
		snprintf(bad_payload_example, sizeof(bad_payload_example), "%s", n->extra);
	n_notifs++;
	__atomic_store_n(&n_notifs_pub, n_notifs, __ATOMIC_RELEASE);
}

/* Drains what libpq has; t is the receipt time for all of it. */
static void
drain_notifies(int64_t t)
{
	PGnotify   *n;

	if (!PQconsumeInput(listen_conn))
		fatal("listener: %s", PQerrorMessage(listen_conn));
	while ((n = PQnotifies(listen_conn)) != NULL)
	{
		record_notify(n, t);
		PQfreemem(n);
	}
}

static void *
listener_main(void *arg)
{
	int			sock = PQsocket(listen_conn);

	(void) arg;
	while (!__atomic_load_n(&listener_stop, __ATOMIC_ACQUIRE))
	{
		struct pollfd pfd = {sock, POLLIN, 0};
		int			rc = poll(&pfd, 1, 50);

		if (rc < 0 && errno != EINTR)
			fatal("listener: poll: %s", strerror(errno));
		if (rc > 0)
			drain_notifies(now_us());
	}
	drain_notifies(now_us());
	return NULL;
}

static int
cmp_notif(const void *a, const void *b)
{
	const struct notif *x = a,
			   *y = b;

	if (x->event_id != y->event_id)
		return (x->event_id > y->event_id) - (x->event_id < y->event_id);
	return (x->recv_us > y->recv_us) - (x->recv_us < y->recv_us);
}

/* ---------- results ---------- */

static struct
{
	double		checks_s;
	double		worker_cpu_s;
	long		peak_rss_kb;
	struct pct	lag;
	struct pct	notify;
	double		sweep_checks_s;
	struct pct	sweep_lag;
}			res;

/* ---------- phases ---------- */

/* Tracks "<prefix>1".."<prefix>n" on channel in one statement (one transaction). */
static void
track_batch(PGconn *c, const char *prefix, const char *channel, int from, int to,
			int64_t *due)
{
	char		sfrom[16],
				sto[16];
	const char *p[4] = {prefix, channel, sfrom, sto};
	PGresult   *r;

	snprintf(sfrom, sizeof(sfrom), "%d", from);
	snprintf(sto, sizeof(sto), "%d", to);
	r = q(c,
		  "SELECT g, (extract(epoch FROM t.next_check_at) * 1000000)::bigint, t.status "
		  "FROM generate_series($3::int, $4::int) g, "
		  "LATERAL paysync.track($1 || g, $2, schedule => '{1s}'::interval[]) t",
		  4, p);
	if (PQntuples(r) != to - from + 1)
		fatal("track returned %d rows for %d payments", PQntuples(r), to - from + 1);
	for (int i = 0; i < PQntuples(r); i++)
	{
		int			g = (int) getint(r, i, 0);

		if (PQgetisnull(r, i, 1))
			fatal("track('%s%d') returned next_check_at NULL", prefix, g);
		if (strcmp(PQgetvalue(r, i, 2), "pending") != 0)
			fatal("track('%s%d') returned status %s", prefix, g, PQgetvalue(r, i, 2));
		if (due)
			due[g] = getint(r, i, 1);
	}
	PQclear(r);
}

static void
phase0_warmup(PGconn *c)
{
	int64_t		t0 = now_us();

	say("warm-up: worker pid %d; 20 payments, waiting for the worker to check them...\n",
		worker_pid(c));
	track_batch(c, "w-", "mock", 1, 20, NULL);
	wait_none_pending(c, "w-", 45);
	say("  worker answered after %.1f s\n", (now_us() - t0) / 1e6);
}

static void
phase1_throughput(PGconn *c)
{
	int			n = opt_n;
	int			pid = worker_pid(c);
	double		cpu0,
				cpu1;
	long		hwm;
	int64_t		t0,
				t1,
				t_done,
				last_commit,
				due_min,
				due_max;
	int64_t    *due = xcalloc(n + 1, sizeof(int64_t));
	struct arrivals a;
	struct mock_stats ms;
	PGresult   *r;
	char		b1[32],
				b2[32],
				b3[32];
	double		span_s;
	int			fds,
				sockets;

	mock_reset();
	cpu0 = proc_cpu_s(pid);

	say("phase 1, throughput: tracking %d payments in one transaction...\n", n);
	t0 = now_us();
	track_batch(c, "t1-", "mock", 1, n, due);
	t1 = now_us();
	due_min = due_max = due[1];
	for (int i = 1; i <= n; i++)
	{
		if (due[i] < due_min)
			due_min = due[i];
		if (due[i] > due_max)
			due_max = due[i];
	}
	say("  tracked in %.2f s (%s track/s); due at %s..%s ms after the transaction started\n",
		(t1 - t0) / 1e6, fmt_rate(n / ((t1 - t0) / 1e6), b1, sizeof(b1)),
		fmt_ms((due_min - t0) / 1e3, b2, sizeof(b2)),
		fmt_ms((due_max - t0) / 1e3, b3, sizeof(b3)));

	t_done = wait_none_pending(c, "t1-", 60 + n / 500);
	cpu1 = proc_cpu_s(pid);
	hwm = proc_status_kb(pid, "VmHWM");
	ms = mock_stats();

	if (worker_pid(c) != pid)
		problem("the worker's pid changed during phase 1 (it restarted)");
	if (ms.max_in_flight > 256)
		problem("phase 1: the mock saw %" PRId64 " requests in flight at once, above paysync.max_inflight (256)",
				ms.max_in_flight);

	a = read_arrivals("t1-", n);
	if (a.repeated > 0 || a.total != a.distinct)
		problem("phase 1: %" PRId64 " requests for %d payments (%d payments asked more than once; every answer was PAID)",
				a.total, a.distinct, a.repeated);

	r = q(c,
		  "SELECT count(*), count(DISTINCT payment_id), "
		  "count(*) FILTER (WHERE status = 'succeeded' AND previous = 'pending' "
		  "AND source = 'poll' AND channel_status = 'PAID'), "
		  "(extract(epoch FROM max(pg_xact_commit_timestamp(xmin))) * 1000000)::bigint "
		  "FROM paysync.events WHERE payment_id LIKE 't1-%'", 0, NULL);
	if (getint(r, 0, 0) != n || getint(r, 0, 1) != n || getint(r, 0, 2) != n)
		problem("phase 1: %" PRId64 " events for %" PRId64 " payments, %" PRId64
				" of them pending->succeeded/poll/PAID (expected %d each)",
				getint(r, 0, 0), getint(r, 0, 1), getint(r, 0, 2), n);
	last_commit = getint(r, 0, 3);
	PQclear(r);
	if (q1(c, "SELECT count(*) FROM paysync.payments WHERE payment_id LIKE 't1-%' "
		   "AND (status <> 'succeeded' OR finalized_at IS NULL OR next_check_at IS NOT NULL)",
		   0, NULL) != 0)
		problem("phase 1: some payments are not succeeded with finalized_at set and next_check_at NULL");

	span_s = (a.max_first - a.min_first) / 1e6;
	res.checks_s = span_s > 0 ? n / span_s : 0;
	res.worker_cpu_s = cpu1 - cpu0;
	res.peak_rss_kb = hwm;

	say("  requests: %" PRId64 " (mock max in flight %" PRId64 "); first arrived %s ms after due, last %s ms after due\n",
		a.total, ms.max_in_flight,
		fmt_ms((a.min_first - due_min) / 1e3, b1, sizeof(b1)),
		fmt_ms((a.max_first - due_max) / 1e3, b2, sizeof(b2)));
	say("  first->last request %.2f s = %s checks/s; last event committed %.2f s after the first request (%s checks/s end to end)\n",
		span_s, fmt_rate(res.checks_s, b1, sizeof(b1)),
		(last_commit - a.min_first) / 1e6,
		fmt_rate(n / ((last_commit - a.min_first) / 1e6), b2, sizeof(b2)));
	say("  worker pid %d: CPU %.2f s (%.1f us/check); peak RSS (VmHWM) %.1f MB, of it now private (RssAnon) %.1f MB\n",
		pid, res.worker_cpu_s, res.worker_cpu_s * 1e6 / n, hwm / 1024.0,
		proc_status_kb(pid, "RssAnon") / 1024.0);
	proc_fds(pid, &fds, &sockets);
	say("  worker holds %d open fds (%d sockets) afterwards; all %d final %.2f s after the track transaction returned\n",
		fds, sockets, n, (t_done - t1) / 1e6);
	arrivals_free(&a);
	free(due);
}

static void
phase23_lag_and_notify(PGconn *c)
{
	int			per_tick = opt_rate * opt_tick_ms / 1000;
	int			ticks = opt_seconds * 1000 / opt_tick_ms;
	int			n = per_tick * ticks;
	int64_t    *due = xcalloc(n + 1, sizeof(int64_t));
	double	   *v;
	int			pid = worker_pid(c);
	double		cpu0,
				cpu1;
	int64_t		start_event,
				expected,
				t0,
				t_end,
				deadline,
				late_ticks = 0;
	pthread_t	th;
	struct arrivals a;
	PGresult   *r;
	char		b1[32],
				b2[32],
				b3[32],
				b4[32];
	int			nv = 0,
				missing = 0,
				dups = 0,
				unknown = 0,
				wrong = 0;
	int			nev;
	char		estr[32];
	const char *ep[1] = {estr};

	if (per_tick < 1 || ticks < 1)
		fatal("bad phase 2 rate/duration");

	/* the listener is connected and LISTENing before the first track */
	listen_conn = db_connect();
	PQclear(q(listen_conn, "LISTEN paysync", 0, NULL));
	start_event = q1(c, "SELECT coalesce(max(event_id), 0) FROM paysync.events", 0, NULL);
	if (pthread_create(&th, NULL, listener_main, NULL) != 0)
		fatal("pthread_create failed");

	say("phase 2+3, schedule lag and NOTIFY latency: %d payments/s for %d s (%d every %d ms), listener on...\n",
		per_tick * 1000 / opt_tick_ms, opt_seconds, per_tick, opt_tick_ms);
	cpu0 = proc_cpu_s(pid);
	t0 = now_us() + 20000;
	for (int k = 0; k < ticks; k++)
	{
		int64_t		at = t0 + (int64_t) k * opt_tick_ms * 1000;

		if (now_us() > at + opt_tick_ms * 1000)
			late_ticks++;
		sleep_until_us(at);
		track_batch(c, "l-", "mock", k * per_tick + 1, (k + 1) * per_tick, due);
	}
	t_end = now_us();
	say("  tracked %d in %.2f s (%.0f/s)%s\n", n, (t_end - t0) / 1e6, n / ((t_end - t0) / 1e6),
		late_ticks ? " (client fell behind its schedule)" : "");
	wait_none_pending(c, "l-", 30);
	cpu1 = proc_cpu_s(pid);

	/* every event since start_event should reach the listener */
	sprintf(estr, "%" PRId64, start_event);
	expected = q1(c, "SELECT count(*) FROM paysync.events WHERE event_id > $1", 1, ep);
	deadline = now_us() + 5000000;
	while (__atomic_load_n(&n_notifs_pub, __ATOMIC_ACQUIRE) < expected && now_us() < deadline)
		sleep_ms(20);
	sleep_ms(200);				/* catch duplicates that trail */
	__atomic_store_n(&listener_stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	PQfinish(listen_conn);

	/* lag: first request arrival at the mock minus next_check_at from track() */
	a = read_arrivals("l-", n);
	v = xcalloc(n, sizeof(double));
	for (int i = 1; i <= n; i++)
		if (a.count[i] > 0)
			v[nv++] = (a.first[i] - due[i]) / 1e3;
	res.lag = percentiles(v, nv);
	if (a.repeated > 0 || a.total != a.distinct)
		problem("phase 2: %" PRId64 " requests for %d payments (%d asked more than once)",
				a.total, a.distinct, a.repeated);
	if (v[0] < -1.0)
		problem("phase 2: a payment was checked %.1f ms before it was due", -v[0]);
	say("  schedule lag (request arrival - next_check_at) over %d payments: p50 %s, p99 %s, max %s ms; min %s ms\n",
		nv, fmt_ms(res.lag.p50, b1, sizeof(b1)), fmt_ms(res.lag.p99, b2, sizeof(b2)),
		fmt_ms(res.lag.max, b3, sizeof(b3)), fmt_ms(nv ? v[0] : 0, b4, sizeof(b4)));
	say("  worker CPU during the phase: %.2f s over %.1f s (%.0f%% of a core)\n",
		cpu1 - cpu0, (now_us() - t0) / 1e6, 100.0 * (cpu1 - cpu0) / ((now_us() - t0) / 1e6));
	free(v);

	/* notify latency: receipt minus the commit timestamp of the event row */
	r = q(c,
		  "SELECT event_id, payment_id, channel, status, previous, source, "
		  "(extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint "
		  "FROM paysync.events WHERE event_id > $1 ORDER BY event_id", 1, ep);
	nev = PQntuples(r);
	qsort(notifs, n_notifs, sizeof(struct notif), cmp_notif);
	v = xcalloc(nev + 1, sizeof(double));
	nv = 0;
	{
		int			j = 0;

		for (int i = 0; i < nev; i++)
		{
			int64_t		id = getint(r, i, 0);
			int64_t		commit_us = getint(r, i, 6);
			int			seen = 0;

			while (j < n_notifs && notifs[j].event_id < id)
				unknown++, j++;
			while (j < n_notifs && notifs[j].event_id == id)
			{
				struct notif *x = &notifs[j];

				if (seen++ == 0)
				{
					v[nv++] = (x->recv_us - commit_us) / 1e3;
					if (strcmp(x->payment_id, PQgetvalue(r, i, 1)) != 0 ||
						strcmp(x->channel, PQgetvalue(r, i, 2)) != 0 ||
						strcmp(x->status, PQgetvalue(r, i, 3)) != 0 ||
						strcmp(x->previous, PQgetvalue(r, i, 4)) != 0 ||
						strcmp(x->source, PQgetvalue(r, i, 5)) != 0)
					{
						if (wrong++ == 0)
							problem("notification for event %" PRId64 " says %s/%s/%s->%s/%s, the events row %s/%s/%s->%s/%s",
									id, x->payment_id, x->channel, x->previous, x->status, x->source,
									PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 4),
									PQgetvalue(r, i, 3), PQgetvalue(r, i, 5));
					}
				}
				else
					dups++;
				j++;
			}
			if (!seen)
				missing++;
		}
		unknown += n_notifs - j;
	}
	if (nev != n)
		problem("phase 2: %d events for %d payments (expected one each)", nev, n);
	if (missing || dups || unknown)
		problem("notifications: %d events never notified, %d notified more than once, %d notifications for no event row",
				missing, dups, unknown);
	if (n_bad_payload)
		problem("%d notification payloads lack contract keys, e.g. %s", n_bad_payload, bad_payload_example);
	if (wrong > 1)
		problem("%d notifications disagree with their events row", wrong);
	res.notify = percentiles(v, nv);
	say("  NOTIFY latency (receipt - event commit) over %d events: p50 %s, p99 %s, max %s ms; %d received, %s\n",
		nv, fmt_ms(res.notify.p50, b1, sizeof(b1)), fmt_ms(res.notify.p99, b2, sizeof(b2)),
		fmt_ms(res.notify.max, b3, sizeof(b3)), n_notifs,
		(!missing && !dups && !unknown && nev == n) ? "each event exactly once" : "NOT each event exactly once");
	PQclear(r);
	free(v);
	arrivals_free(&a);
	free(due);
	if (worker_pid(c) != pid)
		problem("the worker's pid changed during phase 2 (it restarted)");
}

static void
phase4_sweep(PGconn *c)
{
	int			n = opt_sweep_n;
	int64_t    *due = xcalloc(n + 1, sizeof(int64_t));
	double	   *v = xcalloc(n + 1, sizeof(double));
	int64_t		due_max = 0,
				t0,
				t1;
	int			done = 0;
	CURL	   *h = curl_easy_init();
	struct buf	b = {0};
	struct arrivals a;
	char		url[512],
				st[64],
				b1[32],
				b2[32],
				b3[32],
				b4[32];

	say("phase 4, cron-sweep baseline: %d payments on the disabled channel 'sweep', one at a time...\n", n);
	track_batch(c, "sw-", "sweep", 1, n, due);
	for (int i = 1; i <= n; i++)
		if (due[i] > due_max)
			due_max = due[i];
	sleep_until_us(due_max + 1000);

	t0 = now_us();
	for (;;)
	{
		PGresult   *r = q(c,
						  "SELECT payment_id, (extract(epoch FROM next_check_at) * 1000000)::bigint "
						  "FROM paysync.payments WHERE channel = 'sweep' AND status = 'pending' "
						  "AND next_check_at <= now() ORDER BY next_check_at, payment_id LIMIT 1",
						  0, NULL);
		char		id[140];
		int64_t		due_at,
					start;
		long		code;
		const char *p[1] = {id};

		if (PQntuples(r) == 0)
		{
			PQclear(r);
			break;
		}
		snprintf(id, sizeof(id), "%s", PQgetvalue(r, 0, 0));
		due_at = getint(r, 0, 1);
		PQclear(r);

		start = now_us();
		snprintf(url, sizeof(url), "%s/%s", opt_mock_url, id);
		code = http_request(h, "GET", url, &b);
		if (code != 200 || json_str(b.data, "status", st, sizeof(st)) != 1)
			fatal("sweep: GET %s answered HTTP %ld: %s", url, code, b.data);
		if (strcmp(st, "PAID") != 0)
			fatal("sweep: GET %s answered status %s, expected PAID", url, st);
		if (q1(c, "SELECT paysync.report($1, 'succeeded', 'PAID')::int", 1, p) != 1)
			problem("sweep: report('%s', succeeded) returned false for a pending payment", id);
		if (done >= n)
			fatal("sweep: more than %d due payments on channel sweep", n);
		v[done++] = (start - due_at) / 1e3;
	}
	t1 = now_us();
	if (done != n)
		problem("sweep: checked %d of %d payments", done, n);
	res.sweep_checks_s = done / ((t1 - t0) / 1e6);
	res.sweep_lag = percentiles(v, done);

	a = read_arrivals("sw-", n);
	if (a.total != done)
		problem("the mock saw %" PRId64 " requests for the disabled channel's %d payments (the sweep sent %d): the worker polled a disabled channel?",
				a.total, n, done);
	if (q1(c, "SELECT count(*) FROM paysync.events WHERE payment_id LIKE 'sw-%' "
		   "AND source = 'report' AND status = 'succeeded' AND previous = 'pending'", 0, NULL) != n)
		problem("sweep: not every report() produced one pending->succeeded event with source 'report'");

	say("  %d checks in %.2f s = %s checks/s; lag (request start - due) p50 %s, p99 %s, max %s ms\n",
		done, (t1 - t0) / 1e6, fmt_rate(res.sweep_checks_s, b4, sizeof(b4)),
		fmt_ms(res.sweep_lag.p50, b1, sizeof(b1)), fmt_ms(res.sweep_lag.p99, b2, sizeof(b2)),
		fmt_ms(res.sweep_lag.max, b3, sizeof(b3)));
	arrivals_free(&a);
	curl_easy_cleanup(h);
	free(b.data);
	free(due);
	free(v);
}

/* ---------- report ---------- */

static void
cpu_model(char *buf, size_t len)
{
	FILE	   *f = fopen("/proc/cpuinfo", "r");
	char		line[512];

	snprintf(buf, len, "unknown CPU");
	if (f == NULL)
		return;
	while (fgets(line, sizeof(line), f))
	{
		if (strncmp(line, "model name", 10) == 0)
		{
			char	   *p = strchr(line, ':');

			if (p)
			{
				p++;
				while (*p == ' ')
					p++;
				p[strcspn(p, "\n")] = '\0';
				snprintf(buf, len, "%s", p);
			}
			break;
		}
	}
	fclose(f);
}

static void
print_report(void)
{
	char		model[256],
				a[64],
				b[64],
				c[64],
				d[64],
				cell[64];

	cpu_model(model, sizeof(model));
	printf("\npaysync bench: %d payments, mock latency %d ms, machine: %ld cores, %s\n",
		   opt_n, opt_latency_ms, sysconf(_SC_NPROCESSORS_ONLN), model);
	printf("%-24s%-22s%-24s%s\n", "", "paysync worker", "cron-sweep baseline", "ratio");
	printf("%-24s%-22s%-24s%.0fx\n", "checks/s",
		   fmt_rate(res.checks_s, a, sizeof(a)),
		   fmt_rate(res.sweep_checks_s, b, sizeof(b)),
		   res.sweep_checks_s > 0 ? res.checks_s / res.sweep_checks_s : 0);
	snprintf(cell, sizeof(cell), "%s / %s ms",
			 fmt_ms(res.lag.p50, a, sizeof(a)), fmt_ms(res.lag.p99, b, sizeof(b)));
	printf("%-24s%-22s", "schedule lag p50/p99", cell);
	snprintf(cell, sizeof(cell), "%s / %s ms",
			 fmt_ms(res.sweep_lag.p50, c, sizeof(c)), fmt_ms(res.sweep_lag.p99, d, sizeof(d)));
	printf("%s\n", cell);
	snprintf(cell, sizeof(cell), "%s / %s ms",
			 fmt_ms(res.notify.p50, a, sizeof(a)), fmt_ms(res.notify.p99, b, sizeof(b)));
	printf("%-24s%-22s%s\n", "notify latency p50/p99", cell, "(n/a)");
	snprintf(cell, sizeof(cell), "%.2f s, %.1f MB", res.worker_cpu_s, res.peak_rss_kb / 1024.0);
	printf("%-24s%-22s%s\n", "worker CPU s, peak RSS", cell, "(n/a)");
	if (problems)
		printf("\n%d PROBLEM(S) found, see the PROBLEM lines above\n", problems);
	fflush(stdout);
}

/* ---------- main ---------- */

static void
usage(void)
{
	fprintf(stderr,
			"usage: bench_client --mock-url URL --mock-log FILE [--conninfo STR] [--n N]\n"
			"       [--rate PER_S] [--seconds S] [--sweep-n N] [--latency-ms MS]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	PGconn	   *c;

	for (int i = 1; i < argc; i++)
	{
		const char *o = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (val == NULL)
			usage();
		i++;
		if (strcmp(o, "--conninfo") == 0)
			opt_conninfo = val;
		else if (strcmp(o, "--mock-url") == 0)
			opt_mock_url = val;
		else if (strcmp(o, "--mock-log") == 0)
			opt_mock_log = val;
		else if (strcmp(o, "--n") == 0)
			opt_n = atoi(val);
		else if (strcmp(o, "--rate") == 0)
			opt_rate = atoi(val);
		else if (strcmp(o, "--seconds") == 0)
			opt_seconds = atoi(val);
		else if (strcmp(o, "--sweep-n") == 0)
			opt_sweep_n = atoi(val);
		else if (strcmp(o, "--latency-ms") == 0)
			opt_latency_ms = atoi(val);
		else
			usage();
	}
	if (opt_mock_url == NULL || opt_mock_log == NULL || opt_n < 1 || opt_sweep_n < 1)
		usage();

	curl_global_init(CURL_GLOBAL_ALL);
	c = db_connect();
	PQclear(q(c, "SET application_name = 'paysync bench'", 0, NULL));

	phase0_warmup(c);
	phase1_throughput(c);
	phase23_lag_and_notify(c);
	phase4_sweep(c);
	print_report();

	PQfinish(c);
	curl_global_cleanup();
	return problems ? 3 : 0;
}
