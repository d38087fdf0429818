/*-------------------------------------------------------------------------
 *
 * mock_wechatpay.c
 *	  A mock of WeChat Pay API v3 for the paysync tests of driver
 *	  "wechatpay": query by merchant order number and close order.
 *
 * Requests are checked the way WeChat Pay checks them:
 *
 *	  Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",
 *		  signature="..",timestamp="..",serial_no=".."
 *
 * the signature (SHA256withRSA, base64) of "METHOD\nURI\nTIMESTAMP\nNONCE\n
 * BODY\n" (URI: the request target as sent, query included) must verify
 * with the merchant's public key (--merchant-public-key), mchid and
 * serial_no must be --mchid and --merchant-serial, and the timestamp within
 * five minutes of the clock; otherwise the answer is 401
 * {"code":"SIGN_ERROR",...}, unsigned.  Accept (and for POST Content-Type)
 * must be application/json, else 400 INVALID_REQUEST.  Routes:
 *
 *	  GET  /v3/pay/transactions/out-trade-no/{id}?mchid={mchid}
 *	  POST /v3/pay/transactions/out-trade-no/{id}/close  {"mchid":"{mchid}"}
 *
 * (another mchid: 400 PARAM_ERROR; another path: 404 NOT_FOUND).  Every
 * answer to a request whose signature verified is signed with the platform
 * private key (--platform-private-key): headers Wechatpay-Timestamp,
 * Wechatpay-Nonce, Wechatpay-Signature (of "TIMESTAMP\nNONCE\nBODY\n"),
 * Wechatpay-Serial (--platform-serial) and Wechatpay-Signature-Type.
 * A key rotation: with --next-platform-private-key FILE,
 * --next-platform-serial SERIAL and --switch-after N, the answers after the
 * Nth signed one are signed with the next key and carry its serial (as when
 * WeChat Pay moves a merchant to a new certificate or to a WeChat Pay public
 * key, serial PUB_KEY_ID_...).  A request that carries a Wechatpay-Serial
 * header must name a key the mock signs with (now or before the switch),
 * else 400 PARAM_ERROR, as WeChat Pay refuses an unknown one.
 *
 * Script: the payment id is "<anything>~<steps>" (split at the last "~";
 * no "~" means "S").  The Nth request for an id, query or close, performs
 * the Nth step; after the last step the last one repeats.
 *
 *	  steps := step { "," step }
 *	  step  := letter [ code ] { modifier } [ "*" N ]
 *
 *	  letters for a query (200 with that trade_state unless said):
 *		N NOTPAY		U USERPAYING	S SUCCESS		R REFUND
 *		C CLOSED		V REVOKED		F PAYERROR		Q BRAND_NEW (unknown)
 *		A SUCCESS, amount.total one more than --amount
 *		W SUCCESS of another out_trade_no (a replayed answer), signed
 *		Y SUCCESS, amount.currency USD
 *		H SUCCESS, amount.total 99999999999999999999 (beyond int64)
 *		O 404 {"code":"ORDER_NOT_EXIST",...}
 *	  letters for a close:
 *		X 204 (closed)	P 400 ORDERPAID	D 400 ORDER_CLOSED
 *		Z 404 ORDER_NOT_EXIST (no such trade)
 *		B 202 {"code":"USERPAYING",...} (the buyer is paying)
 *	  for either:
 *		E<code>  that HTTP status, {"code":"SYSTEM_ERROR"} (5xx) or
 *				 {"code":"PARAM_ERROR"} (others)
 *	  a query letter for a close or a close letter for a query answers
 *	  400 {"code":"INVALID_REQUEST"} (the script did not expect it).
 *
 *	  modifiers (lower case), spoiling the answer's signature:
 *		t  tampered body: the signature is over other bytes
 *		k  signed with another key (made at start-up)
 *		g  garbage signature (like WeChat Pay's WECHATPAY/SIGNTEST/ probes)
 *		h  no Wechatpay-* headers at all
 *		w  Wechatpay-Serial of another certificate
 *		z  stale: Wechatpay-Timestamp ten minutes old (correctly signed)
 *		b  Wechatpay-Signature-Type of bytes that are not text: invalid
 *		   UTF-8, a control character, a cut multibyte character
 *
 *	  refunds: GET /v3/refund/domestic/refunds/{out_refund_no} (no mchid
 *	  parameter, as for a direct merchant), signed and answered the same
 *	  way, the script in the out_refund_no, letters (no "~": "S"):
 *		S SUCCESS		P PROCESSING	B ABNORMAL		C CLOSED
 *		Q BRAND_NEW (unknown)
 *		A SUCCESS, amount.refund one more than --amount
 *		W SUCCESS of another out_refund_no (a replayed answer), signed
 *		O 404 {"code":"RESOURCE_NOT_EXISTS",...} (no such refund)
 *		E<code>, and the modifiers, as above; other letters 400
 *		INVALID_REQUEST.  amount.refund is --amount, amount.total twice it.
 *
 *	  e.g. "T1~N,N,S" NOTPAY twice then SUCCESS; "T2~N,X" NOTPAY then a
 *	  close that succeeds; "T3~St" a SUCCESS whose signature is over other
 *	  bytes.
 *
 * Log (--log FILE): one line per request (control-free), written at once:
 *	  <unix_us> <METHOD> <path> <id or -> <HTTP status>
 *
 * Threads: one per connection; --latency-ms delays each answer.
 *
 * IDENTIFICATION
 *	  t/mock/mock_wechatpay.c
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE

#include <pthread.h>
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

#define MAX_BODY		(64 * 1024)
#define QUERY_PREFIX	"/v3/pay/transactions/out-trade-no/"
#define REFUND_PREFIX	"/v3/refund/domestic/refunds/"
#define SCHEME			"WECHATPAY2-SHA256-RSA2048"
#define MAX_SKEW_S		300
#define STALE_S			600

/* One step of a script. */
typedef struct Step
{
	char		letter;
	long		code;			/* E<code> */
	char		modifiers[8];
} Step;

