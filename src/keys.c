/*-------------------------------------------------------------------------
 *
 * keys.c
 *	  Idempotency keys: reserve, complete, release, checkpoint, forget and
 *	  purge (SPEC.md section 1).
 *
 * A key is one row of idem.keys, identified by (scope, key).
 *
 * reserve() first tries to insert the key the way INSERT ... ON CONFLICT DO
 * NOTHING does (a speculative insertion, with the executor's own index
 * routines).  That is what makes atomic mode work: when another transaction
 * has inserted or is changing the same key and has not committed yet, the
 * conflict check waits for it, and then either inserts (the other one rolled
 * back) or finds the committed row.  There is never a check followed by an
 * insert.
 *
 * When the row exists, reserve() reads it and decides from its state.  Only
 * the decisions that change the row lock it, and they do so by being a
 * compare-and-set update: "take over the key if its token is still the one
 * I read and its lease has still ended".  If the update meets a concurrent
 * one, it waits for it, reads the newer row version and checks the
 * condition again on that version, as UPDATE does under READ COMMITTED,
 * then tries the update on it; the update succeeds only on the newest
 * version, so the decision stands on the row it writes.  Unlike UPDATE,
 * the re-check takes no row lock (see key_fetch_successor): when the
 * condition no longer holds, reserve() decides again from the new state
 * holding nothing.  A replay, an
 * in_progress answer and a fingerprint mismatch are read without a lock:
 * they change nothing, and a row lock held until the end of the caller's
 * transaction would serialize retry storms of one key and block the
 * holder's own complete().
 *
 * complete(), release() and checkpoint() are compare-and-set updates of the
 * same kind, matching only the key's current token in state in_progress; a
 * stale holder that raced a takeover re-checks on the successor's version
 * and gets ID002, so it can never overwrite its successor.
 *
 * The hot paths (reserve, complete, release, checkpoint) work on the table
 * and its indexes directly rather than through planned statements: a call
 * then costs less than the INSERT or UPDATE it replaces, instead of that
 * statement plus the executor's start-up around it.  forget() and purge()
 * are rare and run kept SPI plans.
 *
 * Every function first checks that the current user may use the key's
 * scope (privileges.c), before it looks at the key: a refused call changes
 * nothing and learns nothing about the key.  forget() is not SECURITY
 * DEFINER, so that the check sees its caller; it runs its DELETE as the
 * owner of idem.keys.
 *
 * Leases and expiry are decided with the wall clock (GetCurrentTimestamp,
 * i.e. clock_timestamp()), never with the transaction start time, which is
 * stale in a long transaction.  A row whose expires_at has passed behaves as
 * absent in every state, whether or not purge() has deleted it yet.
 *
 * IDENTIFICATION
 *	  src/keys.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "common/int.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "direct_write.h"
#include "fingerprint.h"
#include "keys.h"
#include "pg_idem.h"
#include "privileges.h"
#include "spi_util.h"

/* Stored states, in the order of the labels of idem.key_state */
typedef enum KeyState
{
	KEY_IN_PROGRESS,
	KEY_COMPLETED,
	KEY_RELEASED,
	KEY_NSTATES
} KeyState;

static const char *const key_state_labels[KEY_NSTATES] = {
	"in_progress", "completed", "released"
};

/* The same states, as they read in a message */
static const char *const key_state_words[KEY_NSTATES] = {
	"in progress", "completed", "released"
};

/* Outcomes, in the order of the labels of idem.outcome */
typedef enum Outcome
{
	OUTCOME_ACQUIRED,
	OUTCOME_REPLAY,
	OUTCOME_IN_PROGRESS,
	OUTCOME_N
} Outcome;

static const char *const outcome_labels[OUTCOME_N] = {
	"acquired", "replay", "in_progress"
};

/* Attributes of idem.reservation */
enum
{
	RES_OUTCOME,
	RES_TOKEN,
	RES_RESPONSE,
	RES_STATUS,
	RES_RECOVERY_POINT,
	RES_CHECKPOINT,
	RES_LOCKED_UNTIL,
	RES_EXPIRES_AT,
	RES_NATTS
};

/* Columns of idem.keys */
typedef enum KeyCol
{
	KC_SCOPE,
	KC_KEY,
	KC_STATE,
	KC_TOKEN,
	KC_FINGERPRINT,
	KC_LOCKED_UNTIL,
	KC_TTL,
	KC_RESPONSE,
	KC_STATUS,
	KC_RECOVERY_POINT,
	KC_CHECKPOINT,
	KC_CREATED_AT,
	KC_UPDATED_AT,
	KC_EXPIRES_AT,
	KC_LEASE,
	KC_FIRST_TOKEN,
	KC_N
} KeyCol;

/*
 * idem.keys as the extension creates it (direct_write.c).  reserve()'s
 * insertion imitates INSERT INTO idem.keys (every column but response,
 * status, recovery_point and checkpoint) VALUES (...) ON CONFLICT DO
 * NOTHING, so those four must have no default.  The state column's type,
 * idem.key_state, is checked by keys_open().  lease came with 0.2.0: a
 * database not yet upgraded lacks it, and checkpoint() then renews by
 * idem.lease as 0.1 did.  first_token came with 0.2.0 too: without it
 * (and in rows written before it) a token of another key gets the takeover
 * message, as in 0.1.
 */
static const DirectColumn keys_columns[KC_N] = {
	{"scope", TEXTOID, C_COLLATION_OID, true, DC_WRITTEN, InvalidOid, false},
	{"key", TEXTOID, C_COLLATION_OID, true, DC_WRITTEN, InvalidOid, false},
	{"state", InvalidOid, InvalidOid, true, DC_WRITTEN, InvalidOid, false},
	{"token", INT8OID, InvalidOid, true, DC_WRITTEN, InvalidOid, false},
	{"fingerprint", BYTEAOID, InvalidOid, false, DC_WRITTEN, InvalidOid, false},
	{"locked_until", TIMESTAMPTZOID, InvalidOid, false, DC_WRITTEN, InvalidOid, false},
	{"ttl", INTERVALOID, InvalidOid, true, DC_WRITTEN, InvalidOid, false},
	{"response", JSONBOID, InvalidOid, false, DC_OMITTED, InvalidOid, false},
	{"status", INT4OID, InvalidOid, false, DC_OMITTED, InvalidOid, false},
	{"recovery_point", TEXTOID, DEFAULT_COLLATION_OID, false, DC_OMITTED, InvalidOid, false},
	{"checkpoint", JSONBOID, InvalidOid, false, DC_OMITTED, InvalidOid, false},
	{"created_at", TIMESTAMPTZOID, InvalidOid, true, DC_WRITTEN, InvalidOid, false},
	{"updated_at", TIMESTAMPTZOID, InvalidOid, true, DC_WRITTEN, InvalidOid, false},
	{"expires_at", TIMESTAMPTZOID, InvalidOid, true, DC_WRITTEN, InvalidOid, false},
	{"lease", INTERVALOID, InvalidOid, false, DC_WRITTEN, InvalidOid, true},
	{"first_token", INT8OID, InvalidOid, false, DC_WRITTEN, InvalidOid, true},
};

static DirectTable keys_table = {"keys", KC_N, keys_columns};

/*
 * Backend-lifetime cache of catalog facts: where idem.keys and its columns
 * are, the token sequence, the pg_enum OIDs of the state labels, and the
 * row type reserve() returns.  Reset by relcache and pg_type invalidations
 * that concern these objects (e.g. DROP/CREATE EXTENSION, an upgrade) and
 * rebuilt at the start of the next call, never in the middle of one.
 */
typedef struct KeysCatalog
{
	bool		valid;
	Oid			token_seqid;
	Oid			state_typid;
	Oid			state_oids[KEY_NSTATES];
	uint32		state_type_hash;
	/* reserve()'s answer, filled on its first call */
	bool		reservation_valid;
	Oid			reserve_fn_oid;
	TupleDesc	reservation_desc;	/* in TopMemoryContext */
	Oid			outcome_oids[OUTCOME_N];
	uint32		reservation_type_hash;
	uint32		outcome_type_hash;
} KeysCatalog;

static KeysCatalog keys_catalog;
static bool keys_callbacks_registered = false;

/*
 * idem.keys opened for one call: the relation with its indexes (as the
 * executor opens a result relation), the slots rows are read into and
 * written from, and the snapshot reads use.
 */
