/*-------------------------------------------------------------------------
 *
 * outbox_notify.c
 *	  The wake-up idem.emit() sends: NOTIFY idem_outbox, with the topic,
 *	  when the emitting transaction commits -- and only while some session
 *	  listens on that channel.
 *
 * Why not simply call Async_Notify() from emit: PostgreSQL commits every
 * transaction that sent a NOTIFY under one cluster-wide lock, taken in
 * PreCommit_Notify() and held until the transaction releases its locks,
 * after the commit record is flushed (and replicated, under synchronous
 * replication), so that the notification queue follows commit order.  Notifying transactions
 * therefore commit one at a time, never in a group: an INSERT that notifies
 * runs at about half the rate of the same INSERT that does not.  Paying that
 * when no relay listens (relays that poll, a burst before any relay has
 * connected, a bulk load) buys nothing, since a notification nobody listens
 * to is dropped anyway.
 *
 * So emit only records its topic, and the decision is taken at pre-commit,
 * as late as possible: if some backend has executed LISTEN idem_outbox, the
 * recorded topics are passed to Async_Notify() and PostgreSQL delivers them
 * exactly as if emit had sent them; if none has, nothing is sent.
 *
 * The race that decision must not lose: a relay runs LISTEN, then reads
 * (next_batch), then sleeps until woken.  An emitter that found nobody
 * listening, but commits after the relay's read, would leave the relay
 * asleep beside a committed event.  The two sides close it the way Dekker's
 * algorithm does, through shared memory:
 *
 *   emitter, at pre-commit:  publish my xid in my slot; barrier;
 *                            read the listener count -- if zero, commit
 *                            without notifying, and clear the slot after;
 *   listener, after LISTEN:  raise the listener count; barrier;
 *                            wait for every xid published in a slot.
 *
 * With a full barrier on each side, either the emitter sees the count
 * raised (and notifies), or the listener sees the emitter's xid (and waits
 * for that transaction to end before its LISTEN statement returns).  In the
 * second case the emitter's event is visible to every snapshot the relay
 * takes afterwards, and a notification from it would not have reached the
 * relay anyway: when a LISTEN commits, PostgreSQL skips the queued
 * notifications of transactions already finished by then.  Either way,
 * what the relay observes is what an unconditional NOTIFY gives it.
 * Notifications never cross databases, so a listener waits only for
 * emitters of its own database.
 *
 * The price is on the listener's side: a LISTEN idem_outbox may wait for
 * commits in progress in its database (a flush, or a synchronous standby's
 * answer), once per backend.  The wait shows as a lock wait on the
 * emitter's transaction id, and obeys lock_timeout and statement_timeout.
 *
 * The decision must also hold for emits that happen after it: another
 * library's pre-commit callback may still call emit().  The callbacks are
 * registered when the library loads, so that most others run before ours,
 * and an emit after the decision follows it (notify at once, or stay
 * silent under the xid already published); the first emit after a
 * pre-commit that had nothing to decide takes the decision itself.
 *
 * The listener count is deliberately pessimistic: a backend counts from its
 * first LISTEN idem_outbox until it exits (UNLISTEN and DISCARD do not lower
 * it), and the count is cluster-wide.  Counting too many only costs the
 * NOTIFY; counting too few would lose a wake-up, so nothing here ever does.
 *
 * Without shared_preload_libraries the same protocol runs, with two
 * differences.  The shared state is created by the first backend that
 * needs it, after startup: ShmemInitStruct() takes it from the slack the
 * main segment keeps (about 100 kB, CalculateShmemSize()); if that fails,
 * the backend stays detached and its emitters notify on every commit.  And
 * the hook that sees LISTEN exists only in backends that have loaded the
 * library, so a backend may listen without being counted: one that ran
 * LISTEN before its first call of a pg_idem function, or one that only
 * listens while another connection reads.  PostgreSQL's own list of
 * listening backends covers both: an emitter that finds our count at zero
 * also looks there, and notifies while any backend of its database is
 * registered as a listener, on any channel.  A backend enters that list
 * when its LISTEN commits, which leaves the same race as above, closed the
 * same way: next_batch() and subscribe(), before they read, wait for every
 * silent commit in progress in their database whenever that list is not
 * empty -- a relay reads after its LISTEN has committed, so the wait covers
 * every emitter that decided before the listener was registered.  The one
 * listener neither the hook nor the list can see in time is a LISTEN that
 * ran earlier in the very transaction that loaded the library: next_batch()
 * and subscribe() in that transaction count their backend until it ends
 * (by then such a LISTEN has been registered).
 *
 * So without preload an emitter notifies more often (while anything in its
 * database listens on any channel), never less often than with it.
 *
 * IDENTIFICATION
 *	  src/outbox_notify.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "tcop/utility.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "commands/extension.h"

#include "compat.h"
#include "outbox_notify.h"
#include "pg_idem.h"

/* idem.outbox_notify */
bool		idem_outbox_notify = true;

