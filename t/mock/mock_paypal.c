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
 *	  GET /v2/payments/refunds/{id}
 *		A refund, authorised like an order request, its answer scripted in
 *		its id the same way (no steps: "C"), with these steps:
 *
 *		C	200, status COMPLETED with the amount
 *		P	200, status PENDING (status_details.reason ECHECK)
 *		F	200, status FAILED			X	200, status CANCELLED
 *		U	200, status WEIRD (not a PayPal refund status)
 *		W	200, COMPLETED, but the refund of another id (replayed)
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
 *	  --latency-ms N delays every answer (the token's too) by N ms.
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
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/rand.h>

#include "mock_common.h"

#define MAX_BODY		65536
#define MAX_TOKENS		1024
#define TOKEN_PREFIX	"A21AA"
#define ORDER_URL		"https://api-m.sandbox.paypal.com/v2/checkout/orders/"

/* One access token handed out. */
typedef struct Token
{
	char		value[64];
	uint64_t	expires_ns;		/* CLOCK_MONOTONIC */
	long		served;			/* order requests answered with it */
	bool		revoked;
} Token;

static const char *opt_client_id = NULL;
static const char *opt_client_secret = NULL;
static long opt_token_ttl = 32400;
static long opt_expires_in = -1;
static long opt_revoke_after = 0;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static Token tokens[MAX_TOKENS];
static int n_tokens = 0;		/* handed out so far; slot = n % MAX_TOKENS */
static long stat_token_requests = 0;
static long stat_tokens_issued = 0;
static long stat_orders_requests = 0;
static long stat_unauthorized = 0;

/* Writes one log line (one write() on an O_APPEND fd). */
static void
log_line(const MockRequest *req, const char *method, const char *path, const char *id,
		 unsigned int status, const char *token)
{
	char		line[2048];
	int			n;

	if (!mock_log_enabled())
		return;
	n = snprintf(line, sizeof(line), "%lld %s %s %s %u%s%s\n",
				 mock_timespec_us(&req->arrival),
				 method, path, id, status, token ? " " : "", token ? token : "");
	if (n > 0 && (size_t) n < sizeof(line))
	{
		/* ids and paths: printable, no blanks, so a line splits on spaces */
		for (int i = 0; i < n - 1; i++)
			if ((unsigned char) line[i] < 0x20 || (unsigned char) line[i] > 0x7e)
				line[i] = '_';
		mock_log_write(line, (size_t) n);
	}
}

/* Queues a JSON answer (takes the reference to body). */
static enum MHD_Result
answer_json(struct MHD_Connection *conn, unsigned int status, json_t *body)
{
	char	   *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);

	json_decref(body);
	if (text == NULL)
		return MHD_NO;
	return mock_queue(conn, status,
					  mock_response(text, strlen(text), MHD_RESPMEM_MUST_FREE,
									"application/json"));
}

/* Queues a plain-text answer. */
static enum MHD_Result
answer_text(struct MHD_Connection *conn, unsigned int status, const char *text)
{
	return mock_send(conn, status, text, "text/plain");
}

