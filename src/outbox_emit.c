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
 * Like keys.c's hot paths, emit() runs no SQL: it opens idem.outbox and the
 * leaf the row belongs in through direct_write.c, which locks both before
 * trusting what it cached about them.
 * It is not SECURITY DEFINER and needs no pinned search_path; EXECUTE on it
 * and the current user's grant of the topic (privileges.c, a cached lookup)
 * are the gates, and application roles keep having no privilege on the
 * table itself.  The rule of direct_write.c holds: the row written is the
 * one the INSERT would write.  When idem.outbox is no longer as the
 * extension created it (a column, default, CHECK constraint, trigger, rule
 * or row security added), emit() runs that INSERT instead, as the table's
 * owner, so everything the user added applies.  Logical decoding (Debezium)
 * sees every event either way: the heap insert is WAL-logged as any other.
 *
 * The notification on commit is outbox_notify.c's business; the WAL path
 * (idem.outbox_wal = 'also' or 'only': the event as a logical decoding
 * message) is outbox_wal.c's.
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
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/xid8.h"

#include "compat.h"
#include "direct_write.h"
#include "outbox.h"
#include "outbox_notify.h"
#include "outbox_wal.h"
#include "pg_idem.h"
#include "privileges.h"
#include "spi_util.h"

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

/*
 * The statement emit() imitates names topic, key, payload and headers; id,
 * created_at and xid come from their defaults, which are computed here:
 * the identity sequence, now() and pg_current_xact_id().
 */
static const DirectColumn outbox_columns[OC_N] = {
	{"id", INT8OID, InvalidOid, true, DC_IDENTITY, InvalidOid, false},
	{"topic", TEXTOID, DEFAULT_COLLATION_OID, true, DC_WRITTEN, InvalidOid, false},
	{"key", TEXTOID, DEFAULT_COLLATION_OID, false, DC_WRITTEN, InvalidOid, false},
	{"payload", JSONBOID, InvalidOid, true, DC_WRITTEN, InvalidOid, false},
	{"headers", JSONBOID, InvalidOid, false, DC_WRITTEN, InvalidOid, false},
	{"created_at", TIMESTAMPTZOID, InvalidOid, true, DC_DEFAULT_FUNC, F_NOW, false},
	{"xid", XID8OID, InvalidOid, true, DC_DEFAULT_FUNC, F_PG_CURRENT_XACT_ID, false},
};

static DirectTable outbox_table = {"outbox", OC_N, outbox_columns,
	IDEM_OUTBOX_LEAVES, IDEM_OUTBOX_SEGMENT_IDS};

/*
 * The executor's path, for an idem.outbox that is not as the extension
 * created it (direct_write.c): the statement itself, run with the rights of
 * the table's owner and a pinned search_path -- what emit() ran in 0.1.0,
 * when it was SECURITY DEFINER.  Defaults, constraints, triggers, rules and
 * row security then apply exactly as to that INSERT.
 */
static IdemPlan emit_insert_plan = {
	"INSERT INTO idem.outbox (topic, key, payload, headers) "
	"VALUES ($1, $2, $3, $4) RETURNING id",
	4, {TEXTOID, TEXTOID, JSONBOID, JSONBOID}
};

/*
 * The same when the id is already drawn (the parent is pristine, one leaf
 * is not): the identity's value, given explicitly, is the row the INSERT
 * above would have written, and tuple routing takes it to that leaf.
 */
static IdemPlan emit_insert_id_plan = {
	"INSERT INTO idem.outbox (topic, key, payload, headers, id) "
	"OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5) RETURNING id",
	5, {TEXTOID, TEXTOID, JSONBOID, JSONBOID, INT8OID}
};

/* id < 0: the INSERT draws it (emit_insert_plan); else emit_insert_id_plan */
static int64
outbox_insert_by_executor(Oid owner, int64 drawn_id, text *topic, Datum key,
						  bool key_isnull, Datum payload, Datum headers,
						  bool headers_isnull, bool *written)
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	int64		id;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);

	values[0] = PointerGetDatum(topic);
	values[1] = key;
	nulls[1] = key_isnull ? 'n' : ' ';
	values[2] = payload;
	values[3] = headers;
	nulls[3] = headers_isnull ? 'n' : ' ';
	values[4] = Int64GetDatum(drawn_id);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_idem: SPI_connect failed");
	/* no row limit: a limit would stop the INSERT before its AFTER STATEMENT triggers */
	idem_plan_execute(drawn_id < 0 ? &emit_insert_plan : &emit_insert_id_plan,
					  values, nulls, false, 0);
	/* a BEFORE trigger may have dropped the row: the INSERT returns none */
	*written = (SPI_processed == 1);
	id = *written ? DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull)) : 0;
	SPI_finish();

	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return id;
}

