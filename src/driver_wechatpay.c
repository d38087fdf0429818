/*
 * driver_wechatpay.c
 *		Driver "wechatpay": WeChat Pay API v3, query by merchant order number
 *		(GET /v3/pay/transactions/out-trade-no/{id}?mchid=) and close an
 *		unpaid trade (POST .../{id}/close).
 *
 *		Every request carries an Authorization header of scheme
 *		WECHATPAY2-SHA256-RSA2048: a SHA256withRSA signature, by the
 *		merchant's private key, of "METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\n
 *		BODY\n", with the merchant id, the merchant certificate's serial
 *		number, the timestamp and a fresh nonce.  Every answer that could
 *		give a status is verified first: its Wechatpay-Signature must be a
 *		signature by the platform key of "TIMESTAMP\nNONCE\nBODY\n" (from
 *		the Wechatpay-Timestamp and Wechatpay-Nonce headers and the raw
 *		body), its timestamp within five minutes of the clock, and, when
 *		platform_serial is set, its Wechatpay-Serial that serial.  An answer
 *		that fails any of this is an error, never a status.
 *
 *		Notifications (WeChat Pay API v3 payment callbacks) are verified the
 *		same way (the Wechatpay-* headers over the raw body), then their
 *		resource is decrypted with AEAD_AES_256_GCM under api_v3_key with its
 *		nonce and associated_data; the transaction inside is read as a query
 *		answer is, its mchid required to be the channel's.
 *		platform_public_key may also be an object of Wechatpay-Serial to key:
 *		the platform certificates of a rotation, or WeChat Pay public keys
 *		(serials PUB_KEY_ID_...); each answer is then verified with the key
 *		its Wechatpay-Serial names, and a serial not named is an error
 *		naming it (wechatpay_key_for_serial(), for callbacks too).
 *
 *		Refunds (0.4): GET /v3/refund/domestic/refunds/{out_refund_no},
 *		signed and verified as the payment query (a direct merchant sends no
 *		mchid with it).  Its status SUCCESS is succeeded, ABNORMAL failed
 *		(the refund did not reach the buyer, a card frozen or cancelled: a
 *		person must act at the merchant platform), CLOSED closed, PROCESSING
 *		pending; amount.refund (fen) is the refunded amount.  A 404
 *		RESOURCE_NOT_EXISTS (no such refund), signed or not, is an error:
 *		it never ends a refund.  REFUND.SUCCESS, REFUND.ABNORMAL and
 *		REFUND.CLOSED callbacks are verified and decrypted as payment
 *		callbacks; their resource says refund_status.
 *
 *		WeChat Pay may leave error answers unsigned.  Unverified, 404
 *		ORDER_NOT_EXIST to a query is pending (nothing is paid); a close
 *		answer that would end the payment (ORDERPAID, ORDER_CLOSED,
 *		ORDER_NOT_EXIST, 204) but does not verify is "pending", so that a
 *		signed query settles it.  A verified close ORDER_NOT_EXIST is
 *		"expired" (nothing to close); 202 USERPAYING is "pending", queried
 *		again in 5 s.
 */
#include "postgres.h"

#include <time.h>

#include "lib/stringinfo.h"
#include "utils/jsonb.h"

#include "driver.h"
#include "driver_wechatpay.h"

#define WECHATPAY_SCHEME "WECHATPAY2-SHA256-RSA2048"

/* A word of the channel's (error code, trade state) as kept in errors. */
#define channel_word(text) channel_text((text), CHANNEL_WORD_MAX_BYTES)

/* How far an answer's timestamp may be from the clock, in seconds. */
#define WECHATPAY_MAX_SKEW_S 300

/* The largest unverified error answer whose code is read. */
#define WECHATPAY_REFUSAL_MAX 4096

/* WeChat Pay's "the buyer is paying: query again in 5 s" (close answered 202). */
#define WECHATPAY_USER_PAYING_RETRY_S 5

/*
 * After a close answer that would end the payment but cannot be verified,
 * the signed query that settles it comes this much later: an unsigned
 * answer never ends a payment, nor makes paysync ask in a tight loop.
 */
#define WECHATPAY_UNVERIFIED_RETRY_S 60

/* One platform key and the Wechatpay-Serial that names it. */
typedef struct WechatpayPlatformKey
{
	char	   *serial;			/* a certificate serial or PUB_KEY_ID_... */
	CryptoKey  *key;
} WechatpayPlatformKey;

typedef struct WechatpayConfig
{
	char	   *mchid;			/* merchant id */
	char	   *merchant_serial_no; /* merchant API certificate serial */
	CryptoKey  *merchant_key;	/* signs requests; secret */
	CryptoKey  *platform_key;	/* verifies answers (one key given), or NULL */
	char	   *platform_serial;	/* the answers' Wechatpay-Serial, or NULL */
	char	   *api_v3_key;		/* decrypts notifications; secret; or NULL */
	WechatpayPlatformKey *platform_keys;	/* platform_public_key an object */
	int			n_platform_keys;
	char	   *base;			/* base_url without trailing slashes */
	char	   *base_path;		/* its path part ("" if none), signed too */
} WechatpayConfig;

