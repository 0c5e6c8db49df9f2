// test/clients/node/tap.js: the TAP and connection helpers the Node client
// tests share (the clients suite of test/scripts/run-tests.sh counts their
// "ok N" / "not ok N" lines).
'use strict';

let count = 0;
let failed = 0;

// IDEM_GUARD=off creates the test tables without idem.enforce_version(): the
// harness runs every client test that way too and requires it to fail.
const GUARD = (process.env.IDEM_GUARD || 'on') !== 'off';

function ok(cond, name, diag) {
  count += 1;
  console.log(`${cond ? 'ok' : 'not ok'} ${count} - ${name}`);
  if (!cond) {
    failed += 1;
    if (diag !== undefined) {
      for (const line of JSON.stringify(diag).split('\n')) console.log(`# ${line}`);
    }
  }
  return cond;
}

function done() {
  console.log(`1..${count}`);
  process.exitCode = failed || count === 0 ? 1 : 0;
}

// node-postgres reads PGHOST (a socket directory here), PGPORT, PGUSER and
// PGDATABASE from the environment by itself; the ORMs get them spelled out.
const conn = {
  host: process.env.PGHOST,
  port: Number(process.env.PGPORT),
  user: process.env.PGUSER,
  database: process.env.PGDATABASE,
};

function enforceSql(table, column = 'version') {
  return GUARD
    ? `SELECT idem.enforce_version('${table}', '${column}', 'strict')`
    : `SELECT 'guard disabled for ${table}'`;
}

// Poll until backend pid waits for a lock: a step of an interleaving, not a
// timing assertion (it waits as long as it takes).  client may be inside a
// transaction, which sees one snapshot of pg_stat_activity until it ends:
// clear it before each look.
async function waitBlocked(client, pid) {
  for (;;) {
    await client.query('SELECT pg_stat_clear_snapshot()');
    const r = await client.query(
      "SELECT wait_event_type IS NOT DISTINCT FROM 'Lock' AS blocked FROM pg_stat_activity WHERE pid = $1", [pid]);
    if (r.rows[0] && r.rows[0].blocked) return;
    await new Promise((res) => setTimeout(res, 10));
  }
}

module.exports = { ok, done, conn, enforceSql, waitBlocked, GUARD };
