-- Python channel schema 1 (server 0.8.0) or 2 (unreleased master) -> our 101.
--
-- Run by src/store/migrate.rs inside one transaction, after it has renamed
-- the Python tables to python_* and created our empty v101 tables from
-- channel-v101.sql. Python writes booleans as 0/1 and times as floats (kept
-- as REAL; whole seconds come back as INTEGER and are widened by our REAL
-- columns). Rows that violate our NOT NULL columns fail the conversion (and
-- roll it back) instead of being guessed at.

-- Temporary indexes for the per-mailbox/per-nameplate lookups below (the
-- Python side tables have none); they go with the python_* tables.
CREATE INDEX python_nameplate_sides_np ON python_nameplate_sides (nameplates_id, side);
CREATE INDEX python_mailbox_sides_mb ON python_mailbox_sides (mailbox_id, side);

-- Mailboxes. Python's mailbox ids are globally unique (primary key); ours
-- are keyed by (app_id, id). `crowded` records that a third side got in:
-- Python kept that side's row (see mailbox_sides below).
INSERT INTO mailboxes (app_id, id, updated, for_nameplate, crowded)
SELECT m.app_id, m.id, m.updated,
       CASE WHEN m.for_nameplate THEN 1 ELSE 0 END,
       (SELECT count(DISTINCT s.side) FROM python_mailbox_sides s
         WHERE s.mailbox_id = m.id) > 2
  FROM python_mailboxes m
 ORDER BY m.rowid;

-- Mailbox sides. Python's rows carry no app_id: take the mailbox's. Rows of
-- a mailbox that no longer exists are dropped. A repeated (mailbox, side)
-- row cannot come from Python (it looks before inserting); keep the first,
-- as Python's fetchone() would. Python records a third side before refusing
-- it with `crowded`, and that row, still `opened`, keeps the mailbox alive
-- until pruning. Our model never admits a third side (a crowded mailbox
-- holds its first two sides plus the `crowded` flag, which still makes the
-- usage result `crowded`), so keep the two earliest sides by `added`: the
-- legitimate pair can then finish and close the mailbox normally.
INSERT INTO mailbox_sides (app_id, mailbox_id, side, opened, added, mood)
SELECT app_id, mailbox_id, side, opened, added, mood FROM (
  SELECT m.app_id, s.mailbox_id, s.side,
         CASE WHEN s.opened THEN 1 ELSE 0 END AS opened,
         s.added, s.mood, s.r,
         row_number() OVER (PARTITION BY s.mailbox_id ORDER BY s.added, s.r) AS rank
    FROM (SELECT mailbox_id, side, opened, added, mood, rowid AS r,
                 row_number() OVER (PARTITION BY mailbox_id, side ORDER BY rowid) AS dup
            FROM python_mailbox_sides) s
    JOIN python_mailboxes m ON m.id = s.mailbox_id
   WHERE s.dup = 1)
 WHERE rank <= 2
 ORDER BY r;

-- Nameplates: Python's integer `id` goes; ours are keyed by (app_id, name).
-- Python looks a name up with fetchone(), i.e. its first row; a duplicate
-- (which Python never writes) loses to it. The same crowding rule as for
-- mailboxes applies: Python records a third claimer before refusing it.
INSERT INTO nameplates (app_id, name, mailbox_id, crowded)
SELECT app_id, name, mailbox_id, crowded FROM (
  SELECT n.id, n.app_id, n.name, n.mailbox_id,
         (SELECT count(DISTINCT s.side) FROM python_nameplate_sides s
           WHERE s.nameplates_id = n.id) > 2 AS crowded,
         row_number() OVER (PARTITION BY n.app_id, n.name ORDER BY n.id) AS dup
    FROM python_nameplates n)
 WHERE dup = 1
 ORDER BY id;

-- Nameplate sides reference nameplates by Python's integer id: map it
-- through python_nameplates to (app_id, name), for the kept nameplate rows
-- only; then the same duplicate and first-two-by-`added` rules as above.
INSERT INTO nameplate_sides (app_id, name, side, claimed, added)
SELECT app_id, name, side, claimed, added FROM (
  SELECT n.app_id, n.name, s.side,
         CASE WHEN s.claimed THEN 1 ELSE 0 END AS claimed,
         s.added, s.r,
         row_number() OVER (PARTITION BY s.nameplates_id ORDER BY s.added, s.r) AS rank
    FROM (SELECT nameplates_id, side, claimed, added, rowid AS r,
                 row_number() OVER (PARTITION BY nameplates_id, side ORDER BY rowid) AS dup
            FROM python_nameplate_sides) s
    JOIN python_nameplates n ON n.id = s.nameplates_id
   WHERE s.dup = 1
     AND n.id = (SELECT min(n2.id) FROM python_nameplates n2
                  WHERE n2.app_id = n.app_id AND n2.name = n.name))
 WHERE rank <= 2
 ORDER BY r;

-- Messages. Python stores phase, body and msg_id as the plain values (text;
-- msg_id NULL when the `add` had no id) and replays them as such; we store
-- the JSON text of the value: json_quote() turns text into a JSON string and
-- NULL into `null` (a BLOB, which Python cannot write, fails the
-- conversion). server_rx is kept, and so is receive order (rowid). Messages
-- without their mailbox (an `add` that raced a close, protocol.md §12.20)
-- were never replayed by Python and are dropped.
INSERT INTO messages (app_id, mailbox_id, side, phase, body, server_rx, msg_id)
SELECT g.app_id, g.mailbox_id, g.side, json_quote(g.phase), json_quote(g.body),
       g.server_rx, json_quote(g.msg_id)
  FROM python_messages g
 WHERE EXISTS (SELECT 1 FROM python_mailboxes m
                WHERE m.app_id = g.app_id AND m.id = g.mailbox_id)
 ORDER BY g.rowid;

-- The Python tables (children first), and the version 2 connection and
-- address-id bookkeeping, which is about live connections only: we keep
-- none of it (a restart has no connections).
DROP TABLE python_messages;
DROP TABLE python_mailbox_sides;
DROP TABLE python_nameplate_sides;
DROP TABLE python_nameplates;
DROP TABLE python_mailboxes;
DROP TABLE python_version;
DROP TABLE IF EXISTS connection_messages;
DROP TABLE IF EXISTS connections;
DROP TABLE IF EXISTS addrid_generation;