/*
 * Insert one event row and its index entries; returns its id.  The row is
 * visible to the transaction's later commands, as an INSERT's would be.
 *
 * idem.outbox is partitioned (the ring, src/sql/40_outbox.sql): the parent
 * is locked first, as the INSERT's executor does, then the id is drawn,
 * and the row goes into the leaf that tuple routing would choose for it
 * (idem_outbox_leaf_of, the partition key's own arithmetic), locked with
 * RowExclusiveLock until commit like the INSERT's target partition.  That
 * lock is also what trimming relies on: while it is held, the leaf cannot
 * be truncated (src/outbox.c).
 */
static int64
outbox_insert(text *topic, Datum key, bool key_isnull, Datum payload,
			  Datum headers, bool headers_isnull, bool *written)
{
	const int  *col = outbox_table.attidx;
	EState	   *estate;
	ResultRelInfo *rri;
	Relation	parent;
	Relation	rel;
	TupleTableSlot *slot;
	int64		id;

	parent = idem_direct_open(&outbox_table, RowExclusiveLock);
	if (!outbox_table.pristine)
	{
		Oid			owner = parent->rd_rel->relowner;

		table_close(parent, NoLock);
		return outbox_insert_by_executor(owner, -1, topic, key, key_isnull,
										 payload, headers, headers_isnull,
										 written);
	}
	id = nextval_internal(outbox_table.identity_seq, false);
	if (!outbox_table.partitioned)
		rel = parent;			/* 0.1's plain table, until the update */
	else
		rel = idem_direct_open_leaf(&outbox_table, parent, idem_outbox_leaf_of(id),
									RowExclusiveLock);
	if (rel == NULL)
	{
		Oid			owner = parent->rd_rel->relowner;

		table_close(parent, NoLock);
		return outbox_insert_by_executor(owner, id, topic, key, key_isnull,
										 payload, headers, headers_isnull,
										 written);
	}
	*written = true;

	/* ExecInsert's steps for a table without triggers or constraints */
	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	/* no range table: the index routine consults none */
	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);
	slot = table_slot_create(rel, &estate->es_tupleTable);

	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, RelationGetDescr(rel)->natts * sizeof(bool));
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
	if (rel != parent)
		table_close(rel, NoLock);
	table_close(parent, NoLock);
	FreeExecutorState(estate);
	return id;
}

/*
 * idem.outbox_wal = 'only': the event as a logical decoding message alone,
 * under the id its row would have had (outbox_wal.c says why).  No row, so
 * nothing for next_batch() and nothing to notify.
 */
static int64
outbox_emit_wal_only(text *topic, Datum key, bool key_isnull, Datum payload,
					 Datum headers, bool headers_isnull)
{
	Relation	rel;
	Oid			seq;
	int64		id;

	idem_outbox_wal_check_only(topic);

	rel = idem_direct_open(&outbox_table, AccessShareLock);
	seq = outbox_table.identity_seq;
	table_close(rel, NoLock);
	if (!OidIsValid(seq))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("idem.outbox_wal = 'only' needs idem.outbox.id to be an identity column"),
				 errdetail("Table idem.outbox %s.", outbox_table.deviation)));
	id = nextval_internal(seq, false);

	idem_outbox_wal_log(id, topic, key, key_isnull, payload, headers, headers_isnull);
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
	bool		written;

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

	/* only to a topic granted to the current user (privileges.c) */
	idem_check_emit_topic(topic);

	/* as the executor refuses an INSERT (also on a standby) */
	PreventCommandIfReadOnly("idem.emit()");
	PreventCommandIfParallelMode("idem.emit()");

	if (unlikely(idem_outbox_wal == IDEM_OUTBOX_WAL_ONLY))
		PG_RETURN_INT64(outbox_emit_wal_only(topic,
											 PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2), PG_ARGISNULL(2),
											 PG_GETARG_DATUM(1),
											 PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3), PG_ARGISNULL(3)));

	id = outbox_insert(topic,
					   PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2), PG_ARGISNULL(2),
					   PG_GETARG_DATUM(1),
					   PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3), PG_ARGISNULL(3),
					   &written);

	/*
	 * A BEFORE INSERT trigger the user put on idem.outbox dropped the row:
	 * as the INSERT ... RETURNING id, no event and no id (and nothing to
	 * notify).
	 */
	if (!written)
		PG_RETURN_NULL();

	/*
	 * 'also': the message after the row, in the same (sub)transaction.  It
	 * carries emit()'s arguments: a BEFORE trigger that changes the row (on
	 * the executor's path) does not change the message.
	 */
	if (unlikely(idem_outbox_wal == IDEM_OUTBOX_WAL_ALSO))
		idem_outbox_wal_log(id, topic,
							PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2), PG_ARGISNULL(2),
							PG_GETARG_DATUM(1),
							PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3), PG_ARGISNULL(3));

	if (idem_outbox_notify)
		idem_outbox_notify_on_commit(text_to_cstring(topic));

	PG_RETURN_INT64(id);
}
