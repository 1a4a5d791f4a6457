"""The RFC 9162 Merkle tree: hashing, proofs and their verification. Pure, no storage.

An auditor can run this module alone: `verify_inclusion` and `verify_consistency` follow
the RFC's verification algorithms (sections 2.1.3.2 and 2.1.4.2) step by step.

Storage keeps *perfect* subtrees: node (level, index) is the hash of leaves
[index * 2**level, (index + 1) * 2**level). Every subtree the RFC's recursive definitions
ask for is either perfect (read it) or splits at the largest power of two into a perfect
left part and a smaller right part, so proofs need O(log n) stored nodes, and `plan_*`
names them up front so a store can fetch them in one round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Buffer, Iterable, Mapping, Sequence

NodeKey = tuple[int, int]
"""(level, index) of a perfect subtree."""
Range = tuple[int, int]
"""[start, end) of leaves."""

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


class ProofError(ValueError):
    """A proof or tree parameter is malformed."""


class MissingNode(ProofError):
    """A damaged store lacks a subtree hash a proof needs (deleted records or nodes)."""

    def __init__(self, key: NodeKey) -> None:
        level, idx = key
        self.key = key
        self.leaves: Range = (idx << level, (idx + 1) << level)
        super().__init__(
            f"tree node covering records {self.leaves[0]}..{self.leaves[1] - 1} is missing"
        )


def leaf_hash(data: Buffer) -> bytes:
    """MTH of one entry: SHA-256(0x00 || data). (From a copy of the prefix's state, so a
    slice of a larger buffer is hashed where it lies.)"""
    h = _LEAF_PREFIX.copy()
    h.update(data)
    return h.digest()


_LEAF_PREFIX = hashlib.sha256(b"\x00")


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2): the RFC's k."""
    return 1 << ((n - 1).bit_length() - 1)


def _perfect(start: int, end: int) -> NodeKey | None:
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        level = n.bit_length() - 1
        return (level, start >> level)
    return None


def range_keys(start: int, end: int) -> list[NodeKey]:
    """The perfect subtrees whose hashes determine MTH(D[start:end])."""
    keys: list[NodeKey] = []
    while True:
        key = _perfect(start, end)
        if key is not None:
            keys.append(key)
            return keys
        k = split(end - start)
        keys.append(_perfect(start, start + k) or _fail("unaligned range"))
        start += k


def _fail(msg: str) -> NodeKey:
    raise ProofError(msg)


def range_hash(start: int, end: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    """MTH(D[start:end]) from stored perfect subtrees."""
    keys = range_keys(start, end)
    acc = _node(nodes, keys[-1])
    for key in reversed(keys[:-1]):
        acc = node_hash(_node(nodes, key), acc)
    return acc


def _node(nodes: Mapping[NodeKey, bytes], key: NodeKey) -> bytes:
    found = nodes.get(key)
    if found is None:
        raise MissingNode(key)
    return found


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1, as leaf ranges, leaf-side first."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is outside a tree of size {size}")
    path: list[Range] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = split(end - start)
        if m < k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start, m = start + k, m - k
    path.reverse()
    return path


def consistency_ranges(first: int, second: int) -> list[Range]:
    """PROOF(m, D[n]) of RFC 9162 2.1.4.1, as leaf ranges, in proof order."""
    if not 0 <= first <= second:
        raise ProofError(f"no consistency proof from size {first} to {second}")
    if first == 0 or first == second:
        return []
    out: list[Range] = []
    start, end, m, complete = 0, second, first, True
    while m != end - start:
        n = end - start
        k = split(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        out.append((start, end))
    out.reverse()
    return out


def plan(ranges: Iterable[Range]) -> set[NodeKey]:
    """Every stored node needed to hash `ranges`."""
    return {key for start, end in ranges for key in range_keys(start, end)}


def frontier_keys(size: int) -> list[NodeKey]:
    """The perfect subtrees on the right edge of a tree of `size`, largest first."""
    return range_keys(0, size) if size else []


def root_from(size: int, nodes: Mapping[NodeKey, bytes]) -> bytes:
    """MTH(D[0:size]) from its frontier nodes."""
    return range_hash(0, size, nodes) if size else EMPTY_ROOT


def extend(
    size: int, frontier: Mapping[int, bytes], leaves: Sequence[bytes], min_level: int = 0
) -> tuple[list[tuple[int, int, bytes]], dict[int, bytes]]:
    """Append leaf hashes to a tree of `size` whose right-edge subtrees are `frontier`
    (level -> hash). Returns the new nodes from `min_level` up (a store passes
    `TILE_LEVEL`: it keeps no others) and the new frontier."""
    front = dict(frontier)
    new: list[tuple[int, int, bytes]] = []
    sha256 = hashlib.sha256
    for leaf in leaves:
        idx, level, cur = size, 0, leaf
        if min_level == 0:
            new.append((0, idx, cur))
        while idx & 1:
            # node_hash, inlined: this loop runs once per record on the append path.
            cur = sha256(b"\x01" + front.pop(level) + cur).digest()
            idx >>= 1
            level += 1
            if level >= min_level:
                new.append((level, idx, cur))
        front[level] = cur
        size += 1
    return new, front


def frontier_from(size: int, nodes: Mapping[NodeKey, bytes]) -> dict[int, bytes]:
    """level -> hash for the right edge of a tree of `size`."""
    return {level: nodes[(level, idx)] for level, idx in frontier_keys(size)}


def _lsb(x: int) -> int:
    return x & 1


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does `proof` show `leaf` at `index` in the tree with `root`?"""
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if _lsb(fn) or fn == sn:
            r = node_hash(p, r)
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree of size `first` a prefix of the one of `second`?"""
    if not 0 <= first <= second or any(len(p) != HASH_SIZE for p in proof):
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while _lsb(fn):
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if _lsb(fn) or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not _lsb(fn):
                while not (_lsb(fn) or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root


TILE_LEVEL = 4
"""Stores keep interior nodes from this level up and compute the levels below from the
leaf hashes kept beside each record (at most 8 leaves per node): one stored node per 16
records instead of one per record, at the cost of one more indexed read per proof."""


def split_keys(keys: Iterable[NodeKey]) -> tuple[list[NodeKey], list[NodeKey]]:
    """(keys a store reads from its node table, keys it computes from leaf hashes)."""
    high: list[NodeKey] = []
    low: list[NodeKey] = []
    for key in keys:
        (high if key[0] >= TILE_LEVEL else low).append(key)
    return high, low


def leaves_needed(keys: Iterable[NodeKey]) -> set[int]:
    """Leaf indices whose hashes determine the given low-level nodes."""
    return {i for level, idx in keys for i in range(idx << level, (idx + 1) << level)}


def from_leaves(keys: Iterable[NodeKey], leaves: Mapping[int, bytes]) -> dict[NodeKey, bytes]:
    """Hash low-level nodes up from leaf hashes; keys whose leaves are missing are left out."""
    out: dict[NodeKey, bytes] = {}
    for level, idx in keys:
        start = idx << level
        row = [leaves.get(i) for i in range(start, start + (1 << level))]
        if any(h is None for h in row):
            continue
        hashes = [h for h in row if h is not None]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        out[(level, idx)] = hashes[0]
    return out
