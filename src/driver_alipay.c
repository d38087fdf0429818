/*
 * driver_alipay.c
 *		Driver "alipay": asks Alipay's OpenAPI gateway what became of a trade
 *		with alipay.trade.query, and closes unpaid trades paysync gives up on
 *		with alipay.trade.close.
 *
 *		Requests carry the common parameters (app_id, method, format,
 *		charset, sign_type, timestamp in Asia/Shanghai time, version) in the
 *		query string and biz_content ({"out_trade_no": ...}) as a POST form,
 *		signed RSA2 (SHA256withRSA with the merchant's application private
 *		key) over every parameter but sign, sorted by name, as key=value
 *		joined by "&", unencoded.
 *
 *		Certificate mode (公钥证书模式: options app_cert, alipay_cert and
 *		alipay_root_cert in place of alipay_public_key): requests also carry
 *		app_cert_sn and alipay_root_cert_sn, computed as Alipay specifies
 *		(crypto_cert_sn(), crypto_root_cert_sn()), and answers are verified
 *		with the key of alipay_cert.
 *
 *		Answers look like {"alipay_trade_query_response": {...}, "sign": ...};
 *		the signature is verified with Alipay's public key over the raw bytes
 *		of the response object exactly as they came (located with
 *		PostgreSQL's JSON parser, never re-serialised), and if that fails
 *		over the same text with "\/" unescaped, as Alipay's SDKs do.  An
 *		answer that is not signed, or whose signature does not verify, is an
 *		error whatever it says.
 *
 *		trade_status WAIT_BUYER_PAY is pending, TRADE_SUCCESS and
 *		TRADE_FINISHED succeeded, TRADE_CLOSED closed; sub_code
 *		ACQ.TRADE_NOT_EXIST (the buyer has not opened the trade yet) is
 *		pending.  total_amount (yuan, a decimal string) is the paid amount.
 *
 *		Closing: code 10000 from alipay.trade.close is closed.  When Alipay
 *		refuses because the trade no longer awaits payment
 *		(ACQ.TRADE_STATUS_ERROR), its answer does not say whether the buyer
 *		paid or the trade closed by itself: the close's answer is "pending",
 *		which makes the core query the trade again, and alipay.trade.query's
 *		TRADE_SUCCESS/TRADE_FINISHED is succeeded (paid meanwhile, amount
 *		checked) and TRADE_CLOSED closed.
 *
 *		Notifications (the asynchronous notification, notify_url) are
 *		form-encoded: every parameter but sign and sign_type, decoded, sorted
 *		by name and joined as key=value with "&" is the text sign verifies
 *		(RSA2) with Alipay's public key, in the charset the notification
 *		declares; app_id must be the channel's; trade_status is read as in a
 *		query answer, total_amount the paid amount.  The reply is "success".
 *		checked) and TRADE_CLOSED closed.  A close answered
 *		ACQ.TRADE_NOT_EXIST (the trade never existed at Alipay: nobody
 *		opened it) is "expired": there is nothing to close.
 *
 *		Refunds (0.4): alipay.trade.fastpay.refund.query with biz_content
 *		{"out_trade_no": payment_id, "out_request_no": refund_id}, signed
 *		and verified as alipay.trade.query (key and certificate modes).
 *		refund_status REFUND_SUCCESS is succeeded, refund_amount (yuan) the
 *		refunded amount.  Alipay answers a refund it has not received (or
 *		has not processed yet, or that failed) with code 10000 and no
 *		refund_status: that is pending, never final (the schedule ends it).
 *		Any other refund_status is an error, and so is an answer about
 *		another out_request_no.  Alipay has no refund notification of its
 *		own: the trade's notification (trade_status_sync) names the refund
 *		in out_biz_no; once its signature verifies, it is not believed but
 *		makes the refund checked at once (verified false, refund_id set).
 */
#include "postgres.h"

#include <time.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "driver.h"

#define ALIPAY_QUERY_METHOD "alipay.trade.query"
#define ALIPAY_CLOSE_METHOD "alipay.trade.close"
#define ALIPAY_QUERY_NODE "alipay_trade_query_response"
#define ALIPAY_CLOSE_NODE "alipay_trade_close_response"
#define ALIPAY_REFUND_METHOD "alipay.trade.fastpay.refund.query"
#define ALIPAY_REFUND_NODE "alipay_trade_fastpay_refund_query_response"
#define ALIPAY_ERROR_NODE "error_response"

