"""The Kubernetes deployment, checked offline: no cluster and no helm binary.

Helm's own Go SDK (helm-python-sdk) renders deploy/helm/datapilot for its default values and for
deploy/helm/values-production.yaml, enforcing values.schema.json as `helm install` does. Every built-in
object is validated in strict mode by kubernetes-validate against the Kubernetes OpenAPI schemas of the
oldest version the chart supports and of the newest one it ships; the custom resources (KubeRay's
RayCluster, the Prometheus Operator's ServiceMonitor) against the small schemas in tests/data/k8s_crds/,
and the pod templates inside a RayCluster again as Kubernetes PodTemplates. Then what the objects say:
secrets only by secretKeyRef, probes on /health, resources and security contexts everywhere, the stores
the production values name, the settings file and environment accepted by DataPilot's own Settings, and
deploy/k8s/datapilot.yaml equal to a fresh render. With the Ray runtime each API pod is a Ray node (the
ray-node sidecar: `ray start` without CPUs, its Ray ports pinned and declared, /tmp/ray and the process
namespace shared with the api container, whose wrapper waits for the raylet and runs `--ray-address auto`),
and Ray token authentication reaches every Ray container from a Secret.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import helm_python
import jsonschema
import kubernetes_validate
import pytest
import yaml

from datapilot.core.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "datapilot"
PRODUCTION = ROOT / "deploy" / "helm" / "values-production.yaml"
CRD_SCHEMAS = Path(__file__).resolve().parent / "data" / "k8s_crds"

# The chart's floor (Chart.yaml kubeVersion >=1.25) and the newest Kubernetes kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.25.0", "1.37.0"]
CUSTOM_KINDS = {
    ("ray.io/v1", "RayCluster"): "raycluster-ray-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
}
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_KEY", re.IGNORECASE)
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("datapilot_deploy_render", ROOT / "deploy" / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render()

Doc = dict[str, Any]


def objects(values_files: tuple[Path, ...] = (), values: dict[str, Any] | None = None) -> list[Doc]:
    docs = []
    for path, text in render.documents(render.render(values_files, values)):
        obj = yaml.safe_load(text)
        assert isinstance(obj, dict), f"{path}: a document that is not a mapping"
        docs.append(obj)
    return docs


@pytest.fixture(scope="module")
def default_objects() -> list[Doc]:
    return objects()


@pytest.fixture(scope="module")
def production_objects() -> list[Doc]:
    return objects((PRODUCTION,))


@pytest.fixture(params=["default", "production"])
def rendered(request: pytest.FixtureRequest) -> list[Doc]:
    return request.getfixturevalue(f"{request.param}_objects")


def one(docs: list[Doc], kind: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """(where, pod spec) of every pod the objects create: Deployments and the RayCluster's node groups."""
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "Deployment":
            yield name, d["spec"]["template"]["spec"]
        elif d["kind"] == "RayCluster":
            yield f"{name} head", d["spec"]["headGroupSpec"]["template"]["spec"]
            for group in d["spec"].get("workerGroupSpecs", []):
                yield f"{name} {group['groupName']}", group["template"]["spec"]


def containers(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for where, spec in pod_specs(docs):
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            yield f"{where} {c['name']}", c


def api_container(docs: list[Doc]) -> Doc:
    (container,) = [c for c in one(docs, "Deployment")["spec"]["template"]["spec"]["containers"] if c["name"] == "api"]
    return container


def ray_node_container(docs: list[Doc]) -> Doc:
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "ray-node"]
    return container


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def flags_of(args: list[str]) -> dict[str, str]:
    """`--name=value` arguments as {name: value}; a bare `--name` as {name: ""}."""
    out = {}
    for arg in args:
        assert arg.startswith("--"), arg
        name, _, value = arg[2:].partition("=")
        assert name not in out, f"{name} given twice"
        out[name] = value
    return out


# The `ray start` flags that pin the Ray node's ports, and the containerPort names the chart declares them by.
PINNED_PORTS = {
    "node-manager-port": "ray-node-mgr",
    "object-manager-port": "ray-object-mgr",
    "dashboard-agent-grpc-port": "ray-agent-grpc",
    "dashboard-agent-listen-port": "ray-agent-http",
    "runtime-env-agent-port": "ray-runtime-env",
    "metrics-export-port": "ray-metrics",
}


