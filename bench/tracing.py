"""What tracing costs the processor: CPU per request, tracing off and on, against a baseline.

Starts processor processes side by side (``ensemble-extproc extproc``): this checkout with
tracing off, with tracing on (exporting over OTLP/gRPC to ``tools/otlp_tree.py`` on
loopback), and, with ``--against DIR``, another checkout's ``src`` (e.g. main's) with the
same config. Each round drives every processor in turn with the same ext_proc streams over
one real gRPC channel, as Envoy does: Envoy's trace context in the stream's metadata, the
request headers (an ``x-ensemble-models`` request, decided on headers), one answer, the
end. CPU is the process's user + system time (``/proc``) per stream. Prints a table.

    python -m bench.tracing --against /work/main --streams 3000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml

from bench.speedkit import listen_block
from ensemble_extproc._pb.envoy.config.core.v3 import base_pb2 as core
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")
HEADERS = {
    ":method": "POST",
    ":path": "/v1/chat/completions",
    ":authority": "gateway",
    ":scheme": "http",
    "content-type": "application/json",
    "x-request-id": "7f1c2a9e-4b1d-4c5e-9d3a-1b2c3d4e5f60",
    "x-ensemble-models": "a,b,c",
}


@dataclass
class Processor:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    cpu_us: list[float]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def message() -> pb.ProcessingRequest:
    header_map = core.HeaderMap(
        headers=[core.HeaderValue(key=k, raw_value=v.encode()) for k, v in HEADERS.items()]
    )
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=header_map, end_of_stream=False)
    )


async def drive(port: int, streams: int, concurrency: int) -> None:
    request = message()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)

        async def one() -> None:
            parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
            # Written to as Envoy does (grpc-stubs types only the request-iterator form).
            call = stub.Process(metadata=(("traceparent", parent),))  # type: ignore[call-arg]
            await call.write(request)
            await call.read()
            await call.done_writing()
            await call.read()

        async def worker(count: int) -> None:
            for _ in range(count):
                await one()

        await asyncio.gather(*(worker(streams // concurrency) for _ in range(concurrency)))


def start(name: str, src: Path, config: Path, port: int, env: dict[str, str]) -> Processor:
    argv = [sys.executable, "-m", "ensemble_extproc", "extproc", "--config", str(config)]
    process = subprocess.Popen(
        argv,
        env={**os.environ, "PYTHONPATH": str(src), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return Processor(name, process, port, [])


def start_receiver(port: int) -> subprocess.Popen[bytes]:
    """The OTLP/gRPC receiver the traced processor exports to."""
    argv = [sys.executable, str(ROOT / "tools" / "otlp_tree.py"), "--port", str(port)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL)


def config_file(work: Path, name: str, tracing: bool, collector: str) -> tuple[Path, int]:
    listen = listen_block()
    raw: dict[str, object] = {
        "models": [{"name": n, "url": f"http://127.0.0.1:9/{n}"} for n in ("a", "b", "c")],
        "listen": listen,
    }
    if tracing:  # no section at all otherwise: a baseline checkout may not know it
        raw["tracing"] = {"enabled": True, "collector": collector}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path, int(listen["extproc"].rpartition(":")[2])


async def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            await drive(port, 1, 1)
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no processor on port {port} after 30 s") from None
            await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        receiver_port = int(listen_block()["envoy"].rpartition(":")[2])
        receiver = start_receiver(receiver_port)
        collector = f"127.0.0.1:{receiver_port}"
        variants = [("off", ROOT / "src", False), ("on", ROOT / "src", True)]
        if args.against:
            variants.insert(0, ("baseline", Path(args.against) / "src", False))
        processors = []
        try:
            for name, src, tracing in variants:
                config, port = config_file(work, name, tracing, collector)
                processors.append(start(name, src, config, port, {}))
            for processor in processors:
                await wait_ready(processor.port)
                await drive(processor.port, 500, args.concurrency)  # warm-up
            for _ in range(args.rounds):
                for processor in processors:
                    before = cpu_seconds(processor.process.pid)
                    await drive(processor.port, args.streams, args.concurrency)
                    used = cpu_seconds(processor.process.pid) - before
                    processor.cpu_us.append(used / args.streams * 1e6)
        finally:
            for process in [*(p.process for p in processors), receiver]:
                process.terminate()
                process.wait(10)
    return report(args, processors)


def report(args: argparse.Namespace, processors: Sequence[Processor]) -> str:
    base = statistics.median(processors[0].cpu_us)
    lines = [
        f"processor CPU per ext_proc stream (headers only, Envoy's traceparent in the "
        f"metadata); {args.streams} streams x {args.rounds} rounds, {args.concurrency} "
        "concurrent on one channel, processors taking turns",
        "",
        f"| processor | median us/stream | rounds | vs {processors[0].name} |",
        "|---|---|---|---|",
    ]
    for processor in processors:
        median = statistics.median(processor.cpu_us)
        rounds = ", ".join(f"{v:.0f}" for v in processor.cpu_us)
        lines.append(f"| {processor.name} | {median:.0f} | {rounds} | {median / base:.2f}x |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="another checkout (its src/) as the baseline")
    parser.add_argument("--streams", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args(argv)
    print(asyncio.run(run(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
