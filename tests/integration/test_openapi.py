"""GET /openapi.json and GET /docs: the document is JSON, has one typed execute operation per loaded
agent (its task schema is the agent's input schema as GET /api/v1/agents/{name} shows it), follows
hot swaps, says per operation what the server enforces (public or the role), and the docs page is
self-contained. Both are public with authentication on."""

import json
import re

from .harness import ServerTestCase, WithKeys

ORDER = r'''
return {
  description = "Place an order <script>alert(1)</script> & more",
  input = {type = "object", required = {"customer", "items"},
           properties = {customer = {type = "string", minLength = 1},
                         priority = {enum = {"low", "high"}},
                         items = {type = "array", minItems = 1,
                                  items = {type = "object", required = {"sku"},
                                           properties = {sku = {type = "string", pattern = "^[A-Z]+$"},
                                                         qty = {type = "integer", minimum = 1}}}}}},
  execute = function(task) return #task.items end,
}
'''

REVIEW = r'''
return {input = {type = {"string", "object"}, maxLength = 100}, timeout_ms = 2000,
        execute = function(task) return task end}
'''

ANYTHING = r'''
return {description = "no input schema", execute = function(task) return task end}
'''

BROKEN = "return {execute = "  # never loads: no operation

SAMPLE_ID = "0190a6c2-6f4e-7a3b-8c1d-2e3f4a5b6c7d"


def with_schema(field, schema_lua):
    return ("return {description = \"swapped\", input = {type = \"object\", required = {\"%s\"}, "
            "properties = {%s = %s}}, execute = function(task) return task end}\n" % (field, field, schema_lua))


