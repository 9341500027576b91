"""Multi-agent calls: luagent.agents.call(name, task, ctx) and luagent.agents.parallel{...} run child
executions on the caller's worker without blocking it. Each child has its own record with
parent_id (GET /api/v1/executions/{id}, GET /api/v1/executions?parent_id=), never outlives its
parent's deadline, is cancelled with its parent, and nests at most LUAGENT_MAX_AGENT_DEPTH deep."""

import datetime
import json
import socket
import time
import urllib.parse
import uuid

from .harness import REPO, SLOW, UUID_RE, ServerTestCase, WithKeys, WithPostgres, measure


def ts(s):
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


# A parent that runs what its task says, and returns what it saw.
PARENT = r'''
return {
  execute = function(task, ctx)
    if task.op == "call" then
      return {got = luagent.agents.call(task.name, task.task, task.pass_ctx and ctx or task.ctx), me = ctx.execution_id}
    elseif task.op == "pcall" then
      local ok, err = pcall(luagent.agents.call, task.name, task.task)
      return {ok = ok, err = err, after = "kept running"}
    elseif task.op == "parallel" then
      local list = {}
      for i, e in ipairs(task.list) do list[i] = {e[1], e[2], e[3]} end
      local t0 = luagent.now()
      local r = luagent.agents.parallel(list)
      return {results = r, took_ms = (luagent.now() - t0) * 1000, me = ctx.execution_id}
    elseif task.op == "deadlines" then
      return {mine = ctx.deadline_ms, child = luagent.agents.call("deadline", {})}
    elseif task.op == "misuse" then
      local many = {}
      for i = 1, 257 do many[i] = {"nap", {}} end
      local ok, err = pcall(luagent.agents.parallel, task.bad == "entry" and {42} or
                                                    task.bad == "many" and many or
                                                    task.bad == "list" and "nap" or
                                                    task.bad == "name" and {{7, {}}} or
                                                    task.bad == "fn" and {{"nap", {f = print}}} or
                                                    task.bad == "ctx" and {{"nap", {}, "x"}} or {{"nap"}})
      return {ok = ok, err = tostring(err)}
    end
  end,
}
'''

NAP = r'''
return {
  input = {type = "object", properties = {ms = {type = "number", minimum = 0}}},
  timeout_ms = 30000,
  execute = function(task, ctx)
    luagent.sleep(task.ms or 0)
    return {id = task.id, slept = task.ms or 0, context = ctx.context, parent_agent_sees = ctx.agent,
            stream = ctx.stream}
  end,
}
'''

DEADLINE = r'''
return { timeout_ms = 600000, execute = function(task, ctx) return ctx.deadline_ms end }
'''

SHORT = r'''
return {
  timeout_ms = 200,
  execute = function(task, ctx) luagent.sleep(5000) return "never" end,
}
'''

BOOM = r'''
return { execute = function(task, ctx) error({status = 409, code = "conflict_here", message = "the child says no"}) end }
'''

PLAIN = r'''
return { execute = function(task, ctx) error("boom") end }
'''

# a -> b -> a -> ... until the depth limit stops it
PING = r'''return { execute = function(task, ctx) return luagent.agents.call("pong", task) end }'''
PONG = r'''return { execute = function(task, ctx) return luagent.agents.call("ping", task) end }'''

# the parent's deadline is 400 ms; its child would sleep 5 s with a 30 s timeout of its own
HASTY = r'''
return {
  timeout_ms = 400,
  execute = function(task, ctx)
    return luagent.agents.call("nap", {ms = 5000, id = task.marker})
  end,
}
'''

# for client-disconnect: three long children
FANOUT = r'''
return {
  execute = function(task, ctx)
    return luagent.agents.parallel{{"nap", {ms = 5000, id = task.marker .. "-1"}},
                                   {"nap", {ms = 5000, id = task.marker .. "-2"}},
                                   {"nap", {ms = 5000, id = task.marker .. "-3"}}}
  end,
}
'''

# events: the parent emits, the child emits and streams a model's answer (mock provider)
TALKER = r'''
return {
  execute = function(task, ctx)
    ctx.emit({from = "parent"})
    local r = luagent.agents.call("chatter", {q = "one two three four five six"}, ctx)
    local r2 = luagent.agents.call("chatter", {q = "seven eight"})
    return {child = r, child2 = r2}
  end,
}
'''

