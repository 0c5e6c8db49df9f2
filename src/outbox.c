/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The transactional outbox's consuming side: subscribe, unsubscribe,
 *	  next_batch, finish_batch, and the trimming that idem.maintain() runs.
 *
 * An event is a row of idem.outbox inserted by emit() in the caller's
 * transaction (outbox_emit.c), so it exists if and only if that transaction
 * commits.  The row records its writing transaction as a top-level xid8.
 *
 * Delivery follows transaction visibility, as in PgQ, but without a ticker
 * daemon: each consumer keeps the snapshot up to which it has finished (P).
 * When it asks for events, next_batch takes a fresh snapshot C, and the
 * window (P, C) is the set of events whose xid is visible in C and was not
 * visible in P.  Both snapshots are fixed, and a transaction visible in C has
 * written all its rows, so the set is fixed too: walking it in id order with
 * an id cursor across successive batches is exact, and a transaction that
 * commits late simply falls into a later window.  When the window is
 * exhausted, P := C.  Nothing relies on ids growing with commit order, which
 * is what makes `id > last_id` lose the events of long transactions.
 *
 * Storage is a ring (0.2, src/sql/40_outbox.sql): idem.outbox is
 * partitioned by (id / S) % N, so run r of S consecutive ids lives in leaf
 * r % N, and each leaf has its own primary key (id) INCLUDE (xid) and its
 * (xid, id) index.
 *
 * The walk never wades through events outside the window.  When a window
 * opens, one index-only pass over its entries in each leaf's (xid, id)
 * index finds the smallest and largest event id in it: every event of the
 * window has either an xid in [P.xmax, C.xmax) -- one range of that index
 * -- or an xid that was running at P and is finished at C (a short list,
 * PgQ's "IN list", probed by equality).  Batches then walk the primary
 * keys, which carry the xid, from the cursor up to that largest id, run by
 * run in the leaf of each run (so in id order), skipping entries of other
 * windows on the index tuple alone.  So a batch costs its own rows, not the
 * retained history, not the rest of the window.
 *
 * Each consumer locks only its own row of idem.consumers, and only when
 * there is something to do; emitters never touch that table.
 *
 * A consumer belongs to the role that subscribed it (idem.consumers.owner,
 * since 0.2): subscribe (of an existing consumer), unsubscribe, next_batch
 * and finish_batch check that the current user is that role or a member of
 * it, and subscribe and next_batch that it may read every topic of the
 * filter (privileges.c).  The functions are therefore not SECURITY DEFINER:
 * they check their caller, then run their SQL as the owner of
 * idem.consumers.  A database not yet updated to 0.2 has no owner column;
 * there the 0.1 statements run and nothing is checked.
 *
 * Trimming removes events whose xid is visible in every consumer's P: a
 * whole leaf at a time with TRUNCATE once all its events are (see
 * idem_outbox_trim and trim_truncate_leaf), so that space comes back
 * whatever old snapshot some session holds; rows are deleted one by one
 * only in a leaf that holds two laps of the ring.
 *
 * IDENTIFICATION
 *	  src/outbox.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/itup.h"
#include "access/relscan.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/heap.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "storage/bufmgr.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "lib/stringinfo.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/xid8.h"

#include "outbox.h"
#include "outbox_notify.h"
#include "pg_idem.h"
#include "privileges.h"
#include "spi_util.h"

/*
 * The in-memory layout of a pg_snapshot value (xid8funcs.c keeps it
 * private).  It is the on-disk format of a type stored in user tables, so
 * it cannot change without breaking pg_upgrade; snapshot_from_datum()
 * checks the size anyway.
 */
typedef struct OutboxSnapshot
{
	int32		vl_len_;		/* varlena header (do not touch directly) */
	uint32		nxip;			/* number of in-progress xids */
	FullTransactionId xmin;
	FullTransactionId xmax;
	FullTransactionId xip[FLEXIBLE_ARRAY_MEMBER];	/* sorted, in [xmin, xmax) */
} OutboxSnapshot;

#define OUTBOX_SNAPSHOT_SIZE(n) \
	(offsetof(OutboxSnapshot, xip) + sizeof(FullTransactionId) * (n))

/* Attribute numbers of idem.outbox's columns, looked up by name. */
typedef struct OutboxAttrs
{
	AttrNumber	id;
	AttrNumber	topic;
	AttrNumber	key;
	AttrNumber	payload;
	AttrNumber	headers;
	AttrNumber	created_at;
} OutboxAttrs;

/*
 * One leaf of the ring (a partition of idem.outbox), opened on demand.
 * Its indexes are found by their columns: the primary key (id) INCLUDE
 * (xid) and (xid, id).
 */
typedef struct OutboxLeaf
{
	Oid			relid;
	Relation	heap;			/* NULL until opened */
	Relation	pkey;			/* (id) INCLUDE (xid) */
	Relation	byxid;			/* (xid, id) */
	TupleTableSlot *slot;
	OutboxAttrs att;
} OutboxLeaf;

/*
 * Walks of the leaves' two indexes: the primary key, walked in id order,
 * and (xid, id), walked by xid.  Both carry the xid, so entries outside a
 * window are skipped on the index tuple; the heap is fetched, under an MVCC
 * snapshot, only for the entries kept.  One walk is in progress at a time,
 * in leaf `cur`.
 *
 * The leaves are opened when a walk first needs them and closed, with
 * their AccessShareLock released, by scan_end() at the end of the call
 * (scan_end's comment says why that is safe): a relay that keeps its
 * transaction open while it works must not keep trimming's TRUNCATE away.
 */
typedef struct OutboxScan
{
	Relation	parent;			/* idem.outbox */
	int			nleaves;
	OutboxLeaf *leaves;
	int			leaf_of_value[IDEM_OUTBOX_LEAVES];	/* key value -> leaf, or -1 */
	Snapshot	snapshot;
	IndexScanDesc scan;			/* the walk in progress */
	OutboxLeaf *cur;			/* its leaf */
	ScanKeyData keys[2];
} OutboxScan;

/* A row of a batch, copied from its leaf. */
typedef struct OutboxRow
{
	HeapTuple	tup;
	OutboxLeaf *leaf;
	int64		id;
} OutboxRow;

/* A topic filter: NULL (every topic) or a list of names. */
typedef struct TopicFilter
{
	int			n;
	text	  **names;
} TopicFilter;

/* A window: the events of (prev, window), ids after done up to last. */
typedef struct Window
{
	const OutboxSnapshot *prev;
	const OutboxSnapshot *window;
	int64		done;
	int64		last;
} Window;

/* A consumer's row of idem.consumers, as next_batch() reads it. */
typedef struct ConsumerState
{
	Datum		prev_datum;		/* snapshot: P */
	OutboxSnapshot *prev;
	Datum		window_datum;	/* window_snapshot: C, when a window is open */
	OutboxSnapshot *window;
	int64		done_id;		/* window_done_id */
	int64		last_id;		/* window_last_id */
	bool		has_batch;		/* an open batch? */
	int64		batch_id;
	int64		batch_last_id;
	TopicFilter *batch_topics;
	Datum		batch_topics_datum; /* as stored, for the privilege check */
	bool		batch_topics_null;
	TopicFilter *topics;
	Datum		topics_datum;	/* topics as stored, to compare states */
	bool		topics_null;
	Oid			owner;			/* InvalidOid: none (from before 0.2) */
} ConsumerState;

static IdemPlan snapshot_plan = {
	"SELECT pg_catalog.pg_current_snapshot()",
	0, {InvalidOid}
};

/* The snapshot and the oldest retained event, seen by one statement. */
static IdemPlan oldest_plan = {
	"SELECT pg_catalog.pg_current_snapshot(), "
	"(SELECT o.xid FROM idem.outbox o ORDER BY o.xid, o.id LIMIT 1)",
	0, {InvalidOid}
};

/*
 * The topics of the events of transactions that a snapshot did not see:
 * from its xmax on, or in its list of running xids ($2; see
 * notify_unseen_commits, which runs this with a snapshot taken now).
 */
static IdemPlan unseen_topics_plan = {
	"SELECT DISTINCT o.topic FROM idem.outbox o"
	" WHERE o.xid OPERATOR(pg_catalog.>=) $1"
	"    OR o.xid OPERATOR(pg_catalog.=) ANY ($2) ORDER BY 1",
	2, {XID8OID, XID8ARRAYOID}
};

static IdemPlan subscribe_plan = {
	"INSERT INTO idem.consumers AS c (name, topics, snapshot) "
	"VALUES ($1, $2, $3) "
	"ON CONFLICT (name) DO UPDATE SET topics = EXCLUDED.topics",
	3, {TEXTOID, TEXTARRAYOID, PG_SNAPSHOTOID}
};

/*
 * subscribe() since 0.2: a new consumer belongs to the caller ($4); an
 * existing one is changed only by a member of its owner ($5: the caller is
 * exempt, pg_idem's owner or a superuser), and one from before 0.2, which
 * has no owner, becomes the caller's -- unless the caller is exempt: an
 * administrator re-subscribing it must not take it away from its
 * application.  No row comes back when the existing consumer may not be
 * changed; it is then left as it was.
 */
static IdemPlan subscribe_owned_plan = {
	"INSERT INTO idem.consumers AS c (name, topics, snapshot, owner) "
	"VALUES ($1, $2, $3, $4) "
	"ON CONFLICT (name) DO UPDATE SET topics = EXCLUDED.topics, "
	"owner = CASE WHEN $5 THEN c.owner ELSE COALESCE(c.owner, EXCLUDED.owner) END "
	"WHERE $5 OR c.owner IS NULL "
	"OR pg_catalog.pg_has_role(CAST($4 AS pg_catalog.oid), CAST(c.owner AS pg_catalog.oid), 'USAGE') "
	"RETURNING c.name",
	5, {TEXTOID, TEXTARRAYOID, PG_SNAPSHOTOID, REGROLEOID, BOOLOID}
};

/* A consumer's owner, and its row locked (unsubscribe) or not. */
static IdemPlan owner_plan = {
	"SELECT c.owner FROM idem.consumers c WHERE c.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static IdemPlan owner_lock_plan = {
	"SELECT c.owner FROM idem.consumers c WHERE c.name OPERATOR(pg_catalog.=) $1 "
	"FOR UPDATE",
	1, {TEXTOID}
};

static IdemPlan unsubscribe_plan = {
	"DELETE FROM idem.consumers c WHERE c.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

#define CONSUMER_COLUMNS \
	"c.snapshot, c.window_snapshot, c.window_done_id, c.window_last_id, " \
	"c.batch_id, c.batch_last_id, c.batch_topics, c.topics"

static IdemPlan read_plan = {
	"SELECT " CONSUMER_COLUMNS " FROM idem.consumers c "
	"WHERE c.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static IdemPlan lock_plan = {
	"SELECT " CONSUMER_COLUMNS " FROM idem.consumers c "
	"WHERE c.name OPERATOR(pg_catalog.=) $1 FOR NO KEY UPDATE",
	1, {TEXTOID}
};

/* The same with the owner (0.2 on) */
static IdemPlan read_owned_plan = {
	"SELECT " CONSUMER_COLUMNS ", c.owner FROM idem.consumers c "
	"WHERE c.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static IdemPlan lock_owned_plan = {
	"SELECT " CONSUMER_COLUMNS ", c.owner FROM idem.consumers c "
	"WHERE c.name OPERATOR(pg_catalog.=) $1 FOR NO KEY UPDATE",
	1, {TEXTOID}
};

static IdemPlan open_plan = {
	"UPDATE idem.consumers c SET snapshot = $2, window_snapshot = $3, "
	"window_done_id = $4, window_last_id = $5, "
	"batch_id = pg_catalog.nextval('idem.outbox_batch_seq'::pg_catalog.regclass), "
	"batch_last_id = $6, batch_topics = c.topics, batch_ends_window = $7, "
	"batch_events = $8, batch_opened_at = pg_catalog.now() "
	"WHERE c.name OPERATOR(pg_catalog.=) $1 RETURNING c.batch_id",
	8, {TEXTOID, PG_SNAPSHOTOID, PG_SNAPSHOTOID, INT8OID, INT8OID, INT8OID,
		BOOLOID, INT4OID}
};

static IdemPlan advance_plan = {
	"UPDATE idem.consumers c SET snapshot = $2, window_snapshot = NULL, "
	"window_done_id = NULL, window_last_id = NULL "
	"WHERE c.name OPERATOR(pg_catalog.=) $1",
	2, {TEXTOID, PG_SNAPSHOTOID}
};

static IdemPlan finish_plan = {
	"UPDATE idem.consumers c SET "
	"snapshot = CASE WHEN c.batch_ends_window THEN c.window_snapshot ELSE c.snapshot END, "
	"window_snapshot = CASE WHEN c.batch_ends_window THEN NULL ELSE c.window_snapshot END, "
	"window_done_id = CASE WHEN c.batch_ends_window THEN NULL ELSE c.batch_last_id END, "
	"window_last_id = CASE WHEN c.batch_ends_window THEN NULL ELSE c.window_last_id END, "
	"batch_id = NULL, batch_last_id = NULL, batch_topics = NULL, "
	"batch_ends_window = NULL, batch_opened_at = NULL, finished_at = pg_catalog.now() "
	"WHERE c.name OPERATOR(pg_catalog.=) $1 AND c.batch_id OPERATOR(pg_catalog.=) $2 "
	"RETURNING c.batch_events",
	2, {TEXTOID, INT8OID}
};

static IdemPlan open_batch_plan = {
	"SELECT c.batch_id FROM idem.consumers c WHERE c.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static IdemPlan trim_consumers_plan = {
	"SELECT c.snapshot FROM idem.consumers c",
	0, {InvalidOid}
};


/*
 * The heavyweight lock that keeps trimming away from consumers not yet
 * committed (see idem_outbox_trim): an object lock on idem.consumers, apart
 * from its table locks.  Creators do not conflict with each other; the
 * trimmer conflicts with every creator.  (Its modes are in outbox.h:
 * emit() takes it too, under idem.outbox_wal = 'only'.)
 */

static Oid	consumers_relid(void);
static void check_name_length(int len, const char *what);
static Datum topics_arg(FunctionCallInfo fcinfo, int argno, bool *isnull);
static OutboxSnapshot *snapshot_from_datum(Datum d);
static int	fxid_cmp(const void *a, const void *b);
static bool snapshot_sees(const OutboxSnapshot *s, FullTransactionId xid);
static OutboxSnapshot *snapshot_without_self(OutboxSnapshot *s);
static OutboxSnapshot *snapshot_take(void);
static void execute_latest(IdemPlan *plan, Datum *values);
static void notify_unseen_commits(void);
static OutboxSnapshot *snapshot_empty_at(FullTransactionId xid);
static FullTransactionId fxid_before(FullTransactionId xid);
static void scan_begin(OutboxScan *s);
static OutboxLeaf *scan_leaf(OutboxScan *s, int i);
static void scan_by_xid(OutboxScan *s, OutboxLeaf *leaf, FullTransactionId lo,
						FullTransactionId hi);
static void scan_by_id(OutboxScan *s, OutboxLeaf *leaf, int64 after, int64 last);
static bool scan_next(OutboxScan *s, FullTransactionId *xid, int64 *id);
static bool scan_fetch(OutboxScan *s);
static void scan_refresh_snapshot(OutboxScan *s);
static void scan_end_walk(OutboxScan *s);
static void scan_end(OutboxScan *s);
static TopicFilter *topic_filter(Datum topics, bool isnull);
static bool topic_matches(const TopicFilter *tf, Datum topic);
static bool window_bounds(OutboxScan *s, const OutboxSnapshot *prev,
						  const OutboxSnapshot *window, int64 *first,
						  int64 *last);
static int64 fetch_window(OutboxScan *s, const Window *w, int64 upto,
						  const TopicFilter *tf, int64 limit,
						  OutboxRow **rows, int64 *last_kept);
static bool next_stored_id(OutboxScan *s, int64 after, int64 upto, int64 *next);
static bool read_consumer(text *consumer, ConsumerState *st, bool lock,
						  Oid userid);
static Oid	consumer_owner(text *consumer, bool lock, bool *exists);
static bool same_start(const ConsumerState *a, const ConsumerState *b);
static bool snapshot_is_foreign(const OutboxSnapshot *s);
static void report_consumer_unknown(text *consumer);
static Tuplestorestate *begin_materialize(FunctionCallInfo fcinfo,
										  TupleDesc *tupdesc);
static void put_batch(Tuplestorestate *ts, TupleDesc tupdesc,
					  int64 batch_id, OutboxRow *rows, int64 n);
static void advance(text *consumer, Datum snapshot);
static bool try_open_batch(text *consumer, ConsumerState *st, OutboxScan *scan,
						   int32 max_events, Tuplestorestate *ts,
						   TupleDesc tupdesc);
static void next_batch(text *consumer, int32 max_events, Tuplestorestate *ts,
					   TupleDesc tupdesc, Oid userid);
static int64 finish_batch(text *consumer, int64 batch_id, Oid userid);
static void trim_add(Datum **ids, int *n, int *max, int64 id);
static void leaf_close(OutboxScan *s, int i);
static bool leaf_edge(OutboxScan *s, OutboxLeaf *leaf, bool by_id, bool last,
					  FullTransactionId *xid, int64 *id);
static bool leaf_has_xid(OutboxScan *s, OutboxLeaf *leaf, FullTransactionId xid);
static bool leaf_finished(OutboxScan *s, OutboxLeaf *leaf, OutboxSnapshot **snaps,
						  int nsnaps);
static int64 leaf_count(OutboxLeaf *leaf, Snapshot snap, TimestampTz cutoff);
static bool leaf_referenced(OutboxScan *s, int i);
static int64 trim_truncate_leaf(OutboxScan *s, int i, OutboxSnapshot **snaps,
								int nsnaps, TimestampTz cutoff);
static int64 trim_delete_laps(OutboxScan *s, int i, OutboxSnapshot **snaps,
							  int nsnaps, TimestampTz cutoff, int *budget);

/*
 * Read a consumer or topic name argument: NULL raises 22004, an empty or
 * over-long name 22023 (the contract's limits, counted in bytes).
 */
text *
idem_outbox_name_arg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	text	   *t;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", what)));
	t = PG_GETARG_TEXT_PP(argno);
	check_name_length(VARSIZE_ANY_EXHDR(t), what);
	return t;
}

/* The OID of idem.consumers, found by schema-qualified name. */
static Oid
consumers_relid(void)
{
	Oid			relid = get_relname_relid("consumers", get_namespace_oid("idem", false));

	if (!OidIsValid(relid))
		elog(ERROR, "pg_idem: idem.consumers is missing");
	return relid;
}

/* Names are 1..IDEM_MAX_NAME_BYTES bytes long. */
static void
check_name_length(int len, const char *what)
{
	if (len < 1 || len > IDEM_MAX_NAME_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between 1 and %d bytes long",
						what, IDEM_MAX_NAME_BYTES),
				 errdetail("The %s given is %d bytes long.", what, len)));
}

