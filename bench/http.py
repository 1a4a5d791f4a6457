"""HTTP suite: the interlock proxy (all addons, policy, audit) against bare mitmdump of the
same mitmproxy version and a direct connection, plain HTTP and HTTPS, in one run.

Every server is its own process (upstream, mitmdump, `interlock up`), so the load
generator in this process does not share their interpreter. Latency: sequential GETs
(p50/p99). Throughput: a fixed number of GETs at 16 concurrent requests.
Goals: >= 90% of bare mitmdump's throughput and <= 1 ms added p50.
"""

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

from bench.procs import bench_bundle, process
from bench.stats import Measurement, summarize
from interlock.testing.services import free_port, self_signed_cert

TOKEN = "bench-agent-token-0123456789"  # noqa: S105 (a throwaway benchmark agent)
GOAL_RATIO = 0.9
GOAL_ADDED_P50_MS = 1.0
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
    proxy: str | None, verify: Any, url: str, sequential: int, total: int
) -> tuple[list[float], float]:
    async with httpx.AsyncClient(proxy=proxy, verify=verify, timeout=30) as client:
        for _ in range(20):
            (await client.get(url)).raise_for_status()
        samples = []
        for _ in range(sequential):
            t0 = time.perf_counter()
            (await client.get(url)).raise_for_status()
            samples.append(time.perf_counter() - t0)
        sem = asyncio.Semaphore(16)

        async def one() -> None:
            async with sem:
                (await client.get(url)).raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        rps = total / (time.perf_counter() - t0)
    return samples, rps


def run(quick: bool = False) -> dict[str, Any]:
    sequential, total = (200, 600) if quick else (1000, 3000)
    bindir = Path(sys.executable).parent
    results: dict[tuple[str, str], tuple[list[float], float]] = {}
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
                    verify = (
                        ssl.create_default_context(cafile=ca)
                        if os.path.exists(ca)
                        else ssl.create_default_context()
                    )
                    results[(name, scheme)] = asyncio.run(
                        _measure(proxy, verify, url, sequential, total)
                    )
    measurements: list[Measurement] = []
    budgets = []
    for scheme in ("http", "https"):
        base_lat, base_rps = results[("mitmdump", scheme)]
        base = summarize(f"mitmdump_{scheme}", base_lat, unit="ms")
        base.throughput = round(base_rps, 1)
        for name in ("direct", "mitmdump", "interlock"):
            lat, rps = results[(name, scheme)]
            m = base if name == "mitmdump" else summarize(f"{name}_{scheme}", lat, unit="ms")
            m.throughput = round(rps, 1)
            if name != "mitmdump":
                m.against(base)
                m.notes["rps_ratio"] = round(rps / base_rps, 3)
                m.notes["added_p50_ms"] = round(m.p50 - base.p50, 3)
            measurements.append(m)
        ours_lat, ours_rps = results[("interlock", scheme)]
        ratio = round(ours_rps / base_rps, 3)
        added = round(summarize("x", ours_lat, unit="ms").p50 - base.p50, 3)
        budgets.append(
            {
                "name": f"{scheme}: throughput >= {GOAL_RATIO:.0%} of mitmdump",
                "value": ratio,
                "limit": GOAL_RATIO,
                "pass": ratio >= GOAL_RATIO,
            }
        )
        budgets.append(
            {
                "name": f"{scheme}: added p50 <= {GOAL_ADDED_P50_MS} ms",
                "value": added,
                "limit": GOAL_ADDED_P50_MS,
                "pass": added <= GOAL_ADDED_P50_MS,
            }
        )
    return {
        "suite": "http",
        "measurements": [m.to_json() for m in measurements],
        "budgets": budgets,
    }
