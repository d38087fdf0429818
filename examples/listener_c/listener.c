/*
 * listener.c
 *		An order service's paysync listener, written with libpq.
 *
 *		paysync records one row in paysync.events for every payment status
 *		change and sends it with NOTIFY in the same transaction.  A
 *		notification sent while the listener is disconnected is gone, the
 *		row is not; so this listener, on every (re)connect:
 *
 *		1. runs LISTEN paysync first, so nothing committed from then on can
 *		   pass unnoticed;
 *		2. catches up: reads paysync.events_since(last_applied, 1000) and
 *		   applies the rows, again and again until it returns none;
 *		3. waits on the connection's socket for notifications.  An event_id
 *		   it has already applied is skipped; last_applied + 1 is applied
 *		   from the payload; anything beyond may follow a gap, so it catches
 *		   up again (events_since returns that event too).  With nothing
 *		   heard for a few seconds it catches up anyway: paysync commits
 *		   events without their NOTIFY while PostgreSQL's notification
 *		   queue is held by some other listener (paysync.notify_queue_limit);
 *		4. on a lost connection, reconnects with backoff and starts at 1.
 *
 *		Applying an event is one transaction in the shop's own tables: the
 *		event_id goes into shop.applied_events, whose primary key makes a
 *		second apply insert nothing (it is rolled back and skipped), and the
 *		status into shop.order_payments.  last_applied is the largest
 *		event_id in shop.applied_events, so the change and the memory of
 *		having made it commit together or not at all.  If COMMIT fails (the
 *		connection lost while it was on its way), whether it took effect is
 *		looked up after the reconnect in shop.applied_events itself, never
 *		with pg_xact_status(): after a failover the new primary may have
 *		given the same transaction id to another transaction.
 *
 *		Usage: listener [CONNINFO]
 *		CONNINFO is a libpq connection string or URI; without it,
 *		$PAYSYNC_DSN, else libpq's own defaults (PGHOST, PGDATABASE...).
 *		$PAYSYNC_NOTIFY_CHANNEL overrides the channel (default "paysync");
 *		$PAYSYNC_CATCH_UP_SECONDS the catch-up when nothing is heard
 *		(default 5).
 *		Refunds (paysync 0.4): refund events come on their own notify
 *		channel ($PAYSYNC_REFUND_NOTIFY_CHANNEL, default "paysync_refunds")
 *		and from paysync.refund_events_since(), never from events_since().
 *		They are a second stream: the last applied one is the largest
 *		event_id in shop.applied_refund_events, each is applied in one
 *		statement (the refund's status into shop.order_refunds) and printed
 *		as "refund <event_id> <refund_id> <payment_id> <status>".  Event ids
 *		are shared with payments, so a refund notification always means a
 *		catch-up with refund_events_since().
 *
 *		Prints "applied <event_id> <payment_id> <status>" on stdout for
 *		each event it applies; logs to stderr.  SIGTERM or SIGINT: it
 *		finishes the statement at hand, disconnects and exits with status 0.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>

#include <libpq-fe.h>

/* Rows asked of events_since() at a time. */
#define CATCH_UP_BATCH "1000"
/*
 * With nothing heard for this long, catch up anyway: notifications can be
 * skipped, events never are.  A liveness check too.
 */
#define DEFAULT_CATCH_UP_SECONDS 5
#define MAX_CATCH_UP_SECONDS 3600
/* Reconnect delays: doubled after every failed attempt, up to the maximum. */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* A payment_id is at most 128 characters of UTF-8. */
#define PAYMENT_ID_SIZE (128 * 4 + 1)
#define STATUS_SIZE 32
/* Nesting allowed in payload values the listener does not use. */
#define JSON_MAX_DEPTH 32

/* The part of a paysync event the shop acts on. */
typedef struct ShopEvent
{
	long long	event_id;
	char		payment_id[PAYMENT_ID_SIZE];
	char		status[STATUS_SIZE];
} ShopEvent;

/* What became of one event. */
typedef enum ApplyResult
{
	APPLY_DONE,					/* applied now */
	APPLY_SKIPPED,				/* applied before */
	APPLY_FAILED				/* not applied; reconnect and catch up */
} ApplyResult;

