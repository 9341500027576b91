"""Deployment files: docker/Dockerfile, docker-compose.yml and docker/k8s/ (issue 7, point 7).

No image can be built or pulled here, so the Dockerfile is checked statically: its stages, its user,
its packages (each must exist in Debian 12, checked with apt-cache on this Debian 12 machine), the
files it copies (each must exist and pass .dockerignore), and the shared libraries the built binary
needs (readelf/ldd and the dlopen'ed libraries, mapped to packages with dpkg -S). The compose file is
resolved with Debian's docker-compose (`config`), the Kubernetes manifests are parsed with PyYAML and
cross-checked (labels and selectors, probes, security context, Secret and ConfigMap keys). Every
environment variable the app is given must be one the server knows: the names come from the table in
src/config/config.c, so a typo fails here. The image's health check script runs against a real server.
"""

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import unittest
from fnmatch import fnmatch
from pathlib import Path

from tests.integration.harness import BIN, REPO, Server, require_binary

try:
    import yaml
except ImportError:  # python3-yaml is in scripts/deps.sh's LUAGENT_TEST_PKGS
    yaml = None

DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_ENV_EXAMPLE = REPO / "docker" / "compose.env.example"
K8S = REPO / "docker" / "k8s"
APP_NAME = "luagent"
COMPOSE_SERVICES = {"luagent", "postgres", "redis", "windmill-db", "windmill-server", "windmill-worker"}
SANITIZER_RUNTIMES = re.compile(r"^lib(asan|ubsan|lsan|tsan)\.so")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def need_yaml(test):
    if yaml is None:
        test.fail("python3-yaml is not installed (scripts/deps.sh installs it)")


def known_env_names():
    """The variable names the server reads: the VARS table of src/config/config.c (name and fallback)."""
    src = (REPO / "src" / "config" / "config.c").read_text()
    m = re.search(r"static const var_t VARS\[\] = \{(.*?)\n\};", src, re.S)
    assert m, "VARS table not found in src/config/config.c"
    names = set()
    for line in m.group(1).splitlines():
        entry = re.match(r'\s*\{"([A-Z][A-Z0-9_]*)",\s*K_\w+,(.*)\},?\s*(/\*.*)?$', line)
        if not entry:
            continue
        names.add(entry.group(1))
        alt = re.search(r',\s*"([A-Z][A-Z0-9_]*)"\s*$', entry.group(2))
        if alt:
            names.add(alt.group(1))
    assert {"LUAGENT_LISTEN", "DATABASE_URL", "GOOGLE_API_KEY"} <= names, names
    return names


def build_packages():
    out = run(["bash", "-c", '. scripts/deps.sh && printf "%s\\n" "${LUAGENT_BUILD_PKGS[@]}"'], cwd=REPO)
    assert out.returncode == 0, out.stderr
    pkgs = out.stdout.split()
    assert pkgs, "LUAGENT_BUILD_PKGS is empty"
    return pkgs


# ---- Dockerfile ---------------------------------------------------------------------------------

def parse_dockerfile(text):
    """[(stage_name, base, [(INSTRUCTION, args)])] with continuation lines joined, comments dropped."""
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue  # a comment line inside a continued instruction
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        lines.append(cur)
        cur = ""
    stages = []
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append((name, parts[0], []))
        elif stages:
            stages[-1][2].append((word, rest.strip()))
    return stages


def instrs(stage, word):
    return [args for w, args in stage[2] if w == word]


def copy_parts(args):
    """COPY args -> (flags, sources, dest)."""
    toks = shlex.split(args)
    flags = [t for t in toks if t.startswith("--")]
    rest = [t for t in toks if not t.startswith("--")]
    return flags, rest[:-1], rest[-1]


def apt_installed(run_args):
    """Package names in `apt-get install ... pkgs` of a RUN line."""
    pkgs = []
    for cmd in re.split(r"&&|;|\|\|", run_args):
        toks = shlex.split(cmd)
        if len(toks) >= 2 and toks[0] == "apt-get" and "install" in toks:
            pkgs += [t for t in toks[toks.index("install") + 1:] if not t.startswith("-")]
    return pkgs