CHATTER = r'''
return {
  execute = function(task, ctx)
    ctx.emit({from = "child"})
    local r = luagent.ai.chat{model = "mock", messages = {{role = "user", content = task.q}}, stream = ctx.stream}
    return {content = r.content}
  end,
}
'''


class AgentsHelpers:
    def run_parent(self, task, status=200):
        r = self.server.execute("parent", task)
        self.assertEqual(status, r.status, self.ctx_msg(r))
        return r.body

    def record(self, eid, final=True, timeout=3.0):
        def get():
            r = self.server.request("GET", f"/api/v1/executions/{eid}")
            return r.body if r.status == 200 else None
        rec, _, ok = self.poll(get, lambda b: b is not None and (not final or b["status"] in ("succeeded", "failed")),
                               timeout=timeout, interval=0.02)
        self.assertTrue(ok, f"no final record for {eid}: {rec}\n{self.server.log_tail(15)}")
        return rec

    def children(self, parent_id, expect=None, timeout=3.0):
        """The records listed with ?parent_id=, oldest first (once `expect` of them are final)."""
        def get():
            q = urllib.parse.urlencode({"parent_id": parent_id, "limit": 500})
            r = self.server.request("GET", f"/api/v1/executions?{q}")
            self.assertEqual(200, r.status, self.ctx_msg(r))
            return list(reversed(r.body["items"]))
        items, _, ok = self.poll(get, lambda it: expect is None or (
            len(it) >= expect and all(i["status"] in ("succeeded", "failed") for i in it)), timeout=timeout,
            interval=0.02)
        self.assertTrue(ok, f"expected {expect} final children of {parent_id}, got {items}")
        return items


