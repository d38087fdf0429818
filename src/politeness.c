/*
 * politeness.c
 *		The shared state that keeps all workers together polite to each
 *		channel (see politeness.h): a shared-memory hash table of channel
 *		entries, made at server start when paysync is preloaded, and the
 *		total of requests in flight.
 *
 *		Requests in flight.  A worker reserves slots before it claims
 *		(politeness_reserve, never past the cap) and gives back what it did
 *		not use and each slot whose check ended (politeness_release).  A
 *		worker that exits gives back all it holds (the checker drops its
 *		checks); one killed hard takes the server through crash recovery,
 *		which makes this memory anew.
 *
 *		Rate (max_rps).  A generic cell rate algorithm: each entry keeps the
 *		theoretical arrival time (TAT) of the next request; a request may
 *		start when now >= TAT - burst, and moves TAT to max(TAT, now) +
 *		interval.  The interval is that of 97% of max_rps, and the burst a
 *		few requests (2% of max_rps, none below 50 per second): then no
 *		1-second window holds more than max_rps starts, with room for a few
 *		milliseconds of jitter between paysync and the channel, and a worker
 *		that wakes late may catch up with the burst.  A 429 answer halves
 *		the rate for RATE_SLOWDOWN_MS.
 *
 *		Circuit breaker (pause_after_errors).  Each answer of the channel
 *		that says it is in trouble (no answer at all, a 5xx, a 429) counts
 *		one more error in a row; any other answer resets the count.  At
 *		pause_after_errors the channel is paused: no request starts but one
 *		probe at a time, the first after BREAKER_FIRST_PAUSE_MS, each failed
 *		probe doubling the pause up to BREAKER_LONGEST_PAUSE_MS.  A good
 *		answer ends the pause.  A probe whose answer never comes (its worker
 *		exited) lapses after the request's timeout and the claim margin.
 *
 *		Channels generation: a counter bumped by every commit that changed
 *		paysync.channels, so that checkers reload channel rows only then.
 *
 *		Locking: politeness->lock (an LWLock of the "paysync politeness"
 *		tranche) guards the hash table: finding an entry takes it shared,
 *		adding one exclusive.  Entries are never removed, so a pointer to
 *		one stays good.  entry->mutex, a spinlock, guards the entry's
 *		fields; it is held only to read and write them, never around a
 *		call.  The total in flight is an atomic.
 */
#include "postgres.h"

#include <math.h>

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/hsearch.h"

#include "politeness.h"

/* The rate paysync aims at, as a share of max_rps, and the burst. */
#define RATE_SHARE 0.97
#define RATE_BURST_SHARE 0.02
#define RATE_BURST_FROM_RPS 50

/* One channel's shared state. */
struct ChannelPoliteness
{
	char		name[NAMEDATALEN];	/* hash key */
	slock_t		mutex;			/* guards everything below */

	int32		in_flight;		/* checks claimed and not yet ended, all
								 * workers */

	TimestampTz rate_tat;		/* when the next request may start, burst
								 * aside */
	TimestampTz slowed_until;	/* a 429 halved the rate until then */

	int32		errors_in_row;	/* trouble answers since the last good one */
	bool		paused;
	TimestampTz paused_since;
	int32		pause_ms;		/* the current pause between probes */
	TimestampTz probe_at;		/* paused: when the next probe may start */
	TimestampTz probe_until;	/* a probe is in flight until then; 0: none */
};

/* Everything here in shared memory besides the table's buckets. */
typedef struct PolitenessShared
{
	LWLock	   *lock;			/* guards the hash table */
	pg_atomic_uint32 total_in_flight;	/* all channels, all workers */
	pg_atomic_uint32 paused_channels;	/* how many are paused now */
	pg_atomic_uint64 channels_generation;	/* bumped at each commit that
											 * changed paysync.channels */
	slock_t		paused_mutex;	/* guards the two below */
	int			paused_named;	/* names in paused_names */
	char		paused_names[PAUSED_NAMES_MAX][NAMEDATALEN];	/* of paused
																 * channels */
} PolitenessShared;

