/*
 * driver.h
 *		The channel driver interface.  A driver knows one payment channel's
 *		status query: it checks and compiles the channel's options, builds the
 *		HTTP request for one payment, and turns the HTTP answer into a status
 *		or an error.  Drivers do no I/O of their own and never call SPI: the
 *		checker sends what they build through the HTTP engine.
 */
#ifndef PAYSYNC_DRIVER_H
#define PAYSYNC_DRIVER_H

#include "postgres.h"

#include "common/jsonapi.h"
#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "crypto.h"
#include "http.h"

/* What a request asks the channel. */
typedef enum CheckKind
{
	CHECK_QUERY,				/* what became of the payment? */
	CHECK_CLOSE,				/* close the unpaid trade (close_on_expiry) */
	CHECK_TOKEN					/* an access token for the channel (OAuth2) */
} CheckKind;

/* What one check found out. */
typedef struct CheckAnswer
{
	bool		is_error;
	const char *status;			/* paysync status word, when !is_error */
	char	   *channel_status; /* the channel's own word, or NULL */
	long		retry_after_s;	/* the channel's Retry-After, or -1 */
	char		error[200];		/* when is_error; never holds a secret */

	/* the amount the channel says was paid, when it says so */
	bool		has_paid_amount;
	int64		paid_amount_minor;
	char		paid_currency[4];	/* ISO 4217, upper case, or "" */

	/* the channel refused the credentials (an expired token, say) */
	bool		credentials_rejected;
} CheckAnswer;

typedef struct PaysyncDriver
{
	const char *name;

	/* option keys this driver takes, NULL-terminated (common keys aside) */
	const char *const *option_names;

	/*
	 * Checks the driver's options and returns their compiled form, palloc'd
	 * in CurrentMemoryContext.  ereport(ERROR) naming the channel and the
	 * option on anything invalid.
	 */
	void	   *(*compile) (const char *channel, const char *base_url, Jsonb *options);

	/*
	 * Builds the request for one payment, in CurrentMemoryContext: a status
	 * query, or for CHECK_CLOSE the channel's "close this trade" call.  token
	 * is the channel's current access token (drivers with
	 * build_token_request), else NULL.  The caller sets the timeout.
	 */
	void		(*build_request) (const void *config, const char *base_url,
								  const char *payment_id, CheckKind kind,
								  const char *token, HttpRequest *request);

	/*
	 * Interprets an answer (a transport error included) into *answer.  For
	 * CHECK_CLOSE: "closed" if the trade is closed now, "succeeded" if the
	 * channel says it was paid meanwhile, "pending" if the channel refused
	 * to close without saying why (the payment is then queried again), else
	 * an error.  payment_id is the payment asked about (NULL in unit tests):
	 * a signed answer about another payment must be an error.
	 */
	void		(*interpret) (const void *config, CheckKind kind,
							  const char *payment_id, const HttpResult *result,
							  CheckAnswer *answer);

	/* Whether the channel can close an unpaid trade, and the default. */
	bool		can_close;
	bool		close_on_expiry_default;

	/*
	 * For channels with access tokens (NULL otherwise): the token request,
	 * and reading its answer into a palloc'd *token valid *expires_in_s
	 * seconds; false with a message (never a secret) on failure.
	 */
	void		(*build_token_request) (const void *config, const char *base_url,
										HttpRequest *request);
	bool		(*interpret_token) (const void *config, const HttpResult *result,
									char **token, int *expires_in_s,
									char *error, size_t errlen);
} PaysyncDriver;

/* A channel row, compiled: what the checker needs to talk to it. */
typedef struct ChannelConfig
{
	char	   *name;
	char	   *base_url;
	const PaysyncDriver *driver;
	void	   *driver_config;
	int			timeout_ms;		/* 0: paysync.request_timeout */
	int			max_inflight;	/* 0: no cap of its own */
	bool		close_on_expiry;	/* close the trade before expiring */
} ChannelConfig;

extern const PaysyncDriver *driver_lookup(const char *name);
extern ChannelConfig *channel_compile(const char *name, const char *driver,
									  const char *base_url, Jsonb *options);

/*
 * A field json_fields() reads from a JSON answer.  path is a dot path of
 * object member names ("amount.total"); with JSON_FIELDS_INDEXES, "[n]"
 * after a name picks element n (from 0) of its array
 * ("purchase_units[0].payments.captures[0].status").  The rest is filled
 * in by json_fields().
 */
typedef struct JsonField
{
	const char *path;
	JsonTokenType only;			/* take only scalars of this type; 0: any */

	char	   *value;			/* the first scalar taken (strings unescaped,
								 * numbers as written), never null; or NULL */
	JsonTokenType type;			/* its token type */
	int			count;			/* scalars that could be taken: > 1 means the
								 * member is given twice */
	int			members;		/* members at the path, whatever their value */
	char	   *last;			/* the last scalar at the path, null included */
	JsonTokenType last_type;	/* its token type */
	const char *raw_start;		/* the first object or array at the path, */
	size_t		raw_len;		/* exactly as received; or NULL */
} JsonField;

/* json_fields() flags */
#define JSON_FIELDS_OBJECT	0x01	/* the answer must be a JSON object */
#define JSON_FIELDS_SHALLOW 0x02	/* nested at most JSON_FIELDS_MAX_DEPTH */
#define JSON_FIELDS_UTF8	0x04	/* UTF-8, not the database encoding */
#define JSON_FIELDS_INDEXES 0x08	/* "[n]" in paths picks array elements */

#define JSON_FIELDS_MAX_DEPTH 64

/* What json_fields() made of an answer. */
typedef enum JsonFieldsResult
{
	JSON_FIELDS_OK,
	JSON_FIELDS_BAD_TEXT,		/* NULL, a NUL inside, or bad encoding */
	JSON_FIELDS_NOT_OBJECT,		/* JSON_FIELDS_OBJECT and not "{" */
	JSON_FIELDS_TOO_DEEP,		/* JSON_FIELDS_SHALLOW and nested deeper */
	JSON_FIELDS_INVALID			/* not valid JSON */
} JsonFieldsResult;

/* Helpers for drivers */
extern bool option_string(Jsonb *options, const char *key, char **value,
						  const char *channel);
extern JsonbValue *option_value(Jsonb *options, const char *key);
extern void answer_error(CheckAnswer *answer, const char *fmt,...) pg_attribute_printf(2, 3);
extern bool answer_transport_error(const HttpResult *result, CheckAnswer *answer);
extern bool answer_http_error(const HttpResult *result, CheckAnswer *answer);
extern JsonFieldsResult json_fields(const char *body, size_t len, int flags,
									JsonField *fields, int n);
extern const char *json_fields_problem(JsonFieldsResult result);
extern bool json_scalar_at_path(const char *body, size_t body_len, const char *path,
								char **value, CheckAnswer *answer);
extern bool is_settable_status(const char *status);
extern void schedule_check(Interval **items, int n, const char *what);
extern bool option_bool(Jsonb *options, const char *key, bool *value, const char *channel);
extern bool amount_to_minor(const char *decimal, const char *currency, int64 *minor);
#include "utils/array.h"
extern ArrayType *channel_schedule(Jsonb *options, const char *channel);
extern CryptoKey *option_key(Jsonb *options, const char *key, bool private_key,
							 const char *channel);

#endif							/* PAYSYNC_DRIVER_H */
