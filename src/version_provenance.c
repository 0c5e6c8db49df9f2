/*-------------------------------------------------------------------------
 *
 * version_provenance.c
 *	  Where an UPDATE's values come from: read from the statement's plan
 *	  when the executor starts it, looked up by the version guard per
 *	  statement.
 *
 * Strict mode judges a write by where its values come from (SPEC.md section
 * 2).  A lost update needs a value the client computed from a stale read.
 * An UPDATE every one of whose assignments is computed from the row itself
 * (balance = balance + 1, n = greatest(n - $1, 0)) is an atomic
 * read-modify-write: under READ COMMITTED the executor recomputes it on the
 * latest row version when a concurrent writer got there first, so it cannot
 * lose an update and needs no version.  An UPDATE that assigns a client
 * value must prove the version it read, and version + 1 proves nothing.
 *
 * A row trigger sees the old and the new row and the set of assigned
 * columns, never the statement.  So an ExecutorStart hook reads, once per
 * statement, the plan of every ModifyTable node whose result relation has
 * the guard, and classifies each assigned column: from the row (its
 * expression reaches a column of the row being updated), from the server's
 * clock or session (now(), CURRENT_USER: no client computed them), or a
 * client value (everything else, and whatever cannot be told).  It keeps the
 * classification on a stack of running statements, and the trigger finds
 * its own by the ResultRelInfo whose trigger fired.  ExecutorEnd pops the
 * entry; a (sub)transaction abort drops the entries of the statements it
 * aborted, so an error cannot leave a stale one behind.
 *
 * Where the expressions live in a PostgreSQL 15 plan (after setrefs.c):
 * - UPDATE: the non-junk entries of the subplan's targetlist, in the order
 *   of updateColnosLists[i] (ExecBuildUpdateProjection).  A Var of the
 *   updated row is a Var of a result relation's RT index at the scan node;
 *   above a join it is an OUTER_VAR/INNER_VAR reference to a child's
 *   targetlist, followed down to the scan.
 * - INSERT ... ON CONFLICT DO UPDATE: onConflictSet with onConflictCols.
 *   fix_join_expr() leaves the existing row's Vars as Vars of the result
 *   relation and turns EXCLUDED's into INNER_VAR references to
 *   exclRelTlist: the proposed row, a client value.
 * - MERGE: each UPDATE action's targetList with its updateColnos; the
 *   target's Vars are the result relation's or references to the
 *   subplan's targetlist (the join of target and source), followed down.
 *
 * Without shared_preload_libraries the library is loaded by the first row
 * the guard sees, after that statement's ExecutorStart: the trigger then
 * classifies the plan of the top-level statement (ActivePortal->stmts),
 * and, when the statement is not there (it runs inside a function), knows
 * nothing and treats every value as a client value.
 *
 * IDENTIFICATION
 *	  src/version_provenance.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/partition.h"
#include "catalog/pg_class.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_trigger.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "nodes/nodeFuncs.h"
#include "nodes/plannodes.h"
#include "parser/parsetree.h"
#include "replication/logicalworker.h"
#include "tcop/pquery.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "compat.h"
#include "version_provenance.h"

#ifdef IDEM_HAVE_PLAN_PROVENANCE

/* The C symbol of idem.version_guard(), as pg_proc.prosrc names it. */
#define GUARD_SYMBOL "idem_version_guard"

/*
 * Where one assigned value comes from.  Ordered so that combining the parts
 * of an expression takes the largest: one column of the row makes the whole
 * expression "from the row" (n - $1), one client part makes an expression
 * without the row a client value.
 */
typedef enum Source
{
	SRC_CONST,					/* constants only */
	SRC_SERVER,					/* the server's clock or session, and
								 * constants */
	SRC_CLIENT,					/* a parameter, another table, EXCLUDED, a
								 * subquery, anything not told apart */
	SRC_ROW						/* reaches a column of the updated row */
} Source;

/*
 * The classification of one result relation that has the guard.  The
 * column sets are attribute numbers of relid.
 */
typedef struct GuardedTarget
{
	Trigger    *triggers;		/* the ResultRelInfo's trigger array, which
								 * TriggerData->tg_trigger points into */
	int			ntriggers;
	ResultRelInfo *rri;			/* to recognise a routed partition's root */
	Oid			relid;
	Bitmapset  *row_cols;		/* assigned from the row */
	Bitmapset  *client_cols;	/* assigned a client value or a constant */
	Bitmapset  *server_cols;	/* assigned the server's clock or session */
	Bitmapset  *proposed_cols;	/* ON CONFLICT: assigned EXCLUDED's own
								 * value of the same column, unchanged */
} GuardedTarget;