/* An answer before it is signed and sent. */
typedef struct Answer
{
	unsigned int status;
	char	   *body;			/* malloc'd, "" for none */
	bool		sign;			/* add the Wechatpay-* headers */
	const char *modifiers;
} Answer;

static const char *opt_mchid = NULL;
static const char *opt_merchant_serial = NULL;
static const char *opt_platform_serial = NULL;
static long opt_amount = 100;
static EVP_PKEY *merchant_public_key = NULL;
static EVP_PKEY *platform_private_key = NULL;
static EVP_PKEY *other_private_key = NULL;
static EVP_PKEY *next_platform_private_key = NULL;
static const char *opt_next_platform_serial = NULL;
static long opt_switch_after = -1;

/* Signed answers sent so far (the rotation's clock). */
static long signed_answers = 0;
static pthread_mutex_t signed_lock = PTHREAD_MUTEX_INITIALIZER;

/*
 * Attempts per payment id: id -> integer.  Not mock_next_attempt(): jansson
 * takes only UTF-8 keys, so an id that is not UTF-8 is never counted here
 * (every request for it is attempt 1), and the answers stay as they are.
 */
static json_t *attempts;
static pthread_mutex_t attempts_lock = PTHREAD_MUTEX_INITIALIZER;

/* Random hex of nbytes bytes into out (2 * nbytes + 1 chars). */
static void
random_hex(char *out, size_t nbytes)
{
	unsigned char buf[32];

	if (nbytes > sizeof(buf) || RAND_bytes(buf, (int) nbytes) != 1)
		mock_die("no random bytes", NULL);
	for (size_t i = 0; i < nbytes; i++)
		sprintf(out + 2 * i, "%02X", buf[i]);
}

/* Counts one more request for id; returns its number, from 1. */
static long
next_attempt(const char *id)
{
	json_t	   *count;
	long		n;

	pthread_mutex_lock(&attempts_lock);
	count = json_object_get(attempts, id);
	n = count ? (long) json_integer_value(count) + 1 : 1;
	json_object_set_new(attempts, id, json_integer(n));
	pthread_mutex_unlock(&attempts_lock);
	return n;
}

