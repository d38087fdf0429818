/*-------------------------------------------------------------------------
 *
 * mock_stripe.c
 *	  A mock of Stripe's "retrieve a PaymentIntent" API for the tests of
 *	  paysync's stripe driver.
 *
 *	  mock_stripe --secret-key KEY [--port N] [--log FILE]
 *
 * It answers GET /v1/payment_intents/{id} the way Stripe does:
 *
 *	- authentication: the secret key given on the command line, as
 *	  "Authorization: Bearer KEY" (or HTTP Basic with the key as user name,
 *	  which Stripe accepts too).  A missing or different key gets 401 with
 *	  Stripe's error body, whose message shows the presented key redacted
 *	  the way Stripe shows it (prefix and last four characters).
 *	- a Stripe-Version header, if any, must look like an API version
 *	  (YYYY-MM-DD, maybe ".release"); otherwise 400.
 *	- any other path or method: 404 "Unrecognized request URL".
 *	- every answer carries Request-Id and Stripe-Version headers; errors
 *	  are {"error": {"type", "code", "message", ...}}.
 *
 * An id without "~" is unknown: 404 resource_missing, as Stripe answers for
 * an id it does not know.  An id "pi_anything~STEPS" is scripted: STEPS is
 * a comma separated list of actions, each maybe followed by "*N" (repeat N
 * times).  The Nth authenticated request for an id performs the Nth action;
 * after the list the last action repeats.
 *
 *	M	200, status requires_payment_method (with a last_payment_error)
 *	F	200, status requires_confirmation
 *	A	200, status requires_action
 *	P	200, status processing
 *	K	200, status requires_capture
 *	S[amount][cur]	200, status succeeded, amount_received = amount
 *			(default 1000) in currency cur (lower case, default usd)
 *	G	200, status succeeded (1000 usd), its latest_charge (expanded)
 *		refunded in full afterwards: Stripe leaves the PaymentIntent
 *		succeeded and amount_received as it was
 *	Q	200, status succeeded (1000 usd), its latest_charge disputed
 *	X	200, status canceled
 *	U	200, status "unheard_of" (no such PaymentIntent status)
 *	Z	200, a PaymentIntent without status
 *	J	200, not JSON
 *	R[secs]	429 rate_limit with Stripe-Should-Retry: true (and
 *			Retry-After: secs if given)
 *	E	500 api_error with Stripe-Should-Retry: true
 *	N	404 resource_missing
 *
 * A script that does not parse answers 400 invalid_request_error.
 *
 * GET /v1/refunds/{id} answers a Refund, authenticated and scripted the
 * same way ("re_anything~STEPS"; no "~": 404 "No such refund"), the
 * letters meaning:
 *
 *	P	200, status pending			A	200, status requires_action
 *	S[amount][cur]	200, status succeeded, amount (default 1000) in cur
 *	F	200, status failed (failure_reason expired_or_canceled_card)
 *	X	200, status canceled		U	200, status "unheard_of"
 *	Z	200, a Refund without status
 *	W	200, status succeeded, the Refund of another id (replayed)
 *	J, R[secs], E, N	as above (N: "No such refund")
 *
 * Every Refund but S's carries amount 1000 usd.
 *
 * Log (--log): one line per request to a payment_intents URL, written at
 * arrival with a single write():
 *
 *	<unix_us> <METHOD> <path> <id> v=<Stripe-Version or -> acct=<Stripe-Account or -> auth=<ok|missing|wrong>
 *
 * Bytes outside 0x21-0x7e in the path and id are logged as "_".
 *
 * IDENTIFICATION
 *	  t/mock/mock_stripe.c
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "mock_common.h"

#define PI_PREFIX "/v1/payment_intents/"
#define REFUND_PREFIX "/v1/refunds/"
#define MAX_STEPS 256
#define DEFAULT_VERSION "2024-06-20"

/* One scripted action. */
typedef struct Action
{
	char		letter;
	long		amount;			/* S: amount_received; R: Retry-After */
	char		currency[4];	/* S: lower case */
} Action;

