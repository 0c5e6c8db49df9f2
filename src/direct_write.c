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
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "nodes/primnodes.h"
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

/* Relcache callback: one of our tables changed, or everything may have. */
static void
direct_relcache_callback(Datum arg, Oid relid)
{
	for (int i = 0; i < direct_ntables; i++)
		if (relid == InvalidOid || relid == direct_tables[i]->relid)
		{
			direct_inval_gen++;
			return;
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

	if (form->relkind != RELKIND_RELATION)
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
