/*
 * driver_paypal.c
 *		Driver "paypal": PayPal Checkout orders (REST API v2).
 *
 *		Access: OAuth2 client credentials.  POST /v1/oauth2/token with HTTP
 *		Basic authentication (client_id:client_secret) and the form body
 *		grant_type=client_credentials answers an access token and its
 *		lifetime; the checker keeps the token per channel, asks for a new
 *		one when it has none or it is about to expire, and drops it when an
 *		answer here says it was refused (HTTP 401).
 *
 *		Query: GET /v2/checkout/orders/{id} with "Authorization: Bearer".
 *		The order status decides, except for a COMPLETED order, where the
 *		first capture of the first purchase unit decides (a completed order
 *		may carry a declined capture):
 *
 *			CREATED, SAVED, APPROVED, PAYER_ACTION_REQUIRED    pending
 *			VOIDED                                             cancelled
 *			COMPLETED, capture COMPLETED, PARTIALLY_REFUNDED
 *			  or REFUNDED                                      succeeded
 *			COMPLETED, capture PENDING                         pending
 *			COMPLETED, capture DECLINED or FAILED              failed
 *			HTTP 404 RESOURCE_NOT_FOUND                        pending
 *
 *		Anything else (another status, no capture, a 401, 429 or 5xx, a body
 *		that is not the expected JSON) is an error.  A succeeded answer
 *		carries the capture's amount for the core's amount check.  PayPal
 *		cannot close an order from here: can_close is false.
 *
 *		Refunds (0.4): GET /v2/payments/refunds/{refund_id} (PayPal's refund
 *		id) with the same Bearer token.  Refund status COMPLETED is
 *		succeeded, FAILED failed, CANCELLED cancelled, PENDING pending (an
 *		eCheck, say); amount.value and amount.currency_code the refunded
 *		amount.  A 404 (no such refund), another status or an answer about
 *		another refund is an error.  A webhook whose resource_type is
 *		"refund" (PAYMENT.CAPTURE.REFUNDED, PAYMENT.CAPTURE.REVERSED) names
 *		the refund in resource.id: it is checked at once, never believed.
 *
 *		PayPal's REST answers are not signed (TLS only); there is no
 *		signature to verify on this path.  Its webhook notifications are
 *		verified by a call to PayPal, which a SQL function must not make: a
 *		notification is never believed, only the order it names (the
 *		resource id, or for capture events the order id among the related
 *		ids) is checked at once.
 *
 *		JSON is read with PostgreSQL's own parser (common/jsonapi.h), which
 *		reports bad JSON as a result, not an ERROR; nesting is bounded before
 *		parsing because PostgreSQL 15's parser raises "stack depth limit
 *		exceeded" on deep input, and the checker calls interpret() outside
 *		any transaction.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/jsonb.h"

#include "driver.h"

/* Longest client_id or client_secret accepted. */
#define PAYPAL_MAX_CREDENTIAL 1024

/* Longest access token accepted from the token endpoint. */
#define PAYPAL_MAX_TOKEN 8192

/*
 * How answers are read: objects, array indexes in paths, and nesting
 * bounded before parsing (deeper is an error).
 */
#define PAYPAL_JSON (JSON_FIELDS_OBJECT | JSON_FIELDS_SHALLOW | JSON_FIELDS_INDEXES)

typedef struct PaypalConfig
{
	char	   *orders_url;		/* base_url + "/v2/checkout/orders/" */
	char	   *refunds_url;	/* base_url + "/v2/payments/refunds/" */
	char	   *token_url;		/* base_url + "/v1/oauth2/token" */
	char	   *basic_header;	/* "Authorization: Basic ..." (secret) */
} PaypalConfig;

static const char *const paypal_option_names[] = {
	"client_id", "client_secret", NULL
};

/* Paths into an order that the query reads. */
#define CAPTURE_PATH "purchase_units[0].payments.captures[0]"
enum
{
	ORDER_STATUS,
	CAPTURE_STATUS,
	CAPTURE_VALUE,
	CAPTURE_CURRENCY,
	AUTHORIZATION_STATUS,
	N_ORDER_FIELDS
};
static const char *const order_paths[N_ORDER_FIELDS] = {
	"status",
	CAPTURE_PATH ".status",
	CAPTURE_PATH ".amount.value",
	CAPTURE_PATH ".amount.currency_code",
	"purchase_units[0].payments.authorizations[0].status",
};

/* ---------------------------------------------------------------- JSON */

/*
 * PayPal's name for an error answer ("name" of a REST error, "error" of an
 * OAuth2 one), if it is a plain word that may be quoted in a message;
 * otherwise "no error name".
 */
