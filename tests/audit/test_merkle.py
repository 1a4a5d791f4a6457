"""The Merkle tree against a naive transcription of RFC 9162's definitions."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interlock.audit import merkle as m

# --- naive reference: the RFC's recursive definitions, over the list of entries --------


def mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(mi: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if mi < k:
        return [*path(mi, d[:k]), mth(d[k:])]
    return [*path(mi - k, d[k:]), mth(d[:k])]


def subproof(mi: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if mi == n:
        return [] if b else [mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if mi <= k:
        return [*subproof(mi, d[:k], b), mth(d[k:])]
    return [*subproof(mi - k, d[k:], False), mth(d[:k])]


def entries(n: int) -> list[bytes]:
    return [f"entry {i}".encode() for i in range(n)]


class Tree:
    """A tree built through `extend`, the way the stores build theirs."""

    def __init__(self, data: list[bytes]) -> None:
        self.nodes: dict[m.NodeKey, bytes] = {}
        new, _ = m.extend(0, {}, [m.leaf_hash(x) for x in data])
        for level, idx, h in new:
            self.nodes[(level, idx)] = h
        self.size = len(data)

    def root(self, size: int) -> bytes:
        return m.root_from(size, self.nodes)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        return [m.range_hash(s, e, self.nodes) for s, e in m.inclusion_ranges(index, size)]

    def consistency(self, first: int, second: int) -> list[bytes]:
        return [m.range_hash(s, e, self.nodes) for s, e in m.consistency_ranges(first, second)]


BIG = Tree(entries(140))


@pytest.mark.parametrize("n", range(0, 70))
def test_roots_match_the_definition_for_every_prefix(n: int) -> None:
    assert BIG.root(n) == mth(entries(n))


def test_incremental_extend_equals_one_shot() -> None:
    data = entries(77)
    nodes: dict[m.NodeKey, bytes] = {}
    size, front = 0, {}
    for chunk in (data[:1], data[1:5], data[5:40], data[40:]):
        new, front = m.extend(size, front, [m.leaf_hash(x) for x in chunk])
        nodes.update({(lv, i): h for lv, i, h in new})
        size += len(chunk)
        assert m.frontier_from(size, nodes) == front
        assert m.root_from(size, nodes) == mth(data[:size])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 140).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1))))
def test_inclusion_proofs_match_the_definition_and_verify(case: tuple[int, int]) -> None:
    n, i = case
    d = entries(n)
    proof = BIG.inclusion(i, n)
    assert proof == path(i, d)
    assert m.verify_inclusion(i, n, m.leaf_hash(d[i]), proof, mth(d))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 140).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))))
def test_consistency_proofs_match_the_definition_and_verify(case: tuple[int, int]) -> None:
    first, second = case
    d = entries(second)
    proof = BIG.consistency(first, second)
    assert proof == (subproof(first, d, True) if first < second else [])
    assert m.verify_consistency(first, second, mth(d[:first]), mth(d), proof)


def flip(b: bytes, bit: int = 0) -> bytes:
    return bytes([b[0] ^ (1 << bit)]) + b[1:]


def inclusion_mutations(i: int, n: int, proof: list[bytes]) -> list[tuple[str, Any]]:
    leaf, root = m.leaf_hash(entries(n)[i]), BIG.root(n)
    muts: list[tuple[str, Any]] = [
        ("wrong root", (i, n, leaf, proof, flip(root))),
        ("wrong leaf", (i, n, flip(leaf), proof, root)),
        ("wrong index", (i + 1, n, leaf, proof, root)),
        # A size whose tree has another shape. (n + 1 can share the shape: the RFC
        # algorithm binds index and root, and a signed checkpoint binds root to size.)
        ("wrong size", (i, 2 * n, leaf, proof, root)),
        ("extra node", (i, n, leaf, [*proof, root], root)),
        ("short node", (i, n, leaf, [p[:31] for p in proof], root)),
    ]
    if i > 0:
        muts.append(("index minus one", (i - 1, n, leaf, proof, root)))
    for j in range(len(proof)):
        muts.append(
            (
                f"bit flip {j}",
                (i, n, leaf, [*proof[:j], flip(proof[j], j % 8), *proof[j + 1 :]], root),
            )
        )
        muts.append((f"missing {j}", (i, n, leaf, proof[:j] + proof[j + 1 :], root)))
    if len(proof) > 1:
        muts.append(("swapped", (i, n, leaf, [proof[1], proof[0], *proof[2:]], root)))
    return muts


@pytest.mark.parametrize(
    ("i", "n"), [(0, 2), (3, 7), (5, 8), (12, 13), (63, 64), (64, 65), (100, 140), (0, 140)]
)
def test_every_mutated_inclusion_proof_is_rejected(i: int, n: int) -> None:
    proof = BIG.inclusion(i, n)
    for name, args in inclusion_mutations(i, n, proof):
        assert not m.verify_inclusion(*args), name


@pytest.mark.parametrize(
    ("a", "b"), [(1, 2), (3, 7), (4, 8), (6, 13), (64, 140), (77, 140), (1, 140), (139, 140)]
)
def test_every_mutated_consistency_proof_is_rejected(a: int, b: int) -> None:
    proof = BIG.consistency(a, b)
    r1, r2 = BIG.root(a), BIG.root(b)
    assert m.verify_consistency(a, b, r1, r2, proof)
    muts: list[tuple[str, Any]] = [
        ("wrong first root", (a, b, flip(r1), r2, proof)),
        ("wrong second root", (a, b, r1, flip(r2), proof)),
        ("wrong first size", (a + 1, b, r1, r2, proof)),
        ("wrong second size", (a, 2 * b, r1, r2, proof)),
        ("extra node", (a, b, r1, r2, [*proof, r1])),
        ("empty", (a, b, r1, r2, [])),
    ]
    for j in range(len(proof)):
        muts.append((f"flip {j}", (a, b, r1, r2, [*proof[:j], flip(proof[j]), *proof[j + 1 :]])))
        muts.append((f"missing {j}", (a, b, r1, r2, proof[:j] + proof[j + 1 :])))
    for name, args in muts:
        assert not m.verify_consistency(*args), name


def test_degenerate_parameters() -> None:
    assert not m.verify_inclusion(0, 0, b"\0" * 32, [], b"\0" * 32)
    assert not m.verify_inclusion(-1, 3, b"\0" * 32, [], b"\0" * 32)
    assert m.verify_consistency(0, 5, m.EMPTY_ROOT, BIG.root(5), [])
    assert m.verify_consistency(5, 5, BIG.root(5), BIG.root(5), [])
    assert not m.verify_consistency(5, 5, BIG.root(5), BIG.root(6), [])
    assert not m.verify_consistency(6, 5, BIG.root(6), BIG.root(5), [])
    with pytest.raises(m.ProofError):
        m.inclusion_ranges(5, 5)
    with pytest.raises(m.ProofError):
        m.consistency_ranges(6, 5)


def test_proof_plans_name_few_nodes() -> None:
    n = 1_000_000
    keys = m.plan(m.inclusion_ranges(123_457, n))
    assert len(keys) <= 2 * 20
    keys = m.plan(m.consistency_ranges(400_001, n))
    assert len(keys) <= 2 * 20


def test_extend_from_a_level_returns_exactly_those_nodes_and_the_same_frontier() -> None:
    """Stores ask only for the nodes they keep; the tree they build must not change."""
    data = entries(300)
    size: int = 0
    every: dict[int, bytes] = {}
    tiled: dict[int, bytes] = {}
    for chunk in (data[:3], data[3:17], data[17:200], data[200:]):
        leaves = [m.leaf_hash(x) for x in chunk]
        all_new, every = m.extend(size, every, leaves)
        high_new, tiled = m.extend(size, tiled, leaves, m.TILE_LEVEL)
        assert high_new == [n for n in all_new if n[0] >= m.TILE_LEVEL]
        assert tiled == every
        size += len(chunk)
