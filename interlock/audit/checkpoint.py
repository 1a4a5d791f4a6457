"""Signed tree heads in the C2SP checkpoint format, as Ed25519 signed notes.

A checkpoint note looks like::

    interlock.local/audit
    1234
    qjJ0j1oZ0pK2Y4g3u8aWvQnV0uG4mEo8bQ0g5p8Xk8s=

    — interlock.local/audit Az3grrQX3F1w...==

(origin, tree size, base64 root hash, a blank line, then one signature line:
em dash, key name, base64 of the 4-byte key ID followed by the 64-byte signature).
The key ID is SHA-256(name || 0x0A || 0x01 || public key)[:4] (c2sp.org/signed-note).
The verifier key string `name+<hex key id>+<base64(0x01 || public key)>` is what an
auditor needs, and all they need.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

ED25519 = b"\x01"
DASH = "\u2014 "
MAX_NOTE = 64 * 1024
MAX_SIZE = 2**63 - 1
"""The largest tree size a checkpoint may state (an int64, as Go's tlog parses it)."""


class CheckpointError(ValueError):
    """A note that does not parse, or whose signature does not verify."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def key_id(name: str, public: bytes, kind: bytes = ED25519) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + kind + public).digest()[:4]


def _valid_name(name: str) -> str:
    if not name or any(c.isspace() or c == "+" for c in name):
        raise CheckpointError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


@dataclass(frozen=True, slots=True)
class Verifier:
    """A trusted public key with its name."""

    KIND: ClassVar[bytes] = ED25519
    """The signature type byte (c2sp.org/signed-note): in the key id and the vkey."""

    name: str
    public: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.public, self.KIND)

    def encode(self) -> str:
        raw = base64.b64encode(self.KIND + self.public).decode()
        return f"{self.name}+{self.id.hex()}+{raw}"

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse `name+hexid+base64key`, checking that the id matches the key."""
        try:
            name, hexid, raw = text.strip().split("+", 2)
            blob = base64.b64decode(raw, validate=True)
            wanted = bytes.fromhex(hexid)
        except (ValueError, binascii.Error) as exc:
            raise CheckpointError(f"malformed verifier key: {exc}") from exc
        if len(blob) != 33 or blob[:1] != cls.KIND:
            raise CheckpointError("verifier key is not an Ed25519 key")
        verifier = cls(_valid_name(name), blob[1:])
        if verifier.id != wanted:
            raise CheckpointError("verifier key id does not match its key")
        return verifier


class NoteSigner(Protocol):
    """What signs the log's checkpoints: the local key file (`Signer`) or a key held
    elsewhere (`transit.TransitSigner`). `verifier` is the key an auditor trusts."""

    name: str
    verifier: Verifier

    async def sign_note(self, text: str) -> str: ...


class Signer:
    """Signs notes with an Ed25519 key under a name."""

    VERIFIER: ClassVar[type[Verifier]] = Verifier

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        self.name = _valid_name(name)
        self._key = key
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.verifier = self.VERIFIER(name, public)

    def sign(self, text: str) -> str:
        """The signed note: `text` (ending in newline), blank line, signature line."""
        if not text.endswith("\n"):
            raise CheckpointError("note text must end with a newline")
        sig = self._key.sign(text.encode())
        blob = base64.b64encode(self.verifier.id + sig).decode()
        return f"{text}\n{DASH}{self.name} {blob}\n"

    async def sign_note(self, text: str) -> str:
        return self.sign(text)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The log's signing key; created (mode 0600, never overwritten) on first use."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_key(path)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        return key
    loaded = serialization.load_pem_private_key(raw, password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise CheckpointError(f"{path} is not an Ed25519 private key")
    return loaded


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    """The note text of a checkpoint (c2sp.org/tlog-checkpoint)."""
    if not origin or "\n" in origin:
        raise CheckpointError("origin must be one non-empty line")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def sign_checkpoint(signer: Signer, origin: str, size: int, root: bytes) -> str:
    return signer.sign(checkpoint_text(origin, size, root))


def signatures(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """A signed note's text (ending in a newline) and its signatures as (key name, key
    ID followed by the signature), in order; raise CheckpointError if malformed."""
    text, sep, sigs = note.partition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise CheckpointError("not a signed note (no blank line before signatures)")
    out = []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(DASH):
            raise CheckpointError(f"malformed signature line {line[:40]!r}")
        name, _, blob = line[len(DASH) :].partition(" ")
        try:
            out.append((name, base64.b64decode(blob, validate=True)))
        except binascii.Error as exc:
            raise CheckpointError("signature is not base64") from exc
    return text + "\n", out


def open_checkpoint(note: str, verifier: Verifier) -> Checkpoint:
    """Verify `note` under `verifier` and parse it; raise CheckpointError otherwise."""
    if len(note) > MAX_NOTE:
        raise CheckpointError("note too large")
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise CheckpointError("note contains control characters")
    text, sigs = signatures(note)
    verified = False
    for name, raw in sigs:
        if name != verifier.name or raw[:4] != verifier.id:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(verifier.public).verify(raw[4:], text.encode())
        except InvalidSignature:
            raise CheckpointError(f"signature by {name} does not verify") from None
        verified = True
    if not verified:
        raise CheckpointError(f"no signature by the trusted key {verifier.name}")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs origin, size and root lines")
    origin, size_s, root_s = lines[:3]
    # ASCII digits only (`str.isdigit` takes '١٢' as 12 and '²', which int() refuses),
    # within int64 as Go's tlog reads it, so every verifier reads the same size.
    if (
        not (size_s.isascii() and size_s.isdigit())
        or (size_s != "0" and size_s.startswith("0"))
        or int(size_s) > MAX_SIZE
    ):
        raise CheckpointError(f"bad tree size {size_s[:40]!r}")
    try:
        root = base64.b64decode(root_s, validate=True)
    except binascii.Error as exc:
        raise CheckpointError("root hash is not base64") from exc
    if len(root) != 32 or base64.b64encode(root).decode() != root_s:
        raise CheckpointError("root hash is not 32 bytes in canonical base64")
    return Checkpoint(origin, int(size_s), root)
