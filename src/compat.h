/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PostgreSQL server API difference pg_idem meets between major
 *	  versions 13 and 17, and nothing else.
 *
 * The rest of the code is written against PostgreSQL 15 (what Debian 12
 * ships) and calls the names below; each shim says which versions differ.
 *
 * IDENTIFICATION
 *	  src/compat.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_COMPAT_H
#define IDEM_COMPAT_H

#include "postgres.h"

#if PG_VERSION_NUM < 130000
#error "pg_idem requires PostgreSQL 13 or later"
#endif

/* MarkGUCPrefixReserved() appeared in 15; before, it was a warning only. */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/*
 * SHA-256: 14 introduced the generic cryptohash API (with a length-checked
 * final step); 13 only has the pg_sha256_* routines.
 */
#if PG_VERSION_NUM >= 140000
#include "common/cryptohash.h"
#include "common/sha2.h"
#else
#include "common/sha2.h"
#endif

/*
 * Ownership and privilege checks: 16 replaced pg_class_ownercheck(),
 * pg_proc_aclcheck() and their siblings with object_ownercheck() and
 * object_aclcheck().
 */
#if PG_VERSION_NUM >= 160000
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_proc.h"
#include "utils/acl.h"
#define idem_relation_ownercheck(relid, roleid) \
	object_ownercheck(RelationRelationId, (relid), (roleid))
#define idem_namespace_ownercheck(nspid, roleid) \
	object_ownercheck(NamespaceRelationId, (nspid), (roleid))
#define idem_proc_aclcheck(funcid, roleid, mode) \
	object_aclcheck(ProcedureRelationId, (funcid), (roleid), (mode))
#else
#include "utils/acl.h"
#define idem_relation_ownercheck(relid, roleid) \
	pg_class_ownercheck((relid), (roleid))
#define idem_namespace_ownercheck(nspid, roleid) \
	pg_namespace_ownercheck((nspid), (roleid))
#define idem_proc_aclcheck(funcid, roleid, mode) \
	pg_proc_aclcheck((funcid), (roleid), (mode))
#endif

/*
 * Direct table access (keys.c writes idem.keys with the executor's index
 * helpers instead of planned statements).
 *
 * 13: ExecInsertIndexTuples/ExecCheckIndexConstraints take the result
 *     relation from estate->es_result_relation_info, and index inserts have
 *     no "update" flag.
 * 16: ExecInsertIndexTuples gained onlySummarizing, and table_tuple_update
 *     reports TU_UpdateIndexes instead of a bool.
 */
#include "access/tableam.h"
#include "executor/executor.h"

static inline List *
idem_insert_index_tuples(ResultRelInfo *rri, TupleTableSlot *slot, EState *estate,
						 bool update, bool noDupErr, bool *specConflict,
						 List *arbiterIndexes, bool onlySummarizing)
{
#if PG_VERSION_NUM >= 160000
	return ExecInsertIndexTuples(rri, slot, estate, update, noDupErr,
								 specConflict, arbiterIndexes, onlySummarizing);
#elif PG_VERSION_NUM >= 140000
	return ExecInsertIndexTuples(rri, slot, estate, update, noDupErr,
								 specConflict, arbiterIndexes);
#else
	estate->es_result_relation_info = rri;
	return ExecInsertIndexTuples(slot, estate, noDupErr, specConflict,
								 arbiterIndexes);
#endif
}

static inline bool
idem_check_index_constraints(ResultRelInfo *rri, TupleTableSlot *slot,
							 EState *estate, ItemPointer conflictTid,
							 List *arbiterIndexes)
{
#if PG_VERSION_NUM >= 140000
	return ExecCheckIndexConstraints(rri, slot, estate, conflictTid,
									 arbiterIndexes);
#else
	estate->es_result_relation_info = rri;
	return ExecCheckIndexConstraints(slot, estate, conflictTid, arbiterIndexes);
#endif
}

/*
 * table_tuple_update, reporting whether new index entries are needed and
 * whether only summarizing indexes need them.
 */
static inline TM_Result
idem_tuple_update(Relation rel, ItemPointer otid, TupleTableSlot *slot,
				  CommandId cid, Snapshot snapshot, TM_FailureData *tmfd,
				  LockTupleMode *lockmode, bool *update_indexes,
				  bool *only_summarizing)
{
	TM_Result	result;
#if PG_VERSION_NUM >= 160000
	TU_UpdateIndexes u;

	result = table_tuple_update(rel, otid, slot, cid, snapshot, InvalidSnapshot,
								true, tmfd, lockmode, &u);
	*update_indexes = (u != TU_None);
	*only_summarizing = (u == TU_Summarizing);
#else
	result = table_tuple_update(rel, otid, slot, cid, snapshot, InvalidSnapshot,
								true, tmfd, lockmode, update_indexes);
	*only_summarizing = false;
#endif
	return result;
}