static const char *
paypal_error_name(const HttpResult *result)
{
	JsonField	f[] = {{.path = "name"}, {.path = "error"}};

	if (json_fields(result->body, result->body_len, PAYPAL_JSON, f, lengthof(f)) != JSON_FIELDS_OK)
		return "no error name";
	for (size_t i = 0; i < lengthof(f); i++)
	{
		const char *value = f[i].value;

		if (value == NULL || value[0] == '\0' || strlen(value) > 64)
			continue;
		if (strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") ==
			strlen(value))
			return value;
	}
	return "no error name";
}

/* ---------------------------------------------------------------- options */

/*
 * Reads the required credential option key: a non-empty string of at most
 * PAYPAL_MAX_CREDENTIAL printable characters.  Messages name the option,
 * never its value.
 */
static char *
credential_option(Jsonb *options, const char *key, const char *channel)
{
	char	   *value;

	if (!option_string(options, key, &value, channel))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" needs option \"%s\"", channel, key),
				 errhint("Give the client ID and secret of a PayPal REST app (Apps & Credentials in the PayPal developer dashboard).")));
	if (value[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 errdetail("The value is empty.")));
	if (strlen(value) > PAYPAL_MAX_CREDENTIAL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 errdetail("The value is longer than %d bytes.", PAYPAL_MAX_CREDENTIAL)));
	for (const char *p = value; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
					 errdetail("The value contains a control character.")));
	return value;
}

/* The Basic credentials header for client_id and client_secret. */
static char *
basic_header(const char *client_id, const char *client_secret)
{
	char	   *pair = psprintf("%s:%s", client_id, client_secret);
	size_t		pair_len = strlen(pair);
	char	   *encoded = crypto_b64_encode((const unsigned char *) pair, pair_len);
	char	   *header;

	explicit_bzero(pair, pair_len);
	pfree(pair);
	if (encoded == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	header = psprintf("Authorization: Basic %s", encoded);
	explicit_bzero(encoded, strlen(encoded));
	free(encoded);
	return header;
}

/* Checks and compiles the options of a paypal channel. */
static void *
paypal_compile(const char *channel, const char *base_url, Jsonb *options)
{
	PaypalConfig *config = palloc0(sizeof(PaypalConfig));
	char	   *client_id = credential_option(options, "client_id", channel);
	char	   *client_secret = credential_option(options, "client_secret", channel);
	char		urlerr[160];

	/* RFC 7617: the user-id of Basic credentials cannot hold a colon */
	if (strchr(client_id, ':') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"client_id\" of channel \"%s\"", channel),
				 errdetail("The value contains \":\", which Basic credentials cannot carry in a user id.")));

	config->orders_url = url_join(base_url, "/v2/checkout/orders/");
	config->refunds_url = url_join(base_url, "/v2/payments/refunds/");
	config->token_url = url_join(base_url, "/v1/oauth2/token");
	if (!http_url_valid(config->token_url, urlerr, sizeof(urlerr)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid base_url for channel \"%s\"", channel),
				 errdetail("%s", urlerr),
				 errhint("Use https://api-m.paypal.com, or https://api-m.sandbox.paypal.com for the sandbox.")));

	config->basic_header = basic_header(client_id, client_secret);
	explicit_bzero(client_secret, strlen(client_secret));
	return config;
}

/* ---------------------------------------------------------------- token */

/* Builds the token request: client credentials grant, Basic auth. */
static void
paypal_build_token_request(const void *cfg, const char *base_url, HttpRequest *request)
{
	const PaypalConfig *config = cfg;
	const char **headers = palloc(sizeof(char *) * 3);

	headers[0] = "Accept: application/json";
	headers[1] = "Content-Type: application/x-www-form-urlencoded";
	headers[2] = config->basic_header;
	request->url = config->token_url;
	request->post = true;
	request->body = "grant_type=client_credentials";
	request->headers = headers;
	request->n_headers = 3;
}

/*
 * Reads the token answer {"access_token": ..., "token_type": "Bearer",
 * "expires_in": seconds, ...}.  False with a message (never a secret) in
 * error on anything else.
 */
