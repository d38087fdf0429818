/*
 * checker_channels.c
 *		Compiled channels and their refresh, for the check pipeline.  Owns
 *		what the checker knows of each channel (ChannelState): its row,
 *		loaded again only after a commit changed paysync.channels
 *		(politeness_channels_generation), compiled when a payment or refund
 *		of it is first claimed and again when its row changes; a compiled
 *		channel lives until no request in flight uses it.  Also owns the
 *		list of channels with limits of their own, the only ones (with the
 *		paused ones) a claim looks at.
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

/* All the channels, in a list and by name, and the generation of their rows. */
ChannelState *channels = NULL;
int			channel_count = 0;
static HTAB *channel_table = NULL;
static uint64 channels_generation = 0;

/*
 * The channels a claim must look at, besides the paused ones: those
 * compiled with a limit of their own (max_inflight, max_rps, timeout).
 * The others take the claim's defaults, so a claim's cost follows the
 * channels with limits, not all the channels defined.  A channel stays
 * listed after its row changes (looking at it costs a little, nothing
 * more).
 */
ChannelState **limited_channels = NULL;
int			limited_len = 0;
static int	limited_cap = 0;

/* Frees a compiled channel that is retired and no longer used. */
void
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
bool
channel_has_limits(const ChannelState *state)
{
	const ChannelConfig *config = state->compiled ? state->compiled->config : NULL;

	return config != NULL &&
		(config->max_inflight > 0 || config->max_rps > 0 || config->timeout_ms > 0);
}

/* The state of channel name, or NULL. */
ChannelState *
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
CompiledChannel *
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
void
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
int
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
int
channel_cap(const ChannelState *channel)
{
	return (channel->compiled && channel->compiled->config) ?
		channel->compiled->config->max_inflight : 0;
}

/*
 * The state of a claimed payment's channel; a channel committed after the
 * rows were loaded is loaded now.
 */
ChannelState *
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

/* Forgets every channel (their memory goes with checker_context's reset). */
void
channels_forget(void)
{
	channels = NULL;
	channel_count = 0;
	channel_table = NULL;
	limited_channels = NULL;
	limited_len = limited_cap = 0;
	channels_generation = 0;
}
