/* paysync--0.2--0.3.sql: the payment state machine in SQL, one owner per fact */

\echo Use "ALTER EXTENSION paysync UPDATE TO '0.3'" to load this file. \quit

/*
 * The payment state machine.  Every rule of the contract's "Checking and
 * scheduling" lives below, in this versioned script, and nowhere else: the
 * worker and run_once() only claim (paysync._claim) and hand over what the
 * channels answered (paysync._record_answers); report() and the answers
 * end a payment through the same step (paysync._finalize).  The C module
 * checks that the installed version is the one it was built for.
 */

-- One answer from a channel, as the checker hands it over.
CREATE TYPE paysync._answer AS (
	payment_id		text,
	attempts		integer,	/* the claim it answers: an older one is ignored */
	status			paysync.payment_status,	/* the channel's, mapped; NULL: error */
	channel_status	text,		/* the channel's own word, or NULL */
	error			text,		/* what went wrong, when status is NULL */
	retry_after_s	integer,	/* the channel's Retry-After, or NULL */
	paid_amount		bigint,		/* what the channel says was paid, or NULL */
	paid_currency	text,
	is_close		boolean,	/* the answer to a close request */
	close_on_expiry boolean		/* the channel closes trades paysync gives up on */
);

-- Until when the channel asked (Retry-After) not to be asked about a
-- payment again; NULL once it answers.  check_now() honours it.
ALTER TABLE paysync.payments ADD COLUMN retry_after_until timestamptz;

-- paysync._error_delay() and paysync._next_check_at() are plain expressions,
-- without a SET search_path so that the planner inlines them into the
-- statements of the SECURITY DEFINER functions that use them (whose
-- search_path is pinned): they run once per answer.

-- The delay before checking again after the errors-th error in a row:
-- min(2^(errors-1) s, 5 min) times jitter (0.8 to 1.2 in use), or the
-- channel's Retry-After if that is later, itself at most one hour.
CREATE FUNCTION paysync._error_delay(errors integer, retry_after_s integer,
									 jitter double precision)
RETURNS interval
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
	SELECT make_interval(secs => greatest(
		least(power(2, least(greatest(errors, 1) - 1, 30)), 300) * jitter,
		least(greatest(coalesce(retry_after_s, 0), 0), 3600)))
$$;

-- When a payment is due next once answered = answers "pending" have come:
-- the next delay of its schedule (the last one repeats), never past its
-- deadline.
CREATE FUNCTION paysync._next_check_at(schedule interval[], answered integer,
									   expires_at timestamptz)
RETURNS timestamptz
LANGUAGE sql
STABLE PARALLEL SAFE
AS $$
	SELECT least(now() + schedule[least(answered + 1, cardinality(schedule))],
				 coalesce(expires_at, 'infinity'))
$$;