/* A running statement that updates a guarded table. */
typedef struct ProvFrame
{
	QueryDesc  *queryDesc;		/* matched by ExecutorEnd */
	int			nestlevel;		/* transaction nesting level at start */
	MemoryContext cxt;			/* holds targets; child of
								 * TopTransactionContext */
	List	   *targets;		/* GuardedTarget */
	EState	   *estate;			/* for partitions routed to at run time */
	bool		routes;			/* an ON CONFLICT into a partitioned table */
} ProvFrame;

/* What the trigger accumulates from the targets that match it. */
typedef struct Judgement
{
	bool		found;
	bool		others_client;
	ValueSource version;
	bool		version_proposed;
} Judgement;

/* The RT indexes whose Vars are the row being updated. */
typedef struct ProvContext
{
	Bitmapset  *target_rtis;
} ProvContext;

/* expression_tree_walker state for combining an expression's parts. */
typedef struct CombineState
{
	Plan	   *plan;
	ProvContext *ctx;
	Source		result;
} CombineState;

static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ExecutorEnd_hook_type prev_ExecutorEnd = NULL;

static ProvFrame *frames = NULL;
static int	nframes = 0;
static int	maxframes = 0;
static bool callbacks_registered = false;
static Oid	guard_funcoid = InvalidOid;

static void provenance_ExecutorStart(QueryDesc *queryDesc, int eflags);
static void provenance_ExecutorEnd(QueryDesc *queryDesc);
static void provenance_xact_callback(XactEvent event, void *arg);
static void provenance_subxact_callback(SubXactEvent event,
										SubTransactionId mySubid,
										SubTransactionId parentSubid,
										void *arg);
static bool statement_may_update(PlannedStmt *pstmt);
static void push_statement(QueryDesc *queryDesc);
static void pop_frames_from(int first);
static void classify_planstate(PlanState *ps, List **targets, bool *routes);
static bool modify_table_updates(ModifyTable *mt);
static bool trigdesc_has_guard(TriggerDesc *trigdesc);
static bool is_guard_function(Oid funcoid);
static void classify_result_relation(ModifyTable *mt, int index,
									 GuardedTarget *target);
static void note_excluded_passthrough(List *tlist, List *colnos,
									  GuardedTarget *target);
static void classify_assignments(List *tlist, List *colnos, Plan *plan,
								 ProvContext *ctx, GuardedTarget *target);
static Source expr_source(Node *node, Plan *plan, ProvContext *ctx);
static bool combine_child(Node *node, CombineState *state);
static Source candidates_source(List *candidates, Plan *plan, ProvContext *ctx);
static Source var_source(Var *var, Plan *plan, ProvContext *ctx);
static Source child_column_source(Plan *plan, bool inner, AttrNumber attno,
								  ProvContext *ctx);
static Source tlist_entry_source(Plan *plan, List *tlist, AttrNumber attno,
								 ProvContext *ctx);
static bool judge_frame(ProvFrame *frame, TriggerData *trigdata,
						AttrNumber version_attnum, Judgement *acc);
static bool judge_frame_routed(ProvFrame *frame, TriggerData *trigdata,
							   AttrNumber version_attnum, Judgement *acc);
static bool judge_active_portal(TriggerData *trigdata,
								AttrNumber version_attnum, Judgement *acc);
static void judge_columns(Judgement *acc, TriggerData *trigdata,
						  AttrNumber version_attnum, Oid relid,
						  Bitmapset *row_cols, Bitmapset *client_cols,
						  Bitmapset *server_cols, Bitmapset *proposed_cols);

/*
 * Install the executor hooks, chained to whatever was installed before.
 * Called from _PG_init, preloaded or not: a library loaded by a backend
 * sees every statement that starts after it was loaded.
 */
void
idem_version_provenance_init(void)
{
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = provenance_ExecutorStart;
	prev_ExecutorEnd = ExecutorEnd_hook;
	ExecutorEnd_hook = provenance_ExecutorEnd;
}

/*
 * The guard tells its own OID when it fires, which spares a catalog look-up
 * in the next statements' hooks.
 */
void
idem_note_guard_function(Oid funcoid)
{
	guard_funcoid = funcoid;
}

/*
 * After the executor has opened the result relations, classify the
 * statement if it updates a guarded table.  Statements that update no
 * table with a BEFORE UPDATE row trigger leave after a look at the plan's
 * command type and at each opened result relation's trigger flags.
 */
static void
provenance_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);

	if ((eflags & EXEC_FLAG_EXPLAIN_ONLY) == 0 &&
		statement_may_update(queryDesc->plannedstmt))
		push_statement(queryDesc);
}

/* Drop the statement's entry (and any left above it), then end it. */
static void
provenance_ExecutorEnd(QueryDesc *queryDesc)
{
	for (int i = nframes - 1; i >= 0; i--)
	{
		if (frames[i].queryDesc == queryDesc)
		{
			pop_frames_from(i);
			break;
		}
	}

	if (prev_ExecutorEnd)
		prev_ExecutorEnd(queryDesc);
	else
		standard_ExecutorEnd(queryDesc);
}

