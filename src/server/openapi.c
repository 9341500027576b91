/* GET /openapi.json: the OpenAPI 3.1 document (the route table below plus one typed execute
 * operation per agent) and GET /docs: the embedded page that renders it (openapi.h). */
#include "luagent/openapi.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "luagent/ids.h"
#include "luagent/registry.h"
#include "luagent/server.h"
#include "luagent/worker.h"

#include "docs_html.h" /* LG_TEXT_docs: web/docs.html (scripts/embed_text.lua) */
#define LG_DOCS_HTML LG_TEXT_docs
#define LG_DOCS_HTML_LEN (sizeof(LG_TEXT_docs) - 1)

/* JSON written as C tokens: J("a": [1, "b"]) is the string "\"a\": [1, \"b\"]". The preprocessor
 * escapes the quotes; text inside must not hold an apostrophe (write ’). */
#define J(...) J_(__VA_ARGS__) /* two steps: the macros inside (ERROR_RESPONSE...) expand first */
#define J_(...) #__VA_ARGS__
#define ERROR_RESPONSE(text) {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

/* The answers every execute route can give (the generic routes and each agent's own). */
#define EXECUTE_RESPONSES                                                                                             \
    "200": {"$ref": "#/components/responses/ExecuteResult"}, "202": {"$ref": "#/components/responses/Accepted"}, "400": {"$ref": "#/components/responses/BadRequest"},        \
    "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Conflict"}, "413": {"$ref": "#/components/responses/PayloadTooLarge"},        \
    "415": {"$ref": "#/components/responses/UnsupportedMediaType"}, "422": {"$ref": "#/components/responses/ValidationFailed"},                            \
    "500": {"$ref": "#/components/responses/ExecutionFailed"}, "502": {"$ref": "#/components/responses/ProviderError"}, "503": {"$ref": "#/components/responses/Unavailable"}, \
    "504": {"$ref": "#/components/responses/Timeout"}

/* ---- the generic routes: one entry per route and method (DESIGN §5) ----
 * Security, 401/403/429 and "default" are added from the route's role (lg_route_role). */
