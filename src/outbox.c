/*-------------------------------------------------------------------------
 *
 * outbox.c
 *	  The transactional outbox: emit, subscribe, unsubscribe, next_batch,
 *	  finish_batch, and the trimming that idem.maintain() runs.
 *
 * An event is a row of idem.outbox inserted in the caller's transaction, so
 * it exists if and only if that transaction commits.  The row records its
 * writing transaction as a top-level xid8.
 *
 * Delivery follows transaction visibility, as in PgQ, but without a ticker
 * daemon: each consumer keeps the snapshot up to which it has finished
 * (P).  When it asks for events, next_batch takes a fresh snapshot C, and
 * the window (P, C) is the set of events whose xid is visible in C and was
 * not visible in P.  Both snapshots are fixed, and a transaction visible in
 * C has written all its rows, so the set is fixed too: walking it in
 * (xid, id) order with a cursor across successive batches is exact, and a
 * transaction that commits late simply falls into a later window.  When the
 * window is exhausted, P := C.  Nothing relies on id order, which is what
 * makes `id > last_id` lose events of long transactions.
 *
 * The walk never touches events outside the window: every event of the
 * window has either xid in [P.xmax, C.xmax) -- one range of the (xid, id)
 * index -- or an xid that was in progress at P and is visible in C (a short
 * list, PgQ's "IN list", looked up by equality).  So a batch costs its own
 * rows, not the retained history nor the rest of the window.
 *
 * Each consumer locks only its own row of idem.consumers; emitters never
 * touch that table.  Trimming deletes events whose xid is visible in every
 * consumer's P, in bounded batches.
 *
 * IDENTIFICATION
 *	  src/outbox.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/itup.h"
#include "access/relscan.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/xid8.h"

#include "outbox.h"
#include "pg_idem.h"
#include "spi_util.h"

/* The channel emit() notifies; the payload is the topic. */
#define OUTBOX_CHANNEL "idem_outbox"

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

/* A position in a window's (xid, id) order. */
typedef struct OutboxPos
{
	FullTransactionId xid;
	int64		id;
} OutboxPos;

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
 * A walk of idem.outbox's (xid, id) index.  Each entry's xid and id are read
 * from the index tuple, so entries outside a window are skipped without
 * visiting the heap; the heap is fetched, under an MVCC snapshot, only for
 * the entries kept.
 */
typedef struct OutboxScan
{
	Relation	heap;
	Relation	index;
	Snapshot	snapshot;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	OutboxAttrs att;
	ScanKeyData keys[3];
} OutboxScan;

/* A topic filter: NULL (every topic) or a list of names. */
typedef struct TopicFilter
{
	int			n;
	text	  **names;
} TopicFilter;

/* One fetched event: its id (to sort the batch) and a copy of its row. */
typedef struct OutboxRow
{
	OutboxPos	pos;
	HeapTuple	tuple;
} OutboxRow;

/* A consumer's row of idem.consumers, as next_batch() reads it. */
typedef struct ConsumerState
{
	Datum		prev_datum;		/* snapshot: P */
	OutboxSnapshot *prev;
	Datum		window_datum;	/* window_snapshot: C, when a window is open */
	OutboxSnapshot *window;
	bool		has_done;		/* window_done_* set? */
	OutboxPos	done;
	bool		has_batch;		/* an open batch? */
	int64		batch_id;
	OutboxPos	batch_to;
	TopicFilter *batch_topics;
	TopicFilter *topics;
} ConsumerState;

static IdemPlan emit_plan = {
	"INSERT INTO idem.outbox (topic, key, payload, headers) "
	"VALUES ($1, $2, $3, $4) RETURNING id",
	4, {TEXTOID, TEXTOID, JSONBOID, JSONBOID}
};

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

static IdemPlan subscribe_plan = {
	"INSERT INTO idem.consumers AS c (name, topics, snapshot) "
	"VALUES ($1, $2, $3) "
	"ON CONFLICT (name) DO UPDATE SET topics = EXCLUDED.topics",
	3, {TEXTOID, TEXTARRAYOID, PG_SNAPSHOTOID}
};