/*
 * Shared state.  Each backend's slot holds the xid of its transaction while
 * that transaction commits without notifying; slots sit on their own cache
 * lines, so that emitters committing side by side do not share one.
 */
typedef union NotifySlot
{
	struct
	{
		pg_atomic_uint32 silent_xid;	/* InvalidTransactionId when unused */
		Oid			database;	/* the owning backend's, set before any xid */
	}			s;
	char		pad[PG_CACHE_LINE_SIZE];
} NotifySlot;

typedef struct NotifyShared
{
	union
	{
		pg_atomic_uint32 listeners; /* backends that have run LISTEN idem_outbox */
		char		pad[PG_CACHE_LINE_SIZE];
	}			count;
	uint32		nslots;			/* one per PGPROC */
	NotifySlot	slots[FLEXIBLE_ARRAY_MEMBER];
} NotifyShared;

static NotifyShared *notify_shared = NULL;

/* Sizing, fixed in the postmaster and inherited by every backend. */
static uint32 notify_nslots = 0;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
#ifdef IDEM_HAVE_SHMEM_REQUEST_HOOK
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static ProcessUtility_hook_type prev_process_utility_hook = NULL;

/* This backend as a listener: counted once, settled once. */
static bool listener_counted = false;
static bool listener_settled = false;

/*
 * This backend as an emitter: the topics the current transaction will
 * notify, in the order they were first emitted, each with the
 * (sub)transaction nesting level that emitted it, so that rolling back a
 * savepoint drops what it emitted.  Allocated in TopTransactionContext.
 * Past PENDING_INDEX_AT topics, a hash finds duplicates.
 */
typedef struct PendingTopic
{
	char		topic[IDEM_MAX_NAME_BYTES + 1];	/* hash key: keep first */
	int			nest_level;
} PendingTopic;

typedef struct PendingIndexEntry
{
	char		topic[IDEM_MAX_NAME_BYTES + 1];	/* hash key */
	PendingTopic *pending;
} PendingIndexEntry;

#define PENDING_INDEX_AT 16

static List *pending_topics = NIL;	/* of PendingTopic * */
static HTAB *pending_index = NULL;	/* of PendingIndexEntry, or NULL */
static bool callbacks_registered = false;
static bool slot_published = false;
static bool slot_database_set = false;

/* What this transaction's pre-commit decided, for emits that come later. */
typedef enum NotifyDecision
{
	UNDECIDED,					/* our pre-commit callback has not run */
	PASSED_EMPTY,				/* it ran with nothing to notify */
	DECIDED_NOTIFY,
	DECIDED_SILENT,
	PREPARING					/* our pre-prepare callback has run */
} NotifyDecision;

static NotifyDecision decision = UNDECIDED;

/*
 * Without preload (see the file header): whether this backend loaded the
 * library at server start, tried to attach the shared state, counts itself
 * as a listener only until the current transaction ends, and loaded the
 * library in the current transaction; and whether it has said what running
 * without preload costs.
 */
static bool notify_preloaded = false;
static bool attach_tried = false;
static bool listener_provisional = false;
static bool loaded_this_xact = false;
static bool preload_notice_given = false;
static bool create_notice_pending = false;

/*
 * PostgreSQL's list of listening backends lives in async.c's shared
 * "Async Queue Control", whose layout is private to async.c.  Copied here
 * for the versions it was read from (13 to 16); ShmemInitStruct() checks
 * the size of the copy against the real one, and on any other version, or
 * any mismatch, emitters of an un-preloaded backend notify on every commit.
 */
