-- Only the ledger's own events count. Each reader of stream LEDGER keeps
-- the chain value of every subject's last genuine event, so a message that
-- does not follow it (or whose headers and envelope disagree) is told apart
-- and skipped, and the subject's chain goes on from its last genuine event.
-- `reader` is a projection's name or `key_index`; rows move in the same
-- transaction as that reader's checkpoint.
CREATE TABLE ledger.chain_heads (
    reader     text   NOT NULL,
    subject    text   NOT NULL,
    stream_seq bigint NOT NULL,
    chain      bytea  NOT NULL,
    PRIMARY KEY (reader, subject)
-- Every batch rewrites its subjects' rows in place: room on each page lets
-- PostgreSQL do so without touching the index (HOT updates).
) WITH (fillfactor = 50);

-- Messages on LEDGER that the ledger did not write, as the projectors met
-- them (one row per message, whichever projector saw it first).
CREATE TABLE ledger.quarantine (
    stream_seq bigint      PRIMARY KEY,
    subject    text        NOT NULL,
    reason     text        NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now()
);

-- A projector stopped on a genuine event it cannot read (a newer schema):
-- where, and why. Cleared when it applies a batch again.
ALTER TABLE ledger.projection_checkpoints
    ADD COLUMN stopped_at_seq bigint,
    ADD COLUMN stopped_reason text;