static IdemPlan unsubscribe_plan = {
	"DELETE FROM idem.consumers c WHERE c.name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static IdemPlan lock_plan = {
	"SELECT c.snapshot, c.window_snapshot, c.window_done_xid, c.window_done_id, "
	"c.batch_id, c.batch_xid, c.batch_last_id, c.batch_topics, c.topics "
	"FROM idem.consumers c WHERE c.name OPERATOR(pg_catalog.=) $1 "
	"FOR NO KEY UPDATE",
	1, {TEXTOID}
};

static IdemPlan open_plan = {
	"UPDATE idem.consumers c SET snapshot = $2, window_snapshot = $3, "
	"window_done_xid = $4, window_done_id = $5, "
	"batch_id = pg_catalog.nextval('idem.outbox_batch_seq'::pg_catalog.regclass), "
	"batch_xid = $6, batch_last_id = $7, batch_topics = c.topics, "
	"batch_ends_window = $8, batch_events = $9, batch_opened_at = pg_catalog.now() "
	"WHERE c.name OPERATOR(pg_catalog.=) $1 RETURNING c.batch_id",
	9, {TEXTOID, PG_SNAPSHOTOID, PG_SNAPSHOTOID, XID8OID, INT8OID,
		XID8OID, INT8OID, BOOLOID, INT4OID}
};

static IdemPlan advance_plan = {
	"UPDATE idem.consumers c SET snapshot = $2, window_snapshot = NULL, "
	"window_done_xid = NULL, window_done_id = NULL "
	"WHERE c.name OPERATOR(pg_catalog.=) $1",
	2, {TEXTOID, PG_SNAPSHOTOID}
};

