/*-------------------------------------------------------------------------
 *
 * privileges.c
 *	  Who may touch which idempotency scope, outbox topic and consumer
 *	  (SPEC.md section 4, "Least privilege").
 *
 * EXECUTE on the functions says whether a role may use pg_idem at all;
 * idem.grants says on what.  idem.grant_usage(role, scopes, topics) writes
 * one row per role: LIKE patterns of the scopes whose keys the role may
 * reserve, complete, release, checkpoint and forget, and of the topics it
 * may emit to and subscribe to (NULL: all of them, the 0.1 meaning).  A
 * role's rights are the union of the rows of every role whose privileges
 * it has (PostgreSQL's has_privs_of_role: itself, and the roles it is an
 * inheriting member of), so a grant to a group role serves its members.  A
 * role with no applicable row has no scope and no topic at all: EXECUTE
 * granted by hand is not enough since 0.2.  Superusers and members of the
 * role owning pg_idem's tables are not checked, as an owner is not checked
 * on its own tables.
 *
 * Consumers belong to the role that subscribed them (idem.consumers.owner):
 * only that role and its members may read, finish, re-subscribe or
 * unsubscribe them, and only while they may read every topic of the
 * consumer's filter.  A consumer created before 0.2 has no owner: every
 * role with a grant may use it, and the first one to re-subscribe it takes
 * it (outbox.c).
 *
 * Rights are always those of the current user (GetUserId()), as in
 * PostgreSQL's own checks: after SET ROLE, the role set; inside a SECURITY
 * DEFINER function, its owner.  That is why the functions application
 * roles call run as their caller (SECURITY INVOKER) and switch to the
 * tables' owner only for their own SQL (idem_become_table_owner).
 *
 * The checks sit on reserve() and emit(), whose whole cost is a few
 * microseconds, so they are answered from a per-backend cache: per user id,
 * the union of the patterns, and per scope or topic already asked about,
 * the answer.  A call costs one hash lookup.  The cache is dropped when
 * idem.grants changes (its statement trigger, idem.grants_changed(), sends
 * a relcache invalidation for the table, and ALTER TABLE, DROP EXTENSION
 * and a change of owner send one anyway), when role memberships change
 * (syscache AUTHMEMROLEMEM) and when a role changes (AUTHOID: superuser,
 * inherit, DROP ROLE).  Every check first accepts pending invalidations, so
 * a revoked grant takes effect in every open session at its next call, in
 * a transaction already under way too.
 *
 * A database not yet updated to 0.2 has no idem.grants: there, everything
 * is allowed, as in 0.1, until ALTER EXTENSION pg_idem UPDATE.
 *
 * IDENTIFICATION
 *	  src/privileges.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "common/keywords.h"
#include "common/kwlookup.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "pg_idem.h"
#include "privileges.h"

/* What a pattern list is about; also the first byte of a cached answer's key */
typedef enum PrivKind
{
	PRIV_SCOPE,
	PRIV_TOPIC
} PrivKind;

/* The union of a user's patterns of one kind */
typedef struct PrivPatterns
{
	bool		all;			/* some applicable grant has NULL: everything */
	int			n;
	int			cap;
	text	  **items;			/* LIKE patterns, valid ones only */
} PrivPatterns;

/*
 * Key of a cached answer: kind, length, and the name's bytes (names are at
 * most IDEM_MAX_NAME_BYTES).  Only the first 2 + len bytes are hashed and
 * compared (priv_answer_hash, priv_answer_match).
 */
typedef struct PrivAnswerKey
{
	uint8		kind;
	uint8		len;
	char		name[IDEM_MAX_NAME_BYTES];
} PrivAnswerKey;

typedef struct PrivAnswer
{
	PrivAnswerKey key;
	bool		allowed;
} PrivAnswer;

/* Everything known about one user id */
typedef struct PrivUser
{
	Oid			userid;			/* hash key */
	bool		loaded;			/* false while being filled (an error may interrupt it) */
	bool		bypass;			/* superuser, member of the owner, or no idem.grants */
	bool		granted;		/* some row of idem.grants applies */
	PrivPatterns scopes;
	PrivPatterns topics;
	HTAB	   *answers;		/* PrivAnswerKey -> PrivAnswer */
	long		nanswers;
} PrivUser;

/* Cached answers per user before the cache is emptied (scopes may be per tenant) */
#define PRIV_MAX_ANSWERS 8192