/* What a WeChat Pay JSON answer says, as far as this driver cares. */
typedef struct WechatpayAnswer
{
	char	   *trade_state;
	char	   *mchid;
	char	   *out_trade_no;
	char	   *code;			/* error answers */
	char	   *total;			/* amount.total, as written */
	char	   *currency;		/* amount.currency */
	JsonTokenType total_type;

	/* a refund (query answer, or a REFUND.* callback's resource) */
	char	   *status;			/* refund status (the query's "status") */
	char	   *refund_status;	/* the callback's word for it */
	char	   *out_refund_no;
	char	   *refund;			/* amount.refund, as written */
	JsonTokenType refund_type;
} WechatpayAnswer;

/* refund status (query "status", callback "refund_status") to paysync status. */
static const struct
{
	const char *word;
	const char *status;
}			refund_statuses[] = {
	{"SUCCESS", "succeeded"},
	{"ABNORMAL", "failed"},		/* a person must act: see the header */
	{"CLOSED", "closed"},
	{"PROCESSING", "pending"},
};

static const char *const wechatpay_option_names[] = {
	"mchid", "merchant_serial_no", "merchant_private_key",
	"platform_public_key", "platform_serial", "api_v3_key", NULL
};

/* trade_state to paysync status. */
static const struct
{
	const char *trade_state;
	const char *status;
}			trade_states[] = {
	{"SUCCESS", "succeeded"},
	{"REFUND", "succeeded"},
	{"NOTPAY", "pending"},
	{"USERPAYING", "pending"},
	{"CLOSED", "closed"},
	{"REVOKED", "cancelled"},
	{"PAYERROR", "failed"},
};

/*
 * True if text is 1 to max_len characters, each an ASCII letter or digit
 * or one of extra.
 */
static bool
is_plain_word(const char *text, size_t max_len, const char *extra)
{
	size_t		len = strlen(text);

	if (len == 0 || len > max_len)
		return false;
	for (const char *p = text; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
			  (*p >= 'A' && *p <= 'Z') || (*extra && strchr(extra, *p))))
			return false;
	return true;
}

/* Reads a required string option that must be a plain word. */
static char *
word_option(Jsonb *options, const char *key, size_t max_len, const char *extra,
			const char *what, const char *channel)
{
	char	   *value;

	if (!option_string(options, key, &value, channel))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" needs option \"%s\"", channel, key),
				 errhint("%s", what)));
	if (!is_plain_word(value, max_len, extra))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 errhint("%s", what)));
	return value;
}

/*
 * Splits base_url into the part requests start with (no trailing slash)
 * and its path, which is part of the signed message.  A query or fragment
 * in base_url, or dot segments curl would rewrite, are an ERROR: the path
 * signed must be the path sent.
 */
static void
split_base_url(WechatpayConfig *config, const char *base_url, const char *channel)
{
	const char *host;
	const char *path;
	size_t		len = strlen(base_url);

	if (strpbrk(base_url, "?#") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid base_url for channel \"%s\"", channel),
				 errdetail("Driver wechatpay takes no query or fragment in it."),
				 errhint("Use https://api.mch.weixin.qq.com.")));
	while (len > 0 && base_url[len - 1] == '/')
		len--;
	config->base = pnstrdup(base_url, len);
	host = strstr(config->base, "://");
	path = strchr(host ? host + 3 : config->base, '/');
	config->base_path = pstrdup(path ? path : "");
	if (strstr(config->base_path, "/./") || strstr(config->base_path, "/../") ||
		strstr(config->base_path, "//") ||
		(len >= 2 && strcmp(config->base + len - 2, "/.") == 0) ||
		(len >= 3 && strcmp(config->base + len - 3, "/..") == 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid base_url for channel \"%s\"", channel),
				 errdetail("Its path has empty or dot segments.")));
}

/*
 * Compiles platform_public_key given as an object of Wechatpay-Serial to
 * key (PEM, or bare base64; a certificate or a WeChat Pay public key, whose
 * serial starts PUB_KEY_ID_): the keys of a certificate rotation, or of a
 * move to WeChat Pay public keys.  ERROR naming the serial on anything
 * invalid.
 */
static void
compile_platform_keys(WechatpayConfig *config, JsonbValue *platform, const char *channel)
{
	JsonbIterator *it;
	JsonbValue	key;
	JsonbValue	value;
	JsonbIteratorToken token;
	int			capacity = 4;

	if (!JsonContainerIsObject(platform->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"platform_public_key\" of channel \"%s\"", channel),
				 errdetail("The value must be a JSON string (one key) or an object of serial to key.")));
	config->platform_keys = palloc(sizeof(WechatpayPlatformKey) * capacity);
	it = JsonbIteratorInit(platform->val.binary.data);
	while ((token = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		char	   *serial;

		if (token != WJB_KEY)
			continue;
		serial = pnstrdup(key.val.string.val, key.val.string.len);
		token = JsonbIteratorNext(&it, &value, true);
		if (!is_plain_word(serial, 64, "_"))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid serial \"%s\" in option \"platform_public_key\" of channel \"%s\"",
							channel_word(serial), channel),
					 errhint("Each key of the object is the serial of a platform certificate or a WeChat Pay public key ID (PUB_KEY_ID_...).")));
		if (token != WJB_VALUE || value.type != jbvString)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"platform_public_key\" of channel \"%s\"", channel),
					 errdetail("The key of \"%s\" must be a JSON string.", serial)));
		if (config->n_platform_keys == capacity)
		{
			capacity *= 2;
			config->platform_keys = repalloc(config->platform_keys,
											 sizeof(WechatpayPlatformKey) * capacity);
		}
		config->platform_keys[config->n_platform_keys].serial = serial;
		config->platform_keys[config->n_platform_keys].key =
			option_key_text(pnstrdup(value.val.string.val, value.val.string.len),
							"platform_public_key", serial, false, channel);
		config->n_platform_keys++;
	}
	if (config->n_platform_keys == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"platform_public_key\" of channel \"%s\"", channel),
				 errdetail("The object names no key.")));
}

