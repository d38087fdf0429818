--
-- state_machine: every rule of the contract's "Checking and scheduling",
-- driven through paysync._claim() and paysync._record_answers() with canned
-- answers.  Each scenario runs in one transaction, where now() stands still:
-- times are shown relative to it and nothing races a clock.  The only
-- randomness, the +-20% jitter of error backoff, is checked as bounds, and
-- the backoff itself through paysync._error_delay() with a fixed jitter.
--
\i sql/regress_setup.psql

SET client_min_messages = warning;
DROP EXTENSION IF EXISTS paysync CASCADE;
RESET client_min_messages;
CREATE EXTENSION paysync;

SELECT paysync.create_channel('wallet', 'http_json', 'http://127.0.0.1:9',
	'{"status_map": {"PAID": "succeeded", "WAIT": "pending"}}');
SELECT paysync.create_channel('other', 'http_json', 'http://127.0.0.1:9',
	'{"status_map": {"PAID": "succeeded"}}');
SELECT paysync.create_channel('off', 'http_json', 'http://127.0.0.1:9',
	'{"status_map": {"PAID": "succeeded"}}');
UPDATE paysync.channels SET enabled = false WHERE name = 'off';

-- An answer to the payment's current attempt (attempts_back: an older one).
CREATE FUNCTION pg_temp.ans(id text, status paysync.payment_status,
							channel_status text DEFAULT NULL,
							error text DEFAULT NULL,
							retry_after_s integer DEFAULT NULL,
							paid_amount bigint DEFAULT NULL,
							paid_currency text DEFAULT NULL,
							is_close boolean DEFAULT false,
							close_on_expiry boolean DEFAULT false,
							attempts_back integer DEFAULT 0)
RETURNS paysync._answer LANGUAGE sql AS $$
	SELECT ROW(ans.id, p.attempts - ans.attempts_back, ans.status,
			   ans.channel_status, ans.error, ans.retry_after_s, ans.paid_amount,
			   ans.paid_currency, ans.is_close, ans.close_on_expiry, NULL)::paysync._answer
	FROM paysync.payments p WHERE p.payment_id = ans.id
$$;

-- Records answers; shows the final statuses reached per channel.
CREATE FUNCTION pg_temp.rec(VARIADIC answers paysync._answer[])
RETURNS TABLE (channel text, status paysync.payment_status, payments bigint)
LANGUAGE sql AS $$
	SELECT * FROM paysync._record_answers(answers) ORDER BY 1, 2
$$;

-- A payment as the rules see it, times relative to now().
CREATE FUNCTION pg_temp.show(id text)
RETURNS TABLE (status paysync.payment_status, channel_status text, step integer,
			   attempts integer, errors integer, due_in interval,
			   claimed boolean, checked_now boolean, closing boolean,
			   last_error text, finalized_now boolean)
LANGUAGE sql AS $$
	SELECT p.status, p.channel_status, p.step, p.attempts, p.errors,
		   p.next_check_at - now(), p.claimed_until IS NOT NULL,
		   p.last_checked_at = now(), p.closing, p.last_error,
		   p.finalized_at = now()
	FROM paysync.payments p WHERE p.payment_id = id
$$;

-- The events of a payment.
CREATE FUNCTION pg_temp.events(id text)
RETURNS TABLE (previous paysync.payment_status, status paysync.payment_status,
			   channel_status text, source text)
LANGUAGE sql AS $$
	SELECT e.previous, e.status, e.channel_status, e.source
	FROM paysync.events e WHERE e.payment_id = id ORDER BY e.event_id
$$;

-- Makes payments due now.
CREATE FUNCTION pg_temp.due(VARIADIC ids text[]) RETURNS void
LANGUAGE sql AS $$
	UPDATE paysync.payments SET next_check_at = now() - interval '1 second'
	WHERE payment_id = ANY (ids)
$$;

