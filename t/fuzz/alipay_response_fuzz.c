/*
 * alipay_response_fuzz.c
 *		libFuzzer harness of the Alipay driver's answer reading
 *		(src/driver_alipay.c, included here to reach its static functions
 *		unchanged): the input is an answer body, read as the answer to a
 *		query, a close and a refund query (0.4).
 *
 *		parse_answer() must find the signed response object's raw text
 *		exactly: inside the body, one object from "{" to "}", and holding the
 *		very field values the driver then believes (read again from the raw
 *		text alone, they must be the same).  The whole alipay_interpret() is
 *		run too, with the signature taken as valid (crypto_verify_b64() is
 *		stubbed here), so that the status, amount and refusal code behind
 *		the check is fuzzed as well; what it puts in *answer must be a
 *		status paysync can set, or an error that is printable text.
 */
#include "../../src/driver_alipay.c"

#include "mb/pg_wchar.h"

#include "pg_stubs.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * Stands for the RSA check: every sign but "bad" verifies, so the fuzzer
 * reaches what follows a valid signature.
 */
bool
crypto_verify_b64(CryptoKey *key, const char *data, size_t len,
				  const char *signature_b64)
{
	return strcmp(signature_b64, "bad") != 0;
}

/* True if both are NULL or both are the same string. */
static bool
same_text(const char *a, const char *b)
{
	return (a == NULL && b == NULL) ||
		(a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Checks what parse_answer() found in body against the raw text alone. */
static void
check_node(const char *body, size_t len, const char *const *wanted,
		   const AlipayAnswer *a)
{
	const char *believed[] = {
		a->code, a->msg, a->sub_code, a->sub_msg, a->trade_status,
		a->out_trade_no, a->total_amount, a->trans_currency,
		a->out_request_no, a->refund_status, a->refund_amount
	};
	JsonField	again[lengthof(node_fields)];
	char	   *raw;

	StaticAssertStmt(lengthof(believed) == lengthof(node_fields), "one value per node field");
	if (a->node_name != wanted[0] && a->node_name != wanted[1])
		abort();
	if (a->node_start < body || a->node_len < 2 ||
		a->node_len > len - (size_t) (a->node_start - body))
		abort();
	if (a->node_start[0] != '{' || a->node_start[a->node_len - 1] != '}')
		abort();

	/* the signed bytes say what the driver believes, and nothing else */
	raw = pnstrdup(a->node_start, a->node_len);
	memset(again, 0, sizeof(again));
	for (size_t i = 0; i < lengthof(node_fields); i++)
		again[i].path = node_fields[i];
	if (json_fields(raw, a->node_len, JSON_FIELDS_UTF8 | JSON_FIELDS_OBJECT,
					again, lengthof(again)) != JSON_FIELDS_OK)
		abort();
	for (size_t i = 0; i < lengthof(node_fields); i++)
		if (!same_text(again[i].value, believed[i]) || again[i].count > 1)
			abort();
}

/*
 * Checks that *answer is a status a driver may answer to a check of this
 * kind (a close may answer "expired") or a printable error.
 */
static void
check_answer(const CheckAnswer *answer, CheckKind kind)
{
	if (answer->is_error)
	{
		if (answer->error[0] == '\0' || strlen(answer->error) >= sizeof(answer->error))
			abort();
		for (const char *p = answer->error; *p; p++)
			if ((unsigned char) *p < 0x20 || *p == 0x7f)
				abort();
		return;
	}
	if (answer->status == NULL || !answer_status_allowed(answer->status, kind))
		abort();
	if (answer->has_paid_amount &&
		(answer->paid_amount_minor < 0 || !currency_code_valid(answer->paid_currency)))
		abort();
}

/* One input: an answer body, read as a query's, a close's and a refund query's answer. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const query_nodes[] = {ALIPAY_QUERY_NODE, ALIPAY_ERROR_NODE};
	static const char *const close_nodes[] = {ALIPAY_CLOSE_NODE, ALIPAY_ERROR_NODE};
	static const char *const refund_nodes[] = {ALIPAY_REFUND_NODE, ALIPAY_ERROR_NODE};
	static const char *const *const lists[] = {query_nodes, close_nodes, refund_nodes};
	static const CheckKind kinds[] = {CHECK_QUERY, CHECK_CLOSE, CHECK_REFUND};
	AlipayConfig config = {.app_id = "2014072300007148"};
	char	   *body = malloc(size + 1);

	memcpy(body, data, size);
	body[size] = '\0';
	fuzz_database_encoding = PG_UTF8;
	for (int k = 0; k < (int) lengthof(kinds); k++)
	{
		CheckKind	kind = kinds[k];
		AlipayAnswer a;
		CheckAnswer answer;
		HttpResult	result;

		memset(&answer, 0, sizeof(answer));
		if (parse_answer(body, size, lists[k], 2, &a, &answer))
			check_node(body, size, lists[k], &a);
		else if (!answer.is_error)
			abort();

		/* the whole interpretation, about the trade of the seeds or any */
		memset(&result, 0, sizeof(result));
		result.status = 200;
		result.body = body;
		result.body_len = size;
		result.retry_after_s = -1;
		memset(&answer, 0, sizeof(answer));
		answer.retry_after_s = -1;
		alipay_interpret(&config, kind,
						 size % 2 ? (kind == CHECK_REFUND ? "R6823789339978248" : "6823789339978248") : NULL,
						 &result, &answer);
		check_answer(&answer, kind);
		fuzz_memory_reset();
	}
	free(body);
	return 0;
}
