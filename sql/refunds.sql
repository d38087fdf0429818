--
-- refunds: the SQL surface of refunds (track_refund, report_refund,
-- check_refund_now, refund_events_since, prune, stats) and the state
-- machine's rules for refunds, through paysync._claim() and
-- paysync._record_answers() with canned answers, as state_machine does for
-- payments.  Each scenario runs in one transaction, where now() stands
-- still.
--
\i sql/regress_setup.psql

SET client_min_messages = warning;
DROP EXTENSION IF EXISTS paysync CASCADE;
RESET client_min_messages;
CREATE EXTENSION paysync;

SELECT paysync.create_channel('wallet', 'http_json', 'http://127.0.0.1:9',
	'{"status_map": {"PAID": "succeeded", "WAIT": "pending"}, "schedule": ["1min", "5min"]}');
SELECT paysync.create_channel('other', 'http_json', 'http://127.0.0.1:9',
	'{"status_map": {"PAID": "succeeded"}}');
SELECT payment_id FROM paysync.track('P-1', 'wallet', 1000, 'CNY', '{1h}');
SELECT payment_id FROM paysync.track('P-NOAMOUNT', 'wallet', schedule => '{1h}');
SELECT payment_id FROM paysync.track('P-OTHER', 'other', 500, 'USD', '{1h}');

-- An answer to a refund's current attempt (attempts_back: an older one).
CREATE FUNCTION pg_temp.ans(id text, status paysync.payment_status,
							channel_status text DEFAULT NULL,
							error text DEFAULT NULL,
							retry_after_s integer DEFAULT NULL,
							paid_amount bigint DEFAULT NULL,
							paid_currency text DEFAULT NULL,
							attempts_back integer DEFAULT 0)
RETURNS paysync._answer LANGUAGE sql AS $$
	SELECT ROW(r.payment_id, r.attempts - ans.attempts_back, ans.status,
			   ans.channel_status, ans.error, ans.retry_after_s, ans.paid_amount,
			   ans.paid_currency, false, false, ans.id)::paysync._answer
	FROM paysync.refunds r WHERE r.refund_id = ans.id
$$;

-- Records answers; shows the final statuses payments reached per channel
-- (refunds are not counted there).
CREATE FUNCTION pg_temp.rec(VARIADIC answers paysync._answer[])
RETURNS TABLE (channel text, status paysync.payment_status, payments bigint)
LANGUAGE sql AS $$
	SELECT * FROM paysync._record_answers(answers) ORDER BY 1, 2
$$;

-- A refund as the rules see it, times relative to now().
CREATE FUNCTION pg_temp.show(id text)
RETURNS TABLE (status paysync.payment_status, channel_status text, step integer,
			   attempts integer, errors integer, due_in interval,
			   claimed boolean, checked_now boolean, last_error text,
			   retry_after interval, finalized_now boolean)
LANGUAGE sql AS $$
	SELECT r.status, r.channel_status, r.step, r.attempts, r.errors,
		   r.next_check_at - now(), r.claimed_until IS NOT NULL,
		   r.last_checked_at = now(), r.last_error,
		   r.retry_after_until - now(), r.finalized_at = now()
	FROM paysync.refunds r WHERE r.refund_id = id
$$;

-- The events of a refund.
CREATE FUNCTION pg_temp.events(id text)
RETURNS TABLE (payment_id text, previous paysync.payment_status,
			   status paysync.payment_status, channel_status text, source text)
LANGUAGE sql AS $$
	SELECT e.payment_id, e.previous, e.status, e.channel_status, e.source
	FROM paysync.events e WHERE e.refund_id = id ORDER BY e.event_id
$$;

-- Makes refunds due now.
CREATE FUNCTION pg_temp.due(VARIADIC ids text[]) RETURNS void
LANGUAGE sql AS $$
	UPDATE paysync.refunds SET next_check_at = now() - interval '1 second'
	WHERE refund_id = ANY (ids)
$$;