/* Shop tables, created if missing (a real service has them in migrations). */
static const char *const shop_ddl =
"SET client_min_messages = warning;"
"CREATE TABLE IF NOT EXISTS shop.applied_events ("
"  event_id bigint PRIMARY KEY,"
"  payment_id text NOT NULL,"
"  status text NOT NULL,"
"  applied_at timestamptz NOT NULL DEFAULT now());"
"CREATE TABLE IF NOT EXISTS shop.order_payments ("
"  payment_id text PRIMARY KEY,"
"  status text NOT NULL,"
"  event_id bigint NOT NULL,"
"  updated_at timestamptz NOT NULL DEFAULT now());"
"CREATE TABLE IF NOT EXISTS shop.applied_refund_events ("
"  event_id bigint PRIMARY KEY,"
"  refund_id text NOT NULL,"
"  payment_id text NOT NULL,"
"  status text NOT NULL,"
"  applied_at timestamptz NOT NULL DEFAULT now());"
"CREATE TABLE IF NOT EXISTS shop.order_refunds ("
"  refund_id text PRIMARY KEY,"
"  payment_id text NOT NULL,"
"  status text NOT NULL,"
"  event_id bigint NOT NULL,"
"  updated_at timestamptz NOT NULL DEFAULT now());";

static volatile sig_atomic_t stop_requested = 0;
static sigset_t stop_signals;

static const char *notify_channel = "paysync";
static const char *refund_notify_channel = "paysync_refunds";
static int	catch_up_ms = DEFAULT_CATCH_UP_SECONDS * 1000;

/* Largest event_id known to be in shop.applied_events. */
static long long last_applied = 0;

/* Largest event_id in shop.applied_refund_events. */
static long long last_refund = 0;

/* An event whose COMMIT was sent but never answered, and its transaction. */
static bool in_doubt = false;
static ShopEvent doubt_event;


/* Notes that SIGTERM or SIGINT arrived; the loops check it. */
static void
handle_stop_signal(int signo)
{
	(void) signo;
	stop_requested = 1;
}

/* Writes one line to stderr (without the newline libpq's messages end in). */
static void
log_msg(const char *fmt,...)
{
	va_list		args;
	char		line[2048];
	size_t		len;

	va_start(args, fmt);
	vsnprintf(line, sizeof(line), fmt, args);
	va_end(args);
	len = strlen(line);
	while (len > 0 && line[len - 1] == '\n')
		line[--len] = '\0';
	fprintf(stderr, "listener: %s\n", line);
}

/* Logs a failed statement with the server's or libpq's message. */
static void
log_failure(PGconn *conn, PGresult *res, const char *what)
{
	const char *msg = res ? PQresultErrorMessage(res) : "";

	if (msg[0] == '\0')
		msg = PQerrorMessage(conn);
	log_msg("%s failed: %s", what, msg[0] ? msg : "(no message)");
}

/*
 * Waits until fd (if >= 0) is readable, timeout_ms passes or a stop signal
 * arrives.  The stop signals are blocked between the check of stop_requested
 * and pselect(), which unblocks them atomically, so none is missed.  Returns
 * pselect's result (-1 with EINTR for a signal).
 */
static int
wait_readable(int fd, int timeout_ms)
{
	sigset_t	old_mask;
	fd_set		readable;
	struct timespec timeout;
	int			rc = -1;

	timeout.tv_sec = timeout_ms / 1000;
	timeout.tv_nsec = (long) (timeout_ms % 1000) * 1000000L;
	FD_ZERO(&readable);
	if (fd >= 0)
		FD_SET(fd, &readable);

	sigprocmask(SIG_BLOCK, &stop_signals, &old_mask);
	if (stop_requested)
		errno = EINTR;
	else
		rc = pselect(fd >= 0 ? fd + 1 : 0, &readable, NULL, NULL, &timeout,
					 &old_mask);
	sigprocmask(SIG_SETMASK, &old_mask, NULL);
	return rc;
}

/* Prints the line the order service's log (and the tests) read. */
static void
report_applied(const ShopEvent *event)
{
	printf("applied %lld %s %s\n", event->event_id, event->payment_id,
		   event->status);
	fflush(stdout);
}

/* Logs the server's notices and warnings like the listener's own lines. */
static void
log_notice(void *arg, const char *message)
{
	(void) arg;
	log_msg("server: %s", message);
}

/* Runs a statement that returns no rows; false (logged) if it failed. */
static bool
exec_command(PGconn *conn, const char *sql)
{
	PGresult   *res = PQexec(conn, sql);
	bool		ok = PQresultStatus(res) == PGRES_COMMAND_OK;

	if (!ok)
		log_failure(conn, res, sql);
	PQclear(res);
	return ok;
}

