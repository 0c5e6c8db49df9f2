/*-------------------------------------------------------------------------
 *
 * outbox.h
 *	  What the transactional outbox (outbox.c) offers the other modules.
 *
 * IDENTIFICATION
 *	  src/outbox.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_OUTBOX_H
#define IDEM_OUTBOX_H

#include "postgres.h"

/* Delete up to max_rows outbox events that every subscribed consumer has finished, or, with no subscribers, older than idem.outbox_retention; returns how many.  Call inside a transaction; connects to SPI itself. */
extern int64 idem_outbox_trim(int32 max_rows);

#endif							/* IDEM_OUTBOX_H */
