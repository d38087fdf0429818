/*-------------------------------------------------------------------------
 *
 * mock_paypal.c
 *	  Mock of the two PayPal REST calls the paysync "paypal" driver makes,
 *	  for t/014_paypal.pl.
 *
 *	  POST /v1/oauth2/token
 *		HTTP Basic credentials must be the --client-id and --client-secret
 *		given here, else 401 {"error":"invalid_client",...}; the form body
 *		must carry grant_type=client_credentials, else 400
 *		{"error":"unsupported_grant_type",...}.  Answers a fresh random
 *		access token, valid --token-ttl seconds (default 32400), with
 *		"expires_in" set to --expires-in (default: the real lifetime; a
 *		larger value makes the client keep a token the mock has already
 *		expired).
 *
 *	  GET /v2/checkout/orders/{id}
 *		"Authorization: Bearer <token>" must name a token issued here that
 *		has neither expired nor been revoked, else 401
 *		{"name":"AUTHENTICATION_FAILURE",...}.  With --revoke-after N a
 *		token is revoked once it has served N order requests: the next one
 *		with it gets the 401 and a new token must be fetched.  Refused
 *		requests do not advance the order's script.
 *
 *	  The order's answer is scripted in its id:
 *
 *		id      := name [ "~" steps [ "~" amount ] ]     (no steps: "P")
 *		steps   := step { "," step }
 *		amount  := value currency, e.g. 12.34USD, 1000JPY (default 10.00USD)
 *
 *	  The Nth authorised request for an id answers the Nth step; after the
 *	  last step the last one repeats.  Steps:
 *
 *		C	200, status CREATED				S	200, status SAVED
 *		A	200, status APPROVED			R	200, PAYER_ACTION_REQUIRED
 *		V	200, status VOIDED
 *		P	200, COMPLETED, capture COMPLETED with the amount
 *		H	200, COMPLETED, capture PENDING (PENDING_REVIEW)
 *		D	200, COMPLETED, capture DECLINED
 *		F	200, COMPLETED, capture FAILED
 *		B	200, COMPLETED, capture REFUNDED
 *		Z	200, COMPLETED with an authorization and no capture
 *		M	200, COMPLETED with no payments at all
 *		U	200, status WEIRD (not a PayPal status)
 *		N	404 {"name":"RESOURCE_NOT_FOUND",...}
 *		J	200, a body that is not JSON
 *		E<code>	that HTTP status, {"name":"INTERNAL_SERVER_ERROR",...}
 *
 *	  The answers are not signed: PayPal's REST answers are not (TLS only).
 *
 *	  GET /_stats answers {"token_requests":N,"tokens_issued":N,
 *	  "orders_requests":N,"unauthorized":N}: token requests received,
 *	  tokens handed out, order requests received, and of those the ones
 *	  refused with 401.
 *
 *	  --log FILE appends one line per request (control endpoints aside):
 *		<unix_us> <METHOD> <path> <payment_id or -> <http status> [token]
 *	  the token being the one issued by a successful token request.
 *
 *	  Once listening on 127.0.0.1 it prints "port=N"; SIGTERM or SIGINT
 *	  stop it.
 *
 * IDENTIFICATION
 *	  t/mock/mock_paypal.c
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
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
#include <openssl/evp.h>
#include <openssl/rand.h>

#define MAX_BODY		65536
#define MAX_TOKENS		1024
#define TOKEN_PREFIX	"A21AA"

/* One access token handed out. */
typedef struct Token
{
	char		value[64];
	uint64_t	expires_ns;		/* CLOCK_MONOTONIC */
	long		served;			/* order requests answered with it */
	bool		revoked;
} Token;

/* How many authorised requests an order id has had. */
typedef struct OrderCount
{
	struct OrderCount *next;
	long		count;
	char		id[];
} OrderCount;

/* A request being received. */
typedef struct Request
{
	struct timespec arrival;
	char	   *body;
	size_t		len;
	bool		overflow;
} Request;

static unsigned int opt_port = 0;
static const char *opt_log = NULL;
static const char *opt_client_id = NULL;
static const char *opt_client_secret = NULL;
static long opt_token_ttl = 32400;
static long opt_expires_in = -1;
static long opt_revoke_after = 0;