/*
 * Read subscribe()'s topic filter.  NULL means every topic; otherwise a
 * non-empty one-dimensional array of valid topic names.  An empty array is
 * refused rather than read as "no topic": a consumer of nothing is a
 * mistake, and NULL already says "everything".
 */
static Datum
topics_arg(FunctionCallInfo fcinfo, int argno, bool *isnull)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	*isnull = PG_ARGISNULL(argno);
	if (*isnull)
		return (Datum) 0;
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("topics must be a one-dimensional array"),
				 errdetail("The array given has %d dimensions.", ARR_NDIM(arr))));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("topics must not be an empty array"),
				 errdetail("A consumer of no topic would never receive an event."),
				 errhint("Pass NULL to receive every topic.")));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("topics must not contain null"),
					 errdetail("Element %d of the array is null.", i + 1)));
		check_name_length(VARSIZE_ANY_EXHDR(DatumGetPointer(elems[i])), "topic");
	}
	return PointerGetDatum(arr);
}

/* Detoast a pg_snapshot datum and check that it has the expected layout. */
static OutboxSnapshot *
snapshot_from_datum(Datum d)
{
	OutboxSnapshot *s = (OutboxSnapshot *) PG_DETOAST_DATUM(d);

	if (VARSIZE(s) != OUTBOX_SNAPSHOT_SIZE(s->nxip))
		elog(ERROR, "pg_idem: unexpected pg_snapshot layout");
	return s;
}

static int
fxid_cmp(const void *a, const void *b)
{
	FullTransactionId x = *(const FullTransactionId *) a;
	FullTransactionId y = *(const FullTransactionId *) b;

	if (FullTransactionIdPrecedes(x, y))
		return -1;
	if (FullTransactionIdPrecedes(y, x))
		return 1;
	return 0;
}

/* pg_visible_in_snapshot(): was xid finished when the snapshot was taken? */
static bool
snapshot_sees(const OutboxSnapshot *s, FullTransactionId xid)
{
	if (FullTransactionIdPrecedes(xid, s->xmin))
		return true;
	if (!FullTransactionIdPrecedes(xid, s->xmax))
		return false;
	return bsearch(&xid, s->xip, s->nxip, sizeof(FullTransactionId),
				   fxid_cmp) == NULL;
}

/*
 * PostgreSQL leaves the backend's own xid out of its snapshots' running
 * list, so pg_current_snapshot() taken by a transaction that has an xid
 * "sees" that transaction as finished.  Stored as a consumer position, that
 * would hide every event this still-open transaction emits (a relay that
 * emits follow-up events in its own transaction would lose them).  Put the
 * xid back among the running ones: its events then arrive in a later window,
 * once it has committed, like anybody else's.
 */
