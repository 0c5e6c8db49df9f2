-- examples/schema.sql: the schema every example service shares.
--
-- Run once per database, as a superuser or the database owner, after
-- CREATE EXTENSION pg_idem:
--     psql -X -v ON_ERROR_STOP=1 -f examples/schema.sql
--
-- The services connect as idem_example_app, a role that is neither a
-- superuser nor the owner of anything: it writes payments, and reaches
-- pg_idem only through idem.grant_usage, for the scope "payments" and the
-- topics "payment.%" (least privilege, docs/examples.md).

DO $$
BEGIN
  -- Roles are cluster-wide: a second database on the same cluster reuses it.
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'idem_example_app') THEN
    CREATE ROLE idem_example_app LOGIN;
  END IF;
END
$$;

CREATE TABLE payments (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  amount_cents bigint NOT NULL CHECK (amount_cents > 0),
  currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
  -- Not UNIQUE on purpose: pg_idem is what keeps a key from paying twice,
  -- and examples/run.sh counts the rows per key to prove it.
  idempotency_key text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT ON payments TO idem_example_app;

SELECT idem.grant_usage('idem_example_app',
                        scopes => ARRAY['payments'],
                        topics => ARRAY['payment.%']);
