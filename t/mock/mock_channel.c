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
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

/* Largest request body we keep; the rest is dropped. */
#define MAX_BODY			(1024 * 1024)

/* Largest numeric argument accepted in a script. */
#define MAX_SCRIPT_NUM		1000000000L

/* Largest body the B action may ask for. */
#define MAX_PAD_BYTES		(64L * 1024 * 1024)

/* How many due timers the timer thread resumes per lock acquisition. */
#define TIMER_BATCH			256

/* Initial size of the per-id attempt hash table (power of two). */
#define ID_INITIAL_BUCKETS	65536

/* A header every scripted request must carry (--require-header). */
typedef struct RequiredHeader
{
	char	   *name;
	char	   *value;
} RequiredHeader;

/* One parsed script action. */
typedef struct Action
{
	char		letter;			/* P S F C X U M J E R N T B */
	long		arg;			/* numeric argument, 0 if none */
} Action;

/* Per-request state, hung off MHD's con_cls pointer. */
typedef struct ReqState
{
	bool		control;		/* request for a /_ control endpoint */
	bool		counted;		/* included in in_flight */
	bool		pending;		/* suspended, waiting to send response */
	bool		owned;			/* response must be destroyed by us */
	bool		body_overflow;	/* body exceeded MAX_BODY */
	struct timespec arrival;	/* wall clock time of arrival */
	char	   *body;
	size_t		body_len;
	size_t		body_cap;
	struct MHD_Response *response;	/* prepared response while pending */
	unsigned int status;		/* its HTTP status */
} ReqState;

/* An entry of the per-payment-id attempt counter hash table. */
typedef struct IdEntry
{
	struct IdEntry *next;
	uint64_t	hash;
	uint64_t	count;
	char		key[];
} IdEntry;

/* A suspended connection waiting for its deadline. */
typedef struct TimerEntry
{
	uint64_t	due_ns;			/* CLOCK_MONOTONIC deadline */
	struct MHD_Connection *conn;
} TimerEntry;

/* Configuration from the command line. */
static unsigned int opt_port = 0;
static long opt_latency_ms = 0;
static unsigned int opt_threads = 2;
static const char *opt_log = NULL;
static const char *opt_pidfile = NULL;
static RequiredHeader *required_headers = NULL;
static int n_required_headers = 0;

static int log_fd = -1;

/* Counters reported by /_stats. */
static atomic_uint_fast64_t stat_requests;
static atomic_int_fast64_t stat_in_flight;
static atomic_int_fast64_t stat_max_in_flight;

/* Per-id attempt counters. */
static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;
static IdEntry **id_buckets = NULL;
static size_t id_nbuckets = 0;
static size_t id_count = 0;

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
			"  --help                   show this message\n");
}

/*
 * Print an error message and exit with status 2.
 */
static void
die(const char *msg, const char *detail)
{
	if (detail)
		fprintf(stderr, "mock_channel: %s: %s\n", msg, detail);
	else
		fprintf(stderr, "mock_channel: %s\n", msg);
	exit(2);
}

/*
 * Parse a non-negative decimal number for an option; die on garbage.
 */
static long
parse_option_number(const char *opt, const char *s, long max)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max)
		die("invalid number for option", opt);
	return v;
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
		die("--require-header wants \"Name: value\"", arg);

	required_headers = realloc(required_headers,
							   sizeof(RequiredHeader) * (n_required_headers + 1));
	if (required_headers == NULL)
		die("out of memory", NULL);
	h = &required_headers[n_required_headers++];

	h->name = strndup(arg, colon - arg);
	v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	h->value = strdup(v);
	if (h->name == NULL || h->value == NULL)
		die("out of memory", NULL);
}

/*
 * Current CLOCK_MONOTONIC time in nanoseconds.
 */
static uint64_t
monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

/*
 * Build a static response from a constant string with a Content-Type.
 */
static struct MHD_Response *
make_static_response(const char *body, const char *content_type)
{
	struct MHD_Response *r;

	r = MHD_create_response_from_buffer(strlen(body), (void *) body,
										MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
		die("cannot create response", NULL);
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
								content_type) != MHD_YES)
		die("cannot add response header", NULL);
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
 * FNV-1a hash of a byte string.
 */
