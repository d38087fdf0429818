/*
 * worker.c
 *		The paysync background worker: its main loop.
 *
 *		Each pass records the answers that came back (short transactions of
 *		up to paysync.batch_size), claims due payments if there is room in
 *		flight (one short transaction), starts their requests with no
 *		transaction open, then sleeps on its latch and the requests' sockets
 *		until a request makes progress, the earliest next_check_at comes, or
 *		a committing track()/check_now() wakes it.
 */
#include "postgres.h"

#include <sys/resource.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "paysync.h"
#include "checker.h"
#include "stats.h"
#include "storage.h"

/* Longest sleep with nothing due: a safety net, never a delay of due work. */
#define IDLE_RECHECK_MS 10000
/* How often to look again for the extension or for the end of recovery. */
#define WAITING_RECHECK_MS 5000

/* Forgets the worker's latch in shared memory as it exits. */
static void
worker_detach(int code, Datum arg)
{
	SpinLockAcquire(&paysync_shared->mutex);
	paysync_shared->worker_latch = NULL;
	paysync_shared->worker_pid = 0;
	SpinLockRelease(&paysync_shared->mutex);
	pg_atomic_write_u64(&paysync_shared->sleep_until, 0);
	stats_worker_state(WORKER_NOT_RUNNING, 0);
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

/* What pg_stat_activity shows of the worker while it waits. */
static const char *shown = NULL;

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

/* The worker's loop; see the file header.  Never returns. */
static void
worker_loop(void)
{
	MemoryContext loop_context;
	TimestampTz next_claim_at = 0;	/* look for due work at or after this */
	bool		waiting_for_extension = false;

	loop_context = AllocSetContextCreate(TopMemoryContext, "paysync worker loop",
										 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		TimestampTz now;
		long		timeout_ms;
		bool		woken;

		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* busy: any commit from now on with due work sets the latch */
		pg_atomic_write_u64(&paysync_shared->sleep_until, PG_UINT64_MAX);

		/*
		 * 1. record what came back, batch by batch; the answers set new due
		 * times, so look for due work again
		 */
		if (checker_answers_waiting() > 0)
			next_claim_at = 0;
		while (checker_answers_waiting() > 0)
		{
			worker_begin("paysync: recording answers");
			if (storage_extension_exists())
				checker_record(paysync_batch_size);
			else
				checker_discard_failed_answers();
			worker_commit();
		}

		/* 2. claim due payments and start their requests */
		now = GetCurrentTimestamp();
		if (RecoveryInProgress())
			next_claim_at = now + WAITING_RECHECK_MS * INT64CONST(1000);
		else if (paysync_enabled && now >= next_claim_at)
		{
			int			free_slots = checker_free_slots();
			int			limit = Min(free_slots, paysync_batch_size);

			if (limit > 0)
			{
				bool		maybe_more = false;

				worker_begin("paysync: claiming due payments");
				if (!storage_extension_exists())
				{
					if (!waiting_for_extension)
						ereport(LOG,
								(errmsg("paysync worker is waiting for CREATE EXTENSION paysync in database \"%s\"",
										paysync_database)));
					waiting_for_extension = true;
					next_claim_at = now + WAITING_RECHECK_MS * INT64CONST(1000);
				}
				else
				{
					waiting_for_extension = false;
					checker_claim(limit, true, &maybe_more);
					if (maybe_more)
						next_claim_at = now;
					else if (!checker_next_due(&next_claim_at))
						next_claim_at = now + IDLE_RECHECK_MS * INT64CONST(1000);
				}
				worker_commit();
				checker_start_claimed();
			}
		}

		/* checks that waited for a free slot or an access token */
		if (checker_queued() > 0)
			checker_start_claimed();

		/* 3. sleep until something happens */
		now = GetCurrentTimestamp();
		if (!paysync_enabled || RecoveryInProgress())
		{
			pg_atomic_write_u64(&paysync_shared->sleep_until, 0);
			timeout_ms = WAITING_RECHECK_MS;
		}
		else if (checker_free_slots() == 0)
		{
			/* full: the next finished request wakes us through its socket */
			pg_atomic_write_u64(&paysync_shared->sleep_until, (uint64) next_claim_at);
			timeout_ms = IDLE_RECHECK_MS;
		}
		else
		{
			pg_atomic_write_u64(&paysync_shared->sleep_until, (uint64) next_claim_at);
			timeout_ms = Min(ms_until(next_claim_at, now), IDLE_RECHECK_MS);
		}
		if (checker_answers_waiting() > 0)
			timeout_ms = 0;

		if (waiting_for_extension)
			report_waiting(WORKER_WAITING_FOR_EXTENSION,
						   "paysync: waiting for CREATE EXTENSION paysync");
		else if (!paysync_enabled)
			report_waiting(WORKER_DISABLED, "paysync: disabled (paysync.enabled = off)");
		else if (RecoveryInProgress())
			report_waiting(WORKER_IDLE, "paysync: standby, waiting for promotion");
		else if (checker_in_flight() > 0 || checker_queued() > 0)
			report_waiting(WORKER_RUNNING, "paysync: waiting for channel answers and due checks");
		else
			report_waiting(WORKER_IDLE, "paysync: waiting for the next due check");

		woken = checker_wait(timeout_ms, PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
		if (woken || checker_slot_freed_for_capped())
			next_claim_at = 0;
	}
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
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(paysync_database, NULL, 0);

	SpinLockAcquire(&paysync_shared->mutex);
	paysync_shared->worker_latch = MyLatch;
	paysync_shared->worker_pid = MyProcPid;
	SpinLockRelease(&paysync_shared->mutex);
	before_shmem_exit(worker_detach, (Datum) 0);
	stats_worker_started();

	raise_open_files_limit();
	checker_init();
	ereport(LOG,
			(errmsg("paysync worker started in database \"%s\"", paysync_database)));

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