static PolitenessShared *politeness = NULL;
static HTAB *entries = NULL;
static bool table_full_warned = false;

/* Asks for the shared memory and the LWLock (from the shmem_request_hook). */
void
politeness_shmem_request(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(PolitenessShared)));
	RequestAddinShmemSpace(hash_estimate_size(POLITENESS_MAX_CHANNELS,
											  sizeof(ChannelPoliteness)));
	RequestNamedLWLockTranche("paysync politeness", 1);
}

/* Creates or attaches to the shared state (from the shmem_startup_hook). */
void
politeness_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	politeness = ShmemInitStruct("paysync politeness", sizeof(PolitenessShared), &found);
	if (!found)
	{
		politeness->lock = &(GetNamedLWLockTranche("paysync politeness"))->lock;
		pg_atomic_init_u32(&politeness->total_in_flight, 0);
		pg_atomic_init_u32(&politeness->paused_channels, 0);
		SpinLockInit(&politeness->paused_mutex);
		politeness->paused_named = 0;
		/* 1: a checker that has loaded nothing yet holds 0 */
		pg_atomic_init_u64(&politeness->channels_generation, 1);
	}
	memset(&info, 0, sizeof(info));
	info.keysize = NAMEDATALEN;
	info.entrysize = sizeof(ChannelPoliteness);
	entries = ShmemInitHash("paysync politeness channels",
							POLITENESS_MAX_CHANNELS, POLITENESS_MAX_CHANNELS,
							&info, HASH_ELEM | HASH_STRINGS);
	LWLockRelease(AddinShmemInitLock);
}

/*
 * The shared entry of channel, made on first use; NULL without the preload
 * or when POLITENESS_MAX_CHANNELS channels have one already (then that
 * channel's limits hold per worker only; one WARNING per process says so).
 */
ChannelPoliteness *
politeness_entry(const char *channel)
{
	char		key[NAMEDATALEN];
	ChannelPoliteness *entry;
	bool		found;

	if (politeness == NULL)
		return NULL;
	memset(key, 0, sizeof(key));
	strlcpy(key, channel, sizeof(key));

	LWLockAcquire(politeness->lock, LW_SHARED);
	entry = hash_search(entries, key, HASH_FIND, NULL);
	LWLockRelease(politeness->lock);
	if (entry != NULL)
		return entry;

	LWLockAcquire(politeness->lock, LW_EXCLUSIVE);
	entry = hash_search(entries, key, HASH_ENTER_NULL, &found);
	if (entry != NULL && !found)
	{
		/* the key is set; the rest starts at zero: active, nothing in flight */
		memset((char *) entry + NAMEDATALEN, 0, sizeof(ChannelPoliteness) - NAMEDATALEN);
		SpinLockInit(&entry->mutex);
	}
	LWLockRelease(politeness->lock);

	if (entry == NULL && !table_full_warned)
	{
		table_full_warned = true;
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("paysync keeps shared limits for at most %d channels; channel \"%s\" has none",
						POLITENESS_MAX_CHANNELS, channel),
				 errdetail("Its max_inflight, max_rps and pause_after_errors hold for each worker on its own.")));
	}
	return entry;
}

/*
 * Reserves up to want slots in flight for entry's channel, never past cap
 * (0: no cap); returns how many it got.  Without an entry: want.
 */
int
politeness_reserve(ChannelPoliteness *entry, int want, int cap)
{
	int			got;

	if (entry == NULL || want <= 0)
		return Max(want, 0);
	SpinLockAcquire(&entry->mutex);
	got = cap > 0 ? Min(want, Max(cap - entry->in_flight, 0)) : want;
	entry->in_flight += got;
	SpinLockRelease(&entry->mutex);
	return got;
}

/*
 * Gives back n slots of entry's channel; true if the channel was at its cap
 * (another worker may be waiting for the slot).
 */
bool
politeness_release(ChannelPoliteness *entry, int n, int cap)
{
	bool		was_full;

	if (entry == NULL || n <= 0)
		return false;
	SpinLockAcquire(&entry->mutex);
	was_full = cap > 0 && entry->in_flight >= cap;
	entry->in_flight = Max(entry->in_flight - n, 0);
	SpinLockRelease(&entry->mutex);
	return was_full;
}

