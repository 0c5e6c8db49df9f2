/*-------------------------------------------------------------------------
 *
 * outbox_emit.c
 *	  idem.emit(): write an event into idem.outbox in the caller's
 *	  transaction, so that it exists if and only if that transaction
 *	  commits.
 *
 * emit() replaces an INSERT that applications would otherwise write, and
 * is called once per business transaction, so it must cost what that INSERT
 * costs.  Through a planned statement it could not: the INSERT's executor
 * start-up would come on top of the statement calling emit().  So the row
 * is written the way the executor writes an INSERT's row -- a heap insert
 * and the executor's own index routine, under the current command id --
 * with the columns' defaults computed here:
 *
 *   id          the next value of the identity sequence idem.outbox_id_seq
 *   created_at  now() (the transaction's start, as the column default)
 *   xid         the top-level transaction's xid8 (pg_current_xact_id())
 *
 * Like keys.c's hot paths, emit() runs no SQL: it finds idem.outbox and its
 * sequence once, by schema-qualified name, and keeps their OIDs until they
 * change.  It is not SECURITY DEFINER and needs no pinned search_path;
 * EXECUTE on it is the only gate, and application roles keep having no
 * privilege on the table itself.  What an INSERT would do and this does
 * not: fire triggers and check CHECK constraints or row security on
 * idem.outbox.  The extension defines none there, and the table is not the
 * application's to change; logical decoding (Debezium) still sees every
 * event, since the heap insert is WAL-logged as any other.
 *
 * The notification on commit is outbox_notify.c's business.
 *
 * IDENTIFICATION
 *	  src/outbox_emit.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/xid8.h"

#include "compat.h"
#include "outbox.h"
#include "outbox_notify.h"
#include "pg_idem.h"

/* idem.outbox's columns, in the order emit() fills them. */
typedef enum OutboxColumn
{
	OC_ID,
	OC_TOPIC,
	OC_KEY,
	OC_PAYLOAD,
	OC_HEADERS,
	OC_CREATED_AT,
	OC_XID,
	OC_N
} OutboxColumn;

static const char *const outbox_col_names[OC_N] = {
	"id", "topic", "key", "payload", "headers", "created_at", "xid"
};

static const Oid outbox_col_types[OC_N] = {
	INT8OID, TEXTOID, TEXTOID, JSONBOID, JSONBOID, TIMESTAMPTZOID, XID8OID
};

/* What emit() looks up once: the table, its id sequence, its columns. */
typedef struct OutboxCatalog
{
	bool		valid;
	Oid			relid;
	Oid			seqid;
	int			col[OC_N];		/* 0-based attribute index of each column */
} OutboxCatalog;

static OutboxCatalog outbox_catalog;
static bool outbox_callback_registered = false;

/* Relcache callback: idem.outbox or its sequence changed (or everything did). */
static void
outbox_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == outbox_catalog.relid ||
		relid == outbox_catalog.seqid)
		outbox_catalog.valid = false;
}

/*
 * Find idem.outbox, its columns and its id sequence by name (never through
 * search_path), and check that every column has the type written here.
 * Any other column must be nullable: emit() leaves it NULL.
 */
static void
outbox_catalog_load(void)
{
	Oid			nsp = get_namespace_oid("idem", false);
	Oid			relid = get_relname_relid("outbox", nsp);
	Oid			seqid = get_relname_relid("outbox_id_seq", nsp);

	if (!OidIsValid(relid) || !OidIsValid(seqid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("pg_idem is not installed correctly: idem.outbox or idem.outbox_id_seq is missing"),
				 errhint("Run ALTER EXTENSION pg_idem UPDATE, or drop and create the extension.")));

	for (int c = 0; c < OC_N; c++)
	{
		AttrNumber	attnum = get_attnum(relid, outbox_col_names[c]);
		Oid			typid;

		if (attnum == InvalidAttrNumber)
			elog(ERROR, "pg_idem: idem.outbox has no column \"%s\"", outbox_col_names[c]);
		typid = get_atttype(relid, attnum);
		if (typid != outbox_col_types[c])
			elog(ERROR, "pg_idem: column idem.outbox.%s has type %s, expected %s",
				 outbox_col_names[c], format_type_be(typid),
				 format_type_be(outbox_col_types[c]));
		outbox_catalog.col[c] = attnum - 1;
	}
	outbox_catalog.relid = relid;
	outbox_catalog.seqid = seqid;
	outbox_catalog.valid = true;
}

