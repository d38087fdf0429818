/*
 * driver_test.c
 *		Two SQL-callable functions for the tests only, which drive any channel
 *		driver through its function table, the way the checker does: the
 *		channel is compiled with channel_compile(), the request built with
 *		build_request() (or build_token_request()), a canned answer read with
 *		interpret() (or interpret_token()).  No install script declares them:
 *		a test creates them in its database (t/PaysyncTest.pm,
 *		create_test_functions) with
 *
 *		CREATE FUNCTION paysync_test_request(driver text, options jsonb,
 *			base_url text, payment_id text, kind text, token text,
 *			refund_id text DEFAULT NULL)
 *			RETURNS text AS '$libdir/paysync', 'paysync_test_request' LANGUAGE C;
 *		CREATE FUNCTION paysync_test_interpret(driver text, options jsonb,
 *			kind text, http_status int, headers text, body text,
 *			payment_id text)
 *			RETURNS text AS '$libdir/paysync', 'paysync_test_interpret' LANGUAGE C;
 *		CREATE FUNCTION paysync_test_notification(driver text, options jsonb,
 *			headers text, body text, now bigint DEFAULT NULL)
 *			RETURNS text AS '$libdir/paysync', 'paysync_test_notification' LANGUAGE C;
 *
 *		kind is "query", "close", "refund" (the status query of a refund,
 *		build_refund_request()) or "token" (the access token request, for
 *		drivers that have one).  payment_id may be NULL for "token", and for
 *		paysync_test_interpret (the driver then checks no id in the
 *		answer); token may be NULL (no access token).  For "refund",
 *		paysync_test_request takes the refund's payment as payment_id and
 *		the refund as refund_id (required), and paysync_test_interpret's
 *		payment_id is the id asked about, which for a refund is the refund
 *		id (as the checker passes it); refund_id is ignored for the other
 *		kinds.
 *
 *		paysync_test_interpret builds the HttpResult the HTTP engine would:
 *		headers are "Name: value" lines (separated by LF or CRLF; NULL for
 *		none), turned into the engine's CRLF-terminated lines; a Retry-After
 *		header of whole seconds gives retry_after_s; http_status 0 is a
 *		transport error whose message is body.  The channel is compiled
 *		with base_url TEST_BASE_URL.
 *
 *		Both return one text format: one field a line, "name=value", in a
 *		fixed order, fields that do not apply left out, no newline after the
 *		last.  A value is escaped so that it stays on its line: a backslash
 *		is written "\\", a line feed "\n", a carriage return "\r", any other
 *		control character "\xHH" (two hex digits).  The fields:
 *
 *		a request:	method=GET or POST
 *					url=the URL
 *					header=Name: value		(one line per header, in order)
 *					body=the body			(when the request has one)
 *		an answer:	status=the paysync status, or error=the message
 *					channel_status=the channel's word (when set)
 *					paid_amount=minor units	(when the channel says what
 *					paid_currency=ISO code	 was paid; the code may be empty)
 *					retry_after=seconds		(when known)
 *					credentials_rejected=true	(when the channel refused them)
 *		a token answer:	token=the token and expires_in=seconds,
 *					or error=the message
 *		a notification:	verified=true or false
 *					payment_id=the payment	(when it names one)
 *					refund_id=the refund	(when it is about one)
 *					then the answer's fields (when it names a payment
 *					or a refund), reply_status=the HTTP status answered
 *
 *		paysync_test_notification hands the driver's verify_notification a
 *		notification as receive() does (headers as for
 *		paysync_test_interpret; now the clock in Unix seconds, NULL: the
 *		time now).  One that fails verification is the driver's ERROR
 *		(SQLSTATE 28000).
 *
 *		Header values and tokens are secrets in production; these functions
 *		show them because the tests check them, for options the caller gives.
 *		No install script declares them, and only a superuser can (LANGUAGE
 *		C).
 */
#include "postgres.h"

#include <time.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "channel.h"
#include "driver.h"

/* The base_url paysync_test_interpret compiles the channel with. */
#define TEST_BASE_URL "http://127.0.0.1/"

PG_FUNCTION_INFO_V1(paysync_test_request);
PG_FUNCTION_INFO_V1(paysync_test_interpret);
PG_FUNCTION_INFO_V1(paysync_test_notification);

/* Argument argno as a C string; an ERROR naming it if it is NULL. */
static char *
required_text(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", name)));
	return text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/* Argument argno as a C string, or NULL. */
static char *
optional_text(FunctionCallInfo fcinfo, int argno)
{
	return PG_ARGISNULL(argno) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(argno));
}

/* The channel's options, argument argno; an ERROR if it is NULL. */
static Jsonb *
required_options(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"options\" must not be null"),
				 errhint("Give the channel's options as a JSON object, such as '{}'.")));
	return PG_GETARG_JSONB_P(argno);
}

/*
 * The CheckKind of "query", "close" or "refund"; -1 for "token", which is
 * not a CheckKind of build_request/interpret but a call of their token
 * counterparts.
 */
