/*
 * driver_wechatpay.c
 *		Driver "wechatpay" (being written).
 */
#include "postgres.h"

#include "driver.h"

static const char *const wechatpay_option_names[] = {NULL};

/* Not written yet: refuses every channel. */
static void *
wechatpay_compile(const char *channel, const char *base_url, Jsonb *options)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("driver \"wechatpay\" is not available yet")));
	return NULL;
}

const PaysyncDriver wechatpay_driver = {
	.name = "wechatpay",
	.option_names = wechatpay_option_names,
	.compile = wechatpay_compile,
};
