"""A guard's own answer to a flow, a refusal, marked so that `refusals.Refusals` audits it."""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http

REFUSAL = "interlock.refusal"
"""flow.metadata key: why a guard answered the flow itself (None once audited)."""
COUNTED = "rate-limited: counted in the next record for this address"
"""Said in an answer instead of a decision id when the refusal's record was rate-limited
(`refusals.Throttle`): no id is claimed that was not recorded."""
MAX_QUOTED_REASON = 256
"""A reason of mitmproxy's quotes what the client sent (a repr of it): enough to see
what was refused, not a way to write the client's bytes into the log at length."""


def refuse(flow: http.HTTPFlow, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    """Answer `flow` with a guard's refusal (a JSON `body` with a `reason`), marked for audit."""
    flow.response = http.Response.make(status, json.dumps(body), headers)
    flow.metadata[REFUSAL] = str(body.get("reason") or body.get("error") or status)