/* Checks and compiles the options of a wechatpay channel. */
static void *
wechatpay_compile(const char *channel, const char *base_url, Jsonb *options)
{
	WechatpayConfig *config = palloc0(sizeof(WechatpayConfig));
	char	   *serial;
	JsonbValue *platform;

	split_base_url(config, base_url, channel);
	config->mchid = word_option(options, "mchid", 32, "",
								"mchid is the merchant id WeChat Pay issued, digits such as \"1900009191\".",
								channel);
	config->merchant_serial_no =
		word_option(options, "merchant_serial_no", 64, "",
					"merchant_serial_no is the serial number of the merchant API certificate, 40 hex digits.",
					channel);
	config->merchant_key = option_key(options, "merchant_private_key", true, channel);
	platform = option_value(options, "platform_public_key");
	if (platform != NULL && platform->type == jbvBinary)
		compile_platform_keys(config, platform, channel);
	else
		config->platform_key = option_key(options, "platform_public_key", false, channel);
	if (option_string(options, "platform_serial", &serial, channel))
	{
		if (config->n_platform_keys > 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option \"platform_serial\" of channel \"%s\" goes with one platform_public_key only", channel),
					 errdetail("platform_public_key is an object: its keys are the serials."),
					 errhint("Leave platform_serial out.")));
		if (!is_plain_word(serial, 64, "_"))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for option \"platform_serial\" of channel \"%s\"", channel),
					 errhint("platform_serial is the serial of the platform certificate or the WeChat Pay public key ID (PUB_KEY_ID_...).")));
		config->platform_serial = serial;
	}
	if (option_string(options, "api_v3_key", &config->api_v3_key, channel) &&
		strlen(config->api_v3_key) != CRYPTO_AES256_KEY_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"api_v3_key\" of channel \"%s\"", channel),
				 errdetail("The key has %zu bytes; an APIv3 key has %d.",
						   strlen(config->api_v3_key), CRYPTO_AES256_KEY_LEN),
				 errhint("Give the 32-character APIv3 key set in the WeChat Pay merchant platform.")));
	return config;
}

/*
 * The Authorization header value for a request: the merchant's signature
 * of method, path (with query), timestamp, nonce and body.  NULL if signing
 * failed (error says why).
 */
static char *
wechatpay_authorization(CryptoKey *key, const char *mchid, const char *serial_no,
						const char *method, const char *path, const char *timestamp,
						const char *nonce, const char *body, char *error, size_t errlen)
{
	char	   *message = psprintf("%s\n%s\n%s\n%s\n%s\n", method, path, timestamp,
								   nonce, body ? body : "");
	char	   *signature = crypto_sign_b64(key, message, strlen(message), error, errlen);
	char	   *header;

	if (signature == NULL)
		return NULL;
	header = psprintf(WECHATPAY_SCHEME " mchid=\"%s\",nonce_str=\"%s\",signature=\"%s\","
					  "timestamp=\"%s\",serial_no=\"%s\"",
					  mchid, nonce, signature, timestamp, serial_no);
	free(signature);
	return header;
}

/*
 * Fills *request with a signed request: path (base_path included, query
 * too: the bytes signed are the bytes sent) and, for a POST, body.
 */
static void
wechatpay_build_signed(const WechatpayConfig *config, const char *path,
					   const char *body, HttpRequest *request)
{
	const char **headers = palloc(sizeof(char *) * 4);
	const char *method = body ? "POST" : "GET";
	char	   *timestamp;
	char		nonce[33];
	char		error[160];
	char	   *authorization;
	int			n = 0;

	request->body = body ? pstrdup(body) : NULL;
	request->post = (body != NULL);
	request->url = psprintf("%s%s", config->base, path + strlen(config->base_path));

	timestamp = psprintf("%lld", (long long) time(NULL));
	if (!crypto_random_hex(nonce, 16))
		nonce[0] = '\0';
	authorization = nonce[0] ?
		wechatpay_authorization(config->merchant_key, config->mchid,
								config->merchant_serial_no, method, path, timestamp,
								nonce, request->body, error, sizeof(error)) : NULL;

	/*
	 * Without a signature the request still goes out: WeChat Pay refuses it
	 * (401 SIGN_ERROR), which is an error answer, retried like any other.
	 */
	if (authorization)
		headers[n++] = psprintf("Authorization: %s", authorization);
	headers[n++] = "Accept: application/json";
	if (request->post)
		headers[n++] = "Content-Type: application/json";
	request->headers = headers;
	request->n_headers = n;
}

/* Builds the status query, or the close call, for one payment. */
static void
wechatpay_build_request(const void *cfg, const char *base_url,
						const char *payment_id, CheckKind kind,
						const char *token, HttpRequest *request)
{
	const WechatpayConfig *config = cfg;

	if (kind == CHECK_CLOSE)
	{
		/* mchid is letters and digits only: nothing to escape */
		wechatpay_build_signed(config,
							   psprintf("%s/v3/pay/transactions/out-trade-no/%s/close",
										config->base_path, http_escape_segment(payment_id)),
							   psprintf("{\"mchid\":\"%s\"}", config->mchid), request);
	}
	else
		wechatpay_build_signed(config,
							   psprintf("%s/v3/pay/transactions/out-trade-no/%s?mchid=%s",
										config->base_path, http_escape_segment(payment_id),
										config->mchid),
							   NULL, request);
}

