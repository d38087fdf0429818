/*
 * checker.h
 *		The check pipeline shared by the worker and run_once(): claimed
 *		payments become requests through their channel's driver, requests go
 *		out through the HTTP engine, answers come back and wait to be
 *		recorded.  Claiming and recording need an open transaction (the
 *		caller's); starting and waiting must be done with none open.
 */
#ifndef PAYSYNC_CHECKER_H
#define PAYSYNC_CHECKER_H

#include "postgres.h"

#include "utils/timestamp.h"

extern void checker_init(void);
extern int	checker_claim(int limit, bool honour_caps, bool *maybe_more);
extern bool checker_next_due(TimestampTz *due_at);
extern int	checker_start_claimed(void);
extern bool checker_wait(long timeout_ms, uint32 wait_event_info);
extern int	checker_record(int limit);
extern int	checker_answers_waiting(void);
extern TimestampTz checker_oldest_answer_at(void);
extern int	checker_queued(void);
extern int	checker_in_flight(void);
extern int	checker_free_slots(void);
extern bool checker_slot_freed_for_capped(void);
extern bool checker_next_start(TimestampTz *start_at);
extern void checker_release_shared(void);
extern void checker_settings_reloaded(void);
extern void checker_discard_all(void);
extern void checker_discard_failed_answers(void);

#endif							/* PAYSYNC_CHECKER_H */