/* Alipay's code for a call that succeeded. */
#define ALIPAY_CODE_SUCCESS "10000"

/* Longest app_id accepted (Alipay's are 16 digits). */
#define ALIPAY_APP_ID_MAX 32

typedef struct AlipayConfig
{
	char	   *app_id;
	CryptoKey  *app_key;		/* the application's private key: signs */
	CryptoKey  *alipay_key;		/* Alipay's public key: verifies */
	char	   *app_cert_sn;	/* certificate mode: SN of app_cert, or NULL */
	char	   *alipay_root_cert_sn;	/* ... and of alipay_root_cert's chain */
} AlipayConfig;

/* One request parameter. */
typedef struct AlipayParam
{
	const char *key;
	const char *value;
} AlipayParam;

/* What a pass of the JSON parser found in an answer. */
typedef struct AlipayAnswer
{
	const char *node_name;		/* the response node found, or NULL */
	int			node_count;		/* how many wanted nodes there were */
	const char *node_start;		/* its raw text, from "{" to "}" */
	size_t		node_len;
	char	   *sign;
	int			sign_count;

	/* the response object's fields (scalars only; NULL if absent) */
	char	   *code;
	char	   *msg;
	char	   *sub_code;
	char	   *sub_msg;
	char	   *trade_status;
	char	   *out_trade_no;
	char	   *total_amount;
	char	   *trans_currency;
	char	   *out_request_no; /* refund query: the refund */
	char	   *refund_status;
	char	   *refund_amount;
} AlipayAnswer;

/* The fields of a response node read, as paths below the node. */
static const char *const node_fields[] = {
	"code", "msg", "sub_code", "sub_msg", "trade_status", "out_trade_no",
	"total_amount", "trans_currency", "out_request_no", "refund_status",
	"refund_amount"
};

static const char *const alipay_option_names[] = {
	"app_id", "app_private_key", "alipay_public_key",
	"app_cert", "alipay_cert", "alipay_root_cert", NULL
};

/* Orders parameters by name, byte by byte (ASCII order, as Alipay sorts). */
static int
param_cmp(const void *a, const void *b)
{
	return strcmp(((const AlipayParam *) a)->key, ((const AlipayParam *) b)->key);
}

/*
 * The string Alipay signs for a request: the parameters but sign and
 * those with an empty value, sorted by name, as key=value joined by "&",
 * nothing encoded.  Sorts params in place.
 */
static char *
alipay_sign_content(AlipayParam *params, int n)
{
	StringInfoData out;
	bool		first = true;

	qsort(params, n, sizeof(AlipayParam), param_cmp);
	initStringInfo(&out);
	for (int i = 0; i < n; i++)
	{
		if (strcmp(params[i].key, "sign") == 0 ||
			params[i].value == NULL || params[i].value[0] == '\0')
			continue;
		if (!first)
			appendStringInfoChar(&out, '&');
		appendStringInfo(&out, "%s=%s", params[i].key, params[i].value);
		first = false;
	}
	return out.data;
}

/* Now in Asia/Shanghai (UTC+8, no daylight saving) as Alipay wants it. */
static void
shanghai_timestamp(char *buf, size_t len)
{
	time_t		now = time(NULL) + 8 * 60 * 60;
	struct tm	tm;

	gmtime_r(&now, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* True if app_id is 1 to ALIPAY_APP_ID_MAX letters and digits. */
static bool
app_id_valid(const char *app_id)
{
	size_t		len = strlen(app_id);

	if (len == 0 || len > ALIPAY_APP_ID_MAX)
		return false;
	for (const char *p = app_id; *p; p++)
		if (!isalnum((unsigned char) *p))
			return false;
	return true;
}

/*
 * Alipay's SN of the certificate (root: of the chain) in option key, as a
 * palloc'd string; ERROR naming the option if it holds none.
 */
static char *
option_cert_sn(Jsonb *options, const char *key, bool root, const char *channel)
{
	char	   *text;
	char	   *sn;
	char	   *copy;
	char		error[160];

	if (!option_string(options, key, &text, channel))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" needs option \"%s\"", channel, key),
				 errdetail("Certificate mode takes app_cert, alipay_cert and alipay_root_cert together."),
				 errhint("Give the three certificates the Alipay open platform issued (appCertPublicKey_*.crt, alipayCertPublicKey_RSA2.crt, alipayRootCert.crt), PEM.")));
	sn = root ? crypto_root_cert_sn(text, error, sizeof(error)) :
		crypto_cert_sn(text, error, sizeof(error));
	if (sn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"", key, channel),
				 errdetail("The certificate does not load: %s.", error)));
	copy = pstrdup(sn);
	free(sn);
	return copy;
}

