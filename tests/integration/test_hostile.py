"""Hostile input: well over 100,000 malformed or hostile requests against one server (auth required:
an API key, HS256 JWTs; LUAGENT_MAX_BODY_BYTES 64 KiB).

Two kinds of traffic over raw sockets:
  * well-framed requests with hostile content (mutated JSON bodies, deep nesting, huge strings,
    invalid UTF-8, overlong encodings, NUL bytes, odd agent names and paths, wrong methods, query
    junk, junk Idempotency-Keys, auth headers and request ids, many headers), pipelined in batches on
    keep-alive connections by a few threads: each must get exactly one well-formed HTTP response,
    never a 5xx, with a JSON body (an `{"error": {code, message, request_id}}` one for errors);
  * framing tricks (duplicate or junk Content-Length, bad Transfer-Encoding, huge header blocks,
    too many headers, bare LF/CR, NUL in names, garbage request lines, oversized bodies,
    smuggling attempts), one per connection with the write side shut: whatever comes back must be
    well-formed HTTP without a 5xx (h2o answers framing errors itself, in plain text), or nothing.

Afterwards the server is alive, /health answers 200, its log holds no sanitizer report, and it exits
0 on SIGTERM (ServerTestCase). The count is LUAGENT_HOSTILE_REQUESTS (default 100,000 well-framed
requests, plus 3,000 framing cases), the same on the ASan build: it answers about 4,000 a second
there, fast enough not to scale the count with LUAGENT_TEST_SLOW.
"""

import base64
import hashlib
import hmac
import json
import os
import random
import re
import selectors
import socket
import threading
import time

from .harness import SLOW, ServerTestCase, measure

MAX_BODY = 64 * 1024
SECRET = "hostile-" + "k" * 40
REQID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
TOKEN_RE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

