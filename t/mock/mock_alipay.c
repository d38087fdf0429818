/*
 * mock_alipay.c
 *		A mock of Alipay's OpenAPI gateway (POST /gateway.do) for the alipay
 *		driver's tests: alipay.trade.query and alipay.trade.close.
 *
 *		Requests are checked as the gateway checks them: the common
 *		parameters (query string and form body together), app_id, sign_type
 *		RSA2, a timestamp "yyyy-MM-dd HH:mm:ss" in Asia/Shanghai time within
 *		15 minutes of now, version 1.0, and the RSA2 signature (SHA256withRSA
 *		over every parameter but sign, empty ones left out, sorted by name as
 *		key=value joined by "&", unencoded) verified with the application's
 *		PUBLIC key.  A wrong or missing one gets Alipay's error response
 *		(40001 isv.missing-*, 40002 isv.invalid-*, e.g. isv.invalid-signature).
 *
 *		Answers are {"<method>_response": {...}, "sign": "..."}, the sign an
 *		RSA2 signature with Alipay's PRIVATE key over the response object's
 *		text exactly as sent; that text has a space after every colon and
 *		comma, so re-serialised JSON does not verify.
 *
 *		The answer for a trade is scripted in its out_trade_no:
 *
 *			<anything>~<query letters>[:<close letters>]
 *
 *		split at the last "~"; no "~" means "S"; letters may be separated
 *		by commas ("x~W,W,S:p").  The Nth query of a trade
 *		does the Nth query letter, the Nth close the Nth close letter; the
 *		last letter repeats.  Query letters:
 *
 *			W	trade_status WAIT_BUYER_PAY
 *			S	TRADE_SUCCESS, total_amount 88.88
 *			F	TRADE_FINISHED, total_amount 88.88
 *			C	TRADE_CLOSED
 *			N	40004 ACQ.TRADE_NOT_EXIST
 *			A	TRADE_SUCCESS, total_amount 1.00 (another amount)
 *			X	trade_status TRADE_WEIRD (unknown)
 *			T	tampered: WAIT_BUYER_PAY signed, TRADE_SUCCESS sent
 *			K	TRADE_SUCCESS signed with a key that is not Alipay's
 *			U	TRADE_SUCCESS without a sign
 *			E	HTTP 500
 *			L	TRADE_SUCCESS signed with "/" in its text, sent with "\/"
 *				(as Alipay may send it)
 *
 *		Close letters (default "c"):
 *
 *			c	10000: closed; later queries say TRADE_CLOSED
 *			p	40004 ACQ.TRADE_STATUS_ERROR, the buyer paid meanwhile: later
 *				queries say TRADE_SUCCESS 88.88
 *			z	40004 ACQ.TRADE_STATUS_ERROR, the trade closed by itself
 *				meanwhile: later queries say TRADE_CLOSED
 *			e	40004 ACQ.SYSTEM_ERROR (nothing changes)
 *			n	40004 ACQ.TRADE_NOT_EXIST (the trade never existed)
 *
 *		alipay.trade.fastpay.refund.query (biz_content out_trade_no and
 *		out_request_no, both required) answers about the refund, scripted
 *		in its out_request_no the same way (no "~": "S"; the Nth query of
 *		a refund does the Nth letter):
 *
 *			S	refund_status REFUND_SUCCESS, refund_amount 10.00
 *			N	code 10000 and no refund data (not received, or not yet)
 *			A	REFUND_SUCCESS, refund_amount 1.00 (another amount)
 *			X	refund_status REFUND_WEIRD (unknown)
 *			O	REFUND_SUCCESS of another out_request_no (replayed)
 *			T	tampered: N signed, S sent
 *			K	REFUND_SUCCESS signed with a key that is not Alipay's
 *			U	REFUND_SUCCESS without a sign
 *			Q	40004 ACQ.TRADE_NOT_EXIST
 *			E	HTTP 500
 *
 *		Certificate mode (--app-cert-sn SN --alipay-root-cert-sn SN, the SNs
 *		the test computed for the certificates it made): every request must
 *		carry those app_cert_sn and alipay_root_cert_sn (signed like every
 *		parameter), else 40002 isv.invalid-app-cert-sn /
 *		isv.invalid-alipay-root-cert-sn; answers then carry alipay_cert_sn
 *		next to the sign, as Alipay's do.  Without them, a request carrying
 *		either is refused (40002 isv.invalid-parameter): the application is
 *		in key mode.
 *
 *		Command line: --port N (0: any), --log FILE, --app-id ID,
 *		--app-public-key FILE (PEM), --alipay-private-key FILE (PEM),
 *		[--app-cert-sn SN --alipay-root-cert-sn SN].  Prints
 *		"port=N" once listening.  Log: one line per request, "<unix us>
 *		<HTTP method> <path> <out_trade_no or -> <Alipay method or ->".
 */