static OutboxSnapshot *
snapshot_without_self(OutboxSnapshot *s)
{
	FullTransactionId me = GetTopFullTransactionIdIfAny();
	OutboxSnapshot *r;
	uint32		i,
				j;

	if (!FullTransactionIdIsValid(me) || !snapshot_sees(s, me))
		return s;

	r = palloc(OUTBOX_SNAPSHOT_SIZE(s->nxip + 1));
	SET_VARSIZE(r, OUTBOX_SNAPSHOT_SIZE(s->nxip + 1));
	r->nxip = s->nxip + 1;
	r->xmin = FullTransactionIdPrecedes(me, s->xmin) ? me : s->xmin;
	r->xmax = s->xmax;
	for (i = 0, j = 0; i < s->nxip && FullTransactionIdPrecedes(s->xip[i], me); i++)
		r->xip[j++] = s->xip[i];
	r->xip[j++] = me;
	for (; i < s->nxip; i++)
		r->xip[j++] = s->xip[i];
	return r;
}

/*
 * A new snapshot, as of now.  It is taken by its own SPI statement, so under
 * READ COMMITTED it is newer than any lock wait that came before it.
 */
static OutboxSnapshot *
snapshot_take(void)
{
	bool		isnull;
	Datum		d;

	idem_plan_execute(&snapshot_plan, NULL, NULL, false, 1);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return snapshot_without_self(snapshot_from_datum(d));
}

/*
 * Run a read-only plan under a snapshot taken now, whatever the isolation
 * level (pg_current_snapshot() reports the active snapshot, which this is).
 * Under REPEATABLE READ the transaction's snapshot may be older than a lock
 * just acquired; what must follow the lock is read with this.
 */
static void
execute_latest(IdemPlan *plan, Datum *values)
{
	Snapshot	latest = RegisterSnapshot(GetLatestSnapshot());
	int			rc;

	rc = SPI_execute_snapshot(idem_plan_get(plan), values, NULL, latest,
							  InvalidSnapshot, true, false, 0);
	UnregisterSnapshot(latest);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pg_idem: SPI_execute_snapshot failed for \"%s\": %s",
			 plan->sql, SPI_result_code_string(rc));
}

/* A snapshot in which no transaction from xid on is visible. */
static OutboxSnapshot *
snapshot_empty_at(FullTransactionId xid)
{
	OutboxSnapshot *r = palloc(OUTBOX_SNAPSHOT_SIZE(0));

	SET_VARSIZE(r, OUTBOX_SNAPSHOT_SIZE(0));
	r->nxip = 0;
	r->xmin = xid;
	r->xmax = xid;
	return r;
}

/* xid - 1 (xids in snapshots are never 0) */
static FullTransactionId
fxid_before(FullTransactionId xid)
{
	return FullTransactionIdFromU64(U64FromFullTransactionId(xid) - 1);
}

/*
 * Open idem.outbox for walks of its leaves, under a snapshot at least as
 * new as any window snapshot taken before (a fresh one under READ
 * COMMITTED; under REPEATABLE READ the transaction's, which is then also
 * the window's): every event of a window is visible to the walk.
 *
 * The leaves are listed from the partition descriptor, with the leaf that
 * holds each value 0..N-1 of the partition key (a default partition takes
 * the values no list names), so that the id walk can go run by run.  A
 * partition that is itself partitioned is not supported.
 */
static void
scan_begin(OutboxScan *s)
{
	Oid			nsp = get_namespace_oid("idem", false);
	Oid			relid = get_relname_relid("outbox", nsp);
	PartitionDesc pd;
	PartitionBoundInfo bi;

	if (!OidIsValid(relid))
		elog(ERROR, "pg_idem: idem.outbox is missing");
	s->parent = table_open(relid, AccessShareLock);
	s->snapshot = RegisterSnapshot(GetTransactionSnapshot());
	s->scan = NULL;
	s->cur = NULL;
	if (s->parent->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
	{
		/* 0.1's plain table, until ALTER EXTENSION UPDATE: one leaf */
		s->nleaves = 1;
		s->leaves = palloc0(sizeof(OutboxLeaf));
		s->leaves[0].relid = relid;
		for (int v = 0; v < IDEM_OUTBOX_LEAVES; v++)
			s->leaf_of_value[v] = 0;
		return;
	}
	pd = RelationGetPartitionDesc(s->parent, true);
	bi = pd->boundinfo;
	s->nleaves = pd->nparts;
	s->leaves = palloc0(sizeof(OutboxLeaf) * Max(pd->nparts, 1));
	for (int i = 0; i < pd->nparts; i++)
	{
		if (!pd->is_leaf[i])
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("partition \"%s\" of idem.outbox is itself partitioned",
							get_rel_name(pd->oids[i])),
					 errhint("Keep the partitions pg_idem created; see docs/outbox-storage.md.")));
		s->leaves[i].relid = pd->oids[i];
	}
	for (int v = 0; v < IDEM_OUTBOX_LEAVES; v++)
		s->leaf_of_value[v] = (bi != NULL && partition_bound_has_default(bi)) ?
			bi->default_index : -1;
	for (int i = 0; bi != NULL && i < bi->ndatums; i++)
	{
		int64		v = DatumGetInt64(bi->datums[i][0]);

		if (v >= 0 && v < IDEM_OUTBOX_LEAVES)
			s->leaf_of_value[v] = bi->indexes[i];
	}
}

/* Leaf i, opened (AccessShareLock) with its indexes on first use. */
static OutboxLeaf *
scan_leaf(OutboxScan *s, int i)
{
	OutboxLeaf *l = &s->leaves[i];
	TupleDesc	desc;
	List	   *indexes;
	ListCell   *lc;

	if (l->heap != NULL)
		return l;
	l->heap = table_open(l->relid, AccessShareLock);
	indexes = RelationGetIndexList(l->heap);
	foreach(lc, indexes)
	{
		Relation	ix = index_open(lfirst_oid(lc), AccessShareLock);
		Form_pg_index f = ix->rd_index;
		int			idcol = 0,
					xidcol = 0;

		desc = RelationGetDescr(l->heap);
		for (int a = 0; a < desc->natts; a++)
		{
			if (strcmp(NameStr(TupleDescAttr(desc, a)->attname), "id") == 0)
				idcol = a + 1;
			else if (strcmp(NameStr(TupleDescAttr(desc, a)->attname), "xid") == 0)
				xidcol = a + 1;
		}
		if (l->pkey == NULL && f->indisvalid && ix->rd_rel->relam == BTREE_AM_OID &&
			f->indnatts == 2 && f->indnkeyatts == 1 && RelationGetIndexPredicate(ix) == NIL &&
			f->indkey.values[0] == idcol && f->indkey.values[1] == xidcol)
			l->pkey = ix;
		else if (l->byxid == NULL && f->indisvalid && ix->rd_rel->relam == BTREE_AM_OID &&
				 f->indnatts == 2 && f->indnkeyatts == 2 && RelationGetIndexPredicate(ix) == NIL &&
				 f->indkey.values[0] == xidcol && f->indkey.values[1] == idcol)
			l->byxid = ix;
		else
			index_close(ix, AccessShareLock);
	}
	list_free(indexes);
	if (l->pkey == NULL || l->byxid == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("partition \"%s\" of idem.outbox lacks the indexes pg_idem created",
						RelationGetRelationName(l->heap)),
				 errdetail("Each partition needs a btree index on (id) INCLUDE (xid) and one on (xid, id).")));

	memset(&l->att, 0, sizeof(l->att));
	desc = RelationGetDescr(l->heap);
	for (int i2 = 0; i2 < desc->natts; i2++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i2);
		const char *name = NameStr(a->attname);

		if (a->attisdropped)
			continue;
		if (strcmp(name, "id") == 0)
			l->att.id = a->attnum;
		else if (strcmp(name, "topic") == 0)
			l->att.topic = a->attnum;
		else if (strcmp(name, "key") == 0)
			l->att.key = a->attnum;
		else if (strcmp(name, "payload") == 0)
			l->att.payload = a->attnum;
		else if (strcmp(name, "headers") == 0)
			l->att.headers = a->attnum;
		else if (strcmp(name, "created_at") == 0)
			l->att.created_at = a->attnum;
	}
	if (!l->att.id || !l->att.topic || !l->att.key || !l->att.payload ||
		!l->att.headers || !l->att.created_at)
		elog(ERROR, "pg_idem: idem.outbox does not have the expected columns");
	l->slot = table_slot_create(l->heap, NULL);
	return l;
}

/* Walk a leaf's (xid, id) index over lo <= xid <= hi, in (xid, id) order. */
static void
scan_by_xid(OutboxScan *s, OutboxLeaf *leaf, FullTransactionId lo, FullTransactionId hi)
{
	scan_end_walk(s);
	ScanKeyInit(&s->keys[0], 1, BTGreaterEqualStrategyNumber, F_XID8GE,
				FullTransactionIdGetDatum(lo));
	ScanKeyInit(&s->keys[1], 1, BTLessEqualStrategyNumber, F_XID8LE,
				FullTransactionIdGetDatum(hi));
	s->cur = leaf;
	s->scan = index_beginscan(leaf->heap, leaf->byxid, s->snapshot, 2, 0);
	s->scan->xs_want_itup = true;
	index_rescan(s->scan, s->keys, 2, NULL, 0);
}

/* Walk a leaf's primary key over after < id <= last, in id order. */
static void
scan_by_id(OutboxScan *s, OutboxLeaf *leaf, int64 after, int64 last)
{
	scan_end_walk(s);
	ScanKeyInit(&s->keys[0], 1, BTGreaterStrategyNumber, F_INT8GT,
				Int64GetDatum(after));
	ScanKeyInit(&s->keys[1], 1, BTLessEqualStrategyNumber, F_INT8LE,
				Int64GetDatum(last));
	s->cur = leaf;
	s->scan = index_beginscan(leaf->heap, leaf->pkey, s->snapshot, 2, 0);
	s->scan->xs_want_itup = true;
	index_rescan(s->scan, s->keys, 2, NULL, 0);
}

/* The next index entry's xid and id, without visiting the heap. */
static bool
scan_next(OutboxScan *s, FullTransactionId *xid, int64 *id)
{
	IndexTuple	itup;
	TupleDesc	desc;
	bool		isnull;
	bool		by_id = (s->scan->indexRelation == s->cur->pkey);

	if (index_getnext_tid(s->scan, ForwardScanDirection) == NULL)
		return false;
	itup = s->scan->xs_itup;
	desc = s->scan->xs_itupdesc;
	*id = DatumGetInt64(index_getattr(itup, by_id ? 1 : 2, desc, &isnull));
	*xid = DatumGetFullTransactionId(index_getattr(itup, by_id ? 2 : 1, desc, &isnull));
	return true;
}

/*
 * Fetch the current entry's row into its leaf's slot; false when the
 * snapshot does not see it (its transaction aborted, or the row was
 * deleted).
 */
static bool
scan_fetch(OutboxScan *s)
{
	return index_fetch_heap(s->scan, s->cur->slot);
}