static IdemPlan finish_plan = {
	"UPDATE idem.consumers c SET "
	"snapshot = CASE WHEN c.batch_ends_window THEN c.window_snapshot ELSE c.snapshot END, "
	"window_snapshot = CASE WHEN c.batch_ends_window THEN NULL ELSE c.window_snapshot END, "
	"window_done_xid = CASE WHEN c.batch_ends_window THEN NULL ELSE c.batch_xid END, "
	"window_done_id = CASE WHEN c.batch_ends_window THEN NULL ELSE c.batch_last_id END, "
	"batch_id = NULL, batch_xid = NULL, batch_last_id = NULL, batch_topics = NULL, "
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

static IdemPlan trim_delete_plan = {
	"DELETE FROM idem.outbox o WHERE o.id OPERATOR(pg_catalog.=) ANY ($1)",
	1, {INT8ARRAYOID}
};

static text *name_arg(FunctionCallInfo fcinfo, int argno, const char *what);
static void check_name_length(int len, const char *what);
static Datum topics_arg(FunctionCallInfo fcinfo, int argno, bool *isnull);
static OutboxSnapshot *snapshot_from_datum(Datum d);
static int	fxid_cmp(const void *a, const void *b);
static bool snapshot_sees(const OutboxSnapshot *s, FullTransactionId xid);
static OutboxSnapshot *snapshot_without_self(OutboxSnapshot *s);
static OutboxSnapshot *snapshot_take(void);
static OutboxSnapshot *snapshot_empty_at(FullTransactionId xid);
static bool pos_less(OutboxPos a, OutboxPos b);
static OutboxPos window_end(const OutboxSnapshot *window);
static void scan_begin(OutboxScan *s);
static void scan_range(OutboxScan *s, FullTransactionId lo, FullTransactionId hi,
					   bool has_after, int64 after_id);
static bool scan_next(OutboxScan *s, OutboxPos *pos);
static bool scan_fetch(OutboxScan *s);
static void scan_end(OutboxScan *s);
static TopicFilter *topic_filter(Datum topics, bool isnull);
static bool topic_matches(const TopicFilter *tf, Datum topic);
static int64 collect(OutboxScan *s, OutboxPos from, OutboxPos to,
					 const OutboxSnapshot *window, const TopicFilter *tf,
					 int64 limit, OutboxRow **rows, int64 n, int64 *cap);
static int64 walk(OutboxScan *s, OutboxPos from, FullTransactionId hi,
				  OutboxPos to, const OutboxSnapshot *window,
				  const TopicFilter *tf, int64 limit, OutboxRow **rows,
				  int64 n, int64 *cap);
static int64 fetch_window(OutboxScan *s, const OutboxSnapshot *prev,
						  const OutboxSnapshot *window, OutboxPos from,
						  OutboxPos to, const TopicFilter *tf, int64 limit,
						  OutboxRow **rows);
static bool lock_consumer(text *consumer, ConsumerState *st);
static void report_consumer_unknown(text *consumer);
static int	row_id_cmp(const void *a, const void *b);
static Tuplestorestate *begin_materialize(FunctionCallInfo fcinfo,
										  TupleDesc *tupdesc);
static void put_batch(OutboxScan *s, Tuplestorestate *ts, TupleDesc tupdesc,
					  int64 batch_id, OutboxRow *rows, int64 n);

/*
 * Read a consumer or topic name argument: NULL raises 22004, an empty or
 * over-long name 22023 (the contract's limits, counted in bytes).
 */
static text *
name_arg(FunctionCallInfo fcinfo, int argno, const char *what)
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

/* (xid, id) order */
static bool
pos_less(OutboxPos a, OutboxPos b)
{
	if (FullTransactionIdPrecedes(a.xid, b.xid))
		return true;
	if (FullTransactionIdPrecedes(b.xid, a.xid))
		return false;
	return a.id < b.id;
}

/* The last position a window can hold: every xid it sees is below xmax. */
static OutboxPos
window_end(const OutboxSnapshot *window)
{
	OutboxPos	p;

	p.xid = FullTransactionIdFromU64(U64FromFullTransactionId(window->xmax) - 1);
	p.id = PG_INT64_MAX;
	return p;
}

/*
 * Open idem.outbox and its (xid, id) index for a walk, under a snapshot at
 * least as new as any window snapshot taken before (a fresh one under READ
 * COMMITTED, the transaction's under REPEATABLE READ, which is then also
 * the window's): every event of a window is visible to the walk.
 */
static void
scan_begin(OutboxScan *s)
{
	Oid			nsp = get_namespace_oid("idem", false);
	Oid			relid = get_relname_relid("outbox", nsp);
	Oid			indid = get_relname_relid("outbox_xid_id_idx", nsp);
	TupleDesc	desc;

	if (!OidIsValid(relid) || !OidIsValid(indid))
		elog(ERROR, "pg_idem: idem.outbox or its index outbox_xid_id_idx is missing");

	s->heap = table_open(relid, AccessShareLock);
	s->index = index_open(indid, AccessShareLock);

	memset(&s->att, 0, sizeof(s->att));
	desc = RelationGetDescr(s->heap);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);
		const char *name = NameStr(a->attname);

		if (a->attisdropped)
			continue;
		if (strcmp(name, "id") == 0)
			s->att.id = a->attnum;
		else if (strcmp(name, "topic") == 0)
			s->att.topic = a->attnum;
		else if (strcmp(name, "key") == 0)
			s->att.key = a->attnum;
		else if (strcmp(name, "payload") == 0)
			s->att.payload = a->attnum;
		else if (strcmp(name, "headers") == 0)
			s->att.headers = a->attnum;
		else if (strcmp(name, "created_at") == 0)
			s->att.created_at = a->attnum;
	}
	if (!s->att.id || !s->att.topic || !s->att.key || !s->att.payload ||
		!s->att.headers || !s->att.created_at)
		elog(ERROR, "pg_idem: idem.outbox does not have the expected columns");

	s->snapshot = RegisterSnapshot(GetTransactionSnapshot());
	s->slot = table_slot_create(s->heap, NULL);
	s->scan = index_beginscan(s->heap, s->index, s->snapshot, 3, 0);
	s->scan->xs_want_itup = true;
}

/*
 * (Re)start the walk at the entries with lo <= xid <= hi and, when
 * after_id is given, id > after_id, in (xid, id) order.  The id key makes
 * the btree start inside a transaction's group of entries instead of at its
 * beginning: one transaction that wrote 200k events must not be re-walked
 * from its first event by every batch.
 */
