/*
 * driver_stripe.c
 *		Driver "stripe" (being written).
 */
#include "postgres.h"

#include "driver.h"

static const char *const stripe_option_names[] = {NULL};

/* Not written yet: refuses every channel. */
static void *
stripe_compile(const char *channel, const char *base_url, Jsonb *options)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("driver \"stripe\" is not available yet")));
	return NULL;
}

const PaysyncDriver stripe_driver = {
	.name = "stripe",
	.option_names = stripe_option_names,
	.compile = stripe_compile,
};