/*
 * Give the walks a snapshot taken after the window snapshot just taken.
 *
 * A window is the set of events of transactions its snapshot sees as
 * finished; the heap fetches of a walk must see each of them, so the walk's
 * snapshot may never be older than the window's.  scan_begin() took one
 * before the consumer's row was locked and the window found exhausted; a
 * transaction committing between that and the new window snapshot would be
 * in the window, invisible to the walk, and closed over for good.  Under
 * READ COMMITTED GetTransactionSnapshot() is a new snapshot (newer than the
 * window's SPI statement); under REPEATABLE READ it is the transaction's,
 * which the window snapshot is as well.
 */
static void
scan_refresh_snapshot(OutboxScan *s)
{
	scan_end_walk(s);
	UnregisterSnapshot(s->snapshot);
	s->snapshot = RegisterSnapshot(GetTransactionSnapshot());
}

static void
scan_end_walk(OutboxScan *s)
{
	if (s->scan != NULL)
		index_endscan(s->scan);
	s->scan = NULL;
	s->cur = NULL;
}

/*
 * Close the walks, and release the leaves' locks now rather than at commit.
 *
 * Why that is safe: nothing read from a leaf is used after this (batches
 * are copied and detoasted into the result by put_batch() first), and the
 * parent keeps its AccessShareLock until commit, so no DDL can change the
 * table under the transaction.  What the early release allows is trimming's
 * TRUNCATE of a leaf between two calls of a relay's transaction; it only
 * truncates a leaf whose every event is visible in every consumer's
 * finished snapshot as committed, and an event this relay may still be
 * owed is not (its finished snapshot only moves forward, and an
 * uncommitted move of it only makes it see more).  So a later call of the
 * same transaction, even under an older REPEATABLE READ snapshot, finds
 * every event it can need.  Without the early release a relay that keeps
 * its transaction open while it works (next_batch, the work, finish_batch,
 * commit) would hold every leaf's lock nearly all the time, and the
 * trimmer's conditional AccessExclusiveLock would never be granted.
 */
static void
scan_end(OutboxScan *s)
{
	scan_end_walk(s);
	UnregisterSnapshot(s->snapshot);
	for (int i = 0; i < s->nleaves; i++)
	{
		OutboxLeaf *l = &s->leaves[i];

		if (l->heap == NULL)
			continue;
		ExecDropSingleTupleTableSlot(l->slot);
		index_close(l->byxid, AccessShareLock);
		index_close(l->pkey, AccessShareLock);
		table_close(l->heap, AccessShareLock);
		l->heap = NULL;
	}
	table_close(s->parent, NoLock);
}

/* Turn a text[] topic list (NULL: every topic) into a filter. */
static TopicFilter *
topic_filter(Datum topics, bool isnull)
{
	TopicFilter *tf;
	Datum	   *elems;
	bool	   *nulls;
	int			n;

	if (isnull)
		return NULL;
	deconstruct_array(DatumGetArrayTypeP(topics), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	tf = palloc(sizeof(TopicFilter));
	tf->n = 0;
	tf->names = palloc(sizeof(text *) * Max(n, 1));
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			tf->names[tf->n++] = DatumGetTextPP(elems[i]);
	return tf;
}

/*
 * Is the topic in the filter?  Byte equality, which is what text equality
 * means under the database's (always deterministic) default collation.
 */
static bool
topic_matches(const TopicFilter *tf, Datum topic)
{
	text	   *t = DatumGetTextPP(topic);
	int			len = VARSIZE_ANY_EXHDR(t);

	if (tf == NULL)
		return true;
	for (int i = 0; i < tf->n; i++)
		if (VARSIZE_ANY_EXHDR(tf->names[i]) == len &&
			memcmp(VARDATA_ANY(tf->names[i]), VARDATA_ANY(t), len) == 0)
			return true;
	return false;
}

/*
 * Find the smallest and largest event id of the window (prev, window), or
 * return false when the window holds no event at all.
 *
 * The window's entries are those of the transactions running at prev and
 * finished at window (probed one xid at a time), and those of the range
 * [prev.xmax, window.xmax) that window sees.  This reads index entries
 * only, once per window; it may count entries of aborted transactions,
 * which merely widen the bounds.
 */
static bool
window_bounds(OutboxScan *s, const OutboxSnapshot *prev,
			  const OutboxSnapshot *window, int64 *first, int64 *last)
{
	bool		found = false;
	FullTransactionId xid;
	int64		id;

	/* every leaf: a late commit's events may be in any of them */
	for (int l = 0; l < s->nleaves; l++)
	{
		OutboxLeaf *leaf = scan_leaf(s, l);

		for (uint32 i = 0; i < prev->nxip; i++)
		{
			if (!snapshot_sees(window, prev->xip[i]))
				continue;
			scan_by_xid(s, leaf, prev->xip[i], prev->xip[i]);
			while (scan_next(s, &xid, &id))
			{
				CHECK_FOR_INTERRUPTS();
				if (!found || id < *first)
					*first = id;
				if (!found || id > *last)
					*last = id;
				found = true;
			}
		}

		if (FullTransactionIdPrecedes(prev->xmax, window->xmax))
		{
			scan_by_xid(s, leaf, prev->xmax, fxid_before(window->xmax));
			while (scan_next(s, &xid, &id))
			{
				CHECK_FOR_INTERRUPTS();
				if (!snapshot_sees(window, xid))
					continue;
				if (!found || id < *first)
					*first = id;
				if (!found || id > *last)
					*last = id;
				found = true;
			}
		}
	}
	scan_end_walk(s);
	return found;
}

/*
 * Fetch, in id order, up to limit events of the window w after w->done and
 * up to upto, among the filter's topics: a walk of the primary keys that
 * keeps the entries whose xid the window sees and its previous snapshot did
 * not.  Returns the count and the id of the last row kept; the rows are
 * copies in SPI memory.
 *
 * The walk goes run by run: ids [r * S, (r + 1) * S) are all in the leaf
 * of key value r % N (the partition key is (id / S) % N), so walking each
 * run's range in its leaf, runs in increasing order, visits the ids in
 * increasing order, each exactly once, and opens only the leaves the range
 * reaches.
 */
static int64
fetch_window(OutboxScan *s, const Window *w, int64 upto,
			 const TopicFilter *tf, int64 limit,
			 OutboxRow **rows, int64 *last_kept)
{
	FullTransactionId xid;
	int64		id;
	int64		n = 0,
				cap = 0;

	/*
	 * No id below -(S - 1) can be stored (its partition key is negative, no
	 * leaf takes it); ids from -(S - 1) to S - 1 all have key 0, so "run 0"
	 * covers them, as C's truncating division computes it.  Clamping at -1
	 * instead would skip the events an INSERT ... OVERRIDING SYSTEM VALUE
	 * (or a sequence with a negative MINVALUE) stored with ids -1 .. -(S-1).
	 */
	int64		after = Max(w->done, -IDEM_OUTBOX_SEGMENT_IDS);

	*rows = NULL;
	while (n < limit && after < upto)
	{
		int64		run = (after + 1) / IDEM_OUTBOX_SEGMENT_IDS;

		/* run * S + (S - 1) cannot overflow, (run + 1) * S can */
		int64		run_last = Min(upto, run * IDEM_OUTBOX_SEGMENT_IDS +
								   (IDEM_OUTBOX_SEGMENT_IDS - 1));
		int			l = s->leaf_of_value[run % IDEM_OUTBOX_LEAVES];
		bool		any = false;

		CHECK_FOR_INTERRUPTS();
		if (l >= 0)
		{
			OutboxLeaf *leaf = scan_leaf(s, l);

			scan_by_id(s, leaf, after, run_last);
			while (n < limit && scan_next(s, &xid, &id))
			{
				bool		isnull;

				any = true;
				CHECK_FOR_INTERRUPTS();
				if (!snapshot_sees(w->window, xid) || snapshot_sees(w->prev, xid))
					continue;
				if (!scan_fetch(s))
					continue;
				if (tf != NULL &&
					!topic_matches(tf, slot_getattr(leaf->slot, leaf->att.topic, &isnull)))
					continue;

				if (n >= cap)
				{
					cap = Max(cap * 2, 64);
					*rows = *rows ? repalloc_huge(*rows, cap * sizeof(OutboxRow))
						: palloc_extended(cap * sizeof(OutboxRow), MCXT_ALLOC_HUGE);
				}
				(*rows)[n].tup = ExecCopySlotHeapTuple(leaf->slot);
				(*rows)[n].leaf = leaf;
				(*rows)[n].id = id;
				*last_kept = id;
				n++;
			}
			scan_end_walk(s);
		}
		after = run_last;

		/*
		 * An empty run: ids need not be dense (setval(), a sequence with a
		 * large INCREMENT, OVERRIDING SYSTEM VALUE), and a window spanning
		 * a gap of billions of ids must not cost one walk per empty run.
		 * Jump to the run of the next id any leaf holds.
		 */
		if (!any && after < upto)
		{
			int64		next = 0;

			if (!next_stored_id(s, after, upto, &next))
				break;
			after = next - 1;
		}
	}
	return n;
}

/*
 * The smallest id in (after, upto] that any leaf's primary key holds (an
 * entry of any transaction, visible or not); false when there is none.
 */
static bool
next_stored_id(OutboxScan *s, int64 after, int64 upto, int64 *next)
{
	bool		found = false;
	FullTransactionId xid;
	int64		id;

	for (int l = 0; l < s->nleaves; l++)
	{
		OutboxLeaf *leaf = scan_leaf(s, l);

		scan_by_id(s, leaf, after, upto);
		if (scan_next(s, &xid, &id) && (!found || id < *next))
		{
			*next = id;
			found = true;
		}
		scan_end_walk(s);
	}
	return found;
}

/*
 * Read the consumer's state, locking its row when asked (only that row:
 * consumers never wait for each other).  Returns false when there is no
 * such consumer.  Concurrent next_batch() calls of one consumer queue on
 * the lock; under READ COMMITTED the waiter then reads the winner's
 * committed state.
 *
 * Every read checks that userid may read the consumer (privileges.c): it
 * owns it, and may read every topic of its filter and of its open batch's.
 * The locked re-read checks again, against the row it will change.
 */
static bool
read_consumer(text *consumer, ConsumerState *st, bool lock, Oid userid)
{
	Datum		values[1];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	bool		owned = idem_privileges_enabled();

	values[0] = PointerGetDatum(consumer);
	if (owned)
		idem_plan_execute(lock ? &lock_owned_plan : &read_owned_plan, values, NULL, false, 1);
	else
		idem_plan_execute(lock ? &lock_plan : &read_plan, values, NULL, false, 1);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	st->prev_datum = SPI_getbinval(tup, desc, 1, &isnull);
	st->prev = snapshot_from_datum(st->prev_datum);
	if (snapshot_is_foreign(st->prev))
	{
		char	   *name = text_to_cstring(consumer);

		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("position of outbox consumer \"%s\" is ahead of this server's transactions", name),
				 errdetail("Its snapshot ends at transaction " UINT64_FORMAT ", but this server has only reached " UINT64_FORMAT "; it was probably restored from a dump of another cluster.",
						   U64FromFullTransactionId(st->prev->xmax),
						   U64FromFullTransactionId(ReadNextFullTransactionId())),
				 errhint("Re-create the consumer with idem.unsubscribe() and idem.subscribe(); see \"Backups\" in the outbox documentation.")));
	}
	d = SPI_getbinval(tup, desc, 2, &isnull);
	st->window_datum = isnull ? (Datum) 0 : d;
	st->window = isnull ? NULL : snapshot_from_datum(d);
	d = SPI_getbinval(tup, desc, 3, &isnull);
	st->done_id = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, 4, &isnull);
	st->last_id = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, 5, &isnull);
	st->has_batch = !isnull;
	st->batch_id = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, 6, &isnull);
	st->batch_last_id = isnull ? 0 : DatumGetInt64(d);
	st->batch_topics_datum = SPI_getbinval(tup, desc, 7, &st->batch_topics_null);
	st->batch_topics = topic_filter(st->batch_topics_datum, st->batch_topics_null);
	st->topics_datum = SPI_getbinval(tup, desc, 8, &st->topics_null);
	st->topics = topic_filter(st->topics_datum, st->topics_null);
	st->owner = InvalidOid;
	if (owned)
	{
		d = SPI_getbinval(tup, desc, 9, &isnull);
		st->owner = isnull ? InvalidOid : DatumGetObjectId(d);
		idem_check_consumer(userid, consumer, st->owner, "idem.next_batch()");
		idem_check_topic_filter(userid, consumer, st->topics_datum, st->topics_null,
								"idem.next_batch()");
		if (st->has_batch)
			idem_check_topic_filter(userid, consumer, st->batch_topics_datum,
									st->batch_topics_null, "idem.next_batch()");
	}
	return true;
}

