/*
 * stats.c
 *		paysync's shared memory (see stats.h), made at server start when
 *		paysync is preloaded: one struct, PaysyncShared, with a slot per
 *		worker, and a hash table of channel counters keyed by channel name.
 *
 *		Counters: time is cut into 5-second slots (checks, errors),
 *		10-second slots (latency histograms, half an octave per bucket) and
 *		5-minute slots (statuses reached), each stamped with the period it
 *		holds so that stale slots read as empty.  A figure "of the last
 *		minute" adds up the current slot and the ones before it within the
 *		minute: it covers the last 55 to 60 seconds (checks, errors) or 50
 *		to 60 seconds (latencies); one "of the last hour" covers the last 55
 *		to 60 minutes.  A channel gets an entry the first time it is
 *		counted and keeps it until the server stops; at most
 *		STATS_MAX_CHANNELS channels get one.
 *
 *		Size: an entry is 1,392 bytes (1,408 with dynahash's element
 *		header), so the table takes 23,256,144 bytes (22.2 MiB) for 16,384
 *		channels, and PaysyncShared 5,144 bytes more (x86-64).
 *
 *		Locking rules:
 *		- shared->lock (the LWLock of the "paysync" tranche) guards the
 *		  channel table itself.  Finding a channel takes it shared; adding a
 *		  channel takes it exclusive; reading every channel (stats_read)
 *		  takes it shared for the whole scan.  Entries are never removed, so
 *		  an entry found stays where it is once the lock is released: its
 *		  counters are then touched under its own mutex alone.
 *		- entry->mutex, a spinlock, guards that channel's counters.  It is
 *		  held only around the increments and copies themselves: the entry,
 *		  the time periods and the latency bucket are worked out before.
 *		- shared->workers[i].mutex, a spinlock, guards worker i+1's fields
 *		  (latch, pid, connecting, state, start time, requests in flight,
 *		  last error).  It is held only to copy values in or out: text is
 *		  formatted and clipped before, timestamps are read before, and the
 *		  latch is set after (should the worker have exited meanwhile,
 *		  setting its old latch once more is harmless: latches allow
 *		  spurious wake-ups).
 *		- shared->sleep_until[i], shared->notifications_skipped and
 *		  shared->notify_skipping are atomics, read and written without a
 *		  lock.
 *		No code holds two of these at once except an entry's mutex inside
 *		shared->lock (stats_read).
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
#include "utils/hsearch.h"

#include "stats.h"

#define STATS_MAX_CHANNELS 16384
#define STATS_MINUTE_SLOTS 12	/* slots of the last minute ... */
#define STATS_MINUTE_SLOT_SECONDS 5 /* ... 5 seconds each */
#define STATS_LATENCY_SLOTS 6	/* slots of latency histograms ... */
#define STATS_LATENCY_SLOT_SECONDS 10	/* ... 10 seconds each */
#define STATS_LATENCY_BUCKETS 40	/* half-octave buckets from 1 ms: the
									 * last one starts at 2^19 ms, past the
									 * longest request timeout (600 s) */
#define STATS_HOUR_SLOTS 12		/* slots of the last hour ... */
#define STATS_HOUR_SLOT_SECONDS 300 /* ... 5 minutes each */
#define STATS_LAST_ERROR_SIZE 256

/*
 * The counters of one channel: an entry of the channel table.  Periods are
 * counted from the epoch in units of their slot's length (int32 holds them
 * for centuries).
 */
typedef struct ChannelCounters
{
	char		name[NAMEDATALEN];	/* the hash key; set once */
	slock_t		mutex;			/* guards everything below */
	int32		in_flight;
	int32		minute_slot_of[STATS_MINUTE_SLOTS];
	int32		checks[STATS_MINUTE_SLOTS];
	int32		errors[STATS_MINUTE_SLOTS];
	int32		latency_slot_of[STATS_LATENCY_SLOTS];
	int32		latency[STATS_LATENCY_SLOTS][STATS_LATENCY_BUCKETS];
	int32		hour_slot_of[STATS_HOUR_SLOTS];
	int32		succeeded[STATS_HOUR_SLOTS];
	int32		failed[STATS_HOUR_SLOTS];
	int32		expired[STATS_HOUR_SLOTS];
} ChannelCounters;

