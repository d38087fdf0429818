/*
 * driver.h
 *		The channel driver interface.  A driver knows one payment channel's
 *		status query: it checks and compiles the channel's options, builds the
 *		HTTP request for one payment, and turns the HTTP answer into a status
 *		or an error.  Drivers do no I/O of their own and never call SPI: the
 *		checker sends what they build through the HTTP engine.
 *
 *		Also declared here: the driver registry and the helpers drivers
 *		share (options, answers, amounts, and making channel text safe to
 *		keep), all in driver.c.
 */
#ifndef PAYSYNC_DRIVER_H
#define PAYSYNC_DRIVER_H

#include "postgres.h"

#include "utils/jsonb.h"

#include "crypto.h"
#include "http.h"
#include "http_util.h"
#include "json_fields.h"

/* What a request asks the channel. */
typedef enum CheckKind
{
	CHECK_QUERY,				/* what became of the payment? */
	CHECK_CLOSE,				/* close the unpaid trade (close_on_expiry) */
	CHECK_REFUND,				/* what became of a refund? (0.4) */
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

/*
 * What a notification (a channel's callback to the merchant's webhook
 * endpoint) says, once its driver has verified it.
 */
typedef struct NotificationResult
{
	bool		verified;		/* false: the driver cannot verify it */
	char	   *payment_id;		/* the payment it is about; NULL: it is not
								 * about a payment (another event type), or
								 * not verified and no id could be read */
	char	   *refund_id;		/* the refund it is about, or NULL: a
								 * payment's notification (0.4) */
	CheckAnswer answer;			/* its status, as a query answer would give
								 * it ("pending": still pending) */
	int			reply_status;	/* what the endpoint answers the channel */
	const char *reply_body;
} NotificationResult;

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
	 * Builds the status query of one refund (CHECK_REFUND), in
	 * CurrentMemoryContext: payment_id is the refund's payment, refund_id
	 * the id the channel knows the refund by.  NULL: the driver cannot
	 * query refunds.  Its answer goes to interpret() with kind
	 * CHECK_REFUND and the refund_id as the id asked about; the amount in
	 * the answer (has_paid_amount...) is then the refunded amount.
	 */
	void		(*build_refund_request) (const void *config, const char *base_url,
										 const char *payment_id,
										 const char *refund_id,
										 const char *token, HttpRequest *request);

	/*
	 * Interprets an answer (a transport error included) into *answer.  For
	 * CHECK_CLOSE: "closed" if the trade is closed now, "succeeded" if the
	 * channel says it was paid meanwhile, "expired" if the channel has no
	 * such trade (nothing to close), "pending" if the channel refused to
	 * close without saying why or its answer cannot be trusted (the payment
	 * is then queried again, after retry_after_s if set), else an error.
	 * payment_id is the id asked about (NULL in unit tests): the payment's,
	 * or for CHECK_REFUND the refund's; a signed answer about another one
	 * must be an error.
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

	/*
	 * Verifies a notification the channel sent (its headers as raw
	 * "Name: value\r\n" lines and raw body in *notification; status
	 * unused) as the channel specifies, now being the clock in Unix
	 * seconds, and fills *out.  Anything that fails verification is an
	 * ERROR through notification_refused().  NULL: the driver cannot verify
	 * notifications (the caller answers "checking").
	 */
	void		(*verify_notification) (const void *config, const char *channel,
										const HttpResult *notification, int64 now,
										NotificationResult *out);
} PaysyncDriver;

/*
 * The most bytes of channel text kept in a channel_status, and in one piece
 * of an error message (a word, a message of the channel's).
 */
#define CHANNEL_WORD_STATUS_MAX_BYTES 256
#define CHANNEL_WORD_MAX_BYTES 64

/* What replaces a secret in channel text kept in an error. */
#define REDACTED_TEXT "[redacted]"

/* The registry */
extern const PaysyncDriver *driver_lookup(const char *name);
extern char *driver_names(void);

/* Options */
extern JsonbValue *option_value(Jsonb *options, const char *key);
extern bool option_string(Jsonb *options, const char *key, char **value,
						  const char *channel);
extern bool option_bool(Jsonb *options, const char *key, bool *value,
						const char *channel);
extern CryptoKey *option_key(Jsonb *options, const char *key, bool private_key,
							 const char *channel);
extern CryptoKey *option_key_text(const char *text, const char *key, const char *entry,
								  bool private_key, const char *channel);

/* Words */
extern bool word_in_list(const char *word, const char *const *words);
extern const char *settable_status(const char *word);
extern bool answer_status_allowed(const char *status, CheckKind kind);

/* Channel text */
extern char *channel_text(const char *text, size_t max_bytes);
extern char *redact_secrets(const char *text, const char *const *secrets,
							int n_secrets);

/* Answers */
extern void answer_status(CheckAnswer *answer, const char *status,
						  const char *channel_word);
extern void answer_error(CheckAnswer *answer, const char *fmt,...) pg_attribute_printf(2, 3);
extern bool answer_transport_error(const HttpResult *result, CheckAnswer *answer);
extern bool answer_http_error(const HttpResult *result, CheckAnswer *answer);
extern bool answer_paid(CheckAnswer *answer, int64 minor, const char *currency);
extern bool answer_paid_decimal(CheckAnswer *answer, const char *amount,
								const char *currency);
extern bool json_scalar_at_path(const char *body, size_t body_len, const char *path,
								char **value, CheckAnswer *answer);

/* Notifications */
extern void notification_refused(const char *channel, const char *fmt,...)
			pg_attribute_printf(2, 3) pg_attribute_noreturn();
extern void notification_unverified(NotificationResult *out, char *payment_id);

/* One name=value pair of a form-encoded body, both decoded (raw bytes). */
typedef struct FormParam
{
	char	   *name;
	char	   *value;
} FormParam;

extern bool form_decode(const char *body, size_t len, FormParam **params, int *n);
extern const char *form_value(const FormParam *params, int n, const char *name,
							  int *count);

/* Amounts */
extern bool currency_code_valid(const char *currency);
extern bool parse_minor_units(const char *text, int64 *minor);
extern bool amount_to_minor(const char *decimal, const char *currency, int64 *minor);

#endif							/* PAYSYNC_DRIVER_H */
