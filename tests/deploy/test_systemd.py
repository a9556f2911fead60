"""deploy/systemd: the units pass `systemd-analyze verify` (when the machine
has it), say what the README promises (a stop drains, a restart leaves
nothing behind, Restart=on-failure, one environment file), and each unit's
ExecStart runs here with the example environment file: the worker becomes
healthy and exits 0 on its KillSignal within TimeoutStopSec, the beat
re-reads its file on ExecReload's signal, the UI answers /healthz.
"""

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import unittest
from pathlib import Path

from common import BIN, REPO, Local, free_port, http_get, run_probe, stop, unknown_variables, wait_for

UNITS = REPO / "deploy" / "systemd"
NAMES = ["scheduler-worker@.service", "scheduler-beat.service", "scheduler-ui.service"]
INSTALLED_BIN = "/usr/local/bin/scheduler"
ENV_FILE = "/etc/scheduler/scheduler.env"


def parse_unit(path):
    """{section: {key: [values]}}, as systemd reads a unit (comments, repeats)."""
    unit, section = {}, None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def parse_env_file(path):
    """NAME=value lines, as systemd's EnvironmentFile= reads them."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        env[key.strip()] = value.strip().strip("\"'")
    return env


def one(unit, section, key):
    (value,) = unit[section][key]
    return value


def seconds(value):
    assert value.isdigit(), f"TimeoutStopSec={value}: give plain seconds"
    return int(value)


def exec_start(unit, **specifiers):
    """ExecStart as argv, with the unit's specifiers filled in."""
    line = one(unit, "Service", "ExecStart")
    for key, value in specifiers.items():
        line = line.replace(f"%{key}", value)
    assert "%" not in line, line
    return shlex.split(line)


def default_of(command, flag):
    """A flag's default, from `scheduler COMMAND --help`."""
    text = subprocess.run([BIN, command, "--help"], capture_output=True, text=True, check=True).stdout
    block = text[text.index(f"--{flag}") :].split("\n\n")[0]
    return int(block[block.index("[default: ") + 10 :].split("]")[0])


class Verify(unittest.TestCase):
    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
    def test_the_units_pass_systemd_analyze_verify_without_a_warning(self):
        tmp = Path(tempfile.mkdtemp(prefix="scheduler-units-"))
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        for name in NAMES:
            text = (UNITS / name).read_text()
            # verify checks that ExecStart's program exists: the one built
            # here stands for the installed one, the only change.
            self.assertEqual(text.count(INSTALLED_BIN), 1, name)
            (tmp / name).write_text(text.replace(INSTALLED_BIN, BIN))
        units = [str(tmp / n.replace("@.", "@etl.")) for n in NAMES]
        out = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
        self.assertEqual((out.returncode, out.stdout + out.stderr), (0, ""))

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
    def test_verify_would_catch_a_broken_unit(self):
        tmp = Path(tempfile.mkdtemp(prefix="scheduler-units-"))
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        text = (UNITS / "scheduler-beat.service").read_text().replace(INSTALLED_BIN, BIN)
        (tmp / "scheduler-beat.service").write_text(text.replace("KillMode=mixed", "KillMode=gentle"))
        unit = str(tmp / "scheduler-beat.service")
        out = subprocess.run(["systemd-analyze", "verify", "--man=no", unit], capture_output=True, text=True)
        self.assertIn("kill mode", out.stdout + out.stderr)


