-- Channel (live state) database of the Rust wormhole-mailbox server.
-- Version numbers 1 and 2 belong to the Python server's own layout; ours
-- start at 101 so the two can never be confused.
-- Table names match the Python server's, so row-counting tools (the Munin
-- plugins) keep working.
CREATE TABLE version (version INTEGER NOT NULL);
INSERT INTO version (version) VALUES (101);

CREATE TABLE mailboxes (
  app_id TEXT NOT NULL,
  id TEXT NOT NULL,
  updated REAL NOT NULL,          -- expiry clock, seconds since the epoch
  for_nameplate INTEGER NOT NULL, -- created by a nameplate claim
  crowded INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (app_id, id)
);

CREATE TABLE mailbox_sides (
  app_id TEXT NOT NULL,
  mailbox_id TEXT NOT NULL,
  side TEXT NOT NULL,
  opened INTEGER NOT NULL,
  added REAL NOT NULL,
  mood TEXT,
  PRIMARY KEY (app_id, mailbox_id, side)
);

CREATE TABLE nameplates (
  app_id TEXT NOT NULL,
  name TEXT NOT NULL,
  mailbox_id TEXT NOT NULL,
  crowded INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (app_id, name)
);

CREATE TABLE nameplate_sides (
  app_id TEXT NOT NULL,
  name TEXT NOT NULL,
  side TEXT NOT NULL,
  claimed INTEGER NOT NULL,
  added REAL NOT NULL,
  PRIMARY KEY (app_id, name, side)
);

-- phase, body and msg_id hold the JSON text of the value the client sent.
CREATE TABLE messages (
  app_id TEXT NOT NULL,
  mailbox_id TEXT NOT NULL,
  side TEXT NOT NULL,
  phase TEXT NOT NULL,
  body TEXT NOT NULL,
  server_rx REAL NOT NULL,
  msg_id TEXT NOT NULL
);
CREATE INDEX messages_mailbox ON messages (app_id, mailbox_id);
