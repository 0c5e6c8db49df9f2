/*-------------------------------------------------------------------------
 *
 * keys.c
 *	  Idempotency keys: reserve, complete, release, checkpoint, forget and
 *	  purge (SPEC.md section 1).
 *
 * A key is one row of idem.keys, identified by (scope, key).  reserve()
 * first tries to insert it with INSERT ... ON CONFLICT DO NOTHING.  That
 * statement is what makes atomic mode work: when another transaction has
 * inserted (or is changing) the same key and has not committed yet, the
 * insert waits for it, and then either inserts (the other one rolled back)
 * or sees the committed row.  There is never a check followed by an insert.
 *
 * When the row exists, reserve() reads it and decides from its state.  Only
 * the decisions that change the row take a lock, and they take it by being
 * a single compare-and-set UPDATE: "take over the key if its token is still
 * the one I read and its lease has still ended".  Under READ COMMITTED an
 * UPDATE that waited for a concurrent writer re-checks its WHERE clause on
 * the newest row version, so the decision is made under the row lock; when
 * the re-check fails, reserve() starts again and decides from the new
 * state.  A replay, an in_progress answer and a fingerprint mismatch are
 * read without a lock: they change nothing, and a row lock held until the
 * end of the caller's transaction would make retry storms of one key
 * serialize and would block the holder's own complete().
 *
 * complete(), release() and checkpoint() are likewise one UPDATE each that
 * matches only the key's current token in state in_progress; only when it
 * matches nothing is the row read again to say why (ID002 or ID003).
 *
 * Leases and expiry are decided with the wall clock (GetCurrentTimestamp,
 * i.e. clock_timestamp()), never with the transaction start time, which is
 * stale in a long transaction.  A row whose expires_at has passed behaves as
 * absent in every state, whether or not purge() has deleted it yet.
 *
 * Every query is planned once per backend and kept (spi_util.c), and the
 * row type reserve() returns is looked up once and cached.
 *
 * IDENTIFICATION
 *	  src/keys.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "fingerprint.h"
#include "keys.h"
#include "pg_idem.h"
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

/*
 * A stored key as read by key_fetch().  The pass-by-reference datums point
 * into SPI memory and are valid until SPI_finish().
 */
typedef struct KeyRow
{
	KeyState	state;
	int64		token;
	bytea	   *fingerprint;	/* NULL for a NULL request */
	TimestampTz locked_until;	/* valid when in progress */
	TimestampTz expires_at;
	Datum		response;
	bool		response_null;
	Datum		status;
	bool		status_null;
	Datum		recovery_point;
	bool		recovery_point_null;
	Datum		checkpoint;
	bool		checkpoint_null;
} KeyRow;

/*
 * Backend-lifetime cache of catalog facts: the row type reserve() returns,
 * and the pg_enum OIDs of the outcome and state labels.  Reset by a pg_type
 * invalidation (e.g. an upgrade that alters idem.reservation) and rebuilt
 * on next use.
 */
typedef struct KeysCache
{
	bool		valid;
	Oid			reserve_fn_oid; /* the function the descriptor was built for */
	TupleDesc	reservation_desc;	/* in TopMemoryContext */
	Oid			outcome_oids[OUTCOME_N];
	Oid			state_typid;
	Oid			state_oids[KEY_NSTATES];
} KeysCache;

static KeysCache keys_cache;
static bool keys_cache_callback_registered = false;

#define TEXT_C	"COLLATE pg_catalog.\"C\""
#define KEY_MATCH \
	"k.scope OPERATOR(pg_catalog.=) $1 " TEXT_C \
	" AND k.key OPERATOR(pg_catalog.=) $2 " TEXT_C