--
-- The backoff after errors: min(2^(errors-1) s, 5 min), the jitter applied,
-- or Retry-After if later, itself at most one hour; no overflow however
-- many errors.
--
SELECT n AS errors, paysync._error_delay(n, NULL, 1.0) AS delay
FROM unnest(ARRAY[1, 2, 3, 4, 5, 8, 9, 10, 1024, 1025, 2147483647]) n;
SELECT paysync._error_delay(1, NULL, 0.8) AS low, paysync._error_delay(1, NULL, 1.2) AS high,
	   paysync._error_delay(10, NULL, 1.2) AS capped_high;
SELECT paysync._error_delay(1, 30, 1.0) AS retry_after_later,
	   paysync._error_delay(9, 30, 1.0) AS backoff_later,
	   paysync._error_delay(1, 999999999, 1.0) AS retry_after_capped,
	   paysync._error_delay(1, -5, 1.0) AS negative_retry_after;

--
-- track(): the first check is due schedule[1] after tracking, never after
-- the deadline.
--
BEGIN;
SELECT payment_id, next_check_at - now() AS due_in
FROM paysync.track('S-TRACK', 'wallet', schedule => '{10s,1min}');
SELECT payment_id, next_check_at - now() AS due_in
FROM paysync.track('S-TRACK-DEADLINE', 'wallet', schedule => '{10s,1min}',
				   expires_at => now() + interval '3 seconds');
-- the channel's schedule option, else the built-in default
SELECT paysync.create_channel('slow', 'http_json', 'http://127.0.0.1:9',
	'{"status_map": {"PAID": "succeeded"}, "schedule": ["1h", "2h"]}');
SELECT payment_id, schedule, next_check_at - now() AS due_in
FROM paysync.track('S-TRACK-CHANNEL', 'slow');
SELECT payment_id, schedule FROM paysync.track('S-TRACK-DEFAULT', 'wallet');
ROLLBACK;

--
-- Claims: due payments only, oldest due first, of enabled channels, within
-- max_rows and the free slots of the channels the checker names with a
-- limit; a claim is the next attempt and lasts the channel's claim time (the
-- default one for a channel not named).
--
BEGIN;
SELECT count(*) FROM (
	SELECT paysync.track('S-C' || i, CASE WHEN i <= 4 THEN 'wallet' ELSE 'other' END,
						 schedule => '{1min}')
	FROM generate_series(1, 6) i) t;
SELECT (paysync.track('S-C-OFF', 'off', schedule => '{1min}')).payment_id IS NOT NULL AS tracked;
-- S-C1..S-C3 and S-C5, S-C6 and the disabled channel's payment are due, oldest first
UPDATE paysync.payments SET next_check_at = now() - make_interval(secs => 10 - i)
FROM (VALUES ('S-C1', 1), ('S-C2', 2), ('S-C3', 3), ('S-C5', 4), ('S-C6', 5),
			 ('S-C-OFF', 0)) v(id, i)
WHERE payment_id = v.id;
-- wallet has 2 free slots, other no limit (NULL) and a claim time of its
-- own; off, disabled and not named, is not claimed from
SELECT payment_id, channel, attempts, now() - due_at AS overdue,
	   claimed_until - now() AS claim
FROM paysync._claim(10, 15000, ARRAY['wallet', 'other'], ARRAY[NULL, 2500],
					ARRAY[2, NULL])
ORDER BY due_at;
SELECT payment_id, attempts, next_check_at - now() AS due_in,
	   claimed_until - now() AS claim
FROM paysync.payments WHERE payment_id LIKE 'S-C%' ORDER BY payment_id;
-- a channel with no free slot (paused, out of rate, at its cap) is not
-- claimed from
SELECT count(*) AS claimed_blocked FROM paysync._claim(10, 15000, ARRAY['wallet'],
													   ARRAY[NULL]::int[], ARRAY[0]);
-- claimed payments are not due again until their claim lapses; max_rows
-- counts over all channels; no channel named: all at the default claim time
SELECT payment_id, claimed_until - now() AS claim
FROM paysync._claim(1, 15000, '{}', '{}', '{}');
SELECT count(*) AS claimed_again FROM paysync._claim(10, 15000, '{}', '{}', '{}');
ROLLBACK;