/* At most this many patterns are listed in a message */
#define PRIV_LIST_MAX 8

static MemoryContext priv_cxt = NULL;
static HTAB *priv_users = NULL;
static PrivUser *priv_last = NULL;	/* the last user asked about */
static bool priv_valid = false;
static uint64 priv_gen = 0;		/* bumped by every invalidation */
static bool priv_callbacks_registered = false;
static Oid	priv_grants_relid = InvalidOid; /* idem.grants, if it exists */
static Oid	priv_owner = InvalidOid;	/* its owner: pg_idem's owner */

static void priv_register_callbacks(void);
static void priv_invalidate(void);
static void priv_relcache_callback(Datum arg, Oid relid);
static void priv_syscache_callback(Datum arg, int cacheid, uint32 hashvalue);
static void priv_reset(void);
static PrivUser *priv_user(Oid userid);
static PrivUser *priv_user_slow(Oid userid);
static void priv_user_load(PrivUser *u, Oid userid);
static void priv_add_patterns(PrivPatterns *p, Datum arr);
static bool pattern_is_valid(text *pattern);
static uint32 priv_answer_hash(const void *key, Size keysize);
static int	priv_answer_match(const void *key1, const void *key2, Size keysize);
static HTAB *priv_answers_create(void);
static bool priv_matches(const PrivPatterns *p, text *name);
static bool priv_allowed(PrivUser *u, PrivKind kind, text *name);
static char *role_name(Oid roleid);
static char *patterns_phrase(const PrivPatterns *p);
static int	errdetail_rights(PrivUser *u, PrivKind kind);
static void report_not_granted(PrivUser *u, const char *fname) pg_attribute_noreturn();


/* Register the invalidation callbacks, once per backend. */
static void
priv_register_callbacks(void)
{
	if (priv_callbacks_registered)
		return;
	CacheRegisterRelcacheCallback(priv_relcache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, priv_syscache_callback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, priv_syscache_callback, (Datum) 0);
	priv_callbacks_registered = true;
}

/*
 * Forget everything.  Only marks the cache stale: the memory is reset when
 * it is next rebuilt, never under a caller that still holds an entry.
 */
static void
priv_invalidate(void)
{
	priv_valid = false;
	priv_last = NULL;
	priv_gen++;
}

/*
 * Relcache callback: idem.grants changed (its rows, through its trigger;
 * its definition or owner; the extension was dropped), or everything may
 * have.  While the table is not known to exist, any relcache invalidation
 * may be its creation by ALTER EXTENSION pg_idem UPDATE.
 */
static void
priv_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == priv_grants_relid ||
		!OidIsValid(priv_grants_relid))
		priv_invalidate();
}

/* Syscache callback: a role or a role membership changed. */
static void
priv_syscache_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	priv_invalidate();
}

/*
 * Start the cache afresh: empty it, and find idem.grants and its owner by
 * name (never through search_path).
 */
static void
priv_reset(void)
{
	HASHCTL		ctl;
	Oid			nsp;

	if (priv_cxt == NULL)
		priv_cxt = AllocSetContextCreate(TopMemoryContext, "pg_idem privileges",
										 ALLOCSET_SMALL_SIZES);
	MemoryContextReset(priv_cxt);
	priv_users = NULL;
	priv_last = NULL;

	nsp = get_namespace_oid("idem", true);
	priv_grants_relid = OidIsValid(nsp) ? get_relname_relid("grants", nsp) : InvalidOid;
	priv_owner = InvalidOid;
	if (OidIsValid(priv_grants_relid))
	{
		HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(priv_grants_relid));

		if (HeapTupleIsValid(tup))
		{
			priv_owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
			ReleaseSysCache(tup);
		}
		else
			priv_grants_relid = InvalidOid;
	}

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(PrivUser);
	ctl.hcxt = priv_cxt;
	priv_users = hash_create("pg_idem privileges per user", 8, &ctl,
							 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	priv_valid = true;
}

/*
 * The cache entry of userid: the last one asked about, in one comparison.
 *
 * Invalidations are accepted first, so that a grant narrowed or revoked by
 * a transaction that has committed counts from the next call on, even in a
 * transaction already under way (which would otherwise see it only at its
 * next lock acquisition or its end).  With nothing pending that is one
 * unlocked read of a flag in shared memory.
 */
static inline PrivUser *
priv_user(Oid userid)
{
	AcceptInvalidationMessages();
	if (likely(priv_valid && priv_last != NULL && priv_last->userid == userid))
		return priv_last;
	return priv_user_slow(userid);
}

