"""The Helm chart (deploy/helm/loyalty), rendered with every CI values file and checked against
the code: what each container is told (flags, env) must be what the service parses, its probes
must hit the port and paths it serves, no consumer may outnumber the partitions, and no secret
from the values may appear in clear outside a Secret.

Needs the `helm` binary: skipped without it, unless REQUIRE_HELM=1 (.ci/helm.sh), which makes a
missing helm a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "loyalty"
VALUES = sorted((CHART / "ci").glob("*.yaml"))
NAMESPACE = "loyalty-ci"
KUBE_VERSION = "1.30.0"  # a go-installed helm assumes v1.20 without a cluster
SOURCES = ("ingest", "processors", "sinks", "schemas", "plumbing", "deploy")
RUNTIME_PROCESSORS = ("loyalty", "audiences", "journeys", "router")  # run by processors.runtime


def _helm() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    gobin = Path(os.environ.get("GOPATH") or Path.home() / "go") / "bin" / "helm"
    return str(gobin) if gobin.exists() else None


HELM = _helm()
if HELM is None:
    if os.environ.get("REQUIRE_HELM") == "1":
        pytest.fail("REQUIRE_HELM=1 but no helm binary on PATH or in $GOPATH/bin", pytrace=False)
    pytest.skip(
        "helm is not installed (.ci/helm.sh installs it: go install helm.sh/helm/v3/cmd/helm@v3.22.0)",
        allow_module_level=True,
    )


def render(*values: Path) -> subprocess.CompletedProcess[str]:
    cmd = [HELM, "template", "ci", str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for path in values:
        cmd += ["-f", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=VALUES, ids=[v.stem for v in VALUES])
def rendered(request: pytest.FixtureRequest) -> tuple[dict, list[dict], str]:
    """(values as given, manifests, the raw rendered text) for one CI values file."""
    out = render(request.param)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    values = yaml.safe_load(request.param.read_text()) or {}
    return values, docs, out.stdout


def test_there_are_values_files() -> None:
    assert {"defaults", "scaled", "existing-secret"} <= {v.stem for v in VALUES}


# ---------------------------------------------------------------- what the code reads and serves


def _python_sources() -> Iterator[tuple[Path, str]]:
    for top in SOURCES:
        for path in (ROOT / top).rglob("*.py"):
            yield path, path.read_text()


ENV_READ = re.compile(r"""(?:environ\.get|environ\[|getenv|\b_?env)\(?\s*["']([A-Z][A-Z0-9_]*)["']""")


def env_names_read() -> set[str]:
    """Every environment variable name the services' code reads (os.environ / Settings._env /
    IngestConfig's env(...))."""
    return {m for _, text in _python_sources() for m in ENV_READ.findall(text)}


def health_paths_served() -> dict[str, set[str]]:
    """Paths each kind of health server answers: HealthServer (processors, delivery, sink) and
    ingest's FastAPI health router."""
    runtime = (ROOT / "plumbing/observability.py").read_text()
    ingest = (ROOT / "ingest/routers/health.py").read_text()
    return {
        "healthserver": set(re.findall(r'self\.path\.startswith\("(/[a-z]+)"\)', runtime)),
        "ingest": set(re.findall(r'@router\.get\("(/[a-z]+)"', ingest)),
    }


def test_code_scans_find_something() -> None:
    """Guards the regexes above: if the code moves, these scans must not silently go empty."""
    names = env_names_read()
    assert {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "TOPIC_PREFIX", "METRICS_PORT"} <= names
    assert {"INGEST_API_KEYS", "INSTANCE_ID", "STATE_DIR", "METRICS_HOST"} <= names
    served = health_paths_served()
    assert "/healthz" in served["healthserver"] and "/healthz" in served["ingest"]


# ---------------------------------------------------------------- helpers over manifests


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def component(doc: dict) -> str:
    return doc["metadata"]["labels"]["app.kubernetes.io/component"]


def containers(doc: dict) -> list[dict]:
    spec = doc["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def literal_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def served_port(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """(port, server kind) the service started with these args and env listens on, worked out
    by the service's own argument parser."""
    with mock.patch.dict(os.environ, env, clear=True):
        if args[0] == "ingest":
            from ingest.service import parse_args

            opts = parse_args(args[1:])
            assert opts.host == "0.0.0.0", "ingest must listen on every address to be probed"
            return opts.port, "ingest"
        if args[0] == "sink":
            from sinks.service import parse

            opts = parse(args[1:])
            assert "--no-migrate" in args, "the sink must not migrate: the hook Job does, once"
            return opts.metrics_port, "healthserver"
        assert args[0] == "process", args
        name = args[1]
        if name == "delivery":
            from processors.delivery.service import parse_args as delivery_args

            return delivery_args(args[2:]).metrics_port, "healthserver"
        assert name in RUNTIME_PROCESSORS, name
        from processors.runtime.service import parse_options

        opts = parse_options(args[2:], name)
        return opts.metrics_port, "healthserver"


# ---------------------------------------------------------------- invariants


def test_every_service_is_there(rendered: tuple[dict, list[dict], str]) -> None:
    values, docs, _ = rendered
    kinds = {component(d): d["kind"] for d in workloads(docs)}
    expected = {"ingest": "Deployment", "delivery": "Deployment", "sink": "Deployment"}
    expected |= {"loyalty": "StatefulSet", "audiences": "StatefulSet", "journeys": "StatefulSet"}
    if values.get("router", {}).get("enabled"):
        expected["router"] = "Deployment"
    assert kinds == expected


def test_probes_hit_the_port_and_paths_the_service_serves(rendered: tuple[dict, list[dict], str]) -> None:
    _, docs, _ = rendered
    served = health_paths_served()
    for doc in workloads(docs):
        for c in containers(doc):
            env = literal_env(c)
            port, kind = served_port(c["args"], env)
            assert port, f"{component(doc)}: no health server port (0 disables or picks a random one)"
            if kind == "healthserver":
                assert env.get("METRICS_HOST") == "0.0.0.0", f"{component(doc)}: METRICS_HOST must be 0.0.0.0"
            named = {p["name"]: p["containerPort"] for p in c["ports"]}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                get = c[probe]["httpGet"]
                target = named.get(get["port"], get["port"])
                assert target == port, f"{component(doc)} {probe}: port {get['port']} != served {port}"
                assert get["path"] in served[kind], f"{component(doc)} {probe}: {get['path']} not served"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            if "/readyz" in served[kind]:
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", (
                    f"{component(doc)}: the service serves /readyz now; set probes.readinessPath: /readyz"
                )


def test_env_names_are_read_by_the_code(rendered: tuple[dict, list[dict], str]) -> None:
    _, docs, _ = rendered
    known = env_names_read()
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        for c in containers(doc):
            unknown = {e["name"] for e in c.get("env", [])} - known
            where = f"{doc['kind']} {doc['metadata']['name']}"
            assert not unknown, f"{where}: env the code never reads: {unknown}"


def test_secret_references_resolve(rendered: tuple[dict, list[dict], str]) -> None:
    values, docs, _ = rendered
    secrets = {d["metadata"]["name"]: set(d.get("data") or {}) for d in docs if d["kind"] == "Secret"}
    existing = values.get("secrets", {}).get("existingSecret")
    for doc in docs:
        if doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        for c in containers(doc):
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if not ref:
                    continue
                if ref["name"] == existing:
                    assert ref["key"] in ("DATABASE_URL", "INGEST_API_KEYS")
                else:
                    assert ref["key"] in secrets.get(ref["name"], set()), f"{e['name']}: {ref} not rendered"


def test_delivery_can_resolve_secret_references(rendered: tuple[dict, list[dict], str]) -> None:
    """Webhook secrets given as ${NAME} are resolved by delivery when it signs, so its pods
    get the webhook-secrets Secret as environment (as the config-apply Job does)."""
    values, docs, _ = rendered
    (delivery,) = [d for d in workloads(docs) if component(d) == "delivery"]
    refs = {f["secretRef"]["name"] for c in containers(delivery) for f in c.get("envFrom", [])}
    secrets = values.get("secrets", {})
    available = {d["metadata"]["name"] for d in docs if d["kind"] == "Secret"}
    available |= {secrets["existingWebhookSecret"]} if secrets.get("existingWebhookSecret") else set()
    assert refs <= available  # never a Secret that does not exist
    if values.get("program", {}).get("apply", True) or secrets.get("existingWebhookSecret"):
        assert refs


def _partitions(values: dict) -> int:
    return int(values.get("partitions", 6))


def test_no_consumer_outnumbers_the_partitions(rendered: tuple[dict, list[dict], str]) -> None:
    values, docs, _ = rendered
    partitions = _partitions(values)
    for doc in workloads(docs):
        for c in containers(doc):
            assert literal_env(c)["TOPIC_PARTITIONS"] == str(partitions)
        if component(doc) != "ingest":
            assert doc["spec"].get("replicas", 1) <= partitions, component(doc)
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    for obj in scaled:
        assert 1 <= obj["spec"]["minReplicaCount"] <= obj["spec"]["maxReplicaCount"] <= partitions
        target = obj["spec"]["scaleTargetRef"]
        owner = next(d for d in workloads(docs) if d["metadata"]["name"] == target["name"])
        assert owner["kind"] == target["kind"]
        assert "replicas" not in owner["spec"], f"{target['name']}: KEDA owns replicas, not the chart"


def test_keda_triggers_watch_the_real_consumer_groups(rendered: tuple[dict, list[dict], str]) -> None:
    from schemas.topics import TOPICS

    values, docs, _ = rendered
    prefix = values.get("topicPrefix", "")
    for obj in (d for d in docs if d["kind"] == "ScaledObject"):
        name = component(obj)
        for trigger in obj["spec"]["triggers"]:
            meta = trigger["metadata"]
            if name == "sink":
                assert trigger["type"] == "prometheus"
                assert 'consumer_lag{consumer="sink"' in meta["query"], meta["query"]
                continue
            assert trigger["type"] == "kafka"
            assert meta["consumerGroup"] == prefix + name  # runner.py / delivery: TOPIC_PREFIX + name
            assert meta["allowIdleConsumers"] == "false"
            if "topic" in meta:
                assert meta["topic"].startswith(prefix)
                assert meta["topic"][len(prefix) :] in TOPICS, meta["topic"]
                if name in RUNTIME_PROCESSORS:
                    assert meta["topic"][len(prefix) :] in processor_inputs(name)


def processor_inputs(name: str) -> list[str]:
    import importlib

    module = importlib.import_module(f"processors.{name}.processor")
    return list(module.build().inputs)


def test_stateful_processors_have_state_and_static_membership(rendered: tuple[dict, list[dict], str]) -> None:
    _, docs, _ = rendered
    for doc in (d for d in workloads(docs) if d["kind"] == "StatefulSet"):
        (c,) = containers(doc)
        assert "--static-membership" in c["args"]
        env = {e["name"]: e for e in c["env"]}
        assert env["INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        claims = {t["metadata"]["name"] for t in doc["spec"]["volumeClaimTemplates"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert mounts.get(env["STATE_DIR"]["value"]) in claims, "STATE_DIR must be on the PVC"


def test_restore_workers_follow_the_values(rendered: tuple[dict, list[dict], str]) -> None:
    """Each stateful processor gets RESTORE_WORKERS from its values (1 unless raised: a worker
    needs a CPU and memory the default limits do not leave), not the node's CPU count."""
    values, docs, _ = rendered
    for doc in (d for d in workloads(docs) if d["kind"] == "StatefulSet"):
        (c,) = containers(doc)
        wanted = (values.get(component(doc)) or {}).get("restoreWorkers", 1)
        assert literal_env(c)["RESTORE_WORKERS"] == str(wanted)


def test_hooks_migrate_and_apply_the_program(rendered: tuple[dict, list[dict], str]) -> None:
    values, docs, _ = rendered
    jobs = {component(d): d for d in docs if d["kind"] == "Job"}
    for job in jobs.values():
        hooks = job["metadata"]["annotations"]["helm.sh/hook"].split(",")
        assert set(hooks) == {"pre-install", "pre-upgrade"}
    if values.get("jobs", {}).get("migrate", True):
        (c,) = containers(jobs["migrate"])
        assert c["command"] == ["python", "-m", "sinks.migrate"]
    if values.get("program", {}).get("apply", True):
        (c,) = containers(jobs["config-apply"])
        assert c["command"] == ["loyalty", "config", "apply", "/config/program.yaml"]
        spec = jobs["config-apply"]["spec"]["template"]["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "program")
        maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        name = volume["configMap"]["name"]
        if not values.get("program", {}).get("existingConfigMap"):
            assert "program.yaml" in maps[name]["data"]
            from deploy.cli import load_program

            program = yaml.safe_load(maps[name]["data"]["program.yaml"])
            env = {n: "x" for n in values.get("secrets", {}).get("webhookSecrets", {})}
            path = Path(os.environ.get("TMPDIR", "/tmp")) / f"helm-program-{os.getpid()}.yaml"
            path.write_text(yaml.safe_dump(program))
            try:
                load_program(path, env)  # valid, and every ${NAME} has a secret
            finally:
                path.unlink()


def _secret_values(values: dict) -> list[str]:
    s = values.get("secrets", {})
    found = [s.get("databaseUrl", ""), s.get("apiKeys", "")]
    found += [item.partition(":")[0] for item in s.get("apiKeys", "").split(",")]
    found += [str(v) for v in (s.get("webhookSecrets") or {}).values()]
    found += [re.sub(r"^.*://[^:]*:([^@]*)@.*$", r"\1", s.get("databaseUrl", ""))]  # the password
    return [v for v in found if len(v) >= 6]


def test_no_secret_is_written_in_clear(rendered: tuple[dict, list[dict], str]) -> None:
    values, docs, _ = rendered
    for doc in docs:
        if doc["kind"] == "Secret":
            assert "stringData" not in doc
            continue
        text = yaml.safe_dump(doc)
        for secret in _secret_values(values):
            assert secret not in text, f"{doc['kind']} {doc['metadata']['name']} holds a secret in clear"


# ---------------------------------------------------------------- what the chart refuses


DEFAULTS = CHART / "ci" / "defaults.yaml"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"loyalty": {"replicas": 7}}, "loyalty.replicas=7 exceeds partitions=6"),
        ({"sink": {"replicas": 3}, "partitions": 2}, "sink.replicas=3 exceeds partitions=2"),
        (
            {"delivery": {"autoscaling": {"enabled": True, "maxReplicaCount": 8}}},
            "delivery.autoscaling.maxReplicaCount=8 exceeds partitions=6",
        ),
        (
            {"router": {"enabled": True, "autoscaling": {"enabled": True, "maxReplicaCount": 9}}},
            "router.autoscaling.maxReplicaCount=9 exceeds partitions=6",
        ),
        ({"journeys": {"autoscaling": {"enabled": True, "minReplicaCount": 0}}}, "at least 1"),
        ({"secrets": {"apiKeys": ""}}, "set secrets.apiKeys"),
        ({"program": {"content": "webhooks:\n  - id: a\n    secret: whsec_plain\n"}}, "secret in clear"),
        ({"program": {"content": "destinations: [{id: d, secret: plain}]\n"}}, "secret in clear"),
        ({"secrets": {"webhookSecrets": {"not-a-name": "x"}}}, "is not an environment variable name"),
    ],
)
def test_the_chart_refuses(override: dict, message: str, tmp_path: Path) -> None:
    extra = tmp_path / "override.yaml"
    extra.write_text(yaml.safe_dump(override))
    out = render(DEFAULTS, extra)
    assert out.returncode != 0, f"rendered despite {override}"
    assert message in out.stderr, out.stderr