typedef struct KeysRel
{
	EState	   *estate;
	Relation	rel;
	Relation	pkey;
	ResultRelInfo *rri;
	List	   *arbiters;		/* the primary key, for speculative insertion */
	TupleTableSlot *slot;		/* rows read */
	TupleTableSlot *newslot;	/* rows written */
	TupleTableSlot *lockslot;	/* newest version after a concurrent update */
	CommandId	cid;
	Snapshot	snapshot;		/* pushed as active; NULL until keys_snapshot() */
	int			natts;
} KeysRel;

/*
 * A stored key as found by key_lookup().  values/isnull are the slot's and
 * stay valid while the slot holds the row.
 */
typedef struct KeyRow
{
	ItemPointerData tid;
	Datum	   *values;
	bool	   *isnull;
	KeyState	state;
	int64		token;
	bytea	   *fingerprint;	/* NULL for a NULL request */
	TimestampTz locked_until;	/* DT_NOBEGIN when NULL */
	TimestampTz expires_at;
	int64		first_token;	/* token that began this life; 0 when unknown */
} KeyRow;

/* Result of key_update() */
typedef enum KeyUpdateResult
{
	KEY_UPDATED,				/* the condition held and the row was changed */
	KEY_UNCHANGED,				/* the condition does not hold on the newest row */
	KEY_GONE					/* the row was deleted meanwhile */
} KeyUpdateResult;

/* What a compare-and-set update checks and writes */
typedef struct KeyChange KeyChange;
typedef bool (*KeyCheck) (KeyChange *change, const KeyRow *row);
typedef void (*KeyBuild) (KeyChange *change, const KeyRow *row,
						  Datum *values, bool *isnull);

struct KeyChange
{
	KeyCheck	check;
	KeyBuild	build;
	TimestampTz now;			/* set by check, used by build */
	int64		token;			/* expected token (or the new one, after build) */
	Interval   *lease;			/* checkpoint: NULL for the holder's own */
	Interval   *lease_fallback; /* checkpoint: for a key that stored none */
	Interval   *ttl;
	bytea	   *fingerprint;
	Datum		response;
	bool		response_null;
	Datum		status;
	bool		status_null;
	Datum		recovery_point;
	Datum		checkpoint;
	bool		checkpoint_null;
	/* written by build: the new lease end and expiry */
	TimestampTz new_locked_until;
	TimestampTz new_expires_at;
};

/*
 * When acquiring a key took longer than this (it waited for a concurrent
 * transaction on the same key), its lease is restarted at the moment of
 * acquisition.  Shorter delays are ordinary statement time.
 */
#define LEASE_RESTART_MS 10

#define TEXT_C	"COLLATE pg_catalog.\"C\""

/* $1 scope, $2 key, $3 now; returns whether the deleted key was still alive */
static IdemPlan plan_forget = {
	"DELETE FROM idem.keys AS k"
	" WHERE k.scope OPERATOR(pg_catalog.=) $1 " TEXT_C
	" AND k.key OPERATOR(pg_catalog.=) $2 " TEXT_C
	" RETURNING k.expires_at OPERATOR(pg_catalog.>) $3",
	3, {TEXTOID, TEXTOID, TIMESTAMPTZOID}
};

/*
 * Up to $2 expired keys ($1 now), found through the expires_at index and
 * deleted by TID, so a batch costs the same however many keys have expired.
 * Rows locked by a running transaction are skipped rather than waited for,
 * so purge never queues behind a holder.  The rows are locked, and their
 * expiry re-checked on their newest version, by the FOR UPDATE, so the
 * DELETE need not check it again (which would make it scan the index).
 */
static IdemPlan plan_purge = {
	"DELETE FROM idem.keys AS k"
	" WHERE k.ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
	"   SELECT e.ctid FROM idem.keys AS e"
	"   WHERE e.expires_at OPERATOR(pg_catalog.<=) $1"
	"   LIMIT $2 FOR UPDATE SKIP LOCKED))",
	2, {TIMESTAMPTZOID, INT8OID}
};

/* arguments */
static int	errdetail_null_arg(FunctionCallInfo fcinfo, const char *argname);
static text *name_arg(FunctionCallInfo fcinfo, int argno, bool is_scope);
static int64 token_arg(FunctionCallInfo fcinfo, int argno);
static Interval *interval_arg(FunctionCallInfo fcinfo, int argno,
							  const char *what, Interval *dflt);
static TimestampTz add_interval(TimestampTz t, Interval *i);
static char *interval_to_cstring(Interval *i);
static char *fingerprint_to_cstring(bytea *fp);
static bool fingerprints_equal(bytea *a, bytea *b);

/* catalog cache */
static void keys_catalog_ensure(void);
static void keys_catalog_load(void);
static void keys_relcache_callback(Datum arg, Oid relid);
static void keys_type_callback(Datum arg, int cacheid, uint32 hashvalue);
static void enum_label_oids(Oid typid, const char *const *labels, int n,
							Oid *oids);
static TupleDesc reservation_desc(FunctionCallInfo fcinfo);

/* table access */
static void keys_open(KeysRel *kr, const char *cmdname, bool speculative);
static TupleTableSlot *keys_lockslot(KeysRel *kr);
static void keys_close(KeysRel *kr);
static void keys_snapshot(KeysRel *kr);
static void key_row_from_slot(TupleTableSlot *slot, KeyRow *row);
static bool key_lookup(KeysRel *kr, text *scope, text *key, KeyRow *row);
static bool key_insert(KeysRel *kr, text *scope, text *key, KeyChange *change);
static KeyUpdateResult key_update(KeysRel *kr, KeyRow *row, KeyChange *change);
static bool key_fetch_successor(KeysRel *kr, TM_FailureData *tmfd, KeyRow *row);
static void key_index_hints(KeysRel *kr, const KeyRow *row,
							TupleTableSlot *newslot);
static TimestampTz key_acquire_times(KeyChange *change, TimestampTz now);

/* the conditions and new values of the compare-and-set updates */
static bool check_held(KeyChange *change, const KeyRow *row);
static bool check_takeover(KeyChange *change, const KeyRow *row);
static bool check_expired(KeyChange *change, const KeyRow *row);
static bool check_token(KeyChange *change, const KeyRow *row);
static void build_takeover(KeyChange *change, const KeyRow *row,
						   Datum *values, bool *isnull);
static void build_afresh(KeyChange *change, const KeyRow *row,
						 Datum *values, bool *isnull);
static void build_restart_lease(KeyChange *change, const KeyRow *row,
								Datum *values, bool *isnull);
static void build_complete(KeyChange *change, const KeyRow *row,
						   Datum *values, bool *isnull);
static void build_release(KeyChange *change, const KeyRow *row,
						  Datum *values, bool *isnull);
static void build_checkpoint(KeyChange *change, const KeyRow *row,
							 Datum *values, bool *isnull);

/* holder operations */
static void holder_change(const char *cmdname, text *scope, text *key,
						  KeyChange *change);
static void raise_not_held(text *scope, text *key, int64 token,
						   const KeyRow *row, TimestampTz now);


/* The DETAIL of a NULL-argument error: which argument of which function */
static int
errdetail_null_arg(FunctionCallInfo fcinfo, const char *argname)
{
	return errdetail("Argument %s of idem.%s() is NULL.", argname,
					 get_func_name(fcinfo->flinfo->fn_oid));
}

/*
 * Fetch a key or scope argument, enforcing SPEC.md's input rules: NULL is
 * 22004, longer than 255 bytes is 22001, and an empty key is 22023 (an
 * empty key is not "too long", and 22023 is what the rest of pg_idem uses
 * for an empty name).  The scope may be empty.
 */
static text *
name_arg(FunctionCallInfo fcinfo, int argno, bool is_scope)
{
	const char *what = is_scope ? "scope" : "key";
	text	   *t;
	int			len;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("idempotency %s must not be null", what),
				 errdetail_null_arg(fcinfo, what),
				 is_scope ? errhint("The default scope is the empty string.") : 0));

	t = PG_GETARG_TEXT_PP(argno);
	len = VARSIZE_ANY_EXHDR(t);
	if (len == 0 && !is_scope)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("idempotency key must not be empty"),
				 errdetail("A key is 1 to %d bytes long.", IDEM_MAX_NAME_BYTES)));
	if (len > IDEM_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("idempotency %s is too long", what),
				 errdetail("The %s is %d bytes long; the limit is %d bytes.",
						   what, len, IDEM_MAX_NAME_BYTES),
				 is_scope ? 0 : errhint("Hash a longer natural key, e.g. with sha256(), to make an idempotency key.")));
	return t;
}

