/*-------------------------------------------------------------------------
 *
 * outbox_wal.c
 *	  The outbox's WAL path: under idem.outbox_wal = 'also' or 'only',
 *	  idem.emit() writes its event as a transactional logical decoding
 *	  message, so that Debezium or any other logical decoding client ships
 *	  it with no polling.
 *
 * A logical decoding message (replication/logical/message.c) is a WAL
 * record carrying a prefix and opaque content; "transactional" ones belong
 * to the (sub)transaction that wrote them: LogLogicalMessage() assigns it an
 * xid, and the reorder buffer hands the message to the output plugin with
 * the transaction's other changes, at its commit (or prepare), and never if
 * it, or the subtransaction that wrote the message, rolls back.  That is the
 * outbox's guarantee -- the event exists if and only if its transaction
 * commits -- with the WAL as the only storage.  test_decoding prints such a
 * message as "message: transactional: 1 prefix: pg_idem.outbox, sz: N
 * content: ..." (contrib/test_decoding/test_decoding.c, pg_decode_message);
 * pgoutput sends it as a protocol 'M' message when its option messages is
 * true (pgoutput.c, pgoutput_message; proto.c, logicalrep_write_message),
 * and Debezium's PostgreSQL connector turns it into a record that its
 * DecodeLogicalDecodingMessageContent transform parses as JSON (content
 * starting with '{') for the outbox EventRouter.
 *
 * The content is one JSON object (docs/outbox-wal.md):
 *
 *   {"id": 42, "topic": "orders", "key": "o-1", "payload": {...},
 *    "headers": {...} | null, "created_at": "...", "xid": 755}
 *
 * with id, topic, key, payload, headers and created_at as next_batch()
 * returns them and xid the writing top-level transaction (idem.outbox.xid).
 *
 * Decisions, and why:
 *
 * - wal_level below logical: setting 'also' or 'only' is refused.  Messages
 *   are WAL-logged at any wal_level, but no logical slot can exist then,
 *   and a slot created after a restart with wal_level = logical starts at
 *   its creation: what is written now can never be decoded.  wal_level is
 *   fixed for the life of the server, so refusing the SET is definitive;
 *   a value from postgresql.conf, ALTER DATABASE or ALTER ROLE that fails
 *   the check is ignored with a WARNING, and emit() then stores events in
 *   idem.outbox as under 'off', where none is lost.
 *
 * - 'only' and table consumers: next_batch() reads idem.outbox, so an
 *   event written to the WAL only would silently never reach a consumer
 *   subscribed to its topic.  emit() refuses such an event.  A consumer
 *   being created concurrently is owed the events of every transaction
 *   running at its subscribe(); so, like the trimmer, emit() takes the
 *   object lock on idem.consumers in a mode that conflicts with
 *   subscribe()'s (outbox.h) and holds it to the end of the transaction:
 *   a subscribe() in progress is waited for (and then seen), and one that
 *   comes later waits for this transaction, whose events its start
 *   snapshot then counts as before its time.
 *
 * - 'only' returns the id the row would have had, drawn from the same
 *   identity sequence, so ids never collide between the two paths, and the
 *   message's id is what the caller got.
 *
 * - 'off' costs emit() one comparison: nothing here runs.
 *
 * IDENTIFICATION
 *	  src/outbox_wal.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "compat.h"
#include "outbox.h"
#include "outbox_wal.h"

int			idem_outbox_wal = IDEM_OUTBOX_WAL_OFF;

static const struct config_enum_entry outbox_wal_options[] = {
	{"off", IDEM_OUTBOX_WAL_OFF, false},
	{"also", IDEM_OUTBOX_WAL_ALSO, false},
	{"only", IDEM_OUTBOX_WAL_ONLY, false},
	{NULL, 0, false}
};

static bool check_outbox_wal(int *newval, void **extra, GucSource source);
static const char *wal_level_name(void);
static bool consumer_reads_topic(Relation rel, TupleTableSlot *slot,
								 AttrNumber topics_att, text *topic);

/*
 * Define idem.outbox_wal.  USERSET: a database, a role or one transaction
 * may choose the WAL path; no value can lose an event (see the file
 * header), so no privilege is needed to choose.
 */
void
idem_outbox_wal_define_settings(void)
{
	DefineCustomEnumVariable("idem.outbox_wal",
							 "Whether idem.emit() also, or only, writes each event as a transactional logical decoding message.",
							 "off: a row of idem.outbox; also: the row and a message with prefix pg_idem.outbox; only: the message alone. Needs wal_level = logical.",
							 &idem_outbox_wal,
							 IDEM_OUTBOX_WAL_OFF,
							 outbox_wal_options,
							 PGC_USERSET,
							 0,
							 check_outbox_wal, NULL, NULL);
}

/* The server's wal_level, as postgresql.conf spells it. */
static const char *
wal_level_name(void)
{
	switch (wal_level)
	{
		case WAL_LEVEL_MINIMAL:
			return "minimal";
		case WAL_LEVEL_REPLICA:
			return "replica";
		default:
			return "logical";
	}
}

/*
 * Refuse 'also' and 'only' unless wal_level = logical: messages written
 * below it can never be decoded (file header).
 */