/* Reserves up to want of the cap on all requests in flight; returns how many. */
int
politeness_reserve_total(int want, int cap)
{
	uint32		current;

	if (politeness == NULL || want <= 0)
		return Max(want, 0);
	current = pg_atomic_read_u32(&politeness->total_in_flight);
	for (;;)
	{
		int			got = Min(want, Max(cap - (int) current, 0));

		if (got == 0)
			return 0;
		if (pg_atomic_compare_exchange_u32(&politeness->total_in_flight, &current,
										   current + got))
			return got;
	}
}

/* Gives back n of the total; true if it was at cap. */
bool
politeness_release_total(int n, int cap)
{
	uint32		before;

	if (politeness == NULL || n <= 0)
		return false;
	before = pg_atomic_fetch_sub_u32(&politeness->total_in_flight, n);
	Assert(before >= (uint32) n);
	return (int) before >= cap;
}

/* How much of cap the requests in flight of all workers leave; cap without the preload. */
int
politeness_free_total(int cap)
{
	if (politeness == NULL)
		return cap;
	return Max(cap - (int) pg_atomic_read_u32(&politeness->total_in_flight), 0);
}

/*
 * The interval between starts of entry's channel under max_rps, in µs, and
 * the earliest time the next may start, its burst allowed for (a rate idle
 * for a while has its whole burst, no more).  Called with entry->mutex
 * held.
 */
static TimestampTz
rate_next_start(const ChannelPoliteness *entry, double max_rps, TimestampTz now,
				int64 *interval_us)
{
	double		rps = max_rps * RATE_SHARE;
	int			burst = max_rps >= RATE_BURST_FROM_RPS ? (int) floor(max_rps * RATE_BURST_SHARE) : 0;

	if (now < entry->slowed_until)
		rps /= 2;
	*interval_us = (int64) ceil(1000000.0 / rps);
	return Max(entry->rate_tat, now) - *interval_us * burst;
}

/*
 * Takes one start of entry's channel under max_rps now; false if none is
 * free, with *next_at when one will be.  Without an entry, no rate is
 * shared: true.
 */
bool
rate_take(ChannelPoliteness *entry, double max_rps, TimestampTz now, TimestampTz *next_at)
{
	int64		interval_us;
	TimestampTz first;
	bool		taken;

	if (entry == NULL || max_rps <= 0)
		return true;
	SpinLockAcquire(&entry->mutex);
	first = rate_next_start(entry, max_rps, now, &interval_us);
	taken = now >= first;
	if (taken)
		entry->rate_tat = Max(entry->rate_tat, now) + interval_us;
	SpinLockRelease(&entry->mutex);
	if (!taken)
		*next_at = first;
	return taken;
}

/*
 * How many starts of entry's channel max_rps allows from now to now +
 * horizon_us, at most (other workers may take some); *next_at is when the
 * next may start.  For the size of a claim.
 */
int
rate_available(ChannelPoliteness *entry, double max_rps, TimestampTz now,
			   int64 horizon_us, TimestampTz *next_at)
{
	int64		interval_us;
	TimestampTz first;
	int64		n;

	*next_at = now;
	if (entry == NULL || max_rps <= 0)
		return INT_MAX;
	SpinLockAcquire(&entry->mutex);
	first = rate_next_start(entry, max_rps, now, &interval_us);
	SpinLockRelease(&entry->mutex);

	*next_at = Max(first, now);
	if (first > now + horizon_us)
		return 0;
	n = (now + horizon_us - first) / interval_us + 1;
	return (int) Min(n, INT_MAX);
}

/* A 429 answer: halves the channel's rate for a while. */
void
rate_slow_down(ChannelPoliteness *entry, TimestampTz now)
{
	if (entry == NULL)
		return;
	SpinLockAcquire(&entry->mutex);
	entry->slowed_until = now + (int64) RATE_SLOWDOWN_MS * 1000;
	SpinLockRelease(&entry->mutex);
}