/*
 * Applies one event in one transaction, unless it was applied before.
 *
 * The INSERT into shop.applied_events is the idempotency check: its primary
 * key lets an event_id in once, whoever (this process before a restart,
 * another instance) tries again.  The order's own change is made in the
 * same transaction, so both or neither are there.
 */
static ApplyResult
apply_event(PGconn *conn, const ShopEvent *event)
{
	char		event_id[32];
	const char *params[3];
	PGresult   *res;

	if (event->event_id <= last_applied)
		return APPLY_SKIPPED;

	snprintf(event_id, sizeof(event_id), "%lld", event->event_id);
	params[0] = event_id;
	params[1] = event->payment_id;
	params[2] = event->status;

	if (!exec_command(conn, "BEGIN"))
		return APPLY_FAILED;

	res = PQexecParams(conn,
					   "INSERT INTO shop.applied_events (event_id, payment_id, status) "
					   "VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING "
					   "RETURNING event_id",
					   3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_failure(conn, res, "recording the event");
		PQclear(res);
		exec_command(conn, "ROLLBACK");
		return APPLY_FAILED;
	}
	if (PQntuples(res) == 0)
	{
		/*
		 * Applied before: change nothing.  If it is the event whose COMMIT
		 * was in doubt, that COMMIT took effect after all (the INSERT
		 * waited for it): it was applied by this process, so report it.
		 */
		PQclear(res);
		if (!exec_command(conn, "ROLLBACK"))
			return APPLY_FAILED;
		last_applied = event->event_id;
		if (in_doubt && doubt_event.event_id == event->event_id)
		{
			in_doubt = false;
			report_applied(event);
		}
		return APPLY_SKIPPED;
	}
	PQclear(res);

	/*
	 * The order service's own change.  A real shop would mark the order
	 * paid (or cancelled) here and queue what follows, in this transaction.
	 */
	res = PQexecParams(conn,
					   "INSERT INTO shop.order_payments AS o (payment_id, status, event_id) "
					   "VALUES ($2, $3, $1) "
					   "ON CONFLICT (payment_id) DO UPDATE "
					   "SET status = excluded.status, event_id = excluded.event_id, "
					   "    updated_at = now() "
					   "WHERE o.event_id < excluded.event_id",
					   3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		log_failure(conn, res, "updating the order");
		PQclear(res);
		exec_command(conn, "ROLLBACK");
		return APPLY_FAILED;
	}
	PQclear(res);

	res = PQexec(conn, "COMMIT");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		/*
		 * No answer, or an error that may have come after the commit (the
		 * server shutting down): it may have committed.  Reconnect and ask.
		 */
		log_failure(conn, res, "COMMIT");
		in_doubt = true;
		doubt_event = *event;
		PQclear(res);
		return APPLY_FAILED;
	}
	PQclear(res);

	if (in_doubt && doubt_event.event_id == event->event_id)
		in_doubt = false;
	last_applied = event->event_id;
	report_applied(event);
	return APPLY_DONE;
}

/*
 * After a reconnect: did the COMMIT whose answer was lost take effect?  The
 * event's row in shop.applied_events says so, on whichever server this is
 * (a transaction id would not: a promoted standby that never received the
 * COMMIT may have given the same id to another transaction).  If the row
 * is there, the event was applied by this process and is reported now;
 * if not, the catch-up that follows applies it, and if the old COMMIT
 * lands first after all, apply_event() reports it then.  False if the
 * query fails.
 */
static bool
resolve_in_doubt(PGconn *conn)
{
	char		event_id[32];
	const char *params[1];
	PGresult   *res;
	bool		applied;

	if (!in_doubt)
		return true;

	snprintf(event_id, sizeof(event_id), "%lld", doubt_event.event_id);
	params[0] = event_id;
	res = PQexecParams(conn,
					   "SELECT EXISTS (SELECT FROM shop.applied_events WHERE event_id = $1)",
					   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_failure(conn, res, "looking up the event whose COMMIT was in doubt");
		PQclear(res);
		return false;
	}
	applied = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	log_msg("event %lld, whose COMMIT was in doubt: %s", doubt_event.event_id,
			applied ? "applied" : "not applied, applying it again");
	if (applied)
	{
		in_doubt = false;
		if (doubt_event.event_id > last_applied)
			last_applied = doubt_event.event_id;
		report_applied(&doubt_event);
	}
	return true;
}

