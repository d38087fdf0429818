/*
 * worker.c
 *		The paysync background worker: its main loop.
 *
 *		Each pass records the answers that came back (short transactions of
 *		up to paysync.batch_size, once a batch is full or the oldest answer
 *		has waited RECORD_GATHER_MS), claims due payments if there is room in
 *		flight (one short transaction), starts their requests with no
 *		transaction open, then sleeps on its latch and the requests' sockets
 *		until a request makes progress, the earliest next_check_at comes, or
 *		a committing track()/check_now() wakes it.
 *
 *		While events are committed without their NOTIFY (the notification
 *		queue fuller than paysync.notify_queue_limit, see _events_notify),
 *		the worker logs one WARNING a minute naming the likely holders of
 *		the queue, and one LOG line when notifications are sent again.
 *
 *		With paysync.workers above 1, that many of these processes run side
 *		by side, each restarted on its own: their claims (FOR UPDATE SKIP
 *		LOCKED, then a claim time) never give one payment to two of them at
 *		once, and they share paysync.max_inflight and every channel's limits
 *		through politeness.c.  Worker 1 alone speaks of the notification
 *		queue.
 *
 *		Where it cannot work, the worker waits, says so once in the log,
 *		shows it in worker_status() and pg_stat_activity, and looks again
 *		every WAITING_RECHECK_MS: a standby (until promotion), a database
 *		whose transactions are read-only, an extension that is missing or
 *		not at PAYSYNC_SCHEMA_VERSION, a database that does not exist.
 */
#include "postgres.h"

#include <sys/resource.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "paysync.h"
#include "checker.h"
#include "stats.h"
#include "storage.h"

/* Longest sleep with nothing due: a safety net, never a delay of due work. */
#define IDLE_RECHECK_MS 10000
/* How often to look again at what the worker waits for. */
#define WAITING_RECHECK_MS 5000
/* How often to look for paysync.database while it does not exist. */
#define DATABASE_RECHECK_MS 1000
/* At most one WARNING about skipped notifications this often. */
#define NOTIFY_WARNING_INTERVAL_MS 60000
/* Sessions named in that WARNING. */
#define NOTIFY_HOLDERS_SHOWN 3

/*
 * How long an answer may wait for others to share its recording
 * transaction.  Answers that trickle in (a channel held to max_rps, a slow
 * channel) are then recorded a few at a time, not one transaction each;
 * a full batch is recorded at once.
 */
#define RECORD_GATHER_MS 20

/* How often the worker makes its cached query plans again. */
#define PLAN_REFRESH_MS 5000

/* Why the worker is not claiming payments, when it is not. */
typedef enum WaitReason
{
	WAIT_NONE = 0,
	WAIT_NO_EXTENSION,			/* no CREATE EXTENSION paysync yet */
	WAIT_EXTENSION_VERSION,		/* installed at another version */
	WAIT_READ_ONLY				/* transactions are read-only */
} WaitReason;

/* The loop's state, kept across passes. */
static MemoryContext loop_context = NULL;
static TimestampTz next_claim_at = 0;	/* look for due work at or after this */
static WaitReason waiting = WAIT_NONE;	/* as found by the last claim attempt */

/* What pg_stat_activity shows of the worker while it waits. */
static const char *shown = NULL;

/* Skipped notifications: the count last warned about, and when. */
static int	worker_number = 1;	/* 1 to paysync.workers */
static uint64 skipped_warned = 0;
static TimestampTz skipped_warned_at = 0;
static bool skipping_warned = false;	/* warned, not yet told they resumed */
static TimestampTz plans_made_at = 0;	/* the cached plans were dropped then */

/* This process started its successor, connected to the database, and exits. */
static bool handed_over = false;

/*
 * Forgets the worker in shared memory as it exits, and gives back the
 * slots in flight and probes it held, which the other workers share.
 */
static void
worker_detach(int code, Datum arg)
{
	checker_release_shared();
	if (handed_over)
		stats_worker_handed_over();
	else
		stats_worker_stopped();
}

/*
 * Raises the soft limit on open files to the hard limit: every request in
 * flight and every kept-alive connection is a socket, on top of the files
 * PostgreSQL itself keeps open (max_files_per_process).
 */