/*
 * Compiles certificate mode (公钥证书模式): app_cert_sn and
 * alipay_root_cert_sn for the requests, and alipay_cert's key to verify
 * answers.  app_cert must be the certificate of app_private_key.
 */
static void
compile_cert_mode(AlipayConfig *config, Jsonb *options, const char *channel)
{
	CryptoKey  *app_cert_key;

	if (option_value(options, "alipay_public_key") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" takes either option \"alipay_public_key\" or certificates, not both", channel),
				 errhint("In certificate mode give app_cert, alipay_cert and alipay_root_cert and leave alipay_public_key out.")));
	config->app_cert_sn = option_cert_sn(options, "app_cert", false, channel);
	config->alipay_root_cert_sn = option_cert_sn(options, "alipay_root_cert", true, channel);
	/* checks alipay_cert is a certificate, and its key verifies answers */
	(void) option_cert_sn(options, "alipay_cert", false, channel);
	config->alipay_key = option_key(options, "alipay_cert", false, channel);

	app_cert_key = option_key(options, "app_cert", false, channel);
	if (!crypto_keys_equal(app_cert_key, config->app_key))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"app_cert\" of channel \"%s\"", channel),
				 errdetail("The certificate is not the one of \"app_private_key\".")));
}

/* Checks and compiles the options of an alipay channel. */
static void *
alipay_compile(const char *channel, const char *base_url, Jsonb *options)
{
	AlipayConfig *config = palloc0(sizeof(AlipayConfig));

	if (!option_string(options, "app_id", &config->app_id, channel))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("channel \"%s\" needs option \"app_id\"", channel),
				 errhint("Give the APPID of the application in the Alipay open platform console, such as \"2021000123456789\".")));
	if (!app_id_valid(config->app_id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"app_id\" of channel \"%s\"", channel),
				 errdetail("The value must be 1 to %d letters and digits.", ALIPAY_APP_ID_MAX)));

	config->app_key = option_key(options, "app_private_key", true, channel);
	if (option_value(options, "app_cert") != NULL ||
		option_value(options, "alipay_cert") != NULL ||
		option_value(options, "alipay_root_cert") != NULL)
		compile_cert_mode(config, options, channel);
	else
		config->alipay_key = option_key(options, "alipay_public_key", false, channel);

	/*
	 * The public half of the application's own key in place of Alipay's
	 * public key is a common slip; every answer would then fail to verify.
	 */
	if (crypto_keys_equal(config->app_key, config->alipay_key))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\" of channel \"%s\"",
						config->app_cert_sn ? "alipay_cert" : "alipay_public_key", channel),
				 errdetail("The key is the public key of \"app_private_key\", not Alipay's."),
				 errhint("Copy the \"Alipay public key\" (支付宝公钥) from the application's key settings, not the application public key.")));

	return config;
}

/*
 * Builds a call of method with biz_content biz (JSON text): common
 * parameters and sign in the query string, biz_content as the POST form
 * body.
 */
