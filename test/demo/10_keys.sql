-- ============================================================================
-- Idempotency keys: a client pays, the network drops the answer, the client
-- retries.  The database makes sure the card is charged once.
-- ============================================================================

CREATE TABLE payments (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id     text NOT NULL,
  amount_cents integer NOT NULL
);

-- The payment handler of an HTTP API, in SQL.  The client sends an
-- Idempotency-Key header with each POST /payments; the handler reserves it,
-- and in the same transaction (atomic mode) makes the payment and stores the
-- response.  A retry of a finished request gets the stored response back.
CREATE FUNCTION pay(idem_key text, request jsonb, OUT http_status integer, OUT body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
  r idem.reservation;
  payment_id bigint;
BEGIN
  r := idem.reserve(idem_key, request);
  IF r.outcome = 'replay' THEN             -- done before: answer as before
    http_status := r.status;
    body := r.response;
    RETURN;
  ELSIF r.outcome = 'in_progress' THEN     -- another worker holds it right now
    http_status := 409;
    body := jsonb_build_object('error', 'request in progress', 'retry_after', r.locked_until);
    RETURN;
  END IF;
  -- acquired: do the work, then store the answer with the fencing token
  INSERT INTO payments (order_id, amount_cents)
  VALUES (request ->> 'order', (request ->> 'amount')::integer)
  RETURNING id INTO payment_id;
  http_status := 201;
  body := jsonb_build_object('payment_id', payment_id, 'status', 'captured');
  PERFORM idem.complete(idem_key, r.token, body, http_status);
EXCEPTION
  WHEN SQLSTATE 'ID001' THEN               -- same key, different request
    http_status := 422;
    body := jsonb_build_object('error', SQLERRM);
END
$$;

-- 1. The first attempt charges the card: 201 Created.
SELECT * FROM pay('9f2c-44e1', '{"order": "A-17", "amount": 4200}');

-- 2. The response was lost; the client sends the very same request again.
--    Nothing is charged: the stored status and body are replayed.
SELECT * FROM pay('9f2c-44e1', '{"order": "A-17", "amount": 4200}');
SELECT * FROM payments;

-- 3. A buggy client reuses the key for a different amount.  It is refused
--    (422), and still nothing is charged.
SELECT * FROM pay('9f2c-44e1', '{"order": "A-17", "amount": 9900}');
SELECT count(*) AS payments FROM payments;

-- Underneath, reserve() refused it with SQLSTATE ID001, the two request
-- fingerprints in the DETAIL:
SELECT * FROM idem.reserve('9f2c-44e1', '{"order": "A-17", "amount": 9900}');
\echo SQLSTATE :SQLSTATE

-- 4. A worker in lease mode: its reservation commits on its own while it
--    calls the card network.  A retry meanwhile is told to wait (409).
SELECT outcome, token, locked_until > clock_timestamp() AS lease_live
FROM idem.reserve('7a1b-0c3d', '{"order": "B-2", "amount": 1500}', lease => '30 seconds');
SELECT http_status, body ->> 'error' AS error FROM pay('7a1b-0c3d', '{"order": "B-2", "amount": 1500}');

-- What the keys look like now, per scope and state.
SELECT scope, state, keys, expired FROM idem.key_stats ORDER BY state;

DROP FUNCTION pay(text, jsonb);
DROP TABLE payments;
