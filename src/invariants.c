/*-------------------------------------------------------------------------
 *
 * invariants.c
 *	  Commit-time invariants: idem.enforce_invariant(),
 *	  idem.unenforce_invariant(), idem.check_invariants(), the trigger that
 *	  records which groups a transaction touched, the check that runs at
 *	  COMMIT and PREPARE TRANSACTION, and the event triggers that keep
 *	  invariants from outliving what they read.
 *
 * An invariant is a query over one group of rows ("at least one doctor is
 * on call for shift $1") that must be true whenever a transaction that
 * wrote the group commits.  A check inside the writing transaction alone
 * (a PL/pgSQL constraint trigger, deferred or not) is not enough: two
 * transactions that each take a different doctor off call both see the
 * other doctor still on call in their snapshot, both pass, and the commit
 * of both leaves nobody on call (write skew).  That is true at READ
 * COMMITTED and REPEATABLE READ; SERIALIZABLE catches it only if every
 * writer runs SERIALIZABLE.
 *
 * How this file prevents it, at every isolation level:
 *
 * 1. Every watched table carries one row trigger (idem_invariant, shared by
 *    all invariants on the table).  It computes, for each invariant
 *    watching the table, the group of the old and the new row and adds it
 *    to a per-transaction, deduplicated hash set.  It runs no query: the
 *    table's invariants come from a backend-local cache that relcache
 *    invalidations reset.  A statement writing a million rows of ten
 *    groups leaves ten entries.
 *
 * 2. At PRE_COMMIT and PRE_PREPARE (and in idem.check_invariants()), every
 *    touched group is checked.  Before checking, the transaction takes one
 *    heavyweight lock per (invariant, group): an advisory-type LOCKTAG
 *    (database, 64-bit hash of invariant name and group values, field4 =
 *    INVARIANT_LOCKTAG_GROUP) in ExclusiveLock, held until transaction
 *    end.  Only then is a snapshot taken -- the latest one, not the
 *    transaction's -- and the checks run against it, which shows every
 *    commit that finished before the lock was granted plus the
 *    transaction's own writes.
 *
 *    Why that is enough: PostgreSQL releases a committing transaction's
 *    locks only after its commit is visible (CommitTransaction calls
 *    ProcArrayEndTransaction before ResourceOwnerRelease; COMMIT PREPARED
 *    removes the proc from the ProcArray before releasing the prepared
 *    transaction's locks).  So of two transactions that touched group G,
 *    the second to get G's lock sees the first's commit: it checks exactly
 *    the state its own commit will produce, because any other writer of G
 *    must also pass through G's lock before it can commit.  Committed
 *    states of G are thereby serialized and each one was checked.  This
 *    holds whatever the isolation level, since it never relies on the
 *    transaction snapshot; under SERIALIZABLE, SSI may in addition raise
 *    40001, as it may anywhere.
 *
 *    Different groups hash to different locks, so their checks never wait
 *    for each other (a 64-bit hash collision makes two groups share a lock:
 *    a needless wait, never a wrong answer).  Each transaction takes its
 *    locks in ascending hash order and holds no other lock a checker could
 *    want while it waits, so checks cannot deadlock with each other.
 *    Locks taken at PREPARE TRANSACTION pass to the prepared transaction
 *    like any transaction-level lock and are released at COMMIT/ROLLBACK
 *    PREPARED, after the commit is visible.
 *
 *    One lock per group would let a bulk load touching a million groups
 *    exhaust the shared lock table, so locking has two granularities
 *    (lock_checked_groups()): every committer first takes a lock on each
 *    whole invariant it checks, ShareLock normally and ExclusiveLock when it
 *    touched more than max_locks_per_transaction of the invariant's groups,
 *    in which case it takes no group lock for it.  Two committers of one
 *    group still always conflict, and whole-invariant locks come first in
 *    one global order, so the argument above is unchanged; a bulk commit
 *    merely makes the invariant's other commits wait for it.
 *
 *    idem.check_invariants() checks the same groups against the same kind
 *    of snapshot but takes no lock: it is an early answer, and the commit
 *    checks again under the locks.  Holding group locks from the middle of
 *    a transaction would let a transaction that later waits for a row lock
 *    deadlock with a committer waiting for the group lock.
 *
 * 3. A check runs as the role that declared the invariant, with
 *    search_path = pg_catalog, pg_temp, transaction_read_only on, and in a
 *    security-restricted operation, through a plan prepared once per
 *    backend.  False, NULL or no row raise ID030; an error of the check
 *    itself aborts the commit with that error.
 *
 * 4. idem.enforce_invariant() takes SHARE ROW EXCLUSIVE on every watched
 *    table (what CREATE TRIGGER takes): no writer of those tables can be in
 *    progress while it installs the trigger and validates the existing
 *    groups (against the latest snapshot), and every later writer sees the
 *    trigger and the invariant.  It parses and analyses the check and
 *    refuses anything but one read-only SELECT returning one boolean that
 *    reads only watched tables (views are looked through).
 *
 * 5. Event triggers keep invariants whole: when a DROP removes something an
 *    invariant needs (a watched table or column, anything its check reads),
 *    the invariant is dropped with a NOTICE, as DROP ... CASCADE drops a
 *    view; an ALTER that would make a check fail to analyse (a rename, a
 *    type change) is refused; DROP TRIGGER of the invariants' triggers is
 *    refused while an invariant needs them; partitions created or attached
 *    under a watched table get the TRUNCATE guard.  TRUNCATE of a watched
 *    table is refused (it fires no row trigger, so its groups could not be
 *    checked).
 *
 * The catalog is two extension tables, idem.invariant and
 * idem.invariant_watch, registered with pg_extension_config_dump(); the
 * triggers on user tables are ordinary triggers, dumped with their tables.
 *
 * IDENTIFICATION
 *	  src/invariants.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/catalog.h"
#include "catalog/dependency.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_inherits.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "nodes/parsenodes.h"
#include "parser/parse_func.h"
#include "parser/parser.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "tcop/deparse_utility.h"
#include "tcop/tcopprot.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "compat.h"
#include "invariants.h"
#include "privileges.h"
#include "pg_idem.h"
#include "spi_util.h"

/* The triggers pg_idem puts on watched tables. */
#define ROW_TRIGGER			"idem_invariant"
#define TRUNCATE_TRIGGER	"idem_invariant_truncate"

/*
 * locktag_field4 of the advisory-type locks taken here.  pg_advisory_lock()
 * uses 1 and 2, so these never meet a user's advisory lock; pg_locks shows
 * them as locktype advisory with objsubid 7472 (groups), 7473 (names being
 * declared) and 7474 (whole invariants).
 */
#define INVARIANT_LOCKTAG_GROUP	0x1D30
#define INVARIANT_LOCKTAG_NAME	0x1D31
#define INVARIANT_LOCKTAG_WHOLE	0x1D32

/* At most this many group columns: $1..$32. */
#define INVARIANT_MAX_COLUMNS	32

/* How much of one group value a DETAIL shows. */
#define INVARIANT_DETAIL_VALUE_BYTES	100

/* The hash of a NULL group value (any constant; must never change per run). */
#define INVARIANT_NULL_HASH		UINT64CONST(0x9e3779b97f4a7c15)

/* One watched table of an invariant, as the catalog names it. */
typedef struct InvWatch
{
	Oid			relid;
	char	  **columns;		/* nparams column names, in $ order */
} InvWatch;

/* One invariant, as loaded from idem.invariant and idem.invariant_watch. */
typedef struct Invariant
{
	char	   *name;
	uint64		name_hash;
	char	   *check;
	char	   *message;		/* HINT of a violation, or NULL */
	bool		valid;
	Oid			owner;
	int			nwatch;
	int			watch_cap;
	InvWatch   *watch;			/* sorted by relid */
	int			nparams;

	/*
	 * Types of $1..$n, from the first watched table.  resolved is false when
	 * a watched table or column is missing (only possible while event
	 * triggers are disabled); such an invariant cannot be checked.
	 */
	bool		resolved;
	bool		broken_catalog; /* column counts disagree or exceed the limit */
	Oid		   *types;
	Oid		   *collations;
	FmgrInfo  **hashfn;			/* the types' extended hash functions */
} Invariant;

/* What the row trigger does for one invariant on one relation. */
typedef struct RelItem
{
	Invariant  *inv;
	Oid			watched;		/* the watched table (the relation or an ancestor) */
	AttrNumber *attnums;		/* group columns in the relation */
	int16	   *typlen;
	bool	   *typbyval;
	Oid		   *types;
} RelItem;

/* Everything the row trigger needs for one relation. */
typedef struct RelEntry
{
	Oid			relid;			/* hash key */
	int			nitems;
	RelItem    *items;
} RelEntry;

/* A kept plan of a check, keyed by invariant name. */
typedef struct PlanEntry
{
	char		name[IDEM_MAX_NAME_BYTES + 1];	/* hash key */
	char	   *check;			/* text the plan was prepared from */
	Oid			owner;
	int			nparams;
	Oid			types[INVARIANT_MAX_COLUMNS];
	SPIPlanPtr	plan;
} PlanEntry;

/* One touched group of one invariant. */
typedef struct TouchGroup
{
	struct TouchGroup *next;	/* next group with the same hash */
	char	   *invname;
	Oid			watched;		/* table whose column names the DETAIL uses */
	int			n;
	Oid		   *types;
	int16	   *typlen;
	bool	   *typbyval;
	Datum	   *values;
	bool	   *nulls;
} TouchGroup;

typedef struct TouchEntry
{
	uint64		hash;			/* hash key */
	TouchGroup *groups;
} TouchEntry;

/* A group about to be checked. */
typedef struct CheckItem
{
	uint64		lockhash;
	Invariant  *inv;
	TouchGroup *group;
	Datum	   *values;			/* converted to the invariant's types */
	bool	   *nulls;
} CheckItem;

/* The check environment a run of checks is in (check_env_switch). */
typedef struct CheckEnv
{
	bool		active;
	Oid			owner;
	int			nestlevel;
	Oid			save_userid;
	int			save_sec;
} CheckEnv;

/* How many groups of one invariant a transaction touched, and how it locks. */
typedef struct InvLockCount
{
	Invariant  *inv;
	int			groups;
	bool		whole;			/* lock the whole invariant, not each group */
} InvLockCount;

/* For the error context of a running check. */
typedef struct CheckContext
{
	Invariant  *inv;
	Oid			watched;
	Datum	   *values;
	bool	   *nulls;
} CheckContext;

/* A watched table as enforce_invariant() received it. */
typedef struct WatchSpec
{
	char	   *given;			/* the key as written */
	Oid			relid;
	int			ncolumns;
	char	   *columns[INVARIANT_MAX_COLUMNS];
	Oid			types[INVARIANT_MAX_COLUMNS];
	Oid			collations[INVARIANT_MAX_COLUMNS];
} WatchSpec;

/* ---- backend state ---- */

/* The catalog cache: every invariant of this database. */
static MemoryContext inv_cxt = NULL;
static List *inv_list = NIL;	/* of Invariant * */
static HTAB *inv_by_rel = NULL; /* relid -> RelEntry, filled lazily */
static HTAB *inv_watched = NULL;	/* relids watched by some invariant */
static bool inv_stale = true;
static uint64 inv_generation = 0;	/* counts reloads, for fn_extra caches */
static int	inv_busy = 0;		/* > 0 while pointers into the cache are held */
static Oid	inv_catalog_relid = InvalidOid;
static Oid	inv_watch_relid = InvalidOid;

/* Kept plans, surviving cache reloads (the plan cache revalidates them). */
static HTAB *plan_cache = NULL;

/* The groups this transaction touched (in TopTransactionContext). */
static MemoryContext touch_cxt = NULL;
static HTAB *touched = NULL;

/* True while checks run: they must not recurse into checking. */
static bool checking = false;

/* True while enforce_invariant() checks the groups that already exist. */
static bool validating_existing = false;

/* > 0 while this file runs DDL itself: the event triggers stand aside. */
static int	own_ddl_depth = 0;

/* In the sql_drop event trigger: the tables the DROP removed, for NOTICEs. */
static List *dropped_rel_oids = NIL;
static List *dropped_rel_names = NIL;

/* ---- prototypes ---- */
static void inv_relcache_callback(Datum arg, Oid relid);
static void inv_xact_callback(XactEvent event, void *arg);
static void inv_cache_ensure(void);
static void inv_cache_load(void);
static void inv_cache_load_guts(void);
static Invariant *inv_lookup(const char *name);
static RelEntry *rel_entry(Oid relid);
static bool rel_is_covered(Oid relid);
static bool relid_is_watched(Oid relid);
static uint64 name_hash(const char *name);
static uint64 group_hash(Invariant *inv, Datum *values, bool *nulls);
static void touch_row(RelEntry *re, TupleTableSlot *slot);
static void touch_add(RelItem *item, Datum *values, bool *nulls, uint64 hash);
static void check_touched_groups(bool take_locks);
static void check_touched_groups_guts(bool take_locks);
static int	check_item_cmp(const void *a, const void *b);
static void lock_checked_groups(CheckItem *items, int nitems);
static int	inv_lock_count_cmp(const void *a, const void *b);
static int	check_item_owner_cmp(const void *a, const void *b);
static void check_group(CheckEnv *env, Invariant *inv, Datum *values, bool *nulls,
						Oid watched);
static PlanEntry *plan_for(Invariant *inv);
static int	enter_check_environment(Oid owner, Oid *save_userid, int *save_sec);
static void leave_check_environment(int nestlevel, Oid save_userid, int save_sec);
static void check_env_switch(CheckEnv *env, Oid owner);
static void check_env_leave(CheckEnv *env);
static void check_error_callback(void *arg);
static char *group_description(Invariant *inv, Oid watched, Datum *values,
							   bool *nulls, bool with_columns);