/*
 * The owner of a consumer (InvalidOid when it has none), its row locked
 * when asked; *exists says whether there is such a consumer.  Only with
 * privileges enabled (the column exists).
 */
static Oid
consumer_owner(text *consumer, bool lock, bool *exists)
{
	Datum		values[1];
	bool		isnull;
	Datum		d;

	values[0] = PointerGetDatum(consumer);
	idem_plan_execute(lock ? &owner_lock_plan : &owner_plan, values, NULL, false, 1);
	*exists = SPI_processed > 0;
	if (!*exists)
		return InvalidOid;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? InvalidOid : DatumGetObjectId(d);
}

/*
 * Do two reads of a consumer with no window and no batch open show the same
 * position and topics?  Then a window found after the first read is the one
 * the second would find.
 */
static bool
same_start(const ConsumerState *a, const ConsumerState *b)
{
	if (a->has_batch || b->has_batch || a->window != NULL || b->window != NULL)
		return false;
	if (VARSIZE(a->prev) != VARSIZE(b->prev) ||
		memcmp(a->prev, b->prev, VARSIZE(a->prev)) != 0)
		return false;
	if (a->topics_null != b->topics_null)
		return false;
	if (!a->topics_null)
	{
		struct varlena *x = PG_DETOAST_DATUM(a->topics_datum);
		struct varlena *y = PG_DETOAST_DATUM(b->topics_datum);

		if (VARSIZE(x) != VARSIZE(y) || memcmp(x, y, VARSIZE(x)) != 0)
			return false;
	}
	return true;
}

/*
 * Was this snapshot taken by another cluster?  A consumer's position can
 * never be ahead of this server's transaction counter, unless it was
 * restored from a dump of another cluster (pg_upgrade and physical replicas
 * keep the counter, a dump does not).  Read in this cluster's xid space,
 * such a position would call every new event finished: it would never be
 * delivered, and trimming would delete it.
 */
static bool
snapshot_is_foreign(const OutboxSnapshot *s)
{
	return FullTransactionIdFollows(s->xmax, ReadNextFullTransactionId());
}

/* ID020 for a consumer that is not subscribed. */
static void
report_consumer_unknown(text *consumer)
{
	char	   *name = text_to_cstring(consumer);

	ereport(ERROR,
			(errcode(ERRCODE_IDEM_CONSUMER_UNKNOWN),
			 errmsg("outbox consumer \"%s\" does not exist", name),
			 errdetail("No consumer named \"%s\" is subscribed.", name),
			 errhint("Call idem.subscribe() first; consumer names are case-sensitive.")));
}

/*
 * Set up a materialized set-returning call (done by hand rather than with
 * InitMaterializedSRF(), which only exists from PostgreSQL 15 on).
 */
static Tuplestorestate *
begin_materialize(FunctionCallInfo fcinfo, TupleDesc *tupdesc)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext oldcxt;
	Tuplestorestate *ts;
	TupleDesc	desc;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));

	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pg_idem: return type must be a row type");
	desc = CreateTupleDescCopy(desc);
	ts = tuplestore_begin_heap(rsinfo->allowedModes & SFRM_Materialize_Random,
							   false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = ts;
	rsinfo->setDesc = desc;
	MemoryContextSwitchTo(oldcxt);

	*tupdesc = desc;
	return ts;
}

/*
 * Put a batch's rows (already in id order) into the result.  Out-of-line
 * values are fetched now, so the result does not depend on the rows it came
 * from.
 */
static void
put_batch(Tuplestorestate *ts, TupleDesc tupdesc,
		  int64 batch_id, OutboxRow *rows, int64 n)
{
	for (int64 i = 0; i < n; i++)
	{
		OutboxLeaf *leaf = rows[i].leaf;
		TupleDesc	rowdesc = RelationGetDescr(leaf->heap);
		AttrNumber	cols[6];
		Datum		values[7];
		bool		nulls[7];

		cols[0] = leaf->att.id;
		cols[1] = leaf->att.topic;
		cols[2] = leaf->att.key;
		cols[3] = leaf->att.payload;
		cols[4] = leaf->att.headers;
		cols[5] = leaf->att.created_at;
		values[0] = Int64GetDatum(batch_id);
		nulls[0] = false;
		for (int c = 0; c < 6; c++)
		{
			Datum		v = heap_getattr(rows[i].tup, cols[c], rowdesc, &nulls[c + 1]);

			if (!nulls[c + 1] && TupleDescAttr(rowdesc, cols[c] - 1)->attlen == -1 &&
				VARATT_IS_EXTERNAL(DatumGetPointer(v)))
				v = PointerGetDatum(PG_DETOAST_DATUM_PACKED(v));
			values[c + 1] = v;
		}
		tuplestore_putvalues(ts, tupdesc, values, nulls);
	}
}

/*
 * idem.subscribe(consumer, topics, from_start): create a consumer whose
 * finished snapshot is now (it receives the events of every transaction not
 * visible at this moment, its own included), or, with from_start, a
 * snapshot in which no retained event is visible yet.
 *
 * Subscribing an existing consumer is not an error, so that a relay may
 * subscribe every time it starts: it replaces the topic filter (from the
 * next batch on; an open batch keeps the filter it was opened with) and
 * keeps the position; from_start only matters when the consumer is created.
 */
PG_FUNCTION_INFO_V1(idem_subscribe);
Datum
idem_subscribe(PG_FUNCTION_ARGS)
{
	text	   *consumer = idem_outbox_name_arg(fcinfo, 0, "consumer name");
	bool		topics_null;
	Datum		topics = topics_arg(fcinfo, 1, &topics_null);
	bool		from_start;
	OutboxSnapshot *start;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Oid			userid = GetUserId();
	bool		owned = idem_privileges_enabled();
	IdemUserSwitch sw;
	Oid			relid;

	idem_check_granted("idem.subscribe()");
	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("from_start must not be null")));
	from_start = PG_GETARG_BOOL(2);

	/* The caller may read only the topics granted to it (privileges.c). */
	if (owned)
		idem_check_topic_filter(userid, consumer, topics, topics_null,
								"idem.subscribe()");

	/*
	 * Before the start snapshot is taken: trimming waits for (skips while)
	 * this transaction, whose consumer it cannot see until commit.  The
	 * start snapshot is then taken now, after the lock, even under
	 * REPEATABLE READ: the transaction's own snapshot may predate a trim
	 * that deleted events it would count as owed.  A consumer starts at the
	 * moment it subscribed, at every isolation level.
	 */
	relid = consumers_relid();
	(void) idem_outbox_notify_before_read();
	LockDatabaseObject(RelationRelationId, relid, 0, CONSUMER_CREATE_LOCK);

	idem_become_table_owner(relid, &sw);
	SPI_connect();
	if (from_start)
	{
		bool		isnull;
		Datum		oldest;
		OutboxSnapshot *now;
		FullTransactionId at;

		/*
		 * Start below both the oldest retained event and every transaction
		 * still running (whose events this statement cannot see yet).
		 */
		execute_latest(&oldest_plan, NULL);
		now = snapshot_without_self(snapshot_from_datum(SPI_getbinval(SPI_tuptable->vals[0],
																	  SPI_tuptable->tupdesc,
																	  1, &isnull)));
		oldest = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		at = now->xmin;
		if (!isnull && FullTransactionIdPrecedes(DatumGetFullTransactionId(oldest), at))
			at = DatumGetFullTransactionId(oldest);
		start = snapshot_empty_at(at);
	}
	else
	{
		bool		isnull;

		execute_latest(&snapshot_plan, NULL);
		start = snapshot_without_self(snapshot_from_datum(SPI_getbinval(SPI_tuptable->vals[0],
																		SPI_tuptable->tupdesc,
																		1, &isnull)));
	}

	values[0] = PointerGetDatum(consumer);
	values[1] = topics;
	nulls[1] = topics_null ? 'n' : ' ';
	values[2] = PointerGetDatum(start);
	if (!owned)
		idem_plan_execute(&subscribe_plan, values, nulls, false, 0);
	else
	{
		values[3] = ObjectIdGetDatum(userid);
		values[4] = BoolGetDatum(idem_privileges_bypass(userid));
		idem_plan_execute(&subscribe_owned_plan, values, nulls, false, 0);
		if (SPI_processed == 0)
		{
			/* it exists and belongs to a role the caller is not a member of */
			bool		exists;
			Oid			owner = consumer_owner(consumer, false, &exists);

			idem_check_consumer(userid, consumer, owner, "idem.subscribe()");
			elog(ERROR, "pg_idem: consumer \"%s\" could not be subscribed",
				 text_to_cstring(consumer));
		}
	}
	SPI_finish();
	idem_restore_user(&sw);

	PG_RETURN_VOID();
}

/*
 * idem.unsubscribe(consumer): forget the consumer and its position (its
 * unfinished events then no longer hold back trimming).  Returns whether
 * it existed; an unknown name is not an error, so that teardown scripts can
 * run twice.
 */
