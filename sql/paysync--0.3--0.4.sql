/* paysync--0.3--0.4.sql: 0.4, TLS as channels speak it and refunds */

\echo Use "ALTER EXTENSION paysync UPDATE TO '0.4'" to load this file. \quit

/*
 * Open until the last 0.4 issue is done.  Each part below starts with a
 * banner naming what it is for; a part owns its objects.
 */

/* ---- 0.3 follow-ups: the worker is woken whenever work becomes due sooner ---- */

/*
 * check_now() as in 0.3, but it also wakes the worker when the payment is
 * already due (say a DBA set next_check_at by hand): the worker may be
 * sleeping towards an older due time.
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
	IF current.next_check_at > due_at THEN
		UPDATE paysync.payments p
		SET next_check_at = due_at, updated_at = now()
		WHERE p.payment_id = check_now.payment_id;
	ELSE
		due_at := current.next_check_at;
	END IF;
	PERFORM paysync._wake_worker_at_commit(due_at);
END
$$;

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
