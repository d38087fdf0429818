/*-------------------------------------------------------------------------
 *
 * mock_common.c
 *	  What the mock payment channels of the paysync tests share.
 *
 * Every mock is a small libmicrohttpd server on 127.0.0.1 that prints
 * "port=N" once listening, stops cleanly (exit status 0) on SIGTERM or
 * SIGINT, and may append one line per request to a --log file, each line
 * written with a single write() on an O_APPEND descriptor so that lines
 * from concurrent requests never interleave.  This file holds that
 * boilerplate, the options they share (--port, --log, --latency-ms), and
 * the helpers more than one mock needs: percent decoding, JSON escaping,
 * per-id attempt and in-flight counters, request bodies, responses, and
 * SHA256withRSA signatures in base64 (WeChat Pay and Alipay both sign that
 * way).
 *
 * What a mock answers, and what its log lines say, stays in its own file.
 *
 * IDENTIFICATION
 *	  t/mock/mock_common.c
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE

#include "mock_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/rsa.h>

/* Initial size of the per-id attempt hash table (power of two). */
#define ATTEMPT_INITIAL_BUCKETS	65536

/* An entry of the per-payment-id attempt counter hash table. */
typedef struct AttemptEntry
{
	struct AttemptEntry *next;
	uint64_t	hash;
	uint64_t	count;			/* requests so far: the last attempt number */
	int64_t		in_flight;		/* requests not yet completed */
	char		key[];
} AttemptEntry;

/* The shared options (see mock_common.h). */
unsigned int mock_opt_port = 0;
const char *mock_opt_log = NULL;
long		mock_opt_latency_ms = 0;

/* The program's name, for messages. */
static const char *progname = "mock";

/* The --log descriptor, or -1. */
static int	log_fd = -1;

/* The signals that stop a mock, blocked in every thread. */
static sigset_t stop_signals;

/* Per-id attempt counters. */
static pthread_mutex_t attempt_lock = PTHREAD_MUTEX_INITIALIZER;
static AttemptEntry **attempt_buckets = NULL;
static size_t attempt_nbuckets = 0;
static size_t attempt_count = 0;


/*
 * Remember the program's name for messages.  Called first by every mock.
 */
void
mock_init(const char *name)
{
	progname = name;
}

/*
 * Print "<program>: msg[: detail]" and exit with status 2.
 */
void
mock_die(const char *msg, const char *detail)
{
	fprintf(stderr, "%s: %s%s%s\n", progname, msg,
			detail ? ": " : "", detail ? detail : "");
	exit(2);
}

/*
 * Parse a non-negative decimal number of at most max for option opt; die
 * on anything else.
 */
long
mock_parse_number(const char *opt, const char *s, long max)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0 || v > max)
		mock_die("invalid number for option", opt);
	return v;
}

/*
 * getopt_long() over longopts that stores the shared options itself:
 * returns the next option the mock handles on its own (including '?' for
 * a wrong one), or -1 once the options are all read.
 */
int
mock_next_option(int argc, char **argv, const struct option *longopts)
{
	int			c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case MOCK_OPT_PORT:
				mock_opt_port = (unsigned int) mock_parse_number("--port", optarg, 65535);
				break;
			case MOCK_OPT_LOG:
				mock_opt_log = optarg;
				break;
			case MOCK_OPT_LATENCY:
				mock_opt_latency_ms = mock_parse_number("--latency-ms", optarg,
														MOCK_MAX_LATENCY_MS);
				break;
			default:
				return c;
		}
	}
	return -1;
}

/*
 * Raise the open file limit as far as allowed; many connections need it.
 */
void
mock_raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max)
	{
		rl.rlim_cur = rl.rlim_max;
		(void) setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * Current CLOCK_MONOTONIC time in nanoseconds.
 */
uint64_t
mock_monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

/*
 * A wall clock time in microseconds since the epoch, as the logs show it.
 */
long long
mock_timespec_us(const struct timespec *ts)
{
	return (long long) ts->tv_sec * 1000000LL + ts->tv_nsec / 1000;
}

/*
 * Current wall clock time in microseconds since the epoch.
 */
long long
mock_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return mock_timespec_us(&ts);
}

/*
 * Open the --log file for appending (nothing to do if path is NULL).
 */