# --- the chart and its documents --------------------------------------------------------------------------


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


@pytest.mark.parametrize("values_files", [(), (PRODUCTION,)], ids=["default", "production"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_helm_lint_is_clean(values_files: tuple[Path, ...], version: str) -> None:
    """`helm lint --strict`: nothing above an information ("icon is recommended")."""
    report = helm_python.lint(
        CHART, render.load_values(values_files), strict=True, namespace="datapilot", kube_version=f"v{version}"
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_document_parses_and_names_itself(rendered: list[Doc]) -> None:
    seen = set()
    for d in rendered:
        assert d.get("apiVersion") and d.get("kind"), d
        assert d.get("metadata", {}).get("name"), f"{d['kind']} without metadata.name"
        assert d["metadata"].get("namespace") == "datapilot", f"{d['kind']}/{d['metadata']['name']}"
        key = (d["kind"], d["metadata"]["name"])
        assert key not in seen, f"two objects {key}"
        seen.add(key)


def test_objects_rendered(default_objects: list[Doc], production_objects: list[Doc]) -> None:
    kinds = sorted(d["kind"] for d in default_objects)
    assert kinds == ["ConfigMap", "Deployment", "RayCluster", "Service", "ServiceAccount"]
    kinds = sorted(d["kind"] for d in production_objects)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Ingress",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "RayCluster",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


# --- schema validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_builtin_objects_validate_strictly(rendered: list[Doc], version: str) -> None:
    failures = []
    for d in rendered:
        if (d["apiVersion"], d["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.absolute_path)
            failures.append(f"{d['kind']}/{d['metadata']['name']} at {path}: {exc.message}")
    assert not failures, "\n".join(failures)


def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((CRD_SCHEMAS / CUSTOM_KINDS[(api_version, kind)]).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _crd_errors(obj: Doc) -> list[str]:
    validator = _crd_validator(obj["apiVersion"], obj["kind"])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def test_custom_resources_match_their_schemas(rendered: list[Doc]) -> None:
    custom = [d for d in rendered if (d["apiVersion"], d["kind"]) in CUSTOM_KINDS]
    assert custom
    for d in custom:
        assert not _crd_errors(d), _crd_errors(d)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_ray_pod_templates_validate_strictly(rendered: list[Doc], version: str) -> None:
    ray = one(rendered, "RayCluster")
    templates = [ray["spec"]["headGroupSpec"]["template"]]
    templates += [group["template"] for group in ray["spec"]["workerGroupSpecs"]]
    for template in templates:
        pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
        kubernetes_validate.validate(pod_template, version, strict=True)


def test_validators_reject_mistakes(default_objects: list[Doc]) -> None:
    """The checks above would catch a broken object: strict mode refuses unknown fields, the CRD schemas
    wrong types and missing fields."""
    deployment = copy.deepcopy(one(default_objects, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/health"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)

    ray = one(default_objects, "RayCluster")
    broken = copy.deepcopy(ray)
    broken["spec"]["workerGroupSpecs"][0]["replicas"] = "1"
    assert any("replicas" in e for e in _crd_errors(broken))
    broken = copy.deepcopy(ray)
    broken["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert any("num-cpus" in e for e in _crd_errors(broken))
    broken = copy.deepcopy(ray)
    del broken["spec"]["workerGroupSpecs"][0]["groupName"]
    assert any("groupName" in e for e in _crd_errors(broken))
    broken = copy.deepcopy(ray)
    broken["spec"]["headGroupSpec"]["rayStartparams"] = broken["spec"]["headGroupSpec"].pop("rayStartParams")
    assert _crd_errors(broken)

    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"path": "/metrics", "interval": "30s"}]},
    }
    assert _crd_errors(monitor)  # an endpoint names neither port nor targetPort
    monitor["spec"]["endpoints"][0].update(port="http", interval="half a minute")
    assert any("interval" in e for e in _crd_errors(monitor))


# --- what the objects say ---------------------------------------------------------------------------------


def test_no_secret_in_a_config_map_or_an_env_value(rendered: list[Doc]) -> None:
    for cm in (d for d in rendered if d["kind"] == "ConfigMap"):
        for key, text in cm["data"].items():
            assert not re.search(r"(?i)password|passwd|secret|token|api_key", key)
            if key.endswith(".toml"):
                _assert_no_secret_keys(tomllib.loads(text), key)
            assert not re.search(r"://[^/\s:@]+:[^@\s]+@", text), f"{key} holds a URL with a password"
    for where, c in containers(rendered):
        defined: dict[str, Doc] = {}
        for e in c.get("env", []):
            name = e["name"]
            if "value" in e:
                value = e["value"]
                refs = VAR_REF.findall(value)
                # $(VAR) is expanded only from variables defined before this one in the same container.
                assert all(r in defined for r in refs), f"{where} {name}: {refs} not defined before it"
                if SECRET_NAME.search(name):
                    assert refs and all("secretKeyRef" in defined[r].get("valueFrom", {}) for r in refs), (
                        f"{where} {name} carries a literal value"
                    )
                if "://" in value:
                    password = urlsplit(value).password
                    assert password is None or (
                        VAR_REF.fullmatch(password) and "secretKeyRef" in defined[password[2:-1]]["valueFrom"]
                    ), f"{where} {name}: a password in the URL"
            else:
                assert set(e["valueFrom"]) <= {"secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"}
                if SECRET_NAME.search(name):
                    assert "secretKeyRef" in e["valueFrom"], f"{where} {name} is not read from a Secret"
            defined[name] = e


def _assert_no_secret_keys(table: dict[str, Any], where: str) -> None:
    for key, value in table.items():
        assert not re.search(r"(?i)password|passwd|secret|token|api_keys?$", key), f"{where}: {key}"
        if isinstance(value, dict):
            _assert_no_secret_keys(value, where)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _assert_no_secret_keys(item, where)


def test_secrets_come_from_secret_key_refs(production_objects: list[Doc]) -> None:
    env = env_of(api_container(production_objects))

    def ref(name: str) -> tuple[str, str]:
        r = env[name]["valueFrom"]["secretKeyRef"]
        return r["name"], r["key"]

    assert ref("K8S_SECRET_DB_PASSWORD") == ("datapilot-postgresql", "password")
    assert ref("DATAPILOT_CACHE__STORE__MILVUS_TOKEN") == ("datapilot-milvus", "token")
    assert ref("DATAPILOT_KNOWLEDGE__MILVUS_TOKEN") == ("datapilot-milvus", "token")
    assert ref("K8S_SECRET_API_KEY_0") == ("datapilot-api-keys", "api-key")
    assert json.loads(env["DATAPILOT_SERVER__API_KEYS"]["value"]) == ["$(K8S_SECRET_API_KEY_0)"]
    # The values schema has no place for a password: it must be a Secret.
    with pytest.raises(helm_python.HelmValuesError, match="password"):
        render.render(values={"database": {"password": "hunter2"}})


def test_probes_hit_health(rendered: list[Doc]) -> None:
    c = api_container(rendered)
    (port,) = [p for p in c["ports"] if p["name"] == "http"]
    assert port["containerPort"] == 5670
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe


def test_resources_and_security_everywhere(rendered: list[Doc]) -> None:
    for where, spec in pod_specs(rendered):
        ctx = spec["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] > 0, where
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["enableServiceLinks"] is False, where
    for where, c in containers(rendered):
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
        assert "memory" in c["resources"]["limits"], where
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["capabilities"]["drop"] == ["ALL"], where


def test_api_server_and_ray_cluster_fit_together(default_objects: list[Doc]) -> None:
    deployment = one(default_objects, "Deployment")
    ray = one(default_objects, "RayCluster")
    # KubeRay names the head's Service <cluster>-head-svc; 6379 is the GCS the API pod's Ray node joins.
    gcs = f"{ray['metadata']['name']}-head-svc:6379"
    assert gcs == "datapilot-ray-head-svc:6379"
    # The API server is a normal Ray driver on its own pod's Ray node: no Ray Client (ray://).
    c = api_container(default_objects)
    assert c["args"] == ["start", "--runtime", "ray", "--ray-address", "auto", "--host", "0.0.0.0", "--port", "5670"]
    node = ray_node_container(default_objects)
    assert node["command"] == ["ray", "start"]
    flags = flags_of(node["args"])
    assert flags["address"] == gcs
    assert flags["num-cpus"] == "0" and flags["num-gpus"] == "0"
    assert json.loads(flags["resources"]) == {"datapilot_api": 1}
    assert flags["block"] == "" and flags["disable-usage-stats"] == ""
    assert flags["temp-dir"] == "/tmp/ray"
    # $(POD_IP) is expanded by the kubelet from the downward API.
    assert flags["node-ip-address"] == "$(POD_IP)"
    assert env_of(node)["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    head = ray["spec"]["headGroupSpec"]
    head_ports = head["template"]["spec"]["containers"][0]["ports"]
    assert {"name": "gcs-server", "containerPort": 6379, "protocol": "TCP"} in head_ports
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["rayStartParams"]["num-cpus"] == "0"
    (workers,) = ray["spec"]["workerGroupSpecs"]
    assert workers["replicas"] == 1
    # No Ray Client anywhere: neither its port (10001) nor a ray:// address.
    assert all(p["containerPort"] != 10001 for _, c in containers(default_objects) for p in c.get("ports", []))
    assert "ray://" not in yaml.safe_dump_all(default_objects)
    # One image everywhere: Ray, Python and DataPilot must match on every node, the API pods' included.
    images = {c["image"] for _, c in containers(default_objects)}
    assert images == {"datapilot:0.1.0"}
    (wait,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert wait["name"] == "wait-for-ray"
    assert f'"{gcs}"' in wait["command"][-1]


def test_api_pod_shares_the_ray_session_with_its_ray_node(rendered: list[Doc]) -> None:
    """ray.init(address="auto") in the api container reads /tmp/ray (the address, session_latest, the raylet's
    socket) and looks for a local raylet process: both containers mount one emptyDir at /tmp/ray and the pod
    shares its process namespace. Everything Ray writes is a volume: the root filesystem stays read-only."""
    spec = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert spec["shareProcessNamespace"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["ray-session"] == {"name": "ray-session", "emptyDir": {}}
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    for c in (api_container(rendered), ray_node_container(rendered)):
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/tmp/ray"]["name"] == "ray-session", c["name"]
        assert mounts["/dev/shm"]["name"] == "shm", c["name"]
        # Writable places: /tmp, /tmp/ray, HOME (~/.ray) and DATAPILOT_HOME; nothing else is.
        home = env_of(c)["HOME"]["value"]
        for path in ("/tmp", "/tmp/ray", home, env_of(c)["DATAPILOT_HOME"]["value"]):
            assert path in mounts and not mounts[path].get("readOnly"), f"{c['name']}: {path}"
            assert "emptyDir" in volumes[mounts[path]["name"]] or mounts[path]["name"] == "data"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_ray_node_ports_are_pinned_and_declared(rendered: list[Doc]) -> None:
    """Every port the API pod's Ray node listens on is fixed by a `ray start` flag and declared as a
    containerPort, so a NetworkPolicy can open exactly these to the Ray pods."""
    node = ray_node_container(rendered)
    flags = flags_of(node["args"])
    declared = {p["name"]: p["containerPort"] for p in node["ports"]}
    assert all(p["protocol"] == "TCP" for p in node["ports"])
    for flag, name in PINNED_PORTS.items():
        assert declared[name] == int(flags[flag]), flag
    low, high = int(flags["min-worker-port"]), int(flags["max-worker-port"])
    assert 0 < high - low < 64
    workers = {name: port for name, port in declared.items() if name not in PINNED_PORTS.values()}
    assert sorted(workers.values()) == list(range(low, high + 1))
    assert all(name == f"worker-{port}" for name, port in workers.items())
    # Ports and their names are unique in the pod (the api container's included), names are IANA_SVC_NAMEs.
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    ports = [p for c in pod["containers"] for p in c.get("ports", [])]
    assert len({p["containerPort"] for p in ports}) == len(ports)
    assert len({p["name"] for p in ports}) == len(ports)
    assert all(re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?", p["name"]) for p in ports)
    # The node's probes ask the dashboard agent (on its pinned port) whether the raylet is alive.
    for probe in ("readinessProbe", "livenessProbe"):
        assert node[probe]["httpGet"] == {"path": "/api/local_raylet_healthz", "port": "ray-agent-http"}


def test_ray_node_flags_exist_in_ray_start() -> None:
    """Every flag the chart passes to `ray start` is an option of the installed Ray's `ray start`."""
    scripts = pytest.importorskip("ray.scripts.scripts")
    options = {opt[2:] for param in scripts.start.params for opt in param.opts if opt.startswith("--")}
    flags = flags_of(ray_node_container(objects())["args"])
    assert set(flags) <= options, set(flags) - options


def _short_tmp() -> Path:
    # A Unix socket path must stay under 108 bytes: a short directory, not pytest's tmp_path.
    return Path(tempfile.mkdtemp(prefix="dp-", dir="/tmp"))


@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils timeout")
def test_api_container_waits_for_the_raylet() -> None:
    """The api container's wrapper: bounded wait for the raylet's socket under /tmp/ray, a message naming
    the ray-node container when it does not come, else `exec datapilot` with the container's args. Run here
    with /tmp/ray moved to a scratch directory and `datapilot` replaced by `echo`."""
    c = api_container(objects(values={"api": {"rayNode": {"startTimeoutSeconds": 2}}}))
    shell, dash_c, script, argv0 = c["command"]
    assert (shell, dash_c, argv0) == ("/bin/sh", "-c", "datapilot")
    assert "timeout 2 " in script and 'exec datapilot "$@"' in script
    # The kubelet expands $(NAME) in command and args: the script must not contain any.
    assert "$(" not in script
    root = _short_tmp()
    try:
        script = script.replace("/tmp/ray", str(root)).replace("exec datapilot", "exec echo")
        run = [shutil.which("sh") or "/bin/sh", "-c", script, argv0, *c["args"]]
        missing = subprocess.run(run, capture_output=True, text=True, timeout=30)
        assert missing.returncode == 1
        assert "did not start within 2 s" in missing.stderr and "-c ray-node" in missing.stderr
        session = root / "session_2026-01-01_00-00-00_000000_1"
        (session / "sockets").mkdir(parents=True)
        (root / "session_latest").symlink_to(session)
        (root / "ray_current_cluster").write_text("datapilot-ray-head-svc:6379")
        with socket.socket(socket.AF_UNIX) as raylet:
            raylet.bind(str(session / "sockets" / "raylet"))
            ready = subprocess.run(run, capture_output=True, text=True, timeout=30)
        assert ready.returncode == 0, ready.stderr
        assert ready.stdout.split() == c["args"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_ray_token_auth_reaches_every_ray_container(production_objects: list[Doc]) -> None:
    """With ray.auth on, RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (from the Secret, never a value) are set in
    the head, the workers (KubeRay's wait-gcs-ready copies the worker's environment), the API pods' ray-node
    and the api container, the Ray driver."""
    seen = []
    for where, c in containers(production_objects):
        if c["name"] == "wait-for-ray":  # a TCP check of the GCS port: no Ray call, no token
            assert not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} & set(env_of(c)), where
            continue
        env = env_of(c)
        assert env["RAY_AUTH_MODE"]["value"] == "token", where
        assert env["RAY_AUTH_TOKEN"]["valueFrom"] == {
            "secretKeyRef": {"name": "datapilot-ray-token", "key": "token"}
        }, where
        seen.append(c["name"])
    assert sorted(seen) == ["api", "ray-head", "ray-node", "ray-worker"]


def test_ray_token_auth_is_off_by_default(default_objects: list[Doc]) -> None:
    for where, c in containers(default_objects):
        assert not [n for n in env_of(c) if n.startswith("RAY_AUTH")], where


def test_ray_token_auth_with_the_autoscaler() -> None:
    auth = {"enabled": True, "existingSecret": "ray-token", "key": "secret"}
    docs = objects(values={"ray": {"auth": auth, "autoscaling": True}})
    ray = one(docs, "RayCluster")
    assert not _crd_errors(ray)
    # KubeRay's autoscaler sidecar talks to the GCS: its environment comes from autoscalerOptions.env.
    env = {e["name"]: e for e in ray["spec"]["autoscalerOptions"]["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ray-token", "key": "secret"}
    for _, c in containers(docs):
        if c["name"] != "wait-for-ray":
            assert env_of(c)["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "secret"
    # Without auth, the chart leaves the autoscaler's options to KubeRay.
    assert "autoscalerOptions" not in one(objects(values={"ray": {"autoscaling": True}}), "RayCluster")["spec"]


def test_references_between_objects_resolve(rendered: list[Doc]) -> None:
    by_kind: dict[str, dict[str, Doc]] = {}
    for d in rendered:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    deployment = one(rendered, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = one(rendered, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http"}
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for where, spec in pod_specs(rendered):
        assert spec["serviceAccountName"] in by_kind["ServiceAccount"], where
        for volume in spec["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in by_kind["ConfigMap"], where
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"], where
    for monitor in by_kind.get("ServiceMonitor", {}).values():
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
        assert all(e["port"] in port_names for e in monitor["spec"]["endpoints"])
    for ingress in by_kind.get("Ingress", {}).values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] in port_names


def test_production_values(production_objects: list[Doc]) -> None:
    env = env_of(api_container(production_objects))
    url = (
        "postgresql+psycopg://datapilot:$(K8S_SECRET_DB_PASSWORD)@postgresql.databases.svc.cluster.local:5432/datapilot"
    )
    assert env["DATAPILOT_CACHE__STORE__SQL_URL"]["value"] == url
    assert env["DATAPILOT_DATA__METADATA_URL"]["value"] == url
    milvus = "http://milvus.milvus.svc.cluster.local:19530"
    assert env["DATAPILOT_CACHE__STORE__VECTOR"]["value"] == "milvus"
    assert env["DATAPILOT_CACHE__STORE__MILVUS_URI"]["value"] == milvus
    assert env["DATAPILOT_KNOWLEDGE__VECTOR"]["value"] == "milvus"
    assert env["DATAPILOT_KNOWLEDGE__MILVUS_URI"]["value"] == milvus
    assert one(production_objects, "Deployment")["spec"]["replicas"] == 3
    assert one(production_objects, "RayCluster")["spec"]["workerGroupSpecs"][0]["replicas"] == 4
    assert one(production_objects, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]
    assert one(production_objects, "ServiceMonitor")["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert one(production_objects, "Ingress")["spec"]["tls"][0]["secretName"] == "datapilot-tls"


def _settings_from_pod(docs: list[Doc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What DataPilot's own Settings make of the rendered datapilot.toml and the API container's environment,
    with every secretKeyRef filled in by a stand-in value and $(VAR) expanded as the kubelet does."""
    toml = one(docs, "ConfigMap")["data"]["datapilot.toml"]
    (tmp_path / "datapilot.toml").write_text(toml, encoding="utf-8")
    for name in [n for n in os.environ if n.startswith("DATAPILOT_")]:
        monkeypatch.delenv(name)
    values: dict[str, str] = {}
    for e in api_container(docs)["env"]:
        if "fieldRef" in e.get("valueFrom", {}):
            values[e["name"]] = {"metadata.name": "datapilot-api-7d9c-x2k4p", "status.podIP": "10.0.0.7"}[
                e["valueFrom"]["fieldRef"]["fieldPath"]
            ]
        elif "valueFrom" in e:
            ref = e["valueFrom"]["secretKeyRef"]
            values[e["name"]] = f"{ref['name']}.{ref['key']}"
        else:
            values[e["name"]] = VAR_REF.sub(lambda m: values[m.group(1)], e["value"])
    values["DATAPILOT_CONFIG"] = str(tmp_path / "datapilot.toml")
    values["DATAPILOT_HOME"] = str(tmp_path / "home")
    values["HOME"] = str(tmp_path)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_datapilot_reads_the_default_settings(
    default_objects: list[Doc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings_from_pod(default_objects, tmp_path, monkeypatch)
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 5670)
    assert settings.server.api_keys == []
    assert settings.cache.store.sql_url is None and settings.cache.store.vector == "faiss"
    assert settings.data.metadata_url is None
    assert settings.home == tmp_path / "home"
    # One fixed Ray namespace: every API replica prefixes its actors' names with an id of its own.
    assert settings.ray.namespace == "datapilot"


def test_datapilot_reads_the_production_settings(
    production_objects: list[Doc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings_from_pod(production_objects, tmp_path, monkeypatch)
    url = "postgresql+psycopg://datapilot:datapilot-postgresql.password@postgresql.databases.svc.cluster.local:5432/datapilot"
    assert settings.cache.store.sql_url == url
    assert settings.data.metadata_url == url
    assert settings.cache.enabled is True
    assert settings.cache.store.vector == "milvus" and settings.knowledge.vector == "milvus"
    assert (
        settings.cache.store.milvus_uri
        == settings.knowledge.milvus_uri
        == "http://milvus.milvus.svc.cluster.local:19530"
    )
    assert settings.cache.store.milvus_token is not None
    assert settings.cache.store.milvus_token.get_secret_value() == "datapilot-milvus.token"
    assert [k.get_secret_value() for k in settings.server.api_keys] == ["datapilot-api-keys.api-key"]


# --- other values -----------------------------------------------------------------------------------------


def test_mysql_and_url_from_a_secret() -> None:
    mysql = {"type": "mysql", "host": "mariadb.db", "existingSecret": "db", "query": "charset=utf8mb4"}
    env = env_of(api_container(objects(values={"database": mysql})))
    assert env["DATAPILOT_CACHE__STORE__SQL_URL"]["value"] == (
        "mysql+pymysql://datapilot:$(K8S_SECRET_DB_PASSWORD)@mariadb.db:3306/datapilot?charset=utf8mb4"
    )
    whole = {"type": "postgresql", "existingSecret": "db", "urlKey": "url"}
    env = env_of(api_container(objects(values={"database": whole})))
    assert "K8S_SECRET_DB_PASSWORD" not in env
    for name in ("DATAPILOT_CACHE__STORE__SQL_URL", "DATAPILOT_DATA__METADATA_URL"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "url"}


def test_local_runtime_has_no_ray_cluster() -> None:
    docs = objects(values={"runtime": "local"})
    assert "RayCluster" not in {d["kind"] for d in docs}
    assert api_container(docs)["args"] == ["start", "--host", "0.0.0.0", "--port", "5670"]
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in spec and "shareProcessNamespace" not in spec
    assert [c["name"] for c in spec["containers"]] == ["api"]
    assert "command" not in api_container(docs)  # the image's entrypoint, `datapilot`
    assert {v["name"] for v in spec["volumes"]} == {"config", "data", "tmp", "home"}


def test_external_ray_cluster() -> None:
    docs = objects(values={"ray": {"createCluster": False, "address": "ray-head.ray.svc:6379"}})
    assert "RayCluster" not in {d["kind"] for d in docs}
    assert api_container(docs)["args"][3:5] == ["--ray-address", "auto"]
    assert flags_of(ray_node_container(docs)["args"])["address"] == "ray-head.ray.svc:6379"
    (wait,) = one(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert '"ray-head.ray.svc:6379"' in wait["command"][-1]
    # Without the init container the pod's Ray node starts at once (and `ray start` retries the GCS).
    docs = objects(values={"api": {"waitForRaySeconds": 0}})
    assert "initContainers" not in one(docs, "Deployment")["spec"]["template"]["spec"]


def test_ray_autoscaling_leaves_the_head_to_kuberay() -> None:
    ray = one(objects(values={"ray": {"autoscaling": True}}), "RayCluster")
    assert ray["spec"]["enableInTreeAutoscaling"] is True
    assert not _crd_errors(ray)
    head = ray["spec"]["headGroupSpec"]["template"]["spec"]
    # The autoscaler sidecar runs with KubeRay's own ServiceAccount and needs its token.
    assert "serviceAccountName" not in head and "automountServiceAccountToken" not in head
    (workers,) = ray["spec"]["workerGroupSpecs"]
    assert workers["template"]["spec"]["automountServiceAccountToken"] is False


WORKER = {
    "name": "cpu",
    "replicas": 1,
    "minReplicas": 1,
    "maxReplicas": 2,
    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"api": {"replicaCount": -1}}, "at '/api/replicaCount': minimum: got -1, want 0"),
        ({"runtime": "kubernetes"}, "at '/runtime': value must be one of 'local', 'ray'"),
        ({"ray": {"workerGroups": [{**WORKER, "replicas": -2}]}}, "/ray/workerGroups/0/replicas': minimum"),
        ({"ray": {"workerGroups": [{**WORKER, "resources": {"requests": {"cpu": "1"}}}]}}, "memory"),
        ({"ray": {"head": {"rayStartParams": {"num-cpus": 0}}}}, "/ray/head/rayStartParams/num-cpus"),
        ({"database": {"type": "oracle"}}, "at '/database/type'"),
        ({"serviceMonitor": {"interval": "half a minute"}}, "/serviceMonitor/interval"),
        ({"api": {"replicas": 2}}, "additional properties 'replicas' not allowed"),
        # Ray Client cannot stream actor methods: the API pods join a GCS, never ray://.
        ({"ray": {"address": "ray://ray-head:10001"}}, "at '/ray/address'"),
        ({"ray": {"address": "auto"}}, "at '/ray/address'"),
        ({"api": {"rayNode": {"ports": {"nodeManager": 80}}}}, "/api/rayNode/ports/nodeManager"),
        ({"ray": {"auth": {"enabled": "yes"}}}, "/ray/auth/enabled"),
    ],
)
def test_bad_values_fail_the_schema(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as exc:
        render.render(values=values)
    assert "values don't meet the specifications of the schema" in str(exc.value)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"database": {"type": "postgresql", "host": "pg"}}, "set database.existingSecret"),
        ({"database": {"type": "mysql", "existingSecret": "db"}}, "set database.host"),
        ({"milvus": {"enabled": True}}, "set milvus.uri"),
        ({"api": {"replicaCount": 2}, "persistence": {"enabled": True}}, "no ReadWriteMany"),
        ({"config": {"extraToml": '[[models]]\nname = "x"\napi_key = "sk-1"'}}, "stored in a ConfigMap"),
        ({"ray": {"workerGroups": [{**WORKER, "minReplicas": 3}]}}, "maxReplicas (2) is below minReplicas (3)"),
        ({"ray": {"workerGroups": [{**WORKER, "replicas": 5}]}}, "replicas (5) must lie between minReplicas (1)"),
        ({"ray": {"createCluster": False}}, "set ray.address to the GCS address"),
        ({"ray": {"auth": {"enabled": True}}}, "set ray.auth.existingSecret"),
        ({"api": {"rayNode": {"ports": {"minWorker": 10010, "maxWorker": 10002}}}}, "maxWorker (10002) is below"),
        ({"api": {"rayNode": {"ports": {"maxWorker": 10200}}}}, "keep the range to 64 ports"),
        ({"api": {"rayNode": {"ports": {"objectManager": 6380}}}}, "must all differ"),
        ({"api": {"rayNode": {"ports": {"metricsExport": 10005}}}}, "lies in the worker port range"),
    ],
)
def test_inconsistent_values_fail_with_a_clear_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmRenderError, match=re.escape(message)):
        render.render(values=values)


def test_extra_toml_reaches_the_settings_file() -> None:
    extra = "[knowledge]\ntop_k = 6\n\n[agents]\nmax_tokens = 20000"
    cm = one(objects(values={"config": {"extraToml": extra}}), "ConfigMap")
    data = tomllib.loads(cm["data"]["datapilot.toml"])
    assert data["knowledge"] == {"top_k": 6} and data["agents"] == {"max_tokens": 20000}


# --- the plain manifests ----------------------------------------------------------------------------------


def test_plain_manifests_are_a_fresh_render(capsys: pytest.CaptureFixture[str]) -> None:
    committed = (ROOT / "deploy" / "k8s" / "datapilot.yaml").read_text(encoding="utf-8")
    assert committed == render.manifest(), "deploy/k8s/datapilot.yaml is stale: run `python deploy/render.py`"
    assert render.main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert [d for d in yaml.safe_load_all(committed) if d] == objects()
