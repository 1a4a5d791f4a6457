"""Policy bundles pulled from an HTTP bundle server, as OPA pulls them.

A bundle is a gzipped tar of `.rego` files and `data.json` documents (OPA's bundle
format; a `.manifest` is allowed and ignored). The server is polled with `If-None-Match`
and the last ETag, so an unchanged bundle costs a 304. A new one is unpacked into
`<data_dir>/bundles/<sha256>/` and compiled; only if it compiles does it replace the
policy serving decisions. Anything else (unreachable server, HTTP error, not a gzip,
unsafe paths, oversized, a bundle that does not compile) is refused with the reason in
the log and `/healthz`'s `policy_error`, and the serving policy stays.

Unpacking is defensive: regular files only (no links, devices or directories from the
archive), relative paths without `..`, only `.rego`, `data.json` and `.manifest`, and
at most `MAX_BUNDLE_BYTES` in all.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

import aiohttp

from interlock.core.bundle import MAX_BUNDLE_BYTES
from interlock.core.policy import PolicyManager
from interlock.errors import BundleError

log = logging.getLogger(__name__)
KEPT = 3
"""Unpacked bundles kept on disk (the serving one and a couple before it)."""


def unpack(archive: bytes, into: Path) -> None:
    """Unpack an OPA bundle into the empty directory `into`; BundleError if unsafe."""
    if len(archive) > MAX_BUNDLE_BYTES:
        raise BundleError("bundle archive is too large")
    # Bounded: a small archive must not unpack into gigabytes (a gzip bomb).
    inflate = zlib.decompressobj(wbits=31)
    try:
        raw = inflate.decompress(archive, MAX_BUNDLE_BYTES * 2 + 1)
    except zlib.error as exc:
        raise BundleError(f"bundle is not gzip: {exc}") from None
    if len(raw) > MAX_BUNDLE_BYTES * 2 or inflate.unconsumed_tail:
        raise BundleError("bundle is too large once unpacked")
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            _extract(tar, into)
    except tarfile.TarError as exc:
        raise BundleError(f"bundle is not a tar archive: {exc}") from None


def _extract(tar: tarfile.TarFile, into: Path) -> None:
    wrote = 0
    for m in tar.getmembers():
        name = PurePosixPath(m.name)
        if m.isdir():
            continue
        if not m.isfile():
            raise BundleError(f"bundle entry {m.name!r} is not a regular file")
        if name.is_absolute() or ".." in name.parts or not name.parts:
            raise BundleError(f"bundle entry {m.name!r} escapes the bundle")
        if not (name.suffix == ".rego" or name.name in ("data.json", ".manifest")):
            raise BundleError(f"bundle entry {m.name!r} is not a policy, data or manifest file")
        if name.name == ".manifest":
            continue
        handle = tar.extractfile(m)
        assert handle is not None
        data = handle.read(MAX_BUNDLE_BYTES + 1)
        wrote += len(data)
        if wrote > MAX_BUNDLE_BYTES:
            raise BundleError("bundle is too large once unpacked")
        target = into.joinpath(*name.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


class BundlePoller:
    def __init__(
        self,
        url: str,
        policy: PolicyManager,
        directory: Path,
        interval: float,
        token: str | None = None,
    ) -> None:
        self.url = url
        self.policy = policy
        self.directory = directory
        self.interval = interval
        self.token = token
        self.etag: str | None = None
        self.requests = 0
        self.unreachable: str | None = None
        """Why the last poll got no answer from the server (None: it answered)."""

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await self.poll()
            await asyncio.sleep(self.interval)

    async def poll(self) -> bool:
        """One request; True when a new bundle now serves."""
        self.requests += 1
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            timeout = aiohttp.ClientTimeout(total=30)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.url, headers=headers) as resp,
            ):
                self.unreachable = None
                if resp.status == 304:
                    return False
                if resp.status != 200:
                    raise BundleError(f"bundle server answered HTTP {resp.status}")
                archive = await resp.content.read(MAX_BUNDLE_BYTES + 1)
                etag = resp.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.unreachable = f"bundle server unreachable: {exc or type(exc).__name__}"
            self._refused(self.unreachable)
            return False
        except BundleError as exc:
            self._refused(str(exc))
            return False
        try:
            path = await asyncio.to_thread(self._unpack, archive)
            await asyncio.to_thread(self.policy.load_from, path)
        except BundleError as exc:
            self._refused(f"bundle from {self.url}: {exc}")
            self.etag = etag  # the same broken bundle is not fetched again
            return False
        self.etag = etag
        log.warning(
            "bundle from %s serving, version %s", self.url, self.policy.current.version[:12]
        )
        return True

    def _refused(self, reason: str) -> None:
        self.policy.last_error = reason
        log.error("%s; the serving policy stays", reason)

    def _unpack(self, archive: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.directory / hashlib.sha256(archive).hexdigest()[:32]
        if not target.exists():
            partial = target.with_suffix(".partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            try:
                unpack(archive, partial)
            except BundleError:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            partial.rename(target)
        old = sorted(
            (p for p in self.directory.iterdir() if p.is_dir() and p != target),
            key=lambda p: p.stat().st_mtime,
        )
        for stale in old[:-KEPT]:
            shutil.rmtree(stale, ignore_errors=True)
        return target