/* Fetch a token argument: NULL is 22004. */
static int64
token_arg(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("idempotency token must not be null"),
				 errdetail_null_arg(fcinfo, "token"),
				 errhint("Pass the token that idem.reserve() returned with outcome acquired.")));
	return PG_GETARG_INT64(argno);
}

/*
 * Fetch a lease or ttl argument: NULL means the setting's default, and a
 * value that is not positive is 22023.  "Positive" is decided the way
 * interval comparison decides it (a month counts as 30 days).
 */
static Interval *
interval_arg(FunctionCallInfo fcinfo, int argno, const char *what, Interval *dflt)
{
	Interval   *i;
	Interval	zero = {0, 0, 0};

	if (PG_ARGISNULL(argno))
		return dflt;
	i = PG_GETARG_INTERVAL_P(argno);
	if (DatumGetInt32(DirectFunctionCall2(interval_cmp,
										  IntervalPGetDatum(i),
										  IntervalPGetDatum(&zero))) <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a positive interval", what),
				 errdetail("The %s given is %s.", what, interval_to_cstring(i)),
				 errhint("Pass NULL to use the setting idem.%s.", what)));
	return i;
}

/* t + i, with the calendar rules (and range check) of timestamptz + interval */
static TimestampTz
add_interval(TimestampTz t, Interval *i)
{
	/* the common case, a lease or ttl in plain time units, needs no calendar */
	if (i->month == 0 && i->day == 0)
	{
		TimestampTz r;

		if (unlikely(pg_add_s64_overflow(t, i->time, &r) || !IS_VALID_TIMESTAMP(r)))
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("timestamp out of range")));
		return r;
	}
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   TimestampTzGetDatum(t),
												   IntervalPGetDatum(i)));
}

/* An interval as SQL prints it, for messages */
static char *
interval_to_cstring(Interval *i)
{
	return DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(i)));
}

/* A fingerprint as hex, or a phrase for the NULL request, for messages */
static char *
fingerprint_to_cstring(bytea *fp)
{
	if (fp == NULL)
		return pstrdup("none (a NULL request)");
	return text_to_cstring(DatumGetTextPP(DirectFunctionCall2(binary_encode,
															  PointerGetDatum(fp),
															  CStringGetTextDatum("hex"))));
}

/* Same request?  A NULL request matches only a NULL request. */
static bool
fingerprints_equal(bytea *a, bytea *b)
{
	if (a == NULL || b == NULL)
		return a == NULL && b == NULL;
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}


/*
 * Make sure the catalog cache is loaded.  Called at the start of every
 * call, before anything is looked at, so a reload never pulls the rug from
 * under a running call.
 */
static void
keys_catalog_ensure(void)
{
	if (!keys_callbacks_registered)
	{
		CacheRegisterRelcacheCallback(keys_relcache_callback, (Datum) 0);
		CacheRegisterSyscacheCallback(TYPEOID, keys_type_callback, (Datum) 0);
		keys_callbacks_registered = true;
	}
	if (!keys_catalog.valid)
		keys_catalog_load();
}

/*
 * Find the token sequence and the state type by name (never through
 * search_path).  idem.keys itself is opened, and its columns mapped, by
 * keys_open() through direct_write.c, under its lock.
 */
static void
keys_catalog_load(void)
{
	Oid			nsp = get_namespace_oid("idem", false);
	Oid			seqid = get_relname_relid("key_token_seq", nsp);
	Oid			typid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
										CStringGetDatum("key_state"),
										ObjectIdGetDatum(nsp));

	if (!OidIsValid(seqid) || !OidIsValid(typid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("pg_idem is not installed correctly: idem.key_token_seq or idem.key_state is missing"),
				 errhint("Run ALTER EXTENSION pg_idem UPDATE, or drop and create the extension.")));
	enum_label_oids(typid, key_state_labels, KEY_NSTATES, keys_catalog.state_oids);
	keys_catalog.state_typid = typid;
	keys_catalog.state_type_hash =
		GetSysCacheHashValue1(TYPEOID, ObjectIdGetDatum(typid));
	keys_catalog.token_seqid = seqid;
	keys_catalog.valid = true;
}

/* Relcache callback: the token sequence changed (or everything did). */
static void
keys_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == keys_catalog.token_seqid)
		keys_catalog.valid = false;
}

/* pg_type callback: one of our types changed (or everything did). */
static void
keys_type_callback(Datum arg, int cacheid, uint32 hashvalue)
{
	if (hashvalue == 0 || hashvalue == keys_catalog.state_type_hash)
		keys_catalog.valid = false;
	if (hashvalue == 0 || hashvalue == keys_catalog.reservation_type_hash ||
		hashvalue == keys_catalog.outcome_type_hash)
		keys_catalog.reservation_valid = false;
}

/* Look up the pg_enum OIDs of an enum type's labels. */
static void
enum_label_oids(Oid typid, const char *const *labels, int n, Oid *oids)
{
	for (int i = 0; i < n; i++)
	{
		oids[i] = GetSysCacheOid2(ENUMTYPOIDNAME, Anum_pg_enum_oid,
								  ObjectIdGetDatum(typid),
								  CStringGetDatum(labels[i]));
		if (!OidIsValid(oids[i]))
			elog(ERROR, "pg_idem: type %s has no label \"%s\"",
				 format_type_be(typid), labels[i]);
	}
}

/*
 * The descriptor of idem.reservation, and the OIDs of idem.outcome's
 * labels, looked up on reserve()'s first call and kept for the backend's
 * life.
 */
static TupleDesc
reservation_desc(FunctionCallInfo fcinfo)
{
	if (!keys_catalog.reservation_valid ||
		keys_catalog.reserve_fn_oid != fcinfo->flinfo->fn_oid)
	{
		MemoryContext oldctx;
		TupleDesc	desc;
		Oid			outcome_typid;

		if (keys_catalog.reservation_desc != NULL)
		{
			FreeTupleDesc(keys_catalog.reservation_desc);
			keys_catalog.reservation_desc = NULL;
		}
		if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE ||
			desc->natts != RES_NATTS)
			elog(ERROR, "pg_idem: idem.reserve() must return idem.reservation");
		oldctx = MemoryContextSwitchTo(TopMemoryContext);
		desc = CreateTupleDescCopy(desc);
		MemoryContextSwitchTo(oldctx);

		outcome_typid = TupleDescAttr(desc, RES_OUTCOME)->atttypid;
		enum_label_oids(outcome_typid, outcome_labels, OUTCOME_N,
						keys_catalog.outcome_oids);
		keys_catalog.reservation_type_hash =
			GetSysCacheHashValue1(TYPEOID, ObjectIdGetDatum(desc->tdtypeid));
		keys_catalog.outcome_type_hash =
			GetSysCacheHashValue1(TYPEOID, ObjectIdGetDatum(outcome_typid));
		keys_catalog.reservation_desc = desc;
		keys_catalog.reserve_fn_oid = fcinfo->flinfo->fn_oid;
		keys_catalog.reservation_valid = true;
	}
	return keys_catalog.reservation_desc;
}


/*
 * Open idem.keys for writing, as the executor opens the target of an
 * INSERT or UPDATE: the relation, all its indexes (with what a speculative
 * insertion needs if speculative), and slots of the table's own kind.
 * Refused in a read-only transaction (and on a standby), as the executor
 * would refuse the statement.
 */
static void
keys_open(KeysRel *kr, const char *cmdname, bool speculative)
{
	Oid			pkey_oid;

	PreventCommandIfReadOnly(cmdname);
	memset(kr, 0, sizeof(KeysRel));
	kr->rel = idem_direct_open(&keys_table, RowExclusiveLock);
	if (keys_table.pristine &&
		TupleDescAttr(RelationGetDescr(kr->rel),
					  keys_table.attidx[KC_STATE])->atttypid != keys_catalog.state_typid)
		keys_table.pristine = false;	/* not as created: refused below */
	if (!keys_table.pristine)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s cannot write idem.keys as it has been altered", cmdname),
				 errdetail("idem.keys %s.", keys_table.deviation[0] ? keys_table.deviation :
						   "has column \"state\" of another type than idem.key_state"),
				 errhint("pg_idem's key functions write idem.keys without the executor, so they run only on the table as the extension created it: undo the change.")));
	/*
	 * complete/release/checkpoint are UPDATEs, refused on a published table
	 * without a usable replica identity even when no row matches, as
	 * ExecUpdate's start-up refuses them (CheckValidResultRel)
	 */
	if (!speculative)
		CheckCmdReplicaIdentity(kr->rel, CMD_UPDATE);
	kr->estate = CreateExecutorState();
	kr->natts = RelationGetDescr(kr->rel)->natts;
	kr->rri = makeNode(ResultRelInfo);
	/* no range table: nothing here consults one (see key_index_hints) */
	InitResultRelInfo(kr->rri, kr->rel, 0, NULL, 0);
	ExecOpenIndices(kr->rri, speculative);

	pkey_oid = RelationGetPrimaryKeyIndex(kr->rel);
	for (int i = 0; i < kr->rri->ri_NumIndices; i++)
		if (RelationGetRelid(kr->rri->ri_IndexRelationDescs[i]) == pkey_oid)
			kr->pkey = kr->rri->ri_IndexRelationDescs[i];
	if (kr->pkey == NULL)
		elog(ERROR, "pg_idem: idem.keys has no primary key");
	kr->arbiters = list_make1_oid(pkey_oid);

	kr->slot = table_slot_create(kr->rel, &kr->estate->es_tupleTable);
	kr->newslot = table_slot_create(kr->rel, &kr->estate->es_tupleTable);
	kr->cid = GetCurrentCommandId(false);
}