/* Copies a column of a catch-up row into dst; false if it does not fit. */
static bool
copy_column(char *dst, size_t size, PGresult *res, int row, int col)
{
	const char *value = PQgetvalue(res, row, col);

	if (strlen(value) >= size)
		return false;
	memcpy(dst, value, strlen(value) + 1);
	return true;
}

/*
 * Applies every event after last_applied, reading events_since() until it
 * returns nothing.  False on a failure (reconnect) or a stop signal.
 */
static bool
catch_up(PGconn *conn)
{
	for (;;)
	{
		char		after[32];
		const char *params[1];
		PGresult   *res;
		int			rows;

		snprintf(after, sizeof(after), "%lld", last_applied);
		params[0] = after;
		res = PQexecParams(conn,
						   "SELECT event_id, payment_id, status "
						   "FROM paysync.events_since($1, " CATCH_UP_BATCH ")",
						   1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			log_failure(conn, res, "events_since");
			PQclear(res);
			return false;
		}
		rows = PQntuples(res);
		for (int i = 0; i < rows; i++)
		{
			ShopEvent	event;

			event.event_id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
			if (!copy_column(event.payment_id, sizeof(event.payment_id), res, i, 1) ||
				!copy_column(event.status, sizeof(event.status), res, i, 2))
			{
				log_msg("event %lld: value too long", event.event_id);
				PQclear(res);
				return false;
			}
			if (apply_event(conn, &event) == APPLY_FAILED || stop_requested)
			{
				PQclear(res);
				return false;
			}
		}
		PQclear(res);
		if (rows == 0)
			return true;
	}
}

/*
 * Applies every refund event after last_refund, reading
 * refund_events_since() until it returns nothing.  Each is applied in one
 * statement: its row in shop.applied_refund_events (whose primary key lets
 * it in once) and the refund's status, together or not at all.  False on
 * a failure (reconnect) or a stop signal.
 */