static void
alipay_build_call(const AlipayConfig *config, const char *base_url,
				  const char *method, const char *biz, HttpRequest *request)
{
	AlipayParam params[11];
	int			n = 0;
	char		timestamp[32];
	StringInfoData url;
	char	   *content;
	char	   *signature;
	char		error[160];
	const char **headers = palloc(sizeof(char *) * 2);

	shanghai_timestamp(timestamp, sizeof(timestamp));
	params[n++] = (AlipayParam) {"app_id", config->app_id};
	params[n++] = (AlipayParam) {"method", method};
	params[n++] = (AlipayParam) {"format", "JSON"};
	params[n++] = (AlipayParam) {"charset", "utf-8"};
	params[n++] = (AlipayParam) {"sign_type", "RSA2"};
	params[n++] = (AlipayParam) {"timestamp", timestamp};
	params[n++] = (AlipayParam) {"version", "1.0"};
	params[n++] = (AlipayParam) {"biz_content", biz};
	if (config->app_cert_sn != NULL)
	{
		/* certificate mode: which certificates to verify the request with */
		params[n++] = (AlipayParam) {"app_cert_sn", config->app_cert_sn};
		params[n++] = (AlipayParam) {"alipay_root_cert_sn", config->alipay_root_cert_sn};
	}
	content = alipay_sign_content(params, n);

	/*
	 * Signing fails only when OpenSSL runs out of memory.  The request then
	 * goes without a sign, and Alipay's refusal becomes the check's error.
	 */
	signature = crypto_sign_b64(config->app_key, content, strlen(content),
								error, sizeof(error));

	initStringInfo(&url);
	appendStringInfoString(&url, base_url);
	appendStringInfoChar(&url, strchr(base_url, '?') ? '&' : '?');
	for (int i = 0; i < n; i++)
	{
		if (strcmp(params[i].key, "biz_content") == 0)
			continue;
		appendStringInfo(&url, "%s=%s&", params[i].key, http_escape(params[i].value));
	}
	if (signature != NULL)
	{
		appendStringInfo(&url, "sign=%s", http_escape(signature));
		free(signature);
	}
	else
		url.data[--url.len] = '\0';

	request->url = url.data;
	request->post = true;
	request->body = psprintf("biz_content=%s", http_escape(biz));
	headers[0] = "Content-Type: application/x-www-form-urlencoded;charset=utf-8";
	headers[1] = "Accept: application/json";
	request->headers = headers;
	request->n_headers = 2;
}

/*
 * Builds alipay.trade.query (or, for CHECK_CLOSE, alipay.trade.close) for
 * one payment.
 */
static void
alipay_build_request(const void *cfg, const char *base_url,
					 const char *payment_id, CheckKind kind,
					 const char *token, HttpRequest *request)
{
	StringInfoData biz;

	initStringInfo(&biz);
	appendStringInfoString(&biz, "{\"out_trade_no\":");
	escape_json(&biz, payment_id);
	appendStringInfoChar(&biz, '}');
	alipay_build_call(cfg, base_url,
					  kind == CHECK_CLOSE ? ALIPAY_CLOSE_METHOD : ALIPAY_QUERY_METHOD,
					  biz.data, request);
}

/*
 * Builds alipay.trade.fastpay.refund.query for one refund: the trade
 * (out_trade_no, the payment) and the refund request (out_request_no).
 */
static void
alipay_build_refund_request(const void *cfg, const char *base_url,
							const char *payment_id, const char *refund_id,
							const char *token, HttpRequest *request)
{
	StringInfoData biz;

	initStringInfo(&biz);
	appendStringInfoString(&biz, "{\"out_trade_no\":");
	escape_json(&biz, payment_id);
	appendStringInfoString(&biz, ",\"out_request_no\":");
	escape_json(&biz, refund_id);
	appendStringInfoChar(&biz, '}');
	alipay_build_call(cfg, base_url, ALIPAY_REFUND_METHOD, biz.data, request);
}

/*
 * Reads an Alipay answer body: finds the response node among wanted, its
 * raw text, its fields and the sign.  False with *answer the error if the
 * body is not one well-formed answer.
 */
static bool
parse_answer(const char *body, size_t body_len, const char *const *wanted,
			 int n_wanted, AlipayAnswer *a, CheckAnswer *answer)
{
	char	  **slots[] = {
		&a->code, &a->msg, &a->sub_code, &a->sub_msg, &a->trade_status,
		&a->out_trade_no, &a->total_amount, &a->trans_currency,
		&a->out_request_no, &a->refund_status, &a->refund_amount
	};
	int			per_node = 1 + lengthof(node_fields);
	JsonField  *f = palloc0(sizeof(JsonField) * (1 + n_wanted * per_node));
	JsonFieldsResult read;
	bool		duplicate = false;

	StaticAssertStmt(lengthof(slots) == lengthof(node_fields), "one slot per node field");
	memset(a, 0, sizeof(*a));

	/* the sign, then each wanted node followed by its fields */
	f[0].path = "sign";
	for (int w = 0; w < n_wanted; w++)
	{
		f[1 + w * per_node].path = wanted[w];
		for (size_t i = 0; i < lengthof(node_fields); i++)
			f[2 + w * per_node + i].path = psprintf("%s.%s", wanted[w], node_fields[i]);
	}
	read = json_fields(body, body_len, JSON_FIELDS_UTF8, f, 1 + n_wanted * per_node);
	if (read == JSON_FIELDS_BAD_TEXT)
	{
		answer_error(answer, "the Alipay answer is not UTF-8 text");
		return false;
	}
	if (read != JSON_FIELDS_OK)
	{
		answer_error(answer, "the Alipay answer is not valid JSON");
		return false;
	}

	/* the last sign given counts, if it is a string */
	a->sign_count = f[0].members;
	a->sign = f[0].last_type == JSON_TOKEN_STRING ? f[0].last : NULL;
	for (int w = 0; w < n_wanted; w++)
	{
		JsonField  *node = &f[1 + w * per_node];

		if (node->members == 0)
			continue;
		a->node_name = wanted[w];
		a->node_count += node->members;
		a->node_start = node->raw_start;
		a->node_len = node->raw_len;
		for (size_t i = 0; i < lengthof(node_fields); i++)
		{
			*slots[i] = node[1 + i].value;
			/* two values for one field: which would the merchant believe? */
			if (node[1 + i].count > 1)
				duplicate = true;
		}
	}
	if (duplicate)
		a->node_count = Max(a->node_count, 2);

	if (a->node_count == 0)
	{
		answer_error(answer, "the Alipay answer has no %s", wanted[0]);
		return false;
	}
	if (a->node_count > 1)
	{
		answer_error(answer, "the Alipay answer is ambiguous (a response or one of its fields given twice)");
		return false;
	}
	if (a->node_start == NULL || a->node_start[0] != '{')
	{
		answer_error(answer, "the Alipay answer's %s is not an object", a->node_name);
		return false;
	}
	return true;
}

