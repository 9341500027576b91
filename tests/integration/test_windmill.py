"""The Windmill folder (windmill/) against a live luagent: every script's `main` run as a Windmill
worker runs a job, and every flow run step by step from its flow.yaml (windmill_runner.py says what
stands in for Windmill), with authentication on and an operator key made by `luagent keys create`,
as a real setup has. `wmill lint` over the same folder runs in tests/windmill/run.sh."""

import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from .harness import BIN, REPO, SLOW, UUID_RE, ServerTestCase, base_env
from .windmill_runner import (SYNC_DIR, FlowRun, JobFailed, ResumeEndpoint, Workspace, evaluate, load_yaml,
                              signature_ok)

SECRET = "wm-callback-s3cret"
FOLDER = SYNC_DIR / "f" / "luagent"
RUN_AGENT = FOLDER / "run_agent.py"
START_ASYNC = FOLDER / "start_agent_async.py"
TEXT = "Windmill runs the flows and luagent runs the agents they call, one HTTP request per step."


def epoch(iso):
    """luagent's record timestamps (2026-11-26T04:15:00.123Z) in epoch seconds."""
    return datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def sample_agents(*names):
    return {n: (REPO / "agents" / (n.replace(".", "/") + ".lua")).read_text() for n in names}


class WindmillTests(ServerTestCase):
    AGENTS = sample_agents("hello", "summarize", "team.review", "digest")
    WORKERS = 2

    @classmethod
    def setUpClass(cls):
        cls.keys_dir = tempfile.mkdtemp(prefix="luagent-wm-keys-")
        keys_file = os.path.join(cls.keys_dir, "api_keys")
        cls.ENV = {"LUAGENT_AUTH": "required", "LUAGENT_API_KEYS_FILE": keys_file,
                   "LUAGENT_CALLBACK_SECRET": SECRET, "LUAGENT_JOB_CONCURRENCY": "4",
                   "LUAGENT_PROVIDERS_DIR": str(REPO / "providers")}
        super().setUpClass()
        with open(cls.server.out_path) as f:
            out = f.read()
        m = re.search(r"^admin API key: (\S+)$", out, re.M)
        assert m, f"no admin key printed on stdout: {out!r}"
        cls.admin = m.group(1)
        r = subprocess.run([str(BIN), "keys", "create", "--name", "windmill", "--role", "operator"],
                           env=base_env({"LUAGENT_API_KEYS_FILE": keys_file}), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30 * SLOW)
        assert r.returncode == 0, r.stderr
        cls.key = json.loads(r.stdout)["key"]
        deadline = time.monotonic() + 6 * SLOW  # keys made by the CLI reach the server within its reload period
        while cls.get_as(cls.key, "/api/v1/agents").status != 200:
            assert time.monotonic() < deadline, "the operator key made by `luagent keys create` never worked"
            time.sleep(0.05)
        cls.resume = ResumeEndpoint()
        resource = load_yaml(FOLDER / "server.resource.yaml")
        assert resource["resource_type"] == "luagent", resource
        # The workspace as docs/windmill.md sets it up: the resource as synced, with the base URL
        # this Windmill reaches luagent at, and the key in the secret variable it names.
        value = dict(resource["value"], base_url=f"http://127.0.0.1:{cls.server.port}")
        cls.ws = Workspace({"f/luagent/server": value}, {"f/luagent/api_key": cls.key}, cls.resume)

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            if getattr(cls, "resume", None):
                cls.resume.stop()
            if getattr(cls, "ws", None):
                shutil.rmtree(cls.ws.tmp, ignore_errors=True)
            shutil.rmtree(cls.keys_dir, ignore_errors=True)

    @classmethod
    def get_as(cls, key, path):
        return cls.server.request("GET", path, headers={"Authorization": f"Bearer {key}"})

    def record(self, execution_id):
        r = self.get_as(self.key, f"/api/v1/executions/{execution_id}")
        self.assertEqual(200, r.status, self.ctx_msg(r))
        return r.body

    def run_agent(self, agent, task, **extra):
        return self.ws.run_script(RUN_AGENT, {"server": "$res:f/luagent/server", "agent": agent, "task": task,
                                              **extra})

    def assertReply(self, reply, agent):
        self.assertEqual({"execution_id", "agent", "version", "status", "result", "duration_ms", "usage"},
                         set(reply), reply)
        self.assertRegex(reply["execution_id"], UUID_RE)
        self.assertEqual((agent, "succeeded"), (reply["agent"], reply["status"]), reply)

    # ---- the scripts, one job each ------------------------------------------------------------
    def test_run_agent_script(self):
        job, reply = self.run_agent("hello", {"name": "Ada"}, context={"session_id": "wm-1"})
        self.assertReply(reply, "hello")
        self.assertEqual({"message": "Hello, Ada!"}, reply["result"])
        rec = self.record(reply["execution_id"])
        self.assertEqual("operator", rec["user"]["role"], rec)
        self.assertEqual(job, rec["request_id"], "the Windmill job id is the request id luagent records")
        self.assertEqual({"session_id": "wm-1"}, rec["context"])

    def test_run_agent_errors_fail_the_job(self):
        with self.assertRaises(JobFailed) as cm:
            self.run_agent("team.review", {"words": 3})
        self.assertEqual("LuagentError", cm.exception.error["name"])
        self.assertIn("422 validation_failed", cm.exception.error["message"])
        with self.assertRaises(JobFailed) as cm:
            self.run_agent("no.such.agent", {})
        self.assertIn("404 not_found", cm.exception.error["message"])
        bad = Workspace({"f/luagent/server": dict(self.ws.resources["f/luagent/server"])},
                        {"f/luagent/api_key": "lg_" + "x" * 43}, self.resume)
        try:
            with self.assertRaises(JobFailed) as cm:
                bad.run_script(RUN_AGENT, {"server": "$res:f/luagent/server", "agent": "hello", "task": {}})
            self.assertIn("401 unauthenticated", cm.exception.error["message"])
            self.assertNotIn(self.key, json.dumps(cm.exception.error))
        finally:
            shutil.rmtree(bad.tmp, ignore_errors=True)

    def test_chain_step_two_gets_step_one_result(self):
        _, first = self.run_agent("summarize", {"text": TEXT})
        self.assertReply(first, "summarize")
        summary = first["result"]["summary"]
        self.assertIsInstance(summary, str)
        self.assertTrue(summary)
        _, second = self.run_agent("team.review", {"text": summary})
        self.assertReply(second, "team.review")
        self.assertEqual(hashlib.sha256(summary.encode()).hexdigest(), second["result"]["sha256"])
        self.assertEqual(len(summary.split()), second["result"]["words"])

    def test_async_script_signed_callback(self):
        receiver = self.ws.resume.base + "/standalone-" + str(time.monotonic_ns())
        _, accepted = self.ws.run_script(START_ASYNC, {
            "server": "$res:f/luagent/server", "agent": "digest",
            "task": {"texts": ["one two three", "four five"], "pause_ms": int(600 * SLOW)},
            "resume_url": receiver + "/1/resume"})
        returned = time.time()
        self.assertEqual({"execution_id", "agent", "status", "status_url"}, set(accepted), accepted)
        self.assertEqual(("digest", "queued"), (accepted["agent"], accepted["status"]))
        [event] = self.ws.resume.wait(receiver.rsplit("/", 1)[1], 1, timeout=20 * SLOW)
        self.assertTrue(signature_ok(SECRET, event), event["headers"])
        self.assertEqual(accepted["execution_id"], event["headers"].get("x-luagent-execution-id"))
        rec = json.loads(event["raw"])
        self.assertEqual((accepted["execution_id"], "succeeded", "async"), (rec["execution_id"], rec["status"],
                                                                             rec["mode"]), rec)
        self.assertEqual(2, rec["result"]["count"])
        self.assertEqual(2, len(rec["result"]["summaries"]))
        self.assertEqual(set(self.record(rec["execution_id"])), set(rec), "the record as GET shows it")
        self.assertGreater(epoch(rec["finished_at"]), returned, "the script waited for the run to end")
        self.assertGreaterEqual(event["t"] + 0.002, epoch(rec["finished_at"]))

    # ---- the flows, step by step from flow.yaml ---------------------------------------------------
    def test_flow_chain(self):
        run = FlowRun(self.ws, FOLDER / "summarize_and_review__flow", {"text": TEXT})
        review = run.run()
        self.assertEqual(["summarize", "review"], list(run.results))
        first = run.results["summarize"]
        self.assertReply(first, "summarize")
        self.assertReply(review, "team.review")
        summary = first["result"]["summary"]
        self.assertEqual(hashlib.sha256(summary.encode()).hexdigest(), review["result"]["sha256"],
                         "step 2 did not review step 1's summary")
        self.assertEqual({"summarized_by": first["execution_id"]}, self.record(review["execution_id"])["context"])
        self.assertEqual(TEXT, self.record(first["execution_id"])["task"]["text"])

    def test_flow_fan_out(self):
        run = FlowRun(self.ws, FOLDER / "fan_out__flow", {"name": "Grace", "text": TEXT})
        merged = run.run()
        replies = run.results["agents"]
        self.assertEqual(3, len(replies))
        for reply, agent in zip(replies, ("hello", "team.review", "summarize")):
            self.assertReply(reply, agent)
        self.assertEqual("Hello, Grace!", merged["greeting"])
        self.assertEqual(len(TEXT.split()), merged["words"])
        self.assertIs(True, merged["short_enough"])
        _, direct = self.run_agent("summarize", {"text": TEXT})
        self.assertEqual(direct["result"]["summary"], merged["summary"])
        self.assertEqual([r["execution_id"] for r in replies], merged["execution_ids"])
        self.assertEqual(3, len(set(merged["execution_ids"])))
        self.assertEqual(sum(r["duration_ms"] for r in replies), merged["agents_ms"])
        self.assertEqual(4, len(run.jobs), "three branch jobs and the merge")

    def test_flow_long_run_suspends_until_luagent_resumes_it(self):
        pause = int(700 * SLOW)
        texts = ["alpha beta gamma", "delta epsilon", "zeta"]
        run = FlowRun(self.ws, FOLDER / "long_digest__flow", {"agent": "digest", "task": {"texts": texts,
                                                                                           "pause_ms": pause}})
        out = run.run()
        started = run.results["start"]
        self.assertEqual(("digest", "queued"), (started["agent"], started["status"]))
        # the start step ended while the agent ran; the flow then waited for luagent's POST
        rec = self.record(started["execution_id"])
        self.assertGreater(epoch(rec["finished_at"]), run.suspended_at["start"])
        [event] = run.resumed["start"]
        self.assertGreaterEqual(event["t"] + 0.002, epoch(rec["finished_at"]))
        self.assertTrue(signature_ok(SECRET, event), event["headers"])
        self.assertEqual(started["execution_id"], event["headers"].get("x-luagent-execution-id"))
        self.assertEqual(started["execution_id"], out["execution_id"])
        self.assertEqual("digest", out["agent"])
        self.assertEqual(3, out["result"]["count"])
        self.assertEqual(3, len(out["result"]["summaries"]))
        self.assertEqual(rec["result"], out["result"])
        self.assertEqual(run.jobs["start"], rec["request_id"])

    def test_flow_long_run_fails_when_the_agent_fails(self):
        run = FlowRun(self.ws, FOLDER / "long_digest__flow",
                      {"agent": "digest", "task": {"texts": ["x"], "model": "nosuchprovider/model-x"}})
        with self.assertRaises(JobFailed) as cm:
            run.run()
        self.assertEqual(run.jobs.get("outcome"), cm.exception.job_id, "the outcome step failed the flow")
        self.assertIn(f"luagent execution {run.results['start']['execution_id']} of digest failed",
                      cm.exception.error["message"])

    def test_schedule_runs_its_flow(self):
        sched = load_yaml(FOLDER / "nightly_review.schedule.yaml")
        self.assertTrue(sched["is_flow"])
        self.assertEqual(6, len(sched["schedule"].split()), "Windmill cron has six fields (seconds first)")
        flow_dir = SYNC_DIR / (sched["script_path"] + "__flow")
        self.assertTrue((flow_dir / "flow.yaml").is_file(), f"the schedule's flow {flow_dir} does not exist")
        review = FlowRun(self.ws, flow_dir, sched["args"]).run()
        self.assertReply(review, "team.review")
        self.assertTrue(review["result"]["ok"])

    # ---- the stand-in itself -------------------------------------------------------------------
    def test_expression_subset(self):
        scope = {"flow_input": {"a": {"b": [10, 20]}, "s": "x"}, "results": {"r": {"v": 1}}}
        self.assertEqual(20, evaluate("flow_input.a.b[1]", scope))
        self.assertEqual({"t": "x", "n": 1, "l": [1, "y", None], "k": True},
                         evaluate("({t: flow_input.s, n: results.r.v, l: [1, 'y', null], \"k\": true})", scope))
        self.assertEqual({}, evaluate("({gone: results.r.missing})", scope))
        for bad in ("flow_input.s + 1", "fetch('x')", "results.r.v()", "({a: 1"):
            with self.assertRaises(ValueError, msg=bad):
                evaluate(bad, scope)
        with self.assertRaises(TypeError):
            evaluate("results.nope.v", scope)