/*
 * Shared memory and hooks (outbox_notify.c).
 *
 * 15 added shmem_request_hook, the only place space may then be requested;
 *    before, _PG_init requested it directly.  15 also computes MaxBackends
 *    before that hook runs; 13 and 14 compute it after _PG_init, so the
 *    count of PGPROCs is derived here from the settings it is made of.
 * 14 added readOnlyTree to ProcessUtility_hook.
 * 17 replaced PGPROC.pgprocno with MyProcNumber.
 * 14 added HASH_STRINGS (13 hashes keys as C strings by default).
 */
#include "access/twophase.h"
#include "miscadmin.h"
#include "postmaster/autovacuum.h"
#include "replication/walsender.h"
#include "storage/proc.h"
#include "tcop/utility.h"

#if PG_VERSION_NUM >= 150000
#define IDEM_HAVE_SHMEM_REQUEST_HOOK 1
#endif

/* Every PGPROC: backends, auxiliary processes, prepared transactions. */
static inline uint32
idem_total_procs(void)
{
#if PG_VERSION_NUM >= 150000
	return MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts;
#else
	return MaxConnections + autovacuum_max_workers + 1 + max_worker_processes +
		max_wal_senders + NUM_AUXILIARY_PROCS + max_prepared_xacts;
#endif
}

/* 14 added HASH_STRINGS; 13 hashes keys as strings when given no flag. */
#if PG_VERSION_NUM < 140000
#define HASH_STRINGS 0
#endif

#if PG_VERSION_NUM >= 170000
#define idem_my_proc_number() ((int) MyProcNumber)
#else
#define idem_my_proc_number() (MyProc->pgprocno)
#endif

#if PG_VERSION_NUM >= 140000
#define IDEM_PROCESS_UTILITY_PARAMS \
	PlannedStmt *pstmt, const char *queryString, bool readOnlyTree, \
	ProcessUtilityContext context, ParamListInfo params, \
	QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc
#define IDEM_PROCESS_UTILITY_ARGS \
	pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc
#else
#define IDEM_PROCESS_UTILITY_PARAMS \
	PlannedStmt *pstmt, const char *queryString, \
	ProcessUtilityContext context, ParamListInfo params, \
	QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc
#define IDEM_PROCESS_UTILITY_ARGS \
	pstmt, queryString, context, params, queryEnv, dest, qc
#endif

/*
 * Invariants (invariants.c).
 *
 * 15 renamed parse_analyze() to parse_analyze_fixedparams().
 * 16 gave stringToQualifiedNameList() a soft-error context.
 */
#include "parser/analyze.h"
#include "utils/regproc.h"

#if PG_VERSION_NUM < 150000
#define parse_analyze_fixedparams(raw, text, types, n, env) \
	parse_analyze((raw), (text), (types), (n), (env))
#endif

#if PG_VERSION_NUM >= 160000
#define idem_qualified_name_list(str) stringToQualifiedNameList((str), NULL)
#else
#define idem_qualified_name_list(str) stringToQualifiedNameList(str)
#endif

/*
 * Strict version checks read each statement's plan (version_provenance.c).
 * 14 gave UPDATE a single subplan whose targetlist holds only the assigned
 * columns (updateColnosLists), and added onConflictCols,
 * es_opened_result_relations, es_tuple_routing_result_relations and
 * ri_RootResultRelInfo; 13 has none of them, and there strict mode keeps the
 * 0.1 rules.  15 added MERGE.
 */
#if PG_VERSION_NUM >= 140000
#define IDEM_HAVE_PLAN_PROVENANCE 1
#endif
#if PG_VERSION_NUM >= 150000
#define IDEM_HAVE_MERGE 1
#endif

/*
 * Logical decoding messages (outbox_wal.c): 17 gave LogLogicalMessage() a
 * flush argument; false is what 13 to 16 do (the commit record flushes a
 * transactional message anyway).
 */
#include "replication/message.h"
#if PG_VERSION_NUM >= 170000
#define idem_log_logical_message(prefix, message, size, transactional) \
	LogLogicalMessage((prefix), (message), (size), (transactional), false)
#else
#define idem_log_logical_message(prefix, message, size, transactional) \
	LogLogicalMessage((prefix), (message), (size), (transactional))
#endif

#endif							/* IDEM_COMPAT_H */
