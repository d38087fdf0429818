--
-- privileges: nothing is granted to PUBLIC but USAGE on the schema;
-- paysync.channels holds credentials and only the extension's owner reads
-- it; the SECURITY DEFINER functions cannot be fooled by the caller's
-- search_path.  Roles are cluster-wide: they are all named regress_paysync_*
-- and dropped at the end.
--
\i sql/regress_setup.psql

SET client_min_messages = warning;
DROP EXTENSION IF EXISTS paysync CASCADE;
DROP SCHEMA IF EXISTS regress_paysync_evil CASCADE;
DROP ROLE IF EXISTS regress_paysync_app;
RESET client_min_messages;
CREATE EXTENSION paysync;


SELECT paysync.create_channel('alipay', 'http_json', 'http://127.0.0.1:9',
	'{"headers": {"Authorization": "Bearer sk_live_SECRET"},
	  "status_map": {"TRADE_SUCCESS": "succeeded", "WAIT_BUYER_PAY": "pending"}}');
SELECT payment_id, status FROM paysync.track('T-OWNER', 'alipay', schedule => '{1h}');

-- the public functions run as the owner, with a fixed search_path
SELECT p.proname, p.prosecdef, p.proconfig
FROM pg_proc p
WHERE p.pronamespace = 'paysync'::regnamespace
  AND p.proname IN ('create_channel', 'track', 'report', 'check_now',
					'events_since', 'run_once')
ORDER BY p.proname;

CREATE ROLE regress_paysync_app;

-- PUBLIC, and so a new role, has USAGE on the schema and nothing else
SELECT has_schema_privilege('regress_paysync_app', 'paysync', 'USAGE') AS usage,
	   has_schema_privilege('regress_paysync_app', 'paysync', 'CREATE') AS "create";
SELECT t AS "table",
	   has_table_privilege('regress_paysync_app', t, 'SELECT') AS "select",
	   has_table_privilege('regress_paysync_app', t, 'INSERT') AS "insert",
	   has_table_privilege('regress_paysync_app', t, 'UPDATE') AS "update",
	   has_table_privilege('regress_paysync_app', t, 'DELETE') AS "delete"
FROM unnest(ARRAY['paysync.channels', 'paysync.payments', 'paysync.events']) t;
SELECT p.oid::regprocedure AS function,
	   has_function_privilege('regress_paysync_app', p.oid, 'EXECUTE') AS execute
FROM pg_proc p
WHERE p.pronamespace = 'paysync'::regnamespace
ORDER BY p.proname, 1::text;

