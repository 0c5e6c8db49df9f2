/*-------------------------------------------------------------------------
 *
 * maintenance.c
 *	  idem.maintain() and the background worker that runs it.
 *
 * Two things grow without bound unless someone deletes them: completed
 * idempotency keys past their expiry (keys.c) and outbox events every
 * consumer has finished, or that outlived idem.outbox_retention when nobody
 * is subscribed (outbox.c).  Each module exposes one bounded batch of that
 * work (idem_keys_purge, idem_outbox_trim); this file repeats the batches.
 *
 * idem.maintain() runs in its caller's transaction (a SQL function cannot
 * commit), so it stops after IDEM_MAINTAIN_MAX_BATCHES batches per task:
 * one call stays short, and the rows it deleted stay locked only briefly.
 * The background worker does the same tasks but commits after every batch,
 * so it can work through a large backlog while holding each batch's row
 * locks for milliseconds.  Neither waits for application traffic: expired
 * keys are picked with SKIP LOCKED (a key being taken over is skipped), and
 * the outbox is trimmed a leaf of its ring at a time, with TRUNCATE, only
 * when nobody holds a lock on that leaf (outbox.c); committing right after
 * each batch lets emitters into a just-truncated leaf go on at once.
 *
 * The worker follows the src/test/modules/worker_spi skeleton: it connects
 * to idem.maintenance_database once, sleeps on its latch between runs,
 * rereads idem.maintenance_interval on SIGHUP, and runs one transaction with
 * its own snapshot per batch.  Its choices where the skeleton is silent:
 *
 *	- SIGTERM (pg_terminate_backend, or server shutdown) cancels the batch in
 *	  progress, logs, and exits with status 0, so the postmaster does not
 *	  start it again before the next server start.  To pause maintenance
 *	  without stopping the worker, set idem.maintenance_interval to 0.
 *	- An error in a run (a lock timeout, the extension dropped mid-run) is
 *	  logged, the transaction aborted, and the next run happens on schedule:
 *	  one failing run never takes the worker down.
 *	- If the extension is not created in the database, the worker says so
 *	  once in the log and checks again at every run (one catalog lookup).
 *	- If the database does not exist, connecting fails with FATAL and the
 *	  postmaster retries every IDEM_WORKER_RESTART_S seconds: one log line
 *	  a minute, not a crash loop.  A crash of the worker (or any backend)
 *	  restarts the whole server as usual, and the worker with it.
 *
 * IDENTIFICATION
 *	  src/maintenance.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "keys.h"
#include "maintenance.h"
#include "outbox.h"
#include "pg_idem.h"

/* Seconds the postmaster waits before starting the worker again after a
 * failed start (the maintenance database does not exist). */
#define IDEM_WORKER_RESTART_S	60

#define IDEM_WORKER_NAME		"pg_idem maintenance"

/* One maintenance task: a name for idem.maintain()'s result, one batch. */
typedef struct MaintenanceTask
{
	const char *name;			/* the "task" column of idem.maintain() */
	const char *activity;		/* what pg_stat_activity shows while it runs */
	int64		(*batch) (int32 max_rows);	/* deletes up to max_rows */
} MaintenanceTask;

static const MaintenanceTask maintenance_tasks[] = {
	{"expired_keys", "pg_idem maintenance: purging expired keys", idem_keys_purge},
	{"outbox_events", "pg_idem maintenance: trimming the outbox", idem_outbox_trim},
};

#define N_MAINTENANCE_TASKS lengthof(maintenance_tasks)

/* Worker state: whether "extension not installed" was already logged. */
static bool extension_reported_missing = false;

static int64 run_task_batches(const MaintenanceTask *task, int max_batches);
static void maintenance_sigterm(SIGNAL_ARGS);
static void worker_run_guarded(MemoryContext run_context);
static void worker_run(void);
static bool worker_extension_present(void);
static int64 worker_batch(const MaintenanceTask *task);
static void worker_batch_error_context(void *arg);

/*
 * Run up to max_batches batches of one task in the current transaction,
 * stopping at the first batch that comes back short (nothing more to do
 * right now).  Returns the number of rows deleted.
 */
static int64
run_task_batches(const MaintenanceTask *task, int max_batches)
{
	int64		total = 0;
	int			i;

	for (i = 0; i < max_batches; i++)
	{
		int64		n;

		CHECK_FOR_INTERRUPTS();
		n = task->batch(IDEM_MAINTAIN_BATCH_ROWS);
		total += n;
		if (n < IDEM_MAINTAIN_BATCH_ROWS)
			break;
	}
	return total;
}

/*
 * idem.maintain() RETURNS TABLE (task text, rows bigint)
 *
 * Purge expired keys and trim finished outbox events, a bounded amount of
 * each, in the caller's transaction; one row per task with the number of
 * rows deleted.  All work happens on the first call; later calls hand out
 * the result rows.
 */
