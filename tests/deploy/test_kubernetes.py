"""deploy/kubernetes: rendered with `kubectl kustomize` (no Helm here),
every object validated against the Kubernetes schemas (kubernetes-validate,
offline, strict), what the files promise checked on the rendered objects,
and each Deployment's own commands run here with their environment: the
migration, the main container, its probes, and a SIGTERM within its grace
period.
"""

import re
import shutil
import signal
import subprocess
import tempfile
import unittest
from pathlib import Path

import kubernetes_validate
import yaml

from common import BIN, REPO, Local, free_port, http_get, run_probe, stop, unknown_variables, wait_for

KUBE = REPO / "deploy" / "kubernetes"
BASE = KUBE / "base"
OVERLAY = KUBE / "overlays" / "configmap-project"
EXAMPLE = KUBE / "overlays" / "example"
# The oldest Kubernetes these files claim, and the newest the package bundles.
VERSIONS = ["1.28.0", "1.37.0"]


def kustomize(path):
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def pod(docs, component):
    return find(docs, "Deployment", f"scheduler-{component}")["spec"]["template"]["spec"]


def main(spec):
    (c,) = [c for c in spec["containers"] if c["name"] == "scheduler"]
    return c


def file_env(container):
    """The container's variables; those from the Secret as placeholders."""
    env = {}
    for e in container.get("env", []):
        env[e["name"]] = e.get("value", f"<secret {e.get('valueFrom')}>")
    return env


def rendered():
    if not hasattr(rendered, "cache"):
        rendered.cache = {"base": kustomize(BASE), "overlay": kustomize(OVERLAY), "example": kustomize(EXAMPLE)}
    return rendered.cache


class Rendering(unittest.TestCase):
    def test_every_object_validates_against_the_kubernetes_schemas_strictly(self):
        docs = rendered()["base"] + rendered()["overlay"] + rendered()["example"]
        docs.append(yaml.safe_load((KUBE / "secret.example.yaml").read_text()))
        kinds = sorted({d["kind"] for d in docs})
        self.assertEqual(kinds, ["ConfigMap", "Deployment", "Secret", "Service"])
        for doc in docs:
            for version in VERSIONS:
                with self.subTest(kind=doc["kind"], name=doc["metadata"]["name"], version=version):
                    kubernetes_validate.validate(doc, version, strict=True)

    def test_a_wrong_field_is_caught_by_the_validation(self):
        # The validation is not a no-op: a typo in a probe is refused.
        worker = find(rendered()["base"], "Deployment", "scheduler-worker")
        broken = yaml.safe_load(yaml.safe_dump(worker))
        broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 15
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)

    def test_every_file_under_deploy_kubernetes_is_rendered_or_validated(self):
        used = {KUBE / "secret.example.yaml"}
        for kustomization in KUBE.rglob("kustomization.yaml"):
            used.add(kustomization)
            k = yaml.safe_load(kustomization.read_text())
            for entry in k.get("resources", []) + [p["path"] for p in k.get("patches", [])]:
                used.add((kustomization.parent / entry).resolve())
            for gen in k.get("configMapGenerator", []):
                used.update((kustomization.parent / f).resolve() for f in gen.get("files", []) + gen.get("envs", []))
        files = {p.resolve() for p in KUBE.rglob("*") if p.is_file()}
        self.assertEqual(sorted(map(str, files - used)), [], "files no kustomization uses")