static char **watch_columns_of(Invariant *inv, Oid watched);
static void check_invariant_name(text *name, char **result);
static List *parse_watch(Jsonb *watch);
static void resolve_watch_columns(WatchSpec *w);
static Query *analyse_check(const char *name, const char *check, int nparams,
							Oid *types, List *watched_relids);
static bool analyse_walker(Node *node, List **relids);
static void analyse_error_callback(void *arg);
static bool relid_covered_by(Oid relid, List *watched_relids);
static void validate_existing(Invariant *inv);
static Oid	extension_owner(void);
static void run_sql_as(Oid role, const char *sql, int nargs, Oid *argtypes,
					   Datum *values, const char *nulls);
static void run_ddl_as_owner(const char *sql);
static char *qualified_name(Oid relid);
static bool trigger_by_name(Oid relid, const char *tgname, Oid *tgfoid, Oid *tgparentid);
static bool find_our_trigger(Oid relid, const char *tgname, bool *is_clone);
static void ensure_triggers(Oid relid);
static bool attached_partition_has_rows(Oid parent);
static Oid	rel_owner(Oid relid);
static void ensure_truncate_triggers(Oid relid);
static void drop_triggers(Oid relid);
static void sync_triggers(List *old_relids);
static void invalidate_relations(List *relids);
static char *invariant_broken(Invariant *inv);
static void collect_dropped_tables(void);
static void judge_invariants_after_drop(List **broken, List **reasons,
										List **old_relids);
static char *analyse_in_subtransaction(Invariant *inv, Oid *types, List *relids);
static void delete_invariant(const char *name);
static void lock_invariant_name(const char *name);
static void refuse_while_checking(const char *what);

PG_FUNCTION_INFO_V1(idem_invariant_touch);
PG_FUNCTION_INFO_V1(idem_check_invariants);
PG_FUNCTION_INFO_V1(idem_enforce_invariant);
PG_FUNCTION_INFO_V1(idem_unenforce_invariant);
PG_FUNCTION_INFO_V1(idem_invariant_sql_drop);
PG_FUNCTION_INFO_V1(idem_invariant_ddl_end);
PG_FUNCTION_INFO_V1(idem_invariant_drop_start);

/*
 * Register the callbacks.  Called from _PG_init in every process that loads
 * the library.
 */
void
idem_invariants_init(void)
{
	CacheRegisterRelcacheCallback(inv_relcache_callback, (Datum) 0);
	RegisterXactCallback(inv_xact_callback, NULL);
}

/* ====================================================================
 * The catalog cache
 * ====================================================================
 */

/*
 * A relcache invalidation of a watched table (ALTER, DROP, CREATE or DROP
 * TRIGGER), of the catalog (enforce_invariant() and unenforce_invariant()
 * send one at commit), or of everything, makes the cache stale.  Only a
 * flag is set here: the cache may be in use (inv_busy), and is reloaded at
 * its next use when it is not.
 */
static void
inv_relcache_callback(Datum arg, Oid relid)
{
	if (inv_stale)
		return;
	if (!OidIsValid(relid) || relid == inv_catalog_relid ||
		relid == inv_watch_relid)
		inv_stale = true;
	else if (inv_by_rel != NULL &&
			 hash_search(inv_by_rel, &relid, HASH_FIND, NULL) != NULL)
		inv_stale = true;
	else if (inv_watched != NULL &&
			 hash_search(inv_watched, &relid, HASH_FIND, NULL) != NULL)
		inv_stale = true;
}

/* Reload the cache if it is stale and nobody holds pointers into it. */
static void
inv_cache_ensure(void)
{
	if (inv_stale && inv_busy == 0)
		inv_cache_load();
}

/*
 * Load every invariant of this database from the catalog tables, with the
 * latest snapshot: an invariant committed after this transaction's snapshot
 * was taken (possible under REPEATABLE READ) must still be enforced, as
 * PostgreSQL's own catalogs are read with a fresh snapshot.  Without the
 * extension in this database the cache is empty.
 */
static void
inv_cache_load(void)
{
	PG_TRY();
	{
		inv_cache_load_guts();
	}
	PG_CATCH();
	{
		/* A half-loaded cache must not be used. */
		inv_stale = true;
		PG_RE_THROW();
	}
	PG_END_TRY();
}

/* The work of inv_cache_load(). */
static void
inv_cache_load_guts(void)
{
	Oid			nsp;
	Snapshot	snap;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext old;
	HASHCTL		ctl;
	ListCell   *lc;

	if (inv_cxt == NULL)
		inv_cxt = AllocSetContextCreate(TopMemoryContext,
										"pg_idem invariants",
										ALLOCSET_SMALL_SIZES);
	MemoryContextReset(inv_cxt);
	inv_list = NIL;
	inv_by_rel = NULL;
	inv_watched = NULL;
	inv_catalog_relid = InvalidOid;
	inv_watch_relid = InvalidOid;

	/* Invalidations that arrive while loading make the result stale again. */
	inv_stale = false;
	inv_generation++;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(RelEntry);
	ctl.hcxt = inv_cxt;
	inv_by_rel = hash_create("pg_idem invariants by relation", 32, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	ctl.entrysize = sizeof(Oid);
	inv_watched = hash_create("pg_idem watched relations", 32, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	/*
	 * Without the catalog (no extension in this database, or one from
	 * before invariants), no invalidation could tell this backend when it
	 * appears: the empty cache stays stale, and is looked at again on each
	 * use.  Only the trigger and the commit of a transaction that used it
	 * get here, so a database without invariants pays nothing.
	 */
	if (!OidIsValid(get_extension_oid("pg_idem", true)) ||
		!OidIsValid(nsp = get_namespace_oid("idem", true)) ||
		!OidIsValid(inv_catalog_relid = get_relname_relid("invariant", nsp)) ||
		!OidIsValid(inv_watch_relid = get_relname_relid("invariant_watch", nsp)))
	{
		inv_catalog_relid = InvalidOid;
		inv_watch_relid = InvalidOid;
		inv_stale = true;
		return;
	}

	snap = RegisterSnapshot(GetLatestSnapshot());

	/* idem.invariant (name, check, message, valid, owner) */
	rel = table_open(inv_catalog_relid, AccessShareLock);
	{
		TupleDesc	desc = RelationGetDescr(rel);
		AttrNumber	a_name = get_attnum(inv_catalog_relid, "name");
		AttrNumber	a_check = get_attnum(inv_catalog_relid, "check");
		AttrNumber	a_message = get_attnum(inv_catalog_relid, "message");
		AttrNumber	a_valid = get_attnum(inv_catalog_relid, "valid");
		AttrNumber	a_owner = get_attnum(inv_catalog_relid, "owner");

		scan = table_beginscan(rel, snap, 0, NULL);
		while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		{
			Invariant  *inv;
			bool		isnull;
			Datum		d;

			old = MemoryContextSwitchTo(inv_cxt);
			inv = palloc0(sizeof(Invariant));
			inv->name = TextDatumGetCString(heap_getattr(tup, a_name, desc, &isnull));
			inv->name_hash = name_hash(inv->name);
			inv->check = TextDatumGetCString(heap_getattr(tup, a_check, desc, &isnull));
			d = heap_getattr(tup, a_message, desc, &isnull);
			inv->message = isnull ? NULL : TextDatumGetCString(d);
			inv->valid = DatumGetBool(heap_getattr(tup, a_valid, desc, &isnull));
			inv->owner = DatumGetObjectId(heap_getattr(tup, a_owner, desc, &isnull));
			inv->nparams = -1;
			inv_list = lappend(inv_list, inv);
			MemoryContextSwitchTo(old);
		}
		table_endscan(scan);
	}
	table_close(rel, AccessShareLock);

	/* idem.invariant_watch (invariant, tbl, columns) */
	rel = table_open(inv_watch_relid, AccessShareLock);
	{
		TupleDesc	desc = RelationGetDescr(rel);
		AttrNumber	a_inv = get_attnum(inv_watch_relid, "invariant");
		AttrNumber	a_tbl = get_attnum(inv_watch_relid, "tbl");
		AttrNumber	a_columns = get_attnum(inv_watch_relid, "columns");

		scan = table_beginscan(rel, snap, 0, NULL);
		while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
		{
			bool		isnull;
			char	   *invname;
			Invariant  *inv;
			Datum	   *elems;
			int			nelems;
			InvWatch   *w;

			invname = TextDatumGetCString(heap_getattr(tup, a_inv, desc, &isnull));
			inv = inv_lookup(invname);
			if (inv == NULL)
				continue;		/* both tables are written together */

			deconstruct_array(DatumGetArrayTypeP(heap_getattr(tup, a_columns, desc, &isnull)),
							  NAMEOID, NAMEDATALEN, false, TYPALIGN_CHAR,
							  &elems, NULL, &nelems);

			old = MemoryContextSwitchTo(inv_cxt);
			if (inv->watch == NULL)
			{
				inv->watch_cap = 4;
				inv->watch = palloc(sizeof(InvWatch) * inv->watch_cap);
			}
			else if (inv->nwatch == inv->watch_cap)
			{
				inv->watch_cap *= 2;
				inv->watch = repalloc(inv->watch, sizeof(InvWatch) * inv->watch_cap);
			}
			w = &inv->watch[inv->nwatch++];
			w->relid = DatumGetObjectId(heap_getattr(tup, a_tbl, desc, &isnull));
			w->columns = palloc(sizeof(char *) * Max(nelems, 1));
			for (int i = 0; i < nelems; i++)
				w->columns[i] = pstrdup(NameStr(*DatumGetName(elems[i])));
			/*
			 * enforce_invariant() writes one column count within the limit;
			 * a catalog edited by hand that does not is never checked
			 * (resolved stays false), rather than overrunning arrays.
			 */
			if (inv->nparams < 0)
				inv->nparams = nelems;
			if (nelems != inv->nparams || nelems > INVARIANT_MAX_COLUMNS)
				inv->broken_catalog = true;
			hash_search(inv_watched, &w->relid, HASH_ENTER, NULL);
			MemoryContextSwitchTo(old);
		}
		table_endscan(scan);
	}
	table_close(rel, AccessShareLock);
	UnregisterSnapshot(snap);

	/*
	 * Sort each invariant's tables by OID (a stable order for the DETAIL and
	 * the type resolution) and resolve the parameter types from the first
	 * one that exists.
	 */
	foreach(lc, inv_list)
	{
		Invariant  *inv = (Invariant *) lfirst(lc);

		if (inv->nparams < 0)
			inv->nparams = 0;
		for (int i = 1; i < inv->nwatch; i++)
		{
			InvWatch	tmp = inv->watch[i];
			int			j = i - 1;

			while (j >= 0 && inv->watch[j].relid > tmp.relid)
			{
				inv->watch[j + 1] = inv->watch[j];
				j--;
			}
			inv->watch[j + 1] = tmp;
		}

		old = MemoryContextSwitchTo(inv_cxt);
		inv->types = palloc0(sizeof(Oid) * Max(inv->nparams, 1));
		inv->collations = palloc0(sizeof(Oid) * Max(inv->nparams, 1));
		inv->hashfn = palloc0(sizeof(FmgrInfo *) * Max(inv->nparams, 1));
		inv->resolved = (inv->nwatch > 0 && !inv->broken_catalog);
		if (inv->broken_catalog)
			inv->nparams = 0;
		for (int w = 0; w < inv->nwatch && inv->resolved; w++)
		{
			for (int i = 0; i < inv->nparams; i++)
			{
				HeapTuple	atttup = SearchSysCacheAttName(inv->watch[w].relid,
														   inv->watch[w].columns[i]);
				Form_pg_attribute att;

				if (!HeapTupleIsValid(atttup))
				{
					inv->resolved = false;
					break;
				}
				att = (Form_pg_attribute) GETSTRUCT(atttup);
				if (w == 0)
				{
					TypeCacheEntry *tc = lookup_type_cache(att->atttypid,
														   TYPECACHE_HASH_EXTENDED_PROC_FINFO);

					inv->types[i] = att->atttypid;
					inv->collations[i] = att->attcollation;
					if (!OidIsValid(tc->hash_extended_proc))
						inv->resolved = false;
					inv->hashfn[i] = &tc->hash_extended_proc_finfo;
				}
				else if (att->atttypid != inv->types[i])
					inv->resolved = false;
				ReleaseSysCache(atttup);
			}
		}
		MemoryContextSwitchTo(old);
	}
}

/* The invariant of that name in the cache, or NULL. */
static Invariant *
inv_lookup(const char *name)
{
	ListCell   *lc;

	foreach(lc, inv_list)
	{
		Invariant  *inv = (Invariant *) lfirst(lc);

		if (strcmp(inv->name, name) == 0)
			return inv;
	}
	return NULL;
}

/* Is relid named in some invariant's watch? */
static bool
relid_is_watched(Oid relid)
{
	return inv_watched != NULL &&
		hash_search(inv_watched, &relid, HASH_FIND, NULL) != NULL;
}

/*
 * Is relid watched, itself or through a partitioned ancestor (a partition's
 * rows fire the trigger cloned from its parent)?
 */
static bool
rel_is_covered(Oid relid)
{
	return rel_entry(relid)->nitems > 0;
}

/*
 * What the row trigger must do for a relation: for every invariant that
 * watches it or one of its partition ancestors, where the group columns are
 * in this relation (a partition may order its columns differently).
 * Computed on first use and kept until the cache is reloaded.
 */
static RelEntry *
rel_entry(Oid relid)
{
	RelEntry   *re;
	bool		found;
	List	   *ancestors = NIL;
	ListCell   *lc;
	MemoryContext old;
	int			max;

	int			nitems = 0;
	RelItem    *items;

	re = hash_search(inv_by_rel, &relid, HASH_FIND, &found);
	if (found)
		return re;

	/*
	 * Build the entry aside and enter it only when complete: an error half
	 * way must not leave an entry that forgets an invariant.
	 */
	if (list_length(inv_list) > 0 && get_rel_relispartition(relid))
		ancestors = get_partition_ancestors(relid);

	old = MemoryContextSwitchTo(inv_cxt);
	max = 0;
	foreach(lc, inv_list)
		max += ((Invariant *) lfirst(lc))->nwatch;
	items = palloc0(sizeof(RelItem) * Max(max, 1));

	foreach(lc, inv_list)
	{
		Invariant  *inv = (Invariant *) lfirst(lc);

		for (int w = 0; w < inv->nwatch; w++)
		{
			RelItem    *item;

			if (inv->watch[w].relid != relid &&
				!list_member_oid(ancestors, inv->watch[w].relid))
				continue;

			item = &items[nitems++];
			item->inv = inv;
			item->watched = inv->watch[w].relid;
			item->attnums = palloc0(sizeof(AttrNumber) * Max(inv->nparams, 1));
			item->typlen = palloc0(sizeof(int16) * Max(inv->nparams, 1));
			item->typbyval = palloc0(sizeof(bool) * Max(inv->nparams, 1));
			item->types = palloc0(sizeof(Oid) * Max(inv->nparams, 1));
			for (int i = 0; i < inv->nparams; i++)
			{
				HeapTuple	atttup = SearchSysCacheAttName(relid, inv->watch[w].columns[i]);
				Form_pg_attribute att;

				if (!HeapTupleIsValid(atttup))
					ereport(ERROR,
							(errcode(ERRCODE_UNDEFINED_COLUMN),
							 errmsg("column \"%s\" of relation \"%s\" watched by invariant \"%s\" does not exist",
									inv->watch[w].columns[i], get_rel_name(relid),
									inv->name),
							 errhint("Drop the invariant with idem.unenforce_invariant() and declare it again.")));
				att = (Form_pg_attribute) GETSTRUCT(atttup);
				item->attnums[i] = att->attnum;
				item->typlen[i] = att->attlen;
				item->typbyval[i] = att->attbyval;
				item->types[i] = att->atttypid;
				ReleaseSysCache(atttup);
			}
		}
	}
	MemoryContextSwitchTo(old);

	re = hash_search(inv_by_rel, &relid, HASH_ENTER, &found);
	re->nitems = nitems;
	re->items = items;
	return re;
}

/* The hash of an invariant's name: the start of every group hash. */
static uint64
name_hash(const char *name)
{
	return hash_bytes_extended((const unsigned char *) name, strlen(name),
							   UINT64CONST(0x1D30));
}

/*
 * The 64-bit hash of (invariant, group values), computed with the
 * invariant's types' extended hash functions, so values equal under the
 * type's hash opclass (1.0 and 1.00, say) hash alike.
 */
static uint64
group_hash(Invariant *inv, Datum *values, bool *nulls)
{
	uint64		h = inv->name_hash;

	for (int i = 0; i < inv->nparams; i++)
	{
		uint64		vh;

		if (nulls[i])
			vh = INVARIANT_NULL_HASH;
		else
			vh = DatumGetUInt64(FunctionCall2Coll(inv->hashfn[i],
												  inv->collations[i],
												  values[i],
												  Int64GetDatum(0)));
		h = hash_combine64(h, vh);
	}
	return h;
}

/* ====================================================================
 * The trigger: which groups did this transaction touch?
 * ====================================================================
 */

/* What the trigger keeps in fn_extra: the entry of the last relation. */
typedef struct TouchFnCache
{
	uint64		generation;
	Oid			relid;
	RelEntry   *entry;
} TouchFnCache;

/*
 * The trigger on every watched table (and, cloned, on its partitions).
 *
 * AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW: add the group of the new
 * row (INSERT, UPDATE) and of the old row (UPDATE, DELETE) to the set of
 * groups this transaction touched, for every invariant watching the table.
 * MERGE and COPY fire the same row triggers.  An AFTER trigger sees the row
 * as finally written, after every BEFORE trigger changed it.
 *
 * BEFORE TRUNCATE FOR EACH STATEMENT: refuse while an invariant watches the
 * table.
 */
Datum
idem_invariant_touch(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TriggerEvent event;
	Relation	rel;
	Oid			relid;
	TouchFnCache *fc;
	RelEntry   *re;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("idem.invariant_touch() can only be called as a trigger")));

	event = trigdata->tg_event;
	rel = trigdata->tg_relation;
	relid = RelationGetRelid(rel);

	if (TRIGGER_FIRED_BY_TRUNCATE(event))
	{
		inv_cache_ensure();
		re = rel_entry(relid);
		if (re->nitems > 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot truncate table \"%s\"", RelationGetRelationName(rel)),
					 errdetail("Invariant \"%s\" watches the table, and TRUNCATE removes rows without firing row triggers, so the groups it empties could not be checked.",
							   re->items[0].inv->name),
					 errhint("Delete the rows with DELETE, which checks the invariant, or drop the invariant with idem.unenforce_invariant() first."),
					 errtable(rel)));
		return PointerGetDatum(NULL);
	}

	if (!TRIGGER_FIRED_AFTER(event) || !TRIGGER_FIRED_FOR_ROW(event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("idem.invariant_touch() must be fired AFTER INSERT OR UPDATE OR DELETE FOR EACH ROW, or BEFORE TRUNCATE"),
				 errdetail("Trigger \"%s\" on table \"%s\" fires otherwise.",
						   trigdata->tg_trigger->tgname, RelationGetRelationName(rel)),
				 errhint("Declare invariants with idem.enforce_invariant(), which installs the trigger.")));

	inv_cache_ensure();
	fc = (TouchFnCache *) fcinfo->flinfo->fn_extra;
	if (fc == NULL)
	{
		fc = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(TouchFnCache));
		fcinfo->flinfo->fn_extra = fc;
	}
	if (fc->entry == NULL || fc->generation != inv_generation || fc->relid != relid)
	{
		fc->entry = rel_entry(relid);
		fc->relid = relid;
		fc->generation = inv_generation;
	}
	re = fc->entry;
	if (re->nitems == 0)
		return PointerGetDatum(NULL);	/* a table no invariant watches */

	if (TRIGGER_FIRED_BY_INSERT(event))
		touch_row(re, trigdata->tg_trigslot);
	else if (TRIGGER_FIRED_BY_DELETE(event))
		touch_row(re, trigdata->tg_trigslot);
	else if (TRIGGER_FIRED_BY_UPDATE(event))
	{
		touch_row(re, trigdata->tg_trigslot);
		touch_row(re, trigdata->tg_newslot);
	}
	return PointerGetDatum(NULL);
}