/* A piece of the channel's text as kept in an error message. */
static const char *
safe_text(const char *text)
{
	return channel_text(text, CHANNEL_WORD_MAX_BYTES);
}

/* Makes *answer the error "Alipay <what>: code ... (sub_code): sub_msg". */
static void
answer_alipay_refusal(CheckAnswer *answer, const char *what, const AlipayAnswer *a)
{
	const char *sub_msg = safe_text(a->sub_msg);

	answer_error(answer, "Alipay %s: code %s%s%s%s%s%s",
				 what,
				 a->code ? safe_text(a->code) : "(none)",
				 a->sub_code ? " (" : "",
				 a->sub_code ? safe_text(a->sub_code) : "",
				 a->sub_code ? ")" : "",
				 sub_msg[0] ? ": " : "",
				 sub_msg);
}

/*
 * True if sign verifies with key over text as it came, or else over text
 * with every "\/" made "/": Alipay may sign a response before escaping its
 * slashes, and its own SDKs retry so (a forger gains nothing: the text
 * verified is still what Alipay signed, and the parsed values are the same).
 */
static bool
verify_node_text(CryptoKey *key, const char *text, size_t len, const char *sign)
{
	StringInfoData unescaped;
	bool		escaped = false;
	bool		ok;

	if (crypto_verify_b64(key, text, len, sign))
		return true;
	for (size_t i = 0; i + 1 < len; i++)
		if (text[i] == '\\' && text[i + 1] == '/')
			escaped = true;
	if (!escaped)
		return false;
	initStringInfo(&unescaped);
	for (size_t i = 0; i < len; i++)
	{
		/* every "\/" becomes "/", as a plain string replace does */
		if (text[i] == '\\' && i + 1 < len && text[i + 1] == '/')
			continue;
		appendStringInfoChar(&unescaped, text[i]);
	}
	ok = crypto_verify_b64(key, unescaped.data, unescaped.len, sign);
	pfree(unescaped.data);
	return ok;
}

/*
 * Verifies the answer's sign over the raw response text.  False with
 * *answer the error if it is missing or wrong.
 */
static bool
verify_answer(const AlipayConfig *config, const AlipayAnswer *a, CheckAnswer *answer)
{
	if (a->sign_count == 0 || a->sign == NULL || a->sign[0] == '\0')
	{
		if (a->code != NULL && strcmp(a->code, ALIPAY_CODE_SUCCESS) != 0)
			answer_alipay_refusal(answer, "refused the request (unsigned answer)", a);
		else
			answer_error(answer, "the Alipay answer is not signed");
		return false;
	}
	if (a->sign_count > 1)
	{
		answer_error(answer, "the Alipay answer has two signs");
		return false;
	}
	if (!verify_node_text(config->alipay_key, a->node_start, a->node_len, a->sign))
	{
		answer_error(answer, "the Alipay answer's signature does not verify with %s",
					 config->app_cert_sn ? "alipay_cert" : "alipay_public_key");
		return false;
	}
	return true;
}