static int log_fd = -1;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static Token tokens[MAX_TOKENS];
static int n_tokens = 0;		/* handed out so far; slot = n % MAX_TOKENS */
static OrderCount *orders = NULL;
static long stat_token_requests = 0;
static long stat_tokens_issued = 0;
static long stat_orders_requests = 0;
static long stat_unauthorized = 0;

/* Prints msg and exits with status 2. */
static void
die(const char *msg, const char *detail)
{
	fprintf(stderr, "mock_paypal: %s%s%s\n", msg, detail ? ": " : "", detail ? detail : "");
	exit(2);
}

/* CLOCK_MONOTONIC now, in nanoseconds. */
static uint64_t
monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

/* Writes one log line (one write() on an O_APPEND fd). */
static void
log_line(const Request *req, const char *method, const char *path, const char *id,
		 unsigned int status, const char *token)
{
	char		line[2048];
	int			n;

	if (log_fd < 0)
		return;
	n = snprintf(line, sizeof(line), "%lld %s %s %s %u%s%s\n",
				 (long long) req->arrival.tv_sec * 1000000LL + req->arrival.tv_nsec / 1000,
				 method, path, id, status, token ? " " : "", token ? token : "");
	if (n > 0 && (size_t) n < sizeof(line))
	{
		/* ids and paths: printable, no blanks, so a line splits on spaces */
		for (int i = 0; i < n - 1; i++)
			if ((unsigned char) line[i] < 0x20 || (unsigned char) line[i] > 0x7e)
				line[i] = '_';
		if (write(log_fd, line, (size_t) n) < 0)
			perror("mock_paypal: log");
	}
}

/* Queues a JSON answer (takes the reference to body). */
static enum MHD_Result
answer_json(struct MHD_Connection *conn, unsigned int status, json_t *body)
{
	char	   *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
	struct MHD_Response *r;
	enum MHD_Result ret;

	json_decref(body);
	if (text == NULL)
		return MHD_NO;
	r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (r == NULL)
	{
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Queues a plain-text answer. */
static enum MHD_Result
answer_text(struct MHD_Connection *conn, unsigned int status, const char *text)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *) text,
															 MHD_RESPMEM_MUST_COPY);
	enum MHD_Result ret;

	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain");
	ret = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* True if the Basic credentials in header are ours. */
static bool
basic_ok(const char *header)
{
	unsigned char decoded[4096];
	size_t		len;
	int			n;
	size_t		pad = 0;
	char		expected[4096];

	if (header == NULL || strncasecmp(header, "Basic ", 6) != 0)
		return false;
	header += 6;
	while (*header == ' ')
		header++;
	len = strlen(header);
	if (len == 0 || len % 4 != 0 || len / 4 * 3 >= sizeof(decoded))
		return false;
	n = EVP_DecodeBlock(decoded, (const unsigned char *) header, (int) len);
	if (n < 0)
		return false;
	if (header[len - 1] == '=')
		pad++;
	if (header[len - 2] == '=')
		pad++;
	n -= (int) pad;
	snprintf(expected, sizeof(expected), "%s:%s", opt_client_id, opt_client_secret);
	return (size_t) n == strlen(expected) && memcmp(decoded, expected, (size_t) n) == 0;
}

/* True if the form body carries grant_type=client_credentials. */
static int
grant_type_check(const char *body)
{
	const char *p = body;

	while (p && *p)
	{
		const char *amp = strchr(p, '&');
		size_t		len = amp ? (size_t) (amp - p) : strlen(p);

		if (len >= 11 && strncmp(p, "grant_type=", 11) == 0)
			return (len == 11 + strlen("client_credentials") &&
					strncmp(p + 11, "client_credentials", len - 11) == 0) ? 1 : -1;
		p = amp ? amp + 1 : NULL;
	}
	return 0;
}