/*
 * Picks the step of script for attempt (from 1).  False if the script does
 * not parse.
 */
static bool
script_step(const char *script, long attempt, Step *out)
{
	const char *p = script;
	long		index = attempt - 1;
	bool		chosen = false;
	Step		cur;

	for (;;)
	{
		long		repeat = 1;
		size_t		m = 0;

		memset(&cur, 0, sizeof(cur));
		if (!strchr("NUSRCVFQAYHWOXPDEZB", *p) || *p == '\0')
			return false;
		cur.letter = *p++;
		if (cur.letter == 'E')
		{
			char	   *end;

			cur.code = strtol(p, &end, 10);
			if (end == p || cur.code < 100 || cur.code > 599)
				return false;
			p = end;
		}
		while (*p && strchr("tkghwzb", *p))
		{
			if (m + 1 >= sizeof(cur.modifiers))
				return false;
			cur.modifiers[m++] = *p++;
		}
		if (*p == '*')
		{
			char	   *end;

			repeat = strtol(p + 1, &end, 10);
			if (end == p + 1 || repeat < 1)
				return false;
			p = end;
		}
		if (!chosen)
		{
			if (index < repeat)
			{
				*out = cur;
				chosen = true;
			}
			else
				index -= repeat;
		}
		if (*p == '\0')
			break;
		if (*p != ',')
			return false;
		p++;
	}
	if (!chosen)
		*out = cur;
	return true;
}

/* An answer with a JSON error body {"code":..,"message":..}. */
static Answer
error_answer(unsigned int status, const char *code, const char *message, bool sign)
{
	Answer		a = {status, NULL, sign, ""};
	json_t	   *o = json_pack("{s:s,s:s}", "code", code, "message", message);

	a.body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return a;
}

/*
 * A copy of text (malloc'd) with every from replaced by to; text is freed.
 */
static char *
replace_all(char *text, const char *from, const char *to)
{
	size_t		from_len = strlen(from);
	size_t		n = 0;
	char	   *out;
	char	   *w;

	for (const char *p = strstr(text, from); p; p = strstr(p + from_len, from))
		n++;
	out = malloc(strlen(text) + n * strlen(to) + 1);
	if (out == NULL)
		return text;
	w = out;
	for (const char *p = text, *hit; ; p = hit + from_len)
	{
		hit = strstr(p, from);
		if (hit == NULL)
		{
			strcpy(w, p);
			break;
		}
		memcpy(w, p, hit - p);
		w += hit - p;
		strcpy(w, to);
		w += strlen(to);
	}
	free(text);
	return out;
}

/* A query answer with trade_state for id. */
static Answer
trade_answer(const char *id, const char *state, long total, const char *currency)
{
	Answer		a = {200, NULL, true, ""};
	bool		paid = strcmp(state, "SUCCESS") == 0 || strcmp(state, "REFUND") == 0;
	json_t	   *amount = json_pack("{s:I,s:s}", "total", (json_int_t) total,
								   "currency", currency);
	json_t	   *o;

	if (paid)
	{
		json_object_set_new(amount, "payer_total", json_integer(total));
		json_object_set_new(amount, "payer_currency", json_string(currency));
	}
	o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o}",
				  "appid", "wxd678efh567hg6787",
				  "mchid", opt_mchid,
				  "out_trade_no", id,
				  "trade_type", "NATIVE",
				  "trade_state", state,
				  "trade_state_desc", paid ? "支付成功" : "订单状态",
				  "attach", "",
				  "amount", amount);
	if (o == NULL)
	{
		/* jansson refuses text that is not UTF-8: so does WeChat Pay */
		return error_answer(400, "PARAM_ERROR", "out_trade_no is not valid UTF-8", true);
	}
	if (paid)
	{
		json_object_set_new(o, "transaction_id", json_string("4200000000202611260000000001"));
		json_object_set_new(o, "success_time", json_string("2026-11-26T10:34:56+08:00"));
		json_object_set_new(o, "bank_type", json_string("OTHERS"));
	}
	a.body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return a;
}

