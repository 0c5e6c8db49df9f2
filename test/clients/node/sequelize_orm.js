// test/clients/node/sequelize_orm.js: Sequelize 6 with `version: true`
// against a strict pg_idem guard.
//
// instance.save() guards with WHERE "version" = <read> and assigns read + 1
// (kept by the guard): Sequelize raises its own OptimisticLockError when no
// row matched.  The static Model.update() sends no version: a blind write,
// refused with ID011.  instance.increment() sends "hits"="hits"+ 1,
// "version"="version"+ 1: atomic, accepted (on a model without timestamps;
// with timestamps it also assigns "updatedAt" = $1, a client value, and is
// refused with ID011).
'use strict';
const { Sequelize, DataTypes, OptimisticLockError, DatabaseError } = require('sequelize');
const { ok, done, conn, enforceSql } = require('./tap');

// --- docs/orms.md quotes this block ---
// pg_idem's version conflict as Sequelize's own optimistic-lock error, so
// one catch handles both; any other error passes through unchanged.
function idemErrors(err) {
  if (err instanceof DatabaseError && err.original && err.original.code === 'ID010') {
    return new OptimisticLockError({ message: err.original.message });
  }
  return err;
}
async function idemRun(work) {
  try {
    return await work();
  } catch (err) {
    throw idemErrors(err);
  }
}
// --- end of quoted block ---

function db() {
  return new Sequelize(conn.database, conn.user, null, {
    host: conn.host, port: conn.port, dialect: 'postgres', logging: false,
    dialectOptions: { application_name: 'clients-sequelize' },
  });
}
function define(s, timestamps) {
  return s.define('Post', {
    id: { type: DataTypes.INTEGER, primaryKey: true },
    title: { type: DataTypes.TEXT, allowNull: false },
    hits: { type: DataTypes.INTEGER, allowNull: false, defaultValue: 0 },
  }, { tableName: timestamps ? 'sq_post_ts' : 'sq_post', version: true, timestamps });
}

async function outcome(work) {
  try {
    await idemRun(work);
    return 'ok';
  } catch (e) {
    if (e instanceof OptimisticLockError) return 'OptimisticLockError';
    return (e.original && e.original.code) || e.name;
  }
}

async function main() {
  // Two Sequelize instances: two connection pools, two sessions.
  const s1 = db();
  const s2 = db();
  const P1 = define(s1, false);
  const P2 = define(s2, false);
  const T1 = define(s1, true);
  await s1.query('DROP TABLE IF EXISTS sq_post, sq_post_ts');
  await P1.sync();
  await T1.sync();
  await s1.query(enforceSql('sq_post'));
  await s1.query(enforceSql('sq_post_ts'));
  await P1.create({ id: 1, title: 'original' });
  await T1.create({ id: 1, title: 'original' });

  // A normal versioned save.
  let p = await P1.findByPk(1);
  p.title = 'first edit';
  await p.save();
  p = await P2.findByPk(1);
  ok(p.title === 'first edit' && p.version === 1, 'save() with version: true updates and bumps the version',
    [p.title, p.version]);

  // Two racing saves, two sessions: both read, both save.
  const a = await P1.findByPk(1);
  const b = await P2.findByPk(1);
  a.title = 'edit by a';
  b.title = 'edit by b';
  const ra = await outcome(() => a.save());
  const rb = await outcome(() => b.save());
  p = await P1.findByPk(1);
  ok(ra === 'ok' && rb === 'OptimisticLockError' && p.title === 'edit by a' && p.version === 2,
    'two racing saves: one winner, the other OptimisticLockError', [ra, rb, p.title, p.version]);

  // Model.update() with the version read earlier (now stale): ID010 from the
  // guard, turned into OptimisticLockError by idemErrors().
  let r = await outcome(() => P1.update({ title: 'stale', version: 1 }, { where: { id: 1 } }));
  ok(r === 'OptimisticLockError', 'Model.update() with a stale version: ID010, mapped to OptimisticLockError', r);

  // Model.update() without the version: two of them racing both win
  // without the guard; strict mode refuses both with ID011.
  const ra2 = await outcome(() => P1.update({ title: `${a.title} + a` }, { where: { id: 1 } }));
  const rb2 = await outcome(() => P2.update({ title: `${b.title} + b` }, { where: { id: 1 } }));
  p = await P1.findByPk(1);
  ok(ra2 === 'ID011' && rb2 === 'ID011' && p.title === 'edit by a' && p.version === 2,
    'two racing Model.update() without a version are both refused with ID011', [ra2, rb2, p.title, p.version]);

  // increment(), two sessions racing: both count, each bumps the version.
  const ia = await P1.findByPk(1);
  const ib = await P2.findByPk(1);
  const rs = [await outcome(() => ia.increment('hits')), await outcome(() => ib.increment('hits'))];
  p = await P1.findByPk(1);
  ok(rs.join() === 'ok,ok' && p.hits === 2 && p.version === 4,
    'two racing increment() are accepted: hits +2, version +2', [rs, p.hits, p.version]);

  // A record read before the increments is now stale.
  a.title = 'edit after the increments';
  r = await outcome(() => a.save());
  ok(r === 'OptimisticLockError', 'a save that read before the increments gets OptimisticLockError', r);

  // With timestamps, increment() also sends "updatedAt"=$1: a client value
  // next to version + 1, refused with ID011.
  const t = await T1.findByPk(1);
  r = await outcome(() => t.increment('hits'));
  ok(r === 'ID011', 'increment() on a model with timestamps raises ID011', r);

  // { silent: true } leaves "updatedAt" alone: atomic again, accepted.
  r = await outcome(() => t.increment('hits', { silent: true }));
  await t.reload();
  ok(r === 'ok' && t.hits === 1 && t.version === 1, 'increment() with { silent: true } is accepted', [r, t.hits, t.version]);

  await s1.query('DROP TABLE sq_post, sq_post_ts');
  await s1.close();
  await s2.close();
}

main().then(done, (e) => { console.log(`# ${e.stack}`); ok(false, 'test ran to the end'); done(); });
