#!/usr/bin/env python3
"""examples/python/server.py: POST /payments with an Idempotency-Key, on pg_idem.

A small HTTP service (standard library http.server, psycopg 3.1 as Debian 12
ships it) showing the handler logic of docs/examples.md:

  POST /payments       {"amount_cents": 500, "currency": "EUR"}
                       header Idempotency-Key: <1..255 bytes>
  GET  /payments/<id>

The key is reserved in a transaction of its own (lease mode), so that a
concurrent retry of a request still being worked on gets 409 at once instead
of waiting.  The payment row, its outbox event and the stored response are
then written in ONE transaction: either all three commit or none does, and a
retry replays exactly what the first request answered.

Configuration: the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE,
PGPASSWORD), PORT (default 8080).  IDEM_EXAMPLES_TEST_DELAY=1 makes the
handler honour a request header Idem-Test-Delay-Ms (at most 10000): it sleeps
that long while holding the key, so that a test can send the same key again
while the first request is in progress.  Never set it in production.

One connection per request keeps the example free of a pool dependency; a
real service would use psycopg_pool (Debian: python3-psycopg-pool).
"""

import json
import os
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

SCOPE = "payments"
TOPIC = "payment.created"
APP_NAME = "idem-example-python"
ALLOW_DELAY = os.environ.get("IDEM_EXAMPLES_TEST_DELAY") == "1"
CURRENCY = re.compile(r"^[A-Z]{3}$")
PAYMENT_PATH = re.compile(r"^/payments/([0-9]{1,18})$")

# SQLSTATEs that mean "try again later": the database is unreachable, out of
# connections or shutting down (classes 08, 53, 57), or the transaction lost
# a serialization race or a deadlock (40001, 40P01).
RETRYABLE_CLASSES = ("08", "53", "57")
RETRYABLE_STATES = ("40001", "40P01")


class HttpError(Exception):
    """A response to send instead of the normal one."""

    def __init__(self, status, error, headers=None):
        super().__init__(error)
        self.status = status
        self.body = json.dumps({"error": error})
        self.headers = headers or {}


def connect():
    """Open an autocommit connection from the libpq environment."""
    return psycopg.connect(autocommit=True, application_name=APP_NAME)


def database_error(exc):
    """Map a psycopg error to an HTTP error by its SQLSTATE, never its text."""
    state = getattr(exc, "sqlstate", None)
    if state is None and isinstance(exc, psycopg.OperationalError):
        # No SQLSTATE: the connection failed before the server answered.
        return HttpError(503, "database_unavailable", {"Retry-After": "1"})
    if state and (state[:2] in RETRYABLE_CLASSES or state in RETRYABLE_STATES):
        return HttpError(503, "database_unavailable", {"Retry-After": "1"})
    if state == "ID001":
        return HttpError(422, "idempotency_key_mismatch")
    if state == "ID002":
        # Our lease ended and a retry took the key over: it does the work.
        return HttpError(409, "request_in_progress")
    return HttpError(500, "internal_error")


def parse_payment(raw):
    """Validate the request body; returns (amount_cents, currency)."""
    try:
        body = json.loads(raw)
    except ValueError:
        raise HttpError(400, "invalid_request")
    if not isinstance(body, dict):
        raise HttpError(400, "invalid_request")
    amount = body.get("amount_cents")
    currency = body.get("currency")
    # bool is a subclass of int in Python: true is not an amount.
    if not isinstance(amount, int) or isinstance(amount, bool) or not 0 < amount < 2**63:
        raise HttpError(400, "invalid_request")
    if not isinstance(currency, str) or not CURRENCY.match(currency):
        raise HttpError(400, "invalid_request")
    return amount, currency


