-- The schema a version-1 kiosk created (kiosk/src/store.rs at 4403c13), verbatim, from which
-- the store's migration test builds an old database. A record of the past: never edit it.

-- Which kiosk this database belongs to: seq is per kiosk, so a database must never
-- change hands (a cloned SD card, an edited kiosk.id) silently.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO counters (name, value) VALUES ('outbox_seq', 0);

CREATE TABLE IF NOT EXISTS consultants (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL
) STRICT;

-- Only what the screen needs: surname and title, never a full name or a phone.
CREATE TABLE IF NOT EXISTS customers (
    id            TEXT PRIMARY KEY,
    surname       TEXT NOT NULL,
    title         TEXT NOT NULL CHECK (title IN ('mr', 'ms')),
    tier          TEXT NOT NULL CHECK (tier IN ('normal', 'silver', 'gold')),
    consultant_id TEXT REFERENCES consultants (id)
) STRICT;

CREATE TABLE IF NOT EXISTS cards (
    token       TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    status      TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    note        TEXT
) STRICT;

-- Every recorded tap: counted customer visits (outcome 'welcome', at most one per
-- customer per office day) and uncounted evidence (unknown and denied cards).
CREATE TABLE IF NOT EXISTS visits (
    id              TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL UNIQUE,
    source          TEXT NOT NULL,
    method          TEXT NOT NULL,
    card            TEXT,
    customer_id     TEXT,
    outcome         TEXT NOT NULL,
    reason          TEXT,
    reason_detail   TEXT,
    kind            TEXT,
    consultant_id   TEXT,
    stand_in        INTEGER NOT NULL DEFAULT 0,
    office_day      TEXT NOT NULL,
    device_time     TEXT NOT NULL,
    recorded_at     TEXT NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS visits_one_per_customer_day
    ON visits (customer_id, office_day) WHERE outcome = 'welcome';
CREATE INDEX IF NOT EXISTS visits_by_day ON visits (office_day, seq);

-- What sync will push: the record's JSON frozen at commit, in seq order.
CREATE TABLE IF NOT EXISTS outbox (
    seq       INTEGER PRIMARY KEY,
    record_id TEXT NOT NULL UNIQUE,
    kind      TEXT NOT NULL,
    body      TEXT NOT NULL,
    sent_at   TEXT
) STRICT;