--
-- "pending" from the channel: step + 1, the next check due schedule[step + 1]
-- after the answer, errors reset; the claim ends.
--
BEGIN;
SELECT (paysync.track('S-P', 'wallet', schedule => '{10s,30s,1min}')).payment_id IS NOT NULL AS tracked;
UPDATE paysync.payments SET errors = 3, last_error = 'old error' WHERE payment_id = 'S-P';
SELECT pg_temp.due('S-P');
SELECT count(*) AS claimed FROM paysync._claim(10, 15000, '{}', '{}', '{}');
SELECT * FROM pg_temp.rec(pg_temp.ans('S-P', 'pending', 'WAIT'));
SELECT * FROM pg_temp.show('S-P');
SELECT * FROM pg_temp.rec(pg_temp.ans('S-P', 'pending', NULL));
SELECT * FROM pg_temp.show('S-P');
-- schedule used up, no deadline: the last pending answer expires it
SELECT * FROM pg_temp.rec(pg_temp.ans('S-P', 'pending', 'STILL_WAIT'));
SELECT * FROM pg_temp.show('S-P');
SELECT * FROM pg_temp.events('S-P');
ROLLBACK;

--
-- Schedule used up with expires_at ahead: the last delay repeats, never
-- past the deadline; an answer at or after expires_at still saying pending
-- expires the payment.
--
BEGIN;
SELECT (paysync.track('S-R', 'wallet', schedule => '{10s,1min}',
					 expires_at => now() + interval '150 seconds')).payment_id IS NOT NULL AS tracked;
SELECT * FROM pg_temp.rec(pg_temp.ans('S-R', 'pending'));
SELECT step, next_check_at - now() AS due_in FROM paysync.payments WHERE payment_id = 'S-R';
SELECT * FROM pg_temp.rec(pg_temp.ans('S-R', 'pending'));
SELECT step, next_check_at - now() AS due_in FROM paysync.payments WHERE payment_id = 'S-R';
UPDATE paysync.payments SET expires_at = now() + interval '20 seconds' WHERE payment_id = 'S-R';
SELECT * FROM pg_temp.rec(pg_temp.ans('S-R', 'pending'));
SELECT step, next_check_at - now() AS due_in FROM paysync.payments WHERE payment_id = 'S-R';
UPDATE paysync.payments SET expires_at = now() WHERE payment_id = 'S-R';
SELECT * FROM pg_temp.rec(pg_temp.ans('S-R', 'pending', 'WAIT'));
SELECT * FROM pg_temp.show('S-R');
SELECT * FROM pg_temp.events('S-R');
ROLLBACK;

--
-- A final status from the channel is taken (source poll); a paid amount or
-- currency other than the payment's makes it failed, saying why.
--
BEGIN;
SELECT count(*) FROM (
	SELECT paysync.track(id, 'wallet', 1999, 'CNY')
	FROM unnest(ARRAY['S-F1', 'S-F2', 'S-F3', 'S-F4', 'S-F5']) id) t;
SELECT (paysync.track('S-F6', 'other', 500)).payment_id IS NOT NULL AS tracked;
SELECT * FROM pg_temp.rec(
	pg_temp.ans('S-F1', 'succeeded', 'PAID', paid_amount => 1999, paid_currency => 'cny'),
	pg_temp.ans('S-F2', 'succeeded', 'PAID', paid_amount => 1990, paid_currency => 'CNY'),
	pg_temp.ans('S-F3', 'succeeded', 'PAID', paid_amount => 1999, paid_currency => 'USD'),
	pg_temp.ans('S-F4', 'closed', 'CLOSED'),
	pg_temp.ans('S-F5', 'succeeded', 'PAID'),
	pg_temp.ans('S-F6', 'cancelled', NULL));
SELECT payment_id, status, channel_status, last_error, step, next_check_at,
	   claimed_until, finalized_at = now() AS finalized_now
FROM paysync.payments WHERE payment_id LIKE 'S-F%' ORDER BY payment_id;
SELECT payment_id, previous, status, channel_status, source
FROM paysync.events WHERE payment_id LIKE 'S-F%' ORDER BY payment_id;
-- a final payment never changes again: a late answer is ignored
SELECT * FROM pg_temp.rec(pg_temp.ans('S-F4', 'succeeded', 'PAID'));
SELECT status, channel_status FROM paysync.payments WHERE payment_id = 'S-F4';
ROLLBACK;

