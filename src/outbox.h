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

/* Argument argno as a topic or consumer name: not NULL, 1..255 bytes, else an error naming it as what. */
extern text *idem_outbox_name_arg(FunctionCallInfo fcinfo, int argno, const char *what);

/* Delete up to max_rows outbox events that every subscribed consumer has finished, or, with no subscribers, older than idem.outbox_retention; returns how many.  Call inside a transaction; connects to SPI itself. */
extern int64 idem_outbox_trim(int32 max_rows);

#endif							/* IDEM_OUTBOX_H */
