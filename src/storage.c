/*
 * storage.c
 *		Every SQL statement the checker and the worker run, through SPI with
 *		plans kept for the life of the process.  The caller owns the transaction: the
 *		worker wraps each call in a short transaction of its own, run_once()
 *		runs in its caller's.  Nothing here touches the network.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "storage.h"

/*
 * The state machine of payments and refunds is SQL of the installed
 * extension script (paysync._claim, paysync._record_answers): these
 * statements only call it, and know nothing of its rules.
 */
static const char *claim_sql =
"SELECT payment_id, channel, attempts, due_at, claimed_until, closing, refund_id"
" FROM paysync._claim($1, $2, $3, $4, $5)";

/*
 * When the next check falls due, over enabled channels but the blocked
 * ones: the first row of payments_next_check_idx and of
 * refunds_next_check_idx that is not theirs ("pending" said as
 * finalized_at IS NULL, the indexes' own predicate: see "Pending, spelt
 * three ways" in paysync--0.2--0.3.sql).
 */
static const char *next_due_sql =
"SELECT least("
" (SELECT p.next_check_at FROM paysync.payments p"
"  JOIN paysync.channels c ON c.name = p.channel AND c.enabled"
"  WHERE p.finalized_at IS NULL AND p.next_check_at IS NOT NULL"
"    AND p.channel <> ALL ($1)"
"  ORDER BY p.next_check_at LIMIT 1),"
" (SELECT r.next_check_at FROM paysync.refunds r"
"  JOIN paysync.channels c ON c.name = r.channel AND c.enabled"
"  WHERE r.finalized_at IS NULL AND r.next_check_at IS NOT NULL"
"    AND r.channel <> ALL ($1)"
"  ORDER BY r.next_check_at LIMIT 1))";

static const char *channels_sql =
"SELECT name, driver, base_url, options::text FROM paysync.channels";

/* The answers go over as parallel arrays, zipped into paysync._answer rows. */
static const char *record_sql =
"SELECT channel, status::text, payments"
" FROM paysync._record_answers(ARRAY("
"   SELECT ROW(a.*)::paysync._answer"
"   FROM unnest($1::text[], $2::int[], $3::text[]::paysync.payment_status[],"
"               $4::text[], $5::text[], $6::int[], $7::int8[], $8::text[],"
"               $9::bool[], $10::bool[], $11::text[]) a))";

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr channels_plan = NULL;
static SPIPlanPtr record_plan = NULL;

/* Prepares sql once per process and keeps the plan. */
static SPIPlanPtr
kept_plan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		SPIPlanPtr	prepared = SPI_prepare(sql, nargs, argtypes);

		if (prepared == NULL)
			elog(ERROR, "paysync: SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		SPI_keepplan(prepared);
		*plan = prepared;
	}
	return *plan;
}

/* A text[] of n strings. */
static Datum
text_array(char **items, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = CStringGetTextDatum(items[i]);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* A text[] of n strings, some NULL. */
static Datum
nullable_text_array(const char *const *items, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		nulls[i] = (items[i] == NULL);
		elems[i] = nulls[i] ? (Datum) 0 : CStringGetTextDatum(items[i]);
	}
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs,
											  TEXTOID, -1, false, TYPALIGN_INT));
}

/* An int[] of n values; negative ones are NULL when negative_is_null. */
static Datum
int_array(const int32 *values, int n, bool negative_is_null)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1] = {n};
	int			lbs[1] = {1};

	for (int i = 0; i < n; i++)
	{
		nulls[i] = negative_is_null && values[i] < 0;
		elems[i] = Int32GetDatum(values[i]);
	}
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs,
											  INT4OID, 4, true, TYPALIGN_INT));
}

/*
 * Claims up to limit due payments, no more of a limited channel in slots
 * than its free slots.  Returns how many, with *claimed allocated in the
 * caller's context.
 */
