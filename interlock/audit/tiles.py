"""The log as tlog-tiles (c2sp.org/tlog-tiles): a checkpoint, hash tiles and entry bundles.

Any tlog client can mirror and verify the log from these static resources: `<prefix>/
checkpoint` (the latest signed note), `<prefix>/tile/<L>/<N>[.p/<W>]` (256 consecutive
Merkle tree hashes at tree level 8*L, the rightmost ones partial) and
`<prefix>/tile/entries/<N>[.p/<W>]` (the records themselves, each prefixed by its length
as a big-endian uint16; the records hash to the level 0 tile). `resources` lists what a
tree of a given size consists of; `tile` and `bundle` read one from the store;
`write_static` writes them all (for every checkpoint's size) as files any web server or
bucket can serve, and `admin.server` serves the same read-only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from interlock.audit.checkpoint import CheckpointError, Verifier, open_checkpoint
from interlock.audit.store import AuditStore
from interlock.errors import AuditError

WIDTH = 256
"""Hashes in a full tile, entries in a full bundle (tlog-tiles)."""
MAX_ENTRY = 0xFFFF
"""An entry bundle prefixes each entry with a uint16 length."""
ENTRIES = -1
"""The `level` of entry bundles in `Resource`."""


@dataclass(frozen=True, slots=True)
class Resource:
    level: int
    """Tile level (tree level 8 * level), or `ENTRIES` for an entry bundle."""
    index: int
    width: int
    """256 for a full tile, 1..255 for a partial one."""

    @property
    def path(self) -> str:
        where = "entries" if self.level == ENTRIES else str(self.level)
        suffix = "" if self.width == WIDTH else f".p/{self.width}"
        return f"tile/{where}/{encode_index(self.index)}{suffix}"


def encode_index(n: int) -> str:
    """`<N>` as zero-padded 3-digit elements, all but the last prefixed `x`:
    1234067 -> x001/x234/067."""
    if n < 0:
        raise ValueError("a tile index is not negative")
    parts = []
    while True:
        parts.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    return "/".join([f"x{p}" for p in reversed(parts[1:])] + [parts[0]])


def parse_path(path: str) -> Resource:
    """The resource a `tile/...` path names; ValueError if it is not a valid one."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise ValueError("not a tile path")
    width = WIDTH
    if len(parts) >= 4 and parts[-2].endswith(".p"):
        w = parts[-1]
        if not w.isdigit() or w.startswith("0") or not 1 <= int(w) < WIDTH:
            raise ValueError("bad partial width")
        width = int(w)
        parts = [*parts[:-2], parts[-2][:-2]]
    kind, *elements = parts[1:]
    if kind == "entries":
        level = ENTRIES
    elif kind.isdigit() and (kind == "0" or not kind.startswith("0")) and int(kind) < 64:
        level = int(kind)
    else:
        raise ValueError("bad tile level")
    digits = [e[1:] for e in elements[:-1] if e.startswith("x")] + elements[-1:]
    if len(digits) != len(elements) or not all(len(d) == 3 and d.isdigit() for d in digits):
        raise ValueError("bad tile index")
    index = int("".join(digits))
    if encode_index(index) != "/".join(elements):
        raise ValueError("tile index not in canonical form")
    return Resource(level, index, width)


def resources(size: int) -> Iterator[Resource]:
    """Every tile and entry bundle a tree of `size` consists of (tlog-tiles: level l has
    floor(size / 256**l) hashes; empty tiles do not exist)."""
    count = size
    level = 0
    while count > 0:
        for n in range(count // WIDTH):
            yield Resource(level, n, WIDTH)
            if level == 0:
                yield Resource(ENTRIES, n, WIDTH)
        if count % WIDTH:
            yield Resource(level, count // WIDTH, count % WIDTH)
            if level == 0:
                yield Resource(ENTRIES, count // WIDTH, count % WIDTH)
        count //= WIDTH
        level += 1


def part_of(r: Resource, size: int) -> bool:
    """Whether a tree of `size` has the tile or bundle `r`."""
    count: int = size >> (8 * max(r.level, 0))
    if r.width == WIDTH:
        return (r.index + 1) * WIDTH <= count
    return r.index == count // WIDTH and r.width == count % WIDTH


async def read(store: AuditStore, r: Resource) -> bytes:
    """The bytes of one tile or entry bundle; AuditError if the store lacks what it needs."""
    first = r.index * WIDTH
    if r.level == ENTRIES:
        records = await store.records(first, first + r.width)
        if [x.index for x in records] != list(range(first, first + r.width)):
            raise AuditError(f"{r.path}: records missing from the store")
        out = bytearray()
        for x in records:
            if len(x.data) > MAX_ENTRY:
                raise AuditError(f"{r.path}: record {x.index} is over {MAX_ENTRY} bytes")
            out += struct.pack(">H", len(x.data)) + x.data
        return bytes(out)
    keys = [(8 * r.level, first + i) for i in range(r.width)]
    nodes = await store.nodes(keys)
    if len(nodes) != len(keys):
        raise AuditError(f"{r.path}: tree nodes missing from the store")
    return b"".join(nodes[k] for k in keys)


@dataclass
class Written:
    files: int = 0
    size: int = 0


async def write_static(store: AuditStore, verifier: Verifier, target: Path) -> Written:
    """The checkpoint and every tile and bundle, for every checkpoint's size, as files
    (each full tile once, and the partial ones each checkpoint's size needs, as tlog-tiles
    requires). A CLI command, not on a serving loop: plain blocking writes are fine."""
    notes = await store.checkpoints()
    if not notes:
        raise AuditError("no checkpoint yet: run `interlock audit checkpoint` first")
    size, note = notes[-1]
    try:
        open_checkpoint(note, verifier)
    except CheckpointError as exc:
        raise AuditError(f"the latest checkpoint does not verify: {exc}") from None
    out = Written(size=size)
    done: set[Resource] = set()
    for s, _ in notes:
        for r in resources(s):
            if r in done:
                continue
            done.add(r)
            path = target / r.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(await read(store, r))
            out.files += 1
    (target / "checkpoint").write_text(note, "utf-8")
    return out
