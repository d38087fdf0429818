/*
 * driver_stripe.c
 *		Driver "stripe": asks Stripe what became of a PaymentIntent with
 *		GET /v1/payment_intents/{id}, authenticated by the merchant's secret
 *		(or restricted) key as a Bearer token.
 *
 *		"succeeded" is succeeded, "canceled" is cancelled, and every other
 *		documented PaymentIntent status (requires_payment_method,
 *		requires_confirmation, requires_action, processing, requires_capture,
 *		and the older requires_source and requires_source_action) is pending.
 *		Anything else, Stripe's error bodies ({"error": {...}}) included, is an
 *		error: a 404 (resource_missing) too, since a PaymentIntent id Stripe
 *		does not know is a wrong id, a key of the wrong mode or account, never
 *		Stripe saying "not paid".
 *
 *		Stripe signs none of these answers, and a PaymentIntent cannot be
 *		"closed" the way WeChat Pay and Alipay close trades (cancelling it is
 *		the merchant's decision, not a poller's), so can_close is false.
 *
 *		Notifications (webhook events) are verified as Stripe signs them: the
 *		Stripe-Signature header's t (Unix time) and v1 signatures (there may
 *		be several, during a secret's rotation), each a hex HMAC-SHA256 of
 *		"t.body" under the endpoint's webhook_secret, compared in constant
 *		time; t at most 300 seconds off the clock.  payment_intent.* events
 *		carry the PaymentIntent in data.object, read as a query answer is.
 *
 *		Refunds (0.4): GET /v1/refunds/{id} (the re_... id), authenticated
 *		as the payment query.  Refund statuses: succeeded is succeeded,
 *		failed failed, canceled cancelled, pending and requires_action (the
 *		customer must act) pending; anything else is an error, and so is a
 *		404 (a refund Stripe does not know never ends a refund) and an
 *		answer about another refund.  The refund's amount and currency are
 *		the answer's amount (the refunded amount; required for a succeeded
 *		refund).  Events refund.updated, refund.failed and
 *		charge.refund.updated carry the Refund in data.object and are
 *		verified and read as payment events are.
 *
 *		Paid amounts are reported in ISO 4217 minor units, as paysync's
 *		amount_minor is: Stripe's own unit agrees for every currency but ISK
 *		(Stripe counts hundredths of a krona) and MGA (Stripe counts whole
 *		ariary), which are converted.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "driver.h"

/* The most of Stripe's error message kept in last_error, in bytes. */
#define STRIPE_MESSAGE_MAX_BYTES 100

typedef struct StripeConfig
{
	char	   *url_prefix;		/* ".../v1/payment_intents/" */
	char	   *refund_prefix;	/* ".../v1/refunds/" */
	char	   *auth_header;	/* "Authorization: Bearer ..."; a secret */
	char	   *version_header; /* "Stripe-Version: ...", or NULL */
	char	   *account_header; /* "Stripe-Account: acct_...", or NULL */
	char	   *secret_key;		/* redacted from Stripe's messages kept */
	char	   *webhook_secret; /* signs notifications; secret; or NULL */
} StripeConfig;

/* How far a notification's t may be from the clock, in seconds. */
#define STRIPE_WEBHOOK_TOLERANCE_S 300

/* The fields of a Stripe answer the driver reads, found in one pass. */
typedef struct StripeFields
{
	bool		root_is_object;
	bool		duplicate;		/* a field read here appears twice */

	char	   *object;
	char	   *id;
	char	   *status;
	char	   *amount_received;
	bool		amount_is_number;
	char	   *amount;			/* a Refund's amount */
	bool		refund_amount_is_number;
	char	   *payment_intent; /* a Refund's PaymentIntent, or NULL */
	char	   *currency;
	char	   *error_type;		/* in the top-level "error" object */
	char	   *error_code;
	char	   *error_message;
} StripeFields;

static const char *const stripe_option_names[] = {
	"secret_key", "api_version", "stripe_account", "webhook_secret", NULL
};

/* PaymentIntent statuses that mean "not paid yet, maybe later". */
static const char *const stripe_pending_statuses[] = {
	"requires_payment_method", "requires_confirmation", "requires_action",
	"processing", "requires_capture",
	/* API versions before 2019-02-11 */
	"requires_source", "requires_source_action",
	NULL
};

