/*-------------------------------------------------------------------------
 *
 * version_guard.c
 *	  Version-checked updates: the idem.version_guard() row trigger, and
 *	  idem.enforce_version() / idem.unenforce_version(), which install and
 *	  remove it.
 *
 * A client that read a row at version N and writes it back assigns N to the
 * version column; the trigger writes the row with N + 1 if the row is still
 * at N, and refuses the write (ID010) if someone else changed the row in
 * between, so the second of two racing read-modify-write cycles can no longer
 * silently overwrite the first (the lost update).  An UPDATE that does not
 * assign the version column at all is a blind write: refused (ID011) in
 * strict mode, given the next version in auto mode.
 *
 * Strict mode judges a write by where its values come from (0.2): an UPDATE
 * that computes every value from the row itself (balance = balance + 1)
 * cannot lose an update and is accepted without a version; one that writes a
 * client value must prove the version it read, which version = version + 1
 * does not.  The trigger cannot see the statement; version_provenance.c
 * reads it from the plan and hands the verdict over once per statement.
 *
 * "Did this UPDATE assign the column?" cannot be answered from the old and
 * new row alone (SET version = version looks the same as no SET at all).  The
 * executor passes the statement's set of target columns to row triggers as
 * TriggerData->tg_updatedcols, already mapped to the attribute numbers of the
 * relation the row lives in (a partition with its own column order, the base
 * table under an auto-updatable view, the target of ON CONFLICT DO UPDATE).
 * PL/pgSQL does not expose it, which is why this trigger is written in C.
 *
 * The trigger runs no queries and reads no catalogs per row: its arguments
 * (column name, mode) are resolved against the relation's tuple descriptor
 * once per statement and per relation, and cached in fn_extra.
 *
 * IDENTIFICATION
 *	  src/version_guard.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tupmacs.h"
#include "access/xact.h"
#include "catalog/pg_index.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_class.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "nodes/makefuncs.h"
#include "nodes/pg_list.h"
#include "parser/parse_func.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"

#include "compat.h"
#include "pg_idem.h"
#include "version_provenance.h"

/* The name enforce_version() gives the trigger it installs. */
#define VERSION_GUARD_TRIGGER	"idem_version_guard"

/* Defaults of the trigger arguments, the same as enforce_version()'s. */
#define VERSION_GUARD_DEFAULT_COLUMN	"version"
#define VERSION_GUARD_DEFAULT_MODE		"strict"

/* BEFORE INSERT OR UPDATE FOR EACH ROW, as pg_trigger.tgtype spells it. */
#define VERSION_GUARD_TGTYPE \
	(TRIGGER_TYPE_ROW | TRIGGER_TYPE_BEFORE | TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE)

typedef enum VersionMode
{
	VERSION_MODE_STRICT,		/* an UPDATE must assign the version */
	VERSION_MODE_AUTO			/* an UPDATE that does not gets the next one */
} VersionMode;

/*
 * What the trigger needs per row, resolved once per statement and relation.
 * A partition has its own attribute numbers, so the entry remembers which
 * relation (and which trigger, whose arguments it parsed) it describes.
 */
typedef struct VersionGuardCache
{
	Oid			relid;			/* relation the entry describes */
	Oid			tgoid;			/* trigger whose arguments were parsed */
	AttrNumber	attnum;			/* version column in that relation */
	int			updcol;			/* attnum as a member of tg_updatedcols */
	bool		is_int8;		/* bigint, else integer */
	int64		max_version;	/* largest value the column can hold */
	VersionMode mode;
	bool		prov_valid;		/* prov was looked up (strict mode only) */
	WriteProvenance prov;		/* where the statement's values come from */
} VersionGuardCache;

/* A trigger named VERSION_GUARD_TRIGGER found on a table. */
typedef struct GuardTrigger
{
	Oid			oid;
	Oid			funcoid;
	Oid			parentoid;		/* trigger it was cloned from, for a partition */
	int16		tgtype;
	char		enabled;
	bool		has_when;
	bool		has_columns;
	int			nargs;
	char	   *column;			/* first argument, or NULL */
	char	   *mode;			/* second argument, or NULL */
} GuardTrigger;

/*
 * The guard's last BEFORE INSERT, when it gave version 1 for a NULL.  In an
 * INSERT ... ON CONFLICT DO UPDATE the executor fires the BEFORE UPDATE of
 * the conflicting row right after that BEFORE INSERT, on the same result
 * relation (ExecInsert -> ExecOnConflictUpdate -> ExecUpdate,
 * nodeModifyTable.c), so both see the same Trigger of the same
 * ResultRelInfo: the pointer identifies the statement's target, whatever
 * triggers of other tables run in between (they have their own).  The
 * statement's plan says whether the version is assigned EXCLUDED.version
 * unchanged (version_provenance.c).
 */
typedef struct NullInsert
{
	bool		valid;
	LocalTransactionId lxid;
	Trigger    *trigger;		/* trigdata->tg_trigger of that BEFORE INSERT */
} NullInsert;

static NullInsert null_insert;

/* Why an update is refused with ID011 (version_required_error). */
typedef enum VersionRequiredReason
{
	VERSION_NOT_ASSIGNED,		/* the update does not assign the version */
	VERSION_ASSIGNED_NULL,		/* it assigns NULL */
	VERSION_UPSERT_NULL,		/* EXCLUDED.version of a NULL proposal */
	VERSION_FROM_ROW,			/* it assigns an expression of the row */
	VERSION_UNKNOWN_NEXT		/* stored + 1, computed in a way not seen */
} VersionRequiredReason;