class AgentsCallTests(AgentsHelpers, ServerTestCase):
    WORKERS = 1  # one worker: the overlap below can only come from the scheduler
    AGENTS = {"parent": PARENT, "nap": NAP, "short": SHORT, "boom": BOOM, "plain": PLAIN, "ping": PING,
              "pong": PONG, "hasty": HASTY, "fanout": FANOUT, "talker": TALKER, "chatter": CHATTER,
              "deadline": DEADLINE}
    ENV = {"LUAGENT_PROVIDERS_DIR": str(REPO / "providers")}

    # ---- call ------------------------------------------------------------------------------
    def test_call_returns_the_childs_result_and_records_it_with_parent_id(self):
        body = self.run_parent({"op": "call", "name": "nap", "task": {"ms": 1, "id": "x"},
                                "ctx": {"session_id": "s-1"}})
        got = body["result"]["got"]
        self.assertEqual({"id": "x", "slept": 1, "context": {"session_id": "s-1"}, "parent_agent_sees": "nap",
                          "stream": False}, got)
        pid = body["execution_id"]
        self.assertEqual(pid, body["result"]["me"])
        kids = self.children(pid, expect=1)
        self.assertEqual(1, len(kids), kids)
        kid = self.record(kids[0]["execution_id"])
        self.assertEqual(pid, kid["parent_id"])
        self.assertEqual("nap", kid["agent"])
        self.assertEqual("succeeded", kid["status"])
        self.assertEqual({"ms": 1, "id": "x"}, kid["task"])
        self.assertEqual({"session_id": "s-1"}, kid["context"])
        self.assertEqual(got, kid["result"])
        parent = self.record(pid)
        self.assertIsNone(parent["parent_id"])
        self.assertEqual(parent["request_id"], kid["request_id"], "a child shares its parent's request id")

    def test_call_with_the_callers_ctx_passes_its_context_on(self):
        r = self.server.execute("parent", {"op": "call", "name": "nap", "task": {}, "pass_ctx": True},
                                context={"session_id": "abc", "tenant": 7})
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertEqual({"session_id": "abc", "tenant": 7}, r.body["result"]["got"]["context"])

    def test_history_filter_by_parent_id(self):
        a = self.run_parent({"op": "parallel", "list": [["nap", {"id": 1}], ["nap", {"id": 2}]]})["execution_id"]
        b = self.run_parent({"op": "call", "name": "nap", "task": {"id": 3}})["execution_id"]
        ka = self.children(a, expect=2)
        kb = self.children(b, expect=1)
        self.assertEqual([1, 2], sorted(k["task"]["id"] for k in ka))
        self.assertEqual([3], [k["task"]["id"] for k in kb])
        self.assertTrue(all(k["parent_id"] == a for k in ka))
        self.assertEqual([], self.children(str(uuid.uuid4()), expect=0))
        r = self.server.request("GET", "/api/v1/executions?parent_id=not-an-id")
        self.assertError(r, 400, "invalid_request")
        # upper-case ids name the same execution
        self.assertEqual(len(ka), len(self.children(a.upper(), expect=2)))

    # ---- parallel --------------------------------------------------------------------------
    def test_parallel_children_overlap(self):
        """Three children that each sleep 300 ms: in sequence that is >= 900 ms; together ~300."""
        body = self.run_parent({"op": "parallel", "list": [["nap", {"ms": 300, "id": i}] for i in (1, 2, 3)]})
        res = body["result"]
        self.assertEqual([{"ok": True, "result": {"id": i, "slept": 300, "context": {}, "parent_agent_sees": "nap",
                                                   "stream": False}} for i in (1, 2, 3)], res["results"])
        measure("parallel{} of three children sleeping 300 ms each (serial: >= 900 ms)",
                f"{res['took_ms']:.0f} ms in the parent, {body['duration_ms']:.0f} ms execution")
        self.assertGreaterEqual(res["took_ms"], 295)
        self.assertLess(res["took_ms"], 700, "the children ran one after another")
        self.assertLess(body["duration_ms"], 800)
        kids = self.children(body["execution_id"], expect=3)
        starts = [ts(k["started_at"]) for k in kids]
        ends = [ts(k["finished_at"]) for k in kids]
        self.assertLess(max(starts), min(ends), f"the children's run times do not overlap: {kids}")

    def test_parallel_results_come_in_input_order_with_failures_in_place(self):
        body = self.run_parent({"op": "parallel", "list": [
            ["nap", {"ms": 50, "id": "slow"}],
            ["no.such.agent", {}],
            ["nap", {"ms": -1}],          # fails nap's input schema
            ["boom", {}],
            ["plain", {}],
            ["nap", {"id": "fast"}],
            ["bad name!", {}],
        ]})
        rs = body["result"]["results"]
        self.assertEqual(7, len(rs), rs)
        self.assertEqual({"ok": True, "result": {"id": "slow", "slept": 50, "context": {}, "parent_agent_sees": "nap",
                                                  "stream": False}}, rs[0])
        self.assertEqual(False, rs[1]["ok"])
        self.assertEqual((404, "not_found"), (rs[1]["error"]["status"], rs[1]["error"]["code"]), rs[1])
        self.assertIn("no.such.agent", rs[1]["error"]["message"])
        self.assertEqual((422, "validation_failed"), (rs[2]["error"]["status"], rs[2]["error"]["code"]), rs[2])
        self.assertEqual("/ms", rs[2]["error"]["details"][0]["path"], rs[2])
        self.assertEqual({"status": 409, "code": "conflict_here", "message": "the child says no"},
                         {k: rs[3]["error"][k] for k in ("status", "code", "message")})
        self.assertRegex(rs[3]["error"]["execution_id"], UUID_RE)
        self.assertEqual({"status": 500, "code": "agent_error", "message": "boom"},
                         {k: rs[4]["error"][k] for k in ("status", "code", "message")})
        self.assertEqual({"ok": True, "result": {"id": "fast", "slept": 0, "context": {}, "parent_agent_sees": "nap",
                                                  "stream": False}}, rs[5])
        self.assertEqual((404, "not_found"), (rs[6]["error"]["status"], rs[6]["error"]["code"]), rs[6])
        # refused ones never ran: 4 children recorded (slow, boom, plain, fast), the failures as failed
        kids = self.children(body["execution_id"], expect=4)
        self.assertEqual(4, len(kids), kids)
        by_agent = sorted((k["agent"], k["status"]) for k in kids)
        self.assertEqual([("boom", "failed"), ("nap", "succeeded"), ("nap", "succeeded"), ("plain", "failed")],
                         by_agent)
        boom = [k for k in kids if k["agent"] == "boom"][0]
        self.assertEqual("conflict_here", boom["error"]["code"])
        self.assertEqual(rs[3]["error"]["execution_id"], boom["execution_id"])

    def test_parallel_of_nothing_is_an_empty_list(self):
        body = self.run_parent({"op": "parallel", "list": []})
        self.assertEqual([], body["result"]["results"])

    def test_misuse_raises_a_clear_error_before_anything_starts(self):
        cases = {"entry": "(entry 1): expected a table {name, task[, ctx]}, got a number",
                 "name": "(entry 1): the agent name must be a string, got a number",
                 "fn": "(entry 1): the task cannot encode function at /f",
                 "ctx": "(entry 1): the context must be a table, got a string",
                 "nil": "(entry 1): the task is nil",
                 "many": ": at most 256 agents at once, got 257",
                 "list": ": expected a list of {name, task[, ctx]} entries, got a string"}
        for bad, want in cases.items():
            with self.subTest(bad=bad):
                body = self.run_parent({"op": "misuse", "bad": bad})
                self.assertFalse(body["result"]["ok"])
                self.assertIn("luagent.agents.parallel" + (" " if want[0] == "(" else "") + want,
                              body["result"]["err"])
                self.assertEqual([], self.children(body["execution_id"]), "a child started anyway")

    # ---- errors ----------------------------------------------------------------------------
    def test_child_error_raises_in_the_parent_and_pcall_catches_it(self):
        body = self.run_parent({"op": "pcall", "name": "boom", "task": {}})
        res = body["result"]
        self.assertFalse(res["ok"])
        self.assertEqual("kept running", res["after"])
        self.assertEqual({"status": 409, "code": "conflict_here", "message": "the child says no"},
                         {k: res["err"][k] for k in ("status", "code", "message")})
        kid = self.record(res["err"]["execution_id"])
        self.assertEqual(body["execution_id"], kid["parent_id"])
        self.assertEqual("failed", kid["status"])

    def test_an_uncaught_child_error_becomes_the_parents_error(self):
        r = self.server.execute("parent", {"op": "call", "name": "boom", "task": {}})
        err = self.assertError(r, 409, "conflict_here")
        self.assertEqual("the child says no", err["message"])
        r = self.server.execute("parent", {"op": "call", "name": "nap", "task": {"ms": "soon"}})
        err = self.assertError(r, 422, "validation_failed")
        self.assertIn("nap", err["message"])
        self.assertEqual("/ms", err["details"][0]["path"], err)
        self.assertEqual(r.body["error"]["execution_id"], self.record(r.body["error"]["execution_id"])["execution_id"])
        r = self.server.execute("parent", {"op": "call", "name": "ghost", "task": {}})
        self.assertError(r, 404, "not_found")

    def test_child_timeout_is_an_error_the_parent_can_catch(self):
        body = self.run_parent({"op": "pcall", "name": "short", "task": {}})
        res = body["result"]
        self.assertEqual("kept running", res["after"])
        self.assertEqual((504, "timeout"), (res["err"]["status"], res["err"]["code"]), res)
        self.assertLess(body["duration_ms"], 2000)

    def test_a_child_never_outlives_its_parents_deadline(self):
        marker = uuid.uuid4().hex
        t0 = time.monotonic()
        r = self.server.execute("hasty", {"marker": marker})
        took = time.monotonic() - t0
        self.assertError(r, 504, "timeout")
        self.assertLess(took, 3.0 * SLOW, "the parent waited for its child past its own deadline")
        pid = r.body["error"]["execution_id"]
        parent = self.record(pid)
        kids = self.children(pid, expect=1)
        kid = kids[0]
        self.assertEqual("failed", kid["status"], kid)
        self.assertIn(kid["error"]["code"], ("timeout", "cancelled"), kid)
        self.assertEqual(marker, kid["task"]["id"])
        # it ended with its parent: not 5 s later
        self.assertLessEqual(ts(kid["finished_at"]), ts(parent["finished_at"]) + 0.1, (kid, parent))
        self.assertLess(kid["duration_ms"], 1000, kid)

    def test_a_child_sees_the_parents_deadline_when_its_own_is_later(self):
        body = self.run_parent({"op": "deadlines"})
        mine, child = body["result"]["mine"], body["result"]["child"]
        self.assertEqual(mine, child, "the child's ctx.deadline_ms is not its parent's (its own timeout is 10 min)")
        self.assertLess(mine - time.time() * 1000, 61000)

    def test_depth_limit_stops_a_cycle(self):
        r = self.server.execute("ping", {"n": 1})
        err = self.assertError(r, 500, "agent_depth_exceeded")
        self.assertIn("LUAGENT_MAX_AGENT_DEPTH", err["message"])
        self.assertIn("ping > pong > ping", err["message"])
        # the chain is recorded: ping (depth 0) and 8 descendants, each the child of the one before
        eid, depth = err["execution_id"], 0
        while True:
            kids = self.children(eid, expect=None)
            if not kids:
                break
            self.assertEqual(1, len(kids), kids)
            self.assertEqual("failed", self.record(kids[0]["execution_id"])["status"])
            eid, depth = kids[0]["execution_id"], depth + 1
        self.assertEqual(8, depth)

    # ---- cancellation ----------------------------------------------------------------------
    def test_client_disconnect_cancels_the_children(self):
        marker = uuid.uuid4().hex
        body = json.dumps({"task": {"marker": marker}}).encode()
        s = socket.create_connection(("127.0.0.1", self.server.port))
        s.sendall(b"POST /api/v1/agents/fanout/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(0.3)
        s.close()
        t0 = time.monotonic()

        def find():
            r = self.server.request("GET", "/api/v1/executions?agent=fanout&limit=500")
            for it in r.body["items"]:
                if (it.get("task") or {}).get("marker") == marker:
                    return it
            return None
        parent, _, ok = self.poll(find, lambda it: it is not None and it["status"] == "failed", timeout=4,
                                  interval=0.05)
        self.assertTrue(ok, f"the abandoned parent was not cancelled: {parent}\n{self.server.log_tail(15)}")
        self.assertEqual("client_closed", parent["error"]["code"])
        kids = self.children(parent["execution_id"], expect=3)
        self.assertEqual(3, len(kids))
        for k in kids:
            self.assertEqual("failed", k["status"], k)
            self.assertEqual("cancelled", k["error"]["code"], k)
        self.assertLess(time.monotonic() - t0, 4.0, "the children ran to their end")
        # the worker is fine afterwards
        self.assertEqual(200, self.server.execute("nap", {"ms": 1}).status)

    # ---- events and usage ------------------------------------------------------------------
    def test_child_events_stream_to_the_parents_client_and_usage_adds_up(self):
        events = self.server.sse("talker", {})
        kinds = [e[0] for e in events]
        self.assertEqual("result", kinds[-1], events)
        emits = [e[1] for e in events if e[0] == "emit"]
        self.assertEqual([{"from": "parent"}, {"from": "child"}, {"from": "child"}], emits)
        text = "".join(e[1]["text"] for e in events if e[0] == "token")
        res = events[-1][1]
        self.assertEqual(res["result"]["child"]["content"] + res["result"]["child2"]["content"], text)
        self.assertTrue(text, "no token events from the children")
        # usage: the parent made no AI call itself; it carries both children's
        usage = res["usage"]
        self.assertEqual(2, usage["calls"], usage)
        kids = self.children(res["execution_id"], expect=2)
        kid_usage = [self.record(k["execution_id"])["usage"] for k in kids]
        self.assertEqual([1, 1], [u["calls"] for u in kid_usage])
        self.assertEqual(sum(u["output_tokens"] for u in kid_usage), usage["output_tokens"])
        self.assertEqual(sum(u["input_tokens"] for u in kid_usage), usage["input_tokens"])
        self.assertEqual(2, sum(m["calls"] for m in usage["by_model"].values()), usage)
        # each record keeps its own emits: the parent's has its one, each child's its one
        parent = self.record(res["execution_id"])
        self.assertEqual([{"from": "parent"}], [e["data"] for e in parent["events"] if e["type"] == "emit"])
        for k in kids:
            rec = self.record(k["execution_id"])
            self.assertEqual([{"from": "child"}], [e["data"] for e in rec["events"] if e["type"] == "emit"])

    def test_a_child_of_a_streamed_execution_knows_it_streams(self):
        events = self.server.sse("parent", {"op": "call", "name": "nap", "task": {}})
        self.assertEqual("result", events[-1][0], events)
        self.assertTrue(events[-1][1]["result"]["got"]["stream"])


    def test_an_async_parent_has_children_too(self):
        r = self.server.execute("parent", {"op": "call", "name": "nap", "task": {"id": "bg"}},
                                options={"mode": "async"})
        self.assertEqual(202, r.status, self.ctx_msg(r))
        pid = r.body["execution_id"]
        parent = self.record(pid)
        self.assertEqual("succeeded", parent["status"], parent)
        self.assertEqual("bg", parent["result"]["got"]["id"])
        kids = self.children(pid, expect=1)
        self.assertEqual(("nap", "sync"), (kids[0]["agent"], kids[0]["mode"]))


class AgentsDrainTests(AgentsHelpers, ServerTestCase):
    """SIGTERM while children run: past LUAGENT_DRAIN_TIMEOUT_MS parent and children are cancelled,
    the client gets its 503, and the server exits 0 (no leak under ASan)."""
    WORKERS = 1
    AGENTS = {"fanout": FANOUT, "nap": NAP}
    ENV = {"LUAGENT_DRAIN_TIMEOUT_MS": "300"}
    CHECK_EXIT = False  # the test stops the server itself and checks its exit

    def test_drain_cancels_parent_and_children(self):
        import threading
        got = {}

        def run():
            got["r"] = self.server.execute("fanout", {"marker": "drain"})
        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.3)
        code = self.server.stop()
        t.join(10 * SLOW)
        self.assertEqual(0, code, self.server.log_tail(20))
        self.assertIn("r", got, "the client got no answer")
        self.assertError(got["r"], 503, "unavailable")