/* Refund statuses and what they are (every one Stripe documents). */
static const struct
{
	const char *word;
	const char *status;
}			stripe_refund_statuses[] = {
	{"succeeded", "succeeded"},
	{"failed", "failed"},
	{"canceled", "cancelled"},
	{"pending", "pending"},
	{"requires_action", "pending"},
};

/* The events about a Refund whose data.object is the Refund. */
static const char *const stripe_refund_events[] = {
	"refund.updated", "refund.failed", "charge.refund.updated", NULL
};

/* True if every character of text is an ASCII letter, digit or '_'. */
static bool
is_word_text(const char *text)
{
	for (const char *p = text; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_') || IS_HIGHBIT_SET(*p))
			return false;
	return true;
}

/*
 * Checks the shape of the secret_key option: a secret key (sk_) or a
 * restricted key (rk_), nothing around it.  Messages never show the key.
 */
static void
check_secret_key(const char *key, const char *channel)
{
	const char *problem = NULL;
	const char *hint = NULL;

	if (key[0] == '\0')
		problem = "The key is empty.";
	else if (strpbrk(key, " \t\r\n\v\f") != NULL)
	{
		problem = "The key contains white space.";
		hint = "Copy the key alone, without spaces or line breaks around it.";
	}
	else if (strncmp(key, "pk_", 3) == 0)
	{
		problem = "The key is a publishable key (pk_), which cannot read PaymentIntents.";
		hint = "Use the secret key (sk_live_... or sk_test_...) or a restricted key (rk_...) with read access to PaymentIntents.";
	}
	else if (strncmp(key, "sk_", 3) != 0 && strncmp(key, "rk_", 3) != 0)
	{
		problem = "The key must start with sk_ or rk_.";
		hint = "Use the secret key (sk_live_... or sk_test_...) or a restricted key (rk_...) with read access to PaymentIntents.";
	}
	else if (key[3] == '\0')
		problem = "The key is incomplete.";
	else if (!is_word_text(key))
		problem = "The key contains characters a Stripe key never has.";

	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"secret_key\" of channel \"%s\"", channel),
				 errdetail("%s", problem),
				 hint ? errhint("%s", hint) : 0));
}

/* True if text is a Stripe API version: YYYY-MM-DD, maybe ".release". */
static bool
is_api_version(const char *text)
{
	static const char pattern[] = "dddd-dd-dd";
	size_t		i;

	for (i = 0; pattern[i]; i++)
	{
		if (pattern[i] == 'd' ? !isdigit((unsigned char) text[i]) : text[i] != pattern[i])
			return false;
	}
	if (text[i] == '\0')
		return true;
	if (text[i] != '.' || text[i + 1] == '\0')
		return false;
	for (i++; text[i]; i++)
		if (!(text[i] >= 'a' && text[i] <= 'z'))
			return false;
	return strlen(text) <= 64;
}

/* Checks and compiles the options of a stripe channel. */
static void *
stripe_compile(const char *channel, const char *base_url, Jsonb *options)
{
	StripeConfig *config = palloc0(sizeof(StripeConfig));
	char	   *key;
	char	   *version;
	char	   *account;
	size_t		len = strlen(base_url);

	if (!option_string(options, "secret_key", &key, channel))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" needs option \"secret_key\"", channel),
				 errhint("Give the Stripe secret key (sk_live_... or sk_test_...) or a restricted key (rk_...) with read access to PaymentIntents.")));
	check_secret_key(key, channel);
	config->auth_header = psprintf("Authorization: Bearer %s", key);
	config->secret_key = key;

	if (option_string(options, "api_version", &version, channel))
	{
		if (!is_api_version(version))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"api_version\" of channel \"%s\"", channel),
					 errdetail("\"%s\" is not a Stripe API version.", version),
					 errhint("Give a version such as \"2024-06-20\" or \"2024-09-30.acacia\", or leave the option out to use the account's default.")));
		config->version_header = psprintf("Stripe-Version: %s", version);
	}

	if (option_string(options, "stripe_account", &account, channel))
	{
		if (strncmp(account, "acct_", 5) != 0 || account[5] == '\0' ||
			!is_word_text(account) || strlen(account) > 64)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"stripe_account\" of channel \"%s\"", channel),
					 errdetail("\"%s\" is not a Stripe account id.", account),
					 errhint("Give the connected account's id, such as \"acct_1032D82eZvKYlo2C\".")));
		config->account_header = psprintf("Stripe-Account: %s", account);
	}

	if (option_string(options, "webhook_secret", &config->webhook_secret, channel) &&
		(strncmp(config->webhook_secret, "whsec_", 6) != 0 ||
		 config->webhook_secret[6] == '\0' || !is_word_text(config->webhook_secret)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"webhook_secret\" of channel \"%s\"", channel),
				 errdetail("A webhook signing secret starts with whsec_ and has only letters, digits and underscores."),
				 errhint("Copy the signing secret of the webhook endpoint from the Stripe dashboard.")));

	/* "https://api.stripe.com", with or without a trailing "/" or "/v1" */
	while (len > 0 && base_url[len - 1] == '/')
		len--;
	if (len >= 3 && strncmp(base_url + len - 3, "/v1", 3) == 0)
		len -= 3;
	config->url_prefix = psprintf("%.*s/v1/payment_intents/", (int) len, base_url);
	config->refund_prefix = psprintf("%.*s/v1/refunds/", (int) len, base_url);
	return config;
}

