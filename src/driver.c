/*
 * driver.c
 *		The driver registry and the helpers drivers share, so that each
 *		driver keeps only what is its channel's own: reading options,
 *		making *answer a status, an error or a paid amount, reading amounts
 *		(every step overflow-checked), and the one policy for channel text
 *		kept in channel_status, last_error or a log: secrets redacted,
 *		printable, valid in the database encoding, clipped on a character
 *		boundary.
 */
#include "postgres.h"

#include "common/int.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"

#include "driver.h"

extern const PaysyncDriver http_json_driver;
extern const PaysyncDriver stripe_driver;
extern const PaysyncDriver wechatpay_driver;
extern const PaysyncDriver alipay_driver;
extern const PaysyncDriver paypal_driver;

static const PaysyncDriver *const all_drivers[] = {
	&http_json_driver,
	&stripe_driver,
	&wechatpay_driver,
	&alipay_driver,
	&paypal_driver,
};

/* The driver called name, or NULL. */
const PaysyncDriver *
driver_lookup(const char *name)
{
	for (size_t i = 0; i < lengthof(all_drivers); i++)
		if (strcmp(all_drivers[i]->name, name) == 0)
			return all_drivers[i];
	return NULL;
}

/* The names of all drivers, for messages: "http_json, stripe, ...". */
char *
driver_names(void)
{
	StringInfoData out;

	initStringInfo(&out);
	for (size_t i = 0; i < lengthof(all_drivers); i++)
		appendStringInfo(&out, "%s%s", i > 0 ? ", " : "", all_drivers[i]->name);
	return out.data;
}

/* True if word is in the NULL-terminated list words (NULL: empty). */
bool
word_in_list(const char *word, const char *const *words)
{
	for (int i = 0; words && words[i]; i++)
		if (strcmp(words[i], word) == 0)
			return true;
	return false;
}

/*
 * The paysync status word a channel's word may be mapped to (pending or a
 * final status but expired), in its static spelling; NULL if word is none.
 */
const char *
settable_status(const char *word)
{
	static const char *const settable[] = {
		"pending", "succeeded", "failed", "cancelled", "closed"
	};

	for (size_t i = 0; i < lengthof(settable); i++)
		if (strcmp(settable[i], word) == 0)
			return settable[i];
	return NULL;
}

/*
 * Whether a driver's answer to a check of this kind may carry status: a
 * settable status, or for a close "expired" (the channel has no such
 * trade, so there is nothing to close).
 */
bool
answer_status_allowed(const char *status, CheckKind kind)
{
	return settable_status(status) != NULL ||
		(kind == CHECK_CLOSE && strcmp(status, "expired") == 0);
}

/* ---------------------------------------------------------------- options */

/* The value of top-level key in options, or NULL. */
JsonbValue *
option_value(Jsonb *options, const char *key)
{
	return getKeyJsonValueFromContainer(&options->root, key, strlen(key), NULL);
}

/*
 * Sets *value to the string option key; false if absent.  A value that is
 * not a string is an ERROR naming the option.
 */
bool
option_string(Jsonb *options, const char *key, char **value, const char *channel)
{
	JsonbValue *v = option_value(options, key);

	if (v == NULL)
		return false;
	if (v->type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 errdetail("The value must be a JSON string.")));
	*value = pnstrdup(v->val.string.val, v->val.string.len);
	return true;
}

/*
 * Sets *value to the boolean option key; false if absent.  A value that is
 * not a boolean is an ERROR naming the option.
 */
bool
option_bool(Jsonb *options, const char *key, bool *value, const char *channel)
{
	JsonbValue *v = option_value(options, key);

	if (v == NULL)
		return false;
	if (v->type != jbvBool)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 errdetail("The value must be true or false.")));
	*value = v->val.boolean;
	return true;
}

/* Frees an OpenSSL key when the memory context holding its user goes. */
static void
key_free_callback(void *arg)
{
	crypto_key_free((CryptoKey *) arg);
}

/*
 * Loads key text given in option key (for the key of one entry of an
 * object option, entry names it; else NULL): PEM, or a bare base64 body.  A
 * key that does not parse is an ERROR here, at create_channel, not a
 * failure at 3 a.m.  The key lives as long as CurrentMemoryContext.  Errors
 * name the option (and entry), never the key.
 */
