/*
 * politeness.h
 *		What every worker shares about each channel, so that together they
 *		stay polite to it: its requests in flight (the channel's
 *		max_inflight, and paysync.max_inflight over all channels), its
 *		request rate (max_rps) and its circuit breaker (pause_after_errors).
 *		Kept in shared memory when paysync is preloaded; without the
 *		preload (run_once() in a backend of a server that did not preload
 *		paysync) there is no entry and every limit here is the caller's own.
 *		The layout and the locking are private to politeness.c.
 */
#ifndef PAYSYNC_POLITENESS_H
#define PAYSYNC_POLITENESS_H

#include "postgres.h"

#include "utils/timestamp.h"

/* A channel's shared entry; opaque outside politeness.c. */
typedef struct ChannelPoliteness ChannelPoliteness;

/* What the circuit breaker says of a request about to start. */
typedef enum BreakerAdmit
{
	BREAKER_GO,					/* the channel is not paused */
	BREAKER_PROBE,				/* paused: this request is its one probe */
	BREAKER_WAIT				/* paused: not now */
} BreakerAdmit;

/* What an answer did to the circuit breaker, for the one LOG line. */
typedef enum BreakerChange
{
	BREAKER_UNCHANGED,
	BREAKER_PAUSED,
	BREAKER_RESUMED
} BreakerChange;

/* The most channels with shared state; more are served without sharing. */
#define POLITENESS_MAX_CHANNELS 16384

/* A pause starts at this long and doubles with each failed probe, up to the most. */
#define BREAKER_FIRST_PAUSE_MS 1000
#define BREAKER_LONGEST_PAUSE_MS 60000

/* A 429 answer halves a channel's max_rps for this long. */
#define RATE_SLOWDOWN_MS 60000

/* module start-up (paysync.c) */
extern void politeness_shmem_request(void);
extern void politeness_shmem_startup(void);

/* a channel's entry: NULL without the preload or when the table is full */
extern ChannelPoliteness *politeness_entry(const char *channel);

/* requests in flight, over all workers */
extern int	politeness_reserve(ChannelPoliteness *entry, int want, int cap);
extern bool politeness_release(ChannelPoliteness *entry, int n, int cap);
extern int	politeness_reserve_total(int want, int cap);
extern bool politeness_release_total(int n, int cap);
extern int	politeness_free_total(int cap);

/* the request rate (max_rps > 0) */
extern bool rate_take(ChannelPoliteness *entry, double max_rps, TimestampTz now,
					  TimestampTz *next_at);
extern int	rate_available(ChannelPoliteness *entry, double max_rps, TimestampTz now,
						   int64 horizon_us, TimestampTz *next_at);
extern void rate_slow_down(ChannelPoliteness *entry, TimestampTz now);

/* the circuit breaker (pause_after_errors > 0) */
extern BreakerAdmit breaker_admit(ChannelPoliteness *entry, int pause_after_errors,
								  TimestampTz now, int64 probe_lapse_us,
								  TimestampTz *wait_until);
extern int	breaker_claimable(ChannelPoliteness *entry, int pause_after_errors,
							  TimestampTz now, TimestampTz *wait_until);
extern BreakerChange breaker_answer(ChannelPoliteness *entry, bool trouble, bool probe,
									int pause_after_errors, TimestampTz now,
									int *errors_in_row, int64 *paused_ms);
extern void breaker_probe_dropped(ChannelPoliteness *entry);
extern bool breaker_any_paused(void);
extern int	breaker_paused_names(char (*names)[NAMEDATALEN]);

/* The most names breaker_paused_names() copies. */
#define PAUSED_NAMES_MAX 64

/* changes of paysync.channels, for the checkers' cached channel rows */
extern uint64 politeness_channels_generation(void);
extern void politeness_channels_changed(void);

/* readers, for paysync.stats */
extern int	politeness_read_paused(char (**names)[NAMEDATALEN], TimestampTz **paused_since);

#endif							/* PAYSYNC_POLITENESS_H */