/* A refund query answer with status for out_refund_no id, refunding refund. */
static Answer
refund_answer(const char *id, const char *status, long refund)
{
	Answer		a = {200, NULL, true, ""};
	json_t	   *amount = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s,s:[]}",
								   "total", (json_int_t) (2 * opt_amount),
								   "refund", (json_int_t) refund,
								   "payer_total", (json_int_t) (2 * opt_amount),
								   "payer_refund", (json_int_t) refund,
								   "settlement_refund", (json_int_t) refund,
								   "settlement_total", (json_int_t) (2 * opt_amount),
								   "discount_refund", (json_int_t) 0,
								   "currency", "CNY", "from");
	json_t	   *o;

	o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:[]}",
				  "refund_id", "50000000382019052709732678859",
				  "out_refund_no", id,
				  "transaction_id", "1217752501201407033233368018",
				  "out_trade_no", "T-REFUNDED-TRADE",
				  "channel", "ORIGINAL",
				  "user_received_account", "招商银行信用卡0403",
				  "create_time", "2026-11-26T10:34:56+08:00",
				  "status", status,
				  "funds_account", "AVAILABLE",
				  "amount", amount,
				  "promotion_detail");
	if (o == NULL)
		return error_answer(400, "PARAM_ERROR", "out_refund_no is not valid UTF-8", true);
	if (strcmp(status, "SUCCESS") == 0)
		json_object_set_new(o, "success_time", json_string("2026-11-26T10:35:56+08:00"));
	a.body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return a;
}

/* The answer the script gives to a refund query. */
static Answer
scripted_refund_answer(const char *id, const Step *step)
{
	Answer		a;

	switch (step->letter)
	{
		case 'E':
			a = error_answer((unsigned int) step->code,
							 step->code >= 500 ? "SYSTEM_ERROR" : "PARAM_ERROR",
							 "scripted error", true);
			break;
		case 'S':
			a = refund_answer(id, "SUCCESS", opt_amount);
			break;
		case 'A':
			a = refund_answer(id, "SUCCESS", opt_amount + 1);
			break;
		case 'P':
			a = refund_answer(id, "PROCESSING", opt_amount);
			break;
		case 'B':
			a = refund_answer(id, "ABNORMAL", opt_amount);
			break;
		case 'C':
			a = refund_answer(id, "CLOSED", opt_amount);
			break;
		case 'Q':
			a = refund_answer(id, "BRAND_NEW", opt_amount);
			break;
		case 'W':
			a = refund_answer("R-ANOTHER-REFUND", "SUCCESS", opt_amount);
			break;
		case 'O':
			a = error_answer(404, "RESOURCE_NOT_EXISTS", "退款单不存在", true);
			break;
		default:
			a = error_answer(400, "INVALID_REQUEST", "mock script: not a refund letter", true);
			break;
	}
	a.modifiers = step->modifiers;
	return a;
}