#define _GNU_SOURCE

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/evp.h>

#include "mock_common.h"

#define MAX_BODY (64 * 1024)
#define MAX_PARAMS 32

/* Default amount of a paid trade. */
#define PAID_AMOUNT "88.88"

/* One request parameter, decoded. */
typedef struct Param
{
	char	   *key;
	char	   *value;
} Param;

/* What the mock remembers of a trade. */
typedef struct Trade
{
	struct Trade *next;
	char	   *id;
	int			queries;
	int			closes;
	char		now;			/* 0: scripted; 'S' paid; 'C' closed */
} Trade;

static const char *opt_app_id = NULL;
static const char *opt_app_cert_sn = NULL;
static const char *opt_root_cert_sn = NULL;
static EVP_PKEY *app_public_key = NULL;
static EVP_PKEY *alipay_private_key = NULL;
static EVP_PKEY *wrong_private_key = NULL;

/* One MHD thread answers everything, so this needs no lock. */
static Trade *trades = NULL;

/* The trade called id, created on first sight. */
static Trade *
trade_get(const char *id)
{
	Trade	   *t;

	for (t = trades; t; t = t->next)
		if (strcmp(t->id, id) == 0)
			return t;
	t = calloc(1, sizeof(Trade));
	if (t == NULL || (t->id = strdup(id)) == NULL)
		mock_die("out of memory", NULL);
	t->next = trades;
	trades = t;
	return t;
}

/*
 * The letter for the nth (0-based) request in letters (commas between
 * letters are allowed and skipped), the last one repeating; def if there
 * are none.
 */
static char
script_letter(const char *letters, size_t len, int n, char def)
{
	char		letter = def;
	int			seen = 0;

	for (size_t i = 0; i < len; i++)
	{
		if (letters[i] == ',')
			continue;
		letter = letters[i];
		if (seen++ == n)
			break;
	}
	return letter;
}

/* Splits id's script into its query and close letters. */
static void
script_of(const char *id, const char **query, size_t *query_len,
		  const char **close, size_t *close_len)
{
	const char *tilde = strrchr(id, '~');
	const char *colon;

	*query = "S";
	*query_len = 1;
	*close = "";
	*close_len = 0;
	if (tilde == NULL)
		return;
	*query = tilde + 1;
	colon = strchr(*query, ':');
	if (colon)
	{
		*query_len = colon - *query;
		*close = colon + 1;
		*close_len = strlen(*close);
	}
	else
		*query_len = strlen(*query);
}

/* Adds a parameter; false if there are too many or it is given twice. */
static bool
param_add(Param *params, int *n, char *key, char *value)
{
	for (int i = 0; i < *n; i++)
		if (strcmp(params[i].key, key) == 0)
			return false;
	if (*n >= MAX_PARAMS)
		return false;
	params[*n].key = key;
	params[*n].value = value;
	(*n)++;
	return true;
}

/* Parses a form body into params; false on a duplicate or too many. */
static bool
parse_form(const char *body, size_t len, Param *params, int *n)
{
	size_t		start = 0;

	while (start < len)
	{
		size_t		end = start;
		const char *eq;

		while (end < len && body[end] != '&')
			end++;
		if (end > start)
		{
			eq = memchr(body + start, '=', end - start);
			if (eq == NULL)
				eq = body + end;
			if (!param_add(params, n,
						   mock_percent_decode_dup(body + start, eq - (body + start), true),
						   eq < body + end ?
						   mock_percent_decode_dup(eq + 1, body + end - eq - 1, true) :
						   strdup("")))
				return false;
		}
		start = end + 1;
	}
	return true;
}

