"""Prometheus text exposition of what interlock is doing, without a client library."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from interlock.core.stats import BUCKETS, DecisionStats


def _labels(pairs: Mapping[str, str]) -> str:
    if not pairs:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in pairs.items()
    )
    return "{" + inner + "}"


def merge(
    stats: DecisionStats,
    audit: Mapping[str, Any],
    sessions: Mapping[str, int],
    reports: Sequence[Any],
) -> tuple[DecisionStats, dict[str, Any], dict[str, int], int]:
    """This process's numbers plus the other Postgres workers' reports (`[postgres]
    workers`): counters and sessions add up, the audit log is healthy only if every
    process finds it so. Returns them and how many processes are in them; an unreadable
    report is left out of both."""
    total = DecisionStats()
    total.absorb(stats.counts())
    merged = {k: audit.get(k, 0) for k in ("pending", "appended", "failures")}
    healthy = bool(audit.get("healthy"))
    open_sessions = dict(sessions)
    processes = 1
    for report in reports:
        try:
            theirs = report["audit"]
            counts = {k: int(theirs.get(k, 0)) for k in merged}
            their_sessions = {str(k): int(v) for k, v in report["sessions"].items()}
            total.absorb(report["stats"])
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        for k, n in counts.items():
            merged[k] += n
        healthy = healthy and bool(theirs.get("healthy"))
        for name, n in their_sessions.items():
            open_sessions[name] = open_sessions.get(name, 0) + n
        processes += 1
    merged["healthy"] = healthy
    return total, merged, open_sessions, processes


def render(
    stats: DecisionStats,
    audit: Mapping[str, Any],
    holds_pending: int,
    sessions: Mapping[str, int],
    dependencies: Mapping[str, bool] | None = None,
    workers: Sequence[Any] | None = None,
) -> str:
    """The exposition; with `workers` (the other Postgres workers' reports, possibly
    none answered), decisions, audit counts and sessions are every worker's."""
    processes = None
    if workers is not None:
        stats, audit, sessions, processes = merge(stats, audit, sessions, workers)
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    metric(
        "interlock_decisions_total",
        "counter",
        "Decisions by protocol, effect, and whether they were enforced (false: shadow mode).",
    )
    for (protocol, effect, enforced), n in sorted(stats.decisions.items()):
        labels = {"protocol": protocol, "effect": effect, "enforced": str(enforced).lower()}
        out.append(f"interlock_decisions_total{_labels(labels)} {n}")
    metric("interlock_decision_seconds", "histogram", "Time to decide, from PEP call to answer.")
    running = 0
    for bound, n in zip((*BUCKETS, float("inf")), stats.latency_buckets, strict=True):
        running += n
        le = "+Inf" if bound == float("inf") else repr(bound)
        out.append(f'interlock_decision_seconds_bucket{{le="{le}"}} {running}')
    out.append(f"interlock_decision_seconds_sum {stats.latency_sum}")
    out.append(f"interlock_decision_seconds_count {stats.latency_count}")

    def single(name: str, kind: str, help_text: str, value: object) -> None:
        metric(name, kind, help_text)
        out.append(f"{name} {value}")

    single(
        "interlock_audit_pending",
        "gauge",
        "Audit records accepted, not yet stored.",
        audit.get("pending", 0),
    )
    single(
        "interlock_audit_appended_total",
        "counter",
        "Audit records stored.",
        audit.get("appended", 0),
    )
    single(
        "interlock_audit_failures_total",
        "counter",
        "Failed audit store writes.",
        audit.get("failures", 0),
    )
    single(
        "interlock_audit_healthy",
        "gauge",
        "1 while the audit store accepts writes.",
        1 if audit.get("healthy") else 0,
    )
    single("interlock_holds_pending", "gauge", "Actions waiting for a human.", holds_pending)
    metric("interlock_open_sessions", "gauge", "Open client sessions per proxy.")
    for proxy, n in sorted(sessions.items()):
        out.append(f"interlock_open_sessions{_labels({'proxy': proxy})} {n}")
    metric("interlock_dependency_up", "gauge", "1 while the dependency answers its probe.")
    for name, up in sorted((dependencies or {}).items()):
        out.append(f"interlock_dependency_up{_labels({'name': name})} {int(up)}")
    if processes is not None:
        single(
            "interlock_postgres_workers_reporting",
            "gauge",
            "Postgres worker processes whose numbers are in this exposition (of [postgres] "
            "workers; the others did not answer in time).",
            processes,
        )
    return "\n".join(out) + "\n"
