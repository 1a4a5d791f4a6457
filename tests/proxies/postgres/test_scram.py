"""SCRAM-SHA-256 both ways, the RFC 7677 test vector, and a real PostgreSQL upstream."""

from __future__ import annotations

import asyncio
import base64
import struct

import pytest

from interlock.proxies.postgres import messages as m
from interlock.proxies.postgres.codec import BackendReader
from interlock.proxies.postgres.scram import (
    ScramClient,
    ScramError,
    ScramServer,
    Verifier,
)
from tests.services import Postgres


def test_rfc7677_example_exchange() -> None:
    """RFC 7677 section 3: user 'user', password 'pencil'."""
    client = ScramClient("pencil", nonce=base64.b64decode("rOprNGfwEbeRWgbNEkqO"))
    client._client_nonce = "rOprNGfwEbeRWgbNEkqO"
    client._bare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final = client.final(server_first)
    assert final == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    client.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def exchange(password: str, verifier: Verifier) -> None:
    server = ScramServer(verifier)
    client = ScramClient(password)
    server_first = server.first(client.first())
    server_final = server.final(client.final(server_first))
    client.verify(server_final)


def test_right_password_passes_and_server_is_authenticated() -> None:
    exchange("agent-token-123456", Verifier.from_password("agent-token-123456"))


def test_wrong_password_fails() -> None:
    with pytest.raises(ScramError, match="password authentication failed"):
        exchange("wrong", Verifier.from_password("agent-token-123456"))


def test_verifier_round_trips_postgres_format() -> None:
    v = Verifier.from_password("secret", salt=b"0123456789abcdef", iterations=4096)
    text = v.encode()
    assert text.startswith("SCRAM-SHA-256$4096:")
    assert Verifier.parse(text) == v


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (b"p=tls-server-end-point,,n=,r=abc", "channel binding"),
        (b"x,,n=,r=abc", "GS2"),
        (b"n,a=admin,n=,r=abc", "authorization identities"),
        (b"n,,n=,r=", "nonce"),
        (b"n,,garbage", "malformed"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_client_first(first: bytes, message: str) -> None:
    with pytest.raises(ScramError, match=message):
        ScramServer(Verifier.from_password("x")).first(first)


def test_replayed_or_tampered_final_fails() -> None:
    v = Verifier.from_password("pw")
    server = ScramServer(v)
    client = ScramClient("pw")
    final = client.final(server.first(client.first()))
    with pytest.raises(ScramError, match="before client-first"):
        ScramServer(v).final(final)
    replay_target = ScramServer(v)
    replay_target.first(ScramClient("pw").first())
    with pytest.raises(ScramError, match="nonce mismatch"):
        replay_target.final(final)
    with pytest.raises(ScramError):
        server.final(final.replace(b"p=", b"p=AAAA"))
    with pytest.raises(ScramError, match="no proof"):
        server.final(b"c=biws,r=x")


def test_fake_server_is_detected_by_the_client() -> None:
    client = ScramClient("pw")
    real = ScramServer(Verifier.from_password("pw"))
    client.final(real.first(client.first()))
    with pytest.raises(ScramError, match="does not verify"):
        client.verify(b"v=" + base64.b64encode(b"\0" * 32))


def test_client_refuses_absurd_iteration_counts() -> None:
    client = ScramClient("pw")
    nonce = client._client_nonce + "x"
    with pytest.raises(ScramError, match="iteration"):
        client.final(f"r={nonce},s=AAAA,i=999999999".encode())


@pytest.mark.integration
async def test_client_logs_in_to_a_real_postgres(postgres: Postgres) -> None:
    """The codec and ScramClient complete a real SCRAM login against PostgreSQL 15."""
    reader, writer = await asyncio.open_connection(postgres.host, postgres.port)
    writer.write(m.StartupMessage({"user": postgres.user, "database": "postgres"}).encode())
    backend = BackendReader()
    client = ScramClient(postgres.password)

    async def next_msg() -> object:
        while (msg := backend.next()) is None:
            data = await reader.read(65536)
            assert data, "server closed the connection"
            backend.feed(data)
        return msg

    try:
        sasl = await next_msg()
        assert isinstance(sasl, m.Authentication)
        assert sasl.code == 10
        assert b"SCRAM-SHA-256" in sasl.data
        first = client.first()
        writer.write(
            m.AuthResponse(m.cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first).encode()
        )
        cont = await next_msg()
        assert isinstance(cont, m.Authentication)
        assert cont.code == 11
        writer.write(m.AuthResponse(client.final(cont.data)).encode())
        final = await next_msg()
        assert isinstance(final, m.Authentication)
        assert final.code == 12
        client.verify(final.data)
        ok = await next_msg()
        assert ok == m.Authentication(0)
        while not isinstance(msg := await next_msg(), m.ReadyForQuery):
            pass
        assert msg.status == "I"
    finally:
        writer.close()
        await writer.wait_closed()