/* Collects one query-string argument (MHD has decoded it). */
static enum MHD_Result
collect_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	void	  **state = cls;
	Param	   *params = state[0];
	int		   *n = state[1];
	bool	   *ok = state[2];

	(void) kind;
	if (!param_add(params, n, strdup(key), strdup(value ? value : "")))
		*ok = false;
	return MHD_YES;
}

/* The value of parameter key, or NULL. */
static const char *
param_get(const Param *params, int n, const char *key)
{
	for (int i = 0; i < n; i++)
		if (strcmp(params[i].key, key) == 0)
			return params[i].value;
	return NULL;
}

/* Orders parameters by name. */
static int
param_cmp(const void *a, const void *b)
{
	return strcmp(((const Param *) a)->key, ((const Param *) b)->key);
}

/* The string Alipay verifies a request's sign over, malloc'd. */
static char *
sign_content(Param *params, int n)
{
	size_t		size = 1;
	char	   *out;
	size_t		o = 0;

	qsort(params, n, sizeof(Param), param_cmp);
	for (int i = 0; i < n; i++)
		size += strlen(params[i].key) + strlen(params[i].value) + 2;
	out = malloc(size);
	if (out == NULL)
		mock_die("out of memory", NULL);
	for (int i = 0; i < n; i++)
	{
		if (strcmp(params[i].key, "sign") == 0 || params[i].value[0] == '\0')
			continue;
		o += sprintf(out + o, "%s%s=%s", o ? "&" : "", params[i].key, params[i].value);
	}
	out[o] = '\0';
	return out;
}

/* True if ts is "yyyy-MM-dd HH:mm:ss" Shanghai time within 15 minutes of now. */
static bool
timestamp_fresh(const char *ts)
{
	struct tm	tm;
	const char *end;
	time_t		t;

	memset(&tm, 0, sizeof(tm));
	end = strptime(ts, "%Y-%m-%d %H:%M:%S", &tm);
	if (end == NULL || *end != '\0' || strlen(ts) != 19)
		return false;
	t = timegm(&tm) - 8 * 60 * 60;
	return labs((long) (t - time(NULL))) <= 15 * 60;
}

/* Writes the log line of a request. */
static void
log_request(const char *http_method, const char *url, const char *id,
			const char *method)
{
	char		line[2048];
	int			n;

	if (!mock_log_enabled())
		return;
	n = snprintf(line, sizeof(line), "%lld %s %s %s %s\n", mock_now_us(),
				 http_method, url, id ? id : "-", method ? method : "-");
	if (n > 0 && (size_t) n < sizeof(line))
	{
		/* one word per field: spaces in ids become "_" */
		for (int i = 0, field = 0; i < n - 1; i++)
		{
			if (line[i] == ' ' && ++field > 4)
				line[i] = '_';
			else if ((unsigned char) line[i] < 0x20)
				line[i] = '_';
		}
		mock_log_write(line, n);
	}
}

/* Sends status and body as JSON. */
static enum MHD_Result
send_text(struct MHD_Connection *conn, unsigned int status, const char *text)
{
	return mock_send(conn, status, text, "application/json;charset=utf-8");
}

/*
 * Sends {"<node_name>": <node>, "sign": "<sign>"}: node signed with key
 * (no sign if key is NULL); if sent is not NULL, it goes out in place of
 * node (a tampered answer).
 */
static enum MHD_Result
send_signed(struct MHD_Connection *conn, const char *node_name, const char *node,
			EVP_PKEY *key, const char *sent)
{
	char	   *sign = key ? mock_sign_b64(key, node, strlen(node)) : NULL;
	char	   *body;
	enum MHD_Result ret;

	if (sign && opt_app_cert_sn)
		body = mock_format("{\"%s\": %s, \"alipay_cert_sn\": \"%s\", \"sign\": \"%s\"}",
						   node_name, sent ? sent : node,
						   "6bc29aa3b4d406c43483ffea81e08d22" /* any: paysync ignores it */, sign);
	else if (sign)
		body = mock_format("{\"%s\": %s, \"sign\": \"%s\"}", node_name,
						   sent ? sent : node, sign);
	else
		body = mock_format("{\"%s\": %s}", node_name, sent ? sent : node);
	ret = send_text(conn, MHD_HTTP_OK, body);
	free(body);
	free(sign);
	return ret;
}

