/*
 * http.c
 *		The HTTP engine.  One libcurl multi handle per process, driven with
 *		the multi socket API: curl tells us which sockets it wants watched and
 *		when its next timeout is; we keep the sockets in an epoll set whose
 *		fd the caller waits on together with its latch, so that no wait here
 *		ever ignores an interrupt.  Connections are kept alive and reused per
 *		host by the multi handle's connection cache.
 *
 *		HTTPS: libcurl is given no CA file; the SSL_CTX it makes for a new
 *		connection gets the trust store and client certificate parsed once
 *		(src/tls.c: a channel's ca_cert when its channel is compiled, the
 *		system store once per process).  Each HttpTls has its own libcurl
 *		share of connections and TLS sessions, so that a connection or a
 *		session verified with one channel's trust is never used by a channel
 *		trusting something else; a new connection resumes the session of an
 *		earlier one.  HTTP/2 is asked for through ALPN, and a request waits
 *		for a connection that may multiplex (PIPEWAIT) rather than open its
 *		own.
 *
 *		Connections are opened progressively: each endpoint (host, port,
 *		proxy and TLS material) has a window of requests handed to libcurl
 *		at once, RAMP_INITIAL when it is cold, one more for each request
 *		answered.  A request past the window waits here, where its timeout
 *		does not run (libcurl's runs from the moment it is handed over), for
 *		at most its queue_ms.
 *
 *		This file never calls SPI and never throws from inside a libcurl
 *		callback: buffers filled by callbacks are malloc'd.  It knows
 *		nothing of paysync but the User-Agent it sends (version.h).
 */
#include "postgres.h"

#include <malloc.h>
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

/*
 * Requests handed to libcurl at once for an endpoint with no connection
 * open: the most new connections (and TLS handshakes) a burst opens at
 * once.  Each request answered widens the window by one, so it doubles
 * every round trip.
 */
#define RAMP_INITIAL 16

/*
 * HTTP/2: the streams paysync puts on one connection (libcurl's default
 * CURLMOPT_MAX_CONCURRENT_STREAMS; servers allow 100 to 250), and the most
 * connections it opens to one endpoint.  libcurl opens a new connection
 * for every request that finds the known ones full, so past each multiple
 * of H2_STREAMS one request alone (the opener) goes ahead and the others
 * wait here until its connection is up.
 */
#define H2_STREAMS 100
#define H2_MAX_CONNECTIONS 4

/* An endpoint idle this long is cold again (its connections likely closed). */
#define RAMP_IDLE_RESET_MS 30000

/* Buckets of the endpoint table. */
#define ENDPOINT_BUCKETS 256

/*
 * libcurl's upload buffer per transfer (its minimum; requests are a few
 * kB) and the worker's heap trim threshold: see http_engine_init.  256
 * transfers in flight hold 4 MB of upload buffers between them.
 */
#define UPLOAD_BUFFER_BYTES 16384L
#define HEAP_TRIM_THRESHOLD (8 * 1024 * 1024)

struct Endpoint;

/* A channel's TLS material, with the connections and sessions made with it. */
struct HttpTls
{
	TlsMaterial *material;		/* NULL: the system store, no client cert */
	CURLSH	   *share;			/* connections, TLS sessions, DNS; made at
								 * first use */
	uint64		id;				/* tells endpoints of different material
								 * apart */
};

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
	struct Endpoint *endpoint;	/* where it goes */
	bool		waiting;		/* queued here, not yet handed to libcurl */
	bool		opener;			/* may open its endpoint's next HTTP/2
								 * connection */
	long		queue_ms;		/* how long it may wait */
	int64		queue_deadline_ms;	/* when waiting, fails past this */
	CURLcode	result;
	char		errbuf[CURL_ERROR_SIZE];
	struct Transfer *next;		/* in the done, free or waiting list */
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

/* Where requests go: their window and those waiting for it. */
typedef struct Endpoint
{
	char	   *key;			/* tls id, proxy and scheme://host:port */
	uint32		hash;
	int			in_curl;		/* its requests handed to libcurl */
	int			window;			/* the most at once */
	int64		idle_since_ms;	/* when in_curl last fell to 0 */
	bool		multiplexed;	/* it answered over HTTP/2 */
	int			h2_capacity;	/* then: streams on the connections open */
	bool		opener_out;		/* an opener is in flight */
	Transfer   *wait_head;		/* waiting for the window, oldest first */
	Transfer   *wait_tail;
	struct Endpoint *next;		/* in its bucket */
} Endpoint;

static Endpoint *endpoints[ENDPOINT_BUCKETS];
static int	transfers_waiting = 0;	/* in all endpoints' waiting lists */

