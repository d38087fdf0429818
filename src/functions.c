/*
 * functions.c
 *		SQL-callable C functions: run_once(), worker_status() and the
 *		helpers of the SQL functions (channel and schedule checks, a
 *		channel's schedule, the wake-up at commit) and the events trigger,
 *		which sends the NOTIFYs.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/tuplestore.h"
#include "utils/wait_event.h"
#include "utils/timestamp.h"

#include "paysync.h"
#include "channel.h"
#include "checker.h"
#include "politeness.h"
#include "stats.h"

PG_FUNCTION_INFO_V1(paysync_validate_channel);
PG_FUNCTION_INFO_V1(paysync_validate_schedule);
PG_FUNCTION_INFO_V1(paysync_channel_schedule);
PG_FUNCTION_INFO_V1(paysync_wake_worker_at_commit);
PG_FUNCTION_INFO_V1(paysync_run_once);
PG_FUNCTION_INFO_V1(paysync_worker_status);
PG_FUNCTION_INFO_V1(paysync_channel_counters);
PG_FUNCTION_INFO_V1(paysync_events_notify);
PG_FUNCTION_INFO_V1(paysync_channel_pauses);
PG_FUNCTION_INFO_V1(paysync_channels_changed_trigger);

/* _validate_channel(name, driver, base_url, options): ERROR if invalid. */
Datum
paysync_validate_channel(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *driver = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *base_url = text_to_cstring(PG_GETARG_TEXT_PP(2));
	Jsonb	   *options = PG_GETARG_JSONB_P(3);
	bool		name_ok = strlen(name) >= 1 && strlen(name) <= 63 &&
		name[0] >= 'a' && name[0] <= 'z';

	for (const char *p = name; *p && name_ok; p++)
		name_ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_';
	if (!name_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid channel name \"%s\"", name),
				 errhint("A channel name starts with a lower-case letter, then up to 62 lower-case letters, digits or underscores.")));

	channel_compile(name, driver, base_url, options);
	PG_RETURN_VOID();
}

/*
 * _validate_schedule(interval[]): ERROR unless a one-dimensional array
 * indexed from 1 of 1..100 delays in (0, 7 days].  track() reads plan[1] as
 * the first delay, so an array starting at another index is refused too.
 */
Datum
paysync_validate_schedule(PG_FUNCTION_ARGS)
{
	ArrayType  *schedule;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	Interval  **items;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("invalid schedule"),
				 errdetail("The schedule is null.")));
	schedule = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(schedule) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("invalid schedule"),
				 errdetail("The schedule has %d dimensions.", ARR_NDIM(schedule)),
				 errhint("Give a one-dimensional array of intervals, such as '{10s,1min,5min}'.")));
	if (ARR_NDIM(schedule) == 1 && ARR_LBOUND(schedule)[0] != 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("invalid schedule"),
				 errdetail("The schedule's first index is %d, not 1.", ARR_LBOUND(schedule)[0]),
				 errhint("Give an array indexed from 1, such as '{10s,1min,5min}'.")));
	deconstruct_array(schedule, INTERVALOID, sizeof(Interval), false, TYPALIGN_DOUBLE,
					  &elems, &nulls, &n);
	items = palloc0(sizeof(Interval *) * Max(n, 1));
	for (int i = 0; i < n; i++)
		items[i] = nulls[i] ? NULL : DatumGetIntervalP(elems[i]);
	schedule_check(items, n, NULL);
	PG_RETURN_VOID();
}

/*
 * _channel_schedule(channel, options): the channel's schedule, its
 * "schedule" option or the default (see channel_schedule).
 */
Datum
paysync_channel_schedule(PG_FUNCTION_ARGS)
{
	char	   *channel = PG_ARGISNULL(0) ? "" : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *options = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);

	PG_RETURN_ARRAYTYPE_P(channel_schedule(options, channel));
}

/* _wake_worker_at_commit(due_at): see paysync_request_wake. */
Datum
paysync_wake_worker_at_commit(PG_FUNCTION_ARGS)
{
	paysync_request_wake(PG_GETARG_TIMESTAMPTZ(0));
	PG_RETURN_VOID();
}

/*
 * pg_notification_queue_usage(): the fraction of PostgreSQL's notification
 * queue in use.  It first moves the queue's tail up to the slowest
 * listener, so the figure is current.
 */
static double
notification_queue_usage(void)
{
	LOCAL_FCINFO(fcinfo, 0);

	InitFunctionCallInfoData(*fcinfo, NULL, 0, InvalidOid, NULL, NULL);
	return DatumGetFloat8(pg_notification_queue_usage(fcinfo));
}