class AgentsDepthConfigTests(AgentsHelpers, ServerTestCase):
    """LUAGENT_MAX_AGENT_DEPTH sets the limit; 0 turns agent calls off."""
    WORKERS = 1
    AGENTS = {"ping": PING, "pong": PONG, "parent": PARENT, "nap": NAP}
    ENV = {"LUAGENT_MAX_AGENT_DEPTH": "2"}

    def test_limit_from_the_environment(self):
        r = self.server.execute("ping", {})
        err = self.assertError(r, 500, "agent_depth_exceeded")
        self.assertIn("nest 2 deep", err["message"])
        self.assertIn("ping > pong > ping > ...", err["message"])
        # depth 1 is fine
        self.assertEqual(200, self.server.execute("parent", {"op": "call", "name": "nap", "task": {}}).status)


class AgentsAllowListTests(AgentsHelpers, WithKeys, ServerTestCase):
    """A key allowed to run only some agents cannot reach others through luagent.agents."""
    WORKERS = 1
    AGENTS = {"parent": PARENT, "nap": NAP, "boom": BOOM}
    KEY_ROLES = ("admin",)

    def key(self, agents):
        r = self.server.request("POST", "/api/v1/keys", {"name": "limited", "role": "operator", "agents": agents},
                                headers={"Authorization": f"Bearer {self.admin}"})
        self.assertEqual(201, r.status, self.ctx_msg(r))
        return r.body["key"]

    def test_children_are_held_to_the_callers_allow_list(self):
        k = self.key(["parent", "nap"])
        h = {"Authorization": f"Bearer {k}"}
        task = {"op": "parallel", "list": [["nap", {"id": 1}], ["boom", {}]]}
        r = self.server.execute("parent", task, headers=h)
        self.assertEqual(200, r.status, self.ctx_msg(r))
        rs = r.body["result"]["results"]
        self.assertEqual({"ok": True, "result": {"id": 1, "slept": 0, "context": {}, "parent_agent_sees": "nap",
                                                  "stream": False}}, rs[0])
        self.assertEqual((403, "forbidden"), (rs[1]["error"]["status"], rs[1]["error"]["code"]), rs)
        self.assertIn("boom", rs[1]["error"]["message"])
        # the admin key has no list: the same call reaches boom
        r = self.server.execute("parent", task, headers={"Authorization": f"Bearer {self.admin}"})
        self.assertEqual("conflict_here", r.body["result"]["results"][1]["error"]["code"], self.ctx_msg(r))
        # children run as the caller
        kid = self.children_as(r.body["execution_id"])
        self.assertEqual("admin", kid["user"]["role"])

    def children_as(self, pid):
        q = urllib.parse.urlencode({"parent_id": pid})
        h = {"Authorization": f"Bearer {self.admin}"}

        def get():
            return self.server.request("GET", f"/api/v1/executions?{q}", headers=h).body["items"]
        items, _, ok = self.poll(get, lambda it: len(it) >= 1)
        self.assertTrue(ok)
        return items[0]