/* One worker's fields, guarded by mutex. */
typedef struct WorkerSlot
{
	slock_t		mutex;
	Latch	   *latch;			/* NULL when the worker does not run */
	pid_t		pid;			/* 0 when the worker does not run */
	bool		connecting;		/* set while connecting to the database */
	WorkerState state;
	TimestampTz started_at;
	int32		in_flight;
	char		last_error[STATS_LAST_ERROR_SIZE];	/* clipped on a character */
	TimestampTz last_error_at;
} WorkerSlot;

/* Everything paysync keeps in shared memory but the channel table. */
typedef struct PaysyncShared
{
	LWLock	   *lock;			/* guards the channel table */

	WorkerSlot	workers[PAYSYNC_MAX_WORKERS];

	/*
	 * When each worker plans to look for due work next: DT_NOEND while it
	 * is busy (any commit of due work wakes it), DT_NOBEGIN when nothing
	 * may wake it (disabled, waiting, not running).  A committing backend
	 * whose work is due earlier sets the worker's latch.  Kept apart from
	 * the slots so that a commit reads them all from two cache lines.
	 */
	pg_atomic_uint64 sleep_until[PAYSYNC_MAX_WORKERS];

	/*
	 * Notifications skipped under queue pressure since the server started
	 * (counted at commit), and whether the last events statement, in any
	 * database, skipped its NOTIFY (1) or sent it (0).
	 */
	pg_atomic_uint64 notifications_skipped;
	pg_atomic_uint32 notify_skipping;
} PaysyncShared;

static PaysyncShared *shared = NULL;
static HTAB *channel_table = NULL;

/* The worker this process is (1..PAYSYNC_MAX_WORKERS), 0 if none. */
static int	my_worker = 0;

/* Whether this process has warned that the channel table is full. */
static bool warned_table_full = false;

/* Asks for the shared memory and the LWLock (from the shmem_request_hook). */
void
stats_shmem_request(void)
{
	RequestAddinShmemSpace(add_size(MAXALIGN(sizeof(PaysyncShared)),
									hash_estimate_size(STATS_MAX_CHANNELS,
													   sizeof(ChannelCounters))));
	RequestNamedLWLockTranche("paysync", 1);
}

/*
 * Creates or attaches to the shared struct and the channel table (from the
 * shmem_startup_hook).  The table is made at its full size, so adding a
 * channel never takes more shared memory.
 */
void
stats_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("paysync", sizeof(PaysyncShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(PaysyncShared));
		shared->lock = &(GetNamedLWLockTranche("paysync"))->lock;
		for (int i = 0; i < PAYSYNC_MAX_WORKERS; i++)
		{
			SpinLockInit(&shared->workers[i].mutex);
			shared->workers[i].state = WORKER_NOT_RUNNING;
			pg_atomic_init_u64(&shared->sleep_until[i], (uint64) DT_NOBEGIN);
		}
		pg_atomic_init_u64(&shared->notifications_skipped, 0);
		pg_atomic_init_u32(&shared->notify_skipping, 0);
	}
	info.keysize = NAMEDATALEN;
	info.entrysize = sizeof(ChannelCounters);
	channel_table = ShmemInitHash("paysync channels",
								  STATS_MAX_CHANNELS, STATS_MAX_CHANNELS,
								  &info, HASH_ELEM | HASH_STRINGS | HASH_FIXED_SIZE);
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
 * The counters of channel, made the first time it is counted; NULL when
 * the table is full (the first time in this process, with a WARNING).
 * Returns with no lock held.
 */
static ChannelCounters *
channel_counters(const char *channel)
{
	char		key[NAMEDATALEN];
	ChannelCounters *c;
	bool		full;
	bool		found;

	clip_text(key, sizeof(key), channel);

	LWLockAcquire(shared->lock, LW_SHARED);
	c = hash_search(channel_table, key, HASH_FIND, NULL);
	full = hash_get_num_entries(channel_table) >= STATS_MAX_CHANNELS;
	LWLockRelease(shared->lock);
	if (c != NULL)
		return c;

	/* a new channel: look again with the lock exclusive, then add it */
	if (!full)
	{
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		c = hash_search(channel_table, key, HASH_FIND, NULL);
		if (c == NULL &&
			hash_get_num_entries(channel_table) < STATS_MAX_CHANNELS)
		{
			c = hash_search(channel_table, key, HASH_ENTER_NULL, &found);
			if (c != NULL && !found)
			{
				/* zero the counters; the key is set already */
				memset((char *) c + offsetof(ChannelCounters, mutex), 0,
					   sizeof(ChannelCounters) - offsetof(ChannelCounters, mutex));
				SpinLockInit(&c->mutex);
			}
		}
		LWLockRelease(shared->lock);
		if (c != NULL)
			return c;
	}

	if (!warned_table_full)
	{
		warned_table_full = true;
		ereport(WARNING,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("paysync keeps no counters for channel \"%s\"", key),
				 errdetail("paysync keeps counters for at most %d channels, and that many were counted since the server started.",
						   STATS_MAX_CHANNELS),
				 errhint("paysync.stats shows no checks, errors or latencies for the channels beyond; their payments are checked as usual.  A server restart empties the table.")));
	}
	return NULL;
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
	c = channel_counters(channel);
	if (c)
	{
		SpinLockAcquire(&c->mutex);
		c->in_flight = Max(c->in_flight + delta, 0);
		SpinLockRelease(&c->mutex);
	}
}

