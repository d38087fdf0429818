--
-- operations: paysync 0.2 -- the upgrade from 0.1 with data in it, prune()
-- boundaries, schedule_maintenance() without pg_cron, worker_status() and
-- stats without the preload.
--
\i sql/regress_setup.psql

SET client_min_messages = warning;
DROP EXTENSION IF EXISTS paysync CASCADE;
DROP SCHEMA IF EXISTS paysync CASCADE;
RESET client_min_messages;


--
-- 0.1 with data, then ALTER EXTENSION ... UPDATE
--
CREATE EXTENSION paysync VERSION '0.1';
SELECT extversion FROM pg_extension WHERE extname = 'paysync';
SELECT paysync.create_channel('wallet', 'http_json', 'http://127.0.0.1:9',
	'{"status_map": {"PAID": "succeeded", "WAIT": "pending"}}');
SELECT payment_id, status FROM paysync.track('U-1', 'wallet', 100, 'CNY');
SELECT payment_id, status FROM paysync.track('U-2', 'wallet', 200, 'CNY');
SELECT paysync.report('U-2', 'succeeded', 'PAID');
CREATE TEMP TABLE before_update AS
	SELECT to_jsonb(p) AS payment, e.event_id, e.source FROM paysync.payments p
	LEFT JOIN paysync.events e USING (payment_id);

ALTER EXTENSION paysync UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'paysync';

-- the data is untouched
SELECT count(*) AS rows_changed_by_update FROM (
	(SELECT * FROM before_update EXCEPT
	 SELECT to_jsonb(p) - 'retry_after_until', e.event_id, e.source FROM paysync.payments p
	 LEFT JOIN paysync.events e USING (payment_id))
	UNION ALL
	(SELECT to_jsonb(p) - 'retry_after_until', e.event_id, e.source FROM paysync.payments p
	 LEFT JOIN paysync.events e USING (payment_id) EXCEPT
	 SELECT * FROM before_update)) diff;
-- and still works: the events go on from where they were
SELECT paysync.report('U-1', 'failed', 'CLOSED_BY_BUYER');
SELECT event_id, payment_id, status, source FROM paysync.events_since(0);

-- the 0.2 functions answer
SELECT state, in_flight FROM paysync.worker_status();
SELECT channel, pending, due, in_flight, checks_1m, errors_1m,
	   latency_p50_ms, latency_p99_ms, succeeded_1h, failed_1h, expired_1h
FROM paysync.stats;
-- 0.3: the breaker's state (without the preload nothing is paused), erroring
SELECT channel, state, paused_since, erroring FROM paysync.stats;

-- a fresh install is 0.2 (0.1 and the update script, the one path)
DROP TABLE before_update;
DROP EXTENSION paysync;
CREATE EXTENSION paysync;
SELECT extversion FROM pg_extension WHERE extname = 'paysync';

--
-- prune(): boundaries
--
SELECT paysync.create_channel('wallet', 'http_json', 'http://127.0.0.1:9',
	'{"status_map": {"PAID": "succeeded", "WAIT": "pending"}}');
SELECT count(*) FROM (
	SELECT paysync.track('P-' || g, 'wallet') FROM generate_series(1, 8) g) t;
SELECT count(*) FILTER (WHERE paysync.report('P-' || g, 'succeeded')) AS reported
FROM generate_series(1, 6) g;
-- age them: P-1 and P-2 finalised 100 days ago, P-3 91 days, P-4 exactly
-- 90 days, P-5 89 days, P-6 now; P-7 and P-8 pending (P-7 tracked long ago)
UPDATE paysync.payments SET finalized_at = now() - v.age
FROM (VALUES ('P-1', '100 days'::interval), ('P-2', '100 days'), ('P-3', '91 days'),
			 ('P-4', '90 days'), ('P-5', '89 days')) v(id, age)
WHERE payment_id = v.id;
UPDATE paysync.events SET created_at = p.finalized_at
FROM paysync.payments p WHERE p.payment_id = events.payment_id;
UPDATE paysync.payments SET created_at = now() - '1 year'::interval WHERE payment_id = 'P-7';

SELECT paysync.prune();
SELECT payment_id, status FROM paysync.payments ORDER BY payment_id;
SELECT payment_id FROM paysync.events ORDER BY payment_id;
-- nothing left to prune at 90 days; a shorter keep takes the younger ones
SELECT paysync.prune('90 days');
SELECT paysync.prune('1 day');
SELECT paysync.prune('0');
SELECT payment_id, status FROM paysync.payments ORDER BY payment_id;
SELECT count(*) AS events_left FROM paysync.events;

-- many rows: removed in batches, all of them
SELECT count(*) FROM (
	SELECT paysync.track('B-' || g, 'wallet') FROM generate_series(1, 2500) g) t;
SELECT count(*) FILTER (WHERE paysync.report('B-' || g, 'closed')) AS closed
FROM generate_series(1, 2500) g;
UPDATE paysync.payments SET finalized_at = now() - '1 day'::interval
WHERE payment_id LIKE 'B-%';
SELECT paysync.prune('1 hour');
SELECT count(*) FROM paysync.payments WHERE payment_id LIKE 'B-%';

-- bad arguments
SELECT pg_temp.try($$SELECT paysync.prune(NULL)$$);
SELECT pg_temp.try($$SELECT paysync.prune('-1 day')$$);

--
-- schedule_maintenance() without pg_cron: an error with a hint
--
CREATE FUNCTION pg_temp.try_hint(cmd text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	hint text;
BEGIN
	EXECUTE cmd;
	RETURN 'OK';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
	RETURN SQLSTATE || ': ' || SQLERRM || E'\nHINT: ' || hint;
END
$$;
SELECT pg_temp.try_hint($$SELECT paysync.schedule_maintenance()$$);
SELECT pg_temp.try($$SELECT paysync.schedule_maintenance(NULL)$$);
SELECT pg_temp.try($$SELECT paysync.schedule_maintenance('* * * * *', '-1 day')$$);

-- the worker is not preloaded here: no skipped notifications are counted;
-- nobody listens, so the notification queue is empty
SELECT pid, state, started_at, in_flight FROM paysync.worker_status();
-- 0.3: one row per worker (paysync.workers, 1 here), numbered
SELECT worker, state FROM paysync.worker_status();
SELECT notify_queue_usage, notifications_skipped FROM paysync.worker_status();
SHOW paysync.notify_queue_limit;

--
-- privileges: nothing new for PUBLIC but the counters behind the view
--
SELECT p.proname, has_function_privilege('public', p.oid, 'EXECUTE') AS public_execute
FROM pg_proc p WHERE p.pronamespace = 'paysync'::regnamespace
  AND p.proname IN ('prune', 'schedule_maintenance', 'worker_status', '_channel_counters')
ORDER BY 1;
SELECT has_table_privilege('public', 'paysync.stats', 'SELECT') AS public_reads_stats;

DROP EXTENSION paysync;