static void
raise_open_files_limit(void)
{
	struct rlimit limit;

	if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max)
	{
		limit.rlim_cur = limit.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
			ereport(LOG,
					(errmsg("paysync worker could not raise its open files limit: %m")));
	}
}

/* Starts a short transaction of the worker, showing what it does. */
static void
worker_begin(const char *activity)
{
	shown = NULL;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Commits the worker's transaction and reports statistics. */
static void
worker_commit(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(loop_context);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Milliseconds from now until t, at least 0, rounded up. */
static long
ms_until(TimestampTz t, TimestampTz now)
{
	if (t <= now)
		return 0;
	return (long) ((t - now + 999) / 1000);
}

/*
 * Shows in pg_stat_activity what the worker waits for (PostgreSQL 15 has no
 * custom wait event names: wait_event says only "Extension") and keeps the
 * worker's state for paysync.worker_status().
 */
static void
report_waiting(WorkerState state, const char *what)
{
	stats_worker_state(state, checker_in_flight());
	if (what != shown)
	{
		pgstat_report_activity(STATE_IDLE, what);
		shown = what;
	}
}

/* True if version a ("major.minor") is older than version b. */
static bool
version_older(const char *a, const char *b)
{
	int			a_major = 0,
				a_minor = 0,
				b_major = 0,
				b_minor = 0;

	(void) sscanf(a, "%d.%d", &a_major, &a_minor);
	(void) sscanf(b, "%d.%d", &b_major, &b_minor);
	return a_major < b_major || (a_major == b_major && a_minor < b_minor);
}

/*
 * What keeps the worker from claiming and recording in its database, found
 * in the open transaction: the extension missing or at another version
 * than PAYSYNC_SCHEMA_VERSION, or transactions being read-only (a server
 * just promoted by pg_auto_failover runs with default_transaction_read_only
 * for a while).  Says so in the log when the reason is new, and keeps it
 * in waiting.
 */
static WaitReason
find_wait_reason(void)
{
	char	   *version = storage_extension_version();
	WaitReason reason = WAIT_NONE;

	if (version == NULL)
		reason = WAIT_NO_EXTENSION;
	else if (strcmp(version, PAYSYNC_SCHEMA_VERSION) != 0)
		reason = WAIT_EXTENSION_VERSION;
	else if (XactReadOnly)
		reason = WAIT_READ_ONLY;

	if (reason == waiting)
		return reason;
	waiting = reason;
	if (reason == WAIT_NO_EXTENSION)
		ereport(LOG,
				(errmsg("paysync worker is waiting for CREATE EXTENSION paysync in database \"%s\"",
						paysync_database)));
	else if (reason == WAIT_EXTENSION_VERSION && version_older(version, PAYSYNC_SCHEMA_VERSION))
		ereport(LOG,
				(errmsg("paysync worker is waiting: extension paysync is version %s in database \"%s\", this library needs %s",
						version, paysync_database, PAYSYNC_SCHEMA_VERSION),
				 errhint("Run ALTER EXTENSION paysync UPDATE in database \"%s\".",
						 paysync_database)));
	else if (reason == WAIT_EXTENSION_VERSION)
		ereport(LOG,
				(errmsg("paysync worker is waiting: extension paysync is version %s in database \"%s\", this library needs %s",
						version, paysync_database, PAYSYNC_SCHEMA_VERSION),
				 errhint("Install the paysync library of version %s and restart the server.",
						 version)));
	else if (reason == WAIT_READ_ONLY)
		ereport(LOG,
				(errmsg("paysync worker is waiting: transactions in database \"%s\" are read-only",
						paysync_database),
				 errdetail("No payment is claimed while default_transaction_read_only is on.")));
	return reason;
}

/*
 * When the answers waiting should be recorded: at once if a batch is full,
 * else RECORD_GATHER_MS after the oldest came; DT_NOEND if none waits.
 */
static TimestampTz
answers_record_at(void)
{
	int			waiting_answers = checker_answers_waiting();

	if (waiting_answers == 0)
		return DT_NOEND;
	if (waiting_answers >= paysync_batch_size)
		return 0;
	return checker_oldest_answer_at() + (int64) RECORD_GATHER_MS * 1000;
}

/*
 * Records what came back, batch by batch, each batch in a short
 * transaction.  Answers that cannot be recorded now (see find_wait_reason)
 * are dropped: their claims lapse and the payments are checked again.
 */
static void
record_answers(void)
{
	if (answers_record_at() > GetCurrentTimestamp())
		return;
	/* the answers set new due times, so look for due work again */
	next_claim_at = 0;
	while (checker_answers_waiting() > 0)
	{
		worker_begin("paysync: recording answers");
		if (find_wait_reason() == WAIT_NONE)
			checker_record(paysync_batch_size);
		else
			checker_discard_failed_answers();
		worker_commit();
	}
}

/*
 * Claims due payments in one short transaction, if it is time and there is
 * room in flight, and starts their requests (with no transaction open);
 * then the checks that waited for a free slot or an access token.
 */
static void
claim_and_start(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			limit = Min(checker_free_slots(), paysync_batch_size);

	if (RecoveryInProgress())
		next_claim_at = now + WAITING_RECHECK_MS * INT64CONST(1000);
	else if (paysync_enabled && now >= next_claim_at && limit > 0)
	{
		bool		maybe_more = false;

		worker_begin("paysync: claiming due payments");
		if (find_wait_reason() != WAIT_NONE)
			next_claim_at = now + WAITING_RECHECK_MS * INT64CONST(1000);
		else
		{
			checker_claim(limit, true, &maybe_more);
			if (maybe_more)
				next_claim_at = now;
			else if (!checker_next_due(&next_claim_at))
				next_claim_at = now + IDLE_RECHECK_MS * INT64CONST(1000);
		}
		worker_commit();
		checker_start_claimed();
	}

	if (checker_queued() > 0)
		checker_start_claimed();
}

/*
 * Says in the log that notifications are being skipped: one WARNING a
 * minute at most while the count of skipped notifications grows, with the
 * queue's usage and the client sessions with the oldest open transactions
 * (a listening session reads notifications only between transactions, so
 * one of them likely holds the queue).  Not the trigger's job: a report()
 * caller is not to get the WARNING.  Once the events statements send their
 * NOTIFY again, one LOG line says so.
 */
static void
warn_if_notifications_skipped(void)
{
	uint64		skipped;
	bool		skipping;
	TimestampTz now;
	double		usage = 0;
	char	   *holders;

	if (!stats_read_notify(&skipped, &skipping))
		return;
	if (skipping_warned && !skipping)
	{
		ereport(LOG,
				(errmsg("paysync notifications are sent again: the notification queue is below paysync.notify_queue_limit (%g)",
						paysync_notify_queue_limit)));
		skipping_warned = false;
	}
	if (skipped <= skipped_warned)
		return;
	now = GetCurrentTimestamp();
	if (skipped_warned_at != 0 &&
		!TimestampDifferenceExceeds(skipped_warned_at, now, NOTIFY_WARNING_INTERVAL_MS))
		return;

	worker_begin("paysync: looking at the notification queue");
	holders = storage_notify_queue_holders(NOTIFY_HOLDERS_SHOWN, &usage);
	worker_commit();
	ereport(WARNING,
			(errmsg("paysync skipped " UINT64_FORMAT " notifications: the notification queue usage %g is above paysync.notify_queue_limit (%g)",
					skipped - skipped_warned, usage, paysync_notify_queue_limit),
			 errdetail("The events were committed; listeners find them with paysync.events_since().  Oldest open transactions of client sessions: %s.",
					   holders),
			 errhint("A session that ran LISTEN and stays in a transaction holds the queue: end that transaction, or end the session with pg_terminate_backend().")));
	skipped_warned = skipped;
	skipped_warned_at = now;
	skipping_warned = true;
}

/*
 * Notifications skipped before this worker started (the last one may have
 * warned about them already) are not news.
 */
static void
forget_earlier_skipped_notifications(void)
{
	bool		skipping;

	(void) stats_read_notify(&skipped_warned, &skipping);
}

/* Shows what the worker is doing or waiting for, before it sleeps. */
static void
report_state(void)
{
	if (waiting == WAIT_NO_EXTENSION)
		report_waiting(WORKER_WAITING_FOR_EXTENSION,
					   "paysync: waiting for CREATE EXTENSION paysync");
	else if (waiting == WAIT_EXTENSION_VERSION)
		report_waiting(WORKER_WAITING_FOR_EXTENSION,
					   "paysync: waiting for ALTER EXTENSION paysync UPDATE");
	else if (!paysync_enabled)
		report_waiting(WORKER_DISABLED, "paysync: disabled (paysync.enabled = off)");
	else if (RecoveryInProgress())
		report_waiting(WORKER_IDLE, "paysync: standby, waiting for promotion");
	else if (waiting == WAIT_READ_ONLY)
		report_waiting(WORKER_IDLE, "paysync: read-only, waiting for writable transactions");
	else if (checker_in_flight() > 0 || checker_queued() > 0)
		report_waiting(WORKER_RUNNING, "paysync: waiting for channel answers and due checks");
	else
		report_waiting(WORKER_IDLE, "paysync: waiting for the next due check");
}

/*
 * Sleeps on the latch and the requests' sockets until a request makes
 * progress, the next due check comes, or a commit or signal wakes the
 * worker; tells committing backends until when it sleeps.
 */
static void
sleep_until_something_happens(void)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz start_at;
	long		timeout_ms;
	bool		woken;

	if (!paysync_enabled || RecoveryInProgress())
	{
		stats_worker_sleeps_until(DT_NOBEGIN);
		timeout_ms = WAITING_RECHECK_MS;
	}
	else if (checker_free_slots() == 0)
	{
		/*
		 * full: the next finished request wakes us through its socket, or,
		 * if another worker holds the slots, its release (through the latch)
		 */
		stats_worker_sleeps_until(DT_NOEND);
		timeout_ms = IDLE_RECHECK_MS;
	}
	else
	{
		stats_worker_sleeps_until(next_claim_at);
		timeout_ms = Min(ms_until(next_claim_at, now), IDLE_RECHECK_MS);
	}
	/* checks queued until their channel's breaker or rate lets them start */
	if (checker_next_start(&start_at))
		timeout_ms = Min(timeout_ms, ms_until(start_at, now));
	if (checker_answers_waiting() > 0)
		timeout_ms = Min(timeout_ms, ms_until(answers_record_at(), now));

	report_state();
	woken = checker_wait(timeout_ms, PG_WAIT_EXTENSION);
	CHECK_FOR_INTERRUPTS();
	if (woken || checker_slot_freed_for_capped())
		next_claim_at = 0;
}

/*
 * Drops the worker's cached query plans every PLAN_REFRESH_MS, so that
 * they follow the size of paysync's tables: a generic plan made while the
 * payments table was nearly empty (a fresh install, the first payments)
 * may scan every pending payment to update the few of a batch, and would
 * stay until a vacuum or analyze of the table next invalidated it.
 * Planning again costs a few milliseconds.
 */
static void
refresh_plans_if_due(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (TimestampDifferenceExceeds(plans_made_at, now, PLAN_REFRESH_MS))
	{
		ResetPlanCache();
		plans_made_at = now;
	}
}

/* Rereads the configuration file (and the system trust store) after a SIGHUP. */
static void
reload_settings_if_asked(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
		checker_settings_reloaded();
	}
}