/* The answer the script gives to a query (is_close false) or a close. */
static Answer
scripted_answer(const char *id, bool is_close, const Step *step)
{
	Answer		a;
	bool		close_letter = strchr("XPDZB", step->letter) != NULL;

	if (step->letter == 'E')
		a = error_answer((unsigned int) step->code,
						 step->code >= 500 ? "SYSTEM_ERROR" : "PARAM_ERROR",
						 "scripted error", true);
	else if (close_letter != is_close)
		a = error_answer(400, "INVALID_REQUEST",
						 is_close ? "mock script: no close expected here" :
						 "mock script: a close was expected here", true);
	else
	{
		switch (step->letter)
		{
			case 'N':
				a = trade_answer(id, "NOTPAY", opt_amount, "CNY");
				break;
			case 'U':
				a = trade_answer(id, "USERPAYING", opt_amount, "CNY");
				break;
			case 'S':
				a = trade_answer(id, "SUCCESS", opt_amount, "CNY");
				break;
			case 'A':
				a = trade_answer(id, "SUCCESS", opt_amount + 1, "CNY");
				break;
			case 'Y':
				a = trade_answer(id, "SUCCESS", opt_amount, "USD");
				break;
			case 'H':
				/* jansson writes int64 only: -1 stands in for the huge total */
				a = trade_answer(id, "SUCCESS", -1, "CNY");
				a.body = replace_all(a.body, ":-1", ":99999999999999999999");
				break;
			case 'W':
				/* a genuine, signed SUCCESS of another trade, replayed */
				a = trade_answer("T-ANOTHER-TRADE", "SUCCESS", opt_amount, "CNY");
				break;
			case 'R':
				a = trade_answer(id, "REFUND", opt_amount, "CNY");
				break;
			case 'C':
				a = trade_answer(id, "CLOSED", opt_amount, "CNY");
				break;
			case 'V':
				a = trade_answer(id, "REVOKED", opt_amount, "CNY");
				break;
			case 'F':
				a = trade_answer(id, "PAYERROR", opt_amount, "CNY");
				break;
			case 'Q':
				a = trade_answer(id, "BRAND_NEW", opt_amount, "CNY");
				break;
			case 'O':
				a = error_answer(404, "ORDER_NOT_EXIST", "订单不存在", true);
				break;
			case 'X':
				a = (Answer) {204, strdup(""), true, ""};
				break;
			case 'P':
				a = error_answer(400, "ORDERPAID", "订单已支付", true);
				break;
			case 'Z':
				a = error_answer(404, "ORDER_NOT_EXIST", "订单不存在", true);
				break;
			case 'B':
				a = error_answer(202, "USERPAYING", "用户支付中，需要输入密码", true);
				break;
			default:			/* 'D' */
				a = error_answer(400, "ORDER_CLOSED", "订单已关闭", true);
				break;
		}
	}
	a.modifiers = step->modifiers;
	return a;
}

/*
 * Checks the request's Authorization the way WeChat Pay does; NULL if it
 * is good, else why not.
 */
static const char *
check_authorization(struct MHD_Connection *conn, const char *method,
					const MockRequest *req)
{
	const char *auth = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
	char		mchid[64] = "",
				nonce[128] = "",
				signature[1024] = "",
				timestamp[32] = "",
				serial[128] = "";
	const char *p;
	char	   *message;
	bool		ok;
	long long	stamp;

	if (auth == NULL || strncmp(auth, SCHEME " ", strlen(SCHEME) + 1) != 0)
		return "Authorization is missing or not " SCHEME;
	p = auth + strlen(SCHEME) + 1;
	while (*p)
	{
		const char *eq = strchr(p, '=');
		const char *end;
		char	   *slot = NULL;
		size_t		size = 0;
		size_t		name_len;

		if (eq == NULL || eq[1] != '"' || (end = strchr(eq + 2, '"')) == NULL)
			return "Authorization does not parse";
		name_len = (size_t) (eq - p);
#define FIELD(name, buf) \
		if (name_len == strlen(name) && strncmp(p, name, name_len) == 0) \
			slot = buf, size = sizeof(buf)
		FIELD("mchid", mchid);
		FIELD("nonce_str", nonce);
		FIELD("signature", signature);
		FIELD("timestamp", timestamp);
		FIELD("serial_no", serial);
#undef FIELD
		if (slot != NULL && (size_t) (end - eq - 2) < size)
		{
			memcpy(slot, eq + 2, end - eq - 2);
			slot[end - eq - 2] = '\0';
		}
		p = end + 1;
		if (*p == ',')
			p++;
		while (*p == ' ')
			p++;
	}
	if (!mchid[0] || !nonce[0] || !signature[0] || !timestamp[0] || !serial[0])
		return "Authorization lacks a field";
	if (strcmp(mchid, opt_mchid) != 0)
		return "mchid is not the merchant's";
	if (strcmp(serial, opt_merchant_serial) != 0)
		return "serial_no is not the merchant certificate's";
	stamp = strtoll(timestamp, NULL, 10);
	if (llabs(stamp - (long long) time(NULL)) > MAX_SKEW_S)
		return "timestamp is too far from the clock";
	message = mock_format("%s\n%s\n%s\n%s\n%.*s\n", method, req->uri, timestamp, nonce,
						  (int) req->body.len, req->body.data ? req->body.data : "");
	ok = mock_verify_b64(merchant_public_key, message, strlen(message), signature);
	free(message);
	return ok ? NULL : "signature does not verify";
}

