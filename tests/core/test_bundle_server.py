"""Policy bundles from an HTTP bundle server (OPA's tar.gz format, ETag polling): a new
bundle serves once it compiles; garbage, unsafe archives and broken policies are refused
and the serving policy stays."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from interlock.core.bundle import bundled_policy_dir
from interlock.core.bundle_server import BundlePoller, unpack
from interlock.core.policy import PolicyManager
from interlock.errors import BundleError
from interlock.testing import serve_app

pytestmark = pytest.mark.integration


def archive(files: dict[str, bytes], kind: bytes = tarfile.REGTYPE) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname, info.size = "/etc/passwd", 0
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return gzip.compress(out.getvalue())


def bundled(rate: int | None = None) -> dict[str, bytes]:
    root = bundled_policy_dir()
    files = {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.suffix in (".rego", ".json") and p.is_file()
    }
    if rate is not None:
        data = json.loads(files["data.json"])
        data["interlock"]["risk"]["rate_per_minute"] = rate
        files["data.json"] = json.dumps(data).encode()
    files[".manifest"] = b'{"revision": "test"}'
    return files


@dataclass
class Server:
    url: str = ""
    body: bytes = b""
    status: int = 200
    seen: list[str | None] = field(default_factory=list)
    """If-None-Match of each request."""


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()

    async def bundle(request: web.Request) -> web.Response:
        srv.seen.append(request.headers.get("If-None-Match"))
        etag = '"' + hashlib.sha256(srv.body).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304)
        return web.Response(status=srv.status, body=srv.body, headers={"ETag": etag})

    app = web.Application()
    app.router.add_get("/bundles/interlock.tar.gz", bundle)
    async with serve_app(app) as base:
        srv.url = base + "/bundles/interlock.tar.gz"
        yield srv


@pytest.fixture
def policy() -> PolicyManager:
    manager = PolicyManager()
    manager.load()
    return manager


async def test_a_new_bundle_serves_and_an_unchanged_one_costs_a_304(
    server: Server, policy: PolicyManager, tmp_path: Path
) -> None:
    first = policy.current.version
    server.body = archive(bundled(rate=777))
    poller = BundlePoller(server.url, policy, tmp_path / "bundles", 0.1)
    assert await poller.poll()
    assert policy.current.version != first
    assert policy.current.data["interlock"]["risk"]["rate_per_minute"] == 777
    assert policy.last_error is None
    assert not await poller.poll(), "unchanged"
    assert server.seen[-1] == poller.etag, "asked with If-None-Match"
    server.body = archive(bundled(rate=778))
    assert await poller.poll()
    assert policy.current.data["interlock"]["risk"]["rate_per_minute"] == 778


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"<html>not a bundle</html>", 200, "not gzip"),
        (gzip.compress(b"plain text, not a tar"), 200, "not a tar archive"),
        (archive({"../escape.rego": b"package x"}), 200, "escapes the bundle"),
        (archive({"/abs.rego": b"package x"}), 200, "escapes the bundle"),
        (archive({"run.sh": b"#!/bin/sh"}), 200, "not a policy, data or manifest"),
        (archive({"link.rego": b""}, tarfile.SYMTYPE), 200, "not a regular file"),
        (archive({**bundled(), "broken.rego": b"package interlock\nbroken := {\n"}), 200,
         "broken.rego"),
        (b"", 503, "HTTP 503"),
    ],
)  # fmt: skip
async def test_garbage_is_refused_and_the_old_bundle_keeps_serving(
    server: Server, policy: PolicyManager, tmp_path: Path, body: bytes, status: int, reason: str
) -> None:
    serving = policy.current.version
    server.body, server.status = body, status
    poller = BundlePoller(server.url, policy, tmp_path / "bundles", 0.1)
    assert not await poller.poll()
    assert policy.current.version == serving
    assert policy.last_error is not None
    assert reason in policy.last_error
    assert not any((tmp_path / "bundles").glob("*.partial")), "nothing half-unpacked is left"


async def test_an_unreachable_server_keeps_the_serving_policy(
    policy: PolicyManager, tmp_path: Path
) -> None:
    serving = policy.current.version
    poller = BundlePoller("http://127.0.0.1:9/b.tar.gz", policy, tmp_path / "b", 0.1)
    assert not await poller.poll()
    assert policy.current.version == serving
    assert "bundle server unreachable" in (policy.last_error or "")


def test_a_gzip_bomb_is_refused(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\0" * (40 * 1024 * 1024))
    with pytest.raises(BundleError, match="too large once unpacked"):
        unpack(bomb, tmp_path)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_refused_never_crash(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d, contextlib.suppress(BundleError):
        unpack(data, Path(d))


async def test_interlock_up_follows_the_bundle_server(server: Server, tmp_path: Path) -> None:
    from interlock.config import Config, PolicyConfig
    from interlock.runtime import build, start

    server.body = archive(bundled(rate=779))
    config = Config(
        data_dir=tmp_path / "data",
        policy=PolicyConfig(bundle_url=server.url, bundle_poll_interval=0.2),
    )
    rt = build(config)
    await start(rt)
    try:
        for _ in range(50):
            if rt.policy.current.data["interlock"]["risk"]["rate_per_minute"] == 779:
                break
            await asyncio.sleep(0.1)
        assert rt.policy.current.data["interlock"]["risk"]["rate_per_minute"] == 779
        assert rt.endpoints["bundle server"] == server.url
    finally:
        await rt.stop()
