/*-------------------------------------------------------------------------
 *
 * spi_util.c
 *	  Prepared-plan cache and SPI helpers shared by the pg_idem modules.
 *
 * Every hot-path query in pg_idem is planned once per backend and then
 * executed from the kept plan, so a call costs what the statement costs and
 * not its parse and plan.  Kept plans live in the plan cache, which replans
 * them by itself when a table they touch changes (for example after DROP and
 * CREATE EXTENSION), so no invalidation callback is needed here.
 *
 * IDENTIFICATION
 *	  src/spi_util.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"

#include "spi_util.h"

/*
 * Return the kept plan for a statement, preparing it on first use.  Must be
 * called while connected to SPI.
 */
SPIPlanPtr
idem_plan_get(IdemPlan *plan)
{
	if (plan->plan == NULL)
	{
		SPIPlanPtr	p;

		Assert(plan->nargs >= 0 && plan->nargs <= IDEM_PLAN_MAX_ARGS);
		p = SPI_prepare(plan->sql, plan->nargs, plan->argtypes);
		if (p == NULL)
			elog(ERROR, "pg_idem: SPI_prepare failed for \"%s\": %s",
				 plan->sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "pg_idem: SPI_keepplan failed");
		plan->plan = p;
	}
	return plan->plan;
}

/*
 * Execute a kept plan and return the SPI result code, raising an internal
 * error for any negative code (those mean a bug, never a user mistake).
 */
int
idem_plan_execute(IdemPlan *plan, Datum *values, const char *nulls,
				  bool read_only, long count)
{
	int			rc;

	rc = SPI_execute_plan(idem_plan_get(plan), values, nulls, read_only, count);
	if (rc < 0)
		elog(ERROR, "pg_idem: SPI_execute_plan failed for \"%s\": %s",
			 plan->sql, SPI_result_code_string(rc));
	return rc;
}
