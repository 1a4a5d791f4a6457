"""The audit record of one decision, and its canonical bytes (the Merkle leaf).

Format version 1 (docs/audit.md). Values that cannot be canonical JSON are made so
(integers beyond 2**53 and non-finite floats become strings), and details under secret-
looking keys (password, token, authorization, ...) are replaced by `[redacted]`, so the
log never becomes a place to steal credentials from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from interlock.audit.canonical import MAX_SAFE_INTEGER, canonical_json
from interlock.core.record import DecisionRecord

RECORD_VERSION = 1
REDACTED = "[redacted]"
SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|authori[sz]ation|cookie|credential|"
    r"private[-_]?key|session[-_]?id|bearer",
    re.I,
)


def sanitize(value: Any, depth: int = 0) -> Any:
    """JSON-safe, canonicalizable, secret-free copy of `value`."""
    if depth > 32:
        return "[too deep]"
    if isinstance(value, str):
        # Lone surrogates cannot be UTF-8; keep the record writable rather than lose it.
        return value if value.isascii() else value.encode("utf-8", "replace").decode()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) <= MAX_SAFE_INTEGER else str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
            return int(value)
        return value
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if SECRET_KEY.search(str(k)) else sanitize(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [sanitize(v, depth + 1) for v in items]
    return str(value)


def timestamp(t: float) -> str:
    """RFC 3339 UTC with microseconds: strings keep times exact in canonical JSON."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def build(rec: DecisionRecord) -> dict[str, Any]:
    d, a = rec.decision, rec.action
    context = rec.input.get("context", {})
    prompt = None
    if a.prompt_hash or a.prompt_text:
        prompt = {"hash": a.prompt_hash, "text": a.prompt_text}
    return {
        "v": RECORD_VERSION,
        "decision_id": d.decision_id,
        "time": timestamp(d.time),
        "agent": {
            "id": a.agent.id,
            "roles": list(a.agent.roles),
            "owner": a.agent.owner,
            "delegation": list(a.agent.delegation),
            "authn": a.agent.authn,
        },
        "action": {
            "protocol": a.protocol,
            "operation": a.operation.value,
            "target": a.target,
            "details": sanitize(a.details),
            "labels": sorted(a.labels),
            "threat_matches": list(a.threat_matches),
        },
        "prompt": sanitize(prompt),
        "parents": list(a.parents),
        "context": sanitize(context),
        "time_features": sanitize(rec.input.get("time", {})),
        "policy_version": d.policy_version,
        "risk": {
            "score": d.risk.score,
            "tier": d.risk.tier.value,
            "signals": sanitize(dict(d.risk.signals)),
        },
        "effect": d.effect.value,
        "reasons": sanitize(list(d.reasons)),
        "restrictions": list(d.restrictions),
        "obligations": sanitize([{"type": o.type, **o.params} for o in d.obligations]),
        "approver": None,
    }


def encode(rec: DecisionRecord) -> bytes:
    """The canonical bytes that become the Merkle leaf."""
    return canonical_json(build(rec))