--
-- Errors: errors + 1, last_error, step kept, checked again after the
-- backoff (+-20%) or Retry-After if later, never past a deadline ahead; an
-- error never expires a payment, not even after "pending" answers used up
-- the schedule, nor at or after expires_at.  A good answer resets errors.
--
BEGIN;
SELECT count(*) FROM (
	SELECT paysync.track(id, 'wallet', schedule => '{10s,20s,30s}')
	FROM unnest(ARRAY['S-E1', 'S-E2', 'S-E3', 'S-E4']) id) t;
SELECT (paysync.track('S-E5', 'wallet', schedule => '{10s,20s}')).payment_id IS NOT NULL AS tracked;
SELECT * FROM pg_temp.rec(pg_temp.ans('S-E1', 'pending', 'WAIT'));
SELECT * FROM pg_temp.rec(pg_temp.ans('S-E1', NULL, error => 'HTTP 503 from the channel'));
SELECT status, channel_status, step, errors, last_error,
	   next_check_at - now() BETWEEN interval '0.8 s' AND interval '1.2 s' AS backoff_1s
FROM paysync.payments WHERE payment_id = 'S-E1';
SELECT * FROM pg_temp.rec(pg_temp.ans('S-E1', NULL, error => 'timeout'));
SELECT * FROM pg_temp.rec(pg_temp.ans('S-E1', NULL, error => 'timeout'));
SELECT step, errors,
	   next_check_at - now() BETWEEN interval '3.2 s' AND interval '4.8 s' AS backoff_4s
FROM paysync.payments WHERE payment_id = 'S-E1';
-- Retry-After later than the backoff wins, capped at one hour
SELECT * FROM pg_temp.rec(pg_temp.ans('S-E2', NULL, error => 'HTTP 429', retry_after_s => 90),
						  pg_temp.ans('S-E3', NULL, error => 'HTTP 429', retry_after_s => 999999999));
SELECT payment_id, next_check_at - now() AS due_in
FROM paysync.payments WHERE payment_id IN ('S-E2', 'S-E3') ORDER BY 1;
-- 2000 errors in a row: no overflow, the 5-minute cap
UPDATE paysync.payments SET errors = 2000 WHERE payment_id = 'S-E4';
SELECT * FROM pg_temp.rec(pg_temp.ans('S-E4', NULL, error => 'not found'));
SELECT errors, next_check_at - now() BETWEEN interval '240 s' AND interval '360 s' AS capped
FROM paysync.payments WHERE payment_id = 'S-E4';
-- never past a deadline still ahead ...
UPDATE paysync.payments SET expires_at = now() + interval '30 seconds' WHERE payment_id = 'S-E3';
SELECT * FROM pg_temp.rec(pg_temp.ans('S-E3', NULL, error => 'HTTP 429', retry_after_s => 3000));
SELECT status, next_check_at - now() AS due_in FROM paysync.payments WHERE payment_id = 'S-E3';
-- ... and an error at or after the deadline does not expire it
UPDATE paysync.payments SET expires_at = now() WHERE payment_id = 'S-E3';
SELECT * FROM pg_temp.rec(pg_temp.ans('S-E3', NULL, error => 'HTTP 502'));
SELECT status, errors, next_check_at > now() AS due_later FROM paysync.payments WHERE payment_id = 'S-E3';
-- after "pending" used up the schedule (no deadline), an error does not expire it
SELECT * FROM pg_temp.rec(pg_temp.ans('S-E5', 'pending', 'WAIT'));
SELECT * FROM pg_temp.rec(pg_temp.ans('S-E5', NULL, error => 'connection refused'));
SELECT status, step, errors, last_error FROM paysync.payments WHERE payment_id = 'S-E5';
-- a good answer resets errors and keeps last_error for the record
SELECT * FROM pg_temp.rec(pg_temp.ans('S-E1', 'pending', 'WAIT'));
SELECT status, step, errors, last_error FROM paysync.payments WHERE payment_id = 'S-E1';
SELECT count(*) AS events FROM paysync.events WHERE payment_id LIKE 'S-E%';
ROLLBACK;