static bool is_upsert_of_null_insert(TriggerData *trigdata);
static int64 version_value(VersionGuardCache *cache, Datum d);
static void version_required_error(TriggerData *trigdata, VersionGuardCache *cache,
								   VersionRequiredReason reason, int64 assigned)
			pg_attribute_noreturn();
static VersionGuardCache *version_guard_cache(FunctionCallInfo fcinfo,
											  TriggerData *trigdata);
static HeapTuple version_guard_set(TriggerData *trigdata, HeapTuple tuple,
								   VersionGuardCache *cache, int64 version);
static char *version_field(HeapTuple tuple, TupleDesc tupdesc, AttrNumber attnum);
static int64 version_guard_next(TriggerData *trigdata, VersionGuardCache *cache,
								int64 stored);
static bool parse_version_mode(const char *mode, VersionMode *result);
static Oid	version_guard_function_oid(void);
static void check_guard_grants(Oid funcoid, const char *relname);
static bool find_guard_trigger(Oid relid, GuardTrigger *result);
static Oid	guard_trigger_root_table(Oid parentoid);
static bool guard_trigger_matches(const GuardTrigger *trig, Oid funcoid,
								  const char *column, const char *mode);
static char *qualified_relation_name(Oid relid);
static Form_pg_class check_table_owner(Oid relid, HeapTuple *classtup);
static void check_version_column(Oid relid, const char *relname,
								 const char *column);
static void run_ddl(const char *sql);
static void drop_partition_guards(Oid relid, Oid funcoid);

/*
 * The trigger.
 *
 * INSERT: a NULL version becomes 1; any other value is kept (a restored dump
 * or an ORM that starts at 0 keeps its numbering).
 *
 * UPDATE: compare the assigned version (the one the client read) with the
 * stored one.  Equal: write stored + 1.  Equal to stored + 1: the client (an
 * ORM guarding with WHERE version = old) set the next version itself; keep
 * it.  Anything else: ID010.  Not assigned, or assigned NULL (the client
 * supplied no version): ID011 in strict mode, stored + 1 in auto mode.  A
 * stored NULL (a row written before the table was enforced) counts as 0.
 *
 * Strict mode first asks where the statement's values come from
 * (version_provenance.c).  When every assignment other than the version is
 * computed from the row (an atomic read-modify-write), no version is
 * needed: not assigned, NULL or computed from the row, the row gets stored
 * + 1; a version the client sent is checked as above.  When some other
 * column is assigned a client value, a version computed from the row
 * (version + 1) proves nothing: ID011.
 */
