/*
 * storage.h
 *		SQL storage calls (SPI) of the checker: claim due payments and refunds, load
 *		channels, record answers; and the worker's look at the notification
 *		queue and its likely holders.  Each expects a transaction to be open and
 *		returns its results allocated in the caller's memory context.
 */
#ifndef PAYSYNC_STORAGE_H
#define PAYSYNC_STORAGE_H

#include "postgres.h"

#include "utils/jsonb.h"
#include "utils/timestamp.h"

/* A payment or refund claimed for one check. */
typedef struct ClaimedCheck
{
	char	   *payment_id;		/* the payment, or the refund's payment */
	char	   *refund_id;		/* NULL for a payment */
	char	   *channel;
	int32		attempts;		/* the attempt this claim is; the answer must match */
	TimestampTz due_at;
	TimestampTz claimed_until;	/* the claim lapses then */
	bool		closing;		/* close the trade rather than ask about it */
} ClaimedCheck;

/* A row of paysync.channels. */
typedef struct ChannelRow
{
	char	   *name;
	char	   *driver;
	char	   *base_url;
	char	   *options;		/* jsonb as text */
} ChannelRow;

/* An answer to record. */
typedef struct RecordedAnswer
{
	char	   *payment_id;
	char	   *refund_id;		/* NULL: the answer is about the payment */
	int32		attempts;
	const char *status;			/* paysync status, or NULL for an error */
	char	   *channel_status;
	char	   *error;
	int32		retry_after_s;	/* -1 if none */
	bool		has_paid_amount;
	int64		paid_amount_minor;
	char	   *paid_currency;	/* or NULL */
	bool		is_close;		/* the answer to a close request */
	bool		close_on_expiry;	/* the channel closes trades it gives up on */
} RecordedAnswer;

/*
 * How to claim: how long a claim lasts (the request timeout and a margin),
 * and the channels that are exceptions: their own claim time (-1: the
 * default), and how many of their payments may be claimed now (-1: no
 * limit).  Channels not named: the default claim time, no limit.
 */
typedef struct ChannelSlots
{
	int32		default_claim_ms;
	int			n;
	char	  **names;
	int32	   *claim_ms;
	int32	   *free_slots;
} ChannelSlots;

extern char *storage_extension_version(void);
extern int	storage_claim(int limit, const ChannelSlots *slots, ClaimedCheck **claimed);
extern bool storage_next_due(const ChannelSlots *full, TimestampTz *due_at);
extern int	storage_load_channels(ChannelRow **rows);
/* How many payments of a channel reached a final status in one record. */
typedef struct FinalCount
{
	char	   *channel;
	char	   *status;
	int64		count;
} FinalCount;

extern int	storage_record(const RecordedAnswer *answers, int n, FinalCount **finals);
extern char *storage_notify_queue_holders(int max_sessions, double *usage);

#endif							/* PAYSYNC_STORAGE_H */