/*
 * Find or build the entry of userid.  Building it reads catalogs and
 * idem.grants, which may process invalidation messages; if one arrived
 * meanwhile, what was read may be stale: start over.
 */
static PrivUser *
priv_user_slow(Oid userid)
{
	priv_register_callbacks();
	for (;;)
	{
		uint64		gen = priv_gen;
		PrivUser   *u;
		bool		found;

		if (!priv_valid)
			priv_reset();
		if (gen != priv_gen)
			continue;
		u = hash_search(priv_users, &userid, HASH_ENTER, &found);
		if (!found || !u->loaded)
		{
			u->loaded = false;
			priv_user_load(u, userid);
		}
		if (gen == priv_gen)
		{
			priv_last = u;
			return u;
		}
	}
}

/*
 * Fill a user's entry: exempt, or the union of the patterns of every row
 * of idem.grants whose role the user has the privileges of.  The table is
 * read with the latest snapshot, not the transaction's: under REPEATABLE
 * READ an old snapshot would miss a revocation whose invalidation has
 * already been processed, and the stale answer would then be kept.
 */
static void
priv_user_load(PrivUser *u, Oid userid)
{
	MemoryContext oldcxt;

	u->userid = userid;
	u->granted = false;
	memset(&u->scopes, 0, sizeof(PrivPatterns));
	memset(&u->topics, 0, sizeof(PrivPatterns));
	u->answers = NULL;
	u->nanswers = 0;
	u->bypass = !OidIsValid(priv_grants_relid) || superuser_arg(userid) ||
		has_privs_of_role(userid, priv_owner);

	if (!u->bypass)
	{
		Relation	rel = table_open(priv_grants_relid, AccessShareLock);
		TupleDesc	desc = RelationGetDescr(rel);
		int			att_role = 0,
					att_scopes = 0,
					att_topics = 0;
		Snapshot	snapshot;
		TableScanDesc scan;
		TupleTableSlot *slot;

		for (int i = 0; i < desc->natts; i++)
		{
			Form_pg_attribute a = TupleDescAttr(desc, i);

			if (a->attisdropped)
				continue;
			if (strcmp(NameStr(a->attname), "role") == 0 &&
				(a->atttypid == REGROLEOID || a->atttypid == OIDOID))
				att_role = a->attnum;
			else if (strcmp(NameStr(a->attname), "scopes") == 0 && a->atttypid == TEXTARRAYOID)
				att_scopes = a->attnum;
			else if (strcmp(NameStr(a->attname), "topics") == 0 && a->atttypid == TEXTARRAYOID)
				att_topics = a->attnum;
		}
		if (att_role == 0 || att_scopes == 0 || att_topics == 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("pg_idem is not installed correctly: idem.grants lacks column role, scopes or topics"),
					 errhint("Run ALTER EXTENSION pg_idem UPDATE, or drop and create the extension.")));

		snapshot = RegisterSnapshot(GetLatestSnapshot());
		scan = table_beginscan(rel, snapshot, 0, NULL);
		slot = table_slot_create(rel, NULL);
		oldcxt = MemoryContextSwitchTo(priv_cxt);
		while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
		{
			bool		isnull;
			Datum		role = slot_getattr(slot, att_role, &isnull);
			Datum		arr;

			if (isnull || !has_privs_of_role(userid, DatumGetObjectId(role)))
				continue;
			u->granted = true;
			arr = slot_getattr(slot, att_scopes, &isnull);
			if (isnull)
				u->scopes.all = true;
			else
				priv_add_patterns(&u->scopes, arr);
			arr = slot_getattr(slot, att_topics, &isnull);
			if (isnull)
				u->topics.all = true;
			else
				priv_add_patterns(&u->topics, arr);
		}
		MemoryContextSwitchTo(oldcxt);
		ExecDropSingleTupleTableSlot(slot);
		table_endscan(scan);
		UnregisterSnapshot(snapshot);
		table_close(rel, AccessShareLock);
	}
	u->answers = priv_answers_create();
	u->loaded = true;
}

/*
 * Add the valid patterns of a text[] to a list (in priv_cxt).  NULL
 * elements and invalid patterns, which only a direct write to idem.grants
 * can store (grant_usage() refuses them), match nothing.
 */