/* The slot of this process's worker, NULL if it is no worker. */
static WorkerSlot *
my_slot(void)
{
	if (shared == NULL || my_worker == 0)
		return NULL;
	return &shared->workers[my_worker - 1];
}

/* Keeps message as slot's last error, with the time now. */
static void
set_last_error(WorkerSlot *slot, const char *message)
{
	char		clipped[STATS_LAST_ERROR_SIZE];
	TimestampTz now = GetCurrentTimestamp();

	clip_text(clipped, sizeof(clipped), message);
	SpinLockAcquire(&slot->mutex);
	memcpy(slot->last_error, clipped, sizeof(clipped));
	slot->last_error_at = now;
	SpinLockRelease(&slot->mutex);
}

/*
 * Counts a finished request: a check, maybe an error (then remembered as
 * the last error of this worker, or of worker 1 outside a worker), and its
 * latency.
 */
void
stats_check_done(const char *channel, bool is_error, double latency_ms,
				 const char *error)
{
	ChannelCounters *c;
	int64		second = now_seconds();
	int32		period = (int32) (second / STATS_MINUTE_SLOT_SECONDS);
	int			si = (int) (period % STATS_MINUTE_SLOTS);
	int32		latency_period = (int32) (second / STATS_LATENCY_SLOT_SECONDS);
	int			li = (int) (latency_period % STATS_LATENCY_SLOTS);
	int			bucket = latency_bucket(latency_ms);

	if (shared == NULL)
		return;
	c = channel_counters(channel);
	if (c)
	{
		SpinLockAcquire(&c->mutex);
		c->in_flight = Max(c->in_flight - 1, 0);
		if (c->minute_slot_of[si] != period)
		{
			c->minute_slot_of[si] = period;
			c->checks[si] = 0;
			c->errors[si] = 0;
		}
		c->checks[si]++;
		if (is_error)
			c->errors[si]++;
		if (c->latency_slot_of[li] != latency_period)
		{
			c->latency_slot_of[li] = latency_period;
			memset(c->latency[li], 0, sizeof(c->latency[li]));
		}
		c->latency[li][bucket]++;
		SpinLockRelease(&c->mutex);
	}

	if (is_error && error)
	{
		/* long enough for the longest name and answer error, then clipped */
		char		message[STATS_LAST_ERROR_SIZE * 2];
		WorkerSlot *slot = my_slot();

		snprintf(message, sizeof(message), "channel %s: %s", channel, error);
		set_last_error(slot ? slot : &shared->workers[0], message);
	}
}

/* Counts count payments of channel that reached status (final). */
void
stats_final(const char *channel, const char *status, int64 count)
{
	ChannelCounters *c;
	int32		period = (int32) (now_seconds() / STATS_HOUR_SLOT_SECONDS);
	int			hi = (int) (period % STATS_HOUR_SLOTS);
	bool		succeeded = strcmp(status, "succeeded") == 0;
	bool		failed = strcmp(status, "failed") == 0;
	bool		expired = strcmp(status, "expired") == 0;

	if (shared == NULL || !(succeeded || failed || expired))
		return;
	c = channel_counters(channel);
	if (c)
	{
		SpinLockAcquire(&c->mutex);
		if (c->hour_slot_of[hi] != period)
		{
			c->hour_slot_of[hi] = period;
			c->succeeded[hi] = c->failed[hi] = c->expired[hi] = 0;
		}
		if (succeeded)
			c->succeeded[hi] += count;
		else if (failed)
			c->failed[hi] += count;
		else
			c->expired[hi] += count;
		SpinLockRelease(&c->mutex);
	}
}