static uint64_t
hash_bytes(const char *s, size_t len)
{
	uint64_t	h = 14695981039346656037ULL;
	size_t		i;

	for (i = 0; i < len; i++)
	{
		h ^= (unsigned char) s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/*
 * Double the hash table.  Caller holds id_lock.  On allocation failure the
 * table simply stays at its current size.
 */
static void
id_table_grow(void)
{
	size_t		newn = id_nbuckets * 2;
	IdEntry   **nb;
	size_t		i;

	nb = calloc(newn, sizeof(IdEntry *));
	if (nb == NULL)
		return;
	for (i = 0; i < id_nbuckets; i++)
	{
		IdEntry    *e = id_buckets[i];

		while (e)
		{
			IdEntry    *next = e->next;
			size_t		b = e->hash & (newn - 1);

			e->next = nb[b];
			nb[b] = e;
			e = next;
		}
	}
	free(id_buckets);
	id_buckets = nb;
	id_nbuckets = newn;
}

/*
 * Count one more request for a payment id and return its attempt number
 * (1 for the first request).
 */
static uint64_t
id_next_attempt(const char *id)
{
	size_t		len = strlen(id);
	uint64_t	h = hash_bytes(id, len);
	IdEntry    *e;
	size_t		b;
	uint64_t	result;

	pthread_mutex_lock(&id_lock);
	b = h & (id_nbuckets - 1);
	for (e = id_buckets[b]; e != NULL; e = e->next)
	{
		if (e->hash == h && strcmp(e->key, id) == 0)
		{
			result = ++e->count;
			pthread_mutex_unlock(&id_lock);
			return result;
		}
	}

	e = malloc(sizeof(IdEntry) + len + 1);
	if (e != NULL)
	{
		e->hash = h;
		e->count = 1;
		memcpy(e->key, id, len + 1);
		e->next = id_buckets[b];
		id_buckets[b] = e;
		if (++id_count > id_nbuckets)
			id_table_grow();
	}
	pthread_mutex_unlock(&id_lock);
	return 1;
}

/*
 * Forget all per-id attempt counts.
 */
static void
id_table_reset(void)
{
	size_t		i;

	pthread_mutex_lock(&id_lock);
	for (i = 0; i < id_nbuckets; i++)
	{
		IdEntry    *e = id_buckets[i];

		while (e)
		{
			IdEntry    *next = e->next;

			free(e);
			e = next;
		}
		id_buckets[i] = NULL;
	}
	id_count = 0;
	pthread_mutex_unlock(&id_lock);
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
 * Copy src to dst with every byte outside 0x21-0x7e replaced by '_'.
 * Returns the number of bytes written.
 */
static size_t
copy_token(char *dst, const char *src, size_t len)
{
	size_t		i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) src[i];

		dst[i] = (c >= 0x21 && c <= 0x7e) ? (char) c : '_';
	}
	return len;
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
	ssize_t		w;

	if (log_fd < 0)
		return;

	mlen = strlen(method);
	idlen = strlen(id);
	need = 64 + mlen + idlen + rs->body_len;
	if (need > sizeof(stackbuf))
	{
		buf = malloc(need);
		if (buf == NULL)
			return;
	}

	n = snprintf(buf, need, "%lld ",
				 (long long) rs->arrival.tv_sec * 1000000LL +
				 rs->arrival.tv_nsec / 1000);
	off = (size_t) n;
	off += copy_token(buf + off, method, mlen);
	buf[off++] = ' ';
	off += copy_token(buf + off, id, idlen);
	n = snprintf(buf + off, need - off, " %" PRIu64, attempt);
	off += (size_t) n;
	if (rs->body_len > 0)
	{
		buf[off++] = ' ';
		off += copy_token(buf + off, rs->body, rs->body_len);
	}
	buf[off++] = '\n';

	do
		w = write(log_fd, buf, off);
	while (w < 0 && errno == EINTR);

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
 * JSON-escape src into dst (which must have room for 6 bytes per input
 * byte).  Returns the number of bytes written.
 */
static size_t
json_escape(char *dst, const char *src)
{
	static const char hex[] = "0123456789abcdef";
	char	   *d = dst;

	for (; *src; src++)
	{
		unsigned char c = (unsigned char) *src;

		if (c == '"' || c == '\\')
		{
			*d++ = '\\';
			*d++ = (char) c;
		}
		else if (c < 0x20)
		{
			*d++ = '\\';
			*d++ = 'u';
			*d++ = '0';
			*d++ = '0';
			*d++ = hex[c >> 4];
			*d++ = hex[c & 15];
		}
		else
			*d++ = (char) c;
	}
	return d - dst;
}

/*
 * Build a status answer for id with the given status word.  If min_len is
 * non-zero a "pad" member is added so the body is at least min_len bytes.
 */
static struct MHD_Response *
status_response(const char *id, const char *word, long min_len)
{
	size_t		wlen = strlen(word);
	size_t		cap;
	size_t		off = 0;
	char	   *buf;
	struct MHD_Response *r;

	cap = strlen(id) * 6 + 2 * wlen + 128 + (min_len > 0 ? (size_t) min_len : 0);
	buf = malloc(cap);
	if (buf == NULL)
		return NULL;

#define APPEND_LIT(s) (memcpy(buf + off, s, sizeof(s) - 1), off += sizeof(s) - 1)
	APPEND_LIT("{\"payment_id\":\"");
	off += json_escape(buf + off, id);
	APPEND_LIT("\",\"status\":\"");
	memcpy(buf + off, word, wlen);
	off += wlen;
	APPEND_LIT("\",\"data\":{\"trade_state\":\"");
	memcpy(buf + off, word, wlen);
	off += wlen;
	APPEND_LIT("\"}");
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

	r = MHD_create_response_from_buffer(off, buf, MHD_RESPMEM_MUST_FREE);
	if (r == NULL)
	{
		free(buf);
		return NULL;
	}
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
								"application/json") != MHD_YES)
	{
		MHD_destroy_response(r);
		return NULL;
	}
	return r;
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
	struct MHD_Response *r;

	if (buf == NULL)
		return NULL;
	memcpy(buf, head, sizeof(head) - 1);
	memset(buf + sizeof(head) - 1, '[', (size_t) depth);
	memset(buf + sizeof(head) - 1 + depth, ']', (size_t) depth);
	memcpy(buf + sizeof(head) - 1 + 2 * depth, tail, sizeof(tail) - 1);
	r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
	if (r == NULL)
		free(buf);
	else
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	return r;
}