--
-- An answer from an older attempt is not recorded once a newer claim
-- exists (the old claim lapsed and the payment was claimed again).
--
BEGIN;
SELECT (paysync.track('S-A', 'wallet', 100, 'CNY')).payment_id IS NOT NULL AS tracked;
SELECT pg_temp.due('S-A');
SELECT attempts FROM paysync._claim(10, 15000, '{}', '{}', '{}');
CREATE TEMP TABLE first_answer AS
	SELECT pg_temp.ans('S-A', 'failed', 'FAILED') AS a;
UPDATE paysync.payments SET next_check_at = now() - interval '1 second',
	claimed_until = now() - interval '1 second' WHERE payment_id = 'S-A';
SELECT attempts FROM paysync._claim(10, 15000, '{}', '{}', '{}');
SELECT * FROM pg_temp.rec((SELECT a FROM first_answer));
SELECT * FROM pg_temp.show('S-A');
-- the answer to the newer attempt counts
SELECT * FROM pg_temp.rec(pg_temp.ans('S-A', 'succeeded', 'PAID', paid_amount => 100));
SELECT status, attempts FROM paysync.payments WHERE payment_id = 'S-A';
ROLLBACK;

--
-- A report and a poll racing: whichever comes second changes nothing, and
-- there is one event.
--
BEGIN;
SELECT (paysync.track('S-RACE1', 'wallet')).payment_id, (paysync.track('S-RACE2', 'wallet')).payment_id;
CREATE TEMP TABLE poll_answer AS SELECT pg_temp.ans('S-RACE1', 'succeeded', 'PAID') AS a;
SELECT paysync.report('S-RACE1', 'succeeded', 'CALLBACK_PAID');
SELECT * FROM pg_temp.rec((SELECT a FROM poll_answer));
SELECT * FROM pg_temp.rec(pg_temp.ans('S-RACE2', 'failed', 'FAILED'));
SELECT paysync.report('S-RACE2', 'failed') AS changed;
SELECT payment_id, status, channel_status FROM paysync.payments
WHERE payment_id LIKE 'S-RACE%' ORDER BY 1;
SELECT payment_id, status, channel_status, source FROM paysync.events
WHERE payment_id LIKE 'S-RACE%' ORDER BY 1;
ROLLBACK;

--
-- Closing at expiry, on a channel that closes trades paysync gives up on:
-- the payment is marked closing and due at once; the close answer "closed"
-- ends it (source expiry), "succeeded" with the amount ends it succeeded,
-- "pending" or "succeeded" without an expected amount makes it a query again
-- a second later; an error keeps it closing.
--
BEGIN;
SELECT count(*) FROM (
	SELECT paysync.track(id, 'wallet', 700, 'CNY', '{10s}')
	FROM unnest(ARRAY['S-X1', 'S-X2', 'S-X3', 'S-X4', 'S-X5', 'S-X6']) id) t;
-- an error at the last step never starts the close
SELECT * FROM pg_temp.rec(pg_temp.ans('S-X6', NULL, error => 'HTTP 503', close_on_expiry => true));
SELECT status, closing, errors FROM paysync.payments WHERE payment_id = 'S-X6';
SELECT * FROM pg_temp.rec(
	pg_temp.ans('S-X1', 'pending', 'WAIT', close_on_expiry => true),
	pg_temp.ans('S-X2', 'pending', 'WAIT', close_on_expiry => true),
	pg_temp.ans('S-X3', 'pending', 'WAIT', close_on_expiry => true),
	pg_temp.ans('S-X4', 'pending', 'WAIT', close_on_expiry => true),
	pg_temp.ans('S-X5', 'pending', 'WAIT', close_on_expiry => true));