/* The system store: loaded at the first HTTPS request of the process. */
static HttpTls system_tls;
static bool system_tls_loaded = false;
static uint64 next_tls_id = 1;

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

/*
 * libcurl made the SSL_CTX of a new connection: it gets the trust store
 * and client certificate of the request's material, shared, not parsed
 * again.  A channel without ca_cert trusts the system store.
 */
static CURLcode
ssl_ctx_callback(CURL *easy, void *ssl_ctx, void *userp)
{
	const HttpTls *tls = (const HttpTls *) userp;
	const TlsMaterial *trust = tls_has_trust(tls->material) ?
		tls->material : system_tls.material;

	(void) easy;
	if (!tls_apply(ssl_ctx, trust, tls->material))
		return CURLE_SSL_CERTPROBLEM;
	return CURLE_OK;
}

/*
 * Loads the system trust store, once per process until a reload: the file
 * SSL_CERT_FILE names in the server's environment (OpenSSL's variable for
 * its default file) if set, else the CA bundle libcurl was built to use
 * (Debian: /etc/ssl/certs/ca-certificates.crt), else OpenSSL's default
 * file.  If it cannot be read, HTTPS to channels without ca_cert fails as
 * untrusted, and a WARNING says why.
 */
static void
load_system_trust(void)
{
	const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
	const char *path = getenv("SSL_CERT_FILE");
	char		error[200];
	int			n;

	if (path == NULL || path[0] == '\0')
		path = info->cainfo;
	system_tls_loaded = true;
	system_tls.id = next_tls_id++;
	system_tls.material = tls_material_new();
	if (system_tls.material == NULL)
		return;
	n = tls_trust_from_file(system_tls.material, path, error, sizeof(error));
	if (n < 0)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("paysync could not load the system trust store: %s", error),
				 errhint("HTTPS to channels without a ca_cert option fails until it can be read; install ca-certificates.")));
	else
		elog(DEBUG1, "paysync: system trust store loaded: %d certificates from %s",
			 n, path ? path : "OpenSSL's default file");
}

/*
 * Reads the system trust store again if it was loaded (after a
 * configuration reload), so that a CA added to or taken from it counts for
 * new connections without a restart.  Connections already open stay: each
 * SSL_CTX holds its own reference to the store it was made with.
 */
void
http_reload_system_trust(void)
{
	if (!system_tls_loaded)
		return;
	tls_material_free(system_tls.material);
	system_tls.material = NULL;
	load_system_trust();
}

/*
 * The TLS material of a channel for the engine, taking ownership of
 * material (NULL: the system store and no client certificate).
 */
HttpTls *
http_tls_new(TlsMaterial *material)
{
	HttpTls    *tls = calloc(1, sizeof(HttpTls));

	if (tls == NULL)
	{
		tls_material_free(material);
		return NULL;
	}
	tls->material = material;
	tls->id = ++next_tls_id;
	return tls;
}

/*
 * Frees a channel's TLS material, closing its connections.  No request
 * made with it may still be in flight (the checker's compiled channel
 * lives until its last one is over).
 */
void
http_tls_free(HttpTls *tls)
{
	if (tls == NULL)
		return;
	if (tls->share != NULL &&
		curl_share_cleanup(tls->share) != CURLSHE_OK)
		elog(LOG, "paysync: a TLS connection share was still in use when its channel was freed");
	tls_material_free(tls->material);
	free(tls);
}

/*
 * The share of a channel's connections, TLS sessions and host names,
 * made at its first HTTPS request; NULL if out of memory.
 */
static CURLSH *
tls_share(HttpTls *tls)
{
	if (tls->share == NULL)
	{
		CURLSH	   *share = curl_share_init();

		if (share == NULL)
			return NULL;
		if (curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK ||
			curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
			curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK)
		{
			curl_share_cleanup(share);
			return NULL;
		}
		tls->share = share;
	}
	return tls->share;
}

