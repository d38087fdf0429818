/*
 * checker.c
 *		The check pipeline shared by the worker and run_once().
 *
 *		claim (transaction open)  -> queue of claimed checks
 *		start (no transaction)    -> requests built by the channel's driver,
 *		                             handed to the HTTP engine within the
 *		                             global and per-channel in-flight caps
 *		wait  (no transaction)    -> latch and curl's sockets together;
 *		                             finished requests interpreted by the
 *		                             driver into answers
 *		record (transaction open) -> answers written by storage.c
 *
 *		Channel rows are loaded again only after a commit changed
 *		paysync.channels (politeness_channels_generation), and each is
 *		compiled when a payment of it is first claimed, and again when its
 *		row changes; a compiled channel lives until no request in flight
 *		uses it.  So a pass costs what is due, not what is defined: the
 *		claim names only the channels with a limit or a claim time of their
 *		own, and walks the due payments in one index scan.  This file
 *		calls storage.c for SQL and http.c for the network, never SPI or
 *		libcurl itself.
 *
 *		Politeness (politeness.c holds what all workers share): a worker
 *		reserves slots in flight, of paysync.max_inflight and of each
 *		channel's max_inflight, before it claims, and gives back each at the
 *		end of its check.  A check starts only when its channel's circuit
 *		breaker lets it (a paused channel: one probe at a time) and its rate
 *		(max_rps) has a start free; until then it waits in the queue, in due
 *		order, with no error counted.  Claims take no more of a channel than
 *		its breaker and rate allow soon (CLAIM_RATE_HORIZON_MS), so that
 *		claimed checks do not wait long; a blocked channel is left out of
 *		the next-due look-up, and the worker wakes when it may go on.
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
#include "driver.h"
#include "http.h"
#include "politeness.h"
#include "stats.h"
#include "storage.h"
#include "token.h"

/* The most of a channel's status word kept in channel_status and events. */
#define CHANNEL_STATUS_MAX_BYTES 256

/* The most of a recording failure kept in last_error. */
#define RECORD_ERROR_MAX_BYTES 200

/*
 * Time a claim must still have, after a request's timeout, for its answer
 * to be recorded before the claim lapses.
 */
#define RECORD_ALLOWANCE_MS 1000

/* How soon run_once() tries again for a slot the workers hold. */
#define SLOT_RETRY_MS 20

/* A claim takes no more of a rate-limited channel than may start this soon. */
#define CLAIM_RATE_HORIZON_MS 250

/* A channel row compiled for use; shared by the requests made with it. */
typedef struct CompiledChannel
{
	MemoryContext context;		/* holds this struct and the config */
	ChannelConfig *config;		/* NULL if the row does not compile */
	char		broken[200];	/* why not */
	int			refs;			/* requests in flight made with it */
	bool		retired;		/* replaced by a newer version of the row */

	ChannelToken token;			/* for drivers that use access tokens */
} CompiledChannel;

/* What the checker knows of one channel. */
typedef struct ChannelState
{
	char		name[NAMEDATALEN];	/* key in channel_table */
	char	   *source;			/* driver, base_url and options, to spot changes */
	ChannelRow row;				/* the row, to compile it when first needed */
	CompiledChannel *compiled;	/* NULL until a payment of it is claimed */
	ChannelPoliteness *shared;	/* what all workers share of it, or NULL */
	int			in_flight;		/* checks claimed and not yet answered */
	int			requests;		/* of which requests started */
	int			reserved;		/* of which holding a shared slot */
	int			reserved_now;	/* shared slots reserved for this claim */
	int			claimed_now;	/* checks this claim got */
	int			cap_at_claim;	/* its max_inflight when slots were reserved */
	bool		probing;		/* its breaker's probe is ours, in flight */
	bool		at_cap;			/* had no free slot at the last claim */
	bool		in_limited;		/* in limited_channels */
	uint64		walk_mark;		/* the last claim walk it is in */
	TimestampTz blocked_until;	/* at the last claim: 0 if it could be
								 * claimed, else when it may be again
								 * (DT_NOEND: when a slot frees) */
	struct ChannelState *next;
} ChannelState;

/* One claimed check, queued or in flight (or a channel's token request). */
typedef struct Check
{
	CheckKind	kind;
	char	   *payment_id;		/* NULL for CHECK_TOKEN */
	int32		attempts;
	TimestampTz due_at;
	TimestampTz claimed_until;	/* a request must end before the claim lapses */
	ChannelState *channel;
	CompiledChannel *compiled;	/* set when the request starts */
	uint32		token_generation;	/* of the token the request carried */
	bool		reserved;		/* holds a shared slot in flight */
	bool		probe;			/* the request is its paused channel's probe */
} Check;

