/*-------------------------------------------------------------------------
 *
 * direct_write.h
 *	  Opening a table that pg_idem writes without the executor, and
 *	  knowing whether it is still in the shape the extension created.
 *
 * IDENTIFICATION
 *	  src/direct_write.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_DIRECT_WRITE_H
#define IDEM_DIRECT_WRITE_H

#include "postgres.h"

#include "storage/lockdefs.h"
#include "utils/relcache.h"

#define IDEM_DIRECT_MAX_COLS 16
#define IDEM_DIRECT_MAX_LEAVES 16
#define IDEM_DIRECT_DEVIATION_LEN 256

/* Where a column's value comes from in the SQL statement a C path imitates */
typedef enum DirectColumnRole
{
	DC_WRITTEN,					/* the statement names it: its default is unused */
	DC_OMITTED,					/* not named: must have no default (it is NULL) */
	DC_IDENTITY,				/* not named: an identity column, nextval */
	DC_DEFAULT_FUNC				/* not named: DEFAULT func(), computed in C */
} DirectColumnRole;

typedef struct DirectColumn
{
	const char *name;
	Oid			type;			/* InvalidOid: the caller checks it */
	Oid			collation;		/* attcollation (InvalidOid if not collatable) */
	bool		notnull;		/* as the extension creates it */
	DirectColumnRole role;
	Oid			func;			/* DC_DEFAULT_FUNC: the function called */
	bool		optional;		/* absent in databases not yet upgraded */
} DirectColumn;

/*
 * A table written directly, described by the code that writes it (name,
 * columns), and what was learned about it the last time it was opened.
 */
typedef struct DirectTable
{
	/* description, constant */
	const char *relname;		/* in schema idem */
	int			ncols;
	const DirectColumn *cols;

	/*
	 * A table partitioned by LIST ((<first column> / leaf_ids) % nleaves)
	 * into nleaves leaves (0: a plain table).  The first column must be the
	 * DC_IDENTITY one.
	 */
	int			nleaves;
	int64		leaf_ids;

	/* learned from the opened relation; valid while nothing invalidates it */
	bool		loaded;
	uint64		loaded_gen;
	Oid			relid;
	int			attidx[IDEM_DIRECT_MAX_COLS];	/* attnum - 1, or -1 if absent */
	Oid			identity_seq;	/* sequence of the DC_IDENTITY column */
	bool		pristine;
	char		deviation[IDEM_DIRECT_DEVIATION_LEN];	/* why not, if not */

	/*
	 * Partitioned: the leaf of each key value, and each leaf's shape as
	 * learned under its own lock (valid while leaf_gen[k] is current).
	 */
	bool		partitioned;	/* nleaves > 0 and partitioned (else plain, as
								 * before the upgrade that partitions it) */
	Oid			leaf_oid[IDEM_DIRECT_MAX_LEAVES];
	uint64		leaf_gen[IDEM_DIRECT_MAX_LEAVES];
	bool		leaf_pristine[IDEM_DIRECT_MAX_LEAVES];
} DirectTable;

extern Relation idem_direct_open(DirectTable *t, LOCKMODE lockmode);
extern Relation idem_direct_open_leaf(DirectTable *t, Relation parent, int leaf,
									  LOCKMODE lockmode);

#endif							/* IDEM_DIRECT_WRITE_H */
