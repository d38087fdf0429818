/*
 * storage.c
 *		Every SQL statement the checker runs, through SPI with plans kept for
 *		the life of the process.  The caller owns the transaction: the
 *		worker wraps each call in a short transaction of its own, run_once()
 *		runs in its caller's.  Nothing here touches the network.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "paysync.h"
#include "storage.h"

/*
 * Claim: lock due payments per enabled channel (skipping any another
 * checker holds), at most its free slots, and push next_check_at past the
 * request timeout plus a margin.  That is the claim: if the answer never
 * comes back (crash), the payment is due again once the claim lapses.
 */
static const char *claim_sql =
"WITH cand AS ("
"  SELECT d.payment_id, d.next_check_at AS due_at,"
"         coalesce((c.options->>'timeout_ms')::int, $2) + $5 AS claim_ms"
"  FROM paysync.channels c"
"  CROSS JOIN LATERAL ("
"    SELECT p.payment_id, p.next_check_at"
"    FROM paysync.payments p"
"    WHERE p.channel = c.name AND p.status = 'pending'"
"      AND p.next_check_at <= now()"
"    ORDER BY p.next_check_at"
"    LIMIT least($1, coalesce($4[array_position($3, c.name)], $1))"
"    FOR UPDATE SKIP LOCKED) d"
"  WHERE c.enabled"
"  ORDER BY d.next_check_at"
"  LIMIT $1)"
" UPDATE paysync.payments p"
" SET attempts = p.attempts + 1,"
"     claimed_until = now() + make_interval(secs => cand.claim_ms / 1000.0),"
"     next_check_at = now() + make_interval(secs => cand.claim_ms / 1000.0)"
" FROM cand"
" WHERE p.payment_id = cand.payment_id"
" RETURNING p.payment_id, p.channel, p.attempts, cand.due_at, p.closing";

/* When the next check falls due, over channels not at their cap. */
static const char *next_due_sql =
"SELECT min(d.next_check_at)"
" FROM paysync.channels c"
" CROSS JOIN LATERAL ("
"   SELECT p.next_check_at FROM paysync.payments p"
"   WHERE p.channel = c.name AND p.status = 'pending'"
"   ORDER BY p.next_check_at LIMIT 1) d"
" WHERE c.enabled AND NOT (c.name = ANY ($1))";

static const char *channels_sql =
"SELECT name, driver, base_url, options::text FROM paysync.channels";

static const char *lock_events_sql = "SELECT paysync._lock_events()";

/*
 * Record: apply each answer to its payment if the payment is still pending
 * and still on the same attempt (a report, or a newer claim after this one
 * lapsed, wins), write the event of each status change, all in one
 * statement.  The events trigger sends the NOTIFYs.
 *
 * A status answer: a final one is taken (source poll), except that a
 * "succeeded" whose paid amount or currency differs from the payment's is
 * "failed" with last_error saying so.  "pending" moves to the next step of
 * the schedule; when the schedule is used up with no deadline ahead, or the
 * answer came at or after expires_at, paysync gives up: the payment becomes
 * expired (source expiry), or, on a channel that closes trades it gives up
 * on, it is marked closing and due now, and the answer to that close makes
 * it closed (source expiry) or succeeded (paid meanwhile).  A close answer
 * "pending" (the channel refused the close without saying why: paid or
 * closed meanwhile), or "succeeded" with no amount for a payment that has
 * one, makes it a query again a second later, so the query says which and
 * the amount is checked.  An error:
 * errors + 1, step kept, retried after min(2^(errors-1) s, 5 min) +-20%,
 * or after Retry-After if later; an error never expires a payment.
 */