class SampleTeamLeadTests(AgentsHelpers, ServerTestCase):
    """agents/team/lead.lua, the sample that uses luagent.agents, with the real team.review and
    summarize agents and the mock provider."""
    WORKERS = 1
    AGENTS = {n: (REPO / "agents" / (n.replace(".", "/") + ".lua")).read_text()
              for n in ("team.lead", "team.review", "summarize")}
    ENV = {"LUAGENT_PROVIDERS_DIR": str(REPO / "providers")}

    def test_lead_runs_review_and_summary_as_children(self):
        text = "the quick brown fox jumps over the lazy dog"
        r = self.server.execute("team.lead", {"text": text})
        res = self.assertOk(r)["result"]
        self.assertEqual(9, res["review"]["words"])
        self.assertTrue(res["review"]["ok"])
        self.assertIn("fox", res["summary"])
        self.assertNotIn("short", res)
        self.assertEqual(1, r.body["usage"]["calls"], r.body)  # the summarize child's model call
        kids = self.children(r.body["execution_id"], expect=2)
        self.assertEqual(["summarize", "team.review"], sorted(k["agent"] for k in kids))

    def test_a_long_text_gets_a_third_child(self):
        r = self.server.execute("team.lead", {"text": "word " * 250})
        res = self.assertOk(r)["result"]
        self.assertFalse(res["review"]["ok"])
        self.assertIsInstance(res["short"], str)
        self.assertEqual(2, r.body["usage"]["calls"], r.body)
        self.assertEqual(3, len(self.children(r.body["execution_id"], expect=3)))

    def test_a_bad_task_is_refused_before_any_child(self):
        r = self.server.execute("team.lead", {"txt": "x"})
        self.assertError(r, 422, "validation_failed")


