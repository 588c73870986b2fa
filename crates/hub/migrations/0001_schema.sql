-- loyalty-hub schema, version 1. See docs/hub.md for why it looks like this.
--
-- Distribution (Citus-style; plain PostgreSQL ignores it): every large table carries the column
-- it would be distributed by, every primary key and unique index includes it, and no foreign
-- key crosses two distribution keys.
--   by store_id:    ingest_positions, store_events, sequence_conflicts
--   by customer_id: customers, customer_stores, ledger_entries, receipts, receipt_lines
--                   (receipts without a customer use the key 'store:<store id>')
--   by voucher_id:  vouchers, redemptions (a voucher is redeemed once chain-wide: the
--                   uniqueness must hold inside one shard)
--   by card:        cards (the lookup table card -> customer)
--   reference/small: change_counter, changes, voucher_keys, customer_merges, double_redemptions

-- What each store (and each database instance of it) has delivered: the gapless sequence.
CREATE TABLE ingest_positions (
    store_id      text        NOT NULL,
    instance      text        NOT NULL,
    last_seq      bigint      NOT NULL DEFAULT 0,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, instance)
);

-- Every event as received (payload verbatim), in ingest order per store and instance.
CREATE TABLE store_events (
    store_id    text        NOT NULL,
    instance    text        NOT NULL,
    seq         bigint      NOT NULL,
    event_id    text        NOT NULL,
    kind        text        NOT NULL,
    at          text        NOT NULL,
    payload     text        NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, instance, seq)
);
CREATE UNIQUE INDEX store_events_event_id ON store_events (store_id, event_id);

-- A sequence number offered again with a different event id (refused batches).
CREATE TABLE sequence_conflicts (
    store_id         text        NOT NULL,
    id               bigserial   NOT NULL,
    instance         text        NOT NULL,
    seq              bigint      NOT NULL,
    stored_event_id  text,
    offered_event_id text        NOT NULL,
    reason           text        NOT NULL,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (store_id, id)
);

CREATE TABLE customers (
    customer_id    text        NOT NULL PRIMARY KEY,
    display_name   text,
    tier           text,
    enrolled_at    timestamptz,
    enrolled_store text,
    merged_into    text,
    erased_at      timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_merged_into ON customers (merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE cards (
    card        text        NOT NULL PRIMARY KEY,
    customer_id text        NOT NULL,
    store_id    text,
    added_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX cards_customer ON cards (customer_id);

-- Which stores know a customer: enrolled there, or last activity there (the feed's window).
CREATE TABLE customer_stores (
    customer_id      text        NOT NULL,
    store_id         text        NOT NULL,
    enrolled         boolean     NOT NULL DEFAULT false,
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, store_id)
);
CREATE INDEX customer_stores_store ON customer_stores (store_id, last_activity_at);

CREATE TABLE ledger_entries (
    customer_id       text        NOT NULL,
    store_id          text        NOT NULL,
    event_id          text        NOT NULL,
    instance          text        NOT NULL,
    store_seq         bigint      NOT NULL,
    entry             bigint      NOT NULL,
    kind              text        NOT NULL,
    points            bigint      NOT NULL,
    receipt_id        text,
    cause_receipt_id  text,
    reference         text,
    reason            text,
    vests_at          timestamptz,
    at                timestamptz NOT NULL,
    store_customer_id text        NOT NULL,
    PRIMARY KEY (customer_id, store_id, event_id)
);

CREATE TABLE receipts (
    customer_key        text        NOT NULL,
    store_id            text        NOT NULL,
    receipt_id          text        NOT NULL,
    event_id            text        NOT NULL,
    customer_id         text,
    kind                text        NOT NULL,
    original_receipt_id text,
    lane                text        NOT NULL,
    card                text,
    currency            text        NOT NULL,
    total               numeric     NOT NULL,
    points              bigint      NOT NULL,
    at                  timestamptz NOT NULL,
    PRIMARY KEY (customer_key, store_id, receipt_id)
);

CREATE TABLE receipt_lines (
    customer_key text    NOT NULL,
    store_id     text    NOT NULL,
    receipt_id   text    NOT NULL,
    line_no      integer NOT NULL,
    sku          text    NOT NULL,
    name         text    NOT NULL,
    category     text,
    qty          numeric NOT NULL,
    amount       numeric NOT NULL,
    unit_price   numeric,
    PRIMARY KEY (customer_key, store_id, receipt_id, line_no)
);

CREATE TABLE vouchers (
    voucher_id  text        NOT NULL PRIMARY KEY,
    store_id    text        NOT NULL,
    customer_id text,
    key_id      text        NOT NULL,
    kind        text        NOT NULL,
    payload     text        NOT NULL,
    valid_from  timestamptz NOT NULL,
    valid_until timestamptz NOT NULL,
    event_id    text        NOT NULL,
    issued_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE redemptions (
    voucher_id  text        NOT NULL PRIMARY KEY,
    store_id    text        NOT NULL,
    receipt_id  text        NOT NULL,
    lane        text        NOT NULL,
    discount    numeric     NOT NULL,
    currency    text        NOT NULL,
    redeemed_at timestamptz NOT NULL,
    event_id    text        NOT NULL
);

-- Abuse found at ingest: a voucher redeemed twice ('voucher'), or points spent beyond the
-- chain-wide balance ('points').
CREATE TABLE double_redemptions (
    id             bigserial   NOT NULL PRIMARY KEY,
    kind           text        NOT NULL,
    voucher_id     text,
    customer_id    text,
    first_store    text,
    first_receipt  text,
    second_store   text        NOT NULL,
    second_receipt text,
    points         bigint,
    balance_after  bigint,
    event_id       text        NOT NULL,
    detected_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE voucher_keys (
    key_id       text        NOT NULL PRIMARY KEY,
    algorithm    text        NOT NULL,
    public_key   text        NOT NULL,
    issuer       text,
    revoked      boolean     NOT NULL DEFAULT false,
    announced_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customer_merges (
    from_id   text        NOT NULL PRIMARY KEY,
    into_id   text        NOT NULL,
    card      text,
    store_id  text        NOT NULL,
    event_id  text        NOT NULL,
    merged_at timestamptz NOT NULL DEFAULT now()
);

-- The change log the feed reads. Ids are taken from change_counter, whose single row is
-- updated as the last statement of every transaction that writes changes: the row lock is
-- held until COMMIT, so ids become visible in commit order and a reader that has seen id N
-- has seen every id below it (docs/hub.md, "The cursor").
CREATE TABLE change_counter (
    id   integer NOT NULL PRIMARY KEY CHECK (id = 1),
    last bigint  NOT NULL
);
INSERT INTO change_counter (id, last) VALUES (1, 0);

CREATE TABLE changes (
    id          bigint      NOT NULL PRIMARY KEY,
    store_id    text,            -- NULL: every store
    kind        text        NOT NULL,
    customer_id text,
    voucher_id  text,
    payload     text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_store ON changes (store_id, id);
CREATE INDEX changes_broadcast ON changes (id) WHERE store_id IS NULL;
