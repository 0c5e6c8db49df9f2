/*-------------------------------------------------------------------------
 *
 * spi_util.h
 *	  Prepared-plan cache and SPI helpers shared by the pg_idem modules.
 *
 * IDENTIFICATION
 *	  src/spi_util.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_SPI_UTIL_H
#define IDEM_SPI_UTIL_H

#include "postgres.h"

#include "executor/spi.h"

/*
 * A statement prepared once per backend and kept for its lifetime.  Declare
 * one per query as a static, e.g.
 *
 *	static IdemPlan reserve_insert = {
 *		"INSERT INTO idem.keys ...", 3, {TEXTOID, TEXTOID, BYTEAOID}
 *	};
 *
 * and run it with idem_plan_execute().
 */
#define IDEM_PLAN_MAX_ARGS 16

typedef struct IdemPlan
{
	const char *sql;			/* schema-qualified query text */
	int			nargs;
	Oid			argtypes[IDEM_PLAN_MAX_ARGS];
	SPIPlanPtr	plan;			/* NULL until first use */
} IdemPlan;

extern SPIPlanPtr idem_plan_get(IdemPlan *plan);
extern int	idem_plan_execute(IdemPlan *plan, Datum *values, const char *nulls,
							  bool read_only, long count);

#endif							/* IDEM_SPI_UTIL_H */