/* Builds a GET of prefix + id with the channel's headers. */
static void
stripe_build_get(const StripeConfig *config, const char *prefix, const char *id,
				 HttpRequest *request)
{
	const char **headers = palloc(sizeof(char *) * 4);
	int			n = 0;

	request->url = psprintf("%s%s", prefix, http_escape_segment(id));
	request->post = false;
	request->body = NULL;
	headers[n++] = "Accept: application/json";
	headers[n++] = config->auth_header;
	if (config->version_header)
		headers[n++] = config->version_header;
	if (config->account_header)
		headers[n++] = config->account_header;
	request->headers = headers;
	request->n_headers = n;
}

/* Builds the request retrieving one PaymentIntent. */
static void
stripe_build_request(const void *cfg, const char *base_url,
					 const char *payment_id, CheckKind kind,
					 const char *token, HttpRequest *request)
{
	const StripeConfig *config = cfg;

	stripe_build_get(config, config->url_prefix, payment_id, request);
}

/* Builds the request retrieving one Refund (GET /v1/refunds/{refund_id}). */
static void
stripe_build_refund_request(const void *cfg, const char *base_url,
							const char *payment_id, const char *refund_id,
							const char *token, HttpRequest *request)
{
	const StripeConfig *config = cfg;

	stripe_build_get(config, config->refund_prefix, refund_id, request);
}

/*
 * Reads the fields the driver needs from a JSON body in one pass with
 * PostgreSQL's JSON parser.  False if the body is not JSON text.
 */
static bool
stripe_read_fields(const char *body, size_t body_len, StripeFields *fields)
{
	JsonField	f[] = {
		{.path = "object"}, {.path = "status"}, {.path = "amount_received"},
		{.path = "currency"}, {.path = "error.type"}, {.path = "error.code"},
		{.path = "error.message"}, {.path = "id"}, {.path = "amount"},
		{.path = "payment_intent"},
	};

	memset(fields, 0, sizeof(StripeFields));
	if (json_fields(body, body_len, 0, f, lengthof(f)) != JSON_FIELDS_OK)
		return false;
	fields->root_is_object = body[strspn(body, " \t\r\n")] == '{';
	for (size_t i = 0; i < lengthof(f); i++)
		if (f[i].count > 1)
			fields->duplicate = true;
	fields->object = f[0].value;
	fields->status = f[1].value;
	fields->amount_received = f[2].value;
	fields->amount_is_number = (f[2].type == JSON_TOKEN_NUMBER);
	fields->currency = f[3].value;
	fields->error_type = f[4].value;
	fields->error_code = f[5].value;
	fields->error_message = f[6].value;
	fields->id = f[7].type == JSON_TOKEN_STRING ? f[7].value : NULL;
	fields->amount = f[8].value;
	fields->refund_amount_is_number = (f[8].type == JSON_TOKEN_NUMBER);
	fields->payment_intent = f[9].type == JSON_TOKEN_STRING ? f[9].value : NULL;
	return true;
}

/*
 * Stripe's error message made fit for last_error (see channel_text), the
 * channel's secret key redacted; left out altogether if it might show a
 * key (Stripe's own messages about keys show a redacted key's prefix and
 * end).
 */
