"""HTTP suite: the interlock proxy (all addons, policy, audit) against bare mitmdump of the
same mitmproxy version and a direct connection, plain HTTP and HTTPS, in one run.

Every server is its own process (upstream, mitmdump, `interlock up`), so the load
generator in this process does not share their interpreter. Latency: GETs at a fixed
100 per second (open loop). Throughput: GETs with 1, 4, 16 and 32 in flight (quick: 16
only). Budgets: throughput at 16 in flight against bare mitmdump's, and added p50."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import sys
import tempfile
import time
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
        rps: dict[int, float] = {}
        for c in concurrency:
            total = max(50, int(c * 12 * seconds))
            sem = asyncio.Semaphore(c)

            async def one(sem: asyncio.Semaphore = sem) -> None:
                async with sem:
                    await send()

            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(total)))
            rps[c] = total / (time.perf_counter() - t0)
    return latency, rps


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 1.0 if quick else 8.0
    concurrency = (16,) if quick else (1, 4, 16, 32)
    bindir = Path(sys.executable).parent
    results: dict[tuple[str, str], tuple[OpenLoopResult, dict[int, float]]] = {}
    progress.plan(7)
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
                    verify = (
                        ssl.create_default_context(cafile=ca)
                        if os.path.exists(ca)
                        else ssl.create_default_context()
                    )
                    results[(name, scheme)] = asyncio.run(
                        _measure(proxy, verify, url, seconds, concurrency)
                    )
    measurements: list[Measurement] = []
    checks = []
    curves = []
    top = max(c for c in concurrency if c <= 16)
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
