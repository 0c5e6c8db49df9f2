// examples/node/server.js: POST /payments with an Idempotency-Key, on pg_idem.
//
// node-postgres (pg, a pool) and node's http module; the handler logic is
// the one docs/examples.md explains:
//
//   POST /payments       {"amount_cents": 500, "currency": "EUR"}
//                        header Idempotency-Key: <1..255 bytes>
//   GET  /payments/<id>
//
// The key is reserved in a transaction of its own (lease mode), so that a
// concurrent retry of a request still being worked on gets 409 at once
// instead of waiting.  The payment row, its outbox event and the stored
// response are then written in ONE transaction: all three commit or none.
//
// Configuration: the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
// PGPASSWORD; pg reads it), PORT (default 8080).  IDEM_EXAMPLES_TEST_DELAY=1
// makes the handler honour a request header Idem-Test-Delay-Ms (at most
// 10000): it sleeps that long while holding the key, so that a test can send
// the same key again meanwhile.  Never set it in production.
'use strict';

const http = require('http');
const pg = require('pg');

const SCOPE = 'payments';
const TOPIC = 'payment.created';
const ALLOW_DELAY = process.env.IDEM_EXAMPLES_TEST_DELAY === '1';
const PAYMENT_PATH = /^\/payments\/([0-9]{1,18})$/;

const pool = new pg.Pool({ application_name: 'idem-example-node', max: 10 });
// An idle client whose connection dies emits 'error' on the pool; without a
// listener node would exit.  The pool drops that client by itself.
pool.on('error', (err) => console.error('idle client:', err.code || '', err.message));

class HttpError extends Error {
  constructor(status, error, headers = {}) {
    super(error);
    this.status = status;
    this.body = JSON.stringify({ error });
    this.headers = headers;
  }
}

// Map an error of a database call to an HTTP error by its SQLSTATE (never
// by its text).  A pg.DatabaseError carries the server's SQLSTATE in .code.
// A programming error (TypeError and its kind) is a 500.  Anything else a
// database call throws (a system error such as ECONNREFUSED, the pool's
// "Connection terminated unexpectedly") means the connection failed: 503.
function databaseError(err) {
  if (err instanceof TypeError || err instanceof RangeError ||
      err instanceof ReferenceError || err instanceof SyntaxError) {
    return new HttpError(500, 'internal_error');
  }
  if (!(err instanceof pg.DatabaseError)) {
    return new HttpError(503, 'database_unavailable', { 'Retry-After': '1' });
  }
  const state = err.code;
  if (['08', '53', '57'].includes(state.slice(0, 2)) || state === '40001' || state === '40P01') {
    return new HttpError(503, 'database_unavailable', { 'Retry-After': '1' });
  }
  if (state === 'ID001') return new HttpError(422, 'idempotency_key_mismatch');
  // Our lease ended and a retry took the key over: it does the work.
  if (state === 'ID002') return new HttpError(409, 'request_in_progress');
  return new HttpError(500, 'internal_error');
}

// Run a database call; its errors become HttpErrors.
async function db(fn) {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof HttpError) throw err;
    const mapped = databaseError(err);
    if (mapped.status >= 500) console.error('database:', err.code || '', err.message);
    throw mapped;
  }
}

function parsePayment(raw) {
  let body;
  try {
    body = JSON.parse(raw);
  } catch (e) {
    throw new HttpError(400, 'invalid_request');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, 'invalid_request');
  }
  const { amount_cents: amount, currency } = body;
  if (!Number.isSafeInteger(amount) || amount <= 0) throw new HttpError(400, 'invalid_request');
  if (typeof currency !== 'string' || !/^[A-Z]{3}$/.test(currency)) {
    throw new HttpError(400, 'invalid_request');
  }
  return { amount, currency };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The handler logic: resolves to [status, body, headers].
