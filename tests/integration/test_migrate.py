"""Schema migrations with DATABASE_URL: `luagent migrate` (applies, then nothing to do; exit 1 when the
database is unreachable, without the password; exit 2 when DATABASE_URL is unset), migrations at
server start (three servers starting at once on a fresh database apply each migration once), and a
server started while Postgres is down (it serves, /ready says "migrating", and it migrates and
writes the waiting records once Postgres is up). Real PostgreSQL (services.py)."""

import json
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
from pathlib import Path

from .harness import BIN, SLOW, Server, base_env, free_port, measure, require_binary
from .services import Postgres, shared_postgres

PASSWORD = "mig-pw-n0t-for-y0ur-eyes"
TABLES = ["api_keys", "config", "execution_events", "executions", "schema_migrations", "users"]
MIGRATIONS = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "migrations").glob("[0-9]*_*.sql"))

ECHO = '''
return {
  execute = function(task, ctx)
    ctx.emit({got = task})
    return {echo = task}
  end,
}
'''


def url_with_password(pg, db, password=PASSWORD):
    return f"postgresql://{pg.USER}:{password}@127.0.0.1:{pg.port}/{db}"


def run_migrate(env_overrides, timeout=30):
    tmp = tempfile.mkdtemp(prefix="luagent-migrate-")
    try:
        return subprocess.run([str(BIN), "migrate"], cwd=tmp, env=base_env(env_overrides), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout * SLOW)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def show(p):
    return f"exit {p.returncode}\nstdout: {p.stdout[-2000:]!r}\nstderr: {p.stderr[-2000:]!r}"


def tables(pg, db):
    return [r[0] for r in pg.query("select tablename from pg_tables where schemaname = 'public' order by 1", db=db)]


class MigrateCliTests(unittest.TestCase):
    """`luagent migrate`."""

    @classmethod
    def setUpClass(cls):
        require_binary()
        cls.pg = shared_postgres()

    def test_applies_then_nothing_to_do(self):
        db = self.pg.new_database("mig")
        self.assertEqual([], tables(self.pg, db))
        env = {"DATABASE_URL": url_with_password(self.pg, db)}
        t0 = time.monotonic()
        p = run_migrate(env)
        measure("luagent migrate on an empty database", f"{(time.monotonic() - t0) * 1000:.0f} ms")
        self.assertEqual(0, p.returncode, show(p))
        n = len(MIGRATIONS)
        self.assertEqual(f"applied {n} migration{'' if n == 1 else 's'}; schema version {n}", p.stdout.strip(), show(p))
        self.assertEqual(TABLES, tables(self.pg, db))
        rows = self.pg.query("select version, name, applied_at is not null from schema_migrations order by version",
                             db=db)
        self.assertEqual([[str(int(m[:4])), m[5:-4], "t"] for m in MIGRATIONS], rows)
        p = run_migrate(env)
        self.assertEqual(0, p.returncode, show(p))
        self.assertEqual(f"applied 0 migrations; schema version {n}", p.stdout.strip(), show(p))
        self.assertEqual(n, int(self.pg.query("select count(*) from schema_migrations", db=db)[0][0]))
        self.assertNotIn(PASSWORD, p.stdout + p.stderr)

    def test_unreachable_database_exit_1_without_password(self):
        url = f"postgresql://{self.pg.USER}:{PASSWORD}@127.0.0.1:{free_port()}/nowhere"
        t0 = time.monotonic()
        p = run_migrate({"DATABASE_URL": url})
        measure("luagent migrate against a closed port", f"exit {p.returncode} in {(time.monotonic() - t0) * 1000:.0f} ms")
        self.assertEqual(1, p.returncode, show(p))
        self.assertEqual("", p.stdout, show(p))
        self.assertIn("luagent migrate:", p.stderr, show(p))
        self.assertIn("cannot connect", p.stderr, show(p))
        self.assertNotIn(PASSWORD, p.stdout + p.stderr, "the password of DATABASE_URL is printed")

    def test_malformed_url_does_not_print_password(self):
        """A password with a bare `%` (not percent-encoded) or a URL libpq cannot parse: the message
        must not quote the password (libpq's own message quotes the offending token / the whole URL)."""
        cases = {
            "password with a bare %": f"postgresql://{self.pg.USER}:{PASSWORD}%zz@127.0.0.1:{self.pg.port}/postgres",
            "unterminated IPv6 host": f"postgres://{self.pg.USER}:{PASSWORD}@[::1/postgres",
        }
        for label, url in cases.items():
            with self.subTest(label):
                p = run_migrate({"DATABASE_URL": url})
                self.assertEqual(1, p.returncode, show(p))
                self.assertIn("luagent migrate:", p.stderr, show(p))
                self.assertNotIn(PASSWORD, p.stdout + p.stderr, "the password of DATABASE_URL is printed")

    def test_unset_database_url_exit_2(self):
        p = run_migrate({})
        self.assertEqual(2, p.returncode, show(p))
        self.assertIn("DATABASE_URL", p.stderr, show(p))


