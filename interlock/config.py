"""The configuration file (`interlock.toml`), validated by pydantic.

Every section is optional: an absent section leaves its component off. `interlock up` with
no file at all (no `-c`, no ./interlock.toml) uses `Config.embedded()`. Errors name the
dotted key and the reason, e.g.
``interlock.toml: agents.reporter.roles: Input should be a valid list``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from interlock.core.model import MAX_NAME, Tier
from interlock.core.modes import Mode, Modes
from interlock.errors import ConfigError

DEFAULT_DATA_DIR = ".interlock"

ModeName = Literal["enforce", "shadow"]
"""`enforce`, or `shadow`: decide and record, enforce nothing (docs/operations.md,
"Rolling out"). Per agent, per proxy and `[policy] mode`; the most specific set wins."""


def _listen(value: str) -> str:
    """`host:port` with a literal IP (or localhost) and a port in range."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    host = host.strip("[]")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host must be an IP address or localhost, got {host!r}") from None
    return value


Listen = Annotated[str, AfterValidator(_listen)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, not silently ignored typos."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyConfig(Section):
    bundle: Path | None = None
    """Bundle directory; None means the bundled default policy."""
    watch_interval: float = Field(1.0, gt=0)
    """Seconds between checks for changed bundle files (hot reload)."""
    engine: Literal["regorus", "rego-cpp"] = "regorus"
    """The Rego engine; when its wheel is missing the other one serves and `interlock up`
    says so (docs/policy-input.md lists what each engine lacks)."""
    cache_size: int = Field(4096, ge=0)
    """Decisions cached per bundle version, keyed by the facts the policy reads; 0 disables."""
    timeout_ms: float = Field(50.0, gt=0)
    """An evaluation using more CPU time than this is discarded and the action denied
    (time spent waiting for the event loop or the machine does not count)."""
    bundle_url: str | None = Field(None, pattern=r"^https?://")
    """An OPA-format bundle (tar.gz) to poll; `bundle` (or the default) serves until a
    bundle from there compiles."""
    bundle_poll_interval: float = Field(30.0, gt=0)
    bundle_token: str | None = None
    mode: ModeName = "enforce"
    """Bearer token for the bundle server."""


class WitnessConfig(Section):
    url: str = Field(pattern=r"^https?://")
    """The witness's submission prefix (`<url>/add-checkpoint` is asked)."""
    key: str
    """Its verifier key, `name+<hex id>+<base64(0x04 || Ed25519 key)>` (`interlock witness
    key` prints it)."""


class AuditTransitConfig(Section):
    """Checkpoints signed by an OpenBao/Vault transit key (Ed25519): the signing key never
    leaves OpenBao, so the host cannot re-sign a rewritten log by itself."""

    address: str
    """https (http only to a loopback address: the token crosses this link)."""
    token: str | None = None
    token_file: Path | None = None
    mount: str = "transit"
    key: str = "interlock-audit"
    """A transit key of type ed25519 (`bao write transit/keys/interlock-audit type=ed25519`)."""
    timeout: float = Field(5.0, gt=0)

    @field_validator("address")
    @classmethod
    def _secure(cls, v: str) -> str:
        return tls_unless_loopback(v)

    @model_validator(mode="after")
    def _one_token(self) -> AuditTransitConfig:
        if bool(self.token) == bool(self.token_file):
            raise ValueError("give exactly one of token, token_file")
        return self


class AuditConfig(Section):
    store: str = "sqlite:///audit.db"
    """sqlite:///path (relative paths are inside data_dir) or postgresql://..."""
    fail_open_max_tier: Tier | Literal["none"] = Tier.LOW
    """When the log cannot be written, allowed actions up to this tier still pass;
    "none" denies everything the log cannot record (and makes every record durable)."""
    origin: str = Field("interlock.local/audit", pattern=r"^[^\s+]+$")
    """The log's name in checkpoints and its key name (c2sp.org/tlog-checkpoint)."""
    key: Path | None = None
    """Ed25519 signing key (PEM); default <data_dir>/audit.key, created on first run."""
    checkpoint_interval: float = Field(60.0, ge=0)
    """Seconds between signed checkpoints (0: only at shutdown and on demand)."""
    max_delay_ms: float = Field(5.0, ge=0, le=1000)
    """Group commit: how long a batch waits for more records before committing."""
    max_batch: int = Field(512, ge=1, le=100_000)
    max_pending: int = Field(100_000, ge=1)
    """Records queued in memory before appends are refused."""
    loss_window_ms: float = Field(100.0, ge=0)
    """Longest a queued (`low`) record may stay uncommitted once acknowledged: past it,
    appends wait for their commit, so a crash loses at most this much of acknowledged
    decisions however slow the disk (0: no bound). Not applied while the store fails."""
    write_timeout: float = Field(5.0, gt=0)
    witnesses: list[WitnessConfig] = []
    """Witnesses asked to cosign each checkpoint (c2sp.org/tlog-witness)."""
    witness_timeout: float = Field(5.0, gt=0)
    """Seconds to wait for each witness's answer before storing the checkpoint without it."""
    transit: AuditTransitConfig | None = None
    """Sign checkpoints through OpenBao/Vault transit instead of the local `key` file."""

    @field_validator("store")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must be sqlite:///path or a postgresql:// URL")
        return v


class StateConfig(Section):
    store: str = "memory"

    @field_validator("store")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if v != "memory" and not v.startswith(("redis://", "rediss://")):
            raise ValueError("must be 'memory' or a redis:// URL")
        return v


def _name(v: str) -> str:
    if not v or len(v) > MAX_NAME or any(c.isspace() or ord(c) < 32 for c in v):
        raise ValueError(f"must be 1-{MAX_NAME} printable characters without spaces")
    return v


Name = Annotated[str, AfterValidator(_name)]


class AgentConfig(Section):
    token: str | None = Field(None, min_length=16)
    token_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    roles: list[Name] = []
    owner: str | None = None
    ssh_keys: list[str] = []
    postgres_scram: str | None = Field(None, pattern=r"^SCRAM-SHA-256\$\d+:[^$]+\$[^:]+:.+$")
    """A PostgreSQL SCRAM verifier for the Postgres proxy, for agents whose token is given
    only as token_sha256 (a plain `token` gets one derived at start-up)."""
    mode: ModeName | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> AgentConfig:
        if self.token and self.token_sha256:
            raise ValueError("give token or token_sha256, not both")
        return self

    @property
    def token_digest(self) -> bytes | None:
        if self.token_sha256:
            return bytes.fromhex(self.token_sha256)
        if self.token:
            return hashlib.sha256(self.token.encode()).digest()
        return None


class JwtConfig(Section):
    issuer: str
    audience: str
    jwks_file: Path | None = None
    jwks_url: str | None = None
    algorithms: list[Literal["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA", "PS256"]] = [
        "RS256",
        "ES256",
        "EdDSA",
    ]
    jwks_cache_seconds: float = Field(300.0, gt=0)
    leeway_seconds: float = Field(30.0, ge=0)
    require_registered_agent: bool = True
    """Only agents present in [agents] may authenticate by JWT (their `sub`)."""

    @model_validator(mode="after")
    def _one_source(self) -> JwtConfig:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of jwks_file or jwks_url")
        if self.jwks_url and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError("jwks_url must be an http(s) URL")
        return self


class IdentityConfig(Section):
    jwt: JwtConfig | None = None


def dns_address(server: str) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:5353`, `[::1]:53` -> (ip, port)."""
    host, port = server, 53
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif server.count(":") == 1:
        host, _, p = server.partition(":")
        port = int(p)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"bad port in {server!r}")
    return host, port


class ReverseRoute(Section):
    """A reverse-proxy (API gateway) listener in front of one upstream. Agents send their
    credentials in `X-Interlock-Authorization` (or `Proxy-Authorization`), same schemes
    as the forward proxy; the header is removed before forwarding."""

    listen: Listen
    upstream: str
    """`http://host:port` or `https://host:port`; fixed, so the SSRF guard does not
    apply to it (the operator chose it)."""

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: str) -> str:
        scheme, sep, rest = v.partition("://")
        if scheme not in ("http", "https") or not sep or not rest.strip("/"):
            raise ValueError("upstream must be http://host[:port] or https://host[:port]")
        if "/" in rest.rstrip("/") or "@" in rest:
            raise ValueError("upstream takes no path or credentials")
        return v.rstrip("/")


class HttpConfig(Section):
    listen: Listen = "127.0.0.1:8080"
    passthrough: list[str] = []
    """Hosts tunnelled without TLS interception (decided by host at CONNECT)."""
    allow_networks: list[str] = []
    """Private or special networks agents may reach anyway (the SSRF guard denies them
    otherwise), e.g. ["10.20.0.0/16"]."""
    approval_timeout: float = Field(30.0, gt=0)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    keep_prompts: bool = False
    """Keep the text of LLM prompts in the audit record (the hash is always kept)."""
    trusted_hosts: list[str] = []
    """Hosts whose responses do not count as untrusted content."""
    upstream_ca: Path | None = None
    """Extra CA bundle for verifying upstream servers (internal PKI); the system store is
    used otherwise. Upstream certificates are always verified."""
    reverse: list[ReverseRoute] = []
    """Reverse-proxy listeners (API-gateway use), decided like forward-proxy requests."""
    dns_servers: list[str] = []
    """Resolve destinations with these DNS servers (`ip` or `ip:port`, UDP/TCP) instead
    of the system resolver, e.g. a resolver agents cannot influence."""
    max_header_bytes: int = Field(60 * 1024, ge=1024)
    """Largest request head (request line and header fields) accepted; Envoy's default."""
    max_headers: int = Field(100, ge=8)
    """Most header fields in one request; Envoy's default."""
    header_timeout: float = Field(10.0, gt=0)
    """Seconds a new connection (and a CONNECT tunnel) has to send a complete request
    head."""
    idle_timeout: float = Field(60.0, gt=0)
    """Seconds a keep-alive connection may wait between requests, the next request's
    head included."""
    body_timeout: float = Field(60.0, gt=0)
    """Seconds a request body may take to arrive whole after its head."""
    tunnel_idle_timeout: float = Field(300.0, gt=0)
    """Seconds without a byte in either direction before any connection is closed
    (pass-through tunnels, WebSockets, a wait for a slow upstream)."""
    max_connections_per_client: int = Field(256, ge=1)
    """Open connections one client address may hold; more are closed at once."""
    mode: ModeName | None = None
    """For protocol `http` and the MCP tool calls (protocol `mcp`) this proxy sees."""
    allow_tunnelled_ipv6: bool = False
    """Let agents reach 6to4, Teredo and NAT64 addresses whose embedded IPv4 addresses
    are all public (refused by default, as Smokescreen does)."""

    @field_validator("dns_servers")
    @classmethod
    def _dns(cls, v: list[str]) -> list[str]:
        for server in v:
            dns_address(server)
        return v

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for n in v:
            ipaddress.ip_network(n, strict=False)
        return v


class PostgresConfig(Section):
    listen: Listen = "127.0.0.1:6432"
    upstream: str = "postgresql://127.0.0.1:5432/postgres"
    """Where statements go, with the credentials the proxy logs in with (agents never
    see them)."""
    login_timeout: float = Field(10.0, gt=0)
    """A client that has not finished logging in by then is disconnected."""
    max_client_conn: int = Field(1000, ge=1)
    """Client sessions at once (logins in progress included); each has its own upstream
    connection, so this also bounds the proxy's share of the database's max_connections.
    A login past it is refused with SQLSTATE 53300 and audited (at most one record a
    second per client address, docs/audit.md); cancel requests are not counted."""
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    approval_timeout: float = Field(30.0, gt=0)
    """How long a statement held for approval waits before it counts as denied."""
    tls_cert: Path | None = None
    """PEM certificate (chain) offered to clients that send SSLRequest."""
    tls_key: Path | None = None
    require_tls: bool = False
    """Refuse clients that do not switch to TLS (needs tls_cert and tls_key)."""
    upstream_tls: Literal["disable", "require", "verify-full"] = "disable"
    """TLS to the database: require encrypts; verify-full also checks the certificate
    against upstream_ca and the host name."""
    upstream_ca: Path | None = None
    discover_labels: bool = False
    """Read `COMMENT ON COLUMN ... IS 'classification: ...'` labels (and views over
    labelled columns) from the database, in addition to the configured ones."""
    catalog_refresh: float = Field(60.0, ge=0)
    """Seconds between two readings of each database's catalog (labels, the OIDs of
    labelled columns, pg_proc); 0 reads it once."""
    mode: ModeName | None = None
    workers: int = Field(1, ge=1, le=64)
    """Processes accepting on `listen` (SO_REUSEPORT), each on its own core: `interlock up`
    is the first and starts the others. More than one needs what they share: `[state]
    store = "redis://..."` (context, taints, posture, approvals) and a PostgreSQL `[audit]
    store` (one tree). `max_client_conn` applies to each process, as in PgBouncer."""

    @model_validator(mode="after")
    def _tls(self) -> PostgresConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.require_tls and self.tls_cert is None:
            raise ValueError("require_tls needs tls_cert and tls_key")
        if self.upstream_tls == "verify-full" and self.upstream_ca is None:
            raise ValueError("upstream_tls = verify-full needs upstream_ca")
        return self

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: str) -> str:
        if not v.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return v