/*
 * May a request of entry's channel start now?  On a paused channel, only
 * as its one probe, once the pause is over and no other probe is in
 * flight; the probe lapses at now + probe_lapse_us if no answer comes.
 * *wait_until: when to ask again, on BREAKER_WAIT.
 */
BreakerAdmit
breaker_admit(ChannelPoliteness *entry, int pause_after_errors, TimestampTz now,
			  int64 probe_lapse_us, TimestampTz *wait_until)
{
	BreakerAdmit admit;

	if (entry == NULL || pause_after_errors <= 0)
		return BREAKER_GO;
	SpinLockAcquire(&entry->mutex);
	if (!entry->paused)
		admit = BREAKER_GO;
	else if (entry->probe_until > now)
	{
		admit = BREAKER_WAIT;
		*wait_until = Max(entry->probe_at, entry->probe_until);
	}
	else if (now < entry->probe_at)
	{
		admit = BREAKER_WAIT;
		*wait_until = entry->probe_at;
	}
	else
	{
		admit = BREAKER_PROBE;
		entry->probe_until = now + probe_lapse_us;
	}
	SpinLockRelease(&entry->mutex);
	return admit;
}

/*
 * How many payments of entry's channel may be claimed now as far as the
 * breaker goes: -1 (any) unless paused; paused, 1 when a probe may start,
 * else 0 with *wait_until when one may.
 */
int
breaker_claimable(ChannelPoliteness *entry, int pause_after_errors, TimestampTz now,
				  TimestampTz *wait_until)
{
	int			claimable;

	if (entry == NULL || pause_after_errors <= 0)
		return -1;
	SpinLockAcquire(&entry->mutex);
	if (!entry->paused)
		claimable = -1;
	else if (entry->probe_until <= now && now >= entry->probe_at)
		claimable = 1;
	else
	{
		claimable = 0;
		*wait_until = Max(entry->probe_at, entry->probe_until);
	}
	SpinLockRelease(&entry->mutex);
	return claimable;
}

/*
 * Adds channel to the shared names of paused channels (paused), or takes it
 * out; a name that finds no room is left out (claims then look at every
 * channel: paused_channels is larger than paused_named).
 */
static void
paused_names_update(const char *channel, bool paused)
{
	SpinLockAcquire(&politeness->paused_mutex);
	if (paused)
	{
		if (politeness->paused_named < PAUSED_NAMES_MAX)
			memcpy(politeness->paused_names[politeness->paused_named++], channel,
				   NAMEDATALEN);
	}
	else
	{
		for (int i = 0; i < politeness->paused_named; i++)
			if (strcmp(politeness->paused_names[i], channel) == 0)
			{
				politeness->paused_named--;
				memcpy(politeness->paused_names[i],
					   politeness->paused_names[politeness->paused_named], NAMEDATALEN);
				break;
			}
	}
	SpinLockRelease(&politeness->paused_mutex);
}

/*
 * Copies the names of the paused channels into names (PAUSED_NAMES_MAX of
 * NAMEDATALEN) and returns how many; -1 if more are paused than are named.
 */
int
breaker_paused_names(char (*names)[NAMEDATALEN])
{
	int			n;

	if (politeness == NULL || pg_atomic_read_u32(&politeness->paused_channels) == 0)
		return 0;
	SpinLockAcquire(&politeness->paused_mutex);
	n = politeness->paused_named;
	memcpy(names, politeness->paused_names, (Size) n * NAMEDATALEN);
	SpinLockRelease(&politeness->paused_mutex);
	if (pg_atomic_read_u32(&politeness->paused_channels) > (uint32) n)
		return -1;
	return n;
}

/*
 * Counts an answer of entry's channel: trouble (no answer, a 5xx, a 429)
 * or not, and whether it answered the probe.  Returns the change it made,
 * for the caller's one LOG line, with the errors in a row and, on a
 * resume, how long the pause lasted.
 */