/*
 * At the end of a transaction no statement is running; the entries' memory
 * goes with TopTransactionContext.
 */
static void
provenance_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			nframes = 0;
			break;
		default:
			break;
	}
}

/*
 * A subtransaction abort ends, without ExecutorEnd, every statement started
 * inside it (an error caught by a PL/pgSQL EXCEPTION block).
 */
static void
provenance_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
							SubTransactionId parentSubid, void *arg)
{
	int			level;
	int			first;

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	level = GetCurrentTransactionNestLevel();
	first = nframes;
	while (first > 0 && frames[first - 1].nestlevel >= level)
		first--;
	pop_frames_from(first);
}

/* Can the statement update a row (UPDATE, MERGE, ON CONFLICT, a CTE)? */
static bool
statement_may_update(PlannedStmt *pstmt)
{
	if (pstmt == NULL || pstmt->resultRelations == NIL)
		return false;
	if (pstmt->hasModifyingCTE)
		return true;
	return pstmt->commandType == CMD_UPDATE ||
#ifdef IDEM_HAVE_MERGE
		pstmt->commandType == CMD_MERGE ||
#endif
		pstmt->commandType == CMD_INSERT;
}

/*
 * Classify a starting statement's guarded result relations and push the
 * result.  The executor has initialized every ModifyTable node by now (the
 * main plan's and those of data-modifying CTEs, which are subplans), with
 * a ResultRelInfo per result relation.
 */
static void
push_statement(QueryDesc *queryDesc)
{
	EState	   *estate = queryDesc->estate;
	ListCell   *lc;
	bool		guarded = false;
	MemoryContext cxt;
	MemoryContext old;
	List	   *targets = NIL;
	bool		routes = false;

	foreach(lc, estate->es_opened_result_relations)
	{
		ResultRelInfo *rri = (ResultRelInfo *) lfirst(lc);

		if (trigdesc_has_guard(rri->ri_TrigDesc))
		{
			guarded = true;
			break;
		}
	}
	if (!guarded)
		return;

	cxt = AllocSetContextCreate(TopTransactionContext,
								"pg_idem statement provenance",
								ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(cxt);
	classify_planstate(queryDesc->planstate, &targets, &routes);
	foreach(lc, estate->es_subplanstates)
		classify_planstate((PlanState *) lfirst(lc), &targets, &routes);
	MemoryContextSwitchTo(old);

	if (targets == NIL)
	{
		MemoryContextDelete(cxt);
		return;
	}

	if (!callbacks_registered)
	{
		RegisterXactCallback(provenance_xact_callback, NULL);
		RegisterSubXactCallback(provenance_subxact_callback, NULL);
		callbacks_registered = true;
	}
	if (nframes >= maxframes)
	{
		int			newmax = maxframes == 0 ? 8 : maxframes * 2;

		if (frames == NULL)
			frames = MemoryContextAlloc(TopMemoryContext, newmax * sizeof(ProvFrame));
		else
			frames = repalloc(frames, newmax * sizeof(ProvFrame));
		maxframes = newmax;
	}
	frames[nframes].queryDesc = queryDesc;
	frames[nframes].nestlevel = GetCurrentTransactionNestLevel();
	frames[nframes].cxt = cxt;
	frames[nframes].targets = targets;
	frames[nframes].estate = estate;
	frames[nframes].routes = routes;
	nframes++;
}

/* Pop frames[first] and every frame above it. */
static void
pop_frames_from(int first)
{
	while (nframes > first)
	{
		nframes--;
		MemoryContextDelete(frames[nframes].cxt);
	}
}

/* Does the ModifyTable node update rows (ON CONFLICT DO UPDATE included)? */
static bool
modify_table_updates(ModifyTable *mt)
{
	return mt->operation == CMD_UPDATE ||
#ifdef IDEM_HAVE_MERGE
		mt->operation == CMD_MERGE ||
#endif
		(mt->operation == CMD_INSERT &&
		 mt->onConflictAction == ONCONFLICT_UPDATE);
}

/* Classify the guarded result relations of a ModifyTable node, if ps is one. */
static void
classify_planstate(PlanState *ps, List **targets, bool *routes)
{
	ModifyTableState *mtstate;
	ModifyTable *mt;

	if (ps == NULL || !IsA(ps, ModifyTableState))
		return;
	mtstate = (ModifyTableState *) ps;
	mt = (ModifyTable *) ps->plan;
	if (!modify_table_updates(mt))
		return;

	for (int i = 0; i < mtstate->mt_nrels; i++)
	{
		ResultRelInfo *rri = &mtstate->resultRelInfo[i];
		GuardedTarget *target;

		if (!trigdesc_has_guard(rri->ri_TrigDesc))
			continue;
		target = palloc0(sizeof(GuardedTarget));
		target->triggers = rri->ri_TrigDesc->triggers;
		target->ntriggers = rri->ri_TrigDesc->numtriggers;
		target->rri = rri;
		target->relid = RelationGetRelid(rri->ri_RelationDesc);
		classify_result_relation(mt, i, target);
		if (mt->operation == CMD_INSERT &&
			rri->ri_RelationDesc->rd_rel->relkind == RELKIND_PARTITIONED_TABLE)
			*routes = true;
		*targets = lappend(*targets, target);
	}
}

/* Does a trigger descriptor have the guard as a BEFORE UPDATE row trigger? */
static bool
trigdesc_has_guard(TriggerDesc *trigdesc)
{
	if (trigdesc == NULL || !trigdesc->trig_update_before_row)
		return false;
	for (int i = 0; i < trigdesc->numtriggers; i++)
	{
		Trigger    *trig = &trigdesc->triggers[i];

		if (TRIGGER_TYPE_MATCHES(trig->tgtype, TRIGGER_TYPE_ROW,
								 TRIGGER_TYPE_BEFORE, TRIGGER_TYPE_UPDATE) &&
			is_guard_function(trig->tgfoid))
			return true;
	}
	return false;
}

/*
 * Is funcoid idem.version_guard()?  Recognised by its C symbol, so that a
 * guard attached by hand under another trigger name counts too.
 */
static bool
is_guard_function(Oid funcoid)
{
	HeapTuple	tuple;
	bool		result = false;

	if (OidIsValid(guard_funcoid) && funcoid == guard_funcoid)
		return true;

	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(funcoid));
	if (!HeapTupleIsValid(tuple))
		return false;
	if (((Form_pg_proc) GETSTRUCT(tuple))->prolang == ClanguageId)
	{
		bool		isnull;
		Datum		src = SysCacheGetAttr(PROCOID, tuple, Anum_pg_proc_prosrc,
										  &isnull);

		if (!isnull)
		{
			text	   *t = DatumGetTextPP(src);

			result = VARSIZE_ANY_EXHDR(t) == strlen(GUARD_SYMBOL) &&
				memcmp(VARDATA_ANY(t), GUARD_SYMBOL, strlen(GUARD_SYMBOL)) == 0;
		}
	}
	ReleaseSysCache(tuple);
	if (result)
		guard_funcoid = funcoid;
	return result;
}

