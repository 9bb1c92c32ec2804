"""A small OTLP/gRPC trace receiver that prints each trace as a tree of spans.

For trying tracing on one machine without a collector (docs/tracing.md), and for the
tests, which assert on the spans it decoded::

    python tools/otlp_tree.py --port 4317

It decodes ``ExportTraceServiceRequest`` with the ``opentelemetry-proto`` package's
generated classes (installed by the ``dev`` extra) and keeps every span in memory; a trace
is printed once no span of it arrived for ``--quiet`` seconds. Not a collector: nothing
is stored or forwarded.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as service
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as service_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

KINDS = {
    trace_pb2.Span.SPAN_KIND_INTERNAL: "internal",
    trace_pb2.Span.SPAN_KIND_SERVER: "server",
    trace_pb2.Span.SPAN_KIND_CLIENT: "client",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "producer",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "consumer",
}
# Shown in the tree, when a span has them.
SHOWN = (
    "ensemble.decision",
    "ensemble.strategy",
    "ensemble.winner",
    "ensemble.agreement",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "ensemble.call.attempt",
    "ensemble.call.status",
    "error.type",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
)


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root
    name: str
    kind: str
    service: str
    attributes: Mapping[str, Any]
    status: str  # unset | ok | error
    start_ns: int
    end_ns: int

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def value(any_value: common_pb2.AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


def decode(request: service.ExportTraceServiceRequest) -> list[Span]:
    spans = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
        name = str(resource.get("service.name", "?"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    Span(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=KINDS.get(span.kind, "unspecified"),
                        service=name,
                        attributes={kv.key: value(kv.value) for kv in span.attributes},
                        status={1: "ok", 2: "error"}.get(span.status.code, "unset"),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                    )
                )
    return spans


class _Service(service_grpc.TraceServiceServicer):
    def __init__(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def Export(
        self, request: service.ExportTraceServiceRequest, context: Any
    ) -> service.ExportTraceServiceResponse:
        self._receiver.add(decode(request))
        return service.ExportTraceServiceResponse()


class Receiver:
    """An OTLP/gRPC trace endpoint on ``host:port`` (0: a free port) that keeps spans."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.so_reuseport", 0)]
        )
        service_grpc.add_TraceServiceServicer_to_server(_Service(self), self._server)
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self.endpoint = f"{host}:{self.port}"
        # By span id: Envoy 1.40 exports its ext_proc call's span twice (when the stream
        # is cancelled, and when it closes); the later copy is kept.
        self._by_id: dict[str, Span] = {}
        self._changed = threading.Condition()
        self.last_arrival = 0.0

    def __enter__(self) -> Receiver:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(None)

    def add(self, spans: Iterable[Span]) -> None:
        with self._changed:
            self._by_id.update((span.span_id, span) for span in spans)
            self.last_arrival = time.monotonic()
            self._changed.notify_all()

    def spans(self) -> list[Span]:
        with self._changed:
            return list(self._by_id.values())

    def wait_for(self, done: Callable[[list[Span]], bool], timeout: float = 15.0) -> list[Span]:
        """The spans once ``done(spans)`` holds; AssertionError with them after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(list(self._by_id.values())):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"spans not received within {timeout:g} s:\n{tree(self._by_id.values())}"
                    )
                self._changed.wait(left)
            return list(self._by_id.values())


def _label(span: Span, attributes: bool) -> str:
    head = f"{span.service}: {span.name} [{span.kind}] {span.ms:.1f} ms"
    if span.status == "error":
        head += " ERROR"
    if not attributes:
        return head
    shown = [f"{k}={span.attributes[k]}" for k in SHOWN if k in span.attributes]
    return head + ("  " + " ".join(shown) if shown else "")


def _walk(
    children: Mapping[str, list[Span]], parent: str, prefix: str, lines: list[str], attributes: bool
) -> None:
    kids = children.get(parent, [])
    for i, span in enumerate(kids):
        last = i == len(kids) - 1
        lines.append(f"{prefix}{'└─ ' if last else '├─ '}{_label(span, attributes)}")
        _walk(children, span.span_id, prefix + ("   " if last else "│  "), lines, attributes)


def tree(spans: Iterable[Span], attributes: bool = True) -> str:
    """Every trace as an indented tree, children in start order."""
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    lines: list[str] = []
    for trace_id, members in by_trace.items():
        ids = {s.span_id for s in members}
        children: dict[str, list[Span]] = defaultdict(list)
        for span in sorted(members, key=lambda s: s.start_ns):
            children[span.parent_id if span.parent_id in ids else ""].append(span)
        lines.append(f"trace {trace_id}")
        _walk(children, "", "", lines, attributes)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4317)
    parser.add_argument("--quiet", type=float, default=1.0, help="seconds without spans")
    args = parser.parse_args()
    printed: set[str] = set()
    with Receiver(args.host, args.port) as receiver:
        print(f"OTLP/gRPC receiver on {receiver.endpoint}; Ctrl-C to stop", flush=True)
        try:
            while True:
                time.sleep(args.quiet / 2)
                if time.monotonic() - receiver.last_arrival < args.quiet:
                    continue
                fresh = [s for s in receiver.spans() if s.trace_id not in printed]
                if fresh:
                    print(tree(fresh), flush=True)
                    printed.update(s.trace_id for s in fresh)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
