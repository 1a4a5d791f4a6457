"""The Policy Decision Point: `await pdp.decide(action) -> Decision`.

One decision, in order: read posture and context, compute risk signals and the score,
evaluate the policy, enforce posture (defence in depth), apply the posture changes the
decision asks for, remember the action, write the audit record, answer.

Every path yields a Decision with an id, and every failure on the way (policy error,
malformed result, state store down, audit log down) turns into a deny with the reason.

A PEP whose policy speaks another language (ext_authz in OPA-Envoy mode) uses the two
halves: `assess` (context, risk, the interlock input document) and `settle` (posture,
context, audit) around its own evaluation. A PEP that cannot even read a request uses
`refuse`, which denies and audits without asking the policy.

In shadow mode (core/modes.py) `settle` records the decision as made, with `enforced:
false`, and answers the PEP with an allow under the same id; posture changes it asks for
are not applied and context is updated as if the action was allowed. Never shadowed:
`refuse`, decisions the policy could not make (errors fail closed), actions of an
unauthenticated agent or that the PEP could not read completely (modes.UNREADABLE), and
the posture an operator or an enforced decision set.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from interlock.core.context import NORMAL, ContextView, Flow, Posture, RecentAction, StateStore
from interlock.core.dataflow import candidates
from interlock.core.decision_cache import DecisionCache, fact_key, risk_key
from interlock.core.enforcement import enforce_posture
from interlock.core.model import (
    EMPTY,
    TEXT,
    Action,
    Agent,
    Decision,
    Effect,
    Operation,
    Risk,
    Tier,
    new_decision_id,
    with_findings,
)
from interlock.core.modes import Mode, Modes, shadow_answer, shadowable
from interlock.core.policy import DECISION_ENTRYPOINT, PolicyManager
from interlock.core.policy_input import build_input
from interlock.core.record import AuditSink, DecisionRecord
from interlock.core.result import parse_result
from interlock.core.signals import Facts, RiskModel, compute, pace, score
from interlock.core.stats import DecisionStats
from interlock.errors import PolicyError, StateError

log = logging.getLogger(__name__)

UNKNOWN_RISK = Risk(100, Tier.CRITICAL)
"""Risk stated on decisions made before the score could be computed (errors)."""

READ_OPERATIONS = frozenset({Operation.READ, Operation.FILE_READ, Operation.SECRET_READ})
_TIER_RANK = {Tier.LOW: 0, Tier.MEDIUM: 1, Tier.HIGH: 2, Tier.CRITICAL: 3}


MAX_PARENTS = 16

RISK_MEMO = 4096
"""Computed risks kept per risk model (emptied when full): one per distinct combination
of the facts the signals read, which repeat for an agent doing the same kind of work."""


class Intel(Protocol):
    def match(self, action: Action) -> tuple[str, ...]: ...


@dataclass(slots=True)
class Assessment:
    """What the PDP knows about an action before any policy is evaluated."""

    decision_id: str
    now: float
    action: Action
    """The action as decided: the PEP's, plus what the PDP found (threat intel matches,
    data flows, and the decisions behind its taints and flows as `parents`)."""
    version: str = "unknown"
    risk: Risk = UNKNOWN_RISK
    risk_key: Hashable = None
    """`decision_cache.risk_key(risk)`, computed once with the risk."""
    posture: Posture = NORMAL
    input_doc: Mapping[str, Any] = EMPTY
    data: Mapping[str, Any] = EMPTY
    error: str | None = None
    """Set when assessing failed; the decision must then be a deny with this reason."""
    started: float | None = None
    """perf_counter() when the decision began, for the latency histogram."""
    store_down: bool = False
    """The state store failed while assessing: nothing is written back to it (each
    attempt would wait out its timeout again before the denial is answered)."""
    policy: Any = None
    """The compiled bundle this decision uses from start to end (a reload mid-decision
    never mixes two)."""
    view: ContextView | None = None
    failed: bool = False
    """The policy could not decide (error, timeout, malformed result): the deny that
    stands for it is enforced in every mode."""

    def deny(self, reason: str) -> Decision:
        return Decision(
            self.decision_id, Effect.DENY, self.risk, self.version, reasons=(reason,), time=self.now
        )


def target_key(action: Action) -> str:
    """How "the same target" is recognised for first-seen destinations."""
    return f"{action.protocol}:{TEXT[action.operation]}:{action.target}"


class PDP:
    """Decides actions. Cheap to call concurrently from every PEP on one loop."""

    def __init__(
        self,
        policy: PolicyManager,
        store: StateStore,
        audit: AuditSink,
        *,
        clock: Callable[[], float] = time.time,
        audit_fail_open_max_tier: Tier | None = Tier.LOW,
        entrypoint: str = DECISION_ENTRYPOINT,
        intel: Intel | None = None,
        cache_size: int = 4096,
        modes: Modes | None = None,
    ) -> None:
        self.policy = policy
        self.store = store
        self.audit = audit
        self.clock = clock
        self.audit_fail_open_max_tier = audit_fail_open_max_tier
        self.entrypoint = entrypoint
        self.intel = intel
        self.stats = DecisionStats()
        self.cache = DecisionCache(cache_size)
        self._model: tuple[str, RiskModel] | None = None
        self._risks: dict[Hashable, tuple[Risk, Hashable]] = {}
        """Risks (with their `risk_key`) of the current model by the facts behind them."""
        self.modes = modes or Modes()
        self.mode_overrides: dict[str, Mode] = {}
        """Per-agent modes set through the admin API; they outlive a SIGHUP."""
        self.mode_listeners: list[Callable[[str, Mode | None], None]] = []
        """Told of each per-agent override (the other Postgres workers apply it too)."""

    def _risk_model(self, version: str, data: Mapping[str, Any]) -> RiskModel:
        """The bundle's risk model, converted once per bundle version."""
        if self._model is None or self._model[0] != version:
            self._model = (version, RiskModel.from_data(data.get("risk", {})))
            self._risks = {}
        return self._model[1]

    async def decide(self, action: Action) -> Decision:
        """Answer `action`. Never raises for anything the action or policy did."""
        started = time.perf_counter()
        a = await self._assess(action, with_input=False)
        a.started = started
        if a.error is not None:
            return await self.settle(a.action, a, a.deny(a.error))
        assert a.view is not None
        try:
            key = (
                fact_key(a.action, a.posture, a.view, a.risk_key, a.now)
                if self.cache.size
                else None
            )
        except TypeError:
            key = None  # details holding something unhashable: decide without the cache
        hit = self.cache.get(a.policy, key) if key is not None else None
        if hit is not None:
            t, a.input_doc = hit
            decision = Decision(
                a.decision_id, t.effect, t.risk, t.policy_version, t.reasons, t.restrictions,
                t.obligations, a.now, t.shadow,
            )  # fmt: skip
            return await self.settle(a.action, a, decision)
        try:
            a.input_doc = build_input(a.action, a.posture, a.view, a.risk, a.now)
            result = a.policy.evaluate(self.entrypoint, a.input_doc, bounded=True)
            decision = parse_result(
                result, decision_id=a.decision_id, risk=a.risk, policy_version=a.version, now=a.now
            )
            if key is not None:
                self.cache.put(a.policy, key, decision, a.input_doc)
        except PolicyError as exc:
            a.failed = True
            decision = a.deny(f"policy: {exc}")
        except Exception as exc:
            log.exception("decision %s failed", a.decision_id)
            a.failed = True
            decision = a.deny(f"internal error: {type(exc).__name__}")
        return await self.settle(a.action, a, decision)

    async def assess(self, action: Action) -> Assessment:
        """Posture, context and risk of `action`, and the policy input built from them.
        Never raises: a failure is recorded in `error`."""
        return await self._assess(action, with_input=True)

    async def _assess(self, action: Action, *, with_input: bool) -> Assessment:
        a = Assessment(new_decision_id(), self.clock(), action)
        try:
            policy = a.policy = self.policy.current
            a.version = policy.version
            a.data = policy.data.get("interlock", {})
            agent = action.agent.id
            a.posture, view, prints = await self.store.context(agent, target_key(action), a.now)
            a.view = view
            # Fingerprinting the payload costs a hash per word run: only when this
            # agent has read labelled values that could be in it.
            flows = (
                await self.store.flows(agent, candidates(action.payload), a.now)
                if action.payload and prints
                else []
            )
            action = a.action = self._enrich(action, view, flows)
            model = self._risk_model(a.version, a.data)
            a.risk, a.risk_key = self._risk(action, view, len(flows), model)
            if with_input:
                a.input_doc = build_input(action, a.posture, view, a.risk, a.now)
        except PolicyError as exc:
            a.error = f"policy: {exc}"
        except StateError as exc:
            log.warning("decision %s: %s", a.decision_id, exc)
            a.error = str(exc)
            a.store_down = True
        except Exception as exc:
            log.exception("assessing decision %s failed", a.decision_id)
            a.error = f"internal error: {type(exc).__name__}"
        return a

    def mode(self, action: Action) -> tuple[Mode, str]:
        """The mode `action` is decided in, and the setting that chose it."""
        return self.modes.resolve(action.agent.id, action.protocol, self.mode_overrides)

    async def settle(self, action: Action, a: Assessment, decision: Decision) -> Decision:
        """Everything after evaluation: posture veto, posture changes, context, audit.
        Returns the decision the PEP must enforce (possibly stricter than `decision`, or
        in shadow mode an allow)."""
        decision = enforce_posture(decision, action, a.posture)
        answer = decision
        if (
            self.mode(action)[0] is Mode.SHADOW
            and not a.failed
            and a.error is None
            and shadowable(action)
        ):
            # The posture in force still holds: it is the operator's, or an enforced
            # decision's (a shadowed one never changes it).
            answer = enforce_posture(shadow_answer(decision), action, a.posture)
            if answer.effect is decision.effect and answer.obligations == decision.obligations:
                answer = decision
        if not a.store_down:
            await self._apply(action, answer)
            await self._remember(action, answer, target_key(action), a.now, a.data)
        # No engine when the policy never ran: replay then knows it cannot re-decide this.
        ran = a.policy is not None and a.error is None
        engine = f"{a.policy.engine_name} {a.policy.engine_version}" if ran else None
        final = await self._audit(action, decision, a.input_doc, engine, answer)
        enforced = final is decision
        if final is not answer:
            decision, enforced = final, True  # the audit log overruled: its denial is shown
        if decision.effect is not Effect.ALLOW:
            log.info(
                "%s%s %s %s %s: %s",
                decision.effect.value, "" if enforced else " (shadow, not enforced)",
                action.agent.id, action.protocol, action.target[:200],
                "; ".join(decision.reasons)[:500],
                extra={"decision_id": decision.decision_id, "agent": action.agent.id,
                       "protocol": action.protocol, "effect": decision.effect.value,
                       "tier": decision.risk.tier.value, "enforced": enforced},
            )  # fmt: skip
        elapsed = time.perf_counter() - a.started if a.started is not None else None
        self.stats.add(action, decision, elapsed, enforced)
        return final

    async def observe(
        self,
        action: Action,
        reason: str,
        parent: Decision,
        approver: Mapping[str, Any] | None = None,
        *,
        required: bool = False,
        effect: Effect = Effect.ALLOW,
    ) -> Decision | None:
        """Audit what happened under an earlier decision (an interactive session's
        transcript hash, a person's answer to a hold) without asking the policy: the
        `effect` that was enforced (a refused hold is a `deny`, so a search of the log by
        effect finds it), the parent's risk and policy version, durable. None when the
        record could not be written and `required` (an approval must be provable to
        count)."""
        decision = Decision(
            new_decision_id(),
            effect,
            parent.risk,
            parent.policy_version,
            reasons=(reason,),
            time=self.clock(),
        )
        try:
            await self.audit.append(DecisionRecord(decision, action, {}, approver), durable=True)
        except Exception as exc:
            log.error("audit log write failed for observation %s: %s", decision.decision_id, exc)
            if required:
                return None
        return decision

    async def refuse(self, action: Action, reason: str) -> Decision:
        """Deny and audit without asking the policy: for requests a PEP cannot read."""
        version = "unknown"
        with contextlib.suppress(Exception):
            version = self.policy.current.version
        decision = Decision(
            new_decision_id(),
            Effect.DENY,
            UNKNOWN_RISK,
            version,
            reasons=(reason,),
            time=self.clock(),
        )
        decision = await self._audit(action, decision, {})
        self.stats.add(action, decision, None)
        return decision

    def _enrich(self, action: Action, view: ContextView, flows: list[Flow]) -> Action:
        matches = self.intel.match(action) if self.intel is not None else ()
        if not matches and not flows and not view.taints and not action.parents:
            return action  # the common case: nothing found, nothing to name as a parent
        sources = [view.taint_sources[t] for t in sorted(view.taints) if t in view.taint_sources]
        parents = tuple(dict.fromkeys([*action.parents, *sources, *(f.source for f in flows)]))[
            :MAX_PARENTS
        ]
        if not matches and not flows and parents == action.parents:
            return action
        # Details are copied (and frozen again) only when they change: they are already
        # frozen, and re-freezing them was most of this step for a tainted agent.
        details = action.details
        if flows:
            details = dict(details)
            details["flows"] = [{"source": f.source, "labels": sorted(f.labels)} for f in flows[:8]]
        matched = tuple(dict.fromkeys([*action.threat_matches, *matches]))
        return with_findings(action, details, parents, matched)

    def _risk(
        self, action: Action, view: ContextView, flows: int, model: RiskModel
    ) -> tuple[Risk, Hashable]:
        """The action's risk and its `risk_key`, from the memo when the same facts were
        scored before under this model. The key holds every field of `_facts` except the
        count of recent actions, which is replaced by the two signals computed from it
        (`pace`), so equal keys mean equal facts for every signal."""
        key: Hashable = None
        found: tuple[Risk, Hashable] | None = None
        try:
            key = (
                action.operation, action.labels, action.details.get("classes", ()),
                view.first_seen, view.taints, action.threat_matches, view.approved,
                view.denied, type(action.confidence), action.confidence, action.agent.authn,
                flows, *pace(view.actions_last_minute, view.baseline_per_minute, model).values(),
            )  # fmt: skip
            found = self._risks.get(key)
        except TypeError:  # classes holding something unhashable: no memo
            key = None
        if found is None:
            risk = score(compute(self._facts(action, view, flows), model), model)
            found = (risk, risk_key(risk))
            if key is not None:
                if len(self._risks) >= RISK_MEMO:
                    self._risks.clear()
                self._risks[key] = found
        return found

    @staticmethod
    def _facts(action: Action, view: ContextView, flows: int = 0) -> Facts:
        return Facts(
            operation=TEXT[action.operation],
            labels=action.labels,
            first_seen=view.first_seen,
            taints=view.taints,
            threat_matches=action.threat_matches,
            approved=view.approved,
            denied=view.denied,
            confidence=action.confidence,
            authn=action.agent.authn,
            actions_last_minute=view.actions_last_minute,
            flows=flows,
            baseline_per_minute=view.baseline_per_minute,
            classes=frozenset(c for c in action.details.get("classes", ()) if isinstance(c, str)),
        )

    async def _apply(self, action: Action, decision: Decision) -> None:
        """Carry out the posture change a restrict or isolate decision asks for."""
        try:
            if decision.effect is Effect.RESTRICT and decision.restrictions:
                await self.store.restrict(
                    action.agent.id,
                    decision.restrictions,
                    reason=f"decision {decision.decision_id}",
                )
            elif decision.effect is Effect.ISOLATE:
                await self.store.restrict(
                    action.agent.id, (), isolate=True, reason=f"decision {decision.decision_id}"
                )
        except StateError as exc:
            # The action is denied either way; the failure to persist the posture is loud.
            log.error("could not apply posture of decision %s: %s", decision.decision_id, exc)
        except Exception:
            log.exception("could not apply posture of decision %s", decision.decision_id)

    async def _remember(
        self,
        action: Action,
        decision: Decision,
        key: str,
        now: float,
        data: Mapping[str, Any],
    ) -> None:
        taints: dict[str, float] = {}
        if decision.allowed:
            conf = data.get("taint", {})
            until = now + float(conf.get("ttl_seconds", 900))
            for label in action.taints:
                taints[label] = until
            if action.operation in READ_OPERATIONS:
                by_label = conf.get("on_read_labels", {})
                for label in action.labels:
                    if isinstance(by_label.get(label), str):
                        taints[by_label[label]] = until
        recent = RecentAction(
            decision.decision_id,
            now,
            action.protocol,
            TEXT[action.operation],
            action.target,
            TEXT[decision.effect],
        )
        try:
            await self.store.record(action.agent.id, recent, key, taints)
        except StateError as exc:
            # Known and already said (the decision was denied for it, or is allowed
            # without this action in its history): no traceback for an outage.
            log.warning("context of decision %s not recorded: %s", decision.decision_id, exc)
        except Exception:
            log.exception("could not record context of decision %s", decision.decision_id)

    async def _audit(
        self,
        action: Action,
        decision: Decision,
        input_doc: Mapping[str, Any],
        engine: str | None = None,
        answer: Decision | None = None,
    ) -> Decision:
        """Audit before allow: above `low` (or always, with fail-open "none") the record
        must be durable before the answer (`decision`, or what shadow mode answers
        instead) is returned; when it cannot be written, a permissive answer becomes a
        deny, in every mode."""
        answer = decision if answer is None else answer
        limit = self.audit_fail_open_max_tier
        durable = limit is None or decision.risk.tier is not Tier.LOW
        try:
            record = DecisionRecord(
                decision, action, input_doc, engine=engine, enforced=answer is decision
            )
            await self.audit.append(record, durable=durable)
        except Exception as exc:
            log.error("audit log write failed for %s: %s", decision.decision_id, exc)
            if answer.effect in (Effect.ALLOW, Effect.APPROVE) and (
                limit is None or _TIER_RANK[decision.risk.tier] > _TIER_RANK[limit]
            ):
                denied = replace(
                    decision,
                    effect=Effect.DENY,
                    reasons=(*decision.reasons, "audit log unavailable"),
                )
                # The denial itself is queued, so the log shows it once the store is back.
                with contextlib.suppress(Exception):
                    await self.audit.append(
                        DecisionRecord(denied, action, input_doc, engine=engine), durable=False
                    )
                return denied
        return answer

    async def set_modes(self, modes: Modes, via: str) -> None:
        """Serve `modes` from the next decision on; each changed setting is an audit record."""
        changes = self.modes.changes(modes)
        self.modes = modes
        for setting, old, new in changes:
            await self._record_mode(setting, old, new, via, "interlock")

    async def set_agent_mode(self, agent_id: str, mode: Mode | None, via: str) -> None:
        """Override (or with None, stop overriding) the configured mode of one agent."""
        old = self.mode_overrides.get(agent_id)
        if mode is None:
            self.mode_overrides.pop(agent_id, None)
        else:
            self.mode_overrides[agent_id] = mode
        for listener in self.mode_listeners:
            listener(agent_id, mode)
        if old != mode:
            await self._record_mode(
                f"admin API, agent {agent_id}",
                old.value if old else "unset",
                mode.value if mode else "unset",
                via,
                agent_id,
            )

    async def _record_mode(self, setting: str, old: str, new: str, via: str, agent: str) -> None:
        """A mode change is an audit record (protocol `interlock`, operation `admin`): a
        shadow report read later must know when enforcement began. Failing to write it is
        loud but does not undo the change (the operator asked for it)."""
        log.warning("mode %s: %s -> %s (%s)", setting, old, new, via)
        version = "unknown"
        with contextlib.suppress(Exception):
            version = self.policy.current.version
        decision = Decision(
            new_decision_id(), Effect.ALLOW, Risk(0, Tier.LOW), version,
            reasons=(f"mode {setting}: {old} -> {new}",), time=self.clock(),
        )  # fmt: skip
        details = {"setting": setting, "from": old, "to": new, "via": via}
        action = Action(
            Agent(agent, authn="operator"), "interlock", Operation.ADMIN, "mode", details
        )
        try:
            await self.audit.append(DecisionRecord(decision, action, {}), durable=True)
        except Exception as exc:
            log.error("audit log write failed for mode change %s: %s", decision.decision_id, exc)