void
mock_log_open(const char *path)
{
	if (path == NULL)
		return;
	log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (log_fd < 0)
		mock_die("cannot open log file", path);
}

/*
 * Is there a log to write?  Lets a mock skip building a line nobody reads.
 */
bool
mock_log_enabled(void)
{
	return log_fd >= 0;
}

/*
 * Append one whole log line with a single write() on the O_APPEND
 * descriptor, so that concurrent lines never interleave.
 */
void
mock_log_write(const char *line, size_t len)
{
	ssize_t		w;

	if (log_fd < 0)
		return;
	do
		w = write(log_fd, line, len);
	while (w < 0 && errno == EINTR);
	if (w < 0)
		fprintf(stderr, "%s: log: %s\n", progname, strerror(errno));
}

/*
 * Close the log, if open.
 */
void
mock_log_close(void)
{
	if (log_fd >= 0)
		close(log_fd);
	log_fd = -1;
}

/*
 * Copy len bytes of src to dst with every byte outside 0x21-0x7e replaced
 * by '_', so that a logged word never splits a line.  dst may be src.
 * Returns len.
 */
size_t
mock_log_token(char *dst, const char *src, size_t len)
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
 * Percent-decode len bytes of src into dst, which has room for len + 1
 * bytes; dst is NUL-terminated.  A '%' not followed by two hex digits is
 * kept as is.  If plus_is_space (form encoding), '+' becomes a space.
 * Returns the decoded length.
 */
size_t
mock_percent_decode(char *dst, const char *src, size_t len,
					bool plus_is_space)
{
	size_t		o = 0;
	size_t		i;

	for (i = 0; i < len; i++)
	{
		int			hi,
					lo;

		if (src[i] == '%' && i + 2 < len &&
			(hi = hex_value(src[i + 1])) >= 0 &&
			(lo = hex_value(src[i + 2])) >= 0)
		{
			dst[o++] = (char) (hi * 16 + lo);
			i += 2;
		}
		else if (plus_is_space && src[i] == '+')
			dst[o++] = ' ';
		else
			dst[o++] = src[i];
	}
	dst[o] = '\0';
	return o;
}

/*
 * Percent-decode len bytes of src into a malloc'd string; die if out of
 * memory.
 */
char *
mock_percent_decode_dup(const char *src, size_t len, bool plus_is_space)
{
	char	   *out = malloc(len + 1);

	if (out == NULL)
		mock_die("out of memory", NULL);
	mock_percent_decode(out, src, len, plus_is_space);
	return out;
}

/*
 * JSON-escape the string src into dst (without quotes), which must have
 * room for 6 bytes per input byte.  Returns the number of bytes written;
 * dst is not NUL-terminated.
 */
size_t
mock_json_escape(char *dst, const char *src)
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
 * JSON-escape s into a malloc'd string (without quotes); die if out of
 * memory.
 */
char *
mock_json_escape_dup(const char *s)
{
	char	   *out = malloc(strlen(s) * 6 + 1);

	if (out == NULL)
		mock_die("out of memory", NULL);
	out[mock_json_escape(out, s)] = '\0';
	return out;
}

/*
 * malloc'd printf; die if out of memory.
 */