static void
priv_add_patterns(PrivPatterns *p, Datum arr)
{
	ArrayType  *a = DatumGetArrayTypeP(arr);
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		text	   *pat;

		if (nulls[i])
			continue;
		pat = DatumGetTextPCopy(elems[i]);
		if (!pattern_is_valid(pat))
			continue;
		if (p->n >= p->cap)
		{
			p->cap = Max(p->cap * 2, 4);
			p->items = p->items ? repalloc(p->items, sizeof(text *) * p->cap)
				: palloc(sizeof(text *) * p->cap);
		}
		p->items[p->n++] = pat;
	}
}

/*
 * Can LIKE use this pattern?  Its only error is a pattern ending with an
 * unpaired escape character (the default, a backslash).
 */
static bool
pattern_is_valid(text *pattern)
{
	const char *s = VARDATA_ANY(pattern);
	int			len = VARSIZE_ANY_EXHDR(pattern);
	int			trailing = 0;

	while (trailing < len && s[len - 1 - trailing] == '\\')
		trailing++;
	return trailing % 2 == 0;
}

static uint32
priv_answer_hash(const void *key, Size keysize)
{
	const PrivAnswerKey *k = (const PrivAnswerKey *) key;

	return hash_bytes((const unsigned char *) k, offsetof(PrivAnswerKey, name) + k->len);
}

static int
priv_answer_match(const void *key1, const void *key2, Size keysize)
{
	const PrivAnswerKey *a = (const PrivAnswerKey *) key1;
	const PrivAnswerKey *b = (const PrivAnswerKey *) key2;

	if (a->kind != b->kind || a->len != b->len)
		return 1;
	return memcmp(a->name, b->name, a->len);
}

/* A user's table of answers, in priv_cxt. */
static HTAB *
priv_answers_create(void)
{
	HASHCTL		ctl;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(PrivAnswerKey);
	ctl.entrysize = sizeof(PrivAnswer);
	ctl.hash = priv_answer_hash;
	ctl.match = priv_answer_match;
	ctl.hcxt = priv_cxt;
	return hash_create("pg_idem privilege answers", 64, &ctl,
					   HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
}

/*
 * Does a name match one of the patterns?  LIKE itself decides (textlike,
 * byte-wise under collation "C", like the keys' own columns), so that the
 * patterns mean exactly what they mean in SQL.
 */
static bool
priv_matches(const PrivPatterns *p, text *name)
{
	if (p->all)
		return true;
	for (int i = 0; i < p->n; i++)
		if (DatumGetBool(DirectFunctionCall2Coll(textlike, C_COLLATION_OID,
												 PointerGetDatum(name),
												 PointerGetDatum(p->items[i]))))
			return true;
	return false;
}

/* May user u use this scope or topic?  One hash lookup once asked before. */
static bool
priv_allowed(PrivUser *u, PrivKind kind, text *name)
{
	PrivPatterns *p = kind == PRIV_SCOPE ? &u->scopes : &u->topics;
	int			len = VARSIZE_ANY_EXHDR(name);
	PrivAnswerKey key;
	PrivAnswer *a;
	bool		allowed;

	if (u->bypass || p->all)
		return true;
	if (p->n == 0)
		return false;
	if (len > IDEM_MAX_NAME_BYTES)
		return priv_matches(p, name);	/* not a valid name: never cached */

	key.kind = (uint8) kind;
	key.len = (uint8) len;
	memcpy(key.name, VARDATA_ANY(name), len);
	a = hash_search(u->answers, &key, HASH_FIND, NULL);
	if (a != NULL)
		return a->allowed;

	allowed = priv_matches(p, name);
	if (u->nanswers >= PRIV_MAX_ANSWERS)
	{
		hash_destroy(u->answers);
		u->answers = priv_answers_create();
		u->nanswers = 0;
	}
	a = hash_search(u->answers, &key, HASH_ENTER, NULL);
	a->allowed = allowed;
	u->nanswers++;
	return allowed;
}

/* A role's name for a message, or its OID when it was dropped. */
static char *
role_name(Oid roleid)
{
	char	   *name = GetUserNameFromId(roleid, true);

	return name ? name : psprintf("with OID %u", roleid);
}

/* 'a', 'b%', ... for a message: the patterns of a list, the first few. */
static char *
patterns_phrase(const PrivPatterns *p)
{
	StringInfoData s;

	initStringInfo(&s);
	for (int i = 0; i < p->n && i < PRIV_LIST_MAX; i++)
	{
		if (i > 0)
			appendStringInfoString(&s, ", ");
		appendStringInfoString(&s, quote_literal_cstr(text_to_cstring(p->items[i])));
	}
	if (p->n > PRIV_LIST_MAX)
		appendStringInfo(&s, " and %d more", p->n - PRIV_LIST_MAX);
	return s.data;
}

/* The DETAIL of a refusal: what the user may use instead. */
static int
errdetail_rights(PrivUser *u, PrivKind kind)
{
	const PrivPatterns *p = kind == PRIV_SCOPE ? &u->scopes : &u->topics;
	const char *what = kind == PRIV_SCOPE ? "scope" : "topic";
	char	   *role = role_name(u->userid);

	if (!u->granted)
		return errdetail("Role \"%s\" has no pg_idem grant, neither its own nor inherited from a role it is a member of.",
						 role);
	if (p->n == 0)
		return errdetail("Role \"%s\" is granted no %s.", role, what);
	return errdetail("Role \"%s\" is granted the %ss matching %s.", role, what,
					 patterns_phrase(p));
}


/* Are pg_idem's grants in force here? */
bool
idem_privileges_enabled(void)
{
	if (!(priv_valid && priv_callbacks_registered))
	{
		priv_register_callbacks();
		while (!priv_valid)
			priv_reset();
	}
	return OidIsValid(priv_grants_relid);
}

/*
 * The first-hour error: a role without any pg_idem grant called one of the
 * application functions.  The HINT is the exact statement that fixes it,
 * with the role's name quoted as regrole input needs.
 */
static void
report_not_granted(PrivUser *u, const char *fname)
{
	char	   *role = role_name(u->userid);

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for %s", fname),
			 errdetail("Role \"%s\" has no pg_idem grant, neither its own nor inherited from a role it is a member of.",
					   role),
			 errhint("The owner of pg_idem (or a superuser) grants it with: SELECT idem.grant_usage(%s);",
					 quote_literal_cstr(quote_identifier(role)))));
}