CryptoKey *
option_key_text(const char *text, const char *key, const char *entry,
				bool private_key, const char *channel)
{
	char		error[160];
	CryptoKey  *loaded;
	MemoryContextCallback *cb;

	loaded = private_key ? crypto_private_key(text, error, sizeof(error)) :
		crypto_public_key(text, error, sizeof(error));
	if (loaded == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 entry ? errdetail("The key of \"%s\" does not load: %s.", entry, error) :
				 errdetail("The key does not load: %s.", error),
				 private_key ?
				 errhint("Option \"%s\" takes the private key (PEM, or the bare base64 body of a PKCS#8 or PKCS#1 key), not its public key or certificate.", key) :
				 errhint("Option \"%s\" takes a public key or certificate (PEM, or bare base64).", key)));
	cb = palloc0(sizeof(MemoryContextCallback));
	cb->func = key_free_callback;
	cb->arg = loaded;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, cb);
	return loaded;
}

/* Loads the required key option key, as option_key_text() does. */
CryptoKey *
option_key(Jsonb *options, const char *key, bool private_key, const char *channel)
{
	char	   *text;

	if (!option_string(options, key, &text, channel))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" needs option \"%s\"", channel, key)));
	return option_key_text(text, key, NULL, private_key, channel);
}

/* ---------------------------------------------------------------- channel text */

/*
 * The bytes of the character at p (at most len bytes left) if it may be
 * kept as it is in channel text; 0 if it must be replaced: a control
 * character, a byte sequence invalid in the database encoding, or in UTF-8
 * a C1 control or an invisible character that reorders or hides text.
 */
static int
keepable_char(const unsigned char *p, int len, int encoding)
{
	int			charlen;

	if (!IS_HIGHBIT_SET(*p))
		return (*p < 0x20 || *p == 0x7f) ? 0 : 1;
	charlen = pg_encoding_verifymbchar(encoding, (const char *) p, len);
	if (charlen <= 0)
		return 0;
	if (encoding == PG_UTF8)
	{
		/* U+0080..U+009F */
		if (charlen == 2 && p[0] == 0xc2 && p[1] < 0xa0)
			return 0;
		/* U+200B..U+200F, U+2028..U+202E, U+2066..U+2069 */
		if (charlen == 3 && p[0] == 0xe2 &&
			((p[1] == 0x80 && ((p[2] >= 0x8b && p[2] <= 0x8f) ||
							   (p[2] >= 0xa8 && p[2] <= 0xae))) ||
			 (p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9)))
			return 0;
	}
	return charlen;
}

/*
 * A copy of channel text (anything a channel sent: a word, a message, a
 * header) fit to keep in channel_status, last_error, a log line or
 * worker_status(): every character that is not printable or not valid in
 * the database encoding becomes "?", and the result is cut, on a
 * character boundary, to at most max_bytes bytes.  NULL gives "".  This is
 * the one policy for such text; callers never cut it by bytes themselves.
 */
char *
channel_text(const char *text, size_t max_bytes)
{
	int			encoding = GetDatabaseEncoding();
	const unsigned char *p = (const unsigned char *) (text ? text : "");
	const unsigned char *end = p + strlen((const char *) p);
	StringInfoData out;

	initStringInfo(&out);
	while (p < end)
	{
		int			keep = keepable_char(p, (int) (end - p), encoding);
		int			step = keep;

		if (keep == 0)
		{
			/* an invalid sequence is skipped a byte at a time */
			step = IS_HIGHBIT_SET(*p) ?
				Max(1, pg_encoding_verifymbchar(encoding, (const char *) p, (int) (end - p))) : 1;
			if ((size_t) out.len + 1 > max_bytes)
				break;
			appendStringInfoChar(&out, '?');
		}
		else
		{
			if ((size_t) out.len + keep > max_bytes)
				break;
			appendBinaryStringInfo(&out, (const char *) p, keep);
		}
		p += step;
	}
	return out.data;
}

/*
 * A copy of text with every occurrence of each of the n_secrets secrets
 * (empty ones aside) replaced by REDACTED_TEXT.  Give longer secrets first
 * when one may contain another.  Run it on channel text before
 * channel_text(), so that no cut leaves part of a secret.
 */