static bool
catch_up_refunds(PGconn *conn)
{
	for (;;)
	{
		char		after[32];
		const char *params[1];
		PGresult   *res;
		int			rows;

		snprintf(after, sizeof(after), "%lld", last_refund);
		params[0] = after;
		res = PQexecParams(conn,
						   "WITH ev AS ("
						   "  SELECT event_id, refund_id, payment_id, status::text AS status"
						   "  FROM paysync.refund_events_since($1, " CATCH_UP_BATCH ")),"
						   " applied AS ("
						   "  INSERT INTO shop.applied_refund_events (event_id, refund_id, payment_id, status)"
						   "  SELECT * FROM ev ON CONFLICT (event_id) DO NOTHING"
						   "  RETURNING event_id, refund_id, payment_id, status),"
						   " refunds AS ("
						   "  INSERT INTO shop.order_refunds AS o (refund_id, payment_id, status, event_id)"
						   "  SELECT DISTINCT ON (refund_id) refund_id, payment_id, status, event_id"
						   "  FROM applied ORDER BY refund_id, event_id DESC"
						   "  ON CONFLICT (refund_id) DO UPDATE"
						   "  SET status = excluded.status, event_id = excluded.event_id,"
						   "      updated_at = now()"
						   "  WHERE o.event_id < excluded.event_id)"
						   " SELECT ev.event_id, ev.refund_id, ev.payment_id, ev.status,"
						   "        a.event_id IS NOT NULL"
						   " FROM ev LEFT JOIN applied a USING (event_id) ORDER BY ev.event_id",
						   1, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
		{
			log_failure(conn, res, "refund_events_since");
			PQclear(res);
			return false;
		}
		rows = PQntuples(res);
		for (int i = 0; i < rows; i++)
		{
			last_refund = strtoll(PQgetvalue(res, i, 0), NULL, 10);
			if (strcmp(PQgetvalue(res, i, 4), "t") == 0)
				printf("refund %s %s %s %s\n", PQgetvalue(res, i, 0),
					   PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
					   PQgetvalue(res, i, 3));
		}
		fflush(stdout);
		PQclear(res);
		if (rows == 0 || stop_requested)
			return !stop_requested;
	}
}

/* Skips JSON whitespace. */
static const char *
json_skip_space(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

/* Reads 4 hex digits of a \u escape; -1 if they are not. */
static long
json_hex4(const char *p)
{
	long		value = 0;

	for (int i = 0; i < 4; i++)
	{
		char		c = p[i];

		value <<= 4;
		if (c >= '0' && c <= '9')
			value |= c - '0';
		else if (c >= 'a' && c <= 'f')
			value |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			value |= c - 'A' + 10;
		else
			return -1;
	}
	return value;
}

/* Encodes a code point as UTF-8 into out; returns the length. */
static int
utf8_encode(unsigned long cp, char *out)
{
	if (cp < 0x80)
	{
		out[0] = (char) cp;
		return 1;
	}
	if (cp < 0x800)
	{
		out[0] = (char) (0xC0 | (cp >> 6));
		out[1] = (char) (0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000)
	{
		out[0] = (char) (0xE0 | (cp >> 12));
		out[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char) (0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char) (0xF0 | (cp >> 18));
	out[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char) (0x80 | (cp & 0x3F));
	return 4;
}

/*
 * Reads the JSON string starting at p (its opening quote) into buf, NUL
 * terminated, decoding escapes; buf may be NULL to just skip it.  Returns
 * the position after the closing quote, or NULL if the string is not valid
 * JSON, holds a NUL or does not fit in size bytes.
 */
static const char *
json_string(const char *p, char *buf, size_t size)
{
	size_t		len = 0;

	if (*p != '"')
		return NULL;
	p++;
	while (*p != '"')
	{
		char		out[4];
		int			n = 1;

		if ((unsigned char) *p < 0x20)
			return NULL;		/* control character, or the end */
		if (*p != '\\')
			out[0] = *p++;
		else
		{
			p++;
			switch (*p)
			{
				case '"':
				case '\\':
				case '/':
					out[0] = *p;
					break;
				case 'b':
					out[0] = '\b';
					break;
				case 'f':
					out[0] = '\f';
					break;
				case 'n':
					out[0] = '\n';
					break;
				case 'r':
					out[0] = '\r';
					break;
				case 't':
					out[0] = '\t';
					break;
				case 'u':
					{
						long		cp = json_hex4(p + 1);

						if (cp <= 0)
							return NULL;	/* bad digits, or \u0000 */
						p += 4;
						if (cp >= 0xD800 && cp <= 0xDBFF)
						{
							long		low;

							if (p[1] != '\\' || p[2] != 'u')
								return NULL;
							low = json_hex4(p + 3);
							if (low < 0xDC00 || low > 0xDFFF)
								return NULL;
							cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
							p += 6;
						}
						else if (cp >= 0xDC00 && cp <= 0xDFFF)
							return NULL;
						n = utf8_encode((unsigned long) cp, out);
						break;
					}
				default:
					return NULL;
			}
			p++;
		}
		if (buf)
		{
			if (len + n >= size)
				return NULL;
			memcpy(buf + len, out, n);
		}
		len += n;
	}
	if (buf)
		buf[len] = '\0';
	return p + 1;
}

/*
 * Skips the JSON value at p: a payload may gain keys the listener does not
 * know, of any type.  Returns the position after it, or NULL if invalid.
 */
static const char *
json_skip_value(const char *p, int depth)
{
	char		close;

	p = json_skip_space(p);
	if (*p == '"')
		return json_string(p, NULL, 0);
	if (*p != '{' && *p != '[')
	{
		/* number, true, false, null */
		size_t		n = strspn(p, "+-.0123456789eEtruefalsn");

		return n > 0 ? p + n : NULL;
	}
	if (depth >= JSON_MAX_DEPTH)
		return NULL;
	close = *p == '{' ? '}' : ']';
	p = json_skip_space(p + 1);
	if (*p == close)
		return p + 1;
	for (;;)
	{
		if (close == '}')
		{
			p = json_string(p, NULL, 0);
			if (p == NULL)
				return NULL;
			p = json_skip_space(p);
			if (*p++ != ':')
				return NULL;
		}
		p = json_skip_value(p, depth + 1);
		if (p == NULL)
			return NULL;
		p = json_skip_space(p);
		if (*p == close)
			return p + 1;
		if (*p++ != ',')
			return NULL;
		p = json_skip_space(p);
	}
}

/*
 * Reads event_id, payment_id and status from a notification's payload, a
 * JSON object such as {"event_id": 42, "payment_id": "T1", "status":
 * "succeeded", ...}.  False if it is not one or lacks any of them.
 */
static bool
parse_payload(const char *payload, ShopEvent *event)
{
	const char *p = json_skip_space(payload);
	bool		have_id = false,
				have_payment = false,
				have_status = false;

	if (*p++ != '{')
		return false;
	p = json_skip_space(p);
	while (*p != '}')
	{
		char		key[16];
		const char *after_key = json_string(p, key, sizeof(key));

		if (after_key == NULL)
		{
			/* a key too long to be one of ours, or invalid */
			key[0] = '\0';
			after_key = json_string(p, NULL, 0);
			if (after_key == NULL)
				return false;
		}
		p = json_skip_space(after_key);
		if (*p++ != ':')
			return false;
		p = json_skip_space(p);

		if (strcmp(key, "event_id") == 0)
		{
			char	   *end;

			errno = 0;
			event->event_id = strtoll(p, &end, 10);
			if (end == p || errno != 0 || event->event_id <= 0)
				return false;
			p = end;
			have_id = true;
		}
		else if (strcmp(key, "payment_id") == 0)
		{
			p = json_string(p, event->payment_id, sizeof(event->payment_id));
			have_payment = p != NULL;
		}
		else if (strcmp(key, "status") == 0)
		{
			p = json_string(p, event->status, sizeof(event->status));
			have_status = p != NULL;
		}
		else
			p = json_skip_value(p, 1);
		if (p == NULL)
			return false;

		p = json_skip_space(p);
		if (*p == ',')
			p = json_skip_space(p + 1);
		else if (*p != '}')
			return false;
	}
	return have_id && have_payment && have_status;
}

/*
 * Handles the notifications libpq has read.  The next event is applied from
 * its payload; an event already applied is skipped; one further ahead, or a
 * payload that cannot be read, means catching up with events_since().
 * False on a failure (reconnect) or a stop signal.
 */
static bool
handle_notifications(PGconn *conn)
{
	PGnotify   *notify;
	bool		refund_heard = false;

	while ((notify = PQnotifies(conn)) != NULL)
	{
		ShopEvent	event;
		bool		ok = true;

		if (strcmp(notify->relname, refund_notify_channel) == 0)
		{
			refund_heard = true;
			PQfreemem(notify);
			continue;
		}
		if (!parse_payload(notify->extra, &event))
		{
			log_msg("unreadable payload, catching up: %s", notify->extra);
			ok = catch_up(conn);
		}
		else if (event.event_id <= last_applied)
			;					/* applied before, e.g. by the catch-up */
		else if (event.event_id == last_applied + 1)
			ok = apply_event(conn, &event) != APPLY_FAILED;
		else
		{
			/* possibly a gap before it */
			log_msg("event %lld after %lld: catching up", event.event_id,
					last_applied);
			ok = catch_up(conn);
		}
		PQfreemem(notify);
		if (!ok || stop_requested)
			return false;
	}
	return !refund_heard || catch_up_refunds(conn);
}

/*
 * Waits for notifications and applies them until the connection is lost or
 * a stop signal arrives.  With nothing heard for catch_up_ms it catches
 * up anyway: paysync may have committed events without their notifications
 * (under notification queue pressure); it also finds out whether the
 * server is still there.
 */
static void
listen_loop(PGconn *conn)
{
	while (!stop_requested)
	{
		int			rc;

		if (!handle_notifications(conn))
			return;
		rc = wait_readable(PQsocket(conn), catch_up_ms);
		if (rc < 0)
		{
			if (errno == EINTR)
				continue;
			log_msg("pselect: %s", strerror(errno));
			return;
		}
		if (rc == 0)
		{
			if (!catch_up(conn) || !catch_up_refunds(conn))
				return;
			continue;
		}
		if (!PQconsumeInput(conn))
		{
			log_msg("connection lost: %s", PQerrorMessage(conn));
			return;
		}
	}
}

/*
 * Connects, creates the shop's tables if missing, runs LISTEN and reads
 * last_applied from shop.applied_events.  NULL (logged) on a failure.
 */
static PGconn *
open_session(const char *conninfo)
{
	const char *const keywords[] = {"connect_timeout",
		"fallback_application_name", "dbname", NULL};
	const char *const values[] = {"10", "paysync-listener-c", conninfo, NULL};
	PGconn	   *conn;
	char	   *channel;
	char		listen[256];
	PGresult   *res;

	conn = PQconnectdbParams(keywords, values, 1);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		log_msg("connection failed: %s", PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeProcessor(conn, log_notice, NULL);
	if (!exec_command(conn, shop_ddl))
		goto fail;

	channel = PQescapeIdentifier(conn, notify_channel, strlen(notify_channel));
	if (channel == NULL)
		goto fail;
	snprintf(listen, sizeof(listen), "LISTEN %s", channel);
	PQfreemem(channel);
	if (!exec_command(conn, listen))
		goto fail;
	channel = PQescapeIdentifier(conn, refund_notify_channel, strlen(refund_notify_channel));
	if (channel == NULL)
		goto fail;
	snprintf(listen, sizeof(listen), "LISTEN %s", channel);
	PQfreemem(channel);
	if (!exec_command(conn, listen))
		goto fail;

	res = PQexec(conn, "SELECT coalesce(max(event_id), 0) FROM shop.applied_events");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_failure(conn, res, "reading the last applied event");
		PQclear(res);
		goto fail;
	}
	last_applied = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	res = PQexec(conn, "SELECT coalesce(max(event_id), 0) FROM shop.applied_refund_events");
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		log_failure(conn, res, "reading the last applied refund event");
		PQclear(res);
		goto fail;
	}
	last_refund = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	log_msg("connected, listening on \"%s\" and \"%s\", last applied event %lld, refund event %lld",
			notify_channel, refund_notify_channel, last_applied, last_refund);
	return conn;

fail:
	PQfinish(conn);
	return NULL;
}

/*
 * Runs sessions until a stop signal: each one connects, resolves a COMMIT
 * left in doubt, catches up and then listens.  Between sessions it waits
 * BACKOFF_MIN_MS, doubling after each failure up to BACKOFF_MAX_MS.
 */
int
main(int argc, char **argv)
{
	const char *conninfo;
	struct sigaction action;
	int			backoff_ms = BACKOFF_MIN_MS;

	if (argc > 2 || (argc == 2 && strcmp(argv[1], "--help") == 0))
	{
		fprintf(stderr, "usage: %s [CONNINFO]\n", argv[0]);
		return 2;
	}
	conninfo = argc == 2 ? argv[1] : getenv("PAYSYNC_DSN");
	if (conninfo == NULL)
		conninfo = "";
	if (getenv("PAYSYNC_NOTIFY_CHANNEL") && getenv("PAYSYNC_NOTIFY_CHANNEL")[0])
		notify_channel = getenv("PAYSYNC_NOTIFY_CHANNEL");
	if (getenv("PAYSYNC_REFUND_NOTIFY_CHANNEL") && getenv("PAYSYNC_REFUND_NOTIFY_CHANNEL")[0])
		refund_notify_channel = getenv("PAYSYNC_REFUND_NOTIFY_CHANNEL");
	if (getenv("PAYSYNC_CATCH_UP_SECONDS") && getenv("PAYSYNC_CATCH_UP_SECONDS")[0])
	{
		const char *text = getenv("PAYSYNC_CATCH_UP_SECONDS");
		char	   *end;
		long		seconds = strtol(text, &end, 10);

		if (*end != '\0' || seconds < 1 || seconds > MAX_CATCH_UP_SECONDS)
		{
			fprintf(stderr, "listener: invalid PAYSYNC_CATCH_UP_SECONDS \"%s\": give 1 to %d seconds\n",
					text, MAX_CATCH_UP_SECONDS);
			return 2;
		}
		catch_up_ms = (int) seconds * 1000;
	}

	/* No SA_RESTART: a stop signal interrupts a wait at once. */
	memset(&action, 0, sizeof(action));
	action.sa_handler = handle_stop_signal;
	sigemptyset(&action.sa_mask);
	sigaction(SIGTERM, &action, NULL);
	sigaction(SIGINT, &action, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&stop_signals);
	sigaddset(&stop_signals, SIGTERM);
	sigaddset(&stop_signals, SIGINT);

	while (!stop_requested)
	{
		PGconn	   *conn = open_session(conninfo);

		if (conn != NULL && resolve_in_doubt(conn) && catch_up(conn) &&
			catch_up_refunds(conn))
		{
			log_msg("caught up to event %lld, refund event %lld", last_applied, last_refund);
			backoff_ms = BACKOFF_MIN_MS;
			listen_loop(conn);
		}
		if (conn != NULL)
			PQfinish(conn);
		if (stop_requested)
			break;

		log_msg("reconnecting in %d ms", backoff_ms);
		wait_readable(-1, backoff_ms);
		backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
	}
	log_msg("stopped at event %lld", last_applied);
	return 0;
}