/* The slot for a row version found by following an update (made on first use) */
static TupleTableSlot *
keys_lockslot(KeysRel *kr)
{
	if (kr->lockslot == NULL)
		kr->lockslot = table_slot_create(kr->rel, &kr->estate->es_tupleTable);
	return kr->lockslot;
}

/* Close what keys_open() opened; the table lock is kept until commit. */
static void
keys_close(KeysRel *kr)
{
	if (kr->snapshot != NULL)
	{
		PopActiveSnapshot();
		kr->snapshot = NULL;
	}
	ExecResetTupleTable(kr->estate->es_tupleTable, false);
	ExecCloseIndices(kr->rri);
	table_close(kr->rel, NoLock);
	FreeExecutorState(kr->estate);
}

/*
 * Take the snapshot reads are made with, as a statement would: first make
 * this transaction's earlier changes visible (including those of this very
 * command), then a fresh snapshot under READ COMMITTED, the transaction's
 * own under REPEATABLE READ and SERIALIZABLE.  It is pushed as the active
 * snapshot, so that TOASTed values can be fetched with it.
 */
static void
keys_snapshot(KeysRel *kr)
{
	if (kr->snapshot != NULL)
		PopActiveSnapshot();
	CommandCounterIncrement();
	kr->cid = GetCurrentCommandId(false);
	PushActiveSnapshot(GetTransactionSnapshot());
	kr->snapshot = GetActiveSnapshot();
	kr->estate->es_snapshot = kr->snapshot;
}

/* Decode the row a slot holds. */
static void
key_row_from_slot(TupleTableSlot *slot, KeyRow *row)
{
	const int  *col = keys_table.attidx;
	Oid			state;
	int			i;

	slot_getallattrs(slot);
	row->tid = slot->tts_tid;
	row->values = slot->tts_values;
	row->isnull = slot->tts_isnull;

	state = DatumGetObjectId(row->values[col[KC_STATE]]);
	for (i = 0; i < KEY_NSTATES; i++)
		if (keys_catalog.state_oids[i] == state)
			break;
	if (i == KEY_NSTATES)
		elog(ERROR, "pg_idem: unexpected idempotency key state %u", state);
	row->state = (KeyState) i;
	row->token = DatumGetInt64(row->values[col[KC_TOKEN]]);
	row->fingerprint = row->isnull[col[KC_FINGERPRINT]] ? NULL :
		DatumGetByteaPP(row->values[col[KC_FINGERPRINT]]);
	row->locked_until = row->isnull[col[KC_LOCKED_UNTIL]] ? DT_NOBEGIN :
		DatumGetTimestampTz(row->values[col[KC_LOCKED_UNTIL]]);
	row->expires_at = DatumGetTimestampTz(row->values[col[KC_EXPIRES_AT]]);
	row->first_token = (col[KC_FIRST_TOKEN] >= 0 && !row->isnull[col[KC_FIRST_TOKEN]]) ?
		DatumGetInt64(row->values[col[KC_FIRST_TOKEN]]) : 0;
}

/*
 * Find the row of (scope, key) visible to the snapshot, through the primary
 * key.  Returns false when there is none.
 */