char *
mock_format(const char *fmt,...)
{
	va_list		args;
	char	   *out;
	int			n;

	va_start(args, fmt);
	n = vasprintf(&out, fmt, args);
	va_end(args);
	if (n < 0)
		mock_die("out of memory", NULL);
	return out;
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
 * Double the attempt hash table.  Caller holds attempt_lock.  On
 * allocation failure the table simply stays at its current size.
 */
static void
attempt_table_grow(void)
{
	size_t		newn = attempt_nbuckets * 2;
	AttemptEntry **nb;
	size_t		i;

	nb = calloc(newn, sizeof(AttemptEntry *));
	if (nb == NULL)
		return;
	for (i = 0; i < attempt_nbuckets; i++)
	{
		AttemptEntry *e = attempt_buckets[i];

		while (e)
		{
			AttemptEntry *next = e->next;
			size_t		b = e->hash & (newn - 1);

			e->next = nb[b];
			nb[b] = e;
			e = next;
		}
	}
	free(attempt_buckets);
	attempt_buckets = nb;
	attempt_nbuckets = newn;
}

/*
 * The attempt table's entry for id, created (with no requests) if create
 * and it is missing; NULL if it is missing and not created, or memory ran
 * out.  Caller holds attempt_lock.
 */
static AttemptEntry *
attempt_entry(const char *id, bool create)
{
	size_t		len = strlen(id);
	uint64_t	h = hash_bytes(id, len);
	AttemptEntry *e;
	size_t		b;

	if (attempt_buckets == NULL)
	{
		if (!create)
			return NULL;
		attempt_buckets = calloc(ATTEMPT_INITIAL_BUCKETS, sizeof(AttemptEntry *));
		if (attempt_buckets == NULL)
			mock_die("out of memory", NULL);
		attempt_nbuckets = ATTEMPT_INITIAL_BUCKETS;
	}
	b = h & (attempt_nbuckets - 1);
	for (e = attempt_buckets[b]; e != NULL; e = e->next)
	{
		if (e->hash == h && strcmp(e->key, id) == 0)
			return e;
	}
	if (!create)
		return NULL;

	e = malloc(sizeof(AttemptEntry) + len + 1);
	if (e == NULL)
		return NULL;
	e->hash = h;
	e->count = 0;
	e->in_flight = 0;
	memcpy(e->key, id, len + 1);
	e->next = attempt_buckets[b];
	attempt_buckets[b] = e;
	if (++attempt_count > attempt_nbuckets)
		attempt_table_grow();
	return e;
}

/*
 * Count one more request for a payment id and return its attempt number
 * (1 for the first request).  Thread-safe.
 */
uint64_t
mock_next_attempt(const char *id)
{
	AttemptEntry *e;
	uint64_t	result = 1;

	pthread_mutex_lock(&attempt_lock);
	e = attempt_entry(id, true);
	if (e != NULL)
		result = ++e->count;
	pthread_mutex_unlock(&attempt_lock);
	return result;
}

/*
 * Count one more request for a payment id as in flight (arrived, not yet
 * completed) and return how many of its requests are in flight now,
 * this one included.  Thread-safe; pair each call with mock_id_leave().
 */
int64_t
mock_id_enter(const char *id)
{
	AttemptEntry *e;
	int64_t		result = 1;

	pthread_mutex_lock(&attempt_lock);
	e = attempt_entry(id, true);
	if (e != NULL)
		result = ++e->in_flight;
	pthread_mutex_unlock(&attempt_lock);
	return result;
}

/*
 * A request counted by mock_id_enter() has completed.  Requests that were
 * in flight when the counts were reset are no longer counted: nothing to
 * do for them.
 */
void
mock_id_leave(const char *id)
{
	AttemptEntry *e;

	pthread_mutex_lock(&attempt_lock);
	e = attempt_entry(id, false);
	if (e != NULL && e->in_flight > 0)
		e->in_flight--;
	pthread_mutex_unlock(&attempt_lock);
}

/*
 * Continue the attempt counts from a request log written by an earlier run
 * of a mock (lines "<time_us> <METHOD> <id> <attempt> [<body>]"): each id's
 * count becomes the highest attempt logged for it, so that a mock started
 * again mid-test goes on with its scripts where it stopped.  Lines without
 * an id ("-") or that do not parse are skipped; a missing file counts
 * nothing.  Ids are matched as logged, so an id with bytes outside
 * 0x21-0x7e does not continue.  Returns how many lines were used.
 */
long
mock_attempts_from_log(const char *path)
{
	FILE	   *f = fopen(path, "r");
	char	   *line = NULL;
	size_t		cap = 0;
	long		used = 0;

	if (f == NULL)
	{
		if (errno == ENOENT)
			return 0;
		mock_die("cannot read log file", path);
	}
	while (getline(&line, &cap, f) >= 0)
	{
		char	   *save = NULL;
		char	   *id;
		char	   *attempt_text;
		char	   *end;
		unsigned long long attempt;
		AttemptEntry *e;

		if (strtok_r(line, " \n", &save) == NULL ||
			strtok_r(NULL, " \n", &save) == NULL ||
			(id = strtok_r(NULL, " \n", &save)) == NULL ||
			(attempt_text = strtok_r(NULL, " \n", &save)) == NULL ||
			strcmp(id, "-") == 0)
			continue;
		errno = 0;
		attempt = strtoull(attempt_text, &end, 10);
		if (errno != 0 || *end != '\0' || attempt == 0)
			continue;

		pthread_mutex_lock(&attempt_lock);
		e = attempt_entry(id, true);
		if (e != NULL && e->count < attempt)
			e->count = attempt;
		pthread_mutex_unlock(&attempt_lock);
		used++;
	}
	free(line);
	fclose(f);
	return used;
}

/*
 * Forget all per-id attempt counts (and in-flight counts: requests in
 * flight now are no longer counted when they complete).
 */
void
mock_reset_attempts(void)
{
	size_t		i;

	pthread_mutex_lock(&attempt_lock);
	for (i = 0; i < attempt_nbuckets; i++)
	{
		AttemptEntry *e = attempt_buckets[i];

		while (e)
		{
			AttemptEntry *next = e->next;

			free(e);
			e = next;
		}
		attempt_buckets[i] = NULL;
	}
	attempt_count = 0;
	pthread_mutex_unlock(&attempt_lock);
}

/*
 * Take the body chunk MHD hands to an access handler, if this call brings
 * one: returns false if it does not (the request is complete), else true
 * with *ret what the handler returns.  At most max bytes are kept: past
 * that body->overflow is set, and with truncate the body keeps the first
 * max bytes, without it a chunk that does not fit is dropped whole.  A
 * NULL body discards the chunk.
 */
bool
mock_take_body(MockBody *body, const char *upload_data,
			   size_t *upload_data_size, size_t max, bool truncate,
			   enum MHD_Result *ret)
{
	size_t		len = *upload_data_size;

	if (len == 0)
		return false;
	*upload_data_size = 0;
	*ret = MHD_YES;
	if (body == NULL)
		return true;
	if (body->len + len > max)
	{
		body->overflow = true;
		if (!truncate)
			return true;
		len = max - body->len;
		if (len == 0)
			return true;
	}
	if (body->len + len + 1 > body->cap)
	{
		size_t		ncap = body->cap ? body->cap : 256;
		char	   *nb;

		while (ncap < body->len + len + 1)
			ncap *= 2;
		nb = realloc(body->data, ncap);
		if (nb == NULL)
		{
			*ret = MHD_NO;
			return true;
		}
		body->data = nb;
		body->cap = ncap;
	}
	memcpy(body->data + body->len, upload_data, len);
	body->len += len;
	body->data[body->len] = '\0';
	return true;
}

/*
 * Free a body's memory.
 */
void
mock_body_free(MockBody *body)
{
	free(body->data);
	body->data = NULL;
	body->len = body->cap = 0;
}

/*
 * The start of an MHD access handler that keeps a MockRequest in
 * *con_cls: the first call (headers only) makes the request unless
 * mock_request_from_uri() did, body chunks are taken (dropped whole past
 * max_body).  Returns the request once it is complete; NULL while the
 * handler must return *ret at once.
 */
MockRequest *
mock_request_begin(void **con_cls, const char *upload_data,
				   size_t *upload_data_size, size_t max_body,
				   enum MHD_Result *ret)
{
	MockRequest *req = *con_cls;

	*ret = MHD_YES;
	if (req == NULL)
	{
		req = calloc(1, sizeof(MockRequest));
		if (req == NULL)
		{
			*ret = MHD_NO;
			return NULL;
		}
		clock_gettime(CLOCK_REALTIME, &req->arrival);
		*con_cls = req;
	}
	if (!req->started)
	{
		req->started = true;
		return NULL;
	}
	if (mock_take_body(&req->body, upload_data, upload_data_size, max_body,
					   false, ret))
		return NULL;
	return req;
}

/*
 * MHD URI log callback: makes the request's MockRequest, keeping the
 * request target as sent (query string included).
 */
void *
mock_request_from_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	MockRequest *req = calloc(1, sizeof(MockRequest));

	(void) cls;
	(void) conn;
	if (req == NULL || (req->uri = strdup(uri)) == NULL)
		mock_die("out of memory", NULL);
	clock_gettime(CLOCK_REALTIME, &req->arrival);
	return req;
}

