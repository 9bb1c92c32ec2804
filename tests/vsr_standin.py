"""A stand-in for the vLLM semantic router's ext_proc, for tests of the chained filters.

Like the router, it reads the request body (BUFFERED), "classifies" the prompt and says
what it chose with header mutations: ``x-vsr-selected-model`` and
``x-vsr-selected-confidence``, overwriting any copy, with ``clear_route_cache`` as the
router does when it re-routes. On the way back it adds the same two headers to the
response (the router reports its choice there). It records every request's headers as it
saw them, so tests can tell what reached it from the client.

It runs on its own event loop in a thread, so synchronous tests (curl, the openai SDK)
can call the gateway while it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import grpc

from ensemble_extproc._pb.envoy.config.core.v3 import base_pb2 as core
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

MODEL = "x-vsr-selected-model"
CONFIDENCE = "x-vsr-selected-confidence"
OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

# The prompt -> (selected model, confidence).
Classify = Callable[[str], tuple[str, float]]


def _set(key: str, value: str) -> core.HeaderValueOption:
    return core.HeaderValueOption(
        header=core.HeaderValue(key=key, raw_value=value.encode()), append_action=OVERWRITE
    )


def _prompt(body: bytes) -> str:
    try:
        messages = json.loads(body).get("messages") or []
        return str(messages[-1].get("content") or "")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


@dataclass
class Router:
    classify: Classify
    # Each request's headers as they reached the stand-in (lower-cased names).
    seen: list[dict[str, str]] = field(default_factory=list)


class _Servicer(pb_grpc.ExternalProcessorServicer):
    def __init__(self, router: Router) -> None:
        self.router = router

    async def Process(
        self, requests: AsyncIterator[pb.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ProcessingResponse]:
        choice: tuple[str, float] | None = None
        async for request in requests:
            phase = request.WhichOneof("request")
            if phase == "request_headers":
                headers = {
                    h.key: (h.raw_value or h.value.encode()).decode()
                    for h in request.request_headers.headers.headers
                }
                self.router.seen.append(headers)
                yield pb.ProcessingResponse(request_headers=pb.HeadersResponse())
            elif phase == "request_body":
                choice = self.router.classify(_prompt(request.request_body.body))
                common = pb.CommonResponse(
                    header_mutation=pb.HeaderMutation(
                        set_headers=[_set(MODEL, choice[0]), _set(CONFIDENCE, f"{choice[1]:.2f}")]
                    ),
                    clear_route_cache=True,
                )
                yield pb.ProcessingResponse(request_body=pb.BodyResponse(response=common))
            elif phase == "response_headers":
                mutation = pb.HeaderMutation(
                    set_headers=[_set(MODEL, choice[0]), _set(CONFIDENCE, f"{choice[1]:.2f}")]
                    if choice
                    else []
                )
                common = pb.CommonResponse(header_mutation=mutation)
                yield pb.ProcessingResponse(response_headers=pb.HeadersResponse(response=common))
            elif phase == "response_body":
                yield pb.ProcessingResponse(response_body=pb.BodyResponse())
            else:
                yield pb.ProcessingResponse()


@contextlib.contextmanager
def running_router(classify: Classify, port: int) -> Iterator[Router]:
    """The stand-in on 127.0.0.1:``port`` until the block ends."""
    router = Router(classify)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb_grpc.add_ExternalProcessorServicer_to_server(_Servicer(router), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        started.set()
        await stop.wait()
        await server.stop(grace=None)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    if not started.wait(10):
        raise RuntimeError("the stand-in router did not start")
    try:
        yield router
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
