"""The config file, declared once: one frozen Struct per section, also its runtime form.

Each field states its YAML key, type, default and constraints (``msgspec.Meta``: ranges,
patterns, a ``description`` shown by editors and in errors). ``config.decode`` checks a
file against these declarations, ``config.schema`` publishes them as a JSON Schema, and
``config.load`` compiles what spans sections (references between models, profiles and
rules, secrets from the environment, the semantic router's shape) into ``Config``.

To add a key, add one field to its section, e.g. in ``EnsembleSettings``::

    hedge_after_ms: Annotated[float, Meta(ge=0, description="...")] = 250.0

and run ``make schema``: its key, default, type and range checks, error messages and JSON
Schema follow from that line. A new block is a ``section.Section`` subclass (``frozen=True``)
plus a field of that type in its parent, as ``ensemble.trust`` is
(``trust: TrustSettings = TrustSettings()``). Only a check that spans keys (a model name
that must exist, an environment variable, one duration longer than another) goes into
``config.load``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr

from .. import headers as h
from ..adaptive.difficulty import DifficultyWeights
from ..continuation import Style
from ..cost.model import CostEstimate, Dollars, Price
from ..rules import Rule
from ..section import Count, Fraction, Positive, Section
from ..spec import EnsembleSpec
from ..strategies import STRATEGIES
from ..strategies.settings import StrategySettings
from ..trust.model import TrustSettings
from .demo import DemoModel

# Where the key signing internal headers comes from, unless security.internal_secret_env says.
DEFAULT_SECRET_ENV = "ENSEMBLE_INTERNAL_SECRET"

# Envoy reads model keys from its environment by these names (%ENVIRONMENT(NAME)%, Lua).
ENV_NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[
    str,
    Meta(
        pattern=ENV_NAME_PATTERN,
        title="environment variable name",
        description="letters, digits and _, not starting with a digit",
    ),
]
Url = Annotated[
    str,
    Meta(
        pattern="^https?://",
        title="URL",
        description="an http(s) URL: the base (.../v1) or the full .../chat/completions",
    ),
]
_PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"


class Address:
    """host:port"""

    __slots__ = ("host", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    @classmethod
    def from_text(cls, text: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must be host:port, got {text!r}")
        return cls(host, int(port))

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^.+:{_PORT}$"}

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def authority(self) -> str:
        """``host:port`` as a URL writes it: an IPv6 host in brackets."""
        bare = ":" in self.host and not self.host.startswith("[")
        return f"[{self.host}]:{self.port}" if bare else str(self)

    def __repr__(self) -> str:
        return f"Address({self.host!r}, {self.port})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Address) and (self.host, self.port) == (other.host, other.port)

    def __hash__(self) -> int:
        return hash((self.host, self.port))


class RetryPolicy(Section, frozen=True):
    """Retries of one endpoint call on connection errors, 429 and 5xx, within the deadline."""

    attempts: Annotated[Count, Meta(description="total tries; 1 = no retry")] = 2
    backoff_ms: Positive = 100.0
    max_backoff_ms: Positive = 2000.0


NO_RETRY = RetryPolicy(attempts=1)
Retries = Annotated[RetryPolicy | Literal[False], Meta(description="false: no retry")]


class BreakerPolicy(Section, frozen=True):
    """Skip an endpoint for ``cooldown_seconds`` after ``failures`` failures in a window."""

    failures: Count = 5
    window_seconds: Positive = 30.0
    cooldown_seconds: Positive = 15.0


class Model(Section, frozen=True):
    """An OpenAI-compatible model endpoint (``models[]``)."""

    name: Annotated[
        str,
        Meta(
            pattern=r"^[^,\s](?:[^,]*[^,\s])?$",
            title="model name",
            description="a non-empty name without commas or surrounding spaces",
        ),
    ]
    url: Url
    upstream_model: Annotated[str, Meta(description="sent to the endpoint; default: name")] = ""
    weight: Positive = 1.0
    # The variable holding the endpoint's key, read at start-up (never logged).
    api_key_env: EnvName | None = None
    # Measured accuracy: the weighted strategy then uses log-odds weights.
    accuracy: Annotated[float, Meta(gt=0, lt=1)] | None = None
    # Send the client's own Authorization header to this endpoint (off: never forwarded).
    forward_client_auth: bool = False
    # None: the ensemble's retries.
    retries: Retries | None = None
    # https only: a PEM file of the CAs to trust instead of the system's.
    ca_file: str | None = None
    # What it charges: the ensemble's cost is reported per call and in total, and a cost
    # cap needs it (docs/cost.md). None: its calls' cost is unknown.
    price: Price | None = None
    # How it continues a partial assistant message, so that a relayed stream that broke
    # can be resumed on it (docs/strategies.md#streaming). None: it cannot.
    continuation: Annotated[
        Style | None,
        Meta(
            description="continue_final_message (vLLM), prefill (a trailing assistant "
            "message is continued) or prefix (the same with prefix: true); null: cannot "
            "continue a partial answer"
        ),
    ] = None

    @property
    def retry(self) -> RetryPolicy | None:
        return NO_RETRY if self.retries is False else self.retries


class Endpoint(Model, frozen=True):
    """A model as compiled: its full chat completions URL, its key, and where it came from."""

    # Read from api_key_env at start-up, never logged.
    api_key: str | None = None
    # A demo backend started by this project, not a real model.
    demo: bool = False

    @property
    def address(self) -> Address:
        parts = urlsplit(self.url)
        default_port = 443 if parts.scheme == "https" else 80
        return Address(parts.hostname or "", parts.port or default_port)


# Checked against the registry by config.load; the schema lists the names.
Strategy = Annotated[str, Meta(extra_json_schema={"enum": list(STRATEGIES)})]


class EnsembleSettings(StrategySettings, frozen=True):
    """The ``ensemble`` section (its strategy blocks are declared in strategies.settings)."""

    # false: the processor never re-routes, whatever the headers say (seed key `enabled`).
    enabled: bool = True
    default_strategy: Strategy = "voting"
    default_min_responses: Count = 2
    # Models used when a request asks for an ensemble but names none; empty: it must name them.
    default_models: tuple[str, ...] = ()
    # Overall deadline of one ensemble request.
    timeout_seconds: Positive = 30.0
    # Deadline of one model call within it (None: timeout_seconds).
    model_timeout_seconds: Positive | None = None
    # Cap on model calls running at once in this upstream process (seed meaning).
    max_concurrent_requests: Count = 64
    max_models_per_request: Count = 5
    max_body_bytes: Count = 1024 * 1024
    # An endpoint answer larger than this is a failed candidate, never truncated.
    max_response_bytes: Count = 8 * 1024 * 1024
    # Ensemble requests served at once by one upstream process; more get a 429.
    max_in_flight: Count = 256
    # The whole request body must arrive within this (else a 408); read before a request
    # takes one of the max_in_flight slots, so slow clients cannot hold them.
    body_timeout_seconds: Positive = 30.0
    retries: Retries = RetryPolicy()
    circuit_breaker: Annotated[
        BreakerPolicy | Literal[False], Meta(description="false: no circuit breaking")
    ] = BreakerPolicy()
    # While a streamed ensemble is still deciding, an SSE comment this often keeps proxies
    # from closing the connection.
    stream_keepalive_seconds: Positive = 5.0
    # The semantic router's shape: model name -> URL (translated to models).
    endpoint_mappings: dict[str, Url] = msgspec.field(default_factory=dict)
    # Learned trust: accuracies and correlated members, learned (declared in trust.model).
    trust: TrustSettings = TrustSettings()
    # How a call's cost is estimated before it starts, for a cost cap (docs/cost.md).
    cost_estimate: CostEstimate = CostEstimate()

    @property
    def retry(self) -> RetryPolicy:
        return self.retries or NO_RETRY

    @property
    def breaker(self) -> BreakerPolicy | None:
        return self.circuit_breaker or None


class Profile(Section, frozen=True):
    """A named ensemble: selected by ``"model": "<name>"``, a rule, or adaptive triggering."""

    models: Annotated[tuple[str, ...], Meta(min_length=1)]
    # Default: ensemble.default_strategy.
    strategy: Strategy | None = None
    # Default: the strategy's own quorum, else ensemble.default_min_responses.
    min_responses: Count | None = None
    # Default: ensemble.timeout_seconds (and never longer).
    timeout_seconds: Positive | None = None
    # The most its ensembles may cost, in US dollars (a client's x-ensemble-max-cost-usd
    # may lower it); every model it calls needs a price.
    max_cost_usd: (
        Annotated[Dollars, Meta(description="US dollars; every model it calls needs a price")]
        | None
    ) = None


class RuleConfig(Section, frozen=True):
    """First matching rule wins; all of its conditions must match (docs/policy.md)."""

    name: str
    profile: str
    # field (path, headers.<name>, body.<field.path>, last_user_message, system_prompt)
    # -> {operator: argument}; compiled by rules.compile_condition.
    match: Annotated[dict[str, Any], Meta(min_length=1)]


class RequireHeader(Section, frozen=True):
    name: str
    values: Annotated[frozenset[str], Meta(min_length=1)]

    def __post_init__(self) -> None:
        force_setattr(self, "name", self.name.lower())  # Envoy sends header names lower-cased


class HeaderControl(Section, frozen=True):
    """Who may ask for an ensemble with ``x-ensemble-*`` headers."""

    enabled: bool = True
    # Comma-separated client API keys (Authorization: Bearer, or x-api-key); others get a 403.
    api_keys_env: EnvName | None = None
    # When set, only requests carrying this header with one of these values may.
    require_header: RequireHeader | None = None


class SignalConfig(Section, frozen=True):
    """One confidence signal of adaptive ensembling (see adaptive.signals)."""

    type: Annotated[
        str,
        Meta(
            pattern="^(header|difficulty|python:.+)$",
            title="signal",
            description="header, difficulty, or python:<module>:<factory> for your own",
        ),
    ]
    weight: Positive = 1.0
    # type header: the headers read, first present wins (the semantic router's by default).
    headers: tuple[str, ...] = (h.VSR_SELECTED_CONFIDENCE,)
    # type difficulty: the weights of its features.
    weights: DifficultyWeights = DifficultyWeights()

    def __post_init__(self) -> None:
        force_setattr(self, "headers", tuple(h.lower() for h in self.headers))


class AdaptiveSettings(Section, frozen=True):
    """Ensemble a request when its confidence is below ``threshold``."""

    enabled: bool = False
    profile: str = ""
    threshold: Fraction = 0.5
    signals: Annotated[tuple[SignalConfig, ...], Meta(min_length=1)] = (
        SignalConfig("header"),
        SignalConfig("difficulty"),
    )
    # min: the least confident signal decides; mean: weighted by signal weight.
    combine: Literal["min", "mean"] = "min"
    sample_rate: Fraction = 1.0
    max_per_second: Positive | None = None


class Security(Section, frozen=True):
    # The variable holding the HMAC key that proves internal headers came from the processor.
    # Named: it must be set. Not named: ENSEMBLE_INTERNAL_SECRET when set, else unsigned.
    internal_secret_env: EnvName | None = None
    # How long a signature is accepted (once) after the processor made it.
    signature_lifetime_seconds: Positive = 10.0


class Logging(Section, frozen=True):
    # json: one object a line; prompts and answers only with include_text.
    format: Literal["json", "text"] = "json"
    include_text: bool = False


class EnvoySettings(Section, frozen=True):
    """Choices of the rendered Envoy bootstrap."""

    # closed: the processor unreachable -> an error (a spoofed routing header cannot pass);
    # open: the request goes on unprocessed, to the default model.
    failure_mode: Literal["closed", "open"] = "closed"
    # Envoy's wait for each processor answer; the processor answers in well under 1 ms.
    message_timeout_ms: Positive = 500.0
    # The ensemble upstream unhealthy -> ensemble requests go to the default model.
    fallback_to_default: bool = True
    # Slow or idle clients (the HTTP connection manager's timeouts):
    # a request's headers must be complete within this of their first byte (else the
    # connection is closed),
    request_headers_timeout_seconds: Positive = 10.0
    # the whole request (headers and body) within this (disarmed once the answer starts,
    # so long streamed answers are not cut),
    request_timeout_seconds: Positive = 30.0
    # a request with nothing sent either way for this long is ended (longer than any
    # silent wait: a non-streamed answer, default model or ensemble),
    stream_idle_timeout_seconds: Positive = 300.0
    # and a connection with no request for this long is closed.
    idle_timeout_seconds: Positive = 3600.0


class RouterProcessor(Section, frozen=True):
    """The vLLM semantic router's ext_proc (or any processor that belongs before ours):
    rendered into Envoy's filter chain ahead of this project's processor."""

    # Its gRPC address (plaintext HTTP/2), e.g. the router's default 127.0.0.1:50051.
    address: Address
    # open (the router's own Envoy config): the router down -> the request goes on without
    # its headers; closed: an error.
    failure_mode: Literal["open", "closed"] = "open"
    # Envoy's wait for each of its answers (it may run classifiers on the prompt).
    message_timeout_ms: Positive = 5000.0
    # What it is sent besides the request headers: the request body (it classifies the
    # prompt), the response headers (its x-vsr-* answer headers), the response body
    # (buffered delays a stream until it ends).
    request_body: Literal["buffered", "none"] = "buffered"
    response_headers: bool = True
    response_body: Literal["none", "streamed", "buffered"] = "none"


class SemanticRouter(Section, frozen=True):
    """Running next to the vLLM semantic router (docs/semantic-router.md)."""

    # The seed's dialect: x-vsr-ensemble-* response headers and GET /health on the
    # upstream. auto: on when the file is in the semantic router's shape
    # (ensemble.endpoint_mappings).
    dialect: Annotated[
        bool | Literal["auto"],
        Meta(description="true, false, or auto: on for a file in the semantic router's shape"),
    ] = "auto"
    # The router's ext_proc, called before ours; its confidence header is then believed
    # only from it (clients' copies are removed at the edge).
    extproc: RouterProcessor | None = None


class TracingSettings(Section, frozen=True):
    """OpenTelemetry traces over OTLP/gRPC (docs/tracing.md). Off by default; the standard
    ``OTEL_*`` environment variables apply too (``OTEL_TRACES_EXPORTER=otlp`` turns it on)."""

    enabled: bool = False
    # The OTLP/gRPC collector: Envoy exports here, and so do the processor and the upstream
    # unless OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT names another.
    collector: Address = msgspec.field(default_factory=lambda: Address("127.0.0.1", 4317))
    # service.name: <service_name>-envoy, -processor, -upstream (OTEL_SERVICE_NAME, when
    # set, names the processor and the upstream).
    service_name: Annotated[
        str,
        Meta(
            pattern=r"^[A-Za-z0-9_.-]+$",
            title="service name",
            description="letters, digits, _ . and -",
        ),
    ] = "ensemble-extproc"
    # Share of the requests Envoy starts a trace for; the processor and the upstream
    # follow Envoy's decision (a parent-based sampler).
    sample_percent: Annotated[float, Meta(ge=0, le=100)] = 100.0


def _at(port: int) -> Any:
    # A factory: msgspec cannot put an Address default into the schema (config.schema does).
    return msgspec.field(default_factory=lambda: Address("127.0.0.1", port))


class Listeners(Section, frozen=True):
    envoy: Address = _at(10000)
    envoy_admin: Address = _at(9901)
    # Below Linux's ephemeral range (32768-60999): a client socket cannot hold it by chance.
    extproc: Address = _at(9002)
    upstream: Address = _at(8090)
    # The processor's Prometheus /metrics (the upstream serves its own on its port).
    extproc_metrics: Address = _at(9464)


class Demo(Section, frozen=True):
    # Demo backends started by ``run`` (empty: use real endpoints only).
    models: tuple[DemoModel, ...] = ()


class ConfigFile(Section, frozen=True):
    """The whole file (the semantic router's shape is translated to it first)."""

    models: tuple[Model, ...] = ()
    # Where Envoy's default route sends requests that are not ensembled (default: the
    # first model).
    default_model: str | None = None
    ensemble: EnsembleSettings = EnsembleSettings()
    listen: Listeners = msgspec.field(default_factory=Listeners)
    demo: Demo = Demo()
    profiles: dict[str, Profile] = msgspec.field(default_factory=dict)
    rules: tuple[RuleConfig, ...] = ()
    header_control: HeaderControl = HeaderControl()
    adaptive: AdaptiveSettings = AdaptiveSettings()
    security: Security = Security()
    # Envoy dynamic metadata namespace of the processor's decision facts.
    metadata_namespace: Annotated[
        str,
        Meta(
            pattern=r"^[A-Za-z0-9_.]+$", title="namespace", description="letters, digits, _ and ."
        ),
    ] = "ensemble_extproc"
    logging: Logging = Logging()
    envoy: EnvoySettings = EnvoySettings()
    semantic_router: SemanticRouter = SemanticRouter()
    tracing: TracingSettings = msgspec.field(default_factory=TracingSettings)


@dataclass(frozen=True, slots=True)
class Config:
    """The compiled config: the file's sections, and what ``config.load`` resolved."""

    endpoints: Mapping[str, Endpoint]
    default_model: str
    ensemble: EnsembleSettings
    listen: Listeners
    demo_models: tuple[DemoModel, ...]
    # Profiles as the spec of the ensemble they select.
    profiles: Mapping[str, EnsembleSpec]
    rules: tuple[Rule, ...]
    header_control: HeaderControl
    # From header_control.api_keys_env.
    client_api_keys: frozenset[str]
    adaptive: AdaptiveSettings
    security: Security
    # From security.internal_secret_env; None: internal headers are not signed.
    internal_secret: bytes | None = field(repr=False)
    metadata_namespace: str
    envoy: EnvoySettings
    logging: Logging
    semantic_router: SemanticRouter
    # semantic_router.dialect resolved: the seed's response headers and GET /health.
    seed_dialect: bool
    # tracing.enabled as the OTEL_* environment variables left it (config.load).
    tracing: TracingSettings
