"""Vault / OpenBao over hvac: the few calls interlock makes, each bounded and fail-closed.

hvac is synchronous (requests), so every call runs in a worker thread with the
configured timeout. Every failure (unreachable, sealed, forbidden, malformed answer)
becomes `CredentialError` with a message safe to show a client: the caller denies the
action. Tokens and secrets never appear in messages or logs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from interlock.config import CredentialsConfig

log = logging.getLogger(__name__)
T = TypeVar("T")


class CredentialError(Exception):
    """Vault could not give what was asked (the action is denied with this message)."""


class VaultUnavailable(CredentialError):
    """Vault could not be asked at all (unreachable, timed out, sealed): the only failure
    a configured static fallback covers. A refusal (revoked token, no policy) is not."""


@dataclass(frozen=True, slots=True)
class Issued:
    """Dynamic credentials and the lease they live under."""

    username: str
    password: str
    lease_id: str
    lease_seconds: float
    renewable: bool


def _error(exc: BaseException) -> CredentialError:
    unavailable = (
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        hvac.exceptions.VaultDown,
        TimeoutError,
    )
    cls = VaultUnavailable if isinstance(exc, unavailable) else CredentialError
    return cls(_describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return "Vault unreachable"
    if isinstance(exc, hvac.exceptions.Forbidden):
        return "Vault refused (permission denied)"
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return "Vault: no such path or role"
    if isinstance(exc, hvac.exceptions.VaultDown):
        return "Vault is sealed or down"
    if isinstance(exc, hvac.exceptions.VaultError):
        return f"Vault error ({type(exc).__name__})"
    if isinstance(exc, TimeoutError):
        return "Vault did not answer in time"
    return f"Vault call failed ({type(exc).__name__})"


def _late(abandoned: Callable[[Any], None], future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        abandoned(future.result())


class Vault:
    def __init__(self, config: CredentialsConfig) -> None:
        self.config = config
        self._client = hvac.Client(
            url=config.address,
            timeout=config.timeout,
            namespace=config.namespace,
            verify=str(config.ca_cert) if config.ca_cert else True,
        )
        # No proxy, CA bundle or .netrc from the environment: only what the config says.
        self._client.session.trust_env = False
        self._lock = asyncio.Lock()
        self._logged_in = False
        # Vault's own threads: a hung Vault fills these, not the loop's default executor
        # (which resolves names and encodes the audit log for every proxy).
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="vault")

    async def _call(
        self,
        fn: Callable[..., T],
        *args: Any,
        abandoned: Callable[[Any], None] | None = None,
        **kw: Any,
    ) -> T:
        await self._login()
        try:
            return await self._run(fn, *args, abandoned=abandoned, **kw)
        except hvac.exceptions.Forbidden:
            if self.config.approle_role_id is None:
                raise _error(hvac.exceptions.Forbidden()) from None
            # An AppRole token may have expired: log in again once, then retry.
            self._logged_in = False
            await self._login()
            try:
                return await self._run(fn, *args, abandoned=abandoned, **kw)
            except Exception as exc:
                raise _error(exc) from None
        except CredentialError:
            raise
        except Exception as exc:
            raise _error(exc) from None

    async def _run(
        self,
        fn: Callable[..., T],
        *args: Any,
        abandoned: Callable[[Any], None] | None = None,
        **kw: Any,
    ) -> T:
        """`fn` in a Vault thread, waited for at most `timeout` (+1 s). The thread cannot
        be stopped: when the wait ends first (timeout, or the caller was cancelled),
        what it returns later goes to `abandoned` (credentials issued after nobody
        waited for them must still be revoked)."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, functools.partial(fn, *args, **kw))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.config.timeout + 1.0)
        except (TimeoutError, asyncio.CancelledError):
            if abandoned is not None:
                future.add_done_callback(functools.partial(_late, abandoned))
            raise

    async def _login(self) -> None:
        if self._logged_in:
            return
        async with self._lock:
            if self._logged_in:
                return
            cfg = self.config
            try:
                if cfg.token:
                    self._client.token = cfg.token
                elif cfg.token_file:
                    self._client.token = cfg.token_file.read_text().strip()
                else:
                    assert cfg.approle_role_id is not None
                    assert cfg.approle_secret_id_file is not None
                    secret_id = cfg.approle_secret_id_file.read_text().strip()
                    await self._run(self._client.auth.approle.login, cfg.approle_role_id, secret_id)
            except OSError as exc:
                raise CredentialError(f"Vault credentials unreadable: {exc.strerror}") from None
            except Exception as exc:
                err = _error(exc)
                raise type(err)(f"Vault login failed: {err}") from None
            self._logged_in = True

    async def database_credentials(self, mount: str, role: str) -> Issued:
        resp = await self._call(
            self._client.secrets.database.generate_credentials,
            name=role,
            mount_point=mount,
            abandoned=self._revoke_abandoned,
        )
        try:
            data = resp["data"]
            return Issued(
                str(data["username"]),
                str(data["password"]),
                str(resp["lease_id"]),
                float(resp.get("lease_duration") or 0),
                bool(resp.get("renewable")),
            )
        except (KeyError, TypeError, ValueError):
            raise CredentialError("Vault answered without credentials") from None

    async def renew_token(self) -> None:
        """Keep interlock's own token alive: Vault revokes a token's leases with it."""
        await self._call(self._client.auth.token.renew_self)

    def _revoke_abandoned(self, resp: Any) -> None:
        """Credentials Vault issued after the wait for them ended: revoke them at once."""
        lease_id = resp.get("lease_id") if isinstance(resp, dict) else None
        if isinstance(lease_id, str) and lease_id:
            log.warning("revoking credentials that arrived after their login gave up")
            self._pool.submit(self._client.sys.revoke_lease, lease_id)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def revoke(self, lease_id: str) -> None:
        await self._call(self._client.sys.revoke_lease, lease_id)

    async def renew(self, lease_id: str, increment: int | None = None) -> float:
        resp = await self._call(self._client.sys.renew_lease, lease_id, increment)
        try:
            return float(resp.get("lease_duration") or 0)
        except (TypeError, ValueError, AttributeError):
            raise CredentialError("Vault answered a renewal without a duration") from None

    async def sign_ssh_key(
        self, mount: str, role: str, public_key: str, user: str, ttl: str
    ) -> str:
        resp = await self._call(
            self._client.secrets.ssh.sign_ssh_key,
            name=role,
            public_key=public_key,
            valid_principals=user,
            ttl=ttl,
            cert_type="user",
            mount_point=mount,
        )
        try:
            return str(resp["data"]["signed_key"]).strip()
        except (KeyError, TypeError):
            raise CredentialError("Vault answered without a signed key") from None

    async def read_secret(self, reference: str) -> str:
        """`<kv v2 mount>/<path>#<key>` -> the value."""
        location, _, key = reference.partition("#")
        mount, _, path = location.partition("/")
        resp = await self._call(
            self._client.secrets.kv.v2.read_secret_version,
            path=path,
            mount_point=mount,
            raise_on_deleted_version=True,
        )
        try:
            value = resp["data"]["data"][key]
        except (KeyError, TypeError):
            raise CredentialError(f"Vault: no key {key!r} at {location}") from None
        if not isinstance(value, str) or not value:
            raise CredentialError(f"Vault: {location}#{key} is not a non-empty string")
        return value