/*
 * Classify the columns that ModifyTable node mt assigns in its index'th
 * result relation, in that relation's attribute numbers.  Reads the plan
 * only, so that it also serves a statement whose executor state was never
 * seen (see judge_active_portal).
 */
static void
classify_result_relation(ModifyTable *mt, int index, GuardedTarget *target)
{
	ProvContext ctx;
	ListCell   *lc;

	ctx.target_rtis = NULL;
	foreach(lc, mt->resultRelations)
		ctx.target_rtis = bms_add_member(ctx.target_rtis, lfirst_int(lc));
	if (mt->rootRelation > 0)
		ctx.target_rtis = bms_add_member(ctx.target_rtis, mt->rootRelation);
	if (mt->nominalRelation > 0)
		ctx.target_rtis = bms_add_member(ctx.target_rtis, mt->nominalRelation);

	switch (mt->operation)
	{
		case CMD_UPDATE:
			if (index < list_length(mt->updateColnosLists) && outerPlan(mt) != NULL)
				classify_assignments(outerPlan(mt)->targetlist,
									 (List *) list_nth(mt->updateColnosLists, index),
									 outerPlan(mt), &ctx, target);
			break;
		case CMD_INSERT:
			if (mt->onConflictAction == ONCONFLICT_UPDATE)
			{
				classify_assignments(mt->onConflictSet, mt->onConflictCols,
									 (Plan *) mt, &ctx, target);
				note_excluded_passthrough(mt->onConflictSet, mt->onConflictCols,
										  target);
			}
			break;
#ifdef IDEM_HAVE_MERGE
		case CMD_MERGE:
			if (index < list_length(mt->mergeActionLists))
			{
				foreach(lc, (List *) list_nth(mt->mergeActionLists, index))
				{
					MergeAction *action = (MergeAction *) lfirst(lc);

					if (action->commandType == CMD_UPDATE)
						classify_assignments(action->targetList,
											 action->updateColnos,
											 (Plan *) mt, &ctx, target);
				}
			}
			break;
#endif
		default:
			break;
	}
}

/*
 * ON CONFLICT DO UPDATE SET col = EXCLUDED.col: note the columns assigned the
 * proposed row's own value unchanged, as it left the BEFORE INSERT triggers
 * (setrefs.c makes EXCLUDED an INNER_VAR reference to exclRelTlist, which
 * lists the target's columns in order).
 */
