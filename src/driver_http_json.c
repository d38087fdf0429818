/*
 * driver_http_json.c
 *		Driver "http_json": a channel whose status query is one HTTP request
 *		(GET, or POST with a body template) answered with JSON, the status
 *		at a dot path mapped to a paysync status by the channel's status_map.
 *		A refund's query is the same request at refund_path, its status at
 *		refund_status_field mapped by refund_status_map (the payment ones
 *		when absent).  With amount_field (and currency_field), answers of
 *		both kinds carry the amount paid or refunded, which the state
 *		machine checks.
 *
 *		Notifications: with webhook_secret and webhook_signature_header, the
 *		header must hold the hex HMAC-SHA256 of the raw body under the
 *		secret (compared in constant time); the payment id is read at
 *		webhook_id_field and the status as in an answer.  Without them a
 *		notification is not believed: the payment webhook_id_field names (if
 *		any) is checked at once.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/json.h"

#include "driver.h"

#define PAYMENT_ID_PLACEHOLDER "{payment_id}"
#define REFUND_ID_PLACEHOLDER "{refund_id}"

/* A status_map: the channel's words, each to a paysync status. */
typedef struct StatusMap
{
	char	  **from;
	const char **to;
	int			n;
} StatusMap;

typedef struct HttpJsonConfig
{
	char	   *path;			/* appended to base_url, with placeholder */
	char	   *refund_path;	/* a refund's, with placeholders */
	char	   *refund_status_field;	/* dot path of a refund's status */
	StatusMap	refund_map;		/* refund_status_map, or status_map */
	char	   *amount_field;	/* dot path of the amount in minor units,
								 * or NULL: no amount check */
	char	   *currency_field; /* dot path of its currency, or NULL */
	bool		post;
	char	   *body;			/* POST body template, or NULL */
	char	  **headers;		/* "Name: value" lines, secrets possibly */
	int			n_headers;
	bool		has_content_type;
	char	   *status_field;	/* dot path into the answer */
	StatusMap	map;			/* status_map */
	const char *not_found;		/* paysync status for HTTP 404 */
	const char **secrets;		/* header values and their long words, */
	int			n_secrets;		/* longest first: redacted in errors */
	char	   *webhook_secret; /* signs notifications; secret; or NULL */
	char	   *webhook_signature_header;	/* where the signature is */
	char	   *webhook_id_field;	/* dot path of the payment id, or NULL */
} HttpJsonConfig;

/* Words of a header value at least this long are redacted on their own. */
#define SECRET_WORD_MIN_BYTES 8

static const char *const http_json_option_names[] = {
	"path", "method", "body", "headers", "status_field", "status_map",
	"not_found", "webhook_secret", "webhook_signature_header", "webhook_id_field",
	"refund_path", "refund_status_field", "refund_status_map", "amount_field",
	"currency_field", NULL
};

/* Replaces every placeholder in template with replacement. */
static char *
fill_one(const char *template, const char *placeholder, const char *replacement)
{
	StringInfoData out;
	const char *p = template;
	const char *hit;

	initStringInfo(&out);
	while ((hit = strstr(p, placeholder)) != NULL)
	{
		appendBinaryStringInfo(&out, p, hit - p);
		appendStringInfoString(&out, replacement);
		p = hit + strlen(placeholder);
	}
	appendStringInfoString(&out, p);
	return out.data;
}

/*
 * Fills template's {payment_id} and, when refund_id is given, its
 * {refund_id}, in one pass each over the template (a replacement is
 * never scanned again: an id holding "{refund_id}" stays as it is).
 */
