"""SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL uses it, both sides, without I/O.

`ScramServer` authenticates an agent to the proxy against a stored verifier (never the
token itself); `ScramClient` logs the proxy in to the upstream server. Channel binding is
not offered (the proxy terminates TLS itself), so the GS2 header must be "n,," or "y,,".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import unicodedata
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096
"""PostgreSQL's default scram_iterations."""
MAX_ITERATIONS = 1_000_000
"""An upstream asking for more is refusing service, not securing anything."""


class ScramError(Exception):
    """The exchange failed: wrong password, malformed message, or a forged server."""


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise ScramError("malformed base64 in SCRAM message") from None


def saslprep(password: str) -> str:
    """A lenient SASLprep: NFKC plus space mapping, as PostgreSQL applies to passwords.
    PostgreSQL falls back to the raw password when SASLprep fails; so does this."""
    mapped = "".join(" " if unicodedata.category(c) == "Zs" else c for c in password)
    return unicodedata.normalize("NFKC", mapped)


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)


@dataclass(frozen=True, slots=True)
class Verifier:
    """What a server stores: PostgreSQL's `SCRAM-SHA-256$iter:salt$StoredKey:ServerKey`."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(
        cls, password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
    ) -> Verifier:
        salt = salt or os.urandom(16)
        sp = salted_password(password, salt, iterations)
        return cls(iterations, salt, _h(_hmac(sp, b"Client Key")), _hmac(sp, b"Server Key"))

    def encode(self) -> str:
        return (
            f"{MECHANISM}${self.iterations}:{_b64(self.salt)}$"
            f"{_b64(self.stored_key)}:{_b64(self.server_key)}"
        )

    @classmethod
    def parse(cls, text: str) -> Verifier:
        match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", text.strip())
        if not match:
            raise ScramError("not a SCRAM-SHA-256 verifier")
        iterations, salt, stored, server = match.groups()
        return cls(int(iterations), _unb64(salt), _unb64(stored), _unb64(server))


def _attrs(message: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in message.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError(f"malformed SCRAM attribute {part[:10]!r}")
        out.setdefault(part[0], part[2:])
    return out


class ScramServer:
    """One server-side exchange. `first(client_first) -> server_first`, then
    `final(client_final) -> server_final` or ScramError."""

    def __init__(self, verifier: Verifier, nonce: bytes | None = None) -> None:
        self.verifier = verifier
        self._server_nonce = _b64(nonce or os.urandom(18))
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("client-first-message is not UTF-8") from None
        if text.startswith("p="):
            raise ScramError("channel binding is not supported by this server")
        if not (text.startswith("n,") or text.startswith("y,")):
            raise ScramError("malformed GS2 header")
        _, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if authzid:
            raise ScramError("authorization identities are not supported")
        attrs = _attrs(bare)
        client_nonce = attrs.get("r", "")
        if not client_nonce or any(c == "," or not 0x21 <= ord(c) <= 0x7E for c in client_nonce):
            raise ScramError("missing or malformed client nonce")
        self._client_first_bare = bare
        self._nonce = client_nonce + self._server_nonce
        self._server_first = (
            f"r={self._nonce},s={_b64(self.verifier.salt)},i={self.verifier.iterations}"
        )
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        if not self._nonce:
            raise ScramError("client-final-message before client-first-message")
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("client-final-message is not UTF-8") from None
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        if not sep:
            raise ScramError("client-final-message has no proof")
        attrs = _attrs(without_proof)
        if attrs.get("c") not in ("biws", "eSws"):
            raise ScramError("unexpected channel binding data")
        if attrs.get("r") != self._nonce:
            raise ScramError("nonce mismatch")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}"
        signature = _hmac(self.verifier.stored_key, auth_message.encode())
        proof = _unb64(proof_b64)
        if len(proof) != len(signature):
            raise ScramError("password authentication failed")
        client_key = _xor(proof, signature)
        if not hmac.compare_digest(_h(client_key), self.verifier.stored_key):
            raise ScramError("password authentication failed")
        server_sig = _hmac(self.verifier.server_key, auth_message.encode())
        return f"v={_b64(server_sig)}".encode()


class ScramClient:
    """One client-side exchange against a server (the upstream PostgreSQL)."""

    def __init__(self, password: str, nonce: bytes | None = None) -> None:
        self._password = password
        self._client_nonce = _b64(nonce or os.urandom(18))
        self._bare = f"n=,r={self._client_nonce}"
        self._server_sig = b""

    def first(self) -> bytes:
        return ("n,," + self._bare).encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode("utf-8", "replace")
        attrs = _attrs(text)
        nonce, salt, iters = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self._client_nonce) or len(nonce) == len(self._client_nonce):
            raise ScramError("server nonce does not extend ours")
        if not iters.isdigit() or not 1 <= int(iters) <= MAX_ITERATIONS:
            raise ScramError(f"unacceptable iteration count {iters!r}")
        sp = salted_password(self._password, _unb64(salt), int(iters))
        client_key = _hmac(sp, b"Client Key")
        without_proof = f"c=biws,r={nonce}"
        auth = f"{self._bare},{text},{without_proof}".encode()
        proof = _xor(client_key, _hmac(_h(client_key), auth))
        self._server_sig = _hmac(_hmac(sp, b"Server Key"), auth)
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        """Check the server's signature: a server that does not know the password is fake."""
        attrs = _attrs(server_final.decode("utf-8", "replace"))
        if "e" in attrs:
            raise ScramError(f"server error: {attrs['e']}")
        if not hmac.compare_digest(_unb64(attrs.get("v", "")), self._server_sig):
            raise ScramError("server signature does not verify")