static bool
paypal_interpret_token(const void *cfg, const HttpResult *result, char **token,
					   int *expires_in_s, char *error, size_t errlen)
{
	JsonField	f[] = {{.path = "access_token"}, {.path = "token_type"}, {.path = "expires_in"}};
	JsonFieldsResult read;
	char	   *end;
	long		expires;

	if (result->status == 0)
	{
		snprintf(error, errlen, "%s", result->error);
		return false;
	}
	if (result->status == 401)
	{
		snprintf(error, errlen,
				 "PayPal refused the client credentials (HTTP 401, %s): check client_id and client_secret",
				 paypal_error_name(result));
		return false;
	}
	if (result->status == 429 || result->status >= 500)
	{
		snprintf(error, errlen, "HTTP %ld from the PayPal token endpoint", result->status);
		return false;
	}
	if (result->status != 200)
	{
		snprintf(error, errlen, "unexpected HTTP %ld from the PayPal token endpoint (%s)",
				 result->status, paypal_error_name(result));
		return false;
	}
	read = json_fields(result->body, result->body_len, PAYPAL_JSON, f, lengthof(f));
	if (read != JSON_FIELDS_OK)
	{
		snprintf(error, errlen, "token answer: %s", json_fields_problem(read));
		return false;
	}
	if (f[0].value == NULL || f[0].type != JSON_TOKEN_STRING)
	{
		snprintf(error, errlen, "the token answer has no access_token");
		return false;
	}
	if (f[0].value[0] == '\0' || strlen(f[0].value) > PAYPAL_MAX_TOKEN)
	{
		snprintf(error, errlen, "the token answer's access_token is empty or too long");
		return false;
	}
	/* it goes into a header line: printable ASCII only */
	for (const char *p = f[0].value; *p; p++)
		if ((unsigned char) *p < 0x21 || (unsigned char) *p > 0x7e)
		{
			snprintf(error, errlen, "the token answer's access_token has characters a header cannot carry");
			return false;
		}
	if (f[1].value != NULL && pg_strcasecmp(f[1].value, "Bearer") != 0)
	{
		snprintf(error, errlen, "the token answer's token_type is not Bearer");
		return false;
	}
	if (f[2].value == NULL || f[2].type != JSON_TOKEN_NUMBER)
	{
		snprintf(error, errlen, "the token answer has no expires_in");
		return false;
	}
	errno = 0;
	expires = strtol(f[2].value, &end, 10);
	if (*end != '\0' || errno != 0 || expires <= 0)
	{
		snprintf(error, errlen, "the token answer's expires_in is not a positive whole number");
		return false;
	}
	*token = f[0].value;
	*expires_in_s = (int) Min(expires, (long) PG_INT32_MAX);
	return true;
}

/* ---------------------------------------------------------------- query */

/* Builds a GET of prefix + id with the bearer token. */
static void
paypal_build_get(const char *prefix, const char *id, const char *token,
				 HttpRequest *request)
{
	const char **headers = palloc(sizeof(char *) * 2);
	int			n = 0;

	headers[n++] = "Accept: application/json";
	if (token != NULL)
		headers[n++] = psprintf("Authorization: Bearer %s", token);
	request->url = psprintf("%s%s", prefix, http_escape_segment(id));
	request->post = false;
	request->body = NULL;
	request->headers = headers;
	request->n_headers = n;
}

/* Builds the order query (GET /v2/checkout/orders/{id}), bearer token. */
static void
paypal_build_request(const void *cfg, const char *base_url, const char *payment_id,
					 CheckKind kind, const char *token, HttpRequest *request)
{
	const PaypalConfig *config = cfg;

	paypal_build_get(config->orders_url, payment_id, token, request);
}

/* Builds the refund query (GET /v2/payments/refunds/{id}), bearer token. */
static void
paypal_build_refund_request(const void *cfg, const char *base_url,
							const char *payment_id, const char *refund_id,
							const char *token, HttpRequest *request)
{
	const PaypalConfig *config = cfg;

	paypal_build_get(config->refunds_url, refund_id, token, request);
}

/*
 * Makes *answer the amount value (major units, a decimal string) of
 * currency, for what ("capture", "refund").  False with *answer the error
 * if either is missing or not what PayPal sends.
 */
