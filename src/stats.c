/*
 * stats.c
 *		Live counters in shared memory (see stats.h).  Each update takes the
 *		stats spinlock for a few instructions; time is cut into per-second
 *		slots (checks, errors), 10-second slots (latency histograms, half an
 *		octave per bucket) and per-minute slots (statuses reached), each slot
 *		stamped with the period it holds so stale slots read as empty.
 */
#include "postgres.h"

#include <math.h>
#include <time.h>

#include "miscadmin.h"
#include "storage/spin.h"

#include "paysync.h"
#include "stats.h"

static PaysyncStats *stats = NULL;

/* Bytes of shared memory the counters need. */
Size
stats_shmem_size(void)
{
	return MAXALIGN(sizeof(PaysyncStats));
}

/* Points at (and, the first time, clears) the counters at place. */
void
stats_shmem_init(void *place, bool found)
{
	stats = (PaysyncStats *) place;
	if (!found)
	{
		memset(stats, 0, sizeof(PaysyncStats));
		SpinLockInit(&stats->mutex);
	}
}

/* Seconds since the epoch, now. */
static int64
now_seconds(void)
{
	return (int64) time(NULL);
}

/* The counters of channel, taking a free slot if it has none; NULL if full. */
static ChannelCounters *
channel_slot(const char *channel)
{
	ChannelCounters *free_slot = NULL;

	for (int i = 0; i < STATS_MAX_CHANNELS; i++)
	{
		ChannelCounters *c = &stats->channels[i];

		if (c->name[0] == '\0')
		{
			if (free_slot == NULL)
				free_slot = c;
		}
		else if (strcmp(c->name, channel) == 0)
			return c;
	}
	if (free_slot != NULL)
	{
		memset(free_slot, 0, sizeof(ChannelCounters));
		strlcpy(free_slot->name, channel, NAMEDATALEN);
	}
	return free_slot;
}

/* Half-octave bucket of a latency: 0 below 1 ms, then [2^((b-1)/2), 2^(b/2)). */
static int
latency_bucket(double ms)
{
	int			b;

	if (ms < 1.0)
		return 0;
	b = 1 + (int) floor(2.0 * log2(ms));
	return Min(b, STATS_LATENCY_BUCKETS - 1);
}

/* The middle of a latency bucket, in ms, for reporting. */
static double
bucket_middle_ms(int b)
{
	if (b == 0)
		return 0.5;
	return pow(2.0, (b - 0.5) / 2.0);
}

/* Adds delta to the requests in flight to channel. */
void
stats_in_flight(const char *channel, int delta)
{
	ChannelCounters *c;

	if (stats == NULL)
		return;
	SpinLockAcquire(&stats->mutex);
	c = channel_slot(channel);
	if (c)
		c->in_flight = Max(c->in_flight + delta, 0);
	SpinLockRelease(&stats->mutex);
}

/*
 * Counts a finished request: a check, maybe an error (then remembered as
 * the last error paysync met), and its latency.
 */
void
stats_check_done(const char *channel, bool is_error, double latency_ms,
				 const char *error)
{
	ChannelCounters *c;
	int64		second = now_seconds();
	int			si = (int) (second % STATS_SECONDS);
	int64		ten = second / 10;
	int			li = (int) (ten % STATS_LATENCY_SLOTS);

	if (stats == NULL)
		return;
	SpinLockAcquire(&stats->mutex);
	c = channel_slot(channel);
	if (c)
	{
		c->in_flight = Max(c->in_flight - 1, 0);
		if (c->second_of[si] != second)
		{
			c->second_of[si] = second;
			c->checks[si] = 0;
			c->errors[si] = 0;
		}
		c->checks[si]++;
		if (is_error)
			c->errors[si]++;
		if (c->latency_slot_of[li] != ten)
		{
			c->latency_slot_of[li] = ten;
			memset(c->latency[li], 0, sizeof(c->latency[li]));
		}
		c->latency[li][latency_bucket(latency_ms)]++;
	}
	if (is_error && error)
	{
		snprintf(stats->last_error, sizeof(stats->last_error),
				 "channel %s: %s", channel, error);
		stats->last_error_at = GetCurrentTimestamp();
	}
	SpinLockRelease(&stats->mutex);
}

/* Counts count payments of channel that reached status (final). */
void
stats_final(const char *channel, const char *status, int64 count)
{
	ChannelCounters *c;
	int64		minute = now_seconds() / 60;
	int			mi = (int) (minute % STATS_MINUTES);

	if (stats == NULL)
		return;
	SpinLockAcquire(&stats->mutex);
	c = channel_slot(channel);
	if (c)
	{
		if (c->minute_of[mi] != minute)
		{
			c->minute_of[mi] = minute;
			c->succeeded[mi] = c->failed[mi] = c->expired[mi] = 0;
		}
		if (strcmp(status, "succeeded") == 0)
			c->succeeded[mi] += count;
		else if (strcmp(status, "failed") == 0)
			c->failed[mi] += count;
		else if (strcmp(status, "expired") == 0)
			c->expired[mi] += count;
	}
	SpinLockRelease(&stats->mutex);
}