PG_FUNCTION_INFO_V1(idem_version_guard);
Datum
idem_version_guard(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent event;
	VersionGuardCache *cache;
	TupleDesc	tupdesc;
	HeapTuple	newtuple;
	Datum		datum;
	bool		isnull;
	int64		stored;
	int64		assigned;
	bool		assigned_col;
	ValueSource source;
	bool		upsert_null = false;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("idem.version_guard() can only be called as a trigger")));

	event = trigdata->tg_event;
	if (!TRIGGER_FIRED_BEFORE(event) || !TRIGGER_FIRED_FOR_ROW(event) ||
		!(TRIGGER_FIRED_BY_INSERT(event) || TRIGGER_FIRED_BY_UPDATE(event)))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("idem.version_guard() must be fired BEFORE INSERT OR UPDATE FOR EACH ROW"),
				 errdetail("Trigger \"%s\" on table \"%s\" fires otherwise.",
						   trigdata->tg_trigger->tgname,
						   RelationGetRelationName(trigdata->tg_relation)),
				 errhint("Install the trigger with idem.enforce_version().")));

	cache = version_guard_cache(fcinfo, trigdata);
	tupdesc = RelationGetDescr(trigdata->tg_relation);

	if (TRIGGER_FIRED_BY_INSERT(event))
	{
		HeapTuple	tuple = trigdata->tg_trigtuple;

		if (!heap_attisnull(tuple, cache->attnum, tupdesc))
		{
			null_insert.valid = false;
			return PointerGetDatum(tuple);
		}
		null_insert.valid = true;
		null_insert.lxid = MyProc->lxid;
		null_insert.trigger = trigdata->tg_trigger;
		return PointerGetDatum(version_guard_set(trigdata, tuple, cache, 1));
	}

	/*
	 * UPDATE: the stored version is the one in the row being replaced (the
	 * latest committed version, re-fetched and locked by the executor when
	 * a concurrent writer got there first).  Both rows are read from the
	 * executor's slots: the new row's is already deformed.
	 */
	datum = slot_getattr(trigdata->tg_trigslot, cache->attnum, &isnull);
	if (isnull)
		stored = 0;
	else
		stored = cache->is_int8 ? DatumGetInt64(datum) : DatumGetInt32(datum);

	newtuple = trigdata->tg_newtuple;
	assigned_col = bms_is_member(cache->updcol, trigdata->tg_updatedcols);
	isnull = true;
	if (assigned_col)
		datum = slot_getattr(trigdata->tg_newslot, cache->attnum, &isnull);

	/*
	 * Strict mode asks where the statement's values come from, once per
	 * statement (the cache lives as long as the statement).  Auto mode
	 * judges every assigned version as the client's.
	 */
	if (cache->mode == VERSION_MODE_STRICT)
	{
		if (!cache->prov_valid)
		{
			idem_note_guard_function(fcinfo->flinfo->fn_oid);
			idem_write_provenance(trigdata, cache->attnum, &cache->prov);
			cache->prov_valid = true;
		}
		source = cache->prov.version;
		if (assigned_col && source == VALUE_NOT_ASSIGNED)
			source = VALUE_UNKNOWN;
	}
	else
		source = VALUE_FROM_CLIENT;

	/*
	 * INSERT ... ON CONFLICT DO UPDATE SET version = EXCLUDED.version: the
	 * EXCLUDED row is the proposed row after BEFORE INSERT triggers, so a
	 * NULL version the client sent reads here as the 1 this trigger put in
	 * its place.  It is still "no version supplied": when this is the DO
	 * UPDATE of a row proposed with a NULL version, and the plan assigns
	 * the version EXCLUDED.version unchanged.  (SET version = 1, or any
	 * other expression, is judged as written.)
	 */
	if (!isnull && version_value(cache, datum) == 1 &&
		is_upsert_of_null_insert(trigdata))
	{
		if (!cache->prov_valid)
		{
			idem_note_guard_function(fcinfo->flinfo->fn_oid);
			idem_write_provenance(trigdata, cache->attnum, &cache->prov);
			cache->prov_valid = true;
		}
		if (cache->prov.version_proposed)
		{
			upsert_null = true;
			isnull = true;
		}
	}
	null_insert.valid = false;

	if (cache->mode == VERSION_MODE_STRICT && !cache->prov.others_client)
	{
		/*
		 * Every other assignment is computed from the row: an atomic
		 * read-modify-write, which the executor recomputes on the latest
		 * row version and which cannot lose an update.  No version needs
		 * proving; one computed from the row gets the next version once
		 * (version = version + 1 writes stored + 1, not + 2).  A version the
		 * client sent is still checked below.
		 */
		if (isnull || source == VALUE_FROM_ROW)
		{
			if (!isnull && stored < cache->max_version &&
				version_value(cache, datum) == stored + 1)
				return PointerGetDatum(newtuple);
			return PointerGetDatum(version_guard_set(trigdata, newtuple, cache,
													 version_guard_next(trigdata, cache, stored)));
		}
	}
	else if (cache->mode == VERSION_MODE_STRICT)
	{
		/* A client value is written: the version read must be proven. */
		if (assigned_col && source == VALUE_FROM_ROW)
			version_required_error(trigdata, cache, VERSION_FROM_ROW, 0);
		if (isnull)
			version_required_error(trigdata, cache,
								   upsert_null ? VERSION_UPSERT_NULL :
								   assigned_col ? VERSION_ASSIGNED_NULL :
								   VERSION_NOT_ASSIGNED, 0);
	}
	else if (isnull)
	{
		/* Auto mode: a blind write gets the next version. */
		return PointerGetDatum(version_guard_set(trigdata, newtuple, cache,
												 version_guard_next(trigdata, cache, stored)));
	}

	assigned = cache->is_int8 ? DatumGetInt64(datum) : DatumGetInt32(datum);

	/* The expected-version form: the client read the row at this version. */
	if (assigned == stored)
		return PointerGetDatum(version_guard_set(trigdata, newtuple, cache,
												 version_guard_next(trigdata, cache, stored)));

	/*
	 * The next-version form of ORMs, which guard with WHERE version = old.
	 * When strict mode could not tell how a statement that writes client
	 * values computed it, stored + 1 may be version + 1, which proves
	 * nothing: refused, the conservative reading.
	 */
	if (stored < cache->max_version && assigned == stored + 1)
	{
		if (cache->mode == VERSION_MODE_STRICT && cache->prov.others_client &&
			source == VALUE_UNKNOWN)
			version_required_error(trigdata, cache, VERSION_UNKNOWN_NEXT, assigned);
		return PointerGetDatum(newtuple);
	}

	ereport(ERROR,
			(errcode(ERRCODE_IDEM_VERSION_CONFLICT),
			 errmsg("version conflict on table \"%s\"",
					RelationGetRelationName(trigdata->tg_relation)),
			 errdetail("The row in table \"%s\" was read at version %lld but is now at version %lld.",
					   RelationGetRelationName(trigdata->tg_relation),
					   (long long) assigned, (long long) stored),
			 errhint("Re-read the row and retry the update with its current version."),
			 errtablecol(trigdata->tg_relation, cache->attnum)));
	PG_RETURN_NULL();			/* keep compiler quiet */
}

/*
 * Raise ID011: the update writes client values without proving the version
 * the client read.  The DETAIL says what the statement did instead.
 */
