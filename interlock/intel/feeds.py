"""Indicator feeds from files, reloaded when they change, matched against action targets.

Two formats: a plain list (one domain, IP or CIDR per line; `#` comments), and JSON:
`{"indicators": [{"type": "domain" | "ip" | "cidr", "value": "...", "source": "..."}]}`.
A domain matches itself and its subdomains. A feed that fails to parse is reported (in
`status()` and the log) and the last good version of it keeps serving.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interlock.core.model import Action

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 2.0
NETWORK_PROTOCOLS = frozenset({"http", "mcp", "envoy", "llm"})
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FeedError(ValueError):
    pass


@dataclass
class Indicators:
    domains: dict[str, str] = field(default_factory=dict)
    """domain -> feed/source name."""
    networks: list[tuple[Network, str]] = field(default_factory=list)

    def merge(self, other: Indicators) -> None:
        self.domains.update(other.domains)
        self.networks.extend(other.networks)


def _add(out: Indicators, kind: str, value: str, source: str) -> None:
    value = value.strip().lower().rstrip(".")
    if not value:
        return
    if kind in ("ip", "cidr") or (kind == "auto" and (value[0].isdigit() or ":" in value)):
        try:
            out.networks.append((ipaddress.ip_network(value, strict=False), source))
        except ValueError as exc:
            raise FeedError(f"bad address {value!r}") from exc
        return
    if kind not in ("domain", "auto") or " " in value or "/" in value:
        raise FeedError(f"bad indicator {value!r} (type {kind})")
    out.domains[value] = source


def parse(text: str, name: str) -> Indicators:
    out = Indicators()
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            doc: Any = json.loads(text)
        except ValueError as exc:
            raise FeedError(f"invalid JSON: {exc}") from exc
        items = doc.get("indicators") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise FeedError('JSON feeds need an "indicators" list')
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("value"), str):
                raise FeedError(f"indicator {i} needs a string value")
            kind = str(item.get("type", "auto"))
            _add(out, kind, item["value"], str(item.get("source", name)))
        return out
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            _add(out, "auto", line, name)
        except FeedError as exc:
            raise FeedError(f"line {n}: {exc}") from exc
    return out


class ThreatIntel:
    """Feeds from files; `match(action)` names the indicators an action hits."""

    def __init__(self, paths: Iterable[Path], clock: Any = time.monotonic) -> None:
        self.paths = list(paths)
        self.clock = clock
        self._feeds: dict[Path, Indicators] = {}
        self._mtimes: dict[Path, float] = {}
        self.errors: dict[str, str] = {}
        self._merged = Indicators()
        self._checked = -1e18
        self.reload()

    def reload(self) -> None:
        """Re-read feeds whose file changed; keep the last good one of a broken feed."""
        changed = False
        for path in self.paths:
            try:
                mtime = path.stat().st_mtime
            except OSError as exc:
                self.errors[str(path)] = f"cannot read: {exc}"
                continue
            if self._mtimes.get(path) == mtime:
                continue
            self._mtimes[path] = mtime
            try:
                self._feeds[path] = parse(path.read_text("utf-8"), path.name)
                self.errors.pop(str(path), None)
                changed = True
            except (FeedError, OSError, UnicodeDecodeError) as exc:
                self.errors[str(path)] = str(exc)
                log.error("threat feed %s not loaded (previous version kept): %s", path, exc)
        if changed:
            merged = Indicators()
            for feed in self._feeds.values():
                merged.merge(feed)
            self._merged = merged
        self._checked = self.clock()

    def _fresh(self) -> Indicators:
        if self.clock() - self._checked >= CHECK_INTERVAL_S:
            self.reload()
        return self._merged

    def match_host(self, host: str) -> list[str]:
        ind = self._fresh()
        h = host.strip().lower().rstrip(".").strip("[]")
        found = []
        try:
            ip = ipaddress.ip_address(h)
        except ValueError:
            ip = None
        if ip is not None:
            for net, source in ind.networks:
                if ip.version == net.version and ip in net:
                    found.append(f"{source}: {net}")
            return found
        parts = h.split(".")
        for i in range(len(parts)):
            suffix = ".".join(parts[i:])
            if suffix in ind.domains:
                found.append(f"{ind.domains[suffix]}: {suffix}")
        return found

    def match(self, action: Action) -> tuple[str, ...]:
        """Indicators hit by the action's destination, for actions that have one (HTTP,
        MCP, mesh and LLM traffic, egress and forwards): the target, `details.host` or
        `details.mcp_server`."""
        if action.protocol not in NETWORK_PROTOCOLS and action.operation.value not in (
            "egress",
            "forward",
            "connect",
        ):
            return ()
        hosts = {
            str(action.details.get("host", "")),
            str(action.details.get("mcp_server", "")),
            str(action.details.get("llm_host", "")),
            "" if action.protocol in ("mcp", "llm") else _host_of(action.target),
        } - {""}
        out: list[str] = []
        for host in sorted(hosts):
            out.extend(self.match_host(host))
        return tuple(out)

    def status(self) -> dict[str, Any]:
        return {
            "feeds": [str(p) for p in self.paths],
            "domains": len(self._merged.domains),
            "networks": len(self._merged.networks),
            "errors": dict(self.errors),
        }


def _host_of(target: str) -> str:
    """`host`, `host:port` or `[v6]:port` -> host; other targets (tables, paths) pass."""
    if target.startswith("["):
        return target[1:].split("]", 1)[0]
    if target.count(":") == 1:
        return target.split(":", 1)[0]
    if "/" in target:
        return ""
    return target