static const char *opt_secret_key = NULL;

/*
 * Copies text for the log, bytes outside 0x21-0x7e made "_", "-" if empty.
 */
static void
log_word(char *out, size_t outlen, const char *text)
{
	if (text == NULL || *text == '\0')
		text = "-";
	out[mock_log_token(out, text, strnlen(text, outlen - 1))] = '\0';
}

/*
 * Writes one log line for a request.
 */
static void
log_request(const char *method, const char *path, const char *id,
			const char *version, const char *account, const char *auth)
{
	char		w_path[600],
				w_id[300],
				w_version[80],
				w_account[80];
	char		line[1200];
	int			len;

	if (!mock_log_enabled())
		return;
	log_word(w_path, sizeof(w_path), path);
	log_word(w_id, sizeof(w_id), id);
	log_word(w_version, sizeof(w_version), version);
	log_word(w_account, sizeof(w_account), account);
	len = snprintf(line, sizeof(line), "%lld %s %s %s v=%s acct=%s auth=%s\n",
				   mock_now_us(), method, w_path, w_id, w_version, w_account, auth);
	if (len > 0)
		mock_log_write(line, (size_t) len);
}

/*
 * Parses a script into actions; returns how many, or -1 if it does not
 * parse.
 */
static int
parse_script(const char *script, Action *actions, int max)
{
	const char *p = script;
	int			n = 0;

	for (;;)
	{
		Action		a;
		long		repeat = 1;

		memset(&a, 0, sizeof(a));
		a.letter = *p++;
		if (strchr("MFAPKSXUZJRENGQW", a.letter) == NULL || a.letter == '\0')
			return -1;
		if (a.letter == 'S' || a.letter == 'R')
		{
			a.amount = (a.letter == 'S') ? 1000 : 0;
			if (isdigit((unsigned char) *p))
				a.amount = strtol(p, (char **) &p, 10);
		}
		if (a.letter == 'S')
		{
			strcpy(a.currency, "usd");
			if (islower((unsigned char) p[0]) && islower((unsigned char) p[1]) &&
				islower((unsigned char) p[2]))
			{
				memcpy(a.currency, p, 3);
				p += 3;
			}
		}
		if (*p == '*')
		{
			p++;
			if (!isdigit((unsigned char) *p))
				return -1;
			repeat = strtol(p, (char **) &p, 10);
			if (repeat < 1 || repeat > max)
				return -1;
		}
		while (repeat-- > 0)
		{
			if (n >= max)
				return -1;
			actions[n++] = a;
		}
		if (*p == '\0')
			return n;
		if (*p++ != ',')
			return -1;
	}
}

/*
 * A random request id, like Stripe's "req_..." ones.
 */
static void
request_id(char *out)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char raw[14];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		memset(raw, 7, sizeof(raw));
	strcpy(out, "req_");
	for (size_t i = 0; i < sizeof(raw); i++)
		out[4 + i] = alphabet[raw[i] % (sizeof(alphabet) - 1)];
	out[4 + sizeof(raw)] = '\0';
}

/*
 * Sends body with status and Stripe's usual headers; extra headers are
 * name/value pairs ending with NULL.
 */
static enum MHD_Result
send_answer(struct MHD_Connection *conn, unsigned int status, const char *body,
			const char *content_type, const char *version, ...)
{
	struct MHD_Response *response;
	char		rid[32];
	va_list		args;
	const char *name;

	response = mock_response(body, strlen(body), MHD_RESPMEM_MUST_COPY,
							 content_type);
	if (response == NULL)
		return MHD_NO;
	request_id(rid);
	MHD_add_response_header(response, "Request-Id", rid);
	MHD_add_response_header(response, "Stripe-Version", version ? version : DEFAULT_VERSION);
	va_start(args, version);
	while ((name = va_arg(args, const char *)) != NULL)
	{
		const char *value = va_arg(args, const char *);

		MHD_add_response_header(response, name, value);
	}
	va_end(args);
	return mock_queue(conn, status, response);
}