/* Sends Alipay's signed error answer: code, msg, sub_code, sub_msg. */
static enum MHD_Result
send_error(struct MHD_Connection *conn, const char *node_name, const char *code,
		   const char *msg, const char *sub_code, const char *sub_msg,
		   const char *out_trade_no)
{
	char	   *node;
	char	   *id = out_trade_no ? mock_json_escape_dup(out_trade_no) : NULL;
	enum MHD_Result ret;

	node = mock_format("{\"code\": \"%s\", \"msg\": \"%s\", \"sub_code\": \"%s\", \"sub_msg\": \"%s\"%s%s%s}",
					   code, msg, sub_code, sub_msg,
					   id ? ", \"out_trade_no\": \"" : "", id ? id : "", id ? "\"" : "");
	ret = send_signed(conn, node_name, node, alipay_private_key, NULL);
	free(node);
	free(id);
	return ret;
}

/* The query response object for a trade in status with amount (or NULL). */
static char *
trade_node(const char *id, const char *status, const char *amount)
{
	char	   *node;
	char	   *esc = mock_json_escape_dup(id);

	node = mock_format("{\"code\": \"10000\", \"msg\": \"Success\", \"buyer_logon_id\": \"159****5620\", "
					   "\"buyer_pay_amount\": \"0.00\", \"out_trade_no\": \"%s\", "
					   "\"fund_bill_list\": [{\"amount\": \"%s\", \"fund_channel\": \"ALIPAYACCOUNT\"}], "
					   "\"point_amount\": \"0.00\", \"send_pay_date\": \"2024-11-26 15:45:57\", "
					   "\"total_amount\": \"%s\", \"trade_no\": \"2024112622001404500000000001\", "
					   "\"trade_status\": \"%s\"}",
					   esc, amount ? amount : "0.00", amount ? amount : PAID_AMOUNT, status);
	free(esc);
	return node;
}

/* A copy of text with every "/" written "\/", malloc'd. */
static char *
escape_slashes(const char *text)
{
	char	   *out = malloc(2 * strlen(text) + 1);
	size_t		o = 0;

	if (out == NULL)
		mock_die("out of memory", NULL);
	for (const char *p = text; *p; p++)
	{
		if (*p == '/')
			out[o++] = '\\';
		out[o++] = *p;
	}
	out[o] = '\0';
	return out;
}

/* Answers alipay.trade.query for trade t. */
static enum MHD_Result
answer_query(struct MHD_Connection *conn, Trade *t)
{
	const char *q,
			   *c;
	size_t		ql,
				cl;
	char		letter;
	char	   *node = NULL;
	char	   *sent = NULL;
	EVP_PKEY   *key = alipay_private_key;
	enum MHD_Result ret;

	script_of(t->id, &q, &ql, &c, &cl);
	letter = script_letter(q, ql, t->queries++, 'S');
	if (t->now == 'S')
		letter = 'S';
	else if (t->now == 'C')
		letter = 'C';

	switch (letter)
	{
		case 'W':
			node = trade_node(t->id, "WAIT_BUYER_PAY", NULL);
			break;
		case 'S':
			node = trade_node(t->id, "TRADE_SUCCESS", PAID_AMOUNT);
			break;
		case 'F':
			node = trade_node(t->id, "TRADE_FINISHED", PAID_AMOUNT);
			break;
		case 'C':
			node = trade_node(t->id, "TRADE_CLOSED", NULL);
			break;
		case 'A':
			node = trade_node(t->id, "TRADE_SUCCESS", "1.00");
			break;
		case 'X':
			node = trade_node(t->id, "TRADE_WEIRD", NULL);
			break;
		case 'T':
			node = trade_node(t->id, "WAIT_BUYER_PAY", NULL);
			sent = trade_node(t->id, "TRADE_SUCCESS", PAID_AMOUNT);
			break;
		case 'K':
			node = trade_node(t->id, "TRADE_SUCCESS", PAID_AMOUNT);
			key = wrong_private_key;
			break;
		case 'U':
			node = trade_node(t->id, "TRADE_SUCCESS", PAID_AMOUNT);
			key = NULL;
			break;
		case 'L':
			/* the node with a qr_url, signed with "/", sent with "\/" */
			sent = trade_node(t->id, "TRADE_SUCCESS", PAID_AMOUNT);
			node = mock_format("%.*s, \"qr_url\": \"https://qr.alipay.com/bax0\"}",
							   (int) strlen(sent) - 1, sent);
			free(sent);
			sent = escape_slashes(node);
			break;
		case 'N':
			return send_error(conn, "alipay_trade_query_response", "40004", "Business Failed",
							  "ACQ.TRADE_NOT_EXIST", "交易不存在", NULL);
		case 'E':
			return send_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "{\"error\": \"scripted\"}");
		default:
			return send_error(conn, "alipay_trade_query_response", "40004", "Business Failed",
							  "ACQ.INVALID_PARAMETER", "bad script letter", NULL);
	}
	ret = send_signed(conn, "alipay_trade_query_response", node, key, sent);
	free(node);
	free(sent);
	return ret;
}

