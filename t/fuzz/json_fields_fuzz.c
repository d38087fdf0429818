/*
 * json_fields_fuzz.c
 *		libFuzzer harness of json_fields() (src/json_fields.c): the input is
 *		a channel's answer body, read with the field paths and flags the
 *		drivers use, in UTF-8 and in a few other server encodings.  Besides
 *		the sanitizers' checks, asserts what callers rely on: a raw text lies
 *		inside the body, is one container and parses again by itself; a value
 *		is counted; nothing is taken from a text json_fields() refused.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "json_fields.h"
#include "pg_stubs.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The paths the drivers ask for, and paths with indexes and odd shapes. */
static const char *const fuzz_paths[] = {
	"status", "id", "amount", "amount_received", "currency", "error.type",
	"error.code", "error.message", "trade_state", "amount.payer_total",
	"amount.currency", "out_trade_no", "code", "message", "sign",
	"alipay_trade_query_response", "alipay_trade_query_response.code",
	"alipay_trade_query_response.total_amount", "error_response",
	"purchase_units[0].payments.captures[0].status",
	"purchase_units[0].payments.captures[0].amount.value",
	"purchase_units[0].amount", "access_token", "expires_in",
	"data.items[1][0].state", "[0]", "[0].status", "a..b", ".", "x[", "x[]",
	"x[-1]", "x[99999999999]", "x[1]y[2]", "[2][0]"
};

/* The flag combinations the drivers use, and every flag alone. */
static const int fuzz_flags[] = {
	0,
	JSON_FIELDS_OBJECT,
	JSON_FIELDS_UTF8,
	JSON_FIELDS_OBJECT | JSON_FIELDS_SHALLOW | JSON_FIELDS_INDEXES,
	JSON_FIELDS_SHALLOW,
	JSON_FIELDS_INDEXES | JSON_FIELDS_UTF8,
};

/* Server encodings the answer may be read in. */
static const int fuzz_encodings[] = {PG_UTF8, PG_SQL_ASCII, PG_LATIN1, PG_EUC_JP};

/* Checks what a successful json_fields() gave for one field. */
static void
check_field(const char *body, size_t len, const JsonField *f, int flags)
{
	if (f->value != NULL && f->count < 1)
		abort();
	if (f->count > f->members)
		abort();
	if ((f->value == NULL) != (f->count == 0))
		abort();
	if (f->raw_start != NULL)
	{
		JsonFieldsResult again;
		char	   *copy;

		if (f->raw_start < body || f->raw_len < 2 ||
			f->raw_len > len - (size_t) (f->raw_start - body))
			abort();
		if (!((f->raw_start[0] == '{' && f->raw_start[f->raw_len - 1] == '}') ||
			  (f->raw_start[0] == '[' && f->raw_start[f->raw_len - 1] == ']')))
			abort();
		copy = pnstrdup(f->raw_start, f->raw_len);
		again = json_fields(copy, f->raw_len, flags & JSON_FIELDS_UTF8, NULL, 0);
		if (again != JSON_FIELDS_OK)
			abort();
	}
}

/* One input: a body, read with every flag set and encoding above. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *body = malloc(size + 1);
	JsonField	fields[lengthof(fuzz_paths)];

	memcpy(body, data, size);
	body[size] = '\0';
	for (size_t e = 0; e < lengthof(fuzz_encodings); e++)
	{
		fuzz_database_encoding = fuzz_encodings[e];
		for (size_t fl = 0; fl < lengthof(fuzz_flags); fl++)
		{
			JsonFieldsResult result;

			/* the other encodings matter only where UTF-8 is not forced */
			if (e > 0 && (fuzz_flags[fl] & JSON_FIELDS_UTF8))
				continue;
			memset(fields, 0, sizeof(fields));
			for (size_t i = 0; i < lengthof(fuzz_paths); i++)
			{
				fields[i].path = fuzz_paths[i];
				/* some fields take only strings, as Alipay's amounts do */
				fields[i].only = (i % 3 == 2) ? JSON_TOKEN_STRING : JSON_TOKEN_INVALID;
			}
			result = json_fields(body, size, fuzz_flags[fl], fields, lengthof(fields));
			for (size_t i = 0; i < lengthof(fuzz_paths); i++)
			{
				if (result != JSON_FIELDS_OK &&
					(fields[i].value != NULL || fields[i].count != 0))
				{
					/* a refused text may have been half read: nothing taken? */
					if (result != JSON_FIELDS_INVALID)
						abort();
				}
				if (result == JSON_FIELDS_OK)
					check_field(body, size, &fields[i], fuzz_flags[fl]);
			}
			(void) json_fields_problem(result);
			fuzz_memory_reset();
		}
	}
	free(body);
	return 0;
}
