/*-------------------------------------------------------------------------
 *
 * direct_write.c
 *	  The rule for every write pg_idem makes without the executor, and the
 *	  one place that opens the tables it writes that way.
 *
 * reserve(), complete(), release(), checkpoint() (keys.c) and emit()
 * (outbox_emit.c) write idem.keys and idem.outbox with the table AM and the
 * executor's index routines instead of a planned statement: that is what
 * makes them cost less than the INSERT or UPDATE they replace.  The rule:
 *
 *	 Such a write gives exactly what the equivalent SQL statement gives, or
 *	 it does not run.
 *
 * The equivalent statement is written beside each path (e.g. emit() is
 * INSERT INTO idem.outbox (topic, key, payload, headers) VALUES (...)).  The
 * C path imitates what the executor does for that statement on the table as
 * the extension creates it (ExecInsert / ExecUpdate in nodeModifyTable.c:
 * heap write, ExecInsertIndexTuples, CheckCmdReplicaIdentity for UPDATE).
 * Everything else the executor would do -- fire triggers (including the
 * recheck trigger of a deferrable unique constraint and foreign-key
 * triggers), check CHECK and partition constraints, apply row security,
 * rewrite through rules, fill defaults of columns the statement does not
 * name, compute generated columns -- depends on how the table was altered
 * after CREATE EXTENSION.  So a table is used directly only while it is
 * *pristine*: exactly the extension's columns, types (without modifiers),
 * collations, nullability and defaults, no trigger, CHECK constraint, rule or row security, not a
 * partition.  Otherwise the caller takes the executor's path (emit) or
 * refuses with an error naming the difference (the key functions).
 * Indexes a user adds need no exception: ExecInsertIndexTuples maintains
 * and checks every index, as for the statement.
 *
 * A partitioned table (idem.outbox since 0.2, LIST ((id / S) % N)) is
 * written leaf by leaf: the caller draws the id, computes the key as the
 * partition key expression does (int8 division and remainder, both
 * truncating toward zero in C as in int8div/int8mod), and writes into the
 * leaf that tuple routing (ExecFindPartition) would choose.  Pristine then
 * also means: the partition key is exactly that expression, the leaves are
 * exactly N plain tables bound to the values 0..N-1 (no default partition,
 * no partition being detached), and every leaf has the parent's columns at
 * the same positions, with no trigger, CHECK constraint, rule or row
 * security of its own.  The parent is locked first, then the leaf, and a
 * leaf's shape is only trusted once the leaf itself is locked: DETACH takes
 * AccessExclusiveLock on the partition, and ALTER TABLE on a leaf locks
 * the leaf, so neither can change what was checked under both locks.
 *
 * What is known about a table is cached per backend, and only trusted after
 * the table is opened and locked: acquiring the lock processes the pending
 * invalidation messages (LockRelationOid -> AcceptInvalidationMessages), and
 * the relcache callback below then marks the cache stale, so a concurrent
 * ALTER TABLE is always seen before the first write after it.  The shape is
 * computed from the opened relation's own descriptor, never from a separate
 * catalog lookup that could disagree with it.
 *
 * IDENTIFICATION
 *	  src/direct_write.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/partition.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "nodes/primnodes.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "direct_write.h"

/* Counts invalidations that may concern one of the tables. */
static uint64 direct_inval_gen = 1;

#define DIRECT_MAX_TABLES 4
static DirectTable *direct_tables[DIRECT_MAX_TABLES];
static int	direct_ntables = 0;
static bool direct_callback_registered = false;

static void direct_relcache_callback(Datum arg, Oid relid);
static void direct_register(DirectTable *t);
static Oid	direct_lookup(DirectTable *t);
static void direct_load(DirectTable *t, Relation rel);
static void deviate(DirectTable *t, const char *fmt,...) pg_attribute_printf(2, 3);
static bool default_is_call(Relation rel, AttrNumber attnum, Oid func);
static void direct_load_partitions(DirectTable *t, Relation rel);
static bool direct_leaf_pristine(DirectTable *t, Relation leaf);