/*
 * 42501 unless the current user may use pg_idem at all.
 *
 * Defence in depth, behind PostgreSQL's own checks: EXECUTE on the
 * application functions and USAGE on schema idem are not granted to PUBLIC
 * (SPEC.md section 4), so a role without idem.grant_usage() is normally
 * refused by PostgreSQL before any code of ours runs ("permission denied
 * for schema idem", to which first_hour_hint() below adds a HINT).  This
 * check catches a role given EXECUTE by hand but no grant: since 0.2 the
 * real gate is idem.grants (no grant, no scope and no topic), and this says
 * so at once, with the statement that fixes it, before the function reads
 * or writes anything.  It is the cached lookup of the scope and topic
 * checks: one hash probe.
 */
void
idem_check_granted(const char *fname)
{
	PrivUser   *u = priv_user(GetUserId());

	if (likely(u->bypass || u->granted))
		return;
	report_not_granted(u, fname);
}

/*
 * The first-hour HINT on PostgreSQL's own refusals.
 *
 * A role without idem.grant_usage() has neither USAGE on schema idem nor
 * EXECUTE on its functions (nothing is granted to PUBLIC: SPEC.md section
 * 4), so its first call fails in PostgreSQL's aclcheck_error(), before any
 * code of ours runs: 42501 "permission denied for schema idem", or, for a
 * role given USAGE on the schema by hand, "permission denied for function
 * reserve".  Those errors have no HINT.  We add one, naming the statement
 * that fixes it, from emit_log_hook.
 *
 * Why emit_log_hook: PostgreSQL's EmitErrorReport()
 * (src/backend/utils/error/elog.c) calls it with the ErrorData it is about
 * to report, before send_message_to_server_log() and
 * send_message_to_frontend(), so a hint set here reaches the server log and
 * the client.  elog.c says "Making any other change in the content of edata
 * is not considered supported" (than turning off output_to_server): we
 * only fill a hint that is NULL, with a string in ErrorContext (where every
 * field of the ErrorData lives, freed with it by FlushErrorState()), which
 * is what errhint() itself would have done.
 *
 * Where it works, and where not (docs/security.md says the same):
 *   - only when the library is loaded in the backend that reports the
 *     error: shared_preload_libraries (as recommended) or
 *     session_preload_libraries, or any earlier call of a pg_idem C
 *     function or LOAD 'pg_idem' in that session.  A role refused on its
 *     first call has not loaded it itself.
 *   - only where output_to_server is true: EmitErrorReport calls the hook
 *     only then, i.e. when log_min_messages is ERROR or below (the default
 *     is WARNING).  With log_min_messages = FATAL or PANIC the error reaches
 *     the client without the HINT.
 *   - only for errors that are reported: an error caught by a PL/pgSQL
 *     EXCEPTION block is never emitted, so it has no HINT.
 *
 * The hook runs inside error reporting, so it must not throw and must not
 * touch the catalogs (a cache miss would scan them in a transaction that
 * is failing, or outside any transaction).  So it recognises the error by
 * its SQLSTATE and its untranslated format (edata->message_id, which elog.c
 * passes "to be used as a message identifier"), then compares the
 * formatted message with the same format translated in the message's
 * domain and applied to "idem" or to one of pg_idem's function names (a
 * fixed list: aclcheck_error() names a function by its bare name).  The
 * role's name comes from the "role" or "session_authorization" setting,
 * which PostgreSQL keeps as a string; it is used only when it names the
 * current user (not inside a SECURITY DEFINER function, where the refused
 * user is the function's owner), else no HINT is added.  Memory comes from
 * MemoryContextAllocExtended(MCXT_ALLOC_NO_OOM): out of memory, no HINT.
 */