async function createPayment(key, raw, delayMs) {
  const { amount, currency } = parsePayment(raw);

  // 1. Reserve the key, committed on its own (pool.query is autocommit).
  // The request body is the fingerprint: another body raises ID001.
  const { rows } = await db(() => pool.query(
    `SELECT outcome::text, token, response::text AS response, status,
            greatest(ceil(extract(epoch FROM locked_until - clock_timestamp())), 1)::int AS retry_after
       FROM idem.reserve($1, $2::jsonb, $3)`, [key, raw, SCOPE]));
  const r = rows[0];
  if (r.outcome === 'replay') return [r.status, r.response, { 'Idempotent-Replayed': 'true' }];
  if (r.outcome === 'in_progress') {
    throw new HttpError(409, 'request_in_progress', { 'Retry-After': String(r.retry_after) });
  }
  // token is a bigint: pg returns it as a string, and it goes back as one.
  const token = r.token;

  if (delayMs > 0) await sleep(delayMs); // test only: hold the key a while

  // 2. The work, its event and the stored response, in one transaction.
  try {
    return await db(async () => {
      const client = await pool.connect();
      let broken;
      try {
        await client.query('BEGIN');
        const ins = await client.query(
          `INSERT INTO payments (amount_cents, currency, idempotency_key) VALUES ($1, $2, $3)
           RETURNING jsonb_build_object('id', id, 'amount_cents', amount_cents,
                                        'currency', currency)::text AS body`,
          [amount, currency, key]);
        const body = ins.rows[0].body;
        await client.query("SELECT idem.emit($1, $2::jsonb, key => ($2::jsonb ->> 'id'))", [TOPIC, body]);
        await client.query('SELECT idem.complete($1, $2, $3::jsonb, 201, $4)', [key, token, body, SCOPE]);
        await client.query('COMMIT');
        return [201, body, {}];
      } catch (err) {
        broken = err;
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        // A client that failed is destroyed rather than reused.
        client.release(broken);
      }
    });
  } catch (err) {
    // Nothing was written.  Give the key back so that a retry can take it
    // over at once; if even that fails, the lease runs out by itself.
    await pool.query('SELECT idem.release($1, $2, $3)', [key, token, SCOPE])
      .catch((e) => console.error(`release of key ${key} failed:`, e.code || '', e.message));
    throw err;
  }
}

// GET /payments/<id>: the payment, or 404 when there is no such row.
async function getPayment(id) {
  const { rows } = await db(() => pool.query(
    `SELECT jsonb_build_object('id', id, 'amount_cents', amount_cents, 'currency', currency)::text AS body
       FROM payments WHERE id = $1`, [id]));
  // No row is an empty array, not an error: rows[0] is undefined.
  if (rows.length === 0) throw new HttpError(404, 'not_found');
  return [200, rows[0].body, {}];
}

function send(res, status, body, headers) {
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

async function route(req, raw) {
  if (req.method === 'POST' && req.url === '/payments') {
    const key = req.headers['idempotency-key'] || '';
    const len = Buffer.byteLength(key);
    if (len < 1 || len > 255) throw new HttpError(400, 'missing_idempotency_key');
    let delayMs = 0;
    if (ALLOW_DELAY) delayMs = Math.min(parseInt(req.headers['idem-test-delay-ms'] || '0', 10) || 0, 10000);
    return createPayment(key, raw, delayMs);
  }
  const m = req.method === 'GET' && PAYMENT_PATH.exec(req.url);
  if (m) return getPayment(m[1]);
  throw new HttpError(404, 'not_found');
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    route(req, Buffer.concat(chunks).toString('utf8'))
      .then(([status, body, headers]) => send(res, status, body, headers))
      .catch((err) => {
        if (err instanceof HttpError) return send(res, err.status, err.body, err.headers);
        console.error('handler:', err);
        return send(res, 500, JSON.stringify({ error: 'internal_error' }), {});
      });
  });
});

const port = parseInt(process.env.PORT || '8080', 10);
server.listen(port, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${port}`));

function shutdown() {
  server.close();
  pool.end().then(() => process.exit(0));
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
