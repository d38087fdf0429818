--
-- surface: the public surface of paysync 0.1 (contract section "version 0.1")
--
-- paysync is not preloaded here: every SQL function must work without the
-- worker, and nothing changes behind the test's back.  Base URLs point at a
-- closed local port and no payment is ever due when run_once() is called, so
-- no request is ever sent.  Timestamps are never printed; they are compared
-- with now(), which is fixed inside a transaction.
--
-- pg_regress's own PGTZ, PGDATESTYLE and PGINTERVALSTYLE override the
-- server's settings: set them here
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

SET client_min_messages = warning;
DROP EXTENSION IF EXISTS paysync CASCADE;
RESET client_min_messages;

-- Runs a statement; returns 'OK' or the error as "SQLSTATE: message".
CREATE FUNCTION pg_temp.try(cmd text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	detail text;
BEGIN
	EXECUTE cmd;
	RETURN 'OK';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
	RETURN SQLSTATE || ': ' || SQLERRM || coalesce(' DETAIL: ' || nullif(detail, ''), '');
END
$$;

CREATE EXTENSION paysync;

-- schema paysync, fixed and not relocatable
SELECT e.extname, e.extversion, n.nspname, e.extrelocatable
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'paysync';

--
-- Statuses
--
SELECT unnest(enum_range(NULL::paysync.payment_status)) AS status;

--
-- Functions: names, argument order, defaults and results
--
SELECT p.proname, pg_get_function_arguments(p.oid) AS arguments,
	   pg_get_function_result(p.oid) AS result
FROM pg_proc p
WHERE p.pronamespace = 'paysync'::regnamespace
  AND p.proname IN ('create_channel', 'track', 'report', 'check_now',
					'events_since', 'run_once')
ORDER BY p.proname;

--
-- Tables: every column the contract names, with its type and nullability
--
WITH contract(tab, col, typ, not_null) AS (VALUES
	('channels', 'name', 'text', true),
	('channels', 'driver', 'text', true),
	('channels', 'base_url', 'text', true),
	('channels', 'options', 'jsonb', true),
	('channels', 'enabled', 'boolean', true),
	('channels', 'created_at', 'timestamp with time zone', true),
	('payments', 'payment_id', 'text', true),
	('payments', 'channel', 'text', true),
	('payments', 'status', 'paysync.payment_status', true),
	('payments', 'channel_status', 'text', false),
	('payments', 'amount_minor', 'bigint', false),
	('payments', 'currency', 'text', false),
	('payments', 'schedule', 'interval[]', true),
	('payments', 'step', 'integer', true),
	('payments', 'attempts', 'integer', true),
	('payments', 'errors', 'integer', true),
	('payments', 'next_check_at', 'timestamp with time zone', false),
	('payments', 'last_checked_at', 'timestamp with time zone', false),
	('payments', 'last_error', 'text', false),
	('payments', 'expires_at', 'timestamp with time zone', false),
	('payments', 'metadata', 'jsonb', false),
	('payments', 'created_at', 'timestamp with time zone', NULL),
	('payments', 'updated_at', 'timestamp with time zone', NULL),
	('payments', 'finalized_at', 'timestamp with time zone', false),
	('events', 'event_id', 'bigint', true),
	('events', 'payment_id', 'text', true),
	('events', 'channel', 'text', true),
	('events', 'previous', 'paysync.payment_status', true),
	('events', 'status', 'paysync.payment_status', true),
	('events', 'channel_status', 'text', false),
	('events', 'source', 'text', true),
	('events', 'created_at', 'timestamp with time zone', true))
SELECT c.tab, c.col,
	   format_type(a.atttypid, a.atttypmod) AS actual_type,
	   format_type(a.atttypid, a.atttypmod) IS NOT DISTINCT FROM c.typ AS type_ok,
	   c.not_null IS NULL OR a.attnotnull IS NOT DISTINCT FROM c.not_null AS notnull_ok
FROM contract c
LEFT JOIN pg_attribute a
	   ON a.attrelid = ('paysync.' || c.tab)::regclass
	  AND a.attname = c.col AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.tab, c.col;

-- primary keys
SELECT conrelid::regclass AS tab, pg_get_constraintdef(oid) AS pkey
FROM pg_constraint
WHERE contype = 'p' AND connamespace = 'paysync'::regnamespace
ORDER BY 1::text;

-- payments.channel references channels(name)
SELECT pg_get_constraintdef(oid) AS fkey
FROM pg_constraint
WHERE contype = 'f' AND conrelid = 'paysync.payments'::regclass;

--
-- create_channel
--
-- options default to '{}', which an http_json channel cannot take: it needs
-- a status_map
SELECT pg_temp.try($$SELECT paysync.create_channel('defaults', 'http_json', 'https://example.com')$$);

BEGIN;
SELECT paysync.create_channel('alipay', 'http_json', 'http://127.0.0.1:9',
	'{"path": "/gateway/{payment_id}",
	  "status_field": "data.trade_state",
	  "status_map": {"TRADE_SUCCESS": "succeeded", "TRADE_FINISHED": "succeeded",
					 "WAIT_BUYER_PAY": "pending", "TRADE_CLOSED": "closed"},
	  "headers": {"Authorization": "Bearer test-token"}}');

-- every option of the http_json driver, the channel's own schedule included
SELECT paysync.create_channel('stripe_2', 'http_json', 'https://127.0.0.1:9/v1/',
	'{"path": "payment_intents/{payment_id}", "method": "POST",
	  "body": "{\"id\": \"{payment_id}\"}",
	  "headers": {"Authorization": "Bearer sk_test_x", "Stripe-Version": "2024-06-20"},
	  "status_field": "status",
	  "status_map": {"succeeded": "succeeded", "processing": "pending",
					 "canceled": "cancelled", "requires_payment_method": "failed"},
	  "not_found": "failed", "timeout_ms": 5000, "max_inflight": 4,
	  "schedule": ["1h", "2h", "1 day"]}');

-- a 63-character name is the longest allowed
SELECT paysync.create_channel(repeat('m', 63), 'http_json', 'HTTPS://example.com',
	'{"status_map": {"PAID": "succeeded"}}');

-- the rows: options stored as given, enabled by default, created_at now
SELECT name, driver, base_url, options, enabled, created_at = now() AS created_now
FROM paysync.channels ORDER BY name;
COMMIT;

--
-- track
--
BEGIN;
-- the returned row: pending, nothing asked yet, first check at now() + 10s
SELECT payment_id, channel, status, channel_status, amount_minor, currency,
	   schedule, step, attempts, errors,
	   next_check_at = now() + interval '10s' AS due_in_10s,
	   last_checked_at, last_error,
	   expires_at, metadata,
	   created_at = now() AS created_now, updated_at = now() AS updated_now,
	   finalized_at
FROM paysync.track('T20261126001', 'alipay', 1999, 'CNY', NULL,
				   '2030-01-01 00:00:00+00', '{"order": 42, "items": ["a", "b"]}');
-- the stored row is the same
SELECT payment_id, channel, status, amount_minor, currency, schedule,
	   step, attempts, errors, next_check_at = now() + interval '10s' AS due_in_10s,
	   expires_at, metadata
FROM paysync.payments WHERE payment_id = 'T20261126001';
COMMIT;

-- a NULL schedule takes the channel's option "schedule"
BEGIN;
SELECT payment_id, schedule, next_check_at = now() + interval '1h' AS due_in_1h,
	   amount_minor, currency, expires_at, metadata
FROM paysync.track('pi_3NexampleA', 'stripe_2');
COMMIT;

-- an explicit schedule wins over the channel's and the default one
BEGIN;
SELECT payment_id, schedule, next_check_at = now() + interval '2h 30min' AS due_in_2h30
FROM paysync.track('pi_3NexampleB', 'stripe_2', schedule => '{2h 30min, 7 days}');
SELECT payment_id, schedule, next_check_at = now() + interval '1 min' AS due_in_1min
FROM paysync.track('T-EXPLICIT', 'alipay', 0, 'USD', '{1min}');
COMMIT;

-- limits: 100 delays, each up to exactly 7 days; a 128-character id
BEGIN;
SELECT length(payment_id), cardinality(schedule) AS delays,
	   next_check_at = now() + interval '7 days' AS due_in_7_days
FROM paysync.track(repeat('x', 128), 'alipay',
				   schedule => array_fill(interval '168 hours', ARRAY[100]));
ROLLBACK;

-- a payment tracked in a rolled-back transaction is not kept
SELECT count(*) FROM paysync.payments WHERE payment_id = repeat('x', 128);

-- idempotency: the same payment with the same channel, amount and currency
-- returns the existing row and changes nothing
SELECT p::text AS before_row FROM paysync.payments p
WHERE payment_id = 'T20261126001' \gset
SELECT pg_sleep(0.01);
BEGIN;
SELECT t::text = :'before_row' AS same_row_returned
FROM paysync.track('T20261126001', 'alipay', 1999, 'CNY') t;
-- even with another schedule, deadline and metadata
SELECT t::text = :'before_row' AS same_row_returned
FROM paysync.track('T20261126001', 'alipay', 1999, 'CNY', '{1s}',
				   '2040-01-01 00:00:00+00', '{"other": true}') t;
COMMIT;
SELECT p::text = :'before_row' AS row_unchanged,
	   next_check_at <> now() + interval '10s' AS next_check_at_kept,
	   updated_at < now() AS updated_at_kept
FROM paysync.payments p WHERE payment_id = 'T20261126001';
SELECT count(*) AS payments FROM paysync.payments;
SELECT count(*) AS events FROM paysync.events;

--
-- report
--
BEGIN;
SELECT paysync.report('T20261126001', 'succeeded', 'TRADE_SUCCESS') AS changed;
SELECT status, channel_status, finalized_at = now() AS finalized_now,
	   next_check_at, updated_at = now() AS updated_now,
	   step, attempts, errors, metadata
FROM paysync.payments WHERE payment_id = 'T20261126001';
SELECT payment_id, channel, previous, status, channel_status, source,
	   created_at = now() AS created_now
FROM paysync.events WHERE payment_id = 'T20261126001';
COMMIT;

-- the same status again: false, no second event, nothing changed
SELECT p::text AS before_row FROM paysync.payments p
WHERE payment_id = 'T20261126001' \gset
SELECT paysync.report('T20261126001', 'succeeded') AS changed;
SELECT paysync.report('T20261126001', 'succeeded', 'TRADE_FINISHED') AS changed;
SELECT p::text = :'before_row' AS row_unchanged
FROM paysync.payments p WHERE payment_id = 'T20261126001';
SELECT count(*) AS events FROM paysync.events WHERE payment_id = 'T20261126001';

-- each final status that can be reported; channel_status may be null
SELECT paysync.report('pi_3NexampleA', 'cancelled') AS changed;
SELECT paysync.report('T-EXPLICIT', 'failed', 'PAY_FAILED') AS changed;
BEGIN;
SELECT (paysync.track('T-CLOSED', 'alipay', schedule => '{1h}')).status;
SELECT paysync.report('T-CLOSED', 'closed', 'TRADE_CLOSED') AS changed;
COMMIT;
SELECT payment_id, status, channel_status, next_check_at IS NULL AS no_next_check,
	   finalized_at IS NOT NULL AS finalized
FROM paysync.payments ORDER BY payment_id;

-- a final payment tracked again with the same details is returned as it is
SELECT payment_id, status, next_check_at
FROM paysync.track('T-CLOSED', 'alipay');

--
-- run_once(): a payment is pending but not due, so nothing is checked
--
SELECT payment_id, status, next_check_at > now() AS not_due_yet
FROM paysync.payments WHERE status = 'pending';
SELECT count(*) AS due FROM paysync.payments
WHERE status = 'pending' AND next_check_at <= now();
SELECT paysync.run_once();
SELECT paysync.run_once(5);
SELECT payment_id, status, step, attempts, errors, last_checked_at
FROM paysync.payments WHERE status = 'pending';

--
-- check_now
--
BEGIN;
-- a pending payment becomes due at once
SELECT next_check_at > now() + interval '2h' AS due_later
FROM paysync.payments WHERE payment_id = 'pi_3NexampleB';
SELECT paysync.check_now('pi_3NexampleB');
SELECT status, next_check_at <= now() AS due_now, step, attempts
FROM paysync.payments WHERE payment_id = 'pi_3NexampleB';
ROLLBACK;
-- a final one is left as it is
SELECT p::text AS before_row FROM paysync.payments p
WHERE payment_id = 'T20261126001' \gset
SELECT paysync.check_now('T20261126001');
SELECT p::text = :'before_row' AS row_unchanged, status, next_check_at
FROM paysync.payments p WHERE payment_id = 'T20261126001';

--
-- events_since
--
SELECT event_id, payment_id, channel, previous, status, channel_status, source
FROM paysync.events_since(0);
SELECT max(event_id) AS last_event FROM paysync.events \gset
SELECT count(*) AS after_last FROM paysync.events_since(:last_event);
SELECT count(*) AS after_last FROM paysync.events_since(:last_event + 100);
-- at most max_rows, oldest first
SELECT event_id, payment_id FROM paysync.events_since(0, 2);
SELECT event_id, payment_id FROM paysync.events_since(1, 1);
SELECT event_id, payment_id FROM paysync.events_since(2, 1000);
SELECT event_id, payment_id FROM paysync.events_since(-5);

--
-- A payment never leaves a final status, not even by a superuser's UPDATE
--
SELECT pg_temp.try($$UPDATE paysync.payments
	SET status = 'pending', finalized_at = NULL, next_check_at = now()
	WHERE payment_id = 'T20261126001'$$);
SELECT pg_temp.try($$UPDATE paysync.payments
	SET status = 'failed' WHERE payment_id = 'T20261126001'$$);
SELECT pg_temp.try($$UPDATE paysync.payments
	SET status = 'expired' WHERE payment_id = 'T-CLOSED'$$);
-- other columns of a final payment may still be written
SELECT pg_temp.try($$UPDATE paysync.payments
	SET metadata = '{"note": "refunded by hand"}' WHERE payment_id = 'T-CLOSED'$$);
SELECT payment_id, status, metadata FROM paysync.payments
WHERE payment_id IN ('T20261126001', 'T-CLOSED') ORDER BY payment_id;

--
-- A payment has at most one event: the database refuses a second one
--
SELECT pg_temp.try($$INSERT INTO paysync.events
	(payment_id, channel, previous, status, channel_status, source)
	VALUES ('T20261126001', 'alipay', 'pending', 'failed', NULL, 'poll')$$);
SELECT count(*) AS events FROM paysync.events WHERE payment_id = 'T20261126001';

--
-- The channel checks apply to UPDATE paysync.channels as well
--
SELECT pg_temp.try($$UPDATE paysync.channels SET base_url = 'ftp://example.com'
	WHERE name = 'alipay'$$);
SELECT pg_temp.try($$UPDATE paysync.channels SET options = options - 'status_map'
	WHERE name = 'alipay'$$);
SELECT pg_temp.try($$UPDATE paysync.channels
	SET options = jsonb_set(options, '{status_map,TRADE_CLOSED}', '"expired"')
	WHERE name = 'alipay'$$);
SELECT pg_temp.try($$UPDATE paysync.channels SET driver = 'soap' WHERE name = 'alipay'$$);
SELECT pg_temp.try($$UPDATE paysync.channels SET name = 'Alipay' WHERE name = 'alipay'$$);
SELECT pg_temp.try($$INSERT INTO paysync.channels (name, driver, base_url, options)
	VALUES ('direct', 'http_json', 'https://example.com', '{"status_map": {}}')$$);
-- a valid change is accepted
SELECT pg_temp.try($$UPDATE paysync.channels
	SET enabled = false, options = options || '{"timeout_ms": 2000}'
	WHERE name = 'alipay'$$);
SELECT name, enabled, options -> 'timeout_ms' AS timeout_ms, base_url
FROM paysync.channels WHERE name = 'alipay';

--
-- DROP EXTENSION and CREATE EXTENSION again
--
DROP EXTENSION paysync;
SELECT count(*) AS extensions FROM pg_extension WHERE extname = 'paysync';
SELECT to_regclass('paysync.channels') AS channels,
	   to_regclass('paysync.payments') AS payments,
	   to_regclass('paysync.events') AS events,
	   to_regtype('paysync.payment_status') AS payment_status;
CREATE EXTENSION paysync;
SELECT (SELECT count(*) FROM paysync.channels) AS channels,
	   (SELECT count(*) FROM paysync.payments) AS payments,
	   (SELECT count(*) FROM paysync.events) AS events;
SELECT paysync.create_channel('alipay', 'http_json', 'http://127.0.0.1:9',
	'{"status_map": {"TRADE_SUCCESS": "succeeded"}}');
SELECT payment_id, status, schedule FROM paysync.track('T20261126001', 'alipay', schedule => '{1h}');
SELECT paysync.report('T20261126001', 'succeeded') AS changed;
SELECT event_id, payment_id, previous, status, source FROM paysync.events_since(0);
DROP EXTENSION paysync;
