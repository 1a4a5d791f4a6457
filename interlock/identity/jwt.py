"""JWT agent identity: signature against a JWKS, issuer, audience, expiry, delegation.

The `act` claim (RFC 8693) nests one actor per hop: `{"sub": "b", "act": {"sub": "a"}}`
means b acts now, on behalf of a chain that passed through a. It becomes
`Agent.delegation` = ("b", "a"), nearest actor first, so policy can limit delegation depth
or refuse certain actors.

Keys come from a JWKS file or URL, cached for `jwks_cache_seconds`; a token whose `kid`
is unknown triggers one refresh (at most every 10 s), so key rotation works without
letting a flood of bogus kids hammer the identity provider.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import jwt
from jwt import PyJWK, PyJWKSet

from interlock.config import JwtConfig
from interlock.core.model import Agent
from interlock.errors import IdentityError
from interlock.identity.registry import AgentRegistry

MAX_JWKS_BYTES = 512 * 1024
MAX_TOKEN_BYTES = 16 * 1024
"""Far above any real JWT; bounds the work an unauthenticated client can ask for."""
MAX_DELEGATION = 16
MIN_REFRESH_INTERVAL = 10.0


def delegation_chain(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The `act` chain as actor ids, nearest first; raises IdentityError if malformed."""
    chain: list[str] = []
    act = claims.get("act")
    while act is not None:
        if not isinstance(act, Mapping) or not isinstance(act.get("sub"), str):
            raise IdentityError("malformed act claim")
        chain.append(act["sub"])
        if len(chain) > MAX_DELEGATION:
            raise IdentityError(f"delegation chain longer than {MAX_DELEGATION}")
        act = act.get("act")
    return tuple(chain)


class JwtVerifier:
    """Verifies bearer JWTs and turns them into Agents."""

    def __init__(
        self,
        config: JwtConfig,
        registry: AgentRegistry,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.registry = registry
        self.clock = clock
        self._keys: dict[str, PyJWK] = {}
        self._loaded_at = -1e18
        self._last_refresh_try = -1e18
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Fetch the JWKS now (file or URL); raises IdentityError if unusable."""
        self._last_refresh_try = self.clock()
        if self.config.jwks_file is not None:
            try:
                raw = self.config.jwks_file.read_bytes()[: MAX_JWKS_BYTES + 1]
            except OSError as exc:
                raise IdentityError(f"cannot read JWKS {self.config.jwks_file}: {exc}") from exc
        else:
            assert self.config.jwks_url is not None
            raw = await self._fetch(self.config.jwks_url)
        if len(raw) > MAX_JWKS_BYTES:
            raise IdentityError("JWKS document too large")
        try:
            keyset = PyJWKSet.from_dict(json.loads(raw))
        except (ValueError, jwt.PyJWKSetError, jwt.InvalidKeyError) as exc:
            raise IdentityError(f"unusable JWKS: {exc}") from exc
        self._keys = {k.key_id or "": k for k in keyset.keys}
        self._loaded_at = self.clock()

    @staticmethod
    async def _fetch(url: str) -> bytes:
        timeout = aiohttp.ClientTimeout(total=5)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
                if resp.status != 200:
                    raise IdentityError(f"JWKS fetch from {url}: HTTP {resp.status}")
                return await resp.content.read(MAX_JWKS_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise IdentityError(f"JWKS fetch from {url} failed: {exc}") from exc

    async def _key(self, kid: str) -> PyJWK:
        now = self.clock()
        async with self._lock:
            stale = now - self._loaded_at > self.config.jwks_cache_seconds
            unknown = kid not in self._keys
            may_retry = now - self._last_refresh_try >= MIN_REFRESH_INTERVAL
            if stale or (unknown and may_retry):
                await self.refresh()
        key = self._keys.get(kid)
        if key is None and kid == "" and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise IdentityError(f"no key {kid!r} in the JWKS")
        return key

    async def verify(self, token: str) -> Agent:
        """The Agent this token proves, or IdentityError saying why not."""
        if len(token) > MAX_TOKEN_BYTES:
            raise IdentityError("token too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise IdentityError(f"malformed token: {exc}") from exc
        alg = header.get("alg")
        if alg not in self.config.algorithms:
            raise IdentityError(f"algorithm {alg!r} not accepted")
        key = await self._key(str(header.get("kid") or ""))
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise IdentityError(f"token rejected: {exc}") from exc
        except (TypeError, ValueError):
            # PyJWT raises these, not PyJWTError, for a key of another type than the
            # header's alg (an ES256 token naming an RSA key's kid): an unauthenticated
            # client's token is a refusal, never an internal error in the proxy.
            raise IdentityError(f"token rejected: key {key.key_id!r} does not fit {alg}") from None
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub:
            raise IdentityError("token has no usable sub")
        chain = delegation_chain(claims)
        entry = self.registry.get(sub)
        if entry is not None:
            return entry.agent("jwt", chain)
        if self.config.require_registered_agent:
            raise IdentityError(f"agent {sub!r} is not registered")
        roles = claims.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise IdentityError("roles claim must be a list of strings")
        return Agent(sub, tuple(roles), None, chain, "jwt")