--
-- A role without privileges can do nothing
--
SET ROLE regress_paysync_app;
SELECT current_user;
SELECT pg_temp.try('SELECT * FROM paysync.channels');
SELECT pg_temp.try('SELECT * FROM paysync.payments');
SELECT pg_temp.try('SELECT * FROM paysync.events');
SELECT pg_temp.try($$SELECT paysync.create_channel('mine', 'http_json', 'https://example.com', '{"status_map": {"PAID": "succeeded"}}')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-APP-0', 'alipay')$$);
SELECT pg_temp.try($$SELECT paysync.report('T-OWNER', 'succeeded')$$);
SELECT pg_temp.try($$SELECT paysync.check_now('T-OWNER')$$);
SELECT pg_temp.try($$SELECT * FROM paysync.events_since(0)$$);
SELECT pg_temp.try($$SELECT paysync.run_once()$$);
SELECT pg_temp.try($$SELECT paysync._validate_channel('x', 'http_json', 'https://example.com', '{}')$$);
SELECT pg_temp.try($$SELECT paysync._wake_worker_at_commit(now())$$);
SELECT pg_temp.try($$SELECT paysync._lock_events()$$);
SELECT pg_temp.try($$UPDATE paysync.channels SET base_url = 'https://attacker.example'$$);
SELECT pg_temp.try($$INSERT INTO paysync.payments (payment_id, channel, schedule) VALUES ('T-X', 'alipay', '{1h}')$$);
SELECT pg_temp.try($$UPDATE paysync.payments SET status = 'succeeded'$$);
SELECT pg_temp.try($$DELETE FROM paysync.events$$);
RESET ROLE;

--
-- The owner grants what an order service needs
--
GRANT EXECUTE ON FUNCTION
	paysync.track(text, text, bigint, text, interval[], timestamptz, jsonb),
	paysync.report(text, paysync.payment_status, text),
	paysync.check_now(text),
	paysync.events_since(bigint, integer)
TO regress_paysync_app;

SET ROLE regress_paysync_app;
SELECT payment_id, channel, status, amount_minor, currency, schedule, metadata
FROM paysync.track('T-APP-1', 'alipay', 500, 'EUR', '{1h}', NULL, '{"order": 7}');
-- tracking it again returns the same row
SELECT payment_id, status, amount_minor
FROM paysync.track('T-APP-1', 'alipay', 500, 'EUR');
SELECT paysync.check_now('T-APP-1');
SELECT paysync.report('T-APP-1', 'succeeded', 'TRADE_SUCCESS') AS changed;
SELECT paysync.report('T-APP-1', 'succeeded') AS changed;
SELECT paysync.check_now('T-APP-1');
SELECT event_id, payment_id, channel, previous, status, channel_status, source
FROM paysync.events_since(0);
-- errors are still the functions' own
SELECT pg_temp.try($$SELECT paysync.report('T-APP-1', 'failed')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-APP-2', 'nowhere')$$);
-- but the credentials stay out of reach, and so does the rest
SELECT pg_temp.try('SELECT * FROM paysync.channels');
SELECT pg_temp.try('SELECT options FROM paysync.channels');
SELECT pg_temp.try('SELECT * FROM paysync.payments');
SELECT pg_temp.try('SELECT * FROM paysync.events');
SELECT pg_temp.try($$SELECT paysync.create_channel('mine', 'http_json', 'https://example.com', '{"status_map": {"PAID": "succeeded"}}')$$);
SELECT pg_temp.try($$SELECT paysync.run_once()$$);
SELECT pg_temp.try($$UPDATE paysync.channels SET base_url = 'https://attacker.example'$$);
SELECT pg_temp.try($$SELECT paysync._validate_channel('x', 'http_json', 'https://example.com', '{}')$$);
RESET ROLE;
SELECT name, base_url FROM paysync.channels;

--
-- A malicious search_path does not fool the SECURITY DEFINER functions:
-- the role puts functions and operators shadowing pg_catalog's in a schema
-- of its own, first in its search_path (pg_catalog explicitly after it).
-- Each raises a NOTICE when called and returns a wrong answer.
--
CREATE SCHEMA regress_paysync_evil AUTHORIZATION regress_paysync_app;
SET ROLE regress_paysync_app;
CREATE FUNCTION regress_paysync_evil.now() RETURNS timestamptz
LANGUAGE plpgsql AS $$
BEGIN
	RAISE NOTICE 'evil now() runs as %', current_user;
	RETURN '2000-01-01 00:00:00+00';
END
$$;
CREATE FUNCTION regress_paysync_evil.length(text) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
	RAISE NOTICE 'evil length() runs as %', current_user;
	RETURN 0;
END
$$;
CREATE FUNCTION regress_paysync_evil.regex_match(text, text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	RAISE NOTICE 'evil ~ runs as %', current_user;
	RETURN true;
END
$$;
CREATE FUNCTION regress_paysync_evil.text_eq(text, text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	RAISE NOTICE 'evil = runs as %', current_user;
	RETURN false;
END
$$;
CREATE OPERATOR regress_paysync_evil.~ (LEFTARG = text, RIGHTARG = text,
										FUNCTION = regress_paysync_evil.regex_match);
CREATE OPERATOR regress_paysync_evil.!~ (LEFTARG = text, RIGHTARG = text,
										 FUNCTION = regress_paysync_evil.regex_match);
CREATE OPERATOR regress_paysync_evil.= (LEFTARG = text, RIGHTARG = text,
										FUNCTION = regress_paysync_evil.text_eq);
SET search_path = regress_paysync_evil, pg_catalog;
-- the trap works on the role's own queries
SELECT length('abc') AS length, 'abc' ~ 'x' AS regex, 'abc' !~ 'abc' AS not_regex,
	   'a' = 'a' AS equal, now() < '2001-01-01' AS now_in_2000;
-- but not inside paysync's functions: no NOTICE, and the right answers
BEGIN;
SELECT payment_id, status, currency,
	   next_check_at = pg_catalog.now() + interval '1h' AS due_in_1h
FROM paysync.track('T-APP-2', 'alipay', 100, 'USD', '{1h}');
SELECT payment_id, status FROM paysync.track('T-APP-2', 'alipay', 100, 'USD');
SELECT pg_temp.try($$SELECT paysync.track('T-APP-2', 'alipay', 101, 'USD')$$);
SELECT pg_temp.try($$SELECT paysync.track(E'T-APP-\n', 'alipay')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-APP-3', 'alipay', 1, 'usd')$$);
SELECT paysync.check_now('T-APP-2');
SELECT paysync.report('T-APP-2', 'closed', 'TRADE_CLOSED') AS changed;
SELECT event_id, payment_id, previous, status, source FROM paysync.events_since(1);
COMMIT;
RESET search_path;
RESET ROLE;
SELECT payment_id, status, channel_status, finalized_at IS NOT NULL AS finalized
FROM paysync.payments ORDER BY payment_id;

--
-- Clean up
--
DROP EXTENSION paysync;
SET client_min_messages = warning;
DROP SCHEMA regress_paysync_evil CASCADE;
RESET client_min_messages;
DROP ROLE regress_paysync_app;
SELECT count(*) AS regress_roles_left FROM pg_roles WHERE rolname LIKE 'regress_paysync%';
