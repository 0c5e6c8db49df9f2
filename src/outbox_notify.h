/*-------------------------------------------------------------------------
 *
 * outbox_notify.h
 *	  The wake-up idem.emit() sends: NOTIFY idem_outbox, with the topic,
 *	  when the emitting transaction commits (outbox_notify.c).
 *
 * IDENTIFICATION
 *	  src/outbox_notify.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_OUTBOX_NOTIFY_H
#define IDEM_OUTBOX_NOTIFY_H

#include "postgres.h"

/* The channel emit() notifies; the payload is the topic. */
#define OUTBOX_CHANNEL "idem_outbox"

/* idem.outbox_notify: does emit() notify channel idem_outbox on commit? */
extern bool idem_outbox_notify;

/* Define idem.outbox_notify; called once from _PG_init. */
extern void idem_outbox_notify_define_settings(void);

/*
 * Request the shared state that lets emitters skip the NOTIFY while no
 * session listens, and install the hooks that maintain it.  Called from
 * _PG_init only while the library is being preloaded; without preload,
 * idem_outbox_notify_load() attaches the same state after startup.
 */
extern void idem_outbox_notify_preload(void);

/*
 * Loaded on first use (not preloaded): install the hook that sees LISTEN
 * and CREATE EXTENSION in this backend.  Called from _PG_init.
 */
extern void idem_outbox_notify_load(void);

/*
 * Without preload, before next_batch() and subscribe() read: make sure no
 * listener of this database can miss an event that committed without
 * notifying.  Does nothing when the library is preloaded.  Returns true
 * when the reader reads with its transaction's snapshot (REPEATABLE READ,
 * SERIALIZABLE) while some backend of this database listens: commits that
 * snapshot cannot see may have stayed silent, and a reader that finds
 * nothing notifies their topics itself (idem_outbox_notify_on_behalf).
 */
extern bool idem_outbox_notify_before_read(void);

/* Notify channel idem_outbox with this topic when this transaction commits. */
extern void idem_outbox_notify_on_behalf(const char *topic);

/* Without preload: say so (NOTICE), once per session. */
extern void idem_preload_notice(bool creating);

/*
 * Notify channel idem_outbox with this topic when the current transaction
 * commits (not if it, or the subtransaction calling this, rolls back); once
 * per topic per transaction, in the order topics were first emitted.
 */
extern void idem_outbox_notify_on_commit(const char *topic);

#endif							/* IDEM_OUTBOX_NOTIFY_H */