/* Relcache callback: one of our tables changed, or everything may have. */
static void
direct_relcache_callback(Datum arg, Oid relid)
{
	for (int i = 0; i < direct_ntables; i++)
	{
		DirectTable *t = direct_tables[i];

		if (relid == InvalidOid || relid == t->relid)
		{
			direct_inval_gen++;
			return;
		}
		for (int k = 0; k < t->nleaves; k++)
			if (relid == t->leaf_oid[k])
			{
				direct_inval_gen++;
				return;
			}
	}
}

static void
direct_register(DirectTable *t)
{
	if (!direct_callback_registered)
	{
		CacheRegisterRelcacheCallback(direct_relcache_callback, (Datum) 0);
		direct_callback_registered = true;
	}
	for (int i = 0; i < direct_ntables; i++)
		if (direct_tables[i] == t)
			return;
	if (direct_ntables >= DIRECT_MAX_TABLES)
		elog(ERROR, "pg_idem: too many directly written tables");
	direct_tables[direct_ntables++] = t;
}

/* The table's OID, by schema-qualified name (never through search_path). */
static Oid
direct_lookup(DirectTable *t)
{
	Oid			relid = get_relname_relid(t->relname, get_namespace_oid("idem", false));

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("pg_idem is not installed correctly: idem.%s is missing", t->relname),
				 errhint("Run ALTER EXTENSION pg_idem UPDATE, or drop and create the extension.")));
	return relid;
}

/*
 * Open and lock the table, and make sure what is cached about it describes
 * the relation as it is now, under the lock.  t->pristine then says whether
 * the C path may write it; t->deviation says why not.
 */
Relation
idem_direct_open(DirectTable *t, LOCKMODE lockmode)
{
	direct_register(t);
	for (int tries = 0;; tries++)
	{
		Oid			relid = t->loaded ? t->relid : direct_lookup(t);
		Relation	rel = try_table_open(relid, lockmode);
		uint64		gen;

		if (rel == NULL)
		{
			/* dropped meanwhile (DROP EXTENSION?): look it up again */
			t->loaded = false;
			if (tries > 2)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_TABLE),
						 errmsg("idem.%s was dropped concurrently", t->relname)));
			continue;
		}
		if (t->loaded && t->loaded_gen == direct_inval_gen)
			return rel;

		/*
		 * Something may have changed.  Under the lock, check that the name
		 * still leads here, then learn the shape from this very relation.
		 */
		if (direct_lookup(t) != relid)
		{
			table_close(rel, lockmode);
			t->loaded = false;
			continue;
		}
		gen = direct_inval_gen;
		t->relid = relid;
		direct_load(t, rel);
		t->loaded_gen = gen;	/* an invalidation during the load: load again next time */
		t->loaded = true;
		return rel;
	}
}

/* Record the first difference from the pristine shape. */
static void
deviate(DirectTable *t, const char *fmt,...)
{
	va_list		args;

	if (!t->pristine)
		return;
	t->pristine = false;
	va_start(args, fmt);
	vsnprintf(t->deviation, sizeof(t->deviation), fmt, args);
	va_end(args);
}

/* Is the column's default a call of func without arguments? */
static bool
default_is_call(Relation rel, AttrNumber attnum, Oid func)
{
	TupleConstr *constr = RelationGetDescr(rel)->constr;

	if (constr == NULL)
		return false;
	for (int i = 0; i < constr->num_defval; i++)
		if (constr->defval[i].adnum == attnum)
		{
			Node	   *expr = stringToNode(constr->defval[i].adbin);

			return IsA(expr, FuncExpr) &&
				((FuncExpr *) expr)->funcid == func &&
				((FuncExpr *) expr)->args == NIL;
		}
	return false;
}

/*
 * Map the described columns onto the relation and compare it with the shape
 * the extension creates.
 */