static void
scan_range(OutboxScan *s, FullTransactionId lo, FullTransactionId hi,
		   bool has_after, int64 after_id)
{
	ScanKeyInit(&s->keys[0], 1, BTGreaterEqualStrategyNumber, F_XID8GE,
				FullTransactionIdGetDatum(lo));
	ScanKeyInit(&s->keys[1], 1, BTLessEqualStrategyNumber, F_XID8LE,
				FullTransactionIdGetDatum(hi));
	if (has_after)
		ScanKeyInit(&s->keys[2], 2, BTGreaterStrategyNumber, F_INT8GT,
					Int64GetDatum(after_id));
	else
		ScanKeyInit(&s->keys[2], 2, BTGreaterEqualStrategyNumber, F_INT8GE,
					Int64GetDatum(PG_INT64_MIN));
	index_rescan(s->scan, s->keys, 3, NULL, 0);
}

/* The next index entry's (xid, id), without visiting the heap. */
static bool
scan_next(OutboxScan *s, OutboxPos *pos)
{
	IndexTuple	itup;
	bool		isnull;

	if (index_getnext_tid(s->scan, ForwardScanDirection) == NULL)
		return false;
	itup = s->scan->xs_itup;
	pos->xid = DatumGetFullTransactionId(index_getattr(itup, 1, s->scan->xs_itupdesc,
													   &isnull));
	pos->id = DatumGetInt64(index_getattr(itup, 2, s->scan->xs_itupdesc, &isnull));
	return true;
}

/*
 * Fetch the current entry's row into s->slot; false when the snapshot does
 * not see it (its transaction aborted, or has not committed yet).
 */
static bool
scan_fetch(OutboxScan *s)
{
	return index_fetch_heap(s->scan, s->slot);
}