/* POST /v1/oauth2/token */
static enum MHD_Result
handle_token(struct MHD_Connection *conn, Request *req)
{
	const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
	const char *ctype = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
	unsigned char raw[24];
	Token	   *t;
	int			grant;
	char		value[64];

	pthread_mutex_lock(&lock);
	stat_token_requests++;
	pthread_mutex_unlock(&lock);

	if (!basic_ok(auth))
	{
		log_line(req, "POST", "/v1/oauth2/token", "-", 401, NULL);
		return answer_json(conn, 401,
						   json_pack("{s:s, s:s}", "error", "invalid_client",
									 "error_description", "Client Authentication failed"));
	}
	grant = grant_type_check(req->body ? req->body : "");
	if (ctype == NULL || strncasecmp(ctype, "application/x-www-form-urlencoded", 33) != 0 ||
		grant <= 0)
	{
		log_line(req, "POST", "/v1/oauth2/token", "-", 400, NULL);
		return answer_json(conn, 400,
						   json_pack("{s:s, s:s}", "error", "unsupported_grant_type",
									 "error_description",
									 grant == 0 ? "Grant Type is NULL" : "unsupported grant_type"));
	}

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return MHD_NO;
	strcpy(value, TOKEN_PREFIX);
	for (size_t i = 0; i < sizeof(raw); i++)
		sprintf(value + strlen(TOKEN_PREFIX) + 2 * i, "%02x", raw[i]);

	pthread_mutex_lock(&lock);
	t = &tokens[n_tokens++ % MAX_TOKENS];
	memset(t, 0, sizeof(*t));
	strcpy(t->value, value);
	t->expires_ns = monotonic_ns() + (uint64_t) opt_token_ttl * 1000000000ULL;
	stat_tokens_issued++;
	pthread_mutex_unlock(&lock);

	log_line(req, "POST", "/v1/oauth2/token", "-", 200, value);
	return answer_json(conn, 200,
					   json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}",
								 "scope", "https://uri.paypal.com/services/payments/payment/authcapture openid",
								 "access_token", value,
								 "token_type", "Bearer",
								 "app_id", "APP-80W284485P519543T",
								 "expires_in", (json_int_t) (opt_expires_in >= 0 ? opt_expires_in : opt_token_ttl),
								 "nonce", "2025-01-01T00:00:00Zmock"));
}

/*
 * Checks a bearer token and counts the request against it.  False if it
 * is unknown, expired or revoked (revoking it when it has served its
 * --revoke-after requests).
 */
static bool
bearer_ok(const char *header)
{
	bool		ok = false;
	uint64_t	now = monotonic_ns();

	if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0)
		return false;
	header += 7;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < n_tokens && i < MAX_TOKENS; i++)
	{
		Token	   *t = &tokens[i];

		if (strcmp(t->value, header) != 0)
			continue;
		if (opt_revoke_after > 0 && t->served >= opt_revoke_after)
			t->revoked = true;
		if (!t->revoked && now < t->expires_ns)
		{
			t->served++;
			ok = true;
		}
		break;
	}
	pthread_mutex_unlock(&lock);
	return ok;
}

/* Counts one more authorised request for id; returns its number (from 1). */
static long
order_attempt(const char *id)
{
	OrderCount *o;
	long		n;

	pthread_mutex_lock(&lock);
	for (o = orders; o; o = o->next)
		if (strcmp(o->id, id) == 0)
			break;
	if (o == NULL)
	{
		o = calloc(1, sizeof(OrderCount) + strlen(id) + 1);
		if (o == NULL)
			die("out of memory", NULL);
		strcpy(o->id, id);
		o->next = orders;
		orders = o;
	}
	n = ++o->count;
	pthread_mutex_unlock(&lock);
	return n;
}

/*
 * The step of script (after the first "~" of the id) for attempt n, and
 * the amount; false if the script does not parse.
 */
static bool
script_step(const char *id, long n, char *letter, long *code, char *value,
			size_t value_len, char *currency)
{
	const char *tilde = strchr(id, '~');
	const char *steps = tilde ? tilde + 1 : "P";
	const char *amount = strchr(steps, '~');
	size_t		steps_len = amount ? (size_t) (amount - steps) : strlen(steps);
	const char *p = steps;

	strcpy(value, "10.00");
	strcpy(currency, "USD");
	if (amount)
	{
		size_t		alen = strlen(++amount);

		if (alen < 4 || alen - 3 >= value_len)
			return false;
		for (int k = 0; k < 3; k++)
			if (!isupper((unsigned char) amount[alen - 3 + k]))
				return false;
		memcpy(value, amount, alen - 3);
		value[alen - 3] = '\0';
		memcpy(currency, amount + alen - 3, 3);
		currency[3] = '\0';
	}
	if (steps_len == 0)
		return false;
	/* the whole script is checked; the step taken is the nth or the last */
	for (long i = 1;; i++)
	{
		char		l = *p++;
		long		c = 0;

		if (l == 'E')
		{
			char	   *q;

			c = strtol(p, &q, 10);
			if (q == p || c < 100 || c > 599)
				return false;
			p = q;
		}
		else if (l == '\0' || strchr("CSARVPHDFBZMUNJ", l) == NULL)
			return false;
		if (p > steps + steps_len)
			return false;
		if (i <= n)
		{
			*letter = l;
			*code = c;
		}
		if (p == steps + steps_len)
			return true;
		if (*p != ',')
			return false;
		p++;
	}
}