-- Ends pending payments: each takes its final status (the channel's word
-- kept if given), is no longer due or claimed, and gets its one event with
-- the given source.  For the answer to a check (checked), the check is
-- accounted too: errors reset, last_checked_at now, step moved on by steps,
-- last_error set when given.  Payments no longer pending are left alone.
-- Returns the payments it ended.  Every way a payment ends comes through
-- here, in one update of its row.
--
-- "Still pending" is spelt status::text = 'pending' here and in
-- _record_answers(), a test no partial index answers (see "Pending, spelt
-- three ways" below), so that the planner reaches each row by its key.
CREATE FUNCTION paysync._finalize(payment_ids text[],
								  statuses paysync.payment_status[],
								  channel_statuses text[], sources text[],
								  last_errors text[] DEFAULT NULL,
								  steps integer[] DEFAULT NULL,
								  checked boolean DEFAULT false)
RETURNS TABLE (payment_id text, channel text, status paysync.payment_status)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
	/* PL/pgSQL keeps the plan for the session: this runs once per batch */
	RETURN QUERY
	WITH final AS (
		SELECT * FROM unnest(payment_ids, statuses, channel_statuses, sources,
							 last_errors, steps)
			AS f(payment_id, status, channel_status, source, last_error, step)
	), changed AS (
		UPDATE paysync.payments p
		SET status = f.status,
			channel_status = coalesce(f.channel_status, p.channel_status),
			next_check_at = NULL,
			claimed_until = NULL,
			retry_after_until = NULL,
			last_error = coalesce(f.last_error, p.last_error),
			step = p.step + coalesce(f.step, 0),
			errors = CASE WHEN checked THEN 0 ELSE p.errors END,
			last_checked_at = CASE WHEN checked THEN now() ELSE p.last_checked_at END,
			finalized_at = now(),
			updated_at = now()
		FROM final f
		WHERE p.payment_id = f.payment_id AND p.status::text = 'pending'
			AND f.status <> 'pending'
		RETURNING p.payment_id, p.channel, p.status, p.channel_status, f.source
	), event AS (
		INSERT INTO paysync.events (payment_id, channel, previous, status,
									channel_status, source)
		SELECT c.payment_id, c.channel, 'pending', c.status, c.channel_status,
			   c.source
		FROM changed c
		ORDER BY c.payment_id
		RETURNING 1
	)
	SELECT c.payment_id, c.channel, c.status FROM changed c;
END
$$;

/*
 * The claim walks due payments in due order through this index, whatever
 * the number of channels defined: its cost follows the work due.
 *
 * Pending, spelt three ways.  A pending payment has status 'pending' and
 * no finalized_at (payments_final_check makes the two the same), and each
 * query says it in the way that leaves the planner only the index meant
 * for it, because the statistics of a payments table swing between "none
 * pending" (just after an outage or a busy hour ended them all) and "all
 * pending", and with either some plans walked every due payment at each
 * claim or batch:
 * - finalized_at IS NULL: this index, for the walk of all channels in due
 *   order (the claim, the next-due look-up);
 * - status = 'pending': payments_due_idx (channel, next_check_at), for one
 *   channel's due payments (a limited channel's claim, paysync.stats);
 * - status::text = 'pending': no partial index, for payments found by their
 *   key (recording answers, ending payments).
 */
CREATE INDEX payments_next_check_idx ON paysync.payments (next_check_at)
	WHERE finalized_at IS NULL;

/*
 * Claims up to max_rows due payments of enabled channels for checking,
 * oldest due first, skipping rows another checker holds.  The channels in
 * channel_names are the exceptions: a claim of theirs lasts
 * channel_claim_ms (NULL: default_claim_ms), and no more than
 * channel_free_slots of them are claimed (NULL: no limit; 0: none, the
 * channel is paused, out of rate or at its cap).  Any other channel's
 * payments are claimed for default_claim_ms with no limit, in one scan of
 * payments_next_check_idx; a limited channel's through its own index
 * range.  A claim is the payment's next attempt: attempts goes up and the
 * payment is not due again until the claim lapses (the claim time is the
 * channel's request timeout and a margin, which only the compiled channel
 * knows); an answer that never comes back (a crash) is thus retried, and
 * an answer to an older attempt is never recorded.
 */
CREATE FUNCTION paysync._claim(max_rows integer, default_claim_ms integer,
							   channel_names text[],
							   channel_claim_ms integer[],
							   channel_free_slots integer[])
RETURNS TABLE (payment_id text, channel text, attempts integer,
			   due_at timestamptz, claimed_until timestamptz, closing boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	limited		text[];
BEGIN
	limited := ARRAY(SELECT u.name
					 FROM unnest(channel_names, channel_free_slots) AS u(name, free_slots)
					 WHERE u.free_slots IS NOT NULL);
	/* PL/pgSQL keeps the plan for the session: this runs once per claim */
	RETURN QUERY
	WITH listed AS (
		SELECT u.name, u.claim_ms, u.free_slots
		FROM unnest(channel_names, channel_claim_ms, channel_free_slots)
			AS u(name, claim_ms, free_slots)
	), unlimited AS (
		SELECT p.payment_id, p.channel, p.next_check_at AS due_at
		FROM paysync.payments p
		JOIN paysync.channels c ON c.name = p.channel AND c.enabled
		WHERE p.finalized_at IS NULL AND p.next_check_at <= now()
			AND p.channel <> ALL (limited)
		ORDER BY p.next_check_at
		LIMIT max_rows
		FOR UPDATE OF p SKIP LOCKED
	), cand AS (
		SELECT u.payment_id, u.channel, u.due_at FROM unlimited u
		UNION ALL
		SELECT d.payment_id, l.name, d.next_check_at
		FROM listed l
		JOIN paysync.channels c ON c.name = l.name AND c.enabled
		CROSS JOIN LATERAL (
			SELECT p.payment_id, p.next_check_at
			FROM paysync.payments p
			/* payments_due_idx only: see "Pending, spelt three ways" */
			WHERE p.channel = l.name AND p.status = 'pending'
				AND p.next_check_at <= now()
			ORDER BY p.next_check_at
			LIMIT least(max_rows, l.free_slots)
			FOR UPDATE SKIP LOCKED
		) d
		WHERE l.free_slots > 0
	), chosen AS (
		SELECT cand.payment_id, cand.due_at,
			   coalesce(l.claim_ms, default_claim_ms) AS claim_ms
		FROM cand
		LEFT JOIN listed l ON l.name = cand.channel
		ORDER BY cand.due_at
		LIMIT max_rows
	)
	UPDATE paysync.payments p
	SET attempts = p.attempts + 1,
		claimed_until = now() + make_interval(secs => chosen.claim_ms / 1000.0),
		next_check_at = now() + make_interval(secs => chosen.claim_ms / 1000.0)
	FROM chosen
	WHERE p.payment_id = chosen.payment_id
	RETURNING p.payment_id, p.channel, p.attempts, chosen.due_at, p.claimed_until,
			  p.closing;
END
$$;

/*
 * Records what the channels answered.  An answer counts only if its payment
 * is still pending and still on the attempt that was asked (a report, or a
 * newer claim after this one lapsed, wins).
 *
 * A status answer resets errors and is taken as it is (source poll), except:
 * - "succeeded" with a paid amount or currency other than the payment's is
 *   "failed", last_error saying so;
 * - "pending" moves to the next step of the schedule (the last delay
 *   repeats while expires_at lies ahead); when the schedule is used up with
 *   no deadline, or the answer came at or after expires_at, paysync gives
 *   up: the payment becomes expired (source expiry), or, on a channel that
 *   closes trades it gives up on, it is marked closing and due at once;
 * - the answer to that close: "closed" ends it closed (source expiry),
 *   "succeeded" (paid meanwhile) ends it succeeded; "pending" (the channel
 *   refused the close without saying why) or "succeeded" without the amount
 *   a payment with one must have makes it a query again a second later, so
 *   the query says which and the amount is checked.
 * An error: errors + 1, last_error set, step kept, checked again after
 * paysync._error_delay (never past a deadline still ahead); an error never
 * ends a payment.  Returns how many payments of each channel reached each
 * final status.
 */
CREATE FUNCTION paysync._record_answers(answers paysync._answer[])
RETURNS TABLE (channel text, status paysync.payment_status, payments bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	final_ids	text[];
	final_statuses paysync.payment_status[];
	final_words	text[];
	final_sources text[];
	final_errors text[];
	final_steps	integer[];
BEGIN
	/* the events lock first, then the rows: report() takes them in this order */
	PERFORM paysync._lock_events();

	WITH current AS (
		SELECT p.payment_id, p.step, p.errors, p.schedule, p.expires_at,
			   p.amount_minor, p.currency,
			   a.status AS answered, a.channel_status, a.error,
			   a.retry_after_s, a.paid_amount,
			   upper(a.paid_currency) AS paid_currency,
			   coalesce(a.is_close, false) AS is_close,
			   coalesce(a.close_on_expiry, false) AS close_on_expiry
		FROM paysync.payments p
		JOIN unnest(answers) a ON a.payment_id = p.payment_id
		/* by key only: see "Pending, spelt three ways" */
		WHERE p.status::text = 'pending' AND p.attempts = a.attempts
		ORDER BY p.payment_id
		FOR UPDATE OF p
	), judged AS (
		SELECT c.*,
			coalesce(c.error IS NULL AND c.answered = 'succeeded'
					 AND c.amount_minor IS NOT NULL AND c.paid_amount IS NOT NULL
					 AND (c.paid_amount <> c.amount_minor
						  OR (c.currency IS NOT NULL AND c.paid_currency IS NOT NULL
							  AND c.paid_currency <> c.currency)), false)
				AS mismatch,
			coalesce(c.error IS NULL AND NOT c.is_close AND c.answered = 'pending'
					 AND (c.expires_at <= now()
						  OR (c.step + 1 >= cardinality(c.schedule)
							  AND c.expires_at IS NULL)), false)
				AS gives_up,
			coalesce(c.error IS NULL AND c.is_close
					 AND (c.answered = 'pending'
						  OR (c.answered = 'succeeded' AND c.paid_amount IS NULL
							  AND c.amount_minor IS NOT NULL)), false)
				AS requery
		FROM current c
	), decided AS (
		SELECT j.*,
			CASE
				WHEN j.error IS NOT NULL OR j.answered IS NULL THEN 'pending'
				WHEN j.requery THEN 'pending'
				WHEN j.mismatch THEN 'failed'
				WHEN j.gives_up AND j.close_on_expiry THEN 'pending'
				WHEN j.gives_up THEN 'expired'
				ELSE j.answered
			END::paysync.payment_status AS new_status,
			CASE WHEN j.mismatch THEN
				format('amount mismatch: expected %s %s, channel reports %s %s',
					   j.amount_minor, coalesce(j.currency, ''), j.paid_amount,
					   coalesce(j.paid_currency, ''))
			END AS mismatch_error,
			j.error IS NOT NULL OR j.answered IS NULL AS failed
		FROM judged j
	), changed AS (
		UPDATE paysync.payments p
		SET channel_status = CASE WHEN d.failed THEN p.channel_status
								  ELSE coalesce(d.channel_status, p.channel_status) END,
			step = CASE WHEN NOT d.failed AND NOT d.is_close THEN p.step + 1
						ELSE p.step END,
			errors = CASE WHEN d.failed THEN p.errors + 1 ELSE 0 END,
			last_error = coalesce(d.error, d.mismatch_error,
								  CASE WHEN d.failed THEN 'no answer' END,
								  p.last_error),
			last_checked_at = now(),
			claimed_until = NULL,
			retry_after_until = CASE WHEN d.failed AND d.retry_after_s > 0
				THEN now() + make_interval(secs => least(d.retry_after_s, 3600)) END,
			closing = NOT d.requery AND (p.closing OR (d.gives_up AND d.close_on_expiry)),
			updated_at = now(),
			next_check_at = CASE
				WHEN d.failed THEN
					CASE WHEN p.expires_at > now()
						 THEN least(now() + paysync._error_delay(p.errors + 1, d.retry_after_s,
																 0.8 + random() * 0.4),
									p.expires_at)
						 ELSE now() + paysync._error_delay(p.errors + 1, d.retry_after_s,
														   0.8 + random() * 0.4)
					END
				WHEN d.gives_up THEN now()
				/* a second later, or when the close answer asks (WeChat Pay's
				 * USER_PAYING: "query again in 5 s"), at most an hour */
				WHEN d.requery THEN now() + make_interval(secs => greatest(1,
					least(coalesce(d.retry_after_s, 0), 3600)))
				ELSE paysync._next_check_at(p.schedule, p.step + 1, p.expires_at)
			END
		FROM decided d
		WHERE p.payment_id = d.payment_id AND d.new_status = 'pending'
	), final AS (
		/* the payments that end are updated once, by _finalize() below */
		SELECT d.payment_id, d.new_status, d.channel_status, d.mismatch_error,
			   CASE WHEN d.is_close THEN 0 ELSE 1 END AS step,
			   CASE WHEN d.new_status = 'expired'
					  OR (d.is_close AND d.new_status = 'closed')
					THEN 'expiry' ELSE 'poll' END AS source
		FROM decided d
		WHERE d.new_status <> 'pending'
	)
	SELECT array_agg(f.payment_id), array_agg(f.new_status),
		   array_agg(f.channel_status), array_agg(f.source),
		   array_agg(f.mismatch_error), array_agg(f.step)
	INTO final_ids, final_statuses, final_words, final_sources,
		 final_errors, final_steps
	FROM final f;

	IF final_ids IS NULL THEN
		RETURN;
	END IF;
	RETURN QUERY
		SELECT f.channel, f.status, count(*)
		FROM paysync._finalize(final_ids, final_statuses, final_words,
							   final_sources, final_errors, final_steps,
							   checked => true) f
		GROUP BY f.channel, f.status;
END
$$;

-- A channel's default schedule: its "schedule" option, else the built-in
-- default.  Read by the compiled channel, the one owner of channel options.
CREATE FUNCTION paysync._channel_schedule(channel text, options jsonb)
RETURNS interval[]
LANGUAGE C STRICT STABLE
AS 'MODULE_PATHNAME', 'paysync_channel_schedule';

/*
 * check_now() never makes a payment checked more than once a second, and
 * honours the channel's Retry-After (payments.retry_after_until).
 */
CREATE OR REPLACE FUNCTION paysync.check_now(payment_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	current		paysync.payments;
	due_at		timestamptz;
BEGIN
	IF payment_id IS NULL THEN
		RAISE EXCEPTION 'check_now: payment_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO current FROM paysync.payments p
	WHERE p.payment_id = check_now.payment_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown payment "%"', payment_id
			USING ERRCODE = 'no_data_found';
	END IF;
	/* final: nothing to do; in flight: its answer is on the way */
	IF current.status <> 'pending' OR current.claimed_until > now() THEN
		RETURN;
	END IF;
	/* at most one check a second, and never before the channel's Retry-After */
	due_at := greatest(now(), current.last_checked_at + interval '1 second',
					   current.retry_after_until);
	IF current.next_check_at <= due_at THEN
		RETURN;
	END IF;
	UPDATE paysync.payments p
	SET next_check_at = due_at, updated_at = now()
	WHERE p.payment_id = check_now.payment_id;
	PERFORM paysync._wake_worker_at_commit(due_at);
END
$$;

/* track() and report() move onto the shared steps above. */

CREATE OR REPLACE FUNCTION paysync.track(payment_id text, channel text,
										 amount_minor bigint DEFAULT NULL,
										 currency text DEFAULT NULL,
										 schedule interval[] DEFAULT NULL,
										 expires_at timestamptz DEFAULT NULL,
										 metadata jsonb DEFAULT NULL)
RETURNS paysync.payments
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	chan		paysync.channels;
	plan		interval[] := schedule;
	tracked		paysync.payments;
BEGIN
	IF payment_id IS NULL THEN
		RAISE EXCEPTION 'track: payment_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF channel IS NULL THEN
		RAISE EXCEPTION 'track: channel must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF length(payment_id) NOT BETWEEN 1 AND 128 OR payment_id ~ '[[:cntrl:]]' THEN
		RAISE EXCEPTION 'invalid payment_id "%"', left(regexp_replace(payment_id, '[[:cntrl:]]', '?', 'g'), 140)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A payment_id has 1 to 128 characters and no control characters.';
	END IF;
	IF amount_minor < 0 THEN
		RAISE EXCEPTION 'invalid amount_minor %', amount_minor
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'An amount must not be negative.';
	END IF;
	IF currency !~ '^[A-Z]{3}$' THEN
		RAISE EXCEPTION 'invalid currency "%"', currency
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use an ISO 4217 code in capitals, such as CNY or USD.';
	END IF;

	SELECT * INTO chan FROM paysync.channels c WHERE c.name = track.channel;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown channel "%"', channel
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it first with paysync.create_channel().';
	END IF;

	IF plan IS NULL THEN
		plan := paysync._channel_schedule(chan.name, chan.options);
	END IF;
	PERFORM paysync._validate_schedule(plan);

	INSERT INTO paysync.payments AS p
		(payment_id, channel, amount_minor, currency, schedule, expires_at,
		 metadata, next_check_at)
	VALUES (payment_id, channel, amount_minor, currency, plan, expires_at,
			metadata, paysync._next_check_at(plan, 0, expires_at))
	ON CONFLICT ON CONSTRAINT payments_pkey DO NOTHING
	RETURNING * INTO tracked;

	IF FOUND THEN
		PERFORM paysync._wake_worker_at_commit(tracked.next_check_at);
		RETURN tracked;
	END IF;

	SELECT * INTO tracked FROM paysync.payments p WHERE p.payment_id = track.payment_id;
	IF tracked.channel IS DISTINCT FROM channel
		OR tracked.amount_minor IS DISTINCT FROM amount_minor
		OR tracked.currency IS DISTINCT FROM currency THEN
		RAISE EXCEPTION 'payment "%" is already tracked with other details', payment_id
			USING ERRCODE = 'unique_violation',
				  DETAIL = format('Tracked: channel %s, amount_minor %s, currency %s; given: channel %s, amount_minor %s, currency %s.',
								  tracked.channel, coalesce(tracked.amount_minor::text, 'null'),
								  coalesce(tracked.currency, 'null'), channel,
								  coalesce(amount_minor::text, 'null'), coalesce(currency, 'null'));
	END IF;
	RETURN tracked;
END
$$;

CREATE OR REPLACE FUNCTION paysync.report(payment_id text,
										  status paysync.payment_status,
										  channel_status text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	current		paysync.payments;
BEGIN
	IF payment_id IS NULL THEN
		RAISE EXCEPTION 'report: payment_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF status IS NULL THEN
		RAISE EXCEPTION 'report: status must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF octet_length(channel_status) > 256 THEN
		RAISE EXCEPTION 'report: channel_status "%..." is too long', left(channel_status, 32)
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = format('It has %s bytes; at most 256 are kept.', octet_length(channel_status));
	END IF;
	IF status IN ('pending', 'expired') THEN
		RAISE EXCEPTION 'report: status "%" cannot be reported', status
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Report a final status: succeeded, failed, cancelled or closed.';
	END IF;

	/* the events lock first, then the row: the worker takes them in this order */
	PERFORM paysync._lock_events();
	SELECT * INTO current FROM paysync.payments p
	WHERE p.payment_id = report.payment_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown payment "%"', payment_id
			USING ERRCODE = 'no_data_found';
	END IF;

	IF current.status = status THEN
		RETURN false;
	END IF;
	IF current.status <> 'pending' THEN
		RAISE EXCEPTION 'payment "%" is already %, it cannot become %',
			payment_id, current.status, status
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'A final status never changes; reconcile this payment by hand.';
	END IF;

	PERFORM paysync._finalize(ARRAY[payment_id], ARRAY[status],
							  ARRAY[channel_status], ARRAY['report']);
	RETURN true;
END
$$;

/* Privileges: the new internals are for the extension's owner only. */

REVOKE ALL ON FUNCTION paysync._error_delay(integer, integer, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._next_check_at(interval[], integer, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._finalize(text[], paysync.payment_status[], text[], text[], text[], integer[], boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._claim(integer, integer, text[], integer[], integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._record_answers(paysync._answer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._channel_schedule(text, jsonb) FROM PUBLIC;
/* 0.2 left it executable by PUBLIC: it lists every channel and its traffic */
REVOKE ALL ON FUNCTION paysync._channel_counters() FROM PUBLIC;

/*
 * 0.2 let a schedule whose first index is not 1 through (such as
 * '[2:3]={1h,2h}'): its payments were never due.  Renumber such schedules
 * from 1 and make their pending payments due now.
 */
UPDATE paysync.payments
SET schedule = schedule[array_lower(schedule, 1):array_upper(schedule, 1)],
	next_check_at = CASE WHEN status = 'pending'
						 THEN coalesce(next_check_at, now()) END
WHERE array_lower(schedule, 1) <> 1;

/* Verified notifications (issue 9) */

/*
 * paysync.receive(): a channel's notification (webhook callback) verified
 * by the channel's driver in C (paysync._verify_notification, which
 * compiles the channel as the checker does) and applied here, in SQL, by
 * the state machine's own step: the amount check of a poll, then
 * paysync._finalize with source 'notify'.  Verification is C because the
 * keys and the drivers' checks of signed answers are there; the state
 * change is SQL because every rule of it lives in this script.
 */
ALTER TABLE paysync.events DROP CONSTRAINT events_source_check;
ALTER TABLE paysync.events ADD CONSTRAINT events_source_check
	CHECK (source IN ('poll', 'report', 'expiry', 'notify'));

-- What a channel's driver makes of a notification; ERROR 28000 if it does
-- not verify.  verified false: the driver cannot verify this channel's
-- notifications (payment_id, if any, is the payment to check at once).
CREATE FUNCTION paysync._verify_notification(channel text, driver text,
											 base_url text, options jsonb,
											 headers jsonb, body text,
											 OUT verified boolean,
											 OUT payment_id text,
											 OUT status text,
											 OUT channel_status text,
											 OUT paid_amount bigint,
											 OUT paid_currency text,
											 OUT reply_status integer,
											 OUT reply_body text)
RETURNS record
LANGUAGE C
AS 'MODULE_PATHNAME', 'paysync_verify_notification';

/*
 * Verifies a notification of channel and applies it once.  outcome:
 * applied (this call ended the payment), unchanged (already final, or the
 * channel says still pending), checking (not verifiable here, or a success
 * without the amount a payment with one needs: the payment is made due at
 * once as by check_now()), unknown (no such payment of this channel, or
 * not about a payment).  reply_status and reply_body are what the endpoint
 * answers the channel.
 */
CREATE FUNCTION paysync.receive(channel text, headers jsonb, body text)
RETURNS TABLE (payment_id text, status paysync.payment_status, outcome text,
			   reply_status integer, reply_body text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	chan		paysync.channels;
	found_it	record;
	current		paysync.payments;
	new_status	paysync.payment_status;
	mismatch	boolean;
BEGIN
	IF receive.channel IS NULL THEN
		RAISE EXCEPTION 'receive: channel must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO chan FROM paysync.channels c WHERE c.name = receive.channel;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown channel "%"', receive.channel
			USING ERRCODE = 'undefined_object';
	END IF;

	SELECT * INTO STRICT found_it
	FROM paysync._verify_notification(chan.name, chan.driver, chan.base_url,
									  chan.options, receive.headers, receive.body) v;
	receive.payment_id := found_it.payment_id;
	receive.reply_status := found_it.reply_status;
	receive.reply_body := found_it.reply_body;
	receive.status := NULL;

	IF found_it.payment_id IS NULL THEN
		receive.outcome := CASE WHEN found_it.verified THEN 'unknown' ELSE 'checking' END;
		RETURN NEXT;
		RETURN;
	END IF;

	/* the events lock first, then the row: report() and the worker do so */
	PERFORM paysync._lock_events();
	SELECT * INTO current FROM paysync.payments p
	WHERE p.payment_id = found_it.payment_id AND p.channel = chan.name
	FOR UPDATE;
	IF NOT FOUND THEN
		receive.outcome := 'unknown';
		RETURN NEXT;
		RETURN;
	END IF;
	receive.status := current.status;

	IF current.status <> 'pending' THEN
		receive.outcome := 'unchanged';
		RETURN NEXT;
		RETURN;
	END IF;

	/* not believed, or a success whose amount cannot be checked: ask */
	IF NOT found_it.verified
		OR (found_it.status = 'succeeded' AND found_it.paid_amount IS NULL
			AND current.amount_minor IS NOT NULL) THEN
		PERFORM paysync.check_now(current.payment_id);
		receive.outcome := 'checking';
		RETURN NEXT;
		RETURN;
	END IF;

	IF found_it.status = 'pending' THEN
		receive.outcome := 'unchanged';
		RETURN NEXT;
		RETURN;
	END IF;

	/* the amount check of a poll (paysync._record_answers) */
	mismatch := found_it.status = 'succeeded'
		AND current.amount_minor IS NOT NULL AND found_it.paid_amount IS NOT NULL
		AND (found_it.paid_amount <> current.amount_minor
			 OR (current.currency IS NOT NULL AND found_it.paid_currency IS NOT NULL
				 AND upper(found_it.paid_currency) <> current.currency));
	new_status := CASE WHEN mismatch THEN 'failed'
					   ELSE found_it.status::paysync.payment_status END;
	IF mismatch THEN
		UPDATE paysync.payments p
		SET last_error = format('amount mismatch: expected %s %s, channel reports %s %s',
								current.amount_minor, coalesce(current.currency, ''),
								found_it.paid_amount, coalesce(upper(found_it.paid_currency), ''))
		WHERE p.payment_id = current.payment_id;
	END IF;

	PERFORM paysync._finalize(ARRAY[current.payment_id], ARRAY[new_status],
							  ARRAY[found_it.channel_status], ARRAY['notify']);
	receive.status := new_status;
	receive.outcome := 'applied';
	RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION paysync._verify_notification(text, text, text, jsonb, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync.receive(text, jsonb, text) FROM PUBLIC;

/* End of verified notifications (issue 9) */

/* NOTIFY queue pressure (issue 10) */

/*
 * PostgreSQL's notification queue moves on only as fast as its slowest
 * listener, and a listening session that sits in a transaction reads
 * nothing: once the queue is full, every transaction that sends NOTIFY
 * fails at commit, and no status change could be recorded at all.  So the
 * events trigger sends its NOTIFYs only while the queue is no fuller than
 * paysync.notify_queue_limit; above it the events are committed without
 * them (listeners find them with events_since), the skipped ones are
 * counted, and the worker names the likely holders in the log.
 */

-- Sends every new event with NOTIFY, in the inserting transaction, unless
-- the notification queue is too full (see above).  C: every recorded batch
-- runs it.
CREATE OR REPLACE FUNCTION paysync._events_notify()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'paysync_events_notify';

/*
 * worker_status() shows the queue's usage and the notifications skipped
 * since the server started, and has one row per worker (paysync.workers),
 * numbered by its last column, worker.  New OUT columns mean a new
 * function; whoever was granted EXECUTE on the old one keeps it on the new
 * one.
 */
DO $$
DECLARE
	grantees	text[];
BEGIN
	SELECT array_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
								   ELSE a.grantee::regrole::text END)
	INTO grantees
	FROM pg_proc p, aclexplode(p.proacl) a
	WHERE p.oid = 'paysync.worker_status()'::regprocedure
		AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner;

	ALTER EXTENSION paysync DROP FUNCTION paysync.worker_status();
	DROP FUNCTION paysync.worker_status();
	CREATE FUNCTION paysync.worker_status(OUT pid integer, OUT state text,
										  OUT started_at timestamptz,
										  OUT in_flight integer,
										  OUT last_error text,
										  OUT last_error_at timestamptz,
										  OUT notify_queue_usage double precision,
										  OUT notifications_skipped bigint,
										  OUT worker integer)
	RETURNS SETOF record
	ROWS 16
	LANGUAGE C
	AS 'MODULE_PATHNAME', 'paysync_worker_status';
	REVOKE ALL ON FUNCTION paysync.worker_status() FROM PUBLIC;
	IF grantees IS NOT NULL THEN
		EXECUTE format('GRANT EXECUTE ON FUNCTION paysync.worker_status() TO %s',
					   array_to_string(grantees, ', '));
	END IF;
END
$$;

/* Politeness and scale (issue 11) */

-- The channels whose circuit breaker has paused them, from shared memory.
CREATE FUNCTION paysync._channel_pauses(OUT channel text, OUT paused_since timestamptz)
RETURNS SETOF record
LANGUAGE C
AS 'MODULE_PATHNAME', 'paysync_channel_pauses';
REVOKE ALL ON FUNCTION paysync._channel_pauses() FROM PUBLIC;

/*
 * paysync.stats gains state (active, paused, disabled), paused_since and
 * erroring (pending payments whose last 10 or more answers were errors:
 * payments.errors counts the errors since the last good answer).  New
 * columns go last, so CREATE OR REPLACE keeps the view and its grants.
 */
CREATE OR REPLACE VIEW paysync.stats AS
SELECT c.name AS channel,
	   q.pending,
	   q.due,
	   q.oldest_due_lag,
	   coalesce(k.in_flight, 0) AS in_flight,
	   coalesce(k.checks_1m, 0) AS checks_1m,
	   coalesce(k.errors_1m, 0) AS errors_1m,
	   round(k.latency_p50_ms::numeric, 1) AS latency_p50_ms,
	   round(k.latency_p99_ms::numeric, 1) AS latency_p99_ms,
	   coalesce(k.succeeded_1h, 0) AS succeeded_1h,
	   coalesce(k.failed_1h, 0) AS failed_1h,
	   coalesce(k.expired_1h, 0) AS expired_1h,
	   CASE WHEN NOT c.enabled THEN 'disabled'
			WHEN z.paused_since IS NOT NULL THEN 'paused'
			ELSE 'active' END AS state,
	   z.paused_since,
	   q.erroring
FROM paysync.channels c
CROSS JOIN LATERAL (
	SELECT count(*) AS pending,
		   count(*) FILTER (WHERE p.next_check_at <= now()) AS due,
		   now() - min(p.next_check_at) FILTER (WHERE p.next_check_at <= now()) AS oldest_due_lag,
		   count(*) FILTER (WHERE p.errors >= 10) AS erroring
	FROM paysync.payments p
	WHERE p.channel = c.name AND p.status = 'pending'
) q
LEFT JOIN paysync._channel_counters() k ON k.channel = c.name
LEFT JOIN paysync._channel_pauses() z ON z.channel = c.name;

/*
 * Checkers keep the channel rows they loaded until a transaction that
 * changed paysync.channels commits (see paysync_channels_changed).
 */
CREATE FUNCTION paysync._channels_changed()
RETURNS trigger
LANGUAGE C
AS 'MODULE_PATHNAME', 'paysync_channels_changed_trigger';
REVOKE ALL ON FUNCTION paysync._channels_changed() FROM PUBLIC;
CREATE TRIGGER channels_changed
	AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON paysync.channels
	FOR EACH STATEMENT EXECUTE FUNCTION paysync._channels_changed();
