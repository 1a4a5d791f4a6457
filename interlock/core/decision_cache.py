"""Answers for repeated decisions, keyed by the discrete facts the policy reads.

A decision is a pure function of the compiled bundle and the policy input, and the input
is built from a handful of facts (agent, action shape, posture, taints, first-seen, risk,
hour and weekday). The key is those facts as a tuple, so a hit costs a tuple hash: no
input document, no JSON. Values are tagged with their type where Python's equality is
looser than Rego's (`True == 1 == 1.0` in Python; not to a policy that echoes them). The
cache belongs to one compiled bundle and is emptied when another one serves.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any

from interlock.core.context import ContextView, Posture
from interlock.core.model import Action, Decision, Risk

_MAP = object()


def value_key(value: Any) -> Hashable:
    """A hashable form of frozen JSON-like data, equal only for equal policy values."""
    t = type(value)
    if t is str:
        return str(value)
    if t is MappingProxyType or t is dict:
        return (_MAP, *[(k, value_key(v)) for k, v in value.items()])
    if t is tuple or t is list:
        # A sequence of strings is its own key (the common case: tables, columns, argv).
        if all(type(v) is str for v in value):
            return tuple(value)
        return tuple([value_key(v) for v in value])
    if isinstance(value, Mapping):
        return (_MAP, *[(str(k), value_key(v)) for k, v in value.items()])
    # Scalars; anything unhashable raises TypeError and the PDP decides without the cache.
    return (t, value)


def risk_key(risk: Risk) -> Hashable:
    """The risk's part of a fact key (the PDP keeps it with a memoised risk)."""
    return (risk.score, risk.tier, tuple([(k, type(v), v) for k, v in risk.signals.items()]))


def fact_key(
    action: Action, posture: Posture, view: ContextView, risk: Hashable, now: float
) -> Hashable:
    """Everything `policy_input.build_input` reads, as one hashable tuple; `risk` is
    the decision's `risk_key`."""
    agent = action.agent
    local = time.gmtime(now)
    return (
        agent.id, agent.roles, agent.owner, agent.delegation, agent.authn,
        action.protocol, action.operation, action.target, value_key(action.details),
        action.labels, action.threat_matches,
        view.taints, view.first_seen, posture.restrictions, posture.isolated,
        risk,
        local.tm_hour, local.tm_wday,
    )  # fmt: skip


class DecisionCache:
    """A bounded LRU of (decision template, input document) per fact key, for one bundle."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._owner: object = None
        self._entries: OrderedDict[Hashable, tuple[Decision, Mapping[str, Any]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, policy: object, key: Hashable) -> tuple[Decision, Mapping[str, Any]] | None:
        """The entry for `key` under the compiled `policy`, or None."""
        if policy is not self._owner:
            self._entries.clear()
            self._owner = policy
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found

    def put(
        self, policy: object, key: Hashable, decision: Decision, input_doc: Mapping[str, Any]
    ) -> None:
        if policy is not self._owner or not self.size:
            return
        self._entries[key] = (decision, input_doc)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