/*
 * Builds the status query of one refund, by the merchant's refund number
 * (GET /v3/refund/domestic/refunds/{out_refund_no}; a direct merchant sends
 * no mchid), signed as the payment query.
 */
static void
wechatpay_build_refund_request(const void *cfg, const char *base_url,
							   const char *payment_id, const char *refund_id,
							   const char *token, HttpRequest *request)
{
	const WechatpayConfig *config = cfg;

	wechatpay_build_signed(config,
						   psprintf("%s/v3/refund/domestic/refunds/%s",
									config->base_path, http_escape_segment(refund_id)),
						   NULL, request);
}

/*
 * Verifies that an answer comes from WeChat Pay: the signature headers are
 * there, the signature of "timestamp\nnonce\nbody\n" verifies with the
 * platform key, the serial is the configured one (if any), and the
 * timestamp is within WECHATPAY_MAX_SKEW_S of now.  False with a message
 * (never a secret) otherwise.
 */
static bool
wechatpay_verify(CryptoKey *platform_key, const char *platform_serial,
				 const HttpResult *result, int64 now, char *error, size_t errlen)
{
	char	   *timestamp = http_header(result, "Wechatpay-Timestamp");
	char	   *nonce = http_header(result, "Wechatpay-Nonce");
	char	   *signature = http_header(result, "Wechatpay-Signature");
	char	   *serial = http_header(result, "Wechatpay-Serial");
	char	   *type = http_header(result, "Wechatpay-Signature-Type");
	StringInfoData message;
	int64		stamp = 0;

	if (timestamp == NULL || nonce == NULL || signature == NULL ||
		timestamp[0] == '\0' || nonce[0] == '\0' || signature[0] == '\0')
	{
		snprintf(error, errlen, "the answer is not signed (no %s header)",
				 (timestamp == NULL || timestamp[0] == '\0') ? "Wechatpay-Timestamp" :
				 (nonce == NULL || nonce[0] == '\0') ? "Wechatpay-Nonce" :
				 "Wechatpay-Signature");
		return false;
	}
	if (type != NULL && strcmp(type, WECHATPAY_SCHEME) != 0)
	{
		snprintf(error, errlen, "the answer is signed with %s, not " WECHATPAY_SCHEME,
				 channel_word(type));
		return false;
	}
	if (platform_serial != NULL)
	{
		if (serial == NULL)
		{
			snprintf(error, errlen, "the answer has no Wechatpay-Serial header");
			return false;
		}
		if (pg_strcasecmp(serial, platform_serial) != 0)
		{
			snprintf(error, errlen,
					 "the answer is signed by platform key %s, not platform_serial %s",
					 channel_word(serial), platform_serial);
			return false;
		}
	}

	for (const char *p = timestamp; *p; p++)
	{
		if (*p < '0' || *p > '9' || p - timestamp >= 15)
		{
			snprintf(error, errlen, "the answer's Wechatpay-Timestamp is not a number");
			return false;
		}
		stamp = stamp * 10 + (*p - '0');
	}

	initStringInfo(&message);
	appendStringInfo(&message, "%s\n%s\n", timestamp, nonce);
	appendBinaryStringInfo(&message, result->body ? result->body : "",
						   result->body ? (int) result->body_len : 0);
	appendStringInfoChar(&message, '\n');
	if (!crypto_verify_b64(platform_key, message.data, message.len, signature))
	{
		snprintf(error, errlen,
				 "the answer's Wechatpay-Signature does not verify with platform_public_key%s",
				 strncmp(signature, "WECHATPAY/SIGNTEST/", 19) == 0 ?
				 " (a WeChat Pay signature test)" : "");
		return false;
	}
	if (stamp < now - WECHATPAY_MAX_SKEW_S || stamp > now + WECHATPAY_MAX_SKEW_S)
	{
		snprintf(error, errlen,
				 "the answer's Wechatpay-Timestamp is %lld s off the clock (at most %d allowed)",
				 (long long) (stamp - now), WECHATPAY_MAX_SKEW_S);
		return false;
	}
	return true;
}

/*
 * The platform key that verifies what WeChat Pay signed with the key its
 * Wechatpay-Serial names (serial, NULL if absent), for answers and
 * callbacks alike: with platform_public_key an object, the key of that
 * serial; with one key, that key, if the serial is platform_serial when
 * that is set.  NULL with a message naming the serial (never a key) if no
 * configured key is the one named.  config is the driver's compiled config.
 */
CryptoKey *
wechatpay_key_for_serial(const void *cfg, const char *serial, char *error, size_t errlen)
{
	const WechatpayConfig *config = cfg;

	if (config->n_platform_keys > 0)
	{
		if (serial == NULL || serial[0] == '\0')
		{
			snprintf(error, errlen, "the answer has no Wechatpay-Serial header");
			return NULL;
		}
		for (int i = 0; i < config->n_platform_keys; i++)
			if (pg_strcasecmp(serial, config->platform_keys[i].serial) == 0)
				return config->platform_keys[i].key;
		snprintf(error, errlen,
				 "the answer is signed by platform key %s, which platform_public_key does not name",
				 channel_word(serial));
		return NULL;
	}
	if (config->platform_serial != NULL)
	{
		if (serial == NULL)
		{
			snprintf(error, errlen, "the answer has no Wechatpay-Serial header");
			return NULL;
		}
		if (pg_strcasecmp(serial, config->platform_serial) != 0)
		{
			snprintf(error, errlen,
					 "the answer is signed by platform key %s, not platform_serial %s",
					 channel_word(serial), config->platform_serial);
			return NULL;
		}
	}
	return config->platform_key;
}

