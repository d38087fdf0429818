#!/usr/bin/env node
/*
 * listener.js: an order service's paysync listener, written with
 * node-postgres (pg).
 *
 * paysync records one row in paysync.events for every payment status change
 * and sends it with NOTIFY in the same transaction. A notification sent
 * while the listener is disconnected is gone, the row is not; so this
 * listener, on every (re)connect:
 *
 *   1. runs LISTEN paysync first, so nothing committed from then on can pass
 *      unnoticed;
 *   2. catches up: reads paysync.events_since(lastApplied, 1000) and applies
 *      the rows, again and again until it returns none;
 *   3. waits for notifications. An event_id it has already applied is
 *      skipped; lastApplied + 1 is applied from the payload; anything beyond
 *      may follow a gap, so it catches up again (events_since returns that
 *      event too). With nothing heard for a few seconds it catches up
 *      anyway: paysync commits events without their NOTIFY while
 *      PostgreSQL's notification queue is held by some other listener
 *      (paysync.notify_queue_limit);
 *   4. on a lost connection, reconnects with backoff and starts at 1.
 *
 * Applying an event is one transaction in the shop's own tables: the
 * event_id goes into shop.applied_events, whose primary key makes a second
 * apply insert nothing (it is rolled back and skipped), and the status into
 * shop.order_payments. lastApplied is the largest event_id in
 * shop.applied_events, so the change and the memory of having made it
 * commit together or not at all. If COMMIT fails without an answer we can
 * trust, the outcome is looked up after the reconnect in
 * shop.applied_events itself, never with pg_xact_status(): after a failover
 * the new primary may have given the same transaction id to another
 * transaction.
 *
 * With $PAYSYNC_WEBHOOK_PORT set it is also the shop's webhook endpoint:
 * an HTTP server on 127.0.0.1:$PAYSYNC_WEBHOOK_PORT (Node's own http
 * module) takes POST /webhook/<channel>, hands the headers and the raw
 * body, untouched, to paysync.receive() and answers the channel with the
 * reply_status and reply_body it returns; a notification that fails
 * verification (SQLSTATE 28000) is answered 401, and any other failure
 * 503 so that the channel sends it again. The status change itself reaches
 * the shop as an event, like every other: through the listener.
 *
 * Refunds (paysync 0.4): refund events come on their own notify channel
 * ($PAYSYNC_REFUND_NOTIFY_CHANNEL, default "paysync_refunds") and from
 * paysync.refund_events_since(), never from events_since(). The listener
 * keeps them as a second stream: its last applied refund event is the
 * largest in shop.applied_refund_events, the refund's status goes into
 * shop.order_refunds, and each is printed as
 * "refund <event_id> <refund_id> <payment_id> <status>". Event ids are
 * shared with payments, so a refund notification after the last applied
 * one always catches up with refund_events_since().
 *
 * Usage: node listener.js [CONNECTION_URI]
 * CONNECTION_URI is a postgresql:// URI (for a Unix socket:
 * postgresql:///shop?host=/var/run/postgresql); without it, $PAYSYNC_DSN,
 * else the PG* environment variables (PGHOST, PGDATABASE, PGUSER...).
 * $PAYSYNC_NOTIFY_CHANNEL overrides the channel (default "paysync");
 * $PAYSYNC_CATCH_UP_SECONDS the catch-up when nothing is heard (default 5).
 * Prints "applied <event_id> <payment_id> <status>" on stdout for each event
 * it applies; logs to stderr. SIGTERM or SIGINT: it finishes the event at
 * hand, disconnects and exits with status 0.
 */
'use strict';

const http = require('http');
const { Client, Pool } = require('pg');

// Rows asked of events_since() at a time.
const CATCH_UP_BATCH = 1000;
// With no notification for this long, catch up anyway: notifications can be
// skipped, events never are. Also a liveness check.
const DEFAULT_CATCH_UP_SECONDS = 5;
const MAX_CATCH_UP_SECONDS = 3600;
// Reconnect delays: doubled after every failed attempt, up to the maximum.
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;

