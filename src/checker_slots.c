/*
 * checker_slots.c
 *		Slot reservation for the check pipeline: what all workers share of
 *		paysync.max_inflight and of each channel's max_inflight, rate
 *		(max_rps) and circuit breaker, as this process takes and gives it
 *		back (the shared memory itself is politeness.c's).  A worker
 *		reserves slots in flight before it claims (channel_slots: how many
 *		of each limited channel a claim may take), and gives back each at
 *		the end of its check; run_once() takes them as its checks start.  A
 *		check starts only when its channel's breaker and rate let it
 *		(politeness_admits); every answer is told to them
 *		(count_for_politeness).
 */
#include "postgres.h"

#include <limits.h>

#include "access/xact.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "paysync.h"
#include "channel.h"
#include "checker.h"
#include "checker_internal.h"
#include "driver.h"
#include "http.h"
#include "politeness.h"
#include "stats.h"
#include "storage.h"
#include "token.h"

/* A claim takes no more of a rate-limited channel than may start this soon. */
#define CLAIM_RATE_HORIZON_MS 250

/*
 * The channels the last claim looked at: their reservations and blocks
 * are set, the other channels have none.
 */
static ChannelState **claim_walk = NULL;
static int	claim_walk_len = 0;
static int	claim_walk_cap = 0;

/* Marks the channels already in claim_walk (ChannelState.walk_mark). */
static uint64 walk_mark = 0;

/* Shared slots of paysync.max_inflight this process holds. */
int			total_reserved = 0;

/* The earliest time a queued check blocked by politeness may start. */
TimestampTz next_start_at = DT_NOEND;

/* A channel at its cap has had a slot freed (checker_slot_freed_for_capped). */
bool		slot_freed_for_capped = false;

/*
 * How many payments of channel its breaker and rate let a claim take now,
 * besides those it has queued already (-1: no limit); when none, *wait_until
 * says when more may be.
 */
static int
politeness_allows(ChannelState *channel, TimestampTz now, TimestampTz *wait_until)
{
	const ChannelConfig *config = channel->compiled ? channel->compiled->config : NULL;
	int			allowed = -1;

	*wait_until = DT_NOEND;
	if (config == NULL || channel->shared == NULL)
		return -1;
	if (config->pause_after_errors > 0 && breaker_any_paused())
		allowed = breaker_claimable(channel->shared, config->pause_after_errors, now,
									wait_until);
	if (config->max_rps > 0 && allowed != 0)
	{
		int			rate = rate_available(channel->shared, config->max_rps, now,
										  (int64) CLAIM_RATE_HORIZON_MS * 1000,
										  wait_until);

		rate = Max(rate - (channel->in_flight - channel->requests), 0);
		allowed = allowed < 0 ? rate : Min(allowed, rate);
		/* its queued checks cover the horizon: claim again halfway through */
		if (rate == 0)
			*wait_until = Max(*wait_until, now + (int64) CLAIM_RATE_HORIZON_MS * 500);
	}
	return allowed;
}

/* Is a compiled channel's breaker paused (by any worker)? */
bool
channel_paused(const ChannelState *c)
{
	const ChannelConfig *config = c->compiled ? c->compiled->config : NULL;
	TimestampTz wait_until;

	if (config == NULL || c->shared == NULL || config->pause_after_errors <= 0 ||
		!breaker_any_paused())
		return false;
	return breaker_claimable(c->shared, config->pause_after_errors,
							 GetCurrentTimestamp(), &wait_until) >= 0;
}

/* Adds channel c to the claim walk, once. */
static void
claim_walk_add(ChannelState *c)
{
	if (c->walk_mark == walk_mark)
		return;
	c->walk_mark = walk_mark;
	claim_walk[claim_walk_len++] = c;
}

/*
 * What a claim is to know of the channels: the default claim time and the
 * channels that are exceptions, with how long a claim of theirs lasts and
 * how many of their payments may be claimed now (-1: no limit): what their
 * breaker and rate allow and, with honour_caps, their free slots in flight,
 * reserved here in the shared count so that other workers do not take them
 * too.  Channels not compiled yet (none of their payments claimed so far)
 * have no limit yet.  Only the channels with limits of their own are
 * looked at, and the paused ones (a pause holds back a channel without
 * limits too; all channels if more are paused than the shared memory
 * names).  The others keep no reservation or block from an earlier claim
 * that matters: channels_blocked() and release_unclaimed_slots() look at
 * this walk only.
 */