/* Queues answer a, signed as its modifiers say; frees its body. */
static enum MHD_Result
send_answer(struct MHD_Connection *conn, Answer *a)
{
	struct MHD_Response *r;
	size_t		len = strlen(a->body);

	r = mock_response(a->body, len, MHD_RESPMEM_MUST_FREE,
					  len > 0 ? "application/json; charset=utf-8" : NULL);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, "Request-ID", "08F8B5A8-mock");
	if (a->sign && !strchr(a->modifiers, 'h'))
	{
		long long	stamp = (long long) time(NULL) - (strchr(a->modifiers, 'z') ? STALE_S : 0);
		char		timestamp[32];
		char		nonce[33];
		char	   *message;
		char	   *signature;
		EVP_PKEY   *key = platform_private_key;
		const char *serial = opt_platform_serial;

		/* the rotation: after --switch-after signed answers, the next key */
		pthread_mutex_lock(&signed_lock);
		if (next_platform_private_key && opt_switch_after >= 0 &&
			signed_answers++ >= opt_switch_after)
		{
			key = next_platform_private_key;
			serial = opt_next_platform_serial;
		}
		pthread_mutex_unlock(&signed_lock);
		snprintf(timestamp, sizeof(timestamp), "%lld", stamp);
		random_hex(nonce, 16);
		/* t: the signature is over the body with one more byte */
		message = mock_format("%s\n%s\n%s%s\n", timestamp, nonce, a->body,
							  strchr(a->modifiers, 't') ? " " : "");
		if (strchr(a->modifiers, 'g'))
			signature = strdup("WECHATPAY/SIGNTEST/c2lnbmF0dXJlIHRlc3Q=");
		else
			signature = mock_sign_b64(strchr(a->modifiers, 'k') ? other_private_key :
									  key, message, strlen(message));
		MHD_add_response_header(r, "Wechatpay-Timestamp", timestamp);
		MHD_add_response_header(r, "Wechatpay-Nonce", nonce);
		MHD_add_response_header(r, "Wechatpay-Signature", signature);
		MHD_add_response_header(r, "Wechatpay-Signature-Type",
								strchr(a->modifiers, 'b') ? "\xff\xfe\x01RSA\xe4\xbd" : SCHEME);
		MHD_add_response_header(r, "Wechatpay-Serial",
								strchr(a->modifiers, 'w') ? "5157F09EFDC096DE15EBE81A47057A72" :
								serial);
		free(message);
		free(signature);
	}
	return mock_queue(conn, a->status, r);
}

/* A malloc'd copy of len bytes of text with bytes outside 0x21-0x7e as '_'. */
static char *
log_word(const char *text, size_t len)
{
	char	   *out = strndup(text, len);

	if (out == NULL)
		mock_die("out of memory", NULL);
	mock_log_token(out, out, strlen(out));
	return out;
}

/* Appends the log line of a request, with one write(). */
static void
log_request(const MockRequest *req, const char *method, const char *id, unsigned int status)
{
	char	   *path;
	char	   *logged_id;
	char	   *line;

	if (!mock_log_enabled())
		return;
	path = log_word(req->uri, strcspn(req->uri, "?"));
	logged_id = log_word(id ? id : "-", strlen(id ? id : "-"));
	line = mock_format("%lld %s %s %s %u\n", mock_timespec_us(&req->arrival),
					   method, path, logged_id, status);
	mock_log_write(line, strlen(line));
	free(path);
	free(logged_id);
	free(line);
}