static char *
fill_placeholder(const char *template, const char *payment_id, const char *refund_id)
{
	StringInfoData out;
	const char *p = template;

	if (refund_id == NULL)
		return fill_one(template, PAYMENT_ID_PLACEHOLDER, payment_id);
	initStringInfo(&out);
	while (*p)
	{
		if (strncmp(p, PAYMENT_ID_PLACEHOLDER, strlen(PAYMENT_ID_PLACEHOLDER)) == 0)
		{
			appendStringInfoString(&out, payment_id);
			p += strlen(PAYMENT_ID_PLACEHOLDER);
		}
		else if (strncmp(p, REFUND_ID_PLACEHOLDER, strlen(REFUND_ID_PLACEHOLDER)) == 0)
		{
			appendStringInfoString(&out, refund_id);
			p += strlen(REFUND_ID_PLACEHOLDER);
		}
		else
			appendStringInfoChar(&out, *p++);
	}
	return out.data;
}

/* True if name is an HTTP header name (an RFC 9110 token). */
static bool
is_header_name(const char *name)
{
	if (*name == '\0')
		return false;
	for (const char *p = name; *p; p++)
		if (!(isalnum((unsigned char) *p) || strchr("!#$%&'*+-.^_`|~", *p)))
			return false;
	return true;
}

/* Orders secrets longest first, so that none is redacted only in part. */
static int
secret_cmp(const void *a, const void *b)
{
	size_t		len_a = strlen(*(const char *const *) a);
	size_t		len_b = strlen(*(const char *const *) b);

	return (len_a < len_b) - (len_a > len_b);
}

/*
 * Notes a header value as a secret to redact from channel text kept in
 * errors (a channel may echo the request): the whole value, and each of
 * its blank-separated words of SECRET_WORD_MIN_BYTES or more ("Bearer
 * sk_..." gives "sk_..." too).
 */
static void
add_header_secrets(HttpJsonConfig *config, const char *value)
{
	char	   *copy = pstrdup(value);
	char	   *saveptr = NULL;
	int			words = 1;

	for (const char *p = value; *p; p++)
		words += (*p == ' ' || *p == '\t');
	config->secrets = config->secrets ?
		repalloc(config->secrets, sizeof(char *) * (config->n_secrets + 1 + words)) :
		palloc(sizeof(char *) * (1 + words));
	config->secrets[config->n_secrets++] = pstrdup(value);
	for (char *word = strtok_r(copy, " \t", &saveptr); word;
		 word = strtok_r(NULL, " \t", &saveptr))
		if (strlen(word) >= SECRET_WORD_MIN_BYTES && strcmp(word, value) != 0)
			config->secrets[config->n_secrets++] = word;
	qsort(config->secrets, config->n_secrets, sizeof(char *), secret_cmp);
}

/* Reads the "headers" option; error messages name headers, never values. */
static void
compile_headers(HttpJsonConfig *config, Jsonb *options, const char *channel)
{
	JsonbValue *v = option_value(options, "headers");
	JsonbIterator *it;
	JsonbValue	item;
	JsonbIteratorToken tok;
	char	   *name = NULL;

	if (v == NULL)
		return;
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"headers\" of channel \"%s\"", channel),
				 errdetail("The value must be a JSON object of header names to values.")));

	config->headers = palloc0(sizeof(char *) * (JsonContainerSize(v->val.binary.data) + 1));
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &item, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			name = pnstrdup(item.val.string.val, item.val.string.len);
			if (!is_header_name(name))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid header name \"%s\" in option \"headers\" of channel \"%s\"",
								name, channel)));
		}
		else if (tok == WJB_VALUE)
		{
			char	   *value;

			if (item.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid value for header \"%s\" of channel \"%s\"", name, channel),
						 errdetail("The value must be a JSON string.")));
			value = pnstrdup(item.val.string.val, item.val.string.len);
			if (strpbrk(value, "\r\n") != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid value for header \"%s\" of channel \"%s\"", name, channel),
						 errdetail("The value contains a line break.")));
			if (pg_strcasecmp(name, "Content-Type") == 0)
				config->has_content_type = true;
			config->headers[config->n_headers++] = psprintf("%s: %s", name, value);
			add_header_secrets(config, value);
		}
	}
}