ChannelSlots
channel_slots(bool honour_caps)
{
	ChannelSlots slots = {0};
	TimestampTz now = GetCurrentTimestamp();
	char		(*paused_names)[NAMEDATALEN] = palloc(PAUSED_NAMES_MAX * NAMEDATALEN);
	int			paused = breaker_paused_names(paused_names);
	bool		walk_all = (paused < 0);
	int			n = walk_all ? channel_count : limited_len + paused;

	slots.default_claim_ms = paysync_request_timeout_ms + PAYSYNC_CLAIM_MARGIN_MS;
	slots.names = palloc(sizeof(char *) * Max(n, 1));
	slots.claim_ms = palloc(sizeof(int32) * Max(n, 1));
	slots.free_slots = palloc(sizeof(int32) * Max(n, 1));
	if (claim_walk_cap < n)
	{
		claim_walk_cap = Max(n, 16);
		if (claim_walk)
			pfree(claim_walk);
		claim_walk = MemoryContextAlloc(checker_context,
										sizeof(ChannelState *) * claim_walk_cap);
	}
	claim_walk_len = 0;
	walk_mark++;
	if (walk_all)
		for (ChannelState *c = channels; c; c = c->next)
			claim_walk_add(c);
	else
	{
		for (int i = 0; i < limited_len; i++)
			claim_walk_add(limited_channels[i]);
		for (int i = 0; i < paused; i++)
		{
			ChannelState *c = channel_find(paused_names[i]);

			if (c != NULL)
				claim_walk_add(c);
		}
	}

	for (int i = 0; i < claim_walk_len; i++)
	{
		ChannelState *c = claim_walk[i];
		int			cap = channel_cap(c);
		TimestampTz wait_until;
		int			allowed = politeness_allows(c, now, &wait_until);
		int			claim_ms;

		c->reserved_now = 0;
		c->claimed_now = 0;
		c->cap_at_claim = honour_caps ? cap : 0;
		c->blocked_until = 0;
		if (allowed == 0)
			c->blocked_until = wait_until;
		else if (honour_caps && cap > 0)
		{
			int			want = allowed < 0 ? cap : Min(allowed, cap);

			c->reserved_now = politeness_reserve(c->shared, want, cap);
			if (c->shared == NULL)
				c->reserved_now = Max(Min(want, cap - c->in_flight), 0);
			allowed = c->reserved_now;
			if (allowed == 0)
				c->blocked_until = DT_NOEND;
		}
		c->at_cap = (c->blocked_until == DT_NOEND);
		claim_ms = c->compiled ? channel_timeout_ms(c->compiled) + PAYSYNC_CLAIM_MARGIN_MS :
			slots.default_claim_ms;
		if (allowed < 0 && claim_ms == slots.default_claim_ms)
			continue;
		slots.names[slots.n] = c->name;
		slots.claim_ms[slots.n] = claim_ms == slots.default_claim_ms ? -1 : claim_ms;
		slots.free_slots[slots.n] = allowed;
		slots.n++;
	}
	return slots;
}

/*
 * The channels left out of the next-due look-up (no free slot, paused, or
 * out of rate at the last claim), and the earliest time one of them may be
 * claimed again (DT_NOEND: when a slot frees).
 */
ChannelSlots
channels_blocked(TimestampTz *unblocked_at)
{
	ChannelSlots blocked = {0};

	*unblocked_at = DT_NOEND;
	blocked.names = palloc(sizeof(char *) * Max(claim_walk_len, 1));
	for (int i = 0; i < claim_walk_len; i++)
	{
		ChannelState *c = claim_walk[i];

		if (c->blocked_until != 0)
		{
			blocked.names[blocked.n++] = c->name;
			*unblocked_at = Min(*unblocked_at, c->blocked_until);
		}
	}
	return blocked;
}

/*
 * Sets the latches of the other workers (and this one's: harmless), for a
 * slot in flight given back or a channel resumed, whatever their planned
 * wake-up: one of them may be waiting for it.  Nothing with one worker.
 */
void
wake_other_workers(void)
{
	if (paysync_workers > 1)
		stats_wake_worker_for(DT_NOBEGIN + 1);
}

/* Gives back the shared slots a check holds. */
void
check_release_slots(Check *check)
{
	ChannelState *channel = check->channel;
	bool		others_wait;

	if (!check->reserved)
		return;
	Assert(channel->reserved > 0 && total_reserved > 0);
	check->reserved = false;
	channel->reserved--;
	total_reserved--;
	others_wait = politeness_release(channel->shared, 1, channel_cap(channel));
	others_wait |= politeness_release_total(1, paysync_max_inflight);
	/* a worker that found no free slot sleeps until one frees */
	if (others_wait)
		wake_other_workers();
}

/*
 * A check claimed without shared slots (run_once) takes them as it starts,
 * so that paysync.max_inflight and its channel's max_inflight hold across
 * the workers and it.  False if none is free now.
 */
bool
check_reserve_slots(Check *check)
{
	ChannelState *channel = check->channel;

	if (check->reserved)
		return true;
	if (politeness_reserve_total(1, paysync_max_inflight) == 0)
		return false;
	if (politeness_reserve(channel->shared, 1, channel_cap(channel)) == 0)
	{
		politeness_release_total(1, paysync_max_inflight);
		return false;
	}
	check->reserved = true;
	channel->reserved++;
	total_reserved++;
	return true;
}

