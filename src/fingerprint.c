/*-------------------------------------------------------------------------
 *
 * fingerprint.c
 *	  idem.fingerprint(jsonb): the SHA-256 of a request's canonical text.
 *
 * An idempotency key remembers the fingerprint of the request that first
 * reserved it, so that a retry with a different body is refused instead of
 * replayed.  jsonb's own output is canonical (keys sorted and de-duplicated,
 * whitespace normalized), so two requests that differ only in key order or
 * spacing have the same fingerprint.  The server's own SHA-256 is used, so
 * there is no extra dependency.
 *
 * IDENTIFICATION
 *	  src/fingerprint.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "compat.h"
#include "fingerprint.h"

/*
 * Compute the SHA-256 of a jsonb value's canonical text into digest, which
 * must have room for PG_SHA256_DIGEST_LENGTH bytes.
 */
void
idem_fingerprint_jsonb(Jsonb *request, uint8 *digest)
{
	char	   *text;
	size_t		len;

	text = JsonbToCString(NULL, &request->root, VARSIZE(request));
	len = strlen(text);

#if PG_VERSION_NUM >= 140000
	{
		pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

		if (ctx == NULL ||
			pg_cryptohash_init(ctx) < 0 ||
			pg_cryptohash_update(ctx, (const uint8 *) text, len) < 0 ||
			pg_cryptohash_final(ctx, digest, PG_SHA256_DIGEST_LENGTH) < 0)
		{
			pg_cryptohash_free(ctx);
			elog(ERROR, "pg_idem: could not compute SHA-256 fingerprint");
		}
		pg_cryptohash_free(ctx);
	}
#else
	{
		pg_sha256_ctx ctx;

		pg_sha256_init(&ctx);
		pg_sha256_update(&ctx, (const uint8 *) text, len);
		pg_sha256_final(&ctx, digest);
	}
#endif

	pfree(text);
}

/*
 * Return the fingerprint of a request as a 32-byte bytea.  Declared STRICT
 * and IMMUTABLE: the same jsonb value always has the same fingerprint.
 */
PG_FUNCTION_INFO_V1(idem_fingerprint);
Datum
idem_fingerprint(PG_FUNCTION_ARGS)
{
	Jsonb	   *request = PG_GETARG_JSONB_P(0);
	bytea	   *result = palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH);

	SET_VARSIZE(result, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
	idem_fingerprint_jsonb(request, (uint8 *) VARDATA(result));
	PG_RETURN_BYTEA_P(result);
}