static char *
stripe_safe_message(const StripeConfig *config, const char *message)
{
	const char *secrets[1];

	if (message == NULL || strstr(message, "sk_") || strstr(message, "rk_") ||
		strstr(message, "pk_") || strstr(message, "***"))
		return NULL;
	secrets[0] = config ? config->secret_key : NULL;
	return channel_text(redact_secrets(message, secrets, config ? 1 : 0),
						STRIPE_MESSAGE_MAX_BYTES);
}

/*
 * Makes *answer the error for a non-2xx answer: what Stripe said (error
 * code or type, and its message unless it may be about a key), whether Stripe says
 * the request is worth retrying, and its request id for Stripe's support.
 * Every such answer is an error the checker retries with backoff.
 */
static void
stripe_answer_http_error(const StripeConfig *config, const HttpResult *result,
						 const StripeFields *fields, bool parsed, bool refund,
						 CheckAnswer *answer)
{
	StringInfoData msg;
	const char *what;
	char	   *message = NULL;
	char	   *should_retry = http_header(result, "Stripe-Should-Retry");
	char	   *request_id = http_header(result, "Request-Id");

	switch (result->status)
	{
		case 401:
			what = "Stripe refused the secret key";
			answer->credentials_rejected = true;
			break;
		case 403:
			what = refund ?
				"Stripe refused access (a restricted key needs read access to refunds)" :
				"Stripe refused access (a restricted key needs read access to PaymentIntents)";
			break;
		case 404:
			what = refund ?
				"Stripe has no such refund (wrong id, or key of another mode/account)" :
				"Stripe has no such PaymentIntent (wrong id, or key of another mode/account)";
			break;
		case 429:
			what = "Stripe rate limit";
			break;
		default:
			what = result->status >= 500 ? "Stripe server error" :
				"unexpected answer from Stripe";
			break;
	}

	initStringInfo(&msg);
	appendStringInfo(&msg, "%s: HTTP %ld", what, result->status);
	if (parsed)
	{
		/* the code says more than the type, when there is one */
		if (fields->error_code)
			appendStringInfo(&msg, " %s", channel_text(fields->error_code, 40));
		else if (fields->error_type)
			appendStringInfo(&msg, " %s", channel_text(fields->error_type, 40));
		/* messages about keys quote the key (redacted): never kept */
		if (result->status != 401 && result->status != 403)
			message = stripe_safe_message(config, fields->error_message);
	}
	else if (!parsed)
		appendStringInfoString(&msg, " (not a Stripe error body)");
	if (should_retry && pg_strcasecmp(should_retry, "false") == 0)
		appendStringInfoString(&msg, ", Stripe-Should-Retry false");
	if (request_id && is_word_text(request_id) && strlen(request_id) <= 40)
		appendStringInfo(&msg, " [%s]", request_id);
	/* last, as the part clipped if need be */
	if (message)
		appendStringInfo(&msg, ": %s", message);

	answer_error(answer, "%s", msg.data);
	answer->retry_after_s = result->retry_after_s;
}

/*
 * Converts Stripe's amount (Stripe's smallest unit of currency) to ISO 4217
 * minor units, as paysync keeps amounts; false if it cannot be.
 */
static bool
stripe_amount_to_iso(int64 amount, const char *currency, int64 *minor)
{
	/* ISK: Stripe counts hundredths (100 is 1 krona), ISO whole kronur */
	if (strcmp(currency, "ISK") == 0)
	{
		if (amount % 100 != 0)
			return false;
		*minor = amount / 100;
		return true;
	}
	/* MGA: Stripe counts whole ariary, ISO hundredths */
	if (strcmp(currency, "MGA") == 0)
	{
		if (amount > PG_INT64_MAX / 100)
			return false;
		*minor = amount * 100;
		return true;
	}
	*minor = amount;
	return true;
}

/*
 * Fills the amount of *answer from Stripe's amount (field name, the JSON
 * text value, is_number its type) and currency of a what ("PaymentIntent",
 * "refund").  False (with *answer the error) if they are missing or not
 * what Stripe sends: a success whose amount cannot be checked is no
 * success.
 */
