-- The command side's own tables (not read models): written by the ledger
-- while it decides commands, never by a projector.
CREATE SCHEMA IF NOT EXISTS ledger_cmd;

-- Idempotency index: the outcome of every keyed command, for at least the
-- configured retention. Successes are also in the event log (each event
-- carries its key and request hash); refusals live only here.
CREATE TABLE ledger_cmd.idempotency (
    account_id   text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    -- The reply as sent (JSON text; only the ledger reads it back).
    outcome      text        NOT NULL,
    refused      boolean     NOT NULL,
    stream_seq   bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_created_at ON ledger_cmd.idempotency (created_at);

-- Open reservations, so expiry finds them after a restart without reading
-- every account's history.
CREATE TABLE ledger_cmd.open_reservations (
    account_id     text        NOT NULL,
    reservation_id uuid        NOT NULL,
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (account_id, reservation_id)
);
CREATE INDEX open_reservations_expires_at ON ledger_cmd.open_reservations (expires_at);