PG_FUNCTION_INFO_V1(idem_maintain);
Datum
idem_maintain(PG_FUNCTION_ARGS)
{
	FuncCallContext *funcctx;
	int64	   *rows;

	if (SRF_IS_FIRSTCALL())
	{
		MemoryContext oldcxt;
		TupleDesc	tupdesc;
		int			i;

		funcctx = SRF_FIRSTCALL_INIT();
		oldcxt = MemoryContextSwitchTo(funcctx->multi_call_memory_ctx);
		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "pg_idem: idem.maintain() must return a row type");
		funcctx->tuple_desc = BlessTupleDesc(tupdesc);
		rows = palloc0(sizeof(int64) * N_MAINTENANCE_TASKS);
		funcctx->user_fctx = rows;
		funcctx->max_calls = N_MAINTENANCE_TASKS;
		MemoryContextSwitchTo(oldcxt);

		for (i = 0; i < N_MAINTENANCE_TASKS; i++)
			rows[i] = run_task_batches(&maintenance_tasks[i],
									   IDEM_MAINTAIN_MAX_BATCHES);
	}

	funcctx = SRF_PERCALL_SETUP();
	rows = (int64 *) funcctx->user_fctx;

	if (funcctx->call_cntr < funcctx->max_calls)
	{
		int			i = (int) funcctx->call_cntr;
		Datum		values[2];
		bool		nulls[2] = {false, false};
		HeapTuple	tuple;

		values[0] = CStringGetTextDatum(maintenance_tasks[i].name);
		values[1] = Int64GetDatum(rows[i]);
		tuple = heap_form_tuple(funcctx->tuple_desc, values, nulls);
		SRF_RETURN_NEXT(funcctx, HeapTupleGetDatum(tuple));
	}
	SRF_RETURN_DONE(funcctx);
}

/*
 * Register the maintenance worker with the postmaster.  Called from
 * _PG_init while shared_preload_libraries is being processed.
 */
void
idem_maintenance_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	/* A standby cannot delete anything: start once recovery has finished. */
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = IDEM_WORKER_RESTART_S;
	strlcpy(worker.bgw_library_name, "pg_idem", BGW_MAXLEN);
	strlcpy(worker.bgw_function_name, "idem_maintenance_main", BGW_MAXLEN);
	strlcpy(worker.bgw_name, IDEM_WORKER_NAME, BGW_MAXLEN);
	strlcpy(worker.bgw_type, IDEM_WORKER_NAME, BGW_MAXLEN);
	worker.bgw_main_arg = (Datum) 0;
	worker.bgw_notify_pid = 0;

	RegisterBackgroundWorker(&worker);
}

/*
 * SIGTERM: ask the main loop to exit, and cancel the statement in progress
 * so that a batch waiting on a lock does not delay the stop.  The cancel
 * surfaces as an error inside worker_run_guarded(), which does not report
 * it when a stop was requested.
 */
static void
maintenance_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	ShutdownRequestPending = true;
	if (!proc_exit_inprogress)
	{
		InterruptPending = true;
		QueryCancelPending = true;
	}
	SetLatch(MyLatch);

	errno = save_errno;
}

/*
 * The worker's main loop: run the maintenance tasks every
 * idem.maintenance_interval (the interval is the period between the starts
 * of two runs), or only wait for signals when the interval is 0.
 */
void
idem_maintenance_main(Datum main_arg)
{
	MemoryContext run_context;
	TimestampTz last_run = 0;	/* 0: no run yet, so run at once */

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, maintenance_sigterm);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(idem_maintenance_database, NULL, 0);

	/*
	 * The worker runs as the bootstrap superuser: never let an object in a
	 * user-writable schema be found by name.  (Every query is qualified
	 * anyway; this is the second lock on the door.)
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp",
					PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("application_name", IDEM_WORKER_NAME,
					PGC_USERSET, PGC_S_SESSION);

	ereport(LOG,
			(errmsg("pg_idem maintenance worker started in database \"%s\"",
					idem_maintenance_database),
			 errdetail("idem.maintenance_interval is %d s.",
					   idem_maintenance_interval_s)));

	run_context = AllocSetContextCreate(TopMemoryContext,
										"pg_idem maintenance run",
										ALLOCSET_DEFAULT_SIZES);

	while (!ShutdownRequestPending)
	{
		int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;
		long		timeout_ms = -1;

		if (idem_maintenance_interval_s > 0)
		{
			TimestampTz now = GetCurrentTimestamp();
			TimestampTz due;

			due = (last_run == 0) ? now :
				TimestampTzPlusMilliseconds(last_run,
											(int64) idem_maintenance_interval_s * 1000);
			if (now >= due)
			{
				last_run = now;
				worker_run_guarded(run_context);
				continue;
			}
			timeout_ms = TimestampDifferenceMilliseconds(now, due);
			events |= WL_TIMEOUT;
		}

		(void) WaitLatch(MyLatch, events, timeout_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);

		/* Checked before CHECK_FOR_INTERRUPTS, which would act on the cancel. */
		if (ShutdownRequestPending)
			break;
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			int			old_interval_s = idem_maintenance_interval_s;

			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (idem_maintenance_interval_s != old_interval_s)
				ereport(LOG,
						(errmsg("pg_idem maintenance worker: idem.maintenance_interval changed from %d s to %d s",
								old_interval_s, idem_maintenance_interval_s)));
		}
	}

	/* The cancel that came with SIGTERM has nothing left to cancel. */
	QueryCancelPending = false;
	ereport(LOG,
			(errmsg("pg_idem maintenance worker shutting down")));
	proc_exit(0);
}