static bool
key_lookup(KeysRel *kr, text *scope, text *key, KeyRow *row)
{
	ScanKeyData skey[2];
	IndexScanDesc scan;
	bool		found;

	Assert(kr->snapshot != NULL);
	ScanKeyEntryInitialize(&skey[0], 0, 1, BTEqualStrategyNumber, InvalidOid,
						   C_COLLATION_OID, F_TEXTEQ, PointerGetDatum(scope));
	ScanKeyEntryInitialize(&skey[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
						   C_COLLATION_OID, F_TEXTEQ, PointerGetDatum(key));
	scan = index_beginscan(kr->rel, kr->pkey, kr->snapshot, 2, 0);
	index_rescan(scan, skey, 2, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, kr->slot);
	index_endscan(scan);
	if (found)
		key_row_from_slot(kr->slot, row);
	return found;
}

/*
 * The times of a key acquired at now: sets change->new_locked_until and
 * change->new_expires_at (lease end + ttl) and returns now.
 */
static TimestampTz
key_acquire_times(KeyChange *change, TimestampTz now)
{
	change->new_locked_until = add_interval(now, change->lease);
	change->new_expires_at = add_interval(change->new_locked_until, change->ttl);
	return now;
}

/*
 * Insert a new key as INSERT ... ON CONFLICT DO NOTHING does: check the
 * primary key for a conflict (waiting for an uncommitted inserter or
 * updater of the same key), insert speculatively, and start over if a
 * concurrent insertion won the race.  Returns true when the key was
 * inserted (change->token is its token), false when it already exists.
 *
 * The token is taken, and the lease starts, only once the check has found
 * no conflict, so that a wait does not shorten the lease and a replay does
 * not use up a token.
 */
static bool
key_insert(KeysRel *kr, text *scope, text *key, KeyChange *change)
{
	const int  *col = keys_table.attidx;
	TupleTableSlot *slot = kr->newslot;
	Datum	   *values = slot->tts_values;
	bool	   *isnull = slot->tts_isnull;
	ItemPointerData conflict_tid;

	for (;;)
	{
		bool		spec_conflict = false;
		uint32		spec_token;
		TimestampTz now;

		CHECK_FOR_INTERRUPTS();

		/* the key columns are all the conflict check looks at */
		ExecClearTuple(slot);
		memset(isnull, true, kr->natts * sizeof(bool));
		values[col[KC_SCOPE]] = PointerGetDatum(scope);
		isnull[col[KC_SCOPE]] = false;
		values[col[KC_KEY]] = PointerGetDatum(key);
		isnull[col[KC_KEY]] = false;
		ExecStoreVirtualTuple(slot);

		if (!idem_check_index_constraints(kr->rri, slot, kr->estate,
										  &conflict_tid, kr->arbiters))
		{
			/*
			 * The key exists.  Under REPEATABLE READ and SERIALIZABLE the
			 * row must be visible to the transaction's snapshot, or the
			 * transaction cannot go on consistently (as with ON CONFLICT).
			 */
			if (IsolationUsesXactSnapshot())
			{
				Snapshot	snap = GetTransactionSnapshot();
				TupleTableSlot *found = keys_lockslot(kr);

				if (!table_tuple_fetch_row_version(kr->rel, &conflict_tid,
												   SnapshotAny, found))
					elog(ERROR, "pg_idem: failed to fetch conflicting idempotency key");
				if (!table_tuple_satisfies_snapshot(kr->rel, found, snap))
				{
					bool		xmin_isnull;
					TransactionId xmin;

					xmin = DatumGetTransactionId(slot_getsysattr(found,
																 MinTransactionIdAttributeNumber,
																 &xmin_isnull));
					if (!TransactionIdIsCurrentTransactionId(xmin))
						ereport(ERROR,
								(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
								 errmsg("could not serialize access due to concurrent update")));
				}
				ExecClearTuple(found);
			}
			return false;
		}

		/* No conflict: the whole row, with a fresh token and lease. */
		kr->cid = GetCurrentCommandId(true);
		now = key_acquire_times(change, GetCurrentTimestamp());
		change->token = nextval_internal(keys_catalog.token_seqid, false);
		ExecClearTuple(slot);
		memset(isnull, true, kr->natts * sizeof(bool));
		values[col[KC_SCOPE]] = PointerGetDatum(scope);
		values[col[KC_KEY]] = PointerGetDatum(key);
		values[col[KC_STATE]] = ObjectIdGetDatum(keys_catalog.state_oids[KEY_IN_PROGRESS]);
		values[col[KC_TOKEN]] = Int64GetDatum(change->token);
		values[col[KC_FINGERPRINT]] = PointerGetDatum(change->fingerprint);
		values[col[KC_LOCKED_UNTIL]] = TimestampTzGetDatum(change->new_locked_until);
		values[col[KC_TTL]] = IntervalPGetDatum(change->ttl);
		values[col[KC_CREATED_AT]] = TimestampTzGetDatum(now);
		values[col[KC_UPDATED_AT]] = TimestampTzGetDatum(now);
		values[col[KC_EXPIRES_AT]] = TimestampTzGetDatum(change->new_expires_at);
		isnull[col[KC_SCOPE]] = isnull[col[KC_KEY]] = isnull[col[KC_STATE]] =
			isnull[col[KC_TOKEN]] = isnull[col[KC_LOCKED_UNTIL]] =
			isnull[col[KC_TTL]] = isnull[col[KC_CREATED_AT]] =
			isnull[col[KC_UPDATED_AT]] = isnull[col[KC_EXPIRES_AT]] = false;
		isnull[col[KC_FINGERPRINT]] = (change->fingerprint == NULL);
		if (col[KC_LEASE] >= 0)
		{
			values[col[KC_LEASE]] = IntervalPGetDatum(change->lease);
			isnull[col[KC_LEASE]] = false;
		}
		if (col[KC_FIRST_TOKEN] >= 0)
		{
			values[col[KC_FIRST_TOKEN]] = Int64GetDatum(change->token);
			isnull[col[KC_FIRST_TOKEN]] = false;
		}
		ExecStoreVirtualTuple(slot);

		spec_token = SpeculativeInsertionLockAcquire(GetCurrentTransactionId());
		table_tuple_insert_speculative(kr->rel, slot, kr->cid, 0, NULL, spec_token);
		idem_insert_index_tuples(kr->rri, slot, kr->estate, false, true,
								 &spec_conflict, kr->arbiters, false);
		table_tuple_complete_speculative(kr->rel, slot, spec_token, !spec_conflict);
		SpeculativeInsertionLockRelease(GetCurrentTransactionId());

		if (!spec_conflict)
			return true;
		/* a concurrent insertion of the same key won: check again */
	}
}

/*
 * Tell the index code, for each index, whether an update leaves its key
 * unchanged (btree uses that to delete old versions bottom-up instead of
 * splitting pages).  The executor derives it from the statement's updated
 * columns; there is no statement here, so compare the old and new values.
 */
static void
key_index_hints(KeysRel *kr, const KeyRow *row, TupleTableSlot *newslot)
{
#if PG_VERSION_NUM >= 140000
	TupleDesc	desc = RelationGetDescr(kr->rel);

	for (int i = 0; i < kr->rri->ri_NumIndices; i++)
	{
		IndexInfo  *ii = kr->rri->ri_IndexRelationInfo[i];
		bool		unchanged = true;

		for (int k = 0; k < ii->ii_NumIndexKeyAttrs && unchanged; k++)
		{
			int			a = ii->ii_IndexAttrNumbers[k] - 1;
			Form_pg_attribute att = TupleDescAttr(desc, a);

			if (a < 0)
				unchanged = false;	/* an expression: assume it changed */
			else if (row->isnull[a] || newslot->tts_isnull[a])
				unchanged = row->isnull[a] && newslot->tts_isnull[a];
			else
				unchanged = datumIsEqual(row->values[a], newslot->tts_values[a],
										 att->attbyval, att->attlen);
		}
		ii->ii_CheckedUnchanged = true;
		ii->ii_IndexUnchanged = unchanged;
	}
#endif
}

/*
 * Compare-and-set update of a row found by key_lookup(): if change->check
 * holds for the row, write the row change->build makes of it.  If the row
 * was updated concurrently, wait for that, lock the newest version and
 * check again on it (READ COMMITTED); under REPEATABLE READ and SERIALIZABLE
 * a concurrent update is a serialization failure, as for UPDATE.  On
 * KEY_UNCHANGED, *row is the newest version, for the caller to explain.
 */
static KeyUpdateResult
key_update(KeysRel *kr, KeyRow *row, KeyChange *change)
{
	TupleTableSlot *slot = kr->newslot;

	/* as ExecUpdate's start-up does (CheckValidResultRel) */
	CheckCmdReplicaIdentity(kr->rel, CMD_UPDATE);
	for (;;)
	{
		TM_Result	result;
		TM_FailureData tmfd;
		LockTupleMode lockmode;
		bool		update_indexes;
		bool		only_summarizing;

		CHECK_FOR_INTERRUPTS();
		if (!change->check(change, row))
			return KEY_UNCHANGED;

		ExecClearTuple(slot);
		memcpy(slot->tts_values, row->values, kr->natts * sizeof(Datum));
		memcpy(slot->tts_isnull, row->isnull, kr->natts * sizeof(bool));
		change->build(change, row, slot->tts_values, slot->tts_isnull);
		key_index_hints(kr, row, slot);
		ExecStoreVirtualTuple(slot);

		kr->cid = GetCurrentCommandId(true);
		result = idem_tuple_update(kr->rel, &row->tid, slot, kr->cid,
								   kr->snapshot, &tmfd, &lockmode,
								   &update_indexes, &only_summarizing);
		switch (result)
		{
			case TM_Ok:
				if (update_indexes)
					idem_insert_index_tuples(kr->rri, slot, kr->estate, true,
											 false, NULL, NIL, only_summarizing);
				return KEY_UPDATED;

			case TM_Updated:
				if (IsolationUsesXactSnapshot())
					ereport(ERROR,
							(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
							 errmsg("could not serialize access due to concurrent update")));
				if (!key_fetch_successor(kr, &tmfd, row))
					return KEY_GONE;
				continue;		/* check again on the newer version */

			case TM_Deleted:
				if (IsolationUsesXactSnapshot())
					ereport(ERROR,
							(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
							 errmsg("could not serialize access due to concurrent delete")));
				return KEY_GONE;

			default:
				elog(ERROR, "pg_idem: unexpected result %d updating an idempotency key",
					 (int) result);
		}
	}
}

/*
 * Read the version that replaced row (tmfd names it) into *row, without
 * locking it; false when there is none to read.
 *
 * UPDATE under READ COMMITTED locks the newest version before it re-checks
 * its WHERE clause (ExecUpdate -> table_tuple_lock, then EvalPlanQual), and
 * keeps that lock even when the re-check fails.  Here a failed re-check
 * means "answer in_progress" or "not your token", which must take no lock:
 * a row lock held to the end of the loser's transaction would make the
 * winner's complete() wait for it.  So the re-check reads the newer version
 * unlocked and the update is attempted on it: heap_update succeeds only on
 * the newest version (TM_Updated again otherwise), so a check that passes
 * on a version that is still the newest when written is a compare-and-set,
 * and one that fails leaves nothing behind.
 *
 * table_tuple_update() has already waited for the updater, which committed
 * (an aborted one would have let the update through).  The version it made
 * cannot have been pruned: our active snapshot is older than its creator's
 * commit, and anything that replaced it since is newer still.  Its xmin is
 * checked all the same, as heapam does when it follows an update chain.
 */
static bool
key_fetch_successor(KeysRel *kr, TM_FailureData *tmfd, KeyRow *row)
{
	TupleTableSlot *next = keys_lockslot(kr);
	bool		isnull;
	TransactionId xmin;

	if (ItemPointerEquals(&tmfd->ctid, &row->tid) ||
		!table_tuple_fetch_row_version(kr->rel, &tmfd->ctid, SnapshotAny, next))
		return false;
	xmin = DatumGetTransactionId(slot_getsysattr(next, MinTransactionIdAttributeNumber,
												 &isnull));
	if (!TransactionIdEquals(xmin, tmfd->xmax))
		return false;
	key_row_from_slot(next, row);
	return true;
}

/* The ttl of the reservation that holds or held a key */
static inline Interval *
key_ttl(const KeyRow *row)
{
	return DatumGetIntervalP(row->values[keys_table.attidx[KC_TTL]]);
}

/* complete, release, checkpoint: the current token, in progress, not expired */
static bool
check_held(KeyChange *change, const KeyRow *row)
{
	change->now = GetCurrentTimestamp();
	return row->token == change->token && row->state == KEY_IN_PROGRESS &&
		row->expires_at > change->now;
}

/* takeover: same token as read, released or lease ended, not expired */
static bool
check_takeover(KeyChange *change, const KeyRow *row)
{
	change->now = GetCurrentTimestamp();
	return row->token == change->token && row->expires_at > change->now &&
		(row->state == KEY_RELEASED ||
		 (row->state == KEY_IN_PROGRESS && row->locked_until <= change->now));
}

/* reserve afresh: same token as read, expired */
static bool
check_expired(KeyChange *change, const KeyRow *row)
{
	change->now = GetCurrentTimestamp();
	return row->token == change->token && row->expires_at <= change->now;
}

/* restart a lease just acquired: still our token */
static bool
check_token(KeyChange *change, const KeyRow *row)
{
	change->now = GetCurrentTimestamp();
	return row->token == change->token;
}

/*
 * Take over a released key or one whose lease ended: a new token and lease,
 * keeping the fingerprint, recovery point and checkpoint.
 */
static void
build_takeover(KeyChange *change, const KeyRow *row, Datum *values, bool *isnull)
{
	const int  *col = keys_table.attidx;

	key_acquire_times(change, change->now);
	change->token = nextval_internal(keys_catalog.token_seqid, false);
	values[col[KC_STATE]] = ObjectIdGetDatum(keys_catalog.state_oids[KEY_IN_PROGRESS]);
	values[col[KC_TOKEN]] = Int64GetDatum(change->token);
	values[col[KC_LOCKED_UNTIL]] = TimestampTzGetDatum(change->new_locked_until);
	isnull[col[KC_LOCKED_UNTIL]] = false;
	values[col[KC_TTL]] = IntervalPGetDatum(change->ttl);
	values[col[KC_UPDATED_AT]] = TimestampTzGetDatum(change->now);
	values[col[KC_EXPIRES_AT]] = TimestampTzGetDatum(change->new_expires_at);
	if (col[KC_LEASE] >= 0)
	{
		values[col[KC_LEASE]] = IntervalPGetDatum(change->lease);
		isnull[col[KC_LEASE]] = false;
	}
}

/* Reserve an expired key as if it were new: everything but the key is reset. */
static void
build_afresh(KeyChange *change, const KeyRow *row, Datum *values, bool *isnull)
{
	const int  *col = keys_table.attidx;

	build_takeover(change, row, values, isnull);
	values[col[KC_FINGERPRINT]] = PointerGetDatum(change->fingerprint);
	isnull[col[KC_FINGERPRINT]] = (change->fingerprint == NULL);
	isnull[col[KC_RESPONSE]] = true;
	isnull[col[KC_STATUS]] = true;
	isnull[col[KC_RECOVERY_POINT]] = true;
	isnull[col[KC_CHECKPOINT]] = true;
	values[col[KC_CREATED_AT]] = TimestampTzGetDatum(change->now);
	if (col[KC_FIRST_TOKEN] >= 0)
	{
		values[col[KC_FIRST_TOKEN]] = Int64GetDatum(change->token);
		isnull[col[KC_FIRST_TOKEN]] = false;
	}
}

/* Restart the lease of a key just acquired. */
static void
build_restart_lease(KeyChange *change, const KeyRow *row, Datum *values, bool *isnull)
{
	const int  *col = keys_table.attidx;

	key_acquire_times(change, change->now);
	values[col[KC_LOCKED_UNTIL]] = TimestampTzGetDatum(change->new_locked_until);
	values[col[KC_UPDATED_AT]] = TimestampTzGetDatum(change->now);
	values[col[KC_EXPIRES_AT]] = TimestampTzGetDatum(change->new_expires_at);
}

/*
 * Complete: store the response and status; the lease and the recovery
 * state are dropped, and the key expires ttl after now.
 */
static void
build_complete(KeyChange *change, const KeyRow *row, Datum *values, bool *isnull)
{
	const int  *col = keys_table.attidx;

	values[col[KC_STATE]] = ObjectIdGetDatum(keys_catalog.state_oids[KEY_COMPLETED]);
	values[col[KC_RESPONSE]] = change->response;
	isnull[col[KC_RESPONSE]] = change->response_null;
	values[col[KC_STATUS]] = change->status;
	isnull[col[KC_STATUS]] = change->status_null;
	isnull[col[KC_LOCKED_UNTIL]] = true;
	isnull[col[KC_RECOVERY_POINT]] = true;
	isnull[col[KC_CHECKPOINT]] = true;
	values[col[KC_UPDATED_AT]] = TimestampTzGetDatum(change->now);
	values[col[KC_EXPIRES_AT]] =
		TimestampTzGetDatum(add_interval(change->now, key_ttl(row)));
}

/*
 * Release: not held any more, but the fingerprint, token, recovery point
 * and checkpoint stay for the next holder; the key expires ttl after now.
 */
static void
build_release(KeyChange *change, const KeyRow *row, Datum *values, bool *isnull)
{
	const int  *col = keys_table.attidx;

	values[col[KC_STATE]] = ObjectIdGetDatum(keys_catalog.state_oids[KEY_RELEASED]);
	isnull[col[KC_LOCKED_UNTIL]] = true;
	values[col[KC_UPDATED_AT]] = TimestampTzGetDatum(change->now);
	values[col[KC_EXPIRES_AT]] =
		TimestampTzGetDatum(add_interval(change->now, key_ttl(row)));
}

/*
 * Checkpoint: record the recovery point and state, and renew the lease: by
 * the lease given, which becomes the holder's lease length, or else by the
 * holder's own (the one it reserved with or last gave), never by the
 * idem.lease of whoever calls (a worker that reserved for 10 minutes must
 * not drop to 30 seconds).  Only a key written before 0.2.0 stored no
 * lease; it renews by idem.lease, as 0.1 did.
 */
static void
build_checkpoint(KeyChange *change, const KeyRow *row, Datum *values, bool *isnull)
{
	const int  *col = keys_table.attidx;
	Interval   *lease = change->lease;

	if (lease == NULL)
		lease = (col[KC_LEASE] >= 0 && !row->isnull[col[KC_LEASE]]) ?
			DatumGetIntervalP(row->values[col[KC_LEASE]]) : change->lease_fallback;
	if (col[KC_LEASE] >= 0)
	{
		values[col[KC_LEASE]] = IntervalPGetDatum(lease);
		isnull[col[KC_LEASE]] = false;
	}
	change->new_locked_until = add_interval(change->now, lease);
	values[col[KC_RECOVERY_POINT]] = change->recovery_point;
	isnull[col[KC_RECOVERY_POINT]] = false;
	values[col[KC_CHECKPOINT]] = change->checkpoint;
	isnull[col[KC_CHECKPOINT]] = change->checkpoint_null;
	values[col[KC_LOCKED_UNTIL]] = TimestampTzGetDatum(change->new_locked_until);
	values[col[KC_UPDATED_AT]] = TimestampTzGetDatum(change->now);
	values[col[KC_EXPIRES_AT]] =
		TimestampTzGetDatum(add_interval(change->new_locked_until, key_ttl(row)));
}


/*
 * Reserve an idempotency key (SPEC.md section 1).
 *
 * Returns idem.reservation: acquired (a new key, an expired key, or a
 * takeover of a released key or one whose lease ended, with the earlier
 * holder's recovery point), replay (completed with the same request) or
 * in_progress (another holder's lease is live; nothing is changed).  A
 * different request than the first raises ID001 until the key expires.
 */
PG_FUNCTION_INFO_V1(idem_reserve);
Datum
idem_reserve(PG_FUNCTION_ARGS)
{
	text	   *key = name_arg(fcinfo, 0, false);
	text	   *scope = name_arg(fcinfo, 2, true);
	Interval	lease_dflt = {(TimeOffset) idem_lease_ms * INT64CONST(1000), 0, 0};
	Interval	ttl_dflt = {(TimeOffset) idem_ttl_s * USECS_PER_SEC, 0, 0};
	KeyChange	change;
	KeysRel		kr;
	KeyRow		row;
	Datum		res[RES_NATTS];
	bool		res_null[RES_NATTS];
	Outcome		outcome;
	TimestampTz acquired_at = 0;
	TupleDesc	desc;
	Datum		result;

	memset(&change, 0, sizeof(change));
	change.lease = interval_arg(fcinfo, 3, "lease", &lease_dflt);
	change.ttl = interval_arg(fcinfo, 4, "ttl", &ttl_dflt);
	if (!PG_ARGISNULL(1))
	{
		change.fingerprint = palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
		SET_VARSIZE(change.fingerprint, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
		idem_fingerprint_jsonb(PG_GETARG_JSONB_P(1),
							   (uint8 *) VARDATA(change.fingerprint));
	}

	/* before the key is looked at: a refused call changes nothing */
	idem_check_scope(scope, "idem.reserve()");

	keys_catalog_ensure();
	desc = reservation_desc(fcinfo);
	memset(res_null, true, sizeof(res_null));
	keys_open(&kr, "idem.reserve()", true);

	for (int rounds = 0;; rounds++)
	{
		/*
		 * Every round follows a change another transaction committed to the
		 * key; on a table in the extension's shape they settle within a few.
		 * Never loop without end on one that disagrees with itself (say, an
		 * index that finds what the heap lookup does not).
		 */
		if (rounds >= 1000)
			elog(ERROR, "pg_idem: reserve of idempotency key \"%s\" did not settle after %d rounds",
				 text_to_cstring(key), rounds);

		/* A new key?  Waits for an uncommitted writer of the same key. */
		if (key_insert(&kr, scope, key, &change))
		{
			outcome = OUTCOME_ACQUIRED;
			break;
		}

		/* It exists: decide from its state, as of now. */
		keys_snapshot(&kr);
		if (!key_lookup(&kr, scope, key, &row))
			continue;			/* deleted meanwhile: insert again */
		change.now = GetCurrentTimestamp();

		if (row.expires_at <= change.now)
		{
			/* Expired: as if absent, whatever the request. */
			change.token = row.token;
			change.check = check_expired;
			change.build = build_afresh;
			if (key_update(&kr, &row, &change) != KEY_UPDATED)
				continue;		/* changed meanwhile: decide again */
			acquired_at = change.now;
			outcome = OUTCOME_ACQUIRED;
			break;
		}

		if (!fingerprints_equal(row.fingerprint, change.fingerprint))
			ereport(ERROR,
					(errcode(ERRCODE_IDEM_KEY_MISMATCH),
					 errmsg("idempotency key \"%s\" was already used with a different request",
							text_to_cstring(key)),
					 errdetail("The key (scope \"%s\", %s) was reserved with request fingerprint %s; this request has fingerprint %s.",
							   text_to_cstring(scope),
							   key_state_words[row.state],
							   fingerprint_to_cstring(row.fingerprint),
							   fingerprint_to_cstring(change.fingerprint)),
					 errhint("Use a new idempotency key for a different request.")));

		if (row.state == KEY_COMPLETED)
		{
			const int  *col = keys_table.attidx;

			outcome = OUTCOME_REPLAY;
			res[RES_RESPONSE] = row.values[col[KC_RESPONSE]];
			res_null[RES_RESPONSE] = row.isnull[col[KC_RESPONSE]];
			res[RES_STATUS] = row.values[col[KC_STATUS]];
			res_null[RES_STATUS] = row.isnull[col[KC_STATUS]];
			res[RES_EXPIRES_AT] = TimestampTzGetDatum(row.expires_at);
			res_null[RES_EXPIRES_AT] = false;
			break;
		}

		if (row.state == KEY_IN_PROGRESS && row.locked_until > change.now)
		{
			outcome = OUTCOME_IN_PROGRESS;
			res[RES_LOCKED_UNTIL] = TimestampTzGetDatum(row.locked_until);
			res_null[RES_LOCKED_UNTIL] = false;
			res[RES_EXPIRES_AT] = TimestampTzGetDatum(row.expires_at);
			res_null[RES_EXPIRES_AT] = false;
			break;
		}

		/* Released, or the lease ended: take it over. */
		change.token = row.token;
		change.check = check_takeover;
		change.build = build_takeover;
		if (key_update(&kr, &row, &change) != KEY_UPDATED)
			continue;			/* changed meanwhile: decide again */
		acquired_at = change.now;
		outcome = OUTCOME_ACQUIRED;
		{
			/* kept as they were: the row version just replaced has them */
			const int  *col = keys_table.attidx;

			res[RES_RECOVERY_POINT] = row.values[col[KC_RECOVERY_POINT]];
			res_null[RES_RECOVERY_POINT] = row.isnull[col[KC_RECOVERY_POINT]];
			res[RES_CHECKPOINT] = row.values[col[KC_CHECKPOINT]];
			res_null[RES_CHECKPOINT] = row.isnull[col[KC_CHECKPOINT]];
		}
		break;
	}

	if (outcome == OUTCOME_ACQUIRED)
	{
		/*
		 * The lease counts from the moment the key was acquired.  If taking
		 * it over had to wait (for a concurrent transaction on the same key),
		 * restart the lease now, or it would start short or already ended.
		 * (A new key's lease already starts after the conflict check.)
		 */
		if (acquired_at != 0 &&
			TimestampDifferenceExceeds(acquired_at, GetCurrentTimestamp(),
									   LEASE_RESTART_MS))
		{
			Datum		rp = res[RES_RECOVERY_POINT];
			Datum		cp = res[RES_CHECKPOINT];

			/* the recovery state is copied out of the slot reused below */
			if (!res_null[RES_RECOVERY_POINT])
				rp = PointerGetDatum(PG_DETOAST_DATUM_COPY(rp));
			if (!res_null[RES_CHECKPOINT])
				cp = PointerGetDatum(PG_DETOAST_DATUM_COPY(cp));
			keys_snapshot(&kr);
			change.check = check_token;
			change.build = build_restart_lease;
			if (!key_lookup(&kr, scope, key, &row) ||
				key_update(&kr, &row, &change) != KEY_UPDATED)
				elog(ERROR, "pg_idem: lost idempotency key \"%s\" just acquired",
					 text_to_cstring(key));
			res[RES_RECOVERY_POINT] = rp;
			res[RES_CHECKPOINT] = cp;
		}
		res[RES_TOKEN] = Int64GetDatum(change.token);
		res_null[RES_TOKEN] = false;
		res[RES_LOCKED_UNTIL] = TimestampTzGetDatum(change.new_locked_until);
		res_null[RES_LOCKED_UNTIL] = false;
		res[RES_EXPIRES_AT] = TimestampTzGetDatum(change.new_expires_at);
		res_null[RES_EXPIRES_AT] = false;
	}

	/*
	 * Build the answer while the row is still pinned (a replayed response
	 * may point into it) and the snapshot is active (it may be TOASTed).
	 */
	res[RES_OUTCOME] = ObjectIdGetDatum(keys_catalog.outcome_oids[outcome]);
	res_null[RES_OUTCOME] = false;
	result = HeapTupleGetDatum(heap_form_tuple(desc, res, res_null));
	keys_close(&kr);
	PG_RETURN_DATUM(result);
}

/*
 * Apply a holder's change (complete, release, checkpoint) to the key: a
 * compare-and-set update that matches only the key's current token in state
 * in_progress, not expired.  Otherwise raise ID002 or ID003.
 */
static void
holder_change(const char *cmdname, text *scope, text *key, KeyChange *change)
{
	KeysRel		kr;
	KeyRow		row;
	KeyUpdateResult result;

	idem_check_scope(scope, cmdname);
	change->check = check_held;
	keys_catalog_ensure();
	keys_open(&kr, cmdname, false);
	keys_snapshot(&kr);
	if (!key_lookup(&kr, scope, key, &row))
		result = KEY_GONE;
	else
		result = key_update(&kr, &row, change);
	if (result != KEY_UPDATED)
		raise_not_held(scope, key, change->token,
					   result == KEY_GONE ? NULL : &row, change->now);
	keys_close(&kr);
}

/*
 * Explain why a key is not held by token: ID003 when it is absent (or
 * expired), or this token completed or released it; ID002 when the key has
 * another token.
 */
static void
raise_not_held(text *scope, text *key, int64 token, const KeyRow *row,
			   TimestampTz now)
{
	if (row == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_KEY_UNKNOWN),
				 errmsg("idempotency key \"%s\" is not held", text_to_cstring(key)),
				 errdetail("Scope \"%s\" has no reservation of this key: it was never reserved, or it expired or was forgotten.",
						   text_to_cstring(scope)),
				 errhint("Call idem.reserve() first, and pass the token it returns.")));

	if (row->expires_at <= now)
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_KEY_UNKNOWN),
				 errmsg("idempotency key \"%s\" is not held", text_to_cstring(key)),
				 errdetail("The reservation of this key in scope \"%s\" has expired; an expired key is treated as absent.",
						   text_to_cstring(scope)),
				 errhint("Call idem.reserve() again; expiry counts from the end of the lease, or from completion.")));

	/*
	 * A token the key's life never had: issued after its current token, or
	 * before the token that began this life (the life starts with the
	 * first reserve, or a reserve of the key after it expired).  Tokens
	 * come from one sequence, so that is another key's token, or one of an
	 * earlier, expired life of this key: a caller's mix-up, not a takeover.
	 * A token in between is taken to be an earlier holder's: it may also be
	 * another key's, issued between two reservations of this one, which the
	 * row cannot tell.  No message shows a token of the key: a token is the
	 * right to complete it.
	 */
	if (row->token != token &&
		(token > row->token || (row->first_token != 0 && token < row->first_token)))
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_TOKEN_STALE),
				 errmsg("token " INT64_FORMAT " was not issued for idempotency key \"%s\"",
						token, text_to_cstring(key)),
				 token > row->token ?
				 errdetail("Token " INT64_FORMAT " was issued after the current reservation of this key (scope \"%s\"): it belongs to another key, or to a reservation that did not commit.",
						   token, text_to_cstring(scope)) :
				 errdetail("Token " INT64_FORMAT " was issued before this key (scope \"%s\") was reserved: it belongs to another key, or to an earlier reservation of this key that expired.",
						   token, text_to_cstring(scope)),
				 errhint("Pass the token that idem.reserve() returned for this same key and scope.")));

	if (row->token != token)
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_TOKEN_STALE),
				 errmsg("token " INT64_FORMAT " is not the current token of idempotency key \"%s\"",
						token, text_to_cstring(key)),
				 errdetail("The key (scope \"%s\") was taken over by a later reservation after this token's lease ended or it was released; the key is now %s.",
						   text_to_cstring(scope), key_state_words[row->state]),
				 errhint("Another worker now owns this request: stop working on it and do not retry with this token.")));

	if (row->state == KEY_COMPLETED)
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_KEY_UNKNOWN),
				 errmsg("idempotency key \"%s\" is not held", text_to_cstring(key)),
				 errdetail("Token " INT64_FORMAT " already completed the key in scope \"%s\".",
						   token, text_to_cstring(scope)),
				 errhint("A completed key does not change; idem.reserve() with the same request replays its response.")));

	if (row->state == KEY_RELEASED)
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_KEY_UNKNOWN),
				 errmsg("idempotency key \"%s\" is not held", text_to_cstring(key)),
				 errdetail("Token " INT64_FORMAT " released the key in scope \"%s\".",
						   token, text_to_cstring(scope)),
				 errhint("Call idem.reserve() to take the key over with a new token.")));

	elog(ERROR, "pg_idem: idempotency key \"%s\" is held by token " INT64_FORMAT " but could not be changed",
		 text_to_cstring(key), token);
}