/*
 * This process is worker number worker (1..PAYSYNC_MAX_WORKERS): the
 * stats_worker_* functions act on its slot from now on.  Called first thing
 * in the worker process.
 */
void
stats_set_worker(int worker)
{
	if (worker < 1 || worker > PAYSYNC_MAX_WORKERS)
		elog(ERROR, "paysync: worker number %d is out of range", worker);
	my_worker = worker;
}

/*
 * The worker process starts: it can be woken through its latch, and owns
 * no requests yet.  The channels' requests in flight are left alone: other
 * workers' are counted there, and a worker takes its own off as it exits.
 */
void
stats_worker_started(void)
{
	WorkerSlot *slot = my_slot();
	TimestampTz now = GetCurrentTimestamp();

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->latch = MyLatch;
	slot->pid = MyProcPid;
	slot->started_at = now;
	slot->state = WORKER_RUNNING;
	slot->in_flight = 0;
	SpinLockRelease(&slot->mutex);
}

/*
 * The worker is about to connect to its database (connecting true), or has
 * connected (false).  Left true, it tells the next process of this worker
 * that the last one died connecting (the database does not exist, say).
 */
void
stats_worker_connecting(bool connecting)
{
	WorkerSlot *slot = my_slot();

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->connecting = connecting;
	SpinLockRelease(&slot->mutex);
}

/* True if this worker's last process died while connecting to its database. */
bool
stats_worker_connect_failed(void)
{
	WorkerSlot *slot = my_slot();
	bool		failed;

	if (slot == NULL)
		return false;
	SpinLockAcquire(&slot->mutex);
	failed = slot->connecting;
	SpinLockRelease(&slot->mutex);
	return failed;
}

/* The worker process exits: nobody is to wake it any more. */
void
stats_worker_stopped(void)
{
	WorkerSlot *slot = my_slot();

	if (slot == NULL)
		return;
	pg_atomic_write_u64(&shared->sleep_until[my_worker - 1], (uint64) DT_NOBEGIN);
	SpinLockAcquire(&slot->mutex);
	slot->latch = NULL;
	slot->pid = 0;
	slot->state = WORKER_NOT_RUNNING;
	slot->in_flight = 0;
	SpinLockRelease(&slot->mutex);
}

/*
 * The worker process exits once its successor is started (see
 * wait_for_database): nobody is to wake this process any more, but
 * worker_status() goes on showing the slot as it was until the successor
 * takes it, rather than "not running" for a moment.
 */
void
stats_worker_handed_over(void)
{
	WorkerSlot *slot = my_slot();

	if (slot == NULL)
		return;
	pg_atomic_write_u64(&shared->sleep_until[my_worker - 1], (uint64) DT_NOBEGIN);
	SpinLockAcquire(&slot->mutex);
	slot->latch = NULL;
	SpinLockRelease(&slot->mutex);
}

/* The worker says what it is doing. */
void
stats_worker_state(WorkerState state, int in_flight)
{
	WorkerSlot *slot = my_slot();

	if (slot == NULL)
		return;
	SpinLockAcquire(&slot->mutex);
	slot->state = state;
	slot->in_flight = in_flight;
	SpinLockRelease(&slot->mutex);
}

/* The worker met an ERROR (it is about to exit and be restarted). */
void
stats_worker_error(const char *message)
{
	WorkerSlot *slot = my_slot();
	char		text[STATS_LAST_ERROR_SIZE * 2];

	if (slot == NULL)
		return;
	snprintf(text, sizeof(text), "worker: %s", message);
	set_last_error(slot, text);
}

/*
 * The worker plans to look for due work at wake_at: DT_NOEND while it is
 * busy, DT_NOBEGIN when no commit is to wake it.
 */
void
stats_worker_sleeps_until(TimestampTz wake_at)
{
	if (my_slot() == NULL)
		return;
	pg_atomic_write_u64(&shared->sleep_until[my_worker - 1], (uint64) wake_at);
}

/*
 * Sets the latch of every worker that plans to sleep past due_at, the time
 * some just-committed work becomes due.  Called at every commit that
 * tracks or hurries a payment, so only a worker to wake costs a lock.
 */
