"""Open-loop load: requests sent on a fixed schedule, latency counted from the schedule.

A closed-loop client (send, wait, send) slows down when the server does, so queueing
never shows in its numbers. Here request i is due at start + i/rate whether or not the
earlier ones have finished, and its latency runs from when it was due, so a server (or
a client) that falls behind shows it in the tail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class OpenLoopResult:
    rate: float
    """Requested arrivals per second."""
    achieved: float
    """Completions per second over the whole run."""
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    """The first failure, so a report can say why requests failed, not only how many."""


async def open_loop(
    send: Callable[[], Awaitable[object]], rate: float, seconds: float, offset: float = 0.0
) -> OpenLoopResult:
    """`offset` delays the first request, so several generators at the same rate (agents)
    interleave instead of arriving in bursts."""
    loop = asyncio.get_running_loop()
    n = max(1, int(rate * seconds))
    result = OpenLoopResult(rate, 0.0)
    start = loop.time() + 0.05 + offset
    tasks: list[asyncio.Task[None]] = []

    async def one(due: float) -> None:
        try:
            await send()
        except Exception as exc:
            result.errors += 1
            result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"[:300]
            return
        result.latencies.append(loop.time() - due)

    began = time.perf_counter()
    for i in range(n):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    result.achieved = (n - result.errors) / (time.perf_counter() - began)
    return result


def combined(parts: list[OpenLoopResult], rate: float, achieved: float) -> OpenLoopResult:
    """Several generators' results as one (agents of a protocol, or phases of a run)."""
    out = OpenLoopResult(rate, achieved)
    for p in parts:
        out.latencies += p.latencies
        out.errors += p.errors
        out.first_error = out.first_error or p.first_error
    return out