/*
 * The refund query response object for refund request_no of trade id:
 * refund_status status (NULL: no refund data at all) and amount.
 */
static char *
refund_node(const char *id, const char *request_no, const char *status, const char *amount)
{
	char	   *node;
	char	   *esc = mock_json_escape_dup(id);
	char	   *req = mock_json_escape_dup(request_no);

	if (status == NULL)
		node = strdup("{\"code\": \"10000\", \"msg\": \"Success\"}");
	else
		node = mock_format("{\"code\": \"10000\", \"msg\": \"Success\", \"out_request_no\": \"%s\", "
						   "\"out_trade_no\": \"%s\", \"refund_amount\": \"%s\", "
						   "\"refund_status\": \"%s\", \"total_amount\": \"%s\", "
						   "\"trade_no\": \"2024112622001404500000000001\"}",
						   req, esc, amount, status, PAID_AMOUNT);
	free(esc);
	free(req);
	if (node == NULL)
		mock_die("out of memory", NULL);
	return node;
}

/*
 * Answers alipay.trade.fastpay.refund.query for refund r (its id is
 * "<out_trade_no>\n<out_request_no>") of trade out_trade_no.
 */
static enum MHD_Result
answer_refund(struct MHD_Connection *conn, Trade *r, const char *out_trade_no,
			  const char *request_no)
{
	const char *tilde = strrchr(request_no, '~');
	const char *letters = tilde ? tilde + 1 : "S";
	char		letter = script_letter(letters, strlen(letters), r->queries++, 'S');
	const char *node_name = "alipay_trade_fastpay_refund_query_response";
	char	   *node = NULL;
	char	   *sent = NULL;
	EVP_PKEY   *key = alipay_private_key;
	enum MHD_Result ret;

	switch (letter)
	{
		case 'S':
			node = refund_node(out_trade_no, request_no, "REFUND_SUCCESS", "10.00");
			break;
		case 'N':
			node = refund_node(out_trade_no, request_no, NULL, NULL);
			break;
		case 'A':
			node = refund_node(out_trade_no, request_no, "REFUND_SUCCESS", "1.00");
			break;
		case 'X':
			node = refund_node(out_trade_no, request_no, "REFUND_WEIRD", "10.00");
			break;
		case 'O':
			node = refund_node(out_trade_no, "R-ANOTHER-REFUND", "REFUND_SUCCESS", "10.00");
			break;
		case 'T':
			node = refund_node(out_trade_no, request_no, NULL, NULL);
			sent = refund_node(out_trade_no, request_no, "REFUND_SUCCESS", "10.00");
			break;
		case 'K':
			node = refund_node(out_trade_no, request_no, "REFUND_SUCCESS", "10.00");
			key = wrong_private_key;
			break;
		case 'U':
			node = refund_node(out_trade_no, request_no, "REFUND_SUCCESS", "10.00");
			key = NULL;
			break;
		case 'Q':
			return send_error(conn, node_name, "40004", "Business Failed",
							  "ACQ.TRADE_NOT_EXIST", "交易不存在", NULL);
		case 'E':
			return send_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "{\"error\": \"scripted\"}");
		default:
			return send_error(conn, node_name, "40004", "Business Failed",
							  "ACQ.INVALID_PARAMETER", "bad script letter", NULL);
	}
	ret = send_signed(conn, node_name, node, key, sent);
	free(node);
	free(sent);
	return ret;
}