WHO = r'''
return { execute = function(task, ctx) return {id = ctx.user.id, role = ctx.user.role, task = task} end }
'''
STRICT = r'''
return {
  input = {type = "object", required = {"n"}, additionalProperties = false,
           properties = {n = {type = "integer", minimum = 0, maximum = 10},
                         s = {type = "string", maxLength = 4, pattern = "^[a-z]*$"},
                         l = {type = "array", items = {type = "boolean"}, maxItems = 3}}},
  execute = function(task) return task end,
}
'''


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims, header=None, secret=SECRET):
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(claims if isinstance(claims, bytes) else json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


# ---- a strict incremental HTTP/1.1 response parser ----------------------------------------------

class BadResponse(Exception):
    pass


def parse_one(buf, head_only=False):
    """-> (status, headers {lowercase: [values]}, body, consumed) or None when incomplete.
    Raises BadResponse on anything that is not well-formed HTTP/1.1."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise BadResponse(f"no end of headers in {buf[:200]!r}")
        return None
    lines = buf[:end].split(b"\r\n")
    m = re.match(rb"^HTTP/1\.[01] ([1-5][0-9][0-9]) [\x20-\x7e]*$", lines[0])
    if not m:
        raise BadResponse(f"bad status line {lines[0][:200]!r}")
    status = int(m.group(1))
    headers = {}
    for l in lines[1:]:
        if b"\r" in l or b"\n" in l or b"\0" in l:
            raise BadResponse(f"control byte in header line {l[:200]!r}")
        name, sep, value = l.partition(b":")
        if not sep or not TOKEN_RE.match(name):
            raise BadResponse(f"bad header line {l[:200]!r}")
        headers.setdefault(name.decode().lower(), []).append(value.strip().decode("latin-1"))
    pos = end + 4
    if 100 <= status < 200 and status != 101:
        return status, headers, b"", pos
    if head_only or status in (204, 304):
        return status, headers, b"", pos
    te = headers.get("transfer-encoding")
    cl = headers.get("content-length")
    if te:
        if cl or te != ["chunked"]:
            raise BadResponse(f"transfer-encoding {te} with content-length {cl}")
        body = bytearray()
        while True:
            e = buf.find(b"\r\n", pos)
            if e < 0:
                return None
            size_s = buf[pos:e].split(b";")[0]
            if not re.match(rb"^[0-9a-fA-F]{1,8}$", size_s):
                raise BadResponse(f"bad chunk size {buf[pos:e][:50]!r}")
            size = int(size_s, 16)
            if len(buf) < e + 2 + size + 2:
                return None
            if buf[e + 2 + size:e + 4 + size] != b"\r\n":
                raise BadResponse("chunk not followed by CRLF")
            body += buf[e + 2:e + 2 + size]
            pos = e + 4 + size
            if size == 0:
                return status, headers, bytes(body), pos
    if cl:
        if len(cl) != 1 or not cl[0].isdigit():
            raise BadResponse(f"content-length {cl}")
        n = int(cl[0])
        if len(buf) < pos + n:
            return None
        return status, headers, buf[pos:pos + n], pos + n
    return ("close", status, headers, pos)  # read to close: only at the end of a connection


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.statuses = {}
        self.by_kind = {}
        self.failures = []
        self.no_reply = 0

    def add(self, kind, status):
        with self.lock:
            self.requests += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            k = self.by_kind.setdefault(kind, {})
            k[status] = k.get(status, 0) + 1

    def fail(self, msg):
        with self.lock:
            if len(self.failures) < 30:
                self.failures.append(msg)
            else:
                self.failures[-1] = f"... and more; last: {msg}"


def check_reply(stats, kind, req, status, headers, body, ours=True):
    """The assertions every answer must pass. `ours`: the request reached our handler (not h2o's
    own framing errors), so the body must be JSON."""
    stats.add(kind, status)
    if status >= 500:
        stats.fail(f"[{kind}] {status} for {req[:300]!r}: {body[:300]!r}")
        return
    for h in ("set-cookie", "x-injected", "injected"):
        if h in headers:
            stats.fail(f"[{kind}] header {h} in the answer to {req[:300]!r}")
    if not ours or req.startswith(b"HEAD "):
        return
    rid = headers.get("x-request-id")
    if not rid or len(rid) != 1 or not REQID_RE.match(rid[0]):
        stats.fail(f"[{kind}] bad x-request-id {rid} for {req[:200]!r}")
    ct = (headers.get("content-type") or [""])[0]
    if ct.startswith("text/event-stream"):
        if status != 200 or not body.startswith(b": stream open"):
            stats.fail(f"[{kind}] odd event stream {status} {body[:200]!r}")
        return
    if not ct.startswith("application/json"):
        stats.fail(f"[{kind}] {status} with content-type {ct!r} for {req[:200]!r}: {body[:200]!r}")
        return
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        stats.fail(f"[{kind}] {status} body is not JSON ({e}) for {req[:200]!r}: {body[:300]!r}")
        return
    if status >= 400:
        err = doc.get("error") if isinstance(doc, dict) else None
        if not (isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str)
                and err.get("request_id") == rid[0]):
            stats.fail(f"[{kind}] {status} error body without code/message/request_id: {body[:300]!r}")


# ---- request generators ---------------------------------------------------------------------------

VALID_BODIES = [
    b'{"task":{"text":"hello","n":[1,2.5,-0,1e300,null,true,false],"o":{}},"context":{"user":"u1"}}',
    b'{"task":"h\\u00e9llo \\ud83d\\ude00","options":{"mode":"sync"}}',
    b'{"task":{"n":3,"s":"abc","l":[true,false]}}',
    b'{"agent":"echo","task":[[],{},[{}],""]}',
    b'{"task":{"name":"world"},"context":{"a":{"b":[1]}},"options":{"mode":"async"}}',
    b'{"task":9007199254740993,"options":null,"context":null}',
]
ROUTES = ["/api/v1/agents/echo/execute", "/api/v1/agents/hello/execute", "/api/v1/agents/strict/execute",
          "/api/v1/agents/who/execute", "/api/v1/agent/execute"]
NAMES = ["..%2f..%2fetc%2fpasswd", "../../etc/passwd", "..", ".", "%2e%2e", "%2e%2e%2f%2e%2e", "echo%00", "%00",
         "echo%2500", "%C3%A9cho", "\xc3\xa9cho", "\xff\xfe", "echo;rm%20-rf", "echo%20", "ECHO", "team.review",
         "team/review", "team%2freview", "team..review", ".echo", "echo.", "a" * 127, "a" * 128, "b" * 5000,
         "echo%0d%0aX-Injected:%201", "echo\\..\\x", "%ff", "%", "%%", "%zz", "echo?x", "echo#x", "~root",
         "%u002e%u002e", "..;", "e%09cho", "who", "strict", "hello"]
BAD_UTF8 = [b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
            b"\xff", b"\xfe\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\xc1\xbf"]
ESCAPES = [b"\\ud800", b"\\udc00", b"\\ud800\\u0041", b"\\udbff\\udfff", b"\\u0000", b"\\uZZZZ", b"\\u12",
           b"\\x41", b"\\'", b"\\", b"\\U0001F600", b"\\u00"]
JUNK = [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\x00", b"\n", b"\t", b" ", b"-", b"0", b"1e999",
        b"true", b"nul", b"NaN", b"Infinity", b"-0", b"0x10", b"01", b".5", b"1.", b"1e", b"\xef\xbb\xbf", b"/*",
        b"\x7f", b"\x1f", b"\xe2\x80\xa8"]


def mutate(rng, body):
    b = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        p = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(p, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[p:p] = rng.choice(JUNK)
        elif op == 2 and b:
            del b[p:p + rng.randint(1, 8)]
        elif op == 3:
            b[p:p] = rng.choice(BAD_UTF8)
        elif op == 4:
            b[p:p] = rng.choice(ESCAPES)
        elif op == 5 and b:
            q = rng.randrange(len(b))
            b[p:p] = b[q:q + rng.randint(1, 40)]
        elif op == 6:
            del b[p:]
        else:
            b[p:p] = bytes([rng.randrange(256)])
    return bytes(b)


def nested(rng):
    d = rng.choice([63, 64, 65, 127, 128, 129, 1000, 20000])
    kind = rng.randrange(5)
    if kind == 0:
        inner = b"[" * d + b"]" * d
    elif kind == 1:
        inner = b'{"a":' * d + b"1" + b"}" * d
    elif kind == 2:
        inner = b"[" * d  # never closed
    elif kind == 3:
        inner = b'[{"a":' * (d // 2) + b"null" + b"}]" * (d // 2)
    else:
        inner = b"[" * d + b"]" * (d - 1)  # one short
    return b'{"task":' + inner + b"}"


def huge(rng):
    target = rng.choice([MAX_BODY - 300, MAX_BODY - 1, MAX_BODY, MAX_BODY + 1, MAX_BODY + 300, 3 * MAX_BODY,
                         MAX_BODY - 20])
    fill = rng.choice([b"a", b"\\u00e9", b"\xc3\xa9", b"\\\\", b'\\"', b"\xff"])
    head, tail = b'{"task":"', b'"}'
    n = max(0, target - len(head) - len(tail))
    s = (fill * (n // len(fill) + 1))[:n]
    return head + s + tail


def strings(rng):
    parts = [rng.choice(BAD_UTF8 + ESCAPES + [b"ok", b"\xc3\xa9", b"\\n", b"\x00", b"\x01", b"\\u0000"])
             for _ in range(rng.randint(1, 6))]
    s = b"".join(parts)
    shape = rng.randrange(4)
    if shape == 0:
        return b'{"task":"' + s + b'"}'
    if shape == 1:
        return b'{"task":{"' + s + b'":1}}'
    if shape == 2:
        return b'{"agent":"' + s + b'","task":1}'
    return b'{"task":1,"options":{"mode":"' + s + b'","callback_url":"http://127.0.0.1:1/' + s + b'"}}'


class Gen:
    """Well-framed requests with hostile content: -> (kind, request bytes)."""

    def __init__(self, seed, api_key):
        self.rng = random.Random(seed)
        self.api_key = api_key
        self.n = 0

    def auth(self):
        rng = self.rng
        if rng.random() < 0.8:
            return f"Authorization: Bearer {self.api_key}\r\n"
        return f"Authorization: Bearer {self.jwt()}\r\n"

    def jwt(self):
        rng = self.rng
        sub = rng.choice(["u" * 38 + "\u00e9", "user\"x", "a\u0000b", "\u2028", "x" * 255, "<script>", "e\u0301"])
        c = {"sub": sub, "role": rng.choice(["operator", "admin", "viewer", "root", ""]),
             "exp": int(time.time()) + 600}
        return hs256(c)

    def junk_auth(self):
        rng = self.rng
        good = hs256({"sub": "s", "role": "operator", "exp": int(time.time()) + 600})
        flipped = bytearray(good.encode())
        i = rng.randrange(len(flipped))
        flipped[i] = ord(rng.choice("AZaz09-_.=+/ "))
        v = rng.choice([
            b"Bearer", b"Bearer ", b"Bearer  " + self.api_key.encode(), b"bearer " + self.api_key.encode(),
            b"Basic YWRtaW46YWRtaW4=", b"Bearer " + self.api_key.encode()[:-1], b"Bearer " + b"A" * 9000,
            b"Bearer lg_" + b"x" * 43, b"Bearer " + bytes(flipped), b"Bearer a.b.c", b"Bearer ..",
            b"Bearer " + hs256({"sub": "s", "role": "admin", "exp": 1}).encode(),
            b"Bearer " + hs256({"sub": "s", "role": "admin", "exp": int(time.time()) + 60},
                               header={"alg": "none"}).encode(),
            b"Bearer " + hs256({"sub": "s", "exp": int(time.time()) + 60}, header={"alg": "HS256", "crit": ["x"]}).encode(),
            b"Bearer " + hs256(b"\xff\xfe{not json", header={"alg": "HS256"}).encode(),
            b"Bearer " + hs256({"sub": 5, "exp": "soon", "role": ["admin"]}).encode(),
            b"Bearer \xc3\xa9\xff", b"Digest x", b"Bearer " + b".".join([b"eyJ" * 100] * 3),
        ])
        hdr = rng.choice([b"Authorization", b"authorization", b"X-API-Key", b"Authorization"])
        return hdr + b": " + v + b"\r\n"

    def request(self, method, path, body=None, headers=b"", ctype=b"application/json", auth=True):
        h = [method.encode() if isinstance(method, str) else method, b" ",
             path.encode("latin-1") if isinstance(path, str) else path, b" HTTP/1.1\r\nHost: t\r\n"]
        if auth:
            h.append(self.auth().encode())
        h.append(headers)
        if body is not None:
            if ctype is not None:
                h.append(b"Content-Type: " + ctype + b"\r\n")
            h.append(b"Content-Length: %d\r\n" % len(body))
        h.append(b"\r\n")
        if body is not None:
            h.append(body)
        return b"".join(h)

    def next(self):
        rng = self.rng
        self.n += 1
        k = rng.randrange(100)
        route = rng.choice(ROUTES)
        if k < 40:
            return "mutated", self.request("POST", route, mutate(rng, rng.choice(VALID_BODIES)))
        if k < 45:
            return "valid", self.request("POST", route, rng.choice(VALID_BODIES))
        if k < 50:
            return "nesting", self.request("POST", route, nested(rng))
        if k < 52:
            return "huge", self.request("POST", route, huge(rng))
        if k < 60:
            return "strings", self.request("POST", route, strings(rng))
        if k < 68:
            name = rng.choice(NAMES)
            if rng.random() < 0.6:
                return "names", self.request("POST", f"/api/v1/agents/{name}/execute", rng.choice(VALID_BODIES))
            return "names", self.request("GET", f"/api/v1/agents/{name}")
        if k < 73:
            m = rng.choice(["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO", "get", "POST", "GET"])
            p = rng.choice(ROUTES + ["/health", "/ready", "/api/v1/agents", "/api/v1/executions", "/api/v1/keys",
                                     "/api/v1/executions/00000000-0000-0000-0000-000000000000", "/", "/api",
                                     "/api/v1/keys/x", "/api/v1/agents/echo"])
            body = rng.choice([None, b"{}", b'{"task":1}'])
            return "methods", self.request(m, p, body)
        if k < 78:
            q = rng.choice(["?a=%zz&&&=;%00", "?limit=-1", "?limit=99999999999999999999", "?limit=abc",
                            "?cursor=%ff%fe", "?agent=..%2f&status=%00", "?" + "x=" * 2000, "?status=running&status=x",
                            "?%E2%80%A8=1", "?limit=1e3", "?limit=0x10", "?before=" + "9" * 40, "?#frag",
                            "?agent=echo&limit=500&cursor=" + "A" * 300])
            p = rng.choice(["/api/v1/executions", "/api/v1/agents", "/api/v1/agents/echo/execute", "/health",
                            "/api/v1/executions/" + "0" * 36])
            return "query", self.request("POST" if p.endswith("execute") else "GET", p + q,
                                         b'{"task":1}' if p.endswith("execute") else None)
        if k < 82:
            v = rng.choice([b"", b"a" * 256, b"a" * 255, b"k\xff", b"k\xc3\xa9", b"k y", b"k\tx", b"../x",
                            b"%00", b"k:" * 100, b"k~!", str(rng.randrange(10 ** 6)).encode()])
            return "idempotency", self.request("POST", rng.choice(ROUTES), rng.choice(VALID_BODIES),
                                               headers=b"Idempotency-Key: " + v + b"\r\n")
        if k < 88:
            return "auth", self.request("POST", rng.choice(ROUTES + ["/api/v1/agents"]), b'{"task":1}',
                                        headers=self.junk_auth(), auth=False)
        if k < 92:
            v = rng.choice([b"", b"x" * 65, b"x" * 64, b"a b", b"<script>", b"\xc3\xa9", b"id%0d%0aX-Injected: 1",
                            b"ok.id:1-2_3", b'"quoted"', b"\xff" * 10])
            return "request-id", self.request("POST", rng.choice(ROUTES), rng.choice(VALID_BODIES),
                                              headers=b"X-Request-Id: " + v + b"\r\n")
        if k < 95:
            ct = rng.choice([None, b"text/plain", b"application/json; charset=utf-8", b"application/jsonx",
                             b"application/x+json", b"+json", b"APPLICATION/JSON", b"application/json;;;",
                             b"a" * 3000, b"application/json\xff", b"multipart/form-data; boundary=x"])
            return "content-type", self.request("POST", rng.choice(ROUTES), rng.choice(VALID_BODIES), ctype=ct)
        if k < 97:
            n = rng.choice([20, 60, 90])
            hs = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * rng.randint(0, 200)) for i in range(n))
            return "many-headers", self.request("POST", rng.choice(ROUTES), rng.choice(VALID_BODIES), headers=hs)
        if k < 99:
            # CRLF injection attempts: what looks like a header inside a value must stay a value
            hs = rng.choice([b"X-Request-Id: a\rX-Injected: 1\r\n", b"Accept: */*; q=0.5, x-injected=1\r\n",
                             b"Idempotency-Key: k%0d%0aSet-Cookie:%20x=1\r\n", b"X-Forwarded-For: 1.2.3.4, \xff\r\n"])
            if b"\r" in hs[:-2]:
                return "crlf", None  # bare CR: framing case (h2o refuses it), sent on its own connection
            return "crlf", self.request("POST", rng.choice(ROUTES), rng.choice(VALID_BODIES), headers=hs)
        return "sse", self.request("POST", rng.choice(ROUTES), rng.choice(VALID_BODIES),
                                   headers=b"Accept: text/event-stream\r\n")


def framing_cases(rng, api_key, n):
    """Requests that attack the HTTP framing itself: each on its own connection."""
    auth = b"Authorization: Bearer " + api_key.encode() + b"\r\n"
    ex = b"POST /api/v1/agents/echo/execute HTTP/1.1\r\nHost: t\r\n" + auth + b"Content-Type: application/json\r\n"
    body = b'{"task":1}'
    fixed = [
        ex + b"Content-Length: 10\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b"Content-Length: 10\r\nContent-Length: 5\r\n\r\n" + body,
        ex + b"Content-Length: 10, 10\r\n\r\n" + body,
        ex + b"Content-Length: -1\r\n\r\n" + body,
        ex + b"Content-Length: abc\r\n\r\n" + body,
        ex + b"Content-Length: +10\r\n\r\n" + body,
        ex + b"Content-Length: 0010\r\n\r\n" + body,
        ex + b"Content-Length: 99999999999999999999999\r\n\r\n" + body,
        ex + b"Content-Length: 18446744073709551616\r\n\r\n" + body,
        ex + b"Content-Length: 100\r\n\r\n" + body,  # short body, then EOF
        ex + b"Transfer-Encoding: chunked\r\n\r\na\r\n" + body + b"\r\n0\r\n\r\n",
        ex + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\na\r\n" + body + b"\r\n0\r\n\r\n",
        ex + b"Transfer-Encoding: gzip\r\n\r\n" + body,
        ex + b"Transfer-Encoding: chunked, identity\r\n\r\na\r\n" + body + b"\r\n0\r\n\r\n",
        ex + b"Transfer-Encoding: xchunked\r\n\r\n" + body,
        ex + b"Transfer-Encoding:  chunked\r\n\r\nA\r\n" + body + b"\r\n0\r\n\r\n",
        ex + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n" + body + b"\r\n0\r\n\r\n",
        ex + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n" + body + b"\r\n0\r\n\r\n",
        ex + b"Transfer-Encoding: chunked\r\n\r\na;ext=\xff\"\r\n" + body + b"\r\n0\r\n\r\n",
        ex + b"Transfer-Encoding: chunked\r\n\r\na\r\n" + body,  # no last chunk
        ex + b"Transfer-Encoding: chunked\r\n\r\n5\r\n" + body + b"\r\n0\r\n\r\n",  # size lies
        ex + b"Transfer-Encoding: chunked\r\n\r\n" + b"1\r\n{\r\n" * 3000 + b"0\r\n\r\n",
        ex + b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/v1/keys HTTP/1.1\r\nHost: t\r\n\r\n",
        ex + b"X-Big: " + b"a" * 70000 + b"\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"Content-Length: 10\r\n\r\n" + body,
        ex + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(1000)) + b"Content-Length: 10\r\n\r\n" + body,
        ex.replace(b"\r\n", b"\n") + b"Content-Length: 10\n\n" + body,
        ex + b"Content-Length: 10\r\r\n\r\n" + body,
        ex + b"X-Request-Id: a\rX-Injected: 1\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b"X-\x00Bad: 1\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b"X-Bad : 1\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b" X-Folded: 1\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b"X-Fold: a\r\n  continued\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b"X-Ctl: a\x01b\x7f\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b"Idempotency-Key: k\x01\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b"Expect: 100-continue\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b"Expect: 999-junk\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
             b"Content-Length: 10\r\n\r\n" + body,
        ex + b"Upgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 10\r\n\r\n" + body,
        ex + b"Content-Length: %d\r\n\r\n" % (2 * MAX_BODY + 1024 * 1024 + 10) + b"{" * (2 * MAX_BODY + 1024 * 1024 + 10),
        b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"GET / HTTP/1.1", b"\r\n\r\n\r\n", b"\x00\x01\x02\x03",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", b"GET http://evil.test/../health HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/1.0\r\n\r\n", b"GET /health\r\n\r\n", b"GET  /health  HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n", b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /../../../etc/passwd HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n",
        b"GET /api/v1/agents/..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n",
        b"GET /api/v1/agents/\x00 HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n",
        b"GET /api/v1/agents/\xc3\xa9 HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n",
        b"GET /api/v1/agents/a\tb HTTP/1.1\r\nHost: t\r\n" + auth + b"\r\n",
        b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nGET /",
        b"POST /api/v1/agent/execute HTTP/1.1\r\nHost: t\r\n" + auth + b"Content-Type: application/json\r\n\r\n" + body,
    ]
    out = list(fixed)
    gen = Gen(rng.randrange(1 << 30), api_key)
    while len(out) < n:  # random garbage, and valid requests cut or corrupted at a random byte
        r = rng.random()
        if r < 0.3:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))))
        else:
            _, req = gen.next()
            if req is None:
                continue
            b = bytearray(req[:rng.randint(1, len(req))] if r < 0.6 else req)
            for _ in range(rng.randint(1, 3)):
                p = rng.randrange(len(b) + 1)
                b[p:p] = rng.choice([b"\r", b"\n", b"\x00", b" ", b":", b"\r\n", b"\xff", b"\r\n\r\n"])
            out.append(bytes(b))
    return out


# ---- drivers ---------------------------------------------------------------------------------------

def exchange(port, reqs, timeout, shut=False):
    """Write `reqs` (pipelined) on one connection while reading; -> (bytes read, closed by peer).
    Without `shut` it stops reading once `len(reqs)` answers parsed; with it, at EOF."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setblocking(False)
    out = memoryview(b"".join(reqs))
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    buf = bytearray()
    deadline = time.monotonic() + timeout
    closed, sent_all = False, len(out) == 0
    want = len(reqs)
    pos = 0  # parsed up to here
    got = 0
    try:
        while time.monotonic() < deadline:
            for key, ev in sel.select(timeout=0.5):
                if ev & selectors.EVENT_WRITE and not sent_all:
                    try:
                        n = s.send(out[:262144])
                        out = out[n:]
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        out = out[len(out):]  # the peer closed its read side: it answered already
                    if len(out) == 0:
                        sent_all = True
                        if shut:
                            try:
                                s.shutdown(socket.SHUT_WR)
                            except OSError:
                                pass
                        sel.modify(s, selectors.EVENT_READ)
                if ev & selectors.EVENT_READ:
                    try:
                        d = s.recv(262144)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        d = b""
                    if not d:
                        closed = True
                        return bytes(buf), True
                    buf += d
            if not shut:  # count complete answers so far
                while got < want:
                    r = parse_one(buf[pos:], head_only=reqs[got].startswith(b"HEAD "))
                    if r is None or r[0] == "close":
                        break
                    if 100 <= r[0] < 200 and r[0] != 101:
                        pos += r[3]
                        continue
                    pos += r[3]
                    got += 1
                if got >= want:
                    return bytes(buf), closed
        raise TimeoutError(f"no complete answer within {timeout:.0f} s ({got}/{want} answers, {len(buf)} bytes)")
    finally:
        sel.close()
        s.close()


def split_replies(buf, reqs, final_close):
    """-> [(status, headers, body)], raising BadResponse on malformed ones. On a connection that
    ended (framing cases) an answer to HEAD may carry a body: h2o's own 400 for a request it could
    not parse does not know it was HEAD."""
    out, pos, i = [], 0, 0
    if final_close and len(reqs) == 1 and reqs[0].startswith(b"PRI * HTTP/2.0") and not buf.startswith(b"HTTP/"):
        return out  # h2o took the HTTP/2 preface and answers in HTTP/2 frames
    while pos < len(buf):
        head_only = i < len(reqs) and reqs[i].startswith(b"HEAD ")
        r = parse_one(buf[pos:], head_only=head_only and not final_close)
        if r is None and head_only:
            r = parse_one(buf[pos:], head_only=True)
        if r is None:
            raise BadResponse(f"truncated response at byte {pos}: {buf[pos:pos + 200]!r}")
        if r[0] == "close":
            if not final_close:
                raise BadResponse("a response without length on a kept-alive connection")
            out.append((r[1], r[2], buf[pos + r[3]:]))
            break
        pos += r[3]
        if 100 <= r[0] < 200 and r[0] != 101:
            continue
        out.append((r[0], r[1], r[2]))
        i += 1
        if r[0] == 101:
            break  # the rest is another protocol
    return out


class HostileTests(ServerTestCase):
    FIXTURES = ("echo", "hello", "stream")
    AGENTS = {"who": WHO, "strict": STRICT}
    WORKERS = 2
    CHECK_EXIT = True

    @classmethod
    def setUpClass(cls):
        import tempfile
        cls.keys_dir = tempfile.mkdtemp(prefix="luagent-hostile-")
        cls.ENV = {"LUAGENT_AUTH": "required", "LUAGENT_API_KEYS_FILE": os.path.join(cls.keys_dir, "api_keys"),
                   "LUAGENT_JWT_SECRET": SECRET, "LUAGENT_MAX_BODY_BYTES": str(MAX_BODY),
                   "LUAGENT_LOG_LEVEL": "warn"}
        super().setUpClass()
        out = open(cls.server.out_path).read()
        m = re.search(r"^admin API key: (\S+)$", out, re.M)
        assert m, f"no admin key printed on stdout: {out!r}"
        cls.api_key = m.group(1)

    def test_hostile_requests(self):
        total = int(os.environ.get("LUAGENT_HOSTILE_REQUESTS") or 100_000)
        threads = 4
        batch = 64
        per_thread = (total + threads - 1) // threads
        stats = Stats()
        port = self.server.port

        def pipelined(tid):
            gen = Gen(1000 + tid, self.api_key)
            done = 0
            while done < per_thread:
                items = []
                while len(items) < min(batch, per_thread - done):
                    kind, req = gen.next()
                    if req is not None:
                        items.append((kind, req))
                reqs = [r for _, r in items]
                try:
                    buf, closed = exchange(port, reqs, timeout=60 * SLOW)
                    replies = split_replies(buf, reqs, closed)
                except (BadResponse, TimeoutError, OSError) as e:
                    stats.fail(f"batch of {len(reqs)} ({[k for k, _ in items][:10]}...): {type(e).__name__}: {e}")
                    done += len(reqs)
                    if not self.server.alive():
                        return
                    continue
                if len(replies) != len(reqs):
                    stats.fail(f"{len(reqs)} requests, {len(replies)} answers on one connection")
                for (kind, req), (status, headers, body) in zip(items, replies):
                    check_reply(stats, kind, req, status, headers, body)
                done += len(reqs)

        def framing(cases):
            for req in cases:
                try:
                    buf, _ = exchange(port, [req], timeout=30 * SLOW, shut=True)
                    replies = split_replies(buf, [req], True)
                except (BadResponse, TimeoutError, OSError) as e:
                    stats.fail(f"[framing] {type(e).__name__}: {e} for {req[:200]!r}")
                    continue
                if not replies:
                    with stats.lock:
                        stats.no_reply += 1
                for status, headers, body in replies:
                    ours = "x-request-id" in headers  # h2o's own framing errors carry none
                    check_reply(stats, "framing", req, status, headers, body, ours=ours)

        rng = random.Random(7)
        fcases = framing_cases(rng, self.api_key, 3000)
        t0 = time.monotonic()
        ths = [threading.Thread(target=pipelined, args=(i,)) for i in range(threads)]
        ths += [threading.Thread(target=framing, args=(fcases[i::2],)) for i in range(2)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        elapsed = time.monotonic() - t0
        measure("hostile requests", f"{stats.requests} answered in {elapsed:.1f} s "
                f"({stats.requests / elapsed:.0f}/s), {len(fcases)} framing cases, {stats.no_reply} closed without an answer")
        measure("hostile statuses", json.dumps(dict(sorted(stats.statuses.items()))))
        measure("hostile by kind", json.dumps({k: dict(sorted(v.items())) for k, v in sorted(stats.by_kind.items())}))

        self.assertTrue(self.server.alive(), self.ctx_msg(extra="the server died under hostile input"))
        self.assertEqual([], stats.failures, self.ctx_msg(extra="\n".join(stats.failures)))
        self.assertGreaterEqual(stats.requests, total, "fewer answers than requests")
        self.assertFalse(any(s >= 500 for s in stats.statuses), stats.statuses)
        r = self.server.request("GET", "/health")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        r = self.server.request("POST", "/api/v1/agents/echo/execute", {"task": {"still": "fine"}},
                                headers={"Authorization": f"Bearer {self.api_key}"})
        self.assertEqual(200, r.status, self.ctx_msg(r))
        log = self.server.log_text()
        for marker in ("AddressSanitizer", "runtime error:", "LeakSanitizer", "Assertion `"):
            self.assertNotIn(marker, log, self.ctx_msg(extra=f"{marker} in the server log"))