/* Gives back the channels' slots reserved for a claim and not used. */
void
release_unclaimed_slots(void)
{
	for (int i = 0; i < claim_walk_len; i++)
	{
		ChannelState *c = claim_walk[i];

		if (c->reserved_now > c->claimed_now)
			politeness_release(c->shared, c->reserved_now - c->claimed_now,
							   c->cap_at_claim);
		c->reserved_now = c->claimed_now = 0;
	}
}

/*
 * May check start now, as far as its channel's circuit breaker and rate
 * go?  If so, it may have become the paused channel's probe, and it has
 * taken a start of the rate.  If not, next_start_at learns when to try.
 */
bool
politeness_admits(Check *check, TimestampTz now)
{
	ChannelState *channel = check->channel;
	const ChannelConfig *config = channel->compiled->config;
	TimestampTz wait_until = DT_NOEND;
	int64		probe_lapse_us;
	BreakerAdmit admit;

	if (channel->shared == NULL)
		return true;
	probe_lapse_us = (int64) (channel_timeout_ms(channel->compiled) +
							  PAYSYNC_CLAIM_MARGIN_MS) * 1000;
	admit = breaker_admit(channel->shared, config->pause_after_errors, now,
						  probe_lapse_us, &wait_until);
	if (admit == BREAKER_WAIT)
	{
		next_start_at = Min(next_start_at, wait_until);
		return false;
	}
	if (!rate_take(channel->shared, config->max_rps, now, &wait_until))
	{
		if (admit == BREAKER_PROBE)
			breaker_probe_dropped(channel->shared);
		next_start_at = Min(next_start_at, wait_until);
		return false;
	}
	if (admit == BREAKER_PROBE)
	{
		check->probe = true;
		channel->probing = true;
	}
	return true;
}

/*
 * Tells the channel's circuit breaker and rate about an answer: no answer
 * at all, a 5xx or a 429 is trouble (one more error in a row, which may
 * pause the channel); anything else is a good answer (which ends a pause).
 * A 429 also halves the rate for a while.  A pause and a resume each get
 * one LOG line, from the one worker whose answer made the change.
 */
void
count_for_politeness(Check *check, const ChannelConfig *config,
					 const HttpResult *result, const CheckAnswer *answer)
{
	ChannelState *channel = check->channel;
	bool		trouble = answer->is_error &&
		(result->status == 0 || result->status >= 500 || result->status == 429);
	TimestampTz now = GetCurrentTimestamp();
	int			errors_in_row;
	int64		paused_ms;
	BreakerChange change;

	if (channel->shared == NULL)
		return;
	if (result->status == 429 && config->max_rps > 0)
		rate_slow_down(channel->shared, now);
	change = breaker_answer(channel->shared, trouble, check->probe,
							config->pause_after_errors, now, &errors_in_row, &paused_ms);
	if (check->probe)
	{
		check->probe = false;
		channel->probing = false;
	}
	if (change == BREAKER_PAUSED)
		ereport(LOG,
				(errmsg("paysync paused channel \"%s\" after %d error answers in a row",
						channel->name, errors_in_row),
				 errdetail("The last error: %s", answer->error),
				 errhint("One probe request at a time asks it again, after a pause of %d s that doubles up to %d s; its other payments wait with no error counted.",
						 BREAKER_FIRST_PAUSE_MS / 1000, BREAKER_LONGEST_PAUSE_MS / 1000)));
	else if (change == BREAKER_RESUMED)
	{
		ereport(LOG,
				(errmsg("paysync resumed channel \"%s\": it answered again after a pause of %.1f s",
						channel->name, paused_ms / 1000.0)));
		/* the other workers may send its waiting payments now */
		wake_other_workers();
	}
}

/*
 * Gives back everything this process holds of what the workers share:
 * slots in flight and its channels' probes.  From checker_discard_all, and
 * from the worker's exit.
 */
void
checker_release_shared(void)
{
	for (ChannelState *c = channels; c; c = c->next)
	{
		if (c->reserved > 0)
			politeness_release(c->shared, c->reserved, channel_cap(c));
		c->reserved = 0;
		if (c->probing)
			breaker_probe_dropped(c->shared);
		c->probing = false;
	}
	if (total_reserved > 0)
		politeness_release_total(total_reserved, paysync_max_inflight);
	total_reserved = 0;
}

/*
 * When the earliest check kept queued by its channel's breaker or rate may
 * start; false if none is.
 */
bool
checker_next_start(TimestampTz *start_at)
{
	if (queue_len == 0 || next_start_at == DT_NOEND)
		return false;
	*start_at = next_start_at;
	return true;
}

/* Forgets the last claim's walk (its memory goes with checker_context's reset). */
void
slots_forget(void)
{
	claim_walk = NULL;
	claim_walk_len = claim_walk_cap = 0;
}