/*
 * The functions idem.grant_usage() grants (app_functions in
 * src/sql/90_operations.sql): a refusal of another function of ours
 * (purge, maintain, enforce_version ...) is not fixed by grant_usage, so
 * gets no HINT.  By name only, as PostgreSQL's message has it, so a
 * refused function of the same name in another schema gets the HINT too,
 * which therefore says "if this is idem.<name>()".
 */
static const char *const first_hour_functions[] = {
	"reserve", "complete", "release", "checkpoint", "forget", "fingerprint",
	"emit", "subscribe", "unsubscribe", "next_batch", "finish_batch",
	"check_invariants"
};

static emit_log_hook_type prev_emit_log_hook = NULL;

static void first_hour_hint(ErrorData *edata);
static bool message_is(const ErrorData *edata, const char *name);
static const char *first_hour_role(void);
static char *quote_role_literal(const char *role);

/*
 * Install the hook, chained after any earlier one, once per backend
 * (_PG_init runs once per process).
 */
void
idem_privileges_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = first_hour_hint;
}

/* Does edata's message equal its own format, translated, applied to name? */
static bool
message_is(const ErrorData *edata, const char *name)
{
	char		buf[NAMEDATALEN + 512];
	const char *fmt = edata->message_id;
	int			n;

	if (edata->domain != NULL)
		fmt = dgettext(edata->domain, fmt);
	n = snprintf(buf, sizeof(buf), fmt, name);
	return n >= 0 && n < (int) sizeof(buf) && strcmp(buf, edata->message) == 0;
}

/*
 * The current user's name, if a setting holds it, else NULL.  No catalog
 * access: PostgreSQL keeps the name given to SET ROLE in "role" and the
 * session user's name in "session_authorization" (set at connection and
 * by SET SESSION AUTHORIZATION), and GetConfigOption() with missing_ok
 * only searches the settings.  The ids are compared so that a name is
 * never given for another user than the one refused.
 */
static const char *
first_hour_role(void)
{
	Oid			userid;
	int			sec_context;
	Oid			named;
	const char *name;

	GetUserIdAndSecContext(&userid, &sec_context);
	if (!OidIsValid(userid))
		return NULL;
	name = GetConfigOption("role", true, false);
	if (name != NULL && strcmp(name, "none") != 0)
		named = GetCurrentRoleId();
	else
	{
		name = GetConfigOption("session_authorization", true, false);
		named = GetSessionUserId();
	}
	if (name == NULL || name[0] == '\0' || named != userid)
		return NULL;
	return name;
}

/*
 * role as regrole input in a string literal, as
 * quote_literal_cstr(quote_identifier(role)) makes it, without throwing:
 * the keyword lookup is quote_identifier()'s, memory is ErrorContext's,
 * NULL when there is none.
 */
