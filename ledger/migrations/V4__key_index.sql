-- The command side's index of the log, written only by its indexer (never
-- on the command path): every idempotency key of every event on LEDGER, and
-- the open reservations, folded in stream order with the checkpoint in the
-- same transaction. A crash anywhere loses nothing: the log holds every key,
-- and the indexer goes on from its checkpoint.
CREATE TABLE ledger_cmd.key_index (
    account_id   text        NOT NULL,
    key          text        NOT NULL,
    -- The event that holds the key's outcome (a success's last event, or
    -- its command_refused event).
    stream_seq   bigint      NOT NULL,
    request_hash text        NOT NULL,
    recorded_at  timestamptz NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX key_index_recorded_at ON ledger_cmd.key_index (recorded_at);

-- Where the indexer is: every event up to stream_seq is in the index.
CREATE TABLE ledger_cmd.key_index_checkpoint (
    id         boolean     PRIMARY KEY DEFAULT true CHECK (id),
    stream_seq bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ledger_cmd.key_index_checkpoint (stream_seq) VALUES (0);

-- Open reservations are now the indexer's too; rebuild them from the log.
TRUNCATE ledger_cmd.open_reservations;

-- `ledger_cmd.idempotency` (written on the command path until now) stays
-- for reading by hand; the ledger no longer reads or writes it.
