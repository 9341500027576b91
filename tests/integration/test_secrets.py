"""Run-time settings stored in Postgres's config table, secrets encrypted at rest (AES-256-GCM with
LUAGENT_SECRET_KEY): `luagent config set/unset/rotate-key`, the environment winning over the table,
a provider key that lives only in the table reaching the provider, and no secret in any output."""

import os
import shutil
import subprocess
import tempfile

from tests.fakes.providers import FakeProviders

from .harness import BIN, REPO, SLOW, Server, ServerTestCase, base_env, class_tmpdir
from .services import shared_postgres

KEY1 = "11" * 32
KEY2 = "22" * 32
PROVIDER_KEY = "sk-from-the-config-table-0123456789"

ASK = r'''
return { execute = function(task, ctx)
  return luagent.ai.chat{model = "openai/gpt-4o-mini", messages = {{role = "user", content = "hi"}}, retries = 0}.content
end }
'''


class SecretsTests(ServerTestCase):
    AGENTS = {"ask": ASK}
    WORKERS = 1

    @classmethod
    def setUpClass(cls):
        cls.pg = shared_postgres()
        cls.db = cls.pg.new_database("secrets")
        cls.fake = FakeProviders(api_key=PROVIDER_KEY)
        cls.fake.start()
        cls.addClassCleanup(cls.fake.stop)
        cls.base = {"DATABASE_URL": cls.pg.url(cls.db), "LUAGENT_SECRET_KEY": KEY1}
        r = cls.cli("set", "OPENAI_API_KEY", PROVIDER_KEY)
        assert r.returncode == 0, r.stderr
        cls.ENV = {**cls.base, "LUAGENT_PROVIDERS_DIR": str(REPO / "providers"),
                   "OPENAI_BASE_URL": cls.fake.openai_base_url,
                   "LUAGENT_SPILL_DIR": class_tmpdir(cls, "luagent-spill-")}
        super().setUpClass()

    @classmethod
    def cli(cls, *args, env=None):
        return subprocess.run([str(BIN), "config", *args], env=base_env({**cls.base, **(env or {})}),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60 * SLOW)

    def stored(self, name):
        rows = self.pg.query(f"SELECT value, secret FROM config WHERE key = '{name}'", db=self.db)
        return rows[0] if rows else None

    def test_secret_is_encrypted_at_rest(self):
        value, secret = self.stored("OPENAI_API_KEY")
        self.assertEqual("t", secret)
        self.assertTrue(value.startswith("v1:"), value)
        self.assertNotIn(PROVIDER_KEY, value)
        self.assertNotIn(PROVIDER_KEY[3:20], value)
        self.assertEqual(0, self.cli("set", "LUAGENT_CALLBACK_SECRET", "same").returncode)
        first = self.stored("LUAGENT_CALLBACK_SECRET")[0]
        self.assertEqual(0, self.cli("set", "LUAGENT_CALLBACK_SECRET", "same").returncode)
        self.assertNotEqual(first, self.stored("LUAGENT_CALLBACK_SECRET")[0], "a fresh nonce per value")
        self.assertEqual(0, self.cli("unset", "LUAGENT_CALLBACK_SECRET").returncode)

    def test_key_from_the_table_reaches_the_provider(self):
        r = self.server.execute("ask", {})
        self.assertOk(r)
        self.assertNotIn(PROVIDER_KEY, self.server.log_text())

    def test_config_prints_it_redacted(self):
        out = self.cli()
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn("OPENAI_API_KEY=***", out.stdout)
        self.assertNotIn(PROVIDER_KEY, out.stdout + out.stderr)

    def test_environment_wins(self):
        spill = tempfile.mkdtemp(prefix="luagent-spill-")
        self.addCleanup(shutil.rmtree, spill, ignore_errors=True)
        srv = Server(agents={"ask": ASK}, env={**self.ENV, "OPENAI_API_KEY": "sk-env-wins-but-is-wrong",
                                               "LUAGENT_SPILL_DIR": spill},
                     workers=1).start()
        try:
            r = srv.execute("ask", {})
            self.assertEqual(502, r.status, r.describe())  # the fake refuses the environment's key
        finally:
            srv.stop()
            srv.cleanup()

    def test_refusals(self):
        cases = [
            (("set", "DATABASE_URL", "postgresql://x"), {}, "cannot be stored"),
            (("set", "LUAGENT_EXEC_TIMEOUT_MS", "soon"), {}, "LUAGENT_EXEC_TIMEOUT_MS"),
            (("set", "ANTHROPIC_API_KEY", "sk-ant-x"), {"LUAGENT_SECRET_KEY": None}, "LUAGENT_SECRET_KEY"),
            (("set", "ANTHROPIC_API_KEY", "sk-ant-x"), {"LUAGENT_SECRET_KEY": "short"}, "LUAGENT_SECRET_KEY"),
        ]
        for args, env, msg in cases:
            with self.subTest(args=args):
                r = self.cli(*args, env=env)
                self.assertNotEqual(0, r.returncode)
                self.assertIn(msg, r.stderr)
                self.assertNotIn("sk-ant-x", r.stderr)

    def test_tampering_and_rotation(self):
        self.assertEqual(0, self.cli("set", "GEMINI_API_KEY", "gm-secret-value").returncode)
        good = self.stored("GEMINI_API_KEY")[0]
        flipped = good[:-6] + ("A" if good[-6] != "A" else "B") + good[-5:]
        self.pg.psql(f"UPDATE config SET value = '{flipped}' WHERE key = 'GEMINI_API_KEY'", db=self.db)
        r = self.cli()
        self.assertIn("does not decrypt", r.stderr)
        self.assertNotIn("gm-secret-value", r.stdout + r.stderr)
        self.pg.psql(f"UPDATE config SET value = '{good}' WHERE key = 'GEMINI_API_KEY'", db=self.db)
        # rotation: every secret re-encrypted for the new key, in one transaction
        r = self.cli("rotate-key", env={"LUAGENT_NEW_SECRET_KEY": KEY2})
        self.assertEqual(0, r.returncode, r.stderr)
        self.assertIn("re-encrypted 2 secrets", r.stdout)
        r = self.cli()
        self.assertIn("encrypted with another LUAGENT_SECRET_KEY", r.stderr)
        r = self.cli(env={"LUAGENT_SECRET_KEY": KEY2})
        self.assertEqual("", r.stderr)
        self.assertIn("GEMINI_API_KEY=***", r.stdout)
        # back to the first key for the other tests
        r = self.cli("rotate-key", env={"LUAGENT_SECRET_KEY": KEY2, "LUAGENT_NEW_SECRET_KEY": KEY1})
        self.assertEqual(0, r.returncode, r.stderr)
        self.assertEqual(0, self.cli("unset", "GEMINI_API_KEY").returncode)
