"""Garbage collector settings for a process that answers in microseconds.

CPython's cyclic collector walks every tracked object in the oldest generation on a full
collection: with mitmproxy, sqlglot and a compiled policy loaded that is hundreds of
thousands of objects, and the pause lands on whichever decision triggered it. What was
built at start-up lives as long as the process, so it is moved out of the collector's
view once serving starts (`gc.freeze`, as large Python services do); what decisions
allocate afterwards is still collected as usual.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect once, then exempt every object alive now from later collections. Call
    when start-up is complete, before the first request is served."""
    gc.collect()
    gc.freeze()


def release() -> None:
    """Hand the frozen objects back to the collector (when serving stops, so a process
    that serves again, as the tests do, does not keep the last run's cycles forever)."""
    gc.unfreeze()