/*
 * Reads trade_status of a verified, successful query answer into *answer:
 * the status, and for a paid trade its amount.
 */
static void
answer_trade_status(const AlipayAnswer *a, CheckAnswer *answer)
{
	static const struct
	{
		const char *word;
		const char *status;
	}			map[] = {
		{"WAIT_BUYER_PAY", "pending"},
		{"TRADE_SUCCESS", "succeeded"},
		{"TRADE_FINISHED", "succeeded"},
		{"TRADE_CLOSED", "closed"},
	};
	const char *status = NULL;
	const char *word = NULL;

	if (a->trade_status == NULL)
	{
		answer_error(answer, "the Alipay answer has no trade_status");
		return;
	}
	for (size_t i = 0; i < lengthof(map); i++)
	{
		if (strcmp(a->trade_status, map[i].word) == 0)
		{
			word = map[i].word;
			status = map[i].status;
		}
	}
	if (status == NULL)
	{
		answer_error(answer, "unknown Alipay trade_status \"%s\"",
					 safe_text(a->trade_status));
		return;
	}

	/* cross-border trades are priced in trans_currency, others in CNY */
	if (strcmp(status, "succeeded") == 0 && a->total_amount != NULL &&
		!answer_paid_decimal(answer, a->total_amount,
							 a->trans_currency ? a->trans_currency : "CNY"))
		return;
	answer_status(answer, status, word);
}

/*
 * Reads a verified refund query answer (code 10000) about refund_id (NULL:
 * not checked) into *answer.
 */
static void
answer_refund_status(const AlipayAnswer *a, const char *refund_id, CheckAnswer *answer)
{
	/* a genuine signed answer about another refund (replayed) is no answer */
	if (refund_id != NULL && (a->out_request_no != NULL || a->refund_status != NULL) &&
		(a->out_request_no == NULL || strcmp(a->out_request_no, refund_id) != 0))
	{
		answer_error(answer, "the Alipay answer is about another out_request_no than the refund asked about");
		return;
	}
	if (a->refund_status == NULL)
	{
		/* not received, not processed yet, or failed: never final */
		answer_status(answer, "pending", NULL);
		return;
	}
	if (strcmp(a->refund_status, "REFUND_SUCCESS") != 0)
	{
		answer_error(answer, "unknown Alipay refund_status \"%s\"",
					 safe_text(a->refund_status));
		return;
	}
	if (a->refund_amount == NULL)
	{
		answer_error(answer, "the Alipay answer for a succeeded refund has no refund_amount");
		return;
	}
	if (answer_paid_decimal(answer, a->refund_amount, "CNY"))
		answer_status(answer, "succeeded", a->refund_status);
}

/* True if sub_code says a close was refused as the trade no longer awaits payment. */
static bool
refused_as_not_waiting(const char *sub_code)
{
	static const char *const codes[] = {
		"ACQ.TRADE_STATUS_ERROR",
		"ACQ.REASON_TRADE_STATUS_INVALID",
		"ACQ.REASON_ILLEGAL_STATUS",
	};

	if (sub_code == NULL)
		return false;
	for (size_t i = 0; i < lengthof(codes); i++)
		if (strcmp(sub_code, codes[i]) == 0)
			return true;
	return false;
}

/*
 * Turns an answer into a status or an error.  CHECK_QUERY: the trade's
 * status.  CHECK_CLOSE: "closed" if Alipay closed it, "expired" if Alipay
 * has no such trade, "pending" (query it again) if Alipay refused as the
 * trade no longer awaits payment; anything else is an error.
 * CHECK_REFUND: the refund's status (payment_id is then the refund's
 * out_request_no); a refusal is an error.
 */