/*
 * May the events trigger send the NOTIFYs of so many new events?  Not
 * while the notification queue is fuller than paysync.notify_queue_limit:
 * a listener that holds the queue's tail (a session that ran LISTEN and
 * sits in a transaction) would otherwise, once the queue is full, make
 * every commit of a status change fail.  The events are committed all the
 * same; the NOTIFYs skipped (one per event) are counted if the transaction
 * commits, and the worker says so in the log.
 */
static bool
notifications_allowed(int64 events)
{
	bool		skip = notification_queue_usage() > paysync_notify_queue_limit;

	stats_notify_skipping(skip);
	if (skip && events > 0)
		paysync_count_skipped_notifications(events);
	return !skip;
}

/*
 * One new event's NOTIFY payload, its number to send them in order, and
 * whether it is a refund's (sent on paysync.refund_notify_channel).
 */
typedef struct EventNotification
{
	int64		event_id;
	char	   *payload;
	bool		refund;
} EventNotification;

static int
event_notification_cmp(const void *a, const void *b)
{
	int64		x = ((const EventNotification *) a)->event_id;
	int64		y = ((const EventNotification *) b)->event_id;

	return (x > y) - (x < y);
}

/*
 * The number of the column of paysync.events called name; 0 if there is
 * none and it may be missing (refund_id, in a 0.3 schema still being
 * upgraded).
 */
static int
events_column(TupleDesc tupdesc, const char *name, bool missing_ok)
{
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return i + 1;
	}
	if (!missing_ok)
		elog(ERROR, "paysync.events has no column \"%s\"", name);
	return 0;
}

/*
 * The columns of an event's payload, in the order of its keys; the last,
 * refund_id, only in a refund's (a payment's payload is as it was in 0.3).
 */
static const char *const event_payload_keys[] = {
	"event_id", "payment_id", "channel", "status", "previous",
	"channel_status", "source", "refund_id"
};

#define EVENT_PAYLOAD_KEYS lengthof(event_payload_keys)

/*
 * The events trigger (AFTER INSERT ON paysync.events FOR EACH STATEMENT,
 * the new rows as its transition table): sends each new event with NOTIFY
 * on paysync.notify_channel (a refund's on paysync.refund_notify_channel,
 * never on the payments' channel), in event_id order, as the JSON object
 * of the contract (a refund's with "refund_id" too), unless the notification queue is too full (see
 * notifications_allowed).  Every recorded batch runs it, so it is C: in
 * PL/pgSQL its per-row json_build_object and pg_notify cost more than the
 * NOTIFYs themselves.
 */
Datum
paysync_events_notify(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Tuplestorestate *rows;
	TupleDesc	tupdesc;
	TupleTableSlot *slot;
	int			columns[EVENT_PAYLOAD_KEYS];
	Oid			output_functions[EVENT_PAYLOAD_KEYS];
	EventNotification *events;
	int64		n;
	int64		i = 0;
	const char *notify_channel;
	const char *refund_channel;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event) ||
		trigdata->tg_newtable == NULL)
		elog(ERROR, "_events_notify() must be an AFTER INSERT statement trigger with a new table");
	rows = trigdata->tg_newtable;
	n = tuplestore_tuple_count(rows);
	if (n == 0 || !notifications_allowed(n))
		return PointerGetDatum(NULL);

	tupdesc = RelationGetDescr(trigdata->tg_relation);
	for (int k = 0; k < (int) EVENT_PAYLOAD_KEYS; k++)
	{
		bool		varlena;

		columns[k] = events_column(tupdesc, event_payload_keys[k],
								   k == EVENT_PAYLOAD_KEYS - 1);
		if (columns[k] == 0)
			continue;
		getTypeOutputInfo(TupleDescAttr(tupdesc, columns[k] - 1)->atttypid,
						  &output_functions[k], &varlena);
	}

	events = palloc(sizeof(EventNotification) * n);
	slot = MakeSingleTupleTableSlot(tupdesc, &TTSOpsMinimalTuple);
	/* a read pointer of our own: other readers of the new rows keep theirs */
	tuplestore_select_read_pointer(rows,
								   tuplestore_alloc_read_pointer(rows, EXEC_FLAG_REWIND));
	tuplestore_rescan(rows);
	while (i < n && tuplestore_gettupleslot(rows, true, false, slot))
	{
		StringInfoData payload;

		initStringInfo(&payload);
		events[i].event_id = 0;
		events[i].refund = false;
		if (columns[EVENT_PAYLOAD_KEYS - 1] != 0)
		{
			bool		no_refund;

			(void) slot_getattr(slot, columns[EVENT_PAYLOAD_KEYS - 1], &no_refund);
			events[i].refund = !no_refund;
		}
		appendStringInfoChar(&payload, '{');
		for (int k = 0; k < (int) EVENT_PAYLOAD_KEYS; k++)
		{
			bool		isnull;
			Datum		value;

			if (k == EVENT_PAYLOAD_KEYS - 1 && !events[i].refund)
				break;
			value = slot_getattr(slot, columns[k], &isnull);
			if (k > 0)
				appendStringInfoString(&payload, ", ");
			escape_json(&payload, event_payload_keys[k]);
			appendStringInfoString(&payload, " : ");
			if (isnull)
				appendStringInfoString(&payload, "null");
			else if (k == 0)
			{
				events[i].event_id = DatumGetInt64(value);
				appendStringInfo(&payload, INT64_FORMAT, events[i].event_id);
			}
			else
				escape_json(&payload, OidOutputFunctionCall(output_functions[k], value));
		}
		appendStringInfoChar(&payload, '}');
		events[i++].payload = payload.data;
	}
	ExecDropSingleTupleTableSlot(slot);

	qsort(events, i, sizeof(EventNotification), event_notification_cmp);
	notify_channel = (paysync_notify_channel && paysync_notify_channel[0]) ?
		paysync_notify_channel : "paysync";
	refund_channel = (paysync_refund_notify_channel && paysync_refund_notify_channel[0]) ?
		paysync_refund_notify_channel : "paysync_refunds";
	for (int64 j = 0; j < i; j++)
		Async_Notify(events[j].refund ? refund_channel : notify_channel,
					 events[j].payload);
	return PointerGetDatum(NULL);
}

