/* paysync--0.1.sql: schema, tables and SQL functions of paysync 0.1 */

\echo Use "CREATE EXTENSION paysync" to load this file. \quit

CREATE TYPE paysync.payment_status AS ENUM
	('pending', 'succeeded', 'failed', 'cancelled', 'closed', 'expired');

/*
 * Internal C helpers.  They are not granted to anyone; the public functions
 * below call them as the extension's owner.
 */

-- Checks a channel definition; raises an ERROR naming what is wrong.
CREATE FUNCTION paysync._validate_channel(name text, driver text,
										  base_url text, options jsonb)
RETURNS void
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'paysync_validate_channel';

-- Checks a schedule (1..100 delays, each > 0 and <= 7 days).
CREATE FUNCTION paysync._validate_schedule(schedule interval[])
RETURNS void
LANGUAGE C
AS 'MODULE_PATHNAME', 'paysync_validate_schedule';

-- Asks for the worker to be woken when this transaction commits, if a check
-- due at due_at is earlier than the worker's planned wake-up.
CREATE FUNCTION paysync._wake_worker_at_commit(due_at timestamptz)
RETURNS void
LANGUAGE C STRICT
AS 'MODULE_PATHNAME', 'paysync_wake_worker_at_commit';

-- Takes the lock that numbers events in commit order (held to commit).
CREATE FUNCTION paysync._lock_events()
RETURNS void
LANGUAGE sql
AS $$ SELECT pg_catalog.pg_advisory_xact_lock(1885436275, 1) $$;

/* Tables */

CREATE TABLE paysync.channels (
	name		text PRIMARY KEY,
	driver		text NOT NULL,
	base_url	text NOT NULL,
	options		jsonb NOT NULL DEFAULT '{}',
	enabled		boolean NOT NULL DEFAULT true,
	created_at	timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT channels_name_check
		CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
	CONSTRAINT channels_base_url_check
		CHECK (base_url ~* '^https?://')
);

CREATE TABLE paysync.payments (
	payment_id		text PRIMARY KEY,
	channel			text NOT NULL REFERENCES paysync.channels (name),
	status			paysync.payment_status NOT NULL DEFAULT 'pending',
	channel_status	text,
	amount_minor	bigint,
	currency		text,
	schedule		interval[] NOT NULL,
	step			integer NOT NULL DEFAULT 0,
	attempts		integer NOT NULL DEFAULT 0,
	errors			integer NOT NULL DEFAULT 0,
	next_check_at	timestamptz,
	last_checked_at timestamptz,
	last_error		text,
	expires_at		timestamptz,
	metadata		jsonb,
	created_at		timestamptz NOT NULL DEFAULT now(),
	updated_at		timestamptz NOT NULL DEFAULT now(),
	finalized_at	timestamptz,
	/* while a check is in flight: when its claim lapses */
	claimed_until	timestamptz,
	/* given up on: the trade is being closed at the channel (close_on_expiry) */
	closing			boolean NOT NULL DEFAULT false,
	CONSTRAINT payments_payment_id_check
		CHECK (length(payment_id) BETWEEN 1 AND 128
			   AND payment_id !~ '[[:cntrl:]]'),
	CONSTRAINT payments_final_check
		CHECK ((status = 'pending') = (finalized_at IS NULL)
			   AND (status = 'pending' OR next_check_at IS NULL))
);

/* The worker's claim and wake-up queries walk this index per channel. */
CREATE INDEX payments_due_idx ON paysync.payments (channel, next_check_at)
	WHERE status = 'pending';

CREATE TABLE paysync.events (
	event_id		bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	payment_id		text NOT NULL,
	channel			text NOT NULL,
	previous		paysync.payment_status NOT NULL,
	status			paysync.payment_status NOT NULL,
	channel_status	text,
	source			text NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT events_source_check
		CHECK (source IN ('poll', 'report', 'expiry'))
);

/*
 * A payment changes status once (pending to final), so it has at most one
 * event: the database itself refuses a second one.
 */
CREATE UNIQUE INDEX events_payment_id_idx ON paysync.events (payment_id);

SELECT pg_catalog.pg_extension_config_dump('paysync.channels', '');
SELECT pg_catalog.pg_extension_config_dump('paysync.payments', '');
SELECT pg_catalog.pg_extension_config_dump('paysync.events', '');
SELECT pg_catalog.pg_extension_config_dump('paysync.events_event_id_seq', '');

/* Triggers */

-- Validates every channel row, however it is written.
CREATE FUNCTION paysync._channels_validate()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM paysync._validate_channel(NEW.name, NEW.driver, NEW.base_url,
									  NEW.options);
	RETURN NEW;
END
$$;

