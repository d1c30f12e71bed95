-- The tables and columns of CoCalc's hub schema that the kucalc protocol
-- uses (src/packages/util/db-schema/projects.ts and copy-paths.ts: "map" is
-- JSONB, "timestamp" is TIMESTAMP without time zone, "string" is TEXT).
CREATE TABLE projects (
  project_id     UUID PRIMARY KEY,
  title          TEXT,
  users          JSONB,
  settings       JSONB,
  status         JSONB,
  state          JSONB,
  action_request JSONB,
  run_quota      JSONB,
  last_edited    TIMESTAMP,
  last_started   TIMESTAMP,
  deleted        BOOLEAN,
  env            JSONB,
  secret_token   VARCHAR(256),
  site_license   JSONB
);

-- src/packages/util/db-schema/server-settings.ts: site settings, values
-- as strings (default_quotas and max_upgrades hold JSON).
CREATE TABLE server_settings (
  name     TEXT PRIMARY KEY,
  value    TEXT,
  readonly BOOLEAN
);

CREATE TABLE copy_paths (
  id                UUID PRIMARY KEY,
  time              TIMESTAMP,
  source_project_id UUID,
  source_path       TEXT,
  target_project_id UUID,
  target_path       TEXT,
  exclude           TEXT[],
  overwrite_newer   BOOLEAN,
  delete_missing    BOOLEAN,
  backup            BOOLEAN,
  public            BOOLEAN,
  bwlimit           TEXT,
  timeout           NUMERIC,
  scheduled         TIMESTAMP,
  started           TIMESTAMP,
  finished          TIMESTAMP,
  error             TEXT,
  expire            TIMESTAMP
);

-- src/packages/util/db-schema/public-paths.ts: id is a sha1 of project_id
-- and path; disabled paths are no longer published.
CREATE TABLE public_paths (
  id          CHAR(40) PRIMARY KEY,
  project_id  UUID,
  path        TEXT,
  name        TEXT,
  description TEXT,
  disabled    BOOLEAN,
  unlisted    BOOLEAN,
  created     TIMESTAMP,
  last_edited TIMESTAMP
);
