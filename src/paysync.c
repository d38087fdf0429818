/*
 * paysync.c
 *		Module load: settings, the shared memory hooks (the memory itself is
 *		stats.c's), registration of the background worker, and what is
 *		done at commit: the wake-up of the worker, the count of skipped
 *		notifications.
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "paysync.h"
#include "politeness.h"
#include "stats.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

char	   *paysync_database = NULL;
bool		paysync_enabled = true;
int			paysync_max_inflight = 256;
int			paysync_batch_size = 200;
int			paysync_request_timeout_ms = 10000;
char	   *paysync_notify_channel = NULL;
char	   *paysync_refund_notify_channel = NULL;
int			paysync_max_response_kb = 1024;
double		paysync_notify_queue_limit = 0.5;
int			paysync_workers = 1;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Earliest due time of work this transaction asked the worker to see. */
static TimestampTz wake_due_at = 0;
static bool wake_requested = false;

/* Notifications this transaction skipped; counted if it commits. */
static int64 skipped_in_xact = 0;
/* the current transaction changed paysync.channels */
static bool channels_changed_in_xact = false;

/* Asks for paysync's shared memory and its LWLock (see stats.c). */
static void
paysync_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	stats_shmem_request();
	politeness_shmem_request();
}

/* Creates or attaches to paysync's shared memory. */
static void
paysync_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	stats_shmem_startup();
	politeness_shmem_startup();
}

/*
 * Refuses a paysync.notify_channel that NOTIFY would refuse (empty, or
 * NAMEDATALEN bytes or longer): accepted, it would make every event insert
 * fail once loaded.
 */
static bool
check_notify_channel(char **newval, void **extra, GucSource source)
{
	size_t		len = *newval ? strlen(*newval) : 0;

	if (len == 0)
	{
		GUC_check_errdetail("The NOTIFY channel name must not be empty.");
		return false;
	}
	if (len >= NAMEDATALEN)
	{
		GUC_check_errdetail("The NOTIFY channel name is %zu bytes long; the longest allowed is %d bytes.",
							len, NAMEDATALEN - 1);
		return false;
	}
	return true;
}

/*
 * Remembers that the current transaction made work due at due_at; the
 * worker is woken at commit if it would otherwise sleep past that.
 */
void
paysync_request_wake(TimestampTz due_at)
{
	if (!wake_requested || due_at < wake_due_at)
		wake_due_at = due_at;
	wake_requested = true;
}

/*
 * Remembers that the current transaction committed count events without
 * their NOTIFY (queue pressure); they are counted in shared memory at
 * commit.
 */
void
paysync_count_skipped_notifications(int64 count)
{
	skipped_in_xact += count;
}

/*
 * Remembers that the current transaction changed paysync.channels; the
 * checkers reload the channel rows once it commits.
 */
void
paysync_channels_changed(void)
{
	channels_changed_in_xact = true;
}

/*
 * At commit, wakes the worker for work made due by this transaction,
 * counts the notifications it skipped and tells the checkers of changed
 * channels; a rolled-back transaction does none of these.
 */
static void
paysync_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_requested)
				stats_wake_worker_for(wake_due_at);
			if (skipped_in_xact > 0)
				stats_notifications_skipped(skipped_in_xact);
			if (channels_changed_in_xact)
				politeness_channels_changed();
			wake_requested = false;
			skipped_in_xact = 0;
			channels_changed_in_xact = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_requested = false;
			skipped_in_xact = 0;
			channels_changed_in_xact = false;
			break;
		default:
			break;
	}
}

/* Registers the settings, and the worker when preloaded. */
void
_PG_init(void)
{
	BackgroundWorker worker;

	/* a postmaster setting can only be defined while the server starts */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomStringVariable("paysync.database",
								   "Database the paysync worker works in.",
								   NULL, &paysync_database, "postgres",
								   PGC_POSTMASTER, 0, NULL, NULL, NULL);
		DefineCustomIntVariable("paysync.workers",
								"Worker processes; they share paysync.max_inflight and every channel limit.",
								NULL, &paysync_workers, 1, 1, PAYSYNC_MAX_WORKERS,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
	}
	DefineCustomBoolVariable("paysync.enabled",
							 "When off, the worker sends no requests.",
							 "paysync.run_once() still works.",
							 &paysync_enabled, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("paysync.max_inflight",
							"Most requests in flight at once, all channels together.",
							NULL, &paysync_max_inflight, 256, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("paysync.batch_size",
							"Most payments claimed or recorded in one transaction.",
							NULL, &paysync_batch_size, 200, 1, 10000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("paysync.request_timeout",
							"Default total time for one request.",
							NULL, &paysync_request_timeout_ms, 10000, 100, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomStringVariable("paysync.notify_channel",
							   "NOTIFY channel on which events are sent.",
							   NULL, &paysync_notify_channel, "paysync",
							   PGC_SIGHUP, 0, check_notify_channel, NULL, NULL);
	DefineCustomStringVariable("paysync.refund_notify_channel",
							   "NOTIFY channel on which refund events are sent.",
							   "Refund events are never sent on paysync.notify_channel.",
							   &paysync_refund_notify_channel, "paysync_refunds",
							   PGC_SIGHUP, 0, check_notify_channel, NULL, NULL);
	DefineCustomIntVariable("paysync.max_response_size",
							"A larger response body is an error.",
							NULL, &paysync_max_response_kb, 1024, 1, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomRealVariable("paysync.notify_queue_limit",
							 "Above this pg_notification_queue_usage(), events are committed without NOTIFY.",
							 "A listening session idle in a transaction holds the notification queue; once it is full every NOTIFY fails at commit.  Events are always written.",
							 &paysync_notify_queue_limit, 0.5, 0.0, 1.0,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	MarkGUCPrefixReserved("paysync");

	RegisterXactCallback(paysync_xact_callback, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = paysync_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = paysync_shmem_startup;

	/* workers 1 to n, each restarted on its own */
	for (int i = 1; i <= paysync_workers; i++)
	{
		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_ConsistentState;
		worker.bgw_restart_time = 1;
		worker.bgw_main_arg = Int32GetDatum(i);
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "paysync");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "paysync_worker_main");
		if (paysync_workers == 1)
			snprintf(worker.bgw_name, BGW_MAXLEN, "paysync worker");
		else
			snprintf(worker.bgw_name, BGW_MAXLEN, "paysync worker %d", i);
		snprintf(worker.bgw_type, BGW_MAXLEN, "paysync worker");
		RegisterBackgroundWorker(&worker);
	}
}
