"""Just-in-time credentials: fetched at the moment of use, bound to one session, revoked
when it ends or the policy says so. The agent never holds them.

- Postgres: one dynamic role per client session (`database/creds/<role>`; the read-only
  role while the agent is `read_only`), renewed while the session lives, revoked when it
  closes. The proxy registers a callback per lease: revoking it ends that session.
- SSH: a key made per upstream connection, signed by the SSH secrets engine for the
  target user for minutes (certificates are not leases: they expire on their own).
- HTTP: secrets read from KV for injection, cached for `secret_cache_seconds`.

Posture drives revocation: `rotate_credentials` revokes the agent's leases (its sessions
end; the next session gets fresh credentials) and is then cleared, being a one-time
action; isolation revokes them all. On start, leases a crashed instance left in the
journal are revoked. A revocation Vault does not confirm stays in the journal and is
retried, so nothing is forgotten while Vault is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import asyncssh

from interlock.config import CredentialsConfig
from interlock.core.context import Posture, StateStore
from interlock.credentials.leases import Lease, LeaseBook
from interlock.credentials.vault import CredentialError, Issued, Vault, VaultUnavailable

log = logging.getLogger(__name__)
ROTATE = "rotate_credentials"
MAINTENANCE_S = 2.0
"""How often leases are renewed and failed revocations retried."""
TOKEN_RENEWAL_S = 300.0
"""How often interlock renews its own token (its leases die with it)."""


@dataclass
class _Live:
    lease: Lease
    issued: float
    seconds: float
    renewable: bool
    on_revoke: Callable[[str], None] | None = None
    read_only: bool = False
    """Issued for the read-only role."""


@dataclass(frozen=True, slots=True)
class DatabaseLogin:
    username: str
    password: str
    lease: Lease


class Broker:
    def __init__(
        self, config: CredentialsConfig, data_dir: Path, vault: Vault | None = None
    ) -> None:
        self.config = config
        self.vault = vault or Vault(config)
        self.book = LeaseBook(data_dir / "credentials")
        self._live: dict[str, _Live] = {}
        self._unrevoked: dict[str, Lease] = {}
        """Leases whose revocation Vault has not confirmed yet (retried)."""
        self._secrets: dict[str, tuple[str, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._store: StateStore | None = None
        self._epochs: dict[str, int] = {}
        """Per agent, bumped by every revocation of its leases: a login that saw another
        epoch before and after issuing gives its credentials back (it raced a rotation)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.revoked_on_start = 0

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, store: StateStore) -> None:
        """Revoke what a previous run left, follow posture, keep leases renewed."""
        self.book.lock()
        leftover = self.book.leftover()
        kept = []
        for lease in leftover:
            try:
                await self.vault.revoke(lease.lease_id)
                self.revoked_on_start += 1
            except CredentialError as exc:
                log.warning("could not revoke leftover lease for %s: %s", lease.agent, exc)
                kept.append(lease)
        self.book.reset(kept)
        self._unrevoked = {lease.lease_id: lease for lease in kept}
        self._store = store
        self._unsubscribe = store.subscribe(self._posture_changed)
        self._task = asyncio.create_task(self._maintain())

    async def stop(self) -> None:
        """Revoke every lease this instance holds (its sessions are ending anyway)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        held = [live.lease for live in self._live.values()]
        await self._revoke_all(held, "interlock is stopping")
        self.vault.close()
        self.book.unlock()

    # --- Postgres --------------------------------------------------------------------------

    async def database_login(
        self, agent: str, read_only: bool, on_revoke: Callable[[str], None]
    ) -> DatabaseLogin | None:
        """Fresh credentials for one session, or None when Vault is unreachable and the
        config allows the static fallback. Raises CredentialError otherwise."""
        pg = self.config.postgres
        assert pg is not None
        role = pg.read_only_role if read_only and pg.read_only_role else pg.role
        epoch = self._epochs.get(agent, 0)
        try:
            issued = await self.vault.database_credentials(pg.mount, role)
        except VaultUnavailable:
            # Only when Vault cannot be asked, and never for a read-only agent (the static
            # user would give it back the right to write). A refusal is never covered.
            if pg.static_fallback and not read_only:
                log.warning("Vault unavailable; %s logs in with the static fallback", agent)
                return None
            raise
        lease = Lease(issued.lease_id, agent, "postgres")
        if self._epochs.get(agent, 0) != epoch:
            with contextlib.suppress(CredentialError):
                await self.vault.revoke(issued.lease_id)
            raise CredentialError("credentials were revoked while logging in")
        try:
            self.book.add(lease)
        except OSError as exc:
            # Unrecorded credentials could outlive a crash: give them back, refuse.
            with contextlib.suppress(CredentialError):
                await self.vault.revoke(issued.lease_id)
            raise CredentialError(f"cannot record the lease: {exc.strerror}") from None
        self._live[lease.lease_id] = _Live(
            lease,
            time.monotonic(),
            issued.lease_seconds,
            issued.renewable,
            on_revoke,
            read_only=role == pg.read_only_role,
        )
        return DatabaseLogin(issued.username, issued.password, lease)

    def epoch(self, agent: str) -> int:
        return self._epochs.get(agent, 0)

    async def release(self, lease: Lease) -> None:
        """The session ended: revoke its lease (retried later if Vault is away)."""
        live = self._live.get(lease.lease_id)
        if live is not None:
            live.on_revoke = None
        await self._revoke(lease, None)

    # --- SSH -----------------------------------------------------------------------------

    async def ssh_login(self, user: str) -> tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
        """A new key and a short certificate for `user`, for one upstream connection."""
        ssh = self.config.ssh
        assert ssh is not None
        key = asyncssh.generate_private_key("ssh-ed25519")
        public = key.export_public_key("openssh").decode().strip()
        signed = await self.vault.sign_ssh_key(ssh.mount, ssh.role, public, user, ssh.ttl)
        try:
            cert = asyncssh.import_certificate(signed)
        except (asyncssh.KeyImportError, ValueError):
            raise CredentialError("Vault signed something that is not a certificate") from None
        return key, cert

    # --- HTTP ----------------------------------------------------------------------------

    async def secret(self, reference: str) -> str:
        cached = self._secrets.get(reference)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        value = await self.vault.read_secret(reference)
        self._secrets[reference] = (value, now + self.config.secret_cache_seconds)
        return value

    # --- revocation ------------------------------------------------------------------------

    def leases_of(self, agent: str) -> list[Lease]:
        return [live.lease for live in self._live.values() if live.lease.agent == agent]

    async def revoke_agent(
        self, agent: str, reason: str, only: Callable[[_Live], bool] | None = None
    ) -> int:
        """Revoke every lease of `agent` (or those `only` picks); their sessions are told
        (and end) first, then Vault is asked, several at a time."""
        self._epochs[agent] = self._epochs.get(agent, 0) + 1
        leases = [
            live.lease
            for live in self._live.values()
            if live.lease.agent == agent and (only is None or only(live))
        ]
        await self._revoke_all(leases, reason)
        return len(leases)

    async def _revoke_all(self, leases: list[Lease], reason: str | None) -> None:
        for lease in leases:
            self._tell(lease, reason)
        limit = asyncio.Semaphore(8)

        async def one(lease: Lease) -> None:
            async with limit:
                await self._revoke(lease, None)

        await asyncio.gather(*(one(lease) for lease in leases))

    def _tell(self, lease: Lease, reason: str | None) -> None:
        live = self._live.get(lease.lease_id)
        if live is None or live.on_revoke is None or reason is None:
            return
        callback, live.on_revoke = live.on_revoke, None
        try:
            callback(reason)
        except Exception:
            log.exception("ending the session of a revoked lease failed")

    async def _revoke(self, lease: Lease, reason: str | None) -> None:
        self._tell(lease, reason)
        self._live.pop(lease.lease_id, None)
        # Unconfirmed until Vault says so (a cancellation here leaves it to be retried).
        self._unrevoked[lease.lease_id] = lease
        try:
            await self.vault.revoke(lease.lease_id)
        except CredentialError as exc:
            log.warning("revoking a lease of %s failed (%s); will retry", lease.agent, exc)
            self._unrevoked[lease.lease_id] = lease
            return
        self._unrevoked.pop(lease.lease_id, None)
        try:
            self.book.remove(lease.lease_id)
        except OSError as exc:
            log.error("lease journal not updated (%s); revoked again on next start", exc)

    def _posture_changed(self, agent: str, posture: Posture) -> None:
        if (
            posture.isolated
            or ROTATE in posture.restrictions
            or "read_only" in posture.restrictions
        ):
            task = asyncio.get_running_loop().create_task(self._enforce(agent, posture))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(_log_failure)

    async def _enforce(self, agent: str, posture: Posture) -> None:
        if posture.isolated:
            await self.revoke_agent(agent, "agent isolated: credentials revoked")
            return
        if ROTATE not in posture.restrictions:
            # read_only: sessions on a role that can write end (the next gets the
            # read-only role), so the database enforces it too, not only the proxy.
            pg = self.config.postgres
            if pg is not None and pg.read_only_role:
                await self.revoke_agent(
                    agent, "agent is read-only now: reconnect", only=lambda live: not live.read_only
                )
            return
        await self.revoke_agent(agent, "credentials rotated")
        # One-time action: carried out, then cleared so later sessions run normally.
        assert self._store is not None
        current = await self._store.posture(agent, time.time())
        if ROTATE in current.restrictions:
            cleared = replace(current, restrictions=current.restrictions - {ROTATE})
            await self._store.set_posture(agent, cleared)

    async def _maintain(self) -> None:
        last_token_renewal = time.monotonic()
        while True:
            await asyncio.sleep(MAINTENANCE_S)
            if time.monotonic() - last_token_renewal > TOKEN_RENEWAL_S:
                last_token_renewal = time.monotonic()
                try:
                    await self.vault.renew_token()
                except CredentialError as exc:
                    # Root and periodic tokens may not be renewable; not fatal by itself.
                    log.info("interlock's Vault token was not renewed: %s", exc)
            for lease in list(self._unrevoked.values()):
                await self._revoke(lease, None)
            now = time.monotonic()
            for live in list(self._live.values()):
                if live.seconds <= 0:
                    continue
                left = live.issued + live.seconds - now
                if left <= 0:
                    # Expired: the session cannot outlive its credentials, whatever
                    # Vault's revocation statements do.
                    await self._revoke(live.lease, "credentials expired")
                    continue
                if not live.renewable or now - live.issued < live.seconds / 2:
                    continue
                try:
                    live.seconds = await self.vault.renew(live.lease.lease_id)
                    live.issued = time.monotonic()
                except VaultUnavailable:
                    continue  # keep trying until the lease runs out
                except CredentialError as exc:
                    # Gone (revoked in Vault) or refused: end the session now.
                    await self._revoke(live.lease, f"credentials could not be renewed: {exc}")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("credential revocation failed: %s", task.exception())


__all__ = ["Broker", "CredentialError", "DatabaseLogin", "Issued"]
