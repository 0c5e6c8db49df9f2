/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  What the outbox's consuming side (outbox.c) offers the other modules.
 *
 * IDENTIFICATION
 *	  src/outbox.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_OUTBOX_H
#define IDEM_OUTBOX_H

#include "postgres.h"

#include "fmgr.h"
#include "storage/lockdefs.h"

/*
 * Modes of the object lock on idem.consumers (LockDatabaseObject on its
 * relid; outbox.c explains it).  subscribe() holds CONSUMER_CREATE_LOCK until
 * it commits; the trimmer takes CONSUMER_TRIM_LOCK; an emit() that writes
 * its event to the WAL only (outbox_wal.c) holds CONSUMER_TRIM_LOCK too: like
 * the trimmer, it must not miss a consumer being created, and it conflicts
 * with creators only.
 */
#define CONSUMER_CREATE_LOCK	RowExclusiveLock
#define CONSUMER_TRIM_LOCK		ShareLock

/*
 * The outbox ring (src/sql/40_outbox.sql): idem.outbox is partitioned by
 * LIST ((id / IDEM_OUTBOX_SEGMENT_IDS) % IDEM_OUTBOX_LEAVES); run r of
 * IDEM_OUTBOX_SEGMENT_IDS consecutive ids lives in leaf idem.outbox_<r % N>.
 * The install and upgrade scripts spell out the same numbers.
 */
#define IDEM_OUTBOX_SEGMENT_IDS		INT64CONST(65536)
#define IDEM_OUTBOX_LEAVES			8

/* The leaf (0..N-1) of an id, as the partition key computes it; -1: none. */
static inline int
idem_outbox_leaf_of(int64 id)
{
	int64		k = (id / IDEM_OUTBOX_SEGMENT_IDS) % IDEM_OUTBOX_LEAVES;

	return k < 0 ? -1 : (int) k;
}

/* Argument argno as a topic or consumer name: not NULL, 1..255 bytes, else an error naming it as what. */
extern text *idem_outbox_name_arg(FunctionCallInfo fcinfo, int argno, const char *what);

/* Remove outbox events that every subscribed consumer has finished, or, with no subscribers, older than idem.outbox_retention: whole leaves by TRUNCATE, and up to max_rows rows by DELETE in leaves that hold two laps of the ring; returns how many.  Call inside a transaction; connects to SPI itself. */
extern int64 idem_outbox_trim(int32 max_rows);

#endif							/* IDEM_OUTBOX_H */