static int
parse_kind(const char *kind)
{
	if (strcmp(kind, "query") == 0)
		return CHECK_QUERY;
	if (strcmp(kind, "close") == 0)
		return CHECK_CLOSE;
	if (strcmp(kind, "refund") == 0)
		return CHECK_REFUND;
	if (strcmp(kind, "token") == 0)
		return -1;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid kind \"%s\"", kind),
			 errdetail("The kind of request is \"query\", \"close\", \"refund\" or \"token\".")));
	return CHECK_QUERY;			/* keep the compiler quiet */
}

/* An ERROR if the channel's driver has no access token requests. */
static void
require_tokens(const ChannelConfig *config)
{
	if (config->driver->build_token_request == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("driver \"%s\" has no access token requests",
						config->driver->name),
				 errhint("Use kind \"query\" or \"close\" for this driver.")));
}

/*
 * Appends the field name=value to out, on a line of its own, with value
 * escaped as the header comment says.
 */
static void
append_field(StringInfo out, const char *name, const char *value)
{
	if (out->len > 0)
		appendStringInfoChar(out, '\n');
	appendStringInfo(out, "%s=", name);
	for (const unsigned char *p = (const unsigned char *) value; *p; p++)
	{
		if (*p == '\\')
			appendStringInfoString(out, "\\\\");
		else if (*p == '\n')
			appendStringInfoString(out, "\\n");
		else if (*p == '\r')
			appendStringInfoString(out, "\\r");
		else if (*p < 0x20 || *p == 0x7f)
			appendStringInfo(out, "\\x%02X", *p);
		else
			appendStringInfoChar(out, (char) *p);
	}
}

/* Appends a request built by a driver to out. */
static void
append_request(StringInfo out, const HttpRequest *request)
{
	append_field(out, "method", request->post ? "POST" : "GET");
	append_field(out, "url", request->url ? request->url : "");
	for (int i = 0; i < request->n_headers; i++)
		append_field(out, "header", request->headers[i]);
	if (request->body)
		append_field(out, "body", request->body);
}

/* Appends what a driver made of an answer to out. */
static void
append_answer(StringInfo out, const CheckAnswer *answer)
{
	if (answer->is_error)
		append_field(out, "error", answer->error);
	else
		append_field(out, "status", answer->status ? answer->status : "");
	if (answer->channel_status)
		append_field(out, "channel_status", answer->channel_status);
	if (answer->has_paid_amount)
	{
		append_field(out, "paid_amount",
					 psprintf(INT64_FORMAT, answer->paid_amount_minor));
		append_field(out, "paid_currency", answer->paid_currency);
	}
	if (answer->retry_after_s >= 0)
		append_field(out, "retry_after", psprintf("%ld", answer->retry_after_s));
	if (answer->credentials_rejected)
		append_field(out, "credentials_rejected", "true");
}

/*
 * The engine's form of header lines given as "Name: value" lines (LF or
 * CRLF): each line CRLF-terminated, empty lines dropped; NULL for NULL.
 */
static char *
engine_headers(const char *lines)
{
	StringInfoData headers;
	const char *p = lines;

	if (lines == NULL)
		return NULL;
	initStringInfo(&headers);
	while (*p)
	{
		size_t		len = strcspn(p, "\r\n");

		if (len > 0)
		{
			appendBinaryStringInfo(&headers, p, (int) len);
			appendStringInfoString(&headers, "\r\n");
		}
		p += len;
		p += strspn(p, "\r\n");
	}
	return headers.data;
}

/* The Retry-After of an answer, as the engine reads it: whole seconds, or -1. */
static long
retry_after_of(const HttpResult *result)
{
	char	   *value = result->headers ? http_header(result, "Retry-After") : NULL;

	if (value == NULL || value[0] == '\0' ||
		strspn(value, "0123456789") != strlen(value) || strlen(value) > 9)
		return -1;
	return atol(value);
}

/*
 * paysync_test_request(driver, options, base_url, payment_id, kind, token
 * [, refund_id]): the request the driver builds for a channel with these
 * options, in the format of the header comment.
 */
