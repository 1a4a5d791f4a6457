"""Log output: readable lines for people, or one JSON object per line for collectors.

JSON lines carry `time` (RFC 3339 UTC), `level`, `logger`, `message`, and any of
`decision_id`, `agent`, `protocol`, `effect`, `tier`, `enforced` a log call passes in
`extra`, so a log search can jump straight to the audit record of a decision.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

FIELDS = ("decision_id", "agent", "protocol", "effect", "tier", "enforced")
"""Structured fields copied from a record's `extra`."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(verbose: bool = False, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Client libraries log every request (asyncssh every channel) at INFO; interlock's own
    # lines are what matter.
    for noisy in ("httpx", "httpcore", "hpack", "asyncssh"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