/* The endpoint of a request (made on first use). */
static Endpoint *
endpoint_of(const HttpRequest *request, uint64 tls_id)
{
	const char *url = request->url;
	const char *authority = strstr(url, "://");
	size_t		len;
	char	   *key;
	uint32		hash = 2166136261u;
	Endpoint   *ep;
	int			keylen;

	authority = authority ? authority + 3 : url;
	len = strcspn(authority, "/?#");
	len += authority - url;
	keylen = snprintf(NULL, 0, "%llu|%s|%.*s", (unsigned long long) tls_id,
					  request->proxy ? request->proxy : "", (int) len, url);
	key = malloc(keylen + 1);
	if (key == NULL)
		return NULL;
	snprintf(key, keylen + 1, "%llu|%s|%.*s", (unsigned long long) tls_id,
			 request->proxy ? request->proxy : "", (int) len, url);
	for (const char *p = key; *p; p++)
		hash = (hash ^ (unsigned char) *p) * 16777619u;
	for (ep = endpoints[hash % ENDPOINT_BUCKETS]; ep; ep = ep->next)
		if (ep->hash == hash && strcmp(ep->key, key) == 0)
		{
			free(key);
			return ep;
		}
	ep = calloc(1, sizeof(Endpoint));
	if (ep == NULL)
	{
		free(key);
		return NULL;
	}
	ep->key = key;
	ep->hash = hash;
	ep->window = RAMP_INITIAL;
	ep->idle_since_ms = monotonic_ms();
	ep->next = endpoints[hash % ENDPOINT_BUCKETS];
	endpoints[hash % ENDPOINT_BUCKETS] = ep;
	return ep;
}

/*
 * May one more request of ep go to libcurl now?  Within its window, and
 * over HTTP/2 within the streams of its connections, or as the one opener
 * of the next connection.  Sets t->opener for the latter.
 */
static bool
endpoint_has_room(Endpoint *ep, Transfer *t)
{
	t->opener = false;
	if (ep->in_curl >= ep->window)
		return false;
	if (!ep->multiplexed || ep->in_curl < ep->h2_capacity)
		return true;
	if (ep->opener_out || ep->h2_capacity >= H2_STREAMS * H2_MAX_CONNECTIONS)
		return false;
	t->opener = true;
	ep->opener_out = true;
	return true;
}

/*
 * Creates the multi handle and the epoll set, once per process (the
 * worker's).
 *
 * And keeps freed heap memory: libcurl 7.88 copies every request it sends
 * over TLS into an upload buffer (64 kB by default) that it allocates for
 * the transfer and frees when it ends.  Freeing a chunk that large makes
 * glibc give the top of the heap back to the kernel, and the next request
 * takes it again, page faults and all: with 256 connections that was most
 * of what a check over HTTPS cost more than one over plain HTTP (issue 18).
 * A smaller buffer (UPLOAD_BUFFER_BYTES, what libcurl allows at least) and
 * a trim threshold above what the transfers in flight hold between them
 * keep the heap where it is.
 */
void
http_engine_init(void)
{
	if (multi != NULL)
		return;
	mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD);
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
	t->endpoint = NULL;
	t->waiting = false;
	t->opener = false;
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
	/* no longer holding a channel's share: it may be freed */
	curl_easy_setopt(t->easy, CURLOPT_SHARE, NULL);
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
	bool		https = pg_strncasecmp(request->url, "https:", 6) == 0;
	HttpTls    *tls = NULL;
	CURLSH	   *share = NULL;
	Endpoint   *endpoint;

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

	if (https)
	{
		tls = request->tls ? (HttpTls *) request->tls : &system_tls;
		/* the system store: parsed at the first request that trusts it */
		if (!system_tls_loaded && !tls_has_trust(tls->material))
			load_system_trust();
		share = tls_share(tls);
		if (share == NULL)
		{
			transfer_put(t);
			snprintf(error, errlen, "out of memory starting a request");
			return false;
		}
	}
	endpoint = endpoint_of(request, https ? tls->id : 0);
	if (endpoint == NULL)
	{
		transfer_put(t);
		snprintf(error, errlen, "out of memory starting a request");
		return false;
	}

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
	/* see http_engine_init: libcurl's smallest upload buffer */
	curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, UPLOAD_BUFFER_BYTES);
	if (request->post)
	{
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, request->body ? request->body : "");
	}

	if (https)
	{
		/*
		 * No CA file for libcurl to parse: ssl_ctx_callback sets the store.
		 * Nor libcurl's own CA cache: it keeps one store per multi handle,
		 * and libcurl 7.87 to 8.2 put it on the SSL_CTX after the callback,
		 * so the first channel's store would be every channel's.
		 */
		curl_easy_setopt(e, CURLOPT_CAINFO, NULL);
		curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
		curl_easy_setopt(e, CURLOPT_CA_CACHE_TIMEOUT, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_callback);
		curl_easy_setopt(e, CURLOPT_SSL_CTX_DATA, tls);
		curl_easy_setopt(e, CURLOPT_SHARE, share);
		curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
		curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	}
	else
		curl_easy_setopt(e, CURLOPT_SHARE, NULL);

	t->endpoint = endpoint;
	if (endpoint->in_curl == 0 && endpoint->wait_head == NULL &&
		monotonic_ms() - endpoint->idle_since_ms > RAMP_IDLE_RESET_MS)
	{
		endpoint->window = RAMP_INITIAL;
		endpoint->multiplexed = false;
	}
	if (endpoint->wait_head != NULL || !endpoint_has_room(endpoint, t))
	{
		/* past the window: waits here, its timeout not running */
		t->waiting = true;
		t->queue_ms = request->queue_ms > 0 ? request->queue_ms : request->timeout_ms;
		t->queue_deadline_ms = monotonic_ms() + t->queue_ms;
		t->next = NULL;
		if (endpoint->wait_tail)
			endpoint->wait_tail->next = t;
		else
			endpoint->wait_head = t;
		endpoint->wait_tail = t;
		transfers_waiting++;
		return true;
	}
	mc = curl_multi_add_handle(multi, e);
	if (mc != CURLM_OK)
	{
		transfer_put(t);
		snprintf(error, errlen, "could not start request: %s", curl_multi_strerror(mc));
		return false;
	}
	endpoint->in_curl++;
	transfers_running++;
	active_link(t);
	return true;
}