static void
scan_end(OutboxScan *s)
{
	index_endscan(s->scan);
	ExecDropSingleTupleTableSlot(s->slot);
	UnregisterSnapshot(s->snapshot);
	index_close(s->index, NoLock);
	table_close(s->heap, NoLock);
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
 * Walk the current range of the scan, appending to rows (n so far, *cap
 * allocated) the events after `from` and not after `to` that the window's
 * snapshot sees (when window is not NULL) and that match the topics, until
 * there are limit of them.  Returns the new count.
 */
static int64
collect(OutboxScan *s, OutboxPos from, OutboxPos to,
		const OutboxSnapshot *window, const TopicFilter *tf,
		int64 limit, OutboxRow **rows, int64 n, int64 *cap)
{
	OutboxPos	pos;

	while (n < limit && scan_next(s, &pos))
	{
		bool		isnull;

		CHECK_FOR_INTERRUPTS();
		if (!pos_less(from, pos))
			continue;
		if (pos_less(to, pos))
			break;
		if (window != NULL && !snapshot_sees(window, pos.xid))
			continue;
		if (!scan_fetch(s))
			continue;
		if (tf != NULL && !topic_matches(tf, slot_getattr(s->slot, s->att.topic, &isnull)))
			continue;

		if (n >= *cap)
		{
			*cap = Max(*cap * 2, 64);
			*rows = *rows ? repalloc_huge(*rows, *cap * sizeof(OutboxRow))
				: palloc_extended(*cap * sizeof(OutboxRow), MCXT_ALLOC_HUGE);
		}
		(*rows)[n].pos = pos;
		(*rows)[n].tuple = ExecCopySlotHeapTuple(s->slot);
		n++;
	}
	return n;
}

/*
 * Collect the events after `from` whose xid is at most hi (and that are not
 * after `to`; see collect()).  Positioned in two steps when `from` is inside
 * a transaction's group: the rest of that group, then the following xids.
 * An id of PG_INT64_MIN in `from` stands for "the whole group".
 */
static int64
walk(OutboxScan *s, OutboxPos from, FullTransactionId hi, OutboxPos to,
	 const OutboxSnapshot *window, const TopicFilter *tf, int64 limit,
	 OutboxRow **rows, int64 n, int64 *cap)
{
	if (n >= limit || FullTransactionIdFollows(from.xid, hi))
		return n;
	if (from.id != PG_INT64_MIN)
	{
		scan_range(s, from.xid, from.xid, true, from.id);
		n = collect(s, from, to, window, tf, limit, rows, n, cap);
		if (n >= limit || !FullTransactionIdPrecedes(from.xid, hi))
			return n;
		from.xid = FullTransactionIdFromU64(U64FromFullTransactionId(from.xid) + 1);
		from.id = PG_INT64_MIN;
	}
	scan_range(s, from.xid, hi, false, 0);
	return collect(s, from, to, window, tf, limit, rows, n, cap);
}

/*
 * Fetch, in (xid, id) order, up to limit events of the window (prev, window)
 * after `from` and not after `to`, among the filter's topics.
 *
 * The window's events come in two parts, and the first precedes the second
 * in (xid, id) order because prev's running xids are all below prev.xmax:
 * the "revived" transactions, running at prev and finished at window,
 * probed one xid at a time; then the range [prev.xmax, window.xmax),
 * filtered by visibility in the window's snapshot.  Events visible in prev
 * (finished) are never read, and events of the range not yet visible in
 * window are skipped on their index entry, without visiting the heap.
 */
static int64
fetch_window(OutboxScan *s, const OutboxSnapshot *prev,
			 const OutboxSnapshot *window, OutboxPos from, OutboxPos to,
			 const TopicFilter *tf, int64 limit, OutboxRow **rows)
{
	OutboxPos	range_start;
	int64		n = 0,
				cap = 0;

	*rows = NULL;
	range_start.xid = prev->xmax;
	range_start.id = PG_INT64_MIN;

	if (pos_less(from, range_start))
	{
		for (uint32 i = 0; i < prev->nxip && n < limit; i++)
		{
			OutboxPos	start;

			start.xid = prev->xip[i];
			start.id = PG_INT64_MIN;
			if (FullTransactionIdPrecedes(start.xid, from.xid))
				continue;
			if (FullTransactionIdFollows(start.xid, to.xid))
				break;
			if (!snapshot_sees(window, start.xid))
				continue;
			if (FullTransactionIdEquals(start.xid, from.xid))
				start = from;
			n = walk(s, start, start.xid, to, NULL, tf, limit, rows, n, &cap);
		}
		from = range_start;
	}

	return walk(s, from, to.xid, to, window, tf, limit, rows, n, &cap);
}

/*
 * Lock the consumer's row (only that row: consumers never wait for each
 * other) and read its state.  Returns false when there is no such consumer.
 * Concurrent next_batch() calls of one consumer queue here; under READ
 * COMMITTED the waiter then reads the winner's committed state.
 */
static bool
lock_consumer(text *consumer, ConsumerState *st)
{
	Datum		values[1];
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	values[0] = PointerGetDatum(consumer);
	idem_plan_execute(&lock_plan, values, NULL, false, 1);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	st->prev_datum = SPI_getbinval(tup, desc, 1, &isnull);
	st->prev = snapshot_from_datum(st->prev_datum);

	d = SPI_getbinval(tup, desc, 2, &isnull);
	st->window_datum = isnull ? (Datum) 0 : d;
	st->window = isnull ? NULL : snapshot_from_datum(d);

	/* NULL done position: at the window's start, before every (xid, id) */
	d = SPI_getbinval(tup, desc, 3, &isnull);
	st->has_done = !isnull;
	st->done.xid = isnull ? InvalidFullTransactionId : DatumGetFullTransactionId(d);
	d = SPI_getbinval(tup, desc, 4, &isnull);
	st->done.id = (isnull || !st->has_done) ? PG_INT64_MIN : DatumGetInt64(d);

	d = SPI_getbinval(tup, desc, 5, &isnull);
	st->has_batch = !isnull;
	st->batch_id = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, 6, &isnull);
	st->batch_to.xid = isnull ? InvalidFullTransactionId : DatumGetFullTransactionId(d);
	d = SPI_getbinval(tup, desc, 7, &isnull);
	st->batch_to.id = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tup, desc, 8, &isnull);
	st->batch_topics = topic_filter(d, isnull);
	d = SPI_getbinval(tup, desc, 9, &isnull);
	st->topics = topic_filter(d, isnull);
	return true;
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