/* Answers alipay.trade.close for trade t. */
static enum MHD_Result
answer_close(struct MHD_Connection *conn, Trade *t)
{
	const char *q,
			   *c;
	size_t		ql,
				cl;
	char		letter;
	char	   *node;
	char	   *esc;
	enum MHD_Result ret;

	script_of(t->id, &q, &ql, &c, &cl);
	letter = script_letter(c, cl, t->closes++, 'c');
	switch (letter)
	{
		case 'c':
			t->now = 'C';
			esc = mock_json_escape_dup(t->id);
			node = mock_format("{\"code\": \"10000\", \"msg\": \"Success\", \"out_trade_no\": \"%s\", "
							   "\"trade_no\": \"2024112622001404500000000001\"}", esc);
			ret = send_signed(conn, "alipay_trade_close_response", node, alipay_private_key, NULL);
			free(node);
			free(esc);
			return ret;
		case 'p':
		case 'z':
			t->now = (letter == 'p') ? 'S' : 'C';
			return send_error(conn, "alipay_trade_close_response", "40004", "Business Failed",
							  "ACQ.TRADE_STATUS_ERROR", "交易状态不合法", t->id);
		case 'e':
			return send_error(conn, "alipay_trade_close_response", "40004", "Business Failed",
							  "ACQ.SYSTEM_ERROR", "系统异常", t->id);
		case 'n':
			return send_error(conn, "alipay_trade_close_response", "40004", "Business Failed",
							  "ACQ.TRADE_NOT_EXIST", "交易不存在", t->id);
		default:
			return send_error(conn, "alipay_trade_close_response", "40004", "Business Failed",
							  "ACQ.INVALID_PARAMETER", "bad script letter", t->id);
	}
}

