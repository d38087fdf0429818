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
 *		This file runs the pipeline; checker_channels.c owns the compiled
 *		channels, checker_slots.c the slots, breaker and rate, and
 *		checker_queue.c the claim and answer queue (checker_internal.h).
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
#include "checker_internal.h"
#include "driver.h"
#include "http.h"
#include "politeness.h"
#include "stats.h"
#include "storage.h"
#include "token.h"

/*
 * Time a claim must still have, after a request's timeout, for its answer
 * to be recorded before the claim lapses.
 */
#define RECORD_ALLOWANCE_MS 1000

MemoryContext checker_context = NULL;	/* channels, checks */
MemoryContext answers_context = NULL;	/* answers until recorded */
MemoryContext scratch_context = NULL;	/* reset after each use */
static WaitEventSet *wait_set = NULL;

/* Requests in flight from this process, token requests included. */
int			requests_in_flight = 0;

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

/* Frees a check that has been answered, releasing its channel slot. */
void
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
	if (check->refund_id)
		pfree(check->refund_id);
	pfree(check);
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
		if (check->kind == CHECK_REFUND &&
			compiled->config->driver->build_refund_request == NULL)
		{
			answer_error(&answer, "driver \"%s\" cannot query refunds",
						 compiled->config->driver->name);
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
		if (check->kind == CHECK_REFUND)
			compiled->config->driver->build_refund_request(compiled->config->driver_config,
														   compiled->config->base_url,
														   check->payment_id,
														   check->refund_id,
														   token, &request);
		else
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
		/* a refund's answer is about the refund, by the id the channel knows */
		interpret_safely(config, check->kind,
						 check->kind == CHECK_REFUND ? check->refund_id : check->payment_id,
						 &result, &answer);
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

/* After a configuration reload: the system trust store is read again. */
void
checker_settings_reloaded(void)
{
	http_reload_system_trust();
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
	queue_forget();
	channels_forget();
	slots_forget();
	MemoryContextReset(checker_context);
	checker_discard_failed_answers();
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

/* True (once) if a channel that was at its cap has had a slot freed. */
bool
checker_slot_freed_for_capped(void)
{
	bool		freed = slot_freed_for_capped;

	slot_freed_for_capped = false;
	return freed;
}
