"""deploy/: the Kubernetes manifests, the plain-Envoy bootstrap ConfigMap and the Dockerfile.

Nothing here needs a cluster or a Docker engine: the manifests are checked against each
other and against the project's own config compiler, the plain-Envoy bootstrap against the
real Envoy binary (``--mode validate``), and the Dockerfile by reading it.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from deploy.gateway_routes import processor_matches
from deploy.render_plain_envoy import (
    BOOTSTRAP_KEY,
    CONFIGMAP_NAME,
    PLACEHOLDER,
    render_configmap,
    secret_env_names,
)

from dockerfile import CONFIG_DIR, CONFIG_PATH, ROOT, dockerfile_stages
from ensemble_extproc.config import Config, ConfigError, compile_config
from ensemble_extproc.envoy_bootstrap import bootstrap
from ensemble_extproc.envoy_names import RUNTIME_FLAGS
from ensemble_extproc.headers import ROUTE, ROUTE_VALUE
from ensemble_extproc.paths import CHAT_COMPLETIONS
from ensemble_extproc.scope import scope
from ensemble_extproc.stack import envoy_binary

Manifest = dict[str, Any]

K8S = ROOT / "deploy" / "kubernetes"
BASE = K8S / "base"
PLAIN = K8S / "plain-envoy"
PLAIN_CONFIG = PLAIN / "config.yaml"
PLAIN_CONFIGMAP = PLAIN / "envoy-bootstrap-configmap.yaml"
SECRET_TEMPLATE = BASE / "secret.example.yaml"
DOCKERIGNORE = ROOT / ".dockerignore"

CONFIGMAP = "ensemble-extproc-config"
PROCESSOR = "ensemble-extproc"
UPSTREAM = "ensemble-upstream"
ENVOY = "ensemble-envoy"
GATEWAY_API = "gateway.networking.k8s.io"
# The servers' own shutdown after SIGTERM takes under 7 s (serve.py: a short unhealthy
# period, then GRACE_SECONDS = 5 for work in flight); the pods must allow for it.
SERVER_SHUTDOWN_SECONDS = 10
CLUSTER_SCOPED = frozenset({"Namespace", "GatewayClass"})
# Retry triggers that fire on an HTTP status answered by the upstream.
HTTP_STATUS_TRIGGERS = frozenset(
    {"5xx", "gateway-error", "retriable-4xx", "retriable-status-codes"}
)


# --- loading ------------------------------------------------------------------------------


def load_docs(path: Path) -> list[Manifest]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    return docs


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under deploy/kubernetes (not kustomizations or configs)."""
    return sorted(
        path
        for path in K8S.rglob("*.yaml")
        if path.name != "kustomization.yaml" and path != PLAIN_CONFIG
    )


def kustomization_files(directory: Path) -> list[Path]:
    """The manifest files a kustomization includes, following directory resources."""
    spec = load_docs(directory / "kustomization.yaml")[0]
    files: list[Path] = []
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        assert target.exists(), f"{directory}/kustomization.yaml lists missing {entry}"
        files.extend(kustomization_files(target) if target.is_dir() else [target])
    return files


def variant(directory: Path) -> list[Manifest]:
    return [doc for path in kustomization_files(directory) for doc in load_docs(path)]


@functools.cache
def gateway_variant() -> tuple[Manifest, ...]:
    return tuple(variant(K8S))


@functools.cache
def plain_variant() -> tuple[Manifest, ...]:
    return tuple(variant(PLAIN))


def of_kind(docs: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def container(deployment: Manifest) -> Manifest:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{deployment['metadata']['name']}: one container expected"
    result: Manifest = containers[0]
    return result


def container_ports(deployment: Manifest) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}


def env_refs(deployment: Manifest) -> dict[str, tuple[str, str]]:
    """Environment variable -> (Secret, key) for the container's secret-backed variables."""
    refs = {}
    for item in container(deployment).get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            refs[item["name"]] = (ref["name"], ref["key"])
    return refs


def secret_template() -> dict[str, dict[str, str]]:
    """Secret name -> its keys and placeholder values, from secret.example.yaml."""
    return {doc["metadata"]["name"]: doc["stringData"] for doc in load_docs(SECRET_TEMPLATE)}


def fake_environ() -> dict[str, str]:
    """Values for every key of the Secret template (real-looking, long enough)."""
    keys = {key for data in secret_template().values() for key in data}
    return {key: f"test-value-for-{key.lower()}" for key in keys}