/* Answers one whole request. */
static enum MHD_Result
answer_request(struct MHD_Connection *conn, const char *method, MockRequest *req)
{
	const char *uri = req->uri;
	size_t		path_len = strcspn(uri, "?");
	bool		is_post = strcmp(method, "POST") == 0;
	bool		is_close = false;
	bool		is_refund = false;
	char	   *id = NULL;
	const char *why;
	const char *accept = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Accept");
	const char *ctype = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Type");
	const char *request_serial = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Wechatpay-Serial");
	Answer		a;
	enum MHD_Result ret;

	/* the order id: the segment after the prefix, "/close" after it for POST */
	if (strncmp(uri, QUERY_PREFIX, strlen(QUERY_PREFIX)) == 0)
	{
		const char *start = uri + strlen(QUERY_PREFIX);
		size_t		len = path_len - strlen(QUERY_PREFIX);

		if (is_post && len > 6 && strncmp(start + len - 6, "/close", 6) == 0)
		{
			is_close = true;
			len -= 6;
		}
		if (len > 0 && memchr(start, '/', len) == NULL)
			id = mock_percent_decode_dup(start, len, false);
	}
	else if (strncmp(uri, REFUND_PREFIX, strlen(REFUND_PREFIX)) == 0 &&
			 path_len == strlen(uri))
	{
		const char *start = uri + strlen(REFUND_PREFIX);
		size_t		len = path_len - strlen(REFUND_PREFIX);

		is_refund = true;
		if (len > 0 && memchr(start, '/', len) == NULL)
			id = mock_percent_decode_dup(start, len, false);
	}

	if ((why = check_authorization(conn, method, req)) != NULL)
		a = error_answer(401, "SIGN_ERROR", why, false);
	else if (request_serial != NULL && strcmp(request_serial, opt_platform_serial) != 0 &&
			 (opt_next_platform_serial == NULL ||
			  strcmp(request_serial, opt_next_platform_serial) != 0))
		a = error_answer(400, "PARAM_ERROR", "Wechatpay-Serial names no key of the platform", true);
	else if (accept == NULL || strstr(accept, "application/json") == NULL ||
			 (is_post && (ctype == NULL || strstr(ctype, "application/json") == NULL)))
		a = error_answer(400, "INVALID_REQUEST", "Accept and Content-Type must be application/json", true);
	else if (id == NULL || (strcmp(method, "GET") != 0 && !is_close) ||
			 (is_post && !is_close) || req->body.overflow)
		a = error_answer(404, "NOT_FOUND", "no such API", true);
	else if (is_refund)
	{
		const char *tilde = strrchr(id, '~');
		Step		step;

		if (!script_step(tilde ? tilde + 1 : "S", next_attempt(id), &step))
			a = error_answer(400, "PARAM_ERROR", "mock script does not parse", true);
		else
			a = scripted_refund_answer(id, &step);
	}
	else
	{
		bool		mchid_ok;

		if (is_close)
		{
			json_t	   *o = json_loadb(req->body.data ? req->body.data : "", req->body.len, 0, NULL);
			json_t	   *m = json_object_get(o, "mchid");

			mchid_ok = json_is_string(m) && strcmp(json_string_value(m), opt_mchid) == 0 &&
				json_object_size(o) == 1;
			json_decref(o);
		}
		else
		{
			const char *m = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "mchid");

			mchid_ok = m != NULL && strcmp(m, opt_mchid) == 0;
		}
		if (!mchid_ok)
			a = error_answer(400, "PARAM_ERROR", "mchid is missing or not the merchant's", true);
		else
		{
			const char *tilde = strrchr(id, '~');
			Step		step;

			if (!script_step(tilde ? tilde + 1 : "S", next_attempt(id), &step))
				a = error_answer(400, "PARAM_ERROR", "mock script does not parse", true);
			else
				a = scripted_answer(id, is_close, &step);
		}
	}

	log_request(req, method, id, a.status);
	if (mock_opt_latency_ms > 0)
	{
		struct timespec ts = {mock_opt_latency_ms / 1000, (mock_opt_latency_ms % 1000) * 1000000L};

		nanosleep(&ts, NULL);
	}
	ret = send_answer(conn, &a);
	free(id);
	return ret;
}