/* Reads a status map option, key (required when required). */
static void
compile_status_map(StatusMap *map, const char *key, bool required, Jsonb *options,
				   const char *channel)
{
	JsonbValue *v = option_value(options, key);
	JsonbIterator *it;
	JsonbValue	item;
	JsonbIteratorToken tok;
	char	   *word = NULL;
	int			size;

	if (v == NULL && !required)
		return;
	if (v == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" needs option \"status_map\"", channel),
				 errhint("Map each of the channel's status words to pending, succeeded, failed, cancelled or closed, e.g. {\"status_map\": {\"PAID\": \"succeeded\", \"WAIT\": \"pending\"}}.")));
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data) ||
		JsonContainerSize(v->val.binary.data) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 errdetail("The value must be a non-empty JSON object.")));

	size = JsonContainerSize(v->val.binary.data);
	map->from = palloc0(sizeof(char *) * size);
	map->to = palloc0(sizeof(char *) * size);
	map->n = 0;
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &item, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			word = pnstrdup(item.val.string.val, item.val.string.len);
		else if (tok == WJB_VALUE)
		{
			char	   *target = item.type == jbvString ?
				pnstrdup(item.val.string.val, item.val.string.len) : "(not a string)";
			const char *status = settable_status(target);

			if (status == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
						 errdetail("\"%s\" maps to \"%s\".", word, target),
						 errhint("Map to pending, succeeded, failed, cancelled or closed.")));
			map->from[map->n] = word;
			map->to[map->n] = status;
			map->n++;
		}
	}
}

/* Checks that option key's value f is a dot path of at most 32 names. */
static void
check_dot_path(const char *key, const char *f, const char *channel)
{
	int			segments = 1;

	for (const char *p = f; *p; p++)
		segments += (*p == '.');
	if (f[0] == '\0' || f[0] == '.' || f[strlen(f) - 1] == '.' ||
		strstr(f, "..") != NULL || segments > 32)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\": \"%s\"", key, channel, f),
				 errhint("Give a dot path of at most 32 field names, such as data.trade_state.")));
}

/*
 * Reads the notification options: webhook_secret and
 * webhook_signature_header go together and need webhook_id_field.
 * Messages never show the secret.
 */
static void
compile_webhook(HttpJsonConfig *config, Jsonb *options, const char *channel)
{
	bool		has_secret = option_string(options, "webhook_secret",
										   &config->webhook_secret, channel);
	bool		has_header = option_string(options, "webhook_signature_header",
										   &config->webhook_signature_header, channel);

	if (option_string(options, "webhook_id_field", &config->webhook_id_field, channel))
		check_dot_path("webhook_id_field", config->webhook_id_field, channel);
	if (has_secret != has_header)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" needs option \"%s\"", channel,
						has_secret ? "webhook_signature_header" : "webhook_secret"),
				 errdetail("Options webhook_secret and webhook_signature_header go together.")));
	if (has_secret && config->webhook_id_field == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" needs option \"webhook_id_field\"", channel),
				 errdetail("Verified notifications need the dot path of the payment id in their body.")));
	if (has_secret && strlen(config->webhook_secret) < 16)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"webhook_secret\" of channel \"%s\"", channel),
				 errdetail("The secret has %zu bytes; at least 16 are needed.",
						   strlen(config->webhook_secret))));
	if (has_header && !is_header_name(config->webhook_signature_header))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"webhook_signature_header\" of channel \"%s\": \"%s\"",
						channel, config->webhook_signature_header),
				 errhint("Give an HTTP header name, such as X-Signature.")));
}