SELECT * FROM pg_temp.show('S-X1');
SELECT * FROM pg_temp.rec(
	pg_temp.ans('S-X1', 'closed', 'CLOSED', is_close => true, close_on_expiry => true),
	pg_temp.ans('S-X2', 'succeeded', 'PAID', paid_amount => 700, paid_currency => 'CNY',
				is_close => true, close_on_expiry => true),
	pg_temp.ans('S-X3', 'pending', NULL, is_close => true, close_on_expiry => true),
	pg_temp.ans('S-X4', 'succeeded', 'PAID', is_close => true, close_on_expiry => true),
	pg_temp.ans('S-X5', NULL, error => 'HTTP 500', is_close => true, close_on_expiry => true));
SELECT payment_id, status, channel_status, step, errors, closing,
	   round(extract(epoch FROM next_check_at - now())) AS due_in_s
FROM paysync.payments WHERE payment_id LIKE 'S-X%' ORDER BY payment_id;
SELECT payment_id, status, source FROM paysync.events
WHERE payment_id LIKE 'S-X%' ORDER BY payment_id;
ROLLBACK;

--
-- A close answered "no such trade" (issue 8): the channel never had the
-- trade, so there is nothing to close: the close answer "expired" ends the
-- payment expired with the channel's word, source expiry.  A close answered
-- "pending" with a retry_after_s (WeChat Pay's USER_PAYING: query again in
-- 5 s) makes it a query again after that long, not a second later.
--
BEGIN;
SELECT count(*) FROM (
	SELECT paysync.track(id, 'wallet', 700, 'CNY', '{10s}')
	FROM unnest(ARRAY['S-N1', 'S-N2', 'S-N3']) id) t;
SELECT * FROM pg_temp.rec(
	pg_temp.ans('S-N1', 'pending', 'ACQ.TRADE_NOT_EXIST', close_on_expiry => true),
	pg_temp.ans('S-N2', 'pending', 'NOTPAY', close_on_expiry => true),
	pg_temp.ans('S-N3', 'pending', 'NOTPAY', close_on_expiry => true));
SELECT * FROM pg_temp.rec(
	pg_temp.ans('S-N1', 'expired', 'ACQ.TRADE_NOT_EXIST', is_close => true, close_on_expiry => true),
	pg_temp.ans('S-N2', 'pending', 'USERPAYING', retry_after_s => 5, is_close => true,
				close_on_expiry => true),
	pg_temp.ans('S-N3', 'pending', 'USERPAYING', retry_after_s => -1, is_close => true,
				close_on_expiry => true));
SELECT payment_id, status, channel_status, errors, closing,
	   round(extract(epoch FROM next_check_at - now())) AS due_in_s,
	   finalized_at = now() AS finalized_now
FROM paysync.payments WHERE payment_id LIKE 'S-N%' ORDER BY payment_id;
SELECT payment_id, previous, status, channel_status, source FROM paysync.events
WHERE payment_id LIKE 'S-N%' ORDER BY payment_id;
ROLLBACK;

--
-- _finalize() ends pending payments only, and each once.
--
BEGIN;
SELECT (paysync.track('S-Z', 'wallet')).payment_id IS NOT NULL AS tracked;
SELECT * FROM paysync._finalize('{S-Z,S-Z-NONE}', '{cancelled,failed}', '{X,Y}', '{report,report}');
SELECT * FROM paysync._finalize('{S-Z}', '{failed}', '{Y}', '{poll}');
SELECT status, channel_status FROM paysync.payments WHERE payment_id = 'S-Z';
ROLLBACK;

--
-- check_now(): due at once, but never more than once a second and never
-- before the channel's Retry-After; a payment in flight or final is left.
--
BEGIN;
SELECT count(*) FROM (
	SELECT paysync.track(id, 'wallet', schedule => '{1h,2h,3h}')
	FROM unnest(ARRAY['S-N1', 'S-N2', 'S-N3', 'S-N4']) id) t;
UPDATE paysync.payments SET last_checked_at = now() - interval '1 minute' WHERE payment_id = 'S-N1';
SELECT * FROM pg_temp.rec(pg_temp.ans('S-N2', 'pending', 'WAIT'),
						  pg_temp.ans('S-N3', NULL, error => 'HTTP 429', retry_after_s => 30));