static bool
stripe_amount(const char *what, const char *name, const char *value, bool is_number,
			  const char *currency_text, CheckAnswer *answer)
{
	int64		amount;
	int64		minor;
	char		currency[4];

	if (value == NULL || currency_text == NULL)
	{
		answer_error(answer, "the succeeded %s has no %s", what,
					 value == NULL ? name : "currency");
		return false;
	}
	if (!is_number || !parse_minor_units(value, &amount))
	{
		answer_error(answer, "the %s's %s \"%s\" is not a whole number within range",
					 what, name, channel_text(value, 40));
		return false;
	}
	if (!currency_code_valid(currency_text))
	{
		answer_error(answer, "the %s's currency \"%s\" is not an ISO 4217 code",
					 what, channel_text(currency_text, 40));
		return false;
	}
	for (int i = 0; i < 4; i++)
		currency[i] = pg_toupper((unsigned char) currency_text[i]);
	if (!stripe_amount_to_iso(amount, currency, &minor))
	{
		answer_error(answer, "Stripe's %s %lld %s has no ISO 4217 equivalent",
					 name, (long long) amount, currency);
		return false;
	}
	return answer_paid(answer, minor, currency);
}

/*
 * Fills the paid amount of a succeeded PaymentIntent from amount_received
 * and currency, as stripe_amount() does.
 */
static bool
stripe_paid_amount(const StripeFields *fields, CheckAnswer *answer)
{
	return stripe_amount("PaymentIntent", "amount_received", fields->amount_received,
						 fields->amount_is_number, fields->currency, answer);
}

static void answer_intent(const StripeFields *fields, CheckAnswer *answer);
static void answer_refund(const StripeFields *fields, const char *refund_id,
						  CheckAnswer *answer);

/*
 * Turns Stripe's answer about a PaymentIntent, or for CHECK_REFUND about
 * the Refund id (NULL: not checked), into a status or an error.
 */
static void
stripe_interpret(const void *cfg, CheckKind kind, const char *id, const HttpResult *result,
				 CheckAnswer *answer)
{
	const StripeConfig *config = cfg;
	StripeFields fields;
	bool		parsed;

	if (kind != CHECK_QUERY && kind != CHECK_REFUND)
	{
		answer_error(answer, "driver stripe cannot close a PaymentIntent");
		return;
	}
	if (answer_transport_error(result, answer))
		return;

	parsed = stripe_read_fields(result->body, result->body_len, &fields);
	if (result->status < 200 || result->status > 299)
	{
		stripe_answer_http_error(config, result, &fields, parsed, kind == CHECK_REFUND,
								 answer);
		return;
	}
	if (!parsed || !fields.root_is_object)
	{
		answer_error(answer, "Stripe's answer (HTTP %ld) is not a JSON object", result->status);
		return;
	}
	if (kind == CHECK_REFUND)
		answer_refund(&fields, id, answer);
	else
		answer_intent(&fields, answer);
}

/*
 * Reads a Refund (an answer, or a refund event's data.object) about
 * refund_id (NULL: not checked) into *answer, its amount the refunded
 * amount: required when it succeeded, carried when given otherwise.
 */
static void
answer_refund(const StripeFields *fields, const char *refund_id, CheckAnswer *answer)
{
	const char *status = NULL;

	if (fields->duplicate)
	{
		answer_error(answer, "Stripe's answer has a field twice");
		return;
	}
	if (fields->object == NULL || strcmp(fields->object, "refund") != 0)
	{
		answer_error(answer, "Stripe's answer is not a refund (object \"%s\")",
					 channel_text(fields->object, 40));
		return;
	}
	/* a refund of ours is asked about by its id: another one is no answer */
	if (refund_id != NULL && (fields->id == NULL || strcmp(fields->id, refund_id) != 0))
	{
		answer_error(answer, "Stripe's answer is about refund \"%s\", not the refund asked about",
					 fields->id ? channel_text(fields->id, CHANNEL_WORD_MAX_BYTES) : "(none)");
		return;
	}
	if (fields->status == NULL)
	{
		answer_error(answer, "the refund has no status");
		return;
	}
	for (size_t i = 0; i < lengthof(stripe_refund_statuses); i++)
		if (strcmp(fields->status, stripe_refund_statuses[i].word) == 0)
			status = stripe_refund_statuses[i].status;
	if (status == NULL)
	{
		answer_error(answer, "unknown refund status \"%s\"",
					 channel_text(fields->status, CHANNEL_WORD_MAX_BYTES));
		return;
	}
	if ((strcmp(status, "succeeded") == 0 || fields->amount != NULL) &&
		!stripe_amount("refund", "amount", fields->amount,
					   fields->refund_amount_is_number, fields->currency, answer))
		return;
	answer_status(answer, status, fields->status);
}