/* Checks and compiles the options of an http_json channel. */
static void *
http_json_compile(const char *channel, const char *base_url, Jsonb *options)
{
	HttpJsonConfig *config = palloc0(sizeof(HttpJsonConfig));
	char	   *method = NULL;
	char	   *not_found = NULL;
	char	   *sample_url;
	char		urlerr[160];

	config->path = "/" PAYMENT_ID_PLACEHOLDER;
	if (option_string(options, "path", &config->path, channel) &&
		config->path[0] != '/')
		config->path = psprintf("/%s", config->path);

	sample_url = url_join(base_url, fill_placeholder(config->path, "T0001", NULL));
	if (!http_url_valid(sample_url, urlerr, sizeof(urlerr)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"path\" of channel \"%s\"", channel),
				 errdetail("%s", urlerr)));

	config->refund_path = "/refunds/" REFUND_ID_PLACEHOLDER;
	if (option_string(options, "refund_path", &config->refund_path, channel) &&
		config->refund_path[0] != '/')
		config->refund_path = psprintf("/%s", config->refund_path);
	sample_url = url_join(base_url, fill_placeholder(config->refund_path, "T0001", "R0001"));
	if (!http_url_valid(sample_url, urlerr, sizeof(urlerr)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"refund_path\" of channel \"%s\"", channel),
				 errdetail("%s", urlerr)));

	if (option_string(options, "method", &method, channel))
	{
		if (pg_strcasecmp(method, "POST") == 0)
			config->post = true;
		else if (pg_strcasecmp(method, "GET") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"method\" of channel \"%s\": \"%s\"", channel, method),
					 errhint("Use GET or POST.")));
	}
	if (option_string(options, "body", &config->body, channel) && !config->post)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"body\" of channel \"%s\" needs \"method\": \"POST\"", channel)));

	compile_headers(config, options, channel);

	config->status_field = "status";
	option_string(options, "status_field", &config->status_field, channel);
	check_dot_path("status_field", config->status_field, channel);
	compile_webhook(config, options, channel);

	compile_status_map(&config->map, "status_map", true, options, channel);
	config->refund_status_field = config->status_field;
	if (option_string(options, "refund_status_field", &config->refund_status_field, channel))
		check_dot_path("refund_status_field", config->refund_status_field, channel);
	config->refund_map = config->map;
	compile_status_map(&config->refund_map, "refund_status_map", false, options, channel);
	if (option_string(options, "amount_field", &config->amount_field, channel))
		check_dot_path("amount_field", config->amount_field, channel);
	if (option_string(options, "currency_field", &config->currency_field, channel))
	{
		check_dot_path("currency_field", config->currency_field, channel);
		if (config->amount_field == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"currency_field\" of channel \"%s\" needs \"amount_field\"", channel)));
	}

	config->not_found = "pending";
	if (option_string(options, "not_found", &not_found, channel))
	{
		config->not_found = settable_status(not_found);
		if (config->not_found == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"not_found\" of channel \"%s\": \"%s\"", channel, not_found),
					 errhint("Use pending, succeeded, failed, cancelled or closed.")));
	}
	return config;
}

/* text JSON-escaped without its quotes: the template supplies its own */
static char *
json_escaped(const char *text)
{
	StringInfoData quoted;

	initStringInfo(&quoted);
	escape_json(&quoted, text);
	quoted.data[quoted.len - 1] = '\0';
	return quoted.data + 1;
}

/*
 * Builds the query for one payment (refund_id NULL) or one refund: the
 * path's placeholders URL-encoded, the POST body's JSON-escaped.
 */
static void
build_query(const HttpJsonConfig *config, const char *base_url,
			const char *payment_id, const char *refund_id, HttpRequest *request)
{
	const char **headers = palloc(sizeof(char *) * (config->n_headers + 2));
	int			n = 0;

	request->url = url_join(base_url,
							fill_placeholder(refund_id ? config->refund_path : config->path,
											 http_escape_segment(payment_id),
											 refund_id ? http_escape_segment(refund_id) : NULL));
	request->post = config->post;
	request->body = NULL;
	if (config->post)
		request->body = fill_placeholder(config->body ? config->body : "",
										 json_escaped(payment_id),
										 refund_id ? json_escaped(refund_id) : NULL);

	headers[n++] = "Accept: application/json";
	if (config->post && !config->has_content_type)
		headers[n++] = "Content-Type: application/json";
	for (int i = 0; i < config->n_headers; i++)
		headers[n++] = config->headers[i];
	request->headers = headers;
	request->n_headers = n;
}