/* The worker's loop; see the file header.  Never returns. */
static void
worker_loop(void)
{
	loop_context = AllocSetContextCreate(TopMemoryContext, "paysync worker loop",
										 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		MemoryContextSwitchTo(loop_context);
		reload_settings_if_asked();
		/* busy: any commit of due work from now on sets the latch */
		stats_worker_sleeps_until(DT_NOEND);

		refresh_plans_if_due();
		record_answers();
		claim_and_start();
		/* one worker speaks for all */
		if (worker_number == 1)
			warn_if_notifications_skipped();
		sleep_until_something_happens();
		MemoryContextReset(loop_context);
	}
}

/*
 * Why the worker cannot connect to database name, or NULL if it can; looked
 * up in the shared catalog pg_database.
 */
static const char *
database_problem(const char *name)
{
	const char *problem = NULL;
	Oid			oid;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	oid = get_database_oid(name, true);
	if (!OidIsValid(oid))
		problem = "does not exist";
	else
	{
		HeapTuple	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(oid));

		if (HeapTupleIsValid(tuple))
		{
			if (!((Form_pg_database) GETSTRUCT(tuple))->datallowconn)
				problem = "does not allow connections";
			ReleaseSysCache(tuple);
		}
		else
			problem = "does not exist";
	}
	CommitTransactionCommand();
	return problem;
}