/* Add the groups of one row, one per invariant watching its table. */
static void
touch_row(RelEntry *re, TupleTableSlot *slot)
{
	for (int k = 0; k < re->nitems; k++)
	{
		RelItem    *item = &re->items[k];
		Invariant  *inv = item->inv;
		Datum		values[INVARIANT_MAX_COLUMNS];
		bool		nulls[INVARIANT_MAX_COLUMNS];

		if (!inv->resolved)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("invariant \"%s\" cannot be checked", inv->name),
					 errdetail("A table or column it watches no longer exists, or its group columns no longer have one type."),
					 errhint("Drop the invariant with idem.unenforce_invariant() and declare it again.")));

		for (int i = 0; i < inv->nparams; i++)
		{
			values[i] = slot_getattr(slot, item->attnums[i], &nulls[i]);
			/* Hash and compare a value's plain form, never a TOAST pointer. */
			if (!nulls[i] && item->typlen[i] == -1 &&
				VARATT_IS_EXTENDED(DatumGetPointer(values[i])))
				values[i] = PointerGetDatum(detoast_attr((struct varlena *)
														 DatumGetPointer(values[i])));
		}
		touch_add(item, values, nulls, group_hash(inv, values, nulls));
	}
}

/*
 * Remember one group, unless it is already in the set.  The set lives in
 * TopTransactionContext: groups touched in a subtransaction that rolls back
 * stay in it, so the commit may check a group nobody changed -- harmless,
 * where forgetting a touched one would not be.
 */
static void
touch_add(RelItem *item, Datum *values, bool *nulls, uint64 hash)
{
	Invariant  *inv = item->inv;
	TouchEntry *entry;
	TouchGroup *g;
	bool		found;
	MemoryContext old;
	int			n = inv->nparams;

	if (touched == NULL)
	{
		HASHCTL		ctl;

		touch_cxt = AllocSetContextCreate(TopTransactionContext,
										  "pg_idem touched groups",
										  ALLOCSET_DEFAULT_SIZES);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(uint64);
		ctl.entrysize = sizeof(TouchEntry);
		ctl.hcxt = touch_cxt;
		touched = hash_create("pg_idem touched groups", 64, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	entry = hash_search(touched, &hash, HASH_ENTER, &found);
	if (!found)
		entry->groups = NULL;

	for (g = entry->groups; g != NULL; g = g->next)
	{
		bool		same = (g->n == n && strcmp(g->invname, inv->name) == 0);

		for (int i = 0; same && i < n; i++)
		{
			if (g->types[i] != item->types[i] || g->nulls[i] != nulls[i])
				same = false;
			else if (!nulls[i] &&
					 !datumIsEqual(g->values[i], values[i],
								   item->typbyval[i], item->typlen[i]))
				same = false;
		}
		if (same)
			return;
	}

	old = MemoryContextSwitchTo(touch_cxt);
	g = palloc(sizeof(TouchGroup));
	g->invname = pstrdup(inv->name);
	g->watched = item->watched;
	g->n = n;
	g->types = palloc(sizeof(Oid) * Max(n, 1));
	g->typlen = palloc(sizeof(int16) * Max(n, 1));
	g->typbyval = palloc(sizeof(bool) * Max(n, 1));
	g->values = palloc(sizeof(Datum) * Max(n, 1));
	g->nulls = palloc(sizeof(bool) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		g->types[i] = item->types[i];
		g->typlen[i] = item->typlen[i];
		g->typbyval[i] = item->typbyval[i];
		g->nulls[i] = nulls[i];
		g->values[i] = nulls[i] ? (Datum) 0 :
			datumCopy(values[i], item->typbyval[i], item->typlen[i]);
	}
	g->next = entry->groups;
	entry->groups = g;
	MemoryContextSwitchTo(old);
}

/* ====================================================================
 * Checking the touched groups
 * ====================================================================
 */

/*
 * Check every group this transaction touched.  With take_locks (COMMIT,
 * PREPARE TRANSACTION), first lock each (invariant, group) in ascending
 * hash order, until the end of the transaction; then check them all against
 * one latest snapshot.  The file header explains why this rules out write
 * skew.
 */
static void
check_touched_groups(bool take_locks)
{
	MemoryContext cxt;
	MemoryContext old;

	if (touched == NULL || hash_get_num_entries(touched) == 0)
		return;
	if (checking)
		refuse_while_checking("idem.check_invariants()");

	cxt = AllocSetContextCreate(TopTransactionContext,
								"pg_idem invariant checks",
								ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	inv_cache_ensure();
	checking = true;
	inv_busy++;
	PG_TRY();
	{
		check_touched_groups_guts(take_locks);
	}
	PG_FINALLY();
	{
		checking = false;
		inv_busy--;
	}
	PG_END_TRY();

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
}

/* The work of check_touched_groups(), with the cache pinned. */
static void
check_touched_groups_guts(bool take_locks)
{
	HASH_SEQ_STATUS seq;
	TouchEntry *entry;
	CheckItem  *items;
	int			nitems = 0;
	int			cap = 16;
	CheckEnv	env;

	items = palloc(sizeof(CheckItem) * cap);
	hash_seq_init(&seq, touched);
	while ((entry = (TouchEntry *) hash_seq_search(&seq)) != NULL)
	{
		for (TouchGroup *g = entry->groups; g != NULL; g = g->next)
		{
			Invariant  *inv = inv_lookup(g->invname);
			CheckItem  *item;

			/* Dropped by this transaction: nothing left to check. */
			if (inv == NULL)
				continue;
			if (!inv->resolved)
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("invariant \"%s\" cannot be checked", inv->name),
						 errdetail("A table or column it watches no longer exists, or its group columns no longer have one type."),
						 errhint("Drop the invariant with idem.unenforce_invariant() and declare it again.")));

			/*
			 * Declared again in this transaction with other columns:
			 * enforce_invariant() checked every group then, under a lock
			 * that keeps other writers out until this commit.
			 */
			if (g->n != inv->nparams)
				continue;

			if (nitems == cap)
			{
				cap *= 2;
				items = repalloc(items, sizeof(CheckItem) * cap);
			}
			item = &items[nitems++];
			item->inv = inv;
			item->group = g;
			item->values = palloc(sizeof(Datum) * Max(g->n, 1));
			item->nulls = palloc(sizeof(bool) * Max(g->n, 1));
			for (int i = 0; i < g->n; i++)
			{
				item->nulls[i] = g->nulls[i];
				item->values[i] = g->values[i];

				/*
				 * A group column whose type changed (ALTER COLUMN ... TYPE)
				 * after the row was written, in this transaction: convert
				 * the value as a cast through text would.
				 */
				if (!g->nulls[i] && g->types[i] != inv->types[i])
				{
					Oid			outfn;
					Oid			infn;
					Oid			ioparam;
					bool		isvarlena;
					char	   *str;

					getTypeOutputInfo(g->types[i], &outfn, &isvarlena);
					str = OidOutputFunctionCall(outfn, g->values[i]);
					getTypeInputInfo(inv->types[i], &infn, &ioparam);
					item->values[i] = OidInputFunctionCall(infn, str, ioparam, -1);
				}
			}
			item->lockhash = group_hash(inv, item->values, item->nulls);
		}
	}
	if (nitems == 0)
		return;

	qsort(items, nitems, sizeof(CheckItem), check_item_cmp);

	if (take_locks)
		lock_checked_groups(items, nitems);

	/*
	 * Make this transaction's last writes visible to the snapshot (an
	 * autocommit statement commits without a command counter increment),
	 * then take the snapshot, after the locks.
	 */
	CommandCounterIncrement();
	PushActiveSnapshot(GetLatestSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_idem: SPI_connect failed");

	/* Under the locks, the order no longer matters: group by owner. */
	qsort(items, nitems, sizeof(CheckItem), check_item_owner_cmp);
	memset(&env, 0, sizeof(env));
	for (int i = 0; i < nitems; i++)
		check_group(&env, items[i].inv, items[i].values, items[i].nulls,
					items[i].group->watched);
	check_env_leave(&env);
	SPI_finish();
	PopActiveSnapshot();
}

/* Check order: by owner (one switch of role per owner), then as locked. */
static int
check_item_owner_cmp(const void *a, const void *b)
{
	const CheckItem *ia = (const CheckItem *) a;
	const CheckItem *ib = (const CheckItem *) b;

	if (ia->inv->owner != ib->inv->owner)
		return ia->inv->owner < ib->inv->owner ? -1 : 1;
	return check_item_cmp(a, b);
}

/*
 * Take the locks that serialize this transaction's checks with every other
 * transaction's checks of the same groups (see the file header), for items
 * sorted by lock hash.
 *
 * Two granularities, so that a transaction touching a great many groups
 * does not fill the shared lock table with one lock per group: first, per
 * invariant and in the order of the invariants' name hashes, a lock on the
 * whole invariant -- ShareLock normally, ExclusiveLock when this
 * transaction touched more than max_locks_per_transaction of its groups;
 * then, in lock-hash order, ExclusiveLock on each group of the invariants
 * locked in share mode.  Two transactions touching one group therefore
 * always conflict (on the group, or on the invariant), and every
 * transaction takes its locks in one global order, whole invariants before
 * groups, so no cycle of waits can form between checks.
 */
static void
lock_checked_groups(CheckItem *items, int nitems)
{
	InvLockCount *counts = palloc0(sizeof(InvLockCount) * nitems);
	int			ncounts = 0;

	/* Distinct groups per invariant. */
	for (int i = 0; i < nitems; i++)
	{
		InvLockCount *c = NULL;

		for (int k = 0; k < ncounts; k++)
			if (counts[k].inv == items[i].inv)
				c = &counts[k];
		if (c == NULL)
		{
			c = &counts[ncounts++];
			c->inv = items[i].inv;
		}
		if (i == 0 || items[i - 1].lockhash != items[i].lockhash)
			c->groups++;
	}
	qsort(counts, ncounts, sizeof(InvLockCount), inv_lock_count_cmp);

	for (int k = 0; k < ncounts; k++)
	{
		LOCKTAG		tag;
		uint64		h = counts[k].inv->name_hash;

		counts[k].whole = (counts[k].groups > max_locks_per_xact);
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
							 INVARIANT_LOCKTAG_WHOLE);
		(void) LockAcquire(&tag, counts[k].whole ? ExclusiveLock : ShareLock,
						   false, false);
	}

	for (int i = 0; i < nitems; i++)
	{
		LOCKTAG		tag;
		uint64		h = items[i].lockhash;
		bool		whole = false;

		if (i > 0 && items[i - 1].lockhash == h)
			continue;
		for (int k = 0; k < ncounts; k++)
			if (counts[k].inv == items[i].inv)
				whole = counts[k].whole;
		if (whole)
			continue;
		SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
							 INVARIANT_LOCKTAG_GROUP);
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
	}
	pfree(counts);
}