int
storage_claim(int limit, const ChannelSlots *slots, ClaimedCheck **claimed)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			argtypes[5] = {INT4OID, INT4OID, TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID};
	Datum		args[5];
	int			n;

	SPI_connect();
	args[0] = Int32GetDatum(limit);
	args[1] = Int32GetDatum(slots->default_claim_ms);
	args[2] = text_array(slots->names, slots->n);
	args[3] = int_array(slots->claim_ms, slots->n, true);
	args[4] = int_array(slots->free_slots, slots->n, true);
	if (SPI_execute_plan(kept_plan(&claim_plan, claim_sql, 5, argtypes),
						 args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "paysync: claim failed");

	n = (int) SPI_processed;
	*claimed = MemoryContextAllocZero(caller, sizeof(ClaimedCheck) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		(*claimed)[i].payment_id = MemoryContextStrdup(caller, SPI_getvalue(tuple, desc, 1));
		(*claimed)[i].channel = MemoryContextStrdup(caller, SPI_getvalue(tuple, desc, 2));
		(*claimed)[i].attempts = DatumGetInt32(SPI_getbinval(tuple, desc, 3, &isnull));
		(*claimed)[i].due_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 4, &isnull));
		(*claimed)[i].claimed_until = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 5, &isnull));
		(*claimed)[i].closing = DatumGetBool(SPI_getbinval(tuple, desc, 6, &isnull));
		(void) SPI_getbinval(tuple, desc, 7, &isnull);
		(*claimed)[i].refund_id = isnull ? NULL :
			MemoryContextStrdup(caller, SPI_getvalue(tuple, desc, 7));
	}
	SPI_finish();
	return n;
}

/*
 * Finds when the next check falls due, ignoring the blocked channels
 * (those in full).  False if no payment is pending.
 */
bool
storage_next_due(const ChannelSlots *full, TimestampTz *due_at)
{
	Oid			argtypes[1] = {TEXTARRAYOID};
	Datum		args[1];
	bool		isnull = true;

	SPI_connect();
	args[0] = text_array(full->names, full->n);
	if (SPI_execute_plan(kept_plan(&next_due_plan, next_due_sql, 1, argtypes),
						 args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "paysync: next due query failed");
	if (SPI_processed == 1)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			*due_at = DatumGetTimestampTz(d);
	}
	SPI_finish();
	return !isnull;
}