static void
note_excluded_passthrough(List *tlist, List *colnos, GuardedTarget *target)
{
	ListCell   *lc;
	ListCell   *lcol = list_head(colnos);

	foreach(lc, tlist)
	{
		TargetEntry *tle = (TargetEntry *) lfirst(lc);
		AttrNumber	attno;

		if (tle->resjunk)
			continue;
		if (lcol == NULL)
			break;
		attno = (AttrNumber) lfirst_int(lcol);
		lcol = lnext(colnos, lcol);
		if (IsA(tle->expr, Var) && ((Var *) tle->expr)->varno == INNER_VAR &&
			((Var *) tle->expr)->varattno == attno)
			target->proposed_cols = bms_add_member(target->proposed_cols, attno);
	}
}

/*
 * Classify the non-junk entries of tlist, evaluated at plan, which assign
 * the columns colnos in order (how ExecBuildUpdateProjection pairs them).
 */
static void
classify_assignments(List *tlist, List *colnos, Plan *plan, ProvContext *ctx,
					 GuardedTarget *target)
{
	ListCell   *lc;
	ListCell   *lcol = list_head(colnos);

	foreach(lc, tlist)
	{
		TargetEntry *tle = (TargetEntry *) lfirst(lc);
		AttrNumber	attno;

		if (tle->resjunk)
			continue;
		if (lcol == NULL)
			break;
		attno = (AttrNumber) lfirst_int(lcol);
		lcol = lnext(colnos, lcol);


		switch (expr_source((Node *) tle->expr, plan, ctx))
		{
			case SRC_ROW:
				target->row_cols = bms_add_member(target->row_cols, attno);
				break;
			case SRC_SERVER:
				target->server_cols = bms_add_member(target->server_cols, attno);
				break;
			default:
				target->client_cols = bms_add_member(target->client_cols, attno);
				break;
		}
	}
}

/*
 * Where the value of an expression evaluated at plan node plan comes from.
 *
 * An expression that reaches a column of the updated row is from the row,
 * whatever else it combines (n - $1, balance + c.delta), except where it
 * only chooses between values: COALESCE, CASE, GREATEST/LEAST and NULLIF
 * write one of their candidates as it is, so COALESCE($1, title) writes
 * the client's title and is a client value (see candidates_source).  An
 * assignment into an array element or a field of a composite is judged by
 * the value assigned, not by the row's array or record around it.
 */
static Source
expr_source(Node *node, Plan *plan, ProvContext *ctx)
{
	CombineState state;

	if (node == NULL)
		return SRC_CONST;
	check_stack_depth();

	switch (nodeTag(node))
	{
		case T_Var:
			return var_source((Var *) node, plan, ctx);
		case T_Const:
		case T_CaseTestExpr:
		case T_CoerceToDomainValue:
			return SRC_CONST;
		case T_Param:
			return SRC_CLIENT;
		case T_SubPlan:
		case T_AlternativeSubPlan:
			/* a value read by a subquery, like a column of another table */
			return SRC_CLIENT;
		case T_SQLValueFunction:
			/* CURRENT_TIMESTAMP, CURRENT_USER: no client computed them */
			return SRC_SERVER;
		case T_FuncExpr:
			{
				Oid			funcid = ((FuncExpr *) node)->funcid;

				if (funcid == F_NOW || funcid == F_TRANSACTION_TIMESTAMP ||
					funcid == F_STATEMENT_TIMESTAMP)
					return SRC_SERVER;
			}
			break;
		case T_CoalesceExpr:
			return candidates_source(((CoalesceExpr *) node)->args, plan, ctx);
		case T_MinMaxExpr:
			return candidates_source(((MinMaxExpr *) node)->args, plan, ctx);
		case T_NullIfExpr:
			/* NULLIF(a, b) writes a or NULL */
			return candidates_source(list_make1(linitial(((NullIfExpr *) node)->args)),
									 plan, ctx);
		case T_CaseExpr:
			{
				CaseExpr   *c = (CaseExpr *) node;
				List	   *results = NIL;
				ListCell   *lc;

				foreach(lc, c->args)
					results = lappend(results, ((CaseWhen *) lfirst(lc))->result);
				results = lappend(results, c->defresult);
				return candidates_source(results, plan, ctx);
			}
		case T_SubscriptingRef:
			if (((SubscriptingRef *) node)->refassgnexpr != NULL)
				return expr_source((Node *) ((SubscriptingRef *) node)->refassgnexpr,
								   plan, ctx);
			break;
		case T_FieldStore:
			{
				FieldStore *fs = (FieldStore *) node;
				Source		others = SRC_CONST;
				bool		all_row = fs->newvals != NIL;
				ListCell   *lc;

				foreach(lc, fs->newvals)
				{
					Source		s = expr_source((Node *) lfirst(lc), plan, ctx);

					if (s != SRC_ROW)
					{
						all_row = false;
						others = Max(others, s);
					}
				}
				return all_row ? SRC_ROW : others;
			}
		default:
			break;
	}

	state.plan = plan;
	state.ctx = ctx;
	state.result = SRC_CONST;
	expression_tree_walker(node, combine_child, (void *) &state);
	return state.result;
}

