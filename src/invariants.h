/*-------------------------------------------------------------------------
 *
 * invariants.h
 *	  Commit-time invariants (src/invariants.c).
 *
 * IDENTIFICATION
 *	  src/invariants.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_INVARIANTS_H
#define IDEM_INVARIANTS_H

extern void idem_invariants_init(void);

#endif							/* IDEM_INVARIANTS_H */