/* Loads every channel row; returns how many, *rows in the caller's context. */
int
storage_load_channels(ChannelRow **rows)
{
	MemoryContext caller = CurrentMemoryContext;
	int			n;

	SPI_connect();
	if (SPI_execute_plan(kept_plan(&channels_plan, channels_sql, 0, NULL),
						 NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "paysync: loading channels failed");
	n = (int) SPI_processed;
	*rows = MemoryContextAllocZero(caller, sizeof(ChannelRow) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		(*rows)[i].name = MemoryContextStrdup(caller, SPI_getvalue(tuple, desc, 1));
		(*rows)[i].driver = MemoryContextStrdup(caller, SPI_getvalue(tuple, desc, 2));
		(*rows)[i].base_url = MemoryContextStrdup(caller, SPI_getvalue(tuple, desc, 3));
		(*rows)[i].options = MemoryContextStrdup(caller, SPI_getvalue(tuple, desc, 4));
	}
	SPI_finish();
	return n;
}

/*
 * Records n answers in one statement; returns how many (channel, final
 * status) pairs were reached, with their counts in *finals (caller's
 * context).
 */
int
storage_record(const RecordedAnswer *answers, int n, FinalCount **finals)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			argtypes[11] = {TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, INT4ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, BOOLARRAYOID, BOOLARRAYOID,
	TEXTARRAYOID};
	Datum		args[11];
	const char **ids = palloc(sizeof(char *) * n);
	const char **refund_ids = palloc(sizeof(char *) * n);
	const char **statuses = palloc(sizeof(char *) * n);
	const char **channel_statuses = palloc(sizeof(char *) * n);
	const char **errors = palloc(sizeof(char *) * n);
	const char **currencies = palloc(sizeof(char *) * n);
	int32	   *attempts = palloc(sizeof(int32) * n);
	int32	   *retry_after = palloc(sizeof(int32) * n);
	Datum	   *amounts = palloc(sizeof(Datum) * n);
	bool	   *amount_nulls = palloc(sizeof(bool) * n);
	Datum	   *is_close = palloc(sizeof(Datum) * n);
	Datum	   *close_on_expiry = palloc(sizeof(Datum) * n);
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int			rows;

	*finals = NULL;
	if (n == 0)
		return 0;
	for (int i = 0; i < n; i++)
	{
		ids[i] = answers[i].payment_id;
		refund_ids[i] = answers[i].refund_id;
		statuses[i] = answers[i].status;
		channel_statuses[i] = answers[i].channel_status;
		errors[i] = answers[i].error;
		currencies[i] = answers[i].paid_currency;
		attempts[i] = answers[i].attempts;
		retry_after[i] = answers[i].retry_after_s;
		amounts[i] = Int64GetDatum(answers[i].paid_amount_minor);
		amount_nulls[i] = !answers[i].has_paid_amount;
		is_close[i] = BoolGetDatum(answers[i].is_close);
		close_on_expiry[i] = BoolGetDatum(answers[i].close_on_expiry);
	}

	SPI_connect();
	args[0] = nullable_text_array(ids, n);
	args[1] = int_array(attempts, n, false);
	args[2] = nullable_text_array(statuses, n);
	args[3] = nullable_text_array(channel_statuses, n);
	args[4] = nullable_text_array(errors, n);
	args[5] = int_array(retry_after, n, true);
	args[6] = PointerGetDatum(construct_md_array(amounts, amount_nulls, 1, dims, lbs,
												 INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[7] = nullable_text_array(currencies, n);
	args[8] = PointerGetDatum(construct_array(is_close, n, BOOLOID, 1, true, TYPALIGN_CHAR));
	args[9] = PointerGetDatum(construct_array(close_on_expiry, n, BOOLOID, 1, true, TYPALIGN_CHAR));
	args[10] = nullable_text_array(refund_ids, n);

	if (SPI_execute_plan(kept_plan(&record_plan, record_sql, 11, argtypes),
						 args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "paysync: recording answers failed");
	rows = (int) SPI_processed;
	*finals = MemoryContextAllocZero(caller, sizeof(FinalCount) * Max(rows, 1));
	for (int i = 0; i < rows; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		(*finals)[i].channel = MemoryContextStrdup(caller, SPI_getvalue(tuple, desc, 1));
		(*finals)[i].status = MemoryContextStrdup(caller, SPI_getvalue(tuple, desc, 2));
		(*finals)[i].count = DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull));
	}
	SPI_finish();
	return rows;
}

/*
 * The installed version of extension paysync in this database
 * (pg_extension.extversion), palloc'd in the caller's context, or NULL if
 * the extension is not installed.
 */
char *
storage_extension_version(void)
{
	static SPIPlanPtr version_plan = NULL;
	MemoryContext caller = CurrentMemoryContext;
	char	   *version = NULL;

	SPI_connect();
	if (SPI_execute_plan(kept_plan(&version_plan,
								   "SELECT extversion FROM pg_catalog.pg_extension"
								   " WHERE extname = 'paysync'", 0, NULL),
						 NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "paysync: reading the extension's version failed");
	if (SPI_processed == 1)
	{
		char	   *text = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (text != NULL)
			version = MemoryContextStrdup(caller, text);
	}
	SPI_finish();
	return version;
}

/*
 * The notification queue's usage now (*usage) and, as text for the log,
 * the max_sessions client sessions with the oldest open transactions, in
 * any database: the likely holders of the queue's tail, since a listening
 * session reads its notifications only between transactions.  The text is
 * palloc'd in the caller's context; "none" if no client session is in a
 * transaction.
 */
char *
storage_notify_queue_holders(int max_sessions, double *usage)
{
	static SPIPlanPtr holders_plan = NULL;
	static const char *holders_sql =
	"SELECT pg_catalog.pg_notification_queue_usage(),"
	" (SELECT pg_catalog.string_agg(pg_catalog.format("
	"     'pid %s (application_name \"%s\", %s, transaction started %s)',"
	"     a.pid, a.application_name, a.state, a.xact_start), '; '"
	"     ORDER BY a.xact_start)"
	"  FROM (SELECT pid, application_name, state, xact_start"
	"        FROM pg_catalog.pg_stat_activity"
	"        WHERE backend_type = 'client backend' AND xact_start IS NOT NULL"
	"          AND pid <> pg_catalog.pg_backend_pid()"
	"        ORDER BY xact_start LIMIT $1) a)";
	MemoryContext caller = CurrentMemoryContext;
	Oid			argtypes[1] = {INT4OID};
	Datum		args[1];
	char	   *holders = NULL;
	bool		isnull;

	SPI_connect();
	args[0] = Int32GetDatum(max_sessions);
	if (SPI_execute_plan(kept_plan(&holders_plan, holders_sql, 1, argtypes),
						 args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "paysync: reading the notification queue's holders failed");
	*usage = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										  1, &isnull));
	holders = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	holders = MemoryContextStrdup(caller, holders ? holders : "none");
	SPI_finish();
	return holders;
}