/*
 * Verifies an answer with the platform key its Wechatpay-Serial names
 * (wechatpay_verify() says what is checked).  False with a message
 * otherwise.
 */
static bool
verify_with_named_key(const WechatpayConfig *config, const HttpResult *result,
					  int64 now, char *error, size_t errlen)
{
	char	   *signature = http_header(result, "Wechatpay-Signature");
	CryptoKey  *key = config->platform_key;

	/* an unsigned answer is refused as such, whatever its serial */
	if (signature != NULL && signature[0] != '\0')
	{
		key = wechatpay_key_for_serial(config, http_header(result, "Wechatpay-Serial"),
									   error, errlen);
		if (key == NULL)
			return false;
	}
	return wechatpay_verify(key, NULL, result, now, error, errlen);
}

/*
 * Reads a WeChat Pay JSON answer (an object) into *parsed.  False with the
 * error in *answer if the body is not a JSON object.
 */
static bool
wechatpay_parse(const HttpResult *result, WechatpayAnswer *parsed, CheckAnswer *answer)
{
	JsonField	f[] = {
		{.path = "trade_state", .only = JSON_TOKEN_STRING},
		{.path = "mchid", .only = JSON_TOKEN_STRING},
		{.path = "out_trade_no", .only = JSON_TOKEN_STRING},
		{.path = "code", .only = JSON_TOKEN_STRING},
		{.path = "amount.total"},
		{.path = "amount.currency", .only = JSON_TOKEN_STRING},
		{.path = "status", .only = JSON_TOKEN_STRING},
		{.path = "refund_status", .only = JSON_TOKEN_STRING},
		{.path = "out_refund_no", .only = JSON_TOKEN_STRING},
		{.path = "amount.refund"},
	};
	JsonFieldsResult read;

	memset(parsed, 0, sizeof(*parsed));
	read = result->body_len == 0 ? JSON_FIELDS_BAD_TEXT :
		json_fields(result->body, result->body_len, JSON_FIELDS_OBJECT, f, lengthof(f));
	if (read == JSON_FIELDS_BAD_TEXT)
	{
		answer_error(answer, "the answer is not valid JSON text (HTTP %ld)", result->status);
		return false;
	}
	if (read != JSON_FIELDS_OK)
	{
		answer_error(answer, "the answer is not a JSON object (HTTP %ld)", result->status);
		return false;
	}
	parsed->trade_state = f[0].value;
	parsed->mchid = f[1].value;
	parsed->out_trade_no = f[2].value;
	parsed->code = f[3].value;
	parsed->total = f[4].value;
	parsed->total_type = f[4].type;
	parsed->currency = f[5].value;
	parsed->status = f[6].value;
	parsed->refund_status = f[7].value;
	parsed->out_refund_no = f[8].value;
	parsed->refund = f[9].value;
	parsed->refund_type = f[9].type;
	return true;
}

/*
 * Fills the paid amount of a paid trade from amount.total (in the
 * currency's minor unit, fen for CNY) and amount.currency.  False with the
 * error in *answer if it is missing or not a whole number.
 */
static bool
paid_amount(const WechatpayAnswer *parsed, CheckAnswer *answer)
{
	int64		total;

	if (parsed->total == NULL)
	{
		answer_error(answer, "the answer for a paid trade has no amount.total");
		return false;
	}
	if (parsed->total_type != JSON_TOKEN_NUMBER || !parse_minor_units(parsed->total, &total))
	{
		answer_error(answer, "the answer's amount.total \"%s\" is not a whole number of minor units within range",
					 channel_word(parsed->total));
		return false;
	}
	return answer_paid(answer, total, parsed->currency);
}

/*
 * Reads the error code of an answer that gives no status, to say it in the
 * error; parsed is NULL if there is none.  Such answers are not verified
 * (a 401 is not even signed), so only a small body is parsed.
 */
static bool
parse_refusal(const HttpResult *result, WechatpayAnswer *parsed)
{
	CheckAnswer ignored;

	memset(&ignored, 0, sizeof(ignored));
	return result->body_len <= WECHATPAY_REFUSAL_MAX &&
		wechatpay_parse(result, parsed, &ignored);
}

/* Makes *answer the error for an HTTP status that gives no status. */
static void
answer_refusal(const HttpResult *result, const WechatpayAnswer *parsed,
			   CheckAnswer *answer)
{
	const char *code = parsed && parsed->code ? channel_word(parsed->code) : NULL;

	if (result->status == 401)
		answer_error(answer,
					 "HTTP 401 from the channel%s%s: it refused the request signature (check mchid, merchant_serial_no and merchant_private_key)",
					 code ? ": " : "", code ? code : "");
	else
		answer_error(answer, "unexpected HTTP %ld from the channel%s%s",
					 result->status, code ? ": " : "", code ? code : "");
}

