"""The audit record of one decision, and its canonical bytes (the Merkle leaf).

Format version 1 (docs/audit.md). Values that cannot be canonical JSON are made so
(integers beyond 2**53 and non-finite floats become strings), and details under secret-
looking keys (password, token, authorization, ...) are replaced by `[redacted]`, so the
log never becomes a place to steal credentials from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Hashable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from interlock.core.canonical import (
    MAX_SAFE_INTEGER,
    CanonicalizationError,
    canonical_json,
    is_plain_float,
    plain_key,
)
from interlock.core.model import TEXT
from interlock.core.record import DecisionRecord

RECORD_VERSION = 1
REDACTED = "[redacted]"
SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?|secret|token|api[-_]?key|authori[sz]ation|cookie|credential|"
    r"private[-_]?key|session[-_]?id|bearer",
    re.I,
)


class _Plain:
    """Tracks, during `sanitize`, whether the result can skip canonical.py's own check."""

    __slots__ = ("ok",)

    def __init__(self) -> None:
        self.ok = True


_secret_keys: dict[str, bool] = {}


def _secret(key: str) -> bool:
    """Whether `key` names a secret; memoised, since the same keys recur in every record."""
    found = _secret_keys.get(key)
    if found is None:
        found = SECRET_KEY.search(key) is not None
        if len(_secret_keys) < 10_000:
            _secret_keys[key] = found
    return found


def _safe(n: int) -> bool:
    return -MAX_SAFE_INTEGER <= n <= MAX_SAFE_INTEGER


def sanitize(value: Any, depth: int = 0, plain: _Plain | None = None) -> Any:
    """JSON-safe, canonicalizable, secret-free copy of `value` (one pass, hot path).

    Exact-type tests come first, scalars before containers: this runs for every value of
    every record, and the abstract-class checks cost several times more."""
    t = type(value)
    if t is str:
        # Lone surrogates cannot be UTF-8; keep the record writable rather than lose it.
        return value if value.isascii() else value.encode("utf-8", "replace").decode()
    if depth > 32:
        return "[too deep]"
    if t is int:
        return value if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER else str(value)
    if value is None or t is bool:
        return value
    if t is float:
        if not math.isfinite(value):
            return str(value)
        if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
            return int(value)
        if plain is not None and not _plain_float(value):
            plain.ok = False
        return value
    # Containers copy ASCII strings, booleans, None and safe integers in place rather than
    # through a call each: they are most of what details and contexts hold. (A child one
    # level down is too deep past 32; strings never are: `sanitize` checks them first.)
    shallow = depth < 32
    if t is list or t is tuple:
        items = []
        for v in value:
            tv = type(v)
            if (tv is str and v.isascii()) or (
                shallow and (v is None or tv is bool or (tv is int and _safe(v)))
            ):
                items.append(v)
            else:
                items.append(sanitize(v, depth + 1, plain))
        return items
    if t is dict or t is MappingProxyType or isinstance(value, Mapping):
        out = {}
        secrets = _secret_keys
        for k, v in value.items():
            if type(k) is str and k.isascii():
                key = k
            else:
                key = sanitize(str(k))
                if plain is not None and not plain_key(key):
                    plain.ok = False
            secret = secrets.get(key)  # `_secret`'s memo, without the call
            if secret is None:
                secret = _secret(key)
            if secret:
                out[key] = REDACTED
                continue
            tv = type(v)
            if (tv is str and v.isascii()) or (
                shallow and (v is None or tv is bool or (tv is int and _safe(v)))
            ):
                out[key] = v
            else:
                out[key] = sanitize(v, depth + 1, plain)
        return out
    if isinstance(value, (set, frozenset)):
        return [sanitize(v, depth + 1, plain) for v in sorted(value, key=str)]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return sanitize(int(value), depth, plain)
    if isinstance(value, float):
        return sanitize(float(value), depth, plain)
    if isinstance(value, str):
        return sanitize(str(value), depth, plain)
    return str(value)


_plain_floats: dict[float, bool] = {}


def _plain_float(x: float) -> bool:
    """`is_plain_float`, memoised: records repeat the same few signal values."""
    found = _plain_floats.get(x)
    if found is None:
        found = is_plain_float(x)
        if len(_plain_floats) < 10_000:
            _plain_floats[x] = found
    return found