#if PG_VERSION_NUM >= 130000 && PG_VERSION_NUM < 170000
#define IDEM_READ_ASYNC_LISTENERS 1

typedef struct IdemQueuePosition
{
	int			page;
	int			offset;
} IdemQueuePosition;

typedef struct IdemQueueBackendStatus
{
	int32		pid;
	Oid			dboid;
	BackendId	nextListener;
	IdemQueuePosition pos;
} IdemQueueBackendStatus;

typedef struct IdemAsyncQueueControl
{
	IdemQueuePosition head;
	IdemQueuePosition tail;
	int			stopPage;
	BackendId	firstListener;
	TimestampTz lastQueueFillWarn;
	IdemQueueBackendStatus backend[FLEXIBLE_ARRAY_MEMBER];
} IdemAsyncQueueControl;

static IdemAsyncQueueControl *async_control = NULL;
#endif

static Size
notify_shmem_size(void)
{
	return add_size(offsetof(NotifyShared, slots),
					mul_size(notify_nslots, sizeof(NotifySlot)));
}

static void
notify_shmem_request(void)
{
#ifdef IDEM_HAVE_SHMEM_REQUEST_HOOK
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	notify_nslots = idem_total_procs();
	RequestAddinShmemSpace(notify_shmem_size());
}

static void
notify_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	/* where backends do not inherit the postmaster's memory (EXEC_BACKEND) */
	if (notify_nslots == 0)
		notify_nslots = idem_total_procs();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	notify_shared = ShmemInitStruct("pg_idem outbox notify",
									notify_shmem_size(), &found);
	if (!found)
	{
		pg_atomic_init_u32(&notify_shared->count.listeners, 0);
		notify_shared->nslots = notify_nslots;
		for (uint32 i = 0; i < notify_nslots; i++)
			pg_atomic_init_u32(&notify_shared->slots[i].s.silent_xid,
							   InvalidTransactionId);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* This backend's slot, or NULL if it has none (then it always notifies). */
static NotifySlot *
my_slot(void)
{
	int			i;

	if (notify_shared == NULL || MyProc == NULL)
		return NULL;
	i = idem_my_proc_number();
	if (i < 0 || (uint32) i >= notify_shared->nslots)
		return NULL;
	return &notify_shared->slots[i];
}

/* ---------------------------------------------------------------------
 * Without preload: attaching after startup
 * ---------------------------------------------------------------------
 */

/*
 * Find or create the shared state, and find async.c's list of listeners.
 * Failing is not an error: the backend stays detached and notifies on
 * every commit.  The attempt runs in a subtransaction, so that an error
 * raised inside ShmemInitStruct() (out of shared memory, a size that does
 * not match) releases its locks and leaves the caller's transaction alone.
 * Tried once per backend, and only where a subtransaction may start (not
 * from a commit callback).
 */
static void
notify_attach(void)
{
#ifdef IDEM_READ_ASYNC_LISTENERS
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	NotifyShared *shared = NULL;
	IdemAsyncQueueControl *control = NULL;

	if (notify_preloaded || attach_tried)
		return;
	if (!IsTransactionState() || decision != UNDECIDED || IsInParallelMode())
		return;
	attach_tried = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		bool		found;

		notify_nslots = idem_total_procs();
		LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
		shared = ShmemInitStruct("pg_idem outbox notify",
								 notify_shmem_size(), &found);
		if (!found)
		{
			pg_atomic_init_u32(&shared->count.listeners, 0);
			shared->nslots = notify_nslots;
			for (uint32 i = 0; i < notify_nslots; i++)
				pg_atomic_init_u32(&shared->slots[i].s.silent_xid,
								   InvalidTransactionId);
		}
		LWLockRelease(AddinShmemInitLock);

		/* created at startup by async.c: found, unless the name changed */
		control = ShmemInitStruct("Async Queue Control",
								  add_size(offsetof(IdemAsyncQueueControl, backend),
										   mul_size(MaxBackends + 1,
													sizeof(IdemQueueBackendStatus))),
								  &found);
		if (!found)
			control = NULL;

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		ereport(LOG,
				(errmsg("pg_idem could not attach its outbox notification state without preload: %s",
						edata->message),
				 errdetail("Emitting transactions of this session notify channel idem_outbox on every commit.")));
		FreeErrorData(edata);
		shared = NULL;
		control = NULL;
	}
	PG_END_TRY();

	/* both, or neither: without the list, the count alone may be short */
	if (shared != NULL && control != NULL)
	{
		async_control = control;
		notify_shared = shared;
	}
#else
	/* no way to see the listeners the hook missed: stay detached, notify */
#endif
}

