/*
 * stats.c
 *		paysync's shared memory (see stats.h): one struct, PaysyncShared,
 *		made at server start when paysync is preloaded.
 *
 *		Counters: time is cut into per-second slots (checks, errors),
 *		10-second slots (latency histograms, half an octave per bucket) and
 *		per-minute slots (statuses reached), each stamped with the period it
 *		holds so that stale slots read as empty.  A channel takes one of
 *		STATS_MAX_CHANNELS slots the first time it is counted and keeps it
 *		until the server stops.
 *
 *		Locking rules:
 *		- shared->lock (the LWLock of the "paysync" tranche) guards the
 *		  channel table: the names of the slots.  Finding a channel's slot
 *		  takes it shared; giving a free slot a name takes it exclusive.  A
 *		  slot's name never changes once set, and its counters are only
 *		  touched with the lock held (shared is enough).
 *		- slot->mutex, a spinlock, guards that slot's counters.  It is held
 *		  only around the increments and copies themselves: the slot, the
 *		  time periods and the latency bucket are worked out before.
 *		- shared->mutex, a spinlock, guards the worker's fields (latch, pid,
 *		  connecting, state, start time, requests in flight, last error).
 *		  It is held only to copy values in or out: text is formatted and
 *		  clipped before, timestamps are read before, and the latch is set
 *		  after (should the worker have exited meanwhile, setting its old
 *		  latch once more is harmless: latches allow spurious wake-ups).
 *		- shared->sleep_until, shared->notifications_skipped and
 *		  shared->notify_skipping are atomics, read and written without a
 *		  lock.
 *		No code holds two of these at once except a slot's mutex inside
 *		shared->lock.
 */
#include "postgres.h"

#include <math.h>
#include <time.h>

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "stats.h"

#define STATS_MAX_CHANNELS 64
#define STATS_SECONDS 60		/* per-second slots: the last minute */
#define STATS_LATENCY_SLOTS 6	/* 10-second slots of latency histograms */
#define STATS_LATENCY_BUCKETS 48	/* half-octave buckets from 1 ms */
#define STATS_MINUTES 60		/* per-minute slots: the last hour */
#define STATS_LAST_ERROR_SIZE 256

/* The counters of one channel. */
typedef struct ChannelCounters
{
	slock_t		mutex;			/* guards everything below but name */
	char		name[NAMEDATALEN];	/* "" for a free slot; see shared->lock */
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

/* Everything paysync keeps in shared memory. */
typedef struct PaysyncShared
{
	LWLock	   *lock;			/* guards the channel table's names */

	slock_t		mutex;			/* guards the worker's fields below */
	Latch	   *worker_latch;	/* NULL when no worker runs */
	pid_t		worker_pid;		/* 0 when no worker runs */
	bool		worker_connecting;	/* set while connecting to the database */
	WorkerState worker_state;
	TimestampTz worker_started_at;
	int32		worker_in_flight;
	char		last_error[STATS_LAST_ERROR_SIZE];	/* clipped on a character */
	TimestampTz last_error_at;

	/*
	 * When the worker plans to look for due work next: DT_NOEND while it is
	 * busy (any commit of due work wakes it), DT_NOBEGIN when nothing may
	 * wake it (disabled, waiting, not running).  A committing backend whose
	 * work is due earlier sets the worker's latch.
	 */
	pg_atomic_uint64 sleep_until;

	/*
	 * Notifications skipped under queue pressure since the server started
	 * (counted at commit), and whether the last events statement, in any
	 * database, skipped its NOTIFY (1) or sent it (0).
	 */
	pg_atomic_uint64 notifications_skipped;
	pg_atomic_uint32 notify_skipping;

	ChannelCounters channels[STATS_MAX_CHANNELS];
} PaysyncShared;

static PaysyncShared *shared = NULL;

/* Asks for the shared memory and the LWLock (from the shmem_request_hook). */
void
stats_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(PaysyncShared)));
	RequestNamedLWLockTranche("paysync", 1);
}