/*
 * Builds Stripe's error body: {"error": {type, code, message, ...}}.
 * code and param may be NULL.  The result is malloc'd.
 */
static char *
error_body(const char *type, const char *code, const char *message, const char *param)
{
	json_t	   *error = json_object();
	json_t	   *root = json_object();
	char	   *text;

	json_object_set_new(error, "type", json_string(type));
	if (code)
	{
		char		doc[200];

		json_object_set_new(error, "code", json_string(code));
		snprintf(doc, sizeof(doc), "https://stripe.com/docs/error-codes/%s", code);
		json_object_set_new(error, "doc_url", json_string(doc));
	}
	json_object_set_new(error, "message", json_string(message));
	if (param)
		json_object_set_new(error, "param", json_string(param));
	json_object_set_new(error, "request_log_url", json_string("https://dashboard.stripe.com/test/logs"));
	json_object_set_new(root, "error", error);
	text = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (text == NULL)
		mock_die("out of memory", NULL);
	return text;
}

/*
 * Sends an error answer and frees the body.
 */
static enum MHD_Result
send_error(struct MHD_Connection *conn, unsigned int status, char *body,
		   const char *version, const char *should_retry, const char *retry_after)
{
	enum MHD_Result ret;

	if (retry_after)
		ret = send_answer(conn, status, body, "application/json", version,
						  "Stripe-Should-Retry", should_retry,
						  "Retry-After", retry_after, NULL);
	else if (should_retry)
		ret = send_answer(conn, status, body, "application/json", version,
						  "Stripe-Should-Retry", should_retry, NULL);
	else
		ret = send_answer(conn, status, body, "application/json", version, NULL);
	free(body);
	return ret;
}

/*
 * Decides how a request authenticates: "ok", "missing" or "wrong"; sets
 * *presented to the key presented (malloc'd) for a wrong one.
 */
static const char *
check_auth(struct MHD_Connection *conn, char **presented)
{
	const char *header = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
													 MHD_HTTP_HEADER_AUTHORIZATION);
	char	   *key = NULL;

	*presented = NULL;
	if (header == NULL || *header == '\0')
		return "missing";
	if (strncasecmp(header, "Bearer ", 7) == 0)
		key = strdup(header + 7);
	else if (strncasecmp(header, "Basic ", 6) == 0)
	{
		const char *b64 = header + 6;
		size_t		len = strlen(b64);
		unsigned char *raw = calloc(1, len + 4);
		int			n;
		char	   *colon;

		if (raw == NULL)
			mock_die("out of memory", NULL);
		n = EVP_DecodeBlock(raw, (const unsigned char *) b64, (int) len);
		if (n < 0)
		{
			free(raw);
			return "wrong";
		}
		raw[n] = '\0';
		colon = strchr((char *) raw, ':');
		if (colon)
			*colon = '\0';
		key = (char *) raw;
	}
	if (key == NULL || *key == '\0')
	{
		free(key);
		return "missing";
	}
	if (strcmp(key, opt_secret_key) == 0)
	{
		free(key);
		return "ok";
	}
	*presented = key;
	return "wrong";
}

/*
 * Stripe's redacted form of a key: up to its second "_", stars, and the
 * last four characters.
 */
static void
redact_key(const char *key, char *out, size_t outlen)
{
	const char *first = strchr(key, '_');
	const char *second = first ? strchr(first + 1, '_') : NULL;
	size_t		keep = second ? (size_t) (second - key + 1) : 0;
	size_t		len = strlen(key);

	if (keep > 16)
		keep = 16;
	if (len < keep + 8)
		snprintf(out, outlen, "%.*s****", (int) keep, key);
	else
		snprintf(out, outlen, "%.*s********************%s", (int) keep, key,
				 key + len - 4);
}