/*
 * run_once(max_checks): the worker's job once, in the calling session.
 * Claims up to max_checks due payments, checks them concurrently and
 * records the answers, all within the caller's transaction (rows claimed
 * stay locked until it ends, so the worker skips them).  Returns how many
 * were checked.  An interrupt drops the requests in flight and rolls back.
 */
Datum
paysync_run_once(PG_FUNCTION_ARGS)
{
	int32		max_checks;
	volatile int checked = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_checks must not be null"),
				 errhint("Pass the most payments to check, at least 1.")));
	max_checks = PG_GETARG_INT32(0);
	if (max_checks < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid max_checks %d", max_checks),
				 errdetail("It must be at least 1.")));

	checker_init();
	checker_discard_all();
	PG_TRY();
	{
		bool		maybe_more;

		checker_claim(max_checks, false, &maybe_more);
		checker_start_claimed();
		while (checker_queued() > 0 || checker_in_flight() > 0)
		{
			long		timeout_ms = 1000;
			TimestampTz start_at;

			/* checks that wait for their channel's breaker or rate */
			if (checker_next_start(&start_at))
			{
				long		secs;
				int			usecs;

				TimestampDifference(GetCurrentTimestamp(), start_at, &secs, &usecs);
				timeout_ms = Min(timeout_ms, secs * 1000 + (usecs + 999) / 1000);
			}
			checker_wait(timeout_ms, PG_WAIT_EXTENSION);
			CHECK_FOR_INTERRUPTS();
			checker_start_claimed();
		}
		while (checker_answers_waiting() > 0)
			checked += checker_record(paysync_batch_size);
	}
	PG_CATCH();
	{
		checker_discard_all();
		PG_RE_THROW();
	}
	PG_END_TRY();
	PG_RETURN_INT32(checked);
}

/* worker_status().state in words */
static const char *const worker_state_names[] = {
	[WORKER_NOT_RUNNING] = "not running",
	[WORKER_RUNNING] = "running",
	[WORKER_IDLE] = "idle",
	[WORKER_WAITING_FOR_EXTENSION] = "waiting for extension",
	[WORKER_DISABLED] = "disabled",
};

/* worker_status()'s columns, the last one (worker) new in 0.3 */
#define WORKER_STATUS_COLUMNS 9

/*
 * Fills values and nulls (WORKER_STATUS_COLUMNS each) with worker_status()'s
 * row on worker number worker, given the queue usage and skipped count
 * (counted false: NULL) that every row shows.
 */