/* Reads a PaymentIntent (an answer, or an event's data.object) into *answer. */
static void
answer_intent(const StripeFields *read_fields, CheckAnswer *answer)
{
	StripeFields fields = *read_fields;

	if (fields.duplicate)
	{
		answer_error(answer, "Stripe's answer has a field twice");
		return;
	}
	if (fields.object == NULL || strcmp(fields.object, "payment_intent") != 0)
	{
		answer_error(answer, "Stripe's answer is not a PaymentIntent (object \"%s\")",
					 channel_text(fields.object, 40));
		return;
	}
	if (fields.status == NULL)
	{
		answer_error(answer, "the PaymentIntent has no status");
		return;
	}

	if (strcmp(fields.status, "succeeded") == 0)
	{
		if (stripe_paid_amount(&fields, answer))
			answer_status(answer, "succeeded", fields.status);
	}
	else if (strcmp(fields.status, "canceled") == 0)
		answer_status(answer, "cancelled", fields.status);
	else if (word_in_list(fields.status, stripe_pending_statuses))
		answer_status(answer, "pending", fields.status);
	else
		answer_error(answer, "unknown PaymentIntent status \"%s\"",
					 channel_text(fields.status, CHANNEL_WORD_MAX_BYTES));
}

/*
 * Checks a Stripe-Signature header ("t=...,v1=...,v1=...,v0=...") against
 * the body: true if some v1 is the HMAC of "t.body" under secret.  *stamp
 * is set to t; false with *problem set otherwise.
 */
static bool
stripe_signature_ok(const char *header, const char *secret, const char *body,
					size_t body_len, int64 *stamp, const char **problem)
{
	char	   *copy = pstrdup(header);
	char	   *saveptr = NULL;
	char	   *t = NULL;
	int			n_t = 0;
	List	   *v1 = NIL;
	StringInfoData payload;
	bool		match = false;
	char	   *end;
	ListCell   *lc;

	for (char *item = strtok_r(copy, ",", &saveptr); item;
		 item = strtok_r(NULL, ",", &saveptr))
	{
		while (*item == ' ')
			item++;
		if (strncmp(item, "t=", 2) == 0)
		{
			t = item + 2;
			n_t++;
		}
		else if (strncmp(item, "v1=", 3) == 0)
			v1 = lappend(v1, item + 3);
	}
	if (n_t != 1 || t[0] == '\0' || strspn(t, "0123456789") != strlen(t) ||
		strlen(t) > 15)
	{
		*problem = "the Stripe-Signature header has no single timestamp t";
		return false;
	}
	if (v1 == NIL)
	{
		*problem = "the Stripe-Signature header has no v1 signature";
		return false;
	}
	*stamp = strtoll(t, &end, 10);
	initStringInfo(&payload);
	appendStringInfo(&payload, "%s.", t);
	appendBinaryStringInfo(&payload, body, (int) body_len);
	/* every v1 is checked, so the time taken says nothing of which matched */
	foreach(lc, v1)
		match |= crypto_hmac_sha256_hex_matches(secret, strlen(secret), payload.data,
												payload.len, lfirst(lc));
	if (!match)
		*problem = "no v1 signature of the Stripe-Signature header verifies with webhook_secret";
	return match;
}

/*
 * Reads the Refund of a verified refund event (type, its data.object in
 * *object) into *out: the refund, its payment (the Refund's
 * payment_intent, NULL if it has none) and its status and amount.
 */
static void
stripe_refund_notification(const char *channel, const char *type,
						   const JsonField *object, NotificationResult *out)
{
	StripeFields fields;

	if (object->raw_start == NULL ||
		!stripe_read_fields(pnstrdup(object->raw_start, object->raw_len), object->raw_len,
							&fields) ||
		!fields.root_is_object)
		notification_refused(channel, "the %s event's data.object is not a JSON object",
							 channel_text(type, CHANNEL_WORD_MAX_BYTES));
	if (fields.object == NULL || strcmp(fields.object, "refund") != 0)
		notification_refused(channel, "the %s event's data.object is not a refund",
							 channel_text(type, CHANNEL_WORD_MAX_BYTES));
	if (fields.id == NULL || fields.id[0] == '\0')
		notification_refused(channel, "the %s event's refund has no id",
							 channel_text(type, CHANNEL_WORD_MAX_BYTES));
	answer_refund(&fields, NULL, &out->answer);
	if (out->answer.is_error)
		notification_refused(channel, "%s", out->answer.error);
	out->refund_id = fields.id;
	out->payment_id = fields.payment_intent;
}