/*
 * Store the response of a held key (SPEC.md section 1): the key becomes
 * completed, retries with the same request replay response and status, and
 * it expires ttl after now.  A NULL response is allowed (a response without
 * a body, e.g. HTTP 204) and replays as NULL.  Wrong token: ID002; key not
 * held: ID003.
 */
PG_FUNCTION_INFO_V1(idem_complete);
Datum
idem_complete(PG_FUNCTION_ARGS)
{
	text	   *key = name_arg(fcinfo, 0, false);
	KeyChange	change;
	text	   *scope;

	memset(&change, 0, sizeof(change));
	change.token = token_arg(fcinfo, 1);
	scope = name_arg(fcinfo, 4, true);
	change.response_null = PG_ARGISNULL(2);
	change.response = change.response_null ? (Datum) 0 : PG_GETARG_DATUM(2);
	change.status_null = PG_ARGISNULL(3);
	change.status = change.status_null ? (Datum) 0 : PG_GETARG_DATUM(3);
	change.build = build_complete;

	holder_change("idem.complete()", scope, key, &change);
	PG_RETURN_VOID();
}

/*
 * Give up a held key without a response (SPEC.md section 1).  The key keeps
 * its fingerprint, token, recovery point and checkpoint; the next reserve
 * with the same request takes it over with a larger token and gets them.
 */