def dockerignore_admits(path):
    """Docker's rule: the last matching pattern wins; '!' re-admits. A pattern matches a path or its
    parent directories."""
    admitted = True
    for raw in DOCKERIGNORE.read_text().splitlines():
        pat = raw.strip()
        if not pat or pat.startswith("#"):
            continue
        neg = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        parts = path.split("/")
        if any(fnmatch("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1)):
            admitted = neg
    return admitted


def apt_not_in_debian12(pkgs):
    """{package: why} for each package with no candidate from Debian 12 (bookworm) in apt's lists
    (one apt-cache call for all: each call reads the whole package cache)."""
    out = run(["apt-cache", "policy", *pkgs], env={**os.environ, "LC_ALL": "C"})
    found = {}
    for block in re.split(r"^(?=\S+:$)", out.stdout, flags=re.M):
        head = re.match(r"^(\S+):$", block, re.M)
        if head:
            found[head.group(1)] = block
    bad = {}
    for pkg in pkgs:
        block = found.get(pkg, "")
        cand = re.search(r"Candidate:\s*(\S+)", block)
        if not cand or cand.group(1) == "(none)":
            bad[pkg] = "no candidate in apt's lists (is this Debian 12, after apt-get update?)"
        elif "bookworm" not in block:
            bad[pkg] = "not from bookworm:\n" + block
    return bad


def dependency_graph(pkgs):
    """{package: {dependencies}} for pkgs and everything they need (Depends, Pre-Depends; a virtual
    package stands for its providers), from one `apt-cache depends --recurse`."""
    out = run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
               "--no-breaks", "--no-replaces", "--no-enhances", *pkgs])
    assert out.returncode == 0, out.stderr
    graph, cur, last = {}, None, None
    for line in out.stdout.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            cur = line.split(":")[0]
            graph.setdefault(cur, set())
            continue
        m = re.match(r"\s+\|?(?:Pre)?Depends: (\S+)", line)
        if m:
            last = m.group(1).strip("<>").split(":")[0]
            graph[cur].add(last)
        elif last and re.match(r"\s{4,}\S", line):  # a provider of the virtual package above
            graph[cur].add(line.strip().split(":")[0])
    return graph


def closure(graph, roots):
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo += graph.get(p, ())
    return seen


