/*-------------------------------------------------------------------------
 *
 * mock_channel.c
 *	  Scripted mock payment channel used by the paysync tests and benchmark.
 *
 * This is a small standalone HTTP server built on libmicrohttpd.  It plays
 * the role of a payment provider's "query payment status" API.  The answer
 * for a payment is scripted inside the payment id itself:
 *
 *		<anything>~<STEPS>
 *
 * where STEPS is a comma separated list of actions (see README.md).  The
 * Nth request for a given id performs the Nth action of the expanded list;
 * once the list is exhausted its last action repeats forever.
 *
 * Delayed answers (--latency-ms, the T action) do not hold a thread: the
 * connection is suspended, queued in a deadline heap, and a timer thread
 * resumes it when it is due.  A small pool of event-loop threads (epoll)
 * therefore serves thousands of concurrent keep-alive connections.
 *
 * It also counts, per payment id, the requests in flight (arrived, not yet
 * completed) and keeps the highest such count: a client that never sends
 * two requests for one payment at a time keeps it at 1.  With --resume it
 * continues the attempt counts of an earlier run from the --log file, so a
 * test can stop the channel and start it again as if it had only been
 * unreachable meanwhile.
 *
 * Control endpoints /_stats and /_reset are neither logged, counted nor
 * delayed.
 *
 * IDENTIFICATION
 *	  t/mock/mock_channel.c
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "mock_common.h"

/* Largest request body we keep; the rest is dropped. */
#define MAX_BODY			(1024 * 1024)

/* Largest numeric argument accepted in a script. */
#define MAX_SCRIPT_NUM		1000000000L

/* Largest body the B action may ask for. */
#define MAX_PAD_BYTES		(64L * 1024 * 1024)

/* How many due timers the timer thread resumes per lock acquisition. */
#define TIMER_BATCH			256

/* The script actions, in the order /_stats lists their counts. */
#define ACTION_LETTERS		"PSFCXUMJNERTBDA"

/* A header every scripted request must carry (--require-header). */
typedef struct RequiredHeader
{
	char	   *name;
	char	   *value;
} RequiredHeader;

/* One parsed script action. */
typedef struct Action
{
	char		letter;			/* one of ACTION_LETTERS */
	long		arg;			/* numeric argument, 0 if none */
} Action;

/* Per-request state, hung off MHD's con_cls pointer. */
typedef struct ReqState
{
	bool		control;		/* request for a /_ control endpoint */
	bool		counted;		/* included in in_flight */
	bool		pending;		/* suspended, waiting to send response */
	bool		owned;			/* response must be destroyed by us */
	char	   *id;				/* payment id counted in flight, or NULL */
	struct timespec arrival;	/* wall clock time of arrival */
	MockBody	body;			/* the first MAX_BODY bytes */
	struct MHD_Response *response;	/* prepared response while pending */
	unsigned int status;		/* its HTTP status */
} ReqState;

/* A suspended connection waiting for its deadline. */
typedef struct TimerEntry
{
	uint64_t	due_ns;			/* CLOCK_MONOTONIC deadline */
	struct MHD_Connection *conn;
	ReqState   *rs;				/* its request state */
} TimerEntry;

/* Configuration from the command line. */
static unsigned int opt_threads = 2;
static const char *opt_pidfile = NULL;
static bool opt_resume = false;
static RequiredHeader *required_headers = NULL;
static int n_required_headers = 0;

/* Counters reported by /_stats. */
static atomic_uint_fast64_t stat_requests;
static atomic_int_fast64_t stat_in_flight;
static atomic_int_fast64_t stat_max_in_flight;
static atomic_int_fast64_t stat_max_in_flight_per_id;
static atomic_uint_fast64_t stat_overlapping;	/* arrived with another of its id in flight */
static atomic_uint_fast64_t stat_abandoned; /* delayed answers whose client left */
static atomic_uint_fast64_t stat_answered[26];	/* per action letter A-Z */

/* The first id that reached stat_max_in_flight_per_id, or NULL. */
static pthread_mutex_t busiest_lock = PTHREAD_MUTEX_INITIALIZER;
static char *busiest_id = NULL;

/* Deadline heap of suspended connections, and the thread that serves it. */
static pthread_mutex_t timer_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t timer_cond;
static TimerEntry *timer_heap = NULL;
static size_t timer_len = 0;
static size_t timer_cap = 0;
static bool timer_stop = false;