CREATE TRIGGER channels_validate
	BEFORE INSERT OR UPDATE ON paysync.channels
	FOR EACH ROW EXECUTE FUNCTION paysync._channels_validate();

-- A final status is never left: refuse any update that would.
CREATE FUNCTION paysync._payments_keep_final()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	RAISE EXCEPTION 'payment "%" is already %, it cannot become %',
		OLD.payment_id, OLD.status, NEW.status
		USING ERRCODE = 'object_not_in_prerequisite_state';
END
$$;

CREATE TRIGGER payments_keep_final
	BEFORE UPDATE ON paysync.payments
	FOR EACH ROW
	WHEN (OLD.status <> 'pending' AND NEW.status IS DISTINCT FROM OLD.status)
	EXECUTE FUNCTION paysync._payments_keep_final();

-- Events are numbered in commit order: whoever inserts one holds this lock
-- until commit, so events_since() never skips an event that commits late.
CREATE FUNCTION paysync._events_serialize()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	PERFORM paysync._lock_events();
	RETURN NULL;
END
$$;

CREATE TRIGGER events_serialize
	BEFORE INSERT ON paysync.events
	FOR EACH STATEMENT EXECUTE FUNCTION paysync._events_serialize();

-- Sends every new event with NOTIFY, in the inserting transaction.
CREATE FUNCTION paysync._events_notify()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	notify_channel text := coalesce(nullif(current_setting('paysync.notify_channel', true), ''),
									'paysync');
BEGIN
	PERFORM pg_notify(notify_channel,
					  json_build_object('event_id', e.event_id,
										'payment_id', e.payment_id,
										'channel', e.channel,
										'status', e.status,
										'previous', e.previous,
										'channel_status', e.channel_status,
										'source', e.source)::text)
	FROM (SELECT * FROM new_events ORDER BY event_id) e;
	RETURN NULL;
END
$$;

CREATE TRIGGER events_notify
	AFTER INSERT ON paysync.events
	REFERENCING NEW TABLE AS new_events
	FOR EACH STATEMENT EXECUTE FUNCTION paysync._events_notify();

/* Public functions */