/* An amount object. */
static json_t *
amount_json(const char *value, const char *currency)
{
	return json_pack("{s:s, s:s}", "currency_code", currency, "value", value);
}

/*
 * An order as PayPal shows it: status, and for a completed one the
 * payments of its purchase unit (capture_status NULL: none; "AUTH": an
 * authorization only).
 */
static json_t *
order_json(const char *id, const char *status, const char *capture_status,
		   const char *value, const char *currency)
{
	json_t	   *unit = json_pack("{s:s, s:o}", "reference_id", "default",
								 "amount", amount_json(value, currency));
	json_t	   *order = json_object();
	char		self[1024];

	if (capture_status && strcmp(capture_status, "AUTH") == 0)
		json_object_set_new(unit, "payments",
							json_pack("{s:[{s:s, s:s, s:o}]}", "authorizations",
									  "id", "0VF52814937998046", "status", "CREATED",
									  "amount", amount_json(value, currency)));
	else if (capture_status)
	{
		json_t	   *capture = json_pack("{s:s, s:s, s:o, s:b, s:s, s:s}",
										"id", "3C679366HH908993F",
										"status", capture_status,
										"amount", amount_json(value, currency),
										"final_capture", 1,
										"create_time", "2025-01-01T00:00:05Z",
										"update_time", "2025-01-01T00:00:05Z");

		if (strcmp(capture_status, "PENDING") == 0)
			json_object_set_new(capture, "status_details",
								json_pack("{s:s}", "reason", "PENDING_REVIEW"));
		json_object_set_new(unit, "payments", json_pack("{s:[o]}", "captures", capture));
	}

	/* purchase units first: a reader must not depend on member order */
	snprintf(self, sizeof(self), "https://api-m.sandbox.paypal.com/v2/checkout/orders/%s", id);
	json_object_set_new(order, "id", json_string(id));
	json_object_set_new(order, "intent", json_string("CAPTURE"));
	json_object_set_new(order, "purchase_units", json_pack("[o]", unit));
	json_object_set_new(order, "status", json_string(status));
	json_object_set_new(order, "create_time", json_string("2025-01-01T00:00:00Z"));
	json_object_set_new(order, "links",
						json_pack("[{s:s, s:s, s:s}]", "href", self, "rel", "self",
								  "method", "GET"));
	return order;
}

/* Percent-decodes src into dst (room for strlen(src) + 1). */
static void
percent_decode(char *dst, const char *src)
{
	while (*src)
	{
		unsigned int c;

		if (src[0] == '%' && isxdigit((unsigned char) src[1]) &&
			isxdigit((unsigned char) src[2]) && sscanf(src + 1, "%2x", &c) == 1)
		{
			*dst++ = (char) c;
			src += 3;
		}
		else
			*dst++ = *src++;
	}
	*dst = '\0';
}