/*
 * True if text looks like a Stripe API version.
 */
static bool
valid_version(const char *text)
{
	for (int i = 0; i < 10; i++)
	{
		if (i == 4 || i == 7 ? text[i] != '-' : !isdigit((unsigned char) text[i]))
			return false;
	}
	if (text[10] == '\0')
		return true;
	if (text[10] != '.' || text[11] == '\0')
		return false;
	for (const char *p = text + 11; *p; p++)
		if (!islower((unsigned char) *p))
			return false;
	return true;
}

/*
 * Builds a PaymentIntent for id as the action describes it (malloc'd).
 */
static char *
payment_intent_body(const char *id, const Action *a, bool livemode)
{
	json_t	   *pi = json_object();
	const char *status;
	long		amount = (a->letter == 'S') ? a->amount : 1000;
	const char *currency = (a->letter == 'S') ? a->currency : "usd";
	char		secret[400];
	char	   *text;

	switch (a->letter)
	{
		case 'M':
			status = "requires_payment_method";
			break;
		case 'F':
			status = "requires_confirmation";
			break;
		case 'A':
			status = "requires_action";
			break;
		case 'P':
			status = "processing";
			break;
		case 'K':
			status = "requires_capture";
			break;
		case 'S':
		case 'G':
		case 'Q':
			status = "succeeded";
			break;
		case 'X':
			status = "canceled";
			break;
		case 'U':
			status = "unheard_of";
			break;
		default:
			status = NULL;
			break;
	}
	snprintf(secret, sizeof(secret), "%s_secret_mock", id);
	json_object_set_new(pi, "id", json_string(id));
	json_object_set_new(pi, "object", json_string("payment_intent"));
	json_object_set_new(pi, "amount", json_integer(amount));
	json_object_set_new(pi, "amount_capturable", json_integer(a->letter == 'K' ? amount : 0));
	json_object_set_new(pi, "amount_received",
						json_integer(strchr("SGQ", a->letter) ? amount : 0));
	if (a->letter == 'G' || a->letter == 'Q')
	{
		/* what a refund or a dispute after success changes: the charge only */
		json_t	   *charge = json_object();

		json_object_set_new(charge, "id", json_string("ch_3MockCharge"));
		json_object_set_new(charge, "object", json_string("charge"));
		json_object_set_new(charge, "amount", json_integer(amount));
		json_object_set_new(charge, "amount_refunded", json_integer(a->letter == 'G' ? amount : 0));
		json_object_set_new(charge, "refunded", json_boolean(a->letter == 'G'));
		json_object_set_new(charge, "disputed", json_boolean(a->letter == 'Q'));
		json_object_set_new(charge, "status", json_string("succeeded"));
		json_object_set_new(pi, "latest_charge", charge);
	}
	json_object_set_new(pi, "capture_method", json_string("automatic"));
	json_object_set_new(pi, "client_secret", json_string(secret));
	json_object_set_new(pi, "created", json_integer((json_int_t) time(NULL)));
	json_object_set_new(pi, "currency", json_string(currency));
	json_object_set_new(pi, "cancellation_reason",
						a->letter == 'X' ? json_string("abandoned") : json_null());
	if (a->letter == 'M')
	{
		json_t	   *err = json_object();

		json_object_set_new(err, "type", json_string("card_error"));
		json_object_set_new(err, "code", json_string("card_declined"));
		json_object_set_new(err, "message", json_string("Your card was declined."));
		json_object_set_new(pi, "last_payment_error", err);
	}
	else
		json_object_set_new(pi, "last_payment_error", json_null());
	json_object_set_new(pi, "livemode", json_boolean(livemode));
	json_object_set_new(pi, "metadata", json_object());
	json_object_set_new(pi, "payment_method_types", json_pack("[s]", "card"));
	if (status)
		json_object_set_new(pi, "status", json_string(status));
	text = json_dumps(pi, JSON_INDENT(2));
	json_decref(pi);
	if (text == NULL)
		mock_die("out of memory", NULL);
	return text;
}