static void
version_required_error(TriggerData *trigdata, VersionGuardCache *cache,
					   VersionRequiredReason reason, int64 assigned)
{
	Relation	rel = trigdata->tg_relation;
	const char *colname = NameStr(TupleDescAttr(RelationGetDescr(rel),
												cache->attnum - 1)->attname);

	switch (reason)
	{
		case VERSION_NOT_ASSIGNED:
			ereport(ERROR,
					(errcode(ERRCODE_IDEM_VERSION_REQUIRED),
					 errmsg("version required to update table \"%s\"",
							RelationGetRelationName(rel)),
					 cache->prov.plan_seen ?
					 errdetail("The update did not assign column \"%s\", and table \"%s\" is enforced in strict mode.",
							   colname, RelationGetRelationName(rel)) :
					 errdetail("The update did not assign column \"%s\", and pg_idem, loaded during this statement, could not see whether it computes its values from the row.",
							   colname),
					 cache->prov.plan_seen ?
					 errhint("Set \"%s\" to the version the row was read at.", colname) :
					 errhint("Set \"%s\" to the version the row was read at, or load pg_idem at session start (shared_preload_libraries or session_preload_libraries).",
							 colname),
					 errtablecol(rel, cache->attnum)));
			break;
		case VERSION_ASSIGNED_NULL:
			ereport(ERROR,
					(errcode(ERRCODE_IDEM_VERSION_REQUIRED),
					 errmsg("version required to update table \"%s\"",
							RelationGetRelationName(rel)),
					 errdetail("The update set column \"%s\" to NULL instead of the version the row was read at.",
							   colname),
					 errhint("Set \"%s\" to the version the row was read at.",
							 colname),
					 errtablecol(rel, cache->attnum)));
			break;
		case VERSION_UPSERT_NULL:
			ereport(ERROR,
					(errcode(ERRCODE_IDEM_VERSION_REQUIRED),
					 errmsg("version required to update table \"%s\"",
							RelationGetRelationName(rel)),
					 errdetail("The upsert assigned column \"%s\" from a proposed row whose version is NULL.",
							   colname),
					 errhint("Set \"%s\" to the version the row was read at.",
							 colname),
					 errtablecol(rel, cache->attnum)));
			break;
		case VERSION_FROM_ROW:
			ereport(ERROR,
					(errcode(ERRCODE_IDEM_VERSION_REQUIRED),
					 errmsg("version required to update table \"%s\"",
							RelationGetRelationName(rel)),
					 errdetail("Column \"%s\" was assigned an expression of the row itself (such as %s + 1), which does not prove which version the client read.",
							   colname, quote_identifier(colname)),
					 errhint("Set \"%s\" to the version the row was read at. TypeORM's save() and ActiveRecord's update_all assign %s + 1 instead.",
							 colname, quote_identifier(colname)),
					 errtablecol(rel, cache->attnum)));
			break;
		case VERSION_UNKNOWN_NEXT:
			ereport(ERROR,
					(errcode(ERRCODE_IDEM_VERSION_REQUIRED),
					 errmsg("version required to update table \"%s\"",
							RelationGetRelationName(rel)),
					 cache->prov.plan_seen ?
					 errdetail("Column \"%s\" was assigned the next version (%lld) by a statement that assigns it in more than one way, so it may be the row's own version + 1, which does not prove which version the client read.",
							   colname, (long long) assigned) :
					 errdetail("Column \"%s\" was assigned the next version (%lld), and pg_idem, loaded during this statement, could not see how: it may be the row's own version + 1, which does not prove which version the client read.",
							   colname, (long long) assigned),
					 cache->prov.plan_seen ?
					 errhint("Set \"%s\" to the version the row was read at.", colname) :
					 errhint("Set \"%s\" to the version the row was read at, or load pg_idem at session start (shared_preload_libraries or session_preload_libraries).",
							 colname),
					 errtablecol(rel, cache->attnum)));
			break;
	}
	pg_unreachable();
}

/* The integer a version datum holds. */
static int64
version_value(VersionGuardCache *cache, Datum d)
{
	return cache->is_int8 ? DatumGetInt64(d) : DatumGetInt32(d);
}

/* Is this UPDATE the DO UPDATE of the row just proposed with a NULL version? */
static bool
is_upsert_of_null_insert(TriggerData *trigdata)
{
	return null_insert.valid &&
		null_insert.lxid == MyProc->lxid &&
		null_insert.trigger == trigdata->tg_trigger;
}

/*
 * Return the trigger's configuration for the relation the row lives in,
 * resolving it from the trigger arguments and the relation's tuple
 * descriptor when the cached entry describes another relation or trigger.
 * The entry lives in fn_mcxt, which lasts as long as the executor's trigger
 * function info (one statement); within it, the relation is locked and its
 * descriptor cannot change.
 */
static VersionGuardCache *
version_guard_cache(FunctionCallInfo fcinfo, TriggerData *trigdata)
{
	VersionGuardCache *cache = (VersionGuardCache *) fcinfo->flinfo->fn_extra;
	Relation	rel = trigdata->tg_relation;
	Trigger    *trigger = trigdata->tg_trigger;
	TupleDesc	tupdesc = RelationGetDescr(rel);
	const char *column = VERSION_GUARD_DEFAULT_COLUMN;
	const char *mode = VERSION_GUARD_DEFAULT_MODE;
	AttrNumber	attnum = InvalidAttrNumber;
	Form_pg_attribute attr = NULL;
	VersionMode parsed_mode;

	if (likely(cache != NULL &&
			   cache->relid == RelationGetRelid(rel) &&
			   cache->tgoid == trigger->tgoid))
		return cache;

	if (cache == NULL)
	{
		cache = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt,
									   sizeof(VersionGuardCache));
		fcinfo->flinfo->fn_extra = cache;
	}
	cache->relid = InvalidOid;	/* not valid until filled */

	if (trigger->tgnargs > 2)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on table \"%s\" passes %d arguments to idem.version_guard()",
						trigger->tgname, RelationGetRelationName(rel),
						trigger->tgnargs),
				 errdetail("The arguments are the version column and the mode."),
				 errhint("Install the trigger with idem.enforce_version().")));
	if (trigger->tgnargs >= 1)
		column = trigger->tgargs[0];
	if (trigger->tgnargs >= 2)
		mode = trigger->tgargs[1];

	if (!parse_version_mode(mode, &parsed_mode))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("trigger \"%s\" on table \"%s\" passes invalid mode \"%s\" to idem.version_guard()",
						trigger->tgname, RelationGetRelationName(rel), mode),
				 errhint("Install the trigger with idem.enforce_version().")));

	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(tupdesc, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), column) == 0)
		{
			attr = a;
			attnum = a->attnum;
			break;
		}
	}

	if (attr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("version column \"%s\" of table \"%s\" does not exist",
						column, RelationGetRelationName(rel)),
				 errdetail("Trigger \"%s\" checks versions in column \"%s\".",
						   trigger->tgname, column),
				 errhint("If the column was renamed, call idem.enforce_version() again with its new name.")));

	if (attr->atttypid != INT4OID && attr->atttypid != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("version column \"%s\" of table \"%s\" is of type %s",
						column, RelationGetRelationName(rel),
						format_type_be(attr->atttypid)),
				 errdetail("A version column must be of type integer or bigint."),
				 errtablecol(rel, attnum)));

	if (attr->attgenerated != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("cannot use generated column \"%s\" of table \"%s\" as a version column",
						column, RelationGetRelationName(rel)),
				 errtablecol(rel, attnum)));

	cache->attnum = attnum;
	cache->updcol = attnum - FirstLowInvalidHeapAttributeNumber;
	cache->is_int8 = (attr->atttypid == INT8OID);
	cache->max_version = cache->is_int8 ? PG_INT64_MAX : PG_INT32_MAX;
	cache->mode = parsed_mode;
	cache->prov_valid = false;
	cache->tgoid = trigger->tgoid;
	cache->relid = RelationGetRelid(rel);

	return cache;
}

