/*
 * http_header_fuzz.c
 *		libFuzzer harness of http_header() (src/http_util.c): the input is a
 *		raw response header block as the HTTP engine keeps it ("Name:
 *		value\r\n" lines).  The headers the drivers read are looked up, and
 *		the name of the block's first line; each answer is compared with a
 *		reference lookup done here.
 */
#include "postgres.h"

#include "http_util.h"
#include "pg_stubs.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The reference: the first "\r\n"-separated line that is name, ":" and a
 * value (name in any case), the value without blanks around it.
 */
static char *
reference_header(const char *block, const char *name)
{
	size_t		name_len = strlen(name);
	const char *line = block;

	while (*line)
	{
		const char *end = strstr(line, "\r\n");
		const char *line_end = end ? end : line + strlen(line);

		if ((size_t) (line_end - line) > name_len && line[name_len] == ':' &&
			pg_strncasecmp(line, name, name_len) == 0)
		{
			const char *v = line + name_len + 1;

			while (v < line_end && (*v == ' ' || *v == '\t'))
				v++;
			while (line_end > v && (line_end[-1] == ' ' || line_end[-1] == '\t'))
				line_end--;
			return pnstrdup(v, line_end - v);
		}
		if (end == NULL)
			break;
		line = end + 2;
	}
	return NULL;
}

/* One input: a raw header block. */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = {
		"Retry-After", "Wechatpay-Timestamp", "Wechatpay-Nonce",
		"Wechatpay-Signature", "Wechatpay-Serial", "Wechatpay-Signature-Type",
		"Stripe-Should-Retry", "Request-Id", "Content-Type", "X"
	};
	char	   *block = malloc(size + 1);
	HttpResult	result;
	size_t		first_name_len;

	memcpy(block, data, size);
	block[size] = '\0';
	memset(&result, 0, sizeof(result));
	result.headers = block;
	for (size_t i = 0; i <= lengthof(names); i++)
	{
		const char *name;
		char	   *got;
		char	   *want;

		if (i < lengthof(names))
			name = names[i];
		else
		{
			/* the first line's own name, whatever it is */
			first_name_len = strcspn(block, ":\r\n");
			if (first_name_len == 0 || block[first_name_len] != ':')
				break;
			name = pnstrdup(block, first_name_len);
		}
		got = http_header(&result, name);
		want = reference_header(block, name);
		if ((got == NULL) != (want == NULL) || (got && strcmp(got, want) != 0))
			abort();
		if (got && (strstr(got, "\r\n") || strstr(block, got) == NULL))
			abort();
	}
	/* no headers at all */
	result.headers = NULL;
	if (http_header(&result, "Retry-After") != NULL)
		abort();
	fuzz_memory_reset();
	free(block);
	return 0;
}
