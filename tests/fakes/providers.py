#!/usr/bin/env python3
"""Fake AI provider servers for luagent's tests: OpenAI, Anthropic and Gemini on one loopback port.

Python 3.11 standard library only. One `ThreadingHTTPServer` (HTTP/1.1, keep-alive, a thread per
connection) answers all three APIs in their REAL wire formats, JSON and SSE, with tool calls and usage,
and misbehaves on demand when the MODEL NAME asks for it.

Endpoints
---------
  POST /v1/chat/completions                          OpenAI chat completions (Authorization: Bearer KEY)
  POST /v1/messages                                  Anthropic messages (x-api-key: KEY or Authorization:
                                                     Bearer KEY; anthropic-version header required -> 400)
  POST /v1beta/models/{model}:generateContent        Gemini (x-goog-api-key: KEY, or ?key=KEY)
  POST /v1beta/models/{model}:streamGenerateContent?alt=sse   Gemini SSE, lines end in CRLF
       (without alt=sse: one JSON array of the same chunks; /v1/models/... is accepted too)
  GET  /_log     JSON list of the provider requests received, oldest first (control endpoints are not
                 logged). Each entry: seq, time, method, path (with query), provider ("openai" |
                 "anthropic" | "gemini" | "unknown"), model, behaviour, stream, headers (names lowercased;
                 repeated headers joined with ", "), body (parsed JSON; the raw text if not JSON; null if
                 empty), status (filled in once answered; null while hanging), outcome ("ok" | "error" |
                 "cancelled" | "reset" | "hang" ...). `GET /_log?since=N` returns entries with seq > N.
  GET  /_stats   {"open_connections", "in_flight", "hanging", "requests", "completed", "cancelled",
                 "cancelled_by_model", "reset_count"}. open_connections excludes the connection asking.
                 in_flight counts provider requests being answered now (hang/slow/stream included).
                 cancelled counts provider requests whose client went away before the answer was complete
                 (detected during hang / stall / slow waits, between stream chunks, or as a failed write).
  POST /_reset   clears the "once" counters, the log and the counters of /_stats (not open connections).

Deterministic answers (every provider)
--------------------------------------
* "Last user text": the text of the last user turn that carries text (user turns made only of tool
  results are skipped).
* A "tool result" is an OpenAI `role: "tool"` message, an Anthropic `tool_result` block, a Gemini
  `functionResponse` part. Only tool results AFTER the last user text count (so a new question after a
  finished tool round starts a new round). Its content as text: a string as is; a list of text blocks or
  parts joined; a Gemini `response` object -> its "result" / "content" / "output" member if that is a
  string, else the compact JSON of the whole object.
* If a tool result is present: reply text "final: " + that content.
* Else if the request offers tools (and tool_choice is not "none" / Anthropic {"type":"none"} / Gemini
  functionCallingConfig.mode "NONE"): a call to the FIRST tool (or the one tool_choice names) with
  arguments {"query": <last user text>}. Gemini adds "thoughtSignature": "sig-<n>" (n counts up from 1
  per server) to the functionCall part.
* Else reply text "echo: " + last user text.
* Gemini signature check: every functionCall part in a model turn of a request must carry a
  thoughtSignature that this server issued (or Google's documented dummy "skip_thought_signature_validator");
  otherwise 400 INVALID_ARGUMENT, as the real API does for Gemini 3 models.
* Usage: input tokens = whitespace-separated words in all conversation text (system prompt, text of every
  message, tool-result content; not tool definitions, not tool-call arguments). Output tokens = words in
  the reply text; for a tool call, words in the tool name + words in the compact arguments JSON
  (`{"query":"a b"}` is 2 words, so a call is 1 + words of the query, at least 2).
* Streaming splits the reply text word by word (each delta keeps its leading space, so the deltas
  concatenate to the full text) and tool-call arguments into fragments of 8 characters, with
  `chunk_delay` (default 20 ms) between chunks.
* Anthropic also requires "max_tokens" (400 without it), OpenAI "model" and "messages", Gemini "contents".
* Keys: any non-empty key passes unless FakeProviders(api_key=...) / --api-key sets the one accepted key.
  Missing key: OpenAI 401, Anthropic 401, Gemini 403 PERMISSION_DENIED; wrong key: 401, 401, 400
  (API_KEY_INVALID), each in the provider's error shape.

Misbehaviour by MODEL NAME
--------------------------
The behaviour is the token starting at the first "fake-" in the model name (so "claude-fake-500",
"gemini-x-fake-hang" and "fake-500-once-t42" all work). Whatever follows the token ("-t42") only makes a
different name: "once" counters are kept PER FULL MODEL NAME, so a test can isolate itself with a unique
suffix instead of calling POST /_reset. The name a provider sees is after luagent strips "openai/" etc.

  fake-<code>             always answer HTTP <code> (3 digits, e.g. 400 401 404 408 409 429 500 503 529)
                          with the provider's error JSON (see below)
  fake-<code>-once        first request for this model name gets <code>, later ones are normal
  fake-<code>-then-ok     same as -once (e.g. fake-429-then-ok, fake-500-then-ok)
  fake-<code>-x<N>        the first N requests for this model name get <code>, then normal
                          (fake-500-x2: fails twice, the 3rd attempt succeeds; fake-500-x3 outlives 2 retries)
  fake-malformed          200 with a truncated, invalid JSON body (Content-Type application/json); when
                          streaming: 200 SSE whose second event's data is invalid JSON, then the end marker
  fake-reset              streaming: 200 and the first few SSE events (for Anthropic message_start,
                          content_block_start and two text deltas; OpenAI/Gemini two text deltas), then the
                          socket is closed with RST (SO_LINGER 0). Non-streaming: headers with the full
                          Content-Length, half the body, then RST
  fake-stream-error       streaming: 200, two text deltas, then the provider's in-stream error and the
                          connection ends (Anthropic `event: error` {"type":"error","error":{"type":
                          "overloaded_error",...}}; OpenAI `data: {"error":{...,"type":"server_error",
                          "code":"overloaded"}}` with no [DONE]; Gemini `data: {"error":{"code":503,...,
                          "status":"UNAVAILABLE"}}`). Non-streaming: a normal answer
  fake-stream-error-raw   as fake-stream-error, but Gemini's error is the other form the real API uses:
                          pretty-printed JSON {"error": {...}} outside SSE framing (no "data: "), which is the
                          form @google/genai 1.0.0 detects (other providers: same as fake-stream-error)
  fake-hang               reads the request and never answers; waits until the client closes (counted in
                          /_stats "cancelled"), the server stops, or hang_max seconds (default 300) pass
  fake-stall              streaming: 200 and the first text delta, then hangs like fake-hang.
                          Non-streaming: status line and headers (with Content-Length), no body, then hangs
  fake-slow               like a normal answer with slow_delay (default 0.3 s) between stream chunks;
                          non-streaming waits 5 x slow_delay before answering. A client that leaves early
                          is counted as cancelled
  fake-max-tokens         truncated answer: "echo:" with finish_reason "length" / stop_reason "max_tokens"
                          / finishReason "MAX_TOKENS"

Error JSON shapes
-----------------
  OpenAI     {"error": {"message", "type", "param": null, "code"}}; 429 adds headers retry-after: 1 and
             retry-after-ms: 50, type "requests", code "rate_limit_exceeded"
  Anthropic  {"type": "error", "error": {"type", "message"}, "request_id"}; types by status: 400
             invalid_request_error, 401 authentication_error, 403 permission_error, 404 not_found_error,
             413 request_too_large, 429 rate_limit_error (+ retry-after: 1), 529 overloaded_error, others
             api_error
  Gemini     {"error": {"code", "message", "status", "details": [...]}}; 429 is RESOURCE_EXHAUSTED with
             details QuotaFailure, Help and RetryInfo {"retryDelay": "1s"} and NO retry-after header (the
             real API sends none: the delay is only in the body, which is what a client must read)

Use from Python tests
---------------------
    sys.path.insert(0, str(REPO / "tests" / "fakes"))        # or: from tests.fakes.providers import ...
    from providers import FakeProviders
    fake = FakeProviders().start()          # port 0 -> a free port; fake.url = "http://127.0.0.1:PORT"
    env = {"OPENAI_BASE_URL": fake.openai_base_url,           # url + "/v1"
           "ANTHROPIC_BASE_URL": fake.anthropic_base_url,     # url
           "GEMINI_BASE_URL": fake.gemini_base_url}           # url
    ... fake.log(), fake.stats(), fake.reset() (same data as the HTTP endpoints) ...
    fake.stop()
    # or: with FakeProviders() as fake: ...

Command line
------------
    python3 tests/fakes/providers.py --port N [--host 127.0.0.1] [--api-key KEY] [--chunk-delay 0.02]
                                     [--slow-delay 0.3] [--hang-max 300] [--verbose]
    Prints "fake providers listening on http://HOST:PORT" (the real port when N is 0) and serves until
    SIGINT/SIGTERM.
"""

