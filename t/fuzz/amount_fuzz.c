/*
 * amount_fuzz.c
 *		libFuzzer harness of the amount readers the drivers share
 *		(src/driver.c): parse_minor_units(), amount_to_minor() and
 *		answer_paid_decimal().  The input is an amount as a channel sends
 *		it ("88.88", "1999"), optionally followed by "|" and a currency.
 *		Each result is compared with a reference reading done here in
 *		128-bit arithmetic, so an overflow missed or a digit misread is
 *		caught, not only a crash.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "driver.h"
#include "pg_stubs.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The reference for parse_minor_units(): ASCII digits, in an int64. */
static bool
reference_minor_units(const char *text, int64 *minor)
{
	__int128	value = 0;

	if (*text == '\0')
		return false;
	for (const char *p = text; *p; p++)
	{
		if (*p < '0' || *p > '9')
			return false;
		value = value * 10 + (*p - '0');
		if (value > PG_INT64_MAX)
			return false;
	}
	*minor = (int64) value;
	return true;
}

/*
 * The reference for amount_to_minor(): digits with at most one point, at
 * least one digit, digits past the minor unit only zeros, in an int64.
 */
static bool
reference_to_minor(const char *text, int exponent, int64 *minor)
{
	__int128	value = 0;
	const char *point = strchr(text, '.');
	int			fraction = 0;

	if (point != NULL && strchr(point + 1, '.') != NULL)
		return false;
	if (strspn(text, "0123456789.") != strlen(text) || strlen(text) == (point != NULL))
		return false;
	for (const char *p = text; *p; p++)
	{
		if (*p == '.')
			continue;
		if (point != NULL && p > point && fraction >= exponent)
		{
			if (*p != '0')
				return false;
			continue;
		}
		value = value * 10 + (*p - '0');
		if (value > PG_INT64_MAX)
			return false;
		if (point != NULL && p > point)
			fraction++;
	}
	for (; fraction < exponent; fraction++)
	{
		value *= 10;
		if (value > PG_INT64_MAX)
			return false;
	}
	*minor = (int64) value;
	return true;
}

/*
 * The minor-unit digits (ISO 4217) of the currencies this harness uses;
 * 2 for any other.
 */
static int
reference_exponent(const char *currency)
{
	if (pg_strcasecmp(currency, "JPY") == 0 || pg_strcasecmp(currency, "KRW") == 0 ||
		pg_strcasecmp(currency, "VND") == 0 || pg_strcasecmp(currency, "CLP") == 0)
		return 0;
	if (pg_strcasecmp(currency, "KWD") == 0 || pg_strcasecmp(currency, "BHD") == 0 ||
		pg_strcasecmp(currency, "TND") == 0)
		return 3;
	return 2;
}

/* One input: an amount, optionally "|" and a currency. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const currencies[] = {
		"CNY", "usd", "JPY", "krw", "KWD", "TND", "EUR", "VND"
	};
	char	   *text = malloc(size + 1);
	char	   *bar;
	const char *given_currency = NULL;
	int64		got;
	int64		want;
	bool		ok;

	memcpy(text, data, size);
	text[size] = '\0';
	bar = strchr(text, '|');
	if (bar != NULL)
	{
		*bar = '\0';
		given_currency = bar + 1;
	}
	fuzz_database_encoding = PG_UTF8;

	got = want = -42;
	ok = parse_minor_units(text, &got);
	if (ok != reference_minor_units(text, &want) || (ok && got != want))
		abort();

	for (size_t i = 0; i < lengthof(currencies); i++)
	{
		got = want = -42;
		ok = amount_to_minor(text, currencies[i], &got);
		if (ok != reference_to_minor(text, reference_exponent(currencies[i]), &want) ||
			(ok && (got != want || got < 0)))
			abort();
	}

	/* any currency, as a channel may send it */
	if (given_currency != NULL)
	{
		CheckAnswer answer;

		memset(&answer, 0, sizeof(answer));
		if (answer_paid_decimal(&answer, text, given_currency))
		{
			if (answer.is_error || !answer.has_paid_amount ||
				answer.paid_amount_minor < 0 ||
				!currency_code_valid(answer.paid_currency) ||
				pg_strcasecmp(answer.paid_currency, given_currency) != 0)
				abort();
		}
		else if (!answer.is_error || answer.has_paid_amount)
			abort();
		for (const char *p = answer.error; *p; p++)
			if ((unsigned char) *p < 0x20 || *p == 0x7f)
				abort();
	}
	fuzz_memory_reset();
	free(text);
	return 0;
}