static char *
quote_role_literal(const char *role)
{
	size_t		len = strlen(role);
	bool		safe;
	bool		backslash = false;
	char		ident[2 * NAMEDATALEN + 3];
	char	   *p;
	char	   *out;
	char	   *q;

	if (len >= NAMEDATALEN)
		return NULL;

	/* quote_identifier()'s rule */
	safe = (role[0] >= 'a' && role[0] <= 'z') || role[0] == '_';
	for (p = (char *) role; safe && *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			safe = false;
	if (safe && quote_all_identifiers)
		safe = false;
	if (safe)
	{
		int			kwnum = ScanKeywordLookup(role, &ScanKeywords);

		if (kwnum >= 0 && ScanKeywordCategories[kwnum] != UNRESERVED_KEYWORD)
			safe = false;
	}
	q = ident;
	if (!safe)
		*q++ = '"';
	for (p = (char *) role; *p; p++)
	{
		if (*p == '"')
			*q++ = '"';
		*q++ = *p;
	}
	if (!safe)
		*q++ = '"';
	*q = '\0';

	/* quote_literal_cstr()'s rule */
	out = MemoryContextAllocExtended(ErrorContext, 2 * strlen(ident) + 4,
									 MCXT_ALLOC_NO_OOM);
	if (out == NULL)
		return NULL;
	for (p = ident; *p; p++)
		if (*p == '\\')
			backslash = true;
	q = out;
	if (backslash)
		*q++ = 'E';
	*q++ = '\'';
	for (p = ident; *p; p++)
	{
		if (*p == '\'' || *p == '\\')
			*q++ = *p;
		*q++ = *p;
	}
	*q++ = '\'';
	*q = '\0';
	return out;
}

/*
 * emit_log_hook: add the HINT to PostgreSQL's "permission denied for schema
 * idem" and "permission denied for function <one of ours>" (see above).
 */
static void
first_hour_hint(ErrorData *edata)
{
	const char *fname = NULL;
	bool		matched = false;

	if (edata->elevel >= ERROR &&
		edata->sqlerrcode == ERRCODE_INSUFFICIENT_PRIVILEGE &&
		edata->hint == NULL &&
		edata->message_id != NULL && edata->message != NULL)
	{
		if (strcmp(edata->message_id, "permission denied for schema %s") == 0)
			matched = message_is(edata, "idem");
		else if (strcmp(edata->message_id, "permission denied for function %s") == 0)
		{
			for (int i = 0; i < lengthof(first_hour_functions) && !matched; i++)
			{
				if (message_is(edata, first_hour_functions[i]))
				{
					matched = true;
					fname = first_hour_functions[i];
				}
			}
		}
	}

	if (matched)
	{
		const char *role = first_hour_role();
		char	   *quoted = role ? quote_role_literal(role) : NULL;

		if (quoted != NULL)
		{
			size_t		size = strlen(quoted) + 2 * NAMEDATALEN + 128;
			char	   *hint = MemoryContextAllocExtended(ErrorContext, size,
														  MCXT_ALLOC_NO_OOM);

			if (hint != NULL)
			{
				if (fname != NULL)
					snprintf(hint, size,
							 "If this is idem.%s(), the owner of pg_idem (or a superuser) grants it with: SELECT idem.grant_usage(%s);",
							 fname, quoted);
				else
					snprintf(hint, size,
							 "The owner of pg_idem (or a superuser) grants it with: SELECT idem.grant_usage(%s);",
							 quoted);
				edata->hint = hint;
			}
		}
	}

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* Is userid exempt from every check? */
bool
idem_privileges_bypass(Oid userid)
{
	return priv_user(userid)->bypass;
}

/*
 * 42501 unless the current user may use keys of this scope: reserve,
 * complete, release, checkpoint and forget call this before they look at
 * the key, so a refused call changes nothing.
 */
void
idem_check_scope(text *scope, const char *fname)
{
	PrivUser   *u = priv_user(GetUserId());
	char	   *name;

	if (likely(u->bypass || u->scopes.all) || priv_allowed(u, PRIV_SCOPE, scope))
		return;
	if (!u->granted)
		report_not_granted(u, fname);

	name = text_to_cstring(scope);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for idempotency scope \"%s\"", name),
			 errdetail_rights(u, PRIV_SCOPE),
			 errhint("%s acts only on keys of scopes granted to the current role: the owner of pg_idem grants them with idem.grant_usage(role, scopes => ARRAY[...]), with a pattern matching \"%s\".",
					 fname, name)));
}

