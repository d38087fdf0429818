/*
 * notify.c
 *		paysync._verify_notification(): the verification half of
 *		paysync.receive().  The channel row is compiled as the checker
 *		compiles it, the notification (headers as received, raw body) is
 *		handed to the driver's verify_notification, and what it found comes
 *		back as one row; receive() (SQL) then applies it through the state
 *		machine.  Anything that fails verification is an ERROR with SQLSTATE
 *		28000 whose message holds no secret.
 */
#include "postgres.h"

#include <time.h>

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "channel.h"
#include "driver.h"

PG_FUNCTION_INFO_V1(paysync_verify_notification);

/* The most headers and bytes of header text a notification may have. */
#define NOTIFICATION_MAX_HEADERS 200
#define NOTIFICATION_MAX_HEADER_BYTES 65536

/* Argument argno as a C string, refusing the notification if it is NULL. */
static char *
notification_arg(FunctionCallInfo fcinfo, int argno, const char *channel,
				 const char *what)
{
	if (PG_ARGISNULL(argno))
		notification_refused(channel, "the notification has no %s", what);
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/*
 * The headers of a notification, a JSON object of names to string values
 * (names case-insensitive), as raw "Name: value\r\n" lines for
 * http_header().  Anything else, a name given twice (in any case) or a
 * value with a line break, is a malformed notification.
 */
static char *
header_lines(Jsonb *headers, const char *channel)
{
	StringInfoData lines;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	  **names;
	int			n = 0;
	char	   *name = NULL;

	if (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers))
		notification_refused(channel, "the headers are not a JSON object");
	if (JB_ROOT_COUNT(headers) > NOTIFICATION_MAX_HEADERS)
		notification_refused(channel, "the notification has more than %d headers",
							 NOTIFICATION_MAX_HEADERS);
	names = palloc(sizeof(char *) * (JB_ROOT_COUNT(headers) + 1));
	initStringInfo(&lines);
	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			name = pnstrdup(v.val.string.val, v.val.string.len);
			if (name[0] == '\0' || strpbrk(name, ":\r\n \t") != NULL)
				notification_refused(channel, "a header name is not an HTTP header name");
			for (int i = 0; i < n; i++)
				if (pg_strcasecmp(names[i], name) == 0)
					notification_refused(channel, "the headers give %s twice",
										 channel_text(name, CHANNEL_WORD_MAX_BYTES));
			names[n++] = name;
		}
		else if (tok == WJB_VALUE)
		{
			if (v.type != jbvString)
				notification_refused(channel, "the value of header %s is not a string",
									 channel_text(name, CHANNEL_WORD_MAX_BYTES));
			if (memchr(v.val.string.val, '\r', v.val.string.len) ||
				memchr(v.val.string.val, '\n', v.val.string.len))
				notification_refused(channel, "the value of header %s has a line break",
									 channel_text(name, CHANNEL_WORD_MAX_BYTES));
			appendStringInfo(&lines, "%s: ", name);
			appendBinaryStringInfo(&lines, v.val.string.val, v.val.string.len);
			appendStringInfoString(&lines, "\r\n");
			if (lines.len > NOTIFICATION_MAX_HEADER_BYTES)
				notification_refused(channel, "the headers are longer than %d bytes",
									 NOTIFICATION_MAX_HEADER_BYTES);
		}
	}
	return lines.data;
}

/*
 * _verify_notification(channel, driver, base_url, options, headers, body):
 * one row (verified, payment_id, status, channel_status, paid_amount,
 * paid_currency, reply_status, reply_body, refund_id).  verified false: the driver
 * cannot verify this channel's notifications, payment_id (if any) is the
 * payment to check at once.  payment_id NULL when verified: the
 * notification is about no payment.  refund_id set: it is about that
 * refund (payment_id, if set, its payment).
 */
Datum
paysync_verify_notification(PG_FUNCTION_ARGS)
{
	char	   *channel = PG_ARGISNULL(0) ? "(null)" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *driver_name = notification_arg(fcinfo, 1, channel, "driver");
	char	   *base_url = notification_arg(fcinfo, 2, channel, "base_url");
	Jsonb	   *options;
	Jsonb	   *headers;
	ChannelConfig *config;
	HttpResult	notification;
	NotificationResult out;
	TupleDesc	tupdesc;
	Datum		values[9];
	bool		nulls[9];

	if (PG_ARGISNULL(0) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("_verify_notification: channel and options must not be null")));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "_verify_notification must return a record");
	options = PG_GETARG_JSONB_P(3);
	if (PG_ARGISNULL(4))
		notification_refused(channel, "the notification has no headers");
	headers = PG_GETARG_JSONB_P(4);

	memset(&notification, 0, sizeof(notification));
	notification.body = notification_arg(fcinfo, 5, channel, "body");
	notification.body_len = strlen(notification.body);
	notification.retry_after_s = -1;
	notification.headers = header_lines(headers, channel);

	config = channel_compile(channel, driver_name, base_url, options);
	memset(&out, 0, sizeof(out));
	out.answer.retry_after_s = -1;
	if (config->driver->verify_notification == NULL)
		notification_unverified(&out, NULL);
	else
		config->driver->verify_notification(config->driver_config, channel,
											&notification, (int64) time(NULL), &out);

	memset(nulls, 0, sizeof(nulls));
	values[0] = BoolGetDatum(out.verified);
	if (out.payment_id != NULL)
		values[1] = CStringGetTextDatum(out.payment_id);
	else
		nulls[1] = true;
	if (out.verified && (out.payment_id != NULL || out.refund_id != NULL) && !out.answer.is_error && out.answer.status)
		values[2] = CStringGetTextDatum(out.answer.status);
	else
		nulls[2] = true;
	if (!nulls[2] && out.answer.channel_status != NULL)
		values[3] = CStringGetTextDatum(out.answer.channel_status);
	else
		nulls[3] = true;
	if (!nulls[2] && out.answer.has_paid_amount)
	{
		values[4] = Int64GetDatum(out.answer.paid_amount_minor);
		if (out.answer.paid_currency[0])
			values[5] = CStringGetTextDatum(out.answer.paid_currency);
		else
			nulls[5] = true;
	}
	else
		nulls[4] = nulls[5] = true;
	values[6] = Int32GetDatum(out.reply_status);
	values[7] = CStringGetTextDatum(out.reply_body ? out.reply_body : "");
	if (out.refund_id != NULL)
		values[8] = CStringGetTextDatum(out.refund_id);
	else
		nulls[8] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}