/* Puts t, which never reached libcurl, in the done list with message. */
static void
transfer_fail_unsent(Transfer *t, CURLcode code, const char *message)
{
	t->result = code;
	strlcpy(t->errbuf, message, sizeof(t->errbuf));
	t->next = NULL;
	if (done_tail)
		done_tail->next = t;
	else
		done_head = t;
	done_tail = t;
}

/*
 * Hands an endpoint's waiting requests to libcurl while its window has
 * room.
 */
static void
endpoint_admit(Endpoint *ep)
{
	while (ep->wait_head != NULL && endpoint_has_room(ep, ep->wait_head))
	{
		Transfer   *t = ep->wait_head;
		CURLMcode	mc;

		ep->wait_head = t->next;
		if (ep->wait_head == NULL)
			ep->wait_tail = NULL;
		t->next = NULL;
		t->waiting = false;
		transfers_waiting--;
		mc = curl_multi_add_handle(multi, t->easy);
		if (mc != CURLM_OK)
		{
			char		message[CURL_ERROR_SIZE];

			snprintf(message, sizeof(message), "could not start request: %s",
					 curl_multi_strerror(mc));
			transfer_fail_unsent(t, CURLE_FAILED_INIT, message);
			continue;
		}
		ep->in_curl++;
		transfers_running++;
		active_link(t);
	}
}

/*
 * Fails the waiting requests whose queue_ms ran out; returns the earliest
 * deadline of those left (-1: none).
 */
static int64
expire_waiting(int64 now)
{
	int64		earliest = -1;

	if (transfers_waiting == 0)
		return -1;
	for (int b = 0; b < ENDPOINT_BUCKETS; b++)
		for (Endpoint *ep = endpoints[b]; ep; ep = ep->next)
		{
			Transfer   *prev = NULL;
			Transfer   *t = ep->wait_head;

			while (t != NULL)
			{
				Transfer   *next = t->next;

				if (t->queue_deadline_ms <= now)
				{
					char		message[CURL_ERROR_SIZE];

					if (prev)
						prev->next = next;
					else
						ep->wait_head = next;
					if (ep->wait_tail == t)
						ep->wait_tail = prev;
					t->waiting = false;
					transfers_waiting--;
					snprintf(message, sizeof(message),
							 "no connection to the channel became free within %ld ms (%d requests in flight to it)",
							 t->queue_ms, ep->in_curl);
					transfer_fail_unsent(t, CURLE_COULDNT_CONNECT, message);
				}
				else
				{
					if (earliest < 0 || t->queue_deadline_ms < earliest)
						earliest = t->queue_deadline_ms;
					prev = t;
				}
				t = next;
			}
		}
	return earliest;
}

/* Milliseconds until libcurl needs a call without socket activity; -1: none. */
long
http_timeout_ms(void)
{
	int64		left;

	int64		deadline = timer_deadline_ms;
	int64		waiting = expire_waiting(monotonic_ms());

	/* a request waiting for a connection fails at its deadline */
	if (done_head != NULL)
		return 0;
	if (waiting >= 0 && (deadline < 0 || waiting < deadline))
		deadline = waiting;
	if (deadline < 0)
		return -1;
	left = deadline - monotonic_ms();
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
		if (t->endpoint)
		{
			Endpoint   *ep = t->endpoint;

			long		version = 0;
			long		connects = 0;

			Assert(ep->in_curl > 0);
			ep->in_curl--;
			curl_easy_getinfo(t->easy, CURLINFO_HTTP_VERSION, &version);
			if (t->result == CURLE_OK && version == CURL_HTTP_VERSION_2_0 &&
				!ep->multiplexed)
			{
				ep->multiplexed = true;
				ep->h2_capacity = H2_STREAMS;
				ep->opener_out = false;
			}
			if (t->opener)
			{
				/* its connection is up (or it found a free stream) */
				ep->opener_out = false;
				curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &connects);
				if (t->result == CURLE_OK && connects > 0)
					ep->h2_capacity += H2_STREAMS;
			}
			/* an answer: one more at once (doubling every round trip) */
			if (t->result == CURLE_OK && ep->window < 1000000)
				ep->window++;
			if (ep->in_curl == 0)
				ep->idle_since_ms = monotonic_ms();
			endpoint_admit(ep);
		}
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
	(void) expire_waiting(monotonic_ms());
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