PG_FUNCTION_INFO_V1(idem_release);
Datum
idem_release(PG_FUNCTION_ARGS)
{
	text	   *key = name_arg(fcinfo, 0, false);
	KeyChange	change;
	text	   *scope;

	memset(&change, 0, sizeof(change));
	change.token = token_arg(fcinfo, 1);
	scope = name_arg(fcinfo, 2, true);
	change.build = build_release;

	holder_change("idem.release()", scope, key, &change);
	PG_RETURN_VOID();
}

/*
 * Record how far the holder got (SPEC.md section 1), so that a successor
 * taking the key over can resume instead of restarting, and renew the lease
 * to now + lease.  The recovery point is required (a NULL one would silently
 * erase the previous one); the state may be NULL.
 */
PG_FUNCTION_INFO_V1(idem_checkpoint);
Datum
idem_checkpoint(PG_FUNCTION_ARGS)
{
	text	   *key = name_arg(fcinfo, 0, false);
	Interval	lease_dflt = {(TimeOffset) idem_lease_ms * INT64CONST(1000), 0, 0};
	KeyChange	change;
	text	   *scope;

	memset(&change, 0, sizeof(change));
	change.token = token_arg(fcinfo, 1);
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("recovery point must not be null"),
				 errdetail_null_arg(fcinfo, "recovery_point"),
				 errhint("Pass a label for the step the work has reached, such as 'card_charged'.")));
	change.recovery_point = PG_GETARG_DATUM(2);
	change.checkpoint_null = PG_ARGISNULL(3);
	change.checkpoint = change.checkpoint_null ? (Datum) 0 : PG_GETARG_DATUM(3);
	scope = name_arg(fcinfo, 4, true);
	change.lease = interval_arg(fcinfo, 5, "lease", NULL);
	change.lease_fallback = &lease_dflt;
	change.build = build_checkpoint;

	holder_change("idem.checkpoint()", scope, key, &change);
	PG_RETURN_VOID();
}

