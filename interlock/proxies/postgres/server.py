"""The asyncio driver of the PostgreSQL proxy: accept, authenticate, relay, and answer
what each session's sans-IO core asks for.

Everything a client's messages make the proxy decide or rewrite is in `session.py`
(client to server) and `relay.py` (server to client), without sockets; here are the
logins, the sockets, the PDP, holds, cancels, posture changes and credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import ssl
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from interlock.approvals.holds import Holds
from interlock.approvals.request import Verdict
from interlock.classify.sql import Catalog, SqlClassifier
from interlock.config import AgentConfig, PostgresConfig
from interlock.core.context import Posture
from interlock.core.dataflow import value_fingerprints
from interlock.core.engine import CompiledPolicy
from interlock.core.model import Action, Agent, Decision, Operation
from interlock.core.modes import Mode
from interlock.core.pdp import PDP
from interlock.core.refusal import (
    UNRECORDED,
    FloodLimit,
    client_address,
    guard_action,
    posture_parents,
)
from interlock.credentials.broker import Broker, CredentialError
from interlock.credentials.leases import Lease
from interlock.errors import StateError
from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres import upstream as up
from interlock.proxies.postgres.codec import (
    FrontendReader,
    ProtocolError,
)
from interlock.proxies.postgres.discovery import Snapshot, snapshot
from interlock.proxies.postgres.relay import Downstream
from interlock.proxies.postgres.results import (
    ResultTracker,
)
from interlock.proxies.postgres.scram import MECHANISM, ScramError, ScramServer, Verifier
from interlock.proxies.postgres.session import (
    CopyAnswered,
    Decide,
    Need,
    PostureNow,
    Refuse,
    Session,
    Settle,
    drive,
    explain,
)
from interlock.proxies.postgres.workers import Slot, parse_cancel, relay_cancel

log = logging.getLogger(__name__)

ALLOWED_STARTUP = frozenset(
    {
        "database",
        "application_name",
        "client_encoding",
        "DateStyle",
        "TimeZone",
        "extra_float_digits",
        "IntervalStyle",
    }
)
"""Startup parameters passed upstream. `options` (which can set any setting, `role`
included) and `replication` are refused outright."""
REFUSED_STARTUP = frozenset({"options", "replication"})
READ_CHUNK = 256 * 1024
FINGERPRINT_TTL_S = 3600.0
"""How long values read under a label are recognised in what the agent sends out."""
UNAVAILABLE = "57P03"
"""cannot_connect_now: a login refused because a dependency (the state store) is down;
pools and drivers treat it as worth retrying."""
GONE_POLL_S = 0.2
"""How often a held statement checks that its client is still there."""


class _LoginAbandoned(Exception):
    """The login ended early; the client has been told why."""


@dataclass
class _Session:
    """A logged-in client's session: its sans-IO core (`session.Session`) and the
    sockets, credentials and key the driver holds for it."""

    core: Session
    client_writer: asyncio.StreamWriter
    conn: up.Connection
    pid: int
    key: int
    closed: bool = False
    lease: Lease | None = None
    """The dynamic credentials this session logged in upstream with (revoked at its end)."""
    client_reader: asyncio.StreamReader | None = None
    """Watched while a statement is held: a client that went away withdraws it."""
    progressed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever the server's side moved on (a read relayed, or the connection gone):
    what `Settle` waits on."""
    server_gone: bool = False
    """The server's side has ended: nothing more will come from it."""

    @property
    def agent(self) -> Agent:
        return self.core.agent

    @property
    def database(self) -> str:
        return self.core.database


