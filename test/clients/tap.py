# test/clients/tap.py: the few TAP and connection helpers the Python client
# tests share (the clients suite of test/scripts/run-tests.sh counts their
# "ok N" / "not ok N" lines).
import os
import sys

_count = 0
_failed = 0

# IDEM_GUARD=off creates the test tables without idem.enforce_version(): the
# harness runs every client test that way too and requires it to fail, so a
# test that would pass without the guard proves nothing.
GUARD = os.environ.get("IDEM_GUARD", "on") != "off"


def ok(cond, name, diag=None):
    global _count, _failed
    _count += 1
    if cond:
        print("ok %d - %s" % (_count, name))
    else:
        _failed += 1
        print("not ok %d - %s" % (_count, name))
        if diag is not None:
            for line in str(diag).splitlines():
                print("# " + line)
    sys.stdout.flush()
    return cond


def done():
    print("1..%d" % _count)
    sys.exit(1 if _failed or _count == 0 else 0)


def conninfo():
    """libpq keyword/value string from the harness's PGHOST/PGPORT/PGUSER/PGDATABASE."""
    return "host=%s port=%s user=%s dbname=%s" % (
        os.environ["PGHOST"], os.environ["PGPORT"],
        os.environ["PGUSER"], os.environ["PGDATABASE"])


def enforce_sql(table, column="version"):
    """The statement that puts the guard on a table, or none with IDEM_GUARD=off."""
    if GUARD:
        return "SELECT idem.enforce_version('%s', '%s', 'strict')" % (table, column)
    return "SELECT 'guard disabled for %s'" % table
