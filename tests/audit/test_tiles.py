"""The log as tlog-tiles, checked by a client written here from the spec alone (its own
path encoding, note verification and RFC 6962 hashing): the spec's worked examples, a
static export of a real log, and the same resources served by the admin listener."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from interlock.admin.server import Admin, make_app
from interlock.audit.checkpoint import Signer
from interlock.audit.log import AuditLog
from interlock.audit.sqlite import SqliteStore
from interlock.audit.tiles import ENTRIES, WIDTH, Resource, encode_index, parse_path, resources
from interlock.core.policy import PolicyManager
from tests.audit.conftest import audit_cli
from tests.audit.test_log import sample_records
from tests.audit.test_merkle import mth

ORIGIN = "interlock.test/audit"
SIGNER = Signer(ORIGIN, Ed25519PrivateKey.generate())
TOKEN = "admin-token-0123456789abcdef"


def test_the_specs_index_encoding_example() -> None:
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(0) == "000"
    assert parse_path("tile/1/x001/x234/067.p/8") == Resource(1, 1234067, 8)
    for bad in ("tile/1/1234067", "tile/01/000", "tile/1/x000/067", "tile/0/000.p/256"):
        with pytest.raises(ValueError, match=r"bad|canonical"):
            parse_path(bad)


def widths(size: int, level: int) -> list[int]:
    return [r.width for r in resources(size) if r.level == level]


def test_the_specs_tree_shape_examples() -> None:
    """tlog-tiles: 70,000 is 273 full level 0 tiles and one of width 112, one full
    level 1 tile and one of width 17, one level 2 tile of width 1; 256 is one full
    level 0 tile and a level 1 tile of width 1."""
    assert widths(70_000, 0) == [256] * 273 + [112]
    assert widths(70_000, ENTRIES) == [256] * 273 + [112]
    assert widths(70_000, 1) == [256, 17]
    assert widths(70_000, 2) == [1]
    assert widths(70_000, 3) == []
    assert (widths(256, 0), widths(256, 1), widths(256, 2)) == ([256], [1], [])


@given(size=st.integers(0, 300_000))
def test_each_level_holds_floor_size_over_256_to_the_level_hashes(size: int) -> None:
    for level in range(4):
        assert sum(widths(size, level)) == size // WIDTH**level
    for r in resources(size):
        assert parse_path(r.path) == r


# --- a tlog client from the spec ---------------------------------------------------------


def index_path(n: int) -> str:
    digits = f"{n:03d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join(["x" + g for g in groups[:-1]] + groups[-1:])


def open_note(note: str, vkey: str) -> tuple[int, bytes]:
    name, key_hex, key64 = vkey.split("+", 2)
    public = base64.b64decode(key64)[1:]
    text, sigs = note.split("\n\n", 1)
    for line in sigs.splitlines():
        signer, blob = line.removeprefix("\u2014 ").split(" ", 1)
        raw = base64.b64decode(blob)
        if signer == name and raw[:4].hex() == key_hex:
            Ed25519PublicKey.from_public_bytes(public).verify(raw[4:], (text + "\n").encode())
            _, size, root = text.split("\n")
            return int(size), base64.b64decode(root)
    raise AssertionError("no signature by the log's key")


async def mirror(get: Callable[[str], Awaitable[bytes]], vkey: str) -> list[bytes]:
    """Fetch and check everything: every entry hashes into its level 0 tile, every
    level 1 hash is the tree hash of its 256 entries, all of them hash to the root."""
    size, root = open_note((await get("checkpoint")).decode(), vkey)
    entries: list[bytes] = []
    for n in range((size + 255) // 256):
        width = min(256, size - n * 256)
        suffix = "" if width == 256 else f".p/{width}"
        bundle = await get(f"tile/entries/{index_path(n)}{suffix}")
        tile = await get(f"tile/0/{index_path(n)}{suffix}")
        assert len(tile) == 32 * width
        at = 0
        for i in range(width):
            (length,) = struct.unpack(">H", bundle[at : at + 2])
            entry = bundle[at + 2 : at + 2 + length]
            at += 2 + length
            assert hashlib.sha256(b"\x00" + entry).digest() == tile[32 * i : 32 * (i + 1)]
            entries.append(entry)
        assert at == len(bundle)
    full = size // 256
    if full:
        level1 = await get(f"tile/1/000{'' if full == 256 else f'.p/{full}'}")
        for i in range(full):
            assert level1[32 * i : 32 * (i + 1)] == mth(entries[256 * i : 256 * (i + 1)])
    assert mth(entries) == root
    return entries


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[AuditLog]:
    audit = AuditLog(SqliteStore(tmp_path / "audit.db"), SIGNER, ORIGIN, checkpoint_interval=0)
    await audit.start()
    for rec in await sample_records(600):
        await audit.append(rec, durable=False)
    await audit.flush()
    await audit.checkpoint()
    yield audit
    await audit.close()


@pytest.mark.integration
async def test_a_static_export_mirrors_and_verifies(log: AuditLog, tmp_path: Path) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\n[audit]\norigin = "{ORIGIN}"\n')
    key = SIGNER.verifier.encode()
    done = await asyncio.to_thread(
        audit_cli, "tiles", "-c", str(cfg), "--key", key, str(tmp_path / "tiles")
    )
    assert done.returncode == 0, done.stderr
    root = tmp_path / "tiles"

    async def get(path: str) -> bytes:
        return (root / path).read_bytes()

    entries = await mirror(get, key)
    assert len(entries) == 600
    assert sorted(p.name for p in (root / "tile" / "0").iterdir()) == ["000", "001", "002.p"]


@pytest.mark.integration
async def test_the_admin_listener_serves_the_same_tiles(log: AuditLog) -> None:
    runner = web.AppRunner(
        make_app(PolicyManager(), log, Admin(token_digest=hashlib.sha256(TOKEN.encode()).digest()))
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/audit/log/"
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as c:

            async def get(path: str) -> bytes:
                r = await c.get(url + path)
                assert r.status_code == 200, (path, r.text)
                assert r.headers["content-type"].startswith(
                    "text/plain" if path == "checkpoint" else "application/octet-stream"
                )
                return r.content

            assert len(await mirror(get, SIGNER.verifier.encode())) == 600
            assert (await c.get(url + "tile/0/003")).status_code == 404, "not in the tree"
            assert (await c.get(url + "tile/0/002.p/7")).status_code == 404, "no such size"
            assert (await c.get(url + "tile/0/2")).status_code == 400
    finally:
        await runner.cleanup()


GOTLOG = Path(__file__).with_name("gotlog") / "main.go"
GO_DEPS = "/usr/share/gocode"
"""Debian's golang-golang-x-mod-dev: golang.org/x/mod source, built without a network."""


