/*-------------------------------------------------------------------------
 *
 * maintenance.h
 *	  idem.maintain() and the background worker that runs it.
 *
 * IDENTIFICATION
 *	  src/maintenance.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_MAINTENANCE_H
#define IDEM_MAINTENANCE_H

#include "postgres.h"

/* Rows one batch of a maintenance task deletes at most. */
#define IDEM_MAINTAIN_BATCH_ROWS	1000

/*
 * Batches per task in one call of idem.maintain(), which runs in its
 * caller's transaction: the cap keeps that transaction short.  The worker
 * commits after every batch and is bounded by IDEM_WORKER_MAX_BATCHES.
 */
#define IDEM_MAINTAIN_MAX_BATCHES	100
#define IDEM_WORKER_MAX_BATCHES		1000

/* Register the maintenance worker; only from _PG_init during preload. */
extern void idem_maintenance_register(void);

/* The worker's entry point, named in its BackgroundWorker entry. */
extern PGDLLEXPORT void idem_maintenance_main(Datum main_arg) pg_attribute_noreturn();

#endif							/* IDEM_MAINTENANCE_H */