/* Whole-invariant lock order: by name hash, then by name. */
static int
inv_lock_count_cmp(const void *a, const void *b)
{
	const InvLockCount *ca = (const InvLockCount *) a;
	const InvLockCount *cb = (const InvLockCount *) b;

	if (ca->inv->name_hash != cb->inv->name_hash)
		return ca->inv->name_hash < cb->inv->name_hash ? -1 : 1;
	return strcmp(ca->inv->name, cb->inv->name);
}

/* Lock order: by lock hash, then by invariant name (for a stable order). */
static int
check_item_cmp(const void *a, const void *b)
{
	const CheckItem *ia = (const CheckItem *) a;
	const CheckItem *ib = (const CheckItem *) b;

	if (ia->lockhash != ib->lockhash)
		return ia->lockhash < ib->lockhash ? -1 : 1;
	return strcmp(ia->inv->name, ib->inv->name);
}

/*
 * Switch to the environment every check runs in: the declaring role, in a
 * security-restricted operation (the check cannot change the role, create
 * temporary objects or defer work past itself), with search_path =
 * pg_catalog, pg_temp and transaction_read_only = on.  Errors restore all
 * of it with the (sub)transaction; leave_check_environment() does on
 * success.
 */
static int
enter_check_environment(Oid owner, Oid *save_userid, int *save_sec)
{
	int			nestlevel;

	GetUserIdAndSecContext(save_userid, save_sec);
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	(void) set_config_option("transaction_read_only", "on",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	SetUserIdAndSecContext(owner, *save_sec | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	return nestlevel;
}

static void
leave_check_environment(int nestlevel, Oid save_userid, int save_sec)
{
	SetUserIdAndSecContext(save_userid, save_sec);
	AtEOXact_GUC(true, nestlevel);
}

/*
 * Be in the check environment of this owner, switching only when the owner
 * changes: a run of checks pays for the role and settings switch once, not
 * once per group.
 */
static void
check_env_switch(CheckEnv *env, Oid owner)
{
	if (env->active && env->owner == owner)
		return;
	check_env_leave(env);
	env->nestlevel = enter_check_environment(owner, &env->save_userid, &env->save_sec);
	env->owner = owner;
	env->active = true;
}

static void
check_env_leave(CheckEnv *env)
{
	if (!env->active)
		return;
	leave_check_environment(env->nestlevel, env->save_userid, env->save_sec);
	env->active = false;
}

/*
 * The kept plan of an invariant's check, prepared on first use and again
 * whenever the invariant's check, owner or types changed.  The caller is in
 * the invariant's check environment.  Kept plans outlive reloads of the catalog cache; PostgreSQL's
 * plan cache replans them itself when a table they read changes.
 */
static PlanEntry *
plan_for(Invariant *inv)
{
	PlanEntry  *pe;
	bool		found;
	SPIPlanPtr	plan;

	if (plan_cache == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = IDEM_MAX_NAME_BYTES + 1;
		ctl.entrysize = sizeof(PlanEntry);
		plan_cache = hash_create("pg_idem invariant plans", 16, &ctl,
								 HASH_ELEM | HASH_STRINGS);
	}

	pe = hash_search(plan_cache, inv->name, HASH_ENTER, &found);
	if (!found)
	{
		pe->check = NULL;
		pe->plan = NULL;
	}
	else if (pe->plan != NULL && pe->check != NULL &&
			 strcmp(pe->check, inv->check) == 0 &&
			 pe->owner == inv->owner && pe->nparams == inv->nparams &&
			 memcmp(pe->types, inv->types, sizeof(Oid) * inv->nparams) == 0)
		return pe;

	if (pe->plan != NULL)
		SPI_freeplan(pe->plan);
	pe->plan = NULL;
	if (pe->check != NULL)
		pfree(pe->check);
	pe->check = NULL;

	plan = SPI_prepare(inv->check, inv->nparams, inv->types);
	if (plan == NULL)
		elog(ERROR, "pg_idem: SPI_prepare failed for the check of invariant \"%s\": %s",
			 inv->name, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "pg_idem: SPI_keepplan failed");

	pe->check = MemoryContextStrdup(TopMemoryContext, inv->check);
	pe->owner = inv->owner;
	pe->nparams = inv->nparams;
	memcpy(pe->types, inv->types, sizeof(Oid) * inv->nparams);
	pe->plan = plan;
	return pe;
}

/* CONTEXT of an error raised by a running check. */
static void
check_error_callback(void *arg)
{
	CheckContext *cc = (CheckContext *) arg;

	errcontext("check of invariant \"%s\"", cc->inv->name);
}

/*
 * Run an invariant's check for one group, under the active snapshot, in its
 * check environment (entered through env, and left by the caller), and
 * raise ID030 unless it returns one row holding true.  Must be called
 * while connected to SPI.
 */
static void
check_group(CheckEnv *env, Invariant *inv, Datum *values, bool *nulls, Oid watched)
{
	PlanEntry  *pe;
	char		nullflags[INVARIANT_MAX_COLUMNS + 1];
	CheckContext cc;
	ErrorContextCallback errcb;
	int			rc;
	uint64		nrows;
	bool		isnull = true;
	bool		result = false;
	const char *what;

	for (int i = 0; i < inv->nparams; i++)
		nullflags[i] = nulls[i] ? 'n' : ' ';
	nullflags[inv->nparams] = '\0';

	cc.inv = inv;
	cc.watched = watched;
	cc.values = values;
	cc.nulls = nulls;
	errcb.callback = check_error_callback;
	errcb.arg = &cc;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	check_env_switch(env, inv->owner);
	pe = plan_for(inv);
	rc = SPI_execute_plan(pe->plan, values, nullflags, true, 2);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_idem: the check of invariant \"%s\" returned %s",
			 inv->name, SPI_result_code_string(rc));
	nrows = SPI_processed;
	if (nrows > 1)
		ereport(ERROR,
				(errcode(ERRCODE_CARDINALITY_VIOLATION),
				 errmsg("check of invariant \"%s\" returned more than one row", inv->name),
				 errhint("A check returns one boolean for one group, for example SELECT count(*) >= 1 FROM ... WHERE ... = $1.")));
	if (nrows == 1)
	{
		TupleDesc	td = SPI_tuptable->tupdesc;
		Datum		d;

		if (td->natts != 1 || getBaseType(TupleDescAttr(td, 0)->atttypid) != BOOLOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("check of invariant \"%s\" must return one boolean column", inv->name)));
		d = SPI_getbinval(SPI_tuptable->vals[0], td, 1, &isnull);
		if (!isnull)
			result = DatumGetBool(d);
	}
	SPI_freetuptable(SPI_tuptable);
	error_context_stack = errcb.previous;

	if (!isnull && result)
		return;
	check_env_leave(env);

	what = (nrows == 0) ? "no row" : isnull ? "null" : "false";
	ereport(ERROR,
			(errcode(ERRCODE_IDEM_INVARIANT_VIOLATION),
			 errmsg("invariant \"%s\" is violated", inv->name),
			 inv->nparams > 0 ?
			 errdetail("Its check returned %s for the group %s%s.", what,
					   group_description(inv, watched, values, nulls, true),
					   validating_existing ? ", which is already in the table" : "") :
			 errdetail("Its check returned %s%s.", what,
					   validating_existing ? " for the rows already in the table" : ""),
			 validating_existing ?
			 errhint("Correct the data first, or declare the invariant with valid => false to check only the groups written from now on.") :
			 inv->message != NULL ? errhint("%s", inv->message) : 0,
			 err_generic_string(PG_DIAG_CONSTRAINT_NAME, inv->name),
			 OidIsValid(watched) && get_rel_name(watched) != NULL ?
			 err_generic_string(PG_DIAG_TABLE_NAME, get_rel_name(watched)) : 0,
			 OidIsValid(watched) && get_rel_name(watched) != NULL ?
			 err_generic_string(PG_DIAG_SCHEMA_NAME,
								get_namespace_name(get_rel_namespace(watched))) : 0));
}

/* The group columns of one of an invariant's tables (the first if unknown). */
static char **
watch_columns_of(Invariant *inv, Oid watched)
{
	for (int w = 0; w < inv->nwatch; w++)
		if (inv->watch[w].relid == watched)
			return inv->watch[w].columns;
	return inv->nwatch > 0 ? inv->watch[0].columns : NULL;
}

/*
 * "(shift_id, day)=(7, 2024-01-01)", the way PostgreSQL describes a key in
 * a unique violation; each value cut to INVARIANT_DETAIL_VALUE_BYTES.
 */
static char *
group_description(Invariant *inv, Oid watched, Datum *values, bool *nulls,
				  bool with_columns)
{
	StringInfoData buf;
	char	  **columns = watch_columns_of(inv, watched);

	initStringInfo(&buf);
	if (with_columns && columns != NULL)
	{
		appendStringInfoChar(&buf, '(');
		for (int i = 0; i < inv->nparams; i++)
		{
			if (i > 0)
				appendStringInfoString(&buf, ", ");
			appendStringInfoString(&buf, quote_identifier(columns[i]));
		}
		appendStringInfoString(&buf, ")=");
	}
	appendStringInfoChar(&buf, '(');
	for (int i = 0; i < inv->nparams; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		if (nulls[i])
			appendStringInfoString(&buf, "null");
		else
		{
			Oid			outfn;
			bool		isvarlena;
			char	   *str;
			int			len;

			getTypeOutputInfo(inv->types[i], &outfn, &isvarlena);
			str = OidOutputFunctionCall(outfn, values[i]);
			len = strlen(str);
			if (len > INVARIANT_DETAIL_VALUE_BYTES)
			{
				len = pg_mbcliplen(str, len, INVARIANT_DETAIL_VALUE_BYTES);
				appendBinaryStringInfo(&buf, str, len);
				appendStringInfoString(&buf, "...");
			}
			else
				appendStringInfoString(&buf, str);
		}
	}
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * The transaction callback: check at PRE_COMMIT and PRE_PREPARE (an error
 * there aborts the commit, as a deferred constraint's does), forget the
 * touched groups when the transaction ends.
 */
static void
inv_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			check_touched_groups(true);
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* The memory goes with TopTransactionContext. */
			touched = NULL;
			touch_cxt = NULL;
			checking = false;
			inv_busy = 0;
			own_ddl_depth = 0;
			break;
		default:
			break;
	}
}

