"""API keys and roles: the first admin key, the route x role matrix, `luagent keys`, revocation,
expiry, and who the caller is inside an execution and in its record."""

import json
import os
import re
import subprocess
import time
import unittest

from .harness import BIN, ServerTestCase, base_env, class_tmpdir, keys_cli

WHO = r'''
return { execute = function(task, ctx) return {id = ctx.user.id, role = ctx.user.role} end }
'''

KEY_RE = re.compile(r"^lg_[A-Za-z0-9_-]{43}$")


class AuthTests(ServerTestCase):
    AGENTS = {"who": WHO}
    FIXTURES = ("echo",)
    WORKERS = 2

    @classmethod
    def setUpClass(cls):
        cls.keys_dir = class_tmpdir(cls, "luagent-keys-")
        cls.keys_file = os.path.join(cls.keys_dir, "api_keys")
        cls.ENV = {"LUAGENT_AUTH": "required", "LUAGENT_API_KEYS_FILE": cls.keys_file}
        super().setUpClass()
        out = open(cls.server.out_path).read()
        m = re.search(r"^admin API key: (\S+)$", out, re.M)
        assert m, f"no admin key printed on stdout: {out!r}"
        cls.admin = m.group(1)
        cls.keys = {"admin": cls.admin}
        for role in ("viewer", "operator"):
            r = keys_cli(cls.keys_file, "create", "--name", f"test {role}", "--role", role)
            assert r.returncode == 0, r.stderr
            cls.keys[role] = json.loads(r.stdout)["key"]

    def get(self, path, key=None, header="Authorization"):
        h = {}
        if key is not None:
            h[header] = f"Bearer {key}" if header == "Authorization" else key
        return self.server.request("GET", path, headers=h)

    def post(self, path, key=None, body=None):
        h = {"Authorization": f"Bearer {key}"} if key else {}
        return self.server.request("POST", path, body=body or {"task": {"a": 1}}, headers=h)

    def wait_key(self, key):
        """Keys made by the CLI reach the server within its reload period."""
        _, _, ok = self.poll(lambda: self.get("/api/v1/agents", key).status, lambda s: s == 200, timeout=6)
        self.assertTrue(ok, self.ctx_msg(extra="a key made with `luagent keys create` never worked"))

    def test_first_admin_key(self):
        self.assertRegex(self.admin, KEY_RE)
        text = open(self.keys_file).read()
        self.assertNotIn(self.admin, text, "the key itself is never stored")
        self.assertNotIn(self.admin, self.server.log_text(), "the key is never logged")
        self.assertEqual(200, self.get("/api/v1/agents", self.admin).status)
        self.assertEqual(200, self.get("/api/v1/agents", self.admin, header="X-API-Key").status)

    def test_route_role_matrix(self):
        for role in ("viewer", "operator"):
            self.wait_key(self.keys[role])
        ex = self.post("/api/v1/agents/echo/execute", self.admin).body["execution_id"]
        routes = [  # method, path, the weakest role allowed (None: public)
            ("GET", "/health", None), ("GET", "/ready", None), ("GET", "/info", None),
            ("GET", "/api/v1/agents", "viewer"), ("GET", "/api/v1/agents/echo", "viewer"),
            ("GET", "/api/v1/executions", "viewer"), ("GET", f"/api/v1/executions/{ex}", "viewer"),
            ("POST", "/api/v1/agents/echo/execute", "operator"), ("POST", "/api/v1/agent/execute", "operator"),
        ]
        order = ["viewer", "operator", "admin"]
        for method, path, need in routes:
            body = {"task": {"a": 1}, "agent": "echo"} if method == "POST" else None
            for cred in (None, "lg_" + "x" * 43, "not-a-key", *order):
                with self.subTest(method=method, path=path, cred=cred):
                    key = self.keys.get(cred, cred)
                    h = {"Authorization": f"Bearer {key}"} if key else {}
                    r = self.server.request(method, path, body=body, headers=h)
                    if need is None:
                        expect = 200
                    elif cred not in order:
                        expect = 401
                    else:
                        expect = 200 if order.index(cred) >= order.index(need) else 403
                    self.assertEqual(expect, r.status, self.ctx_msg(r))
                    if expect == 401:
                        self.assertError(r, 401, "unauthenticated")
                        self.assertEqual("Bearer", r.headers.get("www-authenticate"))
                    if expect == 403:
                        err = self.assertError(r, 403, "forbidden")
                        self.assertIn(need, err["message"])

    def test_caller_inside_the_execution_and_its_record(self):
        self.wait_key(self.keys["operator"])
        listed = json.loads(keys_cli(self.keys_file, "list").stdout)
        op = [k for k in listed if k["name"] == "test operator"][0]
        r = self.post("/api/v1/agents/who/execute", self.keys["operator"])
        body = self.assertOk(r)
        self.assertEqual({"id": op["id"], "role": "operator"}, body["result"])
        rec = self.get(f"/api/v1/executions/{body['execution_id']}", self.admin).body
        self.assertEqual({"id": op["id"], "role": "operator"}, rec["user"])

    def test_async_job_keeps_its_caller(self):
        self.wait_key(self.keys["operator"])
        r = self.server.request("POST", "/api/v1/agents/who/execute", body={"task": 1, "options": {"mode": "async"}},
                                headers={"Authorization": f"Bearer {self.keys['operator']}"})
        self.assertEqual(202, r.status, self.ctx_msg(r))
        url = r.body["status_url"]
        rec, _, ok = self.poll(lambda: self.get(url, self.keys["operator"]).body,
                               lambda b: isinstance(b, dict) and b.get("status") == "succeeded", timeout=5)
        self.assertTrue(ok, self.ctx_msg(extra=f"async job did not finish: {rec}"))
        self.assertEqual("operator", rec["result"]["role"])
        self.assertEqual(rec["result"]["id"], rec["user"]["id"])
        self.assertEqual("operator", rec["user"]["role"])

    def test_agent_allow_list(self):
        r = keys_cli(self.keys_file, "create", "--name", "echo only", "--role", "operator", "--agents", "echo")
        self.assertEqual(0, r.returncode, r.stderr)
        key = json.loads(r.stdout)["key"]
        self.wait_key(key)
        self.assertEqual(200, self.post("/api/v1/agents/echo/execute", key).status)
        err = self.assertError(self.post("/api/v1/agents/who/execute", key), 403, "forbidden")
        self.assertIn("who", err["message"])
        listed = json.loads(keys_cli(self.keys_file, "list").stdout)
        self.assertEqual(["echo"], [k for k in listed if k["name"] == "echo only"][0]["agents"])
        bad = keys_cli(self.keys_file, "create", "--name", "x", "--role", "operator", "--agents", "../etc")
        self.assertEqual(2, bad.returncode)

    def test_revoked_key_stops_working(self):
        r = keys_cli(self.keys_file, "create", "--name", "short-lived", "--role", "operator")
        self.assertEqual(0, r.returncode, r.stderr)
        made = json.loads(r.stdout)
        self.wait_key(made["key"])
        self.assertEqual(200, self.post("/api/v1/agents/echo/execute", made["key"]).status)
        r = keys_cli(self.keys_file, "revoke", made["id"])
        self.assertEqual(0, r.returncode, r.stderr)
        _, secs, ok = self.poll(lambda: self.post("/api/v1/agents/echo/execute", made["key"]).status,
                                lambda s: s == 401, timeout=6)
        self.assertTrue(ok, self.ctx_msg(extra="a revoked key still works"))
        self.assertNotEqual(0, keys_cli(self.keys_file, "revoke", made["id"]).returncode, "revoked twice")

    def test_expired_key(self):
        r = keys_cli(self.keys_file, "create", "--name", "expiring", "--role", "viewer", "--expires", "1")
        made = json.loads(r.stdout)
        self.wait_key(made["key"])
        # move its expiry into the past in the file (as time would)
        lines = open(self.keys_file).read().splitlines(True)
        with open(self.keys_file + ".new", "w") as f:
            for line in lines:
                if line.startswith(made["id"]):
                    parts = line.split("\t")
                    parts[4] = str(int(time.time() * 1000) - 1000)
                    line = "\t".join(parts)
                f.write(line)
        os.replace(self.keys_file + ".new", self.keys_file)
        _, _, ok = self.poll(lambda: self.get("/api/v1/agents", made["key"]).status, lambda s: s == 401, timeout=6)
        self.assertTrue(ok, self.ctx_msg(extra="an expired key still works"))

    def test_cli_errors(self):
        r = keys_cli(self.keys_file, "create", "--name", "x", "--role", "root")
        self.assertEqual(2, r.returncode)
        self.assertIn("--role", r.stderr)
        out = subprocess.run([str(BIN), "keys", "list"], env=base_env({}), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        self.assertEqual(2, out.returncode)
        self.assertIn("LUAGENT_API_KEYS_FILE", out.stderr)
        listed = keys_cli(self.keys_file, "list").stdout
        for key in self.keys.values():
            self.assertNotIn(key, listed, "a listing never shows keys")


class RateLimitTests(ServerTestCase):
    """Per-key limits (GCRA), shared by all workers: the key's own, else LUAGENT_RATE_LIMIT."""
    FIXTURES = ("echo",)
    WORKERS = 2

    @classmethod
    def setUpClass(cls):
        cls.keys_dir = class_tmpdir(cls, "luagent-keys-")
        cls.keys_file = os.path.join(cls.keys_dir, "api_keys")
        cls.ENV = {"LUAGENT_AUTH": "required", "LUAGENT_API_KEYS_FILE": cls.keys_file,
                   "LUAGENT_RATE_LIMIT": "5/min", **cls.start_env()}
        super().setUpClass()
        cls.own = json.loads(keys_cli(cls.keys_file, "create", "--name", "limited", "--role", "operator",
                                      "--rate-limit", "3/min").stdout)["key"]
        cls.default = json.loads(keys_cli(cls.keys_file, "create", "--name", "default", "--role", "viewer").stdout)["key"]

    @classmethod
    def start_env(cls):
        return {}

    def call(self, key):
        return self.server.request("GET", "/api/v1/agents", headers={"Authorization": f"Bearer {key}"})

    def wait_key(self, key):
        _, _, ok = self.poll(lambda: self.call(key).status, lambda s: s in (200, 429), timeout=6)
        self.assertTrue(ok)

    def test_own_limit_then_429(self):
        self.wait_key(self.own)  # that call used one request of the budget
        seen = [self.call(self.own) for _ in range(4)]
        statuses = [r.status for r in seen]
        self.assertEqual([200, 200, 429, 429], statuses, [r.describe() for r in seen])
        ok = seen[0]
        self.assertEqual("3", ok.headers.get("ratelimit-limit"))
        self.assertEqual("1", ok.headers.get("ratelimit-remaining"))
        self.assertEqual("0", seen[1].headers.get("ratelimit-remaining"))
        err = self.assertError(seen[2], 429, "rate_limited")
        self.assertIn("3 requests per 60 s", err["message"])
        retry = int(seen[2].headers.get("retry-after"))
        self.assertTrue(1 <= retry <= 20, retry)  # one request's share of the minute: 20 s
        self.assertEqual("0", seen[2].headers.get("ratelimit-remaining"))

    def test_default_limit_shared_by_workers(self):
        self.wait_key(self.default)
        statuses = [self.call(self.default).status for _ in range(8)]  # new connection each: both workers
        self.assertEqual(4, statuses.count(200), statuses)  # 5 per minute, one used by wait_key
        self.assertEqual(4, statuses.count(429), statuses)


class RateLimitRedisTests(RateLimitTests):
    """The same budgets kept in Redis (one atomic script): every replica shares them."""

    @classmethod
    def setUpClass(cls):
        from .services import shared_redis
        cls.redis = shared_redis()
        cls.redis.cli("FLUSHDB", db=9)
        super().setUpClass()

    @classmethod
    def start_env(cls):
        return {"REDIS_URL": cls.redis.url(9)}

    def test_replicas_share_the_budget(self):
        from .harness import Server
        other = Server(fixtures=("echo",), env=self.server.env_overrides, workers=1).start()
        try:
            key = json.loads(keys_cli(self.keys_file, "create", "--name", "shared", "--role", "viewer",
                                      "--rate-limit", "4/min").stdout)["key"]
            self.wait_key(key)
            _, _, ok = self.poll(lambda: other.request("GET", "/api/v1/agents",
                                                       headers={"Authorization": f"Bearer {key}"}).status,
                                 lambda s: s in (200, 429), timeout=6)
            self.assertTrue(ok)
            # 2 of the 4 are used; the next two pass wherever they go, then both servers refuse
            h = {"Authorization": f"Bearer {key}"}
            statuses = [srv.request("GET", "/api/v1/agents", headers=h).status
                        for srv in (self.server, other, self.server, other)]
            self.assertEqual([200, 200, 429, 429], statuses)
            self.assertTrue(self.redis.cli("KEYS", "luagent:rl:*", db=9), "the budgets live in Redis")
        finally:
            other.stop()
            other.cleanup()


class AdminKeyRoutesTests(ServerTestCase):
    """POST/GET/DELETE /api/v1/keys (admin), with the keys file; a second class repeats them on Postgres."""
    FIXTURES = ("echo",)
    WORKERS = 2

    @classmethod
    def store_env(cls):
        cls.keys_dir = class_tmpdir(cls, "luagent-keys-")
        return {"LUAGENT_API_KEYS_FILE": os.path.join(cls.keys_dir, "api_keys")}

    @classmethod
    def setUpClass(cls):
        cls.ENV = {"LUAGENT_AUTH": "required", **cls.store_env()}
        super().setUpClass()
        cls.admin = re.search(r"^admin API key: (\S+)$", open(cls.server.out_path).read(), re.M).group(1)

    def req(self, method, path, key, body=None):
        return self.server.request(method, path, body=body, headers={"Authorization": f"Bearer {key}"})

    def test_create_list_use_revoke(self):
        r = self.req("POST", "/api/v1/keys", self.admin, {"name": "from rest", "role": "operator",
                                                           "rate_limit": "100/min", "expires_days": 7,
                                                           "agents": ["echo", "team.review"]})
        self.assertEqual(201, r.status, self.ctx_msg(r))
        made = r.body
        self.assertRegex(made["key"], KEY_RE)
        self.assertEqual("operator", made["role"])
        self.assertEqual(200, self.req("POST", "/api/v1/agents/echo/execute", made["key"], {"task": 1}).status)
        listed = self.req("GET", "/api/v1/keys", self.admin).body["items"]
        mine = [k for k in listed if k["id"] == made["id"]]
        self.assertEqual(1, len(mine))
        self.assertEqual(100, mine[0]["rate_limit"])
        self.assertEqual(["echo", "team.review"], mine[0]["agents"])
        self.assertIsNotNone(mine[0]["expires_at"])
        self.assertNotIn(made["key"], json.dumps(listed))
        # an operator may not manage keys
        self.assertError(self.req("GET", "/api/v1/keys", made["key"]), 403, "forbidden")
        self.assertError(self.req("POST", "/api/v1/keys", made["key"], {"name": "x", "role": "admin"}), 403, "forbidden")
        r = self.req("DELETE", f"/api/v1/keys/{made['id']}", self.admin)
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertEqual({"id": made["id"], "revoked": True}, r.body)
        _, _, ok = self.poll(lambda: self.req("GET", "/api/v1/agents", made["key"]).status, lambda s: s == 401, timeout=6)
        self.assertTrue(ok, self.ctx_msg(extra="a key revoked over REST still works"))
        self.assertError(self.req("DELETE", f"/api/v1/keys/{made['id']}", self.admin), 404, "not_found")

    def test_bad_bodies(self):
        for body in ({"role": "viewer"}, {"name": "x"}, {"name": "x", "role": "root"},
                     {"name": "x", "role": "viewer", "rate_limit": "fast"},
                     {"name": "x", "role": "viewer", "expires_days": 0}, {"name": "y" * 64, "role": "viewer"},
                     {"name": "x", "role": "viewer", "agents": "echo"}, {"name": "x", "role": "viewer", "agents": ["a/b"]}):
            with self.subTest(body=body):
                self.assertError(self.req("POST", "/api/v1/keys", self.admin, body), 400, "invalid_request")
        r = self.server.request("POST", "/api/v1/keys", body="[1", headers={"Authorization": f"Bearer {self.admin}"})
        self.assertError(r, 400, "invalid_request")
        self.assertError(self.req("DELETE", "/api/v1/keys/nope", self.admin), 404, "not_found")
        r = self.req("PUT", "/api/v1/keys", self.admin)
        self.assertEqual(405, r.status)


class AdminKeyRoutesDbTests(AdminKeyRoutesTests):
    @classmethod
    def store_env(cls):
        from .services import shared_postgres
        pg = shared_postgres()
        return {"DATABASE_URL": pg.url(pg.new_database("keys")),
                "LUAGENT_SPILL_DIR": class_tmpdir(cls, "luagent-spill-")}


def b64url(data):
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(secret, claims, header=None):
    import hashlib
    import hmac
    head = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


class JwtAuthTests(ServerTestCase):
    """Bearer JWTs (HS256 here; RS256/ES256 and tokens minted by jose: tests/unit/test_jwt.c, tests/jwt)."""
    AGENTS = {"who": WHO}
    FIXTURES = ("echo",)
    SECRET = "s" * 40
    ENV = {"LUAGENT_AUTH": "required", "LUAGENT_JWT_SECRET": SECRET, "LUAGENT_JWT_AUDIENCE": "luagent"}

    def claims(self, **kw):
        c = {"sub": "user-7\"x", "role": "operator", "aud": "luagent", "exp": int(time.time()) + 300}
        c.update(kw)
        return c

    def run_who(self, token):
        return self.server.request("POST", "/api/v1/agents/who/execute", body={"task": 1},
                                   headers={"Authorization": f"Bearer {token}"})

    def test_valid_token(self):
        r = self.run_who(hs256(self.SECRET, self.claims()))
        body = self.assertOk(r)
        self.assertEqual({"id": "user-7\"x", "role": "operator"}, body["result"])
        rec = self.server.request("GET", f"/api/v1/executions/{body['execution_id']}",
                                  headers={"Authorization": f"Bearer {hs256(self.SECRET, self.claims())}"}).body
        self.assertEqual({"id": "user-7\"x", "role": "operator"}, rec["user"])
        for _ in range(3):  # cached verifications answer the same
            self.assertOk(self.run_who(hs256(self.SECRET, self.claims())))

    def test_rejected_tokens(self):
        now = int(time.time())
        bad = {
            "expired": hs256(self.SECRET, self.claims(exp=now - 3600)),
            "wrong audience": hs256(self.SECRET, self.claims(aud="other")),
            "no exp": hs256(self.SECRET, {k: v for k, v in self.claims().items() if k != "exp"}),
            "other secret": hs256("t" * 40, self.claims()),
            "alg none": hs256(self.SECRET, self.claims(), {"alg": "none"}).rsplit(".", 1)[0] + ".",
            "malformed": "abc.def",
        }
        for why, token in bad.items():
            with self.subTest(why=why):
                err = self.assertError(self.run_who(token), 401, "unauthenticated")
                self.assertNotIn(self.SECRET, err["message"])

    def test_role_claim(self):
        self.assertError(self.run_who(hs256(self.SECRET, self.claims(role="viewer"))), 403, "forbidden")
        self.assertError(self.run_who(hs256(self.SECRET, self.claims(role="root"))), 403, "forbidden")
        r = self.server.request("GET", "/api/v1/agents",
                                headers={"Authorization": f"Bearer {hs256(self.SECRET, self.claims(role='viewer'))}"})
        self.assertEqual(200, r.status)


class RedactionTests(ServerTestCase):
    """Credentials and secrets never reach the log, an error or /info."""
    FIXTURES = ("echo",)
    SECRET = "jwt-secret-" + "q" * 40
    ENV = {"LUAGENT_AUTH": "required", "LUAGENT_JWT_SECRET": SECRET, "OPENAI_API_KEY": "sk-openai-marker-123",
           "LUAGENT_CALLBACK_SECRET": "callback-marker-456", "LUAGENT_LOG_LEVEL": "debug"}

    def test_nothing_secret_leaks(self):
        markers = ["lg_" + "M" * 43, "bearer-marker-789", "apikey-marker-000"]
        replies = []
        for path, method in (("/api/v1/agents", "GET"), ("/api/v1/agents/echo/execute", "POST"),
                             ("/api/v1/executions", "GET"), ("/nope", "GET")):
            for h in ({"Authorization": f"Bearer {markers[0]}"}, {"Authorization": f"Bearer {markers[1]}"},
                      {"X-API-Key": markers[2]}, {"Authorization": f"Basic {markers[1]}"}):
                replies.append(self.server.request(method, path, body={"task": 1} if method == "POST" else None,
                                                   headers=h))
        replies.append(self.server.request("GET", "/info"))
        replies.append(self.server.request("GET", "/ready"))
        text = self.server.log_text() + "".join(r.raw.decode("utf-8", "replace") for r in replies)
        for secret in markers + [self.SECRET, "sk-openai-marker-123", "callback-marker-456"]:
            self.assertNotIn(secret, text)
        self.assertTrue(all(r.status in (200, 401, 404) for r in replies), [r.status for r in replies])


class FirstAdminAcrossReplicasTests(unittest.TestCase):
    """Replicas starting together on an empty key table make one admin key between them, not one each."""

    def test_three_replicas_make_one_admin_key(self):
        from .harness import Server
        from .services import shared_postgres
        pg = shared_postgres()
        db = pg.new_database("first")
        servers = [Server(fixtures=("echo",), env={"LUAGENT_AUTH": "required", "DATABASE_URL": pg.url(db)}, workers=1)
                   for _ in range(3)]
        for s in servers:
            self.addCleanup(s.cleanup)
        for s in servers:  # all three before any is up
            s.start(wait=False)
        for s in servers:
            s.wait_healthy()
        printed = [m for s in servers for m in re.findall(r"^admin API key: (\S+)$", open(s.out_path).read(), re.M)]
        self.assertEqual(1, len(printed), printed)
        self.assertEqual([("1",)], [tuple(map(str, r)) for r in pg.query("select count(*) from api_keys", db=db)])
        for s in servers:  # every replica knows it (the others read it back at start)
            r = s.request("GET", "/api/v1/agents", headers={"Authorization": f"Bearer {printed[0]}"})
            self.assertEqual(200, r.status, r.describe())
