-- luagent schema 1: users and API keys, execution history with its events, run-time settings.
-- JSON columns are `json`, not `jsonb`: a task may hold "\u0000", which jsonb refuses, and records
-- must never be refused for their content.

CREATE TABLE users (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    user_id       uuid REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    key_hash      text NOT NULL UNIQUE,          -- SHA-256 of the key; the key itself is never stored
    prefix        text NOT NULL,                 -- the first characters, to recognise a key in lists
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    rate_limit    integer CHECK (rate_limit > 0),
    rate_window_s integer CHECK (rate_window_s > 0),
    agents        text[],                        -- allow-list of agents, NULL: all
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);

CREATE TABLE executions (
    id           uuid PRIMARY KEY,               -- UUIDv7: ordering by id is ordering by creation
    agent        text NOT NULL,
    version      text,
    status       text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    mode         text NOT NULL DEFAULT 'sync' CHECK (mode IN ('sync', 'async')),
    task         json,
    context      json,
    result       json,
    error        json,
    usage        json,
    duration_ms  double precision,
    "user"       json,
    parent_id    uuid,
    request_id   text,
    created_at   timestamptz NOT NULL,
    started_at   timestamptz,
    finished_at  timestamptz,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX executions_agent_id ON executions (agent, id DESC);
CREATE INDEX executions_status_id ON executions (status, id DESC);
CREATE INDEX executions_created_at ON executions (created_at);
CREATE INDEX executions_parent ON executions (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE execution_events (
    execution_id uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq          integer NOT NULL,
    type         text NOT NULL,
    at           timestamptz NOT NULL,
    data         json,
    PRIMARY KEY (execution_id, seq)
);

CREATE TABLE config (
    key         text PRIMARY KEY,
    value       text NOT NULL,
    secret      boolean NOT NULL DEFAULT false,  -- value is AES-256-GCM ciphertext (LUAGENT_SECRET_KEY)
    updated_at  timestamptz NOT NULL DEFAULT now()
);