static void answer_transaction(const WechatpayConfig *config, const char *payment_id,
							   const WechatpayAnswer *parsed, CheckAnswer *answer);

/*
 * Interprets the answer to a status query about payment_id (NULL: not
 * checked, for unit tests).
 */
static void
interpret_query(const WechatpayConfig *config, const char *payment_id,
				const HttpResult *result, CheckAnswer *answer)
{
	WechatpayAnswer parsed;
	char		error[200];

	if (result->status != 200 && result->status != 404)
	{
		answer_refusal(result, parse_refusal(result, &parsed) ? &parsed : NULL, answer);
		return;
	}
	if (!verify_with_named_key(config, result, (int64) time(NULL), error, sizeof(error)))
	{
		/*
		 * WeChat Pay may leave error answers unsigned.  "No such order" says
		 * nothing paid, so unsigned it is pending as well, never final.
		 */
		if (result->status == 404 && parse_refusal(result, &parsed) &&
			parsed.code && strcmp(parsed.code, "ORDER_NOT_EXIST") == 0)
			answer_status(answer, "pending", "ORDER_NOT_EXIST");
		else
			answer_error(answer, "%s", error);
		return;
	}
	if (!wechatpay_parse(result, &parsed, answer))
		return;

	if (result->status == 404)
	{
		/* a trade WeChat Pay does not know (yet): not paid */
		if (parsed.code && strcmp(parsed.code, "ORDER_NOT_EXIST") == 0)
			answer_status(answer, "pending", "ORDER_NOT_EXIST");
		else
			answer_refusal(result, &parsed, answer);
		return;
	}

	answer_transaction(config, payment_id, &parsed, answer);
}

/*
 * Reads a transaction (a query answer, or a notification's decrypted
 * resource) about payment_id (NULL: not checked) into *answer.
 */
static void
answer_transaction(const WechatpayConfig *config, const char *payment_id,
				   const WechatpayAnswer *parsed_answer, CheckAnswer *answer)
{
	WechatpayAnswer parsed = *parsed_answer;

	if (parsed.trade_state == NULL)
	{
		answer_error(answer, "the answer has no trade_state");
		return;
	}
	if (parsed.mchid != NULL && strcmp(parsed.mchid, config->mchid) != 0)
	{
		answer_error(answer, "the answer is about merchant %s, not mchid %s",
					 channel_word(parsed.mchid), config->mchid);
		return;
	}
	/* a genuine signed answer about another trade (replayed) is no answer */
	if (payment_id != NULL &&
		(parsed.out_trade_no == NULL || strcmp(parsed.out_trade_no, payment_id) != 0))
	{
		answer_error(answer, "the answer is about out_trade_no \"%s\", not the payment asked about",
					 parsed.out_trade_no ? channel_word(parsed.out_trade_no) : "(none)");
		return;
	}
	for (size_t i = 0; i < lengthof(trade_states); i++)
	{
		if (strcmp(parsed.trade_state, trade_states[i].trade_state) != 0)
			continue;
		if (strcmp(trade_states[i].status, "succeeded") == 0 &&
			!paid_amount(&parsed, answer))
			return;
		answer_status(answer, trade_states[i].status, trade_states[i].trade_state);
		return;
	}
	answer_error(answer, "unknown trade_state \"%s\"", channel_word(parsed.trade_state));
}

/*
 * Reads a refund (a query answer, status in parsed->status, or a REFUND.*
 * callback's resource, in parsed->refund_status) about refund_id (NULL:
 * not checked) into *answer: its status, and amount.refund (fen) as the
 * refunded amount, required when it succeeded.
 */
static void
answer_refund(const WechatpayConfig *config, const char *refund_id,
			  const WechatpayAnswer *parsed, bool callback, CheckAnswer *answer)
{
	const char *word = callback ? parsed->refund_status : parsed->status;
	const char *status = NULL;
	int64		refund;

	if (word == NULL)
	{
		answer_error(answer, "the refund answer has no %s",
					 callback ? "refund_status" : "status");
		return;
	}
	if (parsed->mchid != NULL && strcmp(parsed->mchid, config->mchid) != 0)
	{
		answer_error(answer, "the answer is about merchant %s, not mchid %s",
					 channel_word(parsed->mchid), config->mchid);
		return;
	}
	/* a genuine signed answer about another refund (replayed) is no answer */
	if (refund_id != NULL &&
		(parsed->out_refund_no == NULL || strcmp(parsed->out_refund_no, refund_id) != 0))
	{
		answer_error(answer, "the answer is about out_refund_no \"%s\", not the refund asked about",
					 parsed->out_refund_no ? channel_word(parsed->out_refund_no) : "(none)");
		return;
	}
	for (size_t i = 0; i < lengthof(refund_statuses); i++)
		if (strcmp(word, refund_statuses[i].word) == 0)
			status = refund_statuses[i].status;
	if (status == NULL)
	{
		answer_error(answer, "unknown refund status \"%s\"", channel_word(word));
		return;
	}
	if (parsed->refund == NULL && strcmp(status, "succeeded") == 0)
	{
		answer_error(answer, "the answer for a succeeded refund has no amount.refund");
		return;
	}
	if (parsed->refund != NULL)
	{
		if (parsed->refund_type != JSON_TOKEN_NUMBER ||
			!parse_minor_units(parsed->refund, &refund))
		{
			answer_error(answer, "the answer's amount.refund \"%s\" is not a whole number of minor units within range",
						 channel_word(parsed->refund));
			return;
		}
		if (!answer_paid(answer, refund, parsed->currency))
			return;
	}
	answer_status(answer, status, word);
}