def timestamp(t: float) -> str:
    """RFC 3339 UTC with microseconds: strings keep times exact in canonical JSON."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


_last_second: tuple[int, str] = (-1, "")


def _timestamp_fast(t: float) -> str:
    """`timestamp` with the date and time of day formatted once per second: records
    arrive thousands a second, and only the microseconds differ between them.

    The microseconds are rounded as `datetime.fromtimestamp` rounds them (the fraction
    times 10**6, half to even, carried into the second at 10**6), so both give the same
    text for every time (tests/audit/test_record.py checks it)."""
    global _last_second
    if not 0.0 <= t < _LAST_FAST_SECOND:  # NaN too
        return timestamp(t)
    second = int(t)
    # Exact: a non-negative double minus its integer part loses nothing (as `math.modf`).
    micros = round((t - second) * 1e6)
    if micros >= 1_000_000:
        micros -= 1_000_000
        second += 1
    cached = _last_second
    if cached[0] != second:
        dt = datetime.fromtimestamp(second, UTC)
        cached = _last_second = (second, dt.strftime("%Y-%m-%dT%H:%M:%S"))
    return "%s.%06dZ" % (cached[1], micros)  # noqa: UP031 (190 ns against the f-string's 269)


_LAST_FAST_SECOND = 253402300799.0
"""9999-12-31T23:59:59Z: after it the year has five digits; `timestamp` handles those."""


IDENTITY_MEMO = 4096
"""Documents `_shared` remembers; all are forgotten at once when it is full."""
_shared_docs: dict[int, tuple[object, Any]] = {}


def _shared(value: Mapping[str, Any], plain: _Plain) -> Any:
    """`sanitize(value)`, remembered by the identity of `value`.

    For the parts interlock builds once and then shares, unchanged, between decisions: a
    cached decision carries the very policy input (its `context`) the miss built, and a
    memoised risk the very signals dict. Neither is changed after it is made (the input
    is read by the policy engine and the cache; `Risk` is frozen), so an object seen
    before has the document it had. The memo holds each object, so its id is not reused
    by another while remembered. Only canonical-safe documents are kept, so a hit never
    hides a value the C encoder would print differently."""
    found = _recall(value)
    if found is not None:
        return found
    mine = _Plain()
    doc = sanitize(value, 0, mine)
    if not mine.ok:
        plain.ok = False
        return doc
    return _remember(value, doc)


def _recall(value: object) -> Any:
    """The document remembered for this very object, or None."""
    found = _shared_docs.get(id(value))
    return found[1] if found is not None and found[0] is value else None


def _remember(value: object, doc: Any) -> Any:
    if len(_shared_docs) >= IDENTITY_MEMO:
        _shared_docs.clear()
    _shared_docs[id(value)] = (value, doc)
    return doc


_signal_docs: dict[Hashable, Any] = {}


def _signals(signals: Mapping[str, Any], plain: _Plain) -> Any:
    """The sanitized risk signals, memoised: a handful of quantised values recur in
    every record. A memoised risk's own dict is found by identity (`_shared`); others
    by value, keyed on each value's type too (`1 == 1.0 == True`)."""
    found = _recall(signals)
    if found is not None:
        return found
    try:
        key: Hashable = (tuple(signals.items()), tuple(map(type, signals.values())))
        found = _signal_docs.get(key)
    except TypeError:
        return sanitize(signals, 0, plain)
    if found is None:
        mine = _Plain()
        found = sanitize(signals, 0, mine)
        if not mine.ok:
            plain.ok = False
            return found
        if len(_signal_docs) < 10_000:
            _signal_docs[key] = found
    return _remember(signals, found)


def _text(member: StrEnum) -> str:
    return TEXT.get(member) or str(member.value)


def build(rec: DecisionRecord, when: Callable[[float], str] = timestamp) -> dict[str, Any]:
    """The record as plain data (not yet sanitized; `encode` does that in one pass)."""
    d, a = rec.decision, rec.action
    prompt = None
    if a.prompt_hash or a.prompt_text:
        prompt = {"hash": a.prompt_hash, "text": a.prompt_text}
    return {
        "v": RECORD_VERSION,
        "decision_id": d.decision_id,
        "time": when(d.time),
        "agent": {
            "id": a.agent.id,
            "roles": a.agent.roles,
            "owner": a.agent.owner,
            "delegation": a.agent.delegation,
            "authn": a.agent.authn,
        },
        "action": {
            "protocol": a.protocol,
            "operation": _text(a.operation),
            "target": a.target,
            "details": a.details,
            "labels": sorted(a.labels),
            "threat_matches": a.threat_matches,
        },
        "prompt": prompt,
        "parents": a.parents,
        "context": rec.input.get("context", {}),
        "time_features": rec.input.get("time", {}),
        "policy_version": d.policy_version,
        "policy_engine": rec.engine,
        "risk": {"score": d.risk.score, "tier": _text(d.risk.tier), "signals": d.risk.signals},
        "effect": _text(d.effect),
        "reasons": d.reasons,
        "restrictions": d.restrictions,
        "obligations": [{"type": o.type, **o.params} for o in d.obligations],
        "approver": dict(rec.approver) if rec.approver is not None else None,
        "enforced": rec.enforced,
        "shadow": [{"effect": _text(e), "reason": r} for e, r in d.shadow],
    }


def document(rec: DecisionRecord) -> dict[str, Any]:
    """The record exactly as it is hashed: built, then sanitized and redacted."""
    value: dict[str, Any] = sanitize(build(rec))
    return value


def _fast_document(rec: DecisionRecord, plain: _Plain) -> dict[str, Any]:
    """`document` without walking the parts interlock built itself: only what came from
    a PEP or a policy author (details, prompt, context, obligations) is sanitized, and
    that one walk also finds whether the C encoder's output will be canonical."""
    doc = build(rec, _timestamp_fast)
    action = doc["action"]
    action["details"] = sanitize(action["details"], 0, plain)
    if doc["prompt"] is not None:
        doc["prompt"] = sanitize(doc["prompt"], 0, plain)
    doc["context"] = _shared(doc["context"], plain)
    if doc["obligations"]:
        doc["obligations"] = sanitize(doc["obligations"], 0, plain)
    doc["risk"]["signals"] = _signals(doc["risk"]["signals"], plain)
    return doc


def encode(rec: DecisionRecord) -> bytes:
    """The canonical bytes that become the Merkle leaf.

    The fast path trusts interlock's own fields and walks the rest once; anything it
    cannot encode (a lone surrogate in an agent id from a JWT, say) goes through the full
    sanitizer, so every record can be written and one bad record never blocks the queue
    behind it."""
    try:
        plain = _Plain()
        doc = _fast_document(rec, plain)
        return canonical_json(doc, known_plain=plain.ok)
    except (CanonicalizationError, TypeError, ValueError):
        plain = _Plain()
        return canonical_json(sanitize(build(rec), 0, plain), known_plain=plain.ok)
