/* paysync--0.3--0.4.sql: 0.4, TLS as channels speak it and refunds */

\echo Use "ALTER EXTENSION paysync UPDATE TO '0.4'" to load this file. \quit

/*
 * Open until the last 0.4 issue is done.  Each part below starts with a
 * banner naming what it is for; a part owns its objects.
 */

/* ---- 0.3 follow-ups: the worker is woken whenever work becomes due sooner ---- */

/*
 * check_now() also wakes the worker when the payment is already due (say a
 * DBA set next_check_at by hand): see paysync._check_now below, which
 * check_now() and check_refund_now() share.
 */

/*
 * Whatever moves a payment's next check earlier (an UPDATE by hand, a
 * script of the shop's) wakes the worker at commit, so that it never
 * sleeps past it on the due time it knew.  Not the worker's own writes:
 * a claimed payment (claimed_until ahead) is answered and rescheduled by
 * the worker itself, and a claim only moves next_check_at later.  The
 * WHEN clause keeps the recording of answers free of any call.
 */
CREATE FUNCTION paysync._wake_for_earlier_check()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM paysync._wake_worker_at_commit(NEW.next_check_at);
	RETURN NULL;
END
$$;

CREATE TRIGGER payments_check_earlier
	AFTER UPDATE OF next_check_at ON paysync.payments
	FOR EACH ROW
	WHEN (NEW.next_check_at < OLD.next_check_at
		  AND (OLD.claimed_until IS NULL OR OLD.claimed_until <= now()))
	EXECUTE FUNCTION paysync._wake_for_earlier_check();

REVOKE ALL ON FUNCTION paysync._wake_for_earlier_check() FROM PUBLIC;

/* ---- Refunds ---- */

/*
 * A refund is tracked like a payment, and by the same state machine: one
 * claim, one recording of answers and one way to end, each serving both
 * tables (see "One state machine, two tables" below).  A refund's key is
 * the id the channel queries it by; it belongs to one tracked payment and
 * to that payment's channel.
 */
CREATE TABLE paysync.refunds (
	refund_id		text PRIMARY KEY,
	payment_id		text NOT NULL REFERENCES paysync.payments (payment_id),
	channel			text NOT NULL REFERENCES paysync.channels (name),
	status			paysync.payment_status NOT NULL DEFAULT 'pending',
	channel_status	text,
	amount_minor	bigint,
	currency		text,
	schedule		interval[] NOT NULL,
	step			integer NOT NULL DEFAULT 0,
	attempts		integer NOT NULL DEFAULT 0,
	errors			integer NOT NULL DEFAULT 0,
	next_check_at	timestamptz,
	last_checked_at timestamptz,
	last_error		text,
	expires_at		timestamptz,
	metadata		jsonb,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	finalized_at	timestamptz,
	/* while a check is in flight: when its claim lapses */
	claimed_until	timestamptz,
	/* until when the channel asked (Retry-After) not to be asked again */
	retry_after_until timestamptz,
	CONSTRAINT refunds_refund_id_check
		CHECK (length(refund_id) BETWEEN 1 AND 128
			   AND refund_id !~ '[[:cntrl:]]'),
	CONSTRAINT refunds_final_check
		CHECK ((status = 'pending') = (finalized_at IS NULL)
			   AND (status = 'pending' OR next_check_at IS NULL))
);

/*
 * The indexes of payments, for the same statements (see "Pending, spelt
 * three ways" in paysync--0.2--0.3.sql: the same three spellings hold
 * here), and a payment's refunds (the amount rules, prune()).
 */
CREATE INDEX refunds_next_check_idx ON paysync.refunds (next_check_at)
	WHERE finalized_at IS NULL;
CREATE INDEX refunds_due_idx ON paysync.refunds (channel, next_check_at)
	WHERE status = 'pending';
CREATE INDEX refunds_finalized_idx ON paysync.refunds (finalized_at)
	WHERE status <> 'pending';
CREATE INDEX refunds_payment_id_idx ON paysync.refunds (payment_id);

SELECT pg_catalog.pg_extension_config_dump('paysync.refunds', '');

-- A final status is never left: refuse any update that would.
CREATE FUNCTION paysync._refunds_keep_final()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'refund "%" is already %, it cannot become %',
		OLD.refund_id, OLD.status, NEW.status
		USING ERRCODE = 'object_not_in_prerequisite_state';
END
$$;

-- A refund's next check moved earlier by hand wakes the worker, as a
-- payment's does (paysync._wake_for_earlier_check above).
CREATE TRIGGER refunds_check_earlier
	AFTER UPDATE OF next_check_at ON paysync.refunds
	FOR EACH ROW
	WHEN (NEW.next_check_at < OLD.next_check_at
		  AND (OLD.claimed_until IS NULL OR OLD.claimed_until <= now()))
	EXECUTE FUNCTION paysync._wake_for_earlier_check();

CREATE TRIGGER refunds_keep_final
	BEFORE UPDATE ON paysync.refunds
	FOR EACH ROW
	WHEN (OLD.status <> 'pending' AND NEW.status IS DISTINCT FROM OLD.status)
	EXECUTE FUNCTION paysync._refunds_keep_final();

/*
 * A refund's status change is an event with refund_id set (payment_id is
 * the refund's payment).  One event per payment and one per refund: the
 * unique index says so with refund_id NULL for a payment's own event.
 */
ALTER TABLE paysync.events ADD COLUMN refund_id text;
DROP INDEX paysync.events_payment_id_idx;
CREATE UNIQUE INDEX events_payment_id_idx ON paysync.events (payment_id, refund_id)
	NULLS NOT DISTINCT;

