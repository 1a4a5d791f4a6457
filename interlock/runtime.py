"""`interlock up`: wire what the config enables around one PDP on one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from interlock.admin import readiness as ready
from interlock.admin.server import Admin, make_app
from interlock.approvals.holds import Holds
from interlock.approvals.web import WebApprovals
from interlock.audit.factory import log_for
from interlock.audit.log import AuditLog
from interlock.config import AgentConfig, Config
from interlock.core import heap
from interlock.core.context import MemoryStore, Posture, StateStore
from interlock.core.engines import fallback_note, make_engine
from interlock.core.model import Tier
from interlock.core.pdp import PDP
from interlock.core.policy import DECISION_ENTRYPOINT, PolicyManager
from interlock.credentials.broker import Broker
from interlock.errors import BundleError, ConfigError, InterlockError
from interlock.identity.jwt import JwtVerifier
from interlock.identity.registry import AgentRegistry
from interlock.intel.feeds import ThreatIntel

if TYPE_CHECKING:
    from interlock.proxies.postgres.workers import Slot, Workers

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything `up` started, so tests and shutdown can reach it."""

    config: Config
    policy: PolicyManager
    pdp: PDP
    registry: AgentRegistry
    audit: AuditLog
    holds: Holds = field(default_factory=Holds)
    credentials: Broker | None = None
    jwt: JwtVerifier | None = None
    intel: ThreatIntel | None = None
    reread: Callable[[], Config] | None = None
    """Reads the config file `up` started from again (SIGHUP, for the agents)."""
    agent_users: list[Callable[[Mapping[str, AgentConfig]], Callable[[], None]]] = field(
        default_factory=list
    )
    """Proxies that keep their own view of the agents (Postgres verifiers, SSH keys): each
    prepares the new agents (may raise) and returns how to apply them."""
    sessions: dict[str, Callable[[], int]] = field(default_factory=dict)
    """Open client sessions per proxy, for metrics."""
    endpoints: dict[str, str] = field(default_factory=dict)
    listeners: list[tuple[str, int]] = field(default_factory=list)
    """interlock's own listeners agents must not reach through the HTTP proxy, whatever
    `allow_networks` opens (the admin API and the approvals page)."""
    source: Path | None = None
    """The config file `up` read (None: embedded defaults), for the banner's commands."""
    readiness: ready.Readiness = field(default_factory=ready.Readiness)
    """/readyz: set listening once every listener is bound; a probe per dependency."""
    own_dir: Path | None = None
    """This process's own files (`build`); None: the data directory."""
    slot: Slot | None = None
    """Set in a Postgres worker process other than the first (`[postgres] workers`)."""
    workers: Workers | None = None
    """In the first process, when `[postgres] workers` > 1: the other workers."""
    _runners: list[web.AppRunner] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stoppers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def stop(self) -> None:
        """Stop accepting, then flush the audit log and write its final checkpoint."""
        for stop in self._stoppers:
            await stop()
        for runner in self._runners:
            await runner.cleanup()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.audit.close()
        if hasattr(self.pdp.store, "close"):
            await self.pdp.store.close()


def build(config: Config, own_dir: Path | None = None) -> Runtime:
    """Load the policy and build the PDP; raises BundleError or ConfigError. `own_dir`:
    where this process keeps files no other may share (the credential lease journal,
    downloaded bundles); default the data directory, a Postgres worker has its own."""
    store: StateStore
    if config.state.store == "memory":
        store = MemoryStore()
    else:
        from interlock.core.redis_store import RedisStore

        store = RedisStore(config.state.store)
    entrypoints = [DECISION_ENTRYPOINT]
    if config.extauthz is not None and config.extauthz.mode == "opa-envoy":
        entrypoints.append(config.extauthz.decision_path)
    engine = make_engine(config.policy.engine, timeout_ms=config.policy.timeout_ms)
    policy = PolicyManager(config.policy.bundle, engine=engine, entrypoints=entrypoints)
    policy.load()
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    audit = log_for(config)
    fail_open = config.audit.fail_open_max_tier
    intel = ThreatIntel(config.intel.feeds) if config.intel.feeds else None
    pdp = PDP(
        policy,
        store,
        audit,
        audit_fail_open_max_tier=None if fail_open == "none" else Tier(fail_open),
        intel=intel,
        cache_size=config.policy.cache_size,
        modes=config.modes(),
    )
    registry = AgentRegistry.from_config(config.agents)
    jwt = JwtVerifier(config.identity.jwt, registry) if config.identity.jwt else None
    ap = config.approvals
    holds = Holds(ap.owner_only, ap.approvers, grant_ttl=ap.grant_ttl, grant_uses=ap.grant_uses)
    holds.pdp = pdp
    credentials = None
    if config.credentials is not None:
        credentials = Broker(config.credentials, own_dir or config.data_dir)
    if config.ssh is not None:
        signed = config.credentials is not None and config.credentials.ssh is not None
        for name, target in config.ssh.targets.items():
            if target.key is None and not signed:
                raise ConfigError(f"ssh.targets.{name}: set key, or [credentials.ssh]")
    return Runtime(
        config, policy, pdp, registry, audit, holds=holds, jwt=jwt, intel=intel,
        credentials=credentials, own_dir=own_dir or config.data_dir,
    )  # fmt: skip