class SshTarget(Section):
    """A host agents reach through the SSH proxy, and how the proxy logs in there."""

    host: str
    port: int = Field(22, gt=0, lt=65536)
    user: str
    key: Path | None = None
    """The private key the proxy logs in with (agents never see it). Unset: a key made
    per connection and a certificate signed for it by Vault (`[credentials.ssh]`)."""
    known_hosts: Path
    """OpenSSH known_hosts with the target's host key: it is checked, never learned."""
    home: str | None = None
    """The login user's home directory on the target, against which `~`, `$HOME` and
    relative paths in commands are resolved. Unset: asked of the target's SFTP server
    (`realpath .`) the first time a command needs it, then kept."""
    cwd: str | None = None
    """Where commands start on the target if not in `home` (a ForceCommand that changes
    directory). It must be where they really start: relative paths are decided on it."""
    resolve_links: bool = True
    """Resolve every path a command names on the target (its SFTP server's realpath)
    before deciding, so links there are followed. A target without SFTP then refuses
    every command that names a path; false decides such a target's commands on their
    paths as written (links on it are not followed: docs/ssh.md)."""

    @field_validator("home", "cwd")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must be an absolute path")
        return value


class SshConfig(Section):
    listen: Listen = "127.0.0.1:2222"
    host_key: Path | None = None
    """The proxy's own host key; created under <data_dir>/ssh/ on first start if unset."""
    user_ca_keys: list[str] = []
    """OpenSSH public keys of CAs whose user certificates agents may log in with (the
    certificate's principals must include the agent id)."""
    targets: dict[str, SshTarget] = {}
    routes: dict[str, str] = {}
    """agent id -> target name, for agents that log in as plain `agent`; `agent+target`
    in the user name chooses explicitly."""
    login_timeout: float = Field(30.0, gt=0)
    max_command_bytes: int = Field(16 * 1024, ge=64)
    env_allow: list[str] = ["LANG", "LC_*"]
    """Environment variables a client may set (shell-style patterns); others are dropped."""
    approval_timeout: float = Field(30.0, gt=0)
    mode: ModeName | None = None
    ciphers: list[str] = [
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
    ]
    """Encryption algorithms on both legs (agent to proxy, proxy to target), preferred
    first. ChaCha20-Poly1305 is left out: asyncssh builds its cipher in Python for every
    packet (21 us a packet against 3 for AES-GCM), a sixth of the proxy's CPU per
    command. Add "chacha20-poly1305@openssh.com" for clients that offer nothing else."""

    @field_validator("ciphers")
    @classmethod
    def _ciphers(cls, value: list[str]) -> list[str]:
        from asyncssh.encryption import get_encryption_algs

        known = {alg.decode() for alg in get_encryption_algs()}
        unknown = [c for c in value if c not in known]
        if unknown or not value:
            raise ValueError(f"unknown or no ciphers {unknown}; known: {sorted(known)}")
        return value

    @model_validator(mode="after")
    def _routes(self) -> SshConfig:
        for agent, target in self.routes.items():
            if target not in self.targets:
                raise ValueError(f"routes.{agent}: unknown target {target!r}")
        return self