const lg_openapi_op_t LG_OPENAPI_OPS[] = {
    {LG_ROUTE_HEALTH, "get", "/health",
     J("operationId": "getHealth", "tags": ["service"], "summary": "Liveness",
       "description": "Answers 200 while the process serves HTTP (also on LUAGENT_HEALTH_LISTEN)."),
     J("200": {"description": "The server is alive.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}})},
    {LG_ROUTE_READY, "get", "/ready",
     J("operationId": "getReady", "tags": ["service"], "summary": "Readiness",
       "description": "200 while the server takes work: `degraded` when Postgres or Redis is away (records wait, the cache misses); 503 once it drains."),
     J("200": {"description": "Ready, or degraded.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Ready"}}}},
       "503": {"$ref": "#/components/responses/Unavailable"})},
    {LG_ROUTE_INFO, "get", "/info",
     J("operationId": "getInfo", "tags": ["service"], "summary": "Build and process information"),
     J("200": {"description": "Version, build, workers and agents.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Info"}}}})},
    {LG_ROUTE_METRICS, "get", "/metrics",
     J("operationId": "getMetrics", "tags": ["service"], "summary": "Prometheus metrics",
       "description": "Text exposition format 0.0.4: HTTP requests and durations by route, executions by agent, version and status, AI calls, tokens, retries and errors by provider and model, cache hits, Lua memory, pools and the execution-log queue. Public on LUAGENT_HEALTH_LISTEN; 404 with LUAGENT_METRICS=off."),
     J("200": {"description": "The metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}},
       "404": {"$ref": "#/components/responses/NotFound"})},
    {LG_ROUTE_OPENAPI, "get", "/openapi.json",
     J("operationId": "getOpenApi", "tags": ["service"], "summary": "This document",
       "description": "Built from the routes and the agents as they are loaded now: it changes when an agent file changes. Revalidate with If-None-Match."),
     J("200": {"description": "The OpenAPI 3.1 document.", "headers": {"ETag": {"$ref": "#/components/headers/ETag"}},
               "content": {"application/json": {"schema": {"type": "object"}}}},
       "304": {"$ref": "#/components/responses/NotModified"})},
    {LG_ROUTE_DOCS, "get", "/docs",
     J("operationId": "getDocs", "tags": ["service"], "summary": "API documentation page",
       "description": "A self-contained page that renders /openapi.json and can try each operation."),
     J("200": {"description": "The page.", "headers": {"ETag": {"$ref": "#/components/headers/ETag"}},
               "content": {"text/html": {"schema": {"type": "string"}}}},
       "304": {"$ref": "#/components/responses/NotModified"})},
    {LG_ROUTE_AGENTS, "get", "/api/v1/agents",
     J("operationId": "listAgents", "tags": ["agents"], "summary": "List agents",
       "description": "Every agent file: its serving version, description, input schema and load error."),
     J("200": {"description": "The agents, sorted by name.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentList"}}}})},
    {LG_ROUTE_AGENT, "get", "/api/v1/agents/{name}",
     J("operationId": "getAgent", "tags": ["agents"], "summary": "One agent",
       "parameters": [{"$ref": "#/components/parameters/AgentName"}]),
     J("200": {"description": "The agent.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Agent"}}}}, "404": {"$ref": "#/components/responses/NotFound"})},
    {LG_ROUTE_AGENT_EXECUTE, "post", "/api/v1/agents/{name}/execute",
     J("operationId": "executeAgent", "tags": ["executions"], "summary": "Run an agent by name",
       "description": "The generic form of the typed operations under the `run` tag. `Accept: text/event-stream` streams the execution; `options.mode = async` answers 202 at once.",
       "parameters": [{"$ref": "#/components/parameters/AgentName"}, {"$ref": "#/components/parameters/IdempotencyKey"}],
       "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecuteRequest"}}}}),
     J(EXECUTE_RESPONSES)},
    {LG_ROUTE_EXECUTE, "post", "/api/v1/agent/execute",
     J("operationId": "executeAgentNamedInBody", "tags": ["executions"], "summary": "Run the agent the body names",
       "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
       "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecuteByNameRequest"}}}}),
     J(EXECUTE_RESPONSES)},
    {LG_ROUTE_EXECUTIONS, "get", "/api/v1/executions",
     J("operationId": "listExecutions", "tags": ["executions"], "summary": "Execution history, newest first",
       "parameters": [
           {"name": "agent", "in": "query", "schema": {"$ref": "#/components/schemas/AgentName"}},
           {"name": "status", "in": "query", "schema": {"type": "string",
                                                        "enum": ["queued", "running", "succeeded", "failed"]}},
           {"name": "since", "in": "query", "description": "RFC 3339 time or Unix epoch milliseconds",
            "schema": {"type": "string"}},
           {"name": "parent_id", "in": "query", "description": "only the children of this execution (luagent.agents)",
            "schema": {"type": "string", "format": "uuid"}},
           {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
           {"name": "cursor", "in": "query", "description": "`next_cursor` of the previous page",
            "schema": {"type": "string"}}]),
     J("200": {"description": "A page of executions.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecutionList"}}}},
       "400": {"$ref": "#/components/responses/BadRequest"}, "503": {"$ref": "#/components/responses/Unavailable"})},
    {LG_ROUTE_EXECUTION, "get", "/api/v1/executions/{id}",
     J("operationId": "getExecution", "tags": ["executions"], "summary": "One execution with its events",
       "parameters": [{"$ref": "#/components/parameters/ExecutionId"}]),
     J("200": {"description": "The execution.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Execution"}}}}, "404": {"$ref": "#/components/responses/NotFound"},
       "503": {"$ref": "#/components/responses/Unavailable"})},
    {LG_ROUTE_STATS, "get", "/api/v1/stats",
     J("operationId": "getStats", "tags": ["executions"], "summary": "Counts and latency percentiles per agent over time",
       "description": "For the dashboard's charts: over the window and per time bucket, for all agents and each one. From Postgres when configured (`source: database`), else from the in-memory history (`source: memory`).",
       "parameters": [{"name": "window", "in": "query", "schema": {"type": "string", "enum": ["15m", "1h", "6h", "24h", "7d"], "default": "1h"}}]),
     J("200": {"description": "The statistics.", "content": {"application/json": {"schema": {"type": "object"}}}},
       "400": {"$ref": "#/components/responses/BadRequest"})},
    {LG_ROUTE_KEYS, "get", "/api/v1/keys",
     J("operationId": "listKeys", "tags": ["keys"], "summary": "List API keys"),
     J("200": {"description": "The keys (never their secrets).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeyList"}}}})},
    {LG_ROUTE_KEYS, "post", "/api/v1/keys",
     J("operationId": "createKey", "tags": ["keys"], "summary": "Create an API key",
       "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeyCreate"}}}}),
     J("201": {"description": "The key: its secret is shown this once.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeyCreated"}}}},
       "400": {"$ref": "#/components/responses/BadRequest"}, "503": {"$ref": "#/components/responses/Unavailable"})},
    {LG_ROUTE_KEY, "delete", "/api/v1/keys/{id}",
     J("operationId": "revokeKey", "tags": ["keys"], "summary": "Revoke an API key",
       "parameters": [{"$ref": "#/components/parameters/KeyId"}]),
     J("200": {"description": "Revoked.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeyRevoked"}}}}, "404": {"$ref": "#/components/responses/NotFound"},
       "503": {"$ref": "#/components/responses/Unavailable"})},
    {LG_ROUTE_OAI_CHAT, "post", "/v1/chat/completions",
     J("operationId": "createChatCompletion", "tags": ["openai"], "summary": "Run an agent as an OpenAI model",
       "description": "OpenAI's chat completions format: `model` names the agent, which gets `{messages, params}` as its task. `stream: true` answers `chat.completion.chunk` events and `data: [DONE]`; `stream_options.include_usage` adds a usage chunk.",
       "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}}}),
     J("200": {"description": "A `chat.completion`, or with `stream: true` a `text/event-stream` of `chat.completion.chunk` objects.",
               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                           "text/event-stream": {"schema": {"type": "string"}}}},
       "400": {"$ref": "#/components/responses/BadRequest"}, "404": {"$ref": "#/components/responses/NotFound"},
       "500": ERROR_RESPONSE("The agent failed."), "504": ERROR_RESPONSE("The execution passed its deadline."))},
    {LG_ROUTE_OAI_MODELS, "get", "/v1/models",
     J("operationId": "listModels", "tags": ["openai"], "summary": "The agents the caller may run, as OpenAI models"),
     J("200": {"description": "`{object: list, data: [model]}`", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}}})},
    {LG_ROUTE_OAI_MODEL, "get", "/v1/models/{model}",
     J("operationId": "getModel", "tags": ["openai"], "summary": "One agent as an OpenAI model",
       "parameters": [{"name": "model", "in": "path", "required": true, "schema": {"type": "string"}}]),
     J("200": {"description": "The model.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Model"}}}}, "404": {"$ref": "#/components/responses/NotFound"})},
};
const size_t LG_OPENAPI_NOPS = sizeof(LG_OPENAPI_OPS) / sizeof(LG_OPENAPI_OPS[0]);

