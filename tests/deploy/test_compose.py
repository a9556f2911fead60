"""docker-compose.yml: read by a real Compose (`docker compose config`, or
Debian's `docker-compose config` where the plugin is missing: both work
without an engine) with no warning; its start order, health checks,
project volume and stop grace read off the resolved file; and each
service's command and health check run here with its environment (the
services' addresses moved to the machine's own PostgreSQL and RabbitMQ).
"""

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import yaml

from common import REPO, Local, free_port, run_probe, stop, unknown_variables, wait_for

COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEDULER_SERVICES = ["migrate", "worker", "beat", "ui"]


def compose_command():
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise AssertionError("no Compose here: scripts/deploy-tools installs Debian's docker-compose")


def compose_config(path, env=None):
    """(exit code, stdout, stderr) of `compose -f path config`."""
    out = subprocess.run(
        [*compose_command(), "-f", str(path), "--project-directory", str(path.parent), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    return out.returncode, out.stdout, out.stderr


def resolved():
    if not hasattr(resolved, "cache"):
        code, stdout, stderr = compose_config(COMPOSE_FILE)
        assert code == 0, stderr
        resolved.cache = yaml.safe_load(stdout)
    return resolved.cache


def seconds(duration):
    """Compose durations: 90s, 1m30s."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(duration))
    assert parts and duration, duration
    return int(parts.group(1) or 0) * 60 + int(parts.group(2) or 0)


def healthcheck_argv(service):
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD", test
    return test[1:]


class Config(unittest.TestCase):
    def test_compose_reads_the_file_without_an_error_or_a_warning(self):
        code, _, stderr = compose_config(COMPOSE_FILE)
        self.assertEqual((code, stderr.strip()), (0, ""))

    def test_compose_would_refuse_a_broken_file(self):
        tmp = Path(tempfile.mkdtemp(prefix="scheduler-compose-"))
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        text = COMPOSE_FILE.read_text()
        self.assertIn("condition: service_healthy", text)
        (tmp / "docker-compose.yml").write_text(text.replace("condition: service_healthy", "condition: healthy", 1))
        code, _, stderr = compose_config(tmp / "docker-compose.yml")
        self.assertNotEqual(code, 0)
        self.assertIn("condition", stderr)


class Promises(unittest.TestCase):
    def setUp(self):
        self.services = resolved()["services"]

    def test_the_services_start_in_order_once_what_they_need_is_healthy(self):
        self.assertEqual(set(self.services), {"postgres", "rabbitmq", *SCHEDULER_SERVICES})
        needs = {
            "migrate": {"postgres": "service_healthy"},
            "worker": {
                "postgres": "service_healthy",
                "rabbitmq": "service_healthy",
                "migrate": "service_completed_successfully",
            },
        }
        needs["beat"] = needs["ui"] = needs["worker"]
        for name, wanted in needs.items():
            got = {k: v["condition"] for k, v in self.services[name]["depends_on"].items()}
            self.assertEqual(got, wanted, name)
        for name in ["postgres", "rabbitmq", "worker", "ui"]:
            self.assertIn("healthcheck", self.services[name], name)
        self.assertEqual(self.services["migrate"]["restart"], "no")

    def test_the_project_is_mounted_where_the_image_and_the_commands_look_for_it(self):
        (image_project,) = re.findall(r"^ENV SCHEDULER_PROJECT=(\S+)", (REPO / "Dockerfile").read_text(), re.M)
        for name in ["worker", "beat", "ui"]:
            service = self.services[name]
            self.assertEqual(service["environment"]["SCHEDULER_PROJECT"], image_project, name)
            mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in service["volumes"]]
            self.assertIn(f"{REPO}:{image_project}", [":".join(m.split(":")[:2]) for m in mounts], name)

    def test_the_workers_stop_grace_covers_its_drain_timeout_the_kill_grace_and_the_hand_back(self):
        worker = self.services["worker"]
        env = worker["environment"]
        drain, grace = int(env["SCHEDULER_DRAIN_TIMEOUT"]), int(env["SCHEDULER_KILL_GRACE"])
        self.assertGreaterEqual(seconds(worker["stop_grace_period"]), drain + grace + 20)
        self.assertEqual(worker.get("stop_signal", "SIGTERM"), "SIGTERM")
        self.assertEqual(healthcheck_argv(worker)[:2], ["scheduler", "health"])

    def test_the_urls_name_the_services_with_their_credentials(self):
        pg = self.services["postgres"]["environment"]
        db = f"postgres://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
        for name in SCHEDULER_SERVICES:
            env = self.services[name]["environment"]
            self.assertEqual(env["DATABASE_URL"], db, name)
            if name != "migrate":
                self.assertEqual(env["AMQP_URL"], "amqp://guest:guest@rabbitmq:5672/%2f", name)

    def test_every_variable_is_one_its_command_reads(self):
        for name in SCHEDULER_SERVICES:
            service = self.services[name]
            self.assertEqual(unknown_variables(service["command"], service["environment"]), [], name)

    def test_the_ui_binds_the_published_port_needs_its_token_and_is_checked_on_healthz(self):
        ui = self.services["ui"]
        bind = ui["command"][ui["command"].index("--bind") + 1]
        port = bind.rsplit(":", 1)[1]
        published = [
            p.removesuffix("/tcp") if isinstance(p, str) else f"{p.get('host_ip')}:{p['published']}:{p['target']}"
            for p in ui["ports"]
        ]
        self.assertEqual(published, [f"127.0.0.1:{port}:{port}"], "published on loopback only")
        self.assertIn("SCHEDULER_UI_TOKEN", ui["environment"])
        self.assertIn(f"http://127.0.0.1:{port}/healthz", " ".join(healthcheck_argv(ui)))


class RunHere(unittest.TestCase):
    """Each service's command and health check, run here."""

    def setUp(self):
        self.local = Local()
        self.addCleanup(self.local.close)
        self.services = resolved()["services"]
        migrate = self.services["migrate"]
        out = self.local.run(migrate["command"], self.local.env(migrate["environment"]))
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_the_worker_becomes_healthy_by_its_health_check_and_stops_within_its_grace(self):
        worker = self.services["worker"]
        env = self.local.env(worker["environment"])
        with self.local.started(worker["command"], env) as (proc, log):
            check = healthcheck_argv(worker)
            wait_for(
                "the worker's health check to pass",
                lambda: (run_probe(self.local, check, env)[0] == 0, log.read_text()),
                timeout=seconds(worker["healthcheck"]["start_period"]),
            )
            code = stop(proc, signal.SIGTERM, seconds(worker["stop_grace_period"]))
            self.assertEqual(code, 0, log.read_text())

    def test_the_beat_starts_and_stops_within_its_grace(self):
        beat = self.services["beat"]
        with self.local.started(beat["command"], self.local.env(beat["environment"])) as (proc, log):
            wait_for("the beat to start", lambda: ("beat started" in log.read_text(), log.read_text()))
            self.assertEqual(stop(proc, signal.SIGTERM, seconds(beat["stop_grace_period"])), 0, log.read_text())

    def test_the_ui_passes_its_health_check_and_refuses_to_start_without_a_token(self):
        ui = self.services["ui"]
        env = self.local.env(ui["environment"])
        # The file's empty default: the UI says what to do and exits.
        out = self.local.run(ui["command"], dict(env, SCHEDULER_UI_TOKEN=""))
        self.assertEqual(out.returncode, 2)
        self.assertIn("SCHEDULER_UI_TOKEN", out.stderr)
        # Here on a free loopback port, the same command and health check
        # with that port in place of the container's.
        port = free_port()
        container_port = ui["command"][ui["command"].index("--bind") + 1].rsplit(":", 1)[1]
        argv = [a.replace(f"0.0.0.0:{container_port}", f"127.0.0.1:{port}") for a in ui["command"]]
        check = [a.replace(f":{container_port}/", f":{port}/") for a in healthcheck_argv(ui)]
        self.assertEqual(check[0], "python3")
        env["SCHEDULER_UI_TOKEN"] = "compose-test-token"
        with self.local.started(argv, env) as (proc, log):
            def healthy():
                out = subprocess.run([sys.executable, *check[1:]], capture_output=True, text=True)
                return out.returncode == 0, out.stderr + log.read_text()

            wait_for("the UI's health check to pass", healthy, timeout=seconds(ui["healthcheck"]["start_period"]) + 20)
            self.assertEqual(stop(proc, signal.SIGTERM, 30), 0, log.read_text())


if __name__ == "__main__":
    unittest.main()