/* expression_tree_walker callback: fold one part into the combined source. */
static bool
combine_child(Node *node, CombineState *state)
{
	if (node == NULL)
		return false;
	state->result = Max(state->result, expr_source(node, state->plan, state->ctx));
	return false;
}

/*
 * An expression that writes one of its candidates as it is.  It is from
 * the row when a candidate is, and the others are constants or the
 * server's (COALESCE(lock_version, 0), greatest(n - $1, 0), CASE WHEN ...
 * THEN status ELSE 'open' END): what is written is then the row's value or
 * a fixed fallback the row's value selected.  A candidate that is a client
 * value may be written as the client sent it, so the whole is a client
 * value (COALESCE($1, title)).
 */
static Source
candidates_source(List *candidates, Plan *plan, ProvContext *ctx)
{
	bool		any_row = false;
	Source		others = SRC_CONST;
	ListCell   *lc;

	foreach(lc, candidates)
	{
		Source		s = expr_source((Node *) lfirst(lc), plan, ctx);

		if (s == SRC_ROW)
			any_row = true;
		else
			others = Max(others, s);
	}
	if (any_row)
		return others == SRC_CLIENT ? SRC_CLIENT : SRC_ROW;
	return others;
}

/*
 * Where a Var evaluated at plan node plan comes from: a column of a result
 * relation is the updated row; a reference to a child's targetlist is
 * followed down; any other relation, a VALUES list, a function or a CTE is
 * a client value.
 */
static Source
var_source(Var *var, Plan *plan, ProvContext *ctx)
{
	if (plan == NULL)
		return SRC_CLIENT;

	switch (var->varno)
	{
		case OUTER_VAR:
			return child_column_source(plan, false, var->varattno, ctx);
		case INNER_VAR:
			return child_column_source(plan, true, var->varattno, ctx);
		case INDEX_VAR:
			switch (nodeTag(plan))
			{
				case T_IndexOnlyScan:
					return tlist_entry_source(plan, ((IndexOnlyScan *) plan)->indextlist,
											  var->varattno, ctx);
				case T_ForeignScan:
					return tlist_entry_source(plan, ((ForeignScan *) plan)->fdw_scan_tlist,
											  var->varattno, ctx);
				case T_CustomScan:
					return tlist_entry_source(plan, ((CustomScan *) plan)->custom_scan_tlist,
											  var->varattno, ctx);
				default:
					return SRC_CLIENT;
			}
		default:
			if (bms_is_member((int) var->varno, ctx->target_rtis))
				return SRC_ROW;
			if (IsA(plan, SubqueryScan) &&
				var->varno == ((Scan *) plan)->scanrelid && var->varattno > 0)
			{
				Plan	   *sub = ((SubqueryScan *) plan)->subplan;

				return tlist_entry_source(sub, sub->targetlist, var->varattno, ctx);
			}
			return SRC_CLIENT;
	}
}

/*
 * Column attno of the outer (or inner) input of plan.  At the ModifyTable
 * node itself, MERGE's inputs are the subplan's output (the join of target
 * and source) and ON CONFLICT's inner input is the EXCLUDED row, a client
 * value.  An Append's or MergeAppend's column is the same column of each
 * child: from the row only if it is from the row in all of them.
 */
static Source
child_column_source(Plan *plan, bool inner, AttrNumber attno, ProvContext *ctx)
{
	List	   *children = NIL;
	Plan	   *child;
	Source		result = SRC_CONST;
	bool		first = true;
	ListCell   *lc;

	if (IsA(plan, ModifyTable))
	{
#ifdef IDEM_HAVE_MERGE
		if (((ModifyTable *) plan)->operation != CMD_MERGE || outerPlan(plan) == NULL)
			return SRC_CLIENT;
#else
		return SRC_CLIENT;
#endif
		return tlist_entry_source(outerPlan(plan), outerPlan(plan)->targetlist,
								  attno, ctx);
	}

	if (IsA(plan, Append))
		children = ((Append *) plan)->appendplans;
	else if (IsA(plan, MergeAppend))
		children = ((MergeAppend *) plan)->mergeplans;
	else
	{
		child = inner ? innerPlan(plan) : outerPlan(plan);
		if (child == NULL)
			return SRC_CLIENT;
		return tlist_entry_source(child, child->targetlist, attno, ctx);
	}

	if (children == NIL)
		return SRC_CLIENT;
	foreach(lc, children)
	{
		Source		s;

		child = (Plan *) lfirst(lc);
		s = tlist_entry_source(child, child->targetlist, attno, ctx);
		if (first)
			result = s;
		else if (s != result)
			result = (s == SRC_ROW || result == SRC_ROW) ? SRC_CLIENT : Max(s, result);
		first = false;
	}
	return result;
}