def packages_of(libs):
    """{soname: Debian package} for {soname: path}: the package that ships that file name in the
    same directory kind (one dpkg -S call)."""
    out = run(["dpkg", "-S", *("*/" + so for so in libs)])
    found = {}
    for line in out.stdout.splitlines():
        pkg, _, fpath = line.partition(": ")
        so = os.path.basename(fpath)
        if so in libs and os.path.basename(os.path.dirname(fpath)) == \
                os.path.basename(os.path.dirname(libs[so])):
            found.setdefault(so, pkg.split(":")[0])
    return found


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stages = parse_dockerfile(DOCKERFILE.read_text())
        cls.build, cls.runtime = cls.stages[0], cls.stages[-1]

    def runtime_packages(self):
        pkgs = [p for args in instrs(self.runtime, "RUN") for p in apt_installed(args)]
        self.assertTrue(pkgs, "the runtime stage installs no package")
        return pkgs

    def test_multi_stage_bookworm(self):
        self.assertGreaterEqual(len(self.stages), 2, "not a multi-stage Dockerfile")
        self.assertEqual(self.build[1], "debian:bookworm", "the build stage is Debian 12")
        self.assertEqual(self.runtime[1], "debian:bookworm-slim", "the last stage is Debian 12 slim")

    def test_build_stage_installs_deps_sh_build_packages_and_builds_release(self):
        runs = " ".join(instrs(self.build, "RUN"))
        copies = [copy_parts(a) for a in instrs(self.build, "COPY")]
        # Either the list itself (deps.sh sourced) or every one of its packages by name.
        if "LUAGENT_BUILD_PKGS" in runs:
            self.assertTrue(any("scripts/deps.sh" in srcs for _, srcs, _ in copies), "deps.sh not copied")
            self.assertRegex(runs, r'\.\s+\S*deps\.sh', "deps.sh is not sourced")
            self.assertIn('"${LUAGENT_BUILD_PKGS[@]}"', runs)
        else:
            listed = {p for a in instrs(self.build, "RUN") for p in apt_installed(a)}
            self.assertEqual(set(build_packages()) - listed, set(), "build packages missing")
        self.assertRegex(runs, r"meson setup \S+.*--buildtype=release", "not a meson release build")
        self.assertIn("meson compile", runs)
        self.assertEqual(apt_not_in_debian12(build_packages()), {}, "build packages not in Debian 12")

    def test_runtime_packages_exist_in_debian12(self):
        runs = instrs(self.runtime, "RUN")
        self.assertTrue(any("--no-install-recommends" in r for r in runs if "apt-get install" in r))
        self.assertTrue(any("rm -rf /var/lib/apt/lists" in r for r in runs), "apt lists left in the image")
        build_only = {"gcc", "libc6-dev", "pkg-config", "meson", "ninja-build", "luajit2"}
        pkgs = self.runtime_packages()
        self.assertEqual(apt_not_in_debian12(pkgs), {}, "runtime packages not in Debian 12")
        for pkg in pkgs:
            self.assertFalse(pkg.endswith("-dev") or pkg in build_only, f"{pkg} is a build package")

    def test_runtime_libraries_cover_the_binary(self):
        """Each library the binary links (readelf NEEDED) or opens (dlopen in src/) is installed by
        the runtime stage; everything ldd resolves comes with those packages or the base image."""
        require_binary()
        pkgs = set(self.runtime_packages())
        essential = run(["dpkg-query", "-W", "-f=${Package} ${Essential}\\n"]).stdout.split("\n")
        essential = [l.split()[0] for l in essential if l.endswith(" yes")]
        self.assertIn("libc-bin", essential)
        graph = dependency_graph(sorted(pkgs | set(essential)))
        base = closure(graph, essential)  # what debian:bookworm-slim already has
        self.assertIn("libc6", base)
        installed = closure(graph, pkgs) | base

        def ldd(path):
            out = run(["ldd", str(path)])
            self.assertEqual(out.returncode, 0, out.stderr)
            found = {}
            for line in out.stdout.splitlines():
                m = re.match(r"\s*(\S+) => (/\S+)", line) or re.match(r"\s*(/\S+/(\S+)) \(", line)
                if m and m.group(1).startswith("/"):
                    found[os.path.basename(m.group(1))] = m.group(1)
                elif m:
                    found[m.group(1)] = m.group(2)
            return found

        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]", run(["readelf", "-d", str(BIN)]).stdout)
        self.assertIn("libluajit-5.1.so.2", needed)
        # The sanitizer build's runtimes (and what only they pull in) are not the image's: it builds
        # a release. What the rest needs is what the direct libraries need.
        direct = {n for n in needed if not SANITIZER_RUNTIMES.match(n)}
        all_libs = ldd(BIN)
        paths = {}
        for so in direct:
            self.assertIn(so, all_libs, f"{so} does not resolve")
            paths[so] = all_libs[so]
            paths.update(ldd(all_libs[so]))
        dlopened = set()
        for f in (REPO / "src").rglob("*.c"):
            dlopened |= set(re.findall(r'dlopen\("(lib[^"]+\.so[.\d]*)"', f.read_text()))
        self.assertTrue({"libcurl.so.4", "libpq.so.5"} <= dlopened, dlopened)
        ldconfig = run(["ldconfig", "-p"]).stdout
        for so in dlopened:
            m = re.search(r"^\s*" + re.escape(so) + r" \(.*x86-64.*\) => (\S+)", ldconfig, re.M) or \
                re.search(r"^\s*" + re.escape(so) + r" \(.*\) => (\S+)", ldconfig, re.M)
            self.assertIsNotNone(m, f"{so} (dlopen'ed by the server) is not installed on this machine")
            paths[so] = m.group(1)
            paths.update(ldd(m.group(1)))
        owners = packages_of(paths)
        for so, path in sorted(paths.items()):
            with self.subTest(lib=so):
                pkg = owners.get(so)
                self.assertIsNotNone(pkg, f"no package ships {so} ({path})")
                if so in direct or so in dlopened:
                    self.assertTrue(pkg in pkgs or pkg in base,
                                    f"{so} comes from {pkg}: the runtime stage must install it")
                else:
                    self.assertIn(pkg, installed, f"{so} ({pkg}) is neither installed nor a dependency")

    def test_non_root_user_before_entrypoint(self):
        words = [w for w, _ in self.runtime[2]]
        self.assertIn("USER", words)
        self.assertIn("ENTRYPOINT", words)
        user_at = max(i for i, w in enumerate(words) if w == "USER")
        self.assertLess(user_at, words.index("ENTRYPOINT"))
        user = instrs(self.runtime, "USER")[-1].split(":")[0]
        self.assertRegex(user, r"^\d+$", "a numeric UID lets Kubernetes verify runAsNonRoot")
        self.assertNotEqual(int(user), 0)
        runs = " ".join(instrs(self.runtime, "RUN"))
        self.assertRegex(runs, r"useradd [^&]*--uid " + user + r"\b", "the UID has no passwd entry")

    def test_entrypoint_serve_expose_healthcheck(self):
        self.assertEqual(instrs(self.runtime, "ENTRYPOINT"), ['["luagent"]'])
        self.assertEqual(instrs(self.runtime, "CMD"), ['["serve"]'])
        env = self.runtime_env()
        port = env["LUAGENT_LISTEN"].rsplit(":", 1)[1]
        self.assertEqual(port, "8000")
        self.assertIn("8000", " ".join(instrs(self.runtime, "EXPOSE")).split())
        hc = instrs(self.runtime, "HEALTHCHECK")
        self.assertEqual(len(hc), 1, "one HEALTHCHECK")
        cmd = re.search(r"CMD\s+(\[.*\])", hc[0])
        self.assertIsNotNone(cmd, hc[0])
        prog = yaml.safe_load(cmd.group(1))[0] if yaml else cmd.group(1).split('"')[1]
        # The program must be in the image: copied there, or from an installed package.
        copied = {dest: srcs for _, srcs, dest in (copy_parts(a) for a in instrs(self.runtime, "COPY"))}
        dest = "/usr/local/bin/" + prog
        self.assertIn(dest, copied, f"HEALTHCHECK runs {prog}, which the image does not have")
        script = REPO / copied[dest][0]
        self.assertTrue(os.access(script, os.X_OK), f"{script} is not executable")
        uses = set(re.findall(r"^\s*exec (\S+)", script.read_text(), re.M))
        self.assertTrue(uses <= set(self.runtime_packages()), f"{script.name} runs {uses}")

    def runtime_env(self):
        env = {}
        for args in instrs(self.runtime, "ENV"):
            for tok in shlex.split(args):
                k, _, v = tok.partition("=")
                env[k] = v
        return env

    def test_env_names_known_and_writable_paths_under_volume(self):
        env = self.runtime_env()
        unknown = set(env) - known_env_names() - {"DEBIAN_FRONTEND"}
        self.assertEqual(unknown, set(), "ENV names the server does not read")
        volumes = [v for args in instrs(self.runtime, "VOLUME") for v in yaml_or_split(args)]
        self.assertTrue(volumes, "no VOLUME")
        spill = env.get("LUAGENT_SPILL_DIR", "")
        self.assertTrue(any(spill.startswith(v.rstrip("/") + "/") for v in volumes),
                        f"LUAGENT_SPILL_DIR={spill} is not under a VOLUME {volumes}")
        runs = " ".join(instrs(self.runtime, "RUN"))
        self.assertRegex(runs, r"chown [^&]*" + re.escape(volumes[0]), "the volume is not the user's")

    def test_copy_sources_exist_and_pass_dockerignore(self):
        stages = {s[0]: s for s in self.stages}
        for stage in self.stages:
            workdir = (instrs(stage, "WORKDIR") or ["/"])[0]
            for flags, srcs, dest in (copy_parts(a) for a in instrs(stage, "COPY")):
                frm = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
                for src in srcs:
                    with self.subTest(stage=stage[0], src=src):
                        if not frm:
                            if src == ".":
                                continue
                            self.assertTrue((REPO / src).exists(), f"COPY {src}: not in the repository")
                            self.assertTrue(dockerignore_admits(src), f"COPY {src}: .dockerignore excludes it")
                            continue
                        other = stages[frm[0]]
                        owd = (instrs(other, "WORKDIR") or ["/"])[0].rstrip("/") + "/"
                        runs = " ".join(instrs(other, "RUN"))
                        if src.startswith(owd):
                            rel = src[len(owd):]
                            made = re.search(r"mkdir -p [^&]*\b" + re.escape(rel) + r"\b", runs)
                            if not made:
                                self.assertTrue((REPO / rel).exists(), f"{src}: {rel} is not in the repository")
                                self.assertTrue(dockerignore_admits(rel), f"{rel}: .dockerignore excludes it")
                        else:
                            self.assertIn(os.path.dirname(src), runs, f"{src}: no RUN in {frm[0]} makes it")
        # What the runtime copies from the build: the binary, the scripts and the migrations.
        dests = " ".join(copy_parts(a)[1][0] for a in instrs(self.runtime, "COPY"))
        for part in ("agents", "providers", "migrations", "web", "luagent"):
            self.assertIn(part, dests)

    def test_build_context_has_what_meson_needs(self):
        """Every file meson.build names outside the test-only targets passes .dockerignore."""
        text = (REPO / "meson.build").read_text()
        names = set(re.findall(r"'([\w./-]+\.(?:c|lua|sql|txt))'", text))
        test_only = ("tests/unit/", "tests/jwt/", "tests/fuzz/")
        names = {n for n in names if (REPO / n).exists() and not n.startswith(test_only)}
        self.assertIn("src/main.c", names)
        self.assertIn("tests/lua/luagent_test.c", names)
        for n in sorted(names):
            self.assertTrue(dockerignore_admits(n), f"{n}: meson.build needs it, .dockerignore excludes it")
        for n in ("meson.build", "meson_options.txt", "scripts/deps.sh"):
            self.assertTrue(dockerignore_admits(n), n)
        for n in (".git/config", ".env", "build/luagent", "tests/integration/harness.py", "data/spill/x"):
            self.assertFalse(dockerignore_admits(n), f"{n} would be in the build context")