// Shop tables, created if missing (a real service has them in migrations).
const SHOP_DDL = `
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
  updated_at timestamptz NOT NULL DEFAULT now());`;

// The largest notification body the webhook endpoint takes.
const WEBHOOK_MAX_BODY = 1024 * 1024;

const connectionString = process.argv[2] || process.env.PAYSYNC_DSN || undefined;
const webhookPort = process.env.PAYSYNC_WEBHOOK_PORT;
const notifyChannel = process.env.PAYSYNC_NOTIFY_CHANNEL || 'paysync';
const refundNotifyChannel = process.env.PAYSYNC_REFUND_NOTIFY_CHANNEL || 'paysync_refunds';
const catchUpMs = catchUpSeconds(process.env.PAYSYNC_CATCH_UP_SECONDS) * 1000;

// Largest event_id known to be in shop.applied_events (event_id is a
// bigint: kept as a BigInt).
let lastApplied = 0n;
// Largest event_id in shop.applied_refund_events.
let lastRefund = 0n;
// An event whose COMMIT failed without a trustworthy answer, or null.
let inDoubt = null;
let stopping = false;
// Called to cut a wait short (a notification, a lost connection, a signal).
let wakeUp = null;

// Writes one line to stderr.
function log(message) {
  process.stderr.write(`listener: ${message}\n`);
}

// Prints the line the order service's log (and the tests) read.
function reportApplied(event) {
  process.stdout.write(`applied ${event.eventId} ${event.paymentId} ${event.status}\n`);
}

// Prints the line of an applied refund event.
function reportRefund(event) {
  process.stdout.write(`refund ${event.eventId} ${event.refundId} ${event.paymentId} ${event.status}\n`);
}

// Resolves after ms, or earlier when wakeUp() is called.
function sleep(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      if (wakeUp === done) wakeUp = null;
      resolve();
    }
    wakeUp = done;
  });
}

// Cuts the current wait short.
function wake() {
  if (wakeUp) wakeUp();
}

// One connection's life: what it has heard and whether it was lost.
class Session {
  constructor() {
    this.client = new Client({
      connectionString,
      application_name: 'paysync-listener-js',
      connectionTimeoutMillis: 10000,
    });
    this.payloads = [];
    this.refundHeard = false;
    this.lost = null;
    this.client.on('notification', (msg) => {
      if (msg.channel === notifyChannel) {
        this.payloads.push(msg.payload);
        wake();
      } else if (msg.channel === refundNotifyChannel) {
        this.refundHeard = true;
        wake();
      }
    });
    // Without an 'error' handler a dropped idle connection kills the process.
    this.client.on('error', (err) => this.fail(err));
    this.client.on('end', () => this.fail(new Error('connection closed')));
    this.client.on('notice', (msg) => log(`server: ${msg.severity}: ${msg.message}`));
  }

  fail(err) {
    if (!this.lost) this.lost = err;
    wake();
  }

  // Connects, creates the shop's tables if missing, runs LISTEN and reads
  // lastApplied from shop.applied_events.
  async open() {
    const { client } = this;
    await client.connect();
    await client.query(SHOP_DDL);
    await client.query(`LISTEN ${client.escapeIdentifier(notifyChannel)}`);
    await client.query(`LISTEN ${client.escapeIdentifier(refundNotifyChannel)}`);
    const res = await client.query(
      'SELECT coalesce(max(event_id), 0)::text AS last FROM shop.applied_events');
    lastApplied = BigInt(res.rows[0].last);
    const refunds = await client.query(
      'SELECT coalesce(max(event_id), 0)::text AS last FROM shop.applied_refund_events');
    lastRefund = BigInt(refunds.rows[0].last);
    log(`connected, listening on "${notifyChannel}" and "${refundNotifyChannel}", ` +
        `last applied event ${lastApplied}, refund event ${lastRefund}`);
  }

