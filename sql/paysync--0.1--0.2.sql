/* paysync--0.1--0.2.sql: operations: retention, pg_cron maintenance, live stats */

\echo Use "ALTER EXTENSION paysync UPDATE TO '0.2'" to load this file. \quit

/* prune() finds old final payments through this index */
CREATE INDEX payments_finalized_idx ON paysync.payments (finalized_at)
	WHERE status <> 'pending';

-- Deletes final payments finalised more than keep ago, with their events, in
-- batches of 1000 rows (each a short statement taking row locks only, on
-- rows nothing else writes); never a pending payment.  Returns how many
-- payments it removed.
CREATE FUNCTION paysync.prune(keep interval DEFAULT '90 days')
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
			SELECT p.payment_id FROM paysync.payments p
			WHERE p.status <> 'pending' AND p.finalized_at < cutoff
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

-- Registers (or updates, never duplicates) the pg_cron job "paysync-prune"
-- that runs prune(keep) on schedule cron; returns its job id.
CREATE FUNCTION paysync.schedule_maintenance(cron text DEFAULT '17 3 * * *',
											 keep interval DEFAULT '90 days')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	job_id		bigint;
BEGIN
	IF cron IS NULL OR keep IS NULL THEN
		RAISE EXCEPTION 'schedule_maintenance: % must not be null',
			CASE WHEN cron IS NULL THEN 'cron' ELSE 'keep' END
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF keep < '0'::interval THEN
		RAISE EXCEPTION 'invalid keep "%": it must not be negative', keep
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
		RAISE EXCEPTION 'pg_cron is not installed in database "%"', current_database()
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('Install it (Debian: apt-get install postgresql-15-cron), set shared_preload_libraries = ''pg_cron'' and cron.database_name = %L, restart, then CREATE EXTENSION pg_cron.',
								current_database());
	END IF;
	BEGIN
		EXECUTE 'SELECT cron.schedule($1, $2, $3)'
			INTO job_id
			USING 'paysync-prune', cron,
				  format('SELECT paysync.prune(%L::interval)', keep);
	EXCEPTION WHEN internal_error OR invalid_parameter_value OR invalid_text_representation THEN
		RAISE EXCEPTION 'invalid cron schedule "%"', cron
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use the five fields of cron: minute hour day-of-month month day-of-week, such as ''17 3 * * *''.';
	END;
	RETURN job_id;
END
$$;

-- The worker's state, from shared memory.
CREATE FUNCTION paysync.worker_status(OUT pid integer, OUT state text,
									  OUT started_at timestamptz,
									  OUT in_flight integer, OUT last_error text,
									  OUT last_error_at timestamptz)
RETURNS record
LANGUAGE C
AS 'MODULE_PATHNAME', 'paysync_worker_status';

-- Each channel's live counters in shared memory.
CREATE FUNCTION paysync._channel_counters(OUT channel text, OUT in_flight integer,
										  OUT checks_1m bigint, OUT errors_1m bigint,
										  OUT latency_p50_ms double precision,
										  OUT latency_p99_ms double precision,
										  OUT succeeded_1h bigint, OUT failed_1h bigint,
										  OUT expired_1h bigint)
RETURNS SETOF record
LANGUAGE C
AS 'MODULE_PATHNAME', 'paysync_channel_counters';

-- One row per channel: the pending payments (through the due index, no scan
-- of history) beside the worker's counters.
CREATE VIEW paysync.stats AS
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
	   coalesce(k.expired_1h, 0) AS expired_1h
FROM paysync.channels c
CROSS JOIN LATERAL (
	SELECT count(*) AS pending,
		   count(*) FILTER (WHERE p.next_check_at <= now()) AS due,
		   now() - min(p.next_check_at) FILTER (WHERE p.next_check_at <= now()) AS oldest_due_lag
	FROM paysync.payments p
	WHERE p.channel = c.name AND p.status = 'pending'
) q
LEFT JOIN paysync._channel_counters() k ON k.channel = c.name;

REVOKE ALL ON FUNCTION paysync.prune(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync.schedule_maintenance(text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION paysync.worker_status() FROM PUBLIC;
REVOKE ALL ON paysync.stats FROM PUBLIC;