char *
redact_secrets(const char *text, const char *const *secrets, int n_secrets)
{
	char	   *current = pstrdup(text ? text : "");

	for (int i = 0; i < n_secrets; i++)
	{
		const char *secret = secrets[i];
		size_t		secret_len = secret ? strlen(secret) : 0;
		StringInfoData out;
		const char *p = current;
		const char *hit;

		if (secret_len == 0 || strstr(current, secret) == NULL)
			continue;
		initStringInfo(&out);
		while ((hit = strstr(p, secret)) != NULL)
		{
			appendBinaryStringInfo(&out, p, hit - p);
			appendStringInfoString(&out, REDACTED_TEXT);
			p = hit + secret_len;
		}
		appendStringInfoString(&out, p);
		current = out.data;
	}
	return current;
}

/* ---------------------------------------------------------------- answers */

/*
 * Makes *answer the status status (a paysync status word) with the
 * channel's own word for it (NULL: none), kept as channel_text().  Besides
 * the settable statuses, a close may answer "expired": the channel has no
 * such trade, so there is nothing to close (the checker checks the kind).
 */
void
answer_status(CheckAnswer *answer, const char *status, const char *channel_word)
{
	Assert(answer_status_allowed(status, CHECK_CLOSE));
	answer->is_error = false;
	answer->status = status;
	answer->error[0] = '\0';
	answer->channel_status = channel_word ?
		channel_text(channel_word, CHANNEL_WORD_STATUS_MAX_BYTES) : NULL;
}

/*
 * Makes *answer an error with the given message.  The message goes through
 * channel_text(): whatever the arguments hold, last_error gets printable
 * text valid in the database encoding, cut on a character boundary.
 */
void
answer_error(CheckAnswer *answer, const char *fmt,...)
{
	va_list		args;
	char		message[1024];

	answer->is_error = true;
	answer->status = NULL;
	va_start(args, fmt);
	vsnprintf(message, sizeof(message), fmt, args);
	va_end(args);
	strlcpy(answer->error, channel_text(message, sizeof(answer->error) - 1),
			sizeof(answer->error));
}

/* If the request failed in transport, makes *answer that error. */
bool
answer_transport_error(const HttpResult *result, CheckAnswer *answer)
{
	answer->retry_after_s = result->retry_after_s;
	if (result->status != 0)
		return false;
	answer_error(answer, "%s", result->error);
	return true;
}

/*
 * If the HTTP status is one the contract treats as an error whatever the
 * driver (429, 5xx), makes *answer that error.
 */
bool
answer_http_error(const HttpResult *result, CheckAnswer *answer)
{
	if (result->status == 429 || result->status >= 500)
	{
		answer_error(answer, "HTTP %ld from the channel", result->status);
		answer->retry_after_s = result->retry_after_s;
		return true;
	}
	return false;
}

/*
 * Sets the paid amount of *answer: minor units of currency (an ISO 4217
 * code in any case, kept upper-cased; NULL: the channel gave none).  False
 * with *answer the error if the currency is no code or the amount is
 * negative.
 */
bool
answer_paid(CheckAnswer *answer, int64 minor, const char *currency)
{
	answer->has_paid_amount = false;
	answer->paid_currency[0] = '\0';
	if (currency != NULL && !currency_code_valid(currency))
	{
		answer_error(answer, "the answer's currency \"%s\" is not an ISO 4217 code",
					 channel_text(currency, CHANNEL_WORD_MAX_BYTES));
		return false;
	}
	if (minor < 0)
	{
		answer_error(answer, "the answer's amount " INT64_FORMAT " is negative", minor);
		return false;
	}
	if (currency != NULL)
	{
		for (int i = 0; i < 3; i++)
			answer->paid_currency[i] = pg_toupper((unsigned char) currency[i]);
		answer->paid_currency[3] = '\0';
	}
	answer->has_paid_amount = true;
	answer->paid_amount_minor = minor;
	return true;
}

/*
 * Sets the paid amount of *answer from a decimal amount in major units
 * ("88.88") and its currency, as amount_to_minor() reads it.  False with
 * *answer the error if either is not valid.
 */
