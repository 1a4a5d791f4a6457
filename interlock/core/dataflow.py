"""Data flow: recognise values an agent read under a label when they leave again.

When the Postgres proxy returns labelled values, each is fingerprinted (a truncated
SHA-256 of its normalised text) and kept on the agent's session with the decision that
read it. When an HTTP body, an MCP tool argument or an SSH command goes out, its words
and short word runs are fingerprinted the same way; a shared fingerprint is a flow, and
the outgoing action names the decision the data came from.

Short values (under `MIN_CHARS`) are not tracked: "yes", "42" or a country code would
match everything. Only fingerprints are kept, never the values.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

MIN_CHARS = 6
MAX_WORDS = 20_000
NGRAM = 3
_WORD = re.compile(r"[\w@.+\-:/]+", re.UNICODE)
_SPACE = re.compile(r"\s+")


def fingerprint(normalised: str) -> str:
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()[:20]


def normalise(value: str) -> str | None:
    text = _SPACE.sub(" ", value.strip().lower()).strip(" \t\"',;")
    return text if len(text) >= MIN_CHARS else None


def value_fingerprints(values: Iterable[str]) -> set[str]:
    out = set()
    for v in values:
        n = normalise(v)
        if n is not None:
            out.add(fingerprint(n))
    return out


def candidates(text: str) -> frozenset[str]:
    """Fingerprints of every word and run of up to three words in `text` (bounded)."""
    words = [w.strip(".,:;/-") for w in _WORD.findall(text.lower())[:MAX_WORDS]]
    out: set[str] = set()
    for i in range(len(words)):
        for n in range(1, NGRAM + 1):
            if i + n > len(words):
                break
            joined = " ".join(words[i : i + n])
            if len(joined) >= MIN_CHARS:
                out.add(fingerprint(joined))
    return frozenset(out)
