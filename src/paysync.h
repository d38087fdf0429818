/*
 * paysync.h
 *		Settings, shared state and the types that pass between the worker,
 *		the checker, the HTTP engine, the drivers and storage.
 */
#ifndef PAYSYNC_H
#define PAYSYNC_H

#include "postgres.h"

#include "storage/latch.h"
#include "storage/spin.h"
#include "port/atomics.h"
#include "utils/timestamp.h"

#define PAYSYNC_VERSION "0.3"
#define PAYSYNC_USER_AGENT "paysync/" PAYSYNC_VERSION

/* A claim lapses this long after the request timeout. */
#define PAYSYNC_CLAIM_MARGIN_MS 5000

/* Settings (see paysync.c) */
extern char *paysync_database;
extern bool paysync_enabled;
extern int	paysync_max_inflight;
extern int	paysync_batch_size;
extern int	paysync_request_timeout_ms;
extern char *paysync_notify_channel;
extern int	paysync_max_response_kb;

/*
 * State shared between the worker and the backends that wake it.  Exists
 * only when paysync is in shared_preload_libraries.
 */
typedef struct PaysyncShared
{
	slock_t		mutex;
	Latch	   *worker_latch;	/* NULL when no worker runs */
	pid_t		worker_pid;

	/*
	 * When the worker plans to look for due work next (a TimestampTz; the
	 * maximum while it is busy, 0 when disabled).  A backend whose committed
	 * work is due earlier sets the worker's latch.
	 */
	pg_atomic_uint64 sleep_until;
} PaysyncShared;

extern PaysyncShared *paysync_shared;

/* paysync.c */
extern void paysync_request_wake(TimestampTz due_at);
extern void paysync_wake_worker(void);

/* worker.c */
extern PGDLLEXPORT void paysync_worker_main(Datum main_arg);

#endif							/* PAYSYNC_H */