UPDATE paysync.payments SET claimed_until = now() + interval '5 seconds' WHERE payment_id = 'S-N4';
SELECT paysync.check_now(id) FROM unnest(ARRAY['S-N1', 'S-N2', 'S-N3', 'S-N4']) id;
SELECT payment_id, next_check_at - now() AS due_in, retry_after_until - now() AS retry_after
FROM paysync.payments WHERE payment_id LIKE 'S-N%' ORDER BY payment_id;
-- a good answer forgets the Retry-After
SELECT * FROM pg_temp.rec(pg_temp.ans('S-N3', 'pending', 'WAIT'));
SELECT retry_after_until FROM paysync.payments WHERE payment_id = 'S-N3';
ROLLBACK;

--
-- Each statement of the worker reads the index meant for it whatever the
-- statistics say: taken while no payment was pending (an outage just ended
-- them all) or while all were.  Plans that trusted them walked every due
-- payment: to record a batch, to claim the payments of other channels, or
-- a limited channel's.  3,000 payments of 'wallet' are due; a claim of 10
-- with 'other' limited (5 free slots) and a few answers must read a handful
-- of index entries of pending payments, not thousands.
--
CREATE FUNCTION pg_temp.pending_index_reads() RETURNS bigint
LANGUAGE sql AS $$
	SELECT sum(pg_stat_get_xact_tuples_returned(i))::bigint
	FROM unnest(ARRAY['paysync.payments_due_idx',
					  'paysync.payments_next_check_idx']::regclass[]) i
$$;
CREATE FUNCTION pg_temp.claim_and_record_reads(OUT claimed bigint,
											   OUT claim_reads bigint,
											   OUT record_reads bigint)
LANGUAGE plpgsql AS $$
DECLARE
	before_claim bigint;
	after_claim bigint;
BEGIN
	UPDATE paysync.payments SET next_check_at = now() - interval '1 s'
	WHERE payment_id LIKE 'S-Q%';
	DISCARD PLANS;
	before_claim := pg_temp.pending_index_reads();
	SELECT count(*) INTO claimed
	FROM paysync._claim(10, 15000, '{other}', '{NULL}', '{5}');
	after_claim := pg_temp.pending_index_reads();
	claim_reads := after_claim - before_claim;
	PERFORM pg_temp.rec(pg_temp.ans('S-Q1', 'succeeded', 'PAID'),
						pg_temp.ans('S-Q2', 'pending', 'WAIT'),
						pg_temp.ans('S-Q3', NULL, error => 'HTTP 503'));
	PERFORM paysync._finalize('{S-Q4,S-Q5}', '{cancelled,failed}', '{X,Y}',
							  '{report,report}');
	record_reads := pg_temp.pending_index_reads() - after_claim;
END
$$;
-- (VACUUM: the rows of the blocks rolled back before left index entries)
VACUUM paysync.payments;
-- statistics taken while none was pending
BEGIN;
SELECT count(paysync.track('S-P' || g, 'wallet')) FROM generate_series(1, 3000) g;
SELECT count(*) FROM paysync._finalize(
	ARRAY(SELECT 'S-P' || g FROM generate_series(1, 3000) g),
	array_fill('failed'::paysync.payment_status, ARRAY[3000]),
	array_fill(NULL::text, ARRAY[3000]), array_fill('report'::text, ARRAY[3000]));
ANALYZE paysync.payments;
SELECT count(paysync.track('S-Q' || g, 'wallet', schedule => '{1h,2h}'))
FROM generate_series(1, 3000) g;
SELECT claimed, claim_reads <= 12 AS claim_reads_few, record_reads
FROM pg_temp.claim_and_record_reads();
ROLLBACK;
VACUUM paysync.payments;
-- statistics taken while all were
BEGIN;
SELECT count(paysync.track('S-Q' || g, 'wallet', schedule => '{1h,2h}'))
FROM generate_series(1, 3000) g;
ANALYZE paysync.payments;
SELECT claimed, claim_reads <= 12 AS claim_reads_few, record_reads
FROM pg_temp.claim_and_record_reads();
ROLLBACK;
