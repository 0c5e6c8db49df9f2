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

#endif							/* IDEM_COMPAT_H */