/* Responses that never change; created once and shared by all requests. */
static struct MHD_Response *resp_unauthorized;
static struct MHD_Response *resp_bad_body;
static struct MHD_Response *resp_bad_script;
static struct MHD_Response *resp_not_found;
static struct MHD_Response *resp_scripted_error;
static struct MHD_Response *resp_missing_status;
static struct MHD_Response *resp_not_json;
static struct MHD_Response *resp_reset_ok;

static const char body_slow_down[] = "{\"error\":\"slow down\"}";


/*
 * Print the usage message.
 */
static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: mock_channel [OPTIONS]\n"
			"  --port N                 listen on 127.0.0.1:N (0 = any free port, default)\n"
			"  --latency-ms N           delay every scripted answer by N ms (default 0)\n"
			"  --log FILE               append one line per scripted request to FILE\n"
			"  --require-header 'N: V'  answer 401 unless header N has value V (repeatable)\n"
			"  --pidfile FILE           write the process id to FILE\n"
			"  --threads N              event loop threads (default 2)\n"
			"  --resume                 continue the attempt counts from the --log file\n"
			"  --help                   show this message\n");
}

/*
 * Record one --require-header argument of the form "Name: value".
 */
static void
add_required_header(const char *arg)
{
	const char *colon = strchr(arg, ':');
	const char *v;
	RequiredHeader *h;

	if (colon == NULL || colon == arg)
		mock_die("--require-header wants \"Name: value\"", arg);

	required_headers = realloc(required_headers,
							   sizeof(RequiredHeader) * (n_required_headers + 1));
	if (required_headers == NULL)
		mock_die("out of memory", NULL);
	h = &required_headers[n_required_headers++];

	h->name = strndup(arg, colon - arg);
	v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	h->value = strdup(v);
	if (h->name == NULL || h->value == NULL)
		mock_die("out of memory", NULL);
}

/*
 * Build a static response from a constant string with a Content-Type.
 */
static struct MHD_Response *
make_static_response(const char *body, const char *content_type)
{
	struct MHD_Response *r;

	r = mock_response(body, strlen(body), MHD_RESPMEM_PERSISTENT, content_type);
	if (r == NULL)
		mock_die("cannot create response", NULL);
	return r;
}

/*
 * Create all the shared, never-changing responses.
 */
static void
init_static_responses(void)
{
	const char *js = "application/json";

	resp_unauthorized = make_static_response("{\"error\":\"unauthorized\"}", js);
	resp_bad_body = make_static_response("{\"error\":\"bad body\"}", js);
	resp_bad_script = make_static_response("{\"error\":\"bad script\"}", js);
	resp_not_found = make_static_response("{\"error\":\"not found\"}", js);
	resp_scripted_error = make_static_response("{\"error\":\"scripted\"}", js);
	resp_missing_status = make_static_response("{\"data\":{}}", js);
	resp_not_json = make_static_response("this is not json", "text/plain");
	resp_reset_ok = make_static_response("{\"ok\":true}", js);
}

/*
 * Note that one more scripted request is being answered and maintain the
 * high-water mark.
 */
static void
in_flight_enter(void)
{
	int_fast64_t cur = atomic_fetch_add(&stat_in_flight, 1) + 1;
	int_fast64_t max = atomic_load(&stat_max_in_flight);

	while (cur > max &&
		   !atomic_compare_exchange_weak(&stat_max_in_flight, &max, cur))
		;
}

static int	release_abandoned(const char *id);

/*
 * Count the request as one more in flight for its payment id: keep the
 * per-id high-water mark and the id that first reached it, and count (and
 * report on stderr) a request that arrives while another one for the same
 * id is still in flight.
 */
static void
in_flight_enter_id(ReqState *rs, const char *id)
{
	int_fast64_t cur;
	int_fast64_t max;

	rs->id = strdup(id);
	if (rs->id == NULL)
		return;
	cur = mock_id_enter(id);
	if (cur > 1)
		cur -= release_abandoned(id);
	if (cur > 1)
	{
		atomic_fetch_add(&stat_overlapping, 1);
		fprintf(stderr, "mock_channel: %" PRIdFAST64 " requests in flight for id %s\n",
				cur, id);
	}
	max = atomic_load(&stat_max_in_flight_per_id);
	while (cur > max)
	{
		if (atomic_compare_exchange_weak(&stat_max_in_flight_per_id, &max, cur))
		{
			char	   *copy = strdup(id);

			pthread_mutex_lock(&busiest_lock);
			free(busiest_id);
			busiest_id = copy;
			pthread_mutex_unlock(&busiest_lock);
			break;
		}
	}
}