static const char COMPONENTS[] = J(
    "securitySchemes": {
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "An API key (`lg_…`, from `luagent keys create` or POST /api/v1/keys) or, when LUAGENT_JWT_* is configured, a JWT whose `role` claim names the role."},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An API key."}},
    "parameters": {
        "AgentName": {"name": "name", "in": "path", "required": true, "schema": {"$ref": "#/components/schemas/AgentName"}},
        "ExecutionId": {"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}},
        "KeyId": {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
        "IdempotencyKey": {"name": "Idempotency-Key", "in": "header", "required": false,
                           "description": "Retries with the same key and body get the first execution’s answer (24 h).",
                           "schema": {"type": "string", "minLength": 1, "maxLength": 255}}},
    "headers": {
        "ETag": {"description": "Changes whenever the content does.", "schema": {"type": "string"}},
        "RetryAfter": {"description": "Seconds to wait.", "schema": {"type": "integer"}},
        "RateLimitLimit": {"description": "Requests allowed per window.", "schema": {"type": "integer"}},
        "RateLimitRemaining": {"description": "Requests left in the window.", "schema": {"type": "integer"}},
        "RateLimitReset": {"description": "Seconds until the budget is whole again.", "schema": {"type": "integer"}}},
    "responses": {
        "ExecuteResult": {
            "description": "The execution succeeded. With `Accept: text/event-stream` the same execution is streamed: `event: token` (data `{\"text\"}`, a model’s text delta), `event: emit` (data: what the agent passed to `ctx.emit`), then exactly one `event: result` (data: the JSON reply below) or `event: error` (data: the error object).",
            "headers": {"X-Cache": {"description": "`hit` or `miss` for an agent with `cache_ttl`",
                                    "schema": {"type": "string", "enum": ["hit", "miss"]}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExecuteResult"}},
                        "text/event-stream": {"schema": {"type": "string"}}}},
        "Accepted": {"description": "`options.mode = async`: queued; poll `status_url`.",
                     "headers": {"Location": {"description": "the status URL", "schema": {"type": "string"}}},
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
        "NotModified": {"description": "Not modified since the ETag in If-None-Match."},
        "BadRequest": ERROR_RESPONSE("`invalid_json` or `invalid_request`."),
        "Unauthenticated": {"description": "`unauthenticated`: no credential, or not a valid one.",
                            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "Forbidden": ERROR_RESPONSE("`forbidden`: the credential’s role (or agent list) does not allow this."),
        "NotFound": ERROR_RESPONSE("`not_found`."),
        "Conflict": ERROR_RESPONSE("`conflict`: the Idempotency-Key is in use or was used with another body."),
        "PayloadTooLarge": ERROR_RESPONSE("`payload_too_large`: past LUAGENT_MAX_BODY_BYTES."),
        "UnsupportedMediaType": ERROR_RESPONSE("`unsupported_media_type`: send application/json."),
        "ValidationFailed": ERROR_RESPONSE("`validation_failed`: the task does not match the agent’s input schema; `details` lists each failing field."),
        "RateLimited": {"description": "`rate_limited`.",
                        "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"},
                                    "RateLimit-Limit": {"$ref": "#/components/headers/RateLimitLimit"},
                                    "RateLimit-Remaining": {"$ref": "#/components/headers/RateLimitRemaining"},
                                    "RateLimit-Reset": {"$ref": "#/components/headers/RateLimitReset"}},
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
        "ExecutionFailed": ERROR_RESPONSE("`agent_error` (the agent’s message), `memory_limit`, `internal_error`, or the code of a table error the agent raised."),
        "ProviderError": ERROR_RESPONSE("`provider_error`: the AI provider failed."),
        "Unavailable": ERROR_RESPONSE("`unavailable`: draining, or a dependency is down."),
        "Timeout": ERROR_RESPONSE("`timeout` or `provider_timeout`."),
        "Error": ERROR_RESPONSE("Any other error.")},
    "schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string", "examples": ["invalid_request", "validation_failed", "agent_error"]},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
                "execution_id": {"type": "string", "format": "uuid"},
                "provider": {"type": "string"},
                "provider_status": {"type": "integer"},
                "details": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationDetail"}}}}}},
        "ValidationDetail": {"type": "object", "required": ["path", "message"], "properties": {
            "path": {"type": "string", "description": "JSON Pointer into the task (`\"\"`: the task itself)"},
            "message": {"type": "string"}}},
        "AgentName": {"type": "string", "minLength": 1, "maxLength": 127,
                      "pattern": "^[A-Za-z0-9_-]+([.][A-Za-z0-9_-]+)*$",
                      "description": "The file name under the agents directory (`team/review.lua`: `team.review`)."},
        "AnyTask": {"description": "Any JSON value but null.", "not": {"type": "null"}},
        "Context": {"type": "object", "description": "Handed to the agent as `ctx.context`.",
                    "properties": {"session_id": {"type": "string"}}},
        "Options": {"type": "object", "properties": {
            "mode": {"type": "string", "enum": ["sync", "async"], "default": "sync"},
            "callback_url": {"type": "string", "format": "uri",
                             "description": "async only: POSTed the final record (signed when LUAGENT_CALLBACK_SECRET is set)."}}},
        "ExecuteRequest": {"type": "object", "required": ["task"], "properties": {
            "task": {"$ref": "#/components/schemas/AnyTask"}, "context": {"$ref": "#/components/schemas/Context"}, "options": {"$ref": "#/components/schemas/Options"}}},
        "ExecuteByNameRequest": {"type": "object", "required": ["agent", "task"], "properties": {
            "agent": {"$ref": "#/components/schemas/AgentName"}, "task": {"$ref": "#/components/schemas/AnyTask"}, "context": {"$ref": "#/components/schemas/Context"},
            "options": {"$ref": "#/components/schemas/Options"}}},
        "ExecuteResult": {"type": "object",
                          "required": ["execution_id", "agent", "version", "status", "result", "duration_ms", "usage"],
                          "properties": {
                              "execution_id": {"type": "string", "format": "uuid"},
                              "agent": {"type": "string"},
                              "version": {"type": "string", "description": "The agent file’s content hash."},
                              "status": {"type": "string", "const": "succeeded"},
                              "result": {"description": "What `execute` returned: any JSON value."},
                              "duration_ms": {"type": "number"},
                              "usage": {"$ref": "#/components/schemas/Usage"}}},
        "Usage": {"type": "object", "description": "Tokens and calls of the AI providers, per execution.",
                  "additionalProperties": true},
        "Accepted": {"type": "object", "required": ["execution_id", "agent", "status", "status_url"],
                     "properties": {"execution_id": {"type": "string", "format": "uuid"}, "agent": {"type": "string"},
                                    "status": {"type": "string"}, "status_url": {"type": "string"}}},
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
        "Ready": {"type": "object", "required": ["status", "checks"], "properties": {
            "status": {"type": "string", "enum": ["ready", "degraded"]},
            "checks": {"type": "object", "additionalProperties": true}}},
        "Info": {"type": "object", "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "build": {"type": "object", "properties": {"date": {"type": "string"}, "compiler": {"type": "string"},
                                                       "luajit": {"type": "string"}, "h2o": {"type": "string"}}},
            "workers": {"type": "integer"}, "pid": {"type": "integer"}, "uptime_s": {"type": "number"},
            "draining": {"type": "boolean", "description": "SIGTERM received"},
            "settings_generation": {"type": "integer", "description": "SIGHUP reloads so far"},
            "features": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "agents": {"type": "integer"},
            "agent_versions": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "version": {"type": "string"}}}}}},
        "ChatRequest": {"type": "object", "required": ["model", "messages"], "properties": {
            "model": {"type": "string", "description": "The agent's name"},
            "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
            "stream": {"type": "boolean"},
            "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}}},
            "additionalProperties": true},
        "ChatCompletion": {"type": "object", "properties": {
            "id": {"type": "string"}, "object": {"type": "string", "const": "chat.completion"},
            "created": {"type": "integer"}, "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object", "properties": {"prompt_tokens": {"type": "integer"},
                                                       "completion_tokens": {"type": "integer"},
                                                       "total_tokens": {"type": "integer"}}}}},
        "Model": {"type": "object", "properties": {
            "id": {"type": "string"}, "object": {"type": "string", "const": "model"},
            "created": {"type": "integer"}, "owned_by": {"type": "string"}}},
        "ModelList": {"type": "object", "properties": {
            "object": {"type": "string", "const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}}},
        "Agent": {"type": "object", "required": ["name", "version", "loaded", "error"], "properties": {
            "name": {"type": "string"},
            "version": {"type": ["string", "null"], "description": "null: the file never loaded"},
            "description": {"type": ["string", "null"]},
            "input": {"type": ["object", "null"], "description": "The input schema (JSON Schema)."},
            "timeout_ms": {"type": "integer"},
            "file": {"type": "string"},
            "loaded": {"type": "boolean"},
            "updated_at_ms": {"type": "integer"},
            "error": {"type": ["string", "null"], "description": "The last load error of the file as it is now."}}},
        "AgentList": {"type": "object", "required": ["items"],
                      "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Agent"}}}},
        "ExecutionEvent": {"type": "object", "properties": {
            "seq": {"type": "integer"}, "type": {"type": "string"}, "at": {"type": "string", "format": "date-time"},
            "data": {}}},
        "Execution": {"type": "object", "required": ["execution_id", "agent", "status"], "properties": {
            "execution_id": {"type": "string", "format": "uuid"},
            "agent": {"type": "string"},
            "version": {"type": ["string", "null"]},
            "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed"]},
            "mode": {"type": "string", "enum": ["sync", "async"]},
            "task": {}, "context": {}, "result": {}, "error": {},
            "usage": {"$ref": "#/components/schemas/Usage"},
            "duration_ms": {"type": ["number", "null"]},
            "user": {"type": ["object", "null"], "properties": {"id": {"type": "string"}, "role": {"type": "string"}}},
            "parent_id": {"type": ["string", "null"]},
            "request_id": {"type": ["string", "null"]},
            "created_at": {"type": ["string", "null"], "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/ExecutionEvent"}}}},
        "ExecutionList": {"type": "object", "required": ["items", "next_cursor"], "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Execution"}},
            "next_cursor": {"type": ["string", "null"]}}},
        "Role": {"type": "string", "enum": ["viewer", "operator", "admin"]},
        "Key": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "role": {"$ref": "#/components/schemas/Role"},
            "prefix": {"type": "string"}, "created_at": {"type": ["string", "null"]},
            "expires_at": {"type": ["string", "null"]}, "last_used_at": {"type": ["string", "null"]},
            "rate_limit": {"type": "integer"}, "rate_window_s": {"type": "integer"}, "revoked": {"type": "boolean"},
            "agents": {"type": ["array", "null"], "items": {"type": "string"}}}},
        "KeyList": {"type": "object", "required": ["items"],
                    "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Key"}}}},
        "KeyCreate": {"type": "object", "required": ["name", "role"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 63}, "role": {"$ref": "#/components/schemas/Role"},
            "rate_limit": {"type": "string", "examples": ["600/min"]},
            "expires_days": {"type": "integer", "minimum": 1, "maximum": 36500},
            "agents": {"type": "array", "items": {"$ref": "#/components/schemas/AgentName"},
                       "description": "The only agents the key may run."}}},
        "KeyCreated": {"type": "object", "required": ["id", "key", "name", "role"], "properties": {
            "id": {"type": "string"}, "key": {"type": "string"}, "name": {"type": "string"},
            "role": {"$ref": "#/components/schemas/Role"}}},
        "KeyRevoked": {"type": "object", "required": ["id", "revoked"],
                       "properties": {"id": {"type": "string"}, "revoked": {"const": true}}}});

