/*-------------------------------------------------------------------------
 *
 * outbox_wal.h
 *	  The outbox's WAL path: idem.emit() writing its event as a
 *	  transactional logical decoding message (outbox_wal.c).
 *
 * IDENTIFICATION
 *	  src/outbox_wal.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_OUTBOX_WAL_H
#define IDEM_OUTBOX_WAL_H

#include "postgres.h"

/* The prefix of every message emit() writes (docs/outbox-wal.md). */
#define IDEM_OUTBOX_WAL_PREFIX "pg_idem.outbox"

/* idem.outbox_wal: where emit() writes an event */
typedef enum IdemOutboxWal
{
	IDEM_OUTBOX_WAL_OFF,		/* a row of idem.outbox only */
	IDEM_OUTBOX_WAL_ALSO,		/* the row and a logical decoding message */
	IDEM_OUTBOX_WAL_ONLY		/* a logical decoding message only */
} IdemOutboxWal;

extern int	idem_outbox_wal;

/* Define idem.outbox_wal (from _PG_init). */
extern void idem_outbox_wal_define_settings(void);

/*
 * Under 'only': refuse the event if a subscribed consumer reads its topic,
 * and keep such a consumer from being created until this transaction ends.
 */
extern void idem_outbox_wal_check_only(text *topic);

/* Write the event as a transactional message of the current (sub)transaction. */
extern void idem_outbox_wal_log(int64 id, text *topic, Datum key, bool key_isnull,
								Datum payload, Datum headers, bool headers_isnull);

#endif							/* IDEM_OUTBOX_WAL_H */
