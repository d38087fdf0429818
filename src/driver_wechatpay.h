/*
 * driver_wechatpay.h
 *		What driver "wechatpay" shares beyond its vtable: the platform key
 *		that verifies a message WeChat Pay signed, by the Wechatpay-Serial
 *		it names (answers and callbacks are verified alike).
 */
#ifndef PAYSYNC_DRIVER_WECHATPAY_H
#define PAYSYNC_DRIVER_WECHATPAY_H

#include "crypto.h"

extern CryptoKey *wechatpay_key_for_serial(const void *config, const char *serial,
										   char *error, size_t errlen);

#endif							/* PAYSYNC_DRIVER_WECHATPAY_H */