/*
 * stored + 1, or 22003 when the column cannot hold it: a version never wraps
 * around, since a wrapped version could match a stale client's.
 */
static int64
version_guard_next(TriggerData *trigdata, VersionGuardCache *cache, int64 stored)
{
	if (unlikely(stored >= cache->max_version))
	{
		Relation	rel = trigdata->tg_relation;
		const char *colname = NameStr(TupleDescAttr(RelationGetDescr(rel),
													cache->attnum - 1)->attname);

		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("next version of a row in table \"%s\" is out of range for type %s",
						RelationGetRelationName(rel),
						cache->is_int8 ? "bigint" : "integer"),
				 errdetail("Column \"%s\" is at %lld, the largest value of its type.",
						   colname, (long long) stored),
				 cache->is_int8 ? 0 :
				 errhint("Change the type of column \"%s\" to bigint.", colname),
				 errtablecol(rel, cache->attnum)));
	}
	return stored + 1;
}

/*
 * Return a copy of tuple with the version column set to version.  The caller
 * returns it to the executor, which stores it in place of the proposed row.
 *
 * When the tuple stores a non-NULL version, the copy is made with
 * heap_copytuple() and the integer is overwritten where it lies: the
 * column is fixed-width and passed by value, so the tuple's layout does not
 * change.  This is the common case (an UPDATE assigning the version) and
 * costs a fraction of deforming and re-forming the row.  A NULL version (an
 * INSERT, a stored NULL) changes the null bitmap and the size, and a
 * version column added after the row was written is not stored in it at
 * all; those rows are rebuilt with heap_modify_tuple_by_cols().
 */
static HeapTuple
version_guard_set(TriggerData *trigdata, HeapTuple tuple,
				  VersionGuardCache *cache, int64 version)
{
	TupleDesc	tupdesc = RelationGetDescr(trigdata->tg_relation);
	int			attnum = cache->attnum;
	Datum		value;
	bool		isnull = false;

	if (attnum <= HeapTupleHeaderGetNatts(tuple->t_data) &&
		!(HeapTupleHasNulls(tuple) && att_isnull(attnum - 1, tuple->t_data->t_bits)))
	{
		HeapTuple	copy = heap_copytuple(tuple);
		char	   *field = version_field(copy, tupdesc, attnum);

		if (cache->is_int8)
		{
			int64		v = version;

			memcpy(field, &v, sizeof(v));
		}
		else
		{
			int32		v = (int32) version;

			memcpy(field, &v, sizeof(v));
		}
		return copy;
	}

	value = cache->is_int8 ? Int64GetDatum(version) : Int32GetDatum((int32) version);
	return heap_modify_tuple_by_cols(tuple, tupdesc, 1, &attnum, &value, &isnull);
}

/*
 * Locate the stored bytes of attribute attnum in a tuple that stores it and
 * where it is not NULL: walk the attributes before it the way
 * nocachegetattr() does, skipping NULLs and aligning each stored value.
 */
static char *
version_field(HeapTuple tuple, TupleDesc tupdesc, AttrNumber attnum)
{
	HeapTupleHeader td = tuple->t_data;
	char	   *tp = (char *) td + td->t_hoff;
	bits8	   *bp = td->t_bits;
	bool		hasnulls = HeapTupleHasNulls(tuple);
	uint32		off = 0;

	for (int i = 0; i < attnum - 1; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);

		if (hasnulls && att_isnull(i, bp))
			continue;
		off = att_align_pointer(off, att->attalign, att->attlen, tp + off);
		off = att_addlength_pointer(off, att->attlen, tp + off);
	}
	off = att_align_nominal(off, TupleDescAttr(tupdesc, attnum - 1)->attalign);
	return tp + off;
}

/* Parse a mode name, case-insensitively; false if it is not one. */
static bool
parse_version_mode(const char *mode, VersionMode *result)
{
	if (pg_strcasecmp(mode, "strict") == 0)
		*result = VERSION_MODE_STRICT;
	else if (pg_strcasecmp(mode, "auto") == 0)
		*result = VERSION_MODE_AUTO;
	else
		return false;
	return true;
}

/* The OID of idem.version_guard(), looked up by its qualified name. */
static Oid
version_guard_function_oid(void)
{
	List	   *name = list_make2(makeString("idem"), makeString("version_guard"));

	return LookupFuncName(name, 0, NULL, false);
}

/*
 * A table's owner needs two grants beyond owning the table to keep a guard:
 * EXECUTE on idem.version_guard(), because CREATE TRIGGER checks EXECUTE on
 * the trigger's function, and EXECUTE on idem.unenforce_version(), to take
 * it off again (it has EXECUTE on enforce_version(), or it would not be
 * here).  Checked before anything is locked or created, so that a
 * non-superuser owner gets one error whose HINT names exactly the grants it
 * lacks, instead of CREATE TRIGGER's bare "permission denied for function
 * idem.version_guard" from the middle of the call.
 */
