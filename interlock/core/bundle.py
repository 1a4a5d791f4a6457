"""Reading a policy bundle from disk: its Rego modules, its data and its content version.

A bundle is a directory of `.rego` files and `data.json` files (OPA's layout: a `data.json`
in `a/b/` is mounted at `data.a.b`). Its version is the SHA-256 of every file's path and
contents, so two bundles with the same text have the same version on every machine, and
the version in an audit record names exactly the policy that decided.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interlock.errors import BundleError

MAX_BUNDLE_BYTES = 16 * 1024 * 1024
"""A policy is text a person wrote; anything larger is a mistake or an attack on the loader."""

TEST_SUFFIX = "_test.rego"


@dataclass(frozen=True, slots=True)
class BundleSource:
    """The text of a bundle as read, before any engine compiles it."""

    root: Path
    modules: Mapping[str, str]
    """Policy modules by path relative to the root (tests excluded)."""
    tests: Mapping[str, str]
    """`*_test.rego` modules, compiled only by `interlock policy test`."""
    data: Mapping[str, Any]
    version: str


def bundled_policy_dir() -> Path:
    """The default bundle shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "policies"


def _files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise BundleError(f"policy bundle {root} is not a directory")
    found = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and (p.suffix == ".rego" or p.name == "data.json")
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """A cheap stat-based summary that changes whenever a bundle file changes."""
    try:
        return tuple(
            (p.relative_to(root).as_posix(), p.stat().st_mtime_ns, p.stat().st_size)
            for p in _files(root)
        )
    except (OSError, BundleError):
        return ()


def _mount(data: dict[str, Any], prefix: tuple[str, ...], doc: Any, where: str) -> None:
    if not isinstance(doc, dict):
        raise BundleError(f"{where}: a data.json must hold a JSON object")
    node = data
    for part in prefix:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise BundleError(f"{where}: data path {'.'.join(prefix)} collides with a value")
        node = child
    for key, value in doc.items():
        if key in node:
            raise BundleError(f"{where}: data key {'.'.join((*prefix, key))} defined twice")
        node[key] = value


def load_bundle(root: Path | str) -> BundleSource:
    """Read every module and data document under `root`; raise BundleError if unusable."""
    root = Path(root)
    digest = hashlib.sha256()
    modules: dict[str, str] = {}
    tests: dict[str, str] = {}
    data: dict[str, Any] = {}
    total = 0
    for path in _files(root):
        rel = path.relative_to(root).as_posix()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise BundleError(f"{rel}: cannot read: {exc.strerror}") from exc
        total += len(raw)
        if total > MAX_BUNDLE_BYTES:
            raise BundleError(f"bundle {root} is larger than {MAX_BUNDLE_BYTES} bytes")
        digest.update(rel.encode() + b"\0" + str(len(raw)).encode() + b"\0" + raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BundleError(f"{rel}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        if path.name == "data.json":
            try:
                doc = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BundleError(f"{rel}:{exc.lineno}:{exc.colno}: {exc.msg}") from exc
            _mount(data, path.relative_to(root).parent.parts, doc, rel)
        elif rel.endswith(TEST_SUFFIX):
            tests[rel] = text
        else:
            modules[rel] = text
    if not modules:
        raise BundleError(f"bundle {root} has no .rego policy modules")
    return BundleSource(root, modules, tests, data, digest.hexdigest())