class MigrateAtStartTests(unittest.TestCase):
    """Three servers started at the same moment on one fresh database."""

    @classmethod
    def setUpClass(cls):
        require_binary()
        cls.pg = shared_postgres()

    def test_concurrent_starts_apply_each_migration_once(self):
        db = self.pg.new_database("migstart")
        url = url_with_password(self.pg, db)
        spills = [tempfile.mkdtemp(prefix="luagent-spill-") for _ in range(3)]
        servers = [Server(agents={"echo": ECHO}, workers=1,
                          env={"DATABASE_URL": url, "LUAGENT_SPILL_DIR": spills[i]}) for i in range(3)]
        try:
            t0 = time.monotonic()
            threads = [threading.Thread(target=s.start, kwargs={"wait": False}) for s in servers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for s in servers:
                s.wait_healthy()
            measure("3 servers started at once on a fresh database: all healthy in",
                    f"{(time.monotonic() - t0) * 1000:.0f} ms")
            self.assertEqual(TABLES, tables(self.pg, db))
            rows = self.pg.query("select version, count(*) from schema_migrations group by version order by 1", db=db)
            self.assertEqual([[str(int(m[:4])), "1"] for m in MIGRATIONS], rows)
            for i, s in enumerate(servers):
                r = s.request("GET", "/ready")
                self.assertEqual(200, r.status, r.describe())
                self.assertEqual("ready", r.body["status"], r.describe())
                self.assertEqual("ok", r.body["checks"]["database"], r.describe())
                r = s.execute("echo", {"server": i})
                self.assertEqual(200, r.status, r.describe())
            for s in servers:
                self.assertEqual(0, s.stop(), s.log_tail())
                self.assertNotIn(PASSWORD, s.log_text())
        finally:
            for s in servers:
                s.cleanup()
            for d in spills:
                shutil.rmtree(d, ignore_errors=True)


class MigrateLaterTests(unittest.TestCase):
    """Postgres down when the server starts: the server starts anyway and migrates once it is up."""

    @classmethod
    def setUpClass(cls):
        require_binary()
        cls.pg = Postgres()
        cls.db = cls.pg.new_database("late")

    @classmethod
    def tearDownClass(cls):
        cls.pg.destroy()

    def test_database_down_at_start(self):
        self.pg.stop()
        spill = tempfile.mkdtemp(prefix="luagent-spill-")
        srv = Server(agents={"echo": ECHO}, workers=2,
                     env={"DATABASE_URL": url_with_password(self.pg, self.db), "LUAGENT_SPILL_DIR": spill})
        try:
            t0 = time.monotonic()
            srv.start()
            measure("server start with Postgres down: healthy in", f"{(time.monotonic() - t0) * 1000:.0f} ms")
            hit = srv.wait_log(lambda l: "migrations" in str(l.get("msg", l.get("message", ""))), timeout=3)
            self.assertIsNotNone(hit, "no log line says the migrations wait\n" + srv.log_tail())
            text = json.dumps(hit)
            self.assertTrue("retried" in text or "not applied yet" in text, text)
            ids = []
            for i in range(6):
                r = srv.execute("echo", {"i": i})
                self.assertEqual(200, r.status, r.describe())
                self.assertEqual({"echo": {"i": i}}, r.body["result"])
                ids.append(r.body["execution_id"])
            r = srv.request("GET", "/ready")
            self.assertEqual(200, r.status, r.describe())
            self.assertEqual("degraded", r.body["status"], r.describe())
            self.assertEqual("migrating", r.body["checks"]["database"], r.describe())
            self.assertIn("records_waiting", r.body["checks"], r.describe())

            self.pg.start()
            t1 = time.monotonic()
            deadline = t1 + 15 * SLOW
            got = []
            while time.monotonic() < deadline:
                if "executions" in tables(self.pg, self.db):
                    got = [row[0] for row in self.pg.query(
                        "select id from executions where status = 'succeeded'", db=self.db)]
                    if set(ids) <= set(got):
                        break
                time.sleep(0.1)
            measure("after Postgres came up: migrated and the 6 waiting records written in",
                    f"{(time.monotonic() - t1) * 1000:.0f} ms")
            self.assertEqual(sorted(ids), sorted(got), srv.log_tail(20))
            self.assertEqual(TABLES, tables(self.pg, self.db))
            self.assertEqual([[str(int(m[:4]))] for m in MIGRATIONS],
                             self.pg.query("select version from schema_migrations order by 1", db=self.db))
            events = self.pg.query("select count(*) from execution_events where type = 'emit'", db=self.db)
            self.assertEqual([["6"]], events)

            def ready():
                rr = srv.request("GET", "/ready")
                return rr.body if rr.status == 200 and isinstance(rr.body, dict) else {}
            deadline = time.monotonic() + 10 * SLOW
            body = ready()
            while body.get("status") != "ready" and time.monotonic() < deadline:
                time.sleep(0.1)
                body = ready()
            self.assertEqual({"status": "ready", "checks": {"agents": "ok", "database": "ok", "records_waiting": 0}},
                             body)
            self.assertEqual(0, srv.stop(), srv.log_tail())
            self.assertNotIn(PASSWORD, srv.log_text())
        finally:
            srv.cleanup()
            shutil.rmtree(spill, ignore_errors=True)
            if self.pg.proc is None or self.pg.proc.poll() is not None:
                self.pg.start()


class MigrateBadUrlServerTests(unittest.TestCase):
    """A server whose DATABASE_URL libpq cannot parse (a password holding a bare `%`): it starts and
    serves, and its log never holds the password (the migration errors it logs included)."""

    @classmethod
    def setUpClass(cls):
        require_binary()
        cls.pg = shared_postgres()

    def test_password_not_logged(self):
        url = f"postgresql://{self.pg.USER}:{PASSWORD}%zz@127.0.0.1:{self.pg.port}/postgres"
        spill = tempfile.mkdtemp(prefix="luagent-spill-")
        srv = Server(agents={"echo": ECHO}, workers=1, env={"DATABASE_URL": url, "LUAGENT_SPILL_DIR": spill})
        try:
            srv.start()
            r = srv.execute("echo", {"x": 1})
            self.assertEqual(200, r.status, r.describe())
            r = srv.request("GET", "/ready")
            self.assertEqual("degraded", r.body["status"], r.describe())
            srv.wait_log(lambda l: "migrations" in l.get("msg", ""), timeout=3)
            self.assertEqual(0, srv.stop(), srv.log_tail())
            leaks = [l for l in srv.log_lines() if PASSWORD in l]
            self.assertEqual([], leaks, "the DATABASE_URL password is in the server log")
        finally:
            srv.cleanup()
            shutil.rmtree(spill, ignore_errors=True)