class ExtAuthzConfig(Section):
    grpc_listen: Listen = "127.0.0.1:9191"
    http_listen: Listen | None = "127.0.0.1:9192"
    """The HTTP authz endpoint (NGINX auth_request, Envoy's HTTP ext_authz service);
    empty to turn it off."""
    mode: Literal["interlock", "opa-envoy"] = "interlock"
    """interlock: requests become Actions for the PDP. opa-envoy: the input document of
    OPA's Envoy plugin is evaluated at `decision_path` (the interlock context is added
    under `input.interlock`)."""
    decision_path: str = "envoy/authz/allow"
    """OPA-Envoy mode: the rule to evaluate (`envoy/authz/allow` or
    `data.envoy.authz.allow`); it must be in the policy bundle."""
    identity_header: str | None = None
    """A header the mesh sets to the calling agent's id. Only safe when the mesh removes
    it from what clients send."""
    principals: dict[str, str] = {}
    """mTLS source principal (e.g. a SPIFFE id) -> agent id."""
    max_body_bytes: int = Field(1024 * 1024, ge=0)
    """Bodies larger than this are denied (Envoy's `max_request_bytes` should be lower)."""
    http_path_prefix: str = ""
    """Envoy's HTTP ext_authz `path_prefix`, stripped before deciding."""
    strict_path_encoding: bool = True
    """Refuse paths a second reading would change: `%25` (double encoding), encoded `;`
    `?` `#`, characters Unicode folding (NFKC) changes (U+FF0F, U+FF0E, full-width letters),
    look-alikes of `/` `\\` `.` `%`, invisible formatting characters, `;` parameters, a raw
    `#`, and `...`-style dot segments. Turn off only when every upstream decodes exactly
    once and never folds Unicode."""
    approval_timeout: float = Field(300.0, gt=0)
    enforcement: ModeName | None = None
    """Shadow or enforce (`mode` here already names the policy language)."""
    """How long a request refused for approval stays open for a human to answer; once
    approved, a retry of the same request passes (`[approvals] grant_ttl`, `grant_uses`)."""
    max_concurrent_checks: int = Field(256, ge=1)
    """gRPC Checks in progress at once; more are denied at once (HTTP 503, audited at most
    once a second per peer), so an overload is answered instead of queued past Envoy's
    timeout, where finishing it is wasted work. A denial, not a gRPC error, so that
    `failure_mode_allow` cannot let a shed request through (docs/extauthz.md)."""

    @field_validator("http_listen", mode="before")
    @classmethod
    def _off(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("decision_path")
    @classmethod
    def _path(cls, v: str) -> str:
        path = v.removeprefix("data.").replace(".", "/").strip("/")
        if not path or any(not part for part in path.split("/")):
            raise ValueError("decision_path must name a rule, e.g. envoy/authz/allow")
        return path


class AdminConfig(Section):
    listen: Listen = "127.0.0.1:9180"
    token: str | None = Field(None, min_length=16)
    """Bearer token for everything but /healthz. Unset: one is generated on first start
    into <data_dir>/admin.token (0600), which `interlock agents` reads."""
    token_sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")

    @model_validator(mode="after")
    def _one_token(self) -> AdminConfig:
        if self.token and self.token_sha256:
            raise ValueError("give token or token_sha256, not both")
        return self


class WebApprovalsConfig(Section):
    users: dict[str, str] = {}
    """Who may sign in to the approvals page: name = password hash from
    `interlock approvals hash-password` (scrypt). No users: the page is off."""
    session_ttl: float = Field(3600.0, gt=0)
    secure_cookies: bool = False
    """Mark the session cookie Secure (set when the admin server is reached over HTTPS,
    e.g. behind a TLS-terminating proxy)."""

    @field_validator("users")
    @classmethod
    def _hashes(cls, v: dict[str, str]) -> dict[str, str]:
        for name, digest in v.items():
            if not digest.startswith("scrypt$") or digest.count("$") != 5:
                raise ValueError(f"{name}: not a hash from `interlock approvals hash-password`")
        return v


class WebhookConfig(Section):
    url: str = Field(pattern=r"^https?://")
    secret: str = Field(min_length=16)
    """Signs each POST (`X-Interlock-Signature: t=<unix time>,v1=<HMAC-SHA256 hex>`)."""
    timeout: float = Field(5.0, gt=0)
    attempts: int = Field(3, ge=1, le=10)


def tls_unless_loopback(url: str) -> str:
    """https, or http to this machine only: the token endpoint's answer is trusted as it
    arrives (OpenID Connect Core 3.1.3.7), which is only sound over TLS."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost"):
        return url
    raise ValueError(f"{url!r}: use https (http only to a loopback address)")


SecureUrl = Annotated[str, AfterValidator(tls_unless_loopback)]


class CibaConfig(Section):
    issuer: SecureUrl
    """The provider; endpoints come from its discovery document unless given below."""
    client_id: str
    client_secret: str
    backchannel_endpoint: SecureUrl | None = None
    token_endpoint: SecureUrl | None = None
    subject_claim: str = "sub"
    """The ID token claim that must equal the agent's owner (the `login_hint`)."""
    scope: str = "openid"
    binding_message_max: int = Field(160, ge=0, le=1000)
    """Longest binding message the provider accepts (0: send none)."""
    timeout: float = Field(5.0, gt=0)
    """Per HTTP request to the provider."""


class ApprovalsConfig(Section):
    owner_only: bool = True
    """Only the agent's owner (or someone in `approvers`) may answer for it."""
    approvers: list[str] = []
    """People who may answer for any agent besides its owner (e.g. the on-call)."""
    grant_ttl: float = Field(300.0, gt=0)
    """ext_authz: how long an approval lets the same request through on retry."""
    grant_uses: int = Field(1, ge=1)
    """ext_authz: how many retries one approval lets through."""
    public_url: str | None = Field(None, pattern=r"^https?://")
    """Base URL people reach the admin server at (for webhook links); default: its
    listen address."""
    link_ttl: float = Field(3600.0, gt=0)
    link_key: Path | None = None
    """Key signing webhook links; default: generated under the data directory."""
    web: WebApprovalsConfig = WebApprovalsConfig()
    webhook: WebhookConfig | None = None
    ciba: CibaConfig | None = None


class VaultPostgresConfig(Section):
    mount: str = "database"
    role: str
    """The database secrets engine role an agent's session logs in with."""
    read_only_role: str | None = None
    """Used instead of `role` while the agent is `read_only`."""
    static_fallback: bool = False
    """Vault unreachable: log in with the upstream URL's own user (only if set)."""


class VaultSshConfig(Section):
    mount: str = "ssh"
    role: str
    """The SSH secrets engine role that signs the proxy's per-connection key."""
    ttl: str = Field("5m", pattern=r"^\d+[smh]?$")


class InjectRule(Section):
    """Agents call an API without holding its key: matching requests get the header."""

    host: str
    scheme: Literal["https", "http"] = "https"
    """http only if the API is reached without TLS on purpose (the key crosses in clear)."""
    port: int | None = Field(None, gt=0, lt=65536)
    """Default: 443 for https, 80 for http. Nothing else gets the key."""
    path_prefix: str = "/"
    """Matched on whole path segments of the normalised path."""
    secret: str = Field(pattern=r"^[^#\s]+#[^#\s]+$")
    """`<kv v2 mount>/<path>#<key>`, e.g. `secret/saas#api_key`."""
    header: str = "Authorization"
    template: str = Field("Bearer {secret}", pattern=r"\{secret\}")


class CredentialsConfig(Section):
    address: SecureUrl
    """https (http only to a loopback address: the token and secrets cross this link)."""
    token: str | None = None
    token_file: Path | None = None
    approle_role_id: str | None = None
    approle_secret_id_file: Path | None = None
    namespace: str | None = None
    ca_cert: Path | None = None
    timeout: float = Field(5.0, gt=0)
    secret_cache_seconds: float = Field(60.0, ge=0)
    """How long an injected secret is reused before it is read again."""
    postgres: VaultPostgresConfig | None = None
    ssh: VaultSshConfig | None = None
    inject: list[InjectRule] = []

    @model_validator(mode="after")
    def _one_auth(self) -> CredentialsConfig:
        ways = [bool(self.token), bool(self.token_file), bool(self.approle_role_id)]
        if sum(ways) != 1:
            raise ValueError("give exactly one of token, token_file, approle_role_id")
        if self.approle_role_id and not self.approle_secret_id_file:
            raise ValueError("approle_role_id needs approle_secret_id_file")
        return self


class ClassificationConfig(Section):
    postgres: dict[str, list[Name]] = {}
    """Column labels: "schema.table.column" = ["label", ...]."""

    @field_validator("postgres")
    @classmethod
    def _qualified(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for key in v:
            if key.count(".") != 2 or "" in key.split("."):
                raise ValueError(f"{key!r} must be schema.table.column")
        return v


class IntelConfig(Section):
    feeds: list[Path] = []
    """Indicator files (plain lists or JSON, see docs/risk.md), re-read when they change."""


ProxyKind = Literal["http", "postgres", "ssh"]


class HostAgent(Section):
    """One agent's local user on this machine."""

    uid: int = Field(ge=1, lt=2**32 - 1)
    """Root (0) cannot be fenced in: it can rewrite the firewall and ignores ACLs."""


class HostConfig(Section):
    """`interlock host`: the per-user firewall and tool ACLs on the agents' machine
    (docs/host.md)."""

    agents: dict[Name, HostAgent] = {}
    proxies: dict[ProxyKind, list[Listen]] = {}
    """Where the agents reach each proxy; unset kinds are the [http]/[postgres]/[ssh]
    listen addresses (and [[http.reverse]] gateways) of this config."""
    dns: list[str] = []
    """Resolvers (IP addresses) the agents' users may query on port 53; none by default."""
    tools: dict[Name, Path] = {}
    """`tool:NAME` restriction -> the binary whose execute permission it removes."""
    keep_lockdown: bool = True
    """On stop, leave the table in place (fail closed); false removes it and the ACLs."""
    kill_on_isolate: bool = False
    """Isolation also kills every process of the agent's user (SIGKILL)."""
    nflog_group: int = Field(2929, ge=1, le=65535)
    """The NFLOG group dropped connections are reported on (one enforcer per group)."""
    resync_interval: float = Field(2.0, gt=0)
    """Seconds between re-reads of every agent's posture (expiries, missed messages)."""

    @field_validator("dns")
    @classmethod
    def _resolvers(cls, v: list[str]) -> list[str]:
        for address in v:
            ipaddress.ip_address(address)
        return v

    @field_validator("tools")
    @classmethod
    def _absolute(cls, v: dict[str, Path]) -> dict[str, Path]:
        for name, path in v.items():
            if not path.is_absolute():
                raise ValueError(f"{name}: must be an absolute path")
        return v

    @model_validator(mode="after")
    def _distinct_uids(self) -> HostConfig:
        seen: dict[int, str] = {}
        for name, agent in self.agents.items():
            if agent.uid in seen:
                raise ValueError(f"agents.{name}: uid {agent.uid} is also {seen[agent.uid]}'s")
            seen[agent.uid] = name
        return self


class BenchConfig(Section):
    budgets: dict[str, float] = {}
    """SLO limits for `interlock bench`, by budget id (e.g. `"pdp.cached_p99_us" = 500`);
    unnamed budgets keep their defaults (docs/benchmarks.md lists them)."""


class McpConfig(Section):
    """The stdio MCP gateway (`interlock mcp run`) and tool pinning (stdio and HTTP)."""

    approval_timeout: float = Field(30.0, gt=0)
    """How long a held tools/call, resources/read or prompts/get waits for a person."""
    pins: str = "mcp_pins.db"
    """SQLite file of pinned tools (relative: inside data_dir), shared by every process
    on this machine: the gateways, `interlock up` and the CLI."""
    mode: ModeName | None = None
    """Enforce or shadow MCP actions (protocol `mcp`: the stdio gateway and the MCP tool
    calls the HTTP proxy sees); unset: `[http] mode`, then `[policy] mode`."""


class Config(Section):
    """The whole file. Absent sections are None: that component does not run."""

    data_dir: Path = Path(DEFAULT_DATA_DIR)
    event_loop: Literal["asyncio", "uvloop", "auto"] = "asyncio"
    """The event loop every component runs on: asyncio's own, uvloop (the `fast` extra;
    an error when it is not installed), or uvloop when installed and asyncio's when not."""
    policy: PolicyConfig = PolicyConfig()
    audit: AuditConfig = AuditConfig()
    state: StateConfig = StateConfig()
    identity: IdentityConfig = IdentityConfig()
    agents: dict[Name, AgentConfig] = {}
    http: HttpConfig | None = None
    postgres: PostgresConfig | None = None
    ssh: SshConfig | None = None
    extauthz: ExtAuthzConfig | None = None
    admin: AdminConfig | None = None
    intel: IntelConfig = IntelConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    credentials: CredentialsConfig | None = None
    classification: ClassificationConfig = ClassificationConfig()
    bench: BenchConfig = BenchConfig()
    host: HostConfig | None = None
    mcp: McpConfig = McpConfig()

    @model_validator(mode="after")
    def _workers(self) -> Config:
        pg = self.postgres
        # Each worker is a process with its own memory: one agent's context and posture
        # need the shared store. The audit log may be either store: SQLite appenders of
        # one file take turns (BEGIN IMMEDIATE), as PostgreSQL's do.
        if pg is not None and pg.workers > 1 and self.state.store == "memory":
            raise ValueError(
                'postgres.workers > 1 needs [state] store = "redis://...": with the '
                "in-memory store each worker would see its own context and posture"
            )
        return self

    @classmethod
    def embedded(cls) -> Config:
        """The defaults `interlock up` runs with when there is no config file: everything
        that needs no upstream, on loopback (`interlock init` writes the same as a file).
        Postgres and SSH need an upstream, so they stay off."""
        return cls(admin=AdminConfig(), http=HttpConfig(), extauthz=ExtAuthzConfig())

    def modes(self) -> Modes:
        """The enforce/shadow settings, keyed as the PDP resolves them (by the action's
        protocol; `mcp` follows `[mcp]`, else `[http]`; `envoy` follows `[extauthz]`)."""
        mcp = ("[mcp] mode", self.mcp.mode) if self.mcp.mode else ("[http] mode", None)
        per_proxy = {
            "http": ("[http] mode", self.http and self.http.mode),
            "mcp": (mcp[0], mcp[1] or (self.http and self.http.mode)),
            "postgres": ("[postgres] mode", self.postgres and self.postgres.mode),
            "ssh": ("[ssh] mode", self.ssh and self.ssh.mode),
            "envoy": ("[extauthz] enforcement", self.extauthz and self.extauthz.enforcement),
        }
        return Modes(
            Mode(self.policy.mode),
            {p: (Mode(m), key) for p, (key, m) in per_proxy.items() if m},
            {name: Mode(a.mode) for name, a in self.agents.items() if a.mode},
        )


def _format(error: ValidationError, source: str) -> str:
    lines = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a decoded TOML document; raise ConfigError naming each bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format(exc, source)) from None


def load_config(path: Path | str) -> Config:
    """Read and validate a TOML file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_config(data, str(path))