/* Creates or attaches to the shared struct (from the shmem_startup_hook). */
void
stats_shmem_startup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("paysync", sizeof(PaysyncShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(PaysyncShared));
		shared->lock = &(GetNamedLWLockTranche("paysync"))->lock;
		SpinLockInit(&shared->mutex);
		shared->worker_state = WORKER_NOT_RUNNING;
		pg_atomic_init_u64(&shared->sleep_until, (uint64) DT_NOBEGIN);
		pg_atomic_init_u64(&shared->notifications_skipped, 0);
		pg_atomic_init_u32(&shared->notify_skipping, 0);
		for (int i = 0; i < STATS_MAX_CHANNELS; i++)
			SpinLockInit(&shared->channels[i].mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Copies text into dest (size bytes), cut on a character boundary. */
static void
clip_text(char *dest, size_t size, const char *text)
{
	int			len = pg_mbcliplen(text, strlen(text), size - 1);

	memcpy(dest, text, len);
	dest[len] = '\0';
}

/* Seconds since the epoch, now. */
static int64
now_seconds(void)
{
	return (int64) time(NULL);
}

/*
 * The slot of channel, or NULL if the table is full.  Called and returns
 * with shared->lock held shared; takes it exclusive for a moment to give a
 * free slot to a channel seen for the first time.
 */
static ChannelCounters *
channel_slot(const char *channel)
{
	ChannelCounters *free_slot = NULL;

	Assert(LWLockHeldByMe(shared->lock));
	for (int i = 0; i < STATS_MAX_CHANNELS; i++)
		if (strcmp(shared->channels[i].name, channel) == 0)
			return &shared->channels[i];

	/* a new channel: look again with the lock exclusive, then take a slot */
	LWLockRelease(shared->lock);
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < STATS_MAX_CHANNELS; i++)
	{
		ChannelCounters *c = &shared->channels[i];

		if (strcmp(c->name, channel) == 0)
		{
			free_slot = c;
			break;
		}
		if (c->name[0] == '\0' && free_slot == NULL)
			free_slot = c;
	}
	if (free_slot != NULL && free_slot->name[0] == '\0')
		clip_text(free_slot->name, NAMEDATALEN, channel);	/* counters are 0 */
	LWLockRelease(shared->lock);
	LWLockAcquire(shared->lock, LW_SHARED);
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

	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_SHARED);
	c = channel_slot(channel);
	if (c)
	{
		SpinLockAcquire(&c->mutex);
		c->in_flight = Max(c->in_flight + delta, 0);
		SpinLockRelease(&c->mutex);
	}
	LWLockRelease(shared->lock);
}

/* Keeps message as the last error paysync met, with the time now. */
static void
set_last_error(const char *message)
{
	char		clipped[STATS_LAST_ERROR_SIZE];
	TimestampTz now = GetCurrentTimestamp();

	clip_text(clipped, sizeof(clipped), message);
	SpinLockAcquire(&shared->mutex);
	memcpy(shared->last_error, clipped, sizeof(clipped));
	shared->last_error_at = now;
	SpinLockRelease(&shared->mutex);
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
	int			bucket = latency_bucket(latency_ms);

	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_SHARED);
	c = channel_slot(channel);
	if (c)
	{
		SpinLockAcquire(&c->mutex);
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
		c->latency[li][bucket]++;
		SpinLockRelease(&c->mutex);
	}
	LWLockRelease(shared->lock);

	if (is_error && error)
	{
		/* long enough for the longest name and answer error, then clipped */
		char		message[STATS_LAST_ERROR_SIZE * 2];

		snprintf(message, sizeof(message), "channel %s: %s", channel, error);
		set_last_error(message);
	}
}

/* Counts count payments of channel that reached status (final). */
void
stats_final(const char *channel, const char *status, int64 count)
{
	ChannelCounters *c;
	int64		minute = now_seconds() / 60;
	int			mi = (int) (minute % STATS_MINUTES);
	bool		succeeded = strcmp(status, "succeeded") == 0;
	bool		failed = strcmp(status, "failed") == 0;
	bool		expired = strcmp(status, "expired") == 0;

	if (shared == NULL || !(succeeded || failed || expired))
		return;
	LWLockAcquire(shared->lock, LW_SHARED);
	c = channel_slot(channel);
	if (c)
	{
		SpinLockAcquire(&c->mutex);
		if (c->minute_of[mi] != minute)
		{
			c->minute_of[mi] = minute;
			c->succeeded[mi] = c->failed[mi] = c->expired[mi] = 0;
		}
		if (succeeded)
			c->succeeded[mi] += count;
		else if (failed)
			c->failed[mi] += count;
		else
			c->expired[mi] += count;
		SpinLockRelease(&c->mutex);
	}
	LWLockRelease(shared->lock);
}

/*
 * The worker process starts: it can be woken through its latch, and owns
 * no requests yet.
 */
void
stats_worker_started(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	shared->worker_latch = MyLatch;
	shared->worker_pid = MyProcPid;
	shared->worker_started_at = now;
	shared->worker_state = WORKER_RUNNING;
	shared->worker_in_flight = 0;
	SpinLockRelease(&shared->mutex);

	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < STATS_MAX_CHANNELS; i++)
	{
		ChannelCounters *c = &shared->channels[i];

		SpinLockAcquire(&c->mutex);
		c->in_flight = 0;
		SpinLockRelease(&c->mutex);
	}
	LWLockRelease(shared->lock);
}

/*
 * The worker is about to connect to its database (connecting true), or has
 * connected (false).  Left true, it tells the next worker that the last one
 * died connecting (the database does not exist, say).
 */
void
stats_worker_connecting(bool connecting)
{
	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	shared->worker_connecting = connecting;
	SpinLockRelease(&shared->mutex);
}

/* True if the last worker died while connecting to its database. */
bool
stats_worker_connect_failed(void)
{
	bool		failed;

	if (shared == NULL)
		return false;
	SpinLockAcquire(&shared->mutex);
	failed = shared->worker_connecting;
	SpinLockRelease(&shared->mutex);
	return failed;
}

