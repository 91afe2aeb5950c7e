-- Balance alerts on their way out: every balance_alert event of the log,
-- as stored, published on `ledger.alerts.<account_id>` and delivered to the
-- configured webhook until it answers 2xx (at least once; receivers
-- de-duplicate by event id). Filled by the alert dispatcher from the log,
-- with its checkpoint in the same transaction.
CREATE TABLE ledger_cmd.alert_outbox (
    event_id        uuid        PRIMARY KEY,
    stream_seq      bigint      NOT NULL,
    account_id      text        NOT NULL,
    payload         text        NOT NULL,
    published_at    timestamptz,
    delivered_at    timestamptz,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
-- The dispatcher looks for what is due on every round: only the pending
-- rows are indexed, so a round costs the same however long the table grows.
CREATE INDEX alert_outbox_due ON ledger_cmd.alert_outbox (next_attempt_at)
    WHERE delivered_at IS NULL;
CREATE INDEX alert_outbox_unpublished ON ledger_cmd.alert_outbox (stream_seq)
    WHERE published_at IS NULL;

CREATE TABLE ledger_cmd.alert_checkpoint (
    stream_seq bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ledger_cmd.alert_checkpoint (stream_seq) VALUES (0);
