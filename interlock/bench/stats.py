"""Latency samples and the numbers reported from them."""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from interlock.bench.load import OpenLoopResult

THROUGHPUT_UNITS = ("rec/s", "MB/s", "dec/s", "tx/s")
"""Units of measurements that are a rate alone (no latency distribution to show)."""


@dataclass
class Measurement:
    """One named latency distribution, optionally compared with a baseline."""

    name: str
    unit: str
    n: int
    p50: float
    p99: float
    mean: float
    throughput: float | None = None
    """Operations per second when run back to back (1 / mean)."""
    baseline: str | None = None
    baseline_p50: float | None = None
    baseline_p99: float | None = None
    ratio_p50: float | None = None
    ratio_p99: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    quantiles: list[list[float]] = field(default_factory=list)
    """[percentile, value] pairs from 0.5 to 100, for the report's distribution plots."""

    def against(self, base: Measurement) -> Measurement:
        self.baseline = base.name
        self.baseline_p50, self.baseline_p99 = base.p50, base.p99
        self.ratio_p50 = round(self.p50 / base.p50, 2) if base.p50 else None
        self.ratio_p99 = round(self.p99 / base.p99, 2) if base.p99 else None
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


QUANTILES = (0.5, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 98, 99, 99.5, 99.9, 100)


def summarize(name: str, samples_s: list[float], unit: str = "us") -> Measurement:
    scale = {"us": 1e6, "ms": 1e3, "s": 1.0}[unit]
    values = sorted(s * scale for s in samples_s)
    m = from_sorted(name, values, unit, digits=1)
    m.throughput = round(scale / m.mean, 1) if m.mean else None
    return m


def from_sorted(name: str, values: list[float], unit: str, digits: int = 3) -> Measurement:
    """A distribution of already scaled, sorted values (no throughput: set by the caller)."""
    mean = sum(values) / len(values) if values else math.nan
    return Measurement(
        name=name,
        unit=unit,
        n=len(values),
        p50=round(percentile(values, 50), digits),
        p99=round(percentile(values, 99), digits),
        mean=round(mean, digits),
        quantiles=[[q, round(percentile(values, q), digits)] for q in QUANTILES] if values else [],
    )


def time_calls(fn: Callable[[], object], n: int, warmup: int) -> list[float]:
    """Per-call wall time of `fn`, after `warmup` unmeasured calls."""
    for _ in range(warmup):
        fn()
    gc.collect()
    samples = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return samples


def time_async(
    loop: asyncio.AbstractEventLoop,
    fn: Callable[[], Awaitable[object]],
    n: int,
    warmup: int,
) -> list[float]:
    """Per-await wall time of `fn()` inside one running loop (no loop start-up per call)."""

    async def measure() -> list[float]:
        for _ in range(warmup):
            await fn()
        gc.collect()
        samples = []
        clock = time.perf_counter
        for _ in range(n):
            t0 = clock()
            await fn()
            samples.append(clock() - t0)
        return samples

    return loop.run_until_complete(measure())


def from_open_loop(name: str, r: OpenLoopResult) -> Measurement:
    """An open-loop phase in milliseconds: achieved rate as throughput, the scheduled
    rate, failures (and the first one's text) in the notes."""
    m = (
        summarize(name, r.latencies, unit="ms")
        if r.latencies
        else Measurement(name, "ms", 0, 0, 0, 0)
    )
    m.throughput = round(r.achieved, 1)
    m.notes["rate"], m.notes["errors"] = r.rate, r.errors
    if r.first_error:
        m.notes["first_error"] = r.first_error
    return m