static int
row_id_cmp(const void *a, const void *b)
{
	int64		x = ((const OutboxRow *) a)->pos.id;
	int64		y = ((const OutboxRow *) b)->pos.id;

	return (x > y) - (x < y);
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
 * Put a batch's rows into the result, in id order.  Out-of-line values are
 * fetched now, so the result does not depend on the rows it came from.
 */
static void
put_batch(OutboxScan *s, Tuplestorestate *ts, TupleDesc tupdesc,
		  int64 batch_id, OutboxRow *rows, int64 n)
{
	TupleDesc	rowdesc = RelationGetDescr(s->heap);
	AttrNumber	cols[6];

	cols[0] = s->att.id;
	cols[1] = s->att.topic;
	cols[2] = s->att.key;
	cols[3] = s->att.payload;
	cols[4] = s->att.headers;
	cols[5] = s->att.created_at;

	qsort(rows, n, sizeof(OutboxRow), row_id_cmp);
	for (int64 i = 0; i < n; i++)
	{
		Datum		values[7];
		bool		nulls[7];

		values[0] = Int64GetDatum(batch_id);
		nulls[0] = false;
		for (int c = 0; c < 6; c++)
		{
			Datum		v = heap_getattr(rows[i].tuple, cols[c], rowdesc, &nulls[c + 1]);

			if (!nulls[c + 1] && TupleDescAttr(rowdesc, cols[c] - 1)->attlen == -1 &&
				VARATT_IS_EXTERNAL(DatumGetPointer(v)))
				v = PointerGetDatum(PG_DETOAST_DATUM_PACKED(v));
			values[c + 1] = v;
		}
		tuplestore_putvalues(ts, tupdesc, values, nulls);
	}
}

/*
 * idem.emit(topic, payload, key, headers): insert the event in the caller's
 * transaction and queue a notification, which PostgreSQL delivers on commit
 * only and collapses to one per topic per transaction.
 */
PG_FUNCTION_INFO_V1(idem_emit);
Datum
idem_emit(PG_FUNCTION_ARGS)
{
	text	   *topic = name_arg(fcinfo, 0, "topic");
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;
	int64		id;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload must not be null"),
				 errhint("An event without data can carry '{}' or the JSON value 'null'::jsonb.")));
	if (!PG_ARGISNULL(3))
	{
		Jsonb	   *headers = PG_GETARG_JSONB_P(3);

		if (!JB_ROOT_IS_OBJECT(headers))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("headers must be a JSON object"),
					 errdetail("The headers given are a JSON %s.",
							   JB_ROOT_IS_SCALAR(headers) ? "scalar" : "array"),
					 errhint("Headers map names to values, like Kafka record headers.")));
		values[3] = PointerGetDatum(headers);
	}
	else
		nulls[3] = 'n';

	values[0] = PointerGetDatum(topic);
	values[1] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[1] = PG_ARGISNULL(2) ? 'n' : ' ';
	values[2] = PG_GETARG_DATUM(1);

	SPI_connect();
	if (idem_plan_execute(&emit_plan, values, nulls, false, 1) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "pg_idem: outbox insert returned no row");
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									 1, &isnull));
	SPI_finish();

	Async_Notify(OUTBOX_CHANNEL, text_to_cstring(topic));

	PG_RETURN_INT64(id);
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
	text	   *consumer = name_arg(fcinfo, 0, "consumer name");
	bool		topics_null;
	Datum		topics = topics_arg(fcinfo, 1, &topics_null);
	bool		from_start;
	OutboxSnapshot *start;
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("from_start must not be null")));
	from_start = PG_GETARG_BOOL(2);

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
		idem_plan_execute(&oldest_plan, NULL, NULL, false, 1);
		now = snapshot_without_self(snapshot_from_datum(
														SPI_getbinval(SPI_tuptable->vals[0],
																	  SPI_tuptable->tupdesc, 1, &isnull)));
		oldest = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		at = now->xmin;
		if (!isnull && FullTransactionIdPrecedes(DatumGetFullTransactionId(oldest), at))
			at = DatumGetFullTransactionId(oldest);
		start = snapshot_empty_at(at);
	}
	else
		start = snapshot_take();

	values[0] = PointerGetDatum(consumer);
	values[1] = topics;
	nulls[1] = topics_null ? 'n' : ' ';
	values[2] = PointerGetDatum(start);
	idem_plan_execute(&subscribe_plan, values, nulls, false, 0);
	SPI_finish();

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
	text	   *consumer = name_arg(fcinfo, 0, "consumer name");
	Datum		values[1];
	bool		existed;

	values[0] = PointerGetDatum(consumer);
	SPI_connect();
	idem_plan_execute(&unsubscribe_plan, values, NULL, false, 0);
	existed = SPI_processed > 0;
	SPI_finish();

	PG_RETURN_BOOL(existed);
}

