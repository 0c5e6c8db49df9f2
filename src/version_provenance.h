/*-------------------------------------------------------------------------
 *
 * version_provenance.h
 *	  Where the values of an UPDATE come from, as the version guard asks it
 *	  (src/version_provenance.c).
 *
 * IDENTIFICATION
 *	  src/version_provenance.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_VERSION_PROVENANCE_H
#define IDEM_VERSION_PROVENANCE_H

#include "postgres.h"

#include "commands/trigger.h"

/* How a statement assigns one column of the row it updates. */
typedef enum ValueSource
{
	VALUE_NOT_ASSIGNED,			/* the statement does not assign it */
	VALUE_FROM_ROW,				/* computed from the row being updated
								 * (version + 1, balance - $1) */
	VALUE_FROM_CLIENT,			/* anything else: a parameter, a constant,
								 * EXCLUDED, another table's column */
	VALUE_UNKNOWN				/* assigned, but how could not be told (the
								 * plan was not seen, or two of the
								 * statement's actions assign it
								 * differently) */
} ValueSource;

/* What the guard needs to know about the statement that fired it. */
typedef struct WriteProvenance
{
	bool		plan_seen;		/* false: no plan was found for the
								 * statement; everything is unknown */
	bool		others_client;	/* some column other than the version is
								 * assigned a client value */
	ValueSource version;		/* how the version column is assigned */
	bool		version_proposed;	/* INSERT ... ON CONFLICT DO UPDATE SET
									 * version = EXCLUDED.version */
} WriteProvenance;

extern void idem_version_provenance_init(void);
extern void idem_write_provenance(TriggerData *trigdata, AttrNumber version_attnum,
								  WriteProvenance *result);
extern void idem_note_guard_function(Oid funcoid);

#endif							/* IDEM_VERSION_PROVENANCE_H */