/* GET /v2/checkout/orders/{id} */
static enum MHD_Result
handle_order(struct MHD_Connection *conn, Request *req, const char *url)
{
	const char *prefix = "/v2/checkout/orders/";
	char		id[1024];
	char		letter = 0;
	long		code = 0;
	char		value[64];
	char		currency[4];
	unsigned int status = 200;
	json_t	   *body = NULL;
	const char *order_status = NULL;
	const char *capture = NULL;

	if (strlen(url + strlen(prefix)) >= sizeof(id))
		return answer_text(conn, 414, "too long");
	percent_decode(id, url + strlen(prefix));

	pthread_mutex_lock(&lock);
	stat_orders_requests++;
	pthread_mutex_unlock(&lock);

	if (!bearer_ok(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization")))
	{
		pthread_mutex_lock(&lock);
		stat_unauthorized++;
		pthread_mutex_unlock(&lock);
		log_line(req, "GET", url, id[0] ? id : "-", 401, NULL);
		return answer_json(conn, 401,
						   json_pack("{s:s, s:s, s:[{s:s, s:s}]}",
									 "name", "AUTHENTICATION_FAILURE",
									 "message", "Authentication failed due to invalid authentication credentials or a missing Authorization header.",
									 "links", "href", "https://developer.paypal.com/docs/api/overview/#error",
									 "rel", "information_link"));
	}

	if (id[0] == '\0' ||
		!script_step(id, order_attempt(id), &letter, &code, value, sizeof(value), currency))
	{
		log_line(req, "GET", url, id[0] ? id : "-", 400, NULL);
		return answer_json(conn, 400, json_pack("{s:s, s:s}", "name", "INVALID_REQUEST",
												"message", "bad mock script"));
	}

	switch (letter)
	{
		case 'C':
			order_status = "CREATED";
			break;
		case 'S':
			order_status = "SAVED";
			break;
		case 'A':
			order_status = "APPROVED";
			break;
		case 'R':
			order_status = "PAYER_ACTION_REQUIRED";
			break;
		case 'V':
			order_status = "VOIDED";
			break;
		case 'U':
			order_status = "WEIRD";
			break;
		case 'P':
			order_status = "COMPLETED";
			capture = "COMPLETED";
			break;
		case 'H':
			order_status = "COMPLETED";
			capture = "PENDING";
			break;
		case 'D':
			order_status = "COMPLETED";
			capture = "DECLINED";
			break;
		case 'F':
			order_status = "COMPLETED";
			capture = "FAILED";
			break;
		case 'B':
			order_status = "COMPLETED";
			capture = "REFUNDED";
			break;
		case 'Z':
			order_status = "COMPLETED";
			capture = "AUTH";
			break;
		case 'M':
			order_status = "COMPLETED";
			break;
		case 'N':
			status = 404;
			body = json_pack("{s:s, s:[{s:s, s:s}], s:s, s:s}",
							 "name", "RESOURCE_NOT_FOUND",
							 "details", "issue", "INVALID_RESOURCE_ID",
							 "description", "Specified resource ID does not exist. Please check the resource ID and try again.",
							 "message", "The specified resource does not exist.",
							 "debug_id", "f7e8d9c0b1a2");
			break;
		case 'J':
			log_line(req, "GET", url, id, 200, NULL);
			return answer_text(conn, 200, "<html>not json</html>");
		case 'E':
			status = (unsigned int) code;
			body = json_pack("{s:s, s:s}", "name", "INTERNAL_SERVER_ERROR",
							 "message", "An internal server error occurred.");
			break;
	}
	if (body == NULL)
		body = order_json(id, order_status, capture, value, currency);
	log_line(req, "GET", url, id, status, NULL);
	return answer_json(conn, status, body);
}

/* GET /_stats */
static enum MHD_Result
handle_stats(struct MHD_Connection *conn)
{
	json_t	   *body;

	pthread_mutex_lock(&lock);
	body = json_pack("{s:I, s:I, s:I, s:I}",
					 "token_requests", (json_int_t) stat_token_requests,
					 "tokens_issued", (json_int_t) stat_tokens_issued,
					 "orders_requests", (json_int_t) stat_orders_requests,
					 "unauthorized", (json_int_t) stat_unauthorized);
	pthread_mutex_unlock(&lock);
	return answer_json(conn, 200, body);
}

/* MHD access handler: gathers the body, then routes. */
static enum MHD_Result
handle_request(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version, const char *upload_data,
			   size_t *upload_data_size, void **con_cls)
{
	Request    *req = *con_cls;

	(void) cls;
	(void) version;
	if (req == NULL)
	{
		req = calloc(1, sizeof(Request));
		if (req == NULL)
			return MHD_NO;
		clock_gettime(CLOCK_REALTIME, &req->arrival);
		*con_cls = req;
		return MHD_YES;
	}
	if (*upload_data_size > 0)
	{
		size_t		len = *upload_data_size;

		*upload_data_size = 0;
		if (req->len + len > MAX_BODY)
		{
			req->overflow = true;
			return MHD_YES;
		}
		req->body = realloc(req->body, req->len + len + 1);
		if (req->body == NULL)
			return MHD_NO;
		memcpy(req->body + req->len, upload_data, len);
		req->len += len;
		req->body[req->len] = '\0';
		return MHD_YES;
	}

	if (strcmp(url, "/_stats") == 0)
		return handle_stats(conn);
	if (strcmp(url, "/v1/oauth2/token") == 0 && strcmp(method, "POST") == 0 && !req->overflow)
		return handle_token(conn, req);
	if (strncmp(url, "/v2/checkout/orders/", 20) == 0 && strcmp(method, "GET") == 0)
		return handle_order(conn, req, url);
	log_line(req, method, url, "-", 404, NULL);
	return answer_json(conn, 404, json_pack("{s:s, s:s}", "name", "NOT_FOUND",
											"message", "no such endpoint"));
}

/* Frees a request's state. */
static void
request_done(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	Request    *req = *con_cls;

	(void) cls;
	(void) conn;
	(void) toe;
	if (req)
	{
		free(req->body);
		free(req);
	}
	*con_cls = NULL;
}

/* Leaves the URL as sent: the order id is percent-decoded by us. */
static size_t
unescape_nothing(void *cls, struct MHD_Connection *conn, char *s)
{
	(void) cls;
	(void) conn;
	return strlen(s);
}

/* A non-negative number for option opt. */
static long
number_option(const char *opt, const char *s)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < 0)
		die("invalid number for option", opt);
	return v;
}