/* A new key: $1 scope, $2 key, $3 fingerprint, $4 lease end, $5 ttl, $6 now, $7 expiry */
static IdemPlan plan_insert = {
	"INSERT INTO idem.keys AS k"
	" (scope, key, state, fingerprint, locked_until, ttl, created_at, updated_at, expires_at)"
	" VALUES ($1, $2, 'in_progress', $3, $4, $5, $6, $6, $7)"
	" ON CONFLICT (scope, key) DO NOTHING"
	" RETURNING k.token",
	7, {TEXTOID, TEXTOID, BYTEAOID, TIMESTAMPTZOID, INTERVALOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/* Read a key: $1 scope, $2 key */
static IdemPlan plan_select = {
	"SELECT k.state, k.token, k.fingerprint, k.locked_until, k.expires_at,"
	" k.response, k.status, k.recovery_point, k.checkpoint"
	" FROM idem.keys AS k WHERE " KEY_MATCH,
	2, {TEXTOID, TEXTOID}
};

/*
 * Take over a released key or one whose lease has ended, keeping its
 * fingerprint, recovery point and checkpoint, if its token is still $3:
 * $4 lease end, $5 ttl, $6 now, $7 expiry.
 */
static IdemPlan plan_takeover = {
	"UPDATE idem.keys AS k SET token = DEFAULT, state = 'in_progress',"
	" locked_until = $4, ttl = $5, updated_at = $6, expires_at = $7"
	" WHERE " KEY_MATCH " AND k.token OPERATOR(pg_catalog.=) $3"
	" AND (k.state OPERATOR(pg_catalog.=) 'released'"
	"      OR (k.state OPERATOR(pg_catalog.=) 'in_progress'"
	"          AND k.locked_until OPERATOR(pg_catalog.<=) $6))"
	" AND k.expires_at OPERATOR(pg_catalog.>) $6"
	" RETURNING k.token, k.recovery_point, k.checkpoint",
	7, {TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID, INTERVALOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/*
 * Reserve an expired key afresh, as if it were new, if its token is still
 * $3: $4 lease end, $5 ttl, $6 now, $7 expiry, $8 fingerprint.
 */
static IdemPlan plan_afresh = {
	"UPDATE idem.keys AS k SET token = DEFAULT, state = 'in_progress', fingerprint = $8,"
	" locked_until = $4, ttl = $5, response = NULL, status = NULL,"
	" recovery_point = NULL, checkpoint = NULL,"
	" created_at = $6, updated_at = $6, expires_at = $7"
	" WHERE " KEY_MATCH " AND k.token OPERATOR(pg_catalog.=) $3"
	" AND k.expires_at OPERATOR(pg_catalog.<=) $6"
	" RETURNING k.token",
	8, {TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID, INTERVALOID, TIMESTAMPTZOID,
	TIMESTAMPTZOID, BYTEAOID}
};

/*
 * Restart the lease of a key this transaction has just acquired, when the
 * acquiring statement had to wait: $3 token, $4 lease end, $5 now, $6 expiry.
 */
static IdemPlan plan_restart_lease = {
	"UPDATE idem.keys AS k SET locked_until = $4, updated_at = $5, expires_at = $6"
	" WHERE " KEY_MATCH " AND k.token OPERATOR(pg_catalog.=) $3",
	6, {TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/*
 * The holder's condition shared by complete, release and checkpoint: the
 * current token, still in progress, not expired ($3 token, $now).
 */
#define HELD_BY_TOKEN(now) \
	" WHERE " KEY_MATCH " AND k.token OPERATOR(pg_catalog.=) $3" \
	" AND k.state OPERATOR(pg_catalog.=) 'in_progress'" \
	" AND k.expires_at OPERATOR(pg_catalog.>) " now

/* $3 token, $4 response, $5 status, $6 now */
static IdemPlan plan_complete = {
	"UPDATE idem.keys AS k SET state = 'completed', response = $4, status = $5,"
	" locked_until = NULL, recovery_point = NULL, checkpoint = NULL,"
	" updated_at = $6, expires_at = $6 OPERATOR(pg_catalog.+) k.ttl"
	HELD_BY_TOKEN("$6"),
	6, {TEXTOID, TEXTOID, INT8OID, JSONBOID, INT4OID, TIMESTAMPTZOID}
};

/* $3 token, $4 now */
static IdemPlan plan_release = {
	"UPDATE idem.keys AS k SET state = 'released', locked_until = NULL,"
	" updated_at = $4, expires_at = $4 OPERATOR(pg_catalog.+) k.ttl"
	HELD_BY_TOKEN("$4"),
	4, {TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID}
};

/* $3 token, $4 recovery point, $5 state, $6 lease end, $7 now */
static IdemPlan plan_checkpoint = {
	"UPDATE idem.keys AS k SET recovery_point = $4, checkpoint = $5,"
	" locked_until = $6, updated_at = $7, expires_at = $6 OPERATOR(pg_catalog.+) k.ttl"
	HELD_BY_TOKEN("$7"),
	7, {TEXTOID, TEXTOID, INT8OID, TEXTOID, JSONBOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
};

/* $3 now; returns whether the deleted key was still alive */
static IdemPlan plan_forget = {
	"DELETE FROM idem.keys AS k WHERE " KEY_MATCH
	" RETURNING k.expires_at OPERATOR(pg_catalog.>) $3",
	3, {TEXTOID, TEXTOID, TIMESTAMPTZOID}
};

/*
 * Up to $2 expired keys ($1 now).  Rows locked by a running transaction are
 * skipped rather than waited for, so purge never queues behind a holder.
 */
static IdemPlan plan_purge = {
	"DELETE FROM idem.keys AS k"
	" WHERE k.ctid OPERATOR(pg_catalog.=) ANY (ARRAY("
	"   SELECT e.ctid FROM idem.keys AS e"
	"   WHERE e.expires_at OPERATOR(pg_catalog.<=) $1"
	"   LIMIT $2 FOR UPDATE SKIP LOCKED))"
	" AND k.expires_at OPERATOR(pg_catalog.<=) $1",
	2, {TIMESTAMPTZOID, INT8OID}
};

static void keys_spi_connect(void);
static text *name_arg(FunctionCallInfo fcinfo, int argno, bool is_scope);
static int64 token_arg(FunctionCallInfo fcinfo, int argno);
static Interval *interval_arg(FunctionCallInfo fcinfo, int argno,
							  const char *what, Interval *dflt);
static TimestampTz add_interval(TimestampTz t, Interval *i);
static char *interval_to_cstring(Interval *i);
static char *fingerprint_to_cstring(bytea *fp);
static bool fingerprints_equal(bytea *a, bytea *b);
static bool key_fetch(text *scope, text *key, KeyRow *row);
static void key_change(IdemPlan *plan, Datum *values, const char *nulls,
					   text *scope, text *key, int64 token, TimestampTz now);
static bool key_explain_not_held(text *scope, text *key, int64 token,
								 TimestampTz now);
static void keys_cache_reset(Datum arg, int cacheid, uint32 hashvalue);
static void enum_label_oids(Oid typid, const char *const *labels, int n,
							Oid *oids);
static KeyState state_from_datum(Oid typid, Datum d);
static TupleDesc reservation_desc(FunctionCallInfo fcinfo);


/* Connect to SPI; only a bug can make it fail. */
static void
keys_spi_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_idem: SPI_connect failed");
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
 * Read the stored row of a key into *row (no lock).  Returns false when
 * there is none.  Must be connected to SPI.
 */
static bool
key_fetch(text *scope, text *key, KeyRow *row)
{
	Datum		values[2];
	HeapTuple	tup;
	TupleDesc	desc;
	Datum		d;
	bool		isnull;

	values[0] = PointerGetDatum(scope);
	values[1] = PointerGetDatum(key);
	idem_plan_execute(&plan_select, values, NULL, false, 1);
	if (SPI_processed == 0)
		return false;

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	d = SPI_getbinval(tup, desc, 1, &isnull);
	row->state = state_from_datum(TupleDescAttr(desc, 0)->atttypid, d);
	row->token = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
	d = SPI_getbinval(tup, desc, 3, &isnull);
	row->fingerprint = isnull ? NULL : DatumGetByteaPP(d);
	d = SPI_getbinval(tup, desc, 4, &isnull);
	row->locked_until = isnull ? DT_NOBEGIN : DatumGetTimestampTz(d);
	row->expires_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
	row->response = SPI_getbinval(tup, desc, 6, &row->response_null);
	row->status = SPI_getbinval(tup, desc, 7, &row->status_null);
	row->recovery_point = SPI_getbinval(tup, desc, 8, &row->recovery_point_null);
	row->checkpoint = SPI_getbinval(tup, desc, 9, &row->checkpoint_null);
	return true;
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
	Interval   *lease = interval_arg(fcinfo, 3, "lease", &lease_dflt);
	Interval   *ttl = interval_arg(fcinfo, 4, "ttl", &ttl_dflt);
	bytea	   *fingerprint = NULL;
	MemoryContext callerctx = CurrentMemoryContext;
	Datum		res[RES_NATTS];
	bool		res_null[RES_NATTS];
	Outcome		outcome = OUTCOME_ACQUIRED;
	HeapTuple	result;

	if (!PG_ARGISNULL(1))
	{
		fingerprint = palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
		SET_VARSIZE(fingerprint, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
		idem_fingerprint_jsonb(PG_GETARG_JSONB_P(1), (uint8 *) VARDATA(fingerprint));
	}

	memset(res_null, true, sizeof(res_null));
	keys_spi_connect();

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz locked_until = add_interval(now, lease);
		TimestampTz expires_at = add_interval(locked_until, ttl);
		Datum		values[8];
		char		nulls[8];
		KeyRow		row;
		bool		isnull;

		CHECK_FOR_INTERRUPTS();

		/* A new key?  Waits for a concurrent inserter of the same key. */
		values[0] = PointerGetDatum(scope);
		values[1] = PointerGetDatum(key);
		values[2] = PointerGetDatum(fingerprint);
		values[3] = TimestampTzGetDatum(locked_until);
		values[4] = IntervalPGetDatum(ttl);
		values[5] = TimestampTzGetDatum(now);
		values[6] = TimestampTzGetDatum(expires_at);
		memset(nulls, ' ', sizeof(nulls));
		nulls[2] = fingerprint ? ' ' : 'n';
		idem_plan_execute(&plan_insert, values, nulls, false, 0);
		if (SPI_processed == 1)
		{
			outcome = OUTCOME_ACQUIRED;
			res[RES_TOKEN] = SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull);
			res_null[RES_TOKEN] = false;
		}
		else
		{
			/* It exists: decide from its state, as of now. */
			if (!key_fetch(scope, key, &row))
				continue;		/* deleted meanwhile: insert again */
			now = GetCurrentTimestamp();
			locked_until = add_interval(now, lease);
			expires_at = add_interval(locked_until, ttl);
			values[2] = Int64GetDatum(row.token);
			nulls[2] = ' ';
			values[3] = TimestampTzGetDatum(locked_until);
			values[5] = TimestampTzGetDatum(now);
			values[6] = TimestampTzGetDatum(expires_at);
			values[7] = PointerGetDatum(fingerprint);
			nulls[7] = fingerprint ? ' ' : 'n';

			if (row.expires_at <= now)
			{
				/* Expired: as if absent, any request may have it. */
				idem_plan_execute(&plan_afresh, values, nulls, false, 0);
				if (SPI_processed != 1)
					continue;	/* changed meanwhile: decide again */
				outcome = OUTCOME_ACQUIRED;
				res[RES_TOKEN] = SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull);
				res_null[RES_TOKEN] = false;
			}
			else if (!fingerprints_equal(row.fingerprint, fingerprint))
			{
				ereport(ERROR,
						(errcode(ERRCODE_IDEM_KEY_MISMATCH),
						 errmsg("idempotency key \"%s\" was already used with a different request",
								text_to_cstring(key)),
						 errdetail("The key (scope \"%s\", %s) was reserved with request fingerprint %s; this request has fingerprint %s.",
								   text_to_cstring(scope),
								   key_state_words[row.state],
								   fingerprint_to_cstring(row.fingerprint),
								   fingerprint_to_cstring(fingerprint)),
						 errhint("Use a new idempotency key for a different request.")));
			}
			else if (row.state == KEY_COMPLETED)
			{
				outcome = OUTCOME_REPLAY;
				res[RES_RESPONSE] = row.response;
				res_null[RES_RESPONSE] = row.response_null;
				res[RES_STATUS] = row.status;
				res_null[RES_STATUS] = row.status_null;
				res[RES_EXPIRES_AT] = TimestampTzGetDatum(row.expires_at);
				res_null[RES_EXPIRES_AT] = false;
			}
			else if (row.state == KEY_IN_PROGRESS && row.locked_until > now)
			{
				outcome = OUTCOME_IN_PROGRESS;
				res[RES_LOCKED_UNTIL] = TimestampTzGetDatum(row.locked_until);
				res_null[RES_LOCKED_UNTIL] = false;
				res[RES_EXPIRES_AT] = TimestampTzGetDatum(row.expires_at);
				res_null[RES_EXPIRES_AT] = false;
			}
			else
			{
				/* Released, or the lease ended: take it over. */
				HeapTuple	tup;
				TupleDesc	desc;

				idem_plan_execute(&plan_takeover, values, nulls, false, 0);
				if (SPI_processed != 1)
					continue;	/* changed meanwhile: decide again */
				outcome = OUTCOME_ACQUIRED;
				tup = SPI_tuptable->vals[0];
				desc = SPI_tuptable->tupdesc;
				res[RES_TOKEN] = SPI_getbinval(tup, desc, 1, &isnull);
				res_null[RES_TOKEN] = false;
				res[RES_RECOVERY_POINT] = SPI_getbinval(tup, desc, 2,
														&res_null[RES_RECOVERY_POINT]);
				res[RES_CHECKPOINT] = SPI_getbinval(tup, desc, 3,
													&res_null[RES_CHECKPOINT]);
			}
		}

		if (outcome == OUTCOME_ACQUIRED)
		{
			/*
			 * The lease counts from the moment the key was acquired.  If the
			 * acquiring statement waited (for a concurrent transaction on the
			 * same key), restart the lease now, or it would start short or
			 * even already ended.
			 */
			TimestampTz acquired = GetCurrentTimestamp();

			if (TimestampDifferenceExceeds(now, acquired, 1))
			{
				Datum		rvalues[6];

				locked_until = add_interval(acquired, lease);
				expires_at = add_interval(locked_until, ttl);
				rvalues[0] = PointerGetDatum(scope);
				rvalues[1] = PointerGetDatum(key);
				rvalues[2] = res[RES_TOKEN];
				rvalues[3] = TimestampTzGetDatum(locked_until);
				rvalues[4] = TimestampTzGetDatum(acquired);
				rvalues[5] = TimestampTzGetDatum(expires_at);
				idem_plan_execute(&plan_restart_lease, rvalues, NULL, false, 0);
				if (SPI_processed != 1)
					elog(ERROR, "pg_idem: lost idempotency key \"%s\" just acquired",
						 text_to_cstring(key));
			}
			res[RES_LOCKED_UNTIL] = TimestampTzGetDatum(locked_until);
			res_null[RES_LOCKED_UNTIL] = false;
			res[RES_EXPIRES_AT] = TimestampTzGetDatum(expires_at);
			res_null[RES_EXPIRES_AT] = false;
		}
		break;
	}

	/* Build the answer where the caller can see it, before SPI_finish. */
	{
		MemoryContext spictx = MemoryContextSwitchTo(callerctx);
		TupleDesc	desc = reservation_desc(fcinfo);

		res[RES_OUTCOME] = ObjectIdGetDatum(keys_cache.outcome_oids[outcome]);
		res_null[RES_OUTCOME] = false;
		result = heap_form_tuple(desc, res, res_null);
		MemoryContextSwitchTo(spictx);
	}

	SPI_finish();
	PG_RETURN_DATUM(HeapTupleGetDatum(result));
}

/*
 * Run one of the holder's UPDATEs (complete, release, checkpoint), which
 * match only the key's current token in state in_progress.  When it matches
 * nothing, read the key again to raise the right error.  The UPDATE itself
 * is the decision: under READ COMMITTED, if it waited for a concurrent
 * takeover it re-checks the token on the new row version and matches
 * nothing, so a stale holder can never overwrite its successor.
 */
static void
key_change(IdemPlan *plan, Datum *values, const char *nulls,
		   text *scope, text *key, int64 token, TimestampTz now)
{
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		idem_plan_execute(plan, values, nulls, false, 0);
		if (SPI_processed == 1)
			return;
		if (!key_explain_not_held(scope, key, token, now))
			return;
		/* held after all: committed after our UPDATE began; try again */
	}
}

/*
 * Explain why a key is not held by token: raise ID003 (absent, expired,
 * completed or released by this token) or ID002 (another token).  Returns
 * true only when the key turns out to be held by token after all.
 */
static bool
key_explain_not_held(text *scope, text *key, int64 token, TimestampTz now)
{
	KeyRow		row;

	if (!key_fetch(scope, key, &row))
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_KEY_UNKNOWN),
				 errmsg("idempotency key \"%s\" is not held", text_to_cstring(key)),
				 errdetail("Scope \"%s\" has no reservation of this key: it was never reserved, or it expired or was forgotten.",
						   text_to_cstring(scope)),
				 errhint("Call idem.reserve() first, and pass the token it returns.")));

	if (row.expires_at <= now)
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_KEY_UNKNOWN),
				 errmsg("idempotency key \"%s\" is not held", text_to_cstring(key)),
				 errdetail("The reservation of this key in scope \"%s\" has expired; an expired key is treated as absent.",
						   text_to_cstring(scope)),
				 errhint("Call idem.reserve() again; expiry counts from the end of the lease, or from completion.")));

	if (row.token != token)
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_TOKEN_STALE),
				 errmsg("token " INT64_FORMAT " is not the current token of idempotency key \"%s\"",
						token, text_to_cstring(key)),
				 token < row.token ?
				 errdetail("The key (scope \"%s\") was taken over by a later reservation after this token's lease ended or it was released; the key is now %s.",
						   text_to_cstring(scope), key_state_words[row.state]) :
				 errdetail("This key (scope \"%s\") never had this token; the key is %s.",
						   text_to_cstring(scope), key_state_words[row.state]),
				 token < row.token ?
				 errhint("Another worker now owns this request: stop working on it and do not retry with this token.") :
				 errhint("Pass the token that idem.reserve() returned for this same key and scope.")));

	if (row.state == KEY_COMPLETED)
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_KEY_UNKNOWN),
				 errmsg("idempotency key \"%s\" is not held", text_to_cstring(key)),
				 errdetail("Token " INT64_FORMAT " already completed the key in scope \"%s\".",
						   token, text_to_cstring(scope)),
				 errhint("A completed key does not change; idem.reserve() with the same request replays its response.")));

	if (row.state == KEY_RELEASED)
		ereport(ERROR,
				(errcode(ERRCODE_IDEM_KEY_UNKNOWN),
				 errmsg("idempotency key \"%s\" is not held", text_to_cstring(key)),
				 errdetail("Token " INT64_FORMAT " released the key in scope \"%s\".",
						   token, text_to_cstring(scope)),
				 errhint("Call idem.reserve() to take the key over with a new token.")));

	return true;
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
	int64		token = token_arg(fcinfo, 1);
	text	   *scope = name_arg(fcinfo, 4, true);
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	values[0] = PointerGetDatum(scope);
	values[1] = PointerGetDatum(key);
	values[2] = Int64GetDatum(token);
	values[3] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[3] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[4] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[4] = PG_ARGISNULL(3) ? 'n' : ' ';
	values[5] = TimestampTzGetDatum(now);

	keys_spi_connect();
	key_change(&plan_complete, values, nulls, scope, key, token, now);
	SPI_finish();
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
	int64		token = token_arg(fcinfo, 1);
	text	   *scope = name_arg(fcinfo, 2, true);
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[4];

	values[0] = PointerGetDatum(scope);
	values[1] = PointerGetDatum(key);
	values[2] = Int64GetDatum(token);
	values[3] = TimestampTzGetDatum(now);

	keys_spi_connect();
	key_change(&plan_release, values, NULL, scope, key, token, now);
	SPI_finish();
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
	int64		token = token_arg(fcinfo, 1);
	text	   *scope = name_arg(fcinfo, 4, true);
	Interval	lease_dflt = {(TimeOffset) idem_lease_ms * INT64CONST(1000), 0, 0};
	Interval   *lease = interval_arg(fcinfo, 5, "lease", &lease_dflt);
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("recovery point must not be null"),
				 errhint("Pass a label for the step the work has reached, such as 'card_charged'.")));

	values[0] = PointerGetDatum(scope);
	values[1] = PointerGetDatum(key);
	values[2] = Int64GetDatum(token);
	values[3] = PG_GETARG_DATUM(2);
	values[4] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[4] = PG_ARGISNULL(3) ? 'n' : ' ';
	values[5] = TimestampTzGetDatum(add_interval(now, lease));
	values[6] = TimestampTzGetDatum(now);

	keys_spi_connect();
	key_change(&plan_checkpoint, values, nulls, scope, key, token, now);
	SPI_finish();
	PG_RETURN_VOID();
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

	values[0] = PointerGetDatum(scope);
	values[1] = PointerGetDatum(key);
	values[2] = TimestampTzGetDatum(GetCurrentTimestamp());

	keys_spi_connect();
	idem_plan_execute(&plan_forget, values, NULL, false, 0);
	if (SPI_processed == 1)
	{
		bool		isnull;

		alive = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
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
				 errmsg("max_rows must not be null")));
	PG_RETURN_INT64(idem_keys_purge(PG_GETARG_INT32(0)));
}

