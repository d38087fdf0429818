/*
 * http.c
 *		The HTTP engine.  One libcurl multi handle per process, driven with
 *		the multi socket API: curl tells us which sockets it wants watched and
 *		when its next timeout is; we keep the sockets in an epoll set whose
 *		fd the caller waits on together with its latch, so that no wait here
 *		ever ignores an interrupt.  Connections are kept alive and reused per
 *		host by the multi handle's connection cache.
 *
 *		This file never calls SPI and never throws from inside a libcurl
 *		callback: buffers filled by callbacks are malloc'd.  It knows
 *		nothing of paysync but the User-Agent it sends (version.h).
 */
#include "postgres.h"

#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "mb/pg_wchar.h"

#include "http.h"
#include "version.h"

/*
 * Most bytes of response header lines kept for one response; a response
 * with more is an error ("response header too large").  libcurl itself
 * refuses a single header line over 100 kB (CURL_MAX_HTTP_HEADER).
 */
#define HTTP_MAX_HEADER_BYTES (64 * 1024)

/* One request on its way, or a finished one waiting to be collected. */
typedef struct Transfer
{
	CURL	   *easy;
	void	   *tag;
	struct curl_slist *headers;
	char	   *body;
	size_t		body_len;
	size_t		body_cap;
	char	   *headers_raw;	/* response header lines of the last response */
	size_t		headers_len;
	bool		in_headers;		/* a status line came, its blank line not yet */
	bool		too_large;		/* the body passed max_response_bytes */
	bool		header_too_large;	/* headers passed HTTP_MAX_HEADER_BYTES */
	long		timeout_ms;
	CURLcode	result;
	char		errbuf[CURL_ERROR_SIZE];
	struct Transfer *next;		/* in the done list or the free list */
	struct Transfer *active_prev;	/* in the list of requests in flight */
	struct Transfer *active_next;
} Transfer;

static CURLM *multi = NULL;
static int	epoll_fd = -1;
static int	transfers_running = 0;	/* added to the multi handle */
static int64 timer_deadline_ms = -1;	/* curl's next timeout, monotonic ms */
static size_t max_response_bytes = 1024 * 1024;

static Transfer *done_head = NULL;
static Transfer *done_tail = NULL;
static Transfer *free_transfers = NULL;
static Transfer *active_head = NULL;

/* Links t into the list of requests in flight. */
static void
active_link(Transfer *t)
{
	t->active_prev = NULL;
	t->active_next = active_head;
	if (active_head)
		active_head->active_prev = t;
	active_head = t;
}

/* Unlinks t from the list of requests in flight. */
static void
active_unlink(Transfer *t)
{
	if (t->active_prev)
		t->active_prev->active_next = t->active_next;
	else
		active_head = t->active_next;
	if (t->active_next)
		t->active_next->active_prev = t->active_prev;
	t->active_prev = t->active_next = NULL;
}

/* Monotonic clock in milliseconds. */
static int64
monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* libcurl wants socket s watched for 'what' (or no longer watched). */
static int
socket_callback(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	Assert(epoll_fd >= 0 && multi != NULL);
	if (what == CURL_POLL_REMOVE)
	{
		epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s, NULL);
		curl_multi_assign(multi, s, NULL);
		return 0;
	}

	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
	if (what & CURL_POLL_IN)
		ev.events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev.events |= EPOLLOUT;

	if (socketp == NULL)
	{
		if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s, &ev) != 0 && errno == EEXIST)
			epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s, &ev);
		curl_multi_assign(multi, s, (void *) 1);
	}
	else
		epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s, &ev);
	return 0;
}

/* libcurl wants to be called back after timeout_ms (-1: no timer). */
static int
timer_callback(CURLM *m, long timeout_ms, void *userp)
{
	Assert(m == multi);
	timer_deadline_ms = timeout_ms < 0 ? -1 : monotonic_ms() + timeout_ms;
	return 0;
}

/* Appends response bytes; refuses (ending the transfer) past the size cap. */
static size_t
write_callback(char *data, size_t size, size_t nmemb, void *userp)
{
	Transfer   *t = (Transfer *) userp;
	size_t		n = size * nmemb;

	Assert(t->body_len <= t->body_cap);
	if (t->body_len + n > max_response_bytes)
	{
		t->too_large = true;
		return 0;
	}
	if (t->body_len + n + 1 > t->body_cap)
	{
		size_t		cap = Max(t->body_cap * 2, t->body_len + n + 1);
		char	   *grown;

		cap = Max(cap, 1024);
		grown = realloc(t->body, cap);
		if (grown == NULL)
			return 0;
		t->body = grown;
		t->body_cap = cap;
	}
	memcpy(t->body + t->body_len, data, n);
	t->body_len += n;
	t->body[t->body_len] = '\0';
	return n;
}

/*
 * Keeps the response's header lines ("Name: value\r\n"); a new status line
 * (after a 100 Continue, say) starts over.  More than HTTP_MAX_HEADER_BYTES
 * of them end the transfer as "response header too large".
 */
