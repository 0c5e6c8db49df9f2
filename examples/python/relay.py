#!/usr/bin/env python3
"""examples/python/relay.py: deliver pg_idem outbox events, woken by NOTIFY.

Reads the events of consumer CONSUMER (default "payments-relay", topic
"payment.created") with idem.next_batch, "publishes" each one as a JSON line on
standard output (where a real relay would send it to a broker), then closes
the batch with idem.finish_batch.  When nothing is left it sleeps until a
notification on channel idem_outbox arrives (emit sends one at commit), or
at most --poll seconds.

It works on psycopg 3.1 (Debian 12), whose Connection.notifies() has no
timeout: the relay waits with select() on the connection's socket instead.
A notification can also arrive while a query runs: psycopg hands it to a
notify handler, or it stays in libpq's buffer, which the relay empties
(PGconn.notifies()) before it sleeps.

Delivery is at least once: a relay killed between publishing and
finish_batch publishes that batch again when it restarts (next_batch returns
the open batch until it is finished), so the receiving side de-duplicates by
event id.

Configuration: the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE).
SIGTERM or SIGINT stop it after the current batch.
"""

import argparse
import json
import select
import signal
import sys

import psycopg

stopping = False
waiting = False


def stop(signum, frame):
    """Stop after the current batch, or at once while waiting."""
    global stopping
    stopping = True
    if waiting:
        # select() is restarted after a handler that returns (PEP 475):
        # leave the wait by raising instead.
        raise SystemExit(0)


def drain(conn, consumer, max_events):
    """Publish and finish batches until next_batch returns none."""
    while not stopping:
        rows = conn.execute(
            "SELECT batch_id, id, topic, key, payload::text FROM idem.next_batch(%s, %s)",
            (consumer, max_events),
        ).fetchall()
        if not rows:
            return
        for _batch, event_id, topic, key, payload in rows:
            # payload stays the text PostgreSQL printed, so nothing is re-encoded.
            sys.stdout.write(
                '{"id": %d, "topic": %s, "key": %s, "payload": %s}\n'
                % (event_id, json.dumps(topic), json.dumps(key), payload)
            )
        sys.stdout.flush()
        # Only after the events are out: a crash before this line replays them.
        conn.execute("SELECT idem.finish_batch(%s, %s)", (consumer, rows[0][0]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--consumer", default="payments-relay")
    ap.add_argument("--topics", default="payment.created",
                    help="comma-separated topic names the consumer reads")
    ap.add_argument("--max-events", type=int, default=100)
    ap.add_argument("--poll", type=float, default=30.0,
                    help="seconds to wait for a notification before looking anyway")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    global waiting
    woken = False

    def on_notify(_notify):
        nonlocal woken
        woken = True

    with psycopg.connect(autocommit=True, application_name="idem-example-relay") as conn:
        conn.add_notify_handler(on_notify)
        # LISTEN first, then subscribe and drain: an event committed in
        # between is either in the drain or announced by a notification.
        conn.execute("LISTEN idem_outbox")
        # Creates the consumer, or keeps its position and sets its topics.
        conn.execute("SELECT idem.subscribe(%s, %s)",
                     (args.consumer, args.topics.split(",")))
        print(f"relay {args.consumer} listening", file=sys.stderr, flush=True)
        while not stopping:
            woken = False
            drain(conn, args.consumer, args.max_events)
            # libpq may have read a notification off the socket at the end
            # of the drain's last query, after psycopg dispatched the ones it
            # had: the socket would then stay quiet.  PGconn.notifies()
            # parses what libpq has buffered and returns them one by one.
            while conn.pgconn.notifies() is not None:
                woken = True
            if woken:
                # A notification came in during the drain: look again.
                continue
            waiting = True
            try:
                if stopping:  # a signal came after the loop's test
                    break
                readable, _, _ = select.select([conn.fileno()], [], [], args.poll)
            finally:
                waiting = False
            if readable:
                # Read the notification off the socket now (the handler
                # runs); the next drain would read it too.
                conn.execute("SELECT 1")


if __name__ == "__main__":
    main()