static void
check_guard_grants(Oid funcoid, const char *relname)
{
	Oid			userid = GetUserId();
	List	   *unenforce = list_make2(makeString("idem"), makeString("unenforce_version"));
	Oid			argtypes[1] = {REGCLASSOID};
	Oid			unenforce_oid = LookupFuncName(unenforce, 1, argtypes, true);
	char	   *role;
	StringInfoData hint;

	if (idem_proc_aclcheck(funcoid, userid, ACL_EXECUTE) == ACLCHECK_OK)
		return;

	role = GetUserNameFromId(userid, false);
	initStringInfo(&hint);
	appendStringInfo(&hint, "GRANT EXECUTE ON FUNCTION idem.version_guard() TO %s;",
					 quote_identifier(role));
	if (OidIsValid(unenforce_oid) &&
		idem_proc_aclcheck(unenforce_oid, userid, ACL_EXECUTE) != ACLCHECK_OK)
		appendStringInfo(&hint, " GRANT EXECUTE ON FUNCTION idem.unenforce_version(regclass) TO %s;",
						 quote_identifier(role));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to enforce versions on table \"%s\"", relname),
			 errdetail("Role \"%s\" may not execute idem.version_guard(), the trigger function idem.enforce_version() installs: creating a trigger needs EXECUTE on its function.",
					   role),
			 errhint("The owner of pg_idem (or a superuser) grants what a table's owner needs with: %s",
					 hint.data)));
}

/*
 * Look for the trigger named VERSION_GUARD_TRIGGER on a table; fill result
 * and return true when there is one, whatever function it calls.
 */
static bool
find_guard_trigger(Oid relid, GuardTrigger *result)
{
	Relation	tgrel;
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	tgrel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyInit(&key[0], Anum_pg_trigger_tgrelid,
				BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(relid));
	ScanKeyInit(&key[1], Anum_pg_trigger_tgname,
				BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum(VERSION_GUARD_TRIGGER));
	scan = systable_beginscan(tgrel, TriggerRelidNameIndexId, true,
							  NULL, 2, key);

	if (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_trigger form = (Form_pg_trigger) GETSTRUCT(tuple);
		Datum		args;
		bool		isnull;

		found = true;
		memset(result, 0, sizeof(GuardTrigger));
		result->oid = form->oid;
		result->funcoid = form->tgfoid;
		result->parentoid = form->tgparentid;
		result->tgtype = form->tgtype;
		result->enabled = form->tgenabled;
		result->has_columns = (form->tgattr.dim1 > 0);
		result->has_when = !heap_attisnull(tuple, Anum_pg_trigger_tgqual,
										   RelationGetDescr(tgrel));
		result->nargs = form->tgnargs;

		args = heap_getattr(tuple, Anum_pg_trigger_tgargs,
							RelationGetDescr(tgrel), &isnull);
		if (!isnull && form->tgnargs > 0)
		{
			bytea	   *val = DatumGetByteaPP(args);
			char	   *p = VARDATA_ANY(val);
			char	   *end = p + VARSIZE_ANY_EXHDR(val);

			/* tgargs is "first\0second\0"; take the first two */
			if (p < end)
			{
				result->column = pstrdup(p);
				p += strlen(p) + 1;
			}
			if (form->tgnargs > 1 && p < end)
				result->mode = pstrdup(p);
		}
	}

	systable_endscan(scan);
	table_close(tgrel, AccessShareLock);
	return found;
}

/*
 * A partition's guard is a clone of its parent's; follow the clones up and
 * return the table whose trigger was installed by enforce_version().
 */
static Oid
guard_trigger_root_table(Oid parentoid)
{
	Relation	tgrel;
	Oid			relid = InvalidOid;

	tgrel = table_open(TriggerRelationId, AccessShareLock);
	while (OidIsValid(parentoid))
	{
		ScanKeyData key;
		SysScanDesc scan;
		HeapTuple	tuple;

		ScanKeyInit(&key, Anum_pg_trigger_oid,
					BTEqualStrategyNumber, F_OIDEQ, ObjectIdGetDatum(parentoid));
		scan = systable_beginscan(tgrel, TriggerOidIndexId, true, NULL, 1, &key);
		tuple = systable_getnext(scan);
		if (!HeapTupleIsValid(tuple))
			elog(ERROR, "could not find trigger with OID %u", parentoid);
		relid = ((Form_pg_trigger) GETSTRUCT(tuple))->tgrelid;
		parentoid = ((Form_pg_trigger) GETSTRUCT(tuple))->tgparentid;
		systable_endscan(scan);
	}
	table_close(tgrel, AccessShareLock);
	return relid;
}

/* Is trig the guard enforce_version() would install with these arguments? */
static bool
guard_trigger_matches(const GuardTrigger *trig, Oid funcoid,
					  const char *column, const char *mode)
{
	return trig->funcoid == funcoid &&
		trig->tgtype == VERSION_GUARD_TGTYPE &&
		(trig->enabled == TRIGGER_FIRES_ON_ORIGIN ||
		 trig->enabled == TRIGGER_FIRES_ALWAYS) &&
		!trig->has_when &&
		!trig->has_columns &&
		trig->nargs == 2 &&
		trig->column != NULL && strcmp(trig->column, column) == 0 &&
		trig->mode != NULL && strcmp(trig->mode, mode) == 0;
}

