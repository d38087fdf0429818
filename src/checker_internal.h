/*
 * checker_internal.h
 *		What the files of the check pipeline share, and nothing outside
 *		them uses (checker.h is the pipeline's interface):
 *
 *		checker.c          the pipeline: starting requests, collecting and
 *		                   interpreting answers, waiting, dropping everything
 *		checker_channels.c compiled channels and their refresh
 *		checker_slots.c    slot reservation: what a claim may take of each
 *		                   channel, the shared slots a check holds, and the
 *		                   breaker and rate at a check's start
 *		checker_queue.c    the claim and answer queue: claimed checks
 *		                   waiting to start, answers waiting to be recorded,
 *		                   and their recording
 */
#ifndef PAYSYNC_CHECKER_INTERNAL_H
#define PAYSYNC_CHECKER_INTERNAL_H

#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "channel.h"
#include "driver.h"
#include "http.h"
#include "politeness.h"
#include "storage.h"
#include "token.h"

/* How soon run_once() tries again for a slot the workers hold. */
#define SLOT_RETRY_MS 20

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
	CheckKind	kind;			/* query, close, refund, or a token request */
	char	   *payment_id;		/* NULL for CHECK_TOKEN; a refund's payment */
	char	   *refund_id;		/* for CHECK_REFUND only */
	int32		attempts;
	TimestampTz due_at;
	TimestampTz claimed_until;	/* a request must end before the claim lapses */
	ChannelState *channel;
	CompiledChannel *compiled;	/* set when the request starts */
	uint32		token_generation;	/* of the token the request carried */
	bool		reserved;		/* holds a shared slot in flight */
	bool		probe;			/* the request is its paused channel's probe */
} Check;

/* checker.c: memory, requests in flight, and the pipeline's own steps */
extern MemoryContext checker_context;	/* channels, checks */
extern MemoryContext answers_context;	/* answers until recorded */
extern MemoryContext scratch_context;	/* reset after each use */
extern int	requests_in_flight;
extern void check_done(Check *check);

/* checker_channels.c */
extern ChannelState *channels;	/* all of them, in a list */
extern int	channel_count;
extern ChannelState **limited_channels;
extern int	limited_len;
extern void refresh_channels(void);
extern ChannelState *channel_find(const char *name);
extern CompiledChannel *channel_compiled(ChannelState *state);
extern ChannelState *claimed_channel(const char *name);
extern bool channel_has_limits(const ChannelState *state);
extern void compiled_release(CompiledChannel *compiled);
extern int	channel_timeout_ms(const CompiledChannel *compiled);
extern int	channel_cap(const ChannelState *channel);
extern void channels_forget(void);

/* checker_slots.c */
extern int	total_reserved;
extern TimestampTz next_start_at;
extern bool slot_freed_for_capped;
extern ChannelSlots channel_slots(bool honour_caps);
extern ChannelSlots channels_blocked(TimestampTz *unblocked_at);
extern bool channel_paused(const ChannelState *c);
extern void release_unclaimed_slots(void);
extern bool check_reserve_slots(Check *check);
extern void check_release_slots(Check *check);
extern bool politeness_admits(Check *check, TimestampTz now);
extern void count_for_politeness(Check *check, const ChannelConfig *config,
								 const HttpResult *result, const CheckAnswer *answer);
extern void wake_other_workers(void);
extern void slots_forget(void);

/* checker_queue.c */
extern Check **queue;			/* claimed, not yet started */
extern int	queue_len;
extern void answer_add(const Check *check, const CheckAnswer *answer);
extern void queue_forget(void);

#endif							/* PAYSYNC_CHECKER_INTERNAL_H */