def create_payment(key, raw, delay_ms):
    """The handler logic: returns (status, body, extra headers)."""
    amount, currency = parse_payment(raw)

    # 1. Reserve the key, committed on its own.  The request body is the
    # fingerprint: the same key with another body raises ID001.
    with connect() as conn:
        outcome, token, response, status, retry_after = conn.execute(
            "SELECT outcome::text, token, response::text, status,"
            "       greatest(ceil(extract(epoch FROM locked_until - clock_timestamp())), 1)::int"
            "  FROM idem.reserve(%s, %s::jsonb, %s)",
            (key, raw, SCOPE),
        ).fetchone()
    if outcome == "replay":
        return status, response, {"Idempotent-Replayed": "true"}
    if outcome == "in_progress":
        raise HttpError(409, "request_in_progress", {"Retry-After": str(retry_after)})

    # We hold the key (token).  Test only: hold it a while.
    if delay_ms:
        time.sleep(delay_ms / 1000.0)

    # 2. The work, its event and the stored response, in one transaction.
    try:
        with connect() as conn, conn.transaction():
            body = conn.execute(
                "INSERT INTO payments (amount_cents, currency, idempotency_key)"
                " VALUES (%s, %s, %s)"
                " RETURNING jsonb_build_object('id', id, 'amount_cents', amount_cents,"
                "                              'currency', currency)::text",
                (amount, currency, key),
            ).fetchone()[0]
            conn.execute(
                "SELECT idem.emit(%s, %s::jsonb, key => (%s::jsonb ->> 'id'))",
                (TOPIC, body, body),
            )
            conn.execute(
                "SELECT idem.complete(%s, %s, %s::jsonb, 201, %s)",
                (key, token, body, SCOPE),
            )
        return 201, body, {}
    except psycopg.Error:
        # Nothing was written.  Give the key back so that a retry can take it
        # over at once; if even that fails, the lease runs out by itself.
        try:
            with connect() as conn:
                conn.execute("SELECT idem.release(%s, %s, %s)", (key, token, SCOPE))
        except psycopg.Error as exc:
            print(f"release of key {key!r} failed: {exc}", file=sys.stderr)
        raise


def get_payment(payment_id):
    """GET /payments/<id>: the payment, or 404 when there is no such row."""
    with connect() as conn:
        row = conn.execute(
            "SELECT jsonb_build_object('id', id, 'amount_cents', amount_cents,"
            "                          'currency', currency)::text"
            "  FROM payments WHERE id = %s",
            (payment_id,),
        ).fetchone()
    # fetchone() returns None, not an empty row, when nothing matched.
    if row is None:
        raise HttpError(404, "not_found")
    return 200, row[0], {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send(self, status, body, headers):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def dispatch(self, work):
        try:
            self.send(*work())
        except HttpError as exc:
            self.send(exc.status, exc.body, exc.headers)
        except psycopg.Error as exc:
            err = database_error(exc)
            if err.status >= 500:
                print(f"{self.command} {self.path}: {exc.sqlstate}: {exc}", file=sys.stderr)
            self.send(err.status, err.body, err.headers)
        except Exception as exc:  # a bug: answer 500 rather than drop the connection
            print(f"{self.command} {self.path}: {exc!r}", file=sys.stderr)
            self.send(500, json.dumps({"error": "internal_error"}), {})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        if self.path != "/payments":
            return self.send(404, json.dumps({"error": "not_found"}), {})
        key = self.headers.get("Idempotency-Key") or ""
        if not 1 <= len(key.encode()) <= 255:
            return self.send(400, json.dumps({"error": "missing_idempotency_key"}), {})
        delay = self.headers.get("Idem-Test-Delay-Ms") or "0"
        delay_ms = min(int(delay), 10000) if ALLOW_DELAY and delay.isdigit() else 0
        self.dispatch(lambda: create_payment(key, raw, delay_ms))

    def do_GET(self):
        m = PAYMENT_PATH.match(self.path)
        if m is None:
            return self.send(404, json.dumps({"error": "not_found"}), {})
        self.dispatch(lambda: get_payment(int(m.group(1))))

    def log_message(self, fmt, *args):
        pass


def main():
    port = int(os.environ.get("PORT", "8080"))
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
