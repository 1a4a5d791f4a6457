"""The latency and throughput budgets `interlock bench` proves, with their defaults.

Every suite reports checks, `{"id": ..., "value": ...}` (and `errors` when requests failed);
the runner turns them into pass/fail rows against these limits, or against the ones an
operator sets in `[bench.budgets]` of interlock.toml (same ids). The defaults are what
interlock promises on a small machine (2 cores): a decision well under a millisecond,
protocol overheads of a few milliseconds at most, and most of the baseline's throughput.
They are goals, not descriptions of this machine: a budget that fails makes the run exit 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Budget:
    id: str
    label: str
    op: Literal["<=", ">="]
    limit: float
    unit: str
    """"us", "ms", "/s" or "x" (a ratio to the baseline)."""

    def holds(self, value: float, limit: float) -> bool:
        if math.isnan(value):
            return False
        return value <= limit if self.op == "<=" else value >= limit


def _b(key: str, label: str, op: Literal["<=", ">="], limit: float, unit: str) -> Budget:
    return Budget(key, label, op, limit, unit)


BUDGETS: dict[str, Budget] = {
    b.id: b
    for b in (
        _b("pdp.uncached_p99_us", "decision p99, cache off", "<=", 150.0, "us"),
        _b("pdp.cached_p99_us", "decision p99, cache on", "<=", 50.0, "us"),
        _b("pdp.uncached_ratio_p99", "uncached p99 / raw rego-cpp p99", "<=", 3.0, "x"),
        _b("pdp.cached_ratio_p99", "cached p99 / raw rego-cpp p99", "<=", 3.0, "x"),
        _b("pdp.decisions_per_s", "decisions/s, decide + audit to SQLite", ">=", 10_000.0, "/s"),
        _b("audit.append_ratio", "append throughput / raw SQLite", ">=", 0.5, "x"),
        _b("audit.enqueue_p99_us", "audit enqueue p99", "<=", 200.0, "us"),
        _b("audit.proof_p99_us", "inclusion proof p99 at 1M entries", "<=", 1000.0, "us"),
        _b("postgres.simple_tps_ratio", "simple TPS / PgBouncer, 16 clients", ">=", 0.6, "x"),
        _b("postgres.prepared_tps_ratio", "prepared TPS / PgBouncer, 16 clients", ">=", 0.6, "x"),
        _b("postgres.simple_added_p50_ms", "simple added p50 vs PgBouncer", "<=", 0.25, "ms"),
        _b("postgres.prepared_added_p50_ms", "prepared added p50 vs PgBouncer", "<=", 0.25, "ms"),
        _b("postgres.simple_tps_64_vs_16", "simple TPS, 64 clients / 16 clients", ">=", 1.0, "x"),
        _b("postgres.prepared_tps_64_vs_16", "prepared TPS, 64 clients / 16", ">=", 1.0, "x"),
        _b("postgres.simple_workers_2_vs_1", "simple TPS, 2 workers / 1 worker", ">=", 1.0, "x"),
        _b("postgres.prepared_workers_2_vs_1", "prepared TPS, 2 workers / 1", ">=", 1.0, "x"),
        _b("http.http_rps_ratio", "HTTP throughput / mitmdump", ">=", 0.95, "x"),
        _b("http.https_rps_ratio", "HTTPS throughput / mitmdump", ">=", 0.95, "x"),
        _b("http.http_added_p50_ms", "HTTP added p50 vs mitmdump", "<=", 1.0, "ms"),
        _b("http.https_added_p50_ms", "HTTPS added p50 vs mitmdump", "<=", 1.0, "ms"),
        _b("extauthz.check_p99_ms", "Check p99 at 1,000/s", "<=", 2.0, "ms"),
        _b("extauthz.sustained_checks_per_s", "Checks/s with p99 <= 5 ms", ">=", 2000.0, "/s"),
        _b("extauthz.envoy_added_p50_ms", "Envoy added p50 vs no ext_authz", "<=", 2.0, "ms"),
        _b("ssh.exec_added_p50_ms", "SSH added p50 per command", "<=", 1.0, "ms"),
        _b("ssh.bulk_ratio", "SSH bulk throughput / direct", ">=", 0.35, "x"),
        _b("mcp.call_added_p50_ms", "MCP stdio added p50 per tools/call", "<=", 1.0, "ms"),
        _b("mcp.call_added_p99_ms", "MCP stdio added p99 per tools/call", "<=", 5.0, "ms"),
        _b("e2e.postgres_added_p99_ms", "end to end: SQL added p99", "<=", 5.0, "ms"),
        _b("e2e.http_added_p99_ms", "end to end: HTTPS added p99", "<=", 10.0, "ms"),
        _b("e2e.ssh_added_p99_ms", "end to end: SSH command added p99", "<=", 5.0, "ms"),
    )
}  # fmt: skip


def check(key: str, value: float, errors: int = 0) -> dict[str, Any]:
    """What a suite reports for one budget (the runner judges it)."""
    if key not in BUDGETS:
        raise KeyError(f"no budget {key!r}")
    return {"id": key, "value": value, "errors": errors}


def unknown(limits: Mapping[str, float]) -> list[str]:
    return sorted(set(limits) - set(BUDGETS))


def judge(checks: list[dict[str, Any]], limits: Mapping[str, float]) -> list[dict[str, Any]]:
    """Checks as budget rows: the limit (configured or default), pass or fail. Failed
    requests fail a budget whatever the latency of the ones that succeeded."""
    rows = []
    for c in checks:
        b = BUDGETS[c["id"]]
        limit = float(limits.get(b.id, b.limit))
        value = float(c["value"])
        errors = int(c.get("errors", 0))
        ok = b.holds(value, limit) and errors == 0
        unit = "" if b.unit == "x" else f" {b.unit}"
        rows.append(
            {
                "id": b.id,
                "name": f"{b.label} {b.op} {limit:g}{unit}",
                "label": b.label,
                "op": b.op,
                "value": value,
                "limit": limit,
                "unit": b.unit,
                "errors": errors,
                "configured": b.id in limits,
                "pass": ok,
            }
        )
    return rows