/*
 * Run the maintenance tasks once, turning any error into a log entry: the
 * transaction is aborted and the worker waits for its next run, the way a
 * backend's main loop recovers from an error in one query.
 */
static void
worker_run_guarded(MemoryContext run_context)
{
	MemoryContextSwitchTo(run_context);

	PG_TRY();
	{
		worker_run();
	}
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		/* A statement cancelled by SIGTERM is a stop, not a failure. */
		if (!ShutdownRequestPending)
			EmitErrorReport();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(TopMemoryContext);
		FlushErrorState();
		pgstat_report_activity(STATE_IDLE, NULL);
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();

	MemoryContextSwitchTo(TopMemoryContext);
	MemoryContextReset(run_context);
}

/*
 * One run: if the extension exists here, each task in turn, batch after
 * batch, each batch in its own transaction, until a batch comes back short
 * or IDEM_WORKER_MAX_BATCHES is reached (the next run continues), or a stop
 * is requested.
 */
static void
worker_run(void)
{
	int64		done[N_MAINTENANCE_TASKS];
	int			t;

	if (!worker_extension_present())
		return;

	for (t = 0; t < N_MAINTENANCE_TASKS; t++)
	{
		int			b;

		done[t] = 0;
		for (b = 0; b < IDEM_WORKER_MAX_BATCHES && !ShutdownRequestPending; b++)
		{
			int64		n = worker_batch(&maintenance_tasks[t]);

			done[t] += n;
			if (n < IDEM_MAINTAIN_BATCH_ROWS)
				break;
		}
	}

	StaticAssertStmt(N_MAINTENANCE_TASKS == 2,
					 "the summary below names every maintenance task");
	elog(DEBUG1, "pg_idem maintenance: deleted " INT64_FORMAT " expired keys and "
		 INT64_FORMAT " outbox events", done[0], done[1]);
}

/*
 * Is the extension created in this database?  One catalog lookup in a
 * short transaction.  The first time it is missing, and the first time it
 * is back, say so in the log; stay silent in between.
 */
static bool
worker_extension_present(void)
{
	bool		present;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	present = OidIsValid(get_extension_oid("pg_idem", true));
	CommitTransactionCommand();

	if (!present && !extension_reported_missing)
	{
		ereport(LOG,
				(errmsg("pg_idem maintenance worker: extension \"pg_idem\" is not installed in database \"%s\"",
						idem_maintenance_database),
				 errdetail("The worker checks again at every run and does nothing until then."),
				 errhint("Run CREATE EXTENSION pg_idem in that database, or set idem.maintenance_database to the database that has it.")));
		extension_reported_missing = true;
	}
	else if (present && extension_reported_missing)
	{
		ereport(LOG,
				(errmsg("pg_idem maintenance worker: extension \"pg_idem\" found in database \"%s\", maintenance resumes",
						idem_maintenance_database)));
		extension_reported_missing = false;
	}
	return present;
}

/*
 * One batch of one task as one unit of work: its own transaction, with a
 * fresh statement timestamp (so now() in the batch is now) and a snapshot,
 * reported in pg_stat_activity while it runs.  Returns the rows deleted.
 */
static int64
worker_batch(const MaintenanceTask *task)
{
	ErrorContextCallback errcallback;
	int64		n;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, task->activity);

	errcallback.callback = worker_batch_error_context;
	errcallback.arg = (void *) task;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	n = task->batch(IDEM_MAINTAIN_BATCH_ROWS);

	error_context_stack = errcallback.previous;

	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);

	return n;
}

/* Name the task in the CONTEXT of an error raised by one of its batches. */
static void
worker_batch_error_context(void *arg)
{
	const MaintenanceTask *task = (const MaintenanceTask *) arg;

	errcontext("pg_idem maintenance task \"%s\"", task->name);
}
