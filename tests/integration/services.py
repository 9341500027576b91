"""Real PostgreSQL and Redis servers for the integration suite (no mocks).

`Postgres()` runs initdb in a temporary directory and starts `postgres` on a free port on 127.0.0.1
(as an unprivileged user when the suite runs as root: postgres refuses root). `Redis()` starts
`redis-server` on a free port with no persistence. Both can be stopped and started again on the same
port and data (to test outages), and both are stopped at exit.

`shared_postgres()` / `shared_redis()` give one instance for the whole run; `Postgres.new_database()`
gives each test class a database of its own on it.
"""

import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.integration.harness import SLOW, free_port


def _pg_bindir():
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    raise AssertionError("PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): "
                         "install postgresql-15 (scripts/deps.sh does)")


def _wait_port(port, timeout, proc=None, what="server", log=None):
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}\n{log() if log else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout * SLOW:.0f}s\n{log() if log else ''}")


def _traversable_root():
    """postgres runs as an unprivileged user, who must be able to reach its binaries and /tmp. A root
    directory without o+x (a scratch root made by `mktemp -d`, as fresh-Debian checks use) stops it;
    a normal system has 0755 there already, so this changes nothing on one."""
    st = os.stat("/")
    if not st.st_mode & 0o001:
        os.chmod("/", st.st_mode | 0o005)


class Postgres:
    USER = "luagent"

    def __init__(self):
        self.bindir = _pg_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="luagent-pg-"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        self.port = free_port()
        self.proc = None
        self.run_as = None
        if os.geteuid() == 0:
            _traversable_root()
            for name in ("postgres", "nobody"):
                try:
                    pw = pwd.getpwnam(name)
                    self.run_as = name
                    os.chown(self.root, pw.pw_uid, pw.pw_gid)
                    os.chown(self.sock, pw.pw_uid, pw.pw_gid)
                    break
                except KeyError:
                    continue
        self._as(["initdb", "-D", str(self.data), "-U", self.USER, "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync"], check=True, quiet=True)
        self.start()
        atexit.register(self.destroy)

    def _cmd(self, argv):
        argv = [os.path.join(self.bindir, argv[0])] + argv[1:]
        if self.run_as:
            argv = ["runuser", "-u", self.run_as, "--"] + argv
        return argv

    def _drop_privileges(self):
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

    def _as(self, argv, check=False, quiet=False):
        out = subprocess.run(self._cmd(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout}")
        return out

    def log(self):
        p = self.root / "postgres.log"
        try:
            return p.read_text()[-3000:]
        except OSError:
            return ""

    def start(self):
        """Start (or restart after stop()) on the same port and data directory."""
        logf = open(self.root / "postgres.log", "ab")
        # started without runuser: self.proc must be the postmaster itself, so that stop() signals it
        # (a signal to runuser ends runuser and leaves postgres running)
        self.proc = subprocess.Popen(
            [os.path.join(self.bindir, "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.sock),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, preexec_fn=self._drop_privileges)
        logf.close()
        _wait_port(self.port, 20, self.proc, "postgres", self.log)
        # accepting TCP is not yet accepting queries
        deadline = time.monotonic() + 20 * SLOW
        while self.psql("select 1", db="postgres", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise AssertionError("postgres not answering queries\n" + self.log())
            time.sleep(0.05)

    def stop(self, mode="fast"):
        """Stop the server: mode `fast` (SIGINT: clients are disconnected), `immediate` (SIGQUIT)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        try:
            self.proc.wait(timeout=20 * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        self.stop()
        self.start()

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, db="postgres"):
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql, db="postgres", check=True):
        """Run SQL with psql (unaligned, tuples only). Returns the CompletedProcess (stdout: rows)."""
        out = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", "127.0.0.1",
                              "-p", str(self.port), "-U", self.USER, "-d", db, "-c", sql],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if check and out.returncode != 0:
            raise AssertionError(f"psql failed: {sql}\n{out.stderr}")
        return out

    def query(self, sql, db="postgres"):
        """Rows as lists of strings."""
        out = self.psql(sql, db=db).stdout
        return [line.split("|") for line in out.splitlines() if line != ""]

    def new_database(self, prefix="t"):
        name = f"{prefix}_{os.getpid()}_{time.monotonic_ns() % 10**12}"
        self.psql(f'create database "{name}"')
        return name


class Redis:
    def __init__(self):
        binary = shutil.which("redis-server")
        if binary is None:
            raise AssertionError("redis-server not found: install redis-server (scripts/deps.sh does)")
        self.binary = binary
        self.root = Path(tempfile.mkdtemp(prefix="luagent-redis-"))
        self.port = free_port()
        self.proc = None
        self.start()
        atexit.register(self.destroy)

    def start(self):
        logf = open(self.root / "redis.log", "ab")
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "-::1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.root)],
                                     stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
        logf.close()
        _wait_port(self.port, 10, self.proc, "redis-server", self.log)

    def log(self):
        try:
            return (self.root / "redis.log").read_text()[-3000:]
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self):
        self.stop()
        self.start()

    def destroy(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, db=0):
        return f"redis://127.0.0.1:{self.port}/{db}"

    def cli(self, *args, db=0):
        """redis-cli ARGS; returns stdout stripped (raw replies, one per line)."""
        out = subprocess.run(["redis-cli", "-p", str(self.port), "-n", str(db), "--raw", *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10 * SLOW)
        if out.returncode != 0:
            raise AssertionError(f"redis-cli {args} failed: {out.stderr}")
        return out.stdout.rstrip("\n")


_shared = {}


def shared_postgres():
    if "pg" not in _shared:
        _shared["pg"] = Postgres()
    return _shared["pg"]


def shared_redis():
    if "redis" not in _shared:
        _shared["redis"] = Redis()
    return _shared["redis"]