/* The worker process starts: it owns no requests yet. */
void
stats_worker_started(void)
{
	if (stats == NULL)
		return;
	SpinLockAcquire(&stats->mutex);
	stats->worker_pid = MyProcPid;
	stats->worker_started_at = GetCurrentTimestamp();
	stats->worker_state = WORKER_RUNNING;
	stats->worker_in_flight = 0;
	for (int i = 0; i < STATS_MAX_CHANNELS; i++)
		stats->channels[i].in_flight = 0;
	SpinLockRelease(&stats->mutex);
}

/* The worker says what it is doing (WORKER_NOT_RUNNING as it exits). */
void
stats_worker_state(WorkerState state, int in_flight)
{
	if (stats == NULL)
		return;
	SpinLockAcquire(&stats->mutex);
	stats->worker_state = state;
	stats->worker_in_flight = in_flight;
	if (state == WORKER_NOT_RUNNING)
		stats->worker_pid = 0;
	SpinLockRelease(&stats->mutex);
}

/* The worker met an ERROR (it is about to exit and be restarted). */
void
stats_worker_error(const char *message)
{
	if (stats == NULL)
		return;
	SpinLockAcquire(&stats->mutex);
	snprintf(stats->last_error, sizeof(stats->last_error), "worker: %s", message);
	stats->last_error_at = GetCurrentTimestamp();
	SpinLockRelease(&stats->mutex);
}

/* The latency at quantile q of a histogram of total counts, in ms. */
static double
histogram_quantile(const int64 *histogram, int64 total, double q)
{
	int64		rank = (int64) ceil(q * total);
	int64		seen = 0;

	for (int b = 0; b < STATS_LATENCY_BUCKETS; b++)
	{
		seen += histogram[b];
		if (seen >= Max(rank, 1))
			return bucket_middle_ms(b);
	}
	return bucket_middle_ms(STATS_LATENCY_BUCKETS - 1);
}

/*
 * Reads every channel's figures into *figures (palloc'd); returns how many.
 * Without the preload: none.
 */
int
stats_read(ChannelFigures **figures)
{
	int64		second = now_seconds();
	int64		ten = second / 10;
	int64		minute = second / 60;
	int			n = 0;
	int64		histogram[STATS_LATENCY_BUCKETS];
	ChannelCounters *c = palloc(sizeof(ChannelCounters));

	*figures = palloc0(sizeof(ChannelFigures) * STATS_MAX_CHANNELS);
	if (stats == NULL)
		return 0;

	for (int i = 0; i < STATS_MAX_CHANNELS; i++)
	{
		ChannelFigures *f = &(*figures)[n];
		int64		requests = 0;

		/* copy one channel's counters out, then add up without the lock */
		SpinLockAcquire(&stats->mutex);
		memcpy(c, &stats->channels[i], sizeof(ChannelCounters));
		SpinLockRelease(&stats->mutex);
		if (c->name[0] == '\0')
			continue;
		n++;
		memcpy(f->name, c->name, NAMEDATALEN);
		f->in_flight = c->in_flight;
		for (int s = 0; s < STATS_SECONDS; s++)
			if (c->second_of[s] > second - STATS_SECONDS)
			{
				f->checks_1m += c->checks[s];
				f->errors_1m += c->errors[s];
			}
		memset(histogram, 0, sizeof(histogram));
		for (int l = 0; l < STATS_LATENCY_SLOTS; l++)
			if (c->latency_slot_of[l] > ten - STATS_LATENCY_SLOTS)
				for (int b = 0; b < STATS_LATENCY_BUCKETS; b++)
				{
					histogram[b] += c->latency[l][b];
					requests += c->latency[l][b];
				}
		f->latency_p50_ms = requests ? histogram_quantile(histogram, requests, 0.50) : -1;
		f->latency_p99_ms = requests ? histogram_quantile(histogram, requests, 0.99) : -1;
		for (int m = 0; m < STATS_MINUTES; m++)
			if (c->minute_of[m] > minute - STATS_MINUTES)
			{
				f->succeeded_1h += c->succeeded[m];
				f->failed_1h += c->failed[m];
				f->expired_1h += c->expired[m];
			}
	}
	pfree(c);
	return n;
}

/* Reads the worker's state; false without the preload. */
bool
stats_read_worker(WorkerState *state, pid_t *pid, TimestampTz *started_at,
				  int *in_flight, char *last_error, size_t errlen,
				  TimestampTz *last_error_at)
{
	if (stats == NULL)
		return false;
	SpinLockAcquire(&stats->mutex);
	*state = stats->worker_state;
	*pid = stats->worker_pid;
	*started_at = stats->worker_started_at;
	*in_flight = stats->worker_in_flight;
	strlcpy(last_error, stats->last_error, errlen);
	*last_error_at = stats->last_error_at;
	SpinLockRelease(&stats->mutex);
	return true;
}
