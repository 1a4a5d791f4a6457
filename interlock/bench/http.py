"""HTTP suite: the interlock proxy (all addons, policy, audit) against bare mitmdump of the
same mitmproxy version and a direct connection, plain HTTP and HTTPS, in one run.

Every server is its own process (upstream, mitmdump, `interlock up`), so the load
generator in this process does not share their interpreter. Latency: GETs at a fixed
100 per second (open loop). Throughput: GETs with 1, 4, 16 and 32 in flight (quick: 16
only), for the curves. Budgets: added p50, and throughput at 16 in flight against bare
mitmdump's, measured apart from the curves: mitmdump and interlock alternate for ROUNDS
rounds (in the order A B, B A, ...) and the ratio is the median of the rounds' ratios.
Each target's curve is measured a minute after the other's, and on this shared machine
that drift alone moved the ratio between 0.66 and 1.23 from one full run to the next."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from interlock.bench import progress, slo
from interlock.bench.load import OpenLoopResult, open_loop
from interlock.bench.procs import bench_bundle, process
from interlock.bench.stats import Measurement, summarize
from interlock.testing.services import free_port, self_signed_cert

TOKEN = "bench-agent-token-0123456789"  # noqa: S105 (a throwaway benchmark agent)
RATE = 100.0
"""Requests per second of the open-loop latency phase."""
ROUNDS = 5
"""Alternated mitmdump/interlock throughput rounds for the budget (quick: 2)."""
UPSTREAM = """
import ssl, sys
from aiohttp import web
async def ok(request):
    return web.Response(text="ok " * 64)
app = web.Application()
app.router.add_get("/{tail:.*}", ok)
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
async def main():
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[2]), ssl_context=ctx).start()
    import asyncio
    await asyncio.Event().wait()
import asyncio
asyncio.run(main())
"""


async def _measure(
    proxy: str | None, verify: Any, url: str, seconds: float, concurrency: tuple[int, ...]
) -> tuple[OpenLoopResult, dict[int, float]]:
    """Open-loop latency at RATE requests/s, then closed-loop throughput at each
    concurrency (requests per second with that many in flight)."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(proxy=proxy, verify=verify, timeout=30, limits=limits) as client:

        async def send() -> None:
            (await client.get(url)).raise_for_status()

        # Warm: TLS sessions and a pool of open connections, so no handshake to the
        # proxy (or certificate minting in it) lands inside the measurement.
        for _ in range(4):
            await asyncio.gather(*(send() for _ in range(16)))
        latency = await open_loop(send, RATE, seconds)
        rps = {c: await _closed_loop(send, c, max(50, int(c * 12 * seconds))) for c in concurrency}
    return latency, rps


async def _closed_loop(send: Callable[[], Awaitable[None]], inflight: int, total: int) -> float:
    """Requests per second for `total` requests with `inflight` of them in flight."""
    sem = asyncio.Semaphore(inflight)

    async def one() -> None:
        async with sem:
            await send()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return total / (time.perf_counter() - t0)