/*
 * Starts this worker's successor at once: a dynamic background worker with
 * the same entry point, number and restart time, which connects to the
 * database.  False if it cannot be registered (no free slot of
 * max_worker_processes).
 */
static bool
start_successor(void)
{
	BackgroundWorker successor;
	BackgroundWorkerHandle *handle;

	memcpy(&successor, MyBgworkerEntry, sizeof(successor));
	successor.bgw_notify_pid = 0;
	return RegisterDynamicBackgroundWorker(&successor, &handle);
}

/*
 * Waits, connected to no database, until paysync.database exists and
 * accepts connections; a process connects to a database once in its life,
 * so another one must then connect.  Used when the last worker died
 * connecting: instead of a FATAL every second, one LOG line.  It looks
 * every DATABASE_RECHECK_MS, and at once when a commit wakes it (a track()
 * in the new database).
 *
 * Once the database is there, it starts its successor as a dynamic worker
 * and exits 0, which tells the postmaster to forget this registration:
 * the successor connects within milliseconds, where a restart of this one
 * would wait for bgw_restart_time.  The successor is restarted after an
 * error like the worker it replaces.  Without a free worker slot, this
 * process exits 1 and the postmaster starts it again a second later.
 * worker_status() goes on showing it waiting until the successor starts,
 * never "not running".
 */
