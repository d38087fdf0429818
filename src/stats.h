/*
 * stats.h
 *		paysync's shared memory: each worker's state, its latch and the time
 *		it plans to wake (for the commit-time wake-up), live counters per
 *		channel (requests in flight, checks, errors and latencies of the last
 *		minute, statuses reached in the last hour), and the notifications
 *		skipped under queue pressure.  Kept by the workers, run_once() and
 *		the events trigger; read by paysync.stats and
 *		paysync.worker_status().
 *
 *		Workers: up to PAYSYNC_MAX_WORKERS, numbered from 1.  A worker
 *		process calls stats_set_worker() first thing; every stats_worker_*
 *		function then acts on that worker's slot.  In any other process (a
 *		backend, run_once()) they do nothing.  Each worker keeps its own last
 *		error; a channel error met by a process that is not a worker (run_once)
 *		is kept as worker 1's last error, as with the single worker of 0.2.
 *
 *		Channels: counters for up to STATS_MAX_CHANNELS (16,384) channels, in
 *		a shared hash table of 22.2 MiB (see stats.c).  A channel counted
 *		once the table is full gets no counters (one WARNING per process says
 *		so); nothing else changes for it.
 *
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

/* What a worker is doing, as worker_status().state shows it. */
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

/* a worker's life and its wake-up (acting on the slot stats_set_worker chose) */
extern void stats_set_worker(int worker);
extern void stats_worker_connecting(bool connecting);
extern bool stats_worker_connect_failed(void);
extern void stats_worker_started(void);
extern void stats_worker_stopped(void);
extern void stats_worker_handed_over(void);
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
extern bool stats_read_worker(int worker, WorkerState *state, pid_t *pid,
							  TimestampTz *started_at, int *in_flight,
							  char *last_error, size_t errlen,
							  TimestampTz *last_error_at);
extern bool stats_read_notify(uint64 *skipped, bool *skipping);

#endif							/* PAYSYNC_STATS_H */
