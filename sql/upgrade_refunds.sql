--
-- upgrade_refunds: 0.3 with data in it, then ALTER EXTENSION ... UPDATE TO
-- '0.4'.  Payments and events are kept as they were (events gain
-- refund_id, NULL); a role granted receive() keeps it (0.4 recreates it);
-- the state machine of 0.4 carries on with rows 0.3 wrote, and refunds can
-- be tracked on them.
--
\i sql/regress_setup.psql

SET client_min_messages = warning;
DROP EXTENSION IF EXISTS paysync CASCADE;
DROP ROLE IF EXISTS regress_paysync_webhook;
RESET client_min_messages;

CREATE EXTENSION paysync VERSION '0.3';
SELECT paysync.create_channel('wallet', 'http_json', 'http://127.0.0.1:9',
	'{"status_map": {"PAID": "succeeded", "WAIT": "pending"}}');
SELECT payment_id, status FROM paysync.track('U-1', 'wallet', 1000, 'CNY', '{10s,1min}');
SELECT payment_id, status FROM paysync.track('U-2', 'wallet', 2000, 'CNY');
SELECT payment_id, status FROM paysync.track('U-3', 'wallet', 3000, 'CNY');
SELECT paysync.report('U-2', 'succeeded', 'PAID');
CREATE TEMP TABLE before_update AS
	SELECT to_jsonb(p) AS payment, to_jsonb(e) AS event FROM paysync.payments p
	LEFT JOIN paysync.events e USING (payment_id);

-- the order service's webhook endpoint keeps receive() (0.4 recreates it)
CREATE ROLE regress_paysync_webhook;
GRANT EXECUTE ON FUNCTION paysync.receive(text, jsonb, text) TO regress_paysync_webhook;

ALTER EXTENSION paysync UPDATE TO '0.4';
SELECT extversion FROM pg_extension WHERE extname = 'paysync';

SELECT has_function_privilege('regress_paysync_webhook', 'paysync.receive(text, jsonb, text)',
							  'EXECUTE') AS webhook_execute,
	   has_function_privilege('public', 'paysync.receive(text, jsonb, text)',
							  'EXECUTE') AS public_execute,
	   has_function_privilege('public', 'paysync.track_refund(text, text, bigint, text, interval[], timestamptz, jsonb)',
							  'EXECUTE') AS public_track_refund;
SELECT array_to_string(proargnames, ' ') AS columns FROM pg_proc
WHERE oid = 'paysync.receive(text, jsonb, text)'::regprocedure;

-- every payment and event is as it was (events gain refund_id, NULL)
SELECT count(*) AS changed FROM (
	(SELECT * FROM before_update EXCEPT
	 SELECT to_jsonb(p), to_jsonb(e) - 'refund_id' FROM paysync.payments p
	 LEFT JOIN paysync.events e USING (payment_id))
	UNION ALL
	(SELECT to_jsonb(p), to_jsonb(e) - 'refund_id' FROM paysync.payments p
	 LEFT JOIN paysync.events e USING (payment_id) EXCEPT
	 SELECT * FROM before_update)) diff;
SELECT count(*) AS events_with_refund FROM paysync.events WHERE refund_id IS NOT NULL;

-- 0.4's state machine works on rows 0.3 wrote, for payments and refunds
SELECT refund_id, payment_id, channel, currency
FROM paysync.track_refund('U-R1', 'U-2', 2000);
SELECT refund_id FROM paysync.track_refund('U-R2', 'U-1', 100, schedule => '{1min}');
SELECT pg_temp.try($$SELECT paysync.track_refund('U-R3', 'U-2', 1)$$);
SELECT * FROM paysync._record_answers(ARRAY[
	ROW('U-1', 0, 'pending', 'WAIT', NULL, NULL, NULL, NULL, false, false, NULL)::paysync._answer,
	ROW('U-3', 0, 'succeeded', 'PAID', NULL, NULL, 3000, 'CNY', false, false, NULL)::paysync._answer,
	ROW('U-2', 0, 'succeeded', 'SUCCESS', NULL, NULL, 2000, 'CNY', false, false, 'U-R1')::paysync._answer]);
SELECT payment_id, status, step, channel_status FROM paysync.payments ORDER BY 1;
SELECT refund_id, status, step, channel_status FROM paysync.refunds ORDER BY 1;
SELECT event_id, payment_id, status, source FROM paysync.events_since(0);
SELECT event_id, payment_id, refund_id, status, source FROM paysync.refund_events_since(0);
SELECT paysync.report('U-1', 'failed', 'CLOSED_BY_BUYER');
SELECT paysync.report_refund('U-R2', 'closed', 'CLOSED');

DROP TABLE before_update;
DROP EXTENSION paysync;
DROP ROLE regress_paysync_webhook;