def configmap_raw() -> Manifest:
    configmap = named(gateway_variant(), "ConfigMap", CONFIGMAP)
    raw = yaml.safe_load(configmap["data"]["config.yaml"])
    assert isinstance(raw, dict)
    return raw


@functools.cache
def pod_config() -> Config:
    return compile_config(configmap_raw(), fake_environ())


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def deployment_for(docs: tuple[Manifest, ...], service: Manifest) -> Manifest:
    selector = service["spec"]["selector"]
    found = [
        d
        for d in of_kind(docs, "Deployment")
        if d["metadata"]["namespace"] == service["metadata"]["namespace"]
        and matches(selector, d["spec"]["template"]["metadata"]["labels"])
    ]
    name = service["metadata"]["name"]
    assert len(found) == 1, f"Service {name}: its selector picks {len(found)} Deployments"
    return found[0]


def service_port(service: Manifest, port: int) -> Manifest:
    found = [p for p in service["spec"]["ports"] if p["port"] == port]
    assert len(found) == 1, f"Service {service['metadata']['name']} has no port {port}"
    result: Manifest = found[0]
    return result


def target_container_port(service: Manifest, port: Manifest, deployment: Manifest) -> int:
    target = port["targetPort"] if "targetPort" in port else port["port"]
    ports = container_ports(deployment)
    if isinstance(target, str):
        assert target in ports, (
            f"Service {service['metadata']['name']}: targetPort {target!r} is not a "
            f"container port of {deployment['metadata']['name']} ({sorted(ports)})"
        )
        return ports[target]
    assert target in ports.values(), f"targetPort {target} is not a container port"
    return int(target)


def parse_quantity(value: str | int) -> int:
    """A Kubernetes quantity of bytes: 1088Ki, 2Mi, 1G, 4096."""
    if isinstance(value, int):
        return value
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|k|M|G)?", value)
    assert match, f"not a byte quantity: {value!r}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def prestop_sleep_seconds(deployment: Manifest) -> int:
    command = container(deployment)["lifecycle"]["preStop"]["exec"]["command"]
    found = re.search(r"\bsleep\s+(\d+)", " ".join(command))
    assert found, f"{deployment['metadata']['name']}: preStop does not sleep: {command}"
    return int(found.group(1))


# --- all manifests --------------------------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_parses_and_names_every_resource(path: Path) -> None:
    docs = load_docs(path)
    assert docs, f"{path} holds no document"
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path}: {doc}"
        assert doc["metadata"].get("name"), f"{path}: a {doc['kind']} has no name"
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace"), (
                f"{path}: {doc['kind']} {doc['metadata']['name']} has no namespace"
            )


def test_kustomizations_cover_every_manifest_but_the_secret_template() -> None:
    listed = set(kustomization_files(K8S)) | set(kustomization_files(PLAIN))
    assert SECRET_TEMPLATE not in listed, "apply -k would overwrite real secrets"
    assert listed == set(manifest_files()) - {SECRET_TEMPLATE}
    for docs in (gateway_variant(), plain_variant()):
        keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
        assert len(keys) == len(set(keys)), "a resource is defined twice in one variant"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("directory", [K8S, PLAIN], ids=["envoy-gateway", "plain-envoy"])
