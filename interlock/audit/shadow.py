"""The shadow report: what enforcement would have changed, read back from the audit log.

It counts the records shadow mode did not enforce (`enforced: false`) and the findings of
rules on trial (`shadow`), by effect and reason, with the targets and statements they
touched and per agent, so a team can tune the policy before switching enforcement on.
Records older than shadow mode (no `enforced` field) count as enforced.
"""

from __future__ import annotations

import html
import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from interlock.audit.commands import _chunks, _epoch
from interlock.audit.store import AuditStore

TOP = 10


def parse_since(text: str) -> float:
    """`YYYY-MM-DDTHH:MM:SS` (UTC), as `audit replay --since` takes it; ValueError if not."""
    time.strptime(text, "%Y-%m-%dT%H:%M:%S")
    return _epoch(text)


def statement(rec: Mapping[str, Any]) -> str:
    """What the action ran, in a line: the SSH command, the SQL statements' kinds and
    tables (the log keeps no SQL text), the HTTP method and path, else the target."""
    action = rec.get("action", {})
    details = action.get("details") or {}
    if not isinstance(details, Mapping):
        details = {}
    if isinstance(details.get("command"), str):
        return str(details["command"])[:200]
    if isinstance(details.get("statements"), list):
        tables = [*details.get("reads", []), *details.get("writes", [])]
        kinds = " ".join(str(k) for k in details["statements"])
        return f"{kinds} {' '.join(sorted(map(str, set(tables))))}".strip()[:200]
    if isinstance(details.get("method"), str):
        return f"{details['method']} {action.get('target', '')}{details.get('path', '')}"[:200]
    return f"{action.get('operation', '')} {action.get('target', '')}"[:200]


@dataclass
class ShadowReport:
    decisions: int = 0
    """Decisions in the selection (mode changes are not decisions)."""
    not_enforced: int = 0
    effects: Counter[str] = field(default_factory=Counter)
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    trial: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(effect, reason) of rules on trial, whatever the mode."""
    targets: Counter[tuple[str, str]] = field(default_factory=Counter)
    statements: Counter[str] = field(default_factory=Counter)
    agents: dict[str, Counter[str]] = field(default_factory=dict)
    """agent -> effect -> decisions not enforced (and `trial` findings)."""
    mode_changes: list[dict[str, Any]] = field(default_factory=list)

    def add(self, rec: Mapping[str, Any]) -> None:
        action = rec.get("action", {})
        if action.get("protocol") == "interlock" and action.get("target") == "mode":
            self.mode_changes.append(
                {"time": rec.get("time"), "agent": rec["agent"]["id"], **action["details"]}
            )
            return
        self.decisions += 1
        agent = self.agents.setdefault(rec["agent"]["id"], Counter())
        findings = rec.get("shadow") or []
        for f in findings:
            self.trial[(f["effect"], f["reason"])] += 1
        if findings:
            agent["trial"] += 1
        if rec.get("enforced", True):
            if not findings:
                return
        else:
            self.not_enforced += 1
            self.effects[rec["effect"]] += 1
            agent[rec["effect"]] += 1
            for reason in rec.get("reasons") or [rec["effect"]]:
                self.reasons[(rec["effect"], reason)] += 1
        self.targets[(action.get("protocol", ""), action.get("target", ""))] += 1
        self.statements[statement(rec)] += 1

    def to_json(self, top: int = TOP) -> dict[str, Any]:
        return {
            "decisions": self.decisions,
            "not_enforced": self.not_enforced,
            "by_effect": dict(self.effects.most_common()),
            "by_reason": [
                {"effect": e, "reason": r, "count": n} for (e, r), n in self.reasons.most_common()
            ],
            "trial_rules": [
                {"effect": e, "reason": r, "count": n} for (e, r), n in self.trial.most_common()
            ],
            "top_targets": [
                {"protocol": p, "target": t, "count": n}
                for (p, t), n in self.targets.most_common(top)
            ],
            "top_statements": [
                {"statement": s, "count": n} for s, n in self.statements.most_common(top)
            ],
            "agents": {
                a: dict(c.most_common()) for a, c in sorted(self.agents.items()) if sum(c.values())
            },
            "mode_changes": self.mode_changes,
        }

    def render(self, top: int = TOP) -> str:
        """The report as text, for people."""
        doc = self.to_json(top)
        lines = [
            f"{doc['decisions']} decisions, {doc['not_enforced']} not enforced (shadow mode)",
            "",
            "not enforced, by effect and reason:",
            *(f"  {r['count']:>7}  {r['effect']:<8} {r['reason']}" for r in doc["by_reason"]),
            "rules on trial (never enforced):",
            *(f"  {r['count']:>7}  {r['effect']:<8} {r['reason']}" for r in doc["trial_rules"]),
            "top targets:",
            *(f"  {r['count']:>7}  {r['protocol']} {r['target']}" for r in doc["top_targets"]),
            "top statements:",
            *(f"  {r['count']:>7}  {r['statement']}" for r in doc["top_statements"]),
            "per agent:",
            *(
                f"  {a:<24} " + ", ".join(f"{e} {n}" for e, n in c.items())
                for a, c in doc["agents"].items()
            ),
            "mode changes:",
            *(
                f"  {m['time']}  {m['setting']}: {m['from']} -> {m['to']} ({m['via']})"
                for m in doc["mode_changes"]
            ),
        ]
        return "\n".join(lines) + "\n"

    def page(self, top: int = TOP) -> str:
        """The report as a page for the admin listener."""
        body = html.escape(self.render(top))
        return (
            "<!doctype html><meta charset=utf-8><title>interlock shadow report</title>"
            f"<h1>Shadow report</h1><pre>{body}</pre>"
        )


def summarize(
    records: Iterable[Mapping[str, Any]],
    since: float | None = None,
    agent: str | None = None,
    protocol: str | None = None,
    report: ShadowReport | None = None,
) -> ShadowReport:
    """Add the selected `records` (mode changes of every protocol) to `report`."""
    report = report if report is not None else ShadowReport()
    for rec in records:
        if agent is not None and rec.get("agent", {}).get("id") != agent:
            continue
        if protocol is not None and rec.get("action", {}).get("protocol") not in (
            protocol,
            "interlock",
        ):
            continue
        if since is not None and _epoch(rec["time"]) < since:
            continue
        report.add(rec)
    return report


async def shadow_report(
    store: AuditStore,
    since: float | None = None,
    agent: str | None = None,
    protocol: str | None = None,
) -> ShadowReport:
    """Read the whole log (in chunks) and summarize it."""
    report = ShadowReport()
    async for chunk in _chunks(store):
        summarize((json.loads(r.data) for r in chunk), since, agent, protocol, report)
    return report