/*
 * Is some backend of this database registered in async.c's list of
 * listeners (on any channel)?  Only consulted without preload.  The caller
 * has issued a full memory barrier; the list's first entry is read without
 * the lock first, as almost always nobody listens at all.
 */
static bool
async_listener_in_database(void)
{
#ifdef IDEM_READ_ASYNC_LISTENERS
	bool		found = false;

	if (async_control == NULL)
		return true;
	if (((volatile IdemAsyncQueueControl *) async_control)->firstListener == InvalidBackendId)
		return false;
	LWLockAcquire(NotifyQueueLock, LW_SHARED);
	for (BackendId i = async_control->firstListener;
		 i != InvalidBackendId;
		 i = async_control->backend[i].nextListener)
	{
		if (async_control->backend[i].dboid == MyDatabaseId)
		{
			found = true;
			break;
		}
	}
	LWLockRelease(NotifyQueueLock);
	return found;
#else
	return true;
#endif
}

/* ---------------------------------------------------------------------
 * Listener side
 * ---------------------------------------------------------------------
 */

static void
forget_listener(int code, Datum arg)
{
	if (listener_counted && notify_shared != NULL)
		pg_atomic_fetch_sub_u32(&notify_shared->count.listeners, 1);
	listener_counted = false;
}

/*
 * Count this backend as a listener, then wait for every transaction that
 * decided, before it could see the count, to commit without notifying.
 * Once done, every emitter notifies until this backend exits.
 */
static void
settle_listener_context(void *arg)
{
	errcontext("while LISTEN idem_outbox waits for transaction %u, which emitted outbox events without notifying, to finish committing",
			   *(TransactionId *) arg);
}

/*
 * Wait for every transaction of this database that published its xid (it
 * decided to commit without notifying) to end.  The caller has made itself
 * visible to emitters first (raised the count, or is registered by
 * async.c) and issued a full barrier.
 */
static void
wait_for_silent_emitters(void)
{
	NotifySlot *mine = my_slot();
	ErrorContextCallback errcallback;
	TransactionId waiting_for = InvalidTransactionId;

	errcallback.callback = settle_listener_context;
	errcallback.arg = &waiting_for;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	for (uint32 i = 0; i < notify_shared->nslots; i++)
	{
		TransactionId xid;

		if (&notify_shared->slots[i] == mine)
			continue;
		xid = pg_atomic_read_u32(&notify_shared->slots[i].s.silent_xid);
		if (!TransactionIdIsValid(xid))
			continue;
		pg_read_barrier();
		if (notify_shared->slots[i].s.database != MyDatabaseId)
			continue;
		waiting_for = xid;
		XactLockTableWait(xid, NULL, NULL, XLTW_None);
	}
	error_context_stack = errcallback.previous;
}

static void
settle_listener(void)
{
	notify_attach();
	if (notify_shared == NULL || listener_settled)
		return;

	if (!listener_counted)
	{
		before_shmem_exit(forget_listener, (Datum) 0);
		listener_counted = true;
		/* a full barrier, as the emitter's side needs */
		pg_atomic_fetch_add_u32(&notify_shared->count.listeners, 1);
	}
	pg_memory_barrier();
	wait_for_silent_emitters();
	listener_settled = true;
}

/*
 * Without preload, before next_batch() or subscribe() read: settle the
 * listeners the hook could not see (see the file header).  A LISTEN run
 * earlier in the transaction that loaded the library is not registered
 * yet: count this backend until the transaction ends.  Then, if any backend
 * of this database is registered as a listener, wait for the silent
 * commits in progress, which it may have missed.
 *
 * The wait happens inside the statement, after its snapshot.  Under READ
 * COMMITTED, next_batch() reads with statements of its own, whose snapshots
 * see what it waited for.  Under REPEATABLE READ or SERIALIZABLE they never
 * will: the transaction's snapshot was taken before the wait -- possibly
 * statements earlier, while a silent emitter was still committing, which
 * a snapshot does not list as running either (its xmax is the latest
 * completed xid + 1: GetSnapshotData in procarray.c), and which may have
 * ended, its slot cleared, before we looked.  Returns true in that case
 * (a listener may be waiting and the reader's snapshot is the
 * transaction's): the caller then sends, on behalf of the commits its
 * snapshot cannot see, the notifications they may not have sent
 * (idem_outbox_notify_on_behalf).
 */