class Promises(unittest.TestCase):
    def setUp(self):
        self.base = rendered()["base"]

    def test_the_workers_grace_period_covers_its_drain_timeout_the_kill_grace_and_the_hand_back(self):
        spec = pod(self.base, "worker")
        env = file_env(main(spec))
        drain, grace = int(env["SCHEDULER_DRAIN_TIMEOUT"]), int(env["SCHEDULER_KILL_GRACE"])
        self.assertGreaterEqual(spec["terminationGracePeriodSeconds"], drain + grace + 20)
        # A rollout never takes a worker away before its replacement consumes.
        rolling = find(self.base, "Deployment", "scheduler-worker")["spec"]["strategy"]["rollingUpdate"]
        self.assertEqual(rolling["maxUnavailable"], 0)

    def test_the_beat_runs_two_replicas_preferably_on_two_nodes(self):
        beat = find(self.base, "Deployment", "scheduler-beat")
        self.assertGreaterEqual(beat["spec"]["replicas"], 2)
        anti = beat["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
        self.assertEqual(term["topologyKey"], "kubernetes.io/hostname")
        self.assertEqual(term["labelSelector"]["matchLabels"], beat["spec"]["selector"]["matchLabels"])
        self.assertEqual(main(pod(self.base, "beat"))["command"], ["scheduler", "beat"])

    def test_urls_and_the_token_come_from_the_secret_whose_example_has_every_key(self):
        secret = yaml.safe_load((KUBE / "secret.example.yaml").read_text())
        keys = set(secret["stringData"])
        for component in ["worker", "beat", "ui"]:
            spec = pod(self.base, component)
            for c in spec["initContainers"] + spec["containers"]:
                for e in c.get("env", []):
                    if e["name"] in ("DATABASE_URL", "AMQP_URL", "SCHEDULER_UI_TOKEN"):
                        ref = e.get("valueFrom", {}).get("secretKeyRef")
                        self.assertIsNotNone(ref, f"{component}/{c['name']}: {e['name']} must come from the Secret")
                        self.assertEqual(ref["name"], secret["metadata"]["name"])
                        self.assertIn(ref["key"], keys)
        self.assertIn("SCHEDULER_UI_TOKEN", file_env(main(pod(self.base, "ui"))))

    def test_every_container_sets_only_variables_its_command_reads_and_has_requests(self):
        for docs in rendered().values():
            for d in docs:
                if d["kind"] != "Deployment":
                    continue
                spec = d["spec"]["template"]["spec"]
                for c in spec.get("initContainers", []) + spec["containers"]:
                    where = f"{d['metadata']['name']}/{c['name']}"
                    self.assertEqual(unknown_variables(c["command"], file_env(c)), [], where)
                    self.assertEqual(set(c["resources"]["requests"]), {"cpu", "memory"}, where)
                    self.assertIn("memory", c["resources"]["limits"], where)
                    self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"], where)

    def test_every_pod_migrates_in_an_init_container_before_it_starts(self):
        images = set()
        for component in ["worker", "beat", "ui"]:
            spec = pod(self.base, component)
            (init,) = spec["initContainers"]
            self.assertEqual(init["command"], ["scheduler", "migrate"], component)
            self.assertEqual(set(file_env(init)), {"DATABASE_URL"}, component)
            images |= {init["image"], main(spec)["image"]}
            self.assertFalse(spec["automountServiceAccountToken"], component)
            self.assertTrue(spec["securityContext"]["runAsNonRoot"], component)
        self.assertEqual(images, {"scheduler:0.1.0"}, "one image, tagged by the kustomization")

    def test_the_worker_probes_are_scheduler_health_on_a_file_in_a_mounted_volume(self):
        c = main(pod(self.base, "worker"))
        health_file = Path(file_env(c)["SCHEDULER_HEALTH_FILE"])
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        self.assertIn(str(health_file.parent), mounts)
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"]:
            self.assertEqual(c[probe]["exec"]["command"][:2], ["scheduler", "health"], probe)
        self.assertEqual(c["livenessProbe"]["exec"]["command"], ["scheduler", "health"], "the default budget")

    def test_the_ui_is_probed_on_healthz_at_the_port_it_binds_and_served_by_its_service(self):
        c = main(pod(self.base, "ui"))
        bind = c["command"][c["command"].index("--bind") + 1]
        (port,) = c["ports"]
        self.assertEqual(bind, f"0.0.0.0:{port['containerPort']}")
        self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/healthz", "port": port["name"]})
        self.assertEqual(c["livenessProbe"]["tcpSocket"], {"port": port["name"]})
        service = find(self.base, "Service", "scheduler-ui")
        self.assertEqual(service["spec"]["ports"][0]["targetPort"], port["name"])
        labels = find(self.base, "Deployment", "scheduler-ui")["spec"]["template"]["metadata"]["labels"]
        self.assertEqual(service["spec"]["selector"], {k: labels[k] for k in service["spec"]["selector"]})

    def test_the_project_path_is_the_one_the_image_sets(self):
        dockerfile = (REPO / "Dockerfile").read_text()
        (image_project,) = re.findall(r"^ENV SCHEDULER_PROJECT=(\S+)", dockerfile, re.M)
        for component in ["worker", "beat", "ui"]:
            self.assertEqual(file_env(main(pod(self.base, component)))["SCHEDULER_PROJECT"], image_project)


class ConfigMapProject(unittest.TestCase):
    def test_the_mounted_definitions_make_a_project_that_validates_in_every_pod(self):
        docs = rendered()["overlay"]
        maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
        for component in ["worker", "beat", "ui"]:
            spec = pod(docs, component)
            c = main(spec)
            project_dir = Path(file_env(c)["SCHEDULER_PROJECT"])
            volumes = {v["name"]: v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v}
            self.assertEqual(set(volumes.values()), set(maps), component)
            # The pod's project: the image's (modules/, conf/) with the ConfigMaps over it.
            root = Path(tempfile.mkdtemp(prefix="scheduler-cm-project-"))
            try:
                for part in ["modules", "conf"]:
                    shutil.copytree(REPO / part, root / part)
                for m in c["volumeMounts"]:
                    if m["name"] not in volumes:
                        continue
                    rel = Path(m["mountPath"]).relative_to(project_dir)
                    data = maps[volumes[m["name"]]]
                    if "subPath" in m:
                        (root / rel).write_text(data[m["subPath"]])
                    else:
                        (root / rel).mkdir(parents=True)
                        for key, text in data.items():
                            (root / rel / key).write_text(text)
                self.assertTrue((root / "schedules.json").exists(), component)
                out = subprocess.run(
                    [BIN, "validate"],
                    env={"PATH": "/usr/bin:/bin", "SCHEDULER_PROJECT": str(root)},
                    capture_output=True,
                    text=True,
                )
                self.assertEqual(out.returncode, 0, f"{component}: {out.stdout}{out.stderr}")
                self.assertIn("dummy_etl_hourly", out.stdout + out.stderr)
            finally:
                shutil.rmtree(root, ignore_errors=True)


class Knobs(unittest.TestCase):
    """overlays/example: what a Helm chart's values would set, each reaching its objects."""

    def setUp(self):
        self.docs = rendered()["example"]
        self.k = yaml.safe_load((EXAMPLE / "kustomization.yaml").read_text())
        self.values = {}
        for line in (EXAMPLE / "values.env").read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                key, _, value = line.partition("=")
                self.values[key] = value

    def test_secret_names_concurrency_and_queues_come_from_values_env_which_is_not_deployed(self):
        self.assertNotIn("ConfigMap", {d["kind"] for d in self.docs}, "values.env is local config")
        refs = {}
        for component in ["worker", "beat", "ui"]:
            spec = pod(self.docs, component)
            for c in spec["initContainers"] + spec["containers"]:
                for e in c.get("env", []):
                    if "valueFrom" in e:
                        refs.setdefault(e["name"], set()).add(e["valueFrom"]["secretKeyRef"]["name"])
        self.assertEqual(
            refs,
            {
                "DATABASE_URL": {self.values["secret"]},
                "AMQP_URL": {self.values["secret"]},
                "SCHEDULER_UI_TOKEN": {self.values["tokenSecret"]},
            },
        )
        env = file_env(main(pod(self.docs, "worker")))
        self.assertEqual(env["SCHEDULER_CONCURRENCY"], self.values["concurrency"])
        self.assertEqual(env["SCHEDULER_QUEUE"], self.values["queues"])

    def test_image_namespace_replicas_and_resources_are_set(self):
        (image,) = self.k["images"]
        counts = {r["name"]: r["count"] for r in self.k["replicas"]}
        for d in self.docs:
            self.assertEqual(d["metadata"]["namespace"], self.k["namespace"])
            if d["kind"] != "Deployment":
                continue
            self.assertEqual(d["spec"]["replicas"], counts[d["metadata"]["name"]])
            spec = d["spec"]["template"]["spec"]
            for c in spec["initContainers"] + spec["containers"]:
                self.assertEqual(c["image"], f"{image['newName']}:{image['newTag']}")
        patch = yaml.safe_load((EXAMPLE / "worker-resources.yaml").read_text())
        wanted = patch["spec"]["template"]["spec"]["containers"][0]["resources"]
        self.assertEqual(main(pod(self.docs, "worker"))["resources"], wanted)


class RunHere(unittest.TestCase):
    """Each Deployment's commands, run here as its pod would run them."""

    def setUp(self):
        self.local = Local()
        self.addCleanup(self.local.close)
        self.base = rendered()["base"]

    def migrate(self, spec):
        (init,) = spec["initContainers"]
        out = self.local.run(init["command"], self.local.env(file_env(init)))
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_the_worker_pod_migrates_starts_passes_its_probes_and_drains_on_sigterm_in_time(self):
        spec = pod(self.base, "worker")
        c = main(spec)
        env = self.local.env(file_env(c))
        self.migrate(spec)
        liveness = c["livenessProbe"]["exec"]["command"]
        self.assertEqual(run_probe(self.local, liveness, env)[0], 1, "no report before the worker runs")
        with self.local.started(c["command"], env) as (proc, log):
            startup = c["startupProbe"]["exec"]["command"]
            limit = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
            wait_for(
                "the startup probe to pass",
                lambda: (run_probe(self.local, startup, env)[0] == 0 or proc.poll() is not None, log.read_text()),
                timeout=limit,
            )
            self.assertIsNone(proc.poll(), log.read_text())
            for probe in ["readinessProbe", "livenessProbe"]:
                code, said = run_probe(self.local, c[probe]["exec"]["command"], env)
                self.assertEqual(code, 0, f"{probe}: {said}")
                self.assertIn("healthy", said)
            code = stop(proc, signal.SIGTERM, spec["terminationGracePeriodSeconds"])
            self.assertEqual(code, 0, log.read_text())
            self.assertIn("worker stopped", log.read_text())
        self.assertEqual(run_probe(self.local, liveness, env)[0], 1, "no report once it stopped")

    def test_the_beat_pod_starts_and_stops_on_sigterm_in_time(self):
        spec = pod(self.base, "beat")
        c = main(spec)
        env = self.local.env(file_env(c))
        self.migrate(spec)
        with self.local.started(c["command"], env) as (proc, log):
            wait_for("the beat to start", lambda: ("beat started" in log.read_text(), log.read_text()))
            self.assertEqual(stop(proc, signal.SIGTERM, spec["terminationGracePeriodSeconds"]), 0, log.read_text())

    def test_the_ui_pod_answers_its_readiness_probe_and_requires_its_token(self):
        spec = pod(self.base, "ui")
        c = main(spec)
        self.migrate(spec)
        # Bound to loopback here (the pod binds all its addresses): the rest
        # of the command and its environment as the file has them.
        port = free_port()
        argv = list(c["command"])
        argv[argv.index("--bind") + 1] = f"127.0.0.1:{port}"
        env = self.local.env(file_env(c), SCHEDULER_UI_TOKEN="deploy-test-token")
        with self.local.started(argv, env) as (proc, log):
            path = c["readinessProbe"]["httpGet"]["path"]
            wait_for(f"GET {path} to answer 200", lambda: (http_get(port, path)[0] == 200, log.read_text()))
            self.assertEqual(http_get(port, "/api/v1/runs")[0], 401)
            auth = {"Authorization": "Bearer deploy-test-token"}
            self.assertEqual(http_get(port, "/api/v1/runs", auth)[0], 200)
            self.assertEqual(stop(proc, signal.SIGTERM, spec["terminationGracePeriodSeconds"]), 0, log.read_text())


if __name__ == "__main__":
    unittest.main()