/* Builds the status query for one payment. */
static void
http_json_build_request(const void *cfg, const char *base_url,
						const char *payment_id, CheckKind kind,
						const char *token, HttpRequest *request)
{
	build_query(cfg, base_url, payment_id, NULL, request);
}

/* Builds the status query for one refund, at refund_path. */
static void
http_json_build_refund_request(const void *cfg, const char *base_url,
							   const char *payment_id, const char *refund_id,
							   const char *token, HttpRequest *request)
{
	build_query(cfg, base_url, payment_id, refund_id, request);
}

/*
 * The amount at amount_field (minor units: a JSON integer, or a string of
 * digits) and the currency at currency_field of an answer, into *answer.
 * False with *answer the error if they are given and not valid; an
 * amount_field the answer lacks gives no amount (nothing to check).
 */
static bool
read_amount(const HttpJsonConfig *config, const JsonField *amount,
			const JsonField *currency, CheckAnswer *answer)
{
	int64		minor;

	if (config->amount_field == NULL || amount->value == NULL)
		return true;
	if (amount->count > 1 || (currency && currency->count > 1))
	{
		answer_error(answer, "the answer gives its amount or currency twice");
		return false;
	}
	if ((amount->type != JSON_TOKEN_NUMBER && amount->type != JSON_TOKEN_STRING) ||
		!parse_minor_units(amount->value, &minor))
	{
		answer_error(answer, "the answer's amount \"%s\" at \"%s\" is not a whole number of minor units",
					 channel_text(amount->value, CHANNEL_WORD_MAX_BYTES), config->amount_field);
		return false;
	}
	return answer_paid(answer, minor,
					   currency && currency->type == JSON_TOKEN_STRING ? currency->value : NULL);
}

/*
 * Turns an answer into a status or an error: a payment's (status_field,
 * status_map; HTTP 404 is not_found), or for CHECK_REFUND a refund's
 * (refund_status_field, refund_status_map; HTTP 404, a refund the channel
 * does not know, is an error).  With amount_field, the amount is read
 * too, in the same pass over the answer.
 */
static void
http_json_interpret(const void *cfg, CheckKind kind, const char *payment_id, const HttpResult *result,
					CheckAnswer *answer)
{
	const HttpJsonConfig *config = cfg;
	bool		refund = (kind == CHECK_REFUND);
	const StatusMap *map = refund ? &config->refund_map : &config->map;
	JsonField	f[3] = {{.path = refund ? config->refund_status_field : config->status_field},
	{.path = config->amount_field}, {.path = config->currency_field}};
	int			n_fields = config->currency_field ? 3 : config->amount_field ? 2 : 1;
	JsonFieldsResult parsed;
	char	   *word;

	if (answer_transport_error(result, answer) || answer_http_error(result, answer))
		return;
	if (result->status == 404 && refund)
	{
		answer_error(answer, "the channel knows no refund \"%s\" (HTTP 404)",
					 channel_text(payment_id ? payment_id : "", CHANNEL_WORD_MAX_BYTES));
		return;
	}
	if (result->status == 404)
	{
		answer_status(answer, config->not_found, "HTTP 404");
		return;
	}
	if (result->status < 200 || result->status > 299)
	{
		answer_error(answer, "unexpected HTTP %ld from the channel", result->status);
		return;
	}
	parsed = json_fields(result->body, result->body_len, 0, f, n_fields);
	if (parsed != JSON_FIELDS_OK)
	{
		answer_error(answer, "%s", json_fields_problem(parsed));
		return;
	}
	if (f[0].value == NULL)
	{
		answer_error(answer, "the answer has no status at \"%s\"", f[0].path);
		return;
	}
	word = f[0].value;
	for (int i = 0; i < map->n; i++)
	{
		if (strcmp(map->from[i], word) == 0)
		{
			answer_status(answer, map->to[i], word);
			if (n_fields > 1)
				(void) read_amount(config, &f[1], n_fields > 2 ? &f[2] : NULL, answer);
			return;
		}
	}
	/* the channel may echo the request: its headers are redacted */
	answer_error(answer, "unknown channel status \"%s\" (not in %s)",
				 channel_text(redact_secrets(word, config->secrets, config->n_secrets),
							  CHANNEL_WORD_MAX_BYTES),
				 refund && map != &config->map ? "refund_status_map" : "status_map");
}