async def _alternated(
    targets: dict[str, tuple[str | None, Any]], url: str, inflight: int, total: int, rounds: int
) -> dict[str, list[float]]:
    """Requests per second of each target, round by round, the order reversed every
    round (A B, B A, ...) so neither always runs first after the other."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with contextlib.AsyncExitStack() as stack:
        sends: dict[str, Callable[[], Awaitable[None]]] = {}
        for name, (proxy, verify) in targets.items():
            client = await stack.enter_async_context(
                httpx.AsyncClient(proxy=proxy, verify=verify, timeout=30, limits=limits)
            )

            async def send(client: httpx.AsyncClient = client) -> None:
                (await client.get(url)).raise_for_status()

            for _ in range(4):  # warm, as `_measure` does
                await asyncio.gather(*(send() for _ in range(16)))
            sends[name] = send
        out: dict[str, list[float]] = {name: [] for name in targets}
        order = list(targets)
        for _ in range(rounds):
            for name in order:
                out[name].append(await _closed_loop(sends[name], inflight, total))
            order.reverse()
    return out


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 1.0 if quick else 8.0
    concurrency = (16,) if quick else (1, 4, 16, 32)
    bindir = Path(sys.executable).parent
    results: dict[tuple[str, str], tuple[OpenLoopResult, dict[int, float]]] = {}
    top = max(c for c in concurrency if c <= 16)
    rounds = 2 if quick else ROUNDS
    alternated: dict[str, dict[str, list[float]]] = {}
    progress.plan(9)
    with tempfile.TemporaryDirectory(prefix="interlock-bench-http-") as tmp:
        root = Path(tmp)
        cert, key = self_signed_cert(root / "up")
        http_port, https_port, bare_port, ours_port = (free_port() for _ in range(4))
        admin_port = free_port()
        bundle = bench_bundle(root / "bundle")
        cfg = root / "interlock.toml"
        cfg.write_text(
            f'data_dir = "{root / "data"}"\n[policy]\nbundle = "{bundle}"\n'
            f'[agents.bench]\ntoken = "{TOKEN}"\n'
            f'[admin]\nlisten = "127.0.0.1:{admin_port}"\n'
            f'[http]\nlisten = "127.0.0.1:{ours_port}"\nallow_networks = ["127.0.0.0/8"]\n'
            f'upstream_ca = "{cert}"\n'
        )
        mitmdump = shutil.which("mitmdump", path=str(bindir)) or "mitmdump"
        progress.step("starting upstream, mitmdump, interlock")
        with (
            process(
                [
                    sys.executable,
                    "-c",
                    UPSTREAM,
                    str(http_port),
                    str(https_port),
                    str(cert),
                    str(key),
                ],
                https_port,
                "upstream",
            ),
            process(
                [
                    mitmdump,
                    "-q",
                    "--listen-host",
                    "127.0.0.1",
                    "--listen-port",
                    str(bare_port),
                    "--set",
                    f"confdir={root / 'bare'}",
                    "--set",
                    f"ssl_verify_upstream_trusted_ca={cert}",
                ],
                bare_port,
                "mitmdump",
            ),
            process(
                [sys.executable, "-m", "interlock.cli", "up", "-c", str(cfg)],
                ours_port,
                "interlock",
                cwd=root,
            ),
        ):
            time.sleep(0.5)
            targets = {
                "direct": (None, str(root / "up" / "server.crt")),
                "mitmdump": (
                    f"http://127.0.0.1:{bare_port}",
                    str(root / "bare" / "mitmproxy-ca-cert.pem"),
                ),
                "interlock": (
                    f"http://bench:{TOKEN}@127.0.0.1:{ours_port}",
                    str(root / "data" / "ca" / "mitmproxy-ca-cert.pem"),
                ),
            }
            for scheme, port in (("http", http_port), ("https", https_port)):
                url = f"{scheme}://127.0.0.1:{port}/item"
                for name, (proxy, ca) in targets.items():
                    progress.step(f"{scheme}: {name}")
                    verify = _verify(ca)
                    results[(name, scheme)] = asyncio.run(
                        _measure(proxy, verify, url, seconds, concurrency)
                    )
            for scheme, port in (("http", http_port), ("https", https_port)):
                progress.step(f"{scheme}: mitmdump and interlock, {rounds} alternated rounds")
                contenders = {
                    name: (targets[name][0], _verify(targets[name][1]))
                    for name in ("mitmdump", "interlock")
                }
                url = f"{scheme}://127.0.0.1:{port}/item"
                total = max(50, int(top * 6 * seconds))
                alternated[scheme] = asyncio.run(_alternated(contenders, url, top, total, rounds))
    measurements: list[Measurement] = []
    checks = []
    curves = []
    for scheme in ("http", "https"):
        by_name: dict[str, Measurement] = {}
        for name in ("mitmdump", "direct", "interlock"):
            lat, rps = results[(name, scheme)]
            m = summarize(f"{name}_{scheme}", lat.latencies, unit="ms")
            m.throughput = round(rps[top], 1)
            m.notes.update(rate=RATE, errors=lat.errors, concurrency=top)
            by_name[name] = m
        base = by_name["mitmdump"]
        for name in ("direct", "interlock"):
            m = by_name[name].against(base)
            m.notes["rps_ratio"] = round((m.throughput or 0) / (base.throughput or 1), 3)
            m.notes["added_p50_ms"] = round(m.p50 - base.p50, 3)
        # The budget's ratio: the median of the alternated rounds', not the curves'.
        rounds_rps = alternated[scheme]
        ratios = [
            ours / bare
            for ours, bare in zip(rounds_rps["interlock"], rounds_rps["mitmdump"], strict=True)
        ]
        by_name["interlock"].notes["rps_ratio"] = round(statistics.median(ratios), 3)
        by_name["interlock"].notes["round_ratios"] = [round(r, 3) for r in ratios]
        for name in ("mitmdump", "interlock"):
            by_name[name].notes["round_rps"] = [round(r, 1) for r in rounds_rps[name]]
        measurements += [by_name["direct"], base, by_name["interlock"]]
        ours = by_name["interlock"]
        errors = results[("interlock", scheme)][0].errors
        checks.append(slo.check(f"http.{scheme}_rps_ratio", ours.notes["rps_ratio"]))
        checks.append(slo.check(f"http.{scheme}_added_p50_ms", ours.notes["added_p50_ms"], errors))
        curves.append(
            {
                "title": f"{scheme.upper()} GET: requests/s by requests in flight",
                "x_label": "concurrent requests",
                "y_label": "requests/s",
                "series": {
                    name: [[c, round(results[(name, scheme)][1][c], 1)] for c in concurrency]
                    for name in ("direct", "mitmdump", "interlock")
                },
            }
        )
    groups = [
        {
            "title": f"{scheme.upper()} GET at {RATE:g}/s (open loop)",
            "series": [f"{t}_{scheme}" for t in ("direct", "mitmdump", "interlock")],
        }
        for scheme in ("http", "https")
    ]
    return {
        "suite": "http",
        "measurements": [m.to_json() for m in measurements],
        "checks": checks,
        "curves": curves,
        "latency_groups": groups,
    }


def _verify(ca: str) -> ssl.SSLContext:
    """A client context trusting `ca` (the system's store if the file does not exist)."""
    if os.path.exists(ca):
        return ssl.create_default_context(cafile=ca)
    return ssl.create_default_context()
