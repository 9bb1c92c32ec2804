"""envoy/envoy.yaml: rendered from config/default.yaml, and accepted by the real Envoy."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml

from ensemble_extproc import headers as h
from ensemble_extproc.config import Config, compile_config, load_config
from ensemble_extproc.envoy_bootstrap import bootstrap, render_yaml
from ensemble_extproc.envoy_names import (
    DEFAULT_CLUSTER,
    ENSEMBLE_CLUSTER,
    EXT_PROC,
    EXTPROC_CLUSTER,
    FALLBACK_DEFAULT_CLUSTER,
    FALLBACK_LISTENER,
    GRACEFUL_GRPC_CLOSE,
    HCM,
    HTTP_PROTOCOL_OPTIONS,
    LOCAL_REPLIES,
    ROUTER_CLUSTER,
    ROUTER_FILTER,
    RUNTIME_FLAGS,
    TLS_CONTEXT,
    TYPE,
)
from ensemble_extproc.envoy_types import system_ca_bundle
from ensemble_extproc.scope import scope
from ensemble_extproc.stack import envoy_binary

from helpers import make_config

ROOT = Path(__file__).resolve().parent.parent
CHECKED_IN = ROOT / "envoy" / "envoy.yaml"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_checked_in_bootstrap_is_up_to_date() -> None:
    expected = render_yaml(load_config(ROOT / "config" / "default.yaml"), "config/default.yaml")
    assert CHECKED_IN.read_text() == expected, (
        "envoy/envoy.yaml is stale: run "
        "'ensemble-extproc envoy-config --config config/default.yaml > envoy/envoy.yaml'"
    )


def test_checked_in_bootstrap_validates() -> None:
    result = validate(CHECKED_IN)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8001/v1", "https://api.example.com/v1", "http://model-a:8000"]
)
def test_rendered_bootstrap_validates_for_other_default_models(tmp_path: Path, url: str) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render_yaml(make_config({"m": url}), "test"))
    result = validate(path)
    assert result.returncode == 0, result.stderr


def test_validation_rejects_a_broken_bootstrap(tmp_path: Path) -> None:
    """The check above can fail: a bootstrap routing to an unknown cluster is refused."""
    broken = CHECKED_IN.read_text().replace("cluster: default_model", "cluster: nowhere")
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    assert validate(path).returncode != 0


# --- built from envoy-data-plane's typed messages -----------------------------------------


def typed_configs(config: Any) -> Iterator[dict[str, Any]]:
    """Every packed message (``{"@type": ...}``) in a rendered bootstrap."""
    if isinstance(config, dict):
        if "@type" in config:
            yield config
        for value in config.values():
            yield from typed_configs(value)
    elif isinstance(config, list):
        for value in config:
            yield from typed_configs(value)


VARIANTS = {
    "default": (ROOT / "config" / "default.yaml", 1, 1),
    "replicas": (ROOT / "config" / "default.yaml", 2, 2),
    "policy": (ROOT / "config" / "examples" / "policy.yaml", 1, 1),
    "semantic-router": (ROOT / "config" / "examples" / "semantic-router.yaml", 1, 1),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_bootstrap_reads_back_under_envoys_schema(variant: str) -> None:
    """Proto JSON with snake_case field names that Envoy's API schema reads back whole:
    no unknown field (the parser rejects them), every ``@type`` a known message."""
    path, extproc, upstream = VARIANTS[variant]
    rendered = bootstrap(load_config(path), extproc, upstream)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import betterproto2
        from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap

    parsed = Bootstrap.from_dict(rendered)
    assert parsed.to_dict(casing=betterproto2.Casing.SNAKE) == rendered
    assert "static_resources" in rendered
    assert {c["@type"].partition("/")[0] for c in typed_configs(rendered)} == {TYPE.rstrip("/")}


def test_shared_type_names_are_the_typed_messages() -> None:
    """The names other code and the HTTP/2 options' map key use are the packed types'."""
    config = make_config({"m": "https://api.example.com/v1"})
    types = {c["@type"] for c in typed_configs(bootstrap(config))}
    assert {TYPE + name for name in (HCM, EXT_PROC, TLS_CONTEXT, HTTP_PROTOCOL_OPTIONS)} <= types
    [extproc] = [
        c for c in bootstrap(config)["static_resources"]["clusters"] if c["name"] == EXTPROC_CLUSTER
    ]
    [(key, options)] = extproc["typed_extension_protocol_options"].items()
    assert options["@type"] == TYPE + key


def test_servers_import_the_shared_names_without_envoy_data_plane() -> None:
    """The runtime image installs no envoy-data-plane: the CLI and the upstream's OpenAPI
    document import this module's names, and only building a bootstrap needs the package."""
    code = (
        "import sys, ensemble_extproc.cli, ensemble_extproc.upstream.openapi; "
        "sys.exit('envoy_data_plane' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or "envoy_data_plane was imported"


def test_runtime_flags_sit_in_a_static_layer_and_the_admin_layer_stays() -> None:
    """Envoy without a layered_runtime has an admin layer (/runtime_modify); declaring
    the static layer must not take it away."""
    layers = bootstrap(make_config({"m": "http://127.0.0.1:8001/v1"}))["layered_runtime"]
    assert layers == {
        "layers": [
            {"name": "static", "static_layer": RUNTIME_FLAGS},
            {"name": "admin", "admin_layer": {}},
        ]
    }
    assert RUNTIME_FLAGS == {GRACEFUL_GRPC_CLOSE: True}


# --- the default model's policy, TLS, DNS, request ids, local replies (issue 12) ----------


def compile_models(models: list[dict[str, Any]], **extra: Any) -> Config:
    raw = {"models": models, "default_model": models[0]["name"], **extra}
    return compile_config(raw, {"PROVIDER_KEY": "sk-not-in-the-bootstrap"})


def gateway_routes(rendered: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [listener] = [x for x in rendered["static_resources"]["listeners"] if x["name"] == "gateway"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [host] = hcm["route_config"]["virtual_hosts"]
    return {route["name"]: route for route in host["routes"]}


def cluster(rendered: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [c for c in rendered["static_resources"]["clusters"] if c["name"] == name]
    return found


@pytest.mark.parametrize(
    ("url", "chat"),
    [
        ("http://provider.example/base/v1", "/base/v1/chat/completions"),
        ("http://provider.example:8080", None),  # /v1 is added: nothing to rewrite
        (
            "http://h/openai/deployments/x/chat/completions",
            "/openai/deployments/x/chat/completions",
        ),
    ],
)
def test_the_default_route_applies_the_urls_path_prefix_and_host(
    url: str, chat: str | None
) -> None:
    routes = gateway_routes(bootstrap(compile_models([{"name": "m", "url": url}])))
    chat_route = routes["default_model"]["route"]
    assert chat_route.get("prefix_rewrite") == chat
    assert chat_route["host_rewrite_literal"] == url.split("//")[1].split("/")[0]


def test_the_model_list_is_the_gateways_and_carries_no_credential() -> None:
    model = {"name": "m", "url": "https://api.example.com/base/v1", "api_key_env": "PROVIDER_KEY"}
    route = gateway_routes(bootstrap(compile_models([model])))["models"]
    assert route["route"]["cluster"] == ENSEMBLE_CLUSTER
    assert "regex_rewrite" not in route["route"]
    assert "request_headers_to_add" not in route
    removed = set(route["request_headers_to_remove"])
    assert set(h.INTERNAL) | set(h.REQUEST_HEADERS) | set(h.CLIENT_CREDENTIALS) <= removed


@pytest.mark.parametrize("forward", [False, True])
def test_the_default_route_sends_the_key_by_name_and_no_client_credential(forward: bool) -> None:
    model: dict[str, Any] = {"name": "m", "url": "https://api.example.com/v1"}
    model |= {"forward_client_auth": True} if forward else {"api_key_env": "PROVIDER_KEY"}
    rendered = bootstrap(compile_models([model]))
    assert "sk-not-in-the-bootstrap" not in json.dumps(rendered)
    for name in ("default_model",):
        route = gateway_routes(rendered)[name]
        removed = set(route["request_headers_to_remove"])
        assert set(h.INTERNAL) | set(h.REQUEST_HEADERS) <= removed
        assert set(h.CLIENT_CREDENTIALS) - {"authorization"} <= removed
        assert ("authorization" in removed) is not forward
        added = route.get("request_headers_to_add", [])
        if forward:
            assert added == []
        else:
            [header] = added
            assert header["header"] == {
                "key": "authorization",
                "value": "Bearer %ENVIRONMENT(PROVIDER_KEY)%",
            }
            assert header["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"


def test_only_the_chat_completion_post_takes_the_ensemble_route() -> None:
    route = gateway_routes(bootstrap(make_config({"m": "http://127.0.0.1:1/v1"})))["ensemble"]
    assert route["match"]["path"] == "/v1/chat/completions"
    headers = {m["name"]: m["string_match"]["exact"] for m in route["match"]["headers"]}
    assert headers == {h.ROUTE: h.ROUTE_VALUE, ":method": "POST"}


@pytest.mark.parametrize(
    ("url", "ca_file", "san_type", "sni"),
    [
        ("https://api.example.com/v1", None, "DNS", "api.example.com"),
        ("https://10.1.2.3:8443/v1", "CA", "IP_ADDRESS", None),
    ],
)
def test_https_default_models_are_verified(
    tmp_path: Path, url: str, ca_file: str | None, san_type: str, sni: str | None
) -> None:
    model: dict[str, Any] = {"name": "m", "url": url}
    if ca_file:
        trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        model["ca_file"] = str(tmp_path / "ca.pem")
    rendered = bootstrap(compile_models([model]))
    socket_config = cluster(rendered, DEFAULT_CLUSTER)["transport_socket"]["typed_config"]
    validation = socket_config["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"filename": model.get("ca_file", system_ca_bundle())}
    host = url.split("//")[1].split("/")[0].split(":")[0]
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": san_type, "matcher": {"exact": host}}
    ]
    assert socket_config.get("sni") == sni
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(rendered))
    assert validate(path).returncode == 0


def test_dns_clusters_prefer_ipv4() -> None:
    """Envoy's default took only ::1 for localhost: an IPv4-only server got a 503."""
    rendered = bootstrap(compile_models([{"name": "m", "url": "http://localhost:8000/v1"}]))
    default = cluster(rendered, DEFAULT_CLUSTER)
    assert default["type"] == "STRICT_DNS"
    assert default["dns_lookup_family"] == "V4_PREFERRED"
    static = bootstrap(make_config({"m": "http://127.0.0.1:8000/v1"}))
    assert "dns_lookup_family" not in cluster(static, DEFAULT_CLUSTER)


def test_envoy_makes_every_request_id_itself() -> None:
    rendered = bootstrap(make_config({"m": "http://127.0.0.1:1/v1"}))
    [listener] = [x for x in rendered["static_resources"]["listeners"] if x["name"] == "gateway"]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    [early] = hcm["early_header_mutation_extensions"]
    assert early["typed_config"]["mutations"] == [{"remove": "x-request-id"}]
    assert hcm.get("generate_request_id", True) is not False


def test_every_local_reply_status_has_a_json_mapper_and_the_processors_are_kept() -> None:
    rendered = bootstrap(make_config({"m": "http://127.0.0.1:1/v1"}))
    [listener] = [x for x in rendered["static_resources"]["listeners"] if x["name"] == "gateway"]
    mappers = listener["filter_chains"][0]["filters"][0]["typed_config"]["local_reply_config"][
        "mappers"
    ]
    keep = mappers[0]
    assert "body_format_override" not in keep
    assert "ensemble_extproc_" in json.dumps(keep["filter"])
    bodies = [m["body_format_override"]["json_format"]["error"] for m in mappers[1:]]
    assert {b["code"] for b in bodies} == {r.code for r in LOCAL_REPLIES} | {"invalid_request"}
    for body in bodies:
        assert body["message"], body
        assert (
            "%RESPONSE_CODE_DETAILS%" in body["message"] or "%LOCAL_REPLY_BODY%" in body["message"]
        )


@pytest.mark.parametrize("fallback", [True, False])
def test_the_fallback_goes_through_an_internal_listener_with_the_default_routes(
    fallback: bool,
) -> None:
    config = compile_models(
        [{"name": "m", "url": "http://provider.example/base/v1", "api_key_env": "PROVIDER_KEY"}],
        envoy={"fallback_to_default": fallback},
    )
    rendered = bootstrap(config)
    listeners = {x["name"]: x for x in rendered["static_resources"]["listeners"]}
    assert (FALLBACK_LISTENER in listeners) is fallback
    assert bool(rendered.get("bootstrap_extensions")) is fallback
    if not fallback:
        return
    internal = listeners[FALLBACK_LISTENER]
    hcm = internal["filter_chains"][0]["filters"][0]["typed_config"]
    [host] = hcm["route_config"]["virtual_hosts"]
    # The default model's routes, without the processor's per-route switches (the
    # internal listener has no ext_proc filter).
    unswitched = bootstrap(config, processor_on_every_request=True)
    assert host["routes"] == list(gateway_routes(unswitched).values())[1:]
    assert "typed_per_filter_config" not in json.dumps(host["routes"])
    aggregate = cluster(rendered, "ensemble_or_default")
    assert aggregate["cluster_type"]["typed_config"]["clusters"] == [
        "ensemble_upstream",
        FALLBACK_DEFAULT_CLUSTER,
    ]
    [endpoint] = cluster(rendered, FALLBACK_DEFAULT_CLUSTER)["load_assignment"]["endpoints"][0][
        "lb_endpoints"
    ]
    assert endpoint["endpoint"]["address"] == {
        "envoy_internal_address": {"server_listener_name": FALLBACK_LISTENER}
    }


def gateway_hcm(rendered: dict[str, Any]) -> dict[str, Any]:
    listener = rendered["static_resources"]["listeners"][0]
    hcm: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def test_the_semantic_routers_processor_goes_first(tmp_path: Path) -> None:
    router = {"address": "router.internal:50051", "failure_mode": "closed"}
    raw = {
        "models": [{"name": "m", "url": "http://127.0.0.1:1/v1"}],
        "profiles": {"p": {"models": ["m"]}},
        "adaptive": {
            "enabled": True,
            "profile": "p",
            "signals": [{"type": "header", "headers": ["x-vsr-selected-confidence", "x-conf"]}],
        },
        "semantic_router": {"extproc": router},
    }
    rendered = bootstrap(compile_config(raw))
    hcm = gateway_hcm(rendered)
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == [ROUTER_FILTER, "envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    first = hcm["http_filters"][0]["typed_config"]
    assert first["grpc_service"]["envoy_grpc"]["cluster_name"] == ROUTER_CLUSTER
    assert first["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert first["processing_mode"]["response_header_mode"] == "SEND"
    assert "failure_mode_allow" not in first  # closed: proto3's default false is omitted
    endpoint = cluster(rendered, ROUTER_CLUSTER)["load_assignment"]["endpoints"][0]
    address = endpoint["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == ("router.internal", 50051)
    # Clients' copies of what only the router may set are removed at the edge.
    [early] = hcm["early_header_mutation_extensions"]
    removed = [m["remove"] for m in early["typed_config"]["mutations"]]
    assert removed == [
        "x-request-id",
        "x-vsr-selected-model",
        "x-vsr-selected-confidence",
        "x-conf",
    ]
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(rendered))
    result = validate(path)
    assert result.returncode == 0, result.stderr


def test_without_a_router_there_is_one_processor_and_clients_headers_stay() -> None:
    hcm = gateway_hcm(bootstrap(make_config({"m": "http://127.0.0.1:1/v1"})))
    assert ROUTER_FILTER not in [f["name"] for f in hcm["http_filters"]]
    [early] = hcm["early_header_mutation_extensions"]
    assert [m["remove"] for m in early["typed_config"]["mutations"]] == ["x-request-id"]


def ext_proc_filter(rendered: dict[str, Any]) -> dict[str, Any]:
    [listener] = [x for x in rendered["static_resources"]["listeners"] if x["name"] == "gateway"]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    [found] = [f for f in filters if f["name"] == "envoy.filters.http.ext_proc"]
    return found


def asks_processor(rendered: dict[str, Any], route: dict[str, Any]) -> bool:
    """The filter runs on a route unless it is off by default and the route does not turn
    it on (with a per-route config that overrides nothing; Envoy does not create the filter
    otherwise)."""
    if not ext_proc_filter(rendered).get("disabled"):
        return True
    per_route = route.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_proc")
    per_route_type = f"{TYPE}envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute"
    return per_route == {"@type": per_route_type, "overrides": {}}


@pytest.mark.parametrize(
    ("extra", "direct"),
    [
        ({}, True),
        ({"header_control": {"enabled": False}}, True),
        ({"profiles": {"p": {"models": ["m"]}}}, False),
        ({"profiles": {"p": {"models": ["m"]}}, "ensemble": {"enabled": False}}, True),
    ],
    ids=["headers only", "header control off", "a profile", "ensembles off"],
)
def test_the_processor_is_asked_only_on_routes_where_it_could_answer_otherwise(
    extra: dict[str, Any], direct: bool
) -> None:
    config = compile_models([{"name": "m", "url": "http://127.0.0.1:1/v1"}], **extra)
    rendered = bootstrap(config)
    routes = gateway_routes(rendered)
    chat = ["default_model_direct", "default_model"] if direct else ["default_model"]
    assert list(routes) == [
        "ensemble",
        *chat,
        "models",
        "chat_method_not_allowed",
        "models_method_not_allowed",
        "not_found",
    ]
    asked = {name for name, route in routes.items() if asks_processor(rendered, route)}
    assert asked == {"ensemble", "default_model"}
    for name, route in routes.items():
        if name in asked:
            continue
        # The answer still says that nobody decided, as the processor's would.
        [said] = [
            o for o in route["response_headers_to_add"] if o["header"]["key"] == h.RESP_DECISION
        ]
        assert said["header"]["value"] == "none"
        assert route["metadata"]["filter_metadata"][config.metadata_namespace] == {
            "decision": "none"
        }
    if direct:
        plain = routes["default_model_direct"]
        # The chat completion POST, without any header the processor reads (in any case:
        # Envoy compares lower-cased names; an empty value is present).
        matchers = plain["match"]["headers"]
        assert matchers[0] == {"name": ":method", "string_match": {"exact": "POST"}}
        assert all(
            m == {"name": m["name"], "present_match": True, "invert_match": True}
            for m in matchers[1:]
        )
        assert tuple(m["name"] for m in matchers[1:]) == scope(config).headers
        same = {
            k: v
            for k, v in plain.items()
            if k
            not in (
                "name",
                "match",
                "metadata",
                "typed_per_filter_config",
                "response_headers_to_add",
            )
        }
        assert same == {k: v for k, v in routes["default_model"].items() if k in same}


def test_every_route_asks_the_processor_when_told_to() -> None:
    config = compile_models([{"name": "m", "url": "http://127.0.0.1:1/v1"}])
    rendered = bootstrap(config, processor_on_every_request=True)
    routes = gateway_routes(rendered)
    assert "default_model_direct" not in routes
    assert all(asks_processor(rendered, route) for route in routes.values())
    assert "typed_per_filter_config" not in json.dumps(routes)