static const char HEAD[] = J(
    "openapi": "3.1.0",
    "info": {"title": "luagent", "version": LUAGENT_VERSION,
             "description": "AI agents written in Lua, served over REST. Each loaded agent has its own typed execute operation under the `run` tag; this document is rebuilt when an agent file changes.",
             "license": {"name": "MIT", "identifier": "MIT"}},
    "servers": [{"url": "/", "description": "this server"}],
    "tags": [{"name": "run", "description": "One operation per loaded agent, its task typed by the agent’s input schema."},
             {"name": "executions", "description": "Run agents by name and read the execution history."},
             {"name": "agents", "description": "The agents directory as loaded."},
             {"name": "keys", "description": "API keys (admin)."},
             {"name": "openai", "description": "The OpenAI-compatible face: agents as models (point an OpenAI SDK's base URL at /v1)."},
             {"name": "service", "description": "Health, readiness, build information and this document."}]);

static const char *const ROLE_NAMES[] = {"none", "viewer", "operator", "admin"};

static void security(lg_buf_t *out, lg_role_t role)
{
    if (role == LG_ROLE_NONE) {
        lg_buf_lit(out, "\"security\":[]");
        return;
    }
    lg_buf_printf(out, "\"x-required-role\":\"%s\",\"security\":[{\"bearer\":[]},{\"apiKey\":[]}]", ROLE_NAMES[role & 3]);
}