/*
 * Verifies a notification: the hex HMAC-SHA256 of the raw body in
 * webhook_signature_header; the payment id at webhook_id_field and the
 * status at status_field, mapped by status_map.  Without webhook_secret:
 * unverified, about the payment webhook_id_field names, if any.
 */
static void
http_json_verify_notification(const void *cfg, const char *channel,
							  const HttpResult *notification, int64 now,
							  NotificationResult *out)
{
	const HttpJsonConfig *config = cfg;
	JsonField	f[2] = {{.path = config->status_field}, {.path = NULL}};
	char	   *signature;
	int			n_fields = 1;

	out->reply_status = 200;
	out->reply_body = "";
	if (config->webhook_secret == NULL)
	{
		JsonField	id = {.path = config->webhook_id_field};

		if (config->webhook_id_field == NULL ||
			json_fields(notification->body, notification->body_len, 0, &id, 1) != JSON_FIELDS_OK ||
			id.type != JSON_TOKEN_STRING)
			id.value = NULL;
		notification_unverified(out, id.value);
		return;
	}
	signature = http_header(notification, config->webhook_signature_header);
	if (signature == NULL || signature[0] == '\0')
		notification_refused(channel, "the notification has no %s header",
							 config->webhook_signature_header);
	if (!crypto_hmac_sha256_hex_matches(config->webhook_secret, strlen(config->webhook_secret),
										notification->body, notification->body_len, signature))
		notification_refused(channel, "the notification's %s does not verify with webhook_secret",
							 config->webhook_signature_header);
	out->verified = true;

	f[1].path = config->webhook_id_field;
	n_fields = 2;
	if (json_fields(notification->body, notification->body_len, 0, f, n_fields) != JSON_FIELDS_OK)
		notification_refused(channel, "the notification is not JSON");
	if (f[0].count > 1 || f[1].count > 1)
		notification_refused(channel, "the notification gives a field twice");
	if (f[1].value == NULL || f[1].type != JSON_TOKEN_STRING || f[1].value[0] == '\0')
		notification_refused(channel, "the notification has no payment id (a string) at \"%s\"",
							 config->webhook_id_field);
	if (f[0].value == NULL)
		notification_refused(channel, "the notification has no status at \"%s\"",
							 config->status_field);
	for (int i = 0; i < config->map.n; i++)
	{
		if (strcmp(config->map.from[i], f[0].value) == 0)
		{
			answer_status(&out->answer, config->map.to[i], f[0].value);
			out->payment_id = f[1].value;
			return;
		}
	}
	notification_refused(channel, "unknown channel status \"%s\" (not in status_map)",
						 channel_text(f[0].value, CHANNEL_WORD_MAX_BYTES));
}

const PaysyncDriver http_json_driver = {
	.name = "http_json",
	.option_names = http_json_option_names,
	.compile = http_json_compile,
	.build_request = http_json_build_request,
	.build_refund_request = http_json_build_refund_request,
	.interpret = http_json_interpret,
	.verify_notification = http_json_verify_notification,
};
