"""One suite for every store: SQLite and PostgreSQL behave the same."""

from __future__ import annotations

import asyncio

import pytest

from interlock.audit import merkle
from interlock.audit.store import AuditStore
from tests.audit.conftest import StoreFactory
from tests.audit.test_merkle import mth

pytestmark = pytest.mark.integration


def entries(start: int, n: int) -> list[tuple[str, bytes]]:
    return [(f"d{i}", f'{{"n":{i}}}'.encode()) for i in range(start, start + n)]


async def test_empty_store(store: AuditStore) -> None:
    assert await store.size() == 0
    assert await store.records(0, 10) == []
    assert await store.checkpoints() == []
    assert merkle.root_from(0, await store.nodes(merkle.frontier_keys(0))) == merkle.EMPTY_ROOT


async def test_appends_build_the_rfc_tree(store: AuditStore) -> None:
    data: list[bytes] = []
    for start, n in ((0, 1), (1, 6), (7, 50), (57, 1)):
        batch = entries(start, n)
        assert await store.append(batch) == start
        data += [d for _, d in batch]
        size = await store.size()
        assert size == len(data)
        root = merkle.root_from(size, await store.nodes(merkle.frontier_keys(size)))
        assert root == mth(data)


async def test_records_and_lookup(store: AuditStore) -> None:
    await store.append(entries(0, 20))
    recs = await store.records(5, 8)
    assert [(r.index, r.decision_id, r.data) for r in recs] == [
        (i, f"d{i}", f'{{"n":{i}}}'.encode()) for i in (5, 6, 7)
    ]
    found = await store.find("d13")
    assert found is not None
    assert found.index == 13
    assert await store.find("nope") is None


async def test_checkpoints_are_kept_by_size(store: AuditStore) -> None:
    await store.add_checkpoint(10, "ten\n")
    await store.add_checkpoint(3, "three\n")
    assert await store.checkpoints() == [(3, "three\n"), (10, "ten\n")]


async def test_data_survives_reopening(store_factory: StoreFactory) -> None:
    first = store_factory()
    await first.open()
    await first.append(entries(0, 9))
    await first.close()
    second = store_factory()
    await second.open()
    try:
        assert await second.size() == 9
        await second.append(entries(9, 3))
        nodes = await second.nodes(merkle.frontier_keys(12))
        assert merkle.root_from(12, nodes) == mth([d for _, d in entries(0, 12)])
    finally:
        await second.close()


async def test_two_writers_appending_at_once_share_one_consistent_tree(
    store_factory: StoreFactory,
) -> None:
    """Two instances on the same log: every batch lands whole, nothing is lost, and the
    tree is exactly the RFC tree of the records in their final order."""
    a, b = store_factory(), store_factory()
    await a.open()
    await b.open()
    try:

        async def writer(s: AuditStore, tag: str) -> None:
            for i in range(30):
                await s.append([(f"{tag}{i}-{j}", f"{tag}{i}-{j}".encode()) for j in range(3)])

        await asyncio.gather(writer(a, "a"), writer(b, "b"))
        size = await a.size()
        assert size == 180
        recs = await a.records(0, size)
        assert [r.index for r in recs] == list(range(180))
        ids = [r.decision_id for r in recs]
        assert len(set(ids)) == 180
        for k in range(0, 180, 3):
            tags = {ids[k + j].split("-")[0] for j in range(3)}
            assert len(tags) == 1, "each batch is contiguous"
        root = merkle.root_from(size, await b.nodes(merkle.frontier_keys(size)))
        assert root == mth([r.data for r in recs])
    finally:
        await a.close()
        await b.close()
