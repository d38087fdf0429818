/*
 * stats.h
 *		paysync's shared memory: the worker's state, its latch and the time it
 *		plans to wake (for the commit-time wake-up), and live counters per
 *		channel (requests in flight, checks, errors and latencies of the last
 *		minute, statuses reached in the last hour), and the notifications
 *		skipped under queue pressure.  Kept by the worker, run_once() and
 *		the events trigger; read by paysync.stats and
 *		paysync.worker_status().
 *		Without shared_preload_libraries nothing is kept and every function
 *		here does nothing (readers get nothing).  The layout and the locking
 *		rules are private to stats.c.
 */
#ifndef PAYSYNC_STATS_H
#define PAYSYNC_STATS_H

#include "postgres.h"

#include "utils/timestamp.h"

/* The most worker processes (paysync.workers). */
#define PAYSYNC_MAX_WORKERS 16

/* What the worker is doing, as worker_status().state shows it. */
typedef enum WorkerState
{
	WORKER_NOT_RUNNING = 0,
	WORKER_RUNNING,
	WORKER_IDLE,
	WORKER_WAITING_FOR_EXTENSION,
	WORKER_DISABLED
} WorkerState;

/* What stats_read returns for one channel. */
typedef struct ChannelFigures
{
	char		name[NAMEDATALEN];
	int32		in_flight;
	int64		checks_1m;
	int64		errors_1m;
	double		latency_p50_ms; /* < 0: no request finished */
	double		latency_p99_ms;
	int64		succeeded_1h;
	int64		failed_1h;
	int64		expired_1h;
} ChannelFigures;

/* module start-up (paysync.c) */
extern void stats_shmem_request(void);
extern void stats_shmem_startup(void);

/* the worker's life and its wake-up */
extern void stats_worker_connecting(bool connecting);
extern bool stats_worker_connect_failed(void);
extern void stats_worker_started(void);
extern void stats_worker_stopped(void);
extern void stats_worker_state(WorkerState state, int in_flight);
extern void stats_worker_error(const char *message);
extern void stats_worker_sleeps_until(TimestampTz wake_at);
extern void stats_wake_worker_for(TimestampTz due_at);

/* counters kept by the checker */
extern void stats_in_flight(const char *channel, int delta);
extern void stats_check_done(const char *channel, bool is_error, double latency_ms,
							 const char *error);
extern void stats_final(const char *channel, const char *status, int64 count);

/* notifications skipped under queue pressure (functions.c, at commit) */
extern void stats_notify_skipping(bool skipping);
extern void stats_notifications_skipped(int64 count);

/* readers */
extern int	stats_read(ChannelFigures **figures);
extern bool stats_read_worker(WorkerState *state, pid_t *pid, TimestampTz *started_at,
							  int *in_flight, char *last_error, size_t errlen,
							  TimestampTz *last_error_at);
extern bool stats_read_notify(uint64 *skipped, bool *skipping);

#endif							/* PAYSYNC_STATS_H */