/* Reads the command line. */
static void
parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"port", required_argument, NULL, 'p'},
		{"log", required_argument, NULL, 'L'},
		{"client-id", required_argument, NULL, 'i'},
		{"client-secret", required_argument, NULL, 's'},
		{"token-ttl", required_argument, NULL, 't'},
		{"expires-in", required_argument, NULL, 'e'},
		{"revoke-after", required_argument, NULL, 'r'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'p':
				opt_port = (unsigned int) number_option("--port", optarg);
				break;
			case 'L':
				opt_log = optarg;
				break;
			case 'i':
				opt_client_id = optarg;
				break;
			case 's':
				opt_client_secret = optarg;
				break;
			case 't':
				opt_token_ttl = number_option("--token-ttl", optarg);
				break;
			case 'e':
				opt_expires_in = number_option("--expires-in", optarg);
				break;
			case 'r':
				opt_revoke_after = number_option("--revoke-after", optarg);
				break;
			default:
				fprintf(stderr,
						"usage: mock_paypal --client-id ID --client-secret SECRET [--port N] [--log FILE]\n"
						"                   [--token-ttl S] [--expires-in S] [--revoke-after N]\n");
				exit(2);
		}
	}
	if (opt_client_id == NULL || opt_client_secret == NULL)
		die("--client-id and --client-secret are required", NULL);
}

/* Serves until SIGTERM or SIGINT. */
int
main(int argc, char **argv)
{
	struct MHD_Daemon *daemon;
	const union MHD_DaemonInfo *info;
	struct sockaddr_in sa;
	sigset_t	sigs;
	int			sig;

	parse_args(argc, argv);
	if (opt_log)
	{
		log_fd = open(opt_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (log_fd < 0)
			die("cannot open log file", opt_log);
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t) opt_port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG,
							  (uint16_t) opt_port, NULL, NULL, handle_request, NULL,
							  MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &sa,
							  MHD_OPTION_NOTIFY_COMPLETED, request_done, NULL,
							  MHD_OPTION_UNESCAPE_CALLBACK, unescape_nothing, NULL,
							  MHD_OPTION_END);
	if (daemon == NULL)
		die("cannot start HTTP daemon", NULL);
	info = MHD_get_daemon_info(daemon, MHD_DAEMON_INFO_BIND_PORT);
	if (info == NULL || info->port == 0)
		die("cannot determine listening port", NULL);
	printf("port=%u\n", (unsigned int) info->port);
	fflush(stdout);

	while (sigwait(&sigs, &sig) != 0 || (sig != SIGTERM && sig != SIGINT))
		;
	MHD_stop_daemon(daemon);
	if (log_fd >= 0)
		close(log_fd);
	return 0;
}
