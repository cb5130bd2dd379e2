-- Usage schema 1 -> 2: adds client_versions.
CREATE TABLE client_versions (
  app_id VARCHAR,
  side VARCHAR,
  connect_time INTEGER,
  implementation VARCHAR,
  version VARCHAR
);
CREATE INDEX client_versions_time_idx ON client_versions (connect_time);
CREATE INDEX client_versions_appid_time_idx ON client_versions (app_id, connect_time);
DELETE FROM version;
INSERT INTO version (version) VALUES (2);
