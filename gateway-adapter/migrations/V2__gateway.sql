-- The gateway's working tables (not read models).

-- Every top-up, for the reconciliation poller and to find a top-up by its
-- Razorpay order. The log stays the truth; this says when to look again.
CREATE TABLE ledger_cmd.topup_polls (
    topup_id     uuid        PRIMARY KEY,
    account_id   text        NOT NULL,
    order_id     text        UNIQUE,
    created_at   timestamptz NOT NULL,
    -- Polls done so far; the schedule doubles the wait after each.
    attempts     integer     NOT NULL DEFAULT 0,
    -- NULL once past the reconciliation horizon.
    next_poll_at timestamptz,
    last_status  text,
    last_error   text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX topup_polls_due ON ledger_cmd.topup_polls (next_poll_at)
    WHERE next_poll_at IS NOT NULL;

-- Razorpay webhooks by `x-razorpay-event-id`: a repeated delivery of a
-- processed event is answered and ignored.
CREATE TABLE ledger_cmd.webhook_events (
    event_id     text        PRIMARY KEY,
    event        text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    topup_id     uuid,
    outcome      text
);
CREATE INDEX webhook_events_received_at ON ledger_cmd.webhook_events (received_at);