/* Refuse to re-enter the invariant machinery from inside a check. */
static void
refuse_while_checking(const char *what)
{
	if (checking)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s cannot be called from the check of an invariant", what)));
}

/*
 * idem.check_invariants(): check now what this transaction touched, without
 * taking the group locks (see the file header); COMMIT checks again.
 */
Datum
idem_check_invariants(PG_FUNCTION_ARGS)
{
	idem_check_granted("idem.check_invariants()");
	refuse_while_checking("idem.check_invariants()");
	check_touched_groups(false);
	PG_RETURN_VOID();
}

/* ====================================================================
 * Declaring invariants
 * ====================================================================
 */

/* An invariant name is 1..255 bytes of any text, like a key. */
static void
check_invariant_name(text *name, char **result)
{
	int			len = VARSIZE_ANY_EXHDR(name);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invariant name must not be empty")));
	if (len > IDEM_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("invariant name is too long"),
				 errdetail("The name is %d bytes; the limit is %d.",
						   len, IDEM_MAX_NAME_BYTES)));
	*result = text_to_cstring(name);
}

/*
 * Take the lock that serializes declarations of one invariant name (two
 * concurrent enforce_invariant() calls of one name would otherwise meet in a
 * unique violation).  Held until the end of the transaction.
 */
static void
lock_invariant_name(const char *name)
{
	LOCKTAG		tag;
	uint64		h = name_hash(name);

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (h >> 32), (uint32) h,
						 INVARIANT_LOCKTAG_NAME);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * Parse the watch argument: a JSON object whose keys name tables (as SQL
 * names, schema-qualified: they are resolved with search_path = pg_catalog,
 * pg_temp) and whose values are the group columns in $ order, an array of
 * column names or a single name.  Returns a list of WatchSpec with the
 * tables resolved, not yet locked.
 */
static List *
parse_watch(Jsonb *watch)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	List	   *specs = NIL;
	WatchSpec  *cur = NULL;
	int			depth = 0;
	ListCell   *lc;

	if (!JB_ROOT_IS_OBJECT(watch))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("watch must be a JSON object"),
				 errdetail("It maps each watched table to the columns that name a group in it, for example {\"public.on_call\": [\"shift_id\"]}.")));

	it = JsonbIteratorInit(&watch->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		switch (tok)
		{
			case WJB_BEGIN_OBJECT:
			case WJB_BEGIN_ARRAY:
				depth++;
				if (depth > 2 || (tok == WJB_BEGIN_OBJECT && depth > 1))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("group columns of \"%s\" in watch must be an array of column names",
									cur ? cur->given : "?")));
				break;
			case WJB_END_OBJECT:
			case WJB_END_ARRAY:
				depth--;
				break;
			case WJB_KEY:
				cur = palloc0(sizeof(WatchSpec));
				cur->given = pnstrdup(v.val.string.val, v.val.string.len);
				specs = lappend(specs, cur);
				break;
			case WJB_VALUE:
			case WJB_ELEM:
				if (v.type != jbvString)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("group columns of \"%s\" in watch must be an array of column names",
									cur->given)));
				if (cur->ncolumns == INVARIANT_MAX_COLUMNS)
					ereport(ERROR,
							(errcode(ERRCODE_TOO_MANY_COLUMNS),
							 errmsg("an invariant's group has at most %d columns",
									INVARIANT_MAX_COLUMNS)));
				cur->columns[cur->ncolumns++] = pnstrdup(v.val.string.val,
														 v.val.string.len);
				break;
			default:
				break;
		}
	}

	if (specs == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("watch must name at least one table"),
				 errdetail("It maps each watched table to the columns that name a group in it, for example {\"public.on_call\": [\"shift_id\"]}.")));

	foreach(lc, specs)
	{
		WatchSpec  *w = (WatchSpec *) lfirst(lc);
		RangeVar   *rv;

		rv = makeRangeVarFromNameList(idem_qualified_name_list(w->given));
		w->relid = RangeVarGetRelid(rv, NoLock, true);
		if (!OidIsValid(w->relid))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("relation \"%s\" does not exist", w->given),
					 errhint("Name watched tables with their schema, for example \"public.on_call\": watch is read with search_path = pg_catalog, pg_temp.")));
		if (((WatchSpec *) linitial(specs))->ncolumns != w->ncolumns)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("every watched table must name the same number of group columns"),
					 errdetail("\"%s\" names %d, \"%s\" names %d.",
							   ((WatchSpec *) linitial(specs))->given,
							   ((WatchSpec *) linitial(specs))->ncolumns,
							   w->given, w->ncolumns)));
		for (ListCell *lc2 = list_head(specs); lfirst(lc2) != w; lc2 = lnext(specs, lc2))
			if (((WatchSpec *) lfirst(lc2))->relid == w->relid)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("table \"%s\" is named twice in watch", w->given)));
	}
	return specs;
}

/*
 * Check a watched table (locked by the caller) and resolve its group
 * columns: user columns of a type with a default hash operator class
 * (groups are hashed to pick their lock).
 */
static void
resolve_watch_columns(WatchSpec *w)
{
	HeapTuple	classtup;
	Form_pg_class classform;
	char	   *relname;

	classtup = SearchSysCache1(RELOID, ObjectIdGetDatum(w->relid));
	if (!HeapTupleIsValid(classtup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s\" was dropped concurrently", w->given)));
	classform = (Form_pg_class) GETSTRUCT(classtup);
	relname = pstrdup(NameStr(classform->relname));

	if (classform->relkind != RELKIND_RELATION &&
		classform->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot watch \"%s\"", relname),
				 errdetail("\"%s\" is not a table; an invariant watches tables, and a check may read views over them.",
						   relname)));
	if (classform->relpersistence == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot watch temporary table \"%s\"", relname),
				 errdetail("Other sessions' writes could never touch it, and it disappears with this session.")));
	if (IsCatalogRelationOid(w->relid))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot watch system catalog \"%s\"", relname)));
	ReleaseSysCache(classtup);

	for (int i = 0; i < w->ncolumns; i++)
	{
		HeapTuple	atttup = SearchSysCacheAttName(w->relid, w->columns[i]);
		Form_pg_attribute att;
		TypeCacheEntry *tc;

		if (!HeapTupleIsValid(atttup))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("column \"%s\" of relation \"%s\" does not exist",
							w->columns[i], relname),
					 errhint("watch names columns as they are stored, without quotes.")));
		att = (Form_pg_attribute) GETSTRUCT(atttup);
		if (att->attnum <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_COLUMN_REFERENCE),
					 errmsg("cannot use system column \"%s\" as a group column",
							w->columns[i])));
		w->types[i] = att->atttypid;
		w->collations[i] = att->attcollation;
		ReleaseSysCache(atttup);

		tc = lookup_type_cache(w->types[i], TYPECACHE_HASH_EXTENDED_PROC);
		if (!OidIsValid(tc->hash_extended_proc))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("could not identify a hash function for type %s",
							format_type_be(w->types[i])),
					 errdetail("Group column \"%s\" of table \"%s\" has that type.",
							   w->columns[i], relname),
					 errhint("Group columns need a type with a default hash operator class.")));
	}
}

/*
 * Is relid (a relation the check reads) watched, itself or through a
 * partitioned ancestor whose trigger its rows fire?
 */
static bool
relid_covered_by(Oid relid, List *watched_relids)
{
	List	   *ancestors;
	ListCell   *lc;

	if (list_member_oid(watched_relids, relid))
		return true;
	if (!get_rel_relispartition(relid))
		return false;
	ancestors = get_partition_ancestors(relid);
	foreach(lc, ancestors)
		if (list_member_oid(watched_relids, lfirst_oid(lc)))
			return true;
	return false;
}

/*
 * Collect every relation a (rewritten) query reads, and refuse row locks.
 * Views were expanded by the rewriter into subqueries; a view RTE left
 * over is a placeholder of the view's own rule and reads nothing.  A table
 * read with its inheritance children reads the children too.
 */
static bool
analyse_walker(Node *node, List **relids)
{
	if (node == NULL)
		return false;
	if (IsA(node, Query))
	{
		Query	   *q = (Query *) node;

		if (q->rowMarks != NIL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("check of an invariant must not lock rows"),
					 errdetail("It contains FOR UPDATE, FOR NO KEY UPDATE, FOR SHARE or FOR KEY SHARE.")));
		if (q->commandType != CMD_SELECT || q->hasModifyingCTE)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("check of an invariant must not write")));
		return query_tree_walker(q, analyse_walker, relids,
								 QTW_EXAMINE_RTES_BEFORE);
	}
	if (IsA(node, RangeTblEntry))
	{
		RangeTblEntry *rte = (RangeTblEntry *) node;

		if (rte->rtekind == RTE_RELATION && rte->relkind != RELKIND_VIEW)
		{
			if (rte->inh && rte->relkind == RELKIND_RELATION &&
				has_subclass(rte->relid))
				*relids = list_concat_unique_oid(*relids,
												 find_all_inheritors(rte->relid,
																	 AccessShareLock,
																	 NULL));
			else
				*relids = list_append_unique_oid(*relids, rte->relid);
		}
		return false;
	}
	return expression_tree_walker(node, analyse_walker, relids);
}

/*
 * Parse and analyse a check as it will run ($1..$n of the given types, in
 * the caller's check environment), and refuse what cannot be a check: not
 * exactly one SELECT, a write or a row lock, not one boolean column, or a
 * read of a table the invariant does not watch (a write there would not be
 * checked).  Functions the check calls are not looked into.
 */
static Query *
analyse_check(const char *name, const char *check, int nparams, Oid *types,
			  List *watched_relids)
{
	List	   *raws;
	RawStmt    *raw;
	Query	   *query;
	List	   *rewritten;
	List	   *relids = NIL;
	ListCell   *lc;
	int			ncols = 0;
	Oid			coltype = InvalidOid;
	ErrorContextCallback errcb;

	/* Errors point into the check's text, not into the calling statement. */
	errcb.callback = analyse_error_callback;
	errcb.arg = (void *) check;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;

	raws = pg_parse_query(check);
	if (list_length(raws) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("check of invariant \"%s\" must be one SELECT statement", name),
				 errdetail("It contains %d statements.", list_length(raws))));
	raw = linitial_node(RawStmt, raws);
	if (!IsA(raw->stmt, SelectStmt))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("check of invariant \"%s\" must be a SELECT", name),
				 errdetail("The statement is %s.", CreateCommandName(raw->stmt)),
				 errhint("A check reads the group and returns one boolean, for example SELECT count(*) >= 1 FROM public.on_call WHERE shift_id = $1 AND on_duty.")));
	if (((SelectStmt *) raw->stmt)->intoClause != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("check of invariant \"%s\" must not write", name),
				 errdetail("It is a SELECT INTO.")));

	query = parse_analyze_fixedparams(raw, check, types, nparams, NULL);
	if (query->commandType != CMD_SELECT || query->utilityStmt != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("check of invariant \"%s\" must be a SELECT", name)));
	if (query->hasModifyingCTE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("check of invariant \"%s\" must not write", name),
				 errdetail("It contains a data-modifying WITH.")));

	foreach(lc, query->targetList)
	{
		TargetEntry *te = lfirst_node(TargetEntry, lc);

		if (te->resjunk)
			continue;
		ncols++;
		coltype = exprType((Node *) te->expr);
	}
	if (ncols != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("check of invariant \"%s\" must return one boolean column", name),
				 errdetail("It returns %d columns.", ncols)));
	if (getBaseType(coltype) != BOOLOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("check of invariant \"%s\" must return one boolean column", name),
				 errdetail("Its column is of type %s.", format_type_be(coltype))));

	rewritten = QueryRewrite(copyObject(query));
	foreach(lc, rewritten)
		(void) analyse_walker((Node *) lfirst(lc), &relids);

	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);

		if (!relid_covered_by(relid, watched_relids))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("check of invariant \"%s\" reads \"%s\", which the invariant does not watch",
							name, qualified_name(relid)),
					 errdetail("A write to a table the check reads but the invariant does not watch would not be checked."),
					 errhint("Add the table to watch, with the columns that name the group in it.")));
	}
	error_context_stack = errcb.previous;
	return query;
}

/*
 * Report a syntax error position inside the check as a position in the
 * check's text (QUERY), the way SPI reports errors in its queries.
 */
static void
analyse_error_callback(void *arg)
{
	const char *check = (const char *) arg;
	int			pos = geterrposition();

	if (pos > 0)
	{
		errposition(0);
		internalerrposition(pos);
		internalerrquery(check);
	}
}

/*
 * Check every group that exists in the watched tables (enforce_invariant()
 * with valid => true), against the latest snapshot: the tables are locked
 * against writers, and a commit that happened before the lock must count
 * even under REPEATABLE READ.
 */