def yaml_or_split(args):
    args = args.strip()
    if args.startswith("["):
        return [str(v) for v in (yaml.safe_load(args) if yaml else re.findall(r'"([^"]+)"', args))]
    return args.split()


class HealthcheckScriptTest(unittest.TestCase):
    """docker/healthcheck.sh (the image's HEALTHCHECK) against a real server."""

    @classmethod
    def setUpClass(cls):
        from tests.integration.harness import free_port
        cls.health_port = free_port()
        cls.server = Server(agents={}, env={"LUAGENT_HEALTH_LISTEN": f"127.0.0.1:{cls.health_port}"})
        try:
            cls.server.start()
        except BaseException:
            cls.server.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.server.cleanup()

    def check(self, env):
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        return run(["sh", str(REPO / "docker" / "healthcheck.sh")], env={**base, **env})

    def test_main_listener(self):
        port = self.server.port
        self.assertEqual(self.check({"LUAGENT_LISTEN": f"127.0.0.1:{port}"}).returncode, 0)
        # 0.0.0.0 (the image's default form) is asked on 127.0.0.1.
        self.assertEqual(self.check({"LUAGENT_LISTEN": f"0.0.0.0:{port}"}).returncode, 0)
        self.assertEqual(self.check({"LUAGENT_LISTEN": f":{port}"}).returncode, 0)

    def test_health_listener_wins(self):
        r = self.check({"LUAGENT_LISTEN": "127.0.0.1:1", "LUAGENT_HEALTH_LISTEN": f"0.0.0.0:{self.health_port}"})
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_fails_when_nothing_answers(self):
        from tests.integration.harness import free_port
        r = self.check({"LUAGENT_LISTEN": f"127.0.0.1:{free_port()}"})
        self.assertNotEqual(r.returncode, 0)
        # A listener that answers something other than 2xx on /health fails too (TLS asked on plain HTTP).
        r = self.check({"LUAGENT_LISTEN": f"127.0.0.1:{self.server.port}", "LUAGENT_TLS_CERT": "/x.pem"})
        self.assertNotEqual(r.returncode, 0)