import argparse
import json
import os
import re
import select
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FakeProviders", "parse_behaviour"]

# ----------------------------------------------------------------------------------------------------
# Behaviour names
# ----------------------------------------------------------------------------------------------------

_NAMED = ("stream-error-raw", "stream-error", "max-tokens", "malformed", "reset", "hang", "stall", "slow")
_CODE_RE = re.compile(r"fake-([1-5][0-9]{2})(?![0-9])(?:-(once|then-ok)(?![a-z0-9])|-x([0-9]+)(?![0-9]))?")


def parse_behaviour(model):
    """Return (kind, arg) for a model name.

    kind is "normal", one of _NAMED, or "status"; for "status", arg is (code, times) where times is None
    for "always" and N for "the first N requests of this model name".
    """
    if not isinstance(model, str):
        return ("normal", None)
    i = model.find("fake-")
    while i >= 0:
        rest = model[i:]
        m = _CODE_RE.match(rest)
        if m:
            code = int(m.group(1))
            if m.group(2):
                times = 1
            elif m.group(3):
                times = int(m.group(3))
            else:
                times = None
            return ("status", (code, times))
        for name in _NAMED:
            tok = "fake-" + name
            if rest.startswith(tok) and (len(rest) == len(tok) or not rest[len(tok)].isalnum()):
                return (name, None)
        i = model.find("fake-", i + 1)
    return ("normal", None)


def _words(s):
    return len(s.split()) if isinstance(s, str) else 0


def _split_words(text):
    """Split text into deltas, one word each with its leading whitespace; they concatenate to text."""
    parts = re.findall(r"\s*\S+", text)
    joined = "".join(parts)
    if joined != text:  # trailing whitespace (or an empty text)
        if parts:
            parts[-1] += text[len(joined):]
        else:
            parts = [text]
    return parts


def _fragments(s, n=8):
    return [s[i:i + n] for i in range(0, len(s), n)] or [""]


def _compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class ClientGone(Exception):
    """The client closed the connection before the answer was complete."""


# ----------------------------------------------------------------------------------------------------
# Conversation normalisation: each provider's request -> one neutral view
# ----------------------------------------------------------------------------------------------------

