"""The model: closed vocabularies, immutability, ids."""

from __future__ import annotations

import dataclasses
import os
import re

import pytest

from interlock.core.model import (
    Action,
    Agent,
    Effect,
    Operation,
    new_decision_id,
    parse_restriction,
    thaw,
    with_findings,
)

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_operation_vocabulary_is_the_designed_one() -> None:
    assert {o.value for o in Operation} == {
        "read",
        "write",
        "ddl",
        "admin",
        "exec",
        "egress",
        "tool_call",
        "file_read",
        "file_write",
        "forward",
        "connect",
        "delegate",
        "secret_read",
        "prompt",
        "completion",
    }


def test_effects_are_the_five_designed_ones() -> None:
    assert {e.value for e in Effect} == {"allow", "deny", "approve", "restrict", "isolate"}


@pytest.mark.parametrize(
    "value", ["read_only", "no_egress", "no_delegation", "rotate_credentials", "tool:shell"]
)
def test_known_restrictions_parse(value: str) -> None:
    assert parse_restriction(value) == value


@pytest.mark.parametrize("value", ["", "readonly", "tool:", "tool:" + "x" * 300, "admin"])
def test_unknown_restrictions_are_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="unknown restriction"):
        parse_restriction(value)


def test_action_details_are_deeply_frozen() -> None:
    details = {"tables": ["a", "b"], "nested": {"k": [1, {"x": 2}]}}
    action = Action(Agent("a"), "postgres", Operation.READ, "t", details)
    details["tables"].append("c")
    assert thaw(action.details) == {"tables": ["a", "b"], "nested": {"k": [1, {"x": 2}]}}
    with pytest.raises(TypeError):
        action.details["tables"] = []  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        action.target = "other"  # type: ignore[misc]


def test_decision_ids_are_uuid7_and_sort_in_creation_order() -> None:
    ids = [new_decision_id() for _ in range(2000)]
    assert all(UUID7.match(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_a_forked_worker_draws_fresh_randomness_for_its_ids() -> None:
    """Ids come from a buffer of OS randomness; a forked child must not replay it."""
    new_decision_id()  # the buffer is filled
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, new_decision_id().encode())
        os._exit(0)
    os.close(write)
    mine = new_decision_id()
    os.waitpid(pid, 0)
    theirs = os.read(read, 64).decode()
    os.close(read)
    assert mine[-12:] != theirs[-12:]


def test_with_findings_keeps_every_other_field() -> None:
    """The PDP's cheap copy of an action names every field: one added to `Action` and
    not passed on would be lost from every enriched action (and its audit record)."""
    action = Action(
        Agent("a", ("r",), "o@example.com", ("up",), "token"),
        "http",
        Operation.EGRESS,
        "example.com",
        {"k": "v"},
        frozenset({"pii"}),
        ("p0",),
        frozenset({"untrusted_content"}),
        ("m0",),
        "hash",
        "text",
        0.5,
        "payload",
    )
    for f in dataclasses.fields(Action):
        assert getattr(action, f.name) != f.default, f"give {f.name} a non-default value here"
    found = with_findings(action, {"flows": ()}, ("p1",), ("m1",))
    assert found == dataclasses.replace(
        action, details={"flows": ()}, parents=("p1",), threat_matches=("m1",)
    )