# ---- docker-compose -----------------------------------------------------------------------------

class ComposeTest(unittest.TestCase):
    PASSWORDS = {"POSTGRES_PASSWORD": "pg-test-pw", "REDIS_PASSWORD": "redis-test-pw",
                 "WINDMILL_DB_PASSWORD": "wm-test-pw"}
    _resolved = None  # `config` output with PASSWORDS, once per run

    @classmethod
    def setUpClass(cls):
        cls.compose = shutil.which("docker-compose")
        if cls.compose is None:
            raise unittest.SkipTest("docker-compose is not installed (Debian's docker-compose package; "
                                    "scripts/deps.sh installs it)")
        cls.tmp = Path(tempfile.mkdtemp(prefix="luagent-compose-"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def dotenv(self, passwords):
        """The documented .env: .env.example followed by docker/compose.env.example, passwords set."""
        text = (REPO / ".env.example").read_text() + "\n" + COMPOSE_ENV_EXAMPLE.read_text()
        for k, v in passwords.items():
            text, n = re.subn(r"^" + k + r"=.*$", f"{k}={v}", text, flags=re.M)
            self.assertEqual(n, 1, f"{k}= is not in docker/compose.env.example")
        return text

    def config(self, passwords):
        d = self.tmp / f"p{len(list(self.tmp.iterdir()))}"
        d.mkdir()
        (d / ".env").write_text(self.dotenv(passwords))
        env = {k: v for k, v in os.environ.items() if k not in self.PASSWORDS and not k.startswith("COMPOSE_")}
        return run([self.compose, "-f", str(COMPOSE), "--project-directory", str(d), "config"], env=env)

    def resolved(self):
        need_yaml(self)
        if ComposeTest._resolved is None:
            out = self.config(self.PASSWORDS)
            self.assertEqual(out.returncode, 0, f"docker-compose config failed:\n{out.stderr}")
            ComposeTest._resolved = out.stdout
        return yaml.safe_load(ComposeTest._resolved)

    def test_config_resolves_services_healthchecks_volumes(self):
        cfg = self.resolved()
        services = cfg["services"]
        self.assertEqual(set(services), COMPOSE_SERVICES)
        for name, svc in services.items():
            with self.subTest(service=name):
                test = svc.get("healthcheck", {}).get("test")
                self.assertTrue(test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck")
                self.assertFalse(svc.get("healthcheck", {}).get("disable"), name)
        declared = set(cfg.get("volumes") or {})
        used = set()
        for name, svc in services.items():
            for v in svc.get("volumes", []):
                src = v.split(":")[0] if isinstance(v, str) else v.get("source")
                if src and not src.startswith((".", "/")):
                    used.add(src)
        self.assertTrue(used, "no named volumes")
        self.assertEqual(used - declared, set(), "volumes used but not declared")
        for name in ("luagent", "postgres", "redis", "windmill-db"):
            self.assertTrue(any(not str(v).startswith(("/", ".")) for v in services[name].get("volumes", [])),
                            f"{name} keeps no data in a named volume")

    def test_app_service(self):
        cfg = self.resolved()
        app = cfg["services"]["luagent"]
        self.assertEqual(app["build"]["dockerfile"], "docker/Dockerfile")
        self.assertTrue((REPO / app["build"]["dockerfile"]).exists())
        self.assertIs(app.get("read_only"), True)
        self.assertTrue(any(str(t).split(":")[0] == "/tmp" for t in app.get("tmpfs", [])), "no tmpfs on /tmp")
        self.assertEqual(app["depends_on"], {"postgres": {"condition": "service_healthy"},
                                             "redis": {"condition": "service_healthy"}})
        env = app["environment"]
        self.assertEqual(env["DATABASE_URL"], "postgres://luagent:pg-test-pw@postgres:5432/luagent")
        self.assertEqual(env["REDIS_URL"], "redis://:redis-test-pw@redis:6379/0")
        # The volume is where the image's VOLUME is (the spill directory lives there).
        spill = env["LUAGENT_SPILL_DIR"]
        mounts = [str(v).split(":")[1] for v in app["volumes"]]
        self.assertTrue(any(spill.startswith(m.rstrip("/") + "/") for m in mounts), (spill, mounts))
        self.assertEqual(app["ports"][0]["target"], int(env["LUAGENT_LISTEN"].rsplit(":", 1)[1]))
        grace = app.get("stop_grace_period", "0s")
        self.assertRegex(grace, r"^\d+s$")
        self.assertGreater(int(grace[:-1]) * 1000, int(env["LUAGENT_DRAIN_TIMEOUT_MS"]),
                           "stop_grace_period shorter than the drain timeout")
        # The postgres service's credentials and database are those of the app's URL.
        pg = cfg["services"]["postgres"]["environment"]
        self.assertEqual((pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]),
                         ("luagent", "pg-test-pw", "luagent"))

    def test_windmill_services(self):
        cfg = self.resolved()
        s = cfg["services"]
        for name, mode in (("windmill-server", "server"), ("windmill-worker", "worker")):
            self.assertTrue(s[name]["image"].startswith("ghcr.io/windmill-labs/windmill"), s[name]["image"])
            self.assertEqual(s[name]["environment"]["MODE"], mode)
            self.assertIn("@windmill-db:5432/windmill", s[name]["environment"]["DATABASE_URL"])
            self.assertIn("wm-test-pw", s[name]["environment"]["DATABASE_URL"])
            self.assertEqual(s[name]["depends_on"]["windmill-db"], {"condition": "service_healthy"})
        self.assertEqual(s["windmill-worker"]["depends_on"]["windmill-server"], {"condition": "service_healthy"})
        self.assertEqual(s["windmill-db"]["environment"]["POSTGRES_PASSWORD"], "wm-test-pw")
        self.assertNotIn("luagent", s["windmill-server"].get("depends_on", {}))

    def test_source_file(self):
        """What `config` resolves away: env_file, ${VAR} names, LUAGENT_* names, windmill/ not mounted."""
        need_yaml(self)
        raw = yaml.safe_load(COMPOSE.read_text())
        self.assertEqual(raw["services"]["luagent"]["env_file"], ".env")
        unknown = set(raw["services"]["luagent"]["environment"]) - known_env_names()
        self.assertEqual(unknown, set(), "the app is given variables the server does not read")
        text = "\n".join(l for l in COMPOSE.read_text().splitlines() if not l.lstrip().startswith("#"))
        documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", COMPOSE_ENV_EXAMPLE.read_text(), re.M))
        used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
        self.assertTrue(used)
        self.assertEqual(used - documented, set(), "compose variables not in docker/compose.env.example")
        self.assertNotRegex(text, r"^\s*-\s*\.?/?windmill[/:]", "windmill/ is mounted")

    def test_missing_password_is_an_error(self):
        for missing in ("POSTGRES_PASSWORD", "WINDMILL_DB_PASSWORD"):
            with self.subTest(missing=missing):
                pw = dict(self.PASSWORDS)
                pw[missing] = ""
                out = self.config(pw)
                self.assertNotEqual(out.returncode, 0, f"config accepted an empty {missing}")
                self.assertIn(missing, out.stderr)


# ---- Kubernetes ---------------------------------------------------------------------------------

class KubernetesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if yaml is None:
            raise AssertionError("python3-yaml is not installed (scripts/deps.sh installs it)")
        cls.files = sorted(K8S.glob("*.yaml"))
        cls.docs = []
        for f in cls.files:
            for d in yaml.safe_load_all(f.read_text()):
                if d and f.name != "kustomization.yaml":
                    cls.docs.append((f.name, d))
        cls.objs = {(d["kind"], d["metadata"]["name"]): d for _, d in cls.docs}

    def get(self, kind, name):
        obj = self.objs.get((kind, name))
        self.assertIsNotNone(obj, f"no {kind} {name}")
        return obj

    def of_kind(self, kind):
        return [d for (k, _), d in self.objs.items() if k == kind]

    def app(self):
        return self.get("Deployment", APP_NAME)

    def app_container(self):
        return self.app()["spec"]["template"]["spec"]["containers"][0]

    def config_data(self):
        return self.get("ConfigMap", "luagent-config")["data"]

    def test_kinds_namespace_and_kustomization(self):
        for kind, name in (("Namespace", "luagent"), ("Deployment", APP_NAME), ("PodDisruptionBudget", APP_NAME),
                           ("Service", APP_NAME), ("Ingress", APP_NAME), ("StatefulSet", "postgres"),
                           ("StatefulSet", "redis"), ("Service", "postgres"), ("Service", "redis"),
                           ("Secret", "luagent-secrets"), ("ConfigMap", "luagent-config"),
                           ("Deployment", "windmill-server"), ("Deployment", "windmill-worker"),
                           ("Service", "windmill")):
            self.get(kind, name)
        self.assertEqual(len(self.objs), len(self.docs), "two objects with the same kind and name")
        for fname, d in self.docs:
            self.assertIn("apiVersion", d, fname)
            if d["kind"] != "Namespace":
                self.assertEqual(d["metadata"].get("namespace"), "luagent", f"{fname}: {d['kind']} namespace")
        kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
        self.assertEqual(kust["namespace"], "luagent")
        self.assertEqual(set(kust["resources"]), {f.name for f in self.files} - {"kustomization.yaml"})

    def test_app_deployment(self):
        dep = self.app()
        self.assertEqual(dep["spec"]["replicas"], 3)
        tmpl = dep["spec"]["template"]
        sel = dep["spec"]["selector"]["matchLabels"]
        self.assertTrue(sel.items() <= tmpl["metadata"]["labels"].items(), "selector misses the pod labels")
        c = self.app_container()
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        cfg = self.config_data()
        self.assertEqual(ports["http"], int(cfg["LUAGENT_LISTEN"].rsplit(":", 1)[1]))
        probe_port = int(cfg.get("LUAGENT_HEALTH_LISTEN", cfg["LUAGENT_LISTEN"]).rsplit(":", 1)[1])
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready"), ("startupProbe", "/health")):
            with self.subTest(probe=probe):
                get = c[probe]["httpGet"]
                self.assertEqual(get["path"], path)
                port = ports.get(get["port"], get["port"])
                self.assertEqual(port, probe_port, f"{probe} asks a port the server does not serve /health on")
        res = c["resources"]
        for part in ("requests", "limits"):
            self.assertTrue({"cpu", "memory"} <= set(res[part]), f"resources.{part}")
        # LUAGENT_WORKERS defaults to the node's cores: it must not exceed the CPU limit.
        cpu = res["limits"]["cpu"]
        cores = float(cpu[:-1]) / 1000 if str(cpu).endswith("m") else float(cpu)
        self.assertLessEqual(int(cfg["LUAGENT_WORKERS"]), max(1, round(cores)))

    def test_app_security_context(self):
        spec = self.app()["spec"]["template"]["spec"]
        c = self.app_container()
        psc, csc = spec.get("securityContext", {}), c["securityContext"]
        self.assertIs(csc.get("runAsNonRoot", psc.get("runAsNonRoot")), True)
        self.assertIs(csc["readOnlyRootFilesystem"], True)
        self.assertIs(csc["allowPrivilegeEscalation"], False)
        self.assertEqual(csc["capabilities"]["drop"], ["ALL"])
        self.assertNotIn("add", csc["capabilities"])
        seccomp = csc.get("seccompProfile", psc.get("seccompProfile"))
        self.assertEqual(seccomp, {"type": "RuntimeDefault"})
        uid = csc.get("runAsUser", psc.get("runAsUser"))
        docker_user = instrs(parse_dockerfile(DOCKERFILE.read_text())[-1], "USER")[-1].split(":")[0]
        self.assertEqual(str(uid), docker_user, "runAsUser is not the image's user")
        # With a read-only root, the writable places are volumes: the spill directory and /tmp.
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        spill = self.config_data()["LUAGENT_SPILL_DIR"]
        self.assertTrue(any(spill.startswith(m.rstrip("/") + "/") for m in mounts), (spill, mounts))
        self.assertIn("/tmp", mounts)
        vols = {v["name"] for v in spec["volumes"]}
        self.assertTrue({m["name"] for m in c["volumeMounts"]} <= vols)

    def test_termination_grace_covers_drain_delay_and_drain(self):
        spec = self.app()["spec"]["template"]["spec"]
        delay_s = int(self.config_data()["LUAGENT_DRAIN_DELAY_MS"]) / 1000
        self.assertGreaterEqual(delay_s, 3, "endpoints need a few seconds to stop routing here")
        drain_s = int(self.config_data()["LUAGENT_DRAIN_TIMEOUT_MS"]) / 1000
        grace = spec["terminationGracePeriodSeconds"]
        self.assertGreaterEqual(grace, delay_s + drain_s + 5,
                                "SIGKILL would come before the drain and the log flush finish")
        self.assertLessEqual(grace, delay_s + drain_s + 60, "grace period far beyond the drain timeout")

    def test_pdb_and_services_select_pods(self):
        pods = [(d["metadata"]["name"], d["spec"]["template"]) for d in
                self.of_kind("Deployment") + self.of_kind("StatefulSet")]
        pdb = self.get("PodDisruptionBudget", APP_NAME)["spec"]
        self.assertEqual(pdb["selector"]["matchLabels"], self.app()["spec"]["selector"]["matchLabels"])
        self.assertLess(pdb["minAvailable"], self.app()["spec"]["replicas"])
        self.assertGreaterEqual(pdb["minAvailable"], 1)
        for svc in self.of_kind("Service"):
            name = svc["metadata"]["name"]
            with self.subTest(service=name):
                sel = svc["spec"]["selector"]
                matched = [t for _, t in pods if sel.items() <= t["metadata"]["labels"].items()]
                self.assertEqual(len(matched), 1, f"Service {name} selects {len(matched)} workloads")
                cports = {p.get("name"): p["containerPort"] for c in matched[0]["spec"]["containers"]
                          for p in c.get("ports", [])}
                for p in svc["spec"]["ports"]:
                    tp = p.get("targetPort", p["port"])
                    self.assertTrue(tp in cports or tp in cports.values(), f"{name}: targetPort {tp}")
        self.assertEqual({p["targetPort"] for p in self.get("Service", APP_NAME)["spec"]["ports"]},
                         {"http", "health"})

    def test_ingress_tls(self):
        ing = self.get("Ingress", APP_NAME)["spec"]
        self.assertTrue(ing["tls"], "no tls")
        tls_hosts = {h for t in ing["tls"] for h in t["hosts"]}
        self.assertTrue(all(t.get("secretName") for t in ing["tls"]))
        for rule in ing["rules"]:
            self.assertIn(rule["host"], tls_hosts, "a host served without TLS")
            for p in rule["http"]["paths"]:
                be = p["backend"]["service"]
                svc = self.get("Service", be["name"])
                names = {sp.get("name") for sp in svc["spec"]["ports"]} | {sp["port"] for sp in svc["spec"]["ports"]}
                port = be["port"].get("name", be["port"].get("number"))
                self.assertIn(port, names)
                self.assertNotEqual(port, "metrics", "the metrics port must stay inside the cluster")

    def test_statefulsets_have_volume_claims_and_headless_services(self):
        for name in ("postgres", "redis", "windmill-postgres"):
            with self.subTest(statefulset=name):
                sts = self.get("StatefulSet", name)["spec"]
                vct = sts["volumeClaimTemplates"]
                self.assertTrue(vct)
                mounted = {m["name"] for c in sts["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])}
                for t in vct:
                    self.assertIn(t["metadata"]["name"], mounted, "a claim no container mounts")
                    self.assertIn("storage", t["spec"]["resources"]["requests"])
                svc = self.get("Service", sts["serviceName"])
                self.assertEqual(svc["spec"].get("clusterIP"), "None", "serviceName must be headless")
                for c in sts["template"]["spec"]["containers"]:
                    self.assertIn("readinessProbe", c)
                    self.assertTrue({"requests", "limits"} <= set(c.get("resources", {})))

    def test_urls_point_at_the_services(self):
        sec = self.get("Secret", "luagent-secrets")["stringData"]
        self.assertRegex(sec["DATABASE_URL"], r"@postgres:5432/luagent$")
        self.assertRegex(sec["REDIS_URL"], r"@redis:6379(/\d+)?$")
        pw = re.search(r"://[^:]*:([^@]*)@", sec["DATABASE_URL"]).group(1)
        self.assertEqual(pw, sec["POSTGRES_PASSWORD"], "DATABASE_URL and POSTGRES_PASSWORD differ")
        self.assertEqual(re.search(r"://:([^@]*)@", sec["REDIS_URL"]).group(1), sec["REDIS_PASSWORD"])
        wm = self.get("Secret", "windmill-secrets")["stringData"]
        self.assertIn("@windmill-postgres:5432/windmill", wm["DATABASE_URL"])
        self.assertIn(wm["POSTGRES_PASSWORD"], wm["DATABASE_URL"])
        for name, mode in (("windmill-server", "server"), ("windmill-worker", "worker")):
            c = self.get("Deployment", name)["spec"]["template"]["spec"]["containers"][0]
            self.assertTrue(c["image"].startswith("ghcr.io/windmill-labs/windmill"))
            self.assertEqual({e["name"]: e.get("value") for e in c["env"]}["MODE"], mode)

    def test_secrets_are_placeholders(self):
        for sec in self.of_kind("Secret"):
            with self.subTest(secret=sec["metadata"]["name"]):
                self.assertNotIn("data", sec, "base64 data: use stringData placeholders")
                for k, v in sec["stringData"].items():
                    self.assertIsInstance(v, str)
                    if v:
                        self.assertIn("CHANGE-ME", v, f"{k} looks like a real secret")

    def test_env_names_are_known_to_the_server(self):
        known = known_env_names()
        c = self.app_container()
        names = {e["name"] for e in c.get("env", [])}
        for src in c.get("envFrom", []):
            if "configMapRef" in src:
                names |= set(self.get("ConfigMap", src["configMapRef"]["name"])["data"])
            if "secretRef" in src:
                sec = self.get("Secret", src["secretRef"]["name"])
                names |= set(sec.get("stringData", {})) | set(sec.get("data", {}))
        self.assertIn("DATABASE_URL", names)
        self.assertEqual(names - known, set(), "names the server does not read (a typo?)")
        for k, v in self.config_data().items():
            self.assertIsInstance(v, str, f"ConfigMap {k} must be a string")

    def test_key_refs_exist(self):
        refs = 0
        for fname, d in self.docs:
            spec = d.get("spec", {}).get("template", {}).get("spec")
            if not spec:
                continue
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                for e in c.get("env", []):
                    vf = e.get("valueFrom", {})
                    for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                        if key in vf:
                            refs += 1
                            with self.subTest(file=fname, env=e["name"]):
                                obj = self.get(kind, vf[key]["name"])
                                keys = set(obj.get("data") or {}) | set(obj.get("stringData") or {})
                                self.assertIn(vf[key]["key"], keys)
                for src in c.get("envFrom", []):
                    for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                        if key in src:
                            refs += 1
                            self.get(kind, src[key]["name"])
        self.assertGreaterEqual(refs, 10)

    def test_server_accepts_the_configmap(self):
        """`luagent config` validates every value (a bad one stops it, naming the variable)."""
        require_binary()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.config_data()}
        sec = self.get("Secret", "luagent-secrets")["stringData"]
        for e in self.app_container()["env"]:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and e["name"] not in ("DATABASE_URL", "REDIS_URL"):  # `config` would connect
                env[e["name"]] = sec[ref["key"]]
        with tempfile.TemporaryDirectory() as cwd:
            out = run([str(BIN), "config"], env=env, cwd=cwd)
        self.assertEqual(out.returncode, 0, out.stderr)
        printed = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
        for k, v in self.config_data().items():
            self.assertEqual(printed.get(k), v, k)


if __name__ == "__main__":
    unittest.main()