PG_FUNCTION_INFO_V1(idem_unsubscribe);
Datum
idem_unsubscribe(PG_FUNCTION_ARGS)
{
	text	   *consumer = idem_outbox_name_arg(fcinfo, 0, "consumer name");
	Datum		values[1];
	bool		existed = true;
	Oid			userid = GetUserId();
	IdemUserSwitch sw;

	idem_check_granted("idem.unsubscribe()");
	values[0] = PointerGetDatum(consumer);
	idem_become_table_owner(consumers_relid(), &sw);
	SPI_connect();
	if (idem_privileges_enabled())
	{
		/* only a member of its owner; the row is locked until the DELETE */
		Oid			owner = consumer_owner(consumer, true, &existed);

		if (existed)
			idem_check_consumer(userid, consumer, owner, "idem.unsubscribe()");
	}
	if (existed)
	{
		idem_plan_execute(&unsubscribe_plan, values, NULL, false, 0);
		existed = SPI_processed > 0;
	}
	SPI_finish();
	idem_restore_user(&sw);

	PG_RETURN_BOOL(existed);
}

/* Move a consumer with no window and no batch to a new finished snapshot. */
static void
advance(text *consumer, Datum snapshot)
{
	Datum		values[2];

	values[0] = PointerGetDatum(consumer);
	values[1] = snapshot;
	idem_plan_execute(&advance_plan, values, NULL, false, 0);
}

/*
 * With the consumer's row locked and its window set (st->window, done_id,
 * last_id), fetch up to max_events events after the cursor, plus one to
 * learn whether the window goes on.  If there are any, open a batch of them
 * and return it; otherwise leave everything as it is and return false.
 */
static bool
try_open_batch(text *consumer, ConsumerState *st, OutboxScan *scan,
			   int32 max_events, Tuplestorestate *ts, TupleDesc tupdesc)
{
	Window		w = {st->prev, st->window, st->done_id, st->last_id};
	OutboxRow  *rows;
	int64		n;
	int64		last_kept = 0;
	int64		batch_id;
	bool		ends_window;
	Datum		values[8];
	bool		isnull;

	n = fetch_window(scan, &w, st->last_id, st->topics, (int64) max_events + 1,
					 &rows, &last_kept);
	if (n == 0)
		return false;

	ends_window = n <= max_events;
	if (!ends_window)
	{
		/* the batch ends at the max_events-th row: find its id */
		n = max_events;
		last_kept = rows[n - 1].id;
	}

	values[0] = PointerGetDatum(consumer);
	values[1] = st->prev_datum;
	values[2] = st->window_datum;
	values[3] = Int64GetDatum(st->done_id);
	values[4] = Int64GetDatum(st->last_id);
	values[5] = Int64GetDatum(last_kept);
	values[6] = BoolGetDatum(ends_window);
	values[7] = Int32GetDatum((int32) n);
	idem_plan_execute(&open_plan, values, NULL, false, 0);
	batch_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));
	put_batch(ts, tupdesc, batch_id, rows, n);
	return true;
}

/*
 * idem.next_batch(consumer, max_events): the consumer's open batch again
 * (same id, same rows), or a new batch of at most max_events events in id
 * order, or no rows when nothing new has committed.
 *
 * A new batch continues the open window from its cursor; with no window,
 * one is opened up to a fresh snapshot.  One row past max_events is fetched
 * to learn whether the batch exhausts the window, so that finish_batch()
 * can close the window at once.
 *
 * The common idle call (no batch, no window, and no event at all committed
 * since the consumer's snapshot) is answered from an unlocked read and
 * writes nothing: a relay polling an idle outbox costs no xid and no WAL.
 * Otherwise the consumer's row is locked and re-read; if nobody moved it in
 * between, the window already found is used.
 *
 * When a window holds events but none for this consumer (or no more), the
 * consumer's snapshot moves to the window's end without opening a batch.
 * That is safe: the window is the set of events of transactions visible in
 * its snapshot and not in the previous one; those transactions had finished
 * when the snapshot was taken, so no event can join the window later, and
 * skipping it loses nothing.  Moving on keeps the next window, and the part
 * of the indexes it walks, small.
 */
PG_FUNCTION_INFO_V1(idem_next_batch);
Datum
idem_next_batch(PG_FUNCTION_ARGS)
{
	text	   *consumer = idem_outbox_name_arg(fcinfo, 0, "consumer name");
	int32		max_events;
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	Oid			userid = GetUserId();
	IdemUserSwitch sw;
	bool		may_miss_silent;

	idem_check_granted("idem.next_batch()");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_events must not be null")));
	max_events = PG_GETARG_INT32(1);
	if (max_events < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_events must be at least 1"),
				 errdetail("max_events is %d.", max_events)));

	ts = begin_materialize(fcinfo, &tupdesc);

	/* without preload, no listener may miss what commits meanwhile */
	may_miss_silent = idem_outbox_notify_before_read();

	/* checked against the caller (read_consumer), run as the owner */
	idem_become_table_owner(consumers_relid(), &sw);
	SPI_connect();
	next_batch(consumer, max_events, ts, tupdesc, userid);
	if (may_miss_silent && tuplestore_tuple_count(ts) == 0)
		notify_unseen_commits();
	SPI_finish();
	idem_restore_user(&sw);
	return (Datum) 0;
}

/*
 * Without preload, a next_batch() that found nothing under REPEATABLE READ
 * or SERIALIZABLE, while some backend listens (idem_outbox_notify_before_read
 * returned true).  Its relay will now sleep until notified.  But an emitter
 * that committed after the transaction's snapshot may have decided not to
 * notify (nobody listened when it decided), and this snapshot will never
 * see its events; a relay reading under READ COMMITTED would have.  So
 * queue, for this transaction's commit, the notifications of every commit
 * this snapshot cannot see: one per topic of the events of the xids from
 * its xmax on and of its running xids that have committed since, read with
 * a snapshot taken now (which sees exactly the committed ones).  The commit
 * wakes this relay (a listener receives its own notifications) and every
 * other listener, to read again with a newer snapshot.  An emitter that
 * did notify gets a second notification, which costs a relay one more
 * read; a relay that found events is not woken here, as it reads again
 * anyway.  Connected to SPI, as the owner of the outbox.
 */
static void
notify_unseen_commits(void)
{
	Snapshot	snap = GetTransactionSnapshot();	/* the transaction's */
	FullTransactionId next = ReadNextFullTransactionId();
	Datum	   *xip = palloc(sizeof(Datum) * (snap->xcnt + 1));
	int			nxip = 0;
	Datum		values[2];

	/* the snapshot's xids are recent: of next's epoch or the one before */
#define WIDEN(x) FullTransactionIdFromEpochAndXid(EpochFromFullTransactionId(next) - \
												  ((x) > XidFromFullTransactionId(next) ? 1 : 0), (x))
	for (uint32 i = 0; i < snap->xcnt; i++)
		if (TransactionIdDidCommit(snap->xip[i]))
			xip[nxip++] = FullTransactionIdGetDatum(WIDEN(snap->xip[i]));
	values[0] = FullTransactionIdGetDatum(WIDEN(snap->xmax));
#undef WIDEN
	values[1] = PointerGetDatum(construct_array(xip, nxip, XID8OID, sizeof(uint64),
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	execute_latest(&unseen_topics_plan, values);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *topic = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);

		if (topic != NULL)
			idem_outbox_notify_on_behalf(topic);
	}
}

/* next_batch()'s work, connected to SPI, for the caller userid. */
static void
next_batch(text *consumer, int32 max_events, Tuplestorestate *ts,
		   TupleDesc tupdesc, Oid userid)
{
	ConsumerState st;
	OutboxScan	scan;
	int64		first,
				last;

	if (!read_consumer(consumer, &st, false, userid))
		report_consumer_unknown(consumer);

	if (!st.has_batch && st.window == NULL)
	{
		ConsumerState locked;
		OutboxSnapshot *window = snapshot_take();

		scan_begin(&scan);
		if (!window_bounds(&scan, st.prev, window, &first, &last))
		{
			/* nothing committed since the consumer's snapshot */
			scan_end(&scan);
			return;
		}

		if (!read_consumer(consumer, &locked, true, userid))
			report_consumer_unknown(consumer);
		if (same_start(&st, &locked))
		{
			st.window = window;
			st.window_datum = PointerGetDatum(window);
			st.done_id = first - 1;
			st.last_id = last;
			if (!try_open_batch(consumer, &st, &scan, max_events, ts, tupdesc))
				advance(consumer, st.window_datum); /* none of its topics */
			scan_end(&scan);
			return;
		}
		scan_end(&scan);
		st = locked;			/* moved meanwhile: start over, locked */
	}
	else if (!read_consumer(consumer, &st, true, userid))
		report_consumer_unknown(consumer);

	scan_begin(&scan);
	if (st.has_batch)
	{
		/* The open batch again: the same ids of the same fixed window. */
		Window		w = {st.prev, st.window, st.done_id, st.last_id};
		OutboxRow  *rows;
		int64		n,
					last_kept;

		n = fetch_window(&scan, &w, st.batch_last_id, st.batch_topics,
						 PG_INT64_MAX, &rows, &last_kept);
		put_batch(ts, tupdesc, st.batch_id, rows, n);
	}
	else
	{
		/*
		 * Go on with the open window; when it holds nothing more for this
		 * consumer, move past it and look at a new one.
		 */
		if (st.window == NULL ||
			!try_open_batch(consumer, &st, &scan, max_events, ts, tupdesc))
		{
			if (st.window != NULL)
			{
				st.prev_datum = st.window_datum;
				st.prev = st.window;
			}
			st.window = snapshot_take();
			st.window_datum = PointerGetDatum(st.window);
			/* the walk must see every event the new window holds */
			scan_refresh_snapshot(&scan);
			if (!window_bounds(&scan, st.prev, st.window, &first, &last))
				advance(consumer, st.window_datum);
			else
			{
				st.done_id = first - 1;
				st.last_id = last;
				if (!try_open_batch(consumer, &st, &scan, max_events, ts, tupdesc))
					advance(consumer, st.window_datum);
			}
		}
	}
	scan_end(&scan);
}

/*
 * idem.finish_batch(consumer, batch_id): close the open batch, so that its
 * events are never returned again; returns how many events it held.  A
 * batch that exhausted its window also closes the window: the consumer's
 * finished snapshot becomes the window's.
 */
PG_FUNCTION_INFO_V1(idem_finish_batch);
Datum
idem_finish_batch(PG_FUNCTION_ARGS)
{
	text	   *consumer = idem_outbox_name_arg(fcinfo, 0, "consumer name");
	int64		batch_id;
	int64		events;
	Oid			userid = GetUserId();
	IdemUserSwitch sw;

	idem_check_granted("idem.finish_batch()");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("batch_id must not be null")));
	batch_id = PG_GETARG_INT64(1);

	/* checked against the caller, run as the owner */
	idem_become_table_owner(consumers_relid(), &sw);
	SPI_connect();
	events = finish_batch(consumer, batch_id, userid);
	SPI_finish();
	idem_restore_user(&sw);
	PG_RETURN_INT64(events);
}

/*
 * finish_batch()'s work, connected to SPI, for the caller userid: the
 * number of events of the batch closed, or an error.
 */