bool
answer_paid_decimal(CheckAnswer *answer, const char *amount, const char *currency)
{
	int64		minor;

	if (currency == NULL || !currency_code_valid(currency))
	{
		answer_error(answer, "the answer's currency \"%s\" is not an ISO 4217 code",
					 channel_text(currency, CHANNEL_WORD_MAX_BYTES));
		return false;
	}
	if (!amount_to_minor(amount, currency, &minor))
	{
		answer_error(answer, "the answer's amount \"%s\" is not a valid %s amount",
					 channel_text(amount, CHANNEL_WORD_MAX_BYTES), currency);
		return false;
	}
	return answer_paid(answer, minor, currency);
}

/*
 * Finds the scalar at dot path in a JSON body.  On success sets *value
 * (strings unescaped, numbers and booleans as written); otherwise makes
 * *answer the error (not JSON, missing field) and returns false.
 */
bool
json_scalar_at_path(const char *body, size_t body_len, const char *path,
					char **value, CheckAnswer *answer)
{
	JsonField	field = {.path = path};
	JsonFieldsResult result = json_fields(body, body_len, 0, &field, 1);

	if (result != JSON_FIELDS_OK)
	{
		answer_error(answer, "%s", json_fields_problem(result));
		return false;
	}
	if (field.value == NULL)
	{
		answer_error(answer, "the answer has no status at \"%s\"", path);
		return false;
	}
	*value = field.value;
	return true;
}

/* ---------------------------------------------------------------- notifications */

/*
 * Refuses a notification that fails verification: an ERROR with SQLSTATE
 * 28000 naming the channel, the reason in the detail.  The reason is
 * channel text made safe to show; callers never put a secret in it.
 */
void
notification_refused(const char *channel, const char *fmt,...)
{
	va_list		args;
	char		reason[512];

	va_start(args, fmt);
	vsnprintf(reason, sizeof(reason), fmt, args);
	va_end(args);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("notification for channel \"%s\" refused", channel),
			 errdetail("%s.", channel_text(reason, 300)),
			 errhint("Only notifications the channel signed, as it sent them, are accepted; nothing was changed.")));
	pg_unreachable();
}

/*
 * Fills *out for a notification the driver cannot verify: about
 * payment_id (or NULL), which the caller checks at once instead of
 * believing; answered 200 so that the channel stops resending.
 */
void
notification_unverified(NotificationResult *out, char *payment_id)
{
	out->verified = false;
	out->payment_id = payment_id;
	out->reply_status = 200;
	out->reply_body = "";
}

/* The value of a hex digit, or -1. */
static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes one form-encoded part ('+' is a space, %XX a byte); NULL if bad. */
static char *
form_unescape(const char *text, size_t len)
{
	char	   *out = palloc(len + 1);
	size_t		n = 0;

	for (size_t i = 0; i < len; i++)
	{
		if (text[i] == '+')
			out[n++] = ' ';
		else if (text[i] == '%')
		{
			int			hi = i + 2 < len ? hex_digit(text[i + 1]) : -1;
			int			lo = hi >= 0 ? hex_digit(text[i + 2]) : -1;

			if (lo < 0 || (hi == 0 && lo == 0))
				return NULL;	/* a bad escape, or a NUL byte */
			out[n++] = (char) (hi * 16 + lo);
			i += 2;
		}
		else
			out[n++] = text[i];
	}
	out[n] = '\0';
	return out;
}

/*
 * Decodes an application/x-www-form-urlencoded body into name/value pairs
 * (palloc'd, in order): '+' is a space and %XX a byte, so values are the
 * raw bytes the sender encoded, in whatever charset it declared.  The one
 * form decoder: callers convert charsets.  False if the body is not a
 * form (a bad escape, a NUL byte, a part without "=", an empty name).
 */
bool
form_decode(const char *body, size_t len, FormParam **params, int *n)
{
	int			max = 1;
	size_t		start = 0;

	for (size_t i = 0; i < len; i++)
		max += (body[i] == '&');
	*params = palloc0(sizeof(FormParam) * max);
	*n = 0;
	if (len == 0)
		return false;
	while (start <= len)
	{
		const char *part = body + start;
		const char *amp = memchr(part, '&', len - start);
		size_t		part_len = amp ? (size_t) (amp - part) : len - start;
		const char *eq = memchr(part, '=', part_len);
		FormParam  *p = &(*params)[*n];

		if (memchr(part, '\0', part_len) != NULL || eq == NULL || eq == part)
			return false;
		p->name = form_unescape(part, eq - part);
		p->value = form_unescape(eq + 1, part_len - (eq - part) - 1);
		if (p->name == NULL || p->value == NULL || p->name[0] == '\0')
			return false;
		(*n)++;
		if (amp == NULL)
			break;
		start += part_len + 1;
	}
	return true;
}