bool
idem_outbox_notify_before_read(void)
{
	if (notify_preloaded)
		return false;
	notify_attach();
	if (notify_shared == NULL)
		return false;			/* every emitter notifies */

	if (loaded_this_xact && !listener_counted && !listener_provisional)
	{
		listener_provisional = true;
		pg_atomic_fetch_add_u32(&notify_shared->count.listeners, 1);
	}
	pg_memory_barrier();
	if (!listener_provisional && !async_listener_in_database())
		return false;
	wait_for_silent_emitters();
	return IsolationUsesXactSnapshot();
}

/*
 * Queue, for this transaction's commit, a notification a silent emitter of
 * this topic may not have sent (see idem_outbox_notify_before_read).
 */
void
idem_outbox_notify_on_behalf(const char *topic)
{
	Async_Notify(OUTBOX_CHANNEL, topic);
}

/*
 * Run the statement, then, if it was LISTEN idem_outbox, settle this
 * backend as a listener before the statement returns to the client.  The
 * LISTEN itself only takes effect when its transaction commits, which is
 * later still.
 */
static void
notify_process_utility(IDEM_PROCESS_UTILITY_PARAMS)
{
	Node	   *parsetree = pstmt->utilityStmt;
	bool		listens_to_outbox;
	bool		creates_idem;

	listens_to_outbox = IsA(parsetree, ListenStmt) &&
		strcmp(((ListenStmt *) parsetree)->conditionname, OUTBOX_CHANNEL) == 0;
	creates_idem = IsA(parsetree, CreateExtensionStmt) &&
		strcmp(((CreateExtensionStmt *) parsetree)->extname, "pg_idem") == 0;

	if (prev_process_utility_hook)
		prev_process_utility_hook(IDEM_PROCESS_UTILITY_ARGS);
	else
		standard_ProcessUtility(IDEM_PROCESS_UTILITY_ARGS);

	if (listens_to_outbox)
		settle_listener();
	if (creates_idem)
		idem_preload_notice(true);
}

/* ---------------------------------------------------------------------
 * Emitter side
 * ---------------------------------------------------------------------
 */

static void
queue_pending_topics(void)
{
	ListCell   *lc;

	foreach(lc, pending_topics)
		Async_Notify(OUTBOX_CHANNEL, ((PendingTopic *) lfirst(lc))->topic);
}

/*
 * Pre-commit: notify if anybody listens; otherwise leave this transaction's
 * xid published until it has ended (see the file header).
 */
static void
notify_if_heard(void)
{
	NotifySlot *slot = my_slot();
	TransactionId xid = GetTopTransactionIdIfAny();

	/* emit inserted a row, so there is an xid; without one, notify anyway */
	if (slot == NULL || !TransactionIdIsValid(xid))
	{
		decision = DECIDED_NOTIFY;
		queue_pending_topics();
		return;
	}

	if (!slot_database_set)
	{
		/* constant for this backend's life; written before any xid */
		slot->s.database = MyDatabaseId;
		pg_write_barrier();
		slot_database_set = true;
	}
	pg_atomic_write_u32(&slot->s.silent_xid, xid);
	slot_published = true;
	pg_memory_barrier();
	if (pg_atomic_read_u32(&notify_shared->count.listeners) == 0 &&
		(notify_preloaded || !async_listener_in_database()))
	{
		decision = DECIDED_SILENT;
		return;
	}

	pg_atomic_write_u32(&slot->s.silent_xid, InvalidTransactionId);
	slot_published = false;
	decision = DECIDED_NOTIFY;
	queue_pending_topics();
}

/* PostgreSQL cannot prepare a transaction that notifies either. */
static void
refuse_prepare(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("cannot PREPARE a transaction that emitted outbox events with idem.outbox_notify on"),
			 errdetail("PostgreSQL cannot prepare a transaction that sends a notification."),
			 errhint("Run SET LOCAL idem.outbox_notify = off before idem.emit() in a transaction you will prepare; relays then find its events when they next poll.")));
}