/*
 * Parse one decimal number of a script at *p, advancing *p.  At least one
 * digit is required and the value must not exceed MAX_SCRIPT_NUM.
 */
static bool
parse_script_number(const char **p, long *out)
{
	const char *s = *p;
	long		v = 0;

	if (!isdigit((unsigned char) *s))
		return false;
	while (isdigit((unsigned char) *s))
	{
		v = v * 10 + (*s - '0');
		if (v > MAX_SCRIPT_NUM)
			return false;
		s++;
	}
	*p = s;
	*out = v;
	return true;
}

/*
 * Validate the script STEPS and pick the action for the given attempt
 * number (1-based).  The whole script is always checked, so a script with
 * a syntax error anywhere is rejected on every attempt.  Nothing is
 * allocated: the repeat counts are walked instead of expanded.
 */
static bool
script_action(const char *p, uint64_t attempt, Action *out)
{
	uint64_t	index = attempt > 0 ? attempt - 1 : 0;
	bool		chosen = false;
	Action		cur = {0, 0};

	if (*p == '\0')
		return false;

	for (;;)
	{
		long		repeat = 1;

		cur.letter = *p++;
		cur.arg = 0;
		switch (cur.letter)
		{
			case 'P':
			case 'S':
			case 'F':
			case 'C':
			case 'X':
			case 'U':
			case 'M':
			case 'J':
			case 'N':
				break;
			case 'E':
				if (!parse_script_number(&p, &cur.arg) ||
					cur.arg < 100 || cur.arg > 599)
					return false;
				break;
			case 'R':
			case 'T':
			case 'A':
				if (!parse_script_number(&p, &cur.arg))
					return false;
				break;
			case 'B':
				if (!parse_script_number(&p, &cur.arg) ||
					cur.arg > MAX_PAD_BYTES)
					return false;
				break;
			case 'D':
				if (!parse_script_number(&p, &cur.arg) ||
					cur.arg < 1 || cur.arg > MAX_PAD_BYTES / 2)
					return false;
				break;
			default:
				return false;
		}

		if (*p == '*')
		{
			p++;
			if (!parse_script_number(&p, &repeat) || repeat < 1)
				return false;
		}

		if (!chosen)
		{
			if (index < (uint64_t) repeat)
			{
				*out = cur;
				chosen = true;
			}
			else
				index -= (uint64_t) repeat;
		}

		if (*p == '\0')
			break;
		if (*p != ',')
			return false;
		p++;
	}

	/* past the end of the list: the last action repeats forever */
	if (!chosen)
		*out = cur;
	return true;
}

/*
 * Append the log line for a scripted request with a single write() on the
 * O_APPEND log descriptor, so that concurrent lines never interleave.
 */
static void
log_request(const ReqState *rs, const char *method, const char *id,
			uint64_t attempt)
{
	char		stackbuf[1024];
	char	   *buf = stackbuf;
	size_t		mlen,
				idlen,
				need,
				off;
	int			n;

	if (!mock_log_enabled())
		return;

	mlen = strlen(method);
	idlen = strlen(id);
	need = 64 + mlen + idlen + rs->body.len;
	if (need > sizeof(stackbuf))
	{
		buf = malloc(need);
		if (buf == NULL)
			return;
	}

	n = snprintf(buf, need, "%lld ", mock_timespec_us(&rs->arrival));
	off = (size_t) n;
	off += mock_log_token(buf + off, method, mlen);
	buf[off++] = ' ';
	off += mock_log_token(buf + off, id, idlen);
	n = snprintf(buf + off, need - off, " %" PRIu64, attempt);
	off += (size_t) n;
	if (rs->body.len > 0)
	{
		buf[off++] = ' ';
		off += mock_log_token(buf + off, rs->body.data, rs->body.len);
	}
	buf[off++] = '\n';

	mock_log_write(buf, off);

	if (buf != stackbuf)
		free(buf);
}

/*
 * Does the request carry every --require-header header with the exact
 * value?  MHD compares header names case-insensitively.
 */
static bool
headers_ok(struct MHD_Connection *conn)
{
	int			i;

	for (i = 0; i < n_required_headers; i++)
	{
		const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
													required_headers[i].name);

		if (v == NULL || strcmp(v, required_headers[i].value) != 0)
			return false;
	}
	return true;
}

/*
 * Build a status answer for id with the given status word.  If min_len is
 * non-zero a "pad" member is added so the body is at least min_len bytes;
 * if amount is not negative, "amount" (that many minor units) and
 * "currency" ("CNY") members are added.
 */
