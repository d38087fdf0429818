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

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "http.h"

/* What one check found out. */
typedef struct CheckAnswer
{
	bool		is_error;
	const char *status;			/* paysync status word, when !is_error */
	char	   *channel_status; /* the channel's own word, or NULL */
	long		retry_after_s;	/* the channel's Retry-After, or -1 */
	char		error[200];		/* when is_error; never holds a secret */
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
	 * Builds the request for one payment, in CurrentMemoryContext.  The
	 * request's timeout is set by the caller.
	 */
	void		(*build_request) (const void *config, const char *base_url,
								  const char *payment_id, HttpRequest *request);

	/* Interprets an answer (a transport error included) into *answer. */
	void		(*interpret) (const void *config, const HttpResult *result,
							  CheckAnswer *answer);
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
} ChannelConfig;

extern const PaysyncDriver *driver_lookup(const char *name);
extern ChannelConfig *channel_compile(const char *name, const char *driver,
									  const char *base_url, Jsonb *options);

/* Helpers for drivers */
extern bool option_string(Jsonb *options, const char *key, char **value,
						  const char *channel);
extern JsonbValue *option_value(Jsonb *options, const char *key);
extern void answer_error(CheckAnswer *answer, const char *fmt,...) pg_attribute_printf(2, 3);
extern bool answer_transport_error(const HttpResult *result, CheckAnswer *answer);
extern bool answer_http_error(const HttpResult *result, CheckAnswer *answer);
extern bool json_scalar_at_path(const char *body, size_t body_len, const char *path,
								char **value, CheckAnswer *answer);
extern bool is_settable_status(const char *status);
extern void schedule_check(Interval **items, int n, const char *what);

#endif							/* PAYSYNC_DRIVER_H */
