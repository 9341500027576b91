"""Runs the scripts and flows of windmill/ the way a Windmill worker does, against a live luagent.

Windmill itself cannot run on these machines (no server image), so this module stands in for the
parts of it the flows touch, and for nothing else:

- a job: each script's `main` runs in its own `python3` process (as a Windmill Python worker runs
  every job), with WM_JOB_ID set, the sync folder on the import path (Windmill's relative imports
  `from f.luagent.run_agent import ...`), its arguments read from a JSON file and its return value
  written back as JSON; an exception fails the job with the exception's type and message;
- `$res:PATH` arguments resolved from the workspace's resources and `$var:PATH` inside them from
  its variables (`Workspace`);
- the `wmill` client's get_resume_urls(): a `wmill` module on the job's import path that answers
  with a URL of `ResumeEndpoint`, a local HTTP receiver standing in for Windmill's resume endpoint
  (a POST there is one resume event for that job, answered 201 like Windmill does);
- a flow: the modules of flow.yaml in order, with `input_transforms` resolved (`static`, and
  `javascript` expressions made of literals, object and array literals and paths into
  flow_input / results / resume / resumes / previous_result; anything else is refused, so a flow
  that uses more than this runner understands fails its test instead of being skipped); `script`
  (a path in the sync folder) and `rawscript` (python3, `!inline FILE`) modules; `branchall`
  (branches in threads when `parallel`); a module with `suspend` waits for `required_events`
  resume events of its job before the flow goes on, and the next module sees the last payload as
  `resume`.
"""

import ast
import hashlib
import hmac
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from .harness import REPO, SLOW, LocalHTTP

SYNC_DIR = REPO / "windmill"

# The Python wrapper of a job: load the script, call main(**args), write the result or the error.
_WRAPPER = r'''
import importlib.util, json, sys, traceback
script, args_path, out_path = sys.argv[1:4]
try:
    spec = importlib.util.spec_from_file_location("__wm_job__", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(args_path) as f:
        args = json.load(f)
    out = {"result": mod.main(**args)}
except BaseException as e:
    out = {"error": {"name": type(e).__name__, "message": str(e), "stack": traceback.format_exc()}}
with open(out_path, "w") as f:
    json.dump(out, f)
'''

# The `wmill` client as a job sees it, reduced to the call the scripts make.
_WMILL = r'''
import os, random

def get_resume_urls(approver=None):
    base = os.environ["WM_RESUME_BASE"] + "/" + os.environ["WM_JOB_ID"] + "/" + str(random.randint(0, 10**9))
    q = "?approver=" + approver if approver else ""
    return {"approvalPage": base + "/page" + q, "resume": base + "/resume" + q, "cancel": base + "/cancel" + q}
'''


class JobFailed(Exception):
    def __init__(self, job_id, error):
        super().__init__(f"job {job_id} failed: {error.get('name')}: {error.get('message')}")
        self.job_id, self.error = job_id, error