/* schema.table, each part quoted as needed, for DDL text. */
static char *
qualified_relation_name(Oid relid)
{
	char	   *relname = get_rel_name(relid);
	char	   *nspname = get_namespace_name(get_rel_namespace(relid));

	if (relname == NULL || nspname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	return quote_qualified_identifier(nspname, relname);
}

/*
 * Check that the relation exists and that the current user owns it (the
 * functions run with the caller's privileges; installing or removing a
 * table's guard is the owner's decision).  Checked before any lock is taken,
 * so that a role that may not change the table cannot block it either.
 * Returns the pg_class row; the caller releases *classtup.
 */
static Form_pg_class
check_table_owner(Oid relid, HeapTuple *classtup)
{
	HeapTuple	tuple;
	Form_pg_class form;

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	form = (Form_pg_class) GETSTRUCT(tuple);

	if (!idem_relation_ownercheck(relid, GetUserId()))
		aclcheck_error(ACLCHECK_NOT_OWNER, get_relkind_objtype(form->relkind),
					   NameStr(form->relname));

	*classtup = tuple;
	return form;
}

/*
 * Validate the version column: a user column (not dropped, not a system
 * column) of type integer or bigint that a client can assign (neither
 * generated nor an identity column).
 */
static void
check_version_column(Oid relid, const char *relname, const char *column)
{
	HeapTuple	atttup;
	Form_pg_attribute attr;

	atttup = SearchSysCacheAttName(relid, column);
	if (!HeapTupleIsValid(atttup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						column, relname),
				 errhint("Name the version column as the second argument of idem.enforce_version().")));
	attr = (Form_pg_attribute) GETSTRUCT(atttup);

	if (attr->attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("cannot use system column \"%s\" as a version column",
						column),
				 errhint("Add a column of type integer or bigint to table \"%s\" for the version.",
						 relname)));

	if (attr->atttypid != INT4OID && attr->atttypid != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("version column \"%s\" of table \"%s\" is of type %s",
						column, relname, format_type_be(attr->atttypid)),
				 errdetail("A version column must be of type integer or bigint.")));

	if (attr->attgenerated != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("cannot use generated column \"%s\" as a version column",
						column),
				 errdetail("A generated column is computed after the version guard has run.")));

	if (attr->attidentity != '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
				 errmsg("cannot use identity column \"%s\" as a version column",
						column),
				 errdetail("Versions are counted per row; an identity column takes its values from a sequence.")));

	ReleaseSysCache(atttup);
}

/* Run one DDL statement through SPI, with the caller's privileges. */
static void
run_ddl(const char *sql)
{
	int			ret;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_idem: SPI_connect failed");
	ret = SPI_execute(sql, false, 0);
	if (ret != SPI_OK_UTILITY)
		elog(ERROR, "pg_idem: SPI_execute returned %s for: %s",
			 SPI_result_code_string(ret), sql);
	SPI_finish();
}

/*
 * Before a partitioned table gets its guard, remove the guards that its
 * partitions were given on their own: PostgreSQL clones the parent's
 * trigger into every partition and refuses when one already has a trigger
 * of that name.  The partitions stay guarded, now by the parent's clone.  A
 * trigger of that name that pg_idem did not create is left alone, and is an
 * error.  The caller holds a lock on the parent that keeps partitions from
 * being attached or detached meanwhile.
 */
static void
drop_partition_guards(Oid relid, Oid funcoid)
{
	List	   *children = find_all_inheritors(relid, NoLock, NULL);
	ListCell   *lc;

	foreach(lc, children)
	{
		Oid			child = lfirst_oid(lc);
		GuardTrigger trig;
		StringInfoData sql;

		if (child == relid || !find_guard_trigger(child, &trig) ||
			OidIsValid(trig.parentoid))
			continue;
		if (trig.funcoid != funcoid)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("trigger \"%s\" for relation \"%s\" already exists",
							VERSION_GUARD_TRIGGER, get_rel_name(child)),
					 errdetail("The trigger does not call idem.version_guard(); pg_idem did not create it."),
					 errhint("Rename or drop that trigger, then call idem.enforce_version() again.")));

		ereport(NOTICE,
				(errmsg("replacing the version guard of partition \"%s\" with the guard of \"%s\"",
						get_rel_name(child), get_rel_name(relid))));
		initStringInfo(&sql);
		appendStringInfo(&sql, "DROP TRIGGER %s ON %s",
						 quote_identifier(VERSION_GUARD_TRIGGER),
						 qualified_relation_name(child));
		run_ddl(sql.data);
	}
}

/*
 * idem.enforce_version(tbl, version_column, mode): validate, then install
 * the guard as trigger idem_version_guard.  Idempotent: when the table
 * already has the same guard nothing is done (and no strong lock is taken);
 * when it has the guard with another column or mode, the guard is replaced.
 * A partitioned table's guard is cloned to every partition, present and
 * future, by PostgreSQL itself.
 *
 * The DDL runs as SQL (not by calling CreateTrigger() directly) so that
 * event triggers, DDL logging and auditing see it like any other statement;
 * every name in it is quoted.
 */
