# test/clients/psycopg_driver.py: psycopg 3.1 (what Debian 12 ships) against
# pg_idem: idempotency keys (reserve, complete, replay, a mismatched
# request), and hand-written version-checked updates whose ID010 / ID011
# reach the client as Error.sqlstate.
import threading
import time

import psycopg

from tap import ok, done, conninfo, enforce_sql

APP = "clients-psycopg"


def connect():
    return psycopg.connect(conninfo(), application_name=APP, autocommit=True)


def sqlstate_of(fn):
    """Run fn; return the SQLSTATE of the psycopg.Error it raised, or None."""
    try:
        fn()
    except psycopg.Error as e:
        return e.sqlstate
    return None


def wait_blocked(conn, pid):
    """Poll until backend pid waits for a lock (a step of the interleaving,
    not a timing assertion: it waits as long as it takes).  conn may be
    inside a transaction, which would see one snapshot of pg_stat_activity
    until it ends: clear it before each look."""
    while True:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        if conn.execute("SELECT wait_event_type IS NOT DISTINCT FROM 'Lock' FROM pg_stat_activity WHERE pid = %s",
                        (pid,)).fetchone()[0]:
            return
        time.sleep(0.01)


a = connect()
b = connect()
a.execute("DROP TABLE IF EXISTS psy_account")
a.execute("CREATE TABLE psy_account (id int PRIMARY KEY, balance int NOT NULL, version int NOT NULL)")
a.execute(enforce_sql("psy_account"))
a.execute("INSERT INTO psy_account VALUES (1, 100, 1)")
a.execute("SELECT idem.forget('psy-key-1')")

# reserve -> business write -> complete in one transaction (atomic mode).
req = psycopg.types.json.Jsonb({"amount": 5})
with a.transaction():
    r = a.execute("SELECT outcome, token FROM idem.reserve('psy-key-1', %s)", (req,)).fetchone()
    ok(r[0] == "acquired" and r[1] is not None, "first reserve acquires the key", r)
    cur = a.execute("UPDATE psy_account SET balance = balance - 5 WHERE id = 1 RETURNING balance")
    a.execute("SELECT idem.complete('psy-key-1', %s, %s, 201)",
              (r[1], psycopg.types.json.Jsonb({"balance": cur.fetchone()[0]})))

# The retry gets the stored response and does nothing.
r = b.execute("SELECT outcome, response, status FROM idem.reserve('psy-key-1', %s)", (req,)).fetchone()
ok(r[0] == "replay" and r[1] == {"balance": 95} and r[2] == 201,
   "a retry with the same request replays the stored response", r)

# Another request under the same key: ID001 reaches the client.
st = sqlstate_of(lambda: b.execute("SELECT idem.reserve('psy-key-1', %s)",
                                   (psycopg.types.json.Jsonb({"amount": 6}),)))
ok(st == "ID001", "a different request under the same key raises ID001", st)

# Lease mode: reserve commits on its own (autocommit), so a concurrent
# request sees the key held; complete with the token makes it a replay.
a.execute("SELECT idem.forget('psy-key-2')")
tok = a.execute("SELECT token FROM idem.reserve('psy-key-2', NULL, lease => '1 hour')").fetchone()[0]
r = b.execute("SELECT outcome, token, locked_until IS NOT NULL FROM idem.reserve('psy-key-2')").fetchone()
ok(r == ("in_progress", None, True), "a reserve while another holder's lease is live answers in_progress", r)
a.execute("SELECT idem.complete('psy-key-2', %s, %s)", (tok, psycopg.types.json.Jsonb({"done": True})))
r = b.execute("SELECT outcome, response FROM idem.reserve('psy-key-2')").fetchone()
ok(r == ("replay", {"done": True}), "after complete, the same reserve replays", r)

# Version-checked update, as a hand-written optimistic UPDATE: read the
# version, send it back.
v = a.execute("SELECT version FROM psy_account WHERE id = 1").fetchone()[0]
row = a.execute("UPDATE psy_account SET balance = %s, version = %s WHERE id = 1 RETURNING balance, version",
                (90, v)).fetchone()
ok(row == (90, v + 1), "an update with the version read succeeds and bumps the version", row)

# A stale version: ID010, with the versions in the DETAIL.
try:
    a.execute("UPDATE psy_account SET balance = %s, version = %s WHERE id = 1", (80, v))
    err = None
except psycopg.Error as e:
    err = e
ok(err is not None and err.sqlstate == "ID010"
   and "was read at version %d but is now at version %d" % (v, v + 1) in (err.diag.message_detail or ""),
   "a stale version raises ID010 with both versions in the detail", err)

# A blind write (no version): ID011 in strict mode.
st = sqlstate_of(lambda: a.execute("UPDATE psy_account SET balance = %s WHERE id = 1", (0,)))
ok(st == "ID011", "an update without a version raises ID011", st)

# Two racing saves on two connections: both read, then both write the
# version they read, the first inside a transaction it has not committed.
# The second waits for the first's row lock (we wait until the server shows
# it waiting), then, once the first commits, gets ID010: one winner.
va = a.execute("SELECT version FROM psy_account WHERE id = 1").fetchone()[0]
vb = b.execute("SELECT version FROM psy_account WHERE id = 1").fetchone()[0]
outcome = {}
with a.transaction():
    a.execute("UPDATE psy_account SET balance = %s, version = %s WHERE id = 1", (111, va))
    t = threading.Thread(target=lambda: outcome.update(b=sqlstate_of(lambda: b.execute(
        "UPDATE psy_account SET balance = %s, version = %s WHERE id = 1", (222, vb)))))
    t.start()
    wait_blocked(a, b.info.backend_pid)
t.join()
row = a.execute("SELECT balance, version FROM psy_account WHERE id = 1").fetchone()
ok(outcome["b"] == "ID010" and row == (111, va + 1),
   "two racing saves: the first wins, the second waits and gets ID010", (outcome, row))

# An atomic increment needs no version, and bumps it.
row = b.execute("UPDATE psy_account SET balance = balance + 1 WHERE id = 1 RETURNING balance, version").fetchone()
ok(row == (112, va + 2), "an atomic increment is accepted and bumps the version", row)

a.execute("DROP TABLE psy_account")
done()