/* MHD access handler: collects the body, then answers. */
static enum MHD_Result
handle_request(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version, const char *upload_data,
			   size_t *upload_data_size, void **req_cls)
{
	MockRequest *req;
	enum MHD_Result ret;

	(void) cls;
	(void) url;
	(void) version;
	req = mock_request_begin(req_cls, upload_data, upload_data_size, MAX_BODY, &ret);
	if (req == NULL)
		return ret;
	return answer_request(conn, method, req);
}

/* Prints the usage. */
static void
usage(FILE *out)
{
	fprintf(out,
			"Usage: mock_wechatpay --mchid ID --merchant-serial SERIAL\n"
			"         --merchant-public-key FILE --platform-private-key FILE\n"
			"         --platform-serial SERIAL [--amount FEN] [--port N]\n"
			"         [--next-platform-private-key FILE --next-platform-serial SERIAL\n"
			"          --switch-after N]\n"
			"         [--log FILE] [--latency-ms N]\n");
}

/* Reads the command line. */
static void
parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		MOCK_LONGOPTS_COMMON,
		{"mchid", required_argument, NULL, 'm'},
		{"merchant-serial", required_argument, NULL, 's'},
		{"merchant-public-key", required_argument, NULL, 'k'},
		{"platform-private-key", required_argument, NULL, 'K'},
		{"platform-serial", required_argument, NULL, 'S'},
		{"amount", required_argument, NULL, 'a'},
		{"next-platform-private-key", required_argument, NULL, 'n'},
		{"next-platform-serial", required_argument, NULL, 'N'},
		{"switch-after", required_argument, NULL, 'w'},
		MOCK_LONGOPT_LATENCY,
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	while ((c = mock_next_option(argc, argv, longopts)) != -1)
	{
		switch (c)
		{
			case 'm':
				opt_mchid = optarg;
				break;
			case 's':
				opt_merchant_serial = optarg;
				break;
			case 'k':
				merchant_public_key = mock_load_key(optarg, false);
				break;
			case 'K':
				platform_private_key = mock_load_key(optarg, true);
				break;
			case 'S':
				opt_platform_serial = optarg;
				break;
			case 'a':
				opt_amount = atol(optarg);
				break;
			case 'n':
				next_platform_private_key = mock_load_key(optarg, true);
				break;
			case 'N':
				opt_next_platform_serial = optarg;
				break;
			case 'w':
				opt_switch_after = mock_parse_number("--switch-after", optarg, 1000000);
				break;
			case 'h':
				usage(stdout);
				exit(0);
			default:
				usage(stderr);
				exit(2);
		}
	}
	if (optind < argc || !opt_mchid || !opt_merchant_serial || !merchant_public_key ||
		!platform_private_key || !opt_platform_serial ||
		(next_platform_private_key != NULL) != (opt_next_platform_serial != NULL))
	{
		usage(stderr);
		exit(2);
	}
}

/* Starts the server, prints port=N, runs until SIGTERM or SIGINT. */
int
main(int argc, char **argv)
{
	struct MHD_OptionItem options[] = {
		{MHD_OPTION_CONNECTION_LIMIT, 4096, NULL},
		{MHD_OPTION_CONNECTION_TIMEOUT, 600, NULL},
		{MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL},
		{MHD_OPTION_URI_LOG_CALLBACK, (intptr_t) mock_request_from_uri, NULL},
		{MHD_OPTION_NOTIFY_COMPLETED, (intptr_t) mock_request_completed, NULL},
		{MHD_OPTION_END, 0, NULL}
	};

	mock_init("mock_wechatpay");
	parse_args(argc, argv);
	mock_log_open(mock_opt_log);
	other_private_key = mock_new_rsa_key();
	attempts = json_object();
	mock_raise_fd_limit();
	mock_serve(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL, mock_opt_port,
			   handle_request, options);
	return 0;
}