  // Applies one event in one transaction, unless it was applied before.
  // The INSERT into shop.applied_events is the idempotency check: its
  // primary key lets an event_id in once, whoever (this process before a
  // restart, another instance) tries again. The order's own change is made
  // in the same transaction, so both or neither are there.
  async apply(event) {
    const { client } = this;
    if (event.eventId <= lastApplied) return 'skipped';
    const params = [event.eventId.toString(), event.paymentId, event.status];

    await client.query('BEGIN');
    try {
      const res = await client.query(
        `INSERT INTO shop.applied_events (event_id, payment_id, status)
         VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id`, params);
      if (res.rowCount === 0) {
        // Applied before: change nothing. If it is the event whose COMMIT
        // was in doubt, that COMMIT took effect after all (the INSERT
        // waited for it): it was applied by this process, so report it.
        await client.query('ROLLBACK');
        lastApplied = event.eventId;
        if (inDoubt && inDoubt.eventId === event.eventId) {
          inDoubt = null;
          reportApplied(event);
        }
        return 'skipped';
      }
      // The order service's own change. A real shop would mark the order
      // paid (or cancelled) here and queue what follows, in this transaction.
      await client.query(
        `INSERT INTO shop.order_payments AS o (payment_id, status, event_id)
         VALUES ($2, $3, $1)
         ON CONFLICT (payment_id) DO UPDATE
         SET status = excluded.status, event_id = excluded.event_id, updated_at = now()
         WHERE o.event_id < excluded.event_id`, params);
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    }
    try {
      await client.query('COMMIT');
    } catch (err) {
      // No answer, or an error that may have come after the commit (the
      // server shutting down): it may have committed. Reconnect and ask.
      inDoubt = event;
      throw err;
    }
    if (inDoubt && inDoubt.eventId === event.eventId) inDoubt = null;
    lastApplied = event.eventId;
    reportApplied(event);
    return 'applied';
  }

  // After a reconnect: did the COMMIT whose answer was lost take effect?
  // The event's row in shop.applied_events says so, on whichever server
  // this is (a transaction id would not: a promoted standby that never
  // received the COMMIT may have given the same id to another
  // transaction). If the row is there, the event was applied by this
  // process and is reported now; if not, the catch-up that follows applies
  // it, and if the old COMMIT lands first after all, apply() reports it.
  async resolveInDoubt() {
    if (!inDoubt) return;
    const event = inDoubt;
    const res = await this.client.query(
      'SELECT EXISTS (SELECT FROM shop.applied_events WHERE event_id = $1) AS applied',
      [event.eventId.toString()]);
    const { applied } = res.rows[0];
    log(`event ${event.eventId}, whose COMMIT was in doubt: ${applied ? 'applied' : 'not applied, applying it again'}`);
    if (applied) {
      inDoubt = null;
      if (event.eventId > lastApplied) lastApplied = event.eventId;
      reportApplied(event);
    }
  }

  // Applies every event after lastApplied, reading events_since() until it
  // returns nothing (or a stop signal arrives).
  async catchUp() {
    for (;;) {
      const res = await this.client.query(
        `SELECT event_id::text, payment_id, status::text
         FROM paysync.events_since($1, ${CATCH_UP_BATCH})`, [lastApplied.toString()]);
      if (res.rows.length === 0) return;
      for (const row of res.rows) {
        if (stopping) return;
        await this.apply({
          eventId: BigInt(row.event_id),
          paymentId: row.payment_id,
          status: row.status,
        });
      }
    }
  }

