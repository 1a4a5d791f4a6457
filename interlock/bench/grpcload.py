"""Open-loop gRPC load from several processes on grpcio's synchronous stub.

One asyncio process with grpc.aio offers at most about 2,000 Checks/s on 2 cores (it costs
about as much CPU per call as the server it measures), so past 1,000/s the generator
itself queued and its tail was charged to the server. Here each of `processes` spawned
interpreters sends its share of the schedule with `future()` calls (the send is issued
from a plain loop, the answer lands on grpc's own thread), and the results say how late
the sends went out, so a generator that cannot keep up is visible instead of hidden.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from dataclasses import dataclass
from typing import Any

from interlock.bench.load import OpenLoopResult

WARMUP = 100
"""Calls per process before the schedule starts: the channel is connected and warm."""
TIMEOUT_S = 1.0
"""Each call's deadline: the ext_authz timeout of the Envoy config interlock ships
(`deploy/envoy.yaml`). A Check not answered by then has been denied by Envoy."""


@dataclass
class Offered:
    """How well the generator kept its schedule."""

    issued_per_s: float
    """Sends issued per second over the whole schedule, all processes."""
    late_p99_ms: float
    """99th percentile of how late a send was issued after it was due."""
    cpu_s: float
    """CPU the generator processes used (a share of the machine the server did not get)."""


def _worker(
    port: int,
    method: str,
    bodies: list[bytes],
    rate: float,
    seconds: float,
    phase: float,
    start_at: float,
    out: Any,
) -> None:
    import grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    for i in range(WARMUP):
        call(bodies[i % len(bodies)], timeout=10)
    n = max(1, int(rate * seconds))
    latencies: list[float] = []
    late: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    left = [n]
    done = threading.Event()

    def finished(future: Any, due: float) -> None:
        try:
            future.result()
            latencies.append(time.monotonic() - due)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])
        with lock:
            left[0] -= 1
            if not left[0]:
                done.set()

    while time.time() < start_at:
        time.sleep(0.0005)
    cpu0 = time.process_time()
    t0 = time.monotonic() + phase / rate
    for i in range(n):
        due = t0 + i / rate
        ahead = due - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        late.append(max(0.0, time.monotonic() - due))
        future = call.future(bodies[i % len(bodies)], timeout=TIMEOUT_S)
        future.add_done_callback(lambda f, due=due: finished(f, due))
    issued = time.monotonic() - t0
    done.wait(TIMEOUT_S * 2)
    elapsed = time.monotonic() - t0
    out.put((latencies, errors, n / issued, late, time.process_time() - cpu0, elapsed))
    channel.close()


def unary_load(
    port: int,
    method: str,
    bodies: list[bytes],
    rate: float,
    seconds: float,
    processes: int = 4,
) -> tuple[OpenLoopResult, Offered]:
    """`rate` calls per second for `seconds`, split across `processes` interleaved
    schedules; latency from each call's due time, as `load.open_loop` counts it."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 1.5 + 0.1 * processes
    procs = [
        ctx.Process(
            target=_worker,
            args=(port, method, bodies, rate / processes, seconds, k / processes, start_at, out),
            daemon=True,
        )
        for k in range(processes)
    ]
    for p in procs:
        p.start()
    parts = [out.get(timeout=seconds + 60 + TIMEOUT_S * 2) for _ in procs]
    for p in procs:
        p.join(10)
    result = OpenLoopResult(rate, 0.0)
    late: list[float] = []
    for latencies, errors, _, lates, _, _ in parts:
        result.latencies += latencies
        result.errors += len(errors)
        result.first_error = result.first_error or (errors[0] if errors else "")
        late += lates
    result.achieved = len(result.latencies) / max(p[5] for p in parts)
    late.sort()
    offered = Offered(
        issued_per_s=round(sum(p[2] for p in parts), 1),
        late_p99_ms=round(late[int(0.99 * (len(late) - 1))] * 1000, 3) if late else 0.0,
        cpu_s=round(sum(p[4] for p in parts), 2),
    )
    return result, offered