/* True if the Basic credentials in header are ours. */
static bool
basic_ok(const char *header)
{
	unsigned char decoded[4096];
	int			n;
	char		expected[4096];

	if (header == NULL || strncasecmp(header, "Basic ", 6) != 0)
		return false;
	header += 6;
	while (*header == ' ')
		header++;
	n = mock_b64_decode(decoded, sizeof(decoded), header, strlen(header));
	if (n < 0)
		return false;
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
handle_token(struct MHD_Connection *conn, MockRequest *req)
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
	grant = grant_type_check(req->body.data ? req->body.data : "");
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
	t->expires_ns = mock_monotonic_ns() + (uint64_t) opt_token_ttl * 1000000000ULL;
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
	uint64_t	now = mock_monotonic_ns();

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

/*
 * The step of script (after the first "~" of the id) for attempt n, and
 * the amount; false if the script does not parse.
 */
static bool
script_step(const char *id, long n, char *letter, long *code, char *value,
			size_t value_len, char *currency, bool refund)
{
	const char *tilde = strchr(id, '~');
	const char *steps = tilde ? tilde + 1 : refund ? "C" : "P";
	const char *letters = refund ? "CPFXUWNJ" : "CSARVPHDFBZMUNJ";
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
		else if (l == '\0' || strchr(letters, l) == NULL)
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

	/* the order's own link, with as much of the id as fits */
	snprintf(self, sizeof(self), ORDER_URL "%.*s",
			 (int) (sizeof(self) - sizeof(ORDER_URL)), id);

	/* purchase units first: a reader must not depend on member order */
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

/* GET /v2/checkout/orders/{id} */
static enum MHD_Result
handle_order(struct MHD_Connection *conn, MockRequest *req, const char *url)
{
	const char *encoded = url + strlen("/v2/checkout/orders/");
	char		id[1024];
	char		letter = 0;
	long		code = 0;
	char		value[64];
	char		currency[4];
	unsigned int status = 200;
	json_t	   *body = NULL;
	const char *order_status = NULL;
	const char *capture = NULL;

	if (strlen(encoded) >= sizeof(id))
		return answer_text(conn, 414, "too long");
	mock_percent_decode(id, encoded, strlen(encoded), false);

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
		!script_step(id, (long) mock_next_attempt(id), &letter, &code, value, sizeof(value), currency,
					 false))
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

/* A refund as PayPal shows it, with status (and its reason, or NULL). */
static json_t *
refund_json(const char *id, const char *status, const char *reason,
			const char *value, const char *currency)
{
	json_t	   *refund = json_object();

	json_object_set_new(refund, "id", json_string(id));
	json_object_set_new(refund, "amount", amount_json(value, currency));
	json_object_set_new(refund, "note_to_payer", json_string("Defective product"));
	json_object_set_new(refund, "seller_payable_breakdown",
						json_pack("{s:o, s:o}", "gross_amount", amount_json(value, currency),
								  "net_amount", amount_json(value, currency)));
	json_object_set_new(refund, "status", json_string(status));
	if (reason)
		json_object_set_new(refund, "status_details", json_pack("{s:s}", "reason", reason));
	json_object_set_new(refund, "create_time", json_string("2025-01-02T00:00:00Z"));
	json_object_set_new(refund, "update_time", json_string("2025-01-02T00:00:05Z"));
	return refund;
}

/* GET /v2/payments/refunds/{id} */
static enum MHD_Result
handle_refund(struct MHD_Connection *conn, MockRequest *req, const char *url)
{
	const char *encoded = url + strlen("/v2/payments/refunds/");
	char		id[1024];
	char		letter = 0;
	long		code = 0;
	char		value[64];
	char		currency[4];
	unsigned int status = 200;
	json_t	   *body = NULL;

	if (strlen(encoded) >= sizeof(id))
		return answer_text(conn, 414, "too long");
	mock_percent_decode(id, encoded, strlen(encoded), false);
	if (!bearer_ok(MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization")))
	{
		pthread_mutex_lock(&lock);
		stat_unauthorized++;
		pthread_mutex_unlock(&lock);
		log_line(req, "GET", url, id[0] ? id : "-", 401, NULL);
		return answer_json(conn, 401,
						   json_pack("{s:s, s:s}", "name", "AUTHENTICATION_FAILURE",
									 "message", "Authentication failed due to invalid authentication credentials or a missing Authorization header."));
	}
	if (id[0] == '\0' ||
		!script_step(id, (long) mock_next_attempt(id), &letter, &code, value, sizeof(value),
					 currency, true))
	{
		log_line(req, "GET", url, id[0] ? id : "-", 400, NULL);
		return answer_json(conn, 400, json_pack("{s:s, s:s}", "name", "INVALID_REQUEST",
												"message", "bad mock script"));
	}
	switch (letter)
	{
		case 'C':
			body = refund_json(id, "COMPLETED", NULL, value, currency);
			break;
		case 'P':
			body = refund_json(id, "PENDING", "ECHECK", value, currency);
			break;
		case 'F':
			body = refund_json(id, "FAILED", NULL, value, currency);
			break;
		case 'X':
			body = refund_json(id, "CANCELLED", NULL, value, currency);
			break;
		case 'U':
			body = refund_json(id, "WEIRD", NULL, value, currency);
			break;
		case 'W':
			body = refund_json("1JU08902781691411", "COMPLETED", NULL, value, currency);
			break;
		case 'N':
			status = 404;
			body = json_pack("{s:s, s:[{s:s, s:s}], s:s, s:s}",
							 "name", "RESOURCE_NOT_FOUND",
							 "details", "issue", "INVALID_RESOURCE_ID",
							 "description", "Specified resource ID does not exist. Please check the resource ID and try again.",
							 "message", "The specified resource does not exist.",
							 "debug_id", "f7e8d9c0b1a3");
			break;
		case 'J':
			log_line(req, "GET", url, id, 200, NULL);
			return answer_text(conn, 200, "<html>not json</html>");
		default:				/* 'E' */
			status = (unsigned int) code;
			body = json_pack("{s:s, s:s}", "name", "INTERNAL_SERVER_ERROR",
							 "message", "An internal server error occurred.");
			break;
	}
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
	MockRequest *req;
	enum MHD_Result ret;

	(void) cls;
	(void) version;
	req = mock_request_begin(con_cls, upload_data, upload_data_size, MAX_BODY, &ret);
	if (req == NULL)
		return ret;

	if (strcmp(url, "/_stats") == 0)
		return handle_stats(conn);
	if (mock_opt_latency_ms > 0)
	{
		struct timespec ts = {mock_opt_latency_ms / 1000,
		(mock_opt_latency_ms % 1000) * 1000000L};

		nanosleep(&ts, NULL);
	}
	if (strcmp(url, "/v1/oauth2/token") == 0 && strcmp(method, "POST") == 0 && !req->body.overflow)
		return handle_token(conn, req);
	if (strncmp(url, "/v2/checkout/orders/", 20) == 0 && strcmp(method, "GET") == 0)
		return handle_order(conn, req, url);
	if (strncmp(url, "/v2/payments/refunds/", 21) == 0 && strcmp(method, "GET") == 0)
		return handle_refund(conn, req, url);
	log_line(req, method, url, "-", 404, NULL);
	return answer_json(conn, 404, json_pack("{s:s, s:s}", "name", "NOT_FOUND",
											"message", "no such endpoint"));
}

/* Reads the command line. */
static void
parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		MOCK_LONGOPTS_COMMON,
		MOCK_LONGOPT_LATENCY,
		{"client-id", required_argument, NULL, 'i'},
		{"client-secret", required_argument, NULL, 's'},
		{"token-ttl", required_argument, NULL, 't'},
		{"expires-in", required_argument, NULL, 'e'},
		{"revoke-after", required_argument, NULL, 'r'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	while ((c = mock_next_option(argc, argv, longopts)) != -1)
	{
		switch (c)
		{
			case 'i':
				opt_client_id = optarg;
				break;
			case 's':
				opt_client_secret = optarg;
				break;
			case 't':
				opt_token_ttl = mock_parse_number("--token-ttl", optarg, LONG_MAX);
				break;
			case 'e':
				opt_expires_in = mock_parse_number("--expires-in", optarg, LONG_MAX);
				break;
			case 'r':
				opt_revoke_after = mock_parse_number("--revoke-after", optarg, LONG_MAX);
				break;
			default:
				fprintf(stderr,
						"usage: mock_paypal --client-id ID --client-secret SECRET [--port N] [--log FILE] [--latency-ms N]\n"
						"                   [--token-ttl S] [--expires-in S] [--revoke-after N]\n");
				exit(2);
		}
	}
	if (opt_client_id == NULL || opt_client_secret == NULL)
		mock_die("--client-id and --client-secret are required", NULL);
}

/* Serves until SIGTERM or SIGINT. */
int
main(int argc, char **argv)
{
	struct MHD_OptionItem options[] = {
		{MHD_OPTION_NOTIFY_COMPLETED, (intptr_t) mock_request_completed, NULL},
		{MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t) mock_unescape_nothing, NULL},
		{MHD_OPTION_END, 0, NULL}
	};

	mock_init("mock_paypal");
	parse_args(argc, argv);
	mock_log_open(mock_opt_log);
	/* a delayed answer holds its thread: one per connection then */
	mock_serve(mock_opt_latency_ms > 0 ? MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL :
			   MHD_USE_EPOLL, mock_opt_port, handle_request, options);
	return 0;
}
