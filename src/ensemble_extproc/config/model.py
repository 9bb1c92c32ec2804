"""Typed, frozen configuration: compiled once at start-up, then only read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..demo.models import DemoModel
from ..rules import Rule
from ..strategies.base import StrategySettings
from ..trust.model import TrustSettings


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of one endpoint call on connection errors, 429 and 5xx, within the deadline."""

    attempts: int = 2  # total tries; 1 = no retry
    backoff_seconds: float = 0.1
    max_backoff_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """Skip an endpoint for ``cooldown_seconds`` after ``failures`` failures in a window."""

    failures: int = 5
    window_seconds: float = 30.0
    cooldown_seconds: float = 15.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An OpenAI-compatible model endpoint that an ensemble may call."""

    name: str
    # Full URL of the endpoint's chat completions route.
    url: str
    # Model name sent to the endpoint (defaults to ``name``).
    upstream_model: str
    weight: float = 1.0
    # Resolved from the environment variable named in config at start-up, never logged.
    api_key: str | None = None
    # That variable's name: Envoy reads the key from its own environment for the default
    # route, so the rendered bootstrap never holds it.
    api_key_env: str | None = None
    # PEM file of the CAs that sign an https endpoint's certificate (None: the system CAs).
    ca_file: str | None = None
    # A demo backend started by this project, not a real model.
    demo: bool = False
    # Measured accuracy in (0, 1): the weighted strategy then uses log-odds weights.
    accuracy: float | None = None
    # Send the client's own Authorization header to this endpoint (off: never forwarded).
    forward_client_auth: bool = False
    # None: the ensemble's default retry policy.
    retry: RetryPolicy | None = None

    @property
    def address(self) -> Address:
        parts = urlsplit(self.url)
        default_port = 443 if parts.scheme == "https" else 80
        return Address(parts.hostname or "", parts.port or default_port)


@dataclass(frozen=True, slots=True)
class EnsembleSettings:
    # false: the processor never re-routes, whatever the headers say (seed key `enabled`).
    enabled: bool = True
    default_strategy: str = "voting"
    default_min_responses: int = 2
    # Models used when a request asks for an ensemble but names none; empty: it must name them.
    default_models: tuple[str, ...] = ()
    # Overall deadline of one ensemble request.
    timeout_seconds: float = 30.0
    # Deadline of one model call within it (never longer than the overall deadline).
    model_timeout_seconds: float = 30.0
    # Cap on model calls running at once in this upstream process (seed meaning).
    max_concurrent_requests: int = 64
    max_models_per_request: int = 5
    max_body_bytes: int = 1024 * 1024
    # An endpoint answer larger than this is a failed candidate, never truncated.
    max_response_bytes: int = 8 * 1024 * 1024
    # Ensemble requests served at once by one upstream process; more get a 429.
    max_in_flight: int = 256
    # The whole request body must arrive within this (else a 408); read before a request
    # takes one of the max_in_flight slots, so slow clients cannot hold them.
    body_timeout_seconds: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # None: no circuit breaking.
    breaker: BreakerPolicy | None = field(default_factory=BreakerPolicy)
    # While a streamed ensemble is still deciding, an SSE comment this often keeps proxies
    # from closing the connection.
    stream_keepalive_seconds: float = 5.0
    # Settings of the individual strategies (``ensemble.<strategy>`` blocks).
    strategy: StrategySettings = field(default_factory=StrategySettings)
    # Learned trust (``ensemble.trust``): accuracies and correlated members, learned.
    trust: TrustSettings = field(default_factory=TrustSettings)


@dataclass(frozen=True, slots=True)
class Profile:
    """A named ensemble: selected by ``"model": "<name>"``, a rule, or adaptive triggering."""

    name: str
    models: tuple[str, ...]
    strategy: str
    min_responses: int
    timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class HeaderControl:
    """Who may ask for an ensemble with ``x-ensemble-*`` headers."""

    enabled: bool = True
    # When set, only clients presenting one of these API keys (Authorization: Bearer, or
    # x-api-key) may use the headers; others get a 403.
    api_keys: frozenset[str] = frozenset()
    # When set, only requests carrying this header with one of these values may.
    require_header: str | None = None
    require_values: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SignalConfig:
    kind: str  # header | difficulty
    weight: float = 1.0
    header_names: tuple[str, ...] = ()
    difficulty_weights: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AdaptiveSettings:
    """Ensemble a request when its confidence is below ``threshold``."""

    enabled: bool = False
    profile: str = ""
    threshold: float = 0.5
    signals: tuple[SignalConfig, ...] = ()
    combine: str = "min"  # min | mean (weighted by signal weight)
    sample_rate: float = 1.0
    max_per_second: float | None = None


@dataclass(frozen=True, slots=True)
class EnvoySettings:
    """Choices of the rendered Envoy bootstrap."""

    # closed: the processor unreachable -> an error (a spoofed routing header cannot pass);
    # open: the request goes on unprocessed, to the default model.
    failure_mode: str = "closed"
    # Envoy's wait for each processor answer; the processor answers in well under 1 ms.
    message_timeout_seconds: float = 0.5
    # The ensemble upstream unhealthy -> ensemble requests go to the default model.
    fallback_to_default: bool = True
    # Slow or idle clients (the HTTP connection manager's timeouts):
    # a request's headers must be complete within this of their first byte (else the
    # connection is closed),
    request_headers_timeout_seconds: float = 10.0
    # the whole request (headers and body) within this (disarmed once the answer starts,
    # so long streamed answers are not cut),
    request_timeout_seconds: float = 30.0
    # a request with nothing sent either way for this long is ended (longer than any
    # silent wait: a non-streamed answer, default model or ensemble),
    stream_idle_timeout_seconds: float = 300.0
    # and a connection with no request for this long is closed.
    idle_timeout_seconds: float = 3600.0


@dataclass(frozen=True, slots=True)
class Listeners:
    envoy: Address = Address("127.0.0.1", 10000)
    envoy_admin: Address = Address("127.0.0.1", 9901)
    # Below Linux's ephemeral range (32768-60999): a client socket cannot hold it by chance.
    extproc: Address = Address("127.0.0.1", 9002)
    upstream: Address = Address("127.0.0.1", 8090)
    # The processor's Prometheus /metrics (the upstream serves its own on its port).
    extproc_metrics: Address = Address("127.0.0.1", 9464)


@dataclass(frozen=True, slots=True)
class Config:
    endpoints: Mapping[str, Endpoint]
    # Endpoint that Envoy's default route sends requests to when they are not ensembled.
    default_model: str
    ensemble: EnsembleSettings
    listen: Listeners
    # Demo backends started by ``run`` (empty: use real endpoints only).
    demo_models: tuple[DemoModel, ...] = ()
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()
    header_control: HeaderControl = field(default_factory=HeaderControl)
    adaptive: AdaptiveSettings = field(default_factory=AdaptiveSettings)
    # Key of the HMAC that proves internal headers came from the processor; None: unsigned.
    internal_secret: bytes | None = field(default=None, repr=False)
    # How long a signature is accepted (once) after the processor made it.
    signature_lifetime_seconds: float = 10.0
    # Envoy dynamic metadata namespace of the processor's decision facts.
    metadata_namespace: str = "ensemble_extproc"
    envoy: EnvoySettings = field(default_factory=EnvoySettings)
    # Logs: "json" (one object a line) or "text"; prompts and answers only when asked.
    log_format: str = "json"
    log_include_text: bool = False