CREATE FUNCTION paysync.create_channel(name text, driver text, base_url text,
									   options jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF name IS NULL THEN
		RAISE EXCEPTION 'create_channel: name must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF driver IS NULL THEN
		RAISE EXCEPTION 'create_channel: driver must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF base_url IS NULL THEN
		RAISE EXCEPTION 'create_channel: base_url must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF options IS NULL THEN
		RAISE EXCEPTION 'create_channel: options must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF EXISTS (SELECT 1 FROM paysync.channels c WHERE c.name = create_channel.name) THEN
		RAISE EXCEPTION 'channel "%" already exists', name
			USING ERRCODE = 'duplicate_object',
				  HINT = 'To change it, UPDATE paysync.channels (the same checks apply).';
	END IF;
	INSERT INTO paysync.channels (name, driver, base_url, options)
	VALUES (name, driver, base_url, options);
END
$$;

CREATE FUNCTION paysync.track(payment_id text, channel text,
							  amount_minor bigint DEFAULT NULL,
							  currency text DEFAULT NULL,
							  schedule interval[] DEFAULT NULL,
							  expires_at timestamptz DEFAULT NULL,
							  metadata jsonb DEFAULT NULL)
RETURNS paysync.payments
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	chan		paysync.channels;
	plan		interval[] := schedule;
	tracked		paysync.payments;
BEGIN
	IF payment_id IS NULL THEN
		RAISE EXCEPTION 'track: payment_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF channel IS NULL THEN
		RAISE EXCEPTION 'track: channel must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF length(payment_id) NOT BETWEEN 1 AND 128 OR payment_id ~ '[[:cntrl:]]' THEN
		RAISE EXCEPTION 'invalid payment_id "%"', left(regexp_replace(payment_id, '[[:cntrl:]]', '?', 'g'), 140)
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A payment_id has 1 to 128 characters and no control characters.';
	END IF;
	IF amount_minor < 0 THEN
		RAISE EXCEPTION 'invalid amount_minor %: it must not be negative', amount_minor
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF currency !~ '^[A-Z]{3}$' THEN
		RAISE EXCEPTION 'invalid currency "%"', currency
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use an ISO 4217 code in capitals, such as CNY or USD.';
	END IF;

	SELECT * INTO chan FROM paysync.channels c WHERE c.name = track.channel;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown channel "%"', channel
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it first with paysync.create_channel().';
	END IF;

	IF plan IS NULL THEN
		plan := coalesce((SELECT array_agg(d::interval)
						  FROM jsonb_array_elements_text(chan.options -> 'schedule') d),
						 '{10s,30s,1min,2min,5min,10min,30min,1h}'::interval[]);
	END IF;
	PERFORM paysync._validate_schedule(plan);

	INSERT INTO paysync.payments AS p
		(payment_id, channel, amount_minor, currency, schedule, expires_at,
		 metadata, next_check_at)
	VALUES (payment_id, channel, amount_minor, currency, plan, expires_at,
			metadata, now() + plan[1])
	ON CONFLICT ON CONSTRAINT payments_pkey DO NOTHING
	RETURNING * INTO tracked;

	IF FOUND THEN
		PERFORM paysync._wake_worker_at_commit(tracked.next_check_at);
		RETURN tracked;
	END IF;

	SELECT * INTO tracked FROM paysync.payments p WHERE p.payment_id = track.payment_id;
	IF tracked.channel IS DISTINCT FROM channel
		OR tracked.amount_minor IS DISTINCT FROM amount_minor
		OR tracked.currency IS DISTINCT FROM currency THEN
		RAISE EXCEPTION 'payment "%" is already tracked with other details', payment_id
			USING ERRCODE = 'unique_violation',
				  DETAIL = format('Tracked: channel %s, amount_minor %s, currency %s; given: channel %s, amount_minor %s, currency %s.',
								  tracked.channel, coalesce(tracked.amount_minor::text, 'null'),
								  coalesce(tracked.currency, 'null'), channel,
								  coalesce(amount_minor::text, 'null'), coalesce(currency, 'null'));
	END IF;
	RETURN tracked;
END
$$;

CREATE FUNCTION paysync.report(payment_id text, status paysync.payment_status,
							   channel_status text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	current		paysync.payments;
BEGIN
	IF payment_id IS NULL THEN
		RAISE EXCEPTION 'report: payment_id must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF status IS NULL THEN
		RAISE EXCEPTION 'report: status must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF octet_length(channel_status) > 256 THEN
		RAISE EXCEPTION 'report: channel_status "%..." is longer than 256 bytes', left(channel_status, 32)
			USING ERRCODE = 'string_data_right_truncation';
	END IF;
	IF status IN ('pending', 'expired') THEN
		RAISE EXCEPTION 'report: status "%" cannot be reported', status
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Report a final status: succeeded, failed, cancelled or closed.';
	END IF;

	/* the events lock first, then the row: the worker takes them in this order */
	PERFORM paysync._lock_events();
	SELECT * INTO current FROM paysync.payments p
	WHERE p.payment_id = report.payment_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown payment "%"', payment_id
			USING ERRCODE = 'no_data_found';
	END IF;

	IF current.status = status THEN
		RETURN false;
	END IF;
	IF current.status <> 'pending' THEN
		RAISE EXCEPTION 'payment "%" is already %, it cannot become %',
			payment_id, current.status, status
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'A final status never changes; reconcile this payment by hand.';
	END IF;

	UPDATE paysync.payments p
	SET status = report.status,
		channel_status = coalesce(report.channel_status, p.channel_status),
		next_check_at = NULL,
		claimed_until = NULL,
		finalized_at = now(),
		updated_at = now()
	WHERE p.payment_id = report.payment_id;

	INSERT INTO paysync.events (payment_id, channel, previous, status,
								channel_status, source)
	VALUES (payment_id, current.channel, 'pending', status,
			coalesce(channel_status, current.channel_status), 'report');
	RETURN true;
END
$$;

CREATE FUNCTION paysync.check_now(payment_id text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	current		paysync.payments;
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
	UPDATE paysync.payments p
	SET next_check_at = now(), updated_at = now()
	WHERE p.payment_id = check_now.payment_id;
	PERFORM paysync._wake_worker_at_commit(now());
END
$$;

CREATE FUNCTION paysync.events_since(after_event_id bigint,
									 max_rows integer DEFAULT 1000)
RETURNS SETOF paysync.events
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
	IF after_event_id IS NULL THEN
		RAISE EXCEPTION 'events_since: after_event_id must not be null'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass 0 to read from the first event.';
	END IF;
	IF max_rows IS NULL OR max_rows < 1 THEN
		RAISE EXCEPTION 'invalid max_rows %: it must be at least 1', coalesce(max_rows::text, 'null')
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	RETURN QUERY
		SELECT * FROM paysync.events e
		WHERE e.event_id > after_event_id
		ORDER BY e.event_id
		LIMIT max_rows;
END
$$;

CREATE FUNCTION paysync.run_once(max_checks integer DEFAULT 1000)
RETURNS integer
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'paysync_run_once';

/* Privileges: nothing for PUBLIC but the schema; grant functions by role. */

REVOKE ALL ON ALL TABLES IN SCHEMA paysync FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA paysync FROM PUBLIC;
GRANT USAGE ON SCHEMA paysync TO PUBLIC;