static MemoryContext checker_context = NULL;	/* channels, checks */
static MemoryContext answers_context = NULL;	/* answers until recorded */
static MemoryContext scratch_context = NULL;	/* reset after each use */
static WaitEventSet *wait_set = NULL;

static ChannelState *channels = NULL;	/* all of them, in a list */
static int	channel_count = 0;	/* in the list */
static HTAB *channel_table = NULL;	/* and by name */
static uint64 channels_generation = 0;	/* of the rows loaded */

/*
 * The channels a claim must look at, besides the paused ones: those
 * compiled with a limit of their own (max_inflight, max_rps, timeout).
 * The others take the claim's defaults, so a claim's cost follows the
 * channels with limits, not all the channels defined.  A channel stays
 * listed after its row changes (looking at it costs a little, nothing
 * more).
 */
static ChannelState **limited_channels = NULL;
static int	limited_len = 0;
static int	limited_cap = 0;

/*
 * The channels the last claim looked at: their reservations and blocks
 * are set, the other channels have none.
 */
static ChannelState **claim_walk = NULL;
static int	claim_walk_len = 0;
static int	claim_walk_cap = 0;

/* Marks the channels already in claim_walk (ChannelState.walk_mark). */
static uint64 walk_mark = 0;

static Check **queue = NULL;	/* claimed, not yet started */
static int	queue_len = 0;
static int	queue_cap = 0;
static int	requests_in_flight = 0;

static RecordedAnswer *answers = NULL;
static int	answers_len = 0;
static int	answers_cap = 0;
static TimestampTz oldest_answer_at = 0;	/* when the first of them came */

static bool slot_freed_for_capped = false;

/* Shared slots of paysync.max_inflight this process holds. */
static int	total_reserved = 0;

/* The earliest time a queued check blocked by politeness may start. */
static TimestampTz next_start_at = DT_NOEND;