static int64
finish_batch(text *consumer, int64 batch_id, Oid userid)
{
	Datum		values[2];
	bool		isnull;

	if (idem_privileges_enabled())
	{
		bool		exists;
		Oid			owner = consumer_owner(consumer, false, &exists);

		if (!exists)
			report_consumer_unknown(consumer);
		idem_check_consumer(userid, consumer, owner, "idem.finish_batch()");
	}

	values[0] = PointerGetDatum(consumer);
	values[1] = Int64GetDatum(batch_id);
	idem_plan_execute(&finish_plan, values, NULL, false, 0);
	if (SPI_processed == 1)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  1, &isnull);

		return isnull ? 0 : DatumGetInt32(d);
	}

	/* Not finished: say why. */
	idem_plan_execute(&open_batch_plan, values, NULL, false, 1);
	if (SPI_processed == 0)
		report_consumer_unknown(consumer);
	else
	{
		Datum		open = SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull);
		char	   *name = text_to_cstring(consumer);

		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_IDEM_BATCH_NOT_OPEN),
					 errmsg("batch " INT64_FORMAT " is not the open batch of consumer \"%s\"",
							batch_id, name),
					 errdetail("Consumer \"%s\" has no open batch.", name),
					 errhint("A batch is finished once; call idem.next_batch() for the next one.")));
		else
			ereport(ERROR,
					(errcode(ERRCODE_IDEM_BATCH_NOT_OPEN),
					 errmsg("batch " INT64_FORMAT " is not the open batch of consumer \"%s\"",
							batch_id, name),
					 errdetail("The open batch of consumer \"%s\" is " INT64_FORMAT ".",
							   name, DatumGetInt64(open)),
					 errhint("Call idem.next_batch() to get the open batch again with its id.")));
	}
	pg_unreachable();
}

/* Append an event id to the list of those to delete, growing it. */
static void
trim_add(Datum **ids, int *n, int *max, int64 id)
{
	if (*n >= *max)
	{
		*max *= 2;
		*ids = repalloc_huge(*ids, sizeof(Datum) * *max);
	}
	(*ids)[(*n)++] = Int64GetDatum(id);
}

/* Close leaf i's relations, releasing the AccessShareLocks scan_leaf took. */
static void
leaf_close(OutboxScan *s, int i)
{
	OutboxLeaf *l = &s->leaves[i];

	if (l->heap == NULL)
		return;
	scan_end_walk(s);
	ExecDropSingleTupleTableSlot(l->slot);
	index_close(l->byxid, AccessShareLock);
	index_close(l->pkey, AccessShareLock);
	table_close(l->heap, AccessShareLock);
	l->heap = NULL;
	l->pkey = NULL;
	l->byxid = NULL;
}

/* The first (or last) entry of a leaf's index, in its order; false if none. */
static bool
leaf_edge(OutboxScan *s, OutboxLeaf *leaf, bool by_id, bool last,
		  FullTransactionId *xid, int64 *id)
{
	IndexTuple	itup;
	TupleDesc	desc;
	bool		isnull;
	bool		found;

	scan_end_walk(s);
	s->cur = leaf;
	s->scan = index_beginscan(leaf->heap, by_id ? leaf->pkey : leaf->byxid,
							  s->snapshot, 0, 0);
	s->scan->xs_want_itup = true;
	index_rescan(s->scan, NULL, 0, NULL, 0);
	found = index_getnext_tid(s->scan, last ? BackwardScanDirection :
							  ForwardScanDirection) != NULL;
	if (found)
	{
		itup = s->scan->xs_itup;
		desc = s->scan->xs_itupdesc;
		*id = DatumGetInt64(index_getattr(itup, by_id ? 1 : 2, desc, &isnull));
		*xid = DatumGetFullTransactionId(index_getattr(itup, by_id ? 2 : 1, desc, &isnull));
	}
	scan_end_walk(s);
	return found;
}

/* Does the leaf's (xid, id) index have an entry of transaction xid? */
static bool
leaf_has_xid(OutboxScan *s, OutboxLeaf *leaf, FullTransactionId xid)
{
	FullTransactionId x;
	int64		id;
	bool		found;

	scan_by_xid(s, leaf, xid, xid);
	found = scan_next(s, &x, &id);
	scan_end_walk(s);
	return found;
}

/*
 * Is every event the leaf holds finished: its xid visible in every one of
 * the snapshots (the consumers' finished snapshots, or, with no consumer,
 * the latest snapshot)?  Exact, on the (xid, id) index alone, counting
 * every entry whatever its visibility (an entry of an aborted or deleted
 * row can only make the answer "no"): a snapshot sees xid when xid <
 * xmax and xid is not in its running list, so the leaf's largest xid below
 * every xmax and no entry for any running xid is the whole condition.
 */
static bool
leaf_finished(OutboxScan *s, OutboxLeaf *leaf, OutboxSnapshot **snaps, int nsnaps)
{
	FullTransactionId maxxid;
	int64		id;

	if (!leaf_edge(s, leaf, false, true, &maxxid, &id))
		return true;
	for (int i = 0; i < nsnaps; i++)
	{
		if (!FullTransactionIdPrecedes(maxxid, snaps[i]->xmax))
			return false;
		for (uint32 j = 0; j < snaps[i]->nxip; j++)
			if (leaf_has_xid(s, leaf, snaps[i]->xip[j]))
				return false;
	}
	return true;
}

/*
 * Count the leaf's rows visible in snap; with cutoff != 0, return -1 as soon
 * as one was created at or after it (retention not reached).
 */
static int64
leaf_count(OutboxLeaf *leaf, Snapshot snap, TimestampTz cutoff)
{
	TableScanDesc scan = table_beginscan(leaf->heap, snap, 0, NULL);
	TupleTableSlot *slot = table_slot_create(leaf->heap, NULL);
	int64		n = 0;

	while (table_scan_getnextslot(scan, ForwardScanDirection, slot))
	{
		CHECK_FOR_INTERRUPTS();
		if (cutoff != 0)
		{
			bool		isnull;
			Datum		created = slot_getattr(slot, leaf->att.created_at, &isnull);

			if (isnull || DatumGetTimestampTz(created) >= cutoff)
			{
				n = -1;
				break;
			}
		}
		n++;
	}
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	return n;
}

/*
 * Is leaf i referenced by a user's foreign key?  Then it is not trimmed at
 * all, with a WARNING: TRUNCATE refuses such a table (heap_truncate_check_FKs
 * in src/backend/catalog/heap.c), and a row DELETE would fail on the
 * first referenced event (or cascade into the user's table) -- either way
 * an error would stop every other task of idem.maintain(), key expiry
 * included, at every round.  A leaf without triggers cannot be referenced
 * (a foreign key puts its RI triggers on the referenced table), so the
 * catalog is searched only for a leaf that has some.  The lock is taken
 * conditionally, as everywhere in trimming; a leaf whose lock is not free
 * is left to the checks that follow, which take it conditionally too.
 */
static bool
leaf_referenced(OutboxScan *s, int i)
{
	Oid			relid = s->leaves[i].relid;
	Relation	rel;
	List	   *refs = NIL;

	if (!OidIsValid(relid) || !ConditionalLockRelationOid(relid, AccessShareLock))
		return false;
	rel = relation_open(relid, NoLock);
	if (rel->trigdesc != NULL)
		refs = heap_truncate_find_FKs(list_make1_oid(relid));
	if (refs != NIL)
	{
		Oid			ref = linitial_oid(refs);

		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("outbox events in %s are not trimmed: table %s references it in a foreign key",
						quote_qualified_identifier(get_namespace_name(RelationGetNamespace(rel)),
												   RelationGetRelationName(rel)),
						quote_qualified_identifier(get_namespace_name(get_rel_namespace(ref)),
												   get_rel_name(ref))),
				 errdetail("Finished events are removed with TRUNCATE, which PostgreSQL refuses on a table referenced by a foreign key; they stay until the constraint is dropped."),
				 errhint("Drop the foreign key. To keep a reference to an event, store its id without a constraint: events are removed once every consumer has finished them.")));
	}
	relation_close(rel, NoLock);
	UnlockRelationOid(relid, AccessShareLock);
	return refs != NIL;
}

/*
 * Try to empty leaf i with TRUNCATE; returns the number of events removed,
 * or -1 when the leaf was left as it is (its lock was not free, or some
 * event in it is not finished).
 *
 * Why the check under the lock is race-free.  TRUNCATE (ExecuteTruncate in
 * src/backend/commands/tablecmds.c) opens the table with
 * AccessExclusiveLock and, for a table not created in this transaction,
 * gives it a new, empty relfilenode (ExecuteTruncateGuts ->
 * RelationSetNewRelfilenode; heap_truncate_one_rel only for a table created
 * or already truncated in the same subtransaction): the old rows are gone
 * for every snapshot, old or new, which is what makes the space come back
 * under a held xmin and also why nothing may still be owed to anyone.
 * AccessExclusiveLock conflicts with every lock mode (the conflict table in
 * src/backend/storage/lmgr/lock.c).  Every writer of a leaf holds
 * RowExclusiveLock on it until its top-level transaction ends: an INSERT's
 * executor (ExecInitPartitionInfo / the range table), emit()'s direct write
 * (outbox_emit.c), COPY; a prepared transaction keeps its locks until
 * COMMIT/ROLLBACK PREPARED.  A transaction releases its locks only after it
 * has left the proc array (CommitTransaction in xact.c: ProcArrayEndTransaction
 * before ResourceOwnerRelease of the locks).  So while we hold the
 * AccessExclusiveLock, no transaction other than ours that ever wrote into
 * the leaf is still running, none can start writing into it, and the
 * index entries we look at are all there will be until we commit.  The
 * check then reads the (xid, id) index with no visibility test at all, so
 * rows of transactions committed after our snapshot count too.  Our own
 * transaction's rows (an emit earlier in this transaction) carry our xid,
 * which no snapshot taken by another transaction sees as finished and
 * snapshot_without_self() keeps out of our own.  Readers (a relay's walk,
 * pg_dump) hold AccessShareLock: the lock is taken only conditionally (a
 * few attempts, see below), so trimming never queues behind them and never
 * makes an emitter queue behind itself; a leaf that stays busy is tried
 * again at the next round.
 */
#define TRUNCATE_LOCK_ATTEMPTS 20