static bool
paypal_amount(const char *what, const char *value, const char *currency,
			  CheckAnswer *answer)
{
	if (value == NULL || currency == NULL)
	{
		answer_error(answer, "the %s has no amount.value or amount.currency_code", what);
		return false;
	}
	/* PayPal writes codes upper case */
	if (strspn(currency, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(currency))
	{
		answer_error(answer, "the %s's currency_code \"%s\" is not an ISO 4217 code",
					 what, channel_text(currency, CHANNEL_WORD_MAX_BYTES));
		return false;
	}
	return answer_paid_decimal(answer, value, currency);
}

/*
 * The answer for a COMPLETED order: its first capture decides.  A
 * succeeded answer carries the captured amount.
 */
static void
interpret_capture(const JsonField *fields, CheckAnswer *answer)
{
	const char *capture = fields[CAPTURE_STATUS].value;
	const char *value = fields[CAPTURE_VALUE].value;
	const char *currency = fields[CAPTURE_CURRENCY].value;
	char	   *word;

	if (capture == NULL)
	{
		if (fields[AUTHORIZATION_STATUS].value != NULL)
			answer_error(answer, "order COMPLETED with an authorization and no capture: orders with intent AUTHORIZE are not supported");
		else
			answer_error(answer, "order COMPLETED but the answer has no purchase_units[0].payments.captures[0].status");
		return;
	}
	word = strcmp(capture, "COMPLETED") == 0 ? pstrdup("COMPLETED") :
		psprintf("COMPLETED/%s", channel_text(capture, CHANNEL_WORD_MAX_BYTES));

	/* the funds are still on their way (eCheck, review...) */
	if (strcmp(capture, "PENDING") == 0)
	{
		answer_status(answer, "pending", word);
		return;
	}
	/* PayPal could not capture the funds: the payment did not happen */
	if (strcmp(capture, "DECLINED") == 0 || strcmp(capture, "FAILED") == 0)
	{
		answer_status(answer, "failed", word);
		return;
	}
	/* paid; a refund the merchant made later does not undo the payment */
	if (strcmp(capture, "COMPLETED") != 0 && strcmp(capture, "PARTIALLY_REFUNDED") != 0 &&
		strcmp(capture, "REFUNDED") != 0)
	{
		answer_error(answer, "unknown PayPal capture status \"%s\"",
					 channel_text(capture, CHANNEL_WORD_MAX_BYTES));
		return;
	}
	if (paypal_amount("capture", value, currency, answer))
		answer_status(answer, "succeeded", word);
}

/* Refund statuses and what they are (every one PayPal documents). */
static const struct
{
	const char *word;
	const char *status;
}			paypal_refund_statuses[] = {
	{"COMPLETED", "succeeded"},
	{"FAILED", "failed"},
	{"CANCELLED", "cancelled"},
	{"PENDING", "pending"},
};

/*
 * Turns a 200 answer of the refund query about refund_id (NULL: not
 * checked) into a status or an error; the refund's amount, required when
 * it is COMPLETED, is carried whenever it is given.
 */
static void
interpret_refund(const char *refund_id, const HttpResult *result, CheckAnswer *answer)
{
	JsonField	f[] = {
		{.path = "id"}, {.path = "status"}, {.path = "amount.value"},
		{.path = "amount.currency_code"},
	};
	JsonFieldsResult read;
	const char *status = NULL;

	read = json_fields(result->body, result->body_len, PAYPAL_JSON, f, lengthof(f));
	if (read != JSON_FIELDS_OK)
	{
		answer_error(answer, "%s", json_fields_problem(read));
		return;
	}
	for (size_t i = 0; i < lengthof(f); i++)
		if (f[i].count > 1)
		{
			answer_error(answer, "PayPal's answer gives %s twice", f[i].path);
			return;
		}
	if (refund_id != NULL && (f[0].value == NULL || strcmp(f[0].value, refund_id) != 0))
	{
		answer_error(answer, "PayPal's answer is about refund \"%s\", not the refund asked about",
					 f[0].value ? channel_text(f[0].value, CHANNEL_WORD_MAX_BYTES) : "(none)");
		return;
	}
	if (f[1].value == NULL)
	{
		answer_error(answer, "the answer has no refund status");
		return;
	}
	for (size_t i = 0; i < lengthof(paypal_refund_statuses); i++)
		if (strcmp(f[1].value, paypal_refund_statuses[i].word) == 0)
			status = paypal_refund_statuses[i].status;
	if (status == NULL)
	{
		answer_error(answer, "unknown PayPal refund status \"%s\"",
					 channel_text(f[1].value, CHANNEL_WORD_MAX_BYTES));
		return;
	}
	if ((strcmp(status, "succeeded") == 0 || f[2].value != NULL || f[3].value != NULL) &&
		!paypal_amount("refund", f[2].value, f[3].value, answer))
		return;
	answer_status(answer, status, f[1].value);
}

/*
 * Turns an answer of the order query, or for CHECK_REFUND of the refund
 * query about refund payment_id, into a status or an error.
 */
static void
paypal_interpret(const void *cfg, CheckKind kind, const char *payment_id, const HttpResult *result,
				 CheckAnswer *answer)
{
	JsonField	fields[N_ORDER_FIELDS];
	JsonFieldsResult read;
	const char *status;

	if (kind != CHECK_QUERY && kind != CHECK_REFUND)
	{
		answer_error(answer, "driver paypal cannot close an order");
		return;
	}
	if (answer_transport_error(result, answer) || answer_http_error(result, answer))
		return;
	if (result->status == 401)
	{
		/* expired or revoked: the checker drops it and the retry fetches another */
		answer->credentials_rejected = true;
		answer_error(answer, "HTTP 401 from PayPal (%s): the access token was refused, a new one will be fetched",
					 paypal_error_name(result));
		return;
	}
	if (result->status == 404 && kind == CHECK_REFUND)
	{
		/* no such refund: never an end of the refund (the schedule ends it) */
		answer_error(answer, "HTTP 404 from PayPal (%s): no such refund",
					 paypal_error_name(result));
		return;
	}
	if (result->status == 404)
	{
		const char *name = paypal_error_name(result);

		/* PayPal's own "no such order": not paid (unknown id, or long gone) */
		if (strcmp(name, "RESOURCE_NOT_FOUND") == 0)
			answer_status(answer, "pending", "RESOURCE_NOT_FOUND");
		else
			answer_error(answer, "HTTP 404 from PayPal (%s)", name);
		return;
	}
	if (result->status != 200)
	{
		answer_error(answer, "unexpected HTTP %ld from PayPal (%s)", result->status,
					 paypal_error_name(result));
		return;
	}
	if (kind == CHECK_REFUND)
	{
		interpret_refund(payment_id, result, answer);
		return;
	}

	memset(fields, 0, sizeof(fields));
	for (int i = 0; i < N_ORDER_FIELDS; i++)
		fields[i].path = order_paths[i];
	read = json_fields(result->body, result->body_len, PAYPAL_JSON, fields, N_ORDER_FIELDS);
	if (read != JSON_FIELDS_OK)
	{
		answer_error(answer, "%s", json_fields_problem(read));
		return;
	}
	status = fields[ORDER_STATUS].value;
	if (status == NULL)
		answer_error(answer, "the answer has no order status");
	else if (strcmp(status, "COMPLETED") == 0)
		interpret_capture(fields, answer);
	else if (strcmp(status, "VOIDED") == 0)
		answer_status(answer, "cancelled", fields[ORDER_STATUS].value);
	else if (strcmp(status, "CREATED") == 0 || strcmp(status, "SAVED") == 0 ||
			 strcmp(status, "APPROVED") == 0 || strcmp(status, "PAYER_ACTION_REQUIRED") == 0)
		answer_status(answer, "pending", fields[ORDER_STATUS].value);
	else
		answer_error(answer, "unknown PayPal order status \"%s\"",
					 channel_text(status, CHANNEL_WORD_MAX_BYTES));
}

/*
 * A webhook notification, unverified: the order it names (an order
 * event's resource.id, a capture's
 * resource.supplementary_data.related_ids.order_id), or none; for a refund
 * (resource_type "refund") also the refund, resource.id.
 */
static void
paypal_verify_notification(const void *cfg, const char *channel,
						   const HttpResult *notification, int64 now,
						   NotificationResult *out)
{
	JsonField	f[] = {
		{.path = "resource_type", .only = JSON_TOKEN_STRING},
		{.path = "resource.id", .only = JSON_TOKEN_STRING},
		{.path = "resource.supplementary_data.related_ids.order_id", .only = JSON_TOKEN_STRING},
	};
	char	   *order_id = NULL;
	char	   *refund_id = NULL;

	if (json_fields(notification->body, notification->body_len, PAYPAL_JSON,
					f, lengthof(f)) == JSON_FIELDS_OK)
	{
		if (f[2].value != NULL)
			order_id = f[2].value;
		else if (f[0].value != NULL && strcmp(f[0].value, "checkout-order") == 0)
			order_id = f[1].value;
		if (f[0].value != NULL && strcmp(f[0].value, "refund") == 0 &&
			f[1].value != NULL && f[1].value[0] != '\0')
			refund_id = f[1].value;
	}
	notification_unverified(out, order_id);
	out->refund_id = refund_id;
}

const PaysyncDriver paypal_driver = {
	.name = "paypal",
	.option_names = paypal_option_names,
	.compile = paypal_compile,
	.build_request = paypal_build_request,
	.build_refund_request = paypal_build_refund_request,
	.interpret = paypal_interpret,
	.can_close = false,
	.close_on_expiry_default = false,
	.build_token_request = paypal_build_token_request,
	.interpret_token = paypal_interpret_token,
	.verify_notification = paypal_verify_notification,
};