static void
direct_load(DirectTable *t, Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);
	Form_pg_class form = rel->rd_rel;

	t->pristine = true;
	t->deviation[0] = '\0';
	t->identity_seq = InvalidOid;
	for (int c = 0; c < t->ncols; c++)
		t->attidx[c] = -1;

	for (int k = 0; k < IDEM_DIRECT_MAX_LEAVES; k++)
	{
		t->leaf_oid[k] = InvalidOid;
		t->leaf_gen[k] = 0;
		t->leaf_pristine[k] = false;
	}
	/*
	 * A table described as partitioned may still be the plain table of a
	 * database whose extension is not updated yet: it is written directly
	 * too, as before.
	 */
	t->partitioned = (t->nleaves > 0 && form->relkind == RELKIND_PARTITIONED_TABLE);
	if (t->partitioned)
		direct_load_partitions(t, rel);
	else if (form->relkind != RELKIND_RELATION)
		deviate(t, "is not a plain table");
	if (form->relispartition)
		deviate(t, "is a partition of another table");

	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);
		const char *name = NameStr(a->attname);
		int			c;

		if (a->attisdropped)
			continue;
		for (c = 0; c < t->ncols; c++)
			if (strcmp(name, t->cols[c].name) == 0)
				break;
		if (c == t->ncols)
		{
			deviate(t, "has column \"%s\", which pg_idem did not create", name);
			continue;
		}
		t->attidx[c] = i;
	}

	for (int c = 0; c < t->ncols; c++)
	{
		const DirectColumn *dc = &t->cols[c];
		Form_pg_attribute a;

		if (t->attidx[c] < 0)
		{
			if (!dc->optional)
				deviate(t, "has no column \"%s\"", dc->name);
			continue;
		}
		a = TupleDescAttr(desc, t->attidx[c]);
		if (OidIsValid(dc->type) && a->atttypid != dc->type)
			deviate(t, "has column \"%s\" of type %s instead of %s", dc->name,
					format_type_be(a->atttypid), format_type_be(dc->type));
		if (a->atttypmod != -1)
			deviate(t, "has column \"%s\" with a type modifier", dc->name);
		if (a->attcollation != dc->collation)
			deviate(t, "has column \"%s\" with another collation", dc->name);
		if (a->attnotnull != dc->notnull)
			deviate(t, a->attnotnull ? "has NOT NULL on column \"%s\"" :
					"has column \"%s\" without its NOT NULL", dc->name);
		if (a->attgenerated)
			deviate(t, "has column \"%s\" generated", dc->name);
		switch (dc->role)
		{
			case DC_WRITTEN:
				break;
			case DC_OMITTED:
				if (a->atthasdef || a->attidentity)
					deviate(t, "has a default on column \"%s\"", dc->name);
				break;
			case DC_IDENTITY:
				if (!a->attidentity)
					deviate(t, "has column \"%s\" that is not an identity column", dc->name);
				else
					t->identity_seq = getIdentitySequence(RelationGetRelid(rel),
														  a->attnum, false);
				break;
			case DC_DEFAULT_FUNC:
				if (!a->atthasdef || !default_is_call(rel, a->attnum, dc->func))
					deviate(t, "has another default on column \"%s\"", dc->name);
				break;
		}
	}

	if (rel->trigdesc != NULL && rel->trigdesc->numtriggers > 0)
		deviate(t, "has trigger \"%s\"", rel->trigdesc->triggers[0].tgname);
	if (desc->constr != NULL && desc->constr->num_check > 0)
		deviate(t, "has CHECK constraint \"%s\"", desc->constr->check[0].ccname);
	if (form->relhasrules)
		deviate(t, "has a rule");
	if (form->relrowsecurity)
		deviate(t, "has row level security enabled");
}

/*
 * The partition key and the leaves of a partitioned table, under the
 * parent's lock: the key must be LIST ((col / leaf_ids) % nleaves) -- as
 * PostgreSQL prints it back, which normalizes spacing and qualification --
 * and every value 0..nleaves-1 must have a leaf of its own.
 */
static void
direct_load_partitions(DirectTable *t, Relation rel)
{
	char		want[128];
	char	   *got;
	PartitionDesc pd;
	PartitionBoundInfo bi;

	snprintf(want, sizeof(want), "LIST ((((%s / " INT64_FORMAT ") %% (%d)::bigint)))",
			 t->cols[0].name, t->leaf_ids, t->nleaves);
	got = TextDatumGetCString(DirectFunctionCall1(pg_get_partkeydef,
												  ObjectIdGetDatum(RelationGetRelid(rel))));
	if (strcmp(got, want) != 0)
	{
		deviate(t, "is partitioned by %s instead of %s", got, want);
		return;
	}

	/* detached partitions included: one being detached is a difference */
	pd = RelationGetPartitionDesc(rel, false);
	bi = pd->boundinfo;
	if (pd->detached_exist)
		deviate(t, "has a partition being detached");
	if (pd->nparts != t->nleaves || bi == NULL || bi->strategy != PARTITION_STRATEGY_LIST ||
		bi->ndatums != t->nleaves || partition_bound_has_default(bi) ||
		partition_bound_accepts_nulls(bi))
	{
		deviate(t, "does not have exactly the %d partitions pg_idem created", t->nleaves);
		return;
	}
	for (int i = 0; i < bi->ndatums; i++)
	{
		int64		v = DatumGetInt64(bi->datums[i][0]);
		int			part = bi->indexes[i];

		if (v < 0 || v >= t->nleaves || OidIsValid(t->leaf_oid[v]) ||
			part < 0 || part >= pd->nparts || !pd->is_leaf[part])
		{
			deviate(t, "does not have exactly the %d partitions pg_idem created", t->nleaves);
			return;
		}
		t->leaf_oid[v] = pd->oids[part];
	}
}

