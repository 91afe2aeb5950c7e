-- Read models of the credit ledger (schema `ledger`), written only by the
-- projectors from the event log. Dashboards query these directly: columns
-- may be added, never renamed.
CREATE SCHEMA IF NOT EXISTS ledger;

-- Where each projector is: the last stream sequence applied.
CREATE TABLE ledger.projection_checkpoints (
    projection text        PRIMARY KEY,
    stream_seq bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per account and bucket. `reserved` (on a service's bucket row):
-- credits held by that service's open reservations.
CREATE TABLE ledger.service_balances (
    account_id      text        NOT NULL,
    bucket          text        NOT NULL,
    balance         numeric     NOT NULL,
    reserved        numeric     NOT NULL,
    granted_total   numeric     NOT NULL,
    consumed_total  numeric     NOT NULL,
    last_stream_seq bigint      NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (account_id, bucket)
);

-- One row per bucket movement; `line` orders the movements of one event.
CREATE TABLE ledger.credit_history (
    stream_seq    bigint      NOT NULL,
    line          smallint    NOT NULL,
    event_id      uuid        NOT NULL,
    account_id    text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    kind          text        NOT NULL,
    service       text,
    bucket        text        NOT NULL,
    credits_delta numeric     NOT NULL,
    balance_after numeric     NOT NULL,
    reference     text,
    topup_id      uuid,
    details       jsonb,
    PRIMARY KEY (stream_seq, line)
);
CREATE INDEX credit_history_account_seq
    ON ledger.credit_history (account_id, stream_seq DESC, line DESC);

CREATE TABLE ledger.topups (
    topup_id         uuid        PRIMARY KEY,
    account_id       text        NOT NULL,
    status           text        NOT NULL,
    bucket           text,
    amount_usd       numeric,
    amount_inr_paise bigint,
    fx_rate          numeric,
    credits          numeric,
    order_id         text,
    payment_id       text,
    method           text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    last_stream_seq  bigint      NOT NULL
);
CREATE INDEX topups_account ON ledger.topups (account_id, created_at DESC);

CREATE TABLE ledger.usage_daily (
    account_id text    NOT NULL,
    service    text    NOT NULL,
    day        date    NOT NULL,
    quantity   bigint  NOT NULL,
    credits    numeric NOT NULL,
    PRIMARY KEY (account_id, service, day)
);
