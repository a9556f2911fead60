"""What the deployment tests share: the repository, the real `scheduler`
binary, and running one of the deployment files' commands here, against
the machine's own PostgreSQL and RabbitMQ (a database and a queue of its
own), with the file's environment but for the addresses of the services.
"""

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SCHEDULER_BIN") or str(REPO / "target" / "debug" / "scheduler")
DB_BASE = os.environ.get("TEST_DATABASE_BASE", "postgres://postgres@127.0.0.1:5432")
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
# Variables that are not the scheduler's flags but are fine to set.
NOT_FLAGS = {"RUST_LOG"}


def scheduler(*args, env=None, check=True, timeout=60):
    out = subprocess.run([BIN, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"scheduler {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return out


_flags = {}


def env_flags(command):
    """The variables `scheduler COMMAND` reads (clap's `env`), from its --help."""
    if command not in _flags:
        text = scheduler(command, "--help").stdout
        _flags[command] = set(re.findall(r"\[env: ([A-Z0-9_]+)", text))
    return _flags[command]


def subcommand(argv):
    """`scheduler worker --x` -> "worker"; asserts it runs the scheduler."""
    assert argv and argv[0] in ("scheduler", "/usr/local/bin/scheduler"), argv
    return argv[1]


def unknown_variables(argv, env_names):
    """The names in `env_names` that `argv`'s command would ignore."""
    known = env_flags(subcommand(argv)) | NOT_FLAGS
    return sorted(set(env_names) - known)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Local:
    """A database and a queue of this test's own, and the environment that
    points a deployment file's command at them."""

    def __init__(self):
        tag = uuid.uuid4().hex[:16]
        self.db_name = f"sched_deploy_{tag}"
        self.queue = f"t-deploy-{tag}"
        self.dir = Path(tempfile.mkdtemp(prefix="scheduler-deploy-"))
        self.procs = []

    @property
    def db_url(self):
        return f"{DB_BASE}/{self.db_name}"

    def env(self, file_env, project=None, **extra):
        """`file_env` (the file's variables) with the services, the queue,
        the project and the health file moved here."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
        env.update(file_env)
        env.update(
            DATABASE_URL=self.db_url,
            AMQP_URL=AMQP_URL,
            SCHEDULER_QUEUE=self.queue,
            SCHEDULER_QUEUE_EXPIRES_MS="600000",
            SCHEDULER_PROJECT=str(project or REPO),
        )
        if "SCHEDULER_HEALTH_FILE" in env:
            env["SCHEDULER_HEALTH_FILE"] = str(self.dir / "health.json")
        env.update(extra)
        return env

    def run(self, argv, env, timeout=60):
        subcommand(argv)
        return subprocess.run([BIN, *argv[1:]], env=env, capture_output=True, text=True, timeout=timeout)

    @contextmanager
    def started(self, argv, env):
        """Runs `argv` in the background; yields (process, log path)."""
        subcommand(argv)
        log = self.dir / f"{argv[1]}-{len(self.procs)}.log"
        with open(log, "wb") as f:
            p = subprocess.Popen(
                [BIN, *argv[1:]], env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.procs.append(p)
        try:
            yield p, log
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run(
            ["psql", f"{DB_BASE}/postgres", "-q", "-c", f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'],
            capture_output=True,
        )


def wait_for(what, probe, timeout=60.0):
    """Polls `probe` (returns (ok, state)) until ok; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        ok, state = probe()
        if ok:
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last seen: {state}")
        time.sleep(0.1)


def stop(proc, sig, within):
    """Sends `sig`; returns the exit code, which must come within `within` s."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"did not exit within {within} s of {signal.Signals(sig).name}")


def run_probe(local, argv, env):
    """An exec probe / healthcheck command: (exit code, what it printed)."""
    out = local.run(argv, env, timeout=30)
    return out.returncode, (out.stdout + out.stderr).strip()


def http_get(port, path, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)