static const char *record_sql =
"WITH answer AS ("
"  SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[],"
"                       $6::int[], $7::int8[], $8::text[], $9::bool[], $10::bool[])"
"    AS a(payment_id, attempts, status, channel_status, error,"
"         retry_after, paid_amount, paid_currency, is_close, close_on_expiry)"
"), current AS ("
"  SELECT p.payment_id, p.step, p.schedule, p.expires_at, p.amount_minor, p.currency,"
"         a.status::paysync.payment_status AS answered, a.channel_status, a.error,"
"         a.retry_after, a.paid_amount, upper(a.paid_currency) AS paid_currency,"
"         a.is_close, a.close_on_expiry"
"  FROM paysync.payments p JOIN answer a USING (payment_id)"
"  WHERE p.status = 'pending' AND p.attempts = a.attempts"
"  ORDER BY p.payment_id"
"  FOR UPDATE OF p"
"), judged AS ("
"  SELECT c.*,"
"    coalesce(c.error IS NULL AND c.answered = 'succeeded' AND c.amount_minor IS NOT NULL"
"      AND c.paid_amount IS NOT NULL"
"      AND (c.paid_amount <> c.amount_minor"
"           OR (c.currency IS NOT NULL AND c.paid_currency IS NOT NULL"
"               AND c.paid_currency <> c.currency)), false)"
"      AS mismatch,"
"    coalesce(c.error IS NULL AND NOT c.is_close AND c.answered = 'pending'"
"      AND (c.expires_at <= now()"
"           OR (c.step + 1 >= cardinality(c.schedule) AND c.expires_at IS NULL)), false)"
"      AS gives_up,"
"    coalesce(c.error IS NULL AND c.is_close AND (c.answered = 'pending'"
"      OR (c.answered = 'succeeded' AND c.paid_amount IS NULL"
"          AND c.amount_minor IS NOT NULL)), false)"
"      AS requery"
"  FROM current c"
"), decided AS ("
"  SELECT j.*, CASE"
"    WHEN j.error IS NOT NULL THEN 'pending'"
"    WHEN j.requery THEN 'pending'"
"    WHEN j.mismatch THEN 'failed'"
"    WHEN j.gives_up AND j.close_on_expiry THEN 'pending'"
"    WHEN j.gives_up THEN 'expired'"
"    ELSE j.answered END::paysync.payment_status AS new_status,"
"    CASE WHEN j.mismatch THEN format('amount mismatch: expected %s %s, channel reports %s %s',"
"      j.amount_minor, coalesce(j.currency, ''), j.paid_amount, coalesce(j.paid_currency, ''))"
"    END AS mismatch_error"
"  FROM judged j"
"), changed AS ("
"  UPDATE paysync.payments p SET"
"    status = d.new_status,"
"    channel_status = CASE WHEN d.error IS NULL"
"      THEN coalesce(d.channel_status, p.channel_status) ELSE p.channel_status END,"
"    step = CASE WHEN d.error IS NULL AND NOT d.is_close THEN p.step + 1 ELSE p.step END,"
"    errors = CASE WHEN d.error IS NULL THEN 0 ELSE p.errors + 1 END,"
"    last_error = coalesce(d.error, d.mismatch_error, p.last_error),"
"    last_checked_at = now(),"
"    claimed_until = NULL,"
"    closing = NOT d.requery AND (p.closing OR (d.gives_up AND d.close_on_expiry)),"
"    updated_at = now(),"
"    finalized_at = CASE WHEN d.new_status <> 'pending' THEN now() END,"
"    next_check_at = CASE"
"      WHEN d.new_status <> 'pending' THEN NULL"
"      WHEN d.error IS NOT NULL THEN now() + greatest("
"        make_interval(secs => least(power(2, p.errors), 300) * (0.8 + random() * 0.4)),"
"        make_interval(secs => coalesce(d.retry_after, 0)))"
"      WHEN d.gives_up THEN now()"
"      WHEN d.requery THEN now() + interval '1 second'"
"      ELSE least(now() + p.schedule[least(p.step + 2, cardinality(p.schedule))],"
"                 coalesce(p.expires_at, 'infinity'))"
"      END"
"  FROM decided d"
"  WHERE p.payment_id = d.payment_id AND p.status = 'pending'"
"  RETURNING p.payment_id, p.channel, p.status, p.channel_status, d.is_close"
"), event AS ("
"  INSERT INTO paysync.events (payment_id, channel, previous, status, channel_status, source)"
"  SELECT payment_id, channel, 'pending', status, channel_status,"
"         CASE WHEN status = 'expired' OR (is_close AND status = 'closed')"
"              THEN 'expiry' ELSE 'poll' END"
"  FROM changed WHERE status <> 'pending'"
"  ORDER BY payment_id"
"  RETURNING event_id"
")"
" SELECT channel, status::text, count(*) FROM changed"
" WHERE status <> 'pending' GROUP BY channel, status";

static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr next_due_plan = NULL;
static SPIPlanPtr channels_plan = NULL;
static SPIPlanPtr lock_events_plan = NULL;
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

/* True once CREATE EXTENSION paysync has run in this database. */
bool
storage_extension_exists(void)
{
	return OidIsValid(get_extension_oid("paysync", true));
}

/*
 * Claims up to limit due payments, no more per capped channel than its free
 * slots.  Returns how many, with *claimed allocated in the caller's context.
 */
int
storage_claim(int limit, int default_timeout_ms, const ChannelSlots *caps,
			  ClaimedCheck **claimed)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			argtypes[5] = {INT4OID, INT4OID, TEXTARRAYOID, INT4ARRAYOID, INT4OID};
	Datum		args[5];
	int			n;

	SPI_connect();
	args[0] = Int32GetDatum(limit);
	args[1] = Int32GetDatum(default_timeout_ms);
	args[2] = text_array(caps->names, caps->n);
	args[3] = int_array(caps->free_slots, caps->n, false);
	args[4] = Int32GetDatum(PAYSYNC_CLAIM_MARGIN_MS);
	if (SPI_execute_plan(kept_plan(&claim_plan, claim_sql, 5, argtypes),
						 args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
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
		(*claimed)[i].closing = DatumGetBool(SPI_getbinval(tuple, desc, 5, &isnull));
	}
	SPI_finish();
	return n;
}

/*
 * Finds when the next check falls due, ignoring channels at their cap.
 * False if no payment is pending.
 */
bool
storage_next_due(const ChannelSlots *caps, TimestampTz *due_at)
{
	Oid			argtypes[1] = {TEXTARRAYOID};
	Datum		args[1];
	bool		isnull = true;

	SPI_connect();
	args[0] = text_array(caps->names, caps->n);
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
 * context).  Takes the events lock first, as report() does, so the two
 * never wait on each other in opposite orders.
 */
int
storage_record(const RecordedAnswer *answers, int n, FinalCount **finals)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			argtypes[10] = {TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
		TEXTARRAYOID, INT4ARRAYOID, INT8ARRAYOID, TEXTARRAYOID, BOOLARRAYOID, BOOLARRAYOID};
	Datum		args[10];
	const char **ids = palloc(sizeof(char *) * n);
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

	if (SPI_execute_plan(kept_plan(&lock_events_plan, lock_events_sql, 0, NULL),
						 NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "paysync: taking the events lock failed");
	if (SPI_execute_plan(kept_plan(&record_plan, record_sql, 10, argtypes),
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
	if (version_plan == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare("SELECT extversion FROM pg_catalog.pg_extension"
									   " WHERE extname = 'paysync'", 0, NULL);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "paysync: preparing the extension version query failed");
		version_plan = plan;
	}
	if (SPI_execute_plan(version_plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
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