--
-- Every ERROR of the surface, with its SQLSTATE; nothing changes.
--
SELECT pg_temp.try($$SELECT paysync.track_refund(NULL, 'P-1')$$);
SELECT pg_temp.try($$SELECT paysync.track_refund('R-X', NULL)$$);
SELECT pg_temp.try($$SELECT paysync.track_refund('', 'P-1')$$);
SELECT pg_temp.try($$SELECT paysync.track_refund(E'R\nX', 'P-1')$$);
SELECT pg_temp.try($$SELECT paysync.track_refund(repeat('r', 129), 'P-1')$$);
SELECT pg_temp.try($$SELECT paysync.track_refund('R-X', 'P-1', -1)$$);
SELECT pg_temp.try($$SELECT paysync.track_refund('R-X', 'P-1', 1, 'cny')$$);
SELECT pg_temp.try($$SELECT paysync.track_refund('R-X', 'P-NOWHERE', 1)$$);
SELECT pg_temp.try($$SELECT paysync.track_refund('R-X', 'P-1', 100, 'USD')$$);
SELECT pg_temp.try($$SELECT paysync.track_refund('R-X', 'P-1', 1001)$$);
SELECT pg_temp.try($$SELECT paysync.track_refund('R-X', 'P-1', 1, schedule => '{}')$$);
SELECT pg_temp.try($$SELECT paysync.report_refund('R-NOWHERE', 'succeeded')$$);
SELECT pg_temp.try($$SELECT paysync.report_refund(NULL, 'succeeded')$$);
SELECT pg_temp.try($$SELECT paysync.check_refund_now('R-NOWHERE')$$);
SELECT pg_temp.try($$SELECT paysync.check_refund_now(NULL)$$);
SELECT pg_temp.try($$SELECT * FROM paysync.refund_events_since(NULL)$$);
SELECT pg_temp.try($$SELECT * FROM paysync.refund_events_since(0, 0)$$);
SELECT count(*) AS refunds FROM paysync.refunds;

