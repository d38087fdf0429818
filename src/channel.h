/*
 * channel.h
 *		A channel definition: its driver, base_url and options, checked and
 *		compiled once into a ChannelConfig; the options every channel takes
 *		whatever its driver (timeout_ms, max_inflight, schedule,
 *		close_on_expiry, proxy, max_rps, pause_after_errors, and its TLS:
 *		ca_cert, client_cert, client_key); and the one
 *		owner of schedules: their checks, the channel's schedule option and
 *		the built-in default.
 */
#ifndef PAYSYNC_CHANNEL_H
#define PAYSYNC_CHANNEL_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/array.h"
#include "utils/jsonb.h"

#include "driver.h"
#include "http.h"

/* A channel row, compiled: what the checker needs to talk to it. */
typedef struct ChannelConfig
{
	char	   *name;
	char	   *base_url;
	const PaysyncDriver *driver;
	void	   *driver_config;
	int			timeout_ms;		/* 0: paysync.request_timeout */
	int			max_inflight;	/* 0: no cap of its own */
	double		max_rps;		/* most requests started a second; 0: no
								 * limit */
	int			pause_after_errors; /* trouble answers in a row that pause
									 * the channel; 0: never */
	bool		close_on_expiry;	/* close the trade before expiring */
	char	   *proxy;			/* proxy URL, or NULL: none, whatever the
								 * environment says */
	HttpTls    *tls;			/* ca_cert and client certificate, parsed;
								 * NULL: the system store, none; freed with
								 * the memory context it was compiled in */
} ChannelConfig;

/* The most delays a schedule has, and the longest delay, in days. */
#define SCHEDULE_MAX_DELAYS 100
#define SCHEDULE_MAX_DELAY_DAYS 7

extern ChannelConfig *channel_compile(const char *name, const char *driver,
									  const char *base_url, Jsonb *options);
extern void schedule_check(Interval **items, int n, const char *channel);
extern ArrayType *channel_schedule(Jsonb *options, const char *channel);

#endif							/* PAYSYNC_CHANNEL_H */
