/*-------------------------------------------------------------------------
 *
 * keys.h
 *	  Idempotency keys: the entry point other modules call for maintenance.
 *
 * The SQL-callable functions (idem.reserve() and its siblings) are reached
 * through the fmgr; only what another C module needs is declared here.
 *
 * IDENTIFICATION
 *	  src/keys.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_KEYS_H
#define IDEM_KEYS_H

#include "postgres.h"

/* Delete up to max_rows expired keys; returns how many.  Call inside a transaction; connects to SPI itself. */
extern int64 idem_keys_purge(int32 max_rows);

#endif							/* IDEM_KEYS_H */
