/*
 * stats.h
 *		Live counters in shared memory, per channel: requests in flight,
 *		checks, errors and latencies of the last minute, statuses reached in
 *		the last hour; and the worker's own state.  Kept by the worker and
 *		run_once(); read by paysync.stats and paysync.worker_status().
 *		Without shared_preload_libraries nothing is kept.
 */
#ifndef PAYSYNC_STATS_H
#define PAYSYNC_STATS_H

#include "postgres.h"

#include "utils/timestamp.h"

#define STATS_MAX_CHANNELS 64
#define STATS_SECONDS 60		/* per-second slots: the last minute */
#define STATS_LATENCY_SLOTS 6	/* 10-second slots of latency histograms */
#define STATS_LATENCY_BUCKETS 48	/* half-octave buckets from 1 ms */
#define STATS_MINUTES 60		/* per-minute slots: the last hour */

typedef enum WorkerState
{
	WORKER_NOT_RUNNING = 0,
	WORKER_RUNNING,
	WORKER_IDLE,
	WORKER_WAITING_FOR_EXTENSION,
	WORKER_DISABLED
} WorkerState;

typedef struct ChannelCounters
{
	char		name[NAMEDATALEN];	/* "" for a free slot */
	int32		in_flight;
	int64		second_of[STATS_SECONDS];	/* epoch second the slot holds */
	int32		checks[STATS_SECONDS];
	int32		errors[STATS_SECONDS];
	int64		latency_slot_of[STATS_LATENCY_SLOTS];	/* epoch 10 s */
	int32		latency[STATS_LATENCY_SLOTS][STATS_LATENCY_BUCKETS];
	int64		minute_of[STATS_MINUTES];
	int32		succeeded[STATS_MINUTES];
	int32		failed[STATS_MINUTES];
	int32		expired[STATS_MINUTES];
} ChannelCounters;

typedef struct PaysyncStats
{
	slock_t		mutex;
	WorkerState worker_state;
	pid_t		worker_pid;
	TimestampTz worker_started_at;
	int32		worker_in_flight;
	char		last_error[256];
	TimestampTz last_error_at;
	ChannelCounters channels[STATS_MAX_CHANNELS];
} PaysyncStats;

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

extern Size stats_shmem_size(void);
extern void stats_shmem_init(void *place, bool found);
extern void stats_in_flight(const char *channel, int delta);
extern void stats_check_done(const char *channel, bool is_error, double latency_ms,
							 const char *error);
extern void stats_final(const char *channel, const char *status, int64 count);
extern void stats_worker_state(WorkerState state, int in_flight);
extern void stats_worker_started(void);
extern void stats_worker_error(const char *message);
extern int	stats_read(ChannelFigures **figures);
extern bool stats_read_worker(WorkerState *state, pid_t *pid, TimestampTz *started_at,
							  int *in_flight, char *last_error, size_t errlen,
							  TimestampTz *last_error_at);

#endif							/* PAYSYNC_STATS_H */