/* The answers of a route that needs a credential, after the entry's own; "default" for all. */
static void common_responses(lg_buf_t *out, lg_role_t role)
{
    if (role != LG_ROLE_NONE)
        lg_buf_lit(out, J(, "401": {"$ref": "#/components/responses/Unauthenticated"}, "403": {"$ref": "#/components/responses/Forbidden"},
                          "429": {"$ref": "#/components/responses/RateLimited"}));
    lg_buf_lit(out, J(, "default": {"$ref": "#/components/responses/Error"}));
}

static void generic_op(lg_buf_t *out, const lg_openapi_op_t *op)
{
    lg_role_t role = lg_route_role(op->route);
    lg_buf_printf(out, "\"%s\":{", op->method);
    lg_buf_append(out, op->op, strlen(op->op));
    lg_buf_putc(out, ',');
    security(out, role);
    lg_buf_lit(out, ",\"responses\":{");
    lg_buf_append(out, op->responses, strlen(op->responses));
    common_responses(out, role);
    lg_buf_lit(out, "}}");
}

/* One agent's typed execute operation (under the registry's lock: appends only). */
static void agent_op(void *ud, const lg_agent_entry_t *e)
{
    lg_buf_t *out = ud;
    if (e->source == NULL)
        return; /* never loaded: nothing serves it */
    size_t n = strlen(e->name);
    lg_role_t role = lg_route_role(LG_ROUTE_AGENT_EXECUTE);
    lg_buf_lit(out, ",\"/api/v1/agents/");
    lg_buf_append(out, e->name, n); /* [A-Za-z0-9_.-]: nothing to escape in JSON or a path */
    lg_buf_lit(out, "/execute\":{\"post\":{\"operationId\":\"execute_");
    lg_buf_append(out, e->name, n);
    lg_buf_lit(out, "\",\"tags\":[\"run\"],\"summary\":");
    lg_buf_t s = {0};
    lg_buf_printf(&s, "Run %s", e->name);
    lg_buf_json_str(out, s.data, s.len);
    lg_buf_free(&s);
    if (e->description != NULL) {
        lg_buf_lit(out, ",\"description\":");
        lg_buf_json_str(out, e->description, strlen(e->description));
    }
    lg_buf_lit(out, ",\"x-agent\":{\"name\":");
    lg_buf_json_str(out, e->name, n);
    lg_buf_lit(out, ",\"version\":");
    lg_buf_json_str(out, e->version, strlen(e->version));
    lg_buf_printf(out, ",\"timeout_ms\":%d},", e->timeout_ms);
    lg_buf_lit(out, J("parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
                      "requestBody": {"required": true, "content": {"application/json": {"schema": {
                          "type": "object", "required": ["task"], "properties": {"task":));
    if (e->input_json != NULL)
        lg_buf_append(out, e->input_json, strlen(e->input_json));
    else
        lg_buf_lit(out, J({"$ref": "#/components/schemas/AnyTask"}));
    lg_buf_lit(out, J(, "context": {"$ref": "#/components/schemas/Context"}, "options": {"$ref": "#/components/schemas/Options"}}}}}}, ));
    security(out, role);
    lg_buf_lit(out, J(, "responses": {EXECUTE_RESPONSES));
    common_responses(out, role);
    lg_buf_lit(out, "}}}");
}

void lg_openapi_build(lg_buf_t *out)
{
    lg_buf_putc(out, '{');
    lg_buf_lit(out, HEAD);
    lg_buf_lit(out, ",\"paths\":{");
    for (size_t i = 0; i < LG_OPENAPI_NOPS; i++) {
        const lg_openapi_op_t *op = &LG_OPENAPI_OPS[i];
        int first = i == 0 || strcmp(LG_OPENAPI_OPS[i - 1].path, op->path) != 0;
        int last = i + 1 == LG_OPENAPI_NOPS || strcmp(LG_OPENAPI_OPS[i + 1].path, op->path) != 0;
        if (first) {
            if (i > 0)
                lg_buf_putc(out, ',');
            lg_buf_json_str(out, op->path, strlen(op->path));
            lg_buf_lit(out, ":{");
        } else {
            lg_buf_putc(out, ',');
        }
        generic_op(out, op);
        if (last)
            lg_buf_putc(out, '}');
    }
    lg_registry_each(LG_SCRIPT_AGENT, agent_op, out);
    lg_buf_lit(out, "},\"components\":{");
    lg_buf_lit(out, COMPONENTS);
    lg_buf_lit(out, "}}");
}

/* ---- serving ---- */

/* The document as last built, for the agents registry generation it was built from. Every worker
 * reads it under the lock and copies it into its request's pool. */
static struct {
    pthread_mutex_t mu;
    lg_buf_t doc;
    uint64_t gen;
    int built;
    char etag[20];
} cache = {.mu = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t docs_once = PTHREAD_ONCE_INIT;
static char docs_etag[20];

static void etag_of(const char *p, size_t n, char out[20])
{
    snprintf(out, 20, "\"%016llx\"", (unsigned long long)lg_fnv1a(p, n, LG_FNV_OFFSET));
}

static void docs_etag_init(void) { etag_of((const char *)LG_DOCS_HTML, LG_DOCS_HTML_LEN, docs_etag); }

static void add_header(h2o_req_t *req, const char *name, size_t nlen, const char *value, size_t vlen)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, nlen, 0, NULL, value, vlen);
}

