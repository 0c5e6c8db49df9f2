-- idem.fingerprint(jsonb): SHA-256 of the canonical jsonb text.

-- Key order and whitespace do not change the fingerprint: jsonb output is canonical.
SELECT idem.fingerprint('{"b": 2, "a": 1}') = idem.fingerprint('{"a":1,"b":2}') AS same;

-- Duplicate keys keep the last value, as jsonb does.
SELECT idem.fingerprint('{"a": 1, "a": 2}') = idem.fingerprint('{"a": 2}') AS same;

-- Different values differ.
SELECT idem.fingerprint('{"a": 1}') = idem.fingerprint('{"a": "1"}') AS same;

-- It is exactly the SHA-256 of the jsonb text output.
SELECT idem.fingerprint(j) = sha256(convert_to(j::text, 'UTF8')) AS matches_sha256,
       length(idem.fingerprint(j)) AS bytes
FROM (VALUES ('{"amount": 100, "currency": "EUR", "items": [1, 2, 3]}'::jsonb),
             ('"just a string"'), ('null'), ('[]'), ('{}')) AS t(j);

SELECT encode(idem.fingerprint('{}'), 'hex');

-- NULL in, NULL out (STRICT): a NULL request has no fingerprint.
SELECT idem.fingerprint(NULL) IS NULL AS is_null;

-- Large documents are fine.
SELECT length(idem.fingerprint(jsonb_build_object('blob', repeat('x', 1000000)))) AS bytes;

-- Declared IMMUTABLE, so it can back an index or a generated column.
SELECT provolatile, proisstrict, proparallel FROM pg_proc
WHERE oid = 'idem.fingerprint(jsonb)'::regprocedure;