static size_t
header_callback(char *data, size_t size, size_t nitems, void *userp)
{
	Transfer   *t = (Transfer *) userp;
	size_t		n = size * nitems;
	char	   *grown;

	Assert(t != NULL && t->easy != NULL);
	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
	{
		t->headers_len = 0;
		t->in_headers = true;
	}
	else if ((n == 2 && data[0] == '\r' && data[1] == '\n') ||
			 (n == 1 && data[0] == '\n'))
		t->in_headers = false;
	if (t->headers_len + n > HTTP_MAX_HEADER_BYTES)
	{
		t->header_too_large = true;
		return 0;
	}
	grown = realloc(t->headers_raw, t->headers_len + n + 1);
	if (grown == NULL)
		return 0;
	t->headers_raw = grown;
	memcpy(t->headers_raw + t->headers_len, data, n);
	t->headers_len += n;
	t->headers_raw[t->headers_len] = '\0';
	return n;
}

/* Creates the multi handle and the epoll set, once per process. */
void
http_engine_init(void)
{
	if (multi != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "paysync: could not initialise libcurl");
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (epoll_fd < 0)
		elog(ERROR, "paysync: epoll_create1 failed: %m");
	multi = curl_multi_init();
	if (multi == NULL)
		elog(ERROR, "paysync: could not create a libcurl multi handle");
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_callback);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_callback);
}

/* The fd to wait on (readable when a request has progress to make). */
int
http_engine_fd(void)
{
	return epoll_fd;
}

/* Applies the current settings: connection cache size and response cap. */
void
http_engine_configure(int max_connections, size_t max_response)
{
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) Max(max_connections, 8));
	max_response_bytes = max_response;
}

/* Takes a transfer from the free list, or makes one. */
static Transfer *
transfer_get(void)
{
	Transfer   *t = free_transfers;

	if (t != NULL)
	{
		free_transfers = t->next;
		curl_easy_reset(t->easy);
	}
	else
	{
		t = calloc(1, sizeof(Transfer));
		if (t == NULL)
			return NULL;
		t->easy = curl_easy_init();
		if (t->easy == NULL)
		{
			free(t);
			return NULL;
		}
	}
	t->tag = NULL;
	t->headers = NULL;
	t->body = NULL;
	t->body_len = t->body_cap = 0;
	t->headers_raw = NULL;
	t->headers_len = 0;
	t->in_headers = false;
	t->too_large = false;
	t->header_too_large = false;
	t->result = CURLE_OK;
	t->errbuf[0] = '\0';
	t->next = NULL;
	return t;
}

/* Returns a transfer's resources and keeps its easy handle for reuse. */
static void
transfer_put(Transfer *t)
{
	curl_slist_free_all(t->headers);
	t->headers = NULL;
	free(t->body);
	t->body = NULL;
	free(t->headers_raw);
	t->headers_raw = NULL;
	t->next = free_transfers;
	free_transfers = t;
}

/*
 * Starts a request; the result comes back from http_next_done with tag.
 * Returns false, with a message, if it could not even be started.
 */
bool
http_submit(const HttpRequest *request, void *tag, char *error, size_t errlen)
{
	Transfer   *t = transfer_get();
	CURL	   *e;
	CURLMcode	mc;

	Assert(multi != NULL);
	Assert(request->n_headers == 0 || request->headers != NULL);
	if (t == NULL)
	{
		snprintf(error, errlen, "out of memory starting a request");
		return false;
	}
	e = t->easy;
	t->tag = tag;
	t->timeout_ms = request->timeout_ms;

	for (int i = 0; i < request->n_headers; i++)
	{
		struct curl_slist *grown = curl_slist_append(t->headers, request->headers[i]);

		if (grown == NULL)
		{
			transfer_put(t);
			snprintf(error, errlen, "out of memory building headers");
			return false;
		}
		t->headers = grown;
	}
	/* no "Expect: 100-continue" round trip before a POST body */
	if (request->post)
		t->headers = curl_slist_append(t->headers, "Expect:");

	curl_easy_setopt(e, CURLOPT_URL, request->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, request->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, Min(request->timeout_ms, 5000L));
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, PAYSYNC_USER_AGENT);
	/* "" disables proxies, http_proxy and friends of the environment too */
	curl_easy_setopt(e, CURLOPT_PROXY, request->proxy ? request->proxy : "");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_callback);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_callback);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) max_response_bytes);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	if (request->post)
	{
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, request->body ? request->body : "");
	}

	mc = curl_multi_add_handle(multi, e);
	if (mc != CURLM_OK)
	{
		transfer_put(t);
		snprintf(error, errlen, "could not start request: %s", curl_multi_strerror(mc));
		return false;
	}
	transfers_running++;
	active_link(t);
	return true;
}

/* Milliseconds until libcurl needs a call without socket activity; -1: none. */
long
http_timeout_ms(void)
{
	int64		left;

	if (timer_deadline_ms < 0)
		return -1;
	left = timer_deadline_ms - monotonic_ms();
	return left < 0 ? 0 : (long) left;
}