class PostgresProxy:
    """Serves one listener; every connection runs on the PDP's loop."""

    def __init__(
        self,
        config: PostgresConfig,
        agents: Mapping[str, AgentConfig],
        pdp: PDP,
        classifier: SqlClassifier,
        holds: Holds | None = None,
        credentials: Broker | None = None,
        slot: Slot | None = None,
    ) -> None:
        self.config = config
        self.slot = slot
        """Which of several worker processes this is (`[postgres] workers`), or None."""
        self._cancels: asyncio.Server | None = None
        self.holds = holds or Holds()
        self.credentials = credentials if credentials and credentials.config.postgres else None
        """Vault: each session logs in upstream with its own dynamic role."""
        self.pdp = pdp
        self.classifier = classifier
        self.upstream = up.Upstream.parse(config.upstream)
        self.agents: dict[str, AgentConfig] = {}
        self.verifiers: dict[str, Verifier] = {}
        self._sessions: dict[tuple[int, int], _Session] = {}
        self._clients = 0
        """Connections that sent a StartupMessage and have not ended (`max_client_conn`)."""
        self.flood = FloodLimit(pdp, "postgres")
        """Refusals before authentication, audited at most once a second per address."""
        self.use_agents(agents)
        self._server: asyncio.Server | None = None
        self.client_tls = _server_context(config)
        self.upstream_tls = _client_context(config)
        self._unsubscribe = pdp.store.subscribe(self._posture_changed)
        self._tasks: set[asyncio.Task[None]] = set()
        self.address: tuple[str, int] | None = None
        self._configured = dict(classifier.catalog.labels)
        self._snapshots: dict[str, Snapshot] = {}
        self._logins: dict[str, up.Upstream] = {}
        """The login each database's catalog was last read with (refreshes reuse it)."""
        self._loading: dict[str, asyncio.Lock] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.catalog(self.upstream)
        except Exception as exc:
            if self.config.discover_labels:
                raise
            # Read again at the first login (which fails closed until it can be).
            log.warning("postgres proxy: cannot read the database catalog yet: %s", exc)
        host, _, port = self.config.listen.rpartition(":")
        if self.slot is not None and self.slot.index == 0 and int(port) != 0:
            # With SO_REUSEPORT a second `interlock up` would share the port silently
            # (connections split, cancels lost): the first worker binds alone first.
            probe = socket.create_server((host.strip("[]"), int(port)))
            probe.close()
        self._server = await asyncio.start_server(
            self._handle, host.strip("[]"), int(port), reuse_port=self.slot is not None
        )
        if self.slot is not None:
            address = self.slot.address(self.slot.index)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)  # left by this worker's predecessor, killed
            self._cancels = await asyncio.start_unix_server(self._relayed_cancel, address)
        sock = self._server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])
        self.flood.start()
        if self.config.catalog_refresh > 0:
            self._refresher = asyncio.get_running_loop().create_task(self._refresh_loop())

    # --- what the proxy knows of each database ------------------------------------------

    async def catalog(self, login: up.Upstream, reload: bool = False) -> Snapshot:
        """The catalog of `login.database` (labels, their columns' OIDs, functions), read
        once with that login and then every `catalog_refresh` seconds."""
        database = login.database
        self._logins[database] = login  # the newest login: dynamic ones expire
        found = self._snapshots.get(database)
        if found is not None and not reload:
            return found
        lock = self._loading.setdefault(database, asyncio.Lock())
        async with lock:
            found = self._snapshots.get(database)
            if found is not None and not reload:
                return found
            snap = await snapshot(
                {
                    "host": login.host,
                    "port": login.port,
                    "user": login.user,
                    "password": login.password,
                    "database": database,
                },
                self.upstream_tls,
                self._configured,
                self.config.discover_labels,
            )
            if found != snap:
                self._use(database, snap)
            return snap

    def _use(self, database: str, snap: Snapshot) -> None:
        self._snapshots[database] = snap
        for session in self._sessions.values():
            if session.database == database:
                session.core.results.origins = snap.origins
                session.core.results.relations = snap.relations
        if database == self.upstream.database:
            self.classifier.use_catalog(Catalog(snap.labels, snap.routines, routines_known=True))

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.catalog_refresh)
            for database, login in list(self._logins.items()):
                try:
                    await self.catalog(login, reload=True)
                except Exception as exc:
                    log.warning("postgres proxy: catalog of %s not refreshed: %s", database, exc)

    def use_agents(self, agents: Mapping[str, AgentConfig]) -> None:
        self.prepare_agents(agents)()

    def prepare_agents(self, agents: Mapping[str, AgentConfig]) -> Callable[[], None]:
        """The agents who may log in (start-up and SIGHUP), in two steps so a reload can
        check every proxy's part before changing any: this builds (and may raise on a bad
        SCRAM verifier), the returned function applies. Applying ends the sessions of an
        agent that is gone or whose secret, roles or owner changed: what they were
        decided with no longer holds."""
        before = dict(self.agents)
        verifiers: dict[str, Verifier] = {}
        for name, a in agents.items():
            old = before.get(name)
            if old is not None and _secret(old) == _secret(a) and name in self.verifiers:
                verifiers[name] = self.verifiers[name]  # a login in progress stays valid
            elif a.postgres_scram:
                verifiers[name] = Verifier.parse(a.postgres_scram)
            elif a.token:
                verifiers[name] = Verifier.from_password(a.token)

        def apply() -> None:
            self.agents, self.verifiers = dict(agents), verifiers
            for session in list(self._sessions.values()):
                old, new = before.get(session.agent.id), agents.get(session.agent.id)
                if new is None or old is None or _decided_by(new) != _decided_by(old):
                    self._end(session, "agent removed or changed", "28000")

        return apply

    def open_sessions(self) -> int:
        return len(self._sessions)

    async def stop(self) -> None:
        self._unsubscribe()
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for server in (self._server, self._cancels):
            if server is not None:
                server.close()
                await server.wait_closed()
        for session in list(self._sessions.values()):
            await self._terminate(session, "the proxy is shutting down", "57P01")
        await self.flood.stop()

    # --- connection set-up ---------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session: _Session | None = None
        counted: list[bool] = []
        try:
            session = await asyncio.wait_for(
                self._login(reader, writer, counted), self.config.login_timeout
            )
            if session is not None:
                await self._relay(reader, session)
        except TimeoutError:
            await self._refuse(writer, session, "login timed out", "08006")
        except ProtocolError as exc:
            await self._refuse(writer, session, f"protocol violation: {exc}", "08P01")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("postgres proxy connection failed")
            await self._refuse(writer, session, "internal error in the proxy", "XX000")
        finally:
            if counted:
                self._clients -= 1
            if session is not None:
                self._sessions.pop((session.pid, session.key), None)
                session.conn.writer.close()
                if session.lease is not None and self.credentials is not None:
                    await self.credentials.release(session.lease)
            writer.close()

    async def _read_message(
        self, reader: asyncio.StreamReader, frontend: FrontendReader
    ) -> m.Message:
        while (msg := frontend.next()) is None:
            data = await reader.read(READ_CHUNK)
            if not data:
                raise ConnectionError("client went away")
            frontend.feed(data)
        return msg

    async def _login(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, counted: list[bool]
    ) -> _Session | None:
        """The session of a client that logged in (None: it was refused, or it only sent a
        cancel request). `counted` gets an entry once it counts against max_client_conn."""
        frontend = FrontendReader(self.config.max_message_bytes)
        encrypted = False
        while True:
            msg = await self._read_message(reader, frontend)
            if isinstance(msg, m.SSLRequest) and self.client_tls is not None:
                if frontend.buffered:
                    # Bytes after SSLRequest arrived in the clear: a downgrade attempt.
                    raise ProtocolError("data after SSLRequest before the TLS handshake")
                writer.write(b"S")
                await writer.drain()
                await writer.start_tls(self.client_tls)
                encrypted = True
                continue
            if isinstance(msg, (m.SSLRequest, m.GSSENCRequest)):
                writer.write(b"N")
                await writer.drain()
                continue
            if isinstance(msg, m.CancelRequest):
                await self._cancel(msg)
                return None
            if isinstance(msg, m.StartupMessage):
                break
            raise ProtocolError("expected a startup packet")
        if self._clients >= self.config.max_client_conn:
            why = f"too many client connections (max_client_conn {self.config.max_client_conn})"
            details = {"user": msg.params["user"][:128], "shed": True}
            await self._refuse_anonymous(writer, msg.params.get("database"), details, why, "53300")
            return None
        self._clients += 1
        counted.append(True)
        params = msg.params
        user = params["user"]
        if self.config.require_tls and not encrypted:
            why = "this proxy requires TLS (sslmode=require)"
            await self._refuse_login(writer, user, params, why, "28000", authenticated=False)
            return None
        refused = REFUSED_STARTUP & set(params)
        if refused:
            why = f"startup parameter {sorted(refused)[0]} is not allowed"
            await self._refuse_login(writer, user, params, why, "08004", authenticated=False)
            return None
        verifier = self.verifiers.get(user) or Verifier.from_password(secrets.token_hex(16))
        if not await self._authenticate(reader, writer, frontend, verifier) or (
            user not in self.verifiers
        ):
            why = f'password authentication failed for user "{user}"'
            await self._refuse_login(writer, user, params, why, "28P01", authenticated=False)
            return None
        try:
            posture = await self.pdp.store.posture(user, self.pdp.clock())
        except StateError as exc:
            await self._refuse_login(writer, user, params, str(exc), UNAVAILABLE)
            return None
        if posture.isolated:
            parents = posture_parents(posture)
            await self._refuse_login(writer, user, params, "agent is isolated", "42501", parents)
            return None
        forward = {k: v for k, v in params.items() if k in ALLOWED_STARTUP}
        encoding = forward.get("client_encoding", "UTF8")
        if encoding.strip("'\" ").replace("-", "").replace("_", "").lower() not in (
            "utf8",
            "unicode",
        ):
            # In SJIS, BIG5, GBK, ... a backslash can be the second byte of a character:
            # the server would read E'' strings differently from the proxy.
            why = f"interlock reads SQL as UTF-8: client_encoding {encoding!r} is not accepted"
            await self._refuse_login(writer, user, params, why, "08004")
            return None
        forward["client_encoding"] = "UTF8"
        upstream, lease = self.upstream, None
        revoked: list[str] = []
        """Why its credentials were revoked, if that happens before the session exists."""
        holder: list[_Session] = []
        if self.credentials is not None:
            try:
                login = await self.credentials.database_login(
                    user,
                    "read_only" in posture.restrictions,
                    lambda reason: self._end_for_credentials(holder, revoked, reason),
                )
            except CredentialError as exc:
                why = f"no database credentials: {exc}"
                await self._refuse_login(writer, user, params, why, "08006")
                return None
            if login is not None:
                upstream = replace(upstream, user=login.username, password=login.password)
                lease = login.lease
        conn: up.Connection | None = None
        try:
            try:
                conn = await up.connect(upstream, forward, self.upstream_tls)
            except up.UpstreamError as exc:
                await self._refuse_login(writer, user, params, str(exc), "08006")
                raise _LoginAbandoned from None
            reading = {p.name: p.value for p in conn.parameters}
            if reading.get("standard_conforming_strings") != "on":
                # The classifier reads '...\' as the server does only when it is on.
                why = (
                    "the database has standard_conforming_strings off; "
                    "the proxy reads SQL only as PostgreSQL does with it on"
                )
                await self._refuse_login(writer, user, params, why, "08006")
                raise _LoginAbandoned
            database = forward.get("database", self.upstream.database)
            try:
                snap = await self.catalog(replace(upstream, database=database))
            except Exception as exc:
                why = f"cannot read the catalog of {database}: {exc}"
                await self._refuse_login(writer, user, params, why, "08006")
                raise _LoginAbandoned from None
            entry = self.agents.get(user)
            if entry is None or self.verifiers.get(user) is not verifier:
                # SIGHUP removed the agent or changed its secret while it logged in.
                why = "the agent's configuration changed"
                await self._refuse_login(writer, user, params, why, "28000")
                raise _LoginAbandoned
            agent = Agent(user, tuple(entry.roles), entry.owner, (), "token")
            # The real backend pid (what pg_backend_pid() says, what pg_stat_activity and
            # pg_terminate_backend know), with the proxy's own key: the server's key never
            # leaves the proxy, so a cancel must come through it.
            pid, key = conn.pid, self._new_key(conn.pid)
            core = Session(
                agent,
                database,
                Downstream(
                    ResultTracker(snap.origins, snap.relations), {}, conn.status, conn.backend
                ),
                self.classifier.classify,
                self._stamp,
                max_message=self.config.max_message_bytes,
                read_only="read_only" in posture.restrictions,
            )
            session = _Session(core, writer, conn, pid, key, lease=lease, client_reader=reader)
            out = [m.Authentication(0).encode()]
            out += [p.encode() for p in conn.parameters]
            out += [m.BackendKeyData(pid, key).encode(), m.ReadyForQuery(conn.status).encode()]
            writer.write(b"".join(out))
            await writer.drain()
            if revoked:
                await self._refuse_login(writer, user, params, revoked[0], "57P01")
                raise _LoginAbandoned
        except BaseException as exc:
            # Timed out, reset, refused or revoked mid-login: nothing of it may linger,
            # least of all credentials that would be renewed for a session that is gone.
            if conn is not None:
                conn.writer.close()
            if lease is not None and self.credentials is not None:
                await asyncio.shield(self.credentials.release(lease))
            if isinstance(exc, _LoginAbandoned):
                return None
            raise
        holder.append(session)
        self._sessions[(pid, key)] = session
        return session

    async def _refuse_login(
        self,
        writer: asyncio.StreamWriter,
        user: str,
        params: Mapping[str, str],
        reason: str,
        code: str,
        parents: tuple[str, ...] = (),
        *,
        authenticated: bool = True,
    ) -> None:
        """A refused login: denied, audited, and told with the id. Before authentication
        it is recorded under `anonymous`, with the user it claimed in details, under the
        flood limit (`_refuse_anonymous`)."""
        if not authenticated:
            details = {"user": user[:128]}
            await self._refuse_anonymous(writer, params.get("database"), details, reason, code)
            return
        known = self.agents.get(user)
        who = Agent(user, tuple(known.roles), known.owner, (), "token") if known else None
        db = params.get("database", self.upstream.database)
        details = {"database": db, "user": user[:128]}
        attempt = guard_action(who, "postgres", Operation.CONNECT, db, details, parents)
        refused = await self.pdp.refuse(attempt, reason)
        await self._fatal(writer, f"interlock: {explain(refused)}", code)

    async def _refuse(
        self, writer: asyncio.StreamWriter, session: _Session | None, reason: str, code: str
    ) -> None:
        """A connection ended by a guard outside the login's own checks (its deadline, a
        protocol violation, an internal error): audited too, under the flood limit when
        no session had been opened."""
        if session is None:
            await self._refuse_anonymous(writer, None, {}, reason, code)
            return
        target = session.database
        details = {"database": target}
        action = guard_action(session.agent, "postgres", Operation.CONNECT, target, details)
        refused = await self.pdp.refuse(action, reason)
        await self._fatal(writer, f"interlock: {explain(refused)}", code)

    async def _refuse_anonymous(
        self,
        writer: asyncio.StreamWriter,
        database: str | None,
        details: Mapping[str, Any],
        reason: str,
        code: str,
    ) -> None:
        """A refusal anyone can cause without credentials (a login past max_client_conn,
        failed authentication, a deadline or protocol violation before login): recorded
        under `anonymous` at most once a second per client address, with the number
        refused since the last record; a client refused in between is told so instead
        of an id."""
        client = client_address(writer.get_extra_info("peername"))
        suppressed = self.flood.take(client)
        if suppressed is None:
            await self._fatal(writer, f"interlock: {reason} ({UNRECORDED})", code)
            return
        db = database or self.upstream.database
        noted = {"database": db, **details, "client": client}
        noted["suppressed_since_last"] = suppressed
        attempt = guard_action(None, "postgres", Operation.CONNECT, db, noted)
        refused = await self.pdp.refuse(attempt, reason)
        await self._fatal(writer, f"interlock: {explain(refused)}", code)

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        frontend: FrontendReader,
        verifier: Verifier,
    ) -> bool:
        writer.write(m.Authentication(10, m.cstr(MECHANISM) + b"\0").encode())
        await writer.drain()
        server = ScramServer(verifier)
        try:
            first = await self._read_message(reader, frontend)
            if not isinstance(first, m.AuthResponse):
                raise ProtocolError("expected SASLInitialResponse")
            body = first.body
            mech, _, rest = body.partition(b"\0")
            if mech.decode("latin-1") != MECHANISM or len(rest) < 4:
                return False
            (length,) = struct.unpack("!i", rest[:4])
            if length != len(rest) - 4:
                raise ProtocolError("SASLInitialResponse length mismatch")
            writer.write(m.Authentication(11, server.first(rest[4:])).encode())
            await writer.drain()
            final = await self._read_message(reader, frontend)
            if not isinstance(final, m.AuthResponse):
                raise ProtocolError("expected SASLResponse")
            writer.write(m.Authentication(12, server.final(final.body)).encode())
            return True
        except ScramError:
            return False

    def _stamp(self, action: Action) -> tuple[CompiledPolicy, Mode]:
        """What a decision about to be made for `action` rests on (`session.Stamp`)."""
        return self.pdp.policy.current, self.pdp.mode(action)[0]

    def _new_key(self, pid: int) -> int:
        while True:
            key = self.slot.new_key() if self.slot else int.from_bytes(os.urandom(4), "big")
            if (pid, key) not in self._sessions:
                return key

    async def _cancel(self, msg: m.CancelRequest, relayed: bool = False) -> None:
        """Forward a cancel for one of this process's sessions with the server's key; one
        for another worker's (its key says which) goes to that worker; any other key is
        ignored, as the server ignores one it does not know."""
        target = self._sessions.get((msg.pid, msg.key))
        if target is not None:
            await up.cancel(self.upstream, target.conn.pid, target.conn.key)
        elif self.slot is not None and not relayed:
            owner = self.slot.owner(msg.key)
            if owner != self.slot.index:
                await relay_cancel(self.slot.address(owner), msg)

    async def _relayed_cancel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A cancel another worker received for a session of this one: the socket takes
        nothing else (16 bytes, a CancelRequest), and relays nothing further."""
        try:
            msg = parse_cancel(await asyncio.wait_for(reader.readexactly(16), 5))
            if msg is not None:
                await self._cancel(msg, relayed=True)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    # --- relaying --------------------------------------------------------------------

    async def _relay(self, reader: asyncio.StreamReader, session: _Session) -> None:
        down = asyncio.create_task(self._downstream(session))
        try:
            await self._upstream_loop(reader, session)
        finally:
            down.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await down

    async def _upstream_loop(self, reader: asyncio.StreamReader, session: _Session) -> None:
        core = session.core
        while not session.closed:
            data = await reader.read(READ_CHUNK)
            if not data:
                return
            out, ended = await drive(core.receive(data), partial(self._answer, session))
            session.conn.writer.write(out)
            if ended:
                return
            await session.conn.writer.drain()

    async def _answer(self, session: _Session, need: Need) -> object:
        if isinstance(need, Decide):
            return await self.pdp.decide(need.action)
        if isinstance(need, PostureNow):
            return await self.pdp.store.posture(need.agent_id, self.pdp.clock())
        if isinstance(need, Refuse):
            return await self.pdp.refuse(need.action, need.reason)
        if isinstance(need, Settle):
            down = session.core.downstream
            await self._wait_server(session, need.flush, lambda: down.readies >= need.batch)
            return None
        if isinstance(need, CopyAnswered):
            core = session.core
            await self._wait_server(session, need.flush, lambda: not core._copy_unanswered())
            return None
        return await self._held(session, need.decision, need.action, need.sql)

    async def _wait_server(self, session: _Session, flush: bytes, done: Callable[[], bool]) -> None:
        """Send what came before, then wait until the server's answers make `done` true
        (it answers in order, so this costs at most the time the work takes anyway). A
        client that goes away meanwhile ends the wait, and what the server is doing for
        it is cancelled: nothing reads its socket now, and a session left waiting would
        keep its transaction and its locks (a backend waiting on a lock does not notice
        its connection close)."""
        if flush:
            session.conn.writer.write(flush)
            await session.conn.writer.drain()
        while not (done() or session.closed or session.server_gone):
            if _closed(session.client_reader):
                with contextlib.suppress(Exception):
                    await up.cancel(self.upstream, session.conn.pid, session.conn.key)
                raise ConnectionError("client went away while its session waited for the server")
            session.progressed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.progressed.wait(), GONE_POLL_S)

    async def _held(
        self, session: _Session, decision: Decision, action: Action, sql: str
    ) -> Verdict:
        """The approval verdict; a client that goes away meanwhile withdraws the request
        (nothing reads its socket while the statement waits, so it is watched here)."""
        waiting = asyncio.ensure_future(
            self.holds.wait(decision, self.config.approval_timeout, action, sql)
        )
        gone = asyncio.ensure_future(_client_gone(session.client_reader))
        try:
            await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not waiting.done():
                waiting.cancel()  # the hold records itself as withdrawn
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
        if waiting.cancelled():
            raise ConnectionError("client went away while its statement was held")
        return waiting.result()

    async def _remember_values(
        self, session: _Session, seen: list[tuple[str, frozenset[str], bytes]]
    ) -> None:
        """Fingerprints of the labelled values the agent just received, so they are
        recognised if they leave through another proxy (core/dataflow.py)."""
        by_source: dict[tuple[str, frozenset[str]], list[str]] = {}
        for decision_id, labels, raw in seen:
            try:
                by_source.setdefault((decision_id, labels), []).append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                continue  # binary-format values do not travel as text
        until = self.pdp.clock() + FINGERPRINT_TTL_S
        try:
            for (decision_id, labels), values in by_source.items():
                await self.pdp.store.add_fingerprints(
                    session.agent.id, decision_id, labels, value_fingerprints(values), until
                )
        except StateError as exc:
            log.warning("labelled values for agent %s not remembered: %s", session.agent.id, exc)
        except Exception:
            log.exception("could not remember labelled values for agent %s", session.agent.id)

    async def _downstream(self, session: _Session) -> None:
        conn = session.conn
        writer = session.client_writer
        core = session.core
        results = core.results
        try:
            while True:
                data = await conn.reader.read(READ_CHUNK)
                if not data:
                    break
                out, wall_failed = core.from_server(data)
                for why in wall_failed:
                    log.warning("postgres proxy: read-only wall for %s: %s", session.agent.id, why)
                if results.seen:
                    # Remembered before the client has them.
                    await self._remember_values(session, results.take_seen())
                if out:
                    writer.write(out)
                    await writer.drain()
                session.progressed.set()
        except (ConnectionError, ProtocolError):
            pass
        finally:
            session.server_gone = True
            session.progressed.set()  # a Bind waiting for the server gives up
        if not session.closed:
            await self._fatal(writer, "the database closed the connection", "08006")
            session.closed = True
            with contextlib.suppress(Exception):
                writer.close()

    # --- posture and termination ------------------------------------------------------

    def _posture_changed(self, agent_id: str, posture: Posture) -> None:
        read_only = "read_only" in posture.restrictions
        for session in [s for s in self._sessions.values() if s.agent.id == agent_id]:
            if posture.isolated:
                self._end(session, "agent is isolated", "42501", posture_parents(posture))
            elif session.core.read_only != read_only:
                session.core.read_only = read_only
                self._tell_upstream(session)

    def _tell_upstream(self, session: _Session) -> None:
        """Apply a posture change to the upstream session now if it is idle (the next
        client message would do it otherwise)."""
        wall = session.core.wall()
        if wall and not session.closed:
            session.conn.writer.write(wall)

    def _end_for_credentials(self, sessions: list[_Session], early: list[str], reason: str) -> None:
        """Its lease was revoked (rotation, isolation, expiry): end the session, or, when
        it does not exist yet, make its login fail."""
        early.append(reason)
        for session in sessions:
            self._end(session, reason, "57P01")

    def _end(
        self, session: _Session, reason: str, code: str, parents: tuple[str, ...] = ()
    ) -> None:
        """`_terminate` in the background (from callbacks that cannot await)."""
        task = asyncio.get_running_loop().create_task(
            self._terminate(session, reason, code, parents)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _terminate(
        self, session: _Session, reason: str, code: str, parents: tuple[str, ...] = ()
    ) -> None:
        """End an open session (isolation, revoked credentials): the upstream first, then
        the record of the ending (a child of the decision that caused it), then the client
        is told its id."""
        if session.closed:
            return
        session.closed = True
        with contextlib.suppress(Exception):
            await up.cancel(self.upstream, session.conn.pid, session.conn.key)
        session.conn.writer.close()
        details = {"database": session.database, "session": "ended"}
        action = guard_action(
            session.agent, "postgres", Operation.CONNECT, session.database, details, parents
        )
        ended = await self.pdp.refuse(action, f"session ended: {reason}")
        await self._fatal(session.client_writer, f"interlock: {explain(ended)}", code)
        session.client_writer.close()

    @staticmethod
    async def _fatal(writer: asyncio.StreamWriter, message: str, code: str) -> None:
        with contextlib.suppress(Exception):
            writer.write(m.error(message, code, "FATAL").encode())
            await writer.drain()


async def _client_gone(reader: asyncio.StreamReader | None) -> None:
    """Returns once the client has closed or reset its connection. Polled: StreamReader
    has no public way to await its end without consuming what the client sent."""
    while not _closed(reader):  # noqa: ASYNC110
        await asyncio.sleep(GONE_POLL_S)


def _closed(reader: asyncio.StreamReader | None) -> bool:
    """Whether the client has closed or reset its connection, even with bytes it sent
    still unread (`at_eof` waits for those to be read; `_eof` is StreamReader's own
    record of the end, set by its protocol)."""
    if reader is None:
        return False
    return bool(getattr(reader, "_eof", False)) or reader.exception() is not None


def _server_context(config: PostgresConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.tls_cert, config.tls_key)
    return ctx


def _client_context(config: PostgresConfig) -> ssl.SSLContext | None:
    if config.upstream_tls == "disable":
        return None
    ctx = ssl.create_default_context(cafile=config.upstream_ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.upstream_tls == "require":
        # libpq's sslmode=require: encrypted, certificate not checked.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _secret(agent: AgentConfig) -> tuple[str | None, str | None, str | None]:
    return (agent.token, agent.token_sha256, agent.postgres_scram)


def _decided_by(agent: AgentConfig) -> tuple[object, ...]:
    """What a session's login and decisions rest on."""
    return (*_secret(agent), tuple(agent.roles), agent.owner)