/*
 * Interprets the answer to a refund query about refund_id (NULL: not
 * checked).  Unlike a payment's "no such order", a refund WeChat Pay does
 * not know (404 RESOURCE_NOT_EXISTS) is an error, signed or not: it may be
 * one whose creation never got through, which only the schedule ends.
 */
static void
interpret_refund(const WechatpayConfig *config, const char *refund_id,
				 const HttpResult *result, CheckAnswer *answer)
{
	WechatpayAnswer parsed;
	char		error[200];

	if (result->status == 404 && parse_refusal(result, &parsed) && parsed.code &&
		strcmp(parsed.code, "RESOURCE_NOT_EXISTS") == 0)
	{
		answer_error(answer, "WeChat Pay has no such refund (HTTP 404 RESOURCE_NOT_EXISTS)");
		return;
	}
	if (result->status != 200)
	{
		answer_refusal(result, parse_refusal(result, &parsed) ? &parsed : NULL, answer);
		return;
	}
	if (!verify_with_named_key(config, result, (int64) time(NULL), error, sizeof(error)))
	{
		answer_error(answer, "%s", error);
		return;
	}
	if (!wechatpay_parse(result, &parsed, answer))
		return;
	answer_refund(config, refund_id, &parsed, false, answer);
}

/* True if code is one of WeChat Pay's words for "the buyer is paying". */
static bool
is_user_paying(const char *code)
{
	return code != NULL &&
		(strcmp(code, "USERPAYING") == 0 || strcmp(code, "USER_PAYING") == 0);
}

/*
 * Interprets the answer to a close call: 204 is closed; an error code
 * saying the trade was paid meanwhile (ORDERPAID) is succeeded, one saying
 * it is closed already (ORDER_CLOSED) closed, one saying there is no such
 * order (ORDER_NOT_EXIST) expired: nothing to close.  Those need a verified
 * answer: one that does not verify is "pending" (a signed query settles it,
 * WECHATPAY_UNVERIFIED_RETRY_S later).  202 USERPAYING (the buyer is paying)
 * is "pending", queried again in 5 s.  Anything else is an error (the close
 * is retried).
 */
static void
interpret_close(const WechatpayConfig *config, const HttpResult *result,
				CheckAnswer *answer)
{
	WechatpayAnswer parsed;
	bool		parsed_ok = false;
	const char *status = NULL;
	const char *word = NULL;
	char		error[200];

	if (result->status == 204)
	{
		status = "closed";
		word = "CLOSED";
	}
	else if (result->status == 202)
	{
		parsed_ok = parse_refusal(result, &parsed);
		if (parsed_ok && is_user_paying(parsed.code))
		{
			/*
			 * Nothing final: verified or not, query again in 5 s.  Only a
			 * verified word is kept as channel_status.
			 */
			bool		verified = verify_with_named_key(config, result, (int64) time(NULL), error,
														 sizeof(error));

			answer_status(answer, "pending", verified ? parsed.code : NULL);
			answer->retry_after_s = Max(answer->retry_after_s, WECHATPAY_USER_PAYING_RETRY_S);
			return;
		}
	}
	else if (result->status >= 400 && result->status < 500)
	{
		parsed_ok = parse_refusal(result, &parsed);
		if (parsed_ok && parsed.code && strcmp(parsed.code, "ORDERPAID") == 0)
		{
			status = "succeeded";
			word = "ORDERPAID";
		}
		else if (parsed_ok && parsed.code && strcmp(parsed.code, "ORDER_CLOSED") == 0)
		{
			status = "closed";
			word = "ORDER_CLOSED";
		}
		else if (parsed_ok && parsed.code && strcmp(parsed.code, "ORDER_NOT_EXIST") == 0)
		{
			status = "expired";
			word = "ORDER_NOT_EXIST";
		}
	}
	if (status == NULL)
	{
		if (result->status >= 200 && result->status < 300)
			answer_error(answer, "unexpected HTTP %ld from the channel to a close (204 expected)",
						 result->status);
		else
			answer_refusal(result, parsed_ok ? &parsed : NULL, answer);
		return;
	}
	if (!verify_with_named_key(config, result, (int64) time(NULL), error, sizeof(error)))
	{
		/*
		 * Never final unverified: a signed query says what became of it.
		 * The unverified word is not kept either.
		 */
		answer_status(answer, "pending", NULL);
		answer->retry_after_s = Max(answer->retry_after_s, WECHATPAY_UNVERIFIED_RETRY_S);
		return;
	}
	answer_status(answer, status, word);
}

/*
 * Turns an answer into a status or an error; payment_id is the id asked
 * about, for CHECK_REFUND the refund's out_refund_no.
 */
static void
wechatpay_interpret(const void *cfg, CheckKind kind, const char *payment_id, const HttpResult *result,
					CheckAnswer *answer)
{
	const WechatpayConfig *config = cfg;

	if (answer_transport_error(result, answer) || answer_http_error(result, answer))
		return;
	if (kind == CHECK_CLOSE)
		interpret_close(config, result, answer);
	else if (kind == CHECK_REFUND)
		interpret_refund(config, payment_id, result, answer);
	else
		interpret_query(config, payment_id, result, answer);
}