static bool
check_outbox_wal(int *newval, void **extra, GucSource source)
{
	if (*newval != IDEM_OUTBOX_WAL_OFF && !XLogLogicalInfoActive())
	{
		GUC_check_errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE);
		GUC_check_errmsg("idem.outbox_wal requires wal_level = logical");
		GUC_check_errdetail("wal_level is \"%s\": no logical decoding could ever read the messages idem.emit() would write.",
							wal_level_name());
		GUC_check_errhint("Set wal_level = logical in postgresql.conf and restart the server, or keep idem.outbox_wal = 'off'.");
		return false;
	}
	return true;
}

/* Does the consumer in slot read topic?  (topics NULL: every topic) */
static bool
consumer_reads_topic(Relation rel, TupleTableSlot *slot, AttrNumber topics_att,
					 text *topic)
{
	bool		isnull;
	Datum		topics = slot_getattr(slot, topics_att, &isnull);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			len = VARSIZE_ANY_EXHDR(topic);

	if (isnull)
		return true;
	deconstruct_array(DatumGetArrayTypeP(topics), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		text	   *t = DatumGetTextPP(elems[i]);

		if (!nulls[i] && VARSIZE_ANY_EXHDR(t) == len &&
			memcmp(VARDATA_ANY(t), VARDATA_ANY(topic), len) == 0)
			return true;
	}
	return false;
}

/*
 * Under 'only': refuse an event that a subscribed consumer would never see
 * (next_batch() reads idem.outbox), and keep a consumer of it from being
 * created until this transaction ends (file header).  The table is read
 * directly, not through SQL: emit()'s callers have no privilege on it, and
 * it holds a handful of rows.
 */
void
idem_outbox_wal_check_only(text *topic)
{
	Oid			nsp = get_namespace_oid("idem", false);
	Oid			relid = get_relname_relid("consumers", nsp);
	Relation	rel;
	TupleDesc	desc;
	AttrNumber	topics_att = InvalidAttrNumber;
	Snapshot	snapshot;
	TableScanDesc scan;
	TupleTableSlot *slot;
	bool		read = false;

	if (!OidIsValid(relid))
		elog(ERROR, "pg_idem: table idem.consumers does not exist");

	/* before reading: a subscribe() in progress is waited for, then seen */
	LockDatabaseObject(RelationRelationId, relid, 0, CONSUMER_TRIM_LOCK);

	rel = table_open(relid, AccessShareLock);
	desc = RelationGetDescr(rel);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), "topics") == 0)
			topics_att = a->attnum;
	}
	if (topics_att == InvalidAttrNumber)
		elog(ERROR, "pg_idem: table idem.consumers has no column \"topics\"");

	/* the latest snapshot, even under REPEATABLE READ: a consumer that committed after ours began is owed */
	snapshot = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snapshot, 0, NULL);
	slot = table_slot_create(rel, NULL);
	while (!read && table_scan_getnextslot(scan, ForwardScanDirection, slot))
		read = consumer_reads_topic(rel, slot, topics_att, topic);
	ExecDropSingleTupleTableSlot(slot);
	table_endscan(scan);
	UnregisterSnapshot(snapshot);
	table_close(rel, AccessShareLock);

	if (read)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("idem.outbox_wal = 'only' would hide this event from a consumer of topic \"%s\"",
						text_to_cstring(topic)),
				 errdetail("A subscribed consumer reads topic \"%s\" with idem.next_batch(), which sees only events stored in idem.outbox.",
						   text_to_cstring(topic)),
				 errhint("Set idem.outbox_wal = 'also' to write both, or unsubscribe the consumers of this topic once the WAL path replaces them.")));
}

/*
 * Write the event as a transactional logical decoding message of the
 * current (sub)transaction: decoded at its commit, never after a rollback
 * of it or of the subtransaction (file header).
 */
void
idem_outbox_wal_log(int64 id, text *topic, Datum key, bool key_isnull,
					Datum payload, Datum headers, bool headers_isnull)
{
	StringInfoData buf;
	Jsonb	   *jb;
	char	   *ts;

	/* the check hook refuses this; a message nobody can decode is an event lost */
	if (!XLogLogicalInfoActive())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("idem.outbox_wal requires wal_level = logical"),
				 errdetail("wal_level is \"%s\".", wal_level_name())));

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"id\": " INT64_FORMAT ", \"topic\": ", id);
	escape_json(&buf, text_to_cstring(topic));
	appendStringInfoString(&buf, ", \"key\": ");
	if (key_isnull)
		appendStringInfoString(&buf, "null");
	else
		escape_json(&buf, TextDatumGetCString(key));
	appendStringInfoString(&buf, ", \"payload\": ");
	jb = DatumGetJsonbP(payload);
	JsonbToCString(&buf, &jb->root, VARSIZE(jb));
	appendStringInfoString(&buf, ", \"headers\": ");
	if (headers_isnull)
		appendStringInfoString(&buf, "null");
	else
	{
		jb = DatumGetJsonbP(headers);
		JsonbToCString(&buf, &jb->root, VARSIZE(jb));
	}
	/* created_at as idem.outbox has it: the transaction's start */
	ts = JsonEncodeDateTime(NULL,
							TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
							TIMESTAMPTZOID, NULL);
	appendStringInfo(&buf, ", \"created_at\": \"%s\", \"xid\": " UINT64_FORMAT "}",
					 ts, U64FromFullTransactionId(GetTopFullTransactionId()));

	(void) idem_log_logical_message(IDEM_OUTBOX_WAL_PREFIX, buf.data, buf.len, true);
	pfree(buf.data);
}