/*
 * Builds a Refund for id as the action describes it (malloc'd).
 */
static char *
refund_body(const char *id, const Action *a)
{
	json_t	   *re = json_object();
	const char *status;
	char	   *text;

	switch (a->letter)
	{
		case 'P':
			status = "pending";
			break;
		case 'A':
			status = "requires_action";
			break;
		case 'S':
		case 'W':
			status = "succeeded";
			break;
		case 'F':
			status = "failed";
			break;
		case 'X':
			status = "canceled";
			break;
		case 'U':
			status = "unheard_of";
			break;
		default:
			status = NULL;
			break;
	}
	json_object_set_new(re, "id", json_string(a->letter == 'W' ? "re_3MockAnotherRefund" : id));
	json_object_set_new(re, "object", json_string("refund"));
	json_object_set_new(re, "amount", json_integer(a->letter == 'S' ? a->amount : 1000));
	json_object_set_new(re, "balance_transaction", json_null());
	json_object_set_new(re, "charge", json_string("ch_3MockCharge"));
	json_object_set_new(re, "created", json_integer((json_int_t) time(NULL)));
	json_object_set_new(re, "currency", json_string(a->letter == 'S' ? a->currency : "usd"));
	json_object_set_new(re, "metadata", json_object());
	json_object_set_new(re, "payment_intent", json_string("pi_3MockIntent"));
	json_object_set_new(re, "reason", json_string("requested_by_customer"));
	if (a->letter == 'F')
		json_object_set_new(re, "failure_reason", json_string("expired_or_canceled_card"));
	if (status)
		json_object_set_new(re, "status", json_string(status));
	text = json_dumps(re, JSON_INDENT(2));
	json_decref(re);
	if (text == NULL)
		mock_die("out of memory", NULL);
	return text;
}

/*
 * Answers one request.
 */