/*
 * MHD completion callback: frees the request's MockRequest.
 */
void
mock_request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
					   enum MHD_RequestTerminationCode toe)
{
	MockRequest *req = *con_cls;

	(void) cls;
	(void) conn;
	(void) toe;
	if (req)
	{
		free(req->uri);
		mock_body_free(&req->body);
		free(req);
	}
	*con_cls = NULL;
}

/*
 * MHD unescape callback that leaves the URL untouched.  MHD's default would
 * decode the whole path, turning an encoded "/" inside a payment id into a
 * segment separator; a mock decodes the id itself instead.
 */
size_t
mock_unescape_nothing(void *cls, struct MHD_Connection *conn, char *s)
{
	(void) cls;
	(void) conn;
	return strlen(s);
}

/*
 * A response with len bytes of body (mode as for
 * MHD_create_response_from_buffer) and a Content-Type unless content_type
 * is NULL.  NULL if it cannot be made.  With MHD_RESPMEM_MUST_FREE the
 * body is the response's, or freed here if there is none.
 */
struct MHD_Response *
mock_response(const char *body, size_t len, enum MHD_ResponseMemoryMode mode,
			  const char *content_type)
{
	struct MHD_Response *r;

	r = MHD_create_response_from_buffer(len, (void *) body, mode);
	if (r == NULL)
	{
		if (mode == MHD_RESPMEM_MUST_FREE)
			free((void *) body);
		return NULL;
	}
	if (content_type != NULL &&
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
								content_type) != MHD_YES)
	{
		MHD_destroy_response(r);
		return NULL;
	}
	return r;
}

