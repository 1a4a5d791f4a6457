"""JWT identity with real keys, a JWKS file, a JWKS served over real HTTP, and `act`."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from interlock.config import AgentConfig, JwtConfig
from interlock.errors import IdentityError
from interlock.identity.jwt import JwtVerifier, delegation_chain
from interlock.identity.registry import AgentRegistry

ISS, AUD = "https://idp.test/", "interlock"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        jwt.algorithms.get_default_algorithms()[alg].to_jwk(key.public_key())
    )
    doc.update(kid=kid, alg=alg, use="sig")
    return doc


def token(
    claims: dict[str, Any] | None = None,
    *,
    key: Any = RSA_KEY,
    kid: str = "rsa1",
    alg: str = "RS256",
    **overrides: Any,
) -> str:
    now = int(time.time())
    body = {"iss": ISS, "aud": AUD, "sub": "reporter", "iat": now, "exp": now + 300}
    body.update(claims or {})
    body.update(overrides)
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


REGISTRY = AgentRegistry.from_config(
    {"reporter": AgentConfig(roles=["analyst"], owner="alice@example.com")}
)


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(
        json.dumps({"keys": [jwk(RSA_KEY, "rsa1", "RS256"), jwk(EC_KEY, "ec1", "ES256")]})
    )
    return path


def verifier(jwks_file: Path, **kw: Any) -> JwtVerifier:
    return JwtVerifier(JwtConfig(issuer=ISS, audience=AUD, jwks_file=jwks_file, **kw), REGISTRY)


async def test_valid_token_gives_the_registered_agent(jwks_file: Path) -> None:
    agent = await verifier(jwks_file).verify(token())
    assert (agent.id, agent.roles, agent.owner, agent.authn) == (
        "reporter",
        ("analyst",),
        "alice@example.com",
        "jwt",
    )


async def test_ec_keys_work_too(jwks_file: Path) -> None:
    agent = await verifier(jwks_file).verify(token(key=EC_KEY, kid="ec1", alg="ES256"))
    assert agent.id == "reporter"


async def test_act_claim_becomes_the_delegation_chain(jwks_file: Path) -> None:
    t = token({"act": {"sub": "planner", "act": {"sub": "orchestrator"}}})
    agent = await verifier(jwks_file).verify(t)
    assert agent.delegation == ("planner", "orchestrator")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: token(exp=int(time.time()) - 3600), "expired"),
        (lambda: token(iss="https://evil.test/"), "issuer"),
        (lambda: token(aud="someone-else"), "(?i)audience"),
        (lambda: token(sub="stranger"), "not registered"),
        (
            lambda: token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "Signature verification failed",
        ),
        (lambda: token(kid="unknown"), "no key 'unknown'"),
        (
            lambda: jwt.encode(
                {"sub": "reporter", "iss": ISS, "aud": AUD, "exp": int(time.time()) + 60},
                "s" * 32,
                algorithm="HS256",
                headers={"kid": "rsa1"},
            ),
            "algorithm 'HS256' not accepted",
        ),
        (lambda: "not.a.jwt", "malformed token"),
        (lambda: "x" * 20_000, "too large"),
        (lambda: token({"act": {"sub": 7}}), "malformed act"),
        (lambda: token(exp=None), "exp"),
        (lambda: token(key=EC_KEY, kid="rsa1", alg="ES256"), "does not fit"),
        (lambda: token(kid="ec1", alg="RS256"), "does not fit"),
    ],
    ids=[
        "expired",
        "issuer",
        "audience",
        "unregistered",
        "wrong key",
        "unknown kid",
        "hs256 confusion",
        "garbage",
        "oversized",
        "bad act",
        "no exp",
        "ec alg, rsa key",
        "rsa alg, ec key",
    ],
)
async def test_bad_tokens_are_rejected_with_the_reason(
    jwks_file: Path, make: Any, message: str
) -> None:
    with pytest.raises(IdentityError, match=message):
        await verifier(jwks_file).verify(make())


async def test_unregistered_agents_allowed_when_configured(jwks_file: Path) -> None:
    v = verifier(jwks_file, require_registered_agent=False)
    agent = await v.verify(token(sub="newcomer", roles=["dev"]))
    assert (agent.id, agent.roles) == ("newcomer", ("dev",))


def test_delegation_chain_is_bounded() -> None:
    claims: dict[str, Any] = {}
    node = claims
    for i in range(40):
        node["act"] = {"sub": f"a{i}"}
        node = node["act"]
    with pytest.raises(IdentityError, match="longer than"):
        delegation_chain(claims)


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A real HTTP server publishing the JWKS; the test can rotate its keys."""
    state: dict[str, Any] = {"keys": [jwk(RSA_KEY, "rsa1", "RS256")], "hits": 0}

    async def handler(_: web.Request) -> web.Response:
        state["hits"] += 1
        return web.json_response({"keys": state["keys"]})

    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/jwks.json", state
    await runner.cleanup()


async def test_jwks_url_is_fetched_cached_and_refreshed_for_new_kids(
    jwks_server: tuple[str, dict[str, Any]],
) -> None:
    url, state = jwks_server
    now = [1000.0]
    v = JwtVerifier(
        JwtConfig(issuer=ISS, audience=AUD, jwks_url=url), REGISTRY, clock=lambda: now[0]
    )
    await v.verify(token())
    await v.verify(token())
    assert state["hits"] == 1, "keys are cached"
    state["keys"].append(jwk(EC_KEY, "ec1", "ES256"))
    now[0] += 11
    agent = await v.verify(token(key=EC_KEY, kid="ec1", alg="ES256"))
    assert agent.id == "reporter"
    assert state["hits"] == 2, "a new kid refreshes the keys"
    with pytest.raises(IdentityError):
        await v.verify(token(kid="bogus"))
    assert state["hits"] == 2, "bogus kids within 10 s do not hammer the IdP"


async def test_unreachable_jwks_url_is_an_identity_error() -> None:
    v = JwtVerifier(JwtConfig(issuer=ISS, audience=AUD, jwks_url="http://127.0.0.1:9/j"), REGISTRY)
    with pytest.raises(IdentityError, match="JWKS fetch"):
        await v.verify(token())