  // Applies one refund event in one transaction, unless it was applied
  // before (shop.applied_refund_events's primary key, as for payments). A
  // COMMIT without an answer is thrown: after the reconnect the catch-up
  // finds the event applied (then it is reported here) or applies it.
  async applyRefund(event) {
    const { client } = this;
    if (event.eventId <= lastRefund) return;
    const params = [event.eventId.toString(), event.refundId, event.paymentId, event.status];
    await client.query('BEGIN');
    try {
      const res = await client.query(
        `INSERT INTO shop.applied_refund_events (event_id, refund_id, payment_id, status)
         VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO NOTHING
         RETURNING event_id`, params);
      if (res.rowCount === 0) {
        await client.query('ROLLBACK');
        lastRefund = event.eventId;
        return;
      }
      await client.query(
        `INSERT INTO shop.order_refunds AS o (refund_id, payment_id, status, event_id)
         VALUES ($2, $3, $4, $1)
         ON CONFLICT (refund_id) DO UPDATE
         SET status = excluded.status, event_id = excluded.event_id, updated_at = now()
         WHERE o.event_id < excluded.event_id`, params);
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    }
    await client.query('COMMIT');
    lastRefund = event.eventId;
    reportRefund(event);
  }

  // Applies every refund event after lastRefund (refund_events_since()).
  async catchUpRefunds() {
    this.refundHeard = false;
    for (;;) {
      const res = await this.client.query(
        `SELECT event_id::text, refund_id, payment_id, status::text
         FROM paysync.refund_events_since($1, ${CATCH_UP_BATCH})`, [lastRefund.toString()]);
      if (res.rows.length === 0) return;
      for (const row of res.rows) {
        if (stopping) return;
        await this.applyRefund({
          eventId: BigInt(row.event_id),
          refundId: row.refund_id,
          paymentId: row.payment_id,
          status: row.status,
        });
      }
    }
  }

  // Handles one notification's payload: the next event is applied from it;
  // an event already applied is skipped; one further ahead, or a payload
  // that cannot be read, means catching up with events_since().
  async handlePayload(payload) {
    const event = parsePayload(payload);
    if (event === null) {
      log(`unreadable payload, catching up: ${payload}`);
      await this.catchUp();
    } else if (event.eventId <= lastApplied) {
      // applied before, e.g. by the catch-up
    } else if (event.eventId === lastApplied + 1n) {
      await this.apply(event);
    } else {
      // possibly a gap before it
      log(`event ${event.eventId} after ${lastApplied}: catching up`);
      await this.catchUp();
    }
  }

  // Waits for notifications and applies them until the connection is lost
  // (throws) or a stop signal arrives (returns). With nothing heard for
  // catchUpMs it catches up anyway: paysync may have committed events
  // without their notifications (under notification queue pressure); it
  // also finds out whether the server is still there.
  async listen() {
    for (;;) {
      while (this.payloads.length > 0 && !stopping && !this.lost) {
        await this.handlePayload(this.payloads.shift());
      }
      if (this.refundHeard && !stopping && !this.lost) await this.catchUpRefunds();
      if (stopping) return;
      if (this.lost) throw this.lost;
      const before = Date.now();
      await sleep(catchUpMs);
      if (!stopping && !this.lost && this.payloads.length === 0 &&
          !this.refundHeard && Date.now() - before >= catchUpMs) {
        await this.catchUp();
        await this.catchUpRefunds();
      }
    }
  }

  async close() {
    await this.client.end().catch(() => {});
  }
}

// The seconds of $PAYSYNC_CATCH_UP_SECONDS (1 to MAX_CATCH_UP_SECONDS), or
// the default if it is not set; exits with status 2 if it is invalid.
function catchUpSeconds(text) {
  if (text === undefined || text === '') return DEFAULT_CATCH_UP_SECONDS;
  const seconds = /^[0-9]+$/.test(text) ? Number(text) : NaN;
  if (!(seconds >= 1 && seconds <= MAX_CATCH_UP_SECONDS)) {
    log(`invalid PAYSYNC_CATCH_UP_SECONDS "${text}": give 1 to ${MAX_CATCH_UP_SECONDS} seconds`);
    process.exit(2);
  }
  return seconds;
}