/* Syscache callback: any pg_type change may have changed what we cached. */
static void
keys_cache_reset(Datum arg, int cacheid, uint32 hashvalue)
{
	keys_cache.valid = false;
	keys_cache.state_typid = InvalidOid;
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
			elog(ERROR, "pg_idem: enum type %u has no label \"%s\"",
				 typid, labels[i]);
	}
}

/* Decode a stored idem.key_state value (a pg_enum OID). */
static KeyState
state_from_datum(Oid typid, Datum d)
{
	Oid			oid = DatumGetObjectId(d);

	if (keys_cache.state_typid != typid)
	{
		keys_cache.state_typid = InvalidOid;
		enum_label_oids(typid, key_state_labels, KEY_NSTATES, keys_cache.state_oids);
		keys_cache.state_typid = typid;
		if (!keys_cache_callback_registered)
		{
			CacheRegisterSyscacheCallback(TYPEOID, keys_cache_reset, (Datum) 0);
			keys_cache_callback_registered = true;
		}
	}
	for (int i = 0; i < KEY_NSTATES; i++)
		if (keys_cache.state_oids[i] == oid)
			return (KeyState) i;
	elog(ERROR, "pg_idem: unexpected idempotency key state %u", oid);
	pg_unreachable();
}

/*
 * The descriptor of idem.reservation, and the OIDs of idem.outcome's
 * labels, looked up on first use and kept for the backend's life.  Called
 * right before the answer is formed (no catalog access can happen between
 * this and the use of the descriptor).
 */