static struct MHD_Response *
status_response_amount(const char *id, const char *word, long min_len, long amount)
{
	size_t		wlen = strlen(word);
	size_t		cap;
	size_t		off = 0;
	char	   *buf;

	cap = strlen(id) * 6 + 2 * wlen + 128 + (min_len > 0 ? (size_t) min_len : 0);
	buf = malloc(cap);
	if (buf == NULL)
		return NULL;

#define APPEND_LIT(s) (memcpy(buf + off, s, sizeof(s) - 1), off += sizeof(s) - 1)
	APPEND_LIT("{\"payment_id\":\"");
	off += mock_json_escape(buf + off, id);
	APPEND_LIT("\",\"status\":\"");
	memcpy(buf + off, word, wlen);
	off += wlen;
	APPEND_LIT("\",\"data\":{\"trade_state\":\"");
	memcpy(buf + off, word, wlen);
	off += wlen;
	APPEND_LIT("\"}");
	if (amount >= 0)
		off += (size_t) sprintf(buf + off, ",\"amount\":%ld,\"currency\":\"CNY\"", amount);
	if (min_len > 0)
	{
		size_t		with_empty_pad = off + strlen(",\"pad\":\"\"}");
		size_t		padlen = 0;

		if ((size_t) min_len > with_empty_pad)
			padlen = (size_t) min_len - with_empty_pad;
		APPEND_LIT(",\"pad\":\"");
		memset(buf + off, 'x', padlen);
		off += padlen;
		APPEND_LIT("\"");
	}
	APPEND_LIT("}");
#undef APPEND_LIT

	return mock_response(buf, off, MHD_RESPMEM_MUST_FREE, "application/json");
}

/* A status answer with no amount. */
static struct MHD_Response *
status_response(const char *id, const char *word, long min_len)
{
	return status_response_amount(id, word, min_len, -1);
}

/*
 * A hostile answer: valid JSON nested depth arrays deep before its status,
 * {"deep":[[[...]]],"status":"PAID"}.
 */
static struct MHD_Response *
deep_response(long depth)
{
	static const char head[] = "{\"deep\":";
	static const char tail[] = ",\"status\":\"PAID\"}";
	size_t		len = sizeof(head) - 1 + 2 * (size_t) depth + sizeof(tail) - 1;
	char	   *buf = malloc(len);

	if (buf == NULL)
		return NULL;
	memcpy(buf, head, sizeof(head) - 1);
	memset(buf + sizeof(head) - 1, '[', (size_t) depth);
	memset(buf + sizeof(head) - 1 + depth, ']', (size_t) depth);
	memcpy(buf + sizeof(head) - 1 + 2 * depth, tail, sizeof(tail) - 1);
	return mock_response(buf, len, MHD_RESPMEM_MUST_FREE, "application/json");
}

/*
 * Build a 429 answer carrying a Retry-After header.
 */
static struct MHD_Response *
retry_response(long secs)
{
	struct MHD_Response *r;
	char		val[32];

	r = mock_response(body_slow_down, strlen(body_slow_down),
					  MHD_RESPMEM_PERSISTENT, "application/json");
	if (r == NULL)
		return NULL;
	snprintf(val, sizeof(val), "%ld", secs);
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, val) != MHD_YES)
	{
		MHD_destroy_response(r);
		return NULL;
	}
	return r;
}

/*
 * Swap two heap slots.
 */
static inline void
heap_swap(size_t a, size_t b)
{
	TimerEntry	t = timer_heap[a];

	timer_heap[a] = timer_heap[b];
	timer_heap[b] = t;
}

/*
 * Remove and return the earliest timer.  Caller holds timer_lock and has
 * checked that the heap is not empty.
 */
static struct MHD_Connection *
heap_pop(void)
{
	struct MHD_Connection *conn = timer_heap[0].conn;
	size_t		i = 0;

	timer_heap[0] = timer_heap[--timer_len];
	for (;;)
	{
		size_t		l = 2 * i + 1;
		size_t		r = l + 1;
		size_t		m = i;

		if (l < timer_len && timer_heap[l].due_ns < timer_heap[m].due_ns)
			m = l;
		if (r < timer_len && timer_heap[r].due_ns < timer_heap[m].due_ns)
			m = r;
		if (m == i)
			break;
		heap_swap(i, m);
		i = m;
	}
	return conn;
}

/*
 * Suspend the connection and arrange for it to be resumed after delay_ms.
 * Must be called from the access handler.  Returns false (connection not
 * suspended) if the server is shutting down or memory ran out; the caller
 * then answers at once.
 */