/* The OID of idem.keys, found by schema-qualified name. */
static Oid
keys_relid(void)
{
	Oid			relid = get_relname_relid("keys", get_namespace_oid("idem", false));

	if (!OidIsValid(relid))
		elog(ERROR, "pg_idem: idem.keys is missing");
	return relid;
}

/* Connect to SPI; only a bug can make it fail. */
static void
keys_spi_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_idem: SPI_connect failed");
}

/*
 * Delete a key in any state, held or not.  Returns true when it existed and
 * had not expired (an expired key already counts as absent; its row is
 * deleted all the same).  A holder of a forgotten key gets ID003 from
 * complete, release and checkpoint.
 */
PG_FUNCTION_INFO_V1(idem_forget);
Datum
idem_forget(PG_FUNCTION_ARGS)
{
	text	   *key = name_arg(fcinfo, 0, false);
	text	   *scope = name_arg(fcinfo, 1, true);
	Datum		values[3];
	bool		alive = false;
	IdemUserSwitch sw;

	PreventCommandIfReadOnly("idem.forget()");
	idem_check_scope(scope, "idem.forget()");
	values[0] = PointerGetDatum(scope);
	values[1] = PointerGetDatum(key);
	values[2] = TimestampTzGetDatum(GetCurrentTimestamp());

	/*
	 * The caller's rights were checked above; the DELETE runs with the
	 * rights of idem.keys' owner (forget() is not SECURITY DEFINER, so that
	 * the check sees the caller).
	 */
	idem_become_table_owner(keys_relid(), &sw);
	keys_spi_connect();
	idem_plan_execute(&plan_forget, values, NULL, false, 0);
	if (SPI_processed == 1)
	{
		bool		isnull;

		alive = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	idem_restore_user(&sw);
	PG_RETURN_BOOL(alive);
}

/*
 * Delete up to max_rows expired keys; returns how many.  Call inside a
 * transaction; connects to SPI itself.  The batch bound keeps each call
 * short, and rows locked by running transactions are skipped, so purging
 * never waits for (or blocks) a holder.  idem.maintain() calls this.
 */
int64
idem_keys_purge(int32 max_rows)
{
	Datum		values[2];
	int64		deleted;

	if (max_rows <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be positive"),
				 errdetail("max_rows is %d.", max_rows)));

	PreventCommandIfReadOnly("idem.purge()");
	values[0] = TimestampTzGetDatum(GetCurrentTimestamp());
	values[1] = Int64GetDatum(max_rows);

	keys_spi_connect();
	idem_plan_execute(&plan_purge, values, NULL, false, 0);
	deleted = (int64) SPI_processed;
	SPI_finish();
	return deleted;
}

/* idem.purge(max_rows): the SQL face of idem_keys_purge(). */
PG_FUNCTION_INFO_V1(idem_purge);
Datum
idem_purge(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_rows must not be null"),
				 errdetail_null_arg(fcinfo, "max_rows")));
	PG_RETURN_INT64(idem_keys_purge(PG_GETARG_INT32(0)));
}
