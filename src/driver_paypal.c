/*
 * driver_paypal.c
 *		Driver "paypal" (being written).
 */
#include "postgres.h"

#include "driver.h"

static const char *const paypal_option_names[] = {NULL};

/* Not written yet: refuses every channel. */
static void *
paypal_compile(const char *channel, const char *base_url, Jsonb *options)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("driver \"paypal\" is not available yet")));
	return NULL;
}

const PaysyncDriver paypal_driver = {
	.name = "paypal",
	.option_names = paypal_option_names,
	.compile = paypal_compile,
};