static void
alipay_interpret(const void *cfg, CheckKind kind, const char *payment_id, const HttpResult *result,
				 CheckAnswer *answer)
{
	const AlipayConfig *config = cfg;
	static const char *const query_nodes[] = {ALIPAY_QUERY_NODE, ALIPAY_ERROR_NODE};
	static const char *const close_nodes[] = {ALIPAY_CLOSE_NODE, ALIPAY_ERROR_NODE};
	static const char *const refund_nodes[] = {ALIPAY_REFUND_NODE, ALIPAY_ERROR_NODE};
	AlipayAnswer a;
	bool		is_query;

	if (answer_transport_error(result, answer) || answer_http_error(result, answer))
		return;
	if (result->status != 200)
	{
		answer_error(answer, "unexpected HTTP %ld from Alipay", result->status);
		return;
	}
	if (kind == CHECK_CLOSE)
	{
		if (!parse_answer(result->body, result->body_len, close_nodes,
						  lengthof(close_nodes), &a, answer))
			return;
	}
	else if (kind == CHECK_REFUND)
	{
		if (!parse_answer(result->body, result->body_len, refund_nodes,
						  lengthof(refund_nodes), &a, answer))
			return;
	}
	else if (!parse_answer(result->body, result->body_len, query_nodes,
						   lengthof(query_nodes), &a, answer))
		return;
	if (!verify_answer(config, &a, answer))
		return;

	if (strcmp(a.node_name, ALIPAY_ERROR_NODE) == 0)
	{
		answer_alipay_refusal(answer, "refused the request", &a);
		return;
	}
	if (a.code == NULL)
	{
		answer_error(answer, "the Alipay answer has no code");
		return;
	}
	is_query = strcmp(a.node_name, ALIPAY_QUERY_NODE) == 0;

	if (kind == CHECK_REFUND)
	{
		if (strcmp(a.code, ALIPAY_CODE_SUCCESS) == 0)
			answer_refund_status(&a, payment_id, answer);
		else
			answer_alipay_refusal(answer, "refused the refund query", &a);
		return;
	}

	if (kind == CHECK_QUERY && is_query)
	{
		bool		ok = strcmp(a.code, ALIPAY_CODE_SUCCESS) == 0;

		/* a genuine signed answer about another trade (replayed) is no answer */
		if (ok && payment_id != NULL &&
			(a.out_trade_no == NULL || strcmp(a.out_trade_no, payment_id) != 0))
		{
			answer_error(answer, "the Alipay answer is about another out_trade_no than the payment asked about");
			return;
		}
		if (ok)
		{
			answer_trade_status(&a, answer);
			return;
		}
		if (a.sub_code != NULL && strcmp(a.sub_code, "ACQ.TRADE_NOT_EXIST") == 0)
		{
			/* the buyer has not opened the trade (yet): not paid */
			answer_status(answer, "pending", "ACQ.TRADE_NOT_EXIST");
			return;
		}
		answer_alipay_refusal(answer, "refused the query", &a);
		return;
	}

	/* alipay.trade.close */
	if (strcmp(a.code, ALIPAY_CODE_SUCCESS) == 0)
	{
		answer_status(answer, "closed", "TRADE_CLOSED");
		return;
	}
	if (a.sub_code != NULL && strcmp(a.sub_code, "ACQ.TRADE_NOT_EXIST") == 0)
	{
		/* the trade never existed at Alipay (nobody scanned): nothing to close */
		answer_status(answer, "expired", "ACQ.TRADE_NOT_EXIST");
		return;
	}
	if (refused_as_not_waiting(a.sub_code))
	{
		/* paid or closed meanwhile: the core queries it again to learn which */
		answer_status(answer, "pending", a.sub_code);
		return;
	}
	answer_alipay_refusal(answer, "refused to close the trade", &a);
}

/* Orders form parameters by name, byte by byte. */
static int
form_param_cmp(const void *a, const void *b)
{
	return strcmp(((const FormParam *) a)->name, ((const FormParam *) b)->name);
}

/*
 * A notification's value (bytes in the declared charset, encoding) as text
 * of the database encoding; a notification whose text does not convert is
 * refused.
 */
static char *
notification_text(const char *channel, const char *value, int encoding)
{
	char	   *converted;

	if (!pg_verify_mbstr(encoding, value, strlen(value), true))
		notification_refused(channel, "the notification has text invalid in its charset");
	converted = (char *) pg_do_encoding_conversion((unsigned char *) value, strlen(value),
												   encoding, GetDatabaseEncoding());
	if (!pg_verifymbstr(converted, strlen(converted), true))
		notification_refused(channel, "the notification has text the database encoding cannot hold");
	return converted;
}

/*
 * Verifies an asynchronous notification and reads its trade.  A
 * notification without trade_status is about no payment.  One that names
 * a refund (out_biz_no, the refund's out_request_no, as Alipay sends on a
 * refund of the trade) is not believed: its refund is checked at once.
 */