static void
forget_pending(void)
{
	NotifySlot *slot;

	if (slot_published && (slot = my_slot()) != NULL)
		pg_atomic_write_u32(&slot->s.silent_xid, InvalidTransactionId);
	slot_published = false;

	/*
	 * A LISTEN of this transaction, if any, registered with async.c at
	 * pre-commit, so emitters see it there from now on.
	 */
	if (listener_provisional)
	{
		pg_atomic_fetch_sub_u32(&notify_shared->count.listeners, 1);
		listener_provisional = false;
	}
	loaded_this_xact = false;
	create_notice_pending = false;
	decision = UNDECIDED;
	/* both live in TopTransactionContext, which goes with the transaction */
	pending_topics = NIL;
	pending_index = NULL;
}

static void
notify_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (create_notice_pending)
			{
				create_notice_pending = false;
				idem_preload_notice(true);
			}
			if (decision != UNDECIDED)
				break;
			if (pending_topics != NIL)
				notify_if_heard();
			else
				decision = PASSED_EMPTY;
			break;

		case XACT_EVENT_PRE_PREPARE:
			if (pending_topics != NIL)
				refuse_prepare();
			decision = PREPARING;
			break;

		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PARALLEL_ABORT:
			forget_pending();
			break;

		default:
			break;
	}
}

/*
 * A savepoint released hands its topics to its parent; one rolled back
 * drops them (the events it emitted are gone too).
 */
static void
notify_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						SubTransactionId parentSubid, void *arg)
{
	int			level;
	ListCell   *lc;

	if (pending_topics == NIL)
		return;
	level = GetCurrentTransactionNestLevel();

	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		foreach(lc, pending_topics)
		{
			PendingTopic *p = (PendingTopic *) lfirst(lc);

			if (p->nest_level >= level)
				p->nest_level = level - 1;
		}
	}
	else if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		/* in place: rolling back allocates nothing */
		foreach(lc, pending_topics)
		{
			PendingTopic *p = (PendingTopic *) lfirst(lc);

			if (p->nest_level < level)
				continue;
			if (pending_index != NULL)
				hash_search(pending_index, p->topic, HASH_REMOVE, NULL);
			pending_topics = foreach_delete_current(pending_topics, lc);
		}
	}
}

static void
register_callbacks(void)
{
	if (!callbacks_registered)
	{
		RegisterXactCallback(notify_xact_callback, NULL);
		RegisterSubXactCallback(notify_subxact_callback, NULL);
		callbacks_registered = true;
	}
}

