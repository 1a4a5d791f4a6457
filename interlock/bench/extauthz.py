"""ext_authz suite: interlock's Check against a no-op Check server on the same stack
(Python grpc.aio, raw bytes in and out), at constant arrival rates from 250 to 3,000 per
second (quick: 500 and 1,000); and end to end through Envoy with interlock, with the
no-op server, and without the ext_authz filter at all.

Every server is its own process (`interlock up`, the no-op server, the app, Envoy). The
Check load comes from four spawned processes on grpcio's synchronous stub, open loop
(`interlock.bench.grpcload`): one grpc.aio process could not offer more than about 2,000
per second here. Envoy's load is this process (`interlock.bench.load`).
Budgets: Check p99 at 1,000 per second; the highest offered rate interlock serves with
p99 <= 5 ms; added p50 through Envoy against no ext_authz."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from envoy.service.auth.v3 import external_auth_pb2

from interlock.bench import grpcload, progress, slo
from interlock.bench.load import OpenLoopResult, open_loop
from interlock.bench.procs import bench_bundle, process
from interlock.bench.stats import Measurement, from_open_loop
from interlock.testing.services import envoy_server, free_port

MESH_HEADER = "x-mesh-agent"
NOOP = """
import asyncio, sys, grpc
from envoy.service.auth.v3 import external_auth_pb2 as pb
from google.rpc import code_pb2, status_pb2
OK = pb.CheckResponse(status=status_pb2.Status(code=code_pb2.OK)).SerializeToString()
async def check(raw, context):
    return OK
async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "envoy.service.auth.v3.Authorization",
        {"Check": grpc.unary_unary_rpc_method_handler(check)}),))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""
APP = """
import asyncio, sys
from aiohttp import web
async def ok(request):
    return web.Response(text="ok")
async def main():
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


def _requests() -> list[bytes]:
    """A small rotating set, as a service sees a handful of routes over and over."""
    out = []
    for i in range(10):
        req = external_auth_pb2.CheckRequest()
        http = req.attributes.request.http
        http.method, http.path, http.host = "GET", f"/api/items/{i}?page=1", "app.mesh"
        http.scheme, http.protocol = "http", "HTTP/1.1"
        http.headers.update({MESH_HEADER: "bench", "user-agent": "bench", "accept": "*/*"})
        out.append(req.SerializeToString())
    return out


CHECK = "/envoy.service.auth.v3.Authorization/Check"
SUSTAINED_P99_MS = 5.0
"""A rate is sustained when every Check succeeded and p99 stayed under this."""


def _check_load(port: int, rate: float, seconds: float) -> tuple[OpenLoopResult, dict[str, Any]]:
    result, offered = grpcload.unary_load(port, CHECK, _requests(), rate, seconds)
    return result, {
        "issued_per_s": offered.issued_per_s,
        "send_late_p99_ms": offered.late_p99_ms,
        "generator_cpu_s": offered.cpu_s,
    }


async def _http_load(url: str, rate: float, seconds: float) -> OpenLoopResult:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:

        async def send() -> None:
            r = await client.get(url, headers={MESH_HEADER: "bench"})
            r.raise_for_status()

        for _ in range(100):
            await send()
        return await open_loop(send, rate, seconds)


def _settle(admin_port: int, limit: float = 60.0) -> None:
    """Wait until interlock's audit log has caught up, so one phase's backlog does not
    eat the next phase's CPU."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        doc = httpx.get(f"http://127.0.0.1:{admin_port}/healthz", timeout=5).json()
        if doc["audit"]["pending"] == 0:
            return
        time.sleep(0.2)


def _sustained(measurements: list[Measurement], rates: tuple[float, ...]) -> float:
    """The highest offered rate up to which every rate was served without a failed
    Check and with p99 <= SUSTAINED_P99_MS (0 when even the lowest was not)."""
    by_name = {m.name: m for m in measurements}
    best = 0.0
    for rate in rates:
        m = by_name[f"check_interlock_{rate:.0f}"]
        if m.notes["errors"] or m.p99 > SUSTAINED_P99_MS:
            break
        best = rate
    return best