/* The source of entry attno of tlist, whose expressions plan evaluates. */
static Source
tlist_entry_source(Plan *plan, List *tlist, AttrNumber attno, ProvContext *ctx)
{
	TargetEntry *tle;

	if (attno <= 0)
		return SRC_CLIENT;
	tle = get_tle_by_resno(tlist, attno);
	if (tle == NULL)
		return SRC_CLIENT;
	return expr_source((Node *) tle->expr, plan, ctx);
}

/*
 * What the guard needs about the statement that fired it, for the relation
 * it fired on; version_attnum is the version column in that relation.
 *
 * The statement's entry is found by the trigger that fired: tg_trigger
 * points into the trigger array of the ResultRelInfo the executor made for
 * this statement's result relation, so the match is exact even when two
 * running statements, or two ModifyTable nodes of one, update the same
 * table.  A partition that an INSERT ... ON CONFLICT routes a row to gets
 * its ResultRelInfo at run time; it is recognised by its root.  Failing
 * both, the top-level statement's plan is read; failing that, nothing is
 * known.
 */
void
idem_write_provenance(TriggerData *trigdata, AttrNumber version_attnum,
					  WriteProvenance *result)
{
	Judgement	acc;

	acc.found = false;
	acc.others_client = false;
	acc.version = VALUE_NOT_ASSIGNED;
	acc.version_proposed = false;

	/*
	 * A logical replication apply worker writes the publisher's rows, with
	 * the publisher's next version; there is no statement to read.  They
	 * are judged as client values, as before 0.2, so that a subscriber's
	 * guard (ENABLE ALWAYS) keeps accepting them.
	 */
	if (IsLogicalWorker())
	{
		result->plan_seen = true;
		result->others_client = true;
		result->version = VALUE_FROM_CLIENT;
		result->version_proposed = false;
		return;
	}

	for (int i = nframes - 1; i >= 0 && !acc.found; i--)
		judge_frame(&frames[i], trigdata, version_attnum, &acc);
	if (!acc.found && trigdata->tg_relation->rd_rel->relispartition)
	{
		for (int i = nframes - 1; i >= 0 && !acc.found; i--)
			judge_frame_routed(&frames[i], trigdata, version_attnum, &acc);
	}
	if (!acc.found)
		judge_active_portal(trigdata, version_attnum, &acc);

	if (!acc.found)
	{
		result->plan_seen = false;
		result->others_client = true;
		result->version = VALUE_UNKNOWN;
		result->version_proposed = false;
		return;
	}
	result->plan_seen = true;
	result->others_client = acc.others_client;
	result->version = acc.version;
	result->version_proposed = acc.version_proposed;
}

/* Judge by the frame's target whose ResultRelInfo fired the trigger. */
static bool
judge_frame(ProvFrame *frame, TriggerData *trigdata, AttrNumber version_attnum,
			Judgement *acc)
{
	Trigger    *trig = trigdata->tg_trigger;
	ListCell   *lc;

	foreach(lc, frame->targets)
	{
		GuardedTarget *t = (GuardedTarget *) lfirst(lc);

		if (trig >= t->triggers && trig < t->triggers + t->ntriggers)
		{
			judge_columns(acc, trigdata, version_attnum, t->relid,
						  t->row_cols, t->client_cols, t->server_cols,
						  t->proposed_cols);
			return true;
		}
	}
	return false;
}

/*
 * Judge a partition that an INSERT ... ON CONFLICT DO UPDATE routed a row
 * to: the executor made its ResultRelInfo at run time, as a child of the
 * statement's root result relation, whose classification (in the root's
 * column numbers) applies.
 */
static bool
judge_frame_routed(ProvFrame *frame, TriggerData *trigdata,
				   AttrNumber version_attnum, Judgement *acc)
{
	Trigger    *trig = trigdata->tg_trigger;
	ListCell   *lc;

	if (!frame->routes)
		return false;
	foreach(lc, frame->estate->es_tuple_routing_result_relations)
	{
		ResultRelInfo *rri = (ResultRelInfo *) lfirst(lc);
		TriggerDesc *td = rri->ri_TrigDesc;
		ListCell   *lt;

		if (td == NULL || trig < td->triggers || trig >= td->triggers + td->numtriggers)
			continue;
		foreach(lt, frame->targets)
		{
			GuardedTarget *t = (GuardedTarget *) lfirst(lt);

			if (t->rri == rri->ri_RootResultRelInfo)
			{
				judge_columns(acc, trigdata, version_attnum, t->relid,
							  t->row_cols, t->client_cols, t->server_cols,
						  t->proposed_cols);
				return true;
			}
		}
	}
	return false;
}

