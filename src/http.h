/*
 * http.h
 *		The HTTP engine: many requests in flight on one libcurl multi handle,
 *		driven by an epoll set that the caller waits on with its latch;
 *		HTTPS with trust parsed once, connections and sessions kept per
 *		channel's TLS material, HTTP/2 where offered.
 *		No SPI, no palloc in callbacks: memory here is malloc'd.
 */
#ifndef PAYSYNC_HTTP_H
#define PAYSYNC_HTTP_H

#include <stddef.h>
#include <stdbool.h>

#include "tls.h"

/*
 * A channel's TLS material as the engine uses it: the trust store and
 * client certificate (parsed once), and the connections and TLS sessions
 * made with them, kept apart from every other channel's.
 */
typedef struct HttpTls HttpTls;

/* One request, as a driver builds it.  The engine copies what it keeps. */
typedef struct HttpRequest
{
	const char *url;
	bool		post;
	const char *body;			/* POST body, or NULL */
	const char *const *headers; /* "Name: value" lines; values may be secret */
	int			n_headers;
	long		timeout_ms;		/* total time for the request */
	const char *proxy;			/* proxy URL, or NULL: none (never one
								 * from the environment) */
	const HttpTls *tls;			/* the channel's ca_cert and client
								 * certificate, or NULL: the system store */
	long		queue_ms;		/* most it may wait for a connection before
								 * it is sent (timeout_ms does not run
								 * meanwhile); 0: timeout_ms */
} HttpRequest;

/* What came back.  body is malloc'd and NUL-terminated; see http_result_free. */
typedef struct HttpResult
{
	long		status;			/* HTTP status, or 0 on a transport error */
	char	   *body;
	size_t		body_len;
	char	   *headers;		/* raw "Name: value\r\n" lines, malloc'd, or NULL */
	long		retry_after_s;	/* Retry-After in seconds, or -1 */
	double		elapsed_ms;
	char		error[200];		/* transport error, never holds a header */
} HttpResult;

extern void http_engine_init(void);
extern int	http_engine_fd(void);
extern void http_engine_configure(int max_connections, size_t max_response_bytes);
extern void http_reload_system_trust(void);
extern bool http_submit(const HttpRequest *request, void *tag, char *error, size_t errlen);
extern long http_timeout_ms(void);
extern void http_perform(void);
extern bool http_next_done(void **tag, HttpResult *result);
extern void http_cancel_all(void);
extern void http_result_free(HttpResult *result);
extern HttpTls *http_tls_new(TlsMaterial *material);
extern void http_tls_free(HttpTls *tls);

#endif							/* PAYSYNC_HTTP_H */
