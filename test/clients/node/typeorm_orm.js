// test/clients/node/typeorm_orm.js: TypeORM 1.1 with @VersionColumn against
// a strict pg_idem guard.
//
// repository.save() of a loaded entity sends
//   UPDATE "to_post" SET "title" = $1, "version" = "version" + 1 WHERE "id" IN ($2)
// without the version it read: two racing saves both win, and the first edit
// is lost (that is what the guard let through up to 0.1, and what this test
// fails on without the guard).  Strict mode refuses it with ID011.  The fix
// is the query builder with the version read, .set({ title, version }): one
// racing writer wins, the other gets ID010, which idemErrors() below turns
// into TypeORM's own OptimisticLockVersionMismatchError.
'use strict';
require('reflect-metadata');
const {
  DataSource, Entity, PrimaryColumn, Column, VersionColumn, QueryFailedError,
  OptimisticLockVersionMismatchError,
} = require('typeorm');
const { ok, done, conn, enforceSql } = require('./tap');

// The entity as TypeScript compiles it:
//   @Entity('to_post') class Post {
//     @PrimaryColumn('int') id; @Column('text') title;
//     @Column('int', { default: 0 }) hits; @VersionColumn({ type: 'int' }) version; }
class Post {}
PrimaryColumn('int')(Post.prototype, 'id');
Column('text')(Post.prototype, 'title');
Column('int', { default: 0 })(Post.prototype, 'hits');
VersionColumn({ type: 'int' })(Post.prototype, 'version');
Entity('to_post')(Post);

// --- docs/orms.md quotes this block ---
// Update an entity with the version it was read at (save() assigns
// version + 1 instead, which strict mode refuses), and raise TypeORM's own
// optimistic-lock error for pg_idem's ID010.
async function saveVersioned(ds, entity, changes) {
  try {
    await ds.createQueryBuilder().update(entity.constructor)
      .set({ ...changes, version: entity.version })
      .where('id = :id', { id: entity.id })
      .execute();
  } catch (err) {
    if (err instanceof QueryFailedError && err.driverError.code === 'ID010') {
      throw new OptimisticLockVersionMismatchError(entity.constructor.name, entity.version, 'newer');
    }
    throw err;
  }
}
// --- end of quoted block ---

function source() {
  return new DataSource({
    type: 'postgres', host: conn.host, port: conn.port, username: conn.user, database: conn.database,
    entities: [Post], applicationName: 'clients-typeorm', logging: false,
  });
}

async function outcome(work) {
  try {
    await work();
    return 'ok';
  } catch (e) {
    if (e instanceof OptimisticLockVersionMismatchError) return 'OptimisticLockVersionMismatchError';
    return (e.driverError && e.driverError.code) || e.name;
  }
}

async function main() {
  // Two data sources: two pools, two sessions.
  const d1 = await source().initialize();
  const d2 = await source().initialize();
  await d1.query('DROP TABLE IF EXISTS to_post');
  await d1.synchronize();
  await d1.query(enforceSql('to_post'));
  const r1 = d1.getRepository(Post);
  const r2 = d2.getRepository(Post);
  await r1.insert({ id: 1, title: 'original' });

  // A normal versioned update: the query builder with the version read.
  let p = await r1.findOneBy({ id: 1 });
  await saveVersioned(d1, p, { title: 'first edit' });
  p = await r2.findOneBy({ id: 1 });
  ok(p.title === 'first edit' && p.version === 2, 'an update with the version read updates and bumps the version',
    [p.title, p.version]);

  // Two racing save()s, two sessions: both read, both save.  Without the
  // guard both win and "edit by a" is lost; strict mode refuses both.
  const a = await r1.findOneBy({ id: 1 });
  const b = await r2.findOneBy({ id: 1 });
  a.title = 'edit by a';
  b.title = 'edit by b';
  const ra = await outcome(() => r1.save(a));
  const rb = await outcome(() => r2.save(b));
  p = await r1.findOneBy({ id: 1 });
  ok(ra === 'ID011' && rb === 'ID011' && p.title === 'first edit' && p.version === 2,
    'two racing save() are both refused with ID011: no lost update', [ra, rb, p.title, p.version]);

  // The same race with the version read: exactly one winner, the other
  // gets OptimisticLockVersionMismatchError (ID010 mapped).
  const a2 = await r1.findOneBy({ id: 1 });
  const b2 = await r2.findOneBy({ id: 1 });
  const ra2 = await outcome(() => saveVersioned(d1, a2, { title: 'edit by a' }));
  const rb2 = await outcome(() => saveVersioned(d2, b2, { title: 'edit by b' }));
  p = await r1.findOneBy({ id: 1 });
  ok(ra2 === 'ok' && rb2 === 'OptimisticLockVersionMismatchError' && p.title === 'edit by a' && p.version === 3,
    'two racing versioned updates: one winner, the other OptimisticLockVersionMismatchError',
    [ra2, rb2, p.title, p.version]);

  // save() of an entity read before that update: save() reloads the row,
  // sees the version differ from the entity's, and sends the entity's
  // (stale) version as a plain value: ID010.
  b2.title = 'stale edit by b';
  const rs = await outcome(() => r2.save(b2));
  p = await r1.findOneBy({ id: 1 });
  ok(rs === 'ID010' && p.title === 'edit by a' && p.version === 3,
    'save() of an entity read before another write sends its stale version: ID010', [rs, p.title, p.version]);

  // repository.increment(), two sessions: atomic, both count.
  const ri = [await outcome(() => r1.increment({ id: 1 }, 'hits', 1)),
    await outcome(() => r2.increment({ id: 1 }, 'hits', 1))];
  p = await r1.findOneBy({ id: 1 });
  ok(ri.join() === 'ok,ok' && p.hits === 2 && p.version === 5,
    'two racing increment() are accepted: hits +2, version bumped twice', [ri, p.hits, p.version]);

  // An entity read before the increments is now stale.
  const r = await outcome(() => saveVersioned(d1, a2, { title: 'edit after the increments' }));
  ok(r === 'OptimisticLockVersionMismatchError', 'an update that read before the increments is stale', r);

  await d1.query('DROP TABLE to_post');
  await d1.destroy();
  await d2.destroy();
}

main().then(done, (e) => { console.log(`# ${e.stack}`); ok(false, 'test ran to the end'); done(); });