def run(quick: bool = False) -> dict[str, Any]:
    seconds = 1.0 if quick else 8.0
    rates = (500.0, 1000.0) if quick else (250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0)
    e2e_rate = 200.0
    results: dict[str, OpenLoopResult] = {}
    offered: dict[str, dict[str, Any]] = {}
    progress.plan(2 + 2 * len(rates) + 3)
    with tempfile.TemporaryDirectory(prefix="interlock-bench-extauthz-") as tmp:
        root = Path(tmp)
        noop_port, ours_port, app_port, admin_port = (free_port() for _ in range(4))
        bundle = bench_bundle(root / "bundle")
        cfg = root / "interlock.toml"
        cfg.write_text(
            f'data_dir = "{root / "data"}"\n[policy]\nbundle = "{bundle}"\n'
            f"[agents.bench]\n"
            f'[admin]\nlisten = "127.0.0.1:{admin_port}"\n'
            f'[extauthz]\ngrpc_listen = "127.0.0.1:{ours_port}"\nhttp_listen = ""\n'
            f'identity_header = "{MESH_HEADER}"\n'
        )
        progress.step("starting the no-op Check server, the app, interlock")
        with (
            process([sys.executable, "-c", NOOP, str(noop_port)], noop_port, "no-op Check"),
            process([sys.executable, "-c", APP, str(app_port)], app_port, "app"),
            process(
                [sys.executable, "-m", "interlock.cli", "up", "-c", str(cfg)],
                ours_port,
                "interlock",
                cwd=root,
            ),
        ):
            time.sleep(0.5)
            for rate in rates:
                for name, port in (("noop", noop_port), ("interlock", ours_port)):
                    progress.step(f"Check at {rate:.0f}/s: {name}")
                    _settle(admin_port)
                    key = f"check_{name}_{rate:.0f}"
                    results[key], offered[key] = _check_load(port, rate, seconds)
            progress.step("starting three Envoys")
            with (
                envoy_server(app_port, ours_port) as with_ours,
                envoy_server(app_port, noop_port) as with_noop,
                envoy_server(app_port, noop_port, ext_authz=False) as without,
            ):
                for name, port in (
                    ("envoy_plain", without),
                    ("envoy_noop_authz", with_noop),
                    ("envoy_interlock", with_ours),
                ):
                    progress.step(f"through Envoy at {e2e_rate:.0f}/s: {name}")
                    _settle(admin_port)
                    results[name] = asyncio.run(
                        _http_load(f"http://127.0.0.1:{port}/api/items/1", e2e_rate, seconds)
                    )
    measurements: list[Measurement] = []
    for rate in rates:
        label = f"{rate:.0f}"
        base = from_open_loop(f"check_noop_{label}", results[f"check_noop_{label}"])
        ours = from_open_loop(f"check_interlock_{label}", results[f"check_interlock_{label}"])
        ours.against(base)
        for m in (base, ours):
            m.notes.update(offered[m.name])
        measurements += [base, ours]
    plain = from_open_loop("envoy_plain", results["envoy_plain"])
    measurements.append(plain)
    for name in ("envoy_noop_authz", "envoy_interlock"):
        m = from_open_loop(name, results[name]).against(plain)
        m.notes["added_p50_ms"] = round(m.p50 - plain.p50, 3)
        measurements.append(m)
    at_1000 = next(m for m in measurements if m.name == "check_interlock_1000")
    through = next(m for m in measurements if m.name == "envoy_interlock")
    checks = [
        slo.check("extauthz.check_p99_ms", at_1000.p99, at_1000.notes["errors"]),
        slo.check("extauthz.sustained_checks_per_s", _sustained(measurements, rates)),
        slo.check(
            "extauthz.envoy_added_p50_ms", through.notes["added_p50_ms"], through.notes["errors"]
        ),
    ]
    by_name = {m.name: m for m in measurements}
    curves = [
        {
            "title": "Check: p99 latency by offered rate",
            "x_label": "offered Checks/s (open loop)",
            "y_label": "p99 (ms)",
            "log_y": True,
            "series": {
                name: [[r, by_name[f"check_{name}_{r:.0f}"].p99] for r in rates]
                for name in ("noop", "interlock")
            },
        },
        {
            "title": "Check: completed against offered",
            "x_label": "offered Checks/s (open loop)",
            "y_label": "completed Checks/s",
            "series": {
                name: [[r, by_name[f"check_{name}_{r:.0f}"].throughput or 0] for r in rates]
                for name in ("noop", "interlock")
            },
        },
    ]
    groups = [
        {
            "title": f"Check at {rate:.0f}/s (open loop)",
            "series": [f"check_noop_{rate:.0f}", f"check_interlock_{rate:.0f}"],
        }
        for rate in (500.0, 1000.0)
    ] + [
        {
            "title": f"HTTP through Envoy at {e2e_rate:.0f}/s",
            "series": ["envoy_plain", "envoy_noop_authz", "envoy_interlock"],
        }
    ]
    return {
        "suite": "extauthz",
        "measurements": [m.to_json() for m in measurements],
        "checks": checks,
        "curves": curves,
        "latency_groups": groups,
    }