/*
 * The fallback for a statement that started before the library was loaded
 * (no shared_preload_libraries: the guard's first row loads it): classify
 * the top-level statement's plan, matching its result relations by OID
 * (and, for an ON CONFLICT into a partitioned table, the partition's
 * ancestors).  The executor state of that statement is out of reach, so
 * every ModifyTable node that updates the relation counts.
 */
static bool
judge_active_portal(TriggerData *trigdata, AttrNumber version_attnum,
					Judgement *acc)
{
	Relation	rel = trigdata->tg_relation;
	Oid			relid = RelationGetRelid(rel);
	List	   *ancestors = NIL;
	ListCell   *lc;

	if (ActivePortal == NULL)
		return false;
	if (rel->rd_rel->relispartition)
		ancestors = get_partition_ancestors(relid);

	foreach(lc, ActivePortal->stmts)
	{
		PlannedStmt *pstmt = (PlannedStmt *) lfirst(lc);
		List	   *plans;
		ListCell   *lp;

		if (!IsA(pstmt, PlannedStmt) || !statement_may_update(pstmt))
			continue;
		plans = lcons(pstmt->planTree, list_copy(pstmt->subplans));
		foreach(lp, plans)
		{
			Plan	   *plan = (Plan *) lfirst(lp);
			ModifyTable *mt;
			int			index = 0;
			ListCell   *lr;

			if (plan == NULL || !IsA(plan, ModifyTable))
				continue;
			mt = (ModifyTable *) plan;
			if (!modify_table_updates(mt))
				continue;
			foreach(lr, mt->resultRelations)
			{
				RangeTblEntry *rte = rt_fetch(lfirst_int(lr), pstmt->rtable);

				if (rte->relid == relid ||
					(mt->operation == CMD_INSERT &&
					 list_member_oid(ancestors, rte->relid)))
				{
					GuardedTarget t;

					memset(&t, 0, sizeof(t));
					t.relid = rte->relid;
					classify_result_relation(mt, index, &t);
					judge_columns(acc, trigdata, version_attnum, t.relid,
								  t.row_cols, t.client_cols, t.server_cols,
								  t.proposed_cols);
				}
				index++;
			}
		}
	}
	return acc->found;
}

/*
 * Fold one matching classification into the judgement.  Its column sets
 * are in relid's numbering; the version column is found there by name when
 * relid is not the relation the row lives in (a partition's root).  Two
 * matches that assign the version differently make it unknown.
 */
static void
judge_columns(Judgement *acc, TriggerData *trigdata, AttrNumber version_attnum,
			  Oid relid, Bitmapset *row_cols, Bitmapset *client_cols,
			  Bitmapset *server_cols, Bitmapset *proposed_cols)
{
	Relation	rel = trigdata->tg_relation;
	AttrNumber	vattno = version_attnum;
	bool		in_row;
	bool		in_other;
	ValueSource v;
	int			x = -1;

	if (relid != RelationGetRelid(rel))
	{
		const char *colname = NameStr(TupleDescAttr(RelationGetDescr(rel),
													version_attnum - 1)->attname);

		vattno = get_attnum(relid, colname);
	}

	if (vattno == InvalidAttrNumber)
		v = VALUE_UNKNOWN;
	else
	{
		in_row = bms_is_member(vattno, row_cols);
		in_other = bms_is_member(vattno, client_cols) ||
			bms_is_member(vattno, server_cols);
		v = (in_row && in_other) ? VALUE_UNKNOWN :
			in_row ? VALUE_FROM_ROW :
			in_other ? VALUE_FROM_CLIENT : VALUE_NOT_ASSIGNED;
	}

	while ((x = bms_next_member(client_cols, x)) >= 0)
	{
		if (x != vattno)
			acc->others_client = true;
	}

	acc->version_proposed = !acc->found && vattno != InvalidAttrNumber &&
		bms_is_member(vattno, proposed_cols);
	if (!acc->found || acc->version == VALUE_NOT_ASSIGNED)
		acc->version = v;
	else if (v != VALUE_NOT_ASSIGNED && v != acc->version)
		acc->version = VALUE_UNKNOWN;
	acc->found = true;
}

#else							/* !IDEM_HAVE_PLAN_PROVENANCE */

/*
 * PostgreSQL 13: no hook; every statement is judged as writing client
 * values, which are the 0.1 rules.
 */
void
idem_version_provenance_init(void)
{
}

void
idem_note_guard_function(Oid funcoid)
{
}

void
idem_write_provenance(TriggerData *trigdata, AttrNumber version_attnum,
					  WriteProvenance *result)
{
	result->plan_seen = true;
	result->others_client = true;
	result->version = VALUE_FROM_CLIENT;
	result->version_proposed = false;
}

#endif							/* IDEM_HAVE_PLAN_PROVENANCE */