static void
wait_for_database(void)
{
	const char *told = NULL;

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	before_shmem_exit(worker_detach, (Datum) 0);
	stats_worker_started();

	for (;;)
	{
		const char *problem;

		/* a commit anywhere that makes work due wakes the worker */
		stats_worker_sleeps_until(DT_NOEND);
		reload_settings_if_asked();
		problem = database_problem(paysync_database);
		if (problem == NULL)
			break;
		if (problem != told)
			ereport(LOG,
					(errmsg("paysync worker is waiting: database \"%s\" %s",
							paysync_database, problem),
					 errhint("Create the database, or set paysync.database to a database that accepts connections and restart the server.")));
		told = problem;
		report_waiting(WORKER_WAITING_FOR_EXTENSION, "paysync: waiting for its database");
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 DATABASE_RECHECK_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}

	stats_worker_connecting(false);
	if (start_successor())
	{
		ereport(LOG,
				(errmsg("paysync worker found database \"%s\" and starts a worker connected to it",
						paysync_database)));
		handed_over = true;
		proc_exit(0);
	}
	ereport(LOG,
			(errmsg("paysync worker found database \"%s\" and restarts to connect to it",
					paysync_database),
			 errdetail("No background worker slot was free to connect at once.")));
	proc_exit(1);
}

/*
 * Entry point of the worker.  Errors are not caught: the worker exits
 * non-zero and the postmaster starts it again a second later; checks it
 * had in flight are retried once their claims lapse.  The error is kept for
 * paysync.worker_status() on the way out.
 */
void
paysync_worker_main(Datum main_arg)
{
	worker_number = DatumGetInt32(main_arg);
	stats_set_worker(worker_number);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* a FATAL while connecting leaves the mark for the next worker */
	if (stats_worker_connect_failed())
		wait_for_database();
	stats_worker_connecting(true);
	BackgroundWorkerInitializeConnection(paysync_database, NULL, 0);
	stats_worker_connecting(false);

	before_shmem_exit(worker_detach, (Datum) 0);
	stats_worker_started();

	raise_open_files_limit();
	checker_init();
	forget_earlier_skipped_notifications();
	if (paysync_workers == 1)
		ereport(LOG,
				(errmsg("paysync worker started in database \"%s\"", paysync_database)));
	else
		ereport(LOG,
				(errmsg("paysync worker %d of %d started in database \"%s\"",
						worker_number, paysync_workers, paysync_database)));

	PG_TRY();
	{
		worker_loop();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		stats_worker_error(edata->message);
		PG_RE_THROW();
	}
	PG_END_TRY();
}