BreakerChange
breaker_answer(ChannelPoliteness *entry, bool trouble, bool probe,
			   int pause_after_errors, TimestampTz now, int *errors_in_row,
			   int64 *paused_ms)
{
	BreakerChange change = BREAKER_UNCHANGED;

	*errors_in_row = 0;
	*paused_ms = 0;
	if (entry == NULL)
		return BREAKER_UNCHANGED;
	SpinLockAcquire(&entry->mutex);
	if (probe)
		entry->probe_until = 0;
	if (!trouble)
	{
		entry->errors_in_row = 0;
		if (entry->paused)
		{
			entry->paused = false;
			*paused_ms = (now - entry->paused_since) / 1000;
			change = BREAKER_RESUMED;
			pg_atomic_fetch_sub_u32(&politeness->paused_channels, 1);
		}
	}
	else
	{
		entry->errors_in_row++;
		if (!entry->paused && pause_after_errors > 0 &&
			entry->errors_in_row >= pause_after_errors)
		{
			entry->paused = true;
			entry->paused_since = now;
			entry->pause_ms = BREAKER_FIRST_PAUSE_MS;
			entry->probe_at = now + (int64) entry->pause_ms * 1000;
			entry->probe_until = 0;
			change = BREAKER_PAUSED;
			pg_atomic_fetch_add_u32(&politeness->paused_channels, 1);
		}
		else if (entry->paused && probe)
		{
			entry->pause_ms = Min(entry->pause_ms * 2, BREAKER_LONGEST_PAUSE_MS);
			entry->probe_at = now + (int64) entry->pause_ms * 1000;
		}
	}
	*errors_in_row = entry->errors_in_row;
	SpinLockRelease(&entry->mutex);
	if (change != BREAKER_UNCHANGED)
		paused_names_update(entry->name, change == BREAKER_PAUSED);
	return change;
}

/* Is any channel paused?  When none is, a claim need not ask each channel. */
bool
breaker_any_paused(void)
{
	return politeness != NULL && pg_atomic_read_u32(&politeness->paused_channels) > 0;
}

/*
 * The generation of paysync.channels: it changes at each commit that
 * changed the table.  0 without the preload (a checker then reloads the
 * channels at each claim).
 */
uint64
politeness_channels_generation(void)
{
	if (politeness == NULL)
		return 0;
	return pg_atomic_read_u64(&politeness->channels_generation);
}

/* A transaction that changed paysync.channels commits. */
void
politeness_channels_changed(void)
{
	if (politeness != NULL)
		pg_atomic_fetch_add_u64(&politeness->channels_generation, 1);
}

/* A probe ended without an answer (dropped, or its worker exits). */
void
breaker_probe_dropped(ChannelPoliteness *entry)
{
	if (entry == NULL)
		return;
	SpinLockAcquire(&entry->mutex);
	entry->probe_until = 0;
	SpinLockRelease(&entry->mutex);
}

/*
 * The paused channels and since when (palloc'd arrays); returns how many.
 * A channel whose pause_after_errors was set to 0 meanwhile shows as
 * paused until its next answer.
 */
int
politeness_read_paused(char (**names)[NAMEDATALEN], TimestampTz **paused_since)
{
	HASH_SEQ_STATUS scan;
	ChannelPoliteness *entry;
	int			n = 0;
	int			size = 16;

	*names = palloc(sizeof(**names) * size);
	*paused_since = palloc(sizeof(TimestampTz) * size);
	if (politeness == NULL)
		return 0;
	LWLockAcquire(politeness->lock, LW_SHARED);
	hash_seq_init(&scan, entries);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		bool		paused;
		TimestampTz since;

		SpinLockAcquire(&entry->mutex);
		paused = entry->paused;
		since = entry->paused_since;
		SpinLockRelease(&entry->mutex);
		if (!paused)
			continue;
		if (n == size)
		{
			size *= 2;
			*names = repalloc(*names, sizeof(**names) * size);
			*paused_since = repalloc(*paused_since, sizeof(TimestampTz) * size);
		}
		memcpy((*names)[n], entry->name, NAMEDATALEN);
		(*paused_since)[n] = since;
		n++;
	}
	LWLockRelease(politeness->lock);
	return n;
}
