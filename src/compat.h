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
 * Ownership checks: 16 replaced pg_class_ownercheck() and its siblings with
 * object_ownercheck().
 */
#if PG_VERSION_NUM >= 160000
#include "catalog/pg_class.h"
#include "utils/acl.h"
#define idem_relation_ownercheck(relid, roleid) \
	object_ownercheck(RelationRelationId, (relid), (roleid))
#else
#include "utils/acl.h"
#define idem_relation_ownercheck(relid, roleid) \
	pg_class_ownercheck((relid), (roleid))
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

#endif							/* IDEM_COMPAT_H */