/* 1 when the request's If-None-Match names etag (or is "*"). */
static int not_modified(h2o_req_t *req, const char *etag)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    if (i < 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    return (v.len == 1 && v.base[0] == '*') || h2o_strstr(v.base, v.len, etag, strlen(etag)) != SIZE_MAX;
}

static int send_cached(h2o_req_t *req, const char *request_id, const char *type, size_t tlen, const char *etag,
                       const char *body, size_t len)
{
    int status = not_modified(req, etag) ? 304 : 200;
    req->res.status = status;
    req->res.reason = status == 304 ? "Not Modified" : lg_status_reason(status);
    add_header(req, H2O_STRLIT("x-content-type-options"), H2O_STRLIT("nosniff"));
    add_header(req, H2O_STRLIT("x-request-id"), request_id, strlen(request_id));
    add_header(req, H2O_STRLIT("etag"), h2o_strdup(&req->pool, etag, strlen(etag)).base, strlen(etag));
    add_header(req, H2O_STRLIT("cache-control"), H2O_STRLIT("no-cache")); /* keep it, but ask each time */
    if (status == 304) {
        h2o_send_inline(req, NULL, 0);
        return 304;
    }
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type, tlen);
    req->res.content_length = len;
    h2o_send_inline(req, body, len);
    return 200;
}