static enum MHD_Result
handle_request(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version_http,
			   const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	const char *version;
	const char *account;
	const char *auth;
	char	   *presented;
	const char *id;
	const char *tilde;
	Action		actions[MAX_STEPS];
	int			n;
	long		attempt;
	const Action *a;
	char		message[600];
	char	   *body;
	enum MHD_Result ret;
	bool		is_refund;
	const char *object_name;

	(void) cls;
	(void) version_http;

	/* first call: headers only; wait for the (ignored) body */
	if (*con_cls == NULL)
	{
		*con_cls = (void *) 1;
		return MHD_YES;
	}
	if (mock_take_body(NULL, upload_data, upload_data_size, 0, false, &ret))
		return ret;

	version = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Stripe-Version");
	account = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Stripe-Account");
	auth = check_auth(conn, &presented);
	id = strncmp(url, PI_PREFIX, strlen(PI_PREFIX)) == 0 ? url + strlen(PI_PREFIX) : NULL;
	is_refund = id == NULL && strncmp(url, REFUND_PREFIX, strlen(REFUND_PREFIX)) == 0;
	if (is_refund)
		id = url + strlen(REFUND_PREFIX);
	if (id)
		log_request(method, url, id, version, account, auth);

	/* Stripe authenticates before anything else */
	if (strcmp(auth, "missing") == 0)
		return send_error(conn, 401,
						  error_body("invalid_request_error", NULL,
									 "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
									 NULL),
						  NULL, NULL, NULL);
	if (strcmp(auth, "wrong") == 0)
	{
		char		redacted[64];

		redact_key(presented ? presented : "", redacted, sizeof(redacted));
		free(presented);
		snprintf(message, sizeof(message), "Invalid API Key provided: %s", redacted);
		return send_error(conn, 401,
						  error_body("invalid_request_error", NULL, message, NULL),
						  NULL, NULL, NULL);
	}
	if (version && !valid_version(version))
	{
		snprintf(message, sizeof(message), "Invalid Stripe API version: %.100s", version);
		return send_error(conn, 400,
						  error_body("invalid_request_error", NULL, message, NULL),
						  NULL, "false", NULL);
	}
	if (id == NULL || strcmp(method, "GET") != 0 || *id == '\0' || strchr(id, '/'))
	{
		snprintf(message, sizeof(message), "Unrecognized request URL (%s: %.200s).",
				 method, url);
		return send_error(conn, 404,
						  error_body("invalid_request_error", NULL, message, NULL),
						  version, "false", NULL);
	}

	object_name = is_refund ? "refund" : "payment_intent";
	tilde = strrchr(id, '~');
	attempt = (long) mock_next_attempt(id);
	n = tilde ? parse_script(tilde + 1, actions, MAX_STEPS) : 0;
	if (tilde && n < 0)
		return send_error(conn, 400,
						  error_body("invalid_request_error", "parameter_invalid_string",
									 "Bad script in the PaymentIntent id.", "intent"),
						  version, "false", NULL);
	if (n == 0)
	{
		snprintf(message, sizeof(message), "No such %s: '%.200s'", object_name, id);
		return send_error(conn, 404,
						  error_body("invalid_request_error", "resource_missing", message,
									 is_refund ? "id" : "intent"),
						  version, "false", NULL);
	}
	a = &actions[attempt <= n ? attempt - 1 : n - 1];

	switch (a->letter)
	{
		case 'R':
			{
				char		secs[32];

				snprintf(secs, sizeof(secs), "%ld", a->amount);
				return send_error(conn, 429,
								  error_body("invalid_request_error", "rate_limit",
											 "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.",
											 NULL),
								  version, "true", a->amount > 0 ? secs : NULL);
			}
		case 'E':
			return send_error(conn, 500,
							  error_body("api_error", NULL,
										 "Sorry, something went wrong. We've already been notified of the problem.",
										 NULL),
							  version, "true", NULL);
		case 'N':
			snprintf(message, sizeof(message), "No such %s: '%.200s'", object_name, id);
			return send_error(conn, 404,
							  error_body("invalid_request_error", "resource_missing", message,
										 is_refund ? "id" : "intent"),
							  version, "false", NULL);
		case 'J':
			return send_answer(conn, 200, "<html>this is not json</html>", "text/html",
							   version, NULL);
		default:
			break;
	}

	if (is_refund)
		body = refund_body(id, a);
	else
		body = payment_intent_body(id, a, strncmp(opt_secret_key, "sk_live_", 8) == 0 ||
								   strncmp(opt_secret_key, "rk_live_", 8) == 0);
	ret = send_answer(conn, 200, body, "application/json", version, NULL);
	free(body);
	return ret;
}

/*
 * Reads the command line.
 */
static void
parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		MOCK_LONGOPTS_COMMON,
		{"secret-key", required_argument, NULL, 'k'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	while ((c = mock_next_option(argc, argv, longopts)) != -1)
	{
		switch (c)
		{
			case 'k':
				opt_secret_key = optarg;
				break;
			default:
				fprintf(stderr, "Usage: mock_stripe --secret-key KEY [--port N] [--log FILE]\n");
				exit(2);
		}
	}
	if (optind < argc || opt_secret_key == NULL || *opt_secret_key == '\0')
	{
		fprintf(stderr, "Usage: mock_stripe --secret-key KEY [--port N] [--log FILE]\n");
		exit(2);
	}
}

/*
 * Starts the server, prints "port=N" and serves until SIGTERM or SIGINT.
 */
int
main(int argc, char **argv)
{
	static const struct MHD_OptionItem options[] = {
		{MHD_OPTION_CONNECTION_TIMEOUT, 120, NULL},
		{MHD_OPTION_END, 0, NULL}
	};

	mock_init("mock_stripe");
	parse_args(argc, argv);
	mock_log_open(mock_opt_log);
	mock_serve(MHD_USE_EPOLL, mock_opt_port, handle_request, options);
	return 0;
}
