#!/usr/bin/env python3
"""listener.py: an order service's paysync listener and webhook endpoint,
written with psycopg 3 (Debian's python3-psycopg) and the standard library.

Listener. paysync records one row in paysync.events for every payment
status change and sends it with NOTIFY in the same transaction. A
notification sent while the listener is disconnected is gone, the row is
not; so the listener catches up with paysync.events_since(last_applied) on
every (re)connect, on every notification that is not simply the next event,
and on a timer ($PAYSYNC_CATCH_UP_SECONDS seconds, default 5) -- which together
miss nothing, even while notifications are skipped under queue pressure.
Applying an event is one transaction in the shop's own tables: the event_id
goes into shop.applied_events, whose primary key makes a second apply
insert nothing, and the status into shop.order_payments; last_applied is
the largest event_id there. A COMMIT whose answer is lost is looked up
after the reconnect in shop.applied_events itself (never with
pg_xact_status(): after a failover the new primary may have given the same
transaction id to another transaction).

Webhook endpoint. With $PAYSYNC_WEBHOOK_PORT set, an HTTP server on
127.0.0.1:$PAYSYNC_WEBHOOK_PORT takes POST /webhook/<channel>, hands the
headers and the raw body, untouched, to paysync.receive() and answers the
channel with the reply_status and reply_body it returns. A notification
that fails verification (SQLSTATE 28000) is answered 401, any other failure
503 so that the channel sends it again. Each request uses a connection of
its own, so a server restart costs at most the requests in flight. The
status change reaches the shop as an event, through the listener.

Refunds (paysync 0.4). Refund events come on their own notify channel
($PAYSYNC_REFUND_NOTIFY_CHANNEL, default "paysync_refunds") and from
paysync.refund_events_since(), never from events_since(): the listener
keeps a second stream the same way, its own last applied refund event in
shop.applied_refund_events and the refund's status in shop.order_refunds,
and prints "refund <event_id> <refund_id> <payment_id> <status>".

Usage: python3 listener.py [CONNECTION_URI]
CONNECTION_URI is a postgresql:// URI; without it, $PAYSYNC_DSN, else the
PG* environment variables. $PAYSYNC_NOTIFY_CHANNEL overrides the channel
(default "paysync"). Prints "applied <event_id> <payment_id> <status>" on
stdout for each event it applies; logs to stderr. SIGTERM or SIGINT: it
finishes the event at hand, stops and exits with status 0.
"""
import http.server
import json
import os
import re
import select
import signal
import sys
import threading
import time

import psycopg
from psycopg import sql

CATCH_UP_BATCH = 1000
CATCH_UP_S = float(os.environ.get("PAYSYNC_CATCH_UP_SECONDS", "5"))
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
WEBHOOK_MAX_BODY = 1024 * 1024

SHOP_DDL = """
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS shop.applied_events (
  event_id bigint PRIMARY KEY,
  payment_id text NOT NULL,
  status text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS shop.order_payments (
  payment_id text PRIMARY KEY,
  status text NOT NULL,
  event_id bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS shop.applied_refund_events (
  event_id bigint PRIMARY KEY,
  refund_id text NOT NULL,
  payment_id text NOT NULL,
  status text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS shop.order_refunds (
  refund_id text PRIMARY KEY,
  payment_id text NOT NULL,
  status text NOT NULL,
  event_id bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now());
"""

DSN = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PAYSYNC_DSN", "")
NOTIFY_CHANNEL = os.environ.get("PAYSYNC_NOTIFY_CHANNEL", "paysync")
REFUND_NOTIFY_CHANNEL = os.environ.get("PAYSYNC_REFUND_NOTIFY_CHANNEL", "paysync_refunds")
WEBHOOK_PORT = os.environ.get("PAYSYNC_WEBHOOK_PORT")

stopping = threading.Event()
# Written to by the signal handler: wakes the listener's select().
wake_read, wake_write = os.pipe()


def log(message):
    """Writes one line to stderr."""
    sys.stderr.write(f"listener: {message}\n")
    sys.stderr.flush()


