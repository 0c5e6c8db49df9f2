/*-------------------------------------------------------------------------
 *
 * pg_idem.c
 *	  Library entry point: the idem.* settings, the version guard's executor
 *	  hook and, when preloaded, the maintenance worker's registration and the
 *	  outbox notifier's hooks.
 *
 * pg_idem keeps retried requests from acting twice (idempotency keys, see
 * keys.c), stale writes from overwriting newer ones (version_guard.c) and
 * events from being published without their transaction (outbox.c).  This
 * file only defines what every module shares: the settings, and, when the
 * library is preloaded, the maintenance worker (maintenance.c) and the
 * shared state that lets emitters skip NOTIFY while nobody listens
 * (outbox_notify.c).
 *
 * IDENTIFICATION
 *	  src/pg_idem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "compat.h"
#include "invariants.h"
#include "maintenance.h"
#include "outbox_notify.h"
#include "outbox_wal.h"
#include "pg_idem.h"
#include "privileges.h"
#include "version_provenance.h"

PG_MODULE_MAGIC;

int			idem_ttl_s = 24 * 60 * 60;
int			idem_lease_ms = 30 * 1000;
int			idem_outbox_retention_s = 7 * 24 * 60 * 60;
int			idem_maintenance_interval_s = 60;
char	   *idem_maintenance_database = NULL;

void		_PG_init(void);

static bool check_maintenance_database(char **newval, void **extra,
									   GucSource source);

/*
 * Define the settings and, when the library is preloaded, register the
 * maintenance worker.  Durations carry units so that users can write '30s'
 * or '2h'; every bound is positive where SPEC.md says "must be positive".
 *
 * Contexts: ttl and lease are per-call defaults any session may change;
 * outbox_retention decides which events maintenance deletes, so only a
 * superuser (or postgresql.conf, ALTER DATABASE/ROLE by a superuser) may
 * change it; the worker reads maintenance_interval on SIGHUP, and connects
 * to maintenance_database once, at server start.
 */
void
_PG_init(void)
{
	DefineCustomIntVariable("idem.ttl",
							"How long a completed idempotency key keeps its response.",
							"Counts from completion; used when reserve() is called without ttl.",
							&idem_ttl_s,
							24 * 60 * 60, 1, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("idem.lease",
							"How long a reserved idempotency key stays held before another caller may take it over.",
							"Used when reserve() or checkpoint() is called without lease.",
							&idem_lease_ms,
							30 * 1000, 1, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("idem.outbox_retention",
							"How long outbox events are kept when no consumer is subscribed.",
							NULL,
							&idem_outbox_retention_s,
							7 * 24 * 60 * 60, 1, INT_MAX,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("idem.maintenance_interval",
							"Time between runs of idem.maintain() by the background worker.",
							"Zero disables the worker's runs.",
							&idem_maintenance_interval_s,
							60, 0, INT_MAX / 1000,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	/*
	 * The worker connects once, so the database is fixed at server start.
	 * PostgreSQL only lets a library define a PGC_POSTMASTER setting while
	 * it is being preloaded (later it is a FATAL error in the loading
	 * backend); loaded on first use instead, there is no worker and the
	 * setting is inert, so it is defined as a reloadable one.
	 */
	DefineCustomStringVariable("idem.maintenance_database",
							   "Database in which the background worker runs idem.maintain().",
							   NULL,
							   &idem_maintenance_database,
							   "postgres",
							   process_shared_preload_libraries_in_progress ?
							   PGC_POSTMASTER : PGC_SIGHUP,
							   0,
							   check_maintenance_database, NULL, NULL);

	idem_outbox_notify_define_settings();
	idem_outbox_wal_define_settings();

	/*
	 * Invariants need their transaction and relcache callbacks in every
	 * backend that loads the library, preloaded or not: the library is
	 * loaded by the first call of any of its functions, the watched tables'
	 * trigger included, so a backend that writes a watched table always has
	 * them before the commit that must check.
	 */
	idem_invariants_init();

	/*
	 * The version guard's strict mode reads each statement's plan from an
	 * executor hook.  Installed however the library is loaded: loaded by a
	 * backend's first guarded write, it sees every later statement.
	 */
	idem_version_provenance_init();

	/*
	 * The HINT on PostgreSQL's "permission denied for schema idem" that a
	 * role without idem.grant_usage() gets (privileges.c).  Every backend
	 * that loads the library has it; only preloading gives it to a role's
	 * very first call, which cannot load the library itself.
	 */
	idem_privileges_init();

	MarkGUCPrefixReserved("idem");

	/*
	 * A background worker, shared memory and hooks that must see every
	 * backend's statements need a library loaded at server start.  Without
	 * preload, the settings above still exist, idem.maintain() is called by
	 * pg_cron or any other scheduler, and the outbox notifier attaches its
	 * shared state after startup (outbox_notify.c).
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		idem_maintenance_register();
		idem_outbox_notify_preload();
	}
	else
		idem_outbox_notify_load();
}

/*
 * Refuse an empty idem.maintenance_database: the worker would fail to
 * connect to a database named "" at every start.
 */
static bool
check_maintenance_database(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || (*newval)[0] == '\0')
	{
		GUC_check_errdetail("idem.maintenance_database must name a database.");
		return false;
	}
	return true;
}
