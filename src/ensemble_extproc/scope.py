"""Which requests the processor must see, worked out once from the config (pure).

Envoy picks a route before ext_proc runs. The rendered bootstrap therefore calls the
processor only on routes whose requests it could answer differently from Envoy alone;
every other request is routed by Envoy with ext_proc disabled on its route, at Envoy's own
cost. The processor answers every request that is not ``POST /v1/chat/completions`` with
a plain pass-through, so only chat completions can need it:

- a chat completion carrying a header the processor reads: ``x-ensemble-*`` (an ensemble
  asked for, a bad value's 400, a client's copy of an internal header to remove), the
  confidence headers of adaptive header signals, and ``Content-Encoding`` (a compressed
  body is the processor's 415, whatever the config);
- every chat completion, when a config key reads the body or cannot be decided from
  headers alone (profiles, rules, the difficulty signal, plugin signals, a header signal
  that the semantic router's processor sets: it runs after Envoy picked the route).

Presence of a header name is all that matters here: Envoy lower-cases names, and a
repeated or empty header is still present, so any spelling of a listed header reaches the
processor, which judges its value.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import headers as h
from . import paths
from .body import CONTENT_ENCODING
from .config import Config

# Headers that ask for an ensemble, read when ensembles and header control are on. The
# processor reads x-ensemble-enable whatever the config (a value that is neither true nor
# false is a 400, even with ensembles off), and removes clients' copies of the internal
# headers (the ensemble route matches on one of them).
ASKING = tuple(name for name in h.REQUEST_HEADERS if name != h.ENABLE)


@dataclass(frozen=True, slots=True)
class Reason:
    """A config key that sends every chat completion to the processor, and why."""

    key: str
    why: str
    reads_body: bool

    def __str__(self) -> str:
        return f"{self.key}: {self.why}"


@dataclass(frozen=True, slots=True)
class Scope:
    # Non-empty: every chat completion goes to the processor, because of these keys.
    every_chat_completion: tuple[Reason, ...]
    # Otherwise: a chat completion goes to the processor when it carries any of these.
    headers: tuple[str, ...]

    @property
    def reads_body(self) -> bool:
        """Whether the processor asks for the body of a chat completion its headers do
        not decide."""
        return any(reason.reads_body for reason in self.every_chat_completion)

    def describe(self) -> str:
        """For operators (``check-config``): which requests pay for the processor."""
        if self.every_chat_completion:
            what = "reads the body of" if self.reads_body else "sees"
            lines = [
                f"processor: {what} every chat completion (POST {paths.CHAT_COMPLETIONS}), "
                "because of:",
                *(f"  - {reason}" for reason in self.every_chat_completion),
                "  Envoy alone routes every other request.",
            ]
            return "\n".join(lines)
        return (
            "processor: asked only for chat completions that carry one of "
            + ", ".join(self.headers)
            + "; Envoy alone routes every other request (at Envoy's own cost)."
        )


def every_chat_completion(config: Config) -> tuple[Reason, ...]:
    """The config keys that make the processor see every chat completion (empty: none)."""
    if not config.ensemble.enabled:
        return ()  # "disabled" is decided before any other source is read
    reasons = []
    if config.profiles:
        names = ", ".join(config.profiles)
        reasons.append(Reason("profiles", f'a request\'s "model" may name one: {names}', True))
    for i, rule in enumerate(config.rules):
        fields = ", ".join(c.field for c in rule.conditions)
        # A header condition may match a request without the header (present: false, a
        # regex matching ""): header presence cannot stand in for it.
        reasons.append(Reason(f"rules[{i}] ({rule.name})", f"matches on {fields}", rule.needs_body))
    if config.adaptive.enabled:
        for i, signal in enumerate(config.adaptive.signals):
            if signal.type == "difficulty":
                reasons.append(
                    Reason(f"adaptive.signals[{i}]", "difficulty: reads the prompt", True)
                )
            elif signal.type != "header":
                # A plugin says whether it reads the body only once imported: assume it does.
                reasons.append(Reason(f"adaptive.signals[{i}]", f"{signal.type}: a plugin", True))
            elif config.semantic_router.extproc is not None:
                # The router sets its headers after Envoy picked the route (and Envoy left
                # this filter out of it): their presence cannot choose the route.
                reasons.append(
                    Reason(
                        f"adaptive.signals[{i}]",
                        "header: set by semantic_router.extproc after Envoy picked the route",
                        False,
                    )
                )
    return tuple(reasons)


def scope(config: Config) -> Scope:
    """Which chat completions the rendered routes send to the processor."""
    reasons = every_chat_completion(config)
    names = [h.ENABLE]
    if config.ensemble.enabled and config.header_control.enabled:
        names += ASKING
    names += h.INTERNAL
    names.append(CONTENT_ENCODING)
    # A bad cost cap is a 400 on every chat completion, whoever decides (docs/cost.md).
    names.append(h.MAX_COST)
    if config.ensemble.enabled and config.adaptive.enabled:
        for signal in config.adaptive.signals:
            names += [name for name in signal.headers if signal.type == "header"]
    return Scope(reasons, tuple(dict.fromkeys(names)))