/*
 * idem.next_batch(consumer, max_events): the consumer's open batch again
 * (same id, same rows), or a new batch of at most max_events events, or no
 * rows when nothing new has committed.
 *
 * A new batch continues the open window from its cursor; with no window,
 * one is opened up to a fresh snapshot.  One row past max_events is fetched
 * to learn whether the batch exhausts the window, so that finish_batch()
 * can close the window at once.
 *
 * When a window holds nothing (more) for this consumer, the consumer's
 * snapshot moves to the window's end without opening a batch.  That is
 * safe: the window is the set of events of transactions visible in its
 * snapshot and not in the previous one; those transactions had finished
 * when the snapshot was taken, so no event can join the window later, and
 * an empty window skips nothing.  Moving on keeps the next window, and the
 * part of the index it walks, small.
 */
PG_FUNCTION_INFO_V1(idem_next_batch);
Datum
idem_next_batch(PG_FUNCTION_ARGS)
{
	text	   *consumer = name_arg(fcinfo, 0, "consumer name");
	int32		max_events;
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	ConsumerState st;
	OutboxScan	scan;
	OutboxRow  *rows;
	int64		n;

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

	SPI_connect();
	if (!lock_consumer(consumer, &st))
		report_consumer_unknown(consumer);

	if (st.has_batch)
	{
		/* The open batch again: the same bounds in the same fixed window. */
		scan_begin(&scan);
		n = fetch_window(&scan, st.prev, st.window, st.done, st.batch_to,
						 st.batch_topics, PG_INT64_MAX, &rows);
		put_batch(&scan, ts, tupdesc, st.batch_id, rows, n);
		scan_end(&scan);
		SPI_finish();
		return (Datum) 0;
	}

	for (;;)
	{
		bool		fresh = false;

		if (st.window == NULL)
		{
			st.window = snapshot_take();
			st.window_datum = PointerGetDatum(st.window);
			st.has_done = false;
			st.done.xid = InvalidFullTransactionId;
			st.done.id = PG_INT64_MIN;
			fresh = true;
		}

		scan_begin(&scan);
		n = fetch_window(&scan, st.prev, st.window, st.done, window_end(st.window),
						 st.topics, (int64) max_events + 1, &rows);
		if (n > 0)
		{
			bool		ends_window = n <= max_events;
			OutboxRow  *last;
			Datum		values[9];
			char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
			bool		isnull;
			int64		batch_id;

			if (!ends_window)
				n = max_events;
			last = &rows[n - 1];	/* rows are still in (xid, id) order */

			values[0] = PointerGetDatum(consumer);
			values[1] = st.prev_datum;
			values[2] = st.window_datum;
			values[3] = FullTransactionIdGetDatum(st.done.xid);
			values[4] = Int64GetDatum(st.done.id);
			if (!st.has_done)
				nulls[3] = nulls[4] = 'n';
			values[5] = FullTransactionIdGetDatum(last->pos.xid);
			values[6] = Int64GetDatum(last->pos.id);
			values[7] = BoolGetDatum(ends_window);
			values[8] = Int32GetDatum((int32) n);
			idem_plan_execute(&open_plan, values, nulls, false, 0);
			batch_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull));
			put_batch(&scan, ts, tupdesc, batch_id, rows, n);
			scan_end(&scan);
			break;
		}
		scan_end(&scan);

		/* The window holds nothing more for this consumer: move past it. */
		st.prev_datum = st.window_datum;
		st.prev = st.window;
		st.window = NULL;
		if (fresh)
		{
			Datum		values[2];

			values[0] = PointerGetDatum(consumer);
			values[1] = st.prev_datum;
			idem_plan_execute(&advance_plan, values, NULL, false, 0);
			break;
		}
		/* a window left over from earlier calls: look at a new one */
	}
	SPI_finish();
	return (Datum) 0;
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
	text	   *consumer = name_arg(fcinfo, 0, "consumer name");
	int64		batch_id;
	Datum		values[2];
	bool		isnull;
	int64		events;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("batch_id must not be null")));
	batch_id = PG_GETARG_INT64(1);

	values[0] = PointerGetDatum(consumer);
	values[1] = Int64GetDatum(batch_id);
	SPI_connect();
	idem_plan_execute(&finish_plan, values, NULL, false, 0);
	if (SPI_processed == 1)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									  1, &isnull);

		events = isnull ? 0 : DatumGetInt32(d);
		SPI_finish();
		PG_RETURN_INT64(events);
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
	SPI_finish();				/* not reached */
	PG_RETURN_NULL();
}