--
-- track_refund: the payment's channel and currency, the first check due
-- schedule[1] after tracking (the channel's schedule when none is given);
-- the same refund again changes nothing, with other details it is an
-- ERROR.  The amounts of a payment's refunds not failed, cancelled or
-- closed may not add up to more than the payment's.
--
BEGIN;
SELECT refund_id, payment_id, channel, status, amount_minor, currency, schedule,
	   next_check_at - now() AS due_in, metadata
FROM paysync.track_refund('R-1', 'P-1', 600, metadata => '{"ticket": 7}');
SELECT refund_id, amount_minor, currency, updated_at = now() AS same_row
FROM paysync.track_refund('R-1', 'P-1', 600);
SELECT refund_id, amount_minor, currency FROM paysync.track_refund('R-1', 'P-1', 600, 'CNY');
SELECT pg_temp.try($$SELECT paysync.track_refund('R-1', 'P-1', 601)$$);
SELECT pg_temp.try($$SELECT paysync.track_refund('R-1', 'P-OTHER', 600)$$);
-- 600 + 400 fit in 1000, one more does not
SELECT refund_id FROM paysync.track_refund('R-2', 'P-1', 400, 'CNY', '{10s}',
										   now() + interval '5 seconds');
SELECT next_check_at - now() AS due_in FROM paysync.refunds WHERE refund_id = 'R-2';
SELECT pg_temp.try($$SELECT paysync.track_refund('R-3', 'P-1', 1)$$);
-- a refund of unknown amount, and any refund of a payment of unknown amount
SELECT refund_id, amount_minor FROM paysync.track_refund('R-4', 'P-1');
SELECT refund_id, amount_minor FROM paysync.track_refund('R-5', 'P-NOAMOUNT', 99999);
-- failed, cancelled and closed refunds give their amount back
SELECT paysync.report_refund('R-2', 'failed', 'ABNORMAL');
SELECT refund_id FROM paysync.track_refund('R-3', 'P-1', 400);
SELECT pg_temp.try($$SELECT paysync.track_refund('R-6', 'P-1', 1)$$);
-- a payment already final still takes refunds
SELECT paysync.report('P-OTHER', 'succeeded');
SELECT refund_id, currency FROM paysync.track_refund('R-7', 'P-OTHER', 500);
ROLLBACK;

--
-- report_refund: a final status once (source report); the same again
-- changes nothing; another is an ERROR.  check_refund_now: due at once, at
-- most one check a second; a final one is left alone.
--
BEGIN;
SELECT refund_id FROM paysync.track_refund('R-REP', 'P-1', 100);
SELECT refund_id FROM paysync.track_refund('R-NOW', 'P-1', 100, schedule => '{1h}');
SELECT paysync.report_refund('R-REP', 'succeeded', 'SUCCESS') AS changed;
SELECT paysync.report_refund('R-REP', 'succeeded') AS changed;
SELECT pg_temp.try($$SELECT paysync.report_refund('R-REP', 'failed')$$);
SELECT pg_temp.try($$SELECT paysync.report_refund('R-NOW', 'pending')$$);
SELECT pg_temp.try($$SELECT paysync.report_refund('R-NOW', 'expired')$$);
SELECT * FROM pg_temp.show('R-REP');
SELECT * FROM pg_temp.events('R-REP');
SELECT paysync.check_refund_now('R-NOW');
SELECT next_check_at - now() AS due_in FROM paysync.refunds WHERE refund_id = 'R-NOW';
UPDATE paysync.refunds SET last_checked_at = now(), next_check_at = now() + interval '1h'
WHERE refund_id = 'R-NOW';
SELECT paysync.check_refund_now('R-NOW');
SELECT next_check_at - now() AS due_in FROM paysync.refunds WHERE refund_id = 'R-NOW';
SELECT paysync.check_refund_now('R-REP');
SELECT next_check_at FROM paysync.refunds WHERE refund_id = 'R-REP';
-- the payment is not touched by its refund
SELECT status FROM paysync.payments WHERE payment_id = 'P-1';
ROLLBACK;

--
-- Claims take payments and refunds alike, oldest due first; a refund's
-- claim names it and its payment; a limited channel's free slots are
-- shared by its payments and refunds.
--
BEGIN;
SELECT count(*) FROM (
	SELECT paysync.track_refund('R-C' || i, CASE WHEN i <= 3 THEN 'P-1' ELSE 'P-OTHER' END,
								schedule => '{1min}')
	FROM generate_series(1, 5) i) t;
UPDATE paysync.refunds SET next_check_at = now() - make_interval(secs => 10 - i)
FROM (VALUES ('R-C1', 1), ('R-C2', 3), ('R-C3', 5), ('R-C4', 2), ('R-C5', 4)) v(id, i)
WHERE refund_id = v.id;
UPDATE paysync.payments SET next_check_at = now() - interval '7.5 seconds'
WHERE payment_id = 'P-1';
-- wallet has 3 free slots for its payment and refunds together
SELECT payment_id, refund_id, channel, attempts, now() - due_at AS overdue,
	   claimed_until - now() AS claim, closing
FROM paysync._claim(10, 15000, ARRAY['wallet'], ARRAY[NULL]::int[], ARRAY[3])
ORDER BY due_at;
SELECT refund_id, attempts, next_check_at - now() AS due_in, claimed_until - now() AS claim
FROM paysync.refunds ORDER BY refund_id;
-- the rest, all channels unlimited: max_rows counts both kinds
SELECT payment_id, refund_id FROM paysync._claim(1, 15000, '{}', '{}', '{}');
SELECT count(*) AS claimed_again FROM paysync._claim(10, 15000, '{}', '{}', '{}');
ROLLBACK;

--
-- The rules of "Checking and scheduling" for refunds.
--
-- "pending": step + 1, due schedule[step + 1] later, errors reset; the
-- schedule used up with no deadline: expired (source expiry).
BEGIN;
SELECT refund_id FROM paysync.track_refund('R-P', 'P-1', 100, schedule => '{10s,30s}');
UPDATE paysync.refunds SET errors = 3, last_error = 'old error' WHERE refund_id = 'R-P';
SELECT pg_temp.due('R-P');
SELECT count(*) AS claimed FROM paysync._claim(10, 15000, '{}', '{}', '{}');
SELECT * FROM pg_temp.rec(pg_temp.ans('R-P', 'pending', 'PROCESSING'));
SELECT * FROM pg_temp.show('R-P');
SELECT * FROM pg_temp.rec(pg_temp.ans('R-P', 'pending', 'PROCESSING'));
SELECT * FROM pg_temp.show('R-P');
SELECT * FROM pg_temp.events('R-P');
ROLLBACK;

-- expires_at ahead: the last delay repeats, never past it; an answer at or
-- after it still saying pending expires the refund.
BEGIN;
SELECT refund_id FROM paysync.track_refund('R-E', 'P-1', 100, schedule => '{10s}',
										   expires_at => now() + interval '25 seconds');
SELECT * FROM pg_temp.rec(pg_temp.ans('R-E', 'pending'));
SELECT step, next_check_at - now() AS due_in FROM paysync.refunds WHERE refund_id = 'R-E';
UPDATE paysync.refunds SET expires_at = now() + interval '3 seconds' WHERE refund_id = 'R-E';
SELECT * FROM pg_temp.rec(pg_temp.ans('R-E', 'pending'));
SELECT step, next_check_at - now() AS due_in FROM paysync.refunds WHERE refund_id = 'R-E';
UPDATE paysync.refunds SET expires_at = now() WHERE refund_id = 'R-E';
SELECT * FROM pg_temp.rec(pg_temp.ans('R-E', 'pending', 'PROCESSING'));
SELECT * FROM pg_temp.show('R-E');
SELECT * FROM pg_temp.events('R-E');
ROLLBACK;

-- A final status is taken (source poll); another refunded amount or
-- currency makes the refund failed, saying why; no amount: no check.
BEGIN;
SELECT count(*) FROM (
	SELECT paysync.track_refund(id, 'P-1', 100)
	FROM unnest(ARRAY['R-F1', 'R-F2', 'R-F3', 'R-F4', 'R-F5', 'R-F6']) id) t;
SELECT * FROM pg_temp.rec(
	pg_temp.ans('R-F1', 'succeeded', 'SUCCESS', paid_amount => 100, paid_currency => 'cny'),
	pg_temp.ans('R-F2', 'succeeded', 'SUCCESS', paid_amount => 99, paid_currency => 'CNY'),
	pg_temp.ans('R-F3', 'succeeded', 'SUCCESS', paid_amount => 100, paid_currency => 'USD'),
	pg_temp.ans('R-F4', 'succeeded', 'SUCCESS'),
	pg_temp.ans('R-F5', 'failed', 'ABNORMAL'),
	pg_temp.ans('R-F6', 'closed', 'CLOSED'));
SELECT r.refund_id, s.status, s.channel_status, s.step, s.errors, s.due_in,
	   s.claimed, s.last_error, s.finalized_now
FROM paysync.refunds r, pg_temp.show(r.refund_id) s ORDER BY r.refund_id;
SELECT refund_id, payment_id, previous, status, channel_status, source
FROM paysync.events WHERE refund_id IS NOT NULL ORDER BY refund_id;
ROLLBACK;

-- An error: errors + 1, last_error, step kept, backoff within its jitter
-- or the Retry-After; never an end, not even past expires_at; a good
-- answer resets errors and forgets the Retry-After.
BEGIN;
SELECT refund_id FROM paysync.track_refund('R-ERR', 'P-1', 100, schedule => '{10s}',
										   expires_at => now() + interval '1 hour');
SELECT * FROM pg_temp.rec(pg_temp.ans('R-ERR', NULL, error => 'HTTP 503'));
SELECT status, step, errors, last_error,
	   next_check_at - now() BETWEEN interval '0.8 s' AND interval '1.2 s' AS backoff_1s
FROM paysync.refunds WHERE refund_id = 'R-ERR';
SELECT * FROM pg_temp.rec(pg_temp.ans('R-ERR', NULL, error => 'HTTP 429', retry_after_s => 30));
SELECT errors, next_check_at - now() AS due_in, retry_after_until - now() AS retry_after
FROM paysync.refunds WHERE refund_id = 'R-ERR';
-- check_refund_now honours the Retry-After
SELECT paysync.check_refund_now('R-ERR');
SELECT next_check_at - now() AS due_in FROM paysync.refunds WHERE refund_id = 'R-ERR';
UPDATE paysync.refunds SET expires_at = now() - interval '1 second' WHERE refund_id = 'R-ERR';
SELECT * FROM pg_temp.rec(pg_temp.ans('R-ERR', NULL, error => 'the channel knows no refund "R-ERR" (HTTP 404)'));
SELECT status, errors, last_error FROM paysync.refunds WHERE refund_id = 'R-ERR';
UPDATE paysync.refunds SET expires_at = now() + interval '1 hour' WHERE refund_id = 'R-ERR';
SELECT * FROM pg_temp.rec(pg_temp.ans('R-ERR', 'pending', 'PROCESSING'));
SELECT * FROM pg_temp.show('R-ERR');
ROLLBACK;

-- An answer to an older attempt, or to a refund a report ended meanwhile,
-- is not recorded: a report and a poll that race make one event.
BEGIN;
SELECT count(*) FROM (
	SELECT paysync.track_refund(id, 'P-1', 100)
	FROM unnest(ARRAY['R-OLD', 'R-RACE']) id) t;
SELECT pg_temp.due('R-OLD', 'R-RACE');
SELECT count(*) AS claimed FROM paysync._claim(10, 15000, '{}', '{}', '{}');
SELECT paysync.report_refund('R-RACE', 'cancelled', 'CANCELED');
SELECT * FROM pg_temp.rec(pg_temp.ans('R-OLD', 'succeeded', 'SUCCESS', attempts_back => 1),
						  pg_temp.ans('R-RACE', 'succeeded', 'SUCCESS'));
SELECT refund_id, status, attempts, claimed_until IS NOT NULL AS claimed
FROM paysync.refunds ORDER BY refund_id;
SELECT refund_id, status, source FROM paysync.events WHERE refund_id IS NOT NULL;
ROLLBACK;

-- Payments and refunds answered in one batch: each row gets its own
-- answer, and only the payments are counted.
BEGIN;
SELECT refund_id FROM paysync.track_refund('R-MIX', 'P-1', 100);
SELECT * FROM pg_temp.rec(
	pg_temp.ans('R-MIX', 'succeeded', 'SUCCESS'),
	ROW('P-1', 0, 'succeeded', 'PAID', NULL, NULL, 1000, 'CNY', false, false, NULL)::paysync._answer);
SELECT payment_id, refund_id, status, source FROM paysync.events ORDER BY event_id;
ROLLBACK;

--
-- Events: a refund's are refund_events_since()'s only, a payment's
-- events_since()'s only.
--
BEGIN;
SELECT refund_id FROM paysync.track_refund('R-EV', 'P-1', 100);
SELECT paysync.report_refund('R-EV', 'succeeded');
SELECT paysync.report('P-1', 'succeeded');
SELECT payment_id, refund_id, status, source FROM paysync.events_since(0);
SELECT payment_id, refund_id, status, source FROM paysync.refund_events_since(0);
SELECT count(*) AS after_last FROM paysync.refund_events_since(
	(SELECT max(event_id) FROM paysync.events));
ROLLBACK;

--
-- prune(): final refunds go with their events; a payment goes only with
-- no refund left, so never one with a refund still pending.
--
BEGIN;
SELECT count(*) FROM (
	SELECT paysync.track(id, 'wallet', schedule => '{1h}')
	FROM unnest(ARRAY['P-PR1', 'P-PR2', 'P-PR3']) id) t;
SELECT count(*) FROM (
	SELECT paysync.track_refund(r, p)
	FROM (VALUES ('R-PR1', 'P-PR1'), ('R-PR2', 'P-PR2'), ('R-PR3', 'P-PR3')) v(r, p)) t;
SELECT paysync.report(id, 'succeeded') FROM unnest(ARRAY['P-PR1', 'P-PR2', 'P-PR3']) id;
SELECT paysync.report_refund(id, 'succeeded') FROM unnest(ARRAY['R-PR1', 'R-PR3']) id;
-- R-PR3 is final but recent
UPDATE paysync.payments SET finalized_at = now() - interval '100 days'
WHERE payment_id LIKE 'P-PR%';
UPDATE paysync.refunds SET finalized_at = now() - interval '100 days' WHERE refund_id = 'R-PR1';
UPDATE paysync.events SET created_at = now() - interval '100 days'
WHERE payment_id LIKE 'P-PR%' AND refund_id IS DISTINCT FROM 'R-PR3';
SELECT paysync.prune('90 days') AS payments_removed;
SELECT payment_id FROM paysync.payments WHERE payment_id LIKE 'P-PR%' ORDER BY 1;
SELECT refund_id, status FROM paysync.refunds WHERE refund_id LIKE 'R-PR%' ORDER BY 1;
SELECT payment_id, refund_id FROM paysync.events WHERE payment_id LIKE 'P-PR%' ORDER BY 1, 2;
ROLLBACK;

--
-- paysync.stats: refunds_pending and refunds_due, last.
--
BEGIN;
SELECT count(*) FROM (
	SELECT paysync.track_refund('R-ST' || i, 'P-1', schedule => '{1h}')
	FROM generate_series(1, 3) i) t;
SELECT pg_temp.due('R-ST1');
SELECT channel, pending, due, refunds_pending, refunds_due FROM paysync.stats ORDER BY channel;
SELECT attname FROM pg_attribute
WHERE attrelid = 'paysync.stats'::regclass AND attnum > 15 ORDER BY attnum;
ROLLBACK;