/*
 * Verifies a payment notification (WeChat Pay API v3 callback): the
 * signature headers as for an answer, the five-minute window, then the
 * resource decrypted with api_v3_key.  A TRANSACTION.* event gives the
 * transaction's status, a REFUND.* event (SUCCESS, ABNORMAL, CLOSED) the
 * refund's; other events are about no payment.  Without
 * api_v3_key the payment cannot be read: unverified, no payment.
 */
static void
wechatpay_verify_notification(const void *cfg, const char *channel,
							  const HttpResult *notification, int64 now,
							  NotificationResult *out)
{
	const WechatpayConfig *config = cfg;
	JsonField	f[] = {
		{.path = "event_type", .only = JSON_TOKEN_STRING},
		{.path = "resource.algorithm", .only = JSON_TOKEN_STRING},
		{.path = "resource.ciphertext", .only = JSON_TOKEN_STRING},
		{.path = "resource.associated_data", .only = JSON_TOKEN_STRING},
		{.path = "resource.nonce", .only = JSON_TOKEN_STRING},
	};
	char		error[200];
	unsigned char *sealed;
	size_t		sealed_len;
	unsigned char *plain;
	size_t		plain_len;
	const char *aad;
	HttpResult	decrypted;
	WechatpayAnswer parsed;
	bool		refund_event;

	out->reply_status = 204;
	out->reply_body = "";
	/* the key its Wechatpay-Serial names, as for answers */
	if (!verify_with_named_key(config, notification, now, error, sizeof(error)))
		notification_refused(channel, "%s", error);
	out->verified = true;
	if (config->api_v3_key == NULL)
	{
		/* signed, but sealed with a key paysync was not given */
		notification_unverified(out, NULL);
		out->reply_status = 204;
		return;
	}
	if (json_fields(notification->body, notification->body_len,
					JSON_FIELDS_OBJECT, f, lengthof(f)) != JSON_FIELDS_OK)
		notification_refused(channel, "the notification is not a JSON object");
	for (size_t i = 0; i < lengthof(f); i++)
		if (f[i].count > 1 || f[i].members > 1)
			notification_refused(channel, "the notification gives %s twice", f[i].path);
	if (f[0].value == NULL)
		notification_refused(channel, "the notification has no event_type");
	refund_event = strncmp(f[0].value, "REFUND.", 7) == 0;
	if (strncmp(f[0].value, "TRANSACTION.", 12) != 0 && !refund_event)
		return;					/* another event: no payment of ours */
	if (f[1].value == NULL || strcmp(f[1].value, "AEAD_AES_256_GCM") != 0)
		notification_refused(channel, "the notification's resource is not sealed with AEAD_AES_256_GCM");
	if (f[2].value == NULL || f[4].value == NULL)
		notification_refused(channel, "the notification's resource has no %s",
							 f[2].value == NULL ? "ciphertext" : "nonce");
	sealed = crypto_b64_decode(f[2].value, &sealed_len);
	if (sealed == NULL)
		notification_refused(channel, "the notification's resource ciphertext is not base64");
	aad = f[3].value ? f[3].value : "";
	plain = crypto_aes256gcm_decrypt((const unsigned char *) config->api_v3_key,
									 (const unsigned char *) f[4].value, strlen(f[4].value),
									 (const unsigned char *) aad, strlen(aad),
									 sealed, sealed_len, &plain_len);
	free(sealed);
	if (plain == NULL)
		notification_refused(channel, "the notification's resource does not decrypt with api_v3_key");

	memset(&decrypted, 0, sizeof(decrypted));
	decrypted.status = 200;
	decrypted.body = pnstrdup((char *) plain, plain_len);
	decrypted.body_len = plain_len;
	free(plain);
	if (!wechatpay_parse(&decrypted, &parsed, &out->answer))
		notification_refused(channel, "the notification's resource is not a %s: %s",
							 refund_event ? "refund" : "transaction", out->answer.error);
	if (parsed.mchid == NULL || strcmp(parsed.mchid, config->mchid) != 0)
		notification_refused(channel, "the notification is about merchant %s, not mchid %s",
							 parsed.mchid ? channel_word(parsed.mchid) : "(none)", config->mchid);
	if (refund_event)
	{
		if (parsed.out_refund_no == NULL || parsed.out_refund_no[0] == '\0')
			notification_refused(channel, "the notification's refund has no out_refund_no");
		answer_refund(config, NULL, &parsed, true, &out->answer);
		if (out->answer.is_error)
			notification_refused(channel, "%s", out->answer.error);
		out->refund_id = parsed.out_refund_no;
		out->payment_id = parsed.out_trade_no;
		return;
	}
	if (parsed.out_trade_no == NULL || parsed.out_trade_no[0] == '\0')
		notification_refused(channel, "the notification's transaction has no out_trade_no");
	answer_transaction(config, parsed.out_trade_no, &parsed, &out->answer);
	if (out->answer.is_error)
		notification_refused(channel, "%s", out->answer.error);
	out->payment_id = parsed.out_trade_no;
}

const PaysyncDriver wechatpay_driver = {
	.name = "wechatpay",
	.option_names = wechatpay_option_names,
	.compile = wechatpay_compile,
	.build_request = wechatpay_build_request,
	.build_refund_request = wechatpay_build_refund_request,
	.interpret = wechatpay_interpret,
	.can_close = true,
	.close_on_expiry_default = true,
	.verify_notification = wechatpay_verify_notification,
};
