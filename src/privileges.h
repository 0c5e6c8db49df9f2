/*-------------------------------------------------------------------------
 *
 * privileges.h
 *	  Who may touch which idempotency scope, outbox topic and consumer
 *	  (SPEC.md section 4, "Least privilege").
 *
 * IDENTIFICATION
 *	  src/privileges.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_PRIVILEGES_H
#define IDEM_PRIVILEGES_H

#include "postgres.h"

/* Install the emit_log_hook that adds the first-hour HINT (_PG_init) */
extern void idem_privileges_init(void);

/* Are pg_idem's grants in force here (idem.grants exists: version 0.2 on)? */
extern bool idem_privileges_enabled(void);

/* Is userid exempt from every check (a superuser, or a member of pg_idem's owner)? */
extern bool idem_privileges_bypass(Oid userid);

/*
 * 42501, with a HINT naming idem.grant_usage(), unless the current user has
 * a pg_idem grant (its own or inherited) or is exempt.  Every application
 * function calls it first: defence in depth behind EXECUTE, which is not
 * granted to PUBLIC (a role given EXECUTE by hand still needs a grant).
 */
extern void idem_check_granted(const char *fname);

/* 42501 unless the current user may use idempotency keys of scope; fname names the function refused. */
extern void idem_check_scope(text *scope, const char *fname);

/* 42501 unless the current user may emit events of topic. */
extern void idem_check_emit_topic(text *topic);

/* 42501 unless userid may read every topic of a consumer's filter (a NULL filter is every topic). */
extern void idem_check_topic_filter(Oid userid, text *consumer, Datum topics,
									bool topics_null, const char *fname);

/* 42501 unless userid may use the consumer, owned by owner (InvalidOid: a consumer from before 0.2, which has none). */
extern void idem_check_consumer(Oid userid, text *consumer, Oid owner,
								const char *fname);

/*
 * Run the SQL of a function called by an application role with the rights
 * of the owner of pg_idem's tables, the way SECURITY DEFINER would, while
 * the privileges above are checked against the caller.
 */
typedef struct IdemUserSwitch
{
	Oid			save_userid;
	int			save_sec_context;
} IdemUserSwitch;

extern void idem_become_table_owner(Oid relid, IdemUserSwitch *sw);
extern void idem_restore_user(IdemUserSwitch *sw);

#endif							/* IDEM_PRIVILEGES_H */