static void
validate_existing(Invariant *inv)
{
	StringInfoData sql;
	SPIPlanPtr	plan;
	Portal		portal;
	MemoryContext batch_cxt;
	MemoryContext old;
	CheckEnv	env;

	memset(&env, 0, sizeof(env));
	initStringInfo(&sql);
	if (inv->nparams == 0)
		appendStringInfoString(&sql, "SELECT");
	else
	{
		appendStringInfoString(&sql, "SELECT DISTINCT * FROM (");
		for (int w = 0; w < inv->nwatch; w++)
		{
			if (w > 0)
				appendStringInfoString(&sql, " UNION ALL ");
			appendStringInfoString(&sql, "SELECT ");
			for (int i = 0; i < inv->nparams; i++)
				appendStringInfo(&sql, "%s%s", i > 0 ? ", " : "",
								 quote_identifier(inv->watch[w].columns[i]));
			appendStringInfo(&sql, " FROM %s", qualified_name(inv->watch[w].relid));
		}
		appendStringInfoString(&sql, ") AS g");
	}

	batch_cxt = AllocSetContextCreate(CurrentMemoryContext,
									  "pg_idem invariant validation",
									  ALLOCSET_DEFAULT_SIZES);
	checking = true;
	validating_existing = true;
	inv_busy++;
	PG_TRY();
	{
		PushActiveSnapshot(GetLatestSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "pg_idem: SPI_connect failed");
		plan = SPI_prepare(sql.data, 0, NULL);
		if (plan == NULL)
			elog(ERROR, "pg_idem: SPI_prepare failed for \"%s\": %s",
				 sql.data, SPI_result_code_string(SPI_result));
		portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
		for (;;)
		{
			SPITupleTable *batch;
			uint64		nrows;

			SPI_cursor_fetch(portal, true, 1000);
			batch = SPI_tuptable;
			nrows = SPI_processed;
			if (nrows == 0)
				break;
			old = MemoryContextSwitchTo(batch_cxt);
			for (uint64 r = 0; r < nrows; r++)
			{
				Datum		values[INVARIANT_MAX_COLUMNS];
				bool		nulls[INVARIANT_MAX_COLUMNS];

				for (int i = 0; i < inv->nparams; i++)
					values[i] = SPI_getbinval(batch->vals[r], batch->tupdesc,
											  i + 1, &nulls[i]);
				check_group(&env, inv, values, nulls,
							inv->nwatch > 0 ? inv->watch[0].relid : InvalidOid);
				MemoryContextReset(batch_cxt);
			}
			MemoryContextSwitchTo(old);
			SPI_freetuptable(batch);
		}
		check_env_leave(&env);
		SPI_cursor_close(portal);
		SPI_finish();
		PopActiveSnapshot();
	}
	PG_FINALLY();
	{
		checking = false;
		validating_existing = false;
		inv_busy--;
	}
	PG_END_TRY();
	MemoryContextDelete(batch_cxt);
}

/* The owner of the extension's catalog tables, who writes them. */
static Oid
extension_owner(void)
{
	HeapTuple	tup;
	Oid			owner;

	inv_cache_ensure();
	if (!OidIsValid(inv_catalog_relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("table idem.invariant does not exist"),
				 errhint("Update the extension with ALTER EXTENSION pg_idem UPDATE.")));
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(inv_catalog_relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", inv_catalog_relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Run one statement through SPI as another role (the extension's owner,
 * for writes to its catalog and the triggers it puts on tables whose owner
 * was checked already), with search_path pinned.
 */
static void
run_sql_as(Oid role, const char *sql, int nargs, Oid *argtypes, Datum *values,
		   const char *nulls)
{
	Oid			save_userid;
	int			save_sec;
	int			nestlevel;
	int			rc;

	GetUserIdAndSecContext(&save_userid, &save_sec);
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	SetUserIdAndSecContext(role, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_idem: SPI_connect failed");
	rc = SPI_execute_with_args(sql, nargs, argtypes, values, nulls, false, 0);
	if (rc < 0)
		elog(ERROR, "pg_idem: SPI_execute returned %s for: %s",
			 SPI_result_code_string(rc), sql);
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);
	AtEOXact_GUC(true, nestlevel);
}

/*
 * Run DDL on a user table as the extension's owner.  The DDL runs as SQL so
 * that logging and auditing see it; the event triggers of this file stand
 * aside meanwhile (the catalog and the triggers are briefly out of step).
 */
static void
run_ddl_as_owner(const char *sql)
{
	Oid			owner = extension_owner();

	own_ddl_depth++;
	PG_TRY();
	{
		run_sql_as(owner, sql, 0, NULL, NULL, NULL);
	}
	PG_FINALLY();
	{
		own_ddl_depth--;
	}
	PG_END_TRY();
}

/* schema.table, each part quoted as needed. */
static char *
qualified_name(Oid relid)
{
	char	   *relname = get_rel_name(relid);
	char	   *nspname = get_namespace_name(get_rel_namespace(relid));

	if (relname == NULL || nspname == NULL)
		return psprintf("relation with OID %u", relid);
	return quote_qualified_identifier(nspname, relname);
}

/* The OID of idem.invariant_touch(). */
static Oid
touch_function_oid(void)
{
	Oid			argtypes[1];

	return LookupFuncName(list_make2(makeString("idem"),
									 makeString("invariant_touch")),
						  0, argtypes, false);
}

/*
 * Does the relation have our trigger of that name (*is_clone: cloned from
 * a partitioned ancestor)?  A trigger of that name calling something else
 * is an error: pg_idem did not create it.
 */
static bool
find_our_trigger(Oid relid, const char *tgname, bool *is_clone)
{
	Oid			tgfoid,
				tgparentid;

	if (!trigger_by_name(relid, tgname, &tgfoid, &tgparentid))
		return false;
	if (tgfoid != touch_function_oid())
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("trigger \"%s\" for relation \"%s\" already exists",
						tgname, get_rel_name(relid)),
				 errdetail("The trigger does not call idem.invariant_touch(); pg_idem did not create it."),
				 errhint("Rename or drop that trigger, then declare the invariant again.")));
	if (is_clone)
		*is_clone = OidIsValid(tgparentid);
	return true;
}

/*
 * The function and parent trigger of relid's trigger of that name, read
 * from pg_trigger (no lock on the relation); false if it has none.
 */
static bool
trigger_by_name(Oid relid, const char *tgname, Oid *tgfoid, Oid *tgparentid)
{
	Relation	tgrel;
	ScanKeyData key[2];
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	tgrel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyInit(&key[0], Anum_pg_trigger_tgrelid, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(relid));
	ScanKeyInit(&key[1], Anum_pg_trigger_tgname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum(tgname));
	scan = systable_beginscan(tgrel, TriggerRelidNameIndexId, true, NULL, 2, key);
	if (HeapTupleIsValid(tup = systable_getnext(scan)))
	{
		Form_pg_trigger tg = (Form_pg_trigger) GETSTRUCT(tup);

		*tgfoid = tg->tgfoid;
		*tgparentid = tg->tgparentid;
		found = true;
	}
	systable_endscan(scan);
	table_close(tgrel, AccessShareLock);
	return found;
}

/*
 * The TRUNCATE guard on a relation and, for a partitioned table, on every
 * partition (statement triggers are not cloned to partitions, and a
 * partition can be truncated on its own).
 */
static void
ensure_truncate_triggers(Oid relid)
{
	List	   *rels;
	ListCell   *lc;

	if (get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE)
		rels = find_all_inheritors(relid, NoLock, NULL);
	else
		rels = list_make1_oid(relid);

	foreach(lc, rels)
	{
		Oid			r = lfirst_oid(lc);

		if (!find_our_trigger(r, TRUNCATE_TRIGGER, NULL))
			run_ddl_as_owner(psprintf("CREATE TRIGGER %s BEFORE TRUNCATE ON %s "
									  "FOR EACH STATEMENT EXECUTE FUNCTION idem.invariant_touch()",
									  quote_identifier(TRUNCATE_TRIGGER),
									  qualified_name(r)));
	}
}

/*
 * Give a watched table its two triggers, unless it has them.  A partitioned
 * table's row trigger is cloned by PostgreSQL to every partition, present
 * and future; a partition that had one of its own (it was watched first)
 * gives it up for the clone.
 */
static void
ensure_triggers(Oid relid)
{
	if (!find_our_trigger(relid, ROW_TRIGGER, NULL))
	{
		if (get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE)
		{
			List	   *children = find_all_inheritors(relid, NoLock, NULL);
			ListCell   *lc;

			foreach(lc, children)
			{
				Oid			child = lfirst_oid(lc);
				bool		is_clone;

				if (child != relid &&
					find_our_trigger(child, ROW_TRIGGER, &is_clone) && !is_clone)
					run_ddl_as_owner(psprintf("DROP TRIGGER %s ON %s",
											  quote_identifier(ROW_TRIGGER),
											  qualified_name(child)));
			}
		}
		run_ddl_as_owner(psprintf("CREATE TRIGGER %s AFTER INSERT OR UPDATE OR DELETE ON %s "
								  "FOR EACH ROW EXECUTE FUNCTION idem.invariant_touch()",
								  quote_identifier(ROW_TRIGGER),
								  qualified_name(relid)));
	}

	/*
	 * PostgreSQL checks EXECUTE on the function of every trigger it clones
	 * onto a partition the table's owner creates or attaches: without it a
	 * non-superuser owner could no longer partition its table.  The
	 * function does nothing unless fired as this trigger.
	 */
	run_ddl_as_owner(psprintf("GRANT EXECUTE ON FUNCTION idem.invariant_touch() TO %s",
							  quote_identifier(GetUserNameFromId(rel_owner(relid), false))));
	ensure_truncate_triggers(relid);
}

/* The owner of a relation. */
static Oid
rel_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "pg_idem: cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * Remove the triggers of a table no invariant watches any more (the caller
 * re-creates those a still-watched partition needs).
 */
static void
drop_triggers(Oid relid)
{
	bool		is_clone;
	List	   *rels;
	ListCell   *lc;

	if (find_our_trigger(relid, ROW_TRIGGER, &is_clone) && !is_clone)
		run_ddl_as_owner(psprintf("DROP TRIGGER %s ON %s",
								  quote_identifier(ROW_TRIGGER),
								  qualified_name(relid)));

	if (get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE)
		rels = find_all_inheritors(relid, NoLock, NULL);
	else
		rels = list_make1_oid(relid);
	foreach(lc, rels)
	{
		Oid			r = lfirst_oid(lc);

		if (!rel_is_covered(r) && find_our_trigger(r, TRUNCATE_TRIGGER, NULL))
			run_ddl_as_owner(psprintf("DROP TRIGGER %s ON %s",
									  quote_identifier(TRUNCATE_TRIGGER),
									  qualified_name(r)));
	}
}

/*
 * After the catalog changed (and a command counter increment made it
 * visible): drop the triggers of tables that were watched and no longer
 * are, then make sure every watched table has its triggers.
 */
static void
sync_triggers(List *old_relids)
{
	ListCell   *lc;
	List	   *watched = NIL;

	inv_stale = true;
	inv_cache_ensure();
	foreach(lc, old_relids)
	{
		Oid			relid = lfirst_oid(lc);

		if (!relid_is_watched(relid) &&
			SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
			drop_triggers(relid);
	}
	CommandCounterIncrement();

	inv_stale = true;
	inv_cache_ensure();
	foreach(lc, inv_list)
	{
		Invariant  *inv = (Invariant *) lfirst(lc);

		for (int w = 0; w < inv->nwatch; w++)
			if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(inv->watch[w].relid)))
				watched = list_append_unique_oid(watched, inv->watch[w].relid);
	}
	foreach(lc, watched)
		ensure_triggers(lfirst_oid(lc));
	CommandCounterIncrement();
}

/*
 * Tell every backend (at commit) that these tables' invariants changed:
 * their caches reload before their next write to the tables.
 */
static void
invalidate_relations(List *relids)
{
	ListCell   *lc;

	if (OidIsValid(inv_catalog_relid))
		CacheInvalidateRelcacheByRelid(inv_catalog_relid);
	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);

		if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
			CacheInvalidateRelcacheByRelid(relid);
	}
}

/* Delete an invariant's rows from both catalog tables. */
static void
delete_invariant(const char *name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];

	values[0] = CStringGetTextDatum(name);
	run_sql_as(extension_owner(),
			   "DELETE FROM idem.invariant WHERE name OPERATOR(pg_catalog.=) $1",
			   1, argtypes, values, NULL);
	run_sql_as(extension_owner(),
			   "DELETE FROM idem.invariant_watch WHERE invariant OPERATOR(pg_catalog.=) $1",
			   1, argtypes, values, NULL);
}

/*
 * Check ownership of the tables, then lock them (and their partitions)
 * against writers, in OID order.
 */
static void
own_and_lock(List *relids)
{
	ListCell   *lc;

	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);

		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
			continue;
		if (!idem_relation_ownercheck(relid, GetUserId()))
			aclcheck_error(ACLCHECK_NOT_OWNER,
						   get_relkind_objtype(get_rel_relkind(relid)),
						   get_rel_name(relid));
	}
	foreach(lc, relids)
	{
		Oid			relid = lfirst_oid(lc);

		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
			continue;
		LockRelationOid(relid, ShareRowExclusiveLock);

		/*
		 * A write straight into a partition locks only the partition, so
		 * the partitions are locked too: no writer of any of them may be
		 * in progress while the invariant is declared.
		 */
		if (get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE)
			(void) find_all_inheritors(relid, ShareRowExclusiveLock, NULL);
	}
}

static int
oid_cmp_asc(const ListCell *a, const ListCell *b)
{
	Oid			x = lfirst_oid(a);
	Oid			y = lfirst_oid(b);

	return (x > y) - (x < y);
}

/*
 * idem.enforce_invariant(name, check, watch, message, valid): declare (or
 * declare again) an invariant, install the triggers, and check every group
 * that exists unless valid is false.  Only the owner of every watched table
 * may; the check then runs with the declaring role's rights.  Everything
 * happens in the caller's transaction: an error leaves nothing behind.
 */