/*
 * One state machine, two tables.  The rules of "Checking and scheduling"
 * are written once, in the statements below, over the rows of both tables
 * read side by side (a payment's row has refund_id NULL): the new state of
 * each row (its status, step, errors, next check...) is worked out once,
 * in one SELECT, and each table's UPDATE only copies that state into its
 * rows by key.  A refund has no close (closing is false for it).
 */

-- One answer from a channel: refund_id is set for the answer to a refund's
-- check (payment_id is then the refund's payment).
ALTER TYPE paysync._answer ADD ATTRIBUTE refund_id text;

/*
 * Ends pending payments and refunds (refund_ids[i] NULL: payment_ids[i] is
 * a payment; else the refund refund_ids[i]): each takes its final status
 * (the channel's word kept if given), is no longer due or claimed, and
 * gets its one event with the given source.  For the answer to a check
 * (checked), the check is accounted too: errors reset, last_checked_at
 * now, step moved on by steps, last_error set when given.  Rows no longer
 * pending are left alone.  Returns the payments and refunds it ended.
 * Every way a payment or refund ends comes through here, in one update of
 * its row.  "Still pending" is spelt status::text = 'pending' (by key:
 * see "Pending, spelt three ways").
 */
DROP FUNCTION paysync._finalize(text[], paysync.payment_status[], text[], text[],
								text[], integer[], boolean);
CREATE FUNCTION paysync._finalize(payment_ids text[],
								  statuses paysync.payment_status[],
								  channel_statuses text[], sources text[],
								  last_errors text[] DEFAULT NULL,
								  steps integer[] DEFAULT NULL,
								  checked boolean DEFAULT false,
								  refund_ids text[] DEFAULT NULL)
RETURNS TABLE (payment_id text, channel text, status paysync.payment_status,
			   refund_id text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
	/* PL/pgSQL keeps the plan for the session: this runs once per batch */
	RETURN QUERY
	WITH final AS (
		SELECT * FROM unnest(payment_ids, statuses, channel_statuses, sources,
							 last_errors, steps, refund_ids)
			AS f(payment_id, status, channel_status, source, last_error, step,
				 refund_id)
		WHERE f.status <> 'pending'
	), cur_p AS (
		SELECT p.payment_id, NULL::text AS refund_id, p.channel_status,
			   p.last_error, p.step, p.errors, p.last_checked_at, f.status,
			   f.channel_status AS said, f.last_error AS error, f.step AS steps,
			   f.source
		FROM final f
		JOIN paysync.payments p ON p.payment_id = f.payment_id
		WHERE f.refund_id IS NULL AND p.status::text = 'pending'
		FOR UPDATE OF p
	), cur_r AS (
		SELECT r.payment_id, r.refund_id, r.channel_status,
			   r.last_error, r.step, r.errors, r.last_checked_at, f.status,
			   f.channel_status AS said, f.last_error AS error, f.step AS steps,
			   f.source
		FROM final f
		JOIN paysync.refunds r ON r.refund_id = f.refund_id
		WHERE f.refund_id IS NOT NULL AND r.status::text = 'pending'
		FOR UPDATE OF r
	), ending AS (
		/* the one place the end of a payment or refund is worked out */
		SELECT c.payment_id, c.refund_id, c.status, c.source,
			   coalesce(c.said, c.channel_status) AS channel_status,
			   coalesce(c.error, c.last_error) AS last_error,
			   c.step + coalesce(c.steps, 0) AS step,
			   CASE WHEN checked THEN 0 ELSE c.errors END AS errors,
			   CASE WHEN checked THEN now() ELSE c.last_checked_at END AS last_checked_at
		FROM (SELECT * FROM cur_p UNION ALL SELECT * FROM cur_r) c
	), changed_p AS (
		UPDATE paysync.payments p
		SET status = e.status, channel_status = e.channel_status,
			next_check_at = NULL, claimed_until = NULL, retry_after_until = NULL,
			last_error = e.last_error, step = e.step, errors = e.errors,
			last_checked_at = e.last_checked_at,
			finalized_at = now(), updated_at = now()
		FROM ending e
		WHERE e.refund_id IS NULL AND p.payment_id = e.payment_id
		RETURNING p.payment_id, NULL::text AS refund_id, p.channel, p.status,
				  p.channel_status, e.source
	), changed_r AS (
		UPDATE paysync.refunds r
		SET status = e.status, channel_status = e.channel_status,
			next_check_at = NULL, claimed_until = NULL, retry_after_until = NULL,
			last_error = e.last_error, step = e.step, errors = e.errors,
			last_checked_at = e.last_checked_at,
			finalized_at = now(), updated_at = now()
		FROM ending e
		WHERE e.refund_id IS NOT NULL AND r.refund_id = e.refund_id
		RETURNING r.payment_id, r.refund_id, r.channel, r.status,
				  r.channel_status, e.source
	), changed AS (
		SELECT * FROM changed_p UNION ALL SELECT * FROM changed_r
	), event AS (
		INSERT INTO paysync.events (payment_id, refund_id, channel, previous,
									status, channel_status, source)
		SELECT c.payment_id, c.refund_id, c.channel, 'pending', c.status,
			   c.channel_status, c.source
		FROM changed c
		ORDER BY c.payment_id, c.refund_id NULLS FIRST
		RETURNING 1
	)
	SELECT c.payment_id, c.channel, c.status, c.refund_id FROM changed c;
END
$$;

/*
 * Claims up to max_rows due payments and refunds of enabled channels for
 * checking, oldest due first, skipping rows another checker holds; the
 * rules of paysync--0.2--0.3.sql's claim, for both tables.  A limited
 * channel's free slots are shared by its payments and refunds.  A claim
 * is the row's next attempt: attempts goes up, and it is not due again
 * until the claim lapses.  refund_id is set for a refund (payment_id is
 * then its payment); closing is false for refunds.
 */
DROP FUNCTION paysync._claim(integer, integer, text[], integer[], integer[]);
CREATE FUNCTION paysync._claim(max_rows integer, default_claim_ms integer,
							   channel_names text[],
							   channel_claim_ms integer[],
							   channel_free_slots integer[])
RETURNS TABLE (payment_id text, channel text, attempts integer,
			   due_at timestamptz, claimed_until timestamptz, closing boolean,
			   refund_id text)
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
	), unlimited_p AS (
		/* payments_next_check_idx: see "Pending, spelt three ways" */
		SELECT p.payment_id, NULL::text AS refund_id, p.channel,
			   p.next_check_at AS due_at, p.attempts, p.closing
		FROM paysync.payments p
		JOIN paysync.channels c ON c.name = p.channel AND c.enabled
		WHERE p.finalized_at IS NULL AND p.next_check_at <= now()
			AND p.channel <> ALL (limited)
		ORDER BY p.next_check_at
		LIMIT max_rows
		FOR UPDATE OF p SKIP LOCKED
	), unlimited_r AS (
		SELECT r.payment_id, r.refund_id, r.channel,
			   r.next_check_at AS due_at, r.attempts, false AS closing
		FROM paysync.refunds r
		JOIN paysync.channels c ON c.name = r.channel AND c.enabled
		WHERE r.finalized_at IS NULL AND r.next_check_at <= now()
			AND r.channel <> ALL (limited)
		ORDER BY r.next_check_at
		LIMIT max_rows
		FOR UPDATE OF r SKIP LOCKED
	), limited_both AS (
		/* a limited channel's free slots, shared by its payments and refunds */
		SELECT b.*, row_number() OVER (PARTITION BY b.channel ORDER BY b.due_at) AS nth
		FROM (
			SELECT d.*, l.free_slots
			FROM listed l
			JOIN paysync.channels c ON c.name = l.name AND c.enabled
			CROSS JOIN LATERAL (
				SELECT p.payment_id, NULL::text AS refund_id, p.channel,
					   p.next_check_at AS due_at, p.attempts, p.closing
				FROM paysync.payments p
				/* payments_due_idx only: see "Pending, spelt three ways" */
				WHERE p.channel = l.name AND p.status = 'pending'
					AND p.next_check_at <= now()
				ORDER BY p.next_check_at
				LIMIT least(max_rows, l.free_slots)
				FOR UPDATE SKIP LOCKED
			) d
			WHERE l.free_slots > 0
			UNION ALL
			SELECT d.*, l.free_slots
			FROM listed l
			JOIN paysync.channels c ON c.name = l.name AND c.enabled
			CROSS JOIN LATERAL (
				SELECT r.payment_id, r.refund_id, r.channel,
					   r.next_check_at AS due_at, r.attempts, false AS closing
				FROM paysync.refunds r
				/* refunds_due_idx only */
				WHERE r.channel = l.name AND r.status = 'pending'
					AND r.next_check_at <= now()
				ORDER BY r.next_check_at
				LIMIT least(max_rows, l.free_slots)
				FOR UPDATE SKIP LOCKED
			) d
			WHERE l.free_slots > 0
		) b
	), cand AS (
		SELECT * FROM unlimited_p
		UNION ALL
		SELECT * FROM unlimited_r
		UNION ALL
		SELECT b.payment_id, b.refund_id, b.channel, b.due_at, b.attempts, b.closing
		FROM limited_both b
		WHERE b.nth <= b.free_slots
	), chosen AS (
		/* the one place a claim is worked out: the next attempt, its lapse */
		SELECT cand.payment_id, cand.refund_id, cand.due_at, cand.closing,
			   cand.attempts + 1 AS attempts,
			   now() + make_interval(secs => coalesce(l.claim_ms, default_claim_ms) / 1000.0)
				   AS claimed_until
		FROM cand
		LEFT JOIN listed l ON l.name = cand.channel
		ORDER BY cand.due_at
		LIMIT max_rows
	), claimed_p AS (
		UPDATE paysync.payments p
		SET attempts = ch.attempts, claimed_until = ch.claimed_until,
			next_check_at = ch.claimed_until
		FROM chosen ch
		WHERE ch.refund_id IS NULL AND p.payment_id = ch.payment_id
		RETURNING p.payment_id, p.channel, p.attempts, ch.due_at, p.claimed_until,
				  ch.closing, NULL::text AS refund_id
	), claimed_r AS (
		UPDATE paysync.refunds r
		SET attempts = ch.attempts, claimed_until = ch.claimed_until,
			next_check_at = ch.claimed_until
		FROM chosen ch
		WHERE ch.refund_id IS NOT NULL AND r.refund_id = ch.refund_id
		RETURNING r.payment_id, r.channel, r.attempts, ch.due_at, r.claimed_until,
				  ch.closing, r.refund_id
	)
	SELECT * FROM claimed_p UNION ALL SELECT * FROM claimed_r;
END
$$;

/*
 * Records what the channels answered, about payments and refunds alike
 * (an answer with refund_id set is about that refund).  The rules are
 * those of paysync--0.2--0.3.sql's _record_answers, unchanged, and written
 * once for both: an answer counts only if its row is still pending and
 * still on the attempt that was asked; a status answer resets errors and
 * is taken as it is (source poll), except that "succeeded" with another
 * amount or currency is "failed" (for a refund: the refunded amount), that
 * "pending" moves to the next step of the schedule or gives up (expired,
 * or, for a payment on a channel that closes trades, closing), and the
 * rules of a close's answer; an error: errors + 1, last_error set, step
 * kept, checked again after paysync._error_delay (never past a deadline
 * still ahead).  Returns how many payments of each channel reached each
 * final status (refunds are not counted there).
 */
CREATE OR REPLACE FUNCTION paysync._record_answers(answers paysync._answer[])
RETURNS TABLE (channel text, status paysync.payment_status, payments bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	final_ids	text[];
	final_refunds text[];
	final_statuses paysync.payment_status[];
	final_words	text[];
	final_sources text[];
	final_errors text[];
	final_steps	integer[];
BEGIN
	/* the events lock first, then the rows: report() takes them in this order */
	PERFORM paysync._lock_events();

	WITH cur_p AS (
		SELECT p.payment_id, NULL::text AS refund_id, p.step, p.errors,
			   p.schedule, p.expires_at, p.amount_minor, p.currency, p.closing,
			   p.channel_status AS old_channel_status, p.last_error AS old_error,
			   a.status AS answered, a.channel_status, a.error,
			   a.retry_after_s, a.paid_amount,
			   upper(a.paid_currency) AS paid_currency,
			   coalesce(a.is_close, false) AS is_close,
			   coalesce(a.close_on_expiry, false) AS close_on_expiry
		FROM paysync.payments p
		JOIN unnest(answers) a ON a.payment_id = p.payment_id
		/* by key only: see "Pending, spelt three ways" */
		WHERE a.refund_id IS NULL
			AND p.status::text = 'pending' AND p.attempts = a.attempts
		ORDER BY p.payment_id
		FOR UPDATE OF p
	), cur_r AS (
		SELECT r.payment_id, r.refund_id, r.step, r.errors,
			   r.schedule, r.expires_at, r.amount_minor, r.currency, false,
			   r.channel_status, r.last_error,
			   a.status, a.channel_status, a.error,
			   a.retry_after_s, a.paid_amount,
			   upper(a.paid_currency),
			   false, false
		FROM paysync.refunds r
		JOIN unnest(answers) a ON a.refund_id = r.refund_id
		/* by key only, as for payments */
		WHERE a.refund_id IS NOT NULL
			AND r.status::text = 'pending' AND r.attempts = a.attempts
		ORDER BY r.refund_id
		FOR UPDATE OF r
	), current AS (
		SELECT * FROM cur_p UNION ALL SELECT * FROM cur_r
	), judged AS (
		SELECT c.*,
			c.error IS NULL AND paysync._amount_mismatch(c.answered, c.amount_minor,
														 c.currency, c.paid_amount,
														 c.paid_currency)
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
				paysync._mismatch_error(j.amount_minor, j.currency, j.paid_amount,
										j.paid_currency)
			END AS mismatch_error,
			j.error IS NOT NULL OR j.answered IS NULL AS failed
		FROM judged j
	), still AS (
		/* the one place the new state of a row still pending is worked out */
		SELECT d.payment_id, d.refund_id,
			CASE WHEN d.failed THEN d.old_channel_status
				 ELSE coalesce(d.channel_status, d.old_channel_status) END
				AS channel_status,
			CASE WHEN NOT d.failed AND NOT d.is_close THEN d.step + 1
				 ELSE d.step END AS step,
			CASE WHEN d.failed THEN d.errors + 1 ELSE 0 END AS errors,
			coalesce(d.error, d.mismatch_error,
					 CASE WHEN d.failed THEN 'no answer' END,
					 d.old_error) AS last_error,
			CASE WHEN d.failed AND d.retry_after_s > 0
				THEN now() + make_interval(secs => least(d.retry_after_s, 3600)) END
				AS retry_after_until,
			NOT d.requery AND (d.closing OR (d.gives_up AND d.close_on_expiry))
				AS closing,
			CASE
				WHEN d.failed THEN
					CASE WHEN d.expires_at > now()
						 THEN least(now() + paysync._error_delay(d.errors + 1, d.retry_after_s,
																 0.8 + random() * 0.4),
									d.expires_at)
						 ELSE now() + paysync._error_delay(d.errors + 1, d.retry_after_s,
														   0.8 + random() * 0.4)
					END
				WHEN d.gives_up THEN now()
				/* a second later, or when the close answer asks (WeChat Pay's
				 * USER_PAYING: "query again in 5 s"), at most an hour */
				WHEN d.requery THEN now() + make_interval(secs => greatest(1,
					least(coalesce(d.retry_after_s, 0), 3600)))
				ELSE paysync._next_check_at(d.schedule, d.step + 1, d.expires_at)
			END AS next_check_at
		FROM decided d
		WHERE d.new_status = 'pending'
	), changed_p AS (
		UPDATE paysync.payments p
		SET channel_status = s.channel_status, step = s.step, errors = s.errors,
			last_error = s.last_error, last_checked_at = now(),
			claimed_until = NULL, retry_after_until = s.retry_after_until,
			closing = s.closing, updated_at = now(),
			next_check_at = s.next_check_at
		FROM still s
		WHERE s.refund_id IS NULL AND p.payment_id = s.payment_id
	), changed_r AS (
		UPDATE paysync.refunds r
		SET channel_status = s.channel_status, step = s.step, errors = s.errors,
			last_error = s.last_error, last_checked_at = now(),
			claimed_until = NULL, retry_after_until = s.retry_after_until,
			updated_at = now(),
			next_check_at = s.next_check_at
		FROM still s
		WHERE s.refund_id IS NOT NULL AND r.refund_id = s.refund_id
	), final AS (
		/* the rows that end are updated once, by _finalize() below */
		SELECT d.payment_id, d.refund_id, d.new_status, d.channel_status,
			   d.mismatch_error,
			   CASE WHEN d.is_close THEN 0 ELSE 1 END AS step,
			   CASE WHEN d.new_status = 'expired'
					  OR (d.is_close AND d.new_status = 'closed')
					THEN 'expiry' ELSE 'poll' END AS source
		FROM decided d
		WHERE d.new_status <> 'pending'
	)
	SELECT array_agg(f.payment_id), array_agg(f.refund_id), array_agg(f.new_status),
		   array_agg(f.channel_status), array_agg(f.source),
		   array_agg(f.mismatch_error), array_agg(f.step)
	INTO final_ids, final_refunds, final_statuses, final_words, final_sources,
		 final_errors, final_steps
	FROM final f;

	IF final_ids IS NULL THEN
		RETURN;
	END IF;
	RETURN QUERY
		SELECT f.channel, f.status, count(*)
		FROM paysync._finalize(final_ids, final_statuses, final_words,
							   final_sources, final_errors, final_steps,
							   checked => true, refund_ids => final_refunds) f
		WHERE f.refund_id IS NULL
		GROUP BY f.channel, f.status;
END
$$;

/*
 * report() and report_refund(): one step for both.  refund_id NULL: the
 * payment payment_id; else the refund refund_id.  what names the function
 * in messages.
 */
CREATE FUNCTION paysync._report(payment_id text, refund_id text,
								status paysync.payment_status,
								channel_status text, what text)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	noun		text := CASE WHEN what = 'report' THEN 'payment' ELSE 'refund' END;
	id			text := CASE WHEN what = 'report' THEN payment_id ELSE refund_id END;
	current		paysync.payment_status;
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION '%: %_id must not be null', what, noun
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF status IS NULL THEN
		RAISE EXCEPTION '%: status must not be null', what
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF octet_length(channel_status) > 256 THEN
		RAISE EXCEPTION '%: channel_status "%..." is too long', what, left(channel_status, 32)
			USING ERRCODE = 'string_data_right_truncation',
				  DETAIL = format('It has %s bytes; at most 256 are kept.', octet_length(channel_status));
	END IF;
	IF status IN ('pending', 'expired') THEN
		RAISE EXCEPTION '%: status "%" cannot be reported', what, status
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Report a final status: succeeded, failed, cancelled or closed.';
	END IF;

	/* the events lock first, then the row: the worker takes them in this order */
	PERFORM paysync._lock_events();
	IF what = 'report' THEN
		SELECT p.status INTO current FROM paysync.payments p
		WHERE p.payment_id = _report.payment_id FOR UPDATE;
	ELSE
		SELECT r.status INTO current FROM paysync.refunds r
		WHERE r.refund_id = _report.refund_id FOR UPDATE;
	END IF;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown % "%"', noun, id
			USING ERRCODE = 'no_data_found';
	END IF;

	IF current = status THEN
		RETURN false;
	END IF;
	IF current <> 'pending' THEN
		RAISE EXCEPTION '% "%" is already %, it cannot become %',
			noun, id, current, status
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('A final status never changes; reconcile this %s by hand.', noun);
	END IF;

	PERFORM paysync._finalize(ARRAY[payment_id], ARRAY[status],
							  ARRAY[channel_status], ARRAY['report'],
							  refund_ids => ARRAY[refund_id]);
	RETURN true;
END
$$;

CREATE OR REPLACE FUNCTION paysync.report(payment_id text,
										  status paysync.payment_status,
										  channel_status text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT paysync._report(payment_id, NULL, status, channel_status, 'report')
$$;

-- A refund's outcome from the channel's own callback: as report().
CREATE FUNCTION paysync.report_refund(refund_id text,
									  status paysync.payment_status,
									  channel_status text DEFAULT NULL)
RETURNS boolean
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT paysync._report(NULL, refund_id, status, channel_status, 'report_refund')
$$;

/*
 * check_now() and check_refund_now(): one step for both (refund_id NULL:
 * the payment), with the rules of check_now() above.  A pending row is due
 * at once, but never checked more than once a second, nor before the
 * channel's Retry-After, and the worker is woken (also when it was due
 * already); a final or claimed one is left as it is.
 */
CREATE FUNCTION paysync._check_now(payment_id text, refund_id text, what text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	noun		text := CASE WHEN what = 'check_now' THEN 'payment' ELSE 'refund' END;
	id			text := CASE WHEN what = 'check_now' THEN payment_id ELSE refund_id END;
	current		record;
	due_at		timestamptz;
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION '%: %_id must not be null', what, noun
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF what = 'check_now' THEN
		SELECT p.status, p.claimed_until, p.last_checked_at, p.retry_after_until,
			   p.next_check_at
		INTO current FROM paysync.payments p
		WHERE p.payment_id = _check_now.payment_id FOR UPDATE;
	ELSE
		SELECT r.status, r.claimed_until, r.last_checked_at, r.retry_after_until,
			   r.next_check_at
		INTO current FROM paysync.refunds r
		WHERE r.refund_id = _check_now.refund_id FOR UPDATE;
	END IF;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown % "%"', noun, id
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
		/* already due: the worker may be sleeping towards an older time */
		due_at := current.next_check_at;
	ELSIF what = 'check_now' THEN
		UPDATE paysync.payments p
		SET next_check_at = due_at, updated_at = now()
		WHERE p.payment_id = _check_now.payment_id;
	ELSE
		UPDATE paysync.refunds r
		SET next_check_at = due_at, updated_at = now()
		WHERE r.refund_id = _check_now.refund_id;
	END IF;
	PERFORM paysync._wake_worker_at_commit(due_at);
END
$$;

CREATE OR REPLACE FUNCTION paysync.check_now(payment_id text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT paysync._check_now(payment_id, NULL, 'check_now')
$$;

CREATE FUNCTION paysync.check_refund_now(refund_id text)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT paysync._check_now(NULL, refund_id, 'check_refund_now')
$$;

/*
 * Tracks a refund of a tracked payment (any status), in the caller's
 * transaction; the rules of track() for idempotence, schedule, expiry and
 * the wake-up.  The refund's currency is the payment's (given or not);
 * the refunds of one payment not failed, cancelled or closed may not add
 * up to more than its amount, when the amounts are known.  Concurrent
 * refunds of one payment take turns (the payment's row locked FOR NO KEY
 * UPDATE: a claim or a recording of the payment holds it up only for
 * their short transactions), so that two cannot both pass the amount
 * check.
 */
CREATE FUNCTION paysync.track_refund(refund_id text, payment_id text,
									 amount_minor bigint DEFAULT NULL,
									 currency text DEFAULT NULL,
									 schedule interval[] DEFAULT NULL,
									 expires_at timestamptz DEFAULT NULL,
									 metadata jsonb DEFAULT NULL)
RETURNS paysync.refunds
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	payment		paysync.payments;
	chan		paysync.channels;
	plan		interval[] := schedule;
	refunded	bigint;
	tracked		paysync.refunds;
BEGIN
	IF refund_id IS NULL THEN
		RAISE EXCEPTION 'track_refund: refund_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF payment_id IS NULL THEN
		RAISE EXCEPTION 'track_refund: payment_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF length(refund_id) NOT BETWEEN 1 AND 128 OR refund_id ~ '[[:cntrl:]]' THEN
		RAISE EXCEPTION 'invalid refund_id "%"', left(regexp_replace(refund_id, '[[:cntrl:]]', '?', 'g'), 140)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A refund_id has 1 to 128 characters and no control characters.';
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

	/*
	 * one payment's refunds take turns: the amount check sees them all (a
	 * row lock, not an advisory one: tracking thousands of refunds in one
	 * transaction must not fill the lock table)
	 */
	SELECT * INTO payment FROM paysync.payments p
	WHERE p.payment_id = track_refund.payment_id
	FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown payment "%"', payment_id
			USING ERRCODE = 'no_data_found',
				  HINT = 'Track the payment first with paysync.track().';
	END IF;
	IF currency IS NOT NULL AND payment.currency IS NOT NULL
		AND currency <> payment.currency THEN
		RAISE EXCEPTION 'refund "%" is in %, its payment "%" in %',
			refund_id, currency, payment_id, payment.currency
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A refund is in the currency of its payment.';
	END IF;
	currency := coalesce(currency, payment.currency);

	SELECT * INTO tracked FROM paysync.refunds r WHERE r.refund_id = track_refund.refund_id;
	IF FOUND THEN
		IF tracked.payment_id IS DISTINCT FROM payment_id
			OR tracked.amount_minor IS DISTINCT FROM amount_minor
			OR tracked.currency IS DISTINCT FROM currency THEN
			RAISE EXCEPTION 'refund "%" is already tracked with other details', refund_id
				USING ERRCODE = 'unique_violation',
					  DETAIL = format('Tracked: payment %s, amount_minor %s, currency %s; given: payment %s, amount_minor %s, currency %s.',
									  tracked.payment_id, coalesce(tracked.amount_minor::text, 'null'),
									  coalesce(tracked.currency, 'null'), payment_id,
									  coalesce(amount_minor::text, 'null'), coalesce(currency, 'null'));
		END IF;
		RETURN tracked;
	END IF;

	IF amount_minor IS NOT NULL AND payment.amount_minor IS NOT NULL THEN
		SELECT coalesce(sum(r.amount_minor), 0) INTO refunded
		FROM paysync.refunds r
		WHERE r.payment_id = track_refund.payment_id
			AND r.status NOT IN ('failed', 'cancelled', 'closed');
		IF refunded + amount_minor > payment.amount_minor THEN
			RAISE EXCEPTION 'refund "%" of % would refund more than payment "%" of %',
				refund_id, amount_minor, payment_id, payment.amount_minor
				USING ERRCODE = 'check_violation',
					  DETAIL = format('Its other refunds not failed, cancelled or closed come to %s.', refunded);
		END IF;
	END IF;

	SELECT * INTO chan FROM paysync.channels c WHERE c.name = payment.channel;
	IF plan IS NULL THEN
		plan := paysync._channel_schedule(chan.name, chan.options);
	END IF;
	PERFORM paysync._validate_schedule(plan);

	INSERT INTO paysync.refunds AS r
		(refund_id, payment_id, channel, amount_minor, currency, schedule,
		 expires_at, metadata, next_check_at)
	VALUES (refund_id, payment_id, payment.channel, amount_minor, currency, plan,
			expires_at, metadata, paysync._next_check_at(plan, 0, expires_at))
	ON CONFLICT ON CONSTRAINT refunds_pkey DO NOTHING
	RETURNING * INTO tracked;

	IF NOT FOUND THEN
		/* tracked meanwhile, for another payment (same payment: the lock) */
		RAISE EXCEPTION 'refund "%" is already tracked with other details', refund_id
			USING ERRCODE = 'unique_violation';
	END IF;
	PERFORM paysync._wake_worker_at_commit(tracked.next_check_at);
	RETURN tracked;
END
$$;

/*
 * Events after after_event_id, oldest first, at most max_rows: a refund's
 * (refunds) or a payment's; what names the caller in errors.
 */
CREATE FUNCTION paysync._events_since(after_event_id bigint, max_rows integer,
									  refunds boolean, what text)
RETURNS SETOF paysync.events
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF after_event_id IS NULL THEN
		RAISE EXCEPTION '%: after_event_id must not be null', what
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass 0 to read from the first event.';
	END IF;
	IF max_rows IS NULL OR max_rows < 1 THEN
		RAISE EXCEPTION 'invalid max_rows %: it must be at least 1', coalesce(max_rows::text, 'null')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY
		SELECT * FROM paysync.events e
		WHERE e.event_id > after_event_id AND (e.refund_id IS NOT NULL) = refunds
		ORDER BY e.event_id
		LIMIT max_rows;
END
$$;

-- Payment events only, as before 0.4.
CREATE OR REPLACE FUNCTION paysync.events_since(after_event_id bigint,
												max_rows integer DEFAULT 1000)
RETURNS SETOF paysync.events
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT * FROM paysync._events_since(after_event_id, max_rows, false, 'events_since')
$$;

-- Refund events only: how a refund listener catches up.
CREATE FUNCTION paysync.refund_events_since(after_event_id bigint,
											max_rows integer DEFAULT 1000)
RETURNS SETOF paysync.events
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT * FROM paysync._events_since(after_event_id, max_rows, true, 'refund_events_since')
$$;

/*
 * prune(): final refunds finalised more than keep ago go first, with
 * their events; then final payments as before, but only those with no
 * refund left (so never one with a refund not final, nor one whose final
 * refund is younger than keep).
 */
CREATE OR REPLACE FUNCTION paysync.prune(keep interval DEFAULT '90 days')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	cutoff		timestamptz;
	removed		bigint := 0;
	batch		bigint;
BEGIN
	IF keep IS NULL THEN
		RAISE EXCEPTION 'prune: keep must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF keep < '0'::interval THEN
		RAISE EXCEPTION 'invalid keep "%": it must not be negative', keep
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	cutoff := now() - keep;
	LOOP
		WITH doomed AS (
			SELECT r.refund_id, r.payment_id FROM paysync.refunds r
			WHERE r.status <> 'pending' AND r.finalized_at < cutoff
			LIMIT 1000
			FOR UPDATE SKIP LOCKED
		), events_gone AS (
			DELETE FROM paysync.events e USING doomed d
			WHERE e.payment_id = d.payment_id AND e.refund_id = d.refund_id
				AND e.created_at < cutoff
		), refunds_gone AS (
			DELETE FROM paysync.refunds r USING doomed d
			WHERE r.refund_id = d.refund_id
			RETURNING 1
		)
		SELECT count(*) INTO batch FROM refunds_gone;
		EXIT WHEN batch < 1000;
	END LOOP;
	LOOP
		WITH doomed AS (
			/* its refunds went first: one left is pending or recent */
			SELECT p.payment_id FROM paysync.payments p
			WHERE p.status <> 'pending' AND p.finalized_at < cutoff
				AND NOT EXISTS (SELECT 1 FROM paysync.refunds r
								WHERE r.payment_id = p.payment_id)
			LIMIT 1000
			FOR UPDATE SKIP LOCKED
		), events_gone AS (
			DELETE FROM paysync.events e USING doomed d
			WHERE e.payment_id = d.payment_id AND e.created_at < cutoff
		), payments_gone AS (
			DELETE FROM paysync.payments p USING doomed d
			WHERE p.payment_id = d.payment_id
			RETURNING 1
		)
		SELECT count(*) INTO batch FROM payments_gone;
		removed := removed + batch;
		EXIT WHEN batch < 1000;
	END LOOP;
	RETURN removed;
END
$$;

/*
 * paysync.stats gains refunds_pending and refunds_due, last (through
 * refunds_due_idx, as the payments' counts go through payments_due_idx).
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
	   q.erroring,
	   rq.refunds_pending,
	   rq.refunds_due
FROM paysync.channels c
CROSS JOIN LATERAL (
	SELECT count(*) AS pending,
		   count(*) FILTER (WHERE p.next_check_at <= now()) AS due,
		   now() - min(p.next_check_at) FILTER (WHERE p.next_check_at <= now()) AS oldest_due_lag,
		   count(*) FILTER (WHERE p.errors >= 10) AS erroring
	FROM paysync.payments p
	WHERE p.channel = c.name AND p.status = 'pending'
) q
CROSS JOIN LATERAL (
	SELECT count(*) AS refunds_pending,
		   count(*) FILTER (WHERE r.next_check_at <= now()) AS refunds_due
	FROM paysync.refunds r
	WHERE r.channel = c.name AND r.status = 'pending'
) rq
LEFT JOIN paysync._channel_counters() k ON k.channel = c.name
LEFT JOIN paysync._channel_pauses() z ON z.channel = c.name;

-- Whether a success answer's amount is not the one expected: the amount
-- check of a poll and of a notification, for payments and refunds alike
-- (a plain expression, inlined where it is used).
CREATE FUNCTION paysync._amount_mismatch(answered paysync.payment_status,
										 amount_minor bigint, currency text,
										 paid_amount bigint, paid_currency text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
	SELECT coalesce(answered = 'succeeded'
					AND amount_minor IS NOT NULL AND paid_amount IS NOT NULL
					AND (paid_amount <> amount_minor
						 OR (currency IS NOT NULL AND paid_currency IS NOT NULL
							 AND upper(paid_currency) <> currency)), false)
$$;

-- What last_error says of a mismatch.
CREATE FUNCTION paysync._mismatch_error(amount_minor bigint, currency text,
										paid_amount bigint, paid_currency text)
RETURNS text
LANGUAGE sql
IMMUTABLE PARALLEL SAFE
AS $$
	SELECT format('amount mismatch: expected %s %s, channel reports %s %s',
				  amount_minor, coalesce(currency, ''), paid_amount,
				  coalesce(upper(paid_currency), ''))
$$;

/*
 * receive() verifies refund notifications too (the driver names the
 * refund), and applies them like report_refund() with source notify; its
 * result gains a last column, refund_id.  New OUT columns mean a new
 * function; whoever was granted EXECUTE on the old one keeps it.
 */
DROP FUNCTION paysync._verify_notification(text, text, text, jsonb, jsonb, text);
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
											 OUT reply_body text,
											 OUT refund_id text)
RETURNS record
LANGUAGE C
AS 'MODULE_PATHNAME', 'paysync_verify_notification';
REVOKE ALL ON FUNCTION paysync._verify_notification(text, text, text, jsonb, jsonb, text) FROM PUBLIC;

/* kept until the new function is made, in a setting of this transaction */
SELECT set_config('paysync_upgrade.receive_grantees',
				  coalesce(string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
									  ELSE a.grantee::regrole::text END, ', '), ''),
				  true)
FROM pg_proc p, aclexplode(p.proacl) a
WHERE p.oid = 'paysync.receive(text, jsonb, text)'::regprocedure
	AND a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner;

DROP FUNCTION paysync.receive(text, jsonb, text);

/*
 * Verifies a notification of channel and applies it once.  outcome:
 * applied (this call ended the payment or refund), unchanged (already
 * final, or the channel says still pending), checking (not verifiable
 * here, or a success without the amount one with an amount needs: it is
 * made due at once as by check_now()), unknown (no such payment or refund
 * of this channel, or not about one).  refund_id is set for a refund's
 * notification (payment_id is then the refund's payment, when known).
 */
CREATE FUNCTION paysync.receive(channel text, headers jsonb, body text)
RETURNS TABLE (payment_id text, status paysync.payment_status, outcome text,
			   reply_status integer, reply_body text, refund_id text)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
	chan		paysync.channels;
	found_it	record;
	cur_status	paysync.payment_status;
	cur_amount	bigint;
	cur_currency text;
	cur_payment	text;
	new_status	paysync.payment_status;
	mismatch	boolean;
	is_refund	boolean;
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
	is_refund := found_it.refund_id IS NOT NULL;
	receive.payment_id := found_it.payment_id;
	receive.refund_id := found_it.refund_id;
	receive.reply_status := found_it.reply_status;
	receive.reply_body := found_it.reply_body;
	receive.status := NULL;

	IF found_it.payment_id IS NULL AND NOT is_refund THEN
		receive.outcome := CASE WHEN found_it.verified THEN 'unknown' ELSE 'checking' END;
		RETURN NEXT;
		RETURN;
	END IF;

	/* the events lock first, then the row: report() and the worker do so */
	PERFORM paysync._lock_events();
	IF is_refund THEN
		SELECT r.status, r.amount_minor, r.currency, r.payment_id
		INTO cur_status, cur_amount, cur_currency, cur_payment
		FROM paysync.refunds r
		WHERE r.refund_id = found_it.refund_id AND r.channel = chan.name
		FOR UPDATE;
	ELSE
		SELECT p.status, p.amount_minor, p.currency, p.payment_id
		INTO cur_status, cur_amount, cur_currency, cur_payment
		FROM paysync.payments p
		WHERE p.payment_id = found_it.payment_id AND p.channel = chan.name
		FOR UPDATE;
	END IF;
	IF NOT FOUND THEN
		receive.outcome := 'unknown';
		RETURN NEXT;
		RETURN;
	END IF;
	receive.payment_id := cur_payment;
	receive.status := cur_status;

	IF cur_status <> 'pending' THEN
		receive.outcome := 'unchanged';
		RETURN NEXT;
		RETURN;
	END IF;

	/* not believed, or a success whose amount cannot be checked: ask */
	IF NOT found_it.verified
		OR (found_it.status = 'succeeded' AND found_it.paid_amount IS NULL
			AND cur_amount IS NOT NULL) THEN
		PERFORM paysync._check_now(cur_payment, found_it.refund_id,
								   CASE WHEN is_refund THEN 'check_refund_now'
										ELSE 'check_now' END);
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
	mismatch := paysync._amount_mismatch(found_it.status::paysync.payment_status,
										 cur_amount, cur_currency,
										 found_it.paid_amount, found_it.paid_currency);
	new_status := CASE WHEN mismatch THEN 'failed'
					   ELSE found_it.status::paysync.payment_status END;

	PERFORM paysync._finalize(ARRAY[cur_payment], ARRAY[new_status],
							  ARRAY[found_it.channel_status], ARRAY['notify'],
							  last_errors => ARRAY[CASE WHEN mismatch THEN
								  paysync._mismatch_error(cur_amount, cur_currency,
														  found_it.paid_amount,
														  found_it.paid_currency) END],
							  refund_ids => ARRAY[found_it.refund_id]);
	receive.status := new_status;
	receive.outcome := 'applied';
	RETURN NEXT;
END
$$;
REVOKE ALL ON FUNCTION paysync.receive(text, jsonb, text) FROM PUBLIC;

DO $$
DECLARE
	grantees	text := current_setting('paysync_upgrade.receive_grantees');
BEGIN
	IF grantees <> '' THEN
		EXECUTE format('GRANT EXECUTE ON FUNCTION paysync.receive(text, jsonb, text) TO %s',
					   grantees);
	END IF;
END
$$;

/* Privileges: the new internals are for the extension's owner only. */
REVOKE ALL ON paysync.refunds FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._refunds_keep_final() FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._finalize(text[], paysync.payment_status[], text[], text[], text[], integer[], boolean, text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._claim(integer, integer, text[], integer[], integer[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._report(text, text, paysync.payment_status, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._check_now(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._amount_mismatch(paysync.payment_status, bigint, text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._mismatch_error(bigint, text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync.report_refund(text, paysync.payment_status, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync.check_refund_now(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync.track_refund(text, text, bigint, text, interval[], timestamptz, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync._events_since(bigint, integer, boolean, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync.refund_events_since(bigint, integer) FROM PUBLIC;

/* ---- End of Refunds ---- */