/*
 * Is the leaf (opened and locked) as pg_idem created it: a plain table with
 * the parent's columns at the same positions, the same types, collations
 * and nullability, and nothing of its own that the executor would apply to
 * a routed row (triggers, CHECK constraints, rules, row security)?  Its
 * defaults do not matter: a routed row gets the parent's.
 */
static bool
direct_leaf_pristine(DirectTable *t, Relation leaf)
{
	TupleDesc	desc = RelationGetDescr(leaf);
	Form_pg_class form = leaf->rd_rel;
	int			ncols = 0;

	if (form->relkind != RELKIND_RELATION || !form->relispartition)
		return false;
	for (int i = 0; i < desc->natts; i++)
		if (!TupleDescAttr(desc, i)->attisdropped)
			ncols++;
	for (int c = 0; c < t->ncols; c++)
	{
		const DirectColumn *dc = &t->cols[c];
		Form_pg_attribute a;

		if (t->attidx[c] < 0)
			continue;
		ncols--;
		if (t->attidx[c] >= desc->natts)
			return false;
		a = TupleDescAttr(desc, t->attidx[c]);
		if (a->attisdropped || strcmp(NameStr(a->attname), dc->name) != 0 ||
			a->atttypid != dc->type || a->atttypmod != -1 ||
			a->attcollation != dc->collation || a->attnotnull != dc->notnull ||
			a->attgenerated)
			return false;
	}
	if (ncols != 0)
		return false;
	if (leaf->trigdesc != NULL && leaf->trigdesc->numtriggers > 0)
		return false;
	if (desc->constr != NULL && desc->constr->num_check > 0)
		return false;
	if (form->relhasrules || form->relrowsecurity)
		return false;
	return true;
}

/*
 * Open and lock leaf number `leaf` of a partitioned table whose parent the
 * caller has opened with idem_direct_open() and still holds.  Returns NULL
 * when the row cannot be written there directly (the table is not
 * pristine, or that leaf is not): the caller then takes the executor's
 * path.  Locking the leaf processes invalidations; if any concerned the
 * table, the parent (still locked) is checked again before the leaf is
 * trusted, and the leaf's own shape is learned under its lock.
 */
Relation
idem_direct_open_leaf(DirectTable *t, Relation parent, int leaf, LOCKMODE lockmode)
{
	for (int tries = 0; tries < 3; tries++)
	{
		Oid			leafid;
		Relation	rel;

		if (!t->pristine || leaf < 0 || leaf >= t->nleaves)
			return NULL;
		leafid = t->leaf_oid[leaf];
		rel = try_table_open(leafid, lockmode);
		if (t->loaded_gen != direct_inval_gen)
		{
			/* something changed: look at the parent again, under its lock */
			uint64		gen = direct_inval_gen;

			direct_load(t, parent);
			t->loaded_gen = gen;
			if (rel != NULL && (!t->pristine || t->leaf_oid[leaf] != leafid))
			{
				table_close(rel, lockmode);
				continue;
			}
		}
		if (rel == NULL)
			continue;
		if (t->leaf_gen[leaf] != t->loaded_gen)
		{
			t->leaf_pristine[leaf] = direct_leaf_pristine(t, rel);
			t->leaf_gen[leaf] = t->loaded_gen;
		}
		if (t->leaf_pristine[leaf])
			return rel;
		table_close(rel, lockmode);
		return NULL;
	}
	return NULL;
}