class Conversation:
    """What the fake needs to know about a request, whatever its wire format.

    texts: every text of the conversation (for input token counts)
    last_user_text: text of the last user turn carrying text
    tool_result: content (as text) of the latest tool result after last_user_text, or None
    tools: list of offered tool names, in order
    forced_tool: name tool_choice forces, or None; tools_disabled: tool_choice says none
    """

    def __init__(self):
        self.texts = []
        self.last_user_text = ""
        self.tool_result = None
        self.tools = []
        self.forced_tool = None
        self.tools_disabled = False

    def user_text(self, text):
        self.texts.append(text)
        self.last_user_text = text
        self.tool_result = None

    def tool_output(self, text):
        self.texts.append(text)
        self.tool_result = text

    @property
    def input_tokens(self):
        return sum(_words(t) for t in self.texts)

    def decide(self):
        """('text', text) or ('tool', name, args_dict)."""
        if self.tool_result is not None:
            return ("text", "final: " + self.tool_result)
        if self.tools and not self.tools_disabled:
            name = self.forced_tool if self.forced_tool in self.tools else self.tools[0]
            return ("tool", name, {"query": self.last_user_text})
        return ("text", "echo: " + self.last_user_text)


def _text_of_openai_content(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type") in ("text", "input_text") and
                       isinstance(p.get("text"), str))
    return ""


def conv_openai(body):
    c = Conversation()
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        role = m.get("role")
        text = _text_of_openai_content(m.get("content"))
        if role == "user":
            c.user_text(text)
        elif role in ("tool", "function"):
            c.tool_output(text)
        elif text:
            c.texts.append(text)
    for t in body.get("tools") or []:
        if isinstance(t, dict) and isinstance(t.get("function"), dict) and t["function"].get("name"):
            c.tools.append(t["function"]["name"])
    for f in body.get("functions") or []:  # the legacy form
        if isinstance(f, dict) and f.get("name"):
            c.tools.append(f["name"])
    tc = body.get("tool_choice")
    if tc == "none":
        c.tools_disabled = True
    elif isinstance(tc, dict) and isinstance(tc.get("function"), dict):
        c.forced_tool = tc["function"].get("name")
    return c


def _text_of_anthropic_blocks(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content
                       if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
    return ""


def conv_anthropic(body):
    c = Conversation()
    system = body.get("system")
    if system:
        c.texts.append(_text_of_anthropic_blocks(system))
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        role, content = m.get("role"), m.get("content")
        if isinstance(content, str):
            (c.user_text if role == "user" else c.texts.append)(content)
            continue
        if not isinstance(content, list):
            continue
        text = _text_of_anthropic_blocks(content)
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if role == "user":
            if text and not results:
                c.user_text(text)
            elif text:
                c.texts.append(text)
            for r in results:
                c.tool_output(_text_of_anthropic_blocks(r.get("content", "")))
        elif text:
            c.texts.append(text)
    for t in body.get("tools") or []:
        if isinstance(t, dict) and t.get("name"):
            c.tools.append(t["name"])
    tc = body.get("tool_choice")
    if isinstance(tc, dict):
        if tc.get("type") == "none":
            c.tools_disabled = True
        elif tc.get("type") == "tool":
            c.forced_tool = tc.get("name")
    return c


def _gemini_response_text(resp):
    if isinstance(resp, dict):
        for k in ("result", "content", "output"):
            if isinstance(resp.get(k), str):
                return resp[k]
    if isinstance(resp, str):
        return resp
    return _compact(resp)


def conv_gemini(body):
    c = Conversation()
    si = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(si, dict):
        c.texts.append("".join(p.get("text", "") for p in si.get("parts") or [] if isinstance(p, dict)))
    for turn in body.get("contents") or []:
        if not isinstance(turn, dict):
            continue
        role = turn.get("role") or "user"
        parts = [p for p in turn.get("parts") or [] if isinstance(p, dict)]
        text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str) and not p.get("thought"))
        results = [p for p in parts if isinstance(p.get("functionResponse"), dict)]
        if role == "user" and text and not results:
            c.user_text(text)
        elif text:
            c.texts.append(text)
        for r in results:
            c.tool_output(_gemini_response_text(r["functionResponse"].get("response")))
    for t in body.get("tools") or []:
        if isinstance(t, dict):
            for d in t.get("functionDeclarations") or t.get("function_declarations") or []:
                if isinstance(d, dict) and d.get("name"):
                    c.tools.append(d["name"])
    fcc = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {})
    if fcc.get("mode") == "NONE":
        c.tools_disabled = True
    elif fcc.get("mode") == "ANY" and len(fcc.get("allowedFunctionNames") or []) == 1:
        c.forced_tool = fcc["allowedFunctionNames"][0]
    return c


# ----------------------------------------------------------------------------------------------------
# Error bodies in each provider's shape
# ----------------------------------------------------------------------------------------------------

_OPENAI_ERR = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Request not allowed."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    408: ("server_error", "timeout", "Request timed out."),
    409: ("invalid_request_error", "conflict", "Conflict."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: ("server_error", "overloaded", "The engine is currently overloaded, please try again later."),
    529: ("server_error", "overloaded", "The engine is currently overloaded, please try again later."),
}
_ANTHROPIC_ERR = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error",
}
_ANTHROPIC_MSG = {
    "overloaded_error": "Overloaded", "rate_limit_error": "Number of request tokens has exceeded your "
    "per-minute rate limit", "api_error": "Internal server error",
}
_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def openai_error(code, message=None, etype=None, ecode=None):
    t, c, m = _OPENAI_ERR.get(code, ("server_error" if code >= 500 else "invalid_request_error", None,
                                     f"HTTP {code}"))
    headers = {}
    if code == 429:
        headers = {"retry-after": "1", "retry-after-ms": "50"}
    return code, {"error": {"message": message or m, "type": etype or t, "param": None,
                            "code": ecode if ecode is not None else c}}, headers


