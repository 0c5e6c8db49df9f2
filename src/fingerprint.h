/*-------------------------------------------------------------------------
 *
 * fingerprint.h
 *	  Request fingerprints, shared by idem.fingerprint() and idem.reserve().
 *
 * IDENTIFICATION
 *	  src/fingerprint.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef IDEM_FINGERPRINT_H
#define IDEM_FINGERPRINT_H

#include "postgres.h"

#include "utils/jsonb.h"

extern void idem_fingerprint_jsonb(Jsonb *request, uint8 *digest);

#endif							/* IDEM_FINGERPRINT_H */