Datum
idem_enforce_invariant(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *check;
	Jsonb	   *watch;
	char	   *message = NULL;
	bool		valid;
	List	   *specs;
	Invariant  *old;
	List	   *old_relids = NIL;
	List	   *new_relids = NIL;
	List	   *all_relids;
	int			nparams;
	Oid			types[INVARIANT_MAX_COLUMNS];
	ListCell   *lc;
	Oid			save_userid;
	int			save_sec;
	int			nestlevel;
	Oid			catalog_owner;

	for (int i = 0; i < 5; i++)
		if (i != 3 && PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be null",
							i == 0 ? "name" : i == 1 ? "check" : i == 2 ? "watch" : "valid")));
	refuse_while_checking("idem.enforce_invariant()");
	check_invariant_name(PG_GETARG_TEXT_PP(0), &name);
	check = text_to_cstring(PG_GETARG_TEXT_PP(1));
	watch = PG_GETARG_JSONB_P(2);
	if (!PG_ARGISNULL(3))
		message = text_to_cstring(PG_GETARG_TEXT_PP(3));
	valid = PG_GETARG_BOOL(4);

	specs = parse_watch(watch);
	foreach(lc, specs)
		new_relids = lappend_oid(new_relids, ((WatchSpec *) lfirst(lc))->relid);

	lock_invariant_name(name);
	inv_stale = true;
	inv_cache_ensure();
	old = inv_lookup(name);
	if (old != NULL)
		for (int w = 0; w < old->nwatch; w++)
			old_relids = lappend_oid(old_relids, old->watch[w].relid);

	all_relids = list_concat_unique_oid(list_copy(new_relids), old_relids);
	list_sort(all_relids, oid_cmp_asc);
	own_and_lock(all_relids);

	/* Under the locks: the tables, their columns and their types. */
	nparams = ((WatchSpec *) linitial(specs))->ncolumns;
	foreach(lc, specs)
	{
		WatchSpec  *w = (WatchSpec *) lfirst(lc);
		WatchSpec  *first = (WatchSpec *) linitial(specs);

		resolve_watch_columns(w);
		for (int i = 0; i < nparams; i++)
			if (w->types[i] != first->types[i])
				ereport(ERROR,
						(errcode(ERRCODE_DATATYPE_MISMATCH),
						 errmsg("group column %d has type %s in \"%s\" but type %s in \"%s\"",
								i + 1, format_type_be(first->types[i]), first->given,
								format_type_be(w->types[i]), w->given),
						 errdetail("$%d has one type in every watched table.", i + 1)));
			else if (w->collations[i] != first->collations[i])

				/*
				 * The group locks hash with one collation: values one
				 * collation calls equal and the other does not would take
				 * different locks for one group (review finding).
				 */
				ereport(ERROR,
						(errcode(ERRCODE_COLLATION_MISMATCH),
						 errmsg("group column %d has another collation in \"%s\" than in \"%s\"",
								i + 1, w->given, first->given),
						 errdetail("$%d has one collation in every watched table.", i + 1),
						 errhint("Give the group columns the same collation.")));
	}
	memcpy(types, ((WatchSpec *) linitial(specs))->types, sizeof(Oid) * nparams);

	nestlevel = enter_check_environment(GetUserId(), &save_userid, &save_sec);
	(void) analyse_check(name, check, nparams, types, new_relids);
	leave_check_environment(nestlevel, save_userid, save_sec);

	/* The catalog, written as the extension's owner. */
	catalog_owner = extension_owner();
	{
		Oid			argtypes[5] = {TEXTOID, TEXTOID, TEXTOID, BOOLOID, REGROLEOID};
		Datum		values[5];
		char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

		delete_invariant(name);
		values[0] = CStringGetTextDatum(name);
		values[1] = CStringGetTextDatum(check);
		if (message != NULL)
			values[2] = CStringGetTextDatum(message);
		else
			nulls[2] = 'n';
		values[3] = BoolGetDatum(valid);
		values[4] = ObjectIdGetDatum(GetUserId());
		run_sql_as(catalog_owner,
				   "INSERT INTO idem.invariant (name, \"check\", message, valid, owner) "
				   "VALUES ($1, $2, $3, $4, $5)",
				   5, argtypes, values, nulls);
	}
	foreach(lc, specs)
	{
		WatchSpec  *w = (WatchSpec *) lfirst(lc);
		Oid			argtypes[3] = {TEXTOID, REGCLASSOID, NAMEARRAYOID};
		Datum		values[3];
		Datum	   *names = palloc(sizeof(Datum) * Max(w->ncolumns, 1));

		for (int i = 0; i < w->ncolumns; i++)
			names[i] = DirectFunctionCall1(namein, CStringGetDatum(w->columns[i]));
		values[0] = CStringGetTextDatum(name);
		values[1] = ObjectIdGetDatum(w->relid);
		values[2] = PointerGetDatum(construct_array(names, w->ncolumns, NAMEOID,
													NAMEDATALEN, false, TYPALIGN_CHAR));
		run_sql_as(catalog_owner,
				   "INSERT INTO idem.invariant_watch (invariant, tbl, columns) "
				   "VALUES ($1, $2, $3)",
				   3, argtypes, values, NULL);
	}

	invalidate_relations(all_relids);
	CommandCounterIncrement();
	sync_triggers(old_relids);

	if (valid)
	{
		Invariant  *inv;

		inv_cache_ensure();
		inv = inv_lookup(name);
		if (inv == NULL)
			elog(ERROR, "pg_idem: invariant \"%s\" vanished while being declared", name);
		validate_existing(inv);
	}
	PG_RETURN_VOID();
}

/*
 * idem.unenforce_invariant(name): drop an invariant and the triggers no
 * other invariant needs.  Returns false, and does nothing, when there is no
 * invariant of that name.
 */
Datum
idem_unenforce_invariant(PG_FUNCTION_ARGS)
{
	char	   *name;
	Invariant  *old;
	List	   *old_relids = NIL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be null")));
	refuse_while_checking("idem.unenforce_invariant()");
	check_invariant_name(PG_GETARG_TEXT_PP(0), &name);

	lock_invariant_name(name);
	inv_stale = true;
	inv_cache_ensure();
	old = inv_lookup(name);
	if (old == NULL)
		PG_RETURN_BOOL(false);
	for (int w = 0; w < old->nwatch; w++)
		old_relids = lappend_oid(old_relids, old->watch[w].relid);
	list_sort(old_relids, oid_cmp_asc);
	own_and_lock(old_relids);

	delete_invariant(name);
	invalidate_relations(old_relids);
	CommandCounterIncrement();
	sync_triggers(old_relids);
	PG_RETURN_BOOL(true);
}

/* ====================================================================
 * Event triggers: an invariant never outlives what it reads
 * ====================================================================
 */

/*
 * Why an invariant can no longer be checked, or NULL if it can: a watched
 * table or group column is gone, the group columns no longer share a
 * hashable type, or the check no longer analyses (it reads something that
 * was dropped or renamed, or reads an unwatched table).  The analysis runs
 * as the invariant's owner in a subtransaction, so its error becomes the
 * answer.  An invariant whose owner role was dropped is not judged here
 * (DROP ROLE fires no event trigger, so no command could be blamed).
 */
static char *
invariant_broken(Invariant *inv)
{
	Oid			types[INVARIANT_MAX_COLUMNS];
	List	   *relids = NIL;

	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(inv->owner)))
		return NULL;
	if (inv->nwatch == 0)
		return psprintf("It watches no table.");

	for (int w = 0; w < inv->nwatch; w++)
	{
		Oid			relid = inv->watch[w].relid;

		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		{
			ListCell   *lc;
			ListCell   *lc2;

			forboth(lc, dropped_rel_oids, lc2, dropped_rel_names)
				if (lfirst_oid(lc) == relid)
					return psprintf("Table %s, which it watches, was dropped.",
									(char *) lfirst(lc2));
			return psprintf("A table it watches (OID %u) was dropped.", relid);
		}
		relids = lappend_oid(relids, relid);
		for (int i = 0; i < inv->nparams; i++)
		{
			HeapTuple	atttup = SearchSysCacheAttName(relid, inv->watch[w].columns[i]);
			Oid			atttype;

			if (!HeapTupleIsValid(atttup))
				return psprintf("Group column \"%s\" of table %s no longer exists.",
								inv->watch[w].columns[i], qualified_name(relid));
			atttype = ((Form_pg_attribute) GETSTRUCT(atttup))->atttypid;
			ReleaseSysCache(atttup);
			if (w == 0)
			{
				types[i] = atttype;
				if (!OidIsValid(lookup_type_cache(atttype, TYPECACHE_HASH_EXTENDED_PROC)->hash_extended_proc))
					return psprintf("Group column \"%s\" of table %s is now of type %s, which has no hash function.",
									inv->watch[w].columns[i], qualified_name(relid),
									format_type_be(atttype));
			}
			else if (atttype != types[i])
				return psprintf("Group column \"%s\" of table %s is now of type %s, but $%d is of type %s.",
								inv->watch[w].columns[i], qualified_name(relid),
								format_type_be(atttype), i + 1, format_type_be(types[i]));
		}
	}

	return analyse_in_subtransaction(inv, types, relids);
}

/*
 * Analyse an invariant's check as its owner, in a subtransaction; return
 * the error message as the reason it is broken, or NULL.
 */
static char *
analyse_in_subtransaction(Invariant *inv, Oid *types, List *relids)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	char	   *volatile why = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		Oid			save_userid;
		int			save_sec;
		int			nestlevel;

		nestlevel = enter_check_environment(inv->owner, &save_userid, &save_sec);
		(void) analyse_check(inv->name, inv->check, inv->nparams, types, relids);
		leave_check_environment(nestlevel, save_userid, save_sec);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		why = psprintf("Its check no longer works: %s.", edata->message);
	}
	PG_END_TRY();
	return why;
}

/*
 * For the sql_drop event trigger: collect the invariants the DROP broke
 * (with the reason, and the tables they watched), and refuse the DROP if it
 * removed a trigger that an invariant it did not break still needs.
 */
static void
judge_invariants_after_drop(List **broken, List **reasons, List **old_relids)
{
	ListCell   *lc;
	ListCell   *lc2;

	foreach(lc, inv_list)
	{
		Invariant  *inv = (Invariant *) lfirst(lc);
		char	   *why = invariant_broken(inv);

		if (why != NULL)
		{
			*broken = lappend(*broken, pstrdup(inv->name));
			*reasons = lappend(*reasons, why);
			for (int w = 0; w < inv->nwatch; w++)
				*old_relids = list_append_unique_oid(*old_relids, inv->watch[w].relid);
			continue;
		}

		/* Whole, so every watched table must still have its triggers. */
		for (int w = 0; w < inv->nwatch; w++)
		{
			Oid			relid = inv->watch[w].relid;
			List	   *rels;
			const char *missing = NULL;
			Oid			where = relid;

			if (!find_our_trigger(relid, ROW_TRIGGER, NULL))
				missing = ROW_TRIGGER;
			rels = get_rel_relkind(relid) == RELKIND_PARTITIONED_TABLE ?
				find_all_inheritors(relid, NoLock, NULL) : list_make1_oid(relid);
			foreach(lc2, rels)
			{
				if (missing == NULL &&
					!find_our_trigger(lfirst_oid(lc2), TRUNCATE_TRIGGER, NULL))
				{
					missing = TRUNCATE_TRIGGER;
					where = lfirst_oid(lc2);
				}
			}
			if (missing != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
						 errmsg("cannot drop trigger \"%s\" on table %s because invariant \"%s\" needs it",
								missing, qualified_name(where), inv->name),
						 errhint("Drop the invariant with idem.unenforce_invariant() first.")));
		}
	}
}


/* Remember which tables the DROP removed, by OID and name. */
static void
collect_dropped_tables(void)
{
	int			rc;

	dropped_rel_oids = NIL;
	dropped_rel_names = NIL;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_idem: SPI_connect failed");
	rc = SPI_execute("SELECT objid, object_identity"
					 " FROM pg_catalog.pg_event_trigger_dropped_objects()"
					 " WHERE classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass"
					 " AND objsubid OPERATOR(pg_catalog.=) 0",
					 true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_idem: pg_event_trigger_dropped_objects() returned %s",
			 SPI_result_code_string(rc));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		oid = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
		char	   *name = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2);
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		dropped_rel_oids = lappend_oid(dropped_rel_oids, DatumGetObjectId(oid));
		dropped_rel_names = lappend(dropped_rel_names, pstrdup(name ? name : "?"));
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
}

/*
 * Is relid a partition that an invariant watches through a partitioned
 * ancestor?  Read from pg_trigger alone, without a lock on the relation
 * (the caller locks it afterwards, parent first): the row trigger
 * PostgreSQL cloned from the watched ancestor.  This runs as the role
 * issuing the DDL, which may not read pg_idem's catalog (or even look up
 * its schema's functions by name), so the function is recognised by its
 * schema and name.
 */
static bool
partition_watched_by_ancestor(Oid relid)
{
	Oid			tgfoid,
				tgparentid;
	char	   *nsp;
	char	   *fname;

	if (!trigger_by_name(relid, ROW_TRIGGER, &tgfoid, &tgparentid) ||
		!OidIsValid(tgparentid))
		return false;
	nsp = get_namespace_name(get_func_namespace(tgfoid));
	fname = get_func_name(tgfoid);
	return nsp != NULL && fname != NULL &&
		strcmp(nsp, "idem") == 0 && strcmp(fname, "invariant_touch") == 0;
}