static void
worker_status_row(int worker, double queue_usage, uint64 skipped, bool counted,
				  Datum *values, bool *nulls)
{
	WorkerState state = WORKER_NOT_RUNNING;
	pid_t		pid = 0;
	TimestampTz started_at = 0;
	int			in_flight = 0;
	char		last_error[256] = "";
	TimestampTz last_error_at = 0;

	stats_read_worker(worker, &state, &pid, &started_at, &in_flight,
					  last_error, sizeof(last_error), &last_error_at);
	if (pid == 0)
		state = WORKER_NOT_RUNNING;

	memset(nulls, 0, sizeof(bool) * WORKER_STATUS_COLUMNS);
	values[0] = Int32GetDatum(pid);
	nulls[0] = (state == WORKER_NOT_RUNNING);
	values[1] = CStringGetTextDatum(worker_state_names[state]);
	values[2] = TimestampTzGetDatum(started_at);
	nulls[2] = (state == WORKER_NOT_RUNNING);
	values[3] = Int32GetDatum(state == WORKER_NOT_RUNNING ? 0 : in_flight);
	values[4] = CStringGetTextDatum(last_error);
	nulls[4] = (last_error[0] == '\0');
	values[5] = TimestampTzGetDatum(last_error_at);
	nulls[5] = (last_error[0] == '\0');
	values[6] = Float8GetDatum(queue_usage);
	values[7] = Int64GetDatum((int64) skipped);
	nulls[7] = !counted;
	values[8] = Int32GetDatum(worker);
}

/*
 * worker_status(): one row per worker (1 to paysync.workers), from shared
 * memory, each with the notification queue's usage now and the
 * notifications skipped since the server started.  Without the preload,
 * or for a worker that does not run: state "not running"; without the
 * preload nothing is counted (NULL).  The last column, worker, is the
 * worker's number.
 *
 * Declared as 0.2 declared it (one row of 8 columns, until ALTER EXTENSION
 * UPDATE), it returns worker 1's row without that column.
 */
Datum
paysync_worker_status(PG_FUNCTION_ARGS)
{
	double		queue_usage = notification_queue_usage();
	uint64		skipped = 0;
	bool		skipping = false;
	bool		counted = stats_read_notify(&skipped, &skipping);
	Datum		values[WORKER_STATUS_COLUMNS];
	bool		nulls[WORKER_STATUS_COLUMNS];
	TupleDesc	desc;
	ReturnSetInfo *rsinfo;

	if (!fcinfo->flinfo->fn_retset)
	{
		if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE ||
			desc->natts > WORKER_STATUS_COLUMNS)
			elog(ERROR, "paysync: worker_status must return a row");
		worker_status_row(1, queue_usage, skipped, counted, values, nulls);
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
	}

	InitMaterializedSRF(fcinfo, 0);
	rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	if (rsinfo->setDesc->natts != WORKER_STATUS_COLUMNS)
		elog(ERROR, "paysync: worker_status must return %d columns",
			 WORKER_STATUS_COLUMNS);
	for (int worker = 1; worker <= Min(paysync_workers, PAYSYNC_MAX_WORKERS); worker++)
	{
		worker_status_row(worker, queue_usage, skipped, counted, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * _channel_counters(): the shared-memory counters of each channel, for the
 * view paysync.stats (which adds what it reads from the payments index).
 */
Datum
paysync_channel_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ChannelFigures *figures;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	n = stats_read(&figures);
	for (int i = 0; i < n; i++)
	{
		Datum		values[9];
		bool		nulls[9] = {0};
		ChannelFigures *f = &figures[i];

		values[0] = CStringGetTextDatum(f->name);
		values[1] = Int32GetDatum(f->in_flight);
		values[2] = Int64GetDatum(f->checks_1m);
		values[3] = Int64GetDatum(f->errors_1m);
		values[4] = Float8GetDatum(f->latency_p50_ms);
		nulls[4] = f->latency_p50_ms < 0;
		values[5] = Float8GetDatum(f->latency_p99_ms);
		nulls[5] = f->latency_p99_ms < 0;
		values[6] = Int64GetDatum(f->succeeded_1h);
		values[7] = Int64GetDatum(f->failed_1h);
		values[8] = Int64GetDatum(f->expired_1h);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}


/*
 * _channel_pauses(): the channels whose circuit breaker has paused them and
 * since when, for the view paysync.stats.
 */
Datum
paysync_channel_pauses(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char		(*names)[NAMEDATALEN];
	TimestampTz *paused_since;
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	n = politeness_read_paused(&names, &paused_since);
	for (int i = 0; i < n; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {0};

		values[0] = CStringGetTextDatum(names[i]);
		values[1] = TimestampTzGetDatum(paused_since[i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * _channels_changed(): statement trigger on paysync.channels; the checkers
 * reload their channel rows once the transaction commits.
 */
Datum
paysync_channels_changed_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "paysync: _channels_changed must be called as a trigger");
	paysync_channels_changed();
	return PointerGetDatum(NULL);
}