/* The worker process exits: nobody is to wake it any more. */
void
stats_worker_stopped(void)
{
	if (shared == NULL)
		return;
	pg_atomic_write_u64(&shared->sleep_until, (uint64) DT_NOBEGIN);
	SpinLockAcquire(&shared->mutex);
	shared->worker_latch = NULL;
	shared->worker_pid = 0;
	shared->worker_state = WORKER_NOT_RUNNING;
	shared->worker_in_flight = 0;
	SpinLockRelease(&shared->mutex);
}

/* The worker says what it is doing. */
void
stats_worker_state(WorkerState state, int in_flight)
{
	if (shared == NULL)
		return;
	SpinLockAcquire(&shared->mutex);
	shared->worker_state = state;
	shared->worker_in_flight = in_flight;
	SpinLockRelease(&shared->mutex);
}

/* The worker met an ERROR (it is about to exit and be restarted). */
void
stats_worker_error(const char *message)
{
	char		text[STATS_LAST_ERROR_SIZE * 2];

	if (shared == NULL)
		return;
	snprintf(text, sizeof(text), "worker: %s", message);
	set_last_error(text);
}

/*
 * The worker plans to look for due work at wake_at: DT_NOEND while it is
 * busy, DT_NOBEGIN when no commit is to wake it.
 */
void
stats_worker_sleeps_until(TimestampTz wake_at)
{
	if (shared == NULL)
		return;
	pg_atomic_write_u64(&shared->sleep_until, (uint64) wake_at);
}

/*
 * Sets the worker's latch if it plans to sleep past due_at, the time some
 * just-committed work becomes due.
 */
void
stats_wake_worker_for(TimestampTz due_at)
{
	Latch	   *latch;

	if (shared == NULL ||
		due_at >= (TimestampTz) pg_atomic_read_u64(&shared->sleep_until))
		return;
	SpinLockAcquire(&shared->mutex);
	latch = shared->worker_latch;
	SpinLockRelease(&shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * An events statement skipped its NOTIFY (skipping) or sent it.  Written
 * only when it changes, so that busy writers do not all dirty one cache
 * line.
 */
void
stats_notify_skipping(bool skipping)
{
	uint32		value = skipping ? 1 : 0;

	if (shared == NULL)
		return;
	if (pg_atomic_read_u32(&shared->notify_skipping) != value)
		pg_atomic_write_u32(&shared->notify_skipping, value);
}

/* A transaction committed count events without their NOTIFY. */
void
stats_notifications_skipped(int64 count)
{
	if (shared == NULL)
		return;
	pg_atomic_fetch_add_u64(&shared->notifications_skipped, (uint64) count);
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

/* Adds up one channel's counters (a copy) into what stats_read returns. */
static void
figures_of(const ChannelCounters *c, int64 second, ChannelFigures *f)
{
	int64		ten = second / 10;
	int64		minute = second / 60;
	int64		histogram[STATS_LATENCY_BUCKETS];
	int64		requests = 0;

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

/*
 * Reads every channel's figures into *figures (palloc'd); returns how many.
 * Without the preload: none.
 */
int
stats_read(ChannelFigures **figures)
{
	int64		second = now_seconds();
	int			n = 0;
	ChannelCounters *copy = palloc(sizeof(ChannelCounters));

	*figures = palloc0(sizeof(ChannelFigures) * STATS_MAX_CHANNELS);
	if (shared == NULL)
		return 0;

	for (int i = 0; i < STATS_MAX_CHANNELS; i++)
	{
		ChannelCounters *c = &shared->channels[i];
		bool		used;

		/* copy one channel's counters out, then add up without a lock */
		LWLockAcquire(shared->lock, LW_SHARED);
		used = c->name[0] != '\0';
		if (used)
		{
			SpinLockAcquire(&c->mutex);
			memcpy(copy, c, sizeof(ChannelCounters));
			SpinLockRelease(&c->mutex);
		}
		LWLockRelease(shared->lock);
		if (used)
			figures_of(copy, second, &(*figures)[n++]);
	}
	pfree(copy);
	return n;
}

/*
 * Reads the worker's state; false without the preload.  last_error is
 * clipped to errlen bytes on a character boundary.
 */
bool
stats_read_worker(WorkerState *state, pid_t *pid, TimestampTz *started_at,
				  int *in_flight, char *last_error, size_t errlen,
				  TimestampTz *last_error_at)
{
	char		error[STATS_LAST_ERROR_SIZE];

	if (shared == NULL)
		return false;
	SpinLockAcquire(&shared->mutex);
	*state = shared->worker_state;
	*pid = shared->worker_pid;
	*started_at = shared->worker_started_at;
	*in_flight = shared->worker_in_flight;
	memcpy(error, shared->last_error, sizeof(error));
	*last_error_at = shared->last_error_at;
	SpinLockRelease(&shared->mutex);
	clip_text(last_error, errlen, error);
	return true;
}

/*
 * Reads how many notifications were skipped since the server started and
 * whether the last events statement skipped its NOTIFY; false without the
 * preload.
 */
bool
stats_read_notify(uint64 *skipped, bool *skipping)
{
	if (shared == NULL)
		return false;
	*skipped = pg_atomic_read_u64(&shared->notifications_skipped);
	*skipping = pg_atomic_read_u32(&shared->notify_skipping) != 0;
	return true;
}