/* Does the relation, or any partition below it, hold a row? */
static bool
relation_tree_has_rows(Oid relid)
{
	List	   *rels = find_all_inheritors(relid, AccessExclusiveLock, NULL);
	ListCell   *lc;
	Snapshot	latest = RegisterSnapshot(GetLatestSnapshot());
	bool		found = false;

	foreach(lc, rels)
	{
		Relation	rel = table_open(lfirst_oid(lc), NoLock);

		if (rel->rd_rel->relkind == RELKIND_RELATION)
		{
			TableScanDesc scan = table_beginscan(rel, latest, 0, NULL);
			TupleTableSlot *slot = table_slot_create(rel, NULL);

			found = table_scan_getnextslot(scan, ForwardScanDirection, slot);
			ExecDropSingleTupleTableSlot(slot);
			table_endscan(scan);
		}
		table_close(rel, NoLock);
		if (found)
			break;
	}
	UnregisterSnapshot(latest);
	return found;
}

/*
 * The ddl_command_start event trigger of DROP TABLE.  Dropping a partition
 * of a watched partitioned table removes its rows without firing any row
 * trigger, so the groups they leave would never be checked (as DETACH
 * PARTITION, which ddl_command_end refuses).  A partition that still has
 * rows is therefore refused; an empty one, or one dropped together with
 * an ancestor (whose invariants the sql_drop trigger then drops), may go.
 *
 * It runs before DROP has resolved the names, so it resolves them itself,
 * with the caller's search_path (not SECURITY DEFINER, no SET), and looks
 * only at relations DROP would let the caller drop -- the owner of the
 * table or of its schema; DROP refuses the others before it locks them
 * (RangeVarCallbackForDropRelation in tablecmds.c), and so must this, or
 * anybody could queue an AccessExclusiveLock on a busy table.  The locks
 * it takes are the ones DROP takes next, in DROP's order: the parent, then
 * the partition (the other order could deadlock with a query of the
 * parent).  The latest snapshot, under those locks, sees every committed
 * row; rows this transaction deleted are gone from it, and their DELETEs
 * have the groups checked at commit.
 */
Datum
idem_invariant_drop_start(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	DropStmt   *stmt;
	List	   *named = NIL;
	ListCell   *lc;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("idem.invariant_drop_start() can only be called as an event trigger")));
	trigdata = (EventTriggerData *) fcinfo->context;
	if (own_ddl_depth > 0 || trigdata->parsetree == NULL ||
		!IsA(trigdata->parsetree, DropStmt))
		PG_RETURN_VOID();
	stmt = (DropStmt *) trigdata->parsetree;
	if (stmt->removeType != OBJECT_TABLE)
		PG_RETURN_VOID();

	foreach(lc, stmt->objects)
	{
		RangeVar   *rv = makeRangeVarFromNameList((List *) lfirst(lc));
		Oid			relid = RangeVarGetRelid(rv, NoLock, true);

		if (OidIsValid(relid))
			named = lappend_oid(named, relid);
	}

	foreach(lc, named)
	{
		Oid			relid = lfirst_oid(lc);
		char		relkind = get_rel_relkind(relid);
		Oid			parent;
		ListCell   *lc2;
		bool		ancestor_dropped = false;

		if ((relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE) ||
			!get_rel_relispartition(relid) ||
			!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)) ||
			!(idem_relation_ownercheck(relid, GetUserId()) ||
			  idem_namespace_ownercheck(get_rel_namespace(relid), GetUserId())))
			continue;
		/* dropped with an ancestor named too: its invariants go with it */
		foreach(lc2, get_partition_ancestors(relid))
			if (list_member_oid(named, lfirst_oid(lc2)))
				ancestor_dropped = true;
		if (ancestor_dropped || !partition_watched_by_ancestor(relid))
			continue;

		parent = get_partition_parent(relid, true);
		LockRelationOid(parent, AccessExclusiveLock);
		LockRelationOid(relid, AccessExclusiveLock);
		if (!SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)) ||
			!get_rel_relispartition(relid) ||
			get_partition_parent(relid, true) != parent)
			continue;			/* dropped or detached meanwhile: DROP will see */
		if (relation_tree_has_rows(relid))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("cannot drop partition \"%s\" of a table that an invariant watches while it has rows",
							get_rel_name(relid)),
					 errdetail("Its rows would leave their groups without firing a row trigger, so those groups would not be checked."),
					 errhint("Delete its rows first (each group they leave is then checked), or drop the invariant with idem.unenforce_invariant(), drop the partition, then declare the invariant again.")));
	}
	PG_RETURN_VOID();
}

/*
 * The sql_drop event trigger.  A DROP that removed something an invariant
 * needs (a watched table or column, or anything its check reads) drops the
 * invariant too, with a NOTICE, as DROP ... CASCADE drops a view; the
 * triggers it leaves unused go with it.  A DROP TRIGGER of a trigger an
 * invariant needs is refused.
 */
Datum
idem_invariant_sql_drop(PG_FUNCTION_ARGS)
{
	/* Lists filled inside PG_TRY live behind a pointer, safe from longjmp. */
	List	  **lists = palloc0(sizeof(List *) * 3);
	List	   *broken;
	List	   *reasons;
	List	   *old_relids;
	ListCell   *lc;
	ListCell   *lc2;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("idem.invariant_sql_drop() can only be called as an event trigger")));
	if (own_ddl_depth > 0 || checking)
		PG_RETURN_VOID();

	inv_stale = true;
	inv_cache_ensure();
	if (inv_list == NIL)
		PG_RETURN_VOID();

	collect_dropped_tables();
	inv_busy++;
	PG_TRY();
	{
		judge_invariants_after_drop(&lists[0], &lists[1], &lists[2]);
	}
	PG_FINALLY();
	{
		inv_busy--;
		dropped_rel_oids = NIL;
		dropped_rel_names = NIL;
	}
	PG_END_TRY();
	broken = lists[0];
	reasons = lists[1];
	old_relids = lists[2];

	forboth(lc, broken, lc2, reasons)
	{
		delete_invariant((char *) lfirst(lc));
		ereport(NOTICE,
				(errmsg("dropping invariant \"%s\"", (char *) lfirst(lc)),
				 errdetail("%s", (char *) lfirst(lc2))));
	}
	if (broken != NIL)
	{
		invalidate_relations(old_relids);
		CommandCounterIncrement();
		sync_triggers(old_relids);
	}
	PG_RETURN_VOID();
}

/*
 * The relations a DDL command made into partitions (CREATE TABLE ...
 * PARTITION OF), or whose partitions it added to (ALTER TABLE ... ATTACH
 * PARTITION).
 */
static List *
new_partitions(void)
{
	List	   *result = NIL;
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_idem: SPI_connect failed");
	rc = SPI_execute("SELECT command FROM pg_catalog.pg_event_trigger_ddl_commands()",
					 true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_idem: pg_event_trigger_ddl_commands() returned %s",
			 SPI_result_code_string(rc));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull);
		CollectedCommand *cmd;

		if (isnull)
			continue;
		cmd = (CollectedCommand *) DatumGetPointer(d);
		if (cmd->type == SCT_Simple &&
			cmd->d.simple.address.classId == RelationRelationId &&
			cmd->parsetree != NULL && IsA(cmd->parsetree, CreateStmt) &&
			((CreateStmt *) cmd->parsetree)->partbound != NULL)
			result = lappend_oid(result, cmd->d.simple.address.objectId);
		else if (cmd->type == SCT_AlterTable)
		{
			ListCell   *lc;

			foreach(lc, cmd->d.alterTable.subcmds)
			{
				CollectedATSubcmd *sub = (CollectedATSubcmd *) lfirst(lc);

				/*
				 * The subcommand does not record which relation it
				 * attached; the parent's partitions include it.
				 */
				if (sub->parsetree != NULL && IsA(sub->parsetree, AlterTableCmd) &&
					((AlterTableCmd *) sub->parsetree)->subtype == AT_AttachPartition &&
					cmd->d.alterTable.classId == RelationRelationId)
					result = list_append_unique_oid(result, cmd->d.alterTable.objectId);
			}
		}
	}
	SPI_finish();
	return result;
}

/*
 * Does a partition attached to parent in this transaction have rows?  The
 * subcommand names it by a RangeVar that this function's pinned
 * search_path cannot resolve, so the partitions whose pg_inherits row this
 * transaction wrote are looked at instead (a partition created here too is
 * looked at; CREATE ... PARTITION OF makes an empty one).
 */
static bool
attached_partition_has_rows(Oid parent)
{
	Relation	inh = table_open(InheritsRelationId, AccessShareLock);
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	List	   *children = NIL;
	ListCell   *lc;
	bool		has_rows = false;

	ScanKeyInit(&key, Anum_pg_inherits_inhparent, BTEqualStrategyNumber,
				F_OIDEQ, ObjectIdGetDatum(parent));
	scan = systable_beginscan(inh, InheritsParentIndexId, true, NULL, 1, &key);
	while (HeapTupleIsValid(tup = systable_getnext(scan)))
		if (TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetXmin(tup->t_data)))
			children = lappend_oid(children, ((Form_pg_inherits) GETSTRUCT(tup))->inhrelid);
	systable_endscan(scan);
	table_close(inh, AccessShareLock);

	foreach(lc, children)
	{
		bool		isnull;
		int			rc = SPI_execute(psprintf("SELECT EXISTS (SELECT FROM %s)",
											  qualified_name(lfirst_oid(lc))), true, 1);

		if (rc == SPI_OK_SELECT && SPI_processed == 1 &&
			DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull)))
			has_rows = true;
	}
	return has_rows;
}

/*
 * Refuse the ALTER TABLE subcommands that move or rewrite rows of a watched
 * table without firing its row triggers, so that no group they change
 * would be checked (review findings): DETACH PARTITION (rows leave their
 * groups), ATTACH PARTITION of a table that has rows (rows join groups),
 * and ALTER COLUMN ... TYPE ... USING (rows get values computed by an
 * expression).  The way through is the documented one: unenforce, change,
 * enforce again, which validates every group.
 */
static void
refuse_unchecked_rewrites(void)
{
	int			rc;
	SPITupleTable *commands;
	uint64		ncommands;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_idem: SPI_connect failed");
	rc = SPI_execute("SELECT command FROM pg_catalog.pg_event_trigger_ddl_commands()",
					 true, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_idem: pg_event_trigger_ddl_commands() returned %s",
			 SPI_result_code_string(rc));
	commands = SPI_tuptable;
	ncommands = SPI_processed;
	for (uint64 r = 0; r < ncommands; r++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(commands->vals[r], commands->tupdesc, 1, &isnull);
		CollectedCommand *cmd;
		ListCell   *lc;

		if (isnull)
			continue;
		cmd = (CollectedCommand *) DatumGetPointer(d);
		if (cmd->type != SCT_AlterTable ||
			cmd->d.alterTable.classId != RelationRelationId ||
			!rel_is_covered(cmd->d.alterTable.objectId))
			continue;
		foreach(lc, cmd->d.alterTable.subcmds)
		{
			CollectedATSubcmd *sub = (CollectedATSubcmd *) lfirst(lc);
			AlterTableCmd *at;
			const char *what = NULL;

			if (sub->parsetree == NULL || !IsA(sub->parsetree, AlterTableCmd))
				continue;
			at = (AlterTableCmd *) sub->parsetree;
			if (at->subtype == AT_DetachPartition ||
				at->subtype == AT_DetachPartitionFinalize)
				what = "DETACH PARTITION";
			else if (at->subtype == AT_AlterColumnType && at->def != NULL &&
					 IsA(at->def, ColumnDef) &&
					 (((ColumnDef *) at->def)->raw_default != NULL ||
					  ((ColumnDef *) at->def)->cooked_default != NULL))
				what = "ALTER COLUMN ... TYPE ... USING";
			else if (at->subtype == AT_AttachPartition &&
					 attached_partition_has_rows(cmd->d.alterTable.objectId))
				what = "ATTACH a partition that has rows";
			if (what != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot %s on table \"%s\", which an invariant watches",
								what, get_rel_name(cmd->d.alterTable.objectId)),
						 errdetail("The rows it moves or rewrites fire no row trigger, so the groups they change would not be checked."),
						 errhint("Drop the invariant with idem.unenforce_invariant(), make the change, then declare the invariant again (which checks every group).")));
		}
	}
	SPI_finish();
}

/*
 * The ddl_command_end event trigger (ALTER and CREATE of tables, schemas,
 * types, functions ...).  A change that leaves an invariant unable to be
 * checked -- a rename of a table or column its check names, a type change
 * its check cannot take -- is refused.  A partition created or attached
 * under a watched table gets the TRUNCATE guard (its row trigger is cloned
 * by PostgreSQL).
 */
Datum
idem_invariant_ddl_end(PG_FUNCTION_ARGS)
{
	List	   *parts;
	ListCell   *lc;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("idem.invariant_ddl_end() can only be called as an event trigger")));
	if (own_ddl_depth > 0 || checking)
		PG_RETURN_VOID();

	inv_stale = true;
	inv_cache_ensure();
	if (inv_list == NIL)
		PG_RETURN_VOID();

	inv_busy++;
	PG_TRY();
	{
		foreach(lc, inv_list)
		{
			Invariant  *inv = (Invariant *) lfirst(lc);
			char	   *why = invariant_broken(inv);

			if (why != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
						 errmsg("cannot make this change because invariant \"%s\" depends on what it changes",
								inv->name),
						 errdetail("%s", why),
						 errhint("Drop the invariant with idem.unenforce_invariant(), make the change, then declare the invariant again.")));
		}
	}
	PG_FINALLY();
	{
		inv_busy--;
	}
	PG_END_TRY();

	refuse_unchecked_rewrites();
	parts = new_partitions();
	foreach(lc, parts)
	{
		Oid			relid = lfirst_oid(lc);

		inv_cache_ensure();
		if (rel_is_covered(relid))
			ensure_truncate_triggers(relid);
	}
	PG_RETURN_VOID();
}
