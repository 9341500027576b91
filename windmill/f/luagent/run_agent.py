"""Run one luagent agent and return its answer.

POST {base_url}/api/v1/agents/{agent}/execute with {"task", "context"} and the API key as a Bearer
token; the answer is luagent's reply: {"execution_id", "agent", "version", "status", "result",
"duration_ms", "usage"}. An error answer ({"error": {"code", "message", "request_id"}}) fails the
step with that code and message.

The other scripts of this folder import `call` and the `luagent` resource type from here (Windmill's
relative imports). Only the Python standard library is used, so the lock is empty.
"""

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import TypedDict


class luagent(TypedDict):
    """The resource type `luagent` (luagent.resource-type.yaml at the root of the sync folder)."""

    base_url: str
    api_key: str


class LuagentError(RuntimeError):
    """luagent answered with an error object (or not with JSON at all)."""

    def __init__(self, status, code, message, request_id=None):
        super().__init__(f"luagent answered {status} {code}: {message}"
                         + (f" (request {request_id})" if request_id else ""))
        self.status, self.code, self.message, self.request_id = status, code, message, request_id


def agent_path(agent: str) -> str:
    return "/api/v1/agents/" + urllib.parse.quote(agent, safe="") + "/execute"


def call(server: luagent, method: str, path: str, body=None, timeout: float = 900.0):
    """One JSON request to luagent; returns the decoded answer, raises LuagentError unless 2xx.
    Inside Windmill the job id goes along as X-Request-Id, so luagent's log and execution record
    name the Windmill job that asked."""
    base = (server.get("base_url") or "").rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"the luagent resource's base_url must be an http(s) URL, not {base!r}")
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if server.get("api_key"):
        headers["Authorization"] = "Bearer " + server["api_key"]
    if os.environ.get("WM_JOB_ID"):
        headers["X-Request-Id"] = os.environ["WM_JOB_ID"]
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        answer = json.loads(raw)
    except ValueError:
        raise LuagentError(status, "invalid_response", raw[:200].decode("utf-8", "replace")) from None
    if not 200 <= status < 300:
        err = answer.get("error") if isinstance(answer, dict) else None
        if not isinstance(err, dict):
            raise LuagentError(status, "invalid_response", json.dumps(answer)[:200])
        raise LuagentError(status, err.get("code"), err.get("message"), err.get("request_id"))
    return answer


def main(server: luagent, agent: str, task: dict, context: dict = None):
    body = {"task": task}
    if context:
        body["context"] = context
    return call(server, "POST", agent_path(agent), body)
