"""Witness cosignatures on checkpoints (c2sp.org/tlog-cosignature: Ed25519, cosignature/v1).

A cosignature is one more signature line on the checkpoint note: the witness's name, then
base64 of its 4-byte key ID, an 8-byte big-endian POSIX timestamp and an Ed25519
signature over `cosignature/v1\\ntime <timestamp>\\n` followed by the checkpoint's text.
It says: as of that time, this is the largest tree the witness has seen for the log, and
it is consistent with every earlier one it cosigned. The key ID uses signature type 0x04,
so a log key and a witness key never stand in for each other.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from interlock.audit.checkpoint import DASH, CheckpointError, Signer, Verifier, signatures

COSIGNATURE_V1 = b"\x04"
HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = 2**63 - 1


class WitnessKey(Verifier):
    """A witness's public key: `name+<hex key id>+<base64(0x04 || public key)>`."""

    KIND = COSIGNATURE_V1


def signed_message(text: str, timestamp: int) -> bytes:
    """What a cosignature signs: the header, the time line, the checkpoint text."""
    return f"{HEADER}time {timestamp}\n{text}".encode()


class Cosigner(Signer):
    """A witness's signing key under its name."""

    VERIFIER = WitnessKey

    @property
    def key(self) -> WitnessKey:
        assert isinstance(self.verifier, WitnessKey)
        return self.verifier

    def cosign(self, text: str, timestamp: int) -> str:
        """The cosignature line (ending in a newline) for checkpoint `text` at `timestamp`."""
        sig = self._key.sign(signed_message(text, timestamp))
        blob = self.key.id + timestamp.to_bytes(8, "big") + sig
        return f"{DASH}{self.name} {base64.b64encode(blob).decode()}\n"


def cosigned_at(note: str, key: WitnessKey) -> int | None:
    """When the witness of `key` cosigned `note` (POSIX seconds); None when the note has
    no line of that witness. A line of that witness that does not verify raises."""
    text, sigs = signatures(note)
    for name, raw in sigs:
        if name != key.name or raw[:4] != key.id:
            continue
        if len(raw) != 4 + 8 + 64:
            raise CheckpointError(f"cosignature by {name} has the wrong length")
        timestamp = int.from_bytes(raw[4:12], "big")
        if timestamp > MAX_TIMESTAMP:
            raise CheckpointError(f"cosignature by {name} has an impossible timestamp")
        try:
            Ed25519PublicKey.from_public_bytes(key.public).verify(
                raw[12:], signed_message(text, timestamp)
            )
        except InvalidSignature:
            raise CheckpointError(f"cosignature by {name} does not verify") from None
        return timestamp
    return None


def witnessed_by(note: str, keys: Iterable[WitnessKey]) -> tuple[list[str], list[str]]:
    """The witnesses whose valid cosignature `note` carries, and problems found (a line
    of a trusted witness that does not verify)."""
    names: list[str] = []
    problems: list[str] = []
    for key in keys:
        try:
            if cosigned_at(note, key) is not None:
                names.append(key.name)
        except CheckpointError as exc:
            problems.append(str(exc))
    return names, problems


@dataclass(frozen=True, slots=True)
class Quorum:
    """What a verifier requires: cosignatures by at least `k` of `keys`."""

    keys: tuple[WitnessKey, ...]
    k: int

    def __post_init__(self) -> None:
        if not 1 <= self.k <= len(self.keys):
            raise CheckpointError(f"a quorum of {self.k} of {len(self.keys)} witnesses")
        # The name is not in the signed message: one key given twice (or under two
        # names) would count one witness's cosignature twice towards `k`.
        publics = [key.public for key in self.keys]
        if len(set(publics)) != len(publics):
            raise CheckpointError("a witness key is given more than once")
