-- pg_idem lives in schema idem, created by CREATE EXTENSION.
CREATE EXTENSION pg_idem;
\dx pg_idem

-- A request fingerprint is the SHA-256 of the canonical jsonb text, so key
-- order and spacing do not matter: these two requests are the same request.
SELECT idem.fingerprint('{"amount": 100, "currency": "EUR"}') =
       idem.fingerprint('{"currency":"EUR","amount":100}') AS same_request;
SELECT encode(idem.fingerprint('{"amount": 100, "currency": "EUR"}'), 'hex') AS fingerprint;