/* Sets up the HTTP engine, memory and the wait set, once per process. */
void
checker_init(void)
{
	if (checker_context != NULL)
		return;
	http_engine_init();
	checker_context = AllocSetContextCreate(TopMemoryContext, "paysync checker",
											ALLOCSET_DEFAULT_SIZES);
	answers_context = AllocSetContextCreate(TopMemoryContext, "paysync answers",
											ALLOCSET_DEFAULT_SIZES);
	scratch_context = AllocSetContextCreate(TopMemoryContext, "paysync scratch",
											ALLOCSET_DEFAULT_SIZES);
	wait_set = CreateWaitEventSet(TopMemoryContext, 3);
	AddWaitEventToSet(wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(wait_set, WL_SOCKET_READABLE, http_engine_fd(), NULL, NULL);
}

/* Frees a compiled channel that is retired and no longer used. */
static void
compiled_release(CompiledChannel *compiled)
{
	if (compiled->retired && compiled->refs == 0)
		MemoryContextDelete(compiled->context);
}

/*
 * Compiles a channel row.  A row that does not compile (someone bypassed
 * the checks) is kept as broken: its payments get an error answer, and the
 * worker goes on with the other channels.
 */
static CompiledChannel *
compile_channel(const ChannelRow *row)
{
	MemoryContext context = AllocSetContextCreate(checker_context, "paysync channel",
												  ALLOCSET_SMALL_SIZES);
	CompiledChannel *compiled = MemoryContextAllocZero(context, sizeof(CompiledChannel));
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	compiled->context = context;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(context);
	PG_TRY();
	{
		Jsonb	   *options = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
																 CStringGetDatum(row->options)));

		compiled->config = channel_compile(row->name, row->driver, row->base_url, options);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(context);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		snprintf(compiled->broken, sizeof(compiled->broken),
				 "channel \"%s\" is misconfigured: %s", row->name, edata->message);
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("paysync channel \"%s\" is misconfigured", row->name),
				 errdetail("%s", edata->message),
				 errhint("Its payments get an error answer until the row is fixed; UPDATE paysync.channels runs the checks.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
	return compiled;
}

/*
 * Whether a compiled channel has a limit of its own that a claim must
 * apply: a cap in flight, a rate, or a request timeout (its claim time).
 */
static bool
channel_has_limits(const ChannelState *state)
{
	const ChannelConfig *config = state->compiled ? state->compiled->config : NULL;

	return config != NULL &&
		(config->max_inflight > 0 || config->max_rps > 0 || config->timeout_ms > 0);
}

/* The state of channel name, or NULL. */
static ChannelState *
channel_find(const char *name)
{
	char		key[NAMEDATALEN] = {0};

	if (channel_table == NULL || strlen(name) >= NAMEDATALEN)
		return NULL;
	strlcpy(key, name, sizeof(key));
	return (ChannelState *) hash_search(channel_table, key, HASH_FIND, NULL);
}

/*
 * The compiled channel of state, compiled now if it was not yet (a
 * transaction must be open).
 */
static CompiledChannel *
channel_compiled(ChannelState *state)
{
	if (state->compiled == NULL)
	{
		state->compiled = compile_channel(&state->row);
		if (channel_has_limits(state) && !state->in_limited)
		{
			if (limited_len == limited_cap)
			{
				limited_cap = Max(limited_cap * 2, 16);
				limited_channels = limited_channels ?
					repalloc(limited_channels, sizeof(ChannelState *) * limited_cap) :
					MemoryContextAlloc(checker_context, sizeof(ChannelState *) * limited_cap);
			}
			limited_channels[limited_len++] = state;
			state->in_limited = true;
		}
	}
	return state->compiled;
}

/*
 * Loads the channel rows if they changed since they were last loaded (or
 * always, without the preload), and notes the new and changed ones.  They
 * are compiled when a payment of theirs is first claimed; a changed
 * channel with checks under way is compiled again at once, so that those
 * checks go on with the new row.
 */
static void
refresh_channels(void)
{
	ChannelRow *rows;
	int			n;
	uint64		generation = politeness_channels_generation();
	MemoryContext rows_context;
	MemoryContext old;

	if (generation != 0 && generation == channels_generation)
		return;
	/* not scratch_context: the claim may call this with its rows there */
	rows_context = AllocSetContextCreate(CurrentMemoryContext, "paysync channel rows",
										 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(rows_context);
	if (channel_table == NULL)
	{
		HASHCTL		info = {0};

		info.keysize = NAMEDATALEN;
		info.entrysize = sizeof(ChannelState);
		info.hcxt = checker_context;
		channel_table = hash_create("paysync channels", 64, &info,
									HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	/* read the generation first: a change committed after it is seen next time */
	n = storage_load_channels(&rows);
	for (int i = 0; i < n; i++)
	{
		char	   *source = psprintf("%s\n%s\n%s", rows[i].driver, rows[i].base_url,
									  rows[i].options);
		char		key[NAMEDATALEN] = {0};
		ChannelState *state;
		bool		found;

		if (strlen(rows[i].name) >= NAMEDATALEN)
			continue;			/* cannot be: the table's check allows 63 */
		strlcpy(key, rows[i].name, sizeof(key));
		state = hash_search(channel_table, key, HASH_ENTER, &found);
		if (found && strcmp(state->source, source) == 0)
			continue;
		if (!found)
		{
			char		name[NAMEDATALEN];

			memcpy(name, state->name, NAMEDATALEN);
			memset(state, 0, sizeof(ChannelState));
			memcpy(state->name, name, NAMEDATALEN);
			state->shared = politeness_entry(state->name);
			state->next = channels;
			channels = state;
			channel_count++;
		}
		else
		{
			pfree(state->source);
			pfree(state->row.name);
			pfree(state->row.driver);
			pfree(state->row.base_url);
			pfree(state->row.options);
			if (state->compiled)
			{
				state->compiled->retired = true;
				compiled_release(state->compiled);
				state->compiled = NULL;
			}
		}
		state->source = MemoryContextStrdup(checker_context, source);
		state->row.name = MemoryContextStrdup(checker_context, rows[i].name);
		state->row.driver = MemoryContextStrdup(checker_context, rows[i].driver);
		state->row.base_url = MemoryContextStrdup(checker_context, rows[i].base_url);
		state->row.options = MemoryContextStrdup(checker_context, rows[i].options);
		if (state->in_flight > 0)
			(void) channel_compiled(state);
	}
	channels_generation = generation;
	MemoryContextSwitchTo(old);
	MemoryContextDelete(rows_context);
}

/* The request timeout of a compiled channel. */
static int
channel_timeout_ms(const CompiledChannel *compiled)
{
	if (compiled->config && compiled->config->timeout_ms > 0)
		return compiled->config->timeout_ms;
	return paysync_request_timeout_ms;
}

/*
 * The cap of a channel's own on requests in flight; 0 if it has none (or
 * is not compiled yet).
 */
static int
channel_cap(const ChannelState *channel)
{
	return (channel->compiled && channel->compiled->config) ?
		channel->compiled->config->max_inflight : 0;
}

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
static bool
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
static ChannelSlots
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
static ChannelSlots
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

/* Adds an answer to those waiting to be recorded (strings copied). */
static void
answer_add(const Check *check, const CheckAnswer *answer)
{
	MemoryContext old = MemoryContextSwitchTo(answers_context);
	RecordedAnswer *a;

	if (answers_len == answers_cap)
	{
		answers_cap = Max(answers_cap * 2, 64);
		answers = answers ? repalloc(answers, sizeof(RecordedAnswer) * answers_cap) :
			palloc(sizeof(RecordedAnswer) * answers_cap);
	}
	if (answers_len == 0)
		oldest_answer_at = GetCurrentTimestamp();
	a = &answers[answers_len++];
	a->payment_id = pstrdup(check->payment_id);
	a->attempts = check->attempts;
	a->status = answer->is_error ? NULL : answer->status;
	Assert(a->status == NULL || answer_status_allowed(a->status, check->kind));
	a->channel_status = NULL;
	if (!answer->is_error && answer->channel_status)
	{
		/* the channel's word, cut to a size that always fits a NOTIFY */
		int			len = strlen(answer->channel_status);

		len = pg_mbcliplen(answer->channel_status, len, CHANNEL_STATUS_MAX_BYTES);
		a->channel_status = pnstrdup(answer->channel_status, len);
	}
	a->error = answer->is_error ? pstrdup(answer->error) : NULL;
	a->retry_after_s = answer->retry_after_s > INT_MAX ? INT_MAX : (int32) answer->retry_after_s;
	a->has_paid_amount = !answer->is_error && answer->has_paid_amount;
	a->paid_amount_minor = answer->paid_amount_minor;
	a->paid_currency = (a->has_paid_amount && answer->paid_currency[0]) ?
		pstrdup(answer->paid_currency) : NULL;
	a->is_close = (check->kind == CHECK_CLOSE);
	a->close_on_expiry = check->channel->compiled->config &&
		check->channel->compiled->config->close_on_expiry;
	MemoryContextSwitchTo(old);
}

/*
 * Sets the latches of the other workers (and this one's: harmless), for a
 * slot in flight given back or a channel resumed, whatever their planned
 * wake-up: one of them may be waiting for it.  Nothing with one worker.
 */
static void
wake_other_workers(void)
{
	if (paysync_workers > 1)
		stats_wake_worker_for(DT_NOBEGIN + 1);
}

/* Gives back the shared slots a check holds. */
static void
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
static bool
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

/* Frees a check that has been answered, releasing its channel slot. */
static void
check_done(Check *check)
{
	ChannelState *channel = check->channel;

	if (check->kind != CHECK_TOKEN)
	{
		Assert(channel->in_flight > 0);
		Assert(check->compiled == NULL || channel->requests > 0);
		channel->in_flight--;
		if (check->compiled)
			channel->requests--;
		if (channel->at_cap)
		{
			channel->at_cap = false;
			slot_freed_for_capped = true;
		}
		check_release_slots(check);
		if (check->probe)
		{
			/* ended unanswered: the next probe need not wait for it to lapse */
			breaker_probe_dropped(channel->shared);
			channel->probing = false;
		}
	}
	if (check->compiled)
	{
		Assert(check->compiled->refs > 0);
		check->compiled->refs--;
		compiled_release(check->compiled);
	}
	if (check->payment_id)
		pfree(check->payment_id);
	pfree(check);
}

/*
 * The state of a claimed payment's channel; a channel committed after the
 * rows were loaded is loaded now.
 */
static ChannelState *
claimed_channel(const char *name)
{
	ChannelState *channel = channel_find(name);

	if (channel == NULL)
	{
		MemoryContext old = CurrentMemoryContext;

		channels_generation = 0;
		refresh_channels();
		MemoryContextSwitchTo(old);
		channel = channel_find(name);
		if (channel == NULL)
			elog(ERROR, "paysync: claimed a payment of unknown channel \"%s\"", name);
	}
	return channel;
}

/* Gives back the channels' slots reserved for a claim and not used. */
static void
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
 * Claims (storage_claim) in a subtransaction.  A channel compiled for the
 * first time by this claim had no limits in it (they were not known yet):
 * if it has some, or is paused, the claim is rolled back and made again
 * with them.  Returns how many were claimed, *claimed
 * in scratch_context.
 */
static int
claim_with_known_limits(int limit, bool honour_caps, ClaimedCheck **claimed)
{
	ResourceOwner owner = CurrentResourceOwner;
	int			n = 0;

	for (int attempt = 1; attempt <= 2; attempt++)
	{
		ChannelSlots slots;
		bool		limits_unknown = false;

		MemoryContextSwitchTo(scratch_context);
		slots = channel_slots(honour_caps);
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(scratch_context);
		n = storage_claim(limit, &slots, claimed);
		for (int i = 0; i < n; i++)
		{
			ChannelState *channel = claimed_channel((*claimed)[i].channel);

			if (channel->compiled != NULL)
				continue;
			(void) channel_compiled(channel);
			MemoryContextSwitchTo(scratch_context);
			if (channel_has_limits(channel) || channel_paused(channel))
				limits_unknown = true;
		}
		if (!limits_unknown || attempt == 2)
		{
			ReleaseCurrentSubTransaction();
			CurrentResourceOwner = owner;
			break;
		}
		RollbackAndReleaseCurrentSubTransaction();
		CurrentResourceOwner = owner;
		if (honour_caps)
			release_unclaimed_slots();
	}
	MemoryContextSwitchTo(scratch_context);
	return n;
}

/*
 * Claims up to limit due payments into the queue.  With honour_caps, no
 * more per channel than its free in-flight slots (the worker); without, the
 * queue alone keeps each channel within its cap (run_once).  *maybe_more is
 * set when the claim was full, so more may be due right now.
 */
int
checker_claim(int limit, bool honour_caps, bool *maybe_more)
{
	ClaimedCheck *claimed = NULL;
	int			n;
	MemoryContext old = CurrentMemoryContext;

	refresh_channels();
	/* the worker's share of paysync.max_inflight, with the other workers' */
	if (honour_caps)
		limit = politeness_reserve_total(limit, paysync_max_inflight);
	n = limit > 0 ? claim_with_known_limits(limit, honour_caps, &claimed) : 0;
	MemoryContextSwitchTo(checker_context);
	for (int i = 0; i < n; i++)
	{
		Check	   *check = palloc0(sizeof(Check));

		check->kind = claimed[i].closing ? CHECK_CLOSE : CHECK_QUERY;
		check->payment_id = pstrdup(claimed[i].payment_id);
		check->attempts = claimed[i].attempts;
		check->due_at = claimed[i].due_at;
		/* the caller's transaction holds run_once()'s rows to its end */
		check->claimed_until = honour_caps ? claimed[i].claimed_until : DT_NOEND;
		check->channel = claimed_channel(claimed[i].channel);
		(void) channel_compiled(check->channel);
		MemoryContextSwitchTo(checker_context);
		check->channel->in_flight++;
		if (honour_caps)
		{
			/* slots were reserved for capped channels; others count here */
			check->reserved = true;
			check->channel->reserved++;
			total_reserved++;
			if (check->channel->cap_at_claim > 0)
				check->channel->claimed_now++;
			else
				(void) politeness_reserve(check->channel->shared, 1, 0);
		}
		if (queue_len == queue_cap)
		{
			queue_cap = Max(queue_cap * 2, 256);
			queue = queue ? repalloc(queue, sizeof(Check *) * queue_cap) :
				palloc(sizeof(Check *) * queue_cap);
		}
		queue[queue_len++] = check;
	}
	/* give back the slots reserved and not used */
	if (honour_caps)
	{
		release_unclaimed_slots();
		if (limit > n)
			politeness_release_total(limit - n, paysync_max_inflight);
	}
	MemoryContextSwitchTo(old);
	MemoryContextReset(scratch_context);
	*maybe_more = (n == limit && n > 0);
	return n;
}

/*
 * When the next check falls due, leaving out channels that were blocked at
 * the last claim (at their cap: their turn comes when a slot frees; paused
 * or out of rate: when they may go on, which is then the answer if it is
 * earlier).  False if nothing is pending.
 */
bool
checker_next_due(TimestampTz *due_at)
{
	MemoryContext old = MemoryContextSwitchTo(scratch_context);
	TimestampTz unblocked_at;
	ChannelSlots blocked = channels_blocked(&unblocked_at);
	bool		found = storage_next_due(&blocked, due_at);

	MemoryContextSwitchTo(old);
	MemoryContextReset(scratch_context);
	if (unblocked_at != DT_NOEND && (!found || unblocked_at < *due_at))
	{
		*due_at = unblocked_at;
		found = true;
	}
	return found;
}

/*
 * Starts the request for a channel's access token.  The checks waiting for
 * it stay queued.
 */
static void
start_token_request(ChannelState *channel, CompiledChannel *compiled)
{
	MemoryContext old = MemoryContextSwitchTo(checker_context);
	Check	   *fetch = palloc0(sizeof(Check));
	HttpRequest request;
	char		error[200];

	fetch->kind = CHECK_TOKEN;
	fetch->channel = channel;
	MemoryContextSwitchTo(scratch_context);
	memset(&request, 0, sizeof(request));
	compiled->config->driver->build_token_request(compiled->config->driver_config,
												  compiled->config->base_url, &request);
	request.timeout_ms = channel_timeout_ms(compiled);
	request.proxy = compiled->config->proxy;
	request.tls = compiled->config->tls;
	MemoryContextSwitchTo(old);
	if (!http_submit(&request, fetch, error, sizeof(error)))
	{
		token_request_failed(&compiled->token, error);
		pfree(fetch);
		return;
	}
	fetch->compiled = compiled;
	compiled->refs++;
	token_request_started(&compiled->token);
	requests_in_flight++;
}

/*
 * May check start now, as far as its channel's circuit breaker and rate
 * go?  If so, it may have become the paused channel's probe, and it has
 * taken a start of the rate.  If not, next_start_at learns when to try.
 */
static bool
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
 * Starts queued checks, as many as the global cap (paysync.max_inflight)
 * and each channel's allow.  Must run with no transaction open in the
 * worker.  Returns how many started.
 */
int
checker_start_claimed(void)
{
	int			started = 0;
	int			kept = 0;
	MemoryContext old = MemoryContextSwitchTo(scratch_context);
	CompiledChannel *token_failed = NULL;
	TimestampTz now = GetCurrentTimestamp();

	next_start_at = DT_NOEND;
	http_engine_configure(paysync_max_inflight, (size_t) paysync_max_response_kb * 1024);
	for (int i = 0; i < queue_len; i++)
	{
		Check	   *check = queue[i];
		CompiledChannel *compiled = check->channel->compiled;
		HttpRequest request;
		CheckAnswer answer;
		char		error[200];
		const char *token = NULL;
		bool		reserved_here;

		if (requests_in_flight >= paysync_max_inflight ||
			(compiled->config && compiled->config->max_inflight > 0 &&
			 check->channel->requests >= compiled->config->max_inflight))
		{
			queue[kept++] = check;
			continue;
		}

		memset(&answer, 0, sizeof(answer));
		answer.retry_after_s = -1;
		if (compiled->config == NULL)
		{
			answer_error(&answer, "%s", compiled->broken);
			answer_add(check, &answer);
			check_done(check);
			continue;
		}

		if (compiled->config->driver->build_token_request)
		{
			TokenState state = token_state(&compiled->token, now);

			if (state == TOKEN_FETCH)
			{
				start_token_request(check->channel, compiled);
				state = token_state(&compiled->token, now);
			}
			if (state == TOKEN_WAIT)
			{
				queue[kept++] = check;
				continue;
			}
			if (state == TOKEN_FAILED)
			{
				/* the token request failed: these checks are errors */
				answer_error(&answer, "access token request failed: %s",
							 compiled->token.error);
				answer_add(check, &answer);
				check_done(check);
				token_failed = compiled;
				continue;
			}
			Assert(state == TOKEN_READY);
			token = compiled->token.value;
			check->token_generation = compiled->token.generation;
		}

		/*
		 * The request must be over, and its answer recorded, before the
		 * claim lapses, or another checker could ask about the same payment
		 * at the same time.  A check that waited too long (for a token, a
		 * free slot) is dropped unasked: the payment is due again when its
		 * claim lapses, with no error counted.
		 */
		if (now + (int64) (channel_timeout_ms(compiled) + RECORD_ALLOWANCE_MS) * 1000 >
			check->claimed_until)
		{
			elog(DEBUG1, "paysync: the claim on payment \"%s\" is too close to lapsing to start its check",
				 check->payment_id);
			check_done(check);
			continue;
		}

		/* run_once: a free slot shared with the workers; retried soon */
		reserved_here = !check->reserved;
		if (!check_reserve_slots(check))
		{
			next_start_at = Min(next_start_at, now + SLOT_RETRY_MS * INT64CONST(1000));
			queue[kept++] = check;
			continue;
		}
		/* a paused channel: one probe at a time; then the rate (max_rps) */
		if (!politeness_admits(check, now))
		{
			/* a worker's check keeps the slot its claim reserved */
			if (reserved_here)
				check_release_slots(check);
			queue[kept++] = check;
			continue;
		}

		memset(&request, 0, sizeof(request));
		compiled->config->driver->build_request(compiled->config->driver_config,
												compiled->config->base_url,
												check->payment_id, check->kind,
												token, &request);
		request.timeout_ms = channel_timeout_ms(compiled);
		request.proxy = compiled->config->proxy;
		request.tls = compiled->config->tls;
		/* it may wait for a connection as long as its claim allows */
		request.queue_ms = Max((check->claimed_until - now) / 1000 -
							   (channel_timeout_ms(compiled) + RECORD_ALLOWANCE_MS), 1);
		if (!http_submit(&request, check, error, sizeof(error)))
		{
			answer_error(&answer, "%s", error);
			answer_add(check, &answer);
			check_done(check);
			continue;
		}
		check->compiled = compiled;
		compiled->refs++;
		check->channel->requests++;
		requests_in_flight++;
		stats_in_flight(check->channel->name, 1);
		started++;
	}
	queue_len = kept;
	/* the next checks of a channel whose token request failed try again */
	if (token_failed)
		token_retry(&token_failed->token);
	MemoryContextSwitchTo(old);
	MemoryContextReset(scratch_context);
	return started;
}

/*
 * Runs the driver's interpret().  An ERROR it raises (the JSON parser's
 * stack depth check on a hostile answer, say) becomes an error answer, not
 * the end of the worker: interpret() only parses and allocates, so there is
 * nothing to clean up but the error state.  A cancel is passed on.
 */
static void
interpret_safely(const ChannelConfig *config, CheckKind kind, const char *payment_id,
				 const HttpResult *result, CheckAnswer *answer)
{
	MemoryContext context = CurrentMemoryContext;

	PG_TRY();
	{
		config->driver->interpret(config->driver_config, kind, payment_id, result, answer);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(context);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			PG_RE_THROW();
		FlushErrorState();
		memset(answer, 0, sizeof(*answer));
		answer->retry_after_s = -1;
		answer_error(answer, "the answer could not be read: %s", edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/*
 * Tells the channel's circuit breaker and rate about an answer: no answer
 * at all, a 5xx or a 429 is trouble (one more error in a row, which may
 * pause the channel); anything else is a good answer (which ends a pause).
 * A 429 also halves the rate for a while.  A pause and a resume each get
 * one LOG line, from the one worker whose answer made the change.
 */
static void
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

/* Turns finished requests into answers. */
static void
collect_answers(void)
{
	void	   *tag;
	HttpResult	result;

	while (http_next_done(&tag, &result))
	{
		Check	   *check = (Check *) tag;
		CompiledChannel *compiled = check->compiled;
		const ChannelConfig *config = compiled->config;
		CheckAnswer answer;
		MemoryContext old = MemoryContextSwitchTo(scratch_context);

		Assert(config != NULL && requests_in_flight > 0);

		if (check->kind == CHECK_TOKEN)
		{
			char	   *token = NULL;
			int			expires_in_s = 0;
			char		error[200] = "";

			if (config->driver->interpret_token(config->driver_config, &result, &token,
												&expires_in_s, error, sizeof(error)))
				token_received(&compiled->token, compiled->context, token,
							   expires_in_s, GetCurrentTimestamp());
			else
				token_request_failed(&compiled->token, error);
			MemoryContextSwitchTo(old);
			MemoryContextReset(scratch_context);
			http_result_free(&result);
			requests_in_flight--;
			check_done(check);
			continue;
		}

		memset(&answer, 0, sizeof(answer));
		answer.retry_after_s = -1;
		interpret_safely(config, check->kind, check->payment_id, &result, &answer);
		stats_check_done(check->channel->name, answer.is_error, result.elapsed_ms,
						 answer.is_error ? answer.error : NULL);
		count_for_politeness(check, config, &result, &answer);
		/*
		 * a refused token is dropped, unless a newer one came meanwhile: the
		 * retry fetches a new one
		 */
		if (answer.credentials_rejected)
			token_refused(&compiled->token, check->token_generation);
		answer_add(check, &answer);
		MemoryContextSwitchTo(old);
		MemoryContextReset(scratch_context);
		http_result_free(&result);
		requests_in_flight--;
		check_done(check);
	}
}

/*
 * Waits up to timeout_ms (-1: no limit) for the latch, a socket of a
 * request, curl's timer or postmaster death, then makes progress on the
 * requests.  Returns true if the latch was set (it is reset here); the
 * caller checks for interrupts after every wake.
 */
bool
checker_wait(long timeout_ms, uint32 wait_event_info)
{
	WaitEvent	events[3];
	long		curl_timeout = http_timeout_ms();
	bool		latch_set = false;
	int			n;

	if (requests_in_flight > 0 && curl_timeout >= 0 &&
		(timeout_ms < 0 || curl_timeout < timeout_ms))
		timeout_ms = curl_timeout;

	n = WaitEventSetWait(wait_set, timeout_ms, events, lengthof(events), wait_event_info);
	for (int i = 0; i < n; i++)
		if (events[i].events & WL_LATCH_SET)
			latch_set = true;
	if (latch_set)
		ResetLatch(MyLatch);

	if (requests_in_flight > 0)
	{
		http_perform();
		collect_answers();
	}
	return latch_set;
}

/*
 * Records n answers in a subtransaction, counting the final statuses they
 * reached.  False if that failed, with the error message in *failure (the
 * subtransaction rolled back); a cancel is passed on.
 */
static bool
record_in_subtransaction(const RecordedAnswer *batch, int n, char **failure)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	FinalCount *volatile finals = NULL;
	volatile int n_finals = 0;
	volatile bool recorded = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		FinalCount *counted;

		n_finals = storage_record(batch, n, &counted);
		finals = counted;
		ReleaseCurrentSubTransaction();
		recorded = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		*failure = pstrdup(edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
	for (int i = 0; i < n_finals; i++)
		stats_final(finals[i].channel, finals[i].status, finals[i].count);
	return recorded;
}

/*
 * One answer that could not be recorded becomes an error on its own
 * payment, so the rest of its batch is not lost with it.  If even that
 * cannot be recorded, the answer is dropped: the payment is checked again
 * when its claim lapses.
 */
static void
record_alone(RecordedAnswer *answer)
{
	char	   *failure = NULL;
	char	   *message;

	if (record_in_subtransaction(answer, 1, &failure))
		return;
	message = psprintf("the answer could not be recorded: %s", failure);
	message[pg_mbcliplen(message, strlen(message), RECORD_ERROR_MAX_BYTES)] = '\0';
	ereport(LOG,
			(errmsg("paysync could not record the answer for payment \"%s\"",
					answer->payment_id),
			 errdetail("%s", failure),
			 errhint("The payment gets an error answer instead, and is checked again.")));
	answer->status = NULL;
	answer->channel_status = NULL;
	answer->error = message;
	answer->has_paid_amount = false;
	answer->paid_currency = NULL;
	answer->retry_after_s = -1;
	if (!record_in_subtransaction(answer, 1, &failure))
		ereport(LOG,
				(errmsg("paysync could not record an error for payment \"%s\" either",
						answer->payment_id),
				 errdetail("%s", failure),
				 errhint("It is checked again when its claim lapses.")));
}

/*
 * Records up to limit waiting answers in the current transaction, all in
 * one statement; if that fails, answer by answer, so that one answer that
 * cannot be recorded costs only its own payment.  Returns how many answers
 * were handled.
 */
int
checker_record(int limit)
{
	int			n = Min(limit, answers_len);
	char	   *failure = NULL;

	Assert(n >= 0 && answers_len <= answers_cap);
	if (n == 0)
		return 0;
	if (!record_in_subtransaction(answers, n, &failure))
	{
		ereport(LOG,
				(errmsg("paysync could not record a batch of %d answers, recording them one by one", n),
				 errdetail("%s", failure)));
		stats_worker_error(failure);
		for (int i = 0; i < n; i++)
			record_alone(&answers[i]);
	}
	memmove(answers, answers + n, sizeof(RecordedAnswer) * (answers_len - n));
	answers_len -= n;
	if (answers_len == 0)
		checker_discard_failed_answers();
	return n;
}

/* Drops the answers waiting to be recorded: their claims will lapse. */
void
checker_discard_failed_answers(void)
{
	MemoryContextReset(answers_context);
	answers = NULL;
	answers_len = answers_cap = 0;
	oldest_answer_at = 0;
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

/* Drops everything: queued checks, requests in flight, answers. */
void
checker_discard_all(void)
{
	if (checker_context == NULL)
		return;
	for (ChannelState *c = channels; c; c = c->next)
		if (c->requests > 0)
			stats_in_flight(c->name, -c->requests);
	checker_release_shared();
	http_cancel_all();
	requests_in_flight = 0;
	queue_len = 0;
	channels = NULL;
	channel_count = 0;
	channel_table = NULL;
	limited_channels = NULL;
	limited_len = limited_cap = 0;
	claim_walk = NULL;
	claim_walk_len = claim_walk_cap = 0;
	channels_generation = 0;
	queue = NULL;
	queue_cap = 0;
	MemoryContextReset(checker_context);
	checker_discard_failed_answers();
}

int
checker_answers_waiting(void)
{
	return answers_len;
}

/* When the oldest answer waiting to be recorded came (0 if none waits). */
TimestampTz
checker_oldest_answer_at(void)
{
	return answers_len > 0 ? oldest_answer_at : 0;
}

int
checker_queued(void)
{
	return queue_len;
}

int
checker_in_flight(void)
{
	return requests_in_flight;
}

/*
 * Free places for new requests under paysync.max_inflight: this process's
 * own, and, in a worker, those the other workers leave.
 */
int
checker_free_slots(void)
{
	int			free_here = Max(paysync_max_inflight - requests_in_flight - queue_len, 0);

	return Min(free_here, politeness_free_total(paysync_max_inflight));
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

/* True (once) if a channel that was at its cap has had a slot freed. */
bool
checker_slot_freed_for_capped(void)
{
	bool		freed = slot_freed_for_capped;

	slot_freed_for_capped = false;
	return freed;
}