static int64
trim_truncate_leaf(OutboxScan *s, int i, OutboxSnapshot **snaps, int nsnaps,
				   TimestampTz cutoff)
{
	OutboxLeaf *leaf = &s->leaves[i];
	Snapshot	latest;
	int64		n;
	StringInfoData sql;

	/*
	 * First a look under AccessShareLock, which an emitter or a reader does
	 * not mind: a leaf with events still owed (the usual case) is left
	 * without ever taking AccessExclusiveLock.  That lock is WAL-logged for
	 * hot standby and held there until this transaction's commit is
	 * replayed, so taking it on every leaf at every round would cancel
	 * (or stall replay behind) every standby query of idem.outbox, even
	 * when nothing is truncated.  The look is only a filter: the decision
	 * is taken again under AccessExclusiveLock below.
	 */
	if (!ConditionalLockRelationOid(leaf->relid, AccessShareLock))
		return -1;
	leaf = scan_leaf(s, i);
	UnlockRelationOid(leaf->relid, AccessShareLock);	/* scan_leaf took its own */
	if (RelationGetNumberOfBlocks(leaf->heap) == 0 ||
		!leaf_finished(s, leaf, snaps, nsnaps))
	{
		leaf_close(s, i);
		return -1;
	}
	leaf_close(s, i);

	/*
	 * The leaf looks finished: try a little harder for its lock.  A relay
	 * that drains as fast as it can is inside next_batch() most of the
	 * time, and its walk holds AccessShareLock on every leaf while it runs,
	 * so a single attempt per round fails most of the time exactly when
	 * the outbox is busiest -- and a leaf not emptied before the ring comes
	 * round again falls back to row deletes, the bloat this storage
	 * exists to avoid.  Still never a queued lock request: a few
	 * conditional attempts, a millisecond apart (a relay's next_batch
	 * lasts about that long), then the next round.  A long reader
	 * (pg_dump) costs this round TRUNCATE_LOCK_ATTEMPTS milliseconds.
	 */
	for (int attempt = 0;; attempt++)
	{
		if (ConditionalLockRelationOid(leaf->relid, AccessExclusiveLock))
			break;
		if (attempt + 1 >= TRUNCATE_LOCK_ATTEMPTS)
			return -1;
		CHECK_FOR_INTERRUPTS();
		pg_usleep(1000L);
	}
	leaf = scan_leaf(s, i);
	/* (TRUNCATE's CheckTableNotInUse would refuse a leaf open elsewhere here) */
	if (RelationGetNumberOfBlocks(leaf->heap) == 0 ||
		leaf->heap->rd_refcnt != 1 || AfterTriggerPendingOnRel(leaf->relid) ||
		!leaf_finished(s, leaf, snaps, nsnaps))
	{
		/* nothing to do: let emitters and readers in again at once */
		leaf_close(s, i);
		UnlockRelationOid(leaf->relid, AccessExclusiveLock);
		return -1;
	}

	/* a snapshot taken under the lock sees every committed row */
	latest = RegisterSnapshot(GetLatestSnapshot());
	n = leaf_count(leaf, latest, cutoff);
	UnregisterSnapshot(latest);
	if (n < 0)
	{
		leaf_close(s, i);
		UnlockRelationOid(leaf->relid, AccessExclusiveLock);
		return -1;
	}

	/* TRUNCATE refuses a table this session still has open */
	initStringInfo(&sql);
	appendStringInfo(&sql, "TRUNCATE ONLY %s",
					 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(leaf->heap)),
												RelationGetRelationName(leaf->heap)));
	leaf_close(s, i);
	if (SPI_execute(sql.data, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "pg_idem: %s failed", sql.data);
	return n;
}

/*
 * The fallback for a leaf that holds ids of more than one lap of the ring
 * (a consumer lags by more than the ring, so the leaf is never all
 * finished), and, with no consumer, for a leaf that holds events past the
 * retention beside younger ones: delete, row by row, up to *budget of its
 * finished events.
 * Returns how many were deleted.  The 0.1 table of a database whose
 * extension is not updated yet is trimmed this way too, as 0.1 did.
 */
static int64
trim_delete_laps(OutboxScan *s, int i, OutboxSnapshot **snaps, int nsnaps,
				 TimestampTz cutoff, int *budget)
{
	OutboxLeaf *leaf;
	FullTransactionId xid;
	int64		id,
				minid,
				maxid;
	FullTransactionId limit;
	Datum	   *ids;
	int			nids = 0,
				maxids = Min(*budget, 1024);
	int64		deleted = 0;

	if (*budget <= 0)
		return 0;
	if (!ConditionalLockRelationOid(s->leaves[i].relid, AccessShareLock))
		return 0;
	leaf = scan_leaf(s, i);
	UnlockRelationOid(leaf->relid, AccessShareLock);	/* scan_leaf took its own */
	/*
	 * With no consumer (cutoff != 0) the retention is a promise about each
	 * event (SPEC.md: kept for idem.outbox_retention, then deleted): a leaf
	 * that also holds younger events cannot be truncated -- the leaf of the
	 * current run, under a trickle of events, for as long as the run lasts,
	 * which may be years -- so its expired events are deleted one by one.
	 */
	if (!leaf_edge(s, leaf, true, false, &xid, &minid) ||
		!leaf_edge(s, leaf, true, true, &xid, &maxid) ||
		(minid / IDEM_OUTBOX_SEGMENT_IDS == maxid / IDEM_OUTBOX_SEGMENT_IDS &&
		 s->parent->rd_rel->relkind == RELKIND_PARTITIONED_TABLE && cutoff == 0))
	{
		leaf_close(s, i);
		return 0;
	}

	limit = snaps[0]->xmax;
	for (int k = 1; k < nsnaps; k++)
		if (FullTransactionIdPrecedes(snaps[k]->xmax, limit))
			limit = snaps[k]->xmax;
	ids = palloc(sizeof(Datum) * maxids);
	scan_by_xid(s, leaf, FullTransactionIdFromU64(0), fxid_before(limit));
	while (nids < *budget && scan_next(s, &xid, &id))
	{
		bool		finished = true;

		CHECK_FOR_INTERRUPTS();
		for (int k = 0; k < nsnaps && finished; k++)
			finished = snapshot_sees(snaps[k], xid);
		if (!finished || !scan_fetch(s))
			continue;
		if (cutoff != 0)
		{
			bool		isnull;
			Datum		created = slot_getattr(leaf->slot, leaf->att.created_at, &isnull);

			if (isnull || DatumGetTimestampTz(created) >= cutoff)
				continue;
		}
		trim_add(&ids, &nids, &maxids, id);
	}
	scan_end_walk(s);

	if (nids > 0)
	{
		StringInfoData sql;
		Oid			argtypes[1] = {INT8ARRAYOID};
		Datum		values[1];

		initStringInfo(&sql);
		appendStringInfo(&sql, "DELETE FROM ONLY %s o WHERE o.id OPERATOR(pg_catalog.=) ANY ($1)",
						 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(leaf->heap)),
													RelationGetRelationName(leaf->heap)));
		values[0] = PointerGetDatum(construct_array(ids, nids, INT8OID, sizeof(int64),
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		if (SPI_execute_with_args(sql.data, 1, argtypes, values, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "pg_idem: %s failed", sql.data);
		deleted = (int64) SPI_processed;
		*budget -= (int) deleted;
	}
	leaf_close(s, i);
	return deleted;
}

/*
 * Remove the events that every consumer has finished, or, with no
 * consumers, that are older than idem.outbox_retention (and whose
 * transaction has finished).
 *
 * "Finished by every consumer" is "xid visible in every consumer's finished
 * snapshot": events of an open window or batch are not, so they stay.
 * Storage is a ring of leaves (src/sql/40_outbox.sql); a leaf all of whose
 * events are finished is emptied with TRUNCATE (trim_truncate_leaf), which
 * frees its space at once, whatever snapshot some session holds.  The
 * events of a leaf with any unfinished event stay, except in a leaf that
 * holds two laps of the ring (a consumer lagging by more than the ring),
 * where up to max_rows finished events are deleted row by row, so that the
 * ring does not grow without bound behind that consumer.  A TRUNCATE
 * counts all of a leaf's events, however many: it costs the same for one
 * row or a million.
 */
int64
idem_outbox_trim(int32 max_rows)
{
	OutboxScan	scan;
	OutboxSnapshot **snaps;
	int			nsnaps;
	TimestampTz cutoff = 0;
	int			budget = max_rows;
	int64		removed = 0;

	if (max_rows < 1)
		return 0;

	/*
	 * A consumer being created by a transaction that has not committed yet
	 * is owed the events of every transaction running at its subscribe(),
	 * but no snapshot of ours can see it.  subscribe() holds
	 * CONSUMER_CREATE_LOCK until it commits; this waits for no one: while
	 * any subscribe() is uncommitted, nothing is trimmed this time.  Once
	 * the lock is ours, a subscribe() still to come takes its start
	 * snapshot after this point, so every event trimmed below is visible
	 * to it (finished before any consumer's finished snapshot, which are
	 * all older than now) and owed to nobody.  The consumers are read with
	 * the latest snapshot, so that under REPEATABLE READ too a subscription
	 * committed after this transaction's snapshot is seen.
	 */
	if (!ConditionalLockDatabaseObject(RelationRelationId, consumers_relid(), 0,
									   CONSUMER_TRIM_LOCK))
	{
		ereport(DEBUG1,
				(errmsg("pg_idem: outbox not trimmed: a subscribe() has not committed yet")));
		return 0;
	}

	SPI_connect();
	execute_latest(&trim_consumers_plan, NULL);
	nsnaps = (int) SPI_processed;
	snaps = palloc(sizeof(OutboxSnapshot *) * Max(nsnaps, 1));
	for (int i = 0; i < nsnaps; i++)
	{
		bool		isnull;

		snaps[i] = snapshot_from_datum(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1, &isnull));
		if (snapshot_is_foreign(snaps[i]))
		{
			/* restored from another cluster: "finished" means nothing */
			ereport(WARNING,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("outbox events are not trimmed while a consumer's position is ahead of this server's transactions"),
					 errhint("Re-create the consumers restored from another cluster; see \"Backups\" in the outbox documentation.")));
			SPI_finish();
			return 0;
		}
	}
	if (nsnaps == 0)
	{
		bool		isnull;

		/*
		 * No consumer: old enough, and written by a finished transaction
		 * (never by this one, which may still emit and commit).
		 */
		cutoff = GetCurrentTransactionStartTimestamp() -
			(TimestampTz) idem_outbox_retention_s * USECS_PER_SEC;
		execute_latest(&snapshot_plan, NULL);
		snaps[0] = snapshot_without_self(snapshot_from_datum(SPI_getbinval(SPI_tuptable->vals[0],
																		   SPI_tuptable->tupdesc,
																		   1, &isnull)));
		nsnaps = 1;
	}

	scan_begin(&scan);
	for (int i = 0; i < scan.nleaves; i++)
	{
		int64		n;

		CHECK_FOR_INTERRUPTS();
		if (leaf_referenced(&scan, i))
			continue;
		n = scan.parent->rd_rel->relkind == RELKIND_PARTITIONED_TABLE ?
			trim_truncate_leaf(&scan, i, snaps, nsnaps, cutoff) : -1;
		if (n >= 0)
			removed += n;
		else
			removed += trim_delete_laps(&scan, i, snaps, nsnaps, cutoff, &budget);
	}
	scan_end(&scan);
	SPI_finish();
	return removed;
}

/*
 * idem.trim_outbox(max_rows): idem_outbox_trim() for SQL callers (tests,
 * schedulers without the background worker).
 */
PG_FUNCTION_INFO_V1(idem_trim_outbox);
Datum
idem_trim_outbox(PG_FUNCTION_ARGS)
{
	int32		max_rows;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_rows must not be null")));
	max_rows = PG_GETARG_INT32(0);
	if (max_rows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must be at least 1"),
				 errdetail("max_rows is %d.", max_rows)));
	PG_RETURN_INT64(idem_outbox_trim(max_rows));
}