LINK_KEY_FILE = "approvals.key"


def _write_secret(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner only from the first byte (no umask window)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def link_key(config: Config) -> bytes:
    """The key signing webhook links: configured, or generated once (0600)."""
    path = config.approvals.link_key or config.data_dir / LINK_KEY_FILE
    if config.approvals.link_key is None and not path.exists():
        _write_secret(path, secrets.token_bytes(32))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"approvals.link_key: cannot read {path}: {exc.strerror}") from None


def _approval_channels(runtime: Runtime, admin_url: str | None) -> WebApprovals | None:
    """Attach the configured channels to the holds; the web state if the admin runs."""
    from interlock.approvals.ciba import Ciba
    from interlock.approvals.links import LinkSigner
    from interlock.approvals.webhook import Webhook

    ap = runtime.config.approvals
    public_url = ap.public_url or admin_url
    links = None
    if ap.webhook is not None:
        if public_url is None:
            raise ConfigError("approvals.webhook needs [admin] (links are answered there)")
        links = LinkSigner(link_key(runtime.config), ap.link_ttl)
        runtime.holds.channels.append(Webhook(ap.webhook, links, public_url))
    if ap.ciba is not None:
        runtime.holds.channels.append(Ciba(ap.ciba))
    if admin_url is None:
        return None
    return WebApprovals(runtime.holds, ap.web, links=links, public_url=public_url)


ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 (a file name)
DEMO_AGENT = "demo"
DEMO_TOKEN_FILE = "demo.token"  # noqa: S105 (a file name)