/* Does text (libcurl's error for a transfer) hold any of words? */
static bool
error_says(const char *text, const char *const *words)
{
	for (int i = 0; words[i]; i++)
		if (strstr(text, words[i]) != NULL)
			return true;
	return false;
}

/*
 * If t failed in TLS, writes what went wrong into error, the problem
 * first (certificate not trusted, expired, not naming the host, client
 * certificate refused, no TLS on the port, no protocol in common), then
 * libcurl's words, which hold neither a header nor key material.
 */
static bool
tls_failure(const Transfer *t, char *error, size_t errlen)
{
	static const char *const plain_http[] = {
		"wrong version number", "packet length too long", "http request", NULL
	};
	static const char *const client_refused[] = {
		"alert certificate required", "alert bad certificate",
		"alert unknown ca", "alert certificate unknown",
		"alert certificate revoked", "alert certificate expired",
		"alert unsupported certificate", "alert access denied", NULL
	};
	static const char *const host_mismatch[] = {
		"target host name", "does not match target host", "hostname mismatch",
		"IP address mismatch", NULL
	};
	static const char *const no_common[] = {
		"alert protocol version", "unsupported protocol", "no protocols available",
		"no shared cipher", "alert handshake failure", "no suitable", NULL
	};
	const char *said = t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result);
	const char *problem = NULL;
	char		detail[CURL_ERROR_SIZE];
	long		verify = 0;

	switch (t->result)
	{
		case CURLE_PEER_FAILED_VERIFICATION:
			curl_easy_getinfo(t->easy, CURLINFO_SSL_VERIFYRESULT, &verify);
			/* libcurl checks the host name itself, after OpenSSL */
			if (error_says(said, host_mismatch))
			{
				problem = "the channel's certificate does not name its host";
				break;
			}
			switch (verify == 0 ? TLS_VERIFY_OTHER : tls_verify_class(verify))
			{
				case TLS_VERIFY_EXPIRED:
					problem = "the channel's certificate has expired";
					break;
				case TLS_VERIFY_NOT_YET_VALID:
					problem = "the channel's certificate is not valid yet";
					break;
				case TLS_VERIFY_UNTRUSTED:
					problem = "the channel's certificate is not trusted (not issued by its ca_cert or the system store)";
					break;
				case TLS_VERIFY_OTHER:
					problem = verify == 0 ?
						"the channel's certificate does not name its host" :
						"the channel's certificate does not verify";
					break;
			}
			break;
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_RECV_ERROR:
		case CURLE_SEND_ERROR:
			if (error_says(said, plain_http))
				problem = "the channel does not speak TLS on this port (plain HTTP?)";
			else if (error_says(said, client_refused))
				problem = "the channel refused the client certificate";
			else if (error_says(said, no_common))
				problem = "no TLS version or cipher in common with the channel";
			else if (t->result == CURLE_SSL_CONNECT_ERROR)
				problem = "TLS handshake failed";
			break;
		case CURLE_SSL_CERTPROBLEM:
			problem = "the client certificate could not be used";
			break;
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_ENGINE_INITFAILED:
			problem = "TLS could not be set up";
			break;
		default:
			break;
	}
	if (problem == NULL)
		return false;
	snprintf(detail, sizeof(detail), "TLS: %s: %s", problem, said);
	/* cut on a character boundary */
	copy_clipped(error, errlen, detail);
	return true;
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
	else if (tls_failure(t, result->error, sizeof(result->error)))
		 /* named */ ;
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
	for (int b = 0; b < ENDPOINT_BUCKETS; b++)
		for (Endpoint *ep = endpoints[b]; ep; ep = ep->next)
		{
			while (ep->wait_head)
			{
				Transfer   *t = ep->wait_head;

				ep->wait_head = t->next;
				transfer_put(t);
			}
			ep->wait_tail = NULL;
			ep->in_curl = 0;
		}
	transfers_waiting = 0;
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