class OpenApiTests(WithKeys, ServerTestCase):
    AGENTS = {"order": ORDER, "team.review": REVIEW, "anything": ANYTHING, "broken": BROKEN,
              "swap_me": with_schema("a", "{type = \"string\"}"), "gone": ANYTHING}
    WORKERS = 2
    KEY_ROLES = ("admin",)

    def doc(self, headers=None):
        r = self.server.request("GET", "/openapi.json", headers=headers)
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertTrue(r.headers.get("content-type", "").startswith("application/json"), self.ctx_msg(r))
        self.assertIsInstance(r.body, dict, self.ctx_msg(r, "the document is not a JSON object"))
        return r

    def agent(self, name):
        r = self.server.request("GET", f"/api/v1/agents/{name}", headers={"Authorization": f"Bearer {self.admin}"})
        self.assertEqual(200, r.status, self.ctx_msg(r))
        return r.body

    def task_schema(self, doc, name):
        op = doc["paths"][f"/api/v1/agents/{name}/execute"]["post"]
        return op["requestBody"]["content"]["application/json"]["schema"]["properties"]["task"]

    def test_public_json_with_caching_headers(self):
        r = self.doc()  # no credential, auth required
        self.assertEqual("3.1.0", r.body["openapi"])
        self.assertEqual(json.loads(r.raw), r.body)
        self.assertRegex(r.headers.get("etag", ""), r'^"[0-9a-f]{16}"$')
        self.assertEqual("no-cache", r.headers.get("cache-control"))
        self.assertEqual("nosniff", r.headers.get("x-content-type-options"))
        again = self.server.request("GET", "/openapi.json", headers={"If-None-Match": r.headers["etag"]})
        self.assertEqual(304, again.status, self.ctx_msg(again))
        self.assertEqual(b"", again.raw)
        self.assertEqual(r.headers["etag"], again.headers.get("etag"))
        other = self.server.request("GET", "/openapi.json", headers={"If-None-Match": '"0000000000000000"'})
        self.assertEqual(200, other.status)
        self.assertError(self.server.request("POST", "/openapi.json", body={}), 405, "method_not_allowed")

    def test_one_typed_operation_per_loaded_agent(self):
        doc = self.doc().body
        for name in ("order", "team.review", "anything"):
            with self.subTest(agent=name):
                a = self.agent(name)
                path = f"/api/v1/agents/{name}/execute"
                self.assertIn(path, doc["paths"])
                op = doc["paths"][path]["post"]
                self.assertEqual(f"execute_{name}", op["operationId"])
                self.assertEqual({"name": name, "version": a["version"], "timeout_ms": a["timeout_ms"]}, op["x-agent"])
                if a["input"] is None:
                    self.assertEqual({"$ref": "#/components/schemas/AnyTask"}, self.task_schema(doc, name))
                else:
                    self.assertEqual(a["input"], self.task_schema(doc, name))
                self.assertEqual(a["description"], op.get("description"))
                self.assertEqual(["task"], op["requestBody"]["content"]["application/json"]["schema"]["required"])
        # the description is data, kept as text
        self.assertEqual("Place an order <script>alert(1)</script> & more",
                         doc["paths"]["/api/v1/agents/order/execute"]["post"]["description"])
        self.assertEqual({"type": ["string", "object"], "maxLength": 100}, self.task_schema(doc, "team.review"))
        # a file that never loaded has no operation (it is listed by /api/v1/agents with its error)
        self.assertIsNotNone(self.agent("broken")["error"])
        self.assertNotIn("/api/v1/agents/broken/execute", doc["paths"])
        # every $ref points into the document
        text = json.dumps(doc)
        for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
            node = doc
            for part in ref.split("/"):
                self.assertIn(part, node, f"dangling $ref #/{ref}")
                node = node[part]

    def test_typed_schema_is_the_one_enforced(self):
        """A task the document's schema refuses is refused with 422, one it accepts runs."""
        h = {"Authorization": f"Bearer {self.admin}"}
        schema = self.task_schema(self.doc().body, "order")
        self.assertEqual(["customer", "items"], schema["required"])
        ok = self.server.execute("order", {"customer": "ann", "items": [{"sku": "AB", "qty": 2}]}, headers=h)
        self.assertOk(ok, 1)
        bad = self.server.execute("order", {"customer": "ann", "items": [{"sku": "ab"}]}, headers=h)
        err = self.assertError(bad, 422, "validation_failed")
        self.assertEqual(["/items/0/sku"], [d["path"] for d in err["details"]])

    def test_follows_hot_swap_new_and_deleted_agents(self):
        first = self.doc()
        self.assertEqual({"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}},
                         self.task_schema(first.body, "swap_me"))
        v1 = first.body["paths"]["/api/v1/agents/swap_me/execute"]["post"]["x-agent"]["version"]
        self.server.write_agent("swap_me", with_schema("b", "{type = \"integer\", maximum = 9}"), mode="rename")
        self.server.write_agent("fresh", ANYTHING)
        self.server.delete_agent("gone")

        def settled(r):
            p = r.body.get("paths", {}) if isinstance(r.body, dict) else {}
            return ("/api/v1/agents/fresh/execute" in p and "/api/v1/agents/gone/execute" not in p and
                    p.get("/api/v1/agents/swap_me/execute", {}).get("post", {}).get("x-agent", {}).get("version") != v1)

        r, took, ok = self.poll(lambda: self.server.request("GET", "/openapi.json"), settled, timeout=5.0,
                                interval=0.02)
        self.assertTrue(ok, self.ctx_msg(r, f"the document did not follow the changes within {took:.1f}s"))
        self.assertEqual({"type": "object", "required": ["b"], "properties": {"b": {"type": "integer", "maximum": 9}}},
                         self.task_schema(r.body, "swap_me"))
        self.assertEqual(self.agent("swap_me")["version"],
                         r.body["paths"]["/api/v1/agents/swap_me/execute"]["post"]["x-agent"]["version"])
        self.assertNotEqual(first.headers["etag"], r.headers["etag"])
        # the old ETag no longer matches
        stale = self.server.request("GET", "/openapi.json", headers={"If-None-Match": first.headers["etag"]})
        self.assertEqual(200, stale.status)
        # a swap to a file that fails to load keeps the serving version's operation
        self.server.write_agent("swap_me", BROKEN)
        _, _, failed = self.poll(lambda: self.agent("swap_me"), lambda a: a["error"] is not None, timeout=5.0,
                                 interval=0.02)
        self.assertTrue(failed)
        self.assertEqual({"type": "object", "required": ["b"], "properties": {"b": {"type": "integer", "maximum": 9}}},
                         self.task_schema(self.doc().body, "swap_me"))

    def test_security_says_what_the_server_enforces(self):
        """Every generic operation, called without a credential: 401 exactly when the document gives it
        security; with a viewer key: 403 exactly when it needs more than viewer."""
        viewer = self.make_key("viewer")
        doc = self.doc().body
        rank = {"viewer": 1, "operator": 2, "admin": 3}
        seen = 0
        for path, item in doc["paths"].items():
            if re.match(r"^/api/v1/agents/[^{}]+/execute$", path):
                continue  # the per-agent operations are checked below
            url = path.replace("{name}", "anything").replace("{id}", SAMPLE_ID)
            for method, op in item.items():
                seen += 1
                with self.subTest(op=op["operationId"]):
                    body = {"task": 1, "agent": "anything"} if method == "post" else None
                    r = self.server.request(method.upper(), url, body=body)
                    if op["security"] == []:
                        self.assertNotIn("x-required-role", op)
                        self.assertNotIn(r.status, (401, 403), self.ctx_msg(r))
                    else:
                        self.assertEqual([{"bearer": []}, {"apiKey": []}], op["security"])
                        self.assertIn("401", op["responses"])
                        self.assertError(r, 401, "unauthenticated")
                        r = self.server.request(method.upper(), url, body=body,
                                                headers={"Authorization": f"Bearer {viewer}"})
                        if rank[op["x-required-role"]] > rank["viewer"]:
                            self.assertError(r, 403, "forbidden")
                        else:
                            self.assertNotIn(r.status, (401, 403), self.ctx_msg(r))
        self.assertGreaterEqual(seen, 14)
        op = doc["paths"]["/api/v1/agents/order/execute"]["post"]
        self.assertEqual("operator", op["x-required-role"])
        self.assertError(self.server.execute("order", {"customer": "x", "items": []}), 401, "unauthenticated")
        self.assertError(self.server.execute("order", {"customer": "x", "items": []},
                                             headers={"X-API-Key": viewer}), 403, "forbidden")
        schemes = doc["components"]["securitySchemes"]
        self.assertEqual({"type": "http", "scheme": "bearer"}, {k: schemes["bearer"][k] for k in ("type", "scheme")})
        self.assertEqual(("header", "X-API-Key"), (schemes["apiKey"]["in"], schemes["apiKey"]["name"]))

    def make_key(self, role):
        r = self.server.request("POST", "/api/v1/keys", body={"name": f"openapi {role}", "role": role},
                                headers={"Authorization": f"Bearer {self.admin}"})
        self.assertEqual(201, r.status, self.ctx_msg(r))
        return r.body["key"]

    def test_docs_page_is_self_contained(self):
        r = self.server.request("GET", "/docs")  # no credential, auth required
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertEqual("text/html; charset=utf-8", r.headers.get("content-type"))
        page = r.raw.decode("utf-8")
        self.assertTrue(page.lstrip().lower().startswith("<!doctype html>"))
        self.assertIn("/openapi.json", page)
        # nothing from elsewhere: no absolute or protocol-relative URL in any attribute or script
        self.assertNotRegex(page, r"https?://")
        self.assertNotRegex(page, r"""(?i)\b(src|href|action)\s*=\s*["']?\s*//""")
        self.assertNotRegex(page, r"(?i)<(link|iframe|object|embed)\b")
        self.assertNotRegex(page, r"(?i)<script[^>]*\bsrc\s*=")
        # the document's text (agent descriptions) is never parsed as HTML
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            self.assertNotIn(sink, page)
        csp = r.headers.get("content-security-policy", "")
        self.assertIn("default-src 'none'", csp)
        self.assertIn("connect-src 'self'", csp)
        self.assertRegex(r.headers.get("etag", ""), r'^"[0-9a-f]{16}"$')
        same = self.server.request("GET", "/docs", headers={"If-None-Match": r.headers["etag"]})
        self.assertEqual(304, same.status)
        head = self.server.request("HEAD", "/docs")
        self.assertEqual(200, head.status)
        self.assertEqual(b"", head.raw)
