-- loyalty-hub schema, version 2: the admin API (profiles with consent, rules, offers,
-- adjustments), erasure everywhere with per-store confirmation, the export position, central
-- tiers. See docs/hub.md.

-- Consent as head office records it (NULL: unknown); a tier set by head office wins over the
-- computed one.
ALTER TABLE customers ADD COLUMN consent_marketing boolean;
ALTER TABLE customers ADD COLUMN consent_profiling boolean;
ALTER TABLE customers ADD COLUMN tier_override text;

-- The current earning rules (the JSON the feed's `rules` carries); one row.
CREATE TABLE rules (
    id         integer     NOT NULL PRIMARY KEY CHECK (id = 1),
    rules      text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Offers stored verbatim for the feed (the gateway does not consume offers yet).
-- Target: a customer (customer_id) or a segment (segment), exactly one.
CREATE TABLE offers (
    offer_id    text        NOT NULL PRIMARY KEY,
    customer_id text,
    segment     text,
    valid_from  timestamptz NOT NULL,
    valid_until timestamptz NOT NULL,
    offer       text        NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((customer_id IS NULL) <> (segment IS NULL))
);

-- Point adjustments made at head office, sent to one store of the customer, which journals it
-- and uploads it as a `ledger` event with `reference`: the balance counts it through that event.
CREATE TABLE adjustments (
    reference   text        NOT NULL PRIMARY KEY,
    customer_id text        NOT NULL,
    points      bigint      NOT NULL,
    reason      text        NOT NULL,
    store_id    text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Erasures: one per customer id (requested again: the same erasure). No personal data here.
CREATE TABLE erasures (
    customer_id  text        NOT NULL PRIMARY KEY,
    requested_at timestamptz NOT NULL DEFAULT now()
);

-- Per store: pending until the store's `customer_erased` event arrives.
CREATE TABLE erasure_stores (
    customer_id  text        NOT NULL,
    store_id     text        NOT NULL,
    confirmed_at timestamptz,
    event_id     text,
    PRIMARY KEY (customer_id, store_id)
);
CREATE INDEX erasure_stores_pending ON erasure_stores (store_id) WHERE confirmed_at IS NULL;

-- The export position: taken from change_counter like change ids (the row lock is held until
-- COMMIT, so positions become visible in commit order and a reader never skips one).
ALTER TABLE store_events ADD COLUMN export_pos bigint;
WITH numbered AS (
    SELECT store_id, instance, seq,
           (SELECT last FROM change_counter WHERE id = 1)
             + row_number() OVER (ORDER BY ingested_at, store_id, instance, seq) AS pos
    FROM store_events
)
UPDATE store_events e SET export_pos = n.pos FROM numbered n
WHERE e.store_id = n.store_id AND e.instance = n.instance AND e.seq = n.seq;
UPDATE change_counter SET last = last + (SELECT count(*) FROM store_events) WHERE id = 1;
CREATE INDEX store_events_export ON store_events (export_pos);