def report_applied(event_id, payment_id, status):
    """Prints the line the order service's log (and the tests) read."""
    sys.stdout.write(f"applied {event_id} {payment_id} {status}\n")
    sys.stdout.flush()


def report_refund(event_id, refund_id, payment_id, status):
    """Prints the line of an applied refund event."""
    sys.stdout.write(f"refund {event_id} {refund_id} {payment_id} {status}\n")
    sys.stdout.flush()


class Session:
    """One connection's life: LISTEN, catch-up, applying events."""

    def __init__(self, state):
        self.state = state
        self.payloads = []
        self.refund_payloads = []
        self.conn = psycopg.connect(DSN, autocommit=True,
                                    application_name="paysync-listener-py",
                                    connect_timeout=10)
        self.conn.add_notify_handler(self.on_notify)

    def on_notify(self, notify):
        if notify.channel == NOTIFY_CHANNEL:
            self.payloads.append(notify.payload)
        elif notify.channel == REFUND_NOTIFY_CHANNEL:
            self.refund_payloads.append(notify.payload)

    def open(self):
        """Creates the shop's tables if missing, LISTENs, reads last_applied."""
        self.conn.execute(SHOP_DDL)
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
        self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(REFUND_NOTIFY_CHANNEL)))
        row = self.conn.execute(
            "SELECT coalesce(max(event_id), 0) FROM shop.applied_events").fetchone()
        self.state["last_applied"] = row[0]
        refund_row = self.conn.execute(
            "SELECT coalesce(max(event_id), 0) FROM shop.applied_refund_events").fetchone()
        self.state["last_refund"] = refund_row[0]
        log(f'connected, listening on "{NOTIFY_CHANNEL}" and "{REFUND_NOTIFY_CHANNEL}", '
            f'last applied event {row[0]}, refund event {refund_row[0]}')

    def apply(self, event_id, payment_id, status):
        """Applies one event in one transaction, unless it was applied before."""
        if event_id <= self.state["last_applied"]:
            return
        self.conn.execute("BEGIN")
        try:
            row = self.conn.execute(
                """INSERT INTO shop.applied_events (event_id, payment_id, status)
                   VALUES (%s, %s, %s) ON CONFLICT (event_id) DO NOTHING
                   RETURNING event_id""",
                (event_id, payment_id, status)).fetchone()
            if row is None:
                # applied before: change nothing
                self.conn.execute("ROLLBACK")
                self.state["last_applied"] = event_id
                return
            # The order service's own change, in the same transaction.
            self.conn.execute(
                """INSERT INTO shop.order_payments AS o (payment_id, status, event_id)
                   VALUES (%s, %s, %s)
                   ON CONFLICT (payment_id) DO UPDATE
                   SET status = excluded.status, event_id = excluded.event_id,
                       updated_at = now()
                   WHERE o.event_id < excluded.event_id""",
                (payment_id, status, event_id))
        except Exception:
            try:
                self.conn.execute("ROLLBACK")
            except psycopg.Error:
                pass
            raise
        try:
            self.conn.execute("COMMIT")
        except psycopg.Error:
            # it may have committed: ask after the reconnect
            self.state["in_doubt"] = (event_id, payment_id, status)
            raise
        self.state["last_applied"] = event_id
        report_applied(event_id, payment_id, status)

    def apply_refund(self, event_id, refund_id, payment_id, status):
        """Applies one refund event in one transaction, unless applied before."""
        if event_id <= self.state["last_refund"]:
            return
        self.conn.execute("BEGIN")
        try:
            row = self.conn.execute(
                """INSERT INTO shop.applied_refund_events
                       (event_id, refund_id, payment_id, status)
                   VALUES (%s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING
                   RETURNING event_id""",
                (event_id, refund_id, payment_id, status)).fetchone()
            if row is None:
                self.conn.execute("ROLLBACK")
                self.state["last_refund"] = event_id
                return
            self.conn.execute(
                """INSERT INTO shop.order_refunds AS o (refund_id, payment_id, status, event_id)
                   VALUES (%s, %s, %s, %s)
                   ON CONFLICT (refund_id) DO UPDATE
                   SET status = excluded.status, event_id = excluded.event_id,
                       updated_at = now()
                   WHERE o.event_id < excluded.event_id""",
                (refund_id, payment_id, status, event_id))
        except Exception:
            try:
                self.conn.execute("ROLLBACK")
            except psycopg.Error:
                pass
            raise
        try:
            self.conn.execute("COMMIT")
        except psycopg.Error:
            self.state["refund_in_doubt"] = (event_id, refund_id, payment_id, status)
            raise
        self.state["last_refund"] = event_id
        report_refund(event_id, refund_id, payment_id, status)

    def resolve_refund_in_doubt(self):
        """As resolve_in_doubt, for a refund event."""
        doubt = self.state.get("refund_in_doubt")
        if doubt is None:
            return
        event_id, refund_id, payment_id, status = doubt
        row = self.conn.execute(
            "SELECT EXISTS (SELECT FROM shop.applied_refund_events WHERE event_id = %s)",
            (event_id,)).fetchone()
        if row[0]:
            self.state["last_refund"] = max(self.state["last_refund"], event_id)
            report_refund(event_id, refund_id, payment_id, status)
        self.state["refund_in_doubt"] = None

    def catch_up_refunds(self):
        """Applies every refund event after the last applied one."""
        while not stopping.is_set():
            rows = self.conn.execute(
                "SELECT event_id, refund_id, payment_id, status::text "
                "FROM paysync.refund_events_since(%s, %s)",
                (self.state["last_refund"], CATCH_UP_BATCH)).fetchall()
            if not rows:
                return
            for event_id, refund_id, payment_id, status in rows:
                if stopping.is_set():
                    return
                self.apply_refund(event_id, refund_id, payment_id, status)

    def handle_refund_payload(self, payload):
        """A refund notification: applied if it is about a refund not yet
        applied, after the refund events before it (refund_events_since)."""
        try:
            value = json.loads(payload)
            event_id = value["event_id"]
            if not isinstance(event_id, int) or not isinstance(value["refund_id"], str):
                raise ValueError("wrong types")
        except (ValueError, KeyError, TypeError):
            log(f"unreadable refund payload, catching up: {payload}")
            event_id = None
        if event_id is None or event_id > self.state["last_refund"]:
            # event ids are shared with payments: a gap says nothing, so
            # the refund stream always catches up (it is short)
            self.catch_up_refunds()

    def resolve_in_doubt(self):
        """After a reconnect: did the COMMIT whose answer was lost take effect?
        The event's own row in shop.applied_events says so, on whichever
        server this is now; if it is not there, the catch-up applies the
        event again."""
        doubt = self.state.get("in_doubt")
        if doubt is None:
            return
        event_id, payment_id, status = doubt
        row = self.conn.execute(
            "SELECT EXISTS (SELECT FROM shop.applied_events WHERE event_id = %s)",
            (event_id,)).fetchone()
        applied = bool(row[0])
        log(f"event {event_id}, whose COMMIT was in doubt: "
            f"{'applied' if applied else 'not applied, applying it again'}")
        if applied:
            self.state["last_applied"] = max(self.state["last_applied"], event_id)
            report_applied(event_id, payment_id, status)
        self.state["in_doubt"] = None

    def catch_up(self):
        """Applies every event after last_applied."""
        while not stopping.is_set():
            rows = self.conn.execute(
                "SELECT event_id, payment_id, status::text "
                "FROM paysync.events_since(%s, %s)",
                (self.state["last_applied"], CATCH_UP_BATCH)).fetchall()
            if not rows:
                return
            for event_id, payment_id, status in rows:
                if stopping.is_set():
                    return
                self.apply(event_id, payment_id, status)

    def handle_payload(self, payload):
        """The next event is applied from its payload; anything else catches up."""
        try:
            value = json.loads(payload)
            event_id = value["event_id"]
            payment_id = value["payment_id"]
            status = value["status"]
            if not (isinstance(event_id, int) and isinstance(payment_id, str)
                    and isinstance(status, str)):
                raise ValueError("wrong types")
        except (ValueError, KeyError, TypeError):
            log(f"unreadable payload, catching up: {payload}")
            self.catch_up()
            return
        last = self.state["last_applied"]
        if event_id <= last:
            return
        if event_id == last + 1:
            self.apply(event_id, payment_id, status)
        else:
            log(f"event {event_id} after {last}: catching up")
            self.catch_up()

    def listen(self):
        """Waits for notifications and the timer until stopped or lost."""
        next_catch_up = time.monotonic() + CATCH_UP_S
        while not stopping.is_set():
            while self.payloads and not stopping.is_set():
                self.handle_payload(self.payloads.pop(0))
            while self.refund_payloads and not stopping.is_set():
                self.handle_refund_payload(self.refund_payloads.pop(0))
            timeout = max(0.0, next_catch_up - time.monotonic())
            ready, _, _ = select.select([self.conn.fileno(), wake_read], [], [], timeout)
            if stopping.is_set():
                return
            if self.conn.fileno() in ready:
                # a query delivers what arrived to on_notify (and finds a lost
                # connection)
                self.conn.execute("SELECT 1")
            if time.monotonic() >= next_catch_up:
                self.catch_up()
                self.catch_up_refunds()
                next_catch_up = time.monotonic() + CATCH_UP_S

    def close(self):
        try:
            self.conn.close()
        except psycopg.Error:
            pass