/* Checks a whole gateway request and answers it. */
static enum MHD_Result
handle_gateway(struct MHD_Connection *conn, const char *url, const char *http_method,
			   MockRequest *req)
{
	Param		params[MAX_PARAMS];
	int			n = 0;
	bool		ok = true;
	void	   *state[3] = {params, &n, &ok};
	const char *method,
			   *app_id,
			   *sign,
			   *sign_type,
			   *timestamp,
			   *version,
			   *charset,
			   *format,
			   *biz;
	const char *node_name = "error_response";
	char		node_buf[64];
	json_t	   *biz_json = NULL;
	const char *id = NULL;
	const char *request_no = NULL;
	char	   *content;
	enum MHD_Result ret;

	MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, collect_arg, state);
	if (ok && req->body.len > 0)
		ok = parse_form(req->body.data, req->body.len, params, &n);
	method = param_get(params, n, "method");
	biz = param_get(params, n, "biz_content");
	if (biz)
	{
		biz_json = json_loads(biz, 0, NULL);
		if (json_is_object(biz_json) &&
			json_is_string(json_object_get(biz_json, "out_trade_no")))
			id = json_string_value(json_object_get(biz_json, "out_trade_no"));
		if (json_is_object(biz_json) &&
			json_is_string(json_object_get(biz_json, "out_request_no")))
			request_no = json_string_value(json_object_get(biz_json, "out_request_no"));
	}
	log_request(http_method, url, id, method);

	if (strcmp(http_method, "POST") != 0 && strcmp(http_method, "GET") != 0)
	{
		ret = send_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "{\"error\": \"method not allowed\"}");
		goto done;
	}
	if (!ok || req->body.overflow)
	{
		ret = send_error(conn, node_name, "40002", "Invalid Arguments",
						 "isv.invalid-parameter", "duplicate or too many parameters", NULL);
		goto done;
	}
	if (method == NULL)
	{
		ret = send_error(conn, node_name, "40001", "Missing Required Arguments",
						 "isv.missing-method", "缺少方法名参数", NULL);
		goto done;
	}
	if (strcmp(method, "alipay.trade.query") != 0 && strcmp(method, "alipay.trade.close") != 0 &&
		strcmp(method, "alipay.trade.fastpay.refund.query") != 0)
	{
		ret = send_error(conn, node_name, "40002", "Invalid Arguments",
						 "isv.invalid-method", "不存在的方法名", NULL);
		goto done;
	}
	snprintf(node_buf, sizeof(node_buf), "%s_response", method);
	for (char *p = node_buf; *p; p++)
		if (*p == '.')
			*p = '_';
	node_name = node_buf;

	app_id = param_get(params, n, "app_id");
	sign = param_get(params, n, "sign");
	sign_type = param_get(params, n, "sign_type");
	timestamp = param_get(params, n, "timestamp");
	version = param_get(params, n, "version");
	charset = param_get(params, n, "charset");
	format = param_get(params, n, "format");

	if (app_id == NULL)
		ret = send_error(conn, node_name, "40001", "Missing Required Arguments",
						 "isv.missing-app-id", "缺少AppID参数", NULL);
	else if (strcmp(app_id, opt_app_id) != 0)
		ret = send_error(conn, node_name, "40002", "Invalid Arguments",
						 "isv.invalid-app-id", "无效的AppID参数", NULL);
	else if (sign == NULL || sign[0] == '\0')
		ret = send_error(conn, node_name, "40001", "Missing Required Arguments",
						 "isv.missing-signature", "缺少签名参数", NULL);
	else if (sign_type == NULL)
		ret = send_error(conn, node_name, "40001", "Missing Required Arguments",
						 "isv.missing-signature-type", "缺少签名类型参数", NULL);
	else if (strcmp(sign_type, "RSA2") != 0)
		ret = send_error(conn, node_name, "40002", "Invalid Arguments",
						 "isv.invalid-signature-type", "无效的签名类型参数", NULL);
	else if (timestamp == NULL)
		ret = send_error(conn, node_name, "40001", "Missing Required Arguments",
						 "isv.missing-timestamp", "缺少时间戳参数", NULL);
	else if (!timestamp_fresh(timestamp))
		ret = send_error(conn, node_name, "40002", "Invalid Arguments",
						 "isv.invalid-timestamp", "非法的时间戳参数", NULL);
	else if (version == NULL)
		ret = send_error(conn, node_name, "40001", "Missing Required Arguments",
						 "isv.missing-version", "缺少版本参数", NULL);
	else if (strcmp(version, "1.0") != 0)
		ret = send_error(conn, node_name, "40002", "Invalid Arguments",
						 "isv.invalid-parameter", "version must be 1.0", NULL);
	else if (charset == NULL || strcasecmp(charset, "utf-8") != 0)
		ret = send_error(conn, node_name, "40002", "Invalid Arguments",
						 "isv.invalid-charset", "字符集错误", NULL);
	else if (format != NULL && strcasecmp(format, "JSON") != 0)
		ret = send_error(conn, node_name, "40002", "Invalid Arguments",
						 "isv.invalid-format", "无效的数据格式参数", NULL);
	else if (opt_app_cert_sn &&
			 !(param_get(params, n, "app_cert_sn") &&
			   strcmp(param_get(params, n, "app_cert_sn"), opt_app_cert_sn) == 0))
		ret = send_error(conn, node_name, "40002", "Invalid Arguments",
						 "isv.invalid-app-cert-sn", "应用公钥证书序列号不匹配", NULL);
	else if (opt_app_cert_sn &&
			 !(param_get(params, n, "alipay_root_cert_sn") &&
			   strcmp(param_get(params, n, "alipay_root_cert_sn"), opt_root_cert_sn) == 0))
		ret = send_error(conn, node_name, "40002", "Invalid Arguments",
						 "isv.invalid-alipay-root-cert-sn", "支付宝根证书序列号不匹配", NULL);
	else if (!opt_app_cert_sn && (param_get(params, n, "app_cert_sn") ||
								  param_get(params, n, "alipay_root_cert_sn")))
		ret = send_error(conn, node_name, "40002", "Invalid Arguments",
						 "isv.invalid-parameter", "the application is in key mode", NULL);
	else
	{
		content = sign_content(params, n);
		if (!mock_verify_b64(app_public_key, content, strlen(content), sign))
			ret = send_error(conn, node_name, "40002", "Invalid Arguments",
							 "isv.invalid-signature", "验签出错", NULL);
		else if (id == NULL || id[0] == '\0')
			ret = send_error(conn, node_name, "40004", "Business Failed",
							 "ACQ.INVALID_PARAMETER", "参数无效", NULL);
		else if (strcmp(method, "alipay.trade.fastpay.refund.query") == 0)
		{
			if (request_no == NULL || request_no[0] == '\0')
				ret = send_error(conn, node_name, "40004", "Business Failed",
								 "ACQ.INVALID_PARAMETER", "参数无效", NULL);
			else
			{
				char	   *key = mock_format("%s\n%s", id, request_no);

				ret = answer_refund(conn, trade_get(key), id, request_no);
				free(key);
			}
		}
		else if (strcmp(method, "alipay.trade.query") == 0)
			ret = answer_query(conn, trade_get(id));
		else
			ret = answer_close(conn, trade_get(id));
		free(content);
	}