/*
 * Verifies a Stripe webhook event and reads its PaymentIntent, or for a
 * refund event its Refund.  Without webhook_secret: unverified, about the
 * PaymentIntent (or Refund) data.object.id names.
 */
static void
stripe_verify_notification(const void *cfg, const char *channel,
						   const HttpResult *notification, int64 now,
						   NotificationResult *out)
{
	const StripeConfig *config = cfg;
	JsonField	f[] = {
		{.path = "object", .only = JSON_TOKEN_STRING},
		{.path = "type", .only = JSON_TOKEN_STRING},
		{.path = "data.object"},
		{.path = "data.object.id", .only = JSON_TOKEN_STRING},
	};
	char	   *header = http_header(notification, "Stripe-Signature");
	const char *problem = NULL;
	int64		stamp = 0;
	StripeFields fields;

	out->reply_status = 200;
	out->reply_body = "";
	if (json_fields(notification->body, notification->body_len, JSON_FIELDS_OBJECT,
					f, lengthof(f)) != JSON_FIELDS_OK)
	{
		if (config->webhook_secret == NULL)
			notification_refused(channel, "the notification is not a JSON object");
		memset(f, 0, sizeof(f));	/* the signature is checked first */
	}
	if (config->webhook_secret == NULL)
	{
		bool		refund_event = f[1].value && word_in_list(f[1].value, stripe_refund_events);

		notification_unverified(out, f[1].value && strncmp(f[1].value, "payment_intent.", 15) == 0 ?
								f[3].value : NULL);
		/* the refund its event names is checked at once */
		if (refund_event && f[3].value != NULL)
			out->refund_id = f[3].value;
		return;
	}
	if (header == NULL || header[0] == '\0')
		notification_refused(channel, "the notification has no Stripe-Signature header");
	if (!stripe_signature_ok(header, config->webhook_secret, notification->body,
							 notification->body_len, &stamp, &problem))
		notification_refused(channel, "%s", problem);
	if (stamp < now - STRIPE_WEBHOOK_TOLERANCE_S || stamp > now + STRIPE_WEBHOOK_TOLERANCE_S)
		notification_refused(channel,
							 "the Stripe-Signature timestamp is %lld s off the clock (at most %d allowed)",
							 (long long) (stamp - now), STRIPE_WEBHOOK_TOLERANCE_S);
	out->verified = true;
	if (f[1].value == NULL)
		notification_refused(channel, "the notification is not a JSON object with a type");
	for (size_t i = 0; i < lengthof(f); i++)
		if (f[i].count > 1 || f[i].members > 1)
			notification_refused(channel, "the notification gives %s twice", f[i].path);
	if (f[0].value == NULL || strcmp(f[0].value, "event") != 0)
		notification_refused(channel, "the notification is not a Stripe event");
	if (word_in_list(f[1].value, stripe_refund_events))
	{
		stripe_refund_notification(channel, f[1].value, &f[2], out);
		return;
	}
	if (strncmp(f[1].value, "payment_intent.", 15) != 0)
		return;					/* another kind of event: no payment of ours */
	if (f[2].raw_start == NULL || f[3].value == NULL)
		notification_refused(channel, "the %s event has no data.object with an id",
							 channel_text(f[1].value, CHANNEL_WORD_MAX_BYTES));
	if (!stripe_read_fields(pnstrdup(f[2].raw_start, f[2].raw_len), f[2].raw_len, &fields) ||
		!fields.root_is_object)
		notification_refused(channel, "the event's data.object is not a JSON object");
	if (fields.object == NULL || strcmp(fields.object, "payment_intent") != 0)
		notification_refused(channel, "the event's data.object is not a PaymentIntent");
	answer_intent(&fields, &out->answer);
	if (out->answer.is_error)
		notification_refused(channel, "%s", out->answer.error);
	out->payment_id = f[3].value;
}

const PaysyncDriver stripe_driver = {
	.name = "stripe",
	.option_names = stripe_option_names,
	.compile = stripe_compile,
	.build_request = stripe_build_request,
	.build_refund_request = stripe_build_refund_request,
	.interpret = stripe_interpret,
	.can_close = false,
	.close_on_expiry_default = false,
	.verify_notification = stripe_verify_notification,
};
