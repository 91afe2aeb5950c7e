-- What a top-up's status is derived from (payments captured, credited,
-- refunds, disputes), so the projector can fold later events onto a row.
ALTER TABLE ledger.topups ADD COLUMN progress jsonb NOT NULL DEFAULT '{}';
