/*-------------------------------------------------------------------------
 *
 * pg_idem.h
 *	  Declarations shared by every pg_idem module: the extension's own
 *	  SQLSTATEs, its settings, and the limits of the public contract.
 *
 * The SQLSTATEs are part of the public contract (SPEC.md section 5) and are
 * defined here once, so that an error code cannot drift between modules.
 *
 * IDENTIFICATION
 *	  src/pg_idem.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_IDEM_H
#define PG_IDEM_H

#include "postgres.h"

#include "utils/elog.h"

/* Idempotency keys */
#define ERRCODE_IDEM_KEY_MISMATCH		MAKE_SQLSTATE('I','D','0','0','1')
#define ERRCODE_IDEM_TOKEN_STALE		MAKE_SQLSTATE('I','D','0','0','2')
#define ERRCODE_IDEM_KEY_UNKNOWN		MAKE_SQLSTATE('I','D','0','0','3')

/* Version-checked updates */
#define ERRCODE_IDEM_VERSION_CONFLICT	MAKE_SQLSTATE('I','D','0','1','0')
#define ERRCODE_IDEM_VERSION_REQUIRED	MAKE_SQLSTATE('I','D','0','1','1')

/* Transactional outbox */
#define ERRCODE_IDEM_CONSUMER_UNKNOWN	MAKE_SQLSTATE('I','D','0','2','0')
#define ERRCODE_IDEM_BATCH_NOT_OPEN		MAKE_SQLSTATE('I','D','0','2','1')

/* Invariants */
#define ERRCODE_IDEM_INVARIANT_VIOLATION	MAKE_SQLSTATE('I','D','0','3','0')

/* Keys, scopes, topics and consumer names are 1..255 bytes (scope may be empty). */
#define IDEM_MAX_NAME_BYTES 255

/* Settings (src/pg_idem.c); durations are in the GUC's own unit. */
extern int	idem_ttl_s;					/* idem.ttl, seconds */
extern int	idem_lease_ms;				/* idem.lease, milliseconds */
extern int	idem_outbox_retention_s;	/* idem.outbox_retention, seconds */
extern int	idem_maintenance_interval_s;	/* idem.maintenance_interval, seconds; 0 = off */
extern char *idem_maintenance_database;	/* idem.maintenance_database */

#endif							/* PG_IDEM_H */
