-- Head office's figures (issue 17): one row per store and UTC day, kept by the hub's figures job
-- (crates/hub/src/figures.rs) from the rows ingest writes. The dashboard reads at most
-- stores x days rows of it, however many receipts there are. Distributed like the small tables
-- (by store_id; it has no customer column).
CREATE TABLE store_day_figures (
    store_id            text    NOT NULL,
    day                 date    NOT NULL,
    receipts            bigint  NOT NULL DEFAULT 0, -- sales
    member_receipts     bigint  NOT NULL DEFAULT 0, -- sales with a customer
    repeat_receipts     bigint  NOT NULL DEFAULT 0, -- member sales with an earlier sale in this store within 30 days
    member_sales        numeric NOT NULL DEFAULT 0,
    nonmember_sales     numeric NOT NULL DEFAULT 0,
    enrolments          bigint  NOT NULL DEFAULT 0,
    points_issued       bigint  NOT NULL DEFAULT 0, -- earn
    points_redeemed     bigint  NOT NULL DEFAULT 0, -- redeem and voucher conversion, positive
    points_net          bigint  NOT NULL DEFAULT 0, -- every ledger entry: the sum over days is the outstanding balance
    vouchers_issued     bigint  NOT NULL DEFAULT 0,
    vouchers_redeemed   bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, day)
);
CREATE INDEX store_day_figures_day ON store_day_figures (day);

-- Where the job got to: store-days of events ingested after done_through (less a margin for
-- transactions that committed late) are recomputed on the next run.
CREATE TABLE figures_refresh (
    id           integer     NOT NULL PRIMARY KEY CHECK (id = 1),
    done_through timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO figures_refresh (id) VALUES (1);

-- What the recomputation of one store-day reads.
CREATE INDEX store_events_ingested ON store_events (ingested_at);
CREATE INDEX store_events_enrolled ON store_events (store_id, (left(at, 10))) WHERE kind = 'customer_enrolled';
CREATE INDEX receipts_store_at ON receipts (store_id, at);
CREATE INDEX receipts_customer_store_at ON receipts (customer_id, store_id, at) WHERE customer_id IS NOT NULL;
CREATE INDEX ledger_entries_store_at ON ledger_entries (store_id, at);
CREATE INDEX vouchers_store_from ON vouchers (store_id, valid_from);
CREATE INDEX redemptions_store_at ON redemptions (store_id, redeemed_at);
-- Active members across the chain (distinct customers by last activity).
CREATE INDEX customer_stores_activity ON customer_stores (last_activity_at, customer_id);