/*
 * Build a 429 answer carrying a Retry-After header.
 */
static struct MHD_Response *
retry_response(long secs)
{
	struct MHD_Response *r;
	char		val[32];

	r = MHD_create_response_from_buffer(strlen(body_slow_down),
										(void *) body_slow_down,
										MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
		return NULL;
	snprintf(val, sizeof(val), "%ld", secs);
	if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
								"application/json") != MHD_YES ||
		MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, val) != MHD_YES)
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
timer_schedule(struct MHD_Connection *conn, long delay_ms)
{
	uint64_t	due = monotonic_ns() + (uint64_t) delay_ms * 1000000ULL;
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
		now = monotonic_ns();
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
		if (timer_schedule(conn, delay_ms))
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
 * MHD unescape callback that leaves the URL untouched.  MHD's default would
 * decode the whole path, turning an encoded "/" inside a payment id into a
 * segment separator; instead the last segment is decoded by us.
 */
static size_t
unescape_nothing(void *cls, struct MHD_Connection *conn, char *s)
{
	(void) cls;
	(void) conn;
	return strlen(s);
}

/*
 * Value of a hex digit, or -1.
 */
static int
hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Percent-decode src into dst, which has room for strlen(src) + 1 bytes.
 * A '%' not followed by two hex digits is kept as is.
 */
static void
percent_decode(char *dst, const char *src)
{
	while (*src)
	{
		int			hi,
					lo;

		if (src[0] == '%' &&
			(hi = hex_value(src[1])) >= 0 && (lo = hex_value(src[2])) >= 0)
		{
			*dst++ = (char) (hi * 16 + lo);
			src += 3;
		}
		else
			*dst++ = *src++;
	}
	*dst = '\0';
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
	long		delay = opt_latency_ms;
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
	percent_decode(decoded, seg);

	if (strcmp(method, MHD_HTTP_METHOD_POST) == 0 &&
		strcmp(decoded, "query") == 0)
	{
		if (rs->body_len > 0 && !rs->body_overflow)
		{
			root = json_loadb(rs->body, rs->body_len, 0, NULL);
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
		attempt = id_next_attempt(id);
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
		char		buf[160];
		int			n;
		struct MHD_Response *r;

		n = snprintf(buf, sizeof(buf),
					 "{\"requests\":%" PRIuFAST64 ",\"in_flight\":%" PRIdFAST64
					 ",\"max_in_flight\":%" PRIdFAST64 "}",
					 atomic_load(&stat_requests),
					 atomic_load(&stat_in_flight),
					 atomic_load(&stat_max_in_flight));
		r = MHD_create_response_from_buffer((size_t) n, buf,
											MHD_RESPMEM_MUST_COPY);
		if (r == NULL)
			return MHD_NO;
		if (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
									"application/json") != MHD_YES)
		{
			MHD_destroy_response(r);
			return MHD_NO;
		}
		return respond(conn, NULL, MHD_HTTP_OK, r, true, 0);
	}
	if (strcmp(url, "/_reset") == 0)
	{
		id_table_reset();
		atomic_store(&stat_requests, 0);
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

	if (*upload_data_size > 0)
	{
		size_t		len = *upload_data_size;

		*upload_data_size = 0;
		if (rs->control || rs->body_overflow)
			return MHD_YES;
		if (rs->body_len + len > MAX_BODY)
		{
			rs->body_overflow = true;
			len = MAX_BODY - rs->body_len;
		}
		if (rs->body_len + len > rs->body_cap)
		{
			size_t		ncap = rs->body_cap ? rs->body_cap : 256;
			char	   *nb;

			while (ncap < rs->body_len + len)
				ncap *= 2;
			nb = realloc(rs->body, ncap);
			if (nb == NULL)
				return MHD_NO;
			rs->body = nb;
			rs->body_cap = ncap;
		}
		memcpy(rs->body + rs->body_len, upload_data, len);
		rs->body_len += len;
		return MHD_YES;
	}

	if (rs->pending)
	{
		/* resumed after the delay: send what was prepared */
		struct MHD_Response *r = rs->response;
		enum MHD_Result ret;

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
	if (rs->response != NULL && rs->owned)
		MHD_destroy_response(rs->response);
	free(rs->body);
	free(rs);
	*con_cls = NULL;
}

/*
 * Raise the open file limit as far as allowed; many connections need it.
 */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * Parse the command line into the opt_* variables.
 */
static void
parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"port", required_argument, NULL, 'p'},
		{"latency-ms", required_argument, NULL, 'l'},
		{"log", required_argument, NULL, 'L'},
		{"require-header", required_argument, NULL, 'H'},
		{"pidfile", required_argument, NULL, 'P'},
		{"threads", required_argument, NULL, 't'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'p':
				opt_port = (unsigned int) parse_option_number("--port", optarg, 65535);
				break;
			case 'l':
				opt_latency_ms = parse_option_number("--latency-ms", optarg,
													 MAX_SCRIPT_NUM);
				break;
			case 'L':
				opt_log = optarg;
				break;
			case 'H':
				add_required_header(optarg);
				break;
			case 'P':
				opt_pidfile = optarg;
				break;
			case 't':
				opt_threads = (unsigned int) parse_option_number("--threads", optarg, 64);
				if (opt_threads < 1)
					die("--threads must be at least 1", NULL);
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
}

/*
 * Write our process id to the --pidfile.
 */
static void
write_pidfile(void)
{
	FILE	   *f = fopen(opt_pidfile, "w");

	if (f == NULL)
		die("cannot open pidfile", opt_pidfile);
	fprintf(f, "%d\n", (int) getpid());
	if (fclose(f) != 0)
		die("cannot write pidfile", opt_pidfile);
}

/*
 * Start the server, report the port, and wait for SIGTERM or SIGINT.
 */
int
main(int argc, char **argv)
{
	struct MHD_Daemon *daemon;
	const union MHD_DaemonInfo *info;
	struct sockaddr_in sa;
	sigset_t	sigs;
	pthread_condattr_t cattr;
	pthread_t	timer_thread;
	unsigned int flags;
	int			sig;

	parse_args(argc, argv);

	if (opt_log != NULL)
	{
		log_fd = open(opt_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (log_fd < 0)
			die("cannot open log file", opt_log);
	}

	raise_fd_limit();
	signal(SIGPIPE, SIG_IGN);

	/* block the stop signals in every thread; main collects them */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	id_nbuckets = ID_INITIAL_BUCKETS;
	id_buckets = calloc(id_nbuckets, sizeof(IdEntry *));
	if (id_buckets == NULL)
		die("out of memory", NULL);

	init_static_responses();

	pthread_condattr_init(&cattr);
	pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
	pthread_cond_init(&timer_cond, &cattr);
	pthread_condattr_destroy(&cattr);
	if (pthread_create(&timer_thread, NULL, timer_main, NULL) != 0)
		die("cannot start timer thread", NULL);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t) opt_port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

	flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
		MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	daemon = MHD_start_daemon(flags, (uint16_t) opt_port, NULL, NULL,
							  handle_request, NULL,
							  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa,
							  MHD_OPTION_THREAD_POOL_SIZE,
							  (unsigned int) (opt_threads > 1 ? opt_threads : 0),
							  MHD_OPTION_CONNECTION_LIMIT, (unsigned int) 8192,
							  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 600,
							  MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int) 1024,
							  MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
							  MHD_OPTION_UNESCAPE_CALLBACK, unescape_nothing, NULL,
							  MHD_OPTION_END);
	if (daemon == NULL)
		die("cannot start HTTP daemon", NULL);

	info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
	if (info == NULL || info->port == 0)
		die("cannot determine listening port", NULL);

	if (opt_pidfile != NULL)
		write_pidfile();

	printf("port=%u\n", (unsigned int) info->port);
	fflush(stdout);

	for (;;)
	{
		if (sigwait(&sigs, &sig) == 0 && (sig == SIGTERM || sig == SIGINT))
			break;
	}

	timer_shutdown(timer_thread);
	MHD_stop_daemon(daemon);

	if (opt_pidfile != NULL)
		unlink(opt_pidfile);
	if (log_fd >= 0)
		close(log_fd);
	return 0;
}