static bool
timer_schedule(struct MHD_Connection *conn, ReqState *rs, long delay_ms)
{
	uint64_t	due = mock_monotonic_ns() + (uint64_t) delay_ms * 1000000ULL;
	size_t		i;

	pthread_mutex_lock(&timer_lock);
	if (timer_stop)
	{
		pthread_mutex_unlock(&timer_lock);
		return false;
	}
	if (timer_len == timer_cap)
	{
		size_t		ncap = timer_cap ? timer_cap * 2 : 1024;
		TimerEntry *nh = realloc(timer_heap, ncap * sizeof(TimerEntry));

		if (nh == NULL)
		{
			pthread_mutex_unlock(&timer_lock);
			return false;
		}
		timer_heap = nh;
		timer_cap = ncap;
	}

	/*
	 * Suspend before the entry becomes visible to the timer thread, so that
	 * a resume can never precede the suspend.
	 */
	MHD_suspend_connection(conn);

	i = timer_len++;
	timer_heap[i].due_ns = due;
	timer_heap[i].conn = conn;
	timer_heap[i].rs = rs;
	while (i > 0 && timer_heap[(i - 1) / 2].due_ns > timer_heap[i].due_ns)
	{
		heap_swap(i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	if (i == 0)
		pthread_cond_signal(&timer_cond);
	pthread_mutex_unlock(&timer_lock);
	return true;
}

/*
 * Has the client of a suspended connection closed it (or reset it)?  The
 * server does not watch a suspended connection, so peek at its socket.
 */
static bool
client_gone(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info;
	char		c;
	ssize_t		n;

	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (info == NULL)
		return false;
	n = recv(info->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == 0 ||
		(n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/*
 * Stop counting as in flight for id the delayed answers to it whose client
 * has gone (gave up waiting and closed the connection): they are answered
 * to no one.  Called only when a request arrives while another for the
 * same id is in flight, so the scan of the timer heap is rare.  Returns
 * how many were released.
 */
static int
release_abandoned(const char *id)
{
	size_t		i;
	int			released = 0;

	pthread_mutex_lock(&timer_lock);
	for (i = 0; i < timer_len; i++)
	{
		ReqState   *rs = timer_heap[i].rs;

		if (rs == NULL || rs->id == NULL || strcmp(rs->id, id) != 0 ||
			!client_gone(timer_heap[i].conn))
			continue;
		mock_id_leave(rs->id);
		free(rs->id);
		rs->id = NULL;
		released++;
	}
	pthread_mutex_unlock(&timer_lock);
	atomic_fetch_add(&stat_abandoned, (uint_fast64_t) released);
	return released;
}

/*
 * Timer thread: resume suspended connections when their deadline passes.
 */
static void *
timer_main(void *arg)
{
	struct MHD_Connection *batch[TIMER_BATCH];

	(void) arg;
	pthread_mutex_lock(&timer_lock);
	while (!timer_stop)
	{
		uint64_t	now;
		int			n = 0;
		int			i;

		if (timer_len == 0)
		{
			pthread_cond_wait(&timer_cond, &timer_lock);
			continue;
		}
		now = mock_monotonic_ns();
		if (timer_heap[0].due_ns > now)
		{
			struct timespec ts;

			ts.tv_sec = (time_t) (timer_heap[0].due_ns / 1000000000ULL);
			ts.tv_nsec = (long) (timer_heap[0].due_ns % 1000000000ULL);
			pthread_cond_timedwait(&timer_cond, &timer_lock, &ts);
			continue;
		}
		while (timer_len > 0 && timer_heap[0].due_ns <= now && n < TIMER_BATCH)
			batch[n++] = heap_pop();
		pthread_mutex_unlock(&timer_lock);
		for (i = 0; i < n; i++)
			MHD_resume_connection(batch[i]);
		pthread_mutex_lock(&timer_lock);
	}
	pthread_mutex_unlock(&timer_lock);
	return NULL;
}

/*
 * Stop the timer thread and resume every connection still suspended, so
 * that the daemon can be stopped.  No connection is suspended afterwards.
 */
static void
timer_shutdown(pthread_t thread)
{
	pthread_mutex_lock(&timer_lock);
	timer_stop = true;
	while (timer_len > 0)
		MHD_resume_connection(heap_pop());
	pthread_cond_signal(&timer_cond);
	pthread_mutex_unlock(&timer_lock);
	pthread_join(thread, NULL);
}

/*
 * Queue a response now, or after delay_ms by suspending the connection.
 * If owned, our reference to the response is dropped once it is queued.
 */
static enum MHD_Result
respond(struct MHD_Connection *conn, ReqState *rs, unsigned int status,
		struct MHD_Response *resp, bool owned, long delay_ms)
{
	enum MHD_Result ret;

	if (resp == NULL)
		return MHD_NO;

	if (delay_ms > 0)
	{
		rs->response = resp;
		rs->status = status;
		rs->owned = owned;
		rs->pending = true;
		if (timer_schedule(conn, rs, delay_ms))
			return MHD_YES;
		rs->pending = false;
		rs->response = NULL;
	}

	ret = MHD_queue_response(conn, status, resp);
	if (owned)
		MHD_destroy_response(resp);
	return ret;
}

/*
 * Answer a scripted request (anything that is not a /_ endpoint).
 */
static enum MHD_Result
handle_scripted(struct MHD_Connection *conn, ReqState *rs, const char *url,
				const char *method)
{
	const char *seg;
	size_t		seglen;
	char		segbuf[512];
	char	   *segalloc = NULL;
	char	   *decoded;
	const char *id = NULL;
	const char *tilde;
	json_t	   *root = NULL;
	bool		bad_body = false;
	uint64_t	attempt = 0;
	struct MHD_Response *resp = NULL;
	unsigned int status = MHD_HTTP_OK;
	bool		owned = false;
	long		delay = mock_opt_latency_ms;
	Action		act = {0, 0};
	enum MHD_Result ret;

	/* the payment id is the last path segment, or comes from the body */
	seg = strrchr(url, '/');
	seg = seg ? seg + 1 : url;
	seglen = strlen(seg);
	if (seglen >= sizeof(segbuf))
	{
		segalloc = malloc(seglen + 1);
		if (segalloc == NULL)
			return MHD_NO;
	}
	decoded = segalloc ? segalloc : segbuf;
	mock_percent_decode(decoded, seg, seglen, false);

	if (strcmp(method, MHD_HTTP_METHOD_POST) == 0 &&
		strcmp(decoded, "query") == 0)
	{
		if (rs->body.len > 0 && !rs->body.overflow)
		{
			root = json_loadb(rs->body.data, rs->body.len, 0, NULL);
			if (json_is_object(root))
			{
				json_t	   *pid = json_object_get(root, "payment_id");

				if (json_is_string(pid))
					id = json_string_value(pid);
			}
		}
		if (id == NULL)
			bad_body = true;
	}
	else
		id = decoded;

	if (id != NULL && id[0] != '\0')
	{
		attempt = mock_next_attempt(id);
		in_flight_enter_id(rs, id);
	}
	atomic_fetch_add(&stat_requests, 1);
	log_request(rs, method, (id != NULL && id[0] != '\0') ? id : "-", attempt);

	if (!headers_ok(conn))
	{
		status = MHD_HTTP_UNAUTHORIZED;
		resp = resp_unauthorized;
	}
	else if (bad_body)
	{
		status = MHD_HTTP_BAD_REQUEST;
		resp = resp_bad_body;
	}
	else if (id[0] == '\0')
	{
		status = MHD_HTTP_NOT_FOUND;
		resp = resp_not_found;
	}
	else
	{
		tilde = strrchr(id, '~');
		if (!script_action(tilde ? tilde + 1 : "S", attempt, &act))
		{
			status = MHD_HTTP_BAD_REQUEST;
			resp = resp_bad_script;
		}
		else
		{
			atomic_fetch_add(&stat_answered[act.letter - 'A'], 1);
			switch (act.letter)
			{
				case 'P':
					resp = status_response(id, "WAIT", 0);
					owned = true;
					break;
				case 'T':
					resp = status_response(id, "WAIT", 0);
					owned = true;
					delay += act.arg;
					break;
				case 'S':
					resp = status_response(id, "PAID", 0);
					owned = true;
					break;
				case 'B':
					resp = status_response(id, "PAID", act.arg > 0 ? act.arg : 0);
					owned = true;
					break;
				case 'F':
					resp = status_response(id, "FAILED", 0);
					owned = true;
					break;
				case 'C':
					resp = status_response(id, "CLOSED", 0);
					owned = true;
					break;
				case 'X':
					resp = status_response(id, "CANCELLED", 0);
					owned = true;
					break;
				case 'U':
					resp = status_response(id, "WEIRD", 0);
					owned = true;
					break;
				case 'M':
					resp = resp_missing_status;
					break;
				case 'J':
					resp = resp_not_json;
					break;
				case 'E':
					status = (unsigned int) act.arg;
					resp = resp_scripted_error;
					break;
				case 'R':
					status = MHD_HTTP_TOO_MANY_REQUESTS;
					resp = retry_response(act.arg);
					owned = true;
					break;
				case 'N':
					status = MHD_HTTP_NOT_FOUND;
					resp = resp_not_found;
					break;
				case 'D':
					resp = deep_response(act.arg);
					owned = true;
					break;
				case 'A':
					resp = status_response_amount(id, "PAID", 0, act.arg);
					owned = true;
					break;
			}
		}
	}

	/* id may point into root or segalloc, which are no longer needed */
	json_decref(root);
	free(segalloc);

	ret = respond(conn, rs, status, resp, owned, delay);
	return ret;
}

/*
 * Answer a /_ control endpoint.
 */
static enum MHD_Result
handle_control(struct MHD_Connection *conn, const char *url)
{
	if (strcmp(url, "/_stats") == 0)
	{
		char		answered[sizeof(ACTION_LETTERS) * 40];
		size_t		off = 0;
		char	   *busiest;
		char	   *text;
		const char *letter;

		for (letter = ACTION_LETTERS; *letter != '\0'; letter++)
			off += (size_t) snprintf(answered + off, sizeof(answered) - off,
									 ",\"answered_%c\":%" PRIuFAST64, *letter,
									 atomic_load(&stat_answered[*letter - 'A']));
		pthread_mutex_lock(&busiest_lock);
		busiest = busiest_id ? mock_json_escape_dup(busiest_id) : NULL;
		pthread_mutex_unlock(&busiest_lock);
		text = mock_format("{\"requests\":%" PRIuFAST64 ",\"in_flight\":%" PRIdFAST64
						   ",\"max_in_flight\":%" PRIdFAST64
						   ",\"max_in_flight_per_id\":%" PRIdFAST64
						   ",\"overlapping\":%" PRIuFAST64
						   ",\"abandoned\":%" PRIuFAST64
						   ",\"busiest_id\":%s%s%s%s}",
						   atomic_load(&stat_requests),
						   atomic_load(&stat_in_flight),
						   atomic_load(&stat_max_in_flight),
						   atomic_load(&stat_max_in_flight_per_id),
						   atomic_load(&stat_overlapping),
						   atomic_load(&stat_abandoned),
						   busiest ? "\"" : "", busiest ? busiest : "null",
						   busiest ? "\"" : "", answered);
		free(busiest);
		return respond(conn, NULL, MHD_HTTP_OK,
					   mock_response(text, strlen(text), MHD_RESPMEM_MUST_FREE,
									 "application/json"),
					   true, 0);
	}
	if (strcmp(url, "/_reset") == 0)
	{
		int			i;

		mock_reset_attempts();
		atomic_store(&stat_requests, 0);
		atomic_store(&stat_max_in_flight_per_id, 0);
		atomic_store(&stat_overlapping, 0);
		atomic_store(&stat_abandoned, 0);
		for (i = 0; i < 26; i++)
			atomic_store(&stat_answered[i], 0);
		pthread_mutex_lock(&busiest_lock);
		free(busiest_id);
		busiest_id = NULL;
		pthread_mutex_unlock(&busiest_lock);
		/* in_flight is a gauge; the high-water mark restarts from it */
		atomic_store(&stat_max_in_flight, atomic_load(&stat_in_flight));
		return respond(conn, NULL, MHD_HTTP_OK, resp_reset_ok, false, 0);
	}
	return respond(conn, NULL, MHD_HTTP_NOT_FOUND, resp_not_found, false, 0);
}

/*
 * MHD access handler.  Called once when the headers are in, once per body
 * chunk, once more when the request is complete, and once again after a
 * suspended connection is resumed.
 */
static enum MHD_Result
handle_request(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version,
			   const char *upload_data, size_t *upload_data_size,
			   void **con_cls)
{
	ReqState   *rs = *con_cls;
	enum MHD_Result ret;

	(void) cls;
	(void) version;

	if (rs == NULL)
	{
		rs = calloc(1, sizeof(ReqState));
		if (rs == NULL)
			return MHD_NO;
		rs->control = (url[0] == '/' && url[1] == '_');
		if (!rs->control)
		{
			clock_gettime(CLOCK_REALTIME, &rs->arrival);
			in_flight_enter();
			rs->counted = true;
		}
		*con_cls = rs;
		return MHD_YES;
	}

	/* a body chunk: a control endpoint's is dropped */
	if (mock_take_body(rs->control ? NULL : &rs->body, upload_data,
					   upload_data_size, MAX_BODY, true, &ret))
		return ret;

	if (rs->pending)
	{
		/* resumed after the delay: send what was prepared */
		struct MHD_Response *r = rs->response;

		rs->pending = false;
		rs->response = NULL;
		ret = MHD_queue_response(conn, rs->status, r);
		if (rs->owned)
			MHD_destroy_response(r);
		return ret;
	}

	if (rs->control)
		return handle_control(conn, url);
	return handle_scripted(conn, rs, url, method);
}

/*
 * MHD completion callback: release per-request state.
 */
static void
request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
				  enum MHD_RequestTerminationCode toe)
{
	ReqState   *rs = *con_cls;

	(void) cls;
	(void) conn;
	(void) toe;

	if (rs == NULL)
		return;
	if (rs->counted)
		atomic_fetch_sub(&stat_in_flight, 1);
	if (rs->id != NULL)
	{
		mock_id_leave(rs->id);
		free(rs->id);
	}
	if (rs->response != NULL && rs->owned)
		MHD_destroy_response(rs->response);
	mock_body_free(&rs->body);
	free(rs);
	*con_cls = NULL;
}

/*
 * Parse the command line into mock_opt_* and the opt_* variables.
 */
static void
parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		MOCK_LONGOPTS_COMMON,
		MOCK_LONGOPT_LATENCY,
		{"require-header", required_argument, NULL, 'H'},
		{"pidfile", required_argument, NULL, 'P'},
		{"threads", required_argument, NULL, 't'},
		{"resume", no_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	while ((c = mock_next_option(argc, argv, longopts)) != -1)
	{
		switch (c)
		{
			case 'H':
				add_required_header(optarg);
				break;
			case 'P':
				opt_pidfile = optarg;
				break;
			case 't':
				opt_threads = (unsigned int) mock_parse_number("--threads", optarg, 64);
				if (opt_threads < 1)
					mock_die("--threads must be at least 1", NULL);
				break;
			case 'r':
				opt_resume = true;
				break;
			case 'h':
				usage(stdout);
				exit(0);
			default:
				usage(stderr);
				exit(2);
		}
	}
	if (optind < argc)
	{
		usage(stderr);
		exit(2);
	}
	if (opt_resume && mock_opt_log == NULL)
		mock_die("--resume needs --log", NULL);
}

/*
 * Write our process id to the --pidfile.
 */
static void
write_pidfile(void)
{
	FILE	   *f = fopen(opt_pidfile, "w");

	if (f == NULL)
		mock_die("cannot open pidfile", opt_pidfile);
	fprintf(f, "%d\n", (int) getpid());
	if (fclose(f) != 0)
		mock_die("cannot write pidfile", opt_pidfile);
}

/*
 * Start the server, report the port, and wait for SIGTERM or SIGINT.
 */
int
main(int argc, char **argv)
{
	struct MHD_Daemon *daemon;
	pthread_condattr_t cattr;
	pthread_t	timer_thread;

	mock_init("mock_channel");
	parse_args(argc, argv);
	if (opt_resume)
		(void) mock_attempts_from_log(mock_opt_log);
	mock_log_open(mock_opt_log);
	mock_raise_fd_limit();

	/* block the stop signals in every thread; main collects them */
	mock_block_stop_signals();

	init_static_responses();

	pthread_condattr_init(&cattr);
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	pthread_cond_init(&timer_cond, &cattr);
	pthread_condattr_destroy(&cattr);
	if (pthread_create(&timer_thread, NULL, timer_main, NULL) != 0)
		mock_die("cannot start timer thread", NULL);

	/* a pool of event loops, and room for many keep-alive connections */
	{
		struct MHD_OptionItem options[] = {
			{MHD_OPTION_THREAD_POOL_SIZE, opt_threads > 1 ? opt_threads : 0, NULL},
			{MHD_OPTION_CONNECTION_LIMIT, 8192, NULL},
			{MHD_OPTION_CONNECTION_TIMEOUT, 600, NULL},
			{MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL},
			{MHD_OPTION_NOTIFY_COMPLETED, (intptr_t) request_completed, NULL},
			{MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t) mock_unescape_nothing, NULL},
			{MHD_OPTION_END, 0, NULL}
		};

		daemon = mock_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME,
								   mock_opt_port, handle_request, options);
	}

	if (opt_pidfile != NULL)
		write_pidfile();
	mock_announce_port(daemon);
	mock_wait_for_stop();

	timer_shutdown(timer_thread);
	MHD_stop_daemon(daemon);

	if (opt_pidfile != NULL)
		unlink(opt_pidfile);
	mock_log_close();
	return 0;
}