/*
 * Queue response (NULL: fail the connection) with status and drop our
 * reference to it.
 */
enum MHD_Result
mock_queue(struct MHD_Connection *conn, unsigned int status,
		   struct MHD_Response *response)
{
	enum MHD_Result ret;

	if (response == NULL)
		return MHD_NO;
	ret = MHD_queue_response(conn, status, response);
	MHD_destroy_response(response);
	return ret;
}

/*
 * Queue a copy of text as the answer, with status and Content-Type.
 */
enum MHD_Result
mock_send(struct MHD_Connection *conn, unsigned int status, const char *text,
		  const char *content_type)
{
	return mock_queue(conn, status,
					  mock_response(text, strlen(text), MHD_RESPMEM_MUST_COPY,
									content_type));
}

/*
 * Ignore SIGPIPE and block SIGTERM and SIGINT, which mock_wait_for_stop()
 * collects.  Must run before any thread is started, so that every thread
 * inherits the mask.
 */
void
mock_block_stop_signals(void)
{
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
}

/*
 * Start the HTTP daemon on 127.0.0.1:port (0: any free port) with its own
 * polling thread, MHD's error log, the flags given and the options (an
 * MHD_OPTION_ARRAY list ending with MHD_OPTION_END, or NULL).  Dies if it
 * cannot start.
 */
struct MHD_Daemon *
mock_start_daemon(unsigned int flags, unsigned int port,
				  MHD_AccessHandlerCallback handler,
				  const struct MHD_OptionItem *options)
{
	static const struct MHD_OptionItem no_options[] = {
		{MHD_OPTION_END, 0, NULL}
	};
	static struct sockaddr_in sa;
	struct MHD_Daemon *daemon;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t) port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	daemon = MHD_start_daemon(flags | MHD_USE_INTERNAL_POLLING_THREAD |
							  MHD_USE_ERROR_LOG,
							  (uint16_t) port, NULL, NULL, handler, NULL,
							  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa,
							  MHD_OPTION_ARRAY,
							  (struct MHD_OptionItem *) (options ? options : no_options),
							  MHD_OPTION_END);
	if (daemon == NULL)
		mock_die("cannot start HTTP daemon", NULL);
	return daemon;
}

/*
 * Print "port=N" on stdout, flushed: the tests wait for it.
 */
void
mock_announce_port(struct MHD_Daemon *daemon)
{
	const union MHD_DaemonInfo *info;

	info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
	if (info == NULL || info->port == 0)
		mock_die("cannot determine listening port", NULL);
	printf("port=%u\n", (unsigned int) info->port);
	fflush(stdout);
}

/*
 * Wait for SIGTERM or SIGINT (blocked by mock_block_stop_signals()).
 */