class AgentsPostgresTests(AgentsHelpers, WithPostgres, ServerTestCase):
    """With DATABASE_URL: children's rows carry parent_id, and ?parent_id= is answered by Postgres."""
    WORKERS = 2
    AGENTS = {"parent": PARENT, "nap": NAP}
    DB_PREFIX = "agents"

    def test_parent_id_in_rows_and_in_the_listing(self):
        body = self.run_parent({"op": "parallel", "list": [["nap", {"id": 1}], ["nap", {"id": 2}]]})
        pid = body["execution_id"]

        def rows():
            return self.pg.query(f"select agent, status, parent_id from executions where parent_id = '{pid}'"
                                 f" or id = '{pid}' order by id", db=self.db)
        got, _, ok = self.poll(rows, lambda r: len(r) == 3 and all(x[1] == "succeeded" for x in r), timeout=5)
        self.assertTrue(ok, f"rows: {got}\n{self.server.log_tail(15)}")
        self.assertEqual([["parent", "succeeded", ""], ["nap", "succeeded", pid], ["nap", "succeeded", pid]], got)
        q = urllib.parse.urlencode({"parent_id": pid})
        r = self.server.request("GET", f"/api/v1/executions?{q}")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        self.assertNotIn("x-history-source", r.headers, "answered from memory, not from Postgres")
        self.assertEqual([1, 2], sorted(it["task"]["id"] for it in r.body["items"]))
        self.assertTrue(all(it["parent_id"] == pid for it in r.body["items"]))