int lg_openapi_route(h2o_req_t *req, const lg_route_t *route, const char *request_id)
{
    if (route->id == LG_ROUTE_DOCS) {
        pthread_once(&docs_once, docs_etag_init);
        /* the page's own script and style are inline; it talks only to this origin */
        add_header(req, H2O_STRLIT("content-security-policy"),
                   H2O_STRLIT("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                              "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                              "frame-ancestors 'none'"));
        add_header(req, H2O_STRLIT("referrer-policy"), H2O_STRLIT("no-referrer"));
        return send_cached(req, request_id, H2O_STRLIT("text/html; charset=utf-8"), docs_etag,
                           (const char *)LG_DOCS_HTML, LG_DOCS_HTML_LEN);
    }
    pthread_mutex_lock(&cache.mu);
    uint64_t gen = lg_registry_gen(LG_SCRIPT_AGENT); /* read before building: a change during it rebuilds next time */
    if (!cache.built || cache.gen != gen) {
        lg_buf_reset(&cache.doc);
        lg_openapi_build(&cache.doc);
        cache.gen = gen;
        cache.built = 1;
        etag_of(cache.doc.data, cache.doc.len, cache.etag);
    }
    char etag[20];
    memcpy(etag, cache.etag, sizeof(etag));
    h2o_iovec_t doc = h2o_strdup(&req->pool, cache.doc.data, cache.doc.len);
    pthread_mutex_unlock(&cache.mu);
    add_header(req, H2O_STRLIT("access-control-allow-origin"), H2O_STRLIT("*"));
    return send_cached(req, request_id, H2O_STRLIT("application/json"), etag, doc.base, doc.len);
}