/*
 * Delete up to max_rows events that every consumer has finished, or, with
 * no consumers, that are older than idem.outbox_retention.
 *
 * "Finished by every consumer" is "xid visible in every consumer's finished
 * snapshot": events of an open window or batch are not, so they stay.  The
 * candidates are found by walking the (xid, id) index from its start up to
 * the smallest finished xmax, checking the xids against the snapshots
 * without visiting the heap, then deleted by id.  Deleting never conflicts
 * with inserting: emitters are never blocked.
 *
 * Without consumers, only the oldest max_rows events (in xid order) are
 * looked at, and those created before the cutoff deleted, so a call stays
 * cheap when nothing is old enough yet.
 */
int64
idem_outbox_trim(int32 max_rows)
{
	OutboxScan	scan;
	OutboxSnapshot **snaps;
	int			nsnaps;
	Datum	   *ids;
	int			nids = 0;
	OutboxPos	pos;
	int64		deleted = 0;

	if (max_rows < 1)
		return 0;

	SPI_connect();
	idem_plan_execute(&trim_consumers_plan, NULL, NULL, false, 0);
	nsnaps = (int) SPI_processed;
	snaps = palloc(sizeof(OutboxSnapshot *) * Max(nsnaps, 1));
	for (int i = 0; i < nsnaps; i++)
	{
		bool		isnull;

		snaps[i] = snapshot_from_datum(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1, &isnull));
	}
	ids = palloc(sizeof(Datum) * max_rows);

	scan_begin(&scan);
	if (nsnaps == 0)
	{
		TimestampTz cutoff = GetCurrentTransactionStartTimestamp() -
		(TimestampTz) idem_outbox_retention_s * USECS_PER_SEC;
		int			looked = 0;

		scan_range(&scan, FullTransactionIdFromU64(0),
				   FullTransactionIdFromU64(PG_UINT64_MAX), false, 0);
		while (looked < max_rows && scan_next(&scan, &pos))
		{
			bool		isnull;
			Datum		created;

			CHECK_FOR_INTERRUPTS();
			if (!scan_fetch(&scan))
				continue;
			looked++;
			created = slot_getattr(scan.slot, scan.att.created_at, &isnull);
			if (!isnull && DatumGetTimestampTz(created) < cutoff)
				ids[nids++] = Int64GetDatum(pos.id);
		}
	}
	else
	{
		FullTransactionId limit = snaps[0]->xmax;

		for (int i = 1; i < nsnaps; i++)
			if (FullTransactionIdPrecedes(snaps[i]->xmax, limit))
				limit = snaps[i]->xmax;

		scan_range(&scan, FullTransactionIdFromU64(0),
				   FullTransactionIdFromU64(U64FromFullTransactionId(limit) - 1),
				   false, 0);
		while (nids < max_rows && scan_next(&scan, &pos))
		{
			bool		finished = true;

			CHECK_FOR_INTERRUPTS();
			for (int i = 0; i < nsnaps && finished; i++)
				finished = snapshot_sees(snaps[i], pos.xid);
			if (finished && scan_fetch(&scan))
				ids[nids++] = Int64GetDatum(pos.id);
		}
	}
	scan_end(&scan);

	if (nids > 0)
	{
		Datum		values[1];

		values[0] = PointerGetDatum(construct_array(ids, nids, INT8OID, sizeof(int64),
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		idem_plan_execute(&trim_delete_plan, values, NULL, false, 0);
		deleted = (int64) SPI_processed;
	}
	SPI_finish();
	return deleted;
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