static TupleDesc
reservation_desc(FunctionCallInfo fcinfo)
{
	if (!keys_cache.valid || keys_cache.reserve_fn_oid != fcinfo->flinfo->fn_oid)
	{
		MemoryContext oldctx;
		TupleDesc	desc;

		if (keys_cache.reservation_desc != NULL)
		{
			FreeTupleDesc(keys_cache.reservation_desc);
			keys_cache.reservation_desc = NULL;
		}

		if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "pg_idem: idem.reserve() must return a composite type");
		oldctx = MemoryContextSwitchTo(TopMemoryContext);
		desc = CreateTupleDescCopy(desc);
		MemoryContextSwitchTo(oldctx);
		if (desc->natts != RES_NATTS)
			elog(ERROR, "pg_idem: idem.reservation has %d attributes, expected %d",
				 desc->natts, RES_NATTS);

		enum_label_oids(TupleDescAttr(desc, RES_OUTCOME)->atttypid,
						outcome_labels, OUTCOME_N, keys_cache.outcome_oids);
		keys_cache.reservation_desc = desc;
		keys_cache.reserve_fn_oid = fcinfo->flinfo->fn_oid;
		keys_cache.valid = true;
		if (!keys_cache_callback_registered)
		{
			CacheRegisterSyscacheCallback(TYPEOID, keys_cache_reset, (Datum) 0);
			keys_cache_callback_registered = true;
		}
	}
	return keys_cache.reservation_desc;
}