def anthropic_error(code, message=None, etype=None, request_id="req_fake"):
    t = etype or _ANTHROPIC_ERR.get(code, "api_error")
    headers = {"retry-after": "1"} if code == 429 else {}
    return code, {"type": "error", "error": {"type": t, "message": message or _ANTHROPIC_MSG.get(t, f"HTTP {code}")},
                  "request_id": request_id}, headers


def gemini_error(code, message=None, status=None, details=None):
    st = status or _GEMINI_STATUS.get(code, "INTERNAL" if code >= 500 else "FAILED_PRECONDITION")
    if code == 429 and details is None:
        message = message or ("You exceeded your current quota, please check your plan and billing details. "
                              "Please retry in 1s.")
        details = [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
                             "quotaId": "GenerateRequestsPerMinutePerProjectPerModel", "quotaValue": "1"}]},
            {"@type": "type.googleapis.com/google.rpc.Help",
             "links": [{"description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"},
        ]
    if code == 503 and not message:
        message = "The model is overloaded. Please try again later."
    err = {"code": code, "message": message or f"HTTP {code}", "status": st}
    if details:
        err["details"] = details
    return code, {"error": err}, {}


_ERROR_FOR = {"openai": openai_error, "anthropic": anthropic_error, "gemini": gemini_error}


# ----------------------------------------------------------------------------------------------------
# The server state shared by all connections
# ----------------------------------------------------------------------------------------------------

class _State:
    def __init__(self, api_key, chunk_delay, slow_delay, hang_max, log_max=10000):
        self.api_key = api_key
        self.chunk_delay = chunk_delay
        self.slow_delay = slow_delay
        self.hang_max = hang_max
        self.log_max = log_max
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conns = set()          # open client sockets
        self.once = {}              # model name -> requests seen (for -once / -xN)
        self.ids = 0                # counter for ids, signatures
        self.sigs = set()           # Gemini thoughtSignatures issued
        self._clear()

    def _clear(self):
        self.log = []
        self.seq = 0
        self.requests = 0
        self.completed = 0
        self.cancelled = 0
        self.cancelled_by_model = {}
        self.resets = 0
        self.in_flight = 0
        self.hanging = 0

    def reset(self):
        with self.lock:
            in_flight, hanging = self.in_flight, self.hanging
            self.once.clear()
            self._clear()
            self.in_flight, self.hanging = in_flight, hanging  # still true of requests being served

    def next_id(self):
        with self.lock:
            self.ids += 1
            return self.ids

    def new_signature(self):
        with self.lock:
            self.ids += 1
            sig = f"sig-{self.ids}"
            self.sigs.add(sig)
            return sig

    def count_once(self, model):
        """How many requests for this model name came before this one."""
        with self.lock:
            n = self.once.get(model, 0)
            self.once[model] = n + 1
            return n

    def add_log(self, entry):
        with self.lock:
            self.seq += 1
            entry["seq"] = self.seq
            self.log.append(entry)
            if len(self.log) > self.log_max:
                del self.log[: len(self.log) - self.log_max]
            self.requests += 1

    def snapshot_log(self, since=0):
        with self.lock:
            return json.loads(json.dumps([e for e in self.log if e["seq"] > since]))

    def stats(self, exclude_self=0):
        with self.lock:
            return {"open_connections": max(0, len(self.conns) - exclude_self), "in_flight": self.in_flight,
                    "hanging": self.hanging, "requests": self.requests, "completed": self.completed,
                    "cancelled": self.cancelled, "cancelled_by_model": dict(self.cancelled_by_model),
                    "reset_count": self.resets}


# ----------------------------------------------------------------------------------------------------
# Per-connection handler
# ----------------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive, chunked responses, 100-continue
    server_version = "fake-providers/1"
    state: _State = None            # set on a subclass per server
    verbose = False

    # --- connection bookkeeping ---

    def setup(self):
        super().setup()
        with self.state.lock:
            self.state.conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        with self.state.lock:
            self.state.conns.discard(self.connection)

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("fake-providers: %s - %s\n" % (self.address_string(), fmt % args))

    # --- low-level I/O ---

    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline(65537)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _write(self, data):
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError) as e:
            raise ClientGone() from e

    def _client_gone(self):
        """True when the peer has closed (EOF or reset) — checked without consuming data."""
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if not r:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (ConnectionResetError, OSError):
            return True

    def _wait(self, seconds):
        """Sleep `seconds`, raising ClientGone as soon as the client disconnects."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if self.state.stopping.is_set():
                raise ClientGone()
            try:
                r, _, _ = select.select([self.connection], [], [], max(0.0, min(left, 0.05)))
            except (ValueError, OSError):
                raise ClientGone()
            if r:
                if self._client_gone():
                    raise ClientGone()
                # Data pipelined by the client: not a disconnect; don't spin on it.
                time.sleep(min(max(left, 0), 0.05))
            if left <= 0:
                return

    def _hang(self):
        """Never answer: return only when the client leaves (ClientGone), the server stops or hang_max."""
        with self.state.lock:
            self.state.hanging += 1
        try:
            self._wait(self.state.hang_max)
        finally:
            with self.state.lock:
                self.state.hanging -= 1
        self.close_connection = True

    def _rst(self):
        """Close the connection abruptly: RST instead of FIN."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # rfile/wfile stay open (the base class flushes wfile after the handler; finish() closes them);
            # detach so that the fd really closes now, although they still reference the socket object.
            with self.state.lock:
                self.state.conns.discard(sock)
            os.close(sock.detach())
        except OSError:
            pass

    def _send_json(self, status, obj, headers=None, raw=None):
        body = raw if raw is not None else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self._cut_json and status == 200:   # fake-reset without streaming: half the body, then RST
            self._write(body[: len(body) // 2])
            time.sleep(0.01)
            self._rst()
            self._did_reset = True
            return
        self._write(body)

    def _start_sse(self, headers=None):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.flush()
        except OSError as e:
            raise ClientGone() from e
        self._sse_open = True

    def _chunk(self, data):
        if isinstance(data, str):
            data = data.encode()
        if data:
            self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_sse(self):
        self._write(b"0\r\n\r\n")
        self._sse_open = False

    # --- dispatch ---

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        self._sse_open = False
        self._cut_json = self._did_reset = False
        st = self.state
        url = urllib.parse.urlsplit(self.path)
        path, query = url.path, urllib.parse.parse_qs(url.query)
        try:
            raw = self._read_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        # Control endpoints
        if path == "/_log" and method == "GET":
            since = int((query.get("since") or ["0"])[0] or 0)
            return self._control(200, st.snapshot_log(since))
        if path == "/_stats" and method == "GET":
            return self._control(200, st.stats(exclude_self=1))
        if path == "/_reset" and method == "POST":
            st.reset()
            return self._control(200, {"ok": True})

        provider, model, stream, gemini_method = "unknown", None, False, None
        if path == "/v1/chat/completions":
            provider = "openai"
        elif path == "/v1/messages":
            provider = "anthropic"
        else:
            m = re.fullmatch(r"/(v1beta|v1|v1alpha)/(?:models|tunedModels)/([^/:]+):(generateContent|streamGenerateContent)",
                             path)
            if m:
                provider, model, gemini_method = "gemini", urllib.parse.unquote(m.group(2)), m.group(3)
                stream = gemini_method == "streamGenerateContent"

        headers = {}
        for k, v in self.headers.items():
            k = k.lower()
            headers[k] = headers[k] + ", " + v if k in headers else v
        body, body_ok = None, True
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body, body_ok = raw.decode("utf-8", "replace"), False
        if provider in ("openai", "anthropic") and isinstance(body, dict):
            model = body.get("model")
            stream = body.get("stream") is True
        kind, arg = parse_behaviour(model)
        entry = {"time": time.time(), "method": method, "path": self.path, "provider": provider, "model": model,
                 "behaviour": kind if kind != "status" else f"status-{arg[0]}", "stream": stream,
                 "headers": headers, "body": body, "status": None, "outcome": None}
        st.add_log(entry)
        with st.lock:
            st.in_flight += 1
        outcome = "ok"
        try:
            if provider == "unknown" or method != "POST":
                status = 404 if provider == "unknown" else 405
                entry["status"] = status
                self._send_json(status, {"error": {"message": f"no route for {method} {url.path}",
                                                   "type": "invalid_request_error", "code": status}})
                return
            outcome = self._provider(provider, entry, headers, query, body, body_ok, model, stream,
                                     gemini_method, kind, arg) or "ok"
        except ClientGone:
            outcome = "cancelled"
            self.close_connection = True
            with st.lock:
                st.cancelled += 1
                st.cancelled_by_model[str(model)] = st.cancelled_by_model.get(str(model), 0) + 1
        finally:
            entry["outcome"] = outcome
            with st.lock:
                st.in_flight -= 1
                if outcome == "reset":
                    st.resets += 1
                if outcome in ("ok", "error"):
                    st.completed += 1

    def _control(self, status, obj):
        try:
            self._send_json(status, obj)
        except ClientGone:
            self.close_connection = True

    # --- provider requests ---

    def _err(self, provider, entry, code, *args, **kw):
        status, obj, headers = _ERROR_FOR[provider](code, *args, **kw)
        entry["status"] = status
        self._send_json(status, obj, headers)
        return "error"

    def _check_key(self, provider, headers, query):
        """Return None when the key is acceptable, else an (code, message, extra kwargs) tuple."""
        want = self.state.api_key
        if provider == "openai":
            auth = headers.get("authorization", "")
            key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            if not key:
                return (401, "You didn't provide an API key. You need to provide your API key in an Authorization "
                             "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", {"ecode": None})
            if want is not None and key != want:
                return (401, "Incorrect API key provided.", {})
        elif provider == "anthropic":
            auth = headers.get("authorization", "")
            key = headers.get("x-api-key", "") or (auth[7:].strip() if auth.lower().startswith("bearer ") else "")
            if not key:
                return (401, "x-api-key header is required", {})
            if want is not None and key != want:
                return (401, "invalid x-api-key", {})
        else:
            key = headers.get("x-goog-api-key", "") or (query.get("key") or [""])[0]
            if not key:
                return (403, "Method doesn't allow unregistered callers (callers without established identity). "
                             "Please use API Key or other form of API consumer identity to call this API.", {})
            if want is not None and key != want:
                return (400, "API key not valid. Please pass a valid API key.",
                        {"details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                      "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]})
        return None

    def _provider(self, provider, entry, headers, query, body, body_ok, model, stream, gemini_method, kind, arg):
        st = self.state
        bad = self._check_key(provider, headers, query)
        if bad:
            code, msg, kw = bad
            return self._err(provider, entry, code, msg, **kw)
        if not body_ok or not isinstance(body, dict):
            return self._err(provider, entry, 400, "We could not parse the JSON body of your request.")
        # Validation of the request, as each API does it
        if provider == "openai":
            if not model or not isinstance(body.get("messages"), list):
                return self._err(provider, entry, 400, "you must provide a model parameter" if not model
                                 else "Missing required parameter: 'messages'.")
            conv = conv_openai(body)
        elif provider == "anthropic":
            if not headers.get("anthropic-version"):
                return self._err(provider, entry, 400, "anthropic-version: header is required")
            if not model:
                return self._err(provider, entry, 400, "model: Field required")
            if not isinstance(body.get("max_tokens"), int):
                return self._err(provider, entry, 400, "max_tokens: Field required")
            if not isinstance(body.get("messages"), list):
                return self._err(provider, entry, 400, "messages: Field required")
            conv = conv_anthropic(body)
        else:
            if not isinstance(body.get("contents"), list) or not body["contents"]:
                return self._err(provider, entry, 400, "* GenerateContentRequest.contents: contents is not specified")
            bad_sig = self._gemini_missing_signature(body)
            if bad_sig:
                return self._err(provider, entry, 400, bad_sig)
            conv = conv_gemini(body)

        # Misbehaviour chosen by the model name
        if kind == "status":
            code, times = arg
            if times is None or st.count_once(model) < times:
                return self._err(provider, entry, code)
        if kind == "hang":
            self._hang()
            return "hang"
        if kind == "malformed":
            entry["status"] = 200
            if stream:
                return self._malformed_stream(provider, model)
            self._send_json(200, None, raw=b'{"id": "broken", "object": "chat.completion", "choices": [{"index": 0, '
                                          b'"message": {"role": "assistant", "content": "tru')
            return "malformed"
        if kind == "slow" and not stream:
            self._wait(5 * st.slow_delay)
        if kind == "stall" and not stream:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "4096")
            self.end_headers()
            self._write(b"")
            entry["status"] = 200
            self._hang()
            return "stall"

        decision = conv.decide()
        if kind == "max-tokens":
            decision = ("text", "echo:")
        entry["status"] = 200
        fn = {"openai": self._openai, "anthropic": self._anthropic, "gemini": self._gemini}[provider]
        self._cut_json = kind == "reset" and not stream
        outcome = fn(body, model, conv, decision, stream, kind, query)
        return "reset" if self._did_reset else outcome

    def _gemini_missing_signature(self, body):
        for i, turn in enumerate(body.get("contents") or []):
            if not isinstance(turn, dict) or turn.get("role") != "model":
                continue
            for j, p in enumerate(turn.get("parts") or []):
                if isinstance(p, dict) and isinstance(p.get("functionCall"), dict):
                    sig = p.get("thoughtSignature") or p.get("thought_signature")
                    if sig != "skip_thought_signature_validator" and sig not in self.state.sigs:
                        name = p["functionCall"].get("name")
                        what = "is missing a thought_signature" if not sig else "has an invalid thought_signature"
                        return (f"Function call {what} in functionCall parts. This is required for tools to work "
                                f"correctly, and missing thought_signature may lead to degraded model performance. "
                                f"Additional data, function call `default_api:{name}` , position {i + 1}. Please "
                                f"refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.")
        return None

    def _delay(self, kind):
        return self.state.slow_delay if kind == "slow" else self.state.chunk_delay

    _CUT_AFTER = {"reset": 2, "stream-error": 2, "stream-error-raw": 2, "stall": 1}

    def _stream_cut(self, provider, kind, sent_deltas, total):
        """Misbehave mid-stream once `sent_deltas` of `total` deltas are out: returns an outcome string, or None
        to go on. The cut always comes before the stream could look complete: before the finish chunk (Gemini
        carries finishReason on its last delta, so there the cut is at most total - 1)."""
        target = self._CUT_AFTER.get(kind)
        if target is None:
            return None
        target = min(target, total - 1 if provider == "gemini" else total)
        if sent_deltas != max(0, target):
            return None
        if kind == "reset":
            self._rst()
            return "reset"
        if kind == "stall":
            self._hang()
            return "stall"
        if kind in ("stream-error", "stream-error-raw"):
            self._wait(self.state.chunk_delay)   # its own network read, as after a real pause
            if provider == "anthropic":
                self._chunk("event: error\ndata: " + json.dumps(
                    {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}) + "\n\n")
            elif provider == "openai":
                self._chunk("data: " + json.dumps({"error": {"message": "The server is overloaded, please try "
                                                             "again later.", "type": "server_error",
                                                             "param": None, "code": "overloaded"}}) + "\n\n")
            elif kind == "stream-error-raw":   # Gemini's other form: pretty-printed JSON outside SSE framing
                self._chunk(json.dumps({"error": {"code": 503, "message": "The model is overloaded. Please try "
                                                  "again later.", "status": "UNAVAILABLE"}}, indent=2) + "\r\n")
            else:
                self._chunk("data: " + json.dumps({"error": {"code": 503, "message": "The model is overloaded. "
                                                             "Please try again later.", "status": "UNAVAILABLE"}})
                            + "\r\n\r\n")
            self._end_sse()   # a well-terminated body: the connection stays usable (keep-alive), as upstream
            return "stream-error"
        return None

    def _malformed_stream(self, provider, model):
        self._start_sse()
        eol = "\r\n" if provider == "gemini" else "\n"
        if provider == "anthropic":
            self._chunk("event: message_start\ndata: " + json.dumps({"type": "message_start", "message": {
                "id": "msg_broken", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}}) + "\n\n")
            self._chunk('event: content_block_start\ndata: {"type": "content_block_start", "index": 0, "content_bl\n\n')
            self._chunk('event: message_stop\ndata: {"type": "message_stop"}\n\n')
        elif provider == "openai":
            self._chunk("data: " + json.dumps({"id": "chatcmpl-broken", "object": "chat.completion.chunk",
                                               "created": int(time.time()), "model": model, "choices": [
                                                   {"index": 0, "delta": {"role": "assistant", "content": ""},
                                                    "finish_reason": None}]}) + "\n\n")
            self._chunk('data: {"id": "chatcmpl-broken", "choices": [{"delta": {"content": "tru\n\n')
            self._chunk("data: [DONE]\n\n")
        else:
            self._chunk('data: {"candidates": [{"content": {"parts": [{"text": "ok"}], "role": "model"}}]}' + eol + eol)
            self._chunk('data: {"candidates": [{"content": {"parts": [{"tex' + eol + eol)
        self._end_sse()
        return "malformed"

    # --- OpenAI ---

    def _openai(self, body, model, conv, decision, stream, kind, query):
        n = self.state.next_id()
        cid, created = f"chatcmpl-fake{n}", int(time.time())
        finish = "length" if kind == "max-tokens" else ("tool_calls" if decision[0] == "tool" else "stop")
        if decision[0] == "tool":
            args = _compact(decision[2])
            out_tokens = _words(decision[1]) + _words(args)
            call = {"id": f"call_fake{n}", "type": "function", "function": {"name": decision[1], "arguments": args}}
        else:
            out_tokens = _words(decision[1])
        usage = {"prompt_tokens": conv.input_tokens, "completion_tokens": out_tokens,
                 "total_tokens": conv.input_tokens + out_tokens,
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
        hdrs = {"x-request-id": f"req_fake{n}", "openai-processing-ms": "1"}
        if not stream:
            msg = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
            if decision[0] == "tool":
                msg["tool_calls"] = [call]
            else:
                msg["content"] = decision[1]
            self._send_json(200, {"id": cid, "object": "chat.completion", "created": created, "model": model,
                                  "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
                                  "usage": usage, "service_tier": "default", "system_fingerprint": "fp_fake"},
                            hdrs)
            return "ok"
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        delay = self._delay(kind)

        def chunk(delta, finish_reason=None):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "service_tier": "default", "system_fingerprint": "fp_fake",
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if include_usage:
                c["usage"] = None
            self._chunk("data: " + json.dumps(c) + "\n\n")

        self._start_sse(hdrs)
        sent = 0
        if decision[0] == "tool":
            chunk({"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": call["id"], "type": "function",
                 "function": {"name": decision[1], "arguments": ""}}]})
            pieces = _fragments(call["function"]["arguments"])
            for p in pieces:
                cut = self._stream_cut("openai", kind, sent, len(pieces))
                if cut:
                    return cut
                self._wait(delay)
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
                sent += 1
        else:
            chunk({"role": "assistant", "content": "", "refusal": None})
            pieces = _split_words(decision[1])
            for w in pieces:
                cut = self._stream_cut("openai", kind, sent, len(pieces))
                if cut:
                    return cut
                self._wait(delay)
                chunk({"content": w})
                sent += 1
        cut = self._stream_cut("openai", kind, sent, len(pieces))
        if cut:
            return cut
        self._wait(delay)
        chunk({}, finish)
        if include_usage:
            self._chunk("data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                               "model": model, "service_tier": "default",
                                               "system_fingerprint": "fp_fake", "choices": [],
                                               "usage": usage}) + "\n\n")
        self._chunk("data: [DONE]\n\n")
        self._end_sse()
        return "ok"

    # --- Anthropic ---

    def _anthropic(self, body, model, conv, decision, stream, kind, query):
        n = self.state.next_id()
        mid = f"msg_fake{n}"
        stop = "max_tokens" if kind == "max-tokens" else ("tool_use" if decision[0] == "tool" else "end_turn")
        if decision[0] == "tool":
            args = _compact(decision[2])
            out_tokens = _words(decision[1]) + _words(args)
            block = {"type": "tool_use", "id": f"toolu_fake{n}", "name": decision[1], "input": decision[2]}
        else:
            out_tokens = _words(decision[1])
            block = {"type": "text", "text": decision[1]}
        hdrs = {"request-id": f"req_fake{n}"}
        usage = {"input_tokens": conv.input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                 "output_tokens": out_tokens, "service_tier": "standard"}
        if not stream:
            self._send_json(200, {"id": mid, "type": "message", "role": "assistant", "model": model,
                                  "content": [block], "stop_reason": stop, "stop_sequence": None, "usage": usage},
                            hdrs)
            return "ok"
        delay = self._delay(kind)

        def event(name, obj):
            self._chunk(f"event: {name}\ndata: " + json.dumps(obj) + "\n\n")

        self._start_sse(hdrs)
        event("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": dict(usage, output_tokens=1)}})
        sent = 0
        if decision[0] == "tool":
            event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": dict(block, input={})})
            event("ping", {"type": "ping"})
            pieces = _fragments(args)
            event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "input_json_delta", "partial_json": ""}})
            for p in pieces:
                cut = self._stream_cut("anthropic", kind, sent, len(pieces))
                if cut:
                    return cut
                self._wait(delay)
                event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "input_json_delta", "partial_json": p}})
                sent += 1
        else:
            event("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})
            event("ping", {"type": "ping"})
            pieces = _split_words(decision[1])
            for i, w in enumerate(pieces):
                cut = self._stream_cut("anthropic", kind, sent, len(pieces))
                if cut:
                    return cut
                self._wait(delay)
                event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                              "delta": {"type": "text_delta", "text": w}})
                sent += 1
                if i == 2:
                    event("ping", {"type": "ping"})
        cut = self._stream_cut("anthropic", kind, sent, len(pieces))
        if cut:
            return cut
        self._wait(delay)
        event("content_block_stop", {"type": "content_block_stop", "index": 0})
        event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                "usage": {"output_tokens": out_tokens}})
        event("message_stop", {"type": "message_stop"})
        self._end_sse()
        return "ok"

    # --- Gemini ---

    def _gemini(self, body, model, conv, decision, stream, kind, query):
        n = self.state.next_id()
        rid = f"fake-resp-{n}"
        finish = "MAX_TOKENS" if kind == "max-tokens" else "STOP"
        inp = conv.input_tokens
        if decision[0] == "tool":
            out_tokens = _words(decision[1]) + _words(_compact(decision[2]))
            parts = [{"functionCall": {"name": decision[1], "args": decision[2]},
                      "thoughtSignature": self.state.new_signature()}]
        else:
            out_tokens = _words(decision[1])
            parts = [{"text": decision[1]}]

        def response(parts, finish_reason, cand_tokens):
            cand = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if finish_reason:
                cand["finishReason"] = finish_reason
            usage = {"promptTokenCount": inp, "totalTokenCount": inp + cand_tokens,
                     "promptTokensDetails": [{"modality": "TEXT", "tokenCount": inp}]}
            if cand_tokens:
                usage["candidatesTokenCount"] = cand_tokens
            return {"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": rid}

        if not stream:
            self._send_json(200, response(parts, finish, out_tokens))
            return "ok"
        sse = (query.get("alt") or [""])[0] == "sse"
        delay = self._delay(kind)
        if decision[0] == "tool":
            chunks = [(parts, finish, out_tokens)]
        else:
            words = _split_words(decision[1])
            chunks, seen = [], 0
            for i, w in enumerate(words):
                seen += _words(w)
                chunks.append(([{"text": w}], finish if i == len(words) - 1 else None, seen))
        if not sse:   # without alt=sse the API streams one JSON array
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._sse_open = True
            for i, (p, f, t) in enumerate(chunks):
                if i:
                    self._wait(delay)
                self._chunk(("[" if i == 0 else ",\r\n") + json.dumps(response(p, f, t)))
            self._chunk("]")
            self._end_sse()
            return "ok"
        self._start_sse()
        sent = 0
        for i, (p, f, t) in enumerate(chunks):
            cut = self._stream_cut("gemini", kind, sent, len(chunks))
            if cut:
                return cut
            if i:
                self._wait(delay)
            self._chunk("data: " + json.dumps(response(p, f, t)) + "\r\n\r\n")
            sent += 1
        self._end_sse()
        return "ok"


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False       # stop() closes connections itself; never wait on a hanging handler
    allow_reuse_address = True
    request_queue_size = 128