Datum
paysync_test_request(PG_FUNCTION_ARGS)
{
	char	   *driver = required_text(fcinfo, 0, "driver");
	Jsonb	   *options = required_options(fcinfo, 1);
	char	   *base_url = required_text(fcinfo, 2, "base_url");
	char	   *payment_id = optional_text(fcinfo, 3);
	int			kind = parse_kind(required_text(fcinfo, 4, "kind"));
	char	   *token = optional_text(fcinfo, 5);
	char	   *refund_id = PG_NARGS() > 6 ? optional_text(fcinfo, 6) : NULL;
	ChannelConfig *config = channel_compile("test", driver, base_url, options);
	HttpRequest request;
	StringInfoData out;

	memset(&request, 0, sizeof(request));
	if (kind < 0)
	{
		require_tokens(config);
		config->driver->build_token_request(config->driver_config, config->base_url,
											&request);
	}
	else if (kind == CHECK_REFUND)
	{
		if (config->driver->build_refund_request == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("driver \"%s\" has no refund query", config->driver->name)));
		if (payment_id == NULL || refund_id == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("arguments \"payment_id\" and \"refund_id\" must not be null for kind \"refund\"")));
		config->driver->build_refund_request(config->driver_config, config->base_url,
											 payment_id, refund_id, token, &request);
	}
	else
	{
		if (payment_id == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument \"payment_id\" must not be null for kind \"%s\"",
							kind == CHECK_CLOSE ? "close" : "query")));
		config->driver->build_request(config->driver_config, config->base_url,
									  payment_id, (CheckKind) kind, token, &request);
	}
	initStringInfo(&out);
	append_request(&out, &request);
	PG_RETURN_TEXT_P(cstring_to_text(out.data));
}

/*
 * paysync_test_interpret(driver, options, kind, http_status, headers, body,
 * payment_id): what the driver makes of this answer, in the format of the
 * header comment.
 */
Datum
paysync_test_interpret(PG_FUNCTION_ARGS)
{
	char	   *driver = required_text(fcinfo, 0, "driver");
	Jsonb	   *options = required_options(fcinfo, 1);
	int			kind = parse_kind(required_text(fcinfo, 2, "kind"));
	char	   *payment_id = optional_text(fcinfo, 6);
	ChannelConfig *config = channel_compile("test", driver, TEST_BASE_URL, options);
	HttpResult	result;
	StringInfoData out;

	if (PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"http_status\" must not be null"),
				 errhint("Give 0 for a transport error.")));

	memset(&result, 0, sizeof(result));
	result.status = PG_GETARG_INT32(3);
	result.headers = engine_headers(optional_text(fcinfo, 4));
	result.body = PG_ARGISNULL(5) ? pstrdup("") : text_to_cstring(PG_GETARG_TEXT_PP(5));
	result.body_len = strlen(result.body);
	result.retry_after_s = retry_after_of(&result);
	if (result.status == 0)
	{
		/* a transport error: the body is its message */
		strlcpy(result.error, result.body, sizeof(result.error));
		result.body[0] = '\0';
		result.body_len = 0;
	}

	initStringInfo(&out);
	if (kind < 0)
	{
		char	   *token = NULL;
		int			expires_in_s = 0;
		char		error[200];

		require_tokens(config);
		error[0] = '\0';
		if (config->driver->interpret_token(config->driver_config, &result, &token,
											&expires_in_s, error, sizeof(error)))
		{
			append_field(&out, "token", token ? token : "");
			append_field(&out, "expires_in", psprintf("%d", expires_in_s));
		}
		else
			append_field(&out, "error", error);
	}
	else
	{
		CheckAnswer answer;

		memset(&answer, 0, sizeof(answer));
		answer.retry_after_s = -1;
		config->driver->interpret(config->driver_config, (CheckKind) kind, payment_id,
								  &result, &answer);
		append_answer(&out, &answer);
	}
	PG_RETURN_TEXT_P(cstring_to_text(out.data));
}

/*
 * paysync_test_notification(driver, options, headers, body, now): what the
 * driver's verify_notification makes of this notification, in the format
 * of the header comment.
 */
Datum
paysync_test_notification(PG_FUNCTION_ARGS)
{
	char	   *driver = required_text(fcinfo, 0, "driver");
	Jsonb	   *options = required_options(fcinfo, 1);
	ChannelConfig *config = channel_compile("test", driver, TEST_BASE_URL, options);
	HttpResult	notification;
	NotificationResult out;
	int64		now = PG_ARGISNULL(4) ? (int64) time(NULL) : PG_GETARG_INT64(4);
	StringInfoData out_text;

	memset(&notification, 0, sizeof(notification));
	notification.headers = engine_headers(optional_text(fcinfo, 2));
	if (notification.headers == NULL)
		notification.headers = "";
	notification.body = PG_ARGISNULL(3) ? pstrdup("") : text_to_cstring(PG_GETARG_TEXT_PP(3));
	notification.body_len = strlen(notification.body);
	notification.retry_after_s = -1;

	memset(&out, 0, sizeof(out));
	out.answer.retry_after_s = -1;
	if (config->driver->verify_notification == NULL)
		notification_unverified(&out, NULL);
	else
		config->driver->verify_notification(config->driver_config, "test",
											&notification, now, &out);

	initStringInfo(&out_text);
	append_field(&out_text, "verified", out.verified ? "true" : "false");
	if (out.payment_id)
		append_field(&out_text, "payment_id", out.payment_id);
	if (out.refund_id)
		append_field(&out_text, "refund_id", out.refund_id);
	if (out.verified && (out.payment_id || out.refund_id))
		append_answer(&out_text, &out.answer);
	append_field(&out_text, "reply_status", psprintf("%d", out.reply_status));
	PG_RETURN_TEXT_P(cstring_to_text(out_text.data));
}