def build_gotlog(out: Path) -> Path:
    """The Go project's transparency-log verifier (tests/audit/gotlog), built here."""
    go = shutil.which("go")
    if go is None or not (Path(GO_DEPS) / "src/golang.org/x/mod/sumdb/tlog").is_dir():
        pytest.fail(
            "the third-party tlog verifier needs Go and golang.org/x/mod: "
            "apt-get install golang-go golang-golang-x-mod-dev (scripts/system-deps does)"
        )
    binary = out / "gotlog"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GO_DEPS, "GOCACHE": str(out / "gocache")}
    subprocess.run([go, "build", "-o", str(binary), str(GOTLOG)], check=True, env=env, timeout=300)
    return binary


@pytest.mark.integration
async def test_the_go_projects_tlog_code_verifies_our_export(log: AuditLog, tmp_path: Path) -> None:
    """golang.org/x/mod's sumdb/note and sumdb/tlog (where the C2SP signed-note and
    tiles formats come from; nothing of interlock's) open our checkpoint under the
    log's key, authenticate every tile against it, recompute the root, match every
    entry to its leaf and check an inclusion proof for each. An edited entry or a
    checkpoint under another key is refused."""
    cfg = tmp_path / "interlock.toml"
    cfg.write_text(f'data_dir = "{tmp_path}"\n[audit]\norigin = "{ORIGIN}"\n')
    key = SIGNER.verifier.encode()
    root = tmp_path / "tiles"
    done = await asyncio.to_thread(audit_cli, "tiles", "-c", str(cfg), "--key", key, str(root))
    assert done.returncode == 0, done.stderr
    gotlog = await asyncio.to_thread(build_gotlog, tmp_path)

    def check(vkey: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(gotlog), vkey, str(root)], capture_output=True, text=True, timeout=120
        )

    ok = await asyncio.to_thread(check, key)
    assert (ok.returncode, ok.stdout) == (0, "ok 600\n"), ok.stderr
    other = Signer(ORIGIN, Ed25519PrivateKey.generate()).verifier.encode()
    refused = await asyncio.to_thread(check, other)
    assert refused.returncode == 1
    assert "checkpoint" in refused.stderr
    bundle = root / "tile" / "entries" / "001"
    data = bytearray(bundle.read_bytes())
    data[100] ^= 1
    bundle.write_bytes(bytes(data))
    edited = await asyncio.to_thread(check, key)
    assert edited.returncode == 1
    assert "does not hash to its leaf" in edited.stderr