/* 42501 unless the current user may emit events of this topic. */
void
idem_check_emit_topic(text *topic)
{
	PrivUser   *u = priv_user(GetUserId());
	char	   *name;

	if (likely(u->bypass || u->topics.all) || priv_allowed(u, PRIV_TOPIC, topic))
		return;
	if (!u->granted)
		report_not_granted(u, "idem.emit()");

	name = text_to_cstring(topic);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for outbox topic \"%s\"", name),
			 errdetail_rights(u, PRIV_TOPIC),
			 errhint("idem.emit() writes only to topics granted to the current role: the owner of pg_idem grants them with idem.grant_usage(role, topics => ARRAY[...]), with a pattern matching \"%s\".",
					 name)));
}

/*
 * 42501 unless userid may read every topic of a consumer's filter: at
 * subscribe() for the filter asked for, at next_batch() for the filter the
 * consumer has (grants may have been narrowed since it subscribed).
 */
void
idem_check_topic_filter(Oid userid, text *consumer, Datum topics,
						bool topics_null, const char *fname)
{
	PrivUser   *u = priv_user(userid);
	char	   *cname;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (likely(u->bypass || u->topics.all))
		return;

	cname = text_to_cstring(consumer);
	if (topics_null)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for every outbox topic"),
				 errdetail_rights(u, PRIV_TOPIC),
				 errhint("Consumer \"%s\" reads every topic, so %s refuses it: subscribe it to topics the current role is granted, or have the owner of pg_idem grant the role every topic with idem.grant_usage(role, topics => NULL).",
						 cname, fname)));

	deconstruct_array(DatumGetArrayTypeP(topics), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		text	   *topic;
		char	   *tname;

		if (nulls[i])
			continue;			/* subscribe() refuses them; a stored one matches nothing */
		topic = DatumGetTextPP(elems[i]);
		if (priv_allowed(u, PRIV_TOPIC, topic))
			continue;
		tname = text_to_cstring(topic);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for outbox topic \"%s\"", tname),
				 errdetail_rights(u, PRIV_TOPIC),
				 errhint("%s uses consumer \"%s\" only while the current role may read every topic of its filter: the owner of pg_idem grants topics with idem.grant_usage(role, topics => ARRAY[...]), here with a pattern matching \"%s\".",
						 fname, cname, tname)));
	}
}

/*
 * 42501 unless userid may use the consumer: it is exempt, or has the
 * privileges of the consumer's owner (is it, or an inheriting member of
 * it).  A consumer from before 0.2 has no owner: any role with a grant may
 * use it.
 */
void
idem_check_consumer(Oid userid, text *consumer, Oid owner, const char *fname)
{
	PrivUser   *u = priv_user(userid);
	char	   *cname;

	if (likely(u->bypass))
		return;
	if (OidIsValid(owner) ? has_privs_of_role(userid, owner) : u->granted)
		return;

	cname = text_to_cstring(consumer);
	if (OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for outbox consumer \"%s\"", cname),
				 errdetail("Consumer \"%s\" belongs to role \"%s\", and role \"%s\" is not a member of it.",
						   cname, role_name(owner), role_name(userid)),
				 errhint("Only members of role \"%s\" may call %s on it: GRANT \"%s\" TO \"%s\", or use another consumer name.",
						 role_name(owner), fname, role_name(owner), role_name(userid))));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for outbox consumer \"%s\"", cname),
			 errdetail("Consumer \"%s\" has no owner, and role \"%s\" has no pg_idem grant.",
					   cname, role_name(userid)),
			 errhint("The owner of pg_idem grants a role the use of pg_idem with idem.grant_usage(role).")));
}

/*
 * Become the owner of relid (one of pg_idem's tables) for the SQL that
 * follows, as a SECURITY DEFINER function would.  An error on the way
 * restores the user when its (sub)transaction aborts.
 */
void
idem_become_table_owner(Oid relid, IdemUserSwitch *sw)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "pg_idem: cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);

	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec_context);
	SetUserIdAndSecContext(owner, sw->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

/* Back to the caller's identity after idem_become_table_owner(). */
void
idem_restore_user(IdemUserSwitch *sw)
{
	SetUserIdAndSecContext(sw->save_userid, sw->save_sec_context);
}

/*
 * idem.grants_changed(): statement trigger on idem.grants.  Writing rows
 * sends no invalidation by itself; this makes every backend drop its
 * cached rights when the writing transaction commits (and this backend at
 * its next command).
 */
PG_FUNCTION_INFO_V1(idem_grants_changed);
Datum
idem_grants_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("idem.grants_changed() must be called as a trigger")));
	CacheInvalidateRelcache(trigdata->tg_relation);
	return PointerGetDatum(NULL);
}