void
mock_wait_for_stop(void)
{
	int			sig;

	while (sigwait(&stop_signals, &sig) != 0 ||
		   (sig != SIGTERM && sig != SIGINT))
		;
}

/*
 * The whole life of a simple mock: start the daemon as mock_start_daemon()
 * does, print "port=N", serve until SIGTERM or SIGINT, then stop the
 * daemon and close the log.
 */
void
mock_serve(unsigned int flags, unsigned int port,
		   MHD_AccessHandlerCallback handler,
		   const struct MHD_OptionItem *options)
{
	struct MHD_Daemon *daemon;

	mock_block_stop_signals();
	daemon = mock_start_daemon(flags, port, handler, options);
	mock_announce_port(daemon);
	mock_wait_for_stop();
	MHD_stop_daemon(daemon);
	mock_log_close();
}

/*
 * Load a PEM key file: a private key, or a public key.  Dies on failure.
 */
EVP_PKEY *
mock_load_key(const char *path, bool private_key)
{
	FILE	   *f = fopen(path, "r");
	EVP_PKEY   *key;

	if (f == NULL)
		mock_die("cannot open key file", path);
	key = private_key ? PEM_read_PrivateKey(f, NULL, NULL, NULL) :
		PEM_read_PUBKEY(f, NULL, NULL, NULL);
	fclose(f);
	if (key == NULL)
		mock_die("cannot read key", path);
	return key;
}

/*
 * A fresh 2048-bit RSA key nobody else knows, to sign answers with the
 * wrong key.  Dies on failure.
 */
EVP_PKEY *
mock_new_rsa_key(void)
{
	EVP_PKEY   *key = EVP_RSA_gen(2048);

	if (key == NULL)
		mock_die("cannot make an RSA key", NULL);
	return key;
}

/*
 * Decode len bytes of base64 (a multiple of 4, padding included) into out,
 * which has room for out_size bytes.  Returns the decoded length, or -1 if
 * b64 is not base64 or does not fit.
 */
int
mock_b64_decode(unsigned char *out, size_t out_size, const char *b64,
				size_t len)
{
	int			n;

	if (len == 0 || len % 4 != 0 || len / 4 * 3 > out_size)
		return -1;
	n = EVP_DecodeBlock(out, (const unsigned char *) b64, (int) len);
	if (n < 0)
		return -1;
	if (b64[len - 1] == '=')
		n--;
	if (b64[len - 2] == '=')
		n--;
	return n;
}

/*
 * SHA256withRSA signature of data by key, base64, malloc'd.  Dies on
 * failure.
 */
char *
mock_sign_b64(EVP_PKEY *key, const char *data, size_t len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char sig[1024];
	size_t		sig_len = sizeof(sig);
	char	   *b64;

	if (ctx == NULL ||
		EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1 ||
		EVP_DigestSign(ctx, sig, &sig_len, (const unsigned char *) data, len) != 1)
		mock_die("signing failed", NULL);
	EVP_MD_CTX_free(ctx);
	b64 = malloc(4 * ((sig_len + 2) / 3) + 1);
	if (b64 == NULL)
		mock_die("out of memory", NULL);
	EVP_EncodeBlock((unsigned char *) b64, sig, (int) sig_len);
	return b64;
}

/*
 * True if signature_b64 is key's SHA256withRSA signature of len bytes of
 * data, in base64.
 */
bool
mock_verify_b64(EVP_PKEY *key, const char *data, size_t len,
				const char *signature_b64)
{
	size_t		b64_len = strlen(signature_b64);
	size_t		sig_size = b64_len / 4 * 3 + 1;
	unsigned char *sig;
	int			n;
	EVP_MD_CTX *ctx;
	bool		ok;

	sig = malloc(sig_size);
	if (sig == NULL)
		mock_die("out of memory", NULL);
	n = mock_b64_decode(sig, sig_size, signature_b64, b64_len);
	if (n < 0)
	{
		free(sig);
		return false;
	}
	ctx = EVP_MD_CTX_new();
	ok = ctx != NULL &&
		EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
		EVP_DigestVerify(ctx, sig, (size_t) n, (const unsigned char *) data, len) == 1;
	EVP_MD_CTX_free(ctx);
	free(sig);
	return ok;
}