done:
	json_decref(biz_json);
	for (int i = 0; i < n; i++)
	{
		free(params[i].key);
		free(params[i].value);
	}
	return ret;
}

/* MHD access handler: collects the body, then answers. */
static enum MHD_Result
handle_request(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version,
			   const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	MockRequest *req;
	enum MHD_Result ret;

	(void) cls;
	(void) version;
	req = mock_request_begin(con_cls, upload_data, upload_data_size, MAX_BODY, &ret);
	if (req == NULL)
		return ret;
	if (strcmp(url, "/gateway.do") != 0)
	{
		log_request(method, url, NULL, NULL);
		return send_text(conn, MHD_HTTP_NOT_FOUND, "{\"error\": \"not found\"}");
	}
	return handle_gateway(conn, url, method, req);
}

/* Reads the command line. */
static void
parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		MOCK_LONGOPTS_COMMON,
		{"app-id", required_argument, NULL, 'a'},
		{"app-public-key", required_argument, NULL, 'k'},
		{"alipay-private-key", required_argument, NULL, 'K'},
		{"app-cert-sn", required_argument, NULL, 'c'},
		{"alipay-root-cert-sn", required_argument, NULL, 'r'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	while ((c = mock_next_option(argc, argv, longopts)) != -1)
	{
		switch (c)
		{
			case 'a':
				opt_app_id = optarg;
				break;
			case 'k':
				app_public_key = mock_load_key(optarg, false);
				break;
			case 'K':
				alipay_private_key = mock_load_key(optarg, true);
				break;
			case 'c':
				opt_app_cert_sn = optarg;
				break;
			case 'r':
				opt_root_cert_sn = optarg;
				break;
			default:
				mock_die("usage: mock_alipay --port N --app-id ID --app-public-key FILE "
					"--alipay-private-key FILE [--log FILE]", NULL);
		}
	}
	if (opt_app_id == NULL || app_public_key == NULL || alipay_private_key == NULL)
		mock_die("--app-id, --app-public-key and --alipay-private-key are required", NULL);
	if ((opt_app_cert_sn == NULL) != (opt_root_cert_sn == NULL))
		mock_die("--app-cert-sn and --alipay-root-cert-sn go together", NULL);
}

/* Starts the server, prints the port, runs until SIGTERM or SIGINT. */
int
main(int argc, char **argv)
{
	struct MHD_OptionItem options[] = {
		{MHD_OPTION_NOTIFY_COMPLETED, (intptr_t) mock_request_completed, NULL},
		{MHD_OPTION_CONNECTION_TIMEOUT, 60, NULL},
		{MHD_OPTION_END, 0, NULL}
	};

	mock_init("mock_alipay");
	parse_args(argc, argv);
	mock_log_open(mock_opt_log);
	wrong_private_key = mock_new_rsa_key();
	mock_serve(0, mock_opt_port, handle_request, options);
	return 0;
}
