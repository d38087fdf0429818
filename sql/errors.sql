--
-- errors: bad inputs to every public function.  Each must be an ERROR with
-- a specific SQLSTATE (never XX000) and a message naming the offending
-- argument or value.  pg_temp.try() runs one statement and shows its error
-- as "SQLSTATE: message".
--
\i sql/regress_setup.psql

SET client_min_messages = warning;
DROP EXTENSION IF EXISTS paysync CASCADE;
RESET client_min_messages;
CREATE EXTENSION paysync;


-- A valid status_map, to isolate the one bad thing in each case.
\set map '"status_map": {"PAID": "succeeded", "WAIT": "pending"}'

SELECT paysync.create_channel('alipay', 'http_json', 'http://127.0.0.1:9',
							  ('{' || :'map' || '}')::jsonb);

--
-- create_channel
--
-- bad names
SELECT pg_temp.try($$SELECT paysync.create_channel('Alipay', 'http_json', 'https://example.com', '{$$ || :'map' || $$}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('1pay', 'http_json', 'https://example.com', '{$$ || :'map' || $$}')$$);
SELECT pg_temp.try(format($$SELECT paysync.create_channel(%L, 'http_json', 'https://example.com', '{$$ || :'map' || $$}')$$, repeat('a', 64)));
SELECT pg_temp.try($$SELECT paysync.create_channel('', 'http_json', 'https://example.com', '{$$ || :'map' || $$}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('ali-pay', 'http_json', 'https://example.com', '{$$ || :'map' || $$}')$$);
-- unknown driver
SELECT pg_temp.try($$SELECT paysync.create_channel('soap_pay', 'soap', 'https://example.com', '{$$ || :'map' || $$}')$$);
-- URLs: not http(s), unparsable, no host
SELECT pg_temp.try($$SELECT paysync.create_channel('ftp_pay', 'http_json', 'ftp://example.com/pay', '{$$ || :'map' || $$}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('bad_url', 'http_json', 'http://exa mple.com', '{$$ || :'map' || $$}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('bad_url', 'http_json', 'example.com/pay', '{$$ || :'map' || $$}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('no_host', 'http_json', 'http://', '{$$ || :'map' || $$}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('no_host', 'http_json', 'https:///pay', '{$$ || :'map' || $$}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('one_slash', 'http_json', 'http:/example.com', '{$$ || :'map' || $$}')$$);
-- options not an object
SELECT pg_temp.try($$SELECT paysync.create_channel('opts', 'http_json', 'https://example.com', '[]')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('opts', 'http_json', 'https://example.com', '"status_map"')$$);
-- unknown option key
SELECT pg_temp.try($$SELECT paysync.create_channel('opts', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "colour": "red"}')$$);
-- status_map: missing, empty, not an object, to expired, to an unknown
-- status, to a non-string
SELECT pg_temp.try($$SELECT paysync.create_channel('smap', 'http_json', 'https://example.com', '{}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('smap', 'http_json', 'https://example.com', '{"status_map": {}}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('smap', 'http_json', 'https://example.com', '{"status_map": ["PAID"]}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('smap', 'http_json', 'https://example.com', '{"status_map": {"PAID": "succeeded", "TIMEOUT": "expired"}}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('smap', 'http_json', 'https://example.com', '{"status_map": {"PAID": "paid"}}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('smap', 'http_json', 'https://example.com', '{"status_map": {"PAID": 1}}')$$);
-- method, body, path
SELECT pg_temp.try($$SELECT paysync.create_channel('meth', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "method": "PUT"}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('meth', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "body": "{\"id\": \"{payment_id}\"}"}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('meth', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "method": "GET", "body": "x"}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('meth', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "path": 42}')$$);
-- headers: not an object, a value with a newline, a value not a string, a
-- bad header name
SELECT pg_temp.try($$SELECT paysync.create_channel('hdr', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "headers": ["Authorization: x"]}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('hdr', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "headers": {"X-Sign": "abc\r\nX-Evil: 1"}}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('hdr', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "headers": {"X-Retries": 3}}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('hdr', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "headers": {"Bad Header": "x"}}')$$);
-- status_field
SELECT pg_temp.try($$SELECT paysync.create_channel('sfield', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "status_field": "a..b"}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('sfield', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "status_field": ".status"}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('sfield', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "status_field": ""}')$$);
-- not_found
SELECT pg_temp.try($$SELECT paysync.create_channel('nf', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "not_found": "expired"}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('nf', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "not_found": "gone"}')$$);
-- timeout_ms: not a number, not whole, out of range
SELECT pg_temp.try($$SELECT paysync.create_channel('tmo', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "timeout_ms": "5000"}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('tmo', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "timeout_ms": 1.5}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('tmo', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "timeout_ms": 99}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('tmo', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "timeout_ms": 600001}')$$);
-- max_inflight
SELECT pg_temp.try($$SELECT paysync.create_channel('inf', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "max_inflight": 0}')$$);
-- max_rps: not a number, not above 0, too high; pause_after_errors: negative, not whole
SELECT pg_temp.try($$SELECT paysync.create_channel('rps', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "max_rps": "500"}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('rps', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "max_rps": 0}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('rps', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "max_rps": 100001}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('pae', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "pause_after_errors": -1}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('pae', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "pause_after_errors": 2.5}')$$);
-- and the accepted forms: a fraction of a request a second, 0 for a breaker never pausing
SELECT paysync.create_channel('polite', 'http_json', 'https://example.com', ('{' || :'map' || ', "max_rps": 0.5, "pause_after_errors": 0}')::jsonb);
DELETE FROM paysync.channels WHERE name = 'polite';
-- schedule option: not an array, not interval strings, a bad interval, zero,
-- negative, more than 7 days, empty
SELECT pg_temp.try($$SELECT paysync.create_channel('sched', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "schedule": "10s"}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('sched', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "schedule": ["10s", 30]}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('sched', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "schedule": ["10s", "soon"]}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('sched', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "schedule": ["10s", "0s"]}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('sched', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "schedule": ["-10s"]}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('sched', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "schedule": ["1h", "8 days"]}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('sched', 'http_json', 'https://example.com', '{$$ || :'map' || $$, "schedule": []}')$$);
-- duplicate name
SELECT pg_temp.try($$SELECT paysync.create_channel('alipay', 'http_json', 'https://example.com', '{$$ || :'map' || $$}')$$);
-- NULL arguments
SELECT pg_temp.try($$SELECT paysync.create_channel(NULL, 'http_json', 'https://example.com', '{$$ || :'map' || $$}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('nulls', NULL, 'https://example.com', '{$$ || :'map' || $$}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('nulls', 'http_json', NULL, '{$$ || :'map' || $$}')$$);
SELECT pg_temp.try($$SELECT paysync.create_channel('nulls', 'http_json', 'https://example.com', NULL)$$);
-- none of them created a channel
SELECT name FROM paysync.channels ORDER BY name;

--
-- No error ever shows a header value: a channel with a secret header and one
-- other bad thing.  The message, detail, hint and context are searched (the
-- messages themselves are shown above).  The options are passed as a value,
-- so the secret is not in the text of any statement.
--
CREATE FUNCTION pg_temp.secret_shown(options jsonb,
									 base_url text DEFAULT 'https://example.com')
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	msg text; det text; hnt text; ctx text;
BEGIN
	PERFORM paysync.create_channel('leaky', 'http_json', base_url, options);
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
		hnt = PG_EXCEPTION_HINT, ctx = PG_EXCEPTION_CONTEXT;
	RETURN 'error, secret shown: ' ||
		(concat_ws(' ', msg, det, hnt, ctx) LIKE '%sk_live_SECRET%');
END
$$;
\set secret '"headers": {"Authorization": "Bearer sk_live_SECRET"}'
SELECT pg_temp.secret_shown(('{' || :'secret' || ', "colour": "red", ' || :'map' || '}')::jsonb);
SELECT pg_temp.secret_shown(('{' || :'secret' || '}')::jsonb);
SELECT pg_temp.secret_shown(('{' || :'secret' || ', "method": "PUT", ' || :'map' || '}')::jsonb);
SELECT pg_temp.secret_shown(('{' || :'secret' || ', "timeout_ms": 1, ' || :'map' || '}')::jsonb);
SELECT pg_temp.secret_shown(('{' || :'secret' || ', ' || :'map' || '}')::jsonb, 'ftp://example.com');
SELECT pg_temp.secret_shown(('{' || :'secret' || ', ' || :'map' || '}')::jsonb, 'http:/example.com');
SELECT pg_temp.secret_shown(('{' || :'secret' || ', ' || :'map' || '}')::jsonb, 'https://exa mple.com');
SELECT pg_temp.secret_shown('{"headers": {"Authorization": "Bearer sk_live_SECRET\n"}, "status_map": {"PAID": "succeeded"}}');
SELECT pg_temp.secret_shown('{"headers": {"Authorization": "Bearer sk_live_SECRET", "X-Other": "a\nb"}, "status_map": {"PAID": "succeeded"}}');
SELECT pg_temp.secret_shown('{"headers": {"Authorization": "Bearer sk_live_SECRET", "Bad Name": "x"}, "status_map": {"PAID": "succeeded"}}');
SELECT count(*) AS leaky_channels FROM paysync.channels WHERE name = 'leaky';

--
-- track
--
SELECT pg_temp.try($$SELECT paysync.track(NULL, 'alipay')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', NULL)$$);
SELECT pg_temp.try($$SELECT paysync.track('', 'alipay')$$);
SELECT pg_temp.try(format('SELECT paysync.track(%L, %L)', repeat('x', 129), 'alipay'));
SELECT pg_temp.try($$SELECT paysync.track(E'T-1\nT-2', 'alipay')$$);
SELECT pg_temp.try($$SELECT paysync.track(E'T-1\t', 'alipay')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'wechat')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', -1)$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', 100, 'cny')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', 100, 'US')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', 100, 'CNY', '{}')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', schedule => array_fill('1min'::interval, ARRAY[101]))$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', schedule => '{10s, 0s}')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', schedule => '{-10s}')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', schedule => '{1h, 7 days 1 second}')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', schedule => '{1 mon}')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', schedule => '{10s, NULL, 1min}')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', schedule => '{{10s, 20s}, {30s, 40s}}')$$);
-- track() starts at plan[1]: an array indexed from 2 is refused, not kept unchecked
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', schedule => '[2:3]={1h,2h}')$$);
-- none of them tracked anything
SELECT count(*) AS payments FROM paysync.payments;

-- the same id with other details
SELECT payment_id, status FROM paysync.track('T-1', 'alipay', 1999, 'CNY', '{1h}');
SELECT paysync.create_channel('wechat', 'http_json', 'http://127.0.0.1:9',
							  ('{' || :'map' || '}')::jsonb);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', 2000, 'CNY')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', NULL, 'CNY')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', 1999, 'USD')$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'alipay', 1999)$$);
SELECT pg_temp.try($$SELECT paysync.track('T-1', 'wechat', 1999, 'CNY')$$);
SELECT payment_id, channel, amount_minor, currency, status FROM paysync.payments;

--
-- report
--
SELECT pg_temp.try($$SELECT paysync.report('T-1', 'pending')$$);
SELECT pg_temp.try($$SELECT paysync.report('T-1', 'expired')$$);
SELECT pg_temp.try($$SELECT paysync.report('T-1', 'paid')$$);
SELECT pg_temp.try($$SELECT paysync.report('T-404', 'succeeded')$$);
SELECT pg_temp.try($$SELECT paysync.report(NULL, 'succeeded')$$);
SELECT pg_temp.try($$SELECT paysync.report('T-1', NULL)$$);
SELECT pg_temp.try($$SELECT paysync.report('T-1', 'succeeded', repeat('x', 8000))$$);
SELECT status FROM paysync.payments WHERE payment_id = 'T-1';
-- a different final status after a final one changes nothing
SELECT paysync.report('T-1', 'succeeded', 'PAID') AS changed;
SELECT pg_temp.try($$SELECT paysync.report('T-1', 'failed', 'NOT_PAID')$$);
SELECT pg_temp.try($$SELECT paysync.report('T-1', 'closed')$$);
SELECT payment_id, status, channel_status FROM paysync.payments;
SELECT payment_id, previous, status, channel_status, source FROM paysync.events;
-- an expired payment cannot be reported paid either
SELECT payment_id FROM paysync.track('T-2', 'alipay', schedule => '{1h}');
UPDATE paysync.payments SET status = 'expired', next_check_at = NULL,
	finalized_at = now() WHERE payment_id = 'T-2';
SELECT pg_temp.try($$SELECT paysync.report('T-2', 'succeeded')$$);
SELECT payment_id, status FROM paysync.payments WHERE payment_id = 'T-2';

--
-- check_now
--
SELECT pg_temp.try($$SELECT paysync.check_now('T-404')$$);
SELECT pg_temp.try($$SELECT paysync.check_now(NULL)$$);

--
-- events_since
--
SELECT pg_temp.try($$SELECT * FROM paysync.events_since(NULL)$$);
SELECT pg_temp.try($$SELECT * FROM paysync.events_since(0, 0)$$);
SELECT pg_temp.try($$SELECT * FROM paysync.events_since(0, -1)$$);
SELECT pg_temp.try($$SELECT * FROM paysync.events_since(0, NULL)$$);

--
-- run_once
--
SELECT pg_temp.try($$SELECT paysync.run_once(0)$$);
SELECT pg_temp.try($$SELECT paysync.run_once(-1)$$);
SELECT pg_temp.try($$SELECT paysync.run_once(NULL)$$);

DROP EXTENSION paysync;
