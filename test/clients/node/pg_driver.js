// test/clients/node/pg_driver.js: node-postgres against pg_idem: keys
// (reserve, complete, replay, ID001) and hand-written version-checked
// updates whose ID010 / ID011 reach the client as err.code.
'use strict';
const { Client } = require('pg');
const { ok, done, conn, enforceSql, waitBlocked } = require('./tap');

async function codeOf(promise) {
  try {
    await promise;
    return null;
  } catch (e) {
    return e.code;
  }
}

async function main() {
  const a = new Client({ ...conn, application_name: 'clients-node-pg' });
  const b = new Client({ ...conn, application_name: 'clients-node-pg' });
  await a.connect();
  await b.connect();
  await a.query('DROP TABLE IF EXISTS np_account');
  await a.query('CREATE TABLE np_account (id int PRIMARY KEY, balance int NOT NULL, version int NOT NULL)');
  await a.query(enforceSql('np_account'));
  await a.query('INSERT INTO np_account VALUES (1, 100, 1)');
  await a.query("SELECT idem.forget('np-key-1')");

  // reserve -> business write -> complete, one transaction (atomic mode).
  const req = { amount: 5 };
  await a.query('BEGIN');
  let r = await a.query("SELECT outcome, token FROM idem.reserve('np-key-1', $1)", [req]);
  ok(r.rows[0].outcome === 'acquired' && r.rows[0].token !== null, 'first reserve acquires the key', r.rows);
  const bal = await a.query('UPDATE np_account SET balance = balance - 5 WHERE id = 1 RETURNING balance');
  await a.query("SELECT idem.complete('np-key-1', $1, $2, 201)", [r.rows[0].token, { balance: bal.rows[0].balance }]);
  await a.query('COMMIT');

  r = await b.query("SELECT outcome, response, status FROM idem.reserve('np-key-1', $1)", [req]);
  ok(r.rows[0].outcome === 'replay' && r.rows[0].response.balance === 95 && r.rows[0].status === 201,
    'a retry with the same request replays the stored response', r.rows);

  ok(await codeOf(b.query("SELECT idem.reserve('np-key-1', $1)", [{ amount: 6 }])) === 'ID001',
    'a different request under the same key raises ID001');

  // Lease mode: reserve commits on its own, so a concurrent request sees the
  // key held; complete with the token makes it a replay.
  await a.query("SELECT idem.forget('np-key-2')");
  const tok = (await a.query("SELECT token FROM idem.reserve('np-key-2', NULL, lease => '1 hour')")).rows[0].token;
  r = await b.query("SELECT outcome, token, locked_until IS NOT NULL AS held FROM idem.reserve('np-key-2')");
  ok(r.rows[0].outcome === 'in_progress' && r.rows[0].token === null && r.rows[0].held,
    "a reserve while another holder's lease is live answers in_progress", r.rows);
  await a.query("SELECT idem.complete('np-key-2', $1, $2)", [tok, { done: true }]);
  r = await b.query("SELECT outcome, response FROM idem.reserve('np-key-2')");
  ok(r.rows[0].outcome === 'replay' && r.rows[0].response.done === true, 'after complete, the same reserve replays', r.rows);

  // Hand-written optimistic update: send back the version read.
  const v = (await a.query('SELECT version FROM np_account WHERE id = 1')).rows[0].version;
  r = await a.query('UPDATE np_account SET balance = $1, version = $2 WHERE id = 1 RETURNING balance, version', [90, v]);
  ok(r.rows[0].balance === 90 && r.rows[0].version === v + 1,
    'an update with the version read succeeds and bumps the version', r.rows);

  let err = null;
  try {
    await a.query('UPDATE np_account SET balance = $1, version = $2 WHERE id = 1', [80, v]);
  } catch (e) {
    err = e;
  }
  ok(err !== null && err.code === 'ID010' && err.detail.includes(`read at version ${v} but is now at version ${v + 1}`),
    'a stale version raises ID010 with both versions in err.detail', err && [err.code, err.detail]);

  ok(await codeOf(a.query('UPDATE np_account SET balance = $1 WHERE id = 1', [0])) === 'ID011',
    'an update without a version raises ID011');

  // Two racing saves: both read; the first writes inside a transaction, the
  // second waits for its row lock, then gets ID010 once the first commits.
  const va = (await a.query('SELECT version FROM np_account WHERE id = 1')).rows[0].version;
  const vb = (await b.query('SELECT version FROM np_account WHERE id = 1')).rows[0].version;
  await a.query('BEGIN');
  await a.query('UPDATE np_account SET balance = $1, version = $2 WHERE id = 1', [111, va]);
  const second = codeOf(b.query('UPDATE np_account SET balance = $1, version = $2 WHERE id = 1', [222, vb]));
  await waitBlocked(a, b.processID);
  await a.query('COMMIT');
  const code = await second;
  r = await a.query('SELECT balance, version FROM np_account WHERE id = 1');
  ok(code === 'ID010' && r.rows[0].balance === 111 && r.rows[0].version === va + 1,
    'two racing saves: the first wins, the second waits and gets ID010', [code, r.rows]);

  r = await b.query('UPDATE np_account SET balance = balance + 1 WHERE id = 1 RETURNING balance, version');
  ok(r.rows[0].balance === 112 && r.rows[0].version === va + 2,
    'an atomic increment is accepted and bumps the version', r.rows);

  await a.query('DROP TABLE np_account');
  await a.end();
  await b.end();
}

main().then(done, (e) => { console.log(`# ${e.stack}`); ok(false, 'test ran to the end'); done(); });
