-- `Idempotency-Key` on top-up creation: a repeated request answers with the
-- top-up the first one created (finishing it if the first was cut short).
CREATE TABLE ledger_cmd.topup_keys (
    account_id   text        NOT NULL,
    key          text        NOT NULL,
    request_hash text        NOT NULL,
    topup_id     uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key)
);