/* Moves finished transfers from the multi handle to the done list. */
static void
collect_finished(void)
{
	CURLMsg    *msg;
	int			queued;

	while ((msg = curl_multi_info_read(multi, &queued)) != NULL)
	{
		Transfer   *t;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &t);
		Assert(t != NULL && t->easy == msg->easy_handle);
		Assert(transfers_running > 0);
		t->result = msg->data.result;
		curl_multi_remove_handle(multi, msg->easy_handle);
		transfers_running--;
		active_unlink(t);
		t->next = NULL;
		if (done_tail)
			done_tail->next = t;
		else
			done_head = t;
		done_tail = t;
	}
}

/*
 * Makes progress on every request without blocking: the sockets epoll
 * reports ready, then curl's timer if it is due.
 */
void
http_perform(void)
{
	struct epoll_event events[64];
	int			n;
	int			running;

	do
	{
		n = epoll_wait(epoll_fd, events, lengthof(events), 0);
		for (int i = 0; i < n; i++)
		{
			int			flags = 0;

			if (events[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (events[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (events[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(multi, events[i].data.fd, flags, &running);
		}
	} while (n == lengthof(events));

	if (timer_deadline_ms >= 0 && monotonic_ms() >= timer_deadline_ms)
	{
		timer_deadline_ms = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	collect_finished();
}

/* Copies text into dest (size bytes), cut on a character boundary. */
static void
copy_clipped(char *dest, size_t size, const char *text)
{
	int			len = pg_mbcliplen(text, strlen(text), size - 1);

	memcpy(dest, text, len);
	dest[len] = '\0';
}

/*
 * True if the failed transfer t was refused for its response header: past
 * our own limit, or past libcurl's limit on one header line, which libcurl
 * 7.x reports as running out of memory (8.6 and later: CURLE_TOO_LARGE),
 * while header lines were coming in.
 */
static bool
header_refused(const Transfer *t)
{
	if (t->header_too_large)
		return true;
	if (!t->in_headers)
		return false;
#if LIBCURL_VERSION_NUM >= 0x080600
	if (t->result == CURLE_TOO_LARGE)
		return true;
#endif
	return t->result == CURLE_OUT_OF_MEMORY;
}

/*
 * Takes the next finished request.  The caller owns result->body and frees
 * it with http_result_free.
 */
bool
http_next_done(void **tag, HttpResult *result)
{
	Transfer   *t = done_head;
	curl_off_t	retry_after = 0;
	curl_off_t	total_us = 0;

	if (t == NULL)
	{
		Assert(done_tail == NULL);
		return false;
	}
	Assert(done_tail != NULL && t->easy != NULL);
	Assert(t->active_prev == NULL && t->active_next == NULL);
	done_head = t->next;
	if (done_head == NULL)
		done_tail = NULL;

	memset(result, 0, sizeof(*result));
	*tag = t->tag;
	result->retry_after_s = -1;
	curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME_T, &total_us);
	result->elapsed_ms = total_us / 1000.0;

	if (t->result == CURLE_OK)
	{
		Assert(!t->too_large && !t->header_too_large);
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &result->status);
		if (curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &retry_after) == CURLE_OK &&
			retry_after > 0)
			result->retry_after_s = (long) retry_after;
		result->body = t->body ? t->body : strdup("");
		result->body_len = t->body_len;
		t->body = NULL;
		result->headers = t->headers_raw;
		t->headers_raw = NULL;
	}
	else if (header_refused(t))
		snprintf(result->error, sizeof(result->error),
				 "response header too large (more than %d bytes)",
				 HTTP_MAX_HEADER_BYTES);
	else if (t->too_large || t->result == CURLE_FILESIZE_EXCEEDED)
		snprintf(result->error, sizeof(result->error),
				 "response larger than paysync.max_response_size (%zu bytes)",
				 max_response_bytes);
	else if (t->result == CURLE_OPERATION_TIMEDOUT)
		snprintf(result->error, sizeof(result->error),
				 "timeout after %ld ms", t->timeout_ms);
	else
		copy_clipped(result->error, sizeof(result->error),
					 t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result));

	transfer_put(t);
	return true;
}

/* Drops every request, in flight or finished (after an ERROR). */
void
http_cancel_all(void)
{
	if (multi == NULL)
		return;
	while (active_head)
	{
		Transfer   *t = active_head;

		active_unlink(t);
		curl_multi_remove_handle(multi, t->easy);
		transfer_put(t);
	}
	transfers_running = 0;
	while (done_head)
	{
		Transfer   *t = done_head;

		done_head = t->next;
		transfer_put(t);
	}
	done_tail = NULL;
}

/* Frees what http_next_done handed over. */
void
http_result_free(HttpResult *result)
{
	free(result->body);
	result->body = NULL;
	free(result->headers);
	result->headers = NULL;
}