class FakeProviders:
    """All three fake APIs on one loopback port, served from a background thread.

        fake = FakeProviders().start()
        fake.url                # "http://127.0.0.1:PORT"
        fake.openai_base_url    # url + "/v1"  (OPENAI_BASE_URL includes the version)
        fake.anthropic_base_url # url          (ANTHROPIC_BASE_URL does not)
        fake.gemini_base_url    # url          (GEMINI_BASE_URL does not)
        fake.log() / fake.stats() / fake.reset()
        fake.stop()
    """

    def __init__(self, host="127.0.0.1", port=0, api_key=None, chunk_delay=0.02, slow_delay=0.3, hang_max=300.0,
                 verbose=False):
        self.host = host
        self._port = port
        self.state = _State(api_key, chunk_delay, slow_delay, hang_max)
        self.verbose = verbose
        self._server = None
        self._thread = None

    # lifecycle
    def start(self):
        handler = type("Handler", (_Handler,), {"state": self.state, "verbose": self.verbose})
        self._server = _Server((self.host, self._port), handler)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fake-providers", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if not self._server:
            return
        self.state.stopping.set()            # wakes hang / slow waits
        self._server.shutdown()
        with self.state.lock:
            conns = list(self.state.conns)
        for c in conns:                      # unblocks keep-alive reads
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        self._thread.join(5)
        self._server = None

    def __enter__(self):
        return self.start() if not self._server else self

    def __exit__(self, *exc):
        self.stop()

    # addresses
    @property
    def port(self):
        return self._port

    @property
    def url(self):
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self._port}"

    @property
    def openai_base_url(self):
        return self.url + "/v1"

    @property
    def anthropic_base_url(self):
        return self.url

    @property
    def gemini_base_url(self):
        return self.url

    # inspection (same data as GET /_log, GET /_stats, POST /_reset)
    def log(self, since=0):
        return self.state.snapshot_log(since)

    def stats(self):
        return self.state.stats()

    def reset(self):
        self.state.reset()

    def wait_for(self, predicate, timeout=5.0, interval=0.02):
        """Poll predicate(stats) until true; return the last stats (tests then assert on them)."""
        deadline = time.monotonic() + timeout
        s = self.stats()
        while not predicate(s) and time.monotonic() < deadline:
            time.sleep(interval)
            s = self.stats()
        return s


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake OpenAI / Anthropic / Gemini servers on one port (see module doc).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    ap.add_argument("--api-key", default=None, help="the only key accepted (default: any non-empty key)")
    ap.add_argument("--chunk-delay", type=float, default=0.02, help="seconds between stream chunks")
    ap.add_argument("--slow-delay", type=float, default=0.3, help="seconds between chunks for fake-slow")
    ap.add_argument("--hang-max", type=float, default=300.0, help="longest a fake-hang request waits")
    ap.add_argument("--verbose", action="store_true", help="log each request to stderr")
    a = ap.parse_args(argv)
    fake = FakeProviders(a.host, a.port, a.api_key, a.chunk_delay, a.slow_delay, a.hang_max, a.verbose).start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"fake providers listening on {fake.url}", flush=True)
    done.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
