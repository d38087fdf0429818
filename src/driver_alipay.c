/*
 * driver_alipay.c
 *		Driver "alipay" (being written).
 */
#include "postgres.h"

#include "driver.h"

static const char *const alipay_option_names[] = {NULL};

/* Not written yet: refuses every channel. */
static void *
alipay_compile(const char *channel, const char *base_url, Jsonb *options)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("driver \"alipay\" is not available yet")));
	return NULL;
}

const PaysyncDriver alipay_driver = {
	.name = "alipay",
	.option_names = alipay_option_names,
	.compile = alipay_compile,
};
