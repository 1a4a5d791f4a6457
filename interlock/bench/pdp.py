"""PDP suite: full decisions on the default bundle against raw rego-cpp in the same run.

Measured, all in one process, interleaved so machine noise hits every series alike:

* baseline `rego_raw_trivial`: regopy's own API evaluating a one-rule policy on a tiny
  input (what any rego-cpp user pays at least);
* `decision_uncached`: `PDP.decide` end to end (context, signals, input, policy, posture,
  audit hand-off to an in-memory sink) with the decision cache off, default engine;
* `decision_cached`: the same with the cache on, on a workload that repeats;
* `input_build` and `engine_eval`: where the uncached time goes (building the input
  document, then the engine with its input hand-off);
* `engine_eval_rego_cpp` and `decision_uncached_rego_cpp`: the same bundle and input on
  the other engine, for the comparison in docs/benchmarks.md;
* `decide_and_audit`: decisions per second back to back through a PDP whose sink is the
  real audit log on SQLite (group commit, fsync), default bundle and cache, until the log
  has committed every record: the whole cost of a decision to the process.
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import regopy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.audit.checkpoint import Signer
from interlock.audit.log import MAX_BATCH, AuditLog
from interlock.audit.sqlite import SqliteStore
from interlock.bench import progress, slo
from interlock.bench.stats import Measurement, summarize, time_async, time_calls
from interlock.classify.shell import analyse
from interlock.core import heap
from interlock.core.context import NORMAL, ContextView, MemoryStore
from interlock.core.engine import EngineName
from interlock.core.engines import make_engine
from interlock.core.model import Action, Agent, Operation
from interlock.core.pdp import PDP
from interlock.core.policy import DECISION_ENTRYPOINT, PolicyManager
from interlock.core.policy_input import build_input
from interlock.testing import CaptureSink, FakeClock

TRIVIAL = "package bench\nimport rego.v1\ndefault allow := false\nallow if input.x == 1\n"


def _classes(command: str) -> list[str]:
    """What the SSH proxy's classifier says of `command`, so the workload stays honest
    when the classifier changes."""
    return sorted(analyse(command).classes)


def workload() -> list[Action]:
    """Realistic actions from three agents over the four protocols."""
    analyst = Agent("reporter", ("analyst",), "alice@example.com", authn="token")
    coder = Agent("coder", ("dev",), "bob@example.com", ("planner",), authn="jwt")
    ops = Agent("runner", ("ops",), "carol@example.com", authn="ssh_key")
    return [
        Action(
            analyst,
            "postgres",
            Operation.READ,
            "public.orders",
            {
                "tables": ["public.orders"],
                "columns": ["public.orders.id", "public.orders.total"],
                "functions": [],
                "statement_kind": "select",
            },
        ),
        Action(
            analyst,
            "postgres",
            Operation.READ,
            "public.payroll",
            {
                "tables": ["public.payroll"],
                "columns": ["public.payroll.salary"],
                "functions": ["sum"],
                "statement_kind": "select",
            },
            labels=frozenset({"financial", "restricted"}),
        ),
        Action(
            analyst,
            "postgres",
            Operation.WRITE,
            "public.orders",
            {
                "tables": ["public.orders"],
                "columns": ["public.orders.status"],
                "functions": [],
                "statement_kind": "update",
            },
        ),
        Action(
            coder,
            "http",
            Operation.EGRESS,
            "api.github.com",
            {
                "method": "GET",
                "scheme": "https",
                "port": 443,
                "path": "/repos/x/y",
                "body_bytes": 0,
            },
        ),
        Action(
            coder,
            "http",
            Operation.EGRESS,
            "pypi.org",
            {"method": "GET", "scheme": "https", "port": 443, "path": "/simple/", "body_bytes": 0},
        ),
        Action(
            coder,
            "http",
            Operation.TOOL_CALL,
            "search",
            {"server": "mcp.example.com", "arguments": ["query"]},
        ),
        Action(
            coder,
            "http",
            Operation.PROMPT,
            "api.openai.com",
            {"model": "gpt", "messages": 4},
            prompt_hash="ab" * 32,
        ),
        Action(
            ops,
            "ssh",
            Operation.EXEC,
            "db1.internal",
            {"argv": ["ls", "-la", "/var/log"], "classes": _classes("ls -la /var/log")},
        ),
        Action(
            ops,
            "ssh",
            Operation.EXEC,
            "db1.internal",
            {"argv": ["systemctl", "restart", "app"], "classes": _classes("systemctl restart app")},
        ),
        Action(
            ops, "ssh", Operation.FILE_READ, "db1.internal:/etc/app.conf", {"path": "/etc/app.conf"}
        ),
        Action(
            coder,
            "envoy",
            Operation.EGRESS,
            "orders.svc",
            {"method": "POST", "path": "/v1/orders", "port": 8080},
        ),
        Action(
            analyst,
            "envoy",
            Operation.READ,
            "orders.svc",
            {"method": "GET", "path": "/v1/orders/7", "port": 8080},
        ),
    ]


def _pdp(cache_size: int, clock: FakeClock, engine: EngineName = "regorus") -> PDP:
    manager = PolicyManager(engine=make_engine(engine))
    manager.load()
    return PDP(manager, MemoryStore(clock), CaptureSink(), clock=clock, cache_size=cache_size)


def _decider(pdp: PDP, clock: FakeClock, actions: list[Action]) -> Callable[[], Awaitable[object]]:
    """Round-robin over `actions`, 0.1 s of fake time apart (about 200 actions a minute
    per agent: a busy agent, well inside the default rate budget).

    The capturing sink lets go of its records once it holds a batch of the audit log's
    size (`audit.log.MAX_BATCH`), as a real log does once its writer takes them. Keeping
    10,000 (as this did before 2026-12-07) grew and released the heap in large steps
    and added 30-40 us to the cached decision's p99 (alternated runs, docs/benchmarks.md)
    that no process serving decisions pays."""
    state = {"i": 0}
    sink = pdp.audit
    assert isinstance(sink, CaptureSink)

    async def one() -> object:
        action = actions[state["i"] % len(actions)]
        state["i"] += 1
        clock.advance(0.1)
        if len(sink.records) >= MAX_BATCH:
            sink.records.clear()
            sink.durable.clear()
        return await pdp.decide(action)

    return one


SESSIONS = 64
"""Concurrent sessions in `decide_and_audit`: a proxy decides for many connections at
once, and decisions above `low` wait for their record's commit, which group commit shares
between every decision waiting at that moment."""


async def _decide_and_audit(n: int) -> float:
    """Seconds for `n` decisions of the workload from SESSIONS concurrent sessions
    through a real AuditLog, flushed."""
    with tempfile.TemporaryDirectory(prefix="interlock-bench-") as tmp:
        signer = Signer("bench/pdp", Ed25519PrivateKey.generate())
        audit = AuditLog(
            SqliteStore(Path(tmp) / "a.db"), signer, "bench/pdp", checkpoint_interval=0
        )
        await audit.start()
        clock = FakeClock()
        manager = PolicyManager()
        manager.load()
        pdp = PDP(manager, MemoryStore(clock), audit, clock=clock)
        actions = workload()
        per_session = n // SESSIONS

        async def session(k: int) -> None:
            for i in range(per_session):
                clock.advance(0.1)
                await pdp.decide(actions[(k + i) % len(actions)])

        start = time.perf_counter()
        await asyncio.gather(*(session(k) for k in range(SESSIONS)))
        await audit.flush()
        elapsed = time.perf_counter() - start
        await audit.close()
    return elapsed


def run(quick: bool = False) -> dict[str, Any]:
    n, warmup = (600, 100) if quick else (6000, 600)
    actions = workload()

    raw = regopy.Interpreter()
    raw.add_module("bench.rego", TRIVIAL)
    raw_bundle = raw.build(None, ["bench/allow"])

    def raw_eval() -> object:
        raw.set_input(regopy.Input({"x": 1}))
        return raw.query_bundle_entrypoint(raw_bundle, "bench/allow")

    cold_clock, warm_clock, cpp_clock = FakeClock(), FakeClock(), FakeClock()
    cold = _pdp(0, cold_clock)
    warm = _pdp(4096, warm_clock)
    cold_cpp = _pdp(0, cpp_clock, "rego-cpp")
    decide_cold = _decider(cold, cold_clock, actions)
    decide_warm = _decider(warm, warm_clock, actions)
    decide_cold_cpp = _decider(cold_cpp, cpp_clock, actions)

    policy = cold.policy.current
    policy_cpp = cold_cpp.policy.current
    sample_input = _capture_input(cold, actions[1])
    sample_action = actions[1]
    posture, view = NORMAL, ContextView()
    sink = cold.audit
    assert isinstance(sink, CaptureSink)
    risk = sink.last.decision.risk

    def build_only() -> object:
        return build_input(sample_action, posture, view, risk, 0.0)

    def eval_only() -> object:
        return policy.evaluate(DECISION_ENTRYPOINT, sample_input, bounded=True)

    def eval_cpp() -> object:
        return policy_cpp.evaluate(DECISION_ENTRYPOINT, sample_input)

    heap.settle()  # as `interlock up` does once it serves
    loop = asyncio.new_event_loop()
    keys = ("raw", "cold", "warm", "build", "eval", "eval_cpp", "cold_cpp")
    series: dict[str, list[float]] = {k: [] for k in keys}
    sync_fns = {"raw": raw_eval, "build": build_only, "eval": eval_only, "eval_cpp": eval_cpp}
    async_fns = {"cold": decide_cold, "warm": decide_warm, "cold_cpp": decide_cold_cpp}
    rounds = 10
    progress.plan(rounds + 1)
    for r in range(rounds):
        progress.step(f"round {r + 1} of {rounds}: raw, build, eval, uncached, cached")
        for key, fn in sync_fns.items():
            series[key] += time_calls(fn, n // rounds, warmup // rounds)
        for key, afn in async_fns.items():
            series[key] += time_async(loop, afn, n // rounds, warmup // rounds)
    loop.close()

    base = summarize("rego_raw_trivial", series["raw"])
    uncached = summarize("decision_uncached", series["cold"]).against(base)
    cached = summarize("decision_cached", series["warm"]).against(base)
    cached.notes["cache_hit_rate"] = round(
        warm.cache.hits / max(1, warm.cache.hits + warm.cache.misses), 3
    )
    uncached.notes["engine"] = f"{policy.engine_name} {policy.engine_version}"
    build = summarize("input_build", series["build"]).against(base)
    build.notes["input_nodes"] = _nodes(sample_input)
    build.notes["input_json_bytes"] = len(json.dumps(sample_input))
    evaluation = summarize("engine_eval", series["eval"]).against(base)
    evaluation_cpp = summarize("engine_eval_rego_cpp", series["eval_cpp"]).against(base)
    uncached_cpp = summarize("decision_uncached_rego_cpp", series["cold_cpp"]).against(base)
    progress.step("decisions with the audit log on SQLite")
    n_full = 2000 if quick else 20_000
    full_s = asyncio.run(_decide_and_audit(n_full))
    n_full -= n_full % SESSIONS
    full = Measurement("decide_and_audit", "dec/s", n_full, 0, 0, 0, round(n_full / full_s, 1))
    full.notes["sessions"] = SESSIONS
    measurements = [base, uncached, cached, build, evaluation, evaluation_cpp, uncached_cpp, full]
    checks = [
        slo.check("pdp.uncached_p99_us", uncached.p99),
        slo.check("pdp.cached_p99_us", cached.p99),
        slo.check("pdp.uncached_ratio_p99", uncached.ratio_p99 or math.nan),
        slo.check("pdp.cached_ratio_p99", cached.ratio_p99 or math.nan),
        slo.check("pdp.decisions_per_s", full.throughput or math.nan),
    ]
    return {
        "suite": "pdp",
        "measurements": [m.to_json() for m in measurements],
        "checks": checks,
        "latency_groups": [
            {
                "title": "a whole decision against raw rego-cpp",
                "series": ["rego_raw_trivial", "decision_uncached", "decision_cached"],
            },
            {
                "title": "where an uncached decision's time goes",
                "series": ["input_build", "engine_eval", "decision_uncached"],
            },
            {
                "title": "regorus against rego-cpp, same bundle and input",
                "series": [
                    "engine_eval",
                    "engine_eval_rego_cpp",
                    "decision_uncached",
                    "decision_uncached_rego_cpp",
                ],
            },
        ],
    }


def _capture_input(pdp: PDP, action: Action) -> dict[str, Any]:
    asyncio.run(pdp.decide(action))
    sink = pdp.audit
    assert isinstance(sink, CaptureSink)
    return dict(sink.last.input)


def _nodes(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(1 + _nodes(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_nodes(v) for v in value)
    return 1
