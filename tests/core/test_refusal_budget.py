"""The flood limit on refusals anyone can cause: one record per key per interval, the
rest counted into the next one, and no count left behind when a flood stops."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.core.refusal import FloodLimit, RefusalBudget, refusals_counted
from interlock.testing import CaptureSink, make_pdp


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 0.7)), max_size=200))
def test_one_record_per_key_per_interval_and_nothing_uncounted(
    events: list[tuple[str, float]],
) -> None:
    budget = RefusalBudget(interval=1.0)
    now = 0.0
    written: dict[str, list[float]] = {}
    counted: dict[str, int] = {}
    for key, step in events:
        now += step
        reported = budget.take(key, now)
        counted[key] = counted.get(key, 0) + 1
        if reported is not None:
            times = written.setdefault(key, [])
            assert not times or now - times[-1] >= 1.0
            times.append(now)
            counted[key] -= 1 + reported  # this one, and those it reports
    # What is still counted is exactly what the next record would report.
    for key, left in counted.items():
        assert left == budget.take(key, now + 10.0)


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("refuse"), st.sampled_from("abcdef"), st.floats(0, 0.8)),
            st.tuples(st.just("sweep"), st.just(""), st.floats(0, 0.8)),
        ),
        max_size=150,
    ),
    st.integers(1, 4),
)
def test_records_and_their_counts_add_up_to_every_refusal(
    events: list[tuple[str, str, float]], max_keys: int
) -> None:
    """Refusals at random times from more addresses than the budget remembers, with sweeps
    between them: records written plus the counts they report equal the refusals made."""
    budget = RefusalBudget(interval=1.0, max_keys=max_keys)
    now, refused, records, reported = 0.0, 0, 0, 0
    for kind, key, step in events:
        now += step
        if kind == "refuse":
            refused += 1
            suppressed = budget.take(key, now)
            if suppressed is not None:
                records, reported = records + 1, reported + suppressed
        else:
            for _, count in budget.due(now):
                assert count > 0
                reported += count
    for _, count in budget.due(now, every=True):  # at shutdown
        reported += count
    assert records + reported == refused
    assert budget.due(now + 10.0) == []  # nothing reported twice
    assert budget.take("a", now + 10.0) == 0  # and the budget still works after


def test_a_flush_leaves_a_working_budget() -> None:
    """Reporting every count (as at shutdown, or a test's flush) must not leave a key's
    last record in the future, where every later refusal would be counted and none
    written."""
    budget = RefusalBudget(interval=1.0)
    assert budget.take("a", 0.0) == 0
    assert budget.take("a", 0.5) is None
    assert budget.due(0.6, every=True) == [("a", 1)]
    assert budget.take("a", 1.7) == 0


async def test_a_stopped_flood_is_reported_by_the_sweep_without_a_further_refusal() -> None:
    sink = CaptureSink()
    flood = FloodLimit(make_pdp(sink=sink), "postgres", interval=0.2)
    flood.start()
    try:
        assert flood.take("192.0.2.7") == 0  # written by its proxy
        assert flood.take("192.0.2.7") is None
        assert flood.take("192.0.2.7") is None
        for _ in range(200):
            await flood.refusals.drain()
            if sink.records:
                break
            await asyncio.sleep(0.01)
        [summary] = sink.records
    finally:
        await flood.stop()
    details = summary.action.details
    assert (details["client"], details["suppressed_since_last"], details["summary"]) == (
        "192.0.2.7",
        2,
        True,
    )
    assert summary.action.agent.id == "anonymous"
    assert refusals_counted(sink.records) == 2
    assert len(sink.records) == 1, "stopping writes nothing more when nothing is pending"
