"""The flood limit on refusals anyone can cause: one record per key per interval, the
rest counted into the next one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from interlock.core.refusal import RefusalBudget


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
