/*
 * paysync.h
 *		The module's root: its settings (defined in paysync.c), the
 *		commit-time wake-up of the worker and count of skipped
 *		notifications, and the worker's entry point.
 *		Shared memory is stats.h's.
 */
#ifndef PAYSYNC_H
#define PAYSYNC_H

#include "postgres.h"

#include "utils/timestamp.h"

#include "version.h"

/* A claim lapses this long after the request timeout. */
#define PAYSYNC_CLAIM_MARGIN_MS 5000

/* Settings (see paysync.c) */
extern char *paysync_database;
extern bool paysync_enabled;
extern int	paysync_max_inflight;
extern int	paysync_batch_size;
extern int	paysync_request_timeout_ms;
extern char *paysync_notify_channel;
extern char *paysync_refund_notify_channel;
extern int	paysync_max_response_kb;
extern double paysync_notify_queue_limit;
extern int	paysync_workers;

/* paysync.c */
extern void paysync_request_wake(TimestampTz due_at);
extern void paysync_count_skipped_notifications(int64 count);
extern void paysync_channels_changed(void);

/* worker.c */
extern PGDLLEXPORT void paysync_worker_main(Datum main_arg);

#endif							/* PAYSYNC_H */