static void
alipay_verify_notification(const void *cfg, const char *channel,
						   const HttpResult *notification, int64 now,
						   NotificationResult *out)
{
	const AlipayConfig *config = cfg;
	FormParam  *params;
	FormParam  *signed_params;
	int			n;
	int			n_signed = 0;
	const char *sign;
	const char *charset;
	const char *app_id;
	const char *trade_status;
	const char *out_trade_no;
	const char *out_biz_no;
	int			encoding = PG_UTF8;
	StringInfoData content;
	AlipayAnswer a;

	out->reply_status = 200;
	out->reply_body = "success";
	if (!form_decode(notification->body, notification->body_len, &params, &n))
		notification_refused(channel, "the notification is not a form-encoded body");
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (strcmp(params[i].name, params[j].name) == 0)
				notification_refused(channel, "the notification gives parameter %s twice",
									 channel_text(params[i].name, CHANNEL_WORD_MAX_BYTES));
	sign = form_value(params, n, "sign", NULL);
	if (sign == NULL || sign[0] == '\0')
		notification_refused(channel, "the notification is not signed (no sign)");

	/* the signed text: all but sign and sign_type, sorted, bytes as sent */
	signed_params = palloc(sizeof(FormParam) * n);
	for (int i = 0; i < n; i++)
		if (strcmp(params[i].name, "sign") != 0 && strcmp(params[i].name, "sign_type") != 0)
			signed_params[n_signed++] = params[i];
	qsort(signed_params, n_signed, sizeof(FormParam), form_param_cmp);
	initStringInfo(&content);
	for (int i = 0; i < n_signed; i++)
		appendStringInfo(&content, "%s%s=%s", i > 0 ? "&" : "",
						 signed_params[i].name, signed_params[i].value);
	if (!crypto_verify_b64(config->alipay_key, content.data, content.len, sign))
		notification_refused(channel, "the notification's sign does not verify with alipay_public_key");
	out->verified = true;

	charset = form_value(params, n, "charset", NULL);
	if (charset != NULL && charset[0] != '\0')
	{
		encoding = pg_char_to_encoding(charset);
		if (pg_strcasecmp(charset, "gb2312") == 0)
			encoding = PG_GBK;
		if (encoding < 0 || (encoding != PG_UTF8 && encoding != PG_GBK &&
							 encoding != PG_GB18030))
			notification_refused(channel, "the notification's charset \"%s\" is not utf-8, gbk or gb18030",
								 channel_text(charset, CHANNEL_WORD_MAX_BYTES));
	}
	app_id = form_value(params, n, "app_id", NULL);
	if (app_id == NULL || strcmp(app_id, config->app_id) != 0)
		notification_refused(channel, "the notification is for app_id %s, not %s",
							 app_id ? channel_text(app_id, CHANNEL_WORD_MAX_BYTES) : "(none)",
							 config->app_id);
	trade_status = form_value(params, n, "trade_status", NULL);
	out_biz_no = form_value(params, n, "out_biz_no", NULL);
	if (trade_status == NULL && (out_biz_no == NULL || out_biz_no[0] == '\0'))
		return;					/* not a trade status notification */
	out_trade_no = form_value(params, n, "out_trade_no", NULL);
	if (out_trade_no == NULL || out_trade_no[0] == '\0')
		notification_refused(channel, "the notification has no out_trade_no");
	if (out_biz_no != NULL && out_biz_no[0] != '\0')
	{
		/*
		 * About a refund: its trade_status is the trade's, refund_fee the
		 * sum refunded so far, neither this refund's status.  The caller
		 * checks the refund at once.
		 */
		out->verified = false;
		out->refund_id = notification_text(channel, out_biz_no, encoding);
		out->payment_id = notification_text(channel, out_trade_no, encoding);
		return;
	}

	memset(&a, 0, sizeof(a));
	a.trade_status = (char *) trade_status;
	a.total_amount = (char *) form_value(params, n, "total_amount", NULL);
	a.trans_currency = (char *) form_value(params, n, "trans_currency", NULL);
	answer_trade_status(&a, &out->answer);
	if (out->answer.is_error)
		notification_refused(channel, "%s", out->answer.error);
	out->payment_id = notification_text(channel, out_trade_no, encoding);
}

const PaysyncDriver alipay_driver = {
	.name = "alipay",
	.option_names = alipay_option_names,
	.compile = alipay_compile,
	.build_request = alipay_build_request,
	.build_refund_request = alipay_build_refund_request,
	.interpret = alipay_interpret,
	.can_close = true,
	.close_on_expiry_default = true,
	.verify_notification = alipay_verify_notification,
};