void
stats_wake_worker_for(TimestampTz due_at)
{
	if (shared == NULL)
		return;
	for (int i = 0; i < PAYSYNC_MAX_WORKERS; i++)
	{
		WorkerSlot *slot = &shared->workers[i];
		Latch	   *latch;

		if (due_at >= (TimestampTz) pg_atomic_read_u64(&shared->sleep_until[i]))
			continue;
		SpinLockAcquire(&slot->mutex);
		latch = slot->latch;
		SpinLockRelease(&slot->mutex);
		if (latch != NULL)
			SetLatch(latch);
	}
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
	int32		period = (int32) (second / STATS_MINUTE_SLOT_SECONDS);
	int32		latency_period = (int32) (second / STATS_LATENCY_SLOT_SECONDS);
	int32		hour_period = (int32) (second / STATS_HOUR_SLOT_SECONDS);
	int64		histogram[STATS_LATENCY_BUCKETS];
	int64		requests = 0;

	memcpy(f->name, c->name, NAMEDATALEN);
	f->in_flight = c->in_flight;
	for (int s = 0; s < STATS_MINUTE_SLOTS; s++)
		if (c->minute_slot_of[s] > period - STATS_MINUTE_SLOTS)
		{
			f->checks_1m += c->checks[s];
			f->errors_1m += c->errors[s];
		}
	memset(histogram, 0, sizeof(histogram));
	for (int l = 0; l < STATS_LATENCY_SLOTS; l++)
		if (c->latency_slot_of[l] > latency_period - STATS_LATENCY_SLOTS)
			for (int b = 0; b < STATS_LATENCY_BUCKETS; b++)
			{
				histogram[b] += c->latency[l][b];
				requests += c->latency[l][b];
			}
	f->latency_p50_ms = requests ? histogram_quantile(histogram, requests, 0.50) : -1;
	f->latency_p99_ms = requests ? histogram_quantile(histogram, requests, 0.99) : -1;
	for (int h = 0; h < STATS_HOUR_SLOTS; h++)
		if (c->hour_slot_of[h] > hour_period - STATS_HOUR_SLOTS)
		{
			f->succeeded_1h += c->succeeded[h];
			f->failed_1h += c->failed[h];
			f->expired_1h += c->expired[h];
		}
}

/*
 * Reads the figures of every channel counted into *figures (palloc'd, one
 * element per channel); returns how many.  Without the preload: none.
 */
int
stats_read(ChannelFigures **figures)
{
	int64		second = now_seconds();
	int			n = 0;
	long		entries;
	ChannelCounters *copy = palloc(sizeof(ChannelCounters));
	HASH_SEQ_STATUS scan;
	ChannelCounters *c;

	if (shared == NULL)
	{
		*figures = palloc0(sizeof(ChannelFigures));
		return 0;
	}

	/* no channel is added while the lock is held, so entries stays right */
	LWLockAcquire(shared->lock, LW_SHARED);
	entries = hash_get_num_entries(channel_table);
	*figures = palloc0(sizeof(ChannelFigures) * Max(entries, 1));
	hash_seq_init(&scan, channel_table);
	while ((c = hash_seq_search(&scan)) != NULL)
	{
		Assert(n < entries);
		/* copy one channel's counters out, then add up */
		SpinLockAcquire(&c->mutex);
		memcpy(copy, c, sizeof(ChannelCounters));
		SpinLockRelease(&c->mutex);
		figures_of(copy, second, &(*figures)[n++]);
	}
	LWLockRelease(shared->lock);
	pfree(copy);
	return n;
}

/*
 * Reads the state of worker number worker; false without the preload or
 * for a worker number out of range.  last_error is clipped to errlen bytes
 * on a character boundary.
 */
bool
stats_read_worker(int worker, WorkerState *state, pid_t *pid,
				  TimestampTz *started_at, int *in_flight,
				  char *last_error, size_t errlen,
				  TimestampTz *last_error_at)
{
	WorkerSlot *slot;
	char		error[STATS_LAST_ERROR_SIZE];

	if (shared == NULL || worker < 1 || worker > PAYSYNC_MAX_WORKERS)
		return false;
	slot = &shared->workers[worker - 1];
	SpinLockAcquire(&slot->mutex);
	*state = slot->state;
	*pid = slot->pid;
	*started_at = slot->started_at;
	*in_flight = slot->in_flight;
	memcpy(error, slot->last_error, sizeof(error));
	*last_error_at = slot->last_error_at;
	SpinLockRelease(&slot->mutex);
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
