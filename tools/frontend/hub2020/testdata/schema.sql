-- The projects table of the 2020 hub (sagemathinc/cocalc 3539286c47,
-- src/smc-util/db-schema/projects.ts, created by postgres-base.coffee:
-- "map" is JSONB, "timestamp" is TIMESTAMP without time zone), reduced to
-- the columns this package reads and the ones the hub writes next to them.
CREATE TABLE projects (
  project_id     UUID PRIMARY KEY,
  title          TEXT,
  users          JSONB,
  settings       JSONB,
  state          JSONB,
  last_edited    TIMESTAMP,
  last_active    JSONB,
  last_started   TIMESTAMP,
  deleted        BOOLEAN,
  env            JSONB,
  site_license   JSONB,
  run_quota      JSONB
);