class ResumeEndpoint:
    """Stands in for Windmill's resume endpoint: POST /<job_id>/<nonce>/resume records one resume
    event (raw body, headers, arrival time in epoch seconds) for that job and answers 201."""

    def __init__(self):
        self.events = {}
        self.cond = threading.Condition()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = self.path.split("?")[0].strip("/").split("/")
                ok = len(parts) == 3 and parts[2] == "resume"
                if ok:
                    with outer.cond:
                        outer.events.setdefault(parts[0], []).append(
                            {"raw": raw, "headers": {k.lower(): v for k, v in self.headers.items()},
                             "t": time.time()})
                        outer.cond.notify_all()
                body = b"" if ok else b"not a resume URL"
                self.send_response(201 if ok else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.http = LocalHTTP(Handler)
        self.base = self.http.url("").rstrip("/")

    def wait(self, job_id, n, timeout):
        """The first n resume events of job_id, waiting up to timeout seconds (AssertionError after)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.events.get(job_id, [])) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"job {job_id}: {len(self.events.get(job_id, []))} resume events "
                                         f"after {timeout:.0f} s, wanted {n}")
                self.cond.wait(left)
            return list(self.events[job_id][:n])

    def stop(self):
        self.http.stop()


class Workspace:
    """Resources and variables of the stand-in workspace, and the jobs run in it."""

    def __init__(self, resources, variables, resume_endpoint):
        self.resources = resources
        self.variables = variables
        self.resume = resume_endpoint
        self.jobs = []  # (job_id, script path, args, outcome)
        self.tmp = Path(tempfile.mkdtemp(prefix="luagent-wm-"))
        (self.tmp / "lib").mkdir()
        (self.tmp / "lib" / "wmill.py").write_text(_WMILL)
        self.lock = threading.Lock()

    # ---- arguments ------------------------------------------------------------------------
    def resolve(self, v):
        if isinstance(v, str) and v.startswith("$res:"):
            if v[5:] not in self.resources:
                raise JobFailed("-", {"name": "NotFound", "message": f"resource {v[5:]} not found"})
            return self.resolve(self.resources[v[5:]])
        if isinstance(v, str) and v.startswith("$var:"):
            if v[5:] not in self.variables:
                raise JobFailed("-", {"name": "NotFound", "message": f"variable {v[5:]} not found"})
            return self.variables[v[5:]]
        if isinstance(v, dict):
            return {k: self.resolve(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.resolve(x) for x in v]
        return v

    # ---- one job ------------------------------------------------------------------------
    def run_script(self, script, args, job_id=None, timeout=120):
        """Run `script` (a file) as one job with `args`; returns (job_id, result) or raises JobFailed."""
        job_id = job_id or str(uuid.uuid4())
        jobdir = self.tmp / job_id
        jobdir.mkdir()
        (jobdir / "args.json").write_text(json.dumps(self.resolve(args)))
        env = dict(os.environ, WM_JOB_ID=job_id, WM_RESUME_BASE=self.resume.base,
                   PYTHONPATH=os.pathsep.join([str(self.tmp / "lib"), str(SYNC_DIR)]))
        p = subprocess.run([sys.executable, "-c", _WRAPPER, str(script), str(jobdir / "args.json"),
                            str(jobdir / "result.json")], cwd=jobdir, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=timeout * SLOW)
        try:
            out = json.loads((jobdir / "result.json").read_text())
        except (OSError, ValueError):
            out = {"error": {"name": "WorkerError", "message": f"exit {p.returncode}: {p.stdout[-2000:]}"}}
        with self.lock:
            self.jobs.append((job_id, str(script), args, out))
        if "error" in out:
            raise JobFailed(job_id, out["error"])
        return job_id, out["result"]


# ---- expressions ------------------------------------------------------------------------------
UNDEFINED = object()
_TOKEN = re.compile(r"""\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|"""
                    r"""(?P<name>[A-Za-z_$][A-Za-z0-9_$]*)|(?P<punct>[{}\[\]().,:]))""")
ROOTS = ("flow_input", "results", "resume", "resumes", "previous_result")


def _tokens(expr):
    pos, out = 0, []
    expr = expr.strip()
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise ValueError(f"unsupported expression (at {expr[pos:pos + 20]!r}): {expr}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(expr) and expr[pos].isspace():
            pos += 1
    return out


def evaluate(expr, scope):
    """Evaluate a JavaScript expression of the subset the module docstring names."""
    toks = _tokens(expr)
    i = 0

    def peek():
        return toks[i] if i < len(toks) else (None, None)

    def take(want=None):
        nonlocal i
        t = peek()
        if t[0] is None or (want is not None and t[1] != want):
            raise ValueError(f"unsupported expression (expected {want!r}): {expr}")
        i += 1
        return t

    def value():
        kind, text = take()
        if kind == "num":
            return float(text) if "." in text else int(text)
        if kind == "str":
            return ast.literal_eval(text)
        if text == "(":
            v = value()
            take(")")
            return postfix(v)
        if text == "{":
            obj = {}
            while peek()[1] != "}":
                k_kind, k = take()
                if k_kind == "str":
                    k = ast.literal_eval(k)
                elif k_kind != "name":
                    raise ValueError(f"unsupported object key {k!r}: {expr}")
                take(":")
                v = value()
                if v is not UNDEFINED:  # JSON drops undefined members
                    obj[k] = v
                if peek()[1] == ",":
                    take(",")
            take("}")
            return obj
        if text == "[":
            arr = []
            while peek()[1] != "]":
                v = value()
                arr.append(None if v is UNDEFINED else v)
                if peek()[1] == ",":
                    take(",")
            take("]")
            return postfix(arr)
        if kind == "name":
            if text in ("true", "false", "null"):
                return {"true": True, "false": False, "null": None}[text]
            if text == "undefined":
                return UNDEFINED
            if text not in ROOTS:
                raise ValueError(f"unsupported name {text!r} (known: {', '.join(ROOTS)}): {expr}")
            return postfix(scope.get(text, UNDEFINED))
        raise ValueError(f"unsupported expression at {text!r}: {expr}")

    def postfix(v):
        while peek()[1] in (".", "["):
            if take()[1] == ".":
                key = take()[1]
            else:
                key = value()
                take("]")
            if v is UNDEFINED or v is None:
                raise TypeError(f"cannot read {key!r} of {'undefined' if v is UNDEFINED else 'null'} in {expr}")
            if isinstance(v, list) and isinstance(key, int):
                v = v[key] if 0 <= key < len(v) else UNDEFINED
            elif isinstance(v, list) and key == "length":
                v = len(v)
            elif isinstance(v, dict):
                v = v.get(str(key), UNDEFINED)
            else:
                v = UNDEFINED
        return v

    v = value()
    if i != len(toks):
        raise ValueError(f"unsupported expression (trailing {toks[i][1]!r}): {expr}")
    return v


# ---- flows ----------------------------------------------------------------------------------
def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


class FlowRun:
    """One run of a flow: .result, .results (by module id), .jobs (module id -> job id),
    .resumed ({module id: resume events}), .suspended_at ({module id: when its job ended, epoch s})."""

    def __init__(self, workspace, flow_dir, flow_input, suspend_timeout=60):
        self.ws = workspace
        self.dir = Path(flow_dir)
        self.flow = load_yaml(self.dir / "flow.yaml")
        schema = self.flow.get("schema") or {}
        self.input = dict(flow_input)
        for k, p in (schema.get("properties") or {}).items():
            if k not in self.input and "default" in p:
                self.input[k] = p["default"]
        missing = [k for k in schema.get("required") or [] if k not in self.input]
        if missing:
            raise ValueError(f"flow input lacks required {missing}")
        self.results, self.jobs, self.resumed, self.suspended_at = {}, {}, {}, {}
        self.resume_payloads = []
        self.suspend_timeout = suspend_timeout
        self.lock = threading.Lock()

    def run(self):
        self.result = self.run_modules(self.flow["value"]["modules"], None)
        return self.result

    def run_modules(self, modules, last):
        for m in modules:
            last = self.run_module(m, last)
        return last

    def args_of(self, transforms, last):
        scope = {"flow_input": self.input, "results": self.results, "previous_result": last}
        if self.resume_payloads:
            scope["resume"] = self.resume_payloads[-1]
            scope["resumes"] = list(self.resume_payloads)
        args = {}
        for name, t in (transforms or {}).items():
            if t.get("type") == "static":
                args[name] = t.get("value")
            elif t.get("type") == "javascript":
                v = evaluate(t["expr"], scope)
                if v is not UNDEFINED:
                    args[name] = v
            else:
                raise ValueError(f"unsupported input transform {t!r}")
        return args

    def run_module(self, m, last):
        v = m["value"]
        kind = v["type"]
        if kind in ("script", "rawscript"):
            if kind == "script":
                script = SYNC_DIR / (v["path"] + ".py")
            else:
                if v.get("language") != "python3" or not str(v.get("content", "")).startswith("!inline "):
                    raise ValueError(f"module {m['id']}: only python3 rawscripts with !inline content run here")
                script = self.dir / v["content"][len("!inline "):].strip()
            if not script.is_file():
                raise ValueError(f"module {m['id']}: {script} does not exist")
            job_id = str(uuid.uuid4())
            with self.lock:
                self.jobs[m["id"]] = job_id
            _, result = self.ws.run_script(script, self.args_of(v.get("input_transforms"), last), job_id)
        elif kind == "branchall":
            branches = v["branches"]
            run = lambda b: self.run_modules(b["modules"], last)  # noqa: E731
            if v.get("parallel"):
                with ThreadPoolExecutor(max_workers=len(branches)) as pool:
                    result = list(pool.map(run, branches))
            else:
                result = [run(b) for b in branches]
        else:
            raise ValueError(f"module {m['id']}: type {kind} is not supported by this runner")
        with self.lock:
            self.results[m["id"]] = result
        susp = m.get("suspend")
        if susp and susp.get("required_events"):
            self.suspended_at[m["id"]] = time.time()
            timeout = min(float(susp.get("timeout") or 1e9), self.suspend_timeout * SLOW)
            events = self.ws.resume.wait(self.jobs[m["id"]], int(susp["required_events"]), timeout)
            self.resumed[m["id"]] = events
            self.resume_payloads = [json.loads(e["raw"]) if e["raw"] else None for e in events]
        return result


def signature_ok(secret, event):
    """luagent's X-Luagent-Signature: sha256=<hex HMAC-SHA256 of the raw body with the secret>."""
    want = "sha256=" + hmac.new(secret.encode(), event["raw"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, event["headers"].get("x-luagent-signature", ""))
