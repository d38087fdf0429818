/*
 * checker_queue.c
 *		The claim and answer queue of the check pipeline.  Claiming
 *		(storage_claim, in a subtransaction: made again once if a channel
 *		compiled by it turns out to have limits) puts checks of payments
 *		and refunds in the queue, in due order, each knowing its kind
 *		(query, close or refund), its payment_id and refund_id; the answers
 *		wait in a second queue until they are recorded (storage_record) in
 *		one statement, or answer by answer if that fails.  A transaction
 *		must be open to claim and to record.
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

/* The most of a channel's status word kept in channel_status and events. */
#define CHANNEL_STATUS_MAX_BYTES 256

/* The most of a recording failure kept in last_error. */
#define RECORD_ERROR_MAX_BYTES 200

Check	  **queue = NULL;	/* claimed, not yet started */
int			queue_len = 0;
static int	queue_cap = 0;

static RecordedAnswer *answers = NULL;
static int	answers_len = 0;
static int	answers_cap = 0;
static TimestampTz oldest_answer_at = 0;	/* when the first of them came */

/* Adds an answer to those waiting to be recorded (strings copied). */
void
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
	a->refund_id = check->refund_id ? pstrdup(check->refund_id) : NULL;
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
	a->close_on_expiry = check->kind != CHECK_REFUND &&
		check->channel->compiled->config &&
		check->channel->compiled->config->close_on_expiry;
	MemoryContextSwitchTo(old);
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

		check->kind = claimed[i].refund_id ? CHECK_REFUND :
			claimed[i].closing ? CHECK_CLOSE : CHECK_QUERY;
		check->payment_id = pstrdup(claimed[i].payment_id);
		check->refund_id = claimed[i].refund_id ? pstrdup(claimed[i].refund_id) : NULL;
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

/* Forgets the queued checks (their memory goes with checker_context's reset). */
void
queue_forget(void)
{
	queue = NULL;
	queue_len = queue_cap = 0;
}