def test_kubectl_kustomize_builds_the_variant(directory: Path) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    expected = variant(directory)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in expected
    )
    images = {
        c["image"]
        for d in built
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert "registry.example.com/ensemble-extproc:0.1.0" in images, images


# --- Deployments, Services, HPAs ----------------------------------------------------------


@pytest.mark.parametrize("docs", [gateway_variant(), plain_variant()], ids=["gateway", "plain"])
def test_every_service_selects_one_deployment_on_its_ports(docs: tuple[Manifest, ...]) -> None:
    services = [s for s in of_kind(docs, "Service") if "selector" in s["spec"]]
    assert services
    for service in services:
        deployment = deployment_for(docs, service)
        for port in service["spec"]["ports"]:
            target_container_port(service, port, deployment)
    for deployment in of_kind(docs, "Deployment"):
        spec = deployment["spec"]
        assert matches(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
        assert any(deployment_for(docs, s) is deployment for s in services), (
            f"Deployment {deployment['metadata']['name']} has no Service"
        )


@pytest.mark.parametrize("docs", [gateway_variant(), plain_variant()], ids=["gateway", "plain"])
def test_every_deployment_has_an_hpa_and_a_pdb(docs: tuple[Manifest, ...]) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    targets = []
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        assert hpa["apiVersion"] == "autoscaling/v2"
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment"
        assert ref["name"] in deployments, f"HPA {hpa['metadata']['name']}: no {ref['name']}"
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        targets.append(ref["name"])
    assert sorted(targets) == sorted(deployments)
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        picked = [
            name
            for name, d in deployments.items()
            if matches(selector, d["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(picked) == 1, f"PDB {pdb['metadata']['name']} picks {picked}"
        assert pdb["spec"]["minAvailable"] < deployments[picked[0]]["spec"]["replicas"]


@pytest.mark.parametrize("name", [PROCESSOR, UPSTREAM, ENVOY])
def test_pods_run_as_non_root_with_resources_and_drain_before_sigterm(name: str) -> None:
    deployment = named(plain_variant(), "Deployment", name)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    box = container(deployment)
    assert box["securityContext"]["allowPrivilegeEscalation"] is False
    assert box["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= box["resources"][kind].keys(), f"{name}: {kind}"
    assert box["readinessProbe"]
    assert box["livenessProbe"]
    sleep = prestop_sleep_seconds(deployment)
    assert sleep > 0
    if name != ENVOY:
        # Endpoints removed first, then SIGTERM, then the server's own drain.
        assert pod["terminationGracePeriodSeconds"] >= sleep + SERVER_SHUTDOWN_SECONDS
    else:
        assert pod["terminationGracePeriodSeconds"] > sleep


def test_image_user_is_the_pods_user() -> None:
    user = dockerfile_stages()[-1].user
    for name in (PROCESSOR, UPSTREAM):
        pod = named(gateway_variant(), "Deployment", name)["spec"]["template"]["spec"]
        assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == (
            user
        )


@pytest.mark.parametrize(("name", "command"), [(PROCESSOR, "extproc"), (UPSTREAM, "upstream")])
def test_servers_run_their_command_on_the_mounted_config(name: str, command: str) -> None:
    deployment = named(gateway_variant(), "Deployment", name)
    box = container(deployment)
    assert box["args"] == [command, "--config", CONFIG_PATH]
    assert "command" not in box, "the image's ENTRYPOINT is ensemble-extproc"
    mount = next(m for m in box["volumeMounts"] if m["mountPath"] == CONFIG_DIR)
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    assert volume["configMap"]["name"] == CONFIGMAP
    assert volume["configMap"]["items"] == [{"key": "config.yaml", "path": "config.yaml"}]


def test_processor_probes_tcp_and_upstream_probes_healthz() -> None:
    processor = container(named(gateway_variant(), "Deployment", PROCESSOR))
    for probe in ("readinessProbe", "livenessProbe"):
        assert processor[probe]["tcpSocket"]["port"] == "grpc"
    upstream = container(named(gateway_variant(), "Deployment", UPSTREAM))
    for probe in ("readinessProbe", "livenessProbe"):
        assert upstream[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


# --- the pods' config ---------------------------------------------------------------------


def test_configmap_config_compiles_and_listens_where_the_containers_expose() -> None:
    config = pod_config()
    listen = config.listen
    assert {listen.extproc.host, listen.upstream.host, listen.extproc_metrics.host} == {
        "0.0.0.0"
    }, "pods must listen on every interface"
    processor = named(gateway_variant(), "Deployment", PROCESSOR)
    upstream = named(gateway_variant(), "Deployment", UPSTREAM)
    assert container_ports(processor) == {
        "grpc": listen.extproc.port,
        "metrics": listen.extproc_metrics.port,
    }
    assert container_ports(upstream) == {"http": listen.upstream.port}
    # Prometheus scrapes the ports the servers serve /metrics on.
    for deployment, port in ((processor, listen.extproc_metrics), (upstream, listen.upstream)):
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port.port)
        assert annotations["prometheus.io/path"] == "/metrics"
    # Every model is real (no demo backends inside pods) and reads its key from the env.
    raw_models = configmap_raw()["models"]
    assert len(raw_models) == len(config.endpoints) >= 2
    assert all(model["api_key_env"] for model in raw_models)
    assert not config.demo_models
    assert config.internal_secret is not None
    assert config.profiles
    assert config.rules


def test_servers_get_every_secret_the_config_names_from_existing_secret_keys() -> None:
    needed = set(secret_env_names(configmap_raw()))
    assert "ENSEMBLE_INTERNAL_SECRET" in needed
    assert {m["api_key_env"] for m in configmap_raw()["models"]} <= needed
    secrets = secret_template()
    for name in (PROCESSOR, UPSTREAM):
        refs = env_refs(named(gateway_variant(), "Deployment", name))
        assert needed <= refs.keys(), f"{name} lacks {sorted(needed - refs.keys())}"
        for variable, (secret, key) in refs.items():
            assert key in secrets.get(secret, {}), f"{name}: {variable} -> {secret}/{key}"


def test_secret_template_holds_placeholders_that_cannot_run() -> None:
    values = [value for data in secret_template().values() for value in data.values()]
    assert values
    assert all(value == "REPLACE-ME" for value in values), "placeholders only, never secrets"
    environ = fake_environ() | {"ENSEMBLE_INTERNAL_SECRET": "REPLACE-ME"}
    with pytest.raises(ConfigError, match="shorter than 16 characters"):
        compile_config(configmap_raw(), environ)


# --- Envoy Gateway ------------------------------------------------------------------------


def test_gateway_exists_for_every_route_and_policy() -> None:
    docs = gateway_variant()
    gateway = named(docs, "Gateway", "llm-gateway")
    named(docs, "GatewayClass", gateway["spec"]["gatewayClassName"])
    for route in of_kind(docs, "HTTPRoute"):
        assert [p["name"] for p in route["spec"]["parentRefs"]] == ["llm-gateway"]
    routes = {route["metadata"]["name"] for route in of_kind(docs, "HTTPRoute")}
    for kind in ("EnvoyExtensionPolicy", "ClientTrafficPolicy", "BackendTrafficPolicy"):
        for policy in of_kind(docs, kind):
            assert policy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
            for ref in policy["spec"]["targetRefs"]:
                assert ref["group"] == GATEWAY_API
                targets = {"Gateway": {"llm-gateway"}, "HTTPRoute": routes}[ref["kind"]]
                assert ref["name"] in targets, ref
            assert policy["metadata"]["namespace"] == gateway["metadata"]["namespace"]


def test_gateway_envoys_get_the_bootstrap_runtime_flags() -> None:
    """Envoy Gateway has no field for runtime flags: its EnvoyProxy merges one more static
    runtime layer, holding the rendered bootstrap's flags, into its default bootstrap
    (merged lists are appended: the layer comes last and wins), and the Gateway names
    that EnvoyProxy."""
    docs = gateway_variant()
    gateway = named(docs, "Gateway", "llm-gateway")
    ref = gateway["spec"]["infrastructure"]["parametersRef"]
    assert (ref["group"], ref["kind"]) == ("gateway.envoyproxy.io", "EnvoyProxy")
    proxy = named(docs, "EnvoyProxy", ref["name"])
    assert proxy["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    assert proxy["metadata"]["namespace"] == gateway["metadata"]["namespace"]
    merge = proxy["spec"]["bootstrap"]
    assert merge["type"] == "Merge"
    fragment = yaml.safe_load(merge["value"])
    # A well-formed piece of Envoy's Bootstrap (Envoy Gateway rejects a merge that is not).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap
    assert Bootstrap.from_dict(fragment).layered_runtime is not None
    [layer] = fragment["layered_runtime"]["layers"]
    assert layer["static_layer"] == RUNTIME_FLAGS
    rendered = bootstrap(pod_config())["layered_runtime"]["layers"][0]["static_layer"]
    assert rendered == RUNTIME_FLAGS


def only_rule(route: Manifest) -> Manifest:
    rules = route["spec"]["rules"]
    assert len(rules) == 1
    result: Manifest = rules[0]
    return result


def test_ensemble_route_matches_the_internal_header_and_reaches_the_upstream() -> None:
    docs = gateway_variant()
    rule = only_rule(named(docs, "HTTPRoute", "ensemble"))
    # The chat completion POST only, as the bootstrap's ensemble route; and an exact path,
    # so that it outranks default-model-chat (Gateway API precedence).
    assert rule["matches"] == [
        {
            "path": {"type": "Exact", "value": CHAT_COMPLETIONS},
            "method": "POST",
            "headers": [{"type": "Exact", "name": ROUTE, "value": ROUTE_VALUE}],
        }
    ]
    [backend] = rule["backendRefs"]
    service = named(docs, "Service", backend["name"])
    assert "namespace" not in backend
    assert service["metadata"]["name"] == UPSTREAM
    assert backend["port"] == pod_config().listen.upstream.port
    port = service_port(service, backend["port"])
    assert target_container_port(service, port, deployment_for(docs, service)) == backend["port"]
    timeout = rule["timeouts"]["request"]
    assert timeout.endswith("s")
    assert float(timeout[:-1]) > pod_config().ensemble.timeout_seconds


@pytest.mark.parametrize("name", ["default-model", "default-model-chat"])
def test_default_routes_reach_the_default_model_service(name: str) -> None:
    docs = gateway_variant()
    config = pod_config()
    rule = only_rule(named(docs, "HTTPRoute", name))
    if name == "default-model":
        assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    [backend] = rule["backendRefs"]
    # The default model's URL is http://<service>.<namespace>.svc[.cluster.local]:<port>.
    url = urlsplit(config.endpoints[config.default_model].url)
    assert url.hostname is not None
    service, namespace, *_ = url.hostname.split(".")
    assert (backend["name"], backend["namespace"], backend["port"]) == (
        service,
        namespace,
        url.port,
    )
    grants = [
        g
        for g in of_kind(docs, "ReferenceGrant")
        if g["metadata"]["namespace"] == namespace
        and {"group": GATEWAY_API, "kind": "HTTPRoute", "namespace": "ensemble"}
        in g["spec"]["from"]
        and {"group": "", "kind": "Service", "name": service} in g["spec"]["to"]
    ]
    assert grants, f"no ReferenceGrant lets the route reach {namespace}/{service}"


def test_routes_report_the_decision_from_the_configs_metadata_namespace() -> None:
    namespace = pod_config().metadata_namespace
    asked = processor_routes()
    for route in of_kind(gateway_variant(), "HTTPRoute"):
        [modifier] = only_rule(route)["filters"]
        headers = {h["name"]: h["value"] for h in modifier["responseHeaderModifier"]["set"]}
        if route["metadata"]["name"] in asked:
            assert headers == {
                "x-ensemble-decision": f"%DYNAMIC_METADATA({namespace}:decision)%",
                "x-ensemble-confidence": f"%DYNAMIC_METADATA({namespace}:confidence)%",
            }
        else:  # the processor is not asked there: nobody decided, as it would have said
            assert headers == {"x-ensemble-decision": "none"}


def processor_routes() -> set[str]:
    policy = named(gateway_variant(), "EnvoyExtensionPolicy", PROCESSOR)
    refs = policy["spec"]["targetRefs"]
    assert all((ref["group"], ref["kind"]) == (GATEWAY_API, "HTTPRoute") for ref in refs)
    return {ref["name"] for ref in refs}


def test_the_processor_is_attached_only_to_routes_that_need_it() -> None:
    """Issue 14: the ensemble route (a client's copy of its header must meet the
    processor), and the chat completions the config makes it see; not the rest."""
    assert processor_routes() == {"ensemble", "default-model-chat"}
    rule = only_rule(named(gateway_variant(), "HTTPRoute", "default-model-chat"))
    assert rule["matches"] == processor_matches(pod_config())
    # This config reads every chat body (profiles, body rules): all chat completions.
    assert scope(pod_config()).reads_body
    assert rule["matches"] == [
        {"path": {"type": "Exact", "value": CHAT_COMPLETIONS}, "method": "POST"}
    ]


def test_for_a_headers_only_config_the_chat_route_matches_each_header_the_processor_reads() -> None:
    raw = {**configmap_raw(), "profiles": {}, "rules": []}
    config = compile_config(raw, fake_environ())
    matches = processor_matches(config)
    assert [m["headers"] for m in matches] == [
        [{"type": "RegularExpression", "name": name, "value": ".*"}]
        for name in scope(config).headers
    ]
    assert ROUTE in {m["headers"][0]["name"] for m in matches}
    for match in matches:
        assert (match["path"], match["method"]) == (
            {"type": "Exact", "value": CHAT_COMPLETIONS},
            "POST",
        )


def test_extension_policy_sends_requests_to_the_processor_as_the_bootstrap_does() -> None:
    docs = gateway_variant()
    config = pod_config()
    policy = named(docs, "EnvoyExtensionPolicy", PROCESSOR)
    [ext_proc] = policy["spec"]["extProc"]
    [backend] = ext_proc["backendRefs"]
    service = named(docs, "Service", backend["name"])
    assert service["metadata"]["name"] == PROCESSOR
    assert service["metadata"]["namespace"] == policy["metadata"]["namespace"]
    assert backend["port"] == config.listen.extproc.port
    port = service_port(service, backend["port"])
    assert target_container_port(service, port, deployment_for(docs, service)) == backend["port"]
    assert ext_proc["processingMode"] == {
        "allowModeOverride": True,
        "request": {"body": "Buffered"},
    }
    assert ext_proc["failOpen"] is (config.envoy.failure_mode == "open")
    assert ext_proc["messageTimeout"] == f"{config.envoy.message_timeout_ms:g}ms"
    assert ext_proc["metadata"] == {"writableNamespaces": [config.metadata_namespace]}


def test_client_traffic_policy_buffers_the_largest_allowed_body() -> None:
    [policy] = of_kind(gateway_variant(), "ClientTrafficPolicy")
    limit = parse_quantity(policy["spec"]["connection"]["bufferLimit"])
    max_body = pod_config().ensemble.max_body_bytes
    # Room for the body plus its headers, as the rendered bootstrap leaves (64 KiB).
    assert limit >= max_body + 65536


def test_client_traffic_policy_times_out_slow_clients_as_the_config_says() -> None:
    [policy] = of_kind(gateway_variant(), "ClientTrafficPolicy")
    envoy = pod_config().envoy
    assert policy["spec"]["timeout"]["http"] == {
        "requestReceivedTimeout": f"{envoy.request_timeout_seconds:g}s",
        "idleTimeout": f"{envoy.idle_timeout_seconds:g}s",
        "streamIdleTimeout": f"{envoy.stream_idle_timeout_seconds:g}s",
    }


def test_backend_traffic_policy_retries_the_ensemble_route_as_the_bootstrap_does() -> None:
    [policy] = of_kind(gateway_variant(), "BackendTrafficPolicy")
    assert policy["spec"]["targetRefs"] == [
        {"group": GATEWAY_API, "kind": "HTTPRoute", "name": "ensemble"}
    ]
    triggers = set(policy["spec"]["retry"]["retryOn"]["triggers"])
    routes = bootstrap(pod_config())["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"
    ][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    ensemble = next(route for route in routes if route["name"] == "ensemble")
    allowed = set(ensemble["route"]["retry_policy"]["retry_on"].split(","))
    assert triggers, "no retry trigger"
    assert triggers <= allowed, f"retries on more than the bootstrap ({sorted(allowed)})"
    # An HTTP error status is the ensemble's answer: never run it again for one.
    assert not triggers & HTTP_STATUS_TRIGGERS


# --- plain Envoy --------------------------------------------------------------------------


def plain_raw() -> Manifest:
    raw = yaml.safe_load(PLAIN_CONFIG.read_text())
    assert isinstance(raw, dict)
    return raw


def test_plain_envoy_config_is_the_pod_config_but_for_addresses() -> None:
    plain, pods = plain_raw(), configmap_raw()
    assert {k: v for k, v in plain.items() if k != "listen"} == {
        k: v for k, v in pods.items() if k != "listen"
    }, "deploy/kubernetes/plain-envoy/config.yaml drifted from base/configmap.yaml"


def test_plain_envoy_reaches_every_pod_through_the_headless_services() -> None:
    docs = plain_variant()
    config = compile_config(plain_raw(), fake_environ())
    for address, name in ((config.listen.extproc, PROCESSOR), (config.listen.upstream, UPSTREAM)):
        service = named(docs, "Service", name)
        namespace = service["metadata"]["namespace"]
        assert address.host == f"{name}.{namespace}.svc.cluster.local"
        # Headless: DNS answers every ready pod, so each is an endpoint of Envoy's own.
        assert service["spec"]["clusterIP"] == "None"
        port = service_port(service, address.port)
        assert target_container_port(service, port, deployment_for(docs, service)) == address.port


def test_plain_envoy_deployment_serves_the_rendered_bootstrap() -> None:
    docs = plain_variant()
    config = compile_config(plain_raw(), fake_environ())
    deployment = named(docs, "Deployment", ENVOY)
    box = container(deployment)
    args = box["args"]
    bootstrap_path = args[args.index("-c") + 1]
    mount = next(m for m in box["volumeMounts"] if bootstrap_path.startswith(m["mountPath"]))
    volume = next(
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    assert volume["configMap"]["name"] == CONFIGMAP_NAME
    [item] = volume["configMap"]["items"]
    assert item["key"] == BOOTSTRAP_KEY
    assert f"{mount['mountPath']}/{item['path']}" == bootstrap_path
    assert {config.listen.envoy.host, config.listen.envoy_admin.host} == {"0.0.0.0"}
    assert container_ports(deployment) == {
        "http": config.listen.envoy.port,
        "admin": config.listen.envoy_admin.port,
    }
    service = named(docs, "Service", ENVOY)
    exposed = {target_container_port(service, p, deployment) for p in service["spec"]["ports"]}
    assert exposed == {config.listen.envoy.port}, "the admin port must stay out of the Service"
    assert box["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "admin"}


def test_plain_envoy_configmap_is_up_to_date() -> None:
    expected = render_configmap()
    assert PLAIN_CONFIGMAP.read_text() == expected, (
        "deploy/kubernetes/plain-envoy/envoy-bootstrap-configmap.yaml is stale: "
        "run 'python deploy/render_plain_envoy.py'"
    )
    assert PLACEHOLDER not in expected, "the bootstrap must not carry a secret"


def test_plain_envoy_gets_every_variable_its_bootstrap_reads_from_a_secret() -> None:
    """The default route's key: the bootstrap names the variable, the Envoy pod has it."""
    [configmap] = load_docs(PLAIN_CONFIGMAP)
    wanted = set(re.findall(r"%ENVIRONMENT\(([A-Z0-9_]+)\)%", configmap["data"][BOOTSTRAP_KEY]))
    default = plain_raw()["default_model"]
    [model] = [m for m in plain_raw()["models"] if m["name"] == default]
    assert wanted == {model["api_key_env"]}
    refs = env_refs(named(plain_variant(), "Deployment", ENVOY))
    assert wanted <= refs.keys()
    secrets = secret_template()
    for variable in wanted:
        secret, key = refs[variable]
        assert key in secrets.get(secret, {}), f"{variable} -> {secret}/{key}"


def test_plain_envoy_bootstrap_passes_envoy_validate(tmp_path: Path) -> None:
    [configmap] = load_docs(PLAIN_CONFIGMAP)
    path = tmp_path / "envoy.yaml"
    path.write_text(configmap["data"][BOOTSTRAP_KEY])
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout + result.stderr


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_builds_a_wheel_from_freshly_generated_protos() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build, then runtime"
    for stage in stages:
        assert stage.base.startswith("python:3.11-slim"), stage.base
    build, runtime = stages[0], stages[-1]
    runs = build.values("RUN")
    generate = next(
        i
        for i, run in enumerate(runs)
        if "tools/gen_protos.py --out src/ensemble_extproc/_pb" in run
    )
    wheel = next(i for i, run in enumerate(runs) if "pip wheel ." in run)
    assert generate < wheel, "the gRPC code must exist before the wheel is built"
    assert "external_processor_pb2_grpc.py" in runs[wheel], "the wheel's content is checked"
    # grpcio-tools comes from the build stage's lock (tests/test_image.py checks it there).
    assert any("-r /tmp/build-lock.txt" in run for run in runs)
    assert not any("build-lock" in value for _, value in runtime.instructions)
    assert not any("grpcio-tools" in value for _, value in runtime.instructions)
    assert any("/wheels/*.whl" in run and "pip install" in run for run in runtime.values("RUN"))


def test_dockerfile_runtime_is_non_root_with_the_cli_entrypoint() -> None:
    runtime = dockerfile_stages()[-1]
    user = runtime.user
    uid = user.partition(":")[0]
    assert uid.isdigit(), f"USER {user}: numeric, so Kubernetes can check runAsNonRoot"
    assert int(uid) > 0, f"USER {user}: not root"
    assert json.loads(runtime.values("ENTRYPOINT")[-1]) == ["ensemble-extproc"]
    assert json.loads(runtime.values("CMD")[-1]) == ["upstream", "--config", CONFIG_PATH]


def test_dockerfile_sources_exist_and_generated_code_stays_out_of_the_context() -> None:
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", "src/ensemble_extproc/_pb"} <= ignored
    for stage in dockerfile_stages():
        for value in stage.values("COPY"):
            if value.startswith("--from"):
                continue
            *sources, _ = value.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: missing"
                assert source.rstrip("/") not in ignored, f"COPY {source}: in .dockerignore"