/* The pending entry for this topic, or NULL. */
static PendingTopic *
find_pending(const char *topic)
{
	ListCell   *lc;

	if (list_length(pending_topics) >= PENDING_INDEX_AT)
	{
		if (pending_index == NULL)
		{
			HASHCTL		ctl;

			ctl.keysize = IDEM_MAX_NAME_BYTES + 1;
			ctl.entrysize = sizeof(PendingIndexEntry);
			ctl.hcxt = TopTransactionContext;
			pending_index = hash_create("pg_idem pending notifications",
										4 * PENDING_INDEX_AT, &ctl,
										HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
			foreach(lc, pending_topics)
			{
				PendingTopic *p = (PendingTopic *) lfirst(lc);
				PendingIndexEntry *e = hash_search(pending_index, p->topic,
												   HASH_ENTER, NULL);

				e->pending = p;
			}
		}
		{
			PendingIndexEntry *e = hash_search(pending_index, topic,
											   HASH_FIND, NULL);

			return e ? e->pending : NULL;
		}
	}

	foreach(lc, pending_topics)
	{
		PendingTopic *p = (PendingTopic *) lfirst(lc);

		if (strcmp(p->topic, topic) == 0)
			return p;
	}
	return NULL;
}

void
idem_outbox_notify_on_commit(const char *topic)
{
	PendingTopic *p;
	MemoryContext old;

	Assert(strlen(topic) <= IDEM_MAX_NAME_BYTES);

	register_callbacks();
	if (!notify_preloaded)
	{
		notify_attach();
		/*
		 * The first emit speaks only when it pays: attached, emit costs
		 * what it costs preloaded (CREATE EXTENSION has said what else
		 * preloading adds), and a NOTICE in every session of every
		 * application would be noise -- and would change the output of
		 * every test run against a server without preload.
		 */
		if (notify_shared == NULL)
			idem_preload_notice(false);
	}

	/*
	 * Emitted from a pre-commit callback that runs after ours: follow the
	 * decision.  PreCommit_Notify() has not run yet, so a notification can
	 * still be queued; a silent transaction's xid stays published until it
	 * ends.
	 */
	if (decision == DECIDED_NOTIFY)
	{
		Async_Notify(OUTBOX_CHANNEL, topic);
		return;
	}
	if (decision == DECIDED_SILENT)
		return;
	if (decision == PREPARING)
		refuse_prepare();

	/*
	 * Already pending at this level or an enclosing one: one notification
	 * per topic per transaction, as PostgreSQL folds duplicates.  (Deeper
	 * levels have been released or rolled back by now.)
	 */
	if (find_pending(topic) != NULL)
		return;

	old = MemoryContextSwitchTo(TopTransactionContext);
	p = palloc(sizeof(PendingTopic));
	strlcpy(p->topic, topic, sizeof(p->topic));
	p->nest_level = GetCurrentTransactionNestLevel();
	pending_topics = lappend(pending_topics, p);
	if (pending_index != NULL)
		((PendingIndexEntry *) hash_search(pending_index, p->topic,
										   HASH_ENTER, NULL))->pending = p;
	MemoryContextSwitchTo(old);

	/* the first emit after our pre-commit callback ran decides now */
	if (decision == PASSED_EMPTY)
		notify_if_heard();
}

/* ---------------------------------------------------------------------
 * Setup
 * ---------------------------------------------------------------------
 */

/*
 * Writers that commit at a high rate while a relay listens may still prefer
 * to turn notifications off (for a role, a session or one transaction) and
 * let relays poll: every notifying transaction commits alone.
 */
void
idem_outbox_notify_define_settings(void)
{
	DefineCustomBoolVariable("idem.outbox_notify",
							 "Whether idem.emit() notifies channel idem_outbox when the transaction commits.",
							 "While some session listens on idem_outbox, PostgreSQL commits notifying transactions one at a time; turning this off lets high-rate writers commit in groups, and relays then find new events by polling.",
							 &idem_outbox_notify,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
}

/*
 * Say once per session what running without preload costs, and how to
 * preload: when pg_idem is created, and at the first emit of a session that
 * could not attach the notifier's shared state (every emit notifies).
 */
void
idem_preload_notice(bool creating)
{
	if (notify_preloaded || preload_notice_given)
		return;
	preload_notice_given = true;
	ereport(NOTICE,
			(errmsg("pg_idem is not in shared_preload_libraries"),
			 (creating || notify_shared != NULL) ?
			 errdetail("Without preload no background worker runs idem.maintain(), and idem.emit() sends its notification whenever any session of this database listens on any channel; PostgreSQL commits notifying transactions one at a time.") :
			 errdetail("Without preload no background worker runs idem.maintain(), and this session could not attach the shared state that lets idem.emit() skip its notification: every emitting transaction notifies, and PostgreSQL commits notifying transactions one at a time."),
			 errhint("Add pg_idem to shared_preload_libraries in postgresql.conf and restart the server (docs/outbox-wakeup.md).")));
}

/*
 * Loaded on first use instead of preloaded: see LISTEN and CREATE
 * EXTENSION from now on, and remember that a LISTEN earlier in this
 * transaction was not seen.
 */
void
idem_outbox_notify_load(void)
{
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = notify_process_utility;
	register_callbacks();
	loaded_this_xact = IsTransactionState();

	/*
	 * Loaded by CREATE EXTENSION (the validator of the C functions its
	 * script creates): the script runs with client_min_messages raised to
	 * WARNING, so the NOTICE waits for the commit.
	 */
	if (creating_extension)
		create_notice_pending = true;
}

void
idem_outbox_notify_preload(void)
{
	notify_preloaded = true;
#ifdef IDEM_HAVE_SHMEM_REQUEST_HOOK
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = notify_shmem_request;
#else
	notify_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = notify_shmem_startup;
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = notify_process_utility;
	/* early, so that callbacks registered later run before ours */
	register_callbacks();
}