def demo_token(data_dir: Path) -> str:
    """The demo agent's token: created once under the data directory (0600, as the admin
    token), then reused, so what an agent was given keeps working across restarts."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / DEMO_TOKEN_FILE
    if not path.exists():
        _write_secret(path, (secrets.token_urlsafe(24) + "\n").encode())
    return path.read_text().strip()


def with_demo_agent(config: Config) -> Config:
    """Embedded defaults: one agent to point at the proxy from the first start."""
    agents = {DEMO_AGENT: AgentConfig(token=demo_token(config.data_dir))}
    return config.model_copy(update={"agents": agents})


def admin_token_digest(config: Config) -> tuple[bytes, str | None]:
    """The admin API token's SHA-256, and where a generated token was written (if one was:
    no token configured means one is created once under the data directory)."""
    admin = config.admin
    assert admin is not None
    if admin.token_sha256:
        return bytes.fromhex(admin.token_sha256), None
    if admin.token:
        return hashlib.sha256(admin.token.encode()).digest(), None
    path = config.data_dir / ADMIN_TOKEN_FILE
    if not path.exists():
        _write_secret(path, (secrets.token_urlsafe(32) + "\n").encode())
    return hashlib.sha256(path.read_text().strip().encode()).digest(), str(path)


def _set_public_url(runtime: Runtime, admin: Admin, url: str) -> None:
    """Links name the bound address (the configured port may have been 0)."""
    from interlock.approvals.webhook import Webhook

    for channel in runtime.holds.channels:
        if isinstance(channel, Webhook):
            channel.public_url = url
    if admin.web is not None:
        admin.web.public_url = url


def authority(host: str, port: int) -> str:
    """`host:port` as a URL writes it: an IPv6 address in brackets (`http://::1:8080`
    is no URL, and the approvals page compares it with a browser's Origin)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def start(runtime: Runtime) -> None:
    """Start listeners and background tasks; fills `runtime.endpoints`."""
    cfg = runtime.config
    if hasattr(runtime.pdp.store, "start"):
        await runtime.pdp.store.start()  # a shared store: reachable, or a clear error now
    await runtime.audit.start()
    runtime._tasks.append(asyncio.create_task(runtime.policy.watch(cfg.policy.watch_interval)))
    if cfg.policy.bundle_url:
        from interlock.core.bundle_server import BundlePoller

        poller = BundlePoller(
            cfg.policy.bundle_url,
            runtime.policy,
            (runtime.own_dir or cfg.data_dir) / "bundles",
            cfg.policy.bundle_poll_interval,
            cfg.policy.bundle_token,
        )
        runtime._tasks.append(asyncio.create_task(poller.run()))
        runtime.endpoints["bundle server"] = cfg.policy.bundle_url

        async def bundle_answers() -> None:
            if poller.unreachable is not None:
                raise ConnectionError(poller.unreachable)

        runtime.readiness.add("bundle_server", bundle_answers, required=False)
    if cfg.admin is not None:
        host, _, port = cfg.admin.listen.rpartition(":")
        digest, token_file = admin_token_digest(cfg)
        if token_file is not None:
            runtime.endpoints["API token file"] = token_file
        admin_url = f"http://{host.strip('[]')}:{port}"
        admin = Admin(
            web=_approval_channels(runtime, admin_url),
            pdp=runtime.pdp,
            registry=runtime.registry,
            holds=runtime.holds,
            token_digest=digest,
            sessions=lambda: {name: count() for name, count in runtime.sessions.items()},
            intel_status=runtime.intel.status if runtime.intel is not None else None,
            readiness=runtime.readiness,
            workers=lambda: _worker_reports(runtime),
        )
        runner = web.AppRunner(make_app(runtime.policy, runtime.audit, admin), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host.strip("[]"), int(port))
        await site.start()
        runtime._runners.append(runner)
        bound = runner.addresses[0]
        runtime.listeners.append((str(bound[0]), int(bound[1])))
        runtime.endpoints["admin"] = f"http://{authority(bound[0], bound[1])}"
        if cfg.approvals.public_url is None:
            _set_public_url(runtime, admin, runtime.endpoints["admin"])
        if cfg.approvals.web.users:
            runtime.endpoints["approvals page"] = f"{runtime.endpoints['admin']}/ui/approvals"
    else:
        _approval_channels(runtime, None)
    await _share_approvals(runtime)
    if runtime.credentials is not None:
        await runtime.credentials.start(runtime.pdp.store)
        runtime.endpoints["vault"] = cfg.credentials.address if cfg.credentials else ""
        if runtime.credentials.revoked_on_start:
            n = runtime.credentials.revoked_on_start
            runtime.endpoints["leases revoked"] = f"{n} left by an earlier run"
    if cfg.postgres is not None:
        await _start_postgres(runtime)
    if cfg.http is not None:
        from interlock.approvals.pins import PinStore
        from interlock.proxies.http.server import HttpProxy

        http_proxy = HttpProxy(
            cfg.http,
            cfg.data_dir,
            runtime.pdp,
            runtime.registry,
            runtime.jwt,
            runtime.holds,
            runtime.credentials,
            PinStore(cfg.data_dir / cfg.mcp.pins),
            lambda: runtime.listeners,
        )
        await http_proxy.start()
        runtime._stoppers.append(http_proxy.stop)
        assert http_proxy.address is not None
        runtime.endpoints["http"] = f"http://{authority(*http_proxy.address)}"
        for route, gw in zip(cfg.http.reverse, http_proxy.reverse_addresses, strict=True):
            runtime.endpoints[f"gateway -> {route.upstream}"] = f"http://{authority(gw[0], gw[1])}"
        runtime.endpoints["ca"] = str(http_proxy.ca_file)
    if cfg.ssh is not None:
        from interlock.proxies.ssh.server import SshProxy

        ssh = SshProxy(
            cfg.ssh,
            cfg.agents,
            cfg.data_dir,
            runtime.pdp,
            runtime.registry,
            runtime.holds,
            runtime.credentials,
        )
        await ssh.start()
        runtime._stoppers.append(ssh.stop)
        runtime.agent_users.append(ssh.prepare_agents)
        runtime.sessions["ssh"] = ssh.open_sessions
        assert ssh.address is not None
        runtime.endpoints["ssh"] = f"ssh://{authority(*ssh.address)}"
        runtime.endpoints["ssh host key"] = f"{ssh.host_key_path}.pub"
    if cfg.extauthz is not None:
        await _start_extauthz(runtime)
    _add_probes(runtime)
    runtime.readiness.listening = True
    if runtime.credentials is not None:
        # Last to stop: sessions end first and give their leases back.
        runtime._stoppers.append(runtime.credentials.stop)
    runtime.endpoints["audit"] = _audit_where(cfg)
    runtime.endpoints["audit key"] = runtime.audit.signer.verifier.encode()


async def _worker_reports(runtime: Runtime) -> list[Any] | None:
    """The other Postgres workers' numbers for `/metrics`, None without workers (they
    start after the admin API)."""
    return None if runtime.workers is None else await runtime.workers.reports()


async def _start_postgres(runtime: Runtime) -> None:
    from interlock.classify.sql import Catalog, SqlClassifier
    from interlock.proxies.postgres import workers
    from interlock.proxies.postgres.server import PostgresProxy

    cfg = runtime.config
    assert cfg.postgres is not None
    slot = runtime.slot
    if slot is None and cfg.postgres.workers > 1:
        # The cancel sockets' directory: short (a socket path has 107 bytes), 0700.
        slot = workers.Slot(0, cfg.postgres.workers, tempfile.mkdtemp(prefix="interlock-pg-"))
    proxy = PostgresProxy(
        cfg.postgres,
        cfg.agents,
        runtime.pdp,
        SqlClassifier(Catalog.from_config(cfg.classification.postgres)),
        runtime.holds,
        runtime.credentials,
        slot,
    )
    await proxy.start()
    runtime._stoppers.append(proxy.stop)
    runtime.agent_users.append(proxy.prepare_agents)
    runtime.sessions["postgres"] = proxy.open_sessions
    assert proxy.address is not None
    host, port = proxy.address
    runtime.endpoints["postgres"] = f"postgresql://{authority(host, port)}"
    if slot is not None and runtime.slot is None:
        # The first worker: the others bind the port it bound (it may have been 0).
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        public_url = cfg.approvals.public_url or runtime.endpoints.get("admin")
        others = workers.Workers(
            runtime.pdp, lambda: runtime.config, runtime.source, slot, listen, public_url
        )
        runtime._stoppers.append(others.stop)  # with the first worker's own listener
        await others.start()
        runtime.workers = others
        runtime.endpoints["postgres workers"] = f"{cfg.postgres.workers} processes"


async def _share_approvals(runtime: Runtime) -> None:
    """Holds end with the runtime; with Redis, any instance shows and answers them."""
    runtime._stoppers.append(runtime.holds.close)
    client = getattr(runtime.pdp.store, "client", None)
    if client is not None:
        from interlock.approvals.shared import SharedApprovals

        shared = SharedApprovals(client)
        runtime.holds.shared = shared
        await shared.start(runtime.holds)
        runtime._stoppers.append(shared.close)


MCP_TOKEN_ENV = "INTERLOCK_TOKEN"  # noqa: S105 (a variable name)


async def run_mcp(config: Config, agent_id: str, argv: list[str], token: str | None) -> int:
    """`interlock mcp run`: one stdio gateway, deciding with an embedded PDP on this
    config's policy, state store, audit log and approvals (docs/mcp.md says why), no
    listeners. The child's exit status is returned."""
    from interlock.approvals.pins import PinStore
    from interlock.proxies.mcp import stdio
    from interlock.proxies.mcp.actions import Where, server_bases
    from interlock.proxies.mcp.gateway import Gateway
    from interlock.proxies.mcp.relay import Side

    runtime = build(config)
    agent = runtime.registry.authenticate(agent_id, token or "")
    if agent is None:
        raise ConfigError(
            f"agent {agent_id!r}: not registered, or ${MCP_TOKEN_ENV} is not its token"
        )
    pins = PinStore(config.data_dir / config.mcp.pins)
    if hasattr(runtime.pdp.store, "start"):
        await runtime.pdp.store.start()
    await runtime.audit.start()
    runtime._tasks.append(asyncio.create_task(runtime.policy.watch(config.policy.watch_interval)))
    _approval_channels(runtime, None)
    await _share_approvals(runtime)
    cwd, home = os.getcwd(), str(Path.home())
    where = Where(shlex.join(argv), cwd, home, server_bases(argv, cwd, home))
    taint_ttl = float(
        runtime.policy.current.data.get("interlock", {}).get("taint", {}).get("ttl_seconds", 900)
    )

    def gateway(send: Callable[[Side, bytes], None]) -> Gateway:
        return Gateway(
            runtime.pdp, runtime.holds, agent, where, send,
            pins=pins, approval_timeout=config.mcp.approval_timeout, taint_ttl=taint_ttl,
        )  # fmt: skip

    stop = asyncio.Event()

    def posture_changed(agent_id: str, posture: Posture) -> None:
        # Isolation ends every session of the agent on every PEP: this one too.
        if agent_id == agent.id and posture.isolated and not stop.is_set():
            log.warning("mcp %s: agent %s isolated, ending the session", where.server, agent_id)
            stop.set()

    unsubscribe = runtime.pdp.store.subscribe(posture_changed)
    try:
        env = {k: v for k, v in os.environ.items() if k != MCP_TOKEN_ENV}
        return await stdio.run(argv, gateway, env, stop)
    finally:
        unsubscribe()
        await runtime.stop()
        pins.close()


def _audit_where(cfg: Config) -> str:
    """The store URL, and for a relative SQLite path the file it names (inside data_dir)."""
    store = cfg.audit.store
    path = store.removeprefix("sqlite:///")
    if path == store or path.startswith("/"):
        return store
    return f"{store} ({cfg.data_dir / path})"


def _add_probes(runtime: Runtime) -> None:
    """A readiness probe per configured dependency (admin/readiness.py says which are
    required)."""
    cfg, probes = runtime.config, runtime.readiness
    ping = getattr(runtime.pdp.store, "ping", None)
    if ping is not None:
        probes.add("redis", ping)
    audit = runtime.audit

    async def audit_answers() -> None:
        await audit.store.size()
        status = audit.status()
        if not status["healthy"] and status["pending"]:
            raise ConnectionError(f"records waiting on a failed write: {status['last_error']}")

    probes.add("audit_store", audit_answers)
    if cfg.credentials is not None:
        ca = str(cfg.credentials.ca_cert) if cfg.credentials.ca_cert else None
        address = str(cfg.credentials.address)
        probes.add("vault", functools.partial(ready.vault_answers, address, ca))
    if cfg.postgres is not None:
        from interlock.proxies.postgres.upstream import Upstream

        db = Upstream.parse(cfg.postgres.upstream)
        check = functools.partial(ready.postgres_answers, db.host, db.port)
        probes.add("postgres_upstream", check, required=False)
    if cfg.ssh is not None:
        for name, target in cfg.ssh.targets.items():
            probes.add(
                f"ssh_target:{name}",
                functools.partial(ready.ssh_answers, target.host, target.port),
                required=False,
            )


async def _start_extauthz(runtime: Runtime) -> None:
    from interlock.extauthz.authorizer import Authorizer
    from interlock.extauthz.grpc_server import ExtAuthzServer
    from interlock.extauthz.http_server import make_app as make_authz_app

    cfg = runtime.config.extauthz
    assert cfg is not None
    authorizer = Authorizer(cfg, runtime.pdp, runtime.registry, runtime.jwt, runtime.holds)
    grpc_server = ExtAuthzServer(authorizer, cfg.grpc_listen, cfg.max_concurrent_checks)
    await grpc_server.start()
    runtime._stoppers.append(grpc_server.stop)
    host = cfg.grpc_listen.rpartition(":")[0]
    runtime.endpoints["ext_authz gRPC"] = f"{host}:{grpc_server.port}"
    if cfg.http_listen:
        host, _, port = cfg.http_listen.rpartition(":")
        runner = web.AppRunner(make_authz_app(authorizer), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host.strip("[]"), int(port)).start()
        runtime._runners.append(runner)
        bound = runner.addresses[0]
        runtime.endpoints["ext_authz HTTP"] = f"http://{authority(bound[0], bound[1])}"


ENABLE_LINES = {
    "postgres": ("[postgres]", 'upstream = "postgresql://USER:PASSWORD@HOST:5432/DB"'),
    "ssh": (
        "[ssh]",
        'routes = { demo = "web1" }',
        "[ssh.targets.web1]",
        'host = "10.0.0.5"',
        'user = "deploy"',
        'key = "keys/deploy_ed25519"',
        'known_hosts = "keys/known_hosts"',
    ),
}
"""Config lines that switch on a proxy that needs an upstream (printed when it is off)."""
METADATA_URL = "http://169.254.169.254/latest/meta-data/"
TRY_URL = "https://example.com/"


def banner(runtime: Runtime) -> str:
    current = runtime.policy.current
    lines = [
        f"interlock up: policy {runtime.policy.bundle_dir} "
        f"(version {current.version[:12]}, {current.engine_name} {current.engine_version}), "
        f"{len(runtime.registry)} agent(s) registered"
    ]
    if runtime.source is not None:
        lines[0] += f", config {runtime.source}"
    note = fallback_note(runtime.config.policy.engine, runtime.policy.engine)
    if note is not None:
        lines.append(f"  warning: {note}")
    for name, where in runtime.endpoints.items():
        lines.append(f"  {name:<10} {where}")
    for name, enable in ENABLE_LINES.items():
        if getattr(runtime.config, name) is None:
            lines.append(f"  {name:<10} not configured; these lines in interlock.toml enable it:")
            lines.extend(f"               {line}" for line in enable)
    lines.extend(try_lines(runtime))
    return "\n".join(lines)


def cli_command() -> str:
    """How another shell in this directory runs this interlock: `interlock` when that is
    the one on PATH, else the path it was started by (`make up` runs .venv/bin/interlock
    without the venv on PATH)."""
    started, on_path = Path(sys.argv[0]), shutil.which("interlock")
    if started.name == "interlock" and started.is_file():
        if on_path is not None and Path(on_path).resolve() == started.resolve():
            return "interlock"
        return shlex.quote(str(started))
    if on_path is not None:
        return "interlock"
    return f"{shlex.quote(sys.executable)} -m interlock.cli"


def try_lines(runtime: Runtime) -> list[str]:
    """Shell lines that work as printed: an allowed HTTPS request through the proxy, one
    refused (the cloud metadata address), and the audit records of both. Only when the
    proxy runs and the demo agent's token is the one in its file (never printed itself)."""
    cfg = runtime.config
    demo = cfg.agents.get(DEMO_AGENT)
    token_file = cfg.data_dir / DEMO_TOKEN_FILE
    if cfg.http is None or demo is None or demo.token is None or "http" not in runtime.endpoints:
        return []
    if not token_file.exists() or token_file.read_text().strip() != demo.token:
        return []
    source = runtime.source
    c = "" if source in (None, Path("interlock.toml")) else f" -c {shlex.quote(str(source))}"
    proxy = runtime.endpoints["http"].removeprefix("http://")
    token = shlex.quote(str(token_file))
    cli = cli_command()
    return [
        f"try it (agent demo, token in {token_file}): allowed, refused, both in the log:",
        f"  {cli} ca export{c} > interlock-ca.pem",
        f'  export DEMO_PROXY="http://demo:$(cat {token})@{proxy}"',
        f'  curl -sS --cacert interlock-ca.pem -x "$DEMO_PROXY" {TRY_URL} -o /dev/null'
        ' -w "allowed: %{http_code}\\n"',
        f'  curl -sS -x "$DEMO_PROXY" {METADATA_URL}; echo',
        f"  {cli} audit tail -n 2{c}",
    ]


async def reload(runtime: Runtime) -> None:
    """SIGHUP: re-read the policy bundle, the threat feeds and the agents now. A bundle
    that does not compile, or a config file that does not validate, is refused and what
    serves keeps serving; connections are untouched, except those of an agent that was
    removed or changed."""
    try:
        policy = await asyncio.to_thread(runtime.policy.load)
        log.warning("SIGHUP: policy version %s serving", policy.version[:12])
    except BundleError as exc:
        log.error("SIGHUP: policy reload refused, old bundle keeps serving: %s", exc)
    if runtime.intel is not None:
        await asyncio.to_thread(runtime.intel.reload)
        for path, error in runtime.intel.errors.items():
            log.error("SIGHUP: threat feed %s: %s (last good version kept)", path, error)
    if runtime.reread is not None and reload_agents(runtime):
        await runtime.pdp.set_modes(runtime.config.modes(), "SIGHUP")
    if runtime.workers is not None:
        runtime.workers.reload()


MODE_KEYS = (
    ("http", "mode"),
    ("postgres", "mode"),
    ("ssh", "mode"),
    ("extauthz", "enforcement"),
    ("mcp", "mode"),
)
"""The per-proxy enforce/shadow settings, which SIGHUP reloads (with `[policy] mode`)."""


def _with_modes(config: Config, source: Config) -> Config:
    """`config` with the enforce/shadow settings of `source`."""
    update: dict[str, Any] = {
        "policy": config.policy.model_copy(update={"mode": source.policy.mode})
    }
    for section, key in MODE_KEYS:
        mine, theirs = getattr(config, section), getattr(source, section)
        if mine is not None and theirs is not None:
            update[section] = mine.model_copy(update={key: getattr(theirs, key)})
    return config.model_copy(update=update)


def reload_agents(runtime: Runtime) -> bool:
    """Re-read `[agents]` and the enforce/shadow modes from the config file; False when
    the file was refused. Other sections need a restart (they decide which sockets
    exist); the log says so when they changed."""
    # Every part is built first; nothing changes unless all of it can (a half-applied
    # reload could leave a withdrawn key working in one proxy).
    assert runtime.reread is not None
    try:
        fresh = runtime.reread()
        applies = [prepare(fresh.agents) for prepare in runtime.agent_users]
    except Exception as exc:
        reason = str(exc) if isinstance(exc, InterlockError) else f"{type(exc).__name__}: {exc}"
        log.error("SIGHUP: config refused, agents unchanged: %s", reason)
        return False
    if fresh.model_copy(update={"agents": runtime.config.agents}) != _with_modes(
        runtime.config, fresh
    ):
        log.warning("SIGHUP: only [agents] and modes are reloaded; restart for the other changes")
    before, after = set(runtime.config.agents), set(fresh.agents)
    runtime.config = _with_modes(runtime.config.model_copy(update={"agents": fresh.agents}), fresh)
    runtime.registry.replace(fresh.agents)
    for apply in applies:
        apply()
    log.warning(
        "SIGHUP: %d agents (%d added, %d removed)",
        len(after),
        len(after - before),
        len(before - after),
    )
    return True


def reload_on_sighup(runtime: Runtime) -> None:
    """SIGHUP runs `reload` (one task per signal, held until done)."""
    loop = asyncio.get_running_loop()
    reloading: set[asyncio.Task[None]] = set()

    def hup() -> None:
        task = loop.create_task(reload(runtime))
        reloading.add(task)
        task.add_done_callback(reloading.discard)

    loop.add_signal_handler(signal.SIGHUP, hup)


async def serve(
    config: Config,
    ready: Callable[[Runtime], None] | None = None,
    reread: Callable[[], Config] | None = None,
    source: Path | None = None,
) -> None:
    """Run until SIGINT or SIGTERM; SIGHUP reloads the policy and the feeds."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before anything starts: a SIGTERM that arrives while interlock is starting (or just
    # after the banner) is a graceful stop too, not the default kill.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # A SIGHUP while starting (which may take a while: Postgres workers) must not end the
    # process with the default action; the reload handler replaces this once started.
    loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP while starting: ignored"))
    runtime = build(config)
    runtime.reread = reread
    runtime.source = source
    await start(runtime)
    reload_on_sighup(runtime)
    heap.settle()
    # The banner last: whoever waits for it may signal at once.
    print(banner(runtime), flush=True)
    if ready:
        ready(runtime)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runtime.stop()
        heap.release()
