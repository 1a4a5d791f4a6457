"""Content classification: secrets and personal data in what leaves, injection in what
comes in. Pure functions over text; findings name kinds, never the values found.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

MAX_SCAN = 1024 * 1024
"""Bytes of a body that are scanned; the size itself is in the action, and the policy
can refuse bodies too large to inspect."""

SECRET_PATTERNS: dict[str, re.Pattern[str]] = {
    "aws_access_key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "github_token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b"),
    "slack_token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
    "google_api_key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "stripe_key": re.compile(r"\b[rs]k_live_[0-9A-Za-z]{20,}\b"),
    "private_key": re.compile(
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?"
        r"PRIVATE KEY(?: BLOCK)?-----"
    ),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"),
}
_CANDIDATE = re.compile(r"[A-Za-z0-9+/=_\-]{32,}")
EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,4}"
    r"|\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4})(?![\w])"
)
"""International numbers written with +, or the (xxx) xxx-xxxx shape; bare digit runs are
too often order numbers to call them phones."""
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,4})?\b")

LABELS = {
    "aws_access_key": "credentials",
    "github_token": "credentials",
    "slack_token": "credentials",
    "google_api_key": "credentials",
    "stripe_key": "credentials",
    "private_key": "secret",
    "jwt": "credentials",
    "high_entropy": "secret",
    "email": "pii",
    "phone": "pii",
    "ssn": "pii",
    "card_number": "financial",
    "iban": "financial",
}


@dataclass(frozen=True, slots=True)
class Findings:
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def labels(self) -> frozenset[str]:
        out = {LABELS[k] for k in self.kinds}
        if self.kinds.keys() & {"card_number", "iban", "ssn", "email", "phone"}:
            out.add("pii")
        return frozenset(out)


def entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(s)
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def luhn(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        alt = not alt
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def scan_secrets(text: str) -> Findings:
    """Only the keys and tokens of SECRET_PATTERNS in `text`: for request headers, whose
    values are full of trace ids, ETags and cookies that the entropy and personal-data
    detectors would take for secrets on every request."""
    kinds = {k: n for k, p in SECRET_PATTERNS.items() if (n := len(p.findall(text[:MAX_SCAN])))}
    return Findings(kinds)


def scan(text: str) -> Findings:
    """Secrets and personal data in `text` (the first MAX_SCAN characters)."""
    text = text[:MAX_SCAN]
    kinds: Counter[str] = Counter()
    for kind, pattern in SECRET_PATTERNS.items():
        n = len(pattern.findall(text))
        if n:
            kinds[kind] += n
    for m in _CANDIDATE.finditer(text):
        token = m.group(0)
        if any(p.fullmatch(token) for p in SECRET_PATTERNS.values()):
            continue
        threshold = 3.0 if re.fullmatch(r"[0-9a-fA-F]+", token) else 4.2
        if entropy(token) >= threshold and not token.isdigit():
            kinds["high_entropy"] += 1
    for kind, pattern in (("email", EMAIL), ("ssn", SSN)):
        n = len(pattern.findall(text))
        if n:
            kinds[kind] += n
    for m in CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn(digits):
            kinds["card_number"] += 1
    for m in IBAN.finditer(text):
        if iban_valid(m.group(0)):
            kinds["iban"] += 1
    for m in PHONE.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if 9 <= len(digits) <= 15 and not (len(digits) >= 13 and luhn(digits)):
            kinds["phone"] += 1
    return Findings(dict(kinds))


class InjectionDetector(Protocol):
    """Pluggable: returns the reasons `text` looks like it tries to steer an agent."""

    def scan(self, text: str) -> list[str]: ...


_INJECTION = [
    (
        "override",
        re.compile(
            r"\b(?:ignore|disregard|forget)\s+(?:all\s+|any\s+)?(?:the\s+)?"
            r"(?:previous|prior|above|earlier)\s+(?:instructions|prompts?|"
            r"rules|messages)",
            re.I,
        ),
    ),
    (
        "role_switch",
        re.compile(
            r"\byou\s+are\s+now\s+(?:a|an|the|in)\b|\bact\s+as\s+(?:a|an)"
            r"\s+(?:unrestricted|jailbroken)",
            re.I,
        ),
    ),
    (
        "system_prompt",
        re.compile(
            r"\b(?:reveal|print|show|repeat)\s+(?:your|the)\s+"
            r"(?:system\s+prompt|instructions)",
            re.I,
        ),
    ),
    (
        "chat_markup",
        re.compile(
            r"<\|im_start\|>|<\|system\|>|\[INST\]|<<SYS>>|"
            r"^\s*(?:system|assistant)\s*:",
            re.I | re.M,
        ),
    ),
    (
        "exfiltration",
        re.compile(
            r"\b(?:send|post|upload|exfiltrate|forward)\b.{0,60}\b"
            r"(?:credentials|password|api[\s_-]?key|secrets?|token|"
            r"ssh\s+key)s?\b.{0,60}\b(?:to|at)\b",
            re.I | re.S,
        ),
    ),
    (
        "tool_directive",
        re.compile(
            r"\b(?:call|invoke|run|use)\s+the\s+[\w.-]+\s+tool\b"
            r".{0,80}\b(?:without|do\s+not)\s+(?:asking|telling|"
            r"confirm)",
            re.I | re.S,
        ),
    ),
    (
        "hidden_text",
        re.compile(
            r"[\u200b\u200c\u200d\u2060\u202e]{3,}|"
            r"(?:display\s*:\s*none|font-size\s*:\s*0)",
            re.I,
        ),
    ),
]


class HeuristicDetector:
    """Phrase and markup heuristics: cheap, explainable, and replaceable."""

    def scan(self, text: str) -> list[str]:
        text = text[:MAX_SCAN]
        return [name for name, pattern in _INJECTION if pattern.search(text)]