// Reads event_id, payment_id and status from a notification's payload, a
// JSON object such as {"event_id": 42, "payment_id": "T1", "status":
// "succeeded", ...}; null if it is not one, lacks any of them, or the
// event_id is too large for a JSON number to hold exactly.
function parsePayload(payload) {
  let value;
  try {
    value = JSON.parse(payload);
  } catch (err) {
    return null;
  }
  if (value === null || typeof value !== 'object' ||
      !Number.isSafeInteger(value.event_id) || value.event_id <= 0 ||
      typeof value.payment_id !== 'string' || typeof value.status !== 'string') {
    return null;
  }
  return { eventId: BigInt(value.event_id), paymentId: value.payment_id, status: value.status };
}

// The webhook endpoint: POST /webhook/<channel>, verified and applied by
// paysync.receive() on a pool of its own connections (a pool drops a
// connection that failed and opens a new one, so it outlives a server
// restart). Returns the server.
function startWebhookServer(port) {
  const pool = new Pool({
    connectionString, max: 4, application_name: 'paysync-webhook-js',
    connectionTimeoutMillis: 5000,
  });
  // An idle pooled connection that is cut must not kill the process.
  pool.on('error', (err) => log(`webhook pool: ${err.message}`));
  const server = http.createServer((req, res) => {
    const match = /^\/webhook\/([a-z][a-z0-9_]{0,62})$/.exec(req.url);
    if (req.method !== 'POST' || !match) {
      res.writeHead(404).end();
      return;
    }
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > WEBHOOK_MAX_BODY) {
        res.writeHead(413).end();
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', async () => {
      // the raw body, byte for byte: signatures are over it
      const body = Buffer.concat(chunks).toString('utf8');
      try {
        const result = await pool.query(
          'SELECT payment_id, status::text, outcome, reply_status, reply_body ' +
          'FROM paysync.receive($1, $2::jsonb, $3)',
          [match[1], JSON.stringify(req.headers), body]);
        const row = result.rows[0];
        log(`webhook ${match[1]} ${row.payment_id} ${row.outcome}`);
        res.writeHead(row.reply_status, { 'Content-Type': 'text/plain' }).end(row.reply_body);
      } catch (err) {
        if (err.code === '28000') {
          log(`webhook ${match[1]} refused: ${err.detail || err.message}`);
          res.writeHead(401).end();
        } else {
          log(`webhook ${match[1]} failed: ${err.message}`);
          res.writeHead(503).end();
        }
      }
    });
  });
  server.listen(Number(webhookPort), '127.0.0.1',
    () => log(`webhook endpoint on 127.0.0.1:${webhookPort}`));
  server.pool = pool;
  return server;
}

// Runs sessions until a stop signal: each one connects, resolves a COMMIT
// left in doubt, catches up and then listens. Between sessions it waits
// BACKOFF_MIN_MS, doubling after each failure up to BACKOFF_MAX_MS.
async function main() {
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.on(signal, () => {
      stopping = true;
      wake();
    });
  }

  const webhook = webhookPort ? startWebhookServer(webhookPort) : null;
  let backoffMs = BACKOFF_MIN_MS;
  while (!stopping) {
    const session = new Session();
    try {
      await session.open();
      await session.resolveInDoubt();
      await session.catchUp();
      await session.catchUpRefunds();
      if (!stopping) log(`caught up to event ${lastApplied}`);
      backoffMs = BACKOFF_MIN_MS;
      await session.listen();
    } catch (err) {
      log(`session failed: ${err.message}`);
    }
    await session.close();
    if (stopping) break;

    log(`reconnecting in ${backoffMs} ms`);
    await sleep(backoffMs);
    backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
  }
  if (webhook) {
    await new Promise((resolve) => webhook.close(resolve));
    await webhook.pool.end().catch(() => {});
  }
  log(`stopped at event ${lastApplied}`);
}

main().catch((err) => {
  log(`fatal: ${err.stack || err}`);
  process.exit(1);
});