static void
outbox_catalog_ensure(void)
{
	if (!outbox_callback_registered)
	{
		CacheRegisterRelcacheCallback(outbox_relcache_callback, (Datum) 0);
		outbox_callback_registered = true;
	}
	if (!outbox_catalog.valid)
		outbox_catalog_load();
}

/*
 * Insert one event row and its index entries; returns its id.  The row is
 * visible to the transaction's later commands, as an INSERT's would be.
 */
static int64
outbox_insert(text *topic, Datum key, bool key_isnull, Datum payload,
			  Datum headers, bool headers_isnull)
{
	const int  *col = outbox_catalog.col;
	EState	   *estate;
	ResultRelInfo *rri;
	Relation	rel;
	TupleTableSlot *slot;
	int64		id;

	estate = CreateExecutorState();
	rel = table_open(outbox_catalog.relid, RowExclusiveLock);
	rri = makeNode(ResultRelInfo);
	/* no range table: the index routine consults none */
	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);
	slot = table_slot_create(rel, &estate->es_tupleTable);

	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, RelationGetDescr(rel)->natts * sizeof(bool));
	id = nextval_internal(outbox_catalog.seqid, false);
	slot->tts_values[col[OC_ID]] = Int64GetDatum(id);
	slot->tts_values[col[OC_TOPIC]] = PointerGetDatum(topic);
	slot->tts_values[col[OC_KEY]] = key;
	slot->tts_values[col[OC_PAYLOAD]] = payload;
	slot->tts_values[col[OC_HEADERS]] = headers;
	slot->tts_values[col[OC_CREATED_AT]] =
		TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	slot->tts_values[col[OC_XID]] =
		FullTransactionIdGetDatum(GetTopFullTransactionId());
	for (int c = 0; c < OC_N; c++)
		slot->tts_isnull[col[c]] = false;
	slot->tts_isnull[col[OC_KEY]] = key_isnull;
	slot->tts_isnull[col[OC_HEADERS]] = headers_isnull;
	ExecStoreVirtualTuple(slot);

	table_tuple_insert(rel, slot, GetCurrentCommandId(true), 0, NULL);
	if (rri->ri_NumIndices > 0)
		idem_insert_index_tuples(rri, slot, estate, false, false, NULL, NIL, false);

	ExecResetTupleTable(estate->es_tupleTable, false);
	ExecCloseIndices(rri);
	table_close(rel, NoLock);
	FreeExecutorState(estate);
	return id;
}

/*
 * idem.emit(topic, payload, key, headers): insert the event in the caller's
 * transaction and have its topic notified when that transaction commits
 * (outbox_notify.c: once per topic per transaction, only while some
 * session listens).  Returns the event's id.
 */
PG_FUNCTION_INFO_V1(idem_emit);
Datum
idem_emit(PG_FUNCTION_ARGS)
{
	text	   *topic = idem_outbox_name_arg(fcinfo, 0, "topic");
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
	}

	/* as the executor refuses an INSERT (also on a standby) */
	PreventCommandIfReadOnly("idem.emit()");
	PreventCommandIfParallelMode("idem.emit()");

	outbox_catalog_ensure();
	id = outbox_insert(topic,
					   PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2), PG_ARGISNULL(2),
					   PG_GETARG_DATUM(1),
					   PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3), PG_ARGISNULL(3));

	if (idem_outbox_notify)
		idem_outbox_notify_on_commit(text_to_cstring(topic));

	PG_RETURN_INT64(id);
}