class WebhookHandler(http.server.BaseHTTPRequestHandler):
    """POST /webhook/<channel>: paysync.receive() decides and says what to answer."""

    PATH = re.compile(r"^/webhook/([a-z][a-z0-9_]{0,62})$")

    def do_POST(self):
        match = self.PATH.match(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if not match or length > WEBHOOK_MAX_BODY:
            self.answer(404 if not match else 413, b"")
            return
        raw = self.rfile.read(length)
        channel = match.group(1)
        headers = {name: value for name, value in self.headers.items()}
        try:
            # the raw body, byte for byte: signatures are over it
            body = raw.decode("utf-8")
            with psycopg.connect(DSN, autocommit=True, connect_timeout=5,
                                 application_name="paysync-webhook-py") as conn:
                payment_id, _, outcome, reply_status, reply_body = conn.execute(
                    "SELECT payment_id, status::text, outcome, reply_status, reply_body "
                    "FROM paysync.receive(%s, %s::jsonb, %s)",
                    (channel, json.dumps(headers), body)).fetchone()
            log(f"webhook {channel} {payment_id} {outcome}")
            self.answer(reply_status, reply_body.encode("utf-8"))
        except UnicodeDecodeError:
            log(f"webhook {channel} refused: the body is not UTF-8")
            self.answer(401, b"")
        except psycopg.Error as err:
            if err.sqlstate == "28000":
                detail = err.diag.message_detail or str(err)
                log(f"webhook {channel} refused: {detail}")
                self.answer(401, b"")
            else:
                log(f"webhook {channel} failed: {str(err).strip()}")
                self.answer(503, b"")

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        """Quiet: the outcome is logged by do_POST."""


def start_webhook_server(port):
    """Serves the webhook endpoint in a thread of its own; returns the server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), WebhookHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log(f"webhook endpoint on 127.0.0.1:{port}")
    return server


def on_signal(signum, frame):
    stopping.set()
    os.write(wake_write, b"x")


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = start_webhook_server(int(WEBHOOK_PORT)) if WEBHOOK_PORT else None
    state = {"last_applied": 0, "in_doubt": None,
             "last_refund": 0, "refund_in_doubt": None}
    backoff = BACKOFF_MIN_S
    while not stopping.is_set():
        session = None
        try:
            session = Session(state)
            session.open()
            session.resolve_in_doubt()
            session.resolve_refund_in_doubt()
            session.catch_up()
            session.catch_up_refunds()
            if not stopping.is_set():
                log(f"caught up to event {state['last_applied']}, "
                    f"refund event {state['last_refund']}")
            backoff = BACKOFF_MIN_S
            session.listen()
        except (psycopg.Error, RuntimeError, OSError) as err:
            log(f"session failed: {str(err).strip()}")
        if session is not None:
            session.close()
        if stopping.is_set():
            break
        log(f"reconnecting in {int(backoff * 1000)} ms")
        stopping.wait(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX_S)
    if server is not None:
        server.shutdown()
    log(f"stopped at event {state['last_applied']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