PG_FUNCTION_INFO_V1(idem_enforce_version);
Datum
idem_enforce_version(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *column;
	char	   *modearg;
	const char *mode;
	VersionMode parsed_mode;
	HeapTuple	classtup;
	Form_pg_class classform;
	char		relkind;
	char	   *relname;
	Oid			funcoid;
	GuardTrigger trig;
	bool		exists;
	StringInfoData sql;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL",
						PG_ARGISNULL(0) ? "tbl" :
						PG_ARGISNULL(1) ? "version_column" : "mode")));
	relid = PG_GETARG_OID(0);
	column = NameStr(*PG_GETARG_NAME(1));
	modearg = text_to_cstring(PG_GETARG_TEXT_PP(2));

	if (!parse_version_mode(modearg, &parsed_mode))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid version mode \"%s\"", modearg),
				 errhint("Use 'strict' (an update must assign the version) or 'auto' (an update that does not gets the next version).")));
	mode = (parsed_mode == VERSION_MODE_STRICT) ? "strict" : "auto";

	classform = check_table_owner(relid, &classtup);
	relkind = classform->relkind;
	relname = pstrdup(NameStr(classform->relname));
	ReleaseSysCache(classtup);

	if (relkind == RELKIND_VIEW)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot enforce versions on view \"%s\"", relname),
				 errhint("Enforce versions on the view's base table: updates through the view are then checked too.")));
	if (relkind == RELKIND_FOREIGN_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot enforce versions on foreign table \"%s\"", relname),
				 errdetail("The stored version of a foreign row cannot be checked and written atomically."),
				 errhint("Enforce versions on the table in the remote database.")));
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot enforce versions on \"%s\"", relname),
				 errdetail("\"%s\" is not a table.", relname)));

	funcoid = version_guard_function_oid();
	check_guard_grants(funcoid, relname);

	/*
	 * Take the lock CREATE TRIGGER takes (it conflicts with itself, so
	 * concurrent calls on one table queue up), or the one DROP TRIGGER takes
	 * when a differently configured guard must be replaced.  Decide on a
	 * first unlocked look, then look again under the lock.
	 */
	exists = find_guard_trigger(relid, &trig);
	if (exists && trig.funcoid == funcoid && !OidIsValid(trig.parentoid) &&
		!guard_trigger_matches(&trig, funcoid, column, mode))
		LockRelationOid(relid, AccessExclusiveLock);
	else
		LockRelationOid(relid, ShareRowExclusiveLock);
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s\" was dropped concurrently", relname)));

	check_version_column(relid, relname, column);

	exists = find_guard_trigger(relid, &trig);
	if (exists && guard_trigger_matches(&trig, funcoid, column, mode))
		PG_RETURN_VOID();		/* already enforced as asked */

	if (exists && trig.funcoid != funcoid)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("trigger \"%s\" for relation \"%s\" already exists",
						VERSION_GUARD_TRIGGER, relname),
				 errdetail("The trigger does not call idem.version_guard(); pg_idem did not create it."),
				 errhint("Rename or drop that trigger, then call idem.enforce_version() again.")));

	if (exists && OidIsValid(trig.parentoid))
	{
		Oid			root = guard_trigger_root_table(trig.parentoid);

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("partition \"%s\" inherits its version guard from \"%s\"",
						relname, get_rel_name(root)),
				 errdetail("Its guard checks column \"%s\" in mode '%s'.",
						   trig.column ? trig.column : VERSION_GUARD_DEFAULT_COLUMN,
						   trig.mode ? trig.mode : VERSION_GUARD_DEFAULT_MODE),
				 errhint("Call idem.enforce_version() on \"%s\"; its partitions follow.",
						 get_rel_name(root))));
	}

	if (relkind == RELKIND_PARTITIONED_TABLE)
		drop_partition_guards(relid, funcoid);

	initStringInfo(&sql);
	if (exists)
	{
		appendStringInfo(&sql, "DROP TRIGGER %s ON %s",
						 quote_identifier(VERSION_GUARD_TRIGGER),
						 qualified_relation_name(relid));
		run_ddl(sql.data);
		resetStringInfo(&sql);
	}
	appendStringInfo(&sql,
					 "CREATE TRIGGER %s BEFORE INSERT OR UPDATE ON %s "
					 "FOR EACH ROW EXECUTE FUNCTION idem.version_guard(%s, %s)",
					 quote_identifier(VERSION_GUARD_TRIGGER),
					 qualified_relation_name(relid),
					 quote_literal_cstr(column),
					 quote_literal_cstr(mode));
	run_ddl(sql.data);

	PG_RETURN_VOID();
}

/*
 * idem.unenforce_version(tbl): remove the guard enforce_version()
 * installed.  Like DROP TRIGGER IF EXISTS, a table without a guard gets a
 * NOTICE and nothing else, so migrations can call it unconditionally.  A
 * partition's inherited guard can only be removed from the table it was
 * enforced on.
 */
PG_FUNCTION_INFO_V1(idem_unenforce_version);
Datum
idem_unenforce_version(PG_FUNCTION_ARGS)
{
	Oid			relid;
	HeapTuple	classtup;
	Form_pg_class classform;
	char	   *relname;
	GuardTrigger trig;
	StringInfoData sql;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("tbl must not be NULL")));
	relid = PG_GETARG_OID(0);

	classform = check_table_owner(relid, &classtup);
	relname = pstrdup(NameStr(classform->relname));
	ReleaseSysCache(classtup);

	/* The lock DROP TRIGGER takes, taken up front rather than upgraded to. */
	LockRelationOid(relid, AccessExclusiveLock);
	if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s\" was dropped concurrently", relname)));

	if (!find_guard_trigger(relid, &trig) ||
		trig.funcoid != version_guard_function_oid())
	{
		ereport(NOTICE,
				(errmsg("table \"%s\" has no version guard, skipping", relname)));
		PG_RETURN_VOID();
	}

	if (OidIsValid(trig.parentoid))
	{
		Oid			root = guard_trigger_root_table(trig.parentoid);

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("partition \"%s\" inherits its version guard from \"%s\"",
						relname, get_rel_name(root)),
				 errhint("Call idem.unenforce_version() on \"%s\", or detach the partition first.",
						 get_rel_name(root))));
	}

	initStringInfo(&sql);
	appendStringInfo(&sql, "DROP TRIGGER %s ON %s",
					 quote_identifier(VERSION_GUARD_TRIGGER),
					 qualified_relation_name(relid));
	run_ddl(sql.data);

	PG_RETURN_VOID();
}