/*
 * The value of form parameter name (the first one), or NULL; *count (if
 * not NULL) set to how many times it is given.
 */
const char *
form_value(const FormParam *params, int n, const char *name, int *count)
{
	const char *found = NULL;
	int			times = 0;

	for (int i = 0; i < n; i++)
	{
		if (strcmp(params[i].name, name) != 0)
			continue;
		if (found == NULL)
			found = params[i].value;
		times++;
	}
	if (count)
		*count = times;
	return found;
}

/* ---------------------------------------------------------------- amounts */

/* True if currency is three ASCII letters, as ISO 4217 codes are. */
bool
currency_code_valid(const char *currency)
{
	if (currency == NULL || strlen(currency) != 3)
		return false;
	for (int i = 0; i < 3; i++)
		if (!((currency[i] >= 'A' && currency[i] <= 'Z') ||
			  (currency[i] >= 'a' && currency[i] <= 'z')))
			return false;
	return true;
}

/* Digits after the decimal point of a currency's minor unit (ISO 4217). */
static int
currency_exponent(const char *currency)
{
	static const char *const zero[] = {
		"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
		"UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF", NULL
	};
	static const char *const three[] = {
		"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND", NULL
	};

	for (int i = 0; zero[i]; i++)
		if (pg_strcasecmp(currency, zero[i]) == 0)
			return 0;
	for (int i = 0; three[i]; i++)
		if (pg_strcasecmp(currency, three[i]) == 0)
			return 3;
	return 2;
}

/*
 * *value * 10 + digit, false (and *value untouched) if that does not fit
 * in an int64.
 */
static bool
append_digit(int64 *value, int digit)
{
	int64		result;

	if (pg_mul_s64_overflow(*value, 10, &result) ||
		pg_add_s64_overflow(result, digit, &result))
		return false;
	*value = result;
	return true;
}

/*
 * Reads a whole number of minor units ("1999"): ASCII digits only, no
 * sign, no point.  False if it is anything else or does not fit in an
 * int64.
 */
bool
parse_minor_units(const char *text, int64 *minor)
{
	int64		value = 0;

	if (text == NULL || *text == '\0')
		return false;
	for (const char *p = text; *p; p++)
		if (*p < '0' || *p > '9' || !append_digit(&value, *p - '0'))
			return false;
	*minor = value;
	return true;
}

/*
 * Converts a decimal amount in major units ("88.88") to minor units of
 * currency (8888).  False if it is not a plain non-negative decimal, has
 * more digits after the point than the currency has that are not zeros
 * ("1000.00" JPY is 1000, "1000.50" JPY is refused), or does not fit in an
 * int64.
 */
bool
amount_to_minor(const char *decimal, const char *currency, int64 *minor)
{
	int			exponent = currency_exponent(currency);
	int64		value = 0;
	int			fraction_digits = -1;	/* -1: no point yet */
	bool		digits = false;

	if (decimal == NULL || *decimal == '\0')
		return false;
	for (const char *p = decimal; *p; p++)
	{
		if (*p == '.' && fraction_digits < 0)
		{
			fraction_digits = 0;
			continue;
		}
		if (*p < '0' || *p > '9')
			return false;
		digits = true;
		if (fraction_digits >= 0 && fraction_digits >= exponent)
		{
			/* beyond the minor unit: only zeros say nothing more */
			if (*p != '0')
				return false;
			continue;
		}
		if (!append_digit(&value, *p - '0'))
			return false;
		if (fraction_digits >= 0)
			fraction_digits++;
	}
	if (!digits)
		return false;
	for (int i = Max(fraction_digits, 0); i < exponent; i++)
		if (!append_digit(&value, 0))
			return false;
	*minor = value;
	return true;
}