class Promises(unittest.TestCase):
    def setUp(self):
        self.units = {name: parse_unit(UNITS / name) for name in NAMES}
        self.env = parse_env_file(UNITS / "scheduler.env.example")

    def test_every_unit_reads_the_environment_file_restarts_on_failure_and_runs_the_installed_binary(self):
        for name, unit in self.units.items():
            service = unit["Service"]
            self.assertEqual(service["EnvironmentFile"][0], ENV_FILE, name)
            self.assertEqual(one(unit, "Service", "Restart"), "on-failure", name)
            self.assertEqual(exec_start(unit, i="q", t="/run")[0], INSTALLED_BIN, name)
            self.assertEqual(one(unit, "Install", "WantedBy"), "multi-user.target", name)

    def test_a_worker_stop_signals_the_worker_alone_and_waits_for_its_drain(self):
        unit = self.units["scheduler-worker@.service"]
        self.assertEqual(one(unit, "Service", "KillMode"), "mixed")
        self.assertEqual(one(unit, "Service", "KillSignal"), "SIGTERM")
        drain = int(self.env.get("SCHEDULER_DRAIN_TIMEOUT", default_of("worker", "drain-timeout")))
        grace = int(self.env.get("SCHEDULER_KILL_GRACE", default_of("worker", "kill-grace")))
        self.assertGreaterEqual(seconds(one(unit, "Service", "TimeoutStopSec")), drain + grace + 20)
        self.assertNotIn("SendSIGKILL", unit["Service"], "the final SIGKILL of the cgroup must stay")

    def test_the_worker_serves_its_instance_queue_whatever_the_environment_file_says(self):
        argv = exec_start(self.units["scheduler-worker@.service"], i="heavy", t="/run")
        self.assertEqual(argv[1:4], ["worker", "--queue", "heavy"])
        self.assertEqual(argv[argv.index("--health-file") + 1], "/run/scheduler-worker-heavy/health.json")
        self.assertIn("scheduler-worker-%i", self.units["scheduler-worker@.service"]["Service"]["RuntimeDirectory"])

    def test_the_beat_reloads_on_sighup(self):
        self.assertEqual(one(self.units["scheduler-beat.service"], "Service", "ExecReload"), "/bin/kill -HUP $MAINPID")

    def test_every_variable_of_the_environment_file_is_read_by_a_unit(self):
        readers = {name: exec_start(unit, i="q", t="/run") for name, unit in self.units.items()}
        for variable in self.env:
            self.assertTrue(
                any(not unknown_variables(["scheduler", argv[1]], [variable]) for argv in readers.values()),
                f"{variable} is read by no unit",
            )


class RunHere(unittest.TestCase):
    """Each unit's ExecStart, run here as systemd would run it."""

    def setUp(self):
        self.local = Local()
        self.addCleanup(self.local.close)
        self.env = self.local.env(parse_env_file(UNITS / "scheduler.env.example"))

    def unit(self, name):
        return parse_unit(UNITS / name)

    def test_the_worker_instance_gets_healthy_and_exits_0_on_its_kill_signal_within_timeoutstopsec(self):
        unit = self.unit("scheduler-worker@.service")
        runtime = self.local.dir / "run"
        argv = exec_start(unit, i=self.local.queue, t=str(runtime))
        (runtime / f"scheduler-worker-{self.local.queue}").mkdir(parents=True)  # RuntimeDirectory=
        health = argv[argv.index("--health-file") + 1]
        with self.local.started(argv, self.env) as (proc, log):
            probe = ["scheduler", "health", "--file", health]
            healthy = lambda: (run_probe(self.local, probe, self.env)[0] == 0, log.read_text())  # noqa: E731
            wait_for("the worker's health report", healthy)
            sig = signal.Signals[one(unit, "Service", "KillSignal")]
            code = stop(proc, sig, seconds(one(unit, "Service", "TimeoutStopSec")))
            self.assertEqual(code, 0, log.read_text())
            self.assertIn(f"queues={self.local.queue}", log.read_text())
        self.assertFalse(os.path.exists(health), "the report goes with the worker")

    def test_the_beat_rereads_schedules_json_on_its_reload_signal(self):
        unit = self.unit("scheduler-beat.service")
        with self.local.started(exec_start(unit), self.env) as (proc, log):
            wait_for("the beat to start", lambda: ("beat started" in log.read_text(), log.read_text()))
            proc.send_signal(signal.SIGHUP)  # ExecReload=/bin/kill -HUP $MAINPID
            wait_for("the re-read", lambda: ("schedules.json re-read" in log.read_text(), log.read_text()))
            code = stop(proc, signal.SIGTERM, seconds(one(unit, "Service", "TimeoutStopSec")))
            self.assertEqual(code, 0, log.read_text())

    def test_the_ui_serves_healthz_on_its_bind(self):
        unit = self.unit("scheduler-ui.service")
        port = free_port()
        env = dict(self.env, SCHEDULER_UI_BIND=f"127.0.0.1:{port}")
        with self.local.started(exec_start(unit), env) as (proc, log):
            wait_for("/healthz to answer 200", lambda: (http_get(port, "/healthz")[0] == 200, log.read_text()))
            code = stop(proc, signal.SIGTERM, seconds(one(unit, "Service", "TimeoutStopSec")))
            self.assertEqual(code, 0, log.read_text())


if __name__ == "__main__":
    unittest.main()
