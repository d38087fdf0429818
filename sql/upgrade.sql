--
-- upgrade: 0.2 with data in it, then ALTER EXTENSION ... UPDATE TO '0.3'.
-- The data is kept; a schedule 0.2 let start at index 2 (its payment never
-- due) is renumbered and made due; the state machine of 0.3 carries on with
-- rows 0.2 wrote.  (0.1 to 0.3 in one step is in operations.)
--
\i sql/regress_setup.psql

SET client_min_messages = warning;
DROP EXTENSION IF EXISTS paysync CASCADE;
RESET client_min_messages;

CREATE EXTENSION paysync VERSION '0.2';
SELECT paysync.create_channel('wallet', 'http_json', 'http://127.0.0.1:9',
	'{"status_map": {"PAID": "succeeded", "WAIT": "pending"}}');
SELECT payment_id, status FROM paysync.track('V-1', 'wallet', 100, 'CNY', '{10s,1min}');
SELECT payment_id, status FROM paysync.track('V-2', 'wallet', 200, 'CNY');
-- as 0.2's track() wrote it (this library's schedule check refuses it now)
INSERT INTO paysync.payments (payment_id, channel, amount_minor, currency, schedule, next_check_at)
VALUES ('V-3', 'wallet', 300, 'CNY', '[2:3]={1h,2h}', NULL);
SELECT paysync.report('V-2', 'succeeded', 'PAID');
SELECT payment_id, schedule, next_check_at IS NULL AS never_due
FROM paysync.payments WHERE payment_id = 'V-3';
CREATE TEMP TABLE before_update AS
	SELECT to_jsonb(p) AS payment, e.event_id, e.source FROM paysync.payments p
	LEFT JOIN paysync.events e USING (payment_id);

-- a monitoring role granted worker_status() keeps it (0.3 recreates it)
CREATE ROLE regress_paysync_monitor;
GRANT EXECUTE ON FUNCTION paysync.worker_status() TO regress_paysync_monitor;

ALTER EXTENSION paysync UPDATE TO '0.3';
SELECT extversion FROM pg_extension WHERE extname = 'paysync';

SELECT has_function_privilege('regress_paysync_monitor', 'paysync.worker_status()',
							  'EXECUTE') AS monitor_execute,
	   has_function_privilege('public', 'paysync.worker_status()',
							  'EXECUTE') AS public_execute;
SELECT array_to_string(proargnames, ' ') AS columns FROM pg_proc
WHERE oid = 'paysync.worker_status()'::regprocedure;

-- every row but V-3 is untouched (0.3 adds the column retry_after_until)
SELECT payment ->> 'payment_id' AS payment_id FROM (
	(SELECT * FROM before_update EXCEPT
	 SELECT to_jsonb(p) - 'retry_after_until', e.event_id, e.source FROM paysync.payments p
	 LEFT JOIN paysync.events e USING (payment_id))
	UNION ALL
	(SELECT to_jsonb(p) - 'retry_after_until', e.event_id, e.source FROM paysync.payments p
	 LEFT JOIN paysync.events e USING (payment_id) EXCEPT
	 SELECT * FROM before_update)) diff
ORDER BY 1;
SELECT payment_id, schedule, array_lower(schedule, 1) AS first_index,
	   next_check_at <= now() AS due_now
FROM paysync.payments WHERE payment_id = 'V-3';

-- 0.3's state machine works on rows 0.2 wrote
SELECT * FROM paysync._record_answers(ARRAY[
	ROW('V-1', 0, 'pending', 'WAIT', NULL, NULL, NULL, NULL, false, false)::paysync._answer,
	ROW('V-3', 0, 'succeeded', 'PAID', NULL, NULL, 300, 'CNY', false, false)::paysync._answer]);
SELECT payment_id, status, step, channel_status FROM paysync.payments ORDER BY 1;
SELECT event_id, payment_id, status, source FROM paysync.events_since(0);
SELECT paysync.report('V-1', 'failed', 'CLOSED_BY_BUYER');

DROP TABLE before_update;
DROP EXTENSION paysync;
DROP ROLE regress_paysync_monitor;
